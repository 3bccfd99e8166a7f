/*
 * test_text.c — unit tests for text search's shared pieces: UTF-8 validation (src/utf8.c), the tokenizer and
 * an item's indexed text (src/shared/text.c), and the in-memory BM25 index (src/shared/text_index.c): scores checked against
 * the formula computed here independently, statistics after replace and remove, ties, the accept callback,
 * the k limit, and allocation failures that must leave the index unchanged. test_text_recall.c tests the
 * index at scale (a randomized comparison with a naive BM25, and recall on the Debian corpus).
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "engram/source.h"

/* ---- An allocator that fails once fail_at allocations have succeeded (fail_at < 0: never) ---- */

static long fail_at = -1;
static void *failing_malloc(size_t n) {
  if (fail_at == 0) return NULL;
  if (fail_at > 0) fail_at--;
  return malloc(n);
}
static void *failing_realloc(void *p, size_t n) {
  if (fail_at == 0) return NULL;
  if (fail_at > 0) fail_at--;
  return realloc(p, n);
}
static const engram_allocator_t failing = {failing_malloc, failing_realloc, free};

/* ---- UTF-8 ---- */

static void test_utf8(void **state) {
  (void)state;
#define OK(s) assert_true(engram_utf8_valid(s, sizeof(s) - 1))
#define BAD(s) assert_false(engram_utf8_valid(s, sizeof(s) - 1))
  OK("");
  OK("plain ascii");
  OK("caf\xC3\xA9");                /* é */
  OK("\xE2\x82\xAC");               /* € */
  OK("\xED\x9F\xBF");               /* U+D7FF, just below the surrogates */
  OK("\xEE\x80\x80");               /* U+E000, just above them */
  OK("\xF0\x90\x80\x80");           /* U+10000 */
  OK("\xF4\x8F\xBF\xBF");           /* U+10FFFF */
  BAD("a\0b");                      /* NUL */
  BAD("\xC0\x80");                  /* overlong NUL */
  BAD("\xC1\xBF");                  /* overlong */
  BAD("\xE0\x80\x80");
  BAD("\xE0\x9F\xBF");              /* overlong U+07FF */
  BAD("\xF0\x80\x80\x80");
  BAD("\xF0\x8F\xBF\xBF");          /* overlong U+FFFF */
  BAD("\xED\xA0\x80");              /* U+D800 */
  BAD("\xED\xBF\xBF");              /* U+DFFF */
  BAD("\xF4\x90\x80\x80");          /* U+110000 */
  BAD("\xF5\x80\x80\x80");
  BAD("\x80");                      /* stray continuation */
  BAD("a\xC3");                     /* truncated */
  BAD("\xE2\x82");
  BAD("\xE2\x82" "a");
  BAD("\xFE");
  BAD("\xFF");
#undef OK
#undef BAD
  assert_true(engram_utf8_valid("abc", 2));
  assert_true(engram_utf8_valid("\xC3\xA9", 2));
  assert_false(engram_utf8_valid("\xC3\xA9", 1)); /* The length bounds the check. */
}

/* ---- Tokenizer ---- */

typedef struct {
  char out[1024];
  int calls, stop_at, stop_rc;
} toks_t;

static int collect(const char *tok, size_t len, void *ud) {
  toks_t *t = ud;
  assert_int_equal(strlen(tok), len); /* NUL-terminated */
  if (t->out[0] != '\0') strcat(t->out, "|");
  strncat(t->out, tok, len);
  if (++t->calls == t->stop_at) return t->stop_rc;
  return 0;
}

static const char *tokens(const char *text) {
  static toks_t t;
  memset(&t, 0, sizeof t);
  assert_int_equal(engram_tokenize(text, strlen(text), collect, &t), 0);
  return t.out;
}

