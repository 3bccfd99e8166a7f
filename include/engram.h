/*
 * engram.h — the public API of engram, an asynchronous actor-style memory manager for LLM agents and other
 * event-driven programs.
 *
 * A manager (engram_manager_t) coordinates named memory sources. Each source is an actor with a bounded
 * mailbox; every operation below copies its arguments into a request, pushes it onto the target source's
 * mailbox and returns 0 — after which exactly one callback reports the outcome — or returns a negative
 * ENGRAM_E* code and never calls back. Callbacks run on the manager's home loop thread, or on the thread that
 * drains the completion queue named in the call's options (engram_cq_t). A callback never runs from inside
 * the call that submitted it.
 *
 * The operation set mirrors the BeamMePrompty `Memory` behaviour and `MemoryManager` (Elixir); each
 * function's comment names the callback it mirrors. Units: times in milliseconds, sizes in bytes.
 *
 * Ownership: engram copies keys, values, metadata and options at submit time, so the caller may free them as
 * soon as the call returns. Everything reachable from an engram_reply_t is borrowed for the callback's duration
 * (as with hiredis replies): duplicate what you keep (cJSON_Duplicate, strdup).
 */
#ifndef ENGRAM_H
#define ENGRAM_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

/* Marks the library's public symbols: it is built with -fvisibility=hidden, so only what a public header
 * declares with ENGRAM_EXPORT is exported from libengram.so (internal engram__ symbols never are). */
#ifndef ENGRAM_EXPORT
#if defined(__GNUC__) || defined(__clang__)
#define ENGRAM_EXPORT __attribute__((visibility("default")))
#else
#define ENGRAM_EXPORT
#endif
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define ENGRAM_VERSION_MAJOR 0
#define ENGRAM_VERSION_MINOR 1
#define ENGRAM_VERSION_PATCH 0

/* ------------------------------------------------------------------------------------------------------ */
/* Errors: one list generates the enum, engram_strerror() and engram_err_name().                          */
/* ------------------------------------------------------------------------------------------------------ */

#define ENGRAM_ERRNO_MAP(XX)                                                                               \
  XX(EINVAL, -1, "invalid argument")                                                                       \
  XX(ENOMEM, -2, "out of memory")                                                                          \
  XX(ENOTFOUND, -3, "key not found")                                                                       \
  XX(EEXIST, -4, "key already exists")                                                                     \
  XX(ECONFLICT, -5, "version conflict")                                                                    \
  XX(EUNKNOWN_SOURCE, -6, "unknown memory source")                                                         \
  XX(ENOTSUP, -7, "operation not supported")                                                               \
  XX(ETIMEDOUT, -8, "deadline exceeded")                                                                   \
  XX(ECANCELED, -9, "call canceled")                                                                       \
  XX(EBUSY, -10, "mailbox full")                                                                           \
  XX(EUNAVAILABLE, -11, "source unavailable")                                                              \
  XX(EBACKEND, -12, "backend error")                                                                       \
  XX(ECLOSED, -13, "manager closed")                                                                       \
  XX(ETOOBIG, -14, "value too big")                                                                        \
  XX(EDIMENSION, -15, "vector dimension mismatch")                                                         \
  XX(EEMBED, -16, "embedder failed")                                                                       \
  XX(ESOURCE_EXISTS, -17, "a source with that name already exists")                                      \
  XX(EIO, -18, "input/output error")

typedef enum {
  ENGRAM_OK = 0,
#define ENGRAM_XX_ENUM(name, code, text) ENGRAM_##name = (code),
  ENGRAM_ERRNO_MAP(ENGRAM_XX_ENUM)
#undef ENGRAM_XX_ENUM
  ENGRAM_ERRNO_MIN = -18
} engram_errno_t;

/* A static human description of an error code ("key not found"). Thread: any. */
ENGRAM_EXPORT const char *engram_strerror(int status);
/* The code's name ("ENGRAM_ENOTFOUND"), or "ENGRAM_UNKNOWN" for a code outside the list. Thread: any. */
ENGRAM_EXPORT const char *engram_err_name(int status);

/* ------------------------------------------------------------------------------------------------------ */
/* Allocator                                                                                               */
/* ------------------------------------------------------------------------------------------------------ */

typedef struct engram_allocator_s {
  void *(*malloc_fn)(size_t size);
  void *(*realloc_fn)(void *ptr, size_t size);
  void (*free_fn)(void *ptr);
} engram_allocator_t;

/*
 * Replaces the allocator used for every engram allocation, and installs it as cJSON's hooks too (values in
 * requests and replies are cJSON trees). NULL restores malloc/realloc/free. Every allocation failure
 * inside engram ends the affected call with ENGRAM_ENOMEM and leaks nothing.
 * Thread: any, but only while no manager exists and no cJSON value made with the previous hooks is alive.
 * Returns 0, or ENGRAM_EINVAL when a function pointer is missing.
 */
ENGRAM_EXPORT int engram_set_allocator(const engram_allocator_t *allocator);

/* Frees memory engram allocated and handed to the caller (e.g. engram_tools_definitions_json's text), with the
 * current allocator. NULL is fine. Thread: any. */
ENGRAM_EXPORT void engram_free(void *ptr);

