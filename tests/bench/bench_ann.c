/*
 * bench_ann.c — the vector source's approximate index (HNSW, sources/vector/vector_hnsw.c) on clustered vectors,
 * against the exact search of the same source and against hnswlib (tests/bench/ann_baseline.cpp) on the same
 * vectors in the same run.
 *
 * Data (tests/bench/vecgen.h, vecgen_clustered): N items of a Gaussian mixture of 1,000 centres, 384 dimensions,
 * L2-normalised; Q held-out queries (ids no item uses); metric dot (= cosine on unit vectors). Ground truth: the
 * exact top 10 of each query by the source's exact kernel (engram__knn_topk), which also gives the exact
 * queries/s. One thread throughout; steps 1 and 2 are timed by the thread's CPU clock (queries per CPU-second),
 * so that the comparison holds on a busy machine; step 3 by the wall clock.
 *  1. index: the graph built item by item (items/s), then per ef_search: recall@10 and queries/s, one query at a
 *     time; bytes per item (matrix + graph).
 *  2. hnswlib (when $BENCH_ANN_BASELINE names the built ann_baseline; run-bench.sh and `make bench-ann` build
 *     it): the same figures from HierarchicalNSW<float> (M 16, ef_construction 200); the queries/s of both at
 *     recall@10 0.95 and 0.99, each interpolated along its own ef_search curve, are compared. The baseline runs
 *     as a child process that builds its graph while engram builds its own, then answers one ef_search at a time
 *     (ann_baseline.cpp reads them from its stdin): the two query phases of each ef_search run back to back, and
 *     the whole sweep is repeated $BENCH_ANN_REPS times, each library's queries/s being its best pass — on a
 *     shared machine the load changes by the minute, and a comparison of two sweeps taken minutes apart
 *     measured the load (0.68 to 0.94 x for the same code).
 *  3. source: the same items stored through engram_store_many into a vector source with
 *     "index": {"type": "hnsw"} (items/s end to end, embedder call and item records included), then searches
 *     through engram_search (queries/s and recall@10 at ef_search 64 and at the ef of step 2).
 * Knobs: $BENCH_ANN_N (200000), $BENCH_ANN_Q (1000), $BENCH_ANN_DIM (384), $BENCH_ANN_SIGMA (0.03: noise per
 * coordinate), $BENCH_ANN_M (16), $BENCH_ANN_EFC (200), $BENCH_ANN_REPS (3: passes of the query sweep),
 * $BENCH_ANN_SOURCE (1: run step 3), $BENCH_ANN_GRAPH (unset: a file to keep both graphs in between runs — written
 * after a build, loaded instead of building when it exists; a query-only run, for profiling and for repeating
 * the query sweep; hnswlib's graph goes in the same path + ".hnswlib").
 */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../sources/vector/vector_hnsw.h" /* the index itself, measured without the source around it */
#include "bench/benchlib.h"
#include "bench/vecgen.h"

#define K 10
#define CENTRES 1000
#define QUERY_BASE 3000000000ull /* query j is item QUERY_BASE + j: held out */

static size_t N, D, Q;
static double SIGMA;
static float *matrix, *queries;
static uint32_t *truth; /* Q × K */

/* The index-level phases are timed by the thread's CPU clock, not the wall clock: on a machine shared with other
 * work (this one has 2 cores and several builds at once) wall time measures the neighbours, while CPU time of a
 * single-threaded loop is what the index costs. hnswlib is timed the same way (ann_baseline.cpp). */
static double cpu_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static const unsigned efs[] = {10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384};
#define N_EF (sizeof efs / sizeof efs[0])

typedef struct {
  double recall, qps;
} point_t;

static double recall_of(const uint32_t *found, size_t qi, size_t n) {
  size_t i, j, hit = 0;
  for (i = 0; i < n; i++)
    for (j = 0; j < K; j++)
      if (found[i] == truth[qi * K + j]) {
        hit++;
        break;
      }
  return (double)hit / K;
}

