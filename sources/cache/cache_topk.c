/*
 * cache_topk.c — the first k candidates in an order, kept in a bounded max-heap while the cache scans its table
 * (cache_topk.h): an ordered search with a limit (a thread list's page of 20 of 4,000 heads, docs/conversations.md)
 * then costs a comparison with the heap's root for most matches and log k steps for the others, and reply items
 * only for the k kept, instead of a reply item for every match and a sort of all of them. The order is an ordered
 * call's total order (engram_order_cmp): value, then the tie function, all reversed when descending. The first k
 * candidates are only appended, and made a heap (in O(k)) when a k + 1st comes: a search whose k covers every
 * match (max_items_per_namespace's pass asks for up to ENGRAM_ORDER_MAX + 1) costs no heap at all.
 */
#include "cache_topk.h"

#include "engram/source.h"

/* < 0 when a comes before b in t's order. */
static int before(const engram__cache_topk_t *t, const engram__cache_topk_item_t *a, const engram__cache_topk_item_t *b) {
  int c = a->v < b->v ? -1 : a->v > b->v ? 1 : t->tie(a->p, b->p);
  return t->desc ? -c : c;
}

/* Puts x at slot j of the heap and sinks it below the candidates that come after it. */
static void sink(engram__cache_topk_t *t, size_t j, engram__cache_topk_item_t x) {
  engram__cache_topk_item_t *h = t->h;
  size_t child;
  for (; (child = 2 * j + 1) < t->n; j = child) {
    if (child + 1 < t->n && before(t, &h[child + 1], &h[child]) > 0) child++;
    if (before(t, &h[child], &x) <= 0) break;
    h[j] = h[child];
  }
  h[j] = x;
}

int engram__cache_topk_offer(engram__cache_topk_t *t, const void *p, int64_t v) {
  engram__cache_topk_item_t x;
  x.p = p;
  x.v = v;
  if (t->n < t->k) { /* room: appended (the memory grows with what it holds, up to k items) */
    if (t->n == t->cap) {
      size_t cap = t->cap ? t->cap * 2 : 32;
      engram__cache_topk_item_t *h;
      if (cap > t->k) cap = t->k;
      if ((h = engram_realloc(t->h, cap * sizeof *h)) == NULL) return ENGRAM_ENOMEM;
      t->h = h;
      t->cap = cap;
    }
    t->h[t->n++] = x;
    return 0;
  }
  if (t->k == 0) return 0;
  if (!t->heaped) { /* full for the first time: a heap, bottom-up */
    size_t j;
    for (j = t->n / 2; j-- > 0;) sink(t, j, t->h[j]);
    t->heaped = 1;
  }
  if (before(t, &x, &t->h[0]) < 0) sink(t, 0, x); /* x replaces the last kept one */
  return 0;
}

void engram__cache_topk_free(engram__cache_topk_t *t) {
  engram_free(t->h);
  t->h = NULL;
  t->n = t->cap = 0;
  t->heaped = 0;
}
