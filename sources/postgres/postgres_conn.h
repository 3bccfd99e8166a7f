/*
 * postgres_conn.h — the PostgreSQL source's connection pool (postgres_conn.c): libpq connections in pipeline
 * mode on a libuv loop, each connecting asynchronously, running its setup (session settings, the schema's DDL,
 * the prepared statements), sending queued ops in segments and reconnecting after a fault.
 *
 * The pool knows nothing of the source above it: its owner fills the configuration (borrowed texts that must
 * outlive the pool) and a callbacks struct before engram__pgc_init, and hears through those callbacks when a
 * connection is ready or went down, how the pool's health changed, and when shutdown finished — as
 * sources/redis/redis_conn.h does for its connection. Ops are handed back through their own op->done.
 *
 * An op is one statement. Ops queue on a connection and leave in segments: every op queued when the previous
 * segment is done is sent at once (pipeline mode), followed by one Sync. A segment is one implicit transaction
 * on the server, so results are held until the Sync confirms the commit; when a statement of a segment fails,
 * only that op fails and every other op of the segment is sent again, ahead of newer ones (see postgres_conn.c).
 */
#ifndef ENGRAM_POSTGRES_CONN_H
#define ENGRAM_POSTGRES_CONN_H

#include <libpq-fe.h>
#include <stdint.h>
#include <uv.h>

#include "engram/source.h"
#include "postgres_op.h"
#include "postgres_sql.h"

typedef struct pg_pool_s pg_pool_t;
typedef struct pgc_s pgc_t;

typedef enum { PGC_DOWN = 0, PGC_CONNECTING, PGC_SETUP, PGC_READY, PGC_CLOSED } pgc_state_t;

typedef struct pg_poll_s {
  uv_poll_t h;
  pgc_t *c;
} pg_poll_t;

/* How the pool reports to its owner (every callback gets the pool's ud). */
typedef struct pg_pool_cbs_s {
  /* c finished its setup: ops sent to it run now (the maintenance connection too: check c->maint). */
  void (*on_ready)(void *ud, pgc_t *c);
  /* An attempt of c failed or the connection c was lost (msg says why, scrubbed, with the host and port); every
   * op it held was already handed back with ENGRAM_EUNAVAILABLE. A pool connection is connected again after a
   * backoff once the owner called engram__pgc_connect_all, unless the owner shut the pool down in here. */
  void (*on_down)(void *ud, pgc_t *c, const char *msg);
  /* The pool's health changed or was re-evaluated (connected, reconnecting, down after 3 failed attempts). */
  void (*on_health)(void *ud, engram_health_t health);
  /* engram__pgc_shutdown finished: every handle of the pool is closed. */
  void (*on_closed)(void *ud);
} pg_pool_cbs_t;

struct pgc_s {
  pg_pool_t *pool;
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
  int broken;           /* a send failed: fail the connection at the next prepare */
  int setup_error;      /* the server refused the setup (schema, statements): not a connectivity problem */
  size_t load;          /* ops queued or in flight */
  char err[320];        /* why the connection is down (scrubbed) */
};

struct pg_pool_s {
  /* Configuration, filled by the owner before engram__pgc_init; the texts are borrowed. */
  uv_loop_t *loop;
  char *const *kw, *const *val;   /* libpq connection parameters (NULL-terminated) */
  const char *password;           /* scrubbed from every message; NULL: none */
  const char *where;              /* "host H port P" for messages */
  const pg_sql_t *sql;            /* the setup's texts and the statements to prepare */
  int nconn;                      /* pool size; conns[nconn] is the maintenance connection */
  uint64_t connect_timeout_ms, reconnect_max_ms;
  pg_pool_cbs_t cbs;
  void *ud;
  /* State. */
  pgc_t *conns;
  unsigned rr;                    /* round-robin start for least-loaded picks */
  uv_prepare_t prep;              /* sends queued segments right before the loop polls */
  int prep_on, in_prep, kicked;
  int handles;                    /* uv handles not yet closed */
  int retry;                      /* reconnect lost pool connections (engram__pgc_connect_all) */
  int closing;
  int closed_reported;
  int server_version;
  uint64_t reconnects, statements_failed, resent;
  uint64_t groups, grouped; /* group statements sent (postgres_group.c), and the stores they carried */
  char last_error[320];           /* why the last pool connection went down (scrubbed); the owner may reset it */
};

/* Initialises the pool's handles and connections (none connects yet). 0 or ENGRAM_ENOMEM; either way the pool
 * must be shut down with engram__pgc_shutdown. */
int engram__pgc_init(pg_pool_t *pool);
void engram__pgc_connect(pgc_t *c);               /* starts connecting c (when down) */
/* Connects every pool connection that is down, and from now on reconnects the lost ones after a backoff. */
void engram__pgc_connect_all(pg_pool_t *pool);
pgc_t *engram__pgc_pick(pg_pool_t *pool, const char *key, size_t key_len); /* a ready connection, or NULL */
pgc_t *engram__pgc_maint(pg_pool_t *pool);        /* the maintenance connection, or NULL before init */
void engram__pgc_submit(pgc_t *c, pg_op_t *op);  /* queues op; never calls back from inside */
void engram__pgc_flush(pgc_t *c);                 /* sends c's queue now if no segment is in flight; no callback */
int engram__pgc_ready(const pgc_t *c);
void engram__pgc_retire(pgc_t *c);                /* closes c at the next prepare, without reconnecting */
int engram__pgc_ready_count(const pg_pool_t *pool); /* ready pool connections (the maintenance one not counted) */
/* Hands back every op with ENGRAM_ECANCELED and closes every connection and handle; once they are closed, frees
 * the connections and calls cbs.on_closed. */
void engram__pgc_shutdown(pg_pool_t *pool);

#endif
