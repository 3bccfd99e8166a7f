/*
 * postgres_text.c — the PostgreSQL source's text indexes (postgres_text.h): one in-memory BM25 index of the core
 * (engram_text_index: its tokenizer, its k1 and b, its scores) per namespace searched, so a query ranks the same
 * items the same way here as on every other source, in well under a millisecond, and the write path carries no
 * text index at all (no tsvector column, no GIN index: schema version 2, postgres_sql.c).
 *
 * Keeping it current. Every row carries chg, the id of the transaction that last wrote it (txid_current(), set by
 * engram's statements, by the column's default, and by a trigger for another program's UPDATE that leaves it as
 * it was), and a statement trigger copies every deleted key into <table>_gone with the deleting transaction's id
 * (a TRUNCATE leaves a NULL key). Before each search, one statement (PGS_TEXT_SYNC) reads the rows and deleted
 * keys with chg >= w (through indexes on chg), plus the xmin of its own snapshot: every transaction below that xmin is over, and was
 * visible to the statement if it committed, so the next sync starts there (w = that xmin). Transactions still
 * running are read again by the next syncs until they end; so a search sees every write acknowledged before it
 * was submitted — this process's (its statements commit before their callback) or another's. Transaction ids
 * rather than a sequence: a sequence's numbers are taken before commit, in another order than commits, and a
 * number below the highest one seen could still appear; a snapshot's xmin is the one bound that is sound.
 *
 * Applying a sync: deleted keys first (a document goes when its chg is not newer than the delete's), then rows
 * (a row replaces the document when its chg is not older than the document's: the same transaction can write a
 * row twice). The first sync of a namespace reads all its rows instead (PGS_TEXT_BUILD): the build, in chunks of
 * BUILD_CHUNK rows in key order, one statement each, so the loop indexes one chunk at a time; the next syncs
 * start at the first chunk's xmin, so whatever changed while the later chunks were read is read again. Searches arriving
 * while a build is out wait for it, then sync. An index not synced for half of the time <table>_gone keeps keys
 * (PG_GONE_KEEP_MS; the sweep forgets older ones) is built again, since deletes it never saw may be forgotten.
 *
 * Documents are slots (reused after a delete) holding the key and the system fields that a search's pattern,
 * expiry and ranges test; a key map finds a key's slot. Expired rows stay indexed until the sweep deletes them
 * (their tokens count in BM25's statistics until then; a search never returns them).
 */
#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#include "postgres_op.h"
#include "postgres_text.h"

#define STALE_MS (3600000 / 2) /* half of PG_GONE_KEEP_MS */

typedef struct {
  char *key; /* NULL: a free slot */
  uint32_t key_len;
  int64_t chg, created, updated, expires;
} tdoc_t;

typedef struct waiter_s {
  struct waiter_s *next;
  pgc_t *c;
  engram_request_t *req;
  pg_tix_done_fn done;
  void *ud;
} waiter_t;

struct pg_tix_s {
  struct pg_tix_s *next;
  char *ns;
  size_t ns_len;
  engram_text_index_t *ix;
  tdoc_t *docs;
  uint32_t n, cap, live;  /* slots used, allocated, holding a document */
  uint32_t *free_slots, n_free, cap_free;
  uint32_t *kmap, kmap_cap; /* key -> slot + 1, open addressing */
  int64_t w;               /* the next sync reads chg >= w; INT64_MIN: not built */
  int64_t trunc_seen;      /* the newest TRUNCATE applied */
  uint64_t synced_at;      /* uv_now of the last sync applied */
  int building;
  waiter_t *waiters, **waiters_tail;
  uint64_t bytes;          /* measured at the build (mallinfo2), plus keys added since */
  unsigned users;          /* searches holding it (engram__pg_tix_get .. engram__pg_tix_release) */
  uint64_t used;           /* pg->tix_tick at its last get */
  uint64_t gen;            /* bumped by every change of the documents: a ranking made at gen g holds while gen == g */
  int quiet;               /* the last sync changed nothing (a search may rank while the next sync is in flight) */
};

