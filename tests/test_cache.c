/*
 * test_cache.c — the cache's hash table beyond the conformance suite: tagged chain links (sources/cache.c,
 * link_t) across many incremental resizes, the one-time drop of tags that an allocator handing out addresses
 * above 2^48 would cause (forced here with engram__cache_untag_now, in the middle of a resize), overwrites,
 * deletes, expiry and LRU eviction on both sides of that drop. Every key is checked by value afterwards. And
 * the TTL sweep, which walks the table in slices. And the limit of an ordered search (ENGRAM_ORDER_MAX). And the
 * reply's value and metadata rebuilt in one block (cache_image.c, engram__cache_image_read_block; in the
 * request's reply room when it fits, else allocated): the same tree node for node as the one stored, and a tree of
 * the taker's own from engram_reply_take_value. And calls made inside callbacks, which find their source without
 * the manager's lock (ops.c): by name, and the default after it moved. And the new table of a doubling, which the
 * cache initialises bucket pair by bucket pair as it moves entries into it, never in one go (the new table's
 * resident pages counted with mincore, under an allocator that maps large blocks fresh and poisons small ones).
 * And where entries live: in the cache's slabs (cache_slab.c), a few blocks of the allocator for thousands of
 * entries, given back as the entries go (counted by a wrapping allocator). And a burst of calls on the home
 * loop, whose request blocks come from the thread's pool as a trickle's do (counted the same way).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "support/harness.h"

extern int engram__cache_untag_now;


static void add_cache(ctx_t *c, const char *options) {
  result_t r = {0};
  int rc = engram_manager_add_source(c->mgr, "mem", &engram_source_cache, options, NULL, 1, capture_cb, &r);
  assert_int_equal(rc, 0);
  wait_for(c, &r.calls, 1, 30000);
  assert_int_equal(r.status, 0);
  result_reset(&r);
}

static void store_i(ctx_t *c, int i, int v) {
  char key[32], val[32];
  result_t r = {0};
  snprintf(key, sizeof key, "k%d", i);
  snprintf(val, sizeof val, "{\"v\": %d}", v);
  assert_int_equal(s_store(c, key, val, NULL, &r), 0);
  result_reset(&r);
}

/* -1 when absent, else the stored v. */
static int retrieve_i(ctx_t *c, int i) {
  char key[32];
  result_t r = {0};
  int st, v = -1;
  snprintf(key, sizeof key, "k%d", i);
  st = s_retrieve(c, key, NULL, &r);
  if (st == 0) {
    const cJSON *val = result_item(&r, 0, "value");
    assert_non_null(val);
    v = cJSON_GetObjectItemCaseSensitive(val, "v")->valueint;
  } else {
    assert_int_equal(st, ENGRAM_ENOTFOUND);
  }
  result_reset(&r);
  return v;
}

static uint64_t count_all(ctx_t *c) {
  engram_query_t q;
  result_t r = {0};
  uint64_t n;
  memset(&q, 0, sizeof q);
  assert_int_equal(s_count(c, &q, NULL, &r), 0);
  n = r.count;
  result_reset(&r);
  return n;
}

/* 6,000 keys through several doublings; tags dropped (or never used) at key 3,000; overwrites and deletes on
 * both sides; every key checked. */
static void run_table(int untag_at) {
  ctx_t c;
  int i;
  result_t r = {0};
  ctx_init(&c, NULL);
  add_cache(&c, NULL);
  for (i = 0; i < 6000; i++) {
    if (i == untag_at) engram__cache_untag_now = 1;
    store_i(&c, i, i);
    engram__cache_untag_now = 0;
  }
  for (i = 0; i < 6000; i += 3) store_i(&c, i, i + 100000); /* overwrite in place */
  for (i = 1; i < 6000; i += 3) {
    char key[32];
    snprintf(key, sizeof key, "k%d", i);
    assert_int_equal(s_delete(&c, key, NULL, &r), 0);
    assert_int_equal(r.count, 1);
    result_reset(&r);
  }
  for (i = 0; i < 6000; i++) {
    int want = i % 3 == 0 ? i + 100000 : i % 3 == 1 ? -1 : i;
    assert_int_equal(retrieve_i(&c, i), want);
  }
  assert_int_equal(count_all(&c), 4000);
  assert_int_equal(retrieve_i(&c, 6000), -1);
  ctx_close(&c);
}

static void tagged_links_through_resizes(void **state) {
  (void)state;
  run_table(-1);
}

static void tags_dropped_mid_resize(void **state) {
  (void)state;
  /* 3,000 lies between the doublings at 2,048 and 4,096 entries, while the move from the previous table is
   * still in progress (it moves 4 buckets per operation). */
  run_table(2100);
}

/* LRU eviction finds the victim's link by address; it must work before and after the tags are dropped. */
static void eviction_across_untag(void **state) {
  ctx_t c;
  int i, present = 0;
  (void)state;
  ctx_init(&c, NULL);
  add_cache(&c, "{\"max_entries\": 500}");
  for (i = 0; i < 3000; i++) {
    if (i == 1200) engram__cache_untag_now = 1;
    store_i(&c, i, i);
    engram__cache_untag_now = 0;
  }
  assert_int_equal(count_all(&c), 500);
  for (i = 0; i < 3000; i++) {
    int v = retrieve_i(&c, i);
    if (i < 2500) assert_int_equal(v, -1); /* the least recently used went first */
    else assert_int_equal(v, i);
    present += v >= 0;
  }
  assert_int_equal(present, 500);
  ctx_close(&c);
}

/* A read or an overwrite makes an item the most recently used, so eviction takes the least recently used one,
 * by max_entries and by max_bytes (whose count includes the LRU links kept with each entry). */
