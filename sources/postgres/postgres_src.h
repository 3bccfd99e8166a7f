/*
 * postgres_src.h — what the PostgreSQL source's files share: the source state (pg_t), the pool's connections
 * (pgc_t), the unit of work sent down a connection (pg_op_t) and the prepared statements.
 *
 * postgres.c holds the vtable, open/close, routing and the key-value methods; postgres_opts.c the options;
 * postgres_query.c search, count and list_keys; postgres_update.c the native update; postgres_conn.c the libpq
 * connections (asynchronous connect, pipeline mode, segments, faults, reconnection); postgres_sql.c the SQL
 * text, identifiers, tsvector / tsquery building and message scrubbing; postgres_gin.c the cleaning of the text
 * index's pending list on a maintenance connection of its own.
 *
 * An op is one statement. Ops queue on a connection and leave in segments: every op queued when the previous
 * segment is done is sent at once (pipeline mode), followed by one Sync. A segment is one implicit transaction
 * on the server, so results are held until the Sync confirms the commit; when a statement of a segment fails,
 * only that op fails and every other op of the segment is sent again, ahead of newer ones (see postgres_conn.c).
 */
#ifndef ENGRAM_POSTGRES_SRC_H
#define ENGRAM_POSTGRES_SRC_H

#include <libpq-fe.h>
#include <stdint.h>
#include <uv.h>

#include "engram/source.h"

#define PG_MAX_PARAMS 8
#define PG_SCHEMA_VERSION 1

/* Prepared statements (postgres_sql.c builds their text). */
typedef enum {
  PGS_STORE = 0,  /* upsert */
  PGS_STORE_NEW,  /* create-only upsert: replaces only an expired row */
  PGS_STORE_IF,   /* update conditional on the version */
  PGS_GET,
  PGS_EXISTS,
  PGS_DELETE,
  PGS_COUNT,
  PGS_SCAN,       /* full rows of a namespace in key order, from a key range start */
  PGS_SCAN_R,     /* ... with an upper bound */
  PGS_SCANM,      /* key and metadata only */
  PGS_SCANM_R,
  PGS_LIST,       /* keys only */
  PGS_LIST_R,
  PGS_LIST_ALL,   /* (namespace, key) of every namespace */
  PGS_TEXT,       /* ranked text search */
  PGS_TEXT_COUNT, /* the same rows, without values (for counting) */
  PGS_CLEAR_NS,
  PGS_CLEAR_ALL,
  PGS_SWEEP,
  PGS_INFO,
  PGS_N,
  /* Not prepared: */
  PGS_SQL = 100,  /* ad-hoc SQL text (op->sql), with parameters */
  PGS_PREPARE     /* prepares statement op->index */
} pg_stmt_t;

typedef struct pg_s pg_t;
typedef struct pgc_s pgc_t;
typedef struct pg_op_s pg_op_t;

/* Called once per op when its segment is done: status 0 with res (PGRES_TUPLES_OK / PGRES_COMMAND_OK), or an
 * error status (ENGRAM_EBACKEND, ENGRAM_ETIMEDOUT, ENGRAM_EUNAVAILABLE, ENGRAM_ECANCELED) with res NULL and msg.
 * It owns op (engram__pg_op_free or engram__pgc_submit it again); res is cleared after it returns. */
typedef void (*pg_done_fn)(pg_op_t *op, int status, PGresult *res, const char *msg);

struct pg_op_s {
  pg_op_t *next;
  pg_done_fn done;
  engram_request_t *req; /* the call, or NULL for the connection's own work */
  void *ctx;             /* shared state of a multi-op call */
  size_t index;          /* batch item / statement to prepare */
  int stmt;              /* pg_stmt_t */
  const char *sql;       /* PGS_SQL */
  int nparams;
  const char *values[PG_MAX_PARAMS];
  char *json[2];         /* cJSON-printed texts the op owns (cJSON_free) */
  char *heap[2];         /* other texts the op owns (engram_free) */
  PGresult *res;         /* held until the segment's Sync */
  unsigned got : 1;      /* res received; its NULL terminator comes next */
  unsigned setup : 1;    /* part of the connection's setup */
  unsigned char tries;   /* resends after a transient failure (deadlock, serialization) */
  char num[4][24];       /* room for numeric parameters */
};

