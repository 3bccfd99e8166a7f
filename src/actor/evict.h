/*
 * evict.h — max_items_per_namespace, the retention option every source accepts (evict.c): after a write, the
 * oldest items of its namespace beyond the limit are deleted before the write is answered.
 */
#ifndef ENGRAM_EVICT_H
#define ENGRAM_EVICT_H

#include "actor/actor.h"

/* Called by the actor (through its table) when a store, store_many or update on a source with
 * max_items_per_namespace succeeded: starts the eviction pass and returns 1 (the pass completes req again,
 * with status 0, when it ends), or returns 0 when nothing is to be done or the pass cannot start (req is then
 * answered at once). Actor thread. */
int engram__evict_after_write(engram_source_t *src, engram_request_t *req);

#endif
