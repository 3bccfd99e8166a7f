/*
 * sqlite.c — the SQLite source: persistent memory in one table of an SQLite file (or ":memory:"), on an actor
 * thread of its own because every SQLite call blocks. This file holds the key-value methods (store, update,
 * retrieve, exists, delete, their batch forms, clear, info) and the vtable. It is the top of the backend: it
 * calls the other files and none calls it. sqlite_query.c holds search, count and list_keys; sqlite_db.c the
 * connection, group commit, sweep and schema; sqlite_text.c the text search's BM25 index; sqlite_ckpt.c the WAL checkpointer (its counters, for info);
 * engram_json_print (the core's printer) prints values and metadata.
 *
 * Every write joins the group's transaction and is completed only after the group's COMMIT returned (see
 * sqlite_db.c), so an acknowledged write is in the file. Conditional writes are single statements (an upsert,
 * an insert that may replace only an expired row, an update guarded by the version), so the outcome of one
 * call never depends on another connection's timing: BEGIN IMMEDIATE holds the write lock for the group.
 * A plain store is one prepared upsert; only an overwrite reads the row's version back. A store flagged
 * ENGRAM_REQ_REPLICA (a tiered source's copy, ENGRAM_SOURCE_REPLICA) writes the row with the version and
 * timestamps it was given, and so does each entry of a store_many flagged so (an import's batch,
 * ENGRAM_SOURCE_REPLICA_MANY: req->entry_version ...). Values are always bound as parameters, never formatted
 * into SQL.
 */
#include <stdio.h>
#include <string.h>

#include "sqlite_ckpt.h"
#include "sqlite_db.h"
#include "sqlite_jsontext.h"
#include "sqlite_query.h"
#include "sqlite_text.h"


/* Compact JSON text of a value or metadata into a buffer kept from one store to the next (the core's printer,
 * exact numbers); NULL when memory runs out. */
static const char *sq_print(char **buf, size_t *cap, const cJSON *v) {
  return engram_json_print(v, buf, cap, NULL) == 0 ? *buf : NULL;
}
static void bind_key(sqlite3_stmt *st, const engram_request_t *req, const char *key, size_t key_len) {
  sqlite3_bind_text(st, 1, req->ns, (int)req->ns_len, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, key, (int)key_len, SQLITE_STATIC);
}

/* ---- Writes ---- */

typedef struct {
  int64_t created, expires;
  uint64_t version;
} written_t;

/* Reads back version and created_at of a row just overwritten. */
static int read_meta(sq_t *s, const engram_request_t *req, const char *key, size_t key_len, written_t *w) {
  sqlite3_stmt *st = engram__sq_stmt(s, SQ_GET_META);
  int rc;
  if (st == NULL) return ENGRAM_EBACKEND;
  bind_key(st, req, key, key_len);
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    w->version = (uint64_t)sqlite3_column_int64(st, 0);
    w->created = sqlite3_column_int64(st, 1);
    rc = 0;
  } else {
    rc = engram__sq_error(s, rc);
  }
  sqlite3_reset(st);
  return rc;
}

/* Is there a live row under key? 1, 0, or a negative status. */
static int live_row(sq_t *s, const engram_request_t *req, const char *key, size_t key_len, int64_t now) {
  sqlite3_stmt *st = engram__sq_stmt(s, SQ_GET_EXPIRES);
  int rc;
  if (st == NULL) return ENGRAM_EBACKEND;
  bind_key(st, req, key, key_len);
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    int64_t e = sqlite3_column_int64(st, 0);
    rc = e == 0 || e > now;
  } else if (rc == SQLITE_DONE) {
    rc = 0;
  } else {
    rc = engram__sq_error(s, rc);
  }
  sqlite3_reset(st);
  return rc;
}

/* A replica's system fields (ENGRAM_REQ_REPLICA): the request's for a store, entry i's for a store_many. */
typedef struct {
  uint64_t version;
  int64_t created, updated;
} given_t;

static given_t given_of(const engram_request_t *req, size_t i) {
  given_t g;
  if (req->op == ENGRAM_OP_STORE_MANY && req->entry_version != NULL) {
    g.version = req->entry_version[i];
    g.created = req->entry_created_at_ms[i];
    g.updated = req->entry_updated_at_ms[i];
  } else {
    g.version = req->version;
    g.created = req->created_at_ms;
    g.updated = req->updated_at_ms;
  }
  return g;
}

