/*
 * emulate.c — the core's versions of every optional source method, built from the required ones, so that no
 * source ever answers "not supported" for store_many, retrieve_many, delete_many, count, exists, update or
 * clear (BeamMePrompty's optional callbacks).
 *
 * An emulated operation sends sub-requests straight to the backend (they bypass the mailbox and ride on the
 * parent's slot in the in-flight window) and finishes the parent when the last one is back. update is read →
 * user function → store conditional on the version read (or create-only when the key was missing) → retry
 * on ENGRAM_ECONFLICT / ENGRAM_EEXIST, up to update_retries attempts, which makes it atomic per key on every
 * source. Emulated updates of one key also run one at a time on the actor (the others wait in a per-key list,
 * in arrival order): on a backend whose calls are truly concurrent, such as a pipelined network connection,
 * 100 updates of one key would otherwise all read the same version, and all but one would retry, again and
 * again, until they ran out of attempts. Once the parent has been answered (deadline, cancellation) no new
 * sub-request is sent.
 *
 * The version alone cannot tell the item read from one deleted and written again meanwhile (a recreated key's
 * versions start again at 1), so a store conditional on it could write fn(deleted value) over the new item (ABA).
 * A source runs the calls the actor hands it for one key in the order it gets them, so a write of the key handed
 * to the source after an update's read and before its store runs between the two: the read is stale whatever the
 * version says. While an update is between "read sent" and "store sent" it is `reading` (counted in the actor's
 * upd_reading), and every write the actor hands the source meanwhile (engram__emulate_saw_write, called by
 * engram__actor_dispatch only while upd_reading is non-zero) marks the reading update of its key `stale`; a stale
 * update reads again instead of storing, as after a conflict. Writes made by other processes (or directly to a
 * tiered source's tiers) are not seen: against those the version check is all there is.
 */
#include <string.h>

#include "actor/actor.h"
#include "actor/emulate.h"

typedef struct {
  size_t remaining;  /* sub-requests out, plus one while the fan-out loop runs */
  size_t next;       /* sequential operations: the next index / page */
  uint64_t acc;      /* count accumulated */
  unsigned attempt;  /* update */
  cJSON *next_value; /* update: the value the user function produced */
  int status;
  /* update: one at a time per key (see the top of the file) */
  int registered;                       /* the key's running update: listed in the actor's upd_keys */
  engram_request_t *key_next;           /* next in the same upd_keys bucket */
  engram_request_t *waiters, *waiters_tail; /* updates of this key waiting for this one, in arrival order */
  engram_request_t *wait_next;          /* next in a waiter list or in the actor's ready list */
  unsigned char reading;                /* update: between its read sent and its store sent (upd_reading) */
  unsigned char stale;                  /* update: a write of its key was handed to the source while reading */
} op_state_t;

#define UPD_BUCKETS 64u

static op_state_t *op_state(const engram_request_t *req) { return req->priv->op_state; }

static unsigned bucket_of(const char *ns, size_t ns_len, const char *key, size_t key_len) {
  uint32_t h = 2166136261u;
  size_t i;
  for (i = 0; i < ns_len; i++) h = (h ^ (unsigned char)ns[i]) * 16777619u;
  h = (h ^ 0xffu) * 16777619u;
  for (i = 0; i < key_len; i++) h = (h ^ (unsigned char)key[i]) * 16777619u;
  return h & (UPD_BUCKETS - 1);
}

static unsigned key_bucket(const engram_request_t *req) {
  return bucket_of(req->ns, req->ns_len, req->key, req->key_len);
}

static int is_key(const engram_request_t *a, const char *ns, size_t ns_len, const char *key, size_t key_len) {
  return a->key_len == key_len && a->ns_len == ns_len && memcmp(a->key, key, key_len) == 0 &&
         memcmp(a->ns, ns, ns_len) == 0;
}

static int same_key(const engram_request_t *a, const engram_request_t *b) {
  return is_key(a, b->ns, b->ns_len, b->key, b->key_len);
}

/* The update between its read and its store: start, stop (see the top of the file). */
static void reading_start(engram_source_t *src, op_state_t *st) {
  if (!st->reading) src->upd_reading++;
  st->reading = 1;
  st->stale = 0;
}

