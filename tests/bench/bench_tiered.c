/*
 * bench_tiered.c — the tiered source side by side with its tiers alone (issue 13's speed targets): one manager
 * holds a cache on its own ("cache"), and tiered(cache, sqlite) ("t" over "c" and "d", SQLite on a file in a
 * temporary directory, synchronous=NORMAL) next to that SQLite source alone ("sqlite").
 *
 *  1. hot-key retrieve: N retrieves of one key with 256 in flight, through "t" (served by its cache tier)
 *     against the cache alone — the target is ≥ 0.9 × the cache;
 *  2. store: N stores of distinct keys with 1,000 in flight, through "t" (SQLite first, then the copy into the
 *     cache) against the SQLite source alone — the target is ≥ 0.9 × SQLite.
 *     Both compare in rounds (rounds_run): one run of each side a round, $BENCH_TIERED_ROUNDS rounds (default 5),
 *     the order alternating from round to round, and each row is the round whose ratio is the median — its rates,
 *     CPU times and ratio all from two back-to-back runs. Stores write fresh keys each round (the same keys on both
 *     sides). Before, the baseline ran first in every round and the row paired the median of each side, which
 *     could come from different rounds (on a shared machine a burst of other work then decided the ratio); and
 *     whatever one phase leaves behind (SQLite's checkpointer finishing a pass — ~3 ms of CPU after 100,000
 *     stores — and the kernel writing back the file's pages) always fell on the side that ran second.
 *     $BENCH_TIERED_ORDER=base or engram puts one side first in every round (diagnosis);
 * N defaults to 300,000 reads and 100,000 stores ($BENCH_TIERED_N scales both; BENCH_SCALE too).
 * $BENCH_TIERED_PHASE (cache-read, tiered-read, sqlite-store or tiered-store) runs that one phase alone, for an
 * instruction count per call under callgrind (two runs of different N: the difference over the difference of N);
 * a store phase also notes the CPU time a store (the whole process) and SQLite's commits (stores a commit).
 *  3. invalidation delay (coherence across processes, docs/tiered.md): two managers on one loop stand for two
 *     processes over one PostgreSQL server (then one Redis server), each with its own source instance and
 *     connections, A's on the main thread's loop and B's on a thread of its own. B holds tiered(cache, X) with its channel up; for each sample B's cache tier holds the key,
 *     A stores the key (X alone), and the delay is from A's acknowledgement to the key's removal from B's cache
 *     tier (B's cache announces ENGRAM_EVENT_DELETED: the figure includes that event's delivery, one loop turn).
 *     A removal seen before the acknowledgement counts as 0. p50 and p99 of $BENCH_COHERENCE_N samples (default
 *     2,000), one at a time. Section "coherence" (BENCH_ONLY).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/benchlib.h"
#include "engram/events.h"
#if ENGRAM_WITH_POSTGRES
#include "support/pg_server.h"
#endif
#if ENGRAM_WITH_REDIS
#include "support/redis_server.h"
#endif

typedef struct {
  engram_manager_t *mgr;
  const char *source;
  long base;
  cJSON *value;
} tctx_t;

static int submit_hot(bl_drv_t *d, long i, void *token) {
  tctx_t *c = d->ctx;
  engram_opts_t o = {0};
  (void)i;
  o.source = c->source;
  return engram_retrieve(c->mgr, "hot", &o, bl_engram_cb, token);
}

static int submit_store(bl_drv_t *d, long i, void *token) {
  tctx_t *c = d->ctx;
  engram_opts_t o = {0};
  char key[64];
  o.source = c->source;
  snprintf(key, sizeof key, "k%ld", c->base + i);
  return engram_store(c->mgr, key, c->value, &o, bl_engram_cb, token);
}

typedef struct {
  const char *source;
  const cJSON *value;
} store_arg_t;

static int store_hot(engram_manager_t *mgr, void *arg, engram_cb cb, void *ud) {
  store_arg_t *a = arg;
  engram_opts_t o = {0};
  o.source = a->source;
  return engram_store(mgr, "hot", a->value, &o, cb, ud);
}

/* ---- Invalidation delay ---- */

