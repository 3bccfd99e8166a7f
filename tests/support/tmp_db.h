/*
 * tmp_db.h — fresh SQLite database files for the conformance entries of file-backed sources: a private
 * temporary directory, a new file per test (the previous one and its -wal/-shm removed), and cleanup at exit
 * even when a test fails.
 */
#ifndef ENGRAM_TEST_TMP_DB_H
#define ENGRAM_TEST_TMP_DB_H

typedef struct {
  char dir[64];
  char last[160];
} tmp_db_t;

/* Creates /tmp/<prefix>_XXXXXX and registers the cleanup. Returns 0 or -1. */
int tmp_db_open(tmp_db_t *t, const char *prefix);
/* Removes the previous file and returns a new path in the directory (valid until the next call). */
const char *tmp_db_next(tmp_db_t *t);
/* Removes the last file and the directory. */
void tmp_db_close(tmp_db_t *t);

#endif
