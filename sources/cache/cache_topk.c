/*
 * cache_topk.c — the first k candidates in an order, kept in a bounded max-heap while the cache scans its table
 * (cache_topk.h): an ordered search with a limit (a thread list's page of 20 of 4,000 heads, docs/conversations.md)
 * then costs a comparison with the heap's root for most matches and log k steps for the others, and reply items
 * only for the k kept, instead of a reply item for every match and a sort of all of them. The order is an ordered
 * call's total order (engram_order_cmp): value, then the tie function, all reversed when descending.
 */
#include "cache_topk.h"

#include "engram/source.h"

/* < 0 when a comes before b in t's order. */
static int before(const engram__cache_topk_t *t, const engram__cache_topk_item_t *a, const engram__cache_topk_item_t *b) {
  int c = a->v < b->v ? -1 : a->v > b->v ? 1 : t->tie(a->p, b->p);
  return t->desc ? -c : c;
}

int engram__cache_topk_offer(engram__cache_topk_t *t, const void *p, int64_t v) {
  engram__cache_topk_item_t x, *h;
  size_t j, child;
  x.p = p;
  x.v = v;
  if (t->n == t->k) { /* full: x replaces the root when it comes before it, then sinks */
    if (t->k == 0 || before(t, &x, &t->h[0]) >= 0) return 0;
    h = t->h;
    for (j = 0; (child = 2 * j + 1) < t->n; j = child) {
      if (child + 1 < t->n && before(t, &h[child + 1], &h[child]) > 0) child++;
      if (before(t, &h[child], &x) <= 0) break;
      h[j] = h[child];
    }
    h[j] = x;
    return 0;
  }
  if (t->n == t->cap) { /* grows with what it holds: an eviction pass asks for up to ENGRAM_ORDER_MAX + 1 */
    size_t cap = t->cap ? t->cap * 2 : 32;
    if (cap > t->k) cap = t->k;
    if ((h = engram_realloc(t->h, cap * sizeof *h)) == NULL) return ENGRAM_ENOMEM;
    t->h = h;
    t->cap = cap;
  }
  h = t->h;
  for (j = t->n++; j > 0 && before(t, &h[(j - 1) / 2], &x) < 0; j = (j - 1) / 2) h[j] = h[(j - 1) / 2]; /* rises */
  h[j] = x;
  return 0;
}

void engram__cache_topk_free(engram__cache_topk_t *t) {
  engram_free(t->h);
  t->h = NULL;
  t->n = t->cap = 0;
}
