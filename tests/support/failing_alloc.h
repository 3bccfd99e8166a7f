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

#endif
