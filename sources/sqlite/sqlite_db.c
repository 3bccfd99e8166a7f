/*
 * sqlite_db.c — the SQLite source's connection: options, schema, the prepared-statement cache, group commit and
 * read groups, the TTL sweep, the schema of the text index's generations (sqlite_text.c), and close. The source methods live above it, in
 * sqlite.c and sqlite_query.c; this file calls only the checkpointer (sqlite_ckpt.c) below it, which it starts
 * with the connection and stops before closing it.
 *
 * Group commit. The source runs on an actor thread of its own. A write method opens the group's transaction
 * (BEGIN IMMEDIATE) if none is open, does its work inside it and, instead of completing its request, parks it
 * in the pending list. A uv_check handle on the actor's loop runs after the poll phase, i.e. after the core
 * drained a mailbox batch into the methods: it COMMITs once and completes every parked request (or fails them
 * all with ENGRAM_EBACKEND when COMMIT failed). An active uv_idle handle keeps poll from blocking while a
 * transaction waits, so a write made from a timer or from a completion is committed in the same iteration.
 * Per-call failures (EEXIST, ECONFLICT, a constraint) are single statements that SQLite undoes on their own,
 * so they fail only their own call, at once.
 *
 * Read groups. A point read outside a write group opens a deferred read transaction that the same check handle
 * ends: the reads of one loop iteration share one WAL read lock instead of taking and dropping it each (fcntl
 * calls that were a third of a retrieve). A write in the same iteration ends it first (BEGIN IMMEDIATE needs a
 * fresh snapshot), so every call still sees the writes submitted before it. WAL checkpoints run on a thread of
 * their own (sqlite_ckpt.c).
 *
 * Text search needs nothing on the write path but the generation bump of each group (sqlite_text.c, through the
 * pre_commit hook). Files from before it held an FTS5 table, its triggers and a partial index: open drops them
 * (the text_indexed column of such a table stays, unused, with its default).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>
#include <strings.h>
#include <sys/stat.h>

#include "sqlite_db.h"

#define SWEEP_MS 1000
#define BUF_RETAIN_MAX (1u << 20) /* a print buffer bigger than this is freed after its group */

/* "$T" = the table, "$F" = the FTS5 table of older versions, "$X" = the table name as an unquoted prefix for index
 * names. */

/* The system-field ranges of search, count and list_keys, bound at ?11..?16 by sqlite_query.c (the whole span of a
 * field when the call has no range on it); an expires_at of 0 (never) counts as the largest instant. */
#define RANGES_SQL(t)                                                                                            \
  " AND " t "created_at BETWEEN ?11 AND ?12 AND " t "updated_at BETWEEN ?13 AND ?14 AND (CASE WHEN " t            \
  "expires_at = 0 THEN 9223372036854775807 ELSE " t "expires_at END) BETWEEN ?15 AND ?16"
