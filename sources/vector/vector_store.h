/*
 * vector_store.h — the vector source's persistence (vector_store.c): items and their vectors in a SQLite file.
 */
#ifndef ENGRAM_VECTOR_STORE_H
#define ENGRAM_VECTOR_STORE_H

#include <stddef.h>
#include <stdint.h>

typedef struct engram__vstore_s engram__vstore_t;

/* One persisted item; every pointer is borrowed (for load: valid during the callback). */
typedef struct {
  const char *ns, *key;
  size_t ns_len, key_len;
  const char *value, *meta; /* compact JSON; meta NULL = none */
  size_t value_len, meta_len;
  int64_t created_at_ms, updated_at_ms, expires_at_ms;
  uint64_t version;
  const float *vec;
  size_t dim;
  const void *terms; /* the item's term list (the built-in embedder's), or NULL */
  size_t terms_bytes;
} engram__vrow_t;

/* Opens (creating) path in WAL mode. full_sync: synchronous=FULL (survives power loss), else NORMAL (survives
 * a crash of the process). Returns 0 or ENGRAM_EBACKEND with a message in err. */
int engram__vstore_open(engram__vstore_t **out, const char *path, int full_sync, char *err, size_t errlen);
void engram__vstore_close(engram__vstore_t *st);
/* The last SQLite error message. */
const char *engram__vstore_errmsg(const engram__vstore_t *st);

/* Reads a setting: 1 found (copied into buf), 0 missing, ENGRAM_EBACKEND. */
int engram__vstore_get_meta(engram__vstore_t *st, const char *name, char *buf, size_t buflen);
int engram__vstore_set_meta(engram__vstore_t *st, const char *name, const char *value);
/* Items in the file (-1 on error). */
int64_t engram__vstore_count(engram__vstore_t *st);

/* Deletes the items expired at now, then calls fn for every other item; fn returning non-zero stops the load
 * with that status. Returns 0, fn's status or ENGRAM_EBACKEND. */
int engram__vstore_load(engram__vstore_t *st, int64_t now, int (*fn)(const engram__vrow_t *row, void *ud), void *ud);

/* Writes (inside the open transaction, if any). Return 0 or ENGRAM_EBACKEND. */
int engram__vstore_put(engram__vstore_t *st, const engram__vrow_t *row);
int engram__vstore_del(engram__vstore_t *st, const char *ns, size_t ns_len, const char *key, size_t key_len);
/* ns NULL: every namespace. */
int engram__vstore_clear(engram__vstore_t *st, const char *ns, size_t ns_len);

/* Group commit: begin opens a transaction when none is open; commit / rollback end it. */
int engram__vstore_begin(engram__vstore_t *st);
int engram__vstore_commit(engram__vstore_t *st);
void engram__vstore_rollback(engram__vstore_t *st);
int engram__vstore_in_txn(const engram__vstore_t *st);

/* The approximate index's saved graph (vector_hnsw.c's bytes): put replaces it (buf NULL: deletes it), inside the
 * open transaction if any; get reads it into *buf (free with engram_free) and returns 1, or 0 when the file has
 * none, or ENGRAM_ENOMEM / ENGRAM_EBACKEND. */
int engram__vstore_put_index(engram__vstore_t *st, const void *buf, size_t len);
int engram__vstore_get_index(engram__vstore_t *st, void **buf, size_t *len);

#endif