static void test_tokenize(void **state) {
  char buf[256], want[256];
  toks_t t;
  (void)state;
  assert_string_equal(tokens("Hello, World! foo_bar 42x CAFÉ naïve"), "hello|world|foo|bar|42x|cafÉ|naïve");
  assert_string_equal(tokens(""), "");
  assert_string_equal(tokens("  ,, -- \n\t"), "");
  assert_string_equal(tokens("a-b.c/d:e"), "a|b|c|d|e");
  assert_string_equal(tokens("x86_64 GNU/Linux v2.0"), "x86|64|gnu|linux|v2|0");
  assert_string_equal(tokens("日本語 text"), "日本語|text");
  assert_int_equal(engram_tokenize(NULL, 0, collect, &t), 0);
  /* Long tokens are cut to 64 bytes, and scanning resumes after the whole run. */
  memset(buf, 'A', 100);
  strcpy(buf + 100, " next");
  memset(want, 'a', 64);
  strcpy(want + 64, "|next");
  assert_string_equal(tokens(buf), want);
  /* A cut never splits a UTF-8 character: 63 bytes + é (2 bytes) keeps 63 bytes ... */
  memset(buf, 'b', 63);
  strcpy(buf + 63, "é tail");
  memset(want, 'b', 63);
  strcpy(want + 63, "|tail");
  assert_string_equal(tokens(buf), want);
  /* ... while 62 bytes + é fits exactly in 64. */
  memset(buf, 'b', 62);
  strcpy(buf + 62, "é");
  assert_string_equal(tokens(buf), buf);
  /* The length bounds the scan. */
  memset(&t, 0, sizeof t);
  assert_int_equal(engram_tokenize("abc def", 5, collect, &t), 0);
  assert_string_equal(t.out, "abc|d");
  /* A non-zero return stops the scan and comes back out. */
  memset(&t, 0, sizeof t);
  t.stop_at = 2;
  t.stop_rc = 7;
  assert_int_equal(engram_tokenize("one two three", 13, collect, &t), 7);
  assert_int_equal(t.calls, 2);
  assert_string_equal(t.out, "one|two");
}

/* ---- Indexed text ---- */

static void check_text_of(const char *key, const char *json, const char *want) {
  cJSON *v = json != NULL ? cJSON_Parse(json) : NULL;
  char *s;
  if (json != NULL) assert_non_null(v);
  s = engram_text_of(key, v);
  assert_non_null(s);
  assert_string_equal(s, want);
  engram_free(s);
  cJSON_Delete(v);
}

static void test_text_of(void **state) {
  cJSON *root, *cur, *arr;
  char *s;
  int i;
  (void)state;
  check_text_of("k1", "{\"title\":\"Hello\",\"n\":42,\"tags\":[\"a\",{\"deep\":\"b\"}],\"flag\":true,\"none\":null}",
                "k1 Hello a b");
  check_text_of("k1", "\"just text\"", "k1 just text");
  check_text_of("k1", "42", "k1");
  check_text_of("k1", "[]", "k1");
  check_text_of("k1", NULL, "k1");
  check_text_of(NULL, "[\"x\",[\"y\"],\"z\"]", " x y z");
  check_text_of("k", "{\"a\":\"\",\"b\":\"c\"}", "k  c");
  /* A value that is a member of a larger tree stops at itself. */
  root = cJSON_Parse("{\"v\":[\"in\"],\"sibling\":\"out\"}");
  s = engram_text_of("k", root->child);
  assert_string_equal(s, "k in");
  engram_free(s);
  s = engram_text_of("k", root->child->next);
  assert_string_equal(s, "k out");
  engram_free(s);
  cJSON_Delete(root);
  /* Deep nesting is walked without recursion. */
  root = cJSON_CreateArray();
  for (cur = root, i = 0; i < 5000; i++) {
    arr = cJSON_CreateArray();
    cJSON_AddItemToArray(cur, arr);
    cur = arr;
  }
  cJSON_AddItemToArray(cur, cJSON_CreateString("bottom"));
  cJSON_AddItemToArray(root, cJSON_CreateString("last"));
  s = engram_text_of("k", root);
  assert_string_equal(s, "k bottom last");
  engram_free(s);
  /* Every allocation failure returns NULL and leaks nothing. */
  assert_int_equal(engram_set_allocator(&failing), 0);
  for (i = 0;; i++) {
    fail_at = i;
    s = engram_text_of("k", root);
    fail_at = -1;
    if (s != NULL) break;
  }
  assert_true(i > 0);
  assert_string_equal(s, "k bottom last");
  engram_free(s);
  assert_int_equal(engram_set_allocator(NULL), 0);
  cJSON_Delete(root);
}

