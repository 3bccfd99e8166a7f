/*
 * redis_update.c — the redis source's native update (see redis_update.h): read (HMGET) → the user's function
 * (engram_request_run_update) → the one-item store script conditional on the version and stamp read (or on
 * absence) → read again on a conflict, up to update_retries attempts. The stamp (redis_script.c: the namespace's
 * generation at the item's last write) is what a key deleted and written again cannot share with the item read:
 * its version starts again at 1, so a condition on the version alone let the update write the function of the
 * deleted value, with the deleted item's metadata and expiry, over the new item. An update that waited behind
 * another of the same key starts from the value that one wrote (kept on the chain, with the version and stamp
 * the write answered) instead of reading it: its write is conditional on those, so a write from elsewhere in
 * between fails it and it reads as on any conflict (one round trip per queued update instead of two). An update that carries writes (req->writes, a
 * conversation append's messages and trim: ENGRAM_SOURCE_UPDATE_WRITES) sends the update_writes script instead,
 * which makes them in the same server-side step as the conditional write, or nothing of them on a conflict. Updates of one key through one source run one after
 * another (a chain per namespace and key), so they never conflict with each other however many are in flight;
 * only writers elsewhere can make an attempt fail. The commands and replies are redis_item.c's.
 */
#include <stdio.h>
#include <string.h>

#include "redis_call.h"
#include "redis_cmd.h"
#include "redis_item.h"
#include "redis_json.h"
#include "redis_rbuf.h"
#include "redis_search.h"
#include "redis_update.h"

#define LOCK_BUCKETS 64

/* ---- update: per-key chains, read → user function → conditional store → retry ---- */

typedef struct upd_s upd_t;
struct engram__redis_lock_s {
  engram__redis_lock_t *next;
  upd_t *head, *tail; /* head = the update running; the others wait */
  /* What the update that just succeeded wrote, for the next one waiting (NULL value = nothing): it starts from
   * this instead of reading the item again; its write is conditional on this version, so a change by another
   * writer meanwhile fails it and it reads as on any conflict. */
  cJSON *value;
  char *meta;
  size_t meta_len;
  uint64_t version;
  int64_t expires;
  char stamp[ENGRAM__REDIS_STAMP_MAX];
  size_t stamp_len;
  size_t ns_len, key_len;
  uint32_t hash;
  char data[];        /* ns \0 key \0 */
};

struct upd_s {
  upd_t *next_wait;
  engram__redis_t *r;
  engram_request_t *req;
  engram__redis_lock_t *lock;
  unsigned attempt;
  int found;
  uint64_t version;
  int64_t expires, now;
  /* The stamp read with version (stamp_len ENGRAM__REDIS_STAMP_MAX: too long to keep, the version alone is
   * compared); after the write, the stamp it answered. */
  char stamp[ENGRAM__REDIS_STAMP_MAX];
  size_t stamp_len;
  char *meta;
  size_t meta_len;
  cJSON *next;
};

static uint32_t key_hash(const char *ns, size_t ns_len, const char *key, size_t key_len) {
  uint32_t h = 2166136261u;
  size_t i;
  for (i = 0; i < ns_len; i++) h = (h ^ (unsigned char)ns[i]) * 16777619u;
  h = (h ^ 0xffu) * 16777619u;
  for (i = 0; i < key_len; i++) h = (h ^ (unsigned char)key[i]) * 16777619u;
  return h;
}

static engram__redis_lock_t *lock_get(engram__redis_t *r, engram_request_t *req) {
  uint32_t h = key_hash(req->ns, req->ns_len, req->key, req->key_len);
  engram__redis_lock_t **pp, *l;
  if (r->locks == NULL && (r->locks = engram_calloc(LOCK_BUCKETS, sizeof *r->locks)) == NULL) return NULL;
  for (pp = &r->locks[h % LOCK_BUCKETS]; (l = *pp) != NULL; pp = &l->next)
    if (l->hash == h && l->ns_len == req->ns_len && l->key_len == req->key_len && memcmp(l->data, req->ns, l->ns_len) == 0 &&
        memcmp(l->data + l->ns_len + 1, req->key, l->key_len) == 0)
      return l;
  if ((l = engram_calloc(1, sizeof *l + req->ns_len + req->key_len + 2)) == NULL) return NULL;
  l->hash = h;
  l->ns_len = req->ns_len;
  l->key_len = req->key_len;
  memcpy(l->data, req->ns, req->ns_len);
  memcpy(l->data + l->ns_len + 1, req->key, req->key_len);
  *pp = l;
  return l;
}

