/*
 * test_hnsw.c — the vector source's approximate index ("index": {"type": "hnsw"}, sources/vector/vector_hnsw.c)
 * through the public API, on generated clustered vectors (tests/bench/vecgen.h: a Gaussian mixture, unit
 * vectors) whose exact top 10 the test computes itself: recall against exact search at the default ef_search and
 * per call, insert / update / delete, metadata filters and namespaces applied during the walk, the graph saved
 * in the source's file and taken back at reopen (and rebuilt when the options changed), exact search below
 * exact_below, and bad input named by field. A few seconds. One test works on the index itself
 * (sources/vector/vector_hnsw.h): inserts while the matrix grows, deletes by swap-remove, and a saved graph
 * loaded after some of its items went away.
 *
 * The embedder "clus" maps the text "c:<id>" to vecgen_clustered(id), so a test stores exactly the vectors it
 * wants and a query with id Q_BASE + j is a held-out point of the same mixture.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../sources/vector/vector_hnsw.h" /* the index itself, for graph_load_without_gone_items */
#include "bench/vecgen.h"
#include "support/harness.h"

#define D 32
#define CENTRES 40
#define SIGMA 0.12
#define NQ 60
#define Q_BASE 900000000ull
#define K 10

static char tmpdir[64];

static void clus_embed(const engram_embedder_t *self, const char *const *texts, size_t n, engram_embed_done_fn done,
                       void *cb_ud) {
  float *out = calloc(n * D + 1, sizeof *out);
  size_t i;
  (void)self;
  for (i = 0; i < n; i++) vecgen_clustered(strtoull(texts[i] + 2, NULL, 10), out + i * D, D, CENTRES, SIGMA);
  done(cb_ud, 0, NULL, out, D);
  free(out);
}

static void vec_of(uint64_t id, float *out) { vecgen_clustered(id, out, D, CENTRES, SIGMA); }

static int add_src(ctx_t *c, const char *options, result_t *r) {
  result_reset(r);
  assert_int_equal(engram_manager_add_source(c->mgr, "v", &engram_source_vector, options, "test", 1, capture_cb, r), 0);
  wait_for(c, &r->calls, 1, 30000);
  return r->status;
}

/* Stores items [first, first + n) as keys "i<id>" with text "c:<id>", metadata {"g": id % 4}, in namespace ns. */
static void store_range(ctx_t *c, uint64_t first, size_t n, const char *ns) {
  result_t r = {0};
  engram_entry_t *e = calloc(n, sizeof *e);
  cJSON **vals = calloc(n, sizeof *vals), **metas = calloc(n, sizeof *metas);
  char (*keys)[24] = calloc(n, sizeof *keys);
  engram_opts_t o = {0};
  size_t i;
  o.ns = ns;
  for (i = 0; i < n; i++) {
    char text[32];
    snprintf(keys[i], sizeof keys[i], "i%llu", (unsigned long long)(first + i));
    snprintf(text, sizeof text, "c:%llu", (unsigned long long)(first + i));
    vals[i] = cJSON_CreateString(text);
    metas[i] = cJSON_CreateObject();
    cJSON_AddNumberToObject(metas[i], "g", (double)((first + i) % 4));
    e[i].key = keys[i];
    e[i].value = vals[i];
    e[i].metadata = metas[i];
  }
  assert_int_equal(engram_store_many(c->mgr, e, n, &o, capture_cb, &r), 0);
  wait_for(c, &r.calls, 1, 60000);
  assert_int_equal(r.status, 0);
  assert_int_equal(r.count, n);
  for (i = 0; i < n; i++) cJSON_Delete(vals[i]), cJSON_Delete(metas[i]);
  free(e), free(vals), free(metas), free(keys);
  result_reset(&r);
}

/* The exact top K of query j among ids for which live(id) holds (live NULL: [0, n)). */
typedef int (*live_fn)(uint64_t id);

static size_t exact_top(uint64_t qid, uint64_t first, size_t n, live_fn live, uint64_t *out) {
  float q[D], x[D];
  double best[K];
  size_t got = 0, i, j;
  vec_of(qid, q);
  for (i = 0; i < n; i++) {
    uint64_t id = first + i;
    double s = 0;
    if (live && !live(id)) continue;
    vec_of(id, x);
    for (j = 0; j < D; j++) s += (double)q[j] * x[j];
    if (got < K || s > best[got - 1]) {
      size_t at = got < K ? got++ : K - 1;
      while (at > 0 && best[at - 1] < s) best[at] = best[at - 1], out[at] = out[at - 1], at--;
      best[at] = s;
      out[at] = id;
    }
  }
  return got;
}

