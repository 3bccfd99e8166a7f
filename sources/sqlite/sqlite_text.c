/*
 * sqlite_text.c — the SQLite source's text search: the core's in-process BM25 index (engram_text_index, the
 * same tokenizer and the same ranking as the cache and redis), one per namespace, kept in step with the table.
 *
 * Why not FTS5: a query over 64k items took ~90 ms in FTS5 (bm25() over every match) and ranked differently
 * from the other sources; the in-process index answers in well under a millisecond and ranks the same items
 * the same way wherever they are stored.
 *
 * An index is built lazily, by the first text search of its namespace (every live row read in one statement,
 * inside the search's read transaction), and then kept up to date by this connection's own writes: every store,
 * update, delete, expiry and sweep of an indexed namespace puts or removes its document at once (sqlite.c and the
 * sweep call the hooks below after their statement succeeded), so a search inside the same group transaction
 * sees exactly what the table holds. Writes by other connections (another process, the sqlite3 shell) are found
 * through a per-namespace generation in the table "<table>_gen": every group commit of engram bumps the
 * generation of each namespace it wrote, in the same transaction, if that generation is armed (> 0), and triggers
 * bump it for every other writer (engram's own connection runs with triggers off). A generation is armed by the
 * first index built of its namespace by any connection (arm(): inside a write transaction, before the rows are
 * read), so a namespace that nobody searches by text costs its writers one point read a commit and no written
 * page, and not even that while the file's data version says no connection committed since (known_unarmed()). An index remembers the generation it reflects; a bump that lands at exactly that + 1 was ours alone,
 * anything else means another writer came between, and the index is marked stale. A search reads the generation first (one point read) and rebuilds a
 * stale or outdated index. A rolled-back group drops every index (it had applied writes that are gone).
 *
 * Documents are numbered here (a free list reuses numbers); each keeps its key (the tie-break: equal scores rank
 * by key, as on every source) and its expiry (an expired row is skipped before the sweep removes it). The key
 * pattern is tested on the key in memory; a metadata filter or system-field ranges read the candidate's row
 * (only for candidates that would enter the top k). The best offset + limit are then read back in full.
 *
 * Threads: the actor thread of the source only, like every other file of the backend.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sqlite_db.h"
#include "sqlite_text.h"

typedef struct {
  char *key;        /* NULL: a free document number */
  uint32_t klen;
  uint32_t next_free;
  int64_t expires;  /* 0 = never */
} sqdoc_t;

struct sq_tix_s {
  struct sq_tix_s *next;
  char *ns;
  size_t ns_len;
  engram_text_index_t *ix;
  int64_t gen;      /* the namespace's generation the index reflects */
  int stale;        /* another writer came between: rebuild at the next search */
  sqdoc_t *docs;
  uint32_t ndocs, cap, free_head, live;
  uint32_t *kmap;   /* document number + 1 by key hash (linear probing), 0 = empty */
  uint32_t kmap_cap;
};

#define NO_DOC UINT32_MAX

static uint32_t hash_key(const char *s, size_t n) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  size_t i;
  for (i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
  return (uint32_t)(h ^ (h >> 32));
}

static void tix_free(sq_tix_t *t) {
  uint32_t i;
  if (t == NULL) return;
  for (i = 0; i < t->ndocs; i++) engram_free(t->docs[i].key);
  engram_free(t->docs);
  engram_free(t->kmap);
  engram_text_index_free(t->ix);
  engram_free(t->ns);
  engram_free(t);
}

/* The position of key in the map, or of the empty slot where it would go. */
static uint32_t kmap_pos(const sq_tix_t *t, const char *key, size_t klen, int *found) {
  uint32_t mask = t->kmap_cap - 1, i, e;
  for (i = hash_key(key, klen) & mask; (e = t->kmap[i]) != 0; i = (i + 1) & mask) {
    const sqdoc_t *d = &t->docs[e - 1];
    if (d->klen == klen && memcmp(d->key, key, klen) == 0) {
      *found = 1;
      return i;
    }
  }
  *found = 0;
  return i;
}

