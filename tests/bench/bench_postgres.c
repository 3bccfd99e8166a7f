/*
 * bench_postgres.c — the postgres source next to raw libpq doing the same work against the same server (as the
 * pg_raw anchor: a JSONB document upserted by (namespace, key) with a prepared statement).
 *
 *  1. pipelined: engram store of N documents with 1,000 calls in flight, against raw libpq pipeline mode with
 *     one Sync per batch of 500 prepared upserts; then primary-key reads the same two ways;
 *  2. one at a time, for scale: engram with one call in flight against PQexecPrepared round trips (N/10 each);
 *  3. latency, against an asynchronous raw libpq client on the same loop (pipeline mode, non-blocking, one Sync
 *     per loop turn, results read from a uv_poll): (a) round trips, one call in flight, store against an upsert
 *     and retrieve against a read, $BENCH_PG_RT_N (5,000) each; (b) the open loop (benchlib's bl_open_loads):
 *     store against upserts under Poisson arrivals at 10, 50 and 80% of that raw client's closed-loop peak
 *     (measured first, 1,000 in flight), the same schedule for both, each call timed from its intended start;
 *  4. retrieve_many of 55 keys (a conversation window's read: 54 messages and the summary key), 1 call in
 *     flight, against the asynchronous raw client sending one prepared SELECT of the same rows and columns of the
 *     source's own table (engram_items): the statement the source sends (PGS_GET_MANY: the keys as one text[],
 *     a LATERAL primary-key probe per key; "key = ANY($2)" is no fair baseline: on this fresh table its generic
 *     plan filters the namespace's 2,255 rows, 1.8 ms) + Sync; the raw side parses no JSON. p50 of the round
 *     trip, $BENCH_PG_MANY_N (5,000) calls each, alternately in blocks of 100 so that both sides see the same
 *     load; the figure is the median of the blocks' p50s; then EXPLAIN (ANALYZE, BUFFERS) of the raw statement;
 *  5. known-item search quality and time on the Debian corpus (the source ranks with the core's BM25 in an index
 *     of its own, synced with the table by one statement per search), on the first $BENCH_PG_QUERIES (default
 *     200) queries of the fixed sample; the index's memory from the source's info (text_index_bytes: glibc's
 *     bytes in use, before and after its build).
 * The server is a fresh PostgreSQL 15 (tests/support/pg_server.c: initdb in a temporary directory, a free
 * loopback port), stopped and removed at exit. N defaults to 50,000 ($BENCH_PG_N); $BENCH_LOADS and
 * $BENCH_LATENCY_S shape (3b).
 */
#include <libpq-fe.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/benchlib.h"
#include "support/pg_server.h"

#define WINDOW 1000
#define BATCH 500

static long N;

/* ---- Raw libpq ---- */

typedef struct {
  PGconn *c;
} raw_t;

static void must(PGconn *c, PGresult *r) {
  ExecStatusType s = PQresultStatus(r);
  if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK) bl_die("libpq: %s", PQerrorMessage(c));
  PQclear(r);
}

static void raw_open(raw_t *r) {
  memset(r, 0, sizeof *r);
  r->c = PQconnectdb(pg_server_conninfo());
  if (PQstatus(r->c) != CONNECTION_OK) bl_die("libpq connect: %s", PQerrorMessage(r->c));
  must(r->c, PQexec(r->c, "DROP TABLE IF EXISTS anchor_kv"));
  must(r->c, PQexec(r->c, "CREATE TABLE anchor_kv(ns text, key text, value jsonb, PRIMARY KEY(ns, key))"));
  must(r->c, PQprepare(r->c, "up", "INSERT INTO anchor_kv(ns, key, value) VALUES($1, $2, $3::jsonb) "
                                   "ON CONFLICT (ns, key) DO UPDATE SET value = EXCLUDED.value", 3, NULL));
  must(r->c, PQprepare(r->c, "get", "SELECT value FROM anchor_kv WHERE ns = $1 AND key = $2", 2, NULL));
}

static void fill(char *key, size_t kn, char *val, size_t vn, const char *prefix, long i) {
  snprintf(key, kn, "%s%ld", prefix, i);
  snprintf(val, vn, "{\"text\":\"memory number %ld for the anchor benchmark\",\"i\":%ld}", i, i);
}

static void pipe_collect(raw_t *r, long m);

