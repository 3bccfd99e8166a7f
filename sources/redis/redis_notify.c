/*
 * redis_notify.c — the redis source's invalidation channel (redis_notify.h): what lets a process that keeps
 * copies of this source's items (a tiered source's cache tier) drop them when another process writes.
 *
 * Publishing needs no change to the write paths: Redis itself announces every change of a key under a tracked
 * prefix (client-side caching, Redis ≥ 6). On the first watch this file opens a connection of its own
 * (redis_conn.c: resolve, connect, AUTH / SELECT, backoff) and, once it is ready, asks for its client id, turns
 * on broadcast tracking of the items' key prefix redirected to itself — CLIENT TRACKING ON REDIRECT <own id>
 * BCAST PREFIX <prefix>i: — and SUBSCRIBEs to __redis__:invalidate (RESP2: the invalidations arrive as messages
 * of that channel). The SUBSCRIBE confirmation is UP; each message names the changed Redis keys (or is nil:
 * FLUSHDB / FLUSHALL), decoded back into (namespace, key) as redis_cmd.c encodes them — a KEY event each, or
 * ALL. Redis sends the message when the change is made (inside the writing script), before the writer's reply.
 *
 * Redis tracks per connection, and this connection writes nothing, so it cannot tell this process's own writes
 * from others' (NOLOOP only skips the tracking connection's own writes): they are reported too, which costs the
 * watcher its fresh copy, never a stale one. A lost connection (CLIENT KILL, a restart, a network error) is
 * DOWN; the connection comes back after the source's reconnect backoff (reconnect_min_ms .. reconnect_max_ms)
 * and tracking and the subscription are set up again before the next UP. The listener stays until the source
 * closes; on close every watcher gets END.
 */
#include <stdio.h>
#include <string.h>

#include "redis_notify.h"
#include "redis_rbuf.h"

enum { NS_STARTING = 0, NS_SETUP, NS_UP, NS_DOWN };

typedef struct rw_s {
  struct rw_s *next;
  engram_watch_cb cb;
  void *ud;
  int dead;
} rw_t;

struct engram__redis_notify_s {
  engram__redis_t *r;
  engram__redis_conn_t conn;
  rw_t *watchers;
  int delivering;
  int state;
  int closing;
  engram__redis_hook_fn *done;
  engram__rbuf_t cmd;
  uint64_t received, ups, downs;
};

typedef struct engram__redis_notify_s rn_t;

/* ---- Watchers ---- */

static void reap(rn_t *n) {
  rw_t *w, **pp;
  if (n->delivering) return;
  for (pp = &n->watchers; (w = *pp) != NULL;) {
    if (w->dead) {
      *pp = w->next;
      engram_free(w);
    } else {
      pp = &w->next;
    }
  }
}

static void deliver(rn_t *n, const engram_watch_event_t *ev) {
  rw_t *w;
  n->delivering++;
  for (w = n->watchers; w != NULL; w = w->next)
    if (!w->dead) w->cb(ev, w->ud);
  n->delivering--;
  reap(n);
}

static void deliver_kind(rn_t *n, engram_watch_kind_t kind, const char *message) {
  engram_watch_event_t ev;
  memset(&ev, 0, sizeof ev);
  ev.kind = kind;
  ev.message = message;
  deliver(n, &ev);
}

static int live_watchers(const rn_t *n) {
  const rw_t *w;
  for (w = n->watchers; w != NULL; w = w->next)
    if (!w->dead) return 1;
  return 0;
}

/* ---- Messages ---- */

/* Decodes "<prefix>i:<ns bytes>:<ns>:<key>" (redis_cmd.c); 0 or -1 when it is not an item's key. */
static int decode(const engram__redis_t *r, const char *s, size_t len, engram_watch_event_t *ev) {
  size_t i, nl = 0;
  if (len < r->prefix_len + 2 || memcmp(s, r->prefix, r->prefix_len) != 0 || memcmp(s + r->prefix_len, "i:", 2) != 0)
    return -1;
  i = r->prefix_len + 2;
  if (i >= len || s[i] < '0' || s[i] > '9') return -1;
  for (; i < len && s[i] >= '0' && s[i] <= '9'; i++) {
    nl = nl * 10 + (size_t)(s[i] - '0');
    if (nl > ENGRAM_NAMESPACE_MAX) return -1;
  }
  if (i >= len || s[i] != ':' || i + 1 + nl + 1 > len || s[i + 1 + nl] != ':') return -1;
  ev->ns = s + i + 1;
  ev->ns_len = nl;
  ev->key = s + i + 1 + nl + 1;
  ev->key_len = len - (i + 1 + nl + 1);
  return ev->key_len > 0 ? 0 : -1;
}