/*
 * Prints v as compact JSON text into *buf: cJSON_PrintUnformatted's form (no whitespace, cJSON's escapes, members
 * in order, NaN and infinities as null) except that every number reads back as exactly the same double — 15
 * significant digits when they do, else 17 (cJSON accepts 15 digits that read back one unit in the last place
 * away: it prints 0.1 + 0.2 as "0.3"). Numbers cJSON prints exactly come out byte for byte as cJSON prints them.
 * *buf is grown with engram_realloc as needed (start with *buf NULL and *cap 0; keep both to reuse the buffer from
 * one call to the next, and engram_free *buf at the end); the text is NUL-terminated and *len (may be NULL) gets
 * its length in bytes. Returns 0; ENGRAM_ENOMEM (*buf stays valid); ENGRAM_EINVAL (v, buf or cap NULL, a string
 * or raw node without text, an object member without a name). Every engram writer of stored values uses it, so a
 * value reads back the same from every source; use it to print reply values (cJSON trees) exactly. Thread: any.
 * engram_json_print_text: the same into a fresh buffer the caller frees with engram_free; NULL on either error.
 */
ENGRAM_EXPORT int engram_json_print(const cJSON *v, char **buf, size_t *cap, size_t *len);
ENGRAM_EXPORT char *engram_json_print_text(const cJSON *v);

/*
 * Releases the request blocks the calling thread keeps for reuse. Each thread that submits calls or frees their
 * replies keeps up to 512 freed request blocks (about 0.5 MiB) and reuses them, which saves an allocator round
 * trip per call; they are released when the thread exits. Call this before a leak check that counts live
 * blocks, or after a burst to give the memory back. Thread: any (acts on the calling thread only).
 */
ENGRAM_EXPORT void engram_release_thread_cache(void);

/* ------------------------------------------------------------------------------------------------------ */
/* Types                                                                                                   */
/* ------------------------------------------------------------------------------------------------------ */

typedef struct engram_manager_s engram_manager_t;
typedef struct engram_cq_s engram_cq_t;
typedef struct engram_source_vtable_s engram_source_vtable_t;
typedef struct uv_loop_s uv_loop_t;

/* Limits of the data model. */
#define ENGRAM_KEY_MAX 1024       /* bytes of UTF-8, no NUL */
#define ENGRAM_NAMESPACE_MAX 256  /* bytes of UTF-8, no NUL; "/" separates levels */
#define ENGRAM_SOURCE_NAME_MAX 64 /* bytes: [A-Za-z0-9_.-] */

/* Operations (reply->op). */
typedef enum {
  ENGRAM_OP_STORE = 1,
  ENGRAM_OP_STORE_MANY,
  ENGRAM_OP_RETRIEVE,
  ENGRAM_OP_RETRIEVE_MANY,
  ENGRAM_OP_SEARCH,
  ENGRAM_OP_COUNT,
  ENGRAM_OP_UPDATE,
  ENGRAM_OP_DELETE,
  ENGRAM_OP_DELETE_MANY,
  ENGRAM_OP_LIST_KEYS,
  ENGRAM_OP_EXISTS,
  ENGRAM_OP_CLEAR,
  ENGRAM_OP_INFO,
  ENGRAM_OP_ADD_SOURCE,
  ENGRAM_OP_REMOVE_SOURCE,
  ENGRAM_OP_LIST_SOURCES,
  ENGRAM_OP_CONFIGURE,
  ENGRAM_OP_TOOL_CALL,
  ENGRAM_OP_CLOSE,
  ENGRAM_OP_LIST_NAMESPACES /* appended: engram_list_namespaces */
} engram_op_t;

/* Per-call option flags (engram_opts_t.flags). */
enum {
  ENGRAM_OPT_TTL = 1u << 0,              /* ttl_ms is set (store: else never expires; update: else keeps its expiry) */
  ENGRAM_OPT_CREATE_ONLY = 1u << 1,      /* store: overwrite=false; an existing key → ENGRAM_EEXIST */
  ENGRAM_OPT_INCLUDE_METADATA = 1u << 2, /* retrieve: the reply item carries metadata and system fields */
  ENGRAM_OPT_CONFIRM = 1u << 3,          /* clear: required to clear a whole source */
  /* search, count, list_keys: keep only items whose system field lies in the range opts names (see below) */
  ENGRAM_OPT_CREATED_RANGE = 1u << 4,    /* created_at_ms in opts.created_at */
  ENGRAM_OPT_UPDATED_RANGE = 1u << 5,    /* updated_at_ms in opts.updated_at */
  ENGRAM_OPT_EXPIRES_RANGE = 1u << 6,    /* expires_at_ms in opts.expires_at (never = ENGRAM_TIME_MAX) */
  ENGRAM_OPT_DESCENDING = 1u << 7,       /* search, list_keys: opts.order_by, descending */
  /* clear, count, list_keys: opts.ns names a namespace prefix — the namespace itself and every namespace below
   * it ("u1" covers "u1", "u1/a" and "u1/a/b", never "u10" or "u1-x"; "" or NULL covers every namespace) — so
   * "forget this user everywhere" is one call per source. On every source: the core finds the namespaces under
   * the prefix in (namespace, key) order and runs the one-namespace operation on each (see engram_clear,
   * engram_count, engram_list_keys). search refuses it (ENGRAM_EINVAL); other operations ignore it. */
  ENGRAM_OPT_NS_PREFIX = 1u << 8
};
#define ENGRAM_OPT_RANGES (ENGRAM_OPT_CREATED_RANGE | ENGRAM_OPT_UPDATED_RANGE | ENGRAM_OPT_EXPIRES_RANGE)

