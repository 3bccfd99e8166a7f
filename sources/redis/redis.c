/*
 * redis.c — the Redis source (hiredis 0.14 async on the home loop): open and close, request admission (the
 * source's own max_inflight window, and a queue for calls made while the connection is down when
 * wait_for_connection is set), and the single-key operations — store, retrieve, exists, delete — and info.
 * Batches live in redis_batch.c, update in redis_update.c, the walks over a namespace index in redis_scan.c,
 * options in redis_opts.c, command formatting, key layout and Lua scripts in redis_cmd.c, the connection in
 * redis_conn.c and its libuv adapter in redis_uv.c.
 *
 * Every engram request sent to Redis is the privdata of its commands' callbacks; hiredis calls each callback
 * exactly once (a NULL reply when the connection dies or the context is freed), and a request is completed
 * when its last command is back, so each call gets exactly one answer whatever happens to the connection.
 * Stores are coalesced per loop turn into one EVALSHA of the batch store script (redis_store.c: conditional
 * on existence or version, TTL via PEXPIREAT, index and namespace set maintained, per-item answers) and
 * retrieves are one HGET of the value (HMGET of every field with ENGRAM_OPT_INCLUDE_METADATA); commands are
 * formatted into one reused buffer, and any other command sends the stores formed before it first.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redis_src.h"

/* ---- Admission and completion ---- */

static void start(engram__redis_t *r, engram_request_t *req);
static void wait_timer_arm(engram__redis_t *r);

engram__redis_t *engram__redis_of(const redisAsyncContext *ac) { return engram__redis_conn_ud_of(ac); }

static void q_push(engram__redis_t *r, engram_request_t *req) {
  req->backend_data = NULL;
  if (r->q_tail) r->q_tail->backend_data = req;
  else r->q_head = req;
  r->q_tail = req;
  r->q_n++;
}

static engram_request_t *q_pop(engram__redis_t *r) {
  engram_request_t *req = r->q_head;
  if (req == NULL) return NULL;
  r->q_head = req->backend_data;
  if (r->q_head == NULL) r->q_tail = NULL;
  req->backend_data = NULL;
  r->q_n--;
  return req;
}

void engram__redis_why(engram__redis_t *r, const redisAsyncContext *ac, char *buf, size_t len) {
  const char *why;
  if (ac != NULL && ac->err && ac->errstr && ac->errstr[0]) why = ac->errstr;
  else if (r->conn.err_set) why = r->conn.err;
  else if (r->last_error[0]) why = r->last_error;
  else why = ac != NULL ? "connection closed" : "not connected";
  if (r->closing) why = "source closed";
  snprintf(buf, len, "redis at %s unavailable: %s", r->address, why);
}

static void fail_unavailable_now(engram__redis_t *r, engram_request_t *req) {
  char msg[320];
  engram__redis_why(r, NULL, msg, sizeof msg);
  r->unavailable++;
  engram_request_fail(req, ENGRAM_EUNAVAILABLE, "%s", msg);
}

/* Starts queued requests while the window and the connection allow. */
static void pump(engram__redis_t *r) {
  engram_request_t *req;
  if (r->pumping) return;
  r->pumping = 1;
  while (r->q_head != NULL) {
    req = r->q_head;
    if (r->closing || engram_request_answered(req)) {
      q_pop(r);
      engram_request_complete(req, ENGRAM_ECANCELED); /* already answered: this only releases it */
      continue;
    }
    if (!engram__redis_conn_ready(&r->conn)) {
      if (r->wait_for_connection) break;
      q_pop(r);
      fail_unavailable_now(r, req);
      continue;
    }
    if (r->outstanding >= r->max_inflight) break;
    q_pop(r);
    r->outstanding++;
    start(r, req);
  }
  r->pumping = 0;
  if (r->q_head != NULL && !engram__redis_conn_ready(&r->conn)) wait_timer_arm(r);
}

