/*
 * redis_search.c — ranked text search and text count of the redis source (see redis_search.h): BM25 over a
 * namespace's items, evaluated in process (Debian's Redis has no search module), with the key pattern, the
 * typed metadata filter and the system-field ranges (engram_request_in_ranges) applied to the items first.
 *
 * The walk. ZRANGEBYLEX reads the namespace index in bounded batches (scan_batch members); when a batch
 * arrives, the next one is asked for at once, along with one pipelined HMGET per member of just the fields the
 * query needs (value and expires; metadata with a filter; created and updated with ranges; version when an
 * index is being built), so Redis reads the next keys and these items while this thread scores the previous
 * batch. The replies come back in order and take their keys from a queue of batches. Each item is tokenized
 * straight out of its stored JSON and scored by the streamed scorer (redis_rank.c), which keeps only lengths and
 * query-term frequencies; at the end the best offset + limit items are fetched in full with pipelined HMGETs (an
 * item gone since is skipped and the next one taken). Plain commands rather than a Lua script per batch: Redis
 * spends about half the time on them.
 *
 * The cache. Without a filter, a pattern or ranges, a search can use an in-process BM25 index of the namespace
 * (engram_text_index, documents numbered in key order, so its scores and ties are the walk's) kept between
 * searches. It is valid while the namespace's generation key (bumped by every script that changes its items,
 * redis_script.c) and the index's ZCARD are what they were when it was built, and until the earliest expiry among
 * its items; each search first reads both (GET + ZCARD, one round trip). On a hit, the best candidates are
 * fetched with HMGET and each must still exist with the version indexed — otherwise something wrote behind
 * engram's back: the index is dropped and the search walks instead. A walk builds an index alongside when the
 * namespace has no entry yet or its generation has not moved since the previous search (so a namespace written
 * between every two searches is not indexed for nothing); the index is kept only if the generation is still
 * the same after the walk. search_cache_items bounds the items indexed over all namespaces (least recently used
 * indexes go first); 0 turns the cache off.
 *
 * Own writes. The replies of this source's stores, updates and deletes (redis_store.c, redis_update.c,
 * redis_single.c, redis_batch.c) are applied to the namespace's cached index as they come back — on the one
 * connection, in order, so a probe's reply always comes after those of the writes sent before it — and each
 * generation bump they made is counted (own). The index is current while the generation read by a probe is its
 * build's plus own and ZCARD is the one it expects; anything else (another client's write, a lost reply, a clear)
 * is a gap, and the search walks. Documents added this way are numbered after the build's, so ties rank by key
 * through a tie callback rather than by number. Indexes are reference-counted: a search keeps the one it uses
 * even if a newer one replaces it meanwhile.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redis_call.h"
#include "redis_cmd.h"
#include "redis_item.h"
#include "redis_json.h"
#include "redis_rank.h"
#include "redis_rbuf.h"
#include "redis_search.h"

#define TC_MAX_ENTRIES 64 /* namespaces remembered (with or without an index) */

/* ---- Cached indexes ---- */

/* The text index of one namespace at one generation. */
typedef struct {
  unsigned refs;             /* the cache entry's, and one per search using it */
  engram_text_index_t *ix;   /* document id = the item's number in key order */
  char *gen;                 /* the generation it was built at */
  size_t gen_len;
  int64_t zcard;             /* ZCARD of the namespace index after the build */
  int64_t min_expires;       /* the earliest expiry among its items, 0 = none */
  engram__rbuf_t keys;       /* the items' keys, NUL-terminated */
  size_t *key_off;           /* SIZE_MAX: removed by an own delete */
  uint64_t *version;
  uint32_t n, cap;
  /* Own writes applied since the build (engram__redis_search_wrote / _removed / _bumped): the generation bumps
   * they made (the index is current while the generation is gen + own), documents removed, and a map from key
   * to document (made by the first own write). */
  uint64_t own;
  uint32_t dead;
  uint32_t *kmap, kmap_cap;
} tix_t;

struct engram__redis_tc_s {
  struct engram__redis_tc_s *next;
  char *ns;
  size_t ns_len;
  char *seen; /* the generation the previous search of this namespace saw (NULL: none yet) */
  size_t seen_len;
  uint64_t seen_own; /* generation bumps by our own writes since seen */
  tix_t *tix;
  unsigned active; /* searches holding the entry (it is not evicted meanwhile) */
  int building;
  uint64_t used;
};
typedef struct engram__redis_tc_s tc_t;

static void tix_release(tix_t *x) {
  if (x == NULL || --x->refs > 0) return;
  engram_text_index_free(x->ix);
  engram_free(x->gen);
  engram__rbuf_free(&x->keys);
  engram_free(x->key_off);
  engram_free(x->version);
  engram_free(x->kmap);
  engram_free(x);
}

static tix_t *tix_new(void) {
  tix_t *x = engram_calloc(1, sizeof *x);
  if (x == NULL) return NULL;
  x->refs = 1;
  if (engram_text_index_new(&x->ix) != 0) {
    engram_free(x);
    return NULL;
  }
  return x;
}