/* The diagnostic: raw libpq pipeline mode with the source's own schema (a GIN-indexed tsvector column, jsonb
 * value and metadata, timestamps and a version; copied from sources/postgres_sql.c) and its upsert statement,
 * the tsvector sent as a literal as the source does. When this runs as slowly as engram, the gap to the plain
 * anchor is the server's work for that schema, not the client. */
static double raw_pipe_engram_schema(raw_t *r, long n) {
  char key[64], val[256], now[32];
  const char *p[6] = {"bench", key, val, "{}", now, NULL};
  double t;
  long i, j;
  must(r->c, PQexec(r->c, "DROP TABLE IF EXISTS diag_items"));
  /* The source's schema version 2 (sources/postgres/postgres_sql.c): chg and its index, the triggers on UPDATE
   * (not fired by this statement: it sets chg) and DELETE (none here); no text column. */
  must(r->c, PQexec(r->c, "CREATE TABLE diag_items (namespace text COLLATE \"C\" NOT NULL DEFAULT '', key text COLLATE"
                          " \"C\" NOT NULL, value jsonb NOT NULL, metadata jsonb, created_at bigint NOT NULL, updated_at"
                          " bigint NOT NULL, expires_at bigint, version bigint NOT NULL DEFAULT 1,"
                          " chg bigint NOT NULL DEFAULT txid_current(), PRIMARY KEY (namespace, key));"
                          "CREATE INDEX ON diag_items (chg);"
                          "CREATE INDEX ON diag_items (expires_at) WHERE expires_at IS NOT NULL"));
  must(r->c, PQprepare(r->c, "dup",
                       "INSERT INTO diag_items AS t (namespace, key, value, metadata, created_at, updated_at, expires_at,"
                       " version, chg) VALUES ($1, $2, $3::jsonb, $4::jsonb, $5, $5, $6, 1, txid_current())"
                       " ON CONFLICT (namespace, key) DO UPDATE SET value = EXCLUDED.value, metadata = EXCLUDED.metadata,"
                       " created_at = CASE WHEN t.expires_at IS NOT NULL AND t.expires_at <= EXCLUDED.updated_at THEN"
                       " EXCLUDED.created_at ELSE t.created_at END, updated_at = EXCLUDED.updated_at, expires_at ="
                       " EXCLUDED.expires_at, version = CASE WHEN t.expires_at IS NOT NULL AND t.expires_at <="
                       " EXCLUDED.updated_at THEN 1 ELSE t.version + 1 END, chg = EXCLUDED.chg"
                       " RETURNING version, created_at", 6, NULL));
  snprintf(now, sizeof now, "%lld", (long long)engram_now_ms());
  if (PQenterPipelineMode(r->c) != 1) bl_die("libpq: no pipeline mode");
  t = bl_now();
  for (i = 0; i < n; i += BATCH) {
    long m = n - i < BATCH ? n - i : BATCH;
    for (j = 0; j < m; j++) {
      fill(key, sizeof key, val, sizeof val, "d", i + j);
      if (!PQsendQueryPrepared(r->c, "dup", 6, p, NULL, NULL, 0)) bl_die("libpq: %s", PQerrorMessage(r->c));
    }
    PQpipelineSync(r->c);
    pipe_collect(r, m);
  }
  t = bl_now() - t;
  PQexitPipelineMode(r->c);
  must(r->c, PQexec(r->c, "DROP TABLE diag_items"));
  return (double)n / t;
}

/* One at a time: n upserts (or reads) as PQexecPrepared round trips; returns ops/s. */
static double raw_seq(raw_t *r, long n, int get) {
  char key[64], val[256];
  const char *p[3] = {"bench", key, val};
  double t = bl_now();
  long i;
  for (i = 0; i < n; i++) {
    fill(key, sizeof key, val, sizeof val, "s", i);
    must(r->c, PQexecPrepared(r->c, get ? "get" : "up", get ? 2 : 3, p, NULL, NULL, 0));
  }
  return (double)n / (bl_now() - t);
}

/* Reads the results of m queries and the Sync that follows them. */
static void pipe_collect(raw_t *r, long m) {
  PGresult *res;
  long j;
  for (j = 0; j < m; j++) {
    must(r->c, PQgetResult(r->c));
    if ((res = PQgetResult(r->c)) != NULL) bl_die("libpq: expected the end of a result");
  }
  res = PQgetResult(r->c);
  if (PQresultStatus(res) != PGRES_PIPELINE_SYNC) bl_die("libpq: no pipeline sync");
  PQclear(res);
}

