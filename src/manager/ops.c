/*
 * ops.c — the public operation functions. Each one validates every argument (the error message names the
 * argument and what is wrong with it), copies what it needs into a request, and pushes the request into the
 * target source's mailbox; or it returns a negative code and never calls back. Nothing here blocks, and the
 * functions may be called from any thread.
 *
 * The input rules (docs/api.md): every string the core keeps — keys, namespaces, patterns, query text, cursors,
 * descriptions — is valid UTF-8 with no NUL; values, metadata and filters given as cJSON trees are walked once
 * (shared/json_text.c) and refused when a string leaf or member name is not UTF-8; options_json is checked as
 * text before cJSON parses it, so "\u0000" or a lone surrogate is refused instead of cutting a string. A message
 * that quotes caller text quotes it cut on a character boundary with control characters and bad bytes escaped.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "actor/actor.h"
#include "shared/error.h"
#include "shared/json_text.h"
#include "manager/bulk.h"
#include "manager/find_here.h"
#include "manager/manager.h"
#include "manager/registry.h"
#include "manager/query_mode.h"

#define LIMIT_MAX 100000
#define LIST_LIMIT_DEFAULT 1000 /* list_keys with limit 0 (BeamMePrompty: limit defaults to 1000) */
#define BATCH_MAX 100000
#define CURSOR_MAX 4096

static const engram_opts_t default_opts;

/* The string rules: 0 with *len_out set, or which one s breaks (for string_error). Batch calls test each key with
 * it and format the argument's name ("keys[3]") only for the one that breaks a rule. */
enum { STR_OK = 0, STR_NULL, STR_EMPTY, STR_LONG, STR_UTF8 };

/* Non-zero when the len bytes at s are all ASCII, looked at eight at a time: then they are valid UTF-8 (strlen
 * found no NUL among them), and the byte-by-byte validator, a sixth of the instructions of a cache retrieve,
 * is left for the strings that need it. */
static int all_ascii(const char *s, size_t len) {
  uint64_t acc = 0, w;
  size_t i = 0;
  for (; i + 8 <= len; i += 8) {
    memcpy(&w, s + i, 8);
    acc |= w;
  }
  if (i < len && len >= 8) { /* the last word, overlapping the one before it */
    memcpy(&w, s + len - 8, 8);
    acc |= w;
  } else {
    for (; i < len; i++) acc |= (unsigned char)s[i];
  }
  return (acc & 0x8080808080808080ull) == 0;
}

static int string_fault(const char *s, size_t min, size_t max, size_t *len_out) {
  size_t len;
  if (s == NULL) return STR_NULL;
  len = strlen(s);
  if (len < min) return STR_EMPTY;
  if (len > max) return STR_LONG;
  if (!all_ascii(s, len) && !engram_utf8_valid(s, len)) return STR_UTF8;
  *len_out = len;
  return STR_OK;
}

static int string_error(const char *what, int fault, const char *s, size_t max) {
  switch (fault) {
    case STR_NULL: return engram__error(ENGRAM_EINVAL, "%s: NULL", what);
    case STR_EMPTY: return engram__error(ENGRAM_EINVAL, "%s: empty", what);
    case STR_LONG: return engram__error(ENGRAM_EINVAL, "%s: %zu bytes, the limit is %zu", what, strlen(s), max);
    default: return engram__error(ENGRAM_EINVAL, "%s: invalid UTF-8", what);
  }
}

static int check_string(const char *what, const char *s, size_t min, size_t max, size_t *len_out) {
  int fault = string_fault(s, min, max, len_out);
  return fault ? string_error(what, fault, s, max) : 0;
}

/* A value, metadata object or filter given as a cJSON tree: the string rules, one pass (json_text.h). */
static int check_tree(const char *what, const cJSON *v) {
  engram__json_issue_t is;
  char msg[400];
  int rc = engram__json_tree_check(v, what, &is);
  if (rc == 0) return 0;
  return engram__error(rc, "%s", engram__json_issue_message(&is, what, msg, sizeof msg));
}

/* check_tree of entries[i].<field>, the name formatted only when the tree breaks a rule. */
static int check_entry_tree(size_t i, const char *field, const cJSON *v) {
  engram__json_issue_t is;
  char name[48];
  int rc = engram__json_tree_check(v, field, &is);
  if (rc == 0) return 0;
  if (rc == ENGRAM_ENOMEM) return engram__error(rc, "out of memory");
  snprintf(name, sizeof name, "entries[%zu].%s", i, field);
  return check_tree(name, v);
}

/* Re-records the last error made by a lower layer (a backend's option check) in a form safe to show. */
static int last_error_cleaned(int rc) {
  char msg[512];
  engram__text_clean(msg, sizeof msg, engram_last_error());
  return engram__error(rc, "%s", msg);
}

/* A system-field range, when its flag is set: 0 ≤ min_ms ≤ max_ms (engram.h, engram_range_t). */
static int check_range(const char *what, unsigned flag, const engram_opts_t *opts, const engram_range_t *r) {
  if (!(opts->flags & flag)) return 0;
  if (r->min_ms < 0) return engram__error(ENGRAM_EINVAL, "opts.%s: min_ms %lld is negative", what, (long long)r->min_ms);
  if (r->max_ms < r->min_ms)
    return engram__error(ENGRAM_EINVAL, "opts.%s: min_ms %lld is above max_ms %lld", what, (long long)r->min_ms,
                         (long long)r->max_ms);
  return 0;
}

static int check_common(engram_manager_t *mgr, const engram_opts_t *opts, engram_cb cb, size_t *ns_len) {
  if (mgr == NULL) return engram__error(ENGRAM_EINVAL, "mgr: NULL");
  if (cb == NULL) return engram__error(ENGRAM_EINVAL, "cb: NULL");
  *ns_len = 0;
  if (opts->ns != NULL && check_string("opts.ns (namespace)", opts->ns, 0, ENGRAM_NAMESPACE_MAX, ns_len) != 0)
    return ENGRAM_EINVAL;
  if (opts->source != NULL && opts->source[0] == '\0') return engram__error(ENGRAM_EINVAL, "opts.source: empty");
  if ((opts->flags & ENGRAM_OPT_TTL) && opts->ttl_ms < 0)
    return engram__error(ENGRAM_EINVAL, "opts.ttl_ms: %lld is negative", (long long)opts->ttl_ms);
  if (opts->metadata != NULL && !cJSON_IsObject(opts->metadata))
    return engram__error(ENGRAM_EINVAL, "opts.metadata: must be a JSON object");
  if (opts->flags & ~(unsigned)(ENGRAM_OPT_TTL | ENGRAM_OPT_CREATE_ONLY | ENGRAM_OPT_INCLUDE_METADATA | ENGRAM_OPT_CONFIRM |
                                 ENGRAM_OPT_RANGES | ENGRAM_OPT_DESCENDING | ENGRAM_OPT_NS_PREFIX))
    return engram__error(ENGRAM_EINVAL, "opts.flags: unknown bits 0x%x", opts->flags);
  if (opts->order_by < ENGRAM_ORDER_DEFAULT || opts->order_by > ENGRAM_ORDER_UPDATED_AT)
    return engram__error(ENGRAM_EINVAL, "opts.order_by: %d is not an order (ENGRAM_ORDER_DEFAULT, _KEY, _CREATED_AT, "
                         "_UPDATED_AT)", opts->order_by);
  if ((opts->flags & ENGRAM_OPT_DESCENDING) && opts->order_by == ENGRAM_ORDER_DEFAULT)
    return engram__error(ENGRAM_EINVAL, "opts.flags: ENGRAM_OPT_DESCENDING needs opts.order_by");
  if (check_range("created_at", ENGRAM_OPT_CREATED_RANGE, opts, &opts->created_at) != 0 ||
      check_range("updated_at", ENGRAM_OPT_UPDATED_RANGE, opts, &opts->updated_at) != 0 ||
      check_range("expires_at", ENGRAM_OPT_EXPIRES_RANGE, opts, &opts->expires_at) != 0)
    return ENGRAM_EINVAL;
  return 0;
}