static void on_message(rn_t *n, const redisReply *payload) {
  engram_watch_event_t ev;
  size_t i;
  n->received++;
  if (payload->type == REDIS_REPLY_NIL) { /* the database was flushed */
    deliver_kind(n, ENGRAM_WATCH_ALL, NULL);
    return;
  }
  if (payload->type != REDIS_REPLY_ARRAY) {
    deliver_kind(n, ENGRAM_WATCH_ALL, NULL);
    return;
  }
  for (i = 0; i < payload->elements && !n->closing; i++) {
    const redisReply *k = payload->element[i];
    memset(&ev, 0, sizeof ev);
    ev.kind = ENGRAM_WATCH_KEY;
    if (k->type != REDIS_REPLY_STRING) continue;
    if (decode(n->r, k->str, k->len, &ev) != 0) continue; /* not an item (the prefix is the items' own) */
    deliver(n, &ev);
  }
}

/* Fails the connection (it reconnects after the backoff): a setup step was refused. */
static void fail_conn(rn_t *n, redisAsyncContext *ac, const char *what, const char *why) {
  snprintf(n->conn.err, sizeof n->conn.err, "invalidation channel: %s failed: %s", what, why ? why : "?");
  n->conn.err_set = 1;
  redisAsyncFree(ac); /* deferred by hiredis until the callback returns; on_down follows */
}

static void on_subscribe(redisAsyncContext *ac, void *reply_, void *pd) {
  rn_t *n = pd;
  redisReply *reply = reply_;
  if (reply == NULL || n->closing) return; /* the connection is going: on_down says so */
  if (reply->type == REDIS_REPLY_ERROR) {
    fail_conn(n, ac, "SUBSCRIBE", reply->str);
    return;
  }
  if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3 || reply->element[0]->type != REDIS_REPLY_STRING) return;
  if (strcmp(reply->element[0]->str, "subscribe") == 0) {
    if (n->state == NS_SETUP) {
      n->state = NS_UP;
      n->ups++;
      deliver_kind(n, ENGRAM_WATCH_UP, NULL);
    }
  } else if (strcmp(reply->element[0]->str, "message") == 0 && n->state == NS_UP) {
    on_message(n, reply->element[2]);
  }
}

static void on_tracking(redisAsyncContext *ac, void *reply_, void *pd) {
  rn_t *n = pd;
  redisReply *reply = reply_;
  if (reply == NULL || n->closing) return;
  if (reply->type == REDIS_REPLY_ERROR) fail_conn(n, ac, "CLIENT TRACKING", reply->str);
}

/* hiredis 0.14 reads a formatted command's first argument with strchr: end the text with a NUL it may read. */
static void terminate(engram__rbuf_t *b) {
  engram__rbuf_raw(b, "", 1);
  if (!b->failed) b->len--;
}

