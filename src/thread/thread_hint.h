/*
 * thread_hint.h — the last head this process saw of each thread, as a hint (thread_hint.c).
 *
 * A window needs the head to know which message keys to read, so it took two round trips: the head, then the
 * messages. With a hint it asks for the head AND the messages the hint says are newest in one retrieve_many, and
 * keeps them when the head it reads there matches the hint (docs/conversations.md, "Windows in one round trip").
 * A hint is never trusted: a stale, colliding or missing one costs the second round trip, nothing else. Fixed
 * memory (a direct-mapped table of small slots, no allocation), any thread (one mutex).
 */
#ifndef ENGRAM_THREAD_HINT_H
#define ENGRAM_THREAD_HINT_H

#include <stddef.h>
#include <stdint.h>

#include "thread/thread_head.h"

/* 64-bit FNV-1a of n bytes at p, continuing from h (0xcbf29ce484222325 to start): the layer's hash of identities
 * (hints, the message cache). */
static inline uint64_t th_fnv(uint64_t h, const void *p, size_t n) {
  const unsigned char *b = p;
  while (n--) h = (h ^ *b++) * 0x100000001b3ull;
  return h;
}

/* The hint's identity: the manager, the call's source option (NULL = the default source), namespace and id. */
uint64_t th_hint_hash(const void *mgr, const char *source, const char *ns, const char *id);

/* Records h's visible range, generation, system and deleted numbers under hash (a head with more system and
 * deleted numbers than a slot holds is not recorded, and clears the slot's hint of the same thread). */
void th_hint_put(uint64_t hash, const th_head_t *h);

/* Fills h (th_head_free frees it; id, metadata, settings and times are not part of a hint) from the hint under
 * hash: 1; 0 when there is none (h empty); -1 on ENOMEM (h empty). */
int th_hint_get(uint64_t hash, th_head_t *h);

/* Non-zero when a and b name the same messages: generation, visible range, system and deleted numbers. */
int th_hint_same(const th_head_t *a, const th_head_t *b);

#endif
