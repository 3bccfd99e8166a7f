/*
 * test_redis.c — the redis source beyond the conformance suite, against a real redis-server started here:
 * faults (kill -9 and CLIENT KILL with 1,000 calls in flight: exactly one callback per call, then recovery
 * without user action), closing with calls in flight, the documented data layout read and written by
 * redis-cli, keys and namespaces that stress the key encoding and the glob escaping, isolation between key
 * prefixes, a server that is down at open (clear error without the password, lazy_connect,
 * wait_for_connection), AUTH, the script-cache flush (every kind of call still works; a read issued after a
 * write still sees it; pipelined if_version chains keep their order under repeated flushes), DNS names and the
 * max_inflight window;
 * and the coalescing of stores into batch-script calls: 1,000 pipelined stores that mix create-only on one key,
 * if_version conflicts, TTL, metadata removal and per-item server errors each get their own exact answer, and
 * kill -9 with batches in flight gives each call exactly one callback; and ranked text search: the indexed text
 * read from stored JSON and the streamed scorer against engram_text_of / engram_text_index (bit-identical
 * scores), search through Redis — walking and through the cached index — against an index over the same items,
 * and the cached index following every kind of write, TTL expiry and writes by other tools; and conversation
 * appends made in one script with their head (no batch store call, refusals that write nothing); updates
 * queued on one key starting from the last write, with a write from elsewhere in between.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "../sources/redis/redis_rank.h" /* the text scanner and the streamed scorer, checked on their own */
#include "support/failing_alloc.h"
#include "engram/thread.h"
#include "support/harness.h"
#include "support/redis_server.h"

#define N_CALLS 1000

/* ---- Helpers ---- */

typedef struct {
  int done, dup;
  int ok, unavailable, canceled, other;
  int other_status;
} tally_t;

typedef struct {
  tally_t *t;
  int calls;
  int status;
} call_t;

static void call_cb(int status, const engram_reply_t *reply, void *ud) {
  call_t *c = ud;
  (void)reply;
  if (++c->calls > 1) {
    c->t->dup++;
    harness_stray("call_cb");
    return;
  }
  c->status = status;
  c->t->done++;
  if (status == 0 || status == ENGRAM_ENOTFOUND) c->t->ok++; /* answered by the server */
  else if (status == ENGRAM_EUNAVAILABLE) c->t->unavailable++;
  else if (status == ENGRAM_ECANCELED) c->t->canceled++;
  else {
    c->t->other++;
    c->t->other_status = status;
  }
}

/* Adds a redis source named name with options {"host","port","prefix"} plus extra (JSON members, or ""). */
static int add_redis(ctx_t *c, engram_manager_t *mgr, const char *name, const char *prefix, const char *extra,
                     result_t *r) {
  char opts[1024];
  snprintf(opts, sizeof opts, "{\"host\": \"127.0.0.1\", \"port\": %d, \"prefix\": \"%s\"%s%s}", redis_server_port(),
           prefix, extra[0] ? ", " : "", extra);
  result_reset(r);
  assert_int_equal(engram_manager_add_source(mgr ? mgr : c->mgr, name, &engram_source_redis, opts, "redis", 0,
                                             capture_cb, r),
                   0);
  wait_for(c, &r->calls, 1, 15000);
  return r->status;
}

static int add_with_options(ctx_t *c, const char *name, const char *opts, result_t *r) {
  result_reset(r);
  assert_int_equal(engram_manager_add_source(c->mgr, name, &engram_source_redis, opts, "redis", 0, capture_cb, r), 0);
  wait_for(c, &r->calls, 1, 15000);
  return r->status;
}

static redisContext *sync_conn(void) {
  redisContext *rc = redisConnect("127.0.0.1", redis_server_port());
  assert_non_null(rc);
  assert_int_equal(rc->err, 0);
  return rc;
}

/* Retries a store every 20 ms until it succeeds; returns the ms it took (fails the test after limit_ms). */
static int ms_until_serving(ctx_t *c, int limit_ms) {
  uint64_t t0 = uv_hrtime();
  result_t r = {0};
  engram_opts_t o = {0};
  o.deadline_ms = 1000;
  for (;;) {
    int st = s_store(c, "probe", "\"back\"", &o, &r);
    int ms = (int)((uv_hrtime() - t0) / 1000000u);
    assert_int_equal(r.calls, 1);
    if (st == 0) {
      result_reset(&r);
      return ms;
    }
    if (st != ENGRAM_EUNAVAILABLE && st != ENGRAM_ETIMEDOUT) fail_msg("unexpected %s while recovering: %s", engram_err_name(st), r.message);
    if (ms > limit_ms) fail_msg("the source did not serve again within %d ms (last: %s)", limit_ms, r.message);
    run_for(c, 20);
  }
}

static const char *info_str(ctx_t *c, const char *field) {
  static char buf[128];
  result_t r = {0};
  const cJSON *v;
  assert_int_equal(s_info(c, NULL, &r), 0);
  v = cJSON_GetObjectItem(r.info, field);
  snprintf(buf, sizeof buf, "%s", v && cJSON_IsString(v) ? v->valuestring : "");
  result_reset(&r);
  return buf;
}

static int setup(void **state) {
  ctx_t *c = calloc(1, sizeof *c);
  assert_true(redis_server_start(0) > 0);
  ctx_init(c, NULL);
  *state = c;
  return 0;
}

/* A second manager a test opened: teardown closes it when the test failed before it could. */
static engram_manager_t *second_mgr;

static int teardown(void **state) {
  ctx_t *c = *state;
  int pid = redis_server_pid();
  if (pid > 0) kill(pid, SIGCONT);
  if (second_mgr != NULL) {
    result_t r = {0};
    if (engram_manager_close(second_mgr, capture_cb, &r) == 0) wait_for(c, &r.calls, 1, 10000);
    second_mgr = NULL;
    result_reset(&r);
  }
  ctx_close(c);
  free(c);
  /* Leave a running server for the next test. */
  if (redis_server_pid() < 0) assert_int_equal(redis_server_restart(), 0);
  return 0;
}

/* Issues N_CALLS calls, alternating stores and retrieves. */
static void issue_calls(ctx_t *c, call_t *calls, tally_t *t) {
  cJSON *v = J("{\"payload\": \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}");
  char key[32];
  int i;
  for (i = 0; i < N_CALLS; i++) {
    calls[i].t = t;
    snprintf(key, sizeof key, "k%d", i % 100);
    if (i % 2 == 0) assert_int_equal(engram_store(c->mgr, key, v, NULL, call_cb, &calls[i]), 0);
    else assert_int_equal(engram_retrieve(c->mgr, key, NULL, call_cb, &calls[i]), 0);
  }
  cJSON_Delete(v);
}

static void assert_each_once(const call_t *calls, const tally_t *t) {
  int i;
  for (i = 0; i < N_CALLS; i++)
    if (calls[i].calls != 1) fail_msg("call %d got %d callbacks", i, calls[i].calls);
  assert_int_equal(t->dup, 0);
  assert_int_equal(t->done, N_CALLS);
}

/* ---- Faults ---- */

static void kill9_with_1000_in_flight(void **state) {
  ctx_t *c = *state;
  result_t r = {0};
  call_t *calls = calloc(N_CALLS, sizeof *calls);
  tally_t t = {0};
  int ms, i;
  assert_int_equal(add_redis(c, NULL, "mem", unique_name("k9"), "", &r), 0);
  /* A stopped server accepts the pipelined commands into its socket buffer but answers none: all 1,000 calls
   * are in flight when it is killed. */
  assert_int_equal(kill(redis_server_pid(), SIGSTOP), 0);
  issue_calls(c, calls, &t);
  run_for(c, 100);
  assert_int_equal(t.done, 0);
  redis_server_kill9();
  wait_for(c, &t.done, N_CALLS, 10000);
  run_for(c, 50); /* a second callback would show up here */
  assert_each_once(calls, &t);
  assert_int_equal(t.unavailable, N_CALLS);
  assert_int_equal(t.other, 0);
  /* While the server is down, calls fail fast. */
  assert_int_equal(s_store(c, "down", "1", NULL, &r), ENGRAM_EUNAVAILABLE);
  assert_non_null(strstr(r.message, "unavailable"));
  assert_string_not_equal(info_str(c, "health"), "connected");
  /* Back on the same port: serving again within 2 s, with no user action. */
  assert_int_equal(redis_server_restart(), 0);
  ms = ms_until_serving(c, 2000);
  print_message("kill -9: serving again %d ms after the restart\n", ms);
  assert_true(ms <= 2000);
  assert_string_equal(info_str(c, "health"), "connected");
  assert_int_equal(s_retrieve(c, "probe", NULL, &r), 0);

  /* The same with a server that answers while it dies: each call succeeds or is unavailable, exactly once. */
  memset(calls, 0, N_CALLS * sizeof *calls);
  memset(&t, 0, sizeof t);
  issue_calls(c, calls, &t);
  for (i = 0; i < 3 && t.done == 0; i++) uv_run(&c->loop, UV_RUN_ONCE);
  redis_server_kill9();
  wait_for(c, &t.done, N_CALLS, 10000);
  run_for(c, 50);
  assert_each_once(calls, &t);
  assert_int_equal(t.ok + t.unavailable, N_CALLS);
  assert_int_equal(redis_server_restart(), 0);
  ms_until_serving(c, 2000);
  free(calls);
  result_reset(&r);
}

static void client_kill_recovers(void **state) {
  ctx_t *c = *state;
  result_t r = {0};
  call_t *calls = calloc(N_CALLS, sizeof *calls);
  tally_t t = {0};
  redisContext *admin;
  redisReply *rep;
  const cJSON *lost;
  assert_int_equal(add_redis(c, NULL, "mem", unique_name("ck"), "", &r), 0);
  assert_int_equal(s_store(c, "before", "1", NULL, &r), 0);
  admin = sync_conn();
  issue_calls(c, calls, &t);
  uv_run(&c->loop, UV_RUN_NOWAIT); /* the calls are written to the socket */
  rep = redisCommand(admin, "CLIENT KILL TYPE normal SKIPME yes");
  assert_non_null(rep);
  assert_int_equal(rep->type, REDIS_REPLY_INTEGER);
  assert_true(rep->integer >= 1);
  freeReplyObject(rep);
  wait_for(c, &t.done, N_CALLS, 10000);
  run_for(c, 50);
  assert_each_once(calls, &t);
  assert_int_equal(t.ok + t.unavailable, N_CALLS);
  print_message("CLIENT KILL: serving again after %d ms\n", ms_until_serving(c, 2000));
  assert_int_equal(s_retrieve(c, "before", NULL, &r), 0);
  assert_int_equal(s_info(c, NULL, &r), 0);
  lost = cJSON_GetObjectItem(r.info, "connections_lost");
  assert_non_null(lost);
  assert_true(lost->valuedouble >= 1);
  redisFree(admin);
  free(calls);
  result_reset(&r);
}

static void close_with_calls_in_flight(void **state) {
  ctx_t *c = *state;
  result_t r = {0};
  call_t *calls = calloc(N_CALLS, sizeof *calls);
  tally_t t = {0};
  assert_int_equal(add_redis(c, NULL, "mem", unique_name("cl"), "", &r), 0);
  assert_int_equal(kill(redis_server_pid(), SIGSTOP), 0);
  issue_calls(c, calls, &t);
  run_for(c, 50);
  assert_int_equal(t.done, 0);
  /* Removing the source cancels every call exactly once, though Redis never answered. */
  result_reset(&r);
  assert_int_equal(engram_manager_remove_source(c->mgr, "mem", capture_cb, &r), 0);
  wait_for(c, &r.calls, 1, 10000);
  assert_int_equal(r.status, 0);
  wait_for(c, &t.done, N_CALLS, 10000);
  run_for(c, 50);
  assert_each_once(calls, &t);
  assert_int_equal(t.canceled, N_CALLS);
  assert_int_equal(kill(redis_server_pid(), SIGCONT), 0);
  free(calls);
  result_reset(&r);
}

/* ---- Stores coalesced into batch-script calls ---- */

typedef struct {
  int calls;
  int status, want_status;
  uint64_t version, want_version;
  char msg[256];
} bcall_t;

static void bcall_cb(int status, const engram_reply_t *reply, void *ud) {
  bcall_t *b = ud;
  if (++b->calls > 1) harness_stray("bcall_cb");
  b->status = status;
  b->version = status == 0 && reply->n_items == 1 ? reply->items[0].version : 0;
  snprintf(b->msg, sizeof b->msg, "%s", reply->message ? reply->message : "");
}

static double info_num(ctx_t *c, const char *field) {
  result_t r = {0};
  const cJSON *v;
  double d;
  assert_int_equal(s_info(c, NULL, &r), 0);
  v = cJSON_GetObjectItem(r.info, field);
  assert_non_null(v);
  d = v->valuedouble;
  result_reset(&r);
  return d;
}

/* An item whose expiry has passed reads as missing on every path — retrieve with and without metadata, exists,
 * retrieve_many — even while Redis, whose clock may lag ours by a moment, still holds the hash. Made here by
 * writing a past expiry into the hash's field while the hash itself is kept. (A thread's window read its head
 * without metadata and found it for a moment after a read with metadata had found it gone.) */
static void expiry_field_decides_on_every_read(void **state) {
  ctx_t *c = *state;
  result_t r = {0};
  char prefix[80], key[256], out[256], past[32];
  const char *keys[2] = {"gone", "kept"};
  engram_opts_t o = {0};
  snprintf(prefix, sizeof prefix, "%s:", unique_name("exp"));
  assert_int_equal(add_redis(c, NULL, "mem", prefix, "", &r), 0);
  o.flags = ENGRAM_OPT_TTL;
  o.ttl_ms = 600000;
  assert_int_equal(s_store(c, "gone", "1", &o, &r), 0);
  assert_int_equal(s_store(c, "kept", "2", &o, &r), 0);
  snprintf(key, sizeof key, "%si:0::gone", prefix);
  snprintf(past, sizeof past, "%lld", (long long)(engram_now_ms() - 1));
  assert_int_equal(redis_cli(out, sizeof out, "HSET", key, "expires", past, NULL), 0);
  assert_int_equal(redis_cli(out, sizeof out, "EXISTS", key, NULL), 0);
  assert_string_equal(out, "1"); /* Redis still holds it */
  assert_int_equal(s_retrieve(c, "gone", NULL, &r), ENGRAM_ENOTFOUND);
  o.flags = ENGRAM_OPT_INCLUDE_METADATA;
  assert_int_equal(s_retrieve(c, "gone", &o, &r), ENGRAM_ENOTFOUND);
  assert_int_equal(s_exists(c, "gone", NULL, &r), 0);
  assert_int_equal((int)r.count, 0);
  assert_int_equal(s_exists(c, "kept", NULL, &r), 0);
  assert_int_equal((int)r.count, 1);
  assert_int_equal(s_retrieve(c, "kept", NULL, &r), 0);
  result_reset(&r);
  assert_int_equal(engram_retrieve_many(c->mgr, keys, 2, NULL, capture_cb, &r), 0);
  wait_for(c, &r.calls, 1, 10000);
  assert_int_equal(r.status, 0);
  assert_int_equal((int)r.n_items, 2);
  assert_int_equal((int)result_item(&r, 0, "status")->valuedouble, ENGRAM_ENOTFOUND);
  assert_int_equal((int)result_item(&r, 1, "status")->valuedouble, 0);
  result_reset(&r);
}

