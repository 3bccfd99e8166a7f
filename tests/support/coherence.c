/*
 * coherence.c — the cross-process coherence check (coherence.h): the worker that runs interleaved writes and
 * reads through tiered(cache, durable) and checks that the versions it sees of each key never go back, and the
 * parent's side that starts several workers as processes of their own (the test program re-executed), releases
 * them together and gathers what they report. Waits are on conditions (a line arrived, a process exited) with
 * generous deadlines, never on sleeps of a guessed length.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "support/coherence.h"

/* ---- Synchronous helpers over one manager ---- */

void coh_add(ctx_t *c, const char *name, const engram_source_vtable_t *vt, const char *options) {
  result_t r = {0};
  assert_int_equal(engram_manager_add_source(c->mgr, name, vt, options, name, 0, capture_cb, &r), 0);
  wait_for(c, &r.calls, 1, 30000);
  if (r.status != 0) fail_msg("add_source(%s): %s (%s)", name, engram_err_name(r.status), r.message);
  result_reset(&r);
}

static cJSON *info_of(ctx_t *c, const char *source, result_t *r) {
  engram_opts_t o = {0};
  o.source = source;
  if (s_info(c, &o, r) != 0 || r->info == NULL) return NULL;
  return r->info;
}

void coh_state(ctx_t *c, const char *source, char *out, size_t outlen) {
  result_t r = {0};
  cJSON *info = info_of(c, source, &r), *s;
  s = info ? cJSON_GetObjectItem(info, "coherence") : NULL;
  snprintf(out, outlen, "%s", cJSON_IsString(s) ? s->valuestring : "?");
  result_reset(&r);
}

static uint64_t mono_ms(void) { return uv_hrtime() / 1000000u; }

void coh_wait_state(ctx_t *c, const char *source, const char *want, int timeout_ms) {
  uint64_t end = mono_ms() + (uint64_t)timeout_ms;
  char st[32];
  for (;;) {
    coh_state(c, source, st, sizeof st);
    if (strcmp(st, want) == 0) return;
    if (mono_ms() > end) fail_msg("source %s: coherence is \"%s\" after %d ms, waited for \"%s\"", source, st, timeout_ms, want);
    run_for(c, 5); /* lets the channel's connection make progress between two looks */
  }
}

double coh_info_number(ctx_t *c, const char *source, const char *field) {
  result_t r = {0};
  cJSON *info = info_of(c, source, &r), *v;
  double d = -1;
  v = info ? cJSON_GetObjectItem(info, field) : NULL;
  if (cJSON_IsNumber(v)) d = v->valuedouble;
  else if (cJSON_IsArray(v) && cJSON_IsNumber(cJSON_GetArrayItem(v, 0))) d = cJSON_GetArrayItem(v, 0)->valuedouble;
  result_reset(&r);
  return d;
}

uint64_t coh_version(ctx_t *c, const char *source, const char *key) {
  result_t r = {0};
  engram_opts_t o = {0};
  uint64_t v = 0;
  int st;
  o.source = source;
  st = s_retrieve(c, key, &o, &r);
  if (st == 0) v = (uint64_t)cJSON_GetNumberValue(result_item(&r, 0, "version"));
  else if (st != ENGRAM_ENOTFOUND) fail_msg("retrieve %s from %s: %s (%s)", key, source, engram_err_name(st), r.message);
  result_reset(&r);
  return v;
}

uint64_t coh_store(ctx_t *c, const char *source, const char *key, int n) {
  result_t r = {0};
  engram_opts_t o = {0};
  char json[64];
  uint64_t v;
  int st;
  o.source = source;
  snprintf(json, sizeof json, "{\"v\": %d}", n);
  st = s_store(c, key, json, &o, &r);
  if (st != 0) fail_msg("store %s through %s: %s (%s)", key, source, engram_err_name(st), r.message);
  v = (uint64_t)cJSON_GetNumberValue(result_item(&r, 0, "version"));
  result_reset(&r);
  return v;
}

/* ---- The worker ---- */

#define LANES 4
#define MAX_KEYS 1000
#define MAX_WORKERS 8
/* Percent of calls that are writes: few enough that, without invalidation, a copy of another process's key
 * would stay stale in a worker's cache tier far longer than STALE_MS. */