/* The queries/s of a curve (pts sorted by ef_search: recall rising) at recall r, interpolated between the two
 * points around it; -1 when r is beyond what it reached. */
static double qps_at(const point_t *pts, size_t n, double r) {
  size_t i;
  if (n == 0) return -1;
  if (r <= pts[0].recall) return pts[0].qps;
  for (i = 1; i < n; i++)
    if (pts[i].recall >= r) {
      double t = (r - pts[i - 1].recall) / (pts[i].recall - pts[i - 1].recall + 1e-12);
      return pts[i - 1].qps + t * (pts[i].qps - pts[i - 1].qps);
    }
  return -1;
}

/* ---- The source, through the public API ---- */

static void rows_embed(const engram_embedder_t *self, const char *const *texts, size_t n, engram_embed_done_fn done,
                       void *cb_ud) {
  float *out = malloc(n * D * sizeof *out);
  size_t i;
  (void)self;
  if (out == NULL) {
    done(cb_ud, ENGRAM_ENOMEM, "out of memory", NULL, D);
    return;
  }
  for (i = 0; i < n; i++) {
    unsigned long row = strtoul(texts[i] + 2, NULL, 10);
    memcpy(out + i * D, matrix + (row < N ? row : 0) * D, D * sizeof *out);
  }
  done(cb_ud, 0, NULL, out, D);
  free(out);
}

typedef struct {
  engram_manager_t *mgr;
  int ef;
  uint32_t (*found)[K];
  size_t *n_found;
} sctx_t;

static int store_submit(bl_drv_t *d, long i, void *token) {
  sctx_t *c = d->ctx;
  engram_entry_t e[1000];
  cJSON *vals[1000];
  char keys[1000][24], text[32];
  long first = i * 1000, j, n = (long)N - first < 1000 ? (long)N - first : 1000;
  int rc;
  memset(e, 0, sizeof e);
  for (j = 0; j < n; j++) {
    snprintf(keys[j], sizeof keys[j], "i%ld", first + j);
    snprintf(text, sizeof text, "r:%ld", first + j);
    vals[j] = cJSON_CreateString(text);
    memset(&e[j], 0, sizeof e[j]);
    e[j].key = keys[j];
    e[j].value = vals[j];
  }
  rc = engram_store_many(c->mgr, e, (size_t)n, NULL, bl_engram_cb, token);
  for (j = 0; j < n; j++) cJSON_Delete(vals[j]);
  return rc;
}

typedef struct {
  void *token;
  uint32_t *rows;
  size_t *n;
} qtok_t;

static void search_cb(int status, const engram_reply_t *reply, void *ud) {
  qtok_t *t = ud;
  size_t i;
  if (status == 0)
    for (i = 0; i < K && i < reply->n_items; i++) t->rows[i] = (uint32_t)strtoul(reply->items[i].key + 1, NULL, 10);
  *t->n = status == 0 && reply->n_items < K ? reply->n_items : K;
  bl_complete(t->token, status, reply->message);
  free(t);
}

static int search_submit(bl_drv_t *d, long i, void *token) {
  sctx_t *c = d->ctx;
  engram_query_t q = ENGRAM_QUERY_INIT;
  qtok_t *t = malloc(sizeof *t);
  int rc;
  if (t == NULL) bl_die("out of memory");
  t->token = token;
  t->rows = c->found[i % (long)Q];
  t->n = &c->n_found[i % (long)Q];
  q.vector = queries + (size_t)(i % (long)Q) * D;
  q.dimension = D;
  q.limit = K;
  q.ef_search = c->ef;
  if ((rc = engram_search(c->mgr, &q, NULL, search_cb, t)) != 0) free(t);
  return rc;
}