/* Adds the next item (in key order). Returns 0 or ENGRAM_ENOMEM. */
static int tix_add(tix_t *x, const char *key, size_t key_len, const char *text, size_t len, uint64_t version) {
  size_t off = x->keys.len;
  if (x->n == x->cap) {
    uint32_t cap = x->cap ? x->cap * 2 : 1024;
    size_t *ko = engram_realloc(x->key_off, cap * sizeof *ko);
    uint64_t *v;
    if (ko == NULL) return ENGRAM_ENOMEM;
    x->key_off = ko;
    if ((v = engram_realloc(x->version, cap * sizeof *v)) == NULL) return ENGRAM_ENOMEM;
    x->version = v;
    x->cap = cap;
  }
  engram__rbuf_raw(&x->keys, key, key_len);
  engram__rbuf_raw(&x->keys, "", 1);
  if (x->keys.failed || engram_text_index_put(x->ix, x->n, text, len) != 0) return ENGRAM_ENOMEM;
  x->key_off[x->n] = off;
  x->version[x->n] = version;
  x->n++;
  return 0;
}

static void tc_drop_index(engram__redis_t *r, tc_t *e) {
  if (e->tix == NULL) return;
  r->tc_items -= e->tix->n;
  tix_release(e->tix);
  e->tix = NULL;
}

static void tc_entry_free(engram__redis_t *r, tc_t *e) {
  tc_drop_index(r, e);
  engram_free(e->ns);
  engram_free(e->seen);
  engram_free(e);
}

void engram__redis_search_cache_free(engram__redis_t *r) {
  while (r->tc != NULL) {
    tc_t *e = r->tc;
    r->tc = e->next;
    tc_entry_free(r, e);
  }
  r->n_tc = 0;
  r->tc_items = 0;
}

/* The least recently used entry other than keep, or NULL: with_index, among the entries holding an index (to
 * drop it: a search using it keeps its own reference); else among those no search holds (to free them). */
static tc_t **tc_lru(engram__redis_t *r, const tc_t *keep, int with_index) {
  tc_t **pp, **best = NULL;
  for (pp = &r->tc; *pp != NULL; pp = &(*pp)->next) {
    tc_t *e = *pp;
    if (e == keep || (with_index ? e->tix == NULL : e->active > 0)) continue;
    if (best == NULL || e->used < (*best)->used) best = pp;
  }
  return best;
}

/* The namespace's entry, created when missing; NULL on ENOMEM. */
static tc_t *tc_get(engram__redis_t *r, const char *ns, size_t ns_len) {
  tc_t *e, **lru;
  for (e = r->tc; e != NULL; e = e->next)
    if (e->ns_len == ns_len && memcmp(e->ns, ns, ns_len) == 0) break;
  if (e == NULL) {
    if ((e = engram_calloc(1, sizeof *e)) == NULL) return NULL;
    if ((e->ns = engram_strndup(ns, ns_len)) == NULL) {
      engram_free(e);
      return NULL;
    }
    e->ns_len = ns_len;
    e->next = r->tc;
    r->tc = e;
    r->n_tc++;
    if (r->n_tc > TC_MAX_ENTRIES && (lru = tc_lru(r, e, 0)) != NULL) {
      tc_t *old = *lru;
      *lru = old->next;
      tc_entry_free(r, old);
      r->n_tc--;
    }
  }
  e->used = ++r->tc_tick;
  return e;
}

/* Keeps x as e's index, evicting the least recently used indexes of other namespaces beyond the item budget. */
static void tc_install(engram__redis_t *r, tc_t *e, tix_t *x) {
  tc_t **lru;
  tc_drop_index(r, e);
  while (r->tc_items + x->n > r->search_cache_items && (lru = tc_lru(r, e, 1)) != NULL) tc_drop_index(r, *lru);
  if (r->tc_items + x->n > r->search_cache_items) return;
  x->refs++;
  e->tix = x;
  r->tc_items += x->n;
}

static int same_gen(const char *a, size_t an, const char *b, size_t bn) {
  return a != NULL && b != NULL && an == bn && memcmp(a, b, an) == 0;
}

/* A generation as a number (BUMP_LUA's are decimal integers); -1 when it is not one. */
static int64_t gen_num(const char *g, size_t n) {
  int64_t v = 0;
  size_t i;
  if (g == NULL || n == 0 || n > 18) return -1;
  for (i = 0; i < n; i++) {
    if (g[i] < '0' || g[i] > '9') return -1;
    v = v * 10 + (g[i] - '0');
  }
  return v;
}

/* Whether generation b is generation a moved by exactly own bumps (our own writes, and nobody else's). */
static int gen_moved_by(const char *a, size_t an, uint64_t own, const char *b, size_t bn) {
  int64_t x, y;
  if (own == 0) return same_gen(a, an, b, bn);
  x = gen_num(a, an);
  y = gen_num(b, bn);
  return x >= 0 && y >= 0 && (uint64_t)(y - x) == own && y > x;
}

/* ---- Own writes: the cached index follows them ---- */

static uint32_t key_hash(const char *s, size_t n) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  size_t i;
  for (i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
  return (uint32_t)(h ^ (h >> 32));
}

static const char *tix_key(const tix_t *x, uint32_t doc) { return x->keys.p + x->key_off[doc]; }

/* The map position of key (a document + 1), or of the empty slot where it would go. */
static uint32_t kmap_pos(const tix_t *x, const char *key, size_t len, int *found) {
  uint32_t mask = x->kmap_cap - 1, i, e;
  for (i = key_hash(key, len) & mask; (e = x->kmap[i]) != 0; i = (i + 1) & mask) {
    const char *k = tix_key(x, e - 1);
    if (strncmp(k, key, len) == 0 && k[len] == '\0') {
      *found = 1;
      return i;
    }
  }
  *found = 0;
  return i;
}

