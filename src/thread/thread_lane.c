/*
 * thread_lane.c — appends to one thread in flight together: lanes.
 *
 * While an append to a thread is in flight, later appends to it with the same settings and options wait in the
 * thread's lane (thread_queue.h); when the one in flight ends, the waiting ones go as one update, each caller its own
 * part and its own reply. Fewer, larger updates cost every source less (docs/conversations.md, Appends to one thread
 * in flight together).
 */
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "thread/thread_call.h"
#include "shared/error.h"
#include "manager/manager.h"
#include "thread/thread_queue.h"

/* While LANE_DEPTH appends to a thread are in flight, the later appends to it with the same settings and options
 * (manager, source, namespace, id, settings, deadline, completion queue: the lane's key) wait in its lane; when one
 * in flight ends, the waiting ones (up to ENGRAM_THREAD_BATCH_MAX messages) go as one update, each its own part,
 * and each caller gets its own reply. Nothing waits for company: an append to a lane with room goes at once. */

/* Appends of a lane in flight at once: 2 — one update queued in the source behind the running one (so the source
 * goes from one to the next without waiting for this process), the rest merged behind them. callgrind,
 * BENCH_ONLY=append,cache bench_thread, 20,000 minus 10,000 messages each way: 25.0 k instructions a message before
 * lanes, 19.8 k with 1, 22.9 k with 2; but with 1 the cache's wall clock at 10 messages an append fell below the
 * base's (each merged update waits a loop turn for the one before), with 2 it did not (docs/benchmarks.md). */
#define LANE_DEPTH 2

/* ... only on a source that answers at once (ENGRAM_SOURCE_ANSWERS_AT_ONCE: the cache, where it was measured — an
 * update there is answered in the actor's turn, and a merged one waits a loop turn more). Elsewhere a lane lets ONE append be in flight and merges the rest:
 *  - SQLite (a thread of its own): an update queued behind the running one waits in that thread's mailbox among the
 *    other lanes' updates anyway, and each update costs its head's read, function, write and savepoint beside its
 *    messages (sq_update: ~55 k instructions an update beside 20 k a message): with one in flight the bench's mix
 *    (BENCH_ONLY=append,sqlite bench_thread, 20,000 minus 10,000 messages each way) made 4,144 updates instead of
 *    7,324, SQLite's thread 1,018.9 M -> 848.1 M instructions (callgrind);
 *  - PostgreSQL and Redis: the server's work is per statement / script (its start-up, the head's write), so fewer,
 *    larger updates cost it less: BENCH_ONLY=append,postgres and append,redis, 8 alternating pairs each at load
 *    2-4, messages / stores at one message per append: PostgreSQL median 0.22 -> 0.29 (higher in 7 of 8, one
 *    tie), Redis 0.355 -> 0.415 (6 higher, 1 tie, 1 lower); at ten per append 0.575 -> 0.615 and 0.525 -> 0.575
 *    (mixed, 4/8 and 5/8) — docs/benchmarks.md. Other types (vector, tiered, your own) were not measured. */
#define LANE_DEPTH_OTHER 1

/* The lane depth of c's source: LANE_DEPTH on a source that answers at once, else LANE_DEPTH_OTHER (an unknown
 * source too: its call is refused anyway). Any thread (the manager's read lock, as every submit takes it). */
unsigned th_lane_depth(const call_t *c) {
  engram_source_t *src;
  int at_once;
  uv_rwlock_rdlock(&c->mgr->lock);
  src = engram__manager_find_locked(c->mgr, c->src);
  at_once = src != NULL && (src->vt->flags & ENGRAM_SOURCE_ANSWERS_AT_ONCE) != 0;
  uv_rwlock_rdunlock(&c->mgr->lock);
  return at_once ? LANE_DEPTH : LANE_DEPTH_OTHER;
}

#define call_of(node) ((call_t *)(void *)((char *)(node) - offsetof(call_t, qnode)))

typedef struct {
  void *mgr, *cq;
  uint32_t deadline_ms;
  unsigned flags;
  int64_t max_messages, ttl_ms;
} lane_head_t;

/* The lane key of an append: 0 when too long to queue (then it goes alone). */
size_t th_lane_key(const call_t *c, unsigned char *buf) {
  lane_head_t k;
  const engram_thread_settings_t *st = &c->upd->settings;
  size_t ls = c->src ? strlen(c->src) : 0, ln = c->ns ? strlen(c->ns) : 0, li = strlen(c->id);
  if (sizeof k + ls + ln + li + 3 > TQ_KEY_MAX) return 0;
  memset(&k, 0, sizeof k); /* padding too: keys compare as bytes */
  k.mgr = c->mgr;
  k.cq = c->o.cq;
  k.deadline_ms = c->asked_deadline;
  k.flags = st->flags;
  k.max_messages = (st->flags & ENGRAM_THREAD_MAX_MESSAGES) ? st->max_messages : 0;
  k.ttl_ms = (st->flags & ENGRAM_THREAD_TTL) ? st->ttl_ms : 0;
  memcpy(buf, &k, sizeof k);
  buf += sizeof k;
  buf[0] = c->src ? 1 : 0; /* the default source and one named "" differ */
  memcpy(buf + 1, c->src ? c->src : "", ls);
  buf[1 + ls] = '\0';
  memcpy(buf + 2 + ls, c->ns ? c->ns : "", ln + 1);
  memcpy(buf + 3 + ls + ln, c->id, li);
  return sizeof k + ls + ln + li + 3;
}

