/*
 * tiered.c — the tiered source: one source made of other sources of the same manager, named in order from the
 * fastest to the durable one (LarAgent's chained drivers, bruno-core's hybrid memory), e.g. a cache in front of
 * SQLite or PostgreSQL. It stores nothing itself; every call becomes calls to its tiers through the source-call
 * service of include/engram/source.h (engram_source_call), and their answers come back on the home loop, where
 * this source's actor runs.
 *
 *   retrieve   tier by tier until a hit; a hit below the first tier is copied into the tiers above it with the
 *              item's value, metadata, version, timestamps and absolute expiry (read repair, ENGRAM_REQ_REPLICA),
 *              and the call is answered once those copies are written. When the first tier offers read_now (the
 *              cache) and nothing is under way on the key, it is read at once through engram_source_read_now,
 *              without a call of its own: a hit answers there (a hot key's read cost ~1.7 × the cache's alone
 *              through a call), a miss goes on at the second tier as usual.
 *   store      first to the last (durable) tier, which alone decides CREATE_ONLY and if_version; then the item
 *              it stored (its version and timestamps) is copied into every upper tier; answered once all tiers
 *              have it. An upper tier that fails the copy, or cannot take replicas, has its copy deleted
 *              (invalidated); if even that fails the call fails, saying so, so a stale copy is never hidden.
 *   delete     the durable tier, then every upper tier; answered when all are done.
 *   clear      every tier at once.
 *   search, count, list_keys   the search tier (option "search_tier", default the last), with the call's
 *              system-field ranges (ENGRAM_SOURCE_RANGES: the search tier must take them too) and the query
 *              whole, its mode, fusion and alpha included (ENGRAM_SOURCE_SEARCH_MODES: a vector or hybrid search
 *              reaches the search tier, and engram_source_call refuses it with ENGRAM_ENOTSUP when the source
 *              that tier names at that moment ranks by text only; the reply says "tier '<name>': ...").
 *   store_many, retrieve_many, delete_many, exists, update   left to the core's emulation, which runs them
 *              through the methods above (update: read → function → store conditional on the durable version).
 *
 * Calls on one key (namespace + key) run one at a time in arrival order, so a read repair can never write an
 * older value over a newer write, nor bring back a deleted key; a clear waits for the calls on keys before it
 * and holds back those after it. docs/tiered.md describes the semantics, the options and the failure rules.
 *
 * Coherence across processes (option "coherence", tiered_coherence.c's part of the story is here too): when the
 * durable tier offers an invalidation channel (engram_source_watch, include/engram/source.h), the tiered source
 * watches it. A change another process made drops the key from the upper tiers and bumps the key's epoch; a
 * copy (read repair or write-through) is made only when the channel was trusted — up, and the upper tiers
 * cleared since it came back — from the moment the durable call was sent until the copy, with no channel change
 * (generation) and no change of that key (epoch) in between; otherwise the upper copies are dropped instead.
 * While the channel is not trusted, reads skip the upper tiers and go to the durable one. Each time the channel
 * comes back (UP), the upper tiers are cleared whole, since changes may have been missed; only then is it trusted.
 */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "engram/source.h"

#define MAX_TIERS 8
/* Buckets of the key-lock table: with a thousand calls in flight 256 buckets made chains of four, and each lock
 * visited on them (to find a key, and to unlink it) was a cache miss — ~9 of a store's 61 D1 read misses on the
 * home loop (callgrind). 2,048 (16 KiB of heads) keep them under one. */
#define LOCK_BUCKETS 2048u
/* Finished ops and released key locks kept for the next calls, so that a call does not pay two mallocs and two
 * frees for them (with a thousand calls in flight, glibc's per-thread cache overflows and a free costs ~100
 * instructions). Each pool keeps as many as the source held at once (n_ops' high-water mark), at least POOL_MIN
 * and at most POOL_MAX: a fixed 256 emptied and overflowed with a thousand in flight (answers arrive in groups of
 * up to 256 from SQLite, new calls in between), an op and a lock allocated and freed for one store in eight. Key
 * locks of up to LOCK_TEXT bytes of namespace and key are pooled. */
#define POOL_MIN 256u
#define POOL_MAX 4096u
#define LOCK_TEXT 96u

typedef struct op_s op_t;

/* The calls on one key: the head holds it, the rest wait in arrival order. */
typedef struct klock_s {
  struct klock_s *next;
  op_t *head, *tail;
  uint32_t hash;
  uint32_t epoch;      /* bumped by every change another process made to this key (coherence) */
  int pooled;          /* data holds LOCK_TEXT bytes: back to the pool when released */
  size_t ns_len, key_len;
  char data[]; /* ns \0 key \0 */
} klock_t;

typedef struct {
  engram_source_t *src;
  size_t n;
  char *tiers[MAX_TIERS];
  size_t tier_len[MAX_TIERS], names_bytes; /* strlen of each name; their sum with terminators (tier_report) */
  size_t search_tier;
  klock_t *locks[LOCK_BUCKETS];
  size_t keyed_active; /* keyed calls past the gate: holding or waiting for their key */
  op_t *gate_head, *gate_tail; /* calls behind a clear, and clears waiting for the keyed calls before them */
  int clear_running;
  int draining;
  op_t *ready_head, *ready_tail; /* calls whose key came free, to start (iteratively: see start_ready) */
  int starting;
  size_t n_ops;        /* calls this source holds */
  op_t *op_pool;       /* finished ops, linked by next */
  klock_t *lock_pool;  /* released pooled key locks, linked by next */
  unsigned n_op_pool, n_lock_pool;
  unsigned pool_cap;   /* how many each pool keeps: n_ops' high-water mark, within POOL_MIN..POOL_MAX */
  int closing;
  int read_now0;       /* the first tier offered read_now at open (and has not refused it since): hits skip a call */
  unsigned char no_write_now[MAX_TIERS]; /* tier i refused the write-now service with ENOTSUP: copies are calls */
  /* counters for info */
  uint64_t hits[MAX_TIERS], misses, repairs, repair_failures, tier_read_errors, copy_failures, invalidations,
      invalidation_failures, reads_now;
  /* Coherence across processes (docs/tiered.md): the durable tier's invalidation channel. */
  int coherence;       /* COH_OFF, COH_AUTO or COH_NOTIFY, as configured */
  int coh_on;          /* watching (or trying to): the durable tier offers a channel and there are upper tiers */
  engram_watch_t *watch;  /* NULL: not watching (not yet, failed, or ended) */
  int chan_up;         /* the channel said UP and no DOWN since */
  int resyncing;       /* the upper tiers are being cleared after an UP */
  int resync_failed;   /* a clear failed: not trusted until the next UP */
  uint64_t gen;        /* bumped by every DOWN, ALL, END and UP: copies need the same generation throughout */
  uint64_t bypassed_reads, remote_invalidations, channel_downs, resyncs, fills_skipped, remote_failures;
} tiered_t;

enum { COH_AUTO = 0, COH_OFF, COH_NOTIFY };
#define GEN_NONE UINT64_MAX /* an op's gen0 when the channel was not trusted as its durable call left */

