/*
 * vector_knn.c — exact k-nearest-neighbour search for the vector source: a contiguous float32 matrix with one
 * row per item, a similarity kernel over blocks of rows, and a bounded heap that keeps the best k.
 *
 * Exact search over a flat matrix is memory-bound: one query reads every row once (100,000 × 384 floats =
 * 154 MB), so the kernel's job is to stream rows at memory speed. It is written as plain C the compiler
 * vectorizes without -ffast-math: each row is reduced into 16 independent partial sums (an element-wise loop,
 * which needs no reassociation), then the partials are added. The same body is compiled twice — portable
 * (SSE2 on x86-64, NEON or scalar elsewhere) and, on x86, for AVX2+FMA — and the AVX2 copy is chosen at run
 * time when the CPU has it. Scores go to a small block buffer (512 rows) that the selection loop reads back
 * from L1, so filters run only for rows that would enter the top k.
 *
 * Delete is swap-remove: the last row moves into the hole, so the matrix stays dense and a delete costs one row
 * copy. Ties between equal scores are broken by the caller's tie function (by key), so results are stable.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "engram/source.h"
#include "vector_knn.h"

#define LANES 16
#define BLOCK 512

/* ---- Matrix ---- */

int engram__matrix_append(engram__matrix_t *m, const float *v) {
  if (m->rows == m->cap) {
    size_t cap = m->cap ? m->cap + m->cap / 2 : 16;
    float *d;
    if (cap > SIZE_MAX / sizeof(float) / m->dim) return ENGRAM_ENOMEM;
    if ((d = engram_realloc(m->data, cap * m->dim * sizeof(float))) == NULL) return ENGRAM_ENOMEM;
    m->data = d;
    m->cap = cap;
  }
  memcpy(m->data + m->rows * m->dim, v, m->dim * sizeof(float));
  m->rows++;
  return 0;
}

void engram__matrix_set(engram__matrix_t *m, size_t row, const float *v) {
  memcpy(m->data + row * m->dim, v, m->dim * sizeof(float));
}

void engram__matrix_swap_remove(engram__matrix_t *m, size_t row) {
  size_t last = m->rows - 1;
  if (row != last) memcpy(m->data + row * m->dim, m->data + last * m->dim, m->dim * sizeof(float));
  m->rows--;
  /* Give memory back when the matrix shrank to a quarter of its capacity. */
  if (m->cap > 64 && m->rows < m->cap / 4) {
    size_t cap = m->cap / 2;
    float *d = engram_realloc(m->data, cap * m->dim * sizeof(float));
    if (d != NULL) {
      m->data = d;
      m->cap = cap;
    }
  }
}

void engram__matrix_free(engram__matrix_t *m) {
  engram_free(m->data);
  m->data = NULL;
  m->rows = m->cap = 0;
}

void engram__vec_normalize(float *v, size_t dim) {
  double s = 0;
  size_t i;
  for (i = 0; i < dim; i++) s += (double)v[i] * v[i];
  if (s > 0) {
    float inv = (float)(1.0 / sqrt(s));
    for (i = 0; i < dim; i++) v[i] *= inv;
  }
}

/* ---- Kernels ---- */

/* One body, compiled per target: dot products (or negated squared distances) of rows[0..n) with q. */
#define KERNEL_BODY(L2)                                                                                   \
  size_t r, i, j;                                                                                         \
  for (r = 0; r < n; r++) {                                                                               \
    const float *restrict a = rows + r * dim;                                                             \
    float acc[LANES] = {0}, s = 0;                                                                        \
    for (i = 0; i + LANES <= dim; i += LANES)                                                             \
      for (j = 0; j < LANES; j++) {                                                                       \
        float d = L2 ? a[i + j] - q[i + j] : a[i + j];                                                    \
        acc[j] += L2 ? d * d : d * q[i + j];                                                              \
      }                                                                                                   \
    for (; i < dim; i++) {                                                                                \
      float d = L2 ? a[i] - q[i] : a[i];                                                                  \
      s += L2 ? d * d : d * q[i];                                                                         \
    }                                                                                                     \
    for (j = 0; j < LANES; j++) s += acc[j];                                                              \
    out[r] = L2 ? -s : s;                                                                                 \
  }

typedef void (*kernel_fn)(const float *restrict rows, size_t n, size_t dim, const float *restrict q,
                          float *restrict out);

static void dot_generic(const float *restrict rows, size_t n, size_t dim, const float *restrict q, float *restrict out) {
  KERNEL_BODY(0)
}
static void l2_generic(const float *restrict rows, size_t n, size_t dim, const float *restrict q, float *restrict out) {
  KERNEL_BODY(1)
}

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define HAVE_AVX2_CLONE 1
__attribute__((target("avx2,fma"))) static void dot_avx2(const float *restrict rows, size_t n, size_t dim,
                                                         const float *restrict q, float *restrict out) {
  KERNEL_BODY(0)
}
__attribute__((target("avx2,fma"))) static void l2_avx2(const float *restrict rows, size_t n, size_t dim,
                                                        const float *restrict q, float *restrict out) {
  KERNEL_BODY(1)
}
#endif