static void admit(engram_source_t *src, engram_request_t *req) {
  engram__redis_t *r = engram_source_state(src);
  if (r->closing) {
    engram_request_complete(req, ENGRAM_ECANCELED);
    return;
  }
  if (r->q_head == NULL && r->outstanding < r->max_inflight && engram__redis_conn_ready(&r->conn)) {
    r->outstanding++;
    start(r, req);
    return;
  }
  if (!engram__redis_conn_ready(&r->conn) && !r->wait_for_connection) {
    fail_unavailable_now(r, req);
    return;
  }
  q_push(r, req);
  if (!engram__redis_conn_ready(&r->conn)) wait_timer_arm(r);
}

void engram__redis_finish(engram__redis_t *r, engram_request_t *req, int status, const char *fmt, ...) {
  if (fmt != NULL && status != 0) {
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    engram_request_fail(req, status, "%s", msg);
  } else {
    engram_request_complete(req, status);
  }
  r->outstanding--;
  if (r->q_head != NULL) pump(r);
}

void engram__redis_finish_unavailable(engram__redis_t *r, engram_request_t *req, const redisAsyncContext *ac, int rc) {
  char msg[320];
  if (rc != ENGRAM_EUNAVAILABLE && rc != 0) {
    engram__redis_finish(r, req, rc, NULL);
    return;
  }
  engram__redis_why(r, ac, msg, sizeof msg);
  r->unavailable++;
  engram__redis_finish(r, req, ENGRAM_EUNAVAILABLE, "%s", msg);
}

void engram__redis_finish_reply_error(engram__redis_t *r, engram_request_t *req, const redisReply *reply) {
  engram__redis_finish(r, req, ENGRAM_EBACKEND, "redis: %.*s", (int)(reply->len > 300 ? 300 : reply->len), reply->str);
}

int engram__redis_send(engram__redis_t *r, redisCallbackFn *fn, void *pd) {
  if (r->closing) return ENGRAM_EUNAVAILABLE;
  if (r->cmd.failed) return ENGRAM_ENOMEM;
  /* Stores started before this command go first (the flush finishes nothing, so r->cmd stays intact). */
  if (r->sb != NULL) engram__redis_store_flush(r);
  return engram__redis_conn_send(&r->conn, fn, pd, r->cmd.p, r->cmd.len);
}

/* Queued calls answered by their deadline while the connection is down are released when it passes. */
static void on_wait_timer(uv_timer_t *t) {
  engram__redis_t *r = t->data;
  engram_request_t *req = r->q_head, *prev = NULL, *next;
  while (req != NULL) {
    next = req->backend_data;
    if (engram_request_answered(req)) {
      if (prev) prev->backend_data = next;
      else r->q_head = next;
      if (r->q_tail == req) r->q_tail = prev;
      r->q_n--;
      req->backend_data = NULL;
      engram_request_complete(req, ENGRAM_ETIMEDOUT);
    } else {
      prev = req;
    }
    req = next;
  }
  if (r->q_head != NULL && !engram__redis_conn_ready(&r->conn)) wait_timer_arm(r);
}

static void wait_timer_arm(engram__redis_t *r) {
  uint64_t now = uv_hrtime() / 1000000u, first = 0, d;
  engram_request_t *req;
  if (!r->wait_timer_open || r->closing) return;
  for (req = r->q_head; req != NULL; req = req->backend_data) {
    d = engram_request_deadline(req);
    if (d != 0 && (first == 0 || d < first)) first = d;
  }
  if (first == 0) return;
  uv_timer_start(&r->wait_timer, on_wait_timer, first > now ? first - now + 1 : 1, 0);
}

/* ---- Items ---- */

static const char *const item_fields[6] = {"value", "metadata", "created", "updated", "version", "expires"};

void engram__redis_build_hmget(const engram__redis_t *r, engram__rbuf_t *b, const char *ns, size_t ns_len,
                               const char *key, size_t key_len) {
  int i;
  engram__rbuf_array(b, 8);
  engram__rbuf_arg(b, "HMGET", 5);
  engram__redis_arg_item(r, b, ns, ns_len, key, key_len);
  for (i = 0; i < 6; i++) engram__rbuf_arg_str(b, item_fields[i]);
}

