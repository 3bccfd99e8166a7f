/*
 * sqlite_db.h — the SQLite source's connection (sqlite_db.c): the per-instance state, open and close, the cache
 * of prepared statements, group commit and read groups, the text index's generations and the helpers that turn rows into
 * reply items. The methods on top of it — sqlite.c (key-value) and sqlite_query.c (search, count, list_keys) —
 * include this header; sqlite_db.c itself calls only the checkpointer (sqlite_ckpt.c) below it.
 *
 * Everything here runs on the source's own actor thread (ENGRAM_SOURCE_OWN_THREAD), one method at a time; the
 * checkpointer's thread shares only its own sq_ckpt_t (under its mutex).
 */
#ifndef ENGRAM_SOURCES_SQLITE_DB_H
#define ENGRAM_SOURCES_SQLITE_DB_H

#include <sqlite3.h>
#include <uv.h>

#include "engram/source.h"
#include "sqlite_ckpt.h"

/* Prepared statements, prepared on first use and kept for the life of the instance. */
typedef enum {
  SQ_BEGIN,           /* BEGIN IMMEDIATE */
  SQ_COMMIT,
  SQ_ROLLBACK,
  SQ_UPSERT,          /* store: insert, or overwrite (a fresh row when the old one had expired) */
  SQ_CREATE,          /* store create-only: insert, or replace only an expired row */
  SQ_UPDATE_IF,       /* store if_version: overwrite only a live row of that version */
  SQ_REPLICA,         /* store ENGRAM_REQ_REPLICA: the row exactly as given (version, timestamps) */
  SQ_GET_META,        /* version, created_at of a row */
  SQ_GET,             /* a whole row */
  SQ_GET_EXPIRES,     /* exists */
  SQ_FIND_ROWID,      /* rowid, expires_at of a row */
  SQ_DELETE_ROWID,
  SQ_DELETE_EXPIRED,  /* delete one row if it has expired */
  SQ_ANY_EXPIRED,     /* does the sweep have work? */
  SQ_SWEEP,           /* delete every expired row */
  SQ_CLEAR_NS,
  SQ_CLEAR_ALL,
  SQ_COUNT_NS,        /* live rows of a namespace */
  SQ_COUNT_LIVE,      /* live rows of every namespace */
  SQ_COUNT_ROWS,      /* every row */
  SQ_SCAN_NS,         /* live rows of a namespace in a key range, by key */
  SQ_LIST_NS,         /* keyset page of one namespace */
  SQ_LIST_ALL,        /* keyset page of every namespace, first page */
  SQ_LIST_ALL_AFTER,  /* keyset page of every namespace, after a cursor */
  SQ_LIST_NS_ITEMS,   /* the three above with every column (ENGRAM_REQ_LIST_ITEMS: an export's pages) */
  SQ_LIST_ALL_ITEMS,
  SQ_LIST_ALL_AFTER_ITEMS,
  SQ_BEGIN_READ,      /* BEGIN (deferred): the read group's snapshot */
  SQ_GEN_GET,         /* a namespace's generation (sqlite_text.c) */
  SQ_GEN_BUMP,        /* +1 to a namespace's generation when it is armed (> 0); no row changed otherwise */
  SQ_GEN_ARM,         /* +1 to a namespace's generation, creating it at 1 (a text index is being built) */
  SQ_GEN_BUMP_ALL,    /* +1 to every namespace's generation (clear) */
  SQ_TEXT_ROWS,       /* key, value, expires_at of a namespace's live rows (building its text index) */
  SQ_GET_ROWID,       /* SQ_GET's columns, then the rowid (an update reads the row it writes) */
  SQ_UPDATE_ROWID,    /* an update's write of the live row it read: value, metadata, updated_at, expires, version */
  SQ_SAVEPOINT,       /* the savepoint around an update's item and its writes (sqlite.c sq_update) */
  SQ_RELEASE,
  SQ_ROLLBACK_TO,
  SQ_COUNT_            /* number of statements */
} sq_stmt_id;

/* Columns of SQ_GET (and the row part of SQ_SCAN_NS / SQ_TEXT, after namespace and key). */
enum { ROW_VALUE = 0, ROW_META, ROW_CREATED, ROW_UPDATED, ROW_EXPIRES, ROW_VERSION };
/* Columns of SQ_LIST_*_ITEMS after the listing's namespace, key, created, updated, expires (0..4). */
enum { LIST_ITEM_VALUE = 5, LIST_ITEM_META, LIST_ITEM_VERSION };

typedef struct sq_tix_s sq_tix_t;

