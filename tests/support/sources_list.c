/*
 * sources_list.c — the sources the conformance suite runs against. Each source issue adds its entry here:
 * the same cases, written once in tests/test_conformance.c, then run against every backend.
 */
#include <stdio.h>

#include "support/harness.h"

static char *cache_options(void) { return engram_strdup("{\"sweep_interval_ms\": 20}"); }

static const conf_source_t cache_source = {"cache", &engram_source_cache, NULL, NULL, cache_options};

/* The cache with only the required methods: runs the core's emulation of every optional one through the
 * same cases. */
static engram_source_vtable_t required_only;
static int required_only_setup(void) {
  conf_required_only(&required_only, &engram_source_cache, "cache-required-only");
  return 0;
}

void conf_required_only(engram_source_vtable_t *out, const engram_source_vtable_t *from, const char *name) {
  *out = *from;
  out->name = name;
  out->store_many = out->retrieve_many = out->delete_many = NULL;
  out->count = out->exists = out->update = out->clear = NULL;
  out->info = NULL;
}
static const conf_source_t required_only_source = {"cache-required-only", &required_only, required_only_setup, NULL,
                                                   cache_options};

extern const conf_source_t conf_source_sqlite, conf_source_sqlite_memory, conf_source_sqlite_required,
    conf_source_sqlite_home; /* sources_sqlite.c */
extern const conf_source_t conf_source_redis, conf_source_redis_required; /* redis_server.c */
extern const conf_source_t conf_source_postgres; /* pg_server.c */
extern const conf_source_t conf_source_vector, conf_source_vector_file, conf_source_vector_hnsw; /* sources_vector.c */
extern const conf_source_t conf_source_tiered_sqlite, conf_source_tiered_sqlite_home, conf_source_tiered_redis, conf_source_tiered_postgres,
    conf_source_tiered_redis_postgres; /* sources_tiered.c */
const conf_source_t *const conf_sources[] = {
    &cache_source,
    &required_only_source,
    &conf_source_sqlite, &conf_source_sqlite_memory, &conf_source_sqlite_required, &conf_source_sqlite_home,
#if ENGRAM_WITH_REDIS
    &conf_source_redis, &conf_source_redis_required,
#endif
#if ENGRAM_WITH_POSTGRES
    &conf_source_postgres,
#endif
    &conf_source_vector, &conf_source_vector_file, &conf_source_vector_hnsw,
    &conf_source_tiered_sqlite, &conf_source_tiered_sqlite_home,
#if ENGRAM_WITH_REDIS
    &conf_source_tiered_redis,
#endif
#if ENGRAM_WITH_POSTGRES
    &conf_source_tiered_postgres,
#endif
#if ENGRAM_WITH_REDIS && ENGRAM_WITH_POSTGRES
    &conf_source_tiered_redis_postgres,
#endif
    NULL,
};
