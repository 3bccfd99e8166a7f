/*
 * actor.c — the actor runtime: one actor per source, each with a bounded MPSC mailbox, a backlog of accepted
 * requests waiting for a slot in the in-flight window, the in-flight list, and one deadline timer.
 *
 * Producers on any thread push requests into the mailbox (mailbox.h) and wake the actor only on the
 * empty-to-non-empty transition (actor_wake: from other threads an own-thread actor's eventfd or a home-loop
 * actor's uv_async_send; from the actor's own loop thread an idle handle, which costs no syscall). The actor drains `batch` requests per wake-up (an actor on a shared loop: at least what its mailbox held), starts as
 * many as the in-flight window allows and keeps the rest in the backlog, where deadlines still apply. A single
 * uv_timer per actor fires at the earliest deadline of everything the actor holds; an expired call is answered
 * with ENGRAM_ETIMEDOUT at once, and if the backend still holds it, its later completion only releases it.
 * Actors of blocking backends run all of this on a thread and loop of their own; answers then travel home
 * through the home loop's reply queue, which the actor was handed when created (engram__actor_config_t): the
 * actor never names the manager above it. It dispatches through the source's complete method table (table.c),
 * so it does not know which operations are emulated. Closing cancels every pending call (ENGRAM_ECANCELED),
 * runs the backend's close once, and frees the actor. A caller already on an actor's loop thread (the
 * source-call service, for a tiered source's calls to its tiers) may start a call there at once when the actor
 * could start it now in order (engram__actor_start_now), skipping the mailbox and the wake-up. Completed writes are
 * reported to the change-events hook; those of a turn (src->pumping) are queued for the subscribers when it ends
 * (turn_end), under one lock per turn.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#ifdef __linux__
#include <sys/eventfd.h>
#include <unistd.h>
#endif

#include "actor/actor.h"
#include "request/cq.h"

/* Producer side, after a push that made the mailbox non-empty: non-zero when the actor must be woken (it is not
 * watching its mailbox: spin.c, the Dekker pair of its `spinning` flag and the mailbox count). */
static inline int spin_must_wake(engram_source_t *src) {
  atomic_thread_fence(memory_order_seq_cst); /* the push's count before the flag's load */
  return !atomic_load_explicit(&src->spinning, memory_order_relaxed);
}

/* The own-thread actor running on this thread, if any. */
static _Thread_local engram_source_t *thread_actor;

static void actor_pump(engram_source_t *src);

/* A turn (src->pumping) ends: the change events it staged are queued on their subscriptions now, under one lock for
 * the turn instead of one per change (manager/events.c). */
static inline void turn_end(engram_source_t *src) {
  if (src->ev_staged) src->events->turn_end(src);
}
static void actor_close_handles(engram_source_t *src);
static void on_wake_idle(uv_idle_t *h);

/* ---- Wake-up ---- */

/* Wakes the actor's loop. An own-thread actor is woken through an eventfd of its own that its loop watches
 * (uv_poll): libuv's uv_async (1.44, the one here) makes the woken loop spin in its async callback until the
 * waking thread has returned from its write() and marked the handle sent, so each hop between two sleeping
 * loops cost ~25-30 us on the 2-core VM against ~5 us for the same eventfd watched directly (a ping-pong of
 * two loops, 20,000 round trips: 52-68 us through uv_async, 9.7-10.6 us through eventfd + uv_poll). Any thread. */
static void actor_wake(engram_source_t *src) {
  /* An actor woken from its own loop's thread (a home-loop actor by a callback that submits again or a caller on
   * the home loop; any actor by its own completion path, whose pump leaves requests in the mailbox): an idle handle
   * runs the pump on the next loop turn (and keeps that turn's poll from blocking) — no write() to wake a loop
   * that is awake, and no read() of it in the next turn. An own-thread SQLite actor kicked its own eventfd once
   * per completed store while its mailbox held more (strace: 9,875 write()s for 10,000 stores). */
  int here;
  if (src->own_thread) {
    here = thread_actor == src;
  } else {
    uv_thread_t self = uv_thread_self();
    here = uv_thread_equal(&self, &src->loop_thread);
  }
  if (here) {
    if (src->st != ENGRAM__ACTOR_CLOSED) uv_idle_start(&src->wake_idle, on_wake_idle);
    return;
  }
  engram__loop_kick(src->wake_fd, &src->async);
}

/* ---- Lists ---- */

