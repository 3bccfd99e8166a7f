/*
 * sqlite_ckpt.c — WAL checkpoints of the SQLite source, on a thread of their own instead of the actor's.
 *
 * SQLite's automatic checkpoint runs inside the COMMIT that takes the WAL past 1,000 pages: it fsyncs the WAL,
 * copies its pages back into the database file and fsyncs that, all on the actor thread, which answers nothing
 * meanwhile. Under a steady stream of stores that was a 5-15 ms stall every ~150 ms, and every call offered in
 * those milliseconds queued behind it (store latency at half load: p99 2-10 times raw SQLite's).
 *
 * So a file database in WAL mode gets a second connection, owned by a checkpointer thread, and the actor's
 * connection gets a wal hook in place of the automatic checkpoint. After each commit the hook compares the
 * WAL's length with what the last pass copied: CKPT_FRAMES more frames wake the thread, which runs a PASSIVE
 * checkpoint — the kind that never takes the write lock, so the actor keeps committing while pages are copied —
 * and then fsyncs the database file itself (SQLite does that only after a pass that reached the end of the WAL,
 * which under a stream of commits none does; the whole backlog would otherwise be synced by the final pass).
 * A checkpoint only copies: what a commit made durable does not change (synchronous=FULL still fsyncs the WAL in
 * each COMMIT on the actor; NORMAL leaves that to checkpoints, as before).
 *
 * SQLite starts the WAL over only when a write transaction begins while every frame has been copied; under a
 * stream of commits that moment may not come, and the WAL would grow. So once it is INLINE_FRAMES long, the
 * actor copies what is left itself, right before its next BEGIN (engram__sq_ckpt_before_begin), and that
 * transaction starts the WAL over. That copy blocks the actor's loop — the manager's home loop for a source
 * placed there — for two fsyncs and the pages it copies, so the thread first shrinks what is left: past
 * INLINE_FRAMES every commit that finds it idle starts another pass, each copying the frames committed during the
 * one before, and the actor copies only when at most TAIL_FRAMES are left, or when a pass did not gain on the
 * commits (fsyncs slower than the stream: what is left is then what it always was). Before, the actor copied as
 * soon as the thread was idle: the frames committed during its last pass, ~1,000 under a steady stream at half of
 * raw SQLite's peak, 6-30 ms on the home loop every ~300 ms (bench_sqlite's open loop, instrumented); after,
 * 42-183 frames and 1.1-3.1 ms — but 9-25 ms when other processes' I/O slows the two fsyncs, which stay (the WAL
 * can start over only once the database file is synced). On a machine so busy that the thread gets no CPU, its
 * passes may not come at all: past HARD_FRAMES the actor takes over a pass not started yet, or waits for the one
 * running, and copies the rest itself (a takeover), so the WAL stays bounded (about 48 MB) however the thread is
 * scheduled. A source that cannot start the thread or open the second connection keeps SQLite's automatic
 * checkpoint; ":memory:" and non-WAL journals have no WAL to checkpoint.
 *
 * The checkpointer stands alone: it gets the actor's connection and the file's settings as arguments and keeps
 * its own state (sq_ckpt_t), so it calls nothing of the source; SQLite calls it back through the wal hook.
 */
#include <string.h>
#include <strings.h>
#include <uv.h>

#include "engram/source.h"
#include "sqlite_ckpt.h"

#define CKPT_FRAMES ENGRAM_SQ_CKPT_FRAMES     /* frames appended since the last pass that wake the thread (SQLite's) */
#define INLINE_FRAMES ENGRAM_SQ_INLINE_FRAMES /* WAL length (~32 MB) past which it is to start over */
#define TAIL_FRAMES ENGRAM_SQ_TAIL_FRAMES     /* the most the actor then copies while the passes gain */
#define HARD_FRAMES ENGRAM_SQ_HARD_FRAMES     /* WAL length past which it copies whatever is left (a takeover) */

