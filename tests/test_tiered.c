/*
 * test_tiered.c — the tiered source (sources/tiered/, docs/tiered.md) beyond the conformance suite: read repair
 * (an item only in the lower tier is copied up with the same value, metadata, version, timestamps and expiry —
 * into a cache, SQLite, PostgreSQL and Redis), write-through to every tier with one version and each tier's
 * outcome in the reply, an upper tier that fails its copy (or cannot take copies, or fails everything) left
 * without a copy rather than a stale one, a durable tier timing out, deletes and clears reaching every tier,
 * search / count / list_keys on the configured tier (vector and hybrid searches too, or a clear refusal when
 * that tier ranks by text only), batches, many interleaved calls on a few keys leaving the
 * tiers equal, a tier removed under the tiered source, a manager on its own thread answering through a
 * completion queue, bad configurations refused with a message naming what was wrong, and the failing-allocator
 * loop over every operation. Every call's callbacks are counted (exactly one each; the harness fails the test on
 * a second one), and every wait is for a condition with a deadline. PostgreSQL and redis-server are started once
 * (tests/support); the whole program takes a few seconds.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support/failing_alloc.h"
#include "support/harness.h"
#include "support/pg_server.h"
#include "support/probe_source.h"
#include "support/redis_server.h"

/* Adds a source; returns the callback's status, with its message in r. */
static int add(ctx_t *c, const char *name, const engram_source_vtable_t *vt, const char *options, result_t *r) {
  int rc;
  result_reset(r);
  rc = engram_manager_add_source(c->mgr, name, vt, options, NULL, 0, capture_cb, r);
  if (rc != 0) return rc;
  wait_for(c, &r->calls, 1, 30000);
  assert_int_equal(r->calls, 1);
  return r->status;
}

static void add_ok(ctx_t *c, const char *name, const engram_source_vtable_t *vt, const char *options) {
  result_t r = {0};
  if (add(c, name, vt, options, &r) != 0) fail_msg("add %s: %s (%s)", name, engram_err_name(r.status), r.message);
  result_reset(&r);
}

/* A world with tiers "c" (cache) and "d" (the durable one) and the tiered source "t" over them. */
static ctx_t *world(const engram_source_vtable_t *upper, const char *upper_opts, const engram_source_vtable_t *durable,
                    const char *durable_opts, const char *tiered_opts) {
  ctx_t *c = calloc(1, sizeof *c);
  ctx_init(c, NULL);
  add_ok(c, "c", upper, upper_opts);
  add_ok(c, "d", durable, durable_opts);
  add_ok(c, "t", &engram_source_tiered, tiered_opts ? tiered_opts : "{\"tiers\": [\"c\", \"d\"]}");
  return c;
}

static void world_end(ctx_t *c) {
  ctx_close(c);
  free(c);
}

static engram_opts_t on(const char *source) {
  engram_opts_t o = {0};
  o.source = source;
  o.flags = ENGRAM_OPT_INCLUDE_METADATA;
  return o;
}

static double num(const result_t *r, const char *field) {
  const cJSON *v = result_item(r, 0, field);
  if (v == NULL) fail_msg("reply item has no %s", field);
  return v->valuedouble;
}

static double info_num(const cJSON *info, const char *field) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(info, field);
  if (!cJSON_IsNumber(v)) fail_msg("info has no number %s", field);
  return v->valuedouble;
}

/* Asserts that sources a and b hold key with the same value, metadata, version, timestamps and expiry. */
static void assert_same_item(ctx_t *c, const char *a, const char *b, const char *key) {
  result_t ra = {0}, rb = {0};
  engram_opts_t oa = on(a), ob = on(b);
  static const char *const fields[] = {"version", "created_at_ms", "updated_at_ms", "expires_at_ms"};
  size_t i;
  assert_int_equal(s_retrieve(c, key, &oa, &ra), 0);
  assert_int_equal(s_retrieve(c, key, &ob, &rb), 0);
  for (i = 0; i < sizeof fields / sizeof fields[0]; i++)
    if (num(&ra, fields[i]) != num(&rb, fields[i]))
      fail_msg("key %s: %s differs: %s has %.0f, %s has %.0f", key, fields[i], a, num(&ra, fields[i]), b,
               num(&rb, fields[i]));
  assert_true(cJSON_Compare(result_item(&ra, 0, "value"), result_item(&rb, 0, "value"), 1));
  assert_true(cJSON_Compare(result_item(&ra, 0, "metadata"), result_item(&rb, 0, "metadata"), 1) ||
              (result_item(&ra, 0, "metadata") == NULL && result_item(&rb, 0, "metadata") == NULL));
  result_reset(&ra);
  result_reset(&rb);
}

/* Asserts entry i of a write's reply->info "tiers": its name, action and status. */
static void assert_tier(const result_t *r, int i, const char *name, const char *action, const char *status) {
  const cJSON *e = cJSON_GetArrayItem(cJSON_GetObjectItem(r->info, "tiers"), i);
  if (e == NULL) fail_msg("reply info has no tiers[%d]", i);
  assert_string_equal(cJSON_GetObjectItem(e, "name")->valuestring, name);
  assert_string_equal(cJSON_GetObjectItem(e, "action")->valuestring, action);
  assert_string_equal(cJSON_GetObjectItem(e, "status")->valuestring, status);
}

static const char *sqlite_mem = "{\"path\": \":memory:\"}";

/* ---- read repair ---- */

static void read_repair_into(const engram_source_vtable_t *upper, const char *upper_opts,
                             const engram_source_vtable_t *durable, const char *durable_opts) {
  ctx_t *c = world(upper, upper_opts, durable, durable_opts, NULL);
  result_t r = {0};
  engram_opts_t d = on("d"), t = on("t"), cc = on("c");
  cJSON *meta = J("{\"tag\": \"x\"}");
  d.flags |= ENGRAM_OPT_TTL;
  d.ttl_ms = 600000;
  d.metadata = meta;
  /* Only in the durable tier, at version 2, with a TTL. */
  assert_int_equal(s_store(c, "k", "{\"v\": 1}", &d, &r), 0);
  assert_int_equal(s_store(c, "k", "{\"v\": 2}", &d, &r), 0);
  assert_int_equal((int)num(&r, "version"), 2);
  assert_int_equal(s_retrieve(c, "k", &cc, &r), ENGRAM_ENOTFOUND);
  /* Through the tiered source: a hit in the lower tier, copied up. */
  assert_int_equal(s_retrieve(c, "k", &t, &r), 0);
  assert_int_equal((int)num(&r, "version"), 2);
  assert_true(num(&r, "expires_at_ms") > 0);
  assert_string_equal(cJSON_GetObjectItem(result_item(&r, 0, "metadata"), "tag")->valuestring, "x");
  assert_same_item(c, "c", "d", "k");
  /* The next read is served by the upper tier. */
  assert_int_equal(s_retrieve(c, "k", &t, &r), 0);
  assert_int_equal((int)num(&r, "version"), 2);
  assert_int_equal(s_info(c, &t, &r), 0);
  assert_int_equal((int)cJSON_GetArrayItem(cJSON_GetObjectItem(r.info, "read_hits"), 0)->valuedouble, 1);
  assert_int_equal((int)cJSON_GetArrayItem(cJSON_GetObjectItem(r.info, "read_hits"), 1)->valuedouble, 1);
  assert_int_equal((int)info_num(r.info, "read_repairs"), 1);
  assert_string_equal(cJSON_GetObjectItem(r.info, "type")->valuestring, "tiered");
  /* A key in no tier is not found, and says so. */
  assert_int_equal(s_retrieve(c, "nope", &t, &r), ENGRAM_ENOTFOUND);
  assert_non_null(strstr(r.message, "no memory found for key: nope"));
  cJSON_Delete(meta);
  result_reset(&r);
  world_end(c);
}

/* Into a cache (over SQLite) and into SQLite (over a cache): both take replicas. */
static void read_repair_copies_version_and_ttl(void **state) {
  (void)state;
  read_repair_into(&engram_source_cache, NULL, &engram_source_sqlite, sqlite_mem);
  read_repair_into(&engram_source_sqlite, sqlite_mem, &engram_source_cache, NULL);
}

