/*
 * test_hybrid.c — search modes and fusion (issue 15 item 3): the vector source's text (BM25), vector and hybrid
 * modes per call and as the source's default, reciprocal rank fusion and weighted fusion checked against values
 * the test computes from the two rankings it reads back, the BM25 index following writes and deletes, the
 * memory_search tool's mode, engram_search_sources over a cache and a vector source (de-duplicated by key, a
 * failing or slow source leaving partial results; a manager on its own thread, replies through a completion queue),
 * bad input refused at the call with no callback, and every allocation failing once (ENOMEM, no leak).
 *
 * The collection is made by hand so that the keyword and meaning rankings differ: the "concept" embedder maps
 * each word of a small lexicon to one of three axes (animal, vehicle, food), so "kitten and puppy" is close to
 * the query "dog" by vector yet shares no word with it, while "dog" appears in items that are mostly about
 * cars or food. Every call's callbacks are counted: exactly one per accepted call, none for a refused one.
 */
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support/failing_alloc.h"
#include "support/harness.h"

/* ---- The concept embedder: three axes, a lexicon ---- */

static const char *const lexicon[3][6] = {
    {"cat", "dog", "kitten", "puppy", "pet", "animal"},
    {"car", "truck", "bus", "drives", "vehicle", "road"},
    {"bread", "soup", "apple", "food", "eat", "meal"},
};

