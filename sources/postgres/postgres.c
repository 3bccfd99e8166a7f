/*
 * postgres.c — the PostgreSQL source: memory items in one table of a PostgreSQL database, reached through
 * libpq's asynchronous API in pipeline mode on the home loop (postgres_conn.c), so the actor never blocks.
 * This file holds open and close, the routing of calls to the pool's connections (parking them while no
 * connection is up when wait_for_connection is set), and the key-value methods: store (one upsert statement that
 * honours create-only and if_version), retrieve, exists, delete, their pipelined batch forms, clear, info and the
 * periodic sweep of expired rows. Options are in postgres_opts.c, search, count and list_keys in
 * postgres_query.c, update in postgres_update.c.
 *
 * A call's statements carry its values as parameters; identifiers were validated at open. Every read skips
 * expired rows (expires_at > now), so an expired item is invisible at once and removed by the sweep.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "postgres_src.h"

static void pg_dispatch(engram_source_t *src, engram_request_t *req);

/* ---- Small helpers shared with postgres_query.c ---- */

int64_t engram__pg_int(const PGresult *res, int row, int col) {
  if (PQgetisnull(res, row, col)) return 0;
  return strtoll(PQgetvalue(res, row, col), NULL, 10);
}

int engram__pg_json(const PGresult *res, int row, int col, cJSON **out) {
  *out = NULL;
  if (PQgetisnull(res, row, col)) return 0;
  *out = cJSON_ParseWithLength(PQgetvalue(res, row, col), (size_t)PQgetlength(res, row, col));
  return *out != NULL ? 0 : ENGRAM_ENOMEM;
}

void engram__pg_fail(engram_request_t *req, int status, const char *what, const char *msg) {
  engram_request_fail(req, status, "%s: %s", what, msg && msg[0] ? msg : engram_strerror(status));
}

/* ---- Routing and parking ---- */

static int park(pg_t *pg, engram_request_t *req);

pgc_t *engram__pg_route(pg_t *pg, engram_request_t *req, const char *key, size_t key_len) {
  pgc_t *c = engram__pgc_pick(pg, key, key_len);
  if (c != NULL) return c;
  if (engram_request_answered(req)) {
    engram_request_complete(req, ENGRAM_ECANCELED);
    return NULL;
  }
  if (pg->wait_for_connection && !pg->closing) {
    if (park(pg, req) != 0) engram_request_complete(req, ENGRAM_ENOMEM);
    return NULL;
  }
  engram_request_fail(req, ENGRAM_EUNAVAILABLE, "unavailable, reconnecting (%s)",
                      pg->last_error[0] ? pg->last_error : "no connection yet");
  return NULL;
}

static void park_tick(uv_timer_t *t);

static int park(pg_t *pg, engram_request_t *req) {
  if (pg->park_n == pg->park_cap) {
    size_t cap = pg->park_cap ? pg->park_cap * 2 : 64;
    engram_request_t **np = engram_realloc(pg->park, cap * sizeof *np);
    if (np == NULL) return ENGRAM_ENOMEM;
    pg->park = np;
    pg->park_cap = cap;
  }
  pg->park[pg->park_n++] = req;
  if (!pg->park_timer_on) {
    uv_timer_start(&pg->park_timer, park_tick, 100, 100);
    pg->park_timer_on = 1;
  }
  return 0;
}

/* Releases parked calls the core already answered (their deadline passed). */
static void park_tick(uv_timer_t *t) {
  pg_t *pg = t->data;
  size_t i, k = 0;
  engram_request_t **gone = NULL;
  size_t n_gone = 0;
  for (i = 0; i < pg->park_n; i++)
    if (engram_request_answered(pg->park[i])) n_gone++;
  if (n_gone > 0 && (gone = engram_malloc(n_gone * sizeof *gone)) == NULL) return; /* next tick */
  n_gone = 0;
  for (i = 0; i < pg->park_n; i++) {
    if (engram_request_answered(pg->park[i])) gone[n_gone++] = pg->park[i];
    else pg->park[k++] = pg->park[i];
  }
  pg->park_n = k;
  if (k == 0) {
    uv_timer_stop(&pg->park_timer);
    pg->park_timer_on = 0;
  }
  for (i = 0; i < n_gone; i++) engram_request_complete(gone[i], ENGRAM_ETIMEDOUT);
  engram_free(gone);
}