/* recall@10 of the source's answers over NQ queries against exact_top; ef 0 = default; every result passes check
 * (NULL = any). */
static double recall(ctx_t *c, uint64_t first, size_t n, live_fn live, int ef, const cJSON *filter, const char *ns,
                     live_fn check) {
  result_t r = {0};
  double hit = 0, total = 0;
  size_t j, i, t;
  engram_opts_t o = {0};
  o.ns = ns;
  for (j = 0; j < NQ; j++) {
    engram_query_t q = ENGRAM_QUERY_INIT;
    float qv[D];
    uint64_t truth[K];
    size_t nt = exact_top(Q_BASE + j, first, n, live, truth);
    vec_of(Q_BASE + j, qv);
    q.vector = qv;
    q.dimension = D;
    q.limit = K;
    q.ef_search = ef;
    q.filter = filter;
    assert_int_equal(s_search(c, &q, &o, &r), 0);
    assert_true(r.n_items <= K);
    for (i = 0; i < r.n_items; i++) {
      uint64_t id = strtoull(result_key(&r, i) + 1, NULL, 10);
      if (check) assert_true(check(id));
      for (t = 0; t < nt; t++)
        if (truth[t] == id) hit++;
    }
    total += (double)nt;
  }
  result_reset(&r);
  return total > 0 ? hit / total : 1.0;
}

static double info_index(ctx_t *c, const char *field) {
  result_t r = {0};
  const cJSON *ix, *f;
  double v;
  assert_int_equal(s_info(c, NULL, &r), 0);
  ix = cJSON_GetObjectItem(r.info, "index");
  assert_non_null(ix);
  f = cJSON_GetObjectItem(ix, field);
  assert_non_null(f);
  v = f->valuedouble;
  result_reset(&r);
  return v;
}

#define N1 3000
#define OPTS_INDEX "\"index\": {\"type\": \"hnsw\", \"m\": 8, \"ef_construction\": 64, \"ef_search\": 24, \"exact_below\": 0}"

/* ---- Recall against exact search, and ef_search per call ---- */

static void recall_and_ef_search(void **state) {
  ctx_t c;
  result_t r = {0};
  double r_def, r_10, r_200, before;
  (void)state;
  ctx_init(&c, NULL);
  assert_int_equal(add_src(&c, "{\"embedder\": \"clus\", \"dimension\": 32, \"metric\": \"cosine\", " OPTS_INDEX "}", &r), 0);
  store_range(&c, 0, N1, NULL);
  assert_int_equal((int)info_index(&c, "nodes"), N1);
  before = info_index(&c, "approximate_searches");
  r_def = recall(&c, 0, N1, NULL, 0, NULL, NULL, NULL);
  r_10 = recall(&c, 0, N1, NULL, 10, NULL, NULL, NULL);
  r_200 = recall(&c, 0, N1, NULL, 200, NULL, NULL, NULL);
  print_message("recall@10: ef_search 10 %.3f, default (24) %.3f, 200 %.3f\n", r_10, r_def, r_200);
  assert_true(info_index(&c, "approximate_searches") >= before + 3 * NQ); /* the graph answered, not the matrix */
  assert_true(r_def >= 0.90);
  assert_true(r_200 >= 0.99);
  assert_true(r_10 < r_def); /* the per-call ef_search is what the walk used */
  result_reset(&r);
  ctx_close(&c);
}

/* ---- Delete and update ---- */

static int live_not3(uint64_t id) { return id % 3 != 0; }
static int in_range(uint64_t id) { return id < N1; }