/* Writes one item inside the group's transaction (entry i of a store_many, 0 for a store). Returns 0 (w filled),
 * ENGRAM_EEXIST, ENGRAM_ECONFLICT or an error with s->err set. */
static int write_one(sq_t *s, const engram_request_t *req, size_t i, const char *key, size_t key_len,
                     const cJSON *value, const cJSON *meta, int64_t expires, uint64_t if_version, unsigned flags,
                     written_t *w) {
  int64_t now = req->now_ms;
  const char *vtext, *mtext = NULL;
  sq_stmt_id id;
  sqlite3_stmt *st;
  int rc;
  if (!(flags & ENGRAM_REQ_REPLICA) && (flags & ENGRAM_OPT_CREATE_ONLY) && if_version != 0) {
    /* Create-only and conditional on a version: nothing can satisfy both. */
    rc = live_row(s, req, key, key_len, now);
    return rc < 0 ? rc : rc ? ENGRAM_EEXIST : ENGRAM_ECONFLICT;
  }
  if ((vtext = sq_print(&s->vbuf, &s->vbuf_cap, value)) == NULL ||
      (meta != NULL && (mtext = sq_print(&s->mbuf, &s->mbuf_cap, meta)) == NULL)) {
    snprintf(s->err, sizeof s->err, "out of memory");
    return ENGRAM_ENOMEM;
  }
  if (flags & ENGRAM_REQ_REPLICA) {
    given_t g = given_of(req, i);
    if ((st = engram__sq_stmt(s, SQ_REPLICA)) == NULL) return ENGRAM_EBACKEND;
    bind_key(st, req, key, key_len);
    sqlite3_bind_text(st, 3, vtext, -1, SQLITE_STATIC);
    engram__sq_bind_text(st, 4, mtext, mtext ? strlen(mtext) : 0);
    sqlite3_bind_int64(st, 5, g.created);
    sqlite3_bind_int64(st, 6, expires);
    sqlite3_bind_int64(st, 7, g.updated);
    sqlite3_bind_int64(st, 8, (sqlite3_int64)g.version);
    if ((rc = engram__sq_exec(s, st)) != 0) return rc;
    w->expires = expires;
    w->version = g.version;
    w->created = g.created;
    return 0;
  }
  id = (flags & ENGRAM_OPT_CREATE_ONLY) ? SQ_CREATE : if_version != 0 ? SQ_UPDATE_IF : SQ_UPSERT;
  if ((st = engram__sq_stmt(s, id)) == NULL) return ENGRAM_EBACKEND;
  bind_key(st, req, key, key_len);
  sqlite3_bind_text(st, 3, vtext, -1, SQLITE_STATIC);
  engram__sq_bind_text(st, 4, mtext, mtext ? strlen(mtext) : 0);
  sqlite3_bind_int64(st, 5, now);
  sqlite3_bind_int64(st, 6, expires);
  if (id == SQ_UPDATE_IF) sqlite3_bind_int64(st, 7, (sqlite3_int64)if_version);
  if (id == SQ_UPSERT) sqlite3_set_last_insert_rowid(s->db, 0);
  if ((rc = engram__sq_exec(s, st)) != 0) return rc;
  w->expires = expires;
  w->version = 1;
  w->created = now;
  switch (id) {
    case SQ_CREATE: return sqlite3_changes(s->db) == 0 ? ENGRAM_EEXIST : 0;
    case SQ_UPDATE_IF:
      if (sqlite3_changes(s->db) == 0) return ENGRAM_ECONFLICT;
      return read_meta(s, req, key, key_len, w);
    default:
      /* An insert sets the last rowid; an overwrite leaves our 0 there and has a version to read back. */
      return sqlite3_last_insert_rowid(s->db) != 0 ? 0 : read_meta(s, req, key, key_len, w);
  }
}