static const char *const stmt_sql[SQ_COUNT_] = {
    [SQ_BEGIN] = "BEGIN IMMEDIATE",
    [SQ_COMMIT] = "COMMIT",
    [SQ_ROLLBACK] = "ROLLBACK",
    [SQ_UPSERT] =
        "INSERT INTO $T(namespace, key, value, metadata, created_at, updated_at, expires_at, version)"
        " VALUES(?1, ?2, ?3, ?4, ?5, ?5, ?6, 1) ON CONFLICT(namespace, key) DO UPDATE SET value = excluded.value,"
        " metadata = excluded.metadata,"
        " created_at = CASE WHEN expires_at <> 0 AND expires_at <= excluded.updated_at THEN excluded.created_at"
        " ELSE created_at END,"
        " version = CASE WHEN expires_at <> 0 AND expires_at <= excluded.updated_at THEN 1 ELSE version + 1 END,"
        " updated_at = excluded.updated_at, expires_at = excluded.expires_at",
    [SQ_CREATE] =
        "INSERT INTO $T(namespace, key, value, metadata, created_at, updated_at, expires_at, version)"
        " VALUES(?1, ?2, ?3, ?4, ?5, ?5, ?6, 1) ON CONFLICT(namespace, key) DO UPDATE SET value = excluded.value,"
        " metadata = excluded.metadata, created_at = excluded.created_at, updated_at = excluded.updated_at,"
        " expires_at = excluded.expires_at, version = 1"
        " WHERE expires_at <> 0 AND expires_at <= excluded.updated_at",
    [SQ_UPDATE_IF] = "UPDATE $T SET value = ?3, metadata = ?4, updated_at = ?5, expires_at = ?6, version = version + 1"
                     " WHERE namespace = ?1 AND key = ?2 AND version = ?7"
                     " AND (expires_at = 0 OR expires_at > ?5)",
    [SQ_REPLICA] =
        "INSERT INTO $T(namespace, key, value, metadata, created_at, updated_at, expires_at, version)"
        " VALUES(?1, ?2, ?3, ?4, ?5, ?7, ?6, ?8) ON CONFLICT(namespace, key) DO UPDATE SET value = excluded.value,"
        " metadata = excluded.metadata, created_at = excluded.created_at, updated_at = excluded.updated_at,"
        " expires_at = excluded.expires_at, version = excluded.version",
    [SQ_GET_META] = "SELECT version, created_at FROM $T WHERE namespace = ?1 AND key = ?2",
    [SQ_GET] = "SELECT value, metadata, created_at, updated_at, expires_at, version FROM $T"
               " WHERE namespace = ?1 AND key = ?2",
    [SQ_GET_EXPIRES] = "SELECT expires_at FROM $T WHERE namespace = ?1 AND key = ?2",
    [SQ_FIND_ROWID] = "SELECT rowid, expires_at FROM $T WHERE namespace = ?1 AND key = ?2",
    [SQ_DELETE_ROWID] = "DELETE FROM $T WHERE rowid = ?1",
    [SQ_DELETE_EXPIRED] = "DELETE FROM $T WHERE namespace = ?1 AND key = ?2 AND expires_at <> 0 AND expires_at <= ?3",
    [SQ_ANY_EXPIRED] = "SELECT 1 FROM $T WHERE expires_at <> 0 AND expires_at <= ?1 LIMIT 1",
    [SQ_SWEEP] = "DELETE FROM $T WHERE expires_at <> 0 AND expires_at <= ?1 RETURNING namespace, key",
    [SQ_CLEAR_NS] = "DELETE FROM $T WHERE namespace = ?1",
    [SQ_CLEAR_ALL] = "DELETE FROM $T",
    [SQ_COUNT_NS] = "SELECT count(*) FROM $T WHERE namespace = ?1 AND (expires_at = 0 OR expires_at > ?2)" RANGES_SQL(""),
    [SQ_COUNT_LIVE] = "SELECT count(*) FROM $T WHERE expires_at = 0 OR expires_at > ?1",
    [SQ_COUNT_ROWS] = "SELECT count(*) FROM $T",
    [SQ_SCAN_NS] = "SELECT namespace, key, value, metadata, created_at, updated_at, expires_at, version FROM $T"
                   " WHERE namespace = ?1 AND key >= ?2 AND key < ?3 AND (expires_at = 0 OR expires_at > ?4)"
                   RANGES_SQL("") " ORDER BY key",
    [SQ_LIST_NS] = "SELECT namespace, key, created_at, updated_at, expires_at FROM $T WHERE namespace = ?1 AND key >= ?2 AND key < ?3 AND key IS NOT ?4"
                   " AND (expires_at = 0 OR expires_at > ?5)" RANGES_SQL("") " ORDER BY key",
    [SQ_LIST_ALL] = "SELECT namespace, key, created_at, updated_at, expires_at FROM $T WHERE (expires_at = 0 OR expires_at > ?1)"
                   RANGES_SQL("") " ORDER BY namespace, key",
    [SQ_LIST_ALL_AFTER] = "SELECT namespace, key, created_at, updated_at, expires_at FROM $T WHERE (namespace, key) > (?2, ?3)"
                          " AND (expires_at = 0 OR expires_at > ?1)" RANGES_SQL("") " ORDER BY namespace, key",
    /* Columns: namespace, key, created_at, updated_at, expires_at as the listings above, then value, metadata,
     * version (LIST_ITEMS_VALUE ...): one ordered scan of the table's (namespace, key) index, reading each row. */
    [SQ_LIST_NS_ITEMS] = "SELECT namespace, key, created_at, updated_at, expires_at, value, metadata, version FROM $T"
                         " WHERE namespace = ?1 AND key >= ?2 AND key < ?3 AND key IS NOT ?4"
                         " AND (expires_at = 0 OR expires_at > ?5)" RANGES_SQL("") " ORDER BY key",
    [SQ_LIST_ALL_ITEMS] = "SELECT namespace, key, created_at, updated_at, expires_at, value, metadata, version FROM $T"
                          " WHERE (expires_at = 0 OR expires_at > ?1)" RANGES_SQL("") " ORDER BY namespace, key",
    [SQ_LIST_ALL_AFTER_ITEMS] = "SELECT namespace, key, created_at, updated_at, expires_at, value, metadata, version"
                                " FROM $T WHERE (namespace, key) > (?2, ?3) AND (expires_at = 0 OR expires_at > ?1)"
                                RANGES_SQL("") " ORDER BY namespace, key",
    [SQ_BEGIN_READ] = "BEGIN",
    [SQ_GEN_GET] = "SELECT gen FROM \"$X_gen\" WHERE namespace = ?1",
    [SQ_GEN_BUMP] = "UPDATE \"$X_gen\" SET gen = gen + 1 WHERE namespace = ?1 AND gen > 0",
    [SQ_GEN_ARM] = "INSERT INTO \"$X_gen\"(namespace, gen) VALUES(?1, 1) ON CONFLICT(namespace) DO UPDATE SET"
                   " gen = max(gen, 0) + 1",
    [SQ_GEN_BUMP_ALL] = "UPDATE \"$X_gen\" SET gen = gen + 1",
    [SQ_TEXT_ROWS] = "SELECT key, value, expires_at FROM $T WHERE namespace = ?1 AND (expires_at = 0 OR expires_at > ?2)",
    [SQ_GET_ROWID] = "SELECT value, metadata, created_at, updated_at, expires_at, version, rowid FROM $T"
                     " WHERE namespace = ?1 AND key = ?2",
    /* what SQ_UPSERT does to a live row (created_at kept), on the row found by rowid */
    [SQ_UPDATE_ROWID] = "UPDATE $T SET value = ?3, metadata = ?4, updated_at = ?5, expires_at = ?6, version = ?2"
                        " WHERE rowid = ?1",
    /* prepared once: through sqlite3_exec each savepoint and its release were parsed again on every update
     * (7,300 instructions each) */
    [SQ_SAVEPOINT] = "SAVEPOINT engram_writes",
    [SQ_RELEASE] = "RELEASE engram_writes",
    [SQ_ROLLBACK_TO] = "ROLLBACK TO engram_writes",
};