/* Pipeline mode, one Sync per batch of BATCH; returns ops/s. */
static double raw_pipe(raw_t *r, long n, int get) {
  char key[64], val[256];
  const char *p[3] = {"bench", key, val};
  double t;
  long i, j;
  if (PQenterPipelineMode(r->c) != 1) bl_die("libpq: no pipeline mode");
  t = bl_now();
  for (i = 0; i < n; i += BATCH) {
    long m = n - i < BATCH ? n - i : BATCH;
    for (j = 0; j < m; j++) {
      fill(key, sizeof key, val, sizeof val, "p", i + j);
      if (!PQsendQueryPrepared(r->c, get ? "get" : "up", get ? 2 : 3, p, NULL, NULL, 0))
        bl_die("libpq: %s", PQerrorMessage(r->c));
    }
    PQpipelineSync(r->c);
    pipe_collect(r, m);
  }
  t = bl_now() - t;
  PQexitPipelineMode(r->c);
  return (double)n / t;
}

/* ---- Raw libpq, asynchronous: the client the latency runs drive ----
 * Pipeline mode in non-blocking mode on the loop: a call sends its prepared statement at once; the queries of a
 * loop turn are closed by one Sync from a uv_prepare handle (as engram's postgres source sends a segment per turn);
 * a uv_poll on the socket reads the results and completes the calls in order. One call in flight = one
 * statement + Sync per round trip. */

typedef struct {
  raw_t r;
  uv_poll_t poll;
  uv_prepare_t prep;
  int prep_on, want_write, await_null, get; /* get: 0 upsert, 1 read, 2 the 55-key read (section 4), 3 the
                                             * source's own upsert into its table (section 3a) */
  const char *many_keys;                     /* get 2: the keys as a text[] literal */
  const char *prefix;
  void **fifo; /* tokens of the statements sent, oldest first (a ring) */
  long cap, head, count, unsynced;
} araw_t;

static void araw_events(araw_t *a);

static void araw_push(araw_t *a, void *token) {
  if (a->count == a->cap) {
    long i, ncap = a->cap ? a->cap * 2 : 4096;
    void **f = malloc((size_t)ncap * sizeof *f);
    if (f == NULL) bl_die("out of memory");
    for (i = 0; i < a->count; i++) f[i] = a->fifo[(a->head + i) % a->cap];
    free(a->fifo);
    a->fifo = f, a->cap = ncap, a->head = 0;
  }
  a->fifo[(a->head + a->count++) % a->cap] = token;
}

static void *araw_pop(araw_t *a) {
  void *t;
  if (a->count == 0) bl_die("libpq: a result with no call waiting for it");
  t = a->fifo[a->head];
  a->head = (a->head + 1) % a->cap;
  a->count--;
  return t;
}

static void araw_flush(araw_t *a) {
  int rc = PQflush(a->r.c), want = rc == 1;
  if (rc < 0) bl_die("libpq flush: %s", PQerrorMessage(a->r.c));
  if (want != a->want_write) {
    a->want_write = want;
    araw_events(a);
  }
}

static void araw_read(araw_t *a) {
  if (!PQconsumeInput(a->r.c)) bl_die("libpq: %s", PQerrorMessage(a->r.c));
  while (!PQisBusy(a->r.c)) {
    PGresult *res = PQgetResult(a->r.c);
    ExecStatusType st;
    if (res == NULL) {
      if (!a->await_null) break; /* nothing more has arrived */
      a->await_null = 0;         /* the end of one statement's results */
      continue;
    }
    st = PQresultStatus(res);
    if (st == PGRES_PIPELINE_SYNC) {
      PQclear(res);
      continue;
    }
    a->await_null = 1;
    if (a->get == 2 && st == PGRES_TUPLES_OK && PQntuples(res) != 55) bl_complete(araw_pop(a), -1, "raw: rows missing");
    else if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) bl_complete(araw_pop(a), 0, NULL);
    else bl_complete(araw_pop(a), -1, st == PGRES_PIPELINE_ABORTED ? "pipeline aborted" : PQresultErrorMessage(res));
    PQclear(res);
  }
}

static void araw_on_poll(uv_poll_t *h, int status, int events) {
  araw_t *a = h->data;
  if (status < 0) bl_die("libpq socket: %s", uv_strerror(status));
  if (events & UV_WRITABLE) araw_flush(a);
  if (events & UV_READABLE) araw_read(a);
}

