/*
 * benchlib.h — what the benchmark programs (tests/bench/bench_*.c) share: the clock, the result record (one
 * table row on stdout and one JSON object a line in $BENCH_RESULTS), the drivers, the Debian corpus reader, the
 * known-item task's sample, resident memory, and the engram manager set-up the programs repeat.
 *
 * Drivers: a closed loop that keeps a window of calls in flight (each completion submits the next; with a
 * window of 1 and a latency histogram it is the pure round trip, bl_round_trip); an open loop (bl_open_loop)
 * that offers Poisson arrivals at a fixed rate from a fixed-seed schedule and times every call from its
 * intended start, as wrk2 does, so a client that falls behind is charged for the wait (no coordinated
 * omission); and the older paced driver (a 1 ms uv_timer submitting bursts), kept for bench_vector.
 * The drivers are agnostic of what they drive: a submit function starts call i and hands it a token, and
 * whatever finishes the call (an engram callback, a hiredis reply, a synchronous raw operation) reports the
 * token to bl_complete. So engram and the raw client it is held against run under the same harness, on the
 * same schedule. Latencies go into the log-linear histogram of hdr.h.
 */
#ifndef ENGRAM_BENCHLIB_H
#define ENGRAM_BENCHLIB_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "engram.h"
#include "hdr.h"

/* Seconds on the monotonic clock. */
double bl_now(void);
/* CPU seconds (user + system) used by this process so far, all threads. */
double bl_cpu_s(void);
/* The integer in environment variable name, or def. Scale knobs: BENCH_SCALE multiplies every count. */
long bl_env_long(const char *name, long def);
/* n scaled by $BENCH_SCALE (a float, default 1), at least 1. */
long bl_scaled(long n);

/* Non-zero when section name should run: $BENCH_ONLY unset, or a comma-separated list naming it. */
int bl_want(const char *name);
/* Prints a section heading. */
void bl_section(const char *title);
/* Records one figure: a table row and a JSON line {"bench","metric","engram","baseline","ratio","unit"}.
 * baseline < 0 (or NAN) means there is none (null in JSON). */
void bl_result(const char *bench, const char *metric, double engram, double baseline, const char *unit);
/* Prints a note under the current section (and keeps it out of the JSON). */
void bl_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prints a message and exits with status 1 (after the atexit cleanups, which stop servers). */
void bl_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* ---- Drivers ---- */

typedef struct bl_drv_s bl_drv_t;
/* Starts call i; the call later reports token to bl_complete (possibly before this returns, for synchronous
 * baselines under the paced driver). Returns 0, or non-zero to abort the run. */
typedef int (*bl_submit_fn)(bl_drv_t *d, long i, void *token);

typedef struct {
  uint64_t t0; /* the call's start, ns (uv_hrtime): its submission, or its intended start in the open loop */
  bl_drv_t *d;
  long i;
} bl_slot_t;

struct bl_drv_s {
  uv_loop_t *loop;
  bl_submit_fn submit;
  void *ctx;                  /* the caller's */
  void (*tick_end)(bl_drv_t *d); /* paced: called after each tick's submissions (e.g. commit a raw batch) */
  long n, window, sent, done, errors;
  long base;                  /* closed loop: index of the first call (bl_round_trips' blocks) */
  int first_status;
  char first_msg[256];
  bl_slot_t *slots;
  uint64_t *lat;              /* paced: latency of each completed call, ns */
  long n_lat;
  double rate;                /* paced: offered calls per second */
  double cpu_us;              /* closed loop: CPU time of this whole process per call, us (all threads) */
  uint64_t start_ns;
  uv_timer_t timer;
  int timer_on;
  /* Closed loop: calls that completed inside their own submission wait here for the submitting frame, so a
   * synchronous baseline does not recurse once per call. */
  int in_submit;
  bl_slot_t **ready;
  long n_ready;
  /* Latency histograms (round trip, open loop): every successful call; open loop also the calls in the first
   * and the last fifth of the schedule, and the pacing lag (actual submission - intended start). */
  bl_hdr_t *hist, *hist_first, *hist_last, *lag;
  /* Open loop */
  uint64_t *sched;            /* intended start of call i, ns after start_ns */
  long fifth;
  uint64_t last_done_ns;
  int spin, idle_on;
  uv_async_t async;
  uv_idle_t idle;
  pthread_t pacer;
};

