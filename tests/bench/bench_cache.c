/*
 * bench_cache.c — the cache source next to a plain hash table doing the same work (as the inproc_raw anchor:
 * ck_ht with a copied key and a copied 200-byte value per put; a get finds the key and copies the value out, as a
 * user must to hand it on — engram hands its caller a copy too).
 *
 *  1. one core: engram store then retrieve of N keys with 1,000 calls in flight through the actor (each callback
 *     submits the next), against ck_ht put then get of the same keys and values;
 *  2. two threads: each submits half the calls from its own uv loop (replies through a completion queue bound
 *     to that loop) to a manager on a thread of its own, against two threads putting into one ck_ht under a
 *     mutex and then reading it lock-free (ck_ht's single-writer, many-reader mode);
 *  3. latency, on one loop: (a) round trips, one call in flight, store against a ck_ht set (an upsert of copied
 *     key and value) and retrieve against a get, $BENCH_CACHE_RT_N (200,000) each; (b) the open loop (benchlib's
 *     bl_open_loads): store against sets under Poisson arrivals at 10, 50 and 80% of the sets' saturation rate
 *     (the rate the open loop's driver completes when it offers them their closed-loop peak: a set costs less
 *     than the driver's own work per call), the same schedule for both, each call timed from its intended start
 *     (both tables hold N keys first, and every call overwrites one of them: call i the key i mod N);
 *  4. bytes of memory per item beyond key and value bytes: resident-set growth over N items, in a forked child
 *     per side so that neither measurement inherits the other's heap.
 * N defaults to 1,000,000 ($BENCH_CACHE_N, or scaled by $BENCH_SCALE).
 */
#include <ck_ht.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench/benchlib.h"

#define WINDOW 1000
#define VALUE_BYTES 200

static long N;
static cJSON *value200;
static char raw_value[VALUE_BYTES];

/* ---- The raw side: ck_ht with copied keys and values ---- */

static void *ht_malloc(size_t r) { return malloc(r); }
static void ht_free(void *p, size_t b, bool r) {
  (void)b;
  (void)r;
  free(p);
}
static struct ck_malloc ht_allocator = {.malloc = ht_malloc, .free = ht_free};

static void raw_init(ck_ht_t *ht) {
  if (!ck_ht_init(ht, CK_HT_MODE_BYTESTRING, NULL, &ht_allocator, 1024, 6602834)) bl_die("ck_ht_init failed");
}

static void raw_put(ck_ht_t *ht, const char *key, int kl) {
  char *k = malloc((size_t)kl), *v = malloc(sizeof raw_value);
  ck_ht_entry_t e;
  ck_ht_hash_t h;
  if (k == NULL || v == NULL) bl_die("out of memory");
  memcpy(k, key, (size_t)kl);
  memcpy(v, raw_value, sizeof raw_value);
  ck_ht_hash(&h, ht, k, (uint16_t)kl);
  ck_ht_entry_set(&e, h, k, (uint16_t)kl, v);
  if (!ck_ht_put_spmc(ht, h, &e)) bl_die("ck_ht_put_spmc failed");
}

/* A get that hands the value over: copied into out (VALUE_BYTES), as a user of ck_ht must before passing a value
 * on — the table's own copy is freed by the next put or set of the key — and as engram hands its caller a copy
 * (the reply's value, built from the cache's entry). A get that only found the entry's pointer never read the
 * value's bytes, a cache miss of their own in a large table (the value is an allocation apart from the key), which
 * engram's retrieve pays. Non-zero when found. */
static int raw_get(ck_ht_t *ht, const char *key, int kl, char *out) {
  ck_ht_entry_t e;
  ck_ht_hash_t h;
  ck_ht_hash(&h, ht, key, (uint16_t)kl);
  ck_ht_entry_key_set(&e, key, (uint16_t)kl);
  if (!ck_ht_get_spmc(ht, h, &e)) return 0;
  memcpy(out, ck_ht_entry_value(&e), VALUE_BYTES);
  return out[VALUE_BYTES - 1] == 'v'; /* read back, so that the copy is made */
}

