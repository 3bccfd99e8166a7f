/*
 * test_events.c — change events (include/engram/events.h, docs/events.md). On the cache (home loop) and SQLite
 * (its own thread, group commit): stores, overwrites, updates, deletes, batches and clears are each announced
 * once with the right kind, key, namespace and version, while failed writes (create-only on an existing key,
 * an if_version conflict) and deletes of missing keys announce nothing; a conversation append's head update,
 * messages and trim are each announced once (also on Redis, which makes them in one script); a namespace prefix, a kind mask and a
 * source name filter. Unsubscribing stops delivery (also from inside the subscriber's own callback) and ends
 * with exactly one END; closing the manager ends a subscription with END / ENGRAM_ECLOSED. A subscription made from
 * a reply's callback inside an actor's turn is not told of that turn's earlier changes (staged until the turn ends).
 * A full queue gives
 * exactly one MISSED event with the number dropped. 3,000 events queued before one delivery (the queue's block grows
 * from 4 KiB to ~0.5 MiB, then is reused) each arrive once, in order, intact. Events through a completion queue polled by another
 * thread, with a manager on its own thread, arrive there and only there. Source names around the 8-byte words the
 * hook compares them by (1-9, 62-64 bytes, each a prefix of the next) each match only their own subscription, and
 * keys and namespaces of 1-40, 200, 250, 256 and 1024 bytes arrive intact and in order — also keys and namespaces of
 * 1-17 bytes stored in one turn of the actor (the hook's straight-line path for short texts).
 * The events lock under contention — three producer threads, a busy poller, a subscription coming and going —
 * delivers or counts as missed each of 9,000 changes exactly once, with one END each. Bad arguments are refused, and the
 * failing-allocator loop over subscribe and announce leaks nothing and loses no event uncounted. Every wait is
 * on a condition with a generous deadline; runs under ThreadSanitizer in `make tsan`.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engram/events.h"
#include "engram/thread.h"
#include "support/failing_alloc.h"
#include "support/harness.h"
#if ENGRAM_WITH_REDIS
#include "support/redis_server.h"
extern const conf_source_t conf_source_redis; /* tests/support/redis_server.c */
#endif

extern const conf_source_t conf_source_sqlite; /* support/sources_sqlite.c */

static char *cache_options(void) { return engram_strdup("{}"); }
static const conf_source_t cache_src = {"cache", &engram_source_cache, NULL, NULL, cache_options};

/* ---- A subscriber that records what it receives ---- */

#define LOG_MAX 64

typedef struct {
  unsigned kind;
  char source[80], key[80], ns[80];
  int has_key, has_ns;
  uint64_t version, count;
} rec_t;

typedef struct {
  int events;           /* callbacks with status 0 */
  int ends;             /* END callbacks */
  int end_status;
  int after_end;        /* callbacks after END: must stay 0 */
  rec_t rec[LOG_MAX];
  engram_subscription_t *sub;
  int unsubscribe_at;   /* > 0: unsubscribe from inside the callback receiving this event (1-based) */
} log_t;

static void on_event(int status, const engram_event_t *ev, void *ud) {
  log_t *l = ud;
  if (l->ends) {
    l->after_end++;
    return;
  }
  if (ev->kind == ENGRAM_EVENT_END) {
    l->ends++;
    l->end_status = status;
    return;
  }
  assert_int_equal(status, 0);
  if (l->events < LOG_MAX) {
    rec_t *r = &l->rec[l->events];
    memset(r, 0, sizeof *r);
    r->kind = ev->kind;
    snprintf(r->source, sizeof r->source, "%s", ev->source ? ev->source : "");
    r->has_key = ev->key != NULL;
    snprintf(r->key, sizeof r->key, "%s", ev->key ? ev->key : "");
    r->has_ns = ev->ns != NULL;
    snprintf(r->ns, sizeof r->ns, "%s", ev->ns ? ev->ns : "");
    r->version = ev->version;
    r->count = ev->count;
  }
  l->events++;
  if (l->unsubscribe_at == l->events) assert_int_equal(engram_events_unsubscribe(l->sub), 0);
}

static void subscribe(ctx_t *c, log_t *l, const char *source, const char *prefix, unsigned kinds, unsigned cap) {
  engram_subscribe_opts_t o;
  memset(&o, 0, sizeof o);
  o.source = source;
  o.ns_prefix = prefix;
  o.kinds = kinds;
  o.capacity = cap;
  assert_int_equal(engram_events_subscribe(c->mgr, &o, on_event, l, &l->sub), 0);
}

static void expect_rec(const log_t *l, int i, unsigned kind, const char *key, const char *ns, uint64_t version) {
  const rec_t *r = &l->rec[i];
  if (r->kind != kind || (key ? !r->has_key || strcmp(r->key, key) != 0 : r->has_key) ||
      (ns ? !r->has_ns || strcmp(r->ns, ns) != 0 : r->has_ns) || r->version != version)
    fail_msg("event %d: got %s key=%s ns=%s v=%llu; want %s key=%s ns=%s v=%llu", i,
             engram_event_kind_name((engram_event_kind_t)r->kind), r->has_key ? r->key : "(null)",
             r->has_ns ? r->ns : "(null)", (unsigned long long)r->version,
             engram_event_kind_name((engram_event_kind_t)kind), key ? key : "(null)", ns ? ns : "(null)",
             (unsigned long long)version);
  if (strcmp(r->source, "mem") != 0) fail_msg("event %d: source '%s'", i, r->source);
}

/* Runs one call and waits for its reply; asserts its status. */
static void call_done(ctx_t *c, int rc, result_t *r, int want, const char *what) {
  if (rc != 0) fail_msg("%s: returned %s (%s)", what, engram_err_name(rc), engram_last_error());
  wait_for(c, &r->calls, 1, 30000);
  if (r->status != want)
    fail_msg("%s: %s (%s), want %s", what, engram_err_name(r->status), r->message, engram_err_name(want));
  result_reset(r);
}

static int bump(const cJSON *cur, cJSON **next, void *ud) {
  (void)ud;
  *next = cJSON_CreateNumber(cur && cJSON_IsNumber(cur) ? cur->valuedouble + 1 : 1);
  return *next ? 0 : ENGRAM_ENOMEM;
}

/* ---- Every kind on one source ---- */

