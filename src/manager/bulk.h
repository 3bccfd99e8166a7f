/*
 * bulk.h — internal submit paths for the front layers. For the export and import of whole sources (src/export/): a list_keys that
 * walks every namespace of a source (ENGRAM_REQ_ALL_NAMESPACES; the items carry their namespace) and a store that
 * writes an item exactly as given — value, metadata, expiry, version and timestamps (ENGRAM_REQ_REPLICA). The
 * public operations offer neither: a user's store always counts its own version and time. Both are defined in
 * ops.c beside the public operations, validate like them and return like them (0, then one callback; or a
 * negative code and engram_last_error()). Thread: any.
 */
#ifndef ENGRAM_MANAGER_BULK_H
#define ENGRAM_MANAGER_BULK_H

#include <stdint.h>

#include "engram.h"
#include "engram/source.h"

/* engram_list_keys over every namespace of opts->source (opts->ns is ignored); reply items carry key and ns,
 * in (ns, key) order; the cursor works as engram_list_keys's. */
int engram__list_keys_all(engram_manager_t *mgr, const char *pattern, int limit, const char *cursor,
                          const engram_opts_t *opts, engram_cb cb, void *ud);

/* A page of whole items for the export (ENGRAM_REQ_LIST_ITEMS, include/engram/source.h): as engram__list_keys_all
 * when opts->ns is NULL, else as engram_list_keys over opts->ns, and each item carries value (possibly cJSON_Raw
 * text, as engram__retrieve_many_text's), metadata, version and timestamps. A source whose vtable lacks
 * ENGRAM_SOURCE_LIST_ITEMS refuses it at once with ENGRAM_ENOTSUP (the export then lists keys and reads them). */
int engram__list_items(engram_manager_t *mgr, const char *pattern, int limit, const char *cursor,
                       const engram_opts_t *opts, engram_cb cb, void *ud);

/* engram_retrieve_many for the export: the request carries ENGRAM_REQ_JSON_TEXT, so a backend that keeps JSON text
 * (SQLite) may answer value and metadata as cJSON_Raw nodes holding their compact text (include/engram/source.h);
 * the caller must print them, never read them as trees. Validates and returns as engram_retrieve_many. */
int engram__retrieve_many_text(engram_manager_t *mgr, const char *const *keys, size_t n, const engram_opts_t *opts,
                               engram_cb cb, void *ud);

/* Stores key in opts->ns as a replica: the item is written exactly as given (no CREATE_ONLY or if_version check;
 * an existing item is replaced). expires_at_ms is absolute (0 = never); version ≥ 1. opts->flags, ttl_ms,
 * metadata and if_version are ignored. value and metadata (NULL = none) are taken, not copied: trees of their own
 * (detached from any parent), freed by the call whether it returns 0 or an error — an import hands over the trees
 * it parsed, which saves a copy and a free of each per item. A source whose vtable lacks ENGRAM_SOURCE_REPLICA
 * refuses it at once with ENGRAM_ENOTSUP. */
int engram__store_replica(engram_manager_t *mgr, const char *key, cJSON *value, cJSON *metadata,
                          int64_t expires_at_ms, uint64_t version, int64_t created_at_ms, int64_t updated_at_ms,
                          const engram_opts_t *opts, engram_cb cb, void *ud);

/* A batch of replicas of one namespace (opts->ns): store_many with ENGRAM_REQ_REPLICA, entry i written exactly
 * as given with expiry expires_at_ms[i] (absolute, 0 = never), version[i] ≥ 1, created_at_ms[i], updated_at_ms[i]
 * (entries[i].has_ttl and ttl_ms are ignored). Validates as engram_store_many; the reply is a store_many's (one item
 * and one status per entry). entries[i].value and .metadata are taken when it returns 0 (set to NULL there: no copy);
 * on any refusal they stay the caller's, so a caller refused with ENGRAM_EBUSY can send them again. A source whose
 * vtable lacks ENGRAM_SOURCE_REPLICA_MANY refuses it at once with ENGRAM_ENOTSUP. Thread: any. */
int engram__store_many_replica(engram_manager_t *mgr, engram_entry_t *entries, size_t n,
                               const int64_t *expires_at_ms, const uint64_t *version, const int64_t *created_at_ms,
                               const int64_t *updated_at_ms, const engram_opts_t *opts, engram_cb cb, void *ud);

/* engram_update whose function also produces writes to make with the new value (engram_update_writes_t,
 * include/engram/source.h): fn fills *writes each time it runs (the source may run it more than once), before
 * returning. A source with ENGRAM_SOURCE_UPDATE_WRITES makes them in the update's atomic step; for the others
 * the core makes them after the update and before the answer (actor/follow.c). The reply is the update's.
 * release (may be NULL) is called with fn_ud once the request is freed — after the callback, or later when the
 * call was answered early (deadline, cancellation) and the source still held it: fn_ud and *writes must live
 * until then. The conversation layer's appends (src/thread/). Thread: any. */
int engram__update_with_writes(engram_manager_t *mgr, const char *key, engram_update_fn fn, void *fn_ud,
                               engram_update_writes_t *writes, void (*release)(void *fn_ud),
                               const engram_opts_t *opts, engram_cb cb, void *ud);

#endif