/* ---- BM25 ---- */

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

static void put_three(engram_text_index_t *ix) {
  put(ix, 1, "The quick brown fox");                 /* 4 tokens */
  put(ix, 2, "the lazy dog");                        /* 3 tokens */
  put(ix, 3, "Quick! quick, fox jumps over the dog"); /* 7 tokens */
}

static void test_bm25_scores(void **state) {
  engram_text_index_t *ix = new_index();
  engram_text_hit_t hits[8];
  double avgdl = 14.0 / 3, s1, s3;
  (void)state;
  put_three(ix);
  assert_int_equal(engram_text_index_size(ix), 3);
  /* "quick" and "fox" are each in 2 of the 3 documents. */
  s1 = bm25_term(1, 4, 2, 3, avgdl) + bm25_term(1, 4, 2, 3, avgdl);
  s3 = bm25_term(2, 7, 2, 3, avgdl) + bm25_term(1, 7, 2, 3, avgdl);
  assert_int_equal(search(ix, "quick fox", 8, hits), 2);
  assert_int_equal(hits[0].doc, 1);
  assert_int_equal(hits[1].doc, 3);
  assert_true(fabs(hits[0].score - unit(s1)) < 1e-12);
  assert_true(fabs(hits[1].score - unit(s3)) < 1e-12);
  /* The same figures worked out by hand (ln 1.6 = 0.4700036...). */
  assert_true(fabs(hits[0].score - 0.4995877946045336) < 1e-12);
  assert_true(fabs(hits[1].score - 0.48895410313747617) < 1e-12);
  /* Query tokens are case-folded and each distinct one counts once. */
  assert_int_equal(search(ix, "QUICK quick Fox fox fox", 8, hits), 2);
  assert_true(fabs(hits[0].score - unit(s1)) < 1e-12);
  assert_true(fabs(hits[1].score - unit(s3)) < 1e-12);
  /* A term in every document still scores (the idf stays positive), and unknown terms add nothing. */
  assert_int_equal(search(ix, "the zebra", 8, hits), 3);
  assert_int_equal(hits[0].doc, 2); /* the shortest document */
  assert_true(fabs(hits[0].score - unit(bm25_term(1, 3, 3, 3, avgdl))) < 1e-12);
  assert_int_equal(search(ix, "zebra", 8, hits), 0);
  assert_int_equal(search(ix, "", 8, hits), 0);
  assert_int_equal(search(ix, "quick", 0, hits), 0);
  engram_text_index_free(ix);
}