typedef enum { PGC_DOWN = 0, PGC_CONNECTING, PGC_SETUP, PGC_READY, PGC_CLOSED } pgc_state_t;

typedef struct pg_poll_s {
  uv_poll_t h;
  pgc_t *c;
} pg_poll_t;

struct pgc_s {
  pg_t *pg;
  int id;
  int maint;            /* the maintenance connection (postgres_gin.c): not in the pool, connected on demand */
  pgc_state_t st;
  PGconn *conn;
  pg_poll_t *poll;      /* the socket's poll handle (re-made when libpq changes sockets), or NULL */
  int fd;
  int events;           /* UV_READABLE | UV_WRITABLE being watched */
  int want_write;       /* PQflush returned 1: watch for writable too */
  uv_timer_t timer;     /* connect timeout, then reconnection backoff */
  uint64_t backoff_ms;
  unsigned failures;    /* consecutive failed attempts */
  pg_op_t *q_head, *q_tail; /* queued, not sent yet */
  size_t q_n;
  pg_op_t *s_head, *s_tail; /* the segment in flight, in order */
  pg_op_t *await;       /* the sent op whose result comes next; NULL: the Sync comes next */
  pg_op_t *seg_err;     /* the first op of the segment that failed */
  int seg_open;         /* a segment is in flight */
  int broken;           /* a send failed: fail the connection at the next idle */
  int setup_error;      /* the server refused the setup (schema, statements): not a connectivity problem */
  size_t load;          /* ops queued or in flight */
  char err[320];        /* why the connection is down (scrubbed) */
};

struct pg_s {
  engram_source_t *src;
  uv_loop_t *loop;
  /* Options. */
  char *schema, *table, *qtable; /* qtable: "schema"."table" */
  char **kw, **val;              /* libpq connection parameters (NULL-terminated) */
  char *password;                /* scrubbed from every message; never shown */
  char *where;                   /* "host H port P" for messages */
  char *host, *port, *dbname, *user;
  int nconn;
  uint64_t statement_timeout_ms, connect_timeout_ms, sweep_interval_ms, max_value_bytes, reconnect_max_ms;
  int wait_for_connection;
  int gin_cleanup;               /* option: clean the text index's pending list off the calls' connections */
  /* Statements. */
  char *sql[PGS_N];
  char *ddl;
  char *setup_sql;
  char *gin_sql, *gin_index;     /* gin_clean_pending_list and the search index's qualified name */
  char stmt_timeout_txt[24];
  /* Connections: the pool (nconn), then the maintenance connection (conns[nconn]). */
  pgc_t *conns;
  unsigned rr;                   /* round-robin start for least-loaded picks */
  uv_idle_t idle;
  int idle_on;
  uv_timer_t sweep;
  int sweep_on;
  /* Calls waiting for a connection (wait_for_connection). */
  engram_request_t **park;
  size_t park_n, park_cap;
  uv_timer_t park_timer;
  int park_timer_on;
  /* Lifecycle. */
  int opened;                    /* engram_source_opened was called with 0 */
  int open_status;               /* why the open failed, for engram_source_opened once the handles are closed */
  int closing;
  int handles;                   /* uv handles not yet closed */
  void (*after_close)(pg_t *pg); /* runs once every handle is closed */
  struct pg_upd_s *updates;      /* keys with an update running (postgres_update.c) */
  uint64_t reconnects, statements_failed, resent;
  /* Text index upkeep (postgres_gin.c). */
  uint64_t gin_bytes;            /* tsvector text sent since the last cleaning started */
  uint64_t gin_cleanings;
  int gin_running;               /* a cleaning is in flight */
  int gin_off;                   /* the server refused it (gin_error says why): no more tries */
  char gin_error[200];
  int server_version;
  char last_error[320];
};