/* Reports the end of the call that was given token. status 0 = success; msg may be NULL. */
void bl_complete(void *token, int status, const char *msg);
/* An engram_cb that reports ud (a token) to bl_complete. */
void bl_engram_cb(int status, const engram_reply_t *reply, void *ud);
/* Like bl_engram_cb, but ENGRAM_ENOTFOUND counts as success (reads of keys that may be missing). */
void bl_engram_cb_found_ok(int status, const engram_reply_t *reply, void *ud);

/* Runs n calls with window in flight on loop; returns calls per second. Calls that failed are in d->errors
 * (the run goes on). submit must finish its calls asynchronously (never inside submit). */
double bl_closed_loop(bl_drv_t *d, uv_loop_t *loop, bl_submit_fn submit, void *ctx, long n, long window);

typedef struct {
  double p50_us, p99_us, p999_us, achieved; /* achieved: completed calls per second over the run */
  double offered;                           /* the rate offered */
  double cpu_us;                            /* CPU time of the whole process per completed call, us */
  double p50_first_us, p50_last_us;         /* median latency of the first and the last fifth of the calls */
  double max_us, mean_us;                   /* open loop and round trip */
  double lag_p50_us, lag_p99_us;            /* open loop: how late the driver submitted calls (pacing lag) */
  double seconds;                           /* open loop: length of the schedule */
  long calls, errors;
} bl_lat_t;

/* The pure round trip: n calls, one in flight at a time, each timed from its submission to its completion
 * (a baseline may complete inside submit). achieved is calls per second. */
bl_lat_t bl_round_trip(bl_drv_t *d, uv_loop_t *loop, bl_submit_fn submit, void *ctx, long n);
/* One side of bl_round_trips: what to run, its name for a failure, whether it runs, and its figures. */
typedef struct {
  bl_submit_fn submit;
  void *ctx;
  const char *what;
  int on;
  bl_lat_t out;
} bl_rt_side_t;
/* The round trips of k sides (engram and its raw client), n calls each, run in alternating blocks of
 * $BENCH_RT_BLOCK (100) calls so that every side sees the same conditions; block b runs call indices
 * b*B .. b*B+B-1 on every side, and the side that goes first rotates. achieved is calls per second over the
 * side's own blocks. Exits on a failed call, naming the side. */
void bl_round_trips(bl_drv_t *d, uv_loop_t *loop, bl_rt_side_t *sides, int k, long n);

/* The open loop: offers rate calls per second for seconds as Poisson arrivals (exponential gaps from a
 * fixed-seed generator, $BENCH_SEED or 20261206: the same schedule for every side run at that rate), submits
 * each call when its intended start comes (calls already due are submitted in order, up to 1,000 per wake, then
 * the loop gets a turn), waits for the last completion, and measures every call from its intended start to its
 * completion. Waking: the loop spins with a uv_idle handle (poll with a zero timeout; sched_yield when nothing
 * was due; a uv_timer covers gaps over 2 ms), which submits within a microsecond of the intended start while the
 * loop is free; $BENCH_PACER=thread
 * instead has a pacing thread sleep until the next intended start (clock_nanosleep, absolute, timer slack 1 ns)
 * and wake the loop with a uv_async — measured on the quiet 2-core machine it was late by 40 us (p50) at 100k
 * calls/s and by 1.7 ms at 1M/s, and its wake-ups took a core too, so spinning is the default.
 * Calls refused at submission or failed are counted in errors and left out of the percentiles. */
