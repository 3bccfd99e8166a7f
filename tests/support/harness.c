/*
 * harness.c — shared test machinery (see harness.h): reply capture, loop waits with time limits, and the
 * synchronous wrappers the conformance suite is written with.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "support/harness.h"

void result_reset(result_t *r) {
  cJSON_Delete(r->items);
  cJSON_Delete(r->info);
  free(r->cursor);
  free(r->text);
  memset(r, 0, sizeof *r);
}

static char *dup_str(const char *s) {
  char *p;
  if (s == NULL) return NULL;
  p = malloc(strlen(s) + 1);
  if (p) strcpy(p, s);
  return p;
}

/* Adds child to o, or frees it when that fails (allocation-failure tests run this under a failing allocator). */
static void add_or_delete(cJSON *o, const char *name, cJSON *child) {
  if (child != NULL && !cJSON_AddItemToObject(o, name, child)) cJSON_Delete(child);
}

int harness_strays;

void harness_stray(const char *where) {
  if (harness_strays++ < 5) fprintf(stderr, "harness: a second callback for one call (%s)\n", where);
}

void capture_cb(int status, const engram_reply_t *reply, void *ud) {
  result_t *r = ud;
  size_t i;
  r->calls++;
  if (r->calls > 1) { /* exactly one callback per call: a second one fails the test at ctx_close */
    harness_stray(reply && reply->source ? reply->source : "capture_cb");
    return;
  }
  r->status = status;
  r->op = reply->op;
  snprintf(r->message, sizeof r->message, "%s", reply->message ? reply->message : "");
  snprintf(r->source, sizeof r->source, "%s", reply->source ? reply->source : "");
  r->items = cJSON_CreateArray();
  r->n_items = reply->n_items;
  for (i = 0; i < reply->n_items; i++) {
    const engram_item_t *it = &reply->items[i];
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "status", it->status);
    cJSON_AddStringToObject(o, "key", it->key ? it->key : "");
    cJSON_AddStringToObject(o, "ns", it->ns ? it->ns : "");
    if (it->value) add_or_delete(o, "value", cJSON_Duplicate(it->value, 1));
    if (it->metadata) add_or_delete(o, "metadata", cJSON_Duplicate(it->metadata, 1));
    cJSON_AddNumberToObject(o, "version", (double)it->version);
    cJSON_AddNumberToObject(o, "created_at_ms", (double)it->created_at_ms);
    cJSON_AddNumberToObject(o, "updated_at_ms", (double)it->updated_at_ms);
    cJSON_AddNumberToObject(o, "expires_at_ms", (double)it->expires_at_ms);
    cJSON_AddNumberToObject(o, "score", it->score);
    cJSON_AddStringToObject(o, "source", it->source ? it->source : "");
    if (!cJSON_AddItemToArray(r->items, o)) cJSON_Delete(o); /* allocation-failure tests: keep going */
  }
  r->count = reply->count;
  r->cursor = dup_str(reply->cursor);
  r->info = reply->info ? cJSON_Duplicate(reply->info, 1) : NULL;
  r->text = dup_str(reply->text);
}

const cJSON *result_item(const result_t *r, size_t i, const char *field) {
  const cJSON *it = cJSON_GetArrayItem(r->items, (int)i);
  return it ? cJSON_GetObjectItemCaseSensitive(it, field) : NULL;
}

const char *result_key(const result_t *r, size_t i) {
  const cJSON *k = result_item(r, i, "key");
  return k ? k->valuestring : NULL;
}

int conf_source_enabled(const conf_source_t *s) {
  const char *only = getenv("ENGRAM_TEST_SOURCES");
  const char *p;
  size_t n = strlen(s->type);
  if (only == NULL || only[0] == '\0') return 1;
  for (p = only; (p = strstr(p, s->type)) != NULL; p += n)
    if ((p == only || p[-1] == ',') && (p[n] == '\0' || p[n] == ',')) return 1;
  return 0;
}

void ctx_init(ctx_t *c, const engram_manager_config_t *cfg) {
  memset(c, 0, sizeof *c);
  assert_int_equal(uv_loop_init(&c->loop), 0);
  assert_int_equal(engram_manager_new(&c->mgr, &c->loop, cfg), 0);
}

void ctx_add(ctx_t *c, const conf_source_t *s) {
  result_t r = {0};
  char *opts;
  int rc;
  conf_prepare(c->mgr, &c->loop, s);
  opts = s->options ? s->options() : NULL;
  rc = engram_manager_add_source(c->mgr, "mem", s->vt, opts, "the source under test", 1, capture_cb, &r);
  engram_free(opts);
  assert_int_equal(rc, 0);
  wait_for(c, &r.calls, 1, 30000);
  if (r.status != 0) fail_msg("add_source(%s): %s (%s)", s->type, engram_err_name(r.status), r.message);
  c->src = s;
  result_reset(&r);
}

