/*
 * request.c — the life of a request, and the reply-building functions backends call.
 *
 * A request is one allocation holding the public engram_request_t, the core's private half and the key and
 * namespace copied inline. It carries two references while an actor holds it: the answer's (dropped after the
 * caller's callback ran) and the actor's (dropped when the backend completes it, or when it is answered
 * before ever reaching the backend). An answer is fixed once (status + message): a deadline or a cancellation
 * can answer a request early while the backend still holds it, and the backend's later completion is then
 * only a release. This file knows nothing of actors, queues or the manager: routing an answer (to a completion
 * queue, the home loop's reply queue, or the callback directly) is the actor's job (actor/route.c), and the
 * completion of a request by a backend is the actor's too (actor/actor.c). A call that borrows its value and
 * metadata from another request (a composite source's, ENGRAM_CALL_BORROW_VALUE) holds a reference on that
 * lender instead of owning them, and drops it when it is freed: only then is the target surely done reading.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "request/reqpool.h"
#include "request/request.h"
#include "shared/json_copy.h"
#include "shared/json_fast.h"
#include "shared/json_text.h"

static void set_message_v(engram_request_t *req, const char *fmt, va_list ap);

typedef struct {
  engram_request_t pub;
  engram_request_private_t priv;
  char inline_buf[];
} request_block_t;

uint64_t engram__mono_ms(void) { return uv_hrtime() / 1000000u; }

int64_t engram_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Inline bytes of a standard (pooled) block: the key and namespace, then the reply room (engram_reply_room), where
 * a backend builds a small reply value in place: a 200-byte string takes 64 + 199 bytes. A request whose key and
 * namespace need more than the block is allocated plainly, with no room. */
#define POOLED_INLINE 512u
#define POOLED_BLOCK (sizeof(request_block_t) + POOLED_INLINE)
#define ROOM_ALIGN 16u

/* Non-zero when p lies in req's reply room (a value the block holds: never freed on its own). */
static int in_room(const engram_request_t *req, const void *p) {
  const char *b = ((const request_block_t *)(const void *)req)->inline_buf;
  return (const char *)p >= b && (const char *)p < b + req->priv->room_end;
}

engram_request_t *engram__request_new(engram_op_t op, const char *key, size_t key_len, const char *ns,
                                      size_t ns_len) {
  size_t extra = (key ? key_len + 1 : 0) + (ns ? ns_len + 1 : 1);
  int pooled = extra <= POOLED_INLINE;
  request_block_t *b = pooled ? engram__reqpool_get(ENGRAM__POOL_REQUEST, POOLED_BLOCK) : engram_malloc(sizeof *b + extra);
  char *p;
  if (b == NULL) return NULL;
  /* Zero everything but the message text, which only needs its terminator. */
  memset(b, 0, offsetof(request_block_t, priv) + offsetof(engram_request_private_t, message));
  b->priv.message[0] = '\0';
  b->priv.pooled = (unsigned)pooled;
  b->pub.op = op;
  b->pub.priv = &b->priv;
  b->priv.self = &b->pub;
  p = b->inline_buf;
  if (key != NULL) {
    memcpy(p, key, key_len);
    p[key_len] = '\0';
    b->pub.key = p;
    b->pub.key_len = key_len;
    p += key_len + 1;
  }
  if (ns != NULL) memcpy(p, ns, ns_len);
  else ns_len = 0;
  p[ns_len] = '\0';
  b->pub.ns = p;
  b->pub.ns_len = ns_len;
  if (pooled) { /* extra: the bytes the key and namespace take; the room starts past them, aligned for a node */
    b->priv.room_pos = (uint16_t)((extra + ROOM_ALIGN - 1) & ~(size_t)(ROOM_ALIGN - 1));
    b->priv.room_end = (uint16_t)POOLED_INLINE;
  }
  atomic_init(&b->priv.refs, 1);
  return &b->pub;
}

void *engram_reply_room(engram_request_t *req, size_t bytes) {
  engram_request_private_t *pv = req->priv;
  size_t pos = pv->room_pos;
  void *p;
  /* Not for a part of another call (its items may be moved into the parent's reply, emulate.c / order.c) or an
   * internal request (on_done): their values may outlive the block. */
  if (pv->parent != NULL || pv->on_done != NULL || bytes > (size_t)pv->room_end - pos) return NULL;
  p = ((request_block_t *)(void *)req)->inline_buf + pos;
  pos += (bytes + ROOM_ALIGN - 1) & ~(size_t)(ROOM_ALIGN - 1);
  pv->room_pos = (uint16_t)(pos < pv->room_end ? pos : pv->room_end);
  return p;
}

