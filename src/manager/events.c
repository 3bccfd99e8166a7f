/*
 * events.c — change events (include/engram/events.h, docs/events.md): the registry of subscriptions, the hook
 * every actor calls when a write completes with success (or when its backend announces an expiry or an
 * eviction), and the delivery of events on the home loop or through a completion queue.
 *
 * The hook runs on the actor's thread (the home loop, or a source's own thread). It appends a record of the change
 * (ev_rec_t: the fields and the text, 40 bytes for a short key) to the actor's stage, and nothing else; when the
 * actor's turn ends (src->pumping falls: the actor calls the hook's turn_end; outside a turn, at once) stage_flush
 * takes the registry's lock once and copies the turn's records to each subscription they match — one contiguous block
 * per subscription, bounded by its capacity in events; a full queue, or a block that cannot grow, counts a missed event
 * instead. Per change there is no lock, no walk of the subscriptions and no matching (the lock's two atomic
 * read-modify-writes per event, and ~100 instructions of hook code run between every two stores, were most of what one
 * subscriber cost a stream of cache stores). The lock guards the list and every queue; it is a word taken with one
 * compare-and-swap inline, falling back to a mutex and a condition variable only to sleep when it is contended, and
 * lives in a reference-counted block (events.h) so that a subscription delivered after its manager is gone still has
 * it. A delivery takes the whole block and leaves the producers the one it delivered last time (two blocks alternate —
 * three with the stage's, which the last subscription a flush reaches takes in exchange for its empty one — so a steady
 * stream allocates nothing and writes memory it wrote a batch or two ago, sequentially: a node per event, 272 bytes on
 * two cache lines reused in delivery order, cost ~3 data-cache misses an event by callgrind's count, the block ~1). The
 * first event queued since the last delivery sends the subscription's carrier — one request allocated at subscribe
 * time, whose on_done is deliver() — to the home loop's reply queue or to the subscription's completion queue, so
 * events ride the same queues replies ride and cost no wake-up per event — or, when a home-loop actor produced them for
 * a home-loop subscription, to the registry's ready list, which an idle handle delivers next loop turn without any
 * wake-up (on_idle). deliver() takes everything queued at once and runs the callbacks, then one MISSED event when
 * events were dropped. Unsubscribing (or the manager's close) takes the subscription out of the registry, marks it
 * ended and sends the carrier once more if it is not already on its way; the delivery that finds it ended discards what
 * is left, runs END and frees the subscription. The carrier is in at most one queue at a time (`scheduled`), so the END
 * delivery is the last use of the subscription. This file names nothing above it: the manager hands it its home (reply
 * queue and wake handle) when it creates it.
 */
#include <stdint.h>
#include <string.h>

#include "manager/events.h"
#include "manager/registry.h"
#include "request/cq.h"
#include "shared/error.h"

#define DEFAULT_CAPACITY 1024u
#define MAX_CAPACITY (1u << 20)

/* A queued event: a record appended to its subscription's block (below), 8-byte aligned, its text after it —
 * the source's name (only for a subscription to every source), then the key and the namespace, each with its NUL.
 * 24 bytes and the text: a cache store's event ("e12345" in "default") takes 40 bytes, where a node of its own took
 * 272 on two cache lines. A CLEARED event's count travels in `version` (its version is always 0). */
typedef struct {
  uint64_t version;  /* or CLEARED's count */
  int64_t at_ms;
  uint16_t size;     /* of the whole record, a multiple of 8 */
  uint16_t key_off;  /* where the key starts, from the record's start; 0: NULL */
  uint16_t ns_off;   /* likewise the namespace */
  uint8_t kind;      /* the change kinds fit in a byte (ENGRAM_EVENT_ALL) */
  uint8_t has_src;   /* the source's name follows the record (else the event names the subscription's copy) */
} ev_rec_t;

/* A record's size must fit `size`: the largest key and namespace with the source's name and their NULs do. */
_Static_assert(sizeof(ev_rec_t) + ENGRAM_KEY_MAX + ENGRAM_NAMESPACE_MAX + ENGRAM_SOURCE_NAME_MAX + 3 + 7 <= 0xFFFF,
               "an event record's size fits ev_rec_t.size");
_Static_assert(ENGRAM_EVENT_ALL <= 0xFF, "a change kind fits ev_rec_t.kind");
_Static_assert(sizeof(ev_rec_t) == 24, "ev_rec_t: 24 bytes");

/* Bytes of the first block a subscription's queue allocates (it doubles as needed, up to what capacity events take).
 */
#define BLOCK_MIN 4096u
/* A delivered block larger than this is kept for reuse only if its batch filled at least a quarter of it. */
#define BLOCK_KEEP (1u << 20)

/* The lock: a word taken with one compare-and-swap and given back with one exchange when nobody waits — inline, a
 * few instructions, where uv_mutex_lock + uv_mutex_unlock cost ~75 an event (a fifth of it) — and a mutex and a
 * condition variable for the threads that do wait, so a waiter sleeps instead of spinning while the holder is
 * descheduled (the 2-core machines this runs on are shared). state: 0 free, 1 held, 2 held with (maybe) a waiter
 * asleep — the classic futex mutex ("Futexes Are Tricky", mutex 2) with the condition variable as the futex. */
struct engram__events_lock_s {
  atomic_int state;
  uv_mutex_t mu;    /* only for sleeping and waking */
  uv_cond_t cond;
  atomic_uint refs; /* the registry, and each subscription until it is freed */
};

