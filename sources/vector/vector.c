/*
 * vector.c — the vector source (BeamMePrompty's `memory_source :vectors, ...`): an in-process index that keeps
 * every item with an embedding of its text and searches by meaning — exact k-NN over a float32 matrix — on an
 * actor thread of its own, optionally persisted in a SQLite file. This file holds its options, its open and
 * close, the request queue, and the path of every write through the embedder. It is the top of the backend: it
 * calls the other files and none calls it. Below it, vector_query.c answers from the table, vector_items.c keeps
 * it (and persists it through vector_store.c), vector_knn.c ranks, vector_embed.c names embedders and holds the
 * embed call's context (a job's first member), and embed_hash.c hashes text for the built-in embedder. An
 * "embedder" option that is an object ({"type": "openai", ...}) gives the source an embedder of its own for an
 * HTTP embedding service (embed_openai.c, over vector_http.c), adopted unnamed into the registry's references.
 *
 * Requests run one at a time in arrival order. Most finish at once; a write or a text query that needs an
 * embedder which answers asynchronously (an HTTP model) holds the queue until the embedder reports, so the
 * writes of one caller apply in order and an update stays atomic. A store_many embeds its texts in one call
 * (split by the embedder's max_batch). The embed call's context (engram_embed_loop & co.) lives in a job that
 * outlives the request when the embedder answers late: the deadline (or embed_timeout_ms) ends the request
 * with ENGRAM_ETIMEDOUT and frees the queue, and the late answer only frees the job — nothing is stored half.
 * Every embedder answer is checked: an error → ENGRAM_EEMBED with its message, another dimension →
 * ENGRAM_EDIMENSION, a NaN or infinity → ENGRAM_EEMBED; a batch is stored only when all its vectors are good.
 *
 * The built-in "hash" embedder runs inline (no job): document vectors at store, and query vectors whose words
 * are weighted by a hashed idf over this source's items; text queries then keep only items sharing a word with
 * the query and re-rank the best `rerank` candidates exactly (vector_query.c).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "embed_openai.h"
#include "vector_hybrid.h"
#include "vector_items.h"
#include "vector_query.h"

#define DEFAULT_DIMENSION 384
#define DEFAULT_RERANK 1000

typedef struct {
  const char *key;
  size_t key_len;
  const cJSON *value, *meta; /* borrowed from the request (or the job, for update) */
  char *vtext, *mtext;       /* compact JSON */
  size_t vlen, mlen;
  char *etext;               /* the text to embed; NULL when the value has none */
  engram__term_t *terms;
  size_t nterms;
  int64_t expires_at_ms;
  uint64_t if_version;
  unsigned flags;
  int status;
} wplan_t;

struct engram__vjob_s {
  engram__embed_call_t call; /* first: the embedder's cb_ud is the job (vector_embed.h) */
  engram__vsrc_t *v;     /* NULL once orphaned (timed out, source closed): the next answer only frees the job */
  engram_request_t *req; /* NULL once orphaned */
  const engram_embedder_t *emb;
  wplan_t *plans;        /* writes */
  size_t n_plans;
  cJSON *owned_value, *owned_meta; /* update's new value and kept metadata */
  engram__term_t *qterms;          /* text query: its unit-normalized words */
  size_t nqterms;
  const char **texts;
  size_t *text_row;      /* texts[i] fills vecs row text_row[i] */
  size_t n_texts, next, sent;
  float *vecs;
  unsigned calls, answers;
  int in_call, chunk_ready, finished;
};

static void drain(engram__vsrc_t *v);

/* ---- Jobs ---- */

/* The job an embedder's answer is for (its cb_ud), or NULL when it is not a live job. */
static engram__vjob_t *job_of(void *cb_ud) { return (engram__vjob_t *)engram__embed_call_of(cb_ud); }

static void plan_clear(wplan_t *p) {
  engram_free(p->vtext);
  engram_free(p->mtext);
  engram_free(p->etext);
  engram_free(p->terms);
}

static void job_free(engram__vjob_t *j) {
  size_t i;
  for (i = 0; i < j->n_plans; i++) plan_clear(&j->plans[i]);
  engram_free(j->plans);
  cJSON_Delete(j->owned_value);
  cJSON_Delete(j->owned_meta);
  engram_free(j->qterms);
  engram_free((void *)j->texts);
  engram_free(j->text_row);
  engram_free(j->vecs);
  engram__embed_call_clear(&j->call);
  engram_free(j);
}

static engram__vjob_t *job_new(engram__vsrc_t *v, engram_request_t *req, size_t n_plans, int purpose) {
  engram__vjob_t *j = engram_calloc(1, sizeof *j);
  if (j == NULL) return NULL;
  engram__embed_call_init(&j->call, v->loop, v->dim, purpose, v->name);
  j->v = v;
  j->req = req;
  j->emb = engram__embedder_of(v->emb);
  if (n_plans && (j->plans = engram_calloc(n_plans, sizeof *j->plans)) == NULL) {
    engram_free(j);
    return NULL;
  }
  j->n_plans = n_plans;
  if ((j->vecs = engram_calloc(n_plans ? n_plans : 1, v->dim * sizeof(float))) == NULL) {
    job_free(j);
    return NULL;
  }
  return j;
}

/* Does text hold a word (something engram_tokenize would return)? */
static int has_word(const char *s) {
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c >= 0x80 || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return 1;
  }
  return 0;
}

/* ---- Text of a value ---- */

static const cJSON *walk_path(const cJSON *value, const char *path) {
  const cJSON *node = value;
  const char *p = path;
  char seg[256];
  while (node != NULL && *p) {
    size_t n = strcspn(p, ".");
    if (n >= sizeof seg) return NULL;
    memcpy(seg, p, n);
    seg[n] = '\0';
    if (cJSON_IsObject(node)) node = cJSON_GetObjectItemCaseSensitive(node, seg);
    else if (cJSON_IsArray(node) && n > 0 && strspn(seg, "0123456789") == n) node = cJSON_GetArrayItem(node, atoi(seg));
    else return NULL;
    p += n;
    if (*p == '.') p++;
  }
  return node;
}

