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


static void scenario_of(void *vt) { failing_alloc_every_op(vt, "{\"max_entries\": 100}"); }

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
  engram_source_vtable_t vt;
  (void)state;
  conf_required_only(&vt, &engram_source_cache, "cache-required-only");
  run_loop_over(&vt);
}

/* engram_manager_configure and the option readers of the in-process backends under failing allocations: the
 * document is parsed and checked, "${NAME}" expanded, each backend reads its options (engram_opt_*) and opens;
 * every failure ends with ENGRAM_ENOMEM, nothing leaks. */
static const char configure_json[] =
    "{\"sources\": ["
    "{\"name\": \"cache\", \"type\": \"cache\", \"description\": \"session cache\","
    " \"options\": {\"max_entries\": 1000, \"sweep_interval_ms\": 50}},"
    "{\"name\": \"persistent\", \"type\": \"sqlite\", \"description\": \"long-term\", \"default\": true,"
    " \"options\": {\"path\": \":memory:\", \"busy_timeout_ms\": 1000}},"
    "{\"name\": \"vectors\", \"type\": \"vector\", \"description\": \"similarity\","
    " \"options\": {\"dimension\": 64, \"metric\": \"cosine\", \"embedding_model\": \"${ENGRAM_ALLOC_TEST_MODEL}\", \"sweep_interval_ms\": 50}}"
    "], \"ignored\": {\"x\": [1, 2, 3]}}";

static void configure_scenario(void *unused) {
  (void)unused;
  failing_alloc_configure(configure_json, "persistent");
}

static void allocation_failure_loop_configure(void **state) {
  long points;
  (void)state;
  setenv("ENGRAM_ALLOC_TEST_MODEL", "hash", 1);
  points = failing_alloc_loop(configure_scenario, NULL);
  printf("  configure (cache, sqlite, vector): every one of %ld allocations failed once\n", points);
  assert_true(getenv("ENGRAM_ALLOC_ONLY") || points > 50);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(allocation_failure_loop_cache),
      cmocka_unit_test(allocation_failure_loop_emulated),
      cmocka_unit_test(allocation_failure_loop_configure),
  };
  return cmocka_run_group_tests_name("allocation failures", tests, NULL, NULL);
}