/* retrieve_many reads what its flag asks, as retrieve does: with ENGRAM_OPT_INCLUDE_METADATA the six fields
 * (metadata, version and times on each item), without it `value` and `expires` only (a conversation window's read:
 * a third of the fields for Redis to look up and hiredis to hand back), so the items carry no version or times. */
static void retrieve_many_reads_the_fields_its_flag_asks(void **state) {
  ctx_t *c = *state;
  result_t r = {0};
  char prefix[80], key[256], out[64];
  const char *keys[2] = {"m1", "none"};
  engram_opts_t o = {0};
  snprintf(prefix, sizeof prefix, "%s:", unique_name("rmf"));
  assert_int_equal(add_redis(c, NULL, "mem", prefix, "", &r), 0);
  snprintf(key, sizeof key, "%si:0::m1", prefix);
  assert_int_equal(redis_cli(out, sizeof out, "HSET", key, "value", "{\"a\":1}", "metadata", "{\"m\":2}", "created",
                             "1700000000000", "updated", "1700000000001", "version", "7", "expires", "0", NULL), 0);
  result_reset(&r);
  assert_int_equal(engram_retrieve_many(c->mgr, keys, 2, NULL, capture_cb, &r), 0);
  wait_for(c, &r.calls, 1, 10000);
  assert_int_equal(r.status, 0);
  assert_int_equal((int)r.n_items, 2);
  assert_int_equal((int)cJSON_GetNumberValue(cJSON_GetObjectItem(result_item(&r, 0, "value"), "a")), 1);
  assert_int_equal((int)result_item(&r, 0, "version")->valuedouble, 0);
  assert_null(result_item(&r, 0, "metadata"));
  assert_int_equal((int)result_item(&r, 1, "status")->valuedouble, ENGRAM_ENOTFOUND);
  result_reset(&r);
  o.flags = ENGRAM_OPT_INCLUDE_METADATA;
  assert_int_equal(engram_retrieve_many(c->mgr, keys, 2, &o, capture_cb, &r), 0);
  wait_for(c, &r.calls, 1, 10000);
  assert_int_equal(r.status, 0);
  assert_int_equal((int)cJSON_GetNumberValue(cJSON_GetObjectItem(result_item(&r, 0, "value"), "a")), 1);
  assert_int_equal((int)result_item(&r, 0, "version")->valuedouble, 7);
  assert_int_equal((int)cJSON_GetNumberValue(cJSON_GetObjectItem(result_item(&r, 0, "metadata"), "m")), 2);
  assert_int_equal((int)result_item(&r, 1, "status")->valuedouble, ENGRAM_ENOTFOUND);
  result_reset(&r);
}

static void batched_stores_keep_per_item_semantics(void **state) {
  ctx_t *c = *state;
  result_t r = {0};
  bcall_t *b = calloc(N_CALLS, sizeof *b);
  char prefix[80], key[256], k2[256], out[256];
  engram_opts_t o = {0};
  cJSON *meta = J("{\"tag\": \"x\"}"), *v;
  engram_entry_t e[10];
  char ekeys[10][16];
  int i, j, n_ok = 0, n_exist = 0, n_conflict = 0, n_backend = 0;
  double calls0, batched0;
  snprintf(prefix, sizeof prefix, "%s:", unique_name("bat"));
  assert_int_equal(add_redis(c, NULL, "mem", prefix, "", &r), 0);
  /* Before: v0..v99 at version 1; m0..m99 at version 1 with metadata and a TTL; a string where the hash of key
   * "wrong" would be; a string where the index of namespace "badidx" would be. */
  for (j = 0; j < 100; j++) {
    snprintf(key, sizeof key, "v%d", j);
    assert_int_equal(s_store(c, key, "1", NULL, &r), 0);
    snprintf(key, sizeof key, "m%d", j);
    o.metadata = meta;
    o.flags = ENGRAM_OPT_TTL;
    o.ttl_ms = 60000;
    assert_int_equal(s_store(c, key, "1", &o, &r), 0);
  }
  memset(&o, 0, sizeof o);
  snprintf(key, sizeof key, "%si:0::wrong", prefix);
  assert_int_equal(redis_cli(out, sizeof out, "SET", key, "not a hash", NULL), 0);
  snprintf(key, sizeof key, "%sx:6:badidx", prefix);
  assert_int_equal(redis_cli(out, sizeof out, "SET", key, "not a sorted set", NULL), 0);
  calls0 = info_num(c, "store_calls");
  batched0 = info_num(c, "stores_batched");
  /* The script cache is flushed too: the first batches are answered NOSCRIPT and resent with EVAL. */
  assert_int_equal(redis_cli(out, sizeof out, "SCRIPT", "FLUSH", NULL), 0);

  /* 1,000 stores issued at once (they reach the source in the same loop turns, so they share calls). */
  for (i = 0; i < N_CALLS; i++) {
    int kind = i % 5, round = (i / 5) / 100;
    memset(&o, 0, sizeof o);
    v = cJSON_CreateNumber(i);
    b[i].want_status = 0;
    switch (kind) {
      case 0: /* create-only on one key: the first wins */
        snprintf(key, sizeof key, "same");
        o.flags = ENGRAM_OPT_CREATE_ONLY;
        b[i].want_status = i == 0 ? 0 : ENGRAM_EEXIST;
        b[i].want_version = 1;
        break;
      case 1: /* if_version 1 on v<j>: the first round wins (→ 2), the second conflicts */
        snprintf(key, sizeof key, "v%d", (i / 5) % 100);
        o.if_version = 1;
        b[i].want_status = round == 0 ? 0 : ENGRAM_ECONFLICT;
        b[i].want_version = 2;
        break;
      case 2: /* TTL on new keys */
        snprintf(key, sizeof key, "t%d", i);
        o.flags = ENGRAM_OPT_TTL;
        o.ttl_ms = 60000;
        b[i].want_version = 1;
        break;
      case 3: /* metadata-less overwrites of m<j> (had metadata and a TTL): versions 2 then 3 */
        snprintf(key, sizeof key, "m%d", (i / 5) % 100);
        b[i].want_version = (uint64_t)(2 + round);
        break;
      default: /* new keys with metadata, and three that fail or succeed alone */
        snprintf(key, sizeof key, "n%d", i);
        o.metadata = meta;
        b[i].want_version = 1;
        if (i == 504) {
          snprintf(key, sizeof key, "wrong");
          b[i].want_status = ENGRAM_EBACKEND;
        } else if (i == 509) {
          o.ns = "badidx";
          b[i].want_status = ENGRAM_EBACKEND;
        } else if (i == 514) {
          o.ns = "other";
        }
        break;
    }
    assert_int_equal(engram_store(c->mgr, key, v, &o, bcall_cb, &b[i]), 0);
    cJSON_Delete(v);
  }
  /* A store_many in the same turns: create-only over 5 existing and 5 new keys. */
  for (j = 0; j < 10; j++) {
    snprintf(ekeys[j], sizeof ekeys[j], j < 5 ? "v%d" : "sm%d", j);
    e[j].key = ekeys[j];
    e[j].value = meta;
    e[j].metadata = NULL;
    e[j].has_ttl = 0;
    e[j].ttl_ms = 0;
  }
  memset(&o, 0, sizeof o);
  o.flags = ENGRAM_OPT_CREATE_ONLY;
  result_reset(&r);
  assert_int_equal(engram_store_many(c->mgr, e, 10, &o, capture_cb, &r), 0);

  {
    uint64_t t0 = uv_hrtime();
    int done;
    do {
      uv_run(&c->loop, UV_RUN_ONCE);
      for (done = 0, i = 0; i < N_CALLS; i++) done += b[i].calls > 0;
      if (uv_hrtime() - t0 > 20000000000ull) fail_msg("only %d of %d stores answered", done, N_CALLS);
    } while (done < N_CALLS || r.calls < 1);
  }
  run_for(c, 50); /* a second callback would show up here */
  for (i = 0; i < N_CALLS; i++) {
    if (b[i].calls != 1) fail_msg("store %d got %d callbacks", i, b[i].calls);
    if (b[i].status != b[i].want_status)
      fail_msg("store %d: %s (%s), expected %s", i, engram_err_name(b[i].status), b[i].msg,
               engram_err_name(b[i].want_status));
    if (b[i].status == 0 && b[i].version != b[i].want_version)
      fail_msg("store %d: version %llu, expected %llu", i, (unsigned long long)b[i].version,
               (unsigned long long)b[i].want_version);
    n_ok += b[i].status == 0;
    n_exist += b[i].status == ENGRAM_EEXIST;
    n_conflict += b[i].status == ENGRAM_ECONFLICT;
    n_backend += b[i].status == ENGRAM_EBACKEND;
  }
  assert_int_equal(n_ok, 1 + 100 + 200 + 200 + 198);
  assert_int_equal(n_exist, 199);
  assert_int_equal(n_conflict, 100);
  assert_int_equal(n_backend, 2);
  assert_non_null(strstr(b[504].msg, "WRONGTYPE"));
  assert_non_null(strstr(b[509].msg, "WRONGTYPE"));
  /* The store_many: per-entry answers. */
  assert_int_equal(r.calls, 1);
  assert_int_equal(r.status, 0);
  assert_int_equal((int)r.n_items, 10);
  assert_int_equal((int)r.count, 5);
  for (j = 0; j < 10; j++)
    assert_int_equal((int)result_item(&r, (size_t)j, "status")->valuedouble, j < 5 ? ENGRAM_EEXIST : 0);
  /* Far fewer calls than stores. */
  assert_int_equal((int)(info_num(c, "stores_batched") - batched0), N_CALLS + 10);
  print_message("1,010 stores in %d calls of the batch script\n", (int)(info_num(c, "store_calls") - calls0));
  assert_true(info_num(c, "store_calls") - calls0 <= N_CALLS / 4);
  /* The same refusals one store at a time: each alone in its loop turn, so each is a call of the leaner
   * store_one script with the batch's per-item answers. */
  calls0 = info_num(c, "store_calls");
  memset(&o, 0, sizeof o);
  assert_int_equal(s_store(c, "wrong", "1", &o, &r), ENGRAM_EBACKEND);
  assert_non_null(strstr(r.message, "WRONGTYPE"));
  o.ns = "badidx";
  assert_int_equal(s_store(c, "alone", "1", &o, &r), ENGRAM_EBACKEND);
  assert_non_null(strstr(r.message, "WRONGTYPE"));
  memset(&o, 0, sizeof o);
  o.flags = ENGRAM_OPT_CREATE_ONLY;
  assert_int_equal(s_store(c, "v7", "1", &o, &r), ENGRAM_EEXIST);
  memset(&o, 0, sizeof o);
  o.if_version = 999;
  assert_int_equal(s_store(c, "v7", "1", &o, &r), ENGRAM_ECONFLICT);
  memset(&o, 0, sizeof o);
  assert_true(info_num(c, "store_calls") - calls0 == 4);

  /* What redis-cli sees. */
  snprintf(key, sizeof key, "%si:0::same", prefix);
  assert_int_equal(redis_cli(out, sizeof out, "HGET", key, "value", NULL), 0);
  assert_string_equal(out, "0");
  snprintf(key, sizeof key, "%si:0::v7", prefix);
  assert_int_equal(redis_cli(out, sizeof out, "HGET", key, "version", NULL), 0);
  assert_string_equal(out, "2");
  assert_int_equal(redis_cli(out, sizeof out, "HGET", key, "value", NULL), 0);
  assert_string_equal(out, "36"); /* i = 5 * 7 + 1 */
  snprintf(key, sizeof key, "%si:0::m7", prefix);
  assert_int_equal(redis_cli(out, sizeof out, "HGET", key, "version", NULL), 0);
  assert_string_equal(out, "3");
  assert_int_equal(redis_cli(out, sizeof out, "HEXISTS", key, "metadata", NULL), 0);
  assert_string_equal(out, "0");
  assert_int_equal(redis_cli(out, sizeof out, "HGET", key, "expires", NULL), 0);
  assert_string_equal(out, "0");
  assert_int_equal(redis_cli(out, sizeof out, "PTTL", key, NULL), 0);
  assert_string_equal(out, "-1");
  assert_int_equal(redis_cli(out, sizeof out, "HGET", key, "value", NULL), 0);
  assert_string_equal(out, "538"); /* round 1: i = 5 * 107 + 3 */
  snprintf(key, sizeof key, "%si:0::t2", prefix);
  assert_int_equal(redis_cli(out, sizeof out, "PTTL", key, NULL), 0);
  assert_true(atoi(out) > 30000 && atoi(out) <= 60000);
  snprintf(key, sizeof key, "%si:0::n4", prefix);
  assert_int_equal(redis_cli(out, sizeof out, "HGET", key, "metadata", NULL), 0);
  assert_string_equal(out, "{\"tag\":\"x\"}");
  assert_int_equal(redis_cli(out, sizeof out, "PTTL", key, NULL), 0);
  assert_string_equal(out, "-1");
  /* The index has exactly the keys stored in namespace "": v, m, same, t, 197 n, 5 sm. */
  snprintf(key, sizeof key, "%sx:0:", prefix);
  assert_int_equal(redis_cli(out, sizeof out, "ZCARD", key, NULL), 0);
  assert_string_equal(out, "603");
  snprintf(key, sizeof key, "%sx:5:other", prefix);
  assert_int_equal(redis_cli(out, sizeof out, "ZRANGE", key, "0", "-1", NULL), 0);
  assert_string_equal(out, "n514");
  snprintf(key, sizeof key, "%snamespaces", prefix);
  snprintf(k2, sizeof k2, "%s", "other");
  assert_int_equal(redis_cli(out, sizeof out, "SISMEMBER", key, k2, NULL), 0);
  assert_string_equal(out, "1");
  assert_int_equal(redis_cli(out, sizeof out, "SISMEMBER", key, "badidx", NULL), 0);
  assert_string_equal(out, "0");
  cJSON_Delete(meta);
  free(b);
  result_reset(&r);
}

/* One store at a time (a store_one script call each) keeps the layout: version 1 then +1, created kept, metadata
 * written or removed, the expires field and the native TTL in step, the index and the namespace set, the
 * generation bumped once a store (started from the clock in a new namespace); a version field another tool left
 * as text counts as 0; and across a flushed script cache the writes keep their order: a store then a delete of
 * one key leaves it deleted, a delete then a store leaves it stored. (The same checks held for the MULTI ... EXEC
 * form of a lone store that was measured and not kept: docs/sources-redis.md, Performance notes.) */
