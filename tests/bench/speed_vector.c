/*
 * speed_vector.c — exact k-NN speed of the vector source against the FAISS anchor (shared/anchors/faiss_flat.cpp:
 * IndexFlatIP, 100,000 × 384, one query at a time, one thread ≈ 50 queries/s on this project's machines).
 *
 * The same data as the anchor (its LCG, seed 42, rows L2-normalized) is stored through the public API: a
 * "table" embedder registered here maps the text "<i>" to row i, so the source holds exactly those vectors.
 * Then QUERIES raw-vector searches (limit K, metric dot = inner product) run one at a time, as an agent asks.
 * Prints queries/s, ms per query, memory per item (the source's info), the ingest rate, and — with a SQLite
 * path — the time to reopen the source, i.e. to load every item and vector from the file.
 *
 * usage: build/bench/speed_vector [N=100000] [DIM=384] [QUERIES=200] [K=10]
 * Build: make lib build/bench/speed_vector
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "engram.h"

static float *table;
static size_t table_dim;

static void table_embed(const engram_embedder_t *self, const char *const *texts, size_t n, engram_embed_done_fn done,
                        void *cb_ud) {
  float *out = malloc(n * table_dim * sizeof *out);
  size_t i;
  (void)self;
  for (i = 0; i < n; i++) memcpy(out + i * table_dim, table + (size_t)atol(texts[i]) * table_dim, table_dim * sizeof *out);
  done(cb_ud, 0, NULL, out, table_dim);
  free(out);
}

static void fill(float *v, long n, int d, unsigned *s) { /* the anchor's generator */
  long i;
  int j;
  for (i = 0; i < n; i++) {
    double nn = 0;
    for (j = 0; j < d; j++) {
      float x;
      *s = *s * 1103515245u + 12345u;
      x = ((*s >> 8) & 0xffff) / 32768.0f - 1.0f;
      v[i * d + j] = x;
      nn += x * x;
    }
    nn = sqrt(nn);
    for (j = 0; j < d; j++) v[i * d + j] /= (float)nn;
  }
}

typedef struct {
  int calls, status;
  char message[256];
  double bytes_per_item;
} res_t;

static void on_reply(int status, const engram_reply_t *reply, void *ud) {
  res_t *r = ud;
  r->calls++;
  r->status = status;
  snprintf(r->message, sizeof r->message, "%s", reply->message ? reply->message : "");
  if (reply->info && cJSON_GetObjectItem(reply->info, "bytes_per_item"))
    r->bytes_per_item = cJSON_GetObjectItem(reply->info, "bytes_per_item")->valuedouble;
}