static void every_kind_on(const conf_source_t *s) {
  ctx_t c;
  result_t r = {0};
  log_t all, pre, del, other;
  engram_opts_t a = {0}, b = {0}, whole = {0};
  engram_entry_t e[2];
  cJSON *v = cJSON_CreateNumber(1);
  memset(&all, 0, sizeof all);
  memset(&pre, 0, sizeof pre);
  memset(&del, 0, sizeof del);
  memset(&other, 0, sizeof other);
  ctx_init(&c, NULL);
  ctx_add(&c, s);
  subscribe(&c, &all, "mem", NULL, 0, 0);
  subscribe(&c, &pre, NULL, "b/", 0, 0);
  subscribe(&c, &del, NULL, NULL, ENGRAM_EVENT_DELETED, 0);
  subscribe(&c, &other, "other", NULL, 0, 0);
  a.ns = "a";
  b.ns = "b/c";
  call_done(&c, engram_store(c.mgr, "k1", v, &a, capture_cb, &r), &r, 0, "store k1");
  call_done(&c, engram_store(c.mgr, "k1", v, &a, capture_cb, &r), &r, 0, "overwrite k1");
  call_done(&c, engram_update(c.mgr, "k1", bump, NULL, &a, capture_cb, &r), &r, 0, "update k1");
  a.flags = ENGRAM_OPT_CREATE_ONLY;
  call_done(&c, engram_store(c.mgr, "k1", v, &a, capture_cb, &r), &r, ENGRAM_EEXIST, "create-only k1");
  a.flags = 0;
  a.if_version = 1;
  call_done(&c, engram_store(c.mgr, "k1", v, &a, capture_cb, &r), &r, ENGRAM_ECONFLICT, "if_version k1");
  a.if_version = 0;
  call_done(&c, engram_delete(c.mgr, "k1", &a, capture_cb, &r), &r, 0, "delete k1");
  call_done(&c, engram_delete(c.mgr, "k1", &a, capture_cb, &r), &r, 0, "delete missing k1");
  memset(e, 0, sizeof e);
  e[0].key = "x";
  e[0].value = v;
  e[1].key = "y";
  e[1].value = v;
  call_done(&c, engram_store_many(c.mgr, e, 2, &a, capture_cb, &r), &r, 0, "store_many x y");
  call_done(&c, engram_store(c.mgr, "k2", v, &b, capture_cb, &r), &r, 0, "store k2 in b/c");
  call_done(&c, engram_clear(c.mgr, &a, capture_cb, &r), &r, 0, "clear a");
  whole.flags = ENGRAM_OPT_CONFIRM;
  call_done(&c, engram_clear(c.mgr, &whole, capture_cb, &r), &r, 0, "clear all");
  wait_for(&c, &all.events, 9, 30000);
  wait_for(&c, &pre.events, 2, 30000);
  wait_for(&c, &del.events, 1, 30000);
  assert_int_equal(engram_events_unsubscribe(all.sub), 0);
  assert_int_equal(engram_events_unsubscribe(pre.sub), 0);
  assert_int_equal(engram_events_unsubscribe(del.sub), 0);
  assert_int_equal(engram_events_unsubscribe(other.sub), 0);
  wait_for(&c, &all.ends, 1, 30000);
  wait_for(&c, &pre.ends, 1, 30000);
  wait_for(&c, &del.ends, 1, 30000);
  wait_for(&c, &other.ends, 1, 30000);
  /* END is the last callback of each: the counts are final. */
  assert_int_equal(all.events, 9);
  expect_rec(&all, 0, ENGRAM_EVENT_STORED, "k1", "a", 1);
  expect_rec(&all, 1, ENGRAM_EVENT_STORED, "k1", "a", 2);
  expect_rec(&all, 2, ENGRAM_EVENT_UPDATED, "k1", "a", 3);
  expect_rec(&all, 3, ENGRAM_EVENT_DELETED, "k1", "a", 0);
  expect_rec(&all, 4, ENGRAM_EVENT_STORED, "x", "a", 1);
  expect_rec(&all, 5, ENGRAM_EVENT_STORED, "y", "a", 1);
  expect_rec(&all, 6, ENGRAM_EVENT_STORED, "k2", "b/c", 1);
  expect_rec(&all, 7, ENGRAM_EVENT_CLEARED, NULL, "a", 0);
  assert_int_equal(all.rec[7].count, 2);
  expect_rec(&all, 8, ENGRAM_EVENT_CLEARED, NULL, NULL, 0);
  assert_int_equal(all.rec[8].count, 1);
  assert_int_equal(pre.events, 2);
  expect_rec(&pre, 0, ENGRAM_EVENT_STORED, "k2", "b/c", 1);
  expect_rec(&pre, 1, ENGRAM_EVENT_CLEARED, NULL, NULL, 0);
  assert_int_equal(del.events, 1);
  expect_rec(&del, 0, ENGRAM_EVENT_DELETED, "k1", "a", 0);
  assert_int_equal(other.events, 0);
  assert_int_equal(all.end_status, ENGRAM_ECANCELED);
  assert_int_equal(all.after_end + pre.after_end + del.after_end + other.after_end, 0);
  cJSON_Delete(v);
  ctx_close(&c);
}

static void every_kind_cache(void **state) {
  (void)state;
  every_kind_on(&cache_src);
}

static void every_kind_sqlite(void **state) {
  (void)state;
  every_kind_on(&conf_source_sqlite);
}

/* The cache with only its required methods: the core emulates update, store_many and clear, and the events are
 * the same. */
static engram_source_vtable_t cache_required;
static char *cache_required_options(void) { return engram_strdup("{}"); }
static const conf_source_t cache_required_src = {"cache-required-only", &cache_required, NULL, NULL,
                                                 cache_required_options};

static void every_kind_emulated(void **state) {
  (void)state;
  conf_required_only(&cache_required, &engram_source_cache, "cache-required-only");
  every_kind_on(&cache_required_src);
}

/* ---- A conversation append: the head's update and the writes that ride on it ---- */

/* The key of event i: "thread:t1", or message seq of thread t1 ("thread-msg:t1:<gen>:<16 digits>"). */
static void expect_msg(const log_t *l, int i, unsigned kind, uint64_t seq, uint64_t version) {
  const rec_t *r = &l->rec[i];
  char tail[24];
  size_t n = strlen(r->key);
  snprintf(tail, sizeof tail, ":%016llu", (unsigned long long)seq);
  if (r->kind != kind || strncmp(r->key, "thread-msg:t1:", 14) != 0 || n < strlen(tail) ||
      strcmp(r->key + n - strlen(tail), tail) != 0 || strcmp(r->ns, "a") != 0 || r->version != version)
    fail_msg("event %d: got %s key=%s ns=%s v=%llu; want %s of message %llu v=%llu", i,
             engram_event_kind_name((engram_event_kind_t)r->kind), r->key, r->ns, (unsigned long long)r->version,
             engram_event_kind_name((engram_event_kind_t)kind), (unsigned long long)seq,
             (unsigned long long)version);
}

/* Two appends to a thread of max_messages 2: each announces the head's update, then each message stored, then
 * each message its trim removed — once each, whether the source makes the messages in the update's own step
 * (cache, SQLite) or the core makes them after it (the required-only cache). */
static void append_events_on(const conf_source_t *s) {
  ctx_t c;
  result_t r = {0};
  log_t all;
  engram_opts_t a = {0};
  engram_message_t m[2] = {{.role = "user", .content = "hello"}, {.role = "assistant", .content = "hi"}};
  engram_thread_settings_t set = {ENGRAM_THREAD_MAX_MESSAGES, 2, 0};
  memset(&all, 0, sizeof all);
  ctx_init(&c, NULL);
  ctx_add(&c, s);
  subscribe(&c, &all, "mem", NULL, 0, 0);
  a.ns = "a";
  call_done(&c, engram_thread_append(c.mgr, "t1", m, 2, &set, &a, capture_cb, &r), &r, 0, "append 2");
  call_done(&c, engram_thread_append(c.mgr, "t1", m, 1, &set, &a, capture_cb, &r), &r, 0, "append 1, trims 1");
  wait_for(&c, &all.events, 6, 30000);
  assert_int_equal(engram_events_unsubscribe(all.sub), 0);
  wait_for(&c, &all.ends, 1, 30000);
  assert_int_equal(all.events, 6); /* END is the last callback: the count is final */
  expect_rec(&all, 0, ENGRAM_EVENT_UPDATED, "thread:t1", "a", 1);
  expect_msg(&all, 1, ENGRAM_EVENT_STORED, 1, 1);
  expect_msg(&all, 2, ENGRAM_EVENT_STORED, 2, 1);
  expect_rec(&all, 3, ENGRAM_EVENT_UPDATED, "thread:t1", "a", 2);
  expect_msg(&all, 4, ENGRAM_EVENT_STORED, 3, 1);
  expect_msg(&all, 5, ENGRAM_EVENT_DELETED, 1, 0);
  ctx_close(&c);
}

static void append_events_cache(void **state) {
  (void)state;
  append_events_on(&cache_src);
}

static void append_events_sqlite(void **state) {
  (void)state;
  append_events_on(&conf_source_sqlite);
}

