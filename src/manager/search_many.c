/*
 * search_many.c — engram_search_sources (include/engram/search.h): one search over several sources of the
 * manager, fused into one ranking as a hybrid search fuses its two (reciprocal rank fusion or weighted scores).
 *
 * engram_search_sources is built on engram_search: it sends one ordinary search per source, so each goes
 * through its source's mailbox, window and deadline and a slow source holds back nobody else's work. Each
 * answer is copied out of its borrowed reply into the call's state; the answer that completes the set fuses
 * them (reciprocal rank fusion or a weighted sum, de-duplicated by key) and runs the user's callback on the
 * thread it arrived on — the home loop, or the thread draining the call's completion queue — so the callback
 * never runs inside the submitting call. Answers may arrive on the manager's own thread while the submitter is
 * still sending, so the count of outstanding answers is atomic; when a source refuses at submit after others
 * were sent, the call returns that error and the answers still due are absorbed without a callback.
 */
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actor/actor.h"
#include "manager/manager.h"
#include "manager/query_mode.h"
#include "shared/error.h"

#define LIMIT_MAX 100000
#define RRF_K_DEFAULT 60

/* ---- engram_search_sources ---- */

typedef struct {
  char *key, *ns;
  cJSON *value, *metadata;
  int64_t created_at_ms, updated_at_ms, expires_at_ms;
  uint64_t version;
  double score;
} hit_t;

typedef struct sm_s sm_t;

typedef struct {
  sm_t *call;
  char name[ENGRAM_SOURCE_NAME_MAX + 1];
  int status;
  char *message;
  hit_t *hits;
  size_t n;
} part_t;

struct sm_s {
  atomic_size_t pending; /* answers still due */
  atomic_int abandoned;  /* the call returned an error: absorb the answers */
  engram_cb cb;
  void *ud;
  int fusion;
  double *weights;       /* n */
  unsigned rrf_k;
  int offset, limit;
  double min_score;
  size_t n;
  part_t parts[];
};

static void hits_free(hit_t *h, size_t n) {
  size_t i;
  for (i = 0; i < n; i++) {
    engram_free(h[i].key);
    engram_free(h[i].ns);
    cJSON_Delete(h[i].value);
    cJSON_Delete(h[i].metadata);
  }
  engram_free(h);
}

static void sm_free(sm_t *s) {
  size_t i;
  for (i = 0; i < s->n; i++) {
    hits_free(s->parts[i].hits, s->parts[i].n);
    engram_free(s->parts[i].message);
  }
  engram_free(s->weights);
  engram_free(s);
}

/* Copies the borrowed items of a reply into part p. Returns 0 or ENGRAM_ENOMEM (p keeps nothing). */
static int copy_hits(part_t *p, const engram_reply_t *r) {
  size_t i;
  if (r->n_items == 0) return 0;
  if ((p->hits = engram_calloc(r->n_items, sizeof *p->hits)) == NULL) return ENGRAM_ENOMEM;
  for (i = 0; i < r->n_items; i++) {
    const engram_item_t *it = &r->items[i];
    hit_t *h = &p->hits[i];
    p->n = i + 1;
    if ((h->key = engram_strdup(it->key ? it->key : "")) == NULL || (h->ns = engram_strdup(it->ns ? it->ns : "")) == NULL ||
        (it->value && (h->value = cJSON_Duplicate(it->value, 1)) == NULL) ||
        (it->metadata && (h->metadata = cJSON_Duplicate(it->metadata, 1)) == NULL)) {
      hits_free(p->hits, p->n);
      p->hits = NULL;
      p->n = 0;
      return ENGRAM_ENOMEM;
    }
    h->created_at_ms = it->created_at_ms;
    h->updated_at_ms = it->updated_at_ms;
    h->expires_at_ms = it->expires_at_ms;
    h->version = it->version;
    h->score = it->score;
  }
  return 0;
}

