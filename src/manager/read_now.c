/*
 * read_now.c — the read-now service (include/engram/source.h, ENGRAM_SOURCE_CALL_VERSION 2): a source on the
 * home loop reads one key from another source of its manager that runs on the same loop, at once, through that
 * source's optional read_now method (vtable version 4), instead of sending it a call. A tiered source's hot-key
 * read is the reason: through engram_source_call it cost a request of its own (allocated, key copied, started,
 * answered, freed) on top of the cache's lookup — 4,690 instructions against the cache alone's 2,750 — and the
 * hit is all it needed. The read is made only when a call sent now would have started at once (the target is
 * open, nothing waits in its mailbox or backlog, and it is not draining them), so it comes in order after every
 * call sent to the target before; otherwise the caller is told to send a call (ENGRAM_EBUSY). It lives in the
 * manager layer beside call.c because it finds the target in the manager's source table.
 *
 * The write-now service (ENGRAM_SOURCE_CALL_VERSION 3) is its counterpart for the tiered source's write-through
 * copy into its cache tier: a replica store written at once through the target's write_now (vtable version 5)
 * under the same conditions, and only when the write's completion would do nothing but answer (no change-event
 * subscriber, no max_items_per_namespace: those run on a request's completion, actor.c). Through a call the copy
 * cost a request of its own, started, answered, routed back and freed on the home loop, which bounds a tiered
 * store's throughput (docs/tiered.md, Costs).
 */
#include <stdatomic.h>
#include <string.h>

#include "actor/actor.h"
#include "actor/mailbox.h"
#include "manager/find_here.h"
#include "manager/manager.h"
#include "shared/error.h"

/* find_here.h: the source named name, read without the table's lock (this is the home loop, where alone the
 * table is written). A hot-key read looks its tier up each time (a tier may be removed and added again), and the
 * lock pair and strcmp on every name were a third of what the service added to the cache's own read. */
engram_source_t *engram__manager_find_here(engram_manager_t *mgr, const char *name) {
  size_t i, n = mgr->n_sources, h = mgr->here_hint;
  /* The source found last first (the hint is a guess, checked: the table may have changed since). */
  if (h < n && mgr->sources[h]->name[0] == name[0] && strcmp(mgr->sources[h]->name, name) == 0) return mgr->sources[h];
  for (i = 0; i < n; i++) {
    engram_source_t *s = mgr->sources[i];
    if (s->name[0] == name[0] && strcmp(s->name, name) == 0) {
      mgr->here_hint = i;
      return s;
    }
  }
  return NULL;
}

engram_source_t *engram__manager_default_here(engram_manager_t *mgr) {
  size_t i, n = mgr->n_sources, h = mgr->here_hint;
  if (h < n && atomic_load_explicit(&mgr->sources[h]->is_default, memory_order_relaxed)) return mgr->sources[h];
  for (i = 0; i < n; i++)
    if (atomic_load_explicit(&mgr->sources[i]->is_default, memory_order_relaxed)) return mgr->sources[i];
  return NULL;
}

/* What both services check of the caller and the target: src on the home loop, the manager open, target another
 * source of the same loop (ENGRAM_ENOTSUP otherwise, naming verb). 0 with *dst set, or the error. */
static int now_target(engram_source_t *src, const char *target, const char *verb, engram_source_t **dst) {
  engram_manager_t *mgr = src->mgr;
  engram_source_t *d;
  if (src->own_thread)
    return engram__error(ENGRAM_EINVAL, "source '%s': runs on a thread of its own; only home-loop sources may %s "
                         "others now", src->name, verb);
  if (atomic_load_explicit(&mgr->closed, memory_order_acquire)) return engram__error(ENGRAM_ECLOSED, "manager: closed");
  d = engram__manager_find_here(mgr, target);
  if (d == NULL || d == src) return engram__error(ENGRAM_EUNKNOWN_SOURCE, "unknown memory source '%s'", target);
  if (d->own_thread || d->loop != src->loop)
    return engram__error(ENGRAM_ENOTSUP, "source '%s' (%s) cannot be %s now: it runs on another loop", target,
                         d->vt->name, strcmp(verb, "read") == 0 ? "read" : "written");
  *dst = d;
  return 0;
}

/* A call sent to dst now would start at once: open, not pumping, nothing in its mailbox or backlog, no clear in its
 * window (the clear barrier, actor.c). */