static kernel_fn dot_kernel = dot_generic, l2_kernel = l2_generic;
static const char *kernel_name = "generic";
static uv_once_t kernel_once = UV_ONCE_INIT;

static void pick_kernels(void) {
#ifdef HAVE_AVX2_CLONE
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && getenv("ENGRAM_KNN_GENERIC") == NULL) {
    dot_kernel = dot_avx2;
    l2_kernel = l2_avx2;
    kernel_name = "avx2+fma";
  }
#endif
}

const char *engram__knn_kernel(void) {
  uv_once(&kernel_once, pick_kernels);
  return kernel_name;
}

void engram__knn_scores(const engram__matrix_t *m, size_t first, size_t n, const float *q, engram__metric_t metric,
                        float *out) {
  uv_once(&kernel_once, pick_kernels);
  (metric == ENGRAM__METRIC_L2 ? l2_kernel : dot_kernel)(m->data + first * m->dim, n, m->dim, q, out);
}

engram__kernel_fn engram__knn_kernel_fn(engram__metric_t metric) {
  uv_once(&kernel_once, pick_kernels);
  return metric == ENGRAM__METRIC_L2 ? l2_kernel : dot_kernel;
}

double engram__knn_score(engram__metric_t metric, float raw) {
  double s;
  switch (metric) {
    case ENGRAM__METRIC_COSINE: s = ((double)raw + 1.0) / 2.0; break;
    case ENGRAM__METRIC_DOT: s = 1.0 / (1.0 + exp(-(double)raw)); break;
    default: s = 1.0 / (1.0 + sqrt(raw < 0 ? -(double)raw : 0.0)); break;
  }
  return s < 0 ? 0 : s > 1 ? 1 : s;
}

/* ---- Top k ---- */

typedef struct {
  engram__tie_fn tie;
  void *ud;
} rank_t;

/* Does a rank before b? */
static int before(const rank_t *r, const engram__hit_t *a, const engram__hit_t *b) {
  if (a->raw != b->raw) return a->raw > b->raw;
  return r->tie ? r->tie(a->row, b->row, r->ud) < 0 : a->row < b->row;
}

/* The heap keeps the worst kept hit at the root. */
static void sift_down(const rank_t *r, engram__hit_t *h, size_t n, size_t i) {
  for (;;) {
    size_t l = 2 * i + 1, w = i;
    engram__hit_t t;
    if (l < n && before(r, &h[w], &h[l])) w = l;
    if (l + 1 < n && before(r, &h[w], &h[l + 1])) w = l + 1;
    if (w == i) return;
    t = h[i], h[i] = h[w], h[w] = t;
    i = w;
  }
}

static void sift_up(const rank_t *r, engram__hit_t *h, size_t i) {
  while (i > 0) {
    size_t p = (i - 1) / 2;
    engram__hit_t t;
    if (!before(r, &h[p], &h[i])) return;
    t = h[i], h[i] = h[p], h[p] = t;
    i = p;
  }
}

int engram__knn_topk(const engram__matrix_t *m, const float *q, engram__metric_t metric, size_t k,
                     engram__accept_fn accept, engram__tie_fn tie, void *ud, engram__hit_t *hits, size_t *n_hits) {
  rank_t rk = {tie, ud};
  float scores[BLOCK];
  size_t first, n = 0, i;
  *n_hits = 0;
  if (k == 0) return 0;
  for (first = 0; first < m->rows; first += BLOCK) {
    size_t len = m->rows - first < BLOCK ? m->rows - first : BLOCK;
    engram__knn_scores(m, first, len, q, metric, scores);
    for (i = 0; i < len; i++) {
      engram__hit_t h;
      float s = scores[i];
      if (s != s) continue; /* NaN (an overflow in a huge vector): never ranks */
      if (n == k && s < hits[0].raw) continue;
      h.raw = s;
      h.row = (uint32_t)(first + i);
      if (n == k && !before(&rk, &h, &hits[0])) continue;
      if (accept != NULL && !accept(h.row, s, ud)) continue;
      if (n < k) {
        hits[n] = h;
        sift_up(&rk, hits, n++);
      } else {
        hits[0] = h;
        sift_down(&rk, hits, n, 0);
      }
    }
  }
  /* Heap sort in place: repeatedly move the worst to the end. */
  for (i = n; i > 1; i--) {
    engram__hit_t t = hits[0];
    hits[0] = hits[i - 1];
    hits[i - 1] = t;
    sift_down(&rk, hits, i - 1, 0);
  }
  *n_hits = n;
  return 0;
}

static _Thread_local rank_t sort_rank; /* qsort has no user data: the comparison's context, per thread */

static int cmp_hits(const void *a, const void *b) {
  if (before(&sort_rank, a, b)) return -1;
  if (before(&sort_rank, b, a)) return 1;
  return 0;
}

void engram__hits_sort(engram__hit_t *hits, size_t n, engram__tie_fn tie, void *ud) {
  sort_rank.tie = tie;
  sort_rank.ud = ud;
  qsort(hits, n, sizeof *hits, cmp_hits);
}
