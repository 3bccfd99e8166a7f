/*
 * sqlite_query.h — the SQLite source's queries (sqlite_query.c): search, count and list_keys, the methods that
 * read many rows. Installed in the vtable by sqlite.c; they run on the connection of sqlite_db.c.
 */
#ifndef ENGRAM_SOURCES_SQLITE_QUERY_H
#define ENGRAM_SOURCES_SQLITE_QUERY_H

#include "engram/source.h"

void engram__sqlite_search(engram_source_t *src, engram_request_t *req);
void engram__sqlite_count(engram_source_t *src, engram_request_t *req);
void engram__sqlite_list_keys(engram_source_t *src, engram_request_t *req);

#endif
