/*
 * engram/events.h — change events: subscribe to the writes of one source (or of every source) in a namespace
 * prefix, and be told once per change, after the backend acknowledged it, what changed: the key, namespace,
 * version, kind and source. Model, guarantees and an example: docs/events.md.
 *
 * A change is announced when the write's request completes with success on the source's actor — for SQLite
 * after its group commit, for batches once per successful item — whether or not the caller still waited for
 * the answer (a call answered ENGRAM_ETIMEDOUT whose write then succeeded is announced). A failed write
 * (ENGRAM_EEXIST, ENGRAM_ECONFLICT, any error) announces nothing. Events of one subscription arrive in the
 * order the source completed the writes; events of different sources are not ordered with each other.
 *
 * Each subscription has a bounded queue (capacity events). When it is full, further events are dropped and
 * counted; after the queued events the subscriber receives one ENGRAM_EVENT_MISSED event whose count says how
 * many were dropped (an event that could not be allocated counts as missed too). Events are delivered on the
 * manager's home loop, or through a completion queue (engram_cq_t) on the thread that polls it — the same
 * ways replies travel.
 *
 * Ownership: everything an engram_event_t points to is borrowed for the callback's duration.
 * Cost: with no subscription the write path pays one relaxed atomic load and one branch per completed call.
 */
#ifndef ENGRAM_EVENTS_H
#define ENGRAM_EVENTS_H

#include <stdint.h>

#include "../engram.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What happened (engram_event_t.kind); also the bits of engram_subscribe_opts_t.kinds. */
typedef enum {
  ENGRAM_EVENT_STORED = 1u << 0,  /* store / store_many wrote the key (version 1 = created, else overwritten) */
  ENGRAM_EVENT_UPDATED = 1u << 1, /* engram_update wrote the key */
  ENGRAM_EVENT_DELETED = 1u << 2, /* delete removed the key (a delete of a missing key announces nothing);
                                     delete_many: see docs/events.md */
  ENGRAM_EVENT_CLEARED = 1u << 3, /* clear of one namespace (ns set) or of the whole source (ns NULL); no key */
  ENGRAM_EVENT_EXPIRED = 1u << 4, /* the backend removed an expired item (announced by backends that can) */
  ENGRAM_EVENT_EVICTED = 1u << 5, /* the backend evicted an item to stay within its limits (likewise) */
  ENGRAM_EVENT_MISSED = 1u << 6,  /* count events were dropped (queue full or out of memory); always delivered */
  ENGRAM_EVENT_END = 1u << 7,     /* the subscription's last callback; always delivered (see unsubscribe) */
  /* Appended for engram_events_watch (changes other processes make; below): */
  ENGRAM_EVENT_CHANGED = 1u << 8, /* another process wrote or removed key: version after the write, 0 when removed
                                     or unknown */
  ENGRAM_EVENT_LIVE = 1u << 9     /* the channel is complete from now on: every later change is announced (first,
                                     and again after a MISSED once the channel is back) */
} engram_event_kind_t;

/* Every change kind (not MISSED or END, which are always delivered). */
#define ENGRAM_EVENT_ALL 0x3Fu

/* One event. Borrowed for the callback's duration. */
typedef struct engram_event_s {
  engram_event_kind_t kind;
  const char *source;   /* the source's name; NULL for MISSED and END */
  const char *key;      /* NULL for CLEARED, MISSED and END */
  const char *ns;       /* the namespace; NULL for a whole-source CLEARED, MISSED and END */
  uint64_t version;     /* STORED / UPDATED: the item's version after the write; 0 when unknown or removed */
  uint64_t count;       /* CLEARED: items removed when the source knows it; MISSED: events dropped; else 0 */
  int64_t at_ms;        /* Unix epoch ms of the change: STORED / UPDATED the item's updated_at_ms as the backend
                           wrote it (a replica keeps its original's); others when it was announced */
} engram_event_t;

/*
 * The subscriber's callback: status first, as everywhere in engram. status is 0 for every event except the
 * last one, kind ENGRAM_EVENT_END, whose status is ENGRAM_ECANCELED (engram_events_unsubscribe) or
 * ENGRAM_ECLOSED (the manager was closed). ev is never NULL. After END nothing more arrives for this
 * subscription, and ud (and anything the subscriber keeps for it) may be freed from inside that callback.
 * Thread: the home loop, or the thread polling the subscription's completion queue.
 */
typedef void (*engram_event_cb)(int status, const engram_event_t *ev, void *ud);

/* A subscription (opaque). */
typedef struct engram_subscription_s engram_subscription_t;

