/*
 * mailbox.h — a source actor's bounded multi-producer single-consumer mailbox, built on Concurrency Kit's
 * ck_ring (MPSC enqueue, single-consumer dequeue).
 *
 * `depth` counts requests accepted and not yet started (in the ring or in the actor's backlog), so the
 * capacity is exact: a producer that would exceed it gets ENGRAM_EBUSY at once. The producer that moves depth
 * from 0 to 1 is the one that wakes the actor (uv_async_send), so a busy actor is never woken twice.
 * Under ThreadSanitizer the hand-over is annotated, because ck_pr's atomics are invisible to it.
 */
#ifndef ENGRAM_MAILBOX_H
#define ENGRAM_MAILBOX_H

#include <ck_ring.h>
#include <stdatomic.h>

#include "engram/source.h"

#if defined(__SANITIZE_THREAD__)
#define ENGRAM__TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define ENGRAM__TSAN 1
#endif
#endif
#ifdef ENGRAM__TSAN
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#define ENGRAM__HB_RELEASE(p) __tsan_release(p)
#define ENGRAM__HB_ACQUIRE(p) __tsan_acquire(p)
#else
#define ENGRAM__HB_RELEASE(p) ((void)0)
#define ENGRAM__HB_ACQUIRE(p) ((void)0)
#endif

typedef struct engram__mailbox_s {
  ck_ring_t ring;
  ck_ring_buffer_t *buf;
  unsigned capacity;
  atomic_uint depth;
} engram__mailbox_t;

/* capacity ≥ 1. Returns 0 or ENGRAM_ENOMEM. */
static inline int engram__mailbox_init(engram__mailbox_t *mb, unsigned capacity) {
  unsigned size = 2;
  while (size <= capacity) size <<= 1;
  mb->buf = engram_calloc(size, sizeof *mb->buf);
  if (mb->buf == NULL) return ENGRAM_ENOMEM;
  ck_ring_init(&mb->ring, size);
  mb->capacity = capacity;
  atomic_init(&mb->depth, 0);
  return 0;
}

static inline void engram__mailbox_destroy(engram__mailbox_t *mb) {
  engram_free(mb->buf);
  mb->buf = NULL;
}

/* Producer, any thread. Returns 0 or ENGRAM_EBUSY; *wake is set when the actor must be woken. */
static inline int engram__mailbox_push(engram__mailbox_t *mb, engram_request_t *req, int *wake) {
  unsigned before = atomic_fetch_add_explicit(&mb->depth, 1, memory_order_acq_rel);
  if (before >= mb->capacity) {
    atomic_fetch_sub_explicit(&mb->depth, 1, memory_order_acq_rel);
    *wake = 0;
    return ENGRAM_EBUSY;
  }
  ENGRAM__HB_RELEASE(req);
  /* The ring holds more slots than the capacity, so this cannot fail. */
  while (!ck_ring_enqueue_mpsc(&mb->ring, mb->buf, req)) {
  }
  *wake = before == 0;
  return 0;
}

/* Consumer (the actor thread). NULL when the ring is empty. */
static inline engram_request_t *engram__mailbox_pop(engram__mailbox_t *mb) {
  engram_request_t *req;
  if (!ck_ring_dequeue_mpsc(&mb->ring, mb->buf, &req)) return NULL;
  ENGRAM__HB_ACQUIRE(req);
  return req;
}

/* Consumer: n requests left the mailbox's count (started or answered). Returns the depth left. */
static inline unsigned engram__mailbox_release(engram__mailbox_t *mb, unsigned n) {
  return atomic_fetch_sub_explicit(&mb->depth, n, memory_order_acq_rel) - n;
}

static inline unsigned engram__mailbox_depth(engram__mailbox_t *mb) {
  return atomic_load_explicit(&mb->depth, memory_order_acquire);
}

#endif