static void eviction_follows_reads_and_writes(void **state) {
  ctx_t c;
  result_t r = {0};
  int i;
  (void)state;
  ctx_init(&c, NULL);
  add_cache(&c, "{\"max_entries\": 3}");
  for (i = 0; i < 3; i++) store_i(&c, i, i);   /* LRU order, newest first: 2 1 0 */
  assert_int_equal(retrieve_i(&c, 0), 0);      /* 0 2 1 */
  store_i(&c, 3, 3);                           /* 3 0 2; 1 evicted */
  assert_int_equal(retrieve_i(&c, 1), -1);
  store_i(&c, 2, 20);                          /* 2 3 0 */
  store_i(&c, 4, 4);                           /* 4 2 3; 0 evicted */
  assert_int_equal(retrieve_i(&c, 0), -1);
  assert_int_equal(retrieve_i(&c, 3), 3);      /* 3 4 2 */
  assert_int_equal(retrieve_i(&c, 2), 20);     /* 2 3 4 */
  assert_int_equal(retrieve_i(&c, 4), 4);      /* 4 2 3 */
  store_i(&c, 5, 5);                           /* 5 4 2; 3 evicted */
  assert_int_equal(retrieve_i(&c, 3), -1);
  assert_int_equal(count_all(&c), 3);
  ctx_close(&c);

  /* max_bytes: fill, then keep reading item 0 while storing more; it stays, the others go oldest first. */
  ctx_init(&c, NULL);
  add_cache(&c, "{\"max_bytes\": 4096}");
  for (i = 0; i < 200; i++) {
    store_i(&c, i, i);
    assert_int_equal(retrieve_i(&c, 0), 0);
  }
  assert_int_equal(s_info(&c, NULL, &r), 0);
  assert_true(cJSON_GetObjectItem(r.info, "bytes")->valuedouble <= 4096);
  assert_true(cJSON_GetObjectItem(r.info, "items")->valueint < 200);
  assert_true(cJSON_GetObjectItem(r.info, "items")->valueint > 10);
  result_reset(&r);
  assert_int_equal(retrieve_i(&c, 1), -1);
  assert_int_equal(retrieve_i(&c, 199), 199);
  ctx_close(&c);
}

/* Polls info until the cache holds `items` items and counted `expirations` expirations, or fails the test after
 * deadline_ms (a generous bound: the sweep needs a few of its 20 ms intervals). */
static void wait_items(ctx_t *c, int items, int expirations, int deadline_ms) {
  uint64_t start = uv_now(&c->loop);
  int have_items = -1, have_exp = -1;
  for (;;) {
    result_t r = {0};
    assert_int_equal(s_info(c, NULL, &r), 0);
    have_items = cJSON_GetObjectItem(r.info, "items")->valueint;
    have_exp = cJSON_GetObjectItem(r.info, "expirations")->valueint;
    result_reset(&r);
    if (have_items == items && have_exp == expirations) return;
    uv_update_time(&c->loop);
    if (uv_now(&c->loop) - start > (uint64_t)deadline_ms) break;
    run_for(c, 10); /* a polling interval, not a guess: the deadline above is the bound */
  }
  fail_msg("after %d ms: %d items and %d expirations, expected %d and %d", deadline_ms, have_items, have_exp, items,
           expirations);
}

/* Stores n keys, the first n_ttl of them with a 30 ms TTL, one call at a time, and nothing else. */
static void store_with_ttl(ctx_t *c, int n, int n_ttl) {
  result_t r = {0};
  engram_opts_t ttl = {0};
  cJSON *v = cJSON_CreateString("x");
  char key[32];
  int i;
  ttl.flags = ENGRAM_OPT_TTL;
  ttl.ttl_ms = 30;
  for (i = 0; i < n; i++) {
    snprintf(key, sizeof key, "k%d", i);
    assert_int_equal(engram_store(c->mgr, key, v, i < n_ttl ? &ttl : NULL, capture_cb, &r), 0);
    wait_for(c, &r.calls, 1, 10000);
    assert_int_equal(r.status, 0);
    result_reset(&r);
  }
  cJSON_Delete(v);
}

/* The TTL sweep walks the table in slices of 4,096 buckets: 20,000 expired entries over 32,768 buckets take
 * several slices, and every one of them must go, while the entries without TTL stay. Nobody reads after the
 * stores: only the sweep can free them. */
static void sweep_frees_everything_in_slices(void **state) {
  ctx_t c;
  (void)state;
  ctx_init(&c, NULL);
  add_cache(&c, "{\"sweep_interval_ms\": 20}");
  store_with_ttl(&c, 20500, 20000);
  wait_items(&c, 500, 20000, 30000);
  ctx_close(&c);
}

/* An idle cache in the middle of a resize: the 65th store starts doubling the 64-bucket table, and no call
 * follows to move the previous table's buckets. The sweep must move them itself and free all 65 (before the fix
 * they stayed forever: 65 items, 0 expirations). 16,385 keys leave a resize with thousands of unmoved buckets. */
static void sweep_frees_entries_of_an_idle_resize(void **state) {
  static const int sizes[] = {65, 16385};
  size_t i;
  (void)state;
  for (i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    ctx_t c;
    ctx_init(&c, NULL);
    add_cache(&c, "{\"sweep_interval_ms\": 20}");
    store_with_ttl(&c, sizes[i], sizes[i]);
    wait_items(&c, 0, sizes[i], 30000);
    ctx_close(&c);
  }
}

/* An ordered search or listing considers at most ENGRAM_ORDER_MAX matches (the core sorts them, order.c): one
 * more fails the call with ENGRAM_ETOOBIG, saying how to narrow it, and a narrower query in the same order
 * answers. The cache holds ENGRAM_ORDER_MAX + 1 items here. */