static void list_push_back(engram_request_t **head, engram_request_t **tail, engram_request_t *req) {
  engram_request_private_t *pv = req->priv;
  pv->next = NULL;
  pv->prev = tail ? *tail : NULL;
  if (tail != NULL) {
    if (*tail) (*tail)->priv->next = req;
    else *head = req;
    *tail = req;
  } else {
    pv->prev = NULL;
    pv->next = *head;
    if (*head) (*head)->priv->prev = req;
    *head = req;
  }
}

static void list_remove(engram_request_t **head, engram_request_t **tail, engram_request_t *req) {
  engram_request_private_t *pv = req->priv;
  if (pv->prev) pv->prev->priv->next = pv->next;
  else *head = pv->next;
  if (pv->next) pv->next->priv->prev = pv->prev;
  else if (tail) *tail = pv->prev;
  pv->next = pv->prev = NULL;
}

/* ---- Deadlines ---- */

static void on_timer(uv_timer_t *t);

/* While a clear holds back the calls after it (the clear barrier, below), how often the actor takes what its mailbox
 * holds into the backlog: a producer wakes the actor only when the mailbox was empty, so without this the calls
 * after the first would sit unread — their deadlines unarmed — until the clear is done. */
#define BARRIER_POLL_MS 10

static void timer_arm(engram_source_t *src, uint64_t deadline) {
  uint64_t now;
  if (deadline == 0 || src->st == ENGRAM__ACTOR_CLOSED) return;
  if (src->timer_due != 0 && src->timer_due <= deadline) return;
  now = engram__mono_ms();
  src->timer_due = deadline;
  uv_timer_start(&src->timer, on_timer, deadline > now ? deadline - now : 0, 0);
}

static void latency_record(engram_source_t *src, engram_request_t *req) {
  uint64_t us = (uv_hrtime() - req->priv->submit_ns) / 1000u;
  unsigned b = 0;
  /* Quarter powers of two: bucket = 4 * log2(us) + the top two bits below the leading one. */
  if (us > 0) {
    unsigned lg = 63u - (unsigned)__builtin_clzll(us);
    unsigned frac = lg >= 2 ? (unsigned)((us >> (lg - 2)) & 3u) : (unsigned)((us << (2 - lg)) & 3u);
    b = 4 * lg + frac + 1;
  }
  if (b >= ENGRAM__LAT_BUCKETS) b = ENGRAM__LAT_BUCKETS - 1;
  src->lat[b]++;
}

/* Answers req now with status and routes the answer; the actor still holds its own reference. */
static void answer_early(engram_source_t *src, engram_request_t *req, int status, const char *what) {
  if (status == ENGRAM_ETIMEDOUT) {
    if (engram__request_answer(req, status, "deadline of %u ms exceeded (%s)", req->priv->deadline_ms, what) != 0)
      return;
  } else if (engram__request_answer(req, status, "%s", what) != 0) {
    return;
  }
  req->priv->early = 1;
  src->errors++;
  engram__route(req); /* the answer's reference travels with it; the actor keeps its own */
}

static void on_timer(uv_timer_t *t) {
  engram_source_t *src = t->data;
  uint64_t now = engram__mono_ms(), next = 0;
  engram_request_t *req, *nx;
  unsigned released = 0;
  src->timer_due = 0;
  for (req = src->backlog_head; req != NULL; req = nx) {
    nx = req->priv->next;
    if (req->priv->deadline == 0) continue;
    if (req->priv->deadline <= now) {
      list_remove(&src->backlog_head, &src->backlog_tail, req);
      src->backlog_n--;
      req->priv->on_list = 0;
      released++;
      answer_early(src, req, ENGRAM_ETIMEDOUT, "waiting in the mailbox");
      engram__request_unref(req);
    } else if (next == 0 || req->priv->deadline < next) {
      next = req->priv->deadline;
    }
  }
  if (released) engram__mailbox_release(&src->mb, released);
  for (req = src->inflight_head; req != NULL; req = req->priv->next) {
    if (req->priv->deadline == 0 || req->priv->answered) continue;
    if (req->priv->deadline <= now) answer_early(src, req, ENGRAM_ETIMEDOUT, "in flight");
    else if (next == 0 || req->priv->deadline < next) next = req->priv->deadline;
  }
  if (next) timer_arm(src, next);
  if (src->barrier != 0) { /* a clear holds the calls after it: take them into the backlog, arm their deadlines */
    if (engram__mailbox_depth(&src->mb) > src->backlog_n) actor_pump(src);
    timer_arm(src, now + BARRIER_POLL_MS);
  }
}