int engram__redis_parse_fields(const redisReply *reply, int64_t now, engram__redis_fields_t *f) {
  redisReply **e;
  memset(f, 0, sizeof *f);
  if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 6) return ENGRAM_EBACKEND;
  e = reply->element;
  if (e[0]->type != REDIS_REPLY_STRING) return 0; /* no such item */
  f->value = e[0]->str;
  f->value_len = e[0]->len;
  if (e[1]->type == REDIS_REPLY_STRING && e[1]->len > 0) {
    f->meta = e[1]->str;
    f->meta_len = e[1]->len;
  }
  f->created = engram__redis_int(e[2], 0);
  f->updated = engram__redis_int(e[3], f->created);
  f->version = (uint64_t)engram__redis_int(e[4], 0);
  f->expires = engram__redis_int(e[5], 0);
  /* Redis expires the hash itself (PEXPIREAT); this also covers a read racing the expiry. */
  f->found = !(f->expires > 0 && f->expires <= now);
  return 0;
}

int engram__redis_held_take(engram__redis_held_t *h, const engram__redis_fields_t *f) {
  h->state = f->found ? 1 : 2;
  if (!f->found) return 0;
  h->created = f->created;
  h->updated = f->updated;
  h->expires = f->expires;
  h->version = f->version;
  h->value_len = f->value_len;
  h->meta_len = f->meta_len;
  if ((h->value = engram_strndup(f->value, f->value_len)) == NULL ||
      (f->meta != NULL && (h->meta = engram_strndup(f->meta, f->meta_len)) == NULL))
    return ENGRAM_ENOMEM;
  return 0;
}

engram__redis_fields_t engram__redis_held_fields(const engram__redis_held_t *h) {
  engram__redis_fields_t fl;
  memset(&fl, 0, sizeof fl);
  fl.found = 1;
  fl.value = h->value;
  fl.value_len = h->value_len;
  fl.meta = h->meta;
  fl.meta_len = h->meta_len;
  fl.created = h->created;
  fl.updated = h->updated;
  fl.expires = h->expires;
  fl.version = h->version;
  return fl;
}

void engram__redis_held_release(engram__redis_held_t *h) {
  engram_free(h->value);
  engram_free(h->meta);
  memset(h, 0, sizeof *h);
}

int engram__redis_add_item(engram_request_t *req, const char *key, const char *ns, const engram__redis_fields_t *f,
                           int with_value, int with_meta, double score) {
  engram_item_t it;
  cJSON *value = NULL, *meta = NULL;
  int rc;
  memset(&it, 0, sizeof it);
  it.key = key;
  it.ns = ns;
  it.created_at_ms = f->created;
  it.updated_at_ms = f->updated;
  it.expires_at_ms = f->expires;
  it.version = f->version;
  it.score = score;
  if (with_value && (rc = engram__redis_parse_json(f->value, f->value_len, &value)) != 0) return rc;
  if (with_meta && f->meta != NULL) {
    if ((rc = engram__redis_parse_json(f->meta, f->meta_len, &meta)) == 0 && !cJSON_IsObject(meta)) rc = ENGRAM_EBACKEND;
    if (rc != 0) {
      cJSON_Delete(meta);
      cJSON_Delete(value);
      return rc;
    }
  }
  it.value = value;
  it.metadata = meta;
  return engram_reply_add(req, &it, ENGRAM_REPLY_OWN_VALUE | ENGRAM_REPLY_OWN_METADATA);
}

/* The store script for one item (see redis_src.h). meta (a cJSON object) or meta_text (JSON text) may be
 * given. Returns 0, ENGRAM_ETOOBIG or ENGRAM_ENOMEM. */