struct op_s {
  tiered_t *t;
  engram_request_t *req;
  klock_t *lock;
  op_t *next;               /* in a key's queue or in the gate */
  op_t *ready_next;         /* in the tiered source's ready list */
  int keyed, is_clear;
  size_t tier;              /* retrieve: the tier being read */
  size_t first_tier;        /* retrieve: where to start (1 when the first tier was read now and missed) */
  int pending;              /* calls out */
  int status;               /* the outcome so far */
  /* The item: a retrieve's hit, or what the durable tier stored. */
  int have_item;
  cJSON *value, *metadata;
  uint64_t version, count;
  int64_t created_at_ms, updated_at_ms, expires_at_ms;
  int stale_left;           /* an upper tier may still hold an old copy (its invalidation failed) */
  uint64_t gen0;            /* coherence: the channel's generation as the durable call left (GEN_NONE: untrusted) */
  uint32_t epoch0;          /* ... and the key's epoch */
  /* Writes (store, delete, clear): what happened on each tier, for the reply's info (docs/tiered.md). */
  int tier_status[MAX_TIERS];
  const char *tier_action[MAX_TIERS];
  char msg[256];            /* last: op_new zeroes what is before it, and only msg[0] of it */
};

/* Records what a write did on a tier: its action ("stored", "copied", "invalidated", ...) and the status. */
static void note(op_t *op, size_t tier, const char *action, int status) {
  if (tier >= MAX_TIERS) return;
  op->tier_action[tier] = action;
  op->tier_status[tier] = status;
}

static void op_start(op_t *op);
static void gate_drain(tiered_t *t);

/* ---- Options ---- */

static const char *const known_options[] = {"tiers", "search_tier", "coherence", NULL};

static int valid_name(const char *s) {
  size_t i;
  for (i = 0; s[i] != '\0'; i++) {
    char c = s[i];
    if (i == ENGRAM_SOURCE_NAME_MAX) return 0;
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
          c == '.'))
      return 0;
  }
  return i > 0;
}

/* Checks the options; fills names (borrowed from options) and the search tier's index when given. */
static int parse_options(const cJSON *options, const char **names, size_t *n, size_t *search, int *coherence,
                         char *err, size_t errlen) {
  const cJSON *tiers, *t;
  const char *search_name = NULL, *coh = NULL;
  size_t i, j;
  if (engram_opt_check_names(options, known_options, err, errlen) != 0) return ENGRAM_EINVAL;
  tiers = cJSON_GetObjectItemCaseSensitive(options, "tiers");
  if (tiers == NULL) {
    snprintf(err, errlen, "tiers: missing (an array naming the sources of this manager, fastest first)");
    return ENGRAM_EINVAL;
  }
  if (!cJSON_IsArray(tiers)) {
    snprintf(err, errlen, "tiers: must be an array of source names");
    return ENGRAM_EINVAL;
  }
  *n = 0;
  for (t = tiers->child; t != NULL; t = t->next) {
    if (*n == MAX_TIERS) {
      snprintf(err, errlen, "tiers: more than %d", MAX_TIERS);
      return ENGRAM_EINVAL;
    }
    if (!cJSON_IsString(t) || !valid_name(t->valuestring)) {
      snprintf(err, errlen, "tiers[%zu]: must be a source name (1..%d bytes of [A-Za-z0-9_.-])", *n,
               ENGRAM_SOURCE_NAME_MAX);
      return ENGRAM_EINVAL;
    }
    for (j = 0; j < *n; j++)
      if (strcmp(names[j], t->valuestring) == 0) {
        snprintf(err, errlen, "tiers[%zu]: \"%s\" is already tiers[%zu]", *n, t->valuestring, j);
        return ENGRAM_EINVAL;
      }
    names[(*n)++] = t->valuestring;
  }
  if (*n == 0) {
    snprintf(err, errlen, "tiers: empty (name at least one source, the durable one last)");
    return ENGRAM_EINVAL;
  }
  if (engram_opt_string(options, "search_tier", NULL, ENGRAM_SOURCE_NAME_MAX, &search_name, err, errlen) != 0)
    return ENGRAM_EINVAL;
  *search = *n - 1;
  if (search_name != NULL) {
    for (i = 0; i < *n && strcmp(names[i], search_name) != 0; i++) {
    }
    if (i == *n) {
      snprintf(err, errlen, "search_tier: \"%s\" is not one of the tiers", valid_name(search_name) ? search_name : "?");
      return ENGRAM_EINVAL;
    }
    *search = i;
  }
  if (engram_opt_string(options, "coherence", "auto", 16, &coh, err, errlen) != 0) return ENGRAM_EINVAL;
  if (strcmp(coh, "auto") == 0) *coherence = COH_AUTO;
  else if (strcmp(coh, "off") == 0) *coherence = COH_OFF;
  else if (strcmp(coh, "notify") == 0) *coherence = COH_NOTIFY;
  else {
    snprintf(err, errlen, "coherence: must be \"auto\", \"notify\" or \"off\"");
    return ENGRAM_EINVAL;
  }
  return 0;
}

static int tiered_check_options(const cJSON *options, char *err, size_t errlen) {
  const char *names[MAX_TIERS];
  size_t n, search;
  int coherence;
  return parse_options(options, names, &n, &search, &coherence, err, errlen);
}

/* ---- Key locks and the clear gate ---- */

static uint32_t hash_of(const char *ns, size_t ns_len, const char *key, size_t key_len) {
  uint32_t h = 2166136261u;
  size_t i;
  for (i = 0; i < ns_len; i++) h = (h ^ (unsigned char)ns[i]) * 16777619u;
  h = (h ^ 0xffu) * 16777619u;
  for (i = 0; i < key_len; i++) h = (h ^ (unsigned char)key[i]) * 16777619u;
  return h;
}

static uint32_t key_hash(const engram_request_t *req) { return hash_of(req->ns, req->ns_len, req->key, req->key_len); }

/* The lock of (ns, key) when a call on it is under way, else NULL. */
static klock_t *lock_find(tiered_t *t, const char *ns, size_t ns_len, const char *key, size_t key_len) {
  uint32_t h = hash_of(ns, ns_len, key, key_len);
  klock_t *l;
  for (l = t->locks[h & (LOCK_BUCKETS - 1)]; l != NULL; l = l->next)
    if (l->hash == h && l->ns_len == ns_len && l->key_len == key_len && memcmp(l->data, ns, ns_len) == 0 &&
        memcmp(l->data + l->ns_len + 1, key, key_len) == 0)
      return l;
  return NULL;
}

/* Queues op on its key; returns 1 when it holds the key now, 0 when it waits, ENGRAM_ENOMEM. */
static int lock_acquire(tiered_t *t, op_t *op) {
  engram_request_t *req = op->req;
  uint32_t h = key_hash(req);
  klock_t **pp = &t->locks[h & (LOCK_BUCKETS - 1)], *l;
  for (l = *pp; l != NULL; l = l->next)
    if (l->hash == h && l->ns_len == req->ns_len && l->key_len == req->key_len &&
        memcmp(l->data, req->ns, req->ns_len) == 0 && memcmp(l->data + l->ns_len + 1, req->key, req->key_len) == 0)
      break;
  op->lock = NULL;
  if (l == NULL) {
    size_t text = req->ns_len + req->key_len + 2;
    if (text <= LOCK_TEXT && t->lock_pool != NULL) {
      l = t->lock_pool;
      t->lock_pool = l->next;
      t->n_lock_pool--;
    } else if ((l = engram_malloc(sizeof *l + (text <= LOCK_TEXT ? LOCK_TEXT : text))) == NULL) {
      return ENGRAM_ENOMEM;
    }
    l->pooled = text <= LOCK_TEXT;
    l->hash = h;
    l->epoch = 0;
    l->ns_len = req->ns_len;
    l->key_len = req->key_len;
    memcpy(l->data, req->ns, req->ns_len);
    l->data[req->ns_len] = '\0';
    memcpy(l->data + req->ns_len + 1, req->key, req->key_len);
    l->data[req->ns_len + 1 + req->key_len] = '\0';
    l->head = l->tail = op;
    l->next = *pp;
    *pp = l;
    op->lock = l;
    op->next = NULL;
    return 1;
  }
  op->lock = l;
  op->next = NULL;
  l->tail->next = op;
  l->tail = op;
  return 0;
}

