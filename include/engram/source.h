/*
 * engram/source.h — the backend contract: what a memory source implements and the services the core offers it.
 *
 * A source is a versioned vtable (as SQLite's virtual tables: `version`, then function pointers appended over
 * versions, never reordered) plus per-instance state of `instance_size` bytes that the core allocates zeroed.
 * The core calls the methods only on the source's actor thread, one at a time: the home loop for non-blocking
 * backends, or a thread of the source's own (ENGRAM_SOURCE_OWN_THREAD) for blocking or CPU-bound ones. A method
 * may finish later; the core keeps up to max_inflight requests open per source. Each request is finished by
 * exactly one engram_request_complete() on the actor thread, after the backend filled the reply.
 *
 * Required: open, store, retrieve, search, del, list_keys. Optional (the core emulates each one left NULL from
 * the required ones): close, store_many, retrieve_many, delete_many, count, exists, update, clear, info.
 */
#ifndef ENGRAM_SOURCE_H
#define ENGRAM_SOURCE_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "../engram.h"
#include "events.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The contract's current version. Version 2 appended check_options, version 3 watch and unwatch (the
 * invalidation channel), version 4 read_now (reads answered at once for a composite source), version 5 write_now
 * (a composite source's copies written at once), version 6 prefetch (a hint at a retrieve's submission). A backend
 * built against an older header sets an older version (its struct is shorter), and the core never reads a slot
 * past that version. */
#define ENGRAM_SOURCE_VTABLE_VERSION 6 /* 6: prefetch */

typedef struct engram_source_s engram_source_t;
typedef struct engram_request_s engram_request_t;
typedef struct engram_watch_event_s engram_watch_event_t;
/* The invalidation channel's callback (see "Invalidation channel" below). */
typedef void (*engram_watch_cb)(const engram_watch_event_t *ev, void *ud);
typedef struct engram_request_private_s engram_request_private_t;

/* engram_source_vtable_t.flags */
enum {
  ENGRAM_SOURCE_OWN_THREAD = 1u << 0, /* run this source's actor on a thread and loop of its own */
  ENGRAM_SOURCE_REPLICA = 1u << 1,    /* store honours ENGRAM_REQ_REPLICA (writes an item exactly as given) */
  /* search, count and list_keys honour the system-field ranges (ENGRAM_OPT_RANGES, req->created_at ...); the
   * core refuses calls with ranges to a source without it (ENGRAM_ENOTSUP), so an older backend never returns
   * unfiltered results */
  ENGRAM_SOURCE_RANGES = 1u << 2,
  /* search honours query.mode ENGRAM_MODE_VECTOR and ENGRAM_MODE_HYBRID (with query.fusion and query.alpha);
   * the core refuses those modes to a source without it (ENGRAM_ENOTSUP at the call). Every source ranks by text,
   * so ENGRAM_MODE_TEXT and ENGRAM_MODE_DEFAULT reach every source. */
  ENGRAM_SOURCE_SEARCH_MODES = 1u << 3,
  /* update applies req->writes (the writes that ride on an update, see engram_update_writes_t) in the same atomic
   * step as the new value: all of them or none, with the update. Without it the core makes them after the update
   * succeeded and before the call is answered (one store_many and one delete_many through this source), which
   * keeps their order but not their atomicity. */
  ENGRAM_SOURCE_UPDATE_WRITES = 1u << 4,
  /* list_keys honours ENGRAM_REQ_LIST_ITEMS (a page of whole items in one ordered scan, for the export). Only a
   * flag: no slot is added, so the vtable version stays; a source without it is never sent the request flag (the
   * core's export then lists keys and reads them with retrieve_many, as before). */
  ENGRAM_SOURCE_LIST_ITEMS = 1u << 5,
  /* store_many honours ENGRAM_REQ_REPLICA: each entry written exactly as given, with its version and timestamps
   * from req->entry_version, entry_created_at_ms and entry_updated_at_ms (the batched form of a replica store, for
   * the import). Only a flag, as above; the core sends such a store_many to no source without it (a caller then
   * makes single replica stores, as before). Requires ENGRAM_SOURCE_REPLICA and a store_many of the source's own.
   * An entry's value and metadata may come as cJSON_Raw nodes holding text that engram_json_is_canonical accepts
   * (the import hands over the line's own text): store that text as the tree's printed form (SQLite does), or parse
   * it (engram_json_parse) where a tree is needed. */
  ENGRAM_SOURCE_REPLICA_MANY = 1u << 6,
  /* Every call is answered inside the method that received it, in the actor's turn (an in-process table: the
   * cache). Only a hint, as above: the conversation layer keeps two appends of one thread in flight on such a source
   * (an update there costs no round trip, and a merged one would wait a loop turn more) and one elsewhere, merging
   * the rest (docs/conversations.md, Appends to one thread in flight together). */
  ENGRAM_SOURCE_ANSWERS_AT_ONCE = 1u << 7,
  /* search honours ENGRAM_REQ_ORDER_LIMIT (below): an ordered call's search that carries its order and how many
   * items the page needs (req->order, query.limit), so that the backend answers only the best query.limit matches
   * in that order instead of every match, and builds replies only for those. Only a flag, as above: a source
   * without it is never sent the request flag (the core then asks for every match and sorts them, as before). */
  ENGRAM_SOURCE_ORDER_LIMIT = 1u << 8
};

/*
 * Writes that ride on an update (conversation appends: the thread's head is the updated item, the messages the
 * stores, the messages a trim drops the deletes). They belong to the updated item's namespace. The core sets
 * req->writes each time engram_request_run_update succeeds — the user function produced them with the new value,
 * so they may differ from one run to the next — and NULL when the update carries none. Stores are plain upserts
 * (no create-only, no version check) of store[i].key / value / metadata (NULL or an object) expiring at
 * store_expires_at_ms[i] (absolute Unix ms, 0 = never; the source's default_ttl_ms already applied); the backend
 * reports each one's new version in store_version[i] (0 = unknown). Deletes remove delete_keys[i] when present;
 * the backend reports how many live items went in deleted. Everything here is owned by the core: read it, never
 * take or free it. A backend with ENGRAM_SOURCE_UPDATE_WRITES makes them atomically with the update; a failed
 * write fails the update (nothing of it stays).
 */
typedef struct {
  size_t n_store;
  const engram_entry_t *store;
  const int64_t *store_expires_at_ms;
  uint64_t *store_version;     /* out, n_store slots */
  size_t n_delete;
  const char *const *delete_keys;
  uint64_t deleted;            /* out */
} engram_update_writes_t;

/* Health reported in info (engram_source_set_health). */
typedef enum { ENGRAM_HEALTH_CONNECTED = 0, ENGRAM_HEALTH_RECONNECTING, ENGRAM_HEALTH_DOWN } engram_health_t;

