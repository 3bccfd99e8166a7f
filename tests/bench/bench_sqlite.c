/*
 * bench_sqlite.c — the sqlite source next to raw SQLite doing the same work on the same kind of file (as the
 * sqlite_raw anchor: WAL, synchronous=NORMAL, a (namespace, key) primary key, upserts committed in batches of
 * 1,000, then point reads by key).
 *
 *  1. upserts: engram store of N JSON documents with 1,000 calls in flight (the source commits them in groups),
 *     against prepared upserts committed every 1,000 rows; then point reads (engram retrieve against a prepared
 *     SELECT by key);
 *  2. latency, against raw SQLite driven from the bench's loop (the upserts of a loop turn in one transaction,
 *     done at its COMMIT; reads done when the SELECT returns), on the raw database of (1): (a) round trips, one
 *     call in flight, store against an upsert, retrieve against a read, $BENCH_SQLITE_RT_N (20,000) each; (b)
 *     the open loop (benchlib's bl_open_loads): store against upserts under Poisson arrivals at 10, 50 and 80% of
 *     that raw client's closed-loop peak (measured first, 1,000 in flight), the same schedule for both, each call
 *     timed from its intended start.
 * Every engram row is taken twice: the source in its default placement (an actor thread of its own) and with
 * "thread": "home" (its actor on the bench's loop, as the raw client; a file of its own), the home rows
 * labelled so. In (2a) the own-thread, home and raw sides run in alternating blocks of 100 calls
 * (bl_round_trips), so that each sees the same conditions.
 * $BENCH_SQLITE_SIDES (own, home, raw: default all) runs only those sides of (2a), for a profiler.
 * The databases are files in one temporary directory removed at exit. N defaults to 200,000 ($BENCH_SQLITE_N);
 * $BENCH_LOADS and $BENCH_LATENCY_S shape (2b).
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
              "CREATE TABLE IF NOT EXISTS kv(ns TEXT, key TEXT, value TEXT, PRIMARY KEY(ns, key)) WITHOUT ROWID;");
  if (sqlite3_prepare_v2(r->db, "INSERT INTO kv VALUES('bench', ?1, ?2) ON CONFLICT(ns, key) DO UPDATE SET value = excluded.value",
                         -1, &r->up, NULL) != SQLITE_OK ||
      sqlite3_prepare_v2(r->db, "SELECT value FROM kv WHERE ns = 'bench' AND key = ?1", -1, &r->get, NULL) != SQLITE_OK)
    bl_die("sqlite prepare: %s", sqlite3_errmsg(r->db));
}

static void raw_close(raw_t *r) {
  sqlite3_finalize(r->up);
  sqlite3_finalize(r->get);
  sqlite3_close(r->db);
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

/* ---- Raw SQLite on the loop: the client the latency runs drive ----
 * An upsert joins the open transaction (BEGIN with the first) and is done at its COMMIT, which a uv_idle
 * handle runs on the next loop turn: the rows submitted in one loop turn are committed together, as the
 * source groups what its mailbox holds (one call in flight = one row per transaction). A read is a prepared
 * SELECT, done when it returns (inside submit). */

typedef struct {
  raw_t r;
  uv_idle_t idle;
  int idle_on, get;
  long base;
  void **pending, **done; /* tokens of the open transaction; the ones being completed */
  long n_pending, cap;
} araw_t;

static void araw_on_idle(uv_idle_t *h) {
  araw_t *a = h->data;
  void **t = a->pending;
  long i, n = a->n_pending;
  uv_idle_stop(h);
  a->idle_on = 0;
  if (n == 0) return;
  raw_exec(&a->r, "COMMIT");
  a->pending = a->done; /* completions may submit again: into the other buffer */
  a->done = t;
  a->n_pending = 0;
  for (i = 0; i < n; i++) bl_complete(t[i], 0, NULL);
}

