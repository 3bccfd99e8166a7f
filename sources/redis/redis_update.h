/*
 * redis_update.h — the redis source's native update: read, the user's function, a store conditional on what
 * was read, retried on a conflict; updates of one key through one source run one after another. Updates that
 * carry writes (conversation appends) started in one loop turn go to Redis as one call of the update_writes
 * script, as stores do (redis_store.h): before the loop polls (the store coalescing's prepare handle runs
 * engram__redis_update_prep), before any other command (the call layer's before_send hook) and before a store
 * joins a batch (the store coalescing's before_store hook), so that commands reach Redis in the order their calls
 * started.
 */
#ifndef ENGRAM_REDIS_UPDATE_H
#define ENGRAM_REDIS_UPDATE_H

#include "redis_state.h"

void engram__redis_update(engram__redis_t *r, engram_request_t *req);
/* Sends the update_writes groups being formed, if any. Finishes nothing: a failed send is finished from
 * engram__redis_update_prep. */
void engram__redis_update_flush(engram__redis_t *r);
/* The prepare handle's turn: sends the groups being formed and finishes those whose send failed. */
void engram__redis_update_prep(engram__redis_t *r);
/* Closing (r->closing is set): every group never sent fails ENGRAM_EUNAVAILABLE. */
void engram__redis_update_close(engram__redis_t *r);
/* Frees the command buffer and the recycled group list once nothing is in flight. */
void engram__redis_update_free(engram__redis_t *r);

#endif
