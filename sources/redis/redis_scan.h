/*
 * redis_scan.h — the redis source's operations that walk a namespace index: list_keys, search and count (ranked
 * text search handed to redis_search.h), and clear.
 */
#ifndef ENGRAM_REDIS_SCAN_H
#define ENGRAM_REDIS_SCAN_H

#include "redis_state.h"

void engram__redis_list_keys(engram__redis_t *r, engram_request_t *req);
/* Search or count: by vector refused, with text to redis_search.c, else the walk with pipelined HMGETs. */
void engram__redis_search(engram__redis_t *r, engram_request_t *req);
void engram__redis_clear(engram__redis_t *r, engram_request_t *req);

#endif