#if ENGRAM_WITH_REDIS
/* Redis makes the messages and the trim in the script that writes the head (ENGRAM_SOURCE_UPDATE_WRITES): the
 * versions announced are the ones that script returned. */
static void append_events_redis(void **state) {
  (void)state;
  if (conf_source_redis.setup() != 0) fail_msg("redis-server did not start");
  append_events_on(&conf_source_redis);
  conf_source_redis.teardown();
}
#endif

static void append_events_emulated(void **state) {
  (void)state;
  conf_required_only(&cache_required, &engram_source_cache, "cache-required-only");
  append_events_on(&cache_required_src);
}

/* An append whose messages the core writes after the head's update (the required-only cache) and whose second
 * message the source refuses (over its max_value_bytes): the append fails, but the head's update and the first
 * message are written, and each is announced once (follow.c announce_partial; they were not announced at all
 * before: it went through engram_source_announce, which takes only expired and evicted). */
static char *tiny_values_options(void) { return engram_strdup("{\"max_value_bytes\": 1000}"); }
static const conf_source_t tiny_required_src = {"cache-required-only", &cache_required, NULL, NULL,
                                                tiny_values_options};

static void partly_failed_append_announces_what_it_wrote(void **state) {
  ctx_t c;
  result_t r = {0};
  log_t all;
  engram_opts_t a = {0};
  char big[1500];
  engram_message_t m[2] = {{.role = "user", .content = "hello"}, {.role = "assistant", .content = big}};
  (void)state;
  memset(big, 'x', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  conf_required_only(&cache_required, &engram_source_cache, "cache-required-only");
  memset(&all, 0, sizeof all);
  ctx_init(&c, NULL);
  ctx_add(&c, &tiny_required_src);
  subscribe(&c, &all, "mem", NULL, 0, 0);
  a.ns = "a";
  call_done(&c, engram_thread_append(c.mgr, "t1", m, 2, NULL, &a, capture_cb, &r), &r, ENGRAM_ETOOBIG,
            "append of a message over max_value_bytes");
  wait_for(&c, &all.events, 2, 30000);
  assert_int_equal(engram_events_unsubscribe(all.sub), 0);
  wait_for(&c, &all.ends, 1, 30000);
  assert_int_equal(all.events, 2);
  expect_rec(&all, 0, ENGRAM_EVENT_UPDATED, "thread:t1", "a", 1);
  expect_msg(&all, 1, ENGRAM_EVENT_STORED, 1, 1);
  ctx_close(&c);
}

/* ---- What the cache announces on its own: LRU eviction, expiry ---- */

static char *small_cache_options(void) { return engram_strdup("{\"max_entries\": 2, \"sweep_interval_ms\": 20}"); }
static const conf_source_t small_cache_src = {"cache", &engram_source_cache, NULL, NULL, small_cache_options};

static void cache_announces_evicted_and_expired(void **state) {
  ctx_t c;
  result_t r = {0};
  log_t l;
  engram_opts_t o = {0};
  cJSON *v = cJSON_CreateNumber(1);
  (void)state;
  memset(&l, 0, sizeof l);
  ctx_init(&c, NULL);
  ctx_add(&c, &small_cache_src);
  subscribe(&c, &l, "mem", NULL, 0, 0);
  o.ns = "n";
  call_done(&c, engram_store(c.mgr, "a", v, &o, capture_cb, &r), &r, 0, "store a");
  call_done(&c, engram_store(c.mgr, "b", v, &o, capture_cb, &r), &r, 0, "store b");
  call_done(&c, engram_store(c.mgr, "c", v, &o, capture_cb, &r), &r, 0, "store c (evicts a)");
  wait_for(&c, &l.events, 4, 30000);
  expect_rec(&l, 2, ENGRAM_EVENT_EVICTED, "a", "n", 1);
  expect_rec(&l, 3, ENGRAM_EVENT_STORED, "c", "n", 1);
  /* A 1 ms TTL: the sweep (every 20 ms) removes it and announces it; the wait is for the event, not a time. */
  call_done(&c, engram_delete(c.mgr, "b", &o, capture_cb, &r), &r, 0, "delete b (room for t)");
  o.flags = ENGRAM_OPT_TTL;
  o.ttl_ms = 1;
  call_done(&c, engram_store(c.mgr, "t", v, &o, capture_cb, &r), &r, 0, "store t");
  wait_for(&c, &l.events, 7, 30000);
  expect_rec(&l, 4, ENGRAM_EVENT_DELETED, "b", "n", 0);
  expect_rec(&l, 5, ENGRAM_EVENT_STORED, "t", "n", 1);
  expect_rec(&l, 6, ENGRAM_EVENT_EXPIRED, "t", "n", 1);
  assert_int_equal(engram_events_unsubscribe(l.sub), 0);
  wait_for(&c, &l.ends, 1, 30000);
  assert_int_equal(l.events, 7);
  cJSON_Delete(v);
  ctx_close(&c);
}

/* ---- A tiered source: its own event and its tiers' ---- */

static void add_named(ctx_t *c, const char *name, const engram_source_vtable_t *vt, const char *options) {
  result_t r = {0};
  assert_int_equal(engram_manager_add_source(c->mgr, name, vt, options, "", 0, capture_cb, &r), 0);
  wait_for(c, &r.calls, 1, 30000);
  if (r.status != 0) fail_msg("add %s: %s", name, r.message);
  result_reset(&r);
}

static void tiered_write_announced_by_each_source(void **state) {
  ctx_t c;
  result_t r = {0};
  log_t all, only;
  engram_opts_t o = {0};
  cJSON *v = cJSON_CreateNumber(1);
  char *sq = conf_source_sqlite.options();
  int i, by_t = 0, by_c = 0, by_s = 0;
  (void)state;
  memset(&all, 0, sizeof all);
  memset(&only, 0, sizeof only);
  ctx_init(&c, NULL);
  add_named(&c, "c", &engram_source_cache, NULL);
  add_named(&c, "s", &engram_source_sqlite, sq);
  add_named(&c, "t", &engram_source_tiered, "{\"tiers\": [\"c\", \"s\"]}");
  engram_free(sq);
  subscribe(&c, &all, NULL, NULL, 0, 0);
  subscribe(&c, &only, "t", NULL, 0, 0);
  o.source = "t";
  call_done(&c, engram_store(c.mgr, "k", v, &o, capture_cb, &r), &r, 0, "store through t");
  wait_for(&c, &all.events, 3, 30000);
  wait_for(&c, &only.events, 1, 30000);
  call_done(&c, engram_store(c.mgr, "fence", v, &o, capture_cb, &r), &r, 0, "second store through t");
  wait_for(&c, &only.events, 2, 30000);
  wait_for(&c, &all.events, 6, 30000);
  assert_int_equal(engram_events_unsubscribe(all.sub), 0);
  assert_int_equal(engram_events_unsubscribe(only.sub), 0);
  wait_for(&c, &all.ends, 1, 30000);
  wait_for(&c, &only.ends, 1, 30000);
  assert_int_equal(all.events, 6);
  for (i = 0; i < 6; i++) {
    assert_int_equal(all.rec[i].kind, ENGRAM_EVENT_STORED);
    assert_int_equal(all.rec[i].version, 1);
    by_t += strcmp(all.rec[i].source, "t") == 0;
    by_c += strcmp(all.rec[i].source, "c") == 0;
    by_s += strcmp(all.rec[i].source, "s") == 0;
  }
  assert_int_equal(by_t, 2);
  assert_int_equal(by_c, 2);
  assert_int_equal(by_s, 2);
  assert_int_equal(only.events, 2);
  assert_string_equal(only.rec[0].source, "t");
  assert_string_equal(only.rec[0].key, "k");
  assert_string_equal(only.rec[1].key, "fence");
  cJSON_Delete(v);
  ctx_close(&c);
}

/* ---- Unsubscribe ---- */

static void unsubscribe_stops_delivery(void **state) {
  ctx_t c;
  result_t r = {0};
  log_t l, inside;
  engram_entry_t e[5];
  char keys[5][16];
  cJSON *v = cJSON_CreateNumber(1);
  int i;
  (void)state;
  memset(&l, 0, sizeof l);
  memset(&inside, 0, sizeof inside);
  ctx_init(&c, NULL);
  ctx_add(&c, &cache_src);
  subscribe(&c, &l, NULL, NULL, 0, 0);
  inside.unsubscribe_at = 2;
  subscribe(&c, &inside, NULL, NULL, 0, 0);
  call_done(&c, engram_store(c.mgr, "a", v, NULL, capture_cb, &r), &r, 0, "store a");
  wait_for(&c, &l.events, 1, 30000);
  assert_int_equal(engram_events_unsubscribe(l.sub), 0);
  assert_int_equal(engram_events_unsubscribe(l.sub), ENGRAM_EINVAL); /* END not run yet: still a valid handle */
  /* Five events queued by one store_many reach `inside` in one delivery; it unsubscribes at the second. */
  memset(e, 0, sizeof e);
  for (i = 0; i < 5; i++) {
    snprintf(keys[i], sizeof keys[i], "m%d", i);
    e[i].key = keys[i];
    e[i].value = v;
  }
  call_done(&c, engram_store_many(c.mgr, e, 5, NULL, capture_cb, &r), &r, 0, "store_many");
  wait_for(&c, &l.ends, 1, 30000);
  wait_for(&c, &inside.ends, 1, 30000);
  call_done(&c, engram_store(c.mgr, "b", v, NULL, capture_cb, &r), &r, 0, "store b");
  run_barrier(&c);
  assert_int_equal(l.events, 1);
  assert_int_equal(l.end_status, ENGRAM_ECANCELED);
  assert_int_equal(inside.events, 2); /* a, then m0 — where it unsubscribed */
  assert_int_equal(l.after_end + inside.after_end, 0);
  cJSON_Delete(v);
  ctx_close(&c);
}

static void close_ends_subscriptions(void **state) {
  ctx_t c;
  result_t r = {0};
  log_t l;
  cJSON *v = cJSON_CreateNumber(1);
  (void)state;
  memset(&l, 0, sizeof l);
  ctx_init(&c, NULL);
  ctx_add(&c, &cache_src);
  subscribe(&c, &l, NULL, NULL, 0, 0);
  call_done(&c, engram_store(c.mgr, "a", v, NULL, capture_cb, &r), &r, 0, "store a");
  wait_for(&c, &l.events, 1, 30000);
  ctx_close(&c); /* runs the loop dry */
  assert_int_equal(l.ends, 1);
  assert_int_equal(l.end_status, ENGRAM_ECLOSED);
  assert_int_equal(l.events, 1);
  assert_int_equal(l.after_end, 0);
  cJSON_Delete(v);
}

/* ---- A subscription made inside an actor's turn ---- */

typedef struct {
  ctx_t *c;
  log_t *late;
  int calls, status;
} late_sub_t;

static void subscribe_on_reply(int status, const engram_reply_t *reply, void *ud) {
  late_sub_t *s = ud;
  (void)reply;
  s->calls++;
  s->status = status;
  subscribe(s->c, s->late, NULL, NULL, 0, 0);
}

/* Two stores in one turn of the cache's actor (both in its mailbox before the loop runs); the first one's reply
 * callback, which runs inside that turn on the home loop, subscribes. The changes of a turn are queued when it ends
 * (events.c, the stage): the new subscription must still see only the second store, as when each change was
 * queued at once, and one made before both sees both. */
static void subscribe_inside_a_turn(void **state) {
  ctx_t c;
  result_t r = {0};
  log_t first, late;
  late_sub_t s;
  cJSON *v = cJSON_CreateNumber(1);
  (void)state;
  memset(&first, 0, sizeof first);
  memset(&late, 0, sizeof late);
  memset(&s, 0, sizeof s);
  ctx_init(&c, NULL);
  ctx_add(&c, &cache_src);
  subscribe(&c, &first, NULL, NULL, 0, 0);
  s.c = &c;
  s.late = &late;
  assert_int_equal(engram_store(c.mgr, "a", v, NULL, subscribe_on_reply, &s), 0);
  assert_int_equal(engram_store(c.mgr, "b", v, NULL, capture_cb, &r), 0);
  wait_for(&c, &r.calls, 1, 30000);
  assert_int_equal(r.status, 0);
  result_reset(&r);
  assert_int_equal(s.calls, 1);
  assert_int_equal(s.status, 0);
  wait_for(&c, &first.events, 2, 30000);
  wait_for(&c, &late.events, 1, 30000);
  run_barrier(&c);
  assert_int_equal(engram_events_unsubscribe(first.sub), 0);
  assert_int_equal(engram_events_unsubscribe(late.sub), 0);
  wait_for(&c, &first.ends, 1, 30000);
  wait_for(&c, &late.ends, 1, 30000);
  assert_int_equal(first.events, 2);
  assert_string_equal(first.rec[0].key, "a");
  assert_string_equal(first.rec[1].key, "b");
  assert_int_equal(late.events, 1);
  assert_int_equal(late.rec[0].kind, ENGRAM_EVENT_STORED);
  assert_string_equal(late.rec[0].key, "b");
  assert_int_equal(first.after_end + late.after_end, 0);
  cJSON_Delete(v);
  ctx_close(&c);
}

/* ---- Overflow ---- */

static void overflow_gives_one_missed(void **state) {
  ctx_t c;
  result_t r = {0};
  log_t l;
  engram_entry_t e[10];
  char keys[10][16];
  cJSON *v = cJSON_CreateNumber(1);
  int i;
  (void)state;
  memset(&l, 0, sizeof l);
  ctx_init(&c, NULL);
  ctx_add(&c, &cache_src);
  subscribe(&c, &l, NULL, NULL, 0, 4);
  memset(e, 0, sizeof e);
  for (i = 0; i < 10; i++) {
    snprintf(keys[i], sizeof keys[i], "k%d", i);
    e[i].key = keys[i];
    e[i].value = v;
  }
  /* One batch: ten events meet a queue of four before any delivery can run. */
  call_done(&c, engram_store_many(c.mgr, e, 10, NULL, capture_cb, &r), &r, 0, "store_many 10");
  wait_for(&c, &l.events, 5, 30000);
  call_done(&c, engram_store(c.mgr, "after", v, NULL, capture_cb, &r), &r, 0, "store after");
  wait_for(&c, &l.events, 6, 30000);
  assert_int_equal(engram_events_unsubscribe(l.sub), 0);
  wait_for(&c, &l.ends, 1, 30000);
  assert_int_equal(l.events, 6);
  for (i = 0; i < 4; i++) {
    assert_int_equal(l.rec[i].kind, ENGRAM_EVENT_STORED);
    assert_string_equal(l.rec[i].key, keys[i]);
  }
  assert_int_equal(l.rec[4].kind, ENGRAM_EVENT_MISSED);
  assert_int_equal(l.rec[4].count, 6);
  assert_int_equal(l.rec[4].has_key, 0);
  assert_int_equal(l.rec[5].kind, ENGRAM_EVENT_STORED);
  assert_string_equal(l.rec[5].key, "after");
  cJSON_Delete(v);
  ctx_close(&c);
}

/* ---- One delivery of many events: the queue's block grows, then the spare block is reused ---- */

#define BIG_BATCH 3000

typedef struct {
  int events, ends, wrong, missed;
  char (*keys)[320];
} order_sub_t;

static void on_order_event(int status, const engram_event_t *ev, void *ud) {
  order_sub_t *o = ud;
  (void)status;
  if (ev->kind == ENGRAM_EVENT_END) {
    o->ends++;
    return;
  }
  if (ev->kind == ENGRAM_EVENT_MISSED) {
    o->missed += (int)ev->count;
    return;
  }
  if (ev->kind != ENGRAM_EVENT_STORED || ev->key == NULL || ev->ns == NULL || strcmp(ev->ns, "ns/x") != 0 ||
      strcmp(ev->key, o->keys[o->events % BIG_BATCH]) != 0 || ev->version != 1 + (uint64_t)(o->events / BIG_BATCH) ||
      strcmp(ev->source, "mem") != 0) {
    if (o->wrong++ < 5)
      fprintf(stderr, "event %d: %s key '%s' ns '%s' v%llu\n", o->events, engram_event_kind_name(ev->kind),
              ev->key ? ev->key : "(null)", ev->ns ? ev->ns : "(null)", (unsigned long long)ev->version);
  }
  o->events++;
}

/* A store_many of 3,000 keys of 1..300 bytes queues 3,000 events before a delivery can run: the block they are
 * appended to grows from its first 4 KiB several times over (~0.5 MiB), and every event still arrives once, in
 * order, intact. The second batch overwrites the same keys (version 2) and reuses the delivered block. A
 * subscription to every source (its events copy the source's name too) and one to "mem" see the same. */
static void many_events_in_one_delivery(void **state) {
  ctx_t c;
  result_t r = {0};
  order_sub_t one, all;
  engram_subscribe_opts_t o;
  engram_subscription_t *sub_one, *sub_all;
  engram_entry_t *e = calloc(BIG_BATCH, sizeof *e);
  char(*keys)[320] = calloc(BIG_BATCH, sizeof *keys);
  engram_opts_t so = {0};
  cJSON *v = cJSON_CreateNumber(1);
  int i, j, round;
  (void)state;
  assert_non_null(e);
  assert_non_null(keys);
  ctx_init(&c, NULL);
  ctx_add(&c, &cache_src);
  memset(&one, 0, sizeof one);
  memset(&all, 0, sizeof all);
  one.keys = all.keys = keys;
  memset(&o, 0, sizeof o);
  o.capacity = BIG_BATCH;
  assert_int_equal(engram_events_subscribe(c.mgr, &o, on_order_event, &all, &sub_all), 0);
  o.source = "mem";
  assert_int_equal(engram_events_subscribe(c.mgr, &o, on_order_event, &one, &sub_one), 0);
  for (i = 0; i < BIG_BATCH; i++) {
    int len = 1 + (i * 37) % 300;
    for (j = 0; j < len; j++) keys[i][j] = (char)('a' + (i + j) % 26);
    snprintf(keys[i] + (len > 6 ? len - 6 : 0), 7, "%06u", (unsigned)i % 1000000u); /* distinct keys */
    e[i].key = keys[i];
    e[i].value = v;
  }
  so.ns = "ns/x";
  for (round = 1; round <= 2; round++) {
    call_done(&c, engram_store_many(c.mgr, e, BIG_BATCH, &so, capture_cb, &r), &r, 0, "store_many");
    wait_for(&c, &one.events, round * BIG_BATCH, 30000);
    wait_for(&c, &all.events, round * BIG_BATCH, 30000);
  }
  assert_int_equal(engram_events_unsubscribe(sub_one), 0);
  assert_int_equal(engram_events_unsubscribe(sub_all), 0);
  wait_for(&c, &one.ends, 1, 30000);
  wait_for(&c, &all.ends, 1, 30000);
  assert_int_equal(one.events, 2 * BIG_BATCH);
  assert_int_equal(all.events, 2 * BIG_BATCH);
  assert_int_equal(one.wrong + all.wrong, 0);
  assert_int_equal(one.missed + all.missed, 0);
  cJSON_Delete(v);
  free(e);
  free(keys);
  ctx_close(&c);
}

/* ---- A completion queue polled by another thread; a manager on its own thread ---- */

#define CQ_WRITES 1500

typedef struct {
  engram_cq_t *cq;
  atomic_int stored, ends, end_status, wrong_thread, other, stop;
  unsigned char seen[2][CQ_WRITES];
  int dup;
  uv_thread_t self;
} cq_sub_t;

static void on_cq_event(int status, const engram_event_t *ev, void *ud) {
  cq_sub_t *s = ud;
  uv_thread_t me = uv_thread_self();
  if (!uv_thread_equal(&me, &s->self)) atomic_fetch_add(&s->wrong_thread, 1);
  if (ev->kind == ENGRAM_EVENT_END) {
    atomic_store(&s->end_status, status);
    atomic_fetch_add(&s->ends, 1);
    return;
  }
  if (ev->kind == ENGRAM_EVENT_STORED && ev->key != NULL && ev->source != NULL) {
    int which = strcmp(ev->source, "sq") == 0, i = atoi(ev->key + 1);
    if (i >= 0 && i < CQ_WRITES) {
      if (s->seen[which][i]) s->dup++;
      s->seen[which][i] = 1;
    }
    atomic_fetch_add(&s->stored, 1);
  } else {
    atomic_fetch_add(&s->other, 1);
  }
}

static void poller_main(void *arg) {
  cq_sub_t *s = arg;
  s->self = uv_thread_self();
  while (!atomic_load(&s->stop)) {
    if (engram_cq_poll(s->cq, 0) == 0) sleep_ms(1);
  }
  engram_cq_poll(s->cq, 0);
}

static atomic_int replies, reply_failures, added;

static void on_reply(int status, const engram_reply_t *reply, void *ud) {
  (void)reply;
  (void)ud;
  if (status != 0) atomic_fetch_add(&reply_failures, 1);
  atomic_fetch_add(&replies, 1);
}

static void on_added(int status, const engram_reply_t *reply, void *ud) {
  (void)ud;
  if (status != 0) fprintf(stderr, "add failed: %s\n", reply->message);
  atomic_store(&added, status == 0 ? 1 : -1);
}

static int wait_atomic(atomic_int *v, int want, int timeout_ms) {
  int waited = 0;
  while (atomic_load(v) < want && waited < timeout_ms) {
    sleep_ms(1);
    waited++;
  }
  return atomic_load(v) >= want;
}

static void cq_from_another_thread(void **state) {
  engram_manager_t *mgr;
  cq_sub_t *s = calloc(1, sizeof *s), *kept = calloc(1, sizeof *kept);
  engram_subscribe_opts_t o;
  engram_subscription_t *sub, *sub_kept;
  uv_thread_t poller;
  char *sq_opts;
  char key[16];
  cJSON *v = cJSON_CreateNumber(7);
  int i;
  (void)state;
  assert_non_null(s);
  assert_non_null(kept);
  atomic_store(&replies, 0);
  atomic_store(&reply_failures, 0);
  assert_int_equal(engram_manager_new(&mgr, NULL, NULL), 0);
  atomic_store(&added, 0);
  assert_int_equal(engram_manager_add_source(mgr, "mem", &engram_source_cache, NULL, "", 1, on_added, NULL), 0);
  assert_true(wait_atomic(&added, 1, 30000));
  assert_int_equal(atomic_load(&added), 1);
  sq_opts = conf_source_sqlite.options();
  atomic_store(&added, 0);
  assert_int_equal(engram_manager_add_source(mgr, "sq", &engram_source_sqlite, sq_opts, "", 0, on_added, NULL), 0);
  engram_free(sq_opts);
  assert_true(wait_atomic(&added, 1, 30000));
  assert_int_equal(atomic_load(&added), 1);
  assert_int_equal(engram_cq_new(&s->cq, NULL), 0);
  assert_int_equal(engram_cq_new(&kept->cq, NULL), 0);
  memset(&o, 0, sizeof o);
  o.cq = s->cq;
  o.capacity = 4 * CQ_WRITES; /* no overflow here: every event must arrive */
  assert_int_equal(engram_events_subscribe(mgr, &o, on_cq_event, s, &sub), 0);
  o.cq = kept->cq;
  o.kinds = ENGRAM_EVENT_DELETED; /* none happen: only its END, at shutdown */
  assert_int_equal(engram_events_subscribe(mgr, &o, on_cq_event, kept, &sub_kept), 0);
  assert_int_equal(uv_thread_create(&poller, poller_main, s), 0);
  for (i = 0; i < CQ_WRITES; i++) {
    engram_opts_t so = {0};
    snprintf(key, sizeof key, "k%d", i);
    while (engram_store(mgr, key, v, &so, on_reply, NULL) == ENGRAM_EBUSY) sleep_ms(1);
    so.source = "sq";
    while (engram_store(mgr, key, v, &so, on_reply, NULL) == ENGRAM_EBUSY) sleep_ms(1);
  }
  assert_true(wait_atomic(&replies, 2 * CQ_WRITES, 60000));
  assert_int_equal(atomic_load(&reply_failures), 0);
  assert_true(wait_atomic(&s->stored, 2 * CQ_WRITES, 60000));
  /* From this thread, not the delivery thread: END follows on the poller. */
  assert_int_equal(engram_events_unsubscribe(sub), 0);
  assert_true(wait_atomic(&s->ends, 1, 60000));
  atomic_store(&s->stop, 1);
  uv_thread_join(&poller);
  assert_int_equal(atomic_load(&s->stored), 2 * CQ_WRITES);
  assert_int_equal(s->dup, 0);
  for (i = 0; i < CQ_WRITES; i++) assert_true(s->seen[0][i] && s->seen[1][i]);
  assert_int_equal(atomic_load(&s->other), 0);
  assert_int_equal(atomic_load(&s->wrong_thread), 0);
  assert_int_equal(atomic_load(&s->end_status), ENGRAM_ECANCELED);
  /* The other subscription ends with the manager; its END waits in its queue. */
  assert_int_equal(engram_manager_shutdown(mgr), 0);
  kept->self = uv_thread_self();
  assert_int_equal(engram_cq_poll(kept->cq, 0), 1);
  assert_int_equal(atomic_load(&kept->ends), 1);
  assert_int_equal(atomic_load(&kept->end_status), ENGRAM_ECLOSED);
  assert_int_equal(atomic_load(&kept->stored) + atomic_load(&kept->other) + atomic_load(&kept->wrong_thread), 0);
  engram_cq_free(s->cq);
  engram_cq_free(kept->cq);
  free(s);
  free(kept);
  cJSON_Delete(v);
}

/* ---- Source names and texts of every length (the hook compares names by words and copies short texts inline) ---- */

#define N_NAMES 9
#define N_TEXTS 44
#define N_SHORT 18

typedef struct {
  const char *want_source; /* NULL: any, recorded in sources */
  int events, ends, wrong;
  char sources[N_NAMES][ENGRAM_SOURCE_NAME_MAX + 1];
  const char *const *keys, *const *nss; /* the expected key and namespace of each event, in order */
  int n_expected;
} text_sub_t;

static void on_text_event(int status, const engram_event_t *ev, void *ud) {
  text_sub_t *t = ud;
  (void)status;
  if (ev->kind == ENGRAM_EVENT_END) {
    t->ends++;
    return;
  }
  if (ev->kind != ENGRAM_EVENT_STORED || ev->source == NULL || ev->key == NULL || ev->ns == NULL) {
    t->wrong++;
  } else if (t->want_source != NULL) {
    if (strcmp(ev->source, t->want_source) != 0) t->wrong++;
    if (t->keys != NULL && (t->events >= t->n_expected || strcmp(ev->key, t->keys[t->events]) != 0 ||
                            strcmp(ev->ns, t->nss[t->events]) != 0)) {
      fprintf(stderr, "event %d: key '%s' ns '%s'\n", t->events, ev->key, ev->ns);
      t->wrong++;
    }
  } else if (t->events < N_NAMES) {
    snprintf(t->sources[t->events], sizeof t->sources[0], "%s", ev->source);
  }
  t->events++;
}

/* Counts the replies of stores submitted together (ud: an int); count_failed counts those that failed. */
static int count_failed;

static void count_reply(int status, const engram_reply_t *reply, void *ud) {
  (void)reply;
  if (status != 0) count_failed++;
  (*(int *)ud)++;
}

static void names_and_texts_of_every_length(void **state) {
  ctx_t c;
  result_t r = {0};
  /* Around the 8-byte words: 1, 2, 3, 7 (the NUL ends word 1), 8 (the NUL opens word 2), 9; 62, 63 (the NUL ends the
   * eighth word) and 64 bytes (compared with strcmp). Each a prefix of the next where it can be. */
  char names[N_NAMES][ENGRAM_SOURCE_NAME_MAX + 1];
  const int lens[N_NAMES] = {1, 2, 3, 7, 8, 9, 62, 63, 64};
  text_sub_t one[N_NAMES], any;
  engram_subscription_t *subs[N_NAMES], *any_sub;
  engram_subscribe_opts_t o;
  static char keys[N_TEXTS][1100], nss[N_TEXTS][300];
  static char keys2[N_SHORT][20], nss2[N_SHORT][20];
  const char *key_p[N_TEXTS + N_SHORT], *ns_p[N_TEXTS + N_SHORT];
  int stored = 0, failed = 0;
  cJSON *v = cJSON_CreateNumber(1);
  int i, j;
  (void)state;
  ctx_init(&c, NULL);
  memset(&any, 0, sizeof any);
  memset(&o, 0, sizeof o);
  assert_int_equal(engram_events_subscribe(c.mgr, &o, on_text_event, &any, &any_sub), 0);
  for (i = 0; i < N_NAMES; i++) {
    for (j = 0; j < lens[i]; j++) names[i][j] = (char)(j < 9 ? 'a' + j : 'n');
    names[i][lens[i]] = '\0';
    call_done(&c, engram_manager_add_source(c.mgr, names[i], &engram_source_cache, NULL, "", 0, capture_cb, &r), &r, 0,
              "add source");
    memset(&one[i], 0, sizeof one[i]);
    one[i].want_source = names[i];
    o.source = names[i];
    assert_int_equal(engram_events_subscribe(c.mgr, &o, on_text_event, &one[i], &subs[i]), 0);
  }
  /* Texts of 1..40 bytes (every short-copy case: 1-3, 4-7, 8-16, longer), and longer than a pooled node holds. */
  for (i = 0; i < N_TEXTS; i++) {
    int kl = i < 40 ? i + 1 : (i == 40 ? 200 : i == 41 ? 1024 : i == 42 ? 17 : 3);
    int nl = i < 40 ? 40 - i : (i == 40 ? 256 : i == 41 ? 5 : i == 42 ? 250 : 16);
    for (j = 0; j < kl; j++) keys[i][j] = (char)('A' + (i + j) % 26);
    keys[i][kl] = '\0';
    for (j = 0; j < nl; j++) nss[i][j] = (char)('a' + (i * 7 + j) % 26);
    nss[i][nl] = '\0';
    key_p[i] = keys[i];
    ns_p[i] = nss[i];
  }
  /* Short texts for one turn (below): keys of 1..16 bytes with namespaces of 16..1, then 17 + 3 and 3 + 17. */
  for (i = 0; i < N_SHORT; i++) {
    int kl = i < 16 ? i + 1 : (i == 16 ? 17 : 3), nl = i < 16 ? 16 - i : (i == 16 ? 3 : 17);
    for (j = 0; j < kl; j++) keys2[i][j] = (char)('a' + (i * 3 + j) % 26);
    keys2[i][kl] = '\0';
    for (j = 0; j < nl; j++) nss2[i][j] = (char)('A' + (i * 5 + j) % 26);
    nss2[i][nl] = '\0';
    key_p[N_TEXTS + i] = keys2[i];
    ns_p[N_TEXTS + i] = nss2[i];
  }
  for (i = 0; i < N_NAMES; i++) {
    engram_opts_t so = {0};
    so.source = names[i];
    call_done(&c, engram_store(c.mgr, "k", v, &so, capture_cb, &r), &r, 0, "store k");
  }
  /* "abc" had its store above; its texts follow, each checked against its expected key and namespace. */
  wait_for(&c, &one[2].events, 1, 30000);
  one[2].events = 0;
  one[2].keys = key_p;
  one[2].nss = ns_p;
  one[2].n_expected = N_TEXTS + N_SHORT;
  for (i = 0; i < N_TEXTS; i++) {
    engram_opts_t so = {0};
    so.source = names[2];
    so.ns = nss[i];
    call_done(&c, engram_store(c.mgr, keys[i], v, &so, capture_cb, &r), &r, 0, "store a text");
  }
  wait_for(&c, &one[2].events, N_TEXTS, 30000);
  /* Short texts, all in one turn of the actor (each submitted before the loop runs): after the turn's first, each
   * store whose key and namespace are up to 16 bytes takes the hook's straight-line path (events.c, hook_completed),
   * the two longer ones the general one — and every event still arrives intact, in order. */
  for (i = 0; i < N_SHORT; i++) {
    engram_opts_t so = {0};
    so.source = names[2];
    so.ns = nss2[i];
    assert_int_equal(engram_store(c.mgr, keys2[i], v, &so, count_reply, &stored), 0);
  }
  wait_for(&c, &stored, N_SHORT, 30000);
  wait_for(&c, &one[2].events, N_TEXTS + N_SHORT, 30000);
  wait_for(&c, &any.events, N_NAMES + N_TEXTS + N_SHORT, 30000);
  failed = count_failed;
  for (i = 0; i < N_NAMES; i++) assert_int_equal(engram_events_unsubscribe(subs[i]), 0);
  assert_int_equal(engram_events_unsubscribe(any_sub), 0);
  for (i = 0; i < N_NAMES; i++) wait_for(&c, &one[i].ends, 1, 30000);
  wait_for(&c, &any.ends, 1, 30000);
  for (i = 0; i < N_NAMES; i++) {
    if (one[i].wrong != 0 || one[i].events != (i == 2 ? N_TEXTS + N_SHORT : 1))
      fail_msg("subscription to '%s': %d events, %d wrong", names[i], one[i].events, one[i].wrong);
    assert_string_equal(any.sources[i], names[i]); /* the subscription to every source copies the name */
  }
  assert_int_equal(any.events, N_NAMES + N_TEXTS + N_SHORT);
  assert_int_equal(failed, 0);
  assert_int_equal(any.wrong, 0);
  cJSON_Delete(v);
  ctx_close(&c);
}

/* ---- The lock under contention: three producer threads, a poller, and subscriptions coming and going ---- */

#define LOCK_WRITES 3000

typedef struct {
  engram_cq_t *cq;
  atomic_int stored, missed, ends, stop;
} lock_sub_t;

static void on_lock_event(int status, const engram_event_t *ev, void *ud) {
  lock_sub_t *s = ud;
  (void)status;
  if (ev->kind == ENGRAM_EVENT_END) atomic_fetch_add(&s->ends, 1);
  else if (ev->kind == ENGRAM_EVENT_MISSED) atomic_fetch_add(&s->missed, (int)ev->count);
  else atomic_fetch_add(&s->stored, 1);
}

static void busy_poller(void *arg) { /* no sleep: deliveries take the lock as often as they can */
  lock_sub_t *s = arg;
  while (!atomic_load(&s->stop)) engram_cq_poll(s->cq, 0);
  engram_cq_poll(s->cq, 0);
}

static void lock_under_contention(void **state) {
  engram_manager_t *mgr;
  lock_sub_t *s = calloc(1, sizeof *s), *churn = calloc(1, sizeof *churn);
  engram_subscribe_opts_t o;
  engram_subscription_t *sub;
  uv_thread_t poller;
  const char *names[3] = {"mem", "s1", "s2"};
  char key[16];
  cJSON *v = cJSON_CreateNumber(7);
  int i, k, churned = 0;
  (void)state;
  assert_non_null(s);
  assert_non_null(churn);
  atomic_store(&replies, 0);
  atomic_store(&reply_failures, 0);
  assert_int_equal(engram_manager_new(&mgr, NULL, NULL), 0);
  for (k = 0; k < 3; k++) { /* the cache on the home loop, two in-memory SQLite sources on threads of their own */
    atomic_store(&added, 0);
    assert_int_equal(engram_manager_add_source(mgr, names[k], k == 0 ? &engram_source_cache : &engram_source_sqlite,
                                               k == 0 ? NULL : "{\"path\": \":memory:\"}", "", k == 0, on_added, NULL),
                     0);
    assert_true(wait_atomic(&added, 1, 30000));
    assert_int_equal(atomic_load(&added), 1);
  }
  assert_int_equal(engram_cq_new(&s->cq, NULL), 0);
  assert_int_equal(engram_cq_new(&churn->cq, NULL), 0);
  memset(&o, 0, sizeof o);
  o.cq = s->cq;
  o.capacity = 64; /* small: deliveries race the producers, and some events are dropped and counted */
  assert_int_equal(engram_events_subscribe(mgr, &o, on_lock_event, s, &sub), 0);
  assert_int_equal(uv_thread_create(&poller, busy_poller, s), 0);
  o.cq = churn->cq;
  for (i = 0; i < LOCK_WRITES; i++) {
    for (k = 0; k < 3; k++) {
      engram_opts_t so = {0};
      so.source = names[k];
      snprintf(key, sizeof key, "k%d", i);
      while (engram_store(mgr, key, v, &so, on_reply, NULL) == ENGRAM_EBUSY) sleep_ms(1);
    }
    if (i % 50 == 0) { /* a subscription comes and goes: subscribe and unsubscribe take the lock from this thread */
      engram_subscription_t *c2;
      assert_int_equal(engram_events_subscribe(mgr, &o, on_lock_event, churn, &c2), 0);
      assert_int_equal(engram_events_unsubscribe(c2), 0);
      churned++;
      engram_cq_poll(churn->cq, 0);
    }
  }
  assert_true(wait_atomic(&replies, 3 * LOCK_WRITES, 120000));
  assert_int_equal(atomic_load(&reply_failures), 0);
  /* Every change is delivered or counted as missed, exactly once. Both counts grow while this waits (a "missed N"
   * event is delivered once the queue has room again), so the wait is on their sum. */
  for (k = 0; k < 60000 && atomic_load(&s->stored) + atomic_load(&s->missed) < 3 * LOCK_WRITES; k++) sleep_ms(1);
  if (atomic_load(&s->stored) + atomic_load(&s->missed) != 3 * LOCK_WRITES) {
    int st = atomic_load(&s->stored), mi = atomic_load(&s->missed);
    fail_msg("%d delivered + %d missed != %d changes", st, mi, 3 * LOCK_WRITES);
  }
  assert_int_equal(engram_events_unsubscribe(sub), 0);
  assert_true(wait_atomic(&s->ends, 1, 60000));
  atomic_store(&s->stop, 1);
  uv_thread_join(&poller);
  for (k = 0; k < 60000 && atomic_load(&churn->ends) < churned; k++)
    if (engram_cq_poll(churn->cq, 0) == 0) sleep_ms(1);
  assert_int_equal(atomic_load(&churn->ends), churned);
  assert_int_equal(atomic_load(&s->ends), 1);
  assert_int_equal(engram_manager_shutdown(mgr), 0);
  engram_cq_poll(churn->cq, 0);
  engram_cq_free(s->cq);
  engram_cq_free(churn->cq);
  free(s);
  free(churn);
  cJSON_Delete(v);
}

/* ---- Bad arguments ---- */

static void bad_arguments(void **state) {
  ctx_t c;
  log_t l;
  engram_subscription_t *sub = (engram_subscription_t *)&l;
  engram_subscribe_opts_t o;
  char longp[ENGRAM_NAMESPACE_MAX + 2];
  (void)state;
  memset(&l, 0, sizeof l);
  ctx_init(&c, NULL);
  assert_int_equal(engram_events_subscribe(NULL, NULL, on_event, &l, &sub), ENGRAM_EINVAL);
  assert_null(sub);
  assert_int_equal(engram_events_subscribe(c.mgr, NULL, NULL, &l, &sub), ENGRAM_EINVAL);
  assert_int_equal(engram_events_subscribe(c.mgr, NULL, on_event, &l, NULL), ENGRAM_EINVAL);
  memset(&o, 0, sizeof o);
  o.kinds = ENGRAM_EVENT_MISSED;
  assert_int_equal(engram_events_subscribe(c.mgr, &o, on_event, &l, &sub), ENGRAM_EINVAL);
  assert_non_null(strstr(engram_last_error(), "kinds"));
  memset(&o, 0, sizeof o);
  o.capacity = (1u << 20) + 1;
  assert_int_equal(engram_events_subscribe(c.mgr, &o, on_event, &l, &sub), ENGRAM_EINVAL);
  memset(&o, 0, sizeof o);
  o.source = "bad name!";
  assert_int_equal(engram_events_subscribe(c.mgr, &o, on_event, &l, &sub), ENGRAM_EINVAL);
  memset(&o, 0, sizeof o);
  memset(longp, 'n', sizeof longp - 1);
  longp[sizeof longp - 1] = '\0';
  o.ns_prefix = longp;
  assert_int_equal(engram_events_subscribe(c.mgr, &o, on_event, &l, &sub), ENGRAM_EINVAL);
  o.ns_prefix = "\xff";
  assert_int_equal(engram_events_subscribe(c.mgr, &o, on_event, &l, &sub), ENGRAM_EINVAL);
  assert_int_equal(engram_events_unsubscribe(NULL), ENGRAM_EINVAL);
  assert_string_equal(engram_event_kind_name(ENGRAM_EVENT_UPDATED), "updated");
  assert_string_equal(engram_event_kind_name((engram_event_kind_t)12345), "unknown");
  ctx_close(&c);
  assert_int_equal(l.events + l.ends, 0);
}

/* ---- Allocation failures ---- */

static void alloc_scenario(void *arg) {
  ctx_t c;
  result_t r = {0};
  log_t l;
  engram_entry_t e[3];
  cJSON *v;
  int rc, subscribed, i;
  uint64_t ok = 0, seen = 0;
  (void)arg;
  memset(&l, 0, sizeof l);
  memset(&c, 0, sizeof c);
  assert_int_equal(uv_loop_init(&c.loop), 0);
  while ((rc = engram_manager_new(&c.mgr, &c.loop, NULL)) == ENGRAM_ENOMEM) {
  }
  assert_int_equal(rc, 0);
  while ((rc = engram_manager_add_source(c.mgr, "mem", &engram_source_cache, NULL, "", 1, capture_cb, &r)) ==
         ENGRAM_ENOMEM) {
  }
  assert_int_equal(rc, 0);
  wait_for(&c, &r.calls, 1, 10000);
  rc = r.status;
  result_reset(&r);
  if (rc == 0) {
    rc = engram_events_subscribe(c.mgr, NULL, on_event, &l, &l.sub);
    if (rc != 0 && rc != ENGRAM_ENOMEM) fail_msg("subscribe: %s", engram_err_name(rc));
    subscribed = rc == 0;
    v = cJSON_CreateNumber(1);
    memset(e, 0, sizeof e);
    e[0].key = "a";
    e[1].key = "b";
    e[2].key = "c";
    for (i = 0; i < 3; i++) e[i].value = v;
    rc = v ? engram_store_many(c.mgr, e, 3, NULL, capture_cb, &r) : ENGRAM_ENOMEM;
    if (rc == 0) {
      wait_for(&c, &r.calls, 1, 10000);
      if (r.status == 0) ok = r.count;
      else if (r.status != ENGRAM_ENOMEM) fail_msg("store_many: %s", engram_err_name(r.status));
    } else if (rc != ENGRAM_ENOMEM) {
      fail_msg("store_many returned %s", engram_err_name(rc));
    }
    result_reset(&r);
    cJSON_Delete(v);
    if (subscribed) {
      /* Every successful item is an event or counted in a MISSED one. */
      for (;;) {
        seen = 0;
        for (i = 0; i < l.events && i < LOG_MAX; i++)
          seen += l.rec[i].kind == ENGRAM_EVENT_MISSED ? l.rec[i].count : 1;
        if (seen >= ok) break;
        if (!loop_wait(&c.loop, &l.events, l.events + 1, 10000)) break;
      }
      if (seen != ok) fail_msg("allocation #%ld: %llu events for %llu stored", failing_alloc_point(),
                               (unsigned long long)seen, (unsigned long long)ok);
      assert_int_equal(engram_events_unsubscribe(l.sub), 0);
      wait_for(&c, &l.ends, 1, 10000);
    }
  }
  while ((rc = engram_manager_close(c.mgr, capture_cb, &r)) == ENGRAM_ENOMEM) {
  }
  assert_int_equal(rc, 0);
  wait_for(&c, &r.calls, 1, 10000);
  result_reset(&r);
  assert_int_equal(uv_run(&c.loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&c.loop), 0);
}

static void allocation_failures(void **state) {
  long points;
  (void)state;
  points = failing_alloc_loop(alloc_scenario, NULL);
  printf("  subscribe + store_many + announce + unsubscribe: %ld allocation points, each failed once\n", points);
  assert_true(points > 10 || getenv("ENGRAM_ALLOC_ONLY") != NULL);
}

static int group_setup(void **state) {
  (void)state;
  return conf_source_sqlite.setup();
}

static int group_teardown(void **state) {
  (void)state;
  conf_source_sqlite.teardown();
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(every_kind_cache),
      cmocka_unit_test(every_kind_sqlite),
      cmocka_unit_test(every_kind_emulated),
      cmocka_unit_test(append_events_cache),
      cmocka_unit_test(append_events_sqlite),
      cmocka_unit_test(append_events_emulated), cmocka_unit_test(partly_failed_append_announces_what_it_wrote),
#if ENGRAM_WITH_REDIS
      cmocka_unit_test(append_events_redis),
#endif
      cmocka_unit_test(cache_announces_evicted_and_expired),
      cmocka_unit_test(tiered_write_announced_by_each_source),
      cmocka_unit_test(unsubscribe_stops_delivery),
      cmocka_unit_test(close_ends_subscriptions),
      cmocka_unit_test(subscribe_inside_a_turn),
      cmocka_unit_test(overflow_gives_one_missed),
      cmocka_unit_test(many_events_in_one_delivery),
      cmocka_unit_test(cq_from_another_thread),
      cmocka_unit_test(names_and_texts_of_every_length),
      cmocka_unit_test(lock_under_contention),
      cmocka_unit_test(bad_arguments),
      cmocka_unit_test(allocation_failures),
  };
  return cmocka_run_group_tests_name("events", tests, group_setup, group_teardown);
}
