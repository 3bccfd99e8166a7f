/*
 * events.c — change events (include/engram/events.h, docs/events.md): the registry of subscriptions, the hook
 * every actor calls when a write completes with success (or when its backend announces an expiry or an
 * eviction), and the delivery of events on the home loop or through a completion queue.
 *
 * The hook runs on the actor's thread (the home loop, or a source's own thread) under the registry's mutex (a
 * mutex, not a read-write lock: the sections are short, and a read lock cost three times as much per event),
 * which also guards every subscription's queue — one lock per event instead of two (a second, per subscription,
 * was a sixth of an event's cost; deliveries take it once per batch, so sharing it costs them little). The mutex
 * lives in a reference-counted block (events.h) so that a subscription delivered after its manager is gone still
 * has it. For each matching subscription the hook copies the event into a node of that subscription's bounded
 * queue; a full queue, or a node that cannot be allocated, counts a missed event
 * instead (nodes of up to NODE_TEXT bytes of text are kept on a free list after delivery and reused, so a steady
 * stream of events allocates nothing). The first event queued since the last delivery sends the subscription's carrier — one request
 * allocated at subscribe time, whose on_done is deliver() — to the home loop's reply queue or to the
 * subscription's completion queue, so events ride the same queues replies ride and cost no wake-up per
 * event. deliver() takes everything queued at once and runs the callbacks, then one MISSED event when
 * events were dropped. Unsubscribing (or the manager's close) takes the subscription out of the registry,
 * marks it ended and sends the carrier once more if it is not already on its way; the delivery that finds it
 * ended discards what is left, runs END and frees the subscription. The carrier is in at most one queue at a
 * time (`scheduled`), so the END delivery is the last use of the subscription. This file names nothing above
 * it: the manager hands it its home (reply queue and wake handle) when it creates it.
 */
#include <string.h>

#include "manager/events.h"
#include "manager/registry.h"
#include "request/cq.h"
#include "shared/error.h"

#define DEFAULT_CAPACITY 1024u
#define MAX_CAPACITY (1u << 20)

/* Bytes of text (source, key, namespace) a pooled node holds: most events fit, and their nodes are reused. */
#define NODE_TEXT 192u

typedef struct ev_node_s {
  struct ev_node_s *next;
  engram_event_t ev;
  int pooled;  /* a node of NODE_TEXT bytes: back to the subscription's free list after delivery */
  char buf[];  /* source, key and namespace, NUL-terminated */
} ev_node_t;

struct engram__events_lock_s {
  uv_mutex_t mu;
  atomic_uint refs; /* the registry, and each subscription until it is freed */
};

struct engram_subscription_s {
  engram_subscription_t *next, *prev; /* the registry's list (under lk) */
  int linked;                         /* in the registry's list (under lk) */
  engram__events_t *reg;
  engram__events_lock_t *lk;          /* the registry's lock (a reference), guarding what follows */
  engram_event_cb cb;
  void *ud;
  engram_cq_t *cq;
  char *source;                       /* NULL = every source */
  char *prefix;                       /* NULL = every namespace */
  size_t prefix_len;
  unsigned kinds, capacity;
  engram_request_t *carrier;          /* travels to the delivery thread; on_done = deliver */
  ev_node_t *head, *tail;
  unsigned n;
  ev_node_t *spare;                   /* delivered pooled nodes, reused by the next events (at most capacity) */
  unsigned n_spare;
  uint64_t missed;
  int scheduled;                      /* the carrier is on its way */
  int ended;                          /* 0, or END's status: nothing is queued any more */
  atomic_int stop;                    /* ended, for the delivery loop between events */
};

/* ---- Delivery (the home loop, or the thread polling the subscription's queue) ---- */

static void free_nodes(ev_node_t *n) {
  while (n != NULL) {
    ev_node_t *nx = n->next;
    engram_free(n);
    n = nx;
  }
}

static void lock_unref(engram__events_lock_t *lk) {
  if (lk != NULL && atomic_fetch_sub_explicit(&lk->refs, 1, memory_order_acq_rel) == 1) {
    uv_mutex_destroy(&lk->mu);
    engram_free(lk);
  }
}

