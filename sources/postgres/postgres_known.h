/*
 * postgres_known.h — the rows this PostgreSQL source last wrote by an update (postgres_known.c): a small bounded
 * table, per source instance, of (namespace, key) → value, metadata, version, expiry, so that the next update of
 * the key — a conversation's next append — starts from that row instead of reading it (one statement instead of
 * two). The update's write stays conditional on the version AND the value it starts from, so a row another writer
 * changed meanwhile is never written over: the statement writes nothing and the update reads (postgres_update.c).
 *
 * Entries are dropped when this source writes the key otherwise (store, delete, their batches, clear), when a
 * connection is lost, and when the table is full (the oldest first). Home loop only, like the rest of the source.
 */
#ifndef ENGRAM_POSTGRES_KNOWN_H
#define ENGRAM_POSTGRES_KNOWN_H

#include "postgres_src.h"

#define PG_KNOWN_MAX 1024 /* rows kept at most per source instance */

/* Keeps the row of (ns, key): takes value and meta (either may be NULL: then nothing is kept and they are freed).
 * Replaces an entry of the key. Out of memory: nothing kept. */
void engram__pg_known_put(pg_t *pg, const char *ns, const char *key, cJSON *value, cJSON *meta, uint64_t version,
                          int64_t expires);
/* Takes the row of (ns, key) out of the table: 1 with *value (owned), *meta (owned, may be NULL), *version and
 * *expires set; 0 when there is none, or it had expired by now_ms (then it is dropped). */
int engram__pg_known_take(pg_t *pg, const char *ns, const char *key, int64_t now_ms, cJSON **value, cJSON **meta,
                          uint64_t *version, int64_t *expires);
/* Drops what req writes otherwise than by an update: the key of a store or delete, the keys of a store_many or
 * delete_many, every row of the namespace (or of all) for a clear. Other ops: nothing. */
void engram__pg_known_forget(pg_t *pg, const engram_request_t *req);
/* Drops every row (a lost connection; close). */
void engram__pg_known_clear(pg_t *pg);

#endif