static void ordered_search_over_the_limit(void **state) {
  ctx_t c;
  result_t r = {0};
  engram_entry_t *e = calloc(ENGRAM_ORDER_MAX + 1, sizeof *e);
  char (*keys)[16] = calloc(ENGRAM_ORDER_MAX + 1, sizeof *keys);
  cJSON *v = J("1");
  engram_query_t q = ENGRAM_QUERY_INIT;
  engram_opts_t o = {0};
  size_t i;
  (void)state;
  assert_non_null(e);
  assert_non_null(keys);
  ctx_init(&c, NULL);
  add_cache(&c, NULL);
  for (i = 0; i <= ENGRAM_ORDER_MAX; i++) {
    snprintf(keys[i], sizeof keys[i], "o%06zu", i);
    e[i].key = keys[i];
    e[i].value = v;
  }
  assert_int_equal(engram_store_many(c.mgr, e, ENGRAM_ORDER_MAX, NULL, capture_cb, &r), 0);
  wait_for(&c, &r.calls, 1, 60000);
  assert_int_equal(r.status, 0);
  result_reset(&r);
  assert_int_equal(engram_store_many(c.mgr, e + ENGRAM_ORDER_MAX, 1, NULL, capture_cb, &r), 0);
  wait_for(&c, &r.calls, 1, 60000);
  assert_int_equal(r.status, 0);
  o.order_by = ENGRAM_ORDER_CREATED_AT;
  o.flags = ENGRAM_OPT_DESCENDING;
  assert_int_equal(s_search(&c, &q, &o, &r), ENGRAM_ETOOBIG);
  assert_non_null(strstr(r.message, "more than 100000 items match"));
  assert_int_equal(s_list(&c, NULL, 10, NULL, &o, &r), ENGRAM_ETOOBIG);
  q.pattern = "o00000*"; /* o000000..o000009 */
  assert_int_equal(s_search(&c, &q, &o, &r), 0);
  assert_int_equal(r.n_items, 10);
  o.order_by = ENGRAM_ORDER_KEY;
  assert_int_equal(s_search(&c, &q, &o, &r), 0);
  assert_string_equal(result_key(&r, 0), "o000009");
  result_reset(&r);
  cJSON_Delete(v);
  free(e);
  free(keys);
  ctx_close(&c);
}

/* ---- Replies in one block ---- */

typedef struct {
  int calls, status, checked, restructured;
  const cJSON *want_value, *want_meta;
} block_t;

/* Node for node: types (as cJSON masks them), member names, strings, numbers with cJSON's valueint, the
 * children's prev links (the first child's prev is the last). */
static int same_tree(const cJSON *a, const cJSON *b) {
  const cJSON *x, *y;
  if ((a->type & 0xFF) != (b->type & 0xFF)) return 0;
  if ((a->string == NULL) != (b->string == NULL) || (a->string && strcmp(a->string, b->string) != 0)) return 0;
  if (cJSON_IsString(a) && strcmp(a->valuestring, b->valuestring) != 0) return 0;
  if (cJSON_IsNumber(a) && (a->valuedouble != b->valuedouble || a->valueint != b->valueint)) return 0;
  for (x = a->child, y = b->child; x != NULL && y != NULL; x = x->next, y = y->next)
    if (!same_tree(x, y)) return 0;
  if (x != NULL || y != NULL) return 0;
  if (a->child != NULL) {
    for (x = a->child; x->next != NULL; x = x->next) {
    }
    if (a->child->prev != x) return 0;
  }
  return 1;
}

static void block_cb(int status, const engram_reply_t *reply, void *ud) {
  block_t *b = ud;
  if (++b->calls > 1) {
    harness_stray("block_cb");
    return;
  }
  b->status = status;
  if (status != 0 || reply->n_items != 1) return;
  b->checked = same_tree(reply->items[0].value, b->want_value) &&
               (b->want_meta == NULL ? reply->items[0].metadata == NULL
                                     : reply->items[0].metadata != NULL && same_tree(reply->items[0].metadata, b->want_meta));
  if (b->checked && !(cJSON_IsObject(b->want_value) && b->want_value->child != NULL)) {
    /* Any other value, one node included: the taken tree is the taker's to free, and the reply's stays readable
     * (a one-node value in the request's reply room, taken away as an ordinary node, would be a free() of a
     * pointer inside the request block). */
    cJSON *v = engram_reply_take_value(reply, 0);
    b->restructured = v != NULL && same_tree(v, b->want_value);
    cJSON_Delete(v);
    b->restructured = b->restructured && reply->items[0].value != NULL && same_tree(reply->items[0].value, b->want_value);
  }
  if (b->checked && cJSON_IsObject(b->want_value) && b->want_value->child != NULL) {
    /* Taken: the taker's own tree, which it may take apart (a node of the block freed on its own would be a
     * free() of a pointer inside the block: glibc aborts, ASan reports it). */
    cJSON *v = engram_reply_take_value(reply, 0), *first;
    if (v == NULL || (v->type & cJSON_IsReference)) return;
    first = cJSON_DetachItemViaPointer(v, v->child);
    cJSON_Delete(first);
    b->restructured = cJSON_AddStringToObject(v, "added", "after the take") != NULL;
    cJSON_Delete(v);
    /* the reply's own value is still there to read until the callback returns */
    b->restructured = b->restructured && reply->items[0].value != NULL && same_tree(reply->items[0].value, b->want_value);
  }
}