int engram__redis_build_store(engram__redis_t *r, int use_eval, const char *ns, size_t ns_len, const char *key,
                       size_t key_len, int create_only, uint64_t if_version, int64_t now, int64_t expires,
                       const cJSON *value, const cJSON *meta, const char *meta_text, size_t meta_len) {
  engram__rbuf_t *b = &r->cmd;
  char *text;
  size_t len;
  int owned;
  engram__rbuf_reset(b);
  engram__redis_begin_script(r, b, RS_STORE, use_eval, 4, 8);
  engram__redis_arg_item(r, b, ns, ns_len, key, key_len);
  engram__redis_arg_index(r, b, ns, ns_len);
  engram__redis_arg_nsset(r, b);
  engram__redis_arg_gen(r, b, ns, ns_len);
  engram__rbuf_arg(b, create_only ? "1" : "0", 1);
  if (if_version) {
    char tmp[24];
    int n = snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)if_version);
    engram__rbuf_arg(b, tmp, (size_t)n);
  } else {
    engram__rbuf_arg(b, "0", 1);
  }
  engram__rbuf_arg_i64(b, now);
  engram__rbuf_arg_i64(b, expires > 0 ? expires : 0);
  if ((text = engram__redis_json(r, value, &len, &owned)) == NULL) return ENGRAM_ENOMEM;
  if (r->max_value_bytes && len > r->max_value_bytes) {
    if (owned) cJSON_free(text);
    return ENGRAM_ETOOBIG;
  }
  engram__rbuf_arg(b, text, len);
  if (owned) cJSON_free(text);
  if (meta != NULL) {
    if ((text = engram__redis_json(r, meta, &len, &owned)) == NULL) return ENGRAM_ENOMEM;
    engram__rbuf_arg(b, text, len);
    if (owned) cJSON_free(text);
  } else {
    engram__rbuf_arg(b, meta_text ? meta_text : "", meta_text ? meta_len : 0);
  }
  engram__rbuf_arg(b, key, key_len);
  engram__rbuf_arg(b, ns, ns_len);
  return b->failed ? ENGRAM_ENOMEM : 0;
}

/* Reads the store script's reply: 0 with *version and *created, ENGRAM_EEXIST, ENGRAM_ECONFLICT, or
 * ENGRAM_EBACKEND for an unexpected shape. */
int engram__redis_parse_store(const redisReply *reply, uint64_t *version, int64_t *created) {
  int64_t v;
  if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 1) return ENGRAM_EBACKEND;
  v = engram__redis_int(reply->element[0], 0);
  if (v == -1) return ENGRAM_EEXIST;
  if (v == -2) return ENGRAM_ECONFLICT;
  if (v <= 0 || reply->elements < 2) return ENGRAM_EBACKEND;
  *version = (uint64_t)v;
  *created = engram__redis_int(reply->element[1], 0);
  return 0;
}

/* ---- store ---- */

static void store_failed(engram__redis_t *r, engram_request_t *req, int rc) {
  if (rc == ENGRAM_ETOOBIG)
    engram__redis_finish(r, req, rc, "key '%s': value larger than max_value_bytes (%zu)", req->key, r->max_value_bytes);
  else engram__redis_finish_unavailable(r, req, NULL, rc);
}

/* The store joins the batch being formed (redis_store.c), which finishes it. */
static void store_start(engram__redis_t *r, engram_request_t *req) {
  int rc = engram__redis_store_add(r, req, 0);
  if (rc != 0) store_failed(r, req, rc);
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
  if (!(req->flags & ENGRAM_OPT_INCLUDE_METADATA)) {
    /* HGET of the value alone (Redis expires the hash itself). */
    memset(&f, 0, sizeof f);
    f.found = reply->type == REDIS_REPLY_STRING;
    f.value = reply->str;
    f.value_len = reply->len;
    if (!f.found && reply->type != REDIS_REPLY_NIL) {
      engram__redis_finish(r, req, ENGRAM_EBACKEND, "key '%s': unexpected reply to HGET", req->key);
      return;
    }
  } else if (engram__redis_parse_fields(reply, engram_now_ms(), &f) != 0) {
    engram__redis_finish(r, req, ENGRAM_EBACKEND, "key '%s': unexpected reply to HMGET", req->key);
    return;
  }
  if (!f.found) {
    engram__redis_finish(r, req, ENGRAM_ENOTFOUND, "no memory found for key: %s", req->key);
    return;
  }
  rc = engram__redis_add_item(req, req->key, req->ns, &f, 1, (req->flags & ENGRAM_OPT_INCLUDE_METADATA) != 0, 1.0);
  if (rc == ENGRAM_EBACKEND) engram__redis_finish(r, req, rc, "key '%s': the stored value is not valid JSON", req->key);
  else engram__redis_finish(r, req, rc, NULL);
}

