/*
 * redis_conn.h — one self-healing hiredis connection on a libuv loop, for the redis source.
 *
 * The connection resolves its host with uv_getaddrinfo (never blocking the loop on DNS), connects with
 * redisAsyncConnect to the numeric address, and runs a handshake (AUTH, SELECT, INFO server, SCRIPT LOAD of
 * the owner's Lua scripts) pipelined behind the connect. It is "ready" once every handshake reply is back. A
 * connect timeout (uv_timer) covers resolution, connect and handshake. When an attempt fails or a ready
 * connection is lost it tells its owner and tries again after a capped exponential backoff. Passwords never
 * appear in its messages.
 */
#ifndef ENGRAM_REDIS_CONN_H
#define ENGRAM_REDIS_CONN_H

#include <hiredis/async.h>
#include <stdint.h>
#include <uv.h>

#define ENGRAM__REDIS_MAX_SCRIPTS 8

typedef struct engram__redis_conn_cbs_s {
  /* The handshake finished: commands may be sent. */
  void (*on_ready)(void *ud);
  /* An attempt failed (was_ready = 0) or a ready connection was lost (was_ready = 1); every reply callback of
   * the old context has already run with a NULL reply. why names the cause. A reconnect is scheduled after
   * this returns unless the owner closed the connection in it. */
  void (*on_down)(void *ud, const char *why, int was_ready);
  /* engram__redis_conn_close finished: every handle is closed. */
  void (*on_closed)(void *ud);
} engram__redis_conn_cbs_t;

typedef struct engram__redis_conn_s {
  uv_loop_t *loop;
  /* Configuration (owned; host, username and password are engram_malloc'd). */
  char *host;
  int port;
  int db;
  char *username;
  char *password;
  uint32_t connect_timeout_ms, backoff_min_ms, backoff_max_ms;
  const char *scripts[ENGRAM__REDIS_MAX_SCRIPTS];
  int n_scripts;
  engram__redis_conn_cbs_t cbs;
  void *ud;
  /* State. */
  int state;                  /* see redis_conn.c */
  redisAsyncContext *ac;
  uv_timer_t timer;           /* connect timeout, then backoff */
  int timer_open;
  int polls_open;             /* adapters whose poll handle is not closed yet */
  int gai_outstanding;        /* uv_getaddrinfo requests not yet called back */
  void *gai_current;          /* the one the current attempt waits for */
  int hs_pending;             /* handshake replies still expected */
  int err_set;                /* err holds the cause of the current failure */
  int err_nomem;              /* ... and that cause is an allocation failure */
  int closing, closed_reported;
  uint32_t backoff_ms;
  uint64_t attempts, connects;
  char sha[ENGRAM__REDIS_MAX_SCRIPTS][41];
  char server_version[32];
  char err[256];
} engram__redis_conn_t;

/* Initialises conn (the config fields must be filled first; conn takes host/username/password). Returns 0 or
 * ENGRAM_EBACKEND. */
int engram__redis_conn_init(engram__redis_conn_t *conn, uv_loop_t *loop);
/* Starts the first attempt now. */
void engram__redis_conn_start(engram__redis_conn_t *conn);
/* Non-zero when commands may be sent. */
int engram__redis_conn_ready(const engram__redis_conn_t *conn);
/* Sends a formatted (RESP) command; fn runs exactly once, with a NULL reply if the connection dies. Returns 0,
 * ENGRAM_EUNAVAILABLE (not ready; fn will not run) or ENGRAM_ENOMEM. */
int engram__redis_conn_send(engram__redis_conn_t *conn, redisCallbackFn *fn, void *pd, const char *cmd, size_t len);

/* Writes the commands queued so far now, when the connection is ready, instead of on the loop's next turn: for a
 * sender that queues from a uv_prepare handle (the batched stores), after which the adapter's own one would run
 * only next turn (redis_uv.h). Loop thread; outside hiredis callbacks. */
void engram__redis_conn_flush(engram__redis_conn_t *conn);
/* The owner's ud of the connection a reply callback belongs to. */
void *engram__redis_conn_ud_of(const redisAsyncContext *ac);
/* Disconnects for good: pending callbacks run with NULL replies (possibly later, when called from inside a
 * hiredis callback), then on_closed. Frees the configuration. */
void engram__redis_conn_close(engram__redis_conn_t *conn);
/* "connected", "connecting", "reconnecting" or "closed". */
const char *engram__redis_conn_state_name(const engram__redis_conn_t *conn);

#endif
