/*
 * vector_hnsw.h — the vector source's approximate k-NN index (vector_hnsw.c): a hierarchical navigable small
 * world graph (HNSW, Malkov & Yashunin 2016) over the rows of the source's matrix (vector_knn.h).
 *
 * The graph does not copy vectors: a node reads its vector from the matrix row it is mapped to, so the index
 * costs its links and two maps (about 150 bytes per item at m 16), not a second copy of the floats. Nodes have
 * stable ids; the matrix's swap-remove only moves a node's row (engram__hnsw_moved). Everything here runs on the
 * source's actor thread, one call at a time; no call allocates in the search path once the scratch has grown
 * to the largest ef seen.
 */
#ifndef ENGRAM_VECTOR_HNSW_H
#define ENGRAM_VECTOR_HNSW_H

#include <stddef.h>
#include <stdint.h>

#include "vector_knn.h"

typedef struct engram__hnsw_s engram__hnsw_t;

/* The index options (docs/sources-vector.md, "index"). */
typedef struct {
  unsigned m;               /* links per node on the upper levels (2m on level 0), 2..128 */
  unsigned ef_construction; /* candidate list while inserting, m..4096 */
  unsigned ef_search;       /* default candidate list of a search (at least k), 1..100000 */
  size_t exact_below;       /* sources holding fewer items search exactly */
} engram__hnsw_params_t;

/* A new, empty index over mat's rows (mat is borrowed and must outlive it). Returns 0 or ENGRAM_ENOMEM. */
int engram__hnsw_new(engram__hnsw_t **out, const engram__matrix_t *mat, engram__metric_t metric,
                     const engram__hnsw_params_t *p);
void engram__hnsw_free(engram__hnsw_t *h);
const engram__hnsw_params_t *engram__hnsw_params(const engram__hnsw_t *h);
/* Live nodes. */
size_t engram__hnsw_count(const engram__hnsw_t *h);
/* Bytes of the graph (links, maps, scratch), not counting the matrix. */
size_t engram__hnsw_bytes(const engram__hnsw_t *h);

/* Makes room for rows [0, rows) so that the next inserts up to that many rows cannot fail. 0 or ENGRAM_ENOMEM. */
int engram__hnsw_reserve(engram__hnsw_t *h, size_t rows);
/* Adds a node for matrix row `row` (its vector already in the matrix; room reserved). Never fails: a node whose
 * upper-level links cannot be allocated stays on level 0. */
void engram__hnsw_insert(engram__hnsw_t *h, uint32_t row);
/* Removes row's node before the row leaves the matrix: its neighbours are linked again among themselves. */
void engram__hnsw_remove(engram__hnsw_t *h, uint32_t row);
/* The matrix moved row `from` into row `to` (swap-remove). */
void engram__hnsw_moved(engram__hnsw_t *h, uint32_t from, uint32_t to);
/* Forgets every node (clear, reload). */
void engram__hnsw_reset(engram__hnsw_t *h);

/*
 * The best k accepted rows for q, best first (raw descending, ties by tie), walking the graph with a candidate
 * list of max(ef, k) (ef 0 = the index's ef_search). accept (NULL = every row) is asked during the walk: a
 * refused row is still walked through but never enters the results, so filters cost no recall for the rows they
 * let through. hits has room for k. Returns 0 or ENGRAM_ENOMEM (growing the scratch; nothing found).
 */
int engram__hnsw_search(engram__hnsw_t *h, const float *q, size_t k, size_t ef, engram__accept_fn accept,
                        engram__tie_fn tie, void *ud, engram__hit_t *hits, size_t *n_hits);

/* Visits of the last search (distance computations), for tests and benchmarks. */
size_t engram__hnsw_last_visits(const engram__hnsw_t *h);

/*
 * Persistence: the graph as bytes (engram__hnsw_save: a buffer the caller frees with engram_free, *len bytes, or
 * NULL on ENOMEM) whose node → row map is replaced by node → caller's id through row_id; and back
 * (engram__hnsw_load: id_row maps an id to the row now holding it, or UINT32_MAX when it is gone — such nodes are
 * removed). Returns 0, ENGRAM_ENOMEM, or ENGRAM_EINVAL when the bytes are not a graph of these parameters.
 * After a load, rows without a node are the caller's to insert.
 */
void *engram__hnsw_save(const engram__hnsw_t *h, uint64_t (*row_id)(uint32_t row, void *ud), void *ud, size_t *len);
int engram__hnsw_load(engram__hnsw_t *h, const void *buf, size_t len, uint32_t (*id_row)(uint64_t id, void *ud),
                      void *ud);
/* Whether row has a node (after a load). */
int engram__hnsw_has_row(const engram__hnsw_t *h, uint32_t row);

#endif
