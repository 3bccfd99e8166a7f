/*
 * postgres_route.h — where a call of the PostgreSQL source goes (postgres_route.c): a ready connection of the
 * pool, or nowhere — the call then failed fast (ENGRAM_EUNAVAILABLE with the last connection error), or, with
 * wait_for_connection, waits parked until a connection is up or its deadline passes.
 */
#ifndef ENGRAM_POSTGRES_ROUTE_H
#define ENGRAM_POSTGRES_ROUTE_H

#include "postgres_src.h"

/* A ready connection for the call (key: one key keeps one connection), or NULL after the call was failed or
 * parked. */
pgc_t *engram__pg_route(pg_t *pg, engram_request_t *req, const char *key, size_t key_len);
/* A connection is up: every parked call goes through dispatch again, in arrival order. */
void engram__pg_unpark(pg_t *pg, void (*dispatch)(engram_source_t *src, engram_request_t *req));
/* At close: every parked call ends with ENGRAM_ECANCELED. */
void engram__pg_park_cancel(pg_t *pg);

#endif
