/*
 * postgres_query.h — the PostgreSQL source's queries (postgres_query.c): search, count and list_keys.
 */
#ifndef ENGRAM_POSTGRES_QUERY_H
#define ENGRAM_POSTGRES_QUERY_H

#include "postgres_src.h"

void engram__pg_search(engram_source_t *src, engram_request_t *req);
void engram__pg_count(engram_source_t *src, engram_request_t *req);
void engram__pg_list_keys(engram_source_t *src, engram_request_t *req);

#endif