static void raw_destroy(ck_ht_t *ht) {
  ck_ht_iterator_t it = CK_HT_ITERATOR_INITIALIZER;
  ck_ht_entry_t *e;
  while (ck_ht_next(ht, &it, &e)) {
    free(ck_ht_entry_key(e));
    free(ck_ht_entry_value(e));
  }
  ck_ht_destroy(ht);
}

/* CPU time per call (cpu[0] put, cpu[1] get, in us): on a shared machine the calls/s move with the load, the
 * CPU time a call costs much less. */
static void raw_one_core(double *put, double *get, double *cpu) {
  ck_ht_t ht;
  char key[64], out[VALUE_BYTES];
  long i, found = 0;
  double t, c;
  raw_init(&ht);
  t = bl_now();
  c = bl_cpu_s();
  for (i = 0; i < N; i++) raw_put(&ht, key, bl_key(key, "memory:", i));
  cpu[0] = (bl_cpu_s() - c) / (double)N * 1e6;
  *put = (double)N / (bl_now() - t);
  t = bl_now();
  c = bl_cpu_s();
  for (i = 0; i < N; i++) found += raw_get(&ht, key, bl_key(key, "memory:", i), out);
  cpu[1] = (bl_cpu_s() - c) / (double)N * 1e6;
  *get = (double)N / (bl_now() - t);
  if (found != N) bl_die("raw: lost %ld keys", N - found);
  raw_destroy(&ht);
}

/* ---- The engram side ---- */

typedef struct {
  engram_manager_t *mgr;
  engram_opts_t opts;
  const char *prefix;
  long base;
} ectx_t;

/* Keys wrap at N: the latency section's runs (the open loop at 80 % submits more than N calls) overwrite the N keys
 * both tables hold, as the raw peak they are fractions of was measured, instead of growing the tables inside a
 * timed window (ck_ht doubles in one step: 0.5-0.7 s at 2^20 keys). Elsewhere i stays below N. */
static int submit_store(bl_drv_t *d, long i, void *token) {
  ectx_t *c = d->ctx;
  char key[64];
  bl_key(key, c->prefix, (c->base + i) % N);
  return engram_store(c->mgr, key, value200, &c->opts, bl_engram_cb, token);
}

static int submit_retrieve(bl_drv_t *d, long i, void *token) {
  ectx_t *c = d->ctx;
  char key[64];
  bl_key(key, c->prefix, c->base + i);
  return engram_retrieve(c->mgr, key, &c->opts, bl_engram_cb, token);
}

static void engram_one_core(double *put, double *get, double *cpu) {
  uv_loop_t loop;
  bl_drv_t d;
  ectx_t c;
  memset(&c, 0, sizeof c);
  uv_loop_init(&loop);
  c.mgr = bl_manager(&loop);
  c.prefix = "memory:";
  bl_add_source(c.mgr, &loop, "cache", &engram_source_cache, NULL);
  *put = bl_closed_loop(&d, &loop, submit_store, &c, N, WINDOW);
  cpu[0] = d.cpu_us;
  bl_check(&d, "engram store");
  *get = bl_closed_loop(&d, &loop, submit_retrieve, &c, N, WINDOW);
  cpu[1] = d.cpu_us;
  bl_check(&d, "engram retrieve");
  bl_close_manager(c.mgr, &loop);
  if (uv_loop_close(&loop) != 0) bl_die("loop not closed");
}

/* ---- Two threads ---- */

typedef struct {
  ectx_t c;
  uv_loop_t loop;
  engram_cq_t *cq;
  pthread_barrier_t *barrier;
  long n;
  double t_start, t_end, t_get_start, t_get_end;
  double cpu[2]; /* this thread's CPU seconds in the store and the retrieve phase */
  long errors;
  char err[300];
} worker_t;