/* The text embedded for value: a string as it is; else the text_fields (each a dotted path, its string leaves)
 * joined by newlines; else every string leaf. *out is "" when there is none; returns 0 or ENGRAM_ENOMEM. */
static int text_for(const engram__vsrc_t *v, const cJSON *value, char **out) {
  size_t i, len = 0;
  char *acc = NULL;
  *out = NULL;
  if (cJSON_IsString(value) && value->valuestring != NULL) {
    *out = engram_strdup(value->valuestring);
    return *out ? 0 : ENGRAM_ENOMEM;
  }
  if (v->text_fields == NULL) {
    *out = engram_text_of(NULL, value);
    return *out ? 0 : ENGRAM_ENOMEM;
  }
  if ((acc = engram_strdup("")) == NULL) return ENGRAM_ENOMEM;
  for (i = 0; i < v->n_text_fields; i++) {
    const cJSON *node = walk_path(value, v->text_fields[i]);
    char *part, *grown;
    size_t n;
    if (node == NULL) continue;
    part = cJSON_IsString(node) ? engram_strdup(node->valuestring) : engram_text_of(NULL, node);
    if (part == NULL) {
      engram_free(acc);
      return ENGRAM_ENOMEM;
    }
    n = strlen(part);
    if ((grown = engram_realloc(acc, len + n + 2)) == NULL) {
      engram_free(part);
      engram_free(acc);
      return ENGRAM_ENOMEM;
    }
    acc = grown;
    if (len > 0) acc[len++] = '\n';
    memcpy(acc + len, part, n + 1);
    len += n;
    engram_free(part);
  }
  *out = acc;
  return 0;
}

/* Analyzes text into v->text with document weights; copies the unit-normalized words into *terms. When vec is
 * given (the built-in embedder), writes the hashed document vector there too. */
static int analyze_doc(engram__vsrc_t *v, const char *text, engram__term_t **terms, size_t *nterms, float *vec) {
  int rc = engram__hash_analyze(&v->text, text, strlen(text));
  if (rc != 0) return rc;
  engram__hash_weights_doc(&v->text);
  if (vec != NULL) engram__hash_sketch(&v->text, vec, v->dim);
  engram__hash_normalize_terms(&v->text);
  *terms = NULL;
  *nterms = v->text.n_terms;
  if (*nterms == 0) return 0;
  if ((*terms = engram_malloc(*nterms * sizeof **terms)) == NULL) return ENGRAM_ENOMEM;
  memcpy(*terms, v->text.terms, *nterms * sizeof **terms);
  return 0;
}

/* ---- Writes ---- */

static int precheck(engram__vsrc_t *v, engram_request_t *req, const wplan_t *p) {
  engram__vitem_t *e = engram__vx_find(v, req->ns, req->ns_len, p->key, p->key_len, engram_now_ms());
  if (e != NULL && (p->flags & ENGRAM_OPT_CREATE_ONLY)) return ENGRAM_EEXIST;
  if (p->if_version != 0 && (e == NULL || e->version != p->if_version)) return ENGRAM_ECONFLICT;
  return 0;
}

/* Fills plan i from (key, value, meta); a failure is recorded in the plan's status. */
static void plan_write(engram__vsrc_t *v, engram__vjob_t *j, size_t i, const char *key, const cJSON *value,
                       const cJSON *meta, int64_t expires, uint64_t if_version, unsigned flags) {
  wplan_t *p = &j->plans[i];
  p->key = key;
  p->key_len = strlen(key);
  p->value = value;
  p->meta = meta;
  p->expires_at_ms = expires;
  p->if_version = if_version;
  p->flags = flags;
  if ((p->status = precheck(v, j->req, p)) != 0) return;
  if ((p->vtext = engram_json_print_text(value)) == NULL) {
    p->status = ENGRAM_ENOMEM;
    return;
  }
  p->vlen = strlen(p->vtext);
  if (v->max_value_bytes && p->vlen > v->max_value_bytes) {
    p->status = ENGRAM_ETOOBIG;
    return;
  }
  if (meta != NULL) {
    if ((p->mtext = engram_json_print_text(meta)) == NULL) {
      p->status = ENGRAM_ENOMEM;
      return;
    }
    p->mlen = strlen(p->mtext);
  }
  if ((p->status = text_for(v, value, &p->etext)) != 0) return;
  if (!has_word(p->etext)) { /* nothing to embed: a zero vector, never a text match */
    engram_free(p->etext);
    p->etext = NULL;
    return;
  }
  if (v->keep_terms)
    p->status = analyze_doc(v, p->etext, &p->terms, &p->nterms, v->builtin ? j->vecs + i * v->dim : NULL);
}

static void fail_write(engram__vsrc_t *v, engram_request_t *req, const wplan_t *p, int rc) {
  if (rc == ENGRAM_EEXIST) engram_request_fail_exists(req, p->key);
  else if (rc == ENGRAM_ECONFLICT) engram_request_fail_conflict(req, p->key, p->if_version);
  else if (rc == ENGRAM_ETOOBIG)
    engram_request_fail(req, rc, "key '%s': value larger than max_value_bytes (%zu)", p->key, v->max_value_bytes);
  else if (rc == ENGRAM_EBACKEND)
    engram_request_fail(req, rc, "writing '%s' to \"%s\": %s", p->key, v->path, engram__vstore_errmsg(v->store));
  else engram_request_complete(req, rc);
}

static int reply_written(engram_request_t *req, const engram__vitem_t *e, const wplan_t *p, int with_value) {
  engram_item_t it;
  memset(&it, 0, sizeof it);
  it.key = p->key;
  it.ns = req->ns;
  it.value = with_value ? p->value : NULL;
  it.metadata = p->meta;
  it.created_at_ms = e->created_at_ms;
  it.updated_at_ms = e->updated_at_ms;
  it.expires_at_ms = e->expires_at_ms;
  it.version = e->version;
  it.score = 1.0;
  return engram_reply_add(req, &it, 0);
}