/* ---- postgres_conn.c ---- */
int engram__pgc_init(pg_t *pg);                   /* allocates and initialises the pool (handles included) */
void engram__pgc_connect(pgc_t *c);               /* starts connecting */
pgc_t *engram__pgc_pick(pg_t *pg, const char *key, size_t key_len); /* a ready connection, or NULL */
void engram__pgc_submit(pgc_t *c, pg_op_t *op);  /* queues op; never calls back from inside */
int engram__pgc_ready(const pgc_t *c);
void engram__pgc_retire(pgc_t *c);                /* closes c at the next idle, without reconnecting */
void engram__pgc_shutdown(pg_t *pg, void (*after)(pg_t *pg)); /* fails every op, closes every handle */
int engram__pg_ready_count(const pg_t *pg);
void engram__pg_update_health(pg_t *pg);

/* ---- postgres.c ---- */
void engram__pg_conn_ready(pg_t *pg, pgc_t *c);   /* a connection finished its setup */
void engram__pg_conn_failed(pg_t *pg, pgc_t *c, const char *msg); /* an attempt or a connection failed */
/* The statement that stores one item (upsert, create-only or conditional on if_version). NULL with *rc set to
 * ENGRAM_ENOMEM or ENGRAM_ETOOBIG. */
pg_op_t *engram__pg_store_op(pg_t *pg, engram_request_t *req, const char *key, const cJSON *value, const cJSON *meta,
                             int64_t expires, uint64_t if_version, unsigned flags, pg_done_fn done, int *rc);

/* ---- postgres_gin.c ---- */
/* A store queued a tsvector of bytes bytes: starts a cleaning of the index's pending list when enough piled up. */
void engram__pg_gin_note(pg_t *pg, size_t bytes);

/* ---- postgres_opts.c ---- */
int engram__pg_parse_options(pg_t *pg, const cJSON *options, char *err, size_t errlen);

/* ---- postgres_update.c ---- */
void engram__pg_update(engram_source_t *src, engram_request_t *req);
void engram__pg_update_free(pg_t *pg); /* at close: the waiting calls end (ECANCELED), memory goes */

/* ---- ops ---- */
pg_op_t *engram__pg_op_new(engram_request_t *req, int stmt, pg_done_fn done);
void engram__pg_op_free(pg_op_t *op);
/* Sets parameter i to a decimal number (kept in the op). */
void engram__pg_op_num(pg_op_t *op, int i, int64_t v);

/* ---- postgres_sql.c ---- */
int engram__pg_ident_ok(const char *s);
int engram__pg_build_sql(pg_t *pg);               /* statements, DDL; 0 or ENGRAM_ENOMEM */
void engram__pg_free_sql(pg_t *pg);
/* The tsvector text of an item (its key and the value's string leaves, engram_tokenize tokens). */
int engram__pg_tsvector(const char *key, const cJSON *value, char **out);
/* The OR tsquery of a text's tokens; *out NULL when the text holds none. */
int engram__pg_tsquery(const char *text, char **out);
/* Key range of a glob's literal prefix: lo (NULL: none) and hi (NULL: none), valid UTF-8. */
int engram__pg_range(const char *pattern, char **lo, char **hi);
/* Copies msg into out (first lines, trimmed), with every occurrence of password replaced by "***". */
void engram__pg_scrub(char *out, size_t outlen, const char *msg, const char *password);
/* The message of a failed result ("ERROR 23505: ..."), scrubbed. */
void engram__pg_result_error(pg_t *pg, const PGresult *res, char *out, size_t outlen);

/* ---- postgres_query.c ---- */
void engram__pg_search(engram_source_t *src, engram_request_t *req);
void engram__pg_count(engram_source_t *src, engram_request_t *req);
void engram__pg_list_keys(engram_source_t *src, engram_request_t *req);
/* Routes a call: a ready connection, or NULL after the call was failed fast or parked (postgres.c). */
pgc_t *engram__pg_route(pg_t *pg, engram_request_t *req, const char *key, size_t key_len);
/* Parses a jsonb column into a cJSON (NULL for SQL NULL); 0 or ENGRAM_ENOMEM / ENGRAM_EBACKEND. */
int engram__pg_json(const PGresult *res, int row, int col, cJSON **out);
int64_t engram__pg_int(const PGresult *res, int row, int col);
void engram__pg_fail(engram_request_t *req, int status, const char *what, const char *msg);

#endif
