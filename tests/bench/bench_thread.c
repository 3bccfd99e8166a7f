/*
 * bench_thread.c — conversation threads (include/engram/thread.h) against issue 12's speed targets, each beside
 * the same source's own calls in the same run, on the cache, SQLite (a file, synchronous=NORMAL), Redis and
 * PostgreSQL (servers started here on loopback):
 *
 *  1. appends: N messages, one per engram_thread_append, 256 appends in flight spread over 64 threads (one
 *     thread is a serial point: every append updates its head), and the same N messages in appends of 10;
 *     against N stores of distinct keys with 256 in flight — target: ≥ 200,000 messages/s on the cache, and
 *     ≥ 0.7 × the source's store rate on the others;
 *  2. the window of the newest 50 messages of a 10,000-message thread, one call in flight (p50 of the round
 *     trip), against one retrieve's round trip — targets: ≤ 0.2 ms on the cache, ≤ 1 ms on SQLite, ≤ 2 × one
 *     retrieve on Redis and PostgreSQL; on SQLite, Redis and PostgreSQL twice: read again with its messages in the
 *     process's message cache, and from a second manager without one (every message read and parsed);
 *  3. cache only: resident bytes per message beyond its content — 100,000 messages appended, the growth of the
 *     resident set divided by their number, minus the bytes of each stored message's JSON text — target ≤ 64.
 * N defaults to 100,000 on the cache and 20,000 elsewhere ($BENCH_THREAD_N sets both; BENCH_SCALE scales).
 * $BENCH_ONLY (comma-separated) limits the run, for profiling one part: sections "append", "window", "memory",
 * and sources "cache", "sqlite", "redis", "postgres" (no source named: all of them), e.g. BENCH_ONLY=window,redis;
 * without "append" a source's window part stores only the 1,000 keys its retrieves read.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/benchlib.h"
#include "engram/thread.h"
#include "support/pg_server.h"
#include "support/redis_server.h"

#define THREADS 64
#define WINDOW 256

typedef struct {
  engram_manager_t *mgr;
  const char *source;
  const char *prefix; /* thread ids / keys of this run */
  int per_append;
  cJSON *value;
  engram_message_t msgs[10];
} tctx_t;

/* A part (a section, or a source) runs when $BENCH_ONLY names it, or names none of its group. */
static int want_of(const char *name, const char *const *group) {
  int named = 0;
  for (; *group != NULL; group++) named |= bl_want(*group);
  return bl_want(name) || !named;
}

static int want(const char *section) {
  static const char *const sections[] = {"append", "window", "memory", NULL};
  return want_of(section, sections);
}

static int want_source(const char *source) {
  static const char *const sources[] = {"cache", "sqlite", "redis", "postgres", NULL};
  return want_of(source, sources);
}

static int submit_append(bl_drv_t *d, long i, void *token) {
  tctx_t *c = d->ctx;
  engram_opts_t o = {0};
  char id[64];
  o.source = c->source;
  snprintf(id, sizeof id, "%s%ld", c->prefix, i % THREADS);
  return engram_thread_append(c->mgr, id, c->msgs, (size_t)c->per_append, NULL, &o, bl_engram_cb, token);
}

static int submit_store(bl_drv_t *d, long i, void *token) {
  tctx_t *c = d->ctx;
  engram_opts_t o = {0};
  char key[64];
  o.source = c->source;
  snprintf(key, sizeof key, "%s%ld", c->prefix, i);
  return engram_store(c->mgr, key, c->value, &o, bl_engram_cb, token);
}

static int submit_window(bl_drv_t *d, long i, void *token) {
  tctx_t *c = d->ctx;
  engram_opts_t o = {0};
  engram_window_t w = ENGRAM_WINDOW_INIT;
  (void)i;
  o.source = c->source;
  w.flags = ENGRAM_WINDOW_BY_COUNT;
  w.max_messages = 50;
  return engram_thread_window(c->mgr, "long", &w, &o, bl_engram_cb, token);
}