static int kmap_grow(sq_tix_t *t) {
  uint32_t cap = t->kmap_cap ? t->kmap_cap * 2 : 1024, i, *m = engram_calloc(cap, sizeof *m);
  if (m == NULL) return ENGRAM_ENOMEM;
  for (i = 0; i < t->ndocs; i++) {
    uint32_t j;
    if (t->docs[i].key == NULL) continue;
    for (j = hash_key(t->docs[i].key, t->docs[i].klen) & (cap - 1); m[j] != 0; j = (j + 1) & (cap - 1)) {
    }
    m[j] = i + 1;
  }
  engram_free(t->kmap);
  t->kmap = m;
  t->kmap_cap = cap;
  return 0;
}

/* Removes the map entry at i, shifting the rest of its cluster back (no tombstones). */
static void kmap_delete(sq_tix_t *t, uint32_t i) {
  uint32_t mask = t->kmap_cap - 1, j = i;
  for (;;) {
    uint32_t k;
    j = (j + 1) & mask;
    if (t->kmap[j] == 0) break;
    k = hash_key(t->docs[t->kmap[j] - 1].key, t->docs[t->kmap[j] - 1].klen) & mask;
    if (i <= j ? (i < k && k <= j) : (i < k || k <= j)) continue;
    t->kmap[i] = t->kmap[j];
    i = j;
  }
  t->kmap[i] = 0;
}

/* Puts (or replaces) key's document. Returns 0 or ENGRAM_ENOMEM (the index is then unusable: mark it stale). */
static int tix_put(sq_tix_t *t, const char *key, size_t klen, const cJSON *value, int64_t expires) {
  int found;
  uint32_t pos, id;
  char *text;
  int rc;
  if ((uint64_t)(t->live + 1) * 2 > t->kmap_cap && kmap_grow(t) != 0) return ENGRAM_ENOMEM;
  pos = kmap_pos(t, key, klen, &found);
  if (found) {
    id = t->kmap[pos] - 1;
  } else {
    if (t->free_head != NO_DOC) {
      id = t->free_head;
    } else {
      if (t->ndocs == t->cap) {
        uint32_t cap = t->cap ? t->cap * 2 : 1024;
        sqdoc_t *d = engram_realloc(t->docs, (size_t)cap * sizeof *d);
        if (d == NULL) return ENGRAM_ENOMEM;
        t->docs = d;
        t->cap = cap;
      }
      id = t->ndocs;
    }
    if ((t->docs[id].key = engram_malloc(klen + 1)) == NULL) return ENGRAM_ENOMEM;
    memcpy(t->docs[id].key, key, klen);
    t->docs[id].key[klen] = '\0';
    t->docs[id].klen = (uint32_t)klen;
    if (id == t->free_head) t->free_head = t->docs[id].next_free;
    else t->ndocs++;
    t->kmap[pos] = id + 1;
    t->live++;
  }
  t->docs[id].expires = expires;
  if ((text = engram_text_of(t->docs[id].key, value)) == NULL) return ENGRAM_ENOMEM;
  rc = engram_text_index_put(t->ix, id, text, strlen(text));
  engram_free(text);
  return rc;
}

static void tix_remove(sq_tix_t *t, const char *key, size_t klen) {
  int found;
  uint32_t pos, id;
  if (t->kmap_cap == 0) return;
  pos = kmap_pos(t, key, klen, &found);
  if (!found) return;
  id = t->kmap[pos] - 1;
  kmap_delete(t, pos);
  engram_text_index_remove(t->ix, id);
  engram_free(t->docs[id].key);
  t->docs[id].key = NULL;
  t->docs[id].next_free = t->free_head;
  t->free_head = id;
  t->live--;
}

static sq_tix_t *tix_find(sq_t *s, const char *ns, size_t ns_len) {
  sq_tix_t *t;
  for (t = s->tix; t != NULL; t = t->next)
    if (t->ns_len == ns_len && memcmp(t->ns, ns, ns_len) == 0) return t;
  return NULL;
}