/* Milliseconds since the Unix epoch, as a column default for rows written by other tools. */
#define NOW_MS_SQL "(CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))"

static const char *const schema_table =
    "CREATE TABLE IF NOT EXISTS $T (namespace TEXT NOT NULL DEFAULT '', key TEXT NOT NULL, value TEXT NOT NULL,"
    " metadata TEXT, created_at INTEGER NOT NULL DEFAULT " NOW_MS_SQL ","
    " updated_at INTEGER NOT NULL DEFAULT " NOW_MS_SQL ", expires_at INTEGER NOT NULL DEFAULT 0,"
    " version INTEGER NOT NULL DEFAULT 1, PRIMARY KEY (namespace, key))";

static const char *const schema_rest =
    "CREATE INDEX IF NOT EXISTS \"$X_expires\" ON $T(expires_at) WHERE expires_at <> 0;"
    /* What older versions kept for FTS5 text search. */
    "DROP TRIGGER IF EXISTS \"$X_fts_delete\"; DROP TRIGGER IF EXISTS \"$X_fts_update\";"
    "DROP INDEX IF EXISTS \"$X_unindexed\"; DROP TABLE IF EXISTS $F;";

/* The per-namespace generations of the text index (sqlite_text.c): engram bumps them at each group commit (its
 * connection runs with triggers off); the triggers bump them for every other writer. */
static const char *const schema_gen =
    "CREATE TABLE IF NOT EXISTS \"$X_gen\" (namespace TEXT PRIMARY KEY, gen INTEGER NOT NULL);"
    "CREATE TRIGGER IF NOT EXISTS \"$X_gen_insert\" AFTER INSERT ON $T BEGIN INSERT INTO \"$X_gen\"(namespace, gen)"
    " VALUES(new.namespace, 1) ON CONFLICT(namespace) DO UPDATE SET gen = gen + 1; END;"
    "CREATE TRIGGER IF NOT EXISTS \"$X_gen_delete\" AFTER DELETE ON $T BEGIN INSERT INTO \"$X_gen\"(namespace, gen)"
    " VALUES(old.namespace, 1) ON CONFLICT(namespace) DO UPDATE SET gen = gen + 1; END;"
    "CREATE TRIGGER IF NOT EXISTS \"$X_gen_update\" AFTER UPDATE ON $T BEGIN INSERT INTO \"$X_gen\"(namespace, gen)"
    " VALUES(old.namespace, 1) ON CONFLICT(namespace) DO UPDATE SET gen = gen + 1; INSERT INTO \"$X_gen\"(namespace,"
    " gen) VALUES(new.namespace, 1) ON CONFLICT(namespace) DO UPDATE SET gen = gen + 1; END;";

/* A file from before the generations: every namespace that has rows gets one, so that the first bump is seen. */
static const char *const schema_gen_fill =
    "INSERT OR IGNORE INTO \"$X_gen\"(namespace, gen) SELECT DISTINCT namespace, 1 FROM $T";

/* Expands $T, $F and $X in tmpl into an allocated string. */
static char *expand(const sq_t *s, const char *tmpl) {
  size_t tlen = strlen(s->table), n = 0, cap = strlen(tmpl) * 2 + 64;
  const char *p;
  char *out = engram_malloc(cap);
  if (out == NULL) return NULL;
  for (p = tmpl; *p != '\0'; p++) {
    if (n + tlen + 16 >= cap) {
      char *o;
      cap = cap * 2 + tlen + 16;
      if ((o = engram_realloc(out, cap)) == NULL) {
        engram_free(out);
        return NULL;
      }
      out = o;
    }
    if (p[0] == '$' && (p[1] == 'T' || p[1] == 'F' || p[1] == 'X')) {
      if (p[1] != 'X') out[n++] = '"';
      memcpy(out + n, s->table, tlen);
      n += tlen;
      if (p[1] == 'F') {
        memcpy(out + n, "_fts", 4);
        n += 4;
      }
      if (p[1] != 'X') out[n++] = '"';
      p++;
    } else {
      out[n++] = *p;
    }
  }
  out[n] = '\0';
  return out;
}

