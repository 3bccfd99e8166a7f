/*
 * order_check.c — ordered pages checked against a sort of every match made in the test (order_check.h): the
 * oracle is a plain search of every item and qsort here, so it shares no code with the core's sort (order.c) or
 * a source's own page (the cache's heap, cache_topk.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support/order_check.h"

typedef struct {
  char *key;
  int64_t v[4]; /* indexed by ENGRAM_ORDER_*: 0, 0 (key), created_at_ms, updated_at_ms */
} row_t;

static int sort_by, sort_desc; /* qsort has no context argument; tests run on one thread */

static int row_cmp(const void *a, const void *b) {
  const row_t *x = a, *y = b;
  int c = x->v[sort_by] < y->v[sort_by] ? -1 : x->v[sort_by] > y->v[sort_by] ? 1 : strcmp(x->key, y->key);
  return sort_desc ? -c : c;
}

static void expect_key(const char *how, int by, int desc, int limit, size_t at, const row_t *rows, size_t n,
                       const char *got) {
  if (at >= n) fail_msg("%s by %d%s, pages of %d: item %zu is %s, want no more items", how, by, desc ? " desc" : "",
                        limit, at, got);
  if (strcmp(rows[at].key, got) != 0)
    fail_msg("%s by %d%s, pages of %d: item %zu is %s, want %s", how, by, desc ? " desc" : "", limit, at, got,
             rows[at].key);
}

/* Pages by offset, then by cursor, in order (by, desc), comparing each item with rows (sorted in that order). */
static void walk(ctx_t *c, const char *pattern, const engram_opts_t *base, int by, int desc, int limit,
                 const row_t *rows, size_t n) {
  engram_opts_t o = *base;
  engram_query_t q = ENGRAM_QUERY_INIT;
  result_t r = {0};
  char *cursor = NULL;
  size_t at = 0, i;
  o.order_by = by;
  if (desc) o.flags |= ENGRAM_OPT_DESCENDING;
  q.pattern = pattern;
  q.limit = limit;
  for (q.offset = 0;; q.offset += limit) {
    assert_int_equal(s_search(c, &q, &o, &r), 0);
    assert_int_equal((int)r.count, (int)r.n_items);
    for (i = 0; i < r.n_items; i++) expect_key("search", by, desc, limit, at++, rows, n, result_key(&r, i));
    if (r.n_items < (size_t)limit) break;
  }
  if (at != n) fail_msg("search by %d%s, pages of %d: %zu items, want %zu", by, desc ? " desc" : "", limit, at, n);
  at = 0;
  do {
    assert_int_equal(s_list(c, pattern, limit, cursor, &o, &r), 0);
    free(cursor);
    cursor = r.cursor ? strdup(r.cursor) : NULL;
    assert_true(r.n_items <= (size_t)limit);
    for (i = 0; i < r.n_items; i++) expect_key("list_keys", by, desc, limit, at++, rows, n, result_key(&r, i));
  } while (cursor != NULL);
  if (at != n) fail_msg("list_keys by %d%s, pages of %d: %zu items, want %zu", by, desc ? " desc" : "", limit, at, n);
  result_reset(&r);
}

size_t order_check_pages(ctx_t *c, const char *pattern, const engram_opts_t *base, const int *limits, size_t n_limits) {
  engram_query_t q = ENGRAM_QUERY_INIT;
  engram_opts_t plain = *base;
  result_t r = {0};
  row_t *rows;
  size_t n, i, j, ties = 0;
  int by, desc;
  plain.order_by = ENGRAM_ORDER_DEFAULT;
  plain.flags &= ~(unsigned)ENGRAM_OPT_DESCENDING;
  q.pattern = pattern;
  q.limit = ENGRAM_ORDER_MAX;
  assert_int_equal(s_search(c, &q, &plain, &r), 0);
  n = r.n_items;
  assert_non_null(rows = calloc(n ? n : 1, sizeof *rows));
  for (i = 0; i < n; i++) {
    rows[i].key = strdup(result_key(&r, i));
    rows[i].v[ENGRAM_ORDER_CREATED_AT] = (int64_t)result_item(&r, i, "created_at_ms")->valuedouble;
    rows[i].v[ENGRAM_ORDER_UPDATED_AT] = (int64_t)result_item(&r, i, "updated_at_ms")->valuedouble;
  }
  result_reset(&r);
  for (by = ENGRAM_ORDER_KEY; by <= ENGRAM_ORDER_UPDATED_AT; by++)
    for (desc = 0; desc < 2; desc++) {
      sort_by = by;
      sort_desc = desc;
      qsort(rows, n, sizeof *rows, row_cmp);
      for (j = 0; j < n_limits; j++) walk(c, pattern, base, by, desc, limits[j], rows, n);
    }
  for (i = 0; i + 1 < n; i++) ties += rows[i].v[ENGRAM_ORDER_UPDATED_AT] == rows[i + 1].v[ENGRAM_ORDER_UPDATED_AT];
  for (i = 0; i < n; i++) free(rows[i].key);
  free(rows);
  return ties;
}