static void concept_vector(const char *text, float *out) {
  const char *p = text;
  out[0] = out[1] = out[2] = 0;
  while (*p) {
    char word[32];
    size_t n = 0;
    int a, w;
    while (*p && !((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z'))) p++;
    while (*p && ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z'))) {
      if (n + 1 < sizeof word) word[n++] = (char)(*p | 0x20);
      p++;
    }
    word[n] = '\0';
    for (a = 0; a < 3; a++)
      for (w = 0; w < 6; w++)
        if (strcmp(word, lexicon[a][w]) == 0) out[a] += 1;
  }
}

static void concept_embed(const engram_embedder_t *self, const char *const *texts, size_t n, engram_embed_done_fn done,
                          void *cb_ud) {
  float *out = calloc(n * 3 + 1, sizeof *out);
  size_t i;
  (void)self;
  for (i = 0; i < n; i++) concept_vector(texts[i], out + i * 3);
  done(cb_ud, 0, NULL, out, 3);
  free(out);
}

static void fail_embed(const engram_embedder_t *self, const char *const *texts, size_t n, engram_embed_done_fn done,
                       void *cb_ud) {
  (void)self, (void)texts, (void)n;
  done(cb_ud, ENGRAM_EEMBED, "model unavailable", NULL, 0);
}

/* "held": documents embed at once; a query is held until the test sets `release` (polled by a timer on the
 * source's loop), so that source stays slow for as long as the test needs — a condition, not a duration. */
static atomic_int release;

typedef struct {
  uv_timer_t timer;
  char *text;
  engram_embed_done_fn done;
  void *cb_ud;
} held_t;

static void held_closed(uv_handle_t *h) {
  held_t *q = h->data;
  free(q->text);
  free(q);
}

static void held_poll(uv_timer_t *t) {
  held_t *q = t->data;
  float v[3];
  if (!atomic_load(&release)) return;
  concept_vector(q->text, v);
  q->done(q->cb_ud, 0, NULL, v, 3);
  uv_timer_stop(t);
  uv_close((uv_handle_t *)t, held_closed);
}

static void held_embed(const engram_embedder_t *self, const char *const *texts, size_t n, engram_embed_done_fn done,
                       void *cb_ud) {
  held_t *q;
  if (engram_embed_purpose(cb_ud) == ENGRAM_EMBED_DOCUMENT) {
    concept_embed(self, texts, n, done, cb_ud);
    return;
  }
  q = calloc(1, sizeof *q);
  q->text = strdup(texts[0]);
  q->done = done;
  q->cb_ud = cb_ud;
  uv_timer_init(engram_embed_loop(cb_ud), &q->timer);
  q->timer.data = q;
  uv_timer_start(&q->timer, held_poll, 5, 5);
}

/* ---- The collection ---- */

typedef struct {
  const char *key, *text;
} doc_t;

static const doc_t docs[] = {
    {"a", "kitten and puppy playing"},      /* animal only, no "dog": first by vector, absent from BM25 */
    {"b", "the dog drives a car on the road to the shop"}, /* mostly vehicle */
    {"c", "dog dog dog"},                   /* "dog" three times: first by BM25 */
    {"d", "soup with bread"},               /* food only */
    {"e", "a truck full of dog food"},      /* a little of everything */
};
#define N_DOCS (sizeof docs / sizeof docs[0])

static int add_source(ctx_t *c, const char *name, const engram_source_vtable_t *vt, const char *options, result_t *r) {
  result_reset(r);
  assert_int_equal(engram_manager_add_source(c->mgr, name, vt, options, "test", 0, capture_cb, r), 0);
  wait_for(c, &r->calls, 1, 30000);
  assert_int_equal(r->calls, 1);
  return r->status;
}

static void load_docs(ctx_t *c, const char *source) {
  engram_opts_t o = {0};
  result_t r = {0};
  char json[128];
  size_t i;
  o.source = source;
  for (i = 0; i < N_DOCS; i++) {
    snprintf(json, sizeof json, "\"%s\"", docs[i].text);
    assert_int_equal(s_store(c, docs[i].key, json, &o, &r), 0);
    result_reset(&r);
  }
}

static void setup_world(ctx_t *c, const char *vector_options) {
  result_t r = {0};
  ctx_init(c, NULL);
  assert_int_equal(add_source(c, "vectors", &engram_source_vector, vector_options, &r), 0);
  result_reset(&r);
  load_docs(c, "vectors");
}

/* Searches source with text in mode (fusion, alpha); asserts one callback and success. */
static void search(ctx_t *c, const char *source, const char *text, int mode, int fusion, double alpha, result_t *r) {
  engram_query_t q = ENGRAM_QUERY_INIT;
  engram_opts_t o = {0};
  q.text = text;
  q.mode = mode;
  q.fusion = fusion;
  q.alpha = alpha;
  q.limit = 100;
  o.source = source;
  result_reset(r);
  assert_int_equal(s_search(c, &q, &o, r), 0);
  assert_int_equal(r->calls, 1);
}

static double score_of(const result_t *r, size_t i) { return result_item(r, i, "score")->valuedouble; }

/* 1-based rank of key in r, 0 when absent; *score gets its score. */
static size_t rank_of(const result_t *r, const char *key, double *score) {
  size_t i;
  for (i = 0; i < r->n_items; i++)
    if (strcmp(result_key(r, i), key) == 0) {
      if (score) *score = score_of(r, i);
      return i + 1;
    }
  if (score) *score = 0;
  return 0;
}

typedef struct {
  char key[16];
  double score;
} expect_t;

static int cmp_expect(const void *a, const void *b) {
  const expect_t *x = a, *y = b;
  if (x->score != y->score) return x->score > y->score ? -1 : 1;
  return strcmp(x->key, y->key);
}

/* The fused ranking the test expects from lists l[0..n): RRF (k) or weighted (w), over the union of their keys. */
static size_t expected_fusion(const result_t *const *l, const double *w, size_t n, int fusion, double k, expect_t *out) {
  size_t m = 0, i, j, t;
  double norm = 0;
  for (i = 0; i < n; i++) norm += fusion == ENGRAM_FUSION_RRF ? w[i] / (k + 1) : w[i];
  for (i = 0; i < n; i++)
    for (j = 0; j < l[i]->n_items; j++) {
      const char *key = result_key(l[i], j);
      for (t = 0; t < m && strcmp(out[t].key, key) != 0; t++) {
      }
      if (t < m) continue;
      snprintf(out[m].key, sizeof out[m].key, "%s", key);
      out[m].score = 0;
      for (t = 0; t < n; t++) {
        double s;
        size_t r = rank_of(l[t], key, &s);
        if (r == 0) continue;
        out[m].score += fusion == ENGRAM_FUSION_RRF ? w[t] / (k + (double)r) : w[t] * s;
      }
      out[m].score /= norm;
      m++;
    }
  qsort(out, m, sizeof *out, cmp_expect);
  return m;
}

static void expect_ranking(const result_t *r, const expect_t *e, size_t n) {
  size_t i;
  assert_int_equal(r->n_items, n);
  for (i = 0; i < n; i++) {
    assert_string_equal(result_key(r, i), e[i].key);
    if (fabs(score_of(r, i) - e[i].score) > 1e-9)
      fail_msg("item %zu (%s): score %.12f, expected %.12f", i, e[i].key, score_of(r, i), e[i].score);
    assert_true(score_of(r, i) >= 0 && score_of(r, i) <= 1);
  }
}

/* ---- Modes on the vector source ---- */

static void modes_give_their_orders(void **state) {
  ctx_t c;
  result_t text = {0}, vec = {0}, hyb = {0}, dflt = {0};
  size_t i;
  (void)state;
  setup_world(&c, "{\"dimension\": 3, \"embedder\": \"concept\"}");
  /* text: BM25 — only items holding "dog", the one saying it three times first; "a" shares no word. */
  search(&c, "vectors", "dog", ENGRAM_MODE_TEXT, 0, 0, &text);
  assert_int_equal(text.n_items, 3);
  assert_string_equal(result_key(&text, 0), "c");
  assert_int_equal(rank_of(&text, "a", NULL), 0);
  assert_int_equal(rank_of(&text, "d", NULL), 0);
  /* vector: "a" (pure animal) ties "c" at the top (by key), the food-only "d" comes last. */
  search(&c, "vectors", "dog", ENGRAM_MODE_VECTOR, 0, 0, &vec);
  assert_int_equal(vec.n_items, N_DOCS);
  assert_string_equal(result_key(&vec, 0), "a");
  assert_string_equal(result_key(&vec, 1), "c");
  assert_string_equal(result_key(&vec, N_DOCS - 1), "d");
  for (i = 1; i < text.n_items; i++) assert_true(score_of(&text, i - 1) >= score_of(&text, i));
  /* hybrid: "c" is near the top of both lists and wins; "a", first by vector only, still makes the list. */
  search(&c, "vectors", "dog", ENGRAM_MODE_HYBRID, ENGRAM_FUSION_RRF, 0, &hyb);
  assert_int_equal(hyb.n_items, N_DOCS);
  assert_string_equal(result_key(&hyb, 0), "c");
  assert_true(rank_of(&hyb, "a", NULL) > 0);
  assert_true(fabs(score_of(&hyb, 0) - 1.0 / 6 / (2.0 / 6) - 1.0 / 7 / (2.0 / 6)) < 1e-9); /* ranks 1 and 2, k 5 */
  /* The source's default (vector here) is what mode DEFAULT gives. */
  search(&c, "vectors", "dog", ENGRAM_MODE_DEFAULT, 0, 0, &dflt);
  assert_string_equal(result_key(&dflt, 0), "a");
  result_reset(&text), result_reset(&vec), result_reset(&hyb), result_reset(&dflt);
  ctx_close(&c);
  /* The "rrf_k" option replaces the default k (5): the same two ranks 1 and 2 under k = 60. */
  setup_world(&c, "{\"dimension\": 3, \"embedder\": \"concept\", \"rrf_k\": 60}");
  search(&c, "vectors", "dog", ENGRAM_MODE_HYBRID, ENGRAM_FUSION_RRF, 0, &hyb);
  assert_string_equal(result_key(&hyb, 0), "c");
  assert_true(fabs(score_of(&hyb, 0) - 1.0 / 61 / (2.0 / 61) - 1.0 / 62 / (2.0 / 61)) < 1e-9);
  result_reset(&hyb);
  ctx_close(&c);
}

static void rrf_and_weighted_arithmetic(void **state) {
  ctx_t c;
  result_t text = {0}, vec = {0}, hyb = {0};
  const result_t *lists[2];
  expect_t e[16];
  double w[2] = {1, 1};
  size_t n;
  static const char *const queries[] = {"dog", "dog food", "car road dog", "puppy"};
  size_t qi;
  (void)state;
  setup_world(&c, "{\"dimension\": 3, \"embedder\": \"concept\"}");
  for (qi = 0; qi < sizeof queries / sizeof *queries; qi++) {
    search(&c, "vectors", queries[qi], ENGRAM_MODE_TEXT, 0, 0, &text);
    search(&c, "vectors", queries[qi], ENGRAM_MODE_VECTOR, 0, 0, &vec);
    lists[0] = &vec;
    lists[1] = &text;
    /* RRF: Σ 1 / (k + rank) over the lists holding the item, divided by 2 / (k + 1); the source's k is 5. */
    search(&c, "vectors", queries[qi], ENGRAM_MODE_HYBRID, ENGRAM_FUSION_RRF, 0, &hyb);
    w[0] = w[1] = 1;
    n = expected_fusion(lists, w, 2, ENGRAM_FUSION_RRF, 5, e);
    expect_ranking(&hyb, e, n);
    /* Weighted: alpha · vector score + (1 − alpha) · text score. */
    search(&c, "vectors", queries[qi], ENGRAM_MODE_HYBRID, ENGRAM_FUSION_WEIGHTED, 0.3, &hyb);
    w[0] = 0.3, w[1] = 0.7;
    n = expected_fusion(lists, w, 2, ENGRAM_FUSION_WEIGHTED, 0, e);
    expect_ranking(&hyb, e, n);
    /* alpha 1 is the vector order, alpha 0 puts the text order first. */
    search(&c, "vectors", queries[qi], ENGRAM_MODE_HYBRID, ENGRAM_FUSION_WEIGHTED, 1.0, &hyb);
    assert_string_equal(result_key(&hyb, 0), result_key(&vec, 0));
    if (text.n_items > 0) {
      search(&c, "vectors", queries[qi], ENGRAM_MODE_HYBRID, ENGRAM_FUSION_WEIGHTED, 0.0, &hyb);
      assert_string_equal(result_key(&hyb, 0), result_key(&text, 0));
    }
  }
  result_reset(&text), result_reset(&vec), result_reset(&hyb);
  ctx_close(&c);
}

static void source_default_mode_and_index_upkeep(void **state) {
  ctx_t c;
  result_t r = {0}, text = {0}, vec = {0};
  const result_t *lists[2];
  double w[2] = {0.25, 0.75};
  expect_t e[16];
  engram_opts_t o = {0};
  size_t n;
  (void)state;
  /* A source whose default is hybrid with alpha 0.25: mode DEFAULT fuses by weight. */
  setup_world(&c, "{\"dimension\": 3, \"embedder\": \"concept\", \"search_mode\": \"hybrid\", \"alpha\": 0.25}");
  search(&c, "vectors", "dog", ENGRAM_MODE_TEXT, 0, 0, &text);
  search(&c, "vectors", "dog", ENGRAM_MODE_VECTOR, 0, 0, &vec);
  search(&c, "vectors", "dog", ENGRAM_MODE_DEFAULT, 0, 0, &r);
  lists[0] = &vec;
  lists[1] = &text;
  n = expected_fusion(lists, w, 2, ENGRAM_FUSION_WEIGHTED, 0, e);
  expect_ranking(&r, e, n);
  /* The BM25 index follows deletes, overwrites and new items. */
  o.source = "vectors";
  assert_int_equal(s_delete(&c, "c", &o, &r), 0);
  result_reset(&r);
  assert_int_equal(s_store(&c, "b", "\"soup and bread\"", &o, &r), 0); /* no "dog" any more */
  result_reset(&r);
  assert_int_equal(s_store(&c, "f", "{\"note\": \"my dog\", \"n\": 1}", &o, &r), 0); /* a string leaf of an object */
  result_reset(&r);
  search(&c, "vectors", "dog", ENGRAM_MODE_TEXT, 0, 0, &text);
  assert_int_equal(text.n_items, 2);
  assert_true(rank_of(&text, "e", NULL) > 0 && rank_of(&text, "f", NULL) > 0);
  /* min_score, offset and limit apply to the fused ranking. */
  {
    engram_query_t q = ENGRAM_QUERY_INIT;
    q.text = "dog";
    q.mode = ENGRAM_MODE_HYBRID;
    q.limit = 1;
    q.offset = 1;
    assert_int_equal(s_search(&c, &q, &o, &r), 0);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.n_items, 1);
    result_reset(&r);
    q.offset = 0;
    q.limit = 100;
    q.min_score = 0.999;
    assert_int_equal(s_search(&c, &q, &o, &r), 0);
    for (n = 0; n < r.n_items; n++) assert_true(score_of(&r, n) >= 0.999);
    result_reset(&r);
  }
  result_reset(&text), result_reset(&vec);
  ctx_close(&c);
}

/* ---- Bad input: refused at the call, with the field named, nothing called back ---- */

static void expect_refused(ctx_t *c, const engram_query_t *q, const char *source, int want, const char *msg,
                           result_t *r) {
  engram_opts_t o = {0};
  o.source = source;
  result_reset(r);
  assert_int_equal(engram_search(c->mgr, q, &o, capture_cb, r), want);
  if (strstr(engram_last_error(), msg) == NULL) fail_msg("last error '%s' lacks '%s'", engram_last_error(), msg);
}

static void bad_input_is_refused(void **state) {
  ctx_t c;
  result_t r = {0};
  engram_query_t q = ENGRAM_QUERY_INIT;
  (void)state;
  setup_world(&c, "{\"dimension\": 3, \"embedder\": \"concept\"}");
  assert_int_equal(add_source(&c, "cache", &engram_source_cache, NULL, &r), 0);
  q.text = "dog";
  q.mode = 7;
  expect_refused(&c, &q, "vectors", ENGRAM_EINVAL, "query.mode: 7 is not a mode", &r);
  q.mode = -1;
  expect_refused(&c, &q, "vectors", ENGRAM_EINVAL, "query.mode: -1", &r);
  q.mode = ENGRAM_MODE_HYBRID;
  q.fusion = ENGRAM_FUSION_WEIGHTED;
  q.alpha = 1.5;
  expect_refused(&c, &q, "vectors", ENGRAM_EINVAL, "query.alpha: 1.5, must be in [0, 1]", &r);
  q.alpha = -0.01;
  expect_refused(&c, &q, "vectors", ENGRAM_EINVAL, "query.alpha", &r);
  q.alpha = NAN;
  expect_refused(&c, &q, "vectors", ENGRAM_EINVAL, "query.alpha", &r);
  q.alpha = 0.5;
  q.fusion = 9;
  expect_refused(&c, &q, "vectors", ENGRAM_EINVAL, "query.fusion: 9 is not a fusion", &r);
  q.fusion = ENGRAM_FUSION_RRF;
  q.text = "  ,, ";
  expect_refused(&c, &q, "vectors", ENGRAM_EINVAL, "query.text: mode hybrid needs words", &r);
  q.text = NULL;
  expect_refused(&c, &q, "vectors", ENGRAM_EINVAL, "query.text: mode hybrid needs words", &r);
  q.text = "dog";
  expect_refused(&c, &q, "cache", ENGRAM_ENOTSUP, "query.mode: source 'cache' (cache) ranks by text only", &r);
  q.mode = ENGRAM_MODE_VECTOR;
  expect_refused(&c, &q, "cache", ENGRAM_ENOTSUP, "ranks by text only", &r);
  /* count takes a query too: the same checks. */
  q.mode = 4;
  result_reset(&r);
  assert_int_equal(engram_count(c.mgr, &q, NULL, capture_cb, &r), ENGRAM_EINVAL);
  /* The source options. */
  assert_int_equal(add_source(&c, "v2", &engram_source_vector, "{\"search_mode\": \"semantic\"}", &r), ENGRAM_EINVAL);
  assert_non_null(strstr(r.message, "option \"search_mode\": 'semantic' is not a mode"));
  assert_int_equal(add_source(&c, "v3", &engram_source_vector, "{\"alpha\": 2}", &r), ENGRAM_EINVAL);
  assert_non_null(strstr(r.message, "option \"alpha\": must be a number in [0, 1]"));
  assert_int_equal(add_source(&c, "v4", &engram_source_vector, "{\"rrf_k\": 0}", &r), ENGRAM_EINVAL);
  assert_non_null(strstr(r.message, "rrf_k"));
  result_reset(&r);
  run_barrier(&c);
  assert_int_equal(r.calls, 0); /* none of the refused calls called back */
  ctx_close(&c);
}

/* ---- The memory_search tool ---- */

static void tool_takes_mode(void **state) {
  ctx_t c;
  result_t r = {0}, vec = {0};
  engram_opts_t o = {0};
  cJSON *v;
  (void)state;
  setup_world(&c, "{\"dimension\": 3, \"embedder\": \"concept\"}");
  o.source = "vectors";
  search(&c, "vectors", "dog", ENGRAM_MODE_VECTOR, 0, 0, &vec);
  result_reset(&r);
  assert_int_equal(engram_tools_call(c.mgr, "memory_search", "{\"query\": \"dog\", \"mode\": \"vector\", \"limit\": 100}",
                                     &o, capture_cb, &r),
                   0);
  wait_for(&c, &r.calls, 1, 30000);
  assert_int_equal(r.status, 0);
  v = J(r.text);
  assert_string_equal(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(v, "results"), 0), "key")->valuestring,
                      result_key(&vec, 0));
  cJSON_Delete(v);
  result_reset(&r);
  assert_int_equal(engram_tools_call(c.mgr, "memory_search",
                                     "{\"query\": {\"text\": \"dog\", \"mode\": \"hybrid\", \"alpha\": 0}}", &o, capture_cb, &r),
                   0);
  wait_for(&c, &r.calls, 1, 30000);
  v = J(r.text);
  assert_string_equal(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(v, "results"), 0), "key")->valuestring,
                      "c");
  cJSON_Delete(v);
  /* A source that ranks by text only: an error result naming the field, through the one callback. */
  assert_int_equal(add_source(&c, "cache", &engram_source_cache, NULL, &r), 0);
  result_reset(&r);
  assert_int_equal(engram_tools_call(c.mgr, "memory_search",
                                     "{\"query\": \"dog\", \"mode\": \"hybrid\", \"memory_source\": \"cache\"}", NULL,
                                     capture_cb, &r),
                   0);
  wait_for(&c, &r.calls, 1, 30000);
  assert_int_equal(r.status, ENGRAM_ENOTSUP);
  if (strstr(r.text, "query.mode: source 'cache' (cache) ranks by text only") == NULL) fail_msg("result: %s", r.text);
  result_reset(&r), result_reset(&vec);
  run_barrier(&c);
  ctx_close(&c);
}

