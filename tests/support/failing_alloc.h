/*
 * failing_alloc.h — the allocation-failure loop shared by the tests: an engram allocator that fails exactly the
 * Nth allocation and counts live blocks, run over every N until a whole scenario makes fewer than N
 * allocations. A run that leaves a block behind fails the test.
 */
#ifndef ENGRAM_TEST_FAILING_ALLOC_H
#define ENGRAM_TEST_FAILING_ALLOC_H

/* Runs scenario(arg) once per allocation point with that allocation failing (ENGRAM_ALLOC_ONLY=N runs only
 * N) and returns how many points there were. Installs the failing allocator for the loop and restores the
 * default after. */
long failing_alloc_loop(void (*scenario)(void *arg), void *arg);
/* The allocation number failing in the current run. */
long failing_alloc_point(void);

#endif
