/*
 * postgres_conn.c — the PostgreSQL source's connection pool (postgres_conn.h): libpq's asynchronous API on the
 * actor's loop. It uses only the ops (postgres_op.c) and the SQL texts and message scrubbing (postgres_sql.c);
 * whatever the source above must hear goes through the callbacks its owner gave (pg_pool_cbs_t).
 *
 * Connecting: PQconnectStartParams, then PQconnectPoll driven by a uv_poll on PQsocket, re-read after every
 * step because libpq may move to a new socket (another host of a list, an SSL fallback); the poll handle is
 * re-made when it does. A timer bounds connect + setup (connect_timeout_ms). Once connected the connection
 * goes non-blocking and into pipeline mode, and its setup segment runs: session settings, the schema DO
 * block, and a PQsendPrepare for every statement — before any call is sent. Then cbs.on_ready.
 *
 * Segments: calls queue ops here (engram__pgc_submit never calls back). Right before the loop polls (a uv_prepare:
 * in the loop turn of the calls that queued them, unless they came after that turn's prepare phase; a uv_idle cost
 * one more loop turn, an extra epoll_wait, per round trip) or as soon as the previous segment is done — before its
 * results are handed to the calls, so that the server is not idle while their callbacks run — every queued op (up
 * to SEG_MAX) is sent with one PQpipelineSync
 * after them, and PQflush runs; while it returns 1 the poll watches for writable as well as readable. Only one
 * segment is in flight per connection: the server runs a segment as one implicit transaction, so its results
 * are held until the Sync arrives (the commit is then confirmed) and only then handed to the calls. When a
 * statement fails, the server rolls the segment back and skips the rest (PGRES_PIPELINE_ABORTED): that op
 * fails alone (or is retried, for a deadlock or serialization failure) and every other op of the segment is
 * queued again at the front, so a failing statement never fails another call and never reorders them. Plain
 * stores queued one after another leave as one group statement (postgres_group.c); a group whose statement
 * failed is undone, its stores queued again one by one in its place.
 *
 * Faults: a broken connection (read or write error, poll error, CONNECTION_BAD) completes every op it held with
 * ENGRAM_EUNAVAILABLE, exactly once, tells cbs.on_down, and — once the owner called engram__pgc_connect_all —
 * reconnects after a backoff of 50 ms doubling up to reconnect_max_ms.
 *
 * After the pool's connections, conns[nconn] is a maintenance connection (postgres_gin.c used it until schema 2;
 * no method does now): the same code
 * drives it, but it is connected only when there is work for it, is not counted in health or info, and a
 * failure of it is not the pool's last_error and does not reconnect by itself.
 */
#include <stdio.h>
#include <string.h>

#include "postgres_conn.h"
#include "postgres_group.h"

#define SEG_MAX 512
#define TRIES_MAX 3

static void poll_cb(uv_poll_t *h, int status, int events);
static void timer_cb(uv_timer_t *t);
static void prep_cb(uv_prepare_t *h);
static void conn_down(pgc_t *c, const char *raw);
static void send_segment(pgc_t *c);

static const char *stmt_name(int stmt) {
  static const char *const names[] = {"engram_0",  "engram_1",  "engram_2",  "engram_3",  "engram_4",
                                      "engram_5",  "engram_6",  "engram_7",  "engram_8",  "engram_9",
                                      "engram_10", "engram_11", "engram_12", "engram_13", "engram_14",
                                      "engram_15", "engram_16", "engram_17", "engram_18", "engram_19",
                                      "engram_20", "engram_21", "engram_22", "engram_23",
                                      "engram_24", "engram_25", "engram_26", "engram_27",
                                      "engram_28", "engram_29", "engram_30"};
  _Static_assert(sizeof names / sizeof names[0] == PGS_N, "one name per prepared statement (postgres_sql.h)");
  return names[stmt];
}

/* ---- Handles ---- */

static void handle_closed(pg_pool_t *pool) {
  if (--pool->handles == 0 && pool->closing && !pool->closed_reported) {
    pool->closed_reported = 1;
    engram_free(pool->conns);
    pool->conns = NULL;
    pool->cbs.on_closed(pool->ud);
  }
}

