/*
 * test_order_limit.c — the cache's answer to an ordered search with a limit (ENGRAM_SOURCE_ORDER_LIMIT: a bounded
 * heap of the page's best entries, sources/cache/cache_topk.c) at a scale the conformance suite does not reach:
 * 2,000 items written in batches (many ties on both timestamps), rewritten in part, beside another namespace,
 * keys outside the pattern and an expired item, paged through by offset and by cursor in every order and
 * compared item for item with a sort of every match made in the test (support/order_check.c). And the same walk on
 * a cache vtable without the flag (the core's sort of every match), so both paths meet the same oracle.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "support/harness.h"
#include "support/order_check.h"

#define N_ITEMS 2000
#define BATCH 250

static void add_as_mem(ctx_t *c, const engram_source_vtable_t *vt) {
  result_t r = {0};
  assert_int_equal(engram_manager_add_source(c->mgr, "mem", vt, NULL, NULL, 1, capture_cb, &r), 0);
  wait_for(c, &r.calls, 1, 30000);
  assert_int_equal(r.status, 0);
  result_reset(&r);
}

/* Stores keys i%04d for i = first, first + step, ... (n of them) in one store_many (one time stamp: ties). */
static void store_batch(ctx_t *c, const char *ns, int first, int step, int n) {
  engram_entry_t *e = calloc((size_t)n, sizeof *e);
  char (*keys)[16] = calloc((size_t)n, sizeof *keys);
  cJSON *v = J("{\"text\": \"a value\"}");
  engram_opts_t o = {0};
  result_t r = {0};
  int i;
  assert_non_null(e);
  assert_non_null(keys);
  o.ns = ns;
  for (i = 0; i < n; i++) {
    snprintf(keys[i], sizeof keys[i], "i%04d", (first + i * step) % N_ITEMS);
    e[i].key = keys[i];
    e[i].value = v;
  }
  assert_int_equal(engram_store_many(c->mgr, e, (size_t)n, &o, capture_cb, &r), 0);
  wait_for(c, &r.calls, 1, 30000);
  assert_int_equal(r.status, 0);
  result_reset(&r);
  cJSON_Delete(v);
  free(keys);
  free(e);
}

static void walk_at_scale(const engram_source_vtable_t *vt) {
  ctx_t c;
  result_t r = {0};
  engram_opts_t o = {0}, ttl = {0};
  static const int limits[] = {20, 333};
  int b;
  size_t ties;
  ctx_init(&c, NULL);
  add_as_mem(&c, vt);
  store_batch(&c, "other", 0, 1, BATCH); /* the same keys in another namespace */
  for (b = 0; b < N_ITEMS / BATCH; b++) { /* batch b: every eighth key from b on, so key order is not write order */
    int64_t t = engram_now_ms();
    store_batch(&c, NULL, b, N_ITEMS / BATCH, BATCH);
    if (b % 2 == 1) wait_clock_past(&c, t); /* two batches may share a millisecond, most do not */
  }
  store_batch(&c, NULL, 5, 3, BATCH); /* written again: updated later than created, across batches */
  assert_int_equal(s_store(&c, "other-key", "1", NULL, &r), 0); /* outside the pattern */
  ttl.flags = ENGRAM_OPT_TTL;
  ttl.ttl_ms = 1;
  assert_int_equal(s_store(&c, "i9999", "1", &ttl, &r), 0); /* expired before the walk */
  wait_clock_past(&c, (int64_t)result_item(&r, 0, "expires_at_ms")->valuedouble);
  ties = order_check_pages(&c, "i*", &o, limits, sizeof limits / sizeof limits[0]);
  if (ties < 100) fail_msg("only %zu ties on updated_at_ms: the walk tests too little", ties);
  /* the oracle saw every item once: the expired one and the other namespace's are not among them */
  {
    engram_query_t q = ENGRAM_QUERY_INIT;
    q.pattern = "i*";
    assert_int_equal(s_count(&c, &q, &o, &r), 0);
    assert_int_equal((int)r.count, N_ITEMS);
  }
  result_reset(&r);
  ctx_close(&c);
}

static void heap_pages_match_the_full_sort(void **state) {
  (void)state;
  walk_at_scale(&engram_source_cache);
}

/* The cache without ENGRAM_SOURCE_ORDER_LIMIT: the core asks for every match and sorts them (the path of every
 * other source), against the same oracle. */
static void core_sort_pages_match_the_full_sort(void **state) {
  static engram_source_vtable_t plain;
  (void)state;
  plain = engram_source_cache;
  plain.name = "cache-without-order-limit";
  plain.flags &= ~(unsigned)ENGRAM_SOURCE_ORDER_LIMIT;
  walk_at_scale(&plain);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(heap_pages_match_the_full_sort),
      cmocka_unit_test(core_sort_pages_match_the_full_sort),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
