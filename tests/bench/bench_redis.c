/*
 * bench_redis.c — the redis source next to raw hiredis doing the same work against the same server (as the
 * redis_raw anchor: hiredis async on libuv, 1,000 commands in flight).
 *
 *  1. N stores then N retrieves of a 200-byte value through engram with 1,000 calls in flight, against raw SET
 *     then GET of the same keys and value with 1,000 commands in flight on one hiredis async connection; and
 *     the same N stores (new keys, then overwrites of them) against raw hiredis doing the same work with the
 *     source's own scripts (sources/redis/redis_script.c), same keys and arguments: (a) one EVALSHA of the one-item
 *     store script per store, what a client of this data layout sends per call; (b) the source's batch store
 *     script, the stores of each loop turn coalesced into one EVALSHA of up to 64 items (flushed from a
 *     uv_prepare handle, as the source does) — the same server work as engram, so that ratio is engram's own
 *     client-side overhead;
 *  2. latency: (a) round trips, one call in flight: store against SET, retrieve against GET, $BENCH_REDIS_RT_N
 *     (20,000) each; (b) the open loop (benchlib's bl_open_loads): store against SET under Poisson arrivals at
 *     10, 50 and 80% of raw SET's closed-loop peak from (1), the same schedule for both, each call timed from
 *     its intended start to its reply (p50/p99/p999 from an HDR-style histogram, and the calls/s completed);
 *  3. retrieve_many of 55 keys (a conversation window's read: 54 messages and the summary key), 1 call in
 *     flight, against raw hiredis sending the same 55 HMGETs of the six fields at once (formatted once, sent with
 *     redisAsyncFormattedCommand) and waiting for the last reply (the same server work; the raw side parses no
 *     JSON): p50 of the round trip, $BENCH_REDIS_MANY_N
 *     (5,000) calls each, taken alternately in blocks of 100 so that both sides see the same load;
 *  4. known-item search quality and time on the Debian corpus (the source ranks text with BM25 over the
 *     namespace's items: a walk over them per query, or its cached index; $BENCH_REDIS_SEARCH_CACHE=0 turns the
 *     cache off) on the first $BENCH_REDIS_QUERIES (default 200) queries of the fixed 200-query sample; the
 *     results are then checked against the previous implementation's ranking (an engram_text_index over the
 *     namespace's items in key order): same keys, order and scores, or the bench fails.
 * The server is a fresh redis-server on a free loopback port in a temporary directory (tests/support/
 * redis_server.c), stopped at exit. N defaults to 200,000 ($BENCH_REDIS_N); $BENCH_REDIS_STORE_BATCH sets the
 * source's store_batch (default 64; 1 = a script call per store); $BENCH_LOADS and $BENCH_LATENCY_S shape (2b).
 */
#include <hiredis/adapters/libuv.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../sources/redis/redis_script.h" /* the store script the raw baseline sends */
#include "engram/source.h"                   /* engram_now_ms, the text index the results are checked against */
#include "bench/benchlib.h"
#include "support/redis_server.h"

#define WINDOW 1000

static long N;
static int port;
static cJSON *value200;
static char *value_text; /* value200 as JSON text: the bytes both sides send */

/* ---- Raw hiredis ---- */

enum { RAW_SET = 0, RAW_GET, RAW_SCRIPT, RAW_BATCH };
#define RAW_BATCH_MAX 64 /* the source's default store_batch */

/* RAW_BATCH: the stores of one loop turn, sent as one call of the batch script. */
typedef struct {
  long n;
  void *tokens[RAW_BATCH_MAX];
  char keys[RAW_BATCH_MAX][64];
  char items[RAW_BATCH_MAX][80];
  char now[RAW_BATCH_MAX][24];
} raw_batch_t;

typedef struct {
  redisAsyncContext *ac;
  int mode;
  const char *prefix;
  char sha[41];       /* RAW_SCRIPT, RAW_BATCH: the script's SHA1 */
  raw_batch_t *pend;  /* RAW_BATCH: the batch being formed */
  uv_prepare_t prep;
  int prep_on;
} raw_t;

