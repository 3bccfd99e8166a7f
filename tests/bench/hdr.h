/*
 * hdr.h — a small HDR-style latency histogram for the benchmarks: log-linear buckets (every power of two split
 * into 64 equal sub-buckets, values under 128 ns exact), so that every recorded value is kept to within 1/64 of
 * itself (about two significant digits) from 1 ns to 60 s, in a fixed 16 KiB of counters with no allocation and
 * O(1) recording. Percentiles are read back as the midpoint of the bucket holding the rank (error under 0.8%);
 * the minimum, maximum, count and mean are exact. It replaces sorting an array of every latency: recording stays
 * cheap at a million calls per second and long runs cost no memory.
 */
#ifndef ENGRAM_BENCH_HDR_H
#define ENGRAM_BENCH_HDR_H

#include <stdint.h>

#define BL_HDR_SUB_BITS 6                                  /* 64 sub-buckets per power of two */
#define BL_HDR_MAX_NS 60000000000ull                       /* 60 s: larger values are counted as 60 s */
#define BL_HDR_BUCKETS ((36 - BL_HDR_SUB_BITS) * 64 + 128) /* 2^36 ns > 60 s */

typedef struct {
  uint64_t counts[BL_HDR_BUCKETS];
  uint64_t total, min, max, clamped; /* clamped: values over BL_HDR_MAX_NS */
  double sum;
} bl_hdr_t;

/* Empties h. */
void bl_hdr_reset(bl_hdr_t *h);
/* Records one value, in ns. */
void bl_hdr_add(bl_hdr_t *h, uint64_t ns);
/* The value at quantile q (0..1: 0.5 = median, 0.999 = p999), in ns; 0 when h is empty. q = 1 gives the exact max. */
double bl_hdr_quantile(const bl_hdr_t *h, double q);
/* Mean of the recorded values, ns (0 when empty). */
double bl_hdr_mean(const bl_hdr_t *h);

#endif
