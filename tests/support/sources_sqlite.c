/*
 * sources_sqlite.c — the SQLite source's entries in the conformance list (tests/support/sources_list.c).
 *
 * "sqlite" runs every case on a fresh database file in a temporary directory made at setup: each test's
 * options name a new file, the previous test's file (and its -wal/-shm) is removed when the next one is made,
 * and the last file and the directory are removed at teardown (and at exit, should a test abort the program).
 * "sqlite-memory" runs the same cases on ":memory:" (a copy of the vtable under that type name, so that the
 * suite's info check sees the type it expects).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "support/harness.h"

static char sq_dir[64];
static char sq_last[160];

static void sq_remove_db(const char *path) {
  char p[200];
  if (path[0] == '\0') return;
  unlink(path);
  snprintf(p, sizeof p, "%s-wal", path);
  unlink(p);
  snprintf(p, sizeof p, "%s-shm", path);
  unlink(p);
}

static void sq_cleanup(void) {
  sq_remove_db(sq_last);
  sq_last[0] = '\0';
  if (sq_dir[0] != '\0') rmdir(sq_dir);
  sq_dir[0] = '\0';
}

static int sq_setup(void) {
  static int registered;
  snprintf(sq_dir, sizeof sq_dir, "/tmp/engram_sqlite_XXXXXX");
  if (mkdtemp(sq_dir) == NULL) {
    sq_dir[0] = '\0';
    return -1;
  }
  if (!registered) {
    registered = 1;
    atexit(sq_cleanup);
  }
  return 0;
}

static char *sq_options(void) {
  char buf[256];
  sq_remove_db(sq_last);
  snprintf(sq_last, sizeof sq_last, "%s/%s.db", sq_dir, unique_name("conf"));
  snprintf(buf, sizeof buf, "{\"path\": \"%s\", \"busy_timeout_ms\": 10000}", sq_last);
  return engram_strdup(buf);
}

const conf_source_t conf_source_sqlite = {"sqlite", &engram_source_sqlite, sq_setup, sq_cleanup, sq_options};

static engram_source_vtable_t sq_memory_vt;
static int sq_memory_setup(void) {
  sq_memory_vt = engram_source_sqlite;
  sq_memory_vt.name = "sqlite-memory";
  return 0;
}
static char *sq_memory_options(void) { return engram_strdup("{\"path\": \":memory:\"}"); }

const conf_source_t conf_source_sqlite_memory = {"sqlite-memory", &sq_memory_vt, sq_memory_setup, NULL,
                                                 sq_memory_options};
