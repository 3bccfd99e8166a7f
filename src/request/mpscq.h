/*
 * mpscq.h — an intrusive, unbounded multi-producer single-consumer queue (Dmitry Vyukov's algorithm, as in the
 * Pony runtime), used where a message must never be refused: replies travelling back to the home loop,
 * completion queues and manager control messages. Producers never block and never allocate; the consumer may
 * briefly see the queue as empty while a producer is between its two steps, so consumers pair it with a
 * pending counter (engram__mpscq_push returns the count before the push) and look again while it is non-zero.
 * It is the one MPSC queue of engram: actor mailboxes (actor/mailbox.h) are this queue with a bound on the
 * pending count (engram__mpscq_push_bounded), which the consumer lowers when a request starts rather than when
 * it is popped. C11 atomics only: ThreadSanitizer sees every hand-over.
 */
#ifndef ENGRAM_MPSCQ_H
#define ENGRAM_MPSCQ_H

#include <stdatomic.h>
#include <stddef.h>

typedef struct engram__mpscq_node_s {
  _Atomic(struct engram__mpscq_node_s *) next;
} engram__mpscq_node_t;

typedef struct engram__mpscq_s {
  _Atomic(engram__mpscq_node_t *) head; /* producers swap themselves in here */
  char pad_head[64 - sizeof(void *)];   /* producers and the consumer write different cache lines */
  engram__mpscq_node_t *tail;           /* the consumer's end */
  engram__mpscq_node_t stub;
  char pad_tail[64 - 2 * sizeof(void *)];
  atomic_size_t pending;                /* pushed and not yet marked done */
} engram__mpscq_t;

static inline void engram__mpscq_init(engram__mpscq_t *q) {
  atomic_store_explicit(&q->stub.next, NULL, memory_order_relaxed);
  atomic_store_explicit(&q->head, &q->stub, memory_order_relaxed);
  q->tail = &q->stub;
  atomic_store_explicit(&q->pending, 0, memory_order_relaxed);
}

/* Pushes n; returns how many nodes were pending before (0 = the queue went from empty to non-empty). */
static inline size_t engram__mpscq_push(engram__mpscq_t *q, engram__mpscq_node_t *n) {
  engram__mpscq_node_t *prev;
  size_t before = atomic_fetch_add_explicit(&q->pending, 1, memory_order_acq_rel);
  atomic_store_explicit(&n->next, NULL, memory_order_relaxed);
  prev = atomic_exchange_explicit(&q->head, n, memory_order_acq_rel);
  atomic_store_explicit(&prev->next, n, memory_order_release);
  return before;
}

/* Pushes n unless capacity nodes are already pending: returns the count pending before the push (0 = the queue
 * went from empty to non-empty), or (size_t)-1 when the queue is full and n was not pushed. Never waits. */
static inline size_t engram__mpscq_push_bounded(engram__mpscq_t *q, engram__mpscq_node_t *n, size_t capacity) {
  engram__mpscq_node_t *prev;
  size_t before = atomic_fetch_add_explicit(&q->pending, 1, memory_order_acq_rel);
  if (before >= capacity) {
    atomic_fetch_sub_explicit(&q->pending, 1, memory_order_acq_rel);
    return (size_t)-1;
  }
  atomic_store_explicit(&n->next, NULL, memory_order_relaxed);
  prev = atomic_exchange_explicit(&q->head, n, memory_order_acq_rel);
  atomic_store_explicit(&prev->next, n, memory_order_release);
  return before;
}

static inline void engram__mpscq_push_stub(engram__mpscq_t *q) {
  engram__mpscq_node_t *n = &q->stub, *prev;
  atomic_store_explicit(&n->next, NULL, memory_order_relaxed);
  prev = atomic_exchange_explicit(&q->head, n, memory_order_acq_rel);
  atomic_store_explicit(&prev->next, n, memory_order_release);
}

/* Pops one node or returns NULL (empty, or a producer is mid-push: look again while pending > 0). Consumer
 * only. The caller decrements pending (engram__mpscq_done) for what it popped. */
static inline engram__mpscq_node_t *engram__mpscq_pop(engram__mpscq_t *q) {
  engram__mpscq_node_t *tail = q->tail;
  engram__mpscq_node_t *next = atomic_load_explicit(&tail->next, memory_order_acquire);
  if (tail == &q->stub) {
    if (next == NULL) return NULL;
    q->tail = next;
    tail = next;
    next = atomic_load_explicit(&next->next, memory_order_acquire);
  }
  if (next != NULL) {
    q->tail = next;
    return tail;
  }
  if (tail != atomic_load_explicit(&q->head, memory_order_acquire)) return NULL;
  engram__mpscq_push_stub(q);
  next = atomic_load_explicit(&tail->next, memory_order_acquire);
  if (next != NULL) {
    q->tail = next;
    return tail;
  }
  return NULL;
}

/* Marks popped nodes as consumed; returns how many are still pending. */
static inline size_t engram__mpscq_done(engram__mpscq_t *q, size_t popped) {
  return atomic_fetch_sub_explicit(&q->pending, popped, memory_order_acq_rel) - popped;
}

static inline size_t engram__mpscq_pending(const engram__mpscq_t *q) {
  return atomic_load_explicit(&((engram__mpscq_t *)q)->pending, memory_order_acquire);
}

#endif
