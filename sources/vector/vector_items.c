/*
 * vector_items.c — the vector source's item table: a chained hash table keyed by (namespace, key), one matrix
 * row per item (with the row → item map that swap-remove keeps exact), the write-order list that max_items
 * evicts from, the hashed document-frequency table behind the built-in embedder's query idf, TTL expiry, and
 * the bridge to the SQLite file (vector_store.c): write-ahead puts and deletes inside one transaction per loop
 * turn, committed from an idle callback, which is when the calls that wrote are acknowledged.
 *
 * A put or a remove is all or nothing: everything that can fail (allocation, growing the matrix, the SQLite
 * statement) happens before memory changes. A commit that fails rolls the file back and reloads memory from it,
 * so memory never holds what the file lost; the calls of that group then fail with ENGRAM_EBACKEND.
 *
 * vector.c (writes) and vector_query.c (reads) call it; it calls only vector_store.c, vector_knn.c and
 * embed_hash.c (re-analyzing an item loaded without its term list).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "vector_items.h"

#define DF_MASK ((1u << ENGRAM__DF_BITS) - 1u)

static uint32_t hash_of(const char *ns, size_t ns_len, const char *key, size_t key_len) {
  uint64_t h = 1469598103934665603ull;
  size_t i;
  for (i = 0; i < ns_len; i++) h = (h ^ (unsigned char)ns[i]) * 1099511628211ull;
  h = (h ^ 0xffu) * 1099511628211ull;
  for (i = 0; i < key_len; i++) h = (h ^ (unsigned char)key[i]) * 1099511628211ull;
  return (uint32_t)(h ^ (h >> 32));
}

static size_t item_size(size_t nterms, size_t ns_len, size_t key_len, size_t value_len, size_t meta_len) {
  return sizeof(engram__vitem_t) + nterms * sizeof(engram__term_t) + ns_len + key_len + value_len + meta_len + 4;
}

static size_t item_bytes(const engram__vitem_t *e) {
  return item_size(e->nterms, e->ns_len, e->key_len, e->value_len, e->meta_len);
}

int engram__vx_init(engram__vsrc_t *v) {
  v->mask = 63;
  if ((v->buckets = engram_calloc(v->mask + 1, sizeof *v->buckets)) == NULL) return ENGRAM_ENOMEM;
  v->mat.dim = v->dim;
  if ((v->scratch = engram_malloc(v->dim * sizeof(float))) == NULL) return ENGRAM_ENOMEM;
  if (v->builtin && (v->df = engram_calloc((size_t)DF_MASK + 1, sizeof *v->df)) == NULL) return ENGRAM_ENOMEM;
  return 0;
}

void engram__vx_free_all(engram__vsrc_t *v) {
  size_t i;
  engram_text_set_free(v->tix); /* the BM25 indexes name the items about to be freed; rebuilt when needed */
  v->tix = NULL;
  for (i = 0; v->buckets != NULL && i <= v->mask; i++) {
    engram__vitem_t *e = v->buckets[i], *nx;
    for (; e != NULL; e = nx) {
      nx = e->hnext;
      engram_free(e);
    }
    v->buckets[i] = NULL;
  }
  v->count = 0;
  v->newest = v->oldest = NULL;
  v->item_bytes = 0;
  v->mat.rows = 0;
  if (v->hnsw) engram__hnsw_reset(v->hnsw);
  if (v->df) memset(v->df, 0, ((size_t)DF_MASK + 1) * sizeof *v->df);
  v->df_docs = 0;
}

int engram__vx_expired(const engram__vitem_t *e, int64_t now) { return e->expires_at_ms != 0 && e->expires_at_ms <= now; }

int engram__vx_cmp(const engram__vitem_t *a, const engram__vitem_t *b) {
  size_t n = a->ns_len < b->ns_len ? a->ns_len : b->ns_len;
  int r = memcmp(VI_NS(a), VI_NS(b), n);
  if (r != 0) return r;
  if (a->ns_len != b->ns_len) return a->ns_len < b->ns_len ? -1 : 1;
  n = a->key_len < b->key_len ? a->key_len : b->key_len;
  r = memcmp(VI_KEY(a), VI_KEY(b), n);
  if (r != 0) return r;
  return a->key_len < b->key_len ? -1 : a->key_len > b->key_len;
}