static void araw_events(araw_t *a) { uv_poll_start(&a->poll, UV_READABLE | (a->want_write ? UV_WRITABLE : 0), araw_on_poll); }

static void araw_on_prep(uv_prepare_t *h) {
  araw_t *a = h->data;
  uv_prepare_stop(h);
  a->prep_on = 0;
  if (a->unsynced == 0) return;
  if (!PQpipelineSync(a->r.c)) bl_die("libpq sync: %s", PQerrorMessage(a->r.c));
  a->unsynced = 0;
  araw_flush(a);
}

static int araw_submit(bl_drv_t *d, long i, void *token) {
  araw_t *a = d->ctx;
  char key[64], val[256];
  const char *p[3] = {"bench", key, val};
  fill(key, sizeof key, val, sizeof val, a->prefix, i);
  if (a->get == 2) {
    p[0] = "";
    p[1] = a->many_keys;
    if (!PQsendQueryPrepared(a->r.c, "many", 2, p, NULL, NULL, 0)) bl_die("libpq: %s", PQerrorMessage(a->r.c));
  } else if (a->get == 3) { /* the source's own upsert (PGS_STORE) into its table */
    char now[24];
    const char *q[6] = {"", key, val, NULL, now, NULL};
    snprintf(now, sizeof now, "%lld", (long long)engram_now_ms());
    if (!PQsendQueryPrepared(a->r.c, "srcup", 6, q, NULL, NULL, 0)) bl_die("libpq: %s", PQerrorMessage(a->r.c));
  } else if (!PQsendQueryPrepared(a->r.c, a->get ? "get" : "up", a->get ? 2 : 3, p, NULL, NULL, 0))
    bl_die("libpq: %s", PQerrorMessage(a->r.c));
  araw_push(a, token);
  a->unsynced++;
  if (!a->prep_on) {
    uv_prepare_start(&a->prep, araw_on_prep);
    a->prep_on = 1;
  }
  return 0;
}

/* The round trips' raw sides (bl_round_trips runs them in turns, one call in flight): an upsert into the anchor's
 * table, the source's own upsert into its table, and a read of the keys the first one wrote. */
static int araw_submit_upsert(bl_drv_t *d, long i, void *token) {
  araw_t *a = d->ctx;
  a->get = 0;
  a->prefix = "rawrt";
  return araw_submit(d, i, token);
}
static int araw_submit_source_upsert(bl_drv_t *d, long i, void *token) {
  araw_t *a = d->ctx;
  a->get = 3;
  a->prefix = "rawsrc";
  return araw_submit(d, i, token);
}
static int araw_submit_read(bl_drv_t *d, long i, void *token) {
  araw_t *a = d->ctx;
  a->get = 1;
  a->prefix = "rawrt";
  return araw_submit(d, i, token);
}

static void araw_open(araw_t *a, uv_loop_t *loop) {
  memset(a, 0, sizeof *a);
  raw_open(&a->r);
  if (PQsetnonblocking(a->r.c, 1) != 0 || PQenterPipelineMode(a->r.c) != 1) bl_die("libpq: no pipeline mode");
  uv_poll_init(loop, &a->poll, PQsocket(a->r.c));
  uv_prepare_init(loop, &a->prep);
  a->poll.data = a->prep.data = a;
  araw_events(a);
}

static void araw_close(araw_t *a, uv_loop_t *loop) {
  uv_close((uv_handle_t *)&a->poll, NULL);
  uv_close((uv_handle_t *)&a->prep, NULL);
  uv_run(loop, UV_RUN_NOWAIT);
  PQfinish(a->r.c);
  free(a->fifo);
}

/* ---- engram ---- */

typedef struct {
  engram_manager_t *mgr;
  const char *prefix;
} ectx_t;

static int submit_store(bl_drv_t *d, long i, void *token) {
  ectx_t *c = d->ctx;
  char key[64], text[128];
  cJSON *v = cJSON_CreateObject();
  int rc;
  snprintf(key, sizeof key, "%s%ld", c->prefix, i);
  snprintf(text, sizeof text, "memory number %ld for the anchor benchmark", i);
  if (v == NULL || !cJSON_AddStringToObject(v, "text", text) || !cJSON_AddNumberToObject(v, "i", (double)i))
    bl_die("out of memory");
  rc = engram_store(c->mgr, key, v, NULL, bl_engram_cb, token);
  cJSON_Delete(v);
  return rc;
}