#if ENGRAM_WITH_POSTGRES || ENGRAM_WITH_REDIS

/* A's manager runs on the main thread's loop, B's on a thread of its own (as another process would, B's loop
 * wakes up for the notification by itself); flags set on B's thread are read with atomics. */
typedef struct {
  engram_manager_t *a, *b;
  char key[32];
  uint64_t ack_ns, gone_ns;
  int acked, gone, ended, failed;
} coh_t;

static void coh_event(int status, const engram_event_t *ev, void *ud) {
  coh_t *c = ud;
  (void)status;
  if (ev->kind == ENGRAM_EVENT_END) {
    __atomic_store_n(&c->ended, 1, __ATOMIC_RELEASE);
  } else if (ev->kind == ENGRAM_EVENT_DELETED && ev->key != NULL && strcmp(ev->key, c->key) == 0 &&
             !__atomic_load_n(&c->gone, __ATOMIC_ACQUIRE)) {
    c->gone_ns = uv_hrtime();
    __atomic_store_n(&c->gone, 1, __ATOMIC_RELEASE);
  }
}

static void coh_acked(int status, const engram_reply_t *reply, void *ud) {
  coh_t *c = ud;
  (void)reply;
  c->ack_ns = uv_hrtime();
  if (status != 0) c->failed = 1;
  c->acked = 1;
}

/* A call's end as a flag (1 = success, -1 = failure), set on whichever thread answers. */
static void coh_flag(int status, const engram_reply_t *reply, void *ud) {
  (void)reply;
  __atomic_store_n((int *)ud, status == 0 ? 1 : -1, __ATOMIC_RELEASE);
}

static int cmp_double(const void *x, const void *y) {
  double a = *(const double *)x, b = *(const double *)y;
  return a < b ? -1 : a > b;
}

/* Waits for a flag set on A's loop (runs it), or on B's thread (loop NULL: polls); dies after 30 s. */
static void wait_flag(uv_loop_t *loop, const int *flag, const char *what) {
  uint64_t end = uv_hrtime() + 30000000000ull;
  while (!__atomic_load_n(flag, __ATOMIC_ACQUIRE)) {
    if (loop != NULL) uv_run(loop, UV_RUN_ONCE);
    else usleep(20);
    if (uv_hrtime() > end) bl_die("coherence: %s did not happen within 30 s", what);
  }
}

/* Whether B's tiered source says its channel is up (info field "coherence"). */
static void coh_info(int status, const engram_reply_t *reply, void *ud) {
  const char *v = status == 0 && reply->info ? cJSON_GetStringValue(cJSON_GetObjectItem(reply->info, "coherence")) : NULL;
  __atomic_store_n((int *)ud, v != NULL && strcmp(v, "up") == 0 ? 2 : 1, __ATOMIC_RELEASE);
}

static int coh_up(engram_manager_t *mgr) {
  engram_opts_t o = {0};
  int st = 0;
  o.source = "t";
  if (engram_info(mgr, &o, coh_info, &st) != 0) return 0;
  wait_flag(NULL, &st, "info");
  return st == 2;
}

