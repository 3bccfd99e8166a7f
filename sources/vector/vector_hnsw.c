/*
 * vector_hnsw.c — the approximate k-NN index of the vector source: an HNSW graph (Malkov & Yashunin, "Efficient
 * and robust approximate nearest neighbor search using Hierarchical Navigable Small World graphs", 2016) whose
 * nodes read their vectors from the source's matrix. Exact search reads every row per query; the graph reads a
 * few thousand, which is what makes collections of millions searchable in a millisecond or so.
 *
 * Layout, for speed: level-0 links of every node in one contiguous uint32 array ([count, 2m links] per node),
 * upper levels (1 node in m has any) in a small array per node; node → row and row → node maps; a visited
 * mark per node, beside the node's row (one cache miss for both), that is an epoch counter (a new search bumps
 * the epoch instead of clearing the marks); the candidate and result heaps are scratch arrays kept across
 * searches (no allocation per query once grown). A candidate's neighbours are taken in two passes: the first
 * marks the ones not seen yet (their marks and rows prefetched together), the second scores them while the whole
 * vector of the one AHEAD places on is prefetched (every line of it, not only the first: a vector of 384 floats
 * is 24 lines, which then arrive together instead of one hardware-prefetcher ramp per vector). The walk scores
 * with its own kernel (vector_walk.c: FMA, four sums); the scores a search returns and the ones the accept
 * function sees come from vector_knn.c's exact kernel, so they are bit for bit those of exact search.
 *
 * Insert is the paper's algorithm 1 with the neighbour-selection heuristic (algorithm 4, as hnswlib does it).
 * Delete is eager: every neighbour that linked to the removed node is linked again, by the same heuristic, among
 * its remaining links and the removed node's links; the node id goes on a free list. A node that linked to the
 * removed one without being linked back keeps a stale link: a walk skips a free node, and a reused id only makes
 * that one link a poor one. An update with a new vector is a delete then an insert.
 *
 * Filters: the caller's accept function is asked during the level-0 walk; refused nodes are still walked through
 * (they keep the graph connected) but never enter the result list, and the walk stops only when its best open
 * candidate is worse than the worst of ef accepted results — hnswlib's filtered search. A very selective filter
 * therefore makes the walk visit many nodes; the caller may prefer exact search then.
 *
 * Persistence (engram__hnsw_save / _load) writes the graph with each node named by a caller's 64-bit id, so the
 * graph can be matched to the items of the file again at the next open whatever order they are loaded in.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engram/source.h"
#include "vector_hnsw.h"
#include "vector_walk.h"

#define NONE UINT32_MAX
#define MAX_LEVEL 31

#if defined(__GNUC__)
#define PREFETCH(p) __builtin_prefetch(p)
#else
#define PREFETCH(p) ((void)0)
#endif

typedef struct {
  float d; /* distance: minus the raw similarity, lower is nearer */
  uint32_t n;
} cand_t;

typedef struct {
  uint32_t row;  /* the matrix row holding the node's vector, NONE when the id is free */
  uint32_t mark; /* the epoch of the last search that visited the node */
} node_t;

typedef struct {
  cand_t *a;
  size_t n, cap;
} heap_t;

struct engram__hnsw_s {
  engram__hnsw_params_t p;
  const engram__matrix_t *mat;
  engram__metric_t metric;
  engram__kernel_fn kern; /* vector_knn.c's kernel: the scores a search returns, bit for bit the exact search's */
  engram__walk_fn walk;   /* the walk's own (vector_walk.c: faster, rounding differently in the last bits) */
  size_t dim;
  unsigned m0;           /* level-0 links: 2m */
  double level_mult;     /* 1 / ln(m) */
  uint64_t rng;
  /* Nodes. */
  size_t n_nodes, cap, live; /* ids [0, n_nodes) used, of which `live` have a row */
  uint32_t *links0;      /* cap × (1 + m0) */
  uint32_t **upper;      /* per node: NULL, or level × (1 + m) */
  uint8_t *level;
  node_t *node;          /* per node: its row (NONE = free) and its visited mark, side by side (one cache line) */
  uint32_t epoch;
  uint32_t *free_ids;
  size_t n_free, free_cap;
  uint32_t *row_node;    /* rows_cap entries, NONE = row without node */
  size_t rows_cap;
  uint32_t entry;
  int max_level;         /* -1 = empty */
  /* Scratch. */
  heap_t cand, res;
  cand_t *sel;
  size_t sel_cap;
  size_t visits;
};