static void test_replace_and_remove(void **state) {
  engram_text_index_t *ix = new_index();
  engram_text_hit_t hits[8];
  double avgdl;
  (void)state;
  put_three(ix);
  /* Replacing doc 1: lengths 3 + 3 + 7, "fox" now only in docs 1 and 3 with tf 3 and 1. */
  put(ix, 1, "fox fox fox");
  assert_int_equal(engram_text_index_size(ix), 3);
  avgdl = 13.0 / 3;
  assert_int_equal(search(ix, "fox", 8, hits), 2);
  assert_int_equal(hits[0].doc, 1);
  assert_true(fabs(hits[0].score - unit(bm25_term(3, 3, 2, 3, avgdl))) < 1e-12);
  assert_true(fabs(hits[1].score - unit(bm25_term(1, 7, 2, 3, avgdl))) < 1e-12);
  assert_int_equal(search(ix, "brown", 8, hits), 0); /* The old text is gone. */
  /* Removing doc 3: N = 2, avgdl = 3, "fox" only in doc 1. */
  engram_text_index_remove(ix, 3);
  engram_text_index_remove(ix, 3);   /* Twice is harmless, */
  engram_text_index_remove(ix, 404); /* as is an unknown id. */
  assert_int_equal(engram_text_index_size(ix), 2);
  assert_int_equal(search(ix, "fox dog", 8, hits), 2);
  assert_int_equal(hits[0].doc, 1);
  assert_true(fabs(hits[0].score - unit(bm25_term(3, 3, 1, 2, 3.0))) < 1e-12);
  assert_int_equal(hits[1].doc, 2);
  assert_true(fabs(hits[1].score - unit(bm25_term(1, 3, 1, 2, 3.0))) < 1e-12);
  assert_int_equal(search(ix, "jumps", 8, hits), 0);
  /* An empty document counts in N and in the average length. */
  put(ix, 9, "  ...  ");
  assert_int_equal(engram_text_index_size(ix), 3);
  assert_int_equal(search(ix, "fox", 8, hits), 1);
  assert_true(fabs(hits[0].score - unit(bm25_term(3, 3, 1, 3, 2.0))) < 1e-12);
  /* Re-adding a removed id works, and removing everything empties the index. */
  put(ix, 3, "dog");
  assert_int_equal(search(ix, "dog", 8, hits), 2);
  engram_text_index_remove(ix, 1);
  engram_text_index_remove(ix, 2);
  engram_text_index_remove(ix, 3);
  engram_text_index_remove(ix, 9);
  assert_int_equal(engram_text_index_size(ix), 0);
  assert_int_equal(search(ix, "dog fox", 8, hits), 0);
  put(ix, 7, "dog");
  assert_int_equal(search(ix, "dog", 8, hits), 1);
  assert_int_equal(hits[0].doc, 7);
  engram_text_index_free(ix);
}

static int reverse_ids(uint64_t a, uint64_t b, void *ud) {
  (void)ud;
  return (a < b) - (a > b);
}

static int no_preference(uint64_t a, uint64_t b, void *ud) {
  (void)a, (void)b, (void)ud;
  return 0;
}

static void test_ties(void **state) {
  engram_text_index_t *ix = new_index();
  engram_text_hit_t hits[8];
  size_t n;
  (void)state;
  put(ix, 30, "alpha beta");
  put(ix, 10, "alpha beta");
  put(ix, 20, "beta alpha");
  put(ix, 5, "gamma delta");
  assert_int_equal(search(ix, "alpha", 8, hits), 3);
  assert_int_equal(hits[0].doc, 10);
  assert_int_equal(hits[1].doc, 20);
  assert_int_equal(hits[2].doc, 30);
  assert_true(hits[0].score == hits[2].score);
  assert_int_equal(engram_text_index_search(ix, "alpha", 8, NULL, reverse_ids, NULL, hits, &n), 0);
  assert_int_equal(n, 3);
  assert_int_equal(hits[0].doc, 30);
  assert_int_equal(hits[1].doc, 20);
  assert_int_equal(hits[2].doc, 10);
  /* A tie callback that cannot decide falls back to doc ids; with k = 2 the ids decide who stays. */
  assert_int_equal(engram_text_index_search(ix, "alpha", 2, NULL, no_preference, NULL, hits, &n), 0);
  assert_int_equal(n, 2);
  assert_int_equal(hits[0].doc, 10);
  assert_int_equal(hits[1].doc, 20);
  engram_text_index_free(ix);
}

typedef struct {
  int calls[16];
  uint64_t reject;
} accept_log_t;