static void coherence_delay(uv_loop_t *loop, const char *name, const engram_source_vtable_t *vt, const char *opts) {
  coh_t c;
  engram_subscribe_opts_t so;
  engram_subscription_t *sub = NULL;
  engram_opts_t oa = {0}, ob = {0};
  long n = bl_env_long("BENCH_COHERENCE_N", bl_scaled(2000)), i, early = 0;
  double *delay = malloc((size_t)n * sizeof *delay), mean = 0;
  cJSON *v = cJSON_Parse("{\"text\": \"a memory the agent keeps\"}");
  uint64_t end;
  char metric[96];
  if (delay == NULL || v == NULL) bl_die("out of memory");
  memset(&c, 0, sizeof c);
  c.a = bl_manager(loop);
  c.b = bl_manager(NULL);
  bl_add_source(c.a, loop, "d", vt, opts);
  bl_add_source(c.b, NULL, "c", &engram_source_cache, NULL);
  bl_add_source(c.b, NULL, "d", vt, opts);
  bl_add_source(c.b, NULL, "t", &engram_source_tiered, "{\"tiers\": [\"c\", \"d\"], \"coherence\": \"notify\"}");
  end = uv_hrtime() + 30000000000ull;
  while (!coh_up(c.b)) {
    if (uv_hrtime() > end) bl_die("coherence: %s: the channel did not come up within 30 s", name);
    usleep(1000);
  }
  memset(&so, 0, sizeof so);
  so.source = "c";
  so.kinds = ENGRAM_EVENT_DELETED;
  if (engram_events_subscribe(c.b, &so, coh_event, &c, &sub) != 0) bl_die("coherence: subscribe failed");
  oa.source = "d";
  ob.source = "c";
  for (i = 0; i < n; i++) {
    int put = 0;
    snprintf(c.key, sizeof c.key, "inv%ld", i % 100);
    __atomic_store_n(&c.gone, 0, __ATOMIC_RELEASE);
    if (engram_store(c.b, c.key, v, &ob, coh_flag, &put) != 0) bl_die("coherence: store into B's cache refused");
    wait_flag(NULL, &put, "the store into B's cache");
    if (put < 0) bl_die("coherence: store into B's cache failed");
    c.acked = 0;
    if (engram_store(c.a, c.key, v, &oa, coh_acked, &c) != 0) bl_die("coherence: store by A refused");
    wait_flag(loop, &c.acked, "A's store");
    if (c.failed) bl_die("coherence: A's store failed");
    wait_flag(NULL, &c.gone, "the removal from B's cache tier");
    if (c.gone_ns < c.ack_ns) {
      early++;
      delay[i] = 0;
    } else {
      delay[i] = (double)(c.gone_ns - c.ack_ns) / 1e3;
    }
    mean += delay[i] / (double)n;
  }
  qsort(delay, (size_t)n, sizeof *delay, cmp_double);
  bl_note("%s: %ld samples, %ld removals seen before A's acknowledgement (counted as 0), mean %.1f us", name, n, early,
          mean);
  snprintf(metric, sizeof metric, "%s invalidation delay p50", name);
  bl_result("tiered", metric, delay[n / 2], NAN, "us");
  snprintf(metric, sizeof metric, "%s invalidation delay p99", name);
  bl_result("tiered", metric, delay[(size_t)((double)n * 0.99)], NAN, "us");
  engram_events_unsubscribe(sub);
  wait_flag(NULL, &c.ended, "the subscription's end");
  free(delay);
  cJSON_Delete(v);
  bl_close_manager(c.a, loop);
  bl_close_manager(c.b, NULL);
}

#endif

static void coherence_section(uv_loop_t *loop) {
  char opts[512];
  (void)opts;
  (void)loop;
  bl_section("invalidation delay: write acknowledged in A -> key gone from B's cache tier (tiered(cache, X))");
#if ENGRAM_WITH_POSTGRES
  if (pg_server_start() != 0) bl_die("could not start PostgreSQL");
  snprintf(opts, sizeof opts, "{\"conninfo\": \"%s\", \"table\": \"bench_coh\"}", pg_server_conninfo());
  coherence_delay(loop, "postgres", &engram_source_postgres, opts);
  pg_server_stop();
#endif
#if ENGRAM_WITH_REDIS
  if (redis_server_start(0) <= 0) bl_die("could not start redis-server");
  snprintf(opts, sizeof opts, "{\"host\": \"127.0.0.1\", \"port\": %d, \"prefix\": \"bench_coh:\"}",
           redis_server_port());
  coherence_delay(loop, "redis", &engram_source_redis, opts);
  redis_server_stop();
#endif
}

