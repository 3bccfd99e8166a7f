/*
 * redis_conn.c — the redis source's connection (see redis_conn.h): resolve → connect → handshake → ready, and
 * back to a backoff timer whenever an attempt fails or a ready connection is lost.
 *
 * hiredis 0.14 frees an async context by itself on any I/O error, running every pending reply callback with a
 * NULL reply and then the adapter's cleanup hook; the adapter turns that hook into on_gone, which is where this
 * file learns that the context is gone — one path for refused connects, EOF, CLIENT KILL, poll errors, connect
 * timeouts, handshake errors and close. Freeing is only ever requested with redisAsyncFree, which hiredis
 * defers by itself when called from inside a reply callback.
 */
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "engram/source.h"
#include "redis_conn.h"
#include "redis_uv.h"

enum { ST_IDLE = 0, ST_RESOLVING, ST_CONNECTING, ST_READY, ST_BACKOFF, ST_CLOSED };

enum { HS_AUTH = 0, HS_SELECT, HS_INFO, HS_SCRIPT0 };

typedef struct {
  uv_getaddrinfo_t req;
  engram__redis_conn_t *conn;
  int abandoned;
} gai_t;

static void attempt(engram__redis_conn_t *conn);

static void set_err(engram__redis_conn_t *conn, const char *fmt, const char *a, const char *b) {
  snprintf(conn->err, sizeof conn->err, fmt, a, b);
  conn->err_set = 1;
}

static void maybe_closed(engram__redis_conn_t *conn) {
  if (!conn->closing || conn->closed_reported || conn->timer_open || conn->polls_open > 0 ||
      conn->gai_outstanding > 0 || conn->ac != NULL)
    return;
  conn->closed_reported = 1;
  conn->state = ST_CLOSED;
  conn->cbs.on_closed(conn->ud);
}

static void on_timer_closed(uv_handle_t *h) {
  engram__redis_conn_t *conn = h->data;
  conn->timer_open = 0;
  maybe_closed(conn);
}

static void on_backoff(uv_timer_t *t) { attempt(t->data); }

/* After a failed attempt or a lost connection (no context left): tell the owner, then schedule the next try. */
static void went_down(engram__redis_conn_t *conn, int was_ready) {
  uv_timer_stop(&conn->timer);
  conn->state = ST_BACKOFF;
  conn->gai_current = NULL;
  if (conn->closing) {
    maybe_closed(conn);
    return;
  }
  conn->cbs.on_down(conn->ud, conn->err, was_ready);
  if (conn->closing) return; /* the owner closed it */
  uv_timer_start(&conn->timer, on_backoff, conn->backoff_ms, 0);
  conn->backoff_ms = conn->backoff_ms * 2 > conn->backoff_max_ms ? conn->backoff_max_ms : conn->backoff_ms * 2;
}

/* ---- Adapter callbacks ---- */

static void on_poll_error(redisAsyncContext *ac, int status, void *ud) {
  engram__redis_conn_t *conn = ud;
  int soerr = 0;
  socklen_t len = sizeof soerr;
  /* libuv reports a socket error (EPOLLERR: a refused connect, a reset) as UV_EBADF; the socket knows the
   * real cause ("Connection refused"), which is what a user should read. */
  if (ac->c.fd >= 0 && getsockopt(ac->c.fd, SOL_SOCKET, SO_ERROR, &soerr, &len) == 0 && soerr != 0)
    set_err(conn, "%s%s", strerror(soerr), "");
  else
    set_err(conn, "poll error: %s%s", uv_strerror(status), "");
  redisAsyncFree(ac);
}

static void on_gone(void *ud, const char *errstr) {
  engram__redis_conn_t *conn = ud;
  int was_ready = conn->state == ST_READY;
  conn->ac = NULL;
  if (!conn->err_set) {
    if (errstr[0] != '\0') set_err(conn, "%s%s", errstr, "");
    else set_err(conn, "%s%s", was_ready ? "connection closed" : "connection failed", "");
  }
  went_down(conn, was_ready);
}