/* ---- Dispatch ---- */

static inline void dispatch_to_method(engram_source_t *src, engram_request_t *req) {
  engram__method_fn fn = (unsigned)req->op < ENGRAM__OP_SLOTS ? src->table.op[req->op] : NULL;
  if (fn != NULL) fn(src, req);
  else {
    engram__request_set_message(req, "operation %d is not a source operation", (int)req->op);
    engram_request_complete(req, ENGRAM_EINVAL);
  }
}

/* While an emulated update is between its read and its store: a write of its key going out now makes it read
 * again (emulate.c). Out of line, so that the usual dispatch stays a tail call that saves no register (inline, it
 * cost every call 8 more instructions: callgrind, bench_cache one-core). */
__attribute__((noinline, cold)) static void dispatch_noting_writes(engram_source_t *src, engram_request_t *req) {
  src->table.saw_write(src, req);
  dispatch_to_method(src, req);
}

void engram__actor_dispatch(engram_source_t *src, engram_request_t *req) {
  if (__builtin_expect(src->upd_reading != 0, 0)) dispatch_noting_writes(src, req);
  else dispatch_to_method(src, req);
}

engram_request_t *engram__subrequest(engram_request_t *parent, engram_op_t op, const char *key, const char *ns,
                                     engram__done_fn on_done) {
  engram_request_t *sub = engram__request_new(op, key, key ? strlen(key) : 0, ns, ns ? strlen(ns) : 0);
  if (sub == NULL) return NULL;
  sub->priv->parent = parent;
  sub->priv->on_done = on_done;
  sub->priv->actor = parent->priv->actor;
  sub->priv->mgr = parent->priv->mgr;
  sub->now_ms = parent->now_ms;
  memcpy(sub->priv->source, parent->priv->source, sizeof sub->priv->source);
  return sub;
}

/* The clear barrier. A clear is often several steps — a source without a clear of its own lists and deletes (emulate.c),
 * a clear of a namespace prefix clears each namespace under it (prefix.c), Redis deletes a scan's pages — and calls
 * made after it that started meanwhile could be listed or deleted by a later step: a store made after a clear was
 * gone once it was done (test_conformance's clear_keeps_what_is_written_after_it, on sqlite-required-only,
 * redis-required-only, and through a prefix on redis, postgres and the tiered sources). So while a clear is in
 * the window, the calls after it stay in the backlog (and read_now / start_now decline); they start when it
 * leaves. Clears are rare; the calls before it run as before. While the barrier is up, the deadline timer also takes
 * the mailbox into the backlog every BARRIER_POLL_MS, so the waiting calls' deadlines hold (a review found only the
 * first call after the clear timed out on time: the others, unread in the mailbox, waited for the clear). An info
 * does not wait. A clear answered early (its deadline) keeps the barrier until its backend finishes it. */
static void actor_start(engram_source_t *src, engram_request_t *req) {
  engram_request_private_t *pv = req->priv;
  pv->started = 1;
  pv->on_list = 2;
  if (req->op == ENGRAM_OP_CLEAR) {
    pv->barrier = 1;
    src->barrier++;
    timer_arm(src, engram__mono_ms() + BARRIER_POLL_MS);
  }
  list_push_back(&src->inflight_head, NULL, req);
  src->inflight_n++;
  if (pv->deadline) timer_arm(src, pv->deadline);
  engram__retention_apply(&src->retention, req);
  engram__actor_dispatch(src, req);
}

/* Admits a request taken from the mailbox: start it, keep it in the backlog, or answer it at once. Returns
 * non-zero when it left the mailbox's count. */
static int actor_admit(engram_source_t *src, engram_request_t *req) {
  engram_request_private_t *pv = req->priv;
  if (pv->deadline && pv->deadline <= engram__mono_ms()) {
    answer_early(src, req, ENGRAM_ETIMEDOUT, "waiting in the mailbox");
    engram__request_unref(req);
    return 1;
  }
  /* An info changes nothing: it need not wait behind a clear (and shows one that is stuck). */
  if (src->inflight_n < src->max_inflight &&
      ((src->backlog_head == NULL && src->barrier == 0) || (req->op == ENGRAM_OP_INFO && src->barrier != 0))) {
    actor_start(src, req);
    return 1;
  }
  pv->on_list = 1;
  list_push_back(&src->backlog_head, &src->backlog_tail, req);
  src->backlog_n++;
  if (pv->deadline) timer_arm(src, pv->deadline);
  return 0;
}

