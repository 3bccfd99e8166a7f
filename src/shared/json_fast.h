/*
 * json_fast.h — a fast path from JSON text to cJSON (json_fast.c), under engram_json_parse (json_text.c).
 */
#ifndef ENGRAM_JSON_FAST_H
#define ENGRAM_JSON_FAST_H

#include <stddef.h>

#include <cjson/cJSON.h>

/* The tree of len bytes of JSON text by the fast path (the common shapes of stored values), the same tree
 * cJSON_ParseWithLength would build; NULL when the fast path gives up (any other shape, text that is not JSON, or
 * no memory): the caller then asks cJSON. Any thread. */
cJSON *engram__json_fast_parse(const char *text, size_t len);

#endif
