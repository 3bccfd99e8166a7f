/*
 * test_text_recall.c — the BM25 index (src/shared/text_index.c) at scale: a randomized comparison with a naive BM25
 * over thousands of puts, replaces and removes (which exercises lazy removal, postings and slot compaction,
 * and terms born and dropped), and — when the shared Debian corpus is present — known-item recall on 64k real
 * package descriptions: each sampled record's title is the query, its own text the one relevant document.
 * The corpus is found through $ENGRAM_CORPUS, ../shared/corpus/ or /work/shared/corpus/; without it the test
 * prints a skip message and passes.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "engram/source.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* One query term's BM25 contribution (k1 = 1.2, b = 0.75), written out independently of the index. */
static double bm25_term(double tf, double dl, double df, double n, double avgdl) {
  double idf = log(1.0 + (n - df + 0.5) / (df + 0.5));
  return idf * tf * (1.2 + 1.0) / (tf + 1.2 * (1.0 - 0.75 + 0.75 * dl / avgdl));
}

static double unit(double s) { return s / (s + 1.0); }

static engram_text_index_t *new_index(void) {
  engram_text_index_t *ix = NULL;
  assert_int_equal(engram_text_index_new(&ix), 0);
  assert_non_null(ix);
  return ix;
}

static void put(engram_text_index_t *ix, uint64_t doc, const char *text) {
  assert_int_equal(engram_text_index_put(ix, doc, text, strlen(text)), 0);
}

static size_t search(engram_text_index_t *ix, const char *q, size_t k, engram_text_hit_t *hits) {
  size_t n = 99;
  assert_int_equal(engram_text_index_search(ix, q, k, NULL, NULL, NULL, hits, &n), 0);
  return n;
}

/* ---- A randomized comparison with a naive BM25 ---- */

#define R_IDS 200
#define R_WORDS 24

typedef struct {
  char *text[R_IDS]; /* NULL when absent */
} naive_t;

typedef struct {
  const char *tok[64];
  size_t n;
  char store[64][65];
} toklist_t;

static int push_tok(const char *tok, size_t len, void *ud) {
  toklist_t *t = ud;
  if (t->n < 64) {
    memcpy(t->store[t->n], tok, len + 1);
    t->tok[t->n] = t->store[t->n];
    t->n++;
  }
  return 0;
}

static void toklist(const char *s, toklist_t *t) {
  t->n = 0;
  engram_tokenize(s, strlen(s), push_tok, t);
}

/* Computes every present doc's raw BM25 score for q the slow way: df and tf by scanning every document. */
static void naive_scores(const naive_t *nv, const char *q, double *score) {
  static toklist_t qt, dt[R_IDS];
  double total = 0;
  size_t ndocs = 0, i, j, d;
  toklist(q, &qt);
  for (d = 0; d < R_IDS; d++) {
    score[d] = 0;
    if (nv->text[d] == NULL) continue;
    toklist(nv->text[d], &dt[d]);
    ndocs++;
    total += dt[d].n;
  }
  for (i = 0; i < qt.n; i++) {
    size_t df = 0;
    for (j = 0; j < i; j++)
      if (strcmp(qt.tok[i], qt.tok[j]) == 0) break;
    if (j < i) continue; /* A repeated query token counts once. */
    for (d = 0; d < R_IDS; d++) {
      if (nv->text[d] == NULL) continue;
      for (j = 0; j < dt[d].n; j++)
        if (strcmp(dt[d].tok[j], qt.tok[i]) == 0) break;
      df += j < dt[d].n;
    }
    for (d = 0; d < R_IDS && df > 0; d++) {
      size_t tf = 0;
      if (nv->text[d] == NULL) continue;
      for (j = 0; j < dt[d].n; j++) tf += strcmp(dt[d].tok[j], qt.tok[i]) == 0;
      if (tf > 0) score[d] += bm25_term(tf, dt[d].n, df, ndocs, total / ndocs);
    }
  }
}

