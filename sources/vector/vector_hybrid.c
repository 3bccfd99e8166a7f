/*
 * vector_hybrid.c — the vector source's search modes beyond similarity: `text` ranks the items by BM25 (the
 * core's index, engram_text_index_*, with the tokenizer every source uses), and `hybrid` fuses that ranking with
 * the vector one — reciprocal rank fusion, or a weighted sum of the two scores with `alpha` on the vector side.
 * Keyword and vector rankings fail differently (a rare name the embedding blurs, a paraphrase sharing no word),
 * and fusing them is what the strongest memory systems do; the mode is per call (query.mode) with a default per
 * source (the "search_mode" option).
 *
 * The BM25 index is built at the first text or hybrid search, from every item's key and the string leaves of its
 * value, and from then on kept in step by vector_items.c (v->on_item on every add and remove), so a source
 * only searched by vector pays nothing. Should an update of the index run out of memory, the index is dropped and
 * rebuilt by the next search that needs it. Documents are identified by the item's address, which stays the
 * same while the item lives (a write makes a new item: the old one leaves the index, the new one enters it).
 *
 * Both rankings keep only the items a vector search would keep (namespace, expiry, pattern, system-field ranges,
 * metadata filter); each contributes its best `hybrid_candidates` items (at least offset + limit) to the fusion.
 * Fused scores are in [0, 1]: RRF (k = rrf_k, 5 by default) divides Σ 1 / (k + rank) by its best value
 * 2 / (k + 1); the weighted sum mixes the two [0, 1] scores (0 for a list that misses the item). query.min_score
 * applies to the fused score. Runs on the source's thread inside its request queue, like vector_query.c, and
 * completes every request it takes.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vector_hybrid.h"
#include "vector_items.h"

/* RRF's k. 60 is the usual choice for fusing many runs of similar quality; here two lists are fused and an item
 * near the top of one of them must stay near the top of the fusion, which a large k flattens away. On the
 * Debian known-item task (docs/sources-vector.md) k = 5 lifts hybrid recall@10 from 0.745 to 0.778 (seed
 * 20261206) and from 0.749 to 0.783 (seed 7), +0.033 / +0.034 with a paired standard error of 0.006-0.007;
 * k = 1..5 are within 0.005 of each other, k = 10 is 0.01 lower, k = 20 0.02 lower. */
#define DEFAULT_RRF_K 5
#define DEFAULT_CANDIDATES 100

static void track(engram__vsrc_t *v, const engram__vitem_t *e, int delta);

/* ---- Options ---- */

int engram__vh_options(engram__vsrc_t *v, const cJSON *options, char *err, size_t errlen) {
  static const char *const modes[] = {"text", "vector", "hybrid", NULL}; /* ENGRAM_MODE_TEXT.. in order */
  const cJSON *o;
  const char *str;
  uint64_t u;
  int i;
  v->on_item = track;
  v->search_mode = ENGRAM_MODE_VECTOR;
  v->fusion = ENGRAM_FUSION_RRF;
  v->alpha = 0.5;
  if (engram_opt_string(options, "search_mode", NULL, 0, &str, err, errlen) != 0) return ENGRAM_EINVAL;
  if (str != NULL) {
    for (i = 0; modes[i] != NULL && strcmp(str, modes[i]) != 0; i++) {
    }
    if (modes[i] == NULL) {
      snprintf(err, errlen, "option \"search_mode\": '%.32s' is not a mode (\"text\", \"vector\" or \"hybrid\")", str);
      return ENGRAM_EINVAL;
    }
    v->search_mode = ENGRAM_MODE_TEXT + i;
  }
  if ((o = cJSON_GetObjectItemCaseSensitive(options, "alpha")) != NULL) {
    if (!cJSON_IsNumber(o) || !(o->valuedouble >= 0 && o->valuedouble <= 1)) {
      snprintf(err, errlen, "option \"alpha\": must be a number in [0, 1] (the vector score's weight in hybrid "
               "search; leave it out for reciprocal rank fusion)");
      return ENGRAM_EINVAL;
    }
    v->fusion = ENGRAM_FUSION_WEIGHTED;
    v->alpha = o->valuedouble;
  }
  if (engram_opt_uint(options, "rrf_k", DEFAULT_RRF_K, 1, 100000, &u, err, errlen) != 0) return ENGRAM_EINVAL;
  v->rrf_k = (unsigned)u;
  if (engram_opt_uint(options, "hybrid_candidates", DEFAULT_CANDIDATES, 1, 100000, &u, err, errlen) != 0)
    return ENGRAM_EINVAL;
  v->hybrid_candidates = (size_t)u;
  return 0;
}

