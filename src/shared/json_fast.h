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

/* The root's flag of a tree that is one block it owns (engram__json_fast_parse_block; beside cJSON_IsReference,
 * which makes cJSON_Delete of the root free the block whole and nothing under it): such a tree may be handed over
 * whole to a reader that frees it with cJSON_Delete and never changes it (request.c, engram__reply_take_read). Not
 * a cJSON flag: cJSON's functions look at the low byte of `type`, and cJSON_Duplicate's copy keeps the bit on a
 * root it does not flag cJSON_IsReference, which says nothing then. */
#define ENGRAM__CJSON_BLOCK 0x1000

/* engram__json_fast_parse's tree in one block: the nodes (the root first) then the strings, measured by a first pass
 * over the text and allocated with cJSON_malloc once; the root flagged cJSON_IsReference | ENGRAM__CJSON_BLOCK. NULL
 * where the fast path gives up, or out of memory. Any thread. */
cJSON *engram__json_fast_parse_block(const char *text, size_t len);

#endif