static void retrieve_start(engram__redis_t *r, engram_request_t *req) {
  int rc;
  engram__rbuf_reset(&r->cmd);
  if (req->flags & ENGRAM_OPT_INCLUDE_METADATA) {
    engram__redis_build_hmget(r, &r->cmd, req->ns, req->ns_len, req->key, req->key_len);
  } else {
    /* Without ENGRAM_OPT_INCLUDE_METADATA the reply carries the value only: one field. */
    engram__rbuf_array(&r->cmd, 3);
    engram__rbuf_arg(&r->cmd, "HGET", 4);
    engram__redis_arg_item(r, &r->cmd, req->ns, req->ns_len, req->key, req->key_len);
    engram__rbuf_arg(&r->cmd, "value", 5);
  }
  if ((rc = engram__redis_send(r, on_retrieve, req)) != 0) engram__redis_finish_unavailable(r, req, NULL, rc);
}

/* exists and delete both answer with a count taken from an integer reply. */
static void on_count_reply(redisAsyncContext *ac, void *rep, void *pd) {
  engram_request_t *req = pd;
  engram__redis_t *r = engram__redis_of(ac);
  redisReply *reply = rep;
  int rc;
  if (reply == NULL) {
    engram__redis_finish_unavailable(r, req, ac, ENGRAM_EUNAVAILABLE);
    return;
  }
  if (req->op == ENGRAM_OP_DELETE && engram__redis_is_noscript(reply)) {
    engram__rbuf_reset(&r->cmd);
    engram__redis_begin_script(r, &r->cmd, RS_DELETE, 1, 3, 1);
    engram__redis_arg_item(r, &r->cmd, req->ns, req->ns_len, req->key, req->key_len);
    engram__redis_arg_index(r, &r->cmd, req->ns, req->ns_len);
    engram__redis_arg_gen(r, &r->cmd, req->ns, req->ns_len);
    engram__rbuf_arg(&r->cmd, req->key, req->key_len);
    if ((rc = engram__redis_send(r, on_count_reply, req)) != 0) engram__redis_finish_unavailable(r, req, NULL, rc);
    return;
  }
  if (reply->type != REDIS_REPLY_INTEGER) {
    if (reply->type == REDIS_REPLY_ERROR) engram__redis_finish_reply_error(r, req, reply);
    else engram__redis_finish(r, req, ENGRAM_EBACKEND, "key '%s': unexpected reply", req->key);
    return;
  }
  engram_reply_set_count(req, reply->integer > 0 ? (uint64_t)reply->integer : 0);
  engram__redis_finish(r, req, 0, NULL);
}

static void exists_start(engram__redis_t *r, engram_request_t *req) {
  int rc;
  engram__rbuf_reset(&r->cmd);
  engram__rbuf_array(&r->cmd, 2);
  engram__rbuf_arg(&r->cmd, "EXISTS", 6);
  engram__redis_arg_item(r, &r->cmd, req->ns, req->ns_len, req->key, req->key_len);
  if ((rc = engram__redis_send(r, on_count_reply, req)) != 0) engram__redis_finish_unavailable(r, req, NULL, rc);
}

void engram__redis_build_delete(engram__redis_t *r, int use_eval, const char *ns, size_t ns_len, const char *key,
                         size_t key_len) {
  engram__rbuf_reset(&r->cmd);
  engram__redis_begin_script(r, &r->cmd, RS_DELETE, use_eval, 3, 1);
  engram__redis_arg_item(r, &r->cmd, ns, ns_len, key, key_len);
  engram__redis_arg_index(r, &r->cmd, ns, ns_len);
  engram__redis_arg_gen(r, &r->cmd, ns, ns_len);
  engram__rbuf_arg(&r->cmd, key, key_len);
}