static void single_stores_keep_layout_and_order(void **state) {
  ctx_t *c = *state;
  result_t r = {0};
  char prefix[80], key[256], idx[256], nss[256], gen[256], out[256];
  engram_opts_t o = {0};
  cJSON *meta = J("{\"tag\": \"x\"}"), *v;
  bcall_t b[2];
  double calls0, created;
  long long g1, g2;
  snprintf(prefix, sizeof prefix, "%s:", unique_name("tx"));
  assert_int_equal(add_redis(c, NULL, "mem", prefix, "", &r), 0);
  snprintf(key, sizeof key, "%si:2:tx:a", prefix);
  snprintf(idx, sizeof idx, "%sx:2:tx", prefix);
  snprintf(nss, sizeof nss, "%snamespaces", prefix);
  snprintf(gen, sizeof gen, "%sg:2:tx", prefix);
  calls0 = info_num(c, "store_calls");
  o.ns = "tx";
  o.metadata = meta;
  o.flags = ENGRAM_OPT_TTL;
  o.ttl_ms = 60000;
  assert_int_equal(s_store(c, "a", "{\"n\": 1}", &o, &r), 0);
  assert_int_equal((int)result_item(&r, 0, "version")->valuedouble, 1);
  created = result_item(&r, 0, "created_at_ms")->valuedouble;
  assert_true(created > 1.7e12);
  assert_int_equal(redis_cli(out, sizeof out, "HGET", key, "metadata", NULL), 0);
  assert_string_equal(out, "{\"tag\":\"x\"}");
  assert_int_equal(redis_cli(out, sizeof out, "PTTL", key, NULL), 0);
  assert_true(atoi(out) > 30000 && atoi(out) <= 60000);
  assert_int_equal(redis_cli(out, sizeof out, "HGET", key, "expires", NULL), 0);
  assert_true(atof(out) > created && atof(out) <= created + 60000 + 1000);
  assert_int_equal(redis_cli(out, sizeof out, "ZRANGE", idx, "0", "-1", NULL), 0);
  assert_string_equal(out, "a");
  assert_int_equal(redis_cli(out, sizeof out, "SISMEMBER", nss, "tx", NULL), 0);
  assert_string_equal(out, "1");
  assert_int_equal(redis_cli(out, sizeof out, "GET", gen, NULL), 0);
  g1 = atoll(out);
  assert_true(g1 > 1000000000000000LL); /* started from the clock in microseconds, not at 1 */
  /* Overwrite without metadata or TTL: version 2, created kept, metadata gone, no expiry. */
  memset(&o, 0, sizeof o);
  o.ns = "tx";
  assert_int_equal(s_store(c, "a", "{\"n\": 2}", &o, &r), 0);
  assert_int_equal((int)result_item(&r, 0, "version")->valuedouble, 2);
  assert_true(result_item(&r, 0, "created_at_ms")->valuedouble == created);
  assert_int_equal(redis_cli(out, sizeof out, "HEXISTS", key, "metadata", NULL), 0);
  assert_string_equal(out, "0");
  assert_int_equal(redis_cli(out, sizeof out, "PTTL", key, NULL), 0);
  assert_string_equal(out, "-1");
  assert_int_equal(redis_cli(out, sizeof out, "HGET", key, "expires", NULL), 0);
  assert_string_equal(out, "0");
  assert_int_equal(redis_cli(out, sizeof out, "HGET", key, "created", NULL), 0);
  assert_true(atof(out) == created);
  assert_int_equal(redis_cli(out, sizeof out, "GET", gen, NULL), 0);
  g2 = atoll(out);
  assert_true(g2 == g1 + 1);
  o.flags = ENGRAM_OPT_INCLUDE_METADATA;
  assert_int_equal(s_retrieve(c, "a", &o, &r), 0);
  assert_int_equal((int)cJSON_GetObjectItem(result_item(&r, 0, "value"), "n")->valuedouble, 2);
  assert_int_equal((int)result_item(&r, 0, "version")->valuedouble, 2);
  assert_true(info_num(c, "store_calls") - calls0 == 2);
  /* A version another tool wrote as text counts as 0. */
  assert_int_equal(redis_cli(out, sizeof out, "HSET", key, "version", "seven", NULL), 0);
  o.flags = 0;
  assert_int_equal(s_store(c, "a", "3", &o, &r), 0);
  assert_int_equal((int)result_item(&r, 0, "version")->valuedouble, 1);
  assert_int_equal(redis_cli(out, sizeof out, "HSET", key, "version", "7", NULL), 0);
  assert_int_equal(s_store(c, "a", "4", &o, &r), 0);
  assert_int_equal((int)result_item(&r, 0, "version")->valuedouble, 8);

  /* Order across a flushed script cache: a store then a delete of one key, both answered NOSCRIPT first. */
  memset(b, 0, sizeof b);
  assert_int_equal(redis_cli(out, sizeof out, "SCRIPT", "FLUSH", NULL), 0);
  v = cJSON_CreateNumber(5);
  assert_int_equal(engram_store(c->mgr, "a", v, &o, bcall_cb, &b[0]), 0);
  assert_int_equal(engram_delete(c->mgr, "a", &o, bcall_cb, &b[1]), 0);
  wait_for(c, &b[1].calls, 1, 10000);
  wait_for(c, &b[0].calls, 1, 10000);
  assert_int_equal(b[0].status, 0);
  assert_int_equal(b[1].status, 0);
  assert_int_equal(redis_cli(out, sizeof out, "EXISTS", key, NULL), 0);
  assert_string_equal(out, "0");
  /* ... and a delete then a store. */
  assert_int_equal(s_store(c, "a", "6", &o, &r), 0);
  memset(b, 0, sizeof b);
  assert_int_equal(redis_cli(out, sizeof out, "SCRIPT", "FLUSH", NULL), 0);
  assert_int_equal(engram_delete(c->mgr, "a", &o, bcall_cb, &b[0]), 0);
  assert_int_equal(engram_store(c->mgr, "a", v, &o, bcall_cb, &b[1]), 0);
  wait_for(c, &b[1].calls, 1, 10000);
  wait_for(c, &b[0].calls, 1, 10000);
  assert_int_equal(b[0].status, 0);
  assert_int_equal(b[1].status, 0);
  assert_int_equal((int)b[1].version, 1);
  assert_int_equal(redis_cli(out, sizeof out, "HGET", key, "value", NULL), 0);
  assert_string_equal(out, "5");
  cJSON_Delete(v);
  cJSON_Delete(meta);
  result_reset(&r);
}

/* Issues N_CALLS stores (no other command between them, so they travel in batch-script calls) and, on top, a
 * store_many of 100 entries. */
static void issue_stores(ctx_t *c, call_t *calls, tally_t *t, call_t *many) {
  cJSON *v = J("{\"payload\": \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}");
  engram_entry_t e[100];
  char keys[100][16], key[32];
  int i;
  for (i = 0; i < N_CALLS; i++) {
    calls[i].t = t;
    snprintf(key, sizeof key, "s%d", i % 300);
    assert_int_equal(engram_store(c->mgr, key, v, NULL, call_cb, &calls[i]), 0);
  }
  for (i = 0; i < 100; i++) {
    snprintf(keys[i], sizeof keys[i], "e%d", i);
    e[i].key = keys[i];
    e[i].value = v;
    e[i].metadata = NULL;
    e[i].has_ttl = 0;
    e[i].ttl_ms = 0;
  }
  many->t = t;
  assert_int_equal(engram_store_many(c->mgr, e, 100, NULL, call_cb, many), 0);
  cJSON_Delete(v);
}

static void kill9_with_batches_in_flight(void **state) {
  ctx_t *c = *state;
  result_t r = {0};
  call_t *calls = calloc(N_CALLS + 1, sizeof *calls);
  tally_t t = {0};
  double sent0;
  int i;
  assert_int_equal(add_redis(c, NULL, "mem", unique_name("kb"), "", &r), 0);
  sent0 = info_num(c, "store_calls");
  /* A stopped server takes the batches into its socket buffer and answers none. */
  assert_int_equal(kill(redis_server_pid(), SIGSTOP), 0);
  issue_stores(c, calls, &t, &calls[N_CALLS]);
  run_for(c, 100);
  assert_int_equal(t.done, 0);
  redis_server_kill9();
  wait_for(c, &t.done, N_CALLS + 1, 10000);
  run_for(c, 50);
  for (i = 0; i <= N_CALLS; i++)
    if (calls[i].calls != 1) fail_msg("call %d got %d callbacks", i, calls[i].calls);
  assert_int_equal(t.dup, 0);
  assert_int_equal(t.unavailable, N_CALLS + 1);
  assert_int_equal(redis_server_restart(), 0);
  ms_until_serving(c, 2000);
  /* They had gone out as batches: far fewer calls than stores. */
  assert_true(info_num(c, "store_calls") - sent0 <= (N_CALLS + 100) / 4 + 2);

  /* A server that answers while it dies: each call succeeds or is unavailable, exactly once. */
  memset(calls, 0, (N_CALLS + 1) * sizeof *calls);
  memset(&t, 0, sizeof t);
  issue_stores(c, calls, &t, &calls[N_CALLS]);
  for (i = 0; i < 3 && t.done == 0; i++) uv_run(&c->loop, UV_RUN_ONCE);
  redis_server_kill9();
  wait_for(c, &t.done, N_CALLS + 1, 10000);
  run_for(c, 50);
  for (i = 0; i <= N_CALLS; i++)
    if (calls[i].calls != 1) fail_msg("call %d got %d callbacks", i, calls[i].calls);
  assert_int_equal(t.dup, 0);
  assert_int_equal(t.ok + t.unavailable, N_CALLS + 1);
  assert_int_equal(redis_server_restart(), 0);
  ms_until_serving(c, 2000);
  free(calls);
  result_reset(&r);
}

/* ---- The data layout, from the outside ---- */

static void layout_read_and_written_by_redis_cli(void **state) {
  ctx_t *c = *state;
  result_t r = {0};
  char prefix[80], key[256], idx[256], nss[256], out[512];
  engram_opts_t o = {0};
  cJSON *meta = J("{\"tags\": [\"x\"]}");
  snprintf(prefix, sizeof prefix, "%s:", unique_name("cli"));
  assert_int_equal(add_redis(c, NULL, "mem", prefix, "", &r), 0);
  o.ns = "team";
  o.metadata = meta;
  o.flags = ENGRAM_OPT_TTL;
  o.ttl_ms = 60000;
  assert_int_equal(s_store(c, "doc:1", "{\"title\": \"hello\", \"n\": 1}", &o, &r), 0);
  snprintf(key, sizeof key, "%si:4:team:doc:1", prefix);
  snprintf(idx, sizeof idx, "%sx:4:team", prefix);
  snprintf(nss, sizeof nss, "%snamespaces", prefix);
  /* redis-cli reads what engram wrote. */
  assert_int_equal(redis_cli(out, sizeof out, "HGET", key, "value", NULL), 0);
  assert_string_equal(out, "{\"title\":\"hello\",\"n\":1}");
  assert_int_equal(redis_cli(out, sizeof out, "HGET", key, "metadata", NULL), 0);
  assert_string_equal(out, "{\"tags\":[\"x\"]}");
  assert_int_equal(redis_cli(out, sizeof out, "HGET", key, "version", NULL), 0);
  assert_string_equal(out, "1");
  assert_int_equal(redis_cli(out, sizeof out, "PTTL", key, NULL), 0);
  assert_true(atoi(out) > 50000 && atoi(out) <= 60000);
  assert_int_equal(redis_cli(out, sizeof out, "ZRANGE", idx, "0", "-1", NULL), 0);
  assert_string_equal(out, "doc:1");
  assert_int_equal(redis_cli(out, sizeof out, "SISMEMBER", nss, "team", NULL), 0);
  assert_string_equal(out, "1");
  /* engram reads what redis-cli wrote in the documented layout. */
  snprintf(key, sizeof key, "%si:4:team:from-cli", prefix);
  assert_int_equal(redis_cli(out, sizeof out, "HSET", key, "value", "{\"said\": \"hi from redis-cli\"}", "metadata",
                             "{\"src\": \"cli\"}", "created", "1700000000000", "updated", "1700000000001", "version",
                             "7", "expires", "0", NULL),
                   0);
  assert_int_equal(redis_cli(out, sizeof out, "ZADD", idx, "0", "from-cli", NULL), 0);
  o.metadata = NULL;
  o.flags = ENGRAM_OPT_INCLUDE_METADATA;
  assert_int_equal(s_retrieve(c, "from-cli", &o, &r), 0);
  assert_string_equal(cJSON_GetObjectItem(result_item(&r, 0, "value"), "said")->valuestring, "hi from redis-cli");
  assert_string_equal(cJSON_GetObjectItem(result_item(&r, 0, "metadata"), "src")->valuestring, "cli");
  assert_int_equal((int)result_item(&r, 0, "version")->valuedouble, 7);
  assert_true(result_item(&r, 0, "created_at_ms")->valuedouble == 1700000000000.0);
  o.flags = 0;
  assert_int_equal(s_list(c, NULL, 100, NULL, &o, &r), 0);
  assert_int_equal(r.n_items, 2);
  assert_string_equal(result_key(&r, 0), "doc:1");
  assert_string_equal(result_key(&r, 1), "from-cli");
  /* An index entry whose hash is gone (as after an expiry) is dropped when met. */
  assert_int_equal(redis_cli(out, sizeof out, "DEL", key, NULL), 0);
  assert_int_equal(s_list(c, NULL, 100, NULL, &o, &r), 0);
  assert_int_equal(r.n_items, 1);
  assert_int_equal(redis_cli(out, sizeof out, "ZCARD", idx, NULL), 0);
  assert_string_equal(out, "1");
  cJSON_Delete(meta);
  result_reset(&r);
}

/* Values another tool wrote in the layout, in any JSON formatting, read back through the source's parser (a fast
 * path for common shapes, cJSON for the rest: redis_json.c) exactly as cJSON parses the text — members in order,
 * duplicates kept, numbers and escapes alike — through retrieve and retrieve_many; text that is not JSON is
 * ENGRAM_EBACKEND naming the key. */
static void values_read_back_as_cjson_parses_them(void **state) {
  ctx_t *c = *state;
  result_t r = {0};
  char prefix[80], key[256], idx[256], out[512], deep[200];
  engram_opts_t o = {0};
  const char *texts[] = {
      "{\"seq\":9946,\"role\":\"user\",\"content\":\"line\\nnext \\\"q\\\" \\\\ \\/ \\t \\b \\f \\r\",\"created_at_ms\":1765000000000}",
      " { \"a\" : [ 1 , -2 , 0 ] ,\n\t\"a\" : { } , \"b\" : [ ] } ",
      "[1.5, -0.25, 1e300, 2E-3, 12345678901234567890, 1234567890123456, 999999999999999, -999999999999999, 2147483648]",
      "{\"u\": \"\\u00e9\\u0001 \\ud83d\\ude00 \xe6\x97\xa5\"}",
      "[\"abcdefghijklmnopqrstuvwxyz0123456789 then a \\\"quote\\\" and a tab\\t after a long run\", "
      "\"\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe3\x81\xae\xe3\x83\x86\xe3\x82\xad\xe3\x82\xb9\xe3\x83\x88 \\\"q\\\" "
      "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\\n\", \"01234567\\\\\", \"0123456789abcde\"]",
      "\"just a string\"", "42", "-7", "true", "false", "null", "12abc",
      deep,
  };
  const char *keys[16];
  char keybuf[16][8];
  size_t n = sizeof texts / sizeof texts[0], i, d;
  for (d = 0; d < 70; d++) deep[d] = '[';
  deep[d++] = '1';
  for (i = 0; i < 70; i++) deep[d++] = ']';
  deep[d] = '\0';
  snprintf(prefix, sizeof prefix, "%s:", unique_name("json"));
  assert_int_equal(add_redis(c, NULL, "mem", prefix, "", &r), 0);
  snprintf(idx, sizeof idx, "%sx:0:", prefix);
  for (i = 0; i < n; i++) {
    snprintf(keybuf[i], sizeof keybuf[i], "j%zu", i);
    keys[i] = keybuf[i];
    snprintf(key, sizeof key, "%si:0::%s", prefix, keys[i]);
    assert_int_equal(redis_cli(out, sizeof out, "HSET", key, "value", texts[i], "created", "1700000000000", "updated",
                               "1700000000000", "version", "1", "expires", "0", NULL), 0);
  }
  result_reset(&r);
  assert_int_equal(engram_retrieve_many(c->mgr, keys, n, &o, capture_cb, &r), 0);
  wait_for(c, &r.calls, 1, 10000);
  assert_int_equal(r.status, 0);
  assert_int_equal((int)r.count, (int)n);
  for (i = 0; i < n; i++) {
    cJSON *want = cJSON_ParseWithLength(texts[i], strlen(texts[i]));
    char *a = cJSON_PrintUnformatted(want), *b = cJSON_PrintUnformatted(result_item(&r, i, "value")), *e;
    result_t one = {0};
    assert_non_null(a);
    assert_non_null(b);
    if (strcmp(a, b) != 0) fail_msg("value %zu: cJSON reads %s, the source %s", i, a, b);
    assert_int_equal(s_retrieve(c, keys[i], &o, &one), 0);
    e = cJSON_PrintUnformatted(result_item(&one, 0, "value"));
    assert_string_equal(e, a);
    free(e);
    result_reset(&one);
    free(a);
    free(b);
    cJSON_Delete(want);
  }
  result_reset(&r);
  /* Not JSON: the read fails, naming the key. */
  snprintf(key, sizeof key, "%si:0::bad", prefix);
  assert_int_equal(redis_cli(out, sizeof out, "HSET", key, "value", "{\"a\": [1, 2}", "version", "1", NULL), 0);
  assert_int_equal(s_retrieve(c, "bad", &o, &r), ENGRAM_EBACKEND);
  result_reset(&r);
}

