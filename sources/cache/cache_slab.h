/*
 * cache_slab.h — where the cache's entries live (cache_slab.c): slabs of one size class each, apart from the
 * process's other allocations.
 *
 * Why: an entry is long-lived, and the calls that store it allocate and free many short-lived blocks around it
 * (requests, replies, cJSON trees, a conversation's update). With every entry its own malloc block, 100,000 stored
 * messages left the C library's heap a lattice of entries with ~14,700 small free holes between them (3.5 MiB of
 * 34 MiB), and every later call's short-lived blocks were carved from holes all over it: the same instructions, but
 * twice the CPU time of a Redis conversation window in the same process (docs/conversations.md, The heap a cache
 * leaves). In slabs, the entries stay packed together and the short-lived blocks keep a compact heap of their own.
 */
#ifndef ENGRAM_CACHE_SLAB_H
#define ENGRAM_CACHE_SLAB_H

#include <stddef.h>
#include <stdint.h>

/* Size classes: 16-byte steps up to 512 bytes, then four a power of two up to ENGRAM__CACHE_SLAB_MAX. */
#define ENGRAM__CACHE_SLAB_CLASSES 52
#define ENGRAM__CACHE_SLAB_MAX 16384

typedef struct engram__cache_slab_s engram__cache_slab_t;

/* The slabs of one cache (embed it zeroed; one thread: the cache's home loop). */
typedef struct {
  engram__cache_slab_t *partial[ENGRAM__CACHE_SLAB_CLASSES]; /* per class: its slabs with room (a list) */
  uint32_t n_class[ENGRAM__CACHE_SLAB_CLASSES];               /* per class: its slabs */
  uint8_t n_empty[ENGRAM__CACHE_SLAB_CLASSES];                /* per class: its empty slabs kept (0 or 1: the spare) */
  engram__cache_slab_t **all;                                  /* every slab, by address (free finds its slab) */
  size_t n_all, cap_all;
} engram__cache_slabs_t;

/* A block of n bytes (16-byte aligned): from a slab of n's class when n <= ENGRAM__CACHE_SLAB_MAX, else from
 * engram_malloc. NULL when out of memory. */
void *engram__cache_slab_alloc(engram__cache_slabs_t *s, size_t n);

/* Gives back a block of n bytes (the n it was allocated with). A slab left empty is kept as its class's spare when
 * the class has no empty slab, else freed. */
void engram__cache_slab_free(engram__cache_slabs_t *s, void *p, size_t n);

/* Frees every slab: call when every block has been given back (or is abandoned with the cache). */
void engram__cache_slab_release(engram__cache_slabs_t *s);

#endif