static void lock_drop(engram__redis_t *r, engram__redis_lock_t *l) {
  engram__redis_lock_t **pp;
  for (pp = &r->locks[l->hash % LOCK_BUCKETS]; *pp != l; pp = &(*pp)->next) {
  }
  *pp = l->next;
  cJSON_Delete(l->value);
  engram_free(l->meta);
  engram_free(l);
}

static void lock_forget(engram__redis_lock_t *l) {
  cJSON_Delete(l->value);
  l->value = NULL;
  engram_free(l->meta);
  l->meta = NULL;
}

static void on_upd_read(redisAsyncContext *ac, void *rep, void *pd);
static void on_upd_store(redisAsyncContext *ac, void *rep, void *pd);
static int upd_start_known(upd_t *u, engram__redis_lock_t *l, char *msg, size_t msg_size);

static int upd_send_read(upd_t *u) {
  engram__redis_t *r = u->r;
  engram_request_t *req = u->req;
  if (engram_request_answered(req)) return ENGRAM_ECANCELED;
  engram__rbuf_reset(&r->cmd);
  engram__redis_build_update_read(r, &r->cmd, req->ns, req->ns_len, req->key, req->key_len);
  return engram__redis_send(r, on_upd_read, u);
}

static int upd_send_store(upd_t *u) {
  engram__redis_t *r = u->r;
  engram_request_t *req = u->req;
  int rc = req->writes != NULL
               ? engram__redis_build_update_writes(r, req->ns, req->ns_len, req->key, req->key_len, u->found, u->version,
                                                   u->stamp, u->stamp_len, u->now, u->expires, u->next, u->meta,
                                                   u->meta_len, req->writes)
               : engram__redis_build_store(r, req->ns, req->ns_len, req->key, req->key_len, !u->found,
                                           u->found ? u->version : 0, u->stamp, u->stamp_len, u->now, u->expires,
                                           u->next, NULL, u->meta, u->meta_len);
  return rc != 0 ? rc : engram__redis_send(r, on_upd_store, u);
}

static void upd_free_attempt(upd_t *u) {
  engram_free(u->meta);
  u->meta = NULL;
  cJSON_Delete(u->next);
  u->next = NULL;
}

/* Finishes u's request with status (msg: a message, or NULL), then runs the next update waiting on the key.
 * Finishing a request may run its caller's callback at once, and that callback may submit another update of
 * the same key, which the actor can start before finish returns: so a key's chain is unlinked and freed before
 * its last request is finished (the new update then makes a chain of its own), never after — freeing it after
 * left the new update holding a freed chain (a crash seen with 4 processes appending to one thread). */
static void upd_done(upd_t *u, int status, const char *msg, const redisAsyncContext *ac) {
  engram__redis_t *r = u->r;
  engram__redis_lock_t *l = u->lock;
  char buf[320];
  if (status != 0) lock_forget(l);
  for (;;) {
    engram_request_t *req = u->req;
    upd_t *next = u->next_wait;
    int rc;
    l->head = next;
    if (next == NULL) {
      l->tail = NULL;
      lock_drop(r, l);
      l = NULL;
    }
    upd_free_attempt(u);
    engram_free(u);
    req->backend_data = NULL;
    if (status == ENGRAM_EUNAVAILABLE) engram__redis_finish_unavailable(r, req, ac, status);
    else if (msg != NULL) engram__redis_finish(r, req, status, "%s", msg);
    else engram__redis_finish(r, req, status, NULL);
    if (next == NULL) return;
    u = next;
    buf[0] = '\0';
    if (l->value != NULL && l->expires > 0 && l->expires <= engram_now_ms()) lock_forget(l);
    if ((rc = l->value != NULL ? upd_start_known(u, l, buf, sizeof buf) : upd_send_read(u)) == 0) return;
    lock_forget(l);
    status = rc;
    msg = buf[0] ? buf : NULL;
    ac = NULL;
  }
}

