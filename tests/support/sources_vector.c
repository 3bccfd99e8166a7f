/*
 * sources_vector.c — the vector source's entries in the conformance list (tests/support/sources_list.c).
 *
 * "vector" runs every case in memory with the built-in hash embedder. "vector-file" runs them again persisted:
 * each test's options name a fresh SQLite file in a temporary directory made at setup (the previous test's file
 * and its -wal/-shm are removed when the next one is made; the last one and the directory at teardown, or at
 * exit should a test abort the program). It is a copy of the vtable under that type name, so that the suite's
 * info check sees the type it expects.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "support/harness.h"

static char vx_dir[64];
static char vx_last[160];
static engram_source_vtable_t vector_file_vt;

static void vx_remove_db(const char *path) {
  char p[200];
  if (path[0] == '\0') return;
  unlink(path);
  snprintf(p, sizeof p, "%s-wal", path);
  unlink(p);
  snprintf(p, sizeof p, "%s-shm", path);
  unlink(p);
}

static void vx_cleanup(void) {
  vx_remove_db(vx_last);
  vx_last[0] = '\0';
  if (vx_dir[0] != '\0') rmdir(vx_dir);
  vx_dir[0] = '\0';
}

static int vx_setup(void) {
  static int registered;
  vector_file_vt = engram_source_vector;
  vector_file_vt.name = "vector-file";
  snprintf(vx_dir, sizeof vx_dir, "/tmp/engram_vector_XXXXXX");
  if (mkdtemp(vx_dir) == NULL) {
    vx_dir[0] = '\0';
    return -1;
  }
  if (!registered) {
    registered = 1;
    atexit(vx_cleanup);
  }
  return 0;
}

static char *vx_memory_options(void) { return engram_strdup("{\"sweep_interval_ms\": 20}"); }

static char *vx_file_options(void) {
  char buf[256];
  vx_remove_db(vx_last);
  snprintf(vx_last, sizeof vx_last, "%s/%s.db", vx_dir, unique_name("conf"));
  snprintf(buf, sizeof buf, "{\"path\": \"%s\", \"sweep_interval_ms\": 20}", vx_last);
  return engram_strdup(buf);
}

const conf_source_t conf_source_vector = {"vector", &engram_source_vector, NULL, NULL, vx_memory_options};
const conf_source_t conf_source_vector_file = {"vector-file", &vector_file_vt, vx_setup, vx_cleanup, vx_file_options};
