/*
 * request.h — the core's private half of a request: routing, reply storage, deadline, reference counts and the
 * links that put it on an actor's lists and on reply queues. See request.c for the life of a request.
 */
#ifndef ENGRAM_REQUEST_H
#define ENGRAM_REQUEST_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "engram/source.h"
#include "request/mpscq.h"

struct engram_source_s;

#define ENGRAM__MSG_MAX 256

/* The link of a request waiting in a source's mailbox (mailbox.h). */

/* How a finished request reaches its caller. */
typedef void (*engram__done_fn)(engram_request_t *req);
/* A control request's own handler, run on the home loop by the manager (configure: config.c). */
typedef void (*engram__control_fn)(engram_manager_t *mgr, engram_request_t *req);

struct engram_request_private_s {
  engram__mpscq_node_t qnode;      /* reply queue / completion queue / control queue link */
  engram_request_t *self;          /* the public half */
  engram__mpscq_node_t mb_next;    /* the mailbox's link while the request waits there (apart from qnode: an
                                      answer may travel home while the request still waits in a mailbox) */
  engram_request_t *next, *prev;   /* the actor's backlog or in-flight list */
  struct engram_source_s *actor;    /* the target actor (NULL for manager operations) */
  engram_manager_t *mgr;
  engram_cb cb;
  void *ud;
  engram_cq_t *cq;
  engram__done_fn on_done;         /* internal requests: called instead of a user callback */
  engram__control_fn control_fn;   /* control requests that carry their own handler (configure) */
  engram_request_t *parent;        /* sub-requests of an emulated operation */
  /* The reply room (engram_reply_room): bytes of the block's inline buffer past the key and namespace, handed out
   * from room_pos up to room_end (0 and 0 in a block sized to its key and namespace, which has none). Beside
   * parent and on_done, which engram_reply_room reads with them: one cache line. The inputs
   * engram__request_copy_in put there come first, so a reply's part starts past them. */
  uint16_t room_pos, room_end;
  engram_request_t *lender;        /* a call whose value and metadata are borrowed from this request
                                      (ENGRAM_CALL_BORROW_VALUE, call.c): not freed here, and one reference on
                                      the lender, dropped when this request is freed */
  void *op_state;                  /* state of an emulated operation (emulate.c) */
  size_t sub_index;                /* sub-requests of a batch: the parent's item they answer (emulate.c; the
                                      backend owns backend_data, so the index cannot travel there) */
  atomic_int refs;                 /* 1 for the answer + 1 while an actor or backend holds the request */
  int status;
  /* Fixed before the answer is routed, then only read (by the thread that delivers it). */
  unsigned answered : 1;           /* the answer (status + message) is fixed */
  unsigned early : 1;              /* answered before the backend finished (deadline, cancel): no reply data */
  unsigned pooled : 1;             /* a standard-size block: back to the thread's pool when freed (reqpool.c) */
  /* Written by the actor thread after an early answer may already be on its way to another thread: whole bytes
   * of their own, never bits beside the ones above (a bit-field store rewrites its neighbours' byte, a data race
   * ThreadSanitizer found when a request cancelled at close was completed by the backend during delivery). */
  unsigned char on_list;           /* 0 none, 1 backlog, 2 in flight */
  unsigned char started;           /* handed to the backend (counts in the in-flight window) */
  uint32_t deadline_ms;            /* relative deadline asked for */
  uint64_t deadline;               /* absolute, on engram__mono_ms(); 0 = none */
  uint64_t submit_ns;              /* uv_hrtime() at submit, for latency */
  /* Reply under construction. A one-item reply (the common case: retrieve, store, update) lives in item0, and
   * an item whose key and namespace are the request's own points at the request's inline copies: a reply built
   * on an actor thread then allocates no block that the caller's thread has to free. */
  engram_item_t *items;            /* &item0, or an array */
  engram_item_t item0;
  size_t n_items, cap_items;
  uint64_t count;
  char *cursor;
  cJSON *info;
  char *text;
  /* Owned inputs beyond the inline key / namespace. */
  char **keys_owned;
  engram_entry_t *entries_owned;
  int64_t *expires_owned;
  char *query_text, *query_pattern;
  cJSON *query_filter;
  float *query_vector;
  char *cursor_in;
  char *name_arg;                  /* manager operations: source name / config text */
  char *desc_arg;
  const engram_source_vtable_t *vtable_arg;
  int flag_arg;
  unsigned char order_by;          /* search, list_keys in an order the core applies (order.c); 0 = the backend's */
  unsigned char retained;          /* a write whose eviction pass (actor/evict.c) has run or is running */
  unsigned char writes_made;       /* an update whose writes the core made after it (actor/follow.c) */
  unsigned char writes_pending;    /* follow.c: its sub-requests still out */
  unsigned char barrier;           /* a clear holding back the calls after it until it leaves the window (actor.c) */
  int writes_status;               /* follow.c: the first failure of its writes */
  /* An update that carries writes (engram__update_with_writes): where its function puts them on each run, and
   * the default expiry (absolute ms, 0 = none) retention stamps on those without one. run_update points the
   * public req->writes here. */
  engram_update_writes_t *writes_src;
  int64_t writes_default_expires;
  /* Called with update_ud when the request is freed: the caller's state lives as long as the backend may still
   * run the function (an update answered early, by a deadline or a cancellation, may run it later). */
  void (*update_ud_release)(void *ud);
  char source[ENGRAM_SOURCE_NAME_MAX + 1];
  char message[ENGRAM__MSG_MAX];
};