/* ---- engram_search_sources ---- */

static void sources(ctx_t *c, const char *const *names, size_t n, const char *text, int mode,
                    const engram_fusion_opts_t *f, const engram_opts_t *o, result_t *r) {
  engram_query_t q = ENGRAM_QUERY_INIT;
  q.text = text;
  q.mode = mode;
  q.limit = 100;
  result_reset(r);
  assert_int_equal(engram_search_sources(c->mgr, names, n, &q, f, o, capture_cb, r), 0);
  wait_for(c, &r->calls, 1, 60000);
  assert_int_equal(r->calls, 1);
}

static void fused_across_cache_and_vectors(void **state) {
  static const char *const names[] = {"persistent", "vectors"};
  ctx_t c;
  result_t r = {0}, p = {0}, v = {0};
  const result_t *lists[2];
  engram_fusion_opts_t f = {0};
  engram_opts_t o = {0};
  double w[2] = {1, 1};
  expect_t e[16];
  size_t n, i, j;
  (void)state;
  setup_world(&c, "{\"dimension\": 3, \"embedder\": \"concept\"}");
  assert_int_equal(add_source(&c, "persistent", &engram_source_cache, NULL, &r), 0);
  o.source = "persistent";
  assert_int_equal(s_store(&c, "c", "\"dog dog dog\"", &o, &r), 0); /* in both sources */
  result_reset(&r);
  assert_int_equal(s_store(&c, "e", "\"a truck full of dog food\"", &o, &r), 0);
  result_reset(&r);
  assert_int_equal(s_store(&c, "x", "\"the dog barks\"", &o, &r), 0); /* only here */
  result_reset(&r);
  /* The two rankings as each source gives them, then the fused call. */
  search(&c, "persistent", "dog", ENGRAM_MODE_DEFAULT, 0, 0, &p);
  search(&c, "vectors", "dog", ENGRAM_MODE_HYBRID, ENGRAM_FUSION_RRF, 0, &v);
  sources(&c, names, 2, "dog", ENGRAM_MODE_HYBRID, NULL, NULL, &r);
  assert_int_equal(r.status, 0);
  lists[0] = &p;
  lists[1] = &v;
  n = expected_fusion(lists, w, 2, ENGRAM_FUSION_RRF, 60, e);
  expect_ranking(&r, e, n);
  for (i = 0; i < r.n_items; i++) /* one item per key */
    for (j = i + 1; j < r.n_items; j++) assert_string_not_equal(result_key(&r, i), result_key(&r, j));
  assert_int_equal(r.n_items, N_DOCS + 1);
  /* Each item names the source whose copy is shown: x is only in the cache, a only in the vector source. */
  assert_string_equal(result_item(&r, rank_of(&r, "x", NULL) - 1, "source")->valuestring, "persistent");
  assert_string_equal(result_item(&r, rank_of(&r, "a", NULL) - 1, "source")->valuestring, "vectors");
  /* c is first in both lists (equal contributions): the first source named shows its copy. */
  assert_string_equal(result_item(&r, rank_of(&r, "c", NULL) - 1, "source")->valuestring, "persistent");
  assert_int_equal(cJSON_GetArraySize(r.info), 2);
  assert_string_equal(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(r.info, 0), "source")->valuestring, "persistent");
  assert_int_equal(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(r.info, 1), "status")->valueint, 0);
  /* Weighted with alpha over two sources: the second weighs alpha. */
  f.fusion = ENGRAM_FUSION_WEIGHTED;
  f.alpha = 0.8;
  sources(&c, names, 2, "dog", ENGRAM_MODE_HYBRID, &f, NULL, &r);
  w[0] = 0.2, w[1] = 0.8;
  n = expected_fusion(lists, w, 2, ENGRAM_FUSION_WEIGHTED, 0, e);
  expect_ranking(&r, e, n);
  /* Explicit weights, and offset / limit on the fused ranking. */
  {
    static const double weights[] = {3, 1};
    engram_query_t q = ENGRAM_QUERY_INIT;
    f.weights = weights;
    q.text = "dog";
    q.mode = ENGRAM_MODE_HYBRID;
    q.offset = 1;
    q.limit = 2;
    result_reset(&r);
    assert_int_equal(engram_search_sources(c.mgr, names, 2, &q, &f, NULL, capture_cb, &r), 0);
    wait_for(&c, &r.calls, 1, 60000);
    result_t p3 = p, v3 = v; /* each source was asked for offset + limit = 3 items */
    const result_t *top3[2];
    if (p3.n_items > 3) p3.n_items = 3;
    if (v3.n_items > 3) v3.n_items = 3;
    top3[0] = &p3;
    top3[1] = &v3;
    w[0] = 3, w[1] = 1;
    n = expected_fusion(top3, w, 2, ENGRAM_FUSION_WEIGHTED, 0, e);
    assert_true(n >= 3);
    expect_ranking(&r, e + 1, 2);
  }
  result_reset(&r), result_reset(&p), result_reset(&v);
  run_barrier(&c);
  ctx_close(&c);
}

