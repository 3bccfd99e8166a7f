/*
 * bulk.h — two internal submit paths for the export and import of whole sources (src/export/): a list_keys that
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

/* engram_list_keys over every namespace of opts->source (opts->ns is ignored); reply items carry key and ns,
 * in (ns, key) order; the cursor works as engram_list_keys's. */
int engram__list_keys_all(engram_manager_t *mgr, const char *pattern, int limit, const char *cursor,
                          const engram_opts_t *opts, engram_cb cb, void *ud);

/* Stores key in opts->ns as a replica: the item is written exactly as given (no CREATE_ONLY or if_version check;
 * an existing item is replaced). expires_at_ms is absolute (0 = never); version ≥ 1. opts->flags, ttl_ms,
 * metadata and if_version are ignored. value and metadata (NULL = none) are taken, not copied: trees of their own
 * (detached from any parent), freed by the call whether it returns 0 or an error — an import hands over the trees
 * it parsed, which saves a copy and a free of each per item. A source whose vtable lacks ENGRAM_SOURCE_REPLICA
 * refuses it at once with ENGRAM_ENOTSUP. */
int engram__store_replica(engram_manager_t *mgr, const char *key, cJSON *value, cJSON *metadata,
                          int64_t expires_at_ms, uint64_t version, int64_t created_at_ms, int64_t updated_at_ms,
                          const engram_opts_t *opts, engram_cb cb, void *ud);

#endif
