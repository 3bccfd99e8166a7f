/*
 * benchlib.c — the shared benchmark machinery declared in benchlib.h: result rows and JSON lines, the closed-loop,
 * round-trip, open-loop (Poisson arrivals timed from their intended start) and paced drivers, engram manager
 * helpers, the Debian corpus reader and the known-item sample, RSS, and temporary directories cleaned up at exit.
 */
#include "benchlib.h"

#include <errno.h>
#include <math.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "engram/source.h"

double bl_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

long bl_env_long(const char *name, long def) {
  const char *v = getenv(name);
  char *end;
  long n;
  if (v == NULL || *v == '\0') return def;
  n = strtol(v, &end, 10);
  return (*end == '\0') ? n : def;
}

long bl_scaled(long n) {
  const char *v = getenv("BENCH_SCALE");
  double s = v && *v ? atof(v) : 1.0;
  long r = (long)((double)n * (s > 0 ? s : 1.0));
  return r < 1 ? 1 : r;
}

int bl_want(const char *name) {
  const char *only = getenv("BENCH_ONLY"), *p;
  size_t n = strlen(name);
  if (only == NULL || *only == '\0') return 1;
  for (p = only; (p = strstr(p, name)) != NULL; p += n)
    if ((p == only || p[-1] == ',') && (p[n] == '\0' || p[n] == ',')) return 1;
  return 0;
}

/* ---- Output ---- */

static FILE *results_file(void) {
  static FILE *f;
  static int tried;
  const char *path;
  if (tried) return f;
  tried = 1;
  path = getenv("BENCH_RESULTS");
  if (path == NULL || *path == '\0') {
    mkdir("build", 0755);
    mkdir("build/bench", 0755);
    path = "build/bench/results.jsonl";
  }
  f = fopen(path, "a");
  if (f == NULL) fprintf(stderr, "bench: cannot write %s: %s\n", path, strerror(errno));
  return f;
}

void bl_section(const char *title) {
  printf("\n== %s\n", title);
  printf("   %-46s %14s %14s %7s  %s\n", "metric", "engram", "baseline", "ratio", "unit");
  fflush(stdout);
}

static void fmt_num(char *buf, size_t n, double v) {
  if (isnan(v)) snprintf(buf, n, "-");
  else if (fabs(v) >= 1000) snprintf(buf, n, "%.0f", v);
  else if (fabs(v) >= 10) snprintf(buf, n, "%.1f", v);
  else snprintf(buf, n, "%.3f", v);
}

void bl_result(const char *bench, const char *metric, double engram, double baseline, const char *unit) {
  FILE *f = results_file();
  char e[32], b[32], r[32];
  int has_base = !(isnan(baseline) || baseline < 0);
  double ratio = has_base && baseline != 0 ? engram / baseline : NAN;
  fmt_num(e, sizeof e, engram);
  fmt_num(b, sizeof b, has_base ? baseline : NAN);
  if (isnan(ratio)) snprintf(r, sizeof r, "-");
  else snprintf(r, sizeof r, "%.2f", ratio);
  printf("   %-46s %14s %14s %7s  %s\n", metric, e, b, r, unit);
  fflush(stdout);
  if (f != NULL) {
    fprintf(f, "{\"bench\": \"%s\", \"metric\": \"%s\", \"engram\": %.10g, \"baseline\": ", bench, metric, engram);
    if (has_base) fprintf(f, "%.10g, \"ratio\": ", baseline);
    else fprintf(f, "null, \"ratio\": ");
    if (isnan(ratio)) fprintf(f, "null");
    else fprintf(f, "%.4f", ratio);
    fprintf(f, ", \"unit\": \"%s\"}\n", unit);
    fflush(f);
  }
}

void bl_note(const char *fmt, ...) {
  va_list ap;
  printf("   # ");
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  printf("\n");
  fflush(stdout);
}

void bl_die(const char *fmt, ...) {
  va_list ap;
  fflush(stdout);
  fprintf(stderr, "bench: ");
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\n");
  exit(1);
}

double bl_cpu_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
         (double)ru.ru_stime.tv_usec / 1e6;
}

/* ---- Drivers ---- */

static void record_failure(bl_drv_t *d, int status, const char *msg) {
  if (d->errors++ == 0) {
    d->first_status = status;
    snprintf(d->first_msg, sizeof d->first_msg, "%s", msg ? msg : "");
  }
}

/* Starts the next call in slot s, and, when calls complete inside their own submission (a synchronous baseline),
 * the next ones in their slots from here rather than by recursion. */
static void closed_next(bl_drv_t *d, bl_slot_t *s) {
  int rc;
  if (d->in_submit) {
    d->ready[d->n_ready++] = s;
    return;
  }
  d->in_submit = 1;
  while (s != NULL) {
    if (d->sent < d->n) {
      s->i = d->base + d->sent++;
      s->t0 = d->hist != NULL ? uv_hrtime() : 0;
      rc = d->submit(d, s->i, s);
      if (rc != 0) {
        record_failure(d, rc, engram_last_error());
        d->done++; /* the call never started: count it so the run ends, and give its slot to the next one */
        continue;
      }
    }
    s = d->n_ready > 0 ? d->ready[--d->n_ready] : NULL;
  }
  d->in_submit = 0;
}

void bl_complete(void *token, int status, const char *msg) {
  bl_slot_t *s = token;
  bl_drv_t *d = s->d;
  if (status != 0) record_failure(d, status, msg);
  d->done++;
  if (d->sched != NULL) { /* open loop: from the intended start */
    uint64_t now = uv_hrtime(), ns = now - s->t0;
    d->last_done_ns = now;
    if (status != 0) return;
    bl_hdr_add(d->hist, ns);
    if (s->i < d->fifth) bl_hdr_add(d->hist_first, ns);
    else if (s->i >= d->n - d->fifth) bl_hdr_add(d->hist_last, ns);
    return;
  }
  if (d->lat != NULL) {
    d->lat[d->n_lat++] = uv_hrtime() - s->t0;
    return;
  }
  if (d->hist != NULL && status == 0) bl_hdr_add(d->hist, uv_hrtime() - s->t0);
  if (d->sent < d->n) closed_next(d, s);
}

