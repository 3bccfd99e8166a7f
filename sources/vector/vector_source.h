/*
 * vector_source.h — the vector source's per-instance state (engram__vsrc_t), which its files share: vector.c
 * sets the options, runs the request queue and the embed jobs, and writes; vector_items.c keeps the item table,
 * the matrix rows, the document-frequency table and the file; vector_query.c answers from them. The functions
 * are declared by each file's own header (vector_items.h, vector_query.h); this header declares none.
 */
#ifndef ENGRAM_VECTOR_SOURCE_H
#define ENGRAM_VECTOR_SOURCE_H

#include <stdint.h>
#include <uv.h>

#include "embed_hash.h"
#include "engram/source.h"
#include "vector_embed.h"
#include "vector_hnsw.h"
#include "vector_knn.h"
#include "vector_store.h"

#define ENGRAM__DF_BITS 18 /* the hashed document-frequency table: 2^18 counters (1 MiB) */

typedef struct engram__vitem_s engram__vitem_t; /* an item (vector_items.h) */
typedef struct engram__vjob_s engram__vjob_t;   /* an embed job (vector.c) */

typedef struct engram__vsrc_s {
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
  /* Search modes (vector_hybrid.c): the default mode and fusion, and the BM25 index built at the first text or
   * hybrid search and kept in step with the items from then on (NULL until then, or after it ran out of memory):
   * vector_items.c calls on_item for every item added (delta 1) or about to be removed (-1) while tix exists. */
  int search_mode, fusion;
  double alpha;
  unsigned rrf_k;
  size_t hybrid_candidates;
  engram_text_set_t *tix;    /* BM25, one index per namespace */
  void (*on_item)(struct engram__vsrc_s *v, const engram__vitem_t *e, int delta);
  /* The approximate index (option "index": {"type": "hnsw", ...}), NULL when searches are exact only. It maps
   * nodes to matrix rows; vector_items.c keeps it in step with every row added, changed, moved or removed
   * (except while loading: then the rows are indexed at the end of the load, from the file's saved graph). */
  engram__hnsw_t *hnsw;
  engram__hnsw_params_t hnsw_params;
  int has_index;
  uint64_t ann_searches, exact_searches;
  size_t index_loaded;   /* nodes the last load took from the file's saved graph (the rest were inserted) */
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

#endif
