/*
 * info.h — the core's info method (info.c): the actor's own counters merged with the backend's fields.
 */
#ifndef ENGRAM_INFO_H
#define ENGRAM_INFO_H

#include "actor/actor.h"

/* The info entry of every source's method table. Actor thread. */
void engram__info_start(engram_source_t *src, engram_request_t *req);

#endif
