/*
 * text_index.c — the in-process BM25 index that gives sources without a search engine of their own (the cache,
 * the vector source's keyword side) the same ranked keyword search as SQLite FTS5 and PostgreSQL.
 *
 * It is an inverted index. A term dictionary (open addressing, linear probing) maps each token to a term that
 * holds its document frequency and its postings: compact (slot, tf) pairs, 8 bytes each, where a slot is a
 * 32-bit internal document number. A second table maps the caller's 64-bit document ids to slots. Each slot
 * keeps its document's length in tokens (in a dense array, read once per posting while scoring) and the list
 * of its distinct terms, so that removing a document touches exactly the terms it holds.
 *
 * Removal is lazy but the statistics are exact. Removing a document marks its slot dead, subtracts its length
 * and decrements the frequency of each of its terms at once; its postings stay behind as stale entries that
 * scoring skips. A term's postings are compacted in place when more than half of them are stale, a term whose
 * frequency reaches zero is dropped with its postings, and when dead slots outnumber live ones every slot is
 * renumbered and every posting rewritten. Slots are handed out in increasing order, so every postings list
 * stays sorted by slot and scoring walks memory forwards. Replacing a document gives it a fresh slot.
 *
 * Scoring is Okapi BM25 with k1 = 1.2 and b = 0.75, idf = ln(1 + (N − df + 0.5) / (df + 0.5)), N the live
 * documents, each distinct query token counted once; the raw score s is reported as s / (s + 1). A search of
 * several terms walks their postings document at a time with MaxScore pruning (score_pruned: documents that
 * cannot reach the best k are skipped, and the postings of terms that cannot lift a document into them are only
 * looked up); a search of one term adds its contributions into a dense per-slot accumulator (kept between
 * searches and cleared slot by slot). Both add a document's contributions in the query's term order, so the
 * scores are the same to the bit whichever way a document is scored. The best k accepted documents are kept in a
 * bounded min-heap built inside the caller's hits array. The accept callback runs only for a document that
 * would enter the heap, at most once per search, and must not change the index; a tie callback that returns 0
 * falls back to the doc ids.
 *
 * put is all or nothing: everything it may need (new terms, postings room, slots, map room) is allocated
 * before the index changes, and an allocation failure undoes the new terms and leaves the index as it was.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engram/source.h"

#define BM25_K1 1.2
#define BM25_B 0.75
#define DEAD UINT32_MAX   /* dlen[slot] of a removed document */
#define NONE UINT32_MAX   /* no term / no slot */
#define MIN_DEAD_COMPACT 64

typedef struct {
  uint32_t slot, tf;
} posting_t;

typedef struct {
  char *str;      /* the token (NUL-terminated); NULL while the entry is on the free list */
  uint32_t len;   /* bytes of str */
  uint32_t hash;  /* hash of str */
  uint32_t df;    /* live documents holding the term; the next free entry while on the free list */
  uint32_t n, cap;/* postings used (live and stale) and allocated */
  uint32_t maxtf; /* the largest tf ever posted (an upper bound of the live ones: the search's pruning) */
  posting_t *post;
} term_t;

typedef struct {
  uint64_t id;     /* the caller's document id */
  uint32_t *terms; /* the document's distinct terms */
  uint32_t nterms;
} doc_t;

struct engram_text_index_s {
  term_t *terms;          /* indexed by term id */
  uint32_t nterms, terms_cap, free_term, tcount; /* high-water mark, allocated, free list head, live terms */
  uint32_t *thash;        /* term id + 1, or 0 when empty */
  uint32_t thash_cap;     /* a power of two, at least twice tcount */
  doc_t *docs;            /* indexed by slot */
  uint32_t *dlen;         /* document length in tokens, or DEAD */
  uint32_t nslots, docs_cap, dlen_cap, live;
  uint32_t *dmap;         /* slot + 1, or 0 when empty; keyed by docs[slot].id */
  uint32_t dmap_cap;      /* a power of two, at least twice live */
  uint64_t total_len;     /* tokens in the live documents */
  double *acc;            /* search scratch: score per slot, all zero between searches */
  uint32_t *touched;      /* search scratch: slots with a non-zero score */
  uint32_t acc_cap, touched_cap;
};