/* ---- Small helpers ---- */

static const float *vec_of(const engram__hnsw_t *h, uint32_t node) {
  return h->mat->data + (size_t)h->node[node].row * h->dim;
}

static float dist_to(const engram__hnsw_t *h, const float *q, uint32_t node) {
  float s = h->walk(vec_of(h, node), q, h->dim);
  return s != s ? INFINITY : -s;
}

/* The exact kernel's raw similarity of node to q: what a search returns and what a filter is asked with. */
static float exact_raw(const engram__hnsw_t *h, const float *q, uint32_t node) {
  float s;
  h->kern(vec_of(h, node), 1, h->dim, q, &s);
  return s;
}

/* Prefetches the first PREFETCH_LINES cache lines of node's vector (all of it up to 768 dimensions). */
#define PREFETCH_LINES 48
#define AHEAD 2 /* vectors prefetched ahead of the one being scored */
static void prefetch_vec(const engram__hnsw_t *h, uint32_t node) {
  uintptr_t p = (uintptr_t)vec_of(h, node), end = p + h->dim * sizeof(float);
  if (end - p > PREFETCH_LINES * 64) end = p + PREFETCH_LINES * 64;
  for (p &= ~(uintptr_t)63; p < end; p += 64) PREFETCH((const void *)p);
}

static uint32_t *links_at(const engram__hnsw_t *h, uint32_t node, int lvl) {
  if (lvl == 0) return h->links0 + (size_t)node * (1 + h->m0);
  return h->upper[node] + (size_t)(lvl - 1) * (1 + h->p.m);
}

static unsigned max_links(const engram__hnsw_t *h, int lvl) { return lvl == 0 ? h->m0 : h->p.m; }

static int grow(void **p, size_t *cap, size_t need, size_t size) {
  size_t c = *cap ? *cap : 16;
  void *n;
  if (need <= *cap) return 0;
  while (c < need) c *= 2;
  if ((n = engram_realloc(*p, c * size)) == NULL) return ENGRAM_ENOMEM;
  *p = n;
  *cap = c;
  return 0;
}

/* Min-heap (nearest on top) when max is 0, max-heap (farthest on top) when 1. */
static int heap_above(const cand_t *a, const cand_t *b, int max) { return max ? a->d > b->d : a->d < b->d; }

static int heap_push(heap_t *hp, cand_t c, int max) {
  size_t i;
  if (hp->n == hp->cap && grow((void **)&hp->a, &hp->cap, hp->n + 1, sizeof *hp->a) != 0) return ENGRAM_ENOMEM;
  i = hp->n++;
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (!heap_above(&c, &hp->a[p], max)) break;
    hp->a[i] = hp->a[p];
    i = p;
  }
  hp->a[i] = c;
  return 0;
}

static cand_t heap_pop(heap_t *hp, int max) {
  cand_t top = hp->a[0], last = hp->a[--hp->n];
  size_t i = 0, n = hp->n;
  for (;;) {
    size_t l = 2 * i + 1, w;
    if (l >= n) break;
    w = l + 1 < n && heap_above(&hp->a[l + 1], &hp->a[l], max) ? l + 1 : l;
    if (!heap_above(&hp->a[w], &last, max)) break;
    hp->a[i] = hp->a[w];
    i = w;
  }
  if (n > 0) hp->a[i] = last;
  return top;
}

static uint32_t next_epoch(engram__hnsw_t *h) {
  if (++h->epoch == 0) { /* wrapped: clear the marks once every 2^32 searches */
    size_t i;
    for (i = 0; i < h->cap; i++) h->node[i].mark = 0;
    h->epoch = 1;
  }
  return h->epoch;
}

/* ---- Life ---- */

int engram__hnsw_new(engram__hnsw_t **out, const engram__matrix_t *mat, engram__metric_t metric,
                     const engram__hnsw_params_t *p) {
  engram__hnsw_t *h = engram_calloc(1, sizeof *h);
  if (h == NULL) return ENGRAM_ENOMEM;
  h->p = *p;
  h->mat = mat;
  h->metric = metric;
  h->kern = engram__knn_kernel_fn(metric);
  h->walk = engram__walk_kernel(metric);
  h->dim = mat->dim;
  h->m0 = 2 * p->m;
  h->level_mult = 1.0 / log((double)p->m);
  h->rng = 0x9e3779b97f4a7c15ull;
  h->max_level = -1;
  h->entry = NONE;
  *out = h;
  return 0;
}