void bl_engram_cb(int status, const engram_reply_t *reply, void *ud) { bl_complete(ud, status, reply->message); }

void bl_engram_cb_found_ok(int status, const engram_reply_t *reply, void *ud) {
  bl_complete(ud, status == ENGRAM_ENOTFOUND ? 0 : status, reply->message);
}

static double closed_run(bl_drv_t *d, uv_loop_t *loop, bl_submit_fn submit, void *ctx, long n, long window,
                         bl_hdr_t *hist, long base) {
  long i, w = window < n ? window : n;
  double t0, cpu0;
  memset(d, 0, sizeof *d);
  d->base = base;
  d->loop = loop;
  d->submit = submit;
  d->ctx = ctx;
  d->n = n;
  d->window = w;
  d->hist = hist;
  if ((d->slots = calloc((size_t)w, sizeof *d->slots)) == NULL || (d->ready = calloc((size_t)w, sizeof *d->ready)) == NULL)
    bl_die("out of memory");
  for (i = 0; i < w; i++) d->slots[i].d = d;
  cpu0 = bl_cpu_s();
  t0 = bl_now();
  for (i = 0; i < w; i++) closed_next(d, &d->slots[i]);
  while (d->done < d->n) uv_run(loop, UV_RUN_ONCE);
  t0 = bl_now() - t0;
  d->cpu_us = (bl_cpu_s() - cpu0) / (double)n * 1e6;
  free(d->slots);
  free(d->ready);
  d->slots = NULL;
  d->ready = NULL;
  return (double)n / t0;
}

double bl_closed_loop(bl_drv_t *d, uv_loop_t *loop, bl_submit_fn submit, void *ctx, long n, long window) {
  return closed_run(d, loop, submit, ctx, n, window, NULL, 0);
}

bl_lat_t bl_round_trip(bl_drv_t *d, uv_loop_t *loop, bl_submit_fn submit, void *ctx, long n) {
  bl_hdr_t *h = malloc(sizeof *h);
  bl_lat_t out;
  memset(&out, 0, sizeof out);
  if (h == NULL) bl_die("out of memory");
  bl_hdr_reset(h);
  out.achieved = closed_run(d, loop, submit, ctx, n, 1, h, 0);
  out.cpu_us = d->cpu_us;
  out.p50_us = bl_hdr_quantile(h, 0.50) / 1e3;
  out.p99_us = bl_hdr_quantile(h, 0.99) / 1e3;
  out.p999_us = bl_hdr_quantile(h, 0.999) / 1e3;
  out.max_us = bl_hdr_quantile(h, 1) / 1e3;
  out.mean_us = bl_hdr_mean(h) / 1e3;
  out.calls = (long)h->total;
  out.errors = d->errors;
  free(h);
  d->hist = NULL;
  return out;
}

/* Round trips of several sides in alternating blocks, so that what the machine or a server does meanwhile (a
 * checkpoint, the writeback of an earlier phase, another process) falls on every side alike: block b of every side
 * runs calls b*B .. b*B+B-1 (the same key indices on every side), and which side goes first rotates. */
void bl_round_trips(bl_drv_t *d, uv_loop_t *loop, bl_rt_side_t *sides, int k, long n) {
  long block = bl_env_long("BENCH_RT_BLOCK", 100), done, b;
  bl_hdr_t *h = malloc((size_t)k * sizeof *h);
  double *secs = calloc((size_t)k, sizeof *secs), *cpu = calloc((size_t)k, sizeof *cpu);
  int j;
  if (h == NULL || secs == NULL || cpu == NULL) bl_die("out of memory");
  if (block < 1) block = 1;
  for (j = 0; j < k; j++) bl_hdr_reset(&h[j]);
  for (done = 0, b = 0; done < n; done += block, b++) {
    long m = n - done < block ? n - done : block;
    int t;
    for (t = 0; t < k; t++) {
      int s = (int)((b + t) % k);
      double rate;
      if (!sides[s].on) continue;
      rate = closed_run(d, loop, sides[s].submit, sides[s].ctx, m, 1, &h[s], done);
      if (d->errors) bl_die("%s: %ld calls failed; first: %s (%d) %s", sides[s].what, d->errors,
                            engram_err_name(d->first_status), d->first_status, d->first_msg);
      secs[s] += rate > 0 ? (double)m / rate : 0;
      cpu[s] += d->cpu_us * (double)m;
    }
  }
  for (j = 0; j < k; j++) {
    bl_lat_t *o = &sides[j].out;
    memset(o, 0, sizeof *o);
    if (!sides[j].on) continue;
    o->achieved = secs[j] > 0 ? (double)n / secs[j] : 0;
    o->cpu_us = cpu[j] / (double)n;
    o->p50_us = bl_hdr_quantile(&h[j], 0.50) / 1e3;
    o->p99_us = bl_hdr_quantile(&h[j], 0.99) / 1e3;
    o->p999_us = bl_hdr_quantile(&h[j], 0.999) / 1e3;
    o->max_us = bl_hdr_quantile(&h[j], 1) / 1e3;
    o->mean_us = bl_hdr_mean(&h[j]) / 1e3;
    o->calls = (long)h[j].total;
  }
  d->hist = NULL;
  free(h);
  free(secs);
  free(cpu);
}

static void on_pace(uv_timer_t *t) {
  bl_drv_t *d = t->data;
  double elapsed = (double)(uv_hrtime() - d->start_ns) / 1e9;
  long due = (long)(elapsed * d->rate) + 1;
  if (due > d->n) due = d->n;
  while (d->sent < due) {
    bl_slot_t *s = &d->slots[d->sent];
    int rc;
    s->d = d;
    s->i = d->sent++;
    s->t0 = uv_hrtime();
    rc = d->submit(d, s->i, s);
    if (rc != 0) {
      record_failure(d, rc, engram_last_error());
      d->done++;
    }
  }
  if (d->tick_end) d->tick_end(d);
  if (d->sent >= d->n) {
    uv_timer_stop(t);
    d->timer_on = 0;
    uv_stop(t->loop); /* UV_RUN_ONCE ran this tick before its poll: without it, poll waits forever when the calls
                       * completed synchronously (raw baselines) and nothing else will wake the loop */
  }
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return (x > y) - (x < y);
}