static void reading_stop(engram_source_t *src, op_state_t *st) {
  if (st->reading) src->upd_reading--;
  st->reading = 0;
}

/* Marks the reading update of (ns, key), if any, stale. */
static void mark_key(engram_source_t *src, const char *ns, size_t ns_len, const char *key, size_t key_len) {
  engram_request_t *a;
  if (key == NULL) return;
  for (a = src->upd_keys[bucket_of(ns, ns_len, key, key_len)]; a != NULL; a = op_state(a)->key_next)
    if (op_state(a)->reading && is_key(a, ns, ns_len, key, key_len)) op_state(a)->stale = 1;
}

void engram__emulate_saw_write(engram_source_t *src, const engram_request_t *req) {
  const char *ns = req->ns ? req->ns : "";
  size_t i, ns_len = req->ns ? req->ns_len : 0;
  if (src->upd_keys == NULL) return;
  switch (req->op) {
    case ENGRAM_OP_STORE:
    case ENGRAM_OP_DELETE: mark_key(src, ns, ns_len, req->key, req->key_len); break;
    case ENGRAM_OP_STORE_MANY:
      for (i = 0; i < req->n; i++) mark_key(src, ns, ns_len, req->entries[i].key, strlen(req->entries[i].key));
      break;
    case ENGRAM_OP_DELETE_MANY:
      for (i = 0; i < req->n; i++) mark_key(src, ns, ns_len, req->keys[i], strlen(req->keys[i]));
      break;
    case ENGRAM_OP_CLEAR: /* a namespace, a prefix or the whole source: every reading update, to be safe */
      for (i = 0; i < UPD_BUCKETS; i++) {
        engram_request_t *a;
        for (a = src->upd_keys[i]; a != NULL; a = op_state(a)->key_next)
          if (op_state(a)->reading) op_state(a)->stale = 1;
      }
      break;
    default: break; /* reads; an update of the key waits behind the running one (update_begin) */
  }
}

static void update_release(engram_request_t *req, op_state_t *st);
static void update_run_ready(engram_source_t *src);

static op_state_t *state_of(engram_request_t *req) {
  if (req->priv->op_state == NULL) req->priv->op_state = engram_calloc(1, sizeof(op_state_t));
  return req->priv->op_state;
}

static void finish(engram_request_t *parent, int status, const char *message) {
  op_state_t *st = parent->priv->op_state;
  engram_source_t *promote = NULL;
  if (st != NULL) reading_stop(parent->priv->actor, st);
  if (st != NULL && st->registered) {
    update_release(parent, st);
    promote = parent->priv->actor;
  }
  if (st != NULL) {
    cJSON_Delete(st->next_value);
    engram_free(st);
    parent->priv->op_state = NULL;
  }
  if (message != NULL && message[0] != '\0' && !parent->priv->answered)
    memcpy(parent->priv->message, message, sizeof parent->priv->message);
  engram_request_complete(parent, status);
  if (promote != NULL) update_run_ready(promote);
}

/* Copies the first item of sub's reply into slot i of parent's (pre-sized) reply, moving the value. */
static void move_item(engram_request_t *parent, size_t i, engram_request_t *sub) {
  engram_item_t *dst = &parent->priv->items[i];
  engram_item_t *src = &sub->priv->items[0];
  const char *key = dst->key, *ns = dst->ns;
  if (sub->priv->n_items == 0) return;
  cJSON_Delete((cJSON *)dst->value);
  cJSON_Delete((cJSON *)dst->metadata);
  *dst = *src;
  dst->key = key;
  dst->ns = ns;
  dst->source = parent->priv->source;
  src->value = NULL;
  src->metadata = NULL;
}

/* Pre-sizes the reply with n items carrying the input keys, so sub-requests can fill them in any order. */
static int presize(engram_request_t *req, size_t n, const char *const *keys) {
  size_t i;
  engram_item_t it;
  for (i = 0; i < n; i++) {
    memset(&it, 0, sizeof it);
    it.key = keys ? keys[i] : req->entries[i].key;
    it.ns = req->ns;
    if (engram_reply_add(req, &it, 0) != 0) return ENGRAM_ENOMEM;
  }
  return 0;
}

/* ---- store_many / retrieve_many / delete_many: fan out one sub-request per item ---- */