/* Without ENGRAM_OPT_INCLUDE_METADATA a retrieve carries no metadata, as every source's. */
static void retrieve_without_metadata_flag(void **state) {
  ctx_t *c = world(&engram_source_cache, NULL, &engram_source_cache, NULL, NULL);
  result_t r = {0};
  engram_opts_t t = {0};
  cJSON *meta = J("{\"tag\": \"x\"}");
  (void)state;
  t.source = "t";
  t.metadata = meta;
  assert_int_equal(s_store(c, "k", "7", &t, &r), 0);
  t.metadata = NULL;
  assert_int_equal(s_retrieve(c, "k", &t, &r), 0);
  assert_null(result_item(&r, 0, "metadata"));
  assert_int_equal(result_item(&r, 0, "value")->valueint, 7);
  cJSON_Delete(meta);
  result_reset(&r);
  world_end(c);
}

/* ---- writes ---- */

static void store_writes_every_tier_with_one_version(void **state) {
  ctx_t *c = world(&engram_source_cache, NULL, &engram_source_sqlite, sqlite_mem, NULL);
  result_t r = {0};
  engram_opts_t t = on("t");
  cJSON *meta = J("{\"n\": 3}");
  (void)state;
  t.metadata = meta;
  t.flags |= ENGRAM_OPT_TTL;
  t.ttl_ms = 600000;
  assert_int_equal(s_store(c, "k", "\"one\"", &t, &r), 0);
  assert_int_equal((int)num(&r, "version"), 1);
  assert_tier(&r, 0, "c", "copied", "ENGRAM_OK");
  assert_tier(&r, 1, "d", "stored", "ENGRAM_OK");
  assert_same_item(c, "c", "d", "k");
  assert_int_equal(s_store(c, "k", "\"two\"", &t, &r), 0);
  assert_int_equal((int)num(&r, "version"), 2);
  assert_same_item(c, "c", "d", "k");
  /* if_version is decided by the durable tier. */
  t.if_version = 1;
  assert_int_equal(s_store(c, "k", "\"three\"", &t, &r), ENGRAM_ECONFLICT);
  assert_non_null(strstr(r.message, "version is not 1"));
  assert_tier(&r, 0, "c", "none", "ENGRAM_OK");
  assert_tier(&r, 1, "d", "failed", "ENGRAM_ECONFLICT");
  t.if_version = 2;
  assert_int_equal(s_store(c, "k", "\"three\"", &t, &r), 0);
  assert_int_equal((int)num(&r, "version"), 3);
  assert_same_item(c, "c", "d", "k");
  t.if_version = 0;
  t.flags |= ENGRAM_OPT_CREATE_ONLY;
  assert_int_equal(s_store(c, "k", "\"four\"", &t, &r), ENGRAM_EEXIST);
  assert_same_item(c, "c", "d", "k");
  cJSON_Delete(meta);
  result_reset(&r);
  world_end(c);
}

/* The upper cache refuses values over 64 bytes: its copy fails, and its old copy is deleted, never left stale. */
static void failed_upper_copy_is_invalidated(void **state) {
  ctx_t *c = world(&engram_source_cache, "{\"max_value_bytes\": 64}", &engram_source_cache, NULL, NULL);
  result_t r = {0};
  engram_opts_t t = on("t"), cc = on("c"), d = on("d");
  char big[400];
  (void)state;
  assert_int_equal(s_store(c, "k", "\"small\"", &t, &r), 0);
  assert_same_item(c, "c", "d", "k");
  snprintf(big, sizeof big, "\"%0300d\"", 7);
  assert_int_equal(s_store(c, "k", big, &t, &r), 0); /* acknowledged: the durable tier has it */
  assert_int_equal((int)num(&r, "version"), 2);
  assert_tier(&r, 0, "c", "invalidated", "ENGRAM_ETOOBIG");
  assert_tier(&r, 1, "d", "stored", "ENGRAM_OK");
  assert_int_equal(s_retrieve(c, "k", &cc, &r), ENGRAM_ENOTFOUND); /* the old copy is gone */
  assert_int_equal(s_retrieve(c, "k", &d, &r), 0);
  assert_int_equal((int)num(&r, "version"), 2);
  /* Reads still get the new value (the repair fails the same way and leaves no copy). */
  assert_int_equal(s_retrieve(c, "k", &t, &r), 0);
  assert_true(strlen(result_item(&r, 0, "value")->valuestring) == 300);
  assert_int_equal(s_retrieve(c, "k", &cc, &r), ENGRAM_ENOTFOUND);
  assert_int_equal(s_info(c, &t, &r), 0);
  assert_true(info_num(r.info, "copy_failures") >= 1);
  assert_true(info_num(r.info, "read_repair_failures") >= 1);
  assert_true(info_num(r.info, "invalidations") >= 2);
  assert_int_equal((int)info_num(r.info, "invalidation_failures"), 0);
  result_reset(&r);
  world_end(c);
}

/* An upper tier that cannot take copies (a cache vtable without ENGRAM_SOURCE_REPLICA) is kept coherent by
 * deletes. */
static void upper_tier_without_replicas_is_invalidated(void **state) {
  static engram_source_vtable_t no_replica;
  ctx_t *c;
  no_replica = engram_source_cache;
  no_replica.flags &= ~(unsigned)ENGRAM_SOURCE_REPLICA;
  c = world(&no_replica, NULL, &engram_source_cache, NULL, NULL);
  result_t r = {0};
  engram_opts_t t = on("t"), u = on("c");
  (void)state;
  assert_int_equal(s_store(c, "k", "\"stale\"", &u, &r), 0); /* an old copy in the upper tier */
  assert_int_equal(s_store(c, "k", "\"fresh\"", &t, &r), 0);
  assert_tier(&r, 0, "c", "invalidated", "ENGRAM_ENOTSUP");
  assert_int_equal(s_retrieve(c, "k", &u, &r), ENGRAM_ENOTFOUND);
  assert_int_equal(s_retrieve(c, "k", &t, &r), 0);
  assert_string_equal(result_item(&r, 0, "value")->valuestring, "fresh");
  assert_int_equal(s_retrieve(c, "k", &u, &r), ENGRAM_ENOTFOUND); /* no repair into it either */
  result_reset(&r);
  world_end(c);
}

static void delete_and_clear_reach_every_tier(void **state) {
  ctx_t *c = world(&engram_source_cache, NULL, &engram_source_sqlite, sqlite_mem, NULL);
  result_t r = {0};
  engram_opts_t t = on("t"), cc = on("c"), d = on("d"), all = {0};
  (void)state;
  assert_int_equal(s_store(c, "k", "1", &t, &r), 0);
  assert_int_equal(s_delete(c, "k", &t, &r), 0);
  assert_int_equal((int)r.count, 1);
  assert_tier(&r, 0, "c", "deleted", "ENGRAM_OK");
  assert_tier(&r, 1, "d", "deleted", "ENGRAM_OK");
  assert_int_equal(s_retrieve(c, "k", &cc, &r), ENGRAM_ENOTFOUND);
  assert_int_equal(s_retrieve(c, "k", &d, &r), ENGRAM_ENOTFOUND);
  assert_int_equal(s_delete(c, "k", &t, &r), 0);
  assert_int_equal((int)r.count, 0);
  /* A copy only in the upper tier is deleted too. */
  assert_int_equal(s_store(c, "only-up", "1", &cc, &r), 0);
  assert_int_equal(s_delete(c, "only-up", &t, &r), 0);
  assert_int_equal(s_retrieve(c, "only-up", &cc, &r), ENGRAM_ENOTFOUND);
  /* clear */
  assert_int_equal(s_store(c, "a", "1", &t, &r), 0);
  assert_int_equal(s_store(c, "b", "2", &t, &r), 0);
  all.source = "t";
  all.flags = ENGRAM_OPT_CONFIRM;
  assert_int_equal(s_clear(c, &all, &r), 0);
  assert_tier(&r, 0, "c", "cleared", "ENGRAM_OK");
  assert_tier(&r, 1, "d", "cleared", "ENGRAM_OK");
  assert_int_equal(s_retrieve(c, "a", &cc, &r), ENGRAM_ENOTFOUND);
  assert_int_equal(s_retrieve(c, "b", &d, &r), ENGRAM_ENOTFOUND);
  result_reset(&r);
  world_end(c);
}

#if ENGRAM_WITH_POSTGRES
/* Into PostgreSQL (over a cache): it takes replicas too (a real server, started once). */
static void read_repair_into_postgres(void **state) {
  char *pg_opts;
  (void)state;
  if (pg_server_start() != 0) fail_msg("cannot start PostgreSQL");
  pg_opts = conf_source_postgres.options();
  read_repair_into(&engram_source_postgres, pg_opts, &engram_source_cache, NULL);
  engram_free(pg_opts);
}
#endif

#if ENGRAM_WITH_REDIS
extern const conf_source_t conf_source_redis; /* redis_server.c */