/* ---- Lists ---- */

static engram__vitem_t **slot(engram__vsrc_t *v, const char *ns, size_t ns_len, const char *key, size_t key_len,
                              uint32_t h) {
  engram__vitem_t **pp = &v->buckets[h & v->mask];
  for (; *pp != NULL; pp = &(*pp)->hnext) {
    engram__vitem_t *e = *pp;
    if (e->hash == h && e->key_len == key_len && e->ns_len == ns_len && memcmp(VI_KEY(e), key, key_len) == 0 &&
        memcmp(VI_NS(e), ns, ns_len) == 0)
      return pp;
  }
  return pp;
}

static void grow_buckets(engram__vsrc_t *v) {
  size_t n = (v->mask + 1) * 2, i;
  engram__vitem_t **b = engram_calloc(n, sizeof *b);
  if (b == NULL) return; /* longer chains, still correct */
  for (i = 0; i <= v->mask; i++) {
    engram__vitem_t *e = v->buckets[i], *nx;
    for (; e != NULL; e = nx) {
      nx = e->hnext;
      e->hnext = b[e->hash & (n - 1)];
      b[e->hash & (n - 1)] = e;
    }
  }
  engram_free(v->buckets);
  v->buckets = b;
  v->mask = n - 1;
}

static void order_unlink(engram__vsrc_t *v, engram__vitem_t *e) {
  if (e->newer) e->newer->older = e->older;
  else v->newest = e->older;
  if (e->older) e->older->newer = e->newer;
  else v->oldest = e->newer;
  e->older = e->newer = NULL;
}

static void order_push(engram__vsrc_t *v, engram__vitem_t *e) {
  e->newer = NULL;
  e->older = v->newest;
  if (v->newest) v->newest->newer = e;
  else v->oldest = e;
  v->newest = e;
}

static void df_add(engram__vsrc_t *v, const engram__vitem_t *e, int delta) {
  uint32_t i;
  if (v->tix != NULL) v->on_item(v, e, delta); /* every item added or removed passes here: the BM25 index follows */
  if (v->df == NULL) return;
  for (i = 0; i < e->nterms; i++) v->df[e->terms[i].hash & DF_MASK] += (uint32_t)delta;
  v->df_docs += (uint64_t)(int64_t)delta;
}

double engram__vx_idf(uint32_t hash, void *ud) {
  const engram__vsrc_t *v = ud;
  double n = (double)v->df_docs, df;
  if (v->df == NULL || n <= 0) return 1.0;
  df = v->df[hash & DF_MASK];
  if (df > n) df = n;
  return log(1.0 + (n - df + 0.5) / (df + 0.5));
}

/* ---- Group commit ---- */

static void on_commit_idle(uv_idle_t *h) { engram__vx_commit(h->data); }

/* Opens the turn's transaction; the idle callback (run before the loop next waits) commits it. */
static void begin(engram__vsrc_t *v) {
  if (v->store == NULL || engram__vstore_in_txn(v->store)) return;
  if (engram__vstore_begin(v->store) == 0) uv_idle_start(&v->commit_idle, on_commit_idle);
}

void engram__vx_finish(engram__vsrc_t *v, engram_request_t *req, int status) {
  if (status != 0 || v->store == NULL || !engram__vstore_in_txn(v->store)) {
    engram_request_complete(req, status);
    return;
  }
  req->backend_data = NULL;
  if (v->dur_tail) v->dur_tail->backend_data = req;
  else v->dur_head = req;
  v->dur_tail = req;
}

void engram__vx_commit(engram__vsrc_t *v) {
  engram_request_t *req = v->dur_head, *next;
  int rc = 0;
  char msg[200];
  if (v->store != NULL) uv_idle_stop(&v->commit_idle);
  v->dur_head = v->dur_tail = NULL;
  if (v->store != NULL && engram__vstore_in_txn(v->store)) {
    rc = engram__vstore_commit(v->store);
    v->commits++;
    if (rc != 0) {
      char err[160];
      snprintf(msg, sizeof msg, "commit to \"%s\" failed: %s", v->path, engram__vstore_errmsg(v->store));
      v->commit_errors++;
      engram__vstore_rollback(v->store);
      /* Memory holds writes the file lost: read the file back. */
      engram__vx_free_all(v);
      if (engram__vx_load(v, err, sizeof err) != 0) engram_source_set_health(v->src, ENGRAM_HEALTH_DOWN);
    }
  }
  for (; req != NULL; req = next) {
    next = req->backend_data;
    req->backend_data = NULL;
    if (rc != 0) engram_request_fail(req, ENGRAM_EBACKEND, "%s", msg);
    else engram_request_complete(req, 0);
  }
}