/* (Re)makes the key map with room for n + 1 more documents. Returns 0 or ENGRAM_ENOMEM. */
static int kmap_make(tix_t *x) {
  uint32_t cap = 1024, d, *m;
  while (cap < 2u * (x->n + 1)) cap *= 2;
  if ((m = engram_calloc(cap, sizeof *m)) == NULL) return ENGRAM_ENOMEM;
  engram_free(x->kmap);
  x->kmap = m;
  x->kmap_cap = cap;
  for (d = 0; d < x->n; d++) {
    const char *k = tix_key(x, d);
    uint32_t i;
    if (x->key_off[d] == SIZE_MAX) continue;
    for (i = key_hash(k, strlen(k)) & (cap - 1); m[i] != 0; i = (i + 1) & (cap - 1)) {
    }
    m[i] = d + 1;
  }
  return 0;
}

/* Ties rank by key (the walk's order): documents added by own writes are numbered after the build's. */
static int tix_tie(uint64_t a, uint64_t b, void *ud) {
  const tix_t *x = ud;
  return strcmp(tix_key(x, (uint32_t)a), tix_key(x, (uint32_t)b));
}

/* The namespace's entry holding an index, or NULL. */
static tc_t *tc_find(engram__redis_t *r, const char *ns, size_t ns_len) {
  tc_t *e;
  for (e = r->tc; e != NULL; e = e->next)
    if (e->ns_len == ns_len && memcmp(e->ns, ns, ns_len) == 0) return e;
  return NULL;
}

/* Applies an own store of key (value, version, absolute expiry) to x. Returns 0 or ENGRAM_ENOMEM. */
static int tix_wrote(engram__redis_t *r, tix_t *x, const char *key, size_t key_len, const cJSON *value,
                     uint64_t version, int64_t expires) {
  uint32_t pos, doc;
  int found, rc;
  char *text;
  if ((x->kmap == NULL || 2u * (x->n + 1) > x->kmap_cap) && kmap_make(x) != 0) return ENGRAM_ENOMEM;
  pos = kmap_pos(x, key, key_len, &found);
  if ((text = engram_text_of(key, value)) == NULL) return ENGRAM_ENOMEM;
  if (found) {
    doc = x->kmap[pos] - 1;
    rc = engram_text_index_put(x->ix, doc, text, strlen(text));
    if (rc == 0) x->version[doc] = version;
  } else {
    doc = x->n;
    rc = tix_add(x, key, key_len, text, strlen(text), version);
    if (rc == 0) {
      x->kmap[pos] = doc + 1;
      x->zcard++; /* a new item's key joined the namespace index */
      r->tc_items++;
    }
  }
  engram_free(text);
  if (rc == 0 && expires > 0 && (x->min_expires == 0 || expires < x->min_expires)) x->min_expires = expires;
  return rc;
}

void engram__redis_search_wrote(engram__redis_t *r, const char *ns, size_t ns_len, const char *key, size_t key_len,
                                const cJSON *value, uint64_t version, int64_t expires) {
  tc_t *e = tc_find(r, ns, ns_len);
  if (e == NULL || e->tix == NULL) return;
  if (tix_wrote(r, e->tix, key, key_len, value, version, expires) != 0 || r->tc_items > r->search_cache_items)
    tc_drop_index(r, e);
}

void engram__redis_search_removed(engram__redis_t *r, const char *ns, size_t ns_len, const char *key, size_t key_len) {
  tc_t *e = tc_find(r, ns, ns_len);
  tix_t *x;
  uint32_t pos;
  int found;
  if (e == NULL || (x = e->tix) == NULL) return;
  if ((x->kmap == NULL || 2u * (x->n + 1) > x->kmap_cap) && kmap_make(x) != 0) {
    tc_drop_index(r, e);
    return;
  }
  pos = kmap_pos(x, key, key_len, &found);
  if (!found) return;
  /* The key leaves the map (shifting its cluster back) and the index; its bytes stay until the next build. */
  {
    uint32_t mask = x->kmap_cap - 1, i = pos, j = pos, doc = x->kmap[pos] - 1;
    for (;;) {
      uint32_t k;
      const char *kk;
      j = (j + 1) & mask;
      if (x->kmap[j] == 0) break;
      kk = tix_key(x, x->kmap[j] - 1);
      k = key_hash(kk, strlen(kk)) & mask;
      if (i <= j ? (i < k && k <= j) : (i < k || k <= j)) continue;
      x->kmap[i] = x->kmap[j];
      i = j;
    }
    x->kmap[i] = 0;
    engram_text_index_remove(x->ix, doc);
    x->key_off[doc] = SIZE_MAX;
  }
  x->zcard--;
  /* Mostly removed documents: cheaper to build again than to carry. */
  if (++x->dead > 1024 && x->dead > x->n / 2) tc_drop_index(r, e);
}

void engram__redis_search_bumped(engram__redis_t *r, const char *ns, size_t ns_len) {
  tc_t *e = tc_find(r, ns, ns_len);
  if (e == NULL) return;
  e->seen_own++;
  if (e->tix != NULL) e->tix->own++;
}

/* ---- A search ---- */

typedef struct ts_s ts_t;
typedef struct walk_batch_s walk_batch_t;

/* A batch of keys whose HMGETs are out; their replies come back in order and consume the keys in order. */
struct walk_batch_s {
  struct walk_batch_s *next;
  engram__rbuf_t keys; /* NUL-terminated */
  size_t *off;
  size_t n, cap, next_i;
};

/* A candidate being fetched in full. */
typedef struct {
  ts_t *t;
  engram__redis_held_t h;
} cand_t;

enum { PH_PROBE, PH_WALK, PH_POST, PH_FETCH };