static void actor_cancel_all(engram_source_t *src, const char *why);

/* Starts backlog requests while the window allows; returns how many left the backlog. The caller holds
 * src->pumping. */
static unsigned actor_start_backlog(engram_source_t *src) {
  unsigned released = 0;
  engram_request_t *req;
  while (src->backlog_head != NULL && src->inflight_n < src->max_inflight && src->barrier == 0) {
    req = src->backlog_head;
    list_remove(&src->backlog_head, &src->backlog_tail, req);
    src->backlog_n--;
    released++;
    actor_start(src, req);
  }
  return released;
}

/* Starts backlog requests while the window allows, then drains one batch from the mailbox. An actor on a loop it
 * shares (the home loop) drains at least what the mailbox held when the pump began: a producer on that loop (an
 * open-loop driver, a server's request handler) may push more than a batch per loop turn, and an actor that took
 * only a batch per turn then fell behind for good after one hiccup — the queue grew to the mailbox's bound and
 * the calls beyond it were refused while each turn still served 256 (bench_cache's open loop at 270,000 stores/s,
 * a tenth of what the actor serves closed-loop). Calls pushed during the pump (callbacks that submit again) wait
 * for the next turn, so a turn still ends. */
static void actor_pump(engram_source_t *src) {
  unsigned taken = 0, released, left, limit = src->batch;
  engram_request_t *req;
  if (src->pumping || src->st != ENGRAM__ACTOR_OPEN) return;
  src->pumping = 1;
  released = actor_start_backlog(src);
  if (!src->own_thread) {
    unsigned depth = engram__mailbox_depth(&src->mb);
    if (depth > limit) limit = depth;
  }
  while (taken < limit && (req = engram__mailbox_pop(&src->mb)) != NULL) {
    taken++;
    released += (unsigned)actor_admit(src, req);
  }
  if (taken && src->spin_ns) src->last_call_ns = uv_hrtime();
  left = released ? engram__mailbox_release(&src->mb, released) : engram__mailbox_depth(&src->mb);
  src->pumping = 0;
  turn_end(src);
  /* Requests still in the mailbox (a full batch, or one a producer is mid-way through pushing) need another
   * wake-up; backlog requests wait for a completion instead. */
  if (left > src->backlog_n && (src->backlog_n == 0 || src->inflight_n < src->max_inflight))
    actor_wake(src);
}

static void on_wake(engram_source_t *src) {
  if (atomic_load_explicit(&src->stop, memory_order_acquire) && src->st == ENGRAM__ACTOR_OPEN) {
    src->st = ENGRAM__ACTOR_CLOSING;
    actor_cancel_all(src, src->close_why);
    if (src->vt->close != NULL) src->vt->close(src);
    else engram_source_closed(src);
    return;
  }
  actor_pump(src);
}

static void on_async(uv_async_t *a) { on_wake(a->data); }

static void on_wake_idle(uv_idle_t *h) {
  uv_idle_stop(h);
  on_wake(h->data);
}

#ifdef __linux__
static void on_wake_fd(uv_poll_t *p, int status, int events) {
  engram_source_t *src = p->data;
  uint64_t n;
  (void)events;
  if (status == 0 && read(src->wake_fd, &n, sizeof n) < 0 && errno != EAGAIN && errno != EINTR) return;
  on_wake(src);
}
#endif

/* Own-thread actors, just before the loop polls: calls that arrived during the watch (spin.c) are pumped now. */
static void on_spin_prepare(uv_prepare_t *h) {
  engram_source_t *src = h->data;
  if (src->table.spin_wait(src)) actor_pump(src);
}

/* ---- Completion (called by backends) ---- */

