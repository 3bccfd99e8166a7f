/*
 * bench_redis.c — the redis source next to raw hiredis doing the same work against the same server (as the
 * redis_raw anchor: hiredis async on libuv, 1,000 commands in flight).
 *
 *  1. N stores then N retrieves of a 200-byte value through engram with 1,000 calls in flight, against raw SET
 *     then GET of the same keys and value with 1,000 commands in flight on one hiredis async connection;
 *  2. latency p50/p99/p999 of store at half the measured engram peak, offered from a 1 ms uv_timer, against
 *     the same pacing of raw SETs;
 *  3. known-item search quality on the Debian corpus (the source ranks text with BM25 over the namespace's
 *     items, fetched from Redis per query), on the first $BENCH_REDIS_QUERIES (default 10) queries of the
 *     fixed 200-query sample, since every query reads the whole namespace.
 * The server is a fresh redis-server on a free loopback port in a temporary directory (tests/support/
 * redis_server.c), stopped at exit. N defaults to 200,000 ($BENCH_REDIS_N).
 */
#include <hiredis/adapters/libuv.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/benchlib.h"
#include "support/redis_server.h"

#define WINDOW 1000

static long N;
static int port;
static cJSON *value200;
static char *value_text; /* value200 as JSON text: the bytes both sides send */

/* ---- Raw hiredis ---- */

typedef struct {
  redisAsyncContext *ac;
  int get;
  const char *prefix;
} raw_t;

static void raw_reply(redisAsyncContext *ac, void *reply, void *token) {
  redisReply *r = reply;
  (void)ac;
  if (r == NULL || r->type == REDIS_REPLY_ERROR) bl_complete(token, -1, r ? r->str : "connection lost");
  else bl_complete(token, 0, NULL);
}

static int raw_submit(bl_drv_t *d, long i, void *token) {
  raw_t *r = d->ctx;
  char key[64];
  snprintf(key, sizeof key, "%s%ld", r->prefix, i);
  if (r->get) return redisAsyncCommand(r->ac, raw_reply, token, "GET %s", key) != REDIS_OK;
  return redisAsyncCommand(r->ac, raw_reply, token, "SET %s %s", key, value_text) != REDIS_OK;
}

static void raw_connect(raw_t *r, uv_loop_t *loop) {
  memset(r, 0, sizeof *r);
  r->ac = redisAsyncConnect("127.0.0.1", port);
  if (r->ac == NULL || r->ac->err) bl_die("hiredis connect: %s", r->ac ? r->ac->errstr : "out of memory");
  redisLibuvAttach(r->ac, loop);
}

static void raw_disconnect(raw_t *r, uv_loop_t *loop) {
  redisAsyncDisconnect(r->ac);
  uv_run(loop, UV_RUN_NOWAIT);
}

/* ---- engram ---- */

typedef struct {
  engram_manager_t *mgr;
  const char *prefix;
} ectx_t;

static int submit_store(bl_drv_t *d, long i, void *token) {
  ectx_t *c = d->ctx;
  char key[64];
  snprintf(key, sizeof key, "%s%ld", c->prefix, i);
  return engram_store(c->mgr, key, value200, NULL, bl_engram_cb, token);
}

static int submit_retrieve(bl_drv_t *d, long i, void *token) {
  ectx_t *c = d->ctx;
  char key[64];
  snprintf(key, sizeof key, "%s%ld", c->prefix, i);
  return engram_retrieve(c->mgr, key, NULL, bl_engram_cb, token);
}

/* Notes the server's own time per command (INFO commandstats) since the last reset, then resets the counters:
 * where a gap to the raw client comes from the server's side, this shows it. */
static void server_stats(const char *what) {
  char out[8192], line[600] = "", *p;
  size_t used = 0;
  if (redis_cli(out, sizeof out, "INFO", "commandstats", NULL) != 0) return;
  for (p = strtok(out, "\r\n"); p != NULL; p = strtok(NULL, "\r\n")) {
    char name[64];
    long calls;
    double usec_per_call;
    if (sscanf(p, "cmdstat_%63[^:]:calls=%ld,usec=%*d,usec_per_call=%lf", name, &calls, &usec_per_call) == 3 &&
        calls >= 1000 && used < sizeof line - 80)
      used += (size_t)snprintf(line + used, sizeof line - used, "%s%s %ld x %.2f us", used ? ", " : "", name, calls,
                               usec_per_call);
  }
  bl_note("redis-server time per command, %s: %s", what, used ? line : "(none)");
  redis_cli(out, sizeof out, "CONFIG", "RESETSTAT", NULL);
}