/* Releases op's key; returns the next call on it (now its holder, not yet started) or NULL. */
static op_t *lock_release(tiered_t *t, op_t *op) {
  klock_t *l = op->lock, **pp;
  op_t *next;
  op->lock = NULL;
  if (l == NULL) return NULL;
  next = op->next;
  l->head = next;
  if (next != NULL) return next;
  for (pp = &t->locks[l->hash & (LOCK_BUCKETS - 1)]; *pp != l; pp = &(*pp)->next) {
  }
  *pp = l->next;
  if (l->pooled && t->n_lock_pool < t->pool_cap) {
    l->next = t->lock_pool;
    t->lock_pool = l;
    t->n_lock_pool++;
  } else {
    engram_free(l);
  }
  return NULL;
}

/* A keyed call past the gate: take its key or queue on it. */
static void admit_keyed(tiered_t *t, op_t *op);

static void gate_push(tiered_t *t, op_t *op) {
  op->next = NULL;
  if (t->gate_tail) t->gate_tail->next = op;
  else t->gate_head = op;
  t->gate_tail = op;
}

/* Lets through what the gate holds: keyed calls up to the next clear, and that clear once the keyed calls
 * before it have ended. */
static void gate_drain(tiered_t *t) {
  op_t *op;
  if (t->draining) return;
  t->draining = 1;
  while ((op = t->gate_head) != NULL && !t->clear_running) {
    if (op->is_clear && t->keyed_active > 0) break;
    t->gate_head = op->next;
    if (t->gate_head == NULL) t->gate_tail = NULL;
    op->next = NULL;
    if (op->is_clear) {
      t->clear_running = 1;
      op_start(op);
    } else {
      admit_keyed(t, op);
    }
  }
  t->draining = 0;
}

/* Starts op once no other start is under way on the stack. A tier that answers at once (the cache, started
 * directly by the source-call service) finishes a call inside its own start, and that finish starts the next call
 * on the key: started recursively, a queue of a thousand calls on one hot key would nest a thousand times. */
static void start_ready(tiered_t *t, op_t *op) {
  op->ready_next = NULL;
  if (t->ready_tail) t->ready_tail->ready_next = op;
  else t->ready_head = op;
  t->ready_tail = op;
  if (t->starting) return;
  t->starting = 1;
  while ((op = t->ready_head) != NULL) {
    t->ready_head = op->ready_next;
    if (t->ready_head == NULL) t->ready_tail = NULL;
    op_start(op);
  }
  t->starting = 0;
}

/* ---- Finishing a call ---- */

static void op_free(op_t *op) {
  tiered_t *t = op->t;
  cJSON_Delete(op->value);
  cJSON_Delete(op->metadata);
  if (t->n_op_pool < t->pool_cap && !t->closing) {
    op->next = t->op_pool;
    t->op_pool = op;
    t->n_op_pool++;
  } else {
    engram_free(op);
  }
}

/* A zeroed op, from the pool when it has one. */
static op_t *op_new(tiered_t *t) {
  op_t *op = t->op_pool;
  if (op == NULL) return engram_calloc(1, sizeof *op);
  t->op_pool = op->next;
  t->n_op_pool--;
  memset(op, 0, offsetof(op_t, msg));
  op->msg[0] = '\0';
  return op;
}

static void free_pools(tiered_t *t) {
  op_t *op;
  klock_t *l;
  while ((op = t->op_pool) != NULL) {
    t->op_pool = op->next;
    engram_free(op);
  }
  while ((l = t->lock_pool) != NULL) {
    t->lock_pool = l->next;
    engram_free(l);
  }
  t->n_op_pool = t->n_lock_pool = 0;
}

static void free_names(tiered_t *t);

static void maybe_closed(tiered_t *t) {
  if (t->closing && t->n_ops == 0 && t->watch == NULL) {
    t->closing = 0;
    free_names(t);
    free_pools(t);
    engram_source_closed(t->src);
  }
}

/* Adds the op's item to the reply (retrieve: with the value; metadata as the caller asked), handing over the
 * op's value and metadata (the op ends next: no second copy). */
static int reply_item(op_t *op, int with_value) {
  engram_request_t *req = op->req;
  engram_item_t it;
  memset(&it, 0, sizeof it);
  it.key = req->key;
  it.ns = req->ns;
  if (with_value) {
    it.value = op->value;
    op->value = NULL;
  }
  if (!with_value || (req->flags & ENGRAM_OPT_INCLUDE_METADATA)) {
    it.metadata = op->metadata;
    op->metadata = NULL;
  }
  it.version = op->version;
  it.created_at_ms = op->created_at_ms;
  it.updated_at_ms = op->updated_at_ms;
  it.expires_at_ms = op->expires_at_ms;
  it.score = 1.0;
  return engram_reply_add(req, &it, ENGRAM_REPLY_OWN_VALUE | ENGRAM_REPLY_OWN_METADATA);
}

/* The reply's info of a write: {"tiers": [{"name", "action", "status"}, ...]} in tier order, status as
 * engram_err_name gives it ("ENGRAM_OK" for 0). The whole tree is built in one allocation — its 2 + 4 × tiers
 * nodes, then the tiers' names — with the root flagged cJSON_IsReference, so that cJSON_Delete of the root frees
 * the block whole and leaves its children alone (the cache's reply trees do the same, sources/cache/cache_image.c;
 * a reply is borrowed for the callback, so nobody unlinks a node of it). The keys and the action and status
 * strings are static. Built with cJSON calls it was ten allocations and ten frees a store on the home loop
 * (~2,600 instructions of 13,500); the JSON it prints and reads is the same. Returns 0 or ENGRAM_ENOMEM.
 * info_node takes the next node of the block, zeroed, and appends it to parent's children (last: their last). */
static cJSON *info_node(cJSON **next, cJSON *parent, cJSON **last, int type, const char *key) {
  cJSON *n = (*next)++;
  memset(n, 0, sizeof *n);
  n->type = type | (key != NULL ? cJSON_StringIsConst : 0);
  n->string = (char *)key;
  if (*last == NULL) parent->child = n;
  else {
    (*last)->next = n;
    n->prev = *last;
  }
  *last = n;
  parent->child->prev = n; /* cJSON keeps the last child in the first one's prev */
  return n;
}

static int tier_report(op_t *op) {
  tiered_t *t = op->t;
  size_t i, nodes = 2 + 4 * t->n, len;
  cJSON *root, *arr, *e, *next, *last, *elast, *v;
  char *str;
  if ((root = cJSON_malloc(nodes * sizeof(cJSON) + t->names_bytes)) == NULL) return ENGRAM_ENOMEM;
  str = (char *)(root + nodes);
  memset(root, 0, sizeof *root);
  root->type = cJSON_Object | cJSON_IsReference;
  next = root + 1;
  last = NULL;
  arr = info_node(&next, root, &last, cJSON_Array, "tiers");
  last = NULL;
  for (i = 0; i < t->n; i++) {
    e = info_node(&next, arr, &last, cJSON_Object, NULL);
    elast = NULL;
    v = info_node(&next, e, &elast, cJSON_String | cJSON_IsReference, "name");
    len = t->tier_len[i];
    memcpy(str, t->tiers[i], len + 1);
    v->valuestring = str;
    str += len + 1;
    v = info_node(&next, e, &elast, cJSON_String | cJSON_IsReference, "action");
    v->valuestring = (char *)(op->tier_action[i] ? op->tier_action[i] : "none");
    v = info_node(&next, e, &elast, cJSON_String | cJSON_IsReference, "status");
    v->valuestring = (char *)(op->tier_status[i] ? engram_err_name(op->tier_status[i]) : "ENGRAM_OK");
  }
  engram_reply_set_info(op->req, root);
  return 0;
}