/* The item as read (found, its version, stamp and expiry, current: its value, taken; u->meta its metadata
 * text) → the user's function → the conditional write sent. stamp_len ENGRAM__REDIS_STAMP_MAX or more: a stamp
 * too long to keep (the version alone is compared). Returns 0, or the error to finish u with (msg: a message, or
 * empty). */
static int upd_run(upd_t *u, int found, uint64_t version, const char *stamp, size_t stamp_len, int64_t expires,
                   cJSON *current, char *msg, size_t msg_size) {
  engram_request_t *req = u->req;
  int rc;
  msg[0] = '\0';
  u->found = found;
  u->version = found ? version : 0;
  u->stamp_len = found ? stamp_len : 0;
  if (u->stamp_len >= ENGRAM__REDIS_STAMP_MAX) u->stamp_len = ENGRAM__REDIS_STAMP_MAX;
  else if (u->stamp_len > 0) memmove(u->stamp, stamp, u->stamp_len);
  u->expires = found ? expires : 0;
  /* A new expiry; else the item keeps its own, and a created item takes expires_at_ms (0, or the default_ttl_ms
   * the core stamped). */
  if ((req->flags & ENGRAM_OPT_TTL) || !found) u->expires = req->expires_at_ms;
  u->now = engram_now_ms();
  rc = engram_request_run_update(req, current, &u->next);
  cJSON_Delete(current);
  if (rc != 0) return rc; /* the message is already on the request */
  if ((rc = upd_send_store(u)) == ENGRAM_ETOOBIG)
    snprintf(msg, msg_size, "key '%s': value larger than max_value_bytes (%zu)", req->key, u->r->max_value_bytes);
  return rc;
}

/* Starts u from what the update before it on the key wrote (l->value, taken); 0 or an error as upd_run's. */
static int upd_start_known(upd_t *u, engram__redis_lock_t *l, char *msg, size_t msg_size) {
  cJSON *current = l->value;
  msg[0] = '\0';
  l->value = NULL;
  u->meta = l->meta;
  u->meta_len = l->meta_len;
  l->meta = NULL;
  if (engram_request_answered(u->req)) {
    cJSON_Delete(current);
    return ENGRAM_ECANCELED;
  }
  return upd_run(u, 1, l->version, l->stamp, l->stamp_len, l->expires, current, msg, msg_size);
}