/* Stores every plan that is still good, with the vectors in j->vecs, and completes the request. */
static void apply_writes(engram__vsrc_t *v, engram__vjob_t *j) {
  engram_request_t *req = j->req;
  int64_t now = req->now_ms;
  size_t i, ok = 0;
  engram_item_t blank;
  for (i = 0; i < j->n_plans; i++) {
    wplan_t *p = &j->plans[i];
    engram__vput_t put;
    engram__vitem_t *e = NULL;
    if (p->status == 0) p->status = precheck(v, req, p); /* the table may have changed while embedding */
    if (p->status == 0) {
      memset(&put, 0, sizeof put);
      put.key = p->key, put.key_len = p->key_len, put.value = p->vtext, put.value_len = p->vlen;
      put.meta = p->mtext, put.meta_len = p->mlen, put.expires_at_ms = p->expires_at_ms;
      put.vec = j->vecs + i * v->dim, put.terms = p->terms, put.nterms = p->nterms;
      p->status = engram__vx_put(v, req->ns, req->ns_len, now, &put, &e);
    }
    if (req->op != ENGRAM_OP_STORE_MANY) {
      int rc;
      if (p->status != 0) {
        fail_write(v, req, p, p->status);
        return;
      }
      rc = reply_written(req, e, p, req->op == ENGRAM_OP_UPDATE);
      engram__vx_finish(v, req, rc == 0 ? 0 : ENGRAM_ENOMEM); /* stored; only the reply may be short */
      return;
    }
    if (p->status == 0 && reply_written(req, e, p, 0) == 0) {
      ok++;
    } else {
      memset(&blank, 0, sizeof blank);
      blank.key = p->key;
      blank.ns = req->ns;
      if (p->status == 0 || engram_reply_add(req, &blank, 0) != 0) {
        engram__vx_finish(v, req, ENGRAM_ENOMEM);
        return;
      }
    }
    engram_reply_set_item_status(req, i, p->status);
  }
  engram_reply_set_count(req, ok);
  engram__vx_finish(v, req, 0);
}

/* ---- Running a job through the embedder ---- */

static void job_end(engram__vjob_t *j);

static void job_fail(engram__vjob_t *j, int status, const char *fmt, const char *a, const char *b) {
  engram_request_t *req = j->req;
  char msg[900];
  snprintf(msg, sizeof msg, fmt, a, b);
  j->v->embed_errors++;
  engram_request_fail(req, status, "%s", msg);
  job_end(j);
}

static void start_calls(engram__vjob_t *j);

static void on_embedded(void *cb_ud, int status, const char *error_message, const float *vectors, size_t dimension) {
  engram__vjob_t *j = job_of(cb_ud);
  engram__vsrc_t *v;
  size_t i, n;
  if (j == NULL) return;
  if (j->answers >= j->calls) return; /* a second answer to one call: ignored */
  j->answers++;
  if ((v = j->v) == NULL) { /* orphaned: the caller was answered already */
    if (!j->in_call) job_free(j);
    else j->finished = 1;
    return;
  }
  if (!j->in_call) uv_timer_stop(&v->job_timer);
  n = j->sent;
  if (engram_request_answered(j->req)) {
    v->embed_late++;
    engram_request_complete(j->req, ENGRAM_ETIMEDOUT); /* already answered: this only releases it */
    job_end(j);
    return;
  }
  if (status == ENGRAM_EDIMENSION) { /* the embedder saw vectors of another dimension (embed_openai.c) */
    job_fail(j, ENGRAM_EDIMENSION, "embedder '%s': %s", engram__embedder_name(v->emb),
             error_message && error_message[0] ? error_message : engram_strerror(status));
    return;
  }
  if (status != 0) {
    job_fail(j, ENGRAM_EEMBED, "embedder '%s' failed: %s", engram__embedder_name(v->emb),
             error_message && error_message[0] ? error_message : engram_strerror(status));
    return;
  }
  if (vectors == NULL) {
    job_fail(j, ENGRAM_EEMBED, "embedder '%s' returned no vectors%s", engram__embedder_name(v->emb), "");
    return;
  }
  if (dimension != v->dim) {
    char got[64];
    snprintf(got, sizeof got, "%zu, the source's is %zu", dimension, v->dim);
    job_fail(j, ENGRAM_EDIMENSION, "embedder '%s' returned vectors of dimension %s", engram__embedder_name(v->emb), got);
    return;
  }
  for (i = 0; i < n * dimension; i++)
    if (!isfinite(vectors[i])) {
      job_fail(j, ENGRAM_EEMBED, "embedder '%s' returned a non-finite value%s", engram__embedder_name(v->emb), "");
      return;
    }
  for (i = 0; i < n; i++)
    memcpy(j->vecs + j->text_row[j->next + i] * v->dim, vectors + i * dimension, v->dim * sizeof(float));
  j->next += n;
  if (j->next < j->n_texts) {
    if (j->in_call) j->chunk_ready = 1; /* start_calls goes on with the next chunk */
    else start_calls(j);
    return;
  }
  if (j->call.purpose == ENGRAM_EMBED_QUERY) {
    if (v->metric == ENGRAM__METRIC_COSINE) engram__vec_normalize(j->vecs, v->dim);
    engram__vq_run(v, j->req, j->vecs, j->qterms, j->nqterms, 1);
  } else {
    apply_writes(v, j);
  }
  job_end(j);
}

/* The request is finished: free the queue, and the job unless an embed call is still on the stack. */
static void job_end(engram__vjob_t *j) {
  engram__vsrc_t *v = j->v;
  v->job = NULL;
  v->busy = 0;
  j->v = NULL;
  j->req = NULL;
  if (j->in_call) {
    j->finished = 1;
    return;
  }
  uv_timer_stop(&v->job_timer);
  job_free(j);
  drain(v);
}