/* Into Redis (over a cache): its batch store script writes replicas too (a real server, started once). */
static void read_repair_into_redis(void **state) {
  char *opts;
  (void)state;
  if (redis_server_start(0) <= 0) fail_msg("cannot start redis-server");
  opts = conf_source_redis.options();
  read_repair_into(&engram_source_redis, opts, &engram_source_cache, NULL);
  engram_free(opts);
}
#endif

/* An upper tier that fails everything (a probe): reads pass over it; a store or delete that cannot even drop its
 * copy fails, saying so, although the durable tier has the write. */
static void failing_upper_tier_is_reported(void **state) {
  ctx_t *c = world(&probe_source, "{\"fail_calls\": true}", &engram_source_cache, NULL, NULL);
  result_t r = {0};
  engram_opts_t t = on("t"), d = on("d");
  (void)state;
  assert_int_equal(s_store(c, "k", "1", &t, &r), ENGRAM_EBACKEND);
  assert_non_null(strstr(r.message, "tier 'c' may still hold an old copy"));
  assert_tier(&r, 0, "c", "stale", "ENGRAM_EBACKEND");
  assert_tier(&r, 1, "d", "stored", "ENGRAM_OK");
  assert_int_equal(s_retrieve(c, "k", &d, &r), 0); /* the durable tier has it */
  assert_int_equal(s_retrieve(c, "k", &t, &r), 0); /* the failing tier is passed over */
  assert_int_equal(result_item(&r, 0, "value")->valueint, 1);
  assert_int_equal(s_delete(c, "k", &t, &r), ENGRAM_EBACKEND);
  assert_tier(&r, 0, "c", "failed", "ENGRAM_EBACKEND");
  assert_tier(&r, 1, "d", "deleted", "ENGRAM_OK");
  assert_int_equal(s_retrieve(c, "k", &d, &r), ENGRAM_ENOTFOUND);
  assert_int_equal(s_info(c, &t, &r), 0);
  assert_true(info_num(r.info, "tier_read_errors") >= 1);
  assert_true(info_num(r.info, "invalidation_failures") >= 2);
  result_reset(&r);
  world_end(c);
}

/* Runs the loop until retrieving key from source gives ENGRAM_ENOTFOUND (30 s at most). */
static void wait_until_missing(ctx_t *c, const char *source, const char *key) {
  result_t r = {0};
  engram_opts_t o = on(source);
  uint64_t end = uv_now(&c->loop) + 30000;
  while (s_retrieve(c, key, &o, &r) != ENGRAM_ENOTFOUND) {
    if (uv_now(&c->loop) > end) fail_msg("%s still holds %s after 30 s", source, key);
    run_for(c, 5);
  }
  result_reset(&r);
}

/* The durable tier does not answer before the deadline: the write may still happen there, so the upper copy is
 * dropped (after the caller had its ENGRAM_ETIMEDOUT). */
static void durable_timeout_drops_upper_copy(void **state) {
  ctx_t *c = world(&engram_source_cache, NULL, &probe_source, "{\"hold\": true}", NULL);
  result_t r = {0};
  engram_opts_t t = on("t"), cc = on("c");
  (void)state;
  probe_reset();
  assert_int_equal(s_store(c, "k", "\"old\"", &cc, &r), 0);
  t.deadline_ms = 50;
  assert_int_equal(s_store(c, "k", "\"new\"", &t, &r), ENGRAM_ETIMEDOUT);
  wait_until_missing(c, "c", "k");
  result_reset(&r);
  world_end(c);
}

/* A durable tier that holds every store until late_release, and only then reads its value and metadata (as an
 * asynchronous backend may, e.g. once a connection is back) — what the tiered source's durable call borrows from
 * the caller's request (ENGRAM_CALL_BORROW_VALUE) instead of copying. It takes the metadata into its reply, as
 * SQLite and Redis do: from a borrowed call that must hand it a copy of its own. Home loop, like the test. */
#define LATE_MAX 8
typedef struct {
  engram_request_t *held[LATE_MAX];
  size_t n;
} late_t;

static late_t *late_now;
static int late_held; /* stores the late tier holds now (late_now->n), for wait_for */

static void late_open(engram_source_t *src, const cJSON *options) {
  (void)options;
  late_now = engram_source_state(src);
  engram_source_opened(src, 0, NULL);
}

static void late_close(engram_source_t *src) {
  late_t *l = engram_source_state(src);
  size_t i;
  for (i = 0; i < l->n; i++) engram_request_complete(l->held[i], ENGRAM_ECANCELED);
  l->n = 0;
  late_held = 0;
  late_now = NULL;
  engram_source_closed(src);
}

static void late_any(engram_source_t *src, engram_request_t *req) {
  late_t *l = engram_source_state(src);
  if (req->op == ENGRAM_OP_STORE && l->n < LATE_MAX) {
    l->held[l->n++] = req;
    late_held = (int)l->n;
    return;
  }
  if (req->op == ENGRAM_OP_RETRIEVE) engram_request_fail_not_found(req, NULL);
  else engram_request_complete(req, 0);
}

/* Completes every held store now: prints each one's value and metadata into values[i] / metas[i] (freed by the
 * caller), takes the metadata into the reply and answers 0 with version 1. Returns how many. */
static size_t late_release(char **values, char **metas) {
  size_t i, n = late_now ? late_now->n : 0;
  for (i = 0; i < n; i++) {
    engram_request_t *req = late_now->held[i];
    engram_item_t it;
    values[i] = cJSON_PrintUnformatted(req->value); /* a use after free, under ASan, if nothing held it */
    metas[i] = req->metadata ? cJSON_PrintUnformatted(req->metadata) : NULL;
    memset(&it, 0, sizeof it);
    it.key = req->key;
    it.ns = req->ns;
    it.version = 1;
    it.metadata = engram_request_take_metadata(req);
    engram_reply_add(req, &it, ENGRAM_REPLY_OWN_METADATA);
    engram_request_complete(req, 0);
  }
  if (late_now) late_now->n = 0;
  late_held = 0;
  return n;
}

static const engram_source_vtable_t late_source = {
    .version = ENGRAM_SOURCE_VTABLE_VERSION,
    .name = "late",
    .instance_size = sizeof(late_t),
    .flags = ENGRAM_SOURCE_REPLICA,
    .open = late_open,
    .close = late_close,
    .store = late_any,
    .retrieve = late_any,
    .search = late_any,
    .del = late_any,
    .list_keys = late_any,
};

/* The durable call borrows the caller's value and metadata. A deadline answers it (and the caller) while the
 * durable tier still holds the store; the tier reads the value afterwards — the caller's request must still be
 * alive then (ASan would report a use after free), and the value unchanged. Then the same store in time: the tier
 * answers 0, the value is taken back for the cache tier's copy, and the tier's own take of the metadata got a copy
 * (else the metadata would be freed twice). */
static void borrowed_value_outlives_a_deadline(void **state) {
  ctx_t *c = world(&engram_source_cache, NULL, &late_source, NULL, NULL);
  result_t r = {0};
  engram_opts_t t = on("t"), cc = on("c"), tr = on("t");
  char *values[LATE_MAX], *metas[LATE_MAX];
  char big[4096 + 16];
  cJSON *meta = J("{\"who\": \"caller\", \"n\": [1, 2, 3]}"), *v2 = J("{\"x\": 1}");
  (void)state;
  memset(big, 'v', sizeof big);
  big[0] = '"';
  big[4096] = '"';
  big[4097] = '\0';
  t.metadata = meta;
  t.deadline_ms = 50;
  assert_int_equal(s_store(c, "k", big, &t, &r), ENGRAM_ETIMEDOUT);
  assert_int_equal(s_retrieve(c, "k", &cc, &r), ENGRAM_ENOTFOUND); /* no copy of a write that may not happen */
  /* A later tiered call on "k" runs only once the store's has ended (calls on one key run one at a time): then the
   * store's request is gone unless the durable call holds it. */
  assert_int_equal(s_retrieve(c, "k", &tr, &r), ENGRAM_ENOTFOUND);
  assert_int_equal((int)late_release(values, metas), 1);
  assert_string_equal(values[0], big);
  assert_non_null(metas[0]);
  assert_string_equal(metas[0], "{\"who\":\"caller\",\"n\":[1,2,3]}");
  free(values[0]);
  free(metas[0]);
  /* In time: the store succeeds and the cache tier gets the value back from the caller's request. */
  t.deadline_ms = 0;
  result_reset(&r);
  assert_int_equal(engram_store(c->mgr, "k2", v2, &t, capture_cb, &r), 0);
  wait_for(c, &late_held, 1, 30000); /* the durable tier holds the store */
  assert_int_equal(r.calls, 0);     /* and has not answered it */
  assert_int_equal((int)late_release(values, metas), 1);
  wait_for(c, &r.calls, 1, 30000);
  assert_int_equal(r.status, 0);
  assert_string_equal(values[0], "{\"x\":1}");
  free(values[0]);
  free(metas[0]);
  assert_tier(&r, 0, "c", "copied", "ENGRAM_OK");
  assert_int_equal(s_retrieve(c, "k2", &cc, &r), 0);
  assert_int_equal(result_item(&r, 0, "value")->child->valueint, 1);
  assert_string_equal(cJSON_GetObjectItem(result_item(&r, 0, "metadata"), "who")->valuestring, "caller");
  cJSON_Delete(meta);
  cJSON_Delete(v2);
  result_reset(&r);
  world_end(c);
}