static void batch_item_done(engram_request_t *sub) {
  engram_request_t *parent = sub->priv->parent;
  op_state_t *st = parent->priv->op_state;
  size_t i = sub->priv->sub_index;
  int status = sub->priv->status;
  if (parent->op == ENGRAM_OP_DELETE_MANY) {
    if (status == 0) st->acc += sub->priv->count;
  } else {
    if (status == 0) {
      move_item(parent, i, sub);
      st->acc++;
    }
  }
  parent->priv->items[i].status = status;
  engram__request_unref(sub);
  if (--st->remaining == 0) {
    engram_reply_set_count(parent, st->acc);
    finish(parent, 0, NULL);
  }
}

static void emulate_batch(engram_source_t *src, engram_request_t *req) {
  op_state_t *st = state_of(req);
  engram_op_t sub_op = req->op == ENGRAM_OP_STORE_MANY ? ENGRAM_OP_STORE
                       : req->op == ENGRAM_OP_RETRIEVE_MANY ? ENGRAM_OP_RETRIEVE
                                                            : ENGRAM_OP_DELETE;
  size_t i;
  if (st == NULL || presize(req, req->n, req->op == ENGRAM_OP_STORE_MANY ? NULL : req->keys) != 0) {
    finish(req, ENGRAM_ENOMEM, NULL);
    return;
  }
  st->remaining = req->n + 1;
  for (i = 0; i < req->n; i++) {
    const char *key = req->op == ENGRAM_OP_STORE_MANY ? req->entries[i].key : req->keys[i];
    engram_request_t *sub;
    if (engram_request_answered(req) || (sub = engram__subrequest(req, sub_op, key, req->ns, batch_item_done)) == NULL) {
      req->priv->items[i].status = engram_request_answered(req) ? ENGRAM_ECANCELED : ENGRAM_ENOMEM;
      st->remaining--;
      continue;
    }
    sub->priv->sub_index = i;
    sub->flags = req->flags;
    if (sub_op == ENGRAM_OP_STORE) {
      sub->value = (cJSON *)req->entries[i].value;
      sub->metadata = (cJSON *)req->entries[i].metadata;
      req->entries[i].value = NULL;
      req->entries[i].metadata = NULL;
      sub->expires_at_ms = req->entry_expires_at_ms ? req->entry_expires_at_ms[i] : 0;
    }
    engram__actor_dispatch(src, sub);
  }
  if (--st->remaining == 0) {
    engram_reply_set_count(req, st->acc);
    finish(req, 0, NULL);
  }
}

/* ---- exists: a retrieve ---- */

static void exists_done(engram_request_t *sub) {
  engram_request_t *parent = sub->priv->parent;
  int status = sub->priv->status;
  char msg[ENGRAM__MSG_MAX];
  memcpy(msg, sub->priv->message, sizeof msg);
  engram__request_unref(sub);
  if (status == 0 || status == ENGRAM_ENOTFOUND) {
    engram_reply_set_count(parent, status == 0);
    finish(parent, 0, NULL);
  } else {
    finish(parent, status, msg);
  }
}

/* ---- count: search page by page ---- */

#define COUNT_PAGE 1000

static void count_page(engram_source_t *src, engram_request_t *req);

static void count_done(engram_request_t *sub) {
  engram_request_t *parent = sub->priv->parent;
  op_state_t *st = parent->priv->op_state;
  int status = sub->priv->status;
  size_t got = sub->priv->n_items;
  char msg[ENGRAM__MSG_MAX];
  memcpy(msg, sub->priv->message, sizeof msg);
  engram__request_unref(sub);
  if (status != 0) {
    finish(parent, status, msg);
    return;
  }
  st->acc += got;
  if (got < COUNT_PAGE || engram_request_answered(parent)) {
    engram_reply_set_count(parent, st->acc);
    finish(parent, 0, NULL);
    return;
  }
  st->next++;
  count_page(parent->priv->actor, parent);
}

static void count_page(engram_source_t *src, engram_request_t *req) {
  op_state_t *st = req->priv->op_state;
  engram_request_t *sub = engram__subrequest(req, ENGRAM_OP_SEARCH, NULL, req->ns, count_done);
  if (sub == NULL) {
    finish(req, ENGRAM_ENOMEM, NULL);
    return;
  }
  sub->query = req->query;
  sub->query.limit = COUNT_PAGE;
  sub->query.offset = (int)(st->next * COUNT_PAGE);
  sub->flags = req->flags;
  sub->created_at = req->created_at; /* the system-field ranges, with their flags */
  sub->updated_at = req->updated_at;
  sub->expires_at = req->expires_at;
  engram__actor_dispatch(src, sub);
}

