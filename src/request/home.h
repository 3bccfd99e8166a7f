/*
 * home.h — the way back to the home loop: the queue answers travel on and the handle that wakes the loop.
 *
 * The manager owns both (it drains the queue on its loop); an actor receives them when it is created and posts
 * answers and exit notices through them without knowing the manager. This is what lets the layers call down
 * only: the actor (below the manager) reports upward through a queue it was handed, never by name.
 */
#ifndef ENGRAM_HOME_H
#define ENGRAM_HOME_H

#include <uv.h>

#include "request/mpscq.h"
#include "request/request.h"

typedef struct engram__home_s {
  uv_loop_t *loop;          /* the home loop */
  uv_async_t *wake;         /* wakes the home loop, which then drains replies */
  engram__mpscq_t *replies; /* answers (and control notices) for the home loop; any thread pushes */
} engram__home_t;

/* Pushes req for the home loop and wakes it when the queue was empty. Any thread. */
static inline void engram__home_post(const engram__home_t *home, engram_request_t *req) {
  if (engram__mpscq_push(home->replies, &req->priv->qnode) == 0) uv_async_send(home->wake);
}

/* Pushes req without waking the home loop; returns non-zero when the queue was empty (the caller must wake it
 * later, e.g. once per loop turn). Any thread. */
static inline int engram__home_push(const engram__home_t *home, engram_request_t *req) {
  return engram__mpscq_push(home->replies, &req->priv->qnode) == 0;
}

static inline void engram__home_wake(const engram__home_t *home) { uv_async_send(home->wake); }

#endif