static engram_request_t *new_req(engram_op_t op, const char *key, size_t key_len, const engram_opts_t *opts,
                                 size_t ns_len) {
  engram_request_t *req = engram__request_new(op, key, key_len, opts->ns, ns_len);
  if (req == NULL) {
    engram__error(ENGRAM_ENOMEM, "out of memory");
    return NULL;
  }
  req->flags = opts->flags;
  req->now_ms = engram_now_ms();
  req->created_at = opts->created_at;
  req->updated_at = opts->updated_at;
  req->expires_at = opts->expires_at;
  /* An order other than the backend's own (search by score, listing by key ascending) is the core's (order.c). */
  if ((op == ENGRAM_OP_SEARCH && opts->order_by != ENGRAM_ORDER_DEFAULT) ||
      (op == ENGRAM_OP_LIST_KEYS && opts->order_by != ENGRAM_ORDER_DEFAULT &&
       !(opts->order_by == ENGRAM_ORDER_KEY && !(opts->flags & ENGRAM_OPT_DESCENDING))))
    req->priv->order_by = (unsigned char)opts->order_by;
  return req;
}

/* Routes req to its source's mailbox; on failure frees it and returns the error. */
/* Frees a request the call refuses: a caller's release hook (engram__update_with_writes) is for accepted calls
 * only — a refused one leaves the caller's state with the caller. */
static void refuse(engram_request_t *req) {
  req->priv->update_ud_release = NULL;
  engram__request_unref(req);
}

/* A refused request whose entries' trees stay the caller's (keep): detached before the request is freed. */
static void refuse_as(engram_request_t *req, int keep) {
  size_t i;
  if (keep && req->priv->entries_owned != NULL)
    for (i = 0; i < req->n; i++) req->priv->entries_owned[i].value = req->priv->entries_owned[i].metadata = NULL;
  refuse(req);
}

/* Refuses req for something src cannot do, under the manager's read lock when locked (released here): req freed
 * as refuse_as does, and ENGRAM_ENOTSUP "<field>source '<name>' (<type>) <what>". */
static int refuse_unsupported(engram_manager_t *mgr, int locked, const engram_source_t *src, engram_request_t *req,
                              int keep, const char *field, const char *what) {
  char name[ENGRAM_SOURCE_NAME_MAX + 1], type[64];
  memcpy(name, src->name, sizeof name);
  snprintf(type, sizeof type, "%s", src->vt->name ? src->vt->name : "?");
  if (locked) uv_rwlock_rdunlock(&mgr->lock);
  refuse_as(req, keep);
  return engram__error(ENGRAM_ENOTSUP, "%ssource '%s' (%s) %s", field, name, type, what);
}

/* The target source of a call made inside a callback its manager's home loop runs (engram__home_callback,
 * request.h), found without the table's lock: the home loop alone writes the table (find_here.h), so it stays
 * whole, and the source in it, until the call returns. The lock's two atomic read-modify-writes were a twentieth
 * of a cache retrieve's instructions for the callbacks that submit again. NULL (take the lock) elsewhere, or when
 * the default is changing (find_here.h). */
static engram_source_t *find_home(engram_manager_t *mgr, const char *name) {
  if (engram__home_callback != mgr) return NULL;
  return name != NULL ? engram__manager_find_here(mgr, name) : engram__manager_default_here(mgr);
}

/* Routes req to its source's mailbox; on failure frees it (keep: not its entries' trees) and returns the error. */
static int submit_as(engram_manager_t *mgr, engram_request_t *req, const engram_opts_t *opts, engram_cb cb, void *ud,
                     int keep) {
  engram_source_t *src;
  int rc, locked = 0;
  req->priv->cb = cb;
  req->priv->ud = ud;
  req->priv->cq = opts->cq;
  req->priv->deadline_ms = opts->deadline_ms ? opts->deadline_ms : mgr->cfg.default_deadline_ms;
  if (atomic_load_explicit(&mgr->closed, memory_order_acquire)) {
    refuse_as(req, keep);
    return engram__error(ENGRAM_ECLOSED, "manager: closed");
  }
  if ((src = find_home(mgr, opts->source)) == NULL) {
    uv_rwlock_rdlock(&mgr->lock);
    locked = 1;
    src = engram__manager_find_locked(mgr, opts->source);
  } else if (req->op == ENGRAM_OP_RETRIEVE && !src->own_thread && src->vt->version >= 6 && src->vt->prefetch != NULL) {
    src->vt->prefetch(src, req); /* this is the home loop, where the source runs (source.h, version 6) */
  }
  if (src == NULL) {
    uv_rwlock_rdunlock(&mgr->lock);
    refuse_as(req, keep);
    if (opts->source == NULL) return engram__error(ENGRAM_EUNKNOWN_SOURCE, "no memory source: add one first");
    {
      char q[ENGRAM__QUOTE_MAX + 1];
      return engram__error(ENGRAM_EUNKNOWN_SOURCE, "unknown memory source '%s'",
                           engram__quote(q, sizeof q, opts->source));
    }
  }
  if ((req->flags & ENGRAM_OPT_RANGES) && !(src->vt->flags & ENGRAM_SOURCE_RANGES) &&
      (req->op == ENGRAM_OP_SEARCH || req->op == ENGRAM_OP_COUNT || req->op == ENGRAM_OP_LIST_KEYS)) {
    return refuse_unsupported(mgr, locked, src, req, keep, "", "cannot filter on created_at, updated_at or expires_at");
  }
  if (req->op == ENGRAM_OP_SEARCH && engram__query_mode_needs_vector(&req->query) &&
      !(src->vt->flags & ENGRAM_SOURCE_SEARCH_MODES)) {
    return refuse_unsupported(mgr, locked, src, req, keep, "query.mode: ",
                              "ranks by text only (modes vector and hybrid need a vector source)");
  }
  if ((req->flags & ENGRAM_REQ_REPLICA) && !(src->vt->flags & ENGRAM_SOURCE_REPLICA)) {
    return refuse_unsupported(mgr, locked, src, req, keep, "", "cannot keep given versions and timestamps");
  }
  if (req->op == ENGRAM_OP_STORE_MANY && (req->flags & ENGRAM_REQ_REPLICA) &&
      !(src->vt->flags & ENGRAM_SOURCE_REPLICA_MANY)) {
    return refuse_unsupported(mgr, locked, src, req, keep, "", "cannot take a batch of replicas");
  }
  if ((req->flags & ENGRAM_REQ_LIST_ITEMS) && !(src->vt->flags & ENGRAM_SOURCE_LIST_ITEMS)) {
    return refuse_unsupported(mgr, locked, src, req, keep, "", "cannot list whole items");
  }
  rc = engram__actor_submit(src, req);
  if (rc != 0) {
    unsigned cap = src->mb.capacity;
    char name[ENGRAM_SOURCE_NAME_MAX + 1];
    memcpy(name, src->name, sizeof name);
    if (locked) uv_rwlock_rdunlock(&mgr->lock);
    refuse_as(req, keep);
    return engram__error(rc, "source '%s': mailbox full (%u calls queued)", name, cap);
  }
  if (locked) uv_rwlock_rdunlock(&mgr->lock);
  return 0;
}

