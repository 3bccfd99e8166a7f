/*
 * test_coherence_postgres.c — coherence across processes over PostgreSQL (issue 13 item 2, docs/tiered.md
 * "Coherence across processes"), against a real server started for the run (tests/support/pg_server.c):
 *   - two processes, each with tiered(cache, postgres) over one table, run 10,000 interleaved writes and reads of
 *     100 keys each; neither ever reads a version older than one it already saw (tests/support/coherence.c);
 *   - a write by another connection drops the key from the cache tier (LISTEN/NOTIFY through the trigger);
 *   - the listener killed (pg_terminate_backend) and kept from coming back (its setup waits for the schema's
 *     advisory lock, which the test holds): the tiered source reads the durable tier, not its cache tier, whose
 *     old copy is still there; once the listener is back, the cache tier is cleared and used again.
 * The program re-executes itself as the workers ("--coherence-worker ...").
 */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support/coherence.h"
#include "support/harness.h"
#include "support/pg_server.h"

static char *pg_options(const char *table) {
  static char buf[512];
  snprintf(buf, sizeof buf, "{" PG_TEST_CONNECT_TIMEOUT ", \"conninfo\": \"%s\", \"table\": \"%s\"}", pg_server_conninfo(), table);
  return buf;
}

static void two_processes_never_read_an_older_version(void **state) {
  coh_result_t res[2];
  const char *table = unique_name("coh");
  int i;
  (void)state;
  assert_int_equal(coh_run_workers(2, 10000, 100, pg_options(table), 90000, res), 0);
  for (i = 0; i < 2; i++) {
    print_message("worker %d: %ld calls (%ld reads, %ld writes), %ld cache hits, %ld remote invalidations, %ld "
                  "violations\n", i + 1, res[i].ops, res[i].reads, res[i].writes, res[i].cache_hits, res[i].remote,
                  res[i].violations);
    assert_int_equal(res[i].exit_status, 0);
    assert_int_equal(res[i].ops, 10000);
    assert_int_equal(res[i].violations, 0);
    assert_true(res[i].cache_hits > 0);  /* the cache tier served reads ... */
    assert_true(res[i].remote > 0);      /* ... and the other process's writes reached it */
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
  const char *table = unique_name("cohk");
  char out[256];
  uint64_t v1, v2, v3, v4;
  PGconn *hold;
  PGresult *res;
  (void)state;
  ctx_init(&c, NULL);
  coh_add(&c, "c", &engram_source_cache, NULL);
  coh_add(&c, "d", &engram_source_postgres, pg_options(table));
  coh_add(&c, "d2", &engram_source_postgres, pg_options(table)); /* another writer: its connections are not d's */
  coh_add(&c, "t", &engram_source_tiered, "{\"tiers\": [\"c\", \"d\"], \"coherence\": \"notify\"}");
  coh_wait_state(&c, "t", "up", 20000);

  v1 = coh_store(&c, "t", "kk", 1);
  assert_int_equal(coh_version(&c, "c", "kk"), v1); /* written through to the cache tier */
  /* A write by another connection drops the cache tier's copy. */
  v2 = coh_store(&c, "d2", "kk", 2);
  assert_true(v2 > v1);
  wait_gone(&c, "c", "kk", 10000);
  assert_int_equal(coh_version(&c, "t", "kk"), v2);
  assert_int_equal(coh_version(&c, "c", "kk"), v2); /* read repair */

  /* Hold the schema's advisory lock (the listener's setup takes it), then kill the listener. */
  hold = PQconnectdb(pg_server_conninfo());
  assert_int_equal(PQstatus(hold), CONNECTION_OK);
  res = PQexec(hold, "SELECT pg_advisory_lock(1701277281, hashtext('S:\"public\"'))");
  assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
  PQclear(res);
  assert_int_equal(pg_server_psql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                  "WHERE application_name = 'engram-listener'", out, sizeof out), 0);
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

  /* Let the listener back: the cache tier is cleared, then trusted and filled again. */
  res = PQexec(hold, "SELECT pg_advisory_unlock(1701277281, hashtext('S:\"public\"'))");
  PQclear(res);
  PQfinish(hold);
  coh_wait_state(&c, "t", "up", 30000);
  assert_int_equal(coh_version(&c, "c", "zz"), 0);
  assert_int_equal(coh_version(&c, "t", "kk"), v4);
  assert_int_equal(coh_version(&c, "c", "kk"), v4);
  assert_true(coh_info_number(&c, "t", "resyncs") >= 2);
  assert_true(coh_info_number(&c, "t", "channel_downs") >= 1);
  ctx_close(&c);
}

/* The source's own writes are not reported back to it (PGnotify.be_pid is one of its connections). */
static void own_writes_are_not_reported(void **state) {
  ctx_t c;
  const char *table = unique_name("coho");
  uint64_t v;
  (void)state;
  ctx_init(&c, NULL);
  coh_add(&c, "c", &engram_source_cache, NULL);
  coh_add(&c, "d", &engram_source_postgres, pg_options(table));
  coh_add(&c, "d2", &engram_source_postgres, pg_options(table));
  coh_add(&c, "t", &engram_source_tiered, "{\"tiers\": [\"c\", \"d\"]}"); /* auto: on, postgres has a channel */
  coh_wait_state(&c, "t", "up", 20000);
  v = coh_store(&c, "t", "own", 1);
  /* A marker written by the other source after it: once its invalidation arrived, so had any for "own". */
  coh_store(&c, "c", "marker", 1);
  coh_store(&c, "d2", "marker", 1);
  wait_gone(&c, "c", "marker", 10000);
  assert_int_equal(coh_version(&c, "c", "own"), v);
  assert_int_equal((int)coh_info_number(&c, "t", "remote_invalidations"), 1);
  ctx_close(&c);
}

static int group_setup(void **state) {
  (void)state;
  return pg_server_start();
}

static int group_teardown(void **state) {
  (void)state;
  pg_server_stop();
  return 0;
}

int main(int argc, char **argv) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(own_writes_are_not_reported),
      cmocka_unit_test(killed_listener_means_the_cache_is_bypassed),
      cmocka_unit_test(two_processes_never_read_an_older_version),
  };
  if (argc > 1 && strcmp(argv[1], "--coherence-worker") == 0) return coh_worker_main(argc, argv, &engram_source_postgres);
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
