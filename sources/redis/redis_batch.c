/*
 * redis_batch.c — the redis source's batch operations (see redis_batch.h): retrieve_many and delete_many send
 * every command at once on the pipelined connection (one round trip), each with its own reply callback;
 * store_many hands its entries to the store coalescing (redis_store.c: calls of the batch store script, shared
 * with the stores running at the same time) and gets each entry's result back through
 * engram__redis_batch_stored (routed by redis.c). The call finishes when the last result is in. Replies
 * arrive in order, except that a delete answered NOSCRIPT (the server's script cache was flushed) is resent
 * with EVAL, so per-item results are kept in slots and turned into reply items, in input order, at the end.
 */
#include <stdio.h>
#include <string.h>

#include "redis_batch.h"
#include "redis_call.h"
#include "redis_cmd.h"
#include "redis_item.h"
#include "redis_rbuf.h"
#include "redis_search.h"
#include "redis_store.h"

/* ---- Batches: every command sent at once, one round trip ---- */

typedef struct batch_s batch_t;
typedef struct {
  batch_t *bt;
  int status;
  uint64_t version;
  int64_t created;
} slot_t;

struct batch_s {
  engram__redis_t *r;
  engram_request_t *req;
  size_t pending;
  size_t next;      /* retrieve_many: the index of the next reply (replies come in order) */
  uint64_t count;
  int status;       /* the whole call's error, if any */
  char msg[320];
  slot_t slots[];   /* store_many */
};

static void batch_done(batch_t *bt) {
  engram__redis_t *r = bt->r;
  engram_request_t *req = bt->req;
  int status = bt->status;
  size_t i;
  if (status == 0 && req->op == ENGRAM_OP_STORE_MANY) {
    engram_item_t it;
    for (i = 0; i < req->n && status == 0; i++) {
      const engram_entry_t *en = &req->entries[i];
      slot_t *s = &bt->slots[i];
      memset(&it, 0, sizeof it);
      it.key = en->key;
      it.ns = req->ns;
      if (s->status == 0) {
        it.metadata = en->metadata;
        it.created_at_ms = s->created;
        it.updated_at_ms = req->now_ms;
        it.expires_at_ms = req->entry_expires_at_ms[i];
        it.version = s->version;
        it.score = 1.0;
        bt->count++;
      }
      if (engram_reply_add(req, &it, 0) != 0) status = ENGRAM_ENOMEM;
      else engram_reply_set_item_status(req, i, s->status);
    }
  }
  if (status == 0) engram_reply_set_count(req, bt->count);
  req->backend_data = NULL;
  if (status != 0 && bt->msg[0] != '\0') {
    char msg[320];
    memcpy(msg, bt->msg, sizeof msg);
    engram_free(bt);
    engram__redis_finish(r, req, status, "%s", msg);
    return;
  }
  engram_free(bt);
  engram__redis_finish(r, req, status, NULL);
}

static void batch_error(batch_t *bt, const redisAsyncContext *ac, int status, const redisReply *reply) {
  if (bt->status != 0) return;
  bt->status = status;
  if (status == ENGRAM_EUNAVAILABLE) engram__redis_why(bt->r, ac, bt->msg, sizeof bt->msg);
  else if (reply != NULL) snprintf(bt->msg, sizeof bt->msg, "redis: %.*s", (int)(reply->len > 300 ? 300 : reply->len), reply->str);
}

void engram__redis_batch_stored(engram__redis_t *r, engram_request_t *req, size_t i, int status, uint64_t version,
                                int64_t created, const char *msg) {
  batch_t *bt = req->backend_data;
  slot_t *s = &bt->slots[i];
  (void)r;
  if (status == 0 || status == ENGRAM_EEXIST || status == ENGRAM_ECONFLICT) {
    s->status = status;
    s->version = version;
    s->created = created;
  } else if (bt->status == 0) {
    bt->status = status;
    snprintf(bt->msg, sizeof bt->msg, "%s", msg ? msg : "");
  }
  if (--bt->pending == 0) batch_done(bt);
}