cJSON *engram__request_copy_in(engram_request_t *req, const cJSON *v) {
  engram_request_private_t *pv = req->priv;
  size_t used;
  cJSON *copy;
  if (pv->room_end == 0) return NULL; /* a block sized to its key and namespace: no room */
  copy = engram__json_copy_block(v, ((request_block_t *)(void *)req)->inline_buf + pv->room_pos,
                                 (size_t)pv->room_end - pv->room_pos, &used);
  if (copy == NULL) return NULL;
  used = pv->room_pos + ((used + ROOM_ALIGN - 1) & ~(size_t)(ROOM_ALIGN - 1));
  pv->room_pos = (uint16_t)(used < pv->room_end ? used : pv->room_end); /* a reply's room starts past it */
  return copy;
}

/* Frees what the reply holds; the room is left as it is (request_free frees it with the block). */
static void reply_free(engram_request_t *req) {
  engram_request_private_t *pv = req->priv;
  size_t i;
  for (i = 0; i < pv->n_items; i++) {
    engram_item_t *it = &pv->items[i];
    if (it->key != req->key) engram_free((char *)it->key); /* else borrowed, see reply_add */
    if (it->value != NULL && !in_room(req, it->value)) cJSON_Delete((cJSON *)it->value);
    if (it->metadata != NULL && !in_room(req, it->metadata)) cJSON_Delete((cJSON *)it->metadata);
  }
  if (pv->items != &pv->item0 && pv->items != NULL) engram_free(pv->items);
  pv->items = NULL;
  pv->n_items = pv->cap_items = 0;
  if (pv->cursor != NULL) engram_free(pv->cursor);
  pv->cursor = NULL;
  if (pv->info != NULL) cJSON_Delete(pv->info);
  pv->info = NULL;
  if (pv->text != NULL) engram_free(pv->text);
  pv->text = NULL;
  pv->count = 0;
}

/* The inputs a request may own beyond its inline key and namespace; freed by request_free. */
static void free_owned_inputs(engram_request_t *req) {
  engram_request_private_t *pv = req->priv;
  size_t i;
  if (pv->keys_owned != NULL) {
    for (i = 0; i < req->n; i++) engram_free(pv->keys_owned[i]);
    engram_free(pv->keys_owned);
  }
  if (pv->entries_owned != NULL) {
    for (i = 0; i < req->n; i++) {
      engram_free((char *)pv->entries_owned[i].key);
      cJSON_Delete((cJSON *)pv->entries_owned[i].value);
      cJSON_Delete((cJSON *)pv->entries_owned[i].metadata);
    }
    engram_free(pv->entries_owned);
  }
  engram_free(pv->expires_owned);
  engram_free(pv->query_text);
  engram_free(pv->query_pattern);
  cJSON_Delete(pv->query_filter);
  engram_free(pv->query_vector);
  engram_free(pv->cursor_in);
  engram_free(pv->name_arg);
  engram_free(pv->desc_arg);
}

static void request_free(engram_request_t *req) {
  engram_request_private_t *pv = req->priv;
  /* A point call (retrieve, store, delete) owns one reply item at most and a value: the rest is looked at only
   * when something is there (each engram_free / cJSON_Delete of NULL was a call through the allocator's hooks,
   * a tenth of a cache retrieve's instructions). */
  engram_request_t *lender = pv->lender;
  if (pv->items != NULL || pv->cursor != NULL || pv->info != NULL || pv->text != NULL || pv->count != 0)
    reply_free(req);
  if (lender == NULL) { /* else value and metadata are the lender's (borrowed) */
    if (req->value != NULL && !in_room(req, req->value)) cJSON_Delete(req->value);
    if (req->metadata != NULL && !in_room(req, req->metadata)) cJSON_Delete(req->metadata);
  }
  if (pv->keys_owned != NULL || pv->entries_owned != NULL || pv->expires_owned != NULL || pv->query_text != NULL ||
      pv->query_pattern != NULL || pv->query_filter != NULL || pv->query_vector != NULL || pv->cursor_in != NULL ||
      pv->name_arg != NULL || pv->desc_arg != NULL)
    free_owned_inputs(req);
  if (pv->update_ud_release != NULL) pv->update_ud_release(req->update_ud);
  if (pv->pooled) engram__reqpool_put(ENGRAM__POOL_REQUEST, req);
  else engram_free(req);
  /* The target is done with the borrowed value: the lender may go (on this thread, when this was its last
   * reference — its blocks are freed with the allocator, the request block into this thread's pool). */
  if (lender != NULL) engram__request_unref(lender);
}

