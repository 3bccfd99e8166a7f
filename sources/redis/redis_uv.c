/*
 * redis_uv.c — the libuv adapter for hiredis 0.14 async contexts (see redis_uv.h). hiredis asks for read and
 * write interest through its `ev` hooks; the adapter keeps the current interest mask and only calls
 * uv_poll_start/uv_poll_stop when it changes, since hiredis calls addWrite once per command. Commands are written
 * in the loop turn that queued them: addWrite also starts a uv_prepare handle, which writes hiredis's output just
 * before the loop polls (engram__redis_uv_flush), instead of waiting for the poll to report the socket writable —
 * one epoll_wait and two epoll_ctl a call less, a turn less for a round trip (hiredis's bundled adapter, which the
 * benchmarks' raw client uses, waits). A poll error is handed to the owner, which disconnects; the cleanup hook
 * (run by hiredis after the last pending callback) closes both handles, whose close callbacks free the adapter.
 */
#include <string.h>

#include "engram/source.h"
#include "redis_uv.h"

typedef struct {
  uv_poll_t handle;
  uv_prepare_t prep; /* writes what was queued, before the loop polls */
  redisAsyncContext *ac; /* NULL once hiredis ran cleanup */
  int events;
  int open;      /* handles not closed yet: the adapter is freed when both are */
  int prep_on;
  engram__redis_uv_cbs_t cbs;
  void *ud;
} adapter_t;

static void on_poll(uv_poll_t *h, int status, int events) {
  adapter_t *p = h->data;
  if (p->ac == NULL) return;
  if (status < 0) {
    p->cbs.on_poll_error(p->ac, status, p->ud);
    return;
  }
  if (events & UV_READABLE) redisAsyncHandleRead(p->ac);
  /* Reading may have freed the context (an error or a deferred free): cleanup then cleared p->ac. */
  if (p->ac != NULL && (events & UV_WRITABLE)) redisAsyncHandleWrite(p->ac);
}

static void set_events(adapter_t *p, int events) {
  if (p->ac == NULL || events == p->events) return;
  p->events = events;
  /* uv_poll_start only fails for an fd libuv cannot watch, which uv_poll_init already vetted. */
  if (events != 0) (void)uv_poll_start(&p->handle, events, on_poll);
  else (void)uv_poll_stop(&p->handle);
}

static void add_read(void *pd) {
  adapter_t *p = pd;
  set_events(p, p->events | UV_READABLE);
}

static void del_read(void *pd) {
  adapter_t *p = pd;
  set_events(p, p->events & ~UV_READABLE);
}

static void on_prep(uv_prepare_t *h) {
  adapter_t *p = h->data;
  uv_prepare_stop(h);
  p->prep_on = 0;
  if (p->ac != NULL) engram__redis_uv_flush(p->ac);
}

static void add_write(void *pd) {
  adapter_t *p = pd;
  set_events(p, p->events | UV_WRITABLE);
  if (!p->prep_on && p->ac != NULL) {
    (void)uv_prepare_start(&p->prep, on_prep);
    p->prep_on = 1;
  }
}

/* Writes hiredis's output now when it has any (the poll's write interest is on exactly then) and the connection
 * is up: a connect still in progress is left to the poll, since hiredis would take a pending connect for done. A
 * write that cannot finish leaves the write interest on, and the poll finishes it; an error disconnects as from
 * the poll (hiredis runs the pending callbacks, then cleanup). */
void engram__redis_uv_flush(redisAsyncContext *ac) {
  adapter_t *p = ac != NULL ? ac->ev.data : NULL;
  if (p == NULL || p->ac == NULL || !(p->events & UV_WRITABLE)) return;
  if (!(ac->c.flags & REDIS_CONNECTED) || (ac->c.flags & (REDIS_DISCONNECTING | REDIS_FREEING))) return;
  redisAsyncHandleWrite(ac);
}

static void del_write(void *pd) {
  adapter_t *p = pd;
  set_events(p, p->events & ~UV_WRITABLE);
}

static void on_close(uv_handle_t *h) {
  adapter_t *p = h->data;
  void (*closed)(void *) = p->cbs.on_closed;
  void *ud = p->ud;
  if (--p->open > 0) return;
  engram_free(p);
  closed(ud);
}

static void cleanup(void *pd) {
  adapter_t *p = pd;
  redisAsyncContext *ac = p->ac;
  const char *err = ac && ac->errstr ? ac->errstr : "";
  if (ac == NULL) return;
  p->ac = NULL;
  ac->ev.data = NULL;
  ac->ev.addRead = ac->ev.delRead = ac->ev.addWrite = ac->ev.delWrite = NULL;
  ac->ev.cleanup = NULL;
  /* Stops polling now (the fd is closed right after this hook returns); the adapter is freed on close. */
  uv_close((uv_handle_t *)&p->handle, on_close);
  uv_close((uv_handle_t *)&p->prep, on_close);
  p->cbs.on_gone(p->ud, err);
}

int engram__redis_uv_attach(redisAsyncContext *ac, uv_loop_t *loop, const engram__redis_uv_cbs_t *cbs, void *ud) {
  adapter_t *p;
  if (ac->ev.data != NULL) return ENGRAM_EBACKEND;
  if ((p = engram_calloc(1, sizeof *p)) == NULL) return ENGRAM_ENOMEM;
  if (uv_poll_init(loop, &p->handle, ac->c.fd) != 0) {
    engram_free(p);
    return ENGRAM_EBACKEND;
  }
  (void)uv_prepare_init(loop, &p->prep); /* never fails */
  p->open = 2;
  p->prep.data = p;
  p->handle.data = p;
  p->ac = ac;
  p->cbs = *cbs;
  p->ud = ud;
  ac->ev.addRead = add_read;
  ac->ev.delRead = del_read;
  ac->ev.addWrite = add_write;
  ac->ev.delWrite = del_write;
  ac->ev.cleanup = cleanup;
  ac->ev.data = p;
  return 0;
}
