/*
 * manager.h — the manager's private state: the home loop, the source table (read-locked by submitters on any
 * thread, written on the home loop), the reply queue that carries answers from actor threads back home, and
 * the control queue that carries add / remove / list / close requests to the home loop.
 */
#ifndef ENGRAM_MANAGER_H
#define ENGRAM_MANAGER_H

#include <stdatomic.h>
#include <uv.h>

#include "actor/actor.h"
#include "manager/events.h"
#include "request/mpscq.h"

struct engram_manager_s {
  uv_loop_t *loop;
  int own_thread;
  uv_loop_t own_loop;
  uv_thread_t thread;
  uv_async_t async;          /* wakes the home loop: replies and control messages */
  int wake_fd;               /* Linux: an eventfd actor threads write to wake the home loop for their answers */
  uv_poll_t wake_poll;       /* ... watched on the home loop (manager.c: home_wake_init says why) */
  engram__mpscq_t replies;
  engram__mpscq_t control;
  uv_rwlock_t lock;          /* guards sources, n_sources, default_idx */
  engram_source_t **sources; /* in the order added */
  size_t n_sources, cap_sources;
  size_t default_idx;        /* index into sources when n_sources > 0 */
  atomic_size_t find_hint;   /* engram__manager_find_locked: the index found last (a guess, checked) */
  size_t here_hint;          /* read_now.c: the same for the read-now service (home loop only) */
  int default_marked;        /* the default was chosen explicitly (default: true or set_default_source) */
  engram_manager_config_t cfg;
  atomic_int closed;         /* no new calls */
  int closing;
  unsigned n_opening;        /* sources whose open has not finished */
  unsigned n_closing;        /* sources whose close has not finished */
  engram_request_t *close_req;
  engram_request_t *pending_configure; /* not used concurrently: configure chains its own adds */
  engram__events_t events;   /* change-event subscriptions (events.c); its hook goes to every actor */
  /* The conversation layer's cache of parsed messages (src/thread/thread_msgcache.c), made on the first window
   * that can use it; the manager drops its reference through msg_cache_release when it is freed (a pointer the
   * layer above sets, so the manager never calls up). */
  _Atomic(void *) msg_cache;
  void (*msg_cache_release)(void *);
  /* Moved by engram_import when it starts and when it ends (src/export/import.c): the message cache does not use
   * what it kept in another epoch (an import may write a thread back as it was: thread_msgcache.h). */
  atomic_uint_fast64_t restore_epoch;
};

/* Pushes a reply (or an internal message) onto the home loop's reply queue. Thread: any. */
void engram__manager_post_reply(engram_manager_t *mgr, engram_request_t *req);
/* Submits a control request (add / remove / list / close / configure) to the home loop. Thread: any. */
int engram__manager_control(engram_manager_t *mgr, engram_request_t *req);
/* Home loop: an actor finished closing (or a failed open was torn down). */
void engram__manager_actor_gone(engram_manager_t *mgr);
/* Finds a source by name (NULL = default) under the read lock; caller holds the lock. */
engram_source_t *engram__manager_find_locked(engram_manager_t *mgr, const char *name);

#endif
