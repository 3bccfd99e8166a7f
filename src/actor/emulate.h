/*
 * emulate.h — the core's emulation of the optional source methods (emulate.c).
 */
#ifndef ENGRAM_EMULATE_H
#define ENGRAM_EMULATE_H

#include "actor/actor.h"

/* Runs req (store_many, retrieve_many, delete_many, count, exists, update, clear or info) from the required
 * methods. The table entry of every optional method a backend leaves out. Actor thread. */
void engram__emulate(engram_source_t *src, engram_request_t *req);

#endif