/* Fails a write call whose statement failed (rc), with the stock messages for the expected outcomes. */
static void fail_write(sq_t *s, engram_request_t *req, const char *key, int rc, uint64_t if_version) {
  if (rc != ENGRAM_EEXIST && rc != ENGRAM_ECONFLICT) engram__sq_txn_check(s);
  if (rc == ENGRAM_EEXIST) engram_request_fail_exists(req, key);
  else if (rc == ENGRAM_ECONFLICT) engram_request_fail_conflict(req, key, if_version);
  else if (rc == ENGRAM_ENOMEM) engram_request_complete(req, rc);
  else engram_request_fail(req, rc, "key '%s': %s", key, s->err);
}

/* Opens the group's transaction for a write call; fails the call and returns non-zero when it cannot. */
static int begin_write(sq_t *s, engram_request_t *req) {
  int rc;
  if (engram_request_answered(req)) { /* deadline passed or canceled: do not write */
    engram_request_complete(req, ENGRAM_ECANCELED);
    return 1;
  }
  if ((rc = engram__sq_txn_begin(s)) != 0) {
    engram_request_fail(req, rc, "cannot begin a write transaction: %s", s->err);
    return 1;
  }
  return 0;
}

static void sq_store(engram_source_t *src, engram_request_t *req) {
  sq_t *s = engram_source_state(src);
  written_t w;
  engram_item_t it;
  int rc;
  if (begin_write(s, req)) return;
  rc = write_one(s, req, 0, req->key, req->key_len, req->value, req->metadata, req->expires_at_ms, req->if_version,
                 req->flags, &w);
  if (rc != 0) {
    fail_write(s, req, req->key, rc, req->if_version);
    return;
  }
  engram__sq_text_written(s, req->ns, req->ns_len, req->key, req->key_len, req->value, w.expires);
  memset(&it, 0, sizeof it);
  it.key = req->key;
  it.ns = req->ns;
  if (req->metadata != NULL && (it.metadata = engram_request_take_metadata(req)) == NULL) {
    engram_request_complete(req, ENGRAM_ENOMEM); /* stored; only the reply is short (its copy: source.h) */
    return;
  }
  it.created_at_ms = w.created;
  it.updated_at_ms = (req->flags & ENGRAM_REQ_REPLICA) ? req->updated_at_ms : req->now_ms;
  it.expires_at_ms = w.expires;
  it.version = w.version;
  it.score = 1.0;
  if (engram_reply_add(req, &it, ENGRAM_REPLY_OWN_METADATA) != 0) {
    engram_request_complete(req, ENGRAM_ENOMEM); /* stored; only the reply is short */
    return;
  }
  engram__sq_pending_add(s, req);
}

static void sq_store_many(engram_source_t *src, engram_request_t *req) {
  sq_t *s = engram_source_state(src);
  size_t i, ok = 0;
  engram_item_t it;
  if (begin_write(s, req)) return;
  for (i = 0; i < req->n; i++) {
    engram_entry_t *en = &req->entries[i];
    written_t w;
    int rc = write_one(s, req, i, en->key, strlen(en->key), en->value, en->metadata, req->entry_expires_at_ms[i], 0,
                       req->flags, &w);
    memset(&it, 0, sizeof it);
    it.key = en->key;
    it.ns = req->ns;
    if (rc == 0) {
      engram__sq_text_written(s, req->ns, req->ns_len, en->key, strlen(en->key), en->value, w.expires);
      it.metadata = en->metadata;
      en->metadata = NULL; /* handed to the reply */
      it.created_at_ms = w.created;
      it.updated_at_ms = (req->flags & ENGRAM_REQ_REPLICA) ? given_of(req, i).updated : req->now_ms;
      it.expires_at_ms = w.expires;
      it.version = w.version;
      it.score = 1.0;
      ok++;
    } else if (rc != ENGRAM_EEXIST && engram__sq_txn_check(s)) {
      /* The transaction is gone, and with it this call's earlier entries. */
      engram_request_fail(req, ENGRAM_EBACKEND, "the transaction was rolled back at entry %zu: %s", i, s->err);
      return;
    }
    if (engram_reply_add(req, &it, ENGRAM_REPLY_OWN_METADATA) != 0) {
      engram_request_complete(req, ENGRAM_ENOMEM);
      return;
    }
    engram_reply_set_item_status(req, i, rc);
  }
  engram_reply_set_count(req, ok);
  engram__sq_pending_add(s, req);
}

