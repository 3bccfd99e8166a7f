/*
 * cache_slab.c — the cache's entries in slabs of one size class each (cache_slab.h says why).
 *
 * A slab is one engram_malloc block: its header, then room for cap blocks of its class's size, handed out from a
 * free list (blocks given back) or else from the untouched rest (bump). A class keeps a list of its slabs with
 * room; a new slab is made only when none has any: the first of a class holds about 4 KiB, later ones about
 * 64 KiB (at least 4 blocks), so a small cache stays small and a big one makes few, large allocations, all below
 * glibc's mmap threshold. Giving a block back finds its slab by a binary search of the slabs sorted by address;
 * a slab left empty is kept as its class's spare when the class has none, else freed: so a cache whose item count
 * goes back and forth across a slab's boundary (stores and expiries in balance) does not allocate and free a
 * 64 KiB slab on every turn, and at most one empty slab per class is kept. Blocks above ENGRAM__CACHE_SLAB_MAX go to
 * engram_malloc. One thread (the cache's home loop). Under AddressSanitizer the room not handed out is poisoned,
 * so a use after free of an entry is still reported.
 */
#include <string.h>

#include "cache_slab.h"
#include "engram/source.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

struct engram__cache_slab_s {
  engram__cache_slab_t *prev, *next; /* the class's list of slabs with room (while on it) */
  void *free;                        /* blocks given back, chained through their first bytes */
  uint32_t size, cap, bumped, live;  /* block size; blocks it holds; handed out from the rest; in use */
  uint8_t cls, listed;               /* its class; on the class's list */
};

#define HEAD ((sizeof(engram__cache_slab_t) + 15) & ~(size_t)15)
#define ROOM(sl) ((char *)(sl) + HEAD)

/* n's class and the class's block size: 16-byte steps up to 512 bytes, then four a power of two. */
static unsigned class_of(size_t n, uint32_t *size) {
  size_t p = 9, step, k;
  if (n <= 512) {
    unsigned c = n == 0 ? 0 : (unsigned)((n - 1) >> 4);
    *size = (c + 1) * 16;
    return c;
  }
  while (((size_t)1 << (p + 1)) < n) p++; /* n in (2^p, 2^(p+1)] */
  step = (size_t)1 << (p - 2);
  k = (n - 1 - ((size_t)1 << p)) / step; /* 0..3 */
  *size = (uint32_t)(((size_t)1 << p) + (k + 1) * step);
  return (unsigned)(32 + (p - 9) * 4 + k);
}

static void list_add(engram__cache_slabs_t *s, engram__cache_slab_t *sl) {
  sl->prev = NULL;
  sl->next = s->partial[sl->cls];
  if (sl->next != NULL) sl->next->prev = sl;
  s->partial[sl->cls] = sl;
  sl->listed = 1;
}

static void list_del(engram__cache_slabs_t *s, engram__cache_slab_t *sl) {
  if (sl->prev != NULL) sl->prev->next = sl->next;
  else s->partial[sl->cls] = sl->next;
  if (sl->next != NULL) sl->next->prev = sl->prev;
  sl->prev = sl->next = NULL;
  sl->listed = 0;
}

/* The index in s->all of the last slab at or below p (or where p would go: 0 when below every slab). */
static size_t find(const engram__cache_slabs_t *s, const void *p) {
  size_t lo = 0, hi = s->n_all;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if ((const char *)s->all[mid] <= (const char *)p) lo = mid + 1;
    else hi = mid;
  }
  return lo; /* the first slab above p */
}

static engram__cache_slab_t *slab_new(engram__cache_slabs_t *s, unsigned cls, uint32_t size) {
  size_t want = s->n_class[cls] == 0 ? 4096 : 65536, cap = want / size, at;
  engram__cache_slab_t *sl;
  if (cap < 4) cap = 4;
  if (s->n_all == s->cap_all) {
    size_t nc = s->cap_all ? 2 * s->cap_all : 16;
    engram__cache_slab_t **na = engram_realloc(s->all, nc * sizeof *na);
    if (na == NULL) return NULL;
    s->all = na;
    s->cap_all = nc;
  }
  if ((sl = engram_malloc(HEAD + cap * size)) == NULL) return NULL;
  memset(sl, 0, sizeof *sl);
  sl->size = size;
  sl->cap = (uint32_t)cap;
  sl->cls = (uint8_t)cls;
  POISON(ROOM(sl), cap * size);
  at = find(s, sl);
  memmove(s->all + at + 1, s->all + at, (s->n_all - at) * sizeof *s->all);
  s->all[at] = sl;
  s->n_all++;
  s->n_class[cls]++;
  list_add(s, sl);
  return sl;
}

void *engram__cache_slab_alloc(engram__cache_slabs_t *s, size_t n) {
  uint32_t size;
  unsigned cls;
  engram__cache_slab_t *sl;
  void *p;
  if (n > ENGRAM__CACHE_SLAB_MAX) return engram_malloc(n);
  cls = class_of(n, &size);
  if ((sl = s->partial[cls]) == NULL && (sl = slab_new(s, cls, size)) == NULL) return NULL;
  if (sl->live == 0 && sl->bumped != 0) s->n_empty[cls]--; /* the class's spare is in use again */
  if (sl->free != NULL) {
    p = sl->free;
    UNPOISON(p, size);
    memcpy(&sl->free, p, sizeof sl->free);
  } else {
    p = ROOM(sl) + (size_t)sl->bumped++ * size;
    UNPOISON(p, size);
  }
  if (++sl->live == sl->cap) list_del(s, sl);
  return p;
}

void engram__cache_slab_free(engram__cache_slabs_t *s, void *p, size_t n) {
  size_t at;
  engram__cache_slab_t *sl;
  if (p == NULL) return;
  if (n > ENGRAM__CACHE_SLAB_MAX) {
    engram_free(p);
    return;
  }
  at = find(s, p) - 1; /* p lies in a slab: one is at or below it */
  sl = s->all[at];
  if (--sl->live == 0 && s->n_empty[sl->cls]++ != 0) { /* the class has a spare already */
    s->n_empty[sl->cls]--;
    if (sl->listed) list_del(s, sl);
    memmove(s->all + at, s->all + at + 1, (s->n_all - at - 1) * sizeof *s->all);
    s->n_all--;
    s->n_class[sl->cls]--;
    UNPOISON(ROOM(sl), (size_t)sl->cap * sl->size);
    engram_free(sl);
    return;
  }
  memcpy(p, &sl->free, sizeof sl->free);
  sl->free = p;
  POISON(p, sl->size);
  if (!sl->listed) list_add(s, sl);
}

void engram__cache_slab_release(engram__cache_slabs_t *s) {
  size_t i;
  for (i = 0; i < s->n_all; i++) {
    UNPOISON(ROOM(s->all[i]), (size_t)s->all[i]->cap * s->all[i]->size);
    engram_free(s->all[i]);
  }
  engram_free(s->all);
  memset(s, 0, sizeof *s);
}