/* ---- Keys, namespaces, patterns, prefixes ---- */

static void special_keys_and_namespaces(void **state) {
  ctx_t *c = *state;
  result_t r = {0};
  static const char *const keys[] = {"a*b", "a?b", "a[b]", "a\\b", "with space", "cr\r\nlf", "co:lon", "\xc3\xa9t\xc3\xa9 \xe2\x82\xac",
                                     "a", "ab", "b:c"};
  static const char *const nss[] = {"", "a", "a:b", "ns*?[]\\ :\r\n\xc3\xa9"};
  size_t i, j;
  char v[64];
  assert_int_equal(add_redis(c, NULL, "mem", unique_name("sp"), "", &r), 0);
  for (j = 0; j < 4; j++) {
    engram_opts_t o = {0};
    o.ns = nss[j];
    for (i = 0; i < 11; i++) {
      snprintf(v, sizeof v, "{\"ns\": %zu, \"k\": %zu}", j, i);
      assert_int_equal(s_store(c, keys[i], v, &o, &r), 0);
    }
  }
  for (j = 0; j < 4; j++) {
    engram_opts_t o = {0};
    engram_query_t q = ENGRAM_QUERY_INIT;
    o.ns = nss[j];
    for (i = 0; i < 11; i++) {
      assert_int_equal(s_retrieve(c, keys[i], &o, &r), 0);
      assert_string_equal(result_key(&r, 0), keys[i]);
      assert_int_equal((int)cJSON_GetObjectItem(result_item(&r, 0, "value"), "ns")->valuedouble, (int)j);
      assert_int_equal((int)cJSON_GetObjectItem(result_item(&r, 0, "value"), "k")->valuedouble, (int)i);
    }
    /* ns "a" + key "b:c" and ns "a:b" + key "c" never collide; each namespace lists its own 11 keys. */
    assert_int_equal(s_list(c, NULL, 100, NULL, &o, &r), 0);
    assert_int_equal(r.n_items, 11);
    for (i = 0; i < r.n_items; i++) assert_string_equal(result_item(&r, i, "ns")->valuestring, nss[j]);
    assert_int_equal(s_count(c, &q, &o, &r), 0);
    assert_int_equal((int)r.count, 11);
    /* Escaped glob characters match only themselves. */
    assert_int_equal(s_list(c, "a\\*b", 100, NULL, &o, &r), 0);
    assert_int_equal(r.n_items, 1);
    assert_string_equal(result_key(&r, 0), "a*b");
    assert_int_equal(s_list(c, "a\\?b", 100, NULL, &o, &r), 0);
    assert_int_equal(r.n_items, 1);
    assert_string_equal(result_key(&r, 0), "a?b");
    assert_int_equal(s_list(c, "a\\[b\\]", 100, NULL, &o, &r), 0);
    assert_int_equal(r.n_items, 1);
    assert_string_equal(result_key(&r, 0), "a[b]");
    assert_int_equal(s_list(c, "a\\\\b", 100, NULL, &o, &r), 0);
    assert_int_equal(r.n_items, 1);
    assert_string_equal(result_key(&r, 0), "a\\b");
    assert_int_equal(s_list(c, "a\\**", 100, NULL, &o, &r), 0); /* glob with the escaped literal prefix "a*" */
    assert_int_equal(r.n_items, 1);
    assert_string_equal(result_key(&r, 0), "a*b");
    assert_int_equal(s_list(c, "cr\r\n*", 100, NULL, &o, &r), 0);
    assert_int_equal(r.n_items, 1);
    assert_int_equal(s_list(c, "\xc3\xa9t\xc3\xa9*", 100, NULL, &o, &r), 0);
    assert_int_equal(r.n_items, 1);
    assert_int_equal(s_list(c, "a?", 100, NULL, &o, &r), 0); /* "ab" only: '?' is one character */
    assert_int_equal(r.n_items, 1);
    assert_string_equal(result_key(&r, 0), "ab");
    q.pattern = "with space";
    assert_int_equal(s_search(c, &q, &o, &r), 0);
    assert_int_equal(r.n_items, 1);
  }
  /* Clearing one namespace leaves the others, including the one whose name it prefixes. */
  {
    engram_opts_t o = {0};
    engram_query_t q = ENGRAM_QUERY_INIT;
    o.ns = "a";
    assert_int_equal(s_clear(c, &o, &r), 0);
    assert_int_equal((int)r.count, 11);
    assert_int_equal(s_count(c, &q, &o, &r), 0);
    assert_int_equal((int)r.count, 0);
    o.ns = "a:b";
    assert_int_equal(s_count(c, &q, &o, &r), 0);
    assert_int_equal((int)r.count, 11);
  }
  result_reset(&r);
}

static void prefixes_isolate_managers(void **state) {
  ctx_t *c = *state;
  result_t r = {0};
  engram_manager_t *m2;
  engram_opts_t oa = {0}, ob = {0}, all = {0};
  engram_query_t q = ENGRAM_QUERY_INIT;
  char pa[64], pb[64];
  int i;
  snprintf(pa, sizeof pa, "%s:", unique_name("pa"));
  snprintf(pb, sizeof pb, "%s:", unique_name("pb"));
  assert_int_equal(engram_manager_new(&m2, &c->loop, NULL), 0);
  assert_int_equal(add_redis(c, NULL, "a", pa, "", &r), 0);
  assert_int_equal(add_redis(c, m2, "b", pb, "", &r), 0);
  oa.source = "a";
  ob.source = "b";
  for (i = 0; i < 5; i++) {
    char key[16];
    cJSON *v = J("{\"text\": \"shared words here\"}");
    snprintf(key, sizeof key, "a%d", i);
    assert_int_equal(s_store(c, key, "{\"text\": \"shared words here\"}", &oa, &r), 0);
    snprintf(key, sizeof key, "b%d", i);
    result_reset(&r);
    assert_int_equal(engram_store(m2, key, v, &ob, capture_cb, &r), 0);
    wait_for(c, &r.calls, 1, 10000);
    assert_int_equal(r.status, 0);
    cJSON_Delete(v);
  }
  /* The same namespace ("") on one server: each manager sees only its own prefix. */
  assert_int_equal(s_list(c, NULL, 100, NULL, &oa, &r), 0);
  assert_int_equal(r.n_items, 5);
  for (i = 0; i < 5; i++) assert_int_equal(result_key(&r, (size_t)i)[0], 'a');
  assert_int_equal(s_count(c, &q, &oa, &r), 0);
  assert_int_equal((int)r.count, 5);
  q.text = "shared";
  q.limit = 100;
  assert_int_equal(s_search(c, &q, &oa, &r), 0);
  assert_int_equal(r.n_items, 5);
  for (i = 0; i < 5; i++) assert_int_equal(result_key(&r, (size_t)i)[0], 'a');
  q.text = NULL;
  all.source = "a";
  all.flags = ENGRAM_OPT_CONFIRM;
  assert_int_equal(s_clear(c, &all, &r), 0);
  assert_int_equal((int)r.count, 5);
  assert_int_equal(s_count(c, &q, &oa, &r), 0);
  assert_int_equal((int)r.count, 0);
  result_reset(&r);
  assert_int_equal(engram_count(m2, &q, &ob, capture_cb, &r), 0);
  wait_for(c, &r.calls, 1, 10000);
  assert_int_equal(r.status, 0);
  assert_int_equal((int)r.count, 5);
  result_reset(&r);
  assert_int_equal(engram_manager_close(m2, capture_cb, &r), 0);
  wait_for(c, &r.calls, 1, 10000);
  result_reset(&r);
}

/* ---- Connecting ---- */

static void down_at_open(void **state) {
  ctx_t *c = *state;
  result_t r = {0};
  char opts[512], addr[64];
  int port = redis_server_port(), ms;
  engram_opts_t o = {0};
  redis_server_kill9();
  snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
  /* Without lazy_connect: open fails, naming host and port, never the password. */
  snprintf(opts, sizeof opts, "{\"url\": \"redis://:s3cr3t-pw@127.0.0.1:%d/2\", \"prefix\": \"%s:\"}", port,
           unique_name("down"));
  assert_int_equal(add_with_options(c, "down", opts, &r), ENGRAM_EUNAVAILABLE);
  assert_non_null(strstr(r.message, addr));
  assert_null(strstr(r.message, "s3cr3t"));
  /* The cause as the socket has it (libuv reports the socket error as EBADF: "bad file descriptor" before). */
  if (strstr(r.message, "Connection refused") == NULL) fail_msg("message: %s", r.message);
  /* With lazy_connect: open succeeds, calls fail fast, and the source connects when the server appears. */
  snprintf(opts, sizeof opts, "{\"url\": \"redis://127.0.0.1:%d\", \"prefix\": \"%s:\", \"lazy_connect\": true}", port,
           unique_name("lazy"));
  assert_int_equal(add_with_options(c, "lazy", opts, &r), 0);
  o.source = "lazy";
  assert_int_equal(s_store(c, "k", "1", &o, &r), ENGRAM_EUNAVAILABLE);
  assert_non_null(strstr(r.message, addr));
  assert_int_equal(s_info(c, &o, &r), 0);
  assert_string_equal(cJSON_GetObjectItem(r.info, "health")->valuestring, "down");
  assert_true(cJSON_IsFalse(cJSON_GetObjectItem(r.info, "connected")));
  run_for(c, 300);
  assert_int_equal(redis_server_restart(), 0);
  assert_int_equal(engram_manager_set_default_source(c->mgr, "lazy"), 0);
  ms = ms_until_serving(c, 2000);
  assert_true(ms <= 2000);
  assert_int_equal(s_retrieve(c, "probe", &o, &r), 0);
  result_reset(&r);
}

static void wait_for_connection_option(void **state) {
  ctx_t *c = *state;
  result_t r = {0}, late = {0}, timed = {0};
  char opts[512];
  cJSON *v = J("\"queued\"");
  engram_opts_t o = {0};
  snprintf(opts, sizeof opts, "{\"port\": %d, \"prefix\": \"%s:\", \"wait_for_connection\": true}", redis_server_port(),
           unique_name("wait"));
  assert_int_equal(add_with_options(c, "mem", opts, &r), 0);
  redis_server_kill9();
  run_for(c, 100); /* the source notices */
  /* A call with a short deadline times out; one with a long deadline waits for the server. */
  o.deadline_ms = 150;
  assert_int_equal(engram_store(c->mgr, "t", v, &o, capture_cb, &timed), 0);
  o.deadline_ms = 10000;
  assert_int_equal(engram_store(c->mgr, "w", v, &o, capture_cb, &late), 0);
  wait_for(c, &timed.calls, 1, 5000);
  assert_int_equal(timed.status, ENGRAM_ETIMEDOUT);
  assert_int_equal(late.calls, 0);
  assert_int_equal(redis_server_restart(), 0);
  wait_for(c, &late.calls, 1, 5000);
  assert_int_equal(late.status, 0);
  run_for(c, 50);
  assert_int_equal(timed.calls, 1);
  assert_int_equal(late.calls, 1);
  o.deadline_ms = 0;
  assert_int_equal(s_retrieve(c, "w", &o, &r), 0);
  assert_int_equal(s_retrieve(c, "t", &o, &r), ENGRAM_ENOTFOUND); /* timed out before it was sent */
  cJSON_Delete(v);
  result_reset(&r);
  result_reset(&late);
  result_reset(&timed);
}

static void auth_and_db(void **state) {
  ctx_t *c = *state;
  result_t r = {0};
  char opts[512], out[256], key[256], prefix[64];
  redisContext *admin = sync_conn();
  redisReply *rep = redisCommand(admin, "CONFIG SET requirepass %s", "pa:ss@w/rd");
  assert_non_null(rep);
  freeReplyObject(rep);
  snprintf(prefix, sizeof prefix, "%s:", unique_name("auth"));
  /* A wrong password: open fails with Redis's reason, never with the password. */
  snprintf(opts, sizeof opts, "{\"url\": \"redis://:wrong-secret@127.0.0.1:%d\", \"prefix\": \"%s\"}", redis_server_port(),
           prefix);
  assert_int_equal(add_with_options(c, "bad", opts, &r), ENGRAM_EUNAVAILABLE);
  assert_non_null(strstr(r.message, "AUTH"));
  assert_null(strstr(r.message, "wrong-secret"));
  /* The right one, %-escaped in the URL, and database 3. */
  snprintf(opts, sizeof opts, "{\"url\": \"redis://:pa%%3Ass%%40w%%2Frd@127.0.0.1:%d/3\", \"prefix\": \"%s\"}",
           redis_server_port(), prefix);
  assert_int_equal(add_with_options(c, "mem", opts, &r), 0);
  assert_int_equal(s_store(c, "in-db3", "1", NULL, &r), 0);
  assert_int_equal(s_info(c, NULL, &r), 0);
  {
    char *text = cJSON_PrintUnformatted(r.info);
    assert_null(strstr(text, "pa:ss"));
    assert_non_null(strstr(text, "\"server_version\":\"7"));
    free(text);
  }
  rep = redisCommand(admin, "CONFIG SET requirepass %s", "");
  freeReplyObject(rep);
  snprintf(key, sizeof key, "%si:0::in-db3", prefix);
  assert_int_equal(redis_cli(out, sizeof out, "-n", "3", "EXISTS", key, NULL), 0);
  assert_string_equal(out, "1");
  assert_int_equal(redis_cli(out, sizeof out, "-n", "0", "EXISTS", key, NULL), 0);
  assert_string_equal(out, "0");
  redisFree(admin);
  result_reset(&r);
}

