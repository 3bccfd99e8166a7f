/*
 * redis_store.c — the redis source's stores, coalesced (see redis_store.h): every store (and every entry of a
 * store_many) that starts during one turn of the loop joins the batch being formed, and the batch goes to Redis
 * as one EVALSHA of the batch store script (redis_script.c) — before the loop next polls (a uv_prepare handle),
 * as soon as it holds store_batch items or 1 MiB of arguments, or just before any other command of the source
 * is sent, so that commands reach Redis in the order they were started. Why: the server's time per store is
 * mostly the cost of a Lua call and of each redis.call inside it; one call for many items, with one ZADD and one
 * SADD per namespace for the new ones, spends it once per batch instead of once per store.
 *
 * Each item keeps the semantics of a store of its own: the script runs the items in order (a later item sees
 * an earlier one's write) and answers per item ({version, created}, exists, version differs, or an error reply
 * of its own from redis.pcall). Each item's result is handed to r->stored exactly once: from the reply, from
 * the NULL reply hiredis gives every pending callback when the connection dies (every item fails
 * ENGRAM_EUNAVAILABLE), or, when the batch could not be sent at all, from the prepare handle — never inside the
 * send of another command, whose caller still holds the shared command buffer. A flushed script cache is the
 * pipeline's business (redis_pipe.h). Deadlines and cancellation are the core's, as for any call in flight.
 */
#include <stdio.h>
#include <string.h>

#include "redis_call.h"
#include "redis_cmd.h"
#include "redis_conn.h"
#include "redis_json.h"
#include "redis_pipe.h"
#include "redis_rbuf.h"
#include "redis_search.h"
#include "redis_store.h"

#define SB_MAX_NS 16              /* namespaces in one batch; one more starts a new batch */
#define SB_MAX_BYTES (1u << 20)   /* a batch is sent once its keys and arguments reach this size */
#define SB_KEEP 16                /* batches kept for reuse (with their buffers) */

typedef struct {
  engram_request_t *req;
  size_t idx; /* store_many: the entry */
} sb_item_t;

struct engram__redis_sb_s {
  engram__redis_sb_t *next;   /* in r->sb_failed or r->sb_free */
  engram__redis_t *r;
  sb_item_t *items;
  size_t n, cap;
  engram__rbuf_t keys, args;  /* the items' hash keys; the items' arguments (7 each) */
  struct {
    const char *p; /* the namespace of a request of the batch (alive until it is finished) */
    size_t len;
  } ns[SB_MAX_NS];
  size_t n_ns, last_ns;
  int status;                 /* r->sb_failed: what every item fails with */
  char msg[320];
};

/* ---- Batches ---- */

static void sb_destroy(engram__redis_sb_t *sb) {
  engram__rbuf_free(&sb->keys);
  engram__rbuf_free(&sb->args);
  engram_free(sb->items);
  engram_free(sb);
}

static engram__redis_sb_t *sb_new(engram__redis_t *r) {
  engram__redis_sb_t *sb = r->sb_free;
  if (sb != NULL && sb->cap >= r->store_batch) {
    r->sb_free = sb->next;
    r->sb_n_free--;
    sb->next = NULL;
    return sb;
  }
  if ((sb = engram_calloc(1, sizeof *sb)) == NULL) return NULL;
  if ((sb->items = engram_malloc(r->store_batch * sizeof *sb->items)) == NULL) {
    engram_free(sb);
    return NULL;
  }
  sb->cap = r->store_batch;
  sb->r = r;
  return sb;
}

static void sb_recycle(engram__redis_t *r, engram__redis_sb_t *sb) {
  if (r->closing || r->sb_n_free >= SB_KEEP) {
    sb_destroy(sb);
    return;
  }
  sb->n = sb->n_ns = sb->last_ns = 0;
  sb->status = 0;
  sb->msg[0] = '\0';
  engram__rbuf_reset(&sb->keys);
  engram__rbuf_reset(&sb->args);
  sb->next = r->sb_free;
  r->sb_free = sb;
  r->sb_n_free++;
}

/* The slot of namespace (ns, len) in sb, added when new; -1 when sb has no room for another namespace. */
static int ns_slot(engram__redis_sb_t *sb, const char *ns, size_t len) {
  size_t j;
  if (sb->n_ns > 0 && sb->ns[sb->last_ns].len == len && memcmp(sb->ns[sb->last_ns].p, ns, len) == 0)
    return (int)sb->last_ns;
  for (j = 0; j < sb->n_ns; j++)
    if (sb->ns[j].len == len && memcmp(sb->ns[j].p, ns, len) == 0) return (int)(sb->last_ns = j);
  if (sb->n_ns == SB_MAX_NS) return -1;
  sb->ns[sb->n_ns].p = ns;
  sb->ns[sb->n_ns].len = len;
  return (int)(sb->last_ns = sb->n_ns++);
}

