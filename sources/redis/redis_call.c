/*
 * redis_call.c — the life of a call in the redis source (see redis_call.h): the admission queue (linked
 * through the requests' backend_data), the wait timer that releases queued calls at their deadline while the
 * connection is down, sending the shared command buffer, and finishing.
 */
#include <stdarg.h>
#include <stdio.h>

#include "redis_call.h"
#include "redis_conn.h"
#include "redis_pipe.h"

static engram_request_t *q_pop(engram__redis_t *r);
static void wait_timer_arm(engram__redis_t *r);

engram__redis_t *engram__redis_of(const redisAsyncContext *ac) { return engram__redis_conn_ud_of(ac); }

/* ---- Setup and closing ---- */

int engram__redis_call_init(engram__redis_t *r, engram__redis_start_fn *start, engram__redis_hook_fn *before_send) {
  r->start = start;
  r->before_send = before_send;
  if (uv_timer_init(r->loop, &r->wait_timer) != 0) return ENGRAM_EBACKEND;
  r->wait_timer.data = r;
  r->wait_timer_open = 1;
  return 0;
}

void engram__redis_call_ready(engram__redis_t *r) {
  if (r->wait_timer_open) uv_timer_stop(&r->wait_timer);
  engram__redis_call_pump(r);
}

static void on_wait_timer_closed(uv_handle_t *h) {
  engram__redis_t *r = h->data;
  r->wait_timer_open = 0;
  r->wait_timer_closed(r);
}

void engram__redis_call_close(engram__redis_t *r, engram__redis_hook_fn *closed) {
  engram_request_t *req;
  /* Queued calls never reached Redis; the core has answered them (or will not wait for them). */
  while ((req = q_pop(r)) != NULL) engram_request_complete(req, ENGRAM_ECANCELED);
  if (r->wait_timer_open && !uv_is_closing((uv_handle_t *)&r->wait_timer)) {
    r->wait_timer_closed = closed;
    uv_timer_stop(&r->wait_timer);
    uv_close((uv_handle_t *)&r->wait_timer, on_wait_timer_closed);
  }
}

/* ---- Admission ---- */

static void q_push(engram__redis_t *r, engram_request_t *req) {
  req->backend_data = NULL;
  if (r->q_tail) r->q_tail->backend_data = req;
  else r->q_head = req;
  r->q_tail = req;
  r->q_n++;
}

static engram_request_t *q_pop(engram__redis_t *r) {
  engram_request_t *req = r->q_head;
  if (req == NULL) return NULL;
  r->q_head = req->backend_data;
  if (r->q_head == NULL) r->q_tail = NULL;
  req->backend_data = NULL;
  r->q_n--;
  return req;
}

void engram__redis_why(engram__redis_t *r, const redisAsyncContext *ac, char *buf, size_t len) {
  const char *why;
  if (ac != NULL && ac->err && ac->errstr && ac->errstr[0]) why = ac->errstr;
  else if (r->conn.err_set) why = r->conn.err;
  else if (r->last_error[0]) why = r->last_error;
  else why = ac != NULL ? "connection closed" : "not connected";
  if (r->closing) why = "source closed";
  snprintf(buf, len, "redis at %s unavailable: %s", r->address, why);
}

static void fail_unavailable_now(engram__redis_t *r, engram_request_t *req) {
  char msg[320];
  engram__redis_why(r, NULL, msg, sizeof msg);
  r->unavailable++;
  engram_request_fail(req, ENGRAM_EUNAVAILABLE, "%s", msg);
}

/* Starts queued requests while the window and the connection allow. */
void engram__redis_call_pump(engram__redis_t *r) {
  engram_request_t *req;
  if (r->pumping) return;
  r->pumping = 1;
  while (r->q_head != NULL) {
    req = r->q_head;
    if (r->closing || engram_request_answered(req)) {
      q_pop(r);
      engram_request_complete(req, ENGRAM_ECANCELED); /* already answered: this only releases it */
      continue;
    }
    if (!engram__redis_conn_ready(&r->conn)) {
      if (r->wait_for_connection) break;
      q_pop(r);
      fail_unavailable_now(r, req);
      continue;
    }
    if (r->outstanding >= r->max_inflight) break;
    q_pop(r);
    r->outstanding++;
    r->start(r, req);
  }
  r->pumping = 0;
  if (r->q_head != NULL && !engram__redis_conn_ready(&r->conn)) wait_timer_arm(r);
}