typedef struct {
  pg_t *pg;
  pg_tix_t *tix;
  pg_tix_done_fn done;
  void *ud;
  int build;
  pgc_t *c;             /* the connection (a build's next chunk goes there) */
  engram_request_t *req;
  char *after;          /* a build's last key read */
  int64_t xmin0;        /* the xmin of a build's first chunk: where the first sync starts */
  uint64_t gen0;        /* the index's gen when the sync was sent */
} sync_t;

#define BUILD_CHUNK 4000 /* rows a build reads (and indexes on the loop) per statement */

static void sync_done(pg_op_t *op, int status, PGresult *res, const char *msg);

static uint32_t key_hash(const char *s, size_t n) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  size_t i;
  for (i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
  return (uint32_t)(h ^ (h >> 32));
}

static void tix_free(pg_tix_t *t);

/* Frees the least recently used indexes no search holds, other than keep, while all hold more than the budget. */
static void tix_evict(pg_t *pg, const pg_tix_t *keep) {
  uint64_t total = 0;
  pg_tix_t *t;
  if (pg->text_index_items == 0) return;
  for (t = pg->tix; t != NULL; t = t->next) total += t->live;
  while (total > pg->text_index_items) {
    pg_tix_t **pp, **lru = NULL, *gone;
    for (pp = &pg->tix; *pp != NULL; pp = &(*pp)->next)
      if (*pp != keep && (*pp)->users == 0 && !(*pp)->building && (lru == NULL || (*pp)->used < (*lru)->used)) lru = pp;
    if (lru == NULL) return;
    gone = *lru;
    *lru = gone->next;
    total -= gone->live;
    tix_free(gone);
  }
}

pg_tix_t *engram__pg_tix_get(pg_t *pg, const char *ns, size_t ns_len) {
  pg_tix_t *t;
  for (t = pg->tix; t != NULL; t = t->next)
    if (t->ns_len == ns_len && memcmp(t->ns, ns, ns_len) == 0) break;
  if (t != NULL) {
    t->users++;
    t->used = ++pg->tix_tick;
    tix_evict(pg, t);
    return t;
  }
  if ((t = engram_calloc(1, sizeof *t)) == NULL) return NULL;
  if ((t->ns = engram_malloc(ns_len + 1)) == NULL || engram_text_index_new(&t->ix) != 0) {
    engram_free(t->ns);
    engram_free(t);
    return NULL;
  }
  memcpy(t->ns, ns, ns_len);
  t->ns[ns_len] = '\0';
  t->ns_len = ns_len;
  t->w = INT64_MIN;
  t->trunc_seen = INT64_MIN;
  t->waiters_tail = &t->waiters;
  t->next = pg->tix;
  pg->tix = t;
  t->users = 1;
  t->used = ++pg->tix_tick;
  tix_evict(pg, t);
  return t;
}

void engram__pg_tix_release(pg_tix_t *tix) {
  if (tix != NULL && tix->users > 0) tix->users--;
}

/* Empties t (its documents, its map); it is built again by the next sync. */
static void tix_reset(pg_tix_t *t) {
  uint32_t i, n = t->n;
  engram_text_index_t *ix;
  if (engram_text_index_new(&ix) == 0) {
    engram_text_index_free(t->ix);
    t->ix = ix;
  } else { /* out of memory: remove the documents one by one instead (the index keeps its capacity) */
    for (i = 0; i < n; i++) engram_text_index_remove(t->ix, i);
  }
  for (i = 0; i < n; i++) engram_free(t->docs[i].key);
  engram_free(t->docs);
  engram_free(t->free_slots);
  engram_free(t->kmap);
  t->docs = NULL;
  t->free_slots = t->kmap = NULL;
  t->n = t->cap = t->live = t->n_free = t->cap_free = t->kmap_cap = 0;
  t->w = INT64_MIN;
  t->bytes = 0;
  t->gen++;
  t->quiet = 0;
}

static void tix_free(pg_tix_t *t) {
  uint32_t i;
  for (i = 0; i < t->n; i++) engram_free(t->docs[i].key);
  engram_free(t->docs);
  engram_free(t->free_slots);
  engram_free(t->kmap);
  engram_text_index_free(t->ix);
  engram_free(t->ns);
  engram_free(t);
}

