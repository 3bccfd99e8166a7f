/*
 * hdr.c — the log-linear latency histogram of hdr.h. Bucket layout: values 0..127 have a bucket each; a value v
 * ≥ 128 with highest set bit b (b ≥ 7) falls in the group of shift s = b - 6, whose 64 buckets each span 2^s ns
 * ([64·2^s, 128·2^s) cut in 64), so a bucket is never wider than 1/64 of the values in it.
 */
#include "hdr.h"

#include <string.h>

void bl_hdr_reset(bl_hdr_t *h) {
  memset(h, 0, sizeof *h);
  h->min = UINT64_MAX;
}

static unsigned bucket_of(uint64_t v) {
  unsigned b, s;
  if (v < 128) return (unsigned)v;
  b = 63u - (unsigned)__builtin_clzll(v); /* highest set bit, ≥ 7 */
  s = b - BL_HDR_SUB_BITS;                /* ≥ 1 */
  return 128u + (s - 1u) * 64u + (unsigned)((v >> s) - 64u);
}

/* The lowest value of bucket i and its width. */
static void bucket_range(unsigned i, uint64_t *lo, uint64_t *width) {
  unsigned s;
  if (i < 128) {
    *lo = i;
    *width = 1;
    return;
  }
  s = (i - 128u) / 64u + 1u;
  *lo = ((uint64_t)((i - 128u) % 64u) + 64u) << s;
  *width = (uint64_t)1 << s;
}

void bl_hdr_add(bl_hdr_t *h, uint64_t ns) {
  if (ns > BL_HDR_MAX_NS) {
    h->clamped++;
    ns = BL_HDR_MAX_NS;
  }
  h->counts[bucket_of(ns)]++;
  h->total++;
  h->sum += (double)ns;
  if (ns < h->min) h->min = ns;
  if (ns > h->max) h->max = ns;
}

double bl_hdr_quantile(const bl_hdr_t *h, double q) {
  uint64_t rank, seen = 0, lo, width;
  unsigned i;
  double mid;
  if (h->total == 0) return 0;
  if (q >= 1) return (double)h->max;
  if (q <= 0) return (double)h->min;
  rank = (uint64_t)(q * (double)h->total); /* the value with rank values below or at it, 1-based */
  if ((double)rank < q * (double)h->total) rank++;
  if (rank == 0) rank = 1;
  for (i = 0; i < BL_HDR_BUCKETS; i++) {
    seen += h->counts[i];
    if (seen >= rank) break;
  }
  bucket_range(i, &lo, &width);
  mid = (double)lo + (double)(width - 1) / 2;
  /* Never outside what was recorded (the extreme buckets may be wider than their content). */
  if (mid < (double)h->min) mid = (double)h->min;
  if (mid > (double)h->max) mid = (double)h->max;
  return mid;
}

double bl_hdr_mean(const bl_hdr_t *h) { return h->total ? h->sum / (double)h->total : 0; }