static double pct(const uint64_t *v, long n, double p) {
  long k;
  if (n == 0) return NAN;
  k = (long)ceil(p * (double)n) - 1;
  if (k < 0) k = 0;
  if (k >= n) k = n - 1;
  return (double)v[k] / 1e3;
}


bl_lat_t bl_paced(bl_drv_t *d, uv_loop_t *loop, bl_submit_fn submit, void *ctx, double rate, double seconds) {
  bl_lat_t out;
  double cpu0 = bl_cpu_s();
  void (*tick_end)(bl_drv_t *) = d->tick_end;
  long n = (long)(rate * seconds);
  double t0;
  if (n < 1) n = 1;
  memset(d, 0, sizeof *d);
  memset(&out, 0, sizeof out);
  d->tick_end = tick_end;
  d->loop = loop;
  d->submit = submit;
  d->ctx = ctx;
  d->n = n;
  d->rate = rate;
  d->slots = calloc((size_t)n, sizeof *d->slots);
  d->lat = calloc((size_t)n, sizeof *d->lat);
  if (d->slots == NULL || d->lat == NULL) bl_die("out of memory");
  uv_timer_init(loop, &d->timer);
  d->timer.data = d;
  d->start_ns = uv_hrtime();
  t0 = bl_now();
  uv_timer_start(&d->timer, on_pace, 0, 1);
  d->timer_on = 1;
  while (d->done < d->n || d->timer_on) uv_run(loop, UV_RUN_ONCE);
  out.achieved = (double)d->done / (bl_now() - t0);
  out.offered = rate;
  out.cpu_us = (bl_cpu_s() - cpu0) / (double)(d->done ? d->done : 1) * 1e6;
  uv_close((uv_handle_t *)&d->timer, NULL);
  uv_run(loop, UV_RUN_NOWAIT);
  if (d->n_lat >= 50) { /* the median of the first and of the last fifth of the calls, in completion order */
    long fifth = d->n_lat / 5;
    uint64_t *tmp = malloc((size_t)fifth * sizeof *tmp);
    if (tmp == NULL) bl_die("out of memory");
    memcpy(tmp, d->lat, (size_t)fifth * sizeof *tmp);
    qsort(tmp, (size_t)fifth, sizeof *tmp, cmp_u64);
    out.p50_first_us = pct(tmp, fifth, 0.5);
    memcpy(tmp, d->lat + d->n_lat - fifth, (size_t)fifth * sizeof *tmp);
    qsort(tmp, (size_t)fifth, sizeof *tmp, cmp_u64);
    out.p50_last_us = pct(tmp, fifth, 0.5);
    free(tmp);
  }
  qsort(d->lat, (size_t)d->n_lat, sizeof *d->lat, cmp_u64);
  out.p50_us = pct(d->lat, d->n_lat, 0.50);
  out.p99_us = pct(d->lat, d->n_lat, 0.99);
  out.p999_us = pct(d->lat, d->n_lat, 0.999);
  out.calls = d->n_lat;
  out.errors = d->errors;
  free(d->slots);
  free(d->lat);
  d->slots = NULL;
  d->lat = NULL;
  return out;
}

int bl_saturated(const bl_lat_t *l, double rate) {
  return l->errors > 0 || l->achieved < 0.95 * rate || (l->p50_last_us > 2 * l->p50_first_us && l->p50_last_us > 1000);
}

bl_lat_t bl_paced_engram(bl_drv_t *d, uv_loop_t *loop, bl_submit_fn submit, void *ctx, double *rate, double seconds) {
  bl_lat_t l;
  int tries = 0;
  void (*tick_end)(bl_drv_t *) = d->tick_end;
  for (;;) {
    memset(d, 0, sizeof *d);
    d->tick_end = tick_end;
    l = bl_paced(d, loop, submit, ctx, *rate, seconds);
    if (!bl_saturated(&l, *rate) || ++tries > 2) return l;
    bl_note("%.0f/s saturated engram in this run (%.0f/s completed, %ld refused, median latency %.0f us in the first"
            " fifth, %.0f us in the last): offering %.0f/s", *rate, l.achieved, l.errors, l.p50_first_us, l.p50_last_us,
            *rate / 2);
    *rate /= 2;
  }
}

void bl_result_latency(const char *bench, const bl_lat_t *eng, const bl_lat_t *base, double rate) {
  char m[96];
  snprintf(m, sizeof m, "latency p50 @ %.0f/s", rate);
  bl_result(bench, m, eng->p50_us, base ? base->p50_us : NAN, "us");
  snprintf(m, sizeof m, "latency p99 @ %.0f/s", rate);
  bl_result(bench, m, eng->p99_us, base ? base->p99_us : NAN, "us");
  snprintf(m, sizeof m, "latency p999 @ %.0f/s", rate);
  bl_result(bench, m, eng->p999_us, base ? base->p999_us : NAN, "us");
  if (eng->errors)
    bl_note("engram refused or failed %ld calls (ENGRAM_EBUSY: more was offered than the machine sustained during "
            "this run); percentiles are over the %ld that completed", eng->errors, eng->calls);
  if (base && base->errors) bl_note("the baseline failed %ld of its calls", base->errors);
  if (eng->achieved < 0.9 * rate) bl_note("engram completed only %.0f calls/s of the %.0f offered", eng->achieved, rate);
  if (base && base->achieved < 0.9 * base->offered)
    bl_note("the baseline completed only %.0f calls/s of the %.0f offered", base->achieved, base->offered);
}

/* ---- The open loop ---- */

/* splitmix64: the schedule's generator (any side offered the same rate with the same seed gets the same
 * schedule). */