/* Request flags beyond the public ENGRAM_OPT_* ones (engram_request_t.flags). */
enum {
  ENGRAM_REQ_ALL_NAMESPACES = 1u << 16, /* list_keys: every namespace (items carry their ns); core's clear emulation */
  /* store (and store_many for a source with ENGRAM_SOURCE_REPLICA_MANY: every entry, with req->entry_version,
   * entry_created_at_ms and entry_updated_at_ms): write the item exactly as given — value, metadata, expires_at_ms and the system fields version,
   * created_at_ms and updated_at_ms of the request (replicas: a tiered source's read repair and write-through).
   * No CREATE_ONLY or if_version check applies. Sent only to sources whose vtable flags carry
   * ENGRAM_SOURCE_REPLICA (engram_source_call refuses the others with ENGRAM_ENOTSUP). */
  ENGRAM_REQ_REPLICA = 1u << 17,
  /* engram_source_call only (never set on a request): a store's call->value is handed over instead of copied —
   * the call frees it whatever engram_source_call returns, and the caller must not use it afterwards. */
  ENGRAM_CALL_TAKE_VALUE = 1u << 18,
  /* engram_source_call only (ENGRAM_SOURCE_CALL_VERSION 4; never set on a request): a store's call->value and
   * call->metadata are borrowed, not copied, from the request call->lender — they must be lender's own (its
   * req->value / req->metadata, which a request frees with itself) or otherwise live as long as it, unchanged.
   * The call holds a reference on lender until the target is done with the call: after cb ran AND after the
   * target completed it, whichever is later (a deadline or a close can answer the call while the target, maybe
   * on another thread, still reads the value). So lender's block may outlive its own answer, and is then freed
   * on the thread that drops the last reference. Once cb ran with status 0 the target has finished: the caller
   * may then take the value and metadata out of lender (engram_request_take_value) and use or free them. */
  ENGRAM_CALL_BORROW_VALUE = 1u << 21,
  /* retrieve_many, set only by the core's export (engram_export): the caller prints value and metadata as JSON
   * text and never reads them as trees, so a backend that keeps JSON text may hand over, instead of a parsed tree,
   * a cJSON_Raw node (cJSON_CreateRaw) holding exactly the bytes cJSON_PrintUnformatted prints for that tree —
   * compact, numbers and escapes as cJSON writes them — when it can vouch for that form (SQLite: text that
   * engram_json_is_canonical accepts; anything else is parsed as usual). Ignoring the flag is always right. */
  ENGRAM_REQ_JSON_TEXT = 1u << 19,
  /* list_keys, set only by the core's export and only for a source whose vtable flags carry
   * ENGRAM_SOURCE_LIST_ITEMS: each listed item is added whole, as retrieve_many with ENGRAM_OPT_INCLUDE_METADATA
   * would add it — key, ns, value (never NULL), metadata, version, created/updated/expires — in the listing's
   * usual order, with the usual cursor and limit, and the same live-row rules (pattern, ranges, expiry); an item
   * whose stored value cannot be read (text that is not JSON) is left out, as retrieve_many would answer it as that
   * key's error and the export writes only what it read. It
   * comes with ENGRAM_REQ_JSON_TEXT and ENGRAM_OPT_INCLUDE_METADATA, so value and metadata may be cJSON_Raw text
   * under the rules above. One ordered range scan replaces a listing plus a primary-key lookup per key. */
  ENGRAM_REQ_LIST_ITEMS = 1u << 20,
  /* search, set only by the core on the search it sends for an ordered call (opts.order_by, src/actor/order.c):
   * offset 0 and a limit above ENGRAM_ORDER_MAX, and the core sorts the items that come back itself — so a
   * search without text may add its matches in any order instead of the usual key order (the cache skips its
   * sort of every match by key: 19 % of a thread-list page of 4,000 heads, docs/conversations.md). A text or
   * vector search still ranks by score (the limit may cut). Ignoring the flag is always right. */
  ENGRAM_REQ_ANY_ORDER = 1u << 22,
  /* search, set only by the core on the search it sends for an ordered call (src/actor/order.c) to a source whose
   * vtable flags carry ENGRAM_SOURCE_ORDER_LIMIT, and only when the query has no text and no vector (comes with
   * ENGRAM_REQ_ANY_ORDER; offset 0). The order is req->order (engram_req_order_t): by req->order.by's field
   * (created_at_ms, updated_at_ms, or 0 for every item under ENGRAM_ORDER_KEY), ties by (namespace, key) as
   * engram_key_cmp orders them, the whole tuple reversed when req->order.desc — the total order engram_order_cmp
   * gives. Of the matches (namespace, pattern, filter, ranges, expiry: as any search), the backend
   *   - counts every one and reports that number with engram_reply_set_count (the core refuses more than
   *     ENGRAM_ORDER_MAX with ENGRAM_ETOOBIG, as it does for a source that sends them all);
   *   - leaves out those at or before req->order's position when req->order.has_after (an ordered listing's
   *     cursor): engram_order_cmp(&req->order, item..., position...) <= 0;
   *   - adds to the reply exactly the first query.limit of the rest in the order (all of them when fewer), with
   *     value and metadata as its search adds them, in any order (the core sorts them: k items, not every match).
   * The cache keeps a bounded heap of query.limit entries while it scans: O(matches) comparisons and query.limit
   * reply items instead of a reply item for every match (docs/writing-a-source.md). */
  ENGRAM_REQ_ORDER_LIMIT = 1u << 23
};

/*
 * The order an ordered call's search carries to a source with ENGRAM_SOURCE_ORDER_LIMIT (req->order, read only
 * with ENGRAM_REQ_ORDER_LIMIT in req->flags; zeroed otherwise). The position's strings are borrowed from the
 * request (the core's), ns and key not NUL-terminated.
 */
typedef struct {
  int by;                          /* ENGRAM_ORDER_KEY, ENGRAM_ORDER_CREATED_AT or ENGRAM_ORDER_UPDATED_AT */
  int desc;                        /* non-zero: descending (the whole (field, namespace, key) tuple reversed) */
  int has_after;                   /* non-zero: answer only items after this position in the order */
  int64_t after_ms;                /* the position's field value (Unix epoch ms; 0 under ENGRAM_ORDER_KEY) */
  const char *after_ns, *after_key; /* the position's namespace and key */
  size_t after_ns_len, after_key_len;
} engram_req_order_t;

/*
 * The one comparison of ordered calls (the core's sort, and a source honouring ENGRAM_REQ_ORDER_LIMIT): item a
 * (its field value av — created_at_ms, updated_at_ms, or 0 under ENGRAM_ORDER_KEY — namespace and key, lengths
 * in bytes) against item b in order o: < 0 when a comes first, 0 when the tuples are equal, > 0 otherwise. By
 * value, then (namespace, key) as engram_key_cmp, all reversed when o->desc. Reads only o->desc. Any thread.
 */
ENGRAM_EXPORT int engram_order_cmp(const engram_req_order_t *o, int64_t av, const char *a_ns, size_t a_ns_len,
                                   const char *a_key, size_t a_key_len, int64_t bv, const char *b_ns, size_t b_ns_len,
                                   const char *b_key, size_t b_key_len);

struct engram_source_call_s; /* engram_source_call_t, below (write_now) */

