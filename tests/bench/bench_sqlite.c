/*
 * bench_sqlite.c — the sqlite source next to raw SQLite doing the same work on the same kind of file (as the
 * sqlite_raw anchor: WAL, synchronous=NORMAL, a (namespace, key) primary key, upserts committed in batches of
 * 1,000, then point reads by key).
 *
 *  1. upserts: engram store of N JSON documents with 1,000 calls in flight (the source commits them in groups),
 *     against prepared upserts committed every 1,000 rows; then point reads (engram retrieve against a prepared
 *     SELECT by key);
 *  2. latency p50/p99/p999 of store at half the measured engram peak, offered from a 1 ms uv_timer, against the
 *     same pacing of raw upserts where each tick's rows are committed together and count as done at COMMIT.
 * Both databases are files in one temporary directory removed at exit. N defaults to 200,000 ($BENCH_SQLITE_N);
 * $BENCH_SQLITE_RATE fixes the latency run's offered rate and $BENCH_LATENCY_S its length (default 2 s).
 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/benchlib.h"

#define WINDOW 1000
#define BATCH 1000

static long N;
static const char *dir;

/* ---- Raw SQLite ---- */

typedef struct {
  sqlite3 *db;
  sqlite3_stmt *up, *get;
  long in_txn;
  void **pending; /* paced: tokens of the open transaction's rows */
  long n_pending;
} raw_t;

static void raw_exec(raw_t *r, const char *sql) {
  char *err = NULL;
  if (sqlite3_exec(r->db, sql, NULL, NULL, &err) != SQLITE_OK) bl_die("sqlite: %s: %s", sql, err ? err : "?");
}

static void raw_open(raw_t *r, const char *name) {
  char path[256];
  memset(r, 0, sizeof *r);
  snprintf(path, sizeof path, "%s/%s", dir, name);
  if (sqlite3_open(path, &r->db) != SQLITE_OK) bl_die("sqlite3_open %s", path);
  raw_exec(r, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
              "CREATE TABLE kv(ns TEXT, key TEXT, value TEXT, PRIMARY KEY(ns, key)) WITHOUT ROWID;");
  if (sqlite3_prepare_v2(r->db, "INSERT INTO kv VALUES('bench', ?1, ?2) ON CONFLICT(ns, key) DO UPDATE SET value = excluded.value",
                         -1, &r->up, NULL) != SQLITE_OK ||
      sqlite3_prepare_v2(r->db, "SELECT value FROM kv WHERE ns = 'bench' AND key = ?1", -1, &r->get, NULL) != SQLITE_OK)
    bl_die("sqlite prepare: %s", sqlite3_errmsg(r->db));
}

static void raw_close(raw_t *r) {
  sqlite3_finalize(r->up);
  sqlite3_finalize(r->get);
  sqlite3_close(r->db);
  free(r->pending);
}

static int doc(char *buf, size_t n, long i) {
  return snprintf(buf, n, "{\"text\":\"memory number %ld for the anchor benchmark\",\"i\":%ld}", i, i);
}

static void raw_upsert(raw_t *r, long i) {
  char key[64], val[256];
  int vl;
  snprintf(key, sizeof key, "k%ld", i);
  vl = doc(val, sizeof val, i);
  sqlite3_bind_text(r->up, 1, key, -1, SQLITE_STATIC);
  sqlite3_bind_text(r->up, 2, val, vl, SQLITE_STATIC);
  if (sqlite3_step(r->up) != SQLITE_DONE) bl_die("sqlite upsert: %s", sqlite3_errmsg(r->db));
  sqlite3_reset(r->up);
}

static void raw_throughput(double *w, double *rd) {
  raw_t r;
  char key[64];
  long i;
  double t;
  raw_open(&r, "raw.db");
  t = bl_now();
  for (i = 0; i < N; i++) {
    if (i % BATCH == 0) raw_exec(&r, "BEGIN");
    raw_upsert(&r, i);
    if (i % BATCH == BATCH - 1 || i == N - 1) raw_exec(&r, "COMMIT");
  }
  *w = (double)N / (bl_now() - t);
  t = bl_now();
  for (i = 0; i < N; i++) {
    snprintf(key, sizeof key, "k%ld", i);
    sqlite3_bind_text(r.get, 1, key, -1, SQLITE_STATIC);
    if (sqlite3_step(r.get) != SQLITE_ROW) bl_die("sqlite read: key k%ld missing", i);
    sqlite3_reset(r.get);
  }
  *rd = (double)N / (bl_now() - t);
  raw_close(&r);
}

/* Paced raw upserts: each tick's rows go into one transaction, done at its COMMIT. */
static int raw_paced_submit(bl_drv_t *d, long i, void *token) {
  raw_t *r = d->ctx;
  if (r->n_pending == 0) raw_exec(r, "BEGIN");
  raw_upsert(r, 10000000 + i);
  r->pending[r->n_pending++] = token;
  return 0;
}