static void tix_unlink(sq_t *s, sq_tix_t *t) {
  sq_tix_t **pp;
  for (pp = &s->tix; *pp != NULL; pp = &(*pp)->next)
    if (*pp == t) {
      *pp = t->next;
      break;
    }
  tix_free(t);
}

/* ---- Hooks of the write paths ---- */

/* Remembers that ns was written in this group (its generation is bumped before COMMIT). */
static void touch(sq_t *s, const char *ns, size_t ns_len) {
  char **v;
  size_t *l;
  if (s->n_touched > 0 && s->touched_len[s->n_touched - 1] == ns_len &&
      memcmp(s->touched[s->n_touched - 1], ns, ns_len) == 0)
    return;
  if (s->n_touched == s->touched_cap) {
    size_t cap = s->touched_cap ? s->touched_cap * 2 : 8;
    if ((v = engram_realloc(s->touched, cap * sizeof *v)) == NULL) goto oom;
    s->touched = v;
    if ((l = engram_realloc(s->touched_len, cap * sizeof *l)) == NULL) goto oom;
    s->touched_len = l;
    s->touched_cap = cap;
  }
  if ((s->touched[s->n_touched] = engram_strndup(ns, ns_len)) == NULL) goto oom;
  s->touched_len[s->n_touched++] = ns_len;
  return;
oom:
  s->bump_all = 1; /* every generation is bumped instead */
}

void engram__sq_text_written(sq_t *s, const char *ns, size_t ns_len, const char *key, size_t key_len,
                             const cJSON *value, int64_t expires) {
  sq_tix_t *t = tix_find(s, ns, ns_len);
  touch(s, ns, ns_len);
  if (t == NULL || t->stale) return;
  /* A value given as its text (a cJSON_Raw node: an import's line, ENGRAM_SOURCE_REPLICA_MANY) has no string
   * leaves to index here: the index is rebuilt from the rows at the next search instead. */
  if (cJSON_IsRaw(value) || tix_put(t, key, key_len, value, expires) != 0) t->stale = 1;
}

void engram__sq_text_removed(sq_t *s, const char *ns, size_t ns_len, const char *key, size_t key_len) {
  sq_tix_t *t = tix_find(s, ns, ns_len);
  touch(s, ns, ns_len);
  if (t != NULL) tix_remove(t, key, key_len);
}

void engram__sq_text_cleared(sq_t *s) {
  sq_tix_t *t;
  s->bump_all = 1;
  for (t = s->tix; t != NULL; t = t->next) t->stale = 1;
}

static int cmp_touched(const void *a, const void *b) {
  const char *x = *(char *const *)a, *y = *(char *const *)b;
  return strcmp(x, y);
}

static void touched_reset(sq_t *s) {
  size_t i;
  for (i = 0; i < s->n_touched; i++) engram_free(s->touched[i]);
  s->n_touched = 0;
  s->bump_all = 0;
}

/* Was ns found unarmed by the last commit, with no commit of any connection since (data version dv, read inside
 * this group's transaction, unchanged)? Then nobody armed it: its bump check is skipped, and the knowledge carries
 * over to this group's commit. */
static int known_unarmed(sq_t *s, const char *ns, size_t ns_len, unsigned dv) {
  if (dv == 0 || s->unarmed_commit == 0 || s->unarmed_commit != s->commits || dv != s->commit_dv ||
      s->unarmed_len != ns_len || memcmp(s->unarmed_ns, ns, ns_len) != 0)
    return 0;
  s->unarmed_commit = s->commits + 1;
  return 1;
}