/* Bytes of a request block with room for `inline_bytes` of key and namespace. */
/* Allocates a zeroed request with room for key and ns copied inline. Returns NULL on ENOMEM. */
engram_request_t *engram__request_new(engram_op_t op, const char *key, size_t key_len, const char *ns, size_t ns_len);

/* A copy of the caller's tree v for req's input (value or metadata) in req's room, before any reply uses it, its
 * strings checked against json_text.h's rules as they are copied (engram__json_copy_block): the room's front is
 * kept for it from then on and it goes with the block — request_free does not
 * cJSON_Delete it, engram_request_take_value hands out a copy. NULL when req has no room, v does not fit, or v
 * holds what the copy does not vouch for (the caller then checks v with engram__json_tree_check and copies it the
 * usual way). The submitting thread, before the request is submitted. */
cJSON *engram__request_copy_in(engram_request_t *req, const cJSON *v);

/* engram_reply_take_value for a reader inside the library that only reads the tree and frees it with cJSON_Delete
 * (a conversation window's messages): a tree that is one block owning itself (a backend's engram_json_parse_reply:
 * its root flagged cJSON_IsReference | ENGRAM__CJSON_BLOCK, json_fast.h, its first child or string next in the
 * block) is handed over whole instead of copied; any other tree as engram_reply_take_value hands it. Only for the
 * replies of calls to sources (a reply the thread layer builds refers to trees it keeps). NULL when there is none,
 * or out of memory. The thread of the reply's callback, inside it. */
cJSON *engram__reply_take_read(const engram_reply_t *reply, size_t i);
/* req borrows lender's value and metadata (req->value, req->metadata point at them): takes a reference on
 * lender, dropped when req is freed, which then leaves value and metadata alone. The caller holds lender. */
void engram__request_borrow(engram_request_t *req, engram_request_t *lender);
/* Drops one reference; the last one frees the request and everything it owns. */
void engram__request_unref(engram_request_t *req);
/* Fixes the answer of a request: status and a message (prefixed with the source name when non-empty).
 * Returns 0 when this call fixed it, -1 when it was already answered. */
int engram__request_answer(engram_request_t *req, int status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* Sets the message a later completion will carry (prefixed with the source name), unless already answered. */
void engram__request_set_message(engram_request_t *req, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Builds the reply view and runs the user callback (or on_done) on the current thread, then drops the answer's
 * reference. */
void engram__request_deliver(engram_request_t *req);
/* The manager whose home loop is running a callback on this thread now — one of an answer delivered without a
 * completion queue, which is delivered on the manager's home loop (route: a home-loop actor answers there, an
 * own-thread actor's answer travels there) — or NULL. A call that callback makes may read that manager's source
 * table without the table's lock (ops.c), as the home loop alone writes it. */
extern _Thread_local engram_manager_t *engram__home_callback;
/* Sets the message of a request not yet answered from a va_list (what engram_request_fail formats). */
void engram__request_set_message_v(engram_request_t *req, const char *fmt, va_list ap);

/* The request a queue node belongs to. */
static inline engram_request_t *engram__request_of_node(engram__mpscq_node_t *n) {
  return ((engram_request_private_t *)(void *)((char *)n - offsetof(engram_request_private_t, qnode)))->self;
}

/* Monotonic milliseconds (uv_hrtime based), for deadlines. */
uint64_t engram__mono_ms(void);

#endif