/* Ends op with status (its message in op->msg when not 0) and lets the next calls run. */
static void op_finish(op_t *op, int status) {
  tiered_t *t = op->t;
  engram_request_t *req = op->req;
  op_t *next = NULL;
  int was_clear = op->is_clear;
  if (op->keyed) {
    next = lock_release(t, op);
    t->keyed_active--;
  }
  if (was_clear) t->clear_running = 0;
  t->n_ops--;
  req->backend_data = NULL;
  if (status == 0 && op->have_item && (req->op == ENGRAM_OP_RETRIEVE || req->op == ENGRAM_OP_STORE) &&
      reply_item(op, req->op == ENGRAM_OP_RETRIEVE) != 0)
    status = ENGRAM_ENOMEM;
  if (status == 0 && req->op == ENGRAM_OP_DELETE) engram_reply_set_count(req, op->count);
  if ((req->op == ENGRAM_OP_STORE || req->op == ENGRAM_OP_DELETE || req->op == ENGRAM_OP_CLEAR) &&
      tier_report(op) != 0 && status == 0)
    status = ENGRAM_ENOMEM;
  if (status == 0 || status == ENGRAM_ENOMEM) engram_request_complete(req, status);
  else if (status == ENGRAM_ENOTFOUND && req->op == ENGRAM_OP_RETRIEVE) engram_request_fail_not_found(req, NULL);
  else if (status == ENGRAM_EEXIST && req->op == ENGRAM_OP_STORE) engram_request_fail_exists(req, NULL);
  else if (status == ENGRAM_ECONFLICT && req->op == ENGRAM_OP_STORE)
    engram_request_fail_conflict(req, NULL, req->if_version);
  else engram_request_fail(req, status, "%s", op->msg[0] ? op->msg : engram_strerror(status));
  op_free(op);
  if (next != NULL) start_ready(t, next);
  if (was_clear || t->keyed_active == 0) gate_drain(t);
  maybe_closed(t);
}

/* Records a tier's failure as the op's outcome: "tier 'name': <its message>". */
static void op_error(op_t *op, int status, const char *tier, const char *message) {
  op->status = status;
  snprintf(op->msg, sizeof op->msg, "tier '%s': %s", tier, message && message[0] ? message : engram_strerror(status));
}

/* ---- Calls to tiers ---- */

static void call_init(engram_source_call_t *c, op_t *op, engram_op_t what, int with_deadline) {
  engram_request_t *req = op->req;
  memset(c, 0, sizeof *c);
  c->op = what;
  c->key = req->key;
  c->ns = req->ns;
  c->now_ms = req->now_ms;
  c->deadline = with_deadline ? engram_request_deadline(req) : 0;
}

/* Sends a call; on a refusal at once, cb is run with the refusal (so every path ends in one place). */
static void send_call(op_t *op, size_t tier, const engram_source_call_t *c, engram_cb cb) {
  int rc;
  op->pending++;
  if ((rc = engram_source_call(op->t->src, op->t->tiers[tier], c, cb, op)) != 0) {
    engram_reply_t r;
    char msg[256];
    if (rc == ENGRAM_EUNKNOWN_SOURCE) engram_source_set_health(op->t->src, ENGRAM_HEALTH_DOWN); /* a tier is gone */
    memset(&r, 0, sizeof r);
    snprintf(msg, sizeof msg, "%s", engram_last_error());
    r.op = c->op;
    r.message = msg;
    r.source = op->t->tiers[tier];
    cb(rc == ENGRAM_ECLOSED ? ENGRAM_ECANCELED : rc, &r, op);
  }
}

/* Which tier a reply came from: the callback's reply names it. */
static size_t tier_of(tiered_t *t, const engram_reply_t *reply) {
  size_t i;
  for (i = 0; reply->source != NULL && i < t->n; i++)
    if (strcmp(t->tiers[i], reply->source) == 0) return i;
  return 0;
}

/* ---- Invalidation: deleting an upper tier's copy ---- */

static void after_writes(op_t *op);

static void invalidated(int status, const engram_reply_t *reply, void *ud) {
  op_t *op = ud;
  tiered_t *t = op->t;
  size_t tier = tier_of(t, reply);
  if (op->req->op == ENGRAM_OP_DELETE) note(op, tier, status == 0 ? "deleted" : "failed", status);
  else if (tier < MAX_TIERS) /* "invalidated" keeps the status of the copy that failed, when one did */
    note(op, tier, status == 0 ? "invalidated" : "stale", status == 0 ? op->tier_status[tier] : status);
  if (status == 0) {
    t->invalidations++;
  } else {
    t->invalidation_failures++;
    if (!op->stale_left && op->req->op != ENGRAM_OP_RETRIEVE) { /* a read keeps its item: it wrote nothing */
      op->stale_left = 1;
      op->status = status;
      snprintf(op->msg, sizeof op->msg, "tier '%s' may still hold an old copy (deleting it failed: %s)",
               reply->source ? reply->source : "?", reply->message);
    }
  }
  if (--op->pending == 0) after_writes(op);
}

static void invalidate(op_t *op, size_t tier) {
  engram_source_call_t c;
  call_init(&c, op, ENGRAM_OP_DELETE, 0);
  send_call(op, tier, &c, invalidated);
}

/* ---- Coherence across processes: the durable tier's invalidation channel ---- */

/* May the upper tiers be trusted now? Always without coherence; with it, while the channel is up and the
 * upper tiers were cleared since it came back. */
static int trusted(const tiered_t *t) { return !t->coh_on || (t->chan_up && !t->resyncing && !t->resync_failed); }

/* Notes the channel's generation and the key's epoch as op's call to the tier whose answer it may copy leaves. */
static void mark_sent(op_t *op) {
  tiered_t *t = op->t;
  op->gen0 = trusted(t) ? t->gen : GEN_NONE;
  op->epoch0 = op->lock != NULL ? op->lock->epoch : 0;
}

/* May op copy what it read or stored into the upper tiers? Only when nothing could have been missed since its
 * call left: trusted then and now, the same channel generation, and no change of its key reported since. */
static int fill_ok(const op_t *op) {
  const tiered_t *t = op->t;
  if (!t->coh_on) return 1;
  return op->gen0 != GEN_NONE && trusted(t) && t->gen == op->gen0 && op->lock != NULL && op->lock->epoch == op->epoch0;
}

/* A call of the tiered source's own (a remote invalidation, a resync), not of a user's call: counted in n_ops so
 * that close waits for it; a refusal at once runs cb with it. */
static void side_call(tiered_t *t, size_t tier, const engram_source_call_t *c, engram_cb cb) {
  int rc;
  t->n_ops++;
  if ((rc = engram_source_call(t->src, t->tiers[tier], c, cb, t)) != 0) {
    engram_reply_t r;
    memset(&r, 0, sizeof r);
    r.op = c->op;
    r.message = "";
    r.source = t->tiers[tier];
    cb(rc, &r, t);
  }
}

