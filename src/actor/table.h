/*
 * table.h — building a source's complete method table (table.c).
 */
#ifndef ENGRAM_TABLE_H
#define ENGRAM_TABLE_H

#include "actor/actor.h"

/* Fills t from vt: the backend's method where it has one, the core's emulation where it does not, the core's
 * info around the backend's. Reads only the slots vt->version has (a slot added by a later version is taken
 * as absent). vt must have passed engram__vtable_check. Any thread. */
void engram__table_fill(engram__table_t *t, const engram_source_vtable_t *vt);

#endif