/* CPU seconds used by the calling thread (user + system). */
static double thread_cpu(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *engram_worker(void *arg) {
  worker_t *w = arg;
  bl_drv_t d;
  uv_loop_init(&w->loop);
  if (engram_cq_new(&w->cq, &w->loop) != 0) bl_die("engram_cq_new failed");
  w->c.opts.cq = w->cq;
  pthread_barrier_wait(w->barrier);
  w->t_start = bl_now();
  bl_closed_loop(&d, &w->loop, submit_store, &w->c, w->n, WINDOW);
  w->t_end = bl_now();
  w->errors += d.errors;
  if (d.errors) snprintf(w->err, sizeof w->err, "%s", d.first_msg);
  pthread_barrier_wait(w->barrier);
  w->t_get_start = bl_now();
  bl_closed_loop(&d, &w->loop, submit_retrieve, &w->c, w->n, WINDOW);
  w->t_get_end = bl_now();
  w->errors += d.errors;
  if (d.errors) snprintf(w->err, sizeof w->err, "%s", d.first_msg);
  engram_cq_free(w->cq);
  uv_run(&w->loop, UV_RUN_DEFAULT);
  uv_loop_close(&w->loop);
  return NULL;
}

static double span(const worker_t *w, int get) {
  double a = get ? w[0].t_get_start : w[0].t_start, b = get ? w[0].t_get_end : w[0].t_end;
  if ((get ? w[1].t_get_start : w[1].t_start) < a) a = get ? w[1].t_get_start : w[1].t_start;
  if ((get ? w[1].t_get_end : w[1].t_end) > b) b = get ? w[1].t_get_end : w[1].t_end;
  return b - a;
}

static void engram_two_threads(double *put, double *get) {
  engram_manager_t *mgr = bl_manager(NULL);
  pthread_barrier_t barrier;
  pthread_t th[2];
  worker_t w[2];
  int i;
  bl_add_source(mgr, NULL, "cache", &engram_source_cache, NULL);
  pthread_barrier_init(&barrier, NULL, 2);
  memset(w, 0, sizeof w);
  for (i = 0; i < 2; i++) {
    w[i].c.mgr = mgr;
    w[i].c.prefix = "memory:";
    w[i].c.base = i * (N / 2);
    w[i].n = N / 2;
    w[i].barrier = &barrier;
    pthread_create(&th[i], NULL, engram_worker, &w[i]);
  }
  for (i = 0; i < 2; i++) pthread_join(th[i], NULL);
  for (i = 0; i < 2; i++)
    if (w[i].errors) bl_die("engram two threads: %ld calls failed: %s", w[i].errors, w[i].err);
  *put = (double)(2 * (N / 2)) / span(w, 0);
  *get = (double)(2 * (N / 2)) / span(w, 1);
  engram_manager_shutdown(mgr);
  pthread_barrier_destroy(&barrier);
}

/* The other topology: the manager lives on the loop of the first submitting thread (an event-driven server),
 * and a second thread submits too, its replies coming home through a completion queue bound to its own loop. */
typedef struct {
  worker_t w[2];
  pthread_barrier_t barrier;
  uv_async_t wake;            /* on thread 0's loop: thread 1 finished a phase */
  volatile int other_done[2]; /* per phase */
  engram_manager_t *volatile mgr;
} home_t;

static void on_wake(uv_async_t *a) { (void)a; }

static void *home_worker(void *arg) {
  home_t *h = arg;
  worker_t *w = &h->w[0];
  bl_drv_t d;
  int phase;
  uv_loop_init(&w->loop);
  uv_async_init(&w->loop, &h->wake, on_wake);
  w->c.mgr = bl_manager(&w->loop);
  bl_add_source(w->c.mgr, &w->loop, "cache", &engram_source_cache, NULL);
  h->mgr = w->c.mgr;
  for (phase = 0; phase < 2; phase++) {
    pthread_barrier_wait(&h->barrier);
    if (phase == 0) w->t_start = bl_now();
    else w->t_get_start = bl_now();
    w->cpu[phase] = thread_cpu();
    bl_closed_loop(&d, &w->loop, phase == 0 ? submit_store : submit_retrieve, &w->c, w->n, WINDOW);
    if (phase == 0) w->t_end = bl_now();
    else w->t_get_end = bl_now();
    w->errors += d.errors;
    if (d.errors) snprintf(w->err, sizeof w->err, "%s", d.first_msg);
    /* Keep serving the other thread's calls until it is done with this phase. */
    while (!__atomic_load_n(&h->other_done[phase], __ATOMIC_ACQUIRE)) uv_run(&w->loop, UV_RUN_ONCE);
    w->cpu[phase] = thread_cpu() - w->cpu[phase];
  }
  uv_close((uv_handle_t *)&h->wake, NULL);
  bl_close_manager(w->c.mgr, &w->loop);
  uv_loop_close(&w->loop);
  return NULL;
}

static void *guest_worker(void *arg) {
  home_t *h = arg;
  worker_t *w = &h->w[1];
  bl_drv_t d;
  int phase;
  uv_loop_init(&w->loop);
  if (engram_cq_new(&w->cq, &w->loop) != 0) bl_die("engram_cq_new failed");
  w->c.opts.cq = w->cq;
  for (phase = 0; phase < 2; phase++) {
    pthread_barrier_wait(&h->barrier);
    w->c.mgr = h->mgr;
    if (phase == 0) w->t_start = bl_now();
    else w->t_get_start = bl_now();
    w->cpu[phase] = thread_cpu();
    bl_closed_loop(&d, &w->loop, phase == 0 ? submit_store : submit_retrieve, &w->c, w->n, WINDOW);
    w->cpu[phase] = thread_cpu() - w->cpu[phase];
    if (phase == 0) w->t_end = bl_now();
    else w->t_get_end = bl_now();
    w->errors += d.errors;
    if (d.errors) snprintf(w->err, sizeof w->err, "%s", d.first_msg);
    __atomic_store_n(&h->other_done[phase], 1, __ATOMIC_RELEASE);
    uv_async_send(&h->wake);
  }
  engram_cq_free(w->cq);
  uv_run(&w->loop, UV_RUN_DEFAULT);
  uv_loop_close(&w->loop);
  return NULL;
}

static void engram_two_threads_home(double *put, double *get) {
  home_t *h = calloc(1, sizeof *h);
  pthread_t th[2];
  int i;
  if (h == NULL) bl_die("out of memory");
  pthread_barrier_init(&h->barrier, NULL, 2);
  for (i = 0; i < 2; i++) {
    h->w[i].c.prefix = "memory:";
    h->w[i].c.base = i * (N / 2);
    h->w[i].n = N / 2;
  }
  pthread_create(&th[0], NULL, home_worker, h);
  pthread_create(&th[1], NULL, guest_worker, h);
  for (i = 0; i < 2; i++) pthread_join(th[i], NULL);
  for (i = 0; i < 2; i++)
    if (h->w[i].errors) bl_die("engram two threads (home loop): %ld calls failed: %s", h->w[i].errors, h->w[i].err);
  *put = (double)(2 * (N / 2)) / span(h->w, 0);
  *get = (double)(2 * (N / 2)) / span(h->w, 1);
  bl_note("(a) CPU busy: store phase home %.0f%%, other %.0f%%; retrieve phase home %.0f%%, other %.0f%% of wall time",
          100 * h->w[0].cpu[0] / span(h->w, 0), 100 * h->w[1].cpu[0] / span(h->w, 0),
          100 * h->w[0].cpu[1] / span(h->w, 1), 100 * h->w[1].cpu[1] / span(h->w, 1));
  pthread_barrier_destroy(&h->barrier);
  free(h);
}

typedef struct {
  ck_ht_t *ht;
  pthread_mutex_t *mu;
  pthread_barrier_t *barrier;
  long base, n;
  double t_start, t_end, t_get_start, t_get_end;
  long found;
} raw_worker_t;

static void *raw_worker(void *arg) {
  raw_worker_t *w = arg;
  char key[64], out[VALUE_BYTES];
  long i;
  pthread_barrier_wait(w->barrier);
  w->t_start = bl_now();
  for (i = 0; i < w->n; i++) {
    int kl = bl_key(key, "memory:", w->base + i);
    pthread_mutex_lock(w->mu);
    raw_put(w->ht, key, kl);
    pthread_mutex_unlock(w->mu);
  }
  w->t_end = bl_now();
  pthread_barrier_wait(w->barrier);
  w->t_get_start = bl_now();
  for (i = 0; i < w->n; i++) w->found += raw_get(w->ht, key, bl_key(key, "memory:", w->base + i), out);
  w->t_get_end = bl_now();
  return NULL;
}

static void raw_two_threads(double *put, double *get) {
  ck_ht_t ht;
  pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
  pthread_barrier_t barrier;
  pthread_t th[2];
  raw_worker_t w[2];
  double a, b;
  int i;
  raw_init(&ht);
  pthread_barrier_init(&barrier, NULL, 2);
  memset(w, 0, sizeof w);
  for (i = 0; i < 2; i++) {
    w[i].ht = &ht;
    w[i].mu = &mu;
    w[i].barrier = &barrier;
    w[i].base = i * (N / 2);
    w[i].n = N / 2;
    pthread_create(&th[i], NULL, raw_worker, &w[i]);
  }
  for (i = 0; i < 2; i++) pthread_join(th[i], NULL);
  if (w[0].found + w[1].found != 2 * (N / 2)) bl_die("raw two threads: lost keys");
  a = w[0].t_start < w[1].t_start ? w[0].t_start : w[1].t_start;
  b = w[0].t_end > w[1].t_end ? w[0].t_end : w[1].t_end;
  *put = (double)(2 * (N / 2)) / (b - a);
  a = w[0].t_get_start < w[1].t_get_start ? w[0].t_get_start : w[1].t_get_start;
  b = w[0].t_get_end > w[1].t_get_end ? w[0].t_get_end : w[1].t_get_end;
  *get = (double)(2 * (N / 2)) / (b - a);
  raw_destroy(&ht);
  pthread_barrier_destroy(&barrier);
}

/* ---- Latency: round trips and the open loop ---- */

/* ck_ht_set_spmc: an upsert of a copied key and value (the previous pair, if any, is freed), as engram_store. */
static void raw_set(ck_ht_t *ht, const char *key, int kl) {
  char *k = malloc((size_t)kl), *v = malloc(sizeof raw_value);
  ck_ht_entry_t e;
  ck_ht_hash_t h;
  if (k == NULL || v == NULL) bl_die("out of memory");
  memcpy(k, key, (size_t)kl);
  memcpy(v, raw_value, sizeof raw_value);
  ck_ht_hash(&h, ht, k, (uint16_t)kl);
  ck_ht_entry_set(&e, h, k, (uint16_t)kl, v);
  if (!ck_ht_set_spmc(ht, h, &e)) bl_die("ck_ht_set_spmc failed");
  if (!ck_ht_entry_empty(&e)) {
    free(ck_ht_entry_key(&e));
    free(ck_ht_entry_value(&e));
  }
}

typedef struct {
  ck_ht_t ht;
  long base;
  int get;
} rawlat_t;

/* The raw side completes inside submit (the drivers allow it): ck_ht is a synchronous library. */
static int raw_lat_submit(bl_drv_t *d, long i, void *token) {
  rawlat_t *r = d->ctx;
  char key[64], out[VALUE_BYTES];
  int kl = bl_key(key, "lat:", (r->base + i) % N); /* overwrites of the N keys (submit_store) */
  if (r->get) bl_complete(token, raw_get(&r->ht, key, kl, out) ? 0 : -1, "ck_ht: key missing");
  else {
    raw_set(&r->ht, key, kl);
    bl_complete(token, 0, NULL);
  }
  return 0;
}

/* Both sides on one loop, each with N keys stored first (so the tables are the same size): the raw peak from
 * the closed loop (overwrites of those keys), round trips of store and retrieve, then the open loop at fractions
 * of that peak. */
static void latency(void) {
  uv_loop_t loop;
  bl_drv_t d;
  ectx_t c;
  rawlat_t *r = calloc(1, sizeof *r);
  bl_open_spec_t sp;
  double peak;
  long n_rt = bl_env_long("BENCH_CACHE_RT_N", bl_scaled(200000));
  if (r == NULL) bl_die("out of memory");
  uv_loop_init(&loop);
  memset(&c, 0, sizeof c);
  c.mgr = bl_manager(&loop);
  c.prefix = "lat:";
  bl_add_source(c.mgr, &loop, "cache", &engram_source_cache, NULL);
  raw_init(&r->ht);
  bl_closed_loop(&d, &loop, raw_lat_submit, r, N, WINDOW);
  bl_closed_loop(&d, &loop, submit_store, &c, N, WINDOW);
  bl_check(&d, "engram store (latency set-up)");
  peak = bl_closed_loop(&d, &loop, raw_lat_submit, r, N, WINDOW); /* overwrites, on the full table */
  {
    bl_rt_side_t rt[2] = {{.submit = submit_store, .ctx = &c, .what = "engram store, one in flight", .on = 1},
                          {.submit = raw_lat_submit, .ctx = r, .what = "ck_ht set, one in flight", .on = 1}};
    bl_round_trips(&d, &loop, rt, 2, n_rt);
    bl_result_round_trip("cache", "store vs ck_ht set", &rt[0].out, &rt[1].out);
    r->get = 1;
    rt[0].submit = submit_retrieve;
    rt[0].what = "engram retrieve, one in flight";
    rt[1].what = "ck_ht get, one in flight";
    bl_round_trips(&d, &loop, rt, 2, n_rt);
    bl_result_round_trip("cache", "retrieve vs ck_ht get", &rt[0].out, &rt[1].out);
    r->get = 0;
  }
  memset(&sp, 0, sizeof sp);
  sp.bench = "cache";
  sp.op = "store vs ck_ht set";
  sp.loop = &loop;
  sp.eng = submit_store;
  sp.eng_ctx = &c;
  sp.raw = raw_lat_submit;
  sp.raw_ctx = r;
  sp.raw_peak = peak;
  sp.raw_peak_how = "ck_ht sets overwriting the N keys under the closed-loop driver, 1,000 in flight";
  sp.open_saturation = 1; /* a ck_ht set costs less than the open loop's bookkeeping per call */
  bl_open_loads(&sp);
  bl_close_manager(c.mgr, &loop);
  raw_destroy(&r->ht);
  free(r);
  if (uv_loop_close(&loop) != 0) bl_die("loop not closed");
}

/* ---- Memory per item ---- */

static double key_bytes(long n) {
  char key[64];
  double total = 0;
  long i;
  for (i = 0; i < n; i++) total += bl_key(key, "mem:", i);
  return total / (double)n;
}

static double measure_engram_memory(long n) {
  uv_loop_t loop;
  bl_drv_t d;
  ectx_t c;
  size_t rss0, rss1;
  memset(&c, 0, sizeof c);
  uv_loop_init(&loop);
  c.mgr = bl_manager(&loop);
  c.prefix = "warm:";
  bl_add_source(c.mgr, &loop, "cache", &engram_source_cache, NULL);
  /* Warm up the request path (allocator arenas, reply buffers) with keys that are deleted afterwards. */
  bl_closed_loop(&d, &loop, submit_store, &c, WINDOW * 4, WINDOW);
  rss0 = bl_rss_bytes();
  c.prefix = "mem:";
  bl_closed_loop(&d, &loop, submit_store, &c, n, WINDOW);
  bl_check(&d, "engram store (memory)");
  rss1 = bl_rss_bytes();
  return ((double)rss1 - (double)rss0) / (double)n;
}

static double measure_raw_memory(long n) {
  ck_ht_t ht;
  char key[64];
  size_t rss0, rss1;
  long i;
  raw_init(&ht);
  rss0 = bl_rss_bytes();
  for (i = 0; i < n; i++) raw_put(&ht, key, bl_key(key, "mem:", i));
  rss1 = bl_rss_bytes();
  return ((double)rss1 - (double)rss0) / (double)n;
}

/* Runs fn(n) in a forked child and returns its figure. */
static double in_child(double (*fn)(long), long n) {
  int fd[2], st;
  double v = -1;
  pid_t pid;
  if (pipe(fd) != 0) bl_die("pipe failed");
  fflush(stdout);
  pid = fork();
  if (pid < 0) bl_die("fork failed");
  if (pid == 0) {
    close(fd[0]);
    v = fn(n);
    if (write(fd[1], &v, sizeof v) != (ssize_t)sizeof v) _exit(1);
    _exit(0);
  }
  close(fd[1]);
  if (read(fd[0], &v, sizeof v) != (ssize_t)sizeof v) bl_die("memory child failed");
  close(fd[0]);
  waitpid(pid, &st, 0);
  return v;
}

int main(void) {
  double e_put = 0, e_get, r_put = -1, r_get = -1, e2_put, e2_get, r2_put, r2_get, e_mem = 0, r_mem = 0, kb = 0;
  double e_cpu[2] = {0, 0}, r_cpu[2] = {-1, -1};
  long n_mem;
  N = bl_env_long("BENCH_CACHE_N", bl_scaled(1000000));
  n_mem = N;
  memset(raw_value, 'v', sizeof raw_value);
  value200 = bl_value200();
  if (bl_want("memory")) {
    /* Memory first, in children forked from a process that has not grown its heap yet. */
    kb = key_bytes(n_mem);
    e_mem = in_child(measure_engram_memory, n_mem) - kb - VALUE_BYTES;
    r_mem = in_child(measure_raw_memory, n_mem) - kb - VALUE_BYTES;
  }

  if (bl_want("one-core")) {
    bl_section("cache vs ck_ht (copied key + 200-byte value), one core");
    bl_note("N = %ld; engram: %d calls in flight through the actor, each callback submits the next", N, WINDOW);
    if (getenv("BENCH_ENGRAM_ONLY") == NULL) raw_one_core(&r_put, &r_get, r_cpu);
    else r_put = r_get = r_cpu[0] = r_cpu[1] = -1; /* profiling engram alone */
    engram_one_core(&e_put, &e_get, e_cpu);
    bl_result("cache", "store (put) calls/s, one core", e_put, r_put, "calls/s");
    bl_result("cache", "retrieve (get) calls/s, one core", e_get, r_get, "calls/s");
    bl_result("cache", "store (put) CPU time per call, one core", e_cpu[0], r_cpu[0], "us");
    bl_result("cache", "retrieve (get) CPU time per call, one core", e_cpu[1], r_cpu[1], "us");
  }

  if (bl_want("threads")) {
    bl_section("cache vs ck_ht, calls from 2 threads at once");
    bl_note("2 threads x %d calls in flight; baseline: 2 threads, puts under one mutex, gets lock-free (ck_ht SPMC)",
            WINDOW);
    bl_note("(a) manager on the first thread's loop, the second thread's replies via a completion queue on its loop");
    bl_note("(b) manager on a thread of its own, each thread's replies via a completion queue on its loop");
    raw_two_threads(&r2_put, &r2_get);
    engram_two_threads_home(&e2_put, &e2_get);
    bl_result("cache", "store calls/s, 2 threads (a: home loop)", e2_put, r2_put, "calls/s");
    bl_result("cache", "retrieve calls/s, 2 threads (a: home loop)", e2_get, r2_get, "calls/s");
    engram_two_threads(&e2_put, &e2_get);
    bl_result("cache", "store calls/s, 2 threads (b: manager thread)", e2_put, r2_put, "calls/s");
    bl_result("cache", "retrieve calls/s, 2 threads (b: manager thread)", e2_get, r2_get, "calls/s");
  }

  if (bl_want("latency")) {
    bl_section("cache latency: round trips, and open-loop Poisson arrivals at fractions of ck_ht's peak");
    latency();
  }

  if (bl_want("memory")) {
    bl_section("cache memory per item beyond key and value bytes");
    bl_note("%ld items, mean key %.1f bytes, value %d bytes (JSON text); resident-set growth / N - key - value", n_mem,
            kb, VALUE_BYTES);
    bl_result("cache", "bytes per item beyond key+value", e_mem, r_mem, "bytes");
  }
  cJSON_Delete(value200);
  return 0;
}