static uint64_t splitmix(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

#define OPEN_BURST 1000 /* calls submitted per wake at most before the loop gets a turn */

static void open_arm(bl_drv_t *d);

/* Submits every call whose intended start has come, in schedule order. */
static void open_due(bl_drv_t *d) {
  long k;
  for (k = 0; k < OPEN_BURST && d->sent < d->n; k++) {
    uint64_t now = uv_hrtime(), due = d->start_ns + d->sched[d->sent];
    bl_slot_t *s;
    int rc;
    if (due > now) break;
    s = &d->slots[d->sent];
    s->d = d;
    s->i = d->sent++;
    s->t0 = due;
    bl_hdr_add(d->lag, now - due);
    if ((rc = d->submit(d, s->i, s)) != 0) {
      record_failure(d, rc, engram_last_error());
      d->done++;
      d->last_done_ns = uv_hrtime();
    }
  }
  if (k == OPEN_BURST && d->sent < d->n && !d->spin) uv_async_send(&d->async); /* more is due: come back */
  if (d->spin) open_arm(d);
}

static void on_open_async(uv_async_t *a) { open_due(a->data); }

/* Spinning: when nothing was due, give the core to whatever else is runnable (a server, an actor thread) before
 * the next look, so that the harness's spin does not take CPU the measured side needs. */
static void on_open_idle(uv_idle_t *h) {
  bl_drv_t *d = h->data;
  long before = d->sent;
  open_due(d);
  if (d->sent == before) sched_yield();
}
static void on_open_timer(uv_timer_t *t) {
  bl_drv_t *d = t->data;
  d->timer_on = 0;
  open_due(d);
}

/* Spin mode: keep the loop spinning (uv_idle: poll with a zero timeout) while the next start is under 2 ms
 * away, and sleep on a uv_timer (1 ms granularity) until 1 ms before it otherwise. */
static void open_arm(bl_drv_t *d) {
  uint64_t now = uv_hrtime(), due;
  if (d->sent >= d->n) {
    if (d->idle_on) uv_idle_stop(&d->idle);
    d->idle_on = 0;
    return;
  }
  due = d->start_ns + d->sched[d->sent];
  if (due > now + 2000000) {
    if (d->idle_on) uv_idle_stop(&d->idle);
    d->idle_on = 0;
    if (!d->timer_on) uv_timer_start(&d->timer, on_open_timer, (due - now) / 1000000 - 1, 0);
    d->timer_on = 1;
  } else if (!d->idle_on) {
    uv_idle_start(&d->idle, on_open_idle);
    d->idle_on = 1;
  }
}

/* The pacing thread: sleeps until the next intended start, then wakes the loop, which submits whatever is due
 * by then. */
static void *pacer_main(void *arg) {
  bl_drv_t *d = arg;
  long k = 0;
  prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL); /* wake on time, not up to 50 us late */
  while (k < d->n) {
    uint64_t due = d->start_ns + d->sched[k], now = uv_hrtime();
    if (due > now) {
      struct timespec ts;
      ts.tv_sec = (time_t)(due / 1000000000u);
      ts.tv_nsec = (long)(due % 1000000000u);
      while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
      }
    }
    uv_async_send(&d->async);
    now = uv_hrtime();
    while (k < d->n && d->start_ns + d->sched[k] <= now) k++;
  }
  return NULL;
}

static void lat_fill(bl_lat_t *out, const bl_hdr_t *h) {
  out->p50_us = bl_hdr_quantile(h, 0.50) / 1e3;
  out->p99_us = bl_hdr_quantile(h, 0.99) / 1e3;
  out->p999_us = bl_hdr_quantile(h, 0.999) / 1e3;
  out->max_us = bl_hdr_quantile(h, 1) / 1e3;
  out->mean_us = bl_hdr_mean(h) / 1e3;
  out->calls = (long)h->total;
}

bl_lat_t bl_open_loop(bl_drv_t *d, uv_loop_t *loop, bl_submit_fn submit, void *ctx, double rate, double seconds) {
  const char *pacer = getenv("BENCH_PACER");
  uint64_t seed = (uint64_t)bl_env_long("BENCH_SEED", 20261206);
  bl_hdr_t *h;
  bl_lat_t out;
  double t = 0, cpu0;
  long i, n = (long)(rate * seconds + 0.5);
  if (n < 1) n = 1;
  memset(&out, 0, sizeof out);
  memset(d, 0, sizeof *d);
  d->loop = loop;
  d->submit = submit;
  d->ctx = ctx;
  d->n = n;
  d->fifth = n / 5;
  d->spin = pacer == NULL || strcmp(pacer, "thread") != 0;
  d->slots = calloc((size_t)n, sizeof *d->slots);
  d->sched = malloc((size_t)n * sizeof *d->sched);
  h = malloc(4 * sizeof *h);
  if (d->slots == NULL || d->sched == NULL || h == NULL) bl_die("out of memory");
  for (i = 0; i < 4; i++) bl_hdr_reset(&h[i]);
  d->hist = &h[0], d->hist_first = &h[1], d->hist_last = &h[2], d->lag = &h[3];
  for (i = 0; i < n; i++) { /* exponential gaps: -ln(1 - u) / rate, u uniform in [0, 1) */
    double u = (double)(splitmix(&seed) >> 11) * (1.0 / 9007199254740992.0);
    t += -log1p(-u) / rate * 1e9;
    d->sched[i] = (uint64_t)t;
  }
  uv_timer_init(loop, &d->timer);
  uv_idle_init(loop, &d->idle);
  uv_async_init(loop, &d->async, on_open_async);
  d->timer.data = d->idle.data = d->async.data = d;
  cpu0 = bl_cpu_s();
  d->start_ns = uv_hrtime() + 1000000; /* the first arrivals 1 ms from now: time to start the pacer */
  d->last_done_ns = d->start_ns;
  if (d->spin) open_arm(d);
  else if (pthread_create(&d->pacer, NULL, pacer_main, d) != 0) bl_die("pthread_create failed");
  while (d->done < d->n) uv_run(loop, UV_RUN_ONCE);
  if (!d->spin) pthread_join(d->pacer, NULL);
  out.cpu_us = (bl_cpu_s() - cpu0) / (double)(d->done ? d->done : 1) * 1e6;
  out.offered = rate;
  out.seconds = (double)d->sched[n - 1] / 1e9;
  out.achieved = (double)(d->done - d->errors) / ((double)(d->last_done_ns - d->start_ns) / 1e9);
  uv_close((uv_handle_t *)&d->timer, NULL);
  uv_close((uv_handle_t *)&d->idle, NULL);
  uv_close((uv_handle_t *)&d->async, NULL);
  uv_run(loop, UV_RUN_NOWAIT);
  lat_fill(&out, d->hist);
  out.p50_first_us = bl_hdr_quantile(d->hist_first, 0.5) / 1e3;
  out.p50_last_us = bl_hdr_quantile(d->hist_last, 0.5) / 1e3;
  out.lag_p50_us = bl_hdr_quantile(d->lag, 0.5) / 1e3;
  out.lag_p99_us = bl_hdr_quantile(d->lag, 0.99) / 1e3;
  out.errors = d->errors;
  free(d->slots);
  free(d->sched);
  free(h);
  d->slots = NULL;
  d->sched = NULL;
  d->hist = d->hist_first = d->hist_last = d->lag = NULL;
  return out;
}