static int araw_submit(bl_drv_t *d, long i, void *token) {
  araw_t *a = d->ctx;
  if (a->get) {
    char key[64];
    int rc;
    snprintf(key, sizeof key, "k%ld", a->base + i);
    sqlite3_bind_text(a->r.get, 1, key, -1, SQLITE_STATIC);
    rc = sqlite3_step(a->r.get);
    sqlite3_reset(a->r.get);
    bl_complete(token, rc == SQLITE_ROW ? 0 : -1, rc == SQLITE_ROW ? NULL : "raw read: key missing");
    return 0;
  }
  if (a->n_pending == a->cap) {
    a->cap = a->cap ? a->cap * 2 : 4096;
    if ((a->pending = realloc(a->pending, (size_t)a->cap * sizeof *a->pending)) == NULL ||
        (a->done = realloc(a->done, (size_t)a->cap * sizeof *a->done)) == NULL)
      bl_die("out of memory");
  }
  if (a->n_pending == 0) raw_exec(&a->r, "BEGIN");
  raw_upsert(&a->r, a->base + i);
  a->pending[a->n_pending++] = token;
  if (!a->idle_on) {
    uv_idle_start(&a->idle, araw_on_idle);
    a->idle_on = 1;
  }
  return 0;
}

static void araw_open(araw_t *a, uv_loop_t *loop, const char *name) {
  memset(a, 0, sizeof *a);
  raw_open(&a->r, name);
  uv_idle_init(loop, &a->idle);
  a->idle.data = a;
}

