/*
 * sources_sqlite.c — the SQLite source's entries in the conformance list (tests/support/sources_list.c).
 *
 * "sqlite" runs every case on a fresh database file in a temporary directory made at setup: each test's
 * options name a new file, the previous test's file (and its -wal/-shm) is removed when the next one is made,
 * and the last file and the directory are removed at teardown (and at exit, should a test abort the program).
 * "sqlite-memory" runs the same cases on ":memory:" (a copy of the vtable under that type name, so that the
 * suite's info check sees the type it expects). "sqlite-home" runs them on a file database with the source's
 * actor on the manager's home loop ("thread": "home", src/actor/placement.h): group commit, read groups, the TTL
 * sweep and close then use handles of the test's own loop, and answers are delivered there directly.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "support/harness.h"
#include "support/tmp_db.h"

static tmp_db_t sq_db;

static int sq_setup(void) { return tmp_db_open(&sq_db, "engram_sqlite"); }
static void sq_cleanup(void) { tmp_db_close(&sq_db); }

static char *sq_options(void) {
  char buf[256];
  snprintf(buf, sizeof buf, "{\"path\": \"%s\", \"busy_timeout_ms\": 10000}", tmp_db_next(&sq_db));
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

/* "sqlite-required-only": SQLite with only the required methods, so that every core emulation (update's
 * read → function → conditional store above all) runs against a backend whose calls finish later, on a thread
 * of its own, after a group commit — unlike the cache, which finishes each call before the next starts. */
static engram_source_vtable_t sq_required_vt;
static int sq_required_setup(void) {
  conf_required_only(&sq_required_vt, &engram_source_sqlite, "sqlite-required-only");
  return sq_setup();
}

const conf_source_t conf_source_sqlite_required = {"sqlite-required-only", &sq_required_vt, sq_required_setup,
                                                   sq_cleanup, sq_options};

/* "sqlite-home": the same file database as "sqlite", its actor on the home loop instead of a thread of its own. */
static engram_source_vtable_t sq_home_vt;
static int sq_home_setup(void) {
  sq_home_vt = engram_source_sqlite;
  sq_home_vt.name = "sqlite-home";
  return sq_setup();
}
static char *sq_home_options(void) {
  char buf[256];
  snprintf(buf, sizeof buf, "{\"path\": \"%s\", \"busy_timeout_ms\": 10000, \"thread\": \"home\"}",
           tmp_db_next(&sq_db));
  return engram_strdup(buf);
}

const conf_source_t conf_source_sqlite_home = {"sqlite-home", &sq_home_vt, sq_home_setup, sq_cleanup,
                                               sq_home_options};