/* ---- Reads ---- */

/* Positions SQ_GET on key's row. Returns 1 (live row; the caller resets *out), 0 (missing, or expired and then
 * deleted), or a negative status with s->err set. */
static int get_row_of(sq_t *s, sq_stmt_id id, const engram_request_t *req, const char *key, size_t key_len,
                      int64_t now, sqlite3_stmt **out) {
  sqlite3_stmt *st = engram__sq_stmt(s, id);
  int64_t expires;
  int rc;
  if (st == NULL) return ENGRAM_EBACKEND;
  bind_key(st, req, key, key_len);
  rc = sqlite3_step(st);
  if (rc == SQLITE_DONE) {
    sqlite3_reset(st);
    return 0;
  }
  if (rc != SQLITE_ROW) {
    rc = engram__sq_error(s, rc);
    sqlite3_reset(st);
    return rc;
  }
  expires = sqlite3_column_int64(st, ROW_EXPIRES);
  if (expires == 0 || expires > now) {
    *out = st;
    return 1;
  }
  sqlite3_reset(st);
  /* Expired: not found, and removed on the way (within the group; the sweep would get it otherwise). */
  if (engram__sq_txn_begin(s) == 0) {
    rc = engram__sq_delete_where(s, SQ_DELETE_EXPIRED, req->ns, req->ns_len, key, key_len, now);
    if (rc > 0) engram__sq_text_removed(s, req->ns, req->ns_len, key, key_len);
    if (rc >= 0) s->expirations += (uint64_t)rc;
    else engram__sq_txn_check(s);
  }
  return 0;
}

static int get_row(sq_t *s, const engram_request_t *req, const char *key, size_t key_len, int64_t now,
                   sqlite3_stmt **out) {
  return get_row_of(s, SQ_GET, req, key, key_len, now, out);
}

static void sq_retrieve(engram_source_t *src, engram_request_t *req) {
  sq_t *s = engram_source_state(src);
  sqlite3_stmt *st = NULL;
  int rc;
  engram__sq_read_begin(s);
  rc = get_row(s, req, req->key, req->key_len, engram_now_ms(), &st);
  if (rc == 0) {
    engram_request_fail_not_found(req, NULL);
    return;
  }
  if (rc > 0) {
    rc = engram__sq_add_row(s, req, st, 0, req->ns, req->key, 1, (req->flags & ENGRAM_OPT_INCLUDE_METADATA) != 0,
                            NULL, 1.0);
    sqlite3_reset(st);
  }
  if (rc == 0 || rc == ENGRAM_ENOMEM) engram_request_complete(req, rc);
  else engram_request_fail(req, rc, "key '%s': %s", req->key, s->err);
}

static void sq_retrieve_many(engram_source_t *src, engram_request_t *req) {
  sq_t *s = engram_source_state(src);
  int64_t now = engram_now_ms();
  size_t i, found = 0;
  engram_item_t blank;
  memset(&blank, 0, sizeof blank);
  engram__sq_read_begin(s);
  for (i = 0; i < req->n; i++) {
    sqlite3_stmt *st = NULL;
    int rc = get_row(s, req, req->keys[i], strlen(req->keys[i]), now, &st);
    if (rc > 0) {
      rc = (req->flags & ENGRAM_REQ_JSON_TEXT) /* an export's read: the stored text as is (sqlite_jsontext.c) */
               ? engram__sq_add_row_text(s, req, st, req->ns, req->keys[i],
                                         (req->flags & ENGRAM_OPT_INCLUDE_METADATA) != 0)
               : engram__sq_add_row(s, req, st, 0, req->ns, req->keys[i], 1,
                                    (req->flags & ENGRAM_OPT_INCLUDE_METADATA) != 0, NULL, 1.0);
      sqlite3_reset(st);
      found += rc == 0;
    } else if (rc == 0) {
      rc = ENGRAM_ENOTFOUND;
    }
    if (rc == ENGRAM_ENOMEM) {
      engram_request_complete(req, rc);
      return;
    }
    if (rc != 0) { /* keep items aligned with the input: a placeholder carrying the key and the status */
      blank.key = req->keys[i];
      blank.ns = req->ns;
      if (engram_reply_add(req, &blank, 0) != 0) {
        engram_request_complete(req, ENGRAM_ENOMEM);
        return;
      }
    }
    engram_reply_set_item_status(req, i, rc);
  }
  engram_reply_set_count(req, found);
  engram_request_complete(req, 0);
}