struct sq_ckpt_s {
  uv_thread_t thread;
  uv_mutex_t mu;
  uv_cond_t cv;
  uv_cond_t idle; /* signalled when a pass of the thread ends */
  sqlite3 *db;    /* the checkpointer's connection; used only by the thread once it runs */
  int want;       /* a pass is requested (mu) */
  int stop;       /* the thread should end (mu) */
  int busy;       /* a pass is running (mu) */
  int copied;     /* frames of the WAL copied by the last pass (mu), as SQLite numbers them */
  int wal_seen;   /* the WAL length at the last commit (mu) */
  int tail_due;   /* the actor should copy the tail before its next transaction (actor thread only) */
  int chase;      /* the lag the thread's running catch-up pass was sent to copy, 0 when none (mu) */
  uint64_t passes, failures; /* (mu) */
  /* Tails the actor copied itself, the takeovers among them, and the most frames one of the others copied (actor
   * thread only). */
  uint64_t inline_passes, takeovers, inline_max_frames;
};

/* fsync of the database file through the checkpointer's own handle (SQLite's VFS, so any platform). */
static void sync_db(sq_ckpt_t *k) {
  sqlite3_file *f = NULL;
  if (sqlite3_file_control(k->db, "main", SQLITE_FCNTL_FILE_POINTER, &f) == SQLITE_OK && f != NULL &&
      f->pMethods != NULL)
    f->pMethods->xSync(f, SQLITE_SYNC_NORMAL);
}

static void ckpt_main(void *arg) {
  sq_ckpt_t *k = arg;
  uv_mutex_lock(&k->mu);
  for (;;) {
    int rc, log = 0, done = 0;
    while (!k->want && !k->stop) uv_cond_wait(&k->cv, &k->mu);
    if (k->stop) break;
    k->want = 0;
    k->busy = 1;
    uv_mutex_unlock(&k->mu);
    rc = sqlite3_wal_checkpoint_v2(k->db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log, &done);
    /* SQLite syncs the database file only after a pass that reached the end of the WAL; under a stream of
     * commits none does, and the whole backlog of copied pages would then be synced by the actor's final pass.
     * Sync them here, off the actor's path. */
    if (rc == SQLITE_OK && done > 0) sync_db(k); /* a no-op when SQLite just did it */
    uv_mutex_lock(&k->mu);
    k->busy = 0;
    k->passes++;
    uv_cond_signal(&k->idle);
    if (rc == SQLITE_OK) {
      k->copied = done;
    } else if (rc != SQLITE_BUSY) { /* BUSY: another checkpoint (another process) holds the lock; next time */
      k->failures++;
    }
  }
  uv_mutex_unlock(&k->mu);
}

sq_ckpt_step_t engram__sq_ckpt_next(int frames, int lag, int chase) {
  if (frames >= INLINE_FRAMES) {
    /* The WAL is to start over. The actor copies what is left once that is short, or once the thread's last pass
     * did not gain on the commits (the frames committed during it were as many as it was sent to copy: an fsync
     * slower than the stream); until then the thread copies again, each pass only the frames committed during
     * the one before. */
    if (lag <= TAIL_FRAMES || (chase > 0 && lag >= chase)) return SQ_CKPT_TAIL;
    return SQ_CKPT_PASS;
  }
  return lag >= CKPT_FRAMES ? SQ_CKPT_PASS : SQ_CKPT_NOTHING;
}

/* After every commit of the actor's connection (in place of the automatic checkpoint). */
static int wal_hook(void *ud, sqlite3 *db, const char *name, int frames) {
  sq_ckpt_t *k = ud;
  int lag;
  (void)db;
  (void)name;
  uv_mutex_lock(&k->mu);
  if (frames < k->wal_seen && !k->busy) k->copied = k->chase = 0; /* the WAL started over: nothing copied yet */
  k->wal_seen = frames;
  lag = frames - (k->copied <= frames ? k->copied : 0);
  /* A thread that gets no CPU (a busy machine) must not let the WAL grow without bound: past HARD_FRAMES the
   * actor copies the tail itself before its next transaction, taking over a pass not started yet or waiting for
   * the one running (engram__sq_ckpt_before_begin). */
  if (frames >= HARD_FRAMES) k->tail_due = 1;
  if (!k->busy && !k->want) {
    switch (engram__sq_ckpt_next(frames, lag, k->chase)) {
      case SQ_CKPT_TAIL:
        k->tail_due = 1;
        k->chase = 0;
        break;
      case SQ_CKPT_PASS:
        if (frames >= INLINE_FRAMES) k->chase = lag; /* a catch-up pass: the next decision sees whether it gained */
        k->want = 1;
        uv_cond_signal(&k->cv);
        break;
      default: break;
    }
  }
  uv_mutex_unlock(&k->mu);
  return SQLITE_OK;
}

