/*
 * failing_alloc.h — the allocation-failure loop shared by the tests: an engram allocator that fails exactly the
 * Nth allocation and counts live blocks, run over every N until a whole scenario makes fewer than N
 * allocations. A run that leaves a block behind fails the test.
 */
#ifndef ENGRAM_TEST_FAILING_ALLOC_H
#define ENGRAM_TEST_FAILING_ALLOC_H

#include "engram/source.h"

/* Runs scenario(arg) once per allocation point with that allocation failing (ENGRAM_ALLOC_ONLY=N runs only
 * N) and returns how many points there were. Installs the failing allocator for the loop and restores the
 * default after. */
long failing_alloc_loop(void (*scenario)(void *arg), void *arg);
/* The allocation number failing in the current run. */
long failing_alloc_point(void);
/* A scenario for the loop: a manager on a fresh loop, source vt opened with options, then every operation
 * (stores with metadata, retrieve, text / filter / pattern searches, count, list_keys, update, the batch
 * forms, exists, delete, info, list_sources, clear) and close. Each call must end with success, ENGRAM_ENOMEM
 * or ENGRAM_ENOTFOUND — from the call or from exactly one callback. */
void failing_alloc_every_op(const engram_source_vtable_t *vt, const char *options);
/* A scenario for the loop: a manager on a fresh loop configured from config_json (engram_manager_configure:
 * the JSON document, "${NAME}" expansion, each backend's option readers engram_opt_*), then
 * engram_manager_set_default_source(mgr, default_source), list_sources, a store and a retrieve on the default
 * source, and close. Each call must end with success or ENGRAM_ENOMEM — from the call or from exactly one
 * callback; a configure that failed part-way leaves the sources it added, and the rest must still work. */
void failing_alloc_configure(const char *config_json, const char *default_source);

#endif
