/*
 * vecgen.h — the vectors the vector benchmarks search: row i (or query j) is a deterministic pseudo-random unit
 * vector, so that engram (through an embedder that maps the text "r:<i>" to row i), the plain scalar loop and
 * the FAISS baseline (tests/bench/faiss_baseline.cpp, C++) all search exactly the same matrix.
 *
 * vecgen_clustered is the approximate-index benchmark's data (bench_ann.c, ann_baseline.cpp, test_hnsw.c): a
 * Gaussian mixture — item i belongs to one of `centres` random unit centres and is that centre plus isotropic
 * Gaussian noise of `sigma` per coordinate, L2-normalised. Queries are items of ids no row uses (held out).
 */
#ifndef ENGRAM_BENCH_VECGEN_H
#define ENGRAM_BENCH_VECGEN_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#define VECGEN_QUERY_BASE 1000000007u /* query j is generated as row VECGEN_QUERY_BASE + j */

/* Fills out[0..d) with the unit vector of row id. */
static inline void vecgen_row(uint64_t id, float *out, size_t d) {
  uint32_t s = (uint32_t)(id * 2654435761u) ^ 0x9e3779b9u;
  double nn = 0;
  size_t j;
  for (j = 0; j < d; j++) {
    float x;
    s = s * 1103515245u + 12345u;
    x = (float)((s >> 8) & 0xffff) / 32768.0f - 1.0f;
    out[j] = x;
    nn += (double)x * x;
  }
  nn = sqrt(nn);
  for (j = 0; j < d; j++) out[j] = (float)(out[j] / nn);
}

#define VECGEN_CENTRE_BASE 2000000011u /* centre c is generated as row VECGEN_CENTRE_BASE + c */

static inline uint64_t vecgen_mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

/* Fills out[0..d) with clustered item id: centre (mix(id) mod centres) + N(0, sigma^2) per coordinate, unit norm. */
static inline void vecgen_clustered(uint64_t id, float *out, size_t d, unsigned centres, double sigma) {
  uint64_t s = vecgen_mix(id * 0x2545f4914f6cdd1dull + 1);
  unsigned c = (unsigned)(vecgen_mix(s) % centres);
  double nn = 0;
  size_t j;
  vecgen_row(VECGEN_CENTRE_BASE + c, out, d);
  for (j = 0; j < d; j += 2) {
    double u1, u2, r;
    s = vecgen_mix(s);
    u1 = ((double)(s >> 11) + 0.5) / 9007199254740992.0;
    s = vecgen_mix(s);
    u2 = (double)(s >> 11) / 9007199254740992.0;
    r = sqrt(-2.0 * log(u1)) * sigma;
    out[j] += (float)(r * cos(6.283185307179586 * u2));
    if (j + 1 < d) out[j + 1] += (float)(r * sin(6.283185307179586 * u2));
  }
  for (j = 0; j < d; j++) nn += (double)out[j] * out[j];
  nn = sqrt(nn);
  for (j = 0; j < d; j++) out[j] = (float)(out[j] / nn);
}

#endif