static void free_upper(engram__hnsw_t *h) {
  size_t i;
  for (i = 0; i < h->n_nodes; i++) {
    engram_free(h->upper[i]);
    h->upper[i] = NULL;
  }
}

void engram__hnsw_free(engram__hnsw_t *h) {
  if (h == NULL) return;
  free_upper(h);
  engram_free(h->links0);
  engram_free(h->upper);
  engram_free(h->level);
  engram_free(h->node);
  engram_free(h->free_ids);
  engram_free(h->row_node);
  engram_free(h->cand.a);
  engram_free(h->res.a);
  engram_free(h->sel);
  engram_free(h);
}

void engram__hnsw_reset(engram__hnsw_t *h) {
  size_t i;
  free_upper(h);
  h->n_nodes = h->live = h->n_free = 0;
  for (i = 0; i < h->rows_cap; i++) h->row_node[i] = NONE;
  h->entry = NONE;
  h->max_level = -1;
}

const engram__hnsw_params_t *engram__hnsw_params(const engram__hnsw_t *h) { return &h->p; }
size_t engram__hnsw_count(const engram__hnsw_t *h) { return h->live; }
size_t engram__hnsw_last_visits(const engram__hnsw_t *h) { return h->visits; }

size_t engram__hnsw_bytes(const engram__hnsw_t *h) {
  size_t b = sizeof *h + h->cap * ((1 + h->m0) * sizeof(uint32_t) + sizeof(uint32_t *) + 1 + 2 * sizeof(uint32_t)) +
             h->rows_cap * sizeof(uint32_t) + h->free_cap * sizeof(uint32_t) +
             (h->cand.cap + h->res.cap + h->sel_cap) * sizeof(cand_t);
  size_t i;
  for (i = 0; i < h->n_nodes; i++)
    if (h->upper[i]) b += (size_t)h->level[i] * (1 + h->p.m) * sizeof(uint32_t);
  return b;
}

static int reserve_nodes(engram__hnsw_t *h, size_t need) {
  size_t c = h->cap, old = h->cap;
  if (need <= h->cap) return 0;
  c = c ? c : 64;
  while (c < need) c += c / 2;
  {
    uint32_t *l0 = engram_realloc(h->links0, c * (1 + h->m0) * sizeof *l0);
    if (l0 == NULL) return ENGRAM_ENOMEM;
    h->links0 = l0;
  }
  {
    uint32_t **up = engram_realloc(h->upper, c * sizeof *up);
    if (up == NULL) return ENGRAM_ENOMEM;
    h->upper = up;
  }
  {
    uint8_t *lv = engram_realloc(h->level, c);
    if (lv == NULL) return ENGRAM_ENOMEM;
    h->level = lv;
  }
  {
    node_t *nd = engram_realloc(h->node, c * sizeof *nd);
    if (nd == NULL) return ENGRAM_ENOMEM;
    h->node = nd;
  }
  memset(h->upper + old, 0, (c - old) * sizeof *h->upper);
  memset(h->node + old, 0, (c - old) * sizeof *h->node);
  h->cap = c;
  return 0;
}

int engram__hnsw_reserve(engram__hnsw_t *h, size_t rows) {
  size_t old = h->rows_cap, i;
  if (reserve_nodes(h, h->n_nodes + 1) != 0) return ENGRAM_ENOMEM;
  if (rows > h->rows_cap) {
    size_t c = old ? old : 64;
    uint32_t *rn;
    while (c < rows) c += c / 2;
    if ((rn = engram_realloc(h->row_node, c * sizeof *rn)) == NULL) return ENGRAM_ENOMEM;
    for (i = old; i < c; i++) rn[i] = NONE;
    h->row_node = rn;
    h->rows_cap = c;
  }
  /* The scratch an insert needs: its candidate lists, and the selection of its neighbours. */
  if (grow((void **)&h->sel, &h->sel_cap, h->p.ef_construction + h->m0 + 2, sizeof *h->sel) != 0 ||
      grow((void **)&h->res.a, &h->res.cap, h->p.ef_construction + 2, sizeof *h->res.a) != 0 ||
      grow((void **)&h->cand.a, &h->cand.cap, 4 * h->p.ef_construction + 64, sizeof *h->cand.a) != 0)
    return ENGRAM_ENOMEM;
  return 0;
}

/* ---- Walks ---- */