void engram__sq_ckpt_before_begin(sq_ckpt_t *k, sqlite3 *db) {
  int log = 0, done = 0, rc, takeover, before;
  if (k == NULL || !k->tail_due) return;
  uv_mutex_lock(&k->mu);
  k->tail_due = 0;
  takeover = k->wal_seen >= HARD_FRAMES;
  if (takeover) {
    k->want = k->chase = 0;                       /* a pass not started yet: the actor's instead */
    while (k->busy) uv_cond_wait(&k->idle, &k->mu); /* one running: its end, then the tail */
  } else if (k->busy || k->want) { /* the thread got there first: its pass leaves a tail again */
    uv_mutex_unlock(&k->mu);
    return;
  }
  k->busy = 1; /* keeps the thread's pass and ours apart (they would only meet SQLITE_BUSY) */
  before = k->copied;
  uv_mutex_unlock(&k->mu);
  rc = sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log, &done);
  uv_mutex_lock(&k->mu);
  k->busy = 0;
  if (rc == SQLITE_OK) k->copied = done;
  uv_mutex_unlock(&k->mu);
  k->inline_passes++;
  if (takeover) k->takeovers++;
  else if (rc == SQLITE_OK && done > before && (uint64_t)(done - before) > k->inline_max_frames)
    k->inline_max_frames = (uint64_t)(done - before);
}

int engram__sq_ckpt_start(sqlite3 *db, const char *path, const char *journal_mode, int busy_ms, sq_ckpt_t **out) {
  sq_ckpt_t *k;
  *out = NULL;
  if (strcmp(path, ":memory:") == 0 || strcasecmp(journal_mode, "wal") != 0) return 0;
  if ((k = engram_calloc(1, sizeof *k)) == NULL) return ENGRAM_ENOMEM;
  /* A connection reads the database (and opens its WAL) only at its first transaction; until then a checkpoint
   * through it is a no-op, so it reads the schema once here. */
  if (sqlite3_open_v2(path, &k->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK ||
      sqlite3_busy_timeout(k->db, busy_ms) != SQLITE_OK ||
      sqlite3_exec(k->db, "SELECT count(*) FROM sqlite_master", NULL, NULL, NULL) != SQLITE_OK) {
    sqlite3_close(k->db); /* keep SQLite's automatic checkpoint */
    engram_free(k);
    return 0;
  }
  if (uv_mutex_init(&k->mu) != 0) goto no_thread;
  if (uv_cond_init(&k->cv) != 0) {
    uv_mutex_destroy(&k->mu);
    goto no_thread;
  }
  if (uv_cond_init(&k->idle) != 0) {
    uv_cond_destroy(&k->cv);
    uv_mutex_destroy(&k->mu);
    goto no_thread;
  }
  if (uv_thread_create(&k->thread, ckpt_main, k) != 0) {
    uv_cond_destroy(&k->idle);
    uv_cond_destroy(&k->cv);
    uv_mutex_destroy(&k->mu);
    goto no_thread;
  }
  *out = k;
  sqlite3_wal_hook(db, wal_hook, k); /* replaces (turns off) the automatic checkpoint */
  return 0;
no_thread:
  sqlite3_close(k->db);
  engram_free(k);
  return 0;
}

void engram__sq_ckpt_stop(sq_ckpt_t *k, sqlite3 *db) {
  if (k == NULL) return;
  uv_mutex_lock(&k->mu);
  k->stop = 1;
  uv_cond_signal(&k->cv);
  uv_mutex_unlock(&k->mu);
  uv_thread_join(&k->thread);
  /* The actor's connection closes after this one: SQLite then checkpoints whatever is left and removes the WAL. */
  if (db != NULL) sqlite3_wal_hook(db, NULL, NULL);
  sqlite3_close(k->db);
  uv_cond_destroy(&k->idle);
  uv_cond_destroy(&k->cv);
  uv_mutex_destroy(&k->mu);
  engram_free(k);
}

void engram__sq_ckpt_stats(sq_ckpt_t *k, sq_ckpt_stats_t *out) {
  memset(out, 0, sizeof *out);
  if (k == NULL) return;
  uv_mutex_lock(&k->mu);
  out->passes = k->passes;
  out->failures = k->failures;
  uv_mutex_unlock(&k->mu);
  out->inline_passes = k->inline_passes;
  out->takeovers = k->takeovers;
  out->inline_max_frames = k->inline_max_frames;
}
