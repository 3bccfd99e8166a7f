/*
 * test_vector.c — the vector source beyond the conformance suite: exact k-NN against a double-precision brute
 * force for every metric, thresholds, filters and namespaces applied before the limit, persistence (reopen, and
 * a writer killed with SIGKILL), embedders that fail, answer late or answer with the wrong dimension, the
 * embedder registry, max_items, batching and ordering with an asynchronous embedder, and bad input.
 *
 * Test embedders (registered once in main): "parse" reads the floats written in the text ("0.5 -1 2"), so a
 * test stores exactly the vectors it wants; "fail" always fails; "late" answers 300 ms later from a timer on
 * the source's loop; "wrongdim" answers 3 floats to a 4-dimension source; "async" answers on the next loop
 * turn, at most 3 texts per call, counting its calls.
 */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "support/harness.h"

/* ---- Test embedders ---- */

static size_t parse_floats(const char *s, float *out, size_t max) {
  size_t n = 0;
  char *end;
  while (*s && n < max) {
    float f = strtof(s, &end);
    if (end == s) {
      s++;
      continue;
    }
    out[n++] = f;
    s = end;
  }
  return n;
}

static void parse_embed(const engram_embedder_t *self, const char *const *texts, size_t n, engram_embed_done_fn done,
                        void *cb_ud) {
  size_t dim = engram_embed_dimension(cb_ud), i, got = dim;
  float *out = calloc(n * dim + 1, sizeof *out);
  (void)self;
  for (i = 0; i < n; i++) {
    size_t k = parse_floats(texts[i], out + i * dim, dim);
    if (k != dim) got = k;
  }
  done(cb_ud, 0, NULL, out, got);
  free(out);
}

static void fail_embed(const engram_embedder_t *self, const char *const *texts, size_t n, engram_embed_done_fn done,
                       void *cb_ud) {
  (void)self, (void)texts, (void)n;
  done(cb_ud, ENGRAM_EBACKEND, "model overloaded", NULL, 0);
}

static void wrongdim_embed(const engram_embedder_t *self, const char *const *texts, size_t n, engram_embed_done_fn done,
                           void *cb_ud) {
  float out[64] = {0};
  (void)self, (void)texts;
  done(cb_ud, 0, NULL, out, n <= 16 ? 3 : 0);
}

/* Asynchronous embedders: the answer comes from a timer on the source's loop. */
typedef struct {
  uv_timer_t timer;
  const char *const *texts;
  size_t n;
  engram_embed_done_fn done;
  void *cb_ud;
} pending_t;

static int async_calls;

static void free_pending(uv_handle_t *h) { free(h->data); }

static void pending_fire(uv_timer_t *t) {
  pending_t *p = t->data;
  parse_embed(NULL, p->texts, p->n, p->done, p->cb_ud);
  uv_close((uv_handle_t *)&p->timer, free_pending);
}

static void later(const char *const *texts, size_t n, engram_embed_done_fn done, void *cb_ud, uint64_t ms) {
  pending_t *p = calloc(1, sizeof *p);
  p->texts = texts, p->n = n, p->done = done, p->cb_ud = cb_ud;
  uv_timer_init(engram_embed_loop(cb_ud), &p->timer);
  p->timer.data = p;
  uv_timer_start(&p->timer, pending_fire, ms, 0);
}

static void late_embed(const engram_embedder_t *self, const char *const *texts, size_t n, engram_embed_done_fn done,
                       void *cb_ud) {
  (void)self;
  later(texts, n, done, cb_ud, 300);
}

static void async_embed(const engram_embedder_t *self, const char *const *texts, size_t n, engram_embed_done_fn done,
                        void *cb_ud) {
  (void)self;
  async_calls++;
  assert_true(n <= 3);
  assert_int_equal(engram_embed_purpose(cb_ud), strchr(texts[0], '?') ? ENGRAM_EMBED_QUERY : ENGRAM_EMBED_DOCUMENT);
  later(texts, n, done, cb_ud, 1);
}

static int destroyed;
static void count_destroy(void *ud) { destroyed += ud == (void *)&destroyed; }

/* ---- Helpers ---- */

static int add_vec(ctx_t *c, const char *name, const char *options, result_t *r) {
  result_reset(r);
  assert_int_equal(engram_manager_add_source(c->mgr, name, &engram_source_vector, options, "test", 1, capture_cb, r), 0);
  wait_for(c, &r->calls, 1, 30000);
  return r->status;
}

static void vec_text(char *buf, size_t len, const float *v, size_t dim) {
  size_t i, p = 0;
  buf[0] = '\0';
  for (i = 0; i < dim && p < len; i++) p += (size_t)snprintf(buf + p, len - p, "%.9g ", (double)v[i]);
}

