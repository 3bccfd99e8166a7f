/*
 * spin.c — the bounded watch of an own-thread actor's mailbox before its loop sleeps (spin.h says why).
 *
 * Called from a uv_prepare handle, i.e. just before the loop computes its poll timeout: it watches only when
 * that timeout is not zero (nothing else is ready) and a call arrived within SPIN_RECENT_NS. Each round reads the
 * mailbox count and the stop flag, then yields the core (sched_yield): on a machine with more runnable threads
 * than cores, the caller's thread — woken by the previous answer — may be queued on this very core, and a watch
 * that only paused (a pause-instruction spin) kept it off until the time slice ended: one call in flight got
 * slower (retrieve p50 90 -> 125-142 us on the 2-core VM at load 6), with the yield it got faster (52 us).
 * Ending the watch clears the flag, then looks at the count once more: a producer that saw the flag set skipped
 * its wake-up, so its push is seen here.
 */
#include <sched.h>
#include <stdlib.h>

#include "actor/spin.h"

#define SPIN_DEFAULT_US 0 /* off: see spin.h for the measurements that left it off */
#define SPIN_MAX_US 1000
#define SPIN_RECENT_NS 1000000u /* a call within the last millisecond: the actor is in use */

uint64_t engram__spin_budget_ns(void) {
  static atomic_llong cached = -1;
  long long v = atomic_load_explicit(&cached, memory_order_relaxed);
  if (v < 0) {
    const char *e = getenv("ENGRAM_ACTOR_SPIN_US");
    long us = SPIN_DEFAULT_US;
    if (e != NULL && *e != '\0') {
      char *end;
      long x = strtol(e, &end, 10);
      if (*end == '\0' && x >= 0) us = x > SPIN_MAX_US ? SPIN_MAX_US : x;
    }
    if (uv_available_parallelism() < 2) us = 0; /* one core: the producer needs the core the watch would take */
    v = (long long)us * 1000;
    atomic_store_explicit(&cached, v, memory_order_relaxed);
  }
  return (uint64_t)v;
}

int engram__spin_wait(engram_source_t *src) {
  uint64_t now, end;
  int got;
  if (src->spin_ns == 0 || src->st != ENGRAM__ACTOR_OPEN || uv_backend_timeout(src->loop) == 0) return 0;
  now = uv_hrtime();
  if (now - src->last_call_ns > SPIN_RECENT_NS) return 0;
  if (engram__mailbox_depth(&src->mb) != 0) return 0; /* the backlog waits for completions, not for producers */
  atomic_store_explicit(&src->spinning, 1, memory_order_seq_cst);
  end = now + src->spin_ns;
  for (;;) {
    if (engram__mailbox_depth(&src->mb) != 0 || atomic_load_explicit(&src->stop, memory_order_relaxed)) break;
    sched_yield();
    if (uv_hrtime() >= end) break;
  }
  atomic_store_explicit(&src->spinning, 0, memory_order_seq_cst);
  atomic_thread_fence(memory_order_seq_cst);
  got = engram__mailbox_depth(&src->mb) != 0;
  if (got) src->spin_hits++;
  else src->spin_misses++;
  return got;
}
