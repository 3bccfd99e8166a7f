/*
 * reqpool.h — per-thread reuse of request blocks (see reqpool.c).
 */
#ifndef ENGRAM_REQPOOL_H
#define ENGRAM_REQPOOL_H

#include <stddef.h>

/* The size every pooled block has; a request that needs more is allocated and freed plainly. */
size_t engram__reqpool_block_size(void);
/* A block of engram__reqpool_block_size() bytes from this thread's pool, or from the allocator (NULL on ENOMEM). */
void *engram__reqpool_get(void);
/* Keeps a block of engram__reqpool_block_size() bytes (from engram__reqpool_get) for reuse on this thread, or
 * frees it when the pool is full. */
void engram__reqpool_put(void *block);

#endif