static int by_score_then_id(const void *a, const void *b) {
  const engram_text_hit_t *x = a, *y = b;
  if (x->score != y->score) return x->score < y->score ? 1 : -1;
  return (x->doc > y->doc) - (x->doc < y->doc);
}

/* The naive top k: every doc with a positive score, best first, ties by id. */
static size_t naive_top(const double *score, size_t k, engram_text_hit_t *want) {
  static engram_text_hit_t all[R_IDS];
  size_t n = 0, d;
  for (d = 0; d < R_IDS; d++)
    if (score[d] > 0) {
      all[n].doc = d;
      all[n++].score = score[d];
    }
  qsort(all, n, sizeof *all, by_score_then_id);
  if (n > k) n = k;
  memcpy(want, all, n * sizeof *all);
  return n;
}

static unsigned rng_next(uint64_t *s) {
  *s = *s * 6364136223846793005ull + 1442695040888963407ull;
  return (unsigned)(*s >> 33);
}

static void test_random_against_naive(void **state) {
  static naive_t nv;
  static const char *words[R_WORDS] = {"red", "green", "blue", "cat", "dog", "fish", "run", "jump", "swim",
                                       "the", "a", "of", "alpha", "beta", "gamma", "delta", "one", "two",
                                       "three", "four", "sun", "moon", "star", "sky"};
  engram_text_index_t *ix = new_index();
  engram_text_hit_t got[10], want[10];
  double score[R_IDS];
  uint64_t seed = 12345;
  int op, checks = 0;
  size_t d, i;
  (void)state;
  memset(&nv, 0, sizeof nv);
  for (op = 0; op < 6000; op++) {
    unsigned r = rng_next(&seed);
    d = rng_next(&seed) % R_IDS;
    if (r % 3 == 0) {
      engram_text_index_remove(ix, d);
      free(nv.text[d]);
      nv.text[d] = NULL;
    } else {
      char text[512] = "";
      size_t len = rng_next(&seed) % 16, w;
      for (w = 0; w < len; w++) {
        strcat(text, words[rng_next(&seed) % R_WORDS]);
        strcat(text, rng_next(&seed) % 4 ? " " : ", ");
      }
      /* Now and then a word of its own, so that terms are born and dropped. */
      if (rng_next(&seed) % 5 == 0) sprintf(text + strlen(text), "uniq%u", rng_next(&seed) % 1000);
      put(ix, d, text);
      free(nv.text[d]);
      nv.text[d] = strdup(text);
    }
    if (op % 25 == 0) {
      size_t live = 0, ng, nw, k = 1 + rng_next(&seed) % 10;
      char q[128];
      for (i = 0; i < R_IDS; i++) live += nv.text[i] != NULL;
      assert_int_equal(engram_text_index_size(ix), live);
      snprintf(q, sizeof q, "%s %s uniq%u %s", words[rng_next(&seed) % R_WORDS],
               words[rng_next(&seed) % R_WORDS], rng_next(&seed) % 1000, words[rng_next(&seed) % R_WORDS]);
      ng = search(ix, q, k, got);
      naive_scores(&nv, q, score);
      nw = naive_top(score, k, want);
      assert_int_equal(ng, nw);
      for (i = 0; i < ng; i++) {
        /* The same scores rank by rank, each the naive score of the doc returned (so ids can differ only
         * between tied scores), best first. */
        assert_true(got[i].doc < R_IDS);
        assert_true(fabs(got[i].score - unit(want[i].score)) < 1e-9);
        assert_true(fabs(got[i].score - unit(score[got[i].doc])) < 1e-9);
        if (i > 0) assert_true(got[i - 1].score >= got[i].score);
      }
      checks++;
    }
  }
  assert_true(checks > 200);
  for (d = 0; d < R_IDS; d++) free(nv.text[d]);
  engram_text_index_free(ix);
}