static int submit_retrieve(bl_drv_t *d, long i, void *token) {
  ectx_t *c = d->ctx;
  char key[64];
  snprintf(key, sizeof key, "%s%ld", c->prefix, i);
  return engram_retrieve(c->mgr, key, NULL, bl_engram_cb, token);
}

/* ---- retrieve_many of 55 keys against one SELECT of the same rows ---- */

#define MANY 55

typedef struct {
  engram_manager_t *mgr;
  char keys[MANY][32];
  const char *kp[MANY];
} many_t;

static void many_engram_cb(int status, const engram_reply_t *reply, void *ud) {
  size_t k;
  if (status == 0 && reply->n_items != MANY) status = -1;
  for (k = 0; status == 0 && k < reply->n_items; k++)
    if (reply->items[k].status != 0 || reply->items[k].value == NULL) status = -1;
  bl_complete(ud, status, status ? "retrieve_many: an item missing" : NULL);
}

static int many_engram_submit(bl_drv_t *d, long i, void *token) {
  many_t *m = d->ctx;
  (void)i;
  return engram_retrieve_many(m->mgr, m->kp, MANY, NULL, many_engram_cb, token);
}

typedef struct {
  const char *key;
  const cJSON *value;
} many_store_t;

static int many_store(engram_manager_t *mgr, void *arg, engram_cb cb, void *ud) {
  many_store_t *a = arg;
  return engram_store(mgr, a->key, a->value, NULL, cb, ud);
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Stores the 55 items (a thread message's shape) in the source's table, then times both sides alternately. */
static void bench_many(engram_manager_t *mgr, uv_loop_t *loop) {
  static many_t m;
  araw_t a;
  bl_drv_t d;
  bl_lat_t e, r;
  long n = bl_env_long("BENCH_PG_MANY_N", bl_scaled(5000)), done;
  double eng_sum[3] = {0}, raw_sum[3] = {0}, *ep50, *rp50;
  char lit[MANY * 34 + 4];
  size_t used = 0;
  int k, blocks = 0;
  memset(&m, 0, sizeof m);
  m.mgr = mgr;
  lit[used++] = '{';
  for (k = 0; k < MANY; k++) {
    cJSON *v = cJSON_CreateObject();
    many_store_t s;
    snprintf(m.keys[k], sizeof m.keys[k], "many:%d", k);
    m.kp[k] = m.keys[k];
    used += (size_t)snprintf(lit + used, sizeof lit - used, "%s\"%s\"", k ? "," : "", m.keys[k]);
    cJSON_AddNumberToObject(v, "seq", 9946 + k);
    cJSON_AddStringToObject(v, "role", k % 2 ? "assistant" : "user");
    cJSON_AddStringToObject(v, "content", "We moved it to Saturday morning, after the database backup.");
    cJSON_AddNumberToObject(v, "created_at_ms", 1765000000000.0 + k);
    s.key = m.keys[k];
    s.value = v;
    if (bl_sync(mgr, loop, many_store, &s) != 0) bl_die("storing the retrieve_many items failed");
    cJSON_Delete(v);
  }
  snprintf(lit + used, sizeof lit - used, "}");
  araw_open(&a, loop);
  a.get = 2;
  a.many_keys = lit;
  {
    PGresult *res;
    /* prepared outside the pipeline's flow: leave pipeline mode for it */
    PQsetnonblocking(a.r.c, 0);
    PQexitPipelineMode(a.r.c);
    res = PQprepare(a.r.c, "many", "SELECT u.ord, t.* FROM unnest($2::text[]) WITH ORDINALITY AS u(k, ord) CROSS JOIN "
                                   "LATERAL (SELECT value, metadata, created_at, updated_at, expires_at, version FROM "
                                   "engram_items WHERE namespace = $1 AND key = u.k AND (expires_at IS NULL OR "
                                   "expires_at > 0) LIMIT 1) t", 2, NULL);
    must(a.r.c, res);
    if (PQsetnonblocking(a.r.c, 1) != 0 || PQenterPipelineMode(a.r.c) != 1) bl_die("libpq: no pipeline mode");
  }
  ep50 = calloc((size_t)(n / 100 + 2), sizeof *ep50);
  rp50 = calloc((size_t)(n / 100 + 2), sizeof *rp50);
  if (ep50 == NULL || rp50 == NULL) bl_die("out of memory");
  for (done = 0; done < n; done += 100, blocks++) {
    long b = n - done < 100 ? n - done : 100;
    e = bl_round_trip(&d, loop, many_engram_submit, &m, b);
    bl_check(&d, "engram retrieve_many of 55");
    r = bl_round_trip(&d, loop, araw_submit, &a, b);
    bl_check(&d, "raw SELECT of 55 keys");
    ep50[blocks] = e.p50_us;
    rp50[blocks] = r.p50_us;
    eng_sum[0] += e.p50_us, eng_sum[1] += e.p99_us, eng_sum[2] += e.mean_us;
    raw_sum[0] += r.p50_us, raw_sum[1] += r.p99_us, raw_sum[2] += r.mean_us;
  }
  PQsetnonblocking(a.r.c, 0);
  PQexitPipelineMode(a.r.c);
  {
    char sql[sizeof lit + 80];
    PGresult *res;
    int row;
    snprintf(sql, sizeof sql, "EXPLAIN (ANALYZE, BUFFERS) EXECUTE many('', '%s')", lit);
    res = PQexec(a.r.c, sql);
    for (row = 0; row < PQntuples(res); row++) bl_note("raw plan: %s", PQgetvalue(res, row, 0));
    if (PQresultStatus(res) != PGRES_TUPLES_OK) bl_note("EXPLAIN: %s", PQerrorMessage(a.r.c));
    PQclear(res);
  }
  araw_close(&a, loop);
  qsort(ep50, (size_t)blocks, sizeof *ep50, cmp_double);
  qsort(rp50, (size_t)blocks, sizeof *rp50, cmp_double);
  bl_note("%ld calls each in %d alternating blocks of 100: p50 per block engram %.1f-%.1f us, raw %.1f-%.1f us; "
          "mean over blocks: p50 %.1f / %.1f us, p99 %.1f / %.1f us, mean %.1f / %.1f us (engram / raw)", n, blocks,
          ep50[0], ep50[blocks - 1], rp50[0], rp50[blocks - 1], eng_sum[0] / blocks, raw_sum[0] / blocks,
          eng_sum[1] / blocks, raw_sum[1] / blocks, eng_sum[2] / blocks, raw_sum[2] / blocks);
  bl_result("postgres", "retrieve_many of 55 keys, 1 in flight, p50 vs raw (one SELECT of the 55; target <= 1.3)",
            ep50[blocks / 2], rp50[blocks / 2], "us");
  free(ep50);
  free(rp50);
}

static void cleared_cb(int status, const engram_reply_t *reply, void *ud) {
  (void)reply;
  if (status != 0) bl_die("clear: %s", engram_err_name(status));
  *(int *)ud = 1;
}

/* Empties the source, so that the corpus's namespace holds the corpus alone (the sections before leave their
 * items there, which would change BM25's statistics and the known-item figures). */
static void clear_source(engram_manager_t *mgr, uv_loop_t *loop) {
  engram_opts_t o;
  int done = 0;
  memset(&o, 0, sizeof o);
  o.flags = ENGRAM_OPT_CONFIRM;
  if (engram_clear(mgr, &o, cleared_cb, &done) != 0) bl_die("engram_clear refused");
  while (!done) uv_run(loop, UV_RUN_ONCE);
}

static void info_cb(int status, const engram_reply_t *reply, void *ud) {
  cJSON **out = ud;
  const cJSON *info = status == 0 && reply != NULL ? reply->info : NULL;
  *out = info != NULL ? cJSON_Duplicate(info, 1) : cJSON_CreateNull();
}

/* The text index's size from the source's info: items and bytes (bytes per item). */
static void text_index_memory(engram_manager_t *mgr, uv_loop_t *loop) {
  engram_opts_t o;
  cJSON *info = NULL;
  const cJSON *items, *bytes;
  memset(&o, 0, sizeof o);
  o.source = "postgres";
  if (engram_info(mgr, &o, info_cb, &info) != 0) bl_die("engram_info refused");
  while (info == NULL) uv_run(loop, UV_RUN_ONCE);
  items = cJSON_GetObjectItem(info, "text_index_items");
  bytes = cJSON_GetObjectItem(info, "text_index_bytes");
  if (cJSON_IsNumber(items) && cJSON_IsNumber(bytes) && items->valuedouble > 0)
    bl_note("text index: %.0f items, %.1f MB, %.0f bytes per item", items->valuedouble, bytes->valuedouble / 1e6,
            bytes->valuedouble / items->valuedouble);
  cJSON_Delete(info);
}

int main(void) {
  uv_loop_t loop;
  bl_drv_t d;
  ectx_t c;
  raw_t r;
  char opts[512];
  double ew, er, es, esr, rw = -1, rr = -1, rs = -1, rsr = -1, rd = -1, cpu[4] = {0, 0, 0, 0}, c0;
  int raw_too = getenv("BENCH_ENGRAM_ONLY") == NULL;
  N = bl_env_long("BENCH_PG_N", bl_scaled(50000));
  if (pg_server_start() != 0) bl_die("could not start PostgreSQL");
  uv_loop_init(&loop);
  memset(&c, 0, sizeof c);
  c.mgr = bl_manager(&loop);
  snprintf(opts, sizeof opts, "{\"conninfo\": \"%s\"}", pg_server_conninfo());
  bl_add_source(c.mgr, &loop, "postgres", &engram_source_postgres, opts);

  bl_section("postgres vs raw libpq (same server; JSONB upserts and primary-key reads)");
  bl_note("N = %ld; engram: %d calls in flight on one connection; raw: pipeline mode, one Sync per %d", N, WINDOW,
          BATCH);
  if (raw_too) {
    raw_open(&r);
    c0 = bl_cpu_s();
    rw = raw_pipe(&r, N, 0);
    cpu[2] = (bl_cpu_s() - c0) / (double)N * 1e6;
    c0 = bl_cpu_s();
    rr = raw_pipe(&r, N, 1);
    cpu[3] = (bl_cpu_s() - c0) / (double)N * 1e6;
    rs = raw_seq(&r, N / 10, 0);
    rsr = raw_seq(&r, N / 10, 1);
    rd = raw_pipe_engram_schema(&r, N);
    PQfinish(r.c);
  }
  c.prefix = "p";
  ew = bl_closed_loop(&d, &loop, submit_store, &c, N, WINDOW);
  bl_check(&d, "engram postgres store");
  cpu[0] = d.cpu_us;
  er = bl_closed_loop(&d, &loop, submit_retrieve, &c, N, WINDOW);
  bl_check(&d, "engram postgres retrieve");
  cpu[1] = d.cpu_us;
  c.prefix = "s";
  es = bl_closed_loop(&d, &loop, submit_store, &c, N / 10, 1);
  bl_check(&d, "engram postgres store, one at a time");
  esr = bl_closed_loop(&d, &loop, submit_retrieve, &c, N / 10, 1);
  bl_check(&d, "engram postgres retrieve, one at a time");
  bl_note("client CPU per call (this process), pipelined: engram store %.2f us, retrieve %.2f us; raw upsert %.2f us,"
          " read %.2f us", cpu[0], cpu[1], cpu[2], cpu[3]);
  bl_result("postgres", "upserts/s, pipelined", ew, rw, "ops/s");
  if (rd > 0) bl_result("postgres", "upserts/s, pipelined (raw: the source's schema+SQL)", ew, rd, "ops/s");
  bl_result("postgres", "primary-key reads/s, pipelined", er, rr, "ops/s");
  bl_result("postgres", "upserts/s, one at a time", es, rs, "ops/s");
  bl_result("postgres", "primary-key reads/s, one at a time", esr, rsr, "ops/s");

  if (bl_want("latency")) {
    bl_open_spec_t sp;
    araw_t a;
    double peak;
    long n_rt = bl_env_long("BENCH_PG_RT_N", bl_scaled(5000));
    bl_section("postgres latency: round trips, and open-loop Poisson arrivals at fractions of raw libpq's peak");
    araw_open(&a, &loop);
    /* The raw client's saturation: the asynchronous client in the closed loop, 1,000 in flight. */
    a.prefix = "peak";
    peak = bl_closed_loop(&d, &loop, araw_submit, &a, N, WINDOW);
    bl_check(&d, "raw async upserts (peak)");
    /* One call in flight, the sides in alternating blocks (bl_round_trips): engram's store against an upsert into
     * the anchor's table and against the source's own upsert statement (PGS_STORE, sources/postgres/postgres_sql.c)
     * into its own table — the same server work — sent by the raw client; then retrieve of the same keys against a
     * read. */
    {
      PGresult *res;
      bl_rt_side_t rt[3] = {{.submit = submit_store, .ctx = &c, .what = "engram store, one in flight", .on = 1},
                            {.submit = araw_submit_upsert, .ctx = &a, .what = "raw upsert, one in flight", .on = 1},
                            {.submit = araw_submit_source_upsert, .ctx = &a, .what = "raw source upsert, one in flight", .on = 1}};
      PQsetnonblocking(a.r.c, 0);
      PQexitPipelineMode(a.r.c);
      res = PQprepare(a.r.c, "srcup",
                      "INSERT INTO \"public\".\"engram_items\" AS t (namespace, key, value, metadata, created_at, updated_at,"
                      " expires_at, version, chg) VALUES ($1, $2, $3::jsonb, $4::jsonb, $5, $5, $6, 1, txid_current()) ON"
                      " CONFLICT (namespace, key) DO UPDATE SET value = EXCLUDED.value, metadata = EXCLUDED.metadata,"
                      " created_at = CASE WHEN t.expires_at IS NOT NULL AND t.expires_at <= EXCLUDED.updated_at THEN"
                      " EXCLUDED.created_at ELSE t.created_at END, updated_at = EXCLUDED.updated_at, expires_at ="
                      " EXCLUDED.expires_at, version = CASE WHEN t.expires_at IS NOT NULL AND t.expires_at <="
                      " EXCLUDED.updated_at THEN 1 ELSE t.version + 1 END, chg = EXCLUDED.chg RETURNING version, created_at",
                      6, NULL);
      must(a.r.c, res);
      if (PQsetnonblocking(a.r.c, 1) != 0 || PQenterPipelineMode(a.r.c) != 1) bl_die("libpq: no pipeline mode");
      c.prefix = "rt";
      bl_round_trips(&d, &loop, rt, 3, n_rt);
      bl_result_round_trip("postgres", "store vs upsert", &rt[0].out, &rt[1].out);
      bl_result_round_trip("postgres", "store vs the source's own upsert (same table and SQL)", &rt[0].out, &rt[2].out);
      rt[0].submit = submit_retrieve;
      rt[0].what = "engram retrieve, one in flight";
      rt[1].submit = araw_submit_read;
      rt[1].what = "raw read, one in flight";
      bl_round_trips(&d, &loop, rt, 2, n_rt);
      bl_result_round_trip("postgres", "retrieve vs read", &rt[0].out, &rt[1].out);
    }
    bl_note("raw: libpq pipeline mode on the loop (non-blocking), one Sync per loop turn; a round trip is one "
            "statement + Sync");
    a.get = 0;
    c.prefix = "lat";
    a.prefix = "rawlat";
    memset(&sp, 0, sizeof sp);
    sp.bench = "postgres";
    sp.op = "store vs upsert";
    sp.loop = &loop;
    sp.eng = submit_store;
    sp.eng_ctx = &c;
    sp.raw = araw_submit;
    sp.raw_ctx = &a;
    sp.raw_peak = peak;
    sp.raw_peak_how = "the same asynchronous libpq client, closed loop, 1,000 in flight";
    bl_open_loads(&sp);
    PQexitPipelineMode(a.r.c);
    araw_close(&a, &loop);
  }

  if (bl_want("many")) {
    bl_section("postgres retrieve_many of 55 keys vs one SELECT of the 55 rows, one call in flight");
    bench_many(c.mgr, &loop);
  }

  if (bl_want("search")) {
    long q = bl_env_long("BENCH_PG_QUERIES", 200);
    clear_source(c.mgr, &loop);
    bl_corpus_t corpus;
    bl_ki_t k;
    double rate;
    bl_section("postgres known-item search on the Debian corpus");
    bl_corpus_load(&corpus, 0);
    rate = bl_ingest_engram(c.mgr, &loop, NULL, &corpus, WINDOW);
    bl_result("postgres", "ingest items/s (Debian corpus)", rate, -1, "items/s");
    k = bl_known_item_engram(c.mgr, &loop, NULL, &corpus, (size_t)q);
    bl_note("the core's BM25 (in-process index of the namespace, synced per query); key + text indexed");
    bl_result_known_item("postgres", &k, NULL);
    bl_note("the first query (it builds the namespace's index from the table): %.0f ms", k.first_ms);
    text_index_memory(c.mgr, &loop);
    /* Each query right after a store: its sync reads the row written since the previous one. */
    bl_result("postgres", "known-item p50 query time, each after a store",
              bl_mixed_search_p50(c.mgr, &loop, NULL, &corpus, (size_t)q), NAN, "ms");
    bl_corpus_free(&corpus);
  }

  bl_close_manager(c.mgr, &loop);
  if (uv_loop_close(&loop) != 0) bl_die("loop not closed");
  pg_server_stop();
  return 0;
}
