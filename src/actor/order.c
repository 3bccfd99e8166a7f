/*
 * order.c — search and list_keys in the order a call asks for (opts.order_by: key, created_at or updated_at,
 * ascending or, with ENGRAM_OPT_DESCENDING, descending — BeamMePrompty's search(..., order_by)), on every source
 * and with nothing asked of a backend. The table sends every search and list_keys here (table.c); a call in the
 * backend's own order (search by score, listing by key ascending) goes straight to the backend's method.
 *
 * An ordered call becomes one search sub-request to the backend for every match: offset 0, at most
 * ENGRAM_ORDER_MAX + 1 items, the call's namespace, text, pattern, filter, min_score and system-field ranges (a
 * listing's pattern and ranges only). The items that come back are sorted by (field, namespace, key) — the whole
 * tuple reversed when descending, so the order is total and pages never overlap — and the page the caller asked
 * for is answered: offset and limit for a search (the items keep their scores); for list_keys the limit keys
 * after the cursor (key and namespace, as a listing answers), with a cursor naming the last one's place in that
 * order. More than ENGRAM_ORDER_MAX matches fail the call with ENGRAM_ETOOBIG, never a page in a wrong order.
 *
 * An ordered listing's cursor is "~" + the field (k, c, u) + the direction (a, d) + the last item's field value
 * in decimal (0 for key order) + "|" + the core's keyset cursor of its namespace and key: a cursor of another
 * order, or a plain one, is refused with ENGRAM_EINVAL, and plain listings refuse these. Each page runs the search
 * again: by key and by created_at, an item that exists for the whole listing is listed exactly once; by
 * updated_at, an item written during the listing moves in the order and may be listed again or not at all.
 *
 * A source that declares ENGRAM_SOURCE_ORDER_LIMIT is sent, for a call without text or vector, the order itself
 * (req->order, ENGRAM_REQ_ORDER_LIMIT) and how many items the page needs (offset + limit for a search, limit + 1
 * after the cursor's position for a listing): it counts every match and answers only that many best ones (the
 * cache: a bounded heap while it scans), so the page costs the backend O(matches) comparisons and the page's reply
 * items, and the core sorts those few. The cut, the cursor and ENGRAM_ETOOBIG (from the count the source reports)
 * are the same on both paths.
 *
 * The sub-request rides on the parent's slot in the in-flight window and calls the backend's method directly, as
 * the emulation of optional methods does (emulate.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actor/order.h"

/* A sorted position: the item, its sort value, and its namespace's and key's lengths (measured once: a strlen of
 * each per comparison was 9 % of a thread-list page on the cache, perf, docs/conversations.md). */
typedef struct {
  engram_item_t *it;
  int64_t v;
  size_t ns_len, key_len;
} pos_t;

typedef engram_req_order_t order_t; /* by, desc; the position is read only by a source */

static int64_t value_of(const engram_item_t *it, int by) {
  return by == ENGRAM_ORDER_CREATED_AT ? it->created_at_ms : by == ENGRAM_ORDER_UPDATED_AT ? it->updated_at_ms : 0;
}

/* (v, ns, key) against (v2, ns2, key2) in the order (< 0: a first): the one comparison of ordered calls. Static
 * here, so that the sort inlines it (through the exported name below, which a shared library may interpose, each
 * comparison was a call: 11 % more instructions in a max_items_per_namespace eviction pass, callgrind). */
static int tuple_cmp(const order_t *o, int64_t v, const char *ns, size_t ns_len, const char *key, size_t key_len,
                     int64_t v2, const char *ns2, size_t ns2_len, const char *key2, size_t key2_len) {
  int c = v < v2 ? -1 : v > v2 ? 1 : 0;
  if (c == 0) c = engram_key_cmp(ns, ns_len, key, key_len, ns2, ns2_len, key2, key2_len);
  return o->desc ? -c : c;
}

/* The same, public for a source that answers an ordered search's page itself (ENGRAM_REQ_ORDER_LIMIT). */
int engram_order_cmp(const engram_req_order_t *o, int64_t v, const char *ns, size_t ns_len, const char *key,
                     size_t key_len, int64_t v2, const char *ns2, size_t ns2_len, const char *key2, size_t key2_len) {
  return tuple_cmp(o, v, ns, ns_len, key, key_len, v2, ns2, ns2_len, key2, key2_len);
}

static _Thread_local const order_t *sort_order; /* qsort has no context argument */

static int pos_cmp(const void *a, const void *b) {
  const pos_t *x = a, *y = b;
  return tuple_cmp(sort_order, x->v, x->it->ns, x->ns_len, x->it->key, x->key_len, y->v, y->it->ns, y->ns_len,
                   y->it->key, y->key_len);
}

/* ---- Cursors of ordered listings ---- */

static const char by_char[] = "-kcu"; /* indexed by ENGRAM_ORDER_* */

