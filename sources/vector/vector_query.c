/*
 * vector_query.c — what the vector source answers from its table: similarity search and count (exact k-NN
 * over the matrix, vector_knn.c), plain scans by pattern and filter, key listing with keyset cursors, reads,
 * deletes, clear and info. Every method here completes synchronously; vector.c runs them in queue order. It
 * reads and removes items through vector_items.c and calls nothing above it.
 *
 * A similarity search ranks the rows by the query vector and keeps the best offset + limit rows that pass the
 * namespace, expiry, min_score, pattern, system-field range and metadata filter checks — all applied before the
 * limit, inside the top-k selection. A text query also requires a word shared with the item's text (the share
 * rule, on by default for the built-in embedder), and with the built-in embedder under cosine the best `rerank`
 * candidates are ranked again by the exact cosine of their term lists, which the 384 hashed dimensions only
 * approximate. Scores are in [0, 1] (vector_knn.c maps them per metric); equal scores are ordered by key.
 */
#include <stdlib.h>
#include <string.h>

#include "vector_hybrid.h"
#include "vector_items.h"
#include "vector_query.h"

/* Adds item e to the reply (value and metadata parsed from their JSON). */
static int add_item(engram_request_t *req, const engram__vitem_t *e, int with_value, int with_meta, double score) {
  engram_item_t it;
  cJSON *value = NULL, *meta = NULL;
  memset(&it, 0, sizeof it);
  it.key = VI_KEY(e);
  it.ns = VI_NS(e);
  it.created_at_ms = e->created_at_ms;
  it.updated_at_ms = e->updated_at_ms;
  it.expires_at_ms = e->expires_at_ms;
  it.version = e->version;
  it.score = score;
  if (with_value && (value = cJSON_ParseWithLength(VI_VALUE(e), e->value_len)) == NULL) return ENGRAM_ENOMEM;
  if (with_meta && e->meta_len && (meta = cJSON_ParseWithLength(VI_META(e), e->meta_len)) == NULL) {
    cJSON_Delete(value);
    return ENGRAM_ENOMEM;
  }
  it.value = value;
  it.metadata = meta;
  return engram_reply_add(req, &it, ENGRAM_REPLY_OWN_VALUE | ENGRAM_REPLY_OWN_METADATA);
}

/* ---- Acceptance: what every result must pass before it may count against the limit ---- */

typedef struct {
  engram__vsrc_t *v;
  engram_request_t *req;
  int64_t now;
  double min_score;       /* applied in accept unless re-ranking (then after it) */
  int check_min;
  const engram__term_t *qterms;
  size_t nqterms;
  int share;
} scan_t;

static int in_namespace(const scan_t *s, const engram__vitem_t *e) {
  const engram_request_t *req = s->req;
  return (req->flags & ENGRAM_REQ_ALL_NAMESPACES) ||
         (e->ns_len == req->ns_len && memcmp(VI_NS(e), req->ns, req->ns_len) == 0);
}

static int accepts_item(const scan_t *s, const engram__vitem_t *e) {
  const engram_query_t *q = &s->req->query;
  if (engram__vx_expired(e, s->now) || !in_namespace(s, e)) return 0;
  if (s->share && !engram__terms_share(s->qterms, s->nqterms, e->terms, e->nterms)) return 0;
  if (q->pattern && !engram_pattern_match(q->pattern, VI_KEY(e), e->key_len)) return 0;
  if (!engram_request_in_ranges(s->req, e->created_at_ms, e->updated_at_ms, e->expires_at_ms)) return 0;
  if (q->filter) {
    cJSON *meta = e->meta_len ? cJSON_ParseWithLength(VI_META(e), e->meta_len) : NULL;
    int ok = engram_filter_match(q->filter, meta);
    cJSON_Delete(meta);
    if (!ok) return 0;
  }
  return 1;
}

static int accept_row(uint32_t row, float raw, void *ud) {
  scan_t *s = ud;
  if (s->check_min && engram__knn_score(s->v->metric, raw) < s->min_score) return 0;
  return accepts_item(s, s->v->rows[row]);
}

static int tie_rows(uint32_t a, uint32_t b, void *ud) {
  scan_t *s = ud;
  return engram__vx_cmp(s->v->rows[a], s->v->rows[b]);
}

static int cmp_items(const void *a, const void *b) {
  return engram__vx_cmp(*(engram__vitem_t *const *)a, *(engram__vitem_t *const *)b);
}

