/* builtin.c — the list of source types built into engram, looked up by name in JSON configuration. */
#include "registry.h"

const engram_source_vtable_t *const engram__builtin_sources[] = {
    &engram_source_cache,
    &engram_source_sqlite,
    &engram_source_postgres,
    &engram_source_redis,
    &engram_source_vector,
    NULL,
};
