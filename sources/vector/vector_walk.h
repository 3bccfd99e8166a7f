/*
 * vector_walk.h — the HNSW walk's own distance kernels (vector_walk.c): one vector against the query, latency
 * rather than throughput, rounding in the last bits differently from the exact kernel (vector_knn.h).
 */
#ifndef ENGRAM_VECTOR_WALK_H
#define ENGRAM_VECTOR_WALK_H

#include <stddef.h>

#include "vector_knn.h"

/* The raw similarity of a to q over dim floats: dot product (cosine on unit vectors, dot), or minus the squared
 * L2 distance (l2); higher is nearer. */
typedef float (*engram__walk_fn)(const float *a, const float *q, size_t dim);

/* The kernel for metric: AVX2+FMA when the exact kernel uses AVX2+FMA, portable C otherwise. */
engram__walk_fn engram__walk_kernel(engram__metric_t metric);

#endif