static void delete_and_update(void **state) {
  ctx_t c;
  result_t r = {0};
  engram_query_t q = ENGRAM_QUERY_INIT;
  float qv[D];
  size_t i;
  double rec;
  (void)state;
  ctx_init(&c, NULL);
  assert_int_equal(add_src(&c, "{\"embedder\": \"clus\", \"dimension\": 32, \"metric\": \"cosine\", " OPTS_INDEX "}", &r), 0);
  store_range(&c, 0, N1, NULL);
  for (i = 0; i < N1; i += 3) {
    char key[24];
    snprintf(key, sizeof key, "i%zu", i);
    assert_int_equal(s_delete(&c, key, NULL, &r), 0);
    assert_int_equal(r.count, 1);
  }
  assert_int_equal((int)info_index(&c, "nodes"), N1 - (N1 + 2) / 3);
  rec = recall(&c, 0, N1, live_not3, 0, NULL, NULL, live_not3); /* never a deleted item */
  print_message("recall@10 after deleting a third: %.3f\n", rec);
  assert_true(rec >= 0.90);
  /* Update: item i7 takes query 5's own vector, so it must come first with score 1; the same vector again (a
   * metadata change) keeps it there; then deleted items come back. */
  assert_int_equal(s_store(&c, "i7", "\"c:900000005\"", NULL, &r), 0);
  vec_of(Q_BASE + 5, qv);
  q.vector = qv;
  q.dimension = D;
  q.limit = 3;
  assert_int_equal(s_search(&c, &q, NULL, &r), 0);
  assert_string_equal(result_key(&r, 0), "i7");
  assert_true(result_item(&r, 0, "score")->valuedouble > 0.99999);
  assert_int_equal(s_store(&c, "i7", "\"c:900000005\"", NULL, &r), 0);
  assert_int_equal(s_search(&c, &q, NULL, &r), 0);
  assert_string_equal(result_key(&r, 0), "i7");
  store_range(&c, 0, N1, NULL); /* every item again (the deleted third inserted, the rest updated in place) */
  assert_int_equal((int)info_index(&c, "nodes"), N1);
  rec = recall(&c, 0, N1, NULL, 0, NULL, NULL, NULL);
  print_message("recall@10 after re-inserting: %.3f\n", rec);
  assert_true(rec >= 0.90);
  /* A namespace holding a few items cleared (each node unlinked), then everything (the graph rebuilt empty). */
  store_range(&c, 50000, 50, "small");
  assert_int_equal((int)info_index(&c, "nodes"), N1 + 50);
  {
    engram_opts_t o = {0};
    o.ns = "small";
    assert_int_equal(s_clear(&c, &o, &r), 0);
    assert_int_equal(r.count, 50);
  }
  assert_int_equal((int)info_index(&c, "nodes"), N1);
  assert_true(recall(&c, 0, N1, NULL, 0, NULL, NULL, in_range) >= 0.90);
  {
    engram_opts_t o = {0};
    o.flags = ENGRAM_OPT_CONFIRM;
    assert_int_equal(s_clear(&c, &o, &r), 0);
  }
  assert_int_equal((int)info_index(&c, "nodes"), 0);
  store_range(&c, 0, 300, NULL);
  assert_int_equal((int)info_index(&c, "nodes"), 300);
  assert_true(recall(&c, 0, 300, NULL, 0, NULL, NULL, NULL) >= 0.90);
  result_reset(&r);
  ctx_close(&c);
}

/* ---- Filters and namespaces during the walk ---- */

static int live_g2(uint64_t id) { return id % 4 == 2; }
static int in_other(uint64_t id) { return id >= 100000 && id < 100000 + 600; }
static int in_default(uint64_t id) { return id < N1; }

static void filters_and_namespaces(void **state) {
  ctx_t c;
  result_t r = {0};
  cJSON *filter = J("{\"g\": 2}");
  double rec;
  (void)state;
  ctx_init(&c, NULL);
  assert_int_equal(add_src(&c, "{\"embedder\": \"clus\", \"dimension\": 32, \"metric\": \"cosine\", " OPTS_INDEX "}", &r), 0);
  store_range(&c, 0, N1, NULL);
  store_range(&c, 100000, 600, "other");
  /* A filter passing a quarter of the items: every result passes it, and the walk still finds the exact top 10
   * among them (not 10 nearest then filtered, which would leave about 2.5). */
  rec = recall(&c, 0, N1, live_g2, 0, filter, NULL, live_g2);
  print_message("recall@10 with a filter passing 1/4: %.3f\n", rec);
  assert_true(rec >= 0.90);
  rec = recall(&c, 100000, 600, NULL, 0, NULL, "other", in_other);
  print_message("recall@10 in a namespace holding 600 of 4600: %.3f\n", rec);
  assert_true(rec >= 0.90);
  rec = recall(&c, 0, N1, NULL, 0, NULL, NULL, in_default);
  assert_true(rec >= 0.90);
  cJSON_Delete(filter);
  result_reset(&r);
  ctx_close(&c);
}