/* The latest instant a range can name: an open upper bound, and where an item that never expires lies. */
#define ENGRAM_TIME_MAX INT64_MAX

/*
 * A closed range of instants on a system field, Unix epoch ms: min_ms ≤ field ≤ max_ms (both inclusive; an
 * open bound is 0 or ENGRAM_TIME_MAX). Validated at the call: 0 ≤ min_ms ≤ max_ms, else ENGRAM_EINVAL with a
 * message naming the field ("opts.created_at: min_ms 20 is above max_ms 10"). An item that never expires
 * (expires_at_ms 0) counts as expiring at ENGRAM_TIME_MAX: {now, ENGRAM_TIME_MAX} keeps the items still alive at
 * now including those without a TTL, {ENGRAM_TIME_MAX, ENGRAM_TIME_MAX} only those, {0, t} those with a TTL
 * ending by t.
 */
typedef struct engram_range_s {
  int64_t min_ms;
  int64_t max_ms;
} engram_range_t;

/*
 * The order of search results and list_keys pages (opts.order_by; BeamMePrompty's search(..., order_by)).
 * Ascending unless opts.flags has ENGRAM_OPT_DESCENDING, which reverses the whole order (ties too). Equal
 * values are ordered by namespace, then key (bytewise), so the order is total and pages never overlap.
 */
typedef enum {
  ENGRAM_ORDER_DEFAULT = 0, /* search: by score, best first, ties by key; list_keys: by key */
  ENGRAM_ORDER_KEY,         /* by namespace, then key */
  ENGRAM_ORDER_CREATED_AT,  /* by created_at_ms */
  ENGRAM_ORDER_UPDATED_AT   /* by updated_at_ms */
} engram_order_t;

/* An ordered search or listing considers at most this many matches; more fail the call with ENGRAM_ETOOBIG
 * (narrow it with a pattern, a filter or ranges) rather than answer in a wrong order. */
#define ENGRAM_ORDER_MAX 100000

/*
 * Per-call options. All-zero is the default: default source, namespace "", no TTL, overwrite allowed,
 * unconditional, the manager's default deadline, replies on the home loop.
 */
typedef struct engram_opts_s {
  const char *source;      /* source name; NULL = the default source */
  const char *ns;          /* namespace; NULL = "" (for clear: NULL = whole source, needs ENGRAM_OPT_CONFIRM) */
  unsigned flags;          /* ENGRAM_OPT_* */
  int64_t ttl_ms;          /* with ENGRAM_OPT_TTL: ≥ 0 ms from the call; 0 expires at once (as BeamMePrompty) */
  const cJSON *metadata;   /* store: a JSON object kept with the item (tags, ...); copied */
  uint64_t if_version;     /* store: ≠ 0 → store only if the item's version equals it, else ENGRAM_ECONFLICT. A key
                            * deleted and stored again starts again at version 1, so a version number alone cannot
                            * tell a recreated item from the one read (compare the value or created_at_ms too, or use
                            * engram_update, which names the item itself) */
  uint32_t deadline_ms;    /* 0 = the manager's default_deadline_ms (0 there = none) */
  engram_cq_t *cq;         /* deliver the reply through this completion queue instead of the home loop */
  /* search, count and list_keys: system-field ranges, each read only when its flag is set, ANDed with each other
   * and with the query's pattern and filter; on every built-in source (the source tests each candidate before
   * offset, limit and a listing's cursor, so pages stay full and exact). A source that does not declare
   * ENGRAM_SOURCE_RANGES refuses them (ENGRAM_ENOTSUP at the call). Other operations ignore them. */
  engram_range_t created_at; /* with ENGRAM_OPT_CREATED_RANGE */
  engram_range_t updated_at; /* with ENGRAM_OPT_UPDATED_RANGE */
  engram_range_t expires_at; /* with ENGRAM_OPT_EXPIRES_RANGE; never expiring = ENGRAM_TIME_MAX */
  /* search and list_keys: the order of the results (engram_order_t; ENGRAM_OPT_DESCENDING reverses it). Any
   * order but the default (and, for list_keys, ascending by key) is applied by the core on every source: the
   * source finds every match (up to ENGRAM_ORDER_MAX, else ENGRAM_ETOOBIG), the core sorts them and answers the
   * page — offset and limit for a search; limit and a cursor of that order for list_keys. Count ignores it. */
  int order_by;
} engram_opts_t;

/*
 * Search modes (engram_query_t.mode). A source ranks by text (BM25 over its items, every source), by vector
 * similarity (the query text embedded, or query.vector) or by both fused (hybrid); only sources that declare
 * ENGRAM_SOURCE_SEARCH_MODES (the vector source) rank by vector, and the others refuse VECTOR and HYBRID with
 * ENGRAM_ENOTSUP at the call. DEFAULT is the source's own default (the vector source's "search_mode" option).
 */
typedef enum {
  ENGRAM_MODE_DEFAULT = 0,
  ENGRAM_MODE_TEXT,   /* BM25 over query.text; scores s / (s + 1) */
  ENGRAM_MODE_VECTOR, /* similarity to the embedded query.text (or query.vector); the metric's score */
  ENGRAM_MODE_HYBRID  /* both rankings fused per query.fusion; needs query.text */
} engram_search_mode_t;