static void sq_exists(engram_source_t *src, engram_request_t *req) {
  sq_t *s = engram_source_state(src);
  sqlite3_stmt *st = NULL;
  int rc;
  engram__sq_read_begin(s);
  rc = get_row(s, req, req->key, req->key_len, engram_now_ms(), &st);
  if (rc > 0) sqlite3_reset(st);
  if (rc < 0) {
    engram_request_fail(req, rc, "key '%s': %s", req->key, s->err);
    return;
  }
  engram_reply_set_count(req, rc > 0);
  engram_request_complete(req, 0);
}

/* ---- Delete, update, clear ---- */

/* Deletes key (we hold the write lock, so the row found is the row deleted): 1 when a live row went, 0 when
 * there was none (an expired one goes too, uncounted). */
static int delete_one(sq_t *s, const engram_request_t *req, const char *key, size_t key_len, int64_t now) {
  sqlite3_stmt *st = engram__sq_stmt(s, SQ_FIND_ROWID);
  sqlite3_int64 rowid;
  int64_t expires;
  int rc;
  if (st == NULL) return ENGRAM_EBACKEND;
  bind_key(st, req, key, key_len);
  rc = sqlite3_step(st);
  if (rc != SQLITE_ROW) {
    rc = rc == SQLITE_DONE ? 0 : engram__sq_error(s, rc);
    sqlite3_reset(st);
    return rc;
  }
  rowid = sqlite3_column_int64(st, 0);
  expires = sqlite3_column_int64(st, 1);
  sqlite3_reset(st);
  if ((st = engram__sq_stmt(s, SQ_DELETE_ROWID)) == NULL) return ENGRAM_EBACKEND;
  sqlite3_bind_int64(st, 1, rowid);
  if ((rc = engram__sq_exec(s, st)) != 0) return rc;
  engram__sq_text_removed(s, req->ns, req->ns_len, key, key_len);
  if (expires == 0 || expires > now) return 1;
  s->expirations++;
  return 0;
}

static void sq_delete(engram_source_t *src, engram_request_t *req) {
  sq_t *s = engram_source_state(src);
  int rc;
  if (begin_write(s, req)) return;
  if ((rc = delete_one(s, req, req->key, req->key_len, engram_now_ms())) < 0) {
    fail_write(s, req, req->key, rc, 0);
    return;
  }
  engram_reply_set_count(req, (uint64_t)rc);
  engram__sq_pending_add(s, req);
}

static void sq_delete_many(engram_source_t *src, engram_request_t *req) {
  sq_t *s = engram_source_state(src);
  int64_t now = engram_now_ms();
  size_t i;
  uint64_t n = 0;
  if (begin_write(s, req)) return;
  for (i = 0; i < req->n; i++) {
    int rc = delete_one(s, req, req->keys[i], strlen(req->keys[i]), now);
    if (rc < 0) {
      fail_write(s, req, req->keys[i], rc, 0);
      return;
    }
    n += (uint64_t)rc;
  }
  engram_reply_set_count(req, n);
  engram__sq_pending_add(s, req);
}

/* The writes that ride on an update (ENGRAM_SOURCE_UPDATE_WRITES), made after the updated item inside a
 * savepoint of the group's transaction, so that they and the update stay or go together: 0, or an error with
 * s->err set and everything since the savepoint undone (the caller fails the update). */
static int make_writes(sq_t *s, engram_request_t *req) {
  engram_update_writes_t *w = req->writes;
  int64_t now = engram_now_ms();
  size_t i;
  int rc = 0;
  for (i = 0; rc == 0 && i < w->n_store; i++) {
    const engram_entry_t *en = &w->store[i];
    written_t wr;
    rc = write_one(s, req, 0, en->key, strlen(en->key), en->value, en->metadata, w->store_expires_at_ms[i], 0, 0, &wr);
    if (rc == 0) {
      w->store_version[i] = wr.version;
      engram__sq_text_written(s, req->ns, req->ns_len, en->key, strlen(en->key), en->value, wr.expires);
    }
  }
  for (i = 0; rc == 0 && i < w->n_delete; i++) {
    int n = delete_one(s, req, w->delete_keys[i], strlen(w->delete_keys[i]), now);
    if (n < 0) rc = n;
    else w->deleted += (uint64_t)n;
  }
  return rc;
}