int engram__vh_mode(const engram__vsrc_t *v, const engram_request_t *req) {
  return req->query.mode != ENGRAM_MODE_DEFAULT ? req->query.mode : v->search_mode;
}

/* ---- The BM25 index ---- */

static uint64_t doc_of(const engram__vitem_t *e) { return (uint64_t)(uintptr_t)e; }
static engram__vitem_t *item_of(uint64_t doc) { return (engram__vitem_t *)(uintptr_t)doc; }

/* Indexes item e: its key and the string leaves of its value. 0 or ENGRAM_ENOMEM. */
static int index_item(engram__vsrc_t *v, const engram__vitem_t *e) {
  cJSON *value = cJSON_ParseWithLength(VI_VALUE(e), e->value_len);
  engram_text_index_t *ix = engram_text_set_get(v->tix, VI_NS(e), e->ns_len, 1); /* the namespace's own */
  char *text;
  int rc;
  if (value == NULL || ix == NULL) { /* the value was stored as JSON: only memory can fail */
    cJSON_Delete(value);
    return ENGRAM_ENOMEM;
  }
  text = engram_text_of(VI_KEY(e), value);
  cJSON_Delete(value);
  if (text == NULL) return ENGRAM_ENOMEM;
  rc = engram_text_index_put(ix, doc_of(e), text, strlen(text));
  engram_free(text);
  return rc;
}

static void drop_index(engram__vsrc_t *v) {
  engram_text_set_free(v->tix);
  v->tix = NULL;
}

/* v->on_item: vector_items.c calls it for every item added (delta 1) or about to be removed (-1) while the index
 * exists. */
static void track(engram__vsrc_t *v, const engram__vitem_t *e, int delta) {
  if (v->tix == NULL) return;
  if (delta < 0) engram_text_set_remove(v->tix, VI_NS(e), e->ns_len, doc_of(e));
  else if (index_item(v, e) != 0) drop_index(v); /* rebuilt by the next search that needs it */
}

/* Builds the index over every item when there is none. 0 or ENGRAM_ENOMEM. */
static int ensure_index(engram__vsrc_t *v) {
  size_t i;
  if (v->tix != NULL) return 0;
  if (engram_text_set_new(&v->tix) != 0) return ENGRAM_ENOMEM;
  for (i = 0; i < v->mat.rows; i++)
    if (index_item(v, v->rows[i]) != 0) {
      drop_index(v);
      return ENGRAM_ENOMEM;
    }
  return 0;
}

/* ---- What every ranked item must pass (as vector_query.c's similarity search) ---- */

typedef struct {
  engram__vsrc_t *v;
  engram_request_t *req;
  int64_t now;
} scan_t;

static int accepts(const scan_t *s, const engram__vitem_t *e) {
  const engram_request_t *req = s->req;
  const engram_query_t *q = &req->query;
  if (engram__vx_expired(e, s->now)) return 0;
  if (!(req->flags & ENGRAM_REQ_ALL_NAMESPACES) &&
      !(e->ns_len == req->ns_len && memcmp(VI_NS(e), req->ns, req->ns_len) == 0))
    return 0;
  if (q->pattern && !engram_pattern_match(q->pattern, VI_KEY(e), e->key_len)) return 0;
  if (!engram_request_in_ranges(req, e->created_at_ms, e->updated_at_ms, e->expires_at_ms)) return 0;
  if (q->filter) {
    cJSON *meta = e->meta_len ? cJSON_ParseWithLength(VI_META(e), e->meta_len) : NULL;
    int ok = engram_filter_match(q->filter, meta);
    cJSON_Delete(meta);
    if (!ok) return 0;
  }
  return 1;
}

static int accept_doc(uint64_t doc, void *ud) { return accepts(ud, item_of(doc)); }
static int tie_doc(uint64_t a, uint64_t b, void *ud) {
  (void)ud;
  return engram__vx_cmp(item_of(a), item_of(b));
}
static int accept_row(uint32_t row, float raw, void *ud) {
  scan_t *s = ud;
  (void)raw;
  return accepts(s, s->v->rows[row]);
}
static int tie_rows(uint32_t a, uint32_t b, void *ud) {
  scan_t *s = ud;
  return engram__vx_cmp(s->v->rows[a], s->v->rows[b]);
}