int engram__sq_error(sq_t *s, int rc) {
  snprintf(s->err, sizeof s->err, "%s", s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
  switch (rc & 0xff) {
    case SQLITE_NOMEM: return s->err_status = ENGRAM_ENOMEM;
    case SQLITE_TOOBIG: return s->err_status = ENGRAM_ETOOBIG;
    default: return s->err_status = ENGRAM_EBACKEND;
  }
}

sqlite3_stmt *engram__sq_stmt(sq_t *s, sq_stmt_id id) {
  sqlite3_stmt *st = s->stmt[id];
  char *sql;
  int rc;
  if (st != NULL) {
    sqlite3_reset(st);
    return st;
  }
  if ((sql = expand(s, stmt_sql[id])) == NULL) {
    snprintf(s->err, sizeof s->err, "out of memory");
    s->err_status = ENGRAM_ENOMEM;
    return NULL;
  }
  rc = sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL);
  engram_free(sql);
  if (rc != SQLITE_OK) {
    engram__sq_error(s, rc);
    sqlite3_finalize(st);
    return NULL;
  }
  s->stmt[id] = st;
  return st;
}

unsigned engram__sq_data_version(sq_t *s) {
  unsigned v = 0;
  return sqlite3_file_control(s->db, "main", SQLITE_FCNTL_DATA_VERSION, &v) == SQLITE_OK ? v : 0;
}

int engram__sq_exec(sq_t *s, sqlite3_stmt *st) {
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
  }
  if (rc != SQLITE_DONE) {
    int status = engram__sq_error(s, rc);
    sqlite3_reset(st);
    return status;
  }
  sqlite3_reset(st);
  return 0;
}

int engram__sq_bind_text(sqlite3_stmt *st, int i, const char *text, size_t len) {
  if (text == NULL) return sqlite3_bind_null(st, i);
  return sqlite3_bind_text(st, i, text, (int)len, SQLITE_STATIC);
}

int engram__sq_parse_col(sq_t *s, sqlite3_stmt *st, int col, const char *key, const char *what, cJSON **out) {
  const char *text = (const char *)sqlite3_column_text(st, col);
  *out = NULL;
  if (text == NULL) return 0;
  switch (engram_json_parse(text, (size_t)sqlite3_column_bytes(st, col), out)) {
    case 0: return 0;
    case ENGRAM_ENOMEM: snprintf(s->err, sizeof s->err, "out of memory"); return ENGRAM_ENOMEM;
    default:
      snprintf(s->err, sizeof s->err, "the stored %s of key '%.120s' is not valid JSON", what, key);
      return ENGRAM_EBACKEND;
  }
}

int engram__sq_add_row(sq_t *s, engram_request_t *req, sqlite3_stmt *st, int base, const char *ns, const char *key,
                       int with_value, int with_meta, cJSON *meta, double score) {
  engram_item_t it;
  cJSON *value = NULL;
  int rc;
  memset(&it, 0, sizeof it);
  it.key = key;
  it.ns = ns;
  it.created_at_ms = sqlite3_column_int64(st, base + ROW_CREATED);
  it.updated_at_ms = sqlite3_column_int64(st, base + ROW_UPDATED);
  it.expires_at_ms = sqlite3_column_int64(st, base + ROW_EXPIRES);
  it.version = (uint64_t)sqlite3_column_int64(st, base + ROW_VERSION);
  it.score = score;
  if (!with_meta) {
    cJSON_Delete(meta);
    meta = NULL;
  } else if (meta == NULL && (rc = engram__sq_parse_col(s, st, base + ROW_META, key, "metadata", &meta)) != 0) {
    return rc;
  }
  if (with_value && (rc = engram__sq_parse_col(s, st, base + ROW_VALUE, key, "value", &value)) != 0) {
    cJSON_Delete(meta);
    return rc;
  }
  it.value = value;
  it.metadata = meta;
  return engram_reply_add(req, &it, ENGRAM_REPLY_OWN_VALUE | ENGRAM_REPLY_OWN_METADATA);
}

/* ---- Group commit ---- */

/* Ends the read group's transaction (it wrote nothing: COMMIT only releases the read lock). */
static void end_read(sq_t *s) {
  sqlite3_stmt *st = engram__sq_stmt(s, SQ_COMMIT);
  s->in_read = 0;
  if ((st == NULL || engram__sq_exec(s, st) != 0) && !sqlite3_get_autocommit(s->db) &&
      (st = engram__sq_stmt(s, SQ_ROLLBACK)) != NULL)
    engram__sq_exec(s, st);
}

