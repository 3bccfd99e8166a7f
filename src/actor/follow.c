/*
 * follow.c — the writes that ride on an update (engram_update_writes_t: a conversation append's messages and
 * the messages its trim drops), made by the core for a source that cannot make them in the update's own atomic
 * step: one without ENGRAM_SOURCE_UPDATE_WRITES, or any source whose update is the core's emulation. After the
 * update succeeded and before it is answered, one store_many sub-request of the stores and one delete_many of
 * the deletes go out in parallel, through the source's own methods (or the core's emulation); their versions
 * and count go back into the writes, and the update is completed again. The caller thus sees one call and one
 * answer either way; what it loses here is atomicity: a write that fails (a value over the source's limit, a
 * server gone) fails the update with that write's status and message while the new value stays — the outcome
 * of the same calls made one after another. The sub-requests ride on the update's slot in the in-flight window,
 * as the emulation's do; an update answered early (deadline, cancellation) skips them.
 *
 * Change events: on success the actor's completion announces the update and its writes (manager/events.c); on a
 * failure it announces nothing, so this file announces what did change.
 */
#include <string.h>

#include "actor/follow.h"

/* The sub-request's message without its "source 'name': " prefix: the update's own message gets one. */
static const char *bare_message(const engram_request_t *sub, int status) {
  const char *m = sub->priv->message, *p;
  if (m[0] == '\0') return engram_strerror(status);
  if (strncmp(m, "source '", 8) == 0 && (p = strstr(m, "': ")) != NULL) return p + 3;
  return m;
}

static void fail_write(engram_request_t *upd, const engram_request_t *sub, int status) {
  engram_request_private_t *pv = upd->priv;
  if (pv->writes_status != 0) return;
  pv->writes_status = status;
  engram__request_set_message(upd, "update of key '%s': its writes: %s", upd->key, bare_message(sub, status));
}

static void announce_partial(engram_source_t *src, engram_request_t *upd) {
  const engram_update_writes_t *w = upd->writes;
  const engram_request_private_t *pv = upd->priv;
  size_t i;
  if (!engram_source_events_wanted(src)) return;
  engram__actor_announce(src, ENGRAM_EVENT_UPDATED, upd->ns, upd->ns_len, upd->key, upd->key_len,
                         pv->n_items > 0 ? pv->items[0].version : 0);
  for (i = 0; i < w->n_store; i++)
    if (w->store_version[i] != 0)
      engram__actor_announce(src, ENGRAM_EVENT_STORED, upd->ns, upd->ns_len, w->store[i].key,
                             strlen(w->store[i].key), w->store_version[i]);
  if (w->deleted > 0)
    for (i = 0; i < w->n_delete; i++)
      engram__actor_announce(src, ENGRAM_EVENT_DELETED, upd->ns, upd->ns_len, w->delete_keys[i],
                             strlen(w->delete_keys[i]), 0);
}

static void part_done(engram_request_t *sub) {
  engram_request_t *upd = sub->priv->parent;
  engram_request_private_t *pv = upd->priv, *sp = sub->priv;
  engram_update_writes_t *w = upd->writes;
  size_t i;
  if (sp->status != 0) {
    fail_write(upd, sub, sp->status);
  } else if (sub->op == ENGRAM_OP_STORE_MANY) {
    for (i = 0; i < sp->n_items && i < w->n_store; i++) {
      if (sp->items[i].status == 0) {
        w->store_version[i] = sp->items[i].version ? sp->items[i].version : 1;
      } else if (pv->writes_status == 0) {
        pv->writes_status = sp->items[i].status;
        engram__request_set_message(upd, "update of key '%s': its write of key '%s': %s", upd->key, w->store[i].key,
                                    engram_strerror(sp->items[i].status));
      }
    }
  } else {
    w->deleted = sp->count;
  }
  engram__request_unref(sub);
  if (--pv->writes_pending > 0) return;
  if (pv->writes_status != 0) announce_partial(pv->actor, upd);
  engram_request_complete(upd, pv->writes_status);
}

static engram_request_t *stores(engram_request_t *upd) {
  const engram_update_writes_t *w = upd->writes;
  engram_request_t *s = engram__subrequest(upd, ENGRAM_OP_STORE_MANY, NULL, upd->ns, part_done);
  size_t i;
  if (s == NULL || (s->priv->entries_owned = engram_calloc(w->n_store, sizeof(engram_entry_t))) == NULL ||
      (s->priv->expires_owned = engram_calloc(w->n_store, sizeof(int64_t))) == NULL)
    goto nomem;
  s->n = w->n_store;
  for (i = 0; i < w->n_store; i++) {
    engram_entry_t *e = &s->priv->entries_owned[i];
    if ((e->key = engram_strdup(w->store[i].key)) == NULL ||
        (e->value = cJSON_Duplicate(w->store[i].value, 1)) == NULL ||
        (w->store[i].metadata != NULL && (e->metadata = cJSON_Duplicate(w->store[i].metadata, 1)) == NULL))
      goto nomem;
    s->priv->expires_owned[i] = w->store_expires_at_ms[i];
    if (w->store_expires_at_ms[i] != 0) {
      e->has_ttl = 1;
      e->ttl_ms = w->store_expires_at_ms[i] > upd->now_ms ? w->store_expires_at_ms[i] - upd->now_ms : 0;
    }
  }
  s->entries = s->priv->entries_owned;
  s->entry_expires_at_ms = s->priv->expires_owned;
  return s;
nomem:
  if (s != NULL) engram__request_unref(s);
  return NULL;
}

static engram_request_t *deletes(engram_request_t *upd) {
  const engram_update_writes_t *w = upd->writes;
  engram_request_t *d = engram__subrequest(upd, ENGRAM_OP_DELETE_MANY, NULL, upd->ns, part_done);
  size_t i;
  if (d == NULL || (d->priv->keys_owned = engram_calloc(w->n_delete, sizeof(char *))) == NULL) goto nomem;
  d->n = w->n_delete;
  for (i = 0; i < w->n_delete; i++)
    if ((d->priv->keys_owned[i] = engram_strdup(w->delete_keys[i])) == NULL) goto nomem;
  d->keys = (const char *const *)d->priv->keys_owned;
  return d;
nomem:
  if (d != NULL) engram__request_unref(d);
  return NULL;
}

int engram__follow_writes(engram_source_t *src, engram_request_t *req) {
  engram_request_private_t *pv = req->priv;
  const engram_update_writes_t *w = req->writes;
  engram_request_t *s = NULL, *d = NULL;
  if (w == NULL || engram_request_answered(req)) return 0;
  if ((w->n_store > 0 && (s = stores(req)) == NULL) || (w->n_delete > 0 && (d = deletes(req)) == NULL)) {
    if (s != NULL) engram__request_unref(s);
    pv->writes_status = ENGRAM_ENOMEM;
    engram__request_set_message(req, "update of key '%s': out of memory making its writes", req->key);
    announce_partial(src, req);
    engram_request_complete(req, ENGRAM_ENOMEM);
    return 1;
  }
  pv->writes_pending = (unsigned char)((s != NULL) + (d != NULL));
  if (pv->writes_pending == 0) return 0;
  if (s != NULL) engram__actor_dispatch(src, s);
  if (d != NULL) engram__actor_dispatch(src, d);
  return 1;
}
