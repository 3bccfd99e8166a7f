/*
 * sources_tiered.c — the tiered source's entries in the conformance list (tests/support/sources_list.c): a cache
 * in front of SQLite, Redis or PostgreSQL, and Redis in front of PostgreSQL. ctx_add runs conf_prepare, which
 * adds the two tiers to the test's manager ("mem.cache", a fresh cache or Redis instance, and "mem.durable", a
 * fresh instance of the durable backend from that backend's own entry), then ctx_add adds the tiered source
 * "mem" over them. Each entry's vtable is a copy of
 * engram_source_tiered under the entry's type name, so the suite's info check sees the type it expects; the
 * durable backend's entry does the server setup (redis-server, PostgreSQL) and teardown.
 */
#include <stdio.h>
#include <string.h>

#include "support/harness.h"

static void add_tier(engram_manager_t *mgr, uv_loop_t *loop, const char *name, const engram_source_vtable_t *vt,
                     char *options) {
  result_t r = {0};
  int rc = engram_manager_add_source(mgr, name, vt, options, "a tier of the source under test", 0, capture_cb, &r);
  engram_free(options);
  assert_int_equal(rc, 0);
  if (!loop_wait(loop, &r.calls, 1, 30000)) fail_msg("add_source(%s): no callback within 30 s", name);
  if (r.status != 0) fail_msg("add_source(%s): %s (%s)", name, engram_err_name(r.status), r.message);
  result_reset(&r);
}

static char *tiered_options(void) { return engram_strdup("{\"tiers\": [\"mem.cache\", \"mem.durable\"]}"); }

static void prepare_with(const conf_source_t *durable, engram_manager_t *mgr, uv_loop_t *loop) {
  add_tier(mgr, loop, "mem.cache", &engram_source_cache, engram_strdup("{\"sweep_interval_ms\": 20}"));
  add_tier(mgr, loop, "mem.durable", durable->vt, durable->options());
}

#if ENGRAM_WITH_REDIS && ENGRAM_WITH_POSTGRES
extern const conf_source_t conf_source_redis, conf_source_postgres;
/* "tiered-redis-postgres": Redis as the upper tier, so copies go through its batch store script. */
static engram_source_vtable_t redis_pg_vt;
static int redis_pg_setup(void) {
  redis_pg_vt = engram_source_tiered;
  redis_pg_vt.name = "tiered-redis-postgres";
  return conf_source_redis.setup() != 0 ? -1 : conf_source_postgres.setup();
}
static void redis_pg_teardown(void) {
  conf_source_postgres.teardown();
  conf_source_redis.teardown();
}
const conf_source_t conf_source_tiered_redis_postgres = {"tiered-redis-postgres", &redis_pg_vt, redis_pg_setup,
                                                         redis_pg_teardown, tiered_options};
#endif

/* Each entry: a copy of the tiered vtable under the entry's name, and the durable backend's entry. */
#define TIER_ENTRY(id, type_name, durable_entry)                                                                  \
  extern const conf_source_t durable_entry;                                                                    \
  static engram_source_vtable_t id##_vt;                                                                       \
  static int id##_setup(void) {                                                                                \
    id##_vt = engram_source_tiered;                                                                            \
    id##_vt.name = type_name;                                                                                  \
    return durable_entry.setup ? durable_entry.setup() : 0;                                                    \
  }                                                                                                            \
  static void id##_teardown(void) {                                                                            \
    if (durable_entry.teardown) durable_entry.teardown();                                                      \
  }                                                                                                            \
  const conf_source_t conf_source_##id = {type_name, &id##_vt, id##_setup, id##_teardown, tiered_options}

TIER_ENTRY(tiered_sqlite, "tiered-cache-sqlite", conf_source_sqlite);
/* SQLite on the home loop ("thread": "home"): the tiered source's calls to it start at once (engram__actor_start_now). */
TIER_ENTRY(tiered_sqlite_home, "tiered-cache-sqlite-home", conf_source_sqlite_home);
#if ENGRAM_WITH_REDIS
TIER_ENTRY(tiered_redis, "tiered-cache-redis", conf_source_redis);
#endif
#if ENGRAM_WITH_POSTGRES
TIER_ENTRY(tiered_postgres, "tiered-cache-postgres", conf_source_postgres);
#endif

void conf_prepare(engram_manager_t *mgr, uv_loop_t *loop, const conf_source_t *s) {
  if (s->vt == &tiered_sqlite_vt) prepare_with(&conf_source_sqlite, mgr, loop);
  if (s->vt == &tiered_sqlite_home_vt) prepare_with(&conf_source_sqlite_home, mgr, loop);
#if ENGRAM_WITH_REDIS
  if (s->vt == &tiered_redis_vt) prepare_with(&conf_source_redis, mgr, loop);
#endif
#if ENGRAM_WITH_POSTGRES
  if (s->vt == &tiered_postgres_vt) prepare_with(&conf_source_postgres, mgr, loop);
#endif
#if ENGRAM_WITH_REDIS && ENGRAM_WITH_POSTGRES
  if (s->vt == &redis_pg_vt) {
    add_tier(mgr, loop, "mem.cache", conf_source_redis.vt, conf_source_redis.options());
    add_tier(mgr, loop, "mem.durable", conf_source_postgres.vt, conf_source_postgres.options());
  }
#endif
}