/* Greedy descent on one level from *cur (distance *d) toward q. */
static void greedy(engram__hnsw_t *h, const float *q, uint32_t *cur, float *d, int lvl) {
  int changed = 1;
  while (changed) {
    const uint32_t *l = links_at(h, *cur, lvl);
    uint32_t i, n = l[0];
    changed = 0;
    for (i = 0; i < n; i++) {
      uint32_t c = l[1 + i];
      float dc;
      if (c >= h->n_nodes || h->node[c].row == NONE || h->level[c] < lvl) continue;
      if (i + 1 < n && l[2 + i] < h->n_nodes && h->node[l[2 + i]].row != NONE) PREFETCH(vec_of(h, l[2 + i]));
      dc = dist_to(h, q, c);
      h->visits++;
      if (dc < *d) {
        *d = dc;
        *cur = c;
        changed = 1;
      }
    }
  }
}

typedef struct {
  engram__accept_fn accept;
  void *ud;
} filt_t;

static int accepted(engram__hnsw_t *h, const filt_t *f, uint32_t node, const float *q) {
  return f == NULL || f->accept == NULL || f->accept(h->node[node].row, exact_raw(h, q, node), f->ud);
}

/*
 * The ef nearest accepted nodes on level lvl, from entry ep, into h->res (a max-heap). Returns 0 or
 * ENGRAM_ENOMEM (the candidate heap could not grow; res holds what was found).
 */
static int search_level(engram__hnsw_t *h, const float *q, uint32_t ep, size_t ef, int lvl, const filt_t *f,
                        uint32_t skip) {
  uint32_t mark = next_epoch(h);
  float bound = INFINITY;
  cand_t c;
  h->cand.n = h->res.n = 0;
  c.n = ep;
  c.d = dist_to(h, q, ep);
  h->visits++;
  h->node[ep].mark = mark;
  if (heap_push(&h->cand, c, 0) != 0) return ENGRAM_ENOMEM;
  if (ep != skip && c.d != INFINITY && accepted(h, f, ep, q)) {
    heap_push(&h->res, c, 1);
    bound = c.d;
  }
  while (h->cand.n > 0) {
    cand_t cur = heap_pop(&h->cand, 0);
    const uint32_t *l;
    uint32_t i, n, n_new = 0, todo[2 * 128 + 1];
    if (cur.d > bound && h->res.n >= ef) break;
    if (h->cand.n > 0) PREFETCH(links_at(h, h->cand.a[0].n, lvl)); /* the next candidate's links, likely next */
    l = links_at(h, cur.n, lvl);
    n = l[0];
    for (i = 0; i < n; i++) { /* marks and rows of every neighbour: the row names where its vector is */
      uint32_t e = l[1 + i];
      if (e < h->n_nodes) PREFETCH(h->node + e);
    }
    /* The neighbours not seen yet (marked now), then their distances: the whole vector of the next one is
     * fetched while the current one is scored, so its lines arrive together rather than one miss at a time. */
    for (i = 0; i < n; i++) {
      uint32_t e = l[1 + i];
      if (e >= h->n_nodes || h->node[e].mark == mark || h->node[e].row == NONE || (lvl > 0 && h->level[e] < lvl))
        continue;
      h->node[e].mark = mark;
      todo[n_new++] = e;
    }
    for (i = 0; i < n_new && i < AHEAD; i++) prefetch_vec(h, todo[i]);
    for (i = 0; i < n_new; i++) {
      uint32_t e = todo[i];
      cand_t x;
      if (i + AHEAD < n_new) prefetch_vec(h, todo[i + AHEAD]);
      x.n = e;
      x.d = dist_to(h, q, e);
      h->visits++;
      if (x.d == INFINITY) continue;
      if (h->res.n < ef || x.d < bound) {
        if (heap_push(&h->cand, x, 0) != 0) return ENGRAM_ENOMEM;
        if (e != skip && accepted(h, f, e, q)) {
          heap_push(&h->res, x, 1); /* res has room for ef + 1 */
          if (h->res.n > ef) heap_pop(&h->res, 1);
          bound = h->res.a[0].d;
        }
      }
    }
  }
  return 0;
}

/* ---- Neighbour selection (heuristic) ---- */

static int cmp_cand(const void *a, const void *b) {
  const cand_t *x = a, *y = b;
  return x->d < y->d ? -1 : x->d > y->d ? 1 : (x->n > y->n) - (x->n < y->n);
}

/*
 * Keeps at most max of cands[0..n) (distances to the base), nearest first: a candidate is dropped when it is
 * nearer to an already kept one than to the base (it will be reached through that one) — the paper's heuristic,
 * which keeps links pointing in different directions and is what makes clustered data searchable. Returns how
 * many were kept (at cands' front).
 */
