/*
 * postgres.c — the PostgreSQL source: memory items in one table of a PostgreSQL database, reached through
 * libpq's asynchronous API in pipeline mode on the home loop (postgres_conn.c), so the actor never blocks.
 *
 * The top of sources/postgres/: this file holds the vtable, open and close, the pool's callbacks (the first
 * ready connection finishes the open, a failed first attempt fails it, and a ready connection brings parked
 * calls back through the dispatch here), info and the periodic sweep of expired rows. The methods live below:
 * the key-value ones in postgres_kv.c, update in postgres_update.c, search, count and list_keys in
 * postgres_query.c; options in postgres_opts.c, SQL text in postgres_sql.c. Nothing below calls into this file.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "postgres_kv.h"
#include "postgres_notify.h"
#include "postgres_opts.h"
#include "postgres_query.h"
#include "postgres_route.h"
#include "postgres_text.h"
#include "postgres_update.h"

/* ---- Info ---- */

static cJSON *info_object(pg_t *pg) {
  cJSON *o = cJSON_CreateObject();
  char ver[32];
  int ok = o != NULL;
  int sv = pg->pool.server_version;
  if (sv >= 100000) snprintf(ver, sizeof ver, "%d.%d", sv / 10000, sv % 10000);
  else snprintf(ver, sizeof ver, "%d", sv);
  ok = ok && cJSON_AddStringToObject(o, "host", pg->host);
  ok = ok && cJSON_AddStringToObject(o, "port", pg->port);
  ok = ok && cJSON_AddStringToObject(o, "database", pg->dbname);
  ok = ok && cJSON_AddStringToObject(o, "user", pg->user);
  ok = ok && cJSON_AddStringToObject(o, "schema", pg->schema);
  ok = ok && cJSON_AddStringToObject(o, "table", pg->table);
  ok = ok && cJSON_AddNumberToObject(o, "schema_version", PG_SCHEMA_VERSION);
  ok = ok && cJSON_AddStringToObject(o, "server_version", sv ? ver : "");
  ok = ok && cJSON_AddNumberToObject(o, "connections", pg->nconn);
  ok = ok && cJSON_AddNumberToObject(o, "connections_ready", engram__pgc_ready_count(&pg->pool));
  ok = ok && cJSON_AddNumberToObject(o, "reconnects", (double)pg->pool.reconnects);
  ok = ok && cJSON_AddNumberToObject(o, "statements_failed", (double)pg->pool.statements_failed);
  ok = ok && cJSON_AddNumberToObject(o, "statements_resent", (double)pg->pool.resent);
  ok = ok && cJSON_AddNumberToObject(o, "store_groups", (double)pg->pool.groups);
  ok = ok && cJSON_AddNumberToObject(o, "stores_grouped", (double)pg->pool.grouped);
  ok = ok && cJSON_AddNumberToObject(o, "retrieve_many_range_scans", (double)pg->range_reads);
  ok = ok && cJSON_AddNumberToObject(o, "retrieve_many_range_fallbacks", (double)pg->range_fallbacks);
  ok = ok && cJSON_AddNumberToObject(o, "text_rankings_during_sync", (double)pg->text_ranked_early);
  ok = ok && cJSON_AddNumberToObject(o, "updates_chained", (double)pg->upd_chained);
  ok = ok && cJSON_AddNumberToObject(o, "updates_chained_redone", (double)pg->upd_redone);
  ok = ok && cJSON_AddBoolToObject(o, "wait_for_connection", pg->wait_for_connection);
  {
    uint64_t ixs, docs, bytes;
    engram__pg_tix_stats(pg, &ixs, &docs, &bytes);
    ok = ok && cJSON_AddNumberToObject(o, "text_indexes", (double)ixs);
    ok = ok && cJSON_AddNumberToObject(o, "text_index_items", (double)docs);
    ok = ok && cJSON_AddNumberToObject(o, "text_index_bytes", (double)bytes);
  }
  ok = ok && cJSON_AddStringToObject(o, "last_error", pg->pool.last_error);
  ok = ok && cJSON_AddStringToObject(o, "invalidation_channel", engram__pg_notify_state(pg));
  ok = ok && cJSON_AddNumberToObject(o, "notifications_received", (double)engram__pg_notify_received(pg));
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
  pgc_t *c = engram__pgc_pick(&pg->pool, NULL, 0);
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
  pgc_t *c = engram__pgc_pick(&pg->pool, NULL, 0);
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
    case ENGRAM_OP_STORE: engram__pg_store(src, req); break;
    case ENGRAM_OP_RETRIEVE: engram__pg_retrieve(src, req); break;
    case ENGRAM_OP_EXISTS: engram__pg_exists(src, req); break;
    case ENGRAM_OP_DELETE: engram__pg_delete(src, req); break;
    case ENGRAM_OP_STORE_MANY:
    case ENGRAM_OP_RETRIEVE_MANY:
    case ENGRAM_OP_DELETE_MANY: engram__pg_batch(src, req); break;
    case ENGRAM_OP_CLEAR: engram__pg_clear(src, req); break;
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
  engram__pg_tix_free_all(pg);
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
  engram_free(pg->park);
  engram__pg_update_free(pg);
  engram__pg_sql_free(&pg->sql);
  memset(pg, 0, sizeof *pg);
}

/* One of the source's handles closed (the sweep and park timers, or the whole pool). */
static void handle_closed(pg_t *pg) {
  if (--pg->handles == 0 && pg->after_close != NULL) {
    void (*after)(pg_t *) = pg->after_close;
    pg->after_close = NULL;
    after(pg);
  }
}

