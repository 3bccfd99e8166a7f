/*
 * call.c — the source-call service (include/engram/source.h, ENGRAM_SOURCE_CALL_VERSION 1): a source on the home
 * loop sends a call to another source of its own manager, as a tiered source does with its tiers. The call
 * becomes an ordinary request — copied here, pushed into the target's mailbox, routed through its window,
 * deadlines and method table — whose answer comes back to the caller's engram_cb on the home loop. A target on
 * the same loop that could start the call at once starts it at once (engram__actor_start_now), saving the
 * mailbox hop and a loop turn: a tiered source's hot-key retrieve ran about half again as fast. It lives in
 * the manager layer because it finds the target in the manager's source table; a backend reaches it only
 * through source.h, so the layers still call down (backend → public contract → manager → actor). A search's
 * query travels whole (mode, fusion and alpha with it), and a vector or hybrid search to a target without
 * ENGRAM_SOURCE_SEARCH_MODES is refused here as engram_search refuses it, so a composite source may declare
 * the flag and leave the truth of it to the target it names at each call. A store's value is copied into the
 * request, or handed over (ENGRAM_CALL_TAKE_VALUE: a tiered source's write-through gives the cache tier the copy
 * it holds instead of having a second one made), or borrowed with its metadata from the caller's own request
 * (ENGRAM_CALL_BORROW_VALUE, version 4: a tiered source's durable call), which the call's request then holds a
 * reference on until it is freed — a deadline may answer the call while the target still reads the value, and
 * the caller's request may end first (request.c).
 */
#include <string.h>

#include "actor/actor.h"
#include "manager/find_here.h"
#include "manager/manager.h"
#include "manager/query_mode.h"
#include "shared/error.h"

static int copy_query(engram_request_t *req, const engram_query_t *q) {
  req->query = *q;
  req->query.text = req->query.pattern = NULL;
  req->query.filter = NULL;
  req->query.vector = NULL;
  if (q->text && (req->query.text = req->priv->query_text = engram_strdup(q->text)) == NULL) return ENGRAM_ENOMEM;
  if (q->pattern && (req->query.pattern = req->priv->query_pattern = engram_strdup(q->pattern)) == NULL)
    return ENGRAM_ENOMEM;
  if (q->filter && (req->query.filter = req->priv->query_filter = cJSON_Duplicate(q->filter, 1)) == NULL)
    return ENGRAM_ENOMEM;
  if (q->vector && q->dimension > 0) {
    if ((req->priv->query_vector = engram_malloc(q->dimension * sizeof(float))) == NULL) return ENGRAM_ENOMEM;
    memcpy(req->priv->query_vector, q->vector, q->dimension * sizeof(float));
    req->query.vector = req->priv->query_vector;
  }
  return 0;
}

static int op_allowed(engram_op_t op) {
  switch (op) {
    case ENGRAM_OP_STORE: case ENGRAM_OP_RETRIEVE: case ENGRAM_OP_EXISTS: case ENGRAM_OP_DELETE:
    case ENGRAM_OP_SEARCH: case ENGRAM_OP_COUNT: case ENGRAM_OP_LIST_KEYS: case ENGRAM_OP_CLEAR:
    case ENGRAM_OP_INFO:
      return 1;
    default:
      return 0;
  }
}

static int call(engram_source_t *src, const char *target, const engram_source_call_t *c, engram_cb cb, void *ud,
                cJSON **taken);

/* With ENGRAM_CALL_TAKE_VALUE the value is the call's whatever happens: freed here when the request did not take
 * it (a refusal before the request existed). */
int engram_source_call(engram_source_t *src, const char *target, const engram_source_call_t *c, engram_cb cb,
                       void *ud) {
  cJSON *taken = c != NULL && (c->flags & ENGRAM_CALL_TAKE_VALUE) ? (cJSON *)c->value : NULL;
  int rc = call(src, target, c, cb, ud, &taken);
  cJSON_Delete(taken);
  return rc;
}