void engram_request_complete(engram_request_t *req, int status) {
  engram_request_private_t *pv = req->priv;
  engram_source_t *src = pv->actor;
  if (pv->parent != NULL) { /* a sub-request of an emulated operation */
    pv->status = status;
    pv->on_done(req);
    return;
  }
  /* The writes that ride on an update, when the backend did not make them with it (follow.c): made now, before
   * the answer and the eviction pass; they complete the request again. */
  if (status == 0 && req->op == ENGRAM_OP_UPDATE && req->writes != NULL && !pv->writes_made && !pv->answered &&
      !src->table.writes_native) {
    pv->writes_made = 1;
    if (src->table.follow_writes(src, req)) return;
  }
  /* max_items_per_namespace (evict.c): a write that succeeded evicts the namespace's oldest items before it is
   * answered, so its caller sees the namespace within the limit; the pass completes the request again. */
  if (status == 0 && src->retention.max_items != 0 && !pv->retained && !pv->answered &&
      (req->op == ENGRAM_OP_STORE || req->op == ENGRAM_OP_STORE_MANY || req->op == ENGRAM_OP_UPDATE)) {
    pv->retained = 1;
    if (src->table.after_write != NULL && src->table.after_write(src, req)) return;
  }
  /* Change events: the one branch a completion pays when nobody subscribes (events.h). Before the answer is
   * routed: after that the request may be freed by the thread it travels to. */
  if (atomic_load_explicit(&src->events->active, memory_order_relaxed) && status == 0)
    src->events->completed(src->events, src, req);
  if (pv->on_list == 2) {
    list_remove(&src->inflight_head, NULL, req);
    src->inflight_n--;
    pv->on_list = 0;
    if (pv->barrier) { /* a clear is done: the calls after it may start (below) */
      pv->barrier = 0;
      src->barrier--;
    }
  }
  if (!pv->answered) {
    src->ops++;
    if (status < 0 && status != ENGRAM_ENOTFOUND) src->errors++;
    if (pv->submit_ns != 0) latency_record(src, req);
    engram__request_answer(req, status, NULL);
    /* Drop the actor's reference before routing (the answer's still holds the request): the caller's thread
     * then frees the request it allocated, instead of this thread freeing it in a race with that delivery. */
    atomic_fetch_sub_explicit(&pv->refs, 1, memory_order_relaxed);
    engram__route(req);
  } else {
    engram__request_unref(req); /* the actor's reference */
  }
  /* A freed slot starts the backlog at once; the mailbox waits for the wake-up. Admitting from the mailbox here,
   * inside a completion, let callbacks that submit again feed the same loop turn forever: with PostgreSQL down,
   * every call fails at once, its callback submits a new one, and updates waiting behind one key took each new
   * one up before the turn could end — the loop never reached its timers, so never reconnected (make soak with
   * thread appends). The wake-up bounds the work of a turn by the batch. */
  if (src->st == ENGRAM__ACTOR_OPEN && !src->pumping) {
    unsigned released = 0;
    if (src->backlog_head != NULL && src->inflight_n < src->max_inflight && src->barrier == 0) {
      src->pumping = 1;
      released = actor_start_backlog(src);
      src->pumping = 0;
      turn_end(src);
    }
    if (released) engram__mailbox_release(&src->mb, released);
    if (engram__mailbox_depth(&src->mb) > src->backlog_n) actor_wake(src);
  }
}

/* ---- Submission ---- */

int engram__actor_submit(engram_source_t *src, engram_request_t *req) {
  int wake = 0, rc;
  engram_request_private_t *pv = req->priv;
  pv->actor = src;
  pv->mgr = src->mgr;
  memcpy(pv->source, src->name, sizeof pv->source);
  if (pv->deadline_ms) pv->deadline = engram__mono_ms() + pv->deadline_ms;
  /* Latency is sampled (one call in 8 per submitting thread): the clock read costs more than the rest of a
   * cache call's bookkeeping. */
  {
    static _Thread_local unsigned sample;
    pv->submit_ns = (sample++ & 7u) == 0 ? uv_hrtime() : 0;
  }
  atomic_store_explicit(&pv->refs, 2, memory_order_relaxed);
  rc = engram__mailbox_push(&src->mb, req, &wake);
  if (rc != 0) {
    atomic_store_explicit(&pv->refs, 1, memory_order_relaxed);
    return rc;
  }
  if (wake && (!src->own_thread || spin_must_wake(src))) actor_wake(src);
  return 0;
}

int engram__actor_start_now(engram_source_t *src, engram_request_t *req) {
  engram_request_private_t *pv = req->priv;
  if (src->own_thread || src->st != ENGRAM__ACTOR_OPEN || src->pumping || src->backlog_head != NULL ||
      src->barrier != 0 || src->inflight_n >= src->max_inflight || engram__mailbox_depth(&src->mb) != 0)
    return 0;
  if (pv->deadline != 0 && pv->deadline <= engram__mono_ms()) return 0;
  pv->actor = src;
  pv->mgr = src->mgr;
  memcpy(pv->source, src->name, sizeof pv->source);
  pv->submit_ns = 0;
  atomic_store_explicit(&pv->refs, 2, memory_order_relaxed);
  actor_start(src, req);
  return 1;
}

