/*
 * test_alloc.c — an allocation-failure loop: a replaceable allocator fails the Nth allocation, for every N from
 * 1 until a whole scenario runs without reaching N, and the scenario (manager, cache source, every operation,
 * emulated operations, text search, info, close) must end each call with success or ENGRAM_ENOMEM — from the
 * call itself or from exactly one callback — never crash, and leave no allocation behind (the allocator counts
 * live blocks; the count must return to zero after every run).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support/failing_alloc.h"
#include "support/harness.h"


/* Accepts success or ENOMEM from a call and, if accepted, from its single callback. */
static void expect(ctx_t *c, int rc, result_t *r, const char *what) {
  if (rc == ENGRAM_ENOMEM) return;
  if (rc == ENGRAM_EUNKNOWN_SOURCE) return; /* the source's open ran out of memory */
  if (rc != 0) fail_msg("%s: returned %s (%s)", what, engram_err_name(rc), engram_last_error());
  wait_for(c, &r->calls, 1, 10000);
  run_for(c, 1);
  if (r->calls != 1) fail_msg("%s: %d callbacks", what, r->calls);
  if (r->status != 0 && r->status != ENGRAM_ENOMEM && r->status != ENGRAM_ENOTFOUND)
    fail_msg("%s: callback %s (%s)", what, engram_err_name(r->status), r->message);
}

static int bump(const cJSON *cur, cJSON **next, void *ud) {
  (void)ud;
  *next = cJSON_CreateNumber(cur && cJSON_IsNumber(cur) ? cur->valuedouble + 1 : 1);
  return *next ? 0 : ENGRAM_ENOMEM;
}

static void scenario(const engram_source_vtable_t *vt) {
  ctx_t c;
  result_t r = {0};
  cJSON *v, *meta;
  engram_query_t q = ENGRAM_QUERY_INIT;
  engram_opts_t o = {0};
  engram_entry_t e[2];
  const char *keys[] = {"a", "b", "zz"};
  int rc;
  memset(&c, 0, sizeof c);
  assert_int_equal(uv_loop_init(&c.loop), 0);
  while ((rc = engram_manager_new(&c.mgr, &c.loop, NULL)) == ENGRAM_ENOMEM) {
  }
  assert_int_equal(rc, 0);
  rc = engram_manager_add_source(c.mgr, "mem", vt, "{\"max_entries\": 100}", "d", 1, capture_cb, &r);
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
    q.text = NULL;
    q.filter = NULL;
    q.pattern = "*";
    rc = engram_count(c.mgr, &q, NULL, capture_cb, &r);
    expect(&c, rc, &r, "count");
    result_reset(&r);
    rc = engram_list_keys(c.mgr, "?", 1, NULL, NULL, capture_cb, &r);
    expect(&c, rc, &r, "list_keys");
    result_reset(&r);
    rc = engram_update(c.mgr, "counter", bump, NULL, NULL, capture_cb, &r);
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
    rc = engram_info(c.mgr, NULL, capture_cb, &r);
    expect(&c, rc, &r, "info");
    result_reset(&r);
    rc = engram_manager_list_sources(c.mgr, NULL, capture_cb, &r);
    expect(&c, rc, &r, "list_sources");
    result_reset(&r);
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
}

static void scenario_of(void *vt) { scenario(vt); }

static void run_loop_over(const engram_source_vtable_t *vt) {
  long points = failing_alloc_loop(scenario_of, (void *)vt);
  printf("  %s: every one of %ld allocations failed once\n", vt->name, points);
  assert_true(getenv("ENGRAM_ALLOC_ONLY") || points > 50);
}

static void allocation_failure_loop_cache(void **state) {
  (void)state;
  run_loop_over(&engram_source_cache);
}

/* The same with only the required methods: every emulated operation of the core under failing allocations. */
static void allocation_failure_loop_emulated(void **state) {
  engram_source_vtable_t vt = engram_source_cache;
  (void)state;
  vt.name = "cache-required-only";
  vt.store_many = vt.retrieve_many = vt.delete_many = NULL;
  vt.count = vt.exists = vt.update = vt.clear = vt.info = NULL;
  run_loop_over(&vt);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(allocation_failure_loop_cache),
      cmocka_unit_test(allocation_failure_loop_emulated),
  };
  return cmocka_run_group_tests_name("allocation failures", tests, NULL, NULL);
}