/* A copy into the cache tier is written at once through the write-now service (include/engram/source.h) when
 * nothing waits at the cache and its completion would do nothing but answer: it must be the durable item exactly.
 * With max_items_per_namespace on the cache tier the service refuses (the eviction runs on a call's completion), the
 * copies go as calls, and the namespace stays within the limit. */
static void copies_written_now_keep_the_tiers_rules(void **state) {
  ctx_t *c;
  result_t r = {0};
  engram_opts_t t = on("t"), cc = on("c");
  engram_query_t q = ENGRAM_QUERY_INIT;
  (void)state;
  c = world(&engram_source_cache, NULL, &engram_source_sqlite, sqlite_mem, NULL);
  assert_int_equal(s_store(c, "k", "{\"a\": [1, \"x\"], \"b\": null}", &t, &r), 0);
  assert_tier(&r, 0, "c", "copied", "ENGRAM_OK");
  assert_tier(&r, 1, "d", "stored", "ENGRAM_OK");
  assert_same_item(c, "c", "d", "k");
  assert_int_equal(s_store(c, "k", "2", &t, &r), 0); /* over the copy: the new version replaces it */
  assert_same_item(c, "c", "d", "k");
  result_reset(&r);
  world_end(c);
  c = world(&engram_source_cache, "{\"max_items_per_namespace\": 2}", &engram_source_sqlite, sqlite_mem, NULL);
  assert_int_equal(s_store(c, "k1", "1", &t, &r), 0);
  assert_int_equal(s_store(c, "k2", "2", &t, &r), 0);
  assert_int_equal(s_store(c, "k3", "3", &t, &r), 0);
  assert_tier(&r, 0, "c", "copied", "ENGRAM_OK");
  assert_int_equal(s_count(c, &q, &cc, &r), 0);
  assert_int_equal((int)r.count, 2);
  result_reset(&r);
  world_end(c);
}

/* ---- search, count, list_keys on the configured tier ---- */

static void queries_go_to_the_search_tier(void **state) {
  ctx_t *c;
  result_t r = {0};
  engram_opts_t t = on("t"), d = on("d");
  engram_query_t q = ENGRAM_QUERY_INIT;
  (void)state;
  q.pattern = "item*";
  /* Default: the last tier. */
  c = world(&engram_source_cache, NULL, &engram_source_cache, NULL, NULL);
  assert_int_equal(s_store(c, "item-both", "1", &t, &r), 0);
  assert_int_equal(s_store(c, "item-durable", "2", &d, &r), 0);
  assert_int_equal(s_search(c, &q, &t, &r), 0);
  assert_int_equal((int)r.n_items, 2);
  assert_string_equal(result_item(&r, 0, "source")->valuestring, "t");
  assert_int_equal(s_count(c, &q, &t, &r), 0);
  assert_int_equal((int)r.count, 2);
  assert_int_equal(s_list(c, "item*", 10, NULL, &t, &r), 0);
  assert_int_equal((int)r.n_items, 2);
  world_end(c);
  /* search_tier: the cache, which holds only what went through the tiered source. */
  c = world(&engram_source_cache, NULL, &engram_source_cache, NULL,
            "{\"tiers\": [\"c\", \"d\"], \"search_tier\": \"c\"}");
  assert_int_equal(s_store(c, "item-both", "1", &t, &r), 0);
  assert_int_equal(s_store(c, "item-durable", "2", &d, &r), 0);
  assert_int_equal(s_search(c, &q, &t, &r), 0);
  assert_int_equal((int)r.n_items, 1);
  assert_string_equal(result_key(&r, 0), "item-both");
  assert_int_equal(s_count(c, &q, &t, &r), 0);
  assert_int_equal((int)r.count, 1);
  assert_int_equal(s_list(c, "item*", 10, NULL, &t, &r), 0);
  assert_int_equal((int)r.n_items, 1);
  assert_int_equal(s_info(c, &t, &r), 0);
  assert_string_equal(cJSON_GetObjectItem(r.info, "search_tier")->valuestring, "c");
  result_reset(&r);
  world_end(c);
}

/* A search's mode, fusion and alpha reach the search tier: a vector tier answers hybrid searches exactly as it
 * answers them itself; a cache search tier (text ranking only) refuses them with ENGRAM_ENOTSUP naming the tier. */
static void search_modes_go_to_the_search_tier(void **state) {
  static const char *const docs[][2] = {{"a", "\"the cat sat on the mat\""}, {"b", "\"dogs chase the cat\""},
                                        {"c", "\"a quiet mat by the door\""}, {"d", "\"rain on the roof\""}};
  static const int modes[] = {ENGRAM_MODE_VECTOR, ENGRAM_MODE_HYBRID};
  ctx_t *c;
  result_t r = {0}, rd = {0};
  engram_opts_t t = on("t"), d = on("d");
  engram_query_t q = ENGRAM_QUERY_INIT;
  size_t i, m;
  (void)state;
  c = world(&engram_source_cache, NULL, &engram_source_vector, "{\"dimension\": 64}", NULL);
  for (i = 0; i < sizeof docs / sizeof docs[0]; i++) assert_int_equal(s_store(c, docs[i][0], docs[i][1], &t, &r), 0);
  q.text = "cat mat";
  q.limit = 10;
  for (m = 0; m < sizeof modes / sizeof modes[0]; m++) {
    q.mode = modes[m];
    q.fusion = m == 0 ? ENGRAM_FUSION_RRF : ENGRAM_FUSION_WEIGHTED;
    q.alpha = 0.7;
    assert_int_equal(s_search(c, &q, &t, &r), 0);
    assert_int_equal(s_search(c, &q, &d, &rd), 0);
    assert_true(r.n_items >= 2);
    assert_int_equal((int)r.n_items, (int)rd.n_items);
    for (i = 0; i < r.n_items; i++) {
      assert_string_equal(result_key(&r, i), result_key(&rd, i));
      assert_true(cJSON_Compare(result_item(&r, i, "score"), result_item(&rd, i, "score"), 1));
      assert_string_equal(result_item(&r, i, "source")->valuestring, "t");
    }
  }
  /* A different alpha reaches the tier too: the weighted scores follow it. */
  q.mode = ENGRAM_MODE_HYBRID;
  q.fusion = ENGRAM_FUSION_WEIGHTED;
  q.alpha = 0.0; /* text score only */
  assert_int_equal(s_search(c, &q, &t, &r), 0);
  assert_int_equal(s_search(c, &q, &d, &rd), 0);
  assert_int_equal((int)r.n_items, (int)rd.n_items);
  for (i = 0; i < r.n_items; i++)
    assert_true(cJSON_Compare(result_item(&r, i, "score"), result_item(&rd, i, "score"), 1));
  result_reset(&r);
  result_reset(&rd);
  world_end(c);
  /* The cache as the search tier: vector and hybrid are refused, naming the tier; text still answers. */
  c = world(&engram_source_cache, NULL, &engram_source_vector, "{\"dimension\": 64}",
            "{\"tiers\": [\"c\", \"d\"], \"search_tier\": \"c\"}");
  for (i = 0; i < sizeof docs / sizeof docs[0]; i++) assert_int_equal(s_store(c, docs[i][0], docs[i][1], &t, &r), 0);
  for (m = 0; m < sizeof modes / sizeof modes[0]; m++) {
    q.mode = modes[m];
    q.fusion = ENGRAM_FUSION_RRF;
    q.alpha = 0;
    assert_int_equal(s_search(c, &q, &t, &r), ENGRAM_ENOTSUP);
    if (strstr(r.message, "tier 'c'") == NULL || strstr(r.message, "query.mode") == NULL ||
        strstr(r.message, "(cache)") == NULL)
      fail_msg("unclear refusal: %s", r.message);
  }
  q.mode = ENGRAM_MODE_TEXT;
  assert_int_equal(s_search(c, &q, &t, &r), 0);
  assert_true(r.n_items >= 2);
  result_reset(&r);
  world_end(c);
}