/* ---- Lifecycle ---- */


static void on_reply_idle(uv_idle_t *h) {
  engram_source_t *src = h->data;
  src->reply_wake = 0;
  uv_idle_stop(h);
  engram__home_wake(&src->home);
}

/* An own-thread actor finishes calls in bursts (a SQLite group commit answers hundreds at once): waking the
 * home loop for each empty-to-non-empty push made it drain a few answers and sleep again, an eventfd write and
 * a wake-up each time. On the actor's thread the wake is sent once, from an idle handle, when the loop turn
 * ends; an active idle handle also keeps the loop from blocking in poll before it ran. */
static void actor_post_reply(engram_source_t *src, engram_request_t *req) {
  if (thread_actor != src) {
    engram__home_post(&src->home, req);
    return;
  }
  if (engram__home_push(&src->home, req) && !src->reply_wake && src->st != ENGRAM__ACTOR_CLOSED) {
    src->reply_wake = 1;
    uv_idle_start(&src->reply_idle, on_reply_idle);
  } else if (src->st == ENGRAM__ACTOR_CLOSED) {
    engram__home_wake(&src->home);
  }
}

void engram__route(engram_request_t *req) {
  engram_request_private_t *pv = req->priv;
  if (pv->cq != NULL && pv->on_done == NULL)
    engram__cq_push(pv->cq, req);
  else if (pv->actor != NULL && pv->actor->own_thread)
    actor_post_reply(pv->actor, req);
  else
    engram__request_deliver(req);
}

static void actor_thread_main(void *arg) {
  engram_source_t *src = arg;
  thread_actor = src;
  src->vt->open(src, src->open_options);
  uv_run(&src->own_loop, UV_RUN_DEFAULT);
  /* The loop ends once close released every handle. */
  uv_loop_close(&src->own_loop);
  engram__home_post(&src->home, src->exit_msg);
}

/* The hook of actors created without one: never active. */
static engram__event_hook_t no_events;
static atomic_uint_fast64_t next_serial; /* engram_source_t.serial */

int engram__actor_new(const engram__actor_config_t *cfg, const engram__table_t *table, engram_request_t *add_req,
                      engram_source_t **out) {
  const engram_source_vtable_t *vt = add_req->priv->vtable_arg;
  engram_source_t *src = engram_calloc(1, sizeof *src);
  int rc = ENGRAM_ENOMEM;
  if (src == NULL) return ENGRAM_ENOMEM;
  src->mgr = cfg->mgr;
  src->home = cfg->home;
  src->events = cfg->events != NULL ? cfg->events : &no_events;
  src->table = *table;
  src->update_retries = cfg->update_retries;
  src->vt = vt;
  snprintf(src->name, sizeof src->name, "%s", add_req->priv->name_arg);
  src->serial = atomic_fetch_add_explicit(&next_serial, 1, memory_order_relaxed) + 1;
  src->max_inflight = cfg->max_inflight;
  src->batch = cfg->batch;
  src->own_thread = cfg->own_thread; /* the type's default or the source's "thread" option (placement.h) */
  src->ctl = add_req;
  atomic_init(&src->is_default, 0);
  atomic_init(&src->stop, 0);
  atomic_init(&src->spinning, 0);
  atomic_init(&src->health, ENGRAM_HEALTH_CONNECTED);
  if (vt->instance_size && (src->state = engram_calloc(1, vt->instance_size)) == NULL) goto fail;
  if (add_req->priv->desc_arg && (src->description = engram_strdup(add_req->priv->desc_arg)) == NULL) goto fail;
  if ((src->close_ctl = engram__request_new(ENGRAM_OP_REMOVE_SOURCE, NULL, 0, NULL, 0)) == NULL) goto fail;
  src->close_ctl->backend_data = src;
  if (engram__mailbox_init(&src->mb, cfg->mailbox_capacity) != 0) goto fail;
  if (src->own_thread) {
    if (uv_loop_init(&src->own_loop) != 0) {
      rc = ENGRAM_EBACKEND;
      goto fail_mb;
    }
    src->loop = &src->own_loop;
  } else {
    src->loop = cfg->home.loop;
  }
  src->wake_fd = -1;
#ifdef __linux__
  if (src->own_thread && (src->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) >= 0 &&
      uv_poll_init(src->loop, &src->wake_poll, src->wake_fd) == 0) {
    src->wake_poll.data = src;
    uv_poll_start(&src->wake_poll, UV_READABLE, on_wake_fd);
  } else if (src->wake_fd >= 0) {
    close(src->wake_fd);
    src->wake_fd = -1;
  }
#endif
  if (src->wake_fd < 0) uv_async_init(src->loop, &src->async, on_async);
  uv_timer_init(src->loop, &src->timer);
  src->async.data = src;
  src->timer.data = src;
  uv_idle_init(src->loop, &src->wake_idle);
  src->wake_idle.data = src;
  src->handles_open = 3;
  if (!src->own_thread) /* created on the home loop's thread (the manager's control path runs there) */
    src->loop_thread = uv_thread_self();
  if (src->own_thread) {
    uv_idle_init(src->loop, &src->reply_idle);
    src->reply_idle.data = src;
    uv_prepare_init(src->loop, &src->spin_prep);
    src->spin_prep.data = src;
    src->spin_ns = src->table.spin_ns;
    if (src->spin_ns) uv_prepare_start(&src->spin_prep, on_spin_prepare);
    src->handles_open = 5;
  }
  *out = src;
  return 0;
fail_mb:
  engram__mailbox_destroy(&src->mb);
fail:
  if (src->close_ctl) engram__request_unref(src->close_ctl);
  engram_free(src->description);
  engram_free(src->upd_keys);
  engram_free(src->state);
  engram_free(src);
  return rc;
}

