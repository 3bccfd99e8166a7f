/*
 * reqpool.h — per-thread reuse of request blocks (see reqpool.c).
 */
#ifndef ENGRAM_REQPOOL_H
#define ENGRAM_REQPOOL_H

#include <stddef.h>

/* The kinds of pooled block: each kind always has one size. */
typedef enum {
  ENGRAM__POOL_REQUEST = 0, /* request.c: a request block of the standard size */
  ENGRAM__POOL_THREAD_CALL, /* thread/thread_call.c: the state of one conversation call */
  ENGRAM__POOL_KINDS
} engram__pool_kind_t;

/* A block of block_size bytes from this thread's pool of that kind, or from the allocator (NULL on ENOMEM).
 * Every call for one kind passes the same block_size (a pool keeps blocks of one size). Not zeroed. */
void *engram__reqpool_get(engram__pool_kind_t kind, size_t block_size);
/* Keeps a block (from engram__reqpool_get of that kind) for reuse on this thread, or frees it when the pool is
 * full. */
void engram__reqpool_put(engram__pool_kind_t kind, void *block);

#endif