static void on_poll_closed(void *ud) {
  engram__redis_conn_t *conn = ud;
  conn->polls_open--;
  maybe_closed(conn);
}

static const engram__redis_uv_cbs_t adapter_cbs = {on_poll_error, on_gone, on_poll_closed};

/* ---- Handshake ---- */

static const char *step_name(int step) {
  switch (step) {
    case HS_AUTH: return "AUTH";
    case HS_SELECT: return "SELECT";
    case HS_INFO: return "INFO";
    default: return "SCRIPT LOAD";
  }
}

static void on_handshake(redisAsyncContext *ac, void *r, void *pd) {
  engram__redis_conn_t *conn = ac->data;
  redisReply *reply = r;
  int step = (int)(intptr_t)pd;
  if (reply == NULL || conn->err_set || conn->state != ST_CONNECTING) return; /* dying: on_gone follows */
  if (reply->type == REDIS_REPLY_ERROR) {
    set_err(conn, "%s failed: %s", step_name(step), reply->str);
    redisAsyncFree(ac); /* deferred by hiredis until this callback returns */
    return;
  }
  if (step == HS_INFO && reply->type == REDIS_REPLY_STRING) {
    const char *v = strstr(reply->str, "redis_version:");
    if (v != NULL) {
      size_t n = strcspn(v + 14, "\r\n");
      if (n >= sizeof conn->server_version) n = sizeof conn->server_version - 1;
      memcpy(conn->server_version, v + 14, n);
      conn->server_version[n] = '\0';
    }
  } else if (step >= HS_SCRIPT0) {
    if (reply->type != REDIS_REPLY_STRING || reply->len != 40) {
      set_err(conn, "%s failed: %s", step_name(step), "unexpected reply");
      redisAsyncFree(ac);
      return;
    }
    memcpy(conn->sha[step - HS_SCRIPT0], reply->str, 40);
    conn->sha[step - HS_SCRIPT0][40] = '\0';
  }
  if (--conn->hs_pending > 0) return;
  uv_timer_stop(&conn->timer);
  conn->state = ST_READY;
  conn->connects++;
  conn->backoff_ms = conn->backoff_min_ms;
  conn->cbs.on_ready(conn->ud);
}

static int send_handshake(engram__redis_conn_t *conn) {
  redisAsyncContext *ac = conn->ac;
  char db[16];
  int i, rc = REDIS_OK;
  conn->hs_pending = 0;
  if (conn->password != NULL) {
    const char *argv[3] = {"AUTH", conn->username ? conn->username : conn->password, conn->password};
    rc |= redisAsyncCommandArgv(ac, on_handshake, (void *)(intptr_t)HS_AUTH, conn->username ? 3 : 2, argv, NULL);
    conn->hs_pending++;
  }
  if (conn->db != 0) {
    const char *argv[2] = {"SELECT", db};
    snprintf(db, sizeof db, "%d", conn->db);
    rc |= redisAsyncCommandArgv(ac, on_handshake, (void *)(intptr_t)HS_SELECT, 2, argv, NULL);
    conn->hs_pending++;
  }
  {
    const char *argv[2] = {"INFO", "server"};
    rc |= redisAsyncCommandArgv(ac, on_handshake, (void *)(intptr_t)HS_INFO, 2, argv, NULL);
    conn->hs_pending++;
  }
  for (i = 0; i < conn->n_scripts; i++) {
    const char *argv[3] = {"SCRIPT", "LOAD", conn->scripts[i]};
    rc |= redisAsyncCommandArgv(ac, on_handshake, (void *)(intptr_t)(HS_SCRIPT0 + i), 3, argv, NULL);
    conn->hs_pending++;
  }
  return rc == REDIS_OK ? 0 : ENGRAM_ENOMEM;
}

/* ---- Attempts ---- */