static size_t select_neighbours(engram__hnsw_t *h, cand_t *cands, size_t n, size_t max) {
  size_t kept = 0, i, j;
  if (n > 1) qsort(cands, n, sizeof *cands, cmp_cand);
  if (n <= max) return n;
  for (i = 0; i < n && kept < max; i++) {
    cand_t c = cands[i];
    const float *cv = vec_of(h, c.n);
    int good = 1;
    for (j = 0; j < kept; j++) {
      float s = h->walk(vec_of(h, cands[j].n), cv, h->dim);
      if (-s < c.d) {
        good = 0;
        break;
      }
    }
    if (good) cands[kept++] = c;
  }
  return kept;
}

/* Sets node's links on lvl to the selection's first n. */
static void set_links(engram__hnsw_t *h, uint32_t node, int lvl, const cand_t *s, size_t n) {
  uint32_t *l = links_at(h, node, lvl);
  size_t i;
  l[0] = (uint32_t)n;
  for (i = 0; i < n; i++) l[1 + i] = s[i].n;
}

/* Adds a link nb → node on lvl, re-selecting nb's links when full. */
static void link_back(engram__hnsw_t *h, uint32_t nb, uint32_t node, int lvl) {
  uint32_t *l = links_at(h, nb, lvl);
  unsigned max = max_links(h, lvl), i;
  size_t n;
  for (i = 0; i < l[0]; i++)
    if (l[1 + i] == node) return;
  if (l[0] < max) { /* room (stale links to freed nodes may take some; the walks skip them) */
    l[1 + l[0]] = node;
    l[0]++;
    return;
  }
  {
    const float *bv = vec_of(h, nb);
    cand_t *s = h->sel + h->p.ef_construction + 1; /* past the insert's own selection */
    n = 0;
    s[n].n = node;
    s[n++].d = dist_to(h, bv, node);
    for (i = 0; i < l[0]; i++) { /* (a stale link to a freed node is dropped here) */
      uint32_t c = l[1 + i];
      if (c >= h->n_nodes || h->node[c].row == NONE || h->level[c] < lvl || c == node) continue;
      s[n].n = c;
      s[n++].d = dist_to(h, bv, c);
    }
    n = select_neighbours(h, s, n, max);
    set_links(h, nb, lvl, s, n);
  }
}

/* ---- Insert ---- */

static int random_level(engram__hnsw_t *h) {
  double u;
  int l;
  h->rng ^= h->rng << 13;
  h->rng ^= h->rng >> 7;
  h->rng ^= h->rng << 17;
  u = ((double)(h->rng >> 11) + 0.5) / 9007199254740992.0;
  l = (int)(-log(u) * h->level_mult);
  return l > MAX_LEVEL ? MAX_LEVEL : l;
}

/* Moves the max-heap res into sel (unsorted); returns how many. */
static size_t take_results(engram__hnsw_t *h) {
  size_t n = h->res.n;
  memcpy(h->sel, h->res.a, n * sizeof *h->sel);
  h->res.n = 0;
  return n;
}

/* Links a new node into the graph. While it walks toward its own place the node is hidden (its row NONE), so a
 * stale link to a reused id cannot lead the walk to the node itself. */
static void connect_node(engram__hnsw_t *h, uint32_t node, int level) {
  const float *q = vec_of(h, node);
  uint32_t cur = h->entry, row = h->node[node].row;
  float d;
  int l;
  if (cur == NONE) {
    h->entry = node;
    h->max_level = level;
    return;
  }
  h->node[node].row = NONE;
  d = dist_to(h, q, cur);
  for (l = h->max_level; l > level; l--) greedy(h, q, &cur, &d, l);
  for (l = level < h->max_level ? level : h->max_level; l >= 0; l--) {
    size_t n, i;
    h->node[node].row = NONE;
    if (search_level(h, q, cur, h->p.ef_construction, l, NULL, node) != 0 && h->res.n == 0) {
      h->node[node].row = row;
      continue;
    }
    h->node[node].row = row;
    n = take_results(h);
    n = select_neighbours(h, h->sel, n, h->p.m);
    if (n > 0) cur = h->sel[0].n; /* the nearest: the next level's entry */
    set_links(h, node, l, h->sel, n);
    for (i = 0; i < n; i++) link_back(h, h->sel[i].n, node, l);
  }
  h->node[node].row = row;
  if (level > h->max_level) {
    h->entry = node;
    h->max_level = level;
  }
}

