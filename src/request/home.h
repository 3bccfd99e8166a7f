/*
 * home.h — the way back to the home loop: the queue answers travel on and what wakes the loop (the manager's
 * uv_async, or on Linux an eventfd of the manager's that the loop watches: engram__home_wake).
 *
 * The manager owns both (it drains the queue on its loop); an actor receives them when it is created and posts
 * answers and exit notices through them without knowing the manager. This is what lets the layers call down
 * only: the actor (below the manager) reports upward through a queue it was handed, never by name.
 */
#ifndef ENGRAM_HOME_H
#define ENGRAM_HOME_H

#include <errno.h>
#include <uv.h>
#ifdef __linux__
#include <unistd.h>
#endif

#include "request/mpscq.h"
#include "request/request.h"

typedef struct engram__home_s {
  uv_loop_t *loop;          /* the home loop */
  uv_async_t *wake;         /* wakes the home loop, which then drains replies */
  int wake_fd;              /* or, when ≥ 0, an eventfd the home loop watches (uv_poll), written instead: libuv
                             * 1.44's woken uv_async loop spins until the waker is back from its write() */
  engram__mpscq_t *replies; /* answers (and control notices) for the home loop; any thread pushes */
} engram__home_t;

/* Wakes a loop that watches the eventfd fd (when fd ≥ 0) or else the async handle a: the home loop here, an
 * own-thread actor's loop in actor.c. Any thread. */
static inline void engram__loop_kick(int fd, uv_async_t *a) {
#ifdef __linux__
  if (fd >= 0) {
    uint64_t one = 1;
    ssize_t n;
    do n = write(fd, &one, sizeof one);
    while (n < 0 && errno == EINTR);
    return; /* EAGAIN: the counter is full, so a wake-up is pending anyway */
  }
#else
  (void)fd;
#endif
  uv_async_send(a);
}

/* Wakes the home loop. Any thread. */
static inline void engram__home_wake(const engram__home_t *home) { engram__loop_kick(home->wake_fd, home->wake); }

/* Pushes req for the home loop and wakes it when the queue was empty. Any thread. */
static inline void engram__home_post(const engram__home_t *home, engram_request_t *req) {
  if (engram__mpscq_push(home->replies, &req->priv->qnode) == 0) engram__home_wake(home);
}

/* Pushes req without waking the home loop; returns non-zero when the queue was empty (the caller must wake it
 * later, e.g. once per loop turn). Any thread. */
static inline int engram__home_push(const engram__home_t *home, engram_request_t *req) {
  return engram__mpscq_push(home->replies, &req->priv->qnode) == 0;
}


#endif
