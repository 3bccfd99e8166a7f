/*
 * test_cq.c — the manager on a thread of its own and completion queues: a "game" thread with no libuv loop and
 * a second "physics" thread submit calls naming a completion queue, and the game thread drains it once per
 * frame with engram_cq_poll; every callback runs on the polling thread, exactly once. Also a queue bound to a
 * uv loop that drains itself, and shutdown with replies still waiting. Runs under ThreadSanitizer in `make tsan`.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support/harness.h"

#define CALLS 10000

static uv_thread_t poller;
static atomic_int added, calls_seen, wrong_thread, failures;

static void on_added(int status, const engram_reply_t *reply, void *ud) {
  (void)ud;
  if (status != 0) fprintf(stderr, "add failed: %s\n", reply->message);
  atomic_store(&added, status == 0 ? 1 : -1);
}

static void on_reply(int status, const engram_reply_t *reply, void *ud) {
  uv_thread_t self = uv_thread_self();
  (void)reply;
  (void)ud;
  if (!uv_thread_equal(&self, &poller)) atomic_fetch_add(&wrong_thread, 1);
  if (status != 0) atomic_fetch_add(&failures, 1);
  atomic_fetch_add(&calls_seen, 1);
}

static void add_cache(engram_manager_t *mgr) {
  atomic_store(&added, 0);
  assert_int_equal(engram_manager_add_source(mgr, "cache", &engram_source_cache, NULL, "game state", 1, on_added, NULL), 0);
  while (atomic_load(&added) == 0) sleep_ms(1);
  assert_int_equal(atomic_load(&added), 1);
}

typedef struct {
  engram_manager_t *mgr;
  engram_cq_t *cq;
} physics_t;

static void physics(void *arg) {
  physics_t *p = arg;
  engram_opts_t o = {0};
  char key[32];
  cJSON *v = cJSON_CreateString("velocity");
  int i;
  o.cq = p->cq;
  o.ns = "physics";
  for (i = 0; i < CALLS; i++) {
    snprintf(key, sizeof key, "body:%d", i);
    while (engram_store(p->mgr, key, v, &o, on_reply, NULL) == ENGRAM_EBUSY) sleep_ms(1);
  }
  cJSON_Delete(v);
}

static void cq_drained_by_a_thread_without_a_loop(void **state) {
  engram_manager_t *mgr;
  engram_cq_t *cq;
  uv_thread_t th;
  physics_t p;
  engram_opts_t o = {0};
  cJSON *v = cJSON_CreateNumber(1);
  char key[32];
  int i, frames = 0;
  (void)state;
  atomic_store(&calls_seen, 0);
  atomic_store(&wrong_thread, 0);
  atomic_store(&failures, 0);
  poller = uv_thread_self();
  assert_int_equal(engram_manager_new(&mgr, NULL, NULL), 0);
  assert_int_equal(engram_cq_new(&cq, NULL), 0);
  add_cache(mgr);
  p.mgr = mgr;
  p.cq = cq;
  assert_int_equal(uv_thread_create(&th, physics, &p), 0);
  o.cq = cq;
  for (i = 0; i < CALLS; i++) {
    snprintf(key, sizeof key, "player:%d", i);
    assert_int_equal(engram_store(mgr, key, v, &o, on_reply, NULL), 0);
    /* Callbacks run only when this thread polls. */
    if (i % 1000 == 999) {
      frames++;
      engram_cq_poll(cq, 0);
    }
  }
  uv_thread_join(&th);
  while (atomic_load(&calls_seen) < 2 * CALLS && frames < 100000) {
    engram_cq_poll(cq, 256); /* one frame's budget */
    frames++;
    sleep_ms(1);
  }
  assert_int_equal(atomic_load(&calls_seen), 2 * CALLS);
  assert_int_equal(atomic_load(&wrong_thread), 0);
  assert_int_equal(atomic_load(&failures), 0);
  assert_int_equal((int)engram_cq_pending(cq), 0);
  /* Calls still pending at shutdown end with ECANCELED or success, and wait in the queue to be polled. */
  for (i = 0; i < 100; i++) assert_int_equal(engram_store(mgr, "late", v, &o, on_reply, NULL), 0);
  assert_int_equal(engram_manager_shutdown(mgr), 0);
  assert_int_equal((int)engram_cq_poll(cq, 0), 100);
  assert_int_equal(atomic_load(&calls_seen), 2 * CALLS + 100);
  engram_cq_free(cq);
  cJSON_Delete(v);
  printf("  20,000 calls answered over %d frames\n", frames);
}

static void cq_bound_to_a_loop(void **state) {
  uv_loop_t loop;
  engram_manager_t *mgr;
  engram_cq_t *cq;
  engram_opts_t o = {0};
  cJSON *v = cJSON_CreateNumber(2);
  int i;
  uint64_t start;
  (void)state;
  atomic_store(&calls_seen, 0);
  atomic_store(&wrong_thread, 0);
  atomic_store(&failures, 0);
  poller = uv_thread_self();
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(engram_manager_new(&mgr, NULL, NULL), 0);
  assert_int_equal(engram_cq_new(&cq, &loop), 0);
  add_cache(mgr);
  o.cq = cq;
  for (i = 0; i < 1000; i++) assert_int_equal(engram_store(mgr, "k", v, &o, on_reply, NULL), 0);
  start = uv_hrtime();
  while (atomic_load(&calls_seen) < 1000 && uv_hrtime() - start < 10000000000ull) {
    if (uv_run(&loop, UV_RUN_NOWAIT) == 0) break;
    sleep_ms(1);
  }
  assert_int_equal(atomic_load(&calls_seen), 1000);
  assert_int_equal(atomic_load(&wrong_thread), 0);
  assert_int_equal(engram_manager_shutdown(mgr), 0);
  engram_cq_free(cq);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&loop), 0);
  cJSON_Delete(v);
}

static void own_thread_rejects_loop_close(void **state) {
  engram_manager_t *mgr;
  result_t r = {0};
  (void)state;
  assert_int_equal(engram_manager_new(&mgr, NULL, NULL), 0);
  assert_int_equal(engram_manager_close(mgr, capture_cb, &r), ENGRAM_EINVAL);
  assert_non_null(strstr(engram_last_error(), "shutdown"));
  assert_int_equal(engram_manager_shutdown(mgr), 0);
  assert_int_equal(r.calls, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(cq_drained_by_a_thread_without_a_loop),
      cmocka_unit_test(cq_bound_to_a_loop),
      cmocka_unit_test(own_thread_rejects_loop_close),
  };
  return cmocka_run_group_tests_name("completion queues", tests, NULL, NULL);
}
