/*
 * manager.c — the manager: its home loop (the caller's, or one on a thread of its own), the table of sources
 * with the default, and the control operations (add_source, remove_source, list_sources, close) that change
 * it. Control requests travel through an MPSC queue to the home loop so they run there one at a time, never
 * inside the caller's call; answers from actors on other threads come home through the reply queue, drained
 * by the same uv_async handle — or, on Linux, woken through an eventfd the home loop watches (home_wake_init).
 *
 * Default source (BeamMePrompty's MemoryManager rules): the one marked default, else the first added;
 * removing it makes the next one in the order added the default.
 */
#include <errno.h>
#include <string.h>
#ifdef __linux__
#include <sys/eventfd.h>
#include <unistd.h>
#endif

#include "actor/placement.h"
#include "actor/table.h"
#include "manager/manager.h"
#include "manager/registry.h"
#include "shared/error.h"

/* ---- Home loop wake-up: replies and control messages ---- */

static void ctl_process(engram_manager_t *mgr, engram_request_t *req);
static void maybe_finish_close(engram_manager_t *mgr);

static engram_request_t *req_of(engram__mpscq_node_t *n) { return engram__request_of_node(n); }

static void drain(engram_manager_t *mgr) {
  engram__mpscq_node_t *n;
  size_t popped = 0, left;
  while ((n = engram__mpscq_pop(&mgr->control)) != NULL) {
    popped++;
    ctl_process(mgr, req_of(n));
  }
  left = popped ? engram__mpscq_done(&mgr->control, popped) : engram__mpscq_pending(&mgr->control);
  popped = 0;
  while (popped < 4096 && (n = engram__mpscq_pop(&mgr->replies)) != NULL) {
    popped++;
    engram__request_deliver(req_of(n));
  }
  left += popped ? engram__mpscq_done(&mgr->replies, popped) : engram__mpscq_pending(&mgr->replies);
  if (left > 0 && !uv_is_closing((uv_handle_t *)&mgr->async)) uv_async_send(&mgr->async);
}

static void on_home_async(uv_async_t *a) { drain(a->data); }

#ifdef __linux__
static void on_home_wake_fd(uv_poll_t *p, int status, int events) {
  engram_manager_t *mgr = p->data;
  uint64_t n;
  (void)events;
  if (status == 0 && read(mgr->wake_fd, &n, sizeof n) < 0 && errno != EAGAIN && errno != EINTR) return;
  drain(mgr);
}
#endif

/* The wake-up own-thread actors use for their answers (engram__home_t.wake_fd): an eventfd of the manager's that
 * the home loop watches with uv_poll, as the actors' own wake-up (actor.c, actor_wake). libuv 1.44's uv_async
 * makes the woken loop spin in its callback until the waking thread is back from write(); on the 2-core VM a
 * waker descheduled mid-call kept the home loop spinning. Control messages and the events' deliveries keep the
 * uv_async. Sets wake_fd to -1 (the uv_async then) when there is no eventfd. Home loop, before any actor. */