/* ---- batches ---- */

static void batches_go_through_every_tier(void **state) {
  ctx_t *c = world(&engram_source_cache, NULL, &engram_source_sqlite, sqlite_mem, NULL);
  result_t r = {0};
  engram_opts_t t = on("t"), d = on("d");
  engram_entry_t e[3];
  const char *keys[] = {"b0", "b1", "b2", "missing"};
  cJSON *v = J("{\"x\": 1}");
  int i;
  (void)state;
  memset(e, 0, sizeof e);
  for (i = 0; i < 3; i++) {
    e[i].key = keys[i];
    e[i].value = v;
  }
  assert_int_equal(engram_store_many(c->mgr, e, 3, &t, capture_cb, &r), 0);
  wait_for(c, &r.calls, 1, 30000);
  assert_int_equal(r.status, 0);
  assert_int_equal((int)r.count, 3);
  for (i = 0; i < 3; i++) assert_same_item(c, "c", "d", keys[i]);
  /* b3 only in the durable tier: retrieve_many repairs it into the cache. */
  assert_int_equal(s_store(c, "b3", "3", &d, &r), 0);
  keys[3] = "b3";
  result_reset(&r);
  assert_int_equal(engram_retrieve_many(c->mgr, keys, 4, &t, capture_cb, &r), 0);
  wait_for(c, &r.calls, 1, 30000);
  assert_int_equal(r.status, 0);
  assert_int_equal((int)r.count, 4);
  assert_same_item(c, "c", "d", "b3");
  result_reset(&r);
  assert_int_equal(engram_delete_many(c->mgr, keys, 4, &t, capture_cb, &r), 0);
  wait_for(c, &r.calls, 1, 30000);
  assert_int_equal(r.status, 0);
  for (i = 0; i < 4; i++) {
    engram_opts_t cc = on("c");
    assert_int_equal(s_retrieve(c, keys[i], &cc, &r), ENGRAM_ENOTFOUND);
    assert_int_equal(s_retrieve(c, keys[i], &d, &r), ENGRAM_ENOTFOUND);
  }
  cJSON_Delete(v);
  result_reset(&r);
  world_end(c);
}

/* ---- many calls on a few keys, none awaited before the next: the tiers end equal ---- */

#define N_CALLS 600
static void interleaved_calls_leave_tiers_equal(void **state) {
  ctx_t *c = world(&engram_source_cache, NULL, &engram_source_sqlite, sqlite_mem, NULL);
  static result_t rs[N_CALLS];
  result_t r = {0};
  engram_opts_t t = on("t"), cc = on("c"), d = on("d"), all = {0};
  const char *keys[] = {"k0", "k1", "k2", "k3", "k4"};
  cJSON *v = cJSON_CreateNumber(0);
  int i, rc;
  (void)state;
  memset(rs, 0, sizeof rs);
  all.source = "t";
  all.ns = "";
  for (i = 0; i < N_CALLS; i++) {
    const char *k = keys[(i * 7) % 5];
    switch (i % 7) {
      case 0: case 3: case 5:
        cJSON_SetNumberValue(v, i);
        rc = engram_store(c->mgr, k, v, &t, capture_cb, &rs[i]);
        break;
      case 1: case 4: rc = engram_retrieve(c->mgr, k, &t, capture_cb, &rs[i]); break;
      case 2: rc = engram_delete(c->mgr, k, &t, capture_cb, &rs[i]); break;
      default: rc = i % 100 == 6 ? engram_clear(c->mgr, &all, capture_cb, &rs[i])
                                 : engram_exists(c->mgr, k, &t, capture_cb, &rs[i]);
    }
    assert_int_equal(rc, 0);
  }
  for (i = 0; i < N_CALLS; i++) {
    wait_for(c, &rs[i].calls, 1, 60000);
    if (rs[i].status != 0 && rs[i].status != ENGRAM_ENOTFOUND)
      fail_msg("call %d: %s (%s)", i, engram_err_name(rs[i].status), rs[i].message);
  }
  run_barrier(c);
  for (i = 0; i < N_CALLS; i++) {
    assert_int_equal(rs[i].calls, 1);
    result_reset(&rs[i]);
  }
  /* Each key: absent from the cache, or there with exactly the durable tier's item. */
  for (i = 0; i < 5; i++) {
    int in_c = s_retrieve(c, keys[i], &cc, &r) == 0;
    if (in_c) assert_same_item(c, "c", "d", keys[i]);
    else assert_true(r.status == ENGRAM_ENOTFOUND);
    (void)d;
  }
  cJSON_Delete(v);
  result_reset(&r);
  world_end(c);
}

/* ---- a long queue on one hot key ---- */

/* 3,000 reads of one key that only the durable (SQLite, asynchronous) tier holds, all sent at once: the first
 * goes to SQLite, the rest wait for the key; then each is served by the cache at once. They start one after
 * another from a loop, not by nesting: started recursively (before start_ready), this case crashed with a 1 MiB
 * stack (ulimit -s 1024); it now passes with 256 KiB. */
#define N_HOT 3000
static void hot_key_queue_runs_flat(void **state) {
  ctx_t *c = world(&engram_source_cache, NULL, &engram_source_sqlite, sqlite_mem, NULL);
  static result_t rs[N_HOT];
  result_t r = {0};
  engram_opts_t t = on("t"), d = on("d");
  int i;
  (void)state;
  memset(rs, 0, sizeof rs);
  assert_int_equal(s_store(c, "hot", "\"v\"", &d, &r), 0);
  for (i = 0; i < N_HOT; i++) assert_int_equal(engram_retrieve(c->mgr, "hot", &t, capture_cb, &rs[i]), 0);
  for (i = 0; i < N_HOT; i++) {
    wait_for(c, &rs[i].calls, 1, 60000);
    if (rs[i].status != 0) fail_msg("read %d: %s (%s)", i, engram_err_name(rs[i].status), rs[i].message);
  }
  run_barrier(c);
  for (i = 0; i < N_HOT; i++) {
    assert_int_equal(rs[i].calls, 1);
    result_reset(&rs[i]);
  }
  assert_int_equal(s_info(c, &t, &r), 0);
  assert_int_equal((int)cJSON_GetArrayItem(cJSON_GetObjectItem(r.info, "read_hits"), 1)->valuedouble, 1);
  assert_int_equal((int)cJSON_GetArrayItem(cJSON_GetObjectItem(r.info, "read_hits"), 0)->valuedouble, N_HOT - 1);
  result_reset(&r);
  world_end(c);
}

/* ---- reads answered now by the cache tier (engram_source_read_now) ---- */

static double reads_now(ctx_t *c) {
  result_t r = {0};
  engram_opts_t t = on("t");
  double n;
  assert_int_equal(s_info(c, &t, &r), 0);
  n = info_num(r.info, "reads_now");
  result_reset(&r);
  return n;
}

/* A hit in the cache tier is read there at once, with the durable tier's version; a read sent while a store of
 * the same key is under way waits for it (it must see the new value, not the cache's old copy) and is not read
 * now; a miss in the cache goes on to SQLite and repairs the cache, after which the key is read now; exists and
 * retrieve_many (the core's emulation, through the tiered retrieve) are read now too. */