static void on_job_timeout(uv_timer_t *t) {
  engram__vsrc_t *v = t->data;
  engram__vjob_t *j = v->job;
  engram_request_t *req;
  if (j == NULL) return;
  req = j->req;
  /* Orphan the job: the embedder's late answer will only free it. */
  j->call.abandoned = 1;
  j->v = NULL;
  j->req = NULL;
  v->job = NULL;
  v->busy = 0;
  v->embed_late++;
  if (engram_request_answered(req)) engram_request_complete(req, ENGRAM_ETIMEDOUT);
  else
    engram_request_fail(req, ENGRAM_ETIMEDOUT, "embedder '%s' did not answer within %u ms",
                        engram__embedder_name(v->emb), v->embed_timeout_ms);
  drain(v);
}

static void arm_timer(engram__vsrc_t *v, engram__vjob_t *j) {
  uint64_t deadline = engram_request_deadline(j->req), now = uv_hrtime() / 1000000u, delay = 0;
  if (deadline != 0) delay = deadline > now ? deadline - now : 0;
  if (v->embed_timeout_ms && (deadline == 0 || v->embed_timeout_ms < delay)) delay = v->embed_timeout_ms;
  else if (deadline == 0) return;
  uv_timer_start(&v->job_timer, on_job_timeout, delay, 0);
}

/* Sends the job's texts to the embedder, chunk after chunk while it answers synchronously. */
static void start_calls(engram__vjob_t *j) {
  for (;;) {
    engram__vsrc_t *v = j->v;
    size_t n = j->n_texts - j->next;
    if (j->emb->max_batch && n > j->emb->max_batch) n = j->emb->max_batch;
    j->sent = n;
    j->calls++;
    j->in_call = 1;
    j->chunk_ready = 0;
    v->embed_calls++;
    j->emb->embed(j->emb, j->texts + j->next, n, on_embedded, &j->call);
    j->in_call = 0;
    if (j->finished) { /* answered from inside embed, and over */
      engram__vsrc_t *vv = v;
      job_free(j);
      if (!vv->closing) drain(vv);
      return;
    }
    if (!j->chunk_ready) {
      arm_timer(v, j);
      return;
    }
  }
}

/* Runs job j: inline when nothing needs the (asynchronous) embedder, else through it. */
static void job_run(engram__vsrc_t *v, engram__vjob_t *j) {
  size_t i, n = 0;
  if (j->call.purpose == ENGRAM_EMBED_DOCUMENT && !v->builtin)
    for (i = 0; i < j->n_plans; i++) n += j->plans[i].status == 0 && j->plans[i].etext != NULL;
  if (j->call.purpose == ENGRAM_EMBED_QUERY) n = 1;
  if (n == 0) {
    apply_writes(v, j);
    job_free(j);
    return;
  }
  if ((j->texts = engram_malloc(n * sizeof *j->texts)) == NULL || (j->text_row = engram_malloc(n * sizeof *j->text_row)) == NULL) {
    engram_request_complete(j->req, ENGRAM_ENOMEM);
    job_free(j);
    return;
  }
  if (j->call.purpose == ENGRAM_EMBED_QUERY) {
    j->texts[0] = j->req->query.text;
    j->text_row[0] = 0;
  } else {
    for (i = 0; i < j->n_plans; i++)
      if (j->plans[i].status == 0 && j->plans[i].etext != NULL) {
        j->texts[j->n_texts] = j->plans[i].etext;
        j->text_row[j->n_texts++] = i;
      }
  }
  j->n_texts = n;
  v->job = j;
  v->busy = 1;
  start_calls(j);
}

/* ---- Operations that write ---- */

static void run_store(engram__vsrc_t *v, engram_request_t *req) {
  engram__vjob_t *j = job_new(v, req, 1, ENGRAM_EMBED_DOCUMENT);
  if (j == NULL) {
    engram_request_complete(req, ENGRAM_ENOMEM);
    return;
  }
  plan_write(v, j, 0, req->key, req->value, req->metadata, req->expires_at_ms, req->if_version, req->flags);
  if (j->plans[0].status != 0) {
    fail_write(v, req, &j->plans[0], j->plans[0].status);
    job_free(j);
    return;
  }
  job_run(v, j);
}

static void run_store_many(engram__vsrc_t *v, engram_request_t *req) {
  engram__vjob_t *j = job_new(v, req, req->n, ENGRAM_EMBED_DOCUMENT);
  size_t i;
  if (j == NULL) {
    engram_request_complete(req, ENGRAM_ENOMEM);
    return;
  }
  for (i = 0; i < req->n; i++)
    plan_write(v, j, i, req->entries[i].key, req->entries[i].value, req->entries[i].metadata,
               req->entry_expires_at_ms ? req->entry_expires_at_ms[i] : 0, 0, req->flags);
  job_run(v, j);
}

static void run_update(engram__vsrc_t *v, engram_request_t *req) {
  engram__vitem_t *e = engram__vx_find(v, req->ns, req->ns_len, req->key, req->key_len, engram_now_ms());
  cJSON *current = NULL, *next = NULL, *meta = NULL;
  engram__vjob_t *j;
  int rc;
  if (e != NULL) {
    current = cJSON_ParseWithLength(VI_VALUE(e), e->value_len);
    if (current == NULL || (e->meta_len && (meta = cJSON_ParseWithLength(VI_META(e), e->meta_len)) == NULL)) {
      cJSON_Delete(current);
      engram_request_complete(req, ENGRAM_ENOMEM);
      return;
    }
  }
  rc = engram_request_run_update(req, current, &next);
  cJSON_Delete(current);
  if (rc != 0) {
    cJSON_Delete(meta);
    engram_request_complete(req, rc);
    return;
  }
  if ((j = job_new(v, req, 1, ENGRAM_EMBED_DOCUMENT)) == NULL) {
    cJSON_Delete(next);
    cJSON_Delete(meta);
    engram_request_complete(req, ENGRAM_ENOMEM);
    return;
  }
  j->owned_value = next;
  j->owned_meta = meta;
  /* ENGRAM_OPT_TTL sets a new expiry; without it the item keeps its own, and a created one takes expires_at_ms
   * (0, or the source's default_ttl_ms stamped by the core). */
  plan_write(v, j, 0, req->key, next, meta,
             (req->flags & ENGRAM_OPT_TTL) ? req->expires_at_ms : e ? e->expires_at_ms : req->expires_at_ms, 0, 0);
  if (j->plans[0].status != 0) {
    fail_write(v, req, &j->plans[0], j->plans[0].status);
    job_free(j);
    return;
  }
  job_run(v, j);
}