/* One (part, rank) entry of the fusion, sorted by key to group the copies of an item. */
typedef struct {
  const hit_t *hit;
  size_t part, rank; /* rank from 1 */
} entry_t;

typedef struct {
  const hit_t *shown;
  size_t part;
  double score, best; /* fused score; the best single contribution, which picks the copy shown */
} fused_t;

static int cmp_entry(const void *a, const void *b) {
  const entry_t *x = a, *y = b;
  int c = strcmp(x->hit->key, y->hit->key);
  if (c != 0) return c;
  return x->part < y->part ? -1 : x->part > y->part;
}

static int cmp_fused(const void *a, const void *b) {
  const fused_t *x = a, *y = b;
  if (x->score != y->score) return x->score > y->score ? -1 : 1;
  return strcmp(x->shown->key, y->shown->key);
}

static double contribution(const sm_t *s, const entry_t *e) {
  double w = s->weights[e->part];
  return s->fusion == ENGRAM_FUSION_RRF ? w / ((double)s->rrf_k + (double)e->rank) : w * e->hit->score;
}

/* Builds the info array of per-source outcomes. NULL on ENOMEM. */
static cJSON *outcomes(const sm_t *s) {
  cJSON *arr = cJSON_CreateArray();
  size_t i;
  if (arr == NULL) return NULL;
  for (i = 0; i < s->n; i++) {
    const part_t *p = &s->parts[i];
    cJSON *o = cJSON_CreateObject();
    if (o != NULL && !cJSON_AddItemToArray(arr, o)) {
      cJSON_Delete(o);
      o = NULL;
    }
    if (o == NULL || !cJSON_AddStringToObject(o, "source", p->name) || !cJSON_AddNumberToObject(o, "status", p->status) ||
        (p->status != 0 && !cJSON_AddStringToObject(o, "error", engram_err_name(p->status))) ||
        !cJSON_AddStringToObject(o, "message", p->message ? p->message : "") ||
        !cJSON_AddNumberToObject(o, "items", (double)p->n)) {
      cJSON_Delete(arr);
      return NULL;
    }
  }
  return arr;
}