static void commit_group(sq_t *s) {
  engram_request_t *req = s->pending_head, *next;
  int status = 0;
  char msg[sizeof s->err];
  size_t n = s->n_pending;
  msg[0] = '\0';
  if (s->in_read) end_read(s);
  if (s->in_txn) {
    sqlite3_stmt *st = NULL;
    /* The text index's generations are bumped inside the group (sqlite_text.c); failing that fails the group. */
    if (s->pre_commit != NULL) status = s->pre_commit(s);
    if (status == 0) status = (st = engram__sq_stmt(s, SQ_COMMIT)) != NULL ? engram__sq_exec(s, st) : ENGRAM_EBACKEND;
    if (status != 0) {
      snprintf(msg, sizeof msg, "%s", s->err);
      s->commit_failures++;
      if (!sqlite3_get_autocommit(s->db) && (st = engram__sq_stmt(s, SQ_ROLLBACK)) != NULL) engram__sq_exec(s, st);
      if (s->rolled_back != NULL) s->rolled_back(s);
    } else {
      s->commits++;
      s->commit_dv = engram__sq_data_version(s);
    }
    s->in_txn = 0;
  }
  s->pending_head = s->pending_tail = NULL;
  s->n_pending = 0;
  /* A huge value should not pin its print buffer for the life of the source. */
  if (s->vbuf_cap > BUF_RETAIN_MAX) {
    engram_free(s->vbuf);
    s->vbuf = NULL;
    s->vbuf_cap = 0;
  }
  if (s->mbuf_cap > BUF_RETAIN_MAX) {
    engram_free(s->mbuf);
    s->mbuf = NULL;
    s->mbuf_cap = 0;
  }
  if (status == 0) {
    s->committed_calls += n;
    if (n > s->max_group) s->max_group = n;
  }
  /* Completing may start new calls (the core refills its window): they open the next group. */
  for (; req != NULL; req = next) {
    next = req->backend_data;
    req->backend_data = NULL;
    if (status == 0) engram_request_complete(req, 0);
    else engram_request_fail(req, ENGRAM_EBACKEND, "commit failed, the write was not stored: %s", msg);
  }
}

static void on_commit_check(uv_check_t *h) {
  sq_t *s = h->data;
  uv_check_stop(&s->commit_check);
  uv_idle_stop(&s->commit_idle);
  commit_group(s);
}

static void on_commit_idle(uv_idle_t *h) { (void)h; }

int engram__sq_txn_begin(sq_t *s) {
  sqlite3_stmt *st;
  int rc;
  if (s->in_txn) return 0;
  if (s->in_read) end_read(s); /* a write needs a fresh snapshot and the write lock: BEGIN IMMEDIATE */
  engram__sq_ckpt_before_begin(s->ckpt, s->db);
  if ((st = engram__sq_stmt(s, SQ_BEGIN)) == NULL) return ENGRAM_EBACKEND;
  if ((rc = engram__sq_exec(s, st)) != 0) return rc == ENGRAM_ENOMEM ? rc : ENGRAM_EBACKEND;
  s->in_txn = 1;
  uv_check_start(&s->commit_check, on_commit_check);
  uv_idle_start(&s->commit_idle, on_commit_idle);
  return 0;
}

void engram__sq_read_begin(sq_t *s) {
  sqlite3_stmt *st;
  if (s->in_txn || s->in_read || (st = engram__sq_stmt(s, SQ_BEGIN_READ)) == NULL || engram__sq_exec(s, st) != 0)
    return; /* inside the write group already, or reads go on in autocommit */
  s->in_read = 1;
  uv_check_start(&s->commit_check, on_commit_check);
  uv_idle_start(&s->commit_idle, on_commit_idle);
}

void engram__sq_pending_add(sq_t *s, engram_request_t *req) {
  req->backend_data = NULL;
  if (s->pending_tail) s->pending_tail->backend_data = req;
  else s->pending_head = req;
  s->pending_tail = req;
  s->n_pending++;
}

int engram__sq_txn_check(sq_t *s) {
  engram_request_t *req, *next;
  char msg[sizeof s->err];
  if (!s->in_txn || !sqlite3_get_autocommit(s->db)) return 0;
  /* SQLite rolled the whole transaction back (I/O error, disk full, ...): every write of the group is lost. */
  snprintf(msg, sizeof msg, "%s", s->err);
  s->in_txn = 0;
  s->commit_failures++;
  if (s->rolled_back != NULL) s->rolled_back(s);
  req = s->pending_head;
  s->pending_head = s->pending_tail = NULL;
  s->n_pending = 0;
  for (; req != NULL; req = next) {
    next = req->backend_data;
    req->backend_data = NULL;
    engram_request_fail(req, ENGRAM_EBACKEND, "the transaction was rolled back, the write was not stored: %s", msg);
  }
  return 1;
}

/* ---- TTL sweep ---- */