static uint32_t hash_bytes(const char *s, size_t n) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a, folded to 32 bits */
  size_t i;
  for (i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
  return (uint32_t)(h ^ (h >> 32));
}

static uint32_t hash_id(uint64_t x) {
  x ^= x >> 30; /* splitmix64's finalizer */
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return (uint32_t)x;
}

/* Grows an array of elem-byte entries to hold at least need entries. Returns 0 or ENGRAM_ENOMEM (unchanged). */
static int grow(void **arr, uint32_t *cap, uint32_t need, size_t elem) {
  uint64_t c = *cap;
  void *p;
  if (need <= *cap) return 0;
  while (c < need) c = c < 8 ? (c ? c * 2 : 1) : c + c / 2;
  if (c > UINT32_MAX) c = UINT32_MAX;
  if (c > SIZE_MAX / elem) return ENGRAM_ENOMEM;
  p = engram_realloc(*arr, (size_t)c * elem);
  if (p == NULL) return ENGRAM_ENOMEM;
  *arr = p;
  *cap = (uint32_t)c;
  return 0;
}

/* ---- The term dictionary ---- */

/* Returns the id of the term spelled s[0..n) with hash h, or NONE. */
static uint32_t term_find(const engram_text_index_t *ix, const char *s, size_t n, uint32_t h) {
  uint32_t mask = ix->thash_cap - 1, i, e;
  if (ix->thash_cap == 0) return NONE;
  for (i = h & mask; (e = ix->thash[i]) != 0; i = (i + 1) & mask) {
    const term_t *t = &ix->terms[e - 1];
    if (t->hash == h && t->len == n && memcmp(t->str, s, n) == 0) return e - 1;
  }
  return NONE;
}

static void thash_insert(uint32_t *table, uint32_t cap, uint32_t h, uint32_t value) {
  uint32_t mask = cap - 1, i;
  for (i = h & mask; table[i] != 0; i = (i + 1) & mask) {
  }
  table[i] = value;
}

/* Removes the entry at position i of a linear-probing table by shifting later entries of its cluster back,
 * so that no tombstones are needed; home(value) gives an entry's hash. */
static void table_delete(uint32_t *table, uint32_t cap, uint32_t i, const engram_text_index_t *ix,
                         uint32_t (*home)(const engram_text_index_t *, uint32_t)) {
  uint32_t mask = cap - 1, j = i;
  for (;;) {
    uint32_t k;
    j = (j + 1) & mask;
    if (table[j] == 0) break;
    k = home(ix, table[j]) & mask;
    /* The entry at j may move to i unless its home lies cyclically in (i, j]. */
    if (i <= j ? (i < k && k <= j) : (i < k || k <= j)) continue;
    table[i] = table[j];
    i = j;
  }
  table[i] = 0;
}

static uint32_t term_home(const engram_text_index_t *ix, uint32_t e) { return ix->terms[e - 1].hash; }
static uint32_t doc_home(const engram_text_index_t *ix, uint32_t e) { return hash_id(ix->docs[e - 1].id); }

/* Rebuilds a table of cap entries from scratch. Returns 0 or ENGRAM_ENOMEM (the old table is kept). */
static int thash_resize(engram_text_index_t *ix, uint32_t cap) {
  uint32_t *t = engram_calloc(cap, sizeof *t), id;
  if (t == NULL) return ENGRAM_ENOMEM;
  for (id = 0; id < ix->nterms; id++)
    if (ix->terms[id].str != NULL) thash_insert(t, cap, ix->terms[id].hash, id + 1);
  engram_free(ix->thash);
  ix->thash = t;
  ix->thash_cap = cap;
  return 0;
}