struct engram_source_vtable_s {
  int version;          /* ENGRAM_SOURCE_VTABLE_VERSION */
  const char *name;     /* the type name shown in info ("cache") */
  size_t instance_size; /* bytes of per-instance state (engram_source_state) */
  unsigned flags;       /* ENGRAM_SOURCE_* */

  /* version 1 */
  /* Parses options (a JSON object, never NULL) and connects; finishes with engram_source_opened(). */
  void (*open)(engram_source_t *src, const cJSON *options);
  /* Completes (engram_request_complete) every request it still holds, releases everything, then calls
   * engram_source_closed(). The core has already answered those requests with ENGRAM_ECANCELED. */
  void (*close)(engram_source_t *src);
  void (*store)(engram_source_t *src, engram_request_t *req);
  void (*retrieve)(engram_source_t *src, engram_request_t *req);
  void (*search)(engram_source_t *src, engram_request_t *req);
  void (*del)(engram_source_t *src, engram_request_t *req);
  void (*list_keys)(engram_source_t *src, engram_request_t *req);
  void (*store_many)(engram_source_t *src, engram_request_t *req);
  void (*retrieve_many)(engram_source_t *src, engram_request_t *req);
  void (*delete_many)(engram_source_t *src, engram_request_t *req);
  void (*count)(engram_source_t *src, engram_request_t *req);
  void (*exists)(engram_source_t *src, engram_request_t *req);
  void (*update)(engram_source_t *src, engram_request_t *req);
  void (*clear)(engram_source_t *src, engram_request_t *req);
  void (*info)(engram_source_t *src, engram_request_t *req);

  /* version 2 */
  /* Optional. Checks options (a JSON object, never NULL) without opening anything: 0, or ENGRAM_EINVAL with a
   * message naming the option in err (errlen bytes). engram_manager_add_source and engram_manager_configure
   * call it at once, on the caller's thread, so a bad option is refused before the call returns (the call then
   * returns ENGRAM_EINVAL, engram_last_error() gives the message, and no callback follows). Any thread; must not
   * touch instance state. open() must still accept exactly what this accepts. */
  int (*check_options)(const cJSON *options, char *err, size_t errlen);

  /* version 3 */
  /* Optional, both or neither: the invalidation channel (see "Invalidation channel" below). watch starts
   * reporting the changes other processes make to this source's store to cb(ev, ud): 0 with *handle set (the
   * backend's, opaque to the core), or ENGRAM_ENOMEM / ENGRAM_ECLOSED (closing) and no callback. unwatch stops
   * it; END follows (possibly before unwatch returns). Actor thread (the home loop). */
  int (*watch)(engram_source_t *src, engram_watch_cb cb, void *ud, void **handle);
  void (*unwatch)(engram_source_t *src, void *handle);

  /* version 4 */
  /* Optional, for a backend on the home loop that can read an item without waiting (the cache): the read-now
   * service's method (engram_source_read_now below; a tiered source's hot-key read without a call of its own).
   * req is another source's retrieve request (op ENGRAM_OP_RETRIEVE; key, ns, now_ms and flags set), whose reply
   * belongs to that source: on a hit the backend adds the item to req's reply exactly as its retrieve would
   * (engram_reply_add: value, metadata only when req->flags has ENGRAM_OPT_INCLUDE_METADATA, version, timestamps,
   * expiry) and returns 0; on a miss it adds nothing and returns ENGRAM_ENOTFOUND; on any other failure
   * (ENGRAM_ENOMEM) it adds nothing and returns the code. It must not complete req, keep it, or use its
   * backend_data; it may announce what it removes on the way (an expired item), as its retrieve does. The core
   * calls it only on the backend's actor thread — the home loop — and only when a call sent now would start at
   * once (the source is open and nothing waits in its mailbox or backlog), so the read keeps its place after
   * every call sent to the source before. Not counted in the source's call statistics. */
  int (*read_now)(engram_source_t *src, engram_request_t *req);

  /* version 5 */
  /* Optional, for a backend on the home loop that can write an item without waiting (the cache): the write-now
   * service's method (engram_source_write_now below; a tiered source's write-through copy without a call of its
   * own). c is a replica store (op ENGRAM_OP_STORE, flags with ENGRAM_REQ_REPLICA; key, ns, value, metadata,
   * expires_at_ms, version, created_at_ms, updated_at_ms, now_ms set, all borrowed for the call): the backend
   * writes the item exactly as given, as its store of that replica would, and returns 0, or a code (ENGRAM_ENOMEM,
   * ENGRAM_ETOOBIG, ENGRAM_EINVAL) having written nothing. It keeps nothing of c. The core calls it only on the
   * home loop, only when a call sent now would start at once, and only when that call's completion would do nothing
   * more than answer (no change-event subscriber in the manager, no max_items_per_namespace on the source); it
   * counts the write in the source's call statistics. */
  int (*write_now)(engram_source_t *src, const struct engram_source_call_s *c);

  /* version 6 */
  /* Optional hint, for a backend on the home loop whose reads wait on memory (the cache's table): req, a retrieve
   * just accepted for this source (key, ns, flags, now_ms set), is about to be queued; the backend may start
   * loading what its retrieve of req will touch first (__builtin_prefetch of a hash bucket), so that the load
   * runs while earlier calls are served. It must not change anything, keep req or use its backend_data. Called
   * only on the home loop, for a call made in a callback the home loop runs. */
  void (*prefetch)(engram_source_t *src, const engram_request_t *req);
};

/*
 * A request as the backend sees it. The core owns every field; the backend reads them, may take value and
 * metadata (engram_request_take_*), uses backend_data freely while it holds the request, and fills the reply
 * through the engram_reply_* functions. Strings are NUL-terminated and validated UTF-8.
 */