/* ---- Persistence ---- */

static int live_persist(uint64_t id) { return id != 10 && id != 11; }

static void persist_and_reopen(void **state) {
  ctx_t c;
  result_t r = {0}, before[5];
  char opts[400], path[128];
  size_t i, j;
  (void)state;
  snprintf(path, sizeof path, "%s/hnsw.db", tmpdir);
  snprintf(opts, sizeof opts, "{\"embedder\": \"clus\", \"dimension\": 32, \"path\": \"%s\", " OPTS_INDEX "}", path);
  ctx_init(&c, NULL);
  assert_int_equal(add_src(&c, opts, &r), 0);
  store_range(&c, 0, 3000, NULL);
  assert_int_equal(s_delete(&c, "i10", NULL, &r), 0);
  assert_int_equal(s_store(&c, "i11", "\"c:900000001\"", NULL, &r), 0);
  memset(before, 0, sizeof before);
  for (j = 0; j < 5; j++) {
    engram_query_t q = ENGRAM_QUERY_INIT;
    float qv[D];
    vec_of(Q_BASE + j, qv);
    q.vector = qv, q.dimension = D, q.limit = K;
    assert_int_equal(s_search(&c, &q, NULL, &before[j]), 0);
  }
  ctx_close(&c); /* saves the graph in the file */
  /* Reopen: the graph comes from the file (every node), and answers as before. */
  ctx_init(&c, NULL);
  assert_int_equal(add_src(&c, opts, &r), 0);
  assert_int_equal((int)info_index(&c, "loaded_nodes"), 2999);
  assert_int_equal((int)info_index(&c, "nodes"), 2999);
  for (j = 0; j < 5; j++) {
    engram_query_t q = ENGRAM_QUERY_INIT;
    float qv[D];
    vec_of(Q_BASE + j, qv);
    q.vector = qv, q.dimension = D, q.limit = K;
    assert_int_equal(s_search(&c, &q, NULL, &r), 0);
    assert_int_equal(r.n_items, before[j].n_items);
    for (i = 0; i < r.n_items; i++) assert_string_equal(result_key(&r, i), result_key(&before[j], i));
    result_reset(&before[j]);
  }
  assert_true(recall(&c, 0, 3000, live_persist, 0, NULL, NULL, NULL) >= 0.90);
  ctx_close(&c);
  /* Other index options: the saved graph does not fit (m differs) and is rebuilt from the items. */
  snprintf(opts, sizeof opts, "{\"embedder\": \"clus\", \"dimension\": 32, \"path\": \"%s\", \"index\": {\"type\": "
           "\"hnsw\", \"m\": 12, \"exact_below\": 0}}", path);
  ctx_init(&c, NULL);
  assert_int_equal(add_src(&c, opts, &r), 0);
  assert_int_equal((int)info_index(&c, "loaded_nodes"), 0);
  assert_int_equal((int)info_index(&c, "nodes"), 2999);
  assert_int_equal(s_retrieve(&c, "i10", NULL, &r), ENGRAM_ENOTFOUND);
  result_reset(&r);
  ctx_close(&c);
  unlink(path);
}

/* ---- exact_below, and bad input ---- */