/* ---- Scans without a query vector: pattern and filter, ordered by key ---- */

static int collect(scan_t *s, engram__vitem_t ***out, size_t *n_out) {
  engram__vsrc_t *v = s->v;
  engram__vitem_t **arr = NULL;
  size_t n = 0, i;
  if (v->count > 0 && (arr = engram_malloc(v->count * sizeof *arr)) == NULL) return ENGRAM_ENOMEM;
  for (i = 0; i < v->mat.rows; i++)
    if (accepts_item(s, v->rows[i])) arr[n++] = v->rows[i];
  if (n > 1) qsort(arr, n, sizeof *arr, cmp_items);
  *out = arr;
  *n_out = n;
  return 0;
}

/* ---- Similarity ---- */

/* Re-ranks hits by the exact cosine of the term lists; drops those under min_score. Returns how many remain. */
static size_t rerank(scan_t *s, engram__hit_t *hits, size_t n) {
  size_t i, m = 0;
  for (i = 0; i < n; i++) {
    const engram__vitem_t *e = s->v->rows[hits[i].row];
    float c = (float)engram__hash_exact(s->qterms, s->nqterms, e->terms, e->nterms);
    if (engram__knn_score(ENGRAM__METRIC_COSINE, c) < s->min_score) continue;
    hits[m].raw = c;
    hits[m].row = hits[i].row;
    m++;
  }
  engram__hits_sort(hits, m, tie_rows, s);
  return m;
}

static uint64_t count_similar(scan_t *s, const float *qvec, int reranking) {
  engram__vsrc_t *v = s->v;
  float scores[512];
  size_t first, i;
  uint64_t n = 0;
  for (first = 0; first < v->mat.rows; first += 512) {
    size_t len = v->mat.rows - first < 512 ? v->mat.rows - first : 512;
    engram__knn_scores(&v->mat, first, len, qvec, v->metric, scores);
    for (i = 0; i < len; i++) {
      const engram__vitem_t *e = v->rows[first + i];
      if (!accept_row((uint32_t)(first + i), scores[i], s)) continue;
      if (reranking &&
          engram__knn_score(ENGRAM__METRIC_COSINE, (float)engram__hash_exact(s->qterms, s->nqterms, e->terms,
                                                                             e->nterms)) < s->min_score)
        continue;
      n++;
    }
  }
  return n;
}

void engram__vq_run(engram__vsrc_t *v, engram_request_t *req, const float *qvec, const engram__term_t *qterms,
                    size_t nqterms, int text_query) {
  const engram_query_t *q = &req->query;
  int counting = req->op == ENGRAM_OP_COUNT, rc = 0;
  scan_t s;
  size_t i;
  if (qvec != NULL && req->op == ENGRAM_OP_SEARCH && engram__vh_mode(v, req) == ENGRAM_MODE_HYBRID) {
    engram__vh_hybrid(v, req, qvec, qterms, nqterms); /* vector_hybrid.c fuses both rankings */
    return;
  }
  memset(&s, 0, sizeof s);
  s.v = v;
  s.req = req;
  s.now = engram_now_ms();
  if (qvec == NULL) {
    engram__vitem_t **arr;
    size_t n;
    if ((rc = collect(&s, &arr, &n)) != 0) {
      engram_request_complete(req, rc);
      return;
    }
    if (counting) engram_reply_set_count(req, n);
    else
      for (i = (size_t)q->offset; rc == 0 && i < n && i < (size_t)q->offset + (size_t)q->limit; i++)
        rc = add_item(req, arr[i], 1, 1, 1.0);
    engram_free(arr);
    engram_request_complete(req, rc);
    return;
  }
  s.min_score = q->min_score > 0 ? q->min_score : v->threshold;
  if (text_query && v->share_rule && nqterms == 0) { /* no word to share: nothing can match */
    if (counting) engram_reply_set_count(req, 0);
    engram_request_complete(req, 0);
    return;
  }
  {
    int share = text_query && v->share_rule;
    int reranking = text_query && v->builtin && v->metric == ENGRAM__METRIC_COSINE && v->rerank > 0 && nqterms > 0;
    size_t want = counting ? 0 : (size_t)q->offset + (size_t)q->limit, k, n = 0, m;
    engram__hit_t *hits;
    s.qterms = qterms;
    s.nqterms = nqterms;
    s.check_min = !reranking;
    if (counting) { /* every item that would match, not only the candidate pool */
      s.share = share;
      engram_reply_set_count(req, count_similar(&s, qvec, reranking));
      engram_request_complete(req, 0);
      return;
    }
    /* Text queries draw a pool of the best `rerank` rows by vector (namespace, expiry, pattern, filter and, unless
     * re-ranking, min_score applied), then keep the items sharing a word and, with the built-in embedder, rank
     * them by their exact similarity. Checking the share rule on the pool only keeps a rare-word query from
     * visiting every item. */
    k = (share || reranking) && v->rerank > want ? v->rerank : want;
    if (k > v->count) k = v->count;
    if (k == 0) {
      engram_request_complete(req, 0);
      return;
    }
    if ((hits = engram_malloc(k * sizeof *hits)) == NULL) {
      engram_request_complete(req, ENGRAM_ENOMEM);
      return;
    }
    rc = engram__vx_topk(v, qvec, k, (size_t)q->ef_search, accept_row, tie_rows, &s, hits, &n);
    if (share) {
      for (i = 0, m = 0; i < n; i++) {
        const engram__vitem_t *e = v->rows[hits[i].row];
        if (engram__terms_share(qterms, nqterms, e->terms, e->nterms)) hits[m++] = hits[i];
      }
      n = m;
    }
    if (rc == 0 && reranking) n = rerank(&s, hits, n);
    for (i = (size_t)q->offset; rc == 0 && i < n && i < want; i++)
      rc = add_item(req, v->rows[hits[i].row], 1, 1,
                               engram__knn_score(reranking ? ENGRAM__METRIC_COSINE : v->metric, hits[i].raw));
    engram_free(hits);
    engram_request_complete(req, rc);
  }
}