static void home_wake_init(engram_manager_t *mgr) {
  mgr->wake_fd = -1;
#ifdef __linux__
  if ((mgr->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0) return;
  if (uv_poll_init(mgr->loop, &mgr->wake_poll, mgr->wake_fd) != 0) {
    close(mgr->wake_fd);
    mgr->wake_fd = -1;
    return;
  }
  mgr->wake_poll.data = mgr;
  uv_poll_start(&mgr->wake_poll, UV_READABLE, on_home_wake_fd);
#endif
}

void engram__manager_post_reply(engram_manager_t *mgr, engram_request_t *req) {
  if (engram__mpscq_push(&mgr->replies, &req->priv->qnode) == 0) uv_async_send(&mgr->async);
}

int engram__manager_control(engram_manager_t *mgr, engram_request_t *req) {
  req->priv->mgr = mgr;
  atomic_store_explicit(&req->priv->refs, 1, memory_order_relaxed);
  if (engram__mpscq_push(&mgr->control, &req->priv->qnode) == 0) uv_async_send(&mgr->async);
  return 0;
}

/* ---- Source table (home loop writes under the write lock) ---- */

/* The index of the source found last is tried first (a caller usually sends run after run of calls to one
 * source: the fifth source of a manager took five strcmp a call, ~140 instructions of a tiered hot-key read),
 * then the rest, a name's first byte compared before strcmp. The hint is only a guess, read and written relaxed
 * by any thread holding the read lock; the table itself is what the lock guards. */
engram_source_t *engram__manager_find_locked(engram_manager_t *mgr, const char *name) {
  size_t i, n = mgr->n_sources, h;
  if (n == 0) return NULL;
  if (name == NULL) return mgr->sources[mgr->default_idx];
  h = atomic_load_explicit(&mgr->find_hint, memory_order_relaxed);
  if (h < n && mgr->sources[h]->name[0] == name[0] && strcmp(mgr->sources[h]->name, name) == 0) return mgr->sources[h];
  for (i = 0; i < n; i++) {
    engram_source_t *s = mgr->sources[i];
    if (s->name[0] == name[0] && strcmp(s->name, name) == 0) {
      atomic_store_explicit(&mgr->find_hint, i, memory_order_relaxed);
      return s;
    }
  }
  return NULL;
}

static void set_default_locked(engram_manager_t *mgr, size_t idx) {
  size_t i;
  mgr->default_idx = idx;
  for (i = 0; i < mgr->n_sources; i++) atomic_store(&mgr->sources[i]->is_default, i == idx);
}

/* The array grows under the write lock too: a call submitted on another thread reads it under the read lock,
 * and a realloc outside the lock could free the array under that reader. */
static int table_append(engram_manager_t *mgr, engram_source_t *src, int is_default) {
  uv_rwlock_wrlock(&mgr->lock);
  if (mgr->n_sources == mgr->cap_sources) {
    size_t cap = mgr->cap_sources ? mgr->cap_sources * 2 : 4;
    engram_source_t **s = engram_realloc(mgr->sources, cap * sizeof *s);
    if (s == NULL) {
      uv_rwlock_wrunlock(&mgr->lock);
      return ENGRAM_ENOMEM;
    }
    mgr->sources = s;
    mgr->cap_sources = cap;
  }
  mgr->sources[mgr->n_sources++] = src;
  if (is_default || mgr->n_sources == 1) {
    if (is_default) mgr->default_marked = 1;
    set_default_locked(mgr, mgr->n_sources - 1);
  }
  uv_rwlock_wrunlock(&mgr->lock);
  return 0;
}

/* Takes src out of the table; the default moves to the next source in the order added. */
static void table_remove(engram_manager_t *mgr, engram_source_t *src) {
  size_t i;
  uv_rwlock_wrlock(&mgr->lock);
  for (i = 0; i < mgr->n_sources && mgr->sources[i] != src; i++) {
  }
  if (i < mgr->n_sources) {
    int was_default = i == mgr->default_idx;
    memmove(&mgr->sources[i], &mgr->sources[i + 1], (mgr->n_sources - i - 1) * sizeof *mgr->sources);
    mgr->n_sources--;
    if (mgr->n_sources > 0) {
      if (was_default) set_default_locked(mgr, i < mgr->n_sources ? i : 0);
      else if (mgr->default_idx > i) mgr->default_idx--;
    } else {
      mgr->default_idx = 0;
    }
  }
  uv_rwlock_wrunlock(&mgr->lock);
}

/* ---- Control operations (home loop) ---- */

static void answer_route(engram_request_t *req, int status, const char *fmt, const char *arg) {
  req->priv->on_done = NULL;
  if (fmt != NULL) engram__request_answer(req, status, fmt, arg);
  else engram__request_answer(req, status, NULL);
  engram__route(req);
}

static void actor_gone(engram_request_t *close_ctl) {
  engram_source_t *src = close_ctl->backend_data;
  engram_manager_t *mgr = src->mgr;
  engram_request_t *rreq = src->remove_req;
  engram__actor_free(src);
  mgr->n_closing--;
  if (rreq != NULL) answer_route(rreq, 0, NULL, NULL);
  maybe_finish_close(mgr);
}

static void close_source(engram_manager_t *mgr, engram_source_t *src, engram_request_t *remove_req, const char *why) {
  src->remove_req = remove_req;
  src->close_ctl->priv->on_done = actor_gone;
  mgr->n_closing++;
  engram__actor_close(src, why);
}

static void add_finish(engram_request_t *req) {
  engram_source_t *src = req->backend_data;
  engram_manager_t *mgr = src->mgr;
  int status = req->priv->status;
  mgr->n_opening--;
  req->priv->on_done = NULL;
  if (status != 0) {
    /* A failed open: the actor already released its handles; the source is not added. */
    engram__actor_free(src);
    req->priv->answered = 1;
    engram__route(req);
    maybe_finish_close(mgr);
    return;
  }
  if (mgr->closing) {
    engram__request_answer(req, ENGRAM_ECANCELED, "manager closed while source '%s' was opening", src->name);
    close_source(mgr, src, req, "manager closed");
    return;
  }
  if (table_append(mgr, src, req->priv->flag_arg) != 0) {
    engram__request_answer(req, ENGRAM_ENOMEM, "out of memory adding source '%s'", src->name);
    close_source(mgr, src, req, "out of memory");
    return;
  }
  answer_route(req, 0, NULL, NULL);
}

static int name_taken(engram_manager_t *mgr, const char *name) {
  size_t i;
  for (i = 0; i < mgr->n_sources; i++)
    if (strcmp(mgr->sources[i]->name, name) == 0) return 1;
  return 0;
}

static void ctl_add(engram_manager_t *mgr, engram_request_t *req) {
  engram_source_t *src;
  engram__retention_t retention;
  char err[256];
  int rc;
  if (name_taken(mgr, req->priv->name_arg)) {
    answer_route(req, ENGRAM_ESOURCE_EXISTS, "a source named '%s' already exists", req->priv->name_arg);
    return;
  }
  /* The retention options are the core's (checked at the call): taken out, so the backend's open sees its own. */
  if (engram__retention_take(req->value, 1, &retention, err, sizeof err) != 0) {
    answer_route(req, ENGRAM_EINVAL, "options: %s", err);
    return;
  }
  {
    engram__actor_config_t cfg;
    engram__table_t table;
    /* So is "thread": where this source's actor runs (actor/placement.h). */
    if (engram__placement_take(req->value, 1, req->priv->vtable_arg, &cfg.own_thread, err, sizeof err) != 0) {
      answer_route(req, ENGRAM_EINVAL, "options: %s", err);
      return;
    }
    cfg.home.loop = mgr->loop;
    cfg.home.wake = &mgr->async;
    cfg.home.wake_fd = mgr->wake_fd;
    cfg.home.replies = &mgr->replies;
    cfg.mgr = mgr;
    cfg.events = &mgr->events.hook;
    cfg.max_inflight = mgr->cfg.max_inflight;
    cfg.batch = mgr->cfg.batch;
    cfg.mailbox_capacity = mgr->cfg.mailbox_capacity;
    cfg.update_retries = mgr->cfg.update_retries;
    engram__table_fill(&table, req->priv->vtable_arg);
    rc = engram__actor_new(&cfg, &table, req, &src);
  }
  if (rc != 0) {
    answer_route(req, rc, "cannot create source '%s'", req->priv->name_arg);
    return;
  }
  src->retention = retention;
  src->open_options = req->value;
  req->value = NULL;
  req->backend_data = src;
  req->priv->on_done = add_finish;
  mgr->n_opening++;
  engram__actor_open(src);
}

static void ctl_remove(engram_manager_t *mgr, engram_request_t *req) {
  engram_source_t *src;
  uv_rwlock_rdlock(&mgr->lock);
  src = engram__manager_find_locked(mgr, req->priv->name_arg);
  uv_rwlock_rdunlock(&mgr->lock);
  if (src == NULL) {
    answer_route(req, ENGRAM_EUNKNOWN_SOURCE, "unknown memory source '%s'", req->priv->name_arg);
    return;
  }
  table_remove(mgr, src);
  close_source(mgr, src, req, "source removed");
}

static void ctl_list(engram_manager_t *mgr, engram_request_t *req) {
  cJSON *arr = cJSON_CreateArray(), *o;
  size_t i;
  int ok = arr != NULL;
  for (i = 0; ok && i < mgr->n_sources; i++) {
    engram_source_t *s = mgr->sources[i];
    ok = (o = cJSON_CreateObject()) != NULL && cJSON_AddItemToArray(arr, o);
    if (!ok) {
      cJSON_Delete(o);
      break;
    }
    ok = cJSON_AddStringToObject(o, "name", s->name) && cJSON_AddStringToObject(o, "type", s->vt->name) &&
         cJSON_AddStringToObject(o, "description", s->description ? s->description : "") &&
         cJSON_AddBoolToObject(o, "default", i == mgr->default_idx);
  }
  if (!ok) {
    cJSON_Delete(arr);
    answer_route(req, ENGRAM_ENOMEM, NULL, NULL);
    return;
  }
  engram_reply_set_info(req, arr);
  engram_reply_set_count(req, mgr->n_sources);
  answer_route(req, 0, NULL, NULL);
}

static void on_home_closed(uv_handle_t *h) {
  engram_manager_t *mgr = h->data;
  engram_request_t *req = mgr->close_req;
  engram__mpscq_node_t *n;
  /* Subscriptions end (END, ENGRAM_ECLOSED); home-loop ones are delivered by the drain below. */
  engram__events_close(&mgr->events);
  /* Answers that arrived after the last wake-up. */
  while ((n = engram__mpscq_pop(&mgr->replies)) != NULL) engram__request_deliver(req_of(n));
  while ((n = engram__mpscq_pop(&mgr->control)) != NULL) ctl_process(mgr, req_of(n));
  uv_rwlock_destroy(&mgr->lock);
  engram__events_destroy(&mgr->events);
  engram_free(mgr->sources);
  mgr->sources = NULL;
  if (mgr->msg_cache != NULL) mgr->msg_cache_release(mgr->msg_cache); /* windows still in flight hold their own */
  mgr->msg_cache = NULL;
  if (req != NULL) {
    mgr->close_req = NULL;
    answer_route(req, 0, NULL, NULL);
  }
  if (!mgr->own_thread) engram_free(mgr);
  /* A manager on its own thread is freed by engram_manager_shutdown once the thread has ended. */
}

/* The eventfd's watch is closed first, then the uv_async (whose close ends the manager). Every actor has been
 * freed (its thread joined), so nothing writes to the eventfd any more. */
static void on_wake_poll_closed(uv_handle_t *h) {
  engram_manager_t *mgr = h->data;
#ifdef __linux__
  close(mgr->wake_fd);
  mgr->wake_fd = -1;
#endif
  uv_close((uv_handle_t *)&mgr->async, on_home_closed);
}

static void maybe_finish_close(engram_manager_t *mgr) {
  if (!mgr->closing || mgr->n_closing > 0 || mgr->n_opening > 0 || uv_is_closing((uv_handle_t *)&mgr->async))
    return;
  engram__events_stop(&mgr->events); /* its idle handle closes with the manager's handles */
#ifdef __linux__
  if (mgr->wake_fd >= 0) {
    if (!uv_is_closing((uv_handle_t *)&mgr->wake_poll)) uv_close((uv_handle_t *)&mgr->wake_poll, on_wake_poll_closed);
    return;
  }
#endif
  uv_close((uv_handle_t *)&mgr->async, on_home_closed);
}

static void ctl_close(engram_manager_t *mgr, engram_request_t *req) {
  size_t i, n;
  engram_source_t **all;
  if (mgr->closing) {
    answer_route(req, ENGRAM_EINVAL, "manager is already closing%s", "");
    return;
  }
  mgr->closing = 1;
  mgr->close_req = req;
  uv_rwlock_wrlock(&mgr->lock);
  all = mgr->sources;
  n = mgr->n_sources;
  mgr->n_sources = 0;
  uv_rwlock_wrunlock(&mgr->lock);
  for (i = n; i > 0; i--) close_source(mgr, all[i - 1], NULL, "manager closed");
  maybe_finish_close(mgr);
}

static void ctl_process(engram_manager_t *mgr, engram_request_t *req) {
  if (mgr->closing && req->op != ENGRAM_OP_CLOSE && req->op != ENGRAM_OP_CONFIGURE) {
    answer_route(req, ENGRAM_ECANCELED, "manager closed%s", "");
    return;
  }
  switch (req->op) {
    case ENGRAM_OP_ADD_SOURCE: ctl_add(mgr, req); break;
    case ENGRAM_OP_REMOVE_SOURCE: ctl_remove(mgr, req); break;
    case ENGRAM_OP_LIST_SOURCES: ctl_list(mgr, req); break;
    case ENGRAM_OP_CONFIGURE: /* configure (config.c, above this file) runs its own steps: it says which */
      if (req->priv->control_fn != NULL) req->priv->control_fn(mgr, req);
      else answer_route(req, ENGRAM_EINVAL, "configure request without its handler%s", "");
      break;
    case ENGRAM_OP_CLOSE: ctl_close(mgr, req); break;
    default: answer_route(req, ENGRAM_EINVAL, "unknown control operation%s", ""); break;
  }
}

/* ---- Public manager functions ---- */

static void home_thread_main(void *arg) {
  engram_manager_t *mgr = arg;
  uv_run(&mgr->own_loop, UV_RUN_DEFAULT);
}

int engram_manager_new(engram_manager_t **out, uv_loop_t *loop, const engram_manager_config_t *config) {
  engram_manager_t *mgr;
  int rc;
  engram__error_clear();
  if (out == NULL) return engram__error(ENGRAM_EINVAL, "out: NULL");
  *out = NULL;
  if (config != NULL && config->mailbox_capacity > (1u << 30))
    return engram__error(ENGRAM_EINVAL, "config.mailbox_capacity: %u is above the limit of 2^30", config->mailbox_capacity);
  mgr = engram_calloc(1, sizeof *mgr);
  if (mgr == NULL) return engram__error(ENGRAM_ENOMEM, "out of memory creating the manager");
  if (config != NULL) mgr->cfg = *config;
  if (mgr->cfg.mailbox_capacity == 0) mgr->cfg.mailbox_capacity = 65536;
  if (mgr->cfg.max_inflight == 0) mgr->cfg.max_inflight = 1024;
  if (mgr->cfg.batch == 0) mgr->cfg.batch = 256;
  if (mgr->cfg.update_retries == 0) mgr->cfg.update_retries = 16;
  engram__mpscq_init(&mgr->replies);
  engram__mpscq_init(&mgr->control);
  atomic_init(&mgr->closed, 0);
  atomic_init(&mgr->find_hint, 0);
  if (uv_rwlock_init(&mgr->lock) != 0) {
    engram_free(mgr);
    return engram__error(ENGRAM_EBACKEND, "cannot create the manager's lock");
  }
  if (loop == NULL) {
    mgr->own_thread = 1;
    if (uv_loop_init(&mgr->own_loop) != 0) {
      uv_rwlock_destroy(&mgr->lock);
      engram_free(mgr);
      return engram__error(ENGRAM_EBACKEND, "cannot create the manager's loop");
    }
    loop = &mgr->own_loop;
  }
  mgr->loop = loop;
  {
    engram__home_t home;
    home.loop = loop;
    home.wake = &mgr->async;
    home.wake_fd = -1; /* the events' deliveries: the uv_async (the eventfd is made below) */
    home.replies = &mgr->replies;
    if ((rc = engram__events_init(&mgr->events, &home)) != 0) {
      if (mgr->own_thread) uv_loop_close(&mgr->own_loop);
      uv_rwlock_destroy(&mgr->lock);
      engram_free(mgr);
      return rc == ENGRAM_ENOMEM ? engram__error(rc, "out of memory creating the manager")
                                 : engram__error(ENGRAM_EBACKEND, "cannot create the manager's event lock");
    }
  }
  uv_async_init(loop, &mgr->async, on_home_async);
  mgr->async.data = mgr;
  home_wake_init(mgr);
  if (mgr->own_thread && uv_thread_create(&mgr->thread, home_thread_main, mgr) != 0) {
    uv_close((uv_handle_t *)&mgr->async, NULL);
#ifdef __linux__
    if (mgr->wake_fd >= 0) uv_close((uv_handle_t *)&mgr->wake_poll, NULL);
#endif
    uv_run(&mgr->own_loop, UV_RUN_DEFAULT);
#ifdef __linux__
    if (mgr->wake_fd >= 0) close(mgr->wake_fd);
#endif
    uv_loop_close(&mgr->own_loop);
    uv_rwlock_destroy(&mgr->lock);
    engram__events_destroy(&mgr->events);
    engram_free(mgr);
    return engram__error(ENGRAM_EBACKEND, "cannot start the manager's thread");
  }
  *out = mgr;
  return 0;
}

static int begin_close(engram_manager_t *mgr, engram_cb cb, void *ud) {
  engram_request_t *req;
  int expected = 0;
  req = engram__request_new(ENGRAM_OP_CLOSE, NULL, 0, NULL, 0);
  if (req == NULL) return engram__error(ENGRAM_ENOMEM, "out of memory closing the manager");
  if (!atomic_compare_exchange_strong(&mgr->closed, &expected, 1)) {
    engram__request_unref(req);
    return engram__error(ENGRAM_EINVAL, "manager: already closing");
  }
  req->priv->cb = cb;
  req->priv->ud = ud;
  return engram__manager_control(mgr, req);
}

int engram_manager_close(engram_manager_t *mgr, engram_cb cb, void *ud) {
  engram__error_clear();
  if (mgr == NULL) return engram__error(ENGRAM_EINVAL, "mgr: NULL");
  if (cb == NULL) return engram__error(ENGRAM_EINVAL, "cb: NULL");
  if (mgr->own_thread) return engram__error(ENGRAM_EINVAL, "mgr: runs on its own thread; use engram_manager_shutdown");
  return begin_close(mgr, cb, ud);
}

static void shutdown_cb(int status, const engram_reply_t *reply, void *ud) {
  (void)status;
  (void)reply;
  (void)ud;
}

int engram_manager_shutdown(engram_manager_t *mgr) {
  int rc;
  engram__error_clear();
  if (mgr == NULL) return engram__error(ENGRAM_EINVAL, "mgr: NULL");
  if (!mgr->own_thread) return engram__error(ENGRAM_EINVAL, "mgr: lives on the caller's loop; use engram_manager_close");
  rc = begin_close(mgr, shutdown_cb, NULL);
  if (rc != 0) return rc;
  uv_thread_join(&mgr->thread);
  uv_loop_close(&mgr->own_loop);
  engram_free(mgr);
  return 0;
}

uv_loop_t *engram_manager_loop(engram_manager_t *mgr) { return mgr ? mgr->loop : NULL; }

int engram_manager_set_default_source(engram_manager_t *mgr, const char *name) {
  size_t i;
  engram__error_clear();
  if (mgr == NULL) return engram__error(ENGRAM_EINVAL, "mgr: NULL");
  if (engram__source_name_check("", name) != 0) return ENGRAM_EINVAL; /* a name no source can have: never echoed */
  if (atomic_load(&mgr->closed)) return engram__error(ENGRAM_ECLOSED, "manager: closed");
  uv_rwlock_wrlock(&mgr->lock);
  for (i = 0; i < mgr->n_sources; i++) {
    if (strcmp(mgr->sources[i]->name, name) == 0) {
      set_default_locked(mgr, i);
      mgr->default_marked = 1;
      uv_rwlock_wrunlock(&mgr->lock);
      return 0;
    }
  }
  uv_rwlock_wrunlock(&mgr->lock);
  return engram__error(ENGRAM_EUNKNOWN_SOURCE, "unknown memory source '%s'", name);
}