struct ts_s {
  engram__redis_t *r;
  engram_request_t *req;
  int counting, filter, phase, exhausted, status;
  unsigned pending;
  char msg[320];
  engram__redis_rank_t *rk;
  engram__rbuf_t text;       /* the current item's indexed text */
  char *min;                 /* the lex range's lower bound still to read */
  size_t min_len, min_cap;
  walk_batch_t *wb_head, *wb_tail, *wb_spare; /* keys whose HMGETs are out, oldest first */
  int f_version, f_meta;     /* their positions in the HMGET fields (-1: not read) */
  int f_created;             /* created, then updated, with system-field ranges (-1: not read) */
  /* The cache: the namespace's entry (NULL when the cache does not apply), the index searched on a hit, the
   * one built during the walk, and what the probes read. */
  tc_t *tc;
  tix_t *use, *build;
  int64_t min_expires;
  char *gen, *gen2;
  size_t gen_len, gen2_len;
  int64_t zcard, zcard2;
  /* Candidates, best first: positions in the scorer's matching items (walk) or index document ids (hit). */
  engram_text_hit_t *ranked;
  size_t n_ranked, pos;
  cand_t *cands;
  size_t n_cands;
  uint64_t added;
};

static void walk_start(ts_t *t);
static void settle(ts_t *t);
static void batch_free(walk_batch_t *b);

static void cands_free(ts_t *t) {
  size_t i;
  for (i = 0; i < t->n_cands; i++) engram__redis_held_release(&t->cands[i].h);
  engram_free(t->cands);
  t->cands = NULL;
  t->n_cands = 0;
}

static void build_abandon(ts_t *t) {
  if (t->build == NULL) return;
  tix_release(t->build);
  t->build = NULL;
  if (t->tc != NULL) t->tc->building = 0;
}

static void ts_finish(ts_t *t, int status) {
  engram__redis_t *r = t->r;
  engram_request_t *req = t->req;
  char msg[320];
  if (status == 0) status = t->status;
  memcpy(msg, t->msg, sizeof msg);
  build_abandon(t);
  if (t->tc != NULL) t->tc->active--;
  tix_release(t->use);
  cands_free(t);
  engram_free(t->ranked);
  engram_free(t->gen);
  engram_free(t->gen2);
  engram_free(t->min);
  while (t->wb_head != NULL) {
    walk_batch_t *b = t->wb_head;
    t->wb_head = b->next;
    batch_free(b);
  }
  if (t->wb_spare != NULL) batch_free(t->wb_spare);
  engram__rbuf_free(&t->text);
  engram__redis_rank_free(t->rk);
  engram_free(t);
  req->backend_data = NULL;
  if (status != 0 && msg[0] != '\0') engram__redis_finish(r, req, status, "%s", msg);
  else engram__redis_finish(r, req, status, NULL);
}

/* Records the first error (later ones are consequences), with its message unless the caller wrote one. */
static void ts_error(ts_t *t, const redisAsyncContext *ac, int status, const redisReply *reply) {
  if (t->status != 0) return;
  t->status = status;
  if (t->msg[0] != '\0') return;
  if (status == ENGRAM_EUNAVAILABLE) engram__redis_why(t->r, ac, t->msg, sizeof t->msg);
  else if (reply != NULL && reply->type == REDIS_REPLY_ERROR)
    snprintf(t->msg, sizeof t->msg, "redis: %.*s", (int)(reply->len > 300 ? 300 : reply->len), reply->str);
  else if (status == ENGRAM_EBACKEND) snprintf(t->msg, sizeof t->msg, "unexpected reply from redis");
}

static void send_or_fail(ts_t *t, redisCallbackFn *fn, void *pd) {
  int rc = engram__redis_send(t->r, fn, pd);
  if (rc != 0) ts_error(t, NULL, rc, NULL);
  else t->pending++;
}

/* One callback of the search came back: the next step once none is out. */
static void came_back(ts_t *t) {
  if (--t->pending == 0) settle(t);
}

/* ---- Probes: the generation and the index's size ---- */

/* GET of the generation: a string, or nil (never bumped) — anything else (a key some other tool made) also
 * means no generation: no cache. */
static void on_gen(redisAsyncContext *ac, void *rep, void *pd) {
  ts_t *t = pd;
  redisReply *reply = rep;
  if (reply == NULL) {
    ts_error(t, ac, ENGRAM_EUNAVAILABLE, NULL);
  } else if (reply->type == REDIS_REPLY_STRING) {
    char *g = engram_strndup(reply->str, reply->len);
    if (g == NULL) ts_error(t, NULL, ENGRAM_ENOMEM, NULL);
    *(t->phase == PH_POST ? &t->gen2 : &t->gen) = g;
    *(t->phase == PH_POST ? &t->gen2_len : &t->gen_len) = reply->len;
  }
  came_back(t);
}

static void on_zcard(redisAsyncContext *ac, void *rep, void *pd) {
  ts_t *t = pd;
  redisReply *reply = rep;
  if (reply == NULL) ts_error(t, ac, ENGRAM_EUNAVAILABLE, NULL);
  else if (reply->type == REDIS_REPLY_INTEGER) *(t->phase == PH_POST ? &t->zcard2 : &t->zcard) = reply->integer;
  else ts_error(t, ac, ENGRAM_EBACKEND, reply);
  came_back(t);
}

