/*
 * postgres_append.h — the PostgreSQL source's update with writes (postgres_append.c): the one statement that
 * writes an update's head conditionally together with req->writes (ENGRAM_SOURCE_UPDATE_WRITES), and the reading
 * of its rows back into the writes. The native update (postgres_update.c) sends it.
 */
#ifndef ENGRAM_POSTGRES_APPEND_H
#define ENGRAM_POSTGRES_APPEND_H

#include "postgres_src.h"

/* The statement writing req's head (value, meta, expires; conditional on if_version, or create-only when 0) and
 * req->writes. NULL with *rc ENGRAM_ENOMEM or ENGRAM_ETOOBIG; on ETOOBIG *too_big is the store over
 * max_value_bytes, or (size_t)-1 when it is the head's value. */
pg_op_t *engram__pg_append_op(pg_t *pg, engram_request_t *req, const cJSON *value, const cJSON *meta, int64_t expires,
                              uint64_t if_version, pg_done_fn done, int *rc, size_t *too_big);
/* The same for k appends of one key chained in one statement (postgres_update.c): the head written once with value
 * (the last one's), its version up by k, every request's stores in order (the last of a repeated key wins) and
 * deletes; req is reqs[k - 1]. On ETOOBIG *too_big_req is the request whose store is too big. */
pg_op_t *engram__pg_append_op_n(pg_t *pg, engram_request_t *const *reqs, size_t k, const cJSON *value,
                                const cJSON *meta, int64_t expires, uint64_t if_version, pg_done_fn done, int *rc,
                                size_t *too_big, size_t *too_big_req);
/* Reads the statement's rows: 1 when the head was written (*version, *created and, unless NULL, *stamp — the head
 * row's chg and ctid — set; req->writes's store_version and deleted filled in), 0 when its condition failed
 * (nothing was written). */
int engram__pg_append_result(engram_request_t *req, const PGresult *res, uint64_t *version, int64_t *created,
                             pg_stamp_t *stamp);

#endif