/* ---- Put and remove ---- */

static int reserve_row(engram__vsrc_t *v) {
  if (v->mat.rows == v->rows_cap) {
    size_t cap = v->rows_cap ? v->rows_cap + v->rows_cap / 2 : 16;
    engram__vitem_t **r = engram_realloc(v->rows, cap * sizeof *r);
    if (r == NULL) return ENGRAM_ENOMEM;
    v->rows = r;
    v->rows_cap = cap;
  }
  if (v->mat.rows == v->mat.cap) {
    /* Grow the matrix now, so the append below cannot fail after the file was written. */
    if (engram__matrix_append(&v->mat, v->scratch) != 0) return ENGRAM_ENOMEM;
    v->mat.rows--;
  }
  if (v->hnsw != NULL && engram__hnsw_reserve(v->hnsw, v->mat.rows + 1) != 0) return ENGRAM_ENOMEM;
  return 0;
}

/* The vector as the matrix keeps it: normalized for cosine. */
static const float *row_vector(engram__vsrc_t *v, const float *vec) {
  if (v->metric != ENGRAM__METRIC_COSINE) return vec;
  memcpy(v->scratch, vec, v->dim * sizeof(float));
  engram__vec_normalize(v->scratch, v->dim);
  return v->scratch;
}

static void unlink_item(engram__vsrc_t *v, engram__vitem_t *e) {
  engram__vitem_t **pp = slot(v, VI_NS(e), e->ns_len, VI_KEY(e), e->key_len, e->hash);
  size_t last = v->mat.rows - 1;
  *pp = e->hnext;
  order_unlink(v, e);
  df_add(v, e, -1);
  if (v->hnsw != NULL) {
    engram__hnsw_remove(v->hnsw, e->row);
    if (e->row != last) engram__hnsw_moved(v->hnsw, (uint32_t)last, e->row);
  }
  if (e->row != last) {
    v->rows[e->row] = v->rows[last];
    v->rows[e->row]->row = e->row;
  }
  engram__matrix_swap_remove(&v->mat, e->row);
  v->count--;
  v->item_bytes -= item_bytes(e);
  engram_free(e);
}

int engram__vx_remove(engram__vsrc_t *v, engram__vitem_t *e, int persist) {
  if (persist && v->store != NULL) {
    begin(v);
    if (engram__vstore_del(v->store, VI_NS(e), e->ns_len, VI_KEY(e), e->key_len) != 0) return ENGRAM_EBACKEND;
  }
  unlink_item(v, e);
  return 0;
}

engram__vitem_t *engram__vx_find(engram__vsrc_t *v, const char *ns, size_t ns_len, const char *key, size_t key_len,
                                 int64_t now) {
  engram__vitem_t *e = *slot(v, ns, ns_len, key, key_len, hash_of(ns, ns_len, key, key_len));
  if (e != NULL && engram__vx_expired(e, now)) {
    if (engram__vx_remove(v, e, 1) == 0) v->expirations++;
    return NULL;
  }
  return e;
}

static engram__vitem_t *item_new(const char *ns, size_t ns_len, const engram__vput_t *p) {
  engram__vitem_t *e = engram_malloc(item_size(p->nterms, ns_len, p->key_len, p->value_len, p->meta ? p->meta_len : 0));
  if (e == NULL) return NULL;
  memset(e, 0, sizeof *e);
  e->nterms = (uint32_t)p->nterms;
  e->ns_len = (uint16_t)ns_len;
  e->key_len = (uint16_t)p->key_len;
  e->value_len = (uint32_t)p->value_len;
  e->meta_len = p->meta ? (uint32_t)p->meta_len : 0;
  if (p->nterms) memcpy(e->terms, p->terms, p->nterms * sizeof *p->terms);
  memcpy(VI_NS(e), ns, ns_len);
  VI_NS(e)[ns_len] = '\0';
  memcpy(VI_KEY(e), p->key, p->key_len);
  VI_KEY(e)[p->key_len] = '\0';
  memcpy(VI_VALUE(e), p->value, p->value_len);
  VI_VALUE(e)[p->value_len] = '\0';
  if (p->meta) {
    memcpy(VI_META(e), p->meta, p->meta_len);
    VI_META(e)[p->meta_len] = '\0';
  }
  return e;
}