#define SPINS 64 /* tries before sleeping: a holder normally lets go within a few hundred instructions */

static void lock_slow(engram__events_lock_t *lk) {
  int i, expect;
  for (i = 0; i < SPINS; i++) {
    expect = 0;
    if (atomic_load_explicit(&lk->state, memory_order_relaxed) == 0 &&
        atomic_compare_exchange_weak_explicit(&lk->state, &expect, 1, memory_order_acquire, memory_order_relaxed))
      return;
  }
  uv_mutex_lock(&lk->mu);
  while (atomic_exchange_explicit(&lk->state, 2, memory_order_acquire) != 0) uv_cond_wait(&lk->cond, &lk->mu);
  uv_mutex_unlock(&lk->mu);
}

static inline void lock(engram__events_lock_t *lk) {
  int expect = 0;
  if (!atomic_compare_exchange_strong_explicit(&lk->state, &expect, 1, memory_order_acquire, memory_order_relaxed))
    lock_slow(lk);
}

static void wake_one(engram__events_lock_t *lk) {
  uv_mutex_lock(&lk->mu); /* a waiter holds it from its exchange until it sleeps: the signal cannot fall between */
  uv_cond_signal(&lk->cond);
  uv_mutex_unlock(&lk->mu);
}

static inline void unlock(engram__events_lock_t *lk) {
  if (atomic_exchange_explicit(&lk->state, 0, memory_order_release) == 2) wake_one(lk);
}

struct engram_subscription_s {
  /* What the hook reads for every change, together at the start (the registry's lock guards the queue fields). */
  engram_subscription_t *next;        /* the registry's list (under lk) */
  unsigned kinds;
  unsigned name_words;                /* source (with its NUL) as 8-byte words to compare; 0 = compare with strcmp */
  char *source;                       /* NULL = every source */
  char *prefix;                       /* NULL = every namespace */
  size_t prefix_len;
  char *buf;                          /* the queue: records appended at buf + len, n of them */
  size_t len, cap;
  unsigned n, capacity;
  int scheduled;                      /* the carrier is on its way */
  uint64_t missed;
  uint64_t name_w[8], name_m[8];      /* the words and the masks of their bytes (source_is) */
  /* The rest. */
  char *spare;                        /* a delivered block, emptied, for the queue's next one (spare_cap bytes) */
  size_t spare_cap;
  engram_subscription_t *prev;
  int linked;                         /* in the registry's list (under lk) */
  engram__events_t *reg;
  engram__events_lock_t *lk;          /* the registry's lock (a reference), guarding the queue */
  engram_event_cb cb;
  void *ud;
  engram_cq_t *cq;
  engram_request_t *carrier;          /* travels to the delivery thread; on_done = deliver */
  engram_subscription_t *ready_next;  /* the registry's ready list (home loop only) */
  int ended;                          /* 0, or END's status: nothing is queued any more */
  atomic_int stop;                    /* ended, for the delivery loop between events */
};

/* ---- Delivery (the home loop, or the thread polling the subscription's queue) ---- */

static void lock_unref(engram__events_lock_t *lk) {
  if (lk != NULL && atomic_fetch_sub_explicit(&lk->refs, 1, memory_order_acq_rel) == 1) {
    uv_cond_destroy(&lk->cond);
    uv_mutex_destroy(&lk->mu);
    engram_free(lk);
  }
}

static void sub_free(engram_subscription_t *sub) {
  engram_free(sub->buf);
  engram_free(sub->spare);
  lock_unref(sub->lk);
  if (sub->carrier != NULL) engram__request_unref(sub->carrier);
  engram_free(sub->source);
  engram_free(sub->prefix);
  engram_free(sub);
}

/* Runs the callback for each record of [p, end) until an unsubscribe stops it. */
static void deliver_records(engram_subscription_t *sub, const char *p, const char *end) {
  engram_event_t ev;
  ev.count = 0;
  while (p < end && !atomic_load_explicit(&sub->stop, memory_order_acquire)) {
    const ev_rec_t *r = (const ev_rec_t *)(const void *)p;
    ev.kind = (engram_event_kind_t)r->kind;
    ev.version = r->version;
    ev.at_ms = r->at_ms;
    ev.source = r->has_src ? p + sizeof *r : sub->source;
    ev.key = r->key_off ? p + r->key_off : NULL;
    ev.ns = r->ns_off ? p + r->ns_off : NULL;
    if (__builtin_expect(r->kind == ENGRAM_EVENT_CLEARED, 0)) {
      ev.count = r->version;
      ev.version = 0;
      sub->cb(0, &ev, sub->ud);
      ev.count = 0;
    } else {
      sub->cb(0, &ev, sub->ud);
    }
    p += r->size;
  }
}