/* A connection is up: run the parked calls again (in the order they arrived). */
static void unpark(pg_t *pg) {
  engram_request_t **v = pg->park;
  size_t i, n = pg->park_n;
  if (n == 0) return;
  pg->park = NULL;
  pg->park_n = pg->park_cap = 0;
  if (pg->park_timer_on) {
    uv_timer_stop(&pg->park_timer);
    pg->park_timer_on = 0;
  }
  for (i = 0; i < n; i++) pg_dispatch(pg->src, v[i]);
  engram_free(v);
}

/* ---- Store ---- */

/* Builds the statement that stores one item. *rc: ENGRAM_ENOMEM or ENGRAM_ETOOBIG when NULL is returned. */
pg_op_t *engram__pg_store_op(pg_t *pg, engram_request_t *req, const char *key, const cJSON *value, const cJSON *meta,
                             int64_t expires, uint64_t if_version, unsigned flags, pg_done_fn done, int *rc) {
  int stmt = if_version ? PGS_STORE_IF : (flags & ENGRAM_OPT_CREATE_ONLY) ? PGS_STORE_NEW : PGS_STORE;
  pg_op_t *op = engram__pg_op_new(req, stmt, done);
  *rc = ENGRAM_ENOMEM;
  if (op == NULL) return NULL;
  if ((op->json[0] = cJSON_PrintUnformatted(value)) == NULL) goto fail;
  if (pg->max_value_bytes && strlen(op->json[0]) > pg->max_value_bytes) {
    *rc = ENGRAM_ETOOBIG;
    goto fail;
  }
  if (meta != NULL && (op->json[1] = cJSON_PrintUnformatted(meta)) == NULL) goto fail;
  if (engram__pg_tsvector(key, value, &op->heap[0]) != 0) goto fail;
  engram__pg_gin_note(pg, strlen(op->heap[0]));
  op->values[0] = req->ns;
  op->values[1] = key;
  op->values[2] = op->json[0];
  op->values[3] = op->json[1];
  engram__pg_op_num(op, 4, req->now_ms);
  if (expires != 0) engram__pg_op_num(op, 5, expires);
  op->values[6] = op->heap[0];
  op->nparams = 7;
  if (if_version) {
    engram__pg_op_num(op, 7, (int64_t)if_version);
    op->nparams = 8;
  }
  return op;
fail:
  engram__pg_op_free(op);
  return NULL;
}

static void store_fail_rc(pg_t *pg, engram_request_t *req, const char *key, int rc) {
  if (rc == ENGRAM_ETOOBIG)
    engram_request_fail(req, rc, "key '%s': value larger than max_value_bytes (%llu)", key,
                        (unsigned long long)pg->max_value_bytes);
  else engram_request_complete(req, rc);
}

static void store_done(pg_op_t *op, int status, PGresult *res, const char *msg) {
  engram_request_t *req = op->req;
  int stmt = op->stmt;
  engram__pg_op_free(op);
  if (status != 0) {
    engram_request_fail(req, status, "store of key '%s': %s", req->key, msg);
    return;
  }
  if (stmt == PGS_EXISTS) { /* create-only and conditional at once: nothing can satisfy both */
    if (PQntuples(res) > 0) engram_request_fail(req, ENGRAM_EEXIST, "key '%s' already exists", req->key);
    else engram_request_fail(req, ENGRAM_ECONFLICT, "key '%s': version is not %llu", req->key,
                             (unsigned long long)req->if_version);
    return;
  }
  if (PQntuples(res) == 0) {
    if (stmt == PGS_STORE_NEW) engram_request_fail(req, ENGRAM_EEXIST, "key '%s' already exists", req->key);
    else engram_request_fail(req, ENGRAM_ECONFLICT, "key '%s': version is not %llu", req->key,
                             (unsigned long long)req->if_version);
    return;
  } else {
    engram_item_t it;
    memset(&it, 0, sizeof it);
    it.key = req->key;
    it.ns = req->ns;
    it.metadata = req->metadata;
    it.version = (uint64_t)engram__pg_int(res, 0, 0);
    it.created_at_ms = engram__pg_int(res, 0, 1);
    it.updated_at_ms = req->now_ms;
    it.expires_at_ms = req->expires_at_ms;
    it.score = 1.0;
    engram_request_complete(req, engram_reply_add(req, &it, 0));
  }
}

