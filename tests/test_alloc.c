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

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(allocation_failure_loop_cache),
      cmocka_unit_test(allocation_failure_loop_emulated),
  };
  return cmocka_run_group_tests_name("allocation failures", tests, NULL, NULL);
}