/* ---- Queries ---- */

static void run_query(engram__vsrc_t *v, engram_request_t *req) {
  const engram_query_t *q = &req->query;
  float *qvec;
  if (req->op == ENGRAM_OP_SEARCH && q->text != NULL && engram__vh_mode(v, req) == ENGRAM_MODE_TEXT) { /* BM25 */
    engram__vh_text(v, req);
    return;
  }
  if (q->vector != NULL) {
    if (q->dimension != v->dim) {
      engram_request_fail(req, ENGRAM_EDIMENSION, "query vector has dimension %zu, the source's is %zu", q->dimension,
                          v->dim);
      return;
    }
    if ((qvec = engram_malloc(v->dim * sizeof *qvec)) == NULL) {
      engram_request_complete(req, ENGRAM_ENOMEM);
      return;
    }
    memcpy(qvec, q->vector, v->dim * sizeof *qvec);
    if (v->metric == ENGRAM__METRIC_COSINE) engram__vec_normalize(qvec, v->dim);
    engram__vq_run(v, req, qvec, NULL, 0, 0);
    engram_free(qvec);
    return;
  }
  if (q->text == NULL || !has_word(q->text)) {
    if (q->text != NULL && q->text[0] != '\0' && v->share_rule) { /* words asked for, none given: no match */
      if (req->op == ENGRAM_OP_COUNT) engram_reply_set_count(req, 0);
      engram_request_complete(req, 0);
      return;
    }
    engram__vq_run(v, req, NULL, NULL, 0, 0);
    return;
  }
  if ((v->builtin || v->share_rule) && engram__hash_analyze(&v->text, q->text, strlen(q->text)) != 0) {
    engram_request_complete(req, ENGRAM_ENOMEM);
    return;
  }
  if (v->builtin) {
    if ((qvec = engram_malloc(v->dim * sizeof *qvec)) == NULL) {
      engram_request_complete(req, ENGRAM_ENOMEM);
      return;
    }
    engram__hash_weights_query(&v->text, engram__vx_idf, v);
    engram__hash_sketch(&v->text, qvec, v->dim);
    engram__hash_normalize_terms(&v->text);
    engram__vq_run(v, req, qvec, v->text.terms, v->text.n_terms, 1);
    engram_free(qvec);
    return;
  }
  {
    engram__vjob_t *j = job_new(v, req, 0, ENGRAM_EMBED_QUERY);
    if (j == NULL) {
      engram_request_complete(req, ENGRAM_ENOMEM);
      return;
    }
    if (v->share_rule && v->text.n_terms > 0) {
      if ((j->qterms = engram_malloc(v->text.n_terms * sizeof *j->qterms)) == NULL) {
        engram_request_complete(req, ENGRAM_ENOMEM);
        job_free(j);
        return;
      }
      memcpy(j->qterms, v->text.terms, v->text.n_terms * sizeof *j->qterms);
      j->nqterms = v->text.n_terms;
    }
    job_run(v, j);
  }
}

/* ---- The queue ---- */

static void run(engram__vsrc_t *v, engram_request_t *req) {
  if (engram_request_answered(req)) { /* deadline passed while it waited: skip the work */
    engram_request_complete(req, ENGRAM_ECANCELED);
    return;
  }
  switch (req->op) {
    case ENGRAM_OP_STORE: run_store(v, req); break;
    case ENGRAM_OP_STORE_MANY: run_store_many(v, req); break;
    case ENGRAM_OP_UPDATE: run_update(v, req); break;
    case ENGRAM_OP_SEARCH:
    case ENGRAM_OP_COUNT: run_query(v, req); break;
    case ENGRAM_OP_RETRIEVE: engram__vq_retrieve(v, req); break;
    case ENGRAM_OP_RETRIEVE_MANY: engram__vq_retrieve_many(v, req); break;
    case ENGRAM_OP_EXISTS: engram__vq_exists(v, req); break;
    case ENGRAM_OP_DELETE: engram__vq_delete(v, req); break;
    case ENGRAM_OP_DELETE_MANY: engram__vq_delete_many(v, req); break;
    case ENGRAM_OP_LIST_KEYS: engram__vq_list_keys(v, req); break;
    case ENGRAM_OP_CLEAR: engram__vq_clear(v, req); break;
    case ENGRAM_OP_INFO: engram__vq_info(v, req); break;
    default: engram_request_fail(req, ENGRAM_ENOTSUP, "operation %d", (int)req->op); break;
  }
}

static void drain(engram__vsrc_t *v) {
  if (v->draining) return;
  v->draining = 1;
  while (!v->busy && !v->closing && v->q_head != NULL) {
    engram_request_t *req = v->q_head;
    v->q_head = req->backend_data;
    if (v->q_head == NULL) v->q_tail = NULL;
    req->backend_data = NULL;
    run(v, req);
  }
  v->draining = 0;
}

static void enqueue(engram_source_t *src, engram_request_t *req) {
  engram__vsrc_t *v = engram_source_state(src);
  req->backend_data = NULL;
  if (v->q_tail) v->q_tail->backend_data = req;
  else v->q_head = req;
  v->q_tail = req;
  drain(v);
}

