/*
 * postgres_update.h — the PostgreSQL source's native update (postgres_update.c): read, the user's function, a
 * store conditional on the version read; updates of one key run one after another within the source.
 */
#ifndef ENGRAM_POSTGRES_UPDATE_H
#define ENGRAM_POSTGRES_UPDATE_H

#include "postgres_src.h"

void engram__pg_update(engram_source_t *src, engram_request_t *req);
void engram__pg_update_free(pg_t *pg); /* at close: the waiting calls end (ECANCELED), memory goes */

#endif