static uint64_t rng = 88172645463325252ull;
static float frand(void) {
  rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
  return (float)((double)(rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static int s_search_vec(ctx_t *c, const float *q, size_t dim, int limit, double min_score, const engram_opts_t *o,
                        result_t *r) {
  engram_query_t query = ENGRAM_QUERY_INIT;
  query.vector = q;
  query.dimension = dim;
  query.limit = limit;
  query.min_score = min_score;
  return s_search(c, &query, o, r);
}

static double ref_score(const char *metric, const float *a, const float *q, size_t dim) {
  double dot = 0, na = 0, nq = 0, d2 = 0;
  size_t i;
  for (i = 0; i < dim; i++) {
    dot += (double)a[i] * q[i], na += (double)a[i] * a[i], nq += (double)q[i] * q[i];
    d2 += ((double)a[i] - q[i]) * ((double)a[i] - q[i]);
  }
  if (strcmp(metric, "cosine") == 0) return (dot / sqrt(na * nq) + 1) / 2;
  if (strcmp(metric, "dot") == 0) return 1 / (1 + exp(-dot));
  return 1 / (1 + sqrt(d2));
}

/* ---- k-NN against brute force ---- */

#define KN 300
#define KD 24

static void knn_matches_reference(const char *metric) {
  ctx_t c;
  result_t r = {0};
  static float items[KN][KD];
  char opts[200], text[600], key[32];
  size_t i, j, qi;
  ctx_init(&c, NULL);
  snprintf(opts, sizeof opts, "{\"embedder\": \"parse\", \"dimension\": %d, \"metric\": \"%s\"}", KD, metric);
  assert_int_equal(add_vec(&c, "v", opts, &r), 0);
  for (i = 0; i < KN; i++) {
    cJSON *v;
    for (j = 0; j < KD; j++) items[i][j] = frand() * (strcmp(metric, "dot") == 0 ? 0.3f : 1.0f);
    vec_text(text, sizeof text, items[i], KD);
    parse_floats(text, items[i], KD); /* exactly the floats the source gets */
    snprintf(key, sizeof key, "k%03zu", i);
    v = cJSON_CreateObject();
    cJSON_AddStringToObject(v, "text", text);
    result_reset(&r);
    assert_int_equal(engram_store(c.mgr, key, v, NULL, capture_cb, &r), 0);
    cJSON_Delete(v);
    wait_for(&c, &r.calls, 1, 10000);
    assert_int_equal(r.status, 0);
  }
  for (qi = 0; qi < 20; qi++) {
    float q[KD];
    double ref[KN];
    int order[KN];
    for (j = 0; j < KD; j++) q[j] = frand();
    for (i = 0; i < KN; i++) ref[i] = ref_score(metric, items[i], q, KD), order[i] = (int)i;
    for (i = 0; i < KN; i++) /* selection of the best 10 by the reference */
      for (j = i + 1; j < KN && i < 10; j++)
        if (ref[order[j]] > ref[order[i]]) {
          int t = order[i];
          order[i] = order[j], order[j] = t;
        }
    assert_int_equal(s_search_vec(&c, q, KD, 10, 0, NULL, &r), 0);
    assert_int_equal(r.n_items, 10);
    for (i = 0; i < 10; i++) {
      const char *got = result_key(&r, i);
      double score = result_item(&r, i, "score")->valuedouble;
      int row = atoi(got + 1);
      if (fabs(score - ref[row]) > 1e-5) fail_msg("%s: %s scored %.9f, reference %.9f", metric, got, score, ref[row]);
      /* Same key at each rank, unless two reference scores are closer than float precision can tell apart. */
      if (row != order[i] && fabs(ref[row] - ref[order[i]]) > 1e-6)
        fail_msg("%s: rank %zu is %s, reference k%03d", metric, i, got, order[i]);
      if (i > 0) assert_true(score <= result_item(&r, i - 1, "score")->valuedouble);
    }
  }
  result_reset(&r);
  ctx_close(&c);
}

static void knn_cosine(void **state) { (void)state; knn_matches_reference("cosine"); }
static void knn_dot(void **state) { (void)state; knn_matches_reference("dot"); }
static void knn_l2(void **state) { (void)state; knn_matches_reference("l2"); }

/* ---- Thresholds, filters, namespaces ---- */

static void store_text(ctx_t *c, const char *key, const char *text, const engram_opts_t *o) {
  result_t r = {0};
  cJSON *v = cJSON_CreateString(text);
  assert_int_equal(engram_store(c->mgr, key, v, o, capture_cb, &r), 0);
  cJSON_Delete(v);
  wait_for(c, &r.calls, 1, 10000);
  if (r.status != 0) fail_msg("store %s: %s", key, r.message);
  result_reset(&r);
}

static void threshold_and_min_score(void **state) {
  ctx_t c;
  result_t r = {0};
  float q[10] = {1, 0};
  (void)state;
  ctx_init(&c, NULL);
  assert_int_equal(add_vec(&c, "v", "{\"embedder\": \"parse\", \"dimension\": 2, \"similarity_threshold\": 0.8}", &r), 0);
  store_text(&c, "same", "1 0", NULL);      /* cosine 1 → score 1 */
  store_text(&c, "near", "0.8 0.6", NULL);  /* 0.8 → 0.9 */
  store_text(&c, "far", "0.2 0.9798", NULL); /* 0.2 → 0.6 */
  store_text(&c, "opposite", "-1 0", NULL); /* -1 → 0 */
  assert_int_equal(s_search_vec(&c, q, 2, 10, 0, NULL, &r), 0); /* the threshold applies */
  assert_int_equal(r.n_items, 2);
  assert_string_equal(result_key(&r, 0), "same");
  assert_string_equal(result_key(&r, 1), "near");
  assert_true(fabs(result_item(&r, 1, "score")->valuedouble - 0.9) < 1e-6);
  assert_int_equal(s_search_vec(&c, q, 10, 10, 0.95, NULL, &r), ENGRAM_EDIMENSION); /* wrong length */
  assert_int_equal(s_search_vec(&c, q, 2, 10, 0.95, NULL, &r), 0);
  assert_int_equal(r.n_items, 1);
  assert_int_equal(s_search_vec(&c, q, 2, 10, 0.5, NULL, &r), 0); /* a query's own min_score wins */
  assert_int_equal(r.n_items, 3);
  assert_string_equal(result_key(&r, 2), "far");
  assert_int_equal(s_search_vec(&c, q, 2, 1, 0.5, NULL, &r), 0);
  assert_int_equal(r.n_items, 1);
  result_reset(&r);
  ctx_close(&c);
}

static void filters_and_namespaces_before_limit(void **state) {
  ctx_t c;
  result_t r = {0};
  engram_opts_t a = {0}, b = {0};
  engram_query_t q = ENGRAM_QUERY_INIT;
  float qv[2] = {1, 0};
  char key[32], text[64];
  int i;
  cJSON *f;
  (void)state;
  ctx_init(&c, NULL);
  a.ns = "a", b.ns = "b";
  assert_int_equal(add_vec(&c, "v", "{\"embedder\": \"parse\", \"dimension\": 2}", &r), 0);
  for (i = 0; i < 40; i++) { /* the lower i, the closer to the query; odd ones are the closest of each pair */
    cJSON *meta = cJSON_CreateObject();
    cJSON_AddBoolToObject(meta, "even", i % 2 == 0);
    a.metadata = meta;
    snprintf(key, sizeof key, "k%02d", i);
    snprintf(text, sizeof text, "%.6f %.6f", cos((i ^ 1) * 0.03), sin((i ^ 1) * 0.03));
    store_text(&c, key, text, &a);
    cJSON_Delete(meta);
    store_text(&c, key, "1 0", &b); /* namespace b holds perfect matches */
  }
  a.metadata = NULL;
  f = J("{\"even\": true}");
  q.vector = qv, q.dimension = 2, q.limit = 5, q.filter = f;
  assert_int_equal(s_search(&c, &q, &a, &r), 0);
  assert_int_equal(r.n_items, 5);
  for (i = 0; i < 5; i++) { /* the 5 best even items, not the even ones among the 5 best */
    snprintf(key, sizeof key, "k%02d", 2 * i);
    assert_string_equal(result_key(&r, (size_t)i), key);
    assert_string_equal(result_item(&r, (size_t)i, "ns")->valuestring, "a");
  }
  q.filter = NULL;
  q.pattern = "k3*";
  assert_int_equal(s_search(&c, &q, &a, &r), 0);
  assert_int_equal(r.n_items, 5);
  assert_string_equal(result_key(&r, 0), "k31"); /* 31 ^ 1 = 30: the closest of k30..k39 */
  q.offset = 8;
  assert_int_equal(s_search(&c, &q, &a, &r), 0);
  assert_int_equal(r.n_items, 2);
  q.offset = 0, q.pattern = NULL;
  assert_int_equal(s_count(&c, &q, &a, &r), 0);
  assert_int_equal((int)r.count, 40);
  cJSON_Delete(f);
  result_reset(&r);
  ctx_close(&c);
}

/* ---- The built-in embedder ---- */

static void hash_text_search(void **state) {
  ctx_t c;
  result_t r = {0};
  engram_query_t q = ENGRAM_QUERY_INIT;
  float v[64], w[64];
  size_t i;
  double n = 0;
  (void)state;
  ctx_init(&c, NULL);
  assert_int_equal(add_vec(&c, "v", "{\"dimension\": 64, \"text_fields\": [\"body\"]}", &r), 0);
  assert_int_equal(s_store(&c, "fox", "{\"body\": \"The quick brown fox jumps over the lazy dog\", \"tag\": \"zebra\"}", NULL, &r), 0);
  assert_int_equal(s_store(&c, "sql", "{\"body\": \"Relational databases and SQL queries\", \"tag\": \"fox\"}", NULL, &r), 0);
  assert_int_equal(s_store(&c, "foxes", "{\"body\": \"Foxes are small omnivorous mammals\"}", NULL, &r), 0);
  q.text = "fox";
  assert_int_equal(s_search(&c, &q, NULL, &r), 0);
  assert_int_equal(r.n_items, 1); /* "Foxes" folds to "foxe", not "fox"; sql's "fox" is outside text_fields */
  assert_string_equal(result_key(&r, 0), "fox");
  q.text = "zebra";
  assert_int_equal(s_search(&c, &q, NULL, &r), 0);
  assert_int_equal(r.n_items, 0);
  q.text = "the of and"; /* stop words only: no word to share */
  assert_int_equal(s_search(&c, &q, NULL, &r), 0);
  assert_int_equal(r.n_items, 0);
  /* A raw vector made by engram_embed_hash finds its own document first, with score 1. */
  assert_int_equal(engram_embed_hash("Relational databases and SQL queries", v, 64), 0);
  for (i = 0; i < 64; i++) n += (double)v[i] * v[i];
  assert_true(fabs(n - 1) < 1e-5);
  assert_int_equal(s_search_vec(&c, v, 64, 3, 0, NULL, &r), 0);
  assert_int_equal(r.n_items, 3);
  assert_string_equal(result_key(&r, 0), "sql");
  assert_true(result_item(&r, 0, "score")->valuedouble > 0.99999);
  assert_int_equal(engram_embed_hash("", w, 64), 0);
  for (i = 0; i < 64; i++) assert_true(w[i] == 0.0f);
  assert_int_equal(engram_embed_hash("x", w, 0), ENGRAM_EINVAL);
  result_reset(&r);
  ctx_close(&c);
}

/* ---- Persistence ---- */

static char tmpdir[64];

static void rm_db(const char *path) {
  char p[256];
  unlink(path);
  snprintf(p, sizeof p, "%s-wal", path);
  unlink(p);
  snprintf(p, sizeof p, "%s-shm", path);
  unlink(p);
}

static const char *const docs[] = {
    "command line tool for transferring data with URL syntax", "retrieves files from the web over HTTP and FTP",
    "GNU image manipulation program for photo retouching", "HTTP client for the command line made for humans",
    "fast incremental file transfer and mirroring tool", "secure shell client for remote login",
    "relational database engine in a single file", "text editor for programmers with syntax highlighting",
};

static void reopen_gives_same_results(void **state) {
  ctx_t c;
  result_t r = {0}, before = {0};
  engram_query_t q = ENGRAM_QUERY_INIT;
  engram_opts_t o = {0};
  char path[128], opts[256], key[16];
  cJSON *meta = J("{\"kind\": \"tool\"}");
  size_t i;
  (void)state;
  snprintf(path, sizeof path, "%s/reopen.db", tmpdir);
  snprintf(opts, sizeof opts, "{\"path\": \"%s\", \"dimension\": 128}", path);
  ctx_init(&c, NULL);
  assert_int_equal(add_vec(&c, "v", opts, &r), 0);
  o.metadata = meta;
  for (i = 0; i < sizeof docs / sizeof docs[0]; i++) {
    snprintf(key, sizeof key, "d%zu", i);
    store_text(&c, key, docs[i], &o);
  }
  store_text(&c, "d0", docs[0], &o); /* version 2 */
  o.metadata = NULL;
  assert_int_equal(s_delete(&c, "d5", NULL, &r), 0);
  q.text = "command line HTTP tool";
  assert_int_equal(s_search(&c, &q, NULL, &before), 0);
  assert_true(before.n_items >= 3);
  ctx_close(&c);
  /* Reopen: same items, same scores, same versions. */
  ctx_init(&c, NULL);
  assert_int_equal(add_vec(&c, "v", opts, &r), 0);
  assert_int_equal(s_search(&c, &q, NULL, &r), 0);
  assert_int_equal(r.n_items, before.n_items);
  for (i = 0; i < r.n_items; i++) {
    assert_string_equal(result_key(&r, i), result_key(&before, i));
    assert_true(fabs(result_item(&r, i, "score")->valuedouble - result_item(&before, i, "score")->valuedouble) < 1e-9);
  }
  o.flags = ENGRAM_OPT_INCLUDE_METADATA;
  assert_int_equal(s_retrieve(&c, "d0", &o, &r), 0);
  assert_int_equal((int)result_item(&r, 0, "version")->valuedouble, 2);
  assert_string_equal(cJSON_GetObjectItem(result_item(&r, 0, "metadata"), "kind")->valuestring, "tool");
  assert_int_equal(s_retrieve(&c, "d5", NULL, &r), ENGRAM_ENOTFOUND);
  ctx_close(&c);
  /* Another dimension or another embedder cannot read those vectors. */
  ctx_init(&c, NULL);
  snprintf(opts, sizeof opts, "{\"path\": \"%s\", \"dimension\": 64}", path);
  assert_int_equal(add_vec(&c, "v", opts, &r), ENGRAM_EDIMENSION);
  assert_non_null(strstr(r.message, "dimension 128"));
  snprintf(opts, sizeof opts, "{\"path\": \"%s\", \"dimension\": 128, \"embedder\": \"parse\"}", path);
  assert_int_equal(add_vec(&c, "v", opts, &r), ENGRAM_EINVAL);
  assert_non_null(strstr(r.message, "hash"));
  result_reset(&r);
  result_reset(&before);
  ctx_close(&c);
  cJSON_Delete(meta);
  rm_db(path);
}

typedef struct {
  int calls, status;
} ack_t;

static void child_ack(int status, const engram_reply_t *reply, void *ud) {
  ack_t *a = ud;
  (void)reply;
  a->status = status;
  a->calls++;
}

/* The child: stores doc0, doc1, ... one at a time and reports each acknowledged index on fd, until killed. */
static void child_writer(const char *opts, int fd) {
  uv_loop_t loop;
  engram_manager_t *mgr;
  ack_t a = {0, 0};
  int i;
  uv_loop_init(&loop);
  if (engram_manager_new(&mgr, &loop, NULL) != 0) _exit(2);
  engram_manager_add_source(mgr, "v", &engram_source_vector, opts, "", 1, child_ack, &a);
  if (!loop_wait(&loop, &a.calls, 1, 30000) || a.status != 0) _exit(3);
  for (i = 0;; i++) {
    char key[32], text[64];
    cJSON *v;
    snprintf(key, sizeof key, "doc%d", i);
    snprintf(text, sizeof text, "document number %d about cats", i);
    v = cJSON_CreateString(text);
    a.calls = 0;
    if (engram_store(mgr, key, v, NULL, child_ack, &a) != 0) _exit(4);
    cJSON_Delete(v);
    if (!loop_wait(&loop, &a.calls, 1, 30000) || a.status != 0) _exit(5);
    if (write(fd, &i, sizeof i) != (ssize_t)sizeof i) _exit(6);
  }
}

static void kill9_keeps_acknowledged(void **state) {
  ctx_t c;
  result_t r = {0};
  char path[128], opts[256], key[32];
  int fds[2], acked = -1, got = 0, i, wstatus;
  pid_t pid;
  (void)state;
  snprintf(path, sizeof path, "%s/kill9.db", tmpdir);
  snprintf(opts, sizeof opts, "{\"path\": \"%s\", \"dimension\": 32}", path);
  assert_int_equal(pipe(fds), 0);
  pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    close(fds[0]);
    child_writer(opts, fds[1]);
  }
  close(fds[1]);
  while (got < 300) { /* read acknowledgements, then kill the writer in the middle of its work */
    int idx;
    if (read(fds[0], &idx, sizeof idx) != (ssize_t)sizeof idx) break;
    acked = idx;
    got++;
  }
  kill(pid, SIGKILL);
  assert_int_equal(waitpid(pid, &wstatus, 0), pid);
  assert_true(WIFSIGNALED(wstatus));
  close(fds[0]);
  assert_int_equal(acked, 299);
  ctx_init(&c, NULL);
  assert_int_equal(add_vec(&c, "v", opts, &r), 0);
  for (i = 0; i <= acked; i++) {
    snprintf(key, sizeof key, "doc%d", i);
    if (s_retrieve(&c, key, NULL, &r) != 0) fail_msg("acknowledged %s is missing after kill -9", key);
  }
  result_reset(&r);
  ctx_close(&c);
  rm_db(path);
}

/* ---- Embedders that misbehave ---- */

static void failing_embedder(void **state) {
  ctx_t c;
  result_t r = {0};
  engram_query_t q = ENGRAM_QUERY_INIT;
  cJSON *v1 = J("\"one\""), *v2 = J("\"two\"");
  engram_entry_t e[2] = {{"m1", v1, NULL, 0, 0}, {"m2", v2, NULL, 0, 0}};
  (void)state;
  ctx_init(&c, NULL);
  assert_int_equal(add_vec(&c, "v", "{\"embedder\": \"fail\", \"dimension\": 4}", &r), 0);
  assert_int_equal(s_store(&c, "k", "{\"text\": \"hello world\"}", NULL, &r), ENGRAM_EEMBED);
  assert_non_null(strstr(r.message, "model overloaded"));
  assert_non_null(strstr(r.message, "'fail'"));
  assert_int_equal(s_retrieve(&c, "k", NULL, &r), ENGRAM_ENOTFOUND);
  q.text = "hello";
  assert_int_equal(s_search(&c, &q, NULL, &r), ENGRAM_EEMBED);
  result_reset(&r);
  assert_int_equal(engram_store_many(c.mgr, e, 2, NULL, capture_cb, &r), 0);
  wait_for(&c, &r.calls, 1, 10000);
  assert_int_equal(r.status, ENGRAM_EEMBED);
  assert_int_equal(s_retrieve(&c, "m1", NULL, &r), ENGRAM_ENOTFOUND);
  /* A value without text needs no embedding: it is stored with a zero vector. */
  assert_int_equal(s_store(&c, "n", "42", NULL, &r), 0);
  assert_int_equal(s_info(&c, NULL, &r), 0);
  assert_true(cJSON_GetObjectItem(r.info, "embed_errors")->valuedouble >= 3);
  cJSON_Delete(v1);
  cJSON_Delete(v2);
  result_reset(&r);
  ctx_close(&c);
}

static void late_embedder(void **state) {
  ctx_t c;
  result_t r = {0};
  engram_opts_t o = {0};
  (void)state;
  ctx_init(&c, NULL);
  assert_int_equal(add_vec(&c, "v", "{\"embedder\": \"late\", \"dimension\": 2}", &r), 0);
  o.deadline_ms = 50;
  assert_int_equal(s_store(&c, "k", "\"1 2\"", &o, &r), ENGRAM_ETIMEDOUT);
  run_for(&c, 400); /* the late answer arrives and is dropped */
  assert_int_equal(s_retrieve(&c, "k", NULL, &r), ENGRAM_ENOTFOUND);
  assert_int_equal(s_info(&c, NULL, &r), 0);
  assert_true(cJSON_GetObjectItem(r.info, "embed_late")->valuedouble >= 1);
  /* Without a deadline the same embedder is just slow. */
  assert_int_equal(s_store(&c, "k", "\"1 2\"", NULL, &r), 0);
  assert_int_equal(s_retrieve(&c, "k", NULL, &r), 0);
  /* embed_timeout_ms bounds a call that has no deadline. */
  assert_int_equal(add_vec(&c, "w", "{\"embedder\": \"late\", \"dimension\": 2, \"embed_timeout_ms\": 50}", &r), 0);
  o.deadline_ms = 0;
  o.source = "w";
  assert_int_equal(s_store(&c, "k", "\"1 2\"", &o, &r), ENGRAM_ETIMEDOUT);
  assert_non_null(strstr(r.message, "did not answer within 50 ms"));
  assert_int_equal(s_store(&c, "n", "7", &o, &r), 0); /* the queue moved on */
  assert_int_equal(s_retrieve(&c, "k", &o, &r), ENGRAM_ENOTFOUND);
  run_for(&c, 400);
  assert_int_equal(s_retrieve(&c, "k", &o, &r), ENGRAM_ENOTFOUND);
  result_reset(&r);
  ctx_close(&c);
}

static void wrong_dimension_embedder(void **state) {
  ctx_t c;
  result_t r = {0};
  (void)state;
  ctx_init(&c, NULL);
  assert_int_equal(add_vec(&c, "v", "{\"embedder\": \"wrongdim\", \"dimension\": 4}", &r), 0);
  assert_int_equal(s_store(&c, "k", "\"some text\"", NULL, &r), ENGRAM_EDIMENSION);
  assert_non_null(strstr(r.message, "dimension 3"));
  assert_int_equal(s_retrieve(&c, "k", NULL, &r), ENGRAM_ENOTFOUND);
  /* "parse" with too few numbers: the same error, nothing stored. */
  assert_int_equal(add_vec(&c, "p", "{\"embedder\": \"parse\", \"dimension\": 4}", &r), 0);
  {
    engram_opts_t o = {0};
    o.source = "p";
    assert_int_equal(s_store(&c, "k", "\"1 2 3\"", &o, &r), ENGRAM_EDIMENSION);
    assert_int_equal(s_retrieve(&c, "k", &o, &r), ENGRAM_ENOTFOUND);
    assert_int_equal(s_store(&c, "k", "\"1 2 3 nan\"", &o, &r), ENGRAM_EEMBED); /* strtof reads "nan" */
    assert_int_equal(s_retrieve(&c, "k", &o, &r), ENGRAM_ENOTFOUND);
  }
  result_reset(&r);
  ctx_close(&c);
}

static void async_embedder_batches_in_order(void **state) {
  ctx_t c;
  result_t r = {0}, rs = {0}, rr = {0};
  engram_entry_t e[10];
  cJSON *vals[10];
  engram_query_t q = ENGRAM_QUERY_INIT;
  char keys[10][16], text[32];
  int i;
  (void)state;
  ctx_init(&c, NULL);
  assert_int_equal(add_vec(&c, "v", "{\"embedder\": \"async\", \"dimension\": 2}", &r), 0);
  for (i = 0; i < 10; i++) {
    snprintf(keys[i], sizeof keys[i], "b%d", i);
    snprintf(text, sizeof text, "%d 1", i);
    vals[i] = cJSON_CreateString(text);
    e[i].key = keys[i], e[i].value = vals[i], e[i].metadata = NULL, e[i].has_ttl = 0;
  }
  async_calls = 0;
  result_reset(&r);
  assert_int_equal(engram_store_many(c.mgr, e, 10, NULL, capture_cb, &r), 0);
  wait_for(&c, &r.calls, 1, 10000);
  assert_int_equal(r.status, 0);
  assert_int_equal((int)r.count, 10);
  assert_int_equal(async_calls, 4); /* max_batch 3: 3 + 3 + 3 + 1 */
  /* A store and a retrieve sent together: the retrieve waits for the store's embedding. */
  {
    cJSON *v = J("\"5 5\"");
    assert_int_equal(engram_store(c.mgr, "late", v, NULL, capture_cb, &rs), 0);
    assert_int_equal(engram_retrieve(c.mgr, "late", NULL, capture_cb, &rr), 0);
    cJSON_Delete(v);
    wait_for(&c, &rr.calls, 1, 10000);
    assert_int_equal(rs.calls, 1);
    assert_int_equal(rs.status, 0);
    assert_int_equal(rr.status, 0);
  }
  q.text = "1 0 ?"; /* a query text (the embedder checks the purpose) */
  q.limit = 3;
  assert_int_equal(s_search(&c, &q, NULL, &r), 0);
  assert_int_equal(r.n_items, 3);
  for (i = 0; i < 10; i++) cJSON_Delete(vals[i]);
  result_reset(&r);
  result_reset(&rs);
  result_reset(&rr);
  ctx_close(&c);
}

/* ---- Registry, options, limits ---- */

static void registry_and_options(void **state) {
  ctx_t c;
  result_t r = {0};
  engram_embedder_t emb = {2, 0, &destroyed, parse_embed, count_destroy};
  (void)state;
  assert_int_equal(engram_register_embedder("hash", &emb), ENGRAM_EEXIST);
  assert_int_equal(engram_register_embedder("bad name", &emb), ENGRAM_EINVAL);
  assert_int_equal(engram_register_embedder("two", &emb), 0);
  assert_int_equal(engram_register_embedder("two", &emb), ENGRAM_EEXIST);
  assert_int_equal(engram_unregister_embedder("nobody"), ENGRAM_ENOTFOUND);
  assert_int_equal(engram_unregister_embedder("hash"), ENGRAM_EINVAL);
  ctx_init(&c, NULL);
  assert_int_equal(add_vec(&c, "v", "{\"dimension\": 0}", &r), ENGRAM_EINVAL);
  assert_non_null(strstr(r.message, "dimension"));
  assert_int_equal(add_vec(&c, "v", "{\"dimension\": 65537}", &r), ENGRAM_EINVAL);
  assert_non_null(strstr(r.message, "1..65536"));
  assert_int_equal(add_vec(&c, "v", "{\"metric\": \"manhattan\"}", &r), ENGRAM_EINVAL);
  assert_int_equal(add_vec(&c, "v", "{\"embedder\": \"nobody\"}", &r), ENGRAM_EINVAL);
  assert_int_equal(add_vec(&c, "v", "{\"colour\": 1}", &r), ENGRAM_EINVAL);
  assert_int_equal(add_vec(&c, "v", "{\"embedder\": \"two\", \"dimension\": 3}", &r), ENGRAM_EDIMENSION);
  assert_int_equal(add_vec(&c, "v", "{\"embedding_model\": \"two\", \"max_items\": 3}", &r), 0); /* dimension 2 */
  /* Unregistered while in use: the source goes on; destroy runs once, after the source closed. */
  assert_int_equal(engram_unregister_embedder("two"), 0);
  assert_int_equal(destroyed, 0);
  store_text(&c, "a", "1 0", NULL);
  store_text(&c, "b", "0 1", NULL);
  store_text(&c, "c", "1 1", NULL);
  store_text(&c, "a", "1 0.5", NULL); /* rewriting makes "a" the newest */
  store_text(&c, "d", "1 2", NULL);   /* max_items 3: the least recently written ("b") goes */
  assert_int_equal(s_retrieve(&c, "b", NULL, &r), ENGRAM_ENOTFOUND);
  assert_int_equal(s_retrieve(&c, "a", NULL, &r), 0);
  assert_int_equal(s_info(&c, NULL, &r), 0);
  assert_int_equal((int)cJSON_GetObjectItem(r.info, "items")->valuedouble, 3);
  assert_int_equal((int)cJSON_GetObjectItem(r.info, "evictions")->valuedouble, 1);
  assert_string_equal(cJSON_GetObjectItem(r.info, "embedder")->valuestring, "two");
  result_reset(&r);
  ctx_close(&c);
  assert_int_equal(destroyed, 1);
}

static void bad_query_vectors(void **state) {
  ctx_t c;
  result_t r = {0};
  engram_query_t q = ENGRAM_QUERY_INIT;
  float v[4] = {1, 0, 0, 0};
  (void)state;
  ctx_init(&c, NULL);
  assert_int_equal(add_vec(&c, "v", "{\"dimension\": 4}", &r), 0);
  q.vector = v;
  q.dimension = 4;
  v[2] = NAN;
  assert_int_equal(engram_search(c.mgr, &q, NULL, capture_cb, &r), ENGRAM_EINVAL); /* refused at submit */
  assert_non_null(strstr(engram_last_error(), "finite"));
  v[2] = INFINITY;
  assert_int_equal(engram_count(c.mgr, &q, NULL, capture_cb, &r), ENGRAM_EINVAL);
  v[2] = 0;
  q.dimension = 3;
  assert_int_equal(s_search(&c, &q, NULL, &r), ENGRAM_EDIMENSION);
  assert_non_null(strstr(r.message, "dimension 3"));
  assert_int_equal(s_count(&c, &q, NULL, &r), ENGRAM_EDIMENSION);
  q.dimension = 4;
  assert_int_equal(s_search(&c, &q, NULL, &r), 0);
  assert_int_equal(r.n_items, 0);
  assert_int_equal(r.calls, 1);
  result_reset(&r);
  ctx_close(&c);
}

static int group_setup(void **state) {
  engram_embedder_t parse = {0, 0, NULL, parse_embed, NULL}, fail = {0, 0, NULL, fail_embed, NULL};
  engram_embedder_t late = {0, 0, NULL, late_embed, NULL}, wrong = {4, 0, NULL, wrongdim_embed, NULL};
  engram_embedder_t async = {0, 3, NULL, async_embed, NULL};
  (void)state;
  snprintf(tmpdir, sizeof tmpdir, "/tmp/engram_test_vector_XXXXXX");
  if (mkdtemp(tmpdir) == NULL) return -1;
  if (engram_register_embedder("parse", &parse) || engram_register_embedder("fail", &fail) ||
      engram_register_embedder("late", &late) || engram_register_embedder("wrongdim", &wrong) ||
      engram_register_embedder("async", &async))
    return -1;
  return 0;
}

static int group_teardown(void **state) {
  (void)state;
  engram_unregister_embedder("parse");
  engram_unregister_embedder("fail");
  engram_unregister_embedder("late");
  engram_unregister_embedder("wrongdim");
  engram_unregister_embedder("async");
  rmdir(tmpdir);
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(knn_cosine),
      cmocka_unit_test(knn_dot),
      cmocka_unit_test(knn_l2),
      cmocka_unit_test(threshold_and_min_score),
      cmocka_unit_test(filters_and_namespaces_before_limit),
      cmocka_unit_test(hash_text_search),
      cmocka_unit_test(reopen_gives_same_results),
      cmocka_unit_test(kill9_keeps_acknowledged),
      cmocka_unit_test(failing_embedder),
      cmocka_unit_test(late_embedder),
      cmocka_unit_test(wrong_dimension_embedder),
      cmocka_unit_test(async_embedder_batches_in_order),
      cmocka_unit_test(registry_and_options),
      cmocka_unit_test(bad_query_vectors),
  };
  return cmocka_run_group_tests_name("vector", tests, group_setup, group_teardown);
}
