/*
 * builtin.c — the list of source types built into engram, looked up by name in JSON configuration. The only
 * file of the core that names a backend; a backend the build leaves out (ENGRAM_WITH_POSTGRES=0,
 * ENGRAM_WITH_REDIS=0, set by make WITH_POSTGRES=0 / WITH_REDIS=0) is not listed, and its library is not linked.
 */
#include "manager/builtin.h"

#ifndef ENGRAM_WITH_POSTGRES
#define ENGRAM_WITH_POSTGRES 1
#endif
#ifndef ENGRAM_WITH_REDIS
#define ENGRAM_WITH_REDIS 1
#endif

const engram_source_vtable_t *const engram__builtin_sources[] = {
    &engram_source_cache,
    &engram_source_sqlite,
#if ENGRAM_WITH_POSTGRES
    &engram_source_postgres,
#endif
#if ENGRAM_WITH_REDIS
    &engram_source_redis,
#endif
    &engram_source_vector,
    &engram_source_tiered,
    NULL,
};