static void pg_store(engram_source_t *src, engram_request_t *req) {
  pg_t *pg = engram_source_state(src);
  pgc_t *c = engram__pg_route(pg, req, req->key, req->key_len);
  pg_op_t *op;
  int rc;
  if (c == NULL) return;
  if ((req->flags & ENGRAM_OPT_CREATE_ONLY) && req->if_version != 0) {
    if ((op = engram__pg_op_new(req, PGS_EXISTS, store_done)) == NULL) {
      engram_request_complete(req, ENGRAM_ENOMEM);
      return;
    }
    op->values[0] = req->ns;
    op->values[1] = req->key;
    engram__pg_op_num(op, 2, req->now_ms);
    op->nparams = 3;
  } else if ((op = engram__pg_store_op(pg, req, req->key, req->value, req->metadata, req->expires_at_ms, req->if_version,
                            req->flags, store_done, &rc)) == NULL) {
    store_fail_rc(pg, req, req->key, rc);
    return;
  }
  engram__pgc_submit(c, op);
}

/* ---- Retrieve, exists, delete ---- */

/* Adds the row (value at column b, then metadata, created_at, updated_at, expires_at, version). */
static int add_row(engram_request_t *req, const PGresult *res, int row, int b, const char *ns, const char *key,
                   int with_meta, double score) {
  engram_item_t it;
  cJSON *value, *meta = NULL;
  int rc;
  memset(&it, 0, sizeof it);
  if ((rc = engram__pg_json(res, row, b, &value)) != 0) return rc;
  if (with_meta && (rc = engram__pg_json(res, row, b + 1, &meta)) != 0) {
    cJSON_Delete(value);
    return rc;
  }
  it.key = key;
  it.ns = ns;
  it.value = value;
  it.metadata = meta;
  it.created_at_ms = engram__pg_int(res, row, b + 2);
  it.updated_at_ms = engram__pg_int(res, row, b + 3);
  it.expires_at_ms = engram__pg_int(res, row, b + 4);
  it.version = (uint64_t)engram__pg_int(res, row, b + 5);
  it.score = score;
  return engram_reply_add(req, &it, ENGRAM_REPLY_OWN_VALUE | ENGRAM_REPLY_OWN_METADATA);
}

static pg_op_t *key_op(engram_request_t *req, int stmt, const char *key, pg_done_fn done) {
  pg_op_t *op = engram__pg_op_new(req, stmt, done);
  if (op == NULL) return NULL;
  op->values[0] = req->ns;
  op->values[1] = key;
  engram__pg_op_num(op, 2, req->now_ms);
  op->nparams = 3;
  return op;
}

static void get_done(pg_op_t *op, int status, PGresult *res, const char *msg) {
  engram_request_t *req = op->req;
  engram__pg_op_free(op);
  if (status != 0) engram_request_fail(req, status, "retrieve of key '%s': %s", req->key, msg);
  else if (PQntuples(res) == 0) engram_request_fail(req, ENGRAM_ENOTFOUND, "no memory found for key: %s", req->key);
  else engram_request_complete(req, add_row(req, res, 0, 0, req->ns, req->key,
                                            (req->flags & ENGRAM_OPT_INCLUDE_METADATA) != 0, 1.0));
}

static void exists_done(pg_op_t *op, int status, PGresult *res, const char *msg) {
  engram_request_t *req = op->req;
  engram__pg_op_free(op);
  if (status != 0) {
    engram_request_fail(req, status, "exists of key '%s': %s", req->key, msg);
    return;
  }
  engram_reply_set_count(req, PQntuples(res) > 0);
  engram_request_complete(req, 0);
}

/* A DELETE ... RETURNING (alive): 1 when a live row went. */
static int deleted_live(const PGresult *res) {
  return PQntuples(res) == 1 && PQgetvalue(res, 0, 0)[0] == 't';
}