/* GET generation + ZCARD index, pipelined: one round trip. */
static void probe_send(ts_t *t) {
  engram__redis_t *r = t->r;
  engram__rbuf_reset(&r->cmd);
  engram__rbuf_array(&r->cmd, 2);
  engram__rbuf_arg(&r->cmd, "GET", 3);
  engram__redis_arg_gen(r, &r->cmd, t->req->ns, t->req->ns_len);
  send_or_fail(t, on_gen, t);
  if (t->status != 0) return;
  engram__rbuf_reset(&r->cmd);
  engram__rbuf_array(&r->cmd, 2);
  engram__rbuf_arg(&r->cmd, "ZCARD", 5);
  engram__redis_arg_index(r, &r->cmd, t->req->ns, t->req->ns_len);
  send_or_fail(t, on_zcard, t);
}

/* Whether the walk should build an index: the namespace has a generation, fits the budget, nobody builds it,
 * and it is new to the cache or unchanged since the previous search. Called with the entry's previous seen. */
static void maybe_build(ts_t *t, const char *seen, size_t seen_len, uint64_t seen_own, int first) {
  engram__redis_t *r = t->r;
  tc_t *e = t->tc;
  if (t->gen == NULL || t->zcard < 0 || (uint64_t)t->zcard > r->search_cache_items || e->building) return;
  if (!first && !gen_moved_by(seen, seen_len, seen_own, t->gen, t->gen_len)) return;
  if ((t->build = tix_new()) == NULL) return; /* no cache this time */
  e->building = 1;
  t->min_expires = 0;
}

/* ---- Candidates ---- */

static void on_cand(redisAsyncContext *ac, void *rep, void *pd) {
  cand_t *c = pd;
  ts_t *t = c->t;
  redisReply *reply = rep;
  engram__redis_fields_t fl;
  if (reply == NULL) {
    ts_error(t, ac, ENGRAM_EUNAVAILABLE, NULL);
  } else if (reply->type == REDIS_REPLY_ERROR || engram__redis_parse_fields(reply, engram_now_ms(), &fl) != 0) {
    ts_error(t, ac, ENGRAM_EBACKEND, reply);
  } else if (t->status == 0 && engram__redis_held_take(&c->h, &fl) != 0) {
    ts_error(t, NULL, ENGRAM_ENOMEM, NULL);
  }
  came_back(t);
}

static const char *cand_key(const ts_t *t, size_t pos) {
  uint64_t doc = t->ranked[pos].doc;
  if (t->use != NULL) return t->use->keys.p + t->use->key_off[doc];
  return engram__redis_rank_key(t->rk, (uint32_t)doc);
}

/* Picks the best m matching items of the walk into t->ranked. Returns 0 or ENGRAM_ENOMEM. */
static int select_top(ts_t *t, size_t m) {
  uint32_t *top;
  size_t i, n;
  engram_text_hit_t *h;
  if (m > engram__redis_rank_matching(t->rk)) m = engram__redis_rank_matching(t->rk);
  if ((top = engram_malloc((m ? m : 1) * sizeof *top)) == NULL) return ENGRAM_ENOMEM;
  if ((h = engram_malloc((m ? m : 1) * sizeof *h)) == NULL) {
    engram_free(top);
    return ENGRAM_ENOMEM;
  }
  n = engram__redis_rank_top(t->rk, m, top);
  for (i = 0; i < n; i++) {
    h[i].doc = top[i];
    h[i].score = engram__redis_rank_score_of(t->rk, top[i]);
  }
  engram_free(top);
  engram_free(t->ranked);
  t->ranked = h;
  t->n_ranked = n;
  return 0;
}

static void done(ts_t *t) {
  engram_reply_set_count(t->req, t->added);
  ts_finish(t, 0);
}

/* Fetches the next candidates: as many as results are still wanted, best first, down to min_score. */
static void fetch_next(ts_t *t) {
  const engram_query_t *q = &t->req->query;
  size_t want = (size_t)q->limit - (size_t)t->added, n = 0, i;
  engram__redis_t *r = t->r;
  if (t->use == NULL && t->pos + want > t->n_ranked && t->n_ranked < engram__redis_rank_matching(t->rk)) {
    /* Items gone since the walk were skipped: rank further down. */
    if (select_top(t, t->pos + want + t->n_ranked + 16) != 0) {
      ts_finish(t, ENGRAM_ENOMEM);
      return;
    }
  }
  while (t->pos + n < t->n_ranked && n < want && t->ranked[t->pos + n].score >= q->min_score) n++;
  if (n == 0) {
    done(t);
    return;
  }
  if ((t->cands = engram_calloc(n, sizeof *t->cands)) == NULL) {
    ts_finish(t, ENGRAM_ENOMEM);
    return;
  }
  t->n_cands = n;
  t->phase = PH_FETCH;
  for (i = 0; i < n && t->status == 0; i++) {
    const char *key = cand_key(t, t->pos + i);
    t->cands[i].t = t;
    engram__rbuf_reset(&r->cmd);
    engram__redis_build_hmget(r, &r->cmd, t->req->ns, t->req->ns_len, key, strlen(key));
    send_or_fail(t, on_cand, &t->cands[i]);
  }
  if (t->pending == 0) ts_finish(t, 0);
}

static int add_cand(ts_t *t, size_t i) {
  const char *key = cand_key(t, t->pos + i);
  engram__redis_fields_t fl = engram__redis_held_fields(&t->cands[i].h);
  int rc = engram__redis_add_item(t->req, key, t->req->ns, &fl, 1, 1, t->ranked[t->pos + i].score);
  if (rc == ENGRAM_EBACKEND) snprintf(t->msg, sizeof t->msg, "key '%s': the stored item is not valid JSON", key);
  if (rc == 0) t->added++;
  return rc;
}