static void timer_closed(uv_handle_t *h) { handle_closed(((pgc_t *)h->data)->pool); }
static void prep_closed(uv_handle_t *h) { handle_closed(h->data); }

typedef struct {
  pg_poll_t p;
  pg_pool_t *pool;
} poll_box_t;

static void poll_closed(uv_handle_t *h) {
  poll_box_t *b = h->data;
  pg_pool_t *pool = b->pool;
  engram_free(b);
  handle_closed(pool);
}

static void poll_close(pgc_t *c) {
  pg_poll_t *p = c->poll;
  if (p == NULL) return;
  uv_poll_stop(&p->h);
  p->c = NULL;
  uv_close((uv_handle_t *)&p->h, poll_closed);
  c->poll = NULL;
  c->fd = -1;
  c->events = 0;
}

/* Watches fd for events, re-making the poll handle when the socket changed. 0 or an error. */
static int watch(pgc_t *c, int fd, int events) {
  int rc;
  if (c->poll != NULL && c->fd != fd) poll_close(c);
  if (c->poll == NULL) {
    poll_box_t *b = engram_malloc(sizeof *b);
    if (b == NULL) return ENGRAM_ENOMEM;
    if ((rc = uv_poll_init(c->pool->loop, &b->p.h, fd)) != 0) {
      engram_free(b);
      return rc;
    }
    b->pool = c->pool;
    b->p.c = c;
    b->p.h.data = b;
    c->poll = &b->p;
    c->fd = fd;
    c->events = 0;
    c->pool->handles++;
  }
  if (events != c->events) {
    if ((rc = uv_poll_start(&c->poll->h, events, poll_cb)) != 0) return rc;
    c->events = events;
  }
  return 0;
}

int engram__pgc_init(pg_pool_t *pool) {
  int i;
  uv_prepare_init(pool->loop, &pool->prep);
  pool->prep.data = pool;
  pool->handles++;
  if ((pool->conns = engram_calloc((size_t)pool->nconn + 1, sizeof *pool->conns)) == NULL) return ENGRAM_ENOMEM;
  for (i = 0; i <= pool->nconn; i++) {
    pgc_t *c = &pool->conns[i];
    c->pool = pool;
    c->id = i;
    c->maint = i == pool->nconn;
    c->fd = -1;
    uv_timer_init(pool->loop, &c->timer);
    c->timer.data = c;
    pool->handles++;
  }
  return 0;
}

/* Work for the prepare handle: it runs right before the loop polls, in this loop turn when the turn has not
 * polled yet, else in the next one. Kicked while it runs, it goes round again before returning (a prepare
 * handle started from its own callback would wait for the poll, which may block). */
static void kick(pg_pool_t *pool) {
  if (pool->closing) return;
  if (pool->in_prep) {
    pool->kicked = 1;
  } else if (!pool->prep_on) {
    uv_prepare_start(&pool->prep, prep_cb);
    pool->prep_on = 1;
  }
}

/* ---- Queueing and picking ---- */

void engram__pgc_submit(pgc_t *c, pg_op_t *op) {
  op->next = NULL;
  if (c->q_tail) c->q_tail->next = op;
  else c->q_head = op;
  c->q_tail = op;
  c->q_n++;
  c->load++;
  kick(c->pool);
}

int engram__pgc_ready(const pgc_t *c) { return c->st == PGC_READY; }

void engram__pgc_retire(pgc_t *c) {
  if (c->conn == NULL || c->broken) return;
  snprintf(c->err, sizeof c->err, "connection no longer needed");
  c->broken = 1;
  kick(c->pool);
}

int engram__pgc_ready_count(const pg_pool_t *pool) {
  int i, n = 0;
  for (i = 0; i < pool->nconn; i++) n += pool->conns[i].st == PGC_READY;
  return n;
}

pgc_t *engram__pgc_maint(pg_pool_t *pool) { return pool->conns != NULL ? &pool->conns[pool->nconn] : NULL; }