void engram__hnsw_insert(engram__hnsw_t *h, uint32_t row) {
  uint32_t node;
  int level = random_level(h);
  if (h->n_free > 0) node = h->free_ids[--h->n_free];
  else node = (uint32_t)h->n_nodes++; /* room reserved by engram__hnsw_reserve */
  h->links0[(size_t)node * (1 + h->m0)] = 0;
  engram_free(h->upper[node]);
  h->upper[node] = NULL;
  if (level > 0 && (h->upper[node] = engram_calloc((size_t)level * (1 + h->p.m), sizeof(uint32_t))) == NULL)
    level = 0;
  h->level[node] = (uint8_t)level;
  h->node[node].row = row;
  h->row_node[row] = node;
  h->live++;
  connect_node(h, node, level);
}

/* ---- Delete ---- */

static void relink_after_delete(engram__hnsw_t *h, uint32_t nb, uint32_t gone, int lvl) {
  uint32_t *l = links_at(h, nb, lvl), *gl = links_at(h, gone, lvl);
  const float *bv = vec_of(h, nb);
  cand_t *s = h->sel;
  uint32_t i, j;
  size_t n = 0;
  int had = 0;
  for (i = 0; i < l[0]; i++)
    if (l[1 + i] == gone) had = 1;
  if (!had) return;
  for (i = 0; i < l[0]; i++) {
    uint32_t c = l[1 + i];
    if (c == gone || c >= h->n_nodes || h->node[c].row == NONE || h->level[c] < lvl) continue;
    s[n].n = c;
    s[n++].d = dist_to(h, bv, c);
  }
  for (i = 0; i < gl[0]; i++) {
    uint32_t c = gl[1 + i];
    int dup = c == nb || c == gone || c >= h->n_nodes || h->node[c].row == NONE || h->level[c] < lvl;
    for (j = 0; !dup && j < n; j++) dup = s[j].n == c;
    if (dup) continue;
    s[n].n = c;
    s[n++].d = dist_to(h, bv, c);
  }
  n = select_neighbours(h, s, n, max_links(h, lvl));
  set_links(h, nb, lvl, s, n);
}

void engram__hnsw_remove(engram__hnsw_t *h, uint32_t row) {
  uint32_t node = row < h->rows_cap ? h->row_node[row] : NONE, i;
  int l;
  if (node == NONE) return;
  for (l = h->level[node]; l >= 0; l--) {
    const uint32_t *gl = links_at(h, node, l);
    for (i = 0; i < gl[0]; i++) {
      uint32_t nb = gl[1 + i];
      if (nb < h->n_nodes && nb != node && h->node[nb].row != NONE && h->level[nb] >= l)
        relink_after_delete(h, nb, node, l);
    }
  }
  h->row_node[row] = NONE;
  h->node[node].row = NONE;
  h->links0[(size_t)node * (1 + h->m0)] = 0;
  engram_free(h->upper[node]);
  h->upper[node] = NULL;
  h->live--;
  if (grow((void **)&h->free_ids, &h->free_cap, h->n_free + 1, sizeof *h->free_ids) == 0)
    h->free_ids[h->n_free++] = node; /* else the id is never reused */
  if (node == h->entry) { /* a new entry: the highest remaining node */
    size_t k;
    h->entry = NONE;
    h->max_level = -1;
    for (k = 0; k < h->n_nodes; k++)
      if (h->node[k].row != NONE && (int)h->level[k] > h->max_level) {
        h->max_level = h->level[k];
        h->entry = (uint32_t)k;
      }
  }
}

void engram__hnsw_moved(engram__hnsw_t *h, uint32_t from, uint32_t to) {
  uint32_t node;
  if (from >= h->rows_cap || (node = h->row_node[from]) == NONE) return;
  h->row_node[from] = NONE;
  h->row_node[to] = node;
  h->node[node].row = to;
}

int engram__hnsw_has_row(const engram__hnsw_t *h, uint32_t row) {
  return row < h->rows_cap && h->row_node[row] != NONE;
}

/* ---- Search ---- */

typedef struct {
  engram__tie_fn tie;
  void *ud;
} tie_t;

static _Thread_local tie_t sort_tie;

static int cmp_hits(const void *a, const void *b) {
  const engram__hit_t *x = a, *y = b;
  if (x->raw != y->raw) return x->raw > y->raw ? -1 : 1;
  if (sort_tie.tie) return sort_tie.tie(x->row, y->row, sort_tie.ud);
  return (x->row > y->row) - (x->row < y->row);
}