void engram__pg_tix_free_all(pg_t *pg) {
  while (pg->tix != NULL) {
    pg_tix_t *t = pg->tix;
    pg->tix = t->next;
    while (t->waiters != NULL) { /* none once the pool is closed; never left behind in any case */
      waiter_t *w = t->waiters;
      t->waiters = w->next;
      w->done(w->ud, ENGRAM_ECANCELED, "the source closed");
      engram_free(w);
    }
    tix_free(t);
  }
}

/* ---- The key map ---- */

/* The map position of key (holding its slot + 1), or of the empty entry where it would go. */
static uint32_t kmap_pos(const pg_tix_t *t, const char *key, size_t len, int *found) {
  uint32_t mask = t->kmap_cap - 1, i, e;
  for (i = key_hash(key, len) & mask; (e = t->kmap[i]) != 0; i = (i + 1) & mask) {
    const tdoc_t *d = &t->docs[e - 1];
    if (d->key_len == len && memcmp(d->key, key, len) == 0) {
      *found = 1;
      return i;
    }
  }
  *found = 0;
  return i;
}

/* Room in the map for one more key (the map stays at most half full). Returns 0 or ENGRAM_ENOMEM. */
static int kmap_room(pg_tix_t *t) {
  uint32_t cap = t->kmap_cap ? t->kmap_cap : 1024, s, *m;
  if (t->kmap != NULL && 2u * (t->live + 1) <= t->kmap_cap) return 0;
  while (cap < 2u * (t->live + 1)) cap *= 2;
  if ((m = engram_calloc(cap, sizeof *m)) == NULL) return ENGRAM_ENOMEM;
  for (s = 0; s < t->n; s++) {
    const tdoc_t *d = &t->docs[s];
    uint32_t i;
    if (d->key == NULL) continue;
    for (i = key_hash(d->key, d->key_len) & (cap - 1); m[i] != 0; i = (i + 1) & (cap - 1)) {
    }
    m[i] = s + 1;
  }
  engram_free(t->kmap);
  t->kmap = m;
  t->kmap_cap = cap;
  return 0;
}

/* Removes the map entry at pos, moving later entries of its cluster back (linear probing). */
static void kmap_delete(pg_tix_t *t, uint32_t pos) {
  uint32_t mask = t->kmap_cap - 1, i = pos, j = pos;
  for (;;) {
    uint32_t k;
    const tdoc_t *d;
    j = (j + 1) & mask;
    if (t->kmap[j] == 0) break;
    d = &t->docs[t->kmap[j] - 1];
    k = key_hash(d->key, d->key_len) & mask;
    if (i <= j ? (i < k && k <= j) : (i < k || k <= j)) continue;
    t->kmap[i] = t->kmap[j];
    i = j;
  }
  t->kmap[i] = 0;
}

/* ---- Applying a sync ---- */

/* A deleted key: its document goes unless a newer write put it back. */
static void apply_gone(pg_tix_t *t, const char *key, size_t len, int64_t chg) {
  uint32_t pos, slot;
  int found;
  if (t->kmap == NULL) return;
  pos = kmap_pos(t, key, len, &found);
  if (!found) return;
  slot = t->kmap[pos] - 1;
  if (t->docs[slot].chg > chg) return;
  if (t->n_free == t->cap_free) { /* the free list has room for every slot: grow it with the slots */
    uint32_t cap = t->cap_free ? t->cap_free * 2 : 256, *f = engram_realloc(t->free_slots, cap * sizeof *f);
    if (f == NULL) return; /* the slot stays unused but the document goes */
    t->free_slots = f;
    t->cap_free = cap;
  }
  kmap_delete(t, pos);
  engram_text_index_remove(t->ix, slot);
  engram_free(t->docs[slot].key);
  t->docs[slot].key = NULL;
  t->free_slots[t->n_free++] = slot;
  t->live--;
}

