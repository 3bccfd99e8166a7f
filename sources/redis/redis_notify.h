/*
 * redis_notify.h — the redis source's invalidation channel (redis_notify.c, vtable version 3's watch and
 * unwatch): Redis's client-side-caching invalidation messages (CLIENT TRACKING ... BCAST PREFIX on the items'
 * key prefix) received on a dedicated connection, reported to the watchers (a tiered source above it) as
 * changed keys. Layout: docs/tiered.md, "Coherence across processes".
 */
#ifndef ENGRAM_REDIS_NOTIFY_H
#define ENGRAM_REDIS_NOTIFY_H

#include "redis_state.h"

/* The vtable's watch / unwatch (include/engram/source.h). Home loop. */
int engram__redis_watch(engram_source_t *src, engram_watch_cb cb, void *ud, void **handle);
void engram__redis_unwatch(engram_source_t *src, void *handle);
/* For info: "none" (nobody watches), "connecting", "up" or "down"; and the messages received. */
const char *engram__redis_notify_state(const engram__redis_t *r);
uint64_t engram__redis_notify_received(const engram__redis_t *r);
/* Close: ends every watch (END, ENGRAM_ECLOSED) and closes the listener; sets r->notify to NULL and runs
 * done(r) once its connection is closed (nothing when there is no listener). */
void engram__redis_notify_shutdown(engram__redis_t *r, engram__redis_hook_fn *done);

#endif
