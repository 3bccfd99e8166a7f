/*
 * vector_source.h — the vector source's state and the functions its files share: vector.c (options, the request
 * queue, embedding, writes), vector_items.c (the item table, the matrix rows, persistence and group commit)
 * and vector_query.c (search, count, listing, reads, deletes, clear, info).
 */
#ifndef ENGRAM_VECTOR_SOURCE_H
#define ENGRAM_VECTOR_SOURCE_H

#include <stdint.h>
#include <uv.h>

#include "embed_hash.h"
#include "engram/source.h"
#include "vector_embed.h"
#include "vector_knn.h"
#include "vector_store.h"

#define ENGRAM__DF_BITS 18 /* the hashed document-frequency table: 2^18 counters (1 MiB) */

typedef struct engram__vitem_s engram__vitem_t;

/* One item: one allocation holding the record, its term list and its strings (ns, key, value JSON, metadata
 * JSON). Its vector is row `row` of the matrix. */
struct engram__vitem_s {
  engram__vitem_t *hnext;
  engram__vitem_t *older, *newer; /* write order, for max_items (the least recently written goes first) */
  int64_t created_at_ms, updated_at_ms, expires_at_ms;
  uint64_t version;
  uint32_t hash, row, nterms;
  uint16_t ns_len, key_len;
  uint32_t value_len, meta_len; /* meta_len 0 = no metadata */
  engram__term_t terms[];       /* nterms terms sorted by hash, then the strings */
};

#define VI_NS(e) ((char *)((e)->terms + (e)->nterms))
#define VI_KEY(e) (VI_NS(e) + (e)->ns_len + 1)
#define VI_VALUE(e) (VI_KEY(e) + (e)->key_len + 1)
#define VI_META(e) (VI_VALUE(e) + (e)->value_len + 1)

typedef struct engram__vjob_s engram__vjob_t;

typedef struct {
  engram_source_t *src;
  uv_loop_t *loop;
  char name[ENGRAM_SOURCE_NAME_MAX + 1];
  /* Options. */
  size_t dim;
  engram__metric_t metric;
  engram__embedder_ref_t *emb;
  int builtin;           /* the built-in hash embedder: idf-weighted queries, exact re-ranking */
  int share_rule;        /* text queries: only items sharing a word with the query are candidates */
  int keep_terms;        /* items keep their term lists (share rule or built-in) */
  char **text_fields;    /* NULL = every string leaf of the value */
  size_t n_text_fields;
  double threshold;      /* similarity_threshold: the min_score of a query that sets none */
  size_t max_items, max_value_bytes, rerank;
  uint32_t embed_timeout_ms;
  uint64_t sweep_ms;
  /* Items. */
  engram__vitem_t **buckets;
  size_t mask, count;
  engram__vitem_t *newest, *oldest;
  engram__matrix_t mat;
  engram__vitem_t **rows; /* row → item */
  size_t rows_cap;
  uint32_t *df;           /* built-in embedder: items holding each hashed word */
  uint64_t df_docs;
  size_t item_bytes;      /* bytes of the item allocations */
  float *scratch;         /* dim floats */
  engram__hash_text_t text; /* analysis scratch */
  /* Persistence. */
  engram__vstore_t *store;
  char *path;
  engram_request_t *dur_head, *dur_tail; /* acknowledged at the next commit (linked by backend_data) */
  uv_idle_t commit_idle;
  /* The request queue: requests run one at a time, in order; an asynchronous embedding holds the queue. */
  engram_request_t *q_head, *q_tail;
  int draining, busy;
  engram__vjob_t *job;
  uv_timer_t job_timer, sweep_timer;
  int handles;           /* open handles, for close */
  int closing;
  /* Counters for info. */
  uint64_t embed_calls, embed_errors, embed_late, expirations, evictions, commits, commit_errors;
} engram__vsrc_t;

/* ---- vector_items.c ---- */

int engram__vx_init(engram__vsrc_t *v);
void engram__vx_free_all(engram__vsrc_t *v);
int engram__vx_expired(const engram__vitem_t *e, int64_t now);
/* The live item (ns, key), or NULL; an expired one is removed on the way. */
engram__vitem_t *engram__vx_find(engram__vsrc_t *v, const char *ns, size_t ns_len, const char *key, size_t key_len,
                                 int64_t now);

typedef struct {
  const char *key;
  size_t key_len;
  const char *value; /* compact JSON */
  size_t value_len;
  const char *meta;  /* compact JSON or NULL */
  size_t meta_len;
  int64_t expires_at_ms;
  const float *vec;  /* dim floats as the embedder made them */
  const engram__term_t *terms;
  size_t nterms;
} engram__vput_t;

/* Writes an item (write-ahead to the file first, when there is one). Returns 0, ENGRAM_ENOMEM or
 * ENGRAM_EBACKEND (nothing changed). *out: the stored item. */
int engram__vx_put(engram__vsrc_t *v, const char *ns, size_t ns_len, int64_t now, const engram__vput_t *p,
                   engram__vitem_t **out);
/* Removes an item (and its row in the file when persist). Returns 0 or ENGRAM_EBACKEND (nothing changed). */
int engram__vx_remove(engram__vsrc_t *v, engram__vitem_t *e, int persist);
/* The idf of a hashed word over the items (engram__idf_fn). */
double engram__vx_idf(uint32_t hash, void *ud);
/* Loads every item of the file. Returns 0 or an error with a message in err. */
int engram__vx_load(engram__vsrc_t *v, char *err, size_t errlen);
/* Completes req with status now, or, when it wrote to the file, at the next commit. */
void engram__vx_finish(engram__vsrc_t *v, engram_request_t *req, int status);
/* Removes expired items. */
void engram__vx_sweep(engram__vsrc_t *v);
/* Commits what is pending and completes the requests waiting for it (also called at close). */
void engram__vx_commit(engram__vsrc_t *v);
/* Compares two items by (namespace, key). */
int engram__vx_cmp(const engram__vitem_t *a, const engram__vitem_t *b);

/* ---- vector_query.c ---- */

/* Runs a search or count with the query vector qvec (NULL: no similarity) and, for text queries, the query's
 * unit-normalized term list (qterms, for the share rule and re-ranking). Completes req. */
void engram__vq_run(engram__vsrc_t *v, engram_request_t *req, const float *qvec, const engram__term_t *qterms,
                    size_t nqterms, int text_query);
void engram__vq_retrieve(engram__vsrc_t *v, engram_request_t *req);
void engram__vq_retrieve_many(engram__vsrc_t *v, engram_request_t *req);
void engram__vq_exists(engram__vsrc_t *v, engram_request_t *req);
void engram__vq_delete(engram__vsrc_t *v, engram_request_t *req);
void engram__vq_delete_many(engram__vsrc_t *v, engram_request_t *req);
void engram__vq_list_keys(engram__vsrc_t *v, engram_request_t *req);
void engram__vq_clear(engram__vsrc_t *v, engram_request_t *req);
void engram__vq_info(engram__vsrc_t *v, engram_request_t *req);
/* Adds item e to the reply (value and metadata parsed from their JSON). */
int engram__vq_add_item(engram_request_t *req, const engram__vitem_t *e, int with_value, int with_meta, double score);

#endif