int engram__hnsw_search(engram__hnsw_t *h, const float *q, size_t k, size_t ef, engram__accept_fn accept,
                        engram__tie_fn tie, void *ud, engram__hit_t *hits, size_t *n_hits) {
  filt_t f = {accept, ud};
  uint32_t cur = h->entry;
  float d;
  size_t n, i;
  int l, rc;
  *n_hits = 0;
  h->visits = 0;
  if (k == 0 || cur == NONE) return 0;
  if (ef == 0) ef = h->p.ef_search;
  if (ef < k) ef = k;
  if (grow((void **)&h->res.a, &h->res.cap, ef + 2, sizeof *h->res.a) != 0) return ENGRAM_ENOMEM;
  d = dist_to(h, q, cur);
  for (l = h->max_level; l > 0; l--) greedy(h, q, &cur, &d, l);
  rc = search_level(h, q, cur, ef, 0, &f, NONE);
  if (rc != 0) return rc;
  /* The res heap holds the ef best accepted: keep the k best, best first, ties by key. */
  while (h->res.n > k) heap_pop(&h->res, 1);
  n = h->res.n;
  for (i = 0; i < n; i++) {
    hits[i].raw = exact_raw(h, q, h->res.a[i].n);
    hits[i].row = h->node[h->res.a[i].n].row;
  }
  sort_tie.tie = tie;
  sort_tie.ud = ud;
  if (n > 1) qsort(hits, n, sizeof *hits, cmp_hits);
  *n_hits = n;
  return 0;
}

/* ---- Persistence ---- */

#define MAGIC 0x57534e48u /* "HNSW" */
#define FORMAT 1

typedef struct {
  uint8_t *b;
  size_t n, cap;
  int oom;
} wbuf_t;

static void put(wbuf_t *w, const void *p, size_t len) {
  if (w->oom) return;
  if (w->n + len > w->cap) {
    size_t c = w->cap ? w->cap : 4096;
    uint8_t *nb;
    while (c < w->n + len) c *= 2;
    if ((nb = engram_realloc(w->b, c)) == NULL) {
      w->oom = 1;
      return;
    }
    w->b = nb;
    w->cap = c;
  }
  memcpy(w->b + w->n, p, len);
  w->n += len;
}

static void put32(wbuf_t *w, uint32_t x) { put(w, &x, 4); }

void *engram__hnsw_save(const engram__hnsw_t *h, uint64_t (*row_id)(uint32_t row, void *ud), void *ud, size_t *len) {
  wbuf_t w = {NULL, 0, 0, 0};
  size_t i;
  put32(&w, MAGIC);
  put32(&w, FORMAT);
  put32(&w, h->p.m);
  put32(&w, (uint32_t)h->metric);
  put32(&w, (uint32_t)h->dim);
  put32(&w, (uint32_t)h->n_nodes);
  put32(&w, h->entry);
  put32(&w, (uint32_t)(int32_t)h->max_level);
  for (i = 0; i < h->n_nodes && !w.oom; i++) {
    uint64_t id = h->node[i].row == NONE ? UINT64_MAX : row_id(h->node[i].row, ud);
    const uint32_t *l0 = links_at(h, (uint32_t)i, 0);
    uint8_t lv = h->node[i].row == NONE ? 0 : h->level[i];
    int l;
    put(&w, &id, 8);
    put(&w, &lv, 1);
    put(&w, l0, (1 + (size_t)l0[0]) * 4);
    for (l = 1; l <= lv; l++) {
      const uint32_t *ll = links_at(h, (uint32_t)i, l);
      put(&w, ll, (1 + (size_t)ll[0]) * 4);
    }
  }
  if (w.oom) {
    engram_free(w.b);
    return NULL;
  }
  *len = w.n;
  return w.b;
}

typedef struct {
  const uint8_t *p, *end;
  int bad;
} rbuf_t;

static void get(rbuf_t *r, void *out, size_t len) {
  if (r->bad || (size_t)(r->end - r->p) < len) {
    r->bad = 1;
    memset(out, 0, len);
    return;
  }
  memcpy(out, r->p, len);
  r->p += len;
}

static uint32_t get32(rbuf_t *r) {
  uint32_t x;
  get(r, &x, 4);
  return x;
}

