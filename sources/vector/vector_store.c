/*
 * vector_store.c — persistence for the vector source: every item with its vector (and, for the built-in
 * embedder, its term list) in one SQLite table, so that a restart loses nothing acknowledged and reopening does
 * not re-embed anything.
 *
 * The source writes ahead: each store, delete or clear is executed inside an open transaction before the
 * source changes its memory, and the call is acknowledged only after the transaction committed. The source
 * commits once per turn of its loop (group commit: every write that arrived in the same wake-up shares one
 * commit), in WAL mode with synchronous=NORMAL by default — a commit then survives the process being killed —
 * or FULL, which also survives a power cut. A second small table records the dimension and the embedder the
 * vectors were made with, so a file is never read with vectors of another space.
 *
 * Vectors and term lists are stored as BLOBs in the machine's byte order (float32 / {u32, f32} pairs); this
 * file does no endianness conversion, so a file moves between machines of the same byte order only.
 */
#include <stdio.h>
#include <string.h>
#include <sqlite3.h>

#include "engram/source.h"
#include "vector_store.h"

struct engram__vstore_s {
  sqlite3 *db;
  sqlite3_stmt *put, *del, *clear_ns, *clear_all;
  int in_txn;
};

static const char *const schema =
    "CREATE TABLE IF NOT EXISTS engram_vectors ("
    " ns TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, metadata TEXT,"
    " created_at_ms INTEGER NOT NULL, updated_at_ms INTEGER NOT NULL, expires_at_ms INTEGER NOT NULL,"
    " version INTEGER NOT NULL, vector BLOB NOT NULL, terms BLOB, PRIMARY KEY (ns, key));"
    "CREATE TABLE IF NOT EXISTS engram_vectors_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS engram_vectors_index (part INTEGER PRIMARY KEY, data BLOB NOT NULL);";

const char *engram__vstore_errmsg(const engram__vstore_t *st) { return st && st->db ? sqlite3_errmsg(st->db) : "out of memory"; }

void engram__vstore_close(engram__vstore_t *st) {
  if (st == NULL) return;
  if (st->in_txn) engram__vstore_rollback(st);
  sqlite3_finalize(st->put);
  sqlite3_finalize(st->del);
  sqlite3_finalize(st->clear_ns);
  sqlite3_finalize(st->clear_all);
  sqlite3_close(st->db);
  engram_free(st);
}