void engram__request_borrow(engram_request_t *req, engram_request_t *lender) {
  atomic_fetch_add_explicit(&lender->priv->refs, 1, memory_order_relaxed); /* the caller holds one already */
  req->priv->lender = lender;
}

void engram__request_unref(engram_request_t *req) {
  if (atomic_fetch_sub_explicit(&req->priv->refs, 1, memory_order_acq_rel) == 1) request_free(req);
}

void engram__request_set_message_v(engram_request_t *req, const char *fmt, va_list ap) {
  if (req->priv->answered) return;
  set_message_v(req, fmt, ap);
}

static void set_message_v(engram_request_t *req, const char *fmt, va_list ap) {
  engram_request_private_t *pv = req->priv;
  int n = 0;
  if (pv->source[0] != '\0') n = snprintf(pv->message, sizeof pv->message, "source '%s': ", pv->source);
  if (n < 0 || (size_t)n >= sizeof pv->message) n = 0;
  vsnprintf(pv->message + n, sizeof pv->message - (size_t)n, fmt, ap);
}

int engram__request_answer(engram_request_t *req, int status, const char *fmt, ...) {
  engram_request_private_t *pv = req->priv;
  va_list ap;
  if (pv->answered) return -1;
  pv->answered = 1;
  pv->status = status;
  if (fmt != NULL) {
    va_start(ap, fmt);
    set_message_v(req, fmt, ap);
    va_end(ap);
  } else if (status < 0 && pv->message[0] == '\0') {
    if (pv->source[0] != '\0')
      snprintf(pv->message, sizeof pv->message, "source '%s': %s", pv->source, engram_strerror(status));
    else
      snprintf(pv->message, sizeof pv->message, "%s", engram_strerror(status));
  }
  return 0;
}

void engram__request_set_message(engram_request_t *req, const char *fmt, ...) {
  va_list ap;
  if (req->priv->answered) return;
  va_start(ap, fmt);
  set_message_v(req, fmt, ap);
  va_end(ap);
}

_Thread_local engram_manager_t *engram__home_callback;

void engram__request_deliver(engram_request_t *req) {
  engram_request_private_t *pv = req->priv;
  engram_manager_t *outer;
  engram_reply_t r;
  if (pv->on_done != NULL) {
    pv->on_done(req);
    return;
  }
  memset(&r, 0, sizeof r);
  r.op = req->op;
  r.message = pv->message;
  r.source = pv->source[0] ? pv->source : NULL;
  if (!pv->early) {
    r.items = pv->items;
    r.n_items = pv->n_items;
    r.count = pv->count;
    r.cursor = pv->cursor;
    r.info = pv->info;
    r.text = pv->text;
  }
  /* Without a completion queue this is the home loop of the request's manager (request.h, engram__home_callback);
   * through one it is the queue's loop, perhaps another thread. */
  outer = engram__home_callback;
  engram__home_callback = pv->cq == NULL ? pv->mgr : NULL;
  pv->cb(pv->status, &r, pv->ud);
  engram__home_callback = outer;
  engram__request_unref(req);
}

/* ---- Backend-facing functions ---- */

/* A borrowed tree (the request has a lender, ENGRAM_CALL_BORROW_VALUE) stays the lender's, and a tree in the
 * request's room (engram__request_copy_in) goes with the block: the taker gets a copy of its own (NULL out of
 * memory), as a call without the flag, or with a larger value, would have made for the request. */
static cJSON *take_input(engram_request_t *req, cJSON **field) {
  cJSON *v = *field;
  *field = NULL;
  if (v != NULL && (req->priv->lender != NULL || in_room(req, v))) v = cJSON_Duplicate(v, 1);
  return v;
}

cJSON *engram_request_take_value(engram_request_t *req) { return take_input(req, &req->value); }

cJSON *engram_request_take_metadata(engram_request_t *req) { return take_input(req, &req->metadata); }

/* A taken tree is the taker's to change. A root flagged cJSON_IsReference is not: a backend's reply tree built in
 * one allocation (the cache's, sources/cache/cache_image.c: cJSON_Delete of the root frees every node with it,
 * so a node unlinked from it could not be freed on its own) or in the request's reply room, or a reference to a
 * tree someone else owns. The taker gets a copy of its own then (NULL out of memory), and the reply keeps (and
 * frees) the original. */
