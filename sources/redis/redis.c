/*
 * redis.c — the Redis source (hiredis 0.14 async on the home loop), at the top of its files: the vtable, open
 * and close, the dispatch of each admitted request to the file that runs its operation, the routing of each
 * coalesced store's result back to the operation that started it, and info. It is the only file that calls
 * the operations; the layers below it (redis_call.c, redis_store.c, redis_conn.c) report to it through the
 * functions it hands them here: start, before_send, stored, the close notices, and the connection's callbacks.
 *
 * Where things are (lowest first, see redis_state.h): redis_rbuf.c the command buffer, redis_json.c JSON text,
 * redis_script.c the Lua scripts, redis_uv.c and redis_conn.c the connection, redis_rank.c the text scanner and
 * streamed BM25 scorer, redis_cmd.c the keys of the data layout and script calls, redis_item.c an item's
 * commands and replies, redis_opts.c the options, redis_call.c admission, sending and finishing a call,
 * redis_store.c stores coalesced into batch script calls, and the operations: redis_single.c (store, retrieve,
 * exists, delete), redis_batch.c (store_many, retrieve_many, delete_many), redis_update.c, redis_scan.c
 * (list_keys, search, count, clear) and redis_search.c (ranked text search and its cached indexes).
 */
#include <stdio.h>
#include <string.h>

#include "redis_batch.h"
#include "redis_call.h"
#include "redis_cmd.h"
#include "redis_conn.h"
#include "redis_json.h"
#include "redis_notify.h"
#include "redis_opts.h"
#include "redis_pipe.h"
#include "redis_rbuf.h"
#include "redis_scan.h"
#include "redis_script.h"
#include "redis_search.h"
#include "redis_single.h"
#include "redis_state.h"
#include "redis_store.h"
#include "redis_update.h"

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
  ok = ok && cJSON_AddNumberToObject(o, "script_cache_recoveries", (double)r->pipe.recoveries);
  ok = ok && cJSON_AddNumberToObject(o, "commands_replayed", (double)r->pipe.replayed);
  ok = ok && cJSON_AddNumberToObject(o, "search_walks", (double)r->search_walks);
  ok = ok && cJSON_AddNumberToObject(o, "search_cache_hits", (double)r->search_hits);
  ok = ok && cJSON_AddNumberToObject(o, "search_cache_builds", (double)r->search_builds);
  ok = ok && cJSON_AddNumberToObject(o, "search_cache_stale", (double)r->search_stale);
  ok = ok && cJSON_AddStringToObject(o, "invalidation_channel", engram__redis_notify_state(r));
  ok = ok && cJSON_AddNumberToObject(o, "invalidations_received", (double)engram__redis_notify_received(r));
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
    engram__redis_slot_take(r); /* info never waits: it takes a slot outside admission */
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

/* ---- Dispatch: the call layer's start, and the store coalescing's results ---- */

static void start(engram__redis_t *r, engram_request_t *req) {
  switch (req->op) {
    case ENGRAM_OP_STORE: engram__redis_store_one(r, req); break;
    case ENGRAM_OP_RETRIEVE: engram__redis_retrieve(r, req); break;
    case ENGRAM_OP_EXISTS: engram__redis_exists(r, req); break;
    case ENGRAM_OP_DELETE: engram__redis_delete(r, req); break;
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

/* A coalesced store's result goes back to the operation that added it. */
static void stored(engram__redis_t *r, engram_request_t *req, size_t i, int status, uint64_t version, int64_t created,
                   const char *msg) {
  if (req->op == ENGRAM_OP_STORE_MANY) engram__redis_batch_stored(r, req, i, status, version, created, msg);
  else engram__redis_store_one_done(r, req, status, version, created, msg);
}

/* ---- Open and close ---- */

static void release_all(engram__redis_t *r) {
  engram__rbuf_free(&r->cmd);
  engram__redis_pipe_free(&r->pipe);
  engram__redis_store_free(r);
  engram__redis_search_cache_free(r);
  engram__redis_scratch_free(&r->scratch);
  engram_free(r->prefix);
  r->prefix = NULL;
  engram_free(r->address);
  r->address = NULL;
  engram_free(r->locks);
  r->locks = NULL;
}

/* Everything is closed: report the failed open, or the close. */
static void maybe_gone(engram__redis_t *r) {
  if (!r->conn_closed || r->wait_timer_open || r->prep_open || r->notify != NULL) return;
  release_all(r);
  if (r->opened) {
    engram_source_closed(r->src);
  } else {
    engram_source_set_health(r->src, ENGRAM_HEALTH_DOWN);
    engram_source_opened(r->src, r->open_status ? r->open_status : ENGRAM_EUNAVAILABLE, "%s", r->open_err);
  }
}

static void on_conn_closed(void *ud) {
  engram__redis_t *r = ud;
  r->conn_closed = 1;
  maybe_gone(r);
}

static void shut_down(engram__redis_t *r) {
  r->closing = 1;
  /* Queued calls never reached Redis; the core has answered them (or will not wait for them). */
  engram__redis_call_close(r, maybe_gone);
  /* Stores not sent yet fail ("source closed"); the core has answered them too. */
  engram__redis_store_close(r, maybe_gone);
  /* The invalidation channel: its watchers get END, its connection closes (redis_notify.c). */
  engram__redis_notify_shutdown(r, maybe_gone);
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
  engram__redis_call_ready(r);
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
  engram__redis_call_pump(r); /* fails queued calls at once, unless they wait for the connection */
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
  engram__redis_pipe_init(&r->pipe, &r->conn);
  if (engram__redis_conn_init(&r->conn, r->loop) != 0 ||
      engram__redis_call_init(r, start, engram__redis_store_flush) != 0 || engram__redis_store_init(r, stored) != 0) {
    /* uv_timer_init cannot fail on a live loop; keep the error path simple. */
    engram_free(e.host);
    engram_free(e.username);
    engram_free(e.password);
    release_all(r);
    engram_source_opened(src, ENGRAM_EBACKEND, "cannot initialise a timer");
    return;
  }
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
    .flags = ENGRAM_SOURCE_REPLICA | ENGRAM_SOURCE_RANGES | ENGRAM_SOURCE_UPDATE_WRITES,
    .open = redis_open,
    .close = redis_close,
    .store = engram__redis_admit,
    .retrieve = engram__redis_admit,
    .search = engram__redis_admit,
    .del = engram__redis_admit,
    .list_keys = engram__redis_admit,
    .store_many = engram__redis_admit,
    .retrieve_many = engram__redis_admit,
    .delete_many = engram__redis_admit,
    .count = engram__redis_admit,
    .exists = engram__redis_admit,
    .update = engram__redis_admit,
    .clear = engram__redis_admit,
    .info = redis_info,
    .watch = engram__redis_watch,
    .unwatch = engram__redis_unwatch,
};
