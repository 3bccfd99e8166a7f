/*
 * redis_store.h — stores coalesced into calls of the batch store script: every store (and every entry of a
 * store_many) that starts during one turn of the loop joins the batch being formed, which goes to Redis as one
 * EVALSHA before the loop next polls, as soon as it is full, or before any other command of the source (the
 * call layer's before_send hook is engram__redis_store_flush). Each store's result goes to the stored function
 * given to engram__redis_store_init, exactly once: this file finishes no request itself.
 */
#ifndef ENGRAM_REDIS_STORE_H
#define ENGRAM_REDIS_STORE_H

#include <stddef.h>
#include <uv.h>

#include "redis_state.h"

/* Initialises the prepare handle on r->loop; results go to stored. Returns 0 or ENGRAM_EBACKEND. */
int engram__redis_store_init(engram__redis_t *r, engram__redis_stored_fn *stored);
/* Adds the store of req (ENGRAM_OP_STORE, i = 0) or of its entry i (ENGRAM_OP_STORE_MANY) to the batch being
 * formed. Returns 0 (the result comes later, through stored), or ENGRAM_ETOOBIG / ENGRAM_ENOMEM /
 * ENGRAM_EUNAVAILABLE (closing) — nothing was added and stored will not be called for it. */
int engram__redis_store_add(engram__redis_t *r, engram_request_t *req, size_t i);
/* Sends the batch being formed, if any. Reports nothing itself: a failed send is reported from the prepare
 * handle. */
void engram__redis_store_flush(engram__redis_t *r);
/* Closing (r->closing is set): fails what was never sent ("source closed") and closes the prepare handle;
 * closed(r) runs once it is (r->prep_open is then 0). */
void engram__redis_store_close(engram__redis_t *r, engram__redis_hook_fn *closed);
/* Frees the recycled batches once nothing is in flight. */
void engram__redis_store_free(engram__redis_t *r);

#endif