static int submit(engram_manager_t *mgr, engram_request_t *req, const engram_opts_t *opts, engram_cb cb, void *ud) {
  return submit_as(mgr, req, opts, cb, ud, 0);
}

#define BEGIN(opts_in, cb)                                                                                      \
  const engram_opts_t *opts = (opts_in) ? (opts_in) : &default_opts;                                         \
  size_t ns_len;                                                                                              \
  engram__error_clear();                                                                                      \
  if (check_common(mgr, opts, cb, &ns_len) != 0) return ENGRAM_EINVAL

static int64_t expiry(const engram_opts_t *opts, int64_t now) {
  return (opts->flags & ENGRAM_OPT_TTL) ? now + opts->ttl_ms : 0;
}

int engram_store(engram_manager_t *mgr, const char *key, const cJSON *value, const engram_opts_t *opts_in,
                 engram_cb cb, void *ud) {
  size_t key_len = 0;
  engram_request_t *req;
  int rc;
  BEGIN(opts_in, cb);
  if (check_string("key", key, 1, ENGRAM_KEY_MAX, &key_len) != 0) return ENGRAM_EINVAL;
  if (value == NULL) return engram__error(ENGRAM_EINVAL, "value: NULL");
  if ((req = new_req(ENGRAM_OP_STORE, key, key_len, opts, ns_len)) == NULL) return ENGRAM_ENOMEM;
  /* The copies go in the request's own block when they fit, checked as they are copied (request.h,
   * engram__request_copy_in): no allocation to make or free, one walk. Else: checked, then cJSON_Duplicate. */
  if ((req->value = engram__request_copy_in(req, value)) == NULL) {
    if ((rc = check_tree("value", value)) != 0) goto refused;
    req->value = cJSON_Duplicate(value, 1);
  }
  if (opts->metadata && (req->metadata = engram__request_copy_in(req, opts->metadata)) == NULL) {
    if ((rc = check_tree("opts.metadata", opts->metadata)) != 0) goto refused;
    req->metadata = cJSON_Duplicate(opts->metadata, 1);
  }
  if (req->value == NULL || (opts->metadata && req->metadata == NULL)) {
    engram__request_unref(req);
    return engram__error(ENGRAM_ENOMEM, "out of memory copying the value");
  }
  req->expires_at_ms = expiry(opts, req->now_ms);
  req->if_version = opts->if_version;
  return submit(mgr, req, opts, cb, ud);
refused:
  refuse(req);
  return rc;
}

static int single_key(engram_op_t op, engram_manager_t *mgr, const char *key, const engram_opts_t *opts_in,
                      engram_cb cb, void *ud) {
  size_t key_len = 0; /* set by check_string (gcc -O3 cannot see it) */
  engram_request_t *req;
  BEGIN(opts_in, cb);
  if (check_string("key", key, 1, ENGRAM_KEY_MAX, &key_len) != 0) return ENGRAM_EINVAL;
  if ((req = new_req(op, key, key_len, opts, ns_len)) == NULL) return ENGRAM_ENOMEM;
  return submit(mgr, req, opts, cb, ud);
}

int engram_retrieve(engram_manager_t *mgr, const char *key, const engram_opts_t *opts, engram_cb cb, void *ud) {
  return single_key(ENGRAM_OP_RETRIEVE, mgr, key, opts, cb, ud);
}

int engram_delete(engram_manager_t *mgr, const char *key, const engram_opts_t *opts, engram_cb cb, void *ud) {
  return single_key(ENGRAM_OP_DELETE, mgr, key, opts, cb, ud);
}

int engram_exists(engram_manager_t *mgr, const char *key, const engram_opts_t *opts, engram_cb cb, void *ud) {
  return single_key(ENGRAM_OP_EXISTS, mgr, key, opts, cb, ud);
}

int engram_update(engram_manager_t *mgr, const char *key, engram_update_fn fn, void *fn_ud,
                  const engram_opts_t *opts_in, engram_cb cb, void *ud) {
  size_t key_len = 0; /* set by check_string (gcc -O3 cannot see it) */
  engram_request_t *req;
  BEGIN(opts_in, cb);
  if (check_string("key", key, 1, ENGRAM_KEY_MAX, &key_len) != 0) return ENGRAM_EINVAL;
  if (fn == NULL) return engram__error(ENGRAM_EINVAL, "fn: NULL");
  if ((req = new_req(ENGRAM_OP_UPDATE, key, key_len, opts, ns_len)) == NULL) return ENGRAM_ENOMEM;
  req->update_fn = fn;
  req->update_ud = fn_ud;
  /* With ENGRAM_OPT_TTL the new value expires ttl_ms after the call (counted from its submission, as a store's);
   * without it the item keeps the expiry it has (a missing key is created without one). */
  req->expires_at_ms = expiry(opts, req->now_ms);
  return submit(mgr, req, opts, cb, ud);
}