bl_lat_t bl_open_loop(bl_drv_t *d, uv_loop_t *loop, bl_submit_fn submit, void *ctx, double rate, double seconds);

/* One operation of one source held against its raw client in the open loop, at fixed fractions of the raw
 * client's saturation rate (raw_peak, measured in the same run with the closed-loop driver): for each load of
 * $BENCH_LOADS (percent, default "10,50,80") it runs engram and the raw client (alternating which goes first
 * from one load to the next), on the same schedule, for
 * max($BENCH_LATENCY_S (default 2), 20,000 calls) seconds (at most 10 s), and records p50/p99/p999 and the
 * completed calls/s, each as engram/raw. Call i of each run has key index i in both runs. $BENCH_OPEN_BASE
 * (calls/s) replaces the measured rate as the base of the loads, so that runs of two builds on a noisy machine
 * are offered the same rates (the measured one varied 1.0-1.6 M/s between runs of the cache's). */
typedef struct {
  const char *bench, *op;   /* e.g. "redis", "store" */
  uv_loop_t *loop;
  bl_submit_fn eng, raw;
  void *eng_ctx, *raw_ctx;
  double raw_peak;          /* calls/s */
  const char *raw_peak_how; /* how raw_peak was measured, for the note */
  /* Non-zero for a raw client whose call costs less than the open-loop driver's own bookkeeping (ck_ht): the
   * driver cannot offer it its closed-loop peak, so the loads are taken of the rate it completes when the open
   * loop offers that peak for 0.5 s (its saturation rate when driven and timed the same way), if lower. */
  int open_saturation;
} bl_open_spec_t;
void bl_open_loads(const bl_open_spec_t *s);
/* Records the round trips of one operation: p50/p99/p999 and calls/s, one in flight, engram against raw. */
void bl_result_round_trip(const char *bench, const char *op, const bl_lat_t *eng, const bl_lat_t *raw);
/* Records p50/p99/p999 of eng against base (may be NULL) as "<prefix> p50" etc., with notes on refusals. */
void bl_result_percentiles(const char *bench, const char *prefix, const bl_lat_t *eng, const bl_lat_t *base);
/* Offers rate calls per second for seconds (a 1 ms uv_timer submits what is due), waits for the last call,
 * and returns the latency percentiles measured from each call's submission to its completion. */
bl_lat_t bl_paced(bl_drv_t *d, uv_loop_t *loop, bl_submit_fn submit, void *ctx, double rate, double seconds);
/* Non-zero when a paced run looks saturated: calls refused, under 95% of the offered rate completed, or a queue
 * that kept growing (the last fifth's median latency over twice the first fifth's, and over 1 ms). Latency is
 * meant to be measured below saturation. */
int bl_saturated(const bl_lat_t *l, double rate);
/* bl_paced for the engram side: while the run looks saturated (bl_saturated), says so and runs again at half the
 * rate (at most twice); *rate is the rate finally offered, to offer the baseline too. */
bl_lat_t bl_paced_engram(bl_drv_t *d, uv_loop_t *loop, bl_submit_fn submit, void *ctx, double *rate, double seconds);
/* Records the latency figures of one paced run (engram) against its baseline (base may be NULL). */
void bl_result_latency(const char *bench, const bl_lat_t *eng, const bl_lat_t *base, double rate);

/* Fails (exits) when d saw errors, naming what ran. */
void bl_check(const bl_drv_t *d, const char *what);

/* ---- engram set-up ---- */

/* A manager on loop (NULL: on its own thread) with default configuration. */
engram_manager_t *bl_manager(uv_loop_t *loop);
/* Adds a source and runs loop until it opened (exits on failure). loop NULL: waits for a manager on its own thread. */
void bl_add_source(engram_manager_t *mgr, uv_loop_t *loop, const char *name, const engram_source_vtable_t *vt,
                   const char *options_json);