static void resynced(int status, const engram_reply_t *reply, void *ud) {
  tiered_t *t = ud;
  (void)reply;
  t->n_ops--;
  if (status != 0) t->resync_failed = 1; /* not trusted until the next UP */
  t->resyncing--;
  maybe_closed(t);
}

/* The channel is (back) up: changes may have been missed, so every upper tier is cleared whole; the upper tiers
 * are trusted again once every clear succeeded. */
static void resync(tiered_t *t) {
  engram_source_call_t c;
  size_t i;
  t->gen++;
  t->resyncs++;
  t->resync_failed = 0;
  memset(&c, 0, sizeof c);
  c.op = ENGRAM_OP_CLEAR;
  c.flags = ENGRAM_REQ_ALL_NAMESPACES;
  t->resyncing++; /* while the clears are sent (one may answer at once) */
  for (i = 0; i + 1 < t->n; i++) {
    t->resyncing++;
    side_call(t, i, &c, resynced);
  }
  t->resyncing--;
}

static void remote_deleted(int status, const engram_reply_t *reply, void *ud) {
  tiered_t *t = ud;
  (void)reply;
  t->n_ops--;
  if (status != 0 && status != ENGRAM_ENOTFOUND) {
    /* The copy may still be there: trust nothing until the next UP clears the upper tiers. */
    t->remote_failures++;
    t->resync_failed = 1;
    t->gen++;
  }
  maybe_closed(t);
}

/* Another process changed (ns, key): a call on the key under way must not copy what it read before, and the
 * upper tiers drop their copies. */
static void remote_key(tiered_t *t, const engram_watch_event_t *ev) {
  char ns[ENGRAM_NAMESPACE_MAX + 1], key[ENGRAM_KEY_MAX + 1];
  engram_source_call_t c;
  klock_t *l;
  size_t i;
  t->remote_invalidations++;
  if (ev->key_len == 0 || ev->key_len > ENGRAM_KEY_MAX || ev->ns_len > ENGRAM_NAMESPACE_MAX ||
      memchr(ev->key, 0, ev->key_len) != NULL || (ev->ns_len > 0 && memchr(ev->ns, 0, ev->ns_len) != NULL)) {
    t->gen++; /* not a key the upper tiers can hold by that name: drop everything */
    if (t->chan_up) resync(t);
    return;
  }
  if ((l = lock_find(t, ev->ns, ev->ns_len, ev->key, ev->key_len)) != NULL) l->epoch++;
  memcpy(ns, ev->ns, ev->ns_len);
  ns[ev->ns_len] = '\0';
  memcpy(key, ev->key, ev->key_len);
  key[ev->key_len] = '\0';
  memset(&c, 0, sizeof c);
  c.op = ENGRAM_OP_DELETE;
  c.key = key;
  c.ns = ns;
  for (i = 0; i + 1 < t->n; i++) side_call(t, i, &c, remote_deleted);
}

static void on_watch(const engram_watch_event_t *ev, void *ud) {
  tiered_t *t = ud;
  switch (ev->kind) {
    case ENGRAM_WATCH_UP:
      t->chan_up = 1;
      resync(t);
      break;
    case ENGRAM_WATCH_DOWN:
      if (t->chan_up) t->channel_downs++;
      t->chan_up = 0;
      t->gen++;
      break;
    case ENGRAM_WATCH_KEY:
      remote_key(t, ev);
      break;
    case ENGRAM_WATCH_ALL:
      t->gen++;
      if (t->chan_up) resync(t);
      break;
    case ENGRAM_WATCH_END:
      if (t->chan_up) t->channel_downs++;
      t->watch = NULL;
      t->chan_up = 0;
      t->gen++;
      maybe_closed(t);
      break;
  }
}

/* Watches the durable tier when coherence is on and no watch is running (at open; again at a later call when
 * the watch ended or could not start — the tier was removed and added again, memory ran out). */
static void try_watch(tiered_t *t) {
  if (!t->coh_on || t->watch != NULL || t->closing || t->n < 2) return;
  if (engram_source_watch(t->src, t->tiers[t->n - 1], on_watch, t, &t->watch) != 0) t->watch = NULL;
}

static const char *coherence_state(const tiered_t *t) {
  if (!t->coh_on) return "off";
  if (!t->chan_up) return "down";
  if (t->resyncing) return "resyncing";
  if (t->resync_failed) return "stale";
  return "up";
}

/* ---- Copies into upper tiers (read repair, write-through) ---- */

/* What a copy into an upper tier came to (through a call or written now): counted, and a failed copy's old value
 * deleted. */
static void copy_result(op_t *op, size_t tier, int status) {
  tiered_t *t = op->t;
  if (op->req->op == ENGRAM_OP_RETRIEVE) {
    if (status == 0) t->repairs++;
    else if (status != ENGRAM_ENOTSUP) t->repair_failures++;
  } else {
    note(op, tier, status == 0 ? "copied" : "copy failed", status);
    if (status != 0 && status != ENGRAM_ENOTSUP) t->copy_failures++;
  }
  if (status != 0) invalidate(op, tier); /* never leave an old copy behind a failed one */
}

static void copied(int status, const engram_reply_t *reply, void *ud) {
  op_t *op = ud;
  copy_result(op, tier_of(op->t, reply), status);
  if (--op->pending == 0) after_writes(op);
}

/* take: hand op's value over to the call (the last copy of a store: the value is not needed after it). */
static void copy_to(op_t *op, size_t tier, int take) {
  engram_source_call_t c;
  call_init(&c, op, ENGRAM_OP_STORE, 0);
  c.flags = ENGRAM_REQ_REPLICA;
  c.value = op->value;
  if (take) {
    c.flags |= ENGRAM_CALL_TAKE_VALUE;
    op->value = NULL;
  }
  c.metadata = op->metadata;
  c.expires_at_ms = op->expires_at_ms;
  c.version = op->version;
  c.created_at_ms = op->created_at_ms;
  c.updated_at_ms = op->updated_at_ms;
  send_call(op, tier, &c, copied);
}

/* A copy into an upper tier: written at once through the write-now service (include/engram/source.h) when the
 * tier can take it now — the op holds its key, so nothing else of this source is under way on it, and the service
 * refuses when calls wait at the tier — else sent as a call (copy_to). Through a call the copy cost a request
 * of its own on the home loop, the bound of a tiered store's throughput (docs/tiered.md, Costs). */
static void copy_up(op_t *op, size_t tier, int take) {
  tiered_t *t = op->t;
  if (tier < MAX_TIERS && !t->no_write_now[tier]) {
    engram_source_call_t c;
    int rc;
    call_init(&c, op, ENGRAM_OP_STORE, 0);
    c.flags = ENGRAM_REQ_REPLICA;
    c.value = op->value;
    c.metadata = op->metadata;
    c.expires_at_ms = op->expires_at_ms;
    c.version = op->version;
    c.created_at_ms = op->created_at_ms;
    c.updated_at_ms = op->updated_at_ms;
    rc = engram_source_write_now(t->src, t->tiers[tier], &c);
    if (rc == 0 || rc == ENGRAM_ENOMEM || rc == ENGRAM_ETOOBIG || rc == ENGRAM_EINVAL) {
      copy_result(op, tier, rc); /* written, or the tier failed it: done either way */
      return;
    }
    if (rc == ENGRAM_ENOTSUP) t->no_write_now[tier] = 1; /* that name stands for a source without it: stop asking */
    /* EBUSY, ENOTSUP, a tier gone, the manager closing: the call says what happens */
  }
  copy_to(op, tier, take);
}

