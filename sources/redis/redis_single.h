/*
 * redis_single.h — the redis source's single-key operations: store (joins the store coalescing, redis_store.h),
 * retrieve (one HGET of the value, or HMGET of every field with ENGRAM_OPT_INCLUDE_METADATA), exists (EXISTS)
 * and delete (the delete script). Each finishes its request through the call layer.
 */
#ifndef ENGRAM_REDIS_SINGLE_H
#define ENGRAM_REDIS_SINGLE_H

#include <stddef.h>
#include <stdint.h>

#include "redis_state.h"

void engram__redis_store_one(engram__redis_t *r, engram_request_t *req);
/* The result of a store started by engram__redis_store_one (an engram__redis_stored_fn for ENGRAM_OP_STORE):
 * finishes it with the stored item, or the stock completions for EEXIST and ECONFLICT, or the error. */
void engram__redis_store_one_done(engram__redis_t *r, engram_request_t *req, int status, uint64_t version,
                                  int64_t created, const char *msg);
void engram__redis_retrieve(engram__redis_t *r, engram_request_t *req);
void engram__redis_exists(engram__redis_t *r, engram_request_t *req);
void engram__redis_delete(engram__redis_t *r, engram_request_t *req);

#endif