static void reply_values_in_one_block(void **state) {
  static const char *values[] = {
      "null", "true", "false", "0", "-7.25", "1e300", "-1e300", "2147483648", "\"\"", "\"short\"", "[]", "{}",
      "{\"text\": \"a memory the agent keeps\", \"n\": 1}",
      "{\"a\": [1, \"two\", null, true, false, {\"b\": {\"c\": []}}, [[], {}]], \"\": \"empty name\", "
      "\"utf8\": \"\\u00e9t\\u00e9 \\ud83d\\ude00\", \"deep\": {\"x\": {\"y\": {\"z\": 3}}}}",
  };
  ctx_t c;
  char longs[700], *text;
  size_t i;
  (void)state;
  memset(longs, 'L', sizeof longs - 1);
  longs[sizeof longs - 1] = '\0';
  ctx_init(&c, NULL);
  add_cache(&c, NULL);
  for (i = 0; i < sizeof values / sizeof values[0] + 1; i++) {
    cJSON *v, *meta = J("{\"tags\": [\"t1\", \"t2\"], \"n\": 42}");
    engram_opts_t o = {0};
    result_t r = {0};
    block_t b;
    char key[16];
    if (i < sizeof values / sizeof values[0]) {
      v = J(values[i]);
    } else { /* a string above 255 bytes (the image's 4-byte length), as a value and inside an object */
      v = cJSON_CreateObject();
      cJSON_AddStringToObject(v, "long", longs);
      cJSON_AddItemToObject(v, "copy", cJSON_CreateString(longs));
    }
    assert_non_null(v);
    snprintf(key, sizeof key, "b%zu", i);
    o.metadata = i % 2 ? meta : NULL;
    text = cJSON_PrintUnformatted(v);
    assert_int_equal(engram_store(c.mgr, key, v, &o, capture_cb, &r), 0);
    wait_for(&c, &r.calls, 1, 30000);
    assert_int_equal(r.status, 0);
    result_reset(&r);
    memset(&b, 0, sizeof b);
    b.want_value = v;
    b.want_meta = o.metadata;
    o.metadata = NULL;
    o.flags = ENGRAM_OPT_INCLUDE_METADATA;
    assert_int_equal(engram_retrieve(c.mgr, key, &o, block_cb, &b), 0);
    wait_for(&c, &b.calls, 1, 30000);
    assert_int_equal(b.status, 0);
    if (!b.checked) fail_msg("value %zu (%s): the reply's tree differs from the stored one", i, text);
    if (!b.restructured) fail_msg("value %zu (%s): the taken tree was not the taker's own", i, text);
    cJSON_free(text);
    cJSON_Delete(v);
    cJSON_Delete(meta);
  }
  ctx_close(&c);
}

/* ---- Calls made inside callbacks ---- */

/* A callback on the home loop submits its next call there, and that call finds its source without the table's
 * lock (ops.c, find_home): by name, and the default by the sources' is_default flags, which
 * engram_manager_set_default_source moves. Each step checks the value the step before it read. */
typedef struct {
  ctx_t *c;
  int step, calls, failed;
  char why[200];
} chain_t;

static void chain_cb(int status, const engram_reply_t *reply, void *ud);

/* The value step n's retrieve must read, and the source it names (NULL: the default). */
static const char *chain_want[] = {"from a", "from a", "from b", "from b", "from a"};
static const char *chain_source[] = {NULL, "a", NULL, "b", "a"};

static void chain_next(chain_t *ch) {
  engram_opts_t o = {0};
  int rc;
  if (ch->step == 2 && engram_manager_set_default_source(ch->c->mgr, "b") != 0) { /* from here the default is b */
    snprintf(ch->why, sizeof ch->why, "set_default_source: %s", engram_last_error());
    ch->failed = 1;
    return;
  }
  o.source = chain_source[ch->step];
  rc = engram_retrieve(ch->c->mgr, "k", &o, chain_cb, ch);
  if (rc != 0) {
    snprintf(ch->why, sizeof ch->why, "step %d: retrieve refused: %s", ch->step, engram_last_error());
    ch->failed = 1;
  }
}

static void chain_cb(int status, const engram_reply_t *reply, void *ud) {
  chain_t *ch = ud;
  const char *got;
  engram_opts_t o = {0};
  ch->calls++;
  if (status != 0 || reply->n_items != 1 || !cJSON_IsString(reply->items[0].value)) {
    snprintf(ch->why, sizeof ch->why, "step %d: status %d", ch->step, status);
    ch->failed = 1;
    return;
  }
  got = reply->items[0].value->valuestring;
  if (strcmp(got, chain_want[ch->step]) != 0) {
    snprintf(ch->why, sizeof ch->why, "step %d (source %s): read '%s', want '%s'", ch->step,
             chain_source[ch->step] ? chain_source[ch->step] : "default", got, chain_want[ch->step]);
    ch->failed = 1;
    return;
  }
  /* an unknown name is refused at once, from a callback as from anywhere, and calls back never */
  o.source = "nope";
  if (engram_retrieve(ch->c->mgr, "k", &o, chain_cb, ch) != ENGRAM_EUNKNOWN_SOURCE) {
    snprintf(ch->why, sizeof ch->why, "step %d: unknown source not refused", ch->step);
    ch->failed = 1;
    return;
  }
  if (++ch->step < (int)(sizeof chain_want / sizeof chain_want[0])) chain_next(ch);
}

