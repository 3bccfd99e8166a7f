/*
 * postgres_kv.h — the PostgreSQL source's key-value methods (postgres_kv.c): store, retrieve, exists, delete,
 * their pipelined batch forms and clear, and the one statement that stores an item (the update uses it too).
 */
#ifndef ENGRAM_POSTGRES_KV_H
#define ENGRAM_POSTGRES_KV_H

#include "postgres_src.h"

/* The statement that stores one item (upsert, create-only or conditional on if_version). NULL with *rc set to
 * ENGRAM_ENOMEM or ENGRAM_ETOOBIG. */
pg_op_t *engram__pg_store_op(pg_t *pg, engram_request_t *req, const char *key, const cJSON *value, const cJSON *meta,
                             int64_t expires, uint64_t if_version, unsigned flags, pg_done_fn done, int *rc);

void engram__pg_store(engram_source_t *src, engram_request_t *req);
void engram__pg_retrieve(engram_source_t *src, engram_request_t *req);
void engram__pg_exists(engram_source_t *src, engram_request_t *req);
void engram__pg_delete(engram_source_t *src, engram_request_t *req);
void engram__pg_batch(engram_source_t *src, engram_request_t *req); /* store_many, retrieve_many, delete_many */
void engram__pg_clear(engram_source_t *src, engram_request_t *req);

#endif