/* ---- Reads ---- */

void engram__vq_retrieve(engram__vsrc_t *v, engram_request_t *req) {
  engram__vitem_t *e = engram__vx_find(v, req->ns, req->ns_len, req->key, req->key_len, engram_now_ms());
  if (e == NULL) {
    engram_request_fail_not_found(req, NULL);
    return;
  }
  engram_request_complete(req, add_item(req, e, 1, (req->flags & ENGRAM_OPT_INCLUDE_METADATA) != 0, 1.0));
}

void engram__vq_retrieve_many(engram__vsrc_t *v, engram_request_t *req) {
  int64_t now = engram_now_ms();
  size_t i, found = 0;
  engram_item_t blank;
  memset(&blank, 0, sizeof blank);
  for (i = 0; i < req->n; i++) {
    engram__vitem_t *e = engram__vx_find(v, req->ns, req->ns_len, req->keys[i], strlen(req->keys[i]), now);
    int rc;
    if (e != NULL) {
      rc = add_item(req, e, 1, (req->flags & ENGRAM_OPT_INCLUDE_METADATA) != 0, 1.0);
      found += rc == 0;
    } else {
      blank.key = req->keys[i];
      blank.ns = req->ns;
      rc = engram_reply_add(req, &blank, 0);
      if (rc == 0) rc = ENGRAM_ENOTFOUND;
    }
    if (rc == ENGRAM_ENOMEM) {
      engram_request_complete(req, rc);
      return;
    }
    engram_reply_set_item_status(req, i, rc);
  }
  engram_reply_set_count(req, found);
  engram_request_complete(req, 0);
}

void engram__vq_exists(engram__vsrc_t *v, engram_request_t *req) {
  engram_reply_set_count(req, engram__vx_find(v, req->ns, req->ns_len, req->key, req->key_len, engram_now_ms()) != NULL);
  engram_request_complete(req, 0);
}

/* ---- Deletes ---- */

static int delete_one(engram__vsrc_t *v, engram_request_t *req, const char *key, size_t *n) {
  engram__vitem_t *e = engram__vx_find(v, req->ns, req->ns_len, key, strlen(key), engram_now_ms());
  if (e == NULL) return 0;
  if (engram__vx_remove(v, e, 1) != 0) return ENGRAM_EBACKEND;
  (*n)++;
  return 0;
}

void engram__vq_delete(engram__vsrc_t *v, engram_request_t *req) {
  size_t n = 0;
  int rc = delete_one(v, req, req->key, &n);
  engram_reply_set_count(req, n);
  if (rc != 0) engram_request_fail(req, rc, "deleting '%s' from \"%s\": %s", req->key, v->path, engram__vstore_errmsg(v->store));
  else engram__vx_finish(v, req, 0);
}