int engram__vx_put(engram__vsrc_t *v, const char *ns, size_t ns_len, int64_t now, const engram__vput_t *p,
                   engram__vitem_t **out) {
  uint32_t h = hash_of(ns, ns_len, p->key, p->key_len);
  engram__vitem_t *old = engram__vx_find(v, ns, ns_len, p->key, p->key_len, now), *e;
  engram__vitem_t **pp;
  if ((old == NULL || v->hnsw != NULL) && reserve_row(v) != 0) return ENGRAM_ENOMEM;
  if ((e = item_new(ns, ns_len, p)) == NULL) return ENGRAM_ENOMEM;
  e->hash = h;
  e->created_at_ms = old ? old->created_at_ms : now;
  e->updated_at_ms = now;
  e->expires_at_ms = p->expires_at_ms;
  e->version = old ? old->version + 1 : 1;
  if (v->store != NULL) {
    engram__vrow_t r;
    memset(&r, 0, sizeof r);
    r.ns = ns, r.ns_len = ns_len, r.key = p->key, r.key_len = p->key_len;
    r.value = p->value, r.value_len = p->value_len, r.meta = p->meta, r.meta_len = p->meta_len;
    r.created_at_ms = e->created_at_ms, r.updated_at_ms = e->updated_at_ms, r.expires_at_ms = e->expires_at_ms;
    r.version = e->version, r.vec = p->vec, r.dim = v->dim;
    if (p->nterms) r.terms = p->terms, r.terms_bytes = p->nterms * sizeof *p->terms;
    begin(v);
    if (engram__vstore_put(v->store, &r) != 0) {
      engram_free(e);
      return ENGRAM_EBACKEND;
    }
  }
  if (old != NULL) {
    pp = slot(v, ns, ns_len, p->key, p->key_len, h);
    e->hnext = old->hnext;
    *pp = e;
    e->row = old->row;
    v->rows[e->row] = e;
    order_unlink(v, old);
    df_add(v, old, -1);
    v->item_bytes -= item_bytes(old);
    engram_free(old);
    {
      const float *nv = row_vector(v, p->vec);
      /* A new vector moves the row's node in the graph (delete, then insert); the same vector keeps it. */
      if (v->hnsw != NULL && memcmp(nv, engram__matrix_row(&v->mat, e->row), v->dim * sizeof(float)) != 0) {
        engram__hnsw_remove(v->hnsw, e->row);
        engram__matrix_set(&v->mat, e->row, nv);
        engram__hnsw_insert(v->hnsw, e->row);
      } else {
        engram__matrix_set(&v->mat, e->row, nv);
      }
    }
  } else {
    if (v->count + 1 > v->mask + 1) grow_buckets(v);
    pp = slot(v, ns, ns_len, p->key, p->key_len, h);
    e->hnext = *pp;
    *pp = e;
    e->row = (uint32_t)v->mat.rows;
    engram__matrix_append(&v->mat, row_vector(v, p->vec)); /* cannot fail: reserved */
    v->rows[e->row] = e;
    v->count++;
    if (v->hnsw != NULL) engram__hnsw_insert(v->hnsw, e->row);
  }
  order_push(v, e);
  df_add(v, e, 1);
  v->item_bytes += item_bytes(e);
  while (v->max_items && v->count > v->max_items && v->oldest != NULL && v->oldest != e) {
    if (engram__vx_remove(v, v->oldest, 1) != 0) break;
    v->evictions++;
  }
  *out = e;
  return 0;
}

void engram__vx_sweep(engram__vsrc_t *v) {
  int64_t now = engram_now_ms();
  size_t i;
  for (i = 0; i <= v->mask; i++) {
    engram__vitem_t *e = v->buckets[i], *nx;
    for (; e != NULL; e = nx) {
      nx = e->hnext;
      if (engram__vx_expired(e, now) && engram__vx_remove(v, e, 1) == 0) v->expirations++;
    }
  }
}

