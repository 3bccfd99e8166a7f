/*
 * follow.h — the writes that ride on an update (engram_update_writes_t, include/engram/source.h), made by the
 * core for a source that does not make them atomically with the update itself (follow.c).
 */
#ifndef ENGRAM_FOLLOW_H
#define ENGRAM_FOLLOW_H

#include "actor/actor.h"

/* Called by the actor when an update that carries writes succeeded on a source that did not make them (no
 * ENGRAM_SOURCE_UPDATE_WRITES, or the core's emulated update): starts them and returns 1 (req is completed again
 * when they are done, with the first failure's status, or 0), or returns 0 when there is nothing to do (req is
 * answered at once). Actor thread. */
int engram__follow_writes(engram_source_t *src, engram_request_t *req);

#endif