int engram__sq_text_pre_commit(sq_t *s) {
  size_t i;
  int rc = 0;
  sqlite3_stmt *st;
  unsigned dv = engram__sq_data_version(s);
  if (s->bump_all) {
    sq_tix_t *t;
    for (t = s->tix; t != NULL; t = t->next) t->stale = 1;
    if ((st = engram__sq_stmt(s, SQ_GEN_BUMP_ALL)) == NULL || (rc = engram__sq_exec(s, st)) != 0)
      return rc ? rc : ENGRAM_EBACKEND;
  }
  /* Namespaces are sorted (and each bumped once); a namespace holding a NUL byte compares by its first part,
   * which only costs it a second bump. */
  if (s->n_touched > 1) qsort(s->touched, s->n_touched, sizeof *s->touched, cmp_touched);
  for (i = 0; i < s->n_touched; i++) {
    sq_tix_t *t;
    int64_t gen;
    int step, bumped;
    if (i > 0 && s->touched_len[i] == s->touched_len[i - 1] &&
        memcmp(s->touched[i], s->touched[i - 1], s->touched_len[i]) == 0)
      continue;
    /* The bump only changes an armed generation (> 0: some connection built a text index of the namespace, see
     * arm()); a namespace nobody searches by text costs a point read here and no page of the commit. Then, only
     * when this connection holds an index of the namespace, a point read of the new value (a RETURNING clause
     * would gather its row in an ephemeral table, whose page cache SQLite allocates and frees on every statement:
     * brk was a third of a one-in-flight store on the home loop, perf). */
    t = tix_find(s, s->touched[i], s->touched_len[i]);
    if (t == NULL && known_unarmed(s, s->touched[i], s->touched_len[i], dv)) continue;
    if ((st = engram__sq_stmt(s, SQ_GEN_BUMP)) == NULL) return ENGRAM_EBACKEND;
    sqlite3_bind_text(st, 1, s->touched[i], (int)s->touched_len[i], SQLITE_STATIC);
    if ((rc = engram__sq_exec(s, st)) != 0) return rc;
    bumped = sqlite3_changes(s->db) > 0;
    if (!bumped && t == NULL && dv != 0 && s->touched_len[i] <= sizeof s->unarmed_ns) {
      memcpy(s->unarmed_ns, s->touched[i], s->touched_len[i]);
      s->unarmed_len = s->touched_len[i];
      s->unarmed_commit = s->commits + 1; /* known once this group commits */
    }
    if (t == NULL || t->stale) continue;
    if (!bumped) { /* our index armed it: someone removed the generation row; rebuild to be safe */
      t->stale = 1;
      continue;
    }
    if ((st = engram__sq_stmt(s, SQ_GEN_GET)) == NULL) return ENGRAM_EBACKEND;
    sqlite3_bind_text(st, 1, s->touched[i], (int)s->touched_len[i], SQLITE_STATIC);
    step = sqlite3_step(st);
    if (step != SQLITE_ROW) {
      rc = engram__sq_error(s, step == SQLITE_DONE ? SQLITE_CORRUPT : step);
      sqlite3_reset(st);
      return rc;
    }
    gen = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    if (gen == t->gen + 1) t->gen = gen; /* ours alone */
    else t->stale = 1;
  }
  touched_reset(s);
  return 0;
}

void engram__sq_text_rolled_back(sq_t *s) {
  while (s->tix != NULL) {
    sq_tix_t *t = s->tix;
    s->tix = t->next;
    tix_free(t);
  }
  touched_reset(s);
  engram_free(s->touched);
  engram_free(s->touched_len);
  s->touched = NULL;
  s->touched_len = NULL;
  s->touched_cap = 0;
}

/* ---- Building ---- */

/* The namespace's generation as the database has it now (0 when it was never written). */
static int read_gen(sq_t *s, const char *ns, size_t ns_len, int64_t *gen) {
  sqlite3_stmt *st = engram__sq_stmt(s, SQ_GEN_GET);
  int step;
  *gen = 0;
  if (st == NULL) return ENGRAM_EBACKEND;
  sqlite3_bind_text(st, 1, ns, (int)ns_len, SQLITE_STATIC);
  step = sqlite3_step(st);
  if (step == SQLITE_ROW) *gen = sqlite3_column_int64(st, 0);
  else if (step != SQLITE_DONE) {
    int rc = engram__sq_error(s, step);
    sqlite3_reset(st);
    return rc;
  }
  sqlite3_reset(st);
  return 0;
}