static void side_notes(const char *who, const bl_lat_t *l) {
  if (l->errors) bl_note("%s: %ld calls refused or failed, left out of the percentiles", who, l->errors);
  if (l->offered > 0 && bl_saturated(l, l->offered))
    bl_note("%s was saturated: %.0f of %.0f calls/s completed, median %.0f us in the first fifth of the schedule, "
            "%.0f us in the last", who, l->achieved, l->offered, l->p50_first_us, l->p50_last_us);
}

void bl_result_percentiles(const char *bench, const char *prefix, const bl_lat_t *eng, const bl_lat_t *base) {
  char m[128];
  snprintf(m, sizeof m, "%s p50", prefix);
  bl_result(bench, m, eng->p50_us, base ? base->p50_us : NAN, "us");
  snprintf(m, sizeof m, "%s p99", prefix);
  bl_result(bench, m, eng->p99_us, base ? base->p99_us : NAN, "us");
  snprintf(m, sizeof m, "%s p999", prefix);
  bl_result(bench, m, eng->p999_us, base ? base->p999_us : NAN, "us");
  side_notes("engram", eng);
  if (base) side_notes("raw", base);
}

void bl_result_round_trip(const char *bench, const char *op, const bl_lat_t *eng, const bl_lat_t *raw) {
  char m[128];
  snprintf(m, sizeof m, "%s, 1 in flight:", op);
  bl_result_percentiles(bench, m, eng, raw);
  snprintf(m, sizeof m, "%s, 1 in flight: calls/s", op);
  bl_result(bench, m, eng->achieved, raw ? raw->achieved : NAN, "calls/s");
  bl_note("%ld calls each; mean %.1f us engram, %.1f us raw; max %.0f us engram, %.0f us raw", eng->calls,
          eng->mean_us, raw ? raw->mean_us : NAN, eng->max_us, raw ? raw->max_us : NAN);
}

void bl_open_loads(const bl_open_spec_t *s) {
  const char *loads = getenv("BENCH_LOADS"), *p;
  double min_s = (double)bl_env_long("BENCH_LATENCY_S", 2);
  char buf[64];
  bl_drv_t d;
  int k = 0;
  double peak = s->raw_peak;
  if (loads == NULL || *loads == '\0') loads = "10,50,80";
  bl_note("%s: raw peak %.0f calls/s (%s); open loop, Poisson arrivals, pacing: %s", s->op, s->raw_peak,
          s->raw_peak_how, getenv("BENCH_PACER") && strcmp(getenv("BENCH_PACER"), "thread") == 0
                               ? "pacing thread + uv_async" : "spinning loop (uv_idle)");
  if (s->open_saturation) {
    bl_lat_t sat = bl_open_loop(&d, s->loop, s->raw, s->raw_ctx, s->raw_peak, 0.5);
    if (sat.achieved > 0 && sat.achieved < peak) peak = sat.achieved;
    bl_note("%s: the raw client driven by the open loop at its closed-loop peak completed %.0f calls/s (the "
            "driver's own work per call included); the loads below are fractions of %.0f calls/s", s->op,
            sat.achieved, peak);
  }
  if (bl_env_long("BENCH_OPEN_BASE", 0) > 0) { /* a fixed base: runs of two builds offered the same rates */
    peak = (double)bl_env_long("BENCH_OPEN_BASE", 0);
    bl_note("%s: BENCH_OPEN_BASE: the loads below are fractions of %.0f calls/s, not of the rate measured", s->op,
            peak);
  }
  for (p = loads; *p != '\0';) {
    double pct = strtod(p, NULL), rate = peak * pct / 100, secs = min_s;
    bl_lat_t eng, raw;
    while (*p != '\0' && *p != ',') p++;
    if (*p == ',') p++;
    if (!(pct > 0) || !(rate > 0)) continue;
    if (rate * secs < 20000) secs = 20000 / rate;
    if (secs > 10 && secs > min_s) secs = min_s > 10 ? min_s : 10;
    /* Alternate which side goes first, so that what one side leaves running (a checkpoint, an index merge on
     * the server) does not always land on the same side. */
    if (k++ % 2 == 0) {
      eng = bl_open_loop(&d, s->loop, s->eng, s->eng_ctx, rate, secs);
      raw = bl_open_loop(&d, s->loop, s->raw, s->raw_ctx, rate, secs);
    } else {
      raw = bl_open_loop(&d, s->loop, s->raw, s->raw_ctx, rate, secs);
      eng = bl_open_loop(&d, s->loop, s->eng, s->eng_ctx, rate, secs);
    }
    snprintf(buf, sizeof buf, "%s @ %.0f%% raw peak:", s->op, pct);
    bl_note("%.0f%% of raw peak: %.0f calls/s offered for %.1f s (%ld calls, %s first); pacing lag p50/p99 %.1f/%.1f us "
            "engram, %.1f/%.1f us raw", pct, rate, eng.seconds, (long)(rate * secs + 0.5), k % 2 ? "engram" : "raw",
            eng.lag_p50_us, eng.lag_p99_us, raw.lag_p50_us, raw.lag_p99_us);
    bl_note("CPU of this process per call (all threads, the pacer's included): engram %.2f us, raw %.2f us",
            eng.cpu_us, raw.cpu_us);
    bl_result_percentiles(s->bench, buf, &eng, &raw);
    snprintf(buf, sizeof buf, "%s @ %.0f%% raw peak: completed/s", s->op, pct);
    bl_result(s->bench, buf, eng.achieved, raw.achieved, "calls/s");
  }
}

