/*
 * sources_vector.c — the vector source's entries in the conformance list (tests/support/sources_list.c).
 *
 * "vector" runs every case in memory with the built-in hash embedder. "vector-file" runs them again persisted:
 * each test's options name a fresh SQLite file in a temporary directory made at setup (the previous test's file
 * and its -wal/-shm are removed when the next one is made; the last one and the directory at teardown, or at
 * exit should a test abort the program). It is a copy of the vtable under that type name, so that the suite's
 * info check sees the type it expects. "vector-hnsw" runs them in memory with the approximate index answering
 * every similarity search ("exact_below": 0), so that namespaces, filters, patterns, ranges and min_score are
 * proven to hold during the graph walk as they do in exact search.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "support/harness.h"
#include "support/tmp_db.h"

static tmp_db_t vx_db;
static engram_source_vtable_t vector_file_vt, vector_hnsw_vt;

static int vx_setup(void) {
  vector_file_vt = engram_source_vector;
  vector_file_vt.name = "vector-file";
  return tmp_db_open(&vx_db, "engram_vector");
}
static void vx_cleanup(void) { tmp_db_close(&vx_db); }

static char *vx_memory_options(void) { return engram_strdup("{\"sweep_interval_ms\": 20}"); }

static char *vx_file_options(void) {
  char buf[256];
  snprintf(buf, sizeof buf, "{\"path\": \"%s\", \"sweep_interval_ms\": 20}", tmp_db_next(&vx_db));
  return engram_strdup(buf);
}

static int vh_setup(void) {
  vector_hnsw_vt = engram_source_vector;
  vector_hnsw_vt.name = "vector-hnsw";
  return 0;
}
static char *vx_hnsw_options(void) {
  return engram_strdup("{\"sweep_interval_ms\": 20, \"index\": {\"type\": \"hnsw\", \"m\": 8, \"ef_construction\": 32, "
                       "\"exact_below\": 0}}");
}

const conf_source_t conf_source_vector_hnsw = {"vector-hnsw", &vector_hnsw_vt, vh_setup, NULL, vx_hnsw_options};
const conf_source_t conf_source_vector = {"vector", &engram_source_vector, NULL, NULL, vx_memory_options};
const conf_source_t conf_source_vector_file = {"vector-file", &vector_file_vt, vx_setup, vx_cleanup, vx_file_options};