static void failing_and_slow_sources_leave_partial_results(void **state) {
  static const char *const names[] = {"persistent", "broken"}, *const slow_names[] = {"slow", "persistent"};
  ctx_t c;
  result_t r = {0};
  engram_opts_t o = {0};
  const cJSON *out;
  (void)state;
  ctx_init(&c, NULL);
  assert_int_equal(add_source(&c, "persistent", &engram_source_cache, NULL, &r), 0);
  assert_int_equal(add_source(&c, "broken", &engram_source_vector, "{\"dimension\": 3, \"embedder\": \"fail\"}", &r), 0);
  assert_int_equal(add_source(&c, "slow", &engram_source_vector, "{\"dimension\": 3, \"embedder\": \"held\"}", &r), 0);
  load_docs(&c, "persistent");
  o.source = "slow";
  assert_int_equal(s_store(&c, "s", "\"slow dog\"", &o, &r), 0);
  /* A source that fails: the others' results, its error in info and in the message. */
  sources(&c, names, 2, "dog", ENGRAM_MODE_HYBRID, NULL, NULL, &r);
  assert_int_equal(r.status, 0);
  assert_int_equal(r.n_items, 3); /* b, c, e from the cache */
  out = cJSON_GetArrayItem(r.info, 1);
  assert_string_equal(cJSON_GetObjectItemCaseSensitive(out, "source")->valuestring, "broken");
  assert_int_not_equal(cJSON_GetObjectItemCaseSensitive(out, "status")->valueint, 0);
  assert_non_null(strstr(r.message, "1 of 2 sources answered"));
  assert_non_null(strstr(r.message, "'broken'"));
  /* Every source failing: the first one's error. */
  {
    static const char *const only[] = {"broken"};
    sources(&c, only, 1, "dog", ENGRAM_MODE_HYBRID, NULL, NULL, &r);
    assert_int_not_equal(r.status, 0);
    assert_int_equal(r.n_items, 0);
  }
  /* A slow source: the call answers at its deadline with what the others gave; the slow one timed out. */
  memset(&o, 0, sizeof o);
  o.deadline_ms = 200;
  atomic_store(&release, 0);
  sources(&c, slow_names, 2, "dog", ENGRAM_MODE_VECTOR, NULL, &o, &r);
  assert_int_equal(r.status, 0);
  assert_int_equal(r.n_items, 3);
  assert_int_equal(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(r.info, 0), "status")->valueint, ENGRAM_ETIMEDOUT);
  assert_string_equal(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(r.info, 0), "error")->valuestring,
                      "ENGRAM_ETIMEDOUT");
  atomic_store(&release, 1); /* the held query embedding answers now; its result is dropped */
  result_reset(&r);
  run_barrier(&c);
  assert_int_equal(r.calls, 0);
  ctx_close(&c);
}