/*
 * How two or more rankings are fused into one (hybrid mode, engram_search_sources). Scores stay in [0, 1].
 *   RRF       reciprocal rank fusion: an item ranked r_i (1 = first) in list i scores Σ w_i / (k + r_i), divided
 *             by Σ w_i / (k + 1), so 1 means first everywhere; lists that miss the item add nothing. k is the
 *             vector source's "rrf_k" option in hybrid mode (5 by default: docs/sources-vector.md) and
 *             engram_fusion_opts_t.rrf_k for engram_search_sources (60 by default).
 *   WEIGHTED  Σ w_i · score_i / Σ w_i over the lists' own [0, 1] scores (0 where a list misses the item); in
 *             hybrid mode the vector score weighs alpha and the text score 1 − alpha.
 */
typedef enum { ENGRAM_FUSION_RRF = 0, ENGRAM_FUSION_WEIGHTED } engram_fusion_t;

/* A search or count query. Initialise with ENGRAM_QUERY_INIT (limit 10). */
typedef struct engram_query_s {
  const char *text;      /* ranked keyword search (BM25-style); or the text a vector source embeds */
  const char *pattern;   /* key glob (* ? [..] \) or, with no glob character, substring of the key */
  const cJSON *filter;   /* metadata filter: {"f": v} or {"f": {"$gt": 3}} with $eq $ne $gt $gte $lt $lte $in $nin $exists */
  const float *vector;   /* vector sources: search by this raw vector (dimension floats) instead of text */
  size_t dimension;      /* length of vector */
  int limit;             /* 1..100000 results */
  int offset;            /* ≥ 0 results skipped */
  double min_score;      /* results scoring below it are dropped; scores are in [0, 1], 1 = best */
  /* Appended for hybrid search; zero (ENGRAM_QUERY_INIT) = the source's default mode. Checked at the call on
   * every operation that takes a query (ENGRAM_EINVAL naming the field: "query.mode: 7 is not a mode ...",
   * "query.alpha: 1.5, must be in [0, 1]"); count ignores them. */
  int mode;              /* engram_search_mode_t */
  int fusion;            /* hybrid: engram_fusion_t (ENGRAM_FUSION_RRF by default) */
  double alpha;          /* hybrid with ENGRAM_FUSION_WEIGHTED: weight of the vector score in [0, 1] */
  /* Appended for approximate search: a vector source with an "index" walks its graph with a candidate list of
   * this many (at least offset + limit); 0 = the index's ef_search option. Larger finds more of the exact
   * top-k, slower. 0..100000 (else ENGRAM_EINVAL "query.ef_search: ..." at the call); other sources ignore it. */
  int ef_search;
} engram_query_t;

#define ENGRAM_QUERY_INIT {NULL, NULL, NULL, NULL, 0, 10, 0, 0.0, ENGRAM_MODE_DEFAULT, ENGRAM_FUSION_RRF, 0.0, 0}

/* One item of a store_many batch. metadata and TTL fall back to the call's options when unset. */
typedef struct engram_entry_s {
  const char *key;
  const cJSON *value;
  const cJSON *metadata; /* NULL = opts->metadata */
  int has_ttl;           /* non-zero: ttl_ms applies to this entry */
  int64_t ttl_ms;
} engram_entry_t;

/* A memory item in a reply. Borrowed for the callback's duration. */
typedef struct engram_item_s {
  int status;             /* batches: this item's own status (0 or ENGRAM_E*); else 0 */
  const char *key;
  const char *ns;         /* namespace */
  const cJSON *value;     /* NULL when the item was not found or the op carries no values (list_keys) */
  const cJSON *metadata;  /* the user's metadata object, or NULL */
  int64_t created_at_ms;  /* Unix epoch ms */
  int64_t updated_at_ms;
  int64_t expires_at_ms;  /* 0 = never */
  uint64_t version;       /* 1 on insert, +1 on every write */
  double score;           /* search: relevance in [0, 1], 1 = best */
  const char *source;     /* the source's name */
} engram_item_t;

/*
 * The reply handed to every callback. Which fields are set depends on op:
 *   store, update          items[0] (key, metadata, version, timestamps; update: the new value)
 *   retrieve               items[0] with value (metadata and system fields with ENGRAM_OPT_INCLUDE_METADATA)
 *   store_many, retrieve_many, delete_many   items[i] per input i, each with its own status; count = successes
 *   search                 items ranked by score, count = number of items
 *   list_keys              items (key, ns only), cursor = the next page's cursor or NULL at the end
 *   count                  count;  exists: count = 0 or 1;  delete, clear: count = items removed when known
 *   info, list_sources     info (a JSON object, or an array for list_sources)
 *   tool calls             text = the tool's JSON result
 */
typedef struct engram_reply_s {
  engram_op_t op;
  const char *message;        /* human message naming the source and the cause; "" on success */
  const char *source;         /* the source's name, or NULL */
  const engram_item_t *items;
  size_t n_items;
  uint64_t count;
  const char *cursor;
  const cJSON *info;
  const char *text;
} engram_reply_t;

/* Every callback: status first (0 or ENGRAM_E*), the reply (never NULL), then the user data. */
typedef void (*engram_cb)(int status, const engram_reply_t *reply, void *ud);

/*
 * update's user function: given the current value (NULL when the key is missing) it sets *next to a new
 * value it allocated with cJSON (ownership passes to engram) and returns 0, or returns a negative ENGRAM_E*
 * code (or any negative number) to abort the update with that status. It may run more than once when a
 * concurrent writer wins the race; it must not block. Thread: the source's actor thread.
 */