static void calls_from_callbacks_find_their_source(void **state) {
  ctx_t c;
  chain_t ch;
  size_t i;
  const char *names[] = {"a", "b"};
  (void)state;
  ctx_init(&c, NULL);
  for (i = 0; i < 2; i++) {
    result_t r = {0};
    engram_opts_t o = {0};
    cJSON *v;
    char text[16];
    assert_int_equal(engram_manager_add_source(c.mgr, names[i], &engram_source_cache, NULL, NULL, i == 0, capture_cb, &r), 0);
    wait_for(&c, &r.calls, 1, 30000);
    assert_int_equal(r.status, 0);
    result_reset(&r);
    snprintf(text, sizeof text, "from %s", names[i]);
    v = cJSON_CreateString(text);
    o.source = names[i];
    assert_int_equal(engram_store(c.mgr, "k", v, &o, capture_cb, &r), 0);
    wait_for(&c, &r.calls, 1, 30000);
    assert_int_equal(r.status, 0);
    result_reset(&r);
    cJSON_Delete(v);
  }
  memset(&ch, 0, sizeof ch);
  ch.c = &c;
  chain_next(&ch); /* the first call from outside any callback (the locked path); the rest from callbacks */
  while (!ch.failed && ch.step < (int)(sizeof chain_want / sizeof chain_want[0])) wait_for(&c, &ch.calls, ch.calls + 1, 30000);
  if (ch.failed) fail_msg("%s", ch.why);
  assert_int_equal(ch.calls, (int)(sizeof chain_want / sizeof chain_want[0]));
  ctx_close(&c);
}

/* ---- Prefetched retrieves while the table changes ---- */

/* Retrieves submitted from a home-loop callback find their source without the table's lock and have their
 * buckets prefetched at submission (ops.c; cache.c, cache_prefetch), a thousand calls before they run. Between the
 * prefetch and the retrieve the table changes under it: stores queued with the retrieves double it (a resize moves
 * every bucket), deletes and overwrites change chains. Each callback submits a burst of 80 calls — retrieves of
 * existing keys mixed with stores of new keys, overwrites and deletes — and every retrieve must answer as the
 * calls before it in submission order left the key (calls to one source run in order). A prefetch that read the
 * table instead of only hinting at an address (an entry prefetch through the bucket was tried, docs/benchmarks.md)
 * reads it while it changes: under ASan, a bucket read outside the table fails this test (checked with one that
 * indexed the table with twice its mask: heap-use-after-free). */
#define PF_ROUNDS 50
#define PF_BURST 40

typedef struct {
  ctx_t *c;
  int round, pending, failed, retrieves;
  int model[PF_ROUNDS * PF_BURST + 1000]; /* key i's value as submitted so far, -1 = absent */
  char why[200];
} pf_t;

typedef struct {
  pf_t *p;
  int key, want; /* want: the value the retrieve must read, -1 = not found */
} pf_call_t;

static void pf_burst(pf_t *p);

static void pf_cb(int status, const engram_reply_t *reply, void *ud) {
  pf_call_t *call = ud;
  pf_t *p = call->p;
  if (call->want != -2 && !p->failed) { /* -2: a store or a delete, checked by status only */
    int got = -1;
    if (status == 0 && reply->n_items == 1 && reply->items[0].value != NULL)
      got = cJSON_GetObjectItemCaseSensitive(reply->items[0].value, "v")->valueint;
    else if (status != ENGRAM_ENOTFOUND)
      got = -3;
    if (got != call->want) {
      snprintf(p->why, sizeof p->why, "round %d: retrieve of k%d read %d, want %d (status %d)", p->round, call->key,
               got, call->want, status);
      p->failed = 1;
    }
    p->retrieves++;
  } else if (call->want == -2 && status != 0 && !p->failed) {
    snprintf(p->why, sizeof p->why, "round %d: write of k%d failed: %d", p->round, call->key, status);
    p->failed = 1;
  }
  free(call);
  if (--p->pending == 0 && ++p->round < PF_ROUNDS && !p->failed) pf_burst(p);
}

static void pf_submit(pf_t *p, int op, int key, int value) {
  pf_call_t *call = malloc(sizeof *call);
  char k[32];
  int rc;
  assert_non_null(call);
  call->p = p;
  call->key = key;
  call->want = -2;
  snprintf(k, sizeof k, "k%d", key);
  if (op == 0) {
    call->want = p->model[key];
    rc = engram_retrieve(p->c->mgr, k, NULL, pf_cb, call);
  } else if (op == 1) {
    cJSON *v = cJSON_CreateObject();
    cJSON_AddNumberToObject(v, "v", value);
    rc = engram_store(p->c->mgr, k, v, NULL, pf_cb, call);
    cJSON_Delete(v);
    p->model[key] = value;
  } else {
    rc = engram_delete(p->c->mgr, k, NULL, pf_cb, call);
    p->model[key] = -1;
  }
  if (rc != 0) {
    snprintf(p->why, sizeof p->why, "round %d: call on k%d refused: %s", p->round, key, engram_last_error());
    p->failed = 1;
    free(call);
    return;
  }
  p->pending++;
}

static void pf_burst(pf_t *p) {
  int i, base = 1000 + p->round * PF_BURST;
  p->pending++; /* held while the burst is submitted */
  for (i = 0; i < PF_BURST; i++) {
    int old = (p->round * 7 + i * 13) % (base - 1); /* a key stored before (or deleted since) */
    switch (i % 5) {
      case 0: pf_submit(p, 1, base + i, base + i); break;             /* a new key: the table grows */
      case 1: pf_submit(p, 2, old, 0); break;                         /* a delete */
      case 2: pf_submit(p, 1, old, p->round * 100000 + i); break;     /* an overwrite */
      default: pf_submit(p, 0, old, 0); break;                        /* a retrieve */
    }
    pf_submit(p, 0, (old * 3 + 1) % (base - 1), 0);                   /* and a retrieve each time */
  }
  if (--p->pending == 0 && ++p->round < PF_ROUNDS && !p->failed) pf_burst(p);
}