static void search_sources_bad_input(void **state) {
  static const char *const two[] = {"persistent", "vectors"}, *const dup[] = {"vectors", "vectors"};
  static const char *const unknown[] = {"vectors", "nowhere"}, *const with_null[] = {"vectors", NULL};
  ctx_t c;
  result_t r = {0};
  engram_query_t q = ENGRAM_QUERY_INIT;
  engram_fusion_opts_t f = {0};
  engram_opts_t o = {0};
  double weights[2] = {-1, 1};
  (void)state;
  setup_world(&c, "{\"dimension\": 3, \"embedder\": \"concept\"}");
  assert_int_equal(add_source(&c, "persistent", &engram_source_cache, NULL, &r), 0);
  result_reset(&r);
  q.text = "dog";
#define REFUSED(call, want, msg)                                                                                     \
  do {                                                                                                             \
    assert_int_equal((call), (want));                                                                              \
    if (strstr(engram_last_error(), (msg)) == NULL) fail_msg("last error '%s' lacks '%s'", engram_last_error(), (msg)); \
  } while (0)
  REFUSED(engram_search_sources(NULL, two, 2, &q, NULL, NULL, capture_cb, &r), ENGRAM_EINVAL, "mgr: NULL");
  REFUSED(engram_search_sources(c.mgr, two, 2, &q, NULL, NULL, NULL, &r), ENGRAM_EINVAL, "cb: NULL");
  REFUSED(engram_search_sources(c.mgr, NULL, 2, &q, NULL, NULL, capture_cb, &r), ENGRAM_EINVAL, "sources: NULL");
  REFUSED(engram_search_sources(c.mgr, two, 0, &q, NULL, NULL, capture_cb, &r), ENGRAM_EINVAL, "n_sources: 0");
  REFUSED(engram_search_sources(c.mgr, dup, 2, &q, NULL, NULL, capture_cb, &r), ENGRAM_EINVAL,
          "sources[1]: 'vectors' named twice");
  REFUSED(engram_search_sources(c.mgr, with_null, 2, &q, NULL, NULL, capture_cb, &r), ENGRAM_EINVAL, "sources[1]: NULL");
  REFUSED(engram_search_sources(c.mgr, unknown, 2, &q, NULL, NULL, capture_cb, &r), ENGRAM_EUNKNOWN_SOURCE,
          "sources[1]: unknown memory source 'nowhere'");
  REFUSED(engram_search_sources(c.mgr, two, 2, NULL, NULL, NULL, capture_cb, &r), ENGRAM_EINVAL, "query: NULL");
  f.fusion = ENGRAM_FUSION_WEIGHTED;
  f.alpha = 1.5;
  REFUSED(engram_search_sources(c.mgr, two, 2, &q, &f, NULL, capture_cb, &r), ENGRAM_EINVAL,
          "fusion.alpha: 1.5, must be in [0, 1]");
  f.alpha = 0.5;
  f.weights = weights;
  REFUSED(engram_search_sources(c.mgr, two, 2, &q, &f, NULL, capture_cb, &r), ENGRAM_EINVAL, "fusion.weights[0]: -1");
  weights[0] = 0, weights[1] = 0;
  REFUSED(engram_search_sources(c.mgr, two, 2, &q, &f, NULL, capture_cb, &r), ENGRAM_EINVAL, "fusion.weights: all 0");
  f.weights = NULL;
  f.fusion = 3;
  REFUSED(engram_search_sources(c.mgr, two, 2, &q, &f, NULL, capture_cb, &r), ENGRAM_EINVAL, "fusion.fusion: 3");
  q.mode = 9;
  REFUSED(engram_search_sources(c.mgr, two, 2, &q, NULL, NULL, capture_cb, &r), ENGRAM_EINVAL, "query.mode: 9");
  q.mode = ENGRAM_MODE_HYBRID;
  q.fusion = ENGRAM_FUSION_WEIGHTED;
  q.alpha = 7;
  REFUSED(engram_search_sources(c.mgr, two, 2, &q, NULL, NULL, capture_cb, &r), ENGRAM_EINVAL, "query.alpha: 7");
  q.alpha = 0.5;
  q.limit = 0;
  REFUSED(engram_search_sources(c.mgr, two, 2, &q, NULL, NULL, capture_cb, &r), ENGRAM_EINVAL, "query.limit: 0");
  q.limit = 10;
  o.source = "vectors";
  REFUSED(engram_search_sources(c.mgr, two, 2, &q, NULL, &o, capture_cb, &r), ENGRAM_EINVAL, "opts.source: must be NULL");
  o.source = NULL;
  o.order_by = ENGRAM_ORDER_KEY;
  REFUSED(engram_search_sources(c.mgr, two, 2, &q, NULL, &o, capture_cb, &r), ENGRAM_EINVAL, "opts.order_by: 1, must be 0");
#undef REFUSED
  run_barrier(&c);
  assert_int_equal(r.calls, 0);
  ctx_close(&c);
}