int engram__update_with_writes(engram_manager_t *mgr, const char *key, engram_update_fn fn, void *fn_ud,
                               engram_update_writes_t *writes, void (*release)(void *fn_ud),
                               const engram_opts_t *opts_in, engram_cb cb, void *ud) {
  size_t key_len = 0;
  engram_request_t *req;
  BEGIN(opts_in, cb);
  if (check_string("key", key, 1, ENGRAM_KEY_MAX, &key_len) != 0) return ENGRAM_EINVAL;
  if (fn == NULL) return engram__error(ENGRAM_EINVAL, "fn: NULL");
  if (writes == NULL) return engram__error(ENGRAM_EINVAL, "writes: NULL");
  if ((req = new_req(ENGRAM_OP_UPDATE, key, key_len, opts, ns_len)) == NULL) return ENGRAM_ENOMEM;
  req->update_fn = fn;
  req->update_ud = fn_ud;
  req->expires_at_ms = expiry(opts, req->now_ms);
  req->priv->writes_src = writes;
  req->priv->update_ud_release = release;
  return submit(mgr, req, opts, cb, ud);
}

static int copy_keys(engram_request_t *req, const char *const *keys, size_t n) {
  size_t i, len;
  char name[32];
  for (i = 0; i < n; i++) {
    /* the name is formatted only for the message of a bad key (snprintf per key was a tenth of a window) */
    int fault = string_fault(keys[i], 1, ENGRAM_KEY_MAX, &len);
    if (fault == STR_OK) continue;
    snprintf(name, sizeof name, "keys[%zu]", i);
    return string_error(name, fault, keys[i], ENGRAM_KEY_MAX);
  }
  req->priv->keys_owned = engram_calloc(n, sizeof(char *));
  if (req->priv->keys_owned == NULL) return engram__error(ENGRAM_ENOMEM, "out of memory");
  req->n = n;
  for (i = 0; i < n; i++)
    if ((req->priv->keys_owned[i] = engram_strdup(keys[i])) == NULL) return engram__error(ENGRAM_ENOMEM, "out of memory");
  req->keys = (const char *const *)req->priv->keys_owned;
  return 0;
}

static int keys_batch(engram_op_t op, engram_manager_t *mgr, const char *const *keys, size_t n,
                      const engram_opts_t *opts_in, engram_cb cb, void *ud) {
  engram_request_t *req;
  int rc;
  BEGIN(opts_in, cb);
  if (keys == NULL) return engram__error(ENGRAM_EINVAL, "keys: NULL");
  if (n == 0 || n > BATCH_MAX) return engram__error(ENGRAM_EINVAL, "n: %zu, must be 1..%d", n, BATCH_MAX);
  if ((req = new_req(op, NULL, 0, opts, ns_len)) == NULL) return ENGRAM_ENOMEM;
  if ((rc = copy_keys(req, keys, n)) != 0) {
    engram__request_unref(req);
    return rc;
  }
  return submit(mgr, req, opts, cb, ud);
}

int engram_retrieve_many(engram_manager_t *mgr, const char *const *keys, size_t n, const engram_opts_t *opts,
                         engram_cb cb, void *ud) {
  return keys_batch(ENGRAM_OP_RETRIEVE_MANY, mgr, keys, n, opts, cb, ud);
}

/* bulk.h: engram_retrieve_many whose request carries ENGRAM_REQ_JSON_TEXT (the export's reads). */
int engram__retrieve_many_text(engram_manager_t *mgr, const char *const *keys, size_t n, const engram_opts_t *opts_in,
                               engram_cb cb, void *ud) {
  engram_request_t *req;
  int rc;
  BEGIN(opts_in, cb);
  if (keys == NULL) return engram__error(ENGRAM_EINVAL, "keys: NULL");
  if (n == 0 || n > BATCH_MAX) return engram__error(ENGRAM_EINVAL, "n: %zu, must be 1..%d", n, BATCH_MAX);
  if ((req = new_req(ENGRAM_OP_RETRIEVE_MANY, NULL, 0, opts, ns_len)) == NULL) return ENGRAM_ENOMEM;
  req->flags |= ENGRAM_REQ_JSON_TEXT;
  if ((rc = copy_keys(req, keys, n)) != 0) {
    engram__request_unref(req);
    return rc;
  }
  return submit(mgr, req, opts, cb, ud);
}

int engram_delete_many(engram_manager_t *mgr, const char *const *keys, size_t n, const engram_opts_t *opts,
                       engram_cb cb, void *ud) {
  return keys_batch(ENGRAM_OP_DELETE_MANY, mgr, keys, n, opts, cb, ud);
}

int engram_store_many(engram_manager_t *mgr, const engram_entry_t *entries, size_t n, const engram_opts_t *opts_in,
                      engram_cb cb, void *ud) {
  engram_request_t *req;
  size_t i, len;
  char name[48];
  int rc;
  BEGIN(opts_in, cb);
  if (entries == NULL) return engram__error(ENGRAM_EINVAL, "entries: NULL");
  if (n == 0 || n > BATCH_MAX) return engram__error(ENGRAM_EINVAL, "n: %zu, must be 1..%d", n, BATCH_MAX);
  if ((rc = check_tree("opts.metadata", opts->metadata)) != 0) return rc;
  for (i = 0; i < n; i++) {
    /* names are formatted only for the message of a bad entry: three snprintf per entry were a tenth of a batch */
    int fault = string_fault(entries[i].key, 1, ENGRAM_KEY_MAX, &len);
    if (fault != STR_OK) {
      snprintf(name, sizeof name, "entries[%zu].key", i);
      return string_error(name, fault, entries[i].key, ENGRAM_KEY_MAX);
    }
    if (entries[i].value == NULL) return engram__error(ENGRAM_EINVAL, "entries[%zu].value: NULL", i);
    if (entries[i].metadata != NULL && !cJSON_IsObject(entries[i].metadata))
      return engram__error(ENGRAM_EINVAL, "entries[%zu].metadata: must be a JSON object", i);
    if ((rc = check_entry_tree(i, "value", entries[i].value)) != 0) return rc;
    if ((rc = check_entry_tree(i, "metadata", entries[i].metadata)) != 0) return rc;
    if (entries[i].has_ttl && entries[i].ttl_ms < 0)
      return engram__error(ENGRAM_EINVAL, "entries[%zu].ttl_ms: %lld is negative", i, (long long)entries[i].ttl_ms);
  }
  if ((req = new_req(ENGRAM_OP_STORE_MANY, NULL, 0, opts, ns_len)) == NULL) return ENGRAM_ENOMEM;
  req->priv->entries_owned = engram_calloc(n, sizeof(engram_entry_t));
  req->priv->expires_owned = engram_calloc(n, sizeof(int64_t));
  if (req->priv->entries_owned == NULL || req->priv->expires_owned == NULL) goto nomem;
  req->n = n;
  for (i = 0; i < n; i++) {
    engram_entry_t *e = &req->priv->entries_owned[i];
    const cJSON *meta = entries[i].metadata ? entries[i].metadata : opts->metadata;
    if ((e->key = engram_strdup(entries[i].key)) == NULL) goto nomem;
    if ((e->value = cJSON_Duplicate(entries[i].value, 1)) == NULL) goto nomem;
    if (meta != NULL && (e->metadata = cJSON_Duplicate(meta, 1)) == NULL) goto nomem;
    e->has_ttl = entries[i].has_ttl || (opts->flags & ENGRAM_OPT_TTL);
    e->ttl_ms = entries[i].has_ttl ? entries[i].ttl_ms : opts->ttl_ms;
    req->priv->expires_owned[i] = e->has_ttl ? req->now_ms + e->ttl_ms : 0;
  }
  req->entries = req->priv->entries_owned;
  req->entry_expires_at_ms = req->priv->expires_owned;
  return submit(mgr, req, opts, cb, ud);
nomem:
  engram__request_unref(req);
  return engram__error(ENGRAM_ENOMEM, "out of memory copying the entries");
}

