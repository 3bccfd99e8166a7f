/*
 * builtin.h — the source types built into engram (builtin.c): the one place in the core that names backends.
 */
#ifndef ENGRAM_BUILTIN_H
#define ENGRAM_BUILTIN_H

#include "engram/source.h"

/* NULL-terminated; a backend left out of the build (make WITH_POSTGRES=0, WITH_REDIS=0) is not listed. */
extern const engram_source_vtable_t *const engram__builtin_sources[];

#endif