static void on_upd_read(redisAsyncContext *ac, void *rep, void *pd) {
  upd_t *u = pd;
  engram_request_t *req = u->req;
  redisReply *reply = rep;
  engram__redis_fields_t f;
  cJSON *current = NULL;
  char msg[320];
  int rc;
  if (reply == NULL) {
    upd_done(u, ENGRAM_EUNAVAILABLE, NULL, ac);
    return;
  }
  if (reply->type == REDIS_REPLY_ERROR || engram__redis_parse_fields(reply, engram_now_ms(), &f) != 0) {
    snprintf(msg, sizeof msg, "update of key '%s': redis: %.*s", req->key,
             reply->type == REDIS_REPLY_ERROR ? (int)(reply->len > 200 ? 200 : reply->len) : 16,
             reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply");
    upd_done(u, ENGRAM_EBACKEND, msg, NULL);
    return;
  }
  if (engram_request_answered(req)) {
    upd_done(u, ENGRAM_ECANCELED, NULL, NULL);
    return;
  }
  if (f.found) {
    if ((rc = engram__redis_parse_json(f.value, f.value_len, &current)) != 0) {
      snprintf(msg, sizeof msg, "update of key '%s': the stored value is not valid JSON", req->key);
      upd_done(u, rc, rc == ENGRAM_EBACKEND ? msg : NULL, NULL);
      return;
    }
    if (f.meta != NULL && (u->meta = engram_strndup(f.meta, f.meta_len)) == NULL) {
      cJSON_Delete(current);
      upd_done(u, ENGRAM_ENOMEM, NULL, NULL);
      return;
    }
    u->meta_len = f.meta_len;
  }
  if ((rc = upd_run(u, f.found, f.found ? f.version : 0, f.stamp, f.stamp_len, f.found ? f.expires : 0, current, msg,
                    sizeof msg)) != 0)
    upd_done(u, rc, msg[0] ? msg : NULL, NULL);
}

/* The update_writes script's reply (redis_script.c): {-1} / {-2} as the store script's (nothing written), {-3, i}
 * (a key to store holds another type: nothing written), an error reply alone (nothing written), or the head's
 * version and created, 2 per store, then the count deleted and the stamp written (into u->stamp) — in which case the writes' results are filled in
 * and the cached text index follows the head, each store and each delete. A reply cut short by a failed store
 * (the head written, the generation bumped) is EBACKEND with that store's error; the index then sees a gap. */
static int parse_writes(upd_t *u, const redisReply *reply, uint64_t *version, int64_t *created, char *msg,
                        size_t msg_size) {
  engram__redis_t *r = u->r;
  engram_request_t *req = u->req;
  engram_update_writes_t *w = req->writes;
  size_t n = 1 + w->n_store, i;
  int64_t v;
  msg[0] = '\0';
  if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 1) return ENGRAM_EBACKEND;
  for (i = 0; i < reply->elements; i++)
    if (reply->element[i]->type == REDIS_REPLY_ERROR) {
      const redisReply *e = reply->element[i];
      snprintf(msg, msg_size, "update of key '%s': redis: %.*s", req->key, (int)(e->len > 200 ? 200 : e->len), e->str);
      return ENGRAM_EBACKEND;
    }
  v = engram__redis_int(reply->element[0], 0);
  if (v == -1) return ENGRAM_EEXIST;
  if (v == -2) return ENGRAM_ECONFLICT;
  if (v == -3 && reply->elements == 2) {
    i = (size_t)engram__redis_int(reply->element[1], 1);
    snprintf(msg, msg_size, "update of key '%s': the Redis key of '%s' holds another type", req->key,
             i <= 1 || i > n ? req->key : w->store[i - 2].key);
    return ENGRAM_EBACKEND;
  }
  if (v <= 0 || reply->elements != 2 * n + 2 ||
      engram__redis_take_stamp(reply->element[2 * n + 1], u->stamp, &u->stamp_len) != 0)
    return ENGRAM_EBACKEND;
  *version = (uint64_t)v;
  *created = engram__redis_int(reply->element[1], 0);
  for (i = 0; i < w->n_store; i++) {
    const engram_entry_t *en = &w->store[i];
    w->store_version[i] = (uint64_t)engram__redis_int(reply->element[2 + 2 * i], 0);
    engram__redis_search_wrote(r, req->ns, req->ns_len, en->key, strlen(en->key), en->value, w->store_version[i],
                               w->store_expires_at_ms[i]);
  }
  for (i = 0; i < w->n_delete; i++)
    engram__redis_search_removed(r, req->ns, req->ns_len, w->delete_keys[i], strlen(w->delete_keys[i]));
  w->deleted = (uint64_t)engram__redis_int(reply->element[2 * n], 0);
  return 0;
}