typedef int (*engram_update_fn)(const cJSON *current, cJSON **next, void *fn_ud);

/* ------------------------------------------------------------------------------------------------------ */
/* Manager                                                                                                 */
/* ------------------------------------------------------------------------------------------------------ */

typedef struct engram_manager_config_s {
  unsigned mailbox_capacity;   /* requests queued per source before ENGRAM_EBUSY; 0 = 65536 */
  unsigned max_inflight;       /* requests open at once per source; 0 = 1024 */
  unsigned batch;              /* requests taken from a mailbox per wake-up; 0 = 256 (home-loop actors: at least
                                  the mailbox's depth at the wake-up, so a producer on that loop cannot outrun them) */
  uint32_t default_deadline_ms;/* per-call deadline when the call names none; 0 = none */
  unsigned update_retries;     /* update: attempts on a version conflict; 0 = 16 */
  int64_t message_cache_bytes; /* conversation windows: bytes of parsed messages kept in the process, so that a
                                  window reads only the messages it has not seen (engram/thread.h, docs/
                                  conversations.md "The message cache"); 0 = 16 MiB; < 0 = none. Not used for
                                  sources that keep their items in the process anyway (the cache source) */
} engram_manager_config_t;

/*
 * Creates a manager. loop ≠ NULL: the manager lives on the caller's loop (the home loop), which the caller
 * runs; the manager must be closed with engram_manager_close and the loop run until the close callback.
 * loop = NULL: the manager starts a thread of its own with its own loop; callbacks then run on that thread
 * unless the call names a completion queue; end it with engram_manager_shutdown.
 * config may be NULL (defaults). Returns 0, ENGRAM_EINVAL, ENGRAM_ENOMEM or ENGRAM_EBACKEND (thread start).
 * Thread: any (with a loop: the loop's thread). Mirrors BeamMePrompty's MemoryManager start.
 */
ENGRAM_EXPORT int engram_manager_new(engram_manager_t **out, uv_loop_t *loop, const engram_manager_config_t *config);

/*
 * Closes a manager that lives on the caller's loop: every pending call ends with ENGRAM_ECANCELED, every
 * source's close runs once, then cb(0, reply, ud) runs on the home loop and the manager is freed after it
 * returns. Calls made after this return ENGRAM_ECLOSED. Returns 0 or ENGRAM_EINVAL (NULL, already closing,
 * or a manager on its own thread). Thread: home loop.
 */
ENGRAM_EXPORT int engram_manager_close(engram_manager_t *mgr, engram_cb cb, void *ud);

/*
 * Closes and frees a manager that runs on its own thread (engram_manager_new with loop = NULL) and joins
 * that thread. Pending calls end with ENGRAM_ECANCELED; replies bound for a completion queue stay there to
 * be polled. Returns 0 or ENGRAM_EINVAL. Thread: any thread except the manager's own.
 */
ENGRAM_EXPORT int engram_manager_shutdown(engram_manager_t *mgr);

/*
 * Adds a source named name (1..64 bytes of [A-Za-z0-9_.-]) implemented by vtable, configured by
 * options_json (a JSON object text, or NULL for {}), with a description shown to agents. The source opens
 * asynchronously; cb(status) reports the outcome: 0, ENGRAM_ESOURCE_EXISTS, or the open's error with a
 * message naming the source and reason (the source is then not added). The first source added becomes the
 * default unless another is marked is_default. Besides its own options, every source accepts the core's
 * default_ttl_ms, max_items_per_namespace (docs/sources.md) and "thread": "own" runs the source's actor on a
 * thread and loop of its own, "home" on the manager's home loop; the default is the type's
 * (ENGRAM_SOURCE_OWN_THREAD: sqlite and vector "own", the others "home"; "own" is refused for a type without the
 * flag). "home" takes a blocking source's calls off the thread crossing — a SQLite point read then costs what a
 * raw SQLite read on that loop costs — but its slow calls (a large search, a checkpoint copy) block the home
 * loop and every other source on it. Returns 0, ENGRAM_EINVAL (a bad option, named), ENGRAM_ENOMEM or
 * ENGRAM_ECLOSED. Thread: any. Mirrors BeamMePrompty's memory_source / Memory.init.
 */
ENGRAM_EXPORT int engram_manager_add_source(engram_manager_t *mgr, const char *name, const engram_source_vtable_t *vtable,
                              const char *options_json, const char *description, int is_default, engram_cb cb,
                              void *ud);

/*
 * Removes a source: its pending calls end with ENGRAM_ECANCELED, its close runs exactly once, and when it was
 * the default the next source in the order added becomes the default. cb(status): 0 or
 * ENGRAM_EUNKNOWN_SOURCE. Returns 0, ENGRAM_EINVAL, ENGRAM_ENOMEM or ENGRAM_ECLOSED. Thread: any.
 * Mirrors BeamMePrompty's Memory.terminate.
 */
ENGRAM_EXPORT int engram_manager_remove_source(engram_manager_t *mgr, const char *name, engram_cb cb, void *ud);

/* Makes name the default source. Returns 0, ENGRAM_EINVAL or ENGRAM_EUNKNOWN_SOURCE. Thread: any. */
ENGRAM_EXPORT int engram_manager_set_default_source(engram_manager_t *mgr, const char *name);