/* Adds a new term with df 0 and no postings. Returns its id, or NONE on ENOMEM (nothing changed). */
static uint32_t term_add(engram_text_index_t *ix, const char *s, size_t n, uint32_t h) {
  uint32_t id;
  term_t *t;
  char *str;
  if ((uint64_t)(ix->tcount + 1) * 2 > ix->thash_cap) {
    if (ix->thash_cap >= (1u << 31) || thash_resize(ix, ix->thash_cap ? ix->thash_cap * 2 : 64) != 0)
      return NONE;
  }
  if (ix->free_term == NONE && ix->nterms == ix->terms_cap) {
    if (ix->nterms >= UINT32_MAX - 1 || grow((void **)&ix->terms, &ix->terms_cap, ix->nterms + 1, sizeof *t))
      return NONE;
  }
  if ((str = engram_strndup(s, n)) == NULL) return NONE;
  if (ix->free_term != NONE) {
    id = ix->free_term;
    ix->free_term = ix->terms[id].df;
  } else {
    id = ix->nterms++;
  }
  t = &ix->terms[id];
  memset(t, 0, sizeof *t);
  t->str = str;
  t->len = (uint32_t)n;
  t->hash = h;
  thash_insert(ix->thash, ix->thash_cap, h, id + 1);
  ix->tcount++;
  return id;
}

/* Forgets a term (its frequency is zero): frees it and its postings and puts the id on the free list. */
static void term_drop(engram_text_index_t *ix, uint32_t id) {
  term_t *t = &ix->terms[id];
  uint32_t mask = ix->thash_cap - 1, i;
  for (i = t->hash & mask; ix->thash[i] != id + 1; i = (i + 1) & mask) {
  }
  table_delete(ix->thash, ix->thash_cap, i, ix, term_home);
  engram_free(t->str);
  engram_free(t->post);
  memset(t, 0, sizeof *t);
  t->df = ix->free_term;
  ix->free_term = id;
  ix->tcount--;
}

/* Drops a term's stale postings in place, and gives back memory when most of the room is unused. */
static void term_compact(engram_text_index_t *ix, term_t *t) {
  uint32_t i, j = 0;
  for (i = 0; i < t->n; i++)
    if (ix->dlen[t->post[i].slot] != DEAD) t->post[j++] = t->post[i];
  t->n = j;
  if (j > 0 && t->cap >= 4 * j) {
    posting_t *p = engram_realloc(t->post, (size_t)j * 2 * sizeof *p);
    if (p != NULL) { /* A failed shrink keeps the larger block. */
      t->post = p;
      t->cap = j * 2;
    }
  }
}

/* ---- The document map ---- */

/* Returns the table position of document id, or NONE. */
static uint32_t dmap_find(const engram_text_index_t *ix, uint64_t id) {
  uint32_t mask = ix->dmap_cap - 1, i, e;
  if (ix->dmap_cap == 0) return NONE;
  for (i = hash_id(id) & mask; (e = ix->dmap[i]) != 0; i = (i + 1) & mask)
    if (ix->docs[e - 1].id == id) return i;
  return NONE;
}

/* Replaces the document map by a fresh one of cap entries holding every live slot. Returns 0 or ENGRAM_ENOMEM
 * (the old map is kept). */
static int dmap_rebuild(engram_text_index_t *ix, uint32_t cap) {
  uint32_t *t = engram_calloc(cap, sizeof *t), s;
  if (t == NULL) return ENGRAM_ENOMEM;
  for (s = 0; s < ix->nslots; s++)
    if (ix->dlen[s] != DEAD) thash_insert(t, cap, hash_id(ix->docs[s].id), s + 1);
  engram_free(ix->dmap);
  ix->dmap = t;
  ix->dmap_cap = cap;
  return 0;
}

/* ---- Lifecycle ---- */

int engram_text_index_new(engram_text_index_t **out) {
  engram_text_index_t *ix = engram_calloc(1, sizeof *ix);
  *out = NULL;
  if (ix == NULL) return ENGRAM_ENOMEM;
  ix->free_term = NONE;
  *out = ix;
  return 0;
}

void engram_text_index_free(engram_text_index_t *ix) {
  uint32_t i;
  if (ix == NULL) return;
  for (i = 0; i < ix->nterms; i++) {
    engram_free(ix->terms[i].str);
    engram_free(ix->terms[i].post);
  }
  for (i = 0; i < ix->nslots; i++) engram_free(ix->docs[i].terms);
  engram_free(ix->terms);
  engram_free(ix->thash);
  engram_free(ix->docs);
  engram_free(ix->dlen);
  engram_free(ix->dmap);
  engram_free(ix->acc);
  engram_free(ix->touched);
  engram_free(ix);
}

