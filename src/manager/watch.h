/*
 * watch.h — watching a source's invalidation channel from inside the manager layer (watch.c): the checks and the
 * record every watcher shares, for the source service (engram_source_watch) and the public
 * engram_events_watch (events_watch.c).
 */
#ifndef ENGRAM_WATCH_H
#define ENGRAM_WATCH_H

#include "actor/actor.h"

/* Watches dst (called name in error messages) through its vtable's watch, relaying its events to cb until END.
 * 0 with *out set; or ENGRAM_ENOTSUP (no channel), ENGRAM_EINVAL (dst runs on a thread of its own),
 * ENGRAM_ENOMEM, ENGRAM_ECLOSED, with the last error set. Home loop. */
int engram__watch_source(engram_source_t *dst, const char *name, engram_watch_cb cb, void *ud, engram_watch_t **out);

#endif