/* Runs one of the savepoint statements (SQ_SAVEPOINT, SQ_RELEASE, SQ_ROLLBACK_TO): 0, or non-zero with s->err set.
 * The error of an earlier statement, already in s->err, is kept when a ROLLBACK TO or RELEASE after it fails. */
static int savepoint(sq_t *s, sq_stmt_id id) {
  char keep[sizeof s->err];
  sqlite3_stmt *st;
  int rc;
  if (id != SQ_SAVEPOINT) memcpy(keep, s->err, sizeof keep);
  st = engram__sq_stmt(s, id);
  rc = st == NULL ? ENGRAM_EBACKEND : engram__sq_exec(s, st);
  if (rc != 0 && id != SQ_SAVEPOINT) memcpy(s->err, keep, sizeof keep);
  return rc;
}

/* Native update: read, the user function, write — all inside the group's transaction, which holds the file's
 * write lock, so no other writer (thread or process) can come between the read and the write. */
static void sq_update(engram_source_t *src, engram_request_t *req) {
  sq_t *s = engram_source_state(src);
  int64_t now = engram_now_ms();
  sqlite3_stmt *st = NULL;
  cJSON *current = NULL, *next = NULL, *meta = NULL;
  written_t w = {now, 0, 1};
  engram_item_t it;
  const char *vtext, *mtext = NULL;
  sqlite3_int64 rowid = 0; /* the live row read, or 0: none */
  int rc;
  if (begin_write(s, req)) return;
  rc = get_row_of(s, SQ_GET_ROWID, req, req->key, req->key_len, now, &st);
  if (rc > 0) {
    rowid = sqlite3_column_int64(st, ROW_VERSION + 1);
    /* engram_json_parse (through engram__sq_parse_col): a conversation's head read by cJSON's parser was 15,600
     * instructions of an append's update, a quarter of that by engram's fast path */
    rc = engram__sq_parse_col(s, st, ROW_VALUE, req->key, "value", &current);
    if (rc == 0) rc = engram__sq_parse_col(s, st, ROW_META, req->key, "metadata", &meta);
    if (rc == 0 && current == NULL && (current = cJSON_CreateNull()) == NULL) rc = ENGRAM_ENOMEM;
    w.created = sqlite3_column_int64(st, ROW_CREATED);
    w.expires = sqlite3_column_int64(st, ROW_EXPIRES);
    w.version = (uint64_t)sqlite3_column_int64(st, ROW_VERSION) + 1;
    sqlite3_reset(st);
  }
  if (rc < 0) {
    cJSON_Delete(current);
    cJSON_Delete(meta);
    engram_request_fail(req, rc, "update of key '%s': %s", req->key, s->err);
    return;
  }
  /* A new expiry; else the row keeps its own, and a created row takes expires_at_ms (0, or the default_ttl_ms the
   * core stamped). */
  if ((req->flags & ENGRAM_OPT_TTL) || current == NULL) w.expires = req->expires_at_ms;
  rc = engram_request_run_update(req, current, &next);
  cJSON_Delete(current);
  if (rc != 0) {
    cJSON_Delete(meta);
    engram_request_complete(req, rc);
    return;
  }
  vtext = sq_print(&s->vbuf, &s->vbuf_cap, next);
  if (vtext != NULL && meta != NULL) mtext = sq_print(&s->mbuf, &s->mbuf_cap, meta);
  if (vtext == NULL || (meta != NULL && mtext == NULL)) {
    snprintf(s->err, sizeof s->err, "out of memory");
    rc = ENGRAM_ENOMEM;
  } else if ((st = engram__sq_stmt(s, rowid ? SQ_UPDATE_ROWID : SQ_UPSERT)) == NULL) {
    rc = ENGRAM_EBACKEND;
  } else {
    if (rowid) { /* the row read, by its rowid: the upsert's unique-index probe was 17,000 instructions of a head write */
      sqlite3_bind_int64(st, 1, rowid);
      sqlite3_bind_int64(st, 2, (sqlite3_int64)w.version);
    } else {
      bind_key(st, req, req->key, req->key_len);
    }
    sqlite3_bind_text(st, 3, vtext, -1, SQLITE_STATIC);
    engram__sq_bind_text(st, 4, mtext, mtext ? strlen(mtext) : 0);
    sqlite3_bind_int64(st, 5, now);
    sqlite3_bind_int64(st, 6, w.expires);
    if (req->writes != NULL && (rc = savepoint(s, SQ_SAVEPOINT)) != 0) {
      rc = ENGRAM_EBACKEND;
    } else {
      rc = engram__sq_exec(s, st);
      if (req->writes != NULL) {
        if (rc == 0) rc = make_writes(s, req);
        /* undo the item and its writes together; a transaction SQLite already rolled back has no savepoint */
        if (rc != 0 && !sqlite3_get_autocommit(s->db)) {
          savepoint(s, SQ_ROLLBACK_TO);
          if (s->rolled_back != NULL) s->rolled_back(s); /* the text indexes saw writes that are gone */
        }
        if (!sqlite3_get_autocommit(s->db)) savepoint(s, SQ_RELEASE);
      }
    }
  }
  if (rc != 0) {
    cJSON_Delete(next);
    cJSON_Delete(meta);
    fail_write(s, req, req->key, rc, 0);
    return;
  }
  engram__sq_text_written(s, req->ns, req->ns_len, req->key, req->key_len, next, w.expires);
  memset(&it, 0, sizeof it);
  it.key = req->key;
  it.ns = req->ns;
  it.value = next;
  it.metadata = meta;
  it.created_at_ms = w.created;
  it.updated_at_ms = now;
  it.expires_at_ms = w.expires;
  it.version = w.version;
  it.score = 1.0;
  if (engram_reply_add(req, &it, ENGRAM_REPLY_OWN_VALUE | ENGRAM_REPLY_OWN_METADATA) != 0) {
    engram_request_complete(req, ENGRAM_ENOMEM);
    return;
  }
  engram__sq_pending_add(s, req);
}

