/*
 * redis_item.c — an item of the redis source as Redis holds it (see redis_item.h): the HMGET of its six fields
 * (seven for an update's read: with the stamp its conditional write names) and the decoding of the reply (an expires in the past reads as missing: Redis's own expiry may lag a read by a
 * moment), fields held beyond their reply, the reply item, and the calls of the one-item store and delete
 * scripts (redis_script.c) with their replies, and of the update_writes script (an update's value with the
 * writes that ride on it).
 */
#include <stdio.h>
#include <string.h>

#include "redis_cmd.h"
#include "redis_item.h"
#include "redis_json.h"

static const char *const item_fields[7] = {"value", "metadata", "created", "updated", "version", "expires", "stamp"};

static void build_hmget_n(const engram__redis_t *r, engram__rbuf_t *b, const char *ns, size_t ns_len, const char *key,
                          size_t key_len, int n) {
  int i;
  engram__rbuf_array(b, 2 + n);
  engram__rbuf_arg(b, "HMGET", 5);
  engram__redis_arg_item(r, b, ns, ns_len, key, key_len);
  for (i = 0; i < n; i++) engram__rbuf_arg_str(b, item_fields[i]);
}

void engram__redis_build_hmget(const engram__redis_t *r, engram__rbuf_t *b, const char *ns, size_t ns_len,
                               const char *key, size_t key_len) {
  build_hmget_n(r, b, ns, ns_len, key, key_len, 6);
}

void engram__redis_build_update_read(const engram__redis_t *r, engram__rbuf_t *b, const char *ns, size_t ns_len,
                                     const char *key, size_t key_len) {
  build_hmget_n(r, b, ns, ns_len, key, key_len, 7);
}