/* ---- A manager on its own thread: answers arrive there while the caller is still sending ---- */

static atomic_int mt_calls, mt_wrong, mt_failed, mt_added;
static uv_thread_t mt_poller;
static int mt_check_thread;

static void mt_added_cb(int status, const engram_reply_t *reply, void *ud) {
  (void)reply, (void)ud;
  atomic_store(&mt_added, status == 0 ? 1 : -1);
}

static void mt_cb(int status, const engram_reply_t *reply, void *ud) {
  uv_thread_t self = uv_thread_self();
  (void)ud;
  if (mt_check_thread && !uv_thread_equal(&self, &mt_poller)) atomic_fetch_add(&mt_wrong, 1);
  if (status != 0 || reply->n_items == 0) atomic_fetch_add(&mt_failed, 1);
  atomic_fetch_add(&mt_calls, 1);
}

static void mt_add(engram_manager_t *mgr, const char *name, const engram_source_vtable_t *vt, const char *options) {
  atomic_store(&mt_added, 0);
  assert_int_equal(engram_manager_add_source(mgr, name, vt, options, "d", 0, mt_added_cb, NULL), 0);
  while (atomic_load(&mt_added) == 0) sleep_ms(1);
  assert_int_equal(atomic_load(&mt_added), 1);
}