struct engram_request_s {
  engram_op_t op;
  unsigned flags;           /* ENGRAM_OPT_* | ENGRAM_REQ_* */
  const char *key;          /* single-key operations */
  size_t key_len;
  const char *ns;           /* namespace, "" by default */
  size_t ns_len;
  cJSON *value;             /* store: the value (owned by the request until taken) */
  cJSON *metadata;          /* store: the metadata object or NULL */
  int64_t now_ms;           /* wall clock (Unix epoch ms) when the request was submitted */
  int64_t expires_at_ms;    /* store: absolute expiry (now_ms + ttl_ms) or 0 = never; update: the new expiry when
                             * flags has ENGRAM_OPT_TTL, else ignored (the item keeps its own) */
  uint64_t if_version;      /* store: ≠ 0 → conditional on the current version */
  engram_query_t query;     /* search, count; list_keys uses query.pattern and query.limit */
  const char *cursor;       /* list_keys: NULL or the cursor of the previous page */
  size_t n;                 /* batches: number of keys / entries */
  const char *const *keys;  /* retrieve_many, delete_many: n keys */
  engram_entry_t *entries;  /* store_many: n entries, metadata and TTL already resolved (ttl → expires) */
  int64_t *entry_expires_at_ms; /* store_many: n absolute expiries (0 = never) */
  engram_update_fn update_fn;   /* update: the user function (a native update must call it) */
  void *update_ud;
  void *backend_data;       /* free for the backend while it holds the request */
  engram_request_private_t *priv; /* the core's */
  /* Appended with the source-call service (ENGRAM_SOURCE_CALL_VERSION 1): store with ENGRAM_REQ_REPLICA only. */
  uint64_t version;         /* the item's version, ≥ 1 */
  int64_t created_at_ms;    /* Unix epoch ms */
  int64_t updated_at_ms;
  /* Appended with the system-field ranges: search, count, list_keys, each set when its ENGRAM_OPT_*_RANGE flag is
   * in flags (validated: 0 ≤ min_ms ≤ max_ms). engram_request_in_ranges applies all of them. */
  engram_range_t created_at, updated_at, expires_at;
  /* Appended with the writes that ride on an update: NULL, or set by engram_request_run_update (see
   * engram_update_writes_t and ENGRAM_SOURCE_UPDATE_WRITES). */
  engram_update_writes_t *writes;
  /* Appended with the batched replica store: store_many with ENGRAM_REQ_REPLICA only (sent to sources with
   * ENGRAM_SOURCE_REPLICA_MANY), n of each — entry i's version (≥ 1), created_at_ms and updated_at_ms; its expiry
   * is entry_expires_at_ms[i]. NULL otherwise. The reply's items report them back as a store_many's do. */
  const uint64_t *entry_version;
  const int64_t *entry_created_at_ms;
  const int64_t *entry_updated_at_ms;
  /* Appended with ordered searches that carry their order (ENGRAM_REQ_ORDER_LIMIT, sent only to sources with
   * ENGRAM_SOURCE_ORDER_LIMIT): the order and the position to start after. Zeroed otherwise. */
  engram_req_order_t order;
};

/* ---- Source lifecycle ---- */

/* The instance_size bytes of state the core allocated (zeroed) for this source. */
ENGRAM_EXPORT void *engram_source_state(engram_source_t *src);
/* The loop of the source's actor thread (the home loop, or the source's own). */
ENGRAM_EXPORT uv_loop_t *engram_source_loop(engram_source_t *src);
/* The source's name as added to the manager. */
ENGRAM_EXPORT const char *engram_source_name(const engram_source_t *src);
/* Finishes open: status 0, or an error with a printf-style reason (never a password). Actor thread. */
ENGRAM_EXPORT void engram_source_opened(engram_source_t *src, int status, const char *fmt, ...);
/* Finishes close. Actor thread. */
ENGRAM_EXPORT void engram_source_closed(engram_source_t *src);
/* Reports connection health for info (connected / reconnecting / down). Actor thread. */
ENGRAM_EXPORT void engram_source_set_health(engram_source_t *src, engram_health_t health);

/* ---- Change events (include/engram/events.h, docs/events.md) ---- */

/* Writes through the source's methods are announced by the core when they complete with success; a backend
 * announces only the changes it makes on its own: ENGRAM_EVENT_EXPIRED (an expired item it removed, e.g. in a
 * TTL sweep) and ENGRAM_EVENT_EVICTED (an item it dropped to stay within its limits). ns and key are the item's
 * (ns_len / key_len bytes, need not be NUL-terminated), version its last version (0 if unknown). Other kinds are
 * ignored. Nothing is kept: the core copies what a subscriber needs. Costs one atomic load when nobody
 * subscribes; engram_source_events_wanted tells a backend whether gathering an announcement is worth it
 * (a hint: a subscription may come or go at any time). Actor thread. */
ENGRAM_EXPORT void engram_source_announce(engram_source_t *src, unsigned kind, const char *ns, size_t ns_len,
                                          const char *key, size_t key_len, uint64_t version);
ENGRAM_EXPORT int engram_source_events_wanted(const engram_source_t *src);
/* Sets how many calls the core hands this backend at once (its in-flight window; the manager's max_inflight by
 * default), e.g. from a backend's own "max_inflight" option or a server's limit. n = 0 is taken as 1. Lowering
 * it takes nothing back: calls already handed over finish as usual and no new one starts until fewer than n are
 * open; raising it starts waiting calls at once. Calls beyond the window wait in the actor's backlog, where their
 * deadlines still apply. Actor thread (open or any method). */
ENGRAM_EXPORT void engram_source_set_max_inflight(engram_source_t *src, unsigned n);

/* ---- Requests and replies ---- */

/* Takes ownership of the request's value / metadata (the request's field becomes NULL). From a call whose value
 * and metadata are borrowed (ENGRAM_CALL_BORROW_VALUE), and for a small tree the core copied into the request's own
 * block at the call (engram_store), the taker gets a copy of its own instead — NULL when out of memory although the
 * request had a tree: answer ENGRAM_ENOMEM then — so a backend may take either way. */
ENGRAM_EXPORT cJSON *engram_request_take_value(engram_request_t *req);
ENGRAM_EXPORT cJSON *engram_request_take_metadata(engram_request_t *req);
/* Inside the callback of engram_source_call: takes ownership of reply->items[i].value / .metadata (the item's
 * field becomes NULL), saving the copy a composite source would otherwise make of what a tier answered; a root
 * flagged cJSON_IsReference (a tree in one block — the cache's, and Redis's and PostgreSQL's items read by
 * engram_json_parse_reply — or in the request's reply room) is copied instead, the item keeping it. NULL when the item has none, i is out of range, or out of memory for that copy. Only for replies of engram_source_call (whose items the core owns until
 * the callback returns). Thread: the home loop, inside that callback. */
ENGRAM_EXPORT cJSON *engram_reply_take_value(const engram_reply_t *reply, size_t i);
ENGRAM_EXPORT cJSON *engram_reply_take_metadata(const engram_reply_t *reply, size_t i);
/* Non-zero when the call was already answered (deadline or cancellation): the backend may skip the work, but
 * must still complete the request. */
ENGRAM_EXPORT int engram_request_answered(const engram_request_t *req);
/* The call's absolute deadline in monotonic ms (uv_hrtime() / 1e6), or 0 when it has none. */
ENGRAM_EXPORT uint64_t engram_request_deadline(const engram_request_t *req);

/* Runs the update request's user function on current (NULL = the key is missing). Returns 0 with *next set (the
 * caller owns it), or a negative status — the function's own error, or ENGRAM_EINVAL when it produced no value —
 * with the request's message already set; the backend then releases its state and completes the request with
 * that status. Every native update and the core's emulation use it, so the errors read the same everywhere. */
ENGRAM_EXPORT int engram_request_run_update(engram_request_t *req, const cJSON *current, cJSON **next);

/* Non-zero when an item with these system fields lies in every range the request carries (none: always).
 * expires_at_ms 0 (never) counts as ENGRAM_TIME_MAX. One implementation, so every source keeps the same items;
 * a backend that pushes the ranges into its own query must select exactly these. Any thread. */
ENGRAM_EXPORT int engram_request_in_ranges(const engram_request_t *req, int64_t created_at_ms, int64_t updated_at_ms,
                                           int64_t expires_at_ms);

