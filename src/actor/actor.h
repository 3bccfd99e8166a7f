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
#include "actor/mailbox.h"
#include "actor/retention.h"
#include "request/home.h"
#include "request/request.h"

/* Latency histogram: bucket i holds calls that took [2^(i/4) ...) microseconds, in quarter powers of two. */
#define ENGRAM__LAT_BUCKETS 128

/* A method as the actor calls it: the backend's own, or the core's emulation. */
typedef void (*engram__method_fn)(engram_source_t *src, engram_request_t *req);

/* Every data operation, the control ones between them left empty (list_namespaces was appended after them). */
#define ENGRAM__OP_SLOTS (ENGRAM_OP_LIST_NAMESPACES + 1)

/* The complete method table of one source, filled once when it is added (engram__table_fill, table.c): every
 * source operation has an entry, so the actor dispatches without knowing which ones are emulated. op[INFO] is
 * the core's info (actor counters around the backend's part); backend_info is the backend's own part. */
typedef struct {
  engram__method_fn op[ENGRAM__OP_SLOTS];
  engram__method_fn backend_info;
  /* What count and clear run when the call is not over a namespace prefix (prefix.c wraps them). */
  engram__method_fn count, clear;
  /* Runs after a write succeeded, before it is answered: non-zero when it took the request over and will
   * complete it again later (max_items_per_namespace, evict.c); 0 to answer now. */
  int (*after_write)(engram_source_t *src, engram_request_t *req);
  /* The backend's own update makes an update's writes in its atomic step (ENGRAM_SOURCE_UPDATE_WRITES); else the
   * core makes them after it: follow_writes (follow.c), non-zero when it took the request over and will complete
   * it again later. */
  int writes_native;
  int (*follow_writes)(engram_source_t *src, engram_request_t *req);
  /* Own-thread actors: the bounded watch of the mailbox before the loop sleeps (spin.c): its budget in ns (0 =
   * off) and the watch itself (non-zero when calls arrived during it). Through the table, like the other
   * mechanisms above, so that the actor never names the files that use it. */
  uint64_t spin_ns;
  int (*spin_wait)(engram_source_t *src);
  /* A write about to be handed to the backend while an emulated update is between its read and its store
   * (upd_reading non-zero): marks that update's read stale (emulate.c). */
  void (*saw_write)(engram_source_t *src, const engram_request_t *req);
} engram__table_t;

/* Change events (include/engram/events.h): the hook the manager installs in every actor it creates
 * (manager/events.c), so that the actor's completion path reports writes upward without naming the manager.
 * `active` is non-zero while subscriptions exist: the one branch a completion pays when nobody subscribes.
 * completed: a top-level request finished with status 0 on the actor thread, its reply still readable.
 * announce: a backend's own change (engram_source_announce: expired, evicted). Both run on the actor thread and
 * read src->name (char[ENGRAM_SOURCE_NAME_MAX + 1], which events.c compares a machine word at a time). While the
 * actor is in a turn (src->pumping) they only note the change in src->ev_stage and set src->ev_staged; the actor
 * then calls turn_end(src) where the turn ends, which queues the turn's changes on the subscriptions under one
 * lock (outside a turn, the change is queued at once). stage_free releases ev_stage when the actor is freed. */
typedef struct engram__event_hook_s engram__event_hook_t;
typedef struct engram__event_stage_s engram__event_stage_t;
struct engram__event_hook_s {
  atomic_int active;
  void (*completed)(engram__event_hook_t *hook, engram_source_t *src, engram_request_t *req);
  void (*announce)(engram__event_hook_t *hook, engram_source_t *src, unsigned kind, const char *ns, size_t ns_len,
                   const char *key, size_t key_len, uint64_t version);
  void (*turn_end)(engram_source_t *src);
  void (*stage_free)(engram__event_stage_t *stage);
};

/* What an actor is created with: everything it needs from above, handed down (it never names the manager). */
typedef struct {
  engram__home_t home;         /* the home loop's reply queue and wake handle */
  engram__event_hook_t *events;/* change events; NULL = none */
  engram_manager_t *mgr;       /* opaque: stamped on requests for the callbacks' sake */
  unsigned max_inflight, batch, mailbox_capacity, update_retries;
  int own_thread;              /* a thread and loop of its own, else the home loop: the type's default or the
                                * source's "thread" option (placement.h) */
} engram__actor_config_t;

typedef enum { ENGRAM__ACTOR_OPENING = 0, ENGRAM__ACTOR_OPEN, ENGRAM__ACTOR_CLOSING, ENGRAM__ACTOR_CLOSED } engram__actor_state_t;