static void prep_start(engram__redis_t *r);

static void on_sb_reply(redisAsyncContext *ac, void *rep, void *pd);

/* Formats sb as one call of the batch script into r->bcmd and sends it. Returns 0, ENGRAM_EUNAVAILABLE or
 * ENGRAM_ENOMEM (the callback will not run). */
static int sb_send(engram__redis_t *r, engram__redis_sb_t *sb) {
  engram__rbuf_t *b = &r->bcmd;
  size_t j;
  int rc;
  if (r->closing) return ENGRAM_EUNAVAILABLE;
  engram__rbuf_reset(b);
  /* One store in one namespace (the case at one call in flight): the same arguments to the leaner store_one. */
  engram__redis_begin_script(r, b, sb->n == 1 && sb->n_ns == 1 ? RS_STORE_ONE : RS_STORE_BATCH, (int)(1 + sb->n + 2 * sb->n_ns),
                             (int)(1 + 7 * sb->n + sb->n_ns));
  engram__redis_arg_nsset(r, b);
  engram__rbuf_raw(b, sb->keys.p, sb->keys.len);
  for (j = 0; j < sb->n_ns; j++) engram__redis_arg_index(r, b, sb->ns[j].p, sb->ns[j].len);
  for (j = 0; j < sb->n_ns; j++) engram__redis_arg_gen(r, b, sb->ns[j].p, sb->ns[j].len);
  engram__rbuf_arg_i64(b, (int64_t)sb->n);
  engram__rbuf_raw(b, sb->args.p, sb->args.len);
  for (j = 0; j < sb->n_ns; j++) engram__rbuf_arg(b, sb->ns[j].p, sb->ns[j].len);
  if (b->failed) return ENGRAM_ENOMEM;
  if ((rc = engram__redis_pipe_send(&r->pipe, on_sb_reply, sb, b->p, b->len)) == 0) r->store_calls++;
  return rc;
}

/* ---- Results ---- */

/* The result of item it, to r->stored. */
static void item_done(engram__redis_t *r, const sb_item_t *it, int status, uint64_t version, int64_t created,
                      const char *msg) {
  r->stored(r, it->req, it->idx, status, version, created, msg);
}

/* Every item of sb fails with status; then sb is recycled. */
static void sb_fail_all(engram__redis_t *r, engram__redis_sb_t *sb, int status, const char *msg) {
  size_t i;
  for (i = 0; i < sb->n; i++) item_done(r, &sb->items[i], status, 0, 0, msg);
  sb_recycle(r, sb);
}

/* A batch that could not be sent: its items fail from the prepare handle (see the file comment). */
static void sb_defer_fail(engram__redis_t *r, engram__redis_sb_t *sb, int status) {
  engram__redis_sb_t **pp = &r->sb_failed;
  sb->status = status;
  if (status == ENGRAM_EUNAVAILABLE) engram__redis_why(r, NULL, sb->msg, sizeof sb->msg);
  else sb->msg[0] = '\0';
  while (*pp != NULL) pp = &(*pp)->next; /* keep the order of the calls */
  sb->next = NULL;
  *pp = sb;
  prep_start(r);
}

/* Tells the cached text indexes (redis_search.c) what the batch wrote: each item written, then one generation
 * bump per namespace with an item written (the script's), before any item's call is finished (the namespaces
 * live in the requests). */
static void note_written(engram__redis_t *r, engram__redis_sb_t *sb, const redisReply *reply) {
  unsigned char wrote[SB_MAX_NS];
  size_t i, j;
  memset(wrote, 0, sizeof wrote);
  for (i = 0; i < sb->n; i++) {
    const redisReply *e = reply->element[2 * i];
    const engram_request_t *req = sb->items[i].req;
    int slot;
    if (e->type == REDIS_REPLY_ERROR || engram__redis_int(e, 0) <= 0) continue;
    if (req->op == ENGRAM_OP_STORE_MANY) {
      const engram_entry_t *en = &req->entries[sb->items[i].idx];
      engram__redis_search_wrote(r, req->ns, req->ns_len, en->key, strlen(en->key), en->value,
                                 (uint64_t)engram__redis_int(e, 0), req->entry_expires_at_ms[sb->items[i].idx]);
    } else {
      engram__redis_search_wrote(r, req->ns, req->ns_len, req->key, req->key_len, req->value,
                                 (uint64_t)engram__redis_int(e, 0), req->expires_at_ms);
    }
    if ((slot = ns_slot(sb, req->ns, req->ns_len)) >= 0) wrote[slot] = 1;
  }
  for (j = 0; j < sb->n_ns; j++)
    if (wrote[j]) engram__redis_search_bumped(r, sb->ns[j].p, sb->ns[j].len);
}