/* Fuses the answers and runs the user's callback; frees s. Runs on the thread of the last answer. */
static void deliver(sm_t *s) {
  engram_reply_t reply;
  entry_t *entries = NULL;
  fused_t *fused = NULL;
  engram_item_t *items = NULL;
  cJSON *info = NULL;
  size_t total = 0, i, j, nf = 0, ok = 0, failed = 0, n_items = 0;
  double norm = 0;
  int status = 0, first_error = 0;
  const char *first_message = "";
  char *message = NULL;
  memset(&reply, 0, sizeof reply);
  reply.op = ENGRAM_OP_SEARCH;
  for (i = 0; i < s->n; i++) {
    if (s->parts[i].status == 0) {
      ok++;
      total += s->parts[i].n;
      norm += s->fusion == ENGRAM_FUSION_RRF ? s->weights[i] / ((double)s->rrf_k + 1.0) : s->weights[i];
    } else if (failed++ == 0) {
      first_error = s->parts[i].status;
      first_message = s->parts[i].message ? s->parts[i].message : "";
    }
  }
  if (ok == 0) {
    status = first_error;
    reply.message = first_message;
    goto answer;
  }
  if (total > 0 && ((entries = engram_malloc(total * sizeof *entries)) == NULL ||
                    (fused = engram_malloc(total * sizeof *fused)) == NULL)) {
    status = ENGRAM_ENOMEM;
    reply.message = "out of memory fusing the results";
    goto answer;
  }
  for (i = 0, total = 0; i < s->n; i++)
    if (s->parts[i].status == 0)
      for (j = 0; j < s->parts[i].n; j++) {
        entries[total].hit = &s->parts[i].hits[j];
        entries[total].part = i;
        entries[total].rank = j + 1;
        total++;
      }
  if (total > 1) qsort(entries, total, sizeof *entries, cmp_entry);
  for (i = 0; i < total; i = j) {
    fused_t *f = &fused[nf++];
    f->score = 0;
    f->best = -1;
    for (j = i; j < total && strcmp(entries[j].hit->key, entries[i].hit->key) == 0; j++) {
      double c = contribution(s, &entries[j]);
      /* A source lists a key once; should one list it twice, only its best rank counts. */
      if (j > i && entries[j].part == entries[j - 1].part) continue;
      f->score += c;
      if (c > f->best) { /* entries of a key are in source order: the first named wins a tie */
        f->best = c;
        f->shown = entries[j].hit;
        f->part = entries[j].part;
      }
    }
    f->score = norm > 0 ? f->score / norm : 0;
    if (f->score > 1.0) f->score = 1.0;
  }
  if (nf > 1) qsort(fused, nf, sizeof *fused, cmp_fused);
  if (nf > 0 && (items = engram_calloc(nf, sizeof *items)) == NULL) {
    status = ENGRAM_ENOMEM;
    reply.message = "out of memory fusing the results";
    goto answer;
  }
  {
    size_t skipped = 0;
    for (i = 0; i < nf && n_items < (size_t)s->limit; i++) {
      const hit_t *h = fused[i].shown;
      engram_item_t *it;
      if (fused[i].score < s->min_score) break; /* sorted: the rest score lower */
      if (skipped < (size_t)s->offset) {
        skipped++;
        continue;
      }
      it = &items[n_items++];
      it->key = h->key;
      it->ns = h->ns;
      it->value = h->value;
      it->metadata = h->metadata;
      it->created_at_ms = h->created_at_ms;
      it->updated_at_ms = h->updated_at_ms;
      it->expires_at_ms = h->expires_at_ms;
      it->version = h->version;
      it->score = fused[i].score;
      it->source = s->parts[fused[i].part].name;
    }
  }
  if (failed > 0) { /* "2 of 3 sources answered; failed: 'a' (ENGRAM_ETIMEDOUT: ...)" */
    size_t cap = 96, len;
    for (i = 0; i < s->n; i++)
      if (s->parts[i].status != 0) cap += strlen(s->parts[i].name) + strlen(s->parts[i].message ? s->parts[i].message : "") + 48;
    if ((message = engram_malloc(cap)) != NULL) {
      len = (size_t)snprintf(message, cap, "%zu of %zu sources answered; failed:", ok, s->n);
      for (i = 0; i < s->n; i++)
        if (s->parts[i].status != 0 && len < cap)
          len += (size_t)snprintf(message + len, cap - len, " '%s' (%s: %s)", s->parts[i].name,
                                  engram_err_name(s->parts[i].status), s->parts[i].message ? s->parts[i].message : "");
      reply.message = message;
    } else {
      reply.message = "some sources failed (see info)";
    }
  }
answer:
  if (reply.message == NULL) reply.message = "";
  info = outcomes(s);
  if (info == NULL && status == 0) {
    status = ENGRAM_ENOMEM;
    reply.message = "out of memory listing the sources' outcomes";
    n_items = 0;
  }
  reply.items = status == 0 ? items : NULL;
  reply.n_items = status == 0 ? n_items : 0;
  reply.count = reply.n_items;
  reply.info = info;
  s->cb(status, &reply, s->ud);
  cJSON_Delete(info);
  engram_free(message);
  engram_free(items);
  engram_free(fused);
  engram_free(entries);
  sm_free(s);
}

/* One answer is in: the last one fuses (or, when the call returned an error, frees everything). */
static void answered(sm_t *s) {
  if (atomic_fetch_sub_explicit(&s->pending, 1, memory_order_acq_rel) != 1) return;
  if (atomic_load_explicit(&s->abandoned, memory_order_acquire)) sm_free(s);
  else deliver(s);
}

static void on_part(int status, const engram_reply_t *reply, void *ud) {
  part_t *p = ud;
  sm_t *s = p->call;
  p->status = status;
  if (status == 0 && copy_hits(p, reply) != 0) {
    p->status = ENGRAM_ENOMEM;
    p->message = engram_strdup("out of memory copying the results");
  } else {
    p->message = engram_strdup(reply->message ? reply->message : "");
  }
  answered(s);
}

