/*
 * redis_search.h — ranked text search and text count of the redis source (BM25 in process), over a walk of the
 * namespace or a cached per-namespace text index.
 */
#ifndef ENGRAM_REDIS_SEARCH_H
#define ENGRAM_REDIS_SEARCH_H

#include "redis_state.h"

/* Search or count with a non-empty query.text. */
void engram__redis_text_search(engram__redis_t *r, engram_request_t *req);
/* Own writes, reported from their replies (in the connection's order) so that a cached index follows them
 * instead of being built again: key of ns now holds value at version (expires: absolute ms, 0 = never) / was
 * deleted; and one call per generation bump a script of ours made (a store batch bumps each namespace it wrote
 * once). A cached index stays valid while the generation moved by exactly its own bumps; anything else (a write
 * by another client, a reply that never came) leaves a gap and the next search builds again. */
void engram__redis_search_wrote(engram__redis_t *r, const char *ns, size_t ns_len, const char *key, size_t key_len,
                                const cJSON *value, uint64_t version, int64_t expires);
void engram__redis_search_removed(engram__redis_t *r, const char *ns, size_t ns_len, const char *key, size_t key_len);
void engram__redis_search_bumped(engram__redis_t *r, const char *ns, size_t ns_len);
/* Frees every cached index (nothing may use them any more). */
void engram__redis_search_cache_free(engram__redis_t *r);

#endif
