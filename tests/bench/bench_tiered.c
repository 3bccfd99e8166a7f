/*
 * bench_tiered.c — the tiered source side by side with its tiers alone (issue 13's speed targets): one manager
 * holds a cache on its own ("cache"), and tiered(cache, sqlite) ("t" over "c" and "d", SQLite on a file in a
 * temporary directory, synchronous=NORMAL) next to that SQLite source alone ("sqlite").
 *
 *  1. hot-key retrieve: N retrieves of one key with 256 in flight, through "t" (served by its cache tier)
 *     against the cache alone — the target is ≥ 0.9 × the cache;
 *  2. store: N stores of distinct keys with 1,000 in flight, through "t" (SQLite first, then the copy into the
 *     cache) against the SQLite source alone — the target is ≥ 0.9 × SQLite.
 * N defaults to 300,000 reads and 100,000 stores ($BENCH_TIERED_N scales both; BENCH_SCALE too).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/benchlib.h"

typedef struct {
  engram_manager_t *mgr;
  const char *source;
  long base;
  cJSON *value;
} tctx_t;

static int submit_hot(bl_drv_t *d, long i, void *token) {
  tctx_t *c = d->ctx;
  engram_opts_t o = {0};
  (void)i;
  o.source = c->source;
  return engram_retrieve(c->mgr, "hot", &o, bl_engram_cb, token);
}

static int submit_store(bl_drv_t *d, long i, void *token) {
  tctx_t *c = d->ctx;
  engram_opts_t o = {0};
  char key[64];
  o.source = c->source;
  snprintf(key, sizeof key, "k%ld", c->base + i);
  return engram_store(c->mgr, key, c->value, &o, bl_engram_cb, token);
}

typedef struct {
  const char *source;
  const cJSON *value;
} store_arg_t;

static int store_hot(engram_manager_t *mgr, void *arg, engram_cb cb, void *ud) {
  store_arg_t *a = arg;
  engram_opts_t o = {0};
  o.source = a->source;
  return engram_store(mgr, "hot", a->value, &o, cb, ud);
}

int main(void) {
  uv_loop_t loop;
  bl_drv_t d;
  tctx_t c;
  store_arg_t sa;
  char opts[512];
  const char *dir = bl_tmpdir();
  long n_read = bl_env_long("BENCH_TIERED_N", bl_scaled(300000)), n_store = n_read / 3;
  double cache_r, tiered_r, sqlite_w, tiered_w;
  uv_loop_init(&loop);
  memset(&c, 0, sizeof c);
  c.mgr = bl_manager(&loop);
  c.value = cJSON_Parse("{\"text\": \"a memory the agent keeps\", \"n\": 1}");
  if (c.value == NULL) bl_die("out of memory");
  bl_add_source(c.mgr, &loop, "cache", &engram_source_cache, NULL);
  bl_add_source(c.mgr, &loop, "c", &engram_source_cache, NULL);
  snprintf(opts, sizeof opts, "{\"path\": \"%s/tiered.db\", \"synchronous\": \"normal\"}", dir);
  bl_add_source(c.mgr, &loop, "d", &engram_source_sqlite, opts);
  snprintf(opts, sizeof opts, "{\"path\": \"%s/alone.db\", \"synchronous\": \"normal\"}", dir);
  bl_add_source(c.mgr, &loop, "sqlite", &engram_source_sqlite, opts);
  bl_add_source(c.mgr, &loop, "t", &engram_source_tiered, "{\"tiers\": [\"c\", \"d\"]}");

  bl_section("tiered(cache, sqlite) vs its tiers alone (one manager, home loop)");
  bl_note("hot-key retrieve: %ld calls, 256 in flight; store: %ld distinct keys, 1,000 in flight", n_read, n_store);
  sa.value = c.value;
  sa.source = "cache";
  if (bl_sync(c.mgr, &loop, store_hot, &sa) != 0) bl_die("store of the hot key in the cache failed");
  sa.source = "t";
  if (bl_sync(c.mgr, &loop, store_hot, &sa) != 0) bl_die("store of the hot key through the tiered source failed");

  c.source = "cache";
  cache_r = bl_closed_loop(&d, &loop, submit_hot, &c, n_read, 256);
  bl_check(&d, "cache hot-key retrieve");
  c.source = "t";
  tiered_r = bl_closed_loop(&d, &loop, submit_hot, &c, n_read, 256);
  bl_check(&d, "tiered hot-key retrieve");
  bl_result("tiered", "hot-key retrieve/s (baseline: the cache alone; target >= 0.9)", tiered_r, cache_r, "ops/s");

  c.source = "sqlite";
  c.base = 0;
  sqlite_w = bl_closed_loop(&d, &loop, submit_store, &c, n_store, 1000);
  bl_check(&d, "sqlite store");
  c.source = "t";
  c.base = 0;
  tiered_w = bl_closed_loop(&d, &loop, submit_store, &c, n_store, 1000);
  bl_check(&d, "tiered store");
  bl_result("tiered", "store/s (baseline: sqlite alone; target >= 0.9)", tiered_w, sqlite_w, "ops/s");

  cJSON_Delete(c.value);
  bl_close_manager(c.mgr, &loop);
  if (uv_loop_close(&loop) != 0) bl_die("loop not closed");
  return 0;
}