static int accept_fn(uint64_t doc, void *ud) {
  accept_log_t *a = ud;
  assert_true(doc < 16);
  a->calls[doc]++;
  return doc != a->reject;
}

static void test_accept_and_k(void **state) {
  engram_text_index_t *ix = new_index();
  engram_text_hit_t hits[16], all[16];
  accept_log_t log;
  size_t n, i, nall;
  char text[128];
  (void)state;
  /* Doc i holds "apple" i times in 10 tokens: higher ids rank higher. */
  for (i = 1; i <= 8; i++) {
    size_t j;
    text[0] = '\0';
    for (j = 0; j < 10; j++) strcat(text, j < i ? "apple " : "filler ");
    put(ix, i, text);
  }
  put(ix, 9, "banana split");
  put(ix, 10, "cherry pie");
  memset(&log, 0, sizeof log);
  log.reject = 7;
  assert_int_equal(engram_text_index_search(ix, "apple", 16, accept_fn, NULL, &log, hits, &n), 0);
  assert_int_equal(n, 7);
  for (i = 0; i < n; i++) assert_int_equal(hits[i].doc, i == 0 ? 8 : 7 - i);
  for (i = 1; i <= 8; i++) assert_int_equal(log.calls[i], 1); /* Every scored doc asked exactly once, */
  assert_int_equal(log.calls[9], 0);                         /* never a doc without a query token. */
  assert_int_equal(log.calls[10], 0);
  /* k keeps the best k, in the same order as an unlimited search. */
  nall = search(ix, "apple banana", 16, all);
  assert_int_equal(nall, 9);
  for (i = 1; i < nall; i++) assert_true(all[i - 1].score >= all[i].score);
  assert_int_equal(search(ix, "apple banana", 3, hits), 3);
  for (i = 0; i < 3; i++) {
    assert_int_equal(hits[i].doc, all[i].doc);
    assert_true(hits[i].score == all[i].score);
  }
  /* Docs that cannot enter the top k need not be asked, and none is asked twice. */
  memset(&log, 0, sizeof log);
  log.reject = 8;
  assert_int_equal(engram_text_index_search(ix, "apple", 1, accept_fn, NULL, &log, hits, &n), 0);
  assert_int_equal(n, 1);
  assert_int_equal(hits[0].doc, 7);
  for (i = 0; i < 16; i++) assert_true(log.calls[i] <= 1);
  assert_int_equal(log.calls[8], 1);
  assert_int_equal(log.calls[7], 1);
  engram_text_index_free(ix);
}

static int same_hits(const engram_text_hit_t *a, size_t na, const engram_text_hit_t *b, size_t nb) {
  size_t i;
  if (na != nb) return 0;
  for (i = 0; i < na; i++)
    if (a[i].doc != b[i].doc || a[i].score != b[i].score) return 0;
  return 1;
}

