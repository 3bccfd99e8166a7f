/*
 * cache_text.h — the cache's text indexes, one engram_text_index per namespace (cache_text.c), so that a
 * namespace's BM25 statistics are its own, as on every other source. Actor thread only.
 */
#ifndef ENGRAM_SOURCES_CACHE_TEXT_H
#define ENGRAM_SOURCES_CACHE_TEXT_H

#include <stddef.h>
#include <stdint.h>

#include "engram/source.h"

typedef struct engram__cache_text_s engram__cache_text_t;

/* A set with no namespace yet. Returns 0 or ENGRAM_ENOMEM. */
int engram__cache_text_new(engram__cache_text_t **out);
/* Frees every index (t may be NULL). */
void engram__cache_text_free(engram__cache_text_t *t);
/* The index of namespace ns (len bytes): NULL when it has none and create is 0, or when memory ran out. */
engram_text_index_t *engram__cache_text_ns(engram__cache_text_t *t, const char *ns, size_t len, int create);
/* Removes document doc from ns's index; the index goes with its last document. */
void engram__cache_text_remove(engram__cache_text_t *t, const char *ns, size_t len, uint64_t doc);

#endif