/*
 * Lists the sources: reply->info is an array of {"name","type","description","default"} in the order
 * added. Returns 0, ENGRAM_EINVAL, ENGRAM_ENOMEM or ENGRAM_ECLOSED. Thread: any.
 * Mirrors BeamMePrompty's MemoryManager.list_sources.
 */
ENGRAM_EXPORT int engram_manager_list_sources(engram_manager_t *mgr, const engram_opts_t *opts, engram_cb cb, void *ud);

/*
 * Registers a source type under a name usable as "type" in engram_manager_configure. The built-in types
 * (cache, sqlite, postgres, redis, vector, tiered) are always registered. Returns 0, ENGRAM_EINVAL, ENGRAM_EEXIST or
 * ENGRAM_ENOMEM. Thread: any.
 */
ENGRAM_EXPORT int engram_register_source_type(const char *type, const engram_source_vtable_t *vtable);

/* The vtable registered under type, or NULL. Thread: any. */
ENGRAM_EXPORT const engram_source_vtable_t *engram_source_type(const char *type);

/*
 * Adds the sources described by config_json:
 *   {"sources": [{"name": "cache", "type": "cache", "description": "...", "default": true,
 *                 "options": {...}}, ...]}      (a bare array of sources is accepted too)
 * "${NAME}" in any option string is replaced by the environment variable NAME (an unset variable is an
 * error). The whole text is validated first — a malformed document fails with ENGRAM_EINVAL and a message
 * naming the offending field, and adds nothing; then sources are added in order, and cb reports the first
 * failure (sources added before it stay). Returns 0 or ENGRAM_EINVAL/ENOMEM/ECLOSED; the validation error
 * message is available through engram_last_error() on the calling thread. Thread: any.
 */
ENGRAM_EXPORT int engram_manager_configure(engram_manager_t *mgr, const char *config_json, engram_cb cb, void *ud);

/*
 * The message of the last error an engram function returned on the calling thread (e.g. "key: empty"), or
 * "". Valid until the next engram call on this thread. Thread: any.
 */
ENGRAM_EXPORT const char *engram_last_error(void);

/* The loop the manager lives on (the caller's, or its own thread's). Thread: any. */
ENGRAM_EXPORT uv_loop_t *engram_manager_loop(engram_manager_t *mgr);

/* ------------------------------------------------------------------------------------------------------ */
/* Operations. All: Thread: any. Return 0 (one callback follows) or ENGRAM_EINVAL (engram_last_error says   */
/* which argument), ENGRAM_ENOMEM, ENGRAM_EUNKNOWN_SOURCE, ENGRAM_EBUSY (mailbox full), ENGRAM_ECLOSED.    */
/* opts may be NULL. Errors in the callback: those of the operation below, ENGRAM_ETIMEDOUT,              */
/* ENGRAM_ECANCELED, ENGRAM_EUNAVAILABLE and ENGRAM_EBACKEND.                                              */
/* ------------------------------------------------------------------------------------------------------ */

/* Stores value under key. Callback: ENGRAM_EEXIST (CREATE_ONLY), ENGRAM_ECONFLICT (if_version),
 * ENGRAM_ETOOBIG. Mirrors Memory.store. */
ENGRAM_EXPORT int engram_store(engram_manager_t *mgr, const char *key, const cJSON *value, const engram_opts_t *opts,
                 engram_cb cb, void *ud);

/* Stores n entries; items[i].status reports entry i. Mirrors Memory.store_many. */
ENGRAM_EXPORT int engram_store_many(engram_manager_t *mgr, const engram_entry_t *entries, size_t n, const engram_opts_t *opts,
                      engram_cb cb, void *ud);

/* Retrieves key. Callback: ENGRAM_ENOTFOUND (missing or expired). Mirrors Memory.retrieve. */
ENGRAM_EXPORT int engram_retrieve(engram_manager_t *mgr, const char *key, const engram_opts_t *opts, engram_cb cb, void *ud);

/* Retrieves n keys; items[i].status is 0 or ENGRAM_ENOTFOUND. Mirrors Memory.retrieve_many. */
ENGRAM_EXPORT int engram_retrieve_many(engram_manager_t *mgr, const char *const *keys, size_t n, const engram_opts_t *opts,
                         engram_cb cb, void *ud);

/* Searches one namespace: query's text / pattern / filter ranked in query.mode (text, vector or hybrid; 0 = the
 * source's default; vector and hybrid need a source with ENGRAM_SOURCE_SEARCH_MODES, else ENGRAM_ENOTSUP at once),
 * and the system-field ranges opts names (ENGRAM_OPT_*_RANGE; ENGRAM_ENOTSUP at once when the source cannot apply
 * them); several sources at once: engram_search_sources (engram/search.h). Items come by score, best first,
 * or in opts->order_by (then offset and limit apply after the order; ENGRAM_ETOOBIG in the callback when more
 * than ENGRAM_ORDER_MAX items match). Mirrors Memory.search (order_by: BeamMePrompty's search(..., order_by)). */
ENGRAM_EXPORT int engram_search(engram_manager_t *mgr, const engram_query_t *query, const engram_opts_t *opts, engram_cb cb,
                  void *ud);