void bl_check(const bl_drv_t *d, const char *what) {
  if (d->errors) bl_die("%s: %ld calls failed; first: %s (%d) %s", what, d->errors, engram_err_name(d->first_status),
                        d->first_status, d->first_msg);
}

/* ---- engram set-up ---- */

engram_manager_t *bl_manager(uv_loop_t *loop) {
  engram_manager_t *mgr = NULL;
  int rc = engram_manager_new(&mgr, loop, NULL);
  if (rc != 0) bl_die("engram_manager_new: %s (%s)", engram_err_name(rc), engram_last_error());
  return mgr;
}

typedef struct {
  volatile int calls;
  int status;
  char msg[512];
} sync_t;

static void sync_cb(int status, const engram_reply_t *reply, void *ud) {
  sync_t *s = ud;
  s->status = status;
  snprintf(s->msg, sizeof s->msg, "%s", reply->message ? reply->message : "");
  __atomic_store_n(&s->calls, 1, __ATOMIC_RELEASE);
}

static void wait_sync(uv_loop_t *loop, sync_t *s) {
  if (loop != NULL) {
    while (!__atomic_load_n(&s->calls, __ATOMIC_ACQUIRE)) uv_run(loop, UV_RUN_ONCE);
  } else {
    while (!__atomic_load_n(&s->calls, __ATOMIC_ACQUIRE)) usleep(200);
  }
}

void bl_add_source(engram_manager_t *mgr, uv_loop_t *loop, const char *name, const engram_source_vtable_t *vt,
                   const char *options_json) {
  sync_t s = {0, 0, ""};
  int rc = engram_manager_add_source(mgr, name, vt, options_json, "benchmark", 0, sync_cb, &s);
  if (rc != 0) bl_die("add_source %s: %s (%s)", name, engram_err_name(rc), engram_last_error());
  wait_sync(loop, &s);
  if (s.status != 0) bl_die("add_source %s: %s (%s)", name, engram_err_name(s.status), s.msg);
}

void bl_close_manager(engram_manager_t *mgr, uv_loop_t *loop) {
  sync_t s = {0, 0, ""};
  if (loop == NULL) {
    engram_manager_shutdown(mgr);
    return;
  }
  if (engram_manager_close(mgr, sync_cb, &s) != 0) bl_die("engram_manager_close refused");
  wait_sync(loop, &s);
  uv_run(loop, UV_RUN_DEFAULT);
}

int bl_sync(engram_manager_t *mgr, uv_loop_t *loop, bl_call_fn fn, void *arg) {
  sync_t s = {0, 0, ""};
  int rc = fn(mgr, arg, sync_cb, &s);
  if (rc != 0) return rc;
  wait_sync(loop, &s);
  return s.status;
}

/* ---- Data ---- */

const char *bl_corpus_path(void) {
  const char *candidates[] = {getenv("ENGRAM_CORPUS"), "../shared/corpus/debian-descriptions.jsonl.gz",
                              "/work/shared/corpus/debian-descriptions.jsonl.gz"};
  size_t i;
  for (i = 0; i < sizeof candidates / sizeof candidates[0]; i++)
    if (candidates[i] != NULL && *candidates[i] != '\0' && access(candidates[i], R_OK) == 0) return candidates[i];
  return NULL;
}

static char *dup_or_die(const char *s) {
  char *p = strdup(s ? s : "");
  if (p == NULL) bl_die("out of memory");
  return p;
}

void bl_corpus_load(bl_corpus_t *c, size_t limit) {
  const char *path = bl_corpus_path();
  char cmd[1200], *line = NULL;
  size_t cap = 0, rcap = 0;
  FILE *in;
  memset(c, 0, sizeof *c);
  if (path == NULL) bl_die("the Debian corpus is missing (set ENGRAM_CORPUS or put it in ../shared/corpus/)");
  if (strchr(path, '\'') != NULL) bl_die("corpus path with a quote: %s", path);
  snprintf(cmd, sizeof cmd, "gzip -dc '%s'", path);
  if ((in = popen(cmd, "r")) == NULL) bl_die("cannot run %s", cmd);
  while (getline(&line, &cap, in) > 0 && (limit == 0 || c->n < limit)) {
    cJSON *rec = cJSON_Parse(line);
    const cJSON *key, *title, *text, *section, *tags;
    bl_record_t *r;
    if (rec == NULL) bl_die("corpus: malformed line %zu", c->n + 1);
    key = cJSON_GetObjectItemCaseSensitive(rec, "key");
    title = cJSON_GetObjectItemCaseSensitive(rec, "title");
    text = cJSON_GetObjectItemCaseSensitive(rec, "text");
    section = cJSON_GetObjectItemCaseSensitive(rec, "section");
    tags = cJSON_GetObjectItemCaseSensitive(rec, "tags");
    if (!cJSON_IsString(key) || !cJSON_IsString(title) || !cJSON_IsString(text))
      bl_die("corpus: line %zu lacks key/title/text", c->n + 1);
    if (c->n == rcap) {
      rcap = rcap ? rcap * 2 : 1024;
      if ((c->r = realloc(c->r, rcap * sizeof *c->r)) == NULL) bl_die("out of memory");
    }
    r = &c->r[c->n++];
    r->key = dup_or_die(key->valuestring);
    r->title = dup_or_die(title->valuestring);
    r->text = dup_or_die(text->valuestring);
    r->section = dup_or_die(cJSON_IsString(section) ? section->valuestring : "");
    if (tags != NULL) {
      char *t = cJSON_PrintUnformatted(tags);
      r->tags_json = dup_or_die(t);
      cJSON_free(t);
    } else {
      r->tags_json = dup_or_die("[]");
    }
    c->text_bytes += strlen(r->text);
    cJSON_Delete(rec);
  }
  free(line);
  pclose(in);
  if (c->n == 0) bl_die("corpus: no records in %s", path);
}