size_t engram_text_index_size(const engram_text_index_t *ix) { return ix != NULL ? ix->live : 0; }

/* Renumbers the live slots 0..live-1 (keeping their order), rewriting every posting and the document map.
 * Skipped, to be retried later, when the one scratch array it needs cannot be allocated. */
static void compact_slots(engram_text_index_t *ix) {
  uint32_t *remap = engram_malloc((size_t)ix->nslots * sizeof *remap), s, j = 0, id, i, k;
  if (remap == NULL) return;
  for (s = 0; s < ix->nslots; s++) {
    remap[s] = NONE;
    if (ix->dlen[s] == DEAD) continue;
    remap[s] = j;
    ix->docs[j] = ix->docs[s];
    ix->dlen[j] = ix->dlen[s];
    j++;
  }
  for (id = 0; id < ix->nterms; id++) {
    term_t *t = &ix->terms[id];
    if (t->str == NULL) continue;
    for (i = 0, k = 0; i < t->n; i++)
      if (remap[t->post[i].slot] != NONE) {
        t->post[k].slot = remap[t->post[i].slot];
        t->post[k++].tf = t->post[i].tf;
      }
    t->n = k;
  }
  engram_free(remap);
  ix->nslots = j;
  /* The map's room is unchanged, so clearing and refilling it in place cannot fail. */
  memset(ix->dmap, 0, (size_t)ix->dmap_cap * sizeof *ix->dmap);
  for (s = 0; s < j; s++) thash_insert(ix->dmap, ix->dmap_cap, hash_id(ix->docs[s].id), s + 1);
}

/* Removes the document in slot s from the statistics and the postings (lazily). The map is the caller's. */
static void kill_slot(engram_text_index_t *ix, uint32_t s) {
  doc_t *d = &ix->docs[s];
  uint32_t i;
  ix->total_len -= ix->dlen[s];
  ix->dlen[s] = DEAD;
  ix->live--;
  for (i = 0; i < d->nterms; i++) {
    term_t *t = &ix->terms[d->terms[i]];
    if (--t->df == 0) term_drop(ix, d->terms[i]);
    else if (t->n > 2 * (uint64_t)t->df + 8) term_compact(ix, t);
  }
  engram_free(d->terms);
  d->terms = NULL;
  d->nterms = 0;
}

static void maybe_compact(engram_text_index_t *ix) {
  uint32_t dead = ix->nslots - ix->live;
  if (dead >= MIN_DEAD_COMPACT && dead > ix->live) compact_slots(ix);
}

/* ---- put / remove ---- */

typedef struct {
  engram_text_index_t *ix;
  uint32_t *ids, n, cap;       /* the document's term ids, one per token */
  uint32_t *fresh, nfresh, fcap; /* terms this put created (undone on failure) */
} put_ctx_t;

static int put_token(const char *tok, size_t len, void *ud) {
  put_ctx_t *c = ud;
  uint32_t h = hash_bytes(tok, len), id = term_find(c->ix, tok, len, h);
  if (c->n == UINT32_MAX - 1) return 0; /* Absurdly long texts keep their first 4G tokens. */
  if (grow((void **)&c->ids, &c->cap, c->n + 1, sizeof *c->ids) != 0) return ENGRAM_ENOMEM;
  if (id == NONE) {
    if (grow((void **)&c->fresh, &c->fcap, c->nfresh + 1, sizeof *c->fresh) != 0) return ENGRAM_ENOMEM;
    if ((id = term_add(c->ix, tok, len, h)) == NONE) return ENGRAM_ENOMEM;
    c->fresh[c->nfresh++] = id;
  }
  c->ids[c->n++] = id;
  return 0;
}

static int cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return (x > y) - (x < y);
}