static void pf_start_cb(int status, const engram_reply_t *reply, void *ud) {
  pf_t *p = ud;
  (void)reply;
  if (status != 0) {
    snprintf(p->why, sizeof p->why, "first store: %d", status);
    p->failed = 1;
    return;
  }
  pf_burst(p); /* from a callback the home loop runs: the retrieves are prefetched */
}

static void prefetched_retrieves_while_the_table_changes(void **state) {
  ctx_t c;
  pf_t *p = calloc(1, sizeof *p);
  cJSON *v;
  int i;
  (void)state;
  assert_non_null(p);
  ctx_init(&c, NULL);
  add_cache(&c, NULL);
  for (i = 0; i < (int)(sizeof p->model / sizeof p->model[0]); i++) p->model[i] = -1;
  for (i = 1; i < 1000; i++) {
    store_i(&c, i, i);
    p->model[i] = i;
  }
  p->c = &c;
  v = cJSON_CreateObject();
  cJSON_AddNumberToObject(v, "v", 0);
  p->model[0] = 0;
  assert_int_equal(engram_store(c.mgr, "k0", v, NULL, pf_start_cb, p), 0);
  cJSON_Delete(v);
  while (!p->failed && p->round < PF_ROUNDS) wait_for(&c, &p->round, p->round + 1, 30000);
  if (p->failed) fail_msg("%s", p->why);
  assert_int_equal(p->retrieves, PF_ROUNDS * PF_BURST * 7 / 5); /* 2 retrieves in 5 slots, and one after each */
  for (i = 0; i < 1000 + PF_ROUNDS * PF_BURST; i++) assert_int_equal(retrieve_i(&c, i), p->model[i]);
  ctx_close(&c);
  free(p);
}

/* ---- The new table of a resize is initialised as it fills ---- */

/* An engram allocator for the test below: blocks of 256 KiB and more are fresh anonymous mappings (no page of
 * them is touched until the cache writes it, as glibc's large blocks usually are), remembered in big[] until
 * freed; smaller ones come from malloc and are filled with 0xA5, so that a bucket read before the cache
 * initialised it is a wild pointer (ASan and the checks by value catch it). Each block carries a 16-byte
 * header: its size, and whether it is a mapping. */
#define BIG_BLOCK (256u << 10)
#define N_BIG 16

static struct {
  char *p; /* the mapping; NULL when the slot is free */
  size_t len;
  int seen; /* its resident pages were counted already */
} big[N_BIG];