void bl_corpus_free(bl_corpus_t *c) {
  size_t i;
  for (i = 0; i < c->n; i++) {
    free(c->r[i].key);
    free(c->r[i].title);
    free(c->r[i].text);
    free(c->r[i].section);
    free(c->r[i].tags_json);
  }
  free(c->r);
  memset(c, 0, sizeof *c);
}

/* The generator of tests/test_text_recall.c, so that the bench and the test sample the same records. */
static uint32_t rng_next(uint64_t *s) {
  *s = *s * 6364136223846793005ull + 1442695040888963407ull;
  return (uint32_t)(*s >> 33);
}

void bl_known_item_sample(size_t ndocs, size_t *out, size_t n) {
  uint64_t seed = 20261122;
  size_t i;
  for (i = 0; i < n; i++) {
    size_t want = rng_next(&seed);
    out[i] = (size_t)((((uint64_t)want << 16) ^ rng_next(&seed)) % ndocs);
  }
}

/* ---- Ingest and the known-item task through engram ---- */

typedef struct {
  engram_manager_t *mgr;
  const char *source;
  const bl_corpus_t *c;
} ingest_t;

static int ingest_submit(bl_drv_t *d, long i, void *token) {
  ingest_t *g = d->ctx;
  const bl_record_t *r = &g->c->r[i];
  engram_opts_t o;
  cJSON *v = cJSON_CreateObject(), *m = cJSON_CreateObject(), *tags = cJSON_Parse(r->tags_json);
  int rc;
  if (v == NULL || m == NULL || tags == NULL || !cJSON_AddStringToObject(v, "text", r->text) ||
      !cJSON_AddStringToObject(m, "title", r->title) || !cJSON_AddStringToObject(m, "section", r->section) ||
      !cJSON_AddItemToObject(m, "tags", tags))
    bl_die("out of memory");
  memset(&o, 0, sizeof o);
  o.source = g->source;
  o.metadata = m;
  rc = engram_store(g->mgr, r->key, v, &o, bl_engram_cb, token);
  cJSON_Delete(v);
  cJSON_Delete(m);
  return rc;
}

double bl_ingest_engram(engram_manager_t *mgr, uv_loop_t *loop, const char *source, const bl_corpus_t *c,
                        long window) {
  ingest_t g = {mgr, source, c};
  bl_drv_t d;
  double rate = bl_closed_loop(&d, loop, ingest_submit, &g, (long)c->n, window);
  bl_check(&d, "ingest");
  return rate;
}

typedef struct {
  volatile int done;
  int status;
  char msg[256];
  char keys[10][1100];
  size_t n;
} search_out_t;