static void araw_close(araw_t *a, uv_loop_t *loop) {
  uv_close((uv_handle_t *)&a->idle, NULL);
  uv_run(loop, UV_RUN_NOWAIT);
  raw_close(&a->r);
  free(a->pending);
  free(a->done);
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

/* Profiling one side of the round trips (2a): $BENCH_SQLITE_SIDES, a list of own, home and raw (default all); a
 * side left out reports zeros. */
static int side(const char *name) {
  const char *only = getenv("BENCH_SQLITE_SIDES");
  return only == NULL || *only == '\0' || strstr(only, name) != NULL;
}

/* home: the source's actor on the bench's loop ("thread": "home") instead of a thread of its own. */
static void engram_open(uv_loop_t *loop, ectx_t *c, const char *name, int home) {
  char opts[512];
  memset(c, 0, sizeof *c);
  snprintf(opts, sizeof opts, "{\"path\": \"%s/%s\", \"synchronous\": \"normal\"%s}", dir, name,
           home ? ", \"thread\": \"home\"" : "");
  c->mgr = bl_manager(loop);
  bl_add_source(c->mgr, loop, "sqlite", &engram_source_sqlite, opts);
}

static void closed_cb(int status, const engram_reply_t *reply, void *ud) {
  (void)ud;
  if (status != 0) bl_die("engram_manager_close: %s", reply->message);
}

int main(void) {
  uv_loop_t loop;
  bl_drv_t d;
  ectx_t c, h;
  double ew, er, hw, hr, rw = -1, rr = -1, cpu[4] = {0, 0, 0, 0}, hcpu[2], c0;
  N = bl_env_long("BENCH_SQLITE_N", bl_scaled(200000));
  dir = bl_tmpdir();
  uv_loop_init(&loop);

  bl_section("sqlite vs raw SQLite (WAL, synchronous=NORMAL, file in a temp dir)");
  bl_note("N = %ld JSON documents; engram: %d stores in flight (group commit); raw: commits every %d rows", N, WINDOW,
          BATCH);
  c0 = bl_cpu_s();
  if (getenv("BENCH_ENGRAM_ONLY") == NULL) raw_throughput(&rw, &rr);
  cpu[2] = (bl_cpu_s() - c0) / (double)N * 1e6 / 2; /* writes and reads together, per operation */
  engram_open(&loop, &c, "engram.db", 0);
  engram_open(&loop, &h, "engram_home.db", 1);
  ew = bl_closed_loop(&d, &loop, submit_store, &c, N, WINDOW);
  bl_check(&d, "engram sqlite store");
  cpu[0] = d.cpu_us;
  hw = bl_closed_loop(&d, &loop, submit_store, &h, N, WINDOW);
  bl_check(&d, "engram sqlite store (thread home)");
  hcpu[0] = d.cpu_us;
  hr = bl_closed_loop(&d, &loop, submit_retrieve, &h, N, WINDOW);
  bl_check(&d, "engram sqlite retrieve (thread home)");
  hcpu[1] = d.cpu_us;
  er = bl_closed_loop(&d, &loop, submit_retrieve, &c, N, WINDOW);
  bl_check(&d, "engram sqlite retrieve");
  cpu[1] = d.cpu_us;
  bl_note("CPU per call (all threads): engram store %.2f us, retrieve %.2f us; with \"thread\": \"home\" %.2f us, "
          "%.2f us; raw %.2f us per operation (mean of upserts and reads)", cpu[0], cpu[1], hcpu[0], hcpu[1], cpu[2]);
  bl_result("sqlite", "upserts/s (raw: batches of 1,000)", ew, rw, "ops/s");
  bl_result("sqlite", "point reads/s", er, rr, "ops/s");
  bl_result("sqlite", "upserts/s, thread home (raw: batches of 1,000)", hw, rw, "ops/s");
  bl_result("sqlite", "point reads/s, thread home", hr, rr, "ops/s");

  if (bl_want("latency")) {
    bl_open_spec_t sp;
    araw_t a;
    double peak;
    long n_rt = bl_env_long("BENCH_SQLITE_RT_N", bl_scaled(20000));
    bl_section("sqlite latency: round trips, and open-loop Poisson arrivals at fractions of raw SQLite's peak");
    araw_open(&a, &loop, "raw.db"); /* the database of the throughput run (as engram's), or a new one */
    /* The raw client's saturation: the same client in the closed loop, 1,000 in flight (so ~1,000 rows per
     * transaction, as the anchor's batches). */
    a.base = 20000000;
    peak = bl_closed_loop(&d, &loop, araw_submit, &a, N, WINDOW);
    bl_check(&d, "raw upserts (peak)");
    /* One call in flight: store against an upsert in a transaction of its own, retrieve against a read; the own
     * thread placement, the home placement and the raw client in alternating blocks (bl_round_trips). Each engram
     * source has a file of its own, so the same keys. */
    c.base = h.base = a.base = 30000000;
    {
      bl_rt_side_t rt[3] = {{.submit = submit_store, .ctx = &c, .what = "engram store, one in flight", .on = side("own")},
                            {.submit = submit_store, .ctx = &h, .what = "engram store (thread home), one in flight", .on = side("home")},
                            {.submit = araw_submit, .ctx = &a, .what = "raw upsert, one in flight", .on = side("raw")}};
      bl_round_trips(&d, &loop, rt, 3, n_rt);
      bl_result_round_trip("sqlite", "store vs upsert", &rt[0].out, &rt[2].out);
      bl_result_round_trip("sqlite", "store vs upsert, thread home", &rt[1].out, &rt[2].out);
      a.get = 1;
      rt[0].submit = rt[1].submit = submit_retrieve;
      rt[0].what = "engram retrieve, one in flight";
      rt[1].what = "engram retrieve (thread home), one in flight";
      rt[2].what = "raw read, one in flight";
      bl_round_trips(&d, &loop, rt, 3, n_rt);
      bl_result_round_trip("sqlite", "retrieve vs read", &rt[0].out, &rt[2].out);
      bl_result_round_trip("sqlite", "retrieve vs read, thread home", &rt[1].out, &rt[2].out);
    }
    bl_note("raw: on the bench's loop, the upserts of one loop turn in one transaction, done at its COMMIT; "
            "thread home: the engram source's actor on that same loop");
    a.get = 0;
    c.base = a.base = 10000000;
    memset(&sp, 0, sizeof sp);
    sp.bench = "sqlite";
    sp.op = "store vs upsert";
    sp.loop = &loop;
    sp.eng = submit_store;
    sp.eng_ctx = &c;
    sp.raw = araw_submit;
    sp.raw_ctx = &a;
    sp.raw_peak = peak;
    sp.raw_peak_how = "the same client, closed loop, 1,000 in flight";
    bl_open_loads(&sp);
    h.base = a.base = 40000000;
    sp.op = "store vs upsert, thread home";
    sp.eng_ctx = &h;
    bl_open_loads(&sp);
    araw_close(&a, &loop);
  }
  /* Both managers share the loop: the first close only starts (its answer is not waited for), the second runs
   * the loop until both are gone. */
  if (engram_manager_close(h.mgr, closed_cb, NULL) != 0) bl_die("engram_manager_close refused");
  bl_close_manager(c.mgr, &loop);
  if (uv_loop_close(&loop) != 0) bl_die("loop not closed");
  return 0;
}