static void raw_paced_commit(bl_drv_t *d) {
  raw_t *r = d->ctx;
  long i;
  if (r->n_pending == 0) return;
  raw_exec(r, "COMMIT");
  for (i = 0; i < r->n_pending; i++) bl_complete(r->pending[i], 0, NULL);
  r->n_pending = 0;
}

/* ---- engram ---- */

typedef struct {
  engram_manager_t *mgr;
  long base;
} ectx_t;

static int submit_store(bl_drv_t *d, long i, void *token) {
  ectx_t *c = d->ctx;
  char key[64], text[128];
  cJSON *v = cJSON_CreateObject();
  int rc;
  snprintf(key, sizeof key, "k%ld", c->base + i);
  snprintf(text, sizeof text, "memory number %ld for the anchor benchmark", c->base + i);
  if (v == NULL || !cJSON_AddStringToObject(v, "text", text) || !cJSON_AddNumberToObject(v, "i", (double)(c->base + i)))
    bl_die("out of memory");
  rc = engram_store(c->mgr, key, v, NULL, bl_engram_cb, token);
  cJSON_Delete(v);
  return rc;
}

static int submit_retrieve(bl_drv_t *d, long i, void *token) {
  ectx_t *c = d->ctx;
  char key[64];
  snprintf(key, sizeof key, "k%ld", c->base + i);
  return engram_retrieve(c->mgr, key, NULL, bl_engram_cb, token);
}

static void engram_open(uv_loop_t *loop, ectx_t *c, const char *name) {
  char opts[512];
  memset(c, 0, sizeof *c);
  snprintf(opts, sizeof opts, "{\"path\": \"%s/%s\", \"synchronous\": \"normal\"}", dir, name);
  c->mgr = bl_manager(loop);
  bl_add_source(c->mgr, loop, "sqlite", &engram_source_sqlite, opts);
}

int main(void) {
  uv_loop_t loop;
  bl_drv_t d;
  ectx_t c;
  raw_t r;
  double ew, er, rw = -1, rr = -1, cpu[4] = {0, 0, 0, 0}, c0;
  bl_lat_t eng, raw;
  N = bl_env_long("BENCH_SQLITE_N", bl_scaled(200000));
  dir = bl_tmpdir();
  uv_loop_init(&loop);

  bl_section("sqlite vs raw SQLite (WAL, synchronous=NORMAL, file in a temp dir)");
  bl_note("N = %ld JSON documents; engram: %d stores in flight (group commit); raw: commits every %d rows", N, WINDOW,
          BATCH);
  c0 = bl_cpu_s();
  if (getenv("BENCH_ENGRAM_ONLY") == NULL) raw_throughput(&rw, &rr);
  cpu[2] = (bl_cpu_s() - c0) / (double)N * 1e6 / 2; /* writes and reads together, per operation */
  engram_open(&loop, &c, "engram.db");
  ew = bl_closed_loop(&d, &loop, submit_store, &c, N, WINDOW);
  bl_check(&d, "engram sqlite store");
  cpu[0] = d.cpu_us;
  er = bl_closed_loop(&d, &loop, submit_retrieve, &c, N, WINDOW);
  bl_check(&d, "engram sqlite retrieve");
  cpu[1] = d.cpu_us;
  bl_note("CPU per call (all threads): engram store %.2f us, retrieve %.2f us; raw %.2f us per operation (mean of "
          "upserts and reads)", cpu[0], cpu[1], cpu[2]);
  bl_result("sqlite", "upserts/s (raw: batches of 1,000)", ew, rw, "ops/s");
  bl_result("sqlite", "point reads/s", er, rr, "ops/s");

  if (bl_want("latency")) {
    double rate = (double)bl_env_long("BENCH_SQLITE_RATE", (long)(ew / 2)), lat_s = (double)bl_env_long("BENCH_LATENCY_S", 2);
    bl_section("sqlite store latency at half the engram peak (1 ms uv_timer pacing)");
    c.base = 10000000;
    memset(&d, 0, sizeof d);
    eng = bl_paced_engram(&d, &loop, submit_store, &c, &rate, lat_s);
    raw_open(&r, "raw_lat.db");
    if ((r.pending = malloc(sizeof(void *) * (size_t)(rate * lat_s + 16))) == NULL) bl_die("out of memory");
    memset(&d, 0, sizeof d);
    d.tick_end = raw_paced_commit;
    raw = bl_paced(&d, &loop, raw_paced_submit, &r, rate, lat_s);
    raw_close(&r);
    bl_note("raw: each 1 ms tick's upserts are one transaction; a row counts as done at its COMMIT");
    bl_result_latency("sqlite", &eng, &raw, rate);
  }
  bl_close_manager(c.mgr, &loop);
  if (uv_loop_close(&loop) != 0) bl_die("loop not closed");
  return 0;
}
