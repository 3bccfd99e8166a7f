/*
 * redis_single.c — the redis source's single-key operations (see redis_single.h). A store joins the batch being
 * formed (redis_store.c) and is finished when its result comes back; retrieve reads the value and the expiry
 * (HMGET; an expiry in the past reads as missing, as in every read, even before Redis's clock expired the hash) or
 * every field with ENGRAM_OPT_INCLUDE_METADATA; exists reads the expiry field alike; delete answers
 * with a count taken from an integer reply, and a delete answered NOSCRIPT is sent again with EVAL. Misses,
 * existing keys and version conflicts finish with the stock completions (engram_request_fail_not_found,
 * _exists, _conflict), worded as on every source.
 */
#include <string.h>

#include "redis_call.h"
#include "redis_cmd.h"
#include "redis_item.h"
#include "redis_rbuf.h"
#include "redis_search.h"
#include "redis_single.h"
#include "redis_store.h"

/* ---- store ---- */

static void store_failed(engram__redis_t *r, engram_request_t *req, int rc) {
  if (rc == ENGRAM_ETOOBIG)
    engram__redis_finish(r, req, rc, "key '%s': value larger than max_value_bytes (%zu)", req->key, r->max_value_bytes);
  else engram__redis_finish_unavailable(r, req, NULL, rc);
}

/* The store joins the batch being formed (redis_store.c); its result comes back to engram__redis_store_one_done
 * (routed by redis.c). */
void engram__redis_store_one(engram__redis_t *r, engram_request_t *req) {
  int rc = engram__redis_store_add(r, req, 0);
  if (rc != 0) store_failed(r, req, rc);
}

void engram__redis_store_one_done(engram__redis_t *r, engram_request_t *req, int status, uint64_t version,
                                  int64_t created, const char *msg) {
  engram_item_t item;
  switch (status) {
    case 0:
      memset(&item, 0, sizeof item);
      item.key = req->key;
      item.ns = req->ns;
      if (req->metadata != NULL && (item.metadata = engram_request_take_metadata(req)) == NULL) {
        engram__redis_finish(r, req, ENGRAM_ENOMEM, NULL); /* stored; only the reply is short (its copy: source.h) */
        break;
      }
      item.created_at_ms = created;
      item.updated_at_ms = (req->flags & ENGRAM_REQ_REPLICA) ? req->updated_at_ms : req->now_ms;
      item.expires_at_ms = req->expires_at_ms;
      item.version = version;
      item.score = 1.0;
      engram__redis_finish(r, req, engram_reply_add(req, &item, ENGRAM_REPLY_OWN_METADATA), NULL);
      break;
    case ENGRAM_EEXIST:
      engram_request_fail_exists(req, NULL);
      engram__redis_slot_free(r);
      break;
    case ENGRAM_ECONFLICT:
      engram_request_fail_conflict(req, NULL, req->if_version);
      engram__redis_slot_free(r);
      break;
    default:
      if (status == ENGRAM_EUNAVAILABLE) r->unavailable++;
      if (msg != NULL && msg[0] != '\0') engram__redis_finish(r, req, status, "%s", msg);
      else engram__redis_finish(r, req, status, NULL);
      break;
  }
}

/* ---- retrieve, exists, delete ---- */

static void on_retrieve(redisAsyncContext *ac, void *rep, void *pd) {
  engram_request_t *req = pd;
  engram__redis_t *r = engram__redis_of(ac);
  redisReply *reply = rep;
  engram__redis_fields_t f;
  int rc;
  if (reply == NULL) {
    engram__redis_finish_unavailable(r, req, ac, ENGRAM_EUNAVAILABLE);
    return;
  }
  if (reply->type == REDIS_REPLY_ERROR) {
    engram__redis_finish_reply_error(r, req, reply);
    return;
  }
  /* an expiry in the past reads as missing, as in every other read, even while Redis's own clock has not yet
   * expired the hash */
  if (engram__redis_parse_read(reply, req->flags, engram_now_ms(), &f) != 0) {
    engram__redis_finish(r, req, ENGRAM_EBACKEND, "key '%s': unexpected reply to HMGET", req->key);
    return;
  }
  if (!f.found) {
    engram_request_fail_not_found(req, NULL);
    engram__redis_slot_free(r);
    return;
  }
  rc = engram__redis_add_item(req, req->key, req->ns, &f, 1, (req->flags & ENGRAM_OPT_INCLUDE_METADATA) != 0, 1.0);
  if (rc == ENGRAM_EBACKEND) engram__redis_finish(r, req, rc, "key '%s': the stored value is not valid JSON", req->key);
  else engram__redis_finish(r, req, rc, NULL);
}