void engram__vq_delete_many(engram__vsrc_t *v, engram_request_t *req) {
  size_t n = 0, i;
  int rc = 0;
  for (i = 0; i < req->n && rc == 0; i++) rc = delete_one(v, req, req->keys[i], &n);
  engram_reply_set_count(req, n);
  if (rc != 0) engram_request_fail(req, rc, "deleting '%s' from \"%s\": %s", req->keys[i - 1], v->path, engram__vstore_errmsg(v->store));
  else engram__vx_finish(v, req, 0);
}

void engram__vq_clear(engram__vsrc_t *v, engram_request_t *req) {
  size_t n = 0, row;
  scan_t s;
  engram__hnsw_t *graph = v->hnsw;
  memset(&s, 0, sizeof s);
  s.v = v;
  s.req = req;
  /* Clearing most of an indexed source: the graph is set aside and rebuilt from the rows left, which is far
   * cheaper than re-linking the neighbours of every removed node. */
  if (graph != NULL) {
    size_t gone = 0;
    for (row = 0; row < v->mat.rows; row++) gone += in_namespace(&s, v->rows[row]);
    if (gone * 2 >= v->mat.rows) v->hnsw = NULL;
  }
  /* From the last row down: swap-remove then never moves a row not yet visited. */
  for (row = v->mat.rows; row-- > 0;) {
    engram__vitem_t *e = v->rows[row];
    if (!in_namespace(&s, e)) continue;
    if (engram__vx_remove(v, e, 1) != 0) {
      if (v->hnsw == NULL && graph != NULL) v->hnsw = graph, engram__vx_reindex(v);
      engram_reply_set_count(req, n);
      engram_request_fail(req, ENGRAM_EBACKEND, "clearing \"%s\": %s", v->path, engram__vstore_errmsg(v->store));
      return;
    }
    n++;
  }
  if (v->hnsw == NULL && graph != NULL) v->hnsw = graph, engram__vx_reindex(v);
  engram_reply_set_count(req, n);
  engram__vx_finish(v, req, 0);
}

/* ---- Listing: keyset cursors "<ns_len>:<ns><key>" of the last key of the previous page ---- */

static int after_cursor(const engram__vitem_t *e, const char *ns, size_t ns_len, const char *key, size_t key_len) {
  return engram_key_cmp(VI_NS(e), e->ns_len, VI_KEY(e), e->key_len, ns, ns_len, key, key_len) > 0;
}

void engram__vq_list_keys(engram__vsrc_t *v, engram_request_t *req) {
  const char *cns = NULL, *ckey = NULL;
  size_t cns_len = 0, ckey_len = 0, n = 0, i, limit = (size_t)req->query.limit, emitted = 0;
  int64_t now = engram_now_ms();
  engram__vitem_t **arr = NULL;
  scan_t s;
  int rc = 0;
  memset(&s, 0, sizeof s);
  s.v = v;
  s.req = req;
  s.now = now;
  if (req->cursor != NULL && engram_cursor_parse(req->cursor, &cns, &cns_len, &ckey, &ckey_len) != 0) {
    engram_request_fail(req, ENGRAM_EINVAL, "cursor \"%.40s\" was not made by this source", req->cursor);
    return;
  }
  if (v->count > 0 && (arr = engram_malloc(v->count * sizeof *arr)) == NULL) {
    engram_request_complete(req, ENGRAM_ENOMEM);
    return;
  }
  for (i = 0; i < v->mat.rows; i++) {
    engram__vitem_t *e = v->rows[i];
    if (engram__vx_expired(e, now) || !in_namespace(&s, e)) continue;
    if (req->query.pattern && !engram_pattern_match(req->query.pattern, VI_KEY(e), e->key_len)) continue;
    if (!engram_request_in_ranges(req, e->created_at_ms, e->updated_at_ms, e->expires_at_ms)) continue;
    if (cns != NULL && !after_cursor(e, cns, cns_len, ckey, ckey_len)) continue;
    arr[n++] = e;
  }
  if (n > 1) qsort(arr, n, sizeof *arr, cmp_items);
  for (i = 0; rc == 0 && i < n && emitted < limit; i++, emitted++) rc = add_item(req, arr[i], 0, 0, 1.0);
  if (rc == 0 && i < n && emitted > 0) {
    const engram__vitem_t *last = arr[i - 1];
    rc = engram_reply_set_key_cursor(req, VI_NS(last), last->ns_len, VI_KEY(last), last->key_len);
  }
  engram_free(arr);
  engram_reply_set_count(req, emitted);
  engram_request_complete(req, rc);
}