/* Closes a manager on loop and runs the loop dry; closes the loop too when close_loop. */
void bl_close_manager(engram_manager_t *mgr, uv_loop_t *loop);
/* Runs one call synchronously on loop: returns its status (the reply is gone by then). */
typedef int (*bl_call_fn)(engram_manager_t *mgr, void *arg, engram_cb cb, void *ud);
int bl_sync(engram_manager_t *mgr, uv_loop_t *loop, bl_call_fn fn, void *arg);

/* ---- Data ---- */

typedef struct {
  char *key, *title, *text, *section;
  char *tags_json; /* the tags array as JSON text */
} bl_record_t;

typedef struct {
  bl_record_t *r;
  size_t n;
  size_t text_bytes;
} bl_corpus_t;

/* The corpus path: $ENGRAM_CORPUS, ../shared/corpus/..., /work/shared/corpus/...; NULL when none is readable. */
const char *bl_corpus_path(void);
/* Loads every record (exits when the corpus is missing or malformed); limit 0 = all. */
void bl_corpus_load(bl_corpus_t *c, size_t limit);
void bl_corpus_free(bl_corpus_t *c);
/* The known-item task's sample: n record indexes drawn with the fixed seed 20261122 (as tests/test_text_recall.c). */
void bl_known_item_sample(size_t ndocs, size_t *out, size_t n);

/* Stores every record into source (NULL = default) with window calls in flight: key = the record's key, value =
 * {"text": text}, metadata = {"title", "section", "tags"} (so only key and text are searchable, as the
 * known-item task requires). Returns items per second; exits when a store fails. */
double bl_ingest_engram(engram_manager_t *mgr, uv_loop_t *loop, const char *source, const bl_corpus_t *c,
                        long window);

/* Known-item search: for each of the first n_queries records of the fixed sample, search the record's title
 * (limit 10) one query at a time; a hit is the record's key among the results. */
typedef struct {
  double recall, mrr;   /* recall@10, MRR@10 */
  double mean_ms, first_ms; /* mean time of the queries after the first, and the first's (it may build an index) */
  size_t queries;
  double p50_ms;            /* median time of the queries after the first */
} bl_ki_t;
bl_ki_t bl_known_item_engram(engram_manager_t *mgr, uv_loop_t *loop, const char *source, const bl_corpus_t *c,
                             size_t n_queries);
/* Known-item search with any ranker: search(ud, query, out_docs, 10) fills up to 10 record indexes. */
typedef size_t (*bl_rank_fn)(void *ud, const char *query, size_t *out, size_t k);
bl_ki_t bl_known_item_raw(const bl_corpus_t *c, size_t n_queries, bl_rank_fn rank, void *ud);
/* Search under mixed load: n rounds of one store (an overwrite of a corpus record, acknowledged) then one
 * known-item query (timed alone). Returns the p50 query time in ms (after the first). */
double bl_mixed_search_p50(engram_manager_t *mgr, uv_loop_t *loop, const char *source, const bl_corpus_t *c,
                           size_t n);
/* Records recall@10, MRR@10 and the mean query time of e against base (NULL = none). */
void bl_result_known_item(const char *bench, const bl_ki_t *e, const bl_ki_t *base);

/* Resident set size of this process, bytes (/proc/self/statm). */
size_t bl_rss_bytes(void);

/* Writes prefix followed by the decimal i (≥ 0) into buf (room for strlen(prefix) + 21 bytes) and returns its
 * length: snprintf costs about as much as a whole cache call, so the cache comparison formats keys with this, on
 * both sides. */
int bl_key(char *buf, const char *prefix, long i);

/* A 200-byte JSON value: a string of 198 'v' (printed with its quotes: 200 bytes). */
cJSON *bl_value200(void);

/* A fresh temporary directory (mkdtemp under /tmp) removed at exit with everything in it. */
const char *bl_tmpdir(void);

#endif