static void delete_done(pg_op_t *op, int status, PGresult *res, const char *msg) {
  engram_request_t *req = op->req;
  engram__pg_op_free(op);
  if (status != 0) {
    engram_request_fail(req, status, "delete of key '%s': %s", req->key, msg);
    return;
  }
  engram_reply_set_count(req, (uint64_t)deleted_live(res));
  engram_request_complete(req, 0);
}

static void single_key(engram_source_t *src, engram_request_t *req, int stmt, pg_done_fn done) {
  pg_t *pg = engram_source_state(src);
  pgc_t *c = engram__pg_route(pg, req, req->key, req->key_len);
  pg_op_t *op;
  if (c == NULL) return;
  if ((op = key_op(req, stmt, req->key, done)) == NULL) {
    engram_request_complete(req, ENGRAM_ENOMEM);
    return;
  }
  engram__pgc_submit(c, op);
}

static void pg_retrieve(engram_source_t *src, engram_request_t *req) { single_key(src, req, PGS_GET, get_done); }
static void pg_exists(engram_source_t *src, engram_request_t *req) { single_key(src, req, PGS_EXISTS, exists_done); }
static void pg_delete(engram_source_t *src, engram_request_t *req) { single_key(src, req, PGS_DELETE, delete_done); }

/* ---- Batches: one statement per item, pipelined on one connection ---- */

typedef struct {
  int status;
  cJSON *value, *meta;
  int64_t created, updated, expires;
  uint64_t version;
} slot_t;

typedef struct {
  engram_request_t *req;
  size_t pending; /* statements out, + 1 while they are being sent */
  int failed;     /* the whole call failed (connection lost, out of memory) */
  uint64_t acc;
  char msg[320];
  slot_t slots[];
} batch_t;

static void batch_free(batch_t *b) {
  size_t i;
  for (i = 0; i < b->req->n; i++) {
    cJSON_Delete(b->slots[i].value);
    cJSON_Delete(b->slots[i].meta);
  }
  engram_free(b);
}

static void batch_finish(batch_t *b) {
  engram_request_t *req = b->req;
  size_t i;
  int rc = 0;
  if (b->failed) {
    int st = b->failed;
    char msg[sizeof b->msg];
    memcpy(msg, b->msg, sizeof msg);
    batch_free(b);
    if (msg[0]) engram_request_fail(req, st, "%s", msg);
    else engram_request_complete(req, st);
    return;
  }
  for (i = 0; rc == 0 && i < req->n; i++) {
    slot_t *s = &b->slots[i];
    engram_item_t it;
    memset(&it, 0, sizeof it);
    it.ns = req->ns;
    it.status = s->status;
    it.score = 1.0;
    if (req->op == ENGRAM_OP_STORE_MANY) {
      it.key = req->entries[i].key;
      if (s->status == 0) it.metadata = req->entries[i].metadata;
    } else {
      it.key = req->keys[i];
      it.value = s->value;
      it.metadata = s->meta;
      s->value = s->meta = NULL;
    }
    it.created_at_ms = s->created;
    it.updated_at_ms = s->updated;
    it.expires_at_ms = s->expires;
    it.version = s->version;
    rc = engram_reply_add(req, &it, req->op == ENGRAM_OP_STORE_MANY ? 0 : ENGRAM_REPLY_OWN_VALUE | ENGRAM_REPLY_OWN_METADATA);
    if (rc == 0) engram_reply_set_item_status(req, i, s->status);
  }
  engram_reply_set_count(req, b->acc);
  batch_free(b);
  engram_request_complete(req, rc);
}

static void batch_fail(batch_t *b, int status, const char *what, const char *msg) {
  if (b->failed) return;
  b->failed = status;
  if (msg != NULL) snprintf(b->msg, sizeof b->msg, "%s: %s", what, msg);
}