static void deliver(engram_request_t *carrier) {
  engram_subscription_t *sub = carrier->backend_data;
  char *block;
  size_t len, cap;
  uint64_t missed;
  int ended;
  engram_event_t ev;
  /* Take the queue's block and give the producers the spare one (the block delivered last time, emptied): two
   * blocks alternate, so a steady stream allocates nothing and writes memory it touched one batch ago. */
  lock(sub->lk);
  block = sub->buf;
  len = sub->len;
  cap = sub->cap;
  sub->buf = sub->spare;
  sub->cap = sub->spare_cap;
  sub->spare = NULL;
  sub->spare_cap = 0;
  sub->len = 0;
  sub->n = 0;
  missed = sub->missed;
  sub->missed = 0;
  ended = sub->ended;
  sub->scheduled = 0;
  unlock(sub->lk);
  if (!ended) {
    deliver_records(sub, block, block + len);
    if (block != NULL && (cap <= BLOCK_KEEP || len >= cap / 4)) {
      lock(sub->lk);
      if (sub->spare == NULL) {
        sub->spare = block;
        sub->spare_cap = cap;
        block = NULL;
      }
      unlock(sub->lk);
    }
    if (missed != 0 && !atomic_load_explicit(&sub->stop, memory_order_acquire)) {
      memset(&ev, 0, sizeof ev);
      ev.kind = ENGRAM_EVENT_MISSED;
      ev.count = missed;
      ev.at_ms = engram_now_ms();
      sub->cb(0, &ev, sub->ud);
    }
  }
  engram_free(block);
  if (!ended) return; /* an unsubscribe during the callbacks sent the carrier again: that delivery ends it */
  memset(&ev, 0, sizeof ev);
  ev.kind = ENGRAM_EVENT_END;
  ev.at_ms = engram_now_ms();
  sub->cb(ended, &ev, sub->ud);
  sub_free(sub);
}

/* Sends the carrier to the delivery thread. wake = 0: the home loop is not woken (its caller drains next). */
static void send_carrier(engram_subscription_t *sub, int wake) {
  if (sub->cq != NULL) engram__cq_push(sub->cq, sub->carrier);
  else if (wake) engram__home_post(&sub->reg->home, sub->carrier);
  else (void)engram__home_push(&sub->reg->home, sub->carrier);
}

/* The home loop's turn handle: the deliveries of home-loop subscriptions whose events a home-loop actor produced. The
 * carrier of such a subscription waits in the registry's ready list and an idle handle runs it next loop turn,
 * instead of the reply queue and a wake-up: a write to the home loop's eventfd and its read cost ~2.3 us of system
 * time on this machine, once a batch (~250 events in bench_export: ~9 ns an event, 1.6 % of a cache store). */
static void on_idle(uv_idle_t *h) {
  engram__events_t *reg = h->data;
  engram_subscription_t *sub, *next;
  uv_idle_stop(h);
  reg->idle_on = 0;
  lock(reg->lk);
  sub = reg->ready;
  reg->ready = NULL;
  unlock(reg->lk);
  for (; sub != NULL; sub = next) { /* deliver() may free sub (END) */
    next = sub->ready_next;
    deliver(sub->carrier);
  }
}

static void free_idle(uv_handle_t *h) { engram_free(h); }

/* Sends the carriers of the ready list through the reply queue (wake: whether to wake the home loop). Home loop,
 * under the lock. */
static void ready_to_replies(engram__events_t *reg, int wake) {
  engram_subscription_t *sub, *next;
  for (sub = reg->ready, reg->ready = NULL; sub != NULL; sub = next) {
    next = sub->ready_next;
    send_carrier(sub, wake);
  }
}

/* Starts the turn handle (made on first use), or, when it cannot be made, sends the ready carriers the usual way.
 * Home loop, under the lock. */
__attribute__((noinline)) static void idle_start(engram__events_t *reg) {
  if (reg->idle == NULL) {
    if ((reg->idle = engram_malloc(sizeof *reg->idle)) == NULL || uv_idle_init(reg->home.loop, reg->idle) != 0) {
      engram_free(reg->idle);
      reg->idle = NULL;
      ready_to_replies(reg, 1);
      return;
    }
    reg->idle->data = reg;
  }
  uv_idle_start(reg->idle, on_idle);
  reg->idle_on = 1;
}

/* ---- Producing (actor threads) ---- */

/* An actor's stage: the changes of its current turn (src->pumping), as records in the queues' own format (ev_rec_t,
 * has_src 0: the source's name is not copied), queued on the subscriptions under one lock when the turn ends
 * (stage_flush, from the actor's turn_end). Per change that leaves the record and nothing else: no lock (two
 * atomic read-modify-writes), no walk of the subscriptions, no matching — a cache store's event cost ~190
 * instructions in the hook when each took the lock, and its code ran between every two stores. A subscription to
 * this source with no namespace prefix that wants every kind staged takes the turn's records in one memcpy, or
 * (the last subscription, its queue empty) the stage's block itself in exchange for its own. The stage holds at
 * most STAGE_MAX bytes of records (then it is flushed within the turn) and is freed with the actor. */
struct engram__event_stage_s {
  char *buf;                        /* records appended at buf + len, n of them */
  size_t len, cap;
  unsigned n;
  unsigned kinds;                   /* the kinds of the records, or'ed */
  engram_source_t *src;             /* its actor */
  engram__event_stage_t *next_open; /* this thread's stages holding records of a turn (open_stages) */
  int linked;                       /* in open_stages (records staged outside a turn are queued at once: never) */
};

#define STAGE_MIN 4096u
#define STAGE_MAX (64u << 10)

/* The stages holding records on this thread (their actors are in a turn on it): a subscribe on this thread queues
 * them first, so that a subscription made in a turn (from a reply's callback) is not told of the changes made
 * before it, exactly as when each change was queued at once. */
static _Thread_local engram__event_stage_t *open_stages;