/* ---- Known-item recall on the Debian corpus ---- */

/* The first readable corpus file: $ENGRAM_CORPUS, else the shared copy next to the project; NULL when none. */
static const char *corpus_path(void) {
  const char *candidates[] = {getenv("ENGRAM_CORPUS"), "../shared/corpus/debian-descriptions.jsonl.gz",
                              "/work/shared/corpus/debian-descriptions.jsonl.gz"};
  size_t i;
  for (i = 0; i < sizeof candidates / sizeof candidates[0]; i++) {
    FILE *f = candidates[i] != NULL && *candidates[i] != '\0' ? fopen(candidates[i], "rb") : NULL;
    if (f != NULL) {
      fclose(f);
      return candidates[i];
    }
  }
  return NULL;
}

static void test_corpus_recall(void **state) {
  const char *path = corpus_path();
  char cmd[1024], *line = NULL;
  size_t cap = 0, ndocs = 0, cap_titles = 0, i, n;
  char **titles = NULL;
  engram_text_index_t *ix;
  engram_text_hit_t hits[10];
  uint64_t seed = 20261122;
  double t0, t_index, t_query = 0, recall = 0, mrr = 0;
  int queries = 200;
  FILE *in;
  (void)state;
  if (path == NULL) {
    printf("[  SKIP    ] corpus not found (set ENGRAM_CORPUS): recall test skipped\n");
    return;
  }
  assert_true(strchr(path, '\'') == NULL);
  snprintf(cmd, sizeof cmd, "gzip -dc '%s'", path);
  in = popen(cmd, "r");
  assert_non_null(in);
  ix = new_index();
  t0 = now_s();
  while (getline(&line, &cap, in) > 0) {
    cJSON *rec = cJSON_Parse(line), *text, *title;
    assert_non_null(rec);
    text = cJSON_GetObjectItemCaseSensitive(rec, "text");
    title = cJSON_GetObjectItemCaseSensitive(rec, "title");
    assert_true(cJSON_IsString(text) && cJSON_IsString(title));
    put(ix, ndocs, text->valuestring);
    if (ndocs == cap_titles) {
      cap_titles = cap_titles ? cap_titles * 2 : 1024;
      titles = realloc(titles, cap_titles * sizeof *titles);
      assert_non_null(titles);
    }
    titles[ndocs++] = strdup(title->valuestring);
    cJSON_Delete(rec);
  }
  t_index = now_s() - t0;
  free(line);
  assert_int_equal(pclose(in), 0);
  assert_true(ndocs > 1000);
  assert_int_equal(engram_text_index_size(ix), ndocs);
  for (i = 0; i < (size_t)queries; i++) {
    size_t want = rng_next(&seed), r;
    want = (size_t)(((uint64_t)want << 16 ^ rng_next(&seed)) % ndocs);
    t0 = now_s();
    assert_int_equal(engram_text_index_search(ix, titles[want], 10, NULL, NULL, NULL, hits, &n), 0);
    t_query += now_s() - t0;
    for (r = 0; r < n; r++)
      if (hits[r].doc == want) {
        recall += 1;
        mrr += 1.0 / (r + 1);
        break;
      }
  }
  recall /= queries;
  mrr /= queries;
  printf("corpus: %zu docs indexed in %.2f s; %d title queries: recall@10 %.3f, MRR@10 %.3f, "
         "mean query %.3f ms\n",
         ndocs, t_index, queries, recall, mrr, t_query / queries * 1e3);
  assert_true(recall >= 0.70);
  /* No time bound: query time is make bench's (bench_corpus, bench_quality). A bound here failed a CI stress run
   * (10.3 ms a query with two CPU hogs and other builds on the 2 cores, against 1.9 ms alone). */
  for (i = 0; i < ndocs; i++) free(titles[i]);
  free(titles);
  engram_text_index_free(ix);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_random_against_naive),
      cmocka_unit_test(test_corpus_recall),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
