/*
 * vector_knn.h — the vector source's matrix (one contiguous float32 row per item) and its exact k-NN kernel
 * (vector_knn.c).
 */
#ifndef ENGRAM_VECTOR_KNN_H
#define ENGRAM_VECTOR_KNN_H

#include <stddef.h>
#include <stdint.h>

typedef enum { ENGRAM__METRIC_COSINE = 0, ENGRAM__METRIC_DOT, ENGRAM__METRIC_L2 } engram__metric_t;

typedef struct {
  float *data;  /* rows × dim floats, row-major */
  size_t rows, cap, dim;
} engram__matrix_t;

/* Appends a row (copied); returns 0 or ENGRAM_ENOMEM. */
int engram__matrix_append(engram__matrix_t *m, const float *v);
void engram__matrix_set(engram__matrix_t *m, size_t row, const float *v);
/* Moves the last row into row (swap-remove) and drops the last row. */
void engram__matrix_swap_remove(engram__matrix_t *m, size_t row);
void engram__matrix_free(engram__matrix_t *m);
static inline const float *engram__matrix_row(const engram__matrix_t *m, size_t row) { return m->data + row * m->dim; }

/* The raw similarity of every row in [first, first + n) to q: dot product (cosine on normalized rows, dot) or
 * minus the squared Euclidean distance (l2); higher is better. Vectorized (AVX2 when the CPU has it). */
void engram__knn_scores(const engram__matrix_t *m, size_t first, size_t n, const float *q, engram__metric_t metric,
                        float *out);
/* The kernel in use as a function: the raw similarity of rows[0..n) (n × dim floats, contiguous) to q into out. */
typedef void (*engram__kernel_fn)(const float *restrict rows, size_t n, size_t dim, const float *restrict q,
                                  float *restrict out);
engram__kernel_fn engram__knn_kernel_fn(engram__metric_t metric);
/* Maps a raw similarity to a score in [0, 1], 1 = best: cosine (c + 1) / 2, dot 1 / (1 + e^-d), l2 1 / (1 + d). */
double engram__knn_score(engram__metric_t metric, float raw);
/* Scales v to unit L2 norm (a zero vector stays zero). */
void engram__vec_normalize(float *v, size_t dim);
/* The name of the kernel in use ("avx2+fma", "generic"). */
const char *engram__knn_kernel(void);

typedef struct {
  float raw;
  uint32_t row;
} engram__hit_t;

/* Decides whether a row that would enter the top k may (namespace, expiry, pattern, filter, min_score...). */
typedef int (*engram__accept_fn)(uint32_t row, float raw, void *ud);
/* < 0 when row a ranks before row b among equal scores (by key). */
typedef int (*engram__tie_fn)(uint32_t a, uint32_t b, void *ud);

/*
 * Exact top-k over every row: scores are computed block by block, and a row is offered to accept only when it
 * would enter the bounded heap, so filters cost nothing for rows that could not rank. hits (room for k) receive
 * the best k accepted rows, best first, ties by tie. Returns 0 or ENGRAM_ENOMEM.
 */
int engram__knn_topk(const engram__matrix_t *m, const float *q, engram__metric_t metric, size_t k,
                     engram__accept_fn accept, engram__tie_fn tie, void *ud, engram__hit_t *hits, size_t *n_hits);

/* Sorts hits best first (raw descending, ties by tie). */
void engram__hits_sort(engram__hit_t *hits, size_t n, engram__tie_fn tie, void *ud);

#endif
