/*
 * redis_uv.h — a libuv adapter for hiredis 0.14's asynchronous context, written against its `ev` hooks
 * (addRead/delRead/addWrite/delWrite/cleanup) with one uv_poll_t and one uv_prepare_t per connection. Unlike
 * hiredis's bundled adapters/libuv.h it reports poll errors to its owner (who must then disconnect) instead of
 * swallowing them, writes commands in the loop turn that queued them (the uv_prepare), tells its owner when
 * hiredis is done with the context, and tells it again when both handles are closed.
 */
#ifndef ENGRAM_REDIS_UV_H
#define ENGRAM_REDIS_UV_H

#include <hiredis/async.h>
#include <uv.h>

typedef struct engram__redis_uv_cbs_s {
  /* uv_poll reported status < 0: the owner must disconnect (redisAsyncFree) — never from inside this call's
   * hiredis callbacks, which is guaranteed here since the poll callback is outside hiredis. */
  void (*on_poll_error)(redisAsyncContext *ac, int uv_status, void *ud);
  /* hiredis ran the cleanup hook: every pending reply callback has run (NULL reply) and the context is about to
   * be freed. errstr is the context's error text ("" when none). */
  void (*on_gone)(void *ud, const char *errstr);
  /* Both handles are closed and the adapter freed. */
  void (*on_closed)(void *ud);
} engram__redis_uv_cbs_t;

/* Attaches ac to loop. Returns 0, ENGRAM_ENOMEM or ENGRAM_EBACKEND (uv_poll_init failed; nothing to close). */
int engram__redis_uv_attach(redisAsyncContext *ac, uv_loop_t *loop, const engram__redis_uv_cbs_t *cbs, void *ud);

/* Writes ac's queued commands now if it has any and is connected (else leaves them to the poll). The adapter calls
 * it from a uv_prepare handle in the turn a command is queued; an owner that queues commands from a uv_prepare of
 * its own (which the adapter's would only follow next turn) calls it after queuing. Loop thread; outside hiredis
 * callbacks. */
void engram__redis_uv_flush(redisAsyncContext *ac);

#endif