int engram_text_index_put(engram_text_index_t *ix, uint64_t doc, const char *text, size_t len) {
  put_ctx_t c;
  uint32_t *dterms = NULL, nd = 0, i, slot, pos;
  int rc;
  memset(&c, 0, sizeof c);
  c.ix = ix;
  if ((rc = engram_tokenize(text, len, put_token, &c)) != 0) goto fail;
  if (c.n > 1) qsort(c.ids, c.n, sizeof *c.ids, cmp_u32);
  for (i = 0; i < c.n; i++)
    if (i == 0 || c.ids[i] != c.ids[i - 1]) nd++;
  rc = ENGRAM_ENOMEM;
  if (nd > 0 && (dterms = engram_malloc((size_t)nd * sizeof *dterms)) == NULL) goto fail;
  /* Reserve a posting per distinct term, a slot, and room in the map, before anything changes. */
  for (i = 0, nd = 0; i < c.n; i++) {
    term_t *t;
    if (i > 0 && c.ids[i] == c.ids[i - 1]) continue;
    dterms[nd++] = c.ids[i];
    t = &ix->terms[c.ids[i]];
    if (t->n == UINT32_MAX || grow((void **)&t->post, &t->cap, t->n + 1, sizeof *t->post) != 0) goto fail;
  }
  if (ix->nslots == UINT32_MAX - 1) compact_slots(ix);
  if (ix->nslots == UINT32_MAX - 1) goto fail;
  if (grow((void **)&ix->docs, &ix->docs_cap, ix->nslots + 1, sizeof *ix->docs) != 0) goto fail;
  if (grow((void **)&ix->dlen, &ix->dlen_cap, ix->nslots + 1, sizeof *ix->dlen) != 0) goto fail;
  pos = dmap_find(ix, doc);
  if (pos == NONE && (uint64_t)(ix->live + 1) * 2 > ix->dmap_cap) {
    if (ix->dmap_cap >= (1u << 31) || dmap_rebuild(ix, ix->dmap_cap ? ix->dmap_cap * 2 : 64) != 0) goto fail;
  }

  /* Commit: the new document first, so that terms it shares with the one it replaces never reach df 0. */
  slot = ix->nslots++;
  ix->docs[slot].id = doc;
  ix->docs[slot].terms = dterms;
  ix->docs[slot].nterms = nd;
  ix->dlen[slot] = c.n;
  ix->total_len += c.n;
  ix->live++;
  for (i = 0; i < c.n;) {
    uint32_t j = i;
    term_t *t = &ix->terms[c.ids[i]];
    while (j < c.n && c.ids[j] == c.ids[i]) j++;
    t->post[t->n].slot = slot;
    t->post[t->n++].tf = j - i;
    if (j - i > t->maxtf) t->maxtf = j - i;
    t->df++;
    i = j;
  }
  if (pos != NONE) {
    uint32_t old = ix->dmap[pos] - 1;
    ix->dmap[pos] = slot + 1;
    kill_slot(ix, old);
  } else {
    thash_insert(ix->dmap, ix->dmap_cap, hash_id(doc), slot + 1);
  }
  engram_free(c.ids);
  engram_free(c.fresh);
  maybe_compact(ix);
  return 0;

fail:
  /* Undo the terms this put created: they have no postings and no document refers to them. */
  while (c.nfresh > 0) term_drop(ix, c.fresh[--c.nfresh]);
  engram_free(dterms);
  engram_free(c.ids);
  engram_free(c.fresh);
  return rc;
}

void engram_text_index_remove(engram_text_index_t *ix, uint64_t doc) {
  uint32_t pos = ix != NULL ? dmap_find(ix, doc) : NONE, slot;
  if (pos == NONE) return;
  slot = ix->dmap[pos] - 1;
  table_delete(ix->dmap, ix->dmap_cap, pos, ix, doc_home);
  kill_slot(ix, slot);
  maybe_compact(ix);
}

/* ---- search ---- */

typedef struct {
  engram_text_index_t *ix;
  uint32_t *ids, n, cap; /* the query's known terms */
} query_ctx_t;

static int query_token(const char *tok, size_t len, void *ud) {
  query_ctx_t *q = ud;
  uint32_t id = term_find(q->ix, tok, len, hash_bytes(tok, len));
  if (id == NONE) return 0;
  if (grow((void **)&q->ids, &q->cap, q->n + 1, sizeof *q->ids) != 0) return ENGRAM_ENOMEM;
  q->ids[q->n++] = id;
  return 0;
}