static void delete_start(engram__redis_t *r, engram_request_t *req) {
  int rc;
  engram__redis_build_delete(r, 0, req->ns, req->ns_len, req->key, req->key_len);
  if ((rc = engram__redis_send(r, on_count_reply, req)) != 0) engram__redis_finish_unavailable(r, req, NULL, rc);
}

/* ---- info ---- */

static cJSON *info_object(engram__redis_t *r, int with_items, uint64_t items) {
  cJSON *o = cJSON_CreateObject();
  int ok = o != NULL;
  if (ok && with_items) ok = cJSON_AddNumberToObject(o, "items", (double)items) != NULL;
  ok = ok && cJSON_AddBoolToObject(o, "connected", engram__redis_conn_ready(&r->conn));
  ok = ok && cJSON_AddStringToObject(o, "connection", engram__redis_conn_state_name(&r->conn));
  ok = ok && cJSON_AddStringToObject(o, "address", r->address);
  ok = ok && cJSON_AddNumberToObject(o, "db", r->conn.db);
  ok = ok && cJSON_AddStringToObject(o, "prefix", r->prefix);
  ok = ok && cJSON_AddStringToObject(o, "server_version", r->conn.server_version);
  ok = ok && cJSON_AddNumberToObject(o, "connects", (double)r->conn.connects);
  ok = ok && cJSON_AddNumberToObject(o, "connect_attempts", (double)r->conn.attempts);
  ok = ok && cJSON_AddNumberToObject(o, "connections_lost", (double)r->lost);
  ok = ok && cJSON_AddNumberToObject(o, "unavailable", (double)r->unavailable);
  ok = ok && cJSON_AddNumberToObject(o, "queued", (double)r->q_n);
  ok = ok && cJSON_AddNumberToObject(o, "redis_inflight", (double)r->outstanding);
  ok = ok && cJSON_AddNumberToObject(o, "store_calls", (double)r->store_calls);
  ok = ok && cJSON_AddNumberToObject(o, "stores_batched", (double)r->stores_batched);
  ok = ok && cJSON_AddNumberToObject(o, "search_walks", (double)r->search_walks);
  ok = ok && cJSON_AddNumberToObject(o, "search_cache_hits", (double)r->search_hits);
  ok = ok && cJSON_AddNumberToObject(o, "search_cache_builds", (double)r->search_builds);
  ok = ok && cJSON_AddNumberToObject(o, "search_cache_stale", (double)r->search_stale);
  ok = ok && cJSON_AddNumberToObject(o, "search_cache_items", (double)r->tc_items);
  ok = ok && cJSON_AddBoolToObject(o, "wait_for_connection", r->wait_for_connection);
  ok = ok && cJSON_AddStringToObject(o, "last_error", r->last_error);
  if (!ok) {
    cJSON_Delete(o);
    return NULL;
  }
  return o;
}

static void on_info(redisAsyncContext *ac, void *rep, void *pd) {
  engram_request_t *req = pd;
  engram__redis_t *r = engram__redis_of(ac);
  redisReply *reply = rep;
  cJSON *o;
  if (reply == NULL) {
    engram__redis_finish_unavailable(r, req, ac, ENGRAM_EUNAVAILABLE);
    return;
  }
  if (reply->type == REDIS_REPLY_ERROR) {
    engram__redis_finish_reply_error(r, req, reply);
    return;
  }
  if ((o = info_object(r, 1, (uint64_t)engram__redis_int(reply, 0))) == NULL) {
    engram__redis_finish(r, req, ENGRAM_ENOMEM, NULL);
    return;
  }
  engram_reply_set_info(req, o);
  engram__redis_finish(r, req, 0, NULL);
}