static void source_section(int ef_best, unsigned m, unsigned efc) {
  engram_embedder_t emb;
  uv_loop_t loop;
  bl_drv_t d;
  sctx_t c;
  char opts[400];
  double t, rate;
  const int efs_src[2] = {64, ef_best};
  size_t i, k;
  memset(&emb, 0, sizeof emb);
  emb.dimension = D;
  emb.embed = rows_embed;
  if (engram_register_embedder("ann-rows", &emb) != 0) bl_die("register embedder: %s", engram_last_error());
  uv_loop_init(&loop);
  memset(&c, 0, sizeof c);
  c.mgr = bl_manager(&loop);
  snprintf(opts, sizeof opts,
           "{\"dimension\": %zu, \"metric\": \"dot\", \"embedder\": \"ann-rows\", \"index\": {\"type\": \"hnsw\", "
           "\"m\": %u, \"ef_construction\": %u}}",
           D, m, efc);
  bl_add_source(c.mgr, &loop, "vector", &engram_source_vector, opts);
  bl_section("vector source with \"index\": {\"type\": \"hnsw\"} through the public API (store_many, search)");
  t = bl_now();
  rate = bl_closed_loop(&d, &loop, store_submit, &c, (long)((N + 999) / 1000), 1) * 1000;
  bl_check(&d, "store_many");
  bl_note("%zu items stored in %.1f s", N, bl_now() - t);
  bl_result("ann", "source: store_many with the index, items/s", rate, -1, "items/s");
  if ((c.found = calloc(Q, sizeof *c.found)) == NULL || (c.n_found = calloc(Q, sizeof *c.n_found)) == NULL)
    bl_die("out of memory");
  for (k = 0; k < 2; k++) {
    double qps, rec = 0;
    char metric[96];
    c.ef = efs_src[k];
    qps = bl_closed_loop(&d, &loop, search_submit, &c, (long)Q, 1);
    bl_check(&d, "search");
    for (i = 0; i < Q; i++) rec += recall_of(c.found[i], i, c.n_found[i]);
    rec /= (double)Q;
    snprintf(metric, sizeof metric, "source: engram_search ef_search %d, queries/s", c.ef);
    bl_result("ann", metric, qps, -1, "queries/s");
    snprintf(metric, sizeof metric, "source: engram_search ef_search %d, recall@10", c.ef);
    bl_result("ann", metric, rec, -1, "fraction");
  }
  free(c.found);
  free(c.n_found);
  bl_close_manager(c.mgr, &loop);
  if (uv_loop_close(&loop) != 0) bl_die("loop not closed");
  engram_unregister_embedder("ann-rows");
}

/* ---- The hnswlib baseline, a child process spoken to through two pipes ---- */

typedef struct {
  pid_t pid;
  FILE *in, *out; /* its stdin, its stdout */
} base_t;

static int base_start(base_t *b, char *const argv[]) {
  int to[2], from[2];
  signal(SIGPIPE, SIG_IGN); /* a baseline that died shows as a failed write or read, not as this program's end */
  if (pipe(to) != 0) return -1;
  if (pipe(from) != 0) return close(to[0]), close(to[1]), -1;
  fflush(stdout);
  if ((b->pid = fork()) < 0) return close(to[0]), close(to[1]), close(from[0]), close(from[1]), -1;
  if (b->pid == 0) {
    dup2(to[0], 0);
    dup2(from[1], 1);
    close(to[0]), close(to[1]), close(from[0]), close(from[1]);
    execv(argv[0], argv);
    _exit(127);
  }
  close(to[0]);
  close(from[1]);
  b->in = fdopen(to[1], "w");
  b->out = fdopen(from[0], "r");
  return b->in && b->out ? 0 : -1;
}

/* Reads the baseline's lines up to the first that starts with prefix (into line); 0, or -1 at its end. */
static int base_line(base_t *b, const char *prefix, char *line, size_t len) {
  while (fgets(line, (int)len, b->out) != NULL)
    if (strncmp(line, prefix, strlen(prefix)) == 0) return 0;
  return -1;
}