static void on_sweep(uv_timer_t *t) {
  sq_t *s = t->data;
  int64_t now = engram_now_ms();
  sqlite3_stmt *st = engram__sq_stmt(s, SQ_ANY_EXPIRED);
  int any, rc;
  if (st == NULL) return;
  sqlite3_bind_int64(st, 1, now);
  any = sqlite3_step(st) == SQLITE_ROW;
  sqlite3_reset(st);
  /* Only take the write lock when there is work: other processes share the file. */
  if (!any || engram__sq_txn_begin(s) != 0) return;
  /* Each row deleted is reported to the text index. */
  if ((st = engram__sq_stmt(s, SQ_SWEEP)) == NULL) return;
  sqlite3_bind_int64(st, 1, now);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    const char *ns = (const char *)sqlite3_column_text(st, 0), *key = (const char *)sqlite3_column_text(st, 1);
    s->expirations++;
    if (s->removed != NULL && ns != NULL && key != NULL)
      s->removed(s, ns, (size_t)sqlite3_column_bytes(st, 0), key, (size_t)sqlite3_column_bytes(st, 1));
  }
  if (rc != SQLITE_DONE) engram__sq_error(s, rc);
  sqlite3_reset(st);
  if (rc != SQLITE_DONE) engram__sq_txn_check(s);
}

int engram__sq_delete_where(sq_t *s, sq_stmt_id id, const char *ns, size_t ns_len, const char *key, size_t key_len,
                            int64_t now) {
  sqlite3_stmt *st = engram__sq_stmt(s, id);
  int rc, p = 1;
  if (st == NULL) return ENGRAM_EBACKEND;
  if (ns != NULL) sqlite3_bind_text(st, p++, ns, (int)ns_len, SQLITE_STATIC);
  if (key != NULL) sqlite3_bind_text(st, p++, key, (int)key_len, SQLITE_STATIC);
  if (sqlite3_bind_parameter_count(st) >= p) sqlite3_bind_int64(st, p, now);
  if ((rc = engram__sq_exec(s, st)) != 0) return rc;
  return sqlite3_changes(s->db);
}

/* ---- Open ---- */

static int valid_table(const char *t) {
  size_t i, n = strlen(t);
  if (n == 0 || n > 63) return 0;
  if (!((t[0] >= 'A' && t[0] <= 'Z') || (t[0] >= 'a' && t[0] <= 'z') || t[0] == '_')) return 0;
  for (i = 1; i < n; i++)
    if (!((t[i] >= 'A' && t[i] <= 'Z') || (t[i] >= 'a' && t[i] <= 'z') || (t[i] >= '0' && t[i] <= '9') || t[i] == '_'))
      return 0;
  return strncasecmp(t, "sqlite_", 7) != 0;
}

static const char *const known_options[] = {"path", "table", "synchronous", "busy_timeout_ms", NULL};

static int parse_options(sq_t *s, const cJSON *options, char *err, size_t errlen) {
  const char *path, *table, *sync;
  uint64_t busy;
  if (engram_opt_check_names(options, known_options, err, errlen) != 0 ||
      engram_opt_string(options, "path", ":memory:", 0, &path, err, errlen) != 0 ||
      engram_opt_string(options, "table", "engram_items", 0, &table, err, errlen) != 0 ||
      engram_opt_string(options, "synchronous", "full", 0, &sync, err, errlen) != 0 ||
      engram_opt_uint(options, "busy_timeout_ms", 5000, 0, 3600000, &busy, err, errlen) != 0)
    return ENGRAM_EINVAL;
  if (!valid_table(table)) {
    snprintf(err, errlen, "option \"table\": \"%.80s\" is not a valid table name (want [A-Za-z_][A-Za-z0-9_]{0,62},"
             " not starting with sqlite_)", table);
    return ENGRAM_EINVAL;
  }
  snprintf(s->table, sizeof s->table, "%s", table);
  if (strcasecmp(sync, "full") == 0) s->sync_full = 1;
  else if (strcasecmp(sync, "normal") == 0) s->sync_full = 0;
  else {
    snprintf(err, errlen, "option \"synchronous\": must be \"normal\" or \"full\"");
    return ENGRAM_EINVAL;
  }
  s->busy_ms = (int)busy;
  if ((s->path = engram_strdup(path)) == NULL) {
    snprintf(err, errlen, "out of memory");
    return ENGRAM_ENOMEM;
  }
  return 0;
}

/* Runs the (expanded) SQL text; 0 or EBACKEND with s->err set. */
static int exec_sql(sq_t *s, const char *tmpl) {
  char *sql = expand(s, tmpl), *msg = NULL;
  int rc;
  if (sql == NULL) {
    snprintf(s->err, sizeof s->err, "out of memory");
    return ENGRAM_ENOMEM;
  }
  rc = sqlite3_exec(s->db, sql, NULL, NULL, &msg);
  engram_free(sql);
  if (rc != SQLITE_OK) {
    snprintf(s->err, sizeof s->err, "%s", msg ? msg : sqlite3_errstr(rc));
    sqlite3_free(msg);
    return rc == SQLITE_NOMEM ? ENGRAM_ENOMEM : ENGRAM_EBACKEND;
  }
  return 0;
}