static int submit_retrieve(bl_drv_t *d, long i, void *token) {
  tctx_t *c = d->ctx;
  engram_opts_t o = {0};
  char key[64];
  o.source = c->source;
  snprintf(key, sizeof key, "%s%ld", c->prefix, i % 1000);
  return engram_retrieve(c->mgr, key, &o, bl_engram_cb, token);
}

typedef struct {
  const engram_message_t *msgs;
  size_t n;
  const char *source;
} append_arg_t;

static int append_long(engram_manager_t *mgr, void *arg, engram_cb cb, void *ud) {
  append_arg_t *a = arg;
  engram_opts_t o = {0};
  o.source = a->source;
  return engram_thread_append(mgr, "long", a->msgs, a->n, NULL, &o, cb, ud);
}

/* The messages of one append: user / assistant turns of about 60 bytes of text. */
static void set_messages(tctx_t *c) {
  static const char *texts[2] = {"What did we decide about the deployment window for Friday?",
                                 "We moved it to Saturday morning, after the database backup."};
  int i;
  for (i = 0; i < 10; i++) {
    memset(&c->msgs[i], 0, sizeof c->msgs[i]);
    c->msgs[i].role = i % 2 ? "assistant" : "user";
    c->msgs[i].content = texts[i % 2];
  }
}

/* Closes mgr (bl_close_manager runs the loop dry, and the bench's own manager lives on it). */
static int close_manager(engram_manager_t *mgr, void *arg, engram_cb cb, void *ud) {
  (void)arg;
  return engram_manager_close(mgr, cb, ud);
}

/* The window rows of one source: p50 of the window against the target (relative: 2 x the retrieve's p50). */
static void window_row(const char *source, const char *how, bl_lat_t win, bl_lat_t ret, double window_target_ms,
                       int relative_window) {
  char title[200];
  if (relative_window) {
    snprintf(title, sizeof title, "%s: window of 50 of 10,000%s, p50 vs 2 x retrieve p50 (target <= 1)", source, how);
    bl_result("thread", title, win.p50_us, 2 * ret.p50_us, "us");
  } else {
    snprintf(title, sizeof title, "%s: window of 50 of 10,000%s, p50 (target <= %.1f ms)", source, how, window_target_ms);
    bl_result("thread", title, win.p50_us, window_target_ms * 1000, "us");
  }
  bl_note("%s%s: window p50 %.1f us, p99 %.1f us; retrieve p50 %.1f us", source, how, win.p50_us, win.p99_us,
          ret.p50_us);
}