/* ---- Options ---- */

static const char *const known_options[] = {"dimension", "metric", "embedder", "embedding_model", "text_fields",
                                            "similarity_threshold", "path", "max_items", "synchronous", "rerank",
                                            "embed_timeout_ms", "sweep_interval_ms", "require_shared_token",
                                            "max_value_bytes", "index", ENGRAM__VH_OPTION_NAMES, NULL};

/* Reads a string option that must be one of choices (NULL-terminated); *out: its index, or def when absent. */
static int opt_choice(const cJSON *options, const char *name, const char *const *choices, const char *must, int def,
                      int *out, char *err, size_t errlen) {
  const char *str;
  int i;
  *out = def;
  if (engram_opt_string(options, name, NULL, 0, &str, err, errlen) != 0) return ENGRAM_EINVAL;
  if (str == NULL) return 0;
  for (i = 0; choices[i] != NULL; i++)
    if (strcmp(str, choices[i]) == 0) {
      *out = i;
      return 0;
    }
  snprintf(err, errlen, "option \"%s\": must be %s", name, must);
  return ENGRAM_EINVAL;
}

/* The "embedder" option as an object: an embedder of this source's own, made from its fields. */
static int embedder_from_object(engram__vsrc_t *v, const cJSON *o, char *err, size_t errlen) {
  const cJSON *type = cJSON_GetObjectItemCaseSensitive(o, "type");
  engram_embedder_t emb;
  char name[ENGRAM__EMBEDDER_NAME_MAX + 1];
  int rc;
  if (!cJSON_IsString(type) || strcmp(type->valuestring, "openai") != 0) {
    snprintf(err, errlen, "option \"embedder\": an object must have \"type\": \"openai\" (or name a registered "
             "embedder with a string)");
    return ENGRAM_EINVAL;
  }
  if ((rc = engram__openai_embedder_new(o, &emb, name, sizeof name, err, errlen)) != 0) return rc;
  if ((v->emb = engram__embedder_adopt(name, &emb, engram__openai_info)) == NULL) {
    emb.destroy(emb.ud);
    snprintf(err, errlen, "out of memory");
    return ENGRAM_ENOMEM;
  }
  return 0;
}

/* One integer member of the "index" object; a mistake is named "index.<name>". */
static int index_uint(const cJSON *o, const char *name, uint64_t def, uint64_t min, uint64_t max, uint64_t *out,
                      char *err, size_t errlen) {
  char inner[300];
  if (engram_opt_uint(o, name, def, min, max, out, inner, sizeof inner) == 0) return 0;
  if (strncmp(inner, "option \"", 8) == 0) snprintf(err, errlen, "option \"index.%s", inner + 8);
  else snprintf(err, errlen, "option \"index.%s\": %s", name, inner);
  return ENGRAM_EINVAL;
}

/* The "index" option: absent or null = exact search only; {"type": "hnsw", "m", "ef_construction", "ef_search",
 * "exact_below"} = the approximate index (vector_hnsw.c), defaults 16, 200, 64, 10000. */
static int parse_index(engram__vsrc_t *v, const cJSON *options, char *err, size_t errlen) {
  static const char *const names[] = {"type", "m", "ef_construction", "ef_search", "exact_below", NULL};
  const cJSON *o = cJSON_GetObjectItemCaseSensitive(options, "index"), *type;
  char inner[300];
  uint64_t u;
  if (o == NULL || cJSON_IsNull(o)) return 0;
  type = cJSON_GetObjectItemCaseSensitive(o, "type");
  if (!cJSON_IsObject(o) || !cJSON_IsString(type) || strcmp(type->valuestring, "hnsw") != 0) {
    snprintf(err, errlen, "option \"index\": must be an object {\"type\": \"hnsw\", \"m\": 16, \"ef_construction\": "
             "200, \"ef_search\": 64, \"exact_below\": 10000} (or null for exact search only)");
    return ENGRAM_EINVAL;
  }
  if (engram_opt_check_names(o, names, inner, sizeof inner) != 0) {
    snprintf(err, errlen, "option \"index\": %s", inner);
    return ENGRAM_EINVAL;
  }
  if (index_uint(o, "m", 16, 2, 128, &u, err, errlen) != 0) return ENGRAM_EINVAL;
  v->hnsw_params.m = (unsigned)u;
  if (index_uint(o, "ef_construction", 200, 1, 4096, &u, err, errlen) != 0) return ENGRAM_EINVAL;
  v->hnsw_params.ef_construction = (unsigned)u;
  if (index_uint(o, "ef_search", 64, 1, 100000, &u, err, errlen) != 0) return ENGRAM_EINVAL;
  v->hnsw_params.ef_search = (unsigned)u;
  if (index_uint(o, "exact_below", 10000, 0, UINT32_MAX, &u, err, errlen) != 0) return ENGRAM_EINVAL;
  v->hnsw_params.exact_below = (size_t)u;
  v->has_index = 1;
  return 0;
}