/* A written row (value: its JSON text). Returns 0, ENGRAM_ENOMEM, or ENGRAM_EBACKEND (the value is not JSON). */
static int apply_row(pg_tix_t *t, const PGresult *res, int row) {
  const char *key = PQgetvalue(res, row, 1);
  size_t len = (size_t)PQgetlength(res, row, 1);
  int64_t chg = engram__pg_int(res, row, 6);
  uint32_t pos, slot;
  int found, rc;
  cJSON *value;
  char *text;
  tdoc_t *d;
  if (kmap_room(t) != 0) return ENGRAM_ENOMEM;
  pos = kmap_pos(t, key, len, &found);
  if (found && t->docs[t->kmap[pos] - 1].chg > chg) return 0; /* an older snapshot's row */
  if ((rc = engram__pg_json(res, row, 2, &value)) != 0) return rc;
  text = engram_text_of(key, value);
  cJSON_Delete(value);
  if (text == NULL) return ENGRAM_ENOMEM;
  if (found) {
    slot = t->kmap[pos] - 1;
  } else if (t->n_free > 0) {
    slot = t->free_slots[t->n_free - 1];
  } else {
    if (t->n == t->cap) {
      uint32_t cap = t->cap ? t->cap * 2 : 1024;
      tdoc_t *nd = engram_realloc(t->docs, cap * sizeof *nd);
      if (nd == NULL) {
        engram_free(text);
        return ENGRAM_ENOMEM;
      }
      t->docs = nd;
      t->cap = cap;
    }
    slot = t->n;
    t->docs[slot].key = NULL;
  }
  d = &t->docs[slot];
  if (!found && (d->key = engram_malloc(len + 1)) == NULL) {
    engram_free(text);
    return ENGRAM_ENOMEM;
  }
  if (engram_text_index_put(t->ix, slot, text, strlen(text)) != 0) {
    engram_free(text);
    if (!found) {
      engram_free(d->key);
      d->key = NULL;
    }
    return ENGRAM_ENOMEM;
  }
  engram_free(text);
  if (!found) {
    memcpy(d->key, key, len);
    d->key[len] = '\0';
    d->key_len = (uint32_t)len;
    t->kmap[pos] = slot + 1;
    t->live++;
    t->bytes += len + 1 + sizeof *d + 2 * sizeof(uint32_t);
    if (slot == t->n) t->n++;
    else t->n_free--;
  }
  d->chg = chg;
  d->expires = engram__pg_int(res, row, 3);
  d->created = engram__pg_int(res, row, 4);
  d->updated = engram__pg_int(res, row, 5);
  return 0;
}

/* Applies a PGS_TEXT_SYNC or PGS_TEXT_BUILD result: deletes, then rows; *xmin receives the snapshot's xmin and
 * *n_rows the number of rows (kind 0). 0 or an error. */
static int apply_sync(pg_tix_t *t, const PGresult *res, int64_t *xmin_out, int *n_rows) {
  int rows = PQntuples(res), r, rc;
  int64_t xmin = INT64_MIN;
  *n_rows = 0;
  for (r = 0; r < rows; r++) {
    const char kind = PQgetvalue(res, r, 0)[0];
    int64_t chg = engram__pg_int(res, r, 6);
    if (kind == '2') xmin = chg;
    else t->gen++; /* a document written or deleted: rankings made before no longer hold */
    if (kind != '1') continue;
    if (PQgetisnull(res, r, 1)) { /* a TRUNCATE: every document went (rows written since are read below) */
      if (chg > t->trunc_seen) {
        int64_t w = t->w;
        tix_reset(t);
        t->w = w;
        t->trunc_seen = chg;
      }
      continue;
    }
    apply_gone(t, PQgetvalue(res, r, 1), (size_t)PQgetlength(res, r, 1), chg);
  }
  for (r = 0; r < rows; r++) {
    if (PQgetvalue(res, r, 0)[0] != '0') continue;
    if ((rc = apply_row(t, res, r)) != 0) return rc;
    (*n_rows)++;
  }
  *xmin_out = xmin;
  return xmin == INT64_MIN ? ENGRAM_EBACKEND : 0;
}

/* ---- Syncing ---- */

static int sync_send(pg_t *pg, pg_tix_t *tix, pgc_t *c, engram_request_t *req, pg_tix_done_fn done, void *ud);