void engram__actor_open(engram_source_t *src) {
  if (src->own_thread) {
    if (uv_thread_create(&src->thread, actor_thread_main, src) != 0) {
      /* No thread: release the loop made for it here and report the failed open from the home loop. */
      src->ctl->priv->status = ENGRAM_EBACKEND;
      snprintf(src->ctl->priv->message, sizeof src->ctl->priv->message, "source '%s': cannot start its thread",
               src->name);
      src->own_thread = 0; /* nothing to join */
      src->exit_msg = NULL;
      actor_close_handles(src);
      uv_run(&src->own_loop, UV_RUN_DEFAULT);
      uv_loop_close(&src->own_loop);
      engram__home_post(&src->home, src->ctl);
    }
    return;
  }
  src->vt->open(src, src->open_options);
}

static void on_handle_closed(uv_handle_t *h) {
  engram_source_t *src = h->data;
  if (--src->handles_open > 0) return;
  if (!src->own_thread && src->exit_msg != NULL) {
    /* Home-loop actor: report to the manager directly (we are on the home loop). */
    engram__request_deliver(src->exit_msg);
  }
  /* Own-thread actor: its loop ends now and actor_thread_main posts ctl home. */
}

static void actor_close_handles(engram_source_t *src) {
  src->st = ENGRAM__ACTOR_CLOSED;
#ifdef __linux__
  if (src->wake_fd >= 0) uv_close((uv_handle_t *)&src->wake_poll, on_handle_closed);
  else
#endif
    uv_close((uv_handle_t *)&src->async, on_handle_closed);
  uv_close((uv_handle_t *)&src->timer, on_handle_closed);
  if (src->wake_idle.loop != NULL) uv_close((uv_handle_t *)&src->wake_idle, on_handle_closed);
  if (src->reply_idle.loop != NULL) { /* own-thread actors (also when their thread could not start) */
    if (src->reply_wake) engram__home_wake(&src->home); /* answers pushed this turn */
    src->reply_wake = 0;
    uv_close((uv_handle_t *)&src->reply_idle, on_handle_closed);
    uv_close((uv_handle_t *)&src->spin_prep, on_handle_closed);
  }
}

void engram_source_opened(engram_source_t *src, int status, const char *fmt, ...) {
  engram_request_t *ctl = src->ctl;
  va_list ap;
  int n;
  ctl->priv->status = status;
  if (status != 0) {
    n = snprintf(ctl->priv->message, sizeof ctl->priv->message, "source '%s': open failed: ", src->name);
    if (n < 0 || (size_t)n >= sizeof ctl->priv->message) n = 0;
    if (fmt != NULL) {
      va_start(ap, fmt);
      vsnprintf(ctl->priv->message + n, sizeof ctl->priv->message - (size_t)n, fmt, ap);
      va_end(ap);
    } else {
      snprintf(ctl->priv->message + n, sizeof ctl->priv->message - (size_t)n, "%s", engram_strerror(status));
    }
    cJSON_Delete(src->open_options); /* after formatting: fmt's arguments may point into the options */
    src->open_options = NULL;
    /* The source is not added: release its handles; the manager learns the outcome when they are closed. */
    src->st = ENGRAM__ACTOR_CLOSING;
    src->exit_msg = ctl;
    actor_close_handles(src);
    return;
  }
  cJSON_Delete(src->open_options);
  src->open_options = NULL;
  src->st = ENGRAM__ACTOR_OPEN;
  if (src->own_thread) engram__home_post(&src->home, ctl);
  else engram__request_deliver(ctl);
  /* Calls may have arrived while the source was opening. */
  if (engram__mailbox_depth(&src->mb) > 0) actor_wake(src);
}