static void raw_reply(redisAsyncContext *ac, void *reply, void *token) {
  redisReply *r = reply;
  (void)ac;
  if (r == NULL || r->type == REDIS_REPLY_ERROR) bl_complete(token, -1, r ? r->str : "connection lost");
  /* The store script answers {version, created}; a negative version is a refusal. */
  else if (r->type == REDIS_REPLY_ARRAY && (r->elements < 1 || r->element[0]->type != REDIS_REPLY_INTEGER ||
                                            r->element[0]->integer <= 0))
    bl_complete(token, -1, "the store script refused the store");
  else bl_complete(token, 0, NULL);
}

/* What the redis source sends for engram_store(key, value200) with no options in namespace "" (prefix
 * "engram:"): EVALSHA store 4 <item hash> <index> <namespaces> <generation> create_only if_version now expires
 * value metadata key ns. */
static int raw_script(raw_t *r, const char *key, void *token) {
  char item[96], now[24];
  const char *argv[15];
  size_t len[15];
  int k;
  snprintf(item, sizeof item, "engram:i:0::%s", key);
  snprintf(now, sizeof now, "%lld", (long long)engram_now_ms());
  argv[0] = "EVALSHA", argv[1] = r->sha, argv[2] = "4", argv[3] = item, argv[4] = "engram:x:0:";
  argv[5] = "engram:namespaces", argv[6] = "engram:g:0:", argv[7] = "0", argv[8] = "0", argv[9] = now;
  argv[10] = "0", argv[11] = value_text, argv[12] = "", argv[13] = key, argv[14] = "";
  for (k = 0; k < 15; k++) len[k] = strlen(argv[k]);
  return redisAsyncCommandArgv(r->ac, raw_reply, token, 15, argv, len) != REDIS_OK;
}

static void raw_batch_reply(redisAsyncContext *ac, void *reply, void *pd) {
  raw_batch_t *b = pd;
  redisReply *r = reply;
  long i;
  (void)ac;
  for (i = 0; i < b->n; i++) {
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != (size_t)(2 * b->n))
      bl_complete(b->tokens[i], -1, r && r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
    else if (r->element[2 * i]->type != REDIS_REPLY_INTEGER || r->element[2 * i]->integer <= 0)
      bl_complete(b->tokens[i], -1, "the batch script refused a store");
    else bl_complete(b->tokens[i], 0, NULL);
  }
  free(b);
}

/* What the source sends for a batch of engram_store(key, value200) calls in namespace "": EVALSHA batch
 * <1 + n + 2 keys> <namespaces> <n item hashes> <index> <generation> n, per item cond now expires value
 * metadata key slot, then the namespace. */
static void raw_batch_send(raw_t *r) {
  raw_batch_t *b = r->pend;
  const char **argv;
  size_t *len, k = 0, argc;
  char nkeys[24], n[24];
  long i;
  r->pend = NULL;
  if (b == NULL) return;
  argc = 3 + (size_t)(1 + b->n + 2) + (size_t)(1 + 7 * b->n + 1);
  argv = malloc(argc * sizeof *argv);
  len = malloc(argc * sizeof *len);
  if (argv == NULL || len == NULL) bl_die("out of memory");
  snprintf(nkeys, sizeof nkeys, "%ld", b->n + 3);
  snprintf(n, sizeof n, "%ld", b->n);
  argv[k++] = "EVALSHA", argv[k++] = r->sha, argv[k++] = nkeys, argv[k++] = "engram:namespaces";
  for (i = 0; i < b->n; i++) argv[k++] = b->items[i];
  argv[k++] = "engram:x:0:";
  argv[k++] = "engram:g:0:";
  argv[k++] = n;
  for (i = 0; i < b->n; i++) {
    argv[k++] = "0", argv[k++] = b->now[i], argv[k++] = "0", argv[k++] = value_text, argv[k++] = "";
    argv[k++] = b->keys[i], argv[k++] = "0";
  }
  argv[k++] = "";
  for (k = 0; k < argc; k++) len[k] = strlen(argv[k]);
  if (redisAsyncCommandArgv(r->ac, raw_batch_reply, b, (int)argc, argv, len) != REDIS_OK)
    bl_die("hiredis refused a command");
  free(argv);
  free(len);
}