static void fetch_settled(ts_t *t) {
  size_t i;
  int rc = 0;
  if (t->use != NULL) {
    /* A hit: every candidate must be the item indexed, or the index is stale (a write behind engram's back). */
    for (i = 0; i < t->n_cands; i++)
      if (t->cands[i].h.state != 1 || t->cands[i].h.version != t->use->version[t->ranked[t->pos + i].doc]) break;
    if (i < t->n_cands) {
      engram__redis_t *r = t->r;
      r->search_stale++;
      if (t->tc->tix == t->use) tc_drop_index(r, t->tc);
      tix_release(t->use);
      t->use = NULL;
      cands_free(t);
      engram_free(t->ranked);
      t->ranked = NULL;
      t->n_ranked = t->pos = 0;
      maybe_build(t, t->gen, t->gen_len, 0, 0);
      walk_start(t);
      return;
    }
  }
  for (i = 0; i < t->n_cands && rc == 0; i++)
    if (t->cands[i].h.state == 1) rc = add_cand(t, i);
  t->pos += t->n_cands;
  cands_free(t);
  if (rc != 0) {
    ts_finish(t, rc);
    return;
  }
  if (t->added < (uint64_t)t->req->query.limit) fetch_next(t);
  else done(t);
}

/* The walk is over (and scored): count, or fetch the best items. */
static void results(ts_t *t) {
  const engram_query_t *q = &t->req->query;
  if (t->counting) {
    engram_reply_set_count(t->req, engram__redis_rank_count(t->rk, q->min_score));
    ts_finish(t, 0);
    return;
  }
  if (select_top(t, (size_t)q->offset + (size_t)q->limit) != 0) {
    ts_finish(t, ENGRAM_ENOMEM);
    return;
  }
  t->pos = (size_t)q->offset;
  fetch_next(t);
}

/* A hit: the cached index answers, the candidates are checked against Redis. */
static void hit(ts_t *t) {
  const engram_query_t *q = &t->req->query;
  tix_t *x = t->tc->tix;
  size_t k = t->counting ? x->n : (size_t)q->offset + (size_t)q->limit, n = 0, i;
  t->use = x;
  x->refs++;
  t->r->search_hits++;
  if (k > x->n) k = x->n;
  if (k > 0 && (t->ranked = engram_malloc(k * sizeof *t->ranked)) == NULL) {
    ts_finish(t, ENGRAM_ENOMEM);
    return;
  }
  if (k > 0 && engram_text_index_search(x->ix, q->text, k, NULL, tix_tie, x, t->ranked, &n) != 0) {
    ts_finish(t, ENGRAM_ENOMEM);
    return;
  }
  t->n_ranked = n;
  if (t->counting) {
    for (i = 0; i < n && t->ranked[i].score >= q->min_score; i++) {
    }
    engram_reply_set_count(t->req, i);
    ts_finish(t, 0);
    return;
  }
  t->pos = (size_t)q->offset;
  fetch_next(t);
}

static void probe_settled(ts_t *t) {
  tc_t *e = t->tc;
  tix_t *x = e->tix;
  char *seen = e->seen;
  size_t seen_len = e->seen_len;
  uint64_t seen_own = e->seen_own;
  int first = seen == NULL && x == NULL;
  if (x != NULL) {
    if (gen_moved_by(x->gen, x->gen_len, x->own, t->gen, t->gen_len) && x->zcard == t->zcard &&
        (x->min_expires == 0 || engram_now_ms() < x->min_expires)) {
      hit(t);
      return;
    }
    tc_drop_index(t->r, e); /* stale: the namespace changed, or an item expired */
  }
  /* Remember this generation for the next search's decision. */
  e->seen = NULL;
  e->seen_len = 0;
  e->seen_own = 0;
  if (t->gen != NULL && (e->seen = engram_strndup(t->gen, t->gen_len)) != NULL) e->seen_len = t->gen_len;
  maybe_build(t, seen, seen_len, seen_own, first);
  engram_free(seen);
  walk_start(t);
}

/* The post-build probe is back: keep the index when the generation did not move during the walk. */
static void post_settled(ts_t *t) {
  engram__redis_t *r = t->r;
  tix_t *x = t->build;
  if (same_gen(t->gen, t->gen_len, t->gen2, t->gen2_len)) {
    x->gen = t->gen;
    x->gen_len = t->gen_len;
    t->gen = NULL;
    x->zcard = t->zcard2;
    x->min_expires = t->min_expires;
    tc_install(r, t->tc, x);
    if (t->tc->tix == x) r->search_builds++;
  }
  build_abandon(t);
  results(t);
}

/* ---- The walk ---- */

static void batch_free(walk_batch_t *b) {
  engram__rbuf_free(&b->keys);
  engram_free(b->off);
  engram_free(b);
}

/* Adds a key to the batch being sent (the last one). Returns 0 or ENGRAM_ENOMEM. */
static int batch_push(ts_t *t, const char *key, size_t len) {
  walk_batch_t *b = t->wb_tail;
  if (b->n == b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 64, *off = engram_realloc(b->off, cap * sizeof *off);
    if (off == NULL) return ENGRAM_ENOMEM;
    b->off = off;
    b->cap = cap;
  }
  b->off[b->n] = b->keys.len;
  engram__rbuf_raw(&b->keys, key, len);
  engram__rbuf_raw(&b->keys, "", 1);
  if (b->keys.failed) return ENGRAM_ENOMEM;
  b->n++;
  return 0;
}