typedef struct {
  engram_text_tie_fn tie;
  void *ud;
} rank_t;

/* Non-zero when hit a ranks strictly before hit b: higher score, then the tie callback, then lower doc id. */
static int ranks_before(const rank_t *r, const engram_text_hit_t *a, const engram_text_hit_t *b) {
  int t;
  if (a->score != b->score) return a->score > b->score;
  if (r->tie != NULL && (t = r->tie(a->doc, b->doc, r->ud)) != 0) return t < 0;
  return a->doc < b->doc;
}

/* Restores the heap below i in h[0..n), where the root is the worst-ranked hit. */
static void sift_down(const rank_t *r, engram_text_hit_t *h, size_t n, size_t i) {
  for (;;) {
    size_t l = 2 * i + 1, w = i;
    engram_text_hit_t tmp;
    if (l < n && ranks_before(r, &h[w], &h[l])) w = l;
    if (l + 1 < n && ranks_before(r, &h[w], &h[l + 1])) w = l + 1;
    if (w == i) return;
    tmp = h[i];
    h[i] = h[w];
    h[w] = tmp;
    i = w;
  }
}

static void sift_up(const rank_t *r, engram_text_hit_t *h, size_t i) {
  while (i > 0) {
    size_t p = (i - 1) / 2;
    engram_text_hit_t tmp;
    if (!ranks_before(r, &h[p], &h[i])) return;
    tmp = h[i];
    h[i] = h[p];
    h[p] = tmp;
    i = p;
  }
}

/* The best k so far: a bounded heap in the caller's hits (the worst at the root), and the search's inputs. */
typedef struct {
  rank_t r;
  engram_text_accept_fn accept;
  void *ud;
  engram_text_hit_t *hits;
  size_t k, h;
} best_t;

/* Offers a scored document: kept when it ranks before the worst of a full heap (or the heap is not full) and
 * the caller accepts it — asked only then, so at most once per document and search. */
static void best_offer(best_t *b, uint64_t doc, double score) {
  engram_text_hit_t cand;
  cand.doc = doc;
  cand.score = score;
  if (b->h == b->k && !ranks_before(&b->r, &cand, &b->hits[0])) return;
  if (b->accept != NULL && !b->accept(cand.doc, b->ud)) return;
  if (b->h < b->k) {
    b->hits[b->h] = cand;
    sift_up(&b->r, b->hits, b->h++);
  } else {
    b->hits[0] = cand;
    sift_down(&b->r, b->hits, b->h, 0);
  }
}

/* One query term's contribution to a document's score. Every path computes it with this one expression, and a
 * document's score is the sum of its terms' contributions in the query's term order, so the two ways of scoring
 * below give bit-identical scores. */
static inline double contribution(double idf, double tf, uint32_t dl, double inv_avgdl) {
  return idf * tf * (BM25_K1 + 1) / (tf + BM25_K1 * (1 - BM25_B + BM25_B * dl * inv_avgdl));
}

/* Term at a time, every posting: the accumulator collects each document's score in term order (used for
 * one-term queries). */
static void score_all(engram_text_index_t *ix, const uint32_t *ids, uint32_t nq, const double *idf, double inv_avgdl,
                      best_t *b) {
  uint32_t i, j, nt = 0;
  for (i = 0; i < nq; i++) {
    const term_t *t = &ix->terms[ids[i]];
    for (j = 0; j < t->n; j++) {
      uint32_t s = t->post[j].slot, dl = ix->dlen[s];
      if (dl == DEAD) continue;
      if (ix->acc[s] == 0) ix->touched[nt++] = s;
      ix->acc[s] += contribution(idf[i], t->post[j].tf, dl, inv_avgdl);
    }
  }
  for (i = 0; i < nt; i++) {
    uint32_t s = ix->touched[i];
    double score = ix->acc[s];
    ix->acc[s] = 0;
    best_offer(b, ix->docs[s].id, score);
  }
}

