/*
 * events_watch.c — engram_events_watch (include/engram/events.h): the changes other processes make to the store
 * behind a source, for an application (and the `engram watch` command) rather than a composite source. It is the
 * invalidation channel of vtable version 3 (watch.c; PostgreSQL LISTEN/NOTIFY, Redis client-side caching) with
 * its events renamed into change events: UP → LIVE, KEY → CHANGED, ALL → CLEARED of the whole source, DOWN →
 * MISSED (count 0: how many is unknown), END → END. Nothing is queued: the channel already delivers on the home
 * loop, one event at a time, so each is handed over as it comes.
 */
#include <string.h>

#include "engram/events.h"
#include "manager/manager.h"
#include "manager/watch.h"
#include "shared/error.h"

struct engram_remote_watch_s {
  engram_watch_t *w;
  engram_event_cb cb;
  void *ud;
  int ended;
  char source[ENGRAM_SOURCE_NAME_MAX + 1];
};

static void on_channel(const engram_watch_event_t *ev, void *ud) {
  engram_remote_watch_t *rw = ud;
  engram_event_t e;
  char ns[ENGRAM_NAMESPACE_MAX + 1], key[ENGRAM_KEY_MAX + 1];
  int status = 0;
  memset(&e, 0, sizeof e);
  e.source = rw->source;
  e.at_ms = engram_now_ms();
  switch (ev->kind) {
    case ENGRAM_WATCH_UP: e.kind = ENGRAM_EVENT_LIVE; break;
    case ENGRAM_WATCH_DOWN:
      e.kind = ENGRAM_EVENT_MISSED;
      e.source = NULL;
      break;
    case ENGRAM_WATCH_ALL: e.kind = ENGRAM_EVENT_CLEARED; break;
    case ENGRAM_WATCH_KEY:
      if (ev->ns_len > ENGRAM_NAMESPACE_MAX || ev->key_len > ENGRAM_KEY_MAX) { /* never from a source's own data */
        e.kind = ENGRAM_EVENT_CLEARED;
        break;
      }
      memcpy(ns, ev->ns, ev->ns_len);
      ns[ev->ns_len] = '\0';
      memcpy(key, ev->key, ev->key_len);
      key[ev->key_len] = '\0';
      e.kind = ENGRAM_EVENT_CHANGED;
      e.ns = ns;
      e.key = key;
      e.version = ev->version;
      break;
    case ENGRAM_WATCH_END:
      e.kind = ENGRAM_EVENT_END;
      e.source = NULL;
      status = ev->status ? ev->status : ENGRAM_ECLOSED;
      rw->ended = 1;
      break;
    default: return;
  }
  rw->cb(status, &e, rw->ud);
  if (ev->kind == ENGRAM_WATCH_END) engram_free(rw);
}

int engram_events_watch(engram_manager_t *mgr, const char *source, engram_event_cb cb, void *ud,
                        engram_remote_watch_t **out) {
  engram_source_t *dst;
  engram_remote_watch_t *rw;
  int rc;
  engram__error_clear();
  if (out != NULL) *out = NULL;
  if (mgr == NULL) return engram__error(ENGRAM_EINVAL, "mgr: NULL");
  if (cb == NULL) return engram__error(ENGRAM_EINVAL, "cb: NULL");
  if (out == NULL) return engram__error(ENGRAM_EINVAL, "out: NULL");
  if (source != NULL && source[0] == '\0') return engram__error(ENGRAM_EINVAL, "source: empty");
  if (atomic_load(&mgr->closed)) return engram__error(ENGRAM_ECLOSED, "manager: closed");
  uv_rwlock_rdlock(&mgr->lock);
  dst = engram__manager_find_locked(mgr, source);
  uv_rwlock_rdunlock(&mgr->lock);
  if (dst == NULL)
    return source ? engram__error(ENGRAM_EUNKNOWN_SOURCE, "unknown memory source '%.64s'", source)
                  : engram__error(ENGRAM_EUNKNOWN_SOURCE, "no memory source: add one first");
  if ((rw = engram_calloc(1, sizeof *rw)) == NULL) return engram__error(ENGRAM_ENOMEM, "out of memory");
  rw->cb = cb;
  rw->ud = ud;
  memcpy(rw->source, dst->name, sizeof rw->source);
  *out = rw; /* before the watch starts: LIVE may come from inside it */
  if ((rc = engram__watch_source(dst, dst->name, on_channel, rw, &rw->w)) != 0) {
    *out = NULL;
    engram_free(rw);
    return rc;
  }
  return 0;
}

int engram_events_unwatch(engram_remote_watch_t *rw) {
  engram__error_clear();
  if (rw == NULL || rw->ended || rw->w == NULL) return engram__error(ENGRAM_EINVAL, "engram_events_unwatch: no watch");
  engram_source_unwatch(rw->w); /* END follows, maybe from inside: rw may be gone after this */
  return 0;
}