static cJSON *take_tree(const cJSON **field) {
  cJSON *v = (cJSON *)*field;
  /* Out of memory, NULL: the original may live in the request's reply room (engram_reply_room), gone with it. */
  if (v != NULL && (v->type & cJSON_IsReference)) return cJSON_Duplicate(v, 1);
  *field = NULL;
  return v;
}

/* The items of a reply delivered by engram__request_deliver are the request's own (pv->items), which the request
 * frees after the callback: taking a field there is taking it from the request. */
cJSON *engram_reply_take_value(const engram_reply_t *reply, size_t i) {
  if (reply == NULL || i >= reply->n_items || reply->items == NULL) return NULL;
  return take_tree(&((engram_item_t *)&reply->items[i])->value);
}

cJSON *engram__reply_take_read(const engram_reply_t *reply, size_t i) {
  engram_item_t *it;
  cJSON *v;
  if (reply == NULL || i >= reply->n_items || reply->items == NULL) return NULL;
  it = (engram_item_t *)&reply->items[i];
  v = (cJSON *)it->value;
  /* A block that owns itself (json_fast.h): its first child, or its string, is the next thing in the block. Both
   * flags alone do not say so: cJSON's references to such a root copy its flags (create_reference) and point into
   * the original's block. */
  if (v != NULL && (v->type & (cJSON_IsReference | ENGRAM__CJSON_BLOCK)) == (cJSON_IsReference | ENGRAM__CJSON_BLOCK) &&
      (v->child != NULL ? v->child == v + 1 : v->valuestring == NULL || v->valuestring == (char *)(v + 1))) {
    it->value = NULL; /* whole, no copy */
    return v;
  }
  return take_tree(&it->value);
}

cJSON *engram_reply_take_metadata(const engram_reply_t *reply, size_t i) {
  if (reply == NULL || i >= reply->n_items || reply->items == NULL) return NULL;
  return take_tree(&((engram_item_t *)&reply->items[i])->metadata);
}

int engram_request_answered(const engram_request_t *req) {
  const engram_request_private_t *pv = req->priv;
  while (pv->parent != NULL) pv = pv->parent->priv;
  return pv->answered;
}

uint64_t engram_request_deadline(const engram_request_t *req) {
  const engram_request_private_t *pv = req->priv;
  while (pv->parent != NULL) pv = pv->parent->priv;
  return pv->deadline;
}

int engram_request_run_update(engram_request_t *req, const cJSON *current, cJSON **next) {
  int rc;
  *next = NULL;
  rc = req->update_fn(current, next, req->update_ud);
  if (rc < 0) {
    cJSON_Delete(*next);
    *next = NULL;
    engram__request_set_message(req, "update of key '%s': the update function returned %s", req->key,
                                engram_err_name(rc));
    return rc;
  }
  if (*next == NULL) {
    engram__request_set_message(req, "update of key '%s': the update function produced no value", req->key);
    return ENGRAM_EINVAL;
  }
  /* The value it made meets the rules a stored value meets at the call (json_text.h): a string that is not
   * UTF-8 would otherwise reach the backend, and every reader after it. Nothing is written. An update that carries
   * writes comes from inside the library (engram__update_with_writes: a conversation's head, built from parts the
   * thread layer checked at its call, as the writes beside it are), so its value is not walked again: the check
   * was 1.3 k instructions of a 1-message append on the cache (callgrind, docs/benchmarks.md). */
  if (req->priv->writes_src == NULL) {
    engram__json_issue_t is;
    char msg[400];
    rc = engram__json_tree_check(*next, "value", &is);
    if (rc != 0) {
      cJSON_Delete(*next);
      *next = NULL;
      if (rc == ENGRAM_ENOMEM) return rc;
      engram__request_set_message(req, "update of key '%s': the update function's %s", req->key,
                                  engram__json_issue_message(&is, "value", msg, sizeof msg));
      return rc;
    }
  }
  /* The writes the function made with this value (only internal callers give an update writes). */
  req->writes = NULL;
  if (req->priv->writes_src != NULL) {
    engram_update_writes_t *w = req->priv->writes_src;
    size_t i;
    if (req->priv->writes_default_expires != 0)
      for (i = 0; i < w->n_store; i++)
        if (w->store_expires_at_ms[i] == 0) ((int64_t *)w->store_expires_at_ms)[i] = req->priv->writes_default_expires;
    for (i = 0; i < w->n_store; i++) w->store_version[i] = 0;
    w->deleted = 0;
    if (w->n_store + w->n_delete > 0) req->writes = w;
  }
  return 0;
}

