/*
 * redis_call.h — the life of a call in the redis source, from admission to its one completion. Admission: the
 * source's own max_inflight window, and a queue for calls made while the connection is down when
 * wait_for_connection is set (released by the connection coming back, or by their deadline). Sending: the
 * command formatted in r->cmd goes out on the pipelined connection, after the before_send hook. Finishing:
 * completing the request, freeing its slot and starting the calls waiting for one.
 *
 * Every engram request sent to Redis is the privdata of its commands' callbacks; hiredis calls each callback
 * exactly once (a NULL reply when the connection dies or the context is freed), and a request is finished
 * when its last command is back, so each call gets exactly one answer whatever happens to the connection.
 * This file calls nothing above it: an admitted request is run through the start function, and the hook
 * before each send is a function too, both given to engram__redis_call_init.
 */
#ifndef ENGRAM_REDIS_CALL_H
#define ENGRAM_REDIS_CALL_H

#include <hiredis/async.h>
#include <stddef.h>
#include <uv.h>

#include "redis_state.h"

/* Sets up admission: start runs each admitted request, before_send (may be NULL) runs before each command
 * engram__redis_send sends. Initialises the wait timer. Returns 0 or ENGRAM_EBACKEND. */
int engram__redis_call_init(engram__redis_t *r, engram__redis_start_fn *start, engram__redis_hook_fn *before_send);
/* The vtable's entry for every operation but info: runs req now, queues it, or fails it
 * (ENGRAM_EUNAVAILABLE) when the connection is down and calls do not wait for it. */
void engram__redis_admit(engram_source_t *src, engram_request_t *req);
/* The connection is ready: stops the wait timer and starts the queued calls the window allows. */
void engram__redis_call_ready(engram__redis_t *r);
/* Starts queued calls while the window and the connection allow (and fails them at once while disconnected,
 * unless they wait for the connection). */
void engram__redis_call_pump(engram__redis_t *r);
/* Closing (r->closing is set): queued calls never reached Redis and are released (the core has answered them);
 * the wait timer is closed, and closed(r) runs once it is (r->wait_timer_open is then 0). */
void engram__redis_call_close(engram__redis_t *r, engram__redis_hook_fn *closed);

/* Takes a slot for a request that was not admitted (info, which never waits); finish it as any other. */
void engram__redis_slot_take(engram__redis_t *r);
/* Frees the slot of a request the caller completed itself (with a stock completion such as
 * engram_request_fail_exists) and starts waiting requests. */
void engram__redis_slot_free(engram__redis_t *r);

/* Sends the command in r->cmd (after the before_send hook). Returns 0 or ENGRAM_EUNAVAILABLE / ENGRAM_ENOMEM
 * (fn will not run). */
int engram__redis_send(engram__redis_t *r, redisCallbackFn *fn, void *pd);
/* Finishes a started request: completes it with status (and a printf-style message when fmt ≠ NULL), frees its
 * slot and starts waiting requests. */
void engram__redis_finish(engram__redis_t *r, engram_request_t *req, int status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;
/* Finishes req after a failed send (ac = NULL) or a NULL reply (ac = the dying context): ENGRAM_EUNAVAILABLE
 * naming the server and the cause, or rc itself when it is another error (ENGRAM_ENOMEM). */
void engram__redis_finish_unavailable(engram__redis_t *r, engram_request_t *req, const redisAsyncContext *ac, int rc);
/* Finishes req with the error reply of redis (ENGRAM_EBACKEND). */
void engram__redis_finish_reply_error(engram__redis_t *r, engram_request_t *req, const redisReply *reply);
/* The message of an unavailable failure ("redis at host:port unavailable: cause"), into buf. */
void engram__redis_why(engram__redis_t *r, const redisAsyncContext *ac, char *buf, size_t len);
/* The state of the source a reply callback belongs to. */
engram__redis_t *engram__redis_of(const redisAsyncContext *ac);

#endif