/* Adds item e to the reply with its value and metadata. */
static int add_item(engram_request_t *req, const engram__vitem_t *e, double score) {
  engram_item_t it;
  cJSON *value, *meta = NULL;
  memset(&it, 0, sizeof it);
  it.key = VI_KEY(e);
  it.ns = VI_NS(e);
  it.created_at_ms = e->created_at_ms;
  it.updated_at_ms = e->updated_at_ms;
  it.expires_at_ms = e->expires_at_ms;
  it.version = e->version;
  it.score = score < 0 ? 0 : score > 1 ? 1 : score;
  if ((value = cJSON_ParseWithLength(VI_VALUE(e), e->value_len)) == NULL) return ENGRAM_ENOMEM;
  if (e->meta_len && (meta = cJSON_ParseWithLength(VI_META(e), e->meta_len)) == NULL) {
    cJSON_Delete(value);
    return ENGRAM_ENOMEM;
  }
  it.value = value;
  it.metadata = meta;
  return engram_reply_add(req, &it, ENGRAM_REPLY_OWN_VALUE | ENGRAM_REPLY_OWN_METADATA);
}

/* The best k items by BM25 of query.text (accepted ones only), best first, ties by key. */
static int text_rank(scan_t *s, size_t k, engram_text_hit_t **out, size_t *n) {
  engram_text_hit_t *hits;
  int rc;
  *out = NULL;
  *n = 0;
  if ((rc = ensure_index(s->v)) != 0) return rc;
  if (k == 0) return 0;
  if ((hits = engram_malloc(k * sizeof *hits)) == NULL) return ENGRAM_ENOMEM;
  rc = engram_text_index_search(engram_text_set_get(s->v->tix, s->req->ns, s->req->ns_len, 0), s->req->query.text, k,
                                accept_doc, tie_doc, s, hits, n);
  if (rc != 0) {
    engram_free(hits);
    return rc;
  }
  *out = hits;
  return 0;
}

/* ---- Text mode ---- */

void engram__vh_text(engram__vsrc_t *v, engram_request_t *req) {
  const engram_query_t *q = &req->query;
  size_t want = (size_t)q->offset + (size_t)q->limit, n, i;
  engram_text_hit_t *hits;
  scan_t s;
  int rc;
  s.v = v;
  s.req = req;
  s.now = engram_now_ms();
  if ((rc = text_rank(&s, want < v->count ? want : v->count, &hits, &n)) != 0) {
    engram_request_complete(req, rc);
    return;
  }
  for (i = (size_t)q->offset; rc == 0 && i < n; i++) {
    if (hits[i].score < q->min_score) break; /* best first: the rest score lower */
    rc = add_item(req, item_of(hits[i].doc), hits[i].score);
  }
  engram_free(hits);
  engram_request_complete(req, rc);
}

/* ---- Hybrid mode ---- */

typedef struct {
  const engram__vitem_t *e;
  size_t vrank, trank; /* 1-based; 0 = not in that list */
  double vscore, tscore, score;
} fused_t;

static int cmp_item_ptr(const void *a, const void *b) {
  uintptr_t x = (uintptr_t)((const fused_t *)a)->e, y = (uintptr_t)((const fused_t *)b)->e;
  return x < y ? -1 : x > y;
}

static int cmp_fused(const void *a, const void *b) {
  const fused_t *x = a, *y = b;
  if (x->score != y->score) return x->score > y->score ? -1 : 1;
  return engram__vx_cmp(x->e, y->e);
}

/* The vector ranking: the best k accepted rows (re-ranked by the exact term cosine under the built-in embedder,
 * as a vector search does), best first, with their [0, 1] scores in *scores. */