static void wait_calls(engram_cq_t *cq, int want) {
  uint64_t start = uv_hrtime();
  while (atomic_load(&mt_calls) < want && uv_hrtime() - start < 60000000000ull) {
    if (cq != NULL) engram_cq_poll(cq, 0);
    sleep_ms(1);
  }
  assert_int_equal(atomic_load(&mt_calls), want);
}

static void own_thread_and_completion_queue(void **state) {
  static const char *const both[] = {"persistent", "vectors"};
  engram_manager_t *mgr;
  engram_cq_t *cq;
  engram_opts_t o = {0};
  engram_query_t q = ENGRAM_QUERY_INIT;
  size_t i;
  int n;
  (void)state;
  assert_int_equal(engram_manager_new(&mgr, NULL, NULL), 0);
  assert_int_equal(engram_cq_new(&cq, NULL), 0);
  mt_add(mgr, "persistent", &engram_source_cache, NULL);
  mt_add(mgr, "vectors", &engram_source_vector, "{\"dimension\": 3, \"embedder\": \"concept\"}");
  atomic_store(&mt_calls, 0);
  atomic_store(&mt_failed, 0);
  atomic_store(&mt_wrong, 0);
  mt_check_thread = 0;
  for (i = 0; i < 2 * N_DOCS; i++) {
    cJSON *v = cJSON_CreateString(docs[i % N_DOCS].text);
    o.source = both[i / N_DOCS];
    assert_int_equal(engram_store(mgr, docs[i % N_DOCS].key, v, &o, mt_cb, NULL), 0);
    cJSON_Delete(v);
  }
  wait_calls(NULL, 2 * N_DOCS);
  atomic_store(&mt_calls, 0);
  atomic_store(&mt_failed, 0);
  q.text = "dog";
  q.mode = ENGRAM_MODE_HYBRID;
  /* Replies on the manager's thread. */
  for (n = 0; n < 200; n++) assert_int_equal(engram_search_sources(mgr, both, 2, &q, NULL, NULL, mt_cb, NULL), 0);
  wait_calls(NULL, 200);
  /* Replies through a completion queue polled here: every callback on this thread. */
  atomic_store(&mt_calls, 0);
  mt_poller = uv_thread_self();
  mt_check_thread = 1;
  memset(&o, 0, sizeof o);
  o.cq = cq;
  for (n = 0; n < 200; n++) assert_int_equal(engram_search_sources(mgr, both, 2, &q, NULL, &o, mt_cb, NULL), 0);
  wait_calls(cq, 200);
  assert_int_equal(atomic_load(&mt_wrong), 0);
  assert_int_equal(atomic_load(&mt_failed), 0);
  assert_int_equal(engram_manager_shutdown(mgr), 0);
  assert_int_equal((int)engram_cq_poll(cq, 0), 0); /* nothing more: one callback per call */
  assert_int_equal(atomic_load(&mt_calls), 200);
  engram_cq_free(cq);
}

/* ---- Allocation failures: every one ends a call with ENGRAM_ENOMEM, once, and leaks nothing ---- */

typedef struct {
  int calls, status;
} tally_t;