/* Whether source names sub's source. The hook's source is always the actor's name array (src->name, char
 * [ENGRAM_SOURCE_NAME_MAX + 1]: actor.c passes it to both callbacks), so the words that cover sub's name and its NUL
 * — at most 64 bytes, see subscribe — can be read whole: a few instructions instead of a strcmp call (~30). */
_Static_assert(sizeof(((engram_source_t *)0)->name) >= 8 * 8, "source_is reads up to 64 bytes of an actor's name");

static inline int source_is(const engram_subscription_t *sub, const char *source) {
  unsigned k;
  if (sub->name_words == 0) return strcmp(sub->source, source) == 0;
  for (k = 0; k < sub->name_words; k++) {
    uint64_t w;
    memcpy(&w, source + 8 * k, 8);
    if ((w & sub->name_m[k]) != sub->name_w[k]) return 0;
  }
  return 1;
}

/* Copies len (at most 16) bytes of text and a NUL with two overlapping loads and stores, which read nothing outside
 * [src, src + len) — keys and namespaces are mostly that short, and a memcpy call costs ~15 more — and call nothing. */
static inline void copy_short(char *dst, const char *src, size_t len) {
  if (len >= 8) {
    uint64_t a, b;
    memcpy(&a, src, 8);
    memcpy(&b, src + len - 8, 8);
    memcpy(dst, &a, 8);
    memcpy(dst + len - 8, &b, 8);
  } else if (len >= 4) {
    uint32_t a, b;
    memcpy(&a, src, 4);
    memcpy(&b, src + len - 4, 4);
    memcpy(dst, &a, 4);
    memcpy(dst + len - 4, &b, 4);
  } else if (len > 0) {
    dst[0] = src[0];
    dst[len / 2] = src[len / 2];
    dst[len - 1] = src[len - 1];
  }
  dst[len] = '\0';
}

/* Copies len bytes of text and a NUL: copy_short up to 16 bytes, else memcpy. */
static inline void copy_text(char *dst, const char *src, size_t len) {
  if (len <= 16) {
    copy_short(dst, src, len);
  } else {
    memcpy(dst, src, len);
    dst[len] = '\0';
  }
}

/* Makes room for size more bytes in sub's block (the caller holds the lock): the spare block if the queue has none,
 * else a block twice as large, the records copied over. Returns 0 when it cannot allocate. Out of line: a steady
 * stream reaches it only while its blocks grow to the size of a batch. */
__attribute__((noinline, cold)) static int queue_grow(engram_subscription_t *sub, size_t size) {
  size_t cap = sub->cap != 0 ? sub->cap : BLOCK_MIN;
  char *b;
  while (cap < sub->len + size) cap *= 2;
  if (sub->buf == NULL && sub->spare != NULL && sub->spare_cap >= sub->len + size) {
    sub->buf = sub->spare;
    sub->cap = sub->spare_cap;
    sub->spare = NULL;
    sub->spare_cap = 0;
    return 1;
  }
  if ((b = engram_realloc(sub->buf, cap)) == NULL) return 0;
  sub->buf = b;
  sub->cap = cap;
  return 1;
}

/* Queues one staged record on sub (the caller holds the lock; sub matched it), inserting the source's name (name,
 * slen bytes with its NUL) when slen is non-zero: a subscription to every source points at its own copy. A full
 * queue, or a block that cannot grow, counts it as missed. */
static void queue_rec(engram_subscription_t *sub, const ev_rec_t *r, const char *name, size_t slen) {
  size_t size = (r->size + slen + 7) & ~(size_t)7;
  ev_rec_t *d;
  if (sub->n >= sub->capacity || (sub->len + size > sub->cap && !queue_grow(sub, size))) {
    sub->missed++;
    return;
  }
  d = (ev_rec_t *)(void *)(sub->buf + sub->len);
  sub->len += size;
  sub->n++;
  if (slen == 0) {
    memcpy(d, r, r->size);
    return;
  }
  *d = *r;
  d->size = (uint16_t)size;
  d->has_src = 1;
  if (d->key_off) d->key_off = (uint16_t)(d->key_off + slen);
  if (d->ns_off) d->ns_off = (uint16_t)(d->ns_off + slen);
  memcpy(d + 1, name, slen);
  memcpy((char *)(d + 1) + slen, r + 1, r->size - sizeof *r);
}

/* The staged records sub wants, one by one: its kinds, its namespace prefix (a whole-source clear, ns NULL, matches
 * every prefix), its capacity. Returns non-zero when any matched. */
static int queue_each(engram_subscription_t *sub, const engram__event_stage_t *st, const char *name) {
  const char *p = st->buf, *end = st->buf + st->len;
  size_t slen = sub->source == NULL ? strlen(name) + 1 : 0;
  int any = 0;
  for (; p < end; p += ((const ev_rec_t *)(const void *)p)->size) {
    const ev_rec_t *r = (const ev_rec_t *)(const void *)p;
    if (!(sub->kinds & r->kind)) continue;
    if (sub->prefix != NULL && r->ns_off != 0 && strncmp(p + r->ns_off, sub->prefix, sub->prefix_len) != 0) continue;
    any = 1;
    queue_rec(sub, r, name, slen);
  }
  return any;
}

/* Queues a stage on sub, which names its source or every source (the caller holds the lock); returns non-zero when
 * the carrier must be sent. */