/* ---- Load ---- */

typedef struct {
  engram__vsrc_t *v;
  char *err;
  size_t errlen;
  int64_t now;
} load_t;

static int load_row(const engram__vrow_t *r, void *ud) {
  load_t *l = ud;
  engram__vsrc_t *v = l->v;
  engram__vitem_t *e;
  engram__vput_t p;
  engram__vitem_t **pp;
  if (r->dim != v->dim) {
    snprintf(l->err, l->errlen, "item '%.*s' in \"%s\" has a vector of dimension %zu, not %zu", (int)r->key_len,
             r->key, v->path, r->dim, v->dim);
    return ENGRAM_EDIMENSION;
  }
  memset(&p, 0, sizeof p);
  p.key = r->key, p.key_len = r->key_len, p.value = r->value, p.value_len = r->value_len;
  p.meta = r->meta, p.meta_len = r->meta_len, p.vec = r->vec;
  if (v->keep_terms && r->terms != NULL) {
    p.terms = r->terms; /* SQLite blobs are 8-byte aligned */
    p.nterms = r->terms_bytes / sizeof(engram__term_t);
  } else if (v->keep_terms) {
    /* Written without term lists (another embedder's file): analyze the text again. */
    cJSON *value = cJSON_ParseWithLength(r->value, r->value_len);
    char *text = value ? engram_text_of(NULL, value) : NULL;
    int rc = text ? engram__hash_analyze(&v->text, text, strlen(text)) : ENGRAM_ENOMEM;
    cJSON_Delete(value);
    engram_free(text);
    if (rc != 0) {
      snprintf(l->err, l->errlen, "out of memory loading \"%s\"", v->path);
      return ENGRAM_ENOMEM;
    }
    engram__hash_weights_doc(&v->text);
    engram__hash_normalize_terms(&v->text);
    p.terms = v->text.terms;
    p.nterms = v->text.n_terms;
  }
  if (reserve_row(v) != 0 || (e = item_new(r->ns, r->ns_len, &p)) == NULL) {
    snprintf(l->err, l->errlen, "out of memory loading \"%s\" (%zu items loaded)", v->path, v->count);
    return ENGRAM_ENOMEM;
  }
  e->hash = hash_of(r->ns, r->ns_len, r->key, r->key_len);
  e->created_at_ms = r->created_at_ms;
  e->updated_at_ms = r->updated_at_ms;
  e->expires_at_ms = r->expires_at_ms;
  e->version = r->version ? r->version : 1;
  if (v->count + 1 > v->mask + 1) grow_buckets(v);
  pp = slot(v, r->ns, r->ns_len, r->key, r->key_len, e->hash);
  e->hnext = *pp;
  *pp = e;
  e->row = (uint32_t)v->mat.rows;
  engram__matrix_append(&v->mat, row_vector(v, r->vec));
  v->rows[e->row] = e;
  v->count++;
  /* The file has no write order: load order (rowid) stands in for it. */
  order_push(v, e);
  df_add(v, e, 1);
  v->item_bytes += item_bytes(e);
  return 0;
}

/* ---- The approximate index: its saved graph, and the choice between it and exact search ---- */

/* An item's id in the saved graph: a 64-bit hash of (namespace, key, version, updated_at_ms), so an item
 * written after the save (another version) no longer matches its old node. */
static uint64_t item_id(const engram__vitem_t *e) {
  uint64_t h = 1469598103934665603ull, x[2];
  const unsigned char *p;
  size_t i;
  for (i = 0, p = (const unsigned char *)VI_NS(e); i < e->ns_len; i++) h = (h ^ p[i]) * 1099511628211ull;
  h = (h ^ 0xffu) * 1099511628211ull;
  for (i = 0, p = (const unsigned char *)VI_KEY(e); i < e->key_len; i++) h = (h ^ p[i]) * 1099511628211ull;
  x[0] = e->version;
  x[1] = (uint64_t)e->updated_at_ms;
  for (i = 0, p = (const unsigned char *)x; i < sizeof x; i++) h = (h ^ p[i]) * 1099511628211ull;
  h ^= h >> 33;
  return h == UINT64_MAX ? 0 : h;
}

static uint64_t row_id(uint32_t row, void *ud) { return item_id(((engram__vsrc_t *)ud)->rows[row]); }