/* One side of a comparison: the source, its label, the call, the window, fresh keys each round. */
typedef struct {
  const char *source, *label;
  bl_submit_fn submit;
  long window;
  int fresh_keys;
} side_t;

/* One round: each side's calls/s and CPU time a call (us, the whole process), and their ratio (side 1 / side 0). */
typedef struct {
  double rate[2], cpu[2], ratio;
} round_t;

static int cmp_round(const void *x, const void *y) {
  double a = ((const round_t *)x)->ratio, b = ((const round_t *)y)->ratio;
  return a < b ? -1 : a > b;
}

/* Runs the two sides `rounds` times, n calls each, and sets *med to the round whose ratio is the median (with an
 * even number of rounds, the lower of the two middle ones): its figures are the row, so the rates, the CPU times
 * and the ratio reported all come from one round, where both sides ran back to back. The order alternates from
 * one round to the next (side 0 first in rounds 1, 3, 5, ...; side 1 first in 2, 4, ...; $BENCH_TIERED_ORDER=base
 * or engram puts one side first in every round, for diagnosis): whatever one phase leaves behind for the next —
 * SQLite's checkpointer still copying the WAL of the phase just ended, the kernel writing back its dirty pages,
 * a heap grown by it — then falls on each side equally often, instead of always on the side that runs second.
 * Stores write keys k*n.. in round k on both sides, so both meet a database of the same size; and each tiered
 * store run starts with its cache tier emptied (untimed), so every round meets the same state there too — a cache
 * tier grown by the rounds before made the later tiered rounds dearer (CPU a store 9-10 us in round 1, 11-14 us in
 * round 5: docs/tiered.md, Costs), which measured the rounds' order, not the store. Every timed tiered store still
 * writes its copy into the cache tier. $BENCH_TIERED_KEEP_CACHE=1 keeps the cache tier across rounds. */
/* Empties the tiered source's cache tier "c" (untimed, directly through the tier). */
static int clear_tier(engram_manager_t *mgr, void *arg, engram_cb cb, void *ud) {
  engram_opts_t o = {0};
  (void)arg;
  o.source = "c";
  o.flags = ENGRAM_OPT_CONFIRM;
  return engram_clear(mgr, &o, cb, ud);
}

/* One timed run of side s: n calls; before a store run through the tiered source its cache tier is emptied
 * (untimed) unless $BENCH_TIERED_KEEP_CACHE=1 — see rounds_run. */
static double side_run(tctx_t *c, uv_loop_t *loop, const side_t *s, long base, long n, bl_drv_t *d) {
  double r;
  c->source = s->source;
  c->base = base;
  if (s->fresh_keys && strcmp(s->source, "t") == 0 && bl_env_long("BENCH_TIERED_KEEP_CACHE", 0) == 0 &&
      bl_sync(c->mgr, loop, clear_tier, NULL) != 0)
    bl_die("clear of the cache tier failed");
  r = bl_closed_loop(d, loop, s->submit, c, n, s->window);
  bl_check(d, s->label);
  return r;
}