int engram__redis_parse_fields(const redisReply *reply, int64_t now, engram__redis_fields_t *f) {
  redisReply **e;
  memset(f, 0, sizeof *f);
  if (reply->type != REDIS_REPLY_ARRAY || (reply->elements != 6 && reply->elements != 7)) return ENGRAM_EBACKEND;
  e = reply->element;
  if (reply->elements == 7 && e[6]->type == REDIS_REPLY_STRING) {
    f->stamp = e[6]->str;
    f->stamp_len = e[6]->len;
  }
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

void engram__redis_build_read(const engram__redis_t *r, engram__rbuf_t *b, const char *ns, size_t ns_len,
                              const char *key, size_t key_len, unsigned flags) {
  if (flags & ENGRAM_OPT_INCLUDE_METADATA) {
    engram__redis_build_hmget(r, b, ns, ns_len, key, key_len);
    return;
  }
  engram__rbuf_array(b, 4);
  engram__rbuf_arg(b, "HMGET", 5);
  engram__redis_arg_item(r, b, ns, ns_len, key, key_len);
  engram__rbuf_arg(b, "value", 5);
  engram__rbuf_arg(b, "expires", 7);
}

int engram__redis_parse_read(const redisReply *reply, unsigned flags, int64_t now, engram__redis_fields_t *f) {
  const redisReply *v, *x;
  if (flags & ENGRAM_OPT_INCLUDE_METADATA) return engram__redis_parse_fields(reply, now, f);
  memset(f, 0, sizeof *f);
  if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2) return ENGRAM_EBACKEND;
  v = reply->element[0];
  x = reply->element[1];
  if (v->type != REDIS_REPLY_STRING && v->type != REDIS_REPLY_NIL) return ENGRAM_EBACKEND;
  if (v->type == REDIS_REPLY_NIL) return 0; /* no such item */
  f->value = v->str;
  f->value_len = v->len;
  f->expires = engram__redis_int(x, 0);
  /* an expiry in the past reads as missing, as with the six fields */
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
  /* One block each where the parser can (the reply's trees: engram_json_parse_reply) */
  if (with_value && (rc = engram__redis_parse_json_reply(f->value, f->value_len, &value)) != 0) return rc;
  if (with_meta && f->meta != NULL) {
    if ((rc = engram__redis_parse_json_reply(f->meta, f->meta_len, &meta)) == 0 && !cJSON_IsObject(meta))
      rc = ENGRAM_EBACKEND;
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

/* The value and metadata arguments of a store (the one-item script and the batch layout alike): the value's JSON
 * text, refused over max_value_bytes, then the metadata's (a cJSON object, or JSON text, or none). */
static int args_value_meta(engram__redis_t *r, engram__rbuf_t *b, const cJSON *value, const cJSON *meta,
                           const char *meta_text, size_t meta_len) {
  char *text;
  size_t len;
  int owned;
  if ((text = engram__redis_json_print(&r->scratch, value, &len, &owned)) == NULL) return ENGRAM_ENOMEM;
  if (r->max_value_bytes && len > r->max_value_bytes) {
    if (owned) engram_free(text);
    return ENGRAM_ETOOBIG;
  }
  engram__rbuf_arg(b, text, len);
  if (owned) engram_free(text);
  if (meta != NULL) {
    if ((text = engram__redis_json_print(&r->scratch, meta, &len, &owned)) == NULL) return ENGRAM_ENOMEM;
    engram__rbuf_arg(b, text, len);
    if (owned) engram_free(text);
  } else {
    engram__rbuf_arg(b, meta_text ? meta_text : "", meta_text ? meta_len : 0);
  }
  return 0;
}

/* The condition naming the item an update read: its version ":" its stamp (empty when it has none), into
 * out[ENGRAM__REDIS_COND_MAX]; the version alone when stamp_len is ENGRAM__REDIS_STAMP_MAX or more (a stamp
 * too long to keep: not one engram wrote). */
static size_t cond_text(uint64_t version, const char *stamp, size_t stamp_len, char *out) {
  size_t n = (size_t)engram__rbuf_digits(version, out);
  if (stamp_len >= ENGRAM__REDIS_STAMP_MAX) return n;
  out[n++] = ':';
  if (stamp_len) memcpy(out + n, stamp, stamp_len);
  return n + stamp_len;
}

/* The store script for one item (see redis_item.h). */
int engram__redis_build_store(engram__redis_t *r, const char *ns, size_t ns_len, const char *key,
                              size_t key_len, int create_only, uint64_t if_version, const char *if_stamp,
                              size_t if_stamp_len, int64_t now, int64_t expires, const cJSON *value, const cJSON *meta,
                              const char *meta_text, size_t meta_len) {
  engram__rbuf_t *b = &r->cmd;
  int rc;
  engram__rbuf_reset(b);
  engram__redis_begin_script(r, b, RS_STORE, 4, 8);
  engram__redis_arg_item(r, b, ns, ns_len, key, key_len);
  engram__redis_arg_index(r, b, ns, ns_len);
  engram__redis_arg_nsset(r, b);
  engram__redis_arg_gen(r, b, ns, ns_len);
  engram__rbuf_arg(b, create_only ? "1" : "0", 1);
  if (if_version) {
    char tmp[ENGRAM__REDIS_COND_MAX];
    engram__rbuf_arg(b, tmp, cond_text(if_version, if_stamp, if_stamp_len, tmp));
  } else {
    engram__rbuf_arg(b, "0", 1);
  }
  engram__rbuf_arg_i64(b, now);
  engram__rbuf_arg_i64(b, expires > 0 ? expires : 0);
  if ((rc = args_value_meta(r, b, value, meta, meta_text, meta_len)) != 0) return rc;
  engram__rbuf_arg(b, key, key_len);
  engram__rbuf_arg(b, ns, ns_len);
  return b->failed ? ENGRAM_ENOMEM : 0;
}

/* Reads the store script's reply: 0 with *version, *created and stamp, ENGRAM_EEXIST, ENGRAM_ECONFLICT, or
 * ENGRAM_EBACKEND for an unexpected shape. */
int engram__redis_parse_store(const redisReply *reply, uint64_t *version, int64_t *created,
                              char stamp[ENGRAM__REDIS_STAMP_MAX], size_t *stamp_len) {
  int64_t v;
  if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 1) return ENGRAM_EBACKEND;
  v = engram__redis_int(reply->element[0], 0);
  if (v == -1) return ENGRAM_EEXIST;
  if (v == -2) return ENGRAM_ECONFLICT;
  if (v <= 0 || reply->elements < 2) return ENGRAM_EBACKEND;
  *version = (uint64_t)v;
  *created = engram__redis_int(reply->element[1], 0);
  return engram__redis_take_stamp(reply->elements > 2 ? reply->element[2] : NULL, stamp, stamp_len);
}

int engram__redis_take_stamp(const redisReply *e, char stamp[ENGRAM__REDIS_STAMP_MAX], size_t *stamp_len) {
  *stamp_len = 0;
  if (e == NULL || e->type != REDIS_REPLY_STRING || e->len >= ENGRAM__REDIS_STAMP_MAX) return ENGRAM_EBACKEND;
  memcpy(stamp, e->str, e->len);
  *stamp_len = e->len;
  return 0;
}

void engram__redis_build_delete(engram__redis_t *r, const char *ns, size_t ns_len, const char *key,
                                size_t key_len) {
  engram__rbuf_reset(&r->cmd);
  engram__redis_begin_script(r, &r->cmd, RS_DELETE, 3, 1);
  engram__redis_arg_item(r, &r->cmd, ns, ns_len, key, key_len);
  engram__redis_arg_index(r, &r->cmd, ns, ns_len);
  engram__redis_arg_gen(r, &r->cmd, ns, ns_len);
  engram__rbuf_arg(&r->cmd, key, key_len);
}

/* One item's 7 arguments of the batch layout (redis_script.c, store_items): cond, now, expires, value, metadata
 * (a cJSON object, or JSON text, or none), key, namespace slot 0. */
static int args_item(engram__redis_t *r, engram__rbuf_t *b, const char *cond, size_t cond_len, int64_t now,
                     int64_t expires, const cJSON *value, const cJSON *meta, const char *meta_text, size_t meta_len,
                     const char *key, size_t key_len) {
  int rc;
  engram__rbuf_arg(b, cond, cond_len);
  engram__rbuf_arg_i64(b, now);
  engram__rbuf_arg_i64(b, expires > 0 ? expires : 0);
  if ((rc = args_value_meta(r, b, value, meta, meta_text, meta_len)) != 0) return rc;
  engram__rbuf_arg(b, key, key_len);
  engram__rbuf_arg(b, "0", 1);
  return 0;
}

int engram__redis_build_update_writes(engram__redis_t *r, const char *ns, size_t ns_len, const char *key,
                                      size_t key_len, int found, uint64_t version, const char *stamp,
                                      size_t stamp_len, int64_t now, int64_t expires, const cJSON *value,
                                      const char *meta_text, size_t meta_len, const engram_update_writes_t *w) {
  engram__rbuf_t *b = &r->cmd;
  size_t n = 1 + w->n_store, i, cond_len;
  char cond[ENGRAM__REDIS_COND_MAX];
  int rc;
  engram__rbuf_reset(b);
  engram__redis_begin_script(r, b, RS_UPDATE_WRITES, (int)(1 + n + 2 + w->n_delete), (int)(1 + 7 * n + 1 + w->n_delete));
  engram__redis_arg_nsset(r, b);
  engram__redis_arg_item(r, b, ns, ns_len, key, key_len);
  for (i = 0; i < w->n_store; i++) engram__redis_arg_item(r, b, ns, ns_len, w->store[i].key, strlen(w->store[i].key));
  engram__redis_arg_index(r, b, ns, ns_len);
  engram__redis_arg_gen(r, b, ns, ns_len);
  for (i = 0; i < w->n_delete; i++)
    engram__redis_arg_item(r, b, ns, ns_len, w->delete_keys[i], strlen(w->delete_keys[i]));
  engram__rbuf_arg_i64(b, (int64_t)n);
  if (found) {
    cond_len = cond_text(version, stamp, stamp_len, cond);
  } else {
    cond[0] = 'c';
    cond_len = 1;
  }
  if ((rc = args_item(r, b, cond, cond_len, now, expires, value, NULL, meta_text, meta_len, key, key_len)) != 0)
    return rc;
  for (i = 0; i < w->n_store; i++) {
    const engram_entry_t *en = &w->store[i];
    if ((rc = args_item(r, b, "0", 1, now, w->store_expires_at_ms[i], en->value, en->metadata, NULL, 0, en->key,
                        strlen(en->key))) != 0)
      return rc;
  }
  engram__rbuf_arg(b, ns, ns_len);
  for (i = 0; i < w->n_delete; i++) engram__rbuf_arg(b, w->delete_keys[i], strlen(w->delete_keys[i]));
  return b->failed ? ENGRAM_ENOMEM : 0;
}