static void update_health(pg_pool_t *pool) {
  int i, trying = 0;
  if (pool->closing) return;
  if (engram__pgc_ready_count(pool) > 0) {
    pool->cbs.on_health(pool->ud, ENGRAM_HEALTH_CONNECTED);
    return;
  }
  for (i = 0; i < pool->nconn; i++) trying |= pool->conns[i].failures < 3;
  pool->cbs.on_health(pool->ud, trying ? ENGRAM_HEALTH_RECONNECTING : ENGRAM_HEALTH_DOWN);
}

pgc_t *engram__pgc_pick(pg_pool_t *pool, const char *key, size_t key_len) {
  pgc_t *best = NULL;
  int i, n = pool->nconn;
  if (n == 1) return pool->conns[0].st == PGC_READY ? &pool->conns[0] : NULL;
  if (key != NULL) {
    /* One key, one connection: calls on a key keep their order across the pool. */
    uint32_t h = 2166136261u;
    size_t k;
    for (k = 0; k < key_len; k++) h = (h ^ (unsigned char)key[k]) * 16777619u;
    if (pool->conns[h % (uint32_t)n].st == PGC_READY) return &pool->conns[h % (uint32_t)n];
  }
  pool->rr++;
  for (i = 0; i < n; i++) {
    pgc_t *c = &pool->conns[(pool->rr + (unsigned)i) % (unsigned)n];
    if (c->st == PGC_READY && (best == NULL || c->load < best->load)) best = c;
  }
  return best;
}

/* ---- Sending ---- */

static void mark_broken(pgc_t *c, const char *what) {
  if (!c->broken) {
    char raw[400];
    snprintf(raw, sizeof raw, "%s: %s", what, c->conn ? PQerrorMessage(c->conn) : "no connection");
    engram__pg_scrub(c->err, sizeof c->err, raw, c->pool->password);
    c->broken = 1;
  }
  kick(c->pool);
}

static int send_op(pgc_t *c, pg_op_t *op) {
  switch (op->stmt) {
    case PGS_SQL: return PQsendQueryParams(c->conn, op->sql, op->nparams, NULL, op->values, NULL, NULL, 0);
    case PGS_PREPARE: return PQsendPrepare(c->conn, stmt_name((int)op->index), c->pool->sql->stmt[op->index], 0, NULL);
    default: return PQsendQueryPrepared(c->conn, stmt_name(op->stmt), op->nparams, op->values, NULL, NULL, 0);
  }
}

static void flush(pgc_t *c) {
  int r = PQflush(c->conn), rc;
  if (r < 0) {
    mark_broken(c, "sending");
    return;
  }
  c->want_write = r == 1;
  if ((rc = watch(c, PQsocket(c->conn), UV_READABLE | (c->want_write ? UV_WRITABLE : 0))) != 0) {
    snprintf(c->err, sizeof c->err, "cannot watch the socket: %s", rc == ENGRAM_ENOMEM ? "out of memory" : uv_strerror(rc));
    c->broken = 1;
    kick(c->pool);
  }
}

/* Sends the queued ops (the setup ones only, during setup) as one segment ended by a Sync. */
static void send_segment(pgc_t *c) {
  size_t n = 0;
  if (c->seg_open || c->broken || c->q_head == NULL) return;
  while (c->q_head != NULL && n < SEG_MAX) {
    pg_op_t *op = c->q_head;
    size_t taken;
    if (c->st == PGC_SETUP && !op->setup) break;
    if (op->merge && (op = engram__pg_group_take(&c->q_head, &taken)) != NULL) {
      /* a run of plain stores becomes one statement, in their place in the queue (postgres_group.c) */
      op->next = c->q_head;
      c->q_head = op;
      if (op->next == NULL) c->q_tail = op;
      c->q_n -= taken - 1;
      c->load -= taken - 1;
      c->pool->groups++;
      c->pool->grouped += taken;
    } else {
      op = c->q_head;
    }
    if (!send_op(c, op)) {
      mark_broken(c, "sending a statement");
      break;
    }
    c->q_head = op->next;
    if (c->q_head == NULL) c->q_tail = NULL;
    c->q_n--;
    op->next = NULL;
    op->got = 0;
    if (c->s_tail) c->s_tail->next = op;
    else c->s_head = op;
    c->s_tail = op;
    n++;
  }
  if (n == 0) return;
  c->seg_open = 1;
  c->await = c->s_head;
  c->seg_err = NULL;
  if (!PQpipelineSync(c->conn)) {
    mark_broken(c, "sending a sync");
    return;
  }
  flush(c);
}

