/*
 * sqlite_ckpt.h — the SQLite source's WAL checkpointer (sqlite_ckpt.c): a thread with a connection of its own
 * that copies the WAL back into the database file off the actor thread. It knows nothing of the source: it is
 * given the actor's connection and the file's settings at start, and is called back only by SQLite (the wal hook
 * it installs on that connection). sqlite_db.c starts, feeds and stops it; sqlite.c reads its counters for info.
 */
#ifndef ENGRAM_SOURCES_SQLITE_CKPT_H
#define ENGRAM_SOURCES_SQLITE_CKPT_H

#include <sqlite3.h>
#include <stdint.h>

typedef struct sq_ckpt_s sq_ckpt_t;

/* For a file in WAL mode (journal_mode "wal", path not ":memory:"): opens the checkpointer's connection to path,
 * starts its thread and turns db's automatic checkpoint into the hook that wakes it; *out is the checkpointer.
 * Anything short of that leaves *out NULL and db with SQLite's automatic checkpoint. Returns 0 or ENGRAM_ENOMEM. */
int engram__sq_ckpt_start(sqlite3 *db, const char *path, const char *journal_mode, int busy_ms, sq_ckpt_t **out);
/* Before the actor opens a write transaction on db: when the WAL has grown long (the hook said so after a pass of
 * the thread), copies the frames the thread left there, so that the transaction starts the WAL over. k may be
 * NULL (no thread: nothing to do). */
void engram__sq_ckpt_before_begin(sq_ckpt_t *k, sqlite3 *db);
/* Stops and joins the thread, removes the hook from db (when not NULL) and closes the thread's connection; frees
 * k (NULL is fine). Call before db closes. */
void engram__sq_ckpt_stop(sq_ckpt_t *k, sqlite3 *db);
/* Passes the thread ran and the ones that failed, and the tails the actor copied itself (all 0 for k NULL). */
void engram__sq_ckpt_stats(sq_ckpt_t *k, uint64_t *passes, uint64_t *failures, uint64_t *inline_passes);

#endif