/* Flags for engram_reply_add. */
enum {
  ENGRAM_REPLY_OWN_VALUE = 1u << 0,   /* item->value is handed over (else it is duplicated) */
  ENGRAM_REPLY_OWN_METADATA = 1u << 1 /* item->metadata is handed over (else duplicated) */
};

/* Appends an item to the reply: key and ns are copied, value and metadata handed over or duplicated per
 * own_flags (a NULL value is fine). Returns 0 or ENGRAM_ENOMEM (handed-over values are then freed). */
ENGRAM_EXPORT int engram_reply_add(engram_request_t *req, const engram_item_t *item, unsigned own_flags);
/* bytes of memory inside req (aligned for any cJSON node) where a backend may build a reply's value or metadata in
 * place instead of allocating it: no malloc, no free. Valid until req is freed — after its callback, on whatever
 * thread delivers it. NULL when the request has no room left (a few hundred bytes a call; none for a very long
 * key, a part of an emulated operation or an internal request): allocate then, as usual. A tree built there must
 * have its root flagged cJSON_IsReference and be handed over with engram_reply_add (ENGRAM_REPLY_OWN_VALUE /
 * _METADATA); the request never frees it, and engram_reply_take_value gives a taker a copy. Actor thread. */
ENGRAM_EXPORT void *engram_reply_room(engram_request_t *req, size_t bytes);
ENGRAM_EXPORT void engram_reply_set_count(engram_request_t *req, uint64_t count);
/* Copies cursor (NULL = end of the listing). Returns 0 or ENGRAM_ENOMEM. */
ENGRAM_EXPORT int engram_reply_set_cursor(engram_request_t *req, const char *cursor);
/* Hands over an info object. */
ENGRAM_EXPORT void engram_reply_set_info(engram_request_t *req, cJSON *info);
/* Batches: sets the status of item i (items must have been added in input order). */
ENGRAM_EXPORT void engram_reply_set_item_status(engram_request_t *req, size_t i, int status);

/* Finishes the request with status (0 or ENGRAM_E*). Call exactly once, on the actor thread. */
ENGRAM_EXPORT void engram_request_complete(engram_request_t *req, int status);
/* Finishes with an error and a printf-style message; the core prefixes the source's name. */
ENGRAM_EXPORT void engram_request_fail(engram_request_t *req, int status, const char *fmt, ...);

/* Stock completions, worded identically on every source (docs/writing-a-source.md): key is the key the error is
 * about (NULL = the request's own key). Actor thread.
 *   engram_request_fail_not_found: ENGRAM_ENOTFOUND, "no memory found for key: K" (retrieve of a missing key);
 *   engram_request_fail_exists:    ENGRAM_EEXIST, "key 'K' already exists" (store without overwrite);
 *   engram_request_fail_conflict:  ENGRAM_ECONFLICT, "key 'K': version is not V" (store with if_version V). */
ENGRAM_EXPORT void engram_request_fail_not_found(engram_request_t *req, const char *key);
ENGRAM_EXPORT void engram_request_fail_exists(engram_request_t *req, const char *key);
ENGRAM_EXPORT void engram_request_fail_conflict(engram_request_t *req, const char *key, uint64_t if_version);

/* ---- Calling another source of the same manager (composite sources: tiered) ---- */

/*
 * The source-call service (version 1; version 2 added the read-now service below). A source whose actor runs on
 * the home loop (no ENGRAM_SOURCE_OWN_THREAD)
 * may send calls to other sources of its own manager — what a tiered source does with its tiers. The call is a
 * fresh request routed like a user's (the target's mailbox, window, deadlines, emulation of optional methods);
 * everything in *call is copied before engram_source_call returns (but a store's value is handed over instead
 * with ENGRAM_CALL_TAKE_VALUE in flags, or its value and metadata borrowed from call->lender with
 * ENGRAM_CALL_BORROW_VALUE — version 4).
 *
 * Fields by op (others ignored; zero them):
 *   STORE        key, ns, value (required), metadata, expires_at_ms (absolute, 0 = never), if_version, flags
 *                ENGRAM_OPT_CREATE_ONLY; with ENGRAM_REQ_REPLICA also version (≥ 1), created_at_ms, updated_at_ms
 *   RETRIEVE, EXISTS, DELETE   key, ns; flags ENGRAM_OPT_INCLUDE_METADATA
 *   SEARCH, COUNT              ns, query (limit / offset / min_score, and mode / fusion / alpha, as the user gave
 *                              them; count ignores the mode); flags ENGRAM_OPT_*_RANGE
 *                              with created_at / updated_at / expires_at
 *   LIST_KEYS                  ns, query (pattern, limit), cursor, flags ENGRAM_REQ_ALL_NAMESPACES, the ranges
 *   CLEAR                      ns, flags ENGRAM_REQ_ALL_NAMESPACES (the whole source)
 *   INFO                       nothing
 * key: 1..ENGRAM_KEY_MAX bytes; ns NULL = ""; now_ms 0 = the current time (a replica or a forwarded store passes
 * the original call's, so TTLs count from the same instant); deadline is absolute monotonic ms as
 * engram_request_deadline gives it (0 = none; one already past answers ENGRAM_ETIMEDOUT).
 *
 * Returns 0, after which cb(status, reply, ud) runs exactly once on the home loop (the caller's actor thread),
 * with the reply borrowed for the callback's duration as any reply — usually later, but when the target runs on
 * the home loop too and can start the call at once (nothing queued before it, room in its window), it starts
 * without the mailbox hop, and a target that finishes at once (the cache) runs cb before engram_source_call
 * returns: write the caller so that either order works. Or a negative code and no callback: ENGRAM_EINVAL (a
 * NULL argument, an op not listed, a missing key or value, target names src itself, or src runs on a thread of
 * its own, or a search's query.mode / fusion / alpha is not valid, or ENGRAM_CALL_BORROW_VALUE without a lender,
 * with ENGRAM_CALL_TAKE_VALUE, or on an op other than a store), ENGRAM_EUNKNOWN_SOURCE (no source named
 * target), ENGRAM_ENOTSUP (ENGRAM_REQ_REPLICA and the target lacks ENGRAM_SOURCE_REPLICA; the system-field
 * ranges and the target lacks ENGRAM_SOURCE_RANGES; a search in mode vector or hybrid and the target lacks
 * ENGRAM_SOURCE_SEARCH_MODES — checked against the source the name stands for at this call), ENGRAM_EBUSY (its
 * mailbox is full),
 * ENGRAM_ECLOSED (the manager is closing), ENGRAM_ENOMEM. engram_last_error() holds the reason.
 * Thread: the calling source's actor thread (the home loop).
 */
#define ENGRAM_SOURCE_CALL_VERSION 4 /* 2: engram_source_read_now; 3: engram_source_write_now; 4: borrowed values \
                                       (ENGRAM_CALL_BORROW_VALUE, call->lender) */