static void raw_on_prep(uv_prepare_t *h) {
  raw_t *r = h->data;
  raw_batch_send(r);
  uv_prepare_stop(h);
  r->prep_on = 0;
}

static int raw_batch_add(raw_t *r, const char *key, void *token) {
  raw_batch_t *b = r->pend;
  if (b == NULL) {
    if ((b = r->pend = malloc(sizeof *b)) == NULL) return -1;
    b->n = 0;
    if (!r->prep_on) {
      uv_prepare_start(&r->prep, raw_on_prep);
      r->prep_on = 1;
    }
  }
  b->tokens[b->n] = token;
  snprintf(b->keys[b->n], sizeof b->keys[b->n], "%s", key);
  snprintf(b->items[b->n], sizeof b->items[b->n], "engram:i:0::%s", key);
  snprintf(b->now[b->n], sizeof b->now[b->n], "%lld", (long long)engram_now_ms());
  if (++b->n == RAW_BATCH_MAX) raw_batch_send(r);
  return 0;
}

static int raw_submit(bl_drv_t *d, long i, void *token) {
  raw_t *r = d->ctx;
  char key[64];
  snprintf(key, sizeof key, "%s%ld", r->prefix, i);
  if (r->mode == RAW_GET) return redisAsyncCommand(r->ac, raw_reply, token, "GET %s", key) != REDIS_OK;
  if (r->mode == RAW_SCRIPT) return raw_script(r, key, token);
  if (r->mode == RAW_BATCH) return raw_batch_add(r, key, token);
  return redisAsyncCommand(r->ac, raw_reply, token, "SET %s %s", key, value_text) != REDIS_OK;
}

/* Loads one of the source's scripts into the server's cache (as the source's handshake does). */
static void raw_load_script(raw_t *r, int script) {
  char out[128];
  if (redis_cli(out, sizeof out, "SCRIPT", "LOAD", engram__redis_scripts[script], NULL) != 0 || strlen(out) != 40)
    bl_die("SCRIPT LOAD of the store script failed: %s", out);
  memcpy(r->sha, out, 41);
}

static void raw_connect(raw_t *r, uv_loop_t *loop) {
  memset(r, 0, sizeof *r);
  r->ac = redisAsyncConnect("127.0.0.1", port);
  if (r->ac == NULL || r->ac->err) bl_die("hiredis connect: %s", r->ac ? r->ac->errstr : "out of memory");
  redisLibuvAttach(r->ac, loop);
  uv_prepare_init(loop, &r->prep);
  r->prep.data = r;
}

static void raw_disconnect(raw_t *r, uv_loop_t *loop) {
  redisAsyncDisconnect(r->ac);
  uv_close((uv_handle_t *)&r->prep, NULL);
  uv_run(loop, UV_RUN_NOWAIT);
}

/* ---- retrieve_many of 55 keys against 55 pipelined HMGETs ---- */

#define MANY 55

typedef struct {
  engram_manager_t *mgr;
  redisAsyncContext *ac; /* raw */
  char keys[MANY][32];
  char items[MANY][48]; /* raw: the items' hashes */
  char *cmds[MANY];     /* raw: each HMGET in the protocol, formatted once (the source, too, sends pre-encoded
                         * commands: the raw side should not pay for printf-style formatting per call) */
  int cmd_len[MANY];
  const char *kp[MANY];
  long left;            /* raw: replies still due */
  int bad;
} many_t;

static void many_raw_reply(redisAsyncContext *ac, void *reply, void *token) {
  redisReply *r = reply;
  many_t *m = ac->data;
  if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 6 || r->element[0]->type != REDIS_REPLY_STRING)
    m->bad = 1;
  if (--m->left == 0) bl_complete(token, m->bad ? -1 : 0, m->bad ? "raw HMGET: an item missing" : NULL);
}