static int copy_query(engram_request_t *req, const engram_query_t *q, int check_limit) {
  char err[256], q_text[ENGRAM__QUOTE_MAX + 1];
  size_t len, i;
  int rc;
  if (check_limit && (q->limit <= 0 || q->limit > LIMIT_MAX))
    return engram__error(ENGRAM_EINVAL, "query.limit: %d, must be 1..%d", q->limit, LIMIT_MAX);
  if (q->offset < 0) return engram__error(ENGRAM_EINVAL, "query.offset: %d is negative", q->offset);
  if (!(q->min_score >= 0.0 && q->min_score <= 1.0))
    return engram__error(ENGRAM_EINVAL, "query.min_score: %g, must be in [0, 1]", q->min_score);
  if (q->text != NULL && check_string("query.text", q->text, 0, 1 << 20, &len) != 0) return ENGRAM_EINVAL;
  if (q->pattern != NULL) {
    if (check_string("query.pattern", q->pattern, 0, ENGRAM_KEY_MAX * 4, &len) != 0) return ENGRAM_EINVAL;
    if (engram_pattern_check(q->pattern) != 0)
      return engram__error(ENGRAM_EINVAL, "query.pattern: \"%s\" is not a valid glob (unterminated [ or trailing \\)",
                           engram__quote(q_text, sizeof q_text, q->pattern));
  }
  if (q->filter != NULL && (rc = check_tree("query.filter", q->filter)) != 0) return rc;
  if (q->filter != NULL && engram_filter_check(q->filter, err, sizeof err) != 0) {
    char clean[sizeof err];
    return engram__error(ENGRAM_EINVAL, "query.filter: %s", engram__text_clean(clean, sizeof clean, err));
  }
  if (q->vector != NULL) {
    if (q->dimension == 0 || q->dimension > 65536)
      return engram__error(ENGRAM_EINVAL, "query.dimension: %zu, must be 1..65536", q->dimension);
    for (i = 0; i < q->dimension; i++)
      if (!isfinite(q->vector[i]))
        return engram__error(ENGRAM_EINVAL, "query.vector[%zu]: not a finite number", i);
  } else if (q->dimension != 0) {
    return engram__error(ENGRAM_EINVAL, "query.dimension: %zu without query.vector", q->dimension);
  }
  if (engram__query_mode_check(q) != 0) return ENGRAM_EINVAL;
  req->query = *q;
  req->query.text = req->query.pattern = NULL;
  req->query.filter = NULL;
  req->query.vector = NULL;
  if (q->text && (req->query.text = req->priv->query_text = engram_strdup(q->text)) == NULL) goto nomem;
  if (q->pattern && (req->query.pattern = req->priv->query_pattern = engram_strdup(q->pattern)) == NULL) goto nomem;
  if (q->filter && (req->query.filter = req->priv->query_filter = cJSON_Duplicate(q->filter, 1)) == NULL) goto nomem;
  if (q->vector) {
    if ((req->priv->query_vector = engram_malloc(q->dimension * sizeof(float))) == NULL) goto nomem;
    memcpy(req->priv->query_vector, q->vector, q->dimension * sizeof(float));
    req->query.vector = req->priv->query_vector;
  }
  return 0;
nomem:
  return engram__error(ENGRAM_ENOMEM, "out of memory copying the query");
}

static int query_op(engram_op_t op, engram_manager_t *mgr, const engram_query_t *query, const engram_opts_t *opts_in,
                    engram_cb cb, void *ud) {
  engram_request_t *req;
  int rc;
  BEGIN(opts_in, cb);
  if (query == NULL) return engram__error(ENGRAM_EINVAL, "query: NULL");
  if ((opts->flags & ENGRAM_OPT_NS_PREFIX) && op == ENGRAM_OP_SEARCH)
    return engram__error(ENGRAM_EINVAL, "opts.flags: ENGRAM_OPT_NS_PREFIX applies to clear, count and list_keys; "
                         "search one namespace at a time");
  if ((opts->flags & ENGRAM_OPT_NS_PREFIX) && query->text != NULL && query->text[0] != '\0')
    return engram__error(ENGRAM_EINVAL, "query.text: a count over a namespace prefix takes no text (count by "
                         "pattern, filter and ranges)");
  if ((req = new_req(op, NULL, 0, opts, ns_len)) == NULL) return ENGRAM_ENOMEM;
  if ((rc = copy_query(req, query, op == ENGRAM_OP_SEARCH)) != 0) {
    engram__request_unref(req);
    return rc;
  }
  if (op == ENGRAM_OP_COUNT) {
    req->query.limit = 0;
    req->query.offset = 0;
  }
  return submit(mgr, req, opts, cb, ud);
}

int engram_search(engram_manager_t *mgr, const engram_query_t *query, const engram_opts_t *opts, engram_cb cb,
                  void *ud) {
  return query_op(ENGRAM_OP_SEARCH, mgr, query, opts, cb, ud);
}

int engram_count(engram_manager_t *mgr, const engram_query_t *query, const engram_opts_t *opts, engram_cb cb,
                 void *ud) {
  return query_op(ENGRAM_OP_COUNT, mgr, query, opts, cb, ud);
}