static int queue_stage(engram_subscription_t *sub, engram__event_stage_t *st, const char *name) {
  int any = 1;
  if (sub->source != NULL && sub->prefix == NULL && !(st->kinds & ~sub->kinds) && sub->n + st->n <= sub->capacity) {
    if (sub->len == 0 && sub->next == NULL && sub->cap <= STAGE_MAX) {
      /* The last to read the stage: take its block, give it ours. A block larger than a stage's (grown because a
       * second turn's records came before the first's delivery) stays with the queue, the records copied into it:
       * handed to the stage it was freed, and the next such turn allocated it again — a 128 KiB realloc, its pages
       * faulted in afresh, every other turn of bench_export's events runs. */
      char *b = sub->buf;
      size_t cap = sub->cap;
      sub->buf = st->buf;
      sub->cap = st->cap;
      st->buf = b;
      st->cap = cap;
    } else if (sub->len + st->len <= sub->cap || queue_grow(sub, st->len)) {
      memcpy(sub->buf + sub->len, st->buf, st->len);
    } else {
      any = queue_each(sub, st, name); /* out of memory: what fits, the rest counted as missed */
      goto scheduled;
    }
    sub->len += st->len;
    sub->n += st->n;
  } else {
    any = queue_each(sub, st, name);
  }
scheduled:
  if (!any || sub->scheduled) return 0;
  sub->scheduled = 1;
  return 1;
}

/* Sends sub's carrier on its way (the caller holds the lock). home: the producer is an actor on the home loop and
 * the manager is not stopping: a home-loop subscription's carrier waits for the turn handle (on_idle). */
static void schedule(engram__events_t *reg, engram_subscription_t *sub, int home) {
  if (home && sub->cq == NULL) {
    sub->ready_next = reg->ready;
    reg->ready = sub;
    if (!reg->idle_on) idle_start(reg);
  } else {
    send_carrier(sub, 1);
  }
}

/* Queues src's staged changes on every subscription they match, under one lock, and empties the stage. Actor
 * thread (or, for open_stages, the thread whose turn staged them). */
static void stage_flush(engram_source_t *src) {
  engram__events_t *reg = (engram__events_t *)(void *)src->events;
  engram__event_stage_t *st = src->ev_stage, **pp;
  engram_subscription_t *sub;
  int home = !src->own_thread && !reg->stopped;
  if (st->linked) {
    for (pp = &open_stages; *pp != NULL; pp = &(*pp)->next_open)
      if (*pp == st) {
        *pp = st->next_open;
        break;
      }
    st->next_open = NULL;
    st->linked = 0;
  }
  src->ev_staged = 0;
  lock(reg->lk);
  for (sub = reg->subs; sub != NULL; sub = sub->next)
    if ((sub->source == NULL || source_is(sub, src->name)) && queue_stage(sub, st, src->name))
      schedule(reg, sub, home);
  unlock(reg->lk);
  st->len = 0;
  st->n = 0;
  st->kinds = 0;
}

static void hook_turn_end(engram_source_t *src) { stage_flush(src); }

static void stage_free(engram__event_stage_t *st) {
  engram_free(st->buf);
  engram_free(st);
}

/* A change that could not be staged (no memory): counted as missed by every subscription it matches, after the
 * changes staged before it are queued. */
__attribute__((noinline, cold)) static void change_missed(engram_source_t *src, unsigned kind, const char *ns,
                                                          size_t ns_len) {
  engram__events_t *reg = (engram__events_t *)(void *)src->events;
  engram_subscription_t *sub;
  int home = !src->own_thread && !reg->stopped;
  if (src->ev_staged) stage_flush(src);
  lock(reg->lk);
  for (sub = reg->subs; sub != NULL; sub = sub->next) {
    if (!(sub->kinds & kind) || (sub->source != NULL && !source_is(sub, src->name))) continue;
    if (sub->prefix != NULL && ns != NULL &&
        (ns_len < sub->prefix_len || memcmp(ns, sub->prefix, sub->prefix_len) != 0))
      continue;
    sub->missed++;
    if (!sub->scheduled) {
      sub->scheduled = 1;
      schedule(reg, sub, home);
    }
  }
  unlock(reg->lk);
}

/* Makes room for size bytes of records in src's stage (made on first use): a stage holding STAGE_MAX bytes is
 * flushed first (within the turn: the order of the changes holds), and the block grows as needed. Returns the
 * stage, or NULL when it cannot allocate. */
__attribute__((noinline, cold)) static engram__event_stage_t *stage_room(engram_source_t *src, size_t size) {
  engram__event_stage_t *st = src->ev_stage;
  size_t cap;
  char *b;
  if (st == NULL) {
    if ((st = engram_calloc(1, sizeof *st)) == NULL) return NULL;
    st->src = src;
    src->ev_stage = st;
  }
  if (st->n > 0 && st->len + size > STAGE_MAX) stage_flush(src);
  if (st->len + size <= st->cap) return st;
  cap = st->cap != 0 ? st->cap : STAGE_MIN;
  while (cap < st->len + size) cap *= 2;
  if ((b = engram_realloc(st->buf, cap)) == NULL) return NULL;
  st->buf = b;
  st->cap = cap;
  return st;
}

