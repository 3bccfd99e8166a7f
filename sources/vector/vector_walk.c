/*
 * vector_walk.c — the distance kernels of the HNSW walk (vector_hnsw.c). A walk scores a few hundred vectors
 * per query, one at a time, each just arrived from memory; the exact search's kernel (vector_knn.c) is built
 * for streaming blocks of rows and keeps its sums in a fixed order without reassociation (two 8-wide vector sums
 * without FMA, then a 16-step scalar reduction: about 150 cycles for 384 dimensions once the row is in cache).
 * These use four independent 8-wide FMA sums and a tree reduction (AVX2+FMA, chosen at run time when the exact
 * kernel is: same CPU test, same ENGRAM_KNN_GENERIC override), or plain C with 8 sums elsewhere. Their results
 * differ from the exact kernel's in the last bits, which is harmless for walking the graph; the scores a search
 * returns, and the ones a filter sees, are recomputed by the exact kernel (vector_hnsw.c, exact_raw).
 */
#include <string.h>

#include "vector_walk.h"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#define HAVE_AVX2_WALK 1
#endif

static float walk_dot_c(const float *a, const float *q, size_t dim) {
  float s[8] = {0}, t = 0;
  size_t i, j;
  for (i = 0; i + 8 <= dim; i += 8)
    for (j = 0; j < 8; j++) s[j] += a[i + j] * q[i + j];
  for (; i < dim; i++) t += a[i] * q[i];
  return t + ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
}

static float walk_l2_c(const float *a, const float *q, size_t dim) {
  float s[8] = {0}, t = 0;
  size_t i, j;
  for (i = 0; i + 8 <= dim; i += 8)
    for (j = 0; j < 8; j++) {
      float d = a[i + j] - q[i + j];
      s[j] += d * d;
    }
  for (; i < dim; i++) t += (a[i] - q[i]) * (a[i] - q[i]);
  return -(t + ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7])));
}

#ifdef HAVE_AVX2_WALK
__attribute__((target("avx2,fma"))) static float hsum256(__m256 v) {
  __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  x = _mm_add_ps(x, _mm_movehl_ps(x, x));
  x = _mm_add_ss(x, _mm_movehdup_ps(x));
  return _mm_cvtss_f32(x);
}

__attribute__((target("avx2,fma"))) static float walk_dot_avx2(const float *a, const float *q, size_t dim) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
  size_t i = 0;
  float t = 0;
  for (; i + 32 <= dim; i += 32) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(q + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(q + i + 8), s1);
    s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(q + i + 16), s2);
    s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(q + i + 24), s3);
  }
  for (; i + 8 <= dim; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(q + i), s0);
  for (; i < dim; i++) t += a[i] * q[i];
  return t + hsum256(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
}

__attribute__((target("avx2,fma"))) static float walk_l2_avx2(const float *a, const float *q, size_t dim) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
  size_t i = 0;
  float t = 0;
  for (; i + 32 <= dim; i += 32) {
    __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(q + i));
    __m256 d1 = _mm256_sub_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(q + i + 8));
    __m256 d2 = _mm256_sub_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(q + i + 16));
    __m256 d3 = _mm256_sub_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(q + i + 24));
    s0 = _mm256_fmadd_ps(d0, d0, s0);
    s1 = _mm256_fmadd_ps(d1, d1, s1);
    s2 = _mm256_fmadd_ps(d2, d2, s2);
    s3 = _mm256_fmadd_ps(d3, d3, s3);
  }
  for (; i + 8 <= dim; i += 8) {
    __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(q + i));
    s0 = _mm256_fmadd_ps(d0, d0, s0);
  }
  for (; i < dim; i++) t += (a[i] - q[i]) * (a[i] - q[i]);
  return -(t + hsum256(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3))));
}
#endif

engram__walk_fn engram__walk_kernel(engram__metric_t metric) {
  int l2 = metric == ENGRAM__METRIC_L2;
#ifdef HAVE_AVX2_WALK
  /* The exact kernel's choice (vector_knn.c, also honouring ENGRAM_KNN_GENERIC) decides for both. */
  if (strcmp(engram__knn_kernel(), "avx2+fma") == 0) return l2 ? walk_l2_avx2 : walk_dot_avx2;
#endif
  return l2 ? walk_l2_c : walk_dot_c;
}