static void redis_info(engram_source_t *src, engram_request_t *req) {
  engram__redis_t *r = engram_source_state(src);
  cJSON *o;
  int rc;
  if (!r->closing && engram__redis_conn_ready(&r->conn)) {
    /* items: the members of the namespace's index (expired members still there are counted). */
    engram__rbuf_reset(&r->cmd);
    engram__rbuf_array(&r->cmd, 2);
    engram__rbuf_arg(&r->cmd, "ZCARD", 5);
    engram__redis_arg_index(r, &r->cmd, req->ns, req->ns_len);
    r->outstanding++;
    if ((rc = engram__redis_send(r, on_info, req)) != 0) engram__redis_finish_unavailable(r, req, NULL, rc);
    return;
  }
  /* Disconnected: what is known without the server. */
  if ((o = info_object(r, 0, 0)) == NULL) {
    engram_request_complete(req, ENGRAM_ENOMEM);
    return;
  }
  engram_reply_set_info(req, o);
  engram_request_complete(req, 0);
}

/* ---- Dispatch ---- */

static void start(engram__redis_t *r, engram_request_t *req) {
  switch (req->op) {
    case ENGRAM_OP_STORE: store_start(r, req); break;
    case ENGRAM_OP_RETRIEVE: retrieve_start(r, req); break;
    case ENGRAM_OP_EXISTS: exists_start(r, req); break;
    case ENGRAM_OP_DELETE: delete_start(r, req); break;
    case ENGRAM_OP_STORE_MANY:
    case ENGRAM_OP_RETRIEVE_MANY:
    case ENGRAM_OP_DELETE_MANY: engram__redis_batch(r, req); break;
    case ENGRAM_OP_UPDATE: engram__redis_update(r, req); break;
    case ENGRAM_OP_LIST_KEYS: engram__redis_list_keys(r, req); break;
    case ENGRAM_OP_SEARCH:
    case ENGRAM_OP_COUNT: engram__redis_search(r, req); break;
    case ENGRAM_OP_CLEAR: engram__redis_clear(r, req); break;
    default: engram__redis_finish(r, req, ENGRAM_ENOTSUP, "operation %d is not supported", (int)req->op); break;
  }
}

/* ---- Open and close ---- */

static void release_all(engram__redis_t *r) {
  engram__rbuf_free(&r->cmd);
  engram__redis_store_free(r);
  engram__redis_search_cache_free(r);
  engram_free(r->scratch);
  r->scratch = NULL;
  engram_free(r->prefix);
  r->prefix = NULL;
  engram_free(r->address);
  r->address = NULL;
  engram_free(r->locks);
  r->locks = NULL;
}

/* Everything is closed: report the failed open, or the close. */
static void maybe_gone(engram__redis_t *r) {
  if (!r->conn_closed || r->wait_timer_open || r->prep_open) return;
  release_all(r);
  if (r->opened) {
    engram_source_closed(r->src);
  } else {
    engram_source_set_health(r->src, ENGRAM_HEALTH_DOWN);
    engram_source_opened(r->src, r->open_status ? r->open_status : ENGRAM_EUNAVAILABLE, "%s", r->open_err);
  }
}

static void on_wait_timer_closed(uv_handle_t *h) {
  engram__redis_t *r = h->data;
  r->wait_timer_open = 0;
  maybe_gone(r);
}

static void on_prep_closed(uv_handle_t *h) {
  engram__redis_t *r = h->data;
  r->prep_open = 0;
  maybe_gone(r);
}

static void on_conn_closed(void *ud) {
  engram__redis_t *r = ud;
  r->conn_closed = 1;
  maybe_gone(r);
}

static void shut_down(engram__redis_t *r) {
  engram_request_t *req;
  r->closing = 1;
  /* Queued calls never reached Redis; the core has answered them (or will not wait for them). */
  while ((req = q_pop(r)) != NULL) engram_request_complete(req, ENGRAM_ECANCELED);
  /* Stores not sent yet fail ("source closed"); the core has answered them too. */
  engram__redis_store_close(r, on_prep_closed);
  if (r->wait_timer_open) {
    uv_timer_stop(&r->wait_timer);
    uv_close((uv_handle_t *)&r->wait_timer, on_wait_timer_closed);
  }
  /* In-flight calls complete through their callbacks (NULL replies) while the context is freed. */
  engram__redis_conn_close(&r->conn);
}

