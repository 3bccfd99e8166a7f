/*
 * query_mode.h — the checks of a query's mode, fusion and alpha (query_mode.c), for every call that takes a query.
 */
#ifndef ENGRAM_MANAGER_QUERY_MODE_H
#define ENGRAM_MANAGER_QUERY_MODE_H

#include "engram.h"

/* Checks query.mode, query.fusion and query.alpha: 0, or ENGRAM_EINVAL with engram_last_error naming the field
 * ("query.mode: 7 is not a mode (0 default, 1 text, 2 vector, 3 hybrid)", "query.alpha: 1.5, must be in [0,
 * 1]", "query.text: mode hybrid needs words to rank by BM25"). Thread: any. */
int engram__query_mode_check(const engram_query_t *q);

/* Non-zero when the query asks for a ranking only sources with ENGRAM_SOURCE_SEARCH_MODES have (vector, hybrid). */
int engram__query_mode_needs_vector(const engram_query_t *q);

#endif
