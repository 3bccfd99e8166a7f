/*
 * failing_alloc.c — see failing_alloc.h. Each block carries a 16-byte header holding its size, so realloc can
 * copy, and the live-block counter proves that every failure path frees what it allocated.
 */
#include <stdlib.h>
#include <string.h>

#include "support/failing_alloc.h"
#include "support/harness.h"

static long alloc_count, fail_at, live;
static int failed_once;

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

long failing_alloc_point(void) { return fail_at; }

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
    if (live != 0) fail_msg("failing allocation #%ld leaked %ld blocks", n, live);
    if (!failed_once || only) break; /* fewer than n allocations: every point was covered */
  }
  fail_at = 0;
  assert_int_equal(engram_set_allocator(NULL), 0);
  return only ? 0 : n - 1;
}
