/*
 * actor.h — a source's actor: its mailbox, backlog, in-flight window, deadline timer and (for blocking
 * backends) its own thread and loop. `struct engram_source_s` is the actor; backends see it as the opaque
 * engram_source_t handle.
 */
#ifndef ENGRAM_ACTOR_H
#define ENGRAM_ACTOR_H

#include <stdatomic.h>
#include <uv.h>

#include "engram/source.h"
#include "mailbox.h"
#include "request.h"

/* Latency histogram: bucket i holds calls that took [2^(i/4) ...) microseconds, in quarter powers of two. */
#define ENGRAM__LAT_BUCKETS 128

typedef enum { ENGRAM__ACTOR_OPENING = 0, ENGRAM__ACTOR_OPEN, ENGRAM__ACTOR_CLOSING, ENGRAM__ACTOR_CLOSED } engram__actor_state_t;

struct engram_source_s {
  engram_manager_t *mgr;
  const engram_source_vtable_t *vt;
  void *state;
  char name[ENGRAM_SOURCE_NAME_MAX + 1];
  char *description;
  atomic_int is_default;
  uv_loop_t *loop;          /* the actor's loop: the home loop or own_loop */
  int own_thread;
  uv_loop_t own_loop;
  uv_thread_t thread;
  uv_async_t async;
  uv_timer_t timer;
  uint64_t timer_due;       /* engram__mono_ms() when the timer fires, 0 = idle */
  int handles_open;
  engram__mailbox_t mb;
  engram_request_t *backlog_head, *backlog_tail;
  unsigned backlog_n;
  engram_request_t *inflight_head;
  unsigned inflight_n;
  unsigned max_inflight;
  unsigned batch;
  int pumping;
  engram__actor_state_t st;
  atomic_int stop;          /* home → actor: begin closing */
  const char *close_why;
  atomic_int health;
  /* Counters, written on the actor thread. */
  uint64_t ops, errors;
  uint64_t lat[ENGRAM__LAT_BUCKETS];
  engram_request_t *ctl;       /* the add_source request while opening */
  engram_request_t *close_ctl; /* preallocated: travels home when the actor is gone (on_done set by the manager) */
  engram_request_t *exit_msg;  /* what reaches the home loop once the handles are closed: ctl or close_ctl */
  engram_request_t *remove_req;/* the user's remove_source request, answered when the actor is gone */
  cJSON *open_options;
  /* Own-thread actors: answers for the home loop wake it once per loop turn, not once per answer. */
  uv_idle_t reply_idle;
  int reply_wake;
  /* Emulated updates, one at a time per key (emulate.c). */
  engram_request_t **upd_keys;                /* buckets of running updates, NULL until the first */
  engram_request_t *upd_ready_head, *upd_ready_tail; /* whose turn came, to start */
  int upd_running;
};

/* Creates the actor of a source being added (home loop). Returns 0 or ENGRAM_ENOMEM / ENGRAM_EBACKEND. */
int engram__actor_new(engram_manager_t *mgr, engram_request_t *add_req, engram_source_t **out);
/* Starts opening: the backend's open runs on the actor thread; add_req finishes through its on_done. */
void engram__actor_open(engram_source_t *src);
/* Begins closing (home loop): cancels every pending call (why: "source removed" / "manager closed"), runs the
 * backend's close once; close_ctl is then delivered on the home loop, whose on_done frees the actor. */
void engram__actor_close(engram_source_t *src, const char *why);
/* Submits a request to the actor (any thread, under the manager's read lock). 0 or ENGRAM_EBUSY. */
int engram__actor_submit(engram_source_t *src, engram_request_t *req);
/* Routes an answered request of an own-thread actor to the home loop's reply queue (any thread; on the actor's
 * own thread the home loop is woken once at the end of the loop turn). */
void engram__actor_post_reply(engram_source_t *src, engram_request_t *req);
/* Hands a request to the backend's method, or to the core's emulation of it (actor thread). */
void engram__actor_dispatch(engram_source_t *src, engram_request_t *req);
/* Frees the actor after it closed, or after a failed open (home loop). */
void engram__actor_free(engram_source_t *src);

/* Emulations of the optional methods (emulate.c). */
void engram__emulate(engram_source_t *src, engram_request_t *req);
/* info: the core's fields plus the backend's own (info.c). */
void engram__info_start(engram_source_t *src, engram_request_t *req);
/* A sub-request of parent for an emulated operation; on_done runs on the actor thread when it completes. */
engram_request_t *engram__subrequest(engram_request_t *parent, engram_op_t op, const char *key, const char *ns,
                                     engram__done_fn on_done);

#endif
