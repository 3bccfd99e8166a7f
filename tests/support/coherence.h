/*
 * coherence.h — the cross-process coherence check shared by tests/test_coherence_postgres.c and
 * tests/test_coherence_redis.c (issue 13 item 2): a worker process with tiered(cache, durable) over a shared
 * server runs interleaved writes and reads of a set of keys and checks that it never reads a version older than
 * one it has already seen (acknowledged or read), nor one older than another worker acknowledged more than a
 * second before the read began; the parent runs several workers at once (the test binary
 * itself, re-executed with "--coherence-worker") and collects their results. Plus small synchronous helpers
 * over one in-process manager: a tiered source's coherence state from info, a read of one source.
 */
#ifndef ENGRAM_TEST_COHERENCE_H
#define ENGRAM_TEST_COHERENCE_H

#include "support/harness.h"

/* What a worker reports on its last stdout line: "RESULT ops reads writes violations cache_hits remote". */
typedef struct {
  long ops, reads, writes, violations, cache_hits, remote;
  int exit_status;
} coh_result_t;

/* The worker's main: argv[1] is "--coherence-worker", then id, ops, seed, keys, the durable tier's options
 * (JSON). Adds "c" (cache), "d" (durable: vt), "t" (tiered c, d); waits until t's coherence is "up"; prints
 * READY; waits for one byte on stdin; runs the ops over `lanes` key sets at once (the calls on one key one at a
 * time); prints RESULT. Returns the process's exit status (0 = ran; violations are in RESULT). */
int coh_worker_main(int argc, char **argv, const engram_source_vtable_t *vt);

/* Starts n workers (the running program re-executed), waits until every one is READY, releases them together
 * and waits for their RESULT lines and their exit (deadline_ms for the whole). Returns 0, or -1 with a message
 * on stderr. */
int coh_run_workers(int n, long ops, int keys, const char *durable_options, int deadline_ms, coh_result_t *out);

/* A tiered source's info field "coherence" ("up", "down", "resyncing", ...) into out, or "?" on an error. */
void coh_state(ctx_t *c, const char *source, char *out, size_t outlen);
/* Runs the loop until coh_state(source) equals want, failing the test after timeout_ms. */
void coh_wait_state(ctx_t *c, const char *source, const char *want, int timeout_ms);
/* A number in a source's info (its backend part, or the core's), -1 when absent. */
double coh_info_number(ctx_t *c, const char *source, const char *field);
/* Retrieves key from source: returns the version read, 0 when not found (asserts on other errors). */
uint64_t coh_version(ctx_t *c, const char *source, const char *key);
/* Stores {"v": n} at key through source; returns the version stored (asserts success). */
uint64_t coh_store(ctx_t *c, const char *source, const char *key, int n);
/* Adds a source (asserts success within 30 s). */
void coh_add(ctx_t *c, const char *name, const engram_source_vtable_t *vt, const char *options);

#endif
