/*
 * vector_hybrid.h — the vector source's search modes (vector_hybrid.c): BM25 text ranking over its items,
 * hybrid ranking (the vector and text rankings fused), the options that set the default mode, and the upkeep
 * of the BM25 index. Called by vector.c (options, queries, close), vector_query.c (hybrid, once the query
 * vector is known) and, through a function pointer, vector_items.c (every item added or removed).
 */
#ifndef ENGRAM_VECTOR_HYBRID_H
#define ENGRAM_VECTOR_HYBRID_H

#include <stddef.h>

#include "vector_source.h"

/* The option names this file reads, for vector.c's list of known options. */
#define ENGRAM__VH_OPTION_NAMES "search_mode", "alpha", "rrf_k", "hybrid_candidates"

/* Reads "search_mode", "alpha", "rrf_k" and "hybrid_candidates" into v. 0, or ENGRAM_EINVAL with a message naming
 * the option in err. */
int engram__vh_options(engram__vsrc_t *v, const cJSON *options, char *err, size_t errlen);
/* The mode req searches in: its query's, else the source's default (ENGRAM_MODE_TEXT, _VECTOR or _HYBRID). */
int engram__vh_mode(const engram__vsrc_t *v, const engram_request_t *req);
/* Text mode: ranks query.text (never NULL here: vector.c scans by pattern and filter without it) by BM25 over the
 * items. Completes req. */
void engram__vh_text(engram__vsrc_t *v, engram_request_t *req);
/* Hybrid mode, once the query vector is known: fuses the vector ranking (qvec; re-ranked by the exact term
 * cosine under the built-in embedder when qterms are given) with the BM25 ranking of query.text. Completes req. */
void engram__vh_hybrid(engram__vsrc_t *v, engram_request_t *req, const float *qvec, const engram__term_t *qterms,
                       size_t nqterms);
/* (vector_items.c reaches the index upkeep through v->on_item, which engram__vh_options sets, and frees the
 * index itself before it frees every item: the upkeep calls down into vector_items.c, never the reverse.) */

#endif