/* Stages one change of src (a CLEARED event's count travels in version); key and ns may be NULL. */
static inline void stage_one(engram_source_t *src, unsigned kind, const char *ns, size_t ns_len, const char *key,
                             size_t key_len, uint64_t version, int64_t at_ms) {
  engram__event_stage_t *st = src->ev_stage;
  size_t size = (sizeof(ev_rec_t) + (key != NULL ? key_len + 1 : 0) + (ns != NULL ? ns_len + 1 : 0) + 7) & ~(size_t)7;
  ev_rec_t *r;
  char *p;
  if (__builtin_expect(st == NULL || st->len + size > st->cap, 0) && (st = stage_room(src, size)) == NULL) {
    change_missed(src, kind, ns, ns_len);
    return;
  }
  r = (ev_rec_t *)(void *)(st->buf + st->len);
  st->len += size;
  st->n++;
  st->kinds |= kind;
  r->version = version;
  r->at_ms = at_ms;
  r->size = (uint16_t)size;
  r->kind = (uint8_t)kind;
  r->has_src = 0;
  p = (char *)(r + 1);
  r->key_off = 0;
  if (key != NULL) {
    copy_text(p, key, key_len);
    r->key_off = (uint16_t)(p - (char *)r);
    p += key_len + 1;
  }
  r->ns_off = 0;
  if (ns != NULL) {
    copy_text(p, ns, ns_len);
    r->ns_off = (uint16_t)(p - (char *)r);
  }
  if (!src->ev_staged) {
    src->ev_staged = 1;
    if (src->pumping) { /* outside a turn the caller queues it before returning: no subscribe can come between */
      st->next_open = open_stages;
      open_stages = st;
      st->linked = 1;
    }
  }
}

/* When a store or update happened: the time the backend wrote into the item, which saves a clock read per event;
 * else now. */
static int64_t write_time(const engram_request_t *req) {
  const engram_request_private_t *pv = req->priv;
  return pv->n_items > 0 && pv->items[0].updated_at_ms > 0 ? pv->items[0].updated_at_ms : engram_now_ms();
}

/* The items of a batch (store_many: those that succeeded; delete_many: every key named), and the writes that rode
 * on an update (engram_update_writes_t), each staged as the store or delete it is. Not inlined: the single-key path
 * of hook_completed, the one per-event cost that matters, stays small. */
__attribute__((noinline)) static void stage_many(engram_source_t *src, const engram_request_t *req) {
  const engram_request_private_t *pv = req->priv;
  size_t i;
  if (req->op == ENGRAM_OP_STORE_MANY) {
    int64_t at = write_time(req);
    for (i = 0; i < pv->n_items && i < req->n; i++)
      if (pv->items[i].status == 0)
        stage_one(src, ENGRAM_EVENT_STORED, req->ns, req->ns_len, req->entries[i].key, strlen(req->entries[i].key),
                  pv->items[i].version, at);
  } else if (req->op == ENGRAM_OP_DELETE_MANY) {
    int64_t at = engram_now_ms();
    for (i = 0; i < req->n; i++)
      stage_one(src, ENGRAM_EVENT_DELETED, req->ns, req->ns_len, req->keys[i], strlen(req->keys[i]), 0, at);
  } else { /* an update's writes */
    const engram_update_writes_t *w = req->writes;
    for (i = 0; i < w->n_store; i++)
      stage_one(src, ENGRAM_EVENT_STORED, req->ns, req->ns_len, w->store[i].key, strlen(w->store[i].key),
                w->store_version[i], engram_now_ms());
    if (w->deleted > 0)
      for (i = 0; i < w->n_delete; i++)
        stage_one(src, ENGRAM_EVENT_DELETED, req->ns, req->ns_len, w->delete_keys[i], strlen(w->delete_keys[i]), 0,
                  engram_now_ms());
  }
}

/* Every completion hook_completed's short path does not take: updates, deletes, batches, clears; stores outside a
 * turn, with long texts, or the first of a turn. */
__attribute__((noinline)) static void completed_other(engram_source_t *src, engram_request_t *req) {
  const engram_request_private_t *pv = req->priv;
  switch (req->op) {
    case ENGRAM_OP_STORE: case ENGRAM_OP_UPDATE:
      stage_one(src, req->op == ENGRAM_OP_STORE ? ENGRAM_EVENT_STORED : ENGRAM_EVENT_UPDATED, req->ns, req->ns_len,
                req->key, req->key_len, pv->n_items > 0 ? pv->items[0].version : 0, write_time(req));
      if (req->op == ENGRAM_OP_UPDATE && req->writes != NULL) stage_many(src, req);
      break;
    case ENGRAM_OP_DELETE:
      if (pv->count == 0) return; /* the key was not there: nothing changed */
      stage_one(src, ENGRAM_EVENT_DELETED, req->ns, req->ns_len, req->key, req->key_len, 0, engram_now_ms());
      break;
    case ENGRAM_OP_STORE_MANY:
      stage_many(src, req);
      break;
    case ENGRAM_OP_DELETE_MANY:
      if (pv->count == 0) return;
      stage_many(src, req);
      break;
    case ENGRAM_OP_CLEAR:
      if (req->flags & ENGRAM_OPT_NS_PREFIX) return; /* announced per namespace as it was cleared (actor/prefix.c) */
      if (req->flags & ENGRAM_REQ_ALL_NAMESPACES)
        stage_one(src, ENGRAM_EVENT_CLEARED, NULL, 0, NULL, 0, pv->count, engram_now_ms());
      else
        stage_one(src, ENGRAM_EVENT_CLEARED, req->ns, req->ns_len, NULL, 0, pv->count, engram_now_ms());
      break;
    default: return;
  }
  if (!src->pumping && src->ev_staged) stage_flush(src); /* outside a turn: queued at once */
}