static int increment(const cJSON *current, cJSON **next, void *ud) {
  (*(int *)ud)++;
  *next = cJSON_CreateNumber(current ? current->valuedouble + 1 : 1);
  return 0;
}

static void script_flush_every_kind_of_call(void **state) {
  ctx_t *c = *state;
  result_t r = {0};
  redisContext *admin = sync_conn();
  redisReply *rep;
  engram_query_t q = ENGRAM_QUERY_INIT;
  const char *dk[] = {"x"};
  int calls = 0;
  assert_int_equal(add_redis(c, NULL, "mem", unique_name("nos"), "", &r), 0);
  assert_int_equal(s_store(c, "x", "1", NULL, &r), 0);
  /* Every script is gone from the server's cache: each kind of call must still work. */
  rep = redisCommand(admin, "SCRIPT FLUSH");
  freeReplyObject(rep);
  assert_int_equal(s_store(c, "y", "2", NULL, &r), 0);
  rep = redisCommand(admin, "SCRIPT FLUSH");
  freeReplyObject(rep);
  assert_int_equal(s_list(c, NULL, 10, NULL, NULL, &r), 0);
  assert_int_equal(r.n_items, 2);
  rep = redisCommand(admin, "SCRIPT FLUSH");
  freeReplyObject(rep);
  result_reset(&r);
  assert_int_equal(engram_update(c->mgr, "x", increment, &calls, NULL, capture_cb, &r), 0);
  wait_for(c, &r.calls, 1, 5000);
  assert_int_equal(r.status, 0);
  assert_int_equal(calls, 1);
  assert_int_equal((int)result_item(&r, 0, "value")->valuedouble, 2);
  rep = redisCommand(admin, "SCRIPT FLUSH");
  freeReplyObject(rep);
  result_reset(&r);
  assert_int_equal(engram_delete_many(c->mgr, dk, 1, NULL, capture_cb, &r), 0);
  wait_for(c, &r.calls, 1, 5000);
  assert_int_equal(r.status, 0);
  assert_int_equal((int)r.count, 1);
  rep = redisCommand(admin, "SCRIPT FLUSH");
  freeReplyObject(rep);
  assert_int_equal(s_count(c, &q, NULL, &r), 0);
  assert_int_equal((int)r.count, 1);
  rep = redisCommand(admin, "SCRIPT FLUSH");
  freeReplyObject(rep);
  assert_int_equal(s_clear(c, &(engram_opts_t){.ns = ""}, &r), 0);
  assert_int_equal((int)r.count, 1);
  redisFree(admin);
  result_reset(&r);
}

/* A store and a read of the same key issued together go out pipelined, store first. After SCRIPT FLUSH the
 * store's EVALSHA is answered NOSCRIPT without running while the read behind it runs: the read must not be
 * answered from that run (it would miss a store its caller was told had succeeded). The same for a delete and
 * an exists, and for a store_many and a retrieve_many. */
static void script_flush_keeps_read_after_write(void **state) {
  ctx_t *c = *state;
  result_t r = {0}, st = {0}, rt = {0}, dt = {0}, et = {0}, sm = {0}, rm = {0};
  redisContext *admin = sync_conn();
  redisReply *rep;
  engram_entry_t e[3];
  const char *mkeys[] = {"m0", "m1", "m2"};
  int round, j;
  assert_int_equal(add_redis(c, NULL, "mem", unique_name("raw"), "", &r), 0);
  assert_int_equal(s_store(c, "k", "1", NULL, &r), 0);
  for (round = 0; round < 4; round++) {
    cJSON *v = cJSON_CreateNumber(100 + round);
    assert_int_equal(s_store(c, "gone", "1", NULL, &r), 0);
    for (j = 0; j < 3; j++) {
      e[j].key = mkeys[j];
      e[j].value = v;
      e[j].metadata = NULL;
      e[j].has_ttl = 0;
      e[j].ttl_ms = 0;
    }
    rep = redisCommand(admin, "SCRIPT FLUSH");
    assert_non_null(rep);
    freeReplyObject(rep);
    result_reset(&st);
    result_reset(&rt);
    result_reset(&dt);
    result_reset(&et);
    result_reset(&sm);
    result_reset(&rm);
    assert_int_equal(engram_store(c->mgr, "k", v, NULL, capture_cb, &st), 0);
    assert_int_equal(engram_retrieve(c->mgr, "k", NULL, capture_cb, &rt), 0);
    assert_int_equal(engram_delete(c->mgr, "gone", NULL, capture_cb, &dt), 0);
    assert_int_equal(engram_exists(c->mgr, "gone", NULL, capture_cb, &et), 0);
    assert_int_equal(engram_store_many(c->mgr, e, 3, NULL, capture_cb, &sm), 0);
    assert_int_equal(engram_retrieve_many(c->mgr, mkeys, 3, NULL, capture_cb, &rm), 0);
    cJSON_Delete(v);
    wait_for(c, &st.calls, 1, 10000);
    wait_for(c, &rt.calls, 1, 10000);
    wait_for(c, &dt.calls, 1, 10000);
    wait_for(c, &et.calls, 1, 10000);
    wait_for(c, &sm.calls, 1, 10000);
    wait_for(c, &rm.calls, 1, 10000);
    assert_int_equal(st.status, 0);
    /* Reads issued together with the writes are not replayed (redis_pipe.c): they answer, before or after the
     * writes' second try. What is checked: every write succeeded, and a read issued after they answered sees
     * them. */
    assert_int_equal(rt.status, 0);
    assert_int_equal(dt.status, 0);
    assert_int_equal((int)dt.count, 1);
    assert_int_equal(et.status, 0);
    assert_int_equal(sm.status, 0);
    assert_int_equal(rm.status, 0);
    assert_int_equal(s_retrieve(c, "k", NULL, &r), 0);
    assert_int_equal((int)result_item(&r, 0, "value")->valuedouble, 100 + round);
    assert_int_equal(s_exists(c, "gone", NULL, &r), 0);
    assert_int_equal((int)r.count, 0);
    for (j = 0; j < 3; j++) {
      assert_int_equal(s_retrieve(c, mkeys[j], NULL, &r), 0);
      assert_int_equal((int)result_item(&r, 0, "value")->valuedouble, 100 + round);
    }
  }
  run_barrier(c);
  /* Each round opened a window: the flushed scripts were loaded again and the reads behind them sent again. */
  assert_true(info_num(c, "script_cache_recoveries") >= 4);
  assert_true(info_num(c, "commands_replayed") >= 4);
  redisFree(admin);
  result_reset(&r);
  result_reset(&st);
  result_reset(&rt);
  result_reset(&dt);
  result_reset(&et);
  result_reset(&sm);
  result_reset(&rm);
}

/* Lanes of pipelined work on one key each — two stores with if_version (v, then v + 1) and a retrieve, issued
 * together, the next three once all three are answered — while a timer flushes the script cache every
 * millisecond. Every store must succeed with the next version and every retrieve must see the second store:
 * a command answered NOSCRIPT and sent again must not be overtaken by a command sent after it. */
#define LANES 64
#define LANE_STEPS 25

typedef struct lane_s lane_t;
typedef struct {
  lane_t *lane;
  int which; /* 0, 1: the stores; 2: the retrieve */
} lane_op_t;

struct lane_s {
  ctx_t *c;
  int idx, step, answered;
  uint64_t version; /* of the key before the step */
  int status[3];
  uint64_t got_version[3];
  double got_value;
  lane_op_t ops[3];
  int *lanes_done;
  char *failure; /* the first failure of any lane (shared) */
};

static void lane_issue(lane_t *l);

static void lane_cb(int status, const engram_reply_t *reply, void *ud) {
  lane_op_t *op = ud;
  lane_t *l = op->lane;
  l->status[op->which] = status;
  if (status != 0 && l->failure[0] == '\0')
    snprintf(l->failure, 400, "lane %d step %d op %d: %s: %s", l->idx, l->step, op->which, engram_err_name(status),
             reply->message ? reply->message : "");
  l->got_version[op->which] = status == 0 && reply->n_items == 1 ? reply->items[0].version : 0;
  if (op->which == 2 && status == 0 && reply->n_items == 1) l->got_value = cJSON_GetNumberValue(reply->items[0].value);
  if (++l->answered < 3) return;
  if (l->failure[0] == '\0') {
    if (l->status[0] != 0 || l->status[1] != 0 || l->status[2] != 0)
      snprintf(l->failure, 400, "lane %d step %d: %s %s %s", l->idx, l->step, engram_err_name(l->status[0]),
               engram_err_name(l->status[1]), engram_err_name(l->status[2]));
    else if (l->got_version[0] != l->version + 1 || l->got_version[1] != l->version + 2)
      snprintf(l->failure, 400, "lane %d step %d: versions %llu %llu, read %g (want %llu %llu, %d)", l->idx, l->step,
               (unsigned long long)l->got_version[0], (unsigned long long)l->got_version[1], l->got_value,
               (unsigned long long)l->version + 1, (unsigned long long)l->version + 2, 2 * l->step + 2);
  }
  l->version += 2;
  if (++l->step == LANE_STEPS || l->failure[0] != '\0') {
    (*l->lanes_done)++;
    return;
  }
  lane_issue(l);
}

static void lane_issue(lane_t *l) {
  char key[32];
  engram_opts_t o = {0};
  cJSON *v;
  int i;
  snprintf(key, sizeof key, "lane%d", l->idx);
  l->answered = 0;
  for (i = 0; i < 2; i++) {
    o.if_version = l->version + (uint64_t)i;
    v = cJSON_CreateNumber(2 * l->step + 1 + i);
    if (engram_store(l->c->mgr, key, v, &o, lane_cb, &l->ops[i]) != 0) snprintf(l->failure, 400, "store refused");
    cJSON_Delete(v);
  }
  if (engram_retrieve(l->c->mgr, key, NULL, lane_cb, &l->ops[2]) != 0) snprintf(l->failure, 400, "retrieve refused");
}

static redisContext *flusher_conn;

static void on_flush_timer(uv_timer_t *t) {
  redisReply *rep = redisCommand(flusher_conn, "SCRIPT FLUSH");
  if (rep != NULL) freeReplyObject(rep);
}

static void script_flush_mid_burst_keeps_order(void **state) {
  ctx_t *c = *state;
  result_t r = {0};
  lane_t *lanes = calloc(LANES, sizeof *lanes);
  char failure[400] = "", key[32];
  uv_timer_t timer;
  int i, done = 0;
  uint64_t t0;
  assert_non_null(lanes);
  /* store_batch 4: stores of one step share batch calls or go in separate ones. */
  assert_int_equal(add_redis(c, NULL, "mem", unique_name("ord"), "\"store_batch\": 4", &r), 0);
  for (i = 0; i < LANES; i++) {
    snprintf(key, sizeof key, "lane%d", i);
    assert_int_equal(s_store(c, key, "0", NULL, &r), 0);
    lanes[i] = (lane_t){.c = c, .idx = i, .version = 1, .lanes_done = &done, .failure = failure};
    lanes[i].ops[0] = (lane_op_t){&lanes[i], 0};
    lanes[i].ops[1] = (lane_op_t){&lanes[i], 1};
    lanes[i].ops[2] = (lane_op_t){&lanes[i], 2};
  }
  flusher_conn = sync_conn();
  assert_int_equal(uv_timer_init(&c->loop, &timer), 0);
  assert_int_equal(uv_timer_start(&timer, on_flush_timer, 1, 1), 0);
  for (i = 0; i < LANES; i++) lane_issue(&lanes[i]);
  t0 = uv_hrtime();
  while (done < LANES) {
    uv_run(&c->loop, UV_RUN_ONCE);
    if (uv_hrtime() - t0 > 60000000000ull) fail_msg("only %d of %d lanes finished in 60 s", done, LANES);
  }
  uv_timer_stop(&timer);
  uv_close((uv_handle_t *)&timer, NULL);
  run_barrier(c);
  redisFree(flusher_conn);
  flusher_conn = NULL;
  if (failure[0] != '\0') fail_msg("%s", failure);
  for (i = 0; i < LANES; i++) assert_int_equal(lanes[i].step, LANE_STEPS);
  /* The test exercised what it is about: the cache was found flushed, and commands were sent again. */
  if (info_num(c, "script_cache_recoveries") < 5)
    fail_msg("only %g script cache recoveries: the flushes did not meet the traffic", info_num(c, "script_cache_recoveries"));
  free(lanes);
  result_reset(&r);
}

static void host_name_and_small_window(void **state) {
  ctx_t *c = *state;
  result_t r = {0};
  char opts[512];
  call_t calls[200];
  tally_t t = {0};
  cJSON *v = J("{\"v\": 1}");
  char key[16];
  int i;
  memset(calls, 0, sizeof calls);
  /* "localhost" goes through uv_getaddrinfo; max_inflight 4 queues the rest of 200 calls in the source. */
  snprintf(opts, sizeof opts, "{\"host\": \"localhost\", \"port\": %d, \"prefix\": \"%s:\", \"max_inflight\": 4}",
           redis_server_port(), unique_name("dns"));
  assert_int_equal(add_with_options(c, "mem", opts, &r), 0);
  for (i = 0; i < 200; i++) {
    calls[i].t = &t;
    snprintf(key, sizeof key, "w%d", i);
    assert_int_equal(engram_store(c->mgr, key, v, NULL, call_cb, &calls[i]), 0);
  }
  wait_for(c, &t.done, 200, 10000);
  assert_int_equal(t.ok, 200);
  assert_int_equal(t.dup, 0);
  assert_int_equal(s_count(c, &(engram_query_t)ENGRAM_QUERY_INIT, NULL, &r), 0);
  assert_int_equal((int)r.count, 200);
  assert_int_equal(s_info(c, NULL, &r), 0);
  assert_non_null(strstr(cJSON_GetObjectItem(r.info, "address")->valuestring, "localhost:"));
  cJSON_Delete(v);
  result_reset(&r);
}

static void connect_timeout_fails_open(void **state) {
  ctx_t *c = *state;
  result_t r = {0};
  char opts[256];
  uint64_t t0;
  int ms;
  /* A stopped server accepts the TCP connection but never answers the handshake. */
  assert_int_equal(kill(redis_server_pid(), SIGSTOP), 0);
  snprintf(opts, sizeof opts, "{\"port\": %d, \"prefix\": \"%s:\", \"connect_timeout_ms\": 300}", redis_server_port(),
           unique_name("cto"));
  t0 = uv_hrtime();
  assert_int_equal(add_with_options(c, "slow", opts, &r), ENGRAM_EUNAVAILABLE);
  ms = (int)((uv_hrtime() - t0) / 1000000u);
  assert_non_null(strstr(r.message, "connect timeout after 300 ms"));
  assert_true(ms >= 290 && ms < 5000);
  assert_int_equal(kill(redis_server_pid(), SIGCONT), 0);
  result_reset(&r);
}