void ctx_close(ctx_t *c) {
  result_t r = {0};
  assert_int_equal(engram_manager_close(c->mgr, capture_cb, &r), 0);
  wait_for(c, &r.calls, 1, 30000);
  assert_int_equal(r.status, 0);
  assert_int_equal(uv_run(&c->loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(r.calls, 1);
  result_reset(&r);
  assert_int_equal(uv_loop_close(&c->loop), 0);
  if (harness_strays != 0) fail_msg("%d stray callbacks (a second callback for one call)", harness_strays);
}

/* The loop runs in UV_RUN_DEFAULT mode until a check handle sees the awaited count or a timer expires (both
 * stop the loop). UV_RUN_ONCE would do, but libuv 1.44 blocks forever in it under valgrind. */
typedef struct {
  const int *counter;
  int want;
  int expired;
} waiter_t;

static void on_deadline(uv_timer_t *t) {
  ((waiter_t *)t->data)->expired = 1;
  uv_stop(t->loop);
}

static void on_check(uv_check_t *h) {
  waiter_t *w = h->data;
  if (w->counter != NULL && *w->counter >= w->want) uv_stop(h->loop);
}

/* Before polling too: a callback run by a timer must not wait for the next I/O event. */
static void on_prepare(uv_prepare_t *h) {
  waiter_t *w = h->data;
  if (w->counter != NULL && *w->counter >= w->want) uv_stop(h->loop);
}

int loop_wait(uv_loop_t *loop, const int *counter, int want, int timeout_ms) {
  uv_timer_t t;
  uv_check_t chk;
  uv_prepare_t prep;
  waiter_t w = {counter, want, 0};
  uv_timer_init(loop, &t);
  uv_check_init(loop, &chk);
  uv_prepare_init(loop, &prep);
  t.data = chk.data = prep.data = &w;
  uv_timer_start(&t, on_deadline, (uint64_t)timeout_ms, 0);
  uv_check_start(&chk, on_check);
  uv_prepare_start(&prep, on_prepare);
  while (!w.expired && (counter == NULL || *counter < want)) uv_run(loop, UV_RUN_DEFAULT);
  uv_close((uv_handle_t *)&t, NULL);
  uv_close((uv_handle_t *)&chk, NULL);
  uv_close((uv_handle_t *)&prep, NULL);
  uv_run(loop, UV_RUN_NOWAIT);
  return counter == NULL || *counter >= want;
}

static void run_until(ctx_t *c, const int *counter, int want, int timeout_ms) {
  loop_wait(&c->loop, counter, want, timeout_ms);
}

void wait_for(ctx_t *c, const int *counter, int want, int timeout_ms) {
  run_until(c, counter, want, timeout_ms);
  if (*counter < want) fail_msg("timed out after %d ms waiting for %d callbacks (got %d)", timeout_ms, want, *counter);
}

void run_for(ctx_t *c, int ms) { run_until(c, NULL, 0, ms); }

typedef struct {
  int (*cond)(void *arg);
  void *arg;
  int met;
} cond_wait_t;

static void on_cond_idle(uv_idle_t *h) {
  cond_wait_t *w = h->data;
  if (!w->met && w->cond(w->arg)) w->met = 1;
}

void wait_until(ctx_t *c, int (*cond)(void *arg), void *arg, int timeout_ms, const char *what) {
  cond_wait_t w = {cond, arg, cond(arg)};
  uv_idle_t h;
  if (!w.met) {
    uv_idle_init(&c->loop, &h);
    h.data = &w;
    uv_idle_start(&h, on_cond_idle);
    run_until(c, &w.met, 1, timeout_ms);
    uv_close((uv_handle_t *)&h, NULL);
    uv_run(&c->loop, UV_RUN_NOWAIT);
  }
  if (!w.met) fail_msg("timed out after %d ms waiting until %s", timeout_ms, what);
}

static int turns_left(void *arg) { return --*(int *)arg < 0; }

void run_turns(ctx_t *c, int n) { wait_until(c, turns_left, &n, 30000, "the loop turned"); }

int tag_fn(const cJSON *current, cJSON **next, void *ud) {
  char buf[64];
  snprintf(buf, sizeof buf, "%s%s", cJSON_IsString(current) ? current->valuestring : "", (const char *)ud);
  *next = cJSON_CreateString(buf);
  return *next ? 0 : ENGRAM_ENOMEM;
}

void tag_cb(int status, const engram_reply_t *reply, void *ud) {
  tags_t *x = ud;
  int i = x->answered++;
  if (i >= 4) return;
  x->status[i] = status;
  if (status == 0 && reply->n_items == 1 && cJSON_IsString(reply->items[0].value)) {
    snprintf(x->value[i], sizeof x->value[i], "%s", reply->items[0].value->valuestring);
    x->version[i] = reply->items[0].version;
  }
}

typedef struct {
  int64_t t;
  int past; /* the condition wait_for waits on: 1 once engram_now_ms() > t */
} clock_wait_t;

/* Counts the clock past t, or re-arms for the time still left (a timer may fire a little early on a coarse clock). */
static void on_clock(uv_timer_t *h) {
  clock_wait_t *w = h->data;
  int64_t now = engram_now_ms();
  if (now > w->t) w->past = 1;
  else uv_timer_start(h, on_clock, (uint64_t)(w->t - now + 1), 0);
}

void wait_clock_past(ctx_t *c, int64_t t) {
  clock_wait_t w = {t, 0};
  uv_timer_t h;
  int64_t now = engram_now_ms();
  if (now > t) return;
  uv_timer_init(&c->loop, &h);
  h.data = &w;
  uv_timer_start(&h, on_clock, (uint64_t)(t - now + 1), 0);
  run_until(c, &w.past, 1, 10000);
  uv_close((uv_handle_t *)&h, NULL);
  uv_run(&c->loop, UV_RUN_NOWAIT);
  if (!w.past) fail_msg("the clock did not move past %lld in 10 s", (long long)t);
}

void run_barrier(ctx_t *c) {
  result_t r = {0};
  assert_int_equal(engram_manager_list_sources(c->mgr, NULL, capture_cb, &r), 0);
  wait_for(c, &r.calls, 1, 30000);
  result_reset(&r);
}

static int finish(ctx_t *c, int rc, result_t *r) {
  if (rc != 0) fail_msg("call refused: %s (%s)", engram_err_name(rc), engram_last_error());
  wait_for(c, &r->calls, 1, 30000);
  return r->status;
}

cJSON *J(const char *json) {
  cJSON *v = cJSON_Parse(json);
  if (v == NULL) fail_msg("bad JSON in test: %s", json);
  return v;
}

int s_store(ctx_t *c, const char *key, const char *json, const engram_opts_t *o, result_t *r) {
  cJSON *v = J(json);
  int rc;
  result_reset(r);
  rc = engram_store(c->mgr, key, v, o, capture_cb, r);
  cJSON_Delete(v);
  return finish(c, rc, r);
}

int s_retrieve(ctx_t *c, const char *key, const engram_opts_t *o, result_t *r) {
  result_reset(r);
  return finish(c, engram_retrieve(c->mgr, key, o, capture_cb, r), r);
}

int s_delete(ctx_t *c, const char *key, const engram_opts_t *o, result_t *r) {
  result_reset(r);
  return finish(c, engram_delete(c->mgr, key, o, capture_cb, r), r);
}

int s_exists(ctx_t *c, const char *key, const engram_opts_t *o, result_t *r) {
  result_reset(r);
  return finish(c, engram_exists(c->mgr, key, o, capture_cb, r), r);
}

int s_search(ctx_t *c, const engram_query_t *q, const engram_opts_t *o, result_t *r) {
  result_reset(r);
  return finish(c, engram_search(c->mgr, q, o, capture_cb, r), r);
}

int s_count(ctx_t *c, const engram_query_t *q, const engram_opts_t *o, result_t *r) {
  result_reset(r);
  return finish(c, engram_count(c->mgr, q, o, capture_cb, r), r);
}

int s_list(ctx_t *c, const char *pattern, int limit, const char *cursor, const engram_opts_t *o, result_t *r) {
  char *cur = dup_str(cursor); /* the cursor may point into r itself */
  int rc;
  result_reset(r);
  rc = engram_list_keys(c->mgr, pattern, limit, cur, o, capture_cb, r);
  free(cur);
  return finish(c, rc, r);
}

int s_list_ns(ctx_t *c, int max_depth, int limit, const char *cursor, const engram_opts_t *o, result_t *r) {
  char *cur = dup_str(cursor);
  int rc;
  result_reset(r);
  rc = engram_list_namespaces(c->mgr, max_depth, limit, cur, o, capture_cb, r);
  free(cur);
  return finish(c, rc, r);
}

int s_clear(ctx_t *c, const engram_opts_t *o, result_t *r) {
  result_reset(r);
  return finish(c, engram_clear(c->mgr, o, capture_cb, r), r);
}

int s_info(ctx_t *c, const engram_opts_t *o, result_t *r) {
  result_reset(r);
  return finish(c, engram_info(c->mgr, o, capture_cb, r), r);
}

void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0) {
  }
}

const char *unique_name(const char *prefix) {
  static char buf[128];
  static unsigned counter;
  snprintf(buf, sizeof buf, "%s_%d_%u", prefix, (int)getpid(), ++counter);
  return buf;
}