static void *fresh_malloc(size_t n) {
  size_t *p, i;
  if (n + 16 >= BIG_BLOCK) {
    p = mmap(NULL, n + 16, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    p[1] = 1;
    for (i = 0; i < N_BIG && big[i].p != NULL; i++) {
    }
    assert_true(i < N_BIG);
    big[i].p = (char *)p;
    big[i].len = n + 16;
    big[i].seen = 0;
  } else {
    if ((p = malloc(n + 16)) == NULL) return NULL;
    memset(p, 0xA5, n + 16);
    p[1] = 0;
  }
  p[0] = n;
  return p + 2;
}

static void fresh_free(void *q) {
  size_t *p = q, i;
  if (p == NULL) return;
  p -= 2;
  if (!p[1]) {
    free(p);
    return;
  }
  for (i = 0; i < N_BIG; i++)
    if (big[i].p == (char *)p) big[i].p = NULL;
  munmap(p, p[0] + 16);
}

static void *fresh_realloc(void *q, size_t n) {
  void *r;
  size_t old;
  if (q == NULL) return fresh_malloc(n);
  old = ((size_t *)q)[-2];
  if ((r = fresh_malloc(n)) == NULL) return NULL;
  memcpy(r, q, old < n ? old : n);
  fresh_free(q);
  return r;
}

static const engram_allocator_t fresh_alloc = {fresh_malloc, fresh_realloc, fresh_free};

/* The most resident pages (mincore) found in a large block allocated since the last look, or -1 when there is
 * none; *pages receives that block's size in pages. */
static long resident_in_new_blocks(long *pages) {
  long most = -1, page = sysconf(_SC_PAGESIZE);
  size_t i, j;
  for (i = 0; i < N_BIG; i++) {
    long n = 0, np;
    unsigned char *v;
    if (big[i].p == NULL || big[i].seen) continue;
    big[i].seen = 1;
    np = (long)((big[i].len + (size_t)page - 1) / (size_t)page);
    v = malloc((size_t)np);
    assert_non_null(v);
    assert_int_equal(mincore(big[i].p, big[i].len, v), 0);
    for (j = 0; j < (size_t)np; j++) n += v[j] & 1;
    free(v);
    if (n > most) {
      most = n;
      *pages = np;
    }
  }
  return most;
}

/* A store that starts a doubling touches only the buckets it moves, not the whole new table: 32,769 keys, one
 * store at a time, and after each store the resident pages of any large block it allocated. The 16,385th and
 * 32,769th stores double the table to 32,768 and 65,536 buckets (256 and 512 KiB: 64 and 128 pages of fresh
 * mappings). Zeroed at once, every page of the new table was resident after that store; now the store has
 * written the first two bucket pairs: the header's page, and the page holding the upper half's first pair. The
 * same allocator's poisoned small blocks run the table through the smaller doublings, with the tags dropped in
 * the middle of one (run_table), and the TTL sweep over a resize left half done on an idle cache (its slices
 * skip the new buckets not filled yet). */
static void doubling_touches_only_what_it_moves(void **state) {
  ctx_t c;
  long most = -1, pages = 0, at = -1;
  int i, doublings = 0;
  (void)state;
  assert_int_equal(engram_set_allocator(&fresh_alloc), 0);
  run_table(2100);
  ctx_init(&c, NULL);
  add_cache(&c, "{\"sweep_interval_ms\": 20}");
  store_with_ttl(&c, 4097, 4097); /* the 4,097th store starts doubling 4,096 buckets; nothing moves them after */
  wait_items(&c, 0, 4097, 30000);
  ctx_close(&c);

  ctx_init(&c, NULL);
  add_cache(&c, NULL);
  (void)resident_in_new_blocks(&pages);
  for (i = 0; i < 32769; i++) {
    long n, np = 0;
    store_i(&c, i, i);
    if ((n = resident_in_new_blocks(&np)) < 0) continue;
    doublings++;
    if (n > most) {
      most = n;
      pages = np;
      at = i;
    }
  }
  assert_int_equal(doublings, 2);
  if (most > 4)
    fail_msg("store %ld left %ld of the new table's %ld pages resident (the doubling touched all of it)", at, most,
             pages);
  for (i = 0; i < 32769; i += 97) assert_int_equal(retrieve_i(&c, i), i);
  assert_int_equal(count_all(&c), 32769);
  ctx_close(&c);
  assert_int_equal(engram_set_allocator(NULL), 0);
}

/* Blocks of the process's allocator alive now, counted by an allocator that wraps the C library's. */
static long live_blocks;
static long all_mallocs; /* blocks allocated so far (malloc, and realloc of NULL) */
static long big_mallocs; /* blocks of 16 KiB or more allocated so far (a slab after a class's first is 64 KiB) */
static void *count_malloc(size_t n) {
  void *p = malloc(n);
  if (p != NULL) __atomic_add_fetch(&live_blocks, 1, __ATOMIC_RELAXED);
  if (p != NULL && n >= 16384) __atomic_add_fetch(&big_mallocs, 1, __ATOMIC_RELAXED);
  if (p != NULL) __atomic_add_fetch(&all_mallocs, 1, __ATOMIC_RELAXED);
  return p;
}
static void *count_realloc(void *p, size_t n) {
  void *q = realloc(p, n);
  if (p == NULL && q != NULL) __atomic_add_fetch(&live_blocks, 1, __ATOMIC_RELAXED);
  if (p == NULL && q != NULL) __atomic_add_fetch(&all_mallocs, 1, __ATOMIC_RELAXED);
  return q;
}
static void count_free(void *p) {
  if (p != NULL) __atomic_sub_fetch(&live_blocks, 1, __ATOMIC_RELAXED);
  free(p);
}
static const engram_allocator_t counting_alloc = {count_malloc, count_realloc, count_free};

static void store_sized(ctx_t *c, int i, size_t len) {
  char key[32], *val = malloc(len + 32);
  result_t r = {0};
  assert_non_null(val);
  snprintf(key, sizeof key, "k%d", i);
  snprintf(val, len + 32, "{\"v\": %d, \"s\": \"%0*d\"}", i, (int)len, 0);
  assert_int_equal(s_store(c, key, val, NULL, &r), 0);
  result_reset(&r);
  free(val);
}

/* Deletes k<i>, which must be there. */
static void delete_i(ctx_t *c, int i) {
  char key[32];
  result_t r = {0};
  snprintf(key, sizeof key, "k%d", i);
  assert_int_equal(s_delete(c, key, NULL, &r), 0);
  assert_int_equal(r.count, 1);
  result_reset(&r);
}

/* The cache's entries live in slabs (cache_slab.c), not one allocator block each: a block per entry, with the
 * short-lived blocks of the calls around it, left the heap full of small holes that every later call's blocks
 * were carved from (docs/conversations.md, The heap a cache leaves). 6,000 entries of four sizes (two classes
 * apart, and one above the slabs' largest class) through overwrites with other sizes and deletes: the blocks
 * alive beyond the table's are a few dozen slabs, not 6,000; every key reads back its value; deleting every
 * entry gives the slabs back but the last of each class. */
static void entries_live_in_slabs(void **state) {
  static const size_t sizes[4] = {60, 300, 900, 20000};
  ctx_t c;
  long base, held, after;
  int i;
  (void)state;
  assert_int_equal(engram_set_allocator(&counting_alloc), 0);
  ctx_init(&c, NULL);
  add_cache(&c, NULL);
  store_sized(&c, -1, 10);
  base = __atomic_load_n(&live_blocks, __ATOMIC_RELAXED);
  for (i = 0; i < 6000; i++) store_sized(&c, i, i % 100 == 0 ? sizes[3] : sizes[i % 3]);
  for (i = 0; i < 6000; i += 4) store_sized(&c, i, sizes[(i + 1) % 3]); /* another class: its block moves */
  held = __atomic_load_n(&live_blocks, __ATOMIC_RELAXED) - base;
  /* the table's buckets (2 blocks mid-resize), 60 entries above the largest class, and slabs of ~64 KiB */
  if (held > 2 + 60 + 150) fail_msg("6,000 entries hold %ld blocks of the allocator (a block each: 6,000)", held);
  for (i = 0; i < 6000; i++) {
    char key[32];
    result_t r = {0};
    const cJSON *v;
    size_t want = i % 4 == 0 ? sizes[(i + 1) % 3] : i % 100 == 0 ? sizes[3] : sizes[i % 3];
    snprintf(key, sizeof key, "k%d", i);
    assert_int_equal(s_retrieve(&c, key, NULL, &r), 0);
    v = result_item(&r, 0, "value");
    assert_non_null(v);
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(v, "v")->valueint, i);
    assert_int_equal(strlen(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(v, "s"))), want);
    result_reset(&r);
  }
  for (i = 0; i < 6000; i++) delete_i(&c, i);
  after = __atomic_load_n(&live_blocks, __ATOMIC_RELAXED) - base;
  if (after > 2 + 4) fail_msg("with every entry deleted the cache still holds %ld blocks more than before", after);
  assert_int_equal(count_all(&c), 1);
  ctx_close(&c);
  assert_int_equal(engram_set_allocator(NULL), 0);
}