/* ---- update: read → user function → conditional store → retry ---- */

static void update_attempt(engram_source_t *src, engram_request_t *req);

/* The attempt found a conflict or a stale read: read again, or ENGRAM_ECONFLICT after update_retries attempts. */
static void update_again(engram_source_t *src, engram_request_t *parent) {
  op_state_t *st = op_state(parent);
  reading_stop(src, st);
  if (++st->attempt < src->update_retries && !engram_request_answered(parent)) {
    update_attempt(src, parent);
    return;
  }
  engram__request_set_message(parent, "update of key '%s': version conflict after %u attempts", parent->key,
                              st->attempt);
  finish(parent, ENGRAM_ECONFLICT, NULL);
}

static void update_stored(engram_request_t *sub) {
  engram_request_t *parent = sub->priv->parent;
  op_state_t *st = parent->priv->op_state;
  engram_source_t *src = parent->priv->actor;
  int status = sub->priv->status;
  char msg[ENGRAM__MSG_MAX];
  memcpy(msg, sub->priv->message, sizeof msg);
  if (status == 0) {
    engram_item_t it;
    memset(&it, 0, sizeof it);
    if (sub->priv->n_items > 0) it = sub->priv->items[0];
    it.key = parent->key;
    it.ns = parent->ns;
    it.value = st->next_value;
    if (engram_reply_add(parent, &it, ENGRAM_REPLY_OWN_VALUE) != 0) status = ENGRAM_ENOMEM;
    st->next_value = NULL;
    engram__request_unref(sub);
    finish(parent, status, NULL);
    return;
  }
  engram__request_unref(sub);
  if (status == ENGRAM_ECONFLICT || status == ENGRAM_EEXIST) update_again(src, parent);
  else finish(parent, status, msg);
}

static void update_read(engram_request_t *sub) {
  engram_request_t *parent = sub->priv->parent;
  op_state_t *st = parent->priv->op_state;
  engram_source_t *src = parent->priv->actor;
  int status = sub->priv->status, rc;
  const cJSON *current = NULL;
  cJSON *next = NULL, *meta = NULL;
  uint64_t version = 0;
  int64_t expires = 0;
  engram_request_t *store;
  char msg[ENGRAM__MSG_MAX];
  if (status != 0 && status != ENGRAM_ENOTFOUND) {
    memcpy(msg, sub->priv->message, sizeof msg);
    engram__request_unref(sub);
    finish(parent, status, msg);
    return;
  }
  if (st->stale) { /* a write of the key ran after this read: what it read is gone, whatever the version says */
    engram__request_unref(sub);
    update_again(src, parent);
    return;
  }
  if (status == 0 && sub->priv->n_items > 0) {
    engram_item_t *it = &sub->priv->items[0];
    current = it->value;
    version = it->version;
    expires = it->expires_at_ms;
    meta = (cJSON *)it->metadata;
    it->metadata = NULL;
  }
  if (engram_request_answered(parent)) {
    cJSON_Delete(meta);
    engram__request_unref(sub);
    finish(parent, ENGRAM_ECANCELED, NULL);
    return;
  }
  rc = engram_request_run_update(parent, current, &next);
  engram__request_unref(sub);
  if (rc != 0) {
    cJSON_Delete(meta);
    finish(parent, rc, NULL);
    return;
  }
  cJSON_Delete(st->next_value);
  st->next_value = cJSON_Duplicate(next, 1);
  store = engram__subrequest(parent, ENGRAM_OP_STORE, parent->key, parent->ns, update_stored);
  if (st->next_value == NULL || store == NULL) {
    cJSON_Delete(next);
    cJSON_Delete(meta);
    if (store) engram__request_unref(store);
    finish(parent, ENGRAM_ENOMEM, NULL);
    return;
  }
  store->value = next;
  store->metadata = meta;
  /* ENGRAM_OPT_TTL on the update sets a new expiry (computed at submission); without it the item keeps its own,
   * and a created item takes expires_at_ms (0, or the source's default_ttl_ms stamped as the update started). */
  store->expires_at_ms = (parent->flags & ENGRAM_OPT_TTL) || version == 0 ? parent->expires_at_ms : expires;
  if (version != 0) store->if_version = version;
  else store->flags |= ENGRAM_OPT_CREATE_ONLY;
  if (st->stale) { /* a write of the key was handed to the source while the function ran */
    engram__request_unref(store);
    update_again(src, parent);
    return;
  }
  reading_stop(src, st);
  engram__actor_dispatch(src, store);
}

