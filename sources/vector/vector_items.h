/*
 * vector_items.h — the vector source's item table (vector_items.c): the item record and the functions that
 * find, write, remove, expire, load and commit items. Used by vector.c (writes) and vector_query.c (reads).
 */
#ifndef ENGRAM_VECTOR_ITEMS_H
#define ENGRAM_VECTOR_ITEMS_H

#include <stdint.h>

#include "vector_source.h"

/* One item: one allocation holding the record, its term list and its strings (ns, key, value JSON, metadata
 * JSON). Its vector is row `row` of the matrix. */
struct engram__vitem_s {
  engram__vitem_t *hnext;
  engram__vitem_t *older, *newer; /* write order, for max_items (the least recently written goes first) */
  int64_t created_at_ms, updated_at_ms, expires_at_ms;
  uint64_t version;
  uint32_t hash, row, nterms;
  uint16_t ns_len, key_len;
  uint32_t value_len, meta_len; /* meta_len 0 = no metadata */
  engram__term_t terms[];       /* nterms terms sorted by hash, then the strings */
};

#define VI_NS(e) ((char *)((e)->terms + (e)->nterms))
#define VI_KEY(e) (VI_NS(e) + (e)->ns_len + 1)
#define VI_VALUE(e) (VI_KEY(e) + (e)->key_len + 1)
#define VI_META(e) (VI_VALUE(e) + (e)->value_len + 1)

int engram__vx_init(engram__vsrc_t *v);
void engram__vx_free_all(engram__vsrc_t *v);
int engram__vx_expired(const engram__vitem_t *e, int64_t now);
/* The live item (ns, key), or NULL; an expired one is removed on the way. */
engram__vitem_t *engram__vx_find(engram__vsrc_t *v, const char *ns, size_t ns_len, const char *key, size_t key_len,
                                 int64_t now);

typedef struct {
  const char *key;
  size_t key_len;
  const char *value; /* compact JSON */
  size_t value_len;
  const char *meta;  /* compact JSON or NULL */
  size_t meta_len;
  int64_t expires_at_ms;
  const float *vec;  /* dim floats as the embedder made them */
  const engram__term_t *terms;
  size_t nterms;
} engram__vput_t;

/* Writes an item (write-ahead to the file first, when there is one). Returns 0, ENGRAM_ENOMEM or
 * ENGRAM_EBACKEND (nothing changed). *out: the stored item. */
int engram__vx_put(engram__vsrc_t *v, const char *ns, size_t ns_len, int64_t now, const engram__vput_t *p,
                   engram__vitem_t **out);
/* Removes an item (and its row in the file when persist). Returns 0 or ENGRAM_EBACKEND (nothing changed). */
int engram__vx_remove(engram__vsrc_t *v, engram__vitem_t *e, int persist);
/* The idf of a hashed word over the items (engram__idf_fn). */
double engram__vx_idf(uint32_t hash, void *ud);
/* Loads every item of the file. Returns 0 or an error with a message in err. */
int engram__vx_load(engram__vsrc_t *v, char *err, size_t errlen);
/* Completes req with status now, or, when it wrote to the file, at the next commit. */
void engram__vx_finish(engram__vsrc_t *v, engram_request_t *req, int status);
/* Removes expired items. */
void engram__vx_sweep(engram__vsrc_t *v);
/* Commits what is pending and completes the requests waiting for it (also called at close). */
void engram__vx_commit(engram__vsrc_t *v);
/* The best k accepted rows for q (engram__knn_topk's contract): through the approximate index when the source has
 * one and holds at least its exact_below items (ef: the walk's candidate list, 0 = the index's ef_search), else
 * by exact search (also when the index's scratch cannot grow). */
int engram__vx_topk(engram__vsrc_t *v, const float *q, size_t k, size_t ef, engram__accept_fn accept,
                    engram__tie_fn tie, void *ud, engram__hit_t *hits, size_t *n_hits);
/* Rebuilds the approximate index from the rows (after a clear that removed most of them). */
void engram__vx_reindex(engram__vsrc_t *v);
/* Writes the approximate index's graph into the file (at close), so the next open need not rebuild it.
 * Returns 0 (also without an index or a file), ENGRAM_ENOMEM or ENGRAM_EBACKEND. */
int engram__vx_save_index(engram__vsrc_t *v);
/* Compares two items by (namespace, key). */
int engram__vx_cmp(const engram__vitem_t *a, const engram__vitem_t *b);

#endif