int engram_list_keys(engram_manager_t *mgr, const char *pattern, int limit, const char *cursor,
                     const engram_opts_t *opts_in, engram_cb cb, void *ud) {
  engram_request_t *req;
  engram_query_t q = ENGRAM_QUERY_INIT;
  size_t len;
  int rc;
  BEGIN(opts_in, cb);
  if (limit == 0) limit = LIST_LIMIT_DEFAULT; /* BeamMePrompty's list_keys default */
  if (limit < 0 || limit > LIMIT_MAX)
    return engram__error(ENGRAM_EINVAL, "limit: %d, must be 1..%d (0 = %d)", limit, LIMIT_MAX, LIST_LIMIT_DEFAULT);
  if (cursor != NULL && check_string("cursor", cursor, 1, CURSOR_MAX, &len) != 0) return ENGRAM_EINVAL;
  if ((opts->flags & ENGRAM_OPT_NS_PREFIX) && opts->order_by != ENGRAM_ORDER_DEFAULT &&
      !(opts->order_by == ENGRAM_ORDER_KEY && !(opts->flags & ENGRAM_OPT_DESCENDING)))
    return engram__error(ENGRAM_EINVAL, "opts.order_by: a listing over a namespace prefix (ENGRAM_OPT_NS_PREFIX) is "
                         "by namespace and key, ascending");
  q.pattern = pattern;
  q.limit = limit;
  if ((req = new_req(ENGRAM_OP_LIST_KEYS, NULL, 0, opts, ns_len)) == NULL) return ENGRAM_ENOMEM;
  if ((rc = copy_query(req, &q, 1)) != 0) {
    engram__request_unref(req);
    return rc;
  }
  if (cursor != NULL && (req->cursor = req->priv->cursor_in = engram_strdup(cursor)) == NULL) {
    engram__request_unref(req);
    return engram__error(ENGRAM_ENOMEM, "out of memory");
  }
  return submit(mgr, req, opts, cb, ud);
}

int engram_list_namespaces(engram_manager_t *mgr, int max_depth, int limit, const char *cursor,
                           const engram_opts_t *opts_in, engram_cb cb, void *ud) {
  engram_request_t *req;
  size_t len;
  BEGIN(opts_in, cb);
  if (max_depth < 0) return engram__error(ENGRAM_EINVAL, "max_depth: %d is negative (0 = whole namespaces)", max_depth);
  if (limit == 0) limit = LIST_LIMIT_DEFAULT;
  if (limit < 0 || limit > LIMIT_MAX)
    return engram__error(ENGRAM_EINVAL, "limit: %d, must be 1..%d (0 = %d)", limit, LIMIT_MAX, LIST_LIMIT_DEFAULT);
  if (cursor != NULL) {
    if (check_string("cursor", cursor, 2, CURSOR_MAX, &len) != 0) return ENGRAM_EINVAL;
    if (cursor[0] != 'n' || cursor[1] != ':' || len - 2 > ENGRAM_NAMESPACE_MAX)
      return engram__error(ENGRAM_EINVAL, "cursor \"%.40s\" was not made by engram_list_namespaces", cursor);
  }
  if ((req = new_req(ENGRAM_OP_LIST_NAMESPACES, NULL, 0, opts, ns_len)) == NULL) return ENGRAM_ENOMEM;
  req->flags = ENGRAM_OPT_NS_PREFIX;
  req->query.limit = limit;
  req->n = (size_t)max_depth;
  if (cursor != NULL && (req->cursor = req->priv->cursor_in = engram_strdup(cursor)) == NULL) {
    engram__request_unref(req);
    return engram__error(ENGRAM_ENOMEM, "out of memory");
  }
  return submit(mgr, req, opts, cb, ud);
}

/* ---- Internal submit paths for export and import (bulk.h) ---- */

static int list_all(engram_manager_t *mgr, const char *pattern, int limit, const char *cursor,
                    const engram_opts_t *opts_in, unsigned flags, engram_cb cb, void *ud) {
  engram_opts_t o = opts_in ? *opts_in : default_opts;
  engram_request_t *req;
  engram_query_t q = ENGRAM_QUERY_INIT;
  size_t len;
  int rc;
  const engram_opts_t *op = &o;
  if (!(flags & ENGRAM_REQ_LIST_ITEMS)) o.ns = NULL;
  o.flags = 0;
  {
    BEGIN(op, cb);
    if (limit == 0) limit = LIST_LIMIT_DEFAULT;
    if (limit < 0 || limit > LIMIT_MAX)
      return engram__error(ENGRAM_EINVAL, "limit: %d, must be 1..%d (0 = %d)", limit, LIMIT_MAX, LIST_LIMIT_DEFAULT);
    if (cursor != NULL && check_string("cursor", cursor, 1, CURSOR_MAX, &len) != 0) return ENGRAM_EINVAL;
    q.pattern = pattern;
    q.limit = limit;
    if ((req = new_req(ENGRAM_OP_LIST_KEYS, NULL, 0, opts, ns_len)) == NULL) return ENGRAM_ENOMEM;
    req->flags |= flags | (o.ns == NULL ? ENGRAM_REQ_ALL_NAMESPACES : 0u);
    if ((rc = copy_query(req, &q, 1)) != 0) {
      engram__request_unref(req);
      return rc;
    }
    if (cursor != NULL && (req->cursor = req->priv->cursor_in = engram_strdup(cursor)) == NULL) {
      engram__request_unref(req);
      return engram__error(ENGRAM_ENOMEM, "out of memory");
    }
    return submit(mgr, req, opts, cb, ud);
  }
}

int engram__list_keys_all(engram_manager_t *mgr, const char *pattern, int limit, const char *cursor,
                          const engram_opts_t *opts, engram_cb cb, void *ud) {
  return list_all(mgr, pattern, limit, cursor, opts, 0, cb, ud);
}

/* bulk.h: a page of whole items (ENGRAM_REQ_LIST_ITEMS), refused by submit() for a source without the flag. */
int engram__list_items(engram_manager_t *mgr, const char *pattern, int limit, const char *cursor,
                       const engram_opts_t *opts, engram_cb cb, void *ud) {
  return list_all(mgr, pattern, limit, cursor, opts,
                  ENGRAM_REQ_LIST_ITEMS | ENGRAM_REQ_JSON_TEXT | ENGRAM_OPT_INCLUDE_METADATA, cb, ud);
}

static int store_replica(engram_manager_t *mgr, const char *key, cJSON *value, cJSON *metadata, int64_t expires_at_ms,
                         uint64_t version, int64_t created_at_ms, int64_t updated_at_ms, const engram_opts_t *opts_in,
                         engram_cb cb, void *ud, int *taken) {
  engram_opts_t o = opts_in ? *opts_in : default_opts;
  size_t key_len = 0;
  engram_request_t *req;
  int rc;
  o.flags = 0;
  o.metadata = NULL;
  o.if_version = 0;
  {
    const engram_opts_t *op = &o;
    BEGIN(op, cb);
    if (check_string("key", key, 1, ENGRAM_KEY_MAX, &key_len) != 0) return ENGRAM_EINVAL;
    if (value == NULL) return engram__error(ENGRAM_EINVAL, "value: NULL");
    if (metadata != NULL && !cJSON_IsObject(metadata))
      return engram__error(ENGRAM_EINVAL, "metadata: must be a JSON object");
    if (version == 0) return engram__error(ENGRAM_EINVAL, "version: 0, must be >= 1");
    if (expires_at_ms < 0 || created_at_ms < 0 || updated_at_ms < 0)
      return engram__error(ENGRAM_EINVAL, "timestamps: negative");
    if ((rc = check_tree("value", value)) != 0 || (rc = check_tree("metadata", metadata)) != 0) return rc;
    if ((req = new_req(ENGRAM_OP_STORE, key, key_len, opts, ns_len)) == NULL) return ENGRAM_ENOMEM;
    req->value = value; /* taken: the request frees them */
    req->metadata = metadata;
    *taken = 1;
    req->flags = ENGRAM_REQ_REPLICA;
    req->expires_at_ms = expires_at_ms;
    req->version = version;
    req->created_at_ms = created_at_ms;
    req->updated_at_ms = updated_at_ms;
    return submit(mgr, req, opts, cb, ud);
  }
}