/* A table created elsewhere must have our columns (others, such as the text_indexed of older versions, may stay). */
static int check_columns(sq_t *s) {
  static const char *const want[] = {"namespace", "key", "value", "metadata", "created_at", "updated_at",
                                     "expires_at", "version"};
  unsigned seen = 0, i;
  int rc;
  sqlite3_stmt *st = NULL;
  char *sql = expand(s, "PRAGMA table_info($T)");
  if (sql == NULL) return ENGRAM_ENOMEM;
  rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
  engram_free(sql);
  if (rc != SQLITE_OK) return engram__sq_error(s, rc);
  while (sqlite3_step(st) == SQLITE_ROW) {
    const char *name = (const char *)sqlite3_column_text(st, 1);
    if (name == NULL) continue;
    for (i = 0; i < sizeof want / sizeof want[0]; i++)
      if (strcmp(name, want[i]) == 0) seen |= 1u << i;
  }
  sqlite3_finalize(st);
  for (i = 0; i < sizeof want / sizeof want[0]; i++)
    if (!(seen & (1u << i))) {
      snprintf(s->err, sizeof s->err, "table \"%s\" exists without a column \"%s\" (see docs/sources-sqlite.md)",
               s->table, want[i]);
      return ENGRAM_EINVAL;
    }
  return 0;
}