static void rounds_run(tctx_t *c, uv_loop_t *loop, const side_t *side, long n, long rounds, const char *what,
                       round_t *med) {
  const char *order = getenv("BENCH_TIERED_ORDER");
  round_t *r = calloc((size_t)rounds, sizeof *r);
  bl_drv_t d;
  long k;
  int j;
  if (r == NULL) bl_die("out of memory");
  /* An untimed warm-up round first ($BENCH_TIERED_WARMUP=0: none): the first run of a section met a cold process
   * — heap pages touched for the first time, a database file being created — and was the slowest of its section
   * in most runs, whichever side it was. Stores write keys rounds*n.. in it, apart from the timed rounds'. */
  if (bl_env_long("BENCH_TIERED_WARMUP", 1) > 0)
    for (j = 0; j < 2; j++) side_run(c, loop, &side[j], side[j].fresh_keys ? rounds * n : 0, n, &d);
  for (k = 0; k < rounds; k++) {
    int first = order != NULL && strcmp(order, "base") == 0 ? 0 : order != NULL && strcmp(order, "engram") == 0 ? 1 : (int)(k % 2);
    for (j = 0; j < 2; j++) {
      const side_t *s = &side[j == 0 ? first : 1 - first];
      int i = j == 0 ? first : 1 - first;
      r[k].rate[i] = side_run(c, loop, s, s->fresh_keys ? k * n : 0, n, &d);
      r[k].cpu[i] = d.cpu_us;
    }
    r[k].ratio = r[k].rate[1] / r[k].rate[0];
    bl_note("%s round %ld (%s first): %s %.0f/s (%.3f us CPU a call), %s %.0f/s (%.3f us): %.2f", what, k + 1,
            side[first].label, side[0].label, r[k].rate[0], r[k].cpu[0], side[1].label, r[k].rate[1], r[k].cpu[1],
            r[k].ratio);
  }
  qsort(r, (size_t)rounds, sizeof *r, cmp_round);
  *med = r[(rounds - 1) / 2];
  bl_note("%s: the row is the round with the median ratio of %ld (ratios %.2f .. %.2f)", what, rounds, r[0].ratio,
          r[rounds - 1].ratio);
  free(r);
}

/* The SQLite source's group commits so far (info "commits" and "committed_calls"), for one_phase's note. */
typedef struct {
  double commits, calls;
  int done;
} commits_t;

static void on_commits(int status, const engram_reply_t *reply, void *ud) {
  commits_t *k = ud;
  if (status == 0 && reply->info != NULL) {
    k->commits = cJSON_GetNumberValue(cJSON_GetObjectItem(reply->info, "commits"));
    k->calls = cJSON_GetNumberValue(cJSON_GetObjectItem(reply->info, "committed_calls"));
  }
  k->done = 1;
}

static commits_t commits_of(engram_manager_t *mgr, uv_loop_t *loop, const char *source) {
  commits_t k = {0, 0, 0};
  engram_opts_t o = {0};
  o.source = source;
  if (engram_info(mgr, &o, on_commits, &k) != 0) bl_die("info of %s refused", source);
  while (!k.done) uv_run(loop, UV_RUN_ONCE);
  return k;
}

/* $BENCH_TIERED_PHASE: one phase alone (reads of the hot key or stores, through one source). */
static void one_phase(tctx_t *c, uv_loop_t *loop, const char *phase, long n_read, long n_store) {
  bl_drv_t d;
  double r;
  commits_t k0 = {0, 0, 0};
  int read = strcmp(phase, "cache-read") == 0 || strcmp(phase, "tiered-read") == 0;
  const char *sqlite = strcmp(phase, "tiered-store") == 0 ? "d" : "sqlite";
  if (!read && strcmp(phase, "sqlite-store") != 0 && strcmp(phase, "tiered-store") != 0)
    bl_die("BENCH_TIERED_PHASE: must be cache-read, tiered-read, sqlite-store or tiered-store");
  c->source = strncmp(phase, "tiered", 6) == 0 ? "t" : read ? "cache" : "sqlite";
  c->base = 0;
  if (!read) k0 = commits_of(c->mgr, loop, sqlite);
  r = read ? bl_closed_loop(&d, loop, submit_hot, c, n_read, 256) : bl_closed_loop(&d, loop, submit_store, c, n_store, 1000);
  bl_check(&d, phase);
  bl_note("%s alone: %.0f calls/s, %.3f us CPU a call", phase, r, d.cpu_us);
  if (!read) {
    commits_t k1 = commits_of(c->mgr, loop, sqlite);
    bl_note("SQLite (\"%s\"): %.0f commits, %.1f stores a commit", sqlite, k1.commits - k0.commits,
            (k1.calls - k0.calls) / (k1.commits - k0.commits > 0 ? k1.commits - k0.commits : 1));
  }
}