/* A completed write: staged (and, outside a turn, queued at once). The path a stream of stores runs between every
 * two of them is straight-line code with no call, so that it saves no register: a store whose item carries its
 * write time (every store the cache and SQLite make), in a turn, whose key and namespace are up to 16 bytes each, to
 * a stage that already holds records of this turn and has room. Anything else goes the general way. */
static void hook_completed(engram__event_hook_t *hook, engram_source_t *src, engram_request_t *req) {
  const engram_request_private_t *pv = req->priv;
  engram__event_stage_t *st = src->ev_stage;
  const char *key = req->key, *ns = req->ns;
  size_t key_len = req->key_len, ns_len = req->ns_len, size;
  ev_rec_t *r;
  char *p;
  (void)hook;
  if (__builtin_expect(req->op != ENGRAM_OP_STORE || pv->n_items == 0 || pv->items[0].updated_at_ms <= 0 ||
                           !src->pumping || st == NULL || st->n == 0 || key == NULL || ns == NULL || key_len > 16 ||
                           ns_len > 16, 0)) {
    completed_other(src, req);
    return;
  }
  size = (sizeof *r + key_len + ns_len + 2 + 7) & ~(size_t)7;
  if (__builtin_expect(st->len + size > st->cap, 0)) {
    completed_other(src, req);
    return;
  }
  r = (ev_rec_t *)(void *)(st->buf + st->len);
  st->len += size;
  st->n++;
  st->kinds |= ENGRAM_EVENT_STORED;
  r->version = pv->items[0].version;
  r->at_ms = pv->items[0].updated_at_ms;
  r->size = (uint16_t)size;
  r->kind = ENGRAM_EVENT_STORED;
  r->has_src = 0;
  p = (char *)(r + 1);
  copy_short(p, key, key_len);
  r->key_off = (uint16_t)sizeof *r;
  p += key_len + 1;
  copy_short(p, ns, ns_len);
  r->ns_off = (uint16_t)(p - (char *)r);
}

static void hook_announce(engram__event_hook_t *hook, engram_source_t *src, unsigned kind, const char *ns,
                          size_t ns_len, const char *key, size_t key_len, uint64_t version) {
  (void)hook;
  stage_one(src, kind, ns, ns_len, key, key_len, version, engram_now_ms());
  if (src->ev_staged && !src->pumping) stage_flush(src);
}

/* ---- The registry ---- */

int engram__events_init(engram__events_t *ev, const engram__home_t *home) {
  memset(ev, 0, sizeof *ev);
  atomic_init(&ev->hook.active, 0);
  ev->hook.completed = hook_completed;
  ev->hook.announce = hook_announce;
  ev->hook.turn_end = hook_turn_end;
  ev->hook.stage_free = stage_free;
  ev->home = *home;
  if ((ev->lk = engram_malloc(sizeof *ev->lk)) == NULL) return ENGRAM_ENOMEM;
  if (uv_mutex_init(&ev->lk->mu) != 0) {
    engram_free(ev->lk);
    ev->lk = NULL;
    return ENGRAM_EBACKEND;
  }
  if (uv_cond_init(&ev->lk->cond) != 0) {
    uv_mutex_destroy(&ev->lk->mu);
    engram_free(ev->lk);
    ev->lk = NULL;
    return ENGRAM_EBACKEND;
  }
  atomic_init(&ev->lk->state, 0);
  atomic_init(&ev->lk->refs, 1);
  return 0;
}

static void unlink_locked(engram__events_t *reg, engram_subscription_t *sub) {
  if (sub->prev) sub->prev->next = sub->next;
  else reg->subs = sub->next;
  if (sub->next) sub->next->prev = sub->prev;
  sub->next = sub->prev = NULL;
  sub->linked = 0;
  atomic_store_explicit(&reg->hook.active, reg->subs != NULL, memory_order_relaxed);
}

/* Marks sub ended with status; returns non-zero when the carrier must be sent (the caller holds the lock). */
static int end_sub(engram_subscription_t *sub, int status) {
  int send;
  sub->ended = status;
  atomic_store_explicit(&sub->stop, 1, memory_order_release);
  send = !sub->scheduled;
  sub->scheduled = 1;
  return send;
}

void engram__events_close(engram__events_t *ev) {
  engram_subscription_t *sub;
  lock(ev->lk);
  ev->closed = 1;
  ready_to_replies(ev, 0); /* normally done by engram__events_stop already */
  while ((sub = ev->subs) != NULL) {
    unlink_locked(ev, sub);
    if (end_sub(sub, ENGRAM_ECLOSED)) send_carrier(sub, 0);
  }
  unlock(ev->lk);
}

void engram__events_stop(engram__events_t *ev) {
  ev->stopped = 1;
  lock(ev->lk);
  ready_to_replies(ev, 1);
  unlock(ev->lk);
  if (ev->idle != NULL) {
    uv_close((uv_handle_t *)ev->idle, free_idle); /* stops it; its memory is its own, freed by free_idle */
    ev->idle = NULL;
    ev->idle_on = 0;
  }
}

void engram__events_destroy(engram__events_t *ev) {
  lock_unref(ev->lk); /* freed now, or by the last subscription still on its way to END */
  ev->lk = NULL;
}

/* ---- Public functions ---- */

