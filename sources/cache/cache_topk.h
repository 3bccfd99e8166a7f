/*
 * cache_topk.h — the first k of a stream of candidates in an ordered call's order (cache_topk.c): the cache's
 * answer to an ordered search that carries its order and limit (ENGRAM_REQ_ORDER_LIMIT), kept while the table is
 * scanned so that only those k get reply items.
 */
#ifndef ENGRAM_CACHE_TOPK_H
#define ENGRAM_CACHE_TOPK_H

#include <stddef.h>
#include <stdint.h>

/* Orders two candidates of equal value (the cache's (namespace, key) order, engram_key_cmp's): < 0 when a comes
 * first ascending. */
typedef int (*engram__cache_topk_tie_fn)(const void *a, const void *b);

typedef struct {
  const void *p; /* the candidate (a cache entry) */
  int64_t v;     /* its value in the order (created_at_ms, updated_at_ms, or 0) */
} engram__cache_topk_item_t;

/* A bounded max-heap: once heaped (more than k were offered), h[0] is the candidate that comes last among the n
 * kept. Zero it, then set k, desc, tie. */
typedef struct {
  engram__cache_topk_item_t *h;
  size_t n, cap;
  int heaped;                    /* h is a heap (set when the k + 1st candidate came) */
  size_t k;                      /* how many to keep (0 keeps none) */
  int desc;                      /* the order descending: the whole (v, tie) tuple reversed */
  engram__cache_topk_tie_fn tie;
} engram__cache_topk_t;

/* Offers candidate p of value v: kept when fewer than k are kept or it comes before the last kept one (which is
 * then dropped). The heap's memory grows with what it keeps, up to k items. 0, or ENGRAM_ENOMEM (nothing changed). */
int engram__cache_topk_offer(engram__cache_topk_t *t, const void *p, int64_t v);
/* Frees the heap's memory (t->h[0 .. t->n) are the kept candidates, in no particular order, until then). */
void engram__cache_topk_free(engram__cache_topk_t *t);

#endif