/* Document at a time with MaxScore pruning (Turtle and Flood, 1995). Each term has an upper bound of its
 * contribution (its largest tf on the shortest possible document). Terms sorted by bound, the longest prefix whose
 * bounds add up to less than the heap's worst score is "non-essential": a document found only in those cannot enter
 * the heap, so candidates come from the other terms' postings alone (merged in slot order) and are looked up in
 * the non-essential ones by galloping search, highest bound first, giving up as soon as what is found plus the
 * bounds left cannot reach the worst score. A document that survives is scored exactly as score_all would. The
 * comparisons against bounds carry a relative slack of 1e-9, far above the rounding of a sum of a few terms, so
 * rounding never prunes a document that would rank; ties are offered like any other document. */
typedef struct {
  const posting_t *p, *end;
  double idf, ub;
  uint32_t qi; /* the term's place in the query's order */
} cursor_t;

#define SLACK (1 + 1e-9)

static int cmp_ub(const void *a, const void *b) {
  double x = ((const cursor_t *)a)->ub, y = ((const cursor_t *)b)->ub;
  return x < y ? -1 : x > y;
}

/* Moves c to its first live posting at or after slot s (galloping, then binary search). */
static void cursor_seek(const engram_text_index_t *ix, cursor_t *c, uint32_t s) {
  const posting_t *lo = c->p, *hi;
  size_t step = 1;
  if (lo < c->end && lo->slot < s) {
    while (lo + step < c->end && lo[step].slot < s) {
      lo += step;
      step *= 2;
    }
    hi = lo + step < c->end ? lo + step : c->end; /* lo->slot < s; hi is past the end or hi->slot >= s */
    while (hi - lo > 1) {
      const posting_t *mid = lo + (hi - lo) / 2;
      if (mid->slot < s) lo = mid;
      else hi = mid;
    }
    lo = hi;
  }
  while (lo < c->end && ix->dlen[lo->slot] == DEAD) lo++;
  c->p = lo;
}

static int score_pruned(engram_text_index_t *ix, const uint32_t *ids, uint32_t nq, const double *idf, double inv_avgdl,
                        best_t *b) {
  cursor_t *cur = engram_malloc(nq * (sizeof *cur + sizeof(double) * 2));
  double *part, *below, theta = -1;
  uint32_t i, p = 0; /* cur[0 .. p) are non-essential */
  if (cur == NULL) return ENGRAM_ENOMEM;
  part = (double *)(cur + nq); /* contribution per query term of the document at hand, 0 when absent */
  below = part + nq;           /* below[i]: the bounds of cur[0 .. i) added up */
  for (i = 0; i < nq; i++) {
    const term_t *t = &ix->terms[ids[i]];
    double mtf = t->maxtf ? t->maxtf : 1;
    cur[i].p = t->post;
    cur[i].end = t->post + t->n;
    cur[i].idf = idf[i];
    cur[i].ub = idf[i] * mtf * (BM25_K1 + 1) / (mtf + BM25_K1 * (1 - BM25_B));
    cur[i].qi = i;
    part[i] = 0;
  }
  qsort(cur, nq, sizeof *cur, cmp_ub);
  for (i = 0; i < nq; i++) {
    cursor_seek(ix, &cur[i], 0); /* past leading dead postings */
    below[i] = i == 0 ? 0 : below[i - 1] + cur[i - 1].ub;
  }
  for (;;) {
    uint32_t s = NONE, dl;
    double ess = 0, score = 0;
    int pruned = 0;
    for (i = p; i < nq; i++)
      if (cur[i].p < cur[i].end && cur[i].p->slot < s) s = cur[i].p->slot;
    if (s == NONE) break;
    dl = ix->dlen[s];
    for (i = p; i < nq; i++)
      if (cur[i].p < cur[i].end && cur[i].p->slot == s) {
        part[cur[i].qi] = contribution(cur[i].idf, cur[i].p->tf, dl, inv_avgdl);
        ess += part[cur[i].qi];
        cur[i].p++;
        cursor_seek(ix, &cur[i], s + 1);
      }
    for (i = p; i > 0 && !pruned; i--) {
      cursor_t *c = &cur[i - 1];
      if (b->h == b->k && (ess + below[i]) * SLACK < theta) {
        pruned = 1;
        break;
      }
      cursor_seek(ix, c, s);
      if (c->p < c->end && c->p->slot == s) {
        part[c->qi] = contribution(c->idf, c->p->tf, dl, inv_avgdl);
        ess += part[c->qi];
      }
    }
    if (!pruned && !(b->h == b->k && ess * SLACK < theta)) {
      for (i = 0; i < nq; i++) score += part[i]; /* the query's order, as score_all adds them */
      best_offer(b, ix->docs[s].id, score);
      if (b->h == b->k && b->hits[0].score > theta) {
        theta = b->hits[0].score;
        while (p < nq && (below[p] + cur[p].ub) * SLACK < theta) p++;
      }
    }
    for (i = 0; i < nq; i++) part[i] = 0;
  }
  engram_free(cur);
  return 0;
}

