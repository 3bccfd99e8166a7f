/*
 * watch.c — the invalidation-channel service (include/engram/source.h, vtable version 3): a composite source on
 * the home loop (tiered) watches another source of its manager for the changes other processes make to the
 * store they share. The service finds the target in the manager's source table, checks that it offers a channel
 * (vtable version ≥ 3 with watch and unwatch) and runs on the home loop too, and calls its watch method. It wraps
 * the backend's handle in a small record of its own so that engram_source_unwatch needs nothing but the handle,
 * and frees that record after the backend's END — the backend delivers END exactly once, on unwatch or when it
 * closes, so the record never outlives the source it names. Like the source-call service it lives in the
 * manager layer because it reads the source table; a backend reaches it only through source.h.
 */
#include <string.h>

#include "actor/actor.h"
#include "manager/manager.h"
#include "manager/watch.h"
#include "shared/error.h"

struct engram_watch_s {
  engram_source_t *dst; /* the watched source; valid until its END */
  void *handle;         /* the backend's */
  engram_watch_cb cb;
  void *ud;
  int ended;
};

static int offers(const engram_source_vtable_t *vt) { return vt->version >= 3 && vt->watch && vt->unwatch; }

/* Every event passes through here; END frees the record after the watcher heard it. */
static void relay(const engram_watch_event_t *ev, void *ud) {
  engram_watch_t *w = ud;
  if (w->ended) return; /* a backend's second END: never passed on */
  if (ev->kind == ENGRAM_WATCH_END) w->ended = 1;
  w->cb(ev, w->ud);
  if (ev->kind == ENGRAM_WATCH_END) engram_free(w);
}

/* The source named target, not src (NULL with *rc set and the last error saying why). */
static engram_source_t *find(engram_source_t *src, const char *target, int *rc) {
  engram_manager_t *mgr = src->mgr;
  engram_source_t *dst;
  uv_rwlock_rdlock(&mgr->lock);
  dst = engram__manager_find_locked(mgr, target);
  uv_rwlock_rdunlock(&mgr->lock);
  if (dst == NULL) *rc = engram__error(ENGRAM_EUNKNOWN_SOURCE, "unknown memory source '%s'", target);
  else if (dst == src) *rc = engram__error(ENGRAM_EINVAL, "source '%s' cannot watch itself", target);
  else return dst;
  return NULL;
}

int engram_source_can_watch(engram_source_t *src, const char *target) {
  engram_source_t *dst;
  int rc;
  if (src == NULL || target == NULL || (dst = find(src, target, &rc)) == NULL) return 0;
  return offers(dst->vt) && !dst->own_thread;
}

/* Watches dst (named name in messages) for cb; the checks every watcher needs. */
int engram__watch_source(engram_source_t *dst, const char *name, engram_watch_cb cb, void *ud, engram_watch_t **out) {
  engram_watch_t *w;
  int rc;
  if (!offers(dst->vt))
    return engram__error(ENGRAM_ENOTSUP, "source '%s' (%s) offers no invalidation channel", name, dst->vt->name);
  if (dst->own_thread)
    return engram__error(ENGRAM_EINVAL, "source '%s': only sources on the home loop can be watched", name);
  if ((w = engram_calloc(1, sizeof *w)) == NULL) return engram__error(ENGRAM_ENOMEM, "out of memory");
  w->dst = dst;
  w->cb = cb;
  w->ud = ud;
  *out = w; /* before watch: a backend may deliver events (never END) from inside it */
  if ((rc = dst->vt->watch(dst, relay, w, &w->handle)) != 0) {
    *out = NULL;
    engram_free(w);
    return engram__error(rc, "source '%s': %s", name,
                         rc == ENGRAM_ECLOSED ? "closing" : rc == ENGRAM_ENOMEM ? "out of memory" : "watch refused");
  }
  return 0;
}

int engram_source_watch(engram_source_t *src, const char *target, engram_watch_cb cb, void *ud, engram_watch_t **out) {
  engram_source_t *dst;
  int rc;
  engram__error_clear();
  if (src == NULL || target == NULL || cb == NULL || out == NULL)
    return engram__error(ENGRAM_EINVAL, "engram_source_watch: NULL argument");
  *out = NULL;
  if ((dst = find(src, target, &rc)) == NULL) return rc;
  if (src->own_thread || dst->own_thread || dst->loop != src->loop)
    return engram__error(ENGRAM_EINVAL, "source '%s': only sources on the home loop can watch each other", target);
  return engram__watch_source(dst, target, cb, ud, out);
}

void engram_source_unwatch(engram_watch_t *w) {
  if (w == NULL || w->ended) return;
  w->dst->vt->unwatch(w->dst, w->handle); /* END follows, maybe from inside: w may be gone after this */
}