/* Sends what is queued on c now, when no segment is in flight (else it leaves when that one is done), instead of
 * at the loop's prepare phase: for a caller that has work of its own to do while the server runs the statement. */
void engram__pgc_flush(pgc_t *c) {
  if (c->st == PGC_READY && c->conn != NULL && !c->seg_open && c->q_head != NULL) send_segment(c);
}

/* ---- Receiving ---- */

static int transient(const PGresult *res) {
  const char *st = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
  return st != NULL && (strcmp(st, "40P01") == 0 || strcmp(st, "40001") == 0);
}

static int timeout_state(const PGresult *res) {
  const char *st = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
  return st != NULL && strcmp(st, "57014") == 0;
}

static void setup_done(pg_op_t *op, int status, PGresult *res, const char *msg) {
  (void)status;
  (void)res;
  (void)msg;
  engram__pg_op_free(op);
}

/* The segment's Sync arrived: hand the results over, or fail the one statement that failed and queue the others
 * again in front of the queue. */
static void finish_segment(pgc_t *c) {
  pg_pool_t *pool = c->pool;
  pg_op_t *ops = c->s_head, *failed = c->seg_err, *op, *next, *rh = NULL, *rt = NULL;
  size_t nres = 0;
  char msg[400];
  c->s_head = c->s_tail = NULL;
  c->await = NULL;
  c->seg_err = NULL;
  c->seg_open = 0;
  if (failed != NULL && failed->setup) {
    engram__pg_result_error(failed->res, pool->password, msg, sizeof msg);
    c->setup_error = 1;
    for (op = ops; op != NULL; op = next) {
      next = op->next;
      c->load--;
      engram__pg_op_free(op);
    }
    conn_down(c, msg);
    return;
  }
  if (failed == NULL) {
    if (c->st == PGC_SETUP) {
      for (op = ops; op != NULL; op = next) {
        next = op->next;
        c->load--;
        engram__pg_op_free(op);
      }
      c->st = PGC_READY;
      c->failures = 0;
      c->backoff_ms = 0;
      uv_timer_stop(&c->timer);
      pool->server_version = PQserverVersion(c->conn);
      update_health(pool);
      pool->cbs.on_ready(pool->ud, c);
      return;
    }
    /* The next segment leaves before these results are handed over, so that the server works on it while
     * the calls' callbacks run (a call's follow-up statement then waits for the segment after). */
    if (c->q_head != NULL) send_segment(c);
    for (op = ops; op != NULL; op = next) {
      PGresult *res = op->res;
      next = op->next;
      op->res = NULL;
      c->load--;
      op->done(op, 0, res, NULL);
      PQclear(res);
    }
    return;
  }
  pool->statements_failed++;
  engram__pg_result_error(failed->res, pool->password, msg, sizeof msg);
  for (op = ops; op != NULL; op = next) {
    next = op->next;
    if (op == failed && op->members != NULL) {
      /* A group whose statement failed: its stores run again one by one, so that the one the server refuses fails
       * alone (and a transient failure is retried per store). */
      size_t k;
      pg_op_t *tail, *m = engram__pg_group_split(op, &tail, &k);
      c->load += k - 1;
      if (rt) rt->next = m;
      else rh = m;
      rt = tail;
      nres += k;
      continue;
    }
    if (op == failed && !(transient(op->res) && op->tries < TRIES_MAX)) {
      int status = timeout_state(op->res) ? ENGRAM_ETIMEDOUT : ENGRAM_EBACKEND;
      PQclear(op->res);
      op->res = NULL;
      c->load--;
      op->done(op, status, NULL, msg);
      continue;
    }
    if (op->res) PQclear(op->res);
    op->res = NULL;
    op->got = 0;
    op->next = NULL;
    if (op == failed) op->tries++;
    if (rt) rt->next = op;
    else rh = op;
    rt = op;
    nres++;
  }
  if (rh != NULL) {
    rt->next = c->q_head;
    c->q_head = rh;
    if (c->q_tail == NULL) c->q_tail = rt;
    c->q_n += nres;
    pool->resent += nres;
  }
}