static void search_cb(int status, const engram_reply_t *reply, void *ud) {
  search_out_t *o = ud;
  size_t i;
  o->status = status;
  snprintf(o->msg, sizeof o->msg, "%s", reply->message ? reply->message : "");
  o->n = 0;
  for (i = 0; i < reply->n_items && i < 10; i++) snprintf(o->keys[o->n++], sizeof o->keys[0], "%s", reply->items[i].key);
  o->done = 1;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* The median of the query times t[1..n) (the first may build an index), in ms. */
static double ki_p50(double *t, size_t n) {
  if (n < 2) return n ? t[0] * 1e3 : 0;
  qsort(t + 1, n - 1, sizeof *t, cmp_double);
  return t[1 + (n - 1) / 2] * 1e3;
}

/* Means; the query time leaves out the first query, which may build an index (shown as first_ms). */
static void ki_finish(bl_ki_t *k, double total_s) {
  if (k->queries == 0) return;
  k->recall /= (double)k->queries;
  k->mrr /= (double)k->queries;
  if (k->queries > 1) k->mean_ms = (total_s * 1e3 - k->first_ms) / (double)(k->queries - 1);
  else k->mean_ms = total_s * 1e3;
}

bl_ki_t bl_known_item_engram(engram_manager_t *mgr, uv_loop_t *loop, const char *source, const bl_corpus_t *c,
                             size_t n_queries) {
  size_t sample[200], i, r;
  bl_ki_t k;
  double total = 0, times[200];
  memset(&k, 0, sizeof k);
  if (n_queries > 200) n_queries = 200;
  bl_known_item_sample(c->n, sample, 200);
  for (i = 0; i < n_queries; i++) {
    const bl_record_t *want = &c->r[sample[i]];
    engram_query_t q = ENGRAM_QUERY_INIT;
    engram_opts_t o;
    search_out_t out;
    double t;
    int rc;
    memset(&o, 0, sizeof o);
    memset(&out, 0, sizeof out);
    o.source = source;
    q.text = want->title;
    q.limit = 10;
    t = bl_now();
    if ((rc = engram_search(mgr, &q, &o, search_cb, &out)) != 0)
      bl_die("engram_search refused: %s (%s)", engram_err_name(rc), engram_last_error());
    while (!out.done) uv_run(loop, UV_RUN_ONCE);
    t = bl_now() - t;
    if (out.status != 0) bl_die("search \"%s\": %s (%s)", want->title, engram_err_name(out.status), out.msg);
    times[i] = t;
    if (i == 0) k.first_ms = t * 1e3;
    total += t;
    k.queries++;
    for (r = 0; r < out.n; r++)
      if (strcmp(out.keys[r], want->key) == 0) {
        k.recall += 1;
        k.mrr += 1.0 / (double)(r + 1);
        break;
      }
  }
  ki_finish(&k, total);
  k.p50_ms = ki_p50(times, k.queries);
  return k;
}

bl_ki_t bl_known_item_raw(const bl_corpus_t *c, size_t n_queries, bl_rank_fn rank, void *ud) {
  size_t sample[200], i, r, docs[10], n;
  bl_ki_t k;
  double total = 0, times[200];
  memset(&k, 0, sizeof k);
  if (n_queries > 200) n_queries = 200;
  bl_known_item_sample(c->n, sample, 200);
  for (i = 0; i < n_queries; i++) {
    double t = bl_now();
    n = rank(ud, c->r[sample[i]].title, docs, 10);
    t = bl_now() - t;
    times[i] = t;
    if (i == 0) k.first_ms = t * 1e3;
    total += t;
    k.queries++;
    for (r = 0; r < n; r++)
      if (docs[r] == sample[i]) {
        k.recall += 1;
        k.mrr += 1.0 / (double)(r + 1);
        break;
      }
  }
  ki_finish(&k, total);
  k.p50_ms = ki_p50(times, k.queries);
  return k;
}

typedef struct {
  volatile int done;
  int status;
} store_out_t;

static void store_out_cb(int status, const engram_reply_t *reply, void *ud) {
  store_out_t *o = ud;
  (void)reply;
  o->status = status;
  o->done = 1;
}

double bl_mixed_search_p50(engram_manager_t *mgr, uv_loop_t *loop, const char *source, const bl_corpus_t *c,
                           size_t n) {
  size_t sample[200], i;
  double *times = malloc((n ? n : 1) * sizeof *times), p50;
  if (times == NULL) bl_die("out of memory");
  bl_known_item_sample(c->n, sample, 200);
  for (i = 0; i < n; i++) {
    const bl_record_t *w = &c->r[(i * 7919u) % c->n], *want = &c->r[sample[i % 200]];
    engram_query_t q = ENGRAM_QUERY_INIT;
    engram_opts_t o;
    store_out_t so = {0, 0};
    search_out_t out;
    cJSON *v = cJSON_CreateObject();
    double t;
    if (v == NULL || !cJSON_AddStringToObject(v, "text", w->text)) bl_die("out of memory");
    memset(&o, 0, sizeof o);
    o.source = source;
    if (engram_store(mgr, w->key, v, &o, store_out_cb, &so) != 0) bl_die("engram_store refused");
    cJSON_Delete(v);
    while (!so.done) uv_run(loop, UV_RUN_ONCE);
    if (so.status != 0) bl_die("mixed store: %s", engram_err_name(so.status));
    memset(&out, 0, sizeof out);
    q.text = want->title;
    q.limit = 10;
    t = bl_now();
    if (engram_search(mgr, &q, &o, search_cb, &out) != 0) bl_die("engram_search refused");
    while (!out.done) uv_run(loop, UV_RUN_ONCE);
    times[i] = bl_now() - t;
    if (out.status != 0) bl_die("mixed search: %s (%s)", engram_err_name(out.status), out.msg);
  }
  p50 = n ? ki_p50(times, n) : 0;
  free(times);
  return p50;
}

void bl_result_known_item(const char *bench, const bl_ki_t *e, const bl_ki_t *base) {
  char m[96];
  snprintf(m, sizeof m, "known-item recall@10 (%zu queries)", e->queries);
  bl_result(bench, m, e->recall, base ? base->recall : NAN, "fraction");
  snprintf(m, sizeof m, "known-item MRR@10 (%zu queries)", e->queries);
  bl_result(bench, m, e->mrr, base ? base->mrr : NAN, "fraction");
  bl_result(bench, "known-item mean query time (after the first)", e->mean_ms, base ? base->mean_ms : NAN, "ms");
  bl_result(bench, "known-item p50 query time (after the first)", e->p50_ms, base ? base->p50_ms : NAN, "ms");
}

size_t bl_rss_bytes(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  unsigned long size = 0, res = 0;
  if (f == NULL) return 0;
  if (fscanf(f, "%lu %lu", &size, &res) != 2) res = 0;
  fclose(f);
  return (size_t)res * (size_t)sysconf(_SC_PAGESIZE);
}

int bl_key(char *buf, const char *prefix, long i) {
  char digits[24];
  int n = 0, len = 0;
  unsigned long u = (unsigned long)(i < 0 ? 0 : i);
  while (*prefix) buf[len++] = *prefix++;
  do {
    digits[n++] = (char)('0' + u % 10);
    u /= 10;
  } while (u);
  while (n) buf[len++] = digits[--n];
  buf[len] = '\0';
  return len;
}

cJSON *bl_value200(void) {
  char s[199];
  cJSON *v;
  memset(s, 'v', 198);
  s[198] = '\0';
  if ((v = cJSON_CreateString(s)) == NULL) bl_die("out of memory");
  return v;
}

/* ---- Temporary directories ---- */

static char tmpdirs[8][64];
static int n_tmpdirs;

static void rm_tmpdirs(void) {
  int i;
  for (i = 0; i < n_tmpdirs; i++) {
    char cmd[96];
    if (tmpdirs[i][0] == '\0') continue;
    snprintf(cmd, sizeof cmd, "rm -rf '%.63s'", tmpdirs[i]);
    if (system(cmd) != 0) fprintf(stderr, "bench: could not remove %s\n", tmpdirs[i]);
    tmpdirs[i][0] = '\0';
  }
}

/* SIGINT / SIGTERM: removes the temporary directories and dies of the signal. Only async-signal-safe calls
 * (fork, execv, waitpid, signal, raise): calling exit() here ran the atexit cleanups inside the signal, and a
 * signal that arrived during a malloc then hung the process on the allocator's lock. The servers clean up
 * after themselves (their own handlers and watchdogs, tests/support). */
static void on_signal(int sig) {
  int i;
  for (i = 0; i < n_tmpdirs; i++) {
    pid_t pid;
    if (tmpdirs[i][0] == '\0') continue;
    if ((pid = fork()) == 0) {
      char *const argv[] = {(char *)"rm", (char *)"-rf", tmpdirs[i], NULL};
      execv("/bin/rm", argv);
      _exit(127);
    }
    if (pid > 0) waitpid(pid, NULL, 0);
  }
  signal(sig, SIG_DFL);
  raise(sig);
}

const char *bl_tmpdir(void) {
  static int registered;
  char *p;
  if (n_tmpdirs == 8) bl_die("too many temporary directories");
  p = tmpdirs[n_tmpdirs];
  snprintf(p, 64, "/tmp/engram_bench_XXXXXX");
  if (mkdtemp(p) == NULL) bl_die("mkdtemp: %s", strerror(errno));
  n_tmpdirs++;
  if (!registered) {
    registered = 1;
    atexit(rm_tmpdirs);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
  }
  return p;
}
