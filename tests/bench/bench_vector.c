/*
 * bench_vector.c — the vector source's exact k-NN next to a plain scalar loop over the same matrix, and next to
 * FAISS's IndexFlatIP when run-bench.sh could build tests/bench/faiss_baseline.cpp (it passes the figure in
 * $BENCH_FAISS_QPS, measured in the same run on the same vectors).
 *
 * The source gets N = 100,000 items whose text "r:<i>" an embedder registered here maps to row i of vecgen.h
 * (384 dimensions, unit vectors, metric "dot"), so engram, the scalar loop and FAISS rank identical data.
 *  1. single-query exact search, top 10, one query at a time (how an agent asks): queries per second, and the
 *     share of engram's top-10 that the scalar loop's exact top-10 confirms;
 *  2. latency p50/p99/p999 at half the measured engram peak, offered from a 1 ms uv_timer, against the scalar
 *     loop paced the same way.
 * N, the dimension and the query count: $BENCH_VECTOR_N (100000), $BENCH_VECTOR_DIM (384), $BENCH_VECTOR_Q (100).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/benchlib.h"
#include "bench/vecgen.h"

#define K 10

static size_t N, D, Q;
static float *matrix; /* N x D, the rows the embedder hands engram */
static float *queries; /* Q x D */

/* ---- The embedder: "r:<i>" → row i ---- */

static void rand_embed(const engram_embedder_t *self, const char *const *texts, size_t n, engram_embed_done_fn done,
                       void *cb_ud) {
  float *out = malloc(n * D * sizeof *out);
  size_t i;
  (void)self;
  if (out == NULL) {
    done(cb_ud, ENGRAM_ENOMEM, "out of memory", NULL, D);
    return;
  }
  for (i = 0; i < n; i++) {
    const char *p = strstr(texts[i], "r:");
    unsigned long row = p ? strtoul(p + 2, NULL, 10) : 0;
    if (row < N) memcpy(out + i * D, matrix + row * D, D * sizeof *out);
    else vecgen_row(row, out + i * D, D);
  }
  done(cb_ud, 0, NULL, out, D);
  free(out);
}

/* ---- The plain scalar loop ---- */

typedef struct {
  float score;
  size_t row;
} hit_t;

static size_t scalar_search(const float *q, hit_t *top) {
  size_t r, j, n = 0;
  for (r = 0; r < N; r++) {
    const float *m = matrix + r * D;
    float dot = 0;
    for (j = 0; j < D; j++) dot += q[j] * m[j];
    if (n < K || dot > top[n - 1].score) {
      size_t at = n < K ? n++ : K - 1;
      while (at > 0 && top[at - 1].score < dot) {
        top[at] = top[at - 1];
        at--;
      }
      top[at].score = dot;
      top[at].row = r;
    }
  }
  return n;
}

static int scalar_submit(bl_drv_t *d, long i, void *token) {
  hit_t top[K];
  (void)d;
  scalar_search(queries + (size_t)(i % (long)Q) * D, top);
  bl_complete(token, 0, NULL);
  return 0;
}

/* ---- engram ---- */

typedef struct {
  engram_manager_t *mgr;
  size_t (*found)[K]; /* per query: rows of engram's top 10 (closed loop only) */
} ectx_t;

static int store_submit(bl_drv_t *d, long i, void *token) {
  ectx_t *c = d->ctx;
  char key[32], text[32];
  cJSON *v;
  int rc;
  snprintf(key, sizeof key, "row%ld", i);
  snprintf(text, sizeof text, "r:%ld", i);
  if ((v = cJSON_CreateString(text)) == NULL) bl_die("out of memory");
  rc = engram_store(c->mgr, key, v, NULL, bl_engram_cb, token);
  cJSON_Delete(v);
  return rc;
}

typedef struct {
  void *token;
  size_t *rows;
} qtok_t;

static void search_cb(int status, const engram_reply_t *reply, void *ud) {
  qtok_t *t = ud;
  size_t i;
  if (status == 0 && t->rows != NULL)
    for (i = 0; i < K; i++) t->rows[i] = i < reply->n_items ? strtoul(reply->items[i].key + 3, NULL, 10) : (size_t)-1;
  bl_complete(t->token, status, reply->message);
  free(t);
}

static int search_submit(bl_drv_t *d, long i, void *token) {
  ectx_t *c = d->ctx;
  engram_query_t q = ENGRAM_QUERY_INIT;
  qtok_t *t = malloc(sizeof *t);
  int rc;
  if (t == NULL) bl_die("out of memory");
  t->token = token;
  t->rows = c->found ? c->found[i % (long)Q] : NULL;
  q.vector = queries + (size_t)(i % (long)Q) * D;
  q.dimension = D;
  q.limit = K;
  if ((rc = engram_search(c->mgr, &q, NULL, search_cb, t)) != 0) free(t);
  return rc;
}

