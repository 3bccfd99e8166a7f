/* registry.h — the built-in source types (builtin.c) that the registry (registry.c) always knows. */
#ifndef ENGRAM_REGISTRY_H
#define ENGRAM_REGISTRY_H

#include "engram/source.h"

/* NULL-terminated. */
extern const engram_source_vtable_t *const engram__builtin_sources[];

#endif
