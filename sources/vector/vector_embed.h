/*
 * vector_embed.h — the embedder registry's internal side (vector_embed.c): how a vector source takes and gives
 * back a reference to the embedder it was configured with.
 */
#ifndef ENGRAM_VECTOR_EMBED_H
#define ENGRAM_VECTOR_EMBED_H

#include "engram/vector.h"

typedef struct engram__embedder_ref_s engram__embedder_ref_t;

/* A counted reference to the embedder registered as name, or NULL when there is none. Thread: any. */
engram__embedder_ref_t *engram__embedder_acquire(const char *name);
/* Drops the reference; the last one of an unregistered embedder runs its destroy. Thread: any. */
void engram__embedder_release(engram__embedder_ref_t *ref);
const engram_embedder_t *engram__embedder_of(const engram__embedder_ref_t *ref);
const char *engram__embedder_name(const engram__embedder_ref_t *ref);
/* Non-zero for the built-in "hash" embedder. */
int engram__embedder_is_builtin(const engram__embedder_ref_t *ref);

#endif
