/*
 * emulate.h — the core's emulation of the optional source methods (emulate.c).
 */
#ifndef ENGRAM_EMULATE_H
#define ENGRAM_EMULATE_H

#include "actor/actor.h"

/* Runs req (store_many, retrieve_many, delete_many, count, exists, update, clear or info) from the required
 * methods. The table entry of every optional method a backend leaves out. Actor thread. */
void engram__emulate(engram_source_t *src, engram_request_t *req);

/* req, a request about to be handed to src's backend, is a write (store, store_many, delete, delete_many, clear):
 * marks the emulated updates of its keys (every one, for a clear) that have sent their read and not yet their
 * store, so that they read again instead of storing. Called by engram__actor_dispatch only while src->upd_reading
 * is non-zero. Actor thread. */
void engram__emulate_saw_write(engram_source_t *src, const engram_request_t *req);

#endif