static char *cursor_encode(const order_t *o, const engram_item_t *it) {
  char head[40];
  char *inner = engram_cursor_encode(it->ns, strlen(it->ns), it->key, strlen(it->key)), *out;
  size_t hn, in;
  if (inner == NULL) return NULL;
  hn = (size_t)snprintf(head, sizeof head, "~%c%c%lld|", by_char[o->by], o->desc ? 'd' : 'a',
                        (long long)value_of(it, o->by));
  in = strlen(inner);
  if ((out = engram_malloc(hn + in + 1)) != NULL) {
    memcpy(out, head, hn);
    memcpy(out + hn, inner, in + 1);
  }
  engram_free(inner);
  return out;
}

/* Reads an ordered listing's cursor made for order o: 0, or ENGRAM_EINVAL. */
static int cursor_parse(const order_t *o, const char *c, int64_t *v, const char **ns, size_t *ns_len,
                        const char **key, size_t *key_len) {
  const char *p;
  int64_t x = 0;
  if (c[0] != '~' || c[1] != by_char[o->by] || c[2] != (o->desc ? 'd' : 'a')) return ENGRAM_EINVAL;
  p = c + 3;
  if (*p < '0' || *p > '9' || (*p == '0' && p[1] != '|')) return ENGRAM_EINVAL;
  for (; *p >= '0' && *p <= '9'; p++) {
    if (x > (INT64_MAX - (*p - '0')) / 10) return ENGRAM_EINVAL;
    x = x * 10 + (*p - '0');
  }
  if (*p != '|') return ENGRAM_EINVAL;
  *v = x;
  return engram_cursor_parse(p + 1, ns, ns_len, key, key_len);
}

/* ---- The ordered call ---- */

static void finish(engram_request_t *parent, int status, const char *message) {
  if (message != NULL && message[0] != '\0' && !parent->priv->answered)
    memcpy(parent->priv->message, message, sizeof parent->priv->message);
  engram_request_complete(parent, status);
}

/* Adds item it of the sub-request's reply to the parent's: all of it (search, value and metadata moved) or key
 * and namespace (list_keys). */
static int take(engram_request_t *parent, engram_item_t *it) {
  engram_item_t copy;
  int rc;
  if (parent->op == ENGRAM_OP_LIST_KEYS) {
    memset(&copy, 0, sizeof copy);
    copy.key = it->key;
    copy.ns = it->ns;
    copy.score = 1.0;
    return engram_reply_add(parent, &copy, 0);
  }
  copy = *it;
  rc = engram_reply_add(parent, &copy, ENGRAM_REPLY_OWN_VALUE | ENGRAM_REPLY_OWN_METADATA);
  it->value = NULL; /* handed over (freed on failure) */
  it->metadata = NULL;
  return rc;
}

static void ordered_done(engram_request_t *sub) {
  engram_request_t *parent = sub->priv->parent;
  order_t o;
  pos_t *v = NULL;
  size_t n = sub->priv->n_items, i, start = 0, end, taken = 0;
  /* every match: the source's count when it answered only the page's best (ENGRAM_REQ_ORDER_LIMIT) */
  uint64_t matches = (sub->flags & ENGRAM_REQ_ORDER_LIMIT) && sub->priv->count > n ? sub->priv->count : n;
  int status = sub->priv->status, rc = 0;
  char msg[ENGRAM__MSG_MAX];
  memset(&o, 0, sizeof o);
  o.by = parent->priv->order_by;
  o.desc = (parent->flags & ENGRAM_OPT_DESCENDING) != 0;
  if (status != 0 || engram_request_answered(parent)) {
    memcpy(msg, sub->priv->message, sizeof msg);
    engram__request_unref(sub);
    finish(parent, status != 0 ? status : ENGRAM_ECANCELED, msg);
    return;
  }
  if (matches > ENGRAM_ORDER_MAX) {
    engram__request_unref(sub);
    engram__request_set_message(parent, "%s in order: more than %d items match; narrow it with a pattern, a filter "
                                "or system-field ranges", parent->op == ENGRAM_OP_SEARCH ? "search" : "list_keys",
                                ENGRAM_ORDER_MAX);
    finish(parent, ENGRAM_ETOOBIG, NULL);
    return;
  }
  if (n > 0 && (v = engram_malloc(n * sizeof *v)) == NULL) {
    engram__request_unref(sub);
    finish(parent, ENGRAM_ENOMEM, NULL);
    return;
  }
  for (i = 0; i < n; i++) {
    v[i].it = &sub->priv->items[i];
    v[i].v = value_of(v[i].it, o.by);
    v[i].ns_len = strlen(v[i].it->ns);
    v[i].key_len = strlen(v[i].it->key);
  }
  sort_order = &o;
  if (n > 1) qsort(v, n, sizeof *v, pos_cmp);
  if (parent->op == ENGRAM_OP_SEARCH) {
    start = (size_t)parent->query.offset;
    end = start + (size_t)parent->query.limit;
    for (i = start; rc == 0 && i < n && i < end; i++, taken++) rc = take(parent, v[i].it);
  } else {
    size_t limit = (size_t)parent->query.limit;
    if (parent->cursor != NULL) { /* (checked before the search; a source with ENGRAM_REQ_ORDER_LIMIT left these out) */
      cursor_parse(&o, parent->cursor, &o.after_ms, &o.after_ns, &o.after_ns_len, &o.after_key, &o.after_key_len);
      while (start < n && tuple_cmp(&o, v[start].v, v[start].it->ns, v[start].ns_len, v[start].it->key,
                                           v[start].key_len, o.after_ms, o.after_ns, o.after_ns_len, o.after_key,
                                           o.after_key_len) <= 0)
        start++;
    }
    for (i = start; rc == 0 && i < n && taken < limit; i++, taken++) rc = take(parent, v[i].it);
    if (rc == 0 && i < n && taken > 0) {
      char *c = cursor_encode(&o, v[i - 1].it);
      rc = c == NULL ? ENGRAM_ENOMEM : engram_reply_set_cursor(parent, c);
      engram_free(c);
    }
  }
  engram_free(v);
  engram__request_unref(sub);
  if (rc == 0) engram_reply_set_count(parent, taken);
  finish(parent, rc, NULL);
}

