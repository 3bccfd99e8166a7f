/*
 * evict.c — max_items_per_namespace, on every source and with nothing asked of a backend: the generic
 * implementation over the contract. After a store, store_many or update on a source with the option succeeded,
 * and before it is answered, the core runs one pass over the write's namespace:
 *
 *   1. a search sub-request in created_at order, newest first (the core's ordering, order.c: every item of the
 *      namespace, sorted by created_at_ms, then namespace and key — the tie-break every ordered call uses),
 *      with offset = max_items: exactly the items beyond the newest max_items;
 *   2. one delete_many sub-request of their keys (the backend's own or the core's emulation);
 *   3. an ENGRAM_EVENT_EVICTED announcement per deleted item (key, namespace, the version the search saw);
 *   4. the write is completed again, answered with its own reply and status 0.
 *
 * It is not atomic with the write: another process, or a call of this one on another source object over the
 * same store, may see the namespace above the limit between the write and the delete. Within one source object
 * the write's caller never does — its answer comes after the pass. Passes of concurrent writes may overlap;
 * each deletes only items beyond the newest max_items at the moment it looked, and an item only ever gets
 * older relative to later writes, so overlapping passes never delete more than the limit asks (a concurrent
 * user delete of a newer item is the exception: a pass may then remove one item more than needed). A pass that
 * fails (the search or the delete) leaves the namespace over the limit until the next write's pass; the write
 * itself is still answered with success — it is durable. The sub-requests ride on the write's slot in the
 * in-flight window, as the emulation's do (emulate.c); a write answered early (deadline, removal) skips the
 * rest of its pass.
 */
#include <string.h>

#include "actor/evict.h"
#include "actor/order.h"

static void pass_end(engram_request_t *write) {
  engram_request_complete(write, 0); /* retained is set: it is answered this time */
}

static void deleted(engram_request_t *del) {
  engram_request_t *found = del->priv->parent; /* the search: the items' versions, for the announcements */
  engram_request_t *write = found->priv->parent;
  engram_source_t *src = write->priv->actor;
  size_t i;
  if (del->priv->status == 0 && engram_source_events_wanted(src)) {
    for (i = 0; i < found->priv->n_items; i++) {
      const engram_item_t *it = &found->priv->items[i];
      /* A per-item failure (the key went away meanwhile, say) evicted nothing. */
      if (i < del->priv->n_items && del->priv->items[i].status != 0) continue;
      engram_source_announce(src, ENGRAM_EVENT_EVICTED, write->ns, write->ns_len, it->key, strlen(it->key),
                             it->version);
    }
  }
  engram__request_unref(del);
  engram__request_unref(found);
  pass_end(write);
}

static void listed(engram_request_t *found) {
  engram_request_t *write = found->priv->parent;
  engram_source_t *src = write->priv->actor;
  engram_request_t *del;
  size_t i, n = found->priv->n_items;
  if (found->priv->status != 0 || n == 0 || engram_request_answered(write)) {
    engram__request_unref(found);
    pass_end(write);
    return;
  }
  /* A sub-request of the search (not of the write), so that its completion finds the search's items: op_state
   * is the emulation's, and the backend's backend_data is the backend's. */
  if ((del = engram__subrequest(found, ENGRAM_OP_DELETE_MANY, NULL, write->ns, deleted)) == NULL) goto nomem;
  if ((del->priv->keys_owned = engram_calloc(n, sizeof(char *))) == NULL) goto nomem;
  del->n = n;
  for (i = 0; i < n; i++)
    if ((del->priv->keys_owned[i] = engram_strdup(found->priv->items[i].key)) == NULL) goto nomem;
  del->keys = (const char *const *)del->priv->keys_owned;
  engram__actor_dispatch(src, del);
  return;
nomem:
  if (del != NULL) engram__request_unref(del);
  engram__request_unref(found);
  pass_end(write);
}

int engram__evict_after_write(engram_source_t *src, engram_request_t *req) {
  engram_request_t *s;
  uint64_t max = src->retention.max_items;
  if (max == 0 || engram_request_answered(req)) return 0;
  if ((s = engram__subrequest(req, ENGRAM_OP_SEARCH, NULL, req->ns, listed)) == NULL) return 0;
  memset(&s->query, 0, sizeof s->query);
  s->query.offset = (int)max;
  s->query.limit = ENGRAM_ORDER_MAX;
  s->flags = ENGRAM_OPT_DESCENDING;
  s->priv->order_by = ENGRAM_ORDER_CREATED_AT;
  engram__order_run(src, s);
  return 1;
}