/* Options of a subscription. All-zero: every source, every namespace, every kind, capacity 1024, home loop. */
typedef struct engram_subscribe_opts_s {
  const char *source;     /* only this source's changes (a name; the source need not exist yet); NULL = every
                             source. A tiered source's write is announced by it and by each of its tiers: name
                             one of them to see it once. */
  const char *ns_prefix;  /* only namespaces starting with these bytes ("team/"); NULL or "" = every namespace.
                             A whole-source CLEARED matches every prefix. */
  unsigned kinds;         /* ENGRAM_EVENT_* bits to receive; 0 = ENGRAM_EVENT_ALL */
  unsigned capacity;      /* events queued before overflow (1..1048576); 0 = 1024 */
  engram_cq_t *cq;        /* deliver through this completion queue instead of the home loop; it must outlive the
                             subscription (until END has been polled) */
} engram_subscribe_opts_t;

/*
 * Subscribes cb(status, ev, ud) to the changes opts selects (opts may be NULL). Writes completing after this
 * returns are announced; writes completed before it was called on the same thread are not (also when it is called
 * in the middle of an actor's turn, from a reply's callback). A write completing on another thread while it runs,
 * or earlier in an actor turn still under way there (a turn's changes are queued when it ends), may or may not be.
 * *out receives the handle for engram_events_unsubscribe. Returns 0, ENGRAM_EINVAL (mgr, cb or out NULL; a bad
 * source name, ns_prefix not UTF-8 or longer than ENGRAM_NAMESPACE_MAX, unknown kinds bits, capacity too large —
 * engram_last_error() says which), ENGRAM_ENOMEM or ENGRAM_ECLOSED (manager closing). Thread: any.
 */
ENGRAM_EXPORT int engram_events_subscribe(engram_manager_t *mgr, const engram_subscribe_opts_t *opts,
                                          engram_event_cb cb, void *ud, engram_subscription_t **out);

/*
 * Ends a subscription. When called on the subscription's delivery thread (the home loop, or the thread polling
 * its completion queue — including from inside its own callback), no further event callback runs after this
 * returns. From another thread, an event callback already running may finish. In both cases exactly one
 * callback follows, ENGRAM_EVENT_END with status ENGRAM_ECANCELED, on the delivery thread; it is the last, and
 * the handle is freed after it returns. Events still queued are discarded. Returns 0, or ENGRAM_EINVAL (sub
 * NULL, or unsubscribed before while its END is still on its way). Closing a manager ends every subscription
 * itself (END with ENGRAM_ECLOSED): call this only before the manager's close or shutdown, and never after the
 * END callback returned (the handle is gone). Thread: any.
 */
ENGRAM_EXPORT int engram_events_unsubscribe(engram_subscription_t *sub);

/*
 * Watches the changes OTHER processes make to the store behind a source — PostgreSQL (LISTEN/NOTIFY) and Redis
 * (client-side-caching invalidation), the sources whose store several processes share (docs/tiered.md,
 * "Coherence across processes"); what this process writes is announced by engram_events_subscribe instead.
 * source: a name, or NULL for the default source. cb gets, on the home loop, in order:
 *   ENGRAM_EVENT_LIVE     the channel is complete: every change committed from now on is announced;
 *   ENGRAM_EVENT_CHANGED  ns / key (and version, 0 when removed or unknown) changed in another process;
 *   ENGRAM_EVENT_CLEARED  (ns NULL) anything may have changed (a truncate, a flush, a message that could not be
 *                         read): re-read what you keep;
 *   ENGRAM_EVENT_MISSED   (count 0) the channel was lost: changes may go unannounced until the next LIVE;
 *   ENGRAM_EVENT_END      the last callback, status ENGRAM_ECANCELED (engram_events_unwatch) or ENGRAM_ECLOSED
 *                         (the source was removed or the manager closed); the handle is freed after it returns.
 * Nothing is queued: events are handed over as the channel delivers them. Returns 0 with *out set, or
 * ENGRAM_EINVAL (mgr, cb or out NULL), ENGRAM_EUNKNOWN_SOURCE, ENGRAM_ENOTSUP (the source has no channel: cache,
 * sqlite, vector, tiered), ENGRAM_ENOMEM, ENGRAM_ECLOSED; engram_last_error() says why. Thread: the home loop.
 */
typedef struct engram_remote_watch_s engram_remote_watch_t;
ENGRAM_EXPORT int engram_events_watch(engram_manager_t *mgr, const char *source, engram_event_cb cb, void *ud,
                                      engram_remote_watch_t **out);
/* Ends a watch: END (status ENGRAM_ECANCELED) follows exactly once, possibly before this returns. Returns 0, or
 * ENGRAM_EINVAL (w NULL or already ended). Never after END (the handle is gone). Thread: the home loop. */
ENGRAM_EXPORT int engram_events_unwatch(engram_remote_watch_t *w);

/* A static name for a kind ("stored", "updated", "deleted", "cleared", "expired", "evicted", "missed", "end",
 * "changed", "live"), or "unknown". Thread: any. */
ENGRAM_EXPORT const char *engram_event_kind_name(engram_event_kind_t kind);

#ifdef __cplusplus
}
#endif

#endif /* ENGRAM_EVENTS_H */