static void update_attempt(engram_source_t *src, engram_request_t *req) {
  engram_request_t *sub = engram__subrequest(req, ENGRAM_OP_RETRIEVE, req->key, req->ns, update_read);
  if (sub == NULL) {
    finish(req, ENGRAM_ENOMEM, NULL);
    return;
  }
  sub->flags = ENGRAM_OPT_INCLUDE_METADATA;
  if (op_state(req)->registered) reading_start(src, op_state(req)); /* listed: writes of the key can find it */
  engram__actor_dispatch(src, sub);
}

/* Starts an update, or queues it behind the running update of the same key. */
static void update_begin(engram_source_t *src, engram_request_t *req) {
  op_state_t *st = op_state(req);
  engram_request_t **b, *a;
  if (src->upd_keys == NULL && (src->upd_keys = engram_calloc(UPD_BUCKETS, sizeof *src->upd_keys)) == NULL) {
    update_attempt(src, req); /* no memory for the list: run unserialized, with the retries as the fallback (and
                                * no stale-read check, which finds updates through the list) */
    return;
  }
  b = &src->upd_keys[key_bucket(req)];
  for (a = *b; a != NULL; a = op_state(a)->key_next) {
    if (same_key(a, req)) {
      op_state_t *as = op_state(a);
      if (as->waiters_tail) op_state(as->waiters_tail)->wait_next = req;
      else as->waiters = req;
      as->waiters_tail = req;
      return;
    }
  }
  st->registered = 1;
  st->key_next = *b;
  *b = req;
  update_attempt(src, req);
}

/* The key's running update is finishing: unlist it and hand the key to the first waiter, which starts from
 * update_run_ready once the finishing update has been completed. */
static void update_release(engram_request_t *req, op_state_t *st) {
  engram_source_t *src = req->priv->actor;
  engram_request_t **b = &src->upd_keys[key_bucket(req)], *w;
  while (*b != req) b = &op_state(*b)->key_next;
  *b = st->key_next;
  st->registered = 0;
  if ((w = st->waiters) != NULL) {
    op_state_t *ws = op_state(w);
    ws->waiters = ws->wait_next;
    ws->waiters_tail = ws->waiters ? st->waiters_tail : NULL;
    ws->wait_next = NULL;
    ws->registered = 1;
    ws->key_next = *b;
    *b = w;
    if (src->upd_ready_tail) op_state(src->upd_ready_tail)->wait_next = w;
    else src->upd_ready_head = w;
    src->upd_ready_tail = w;
  }
  st->waiters = st->waiters_tail = NULL;
}

/* Starts the updates whose turn came. A loop, not recursion: a backend that completes at once would otherwise
 * nest one update inside the completion of the one before it, as deep as the queue is long. */
static void update_run_ready(engram_source_t *src) {
  engram_request_t *w;
  if (src->upd_running) return;
  src->upd_running = 1;
  while ((w = src->upd_ready_head) != NULL) {
    op_state_t *ws = op_state(w);
    src->upd_ready_head = ws->wait_next;
    if (src->upd_ready_head == NULL) src->upd_ready_tail = NULL;
    ws->wait_next = NULL;
    if (engram_request_answered(w)) finish(w, ENGRAM_ECANCELED, NULL); /* timed out or cancelled while waiting */
    else update_attempt(src, w);
  }
  src->upd_running = 0;
}

/* ---- clear: list a page of keys, delete them, until nothing is left ---- */

static void clear_page(engram_source_t *src, engram_request_t *req);