typedef struct engram_source_call_s {
  engram_op_t op;
  unsigned flags;              /* ENGRAM_OPT_* | ENGRAM_REQ_* as listed above */
  const char *key;
  const char *ns;
  const cJSON *value;          /* store: copied (handed over with ENGRAM_CALL_TAKE_VALUE in flags, borrowed from
                                  lender with ENGRAM_CALL_BORROW_VALUE) */
  const cJSON *metadata;       /* store: copied (borrowed with ENGRAM_CALL_BORROW_VALUE); NULL = none */
  int64_t now_ms;
  int64_t expires_at_ms;
  uint64_t if_version;
  uint64_t version;            /* ENGRAM_REQ_REPLICA */
  int64_t created_at_ms, updated_at_ms;
  const engram_query_t *query; /* search, count, list_keys: copied */
  const char *cursor;          /* list_keys: copied */
  uint64_t deadline;
  /* Appended with the system-field ranges (search, count, list_keys; each read when its flag is in flags). */
  engram_range_t created_at, updated_at, expires_at;
  /* Appended with ENGRAM_SOURCE_CALL_VERSION 4, read only with ENGRAM_CALL_BORROW_VALUE in flags: the request
   * (the caller's own, held by it: not yet completed) that value and metadata are borrowed from. */
  engram_request_t *lender;
} engram_source_call_t;

ENGRAM_EXPORT int engram_source_call(engram_source_t *src, const char *target, const engram_source_call_t *call,
                                     engram_cb cb, void *ud);

/*
 * The read-now service (ENGRAM_SOURCE_CALL_VERSION 2): a retrieve answered at once by another source of the same
 * manager on the same loop, without a call — for a composite source whose upper tier is the cache. req is the
 * caller's own retrieve request (op ENGRAM_OP_RETRIEVE, key, ns, now_ms, flags: read as they are); the target's
 * read_now (vtable version 4) adds the item to req's reply as its retrieve would, and the caller then completes
 * req itself. Returns
 *   0                     a hit: the item is in req's reply (the metadata only with ENGRAM_OPT_INCLUDE_METADATA);
 *   ENGRAM_ENOTFOUND      a miss: nothing added;
 *   ENGRAM_EBUSY          not now: calls wait in the target's mailbox or backlog (or it is not open), and a read
 *                         now would overtake them — send a call (engram_source_call) instead;
 *   ENGRAM_ENOTSUP        the target has no read_now (older vtable or NULL), or runs on a thread of its own or
 *                         another loop: send a call;
 *   ENGRAM_EINVAL         a NULL argument (named), req not a retrieve or without a key, src on a thread of its own;
 *   ENGRAM_EUNKNOWN_SOURCE, ENGRAM_ECLOSED (the manager is closing), ENGRAM_ENOMEM (nothing added).
 * Except on a hit or a miss engram_last_error() says why. No callback, no event, no deadline: it runs inside
 * this call. Thread: the calling source's actor thread (the home loop).
 */
ENGRAM_EXPORT int engram_source_read_now(engram_source_t *src, const char *target, engram_request_t *req);

/*
 * The write-now service (ENGRAM_SOURCE_CALL_VERSION 3): a replica store written at once into another source of the
 * same manager on the same loop, without a call — for a composite source's write-through copy into its cache tier.
 * c is as for engram_source_call (op ENGRAM_OP_STORE with ENGRAM_REQ_REPLICA in flags; version ≥ 1; value not
 * NULL; everything borrowed: ENGRAM_CALL_TAKE_VALUE is refused); the target's write_now (vtable version 5) writes
 * it. Returns
 *   0                     written;
 *   ENGRAM_EBUSY          not now: calls wait in the target's mailbox or backlog (or it is not open), or the write's
 *                         completion would do more than answer (a change-event subscriber exists in the manager —
 *                         the write must be announced —, or the target has max_items_per_namespace) — send a call;
 *   ENGRAM_ENOTSUP        the target has no write_now or does not take replicas (ENGRAM_SOURCE_REPLICA), or runs
 *                         on a thread of its own or another loop: send a call (which refuses a replica the same way);
 *   ENGRAM_EINVAL         a NULL argument, c not a replica store, or a bad key, namespace or version (named);
 *   ENGRAM_EUNKNOWN_SOURCE, ENGRAM_ECLOSED, or the target's own failure (ENGRAM_ENOMEM, ENGRAM_ETOOBIG,
 *                         ENGRAM_EINVAL: nothing written).
 * engram_last_error() says why when not 0. No callback, no deadline. Thread: the calling source's actor thread.
 */
ENGRAM_EXPORT int engram_source_write_now(engram_source_t *src, const char *target, const engram_source_call_t *c);
/* The vtable of the source named name in src's manager, or NULL when there is none (src itself is not in the
 * table while it opens). For a composite source's open: whether its parts exist, and what type they are (a
 * tiered source refuses tiers that are tiered sources, so tiers never form a cycle). The pointer is the one the
 * source was added with. Thread: the home loop. */
ENGRAM_EXPORT const engram_source_vtable_t *engram_source_vtable_of(engram_source_t *src, const char *name);

/* ---- Invalidation channel (vtable version 3; docs/tiered.md "Coherence across processes") ---- */

/*
 * A source whose store other processes share (PostgreSQL: LISTEN/NOTIFY, Redis: client-side-caching
 * invalidation messages) may report the changes those processes make, so that a process keeping copies (a
 * tiered source's cache tier) can drop them. The events of one watch, in order:
 *
 *   ENGRAM_WATCH_UP    the channel is complete from now on: every change committed after this event is reported
 *                      (changes before it may not be: a watcher re-reads or drops what it kept). First event of a
 *                      working channel, and again after each DOWN once the channel is back.
 *   ENGRAM_WATCH_DOWN  the channel was lost (message says why): changes may go unreported until the next UP.
 *   ENGRAM_WATCH_KEY   (ns, key) was written or removed by another process (a write through this same source
 *                      instance is not reported where the backend can tell; a backend that cannot reports its own
 *                      writes too, which costs the watcher a copy, never a stale value). version: the item's
 *                      version after the write, 0 when removed or unknown.
 *   ENGRAM_WATCH_ALL   anything may have changed (a truncate, a flush, a message that could not be read).
 *   ENGRAM_WATCH_END   the last callback: status ENGRAM_ECANCELED (unwatched) or ENGRAM_ECLOSED (the source
 *                      closed or was removed). The handle is gone after it.
 *
 * Until the first UP the channel counts as down. ns / key are ns_len / key_len bytes (not NUL-terminated) and,
 * like message, borrowed for the callback's duration. Callbacks run on the home loop.
 */
typedef enum {
  ENGRAM_WATCH_UP = 1,
  ENGRAM_WATCH_DOWN,
  ENGRAM_WATCH_KEY,
  ENGRAM_WATCH_ALL,
  ENGRAM_WATCH_END
} engram_watch_kind_t;

struct engram_watch_event_s {
  engram_watch_kind_t kind;
  int status;          /* END: ENGRAM_ECANCELED or ENGRAM_ECLOSED; else 0 */
  const char *ns;      /* KEY */
  size_t ns_len;
  const char *key;     /* KEY */
  size_t key_len;
  uint64_t version;    /* KEY: after the write; 0 = removed or unknown */
  const char *message; /* DOWN: why (never a password); else NULL */
};