/* Arms ns's generation before its first index is built (*gen <= 0: no connection indexed it, so writers have been
 * leaving it alone): joins the group's write transaction, sets the generation to at least 1, and reads it back
 * into *gen. Holding the write lock, no other connection can commit until the group's COMMIT, and every write
 * group that begins after it sees the armed generation and bumps it (pre_commit): the rows the build reads now and
 * the bumps after it leave no write unseen. 0, or an engram status with s->err set. */
static int arm(sq_t *s, const char *ns, size_t ns_len, int64_t *gen) {
  sqlite3_stmt *st;
  int rc;
  if ((rc = engram__sq_txn_begin(s)) != 0) return rc;
  s->unarmed_commit = 0; /* armed inside this group: the data version shows it only after COMMIT */
  if ((st = engram__sq_stmt(s, SQ_GEN_ARM)) == NULL) return ENGRAM_EBACKEND;
  sqlite3_bind_text(st, 1, ns, (int)ns_len, SQLITE_STATIC);
  if ((rc = engram__sq_exec(s, st)) != 0) {
    engram__sq_txn_check(s);
    return rc;
  }
  return read_gen(s, ns, ns_len, gen);
}

static int build(sq_t *s, const char *ns, size_t ns_len, int64_t gen, int64_t now, sq_tix_t **out) {
  sq_tix_t *t = engram_calloc(1, sizeof *t);
  sqlite3_stmt *st;
  int rc = 0, step;
  *out = NULL;
  if (t == NULL || (t->ns = engram_malloc(ns_len + 1)) == NULL || engram_text_index_new(&t->ix) != 0) {
    tix_free(t);
    return ENGRAM_ENOMEM;
  }
  memcpy(t->ns, ns, ns_len);
  t->ns[ns_len] = '\0';
  t->ns_len = ns_len;
  t->gen = gen;
  t->free_head = NO_DOC;
  if ((st = engram__sq_stmt(s, SQ_TEXT_ROWS)) == NULL) {
    tix_free(t);
    return ENGRAM_EBACKEND;
  }
  sqlite3_bind_text(st, 1, ns, (int)ns_len, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, now);
  while ((step = sqlite3_step(st)) == SQLITE_ROW) {
    const char *key = (const char *)sqlite3_column_text(st, 0);
    const char *v = (const char *)sqlite3_column_text(st, 1);
    cJSON *value = v ? cJSON_ParseWithLength(v, (size_t)sqlite3_column_bytes(st, 1)) : NULL; /* not JSON: key only */
    if (key == NULL) {
      cJSON_Delete(value);
      continue;
    }
    rc = tix_put(t, key, (size_t)sqlite3_column_bytes(st, 0), value, sqlite3_column_int64(st, 2));
    cJSON_Delete(value);
    if (rc != 0) break;
  }
  if (rc == 0 && step != SQLITE_DONE) rc = engram__sq_error(s, step);
  sqlite3_reset(st);
  if (rc != 0) {
    if (rc == ENGRAM_ENOMEM) snprintf(s->err, sizeof s->err, "out of memory");
    tix_free(t);
    return rc;
  }
  s->text_builds++;
  *out = t;
  return 0;
}

/* ---- Search ---- */

typedef struct {
  sq_t *s;
  sq_tix_t *t;
  engram_request_t *req;
  int64_t now;
  int rc; /* the first error an accept met */
} acc_t;