static void hot_reads_are_read_now_in_order(void **state) {
  ctx_t *c = world(&engram_source_cache, NULL, &engram_source_sqlite, sqlite_mem, NULL);
  result_t r = {0}, rs = {0}, rr = {0};
  engram_opts_t t = on("t"), d = on("d"), plain = {0};
  cJSON *v2 = cJSON_CreateNumber(2);
  const char *keys[] = {"k", "absent"};
  double v_d;
  (void)state;
  assert_int_equal(s_store(c, "k", "1", &t, &r), 0);
  assert_int_equal(reads_now(c), 0);
  assert_int_equal(s_retrieve(c, "k", &t, &r), 0);
  assert_int_equal(result_item(&r, 0, "value")->valueint, 1);
  assert_int_equal(reads_now(c), 1);
  assert_same_item(c, "t", "d", "k"); /* version, timestamps, expiry and metadata as the durable tier has them */
  assert_int_equal(reads_now(c), 2);
  plain.source = "t";
  assert_int_equal(s_retrieve(c, "k", &plain, &r), 0);
  assert_null(result_item(&r, 0, "metadata"));
  assert_int_equal(reads_now(c), 3);
  /* A store in flight (SQLite answers from its own thread), then a read of the key before its answer. */
  assert_int_equal(engram_store(c->mgr, "k", v2, &t, capture_cb, &rs), 0);
  assert_int_equal(engram_retrieve(c->mgr, "k", &t, capture_cb, &rr), 0);
  wait_for(c, &rs.calls, 1, 30000);
  wait_for(c, &rr.calls, 1, 30000);
  assert_int_equal(rs.status, 0);
  assert_int_equal(rr.status, 0);
  assert_int_equal(result_item(&rr, 0, "value")->valueint, 2);
  assert_int_equal(reads_now(c), 3);
  /* Only in the durable tier: read there, copied up, then read now. */
  assert_int_equal(s_store(c, "m", "5", &d, &r), 0);
  v_d = num(&r, "version");
  assert_int_equal(s_retrieve(c, "m", &t, &r), 0);
  assert_int_equal(reads_now(c), 3);
  assert_int_equal(s_retrieve(c, "m", &t, &r), 0);
  assert_int_equal(num(&r, "version"), v_d);
  assert_int_equal(reads_now(c), 4);
  assert_int_equal(s_exists(c, "k", &t, &r), 0);
  assert_int_equal(r.count, 1);
  assert_int_equal(reads_now(c), 5);
  result_reset(&r);
  assert_int_equal(engram_retrieve_many(c->mgr, keys, 2, &t, capture_cb, &r), 0);
  wait_for(c, &r.calls, 1, 30000);
  assert_int_equal(r.status, 0);
  assert_int_equal(r.count, 1);
  assert_int_equal(reads_now(c), 6); /* "k" read now; "absent" missed in the cache and in SQLite */
  assert_int_equal(s_retrieve(c, "absent", &t, &r), ENGRAM_ENOTFOUND);
  cJSON_Delete(v2);
  result_reset(&r);
  result_reset(&rs);
  result_reset(&rr);
  world_end(c);
}

/* ---- a tier removed under the tiered source ---- */

static void removed_tier_fails_calls_once(void **state) {
  ctx_t *c = world(&engram_source_cache, NULL, &engram_source_sqlite, sqlite_mem, NULL);
  result_t r = {0}, rs[50];
  engram_opts_t t = on("t");
  cJSON *v = J("1");
  int i, ok = 0;
  (void)state;
  memset(rs, 0, sizeof rs);
  for (i = 0; i < 50; i++)
    assert_int_equal(i % 2 ? engram_retrieve(c->mgr, "k", &t, capture_cb, &rs[i])
                           : engram_store(c->mgr, "k", v, &t, capture_cb, &rs[i]),
                     0);
  assert_int_equal(engram_manager_remove_source(c->mgr, "d", capture_cb, &r), 0);
  wait_for(c, &r.calls, 1, 30000);
  assert_int_equal(r.status, 0);
  for (i = 0; i < 50; i++) {
    wait_for(c, &rs[i].calls, 1, 30000);
    ok += rs[i].status == 0;
    if (rs[i].status != 0 && rs[i].status != ENGRAM_ENOTFOUND && rs[i].status != ENGRAM_ECANCELED &&
        rs[i].status != ENGRAM_EUNKNOWN_SOURCE)
      fail_msg("call %d: %s (%s)", i, engram_err_name(rs[i].status), rs[i].message);
  }
  /* After the removal: a store fails, naming the missing tier, and info says the source is down. */
  assert_int_equal(s_store(c, "k2", "1", &t, &r), ENGRAM_EUNKNOWN_SOURCE);
  assert_non_null(strstr(r.message, "'d'"));
  assert_int_equal(s_info(c, &t, &r), 0);
  assert_string_equal(cJSON_GetObjectItem(r.info, "health")->valuestring, "down");
  /* A source of that name added again: the tiered source works again and says so. */
  add_ok(c, "d", &engram_source_cache, NULL);
  assert_int_equal(s_store(c, "k2", "1", &t, &r), 0);
  assert_int_equal(s_info(c, &t, &r), 0);
  assert_string_equal(cJSON_GetObjectItem(r.info, "health")->valuestring, "connected");
  run_barrier(c);
  for (i = 0; i < 50; i++) {
    assert_int_equal(rs[i].calls, 1);
    result_reset(&rs[i]);
  }
  (void)ok;
  cJSON_Delete(v);
  result_reset(&r);
  world_end(c);
}

/* ---- a manager on its own thread, replies through a completion queue polled by this thread ---- */

static atomic_int cq_added, cq_calls, cq_failures, cq_wrong_thread;
static uv_thread_t cq_poller;

static void cq_on_added(int status, const engram_reply_t *reply, void *ud) {
  (void)ud;
  if (status != 0) fprintf(stderr, "add: %s\n", reply->message);
  atomic_fetch_add(&cq_added, status == 0 ? 1 : 1000);
}

static void cq_on_reply(int status, const engram_reply_t *reply, void *ud) {
  uv_thread_t self = uv_thread_self();
  (void)reply;
  (void)ud;
  if (!uv_thread_equal(&self, &cq_poller)) atomic_fetch_add(&cq_wrong_thread, 1);
  if (status != 0 && status != ENGRAM_ENOTFOUND) atomic_fetch_add(&cq_failures, 1);
  atomic_fetch_add(&cq_calls, 1);
}

/* Waits (polling the queue) until *counter reaches want; 30 s at most. */
static void cq_wait(engram_cq_t *cq, atomic_int *counter, int want) {
  int i;
  for (i = 0; i < 30000 && atomic_load(counter) < want; i++) {
    if (cq != NULL) engram_cq_poll(cq, 0);
    sleep_ms(1);
  }
  if (atomic_load(counter) < want) fail_msg("waited 30 s for %d (have %d)", want, atomic_load(counter));
}

static void own_thread_manager_and_completion_queue(void **state) {
  engram_manager_t *mgr;
  engram_cq_t *cq;
  engram_opts_t o = {0};
  cJSON *v = cJSON_CreateNumber(1);
  char key[32];
  int i, n = 2000;
  (void)state;
  atomic_store(&cq_added, 0);
  atomic_store(&cq_calls, 0);
  atomic_store(&cq_failures, 0);
  atomic_store(&cq_wrong_thread, 0);
  cq_poller = uv_thread_self();
  assert_int_equal(engram_manager_new(&mgr, NULL, NULL), 0);
  assert_int_equal(engram_cq_new(&cq, NULL), 0);
  assert_int_equal(engram_manager_add_source(mgr, "c", &engram_source_cache, NULL, NULL, 0, cq_on_added, NULL), 0);
  assert_int_equal(engram_manager_add_source(mgr, "d", &engram_source_sqlite, sqlite_mem, NULL, 0, cq_on_added, NULL), 0);
  cq_wait(NULL, &cq_added, 2);
  assert_int_equal(engram_manager_add_source(mgr, "t", &engram_source_tiered, "{\"tiers\": [\"c\", \"d\"]}", NULL, 1,
                                             cq_on_added, NULL),
                   0);
  cq_wait(NULL, &cq_added, 3);
  assert_int_equal(atomic_load(&cq_added), 3);
  o.cq = cq;
  for (i = 0; i < n; i++) {
    snprintf(key, sizeof key, "k%d", i % 50);
    if (i % 2 == 0) assert_int_equal(engram_store(mgr, key, v, &o, cq_on_reply, NULL), 0);
    else assert_int_equal(engram_retrieve(mgr, key, &o, cq_on_reply, NULL), 0);
  }
  cq_wait(cq, &cq_calls, n);
  assert_int_equal(atomic_load(&cq_failures), 0);
  assert_int_equal(atomic_load(&cq_wrong_thread), 0);
  /* Calls pending at shutdown end (success or ECANCELED) and wait in the queue, once each. */
  for (i = 0; i < 100; i++) assert_int_equal(engram_store(mgr, "late", v, &o, cq_on_reply, NULL), 0);
  assert_int_equal(engram_manager_shutdown(mgr), 0);
  engram_cq_poll(cq, 0);
  assert_int_equal(atomic_load(&cq_calls), n + 100);
  assert_int_equal(atomic_load(&cq_wrong_thread), 0);
  engram_cq_free(cq);
  cJSON_Delete(v);
}

/* ---- configuration ---- */