static int create_schema(sq_t *s) {
  int rc;
  sqlite3_stmt *st;
  if ((rc = exec_sql(s, "BEGIN IMMEDIATE")) != 0) return rc;
  if ((rc = exec_sql(s, schema_table)) == 0 && (rc = check_columns(s)) == 0 && (rc = exec_sql(s, schema_rest)) == 0) {
    int had_gen = 0;
    char *q = expand(s, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '$X_gen'");
    if (q != NULL && sqlite3_prepare_v2(s->db, q, -1, &st, NULL) == SQLITE_OK) {
      had_gen = sqlite3_step(st) == SQLITE_ROW;
      sqlite3_finalize(st);
    }
    engram_free(q);
    if ((rc = exec_sql(s, schema_gen)) == 0 && (had_gen || (rc = exec_sql(s, schema_gen_fill)) == 0))
      rc = exec_sql(s, "COMMIT");
  }
  if (rc != 0) {
    char keep[sizeof s->err];
    memcpy(keep, s->err, sizeof keep);
    sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    memcpy(s->err, keep, sizeof keep);
    return rc;
  }
  return 0;
}

static void release(sq_t *s) {
  int i;
  engram__sq_ckpt_stop(s->ckpt, s->db);
  s->ckpt = NULL;
  if (s->rolled_back != NULL) s->rolled_back(s); /* frees the text indexes */
  for (i = 0; i < SQ_COUNT_; i++) {
    sqlite3_finalize(s->stmt[i]);
    s->stmt[i] = NULL;
  }
  if (s->db) sqlite3_close(s->db);
  s->db = NULL;
  engram_free(s->path);
  engram_free(s->vbuf);
  engram_free(s->mbuf);
  s->path = s->vbuf = s->mbuf = NULL;
  s->vbuf_cap = s->mbuf_cap = 0;
}

void engram__sqlite_open(engram_source_t *src, const cJSON *options) {
  sq_t *s = engram_source_state(src);
  uv_loop_t *loop = engram_source_loop(src);
  char err[640];
  int rc;
  s->src = src;
  if ((rc = parse_options(s, options, err, sizeof err)) != 0) {
    release(s);
    engram_source_opened(src, rc, "%s", err);
    return;
  }
  rc = sqlite3_open_v2(s->path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
  if (rc != SQLITE_OK) {
    snprintf(err, sizeof err, "path \"%.200s\": cannot open the database: %s (%s)", s->path,
             s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc), strerror(s->db ? sqlite3_system_errno(s->db) : 0));
    release(s);
    engram_source_opened(src, rc == SQLITE_NOMEM ? ENGRAM_ENOMEM : ENGRAM_EBACKEND, "%s", err);
    return;
  }
  sqlite3_busy_timeout(s->db, s->busy_ms);
  snprintf(s->journal_mode, sizeof s->journal_mode, "?");
  {
    /* Switching to WAL needs an exclusive lock, and SQLite answers SQLITE_BUSY at once (without the busy
     * handler) when another process is opening the same file at that moment: retry until busy_timeout_ms. */
    uint64_t start = uv_hrtime();
    for (;;) {
      sqlite3_stmt *st = NULL;
      int step = SQLITE_ERROR;
      if (sqlite3_prepare_v2(s->db, "PRAGMA journal_mode = WAL", -1, &st, NULL) == SQLITE_OK) step = sqlite3_step(st);
      if (step == SQLITE_ROW && sqlite3_column_text(st, 0) != NULL) {
        snprintf(s->journal_mode, sizeof s->journal_mode, "%s", (const char *)sqlite3_column_text(st, 0));
        sqlite3_finalize(st);
        break;
      }
      engram__sq_error(s, sqlite3_errcode(s->db));
      sqlite3_finalize(st);
      if ((sqlite3_errcode(s->db) != SQLITE_BUSY && sqlite3_errcode(s->db) != SQLITE_LOCKED) ||
          (uv_hrtime() - start) / 1000000u >= (uint64_t)s->busy_ms)
        break;
      uv_sleep(5);
    }
  }
  if (strcmp(s->journal_mode, "?") == 0) {
    snprintf(err, sizeof err, "path \"%.200s\": cannot use the database: %s", s->path, s->err);
    rc = sqlite3_errcode(s->db) == SQLITE_NOMEM ? ENGRAM_ENOMEM : ENGRAM_EBACKEND;
    release(s);
    engram_source_opened(src, rc, "%s", err);
    return;
  }
  if ((rc = exec_sql(s, s->sync_full ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL")) != 0 ||
      (rc = create_schema(s)) != 0) {
    snprintf(err, sizeof err, "path \"%.200s\", table \"%s\": %s", s->path, s->table, s->err);
    release(s);
    engram_source_opened(src, rc == ENGRAM_ENOMEM ? rc : rc == ENGRAM_EINVAL ? rc : ENGRAM_EBACKEND, "%s", err);
    return;
  }
  /* The schema's triggers bump the text index's generations for other writers; engram bumps them itself, once
   * per group (sqlite_text.c), and an upsert prepared with triggers on costs a fifth more. */
  sqlite3_db_config(s->db, SQLITE_DBCONFIG_ENABLE_TRIGGER, 0, (int *)NULL);
  /* Prepare every statement now: a schema another program changed under us fails here, not mid-call. */
  for (rc = 0; rc < SQ_COUNT_; rc++) {
    if (engram__sq_stmt(s, (sq_stmt_id)rc) == NULL) {
      snprintf(err, sizeof err, "path \"%.200s\", table \"%s\": cannot prepare statement %d: %s", s->path, s->table,
               rc, s->err);
      rc = s->err_status == ENGRAM_ENOMEM ? ENGRAM_ENOMEM : ENGRAM_EBACKEND; /* not a broken schema */
      release(s);
      engram_source_opened(src, rc, "%s", err);
      return;
    }
  }
  if (engram__sq_ckpt_start(s->db, s->path, s->journal_mode, s->busy_ms, &s->ckpt) != 0) {
    snprintf(err, sizeof err, "path \"%.200s\": out of memory", s->path);
    release(s);
    engram_source_opened(src, ENGRAM_ENOMEM, "%s", err);
    return;
  }
  uv_check_init(loop, &s->commit_check);
  uv_idle_init(loop, &s->commit_idle);
  uv_timer_init(loop, &s->sweep);
  s->commit_check.data = s->commit_idle.data = s->sweep.data = s;
  s->handles_open = 3;
  uv_timer_start(&s->sweep, on_sweep, SWEEP_MS, SWEEP_MS);
  engram_source_opened(src, 0, NULL);
}

/* ---- Close ---- */

static void on_handle_closed(uv_handle_t *h) {
  sq_t *s = h->data;
  if (--s->handles_open > 0) return;
  release(s);
  engram_source_closed(s->src);
}

void engram__sqlite_close(engram_source_t *src) {
  sq_t *s = engram_source_state(src);
  /* The core already answered what we hold with ECANCELED; the writes are still made durable. */
  commit_group(s);
  if (s->handles_open == 0) {
    release(s);
    engram_source_closed(src);
    return;
  }
  uv_close((uv_handle_t *)&s->commit_check, on_handle_closed);
  uv_close((uv_handle_t *)&s->commit_idle, on_handle_closed);
  uv_close((uv_handle_t *)&s->sweep, on_handle_closed);
}

int engram__sq_sizes(sq_t *s, double *file_bytes, double *wal_bytes) {
  sqlite3_stmt *st = NULL;
  sqlite3_int64 pages = 0;
  struct stat sb;
  char *wal;
  if (sqlite3_prepare_v2(s->db, "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()", -1, &st,
                         NULL) == SQLITE_OK &&
      sqlite3_step(st) == SQLITE_ROW)
    pages = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  *file_bytes = (double)pages;
  *wal_bytes = 0;
  if (strcmp(s->path, ":memory:") == 0) return 0;
  if ((wal = engram_malloc(strlen(s->path) + 5)) == NULL) return ENGRAM_ENOMEM;
  sprintf(wal, "%s-wal", s->path);
  if (stat(wal, &sb) == 0) *wal_bytes = (double)sb.st_size;
  engram_free(wal);
  return 0;
}
