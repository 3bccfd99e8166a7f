/*
 * redis_rank.h — the text side of the redis source's ranked search, independent of Redis and of the source's
 * state: the indexed text of an item read straight from its stored JSON text, and a streamed BM25 scorer that
 * ranks a namespace's items as they arrive, in key order, without building an index. redis_search.c drives
 * both; tests/test_redis.c checks them against engram_text_of and engram_text_index on their own.
 */
#ifndef ENGRAM_REDIS_RANK_H
#define ENGRAM_REDIS_RANK_H

#include <stddef.h>
#include <stdint.h>

#include "engram/source.h"
#include "redis_rbuf.h"

/* The indexed text of an item (engram_text_of(key, value)) from its stored JSON text, into out (not
 * NUL-terminated; key must be). Returns 0, ENGRAM_ENOMEM, or ENGRAM_EBACKEND when json is not JSON. */
int engram__redis_text_of(engram__rbuf_t *out, const char *key, size_t key_len, const char *json, size_t len);

/* The streamed BM25 scorer: items are added in key order; then scored; then ranked. */
typedef struct engram__redis_rank_s engram__redis_rank_t;
int engram__redis_rank_new(const char *query, engram__redis_rank_t **out);
void engram__redis_rank_free(engram__redis_rank_t *rk);
/* Adds the next item (key order) with its indexed text. Returns 0 or ENGRAM_ENOMEM. */
int engram__redis_rank_add(engram__redis_rank_t *rk, const char *key, size_t key_len, const char *text, size_t len,
                           uint64_t version);
/* The same from the item's stored JSON text, tokenized where it lies; returns 1 (nothing added) when the text
 * is outside the subset it reads (engram__redis_text_of + engram__redis_rank_add then decide). */
int engram__redis_rank_add_json(engram__redis_rank_t *rk, const char *key, size_t key_len, const char *json,
                                size_t len, uint64_t version);
/* Scores the matching items (those holding a query term) once every item was added. */
void engram__redis_rank_score(engram__redis_rank_t *rk);
/* The number of matching items; matching item i's key (NUL-terminated) and score in [0, 1]. */
size_t engram__redis_rank_matching(const engram__redis_rank_t *rk);
const char *engram__redis_rank_key(const engram__redis_rank_t *rk, uint32_t i);
double engram__redis_rank_score_of(const engram__redis_rank_t *rk, uint32_t i);
/* The best m matching items into out (room for m), best first (ties by key); returns how many. */
size_t engram__redis_rank_top(const engram__redis_rank_t *rk, size_t m, uint32_t *out);
/* How many matching items score at least min_score. */
uint64_t engram__redis_rank_count(const engram__redis_rank_t *rk, double min_score);

#endif