static void batch_done(pg_op_t *op, int status, PGresult *res, const char *msg) {
  batch_t *b = op->ctx;
  engram_request_t *req = b->req;
  size_t index = op->index;
  slot_t *s = &b->slots[index];
  int stmt = op->stmt;
  engram__pg_op_free(op);
  if (status == ENGRAM_EUNAVAILABLE || status == ENGRAM_ECANCELED) {
    batch_fail(b, status, req->op == ENGRAM_OP_STORE_MANY ? "store_many" : req->op == ENGRAM_OP_RETRIEVE_MANY
                                                                                ? "retrieve_many" : "delete_many", msg);
  } else if (status != 0) {
    s->status = status; /* this item's statement failed; the others stand */
  } else if (req->op == ENGRAM_OP_STORE_MANY) {
    if (PQntuples(res) == 0) {
      s->status = stmt == PGS_STORE_NEW ? ENGRAM_EEXIST : ENGRAM_ECONFLICT;
    } else {
      s->version = (uint64_t)engram__pg_int(res, 0, 0);
      s->created = engram__pg_int(res, 0, 1);
      s->updated = req->now_ms;
      s->expires = req->entry_expires_at_ms ? req->entry_expires_at_ms[index] : 0;
      b->acc++;
    }
  } else if (req->op == ENGRAM_OP_RETRIEVE_MANY) {
    if (PQntuples(res) == 0) {
      s->status = ENGRAM_ENOTFOUND;
    } else if (engram__pg_json(res, 0, 0, &s->value) != 0 ||
               ((req->flags & ENGRAM_OPT_INCLUDE_METADATA) && engram__pg_json(res, 0, 1, &s->meta) != 0)) {
      batch_fail(b, ENGRAM_ENOMEM, "retrieve_many", NULL);
    } else {
      s->created = engram__pg_int(res, 0, 2);
      s->updated = engram__pg_int(res, 0, 3);
      s->expires = engram__pg_int(res, 0, 4);
      s->version = (uint64_t)engram__pg_int(res, 0, 5);
      b->acc++;
    }
  } else {
    b->acc += (uint64_t)deleted_live(res);
  }
  if (--b->pending == 0) batch_finish(b);
}

static void pg_batch(engram_source_t *src, engram_request_t *req) {
  pg_t *pg = engram_source_state(src);
  const char *first = req->n == 0 ? NULL : req->op == ENGRAM_OP_STORE_MANY ? req->entries[0].key : req->keys[0];
  pgc_t *c = engram__pg_route(pg, req, first, first ? strlen(first) : 0);
  batch_t *b;
  size_t i;
  if (c == NULL) return;
  if ((b = engram_calloc(1, sizeof *b + req->n * sizeof(slot_t))) == NULL) {
    engram_request_complete(req, ENGRAM_ENOMEM);
    return;
  }
  b->req = req;
  b->pending = 1;
  for (i = 0; i < req->n && !b->failed; i++) {
    pg_op_t *op;
    int rc = ENGRAM_ENOMEM;
    if (req->op == ENGRAM_OP_STORE_MANY) {
      const engram_entry_t *e = &req->entries[i];
      op = engram__pg_store_op(pg, req, e->key, e->value, e->metadata, req->entry_expires_at_ms ? req->entry_expires_at_ms[i] : 0, 0,
                    req->flags, batch_done, &rc);
    } else {
      op = key_op(req, req->op == ENGRAM_OP_RETRIEVE_MANY ? PGS_GET : PGS_DELETE, req->keys[i], batch_done);
    }
    if (op == NULL) {
      if (rc == ENGRAM_ETOOBIG) b->slots[i].status = rc;
      else batch_fail(b, rc, "batch", NULL);
      continue;
    }
    op->ctx = b;
    op->index = i;
    b->pending++;
    engram__pgc_submit(c, op);
  }
  if (--b->pending == 0) batch_finish(b);
}

/* ---- Clear ---- */

static void clear_done(pg_op_t *op, int status, PGresult *res, const char *msg) {
  engram_request_t *req = op->req;
  engram__pg_op_free(op);
  if (status != 0) {
    engram_request_fail(req, status, "clear: %s", msg);
    return;
  }
  engram_reply_set_count(req, (uint64_t)strtoull(PQcmdTuples(res), NULL, 10));
  engram_request_complete(req, 0);
}

