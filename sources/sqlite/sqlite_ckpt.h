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
/* Before the actor opens a write transaction on db: when the WAL has grown long and the thread's passes left at
 * most a short tail (or the WAL reached its hard bound: a takeover), copies that tail, so that the transaction
 * starts the WAL over. k may be NULL (no thread: nothing to do). */
void engram__sq_ckpt_before_begin(sq_ckpt_t *k, sqlite3 *db);
/* Stops and joins the thread, removes the hook from db (when not NULL) and closes the thread's connection; frees
 * k (NULL is fine). Call before db closes. */
void engram__sq_ckpt_stop(sq_ckpt_t *k, sqlite3 *db);
/* The wal hook's decision after a commit that left the WAL `frames` long with `lag` of them not copied yet, the
 * thread idle: nothing, a pass of the thread, or the tail for the actor to copy before its next transaction (the
 * WAL then starts over). chase: the lag the thread's last catch-up pass was sent to copy (0: none). A pure
 * function, so that the policy is tested on its own (tests/test_sqlite.c). */
typedef enum { SQ_CKPT_NOTHING, SQ_CKPT_PASS, SQ_CKPT_TAIL } sq_ckpt_step_t;
sq_ckpt_step_t engram__sq_ckpt_next(int frames, int lag, int chase);
/* Its thresholds, in frames (4 KiB pages here): a pass every CKPT_FRAMES appended; the WAL is to start over past
 * INLINE_FRAMES, the actor then copying at most TAIL_FRAMES unless the passes stop gaining; past HARD_FRAMES the
 * actor copies whatever is left (a takeover). */
#define ENGRAM_SQ_CKPT_FRAMES 1000
#define ENGRAM_SQ_INLINE_FRAMES 8000
#define ENGRAM_SQ_TAIL_FRAMES 128
#define ENGRAM_SQ_HARD_FRAMES 12000

/* Counters for info (all 0 for k NULL). */
typedef struct {
  uint64_t passes, failures; /* passes the thread ran, and the ones that failed */
  uint64_t inline_passes;    /* WAL tails the actor copied itself */
  uint64_t takeovers;        /* ... of which the WAL had reached its hard bound, the thread behind */
  uint64_t inline_max_frames; /* the most frames one of the other tails took */
} sq_ckpt_stats_t;
void engram__sq_ckpt_stats(sq_ckpt_t *k, sq_ckpt_stats_t *out);

#endif