static void exact_below_and_bad_input(void **state) {
  ctx_t c;
  result_t r = {0};
  engram_query_t q = ENGRAM_QUERY_INIT;
  float qv[D];
  static const struct {
    const char *index, *needle;
  } bad[] = {
      {"{\"type\": \"hnsw\", \"m\": 1}", "index.m"},
      {"{\"type\": \"hnsw\", \"m\": 1000}", "index.m"},
      {"{\"type\": \"hnsw\", \"ef_search\": 0}", "index.ef_search"},
      {"{\"type\": \"hnsw\", \"ef_construction\": 0}", "index.ef_construction"},
      {"{\"type\": \"hnsw\", \"exact_below\": -1}", "index.exact_below"},
      {"{\"type\": \"hnsw\", \"M\": 16}", "\"M\""},
      {"{\"type\": \"ivf\"}", "\"index\""},
      {"\"hnsw\"", "\"index\""},
  };
  size_t i;
  (void)state;
  ctx_init(&c, NULL);
  for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char opts[300];
    snprintf(opts, sizeof opts, "{\"embedder\": \"clus\", \"dimension\": 32, \"index\": %s}", bad[i].index);
    assert_int_equal(add_src(&c, opts, &r), ENGRAM_EINVAL);
    if (strstr(r.message, bad[i].needle) == NULL) fail_msg("%s: message '%s' does not name %s", bad[i].index, r.message, bad[i].needle);
  }
  /* Below exact_below the matrix answers (exactly); the graph is kept all the same. */
  assert_int_equal(add_src(&c, "{\"embedder\": \"clus\", \"dimension\": 32, \"index\": {\"type\": \"hnsw\", "
                               "\"exact_below\": 1000}}", &r), 0);
  store_range(&c, 0, 500, NULL);
  assert_true(recall(&c, 0, 500, NULL, 0, NULL, NULL, NULL) == 1.0);
  assert_int_equal((int)info_index(&c, "approximate_searches"), 0);
  assert_true(info_index(&c, "exact_searches") >= NQ);
  assert_int_equal((int)info_index(&c, "nodes"), 500);
  /* ef_search per call out of range, and a NaN vector: refused at the call, the field named. */
  vec_of(Q_BASE, qv);
  q.vector = qv, q.dimension = D, q.limit = K;
  q.ef_search = -1;
  assert_int_equal(engram_search(c.mgr, &q, NULL, capture_cb, &r), ENGRAM_EINVAL);
  assert_non_null(strstr(engram_last_error(), "query.ef_search"));
  q.ef_search = 100001;
  assert_int_equal(engram_search(c.mgr, &q, NULL, capture_cb, &r), ENGRAM_EINVAL);
  q.ef_search = 0;
  qv[3] = NAN;
  assert_int_equal(engram_search(c.mgr, &q, NULL, capture_cb, &r), ENGRAM_EINVAL);
  result_reset(&r);
  ctx_close(&c);
}

/* ---- Scores: the graph's answers score exactly as exact search's ---- */

/* The walk computes distances with its own kernel (vector_walk.c: FMA, another summation order), whose last bits
 * differ from the exact kernel's; the scores returned must still be the exact kernel's, bit for bit, so that a
 * result's score does not depend on which path found it. Two sources over the same items and options, one always
 * through the graph (exact_below 0), one exact; every key both return must carry the same score. */
static void scores_match_exact_search(void **state) {
  ctx_t c;
  result_t r = {0}, ra = {0}, rx = {0};
  engram_opts_t oa = {0}, ox = {0};
  size_t j, i, t, common = 0;
  (void)state;
  ctx_init(&c, NULL);
  assert_int_equal(add_src(&c, "{\"embedder\": \"clus\", \"dimension\": 32, \"metric\": \"dot\", \"index\": {\"type\": "
                               "\"hnsw\", \"exact_below\": 0}}", &r), 0);
  result_reset(&r);
  assert_int_equal(engram_manager_add_source(c.mgr, "x", &engram_source_vector,
                                             "{\"embedder\": \"clus\", \"dimension\": 32, \"metric\": \"dot\"}", "test", 0,
                                             capture_cb, &r), 0);
  wait_for(&c, &r.calls, 1, 30000);
  assert_int_equal(r.status, 0);
  result_reset(&r);
  store_range(&c, 0, 2000, NULL);
  {
    result_t rs = {0};
    engram_entry_t e[50];
    cJSON *vals[50];
    char keys[50][24], text[32];
    engram_opts_t o = {0};
    size_t b, k;
    o.source = "x";
    for (b = 0; b < 2000; b += 50) {
      memset(e, 0, sizeof e);
      for (k = 0; k < 50; k++) {
        snprintf(keys[k], sizeof keys[k], "i%zu", b + k);
        snprintf(text, sizeof text, "c:%zu", b + k);
        vals[k] = cJSON_CreateString(text);
        e[k].key = keys[k];
        e[k].value = vals[k];
      }
      assert_int_equal(engram_store_many(c.mgr, e, 50, &o, capture_cb, &rs), 0);
      wait_for(&c, &rs.calls, 1, 60000);
      assert_int_equal(rs.status, 0);
      for (k = 0; k < 50; k++) cJSON_Delete(vals[k]);
      result_reset(&rs);
    }
  }
  oa.source = "v";
  ox.source = "x";
  for (j = 0; j < NQ; j++) {
    engram_query_t q = ENGRAM_QUERY_INIT;
    float qv[D];
    vec_of(Q_BASE + j, qv);
    q.vector = qv, q.dimension = D, q.limit = K, q.ef_search = 200;
    assert_int_equal(s_search(&c, &q, &oa, &ra), 0);
    assert_int_equal(s_search(&c, &q, &ox, &rx), 0);
    assert_true(info_index(&c, "approximate_searches") > 0);
    for (i = 0; i < ra.n_items; i++)
      for (t = 0; t < rx.n_items; t++)
        if (strcmp(result_key(&ra, i), result_key(&rx, t)) == 0) {
          double sa = result_item(&ra, i, "score")->valuedouble, sx = result_item(&rx, t, "score")->valuedouble;
          if (sa != sx) fail_msg("query %zu, %s: score %.17g through the graph, %.17g exact", j, result_key(&ra, i), sa, sx);
          common++;
        }
    result_reset(&ra);
    result_reset(&rx);
  }
  assert_true(common >= NQ * K * 9 / 10); /* the two answers mostly agree, so the comparison covered them */
  ctx_close(&c);
}