/* A cache whose item count goes back and forth across a slab's boundary (a store and an expiry or a delete in
 * balance) must not allocate and free a 64 KiB slab each time: the slab the delete empties is kept as its class's
 * spare, and the next store takes it. The entries are stored one by one until one of them opens a 64 KiB slab (a
 * class's second); then that entry is deleted and stored again 100 times: at most one more such allocation (100
 * when every empty slab but a class's last is freed). */
static void an_empty_slab_is_kept_as_a_spare(void **state) {
  ctx_t c;
  long before = 0;
  int i, opened = -1;
  (void)state;
  assert_int_equal(engram_set_allocator(&counting_alloc), 0);
  ctx_init(&c, NULL);
  add_cache(&c, NULL);
  for (i = 0; i < 1000 && opened < 0; i++) {
    before = __atomic_load_n(&big_mallocs, __ATOMIC_RELAXED);
    store_sized(&c, i, 60);
    if (__atomic_load_n(&big_mallocs, __ATOMIC_RELAXED) != before) opened = i;
  }
  if (opened < 0) fail_msg("1,000 entries of one size never opened a 64 KiB slab");
  before = __atomic_load_n(&big_mallocs, __ATOMIC_RELAXED);
  for (i = 0; i < 100; i++) {
    delete_i(&c, opened);
    store_sized(&c, opened, 60);
  }
  if (__atomic_load_n(&big_mallocs, __ATOMIC_RELAXED) - before > 1)
    fail_msg("100 deletes and stores across a slab's boundary allocated %ld slabs",
             __atomic_load_n(&big_mallocs, __ATOMIC_RELAXED) - before);
  for (i = 0; i <= opened; i++) assert_int_equal(retrieve_i(&c, i), i);
  ctx_close(&c);
  assert_int_equal(engram_set_allocator(NULL), 0);
}

static void count_cb(int status, const engram_reply_t *reply, void *ud) {
  int *n = ud;
  (void)reply;
  assert_int_equal(status, 0);
  (*n)++;
}

/* Overwrites of keys b0..b<n-1> submitted in bursts of `burst` calls, each burst submitted at once from the home
 * loop's thread outside any callback (as bench_cache's open loop does) and answered before the next; returns the
 * allocator's blocks allocated meanwhile. */
static long store_bursts(ctx_t *c, int n, int burst) {
  cJSON *v = cJSON_CreateString("a value of about forty bytes, copied per call");
  long before = __atomic_load_n(&all_mallocs, __ATOMIC_RELAXED);
  int i, j, done;
  char key[32];
  assert_non_null(v);
  for (i = 0; i < n; i += burst) {
    done = 0;
    for (j = i; j < i + burst && j < n; j++) {
      snprintf(key, sizeof key, "b%d", j);
      assert_int_equal(engram_store(c->mgr, key, v, NULL, count_cb, &done), 0);
    }
    wait_for(c, &done, j - i, 30000);
  }
  cJSON_Delete(v);
  return __atomic_load_n(&all_mallocs, __ATOMIC_RELAXED) - before;
}

/* A burst of 1,500 calls on the home loop takes its request blocks from the thread's pool (src/request/reqpool.c)
 * as calls made a hundred at a time do: the pool kept 512 blocks, so the 988 others went back to the allocator
 * at every burst, a cost that came exactly when calls queued up (docs/benchmarks.md, Cache p99 at 50 %). The same
 * 1,500 overwrites in one burst and in bursts of 100 allocate the same number of blocks, give or take a slab. */
static void a_burst_reuses_its_request_blocks(void **state) {
  ctx_t c;
  long one_burst, small_bursts;
  (void)state;
  assert_int_equal(engram_set_allocator(&counting_alloc), 0);
  ctx_init(&c, NULL);
  add_cache(&c, NULL);
  store_bursts(&c, 1500, 1500); /* the keys, then a burst that fills the pool */
  store_bursts(&c, 1500, 1500);
  one_burst = store_bursts(&c, 1500, 1500);
  small_bursts = store_bursts(&c, 1500, 100);
  if (one_burst > small_bursts + 50)
    fail_msg("1,500 overwrites in one burst allocated %ld blocks, in bursts of 100 %ld", one_burst, small_bursts);
  ctx_close(&c);
  engram_release_thread_cache();
  assert_int_equal(engram_set_allocator(NULL), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(tagged_links_through_resizes),
      cmocka_unit_test(tags_dropped_mid_resize),
      cmocka_unit_test(eviction_across_untag),
      cmocka_unit_test(eviction_follows_reads_and_writes),
      cmocka_unit_test(sweep_frees_everything_in_slices),
      cmocka_unit_test(sweep_frees_entries_of_an_idle_resize),
      cmocka_unit_test(ordered_search_over_the_limit),
      cmocka_unit_test(reply_values_in_one_block),
      cmocka_unit_test(calls_from_callbacks_find_their_source),
      cmocka_unit_test(prefetched_retrieves_while_the_table_changes),
      cmocka_unit_test(doubling_touches_only_what_it_moves),
      cmocka_unit_test(entries_live_in_slabs),
      cmocka_unit_test(an_empty_slab_is_kept_as_a_spare),
      cmocka_unit_test(a_burst_reuses_its_request_blocks),
  };
  return cmocka_run_group_tests_name("cache table", tests, NULL, NULL);
}