/* bulk.h: a batch of replicas of one namespace (ENGRAM_REQ_REPLICA on a store_many). */
int engram__store_many_replica(engram_manager_t *mgr, engram_entry_t *entries, size_t n,
                               const int64_t *expires_at_ms, const uint64_t *version, const int64_t *created_at_ms,
                               const int64_t *updated_at_ms, const engram_opts_t *opts_in, engram_cb cb, void *ud) {
  engram_opts_t o = opts_in ? *opts_in : default_opts;
  engram_request_t *req;
  size_t i, len;
  char name[48];
  int rc;
  int64_t *fields;
  o.flags = 0;
  o.metadata = NULL;
  o.if_version = 0;
  {
    const engram_opts_t *op = &o;
    BEGIN(op, cb);
    if (entries == NULL || expires_at_ms == NULL || version == NULL || created_at_ms == NULL || updated_at_ms == NULL)
      return engram__error(ENGRAM_EINVAL, "%s: NULL", entries == NULL ? "entries" : expires_at_ms == NULL ? "expires_at_ms"
                           : version == NULL ? "version" : created_at_ms == NULL ? "created_at_ms" : "updated_at_ms");
    if (n == 0 || n > BATCH_MAX) return engram__error(ENGRAM_EINVAL, "n: %zu, must be 1..%d", n, BATCH_MAX);
    for (i = 0; i < n; i++) {
      int fault = string_fault(entries[i].key, 1, ENGRAM_KEY_MAX, &len);
      if (fault != STR_OK) {
        snprintf(name, sizeof name, "entries[%zu].key", i);
        return string_error(name, fault, entries[i].key, ENGRAM_KEY_MAX);
      }
      if (entries[i].value == NULL) return engram__error(ENGRAM_EINVAL, "entries[%zu].value: NULL", i);
      /* an object, or an object's text (a cJSON_Raw node: an import hands over the line's own text) */
      if (entries[i].metadata != NULL && !cJSON_IsObject(entries[i].metadata) &&
          !(cJSON_IsRaw(entries[i].metadata) && entries[i].metadata->valuestring != NULL &&
            entries[i].metadata->valuestring[0] == '{'))
        return engram__error(ENGRAM_EINVAL, "entries[%zu].metadata: must be a JSON object", i);
      if ((rc = check_entry_tree(i, "value", entries[i].value)) != 0) return rc;
      if ((rc = check_entry_tree(i, "metadata", entries[i].metadata)) != 0) return rc;
      if (version[i] == 0) return engram__error(ENGRAM_EINVAL, "version[%zu]: 0, must be >= 1", i);
      if (expires_at_ms[i] < 0 || created_at_ms[i] < 0 || updated_at_ms[i] < 0)
        return engram__error(ENGRAM_EINVAL, "entries[%zu]: a timestamp is negative", i);
    }
    if ((req = new_req(ENGRAM_OP_STORE_MANY, NULL, 0, opts, ns_len)) == NULL) return ENGRAM_ENOMEM;
    req->flags |= ENGRAM_REQ_REPLICA;
    /* expiries, versions, created, updated: one block, freed with the request as its expiries */
    req->priv->entries_owned = engram_calloc(n, sizeof(engram_entry_t));
    req->priv->expires_owned = fields = engram_malloc(4 * n * sizeof(int64_t));
    if (req->priv->entries_owned == NULL || fields == NULL) goto nomem;
    req->n = n;
    for (i = 0; i < n; i++)
      if ((req->priv->entries_owned[i].key = engram_strdup(entries[i].key)) == NULL) goto nomem;
    memcpy(fields, expires_at_ms, n * sizeof(int64_t));
    memcpy(fields + n, version, n * sizeof(int64_t));
    memcpy(fields + 2 * n, created_at_ms, n * sizeof(int64_t));
    memcpy(fields + 3 * n, updated_at_ms, n * sizeof(int64_t));
    for (i = 0; i < n; i++) { /* the trees are taken only once nothing can fail before the submit */
      engram_entry_t *e = &req->priv->entries_owned[i];
      e->value = entries[i].value;
      e->metadata = entries[i].metadata;
      e->has_ttl = expires_at_ms[i] != 0; /* a replica keeps its own expiry: no default TTL */
    }
    req->entries = req->priv->entries_owned;
    req->entry_expires_at_ms = fields;
    req->entry_version = (const uint64_t *)(fields + n);
    req->entry_created_at_ms = fields + 2 * n;
    req->entry_updated_at_ms = fields + 3 * n;
    if ((rc = submit_as(mgr, req, opts, cb, ud, 1)) != 0) return rc; /* refused: the trees stay the caller's */
    for (i = 0; i < n; i++) entries[i].value = entries[i].metadata = NULL;
    return 0;
  nomem:
    engram__request_unref(req);
    return engram__error(ENGRAM_ENOMEM, "out of memory copying the entries");
  }
}

int engram__store_replica(engram_manager_t *mgr, const char *key, cJSON *value, cJSON *metadata, int64_t expires_at_ms,
                          uint64_t version, int64_t created_at_ms, int64_t updated_at_ms, const engram_opts_t *opts_in,
                          engram_cb cb, void *ud) {
  int taken = 0;
  int rc = store_replica(mgr, key, value, metadata, expires_at_ms, version, created_at_ms, updated_at_ms, opts_in, cb,
                         ud, &taken);
  if (!taken) {
    cJSON_Delete(value);
    cJSON_Delete(metadata);
  }
  return rc;
}

int engram_clear(engram_manager_t *mgr, const engram_opts_t *opts_in, engram_cb cb, void *ud) {
  engram_request_t *req;
  BEGIN(opts_in, cb);
  if (opts->ns == NULL && !(opts->flags & ENGRAM_OPT_CONFIRM))
    return engram__error(ENGRAM_EINVAL,
                         "opts: clearing a whole source needs ENGRAM_OPT_CONFIRM; or name one namespace in opts.ns");
  if ((opts->flags & ENGRAM_OPT_NS_PREFIX) && ns_len == 0 && !(opts->flags & ENGRAM_OPT_CONFIRM))
    return engram__error(ENGRAM_EINVAL, "opts: clearing under the empty namespace prefix clears every namespace and "
                         "needs ENGRAM_OPT_CONFIRM");
  if ((req = new_req(ENGRAM_OP_CLEAR, NULL, 0, opts, ns_len)) == NULL) return ENGRAM_ENOMEM;
  /* No namespace, or the empty prefix: the whole source, which the backend clears in one call. */
  if (opts->ns == NULL || ((req->flags & ENGRAM_OPT_NS_PREFIX) && ns_len == 0)) {
    req->flags |= ENGRAM_REQ_ALL_NAMESPACES;
    req->flags &= ~(unsigned)ENGRAM_OPT_NS_PREFIX;
  }
  return submit(mgr, req, opts, cb, ud);
}

