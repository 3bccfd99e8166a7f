/*
 * cq.c — completion queues. A call that names a completion queue has its callback run by whichever thread
 * drains that queue: a game or IoT loop calling engram_cq_poll once per frame, or, for a queue bound to a uv
 * loop, that loop's thread (a uv_async handle drains it). The queue is an intrusive MPSC queue, so pushing a
 * reply never allocates and never fails.
 */
#include <stdatomic.h>
#include <uv.h>

#include "request/cq.h"
#include "shared/error.h"
#include "request/mpscq.h"

struct engram_cq_s {
  engram__mpscq_t q;
  uv_loop_t *loop;
  uv_async_t async;
  atomic_int pushing; /* producers between their first and last touch of the queue */
};

static void on_cq_async(uv_async_t *a) {
  engram_cq_t *cq = a->data;
  engram_cq_poll(cq, 0);
}

int engram_cq_new(engram_cq_t **out, uv_loop_t *loop) {
  engram_cq_t *cq;
  engram__error_clear();
  if (out == NULL) return engram__error(ENGRAM_EINVAL, "out: NULL");
  cq = engram_calloc(1, sizeof *cq);
  if (cq == NULL) return engram__error(ENGRAM_ENOMEM, "out of memory creating a completion queue");
  engram__mpscq_init(&cq->q);
  atomic_init(&cq->pushing, 0);
  cq->loop = loop;
  if (loop != NULL) {
    uv_async_init(loop, &cq->async, on_cq_async);
    cq->async.data = cq;
  }
  *out = cq;
  return 0;
}

/* Once the node is in the queue the polling thread may deliver it, the caller may then free the queue (every
 * call answered), and this thread must not touch the queue any more: the loop is read before the push, and
 * engram_cq_free waits for `pushing` to drop to 0 before freeing (ThreadSanitizer found the producer reading
 * cq->loop after its push while the test freed the queue it had just drained). */
void engram__cq_push(engram_cq_t *cq, engram_request_t *req) {
  uv_loop_t *loop = cq->loop;
  atomic_fetch_add_explicit(&cq->pushing, 1, memory_order_acq_rel);
  if (engram__mpscq_push(&cq->q, &req->priv->qnode) == 0 && loop != NULL) uv_async_send(&cq->async);
  atomic_fetch_sub_explicit(&cq->pushing, 1, memory_order_release);
}

size_t engram_cq_poll(engram_cq_t *cq, size_t max) {
  engram__mpscq_node_t *n;
  size_t ran = 0, left;
  if (cq == NULL) return 0;
  for (;;) {
    while ((max == 0 || ran < max) && (n = engram__mpscq_pop(&cq->q)) != NULL) {
      engram__request_deliver(engram__request_of_node(n));
      engram__mpscq_done(&cq->q, 1);
      ran++;
    }
    left = engram__mpscq_pending(&cq->q);
    /* A reply a producer is still pushing: wait for it only when the caller asked for everything. */
    if (left == 0 || (max != 0 && ran >= max)) break;
    if (max != 0 || cq->loop != NULL) {
      if (cq->loop != NULL) uv_async_send(&cq->async);
      break;
    }
    uv_sleep(0);
  }
  return ran;
}

size_t engram_cq_pending(const engram_cq_t *cq) { return cq ? engram__mpscq_pending(&cq->q) : 0; }

static void on_cq_closed(uv_handle_t *h) { engram_free(h->data); }

void engram_cq_free(engram_cq_t *cq) {
  if (cq == NULL) return;
  engram_cq_poll(cq, 0);
  while (atomic_load_explicit(&cq->pushing, memory_order_acquire) != 0) uv_sleep(0); /* a producer's last steps */
  if (cq->loop != NULL) uv_close((uv_handle_t *)&cq->async, on_cq_closed);
  else engram_free(cq);
}