static void wait_for(uv_loop_t *loop, res_t *r) {
  while (r->calls == 0) uv_run(loop, UV_RUN_ONCE);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int add(uv_loop_t *loop, engram_manager_t *mgr, const char *name, const char *options) {
  res_t r = {0};
  engram_manager_add_source(mgr, name, &engram_source_vector, options, "bench", 0, on_reply, &r);
  wait_for(loop, &r);
  if (r.status != 0) fprintf(stderr, "add %s: %s\n", name, r.message);
  return r.status;
}

static int remove_source(uv_loop_t *loop, engram_manager_t *mgr, const char *name) {
  res_t r = {0};
  engram_manager_remove_source(mgr, name, on_reply, &r);
  wait_for(loop, &r);
  return r.status;
}

int main(int argc, char **argv) {
  long n = argc > 1 ? atol(argv[1]) : 100000, i;
  int d = argc > 2 ? atoi(argv[2]) : 384, k = argc > 4 ? atoi(argv[4]) : 10;
  long queries = argc > 3 ? atol(argv[3]) : 200;
  unsigned seed = 42;
  float *qs;
  engram_embedder_t emb = {0, 0, NULL, table_embed, NULL};
  uv_loop_t loop;
  engram_manager_t *mgr;
  engram_opts_t o;
  char options[512], path[128], keybuf[32];
  char (*keys)[32];
  double t0, ingest, qps, load_s;
  res_t r = {0};
  size_t batch = 1000;
  engram_entry_t *entries;
  cJSON **values;
  table_dim = (size_t)d;
  table = malloc((size_t)n * d * sizeof *table);
  qs = malloc((size_t)queries * d * sizeof *qs);
  fill(table, n, d, &seed);
  fill(qs, queries, d, &seed);
  emb.dimension = (size_t)d;
  if (engram_register_embedder("table", &emb) != 0) return 1;
  snprintf(path, sizeof path, "/tmp/engram_speed_vector_%d.db", (int)getpid());
  snprintf(options, sizeof options, "{\"embedder\": \"table\", \"dimension\": %d, \"metric\": \"dot\", \"path\": \"%s\"}",
           d, path);
  uv_loop_init(&loop);
  engram_manager_new(&mgr, &loop, NULL);
  if (add(&loop, mgr, "vec", options) != 0) return 1;
  memset(&o, 0, sizeof o);
  o.source = "vec";
  keys = malloc((size_t)n * sizeof *keys);
  entries = calloc(batch, sizeof *entries);
  values = calloc(batch, sizeof *values);
  t0 = now_s();
  for (i = 0; i < n; i += (long)batch) {
    size_t m = (size_t)(n - i) < batch ? (size_t)(n - i) : batch, j;
    for (j = 0; j < m; j++) {
      snprintf(keys[i + j], sizeof keys[i + j], "item:%07ld", i + (long)j);
      snprintf(keybuf, sizeof keybuf, "%ld", i + (long)j);
      values[j] = cJSON_CreateString(keybuf);
      entries[j].key = keys[i + j];
      entries[j].value = values[j];
    }
    memset(&r, 0, sizeof r);
    engram_store_many(mgr, entries, m, &o, on_reply, &r);
    wait_for(&loop, &r);
    for (j = 0; j < m; j++) cJSON_Delete(values[j]);
    if (r.status != 0) {
      fprintf(stderr, "store_many: %s\n", r.message);
      return 1;
    }
  }
  ingest = n / (now_s() - t0);
  /* Reopen: every item and vector is read back from the file. */
  remove_source(&loop, mgr, "vec");
  t0 = now_s();
  if (add(&loop, mgr, "vec", options) != 0) return 1;
  load_s = now_s() - t0;
  t0 = now_s();
  for (i = 0; i < queries; i++) {
    engram_query_t q = ENGRAM_QUERY_INIT;
    q.vector = qs + (size_t)i * d;
    q.dimension = (size_t)d;
    q.limit = k;
    memset(&r, 0, sizeof r);
    engram_search(mgr, &q, &o, on_reply, &r);
    wait_for(&loop, &r);
    if (r.status != 0) {
      fprintf(stderr, "search: %s\n", r.message);
      return 1;
    }
  }
  qps = queries / (now_s() - t0);
  memset(&r, 0, sizeof r);
  engram_info(mgr, &o, on_reply, &r);
  wait_for(&loop, &r);
  printf("speed_vector n=%ld dim=%d queries=%ld k=%d single_qps=%.1f ms_per_query=%.2f bytes_per_item=%.0f "
         "ingest=%.0f/s load_s=%.3f (reopen from sqlite)\n",
         n, d, queries, k, qps, 1000.0 / qps, r.bytes_per_item, ingest, load_s);
  memset(&r, 0, sizeof r);
  engram_manager_close(mgr, on_reply, &r);
  wait_for(&loop, &r);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  engram_unregister_embedder("table");
  unlink(path);
  snprintf(options, sizeof options, "%s-wal", path);
  unlink(options);
  snprintf(options, sizeof options, "%s-shm", path);
  unlink(options);
  free(table), free(qs), free(keys), free(entries), free(values);
  return 0;
}
