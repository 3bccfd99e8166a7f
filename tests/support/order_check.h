/*
 * order_check.h — checks ordered searches and listings (opts.order_by) page by page against a sort made here
 * (order_check.c), for the conformance suite and the cache's own tests: a source that answers an ordered search's
 * page itself (ENGRAM_SOURCE_ORDER_LIMIT, the cache's bounded heap) must give exactly the items the core's sort of
 * every match gives.
 */
#ifndef ENGRAM_TEST_ORDER_CHECK_H
#define ENGRAM_TEST_ORDER_CHECK_H

#include "support/harness.h"

/*
 * Reads every item of base's namespace matching pattern (and base's ranges) in the default order, sorts them here
 * by each order (key, created_at_ms, updated_at_ms; ascending and descending; ties by key), then, for each of the
 * n_limits page sizes, pages through them by offset (engram_search) and by cursor (engram_list_keys) and fails the
 * test at the first item that differs from the sort (or a count that differs from the page). Returns how many
 * pairs of items tie on updated_at_ms (so that a caller can require ties).
 */
size_t order_check_pages(ctx_t *c, const char *pattern, const engram_opts_t *base, const int *limits, size_t n_limits);

#endif