typedef struct {
  uint64_t *ids;
  uint32_t *rows;
  size_t mask;
} idmap_t;

static uint32_t id_row(uint64_t id, void *ud) {
  const idmap_t *m = ud;
  size_t i = (size_t)(id * 0x9e3779b97f4a7c15ull >> 20) & m->mask;
  for (; m->rows[i] != UINT32_MAX; i = (i + 1) & m->mask)
    if (m->ids[i] == id) return m->rows[i];
  return UINT32_MAX;
}

/* Inserts every row the graph has no node for (if memory runs out, the rest stay unindexed: exact search still
 * sees them, the graph does not). */
static void insert_missing(engram__vsrc_t *v) {
  size_t r;
  for (r = 0; r < v->mat.rows; r++)
    if (!engram__hnsw_has_row(v->hnsw, (uint32_t)r) && engram__hnsw_reserve(v->hnsw, v->mat.rows) == 0)
      engram__hnsw_insert(v->hnsw, (uint32_t)r);
}

/* After a load: the file's saved graph matched to the loaded rows, then every row it lacks inserted. */
static void index_after_load(engram__vsrc_t *v) {
  void *buf = NULL;
  size_t len = 0, r;
  idmap_t m = {NULL, NULL, 0};
  engram__hnsw_reset(v->hnsw);
  v->index_loaded = 0;
  if (v->mat.rows > 0 && engram__vstore_get_index(v->store, &buf, &len) == 1) {
    size_t cap = 16;
    while (cap < 2 * v->mat.rows) cap *= 2;
    m.mask = cap - 1;
    m.ids = engram_malloc(cap * sizeof *m.ids);
    m.rows = engram_malloc(cap * sizeof *m.rows);
    if (m.ids != NULL && m.rows != NULL) {
      memset(m.rows, 0xff, cap * sizeof *m.rows);
      for (r = 0; r < v->mat.rows; r++) {
        uint64_t id = item_id(v->rows[r]);
        size_t i = (size_t)(id * 0x9e3779b97f4a7c15ull >> 20) & m.mask;
        while (m.rows[i] != UINT32_MAX) i = (i + 1) & m.mask;
        m.ids[i] = id;
        m.rows[i] = (uint32_t)r;
      }
      if (engram__hnsw_load(v->hnsw, buf, len, id_row, &m) != 0) engram__hnsw_reset(v->hnsw);
      v->index_loaded = engram__hnsw_count(v->hnsw);
    }
    engram_free(m.ids);
    engram_free(m.rows);
    engram_free(buf);
  }
  insert_missing(v);
}

void engram__vx_reindex(engram__vsrc_t *v) {
  engram__hnsw_reset(v->hnsw);
  insert_missing(v);
}

int engram__vx_save_index(engram__vsrc_t *v) {
  void *buf;
  size_t len = 0;
  int rc;
  if (v->hnsw == NULL || v->store == NULL) return 0;
  if ((buf = engram__hnsw_save(v->hnsw, row_id, v, &len)) == NULL) return ENGRAM_ENOMEM;
  rc = engram__vstore_put_index(v->store, buf, len);
  engram_free(buf);
  return rc;
}

int engram__vx_topk(engram__vsrc_t *v, const float *q, size_t k, size_t ef, engram__accept_fn accept,
                    engram__tie_fn tie, void *ud, engram__hit_t *hits, size_t *n_hits) {
  if (v->hnsw != NULL && v->count >= engram__hnsw_params(v->hnsw)->exact_below &&
      engram__hnsw_search(v->hnsw, q, k, ef, accept, tie, ud, hits, n_hits) == 0) {
    v->ann_searches++;
    return 0;
  }
  v->exact_searches++;
  return engram__knn_topk(&v->mat, q, v->metric, k, accept, tie, ud, hits, n_hits);
}

int engram__vx_load(engram__vsrc_t *v, char *err, size_t errlen) {
  load_t l = {v, err, errlen, engram_now_ms()};
  int rc;
  err[0] = '\0';
  rc = engram__vstore_load(v->store, l.now, load_row, &l);
  if (rc != 0 && err[0] == '\0') snprintf(err, errlen, "reading \"%s\": %s", v->path, engram__vstore_errmsg(v->store));
  if (v->hnsw != NULL) index_after_load(v);
  return rc;
}