static void sub_free(engram_subscription_t *sub) {
  free_nodes(sub->spare);
  free_nodes(sub->head);
  lock_unref(sub->lk);
  if (sub->carrier != NULL) engram__request_unref(sub->carrier);
  engram_free(sub->source);
  engram_free(sub->prefix);
  engram_free(sub);
}

static void deliver(engram_request_t *carrier) {
  engram_subscription_t *sub = carrier->backend_data;
  ev_node_t *list, *n;
  uint64_t missed;
  int ended;
  engram_event_t ev;
  uv_mutex_lock(&sub->lk->mu);
  list = sub->head;
  sub->head = sub->tail = NULL;
  sub->n = 0;
  missed = sub->missed;
  sub->missed = 0;
  ended = sub->ended;
  sub->scheduled = 0;
  uv_mutex_unlock(&sub->lk->mu);
  if (!ended) {
    ev_node_t *keep = NULL, *keep_tail = NULL;
    unsigned n_keep = 0;
    while ((n = list) != NULL && !atomic_load_explicit(&sub->stop, memory_order_acquire)) {
      list = n->next;
      sub->cb(0, &n->ev, sub->ud);
      if (n->pooled) {
        n->next = keep;
        keep = n;
        if (keep_tail == NULL) keep_tail = n;
        n_keep++;
      } else {
        engram_free(n);
      }
    }
    if (keep != NULL) { /* back to the free list, up to capacity nodes; the rest are freed */
      uv_mutex_lock(&sub->lk->mu);
      if (sub->n_spare + n_keep <= sub->capacity) {
        keep_tail->next = sub->spare;
        sub->spare = keep;
        sub->n_spare += n_keep;
        keep = NULL;
      }
      uv_mutex_unlock(&sub->lk->mu);
      free_nodes(keep);
    }
    if (missed != 0 && !atomic_load_explicit(&sub->stop, memory_order_acquire)) {
      memset(&ev, 0, sizeof ev);
      ev.kind = ENGRAM_EVENT_MISSED;
      ev.count = missed;
      ev.at_ms = engram_now_ms();
      sub->cb(0, &ev, sub->ud);
    }
  }
  free_nodes(list);
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

/* ---- Producing (actor threads, under the registry's mutex) ---- */

static int matches(const engram_subscription_t *sub, const char *source, unsigned kind, const char *ns,
                   size_t ns_len) {
  if (!(sub->kinds & kind)) return 0;
  if (sub->source != NULL && strcmp(sub->source, source) != 0) return 0;
  if (sub->prefix != NULL && ns != NULL && (ns_len < sub->prefix_len || memcmp(ns, sub->prefix, sub->prefix_len) != 0))
    return 0;
  return 1;
}

/* Queues one event on sub (the caller holds the registry's lock); returns non-zero when the carrier must be sent.
 * slen is strlen(source). A subscription to one source points its events at its own copy of the name (sub->source, equal
 * to source since it matched), so only the key and the namespace are copied. */
static int queue_one(engram_subscription_t *sub, const char *source, size_t slen, unsigned kind, const char *ns,
                     size_t ns_len, const char *key, size_t key_len, uint64_t version, uint64_t count, int64_t at_ms) {
  size_t text = (sub->source ? 0 : slen + 1) + (key ? key_len + 1 : 0) + (ns ? ns_len + 1 : 0);
  ev_node_t *n = NULL;
  char *p;
  if (sub->ended) return 0;
  if (sub->n < sub->capacity) {
    if (text <= NODE_TEXT && sub->spare != NULL) {
      n = sub->spare;
      sub->spare = n->next;
      sub->n_spare--;
    } else {
      n = engram_malloc(sizeof *n + (text <= NODE_TEXT ? NODE_TEXT : text));
    }
  }
  if (n == NULL) {
    sub->missed++;
  } else {
    n->next = NULL;
    n->pooled = text <= NODE_TEXT;
    memset(&n->ev, 0, sizeof n->ev);
    n->ev.kind = (engram_event_kind_t)kind;
    n->ev.version = version;
    n->ev.count = count;
    n->ev.at_ms = at_ms;
    p = n->buf;
    if (sub->source != NULL) {
      n->ev.source = sub->source;
    } else {
      memcpy(p, source, slen + 1);
      n->ev.source = p;
      p += slen + 1;
    }
    if (key != NULL) {
      memcpy(p, key, key_len);
      p[key_len] = '\0';
      n->ev.key = p;
      p += key_len + 1;
    }
    if (ns != NULL) {
      memcpy(p, ns, ns_len);
      p[ns_len] = '\0';
      n->ev.ns = p;
    }
    if (sub->tail) sub->tail->next = n;
    else sub->head = n;
    sub->tail = n;
    sub->n++;
  }
  if (sub->scheduled) return 0;
  sub->scheduled = 1;
  return 1;
}

static uint64_t reply_version(const engram_request_t *req, size_t i) {
  const engram_request_private_t *pv = req->priv;
  return i < pv->n_items ? pv->items[i].version : 0;
}

/* When a store or update happened: the time the backend wrote into the item, which saves a clock read per event;
 * else now. */
static int64_t write_time(const engram_request_t *req) {
  const engram_request_private_t *pv = req->priv;
  return pv->n_items > 0 && pv->items[0].updated_at_ms > 0 ? pv->items[0].updated_at_ms : engram_now_ms();
}

static void hook_announce(engram__event_hook_t *hook, const char *source, unsigned kind, const char *ns,
                          size_t ns_len, const char *key, size_t key_len, uint64_t version);

/* The writes that rode on an update (engram_update_writes_t): each announced as the store or delete it is. */
static void announce_writes(engram__event_hook_t *hook, const char *source, const engram_request_t *req) {
  const engram_update_writes_t *w = req->writes;
  size_t i;
  for (i = 0; i < w->n_store; i++)
    hook_announce(hook, source, ENGRAM_EVENT_STORED, req->ns, req->ns_len, w->store[i].key, strlen(w->store[i].key),
                  w->store_version[i]);
  if (w->deleted > 0)
    for (i = 0; i < w->n_delete; i++)
      hook_announce(hook, source, ENGRAM_EVENT_DELETED, req->ns, req->ns_len, w->delete_keys[i],
                    strlen(w->delete_keys[i]), 0);
}

static void hook_completed(engram__event_hook_t *hook, const char *source, engram_request_t *req) {
  engram__events_t *reg = (engram__events_t *)(void *)hook;
  const engram_request_private_t *pv = req->priv;
  engram_subscription_t *sub;
  unsigned kind;
  int64_t at;
  size_t i, slen;
  switch (req->op) {
    case ENGRAM_OP_STORE: case ENGRAM_OP_STORE_MANY: kind = ENGRAM_EVENT_STORED; break;
    case ENGRAM_OP_UPDATE: kind = ENGRAM_EVENT_UPDATED; break;
    case ENGRAM_OP_DELETE:
      if (pv->count == 0) return; /* the key was not there: nothing changed */
      kind = ENGRAM_EVENT_DELETED;
      break;
    case ENGRAM_OP_DELETE_MANY:
      if (pv->count == 0) return;
      kind = ENGRAM_EVENT_DELETED;
      break;
    case ENGRAM_OP_CLEAR:
      if (req->flags & ENGRAM_OPT_NS_PREFIX) return; /* announced per namespace as it was cleared (actor/prefix.c) */
      kind = ENGRAM_EVENT_CLEARED;
      break;
    default: return;
  }
  at = kind == ENGRAM_EVENT_STORED || kind == ENGRAM_EVENT_UPDATED ? write_time(req) : engram_now_ms();
  slen = strlen(source);
  uv_mutex_lock(&reg->lk->mu);
  for (sub = reg->subs; sub != NULL; sub = sub->next) {
    int send = 0;
    if (!matches(sub, source, kind, kind == ENGRAM_EVENT_CLEARED && (req->flags & ENGRAM_REQ_ALL_NAMESPACES) ? NULL : req->ns,
                 req->ns_len))
      continue;
    switch (req->op) {
      case ENGRAM_OP_STORE: case ENGRAM_OP_UPDATE:
        send = queue_one(sub, source, slen, kind, req->ns, req->ns_len, req->key, req->key_len, reply_version(req, 0), 0, at);
        break;
      case ENGRAM_OP_DELETE:
        send = queue_one(sub, source, slen, kind, req->ns, req->ns_len, req->key, req->key_len, 0, 0, at);
        break;
      case ENGRAM_OP_STORE_MANY:
        for (i = 0; i < pv->n_items && i < req->n; i++)
          if (pv->items[i].status == 0)
            send |= queue_one(sub, source, slen, kind, req->ns, req->ns_len, req->entries[i].key,
                              strlen(req->entries[i].key), pv->items[i].version, 0, at);
        break;
      case ENGRAM_OP_DELETE_MANY:
        for (i = 0; i < req->n; i++)
          send |= queue_one(sub, source, slen, kind, req->ns, req->ns_len, req->keys[i], strlen(req->keys[i]), 0, 0, at);
        break;
      default: /* CLEAR */
        if (req->flags & ENGRAM_REQ_ALL_NAMESPACES) send = queue_one(sub, source, slen, kind, NULL, 0, NULL, 0, 0, pv->count, at);
        else send = queue_one(sub, source, slen, kind, req->ns, req->ns_len, NULL, 0, 0, pv->count, at);
        break;
    }
    if (send) send_carrier(sub, 1);
  }
  uv_mutex_unlock(&reg->lk->mu);
  if (req->op == ENGRAM_OP_UPDATE && req->writes != NULL) announce_writes(hook, source, req);
}

static void hook_announce(engram__event_hook_t *hook, const char *source, unsigned kind, const char *ns,
                          size_t ns_len, const char *key, size_t key_len, uint64_t version) {
  engram__events_t *reg = (engram__events_t *)(void *)hook;
  engram_subscription_t *sub;
  int64_t at = engram_now_ms();
  size_t slen = strlen(source);
  uv_mutex_lock(&reg->lk->mu);
  for (sub = reg->subs; sub != NULL; sub = sub->next) {
    if (!matches(sub, source, kind, ns, ns_len)) continue;
    if (queue_one(sub, source, slen, kind, ns, ns_len, key, key_len, version, 0, at)) send_carrier(sub, 1);
  }
  uv_mutex_unlock(&reg->lk->mu);
}

/* ---- The registry ---- */

int engram__events_init(engram__events_t *ev, const engram__home_t *home) {
  memset(ev, 0, sizeof *ev);
  atomic_init(&ev->hook.active, 0);
  ev->hook.completed = hook_completed;
  ev->hook.announce = hook_announce;
  ev->home = *home;
  if ((ev->lk = engram_malloc(sizeof *ev->lk)) == NULL) return ENGRAM_ENOMEM;
  if (uv_mutex_init(&ev->lk->mu) != 0) {
    engram_free(ev->lk);
    ev->lk = NULL;
    return ENGRAM_EBACKEND;
  }
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
  uv_mutex_lock(&ev->lk->mu);
  ev->closed = 1;
  while ((sub = ev->subs) != NULL) {
    unlink_locked(ev, sub);
    if (end_sub(sub, ENGRAM_ECLOSED)) send_carrier(sub, 0);
  }
  uv_mutex_unlock(&ev->lk->mu);
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
  sub->carrier->backend_data = sub;
  sub->carrier->priv->on_done = deliver;
  uv_mutex_lock(&reg->lk->mu);
  if (reg->closed) {
    uv_mutex_unlock(&reg->lk->mu);
    sub_free(sub);
    return engram__error(ENGRAM_ECLOSED, "manager: closed");
  }
  sub->next = reg->subs;
  if (reg->subs) reg->subs->prev = sub;
  reg->subs = sub;
  sub->linked = 1;
  atomic_store_explicit(&reg->hook.active, 1, memory_order_relaxed);
  uv_mutex_unlock(&reg->lk->mu);
  *out = sub;
  return 0;
}

int engram_events_unsubscribe(engram_subscription_t *sub) {
  engram__events_t *reg;
  int send;
  engram__error_clear();
  if (sub == NULL) return engram__error(ENGRAM_EINVAL, "sub: NULL");
  reg = sub->reg;
  uv_mutex_lock(&reg->lk->mu);
  if (!sub->linked) {
    uv_mutex_unlock(&reg->lk->mu);
    return engram__error(ENGRAM_EINVAL, "sub: already ended");
  }
  unlink_locked(reg, sub);
  send = end_sub(sub, ENGRAM_ECANCELED);
  uv_mutex_unlock(&reg->lk->mu);
  if (send) send_carrier(sub, 1);
  return 0;
}