static void bench_source(uv_loop_t *loop, engram_manager_t *mgr, const char *source, const engram_source_vtable_t *vt,
                         const char *options, long n, double window_target_ms, int relative_window) {
  tctx_t c;
  bl_drv_t d;
  double store_r, app1, app10;
  bl_lat_t win, ret;
  char prefix[64], title[160];
  long i;
  memset(&c, 0, sizeof c);
  c.mgr = mgr;
  c.source = source;
  c.value = cJSON_Parse("{\"role\": \"user\", \"content\": \"What did we decide about the deployment window?\"}");
  if (c.value == NULL) bl_die("out of memory");
  set_messages(&c);
  snprintf(title, sizeof title, "threads on %s: %ld messages, %d appends in flight over %d threads", source, n, WINDOW,
           THREADS);
  bl_section(title);

  snprintf(prefix, sizeof prefix, "s-");
  c.prefix = prefix;
  if (!want("append")) { /* only the keys the window part's retrieves read */
    bl_closed_loop(&d, loop, submit_store, &c, 1000, WINDOW);
    bl_check(&d, "store");
    goto window;
  }
  store_r = bl_closed_loop(&d, loop, submit_store, &c, n, WINDOW);
  bl_check(&d, "store");
  snprintf(prefix, sizeof prefix, "a1-");
  c.per_append = 1;
  app1 = bl_closed_loop(&d, loop, submit_append, &c, n, WINDOW);
  bl_check(&d, "append of 1");
  snprintf(prefix, sizeof prefix, "a10-");
  c.per_append = 10;
  app10 = 10 * bl_closed_loop(&d, loop, submit_append, &c, n / 10, WINDOW);
  bl_check(&d, "append of 10");
  if (strcmp(source, "cache") == 0) {
    bl_result("thread", "cache: messages/s, 1 per append (target >= 200,000)", app1, 200000, "msg/s");
    bl_result("thread", "cache: messages/s, 10 per append (target >= 200,000)", app10, 200000, "msg/s");
  } else {
    snprintf(title, sizeof title, "%s: messages/s, 1 per append vs store/s (target >= 0.7)", source);
    bl_result("thread", title, app1, store_r, "msg/s");
    snprintf(title, sizeof title, "%s: messages/s, 10 per append vs store/s (target >= 0.7)", source);
    bl_result("thread", title, app10, store_r, "msg/s");
  }

window:
  if (!want("window")) {
    cJSON_Delete(c.value);
    return;
  }
  /* A 10,000-message thread, then its window of the newest 50, one call at a time. */
  {
    static engram_message_t big[1000];
    append_arg_t a;
    int k;
    for (k = 0; k < 1000; k++) big[k] = c.msgs[k % 10];
    a.msgs = big;
    a.n = 1000;
    a.source = source;
    for (i = 0; i < 10; i++)
      if (bl_sync(mgr, loop, append_long, &a) != 0) bl_die("building the long thread on %s failed", source);
  }
  snprintf(prefix, sizeof prefix, "s-");
  win = bl_round_trip(&d, loop, submit_window, &c, n / 20 > 2000 ? 2000 : n / 20);
  bl_check(&d, "window");
  ret = bl_round_trip(&d, loop, submit_retrieve, &c, n / 20 > 2000 ? 2000 : n / 20);
  bl_check(&d, "retrieve");
  if (vt == &engram_source_cache) { /* keeps its items in the process: no message cache (thread_msgcache.h) */
    window_row(source, "", win, ret, window_target_ms, relative_window);
    cJSON_Delete(c.value);
    return;
  }
  /* The same window read again: its messages are in this process's message cache, and a window reads the head
   * and the summary item (an agent reading its context before each model call). Then the same window from a
   * manager without the cache (engram_manager_config_t.message_cache_bytes < 0): every message read and parsed
   * each time, as on a process's first read of a thread. */
  window_row(source, ", messages cached", win, ret, window_target_ms, relative_window);
  {
    engram_manager_config_t cfg;
    engram_manager_t *cold = NULL;
    tctx_t cc = c;
    int rc;
    memset(&cfg, 0, sizeof cfg);
    cfg.message_cache_bytes = -1;
    if ((rc = engram_manager_new(&cold, loop, &cfg)) != 0) bl_die("engram_manager_new: %s", engram_err_name(rc));
    bl_add_source(cold, loop, source, vt, options);
    cc.mgr = cold;
    win = bl_round_trip(&d, loop, submit_window, &cc, n / 20 > 2000 ? 2000 : n / 20);
    bl_check(&d, "window without the message cache");
    ret = bl_round_trip(&d, loop, submit_retrieve, &cc, n / 20 > 2000 ? 2000 : n / 20);
    bl_check(&d, "retrieve");
    window_row(source, ", no message cache", win, ret, window_target_ms, relative_window);
    if (bl_sync(cold, loop, close_manager, NULL) != 0) bl_die("closing the manager without a message cache failed");
  }
  cJSON_Delete(c.value);
}