static void sq_clear(engram_source_t *src, engram_request_t *req) {
  sq_t *s = engram_source_state(src);
  int rc;
  if (begin_write(s, req)) return;
  if (req->flags & ENGRAM_REQ_ALL_NAMESPACES)
    rc = engram__sq_delete_where(s, SQ_CLEAR_ALL, NULL, 0, NULL, 0, 0);
  else
    rc = engram__sq_delete_where(s, SQ_CLEAR_NS, req->ns, req->ns_len, NULL, 0, 0);
  if (rc < 0) {
    engram__sq_txn_check(s);
    engram_request_fail(req, rc, "clear: %s", s->err);
    return;
  }
  engram__sq_text_cleared(s);
  engram_reply_set_count(req, (uint64_t)rc);
  engram__sq_pending_add(s, req);
}

/* ---- Info ---- */

static int count_stmt(sq_t *s, sq_stmt_id id, int64_t now, double *out) {
  sqlite3_stmt *st = engram__sq_stmt(s, id);
  int rc;
  if (st == NULL) return ENGRAM_EBACKEND;
  if (id == SQ_COUNT_LIVE) sqlite3_bind_int64(st, 1, now);
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) *out = (double)sqlite3_column_int64(st, 0);
  rc = rc == SQLITE_ROW ? 0 : engram__sq_error(s, rc);
  sqlite3_reset(st);
  return rc;
}

