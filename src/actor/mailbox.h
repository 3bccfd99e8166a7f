/*
 * mailbox.h — a source actor's bounded multi-producer single-consumer mailbox, built on Concurrency Kit's
 * atomics (ck_pr): an intrusive Vyukov queue threaded through each request (as the Pony runtime's actor
 * mailboxes), plus an exact depth counter that bounds it.
 *
 * A producer does one fetch-and-add on the depth (a full mailbox fails the call at once with ENGRAM_EBUSY) and
 * one fetch-and-store on the head; it never waits for another producer. (The first version used ck_ring's
 * bounded MPSC ring, whose enqueue spins until earlier producers publish their slots: with more runnable
 * threads than cores, a descheduled producer stalled all the others for whole time slices.) The producer that
 * moves the depth from 0 to 1 is the one that wakes the actor (uv_async_send), so a busy actor is never woken
 * twice. `depth` counts requests accepted and not yet started (in the queue or in the actor's backlog).
 *
 * ThreadSanitizer cannot see ck_pr's inline assembly, so a TSan build uses the compiler's __atomic builtins for
 * the same operations at the same places, and the hand-over of each request is annotated.
 */
#ifndef ENGRAM_MAILBOX_H
#define ENGRAM_MAILBOX_H

#include <ck_pr.h>
#include <stddef.h>

#include "engram/source.h"
#include "request.h"

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
#define MB_FAS_PTR(p, v) __atomic_exchange_n((p), (v), __ATOMIC_ACQ_REL)
#define MB_STORE_RELEASE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define MB_LOAD_ACQUIRE(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define MB_FAA_UINT(p, d) __atomic_fetch_add((p), (d), __ATOMIC_ACQ_REL)
#define MB_FAS_UINT(p, d) __atomic_fetch_sub((p), (d), __ATOMIC_ACQ_REL)
#define MB_LOAD_UINT(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#else
#define ENGRAM__HB_RELEASE(p) ((void)0)
#define ENGRAM__HB_ACQUIRE(p) ((void)0)
#define MB_FAS_PTR(p, v) ((engram__mb_node_t *)ck_pr_fas_ptr((p), (v)))
#define MB_STORE_RELEASE(p, v) (ck_pr_fence_store(), ck_pr_store_ptr((p), (v)))
#define MB_LOAD_ACQUIRE(p) engram__mb_load_acquire(p)
#define MB_FAA_UINT(p, d) ck_pr_faa_uint((p), (d))
#define MB_FAS_UINT(p, d) ck_pr_faa_uint((p), 0u - (d))
#define MB_LOAD_UINT(p) ck_pr_load_uint(p)
#endif

typedef struct engram__mailbox_s {
  engram__mb_node_t *head; /* producers swap themselves in here */
  char pad_head[64 - sizeof(void *)];
  engram__mb_node_t *tail; /* the consumer's end */
  engram__mb_node_t stub;
  unsigned capacity;
  char pad_tail[64 - 2 * sizeof(void *) - sizeof(unsigned)];
  unsigned depth;          /* accepted and not yet started */
} engram__mailbox_t;

#ifndef ENGRAM__TSAN
static inline engram__mb_node_t *engram__mb_load_acquire(engram__mb_node_t **p) {
  engram__mb_node_t *v = (engram__mb_node_t *)ck_pr_load_ptr(p);
  ck_pr_fence_load();
  return v;
}
#endif

/* capacity ≥ 1. Returns 0. */
static inline int engram__mailbox_init(engram__mailbox_t *mb, unsigned capacity) {
  mb->stub.next = NULL;
  mb->head = &mb->stub;
  mb->tail = &mb->stub;
  mb->capacity = capacity;
  mb->depth = 0;
  return 0;
}

static inline void engram__mailbox_destroy(engram__mailbox_t *mb) { (void)mb; }

static inline void engram__mailbox_link(engram__mailbox_t *mb, engram__mb_node_t *n) {
  engram__mb_node_t *prev;
  n->next = NULL;
  prev = MB_FAS_PTR(&mb->head, n);
  MB_STORE_RELEASE(&prev->next, n);
}

/* Producer, any thread. Returns 0 or ENGRAM_EBUSY; *wake is set when the actor must be woken. */
static inline int engram__mailbox_push(engram__mailbox_t *mb, engram_request_t *req, int *wake) {
  unsigned before = MB_FAA_UINT(&mb->depth, 1u);
  if (before >= mb->capacity) {
    MB_FAS_UINT(&mb->depth, 1u);
    *wake = 0;
    return ENGRAM_EBUSY;
  }
  ENGRAM__HB_RELEASE(req);
  engram__mailbox_link(mb, &req->priv->mb_next);
  *wake = before == 0;
  return 0;
}

static inline engram_request_t *engram__mailbox_req(engram__mb_node_t *n) {
  engram_request_t *req =
      ((engram_request_private_t *)(void *)((char *)n - offsetof(engram_request_private_t, mb_next)))->self;
  ENGRAM__HB_ACQUIRE(req);
  return req;
}

/* Consumer (the actor thread). NULL when empty, or while a producer is between its two steps (the depth still
 * counts that request, so the actor looks again). */
static inline engram_request_t *engram__mailbox_pop(engram__mailbox_t *mb) {
  engram__mb_node_t *tail = mb->tail, *next = MB_LOAD_ACQUIRE(&tail->next), *head;
  if (tail == &mb->stub) {
    if (next == NULL) return NULL;
    mb->tail = next;
    tail = next;
    next = MB_LOAD_ACQUIRE(&next->next);
  }
  if (next != NULL) {
    mb->tail = next;
    return engram__mailbox_req(tail);
  }
  head = MB_LOAD_ACQUIRE(&mb->head);
  if (tail != head) return NULL;
  engram__mailbox_link(mb, &mb->stub);
  next = MB_LOAD_ACQUIRE(&tail->next);
  if (next != NULL) {
    mb->tail = next;
    return engram__mailbox_req(tail);
  }
  return NULL;
}

/* Consumer: n requests left the mailbox's count (started or answered). Returns the depth left. */
static inline unsigned engram__mailbox_release(engram__mailbox_t *mb, unsigned n) {
  return MB_FAS_UINT(&mb->depth, n) - n;
}

static inline unsigned engram__mailbox_depth(engram__mailbox_t *mb) { return MB_LOAD_UINT(&mb->depth); }

#endif