/* The key of the oldest HMGET still out (consumed). */
static const char *batch_pop(ts_t *t, size_t *len) {
  walk_batch_t *b = t->wb_head;
  const char *k;
  while (b != NULL && b->next_i == b->n && b->next != NULL) { /* a batch fully consumed: recycle it */
    t->wb_head = b->next;
    if (t->wb_spare == NULL) {
      engram__rbuf_reset(&b->keys);
      b->n = b->next_i = 0;
      b->next = NULL;
      t->wb_spare = b;
    } else {
      batch_free(b);
    }
    b = t->wb_head;
  }
  if (b == NULL || b->next_i == b->n) return NULL;
  k = b->keys.p + b->off[b->next_i];
  *len = (b->next_i + 1 < b->n ? b->off[b->next_i + 1] : b->keys.len) - b->off[b->next_i] - 1;
  b->next_i++;
  return k;
}

static int batch_new(ts_t *t) {
  walk_batch_t *b = t->wb_spare;
  if (b != NULL) t->wb_spare = NULL;
  else if ((b = engram_calloc(1, sizeof *b)) == NULL) return ENGRAM_ENOMEM;
  if (t->wb_tail != NULL) t->wb_tail->next = b;
  else t->wb_head = b;
  t->wb_tail = b;
  return 0;
}

static int set_min(ts_t *t, char mark, const char *s, size_t n) {
  return engram__redis_set_bound(&t->min, &t->min_cap, &t->min_len, mark, s, n);
}

static void on_keys(redisAsyncContext *ac, void *rep, void *pd);
static void on_item(redisAsyncContext *ac, void *rep, void *pd);

/* ZRANGEBYLEX of the next scan_batch members of the index. */
static void keys_send(ts_t *t) {
  engram__redis_t *r = t->r;
  engram__rbuf_t *b = &r->cmd;
  engram__rbuf_reset(b);
  engram__rbuf_array(b, 7);
  engram__rbuf_arg(b, "ZRANGEBYLEX", 11);
  engram__redis_arg_index(r, b, t->req->ns, t->req->ns_len);
  engram__rbuf_arg(b, t->min, t->min_len);
  engram__rbuf_arg(b, "+", 1);
  engram__rbuf_arg(b, "LIMIT", 5);
  engram__rbuf_arg(b, "0", 1);
  engram__rbuf_arg_i64(b, (int64_t)r->scan_batch);
  send_or_fail(t, on_keys, t);
}

/* HMGET of the fields the search needs: value and expires; version when an index is built; metadata when
 * there is a filter. */
static void item_send(ts_t *t, const char *key, size_t len) {
  engram__redis_t *r = t->r;
  engram__rbuf_t *b = &r->cmd;
  engram__rbuf_reset(b);
  engram__rbuf_array(b, 4 + (size_t)(t->build != NULL) + (size_t)t->filter + (t->f_created >= 0 ? 2u : 0u));
  engram__rbuf_arg(b, "HMGET", 5);
  engram__redis_arg_item(r, b, t->req->ns, t->req->ns_len, key, len);
  engram__rbuf_arg(b, "value", 5);
  engram__rbuf_arg(b, "expires", 7);
  if (t->build != NULL) engram__rbuf_arg(b, "version", 7);
  if (t->filter) engram__rbuf_arg(b, "metadata", 8);
  if (t->f_created >= 0) {
    engram__rbuf_arg(b, "created", 7);
    engram__rbuf_arg(b, "updated", 7);
  }
  send_or_fail(t, on_item, t);
}

static void walk_start(ts_t *t) {
  t->phase = PH_WALK;
  t->exhausted = 0;
  t->f_version = t->build != NULL ? 2 : -1;
  t->f_meta = t->filter ? (t->build != NULL ? 3 : 2) : -1;
  t->f_created = (t->req->flags & ENGRAM_OPT_RANGES) ? 2 + (t->build != NULL) + t->filter : -1;
  if (set_min(t, '-', "", 0) != 0) {
    ts_finish(t, ENGRAM_ENOMEM);
    return;
  }
  t->r->search_walks++;
  keys_send(t);
  if (t->pending == 0) ts_finish(t, 0);
}

/* A batch of index members: ask for the next batch first, then for the items (so Redis reads the next keys and
 * these items while this thread scores the previous batch). */
static void on_keys(redisAsyncContext *ac, void *rep, void *pd) {
  ts_t *t = pd;
  const engram_query_t *q = &t->req->query;
  redisReply *reply = rep;
  size_t i, n;
  int rc = 0;
  if (reply == NULL) {
    ts_error(t, ac, ENGRAM_EUNAVAILABLE, NULL);
  } else if (reply->type != REDIS_REPLY_ARRAY) {
    ts_error(t, ac, ENGRAM_EBACKEND, reply);
  } else if (t->status == 0) {
    n = reply->elements;
    if (n < t->r->scan_batch) t->exhausted = 1;
    else if (reply->element[n - 1]->type != REDIS_REPLY_STRING ||
             (rc = set_min(t, '(', reply->element[n - 1]->str, reply->element[n - 1]->len)) != 0)
      ts_error(t, ac, rc ? rc : ENGRAM_EBACKEND, NULL);
    else if (engram_request_answered(t->req)) ts_error(t, NULL, ENGRAM_ECANCELED, NULL);
    else keys_send(t);
    if (t->status == 0 && n > 0 && (rc = batch_new(t)) != 0) ts_error(t, NULL, rc, NULL);
    for (i = 0; i < n && t->status == 0; i++) {
      const redisReply *k = reply->element[i];
      if (k->type != REDIS_REPLY_STRING || !engram_utf8_valid(k->str, k->len)) continue; /* not written by engram */
      if (q->pattern != NULL && !engram_pattern_match(q->pattern, k->str, k->len)) continue;
      if ((rc = batch_push(t, k->str, k->len)) != 0) ts_error(t, NULL, rc, NULL);
      else item_send(t, k->str, k->len);
    }
  }
  came_back(t);
}

