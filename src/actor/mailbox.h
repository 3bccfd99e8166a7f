/*
 * mailbox.h — a source actor's bounded multi-producer single-consumer mailbox: the one MPSC queue of engram
 * (request/mpscq.h, Vyukov's intrusive queue as in the Pony runtime's actor mailboxes) threaded through each
 * request's mb_next link, with a bound on its pending count.
 *
 * A producer does one fetch-and-add on the count (a full mailbox fails the call at once with ENGRAM_EBUSY) and
 * one exchange on the head; it never waits for another producer. (An earlier version used a bounded MPSC ring,
 * whose enqueue spins until earlier producers publish their slots: with more runnable threads than cores, a
 * descheduled producer stalled all the others for whole time slices.) The producer that moves the count from 0
 * to 1 is the one that wakes the actor (uv_async_send), so a busy actor is never woken twice. The count (the
 * depth) holds requests accepted and not yet started — in the queue or in the actor's backlog — so the actor
 * lowers it when a request starts or is answered (engram__mailbox_release), not when it pops one.
 */
#ifndef ENGRAM_MAILBOX_H
#define ENGRAM_MAILBOX_H

#include <stddef.h>

#include "engram/source.h"
#include "request/mpscq.h"
#include "request/request.h"

typedef struct engram__mailbox_s {
  engram__mpscq_t q; /* q.pending is the depth */
  unsigned capacity;
} engram__mailbox_t;

static inline int engram__mailbox_init(engram__mailbox_t *mb, unsigned capacity) {
  engram__mpscq_init(&mb->q);
  mb->capacity = capacity;
  return 0;
}

static inline void engram__mailbox_destroy(engram__mailbox_t *mb) { (void)mb; }

/* Any thread. 0 with *wake set when the actor must be woken, or ENGRAM_EBUSY (full; nothing pushed). */
static inline int engram__mailbox_push(engram__mailbox_t *mb, engram_request_t *req, int *wake) {
  size_t before = engram__mpscq_push_bounded(&mb->q, &req->priv->mb_next, mb->capacity);
  if (before == (size_t)-1) {
    *wake = 0;
    return ENGRAM_EBUSY;
  }
  *wake = before == 0;
  return 0;
}

/* Actor thread: the next request, or NULL (empty, or a producer mid-push: the depth says so). */
static inline engram_request_t *engram__mailbox_pop(engram__mailbox_t *mb) {
  engram__mpscq_node_t *n = engram__mpscq_pop(&mb->q);
  if (n == NULL) return NULL;
  return ((engram_request_private_t *)(void *)((char *)n - offsetof(engram_request_private_t, mb_next)))->self;
}

/* Actor thread: n requests left the mailbox's count (started or answered). Returns the depth left. */
static inline unsigned engram__mailbox_release(engram__mailbox_t *mb, unsigned n) {
  return (unsigned)engram__mpscq_done(&mb->q, n);
}

static inline unsigned engram__mailbox_depth(engram__mailbox_t *mb) { return (unsigned)engram__mpscq_pending(&mb->q); }

#endif
