/*
 * redis_pipe.c — the redis source's pipeline (see redis_pipe.h): a copy of each command in flight, numbered in
 * sending order, so that a flushed script cache (NOSCRIPT) is recovered from without reordering effects.
 *
 * Replies come back in sending order on one connection, which is what makes the window simple: when the reply
 * of the command numbered window_end arrives, every command that could have run while a script was missing
 * has been answered — and the ones that must run again have been sent again, behind SCRIPT LOAD — so the held
 * commands can go. The copy costs one memcpy per command (small entries are reused); it is what lets this
 * layer send a command again without asking the file that formatted it.
 */
#include <string.h>

#include "engram/source.h"
#include "redis_pipe.h"
#include "redis_rbuf.h"

#define KEEP_ENTRIES 1024   /* entries kept for reuse: about the commands in flight at their peak */
#define SMALL_ENTRY 512     /* ... when their room is at most this many bytes */

enum { K_READ = 0, K_SCRIPT, K_LOAD };

struct engram__redis_pipe_entry_s {
  engram__redis_pipe_entry_t *next; /* held list or free list */
  engram__redis_pipe_t *p;
  redisCallbackFn *fn;
  void *pd;
  uint64_t seq;
  unsigned replays;
  int kind;
  size_t len, cap;
  char cmd[];
};

void engram__redis_pipe_init(engram__redis_pipe_t *p, engram__redis_conn_t *conn) {
  memset(p, 0, sizeof *p);
  p->conn = conn;
}

void engram__redis_pipe_free(engram__redis_pipe_t *p) {
  engram__redis_pipe_entry_t *e;
  while ((e = p->free_list) != NULL) {
    p->free_list = e->next;
    engram_free(e);
  }
  p->n_free = 0;
  while ((e = p->held_head) != NULL) { /* none once the connection is closed; kept for safety */
    p->held_head = e->next;
    engram_free(e);
  }
  p->held_tail = NULL;
}

/* ---- Entries ---- */

/* An entry with room for len bytes. Script calls take pooled SMALL_ENTRY blocks (few in flight, reused); a read
 * (exact) gets just its own bytes: a search fans out into thousands of reads in flight at once, and 512-byte
 * blocks for each held ~18 MB more resident memory in make soak. */
static engram__redis_pipe_entry_t *entry_get_min(engram__redis_pipe_t *p, size_t len, size_t min_cap) {
  engram__redis_pipe_entry_t *e = p->free_list;
  size_t cap;
  if (min_cap == SMALL_ENTRY && e != NULL && len <= e->cap) {
    p->free_list = e->next;
    p->n_free--;
  } else {
    cap = len < min_cap ? min_cap : len;
    if ((e = engram_malloc(sizeof *e + cap)) == NULL) return NULL;
    e->cap = cap;
  }
  e->next = NULL;
  e->p = p;
  e->replays = 0;
  e->seq = 0;
  e->len = len;
  return e;
}

static engram__redis_pipe_entry_t *entry_get(engram__redis_pipe_t *p, size_t len) {
  return entry_get_min(p, len, SMALL_ENTRY);
}

static void entry_put(engram__redis_pipe_t *p, engram__redis_pipe_entry_t *e) {
  if (e->cap != SMALL_ENTRY || p->n_free >= KEEP_ENTRIES) {
    engram_free(e);
    return;
  }
  e->next = p->free_list;
  p->free_list = e;
  p->n_free++;
}

/* K_SCRIPT when cmd is "*<n>\r\n$7\r\nEVALSHA\r\n..." or "*<n>\r\n$4\r\nEVAL\r\n...", else K_READ. */
static int classify(const char *cmd, size_t len) {
  const char *nl = memchr(cmd, '\n', len < 16 ? len : 16);
  size_t rest;
  if (nl == NULL) return K_READ;
  nl++;
  rest = len - (size_t)(nl - cmd);
  if (rest >= 13 && memcmp(nl, "$7\r\nEVALSHA\r\n", 13) == 0) return K_SCRIPT;
  if (rest >= 10 && memcmp(nl, "$4\r\nEVAL\r\n", 10) == 0) return K_SCRIPT;
  return K_READ;
}

/* ---- Sending ---- */

static void on_reply(redisAsyncContext *ac, void *rep, void *pd);

/* Puts e on the wire with the next number. 0 or ENGRAM_EUNAVAILABLE / ENGRAM_ENOMEM (e is untouched). */
static int wire_bytes(engram__redis_pipe_t *p, engram__redis_pipe_entry_t *e, const char *cmd, size_t len) {
  int rc = engram__redis_conn_send(p->conn, on_reply, e, cmd, len);
  if (rc != 0) return rc;
  e->seq = ++p->seq;
  p->inflight++;
  return 0;
}