typedef struct engram_watch_s engram_watch_t;

/*
 * For a composite source (tiered): watches the source named target of src's manager through its vtable's watch.
 * Returns 0 with *out set, after which cb gets the events above and, exactly once, END; or a negative code and
 * no callback: ENGRAM_EINVAL (a NULL argument, target is src, or either runs on a thread of its own),
 * ENGRAM_EUNKNOWN_SOURCE (no source named target), ENGRAM_ENOTSUP (the target offers no channel: vtable version
 * < 3 or watch NULL), ENGRAM_ENOMEM, ENGRAM_ECLOSED (the target is closing). engram_last_error() says why.
 * engram_source_can_watch: non-zero when the source named target offers a channel. Thread: the home loop.
 */
ENGRAM_EXPORT int engram_source_watch(engram_source_t *src, const char *target, engram_watch_cb cb, void *ud,
                                      engram_watch_t **out);
ENGRAM_EXPORT int engram_source_can_watch(engram_source_t *src, const char *target);
/* Ends a watch that has not had its END yet: END (status ENGRAM_ECANCELED) follows exactly once, possibly before
 * this returns. Thread: the home loop. */
ENGRAM_EXPORT void engram_source_unwatch(engram_watch_t *w);

/* ---- Services shared by every source (one implementation, identical results everywhere) ---- */

/* Wall clock, Unix epoch milliseconds. */
ENGRAM_EXPORT int64_t engram_now_ms(void);

/* The engram allocator (engram_set_allocator). */
ENGRAM_EXPORT void *engram_malloc(size_t size);
ENGRAM_EXPORT void *engram_calloc(size_t n, size_t size);
ENGRAM_EXPORT void *engram_realloc(void *ptr, size_t size);
ENGRAM_EXPORT void engram_free(void *ptr);
ENGRAM_EXPORT char *engram_strdup(const char *s);
ENGRAM_EXPORT char *engram_strndup(const char *s, size_t n);

/* Non-zero when s[0..len) is valid UTF-8 with no NUL. */
ENGRAM_EXPORT int engram_utf8_valid(const char *s, size_t len);

/*
 * Parses JSON text a backend read back from its store (len bytes, need not be NUL-terminated) into *out, which
 * the caller owns. cJSON reports an allocation failure as a failed parse; this tells the two apart with a
 * non-allocating syntax check: returns 0, ENGRAM_ENOMEM (the text is JSON, memory ran out: the call should fail
 * with ENGRAM_ENOMEM) or ENGRAM_EINVAL (the text is not JSON: another program wrote it). *out is NULL on
 * failure. The tree is the one cJSON_ParseWithLength builds; the common shapes of stored values (objects,
 * arrays, strings without \u escapes, integers up to 15 digits) are read by a fast path of engram's own, about a
 * quarter of cJSON's instructions. Thread: any.
 */
ENGRAM_EXPORT int engram_json_parse(const char *text, size_t len, cJSON **out);

/*
 * engram_json_parse for a value or metadata a backend hands to a reply (engram_reply_add with ENGRAM_REPLY_OWN_*):
 * where the fast path reads the text, the tree is one allocation — its nodes, then its strings — whose root is
 * flagged cJSON_IsReference, as the cache's reply trees are: cJSON_Delete of the root frees it whole, nothing may
 * change or unlink a node of it, and engram_reply_take_value hands a taker a copy. Else the tree engram_json_parse
 * builds. The same returns. A window of 50 messages read from Redis parsed and freed each message node by node
 * (a malloc and a free per node and string: most of its client time). Thread: any.
 */
ENGRAM_EXPORT int engram_json_parse_reply(const char *text, size_t len, cJSON **out);

/*
 * Non-zero when text (len bytes) is exactly what cJSON_PrintUnformatted prints for its parse — compact, strings
 * with only cJSON's escapes and valid UTF-8, numbers that are integers of at most 15 digits, at most 1,000 deep —
 * so that it can stand for its tree as a cJSON_Raw node wherever printed bytes are wanted (an export's reads,
 * ENGRAM_REQ_JSON_TEXT). 0 for any other text, JSON or not. Thread: any.
 */
ENGRAM_EXPORT int engram_json_is_canonical(const char *text, size_t len);

/*
 * Patterns (list_keys, search): Redis-style globs (* ? [abc] [a-z] [^a] [!a] and \ escapes) matched against the
 * whole key. `?` and a class match one UTF-8 character; ranges compare code points; `]` closes a class unless
 * escaped; a `-` at either end of a class is literal. A pattern without an unescaped glob character matches as
 * a substring (BeamMePrompty's ETS rule). NULL or "" matches everything; an invalid pattern matches nothing.
 * Matching is iterative (no exponential backtracking) and case-sensitive.
 * engram_pattern_check returns 0 or ENGRAM_EINVAL (an unterminated "[" or a trailing lone "\").
 * engram_pattern_prefix: every key the pattern matches starts with *out ("" for a substring pattern); returns 0,
 * ENGRAM_EINVAL or ENGRAM_ENOMEM, with *out NULL on error.
 */
ENGRAM_EXPORT int engram_pattern_check(const char *pattern);
ENGRAM_EXPORT int engram_pattern_match(const char *pattern, const char *s, size_t len);
/* Non-zero when pattern holds an unescaped glob character. */
ENGRAM_EXPORT int engram_pattern_is_glob(const char *pattern);
/* Longest literal prefix of a glob pattern (escapes resolved), for range scans; *out freed by the caller. */
ENGRAM_EXPORT int engram_pattern_prefix(const char *pattern, char **out);

/*
 * Keyset cursors for list_keys — the one codec every source uses, so a cursor one source refuses every source
 * refuses. A cursor names the last (namespace, key) pair of a page as "<ns_len>:<ns><key>" (ns_len in decimal,
 * no sign, space or leading zero; ns ≤ ENGRAM_NAMESPACE_MAX bytes, key 1..ENGRAM_KEY_MAX bytes; valid UTF-8).
 * engram_key_cmp orders pairs bytewise, namespace first (< 0, 0, > 0): the order a listing walks in.
 * engram_reply_set_key_cursor sets the reply's cursor to name the pair (0 or ENGRAM_ENOMEM); actor thread.
 * engram_cursor_encode returns the same text, allocated with engram_malloc (NULL on ENOMEM); any thread.
 * engram_cursor_parse reads a cursor back (pointers into it; 0, or ENGRAM_EINVAL when it is not one); any thread.
 */
ENGRAM_EXPORT int engram_key_cmp(const char *ns_a, size_t ns_a_len, const char *key_a, size_t key_a_len, const char *ns_b,
                   size_t ns_b_len, const char *key_b, size_t key_b_len);
ENGRAM_EXPORT int engram_reply_set_key_cursor(engram_request_t *req, const char *ns, size_t ns_len, const char *key,
                                size_t key_len);
