/*
 * sqlite_json.h — the SQLite source's JSON printer (sqlite_json.c): the compact text of a value or of metadata,
 * written into a buffer the caller keeps from one store to the next. Needs nothing of the source; sqlite.c calls
 * it for the value and metadata columns.
 */
#ifndef ENGRAM_SOURCES_SQLITE_JSON_H
#define ENGRAM_SOURCES_SQLITE_JSON_H

#include <stddef.h>

#include "engram/source.h"

/* Prints v as compact JSON into *buf (grown as needed, reused across calls); NULL on ENOMEM. */
const char *engram__sq_print(char **buf, size_t *cap, const cJSON *v);

#endif