static int parse_options(engram__vsrc_t *v, const cJSON *options, int *full_sync, char *err, size_t errlen) {
  static const char *const metrics[] = {"cosine", "dot", "l2", NULL}; /* in engram__metric_t order */
  static const char *const syncs[] = {"normal", "full", NULL};
  const cJSON *o;
  const char *emb_name, *path;
  uint64_t u;
  int choice;
  if (engram_opt_check_names(options, known_options, err, errlen) != 0) return ENGRAM_EINVAL;
  if (cJSON_IsObject(o = cJSON_GetObjectItemCaseSensitive(options, "embedder"))) {
    int rc = embedder_from_object(v, o, err, errlen);
    if (rc != 0) return rc;
    emb_name = engram__embedder_name(v->emb);
  } else if (engram_opt_string(options, "embedder", NULL, 0, &emb_name, err, errlen) != 0) {
    return ENGRAM_EINVAL;
  }
  if (emb_name == NULL && engram_opt_string(options, "embedding_model", "hash", 0, &emb_name, err, errlen) != 0)
    return ENGRAM_EINVAL;
  if (v->emb == NULL && (v->emb = engram__embedder_acquire(emb_name)) == NULL) {
    snprintf(err, errlen, "option \"embedder\": no embedder named '%.64s' (built-in: hash; add others with "
             "engram_register_embedder)", emb_name);
    return ENGRAM_EINVAL;
  }
  v->builtin = engram__embedder_is_builtin(v->emb);
  {
    size_t edim = engram__embedder_of(v->emb)->dimension;
    if (engram_opt_uint(options, "dimension", edim ? edim : DEFAULT_DIMENSION, 1, ENGRAM_EMBED_DIMENSION_MAX, &u, err,
                        errlen) != 0)
      return ENGRAM_EINVAL;
    v->dim = (size_t)u;
    if (edim != 0 && v->dim != edim) {
      snprintf(err, errlen, "option \"dimension\": %zu, but embedder '%s' makes vectors of dimension %zu", v->dim,
               emb_name, edim);
      return ENGRAM_EDIMENSION;
    }
  }
  if (opt_choice(options, "metric", metrics, "\"cosine\", \"dot\" or \"l2\"", ENGRAM__METRIC_COSINE, &choice, err,
                 errlen) != 0)
    return ENGRAM_EINVAL;
  v->metric = (engram__metric_t)choice;
  if ((o = cJSON_GetObjectItemCaseSensitive(options, "text_fields")) != NULL) {
    size_t n = cJSON_IsArray(o) ? (size_t)cJSON_GetArraySize(o) : 0;
    const cJSON *f;
    if (!cJSON_IsArray(o) || n == 0) {
      snprintf(err, errlen, "option \"text_fields\": must be a non-empty array of field paths, e.g. [\"text\", \"title\"]");
      return ENGRAM_EINVAL;
    }
    if ((v->text_fields = engram_calloc(n, sizeof *v->text_fields)) == NULL) return ENGRAM_ENOMEM;
    cJSON_ArrayForEach(f, o) {
      if (!cJSON_IsString(f) || f->valuestring[0] == '\0') {
        snprintf(err, errlen, "option \"text_fields\": entry %zu is not a non-empty string", v->n_text_fields);
        return ENGRAM_EINVAL;
      }
      if ((v->text_fields[v->n_text_fields++] = engram_strdup(f->valuestring)) == NULL) return ENGRAM_ENOMEM;
    }
  }
  if ((o = cJSON_GetObjectItemCaseSensitive(options, "similarity_threshold")) != NULL) {
    if (!cJSON_IsNumber(o) || !(o->valuedouble >= 0 && o->valuedouble <= 1)) {
      snprintf(err, errlen, "option \"similarity_threshold\": must be a number in [0, 1]");
      return ENGRAM_EINVAL;
    }
    v->threshold = o->valuedouble;
  }
  if (engram_opt_string(options, "path", NULL, 0, &path, err, errlen) != 0) return ENGRAM_EINVAL;
  if (path != NULL && (v->path = engram_strdup(path)) == NULL) return ENGRAM_ENOMEM;
  if (opt_choice(options, "synchronous", syncs, "\"normal\" or \"full\"", 0, full_sync, err, errlen) != 0)
    return ENGRAM_EINVAL;
  if (engram_opt_bool(options, "require_shared_token", v->builtin, &v->share_rule, err, errlen) != 0)
    return ENGRAM_EINVAL;
  v->keep_terms = v->builtin || v->share_rule;
  if (engram_opt_uint(options, "max_items", 0, 0, UINT32_MAX - 1, &u, err, errlen)) return ENGRAM_EINVAL;
  v->max_items = (size_t)u;
  if (engram_opt_uint(options, "rerank", DEFAULT_RERANK, 0, 100000, &u, err, errlen)) return ENGRAM_EINVAL;
  v->rerank = (size_t)u;
  if (engram_opt_uint(options, "embed_timeout_ms", 30000, 0, 86400000, &u, err, errlen)) return ENGRAM_EINVAL;
  v->embed_timeout_ms = (uint32_t)u;
  if (engram_opt_uint(options, "sweep_interval_ms", 1000, 0, 86400000, &u, err, errlen)) return ENGRAM_EINVAL;
  v->sweep_ms = u;
  if (engram_opt_uint(options, "max_value_bytes", 16u << 20, 1, 1u << 30, &u, err, errlen)) return ENGRAM_EINVAL;
  v->max_value_bytes = (size_t)u;
  if (parse_index(v, options, err, errlen) != 0) return ENGRAM_EINVAL;
  return engram__vh_options(v, options, err, errlen);
}

/* ---- Open and close ---- */

static void free_state(engram__vsrc_t *v) {
  size_t i;
  engram__vx_free_all(v);
  engram__hnsw_free(v->hnsw);
  v->hnsw = NULL;
  engram_free(v->buckets);
  v->buckets = NULL;
  engram__matrix_free(&v->mat);
  engram_free(v->rows);
  v->rows = NULL;
  engram_free(v->df);
  v->df = NULL;
  engram_free(v->scratch);
  v->scratch = NULL;
  engram__hash_text_free(&v->text);
  if (v->store) engram__vstore_close(v->store);
  v->store = NULL;
  for (i = 0; i < v->n_text_fields; i++) engram_free(v->text_fields[i]);
  engram_free(v->text_fields);
  v->text_fields = NULL;
  engram_free(v->path);
  v->path = NULL;
  if (v->emb) engram__embedder_release(v->emb);
  v->emb = NULL;
}