static void pg_clear(engram_source_t *src, engram_request_t *req) {
  pg_t *pg = engram_source_state(src);
  pgc_t *c = engram__pg_route(pg, req, NULL, 0);
  pg_op_t *op;
  int all = (req->flags & ENGRAM_REQ_ALL_NAMESPACES) != 0;
  if (c == NULL) return;
  if ((op = engram__pg_op_new(req, all ? PGS_CLEAR_ALL : PGS_CLEAR_NS, clear_done)) == NULL) {
    engram_request_complete(req, ENGRAM_ENOMEM);
    return;
  }
  if (!all) {
    op->values[0] = req->ns;
    op->nparams = 1;
  }
  engram__pgc_submit(c, op);
}

/* ---- Info ---- */

static cJSON *info_object(pg_t *pg) {
  cJSON *o = cJSON_CreateObject();
  char ver[32];
  int ok = o != NULL;
  if (pg->server_version >= 100000)
    snprintf(ver, sizeof ver, "%d.%d", pg->server_version / 10000, pg->server_version % 10000);
  else snprintf(ver, sizeof ver, "%d", pg->server_version);
  ok = ok && cJSON_AddStringToObject(o, "host", pg->host);
  ok = ok && cJSON_AddStringToObject(o, "port", pg->port);
  ok = ok && cJSON_AddStringToObject(o, "database", pg->dbname);
  ok = ok && cJSON_AddStringToObject(o, "user", pg->user);
  ok = ok && cJSON_AddStringToObject(o, "schema", pg->schema);
  ok = ok && cJSON_AddStringToObject(o, "table", pg->table);
  ok = ok && cJSON_AddNumberToObject(o, "schema_version", PG_SCHEMA_VERSION);
  ok = ok && cJSON_AddStringToObject(o, "server_version", pg->server_version ? ver : "");
  ok = ok && cJSON_AddNumberToObject(o, "connections", pg->nconn);
  ok = ok && cJSON_AddNumberToObject(o, "connections_ready", engram__pg_ready_count(pg));
  ok = ok && cJSON_AddNumberToObject(o, "reconnects", (double)pg->reconnects);
  ok = ok && cJSON_AddNumberToObject(o, "statements_failed", (double)pg->statements_failed);
  ok = ok && cJSON_AddNumberToObject(o, "statements_resent", (double)pg->resent);
  ok = ok && cJSON_AddBoolToObject(o, "wait_for_connection", pg->wait_for_connection);
  ok = ok && cJSON_AddBoolToObject(o, "gin_cleanup", pg->gin_cleanup && !pg->gin_off);
  ok = ok && cJSON_AddNumberToObject(o, "gin_cleanings", (double)pg->gin_cleanings);
  ok = ok && cJSON_AddStringToObject(o, "gin_cleanup_error", pg->gin_error);
  ok = ok && cJSON_AddStringToObject(o, "last_error", pg->last_error);
  if (!ok) {
    cJSON_Delete(o);
    return NULL;
  }
  return o;
}

static void info_done(pg_op_t *op, int status, PGresult *res, const char *msg) {
  engram_request_t *req = op->req;
  pg_t *pg = op->ctx;
  cJSON *o;
  engram__pg_op_free(op);
  if (status != 0) {
    engram_request_fail(req, status, "info: %s", msg);
    return;
  }
  o = info_object(pg);
  if (o == NULL || !cJSON_AddNumberToObject(o, "items", (double)engram__pg_int(res, 0, 0)) ||
      !cJSON_AddNumberToObject(o, "table_bytes", (double)engram__pg_int(res, 0, 1))) {
    cJSON_Delete(o);
    engram_request_complete(req, ENGRAM_ENOMEM);
    return;
  }
  engram_reply_set_info(req, o);
  engram_request_complete(req, 0);
}

static void pg_info(engram_source_t *src, engram_request_t *req) {
  pg_t *pg = engram_source_state(src);
  pgc_t *c = engram__pgc_pick(pg, NULL, 0);
  pg_op_t *op;
  if (c == NULL) { /* down: what is known without the server */
    cJSON *o = info_object(pg);
    if (o == NULL) {
      engram_request_complete(req, ENGRAM_ENOMEM);
      return;
    }
    engram_reply_set_info(req, o);
    engram_request_complete(req, 0);
    return;
  }
  if ((op = engram__pg_op_new(req, PGS_INFO, info_done)) == NULL) {
    engram_request_complete(req, ENGRAM_ENOMEM);
    return;
  }
  op->ctx = pg;
  engram__pg_op_num(op, 0, engram_now_ms());
  op->nparams = 1;
  engram__pgc_submit(c, op);
}

