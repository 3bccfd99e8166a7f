/*
 * postgres_json.h — JSON text read back from PostgreSQL into cJSON (postgres_json.c): a fast path for the common
 * shapes of stored values, and cJSON's own parser for everything else, so the tree is always the one
 * cJSON_ParseWithLength would build.
 *
 * Uses no other file of sources/postgres/.
 */
#ifndef ENGRAM_POSTGRES_JSON_H
#define ENGRAM_POSTGRES_JSON_H

#include <stddef.h>

#include "engram/source.h"

/* Parses len bytes of JSON text (no NUL needed) into a tree freed with cJSON_Delete; NULL when the text is not
 * JSON to cJSON or memory ran out (as cJSON_ParseWithLength). Thread: any. */
cJSON *engram__pg_json_parse(const char *text, size_t len);

#endif