/* Checks the arguments that need no source; fills weights (n). */
static int check_args(const char *const *sources, size_t n, const engram_query_t *query,
                      const engram_fusion_opts_t *fusion, const engram_opts_t *opts, double *weights) {
  size_t i, j;
  double sum = 0;
  if (sources == NULL) return engram__error(ENGRAM_EINVAL, "sources: NULL");
  if (n == 0 || n > ENGRAM_SEARCH_SOURCES_MAX)
    return engram__error(ENGRAM_EINVAL, "n_sources: %zu, must be 1..%d", n, ENGRAM_SEARCH_SOURCES_MAX);
  for (i = 0; i < n; i++) {
    if (sources[i] == NULL) return engram__error(ENGRAM_EINVAL, "sources[%zu]: NULL", i);
    for (j = 0; j < i; j++)
      if (strcmp(sources[i], sources[j]) == 0)
        return engram__error(ENGRAM_EINVAL, "sources[%zu]: '%.64s' named twice", i, sources[i]);
  }
  if (query == NULL) return engram__error(ENGRAM_EINVAL, "query: NULL");
  if (query->limit <= 0 || query->limit > LIMIT_MAX)
    return engram__error(ENGRAM_EINVAL, "query.limit: %d, must be 1..%d", query->limit, LIMIT_MAX);
  if (query->offset < 0) return engram__error(ENGRAM_EINVAL, "query.offset: %d is negative", query->offset);
  if (query->offset > LIMIT_MAX - query->limit)
    return engram__error(ENGRAM_EINVAL, "query.offset: %d, offset + limit must be at most %d", query->offset, LIMIT_MAX);
  if (!(query->min_score >= 0.0 && query->min_score <= 1.0))
    return engram__error(ENGRAM_EINVAL, "query.min_score: %g, must be in [0, 1]", query->min_score);
  if (engram__query_mode_check(query) != 0) return ENGRAM_EINVAL;
  if (opts != NULL && opts->source != NULL)
    return engram__error(ENGRAM_EINVAL, "opts.source: must be NULL (the sources are named in sources)");
  if (opts != NULL && opts->order_by != ENGRAM_ORDER_DEFAULT)
    return engram__error(ENGRAM_EINVAL, "opts.order_by: %d, must be 0 (the fused ranking orders the results)",
                         opts->order_by);
  for (i = 0; i < n; i++) weights[i] = 1.0;
  if (fusion == NULL) return 0;
  if (fusion->fusion != ENGRAM_FUSION_RRF && fusion->fusion != ENGRAM_FUSION_WEIGHTED)
    return engram__error(ENGRAM_EINVAL, "fusion.fusion: %d is not a fusion (0 rrf, 1 weighted)", fusion->fusion);
  if (!(fusion->alpha >= 0.0 && fusion->alpha <= 1.0))
    return engram__error(ENGRAM_EINVAL, "fusion.alpha: %g, must be in [0, 1]", fusion->alpha);
  if (fusion->rrf_k > LIMIT_MAX) return engram__error(ENGRAM_EINVAL, "fusion.rrf_k: %u, must be 1..%d", fusion->rrf_k, LIMIT_MAX);
  if (fusion->weights != NULL) {
    for (i = 0; i < n; i++) {
      if (!(isfinite(fusion->weights[i]) && fusion->weights[i] >= 0))
        return engram__error(ENGRAM_EINVAL, "fusion.weights[%zu]: %g, must be a finite number ≥ 0", i, fusion->weights[i]);
      weights[i] = fusion->weights[i];
      sum += weights[i];
    }
    if (sum <= 0) return engram__error(ENGRAM_EINVAL, "fusion.weights: all 0 (at least one must be positive)");
  } else if (fusion->fusion == ENGRAM_FUSION_WEIGHTED && n == 2) {
    weights[0] = 1.0 - fusion->alpha;
    weights[1] = fusion->alpha;
  }
  return 0;
}