int main(void) {
  uv_loop_t loop;
  tctx_t c;
  store_arg_t sa;
  char opts[512];
  const char *dir = bl_tmpdir();
  long n_read = bl_env_long("BENCH_TIERED_N", bl_scaled(300000)), n_store = n_read / 3;
  round_t med;
  const char *phase = getenv("BENCH_TIERED_PHASE");
  uv_loop_init(&loop);
  memset(&c, 0, sizeof c);
  c.mgr = bl_manager(&loop);
  c.value = cJSON_Parse("{\"text\": \"a memory the agent keeps\", \"n\": 1}");
  if (c.value == NULL) bl_die("out of memory");
  bl_add_source(c.mgr, &loop, "cache", &engram_source_cache, NULL);
  bl_add_source(c.mgr, &loop, "c", &engram_source_cache, NULL);
  snprintf(opts, sizeof opts, "{\"path\": \"%s/tiered.db\", \"synchronous\": \"normal\"}", dir);
  bl_add_source(c.mgr, &loop, "d", &engram_source_sqlite, opts);
  snprintf(opts, sizeof opts, "{\"path\": \"%s/alone.db\", \"synchronous\": \"normal\"}", dir);
  bl_add_source(c.mgr, &loop, "sqlite", &engram_source_sqlite, opts);
  bl_add_source(c.mgr, &loop, "t", &engram_source_tiered, "{\"tiers\": [\"c\", \"d\"]}");

  bl_section("tiered(cache, sqlite) vs its tiers alone (one manager, home loop)");
  bl_note("hot-key retrieve: %ld calls, 256 in flight; store: %ld distinct keys, 1,000 in flight", n_read, n_store);
  sa.value = c.value;
  sa.source = "cache";
  if (bl_sync(c.mgr, &loop, store_hot, &sa) != 0) bl_die("store of the hot key in the cache failed");
  sa.source = "t";
  if (bl_sync(c.mgr, &loop, store_hot, &sa) != 0) bl_die("store of the hot key through the tiered source failed");

  if (phase != NULL) {
    one_phase(&c, &loop, phase, n_read, n_store);
    cJSON_Delete(c.value);
    bl_close_manager(c.mgr, &loop);
    uv_loop_close(&loop);
    return 0;
  }
  {
    long rounds = bl_env_long("BENCH_TIERED_ROUNDS", 5);
    side_t side[2];
    if (rounds < 1) bl_die("BENCH_TIERED_ROUNDS: must be >= 1");
    /* hot-key reads: side 0 the cache alone (the baseline), side 1 the tiered source */
    side[0] = (side_t){"cache", "cache", submit_hot, 256, 0};
    side[1] = (side_t){"t", "tiered", submit_hot, 256, 0};
    rounds_run(&c, &loop, side, n_read, rounds, "hot-key", &med);
    bl_result("tiered", "hot-key retrieve/s (baseline: the cache alone; target >= 0.9)", med.rate[1], med.rate[0],
              "ops/s");
    bl_result("tiered", "hot-key retrieve CPU time per call (baseline: the cache alone)", med.cpu[1], med.cpu[0], "us");
    /* stores of fresh keys: side 0 SQLite alone, side 1 tiered(cache, sqlite) */
    side[0] = (side_t){"sqlite", "sqlite", submit_store, 1000, 1};
    side[1] = (side_t){"t", "tiered", submit_store, 1000, 1};
    rounds_run(&c, &loop, side, n_store, rounds, "store", &med);
    bl_result("tiered", "store/s (baseline: sqlite alone; target >= 0.9)", med.rate[1], med.rate[0], "ops/s");
    bl_result("tiered", "store CPU time per call (baseline: sqlite alone)", med.cpu[1], med.cpu[0], "us");
  }

  cJSON_Delete(c.value);
  bl_close_manager(c.mgr, &loop);
  if (bl_want("coherence")) coherence_section(&loop);
  if (uv_loop_close(&loop) != 0) bl_die("loop not closed");
  return 0;
}