static void on_sb_reply(redisAsyncContext *ac, void *rep, void *pd) {
  engram__redis_sb_t *sb = pd;
  engram__redis_t *r = sb->r;
  redisReply *reply = rep;
  char msg[360];
  size_t i;
  if (reply == NULL) {
    engram__redis_why(r, ac, msg, sizeof msg);
    sb_fail_all(r, sb, ENGRAM_EUNAVAILABLE, msg);
    return;
  }
  if (reply->type == REDIS_REPLY_ERROR) {
    snprintf(msg, sizeof msg, "redis: %.*s", (int)(reply->len > 300 ? 300 : reply->len), reply->str);
    sb_fail_all(r, sb, ENGRAM_EBACKEND, msg);
    return;
  }
  if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 * sb->n) {
    sb_fail_all(r, sb, ENGRAM_EBACKEND, "redis: unexpected reply to the store script");
    return;
  }
  note_written(r, sb, reply);
  for (i = 0; i < sb->n; i++) {
    const redisReply *e = reply->element[2 * i];
    int64_t v;
    if (e->type == REDIS_REPLY_ERROR) {
      snprintf(msg, sizeof msg, "redis: %.*s", (int)(e->len > 300 ? 300 : e->len), e->str);
      item_done(r, &sb->items[i], ENGRAM_EBACKEND, 0, 0, msg);
      continue;
    }
    v = engram__redis_int(e, 0);
    if (v > 0) item_done(r, &sb->items[i], 0, (uint64_t)v, engram__redis_int(reply->element[2 * i + 1], 0), NULL);
    else if (v == -1) item_done(r, &sb->items[i], ENGRAM_EEXIST, 0, 0, NULL);
    else if (v == -2) item_done(r, &sb->items[i], ENGRAM_ECONFLICT, 0, 0, NULL);
    else item_done(r, &sb->items[i], ENGRAM_EBACKEND, 0, 0, "redis: unexpected reply to the store script");
  }
  sb_recycle(r, sb);
}

/* ---- Sending ---- */

void engram__redis_store_flush(engram__redis_t *r) {
  engram__redis_sb_t *sb = r->sb;
  int rc;
  if (sb == NULL) return;
  r->sb = NULL;
  if (sb->n == 0) {
    sb_recycle(r, sb);
    return;
  }
  if ((rc = sb_send(r, sb)) != 0) sb_defer_fail(r, sb, rc);
}

static void on_prep(uv_prepare_t *h) {
  engram__redis_t *r = h->data;
  engram__redis_sb_t *sb;
  /* Finishing a failed batch may start stores: loop until nothing is left, so the loop never polls with a
   * batch waiting. */
  while (r->sb != NULL || r->sb_failed != NULL) {
    engram__redis_store_flush(r);
    while ((sb = r->sb_failed) != NULL) {
      r->sb_failed = sb->next;
      sb_fail_all(r, sb, sb->status, sb->msg);
    }
  }
  uv_prepare_stop(h);
  r->prep_active = 0;
  engram__redis_conn_flush(&r->conn); /* the batch leaves in this turn (redis_conn.h) */
}

static void prep_start(engram__redis_t *r) {
  if (r->prep_active || !r->prep_open) return;
  uv_prepare_start(&r->prep, on_prep);
  r->prep_active = 1;
}

/* The cond argument: "0", or "c" for create-only followed by the if_version digits, if any; or, for a replica
 * (ENGRAM_REQ_REPLICA), "r" then its version, ":" and its created time. */
static void arg_cond(engram__rbuf_t *b, int create_only, uint64_t if_version, const engram_request_t *replica) {
  char tmp[64];
  int n = 0;
  if (replica != NULL) {
    n = snprintf(tmp, sizeof tmp, "r%llu:%lld", (unsigned long long)replica->version,
                 (long long)replica->created_at_ms);
    engram__rbuf_arg(b, tmp, (size_t)n);
    return;
  }
  if (!create_only && if_version == 0) {
    engram__rbuf_arg(b, "0", 1);
    return;
  }
  if (create_only) tmp[n++] = 'c';
  if (if_version) n += snprintf(tmp + n, sizeof tmp - (size_t)n, "%llu", (unsigned long long)if_version);
  engram__rbuf_arg(b, tmp, (size_t)n);
}

