/*
 * failing_alloc.c — see failing_alloc.h. Each block carries a 16-byte header holding its size, so realloc can
 * copy, and the live-block counter proves that every failure path frees what it allocated. The counters are
 * atomic: sources with threads of their own (SQLite, vector) allocate and free on those threads while the test's
 * thread does too (a plain counter lost updates, and ThreadSanitizer reported the race in test_tiered).
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "support/failing_alloc.h"
#include "support/harness.h"

static atomic_long alloc_count, fail_at, live;
static atomic_int failed_once;

static void *t_malloc(size_t n) {
  size_t *p;
  if (++alloc_count == fail_at) {
    failed_once = 1;
    return NULL;
  }
  if ((p = malloc(n + 16)) == NULL) return NULL;
  p[0] = n;
  live++;
  return (char *)p + 16;
}

static void t_free(void *q) {
  if (q == NULL) return;
  live--;
  free((char *)q - 16);
}

static void *t_realloc(void *q, size_t n) {
  void *p;
  size_t old;
  if (q == NULL) return t_malloc(n);
  if (++alloc_count == fail_at) {
    failed_once = 1;
    return NULL;
  }
  old = *(size_t *)((char *)q - 16);
  if ((p = malloc(n + 16)) == NULL) return NULL;
  *(size_t *)p = n;
  memcpy((char *)p + 16, q, old < n ? old : n);
  free((char *)q - 16);
  return (char *)p + 16;
}

static const engram_allocator_t failing = {t_malloc, t_realloc, t_free};

long failing_alloc_point(void) { return atomic_load(&fail_at); }

long failing_alloc_loop(void (*scenario)(void *arg), void *arg) {
  const char *only = getenv("ENGRAM_ALLOC_ONLY");
  long n;
  assert_int_equal(engram_set_allocator(&failing), 0);
  for (n = only ? atol(only) : 1;; n++) {
    alloc_count = 0;
    fail_at = n;
    failed_once = 0;
    live = 0;
    scenario(arg);
    engram_release_thread_cache(); /* request blocks kept for reuse are not leaks */
    if (atomic_load(&live) != 0) fail_msg("failing allocation #%ld leaked %ld blocks", n, (long)atomic_load(&live));
    if (!failed_once || only) break; /* fewer than n allocations: every point was covered */
  }
  fail_at = 0;
  assert_int_equal(engram_set_allocator(NULL), 0);
  return only ? 0 : n - 1;
}

/* ---- A scenario that runs every operation ---- */

/* Success, ENOMEM or ENOTFOUND — from the call, or from exactly one callback. */
static void expect(ctx_t *c, int rc, result_t *r, const char *what) {
  if (rc == ENGRAM_ENOMEM || rc == ENGRAM_EUNKNOWN_SOURCE) return;
  if (rc != 0) fail_msg("%s: returned %s (%s)", what, engram_err_name(rc), engram_last_error());
  wait_for(c, &r->calls, 1, 10000);
  /* A second callback for this call would arrive later: capture_cb counts it in harness_strays, which the
   * scenario checks once the loop has run dry at its end. */
  if (r->calls != 1) fail_msg("%s: %d callbacks", what, r->calls);
  if (r->status != 0 && r->status != ENGRAM_ENOMEM && r->status != ENGRAM_ENOTFOUND)
    fail_msg("%s (failing allocation #%ld): callback %s (%s)", what, failing_alloc_point(), engram_err_name(r->status), r->message);
}

void failing_alloc_configure(const char *config_json, const char *default_source) {
  ctx_t c;
  result_t r = {0};
  cJSON *v;
  int rc;
  memset(&c, 0, sizeof c);
  assert_int_equal(uv_loop_init(&c.loop), 0);
  while ((rc = engram_manager_new(&c.mgr, &c.loop, NULL)) == ENGRAM_ENOMEM) {
  }
  assert_int_equal(rc, 0);
  rc = engram_manager_configure(c.mgr, config_json, capture_cb, &r);
  expect(&c, rc, &r, "configure");
  result_reset(&r);
  rc = engram_manager_set_default_source(c.mgr, default_source);
  if (rc != 0 && rc != ENGRAM_ENOMEM && rc != ENGRAM_EUNKNOWN_SOURCE) /* unknown: configure stopped before it */
    fail_msg("set_default_source (failing allocation #%ld): %s (%s)", failing_alloc_point(), engram_err_name(rc),
             engram_last_error());
  rc = engram_manager_list_sources(c.mgr, NULL, capture_cb, &r);
  expect(&c, rc, &r, "list_sources");
  result_reset(&r);
  if ((v = cJSON_CreateString("kept")) != NULL) {
    rc = engram_store(c.mgr, "k", v, NULL, capture_cb, &r);
    expect(&c, rc, &r, "store");
    result_reset(&r);
    rc = engram_retrieve(c.mgr, "k", NULL, capture_cb, &r);
    expect(&c, rc, &r, "retrieve");
    result_reset(&r);
    cJSON_Delete(v);
  }
  while ((rc = engram_manager_close(c.mgr, capture_cb, &r)) == ENGRAM_ENOMEM) {
  }
  assert_int_equal(rc, 0);
  wait_for(&c, &r.calls, 1, 10000);
  result_reset(&r);
  assert_int_equal(uv_run(&c.loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&c.loop), 0);
  if (harness_strays != 0) fail_msg("failing allocation #%ld: %d stray callbacks", failing_alloc_point(), harness_strays);
}