/* Checks (or records) the space the file's vectors live in. */
static int check_file(engram__vsrc_t *v, char *err, size_t errlen) {
  char dim[32], emb[ENGRAM__EMBEDDER_NAME_MAX + 1], want_emb[ENGRAM__EMBEDDER_NAME_MAX + 1];
  int has_dim, has_emb;
  int64_t n = engram__vstore_count(v->store);
  snprintf(want_emb, sizeof want_emb, "%s", v->builtin ? ENGRAM__HASH_EMBEDDER_ID : engram__embedder_name(v->emb));
  has_dim = engram__vstore_get_meta(v->store, "dimension", dim, sizeof dim);
  has_emb = engram__vstore_get_meta(v->store, "embedder", emb, sizeof emb);
  if (n < 0 || has_dim < 0 || has_emb < 0) {
    snprintf(err, errlen, "reading \"%s\": %s", v->path, engram__vstore_errmsg(v->store));
    return ENGRAM_EBACKEND;
  }
  if (n > 0 && has_dim == 1 && strtoull(dim, NULL, 10) != v->dim) {
    snprintf(err, errlen, "\"%s\" holds vectors of dimension %s, the option dimension is %zu", v->path, dim, v->dim);
    return ENGRAM_EDIMENSION;
  }
  if (n > 0 && has_emb == 1 && strcmp(emb, want_emb) != 0) {
    snprintf(err, errlen, "\"%s\" holds vectors made by embedder '%.100s', this source uses '%.100s' (vectors of different "
             "embedders cannot be compared)", v->path, emb, want_emb);
    return ENGRAM_EINVAL;
  }
  snprintf(dim, sizeof dim, "%zu", v->dim);
  if (engram__vstore_set_meta(v->store, "dimension", dim) != 0 ||
      engram__vstore_set_meta(v->store, "embedder", want_emb) != 0) {
    snprintf(err, errlen, "writing \"%s\": %s", v->path, engram__vstore_errmsg(v->store));
    return ENGRAM_EBACKEND;
  }
  return 0;
}

static void on_sweep(uv_timer_t *t) { engram__vx_sweep(t->data); }

static void vector_open(engram_source_t *src, const cJSON *options) {
  engram__vsrc_t *v = engram_source_state(src);
  char err[400];
  int rc, full_sync = 0;
  v->src = src;
  v->loop = engram_source_loop(src);
  snprintf(v->name, sizeof v->name, "%s", engram_source_name(src));
  err[0] = '\0';
  rc = parse_options(v, options, &full_sync, err, sizeof err);
  if (rc == 0 && (rc = engram__vx_init(v)) != 0) snprintf(err, sizeof err, "out of memory");
  if (rc == 0 && v->has_index && (rc = engram__hnsw_new(&v->hnsw, &v->mat, v->metric, &v->hnsw_params)) != 0)
    snprintf(err, sizeof err, "out of memory");
  if (rc == 0 && v->path != NULL) {
    rc = engram__vstore_open(&v->store, v->path, full_sync, err, sizeof err);
    if (rc == 0) rc = check_file(v, err, sizeof err);
    if (rc == 0) rc = engram__vx_load(v, err, sizeof err);
  }
  if (rc != 0) {
    free_state(v);
    engram_source_opened(src, rc, "%s", err[0] ? err : engram_strerror(rc));
    return;
  }
  uv_timer_init(v->loop, &v->job_timer);
  v->job_timer.data = v;
  v->handles = 1;
  if (v->store != NULL) {
    uv_idle_init(v->loop, &v->commit_idle);
    v->commit_idle.data = v;
    v->handles++;
  }
  if (v->sweep_ms > 0) {
    uv_timer_init(v->loop, &v->sweep_timer);
    v->sweep_timer.data = v;
    uv_timer_start(&v->sweep_timer, on_sweep, v->sweep_ms, v->sweep_ms);
    uv_unref((uv_handle_t *)&v->sweep_timer);
    v->handles++;
  }
  engram_source_opened(src, 0, NULL);
}

static void on_handle_closed(uv_handle_t *h) {
  engram__vsrc_t *v = h->data;
  if (--v->handles == 0) engram_source_closed(v->src);
}

static void vector_close(engram_source_t *src) {
  engram__vsrc_t *v = engram_source_state(src);
  engram_request_t *req;
  v->closing = 1;
  if (v->job != NULL) { /* the core answered it (ECANCELED); the embedder's answer will only free the job */
    engram__vjob_t *j = v->job;
    req = j->req;
    j->call.abandoned = 1;
    j->v = NULL;
    j->req = NULL;
    v->job = NULL;
    v->busy = 0;
    engram_request_complete(req, ENGRAM_ECANCELED);
  }
  while ((req = v->q_head) != NULL) {
    v->q_head = req->backend_data;
    req->backend_data = NULL;
    engram_request_complete(req, ENGRAM_ECANCELED);
  }
  v->q_tail = NULL;
  engram__vx_commit(v); /* what was written is kept; the calls were already answered */
  engram__vx_save_index(v); /* the graph, so the next open need not rebuild it (a failure only costs that) */
  if (v->store != NULL) uv_close((uv_handle_t *)&v->commit_idle, on_handle_closed);
  free_state(v);
  uv_close((uv_handle_t *)&v->job_timer, on_handle_closed);
  if (v->sweep_ms > 0) uv_close((uv_handle_t *)&v->sweep_timer, on_handle_closed);
}

const engram_source_vtable_t engram_source_vector = {
    .version = ENGRAM_SOURCE_VTABLE_VERSION,
    .name = "vector",
    .instance_size = sizeof(engram__vsrc_t),
    .flags = ENGRAM_SOURCE_OWN_THREAD | ENGRAM_SOURCE_RANGES | ENGRAM_SOURCE_SEARCH_MODES,
    .open = vector_open,
    .close = vector_close,
    .store = enqueue,
    .retrieve = enqueue,
    .search = enqueue,
    .del = enqueue,
    .list_keys = enqueue,
    .store_many = enqueue,
    .retrieve_many = enqueue,
    .delete_many = enqueue,
    .count = enqueue,
    .exists = enqueue,
    .update = enqueue,
    .clear = enqueue,
    .info = enqueue,
};