static void on_ready(void *ud) {
  engram__redis_t *r = ud;
  engram_source_set_health(r->src, ENGRAM_HEALTH_CONNECTED);
  r->last_error[0] = '\0';
  if (!r->opened) {
    r->opened = 1;
    engram_source_opened(r->src, 0, NULL);
  }
  if (r->wait_timer_open) uv_timer_stop(&r->wait_timer);
  pump(r);
}

static void on_down(void *ud, const char *why, int was_ready) {
  engram__redis_t *r = ud;
  snprintf(r->last_error, sizeof r->last_error, "%s", why);
  if (!r->opened) {
    r->open_status = r->conn.err_nomem ? ENGRAM_ENOMEM : ENGRAM_EUNAVAILABLE;
    snprintf(r->open_err, sizeof r->open_err, "cannot connect to redis at %s: %s", r->address, why);
    shut_down(r);
    return;
  }
  if (was_ready) r->lost++;
  engram_source_set_health(r->src, was_ready || r->conn.connects > 0 ? ENGRAM_HEALTH_RECONNECTING : ENGRAM_HEALTH_DOWN);
  pump(r); /* fails queued calls at once, unless they wait for the connection */
}

static void redis_open(engram_source_t *src, const cJSON *options) {
  engram__redis_t *r = engram_source_state(src);
  engram__redis_endpoint_t e;
  char err[400];
  int rc, i;
  size_t alen;
  memset(&e, 0, sizeof e);
  r->src = src;
  r->loop = engram_source_loop(src);
  if ((rc = engram__redis_parse_options(r, options, &e, err, sizeof err)) != 0) {
    engram__redis_endpoint_free(&e);
    release_all(r);
    engram_source_opened(src, rc, "%s", err);
    return;
  }
  alen = strlen(e.host) + 16;
  if ((r->address = engram_malloc(alen)) == NULL) {
    engram__redis_endpoint_free(&e);
    release_all(r);
    engram_source_opened(src, ENGRAM_ENOMEM, "out of memory");
    return;
  }
  snprintf(r->address, alen, strchr(e.host, ':') ? "[%s]:%d" : "%s:%d", e.host, e.port);
  r->conn.host = e.host;
  r->conn.port = e.port;
  r->conn.db = e.db;
  r->conn.username = e.username;
  r->conn.password = e.password;
  for (i = 0; i < RS_COUNT_; i++) r->conn.scripts[i] = engram__redis_scripts[i];
  r->conn.n_scripts = RS_COUNT_;
  r->conn.cbs.on_ready = on_ready;
  r->conn.cbs.on_down = on_down;
  r->conn.cbs.on_closed = on_conn_closed;
  r->conn.ud = r;
  if (engram__redis_conn_init(&r->conn, r->loop) != 0 || uv_timer_init(r->loop, &r->wait_timer) != 0 ||
      engram__redis_store_init(r) != 0) {
    /* uv_timer_init cannot fail on a live loop; keep the error path simple. */
    engram_free(e.host);
    engram_free(e.username);
    engram_free(e.password);
    release_all(r);
    engram_source_opened(src, ENGRAM_EBACKEND, "cannot initialise a timer");
    return;
  }
  r->wait_timer.data = r;
  r->wait_timer_open = 1;
  if (r->lazy) {
    r->opened = 1;
    engram_source_set_health(src, ENGRAM_HEALTH_DOWN);
    engram_source_opened(src, 0, NULL);
  }
  engram__redis_conn_start(&r->conn);
}

static void redis_close(engram_source_t *src) {
  engram__redis_t *r = engram_source_state(src);
  shut_down(r);
}

/* ---- vtable ---- */

const engram_source_vtable_t engram_source_redis = {
    .version = ENGRAM_SOURCE_VTABLE_VERSION,
    .name = "redis",
    .instance_size = sizeof(engram__redis_t),
    .flags = 0,
    .open = redis_open,
    .close = redis_close,
    .store = admit,
    .retrieve = admit,
    .search = admit,
    .del = admit,
    .list_keys = admit,
    .store_many = admit,
    .retrieve_many = admit,
    .delete_many = admit,
    .count = admit,
    .exists = admit,
    .update = admit,
    .clear = admit,
    .info = redis_info,
};