/* Gives sub, the search for ordered call req in order o (with the cursor's position), the order and the number of
 * items the page needs, for a source that answers only those (ENGRAM_REQ_ORDER_LIMIT): offset + limit of a
 * search; of a listing, limit + 1 after the position (the one more tells the core that a next page exists). */
static void order_limit(const engram_request_t *req, const order_t *o, engram_request_t *sub) {
  int64_t k = req->op == ENGRAM_OP_SEARCH ? (int64_t)req->query.offset + req->query.limit : (int64_t)req->query.limit + 1;
  sub->flags |= ENGRAM_REQ_ORDER_LIMIT;
  sub->order = *o;
  /* more is never needed: ENGRAM_ORDER_MAX + 1 items tell the core that too many match */
  sub->query.limit = (int)(k < 1 ? 1 : k > ENGRAM_ORDER_MAX + 1 ? ENGRAM_ORDER_MAX + 1 : k);
}

static void ordered_start(engram_source_t *src, engram_request_t *req) {
  engram_request_t *sub;
  order_t o; /* the order and, for a listing's later page, the cursor's position (pointers into req->cursor) */
  memset(&o, 0, sizeof o);
  o.by = req->priv->order_by;
  o.desc = (req->flags & ENGRAM_OPT_DESCENDING) != 0;
  if (req->op == ENGRAM_OP_LIST_KEYS && req->cursor != NULL) {
    if (cursor_parse(&o, req->cursor, &o.after_ms, &o.after_ns, &o.after_ns_len, &o.after_key, &o.after_key_len) != 0) {
      engram_request_fail(req, ENGRAM_EINVAL, "cursor \"%.40s\" was not made by a listing in this order", req->cursor);
      return;
    }
    o.has_after = 1;
  }
  if ((sub = engram__subrequest(req, ENGRAM_OP_SEARCH, NULL, req->ns, ordered_done)) == NULL) {
    engram_request_complete(req, ENGRAM_ENOMEM);
    return;
  }
  sub->flags = (req->flags & ~(unsigned)ENGRAM_OPT_DESCENDING) | ENGRAM_REQ_ANY_ORDER; /* sorted here */
  sub->created_at = req->created_at;
  sub->updated_at = req->updated_at;
  sub->expires_at = req->expires_at;
  sub->query = req->query; /* borrowed: the parent owns the strings and outlives the sub-request */
  sub->query.offset = 0;
  sub->query.limit = ENGRAM_ORDER_MAX + 1;
  if (req->op == ENGRAM_OP_LIST_KEYS) {
    sub->query.text = NULL;
    sub->query.filter = NULL;
    sub->query.vector = NULL;
    sub->query.dimension = 0;
    sub->query.min_score = 0;
  }
  if ((src->vt->flags & ENGRAM_SOURCE_ORDER_LIMIT) && sub->query.vector == NULL &&
      (sub->query.text == NULL || sub->query.text[0] == '\0'))
    order_limit(req, &o, sub);
  src->vt->search(src, sub);
}

void engram__order_run(engram_source_t *src, engram_request_t *req) { ordered_start(src, req); }

void engram__order_search(engram_source_t *src, engram_request_t *req) {
  if (req->priv->order_by != 0 && req->priv->parent == NULL) ordered_start(src, req);
  else src->vt->search(src, req);
}

void engram__order_list_keys(engram_source_t *src, engram_request_t *req) {
  if (req->priv->order_by != 0 && req->priv->parent == NULL) ordered_start(src, req);
  else src->vt->list_keys(src, req);
}