ENGRAM_EXPORT char *engram_cursor_encode(const char *ns, size_t ns_len, const char *key, size_t key_len);
ENGRAM_EXPORT int engram_cursor_parse(const char *cursor, const char **ns, size_t *ns_len, const char **key, size_t *key_len);

/*
 * Options: readers for the JSON object open() receives (never NULL there), one implementation so every source
 * words a mistake the same way. Each returns 0 with *out set (to def when the option is absent), or
 * ENGRAM_EINVAL with a message naming the option in err (errlen bytes). Any thread.
 *   engram_opt_check_names: every member of options is one of known (NULL-terminated), and none is given twice;
 *     else the message is 'unknown option "x" (known: a, b, c)' or 'option "x" given twice';
 *   engram_opt_uint: an integer in min..max (JSON numbers are doubles: exact up to 2^53);
 *   engram_opt_bool: true or false;
 *   engram_opt_string: a non-empty valid UTF-8 string of at most max_bytes bytes (0 = no limit), borrowed from
 *     options (*out points into it).
 */
ENGRAM_EXPORT int engram_opt_check_names(const cJSON *options, const char *const *known, char *err, size_t errlen);
ENGRAM_EXPORT int engram_opt_uint(const cJSON *options, const char *name, uint64_t def, uint64_t min, uint64_t max, uint64_t *out,
                    char *err, size_t errlen);
ENGRAM_EXPORT int engram_opt_bool(const cJSON *options, const char *name, int def, int *out, char *err, size_t errlen);
ENGRAM_EXPORT int engram_opt_string(const cJSON *options, const char *name, const char *def, size_t max_bytes, const char **out,
                      char *err, size_t errlen);

/*
 * The calling thread's last-error message (engram_last_error): a backend's functions that are called outside a
 * request — an embedder's constructor, say — explain a refusal there. engram_set_last_error records the
 * printf-style message and returns status, so `return engram_set_last_error(ENGRAM_EINVAL, "dimension: ...")`
 * reads as one statement; engram_clear_last_error empties it. Any thread (the message is per thread).
 */
ENGRAM_EXPORT int engram_set_last_error(int status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
ENGRAM_EXPORT void engram_clear_last_error(void);

/*
 * Metadata filters: {"field": value} equality (deep equality for objects and arrays), or {"field": {"$eq"|"$ne"|"$gt"|"$gte"|"$lt"|"$lte": v,
 * "$in"|"$nin": [..], "$exists": bool}}; several fields AND together. Typed: numbers compare with numbers,
 * strings with strings (bytewise), a type mismatch never matches (except $ne and $nin, which then match).
 * A missing field matches only $ne, $nin and $exists:false. "a.b" reads metadata.a.b (paths do not enter arrays);
 * an object whose first key starts with "$" is an operator object; top-level names starting with "$" are
 * reserved. SQL translations must compare strings bytewise (COLLATE "C" / BINARY).
 * engram_filter_check returns 0 or ENGRAM_EINVAL and
 * writes a message naming the offending field into err (errlen bytes) when err ≠ NULL.
 */
ENGRAM_EXPORT int engram_filter_check(const cJSON *filter, char *err, size_t errlen);
ENGRAM_EXPORT int engram_filter_match(const cJSON *filter, const cJSON *metadata);

/*
 * Text: the indexed text of an item is its key plus every string leaf of its value. Tokens are maximal runs of
 * ASCII letters/digits and non-ASCII UTF-8 bytes, ASCII case-folded. engram_text_of returns an allocated
 * string (key, a space, then the value's string leaves separated by spaces) or NULL on ENOMEM.
 */
ENGRAM_EXPORT char *engram_text_of(const char *key, const cJSON *value);
#define ENGRAM_TOKEN_MAX 64 /* bytes; longer tokens are cut (never inside a UTF-8 character) */
typedef int (*engram_token_fn)(const char *tok, size_t len, void *ud); /* non-zero stops */
/* Calls fn for each token in order; returns 0, or the first non-zero value fn returned. */
ENGRAM_EXPORT int engram_tokenize(const char *text, size_t len, engram_token_fn fn, void *ud);

/*
 * An in-memory BM25 index (k1 = 1.2, b = 0.75) over documents identified by a 64-bit id. Scores are mapped to
 * [0, 1] as s / (s + 1). Thread: one thread at a time.
 */
typedef struct engram_text_index_s engram_text_index_t;
typedef struct engram_text_hit_s {
  uint64_t doc;
  double score;
} engram_text_hit_t;
/* Decides whether a matching document may be returned (namespace, pattern, filter, expiry): non-zero = yes. */
typedef int (*engram_text_accept_fn)(uint64_t doc, void *ud);
/* Breaks ties between equal scores: < 0 when doc a ranks first (e.g. by key). NULL = by doc id. */
typedef int (*engram_text_tie_fn)(uint64_t a, uint64_t b, void *ud);

ENGRAM_EXPORT int engram_text_index_new(engram_text_index_t **out);
ENGRAM_EXPORT void engram_text_index_free(engram_text_index_t *ix);
/* Adds or replaces document doc with text. Returns 0 or ENGRAM_ENOMEM (the index is then unchanged). */
ENGRAM_EXPORT int engram_text_index_put(engram_text_index_t *ix, uint64_t doc, const char *text, size_t len);
ENGRAM_EXPORT void engram_text_index_remove(engram_text_index_t *ix, uint64_t doc);
ENGRAM_EXPORT size_t engram_text_index_size(const engram_text_index_t *ix);
/* Top k hits by score (ties by tie, else doc id) among accepted documents holding at least one query token.
 * hits must have room for k; *n_hits receives the count. Returns 0 or ENGRAM_ENOMEM. */
ENGRAM_EXPORT int engram_text_index_search(engram_text_index_t *ix, const char *query, size_t k, engram_text_accept_fn accept,
                             engram_text_tie_fn tie, void *ud, engram_text_hit_t *hits, size_t *n_hits);

/*
 * A set of text indexes, one per namespace (src/shared/text_set.c), for a source that keeps every namespace in
 * one process: BM25's statistics are then the namespace's own, as every source must rank (the conformance case
 * text_ranking_is_the_cores_bm25). engram_text_set_get returns ns's index (ns_len bytes): NULL when it has none
 * and create is 0, or when memory ran out; the set owns it. engram_text_set_remove removes doc from ns's index,
 * and the index goes with its last document. One thread at a time.
 */
typedef struct engram_text_set_s engram_text_set_t;
ENGRAM_EXPORT int engram_text_set_new(engram_text_set_t **out);
ENGRAM_EXPORT void engram_text_set_free(engram_text_set_t *s);
ENGRAM_EXPORT engram_text_index_t *engram_text_set_get(engram_text_set_t *s, const char *ns, size_t ns_len, int create);
ENGRAM_EXPORT void engram_text_set_remove(engram_text_set_t *s, const char *ns, size_t ns_len, uint64_t doc);

#ifdef __cplusplus
}
#endif

#endif /* ENGRAM_SOURCE_H */