int engram__vstore_open(engram__vstore_t **out, const char *path, int full_sync, char *err, size_t errlen) {
  engram__vstore_t *st = engram_calloc(1, sizeof *st);
  char *msg = NULL;
  int rc;
  *out = NULL;
  if (st == NULL) {
    snprintf(err, errlen, "out of memory");
    return ENGRAM_ENOMEM;
  }
  rc = sqlite3_open_v2(path, &st->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
  if (rc == SQLITE_OK) rc = sqlite3_busy_timeout(st->db, 5000);
  if (rc == SQLITE_OK) rc = sqlite3_exec(st->db, "PRAGMA journal_mode=WAL", NULL, NULL, &msg);
  if (rc == SQLITE_OK)
    rc = sqlite3_exec(st->db, full_sync ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL", NULL, NULL, &msg);
  if (rc == SQLITE_OK) rc = sqlite3_exec(st->db, schema, NULL, NULL, &msg);
  if (rc == SQLITE_OK)
    rc = sqlite3_prepare_v2(st->db,
                            "INSERT OR REPLACE INTO engram_vectors (ns, key, value, metadata, created_at_ms,"
                            " updated_at_ms, expires_at_ms, version, vector, terms) VALUES (?,?,?,?,?,?,?,?,?,?)",
                            -1, &st->put, NULL);
  if (rc == SQLITE_OK)
    rc = sqlite3_prepare_v2(st->db, "DELETE FROM engram_vectors WHERE ns = ? AND key = ?", -1, &st->del, NULL);
  if (rc == SQLITE_OK)
    rc = sqlite3_prepare_v2(st->db, "DELETE FROM engram_vectors WHERE ns = ?", -1, &st->clear_ns, NULL);
  if (rc == SQLITE_OK) rc = sqlite3_prepare_v2(st->db, "DELETE FROM engram_vectors", -1, &st->clear_all, NULL);
  if (rc != SQLITE_OK) {
    snprintf(err, errlen, "sqlite file \"%s\": %s", path, msg ? msg : st->db ? sqlite3_errmsg(st->db) : sqlite3_errstr(rc));
    sqlite3_free(msg);
    engram__vstore_close(st);
    return ENGRAM_EBACKEND;
  }
  *out = st;
  return 0;
}

int engram__vstore_get_meta(engram__vstore_t *st, const char *name, char *buf, size_t buflen) {
  sqlite3_stmt *s;
  int rc, found = 0;
  if (sqlite3_prepare_v2(st->db, "SELECT value FROM engram_vectors_meta WHERE name = ?", -1, &s, NULL) != SQLITE_OK)
    return ENGRAM_EBACKEND;
  sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
  rc = sqlite3_step(s);
  if (rc == SQLITE_ROW) {
    snprintf(buf, buflen, "%s", (const char *)sqlite3_column_text(s, 0));
    found = 1;
  }
  sqlite3_finalize(s);
  return rc == SQLITE_ROW || rc == SQLITE_DONE ? found : ENGRAM_EBACKEND;
}

int engram__vstore_set_meta(engram__vstore_t *st, const char *name, const char *value) {
  sqlite3_stmt *s;
  int rc;
  if (sqlite3_prepare_v2(st->db, "INSERT OR REPLACE INTO engram_vectors_meta (name, value) VALUES (?, ?)", -1, &s,
                         NULL) != SQLITE_OK)
    return ENGRAM_EBACKEND;
  sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
  sqlite3_bind_text(s, 2, value, -1, SQLITE_STATIC);
  rc = sqlite3_step(s);
  sqlite3_finalize(s);
  return rc == SQLITE_DONE ? 0 : ENGRAM_EBACKEND;
}

int64_t engram__vstore_count(engram__vstore_t *st) {
  sqlite3_stmt *s;
  int64_t n = -1;
  if (sqlite3_prepare_v2(st->db, "SELECT count(*) FROM engram_vectors", -1, &s, NULL) != SQLITE_OK) return -1;
  if (sqlite3_step(s) == SQLITE_ROW) n = sqlite3_column_int64(s, 0);
  sqlite3_finalize(s);
  return n;
}

int engram__vstore_load(engram__vstore_t *st, int64_t now, int (*fn)(const engram__vrow_t *row, void *ud), void *ud) {
  sqlite3_stmt *s;
  int rc = 0, step;
  char sql[128];
  snprintf(sql, sizeof sql, "DELETE FROM engram_vectors WHERE expires_at_ms != 0 AND expires_at_ms <= %lld",
           (long long)now);
  if (sqlite3_exec(st->db, sql, NULL, NULL, NULL) != SQLITE_OK) return ENGRAM_EBACKEND;
  if (sqlite3_prepare_v2(st->db,
                         "SELECT ns, key, value, metadata, created_at_ms, updated_at_ms, expires_at_ms, version,"
                         " vector, terms FROM engram_vectors",
                         -1, &s, NULL) != SQLITE_OK)
    return ENGRAM_EBACKEND;
  while ((step = sqlite3_step(s)) == SQLITE_ROW) {
    engram__vrow_t r;
    memset(&r, 0, sizeof r);
    r.ns = (const char *)sqlite3_column_text(s, 0);
    r.ns_len = (size_t)sqlite3_column_bytes(s, 0);
    r.key = (const char *)sqlite3_column_text(s, 1);
    r.key_len = (size_t)sqlite3_column_bytes(s, 1);
    r.value = (const char *)sqlite3_column_text(s, 2);
    r.value_len = (size_t)sqlite3_column_bytes(s, 2);
    if (sqlite3_column_type(s, 3) != SQLITE_NULL) {
      r.meta = (const char *)sqlite3_column_text(s, 3);
      r.meta_len = (size_t)sqlite3_column_bytes(s, 3);
    }
    r.created_at_ms = sqlite3_column_int64(s, 4);
    r.updated_at_ms = sqlite3_column_int64(s, 5);
    r.expires_at_ms = sqlite3_column_int64(s, 6);
    r.version = (uint64_t)sqlite3_column_int64(s, 7);
    r.vec = sqlite3_column_blob(s, 8);
    r.dim = (size_t)sqlite3_column_bytes(s, 8) / sizeof(float);
    if (sqlite3_column_type(s, 9) != SQLITE_NULL) {
      r.terms = sqlite3_column_blob(s, 9);
      r.terms_bytes = (size_t)sqlite3_column_bytes(s, 9);
    }
    if (r.ns == NULL) r.ns = "";
    if (r.key == NULL || r.value == NULL) continue; /* not written by this source */
    if ((rc = fn(&r, ud)) != 0) break;
  }
  if (rc == 0 && step != SQLITE_DONE) rc = ENGRAM_EBACKEND;
  sqlite3_finalize(s);
  return rc;
}

static int run(sqlite3_stmt *s) {
  int rc = sqlite3_step(s);
  sqlite3_reset(s);
  sqlite3_clear_bindings(s);
  return rc == SQLITE_DONE ? 0 : ENGRAM_EBACKEND;
}

int engram__vstore_put(engram__vstore_t *st, const engram__vrow_t *r) {
  sqlite3_stmt *s = st->put;
  sqlite3_bind_text(s, 1, r->ns, (int)r->ns_len, SQLITE_STATIC);
  sqlite3_bind_text(s, 2, r->key, (int)r->key_len, SQLITE_STATIC);
  sqlite3_bind_text(s, 3, r->value, (int)r->value_len, SQLITE_STATIC);
  if (r->meta) sqlite3_bind_text(s, 4, r->meta, (int)r->meta_len, SQLITE_STATIC);
  else sqlite3_bind_null(s, 4);
  sqlite3_bind_int64(s, 5, r->created_at_ms);
  sqlite3_bind_int64(s, 6, r->updated_at_ms);
  sqlite3_bind_int64(s, 7, r->expires_at_ms);
  sqlite3_bind_int64(s, 8, (sqlite3_int64)r->version);
  sqlite3_bind_blob(s, 9, r->vec, (int)(r->dim * sizeof(float)), SQLITE_STATIC);
  if (r->terms) sqlite3_bind_blob(s, 10, r->terms, (int)r->terms_bytes, SQLITE_STATIC);
  else sqlite3_bind_null(s, 10);
  return run(s);
}

int engram__vstore_del(engram__vstore_t *st, const char *ns, size_t ns_len, const char *key, size_t key_len) {
  sqlite3_bind_text(st->del, 1, ns, (int)ns_len, SQLITE_STATIC);
  sqlite3_bind_text(st->del, 2, key, (int)key_len, SQLITE_STATIC);
  return run(st->del);
}

int engram__vstore_clear(engram__vstore_t *st, const char *ns, size_t ns_len) {
  if (ns == NULL) return run(st->clear_all);
  sqlite3_bind_text(st->clear_ns, 1, ns, (int)ns_len, SQLITE_STATIC);
  return run(st->clear_ns);
}

int engram__vstore_begin(engram__vstore_t *st) {
  if (st->in_txn) return 0;
  if (sqlite3_exec(st->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) return ENGRAM_EBACKEND;
  st->in_txn = 1;
  return 0;
}

int engram__vstore_commit(engram__vstore_t *st) {
  if (!st->in_txn) return 0;
  if (sqlite3_exec(st->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) return ENGRAM_EBACKEND;
  st->in_txn = 0;
  return 0;
}

void engram__vstore_rollback(engram__vstore_t *st) {
  if (!st->in_txn) return;
  sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
  st->in_txn = 0;
}

int engram__vstore_in_txn(const engram__vstore_t *st) { return st->in_txn; }

/* ---- The approximate index's graph: one byte string in parts of at most 64 MiB ---- */

#define INDEX_PART ((size_t)64 << 20)

int engram__vstore_put_index(engram__vstore_t *st, const void *buf, size_t len) {
  sqlite3_stmt *s = NULL;
  size_t off;
  int rc = sqlite3_exec(st->db, "DELETE FROM engram_vectors_index", NULL, NULL, NULL);
  if (rc == SQLITE_OK && buf != NULL)
    rc = sqlite3_prepare_v2(st->db, "INSERT INTO engram_vectors_index (part, data) VALUES (?, ?)", -1, &s, NULL);
  for (off = 0; rc == SQLITE_OK && buf != NULL && off < len; off += INDEX_PART) {
    size_t n = len - off < INDEX_PART ? len - off : INDEX_PART;
    sqlite3_bind_int64(s, 1, (sqlite3_int64)(off / INDEX_PART));
    sqlite3_bind_blob(s, 2, (const char *)buf + off, (int)n, SQLITE_STATIC);
    rc = sqlite3_step(s) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
    sqlite3_reset(s);
  }
  sqlite3_finalize(s);
  return rc == SQLITE_OK ? 0 : ENGRAM_EBACKEND;
}

int engram__vstore_get_index(engram__vstore_t *st, void **buf, size_t *len) {
  sqlite3_stmt *s;
  unsigned char *b = NULL;
  size_t n = 0;
  int step;
  *buf = NULL;
  *len = 0;
  if (sqlite3_prepare_v2(st->db, "SELECT data FROM engram_vectors_index ORDER BY part", -1, &s, NULL) != SQLITE_OK)
    return ENGRAM_EBACKEND;
  while ((step = sqlite3_step(s)) == SQLITE_ROW) {
    size_t m = (size_t)sqlite3_column_bytes(s, 0);
    unsigned char *nb = engram_realloc(b, n + m + 1);
    if (nb == NULL) {
      engram_free(b);
      sqlite3_finalize(s);
      return ENGRAM_ENOMEM;
    }
    b = nb;
    if (m) memcpy(b + n, sqlite3_column_blob(s, 0), m);
    n += m;
  }
  sqlite3_finalize(s);
  if (step != SQLITE_DONE) {
    engram_free(b);
    return ENGRAM_EBACKEND;
  }
  *buf = b;
  *len = n;
  return b != NULL;
}
