/*
 * postgres_src.h — the PostgreSQL source's instance state (pg_t): its options, its SQL, its connection pool,
 * and what the method files keep across calls (parked calls, running updates, the text index's upkeep, the
 * sweep). A header without a .c: the files above the pool include it; the pool (postgres_conn.c), the ops
 * (postgres_op.c) and the SQL (postgres_sql.c) never do, so they cannot reach up.
 *
 * The files, from the bottom up (each uses only files listed before it):
 *   postgres_sql.c     SQL text, identifiers, tsvector / tsquery, key ranges, message scrubbing;
 *   postgres_op.c      the op (one statement) and the result / failure helpers;
 *   postgres_conn.c    the libpq pool: connecting, pipelined segments, faults, reconnection (callbacks up);
 *   postgres_opts.c    the options;
 *   postgres_route.c   a call's connection, or failing it fast, or parking it until one is up;
 *   postgres_kv.c      store (and the store statement), retrieve, exists, delete, their batches, clear;
 *   postgres_text.c    the per-namespace BM25 indexes and their sync with the table;
 *   postgres_append.c  an update's head written with its writes (a conversation append) in one statement;
 *   postgres_update.c  the native update;
 *   postgres_query.c   search, count and list_keys (text search over postgres_text.c's indexes);
 *   postgres_notify.c  the invalidation channel: a NOTIFY trigger and a LISTEN connection (watch / unwatch);
 *   postgres.c         the vtable, open and close, the pool's callbacks, dispatch, info and the sweep.
 */
#ifndef ENGRAM_POSTGRES_SRC_H
#define ENGRAM_POSTGRES_SRC_H

#include <stdint.h>
#include <uv.h>

#include "engram/source.h"
#include "postgres_conn.h"
#include "postgres_sql.h"

typedef struct pg_s pg_t;

struct pg_s {
  engram_source_t *src;
  uv_loop_t *loop;
  /* Options (postgres_opts.c). */
  char *schema, *table, *qtable; /* qtable: "schema"."table" */
  char **kw, **val;              /* libpq connection parameters (NULL-terminated) */
  char *password;                /* scrubbed from every message; never shown */
  char *where;                   /* "host H port P" for messages */
  char *host, *port, *dbname, *user;
  int nconn;
  uint64_t statement_timeout_ms, connect_timeout_ms, sweep_interval_ms, max_value_bytes, reconnect_max_ms;
  int wait_for_connection;
  int gin_cleanup;               /* option of schema version 1, accepted and ignored (there is no GIN index now) */
  /* Statements (postgres_sql.c). */
  pg_sql_t sql;
  /* Connections: the pool (nconn), then the maintenance connection (postgres_conn.c). */
  pg_pool_t pool;
  uv_timer_t sweep;
  int sweep_on;
  /* Calls waiting for a connection (wait_for_connection; postgres_route.c). */
  engram_request_t **park;
  size_t park_n, park_cap;
  uv_timer_t park_timer;
  int park_timer_on;
  /* Lifecycle (postgres.c). */
  int opened;                    /* engram_source_opened was called with 0 */
  int open_status;               /* why the open failed, for engram_source_opened once the handles are closed */
  int closing;
  int handles;                   /* the sweep and park timers and the pool, not yet closed */
  void (*after_close)(pg_t *pg); /* runs once every handle is closed */
  struct pg_upd_s *updates;      /* keys with an update running (postgres_update.c) */
  /* The invalidation channel's listener and watchers (postgres_notify.c), NULL until the first watch. */
  struct pg_notify_s *notify;
  /* The text indexes, one per namespace searched (postgres_text.c), within text_index_items documents (option;
   * 0 = no bound) over all namespaces but the one being searched: least recently used ones go first. */
  struct pg_tix_s *tix;
  uint64_t text_index_items, tix_tick;
  /* retrieve_many calls answered by one key-range scan of a run of keys, and those whose scan hit its cap and were
   * sent again as probes (postgres_kv.c; info). */
  uint64_t range_reads, range_fallbacks;
  /* Text searches whose ranking, made while their sync was in flight, stood (postgres_query.c; info). */
  uint64_t text_ranked_early;
  /* Updates chained behind another of their key in one segment, and those of them that ran again after their
   * predicted row was not there (postgres_update.c; info). */
  uint64_t upd_chained, upd_redone;
  uint64_t chain_tokens; /* the last chain token handed out (postgres_update.c) */
};

#endif