/* Resident bytes per cached message beyond its content. */
static void bench_memory(uv_loop_t *loop, engram_manager_t *mgr) {
  tctx_t c;
  bl_drv_t d;
  long n = bl_scaled(100000);
  size_t rss0, rss1;
  double content = 0;
  cJSON *m;
  char *text;
  memset(&c, 0, sizeof c);
  c.mgr = mgr;
  c.source = "mem";
  c.prefix = "m-";
  c.per_append = 10;
  set_messages(&c);
  /* the stored JSON of a message: {"seq", "role", "content", "created_at_ms"} */
  m = cJSON_CreateObject();
  cJSON_AddNumberToObject(m, "seq", 12345);
  cJSON_AddStringToObject(m, "role", "assistant");
  cJSON_AddStringToObject(m, "content", c.msgs[1].content);
  cJSON_AddNumberToObject(m, "created_at_ms", 1765000000000.0);
  text = cJSON_PrintUnformatted(m);
  content = (double)strlen(text);
  free(text);
  cJSON_Delete(m);
  bl_section("threads on the cache: resident memory per message");
  rss0 = bl_rss_bytes();
  bl_closed_loop(&d, loop, submit_append, &c, n / 10, WINDOW);
  bl_check(&d, "append for memory");
  rss1 = bl_rss_bytes();
  bl_note("%ld messages over %d threads: resident +%.1f MiB; a message's JSON is %.0f bytes", n, THREADS,
          (double)(rss1 - rss0) / 1048576.0, content);
  bl_result("thread", "cache: resident bytes per message beyond its JSON (target <= 64)",
            (double)(rss1 - rss0) / (double)n - content, 64, "bytes");
}

int main(void) {
  uv_loop_t loop;
  engram_manager_t *mgr;
  char opts[512];
  long n = bl_env_long("BENCH_THREAD_N", 0);
  uv_loop_init(&loop);
  mgr = bl_manager(&loop);
  bl_add_source(mgr, &loop, "cache", &engram_source_cache, NULL);
  bl_add_source(mgr, &loop, "mem", &engram_source_cache, NULL);
  snprintf(opts, sizeof opts, "{\"path\": \"%s/threads.db\", \"synchronous\": \"normal\"}", bl_tmpdir());
  bl_add_source(mgr, &loop, "sqlite", &engram_source_sqlite, opts);
  if (want("memory")) bench_memory(&loop, mgr);
  if (want_source("cache")) bench_source(&loop, mgr, "cache", &engram_source_cache, NULL, n ? n : bl_scaled(100000), 0.2, 0);
  if (want_source("sqlite"))
    bench_source(&loop, mgr, "sqlite", &engram_source_sqlite, opts, n ? n : bl_scaled(20000), 1.0, 0);
#if ENGRAM_WITH_REDIS
  if (want_source("redis")) {
    int port = redis_server_start(0);
    if (port < 0) bl_die("could not start redis-server");
    snprintf(opts, sizeof opts, "{\"url\": \"redis://127.0.0.1:%d\", \"prefix\": \"bt:\"}", port);
    bl_add_source(mgr, &loop, "redis", &engram_source_redis, opts);
    bench_source(&loop, mgr, "redis", &engram_source_redis, opts, n ? n : bl_scaled(20000), 0, 1);
  }
#endif
#if ENGRAM_WITH_POSTGRES
  if (want_source("postgres")) {
    if (pg_server_start() != 0) bl_die("could not start PostgreSQL");
    snprintf(opts, sizeof opts, "{\"conninfo\": \"%s\", \"table\": \"bench_threads\"}", pg_server_conninfo());
    bl_add_source(mgr, &loop, "postgres", &engram_source_postgres, opts);
    bench_source(&loop, mgr, "postgres", &engram_source_postgres, opts, n ? n : bl_scaled(20000), 0, 1);
  }
#endif
  bl_close_manager(mgr, &loop);
  if (uv_loop_close(&loop) != 0) bl_die("loop not closed");
#if ENGRAM_WITH_REDIS
  if (want_source("redis")) redis_server_stop();
#endif
#if ENGRAM_WITH_POSTGRES
  if (want_source("postgres")) pg_server_stop();
#endif
  return 0;
}