static void sq_info(engram_source_t *src, engram_request_t *req) {
  sq_t *s = engram_source_state(src);
  double items = 0, rows = 0, file_bytes = 0, wal_bytes = 0;
  sq_ckpt_stats_t ck;
  cJSON *o;
  int rc;
  if ((rc = count_stmt(s, SQ_COUNT_LIVE, engram_now_ms(), &items)) != 0 ||
      (rc = count_stmt(s, SQ_COUNT_ROWS, 0, &rows)) != 0 || (rc = engram__sq_sizes(s, &file_bytes, &wal_bytes)) != 0) {
    engram_request_fail(req, rc, "info: %s", s->err);
    return;
  }
  engram__sq_ckpt_stats(s->ckpt, &ck);
  o = cJSON_CreateObject();
  if (o == NULL || !cJSON_AddNumberToObject(o, "items", items) || !cJSON_AddNumberToObject(o, "rows", rows) ||
      !cJSON_AddStringToObject(o, "path", s->path) || !cJSON_AddStringToObject(o, "table", s->table) ||
      !cJSON_AddNumberToObject(o, "file_bytes", file_bytes) || !cJSON_AddNumberToObject(o, "wal_bytes", wal_bytes) ||
      !cJSON_AddStringToObject(o, "journal_mode", s->journal_mode) ||
      !cJSON_AddStringToObject(o, "synchronous", s->sync_full ? "full" : "normal") ||
      !cJSON_AddNumberToObject(o, "busy_timeout_ms", s->busy_ms) ||
      !cJSON_AddNumberToObject(o, "commits", (double)s->commits) ||
      !cJSON_AddNumberToObject(o, "commit_failures", (double)s->commit_failures) ||
      !cJSON_AddNumberToObject(o, "committed_calls", (double)s->committed_calls) ||
      !cJSON_AddNumberToObject(o, "max_group", (double)s->max_group) ||
      !cJSON_AddNumberToObject(o, "expirations", (double)s->expirations) ||
      !cJSON_AddBoolToObject(o, "checkpoint_thread", s->ckpt != NULL) ||
      !cJSON_AddNumberToObject(o, "checkpoints", (double)ck.passes) ||
      !cJSON_AddNumberToObject(o, "checkpoint_failures", (double)ck.failures) ||
      !cJSON_AddNumberToObject(o, "inline_checkpoints", (double)ck.inline_passes) ||
      !cJSON_AddNumberToObject(o, "inline_takeovers", (double)ck.takeovers) ||
      !cJSON_AddNumberToObject(o, "inline_max_frames", (double)ck.inline_max_frames) ||
      !cJSON_AddBoolToObject(o, "text_index", s->tix != NULL) ||
      !cJSON_AddNumberToObject(o, "text_index_items", (double)engram__sq_text_items(s)) ||
      !cJSON_AddNumberToObject(o, "text_index_builds", (double)s->text_builds) ||
      !cJSON_AddStringToObject(o, "sqlite_version", sqlite3_libversion())) {
    cJSON_Delete(o);
    engram_request_complete(req, ENGRAM_ENOMEM);
    return;
  }
  engram_reply_set_info(req, o);
  engram_request_complete(req, 0);
}

/* Installs the text index's hooks into the connection layer (which must not name sqlite_text.c), then opens. */
static void sq_open(engram_source_t *src, const cJSON *options) {
  sq_t *s = engram_source_state(src);
  s->pre_commit = engram__sq_text_pre_commit;
  s->rolled_back = engram__sq_text_rolled_back;
  s->removed = engram__sq_text_removed;
  engram__sqlite_open(src, options);
}

const engram_source_vtable_t engram_source_sqlite = {
    .version = ENGRAM_SOURCE_VTABLE_VERSION,
    .name = "sqlite",
    .instance_size = sizeof(sq_t),
    .flags = ENGRAM_SOURCE_OWN_THREAD | ENGRAM_SOURCE_REPLICA | ENGRAM_SOURCE_RANGES | ENGRAM_SOURCE_UPDATE_WRITES |
             ENGRAM_SOURCE_LIST_ITEMS | ENGRAM_SOURCE_REPLICA_MANY,
    .open = sq_open,
    .close = engram__sqlite_close,
    .store = sq_store,
    .retrieve = sq_retrieve,
    .search = engram__sqlite_search,
    .del = sq_delete,
    .list_keys = engram__sqlite_list_keys,
    .store_many = sq_store_many,
    .retrieve_many = sq_retrieve_many,
    .delete_many = sq_delete_many,
    .count = engram__sqlite_count,
    .exists = sq_exists,
    .update = sq_update,
    .clear = sq_clear,
    .info = sq_info,
};