void engram__redis_admit(engram_source_t *src, engram_request_t *req) {
  engram__redis_t *r = engram_source_state(src);
  if (r->closing) {
    engram_request_complete(req, ENGRAM_ECANCELED);
    return;
  }
  if (r->q_head == NULL && r->outstanding < r->max_inflight && engram__redis_conn_ready(&r->conn)) {
    r->outstanding++;
    r->start(r, req);
    return;
  }
  if (!engram__redis_conn_ready(&r->conn) && !r->wait_for_connection) {
    fail_unavailable_now(r, req);
    return;
  }
  q_push(r, req);
  if (!engram__redis_conn_ready(&r->conn)) wait_timer_arm(r);
}

/* Queued calls answered by their deadline while the connection is down are released when it passes. */
static void on_wait_timer(uv_timer_t *t) {
  engram__redis_t *r = t->data;
  engram_request_t *req = r->q_head, *prev = NULL, *next;
  while (req != NULL) {
    next = req->backend_data;
    if (engram_request_answered(req)) {
      if (prev) prev->backend_data = next;
      else r->q_head = next;
      if (r->q_tail == req) r->q_tail = prev;
      r->q_n--;
      req->backend_data = NULL;
      engram_request_complete(req, ENGRAM_ETIMEDOUT);
    } else {
      prev = req;
    }
    req = next;
  }
  if (r->q_head != NULL && !engram__redis_conn_ready(&r->conn)) wait_timer_arm(r);
}

static void wait_timer_arm(engram__redis_t *r) {
  uint64_t now = uv_hrtime() / 1000000u, first = 0, d;
  engram_request_t *req;
  if (!r->wait_timer_open || r->closing) return;
  for (req = r->q_head; req != NULL; req = req->backend_data) {
    d = engram_request_deadline(req);
    if (d != 0 && (first == 0 || d < first)) first = d;
  }
  if (first == 0) return;
  uv_timer_start(&r->wait_timer, on_wait_timer, first > now ? first - now + 1 : 1, 0);
}

/* ---- Sending and finishing ---- */

int engram__redis_send(engram__redis_t *r, redisCallbackFn *fn, void *pd) {
  if (r->closing) return ENGRAM_EUNAVAILABLE;
  if (r->cmd.failed) return ENGRAM_ENOMEM;
  /* The hook sends the stores started before this command first (redis_store.c), so commands reach Redis in the
   * order their calls started; it finishes nothing, so r->cmd stays intact. */
  if (r->before_send != NULL) r->before_send(r);
  return engram__redis_pipe_send(&r->pipe, fn, pd, r->cmd.p, r->cmd.len);
}

/* Frees a slot and starts the requests waiting for one. */
static void release_slot(engram__redis_t *r) {
  r->outstanding--;
  if (r->q_head != NULL) engram__redis_call_pump(r);
}

void engram__redis_slot_take(engram__redis_t *r) { r->outstanding++; }

void engram__redis_slot_free(engram__redis_t *r) { release_slot(r); }

void engram__redis_finish(engram__redis_t *r, engram_request_t *req, int status, const char *fmt, ...) {
  if (fmt != NULL && status != 0) {
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    engram_request_fail(req, status, "%s", msg);
  } else {
    engram_request_complete(req, status);
  }
  release_slot(r);
}

void engram__redis_finish_unavailable(engram__redis_t *r, engram_request_t *req, const redisAsyncContext *ac, int rc) {
  char msg[320];
  if (rc != ENGRAM_EUNAVAILABLE && rc != 0) {
    engram__redis_finish(r, req, rc, NULL);
    return;
  }
  engram__redis_why(r, ac, msg, sizeof msg);
  r->unavailable++;
  engram__redis_finish(r, req, ENGRAM_EUNAVAILABLE, "%s", msg);
}

void engram__redis_finish_reply_error(engram__redis_t *r, engram_request_t *req, const redisReply *reply) {
  engram__redis_finish(r, req, ENGRAM_EBACKEND, "redis: %.*s", (int)(reply->len > 300 ? 300 : reply->len), reply->str);
}