static int now_idle(engram_source_t *dst, const char *target) {
  if (dst->st != ENGRAM__ACTOR_OPEN || dst->pumping || dst->backlog_head != NULL || dst->barrier != 0 ||
      engram__mailbox_depth(&dst->mb) != 0)
    return engram__error(ENGRAM_EBUSY, "source '%s': calls are waiting; send a call", target);
  return 0;
}

int engram_source_read_now(engram_source_t *src, const char *target, engram_request_t *req) {
  int rc;
  engram_source_t *dst;
  const engram_source_vtable_t *vt;
  if (src == NULL || target == NULL || req == NULL)
    return engram__error(ENGRAM_EINVAL, "engram_source_read_now: %s is NULL",
                         src == NULL ? "src" : target == NULL ? "target" : "req");
  if (req->op != ENGRAM_OP_RETRIEVE)
    return engram__error(ENGRAM_EINVAL, "engram_source_read_now: req->op must be ENGRAM_OP_RETRIEVE (is %d)",
                         (int)req->op);
  if (req->key == NULL || req->key_len == 0)
    return engram__error(ENGRAM_EINVAL, "engram_source_read_now: req->key is empty");
  if ((rc = now_target(src, target, "read", &dst)) != 0) return rc;
  vt = dst->vt;
  if (vt->version < 4 || vt->read_now == NULL)
    return engram__error(ENGRAM_ENOTSUP, "source '%s' (%s) cannot be read now", target, vt->name);
  if ((rc = now_idle(dst, target)) != 0) return rc;
  return vt->read_now(dst, req);
}

int engram_source_write_now(engram_source_t *src, const char *target, const engram_source_call_t *c) {
  engram_source_t *dst;
  const engram_source_vtable_t *vt;
  size_t key_len;
  int rc;
  if (src == NULL || target == NULL || c == NULL)
    return engram__error(ENGRAM_EINVAL, "engram_source_write_now: %s is NULL",
                         src == NULL ? "src" : target == NULL ? "target" : "c");
  if (c->op != ENGRAM_OP_STORE || !(c->flags & ENGRAM_REQ_REPLICA) || (c->flags & ENGRAM_CALL_TAKE_VALUE))
    return engram__error(ENGRAM_EINVAL, "engram_source_write_now: c must be a replica store (op ENGRAM_OP_STORE, "
                         "flags with ENGRAM_REQ_REPLICA, without ENGRAM_CALL_TAKE_VALUE)");
  if (c->key == NULL || (key_len = strlen(c->key)) == 0 || key_len > ENGRAM_KEY_MAX)
    return engram__error(ENGRAM_EINVAL, "engram_source_write_now: c->key must be 1..%d bytes", ENGRAM_KEY_MAX);
  if (c->ns != NULL && strlen(c->ns) > ENGRAM_NAMESPACE_MAX)
    return engram__error(ENGRAM_EINVAL, "engram_source_write_now: c->ns longer than %d bytes", ENGRAM_NAMESPACE_MAX);
  if (c->value == NULL) return engram__error(ENGRAM_EINVAL, "engram_source_write_now: c->value is NULL");
  if (c->version == 0) return engram__error(ENGRAM_EINVAL, "engram_source_write_now: c->version must be >= 1");
  if ((rc = now_target(src, target, "write", &dst)) != 0) return rc;
  vt = dst->vt;
  if (vt->version < 5 || vt->write_now == NULL)
    return engram__error(ENGRAM_ENOTSUP, "source '%s' (%s) cannot be written now", target, vt->name);
  if (!(vt->flags & ENGRAM_SOURCE_REPLICA)) /* as engram_source_call refuses it */
    return engram__error(ENGRAM_ENOTSUP, "source '%s' (%s) does not take replicas", target, vt->name);
  if ((rc = now_idle(dst, target)) != 0) return rc;
  if ((dst->events != NULL && atomic_load_explicit(&dst->events->active, memory_order_relaxed)) ||
      dst->retention.max_items != 0)
    return engram__error(ENGRAM_EBUSY, "source '%s': the write must be announced or counted against max_items; send "
                         "a call", target);
  rc = vt->write_now(dst, c);
  dst->ops++; /* counted as its call would be */
  if (rc != 0) dst->errors++;
  return rc;
}