static int call(engram_source_t *src, const char *target, const engram_source_call_t *c, engram_cb cb, void *ud,
                cJSON **taken) {
  engram_manager_t *mgr;
  engram_source_t *dst;
  engram_request_t *req;
  const engram_request_t *lent;
  size_t key_len = 0, ns_len = 0;
  int keyed, rc;
  engram__error_clear();
  if (src == NULL || target == NULL || c == NULL || cb == NULL)
    return engram__error(ENGRAM_EINVAL, "engram_source_call: NULL argument");
  if (src->own_thread)
    return engram__error(ENGRAM_EINVAL, "source '%s': runs on a thread of its own; only home-loop sources may call others",
                         src->name);
  if (!op_allowed(c->op)) return engram__error(ENGRAM_EINVAL, "engram_source_call: operation %d cannot be sent", (int)c->op);
  if (strcmp(target, src->name) == 0)
    return engram__error(ENGRAM_EINVAL, "source '%s': a source cannot call itself", src->name);
  keyed = c->op == ENGRAM_OP_STORE || c->op == ENGRAM_OP_RETRIEVE || c->op == ENGRAM_OP_EXISTS ||
          c->op == ENGRAM_OP_DELETE;
  /* A borrowing call that names its lender's own key and namespace (a tiered source's durable store) has their
   * lengths in the lender, checked when the lender was submitted: no strlen of either. */
  lent = (c->flags & ENGRAM_CALL_BORROW_VALUE) && c->lender != NULL ? c->lender : NULL;
  if (keyed && lent != NULL && c->key == lent->key && c->key != NULL) {
    key_len = lent->key_len;
  } else if (keyed) {
    if (c->key == NULL || (key_len = strlen(c->key)) == 0 || key_len > ENGRAM_KEY_MAX)
      return engram__error(ENGRAM_EINVAL, "engram_source_call: key must be 1..%d bytes", ENGRAM_KEY_MAX);
  }
  if (c->op == ENGRAM_OP_STORE && c->value == NULL) return engram__error(ENGRAM_EINVAL, "engram_source_call: store without a value");
  if ((c->flags & ENGRAM_CALL_BORROW_VALUE) &&
      (c->op != ENGRAM_OP_STORE || c->lender == NULL || (c->flags & ENGRAM_CALL_TAKE_VALUE)))
    return engram__error(ENGRAM_EINVAL, "engram_source_call: ENGRAM_CALL_BORROW_VALUE needs a store with a lender, "
                         "without ENGRAM_CALL_TAKE_VALUE");
  if (lent != NULL && c->ns != NULL && c->ns == lent->ns) ns_len = lent->ns_len;
  else if (c->ns != NULL && (ns_len = strlen(c->ns)) > ENGRAM_NAMESPACE_MAX)
    return engram__error(ENGRAM_EINVAL, "engram_source_call: namespace longer than %d bytes", ENGRAM_NAMESPACE_MAX);
  if (c->op == ENGRAM_OP_SEARCH && c->query != NULL && engram__query_mode_check(c->query) != 0)
    return ENGRAM_EINVAL; /* engram_last_error names the field */
  mgr = src->mgr;
  if (atomic_load_explicit(&mgr->closed, memory_order_acquire)) return engram__error(ENGRAM_ECLOSED, "manager: closed");
  if ((req = engram__request_new(c->op, keyed ? c->key : NULL, key_len, c->ns, ns_len)) == NULL)
    return engram__error(ENGRAM_ENOMEM, "out of memory");
  req->flags = c->flags & ~(unsigned)(ENGRAM_CALL_TAKE_VALUE | ENGRAM_CALL_BORROW_VALUE);
  req->now_ms = c->now_ms ? c->now_ms : engram_now_ms();
  req->expires_at_ms = c->expires_at_ms;
  req->if_version = c->if_version;
  req->version = c->version;
  req->created_at_ms = c->created_at_ms;
  req->updated_at_ms = c->updated_at_ms;
  req->created_at = c->created_at;
  req->updated_at = c->updated_at;
  req->expires_at = c->expires_at;
  rc = 0;
  if (c->op == ENGRAM_OP_STORE && (c->flags & ENGRAM_CALL_BORROW_VALUE)) {
    /* Borrowed: the lender lives, value and metadata with it, until this request is freed — after its answer
     * and after the target completed it, whichever is later (request.c). */
    req->value = (cJSON *)c->value;
    req->metadata = (cJSON *)c->metadata;
    engram__request_borrow(req, c->lender);
  } else if (c->op == ENGRAM_OP_STORE) {
    if (*taken != NULL) { /* handed over: the request frees it from now on */
      req->value = *taken;
      *taken = NULL;
    } else if ((req->value = cJSON_Duplicate(c->value, 1)) == NULL) {
      rc = ENGRAM_ENOMEM;
    }
    if (rc == 0 && c->metadata != NULL && (req->metadata = cJSON_Duplicate(c->metadata, 1)) == NULL) rc = ENGRAM_ENOMEM;
  }
  if (rc == 0 && c->query != NULL &&
      (c->op == ENGRAM_OP_SEARCH || c->op == ENGRAM_OP_COUNT || c->op == ENGRAM_OP_LIST_KEYS))
    rc = copy_query(req, c->query);
  if (rc == 0 && c->op == ENGRAM_OP_LIST_KEYS && c->cursor != NULL &&
      (req->cursor = req->priv->cursor_in = engram_strdup(c->cursor)) == NULL)
    rc = ENGRAM_ENOMEM;
  if (rc != 0) {
    engram__request_unref(req);
    return engram__error(rc, "out of memory copying a call to source '%s'", target);
  }
  req->priv->cb = cb;
  req->priv->ud = ud;
  req->priv->deadline = c->deadline; /* absolute already: submit only computes one from deadline_ms */
  /* Without the table's lock: this is the home loop, where alone the table is written (find_here.h), so dst
   * stays in it, and alive, until this returns. */
  dst = engram__manager_find_here(mgr, target);
  if (dst == NULL || dst == src) {
    engram__request_unref(req);
    return engram__error(ENGRAM_EUNKNOWN_SOURCE, "unknown memory source '%s'", target);
  }
  if ((c->flags & ENGRAM_OPT_RANGES) && !(dst->vt->flags & ENGRAM_SOURCE_RANGES) &&
      (c->op == ENGRAM_OP_SEARCH || c->op == ENGRAM_OP_COUNT || c->op == ENGRAM_OP_LIST_KEYS)) {
    engram__request_unref(req);
    return engram__error(ENGRAM_ENOTSUP, "source '%s' (%s) cannot filter on created_at, updated_at or expires_at", target,
                         dst->vt->name);
  }
  if (c->op == ENGRAM_OP_SEARCH && c->query != NULL && engram__query_mode_needs_vector(c->query) &&
      !(dst->vt->flags & ENGRAM_SOURCE_SEARCH_MODES)) {
    /* Checked here, at the call, against the source the name stands for now (a tier may have been removed and
     * added again as another type): a composite source that declares the flag stays truthful. */
    engram__request_unref(req);
    return engram__error(ENGRAM_ENOTSUP, "query.mode: source '%s' (%s) ranks by text only (modes vector and hybrid "
                         "need a vector source)", target, dst->vt->name);
  }
  if ((c->flags & ENGRAM_REQ_REPLICA) && !(dst->vt->flags & ENGRAM_SOURCE_REPLICA)) {
    engram__request_unref(req);
    return engram__error(ENGRAM_ENOTSUP, "source '%s' (%s) does not take replicas", target, dst->vt->name);
  }
  if (!dst->own_thread && dst->loop == src->loop) {
    /* Same loop, same thread: start it now when the target could (saves a mailbox hop and a wake-up). */
    if (engram__actor_start_now(dst, req)) return 0;
  }
  rc = engram__actor_submit(dst, req);
  if (rc != 0) {
    engram__request_unref(req);
    return engram__error(rc, "source '%s': mailbox full", target);
  }
  return 0;
}

const engram_source_vtable_t *engram_source_vtable_of(engram_source_t *src, const char *name) {
  engram_manager_t *mgr;
  engram_source_t *dst;
  const engram_source_vtable_t *vt = NULL;
  if (src == NULL || name == NULL) return NULL;
  mgr = src->mgr;
  uv_rwlock_rdlock(&mgr->lock);
  dst = engram__manager_find_locked(mgr, name);
  if (dst != NULL && dst != src) vt = dst->vt;
  uv_rwlock_rdunlock(&mgr->lock);
  return vt;
}
