/*
 * test_coherence_redis.c — coherence across processes over Redis (issue 13 item 2, docs/tiered.md "Coherence
 * across processes"), against a real redis-server started for the run (tests/support/redis_server.c):
 *   - two processes, each with tiered(cache, redis) over one key prefix, run 10,000 interleaved writes and reads of
 *     100 keys each; neither ever reads a version older than one it already saw (tests/support/coherence.c);
 *   - a write by another client drops the key from the cache tier (client-side-caching invalidation messages);
 *     a FLUSHDB clears the cache tier;
 *   - the listener killed (CLIENT KILL TYPE pubsub) and kept away for its reconnect backoff (reconnect_min_ms
 *     3000): the tiered source reads the durable tier, not its cache tier, whose old copy is still there; once the
 *     listener is back, the cache tier is cleared and used again.
 * The program re-executes itself as the workers ("--coherence-worker ...").
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support/coherence.h"
#include "support/harness.h"
#include "support/redis_server.h"

static char *redis_options(const char *prefix, int backoff_ms) {
  static char buf[4][256];
  static int k;
  char *b = buf[k++ % 4];
  snprintf(b, 256, "{" REDIS_TEST_CONNECT_TIMEOUT ", \"host\": \"127.0.0.1\", \"port\": %d, \"prefix\": \"%s:\", \"reconnect_min_ms\": %d}",
           redis_server_port(), prefix, backoff_ms);
  return b;
}

static void two_processes_never_read_an_older_version(void **state) {
  coh_result_t res[2];
  const char *prefix = unique_name("coh");
  int i;
  (void)state;
  assert_int_equal(coh_run_workers(2, 10000, 100, redis_options(prefix, 50), 90000, res), 0);
  for (i = 0; i < 2; i++) {
    print_message("worker %d: %ld calls (%ld reads, %ld writes), %ld cache hits, %ld remote invalidations, %ld "
                  "violations\n", i + 1, res[i].ops, res[i].reads, res[i].writes, res[i].cache_hits, res[i].remote,
                  res[i].violations);
    assert_int_equal(res[i].exit_status, 0);
    assert_int_equal(res[i].ops, 10000);
    assert_int_equal(res[i].violations, 0);
    assert_true(res[i].cache_hits > 0);  /* the cache tier served reads ... */
    assert_true(res[i].remote > 0);      /* ... and writes reached it through the channel */
  }
}

/* Waits until source's copy of key is gone (the invalidation arrived), failing after timeout_ms. */
static void wait_gone(ctx_t *c, const char *source, const char *key, int timeout_ms) {
  uint64_t end = uv_hrtime() / 1000000u + (uint64_t)timeout_ms;
  while (coh_version(c, source, key) != 0) {
    if (uv_hrtime() / 1000000u > end) fail_msg("%s still holds %s after %d ms", source, key, timeout_ms);
    run_for(c, 2);
  }
}

static void killed_listener_means_the_cache_is_bypassed(void **state) {
  ctx_t c;
  const char *prefix = unique_name("cohk");
  char out[256];
  uint64_t v2, v3, v4;
  (void)state;
  ctx_init(&c, NULL);
  coh_add(&c, "c", &engram_source_cache, NULL);
  coh_add(&c, "d", &engram_source_redis, redis_options(prefix, 3000)); /* the listener takes d's backoff */
  coh_add(&c, "d2", &engram_source_redis, redis_options(prefix, 50));  /* another writer */
  coh_add(&c, "t", &engram_source_tiered, "{\"tiers\": [\"c\", \"d\"], \"coherence\": \"notify\"}");
  coh_wait_state(&c, "t", "up", 20000);

  /* A write by another client drops the cache tier's copy; a read fills it again. */
  coh_store(&c, "t", "kk", 1);
  v2 = coh_store(&c, "d2", "kk", 2);
  wait_gone(&c, "c", "kk", 10000);
  assert_int_equal(coh_version(&c, "t", "kk"), v2);
  assert_int_equal(coh_version(&c, "c", "kk"), v2); /* read repair */

  /* Kill the listener: it comes back only after its 3 s backoff. */
  assert_int_equal(redis_cli(out, sizeof out, "CLIENT", "KILL", "TYPE", "pubsub", NULL), 0);
  assert_true(atoi(out) >= 1);
  coh_wait_state(&c, "t", "down", 20000);

  /* Missed by the channel: the cache tier still holds v2, but reads go to the durable tier. */
  v3 = coh_store(&c, "d2", "kk", 3);
  assert_int_equal(coh_version(&c, "c", "kk"), v2);
  assert_int_equal(coh_version(&c, "t", "kk"), v3);
  assert_int_equal(coh_version(&c, "t", "kk"), v3);
  assert_int_equal(coh_version(&c, "c", "kk"), v2); /* no read repair while the channel is down */
  assert_true(coh_info_number(&c, "t", "bypassed_reads") >= 2);
  /* A write through the tiered source while the channel is down drops the upper copy instead of copying. */
  v4 = coh_store(&c, "t", "kk", 4);
  assert_true(v4 > v3);
  assert_int_equal(coh_version(&c, "c", "kk"), 0);
  coh_store(&c, "c", "zz", 9); /* something only the cache tier holds: gone after the channel is back */
  assert_int_equal(coh_version(&c, "t", "kk"), v4);
  {
    char st[32];
    coh_state(&c, "t", st, sizeof st);
    assert_string_equal(st, "down"); /* all of the above happened inside the backoff */
  }

  /* The listener comes back: the cache tier is cleared, then trusted and filled again. */
  coh_wait_state(&c, "t", "up", 30000);
  assert_int_equal(coh_version(&c, "c", "zz"), 0);
  assert_int_equal(coh_version(&c, "t", "kk"), v4);
  assert_int_equal(coh_version(&c, "c", "kk"), v4);
  assert_true(coh_info_number(&c, "t", "resyncs") >= 2);
  assert_true(coh_info_number(&c, "t", "channel_downs") >= 1);

  /* FLUSHDB: Redis sends a nil invalidation, the whole cache tier is cleared. */
  coh_store(&c, "c", "zz", 9);
  assert_int_equal(redis_cli(out, sizeof out, "FLUSHDB", NULL), 0);
  wait_gone(&c, "c", "zz", 10000);
  ctx_close(&c);
}

static int group_setup(void **state) {
  (void)state;
  return redis_server_start(0) > 0 ? 0 : -1;
}

static int group_teardown(void **state) {
  (void)state;
  redis_server_stop();
  return 0;
}

int main(int argc, char **argv) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(killed_listener_means_the_cache_is_bypassed),
      cmocka_unit_test(two_processes_never_read_an_older_version),
  };
  if (argc > 1 && strcmp(argv[1], "--coherence-worker") == 0) return coh_worker_main(argc, argv, &engram_source_redis);
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