static void on_upd_store(redisAsyncContext *ac, void *rep, void *pd) {
  upd_t *u = pd;
  engram_request_t *req = u->req;
  redisReply *reply = rep;
  engram_item_t it;
  uint64_t version = 0;
  int64_t created = 0;
  char msg[320];
  int rc;
  if (reply == NULL) {
    upd_done(u, ENGRAM_EUNAVAILABLE, NULL, ac);
    return;
  }
  if (reply->type == REDIS_REPLY_ERROR) {
    snprintf(msg, sizeof msg, "update of key '%s': redis: %.*s", req->key, (int)(reply->len > 200 ? 200 : reply->len), reply->str);
    upd_done(u, ENGRAM_EBACKEND, msg, NULL);
    return;
  }
  msg[0] = '\0';
  rc = req->writes != NULL ? parse_writes(u, reply, &version, &created, msg, sizeof msg)
                           : engram__redis_parse_store(reply, &version, &created, u->stamp, &u->stamp_len);
  if (rc == ENGRAM_EEXIST || rc == ENGRAM_ECONFLICT) {
    /* Another client wrote the key between the read and the store: read again. */
    upd_free_attempt(u);
    if (++u->attempt < u->r->update_retries && (rc = upd_send_read(u)) == 0) return;
    if (rc == ENGRAM_EEXIST || rc == ENGRAM_ECONFLICT) {
      snprintf(msg, sizeof msg, "update of key '%s': version conflict after %u attempts", req->key, u->attempt);
      upd_done(u, ENGRAM_ECONFLICT, msg, NULL);
    } else {
      upd_done(u, rc, NULL, NULL);
    }
    return;
  }
  if (rc != 0) {
    if (msg[0] == '\0') snprintf(msg, sizeof msg, "update of key '%s': unexpected reply to the store script", req->key);
    upd_done(u, rc, msg, NULL);
    return;
  }
  /* Written (the store script bumped the generation): the cached text index follows. */
  engram__redis_search_wrote(u->r, req->ns, req->ns_len, req->key, req->key_len, u->next, version, u->expires);
  engram__redis_search_bumped(u->r, req->ns, req->ns_len);
  /* The next update waiting on the key starts from this (see the lock). */
  lock_forget(u->lock);
  if (u->lock->head != NULL && u->lock->head->next_wait != NULL && (u->lock->value = cJSON_Duplicate(u->next, 1)) != NULL) {
    if (u->meta != NULL && (u->lock->meta = engram_strndup(u->meta, u->meta_len)) == NULL) {
      lock_forget(u->lock);
    } else {
      u->lock->meta_len = u->meta_len;
      u->lock->version = version;
      memcpy(u->lock->stamp, u->stamp, u->stamp_len);
      u->lock->stamp_len = u->stamp_len;
      u->lock->expires = u->expires;
    }
  }
  memset(&it, 0, sizeof it);
  it.key = req->key;
  it.ns = req->ns;
  it.value = u->next;
  u->next = NULL;
  if (u->meta != NULL && (rc = engram__redis_parse_json(u->meta, u->meta_len, (cJSON **)&it.metadata)) != 0) {
    cJSON_Delete((cJSON *)it.value);
    upd_done(u, rc, rc == ENGRAM_EBACKEND ? "the stored metadata is not valid JSON" : NULL, NULL);
    return;
  }
  it.created_at_ms = created;
  it.updated_at_ms = u->now;
  it.expires_at_ms = u->expires;
  it.version = version;
  it.score = 1.0;
  upd_done(u, engram_reply_add(req, &it, ENGRAM_REPLY_OWN_VALUE | ENGRAM_REPLY_OWN_METADATA), NULL, NULL);
}

void engram__redis_update(engram__redis_t *r, engram_request_t *req) {
  upd_t *u = engram_calloc(1, sizeof *u);
  engram__redis_lock_t *l = u ? lock_get(r, req) : NULL;
  int rc;
  if (l == NULL) {
    engram_free(u);
    engram__redis_finish(r, req, ENGRAM_ENOMEM, NULL);
    return;
  }
  u->r = r;
  u->req = req;
  u->lock = l;
  req->backend_data = u;
  if (l->tail != NULL) {
    l->tail->next_wait = u; /* runs when the updates before it on this key are done */
    l->tail = u;
    return;
  }
  l->head = l->tail = u;
  if ((rc = upd_send_read(u)) != 0) upd_done(u, rc, NULL, NULL);
}
