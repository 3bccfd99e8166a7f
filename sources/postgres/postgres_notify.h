/*
 * postgres_notify.h — the PostgreSQL source's invalidation channel (postgres_notify.c, vtable version 3's watch
 * and unwatch): a trigger on the items table NOTIFYs every committed change, and a dedicated connection of this
 * source LISTENs and reports the changes other processes made to the watchers (a tiered source above it).
 * Layout of the channel and its payload: docs/tiered.md, "Coherence across processes".
 */
#ifndef ENGRAM_POSTGRES_NOTIFY_H
#define ENGRAM_POSTGRES_NOTIFY_H

#include "postgres_src.h"

/* The vtable's watch / unwatch (include/engram/source.h). Home loop. */
int engram__pg_watch(engram_source_t *src, engram_watch_cb cb, void *ud, void **handle);
void engram__pg_unwatch(engram_source_t *src, void *handle);
/* The channel's name for this source's table ("engram:<schema>.<table>", or "engram:" and 16 hex digits of a
 * hash when that would exceed 63 bytes) into out (64 bytes). Any thread. */
void engram__pg_notify_channel(const pg_t *pg, char out[64]);
/* For info: "none" (nobody watches), "connecting", "up" or "down"; and the counters. NULL-safe. */
const char *engram__pg_notify_state(const pg_t *pg);
uint64_t engram__pg_notify_received(const pg_t *pg);
/* Close: ends every watch (END, ENGRAM_ECLOSED), closes the listener; done(ud) runs once its handles are closed
 * (at once when there is no listener). */
void engram__pg_notify_shutdown(pg_t *pg, void (*done)(void *ud), void *ud);

#endif