static void bad_configurations_are_refused(void **state) {
  ctx_t c;
  result_t r = {0};
  (void)state;
  ctx_init(&c, NULL);
  add_ok(&c, "cache", &engram_source_cache, NULL);
  /* Refused before the call returns (the options alone are wrong). */
  assert_int_equal(engram_manager_add_source(c.mgr, "t", &engram_source_tiered, "{\"tiers\": []}", NULL, 0, capture_cb, &r),
                   ENGRAM_EINVAL);
  assert_non_null(strstr(engram_last_error(), "tiers: empty"));
  assert_int_equal(engram_manager_add_source(c.mgr, "t", &engram_source_tiered, "{}", NULL, 0, capture_cb, &r),
                   ENGRAM_EINVAL);
  assert_non_null(strstr(engram_last_error(), "tiers: missing"));
  assert_int_equal(engram_manager_add_source(c.mgr, "t", &engram_source_tiered, "{\"tiers\": \"cache\"}", NULL, 0,
                                             capture_cb, &r),
                   ENGRAM_EINVAL);
  assert_non_null(strstr(engram_last_error(), "tiers: must be an array"));
  assert_int_equal(engram_manager_add_source(c.mgr, "t", &engram_source_tiered, "{\"tiers\": [\"cache\", \"cache\"]}",
                                             NULL, 0, capture_cb, &r),
                   ENGRAM_EINVAL);
  assert_non_null(strstr(engram_last_error(), "tiers[1]: \"cache\" is already tiers[0]"));
  assert_int_equal(engram_manager_add_source(c.mgr, "t", &engram_source_tiered, "{\"tiers\": [\"bad name!\"]}", NULL,
                                             0, capture_cb, &r),
                   ENGRAM_EINVAL);
  assert_non_null(strstr(engram_last_error(), "tiers[0]"));
  assert_int_equal(engram_manager_add_source(c.mgr, "t", &engram_source_tiered,
                                             "{\"tiers\": [\"cache\"], \"search_tier\": \"other\"}", NULL, 0,
                                             capture_cb, &r),
                   ENGRAM_EINVAL);
  assert_non_null(strstr(engram_last_error(), "search_tier: \"other\" is not one of the tiers"));
  assert_int_equal(engram_manager_add_source(c.mgr, "t", &engram_source_tiered, "{\"tiers\": [\"cache\"], \"tier\": 1}",
                                             NULL, 0, capture_cb, &r),
                   ENGRAM_EINVAL);
  assert_non_null(strstr(engram_last_error(), "unknown option \"tier\""));
  assert_int_equal(engram_manager_add_source(c.mgr, "t", &engram_source_tiered,
                                             "{\"tiers\": [\"cache\"], \"coherence\": \"always\"}", NULL, 0, capture_cb, &r),
                   ENGRAM_EINVAL);
  assert_non_null(strstr(engram_last_error(), "coherence: must be \"auto\", \"notify\" or \"off\""));
  /* coherence "notify" needs a durable tier with an invalidation channel (the cache has none). */
  add_ok(&c, "cache2", &engram_source_cache, NULL);
  assert_int_equal(add(&c, "t", &engram_source_tiered, "{\"tiers\": [\"cache\", \"cache2\"], \"coherence\": \"notify\"}", &r),
                   ENGRAM_EINVAL);
  assert_non_null(strstr(r.message, "coherence: \"notify\" needs a durable tier with an invalidation channel"));
  assert_non_null(strstr(r.message, "tiers[1] \"cache2\" (cache) has none"));
  result_reset(&r);
  assert_int_equal(engram_manager_remove_source(c.mgr, "cache2", capture_cb, &r), 0);
  wait_for(&c, &r.calls, 1, 30000);
  assert_int_equal(r.status, 0);
  result_reset(&r);
  /* Refused when the source opens (the manager's sources decide): an unknown tier, and the source itself. */
  assert_int_equal(add(&c, "t", &engram_source_tiered, "{\"tiers\": [\"cache\", \"nowhere\"]}", &r), ENGRAM_EINVAL);
  assert_non_null(strstr(r.message, "tiers[1]: no source named \"nowhere\""));
  assert_int_equal(add(&c, "t", &engram_source_tiered, "{\"tiers\": [\"t\", \"cache\"]}", &r), ENGRAM_EINVAL);
  assert_non_null(strstr(r.message, "tiers[0]: \"t\" names this tiered source itself"));
  /* A tiered source as a tier (tiers do not nest: no cycle can form, even by removing and re-adding). */
  add_ok(&c, "t1", &engram_source_tiered, "{\"tiers\": [\"cache\"]}");
  assert_int_equal(add(&c, "t", &engram_source_tiered, "{\"tiers\": [\"t1\"]}", &r), ENGRAM_EINVAL);
  assert_non_null(strstr(r.message, "tiers[0]: \"t1\" is itself a tiered source"));
  result_reset(&r);
  assert_int_equal(engram_manager_remove_source(c.mgr, "t1", capture_cb, &r), 0);
  wait_for(&c, &r.calls, 1, 30000);
  assert_int_equal(r.status, 0);
  /* None of the refused ones was added. */
  result_reset(&r);
  assert_int_equal(engram_manager_list_sources(c.mgr, NULL, capture_cb, &r), 0);
  wait_for(&c, &r.calls, 1, 30000);
  assert_int_equal(cJSON_GetArraySize(r.info), 1);
  result_reset(&r);
  ctx_close(&c);
}

/* The example, from JSON configuration. */
static void configured_from_json(void **state) {
  ctx_t c;
  result_t r = {0};
  engram_opts_t o = {0};
  (void)state;
  ctx_init(&c, NULL);
  assert_int_equal(engram_manager_configure(c.mgr,
                                            "{\"sources\": ["
                                            "{\"name\": \"cache\", \"type\": \"cache\"},"
                                            "{\"name\": \"persistent\", \"type\": \"sqlite\", \"options\": {\"path\": \":memory:\"}},"
                                            "{\"name\": \"memory\", \"type\": \"tiered\", \"default\": true,"
                                            " \"options\": {\"tiers\": [\"cache\", \"persistent\"]}}]}",
                                            capture_cb, &r),
                   0);
  wait_for(&c, &r.calls, 1, 30000);
  if (r.status != 0) fail_msg("configure: %s (%s)", engram_err_name(r.status), r.message);
  assert_int_equal(s_store(&c, "k", "\"v\"", NULL, &r), 0); /* the default source: memory */
  assert_string_equal(r.source, "memory");
  o.source = "persistent";
  assert_int_equal(s_retrieve(&c, "k", &o, &r), 0);
  o.source = "cache";
  assert_int_equal(s_retrieve(&c, "k", &o, &r), 0);
  result_reset(&r);
  /* A tiered source naming a source not yet added, in JSON: the add fails naming it. */
  assert_int_equal(engram_manager_configure(c.mgr,
                                            "[{\"name\": \"m2\", \"type\": \"tiered\", \"options\": {\"tiers\": [\"later\"]}}]",
                                            capture_cb, &r),
                   0);
  wait_for(&c, &r.calls, 1, 30000);
  assert_int_equal(r.status, ENGRAM_EINVAL);
  assert_non_null(strstr(r.message, "no source named \"later\""));
  result_reset(&r);
  ctx_close(&c);
}

/* ---- allocation failures ---- */

/* The failing-allocator loop (tests/support/failing_alloc.c) over a configuration with a tiered default source:
 * every allocation of configure, the tiered source's open, a store (durable write, copy up) and a retrieve,
 * and close fails once in turn; each call ends once with success or ENGRAM_ENOMEM, and nothing leaks. */
static void tiered_configure_scenario(void *unused) {
  (void)unused;
  failing_alloc_configure("{\"sources\": ["
                          "{\"name\": \"c\", \"type\": \"cache\"},"
                          "{\"name\": \"d\", \"type\": \"sqlite\", \"options\": {\"path\": \":memory:\"}},"
                          "{\"name\": \"t\", \"type\": \"tiered\", \"options\": {\"tiers\": [\"c\", \"d\"]}}]}",
                          "t");
}

/* Success, ENGRAM_ENOMEM or ENGRAM_ENOTFOUND — from the call, or from exactly one callback. */
static void expect_ok_or_nomem(ctx_t *c, int rc, result_t *r, const char *what) {
  if (rc == ENGRAM_ENOMEM || rc == ENGRAM_EUNKNOWN_SOURCE) return; /* refused at once (unknown: its add failed) */
  if (rc != 0) fail_msg("%s: returned %s (%s)", what, engram_err_name(rc), engram_last_error());
  wait_for(c, &r->calls, 1, 10000);
  if (r->calls != 1) fail_msg("%s: %d callbacks", what, r->calls);
  if (r->status != 0 && r->status != ENGRAM_ENOMEM && r->status != ENGRAM_ENOTFOUND)
    fail_msg("%s (failing allocation #%ld): callback %s (%s)", what, failing_alloc_point(), engram_err_name(r->status),
             r->message);
}