static void timer_closed(uv_handle_t *h) { handle_closed(h->data); }
static void notify_closed(void *ud) { handle_closed(ud); }

/* Stops the source's own timers and the pool; after() runs once every handle is closed. */
static void shutdown_all(pg_t *pg, void (*after)(pg_t *pg)) {
  pg->closing = 1;
  pg->after_close = after;
  uv_timer_stop(&pg->sweep);
  pg->sweep_on = 0;
  engram__pg_park_cancel(pg);
  uv_close((uv_handle_t *)&pg->sweep, timer_closed);
  uv_close((uv_handle_t *)&pg->park_timer, timer_closed);
  pg->handles++; /* the invalidation channel's listener (postgres_notify.c) */
  engram__pg_notify_shutdown(pg, notify_closed, pg);
  engram__pgc_shutdown(&pg->pool);
}

static void open_failed_after(pg_t *pg) {
  engram_source_t *src = pg->src;
  char msg[sizeof pg->pool.last_error];
  int status = pg->open_status;
  memcpy(msg, pg->pool.last_error, sizeof msg);
  free_all(pg);
  engram_source_opened(src, status, "%s", msg);
}

/* ---- The pool's callbacks ---- */

static void on_down(void *ud, pgc_t *c, const char *msg) {
  pg_t *pg = ud;
  (void)msg;
  if (pg->opened || pg->closing || c->id != 0) return;
  /* The first connection of an open failed: the open fails with its reason (host and port, never a password). */
  pg->open_status = c->setup_error ? ENGRAM_EBACKEND : ENGRAM_EUNAVAILABLE;
  shutdown_all(pg, open_failed_after);
}

static void on_ready(void *ud, pgc_t *c) {
  pg_t *pg = ud;
  if (c->maint) return; /* its queued work goes out on its own */
  if (!pg->opened) {
    pg->opened = 1;
    pg->pool.last_error[0] = '\0';
    engram_source_opened(pg->src, 0, NULL);
    engram__pgc_connect_all(&pg->pool);
    if (pg->sweep_interval_ms > 0) {
      uv_timer_start(&pg->sweep, sweep_tick, pg->sweep_interval_ms, pg->sweep_interval_ms);
      uv_unref((uv_handle_t *)&pg->sweep); /* housekeeping alone does not keep the loop running */
      pg->sweep_on = 1;
    }
  }
  engram__pg_unpark(pg, pg_dispatch);
}

static void on_health(void *ud, engram_health_t health) {
  pg_t *pg = ud;
  engram_source_set_health(pg->src, health);
}

static void on_closed(void *ud) { handle_closed(ud); }

static void pg_open(engram_source_t *src, const cJSON *options) {
  pg_t *pg = engram_source_state(src);
  pg_pool_t *pool = &pg->pool;
  char err[400];
  int rc;
  pg->src = src;
  pg->loop = engram_source_loop(src);
  err[0] = '\0';
  if ((rc = engram__pg_parse_options(pg, options, err, sizeof err)) != 0 ||
      (rc = engram__pg_sql_build(&pg->sql, pg->schema, pg->table, pg->qtable, pg->statement_timeout_ms,
                                  pg->connect_timeout_ms)) != 0) {
    if (rc == ENGRAM_ENOMEM && err[0] == '\0') snprintf(err, sizeof err, "out of memory");
    free_all(pg);
    engram_source_opened(src, rc, "%s", err);
    return;
  }
  uv_timer_init(pg->loop, &pg->sweep);
  uv_timer_init(pg->loop, &pg->park_timer);
  pg->sweep.data = pg->park_timer.data = pg;
  pg->handles = 3; /* the two timers and the pool */
  pool->loop = pg->loop;
  pool->kw = pg->kw;
  pool->val = pg->val;
  pool->password = pg->password;
  pool->where = pg->where;
  pool->sql = &pg->sql;
  pool->nconn = pg->nconn;
  pool->connect_timeout_ms = pg->connect_timeout_ms;
  pool->reconnect_max_ms = pg->reconnect_max_ms;
  pool->cbs.on_ready = on_ready;
  pool->cbs.on_down = on_down;
  pool->cbs.on_health = on_health;
  pool->cbs.on_closed = on_closed;
  pool->ud = pg;
  if (engram__pgc_init(pool) != 0) {
    snprintf(pool->last_error, sizeof pool->last_error, "out of memory");
    pg->open_status = ENGRAM_ENOMEM;
    shutdown_all(pg, open_failed_after);
    return;
  }
  engram_source_set_health(src, ENGRAM_HEALTH_RECONNECTING);
  engram__pgc_connect(&pool->conns[0]);
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
    .flags = ENGRAM_SOURCE_REPLICA | ENGRAM_SOURCE_RANGES | ENGRAM_SOURCE_UPDATE_WRITES,
    .open = pg_open,
    .close = pg_close,
    .store = engram__pg_store,
    .retrieve = engram__pg_retrieve,
    .search = engram__pg_search,
    .del = engram__pg_delete,
    .list_keys = engram__pg_list_keys,
    .store_many = engram__pg_batch,
    .retrieve_many = engram__pg_batch,
    .delete_many = engram__pg_batch,
    .count = engram__pg_count,
    .exists = engram__pg_exists,
    .update = engram__pg_update,
    .clear = engram__pg_clear,
    .info = pg_info,
    .watch = engram__pg_watch,
    .unwatch = engram__pg_unwatch,
};