/* ---- The index itself: a saved graph whose items partly went away ---- */

static uint64_t ids_of_rows[4000];
static uint64_t row_id_fn(uint32_t row, void *ud) { return (void)ud, ids_of_rows[row]; }
/* Items whose id is a multiple of 5 are gone when the graph is loaded again. */
static uint32_t id_row_fn(uint64_t id, void *ud) {
  const engram__matrix_t *m = ud;
  uint32_t r;
  if (id % 5 == 0) return UINT32_MAX;
  for (r = 0; r < m->rows; r++)
    if (ids_of_rows[r] == id) return r;
  return UINT32_MAX;
}
static int not_gone(uint32_t row, float raw, void *ud) { return (void)raw, (void)ud, ids_of_rows[row] % 5 != 0; }

/* Recall@10 of the graph against exact search (both through accept), over NQ held-out queries; no result may be
 * a refused row. */
static double graph_recall(engram__hnsw_t *h, const engram__matrix_t *m, engram__accept_fn accept) {
  size_t j, i, t, n, nx, hit = 0;
  for (j = 0; j < NQ; j++) {
    engram__hit_t a[K], x[K];
    float qv[D];
    vec_of(Q_BASE + j, qv);
    assert_int_equal(engram__hnsw_search(h, qv, K, 64, accept, NULL, NULL, a, &n), 0);
    assert_int_equal(engram__knn_topk(m, qv, ENGRAM__METRIC_DOT, K, accept, NULL, NULL, x, &nx), 0);
    for (i = 0; i < n; i++) {
      if (accept != NULL) assert_true(accept(a[i].row, a[i].raw, NULL));
      for (t = 0; t < nx; t++) hit += a[i].row == x[t].row;
    }
  }
  return (double)hit / (double)(NQ * K);
}