const char *engram_event_kind_name(engram_event_kind_t kind) {
  switch (kind) {
    case ENGRAM_EVENT_STORED: return "stored";
    case ENGRAM_EVENT_UPDATED: return "updated";
    case ENGRAM_EVENT_DELETED: return "deleted";
    case ENGRAM_EVENT_CLEARED: return "cleared";
    case ENGRAM_EVENT_EXPIRED: return "expired";
    case ENGRAM_EVENT_EVICTED: return "evicted";
    case ENGRAM_EVENT_MISSED: return "missed";
    case ENGRAM_EVENT_END: return "end";
    case ENGRAM_EVENT_CHANGED: return "changed";
    case ENGRAM_EVENT_LIVE: return "live";
  }
  return "unknown";
}

int engram__events_subscribe(engram__events_t *reg, const engram_subscribe_opts_t *opts, engram_event_cb cb, void *ud,
                             engram_subscription_t **out) {
  engram_subscribe_opts_t o;
  engram_subscription_t *sub;
  if (opts != NULL) o = *opts;
  else memset(&o, 0, sizeof o);
  if (o.source != NULL && engram__source_name_check("opts.source", o.source) != 0) return ENGRAM_EINVAL;
  if (o.ns_prefix != NULL) {
    size_t len = strlen(o.ns_prefix);
    if (len > ENGRAM_NAMESPACE_MAX)
      return engram__error(ENGRAM_EINVAL, "opts.ns_prefix: %zu bytes, above the limit of %d", len, ENGRAM_NAMESPACE_MAX);
    if (!engram_utf8_valid(o.ns_prefix, len)) return engram__error(ENGRAM_EINVAL, "opts.ns_prefix: not valid UTF-8");
  }
  if (o.kinds & ~(unsigned)ENGRAM_EVENT_ALL)
    return engram__error(ENGRAM_EINVAL, "opts.kinds: unknown bits 0x%x", o.kinds & ~(unsigned)ENGRAM_EVENT_ALL);
  if (o.capacity > MAX_CAPACITY)
    return engram__error(ENGRAM_EINVAL, "opts.capacity: %u is above the limit of %u", o.capacity, MAX_CAPACITY);
  if ((sub = engram_calloc(1, sizeof *sub)) == NULL) return engram__error(ENGRAM_ENOMEM, "out of memory subscribing");
  sub->reg = reg;
  sub->lk = reg->lk;
  atomic_fetch_add_explicit(&sub->lk->refs, 1, memory_order_relaxed);
  sub->cb = cb;
  sub->ud = ud;
  sub->cq = o.cq;
  sub->kinds = o.kinds ? o.kinds : ENGRAM_EVENT_ALL;
  sub->capacity = o.capacity ? o.capacity : DEFAULT_CAPACITY;
  atomic_init(&sub->stop, 0);
  if ((o.source != NULL && (sub->source = engram_strdup(o.source)) == NULL) ||
      (o.ns_prefix != NULL && o.ns_prefix[0] != '\0' && (sub->prefix = engram_strdup(o.ns_prefix)) == NULL) ||
      (sub->carrier = engram__request_new(ENGRAM_OP_INFO, NULL, 0, NULL, 0)) == NULL) {
    sub_free(sub);
    return engram__error(ENGRAM_ENOMEM, "out of memory subscribing");
  }
  sub->prefix_len = sub->prefix ? strlen(sub->prefix) : 0;
  if (sub->source != NULL && strlen(sub->source) + 1 <= sizeof sub->name_w) { /* else strcmp: 64 bytes and its NUL */
    size_t len = strlen(sub->source) + 1, j;
    unsigned char name[sizeof sub->name_w], mask[sizeof sub->name_m];
    memset(name, 0, sizeof name);
    memset(mask, 0, sizeof mask);
    memcpy(name, sub->source, len);
    for (j = 0; j < len; j++) mask[j] = 0xff;
    memcpy(sub->name_w, name, sizeof name);
    memcpy(sub->name_m, mask, sizeof mask);
    sub->name_words = (unsigned)((len + 7) / 8);
  }
  sub->carrier->backend_data = sub;
  sub->carrier->priv->on_done = deliver;
  /* Changes this thread's turns staged before this call are not this subscription's (open_stages). */
  while (open_stages != NULL) stage_flush(open_stages->src);
  lock(reg->lk);
  if (reg->closed) {
    unlock(reg->lk);
    sub_free(sub);
    return engram__error(ENGRAM_ECLOSED, "manager: closed");
  }
  sub->next = reg->subs;
  if (reg->subs) reg->subs->prev = sub;
  reg->subs = sub;
  sub->linked = 1;
  atomic_store_explicit(&reg->hook.active, 1, memory_order_relaxed);
  unlock(reg->lk);
  *out = sub;
  return 0;
}

int engram_events_unsubscribe(engram_subscription_t *sub) {
  engram__events_t *reg;
  int send;
  engram__error_clear();
  if (sub == NULL) return engram__error(ENGRAM_EINVAL, "sub: NULL");
  reg = sub->reg;
  lock(reg->lk);
  if (!sub->linked) {
    unlock(reg->lk);
    return engram__error(ENGRAM_EINVAL, "sub: already ended");
  }
  unlink_locked(reg, sub);
  send = end_sub(sub, ENGRAM_ECANCELED);
  unlock(reg->lk);
  if (send) send_carrier(sub, 1);
  return 0;
}