/* Every copy and invalidation of a retrieve or a write is back: answer. */
static void after_writes(op_t *op) {
  op_finish(op, op->status);
}

/* ---- retrieve ---- */

static void retrieve_step(op_t *op);

/* The system fields of a tier's answer. */
static void take_fields(op_t *op, const engram_item_t *it) {
  op->version = it->version;
  op->created_at_ms = it->created_at_ms;
  op->updated_at_ms = it->updated_at_ms;
  op->expires_at_ms = it->expires_at_ms;
  op->have_item = 1;
}

/* A read's hit: the item's fields, and its value and metadata taken from the tier's reply (not copied: the reply
 * is the sub-call's, freed after this callback — the copy it saves was a third of a hot-key read). */
static int take_item(op_t *op, const engram_reply_t *reply) {
  cJSON_Delete(op->value);
  cJSON_Delete(op->metadata);
  op->value = engram_reply_take_value(reply, 0);
  op->metadata = engram_reply_take_metadata(reply, 0);
  take_fields(op, &reply->items[0]);
  /* A value kept in one block (the cache's) is copied, not moved: that copy can run out of memory. */
  return (op->value == NULL && reply->items[0].value != NULL) ||
                 (op->metadata == NULL && reply->items[0].metadata != NULL)
             ? ENGRAM_ENOMEM
             : 0;
}

static void retrieved(int status, const engram_reply_t *reply, void *ud) {
  op_t *op = ud;
  tiered_t *t = op->t;
  size_t i, hit = op->tier;
  op->pending--;
  if (status == 0 && reply->n_items > 0) {
    t->hits[hit]++;
    if (take_item(op, reply) != 0) {
      op_error(op, ENGRAM_ENOMEM, t->tiers[hit], "out of memory copying the tier's value");
      op_finish(op, ENGRAM_ENOMEM);
      return;
    }
    op->status = 0;
    if (hit == 0 || engram_request_answered(op->req)) {
      op_finish(op, 0);
      return;
    }
    if (!fill_ok(op)) { /* the channel was not trusted, or the key changed elsewhere, since the read left */
      t->fills_skipped++;
      op_finish(op, 0);
      return;
    }
    op->pending++; /* while the copies are sent */
    for (i = 0; i < hit; i++) copy_up(op, i, 0); /* the value also answers the read */
    if (--op->pending == 0) after_writes(op);
    return;
  }
  if (status == 0) status = ENGRAM_EBACKEND; /* a hit without an item */
  if (status != ENGRAM_ENOTFOUND) {
    if (hit + 1 == t->n || engram_request_answered(op->req)) {
      op_error(op, status, t->tiers[hit], reply->message);
      op_finish(op, status);
      return;
    }
    t->tier_read_errors++; /* an upper tier that cannot answer is passed over */
  }
  op->tier++;
  if (op->tier == t->n || engram_request_answered(op->req)) {
    t->misses++;
    op_finish(op, ENGRAM_ENOTFOUND);
    return;
  }
  retrieve_step(op);
}

static void retrieve_step(op_t *op) {
  engram_source_call_t c;
  mark_sent(op);
  call_init(&c, op, ENGRAM_OP_RETRIEVE, 1);
  c.flags = ENGRAM_OPT_INCLUDE_METADATA;
  send_call(op, op->tier, &c, retrieved);
}

/* ---- store ---- */

/* The durable tier answered: copy what it stored upward, or (when it may have changed) drop the upper copies. */
static void stored_durable(int status, const engram_reply_t *reply, void *ud) {
  op_t *op = ud;
  tiered_t *t = op->t;
  engram_request_t *req = op->req;
  size_t i;
  op->pending--;
  note(op, t->n - 1, status == 0 ? "stored" : "failed", status);
  if (status == 0) engram_source_set_health(t->src, ENGRAM_HEALTH_CONNECTED);
  if (status == 0) {
    if (reply->n_items == 0) {
      op_finish(op, ENGRAM_EBACKEND);
      return;
    }
    take_fields(op, &reply->items[0]); /* version and timestamps as the durable tier stored them */
    /* The value and metadata the caller gave, taken from its request (stored: nothing reads them there again,
     * and the durable call that borrowed them is done — a 0 answer comes only after the tier completed it)
     * rather than copied: the copies go up with them, and the reply carries the metadata. */
    op->value = engram_request_take_value(req);
    op->metadata = engram_request_take_metadata(req);
    if (op->expires_at_ms == 0) op->expires_at_ms = req->expires_at_ms;
    op->status = 0;
    op->pending++;
    if (fill_ok(op)) {
      for (i = 0; i + 1 < t->n; i++) copy_up(op, i, i + 2 == t->n); /* a last copy sent as a call takes the value */
    } else { /* changes may have been missed since the store left: drop the upper copies instead */
      t->fills_skipped++;
      for (i = 0; i + 1 < t->n; i++) invalidate(op, i);
    }
    if (--op->pending == 0) after_writes(op);
    return;
  }
  op_error(op, status, t->tiers[t->n - 1], reply->message);
  if (status == ENGRAM_EEXIST || status == ENGRAM_ECONFLICT || status == ENGRAM_EINVAL || status == ENGRAM_ETOOBIG ||
      status == ENGRAM_EUNKNOWN_SOURCE || status == ENGRAM_EBUSY || t->n == 1) {
    op_finish(op, status); /* refused: nothing was written */
    return;
  }
  /* Timed out, cancelled, a backend error: the write may have happened; no upper tier may keep the old value. */
  op->pending++;
  for (i = 0; i + 1 < t->n; i++) invalidate(op, i);
  if (--op->pending == 0) after_writes(op);
}

/* ---- delete ---- */

static void deleted_durable(int status, const engram_reply_t *reply, void *ud) {
  op_t *op = ud;
  tiered_t *t = op->t;
  size_t i;
  op->pending--;
  note(op, t->n - 1, status == 0 ? "deleted" : "failed", status);
  if (status == 0) op->count = reply->count;
  else op_error(op, status, t->tiers[t->n - 1], reply->message);
  if (status == ENGRAM_EUNKNOWN_SOURCE || status == ENGRAM_EBUSY) {
    op_finish(op, status);
    return;
  }
  op->pending++;
  for (i = 0; i + 1 < t->n; i++) invalidate(op, i);
  if (--op->pending == 0) after_writes(op);
}

/* ---- clear: every tier ---- */

static void cleared(int status, const engram_reply_t *reply, void *ud) {
  op_t *op = ud;
  tiered_t *t = op->t;
  size_t tier = tier_of(t, reply);
  note(op, tier, status == 0 ? "cleared" : "failed", status);
  if (tier + 1 == t->n && status == 0) op->count = reply->count;
  if (status != 0 && (op->status == 0 || tier + 1 == t->n)) op_error(op, status, t->tiers[tier], reply->message);
  if (--op->pending == 0) {
    if (op->status == 0) engram_reply_set_count(op->req, op->count);
    op_finish(op, op->status);
  }
}

/* ---- search, count, list_keys, info: the search tier ---- */

