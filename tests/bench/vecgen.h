/*
 * vecgen.h — the vectors the vector benchmarks search: row i (or query j) is a deterministic pseudo-random unit
 * vector, so that engram (through an embedder that maps the text "r:<i>" to row i), the plain scalar loop and
 * the FAISS baseline (tests/bench/faiss_baseline.cpp, C++) all search exactly the same matrix.
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

#endif