static void test_enomem_leaves_index_unchanged(void **state) {
  static const char *queries[] = {"quick fox", "brand new", "dog the", "lazy"};
  static const struct {
    uint64_t doc;
    const char *text;
  } puts_[] = {{99, "brand new words and the quick dog"}, {2, "a replacement: brand new lazy text"}};
  engram_text_index_t *ix = NULL;
  engram_text_hit_t base[4][8], hits[8];
  size_t nbase[4], n, q, p;
  long i;
  int rc;
  (void)state;
  assert_int_equal(engram_set_allocator(&failing), 0);
  /* engram_text_index_new. */
  for (i = 0;; i++) {
    fail_at = i;
    rc = engram_text_index_new(&ix);
    fail_at = -1;
    if (rc == 0) break;
    assert_int_equal(rc, ENGRAM_ENOMEM);
    assert_null(ix);
  }
  put_three(ix);
  for (q = 0; q < 4; q++) nbase[q] = search(ix, queries[q], 8, base[q]);
  for (p = 0; p < 2; p++) {
    for (i = 0;; i++) {
      fail_at = i;
      rc = engram_text_index_put(ix, puts_[p].doc, puts_[p].text, strlen(puts_[p].text));
      fail_at = -1;
      if (rc == 0) break;
      assert_int_equal(rc, ENGRAM_ENOMEM);
      assert_int_equal(engram_text_index_size(ix), 3);
      for (q = 0; q < 4; q++) {
        n = search(ix, queries[q], 8, hits);
        assert_true(same_hits(hits, n, base[q], nbase[q]));
      }
    }
    assert_true(i > 0);
    if (puts_[p].doc == 99) engram_text_index_remove(ix, 99); /* Back to the three documents. */
  }
  /* A search that cannot allocate fails cleanly, and works again afterwards. */
  engram_text_index_free(ix);
  ix = new_index();
  put_three(ix);
  for (i = 0;; i++) {
    fail_at = i;
    rc = engram_text_index_search(ix, "quick fox", 8, NULL, NULL, NULL, hits, &n);
    fail_at = -1;
    if (rc == 0) break;
    assert_int_equal(rc, ENGRAM_ENOMEM);
  }
  assert_int_equal(n, 2);
  engram_text_index_free(ix);
  assert_int_equal(engram_set_allocator(NULL), 0);
}

/* ---- the pruned search against a reference scorer ----
 * A random index (a Zipf-like vocabulary of 300 words, documents of 1 to 60 tokens, removals and replacements that
 * leave dead postings, compactions and stale largest-tf bounds behind) and random queries (2 to 9 words, repeated
 * and unknown ones included), with and without a filter, k from 1 to 20: every answer must be the reference's top
 * k — the reference scores every document from the texts kept here, with the BM25 of the file header. Scores may
 * differ from the reference's in the last bits (another order of addition), so the checks carry a 1e-12 slack. */

#define RV 300
#define RD 1500

typedef struct {
  int live;
  int n;
  unsigned short w[60];
} rdoc_t;

static uint64_t rnd_state = 20261206;
static uint32_t rnd(void) {
  rnd_state = rnd_state * 6364136223846793005ull + 1442695040888963407ull;
  return (uint32_t)(rnd_state >> 33);
}
static int zipf_word(void) {
  double u = (rnd() + 0.5) / 2147483648.0;
  return (int)(RV * u * u * u);
}

static void rdoc_make(rdoc_t *d) {
  int i;
  d->live = 1;
  d->n = 1 + (int)(rnd() % 60);
  for (i = 0; i < d->n; i++) d->w[i] = (unsigned short)zipf_word();
}

static void rdoc_put(engram_text_index_t *ix, const rdoc_t *d, uint64_t id) {
  char text[60 * 6 + 1];
  size_t len = 0;
  int i;
  for (i = 0; i < d->n; i++) len += (size_t)snprintf(text + len, sizeof text - len, "%sw%d", i ? " " : "", d->w[i]);
  put(ix, id, text);
}

static int not_third(uint64_t doc, void *ud) {
  (void)ud;
  return doc % 3 != 0;
}