static void routed(int status, const engram_reply_t *reply, void *ud) {
  op_t *op = ud;
  tiered_t *t = op->t;
  engram_request_t *req = op->req;
  size_t i;
  op->pending--;
  if (status != 0) {
    op_error(op, status, t->tiers[t->search_tier], reply->message);
    op_finish(op, status);
    return;
  }
  for (i = 0; i < reply->n_items; i++)
    if (engram_reply_add(req, &reply->items[i], 0) != 0) {
      op_finish(op, ENGRAM_ENOMEM);
      return;
    }
  engram_reply_set_count(req, reply->count);
  if (reply->cursor != NULL && engram_reply_set_cursor(req, reply->cursor) != 0) {
    op_finish(op, ENGRAM_ENOMEM);
    return;
  }
  op_finish(op, 0);
}

static void info_counted(int status, const engram_reply_t *reply, void *ud) {
  op_t *op = ud;
  tiered_t *t = op->t;
  cJSON *o = cJSON_CreateObject(), *arr, *hits;
  size_t i;
  int ok = o != NULL;
  op->pending--;
  ok = ok && (arr = cJSON_AddArrayToObject(o, "tiers")) != NULL;
  for (i = 0; ok && i < t->n; i++) ok = cJSON_AddItemToArray(arr, cJSON_CreateString(t->tiers[i]));
  ok = ok && cJSON_AddStringToObject(o, "search_tier", t->tiers[t->search_tier]) != NULL;
  if (ok && status == 0) ok = cJSON_AddNumberToObject(o, "items", (double)reply->count) != NULL;
  ok = ok && (hits = cJSON_AddArrayToObject(o, "read_hits")) != NULL;
  for (i = 0; ok && i < t->n; i++) ok = cJSON_AddItemToArray(hits, cJSON_CreateNumber((double)t->hits[i]));
  ok = ok && cJSON_AddNumberToObject(o, "read_misses", (double)t->misses) != NULL;
  ok = ok && cJSON_AddNumberToObject(o, "reads_now", (double)t->reads_now) != NULL;
  ok = ok && cJSON_AddNumberToObject(o, "read_repairs", (double)t->repairs) != NULL;
  ok = ok && cJSON_AddNumberToObject(o, "read_repair_failures", (double)t->repair_failures) != NULL;
  ok = ok && cJSON_AddNumberToObject(o, "tier_read_errors", (double)t->tier_read_errors) != NULL;
  ok = ok && cJSON_AddNumberToObject(o, "copy_failures", (double)t->copy_failures) != NULL;
  ok = ok && cJSON_AddNumberToObject(o, "invalidations", (double)t->invalidations) != NULL;
  ok = ok && cJSON_AddNumberToObject(o, "invalidation_failures", (double)t->invalidation_failures) != NULL;
  ok = ok && cJSON_AddStringToObject(o, "coherence", coherence_state(t)) != NULL;
  ok = ok && cJSON_AddNumberToObject(o, "bypassed_reads", (double)t->bypassed_reads) != NULL;
  ok = ok && cJSON_AddNumberToObject(o, "remote_invalidations", (double)t->remote_invalidations) != NULL;
  ok = ok && cJSON_AddNumberToObject(o, "remote_invalidation_failures", (double)t->remote_failures) != NULL;
  ok = ok && cJSON_AddNumberToObject(o, "channel_downs", (double)t->channel_downs) != NULL;
  ok = ok && cJSON_AddNumberToObject(o, "resyncs", (double)t->resyncs) != NULL;
  ok = ok && cJSON_AddNumberToObject(o, "copies_skipped", (double)t->fills_skipped) != NULL;
  if (!ok) {
    cJSON_Delete(o);
    op_finish(op, ENGRAM_ENOMEM);
    return;
  }
  if (status != 0) {
    char msg[300];
    snprintf(msg, sizeof msg, "tier '%s': %s", t->tiers[t->search_tier], reply->message);
    cJSON_AddStringToObject(o, "items_error", msg);
  }
  engram_reply_set_info(op->req, o);
  op_finish(op, 0);
}

/* ---- Starting a call ---- */

static void op_start(op_t *op) {
  tiered_t *t = op->t;
  engram_request_t *req = op->req;
  engram_source_call_t c;
  size_t i;
  if (engram_request_answered(req)) { /* cancelled or timed out while it waited */
    op_finish(op, ENGRAM_ECANCELED);
    return;
  }
  switch (req->op) {
    case ENGRAM_OP_RETRIEVE:
      op->tier = op->first_tier;
      if (!trusted(t)) { /* coherence: the channel is down or catching up: the durable tier answers */
        op->tier = t->n - 1;
        if (t->n > 1) t->bypassed_reads++;
      }
      retrieve_step(op);
      break;
    case ENGRAM_OP_STORE:
      call_init(&c, op, ENGRAM_OP_STORE, 1);
      /* The value and metadata are lent from req, not copied: the call holds req until the durable tier is done
       * with them, even when a deadline answers first (ENGRAM_CALL_BORROW_VALUE; stored_durable takes them back
       * once the tier answered 0). The copy was ~1,060 instructions a store on the home loop, the bound. */
      c.flags = (req->flags & ENGRAM_OPT_CREATE_ONLY) | ENGRAM_CALL_BORROW_VALUE;
      c.lender = req;
      c.value = req->value;
      c.metadata = req->metadata;
      c.expires_at_ms = req->expires_at_ms;
      c.if_version = req->if_version;
      mark_sent(op);
      send_call(op, t->n - 1, &c, stored_durable);
      break;
    case ENGRAM_OP_DELETE:
      call_init(&c, op, ENGRAM_OP_DELETE, 1);
      send_call(op, t->n - 1, &c, deleted_durable);
      break;
    case ENGRAM_OP_CLEAR:
      call_init(&c, op, ENGRAM_OP_CLEAR, 1);
      c.key = NULL;
      c.flags = req->flags & ENGRAM_REQ_ALL_NAMESPACES;
      if (c.flags) c.ns = NULL;
      op->pending++;
      for (i = 0; i < t->n; i++) send_call(op, i, &c, cleared);
      if (--op->pending == 0) op_finish(op, op->status);
      break;
    case ENGRAM_OP_SEARCH:
    case ENGRAM_OP_COUNT:
    case ENGRAM_OP_LIST_KEYS:
      call_init(&c, op, req->op, 1);
      c.key = NULL;
      c.flags = req->flags & (ENGRAM_REQ_ALL_NAMESPACES | ENGRAM_OPT_RANGES);
      c.created_at = req->created_at; /* system-field ranges: the search tier applies them */
      c.updated_at = req->updated_at;
      c.expires_at = req->expires_at;
      c.query = &req->query;
      c.cursor = req->cursor;
      send_call(op, t->search_tier, &c, routed);
      break;
    case ENGRAM_OP_INFO: {
      engram_query_t q = ENGRAM_QUERY_INIT;
      call_init(&c, op, ENGRAM_OP_COUNT, 1);
      c.key = NULL;
      q.limit = 0;
      c.query = &q;
      send_call(op, t->search_tier, &c, info_counted);
      break;
    }
    default:
      snprintf(op->msg, sizeof op->msg, "operation %d is not handled by a tiered source", (int)req->op);
      op_finish(op, ENGRAM_ENOTSUP);
      break;
  }
}

/* A retrieve read from the first tier at once (engram_source_read_now, include/engram/source.h) when nothing could
 * come between: no clear running or waiting, no call on the key under way (so the read keeps its place after every
 * write on the key, and no read repair is in flight), the upper tiers trusted (coherence), the call still open.
 * The first tier's own read_now runs only when a call sent to it now would start at once, so it too keeps order.
 * Returns 0 when the hit answered req, 1 on a miss (the call goes on at the second tier), -1 when the read could
 * not be made (the call takes the usual path). */