static void graph_load_without_gone_items(void **state) {
  engram__matrix_t m, dense;
  engram__hnsw_t *h, *h2;
  engram__hnsw_params_t p = {8, 100, 64, 0};
  float v[D];
  size_t i, n_live, n_gone = 0;
  uint64_t next = 0;
  void *buf;
  size_t len;
  (void)state;
  memset(&m, 0, sizeof m);
  memset(&dense, 0, sizeof dense);
  m.dim = dense.dim = D;
  /* 1,000 rows before the index, 2,000 after (the matrix grows under it). */
  for (i = 0; i < 1000; i++, next++) {
    vec_of(next, v);
    ids_of_rows[i] = next;
    assert_int_equal(engram__matrix_append(&m, v), 0);
  }
  assert_int_equal(engram__hnsw_new(&h, &m, ENGRAM__METRIC_DOT, &p), 0);
  for (i = 0; i < 1000; i++) {
    assert_int_equal(engram__hnsw_reserve(h, i + 1), 0);
    engram__hnsw_insert(h, (uint32_t)i);
  }
  for (i = 1000; i < 3000; i++, next++) {
    vec_of(next, v);
    ids_of_rows[i] = next;
    assert_int_equal(engram__matrix_append(&m, v), 0);
    assert_int_equal(engram__hnsw_reserve(h, i + 1), 0);
    engram__hnsw_insert(h, (uint32_t)i);
  }
  /* Deletes as the source does them: unlink the node, then the matrix's swap-remove moves the last row into the
   * hole. */
  for (i = 0; i < 400; i++) {
    uint32_t row = (uint32_t)((i * 7919) % m.rows), last = (uint32_t)m.rows - 1;
    engram__hnsw_remove(h, row);
    if (row != last) engram__hnsw_moved(h, last, row);
    ids_of_rows[row] = ids_of_rows[last];
    engram__matrix_swap_remove(&m, row);
  }
  assert_int_equal((int)engram__hnsw_count(h), 2600);
  /* The exact search over the matrix after the deletes gives a copy's scores bit for bit. */
  for (i = 0; i < m.rows; i++) assert_int_equal(engram__matrix_append(&dense, engram__matrix_row(&m, i)), 0);
  for (i = 0; i < NQ; i++) {
    engram__hit_t a[K], b[K];
    size_t na, nb, t;
    vec_of(Q_BASE + i, v);
    assert_int_equal(engram__knn_topk(&m, v, ENGRAM__METRIC_DOT, K, NULL, NULL, NULL, a, &na), 0);
    assert_int_equal(engram__knn_topk(&dense, v, ENGRAM__METRIC_DOT, K, NULL, NULL, NULL, b, &nb), 0);
    assert_int_equal(na, nb);
    for (t = 0; t < na; t++) assert_true(a[t].row == b[t].row && a[t].raw == b[t].raw);
  }
  engram__matrix_free(&dense);
  assert_true(graph_recall(h, &m, NULL) >= 0.90);
  /* Saved, then loaded with a fifth of its items gone: those nodes are dropped (their neighbours relinked from
   * the dropped nodes' links), the rest answer, and the gone rows are inserted again afterwards. */
  assert_non_null(buf = engram__hnsw_save(h, row_id_fn, NULL, &len));
  engram__hnsw_free(h);
  assert_int_equal(engram__hnsw_new(&h2, &m, ENGRAM__METRIC_DOT, &p), 0);
  assert_int_equal(engram__hnsw_load(h2, buf, len, id_row_fn, &m), 0);
  for (i = 0; i < m.rows; i++) {
    int gone = ids_of_rows[i] % 5 == 0;
    n_gone += (size_t)gone;
    assert_int_equal(engram__hnsw_has_row(h2, (uint32_t)i), !gone);
  }
  n_live = m.rows - n_gone;
  assert_true(n_gone > 400);
  assert_int_equal(engram__hnsw_count(h2), n_live);
  print_message("graph loaded without %zu gone items: recall@10 %.3f\n", n_gone, graph_recall(h2, &m, not_gone));
  assert_true(graph_recall(h2, &m, not_gone) >= 0.90);
  for (i = 0; i < m.rows; i++)
    if (!engram__hnsw_has_row(h2, (uint32_t)i)) engram__hnsw_insert(h2, (uint32_t)i);
  assert_int_equal(engram__hnsw_count(h2), m.rows);
  assert_true(graph_recall(h2, &m, NULL) >= 0.90);
  /* A graph of other parameters, or bytes cut short, is refused and leaves the index empty. */
  assert_int_equal(engram__hnsw_load(h2, buf, len - 3, id_row_fn, &m), ENGRAM_EINVAL);
  assert_int_equal(engram__hnsw_count(h2), 0);
  engram_free(buf);
  engram__hnsw_free(h2);
  engram__matrix_free(&m);
}

static int group_setup(void **state) {
  engram_embedder_t e;
  (void)state;
  memset(&e, 0, sizeof e);
  e.dimension = D;
  e.embed = clus_embed;
  snprintf(tmpdir, sizeof tmpdir, "/tmp/engram_test_hnsw_XXXXXX");
  if (mkdtemp(tmpdir) == NULL) return -1;
  return engram_register_embedder("clus", &e) == 0 ? 0 : -1;
}

static int group_teardown(void **state) {
  (void)state;
  engram_unregister_embedder("clus");
  rmdir(tmpdir);
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(recall_and_ef_search),
      cmocka_unit_test(delete_and_update),
      cmocka_unit_test(filters_and_namespaces),
      cmocka_unit_test(persist_and_reopen),
      cmocka_unit_test(exact_below_and_bad_input),
      cmocka_unit_test(scores_match_exact_search),
      cmocka_unit_test(graph_load_without_gone_items),
  };
  return cmocka_run_group_tests_name("hnsw", tests, group_setup, group_teardown);
}
