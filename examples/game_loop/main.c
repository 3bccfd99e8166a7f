/*
 * game_loop — engram in a program that has no libuv loop of its own: a plain C game loop at 60 frames/s.
 *
 * The manager runs on a thread of its own (engram_manager_new with loop = NULL). Two threads of the game call
 * it: the game thread (each frame: store the player's state, read the score, every second a save into the
 * SQLite source) and a physics thread (120 steps/s: store_many of the bodies' positions into the cache). Every
 * call names one completion queue, and the game thread drains it once per frame with engram_cq_poll — so all
 * callbacks run on the game thread, between frames, and game state needs no locks. At the end the physics
 * thread stops, the queue is drained until every call has been answered, and engram_manager_shutdown joins
 * the manager's thread.
 *
 * Usage: game_loop [--frames N] [--quiet]   (default 180 frames = 3 s; prints calls answered per frame)
 */
#include <engram.h>

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define FPS 60
#define PHYSICS_HZ 120
#define N_BODIES 16

static engram_manager_t *mgr;
static engram_cq_t *cq;
static atomic_int physics_run = 1;
static atomic_ulong submitted; /* calls that returned 0, from both threads */

/* Game-thread state: only callbacks (run by engram_cq_poll on this thread) and the loop touch it. */
static unsigned long answered, answered_frame, failed, game_calls, physics_calls;
static unsigned long frame;
static double latency_frames_sum;
static int sources_ready, sources_failed;
static unsigned long ready_frame;
static double score;

typedef struct {
  unsigned long frame; /* frame at submit (physics: the frame counter it read) */
  int physics;
} tag_t;

static int64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Every reply: counted per frame; the latency in frames says how long a call took to come back. */
static void on_reply(int status, const engram_reply_t *reply, void *ud) {
  tag_t *t = ud;
  answered++;
  answered_frame++;
  if (t->physics) physics_calls++;
  else game_calls++;
  latency_frames_sum += (double)(frame - t->frame);
  if (status != 0 && status != ENGRAM_ENOTFOUND) {
    if (failed++ == 0) fprintf(stderr, "game_loop: a call failed: %s %s\n", engram_err_name(status), reply->message);
  }
  if (status == 0 && reply->op == ENGRAM_OP_RETRIEVE && reply->n_items == 1 && cJSON_IsNumber(reply->items[0].value))
    score = reply->items[0].value->valuedouble;
  free(t);
}

static tag_t *tag(int physics, unsigned long at) {
  tag_t *t = malloc(sizeof *t);
  if (t == NULL) abort();
  t->frame = at;
  t->physics = physics;
  return t;
}

static void counted(int rc, tag_t *t, const char *what) {
  if (rc == 0) {
    atomic_fetch_add(&submitted, 1);
    return;
  }
  fprintf(stderr, "game_loop: %s refused: %s (%s)\n", what, engram_err_name(rc), engram_last_error());
  free(t);
}

/* ---- The physics thread: its own fixed step, its own calls, replies delivered to the game's queue ---- */

static atomic_ulong frame_now; /* the game's frame counter, published for the physics thread */

static void *physics(void *arg) {
  float x[N_BODIES], v[N_BODIES];
  int64_t next = mono_ns(), step_ns = 1000000000 / PHYSICS_HZ;
  (void)arg;
  for (int i = 0; i < N_BODIES; i++) x[i] = (float)i, v[i] = 1.0f + (float)i / 8;
  while (atomic_load(&physics_run)) {
    engram_entry_t e[N_BODIES];
    cJSON *vals[N_BODIES];
    char keys[N_BODIES][24];
    engram_opts_t o = {0};
    struct timespec ts;
    for (int i = 0; i < N_BODIES; i++) {
      x[i] += v[i] / PHYSICS_HZ;
      if (x[i] > 100 || x[i] < 0) v[i] = -v[i];
      snprintf(keys[i], sizeof keys[i], "body:%d", i);
      vals[i] = cJSON_CreateObject();
      cJSON_AddNumberToObject(vals[i], "x", x[i]);
      cJSON_AddNumberToObject(vals[i], "v", v[i]);
      e[i] = (engram_entry_t){keys[i], vals[i], NULL, 0, 0};
    }
    o.source = "world", o.cq = cq;
    tag_t *t = tag(1, atomic_load(&frame_now));
    counted(engram_store_many(mgr, e, N_BODIES, &o, on_reply, t), t, "physics store_many");
    for (int i = 0; i < N_BODIES; i++) cJSON_Delete(vals[i]); /* engram copied them */
    next += step_ns;
    ts.tv_sec = next / 1000000000, ts.tv_nsec = next % 1000000000;
    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
  }
  return NULL;
}

/* add_source callbacks run on the manager's thread (the call names no queue): publish with atomics. */
static atomic_int added, add_failed;
static void on_added(int status, const engram_reply_t *reply, void *ud) {
  (void)ud;
  if (status != 0) {
    fprintf(stderr, "game_loop: add_source: %s\n", reply->message);
    atomic_fetch_add(&add_failed, 1);
  }
  atomic_fetch_add(&added, 1);
}

static int add_score(const cJSON *cur, cJSON **next, void *ud) {
  (void)ud;
  *next = cJSON_CreateNumber((cJSON_IsNumber(cur) ? cur->valuedouble : 0) + 10);
  return *next ? 0 : ENGRAM_ENOMEM;
}