/* Reads one link list of at most max links into l; 0 or bad. */
static int get_links(rbuf_t *r, uint32_t *l, unsigned max, size_t n_nodes) {
  uint32_t n = get32(r), i;
  if (n > max) return r->bad = 1, 1;
  l[0] = n;
  get(r, l + 1, (size_t)n * 4);
  for (i = 0; i < n; i++)
    if (l[1 + i] >= n_nodes) return r->bad = 1, 1;
  return r->bad;
}

int engram__hnsw_load(engram__hnsw_t *h, const void *buf, size_t len, uint32_t (*id_row)(uint64_t id, void *ud),
                      void *ud) {
  rbuf_t r = {buf, (const uint8_t *)buf + len, 0};
  uint32_t n_nodes, entry, i;
  int32_t max_level;
  engram__hnsw_reset(h);
  if (engram__hnsw_reserve(h, 0) != 0) return ENGRAM_ENOMEM; /* the scratch the repairs below use */
  if (get32(&r) != MAGIC || get32(&r) != FORMAT || get32(&r) != h->p.m || get32(&r) != (uint32_t)h->metric ||
      get32(&r) != (uint32_t)h->dim)
    return ENGRAM_EINVAL;
  n_nodes = get32(&r);
  entry = get32(&r);
  max_level = (int32_t)get32(&r);
  if (r.bad || max_level > MAX_LEVEL || (n_nodes > 0 && entry >= n_nodes)) return ENGRAM_EINVAL;
  if (reserve_nodes(h, n_nodes) != 0) return ENGRAM_ENOMEM;
  h->n_nodes = n_nodes;
  for (i = 0; i < n_nodes; i++) h->node[i].row = NONE, h->level[i] = 0, h->links0[(size_t)i * (1 + h->m0)] = 0;
  for (i = 0; i < n_nodes && !r.bad; i++) {
    uint64_t id;
    uint8_t lv;
    uint32_t row;
    int l;
    get(&r, &id, 8);
    get(&r, &lv, 1);
    if (lv > MAX_LEVEL) return engram__hnsw_reset(h), ENGRAM_EINVAL;
    h->level[i] = lv;
    if (get_links(&r, links_at(h, i, 0), h->m0, n_nodes) != 0) break;
    if (lv > 0 && (h->upper[i] = engram_calloc((size_t)lv * (1 + h->p.m), sizeof(uint32_t))) == NULL)
      return engram__hnsw_reset(h), ENGRAM_ENOMEM;
    for (l = 1; l <= lv && !r.bad; l++) get_links(&r, links_at(h, i, l), h->p.m, n_nodes);
    row = id == UINT64_MAX ? NONE : id_row(id, ud);
    if (row != NONE && (row >= h->mat->rows || engram__hnsw_reserve(h, (size_t)row + 1) != 0)) row = NONE;
    if (row != NONE && h->row_node[row] != NONE) row = NONE; /* two nodes for one row: keep the first */
    h->node[i].row = row;
    if (row != NONE) h->row_node[row] = i, h->live++;
  }
  if (r.bad || r.p != r.end) {
    engram__hnsw_reset(h);
    return ENGRAM_EINVAL;
  }
  /* Nodes whose item is gone (or changed) since the save: removed as a delete would (their links are still
   * there to repair the neighbours; the repair reads neighbour vectors only). Give them a placeholder row while
   * removing, then free them. */
  h->entry = entry;
  h->max_level = max_level;
  for (i = 0; i < n_nodes; i++) {
    if (h->node[i].row != NONE) continue;
    {
      int l;
      uint32_t j;
      for (l = h->level[i]; l >= 0; l--) {
        const uint32_t *gl = links_at(h, i, l);
        for (j = 0; j < gl[0]; j++) {
          uint32_t nb = gl[1 + j];
          if (nb != i && h->node[nb].row != NONE && h->level[nb] >= l) relink_after_delete(h, nb, i, l);
        }
      }
      h->links0[(size_t)i * (1 + h->m0)] = 0;
      engram_free(h->upper[i]);
      h->upper[i] = NULL;
      if (grow((void **)&h->free_ids, &h->free_cap, h->n_free + 1, sizeof *h->free_ids) == 0)
        h->free_ids[h->n_free++] = i;
    }
  }
  if (h->entry == NONE || h->node[h->entry].row == NONE) {
    h->entry = NONE;
    h->max_level = -1;
    for (i = 0; i < n_nodes; i++)
      if (h->node[i].row != NONE && (int)h->level[i] > h->max_level) h->max_level = h->level[i], h->entry = i;
  }
  return 0;
}