/* The end of a sync or a build (rc 0, or why it failed: the index was reset): the caller's done, then, after a
 * build, its waiters — each reads what was written since the build's first snapshot. Frees s. */
static void sync_finish(sync_t *s, int rc, const char *msg) {
  pg_tix_t *t = s->tix;
  if (s->build) {
    waiter_t *w = t->waiters;
    t->building = 0;
    if (rc == 0) tix_evict(s->pg, t); /* the new index may pass the budget: others make room */
    t->waiters = NULL;
    t->waiters_tail = &t->waiters;
    s->done(s->ud, rc, msg);
    while (w != NULL) {
      waiter_t *next = w->next;
      if (rc == 0) sync_send(s->pg, t, w->c, w->req, w->done, w->ud);
      else w->done(w->ud, rc, msg);
      engram_free(w);
      w = next;
    }
  } else {
    s->done(s->ud, rc, msg);
  }
  engram_free(s->after);
  engram_free(s);
}

/* The next chunk of a build, after the last key read, on the same connection. */
static void build_next(sync_t *s) {
  pg_op_t *op;
  if (!engram__pgc_ready(s->c)) {
    tix_reset(s->tix);
    sync_finish(s, ENGRAM_EUNAVAILABLE, s->pg->pool.last_error[0] ? s->pg->pool.last_error : "connection lost");
    return;
  }
  if ((op = engram__pg_op_new(s->req, PGS_TEXT_BUILD, sync_done)) == NULL) {
    tix_reset(s->tix);
    sync_finish(s, ENGRAM_ENOMEM, NULL);
    return;
  }
  op->ctx = s;
  op->values[0] = s->tix->ns;
  op->values[1] = s->after != NULL ? s->after : "";
  engram__pg_op_num(op, 2, BUILD_CHUNK);
  op->nparams = 3;
  engram__pgc_submit(s->c, op);
}

static void sync_done(pg_op_t *op, int status, PGresult *res, const char *msg) {
  sync_t *s = op->ctx;
  pg_tix_t *t = s->tix;
  int rc = status, n_rows = 0;
  int64_t xmin = INT64_MIN;
  engram__pg_op_free(op);
  if (rc == 0) {
#ifdef __GLIBC__
    size_t before = s->build ? mallinfo2().uordblks : 0;
#endif
    rc = apply_sync(t, res, &xmin, &n_rows);
    msg = rc == ENGRAM_EBACKEND ? "a row's value is not JSON" : NULL;
#ifdef __GLIBC__
    if (s->build) t->bytes += (uint64_t)(mallinfo2().uordblks - before);
#endif
  }
  if (rc == 0 && s->build) {
    /* The first chunk's xmin is where the first sync starts: rows changed and keys deleted while the later
     * chunks were read are read again then. A full chunk: more may follow. */
    if (s->after == NULL) s->xmin0 = xmin;
    if (n_rows == BUILD_CHUNK) {
      int r = PQntuples(res);
      while (r > 0 && PQgetvalue(res, r - 1, 0)[0] != '0') r--;
      engram_free(s->after);
      if ((s->after = engram_strndup(PQgetvalue(res, r - 1, 1), (size_t)PQgetlength(res, r - 1, 1))) != NULL) {
        build_next(s);
        return;
      }
      rc = ENGRAM_ENOMEM;
    } else {
      t->w = s->xmin0;
    }
  } else if (rc == 0 && xmin > t->w) {
    t->w = xmin;
  }
  t->quiet = rc == 0 && !s->build && t->gen == s->gen0;
  if (rc != 0 && (s->build || status == 0)) tix_reset(t); /* half applied: start again at the next search */
  if (rc == 0) t->synced_at = uv_now(s->pg->loop);
  sync_finish(s, rc, msg);
}