int engram__redis_store_add(engram__redis_t *r, engram_request_t *req, size_t i) {
  const char *key;
  size_t key_len, klen0, alen0, nns0, last0, len;
  const cJSON *value, *meta;
  int64_t expires;
  uint64_t if_version = 0;
  engram__redis_sb_t *sb;
  char *text;
  int slot = 0, owned = 0, rc = 0;
  if (r->closing) return ENGRAM_EUNAVAILABLE;
  if (req->op == ENGRAM_OP_STORE_MANY) {
    const engram_entry_t *en = &req->entries[i];
    key = en->key;
    key_len = strlen(key);
    value = en->value;
    meta = en->metadata;
    expires = req->entry_expires_at_ms[i];
  } else {
    key = req->key;
    key_len = req->key_len;
    value = req->value;
    meta = req->metadata;
    expires = req->expires_at_ms;
    if_version = req->if_version;
  }
  sb = r->sb;
  if (sb != NULL && (slot = ns_slot(sb, req->ns, req->ns_len)) < 0) {
    engram__redis_store_flush(r);
    sb = NULL;
  }
  if (sb == NULL) {
    if ((sb = sb_new(r)) == NULL) return ENGRAM_ENOMEM;
    r->sb = sb;
    prep_start(r);
    slot = ns_slot(sb, req->ns, req->ns_len);
  }
  klen0 = sb->keys.len;
  alen0 = sb->args.len;
  nns0 = sb->n_ns;
  last0 = sb->last_ns;
  engram__redis_arg_item(r, &sb->keys, req->ns, req->ns_len, key, key_len);
  {
    int replica = req->op == ENGRAM_OP_STORE && (req->flags & ENGRAM_REQ_REPLICA) != 0;
    arg_cond(&sb->args, (req->flags & ENGRAM_OPT_CREATE_ONLY) != 0, if_version, replica ? req : NULL);
    engram__rbuf_arg_i64(&sb->args, replica ? req->updated_at_ms : req->now_ms);
  }
  engram__rbuf_arg_i64(&sb->args, expires > 0 ? expires : 0);
  if ((text = engram__redis_json_print(&r->scratch, value, &len, &owned)) == NULL) {
    rc = ENGRAM_ENOMEM;
  } else if (r->max_value_bytes && len > r->max_value_bytes) {
    rc = ENGRAM_ETOOBIG;
  } else {
    engram__rbuf_arg(&sb->args, text, len);
  }
  if (owned) engram_free(text);
  if (rc == 0 && meta != NULL) {
    if ((text = engram__redis_json_print(&r->scratch, meta, &len, &owned)) == NULL) rc = ENGRAM_ENOMEM;
    else engram__rbuf_arg(&sb->args, text, len);
    if (owned) engram_free(text);
  } else if (rc == 0) {
    engram__rbuf_arg(&sb->args, "", 0);
  }
  if (rc == 0) {
    engram__rbuf_arg(&sb->args, key, key_len);
    engram__rbuf_arg_i64(&sb->args, slot);
    if (sb->keys.failed || sb->args.failed) rc = ENGRAM_ENOMEM;
  }
  if (rc != 0) {
    /* Take the item back out: the buffers' earlier content is intact (a failed growth keeps it). */
    sb->keys.len = klen0;
    sb->args.len = alen0;
    sb->keys.failed = sb->args.failed = 0;
    sb->n_ns = nns0;
    sb->last_ns = last0 < nns0 ? last0 : 0;
    return rc;
  }
  sb->items[sb->n].req = req;
  sb->items[sb->n].idx = i;
  sb->n++;
  r->stores_batched++;
  if (sb->n >= r->store_batch || sb->keys.len + sb->args.len >= SB_MAX_BYTES) engram__redis_store_flush(r);
  return 0;
}

/* ---- Lifecycle ---- */

int engram__redis_store_init(engram__redis_t *r, engram__redis_stored_fn *stored) {
  r->stored = stored;
  if (uv_prepare_init(r->loop, &r->prep) != 0) return ENGRAM_EBACKEND;
  r->prep.data = r;
  r->prep_open = 1;
  return 0;
}

static void on_prep_closed(uv_handle_t *h) {
  engram__redis_t *r = h->data;
  r->prep_open = 0;
  r->prep_closed(r);
}

void engram__redis_store_close(engram__redis_t *r, engram__redis_hook_fn *closed) {
  engram__redis_sb_t *sb;
  /* r->closing is set: the batch being formed cannot be sent and joins the failed ones. */
  engram__redis_store_flush(r);
  while ((sb = r->sb_failed) != NULL) {
    r->sb_failed = sb->next;
    sb_fail_all(r, sb, sb->status, sb->msg);
  }
  if (r->prep_open && !uv_is_closing((uv_handle_t *)&r->prep)) {
    r->prep_active = 0;
    r->prep_closed = closed;
    uv_close((uv_handle_t *)&r->prep, on_prep_closed);
  }
}

void engram__redis_store_free(engram__redis_t *r) {
  engram__redis_sb_t *sb;
  while ((sb = r->sb_free) != NULL) {
    r->sb_free = sb->next;
    sb_destroy(sb);
  }
  r->sb_n_free = 0;
  engram__rbuf_free(&r->bcmd);
}