struct engram_source_s {
  engram_manager_t *mgr;    /* opaque here */
  engram__home_t home;
  engram__table_t table;
  unsigned update_retries;
  const engram_source_vtable_t *vt;
  void *state;
  char name[ENGRAM_SOURCE_NAME_MAX + 1];
  uint64_t serial;          /* unique in the process (1, 2, ...): a source removed and added again under its name
                               is another (the conversation layer's message cache keys on it) */
  char *description;
  atomic_int is_default;
  uv_loop_t *loop;          /* the actor's loop: the home loop or own_loop */
  int own_thread;
  uv_loop_t own_loop;
  uv_thread_t thread;
  uv_async_t async;         /* the wake-up of home-loop actors (and own-thread ones without an eventfd) */
  uv_idle_t wake_idle;      /* the wake-up from the actor's own loop thread (actor_wake) */
  uv_thread_t loop_thread;  /* home-loop actors: the thread that runs the home loop (a loop is run by one thread) */
  uv_poll_t wake_poll;      /* own-thread actors on Linux: watches wake_fd (actor.c, actor_wake says why) */
  int wake_fd;              /* an eventfd, or -1 */
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
  /* Own-thread actors: the bounded watch of the mailbox before the loop sleeps (spin.h). */
  uv_prepare_t spin_prep;
  atomic_int spinning;      /* actor → producers: watching the mailbox, no wake-up needed */
  uint64_t spin_ns;         /* the watch's budget, 0 = never */
  uint64_t last_call_ns;    /* uv_hrtime() when the actor last took a call from its mailbox */
  uint64_t spin_hits, spin_misses; /* watches that saw a call, and that ended empty */
  /* Emulated updates, one at a time per key (emulate.c). */
  engram_request_t **upd_keys;                /* buckets of running updates, NULL until the first */
  engram_request_t *upd_ready_head, *upd_ready_tail; /* whose turn came, to start */
  int upd_running;
  unsigned upd_reading;  /* emulated updates between their read sent and their store sent (emulate.c) */
  /* Clears in flight: while one is, the calls after it wait in the backlog (actor.c, the clear barrier). */
  unsigned barrier;
  /* Change events: the manager's hook, or a hook never active (never NULL). The changes of the current turn wait
   * in ev_stage (the hook's, made on first use) while ev_staged is set: events->turn_end(src) queues them. */
  engram__event_hook_t *events;
  engram__event_stage_t *ev_stage;
  int ev_staged;
  /* The retention options read out of the source's options (retention.h), applied as each request starts. */
  engram__retention_t retention;
};

/* Creates the actor of a source being added (home loop). Returns 0 or ENGRAM_ENOMEM / ENGRAM_EBACKEND. */
/* Creates the actor of the source add_req names (vtable_arg, name_arg, desc_arg), with its complete table. */
int engram__actor_new(const engram__actor_config_t *cfg, const engram__table_t *table, engram_request_t *add_req,
                      engram_source_t **out);
void engram__actor_open(engram_source_t *src);
void engram__actor_close(engram_source_t *src, const char *why);
int engram__actor_submit(engram_source_t *src, engram_request_t *req);
/* Starts req on src at once, bypassing the mailbox, when the caller runs on src's loop thread and src could start
 * it now in order (open, not pumping, nothing queued, room in the window, deadline not passed): returns 1, and
 * the answer may have been delivered before this returns. Returns 0 (nothing done) otherwise; the caller then
 * submits it. For the source-call service (manager/call.c), whose caller is an actor on the same loop. */
int engram__actor_start_now(engram_source_t *src, engram_request_t *req);
/* Sends an answered request to its caller: its completion queue, the home loop's reply queue (from an
 * own-thread actor), or (already on the home loop, no queue) a direct delivery. Any thread. */
void engram__route(engram_request_t *req);
/* Runs req on src through the complete table. Actor thread. */
void engram__actor_dispatch(engram_source_t *src, engram_request_t *req);
void engram__actor_free(engram_source_t *src);
/* Announces a change of any kind to the subscribers (engram_source_announce, which backends call, takes only the
 * kinds a backend makes on its own: expired, evicted): the core's own writes that no completed call announces —
 * those of an update whose later writes failed (follow.c). Actor thread. */
void engram__actor_announce(engram_source_t *src, unsigned kind, const char *ns, size_t ns_len, const char *key,
                            size_t key_len, uint64_t version);
/* A sub-request of parent (emulation, info): finishes by calling on_done instead of a user callback. */
engram_request_t *engram__subrequest(engram_request_t *parent, engram_op_t op, const char *key, const char *ns,
                                     engram__done_fn on_done);

#endif