static int accept_doc(uint64_t doc, void *ud) {
  acc_t *a = ud;
  const sqdoc_t *d = &a->t->docs[doc];
  const engram_request_t *req = a->req;
  const engram_query_t *q = &req->query;
  sqlite3_stmt *st;
  int ok = 1;
  if (d->expires != 0 && d->expires <= a->now) return 0;
  if (q->pattern != NULL && !engram_pattern_match(q->pattern, d->key, d->klen)) return 0;
  if (q->filter == NULL && !(req->flags & (ENGRAM_OPT_CREATED_RANGE | ENGRAM_OPT_UPDATED_RANGE | ENGRAM_OPT_EXPIRES_RANGE)))
    return 1;
  if (a->rc != 0 || (st = engram__sq_stmt(a->s, SQ_GET)) == NULL) return 0;
  sqlite3_bind_text(st, 1, req->ns, (int)req->ns_len, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, d->key, (int)d->klen, SQLITE_STATIC);
  if (sqlite3_step(st) != SQLITE_ROW) {
    sqlite3_reset(st);
    return 0;
  }
  if (!engram_request_in_ranges(req, sqlite3_column_int64(st, ROW_CREATED), sqlite3_column_int64(st, ROW_UPDATED),
                                sqlite3_column_int64(st, ROW_EXPIRES)))
    ok = 0;
  if (ok && q->filter != NULL) {
    cJSON *meta = NULL;
    int rc = engram__sq_parse_col(a->s, st, ROW_META, d->key, "metadata", &meta);
    if (rc != 0) a->rc = rc;
    ok = rc == 0 && engram_filter_match(q->filter, meta);
    cJSON_Delete(meta);
  }
  sqlite3_reset(st);
  return ok;
}

static int tie_key(uint64_t x, uint64_t y, void *ud) {
  const acc_t *a = ud;
  const sqdoc_t *p = &a->t->docs[x], *q = &a->t->docs[y];
  size_t n = p->klen < q->klen ? p->klen : q->klen;
  int r = memcmp(p->key, q->key, n);
  if (r != 0) return r;
  return p->klen < q->klen ? -1 : p->klen > q->klen;
}

int engram__sq_text_query(sq_t *s, engram_request_t *req, int counting, uint64_t *count) {
  const engram_query_t *q = &req->query;
  sq_tix_t *t = tix_find(s, req->ns, req->ns_len);
  engram_text_hit_t *hits;
  int64_t gen, now = engram_now_ms();
  size_t k, n = 0, i;
  acc_t a;
  int rc;
  *count = 0;
  if (!s->in_txn) engram__sq_read_begin(s);
  if ((rc = read_gen(s, req->ns, req->ns_len, &gen)) != 0) return rc;
  if (t != NULL && (t->stale || t->gen != gen)) {
    tix_unlink(s, t);
    t = NULL;
  }
  if (t == NULL) {
    if (gen <= 0 && (rc = arm(s, req->ns, req->ns_len, &gen)) != 0) return rc;
    if ((rc = build(s, req->ns, req->ns_len, gen, now, &t)) != 0) return rc;
    t->next = s->tix;
    s->tix = t;
  }
  k = counting ? t->live : (size_t)q->offset + (size_t)q->limit;
  if (k == 0) return 0;
  if ((hits = engram_malloc(k * sizeof *hits)) == NULL) return ENGRAM_ENOMEM;
  a.s = s;
  a.t = t;
  a.req = req;
  a.now = now;
  a.rc = 0;
  rc = engram_text_index_search(t->ix, q->text, k, accept_doc, tie_key, &a, hits, &n);
  if (rc == 0) rc = a.rc;
  for (i = counting ? 0 : (size_t)q->offset; rc == 0 && i < n; i++) {
    const sqdoc_t *d = &t->docs[hits[i].doc];
    sqlite3_stmt *st;
    if (hits[i].score < q->min_score) break;
    if (counting) {
      (*count)++;
      continue;
    }
    if ((st = engram__sq_stmt(s, SQ_GET)) == NULL) {
      rc = ENGRAM_EBACKEND;
      break;
    }
    sqlite3_bind_text(st, 1, req->ns, (int)req->ns_len, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, d->key, (int)d->klen, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW) {
      rc = engram__sq_add_row(s, req, st, 0, req->ns, d->key, 1, 1, NULL, hits[i].score);
      if (rc == 0) (*count)++;
    }
    sqlite3_reset(st);
  }
  engram_free(hits);
  return rc;
}

size_t engram__sq_text_items(const sq_t *s) {
  const sq_tix_t *t;
  size_t n = 0;
  for (t = s->tix; t != NULL; t = t->next) n += t->live;
  return n;
}