static int add_one(const cJSON *current, cJSON **next, void *ud) {
  (void)ud;
  *next = cJSON_CreateNumber(cJSON_IsNumber(current) ? current->valuedouble + 1 : 1);
  return *next ? 0 : ENGRAM_ENOMEM;
}

/* A read's answer: a hit (status 0 with an item) always carries its value — a value that could not be copied out
 * of the tier's reply ends the read with ENGRAM_ENOMEM instead. */
static int hit_without_value;
static void check_hit_cb(int status, const engram_reply_t *reply, void *ud) {
  if (status == 0 && reply->n_items > 0 && reply->items[0].status == 0 && reply->items[0].value == NULL)
    hit_without_value = 1;
  capture_cb(status, reply, ud);
}

/* Every operation through tiered(cache, cache) under the failing allocator. */
static void tiered_every_op_scenario(void *unused) {
  ctx_t c;
  result_t r = {0};
  engram_opts_t o = {0};
  engram_query_t q = ENGRAM_QUERY_INIT;
  engram_entry_t e[2];
  const char *keys[] = {"a", "b", "k"};
  cJSON *v = cJSON_CreateObject(), *meta = cJSON_CreateObject();
  int rc, added;
  (void)unused;
  memset(&c, 0, sizeof c);
  assert_int_equal(uv_loop_init(&c.loop), 0);
  while ((rc = engram_manager_new(&c.mgr, &c.loop, NULL)) == ENGRAM_ENOMEM) {
  }
  assert_int_equal(rc, 0);
#define STEP(call, what)                                                                                        \
  do {                                                                                                         \
    result_reset(&r);                                                                                          \
    expect_ok_or_nomem(&c, (call), &r, what);                                                                  \
  } while (0)
  STEP(engram_manager_add_source(c.mgr, "c", &engram_source_cache, NULL, NULL, 0, capture_cb, &r), "add c");
  added = r.calls == 1 && r.status == 0;
  STEP(engram_manager_add_source(c.mgr, "d", &engram_source_cache, NULL, NULL, 0, capture_cb, &r), "add d");
  added = added && r.calls == 1 && r.status == 0;
  if (added) /* (without its tiers it would rightly fail EINVAL: test_tiered's configuration cases check that) */
    STEP(engram_manager_add_source(c.mgr, "t", &engram_source_tiered, "{\"tiers\": [\"c\", \"d\"]}", NULL, 1,
                                   capture_cb, &r),
         "add t");
  added = added && r.calls == 1 && r.status == 0;
  if (added && v != NULL && meta != NULL && cJSON_AddStringToObject(v, "text", "hello tiered world") != NULL &&
      cJSON_AddStringToObject(meta, "tag", "x") != NULL) {
    o.source = "t";
    o.metadata = meta;
    o.flags = ENGRAM_OPT_TTL | ENGRAM_OPT_INCLUDE_METADATA;
    o.ttl_ms = 600000;
    STEP(engram_store(c.mgr, "k", v, &o, capture_cb, &r), "store");
    STEP(engram_store(c.mgr, "k", v, &o, capture_cb, &r), "store again");
    o.source = "d";
    STEP(engram_store(c.mgr, "only-d", v, &o, capture_cb, &r), "store in d");
    o.source = "t";
    hit_without_value = 0;
    STEP(engram_retrieve(c.mgr, "only-d", &o, check_hit_cb, &r), "retrieve with repair");
    STEP(engram_retrieve(c.mgr, "k", &o, check_hit_cb, &r), "retrieve");
    if (hit_without_value) fail_msg("allocation #%ld: a tiered hit answered without its value", failing_alloc_point());
    q.text = "hello";
    STEP(engram_search(c.mgr, &q, &o, capture_cb, &r), "search");
    q.text = NULL;
    q.pattern = "k*";
    STEP(engram_count(c.mgr, &q, &o, capture_cb, &r), "count");
    STEP(engram_list_keys(c.mgr, NULL, 10, NULL, &o, capture_cb, &r), "list_keys");
    STEP(engram_exists(c.mgr, "k", &o, capture_cb, &r), "exists");
    STEP(engram_update(c.mgr, "n", add_one, NULL, &o, capture_cb, &r), "update");
    memset(e, 0, sizeof e);
    e[0].key = "a";
    e[0].value = v;
    e[1].key = "b";
    e[1].value = v;
    STEP(engram_store_many(c.mgr, e, 2, &o, capture_cb, &r), "store_many");
    STEP(engram_retrieve_many(c.mgr, keys, 3, &o, capture_cb, &r), "retrieve_many");
    STEP(engram_delete_many(c.mgr, keys, 2, &o, capture_cb, &r), "delete_many");
    STEP(engram_delete(c.mgr, "k", &o, capture_cb, &r), "delete");
    STEP(engram_info(c.mgr, &o, capture_cb, &r), "info");
    o.ns = "";
    STEP(engram_clear(c.mgr, &o, capture_cb, &r), "clear namespace");
    o.ns = NULL;
    o.flags = ENGRAM_OPT_CONFIRM;
    STEP(engram_clear(c.mgr, &o, capture_cb, &r), "clear all");
  }
#undef STEP
  cJSON_Delete(v);
  cJSON_Delete(meta);
  result_reset(&r);
  while ((rc = engram_manager_close(c.mgr, capture_cb, &r)) == ENGRAM_ENOMEM) {
  }
  assert_int_equal(rc, 0);
  wait_for(&c, &r.calls, 1, 10000);
  result_reset(&r);
  assert_int_equal(uv_run(&c.loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&c.loop), 0);
  if (harness_strays != 0) fail_msg("%d stray callbacks", harness_strays);
}

static void allocation_failure_loop_every_op(void **state) {
  long points;
  (void)state;
  points = failing_alloc_loop(tiered_every_op_scenario, NULL);
  printf("  tiered(cache, cache), every operation: every one of %ld allocations failed once\n", points);
  assert_true(getenv("ENGRAM_ALLOC_ONLY") || points > 200);
}

static void allocation_failure_loop(void **state) {
  long points;
  (void)state;
  points = failing_alloc_loop(tiered_configure_scenario, NULL);
  printf("  configure (cache, sqlite, tiered): every one of %ld allocations failed once\n", points);
  assert_true(getenv("ENGRAM_ALLOC_ONLY") || points > 50);
}

int main(void) {
  const struct CMUnitTest cases[] = {
      cmocka_unit_test(read_repair_copies_version_and_ttl),
#if ENGRAM_WITH_POSTGRES
      cmocka_unit_test(read_repair_into_postgres),
#endif
#if ENGRAM_WITH_REDIS
      cmocka_unit_test(read_repair_into_redis),
#endif
      cmocka_unit_test(retrieve_without_metadata_flag),
      cmocka_unit_test(store_writes_every_tier_with_one_version),
      cmocka_unit_test(failed_upper_copy_is_invalidated),
      cmocka_unit_test(upper_tier_without_replicas_is_invalidated),
      cmocka_unit_test(copies_written_now_keep_the_tiers_rules),
      cmocka_unit_test(delete_and_clear_reach_every_tier),
      cmocka_unit_test(failing_upper_tier_is_reported),
      cmocka_unit_test(durable_timeout_drops_upper_copy),
      cmocka_unit_test(borrowed_value_outlives_a_deadline),
      cmocka_unit_test(queries_go_to_the_search_tier),
      cmocka_unit_test(search_modes_go_to_the_search_tier),
      cmocka_unit_test(batches_go_through_every_tier),
      cmocka_unit_test(interleaved_calls_leave_tiers_equal),
      cmocka_unit_test(hot_key_queue_runs_flat),
      cmocka_unit_test(hot_reads_are_read_now_in_order),
      cmocka_unit_test(removed_tier_fails_calls_once),
      cmocka_unit_test(own_thread_manager_and_completion_queue),
      cmocka_unit_test(bad_configurations_are_refused),
      cmocka_unit_test(configured_from_json),
      cmocka_unit_test(allocation_failure_loop),
      cmocka_unit_test(allocation_failure_loop_every_op),
  };
  return cmocka_run_group_tests(cases, NULL, NULL);
}