static int sync_send(pg_t *pg, pg_tix_t *tix, pgc_t *c, engram_request_t *req, pg_tix_done_fn done, void *ud) {
  sync_t *s;
  pg_op_t *op;
  if (!engram__pgc_ready(c)) {
    done(ud, ENGRAM_EUNAVAILABLE, pg->pool.last_error[0] ? pg->pool.last_error : "connection lost");
    return 0;
  }
  if (tix->w != INT64_MIN && uv_now(pg->loop) - tix->synced_at > STALE_MS) tix_reset(tix);
  if ((s = engram_calloc(1, sizeof *s)) == NULL) {
    done(ud, ENGRAM_ENOMEM, NULL);
    return 0;
  }
  s->pg = pg;
  s->tix = tix;
  s->done = done;
  s->ud = ud;
  s->c = c;
  s->req = req;
  s->build = tix->w == INT64_MIN;
  if (s->build) {
    tix->building = 1;
    build_next(s);
    return 1;
  }
  if ((op = engram__pg_op_new(req, PGS_TEXT_SYNC, sync_done)) == NULL) {
    engram_free(s);
    done(ud, ENGRAM_ENOMEM, NULL);
    return 0;
  }
  op->ctx = s;
  op->values[0] = tix->ns;
  engram__pg_op_num(op, 1, tix->w);
  engram__pg_op_num(op, 2, INT64_MAX);
  op->nparams = 3;
  s->gen0 = tix->gen;
  engram__pgc_submit(c, op);
  return 1;
}

int engram__pg_tix_sync(pg_t *pg, pg_tix_t *tix, pgc_t *c, engram_request_t *req, pg_tix_done_fn done, void *ud) {
  if (tix->building) {
    waiter_t *w = engram_calloc(1, sizeof *w);
    if (w == NULL) {
      done(ud, ENGRAM_ENOMEM, NULL);
      return 0;
    }
    w->c = c;
    w->req = req;
    w->done = done;
    w->ud = ud;
    *tix->waiters_tail = w;
    tix->waiters_tail = &w->next;
    return 1;
  }
  return sync_send(pg, tix, c, req, done, ud);
}

int engram__pg_tix_quiet(const pg_tix_t *tix) { return tix->w != INT64_MIN && !tix->building && tix->quiet; }
uint64_t engram__pg_tix_gen(const pg_tix_t *tix) { return tix->gen; }

/* ---- Ranking ---- */

typedef struct {
  const pg_tix_t *t;
  const engram_request_t *req;
} rank_ctx_t;

static int accept_doc(uint64_t doc, void *ud) {
  const rank_ctx_t *x = ud;
  const tdoc_t *d = &x->t->docs[doc];
  const engram_request_t *req = x->req;
  if (d->key == NULL || (d->expires != 0 && d->expires <= req->now_ms)) return 0;
  if (req->query.pattern != NULL && !engram_pattern_match(req->query.pattern, d->key, d->key_len)) return 0;
  if ((req->flags & ENGRAM_OPT_RANGES) && !engram_request_in_ranges(req, d->created, d->updated, d->expires)) return 0;
  return 1;
}

static int tie_key(uint64_t a, uint64_t b, void *ud) {
  const rank_ctx_t *x = ud;
  const tdoc_t *da = &x->t->docs[a], *db = &x->t->docs[b];
  size_t n = da->key_len < db->key_len ? da->key_len : db->key_len;
  int c = memcmp(da->key, db->key, n);
  if (c != 0) return c;
  return (da->key_len > db->key_len) - (da->key_len < db->key_len);
}

int engram__pg_tix_rank(pg_tix_t *tix, engram_request_t *req, size_t k, engram_text_hit_t *hits, size_t *n) {
  rank_ctx_t x;
  x.t = tix;
  x.req = req;
  *n = 0;
  if (k == 0 || tix->live == 0) return 0;
  return engram_text_index_search(tix->ix, req->query.text, k, accept_doc, tie_key, &x, hits, n);
}

size_t engram__pg_tix_docs(const pg_tix_t *tix) { return tix->live; }

const char *engram__pg_tix_key(const pg_tix_t *tix, uint64_t doc, size_t *len) {
  *len = tix->docs[doc].key_len;
  return tix->docs[doc].key;
}

void engram__pg_tix_stats(const pg_t *pg, uint64_t *indexes, uint64_t *docs, uint64_t *bytes) {
  const pg_tix_t *t;
  *indexes = *docs = *bytes = 0;
  for (t = pg->tix; t != NULL; t = t->next) {
    (*indexes)++;
    *docs += t->live;
    *bytes += t->bytes;
  }
}