#define WRITE_PCT 20
/* A write another process acknowledged this long before a read started must be visible to that read: a deadline
 * for the invalidation to arrive and be acted on, generous because on a busy machine the listening server process
 * or this worker may wait that long for a core (a quiet run's p99 is ~0.15 ms, make bench's invalidation rows). A
 * worker that never invalidates keeps its stale copies for the rest of the run (seconds) and still fails, and a
 * single lost invalidation is caught without any timing by settle() at the end. Reads
 * older than LATE_MS but inside the deadline are counted and printed, not failed (CI failed once at 54-68 ms with
 * the deadline at 50 ms, on a loaded machine). */
#define STALE_MS_DEFAULT 500
#define LATE_MS 50

/* Shared between the workers (a file mapped by each): per worker and key, the newest version it had
 * acknowledged and when (CLOCK_MONOTONIC µs, which every process of the machine shares). The time is written
 * before the version and read after it, so a reader never pairs a version with a time earlier than its own. */
typedef struct {
  _Atomic uint64_t version;
  _Atomic uint64_t at_us;
} acked_t;

/* The shared file: the acknowledged versions, then a flag per worker set once all its calls came back. */
typedef struct {
  acked_t acked[MAX_WORKERS * MAX_KEYS];
  _Atomic int done[MAX_WORKERS];
} shared_t;

/* After every worker finished, how long the invalidations of the last writes may take to reach each cache tier. */
#define SETTLE_MS 10000

typedef struct worker_s worker_t;

typedef struct {
  worker_t *w;
  int lane;
  long done;
  int busy_key;
  int writing;
  uint64_t start_us;
} lane_t;

struct worker_s {
  engram_manager_t *mgr;
  int id, keys;
  long ops, started, finished;
  int fin; /* finished, as the int loop_wait counts */
  uint64_t seen[MAX_KEYS];
  acked_t *shared;         /* [MAX_WORKERS][MAX_KEYS], or NULL */
  shared_t *sh;            /* the whole shared file (shared == sh->acked), or NULL */
  uint64_t stale_us;
  long stale_reads, late_reads;
  uint64_t rng;
  long reads, writes, violations, errors;
  lane_t lanes[LANES];
};

static uint64_t next_rand(worker_t *w) {
  w->rng ^= w->rng << 13;
  w->rng ^= w->rng >> 7;
  w->rng ^= w->rng << 17;
  return w->rng;
}

static void lane_next(lane_t *l);

static uint64_t mono_us(void) { return uv_hrtime() / 1000u; }

static void op_done(int status, const engram_reply_t *reply, void *ud) {
  lane_t *l = ud;
  worker_t *w = l->w;
  int k = l->busy_key;
  uint64_t v = 0;
  if (status == 0 && reply->n_items > 0) v = reply->items[0].version;
  if (status != 0 && !(status == ENGRAM_ENOTFOUND && !l->writing)) {
    w->errors++;
    fprintf(stderr, "worker %d: %s k%03d: %s (%s)\n", w->id, l->writing ? "store" : "retrieve", k,
            engram_err_name(status), reply->message ? reply->message : "");
  } else if (l->writing) {
    w->writes++;
    if (v <= w->seen[k]) { /* a write acknowledged after seeing seen[k] must be newer */
      w->violations++;
      fprintf(stderr, "worker %d: store k%03d acknowledged version %llu after seeing %llu\n", w->id, k,
              (unsigned long long)v, (unsigned long long)w->seen[k]);
    }
    if (v > w->seen[k]) w->seen[k] = v;
    if (w->shared != NULL) {
      acked_t *a = &w->shared[(w->id - 1) * MAX_KEYS + k];
      if (v > atomic_load(&a->version)) {
        atomic_store(&a->at_us, mono_us());
        atomic_store(&a->version, v);
      }
    }
  } else {
    w->reads++;
    if (v < w->seen[k]) { /* not found (0) counts as older too once a version was seen */
      w->violations++;
      fprintf(stderr, "worker %d: retrieve k%03d read version %llu after seeing %llu\n", w->id, k,
              (unsigned long long)v, (unsigned long long)w->seen[k]);
    }
    if (v > w->seen[k]) w->seen[k] = v;
    if (w->shared != NULL) { /* another worker's write acknowledged well before this read started */
      int j;
      for (j = 0; j < MAX_WORKERS; j++) {
        acked_t *a = &w->shared[j * MAX_KEYS + k];
        uint64_t ov = atomic_load(&a->version), at = atomic_load(&a->at_us);
        if (j + 1 != w->id && ov > v && at + LATE_MS * 1000u < l->start_us && at + w->stale_us >= l->start_us) {
          w->late_reads++;
          break;
        }
        if (j + 1 != w->id && ov > v && at + w->stale_us < l->start_us) {
          w->stale_reads++;
          fprintf(stderr, "worker %d: retrieve k%03d read version %llu although worker %d had version %llu "
                  "acknowledged %llu ms before the read started\n", w->id, k, (unsigned long long)v, j + 1,
                  (unsigned long long)ov, (unsigned long long)((l->start_us - at) / 1000));
          break;
        }
      }
    }
  }
  w->finished++;
  w->fin++;
  lane_next(l);
}

