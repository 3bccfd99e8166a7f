/*
 * spin.h — an own-thread actor waits briefly for its next call before it sleeps.
 *
 * A call to an own-thread source (SQLite, vector) crosses to the actor's thread: the caller's push wakes the
 * actor's loop (uv_async_send: an eventfd write, then the sleeping thread's epoll wake-up). On a VM such a wake
 * of a sleeping thread costs tens of microseconds — more than a SQLite point read. So when the actor's loop is
 * about to block in poll and it took a call within the last millisecond, it first watches its mailbox for a
 * bounded time (ENGRAM_ACTOR_SPIN_US, up to 1000; 0 = never; never on a machine with one core), and while it
 * watches, producers skip the eventfd write (the `spinning` flag: a Dekker pair with the mailbox count, so a
 * push is either seen by the watch or wakes the loop). An idle actor never watches: its last call is more than a
 * millisecond old, so its timers' wake-ups (the TTL sweep) cost no spin.
 *
 * It is off by default. bench_sqlite, one call in flight, alternating with a build without it on the shared
 * 2-core VM: at load ~6, 50 us cut retrieve p50 90 -> 52 us and store p50 146 -> 87 us; at load 9-12 it made
 * them worse (store mean 0.24-0.35 -> 2.0 ms, calls/s 2,800-4,100 -> 510): a thread that stays runnable while
 * the caller's thread waits for a core costs more than the wake-up it saves. Turn it on where cores are not
 * oversubscribed.
 */
#ifndef ENGRAM_ACTOR_SPIN_H
#define ENGRAM_ACTOR_SPIN_H

#include "actor/actor.h"

/* The watch's budget in nanoseconds, read once from the environment (0 on one core). */
uint64_t engram__spin_budget_ns(void);

/* Actor thread, from the loop's prepare phase: watches the mailbox when the loop is about to block and a call
 * came recently. Returns non-zero when calls arrived during the watch (the caller pumps them). */
int engram__spin_wait(engram_source_t *src);

/* The producer side (whether a push must wake the actor) is actor.c's spin_must_wake: the actor never includes
 * this header (the method table carries the two functions above), so the tree keeps no cycle. */

#endif