typedef struct sq_s {
  engram_source_t *src;
  sqlite3 *db;
  char *path;
  char table[64];
  char journal_mode[16];
  int sync_full;
  int busy_ms;
  sqlite3_stmt *stmt[SQ_COUNT_];
  /* Group commit: a write transaction is open from the first write of a loop iteration until the check
   * handle commits it after the core's drain; the calls it carries wait in the pending list (linked through
   * backend_data) and are completed once COMMIT returned. */
  int in_txn;
  int in_read;           /* a read-only group transaction is open (reads of this loop iteration share it) */
  engram_request_t *pending_head, *pending_tail;
  size_t n_pending;
  uv_check_t commit_check;
  uv_idle_t commit_idle; /* keeps the loop from blocking in poll while a transaction waits for its commit */
  uv_timer_t sweep;
  int handles_open;
  sq_ckpt_t *ckpt;       /* the checkpointer thread, or NULL (SQLite's automatic checkpoint) */
  /* Counters (info). */
  uint64_t commits, commit_failures, committed_calls, max_group, expirations;
  /* Reusable buffers for the JSON text of values and metadata, so that a store allocates nothing of ours. */
  char *vbuf, *mbuf;
  size_t vbuf_cap, mbuf_cap;
  /* Text search (sqlite_text.c): the per-namespace BM25 indexes, the namespaces this group wrote (their
   * generations are bumped before COMMIT), and the hooks sqlite.c installs so that this file can call them
   * without naming sqlite_text.c (it sits above this one): pre_commit runs before COMMIT (non-zero: roll back),
   * rolled_back after the group's writes were lost, removed for each row the sweep deleted. */
  struct sq_tix_s *tix;
  char **touched;
  size_t *touched_len, n_touched, touched_cap;
  int bump_all;
  uint64_t text_builds; /* indexes built (the first search of a namespace, or after another writer) */
  /* The namespace whose generation the group commit numbered unarmed_commit found unarmed (sqlite_text.c): while
   * that is the last commit and the file's data version is still commit_dv (no connection committed since,
   * so nobody armed it), the next group skips its bump check. unarmed_commit 0: nothing known. */
  char unarmed_ns[128];
  size_t unarmed_len;
  uint64_t unarmed_commit;
  unsigned commit_dv; /* SQLITE_FCNTL_DATA_VERSION after the last successful COMMIT */
  int (*pre_commit)(struct sq_s *s);
  void (*rolled_back)(struct sq_s *s);
  void (*removed)(struct sq_s *s, const char *ns, size_t ns_len, const char *key, size_t key_len);
  char err[256];         /* the last backend message, for requests failed after the fact */
  int err_status;        /* the status that goes with err (engram__sq_error, engram__sq_stmt) */
} sq_t;

/* Opens (options parsed, connection, pragmas, schema, handles); finishes with engram_source_opened. */
void engram__sqlite_open(engram_source_t *src, const cJSON *options);
/* Commits what is pending, closes the handles and the connection, then engram_source_closed. */
void engram__sqlite_close(engram_source_t *src);

/* The prepared statement id (reset, bindings cleared), or NULL with s->err set. */
sqlite3_stmt *engram__sq_stmt(sq_t *s, sq_stmt_id id);
/* Steps st to its end (a statement with no rows): 0, or an engram status with s->err set. */
int engram__sq_exec(sq_t *s, sqlite3_stmt *st);
/* The main database's data version (SQLITE_FCNTL_DATA_VERSION: changes with every commit of this or any other
 * connection, seen at the start of a transaction). 0 when it cannot be had. */
unsigned engram__sq_data_version(sq_t *s);
/* Maps a SQLite result code to an engram status and copies the connection's message into s->err. */
int engram__sq_error(sq_t *s, int rc);

/* Opens the group's write transaction if none is open (BEGIN IMMEDIATE; waits up to busy_timeout_ms for
 * another process) and schedules its commit. 0 or ENGRAM_EBACKEND with s->err set. */
int engram__sq_txn_begin(sq_t *s);
/* Before a point read: unless a transaction is open, opens the loop iteration's read transaction (ended by the
 * same check handle as a write group, or by the first write), so that the iteration's reads share one WAL read
 * lock instead of taking and releasing it each (a third of a point read's time). Failure is harmless. */
void engram__sq_read_begin(sq_t *s);
/* Holds req until the group's COMMIT returned; it is then completed with 0, or failed with EBACKEND when the
 * commit failed. */
void engram__sq_pending_add(sq_t *s, engram_request_t *req);
/* After a failed statement inside the transaction: when SQLite rolled the whole transaction back, fails every
 * pending call with ENGRAM_EBACKEND. Returns non-zero when that happened. */
int engram__sq_txn_check(sq_t *s);

/* Deletes rows with statement id; binds ns, key (each when non-NULL) then now (when the statement has one more
 * parameter). Returns the rows deleted, or a negative status with s->err set. */
int engram__sq_delete_where(sq_t *s, sq_stmt_id id, const char *ns, size_t ns_len, const char *key, size_t key_len,
                            int64_t now);
/* The file and WAL sizes for info: page_count * page_size, and the -wal file's size (0 when none). */
int engram__sq_sizes(sq_t *s, double *file_bytes, double *wal_bytes);
/* Binds text of len bytes (or NULL) as a transient-free static parameter. */
int engram__sq_bind_text(sqlite3_stmt *st, int i, const char *text, size_t len);

/* Adds the row of st whose value column is at index base (then metadata, created_at, updated_at, expires_at,
 * version) as a reply item with key and ns. meta: metadata already parsed (handed over), or NULL to parse it
 * from the row when with_meta. Returns 0, ENGRAM_ENOMEM, or ENGRAM_EBACKEND (stored JSON unreadable; s->err). */
int engram__sq_add_row(sq_t *s, engram_request_t *req, sqlite3_stmt *st, int base, const char *ns, const char *key,
                       int with_value, int with_meta, cJSON *meta, double score);
/* Parses the JSON text in column col of st into *out (NULL for SQL NULL). 0 or ENGRAM_EBACKEND with s->err
 * naming the key. */
int engram__sq_parse_col(sq_t *s, sqlite3_stmt *st, int col, const char *key, const char *what, cJSON **out);

#endif
