/*
 * redis_batch.h — the redis source's batch operations: retrieve_many and delete_many (every command sent at
 * once, one round trip) and store_many (its entries join the store coalescing, redis_store.h).
 */
#ifndef ENGRAM_REDIS_BATCH_H
#define ENGRAM_REDIS_BATCH_H

#include <stddef.h>
#include <stdint.h>

#include "redis_state.h"

/* Runs a store_many, retrieve_many or delete_many request. */
void engram__redis_batch(engram__redis_t *r, engram_request_t *req);
/* The result of entry i of a store_many request started by engram__redis_batch (an engram__redis_stored_fn for
 * ENGRAM_OP_STORE_MANY): status 0 (with version and created), ENGRAM_EEXIST or ENGRAM_ECONFLICT (the entry's
 * status), or an error that fails the whole call (msg: its message, or NULL). The call finishes with its last
 * entry's result. */
void engram__redis_batch_stored(engram__redis_t *r, engram_request_t *req, size_t i, int status, uint64_t version,
                                int64_t created, const char *msg);

#endif