void engram__redis_retrieve(engram__redis_t *r, engram_request_t *req) {
  int rc;
  engram__rbuf_reset(&r->cmd);
  engram__redis_build_read(r, &r->cmd, req->ns, req->ns_len, req->key, req->key_len, req->flags);
  if ((rc = engram__redis_send(r, on_retrieve, req)) != 0) engram__redis_finish_unavailable(r, req, NULL, rc);
}

/* delete answers with a count taken from an integer reply. */
static void on_count_reply(redisAsyncContext *ac, void *rep, void *pd) {
  engram_request_t *req = pd;
  engram__redis_t *r = engram__redis_of(ac);
  redisReply *reply = rep;
  if (reply == NULL) {
    engram__redis_finish_unavailable(r, req, ac, ENGRAM_EUNAVAILABLE);
    return;
  }
  if (reply->type != REDIS_REPLY_INTEGER) {
    if (reply->type == REDIS_REPLY_ERROR) engram__redis_finish_reply_error(r, req, reply);
    else engram__redis_finish(r, req, ENGRAM_EBACKEND, "key '%s': unexpected reply", req->key);
    return;
  }
  if (req->op == ENGRAM_OP_DELETE && reply->integer > 0) { /* the delete script bumped the generation */
    engram__redis_search_removed(r, req->ns, req->ns_len, req->key, req->key_len);
    engram__redis_search_bumped(r, req->ns, req->ns_len);
  }
  engram_reply_set_count(req, reply->integer > 0 ? (uint64_t)reply->integer : 0);
  engram__redis_finish(r, req, 0, NULL);
}

/* exists reads the item's expiry field (every stored item has one, "0" = never): absent, or in the past, is 0. */
static void on_exists(redisAsyncContext *ac, void *rep, void *pd) {
  engram_request_t *req = pd;
  engram__redis_t *r = engram__redis_of(ac);
  redisReply *reply = rep;
  int64_t exp;
  if (reply == NULL) {
    engram__redis_finish_unavailable(r, req, ac, ENGRAM_EUNAVAILABLE);
    return;
  }
  if (reply->type != REDIS_REPLY_STRING && reply->type != REDIS_REPLY_NIL) {
    if (reply->type == REDIS_REPLY_ERROR) engram__redis_finish_reply_error(r, req, reply);
    else engram__redis_finish(r, req, ENGRAM_EBACKEND, "key '%s': unexpected reply to HGET", req->key);
    return;
  }
  exp = engram__redis_int(reply, 0);
  engram_reply_set_count(req, reply->type == REDIS_REPLY_STRING && !(exp > 0 && exp <= engram_now_ms()) ? 1 : 0);
  engram__redis_finish(r, req, 0, NULL);
}

void engram__redis_exists(engram__redis_t *r, engram_request_t *req) {
  int rc;
  engram__rbuf_reset(&r->cmd);
  engram__rbuf_array(&r->cmd, 3);
  engram__rbuf_arg(&r->cmd, "HGET", 4);
  engram__redis_arg_item(r, &r->cmd, req->ns, req->ns_len, req->key, req->key_len);
  engram__rbuf_arg(&r->cmd, "expires", 7);
  if ((rc = engram__redis_send(r, on_exists, req)) != 0) engram__redis_finish_unavailable(r, req, NULL, rc);
}

void engram__redis_delete(engram__redis_t *r, engram_request_t *req) {
  int rc;
  engram__redis_build_delete(r, req->ns, req->ns_len, req->key, req->key_len);
  if ((rc = engram__redis_send(r, on_count_reply, req)) != 0) engram__redis_finish_unavailable(r, req, NULL, rc);
}