int main(void) {
  engram_embedder_t emb;
  uv_loop_t loop;
  bl_drv_t d;
  ectx_t c;
  char opts[256];
  double ingest, eq, sq, t, agree = 0, faiss;
  size_t i, j, r;
  const char *faiss_env = getenv("BENCH_FAISS_QPS");
  N = (size_t)bl_env_long("BENCH_VECTOR_N", bl_scaled(100000));
  D = (size_t)bl_env_long("BENCH_VECTOR_DIM", 384);
  Q = (size_t)bl_env_long("BENCH_VECTOR_Q", 100);
  if ((matrix = malloc(N * D * sizeof *matrix)) == NULL || (queries = malloc(Q * D * sizeof *queries)) == NULL)
    bl_die("out of memory");
  for (i = 0; i < N; i++) vecgen_row(i, matrix + i * D, D);
  for (i = 0; i < Q; i++) vecgen_row(VECGEN_QUERY_BASE + i, queries + i * D, D);

  memset(&emb, 0, sizeof emb);
  emb.dimension = D;
  emb.embed = rand_embed;
  if (engram_register_embedder("bench-rows", &emb) != 0) bl_die("register embedder: %s", engram_last_error());
  uv_loop_init(&loop);
  memset(&c, 0, sizeof c);
  c.mgr = bl_manager(&loop);
  snprintf(opts, sizeof opts, "{\"dimension\": %zu, \"metric\": \"dot\", \"embedder\": \"bench-rows\"}", D);
  bl_add_source(c.mgr, &loop, "vector", &engram_source_vector, opts);

  bl_section("vector exact k-NN vs a plain scalar loop (and FAISS IndexFlatIP)");
  t = bl_now();
  ingest = bl_closed_loop(&d, &loop, store_submit, &c, (long)N, 1000);
  bl_check(&d, "vector store");
  bl_note("%zu x %zu unit vectors (metric dot), stored in %.1f s (%.0f items/s); %zu single queries, top %d", N, D,
          bl_now() - t, ingest, Q, K);
  if ((c.found = malloc(Q * sizeof *c.found)) == NULL) bl_die("out of memory");
  eq = bl_closed_loop(&d, &loop, search_submit, &c, (long)Q, 1);
  bl_check(&d, "vector search");
  t = bl_now();
  for (i = 0; i < Q; i++) {
    hit_t top[K];
    size_t n = scalar_search(queries + i * D, top);
    for (j = 0; j < n; j++)
      for (r = 0; r < K; r++)
        if (c.found[i][r] == top[j].row) {
          agree += 1;
          break;
        }
  }
  sq = (double)Q / (bl_now() - t);
  agree /= (double)(Q * K);
  bl_result("vector", "exact search queries/s (vs scalar loop)", eq, sq, "queries/s");
  faiss = faiss_env && *faiss_env ? atof(faiss_env) : -1;
  if (faiss > 0) bl_result("vector", "exact search queries/s (vs FAISS IndexFlatIP)", eq, faiss, "queries/s");
  else bl_note("FAISS baseline not run (libfaiss-dev missing, or run this through run-bench.sh)");
  bl_result("vector", "top-10 agreement with the exact scalar result", agree, -1, "fraction");
  free(c.found);
  c.found = NULL;

  if (bl_want("latency")) {
    double rate = eq / 2, secs = bl_env_long("BENCH_VECTOR_LAT_S", 4);
    bl_lat_t eng, raw;
    bl_section("vector search latency at half the engram peak (1 ms uv_timer pacing)");
    memset(&d, 0, sizeof d);
    eng = bl_paced_engram(&d, &loop, search_submit, &c, &rate, secs);
    memset(&d, 0, sizeof d);
    /* The scalar loop may not sustain the engram rate: then it is offered half of its own peak instead. */
    raw = bl_paced(&d, &loop, scalar_submit, NULL, sq / 2 < rate ? sq / 2 : rate, secs);
    bl_note("%ld engram queries: p99 and p999 are close to the maximum at this count", eng.calls);
    if (sq / 2 < rate) bl_note("the scalar loop is offered %.0f/s, half of its own peak", sq / 2);
    bl_result_latency("vector", &eng, &raw, rate);
  }
  bl_close_manager(c.mgr, &loop);
  if (uv_loop_close(&loop) != 0) bl_die("loop not closed");
  engram_unregister_embedder("bench-rows");
  free(matrix);
  free(queries);
  return 0;
}