static int bump(const cJSON *cur, cJSON **next, void *ud) {
  (void)ud;
  *next = cJSON_CreateNumber(cur && cJSON_IsNumber(cur) ? cur->valuedouble + 1 : 1);
  return *next ? 0 : ENGRAM_ENOMEM;
}

void failing_alloc_every_op(const engram_source_vtable_t *vt, const char *options) {
  ctx_t c;
  result_t r = {0};
  cJSON *v, *meta;
  engram_query_t q = ENGRAM_QUERY_INIT;
  engram_opts_t o = {0}, ordered = {0};
  engram_entry_t e[2];
  const char *keys[] = {"a", "b", "zz"};
  int rc;
  memset(&c, 0, sizeof c);
  assert_int_equal(uv_loop_init(&c.loop), 0);
  while ((rc = engram_manager_new(&c.mgr, &c.loop, NULL)) == ENGRAM_ENOMEM) {
  }
  assert_int_equal(rc, 0);
  rc = engram_manager_add_source(c.mgr, "mem", vt, options, "d", 1, capture_cb, &r);
  expect(&c, rc, &r, "add_source");
  result_reset(&r);
  v = cJSON_Parse("{\"text\": \"the quick brown fox\", \"n\": [1, 2, 3]}");
  meta = cJSON_Parse("{\"tags\": [\"x\"], \"n\": 5}");
  if (v != NULL && meta != NULL) {
    o.metadata = meta;
    rc = engram_store(c.mgr, "a", v, &o, capture_cb, &r);
    expect(&c, rc, &r, "store");
    result_reset(&r);
    rc = engram_store(c.mgr, "b", v, NULL, capture_cb, &r);
    expect(&c, rc, &r, "store b");
    result_reset(&r);
    o.flags = ENGRAM_OPT_INCLUDE_METADATA;
    o.metadata = NULL;
    rc = engram_retrieve(c.mgr, "a", &o, capture_cb, &r);
    expect(&c, rc, &r, "retrieve");
    result_reset(&r);
    q.text = "quick fox";
    q.filter = meta;
    rc = engram_search(c.mgr, &q, NULL, capture_cb, &r);
    expect(&c, rc, &r, "search text");
    result_reset(&r);
    q.filter = NULL;
    rc = engram_search(c.mgr, &q, NULL, capture_cb, &r);
    expect(&c, rc, &r, "search text (walk, index built)");
    result_reset(&r);
    rc = engram_search(c.mgr, &q, NULL, capture_cb, &r);
    expect(&c, rc, &r, "search text (cached index)");
    result_reset(&r);
    rc = engram_count(c.mgr, &q, NULL, capture_cb, &r);
    expect(&c, rc, &r, "count text");
    result_reset(&r);
    q.filter = meta;
    q.text = NULL;
    q.pattern = "*";
    rc = engram_count(c.mgr, &q, NULL, capture_cb, &r);
    expect(&c, rc, &r, "count");
    result_reset(&r);
    q.filter = NULL;
    rc = engram_search(c.mgr, &q, NULL, capture_cb, &r);
    expect(&c, rc, &r, "search pattern");
    result_reset(&r);
    rc = engram_list_keys(c.mgr, "?", 1, NULL, NULL, capture_cb, &r);
    expect(&c, rc, &r, "list_keys");
    result_reset(&r);
    /* In an order the core applies (order.c), within a system-field range; a listing's second page too. */
    ordered.order_by = ENGRAM_ORDER_UPDATED_AT;
    ordered.flags = ENGRAM_OPT_DESCENDING | ENGRAM_OPT_CREATED_RANGE;
    ordered.created_at.max_ms = ENGRAM_TIME_MAX;
    rc = engram_search(c.mgr, &q, &ordered, capture_cb, &r);
    expect(&c, rc, &r, "search in order");
    result_reset(&r);
    rc = engram_list_keys(c.mgr, NULL, 1, NULL, &ordered, capture_cb, &r);
    expect(&c, rc, &r, "list_keys in order");
    if (r.status == 0 && r.cursor != NULL) {
      char *cursor = strdup(r.cursor);
      result_reset(&r);
      rc = engram_list_keys(c.mgr, NULL, 1, cursor, &ordered, capture_cb, &r);
      expect(&c, rc, &r, "list_keys in order, next page");
      free(cursor);
    }
    result_reset(&r);
    rc = engram_update(c.mgr, "a", bump, NULL, NULL, capture_cb, &r);
    expect(&c, rc, &r, "update");
    result_reset(&r);
    e[0].key = "m1"; e[0].value = v; e[0].metadata = NULL; e[0].has_ttl = 0; e[0].ttl_ms = 0;
    e[1].key = "m2"; e[1].value = meta; e[1].metadata = meta; e[1].has_ttl = 1; e[1].ttl_ms = 1000;
    rc = engram_store_many(c.mgr, e, 2, NULL, capture_cb, &r);
    expect(&c, rc, &r, "store_many");
    result_reset(&r);
    rc = engram_retrieve_many(c.mgr, keys, 3, NULL, capture_cb, &r);
    expect(&c, rc, &r, "retrieve_many");
    result_reset(&r);
    rc = engram_delete_many(c.mgr, keys, 3, NULL, capture_cb, &r);
    expect(&c, rc, &r, "delete_many");
    result_reset(&r);
    rc = engram_exists(c.mgr, "m1", NULL, capture_cb, &r);
    expect(&c, rc, &r, "exists");
    result_reset(&r);
    rc = engram_delete(c.mgr, "m1", NULL, capture_cb, &r);
    expect(&c, rc, &r, "delete");
    result_reset(&r);
    rc = engram_info(c.mgr, NULL, capture_cb, &r);
    expect(&c, rc, &r, "info");
    result_reset(&r);
    rc = engram_manager_list_sources(c.mgr, NULL, capture_cb, &r);
    expect(&c, rc, &r, "list_sources");
    result_reset(&r);
    /* Conversations (include/engram/thread.h), built on the operations above. */
    {
      engram_message_t m[2];
      engram_thread_settings_t st = {ENGRAM_THREAD_MAX_MESSAGES, 3, 0};
      engram_window_t w = ENGRAM_WINDOW_INIT;
      uint64_t seq1 = 1;
      cJSON *tmeta = cJSON_Parse("{\"topic\": \"t\"}");
      memset(m, 0, sizeof m);
      m[0].role = "system";
      m[0].content = "be brief";
      m[1].role = "user";
      m[1].content = "hello there";
      m[1].metadata = meta;
      rc = engram_thread_append(c.mgr, "t1", m, 2, &st, NULL, capture_cb, &r);
      expect(&c, rc, &r, "thread_append");
      result_reset(&r);
      rc = engram_thread_append(c.mgr, "t1", &m[1], 1, NULL, NULL, capture_cb, &r);
      expect(&c, rc, &r, "thread_append again");
      result_reset(&r);
      w.format = ENGRAM_RENDER_ANTHROPIC;
      rc = engram_thread_window(c.mgr, "t1", &w, NULL, capture_cb, &r);
      expect(&c, rc, &r, "thread_window");
      result_reset(&r);
      rc = engram_thread_read(c.mgr, "t1", 0, 10, NULL, capture_cb, &r);
      expect(&c, rc, &r, "thread_read");
      result_reset(&r);
      rc = engram_thread_get_message(c.mgr, "t1", 2, NULL, capture_cb, &r);
      expect(&c, rc, &r, "thread_get_message");
      result_reset(&r);
      rc = engram_thread_info(c.mgr, "t1", NULL, capture_cb, &r);
      expect(&c, rc, &r, "thread_info");
      result_reset(&r);
      if (tmeta != NULL) {
        rc = engram_thread_set(c.mgr, "t1", tmeta, NULL, NULL, capture_cb, &r);
        expect(&c, rc, &r, "thread_set");
        result_reset(&r);
      }
      cJSON_Delete(tmeta);
      rc = engram_thread_list(c.mgr, 10, NULL, NULL, capture_cb, &r);
      expect(&c, rc, &r, "thread_list");
      result_reset(&r);
      rc = engram_thread_delete_messages(c.mgr, "t1", &seq1, 1, NULL, capture_cb, &r);
      expect(&c, rc, &r, "thread_delete_messages");
      result_reset(&r);
      rc = engram_thread_delete(c.mgr, "t1", NULL, capture_cb, &r);
      expect(&c, rc, &r, "thread_delete");
      result_reset(&r);
    }
    o.flags = ENGRAM_OPT_CONFIRM;
    rc = engram_clear(c.mgr, &o, capture_cb, &r);
    expect(&c, rc, &r, "clear");
    result_reset(&r);
  }
  cJSON_Delete(v);
  cJSON_Delete(meta);
  while ((rc = engram_manager_close(c.mgr, capture_cb, &r)) == ENGRAM_ENOMEM) {
  }
  assert_int_equal(rc, 0);
  wait_for(&c, &r.calls, 1, 10000);
  result_reset(&r);
  assert_int_equal(uv_run(&c.loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&c.loop), 0);
  if (harness_strays != 0) fail_msg("failing allocation #%ld: %d stray callbacks", failing_alloc_point(), harness_strays);
}