/* ---- Info ---- */

void engram__vq_info(engram__vsrc_t *v, engram_request_t *req) {
  cJSON *o = cJSON_CreateObject();
  static const char *const metrics[] = {"cosine", "dot", "l2"};
  size_t index_bytes = v->hnsw ? engram__hnsw_bytes(v->hnsw) : 0;
  size_t bytes = v->item_bytes + v->mat.cap * v->dim * sizeof(float) + v->rows_cap * sizeof *v->rows +
                 (v->mask + 1) * sizeof *v->buckets + (v->df ? ((size_t)1 << ENGRAM__DF_BITS) * sizeof *v->df : 0) +
                 index_bytes;
  cJSON *ix = NULL;
  if (o == NULL || !cJSON_AddNumberToObject(o, "items", (double)v->count) ||
      !cJSON_AddNumberToObject(o, "dimension", (double)v->dim) ||
      !cJSON_AddStringToObject(o, "metric", metrics[v->metric]) ||
      !cJSON_AddStringToObject(o, "embedder", engram__embedder_name(v->emb)) ||
      !cJSON_AddStringToObject(o, "kernel", engram__knn_kernel()) ||
      !cJSON_AddNumberToObject(o, "bytes", (double)bytes) ||
      !cJSON_AddNumberToObject(o, "bytes_per_item", v->count ? (double)bytes / (double)v->count : 0) ||
      !cJSON_AddNumberToObject(o, "max_items", (double)v->max_items) ||
      !cJSON_AddNumberToObject(o, "similarity_threshold", v->threshold) ||
      !cJSON_AddBoolToObject(o, "share_rule", v->share_rule) ||
      !cJSON_AddNumberToObject(o, "rerank", v->builtin ? (double)v->rerank : 0) ||
      !cJSON_AddNumberToObject(o, "embed_calls", (double)v->embed_calls) ||
      !cJSON_AddNumberToObject(o, "embed_errors", (double)v->embed_errors) ||
      !cJSON_AddNumberToObject(o, "embed_late", (double)v->embed_late) ||
      !cJSON_AddNumberToObject(o, "expirations", (double)v->expirations) ||
      !cJSON_AddNumberToObject(o, "evictions", (double)v->evictions) ||
      !cJSON_AddNumberToObject(o, "commits", (double)v->commits) ||
      !cJSON_AddNumberToObject(o, "commit_errors", (double)v->commit_errors) ||
      (v->path && !cJSON_AddStringToObject(o, "path", v->path)) || engram__embedder_info(v->emb, o) != 0) {
    cJSON_Delete(o);
    engram_request_complete(req, ENGRAM_ENOMEM);
    return;
  }
  /* The approximate index: its options, size and how searches went (approximate or exact). */
  if (v->hnsw != NULL) {
    const engram__hnsw_params_t *p = engram__hnsw_params(v->hnsw);
    ix = cJSON_AddObjectToObject(o, "index");
    if (ix == NULL || !cJSON_AddStringToObject(ix, "type", "hnsw") || !cJSON_AddNumberToObject(ix, "m", p->m) ||
        !cJSON_AddNumberToObject(ix, "ef_construction", p->ef_construction) ||
        !cJSON_AddNumberToObject(ix, "ef_search", p->ef_search) ||
        !cJSON_AddNumberToObject(ix, "exact_below", (double)p->exact_below) ||
        !cJSON_AddNumberToObject(ix, "nodes", (double)engram__hnsw_count(v->hnsw)) ||
        !cJSON_AddNumberToObject(ix, "bytes", (double)index_bytes) ||
        !cJSON_AddNumberToObject(ix, "loaded_nodes", (double)v->index_loaded) ||
        !cJSON_AddNumberToObject(ix, "approximate_searches", (double)v->ann_searches) ||
        !cJSON_AddNumberToObject(ix, "exact_searches", (double)v->exact_searches)) {
      cJSON_Delete(o);
      engram_request_complete(req, ENGRAM_ENOMEM);
      return;
    }
  }
  engram_reply_set_info(req, o);
  engram_request_complete(req, 0);
}