static int wire(engram__redis_pipe_t *p, engram__redis_pipe_entry_t *e) { return wire_bytes(p, e, e->cmd, e->len); }

/* Hands e's reply on and recycles e (first, so that fn may send again). */
static void deliver(engram__redis_pipe_entry_t *e, redisAsyncContext *ac, void *reply) {
  redisCallbackFn *fn = e->fn;
  void *pd = e->pd;
  entry_put(e->p, e);
  fn(ac, reply, pd);
}

/* SCRIPT LOAD of every script of the connection, each its own entry. A failure here is not fatal: the commands
 * sent again are then answered NOSCRIPT once more, until their replays run out. */
static void send_loads(engram__redis_pipe_t *p) {
  engram__redis_conn_t *conn = p->conn;
  engram__rbuf_t b = {0};
  engram__redis_pipe_entry_t *e;
  int i;
  for (i = 0; i < conn->n_scripts; i++) {
    engram__rbuf_reset(&b);
    engram__rbuf_array(&b, 3);
    engram__rbuf_arg(&b, "SCRIPT", 6);
    engram__rbuf_arg(&b, "LOAD", 4);
    engram__rbuf_arg_str(&b, conn->scripts[i]);
    if (b.failed || (e = entry_get(p, b.len)) == NULL) break;
    memcpy(e->cmd, b.p, b.len);
    e->kind = K_LOAD;
    e->fn = NULL;
    e->pd = NULL;
    if (wire(p, e) != 0) {
      entry_put(p, e);
      break;
    }
    p->loaded_seq = e->seq;
  }
  engram__rbuf_free(&b);
}

/* e's command as an EVAL carrying the script's text instead of an EVALSHA naming it: a command sent again
 * this way cannot be answered NOSCRIPT, however often the cache is flushed meanwhile (the server caches the
 * script again as it runs it). Returns the new entry (e is recycled), or e unchanged when it is not an EVALSHA
 * of one of the connection's scripts or memory ran out (it then goes as it is). */
static engram__redis_pipe_entry_t *as_eval(engram__redis_pipe_t *p, engram__redis_pipe_entry_t *e) {
  const engram__redis_conn_t *conn = p->conn;
  const char *nl = memchr(e->cmd, '\n', e->len < 16 ? e->len : 16), *sha, *rest;
  engram__redis_pipe_entry_t *n;
  size_t head, body_len, len;
  char hdr[24];
  int i, hl;
  if (nl == NULL) return e;
  head = (size_t)(nl + 1 - e->cmd); /* "*<n>\r\n" */
  if (e->len < head + 13 + 5 + 42 || memcmp(e->cmd + head, "$7\r\nEVALSHA\r\n$40\r\n", 18) != 0) return e;
  sha = e->cmd + head + 18;
  rest = sha + 42; /* after "<sha>\r\n" */
  for (i = 0; i < conn->n_scripts; i++)
    if (memcmp(conn->sha[i], sha, 40) == 0) break;
  if (i == conn->n_scripts) return e;
  body_len = strlen(conn->scripts[i]);
  hl = snprintf(hdr, sizeof hdr, "$%zu\r\n", body_len);
  len = head + 10 + (size_t)hl + body_len + 2 + (size_t)(e->cmd + e->len - rest);
  if ((n = entry_get(p, len)) == NULL) return e;
  memcpy(n->cmd, e->cmd, head);
  memcpy(n->cmd + head, "$4\r\nEVAL\r\n", 10);
  memcpy(n->cmd + head + 10, hdr, (size_t)hl);
  memcpy(n->cmd + head + 10 + hl, conn->scripts[i], body_len);
  memcpy(n->cmd + head + 10 + hl + body_len, "\r\n", 2);
  memcpy(n->cmd + head + 10 + hl + body_len + 2, rest, (size_t)(e->cmd + e->len - rest));
  n->kind = K_SCRIPT;
  n->fn = e->fn;
  n->pd = e->pd;
  n->replays = e->replays;
  entry_put(p, e);
  return n;
}

/* Sends e again (a new number; a script call as EVAL); when it cannot go, its caller gets a NULL reply (the
 * connection is going) or the reply it had (anything else). */