int main(int argc, char **argv) {
  unsigned long frames = 180, min_per_frame = (unsigned long)-1, max_per_frame = 0;
  int quiet = 0, rc;
  pthread_t phys;
  int64_t start, next, frame_ns = 1000000000 / FPS, busiest_ns = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--frames") == 0 && i + 1 < argc) frames = strtoul(argv[++i], NULL, 10);
    else if (strcmp(argv[i], "--quiet") == 0) quiet = 1;
    else {
      fprintf(stderr, "usage: game_loop [--frames N] [--quiet]\n");
      return 2;
    }
  }
  setvbuf(stdout, NULL, _IOLBF, 0);

  /* The manager on its own thread; a completion queue nobody's loop drains: we poll it per frame. */
  if ((rc = engram_manager_new(&mgr, NULL, NULL)) != 0 || (rc = engram_cq_new(&cq, NULL)) != 0) {
    fprintf(stderr, "game_loop: %s\n", engram_err_name(rc));
    return 1;
  }
  engram_manager_add_source(mgr, "world", &engram_source_cache, NULL, "live world state", 1, on_added, NULL);
  engram_manager_add_source(mgr, "saves", &engram_source_sqlite, "{\"path\": \":memory:\"}", "save games", 0,
                            on_added, NULL);

  printf("game_loop: %lu frames at %d frames/s; physics at %d steps/s on its own thread\n", frames, FPS, PHYSICS_HZ);
  start = next = mono_ns();
  for (frame = 0; frame < frames; frame++) {
    int64_t t0 = mono_ns(), work;
    engram_opts_t o = {0};
    struct timespec ts;
    atomic_store(&frame_now, frame);
    answered_frame = 0;
    engram_cq_poll(cq, 0); /* every reply that arrived since the last frame: callbacks run here */

    if (!sources_ready) { /* loading screen until both sources are open */
      if (atomic_load(&added) == 2) {
        sources_ready = 1;
        ready_frame = frame;
        sources_failed = atomic_load(&add_failed);
        if (sources_failed) break;
        if (pthread_create(&phys, NULL, physics, NULL) != 0) return 1;
        printf("frame %3lu: sources open, physics started\n", frame);
      }
    } else {
      /* The frame's own calls: the player's state, the score, and once a second a save game. */
      cJSON *player = cJSON_CreateObject();
      tag_t *t;
      cJSON_AddNumberToObject(player, "frame", (double)frame);
      cJSON_AddNumberToObject(player, "x", (double)(frame % 100));
      o.source = "world", o.cq = cq;
      t = tag(0, frame);
      counted(engram_store(mgr, "player:1", player, &o, on_reply, t), t, "store");
      t = tag(0, frame);
      counted(engram_retrieve(mgr, "score", &o, on_reply, t), t, "retrieve");
      if (frame % 10 == 0) {
        t = tag(0, frame);
        counted(engram_update(mgr, "score", add_score, NULL, &o, on_reply, t), t, "update");
      }
      if (frame % FPS == 0) {
        o.source = "saves";
        t = tag(0, frame);
        counted(engram_store(mgr, "save:latest", player, &o, on_reply, t), t, "save");
      }
      cJSON_Delete(player);
    }
    work = mono_ns() - t0;
    if (work > busiest_ns) busiest_ns = work;
    if (sources_ready && frame > ready_frame + 1) { /* frames whose previous frame made calls */
      if (answered_frame < min_per_frame) min_per_frame = answered_frame;
      if (answered_frame > max_per_frame) max_per_frame = answered_frame;
    }
    if (!quiet)
      printf("frame %3lu: %2lu calls answered, %3zu waiting, score %4.0f, frame work %5.2f ms\n", frame, answered_frame,
             engram_cq_pending(cq), score, (double)work / 1e6);
    next += frame_ns;
    ts.tv_sec = next / 1000000000, ts.tv_nsec = next % 1000000000;
    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
  }

  /* Stop: no more calls, then drain until every accepted call has been answered, then join the manager. */
  if (sources_ready && !sources_failed) {
    atomic_store(&physics_run, 0);
    pthread_join(phys, NULL);
  }
  {
    int64_t deadline = mono_ns() + 5 * (int64_t)1000000000;
    while (answered < atomic_load(&submitted) && mono_ns() < deadline) {
      struct timespec ts = {0, 1000000}; /* 1 ms: the game would be rendering */
      if (engram_cq_poll(cq, 0) == 0) nanosleep(&ts, NULL);
    }
  }
  if ((rc = engram_manager_shutdown(mgr)) != 0) fprintf(stderr, "game_loop: shutdown: %s\n", engram_err_name(rc));
  engram_cq_poll(cq, 0); /* anything the shutdown canceled */
  engram_cq_free(cq);

  printf("game_loop: %lu frames in %.2f s; %lu calls submitted, %lu answered (game %lu, physics %lu), %lu failed;\n"
         "  per frame %lu..%lu answered, mean reply latency %.2f frames, busiest frame %.2f ms; score %.0f\n",
         frame, (double)(mono_ns() - start) / 1e9, (unsigned long)atomic_load(&submitted), answered, game_calls,
         physics_calls, failed, min_per_frame == (unsigned long)-1 ? 0 : min_per_frame, max_per_frame,
         answered ? latency_frames_sum / (double)answered : 0, (double)busiest_ns / 1e6, score);
  return sources_failed || failed || answered != atomic_load(&submitted) ? 1 : 0;
}