int engram_text_index_search(engram_text_index_t *ix, const char *query, size_t k, engram_text_accept_fn accept,
                             engram_text_tie_fn tie, void *ud, engram_text_hit_t *hits, size_t *n_hits) {
  query_ctx_t q;
  best_t b;
  uint32_t i, nq = 0;
  double avgdl, inv_avgdl, *idf;
  int rc = 0;
  *n_hits = 0;
  if (ix == NULL || query == NULL || k == 0 || ix->live == 0) return 0;
  memset(&q, 0, sizeof q);
  q.ix = ix;
  if ((rc = engram_tokenize(query, strlen(query), query_token, &q)) != 0) {
    engram_free(q.ids);
    return rc;
  }
  /* Each distinct query term counts once, in term id order. */
  if (q.n > 1) qsort(q.ids, q.n, sizeof *q.ids, cmp_u32);
  for (i = 0; i < q.n; i++)
    if (i == 0 || q.ids[i] != q.ids[i - 1]) q.ids[nq++] = q.ids[i];
  if (nq == 0 || (idf = engram_malloc(nq * sizeof *idf)) == NULL) {
    engram_free(q.ids);
    return nq == 0 ? 0 : ENGRAM_ENOMEM;
  }
  avgdl = (double)ix->total_len / ix->live;
  inv_avgdl = avgdl > 0 ? 1.0 / avgdl : 0.0;
  for (i = 0; i < nq; i++) {
    const term_t *t = &ix->terms[q.ids[i]];
    idf[i] = log(1.0 + ((double)ix->live - t->df + 0.5) / (t->df + 0.5));
  }
  b.r.tie = tie;
  b.r.ud = ud;
  b.accept = accept;
  b.ud = ud;
  b.hits = hits;
  b.k = k;
  b.h = 0;
  if (nq == 1) {
    /* one list: nothing to prune against, and the accumulator walk is the tightest loop */
    if (ix->acc_cap < ix->nslots) {
      uint32_t old = ix->acc_cap; /* The accumulator's new part must start at zero. */
      if (grow((void **)&ix->acc, &ix->acc_cap, ix->nslots, sizeof *ix->acc) != 0) rc = ENGRAM_ENOMEM;
      else memset(ix->acc + old, 0, (size_t)(ix->acc_cap - old) * sizeof *ix->acc);
    }
    if (rc == 0 && grow((void **)&ix->touched, &ix->touched_cap, ix->nslots, sizeof *ix->touched) != 0)
      rc = ENGRAM_ENOMEM;
    if (rc == 0) score_all(ix, q.ids, nq, idf, inv_avgdl, &b);
  } else {
    rc = score_pruned(ix, q.ids, nq, idf, inv_avgdl, &b);
  }
  engram_free(q.ids);
  engram_free(idf);
  if (rc != 0) return rc;
  /* Heapsort: moving the worst to the back each time leaves the array best first. */
  for (i = (uint32_t)b.h; i > 1; i--) {
    engram_text_hit_t tmp = hits[0];
    hits[0] = hits[i - 1];
    hits[i - 1] = tmp;
    sift_down(&b.r, hits, i - 1, 0);
  }
  for (i = 0; i < b.h; i++) hits[i].score = hits[i].score / (hits[i].score + 1.0);
  *n_hits = b.h;
  return 0;
}