/* One item of the walk, in key order: f holds its HMGET fields. Returns 0 or an error. */
static int walk_item(ts_t *t, const char *key, size_t key_len, redisReply *const *f, int64_t now) {
  const engram_query_t *q = &t->req->query;
  int64_t expires;
  uint64_t version = 0;
  int rc;
  if (f[0]->type != REDIS_REPLY_STRING) return 0; /* gone, or no value */
  expires = engram__redis_int(f[1], 0);
  if (expires > 0 && expires <= now) return 0;
  if (t->f_created >= 0 && !engram_request_in_ranges(t->req, engram__redis_int(f[t->f_created], 0),
                                                     engram__redis_int(f[t->f_created + 1], 0), expires))
    return 0;
  if (t->f_version >= 0) version = (uint64_t)engram__redis_int(f[t->f_version], 0);
  if (t->filter) {
    const redisReply *m = f[t->f_meta];
    cJSON *meta = NULL;
    int ok;
    if (m->type == REDIS_REPLY_STRING && m->len > 0 && (rc = engram__redis_parse_json(m->str, m->len, &meta)) != 0) {
      if (rc == ENGRAM_EBACKEND) snprintf(t->msg, sizeof t->msg, "key '%s': the stored metadata is not valid JSON", key);
      return rc;
    }
    ok = engram_filter_match(q->filter, meta);
    cJSON_Delete(meta);
    if (!ok) return 0;
  }
  /* Without an index to build, the text is tokenized where it lies in the reply. */
  if (t->build == NULL && (rc = engram__redis_rank_add_json(t->rk, key, key_len, f[0]->str, f[0]->len, version)) != 1)
    return rc;
  if ((rc = engram__redis_text_of(&t->text, key, key_len, f[0]->str, f[0]->len)) != 0) {
    if (rc == ENGRAM_EBACKEND) snprintf(t->msg, sizeof t->msg, "key '%s': the stored value is not valid JSON", key);
    return rc;
  }
  if ((rc = engram__redis_rank_add(t->rk, key, key_len, t->text.p, t->text.len, version)) != 0) return rc;
  if (t->build != NULL) {
    if (tix_add(t->build, key, key_len, t->text.p, t->text.len, version) != 0) build_abandon(t);
    else if (expires > 0 && (t->min_expires == 0 || expires < t->min_expires)) t->min_expires = expires;
  }
  return 0;
}

static void on_item(redisAsyncContext *ac, void *rep, void *pd) {
  ts_t *t = pd;
  redisReply *reply = rep;
  size_t len = 0, nf = 2 + (size_t)(t->f_version >= 0) + (size_t)(t->f_meta >= 0) + (t->f_created >= 0 ? 2u : 0u);
  const char *key = batch_pop(t, &len);
  int rc;
  if (reply == NULL) {
    ts_error(t, ac, ENGRAM_EUNAVAILABLE, NULL);
  } else if (reply->type != REDIS_REPLY_ARRAY || reply->elements != nf || key == NULL) {
    ts_error(t, ac, ENGRAM_EBACKEND, reply);
  } else if (t->status == 0 && (rc = walk_item(t, key, len, reply->element, engram_now_ms())) != 0) {
    ts_error(t, NULL, rc, NULL);
  }
  came_back(t);
}

static void walk_settled(ts_t *t) {
  engram__redis_rank_score(t->rk);
  if (t->build == NULL) {
    results(t);
    return;
  }
  /* Built: read the generation again before keeping the index. */
  t->phase = PH_POST;
  probe_send(t);
  if (t->pending == 0) ts_finish(t, 0);
}

/* Nothing is out any more: the next step of the phase, or the end after an error. */
static void settle(ts_t *t) {
  if (t->status != 0) {
    ts_finish(t, 0);
    return;
  }
  switch (t->phase) {
    case PH_PROBE: probe_settled(t); break;
    case PH_WALK: walk_settled(t); break;
    case PH_POST: post_settled(t); break;
    default: fetch_settled(t); break;
  }
}

void engram__redis_text_search(engram__redis_t *r, engram_request_t *req) {
  const engram_query_t *q = &req->query;
  ts_t *t = engram_calloc(1, sizeof *t);
  if (t == NULL || engram__redis_rank_new(q->text, &t->rk) != 0) {
    engram_free(t);
    engram__redis_finish(r, req, ENGRAM_ENOMEM, NULL);
    return;
  }
  t->r = r;
  t->req = req;
  req->backend_data = t;
  t->counting = req->op == ENGRAM_OP_COUNT;
  t->filter = q->filter != NULL;
  t->zcard = t->zcard2 = -1;
  t->f_created = -1;
  if (r->search_cache_items > 0 && q->filter == NULL && q->pattern == NULL && !(req->flags & ENGRAM_OPT_RANGES) &&
      (t->tc = tc_get(r, req->ns, req->ns_len)) != NULL) {
    t->tc->active++;
    t->phase = PH_PROBE;
    probe_send(t);
    if (t->pending == 0) ts_finish(t, 0);
    return;
  }
  walk_start(t);
}
