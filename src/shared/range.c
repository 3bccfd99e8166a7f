/*
 * range.c — the system-field ranges of search, count and list_keys (ENGRAM_OPT_CREATED_RANGE,
 * ENGRAM_OPT_UPDATED_RANGE, ENGRAM_OPT_EXPIRES_RANGE): the one test every source applies to an item, so the
 * sources that filter in process and the SQL the others push the ranges into keep the same items. An item that
 * never expires (expires_at_ms 0) counts as expiring at ENGRAM_TIME_MAX. The public call validated the ranges
 * (0 ≤ min_ms ≤ max_ms, src/manager/ops.c); this file only compares.
 */
#include "engram/source.h"

static int in(const engram_range_t *r, int64_t v) { return v >= r->min_ms && v <= r->max_ms; }

int engram_request_in_ranges(const engram_request_t *req, int64_t created_at_ms, int64_t updated_at_ms,
                             int64_t expires_at_ms) {
  unsigned f = req->flags;
  if (!(f & ENGRAM_OPT_RANGES)) return 1;
  if ((f & ENGRAM_OPT_CREATED_RANGE) && !in(&req->created_at, created_at_ms)) return 0;
  if ((f & ENGRAM_OPT_UPDATED_RANGE) && !in(&req->updated_at, updated_at_ms)) return 0;
  if ((f & ENGRAM_OPT_EXPIRES_RANGE) && !in(&req->expires_at, expires_at_ms == 0 ? ENGRAM_TIME_MAX : expires_at_ms))
    return 0;
  return 1;
}