static int read_first_now(tiered_t *t, engram_request_t *req) {
  int rc;
  /* No keyed call past the gate, no key lock (locks live only while such calls do): the lookup is skipped. */
  if (t->gate_head != NULL || t->clear_running || !trusted(t) || engram_request_answered(req) ||
      (t->keyed_active != 0 && lock_find(t, req->ns, req->ns_len, req->key, req->key_len) != NULL))
    return -1;
  rc = engram_source_read_now(t->src, t->tiers[0], req);
  if (rc == 0) {
    t->hits[0]++;
    t->reads_now++;
    engram_request_complete(req, 0);
    return 0;
  }
  if (rc == ENGRAM_ENOTFOUND) return 1;
  if (rc == ENGRAM_ENOTSUP) t->read_now0 = 0; /* the name stands for a source without it now: stop asking */
  return -1;
}

static void admit_keyed(tiered_t *t, op_t *op) {
  int rc;
  t->keyed_active++;
  rc = lock_acquire(t, op);
  if (rc == 1) op_start(op);
  else if (rc < 0) {
    op->keyed = 0; /* holds no key */
    t->keyed_active--;
    op_finish(op, ENGRAM_ENOMEM);
  }
}

/* Every method: wrap the request in an op and let it in (keyed calls one at a time per key; clears alone). */
static void tiered_submit(engram_source_t *src, engram_request_t *req) {
  tiered_t *t = engram_source_state(src);
  op_t *op;
  size_t first = 0;
  if (t->n == 0) { /* closed (the core's emulation sends nothing new once a call is cancelled; a guard) */
    engram_request_complete(req, ENGRAM_ECANCELED);
    return;
  }
  if (t->coh_on && t->watch == NULL) try_watch(t);
  /* A clear or a remote deletion failed (a full mailbox, say): clear again, rather than bypass the upper tiers
   * until the channel happens to come back. */
  if (t->coh_on && t->chan_up && t->resync_failed && !t->resyncing) resync(t);
  if (req->op == ENGRAM_OP_RETRIEVE && t->read_now0) {
    int rc = read_first_now(t, req);
    if (rc == 0) return; /* answered */
    if (rc == 1 && t->n == 1) {
      t->misses++;
      engram_request_fail_not_found(req, NULL);
      return;
    }
    first = rc == 1; /* a miss: the call starts at the second tier */
  }
  op = op_new(t);
  if (op == NULL) {
    engram_request_complete(req, ENGRAM_ENOMEM);
    return;
  }
  op->t = t;
  op->req = req;
  op->first_tier = first;
  op->keyed = req->op == ENGRAM_OP_RETRIEVE || req->op == ENGRAM_OP_STORE || req->op == ENGRAM_OP_DELETE;
  op->is_clear = req->op == ENGRAM_OP_CLEAR;
  req->backend_data = op;
  if (++t->n_ops > t->pool_cap && t->pool_cap < POOL_MAX) t->pool_cap = (unsigned)t->n_ops;
  if (op->keyed) {
    if (t->gate_head != NULL || t->clear_running) gate_push(t, op);
    else admit_keyed(t, op);
  } else if (op->is_clear) {
    gate_push(t, op);
    gate_drain(t);
  } else {
    op_start(op);
  }
}

/* ---- Lifecycle ---- */

static void free_names(tiered_t *t) {
  size_t i;
  for (i = 0; i < t->n; i++) engram_free(t->tiers[i]);
  t->n = 0;
}

static void tiered_open(engram_source_t *src, const cJSON *options) {
  tiered_t *t = engram_source_state(src);
  const engram_source_vtable_t *vt;
  const char *names[MAX_TIERS];
  char err[300];
  size_t n, search, i;
  int coherence;
  t->src = src;
  t->pool_cap = POOL_MIN;
  if (parse_options(options, names, &n, &search, &coherence, err, sizeof err) != 0) {
    engram_source_opened(src, ENGRAM_EINVAL, "%s", err);
    return;
  }
  for (i = 0; i < n; i++) {
    if (strcmp(names[i], engram_source_name(src)) == 0) {
      engram_source_opened(src, ENGRAM_EINVAL, "tiers[%zu]: \"%s\" names this tiered source itself", i, names[i]);
      return;
    }
    if ((vt = engram_source_vtable_of(src, names[i])) == NULL) {
      engram_source_opened(src, ENGRAM_EINVAL,
                           "tiers[%zu]: no source named \"%s\" in this manager (add the tiers before the tiered source)",
                           i, names[i]);
      return;
    }
    if (vt->open == tiered_open) { /* also a copy of the vtable under another type name */
      engram_source_opened(src, ENGRAM_EINVAL,
                           "tiers[%zu]: \"%s\" is itself a tiered source (tiers do not nest, so they never form a cycle)",
                           i, names[i]);
      return;
    }
  }
  for (i = 0; i < n; i++) {
    if ((t->tiers[i] = engram_strdup(names[i])) == NULL) {
      t->n = i;
      free_names(t);
      engram_source_opened(src, ENGRAM_ENOMEM, NULL);
      return;
    }
    t->n = i + 1;
    t->tier_len[i] = strlen(names[i]);
  }
  for (t->names_bytes = 0, i = 0; i < n; i++) t->names_bytes += t->tier_len[i] + 1;
  t->search_tier = search;
  t->coherence = coherence;
  vt = engram_source_vtable_of(src, names[0]);
  t->read_now0 = vt != NULL && vt->version >= 4 && vt->read_now != NULL;
  t->coh_on = coherence != COH_OFF && n > 1 && engram_source_can_watch(src, names[n - 1]);
  if (coherence == COH_NOTIFY && n > 1 && !t->coh_on) {
    vt = engram_source_vtable_of(src, names[n - 1]);
    free_names(t);
    engram_source_opened(src, ENGRAM_EINVAL,
                         "coherence: \"notify\" needs a durable tier with an invalidation channel (postgres, redis); "
                         "tiers[%zu] \"%s\" (%s) has none", n - 1, names[n - 1], vt ? vt->name : "?");
    return;
  }
  engram_source_opened(src, 0, NULL);
  try_watch(t); /* until its first UP the upper tiers are not trusted: reads go to the durable tier */
}

static void tiered_close(engram_source_t *src) {
  tiered_t *t = engram_source_state(src);
  t->closing = 1;
  /* Calls still held finish as their tiers answer (the core already answered them ECANCELED), and the watch
   * ends with its END (maybe from inside unwatch); the last of them reports the source closed. */
  if (t->watch != NULL) engram_source_unwatch(t->watch);
  maybe_closed(t);
}

static void tiered_retrieve(engram_source_t *src, engram_request_t *req) { tiered_submit(src, req); }

const engram_source_vtable_t engram_source_tiered = {
    .version = ENGRAM_SOURCE_VTABLE_VERSION,
    .name = "tiered",
    .instance_size = sizeof(tiered_t),
    /* SEARCH_MODES: truthful because the search tier decides at each call (see the header). */
    .flags = ENGRAM_SOURCE_RANGES | ENGRAM_SOURCE_SEARCH_MODES,
    .open = tiered_open,
    .close = tiered_close,
    .store = tiered_submit,
    .retrieve = tiered_retrieve,
    .search = tiered_submit,
    .del = tiered_submit,
    .list_keys = tiered_submit,
    .count = tiered_submit,
    .clear = tiered_submit,
    .info = tiered_submit,
    .check_options = tiered_check_options,
};