/* After the last delete of a page: list the next page, or finish. */
static void clear_after_page(engram_request_t *parent) {
  op_state_t *st = parent->priv->op_state;
  if (st->status != 0 || engram_request_answered(parent)) {
    engram_reply_set_count(parent, st->acc);
    finish(parent, st->status ? st->status : ENGRAM_ECANCELED, NULL);
    return;
  }
  if (st->acc == st->next) { /* a page that removed nothing: stop rather than list it again */
    engram_reply_set_count(parent, st->acc);
    finish(parent, 0, NULL);
    return;
  }
  st->next = st->acc;
  clear_page(parent->priv->actor, parent);
}

static void clear_deleted(engram_request_t *sub) {
  engram_request_t *parent = sub->priv->parent;
  op_state_t *st = parent->priv->op_state;
  if (sub->priv->status == 0) st->acc += sub->priv->count;
  else if (st->status == 0) st->status = sub->priv->status;
  engram__request_unref(sub);
  if (--st->remaining == 0) clear_after_page(parent);
}

static void clear_listed(engram_request_t *sub) {
  engram_request_t *parent = sub->priv->parent;
  op_state_t *st = parent->priv->op_state;
  engram_source_t *src = parent->priv->actor;
  int status = sub->priv->status;
  size_t i, n = sub->priv->n_items;
  char msg[ENGRAM__MSG_MAX];
  if (status != 0 || n == 0) {
    memcpy(msg, sub->priv->message, sizeof msg);
    engram__request_unref(sub);
    engram_reply_set_count(parent, st->acc);
    finish(parent, status, msg);
    return;
  }
  st->remaining = n + 1;
  for (i = 0; i < n; i++) {
    engram_item_t *it = &sub->priv->items[i];
    engram_request_t *del = engram__subrequest(parent, ENGRAM_OP_DELETE, it->key, it->ns, clear_deleted);
    if (del == NULL) {
      st->status = ENGRAM_ENOMEM;
      st->remaining--;
      continue;
    }
    engram__actor_dispatch(src, del);
  }
  engram__request_unref(sub);
  if (--st->remaining == 0) clear_after_page(parent);
}

static void clear_page(engram_source_t *src, engram_request_t *req) {
  engram_request_t *sub = engram__subrequest(req, ENGRAM_OP_LIST_KEYS, NULL, req->ns, clear_listed);
  if (sub == NULL) {
    finish(req, ENGRAM_ENOMEM, NULL);
    return;
  }
  sub->query.limit = 1000;
  sub->flags = req->flags & ENGRAM_REQ_ALL_NAMESPACES;
  engram__actor_dispatch(src, sub);
}

static void info_counted(engram_request_t *sub) {
  engram_request_t *parent = sub->priv->parent;
  int status = sub->priv->status;
  cJSON *o = cJSON_CreateObject();
  if (o == NULL || (status == 0 && !cJSON_AddNumberToObject(o, "items", (double)sub->priv->count))) status = ENGRAM_ENOMEM;
  engram__request_unref(sub);
  engram_reply_set_info(parent, o);
  finish(parent, status, NULL);
}

void engram__emulate(engram_source_t *src, engram_request_t *req) {
  op_state_t *st = state_of(req);
  if (st == NULL) {
    engram_request_complete(req, ENGRAM_ENOMEM);
    return;
  }
  switch (req->op) {
    case ENGRAM_OP_STORE_MANY:
    case ENGRAM_OP_RETRIEVE_MANY:
    case ENGRAM_OP_DELETE_MANY: emulate_batch(src, req); break;
    case ENGRAM_OP_EXISTS: {
      engram_request_t *sub = engram__subrequest(req, ENGRAM_OP_RETRIEVE, req->key, req->ns, exists_done);
      if (sub == NULL) finish(req, ENGRAM_ENOMEM, NULL);
      else engram__actor_dispatch(src, sub);
      break;
    }
    case ENGRAM_OP_COUNT: count_page(src, req); break;
    case ENGRAM_OP_UPDATE: update_begin(src, req); break;
    case ENGRAM_OP_CLEAR: clear_page(src, req); break;
    case ENGRAM_OP_INFO: {
      /* A backend without info: report its item count (in the call's namespace). */
      engram_request_t *sub = engram__subrequest(req, ENGRAM_OP_COUNT, NULL, req->ns, info_counted);
      if (sub == NULL) finish(req, ENGRAM_ENOMEM, NULL);
      else engram__actor_dispatch(src, sub);
      break;
    }
    default: finish(req, ENGRAM_ENOTSUP, NULL); break;
  }
}