static void tally_cb(int status, const engram_reply_t *reply, void *ud) {
  tally_t *t = ud;
  size_t i;
  if (++t->calls > 1) harness_stray("tally_cb");
  t->status = status;
  for (i = 0; status == 0 && i < reply->n_items; i++) assert_true(reply->items[i].score >= 0 && reply->items[i].score <= 1);
}

/* The call returned rc: ENGRAM_ENOMEM (or a source missing because adding it ran out of memory), or 0 and then
 * one callback with success or ENGRAM_ENOMEM. */
static void alloc_expect(ctx_t *c, int rc, tally_t *t, const char *what) {
  if (rc == ENGRAM_ENOMEM || rc == ENGRAM_EUNKNOWN_SOURCE) return;
  if (rc != 0) fail_msg("%s: returned %s (%s)", what, engram_err_name(rc), engram_last_error());
  wait_for(c, &t->calls, 1, 30000);
  if (t->status != 0 && t->status != ENGRAM_ENOMEM)
    fail_msg("%s (failing allocation #%ld): callback %s", what, failing_alloc_point(), engram_err_name(t->status));
}

static void alloc_scenario(void *unused) {
  static const char *const both[] = {"persistent", "vectors"};
  static const int modes[] = {ENGRAM_MODE_TEXT, ENGRAM_MODE_HYBRID, ENGRAM_MODE_HYBRID};
  ctx_t c;
  tally_t t;
  engram_opts_t o = {0};
  engram_query_t q = ENGRAM_QUERY_INIT;
  engram_fusion_opts_t f = {0};
  size_t i, m;
  int rc;
  (void)unused;
  memset(&c, 0, sizeof c);
  assert_int_equal(uv_loop_init(&c.loop), 0);
  while ((rc = engram_manager_new(&c.mgr, &c.loop, NULL)) == ENGRAM_ENOMEM) {
  }
  assert_int_equal(rc, 0);
  memset(&t, 0, sizeof t);
  alloc_expect(&c, engram_manager_add_source(c.mgr, "persistent", &engram_source_cache, NULL, "d", 1, tally_cb, &t), &t,
               "add persistent");
  memset(&t, 0, sizeof t);
  alloc_expect(&c, engram_manager_add_source(c.mgr, "vectors", &engram_source_vector, "{\"dimension\": 16}", "d", 0,
                                             tally_cb, &t),
               &t, "add vectors");
  for (i = 0; i < N_DOCS; i++) {
    cJSON *v = cJSON_CreateString(docs[i].text);
    if (v == NULL) continue;
    o.source = both[i % 2];
    memset(&t, 0, sizeof t);
    alloc_expect(&c, engram_store(c.mgr, docs[i].key, v, &o, tally_cb, &t), &t, "store");
    cJSON_Delete(v);
  }
  q.text = "dog food";
  q.limit = 3;
  o.source = "vectors";
  for (m = 0; m < 3; m++) { /* text, hybrid RRF, hybrid weighted (the BM25 index is built by the first) */
    q.mode = modes[m];
    q.fusion = m == 2 ? ENGRAM_FUSION_WEIGHTED : ENGRAM_FUSION_RRF;
    q.alpha = 0.5;
    memset(&t, 0, sizeof t);
    alloc_expect(&c, engram_search(c.mgr, &q, &o, tally_cb, &t), &t, "search");
  }
  q.mode = ENGRAM_MODE_HYBRID;
  memset(&t, 0, sizeof t);
  alloc_expect(&c, engram_search_sources(c.mgr, both, 2, &q, NULL, NULL, tally_cb, &t), &t, "search_sources");
  f.fusion = ENGRAM_FUSION_WEIGHTED;
  f.alpha = 0.25;
  memset(&t, 0, sizeof t);
  alloc_expect(&c, engram_search_sources(c.mgr, both, 2, &q, &f, NULL, tally_cb, &t), &t, "search_sources weighted");
  memset(&t, 0, sizeof t);
  while ((rc = engram_manager_close(c.mgr, tally_cb, &t)) == ENGRAM_ENOMEM) {
  }
  assert_int_equal(rc, 0);
  wait_for(&c, &t.calls, 1, 30000);
  assert_int_equal(uv_run(&c.loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&c.loop), 0);
  assert_int_equal(harness_strays, 0);
}

static void allocation_failures(void **state) {
  long points;
  (void)state;
  points = failing_alloc_loop(alloc_scenario, NULL);
  printf("  hybrid: every one of %ld allocations failed once\n", points);
  assert_true(getenv("ENGRAM_ALLOC_ONLY") || points > 100);
}

static int group_setup(void **state) {
  engram_embedder_t concept = {3, 0, NULL, concept_embed, NULL}, fail = {3, 0, NULL, fail_embed, NULL};
  engram_embedder_t held = {3, 0, NULL, held_embed, NULL};
  (void)state;
  if (engram_register_embedder("concept", &concept) || engram_register_embedder("fail", &fail) ||
      engram_register_embedder("held", &held))
    return -1;
  return 0;
}

static int group_teardown(void **state) {
  (void)state;
  engram_unregister_embedder("concept");
  engram_unregister_embedder("fail");
  engram_unregister_embedder("held");
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(modes_give_their_orders),
      cmocka_unit_test(rrf_and_weighted_arithmetic),
      cmocka_unit_test(source_default_mode_and_index_upkeep),
      cmocka_unit_test(bad_input_is_refused),
      cmocka_unit_test(tool_takes_mode),
      cmocka_unit_test(fused_across_cache_and_vectors),
      cmocka_unit_test(failing_and_slow_sources_leave_partial_results),
      cmocka_unit_test(search_sources_bad_input),
      cmocka_unit_test(own_thread_and_completion_queue),
      cmocka_unit_test(allocation_failures),
  };
  return cmocka_run_group_tests_name("hybrid", tests, group_setup, group_teardown);
}