/* Counts the items matching query and the ranges opts names (limit and offset ignored); reply->count. With
 * ENGRAM_OPT_NS_PREFIX, over every namespace under opts->ns (the sum of each one's count; query.text is then
 * refused with ENGRAM_EINVAL — count a prefix by pattern, filter and ranges). Mirrors Memory.count. */
ENGRAM_EXPORT int engram_count(engram_manager_t *mgr, const engram_query_t *query, const engram_opts_t *opts, engram_cb cb,
                 void *ud);

/* Runs fn on the current value and stores the result, atomically per key (a store conditional on the item fn
 * read — not only its version number: a key deleted and written again meanwhile fails the condition; on a source
 * without a native update, the tiered source or one with only the required methods, only when that delete and
 * write went through this manager — retried on conflict; the updates of one key made through one manager apply
 * in call order). fn_ud must stay valid until the callback. The item keeps its metadata. Expiry: with
 * ENGRAM_OPT_TTL the new value expires opts->ttl_ms (≥ 0 ms; 0 = at once) after the call, replacing any expiry it
 * had; without it the item keeps its existing expires_at_ms (a key the update creates never expires). Returns
 * ENGRAM_EINVAL for a negative ttl_ms ("opts.ttl_ms: ... is negative"). Callback: items[0] with the new value,
 * version and expires_at_ms; fn's error, ENGRAM_ECONFLICT after the retries. Mirrors Memory.update. */
ENGRAM_EXPORT int engram_update(engram_manager_t *mgr, const char *key, engram_update_fn fn, void *fn_ud,
                  const engram_opts_t *opts, engram_cb cb, void *ud);

/* Deletes key; deleting a missing key succeeds (count 0). Mirrors Memory.delete. */
ENGRAM_EXPORT int engram_delete(engram_manager_t *mgr, const char *key, const engram_opts_t *opts, engram_cb cb, void *ud);

/* Deletes n keys; reply->count = keys that existed. Mirrors Memory.delete_many. */
ENGRAM_EXPORT int engram_delete_many(engram_manager_t *mgr, const char *const *keys, size_t n, const engram_opts_t *opts,
                       engram_cb cb, void *ud);

/* Lists keys matching pattern (NULL = all) and the system-field ranges opts names, at most limit (1..100000; 0 =
 * 1,000, BeamMePrompty's default) per page, starting after cursor (NULL = the beginning; pass back reply->cursor
 * for the next page). By key ascending, or in opts->order_by: a cursor works only with the order that made it
 * (else ENGRAM_EINVAL in the callback), and more than ENGRAM_ORDER_MAX matches give ENGRAM_ETOOBIG. A cursor
 * visits every key that exists for the whole listing exactly once (in updated_at order, an item written during
 * the listing may move past it or back). With ENGRAM_OPT_NS_PREFIX the listing spans every namespace under
 * opts->ns, in (namespace, key) order, each item carrying its namespace (order_by must then be the default or
 * ENGRAM_ORDER_KEY ascending, else ENGRAM_EINVAL); a cursor naming a namespace outside the prefix is ENGRAM_EINVAL in
 * the callback; the last page is empty only when a pattern or ranges leave nothing after a full one. Mirrors Memory.list_keys
 * (LangGraph's search over a namespace prefix). */
ENGRAM_EXPORT int engram_list_keys(engram_manager_t *mgr, const char *pattern, int limit, const char *cursor,
                     const engram_opts_t *opts, engram_cb cb, void *ud);

/* reply->count = 1 when key exists (and has not expired), else 0. Mirrors Memory.exists?. */
ENGRAM_EXPORT int engram_exists(engram_manager_t *mgr, const char *key, const engram_opts_t *opts, engram_cb cb, void *ud);

/* Clears one namespace (opts->ns set) or, with ENGRAM_OPT_CONFIRM and opts->ns NULL, the whole source. With
 * ENGRAM_OPT_NS_PREFIX, every namespace under opts->ns, one after another (ENGRAM_OPT_CONFIRM is needed when the
 * prefix is "" or NULL, i.e. every namespace); reply->count is the items removed. The calls made on the source
 * through this manager after the clear wait until it is done, so what they write stays (their deadlines still
 * hold; a clear answered early, by its deadline, holds them until its backend has finished); not atomic across
 * namespaces for other writers: another process's write into a namespace already cleared stays. Subscribers see
 * one cleared event per namespace. Mirrors Memory.clear. */
ENGRAM_EXPORT int engram_clear(engram_manager_t *mgr, const engram_opts_t *opts, engram_cb cb, void *ud);

/*
 * Lists the namespaces of a source that hold at least one live item (LangGraph's list_namespaces): those under
 * the prefix opts->ns (NULL or "" = every one; "u1" gives "u1", "u1/a", ..., never "u10"), ascending bytewise,
 * each cut to its first max_depth levels ("/" separates levels; 0 = whole) and listed once. limit: 1..100000
 * namespaces per page (0 = 1,000); cursor: NULL, or reply->cursor of the previous page ("n:" + the last
 * namespace; anything else is ENGRAM_EINVAL at the call). Reply (ENGRAM_OP_LIST_NAMESPACES): items[i].ns the
 * namespaces (key ""), count = items, cursor NULL at the end (the last page may be empty). Other opts fields:
 * source, deadline_ms and cq. On every source, through list_keys: one listing page of one key per namespace
 * found (a seek on the SQL and Redis sources; a pass over the table on the cache and vector sources). Errors at
 * the call: ENGRAM_EINVAL (max_depth < 0, limit, cursor, opts.ns), ENGRAM_EUNKNOWN_SOURCE; in the callback: the
 * source's listing errors. Any thread.
 */