static int vector_rank(scan_t *s, const float *qvec, const engram__term_t *qterms, size_t nqterms, size_t k,
                       engram__hit_t **out, size_t *n, int *reranked) {
  engram__vsrc_t *v = s->v;
  int rerank = v->builtin && v->metric == ENGRAM__METRIC_COSINE && v->rerank > 0 && nqterms > 0;
  size_t pool = rerank && v->rerank > k ? v->rerank : k, i;
  engram__hit_t *hits;
  int rc;
  *out = NULL;
  *n = 0;
  *reranked = rerank;
  if (pool > v->count) pool = v->count;
  if (pool == 0) return 0;
  if ((hits = engram_malloc(pool * sizeof *hits)) == NULL) return ENGRAM_ENOMEM;
  if ((rc = engram__vx_topk(v, qvec, pool, (size_t)s->req->query.ef_search, accept_row, tie_rows, s, hits, n)) != 0) {
    engram_free(hits);
    return rc;
  }
  if (rerank) {
    for (i = 0; i < *n; i++) {
      const engram__vitem_t *e = v->rows[hits[i].row];
      hits[i].raw = (float)engram__hash_exact(qterms, nqterms, e->terms, e->nterms);
    }
    engram__hits_sort(hits, *n, tie_rows, s);
  }
  if (*n > k) *n = k;
  *out = hits;
  return 0;
}

void engram__vh_hybrid(engram__vsrc_t *v, engram_request_t *req, const float *qvec, const engram__term_t *qterms,
                       size_t nqterms) {
  const engram_query_t *q = &req->query;
  int explicit = q->mode == ENGRAM_MODE_HYBRID, reranked = 0, rc;
  int fusion = explicit ? q->fusion : v->fusion;
  double alpha = explicit ? q->alpha : v->alpha, k = (double)v->rrf_k;
  size_t want = (size_t)q->offset + (size_t)q->limit, pool = want > v->hybrid_candidates ? want : v->hybrid_candidates;
  size_t nv = 0, nt = 0, nf = 0, i, j, emitted = 0;
  engram__hit_t *vhits = NULL;
  engram_text_hit_t *thits = NULL;
  fused_t *f = NULL;
  scan_t s;
  s.v = v;
  s.req = req;
  s.now = engram_now_ms();
  rc = vector_rank(&s, qvec, qterms, nqterms, pool, &vhits, &nv, &reranked);
  if (rc == 0 && q->text != NULL) rc = text_rank(&s, pool < v->count ? pool : v->count, &thits, &nt);
  if (rc == 0 && nv + nt > 0 && (f = engram_calloc(nv + nt, sizeof *f)) == NULL) rc = ENGRAM_ENOMEM;
  if (rc != 0) goto done;
  for (i = 0; i < nv; i++, nf++) {
    f[nf].e = v->rows[vhits[i].row];
    f[nf].vrank = i + 1;
    f[nf].vscore = engram__knn_score(reranked ? ENGRAM__METRIC_COSINE : v->metric, vhits[i].raw);
  }
  for (i = 0; i < nt; i++, nf++) {
    f[nf].e = item_of(thits[i].doc);
    f[nf].trank = i + 1;
    f[nf].tscore = thits[i].score;
  }
  /* One entry per item: merge the two lists' entries for the same item. */
  if (nf > 1) qsort(f, nf, sizeof *f, cmp_item_ptr);
  for (i = 0, j = 0; i < nf; i++) {
    if (j > 0 && f[j - 1].e == f[i].e) {
      if (f[i].vrank) f[j - 1].vrank = f[i].vrank, f[j - 1].vscore = f[i].vscore;
      if (f[i].trank) f[j - 1].trank = f[i].trank, f[j - 1].tscore = f[i].tscore;
    } else {
      f[j++] = f[i];
    }
  }
  nf = j;
  for (i = 0; i < nf; i++) {
    if (fusion == ENGRAM_FUSION_WEIGHTED) {
      f[i].score = alpha * f[i].vscore + (1.0 - alpha) * f[i].tscore;
    } else {
      double sum = (f[i].vrank ? 1.0 / (k + (double)f[i].vrank) : 0) + (f[i].trank ? 1.0 / (k + (double)f[i].trank) : 0);
      f[i].score = sum / (2.0 / (k + 1.0));
    }
  }
  if (nf > 1) qsort(f, nf, sizeof *f, cmp_fused);
  for (i = 0; rc == 0 && i < nf && emitted < (size_t)q->limit; i++) {
    if (f[i].score < q->min_score) break;
    if (i < (size_t)q->offset) continue;
    rc = add_item(req, f[i].e, f[i].score);
    emitted++;
  }
done:
  engram_free(f);
  engram_free(thits);
  engram_free(vhits);
  engram_request_complete(req, rc);
}
