/*
 * text_set.c — a set of BM25 indexes, one engram_text_index per namespace (include/engram/source.h), for the
 * sources that keep every namespace's items in one process (the cache, the vector source): BM25's statistics
 * (the number of items, each term's document frequency, the average length) must be those of the namespace
 * searched, as on every other source, so that the same query ranks the same items of a namespace the same way
 * wherever they are stored, whatever other namespaces hold.
 *
 * A table of namespaces (open addressing, linear probing, removal by shifting the cluster back) maps each one to
 * its index; an index is created by the namespace's first document and freed with its last, so namespaces that
 * come and go leave nothing behind. Documents are whatever ids the caller uses (entry pointers, say).
 *
 * Not thread-safe: one thread at a time (a source's actor).
 */
#include <string.h>

#include "engram/source.h"

typedef struct {
  char *ns;
  size_t len;
  uint32_t hash;
  engram_text_index_t *ix;
} ns_ix_t;

struct engram_text_set_s {
  ns_ix_t **slots;
  uint32_t cap, n; /* cap: a power of two, at least twice n */
};

static uint32_t ns_hash(const char *s, size_t n) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  size_t i;
  for (i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
  return (uint32_t)(h ^ (h >> 32));
}

int engram_text_set_new(engram_text_set_t **out) {
  engram_text_set_t *t = engram_calloc(1, sizeof *t);
  *out = NULL;
  if (t == NULL) return ENGRAM_ENOMEM;
  t->cap = 16;
  if ((t->slots = engram_calloc(t->cap, sizeof *t->slots)) == NULL) {
    engram_free(t);
    return ENGRAM_ENOMEM;
  }
  *out = t;
  return 0;
}

static void ns_free(ns_ix_t *e) {
  engram_text_index_free(e->ix);
  engram_free(e->ns);
  engram_free(e);
}

void engram_text_set_free(engram_text_set_t *t) {
  uint32_t i;
  if (t == NULL) return;
  for (i = 0; i < t->cap; i++)
    if (t->slots[i] != NULL) ns_free(t->slots[i]);
  engram_free(t->slots);
  engram_free(t);
}

/* The slot of ns, or of the empty slot where it would go. */
static uint32_t find(const engram_text_set_t *t, const char *ns, size_t len, uint32_t h) {
  uint32_t mask = t->cap - 1, i;
  for (i = h & mask; t->slots[i] != NULL; i = (i + 1) & mask) {
    const ns_ix_t *e = t->slots[i];
    if (e->hash == h && e->len == len && memcmp(e->ns, ns, len) == 0) break;
  }
  return i;
}

static int grow(engram_text_set_t *t) {
  uint32_t cap = t->cap * 2, i, j;
  ns_ix_t **s = engram_calloc(cap, sizeof *s);
  if (s == NULL) return ENGRAM_ENOMEM;
  for (i = 0; i < t->cap; i++) {
    if (t->slots[i] == NULL) continue;
    for (j = t->slots[i]->hash & (cap - 1); s[j] != NULL; j = (j + 1) & (cap - 1)) {
    }
    s[j] = t->slots[i];
  }
  engram_free(t->slots);
  t->slots = s;
  t->cap = cap;
  return 0;
}

engram_text_index_t *engram_text_set_get(engram_text_set_t *t, const char *ns, size_t len, int create) {
  uint32_t h = ns_hash(ns, len), i;
  ns_ix_t *e;
  if (t == NULL) return NULL;
  i = find(t, ns, len, h);
  if (t->slots[i] != NULL) return t->slots[i]->ix;
  if (!create) return NULL;
  if (2 * (t->n + 1) > t->cap) {
    if (grow(t) != 0) return NULL;
    i = find(t, ns, len, h);
  }
  if ((e = engram_calloc(1, sizeof *e)) == NULL) return NULL;
  if ((e->ns = engram_malloc(len + 1)) == NULL || engram_text_index_new(&e->ix) != 0) {
    engram_free(e->ns);
    engram_free(e);
    return NULL;
  }
  memcpy(e->ns, ns, len);
  e->ns[len] = '\0';
  e->len = len;
  e->hash = h;
  t->slots[i] = e;
  t->n++;
  return e->ix;
}

void engram_text_set_remove(engram_text_set_t *t, const char *ns, size_t len, uint64_t doc) {
  uint32_t h = ns_hash(ns, len), i, j, mask;
  ns_ix_t *e;
  if (t == NULL) return;
  i = find(t, ns, len, h);
  if ((e = t->slots[i]) == NULL) return;
  engram_text_index_remove(e->ix, doc);
  if (engram_text_index_size(e->ix) > 0) return;
  /* The namespace's last document: its index goes, and the cluster after it shifts back. */
  ns_free(e);
  t->n--;
  mask = t->cap - 1;
  for (j = i;;) {
    uint32_t k;
    j = (j + 1) & mask;
    if (t->slots[j] == NULL) break;
    k = t->slots[j]->hash & mask;
    if (i <= j ? (i < k && k <= j) : (i < k || k <= j)) continue;
    t->slots[i] = t->slots[j];
    i = j;
  }
  t->slots[i] = NULL;
}