static void on_client_id(redisAsyncContext *ac, void *reply_, void *pd) {
  rn_t *n = pd;
  redisReply *reply = reply_;
  engram__rbuf_t *b = &n->cmd;
  engram__redis_t *r = n->r;
  if (reply == NULL || n->closing) return;
  if (reply->type != REDIS_REPLY_INTEGER) {
    fail_conn(n, ac, "CLIENT ID", reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply");
    return;
  }
  /* CLIENT TRACKING ON REDIRECT <own id> BCAST PREFIX <prefix>i:, then SUBSCRIBE __redis__:invalidate. */
  engram__rbuf_reset(b);
  engram__rbuf_array(b, 8);
  engram__rbuf_arg(b, "CLIENT", 6);
  engram__rbuf_arg(b, "TRACKING", 8);
  engram__rbuf_arg(b, "ON", 2);
  engram__rbuf_arg(b, "REDIRECT", 8);
  engram__rbuf_arg_i64(b, reply->integer);
  engram__rbuf_arg(b, "BCAST", 5);
  engram__rbuf_arg(b, "PREFIX", 6);
  engram__rbuf_arg_begin(b, r->prefix_len + 2);
  engram__rbuf_raw(b, r->prefix, r->prefix_len);
  engram__rbuf_raw(b, "i:", 2);
  engram__rbuf_arg_end(b);
  terminate(b);
  if (b->failed || engram__redis_conn_send(&n->conn, on_tracking, n, b->p, b->len) != 0) {
    fail_conn(n, ac, "CLIENT TRACKING", "out of memory");
    return;
  }
  engram__rbuf_reset(b);
  engram__rbuf_array(b, 2);
  engram__rbuf_arg(b, "SUBSCRIBE", 9);
  engram__rbuf_arg(b, "__redis__:invalidate", 20);
  terminate(b);
  if (b->failed || engram__redis_conn_send(&n->conn, on_subscribe, n, b->p, b->len) != 0)
    fail_conn(n, ac, "SUBSCRIBE", "out of memory");
}

/* ---- The connection's callbacks ---- */

static void on_ready(void *ud) {
  rn_t *n = ud;
  static const char cmd[] = "*2\r\n$6\r\nCLIENT\r\n$2\r\nID\r\n";
  n->state = NS_SETUP;
  if (engram__redis_conn_send(&n->conn, on_client_id, n, cmd, sizeof cmd - 1) != 0 && n->conn.ac != NULL)
    fail_conn(n, n->conn.ac, "CLIENT ID", "out of memory");
}

static void on_down(void *ud, const char *why, int was_ready) {
  rn_t *n = ud;
  int was_up = n->state == NS_UP;
  (void)was_ready;
  n->state = NS_DOWN;
  if (was_up) {
    n->downs++;
    deliver_kind(n, ENGRAM_WATCH_DOWN, why);
  }
}

static void on_closed(void *ud) {
  rn_t *n = ud;
  engram__redis_t *r = n->r;
  engram__redis_hook_fn *done = n->done;
  engram__rbuf_free(&n->cmd);
  engram_free(n);
  r->notify = NULL;
  if (done != NULL) done(r);
}

/* ---- The vtable's methods ---- */

static char *dup_or_null(const char *s, int *nomem) {
  char *d;
  if (s == NULL) return NULL;
  if ((d = engram_strdup(s)) == NULL) *nomem = 1;
  return d;
}

static rn_t *listener_new(engram__redis_t *r) {
  rn_t *n = engram_calloc(1, sizeof *n);
  int nomem = 0;
  if (n == NULL) return NULL;
  n->r = r;
  n->conn.host = dup_or_null(r->conn.host, &nomem);
  n->conn.port = r->conn.port;
  n->conn.db = r->conn.db;
  n->conn.username = dup_or_null(r->conn.username, &nomem);
  n->conn.password = dup_or_null(r->conn.password, &nomem);
  n->conn.connect_timeout_ms = r->conn.connect_timeout_ms;
  n->conn.backoff_min_ms = r->conn.backoff_min_ms;
  n->conn.backoff_max_ms = r->conn.backoff_max_ms;
  n->conn.n_scripts = 0;
  n->conn.cbs.on_ready = on_ready;
  n->conn.cbs.on_down = on_down;
  n->conn.cbs.on_closed = on_closed;
  n->conn.ud = n;
  if (nomem || n->conn.host == NULL || engram__redis_conn_init(&n->conn, r->loop) != 0) {
    engram_free(n->conn.host);
    engram_free(n->conn.username);
    engram_free(n->conn.password);
    engram_free(n);
    return NULL;
  }
  return n;
}

int engram__redis_watch(engram_source_t *src, engram_watch_cb cb, void *ud, void **handle) {
  engram__redis_t *r = engram_source_state(src);
  rn_t *n = r->notify;
  rw_t *w;
  if (r->closing) return ENGRAM_ECLOSED;
  if ((w = engram_calloc(1, sizeof *w)) == NULL) return ENGRAM_ENOMEM;
  if (n == NULL) {
    if ((n = listener_new(r)) == NULL) {
      engram_free(w);
      return ENGRAM_ENOMEM;
    }
    r->notify = n;
    engram__redis_conn_start(&n->conn);
  }
  w->cb = cb;
  w->ud = ud;
  w->next = n->watchers;
  n->watchers = w;
  *handle = w;
  if (n->state == NS_UP) {
    engram_watch_event_t ev;
    memset(&ev, 0, sizeof ev);
    ev.kind = ENGRAM_WATCH_UP;
    cb(&ev, ud);
  }
  return 0;
}

void engram__redis_unwatch(engram_source_t *src, void *handle) {
  engram__redis_t *r = engram_source_state(src);
  rn_t *n = r->notify;
  rw_t *w = handle;
  engram_watch_event_t ev;
  if (n == NULL || w == NULL || w->dead) return;
  w->dead = 1;
  memset(&ev, 0, sizeof ev);
  ev.kind = ENGRAM_WATCH_END;
  ev.status = ENGRAM_ECANCELED;
  n->delivering++;
  w->cb(&ev, w->ud);
  n->delivering--;
  reap(n);
}

const char *engram__redis_notify_state(const engram__redis_t *r) {
  const rn_t *n = r->notify;
  if (n == NULL || !live_watchers(n)) return "none";
  if (n->state == NS_UP) return "up";
  if (n->state == NS_STARTING || n->state == NS_SETUP) return "connecting";
  return "down";
}

uint64_t engram__redis_notify_received(const engram__redis_t *r) { return r->notify ? r->notify->received : 0; }

void engram__redis_notify_shutdown(engram__redis_t *r, engram__redis_hook_fn *done) {
  rn_t *n = r->notify;
  rw_t *w;
  engram_watch_event_t ev;
  if (n == NULL || n->closing) return;
  n->closing = 1;
  n->done = done;
  memset(&ev, 0, sizeof ev);
  ev.kind = ENGRAM_WATCH_END;
  ev.status = ENGRAM_ECLOSED;
  n->delivering++;
  for (w = n->watchers; w != NULL; w = w->next)
    if (!w->dead) {
      w->dead = 1;
      w->cb(&ev, w->ud);
    }
  n->delivering--;
  reap(n);
  engram__redis_conn_close(&n->conn); /* on_closed frees n and runs done */
}