static void flushall(void) {
  char out[64];
  if (redis_cli(out, sizeof out, "FLUSHALL", NULL) != 0) bl_die("redis-cli FLUSHALL failed");
}

int main(void) {
  uv_loop_t loop;
  bl_drv_t d;
  ectx_t c;
  raw_t r;
  char opts[256];
  double eset, eget, rset = -1, rget = -1, cpu[4] = {0, 0, 0, 0};
  N = bl_env_long("BENCH_REDIS_N", bl_scaled(200000));
  value200 = bl_value200();
  value_text = cJSON_PrintUnformatted(value200);
  if ((port = redis_server_start(0)) < 0) bl_die("could not start redis-server");
  uv_loop_init(&loop);
  memset(&c, 0, sizeof c);
  c.mgr = bl_manager(&loop);
  snprintf(opts, sizeof opts, "{\"host\": \"127.0.0.1\", \"port\": %d, \"prefix\": \"engram:\"}", port);
  bl_add_source(c.mgr, &loop, "redis", &engram_source_redis, opts);

  bl_section("redis vs raw hiredis async (same server, 1,000 in flight)");
  bl_note("N = %ld, 200-byte value; redis-server %d on 127.0.0.1 (fresh, no persistence)", N, port);
  if (getenv("BENCH_ENGRAM_ONLY") == NULL) {
    raw_connect(&r, &loop);
    r.prefix = "anchor:";
    rset = bl_closed_loop(&d, &loop, raw_submit, &r, N, WINDOW);
    bl_check(&d, "raw SET");
    cpu[2] = d.cpu_us;
    r.get = 1;
    rget = bl_closed_loop(&d, &loop, raw_submit, &r, N, WINDOW);
    bl_check(&d, "raw GET");
    cpu[3] = d.cpu_us;
    raw_disconnect(&r, &loop);
    server_stats("raw");
    flushall();
  }
  c.prefix = "anchor:";
  eset = bl_closed_loop(&d, &loop, submit_store, &c, N, WINDOW);
  bl_check(&d, "engram redis store");
  cpu[0] = d.cpu_us;
  eget = bl_closed_loop(&d, &loop, submit_retrieve, &c, N, WINDOW);
  bl_check(&d, "engram redis retrieve");
  cpu[1] = d.cpu_us;
  server_stats("engram");
  bl_note("client CPU per call (this process): engram store %.2f us, retrieve %.2f us; raw SET %.2f us, GET %.2f us",
          cpu[0], cpu[1], cpu[2], cpu[3]);
  bl_result("redis", "store calls/s (raw: SET)", eset, rset, "calls/s");
  bl_result("redis", "retrieve calls/s (raw: GET)", eget, rget, "calls/s");
  flushall();

  if (bl_want("latency")) {
    double rate = eset / 2;
    bl_lat_t eng, raw;
    bl_section("redis store latency at half the engram peak (1 ms uv_timer pacing)");
    c.prefix = "lat:";
    memset(&d, 0, sizeof d);
    eng = bl_paced_engram(&d, &loop, submit_store, &c, &rate, 2.0);
    raw_connect(&r, &loop);
    r.prefix = "rawlat:";
    memset(&d, 0, sizeof d);
    raw = bl_paced(&d, &loop, raw_submit, &r, rate, 2.0);
    raw_disconnect(&r, &loop);
    bl_result_latency("redis", &eng, &raw, rate);
    flushall();
  }

  if (bl_want("search")) {
    long q = bl_env_long("BENCH_REDIS_QUERIES", 10);
    bl_corpus_t corpus;
    bl_ki_t k;
    double rate;
    bl_section("redis known-item search on the Debian corpus");
    bl_corpus_load(&corpus, 0);
    rate = bl_ingest_engram(c.mgr, &loop, NULL, &corpus, WINDOW);
    bl_note("%zu records stored at %.0f items/s; the first %ld queries of the 200-query sample", corpus.n, rate, q);
    k = bl_known_item_engram(c.mgr, &loop, NULL, &corpus, (size_t)q);
    bl_result_known_item("redis", &k, NULL);
    bl_corpus_free(&corpus);
  }

  bl_close_manager(c.mgr, &loop);
  uv_run(&loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&loop) != 0) bl_die("loop not closed");
  redis_server_stop();
  cJSON_free(value_text);
  cJSON_Delete(value200);
  return 0;
}