static void read_results(pgc_t *c) {
  while (c->seg_open && c->conn != NULL && !PQisBusy(c->conn)) {
    PGresult *res = PQgetResult(c->conn);
    pg_op_t *op = c->await;
    if (op != NULL) {
      if (!op->got) {
        ExecStatusType st;
        if (res == NULL) break; /* not there yet */
        op->res = res;
        op->got = 1;
        st = PQresultStatus(res);
        if (st == PGRES_FATAL_ERROR || st == PGRES_PIPELINE_ABORTED) {
          if (PQstatus(c->conn) == CONNECTION_BAD) {
            conn_down(c, PQerrorMessage(c->conn));
            return;
          }
          if (c->seg_err == NULL) c->seg_err = op;
        }
      } else if (res != NULL) {
        PQclear(res); /* a second result for one statement: not expected, ignored */
      } else {
        c->await = op->next; /* the NULL that ends this statement's results */
      }
      continue;
    }
    if (res == NULL) break;
    if (PQresultStatus(res) == PGRES_PIPELINE_SYNC) {
      PQclear(res);
      finish_segment(c);
      if (c->st == PGC_DOWN) return; /* the setup failed */
      continue;
    }
    if (PQstatus(c->conn) == CONNECTION_BAD) {
      PQclear(res);
      conn_down(c, PQerrorMessage(c->conn));
      return;
    }
    PQclear(res);
  }
  if (c->conn != NULL && PQstatus(c->conn) == CONNECTION_BAD) {
    conn_down(c, PQerrorMessage(c->conn));
    return;
  }
  if (c->conn != NULL && !c->seg_open && c->q_head != NULL) send_segment(c);
}

/* ---- Connecting ---- */

static void connected(pgc_t *c) {
  const pg_sql_t *sql = c->pool->sql;
  pg_op_t *head = NULL, *tail = NULL, *op;
  int i, n = 0;
  if (PQsetnonblocking(c->conn, 1) != 0 || PQenterPipelineMode(c->conn) != 1) {
    conn_down(c, PQerrorMessage(c->conn));
    return;
  }
  c->st = PGC_SETUP;
  /* The session's statement timeout for the set-up (postgres_sql.h), the schema's DO block, the prepared
   * statements, then the calls' statement timeout. */
  for (i = -2; i <= PGS_N; i++) {
    op = engram__pg_op_new(NULL, i < 0 || i == PGS_N ? PGS_SQL : PGS_PREPARE, setup_done);
    if (op == NULL) {
      while ((op = head) != NULL) {
        head = op->next;
        engram__pg_op_free(op);
      }
      conn_down(c, "out of memory");
      return;
    }
    op->setup = 1;
    if (i == -2 || i == PGS_N) {
      op->sql = sql->setup;
      op->nparams = 1;
      op->values[0] = i == -2 ? sql->ddl_arg : sql->setup_arg;
    } else if (i == -1) {
      op->sql = sql->ddl;
    } else {
      op->index = (size_t)i;
    }
    if (tail) tail->next = op;
    else head = op;
    tail = op;
    n++;
  }
  tail->next = c->q_head;
  c->q_head = head;
  if (c->q_tail == NULL) c->q_tail = tail;
  c->q_n += (size_t)n;
  c->load += (size_t)n;
  send_segment(c);
  if (c->broken) conn_down(c, c->err);
}

