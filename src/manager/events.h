/*
 * events.h — the manager's registry of change-event subscriptions (events.c, include/engram/events.h). The
 * manager embeds one and hands its hook to every actor it creates (engram__actor_config_t.events), so a write
 * completing on any actor thread reaches the subscribers without the actor naming the manager.
 */
#ifndef ENGRAM_MANAGER_EVENTS_H
#define ENGRAM_MANAGER_EVENTS_H

#include <uv.h>

#include "actor/actor.h"
#include "engram/events.h"

/* The one lock of a registry and of its subscriptions' queues (a compare-and-swap word that sleeps on a mutex and a
 * condition variable only when contended; events.c), in a block of its own that the registry and each
 * subscription hold a reference to: a completion-queue subscription's last delivery (END) may run after the
 * manager, and the registry in it, are gone. */
typedef struct engram__events_lock_s engram__events_lock_t;

typedef struct engram__events_s {
  engram__event_hook_t hook;   /* first: the hook's callbacks find the registry from it */
  engram__events_lock_t *lk;   /* the list and every queue: producers (actor threads), delivery, subscribe,
                                  unsubscribe, close */
  engram_subscription_t *subs; /* a doubly linked list */
  int closed;                  /* the manager closed: no new subscription */
  engram__home_t home;         /* where home-loop deliveries are posted (the manager's reply queue) */
  /* Home loop only: home-loop subscriptions whose events a home-loop actor produced wait in ready (linked by their
   * ready_next; under lk) for the idle handle, which delivers them next loop turn without a wake-up (events.c,
   * on_idle). The handle is made on first use and closed by engram__events_stop. */
  engram_subscription_t *ready;
  uv_idle_t *idle;
  int idle_on;                 /* idle is started */
  int stopped;                 /* engram__events_stop ran: carriers go through the reply queue */
} engram__events_t;

/* Initialises the registry of mgr. Returns 0, ENGRAM_ENOMEM or ENGRAM_EBACKEND (the lock). Thread: any
 * (manager_new). */
int engram__events_init(engram__events_t *ev, const engram__home_t *home);
/* Ends every subscription (END with ENGRAM_ECLOSED, queued for its delivery thread without waking the home loop:
 * the caller drains the reply queue next). Home loop, once no actor remains. */
void engram__events_close(engram__events_t *ev);
/* Subscribes (engram_events_subscribe's work once the manager is checked; events_api.c). Thread: any. */
int engram__events_subscribe(engram__events_t *ev, const engram_subscribe_opts_t *opts, engram_event_cb cb, void *ud,
                             engram_subscription_t **out);
/* The manager is closing and no actor is left: sends the carriers waiting for the home loop's turn handle through
 * the reply queue and closes the handle (freed by its close callback). Call before the manager's own handles are
 * closed, so that the handle is gone when the manager's close callback runs. Home loop; more calls do nothing. */
void engram__events_stop(engram__events_t *ev);
/* Releases the registry (after engram__events_close and the last drain). */
void engram__events_destroy(engram__events_t *ev);

#endif