/* ---- Sweep ---- */

#define SWEEP_BATCH 10000

static void sweep_tick(uv_timer_t *t);

static void sweep_done(pg_op_t *op, int status, PGresult *res, const char *msg) {
  pg_t *pg = op->ctx;
  (void)msg;
  engram__pg_op_free(op);
  /* A full batch means more are waiting: go on soon rather than at the next interval. */
  if (status == 0 && strtoll(PQcmdTuples(res), NULL, 10) >= SWEEP_BATCH && !pg->closing && pg->sweep_on)
    uv_timer_start(&pg->sweep, sweep_tick, 10, pg->sweep_interval_ms);
}

static void sweep_tick(uv_timer_t *t) {
  pg_t *pg = t->data;
  pgc_t *c = engram__pgc_pick(pg, NULL, 0);
  pg_op_t *op;
  if (c == NULL || (op = engram__pg_op_new(NULL, PGS_SWEEP, sweep_done)) == NULL) return;
  op->ctx = pg;
  engram__pg_op_num(op, 0, engram_now_ms());
  engram__pg_op_num(op, 1, SWEEP_BATCH);
  op->nparams = 2;
  engram__pgc_submit(c, op);
}

/* ---- Dispatch (parked calls come back through here) ---- */

static void pg_dispatch(engram_source_t *src, engram_request_t *req) {
  switch (req->op) {
    case ENGRAM_OP_STORE: pg_store(src, req); break;
    case ENGRAM_OP_RETRIEVE: pg_retrieve(src, req); break;
    case ENGRAM_OP_EXISTS: pg_exists(src, req); break;
    case ENGRAM_OP_DELETE: pg_delete(src, req); break;
    case ENGRAM_OP_STORE_MANY:
    case ENGRAM_OP_RETRIEVE_MANY:
    case ENGRAM_OP_DELETE_MANY: pg_batch(src, req); break;
    case ENGRAM_OP_CLEAR: pg_clear(src, req); break;
    case ENGRAM_OP_UPDATE: engram__pg_update(src, req); break;
    case ENGRAM_OP_SEARCH: engram__pg_search(src, req); break;
    case ENGRAM_OP_COUNT: engram__pg_count(src, req); break;
    case ENGRAM_OP_LIST_KEYS: engram__pg_list_keys(src, req); break;
    default: engram_request_fail(req, ENGRAM_EINVAL, "operation %d cannot wait for a connection", (int)req->op); break;
  }
}

/* ---- Open and close ---- */

static void free_all(pg_t *pg) {
  size_t i;
  for (i = 0; pg->kw != NULL && pg->kw[i] != NULL; i++) engram_free(pg->kw[i]);
  for (i = 0; pg->val != NULL && pg->val[i] != NULL; i++) engram_free(pg->val[i]);
  engram_free(pg->kw);
  engram_free(pg->val);
  engram_free(pg->password);
  engram_free(pg->where);
  engram_free(pg->host);
  engram_free(pg->port);
  engram_free(pg->dbname);
  engram_free(pg->user);
  engram_free(pg->schema);
  engram_free(pg->table);
  engram_free(pg->qtable);
  engram_free(pg->conns);
  engram_free(pg->park);
  engram__pg_update_free(pg);
  engram__pg_free_sql(pg);
  memset(pg, 0, sizeof *pg);
}

static void timer_closed(uv_handle_t *h) {
  pg_t *pg = h->data;
  if (--pg->handles == 0 && pg->after_close != NULL) {
    void (*after)(pg_t *) = pg->after_close;
    pg->after_close = NULL;
    after(pg);
  }
}

/* Stops the source's own timers and every connection; after() runs once every handle is closed. */
static void shutdown_all(pg_t *pg, void (*after)(pg_t *pg)) {
  size_t i;
  engram_request_t **parked = pg->park;
  size_t n = pg->park_n;
  pg->park = NULL;
  pg->park_n = pg->park_cap = 0;
  pg->closing = 1;
  uv_timer_stop(&pg->sweep);
  uv_timer_stop(&pg->park_timer);
  pg->sweep_on = pg->park_timer_on = 0;
  for (i = 0; i < n; i++) engram_request_complete(parked[i], ENGRAM_ECANCELED);
  engram_free(parked);
  uv_close((uv_handle_t *)&pg->sweep, timer_closed);
  uv_close((uv_handle_t *)&pg->park_timer, timer_closed);
  engram__pgc_shutdown(pg, after);
}