static void actor_cancel_all(engram_source_t *src, const char *why) {
  engram_request_t *req;
  unsigned released = 0;
  while ((req = engram__mailbox_pop(&src->mb)) != NULL) {
    released++;
    answer_early(src, req, ENGRAM_ECANCELED, why);
    engram__request_unref(req);
  }
  while ((req = src->backlog_head) != NULL) {
    list_remove(&src->backlog_head, &src->backlog_tail, req);
    src->backlog_n--;
    req->priv->on_list = 0;
    released++;
    answer_early(src, req, ENGRAM_ECANCELED, why);
    engram__request_unref(req);
  }
  if (released) engram__mailbox_release(&src->mb, released);
  for (req = src->inflight_head; req != NULL; req = req->priv->next)
    if (!req->priv->answered) answer_early(src, req, ENGRAM_ECANCELED, why);
}

void engram__actor_close(engram_source_t *src, const char *why) {
  src->exit_msg = src->close_ctl;
  src->close_why = why;
  atomic_store_explicit(&src->stop, 1, memory_order_release);
  if (src->own_thread) {
    actor_wake(src);
    return;
  }
  src->st = ENGRAM__ACTOR_CLOSING;
  actor_cancel_all(src, why);
  if (src->vt->close != NULL) src->vt->close(src);
  else engram_source_closed(src);
}

void engram_source_closed(engram_source_t *src) {
  /* Calls that slipped in after the cancellation (none should) are canceled too. */
  actor_cancel_all(src, "source closed");
  if (src->timer_due) uv_timer_stop(&src->timer);
  actor_close_handles(src);
}

void engram__actor_free(engram_source_t *src) {
  if (src->own_thread) uv_thread_join(&src->thread);
#ifdef __linux__
  if (src->wake_fd >= 0) close(src->wake_fd);
#endif
  if (src->close_ctl) engram__request_unref(src->close_ctl);
  cJSON_Delete(src->open_options);
  engram__mailbox_destroy(&src->mb);
  engram_free(src->description);
  engram_free(src->upd_keys);
  if (src->ev_stage != NULL) src->events->stage_free(src->ev_stage); /* empty: every turn flushed it */
  engram_free(src->state);
  engram_free(src);
}

/* ---- Accessors for backends ---- */

void *engram_source_state(engram_source_t *src) { return src->state; }
uv_loop_t *engram_source_loop(engram_source_t *src) { return src->loop; }
const char *engram_source_name(const engram_source_t *src) { return src->name; }
void engram_source_set_max_inflight(engram_source_t *src, unsigned n) {
  src->max_inflight = n ? n : 1;
  if (src->st == ENGRAM__ACTOR_OPEN && !src->pumping && src->backlog_head != NULL) actor_pump(src);
}

void engram_source_set_health(engram_source_t *src, engram_health_t h) {
  atomic_store_explicit(&src->health, (int)h, memory_order_relaxed);
}

int engram_source_events_wanted(const engram_source_t *src) {
  return atomic_load_explicit(&src->events->active, memory_order_relaxed) != 0;
}

void engram__actor_announce(engram_source_t *src, unsigned kind, const char *ns, size_t ns_len, const char *key,
                            size_t key_len, uint64_t version) {
  if (!atomic_load_explicit(&src->events->active, memory_order_relaxed)) return;
  src->events->announce(src->events, src, kind, ns ? ns : "", ns ? ns_len : 0, key, key ? key_len : 0,
                        version);
}

void engram_source_announce(engram_source_t *src, unsigned kind, const char *ns, size_t ns_len, const char *key,
                            size_t key_len, uint64_t version) {
  if (kind != ENGRAM_EVENT_EXPIRED && kind != ENGRAM_EVENT_EVICTED) return; /* a backend's own changes only */
  engram__actor_announce(src, kind, ns, ns_len, key, key_len, version);
}