static void replay(engram__redis_pipe_entry_t *e, redisAsyncContext *ac, void *reply) {
  engram__redis_pipe_t *p = e->p;
  int rc;
  if (e->kind == K_SCRIPT) e = as_eval(p, e);
  e->replays++;
  if ((rc = wire(p, e)) == 0) {
    p->replayed++;
    return;
  }
  deliver(e, ac, rc == ENGRAM_EUNAVAILABLE ? NULL : reply);
}

/* The window is over: the held commands go out in order. Those that cannot go get a NULL reply after the
 * others have gone, so that a caller sending from its callback cannot overtake them. */
static void release_held(engram__redis_pipe_t *p, redisAsyncContext *ac) {
  engram__redis_pipe_entry_t *e, *failed = NULL, **failed_tail = &failed;
  p->window_end = 0;
  while ((e = p->held_head) != NULL) {
    p->held_head = e->next;
    e->next = NULL;
    if (wire(p, e) != 0) {
      *failed_tail = e;
      failed_tail = &e->next;
    }
  }
  p->held_tail = NULL;
  while ((e = failed) != NULL) {
    failed = e->next;
    deliver(e, ac, NULL);
  }
}

/* The connection died with a window open: the held commands never reached Redis. */
static void fail_held(engram__redis_pipe_t *p, redisAsyncContext *ac) {
  engram__redis_pipe_entry_t *e = p->held_head;
  p->held_head = p->held_tail = NULL;
  p->window_end = 0;
  while (e != NULL) {
    engram__redis_pipe_entry_t *next = e->next;
    deliver(e, ac, NULL);
    e = next;
  }
}

static int is_noscript(const redisReply *reply) {
  return reply->type == REDIS_REPLY_ERROR && reply->len >= 8 && memcmp(reply->str, "NOSCRIPT", 8) == 0;
}

static void on_reply(redisAsyncContext *ac, void *rep, void *pd) {
  engram__redis_pipe_entry_t *e = pd;
  engram__redis_pipe_t *p = e->p;
  redisReply *reply = rep;
  uint64_t seq = e->seq;
  p->inflight--;
  if (reply == NULL) { /* the connection is gone: every command in flight gets NULL, then the held ones */
    if (e->kind == K_LOAD) entry_put(p, e);
    else deliver(e, ac, NULL);
    if (p->inflight == 0) {
      fail_held(p, ac);
      p->loaded_seq = 0;
    }
    return;
  }
  if (e->kind == K_LOAD) {
    entry_put(p, e);
  } else if (is_noscript(reply) && e->replays < ENGRAM__REDIS_PIPE_REPLAYS) {
    /* e did not run. Everything sent after it ran without it: those commands form the window. Unless the
     * scripts were loaded after e was sent, load them before e goes again. */
    if (seq > p->loaded_seq) {
      if (p->seq > p->window_end) p->window_end = p->seq;
      p->recoveries++;
      send_loads(p);
    }
    replay(e, ac, reply);
  } else if (seq <= p->window_end && e->kind == K_READ && e->replays < ENGRAM__REDIS_PIPE_REPLAYS) {
    replay(e, ac, reply); /* a read that ran before a write sent ahead of it */
  } else {
    deliver(e, ac, reply);
  }
  if (p->window_end != 0 && seq >= p->window_end) release_held(p, ac);
}

int engram__redis_pipe_send(engram__redis_pipe_t *p, redisCallbackFn *fn, void *pd, const char *cmd, size_t len) {
  engram__redis_pipe_entry_t *e;
  int rc, kind;
  if (!engram__redis_conn_ready(p->conn)) return ENGRAM_EUNAVAILABLE;
  kind = classify(cmd, len);
  if (p->window_end == 0 && kind == K_READ) {
    /* Reads go straight out, untracked: a search fans out into thousands of reads in flight at once, and
     * tracking them (a copy, or even a bare entry each) held 4-20 MB more resident memory in make soak, past its
     * 10 % bound. The price: a read sent right behind a write that meets a flushed script cache can run before
     * that write's second try, and miss it (docs/sources-redis.md). Writes keep their order. */
    return engram__redis_conn_send(p->conn, fn, pd, cmd, len);
  }
  if ((e = kind == K_READ ? entry_get_min(p, len, 0) : entry_get(p, len)) == NULL) return ENGRAM_ENOMEM;
  memcpy(e->cmd, cmd, len);
  e->kind = kind;
  e->fn = fn;
  e->pd = pd;
  if (p->window_end != 0) {
    if (p->held_tail != NULL) p->held_tail->next = e;
    else p->held_head = e;
    p->held_tail = e;
    return 0;
  }
  if ((rc = wire(p, e)) != 0) entry_put(p, e);
  return rc;
}