static void check_against_reference(engram_text_index_t *ix, const rdoc_t *docs, const int *q, int nq, size_t k,
                                    int filter) {
  static double ref[RD];
  engram_text_hit_t hits[20];
  char text[16 * 10];
  size_t len = 0, n = 99, i, better;
  int j, live = 0, distinct[16], df[16], nd = 0;
  double total = 0, avgdl, kth;
  for (j = 0; j < nq; j++) {
    int seen = 0, m;
    len += (size_t)snprintf(text + len, sizeof text - len, "%s%s%d", j ? " " : "", q[j] < RV ? "w" : "x", q[j]);
    for (m = 0; m < nd; m++) seen |= distinct[m] == q[j];
    if (!seen && q[j] < RV) distinct[nd++] = q[j];
  }
  for (i = 0; i < RD; i++)
    if (docs[i].live) live++, total += docs[i].n;
  avgdl = total / live;
  for (j = 0; j < nd; j++) {
    df[j] = 0;
    for (i = 0; i < RD; i++) {
      int has = 0, m;
      for (m = 0; docs[i].live && m < docs[i].n && !has; m++) has = docs[i].w[m] == distinct[j];
      df[j] += has;
    }
  }
  for (i = 0; i < RD; i++) {
    ref[i] = 0;
    for (j = 0; j < nd && docs[i].live; j++) {
      int tf = 0, m;
      for (m = 0; m < docs[i].n; m++) tf += docs[i].w[m] == distinct[j];
      if (tf > 0) ref[i] += bm25_term(tf, docs[i].n, df[j], live, avgdl);
    }
  }
  assert_int_equal(engram_text_index_search(ix, text, k, filter ? not_third : NULL, NULL, NULL, hits, &n), 0);
  /* how many documents rank: those that score and pass the filter */
  for (i = 0, better = 0; i < RD; i++) better += ref[i] > 0 && (!filter || not_third(i, NULL));
  assert_int_equal(n, better < k ? better : k);
  for (i = 0; i < n; i++) {
    assert_true(hits[i].doc < RD);
    assert_true(ref[hits[i].doc] > 0);
    if (filter) assert_true(not_third(hits[i].doc, NULL));
    assert_true(fabs(hits[i].score - unit(ref[hits[i].doc])) < 1e-12);
    if (i > 0) assert_true(hits[i - 1].score > hits[i].score ||
                           (hits[i - 1].score == hits[i].score && hits[i - 1].doc < hits[i].doc));
  }
  if (n == 0) return;
  /* nothing left out ranks above the last hit */
  kth = ref[hits[n - 1].doc];
  for (i = 0, better = 0; i < RD; i++)
    if (ref[i] > kth * (1 + 1e-12) && (!filter || not_third(i, NULL))) better++;
  assert_true(better < n);
}

static void test_pruned_search_matches_reference(void **state) {
  static rdoc_t docs[RD];
  engram_text_index_t *ix = new_index();
  int round, i, queries = 0;
  (void)state;
  for (i = 0; i < RD; i++) {
    rdoc_make(&docs[i]);
    rdoc_put(ix, &docs[i], (uint64_t)i);
  }
  for (round = 0; round < 6; round++) {
    int qn;
    /* churn: remove some, replace some, bring some back (dead postings, compactions, stale bounds) */
    for (i = 0; i < RD / 4; i++) {
      uint32_t d = rnd() % RD, what = rnd() % 3;
      if (what == 0 && docs[d].live) {
        engram_text_index_remove(ix, d);
        docs[d].live = 0;
      } else {
        rdoc_make(&docs[d]);
        rdoc_put(ix, &docs[d], d);
      }
    }
    {
      size_t live = 0;
      for (i = 0; i < RD; i++) live += (size_t)docs[i].live;
      assert_int_equal(engram_text_index_size(ix), live);
    }
    for (qn = 0; qn < 40; qn++) {
      int q[9], nq = 2 + (int)(rnd() % 8), j;
      for (j = 0; j < nq; j++) q[j] = rnd() % 10 == 0 ? RV + (int)(rnd() % 5) : j > 0 && rnd() % 6 == 0 ? q[j - 1] : zipf_word();
      check_against_reference(ix, docs, q, nq, 1 + rnd() % 20, (int)(rnd() % 2));
      queries++;
    }
  }
  assert_int_equal(queries, 240);
  engram_text_index_free(ix);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_utf8),
      cmocka_unit_test(test_tokenize),
      cmocka_unit_test(test_text_of),
      cmocka_unit_test(test_bm25_scores),
      cmocka_unit_test(test_replace_and_remove),
      cmocka_unit_test(test_ties),
      cmocka_unit_test(test_accept_and_k),
      cmocka_unit_test(test_enomem_leaves_index_unchanged),
      cmocka_unit_test(test_pruned_search_matches_reference),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