static void open_failed_after(pg_t *pg) {
  engram_source_t *src = pg->src;
  char msg[sizeof pg->last_error];
  int status = pg->open_status;
  memcpy(msg, pg->last_error, sizeof msg);
  free_all(pg);
  engram_source_opened(src, status, "%s", msg);
}

void engram__pg_conn_failed(pg_t *pg, pgc_t *c, const char *msg) {
  (void)msg;
  if (pg->opened || pg->closing || c->id != 0) return;
  /* The first connection of an open failed: the open fails with its reason (host and port, never a password). */
  pg->open_status = c->setup_error ? ENGRAM_EBACKEND : ENGRAM_EUNAVAILABLE;
  shutdown_all(pg, open_failed_after);
}

void engram__pg_conn_ready(pg_t *pg, pgc_t *c) {
  int i;
  if (c->maint) return; /* its queued work goes out on its own */
  if (!pg->opened) {
    pg->opened = 1;
    pg->last_error[0] = '\0';
    engram_source_opened(pg->src, 0, NULL);
    for (i = 0; i < pg->nconn; i++)
      if (&pg->conns[i] != c) engram__pgc_connect(&pg->conns[i]);
    if (pg->sweep_interval_ms > 0) {
      uv_timer_start(&pg->sweep, sweep_tick, pg->sweep_interval_ms, pg->sweep_interval_ms);
      uv_unref((uv_handle_t *)&pg->sweep); /* housekeeping alone does not keep the loop running */
      pg->sweep_on = 1;
    }
  }
  unpark(pg);
}

static void pg_open(engram_source_t *src, const cJSON *options) {
  pg_t *pg = engram_source_state(src);
  char err[400];
  int rc;
  pg->src = src;
  pg->loop = engram_source_loop(src);
  err[0] = '\0';
  if ((rc = engram__pg_parse_options(pg, options, err, sizeof err)) != 0 || (rc = engram__pg_build_sql(pg)) != 0) {
    if (rc == ENGRAM_ENOMEM && err[0] == '\0') snprintf(err, sizeof err, "out of memory");
    free_all(pg);
    engram_source_opened(src, rc, "%s", err);
    return;
  }
  uv_timer_init(pg->loop, &pg->sweep);
  uv_timer_init(pg->loop, &pg->park_timer);
  pg->sweep.data = pg->park_timer.data = pg;
  pg->handles = 2;
  if (engram__pgc_init(pg) != 0) {
    snprintf(pg->last_error, sizeof pg->last_error, "out of memory");
    pg->open_status = ENGRAM_ENOMEM;
    shutdown_all(pg, open_failed_after);
    return;
  }
  engram_source_set_health(src, ENGRAM_HEALTH_RECONNECTING);
  engram__pgc_connect(&pg->conns[0]);
}

static void closed_after(pg_t *pg) {
  engram_source_t *src = pg->src;
  free_all(pg);
  engram_source_closed(src);
}

static void pg_close(engram_source_t *src) {
  pg_t *pg = engram_source_state(src);
  shutdown_all(pg, closed_after);
}

const engram_source_vtable_t engram_source_postgres = {
    .version = ENGRAM_SOURCE_VTABLE_VERSION,
    .name = "postgres",
    .instance_size = sizeof(pg_t),
    .flags = 0,
    .open = pg_open,
    .close = pg_close,
    .store = pg_store,
    .retrieve = pg_retrieve,
    .search = engram__pg_search,
    .del = pg_delete,
    .list_keys = engram__pg_list_keys,
    .store_many = pg_batch,
    .retrieve_many = pg_batch,
    .delete_many = pg_batch,
    .count = engram__pg_count,
    .exists = pg_exists,
    .update = engram__pg_update,
    .clear = pg_clear,
    .info = pg_info,
};