/* With clear left to the core, the whole-source clear lists every namespace (ENGRAM_REQ_ALL_NAMESPACES). */
static void emulated_clear_lists_every_namespace(void **state) {
  ctx_t *c = *state;
  result_t r = {0};
  static engram_source_vtable_t vt;
  char opts[256];
  static const char *const nss[] = {"", "b", "a:b", "zz"};
  engram_opts_t o = {0};
  engram_query_t q = ENGRAM_QUERY_INIT;
  size_t i, k;
  vt = engram_source_redis;
  vt.clear = NULL;
  snprintf(opts, sizeof opts, "{\"port\": %d, \"prefix\": \"%s:\", \"scan_batch\": 7}", redis_server_port(),
           unique_name("emu"));
  result_reset(&r);
  assert_int_equal(engram_manager_add_source(c->mgr, "mem", &vt, opts, "redis", 1, capture_cb, &r), 0);
  wait_for(c, &r.calls, 1, 10000);
  assert_int_equal(r.status, 0);
  for (i = 0; i < 4; i++) {
    o.ns = nss[i];
    for (k = 0; k < 25; k++) {
      char key[16];
      snprintf(key, sizeof key, "k%02zu", k);
      assert_int_equal(s_store(c, key, "1", &o, &r), 0);
    }
  }
  o.ns = NULL;
  o.flags = ENGRAM_OPT_CONFIRM;
  assert_int_equal(s_clear(c, &o, &r), 0);
  assert_int_equal((int)r.count, 100);
  o.flags = 0;
  for (i = 0; i < 4; i++) {
    o.ns = nss[i];
    assert_int_equal(s_count(c, &q, &o, &r), 0);
    assert_int_equal((int)r.count, 0);
  }
  result_reset(&r);
}

static void bad_options_are_named(void **state) {
  ctx_t *c = *state;
  result_t r = {0};
  assert_int_equal(add_with_options(c, "x", "{\"hots\": \"a\"}", &r), ENGRAM_EINVAL);
  assert_non_null(strstr(r.message, "hots"));
  assert_int_equal(add_with_options(c, "x", "{\"url\": \"http://:topsecret@h:1\"}", &r), ENGRAM_EINVAL);
  assert_non_null(strstr(r.message, "url"));
  assert_null(strstr(r.message, "topsecret"));
  assert_int_equal(add_with_options(c, "x", "{\"url\": \"redis://h:1\", \"port\": 2}", &r), ENGRAM_EINVAL);
  assert_int_equal(add_with_options(c, "x", "{\"max_inflight\": 0}", &r), ENGRAM_EINVAL);
  assert_non_null(strstr(r.message, "max_inflight"));
  result_reset(&r);
}

/* ---- Ranked text search ---- */

/* A small deterministic generator for the search tests. */
static uint32_t rnd(uint64_t *s) {
  *s = *s * 6364136223846793005ull + 1442695040888963407ull;
  return (uint32_t)(*s >> 33);
}

/* Words of the generated items: case, digits, non-ASCII, and tokens longer than ENGRAM_TOKEN_MAX whose cut
 * falls inside, at, or after a multi-byte character. */
static const char *const words[] = {
    "alpha", "Beta", "GAMMA", "delta42", "caf\xc3\xa9", "na\xc3\xafve", "x", "y1", "the", "http", "HTTP", "zeta",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab",
    "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\xc3\xa9tail",
    "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\xe2\x82\xactail",
    "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB\xf0\x9f\x98\x80"};
#define N_WORDS (sizeof words / sizeof words[0])

/* Appends a JSON string leaf: words joined by separators, some of them escapes (\u0041 is a token byte). */
static void gen_string(uint64_t *s, char *out, size_t cap) {
  static const char *const seps[] = {" ", " ", ", ", "-", "\\n", "\\\"", "\\t", "\\/", "\\\\", "\\u0041", "\\u00e9"};
  int n = 1 + (int)(rnd(s) % 6), i;
  size_t len = strlen(out);
  len += (size_t)snprintf(out + len, cap - len, "\"");
  for (i = 0; i < n && len < cap - 200; i++)
    len += (size_t)snprintf(out + len, cap - len, "%s%s", i ? seps[rnd(s) % (sizeof seps / sizeof seps[0])] : "",
                            words[rnd(s) % N_WORDS]);
  snprintf(out + len, cap - len, "\"");
}

static void gen_value(uint64_t *s, char *out, size_t cap, int depth) {
  size_t len = strlen(out);
  int kind = (int)(rnd(s) % (depth > 3 ? 4 : 7)), i, n;
  if (len > cap - 400) kind = 3;
  switch (kind) {
    case 0:
    case 1: gen_string(s, out, cap); break;
    case 2: snprintf(out + len, cap - len, "%s", (const char *[]){"true", "false", "null", "-0.5e+3", "12"}[rnd(s) % 5]); break;
    case 3: snprintf(out + len, cap - len, "%u", rnd(s) % 1000); break;
    case 4:
    case 5:
      n = (int)(rnd(s) % 4);
      snprintf(out + len, cap - len, "%s", kind == 4 ? "[" : "{");
      for (i = 0; i < n; i++) {
        if (i) strcat(out, kind == 4 ? ", " : ",");
        if (kind == 5) {
          gen_string(s, out, cap); /* a member name: never indexed */
          strcat(out, ": ");
        }
        gen_value(s, out, cap, depth + 1);
      }
      strcat(out, kind == 4 ? "]" : "}");
      break;
    default: gen_string(s, out, cap); break;
  }
}

/* Item i's stored JSON text: mostly generated, plus texts outside the fast scanner's subset that cJSON still
 * reads (its fallback must give what cJSON gives). */
static void gen_item(uint64_t *s, int i, char *out, size_t cap) {
  static const char *const odd[] = {
      "{\"t\": \"nul\\u0000after alpha\"}", "[\"surrogate \\ud83d\\ude00 beta\"]", "{\"a\":\"x\"} trailing gamma",
      "\"raw\x01control alpha\"", "0123", "{\"n\": 1234567890123456789012345678901234567890123456789012345678901234567}",
      "\v\"vertical tab before alpha\"", "\"\\u0042eta\"", "{\"a\": } alpha", "[\"unterminated alpha",
  };
  out[0] = '\0';
  if (i % 17 == 5) {
    snprintf(out, cap, "%s", odd[(i / 17) % (sizeof odd / sizeof odd[0])]);
    return;
  }
  if (i % 23 == 7) { /* deep nesting: beyond the fast scanner's depth, within cJSON's */
    int d;
    for (d = 0; d < 300; d++) strcat(out, "[");
    gen_string(s, out, cap);
    for (d = 0; d < 300; d++) strcat(out, "]");
    return;
  }
  gen_value(s, out, cap, 0);
}

/* What the source indexed before: engram_text_of over the value as cJSON reads it (NULL: not JSON). */
static char *ref_text(const char *key, const char *json) {
  cJSON *v = cJSON_ParseWithLength(json, strlen(json));
  char *t;
  if (v == NULL) return NULL;
  t = engram_text_of(key, v);
  cJSON_Delete(v);
  return t;
}

/* The indexed text from stored JSON and the streamed scorer agree with engram_text_of, engram_tokenize and
 * engram_text_index, bit for bit, over generated items (no server). */
static void rank_matches_text_index(void **state) {
  enum { N = 600 };
  static char json[N][4096];
  char key[N][16], *text[N];
  static const char *const queries[] = {"alpha", "ALPHA beta", "the the http", "caf\xc3\xa9 NA\xc3\xafVE zeta k00042",
                                        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                                        "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\xc3\xa9",
                                        "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
                                        "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
                                        "fooabar gamma eta delta42 y1 x", "nothing-matches", "!!"};
  engram__rbuf_t buf = {0};
  uint64_t seed = 7;
  size_t qi, i;
  int n_valid = 0, n_invalid = 0;
  (void)state;
  for (i = 0; i < N; i++) {
    snprintf(key[i], sizeof key[i], "k%05zu", i);
    gen_item(&seed, (int)i, json[i], sizeof json[i]);
    text[i] = ref_text(key[i], json[i]);
    /* engram__redis_text_of gives engram_text_of's text, or EBACKEND for what is not JSON. */
    assert_int_equal(engram__redis_text_of(&buf, key[i], strlen(key[i]), json[i], strlen(json[i])),
                     text[i] ? 0 : ENGRAM_EBACKEND);
    if (text[i] != NULL) {
      if (buf.len != strlen(text[i]) || memcmp(buf.p, text[i], buf.len) != 0)
        fail_msg("item %zu: text differs for %s", i, json[i]);
      n_valid++;
    } else {
      n_invalid++;
    }
  }
  assert_true(n_valid > N / 2);
  for (qi = 0; qi < sizeof queries / sizeof queries[0]; qi++) {
    engram__redis_rank_t *a, *b;
    engram_text_index_t *ix;
    engram_text_hit_t *hits = calloc(N, sizeof *hits);
    uint32_t *top = calloc(N, sizeof *top);
    size_t n_hits = 0, n_top, doc = 0;
    assert_int_equal(engram__redis_rank_new(queries[qi], &a), 0);
    assert_int_equal(engram__redis_rank_new(queries[qi], &b), 0);
    assert_int_equal(engram_text_index_new(&ix), 0);
    for (i = 0; i < N; i++) {
      int rc;
      if (text[i] == NULL) continue;
      /* a: as the walk does (JSON where it lies, else the text); b: the text; ix: the index, in key order. */
      rc = engram__redis_rank_add_json(a, key[i], strlen(key[i]), json[i], strlen(json[i]), i);
      if (rc == 1) rc = engram__redis_rank_add(a, key[i], strlen(key[i]), text[i], strlen(text[i]), i);
      assert_int_equal(rc, 0);
      assert_int_equal(engram__redis_rank_add(b, key[i], strlen(key[i]), text[i], strlen(text[i]), i), 0);
      assert_int_equal(engram_text_index_put(ix, doc++, text[i], strlen(text[i])), 0);
    }
    engram__redis_rank_score(a);
    engram__redis_rank_score(b);
    assert_int_equal(engram_text_index_search(ix, queries[qi], N, NULL, NULL, NULL, hits, &n_hits), 0);
    assert_int_equal(engram__redis_rank_matching(a), n_hits);
    assert_int_equal(engram__redis_rank_matching(b), n_hits);
    n_top = engram__redis_rank_top(a, N, top);
    assert_int_equal(n_top, n_hits);
    for (i = 0; i < n_hits; i++) {
      /* The index numbered the valid items in key order: find the key of hit i. */
      size_t k, seen = 0;
      for (k = 0; k < N; k++)
        if (text[k] != NULL && seen++ == hits[i].doc) break;
      assert_string_equal(engram__redis_rank_key(a, top[i]), key[k]);
      if (engram__redis_rank_score_of(a, top[i]) != hits[i].score)
        fail_msg("query \"%s\" hit %zu: score %.17g, the index says %.17g", queries[qi], i,
                 engram__redis_rank_score_of(a, top[i]), hits[i].score);
    }
    n_top = engram__redis_rank_top(b, N, top);
    for (i = 0; i < n_top; i++) assert_true(engram__redis_rank_score_of(b, top[i]) == hits[i].score);
    assert_int_equal(engram__redis_rank_count(a, 0.5), engram__redis_rank_count(b, 0.5));
    if (qi < 3) assert_true(n_hits > 10);
    engram__redis_rank_free(a);
    engram__redis_rank_free(b);
    engram_text_index_free(ix);
    free(hits);
    free(top);
  }
  print_message("text and ranking of %d generated items (%d not JSON) agree with the index\n", n_valid, n_invalid);
  for (i = 0; i < N; i++) free(text[i]);
  engram__rbuf_free(&buf);
}

/* One search through source name; returns its status (r holds the reply). */
static int search_src(ctx_t *c, engram_manager_t *mgr, const char *source, const char *ns, const engram_query_t *q,
                      int count, result_t *r) {
  engram_opts_t o = {0};
  o.source = source;
  o.ns = ns;
  result_reset(r);
  if (count) assert_int_equal(engram_count(mgr ? mgr : c->mgr, q, &o, capture_cb, r), 0);
  else assert_int_equal(engram_search(mgr ? mgr : c->mgr, q, &o, capture_cb, r), 0);
  wait_for(c, &r->calls, 1, 30000);
  return r->status;
}

static double info_of(ctx_t *c, const char *source, const char *field) {
  result_t r = {0};
  engram_opts_t o = {0};
  const cJSON *v;
  double d;
  o.source = source;
  assert_int_equal(s_info(c, &o, &r), 0);
  v = cJSON_GetObjectItem(r.info, field);
  assert_non_null(v);
  d = v->valuedouble;
  result_reset(&r);
  return d;
}

/* Asserts that two replies hold the same keys in the same order with the same scores. */
static void assert_same_results(const result_t *a, const result_t *b, const char *what) {
  size_t i;
  if (a->n_items != b->n_items) fail_msg("%s: %zu results against %zu", what, a->n_items, b->n_items);
  for (i = 0; i < a->n_items; i++) {
    if (strcmp(result_key(a, i), result_key(b, i)) != 0)
      fail_msg("%s: result %zu is '%s' against '%s'", what, i, result_key(a, i), result_key(b, i));
    if (result_item(a, i, "score")->valuedouble != result_item(b, i, "score")->valuedouble)
      fail_msg("%s: result %zu ('%s') scores %.17g against %.17g", what, i, result_key(a, i),
               result_item(a, i, "score")->valuedouble, result_item(b, i, "score")->valuedouble);
  }
}

/* The same search through the source without a cache ("walk") and the one with ("cached"): same answer. */
static void same_both_ways(ctx_t *c, const char *ns, const engram_query_t *q, result_t *walk, const char *what) {
  result_t cached = {0};
  assert_int_equal(search_src(c, NULL, "walk", ns, q, 0, walk), 0);
  assert_int_equal(search_src(c, NULL, "cached", ns, q, 0, &cached), 0);
  assert_same_results(walk, &cached, what);
  assert_int_equal(search_src(c, NULL, "walk", ns, q, 1, walk), 0);
  assert_int_equal(search_src(c, NULL, "cached", ns, q, 1, &cached), 0);
  if (walk->count != cached.count) fail_msg("%s: count %llu against %llu", what, (unsigned long long)walk->count,
                                            (unsigned long long)cached.count);
  assert_int_equal(search_src(c, NULL, "walk", ns, q, 0, walk), 0);
  result_reset(&cached);
}

/* Items written in the documented layout by another tool (hiredis here), including texts outside the fast
 * scanner's subset, ranked through Redis — walking in batches of 7 and through the cached index — exactly as
 * an engram_text_index over them in key order ranks them: keys, order, scores, counts, offsets, min_score. */