static void connect_watch(pgc_t *c, PostgresPollingStatusType r) {
  int fd = PQsocket(c->conn), rc;
  if (fd < 0) {
    conn_down(c, "libpq has no socket");
    return;
  }
  /* libpq may have closed its socket and opened another (the next host of a list, an SSL fallback), and the new
   * one may even have the old number: watch afresh after every step. */
  poll_close(c);
  if ((rc = watch(c, fd, r == PGRES_POLLING_READING ? UV_READABLE : UV_WRITABLE)) != 0)
    conn_down(c, rc == ENGRAM_ENOMEM ? "out of memory" : uv_strerror(rc));
}

static void connect_step(pgc_t *c) {
  PostgresPollingStatusType r = PQconnectPoll(c->conn);
  if (r == PGRES_POLLING_OK) connected(c);
  else if (r == PGRES_POLLING_FAILED) conn_down(c, PQerrorMessage(c->conn));
  else connect_watch(c, r);
}

static void quiet(void *arg, const char *message) {
  (void)arg;
  (void)message;
}

void engram__pgc_connect(pgc_t *c) {
  pg_pool_t *pool = c->pool;
  if (pool->closing || c->st != PGC_DOWN) return;
  c->broken = 0;
  c->setup_error = 0;
  c->conn = PQconnectStartParams((const char *const *)pool->kw, (const char *const *)pool->val, 0);
  if (c->conn == NULL) {
    conn_down(c, "out of memory");
    return;
  }
  c->st = PGC_CONNECTING;
  PQsetNoticeProcessor(c->conn, quiet, NULL); /* a library does not write to stderr */
  if (PQstatus(c->conn) == CONNECTION_BAD) {
    conn_down(c, PQerrorMessage(c->conn));
    return;
  }
  uv_timer_start(&c->timer, timer_cb, pool->connect_timeout_ms, 0);
  connect_watch(c, PGRES_POLLING_WRITING); /* as if PQconnectPoll had returned WRITING */
}

void engram__pgc_connect_all(pg_pool_t *pool) {
  int i;
  pool->retry = 1;
  for (i = 0; i < pool->nconn; i++) engram__pgc_connect(&pool->conns[i]);
}

static void timer_cb(uv_timer_t *t) {
  pgc_t *c = t->data;
  if (c->st == PGC_DOWN) {
    engram__pgc_connect(c);
  } else if (c->st == PGC_CONNECTING || c->st == PGC_SETUP) {
    char m[96];
    snprintf(m, sizeof m, "no connection after %llu ms (connect_timeout_ms)", (unsigned long long)c->pool->connect_timeout_ms);
    conn_down(c, m);
  }
}

/* ---- Faults ---- */

/* Takes every op the connection holds, in order: the segment in flight, then the queue. */
static pg_op_t *take_all(pgc_t *c) {
  pg_op_t *head = c->s_head;
  if (c->s_tail) c->s_tail->next = c->q_head;
  else head = c->q_head;
  c->s_head = c->s_tail = c->q_head = c->q_tail = NULL;
  c->q_n = 0;
  c->load = 0;
  c->await = c->seg_err = NULL;
  c->seg_open = 0;
  return head;
}

static void fail_ops(pg_op_t *ops, int status, const char *msg) {
  pg_op_t *op, *next;
  for (op = ops; op != NULL; op = next) {
    next = op->next;
    if (op->res) {
      PQclear(op->res);
      op->res = NULL;
    }
    if (op->setup) engram__pg_op_free(op);
    else op->done(op, status, NULL, msg);
  }
}