static int many_raw_submit(bl_drv_t *d, long i, void *token) {
  many_t *m = d->ctx;
  int k;
  (void)i;
  m->left = MANY;
  m->bad = 0;
  for (k = 0; k < MANY; k++)
    if (redisAsyncFormattedCommand(m->ac, many_raw_reply, token, m->cmds[k], (size_t)m->cmd_len[k]) != REDIS_OK)
      return -1;
  return 0;
}

static void many_engram_cb(int status, const engram_reply_t *reply, void *ud) {
  size_t k;
  if (status == 0 && reply->n_items != MANY) status = -1;
  for (k = 0; status == 0 && k < reply->n_items; k++)
    if (reply->items[k].status != 0 || reply->items[k].value == NULL) status = -1;
  bl_complete(ud, status, status ? "retrieve_many: an item missing" : NULL);
}

static int many_engram_submit(bl_drv_t *d, long i, void *token) {
  many_t *m = d->ctx;
  (void)i;
  return engram_retrieve_many(m->mgr, m->kp, MANY, NULL, many_engram_cb, token);
}

typedef struct {
  const char *key;
  const cJSON *value;
} many_store_t;

static int many_store(engram_manager_t *mgr, void *arg, engram_cb cb, void *ud) {
  many_store_t *a = arg;
  return engram_store(mgr, a->key, a->value, NULL, cb, ud);
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void server_stats(const char *what);

/* Stores the 55 items (a thread message's shape), then times both sides alternately; the figure is the median
 * of the blocks' p50s. The server's time per HMGET (INFO commandstats, both sides' together: the same
 * commands) is noted after. */
static void bench_many(engram_manager_t *mgr, uv_loop_t *loop) {
  static many_t m;
  bl_drv_t d;
  bl_lat_t e, r;
  long n = bl_env_long("BENCH_REDIS_MANY_N", bl_scaled(5000)), done;
  double eng_sum[3] = {0}, raw_sum[3] = {0};
  double *ep50, *rp50;
  int k, blocks = 0;
  memset(&m, 0, sizeof m);
  m.mgr = mgr;
  for (k = 0; k < MANY; k++) {
    cJSON *v = cJSON_CreateObject();
    snprintf(m.keys[k], sizeof m.keys[k], "many:%d", k);
    snprintf(m.items[k], sizeof m.items[k], "engram:i:0::many:%d", k);
    if ((m.cmd_len[k] = redisFormatCommand(&m.cmds[k], "HMGET %s value metadata created updated version expires",
                                           m.items[k])) <= 0)
      bl_die("out of memory");
    m.kp[k] = m.keys[k];
    cJSON_AddNumberToObject(v, "seq", 9946 + k);
    cJSON_AddStringToObject(v, "role", k % 2 ? "assistant" : "user");
    cJSON_AddStringToObject(v, "content", "We moved it to Saturday morning, after the database backup.");
    cJSON_AddNumberToObject(v, "created_at_ms", 1765000000000.0 + k);
    many_store_t a;
    a.key = m.keys[k];
    a.value = v;
    if (bl_sync(mgr, loop, many_store, &a) != 0) bl_die("storing the retrieve_many items failed");
    cJSON_Delete(v);
  }
  m.ac = redisAsyncConnect("127.0.0.1", port);
  if (m.ac == NULL || m.ac->err) bl_die("hiredis connect: %s", m.ac ? m.ac->errstr : "out of memory");
  m.ac->data = &m;
  redisLibuvAttach(m.ac, loop);
  ep50 = calloc((size_t)(n / 100 + 2), sizeof *ep50);
  rp50 = calloc((size_t)(n / 100 + 2), sizeof *rp50);
  if (ep50 == NULL || rp50 == NULL) bl_die("out of memory");
  server_stats("before the retrieve_many runs (the stores)");
  for (done = 0; done < n; done += 100, blocks++) {
    long b = n - done < 100 ? n - done : 100;
    e = bl_round_trip(&d, loop, many_engram_submit, &m, b);
    bl_check(&d, "engram retrieve_many of 55");
    r = bl_round_trip(&d, loop, many_raw_submit, &m, b);
    bl_check(&d, "raw 55 HMGETs");
    ep50[blocks] = e.p50_us;
    rp50[blocks] = r.p50_us;
    eng_sum[0] += e.p50_us, eng_sum[1] += e.p99_us, eng_sum[2] += e.mean_us;
    raw_sum[0] += r.p50_us, raw_sum[1] += r.p99_us, raw_sum[2] += r.mean_us;
  }
  redisAsyncDisconnect(m.ac);
  uv_run(loop, UV_RUN_NOWAIT);
  for (k = 0; k < MANY; k++) redisFreeCommand(m.cmds[k]);
  server_stats("the retrieve_many runs, engram's and raw's HMGETs together");
  qsort(ep50, (size_t)blocks, sizeof *ep50, cmp_double);
  qsort(rp50, (size_t)blocks, sizeof *rp50, cmp_double);
  bl_note("%ld calls each in %d alternating blocks of 100: p50 per block engram %.1f-%.1f us, raw %.1f-%.1f us; "
          "mean over blocks: p50 %.1f / %.1f us, p99 %.1f / %.1f us, mean %.1f / %.1f us (engram / raw)", n, blocks,
          ep50[0], ep50[blocks - 1], rp50[0], rp50[blocks - 1], eng_sum[0] / blocks, raw_sum[0] / blocks,
          eng_sum[1] / blocks, raw_sum[1] / blocks, eng_sum[2] / blocks, raw_sum[2] / blocks);
  bl_result("redis", "retrieve_many of 55 keys, 1 in flight, p50 vs raw (55 pipelined HMGETs; target <= 1.3)",
            ep50[blocks / 2], rp50[blocks / 2], "us");
  free(ep50);
  free(rp50);
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

static void on_info(int status, const engram_reply_t *reply, void *ud) {
  int *done = ud;
  const char *names[] = {"search_walks", "search_cache_hits", "search_cache_builds", "search_cache_stale",
                         "search_cache_items"};
  char line[300] = "";
  size_t i, used = 0;
  for (i = 0; status == 0 && i < sizeof names / sizeof names[0]; i++) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(reply->info, names[i]);
    used += (size_t)snprintf(line + used, sizeof line - used, "%s%s %.0f", i ? ", " : "", names[i],
                             cJSON_IsNumber(v) ? v->valuedouble : -1.0);
  }
  bl_note("source info: %s", status == 0 ? line : engram_err_name(status));
  *done = 1;
}

/* Notes how the source answered the searches: walks over the namespace, and the cached index's use. */
static void search_info(engram_manager_t *mgr, uv_loop_t *loop) {
  int done = 0;
  if (engram_info(mgr, NULL, on_info, &done) != 0) return;
  while (!done) uv_run(loop, UV_RUN_ONCE);
}

/* ---- Known-item search: the results against the previous implementation's ranking ---- */

/* The redis source used to rank by building an engram_text_index over the namespace's items in key order on
 * every query (ties by key). The reference does that once over what the ingest left in Redis (the last record
 * stored under each key), and every query's results through engram must match it: same keys, same order, and
 * bit-identical scores. */
typedef struct {
  const bl_corpus_t *c;
  size_t *docs; /* record index of each document, in key order */
  size_t n;
} ref_t;

static const bl_corpus_t *ref_corpus;

static int ref_cmp(const void *a, const void *b) {
  const size_t x = *(const size_t *)a, y = *(const size_t *)b;
  int r = strcmp(ref_corpus->r[x].key, ref_corpus->r[y].key);
  return r != 0 ? r : (x < y ? -1 : x > y); /* same key: the record stored last comes last */
}

static engram_text_index_t *ref_build(const bl_corpus_t *c, ref_t *ref) {
  engram_text_index_t *ix;
  size_t i, *all = malloc(c->n * sizeof *all);
  if (all == NULL || engram_text_index_new(&ix) != 0) bl_die("out of memory");
  for (i = 0; i < c->n; i++) all[i] = i;
  ref_corpus = c;
  qsort(all, c->n, sizeof *all, ref_cmp);
  ref->c = c;
  ref->docs = all;
  ref->n = 0;
  for (i = 0; i < c->n; i++) {
    const bl_record_t *rec = &c->r[all[i]];
    cJSON *v;
    char *text;
    if (i + 1 < c->n && strcmp(rec->key, c->r[all[i + 1]].key) == 0) continue; /* overwritten later */
    v = cJSON_CreateObject();
    if (v == NULL || !cJSON_AddStringToObject(v, "text", rec->text) || (text = engram_text_of(rec->key, v)) == NULL ||
        engram_text_index_put(ix, ref->n, text, strlen(text)) != 0)
      bl_die("out of memory");
    engram_free(text);
    cJSON_Delete(v);
    ref->docs[ref->n++] = all[i];
  }
  return ix;
}

typedef struct {
  int done, status;
  size_t n;
  char keys[10][1100];
  double scores[10];
} vout_t;

static void verify_cb(int status, const engram_reply_t *reply, void *ud) {
  vout_t *o = ud;
  size_t i;
  o->status = status;
  o->n = 0;
  for (i = 0; status == 0 && i < reply->n_items && i < 10; i++) {
    snprintf(o->keys[o->n], sizeof o->keys[0], "%s", reply->items[i].key);
    o->scores[o->n++] = reply->items[i].score;
  }
  o->done = 1;
}

/* Runs the first n queries of the sample again and compares each result list with the reference's. */
static void verify_known_item(engram_manager_t *mgr, uv_loop_t *loop, const bl_corpus_t *c, size_t n) {
  size_t sample[200], i, j, same = 0, nh;
  engram_text_hit_t hits[10];
  ref_t ref;
  engram_text_index_t *ix = ref_build(c, &ref);
  if (n > 200) n = 200;
  bl_known_item_sample(c->n, sample, 200);
  for (i = 0; i < n; i++) {
    engram_query_t q = ENGRAM_QUERY_INIT;
    vout_t o;
    int ok;
    memset(&o, 0, sizeof o);
    q.text = c->r[sample[i]].title;
    q.limit = 10;
    if (engram_search(mgr, &q, NULL, verify_cb, &o) != 0) bl_die("engram_search refused");
    while (!o.done) uv_run(loop, UV_RUN_ONCE);
    if (o.status != 0 || engram_text_index_search(ix, q.text, 10, NULL, NULL, NULL, hits, &nh) != 0)
      bl_die("verification query %zu failed", i);
    ok = nh == o.n;
    for (j = 0; ok && j < nh; j++)
      ok = strcmp(c->r[ref.docs[hits[j].doc]].key, o.keys[j]) == 0 && hits[j].score == o.scores[j];
    if (ok) same++;
    else bl_note("query %zu (\"%s\"): results differ from the reference", i, q.text);
  }
  bl_note("results identical to an engram_text_index over the same items, key order (the previous ranking): "
          "%zu of %zu queries (keys, order and scores)", same, n);
  if (same != n) bl_die("the ranking changed");
  engram_text_index_free(ix);
  free(ref.docs);
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
  double eset, eset2, eget, rset = -1, rget = -1, rscr = -1, rscr2 = -1, rbat = -1, rbat2 = -1, cpu[9] = {0};
  N = bl_env_long("BENCH_REDIS_N", bl_scaled(200000));
  value200 = bl_value200();
  value_text = cJSON_PrintUnformatted(value200);
  if ((port = redis_server_start(0)) < 0) bl_die("could not start redis-server");
  uv_loop_init(&loop);
  memset(&c, 0, sizeof c);
  c.mgr = bl_manager(&loop);
  /* $BENCH_REDIS_STORE_BATCH sets the source's store_batch (1 = one store per script call),
   * $BENCH_REDIS_SEARCH_CACHE its search_cache_items (0 = every text search walks the namespace). */
  snprintf(opts, sizeof opts,
           "{\"host\": \"127.0.0.1\", \"port\": %d, \"prefix\": \"engram:\", \"store_batch\": %ld, "
           "\"search_cache_items\": %ld}",
           port, bl_env_long("BENCH_REDIS_STORE_BATCH", 64), bl_env_long("BENCH_REDIS_SEARCH_CACHE", 250000));
  bl_add_source(c.mgr, &loop, "redis", &engram_source_redis, opts);

  bl_section("redis vs raw hiredis async (same server, 1,000 in flight)");
  bl_note("N = %ld, 200-byte value; redis-server %d on 127.0.0.1 (fresh, no persistence)", N, port);
  if (getenv("BENCH_ENGRAM_ONLY") == NULL) {
    raw_connect(&r, &loop);
    r.prefix = "anchor:";
    rset = bl_closed_loop(&d, &loop, raw_submit, &r, N, WINDOW);
    bl_check(&d, "raw SET");
    cpu[2] = d.cpu_us;
    r.mode = RAW_GET;
    rget = bl_closed_loop(&d, &loop, raw_submit, &r, N, WINDOW);
    bl_check(&d, "raw GET");
    cpu[3] = d.cpu_us;
    server_stats("raw SET, GET");
    flushall();
    /* The stores' work with the source's scripts: the one-item script per call, then the batch script over
     * the stores of each loop turn; new keys then overwrites. */
    r.mode = RAW_SCRIPT;
    raw_load_script(&r, RS_STORE);
    rscr = bl_closed_loop(&d, &loop, raw_submit, &r, N, WINDOW);
    bl_check(&d, "raw store script (new keys)");
    cpu[4] = d.cpu_us;
    server_stats("raw one-item store script, new keys");
    rscr2 = bl_closed_loop(&d, &loop, raw_submit, &r, N, WINDOW);
    bl_check(&d, "raw store script (overwrites)");
    cpu[5] = d.cpu_us;
    server_stats("raw one-item store script, overwrites");
    flushall();
    r.mode = RAW_BATCH;
    raw_load_script(&r, RS_STORE_BATCH);
    rbat = bl_closed_loop(&d, &loop, raw_submit, &r, N, WINDOW);
    bl_check(&d, "raw batch script (new keys)");
    cpu[7] = d.cpu_us;
    server_stats("raw batch store script, new keys");
    rbat2 = bl_closed_loop(&d, &loop, raw_submit, &r, N, WINDOW);
    bl_check(&d, "raw batch script (overwrites)");
    cpu[8] = d.cpu_us;
    server_stats("raw batch store script, overwrites");
    raw_disconnect(&r, &loop);
    flushall();
  }
  c.prefix = "anchor:";
  eset = bl_closed_loop(&d, &loop, submit_store, &c, N, WINDOW);
  bl_check(&d, "engram redis store");
  cpu[0] = d.cpu_us;
  server_stats("engram store, new keys");
  eset2 = bl_closed_loop(&d, &loop, submit_store, &c, N, WINDOW);
  bl_check(&d, "engram redis store (overwrites)");
  cpu[6] = d.cpu_us;
  server_stats("engram store, overwrites");
  eget = bl_closed_loop(&d, &loop, submit_retrieve, &c, N, WINDOW);
  bl_check(&d, "engram redis retrieve");
  cpu[1] = d.cpu_us;
  server_stats("engram retrieve");
  bl_note("client CPU per call (this process): engram store %.2f us, overwrite %.2f us, retrieve %.2f us; raw SET "
          "%.2f us, GET %.2f us, one-item script %.2f / %.2f us, batch script %.2f / %.2f us (new / overwrite)",
          cpu[0], cpu[6], cpu[1], cpu[2], cpu[3], cpu[4], cpu[5], cpu[7], cpu[8]);
  bl_result("redis", "store calls/s (raw: SET)", eset, rset, "calls/s");
  bl_result("redis", "store calls/s (raw: the same store script)", eset, rscr, "calls/s");
  bl_result("redis", "store calls/s (raw: the same batch script)", eset, rbat, "calls/s");
  bl_result("redis", "overwrite calls/s (raw: the same store script)", eset2, rscr2, "calls/s");
  bl_result("redis", "overwrite calls/s (raw: the same batch script)", eset2, rbat2, "calls/s");
  bl_result("redis", "retrieve calls/s (raw: GET)", eget, rget, "calls/s");
  flushall();

  if (bl_want("latency")) {
    bl_open_spec_t sp;
    long n_rt = bl_env_long("BENCH_REDIS_RT_N", bl_scaled(20000));
    bl_section("redis latency: round trips, and open-loop Poisson arrivals at fractions of raw SET's peak");
    raw_connect(&r, &loop);
    r.mode = RAW_SET;
    if (rset <= 0) { /* the throughput run was skipped: the raw peak still comes from the closed loop */
      r.prefix = "rawpeak:";
      rset = bl_closed_loop(&d, &loop, raw_submit, &r, N, WINDOW);
      bl_check(&d, "raw SET (peak)");
    }
    /* One call in flight: store against SET, then retrieve of the same keys against GET. */
    c.prefix = "rt:";
    r.prefix = "rawrt:";
    {
      bl_rt_side_t rt[2] = {{.submit = submit_store, .ctx = &c, .what = "engram store, one in flight", .on = 1},
                            {.submit = raw_submit, .ctx = &r, .what = "raw SET, one in flight", .on = 1}};
      bl_round_trips(&d, &loop, rt, 2, n_rt);
      bl_result_round_trip("redis", "store vs SET", &rt[0].out, &rt[1].out);
      r.mode = RAW_GET;
      rt[0].submit = submit_retrieve;
      rt[0].what = "engram retrieve, one in flight";
      rt[1].what = "raw GET, one in flight";
      bl_round_trips(&d, &loop, rt, 2, n_rt);
      bl_result_round_trip("redis", "retrieve vs GET", &rt[0].out, &rt[1].out);
    }
    /* Open loop: stores against SETs on the same schedule. */
    r.mode = RAW_SET;
    c.prefix = "lat:";
    r.prefix = "rawlat:";
    memset(&sp, 0, sizeof sp);
    sp.bench = "redis";
    sp.op = "store vs SET";
    sp.loop = &loop;
    sp.eng = submit_store;
    sp.eng_ctx = &c;
    sp.raw = raw_submit;
    sp.raw_ctx = &r;
    sp.raw_peak = rset;
    sp.raw_peak_how = "SET, closed loop, 1,000 in flight, above";
    bl_open_loads(&sp);
    raw_disconnect(&r, &loop);
    flushall();
  }

  if (bl_want("many")) {
    bl_section("redis retrieve_many of 55 keys vs 55 pipelined HMGETs, one call in flight");
    bench_many(c.mgr, &loop);
    flushall();
  }

  if (bl_want("search")) {
    long q = bl_env_long("BENCH_REDIS_QUERIES", 200);
    bl_corpus_t corpus;
    bl_ki_t k;
    double rate;
    size_t rss;
    bl_section("redis known-item search on the Debian corpus");
    bl_corpus_load(&corpus, 0);
    rate = bl_ingest_engram(c.mgr, &loop, NULL, &corpus, WINDOW);
    bl_note("%zu records stored at %.0f items/s; the first %ld queries of the 200-query sample", corpus.n, rate, q);
    server_stats("ingest");
    rss = bl_rss_bytes();
    k = bl_known_item_engram(c.mgr, &loop, NULL, &corpus, (size_t)q);
    bl_note("first query %.1f ms (a walk over the namespace, which builds the cached index unless it is off); "
            "process RSS %+.0f MiB over the queries", k.first_ms, ((double)bl_rss_bytes() - (double)rss) / 1048576.0);
    server_stats("known-item queries");
    search_info(c.mgr, &loop);
    bl_result_known_item("redis", &k, NULL);
    bl_result("redis", "known-item p50 query time, each after a store", bl_mixed_search_p50(c.mgr, &loop, NULL, &corpus, (size_t)q), NAN, "ms");
    verify_known_item(c.mgr, &loop, &corpus, (size_t)q);
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
