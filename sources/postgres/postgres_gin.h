/*
 * postgres_gin.h — upkeep of the PostgreSQL source's text index (postgres_gin.c): the pending list of the GIN
 * index is merged on a maintenance connection once enough tsvector text was stored.
 */
#ifndef ENGRAM_POSTGRES_GIN_H
#define ENGRAM_POSTGRES_GIN_H

#include "postgres_src.h"

/* A store queued a tsvector of bytes bytes: starts a cleaning of the index's pending list when enough piled up. */
void engram__pg_gin_note(pg_t *pg, size_t bytes);

#endif