static void on_retrieve_many(redisAsyncContext *ac, void *rep, void *pd) {
  batch_t *bt = pd;
  engram_request_t *req = bt->req;
  redisReply *reply = rep;
  size_t i = bt->next++;
  engram__redis_fields_t f;
  if (reply == NULL) {
    batch_error(bt, ac, ENGRAM_EUNAVAILABLE, NULL);
  } else if (reply->type == REDIS_REPLY_ERROR) {
    batch_error(bt, ac, ENGRAM_EBACKEND, reply);
  } else if (bt->status == 0) {
    int rc = engram__redis_parse_read(reply, req->flags, engram_now_ms(), &f);
    if (rc == 0 && f.found) {
      rc = engram__redis_add_item(req, req->keys[i], req->ns, &f, 1, (req->flags & ENGRAM_OPT_INCLUDE_METADATA) != 0, 1.0);
      if (rc == 0) bt->count++;
    } else if (rc == 0) {
      engram_item_t blank;
      memset(&blank, 0, sizeof blank);
      blank.key = req->keys[i];
      blank.ns = req->ns;
      rc = engram_reply_add(req, &blank, 0) == 0 ? ENGRAM_ENOTFOUND : ENGRAM_ENOMEM;
    }
    if (rc == ENGRAM_ENOMEM || rc == ENGRAM_EBACKEND) {
      batch_error(bt, ac, rc, NULL);
      if (rc == ENGRAM_EBACKEND) snprintf(bt->msg, sizeof bt->msg, "key '%s': the stored item is not valid JSON", req->keys[i]);
    } else {
      engram_reply_set_item_status(req, i, rc);
    }
  }
  if (--bt->pending == 0) batch_done(bt);
}

static void on_delete_many(redisAsyncContext *ac, void *rep, void *pd);

static int delete_many_send(batch_t *bt, size_t i) {
  const char *key = bt->req->keys[i];
  engram__redis_build_delete(bt->r, bt->req->ns, bt->req->ns_len, key, strlen(key));
  return engram__redis_send(bt->r, on_delete_many, &bt->slots[i]);
}

static void on_delete_many(redisAsyncContext *ac, void *rep, void *pd) {
  slot_t *s = pd;
  batch_t *bt = s->bt;
  redisReply *reply = rep;
  if (reply == NULL) {
    batch_error(bt, ac, ENGRAM_EUNAVAILABLE, NULL);
  } else if (reply->type == REDIS_REPLY_ERROR) {
    batch_error(bt, ac, ENGRAM_EBACKEND, reply);
  } else if (reply->type == REDIS_REPLY_INTEGER) {
    bt->count += reply->integer > 0 ? (uint64_t)reply->integer : 0;
    if (reply->integer > 0) { /* the delete script bumped the generation */
      const char *key = bt->req->keys[s - bt->slots];
      engram__redis_search_removed(bt->r, bt->req->ns, bt->req->ns_len, key, strlen(key));
      engram__redis_search_bumped(bt->r, bt->req->ns, bt->req->ns_len);
    }
  }
  if (--bt->pending == 0) batch_done(bt);
}

void engram__redis_batch(engram__redis_t *r, engram_request_t *req) {
  size_t n = req->n, i, nslots = req->op == ENGRAM_OP_RETRIEVE_MANY ? 0 : n;
  batch_t *bt = engram_calloc(1, sizeof *bt + nslots * sizeof(slot_t));
  int rc = 0;
  if (bt == NULL) {
    engram__redis_finish(r, req, ENGRAM_ENOMEM, NULL);
    return;
  }
  bt->r = r;
  bt->req = req;
  req->backend_data = bt;
  bt->pending = 1; /* held while sending */
  for (i = 0; i < nslots; i++) bt->slots[i].bt = bt;
  for (i = 0; i < n; i++) {
    if (req->op == ENGRAM_OP_STORE_MANY) {
      rc = engram__redis_store_add(r, req, i);
      if (rc == ENGRAM_ETOOBIG) {
        bt->slots[i].status = rc;
        continue;
      }
    } else if (req->op == ENGRAM_OP_RETRIEVE_MANY) {
      engram__rbuf_reset(&r->cmd);
      engram__redis_build_read(r, &r->cmd, req->ns, req->ns_len, req->keys[i], strlen(req->keys[i]), req->flags);
      rc = engram__redis_send(r, on_retrieve_many, bt);
    } else {
      rc = delete_many_send(bt, i);
    }
    if (rc != 0) {
      batch_error(bt, NULL, rc, NULL);
      break;
    }
    bt->pending++;
  }
  if (--bt->pending == 0) batch_done(bt);
}