/* Starts the lane's next call: a key of the lane's own set (keys k with k % LANES == lane), a write or a read. */
static void lane_next(lane_t *l) {
  worker_t *w = l->w;
  engram_opts_t o = {0};
  char key[16];
  int per = (w->keys - l->lane + LANES - 1) / LANES, rc;
  if (w->started >= w->ops || per <= 0) return;
  w->started++;
  l->busy_key = l->lane + LANES * (int)(next_rand(w) % (uint64_t)per);
  l->writing = next_rand(w) % 100 < WRITE_PCT;
  /* The lower half of the keys is written by every worker (their writes race); each key of the upper half has
   * one writer (worker 1 the even ones, worker 2 the odd ones), so that another worker's copy of it is never
   * refreshed by a write of its own: only invalidation can keep it fresh. */
  if (l->writing && l->busy_key >= w->keys / 2 && l->busy_key % 2 != (w->id - 1) % 2) l->writing = 0;
  l->start_us = mono_us();
  snprintf(key, sizeof key, "k%03d", l->busy_key);
  o.source = "t";
  if (l->writing) {
    cJSON *v = cJSON_CreateObject();
    cJSON_AddNumberToObject(v, "w", w->id);
    cJSON_AddNumberToObject(v, "i", (double)w->started);
    rc = engram_store(w->mgr, key, v, &o, op_done, l);
    cJSON_Delete(v);
  } else {
    rc = engram_retrieve(w->mgr, key, &o, op_done, l);
  }
  if (rc != 0) {
    fprintf(stderr, "worker %d: call refused: %s\n", w->id, engram_err_name(rc));
    w->errors++;
    w->finished++;
    w->fin++;
  }
}

/* Runs the loop once without blocking, then naps a millisecond: the wait step for a condition another process
 * makes true (a flag in the shared file), with the loop still serving this worker's invalidations. */
static void poll_step(ctx_t *c) {
  uv_run(&c->loop, UV_RUN_NOWAIT);
  sleep_ms(1);
}

/* The check that needs no timing: once every worker's calls came back, no write is left to come, so within
 * SETTLE_MS every key read through the tiered source must show at least the newest version another worker had
 * acknowledged — a lost invalidation leaves the older copy in this worker's cache tier for good. Returns 0, or -1
 * when the other workers did not finish in time (reported). Stale keys count as violations. */
static int settle(worker_t *w, ctx_t *c) {
  const char *n_env = getenv("COH_WORKERS");
  int n = n_env ? atoi(n_env) : 0, j, k, stale = 0, finished;
  uint64_t end;
  char key[16];
  if (n < 1 || n > MAX_WORKERS) return 0;
  atomic_store(&w->sh->done[w->id - 1], 1);
  end = mono_us() + 60000000u;
  do {
    for (finished = 0, j = 0; j < n; j++) finished += atomic_load(&w->sh->done[j]);
    if (finished < n) poll_step(c);
  } while (finished < n && mono_us() < end);
  if (finished < n) {
    fprintf(stderr, "worker %d: the other workers did not finish in 60 s\n", w->id);
    return -1;
  }
  end = mono_us() + SETTLE_MS * 1000u;
  for (;;) {
    stale = 0;
    for (k = 0; k < w->keys; k++) {
      uint64_t want = 0, v;
      for (j = 0; j < n; j++)
        if (j + 1 != w->id && atomic_load(&w->shared[j * MAX_KEYS + k].version) > want)
          want = atomic_load(&w->shared[j * MAX_KEYS + k].version);
      if (want == 0) continue;
      snprintf(key, sizeof key, "k%03d", k);
      if ((v = coh_version(c, "t", key)) < want) {
        stale++;
        if (mono_us() >= end)
          fprintf(stderr, "worker %d: k%03d still reads version %llu %d ms after every worker finished; another "
                  "worker had version %llu acknowledged\n", w->id, k, (unsigned long long)v, SETTLE_MS,
                  (unsigned long long)want);
      }
    }
    if (stale == 0 || mono_us() >= end) break;
    poll_step(c);
  }
  w->violations += stale;
  return 0;
}

