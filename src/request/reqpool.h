/*
 * reqpool.h — per-thread reuse of request blocks (see reqpool.c).
 */
#ifndef ENGRAM_REQPOOL_H
#define ENGRAM_REQPOOL_H

#include <stddef.h>

/* A block of block_size bytes from this thread's pool, or from the allocator (NULL on ENOMEM). Every call in the
 * process passes the same block_size (the pool keeps blocks of one size). */
void *engram__reqpool_get(size_t block_size);
/* Keeps a block (from engram__reqpool_get) for reuse on this thread, or frees it when the pool is full. */
void engram__reqpool_put(void *block);

#endif