static void connect_to(engram__redis_conn_t *conn, const char *ip) {
  redisAsyncContext *ac = redisAsyncConnect(ip, conn->port);
  int rc;
  if (ac == NULL) {
    set_err(conn, "%s%s", "out of memory", "");
    conn->err_nomem = 1;
    went_down(conn, 0);
    return;
  }
  if (ac->err) {
    set_err(conn, "%s%s", ac->errstr, "");
    redisAsyncFree(ac); /* no adapter attached: nothing runs */
    went_down(conn, 0);
    return;
  }
  if ((rc = engram__redis_uv_attach(ac, conn->loop, &adapter_cbs, conn)) != 0) {
    set_err(conn, "%s%s", rc == ENGRAM_ENOMEM ? "out of memory" : "cannot poll the socket", "");
    conn->err_nomem = rc == ENGRAM_ENOMEM;
    redisAsyncFree(ac);
    went_down(conn, 0);
    return;
  }
  conn->polls_open++;
  conn->ac = ac;
  ac->data = conn;
  conn->state = ST_CONNECTING;
  /* The handshake is queued now and written as soon as the socket connects. */
  if (send_handshake(conn) != 0) {
    set_err(conn, "%s%s", "out of memory", "");
    conn->err_nomem = 1;
    redisAsyncFree(ac); /* on_gone reports it */
  }
}

static int is_numeric(const char *host) {
  unsigned char buf[sizeof(struct in6_addr)];
  return uv_inet_pton(AF_INET, host, buf) == 0 || uv_inet_pton(AF_INET6, host, buf) == 0;
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  gai_t *g = req->data;
  engram__redis_conn_t *conn = g->conn;
  char ip[64] = "";
  int abandoned = g->abandoned;
  conn->gai_outstanding--;
  if (conn->gai_current == g) conn->gai_current = NULL;
  engram_free(g);
  if (status == 0 && res != NULL) {
    /* IPv4 first: Redis listens on 127.0.0.1 by default while "localhost" often resolves to ::1 first. */
    const struct addrinfo *a, *pick = NULL;
    for (a = res; a != NULL && pick == NULL; a = a->ai_next)
      if (a->ai_family == AF_INET) pick = a;
    for (a = res; a != NULL && pick == NULL; a = a->ai_next)
      if (a->ai_family == AF_INET6) pick = a;
    if (pick != NULL && pick->ai_family == AF_INET6)
      uv_ip6_name((const struct sockaddr_in6 *)pick->ai_addr, ip, sizeof ip);
    else if (pick != NULL)
      uv_ip4_name((const struct sockaddr_in *)pick->ai_addr, ip, sizeof ip);
  }
  if (res != NULL) uv_freeaddrinfo(res);
  if (abandoned || conn->closing) {
    maybe_closed(conn);
    return;
  }
  if (status != 0 || ip[0] == '\0') {
    set_err(conn, "cannot resolve host name: %s%s", status != 0 ? uv_strerror(status) : "no address", "");
    went_down(conn, 0);
    return;
  }
  connect_to(conn, ip);
}

static void on_connect_timeout(uv_timer_t *t) {
  engram__redis_conn_t *conn = t->data;
  char ms[24];
  snprintf(ms, sizeof ms, "%u", (unsigned)conn->connect_timeout_ms);
  set_err(conn, "connect timeout after %s ms%s", ms, "");
  if (conn->state == ST_RESOLVING) {
    gai_t *g = conn->gai_current;
    if (g != NULL) {
      g->abandoned = 1;
      uv_cancel((uv_req_t *)&g->req); /* fails harmlessly when the lookup is already running */
    }
    went_down(conn, 0);
  } else if (conn->ac != NULL) {
    redisAsyncFree(conn->ac); /* on_gone reports it */
  }
}