static void conn_down(pgc_t *c, const char *raw) {
  pg_pool_t *pool = c->pool;
  char msg[sizeof c->err], body[sizeof c->err];
  pg_op_t *ops;
  int was_ready = c->st == PGC_READY;
  engram__pg_scrub(body, sizeof body, raw, pool->password);
  snprintf(msg, sizeof msg, "PostgreSQL at %.100s: %.200s", pool->where, body[0] ? body : "connection lost");
  memcpy(c->err, msg, sizeof msg);
  if (!c->maint) memcpy(pool->last_error, msg, sizeof msg);
  uv_timer_stop(&c->timer);
  poll_close(c);
  if (c->conn != NULL) {
    PQfinish(c->conn);
    c->conn = NULL;
  }
  ops = take_all(c);
  c->st = PGC_DOWN;
  c->broken = 0;
  c->failures++;
  if (was_ready && !c->maint) pool->reconnects++;
  update_health(pool);
  fail_ops(ops, ENGRAM_EUNAVAILABLE, msg);
  pool->cbs.on_down(pool->ud, c, msg);
  if (!pool->closing && pool->retry && c->st == PGC_DOWN && !c->maint) { /* maintenance: reconnected on demand */
    uint64_t d = was_ready || c->backoff_ms == 0 ? 50 : c->backoff_ms * 2;
    if (d > pool->reconnect_max_ms) d = pool->reconnect_max_ms;
    c->backoff_ms = d;
    uv_timer_start(&c->timer, timer_cb, d, 0);
  }
}

/* ---- The loop ---- */

static void poll_cb(uv_poll_t *h, int status, int events) {
  pg_poll_t *p = h->data;
  pgc_t *c = p->c;
  if (c == NULL || c->conn == NULL) return;
  if (status < 0) {
    /* libuv reports a socket error (POLLERR) as UV_EBADF and stops the handle: libpq says what happened. */
    char m[96];
    c->events = 0;
    if (c->st == PGC_CONNECTING) {
      connect_step(c);
      return;
    }
    if (!PQconsumeInput(c->conn)) {
      conn_down(c, PQerrorMessage(c->conn));
      return;
    }
    snprintf(m, sizeof m, "socket error: %s", uv_strerror(status));
    conn_down(c, m);
    return;
  }
  if (c->st == PGC_CONNECTING) {
    connect_step(c);
    return;
  }
  if (events & UV_WRITABLE) {
    flush(c);
    if (c->broken) {
      conn_down(c, c->err);
      return;
    }
  }
  if (events & UV_READABLE) {
    if (!PQconsumeInput(c->conn)) {
      conn_down(c, PQerrorMessage(c->conn));
      return;
    }
    read_results(c);
  }
}

static void prep_cb(uv_prepare_t *h) {
  pg_pool_t *pool = h->data;
  int i;
  uv_prepare_stop(&pool->prep);
  pool->prep_on = 0;
  pool->in_prep = 1;
  do {
    pool->kicked = 0;
    for (i = 0; i <= pool->nconn && !pool->closing; i++) {
      pgc_t *c = &pool->conns[i];
      if (c->broken && c->conn != NULL) {
        conn_down(c, c->err);
      } else if (c->st == PGC_DOWN && c->q_head != NULL) {
        /* Ops that reached a connection after it went down (a call's follow-up statement). */
        fail_ops(take_all(c), ENGRAM_EUNAVAILABLE, c->err[0] ? c->err : "PostgreSQL connection lost");
      } else if ((c->st == PGC_READY || c->st == PGC_SETUP) && !c->seg_open && c->q_head != NULL) {
        send_segment(c);
        if (c->broken) pool->kicked = 1;
      }
    }
  } while (pool->kicked && !pool->closing);
  pool->in_prep = 0;
}

/* ---- Close ---- */

void engram__pgc_shutdown(pg_pool_t *pool) {
  int i;
  pool->closing = 1;
  if (pool->prep_on) uv_prepare_stop(&pool->prep);
  pool->prep_on = 0;
  for (i = 0; pool->conns != NULL && i <= pool->nconn; i++) {
    pgc_t *c = &pool->conns[i];
    pg_op_t *ops;
    uv_timer_stop(&c->timer);
    poll_close(c);
    if (c->conn != NULL) {
      PQfinish(c->conn);
      c->conn = NULL;
    }
    ops = take_all(c);
    c->st = PGC_CLOSED;
    fail_ops(ops, ENGRAM_ECANCELED, "source closed");
    uv_close((uv_handle_t *)&c->timer, timer_closed);
  }
  uv_close((uv_handle_t *)&pool->prep, prep_closed);
}