static void lane_leave(call_t *c);

/* tq_run_fn: submits a lone append as its lane's busy item. */
int th_lane_run(void *arg) {
  call_t *c = arg;
  int rc;
  c->leave = lane_leave;
  if ((rc = th_update_head(c)) != 0) c->leave = NULL;
  return rc;
}

typedef struct {
  call_t *lead;   /* the lane's call that ended */
  call_t *failed; /* calls take_group could not run, to answer after tq_leave (each with status and message) */
} take_t;

static void take_failed(take_t *t, call_t *m, int status, const char *msg) {
  m->status = status;
  snprintf(m->message, sizeof m->message, "thread \"%s\": %.300s", m->id, msg);
  m->next_member = t->failed;
  t->failed = m;
}

/* Merges the calls group[0..k) (k ≥ 2) into one update owned by group[0]: their prepared messages move into it in
 * order, each call's part is its own. 0 or ENGRAM_ENOMEM (nothing moved). */
static int merge(call_t **group, size_t k) {
  call_t *lead = group[0];
  size_t total = 0, i, j, at = 0;
  upd_t *u;
  for (j = 0; j < k; j++) total += group[j]->upd->n;
  if ((u = th_upd_new(lead, M_APPEND, &lead->upd->settings, NULL)) == NULL) return ENGRAM_ENOMEM;
  if (th_upd_arrays(u, total, k) != 0) {
    th_upd_free(u);
    return ENGRAM_ENOMEM;
  }
  for (j = 0; j < k; j++) {
    upd_t *o = group[j]->upd;
    u->part_off[j] = at;
    for (i = 0; i < o->n; i++, at++) {
      u->msgs[at] = o->msgs[i];
      u->meta[at] = o->meta[i];
      /* the item metadata's "thread" (its first member) refers to o->id: the same id, now u's */
      u->meta[at]->child->valuestring = u->id;
      memcpy(&u->nodes[3 * at], &o->nodes[3 * i], 3 * sizeof *u->nodes);
      u->is_system[at] = o->is_system[i];
      o->msgs[i] = o->meta[i] = NULL;
    }
    th_upd_unref(o);
    group[j]->upd = u;
    group[j]->part = j;
    if (j > 0) atomic_fetch_add_explicit(&u->refs, 1, memory_order_relaxed); /* each call holds one */
  }
  return 0;
}

/* tq_take_fn: the waiting appends of a lane whose busy one ended. Those whose deadline passed while they waited
 * end with ENGRAM_ETIMEDOUT; the others, up to ENGRAM_THREAD_BATCH_MAX messages, go as one update with what is left
 * of the earliest deadline among them. When it is refused (mailbox full, manager closed), every waiting call ends
 * with that error. */
static int take_group(tq_node_t **list, void *arg) {
  take_t *t = arg;
  engram_manager_t *mgr = t->lead->mgr;
  call_t *group[ENGRAM_THREAD_BATCH_MAX];
  size_t k = 0, msgs = 0;
  int64_t now = engram_now_ms(), end = INT64_MAX;
  uint32_t d = t->lead->asked_deadline ? t->lead->asked_deadline : mgr->cfg.default_deadline_ms;
  int rc;
  while (*list != NULL) {
    call_t *m = call_of(*list);
    if (k > 0 && msgs + m->upd->n > ENGRAM_THREAD_BATCH_MAX) break;
    *list = (*list)->next;
    if (d > 0 && m->submitted_ms + d <= now) {
      take_failed(t, m, ENGRAM_ETIMEDOUT, "deadline exceeded waiting behind an append to the same thread");
      continue;
    }
    if (d > 0 && m->submitted_ms + d < end) end = m->submitted_ms + d;
    group[k++] = m;
    msgs += m->upd->n;
  }
  if (k == 0) return 0; /* every one timed out */
  rc = k > 1 ? merge(group, k) : 0;
  if (rc == 0) {
    size_t j;
    for (j = k - 1; j > 0; j--) { /* members in arrival order */
      group[j]->next_member = group[0]->members;
      group[0]->members = group[j];
    }
    group[0]->o.deadline_ms = d > 0 ? (uint32_t)(end - now) : 0;
    if ((rc = th_lane_run(group[0])) == 0) return 1;
    group[0]->members = NULL;
  }
  {
    const char *why = rc == ENGRAM_ENOMEM ? "out of memory" : engram_last_error();
    char msg[300];
    snprintf(msg, sizeof msg, "%s", why && why[0] ? why : engram_strerror(rc));
    while (k > 0) take_failed(t, group[--k], rc, msg);
    while (*list != NULL) {
      call_t *m = call_of(*list);
      *list = (*list)->next;
      take_failed(t, m, rc, msg);
    }
  }
  return 0;
}

/* The lane's busy append (c) ended: the waiting ones go; those that cannot are answered here. */
static void lane_leave(call_t *c) {
  unsigned char key[TQ_KEY_MAX];
  size_t len = th_lane_key(c, key);
  take_t t = {c, NULL};
  call_t *m, *rev = NULL;
  c->leave = NULL;
  tq_leave(key, len, take_group, &t);
  while ((m = t.failed) != NULL) { /* in arrival order */
    t.failed = m->next_member;
    m->next_member = rev;
    rev = m;
  }
  while ((m = rev) != NULL) {
    rev = m->next_member;
    m->next_member = NULL;
    th_finish(m, m->status, NULL, NULL, 0, NULL, NULL);
  }
}