static void attempt(engram__redis_conn_t *conn) {
  if (conn->closing) return;
  conn->attempts++;
  conn->err_set = 0;
  conn->err_nomem = 0;
  conn->err[0] = '\0';
  uv_timer_start(&conn->timer, on_connect_timeout, conn->connect_timeout_ms, 0);
  if (is_numeric(conn->host)) {
    connect_to(conn, conn->host);
  } else {
    struct addrinfo hints;
    gai_t *g = engram_calloc(1, sizeof *g);
    int rc;
    if (g == NULL) {
      set_err(conn, "%s%s", "out of memory", "");
    conn->err_nomem = 1;
      went_down(conn, 0);
      return;
    }
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    g->conn = conn;
    g->req.data = g;
    conn->state = ST_RESOLVING;
    if ((rc = uv_getaddrinfo(conn->loop, &g->req, on_resolved, conn->host, NULL, &hints)) != 0) {
      engram_free(g);
      set_err(conn, "cannot resolve host name: %s%s", uv_strerror(rc), "");
      went_down(conn, 0);
      return;
    }
    conn->gai_outstanding++;
    conn->gai_current = g;
  }
}

/* ---- Public ---- */

int engram__redis_conn_init(engram__redis_conn_t *conn, uv_loop_t *loop) {
  conn->loop = loop;
  conn->state = ST_IDLE;
  if (conn->backoff_min_ms == 0) conn->backoff_min_ms = 50;
  if (conn->backoff_max_ms < conn->backoff_min_ms) conn->backoff_max_ms = conn->backoff_min_ms;
  conn->backoff_ms = conn->backoff_min_ms;
  if (uv_timer_init(loop, &conn->timer) != 0) return ENGRAM_EBACKEND;
  conn->timer.data = conn;
  conn->timer_open = 1;
  return 0;
}

void engram__redis_conn_start(engram__redis_conn_t *conn) { attempt(conn); }

int engram__redis_conn_ready(const engram__redis_conn_t *conn) {
  return conn->state == ST_READY && conn->ac != NULL && !(conn->ac->c.flags & (REDIS_DISCONNECTING | REDIS_FREEING));
}

int engram__redis_conn_send(engram__redis_conn_t *conn, redisCallbackFn *fn, void *pd, const char *cmd, size_t len) {
  if (!engram__redis_conn_ready(conn)) return ENGRAM_EUNAVAILABLE;
  return redisAsyncFormattedCommand(conn->ac, fn, pd, cmd, len) == REDIS_OK ? 0 : ENGRAM_ENOMEM;
}

void engram__redis_conn_flush(engram__redis_conn_t *conn) {
  if (engram__redis_conn_ready(conn)) engram__redis_uv_flush(conn->ac);
}

void *engram__redis_conn_ud_of(const redisAsyncContext *ac) { return ((const engram__redis_conn_t *)ac->data)->ud; }

static void wipe_free(char *s) {
  if (s == NULL) return;
  memset(s, 0, strlen(s));
  engram_free(s);
}

void engram__redis_conn_close(engram__redis_conn_t *conn) {
  if (conn->closing) return;
  conn->closing = 1;
  if (conn->gai_current != NULL) {
    ((gai_t *)conn->gai_current)->abandoned = 1;
    uv_cancel((uv_req_t *)&((gai_t *)conn->gai_current)->req);
    conn->gai_current = NULL;
  }
  if (conn->timer_open) {
    uv_timer_stop(&conn->timer);
    uv_close((uv_handle_t *)&conn->timer, on_timer_closed);
  }
  engram_free(conn->host);
  conn->host = NULL;
  wipe_free(conn->username);
  conn->username = NULL;
  wipe_free(conn->password);
  conn->password = NULL;
  if (conn->ac != NULL) redisAsyncFree(conn->ac); /* possibly deferred; on_gone then sees closing */
  maybe_closed(conn);
}

const char *engram__redis_conn_state_name(const engram__redis_conn_t *conn) {
  switch (conn->state) {
    case ST_READY: return "connected";
    case ST_IDLE:
    case ST_RESOLVING:
    case ST_CONNECTING: return conn->connects == 0 ? "connecting" : "reconnecting";
    case ST_BACKOFF: return "reconnecting";
    default: return "closed";
  }
}