static void text_search_matches_index(void **state) {
  enum { N = 400 };
  ctx_t *c = *state;
  result_t r = {0}, w = {0};
  static char json[N][4096];
  char prefix[64], opts[256], key[16], hkey[128], idx[128], gen[128], *text[N];
  redisContext *admin = sync_conn();
  redisReply *rep;
  engram_text_index_t *ix;
  engram_text_hit_t hits[64];
  uint64_t seed = 99;
  size_t i, k, n_hits, doc = 0;
  static const char *const queries[] = {"alpha", "ALPHA beta gamma", "the http", "zeta k00042 caf\xc3\xa9",
                                        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"};
  snprintf(prefix, sizeof prefix, "%s:", unique_name("ts"));
  snprintf(opts, sizeof opts, "\"scan_batch\": 7, \"search_cache_items\": 0");
  assert_int_equal(add_redis(c, NULL, "walk", prefix, opts, &r), 0);
  assert_int_equal(add_redis(c, NULL, "cached", prefix, "\"scan_batch\": 7", &r), 0);
  snprintf(idx, sizeof idx, "%sx:1:n", prefix);
  snprintf(gen, sizeof gen, "%sg:1:n", prefix);
  assert_int_equal(engram_text_index_new(&ix), 0);
  for (i = 0; i < N; i++) {
    snprintf(key, sizeof key, "k%05zu", i);
    gen_item(&seed, (int)i, json[i], sizeof json[i]);
    if ((text[i] = ref_text(key, json[i])) == NULL) continue; /* not JSON: kept out (it fails a search) */
    snprintf(hkey, sizeof hkey, "%si:1:n:%s", prefix, key);
    rep = redisCommand(admin, "HSET %s value %s version 3 expires 0", hkey, json[i]);
    assert_non_null(rep);
    freeReplyObject(rep);
    rep = redisCommand(admin, "ZADD %s 0 %s", idx, key);
    freeReplyObject(rep);
    assert_int_equal(engram_text_index_put(ix, doc++, text[i], strlen(text[i])), 0);
  }
  /* As the documentation asks of other tools: bump the generation after writing. */
  rep = redisCommand(admin, "INCR %s", gen);
  freeReplyObject(rep);
  for (k = 0; k < sizeof queries / sizeof queries[0]; k++) {
    engram_query_t q = ENGRAM_QUERY_INIT;
    int round;
    q.text = queries[k];
    for (round = 0; round < 4; round++) {
      size_t j, seen;
      q.limit = round == 0 ? 10 : round == 1 ? 64 : 5;
      q.offset = round == 2 ? 3 : 0;
      q.min_score = round == 3 ? 0.4 : 0.0;
      same_both_ways(c, "n", &q, &w, queries[k]);
      assert_int_equal(engram_text_index_search(ix, q.text, (size_t)(q.offset + q.limit), NULL, NULL, NULL, hits, &n_hits), 0);
      for (j = (size_t)q.offset, seen = 0; j < n_hits && hits[j].score >= q.min_score; j++, seen++) {
        size_t d, m = 0;
        for (d = 0; d < N; d++)
          if (text[d] != NULL && m++ == hits[j].doc) break;
        snprintf(key, sizeof key, "k%05zu", d);
        assert_true(seen < w.n_items);
        assert_string_equal(result_key(&w, seen), key);
        assert_true(result_item(&w, seen, "score")->valuedouble == hits[j].score);
      }
      assert_int_equal(w.n_items, seen);
    }
  }
  assert_true(info_of(c, "cached", "search_cache_hits") > 10);
  assert_int_equal((int)info_of(c, "cached", "search_cache_builds"), 1);
  assert_int_equal((int)info_of(c, "walk", "search_cache_builds"), 0);
  /* A value that is not JSON fails the search, naming the key, both ways. */
  snprintf(hkey, sizeof hkey, "%si:1:n:k00001x", prefix);
  rep = redisCommand(admin, "HSET %s value %s", hkey, "{not json alpha");
  freeReplyObject(rep);
  rep = redisCommand(admin, "ZADD %s 0 k00001x", idx);
  freeReplyObject(rep);
  rep = redisCommand(admin, "INCR %s", gen);
  freeReplyObject(rep);
  {
    engram_query_t q = ENGRAM_QUERY_INIT;
    q.text = "alpha";
    assert_int_equal(search_src(c, NULL, "walk", "n", &q, 0, &r), ENGRAM_EBACKEND);
    assert_non_null(strstr(r.message, "k00001x"));
    assert_int_equal(search_src(c, NULL, "cached", "n", &q, 0, &r), ENGRAM_EBACKEND);
    assert_non_null(strstr(r.message, "k00001x"));
  }
  for (i = 0; i < N; i++) free(text[i]);
  engram_text_index_free(ix);
  redisFree(admin);
  result_reset(&r);
  result_reset(&w);
}

/* The cached index never answers for a namespace that changed: writes in the namespace (store, store_many,
 * update, delete, clear) through this source or a second manager on the same prefix, TTL expiry, and writes
 * by another tool (a new key via ZADD, a hash deleted, the whole layout deleted and written again) — after
 * each, the cached source answers exactly as the source without a cache; writes in another namespace leave
 * the cached index in use. */
static void text_search_cache_follows_writes(void **state) {
  ctx_t *c = *state;
  result_t r = {0}, w = {0};
  engram_manager_t *m2;
  engram_opts_t o = {0};
  engram_query_t q = ENGRAM_QUERY_INIT;
  char prefix[64], key[32], hkey[128], out[256];
  double hits, stale, builds, walks;
  int i;
  snprintf(prefix, sizeof prefix, "%s:", unique_name("tc"));
  assert_int_equal(add_redis(c, NULL, "walk", prefix, "\"search_cache_items\": 0", &r), 0);
  assert_int_equal(add_redis(c, NULL, "cached", prefix, "\"scan_batch\": 16", &r), 0);
  assert_int_equal(engram_manager_new(&m2, &c->loop, NULL), 0);
  second_mgr = m2;
  assert_int_equal(add_redis(c, m2, "other", prefix, "", &r), 0);
  o.source = "cached";
  for (i = 0; i < 60; i++) {
    char v[128];
    snprintf(key, sizeof key, "doc%02d", i);
    snprintf(v, sizeof v, "{\"text\": \"common words %s item %d\"}", i % 3 ? "alpha" : "beta beta", i);
    o.ns = i % 2 ? "a" : "b";
    assert_int_equal(s_store(c, key, v, &o, &r), 0);
  }
  q.text = "alpha beta words";
  q.limit = 5;
  same_both_ways(c, "a", &q, &w, "initial");
  hits = info_of(c, "cached", "search_cache_hits");
  assert_true(hits >= 1);

  /* Writes in another namespace: the index of "a" stays in use, and the answers stay the same. */
  o.ns = "b";
  assert_int_equal(s_store(c, "zz", "{\"text\": \"alpha alpha alpha beta\"}", &o, &r), 0);
  same_both_ways(c, "a", &q, &w, "after a write in another namespace");
  assert_true(info_of(c, "cached", "search_cache_hits") >= hits + 2); /* its search and its count */

  /* A store in the namespace that ranks first. Our own writes (store, delete, overwrite, update) are applied to
   * the cached index as their replies come back: no walk, no build until the second manager writes. */
  builds = info_of(c, "cached", "search_cache_builds");
  walks = info_of(c, "cached", "search_walks");
  o.ns = "a";
  assert_int_equal(s_store(c, "new-top", "{\"text\": \"alpha beta words alpha beta words\"}", &o, &r), 0);
  same_both_ways(c, "a", &q, &w, "after a store");
  assert_string_equal(result_key(&w, 0), "new-top");
  /* Deleted again. */
  assert_int_equal(s_delete(c, "new-top", &o, &r), 0);
  same_both_ways(c, "a", &q, &w, "after a delete");
  assert_string_not_equal(result_key(&w, 0), "new-top");
  /* An update that changes the words of the best item. */
  {
    engram_opts_t ou = {0};
    ou.source = "cached";
    ou.ns = "a";
    assert_int_equal(s_store(c, "doc01", "{\"text\": \"no longer matching\"}", &ou, &r), 0);
    same_both_ways(c, "a", &q, &w, "after an overwrite");
    for (i = 0; i < (int)w.n_items; i++) assert_string_not_equal(result_key(&w, (size_t)i), "doc01");
    {
      cJSON *v0 = J("{\"text\": \"alpha beta words beta\"}"), *v1 = J("{\"text\": \"words\"}");
      engram_entry_t e[2] = {{"many-1", NULL, NULL, 0, 0}, {"doc03", NULL, NULL, 0, 0}};
      const char *gone[] = {"doc05", "many-1"};
      e[0].value = v0;
      e[1].value = v1;
      result_reset(&r);
      assert_int_equal(engram_store_many(c->mgr, e, 2, &ou, capture_cb, &r), 0);
      wait_for(c, &r.calls, 1, 10000);
      assert_int_equal(r.status, 0);
      cJSON_Delete(v0);
      cJSON_Delete(v1);
      same_both_ways(c, "a", &q, &w, "after a store_many");
      result_reset(&r);
      assert_int_equal(engram_delete_many(c->mgr, gone, 2, &ou, capture_cb, &r), 0);
      wait_for(c, &r.calls, 1, 10000);
      assert_int_equal(r.status, 0);
      same_both_ways(c, "a", &q, &w, "after a delete_many");
    }
    assert_true(info_of(c, "cached", "search_cache_builds") == builds);
    assert_true(info_of(c, "cached", "search_walks") == walks);
  }
  /* A second manager on the same prefix writes. */
  {
    engram_opts_t o2 = {0};
    cJSON *v = J("{\"text\": \"alpha beta words alpha beta words words\"}");
    o2.ns = "a";
    result_reset(&r);
    assert_int_equal(engram_store(m2, "from-m2", v, &o2, capture_cb, &r), 0);
    wait_for(c, &r.calls, 1, 10000);
    assert_int_equal(r.status, 0);
    cJSON_Delete(v);
    same_both_ways(c, "a", &q, &w, "after a write by a second manager");
    assert_string_equal(result_key(&w, 0), "from-m2");
    result_reset(&r);
    assert_int_equal(engram_delete(m2, "from-m2", &o2, capture_cb, &r), 0);
    wait_for(c, &r.calls, 1, 10000);
    same_both_ways(c, "a", &q, &w, "after a delete by a second manager");
  }
  /* TTL: an item that ranks first while it lives, then is gone; the statistics no longer count it. */
  {
    engram_opts_t ot = {0};
    ot.source = "cached";
    ot.ns = "a";
    ot.flags = ENGRAM_OPT_TTL;
    ot.ttl_ms = 1500; /* generous: the checks in between must run before it ends */
    assert_int_equal(s_store(c, "short-lived", "{\"text\": \"alpha beta words alpha beta words words\"}", &ot, &r), 0);
    same_both_ways(c, "a", &q, &w, "with an item under TTL");
    assert_string_equal(result_key(&w, 0), "short-lived");
    run_for(c, 1700);
    same_both_ways(c, "a", &q, &w, "after the TTL");
    for (i = 0; i < (int)w.n_items; i++) assert_string_not_equal(result_key(&w, (size_t)i), "short-lived");
    /* One far down the ranking: only the statistics (N, df, average length) show it, and its expiry. */
    assert_int_equal(s_store(c, "short-lived-2", "{\"text\": \"beta and many other words that say little else here "
                                                 "at all in this long text\"}", &ot, &r), 0);
    same_both_ways(c, "a", &q, &w, "with an item far down under TTL");
    for (i = 0; i < (int)w.n_items; i++) assert_string_not_equal(result_key(&w, (size_t)i), "short-lived-2");
    run_for(c, 1700);
    same_both_ways(c, "a", &q, &w, "after that TTL");
  }
  /* Another tool adds an item without bumping the generation: the index's size tells. */
  same_both_ways(c, "a", &q, &w, "before the other tool");
  snprintf(hkey, sizeof hkey, "%si:1:a:cli-item", prefix);
  assert_int_equal(redis_cli(out, sizeof out, "HSET", hkey, "value", "{\"t\": \"alpha beta words words words alpha\"}",
                             "version", "1", "expires", "0", NULL), 0);
  snprintf(hkey, sizeof hkey, "%sx:1:a", prefix);
  assert_int_equal(redis_cli(out, sizeof out, "ZADD", hkey, "0", "cli-item", NULL), 0);
  same_both_ways(c, "a", &q, &w, "after another tool's ZADD");
  assert_string_equal(result_key(&w, 0), "cli-item");
  /* ... and deletes the best item's hash behind engram's back: the candidate check tells. */
  stale = info_of(c, "cached", "search_cache_stale");
  snprintf(hkey, sizeof hkey, "%si:1:a:cli-item", prefix);
  assert_int_equal(redis_cli(out, sizeof out, "DEL", hkey, NULL), 0);
  same_both_ways(c, "a", &q, &w, "after another tool's DEL");
  assert_string_not_equal(result_key(&w, 0), "cli-item");
  assert_true(info_of(c, "cached", "search_cache_stale") > stale);
  /* clear empties the namespace for both. */
  {
    engram_opts_t ox = {0};
    ox.source = "cached";
    ox.ns = "a";
    assert_int_equal(s_clear(c, &ox, &r), 0);
    same_both_ways(c, "a", &q, &w, "after a clear");
    assert_int_equal(w.n_items, 0);
  }
  /* A fresh namespace, indexed after two stores; then its whole layout — generation included — is deleted and
   * written again with the same keys in as many calls: the generation starts afresh from the server's clock,
   * so it cannot come back to the value the index was built at. */
  {
    const char *suffixes[] = {"i:1:c:x1", "i:1:c:x2", "x:1:c", "g:1:c"};
    engram_opts_t ox = {0};
    ox.source = "cached";
    ox.ns = "c";
    assert_int_equal(s_store(c, "x1", "{\"text\": \"alpha words\"}", &ox, &r), 0);
    assert_int_equal(s_store(c, "x2", "{\"text\": \"beta beta words\"}", &ox, &r), 0);
    same_both_ways(c, "c", &q, &w, "two items");
    assert_string_equal(result_key(&w, 0), "x2");
    for (i = 0; i < 4; i++) {
      snprintf(hkey, sizeof hkey, "%s%s", prefix, suffixes[i]);
      assert_int_equal(redis_cli(out, sizeof out, "DEL", hkey, NULL), 0);
    }
    assert_int_equal(s_store(c, "x1", "{\"text\": \"beta beta words\"}", &ox, &r), 0);
    assert_int_equal(s_store(c, "x2", "{\"text\": \"alpha words\"}", &ox, &r), 0);
    same_both_ways(c, "c", &q, &w, "the layout written again");
    assert_string_equal(result_key(&w, 0), "x1");
  }
  result_reset(&r);
  second_mgr = NULL;
  assert_int_equal(engram_manager_close(m2, capture_cb, &r), 0);
  wait_for(c, &r.calls, 1, 10000);
  result_reset(&r);
  result_reset(&w);
}

/* ---- Allocation failures ---- */


static void redis_alloc_run(void *unused) {
  char options[256];
  (void)unused;
  /* A fresh prefix per run: every run starts from an empty source. */
  snprintf(options, sizeof options, "{\"port\": %d, \"prefix\": \"%s:\"}", redis_server_port(), unique_name("oom"));
  failing_alloc_every_op(&engram_source_redis, options);
}

/* ---- Updates queued on one key ---- */

typedef struct {
  redisContext *admin;
  const char *item; /* the Redis key of the item */
  int calls;
  double seen[4];
} meddle_t;

/* Adds 1; on its first run another client writes the item (value 100, version 50) before this write lands. */
static int add_one_meddled(const cJSON *current, cJSON **next, void *ud) {
  meddle_t *m = ud;
  if (m->calls < 4) m->seen[m->calls] = current ? current->valuedouble : -1;
  if (m->calls++ == 0) {
    redisReply *rep = redisCommand(m->admin, "HSET %s value 100 version 50", m->item);
    assert_non_null(rep);
    freeReplyObject(rep);
  }
  *next = cJSON_CreateNumber(current ? current->valuedouble + 1 : 1);
  return 0;
}

static int hmget_calls(redisContext *admin) {
  redisReply *rep = redisCommand(admin, "INFO commandstats");
  const char *p;
  int n = 0;
  assert_non_null(rep);
  assert_int_equal(rep->type, REDIS_REPLY_STRING);
  if ((p = strstr(rep->str, "cmdstat_hmget:calls=")) != NULL) n = atoi(p + 20);
  freeReplyObject(rep);
  return n;
}

/* Three updates of one key submitted at once run one after another; the second and third start from the value
 * the one before them wrote instead of reading it (no HMGET of their own). Another client writes the key while
 * the second runs: its conditional write fails, it reads (sees 100) and runs again, and the third starts from
 * that. Counted HMGETs (INFO commandstats counts those inside the scripts too): the first update's read, the
 * three scripts' and the failed one's, the second's re-read — 6; reading before every update would make 8. */
static void queued_updates_start_from_the_last_write(void **state) {
  ctx_t *c = *state;
  result_t r[3];
  char prefix[80], item[256];
  engram_opts_t o = {0};
  meddle_t m;
  int ones = 0, i, h0;
  redisReply *rep;
  memset(r, 0, sizeof r);
  memset(&m, 0, sizeof m);
  snprintf(prefix, sizeof prefix, "%s:", unique_name("chain"));
  assert_int_equal(add_redis(c, NULL, "mem", prefix, "", &r[0]), 0);
  snprintf(item, sizeof item, "%si:1:q:k", prefix);
  m.admin = sync_conn();
  m.item = item;
  o.ns = "q";
  assert_int_equal(s_store(c, "k", "1", &o, &r[0]), 0);
  h0 = hmget_calls(m.admin);
  for (i = 0; i < 3; i++) result_reset(&r[i]);
  assert_int_equal(engram_update(c->mgr, "k", increment, &ones, &o, capture_cb, &r[0]), 0);
  assert_int_equal(engram_update(c->mgr, "k", add_one_meddled, &m, &o, capture_cb, &r[1]), 0);
  assert_int_equal(engram_update(c->mgr, "k", increment, &ones, &o, capture_cb, &r[2]), 0);
  for (i = 0; i < 3; i++) {
    wait_for(c, &r[i].calls, 1, 10000);
    assert_int_equal(r[i].status, 0);
  }
  assert_int_equal(m.calls, 2);
  assert_true(m.seen[0] == 2 && m.seen[1] == 100);
  assert_true(cJSON_GetNumberValue(result_item(&r[2], 0, "value")) == 102);
  assert_int_equal((int)cJSON_GetNumberValue(result_item(&r[2], 0, "version")), 52);
  rep = redisCommand(m.admin, "HGET %s value", item);
  assert_non_null(rep);
  assert_string_equal(rep->str, "102");
  freeReplyObject(rep);
  assert_int_equal(hmget_calls(m.admin) - h0, 6);
  redisFree(m.admin);
  for (i = 0; i < 3; i++) result_reset(&r[i]);
}

/* ---- An update never writes over a key deleted and written again ---- */

typedef struct {
  ctx_t *other;       /* another client: a second manager on a loop of its own */
  int calls;
} recreate_t;

/* Appends "b". On its first run — an update that waited behind another, starting from what that one wrote
 * ("a", version 2) without reading — the other client deletes the key and writes it twice ("x", then "y": version
 * 2 again), running its own loop until both are answered, before this update's write is sent. */
static int append_b_after_recreate(const cJSON *current, cJSON **next, void *ud) {
  recreate_t *rc = ud;
  char buf[64];
  if (rc->calls++ == 0) {
    result_t d = {0}, r = {0};
    engram_opts_t o = {0};
    o.ns = "q";
    assert_int_equal(s_delete(rc->other, "k", &o, &d), 0);
    assert_int_equal(s_store(rc->other, "k", "\"x\"", &o, &r), 0);
    assert_int_equal(s_store(rc->other, "k", "\"y\"", &o, &r), 0);
    assert_int_equal((int)result_item(&r, 0, "version")->valuedouble, 2);
    result_reset(&d);
    result_reset(&r);
  }
  snprintf(buf, sizeof buf, "%sb", cJSON_IsString(current) ? current->valuestring : "");
  *next = cJSON_CreateString(buf);
  return *next ? 0 : ENGRAM_ENOMEM;
}

static int set_a(const cJSON *current, cJSON **next, void *ud) {
  (void)current;
  (void)ud;
  *next = cJSON_CreateString("a");
  return *next ? 0 : ENGRAM_ENOMEM;
}

/* Two updates of k queued at once: the first writes "a" (version 2), the second starts from that, conditional on
 * the version and the stamp the first write answered. Between the two, another client recreates k at version 2
 * ("y"): the second's write fails on the stamp, it reads "y" and writes "yb" (version 3). Conditional on the
 * version alone it wrote "ab" over "y", a function of a value deleted. Then the stamp in the layout: every write
 * sets it (redis-cli sees it change), and an item written without one (an older engram, another tool) is still
 * updated, the write adding it. */
static void queued_update_never_writes_over_a_recreated_item(void **state) {
  ctx_t *c = *state, other;
  result_t r[2], x = {0};
  char prefix[80], item[256], s1[64], out[512];
  engram_opts_t o = {0};
  recreate_t rc;
  memset(r, 0, sizeof r);
  snprintf(prefix, sizeof prefix, "%s:", unique_name("aba"));
  assert_int_equal(add_redis(c, NULL, "mem", prefix, "", &x), 0);
  ctx_init(&other, NULL);
  assert_int_equal(add_redis(&other, NULL, "mem", prefix, "", &x), 0);
  rc.other = &other;
  rc.calls = 0;
  o.ns = "q";
  snprintf(item, sizeof item, "%si:1:q:k", prefix);
  assert_int_equal(s_store(c, "k", "\"\"", &o, &x), 0);
  assert_int_equal(engram_update(c->mgr, "k", set_a, NULL, &o, capture_cb, &r[0]), 0);
  assert_int_equal(engram_update(c->mgr, "k", append_b_after_recreate, &rc, &o, capture_cb, &r[1]), 0);
  wait_for(c, &r[0].calls, 1, 10000);
  wait_for(c, &r[1].calls, 1, 10000);
  assert_int_equal(r[0].status, 0);
  assert_int_equal(r[1].status, 0);
  assert_int_equal((int)result_item(&r[0], 0, "version")->valuedouble, 2);
  assert_int_equal(rc.calls, 2);
  assert_string_equal(result_item(&r[1], 0, "value")->valuestring, "yb");
  assert_int_equal((int)result_item(&r[1], 0, "version")->valuedouble, 3);
  assert_int_equal(s_retrieve(c, "k", &o, &x), 0);
  assert_string_equal(result_item(&x, 0, "value")->valuestring, "yb");
  /* The stamp, as redis-cli sees it: a decimal number, a new one at every write. */
  assert_int_equal(redis_cli(s1, sizeof s1, "HGET", item, "stamp", NULL), 0);
  assert_true(s1[0] >= '1' && s1[0] <= '9');
  assert_int_equal(s_store(c, "k", "\"z\"", &o, &x), 0);
  assert_int_equal(redis_cli(out, sizeof out, "HGET", item, "stamp", NULL), 0);
  assert_true(out[0] >= '1' && out[0] <= '9' && strcmp(out, s1) != 0);
  /* No stamp (an item written before stamps): updated all the same, and the write adds one. */
  assert_int_equal(redis_cli(out, sizeof out, "HDEL", item, "stamp", NULL), 0);
  assert_int_equal(s_store(c, "k", "\"z\"", &o, &x), 0); /* a store adds it */
  assert_int_equal(redis_cli(out, sizeof out, "HGET", item, "stamp", NULL), 0);
  assert_true(out[0] >= '1' && out[0] <= '9');
  assert_int_equal(redis_cli(out, sizeof out, "HDEL", item, "stamp", NULL), 0);
  result_reset(&r[0]);
  assert_int_equal(engram_update(c->mgr, "k", append_b_after_recreate, &rc, &o, capture_cb, &r[0]), 0);
  wait_for(c, &r[0].calls, 1, 10000);
  assert_int_equal(r[0].status, 0);
  assert_string_equal(result_item(&r[0], 0, "value")->valuestring, "zb");
  assert_int_equal(redis_cli(out, sizeof out, "HGET", item, "stamp", NULL), 0);
  assert_true(out[0] >= '1' && out[0] <= '9');
  result_reset(&r[0]);
  result_reset(&r[1]);
  result_reset(&x);
  ctx_close(&other);
}

/* ---- Conversation appends: the head, the messages and the trim in one script ---- */

static int append_msgs(ctx_t *c, const char *id, const char *const *texts, size_t n,
                       const engram_thread_settings_t *s, result_t *r) {
  engram_message_t m[4];
  engram_opts_t o = {0};
  size_t i;
  memset(m, 0, sizeof m);
  for (i = 0; i < n; i++) {
    m[i].role = "user";
    m[i].content = texts[i];
  }
  o.ns = "chat";
  result_reset(r);
  assert_int_equal(engram_thread_append(c->mgr, id, m, n, s, &o, capture_cb, r), 0);
  wait_for(c, &r->calls, 1, 10000);
  return r->status;
}

/* An append is one update_writes script (ENGRAM_SOURCE_UPDATE_WRITES): no batch store call follows it; the head,
 * the messages and the trim are what redis-cli sees right after; a message just appended is found by text
 * search; a message over max_value_bytes and a message key held by a string (another client's) are refused with
 * nothing written — the head keeps its version, the index its members — and the next append takes the same
 * sequence number. */
static void appends_write_head_and_messages_in_one_script(void **state) {
  ctx_t *c = *state;
  result_t r = {0};
  char prefix[80], head[256], idx[256], out[512], mkey[1024], bigtext[1300];
  const char *two[] = {"the zebra crossing", "apples and pears"}, *one[] = {"a quokka smiles"};
  const char *big[] = {bigtext}, *fourth[] = {"the fourth message"};
  engram_thread_settings_t keep2 = {ENGRAM_THREAD_MAX_MESSAGES, 2, 0};
  engram_opts_t o = {0};
  double calls0;
  size_t n;
  snprintf(prefix, sizeof prefix, "%s:", unique_name("app"));
  assert_int_equal(add_redis(c, NULL, "mem", prefix, "\"max_value_bytes\": 1000", &r), 0);
  snprintf(head, sizeof head, "%si:4:chat:thread:t", prefix);
  snprintf(idx, sizeof idx, "%sx:4:chat", prefix);
  calls0 = info_num(c, "store_calls");
  assert_int_equal(append_msgs(c, "t", two, 2, &keep2, &r), 0);
  assert_int_equal(append_msgs(c, "t", one, 1, &keep2, &r), 0); /* trims message 1 */
  assert_true(info_num(c, "store_calls") == calls0);
  assert_int_equal(redis_cli(out, sizeof out, "HGET", head, "version", NULL), 0);
  assert_string_equal(out, "2");
  assert_int_equal(redis_cli(out, sizeof out, "ZCARD", idx, NULL), 0);
  assert_string_equal(out, "3"); /* the head and messages 2 and 3 */
  o.ns = "chat";
  result_reset(&r);
  assert_int_equal(engram_thread_search(c->mgr, "t", "quokka", 5, &o, capture_cb, &r), 0);
  wait_for(c, &r.calls, 1, 10000);
  assert_int_equal(r.status, 0);
  assert_int_equal((int)r.n_items, 1);
  /* Over max_value_bytes: refused before anything is sent. */
  memset(bigtext, 'x', 1200);
  bigtext[1200] = '\0';
  assert_int_equal(append_msgs(c, "t", big, 1, &keep2, &r), ENGRAM_ETOOBIG);
  assert_int_equal(redis_cli(out, sizeof out, "HGET", head, "version", NULL), 0);
  assert_string_equal(out, "2");
  /* Message 4's hash is a string: the script refuses before writing anything. The members sort as
   * "thread-msg:t:<gen>:<16 digits>" < "thread:t" ('-' < ':'), so the second to last is message 3. */
  assert_int_equal(redis_cli(out, sizeof out, "ZRANGE", idx, "-2", "-2", NULL), 0);
  n = strlen(out);
  assert_true(n > 16 && strncmp(out, "thread-msg:t:", 13) == 0 && out[n - 1] == '3');
  out[n - 1] = '4';
  snprintf(mkey, sizeof mkey, "%si:4:chat:%s", prefix, out);
  assert_int_equal(redis_cli(out, sizeof out, "SET", mkey, "not a hash", NULL), 0);
  assert_int_equal(append_msgs(c, "t", fourth, 1, &keep2, &r), ENGRAM_EBACKEND);
  assert_non_null(strstr(r.message, "another type"));
  assert_int_equal(redis_cli(out, sizeof out, "HGET", head, "version", NULL), 0);
  assert_string_equal(out, "2");
  assert_int_equal(redis_cli(out, sizeof out, "ZCARD", idx, NULL), 0);
  assert_string_equal(out, "3");
  assert_int_equal(redis_cli(out, sizeof out, "DEL", mkey, NULL), 0);
  assert_int_equal(append_msgs(c, "t", fourth, 1, &keep2, &r), 0);
  assert_int_equal(redis_cli(out, sizeof out, "HGET", mkey, "version", NULL), 0);
  assert_string_equal(out, "1");
  assert_int_equal(redis_cli(out, sizeof out, "HGET", head, "version", NULL), 0);
  assert_string_equal(out, "3");
  assert_int_equal(redis_cli(out, sizeof out, "ZCARD", idx, NULL), 0);
  assert_string_equal(out, "3"); /* message 2 trimmed, 4 added */
  assert_true(info_num(c, "store_calls") == calls0);
  result_reset(&r);
}

static void allocation_failure_loop(void **state) {
  long points;
  (void)state;
  assert_true(redis_server_start(0) > 0);
  points = failing_alloc_loop(redis_alloc_run, NULL);
  print_message("redis: every one of %ld allocations failed once\n", points);
  assert_true(getenv("ENGRAM_ALLOC_ONLY") || points > 50);
}

#define CASE(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void) {
  static const struct CMUnitTest cases[] = {
      CASE(kill9_with_1000_in_flight),  CASE(client_kill_recovers),          CASE(close_with_calls_in_flight),
      CASE(layout_read_and_written_by_redis_cli), CASE(special_keys_and_namespaces), CASE(prefixes_isolate_managers),
      CASE(down_at_open),               CASE(wait_for_connection_option),   CASE(auth_and_db),
      CASE(script_flush_every_kind_of_call), CASE(script_flush_keeps_read_after_write),
      CASE(script_flush_mid_burst_keeps_order), CASE(host_name_and_small_window), CASE(bad_options_are_named),
      CASE(connect_timeout_fails_open), CASE(emulated_clear_lists_every_namespace),
      CASE(batched_stores_keep_per_item_semantics), CASE(single_stores_keep_layout_and_order), CASE(kill9_with_batches_in_flight),
      CASE(expiry_field_decides_on_every_read), CASE(retrieve_many_reads_the_fields_its_flag_asks),
      cmocka_unit_test(rank_matches_text_index), CASE(text_search_matches_index),
      CASE(text_search_cache_follows_writes), CASE(appends_write_head_and_messages_in_one_script),
      CASE(queued_updates_start_from_the_last_write), CASE(queued_update_never_writes_over_a_recreated_item),
      CASE(values_read_back_as_cjson_parses_them),
      cmocka_unit_test(allocation_failure_loop),
  };
  int rc;
  signal(SIGPIPE, SIG_IGN);
  if (getenv("ENGRAM_TEST_FILTER") != NULL) cmocka_set_test_filter(getenv("ENGRAM_TEST_FILTER"));
  rc = cmocka_run_group_tests_name("redis", cases, NULL, NULL);
  redis_server_stop();
  return rc;
}