int engram_reply_add(engram_request_t *req, const engram_item_t *item, unsigned own) {
  engram_request_private_t *pv = req->priv;
  engram_item_t *it;
  size_t klen, nlen;
  char *buf = NULL;
  const char *key, *ns;
  cJSON *value = (cJSON *)item->value, *meta = (cJSON *)item->metadata;
  /* The usual reply (a retrieve's): the first item, the request's own key and namespace by pointer, value and
   * metadata handed over. */
  if (pv->cap_items == 0 && item->key == req->key && item->key != NULL && item->ns == req->ns &&
      (own & (ENGRAM_REPLY_OWN_VALUE | ENGRAM_REPLY_OWN_METADATA)) == (ENGRAM_REPLY_OWN_VALUE | ENGRAM_REPLY_OWN_METADATA)) {
    pv->item0 = *item;
    pv->item0.source = pv->source;
    pv->items = &pv->item0;
    pv->n_items = pv->cap_items = 1;
    return 0;
  }
  if (value != NULL && !(own & ENGRAM_REPLY_OWN_VALUE)) value = cJSON_Duplicate(value, 1);
  if (meta != NULL && !(own & ENGRAM_REPLY_OWN_METADATA)) meta = cJSON_Duplicate(meta, 1);
  if ((item->value != NULL && value == NULL) || (item->metadata != NULL && meta == NULL)) goto fail;
  /* Two string comparisons (the usual case: the item is the one the request named) before any strlen; none when
   * the backend passes the request's own key and namespace pointers (the cache's retrieve). */
  if (req->key != NULL && item->key != NULL && (item->key == req->key || strcmp(item->key, req->key) == 0) &&
      (item->ns == req->ns || strcmp(item->ns ? item->ns : "", req->ns) == 0)) {
    key = req->key; /* the request's own key and namespace: borrowed (reply_free knows by the pointer) */
    ns = req->ns;
  } else {
    klen = item->key ? strlen(item->key) : 0;
    nlen = item->ns ? strlen(item->ns) : 0;
    if ((buf = engram_malloc(klen + nlen + 2)) == NULL) goto fail;
    memcpy(buf, item->key ? item->key : "", klen + 1);
    memcpy(buf + klen + 1, item->ns ? item->ns : "", nlen + 1);
    key = buf;
    ns = buf + klen + 1;
  }
  if (pv->n_items == pv->cap_items) {
    if (pv->cap_items == 0) {
      pv->items = &pv->item0;
      pv->cap_items = 1;
    } else {
      size_t cap = pv->cap_items < 4 ? 4 : pv->cap_items * 2;
      engram_item_t *items = engram_malloc(cap * sizeof *items);
      if (items == NULL) goto fail;
      memcpy(items, pv->items, pv->n_items * sizeof *items);
      if (pv->items != &pv->item0) engram_free(pv->items);
      pv->items = items;
      pv->cap_items = cap;
    }
  }
  it = &pv->items[pv->n_items++];
  *it = *item;
  it->key = key;
  it->ns = ns;
  it->value = value;
  it->metadata = meta;
  it->source = pv->source;
  return 0;
fail:
  engram_free(buf);
  if (!in_room(req, value)) cJSON_Delete(value);
  if (!in_room(req, meta)) cJSON_Delete(meta);
  return ENGRAM_ENOMEM;
}

void engram_reply_set_count(engram_request_t *req, uint64_t count) { req->priv->count = count; }

int engram_reply_set_cursor(engram_request_t *req, const char *cursor) {
  engram_request_private_t *pv = req->priv;
  char *c = NULL;
  if (cursor != NULL && (c = engram_strdup(cursor)) == NULL) return ENGRAM_ENOMEM;
  engram_free(pv->cursor);
  pv->cursor = c;
  return 0;
}

int engram_reply_set_key_cursor(engram_request_t *req, const char *ns, size_t ns_len, const char *key, size_t key_len) {
  engram_request_private_t *pv = req->priv;
  char *cur = engram_cursor_encode(ns, ns_len, key, key_len);
  if (cur == NULL) return ENGRAM_ENOMEM;
  engram_free(pv->cursor);
  pv->cursor = cur;
  return 0;
}

void engram_reply_set_info(engram_request_t *req, cJSON *info) {
  cJSON_Delete(req->priv->info);
  req->priv->info = info;
}

void engram_reply_set_item_status(engram_request_t *req, size_t i, int status) {
  if (i < req->priv->n_items) req->priv->items[i].status = status;
}