ENGRAM_EXPORT int engram_list_namespaces(engram_manager_t *mgr, int max_depth, int limit, const char *cursor,
                                         const engram_opts_t *opts, engram_cb cb, void *ud);

/* reply->info: {"name","type","description","default","health","items","mailbox_depth","inflight",
 * "ops","errors","latency_us":{"p50","p99","p999"}, ...the source's own fields}. Mirrors Memory.info. */
ENGRAM_EXPORT int engram_info(engram_manager_t *mgr, const engram_opts_t *opts, engram_cb cb, void *ud);

/* ------------------------------------------------------------------------------------------------------ */
/* Completion queues                                                                                       */
/* ------------------------------------------------------------------------------------------------------ */

/*
 * Creates a completion queue. loop = NULL: replies wait until engram_cq_poll is called (a game frame, a
 * thread with no libuv loop). loop ≠ NULL: the queue drains itself on that loop's thread. Returns 0,
 * ENGRAM_EINVAL or ENGRAM_ENOMEM. Thread: any (with a loop: that loop's thread).
 */
ENGRAM_EXPORT int engram_cq_new(engram_cq_t **out, uv_loop_t *loop);

/* Runs up to max (0 = all) waiting callbacks on the calling thread; returns how many ran. Thread: one thread
 * at a time. */
ENGRAM_EXPORT size_t engram_cq_poll(engram_cq_t *cq, size_t max);

/* Replies waiting in the queue. Thread: any. */
ENGRAM_EXPORT size_t engram_cq_pending(const engram_cq_t *cq);

/*
 * Frees a queue. Every call that named it must have been answered (or its manager shut down); replies still
 * waiting are run first. With a loop, the handle closes asynchronously and the memory is freed when the loop
 * runs it. Thread: the polling thread (with a loop: that loop's thread).
 */
ENGRAM_EXPORT void engram_cq_free(engram_cq_t *cq);

/* ------------------------------------------------------------------------------------------------------ */
/* Built-in sources                                                                                        */
/* ------------------------------------------------------------------------------------------------------ */

/* In-process hash table with TTL, LRU eviction and BM25 search. Options: {"max_entries": 0, "max_bytes": 0,
 * "sweep_interval_ms": 1000, "max_value_bytes": 16777216}. */
ENGRAM_EXPORT extern const engram_source_vtable_t engram_source_cache;

/* SQLite (embedded, persistent; its own actor thread; WAL, group commit). Options: {"path": ":memory:" | file,
 * "table": "engram_items", "synchronous": "full" | "normal", "busy_timeout_ms": 5000} (defaults shown first).
 * Schema and guarantees: docs/sources-sqlite.md. */
ENGRAM_EXPORT extern const engram_source_vtable_t engram_source_sqlite;

/* PostgreSQL (libpq, asynchronous, pipeline mode). Options: {"conninfo": URL or key=value, "schema": "public",
 * "table": "engram_items", "connections": 1, "statement_timeout_ms": 0, "connect_timeout_ms": 5000,
 * "wait_for_connection": false, "sweep_interval_ms": 60000, "max_value_bytes": 16777216, "reconnect_max_ms": 1000,
 * "gin_cleanup": true (merge the text index's pending list on a second, maintenance connection)}.
 * See docs/sources-postgres.md. */
ENGRAM_EXPORT extern const engram_source_vtable_t engram_source_postgres;

/* Redis (hiredis async, on the home loop). Options: {"url": "redis://[[user]:password@]host[:port][/db]"} or
 * {"host", "port", "db", "username", "password"}, "prefix": "engram:", "connect_timeout_ms": 2000,
 * "max_inflight": 1000, "wait_for_connection": false, "lazy_connect": false, "reconnect_min_ms": 50,
 * "reconnect_max_ms": 2000, "max_value_bytes": 16777216, "update_retries": 16, "scan_batch": 500, "store_batch": 64,
 * "search_cache_items": 250000 (items of cached text indexes, 0 = none)}.
 * See docs/sources-redis.md (data layout readable by redis-cli). */
ENGRAM_EXPORT extern const engram_source_vtable_t engram_source_redis;

/* In-process vector index with exact k-NN (its own actor thread). Options: {"dimension": 384, "metric": "cosine",
 * "text_fields": [...], "similarity_threshold": 0, "path": file, "max_items": 0}. */
ENGRAM_EXPORT extern const engram_source_vtable_t engram_source_vector;

/* Other sources of the same manager composed in order, fastest first, durable last (docs/tiered.md): reads tier by
 * tier with read repair, writes to every tier (acknowledged when the durable tier has them), search on one tier.
 * Options: {"tiers": ["cache", "persistent"], "search_tier": the last}. The tiers must be added first. */
ENGRAM_EXPORT extern const engram_source_vtable_t engram_source_tiered;

#ifdef __cplusplus
}
#endif

#include "engram/tools.h" /* the agent tools: memory_* tool definitions and the dispatcher */
#include "engram/vector.h" /* embedders for the vector source: interface, registry, built-in "hash" */
#include "engram/thread.h" /* conversation threads: append, windows, OpenAI / Anthropic renderings */
#include "engram/search.h" /* one search over several sources, fused (engram_search_sources) */

#endif /* ENGRAM_H */
