/*
 * redis_search.h — ranked text search and text count of the redis source (BM25 in process), over a walk of the
 * namespace or a cached per-namespace text index.
 */
#ifndef ENGRAM_REDIS_SEARCH_H
#define ENGRAM_REDIS_SEARCH_H

#include "redis_state.h"

/* Search or count with a non-empty query.text. */
void engram__redis_text_search(engram__redis_t *r, engram_request_t *req);
/* Frees every cached index (nothing may use them any more). */
void engram__redis_search_cache_free(engram__redis_t *r);

#endif