int engram_search_sources(engram_manager_t *mgr, const char *const *sources, size_t n_sources,
                          const engram_query_t *query, const engram_fusion_opts_t *fusion, const engram_opts_t *opts,
                          engram_cb cb, void *ud) {
  static const engram_opts_t no_opts;
  unsigned flags[ENGRAM_SEARCH_SOURCES_MAX];
  sm_t *s;
  size_t i;
  int rc;
  if (mgr == NULL) return engram__error(ENGRAM_EINVAL, "mgr: NULL");
  if (cb == NULL) return engram__error(ENGRAM_EINVAL, "cb: NULL");
  if (opts == NULL) opts = &no_opts;
  if (sources == NULL || n_sources == 0 || n_sources > ENGRAM_SEARCH_SOURCES_MAX) {
    double w;
    return check_args(sources, n_sources, query, fusion, opts, &w);
  }
  if ((s = engram_calloc(1, sizeof *s + n_sources * sizeof *s->parts)) == NULL ||
      (s->weights = engram_calloc(n_sources, sizeof *s->weights)) == NULL) {
    engram_free(s);
    return engram__error(ENGRAM_ENOMEM, "out of memory starting the search");
  }
  s->n = n_sources;
  if ((rc = check_args(sources, n_sources, query, fusion, opts, s->weights)) != 0) {
    sm_free(s);
    return rc;
  }
  /* Every source must exist before anything is sent (the table may still change before each send). */
  if (atomic_load_explicit(&mgr->closed, memory_order_acquire)) {
    sm_free(s);
    return engram__error(ENGRAM_ECLOSED, "manager: closed");
  }
  uv_rwlock_rdlock(&mgr->lock);
  for (i = 0; i < n_sources; i++) {
    engram_source_t *src = engram__manager_find_locked(mgr, sources[i]);
    if (src == NULL) {
      uv_rwlock_rdunlock(&mgr->lock);
      sm_free(s);
      return engram__error(ENGRAM_EUNKNOWN_SOURCE, "sources[%zu]: unknown memory source '%.64s'", i, sources[i]);
    }
    flags[i] = src->vt->flags;
  }
  uv_rwlock_rdunlock(&mgr->lock);
  s->cb = cb;
  s->ud = ud;
  s->fusion = fusion ? fusion->fusion : ENGRAM_FUSION_RRF;
  s->rrf_k = fusion && fusion->rrf_k ? fusion->rrf_k : RRF_K_DEFAULT;
  s->offset = query->offset;
  s->limit = query->limit;
  s->min_score = query->min_score;
  for (i = 0; i < n_sources; i++) {
    s->parts[i].call = s;
    snprintf(s->parts[i].name, sizeof s->parts[i].name, "%s", sources[i]);
  }
  atomic_init(&s->pending, n_sources);
  atomic_init(&s->abandoned, 0);
  for (i = 0; i < n_sources; i++) {
    engram_query_t q = *query;
    engram_opts_t o = *opts;
    q.offset = 0;
    q.limit = query->offset + query->limit;
    q.min_score = 0;
    if (!(flags[i] & ENGRAM_SOURCE_SEARCH_MODES) && engram__query_mode_needs_vector(&q)) {
      q.mode = ENGRAM_MODE_DEFAULT;
      q.fusion = ENGRAM_FUSION_RRF;
      q.alpha = 0;
    }
    o.source = s->parts[i].name;
    if ((rc = engram_search(mgr, &q, &o, on_part, &s->parts[i])) != 0) {
      /* The answers of the searches already sent are absorbed; the ones not sent are never due. */
      atomic_store_explicit(&s->abandoned, 1, memory_order_release);
      if (atomic_fetch_sub_explicit(&s->pending, n_sources - i, memory_order_acq_rel) == n_sources - i) sm_free(s);
      return rc; /* engram_search set the last error */
    }
  }
  return 0;
}