int coh_worker_main(int argc, char **argv, const engram_source_vtable_t *vt) {
  static worker_t w;
  ctx_t c;
  char opts[256], go;
  int i;
  if (argc < 7) return 2;
  memset(&w, 0, sizeof w);
  w.id = atoi(argv[2]);
  w.ops = atol(argv[3]);
  w.rng = strtoull(argv[4], NULL, 10) | 1u;
  w.keys = atoi(argv[5]);
  if (w.keys <= 0 || w.keys > MAX_KEYS || w.id < 1 || w.id > MAX_WORKERS) return 2;
  w.stale_us = (uint64_t)(getenv("COH_STALE_MS") ? atol(getenv("COH_STALE_MS")) : STALE_MS_DEFAULT) * 1000u;
  if (getenv("COH_SHARED") != NULL) {
    int fd = open(getenv("COH_SHARED"), O_RDWR);
    void *m = fd < 0 ? MAP_FAILED
                     : mmap(NULL, sizeof(shared_t), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (fd >= 0) close(fd);
    if (m == MAP_FAILED) return 2;
    w.sh = m;
    w.shared = w.sh->acked;
  }
  ctx_init(&c, NULL);
  w.mgr = c.mgr;
  coh_add(&c, "c", &engram_source_cache, NULL);
  coh_add(&c, "d", vt, argv[6]);
  snprintf(opts, sizeof opts, "{\"tiers\": [\"c\", \"d\"], \"coherence\": \"%s\"}",
           getenv("COH_MODE") ? getenv("COH_MODE") : "notify");
  coh_add(&c, "t", &engram_source_tiered, opts);
  if (getenv("COH_MODE") == NULL || strcmp(getenv("COH_MODE"), "off") != 0) coh_wait_state(&c, "t", "up", 20000);
  printf("READY\n");
  fflush(stdout);
  if (read(0, &go, 1) != 1) return 3;
  for (i = 0; i < LANES; i++) {
    w.lanes[i].w = &w;
    w.lanes[i].lane = i;
    lane_next(&w.lanes[i]);
  }
  /* Runs until every call came back (60 s at most: a lost callback fails the worker, not the whole run). */
  if (!loop_wait(&c.loop, &w.fin, (int)w.ops, 60000)) {
    fprintf(stderr, "worker %d: %ld of %ld calls came back in 60 s\n", w.id, w.finished, w.ops);
    return 4;
  }
  if (w.sh != NULL && settle(&w, &c) != 0) return 5;
  if (w.late_reads > 0)
    fprintf(stderr, "worker %d: %ld reads returned a version older than one another worker had acknowledged %d+ ms "
            "before (a late invalidation, inside the %llu ms deadline)\n", w.id, w.late_reads, LATE_MS,
            (unsigned long long)(w.stale_us / 1000u));
  printf("RESULT %ld %ld %ld %ld %ld %ld\n", w.finished, w.reads, w.writes, w.violations + w.errors + w.stale_reads,
         (long)coh_info_number(&c, "t", "read_hits"), (long)coh_info_number(&c, "t", "remote_invalidations"));
  fflush(stdout);
  ctx_close(&c);
  return 0;
}

/* ---- The parent ---- */

typedef struct {
  pid_t pid;
  int in_fd, out_fd;
  char buf[512];
  size_t len;
  int ready, done;
} child_t;

/* Reads what child wrote; marks READY and parses RESULT. 0, or -1 at EOF. */
static int child_read(child_t *ch, coh_result_t *res) {
  ssize_t k = read(ch->out_fd, ch->buf + ch->len, sizeof ch->buf - 1 - ch->len);
  char *nl;
  if (k <= 0) return -1;
  ch->len += (size_t)k;
  ch->buf[ch->len] = '\0';
  while ((nl = strchr(ch->buf, '\n')) != NULL) {
    *nl = '\0';
    if (strcmp(ch->buf, "READY") == 0) ch->ready = 1;
    else if (strncmp(ch->buf, "RESULT ", 7) == 0 &&
             sscanf(ch->buf + 7, "%ld %ld %ld %ld %ld %ld", &res->ops, &res->reads, &res->writes, &res->violations,
                    &res->cache_hits, &res->remote) == 6)
      ch->done = 1;
    ch->len -= (size_t)(nl + 1 - ch->buf);
    memmove(ch->buf, nl + 1, ch->len + 1);
  }
  return 0;
}

int coh_run_workers(int n, long ops, int keys, const char *durable_options, int deadline_ms, coh_result_t *out) {
  child_t ch[8];
  uint64_t end = mono_ms() + (uint64_t)deadline_ms;
  int i, rc = 0, released = 0;
  char self[4096];
  ssize_t sl = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n > 8 || sl <= 0) return -1;
  self[sl] = '\0';
  memset(ch, 0, sizeof ch);
  { /* the workers' shared record of acknowledged versions (see acked_t) */
    static char path[64];
    int fd;
    snprintf(path, sizeof path, "/tmp/engram_coh_%d_XXXXXX", (int)getpid());
    char nw[16];
    if ((fd = mkstemp(path)) < 0 || ftruncate(fd, (off_t)sizeof(shared_t)) != 0) return -1;
    close(fd);
    setenv("COH_SHARED", path, 1);
    snprintf(nw, sizeof nw, "%d", n);
    setenv("COH_WORKERS", nw, 1); /* the workers wait for each other at the end (settle) */
  }
  for (i = 0; i < n; i++) {
    int in[2], outp[2];
    char id[16], nops[32], seed[32], nkeys[16];
    if (pipe(in) != 0 || pipe(outp) != 0) return -1;
    snprintf(id, sizeof id, "%d", i + 1);
    snprintf(nops, sizeof nops, "%ld", ops);
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)(time(NULL) * 7919u + (unsigned)i * 104729u + (unsigned)getpid()));
    snprintf(nkeys, sizeof nkeys, "%d", keys);
    fflush(NULL);
    if ((ch[i].pid = fork()) == 0) {
      dup2(in[0], 0);
      dup2(outp[1], 1);
      close(in[0]);
      close(in[1]);
      close(outp[0]);
      close(outp[1]);
      execl(self, self, "--coherence-worker", id, nops, seed, nkeys, durable_options, (char *)NULL);
      _exit(127);
    }
    close(in[0]);
    close(outp[1]);
    ch[i].in_fd = in[1];
    ch[i].out_fd = outp[0];
    memset(&out[i], 0, sizeof out[i]);
  }
  for (;;) {
    struct pollfd pf[8];
    int live = 0, all_ready = 1, all_done = 1;
    for (i = 0; i < n; i++) {
      all_ready &= ch[i].ready;
      all_done &= ch[i].done || ch[i].out_fd < 0;
      pf[i].fd = ch[i].out_fd;
      pf[i].events = POLLIN;
      pf[i].revents = 0;
      live += ch[i].out_fd >= 0;
    }
    if (all_ready && !released) { /* every worker's channel is up: release them together */
      for (i = 0; i < n; i++)
        if (write(ch[i].in_fd, "g", 1) != 1) rc = -1;
      released = 1;
    }
    if (all_done || live == 0) break;
    if (mono_ms() > end) {
      fprintf(stderr, "coherence: the workers did not finish within %d ms\n", deadline_ms);
      rc = -1;
      break;
    }
    if (poll(pf, (nfds_t)n, 200) < 0 && errno != EINTR) {
      rc = -1;
      break;
    }
    for (i = 0; i < n; i++)
      if (ch[i].out_fd >= 0 && (pf[i].revents & (POLLIN | POLLHUP)) && child_read(&ch[i], &out[i]) != 0) {
        close(ch[i].out_fd);
        ch[i].out_fd = -1;
      }
  }
  unlink(getenv("COH_SHARED"));
  unsetenv("COH_SHARED");
  unsetenv("COH_WORKERS");
  for (i = 0; i < n; i++) {
    int st = 0;
    if (rc != 0) kill(ch[i].pid, SIGKILL);
    close(ch[i].in_fd);
    if (ch[i].out_fd >= 0) close(ch[i].out_fd);
    waitpid(ch[i].pid, &st, 0);
    out[i].exit_status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    if (!ch[i].done) {
      fprintf(stderr, "coherence: worker %d reported no result (exit %d)\n", i + 1, out[i].exit_status);
      rc = -1;
    }
  }
  return rc;
}