static int base_stop(base_t *b) {
  char line[256];
  int st = 0;
  fclose(b->in);
  while (fgets(line, sizeof line, b->out) != NULL) {
  }
  fclose(b->out);
  if (waitpid(b->pid, &st, 0) < 0) return -1;
  return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

/* ---- main ---- */

/* $BENCH_ANN_GRAPH: the graph's file (node names = rows); hnswlib's is the same path + ".hnswlib"
 * (ann_baseline.cpp). Loaded when it exists, written after a build when it does not. */
static uint64_t row_is_id(uint32_t row, void *ud) { return (void)ud, row; }
static uint32_t id_is_row(uint64_t id, void *ud) { return (void)ud, id < N ? (uint32_t)id : UINT32_MAX; }

static int graph_load(engram__hnsw_t *h) {
  const char *path = getenv("BENCH_ANN_GRAPH");
  FILE *f;
  long len;
  void *buf;
  int ok;
  if (path == NULL || *path == '\0' || (f = fopen(path, "rb")) == NULL) return 0;
  if (fseek(f, 0, SEEK_END) != 0 || (len = ftell(f)) <= 0 || fseek(f, 0, SEEK_SET) != 0 ||
      (buf = malloc((size_t)len)) == NULL)
    bl_die("cannot read %s", path);
  if (fread(buf, 1, (size_t)len, f) != (size_t)len) bl_die("cannot read %s", path);
  fclose(f);
  if (engram__hnsw_reserve(h, N) != 0) bl_die("out of memory");
  ok = engram__hnsw_load(h, buf, (size_t)len, id_is_row, NULL) == 0 && engram__hnsw_count(h) == N;
  free(buf);
  if (!ok) bl_die("%s is not a graph of these %zu items and parameters", path, N);
  bl_note("graph loaded from %s (a query-only run: no build figures)", path);
  return 1;
}

static void graph_save(const engram__hnsw_t *h) {
  const char *path = getenv("BENCH_ANN_GRAPH");
  size_t len;
  void *buf;
  FILE *f;
  if (path == NULL || *path == '\0') return;
  if ((buf = engram__hnsw_save(h, row_is_id, NULL, &len)) == NULL || (f = fopen(path, "wb")) == NULL ||
      fwrite(buf, 1, len, f) != len || fclose(f) != 0)
    bl_die("cannot write %s", path);
  engram_free(buf);
}

int main(void) {
  engram__matrix_t mat;
  engram__hnsw_t *h;
  engram__hnsw_params_t p;
  engram__hit_t hits[K];
  point_t eng[N_EF], base[N_EF];
  size_t n_base = 0, i, j, e, n;
  double t, exact_qps, build_rate, bytes_item, base_build = -1, base_bytes = -1;
  int best = -1, have_base = 0, r, reps;
  base_t bp;
  const char *baseline = getenv("BENCH_ANN_BASELINE");
  char truth_path[256];
  N = (size_t)bl_env_long("BENCH_ANN_N", 200000);
  Q = (size_t)bl_env_long("BENCH_ANN_Q", 1000);
  reps = (int)bl_env_long("BENCH_ANN_REPS", 3);
  if (reps < 1) reps = 1;
  D = (size_t)bl_env_long("BENCH_ANN_DIM", 384);
  SIGMA = getenv("BENCH_ANN_SIGMA") ? atof(getenv("BENCH_ANN_SIGMA")) : 0.03;
  memset(&p, 0, sizeof p);
  p.m = (unsigned)bl_env_long("BENCH_ANN_M", 16);
  p.ef_construction = (unsigned)bl_env_long("BENCH_ANN_EFC", 200);
  p.ef_search = 64;
  if ((matrix = malloc(N * D * sizeof *matrix)) == NULL || (queries = malloc(Q * D * sizeof *queries)) == NULL ||
      (truth = malloc(Q * K * sizeof *truth)) == NULL)
    bl_die("out of memory");
  for (i = 0; i < N; i++) vecgen_clustered(i, matrix + i * D, D, CENTRES, SIGMA);
  for (i = 0; i < Q; i++) vecgen_clustered(QUERY_BASE + i, queries + i * D, D, CENTRES, SIGMA);

  bl_section("approximate k-NN (HNSW) on clustered vectors: the index, exact search, hnswlib (thread CPU time)");
  bl_note("%zu items + %zu held-out queries, %zu dims, Gaussian mixture of %d centres (sigma %.3f per coordinate), "
          "L2-normalised, metric dot, top %d, one thread; m %u, ef_construction %u",
          N, Q, D, CENTRES, SIGMA, K, p.m, p.ef_construction);

  /* Exact: the ground truth and the exact queries/s. */
  memset(&mat, 0, sizeof mat);
  mat.dim = D;
  for (i = 0; i < N; i++)
    if (engram__matrix_append(&mat, matrix + i * D) != 0) bl_die("out of memory");
  t = cpu_now();
  for (i = 0; i < Q; i++) {
    engram__knn_topk(&mat, queries + i * D, ENGRAM__METRIC_DOT, K, NULL, NULL, NULL, hits, &n);
    for (j = 0; j < K; j++) truth[i * K + j] = j < n ? hits[j].row : UINT32_MAX;
  }
  exact_qps = (double)Q / (cpu_now() - t);
  bl_note("exact search (the source's kernel, %s): %.1f queries/s", engram__knn_kernel(), exact_qps);

  /* hnswlib on the same vectors, started now so that it builds while engram does:
   * ann_baseline N D Q CENTRES SIGMA M EFC TRUTH_FILE (ef_search values then come one per line). */
  if (baseline != NULL && *baseline) {
    FILE *f;
    static char args[8][64];
    char *argv[10];
    snprintf(truth_path, sizeof truth_path, "/tmp/engram_ann_truth_%d.bin", (int)getpid());
    if ((f = fopen(truth_path, "wb")) == NULL || fwrite(truth, sizeof *truth, Q * K, f) != Q * K) bl_die("truth file");
    fclose(f);
    snprintf(args[0], 64, "%zu", N), snprintf(args[1], 64, "%zu", D), snprintf(args[2], 64, "%zu", Q);
    snprintf(args[3], 64, "%d", CENTRES), snprintf(args[4], 64, "%.6f", SIGMA), snprintf(args[5], 64, "%u", p.m);
    snprintf(args[6], 64, "%u", p.ef_construction);
    argv[0] = (char *)baseline;
    for (i = 0; i < 7; i++) argv[1 + i] = args[i];
    argv[8] = truth_path;
    argv[9] = NULL;
    if (base_start(&bp, argv) != 0) bl_die("cannot run %s", baseline);
    have_base = 1;
  } else {
    bl_note("hnswlib baseline not run ($BENCH_ANN_BASELINE unset: run through run-bench.sh or make bench-ann)");
  }

  /* The graph: built, or with $BENCH_ANN_GRAPH naming a graph saved by an earlier run of these parameters, loaded
   * (a query-only run: no build figures). */
  if (engram__hnsw_new(&h, &mat, ENGRAM__METRIC_DOT, &p) != 0) bl_die("out of memory");
  if (graph_load(h)) {
    build_rate = -1;
  } else {
    t = cpu_now();
    for (i = 0; i < N; i++) {
      if (engram__hnsw_reserve(h, i + 1) != 0) bl_die("out of memory");
      engram__hnsw_insert(h, (uint32_t)i);
    }
    build_rate = (double)N / (cpu_now() - t);
    graph_save(h);
  }
  bytes_item = (double)(N * D * sizeof(float) + engram__hnsw_bytes(h)) / (double)N;
  if (build_rate > 0) bl_note("built in %.1f s", (double)N / build_rate);
  bl_note("graph %.0f bytes/item beyond the %zu-byte vectors", (double)engram__hnsw_bytes(h) / (double)N,
          D * sizeof(float));
  if (have_base) {
    char line[256];
    if (base_line(&bp, "build ", line, sizeof line) != 0 || sscanf(line, "build %lf %lf", &base_build, &base_bytes) != 2) {
      bl_note("(the hnswlib baseline failed before its build was done)");
      base_stop(&bp);
      have_base = 0;
    }
  }

  /* The query sweep, reps times; per ef_search engram's pass then hnswlib's, each keeping its best queries/s. */
  memset(eng, 0, sizeof eng);
  memset(base, 0, sizeof base);
  for (r = 0; r < reps; r++)
    for (e = 0; e < N_EF; e++) {
      double rec = 0, qps;
      uint32_t found[K];
      t = cpu_now();
      for (i = 0; i < Q; i++) {
        engram__hnsw_search(h, queries + i * D, K, efs[e], NULL, NULL, NULL, hits, &n);
        for (j = 0; j < n; j++) found[j] = hits[j].row;
        rec += recall_of(found, i, n);
      }
      qps = (double)Q / (cpu_now() - t);
      if (qps > eng[e].qps) eng[e].qps = qps;
      eng[e].recall = rec / (double)Q;
      if (have_base) {
        char line[256];
        unsigned ef;
        double a, b;
        fprintf(bp.in, "%u\n", efs[e]);
        fflush(bp.in);
        if (base_line(&bp, "ef ", line, sizeof line) != 0 || sscanf(line, "ef %u %lf %lf", &ef, &a, &b) != 3 ||
            ef != efs[e]) {
          bl_note("(the hnswlib baseline failed)");
          base_stop(&bp);
          have_base = 0;
          n_base = 0;
        } else {
          base[e].recall = a;
          if (b > base[e].qps) base[e].qps = b;
          if (r == 0) n_base = e + 1;
        }
      }
    }
  for (e = 0; e < N_EF; e++) {
    bl_note("engram hnsw ef_search %4u: recall@10 %.4f, %8.0f queries/s (%.1f x exact)", efs[e], eng[e].recall,
            eng[e].qps, eng[e].qps / exact_qps);
    if (best < 0 && eng[e].recall >= 0.95) best = (int)e;
  }
  for (e = 0; e < n_base; e++)
    bl_note("hnswlib     ef_search %4u: recall@10 %.4f, %8.0f queries/s (%.2f x engram)", efs[e], base[e].recall,
            base[e].qps, base[e].qps / eng[e].qps);
  bl_note("queries/s: the best of %d passes of the sweep%s", reps,
          n_base > 0 ? ", engram's and hnswlib's pass of each ef_search back to back" : "");
  if (have_base && base_stop(&bp) != 0) bl_note("(the hnswlib baseline did not exit cleanly)");
  if (baseline != NULL && *baseline) remove(truth_path);

  bl_result("ann", "exact search (flat, the source's kernel), queries/s", exact_qps, -1, "queries/s");
  if (build_rate >= 0) bl_result("ann", "index build, items/s (vs hnswlib)", build_rate, base_build, "items/s");
  bl_result("ann", "bytes per item, vectors + graph (vs hnswlib)", bytes_item, base_bytes, "bytes");
  if (best >= 0) {
    char metric[120];
    snprintf(metric, sizeof metric, "recall@10 at ef_search %u (first >= 0.95)", efs[best]);
    bl_result("ann", metric, eng[best].recall, -1, "fraction");
    snprintf(metric, sizeof metric, "queries/s at ef_search %u vs exact search", efs[best]);
    bl_result("ann", metric, eng[best].qps, exact_qps, "queries/s");
  } else {
    bl_note("no ef_search up to %u reached recall@10 0.95", efs[N_EF - 1]);
  }
  {
    /* Equal recall: both curves (queries/s against recall, ef_search rising) interpolated at the same recall. */
    static const double at[] = {0.95, 0.99};
    size_t a;
    for (a = 0; a < 2; a++) {
      char metric[120];
      snprintf(metric, sizeof metric, "queries/s at recall@10 %.2f vs hnswlib at the same recall", at[a]);
      bl_result("ann", metric, qps_at(eng, N_EF, at[a]), qps_at(base, n_base, at[a]), "queries/s");
    }
  }
  engram__hnsw_free(h);
  engram__matrix_free(&mat);
  if (bl_env_long("BENCH_ANN_SOURCE", 1)) source_section(best >= 0 ? (int)efs[best] : 256, p.m, p.ef_construction);
  free(matrix);
  free(queries);
  free(truth);
  return 0;
}
