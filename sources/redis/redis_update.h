/*
 * redis_update.h — the redis source's native update: read, the user's function, a store conditional on what
 * was read, retried on a conflict; updates of one key through one source run one after another.
 */
#ifndef ENGRAM_REDIS_UPDATE_H
#define ENGRAM_REDIS_UPDATE_H

#include "redis_state.h"

void engram__redis_update(engram__redis_t *r, engram_request_t *req);

#endif