int engram_info(engram_manager_t *mgr, const engram_opts_t *opts_in, engram_cb cb, void *ud) {
  engram_request_t *req;
  BEGIN(opts_in, cb);
  if ((req = new_req(ENGRAM_OP_INFO, NULL, 0, opts, ns_len)) == NULL) return ENGRAM_ENOMEM;
  return submit(mgr, req, opts, cb, ud);
}

/* ---- Control operations ---- */

static int control(engram_manager_t *mgr, engram_request_t *req, engram_cb cb, void *ud, engram_cq_t *cq) {
  req->priv->cb = cb;
  req->priv->ud = ud;
  req->priv->cq = cq;
  if (atomic_load_explicit(&mgr->closed, memory_order_acquire)) {
    engram__request_unref(req);
    return engram__error(ENGRAM_ECLOSED, "manager: closed");
  }
  return engram__manager_control(mgr, req);
}

int engram__add_source_parsed(engram_manager_t *mgr, const char *name, const engram_source_vtable_t *vt,
                              cJSON *options, const char *description, int is_default, engram_cb cb, void *ud);

int engram__add_source_parsed(engram_manager_t *mgr, const char *name, const engram_source_vtable_t *vt,
                              cJSON *options, const char *description, int is_default, engram_cb cb, void *ud) {
  engram_request_t *req = engram__request_new(ENGRAM_OP_ADD_SOURCE, NULL, 0, NULL, 0);
  if (req == NULL) {
    cJSON_Delete(options);
    return engram__error(ENGRAM_ENOMEM, "out of memory");
  }
  req->value = options;
  req->priv->vtable_arg = vt;
  req->priv->flag_arg = is_default != 0;
  if ((req->priv->name_arg = engram_strdup(name)) == NULL ||
      (description != NULL && (req->priv->desc_arg = engram_strdup(description)) == NULL)) {
    engram__request_unref(req);
    return engram__error(ENGRAM_ENOMEM, "out of memory");
  }
  return control(mgr, req, cb, ud, NULL);
}

int engram_manager_add_source(engram_manager_t *mgr, const char *name, const engram_source_vtable_t *vtable,
                              const char *options_json, const char *description, int is_default, engram_cb cb,
                              void *ud) {
  cJSON *options;
  const char *end = NULL;
  engram__json_issue_t is;
  char msg[400];
  engram__error_clear();
  if (mgr == NULL) return engram__error(ENGRAM_EINVAL, "mgr: NULL");
  if (cb == NULL) return engram__error(ENGRAM_EINVAL, "cb: NULL");
  if (engram__source_args_check("", name, vtable, description) != 0) return ENGRAM_EINVAL;
  /* The text first: cJSON would cut a string at "\u0000" and keep bytes that are not UTF-8. */
  if (options_json != NULL && engram__json_text_check(options_json, strlen(options_json), "options_json", &is) != 0)
    return engram__error(ENGRAM_EINVAL, "%s", engram__json_issue_message(&is, "options_json", msg, sizeof msg));
  if (options_json == NULL) options = cJSON_CreateObject();
  else if ((options = cJSON_ParseWithOpts(options_json, &end, 1)) == NULL)
    options = cJSON_ParseWithOpts(options_json, &end, 1); /* cJSON reports an allocation failure as a syntax
                                                             error: a second attempt tells them apart */
  if (options == NULL) {
    if (options_json == NULL) return engram__error(ENGRAM_ENOMEM, "out of memory");
    return engram__error(ENGRAM_EINVAL, "options_json: malformed JSON near offset %ld",
                         (long)(cJSON_GetErrorPtr() ? cJSON_GetErrorPtr() - options_json : 0));
  }
  if (!cJSON_IsObject(options)) {
    cJSON_Delete(options);
    return engram__error(ENGRAM_EINVAL, "options_json: must be a JSON object");
  }
  if (engram__options_check("", vtable, options) != 0) {
    cJSON_Delete(options);
    return last_error_cleaned(ENGRAM_EINVAL); /* the backend's message may quote an option */
  }
  return engram__add_source_parsed(mgr, name, vtable, options, description, is_default, cb, ud);
}

/* 1 when name could be a source's (add_source's rule), so that a message may quote it. */
static int possible_source_name(const char *name) {
  size_t i;
  for (i = 0; name[i] != '\0'; i++) {
    char c = name[i];
    if (i == ENGRAM_SOURCE_NAME_MAX) return 0;
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
          c == '.'))
      return 0;
  }
  return i > 0;
}

int engram_manager_remove_source(engram_manager_t *mgr, const char *name, engram_cb cb, void *ud) {
  engram_request_t *req;
  engram__error_clear();
  if (mgr == NULL) return engram__error(ENGRAM_EINVAL, "mgr: NULL");
  if (cb == NULL) return engram__error(ENGRAM_EINVAL, "cb: NULL");
  if (name == NULL) return engram__error(ENGRAM_EINVAL, "name: NULL");
  if (!possible_source_name(name))
    return engram__error(ENGRAM_EINVAL, "name: no source can have it (a name is 1..%d bytes of [A-Za-z0-9_.-])",
                         ENGRAM_SOURCE_NAME_MAX);
  if ((req = engram__request_new(ENGRAM_OP_REMOVE_SOURCE, NULL, 0, NULL, 0)) == NULL)
    return engram__error(ENGRAM_ENOMEM, "out of memory");
  if ((req->priv->name_arg = engram_strdup(name)) == NULL) {
    engram__request_unref(req);
    return engram__error(ENGRAM_ENOMEM, "out of memory");
  }
  return control(mgr, req, cb, ud, NULL);
}

int engram_manager_list_sources(engram_manager_t *mgr, const engram_opts_t *opts, engram_cb cb, void *ud) {
  engram_request_t *req;
  engram__error_clear();
  if (mgr == NULL) return engram__error(ENGRAM_EINVAL, "mgr: NULL");
  if (cb == NULL) return engram__error(ENGRAM_EINVAL, "cb: NULL");
  if ((req = engram__request_new(ENGRAM_OP_LIST_SOURCES, NULL, 0, NULL, 0)) == NULL)
    return engram__error(ENGRAM_ENOMEM, "out of memory");
  return control(mgr, req, cb, ud, opts ? opts->cq : NULL);
}
