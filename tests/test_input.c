/*
 * test_input.c — bad input gets a clear error and stores nothing: every public entry point refuses NULL
 * arguments, empty / oversized / non-UTF-8 keys and namespaces, negative TTLs, limits ≤ 0, unterminated
 * patterns, bad filters, bad vectors, unknown sources and malformed configuration, with a message that names
 * what was wrong, no callback, and no change to the source.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support/harness.h"

static int setup(void **state) {
  ctx_t *c = calloc(1, sizeof *c);
  ctx_init(c, NULL);
  ctx_add(c, conf_sources[0]);
  *state = c;
  return 0;
}

static int teardown(void **state) {
  ctx_t *c = *state;
  result_t r = {0};
  engram_query_t q = ENGRAM_QUERY_INIT;
  /* Nothing was stored by any refused call. */
  assert_int_equal(s_count(c, &q, NULL, &r), 0);
  assert_int_equal((int)r.count, 0);
  result_reset(&r);
  ctx_close(c);
  free(c);
  return 0;
}

#define REFUSED(call, code, needle)                                                                    \
  do {                                                                                                 \
    int rc_ = (call);                                                                                  \
    if (rc_ != (code)) fail_msg("%s returned %s, want %s", #call, engram_err_name(rc_), engram_err_name(code)); \
    if (strstr(engram_last_error(), (needle)) == NULL)                                                 \
      fail_msg("%s: message \"%s\" does not mention \"%s\"", #call, engram_last_error(), (needle));     \
  } while (0)

static void bad_keys_and_namespaces(void **state) {
  ctx_t *c = *state;
  result_t r = {0};
  cJSON *v = J("1");
  char long_key[1026], long_ns[258];
  engram_opts_t o = {0};
  memset(long_key, 'k', 1025);
  long_key[1025] = '\0';
  memset(long_ns, 'n', 257);
  long_ns[257] = '\0';
  REFUSED(engram_store(NULL, "k", v, NULL, capture_cb, &r), ENGRAM_EINVAL, "mgr");
  REFUSED(engram_store(c->mgr, NULL, v, NULL, capture_cb, &r), ENGRAM_EINVAL, "key: NULL");
  REFUSED(engram_store(c->mgr, "", v, NULL, capture_cb, &r), ENGRAM_EINVAL, "key: empty");
  REFUSED(engram_store(c->mgr, long_key, v, NULL, capture_cb, &r), ENGRAM_EINVAL, "1025 bytes");
  long_key[1024] = '\0'; /* 1,024 bytes is the limit itself */
  assert_int_equal(s_store(c, long_key, "1", NULL, &r), 0);
  assert_int_equal(s_delete(c, long_key, NULL, &r), 0);
  result_reset(&r);
  REFUSED(engram_store(c->mgr, "bad\xff", v, NULL, capture_cb, &r), ENGRAM_EINVAL, "UTF-8");
  REFUSED(engram_store(c->mgr, "\xc0\xaf", v, NULL, capture_cb, &r), ENGRAM_EINVAL, "UTF-8"); /* overlong */
  REFUSED(engram_store(c->mgr, "k", NULL, NULL, capture_cb, &r), ENGRAM_EINVAL, "value");
  REFUSED(engram_store(c->mgr, "k", v, NULL, NULL, &r), ENGRAM_EINVAL, "cb");
  o.ns = "ns\xfe";
  REFUSED(engram_store(c->mgr, "k", v, &o, capture_cb, &r), ENGRAM_EINVAL, "namespace");
  o.ns = long_ns;
  REFUSED(engram_store(c->mgr, "k", v, &o, capture_cb, &r), ENGRAM_EINVAL, "namespace");
  REFUSED(engram_retrieve(c->mgr, "", NULL, capture_cb, &r), ENGRAM_EINVAL, "key");
  REFUSED(engram_delete(c->mgr, NULL, NULL, capture_cb, &r), ENGRAM_EINVAL, "key");
  REFUSED(engram_exists(c->mgr, "\xff", NULL, capture_cb, &r), ENGRAM_EINVAL, "key");
  run_for(c, 5);
  assert_int_equal(r.calls, 0);
  cJSON_Delete(v);
}

static void bad_options(void **state) {
  ctx_t *c = *state;
  result_t r = {0};
  cJSON *v = J("1"), *arr = J("[1]");
  engram_opts_t o = {0};
  o.flags = ENGRAM_OPT_TTL;
  o.ttl_ms = -1;
  REFUSED(engram_store(c->mgr, "k", v, &o, capture_cb, &r), ENGRAM_EINVAL, "ttl_ms");
  memset(&o, 0, sizeof o);
  o.metadata = arr;
  REFUSED(engram_store(c->mgr, "k", v, &o, capture_cb, &r), ENGRAM_EINVAL, "metadata");
  memset(&o, 0, sizeof o);
  o.flags = 1u << 12;
  REFUSED(engram_store(c->mgr, "k", v, &o, capture_cb, &r), ENGRAM_EINVAL, "flags");
  memset(&o, 0, sizeof o);
  o.source = "";
  REFUSED(engram_store(c->mgr, "k", v, &o, capture_cb, &r), ENGRAM_EINVAL, "source");
  o.source = "no-such-source";
  REFUSED(engram_store(c->mgr, "k", v, &o, capture_cb, &r), ENGRAM_EUNKNOWN_SOURCE, "no-such-source");
  REFUSED(engram_clear(c->mgr, NULL, capture_cb, &r), ENGRAM_EINVAL, "CONFIRM");
  run_for(c, 5);
  assert_int_equal(r.calls, 0);
  cJSON_Delete(v);
  cJSON_Delete(arr);
}

static void bad_queries(void **state) {
  ctx_t *c = *state;
  result_t r = {0};
  engram_query_t q = ENGRAM_QUERY_INIT;
  cJSON *f;
  float vec[3] = {1, 2, 3};
  REFUSED(engram_search(c->mgr, NULL, NULL, capture_cb, &r), ENGRAM_EINVAL, "query");
  q.limit = 0;
  REFUSED(engram_search(c->mgr, &q, NULL, capture_cb, &r), ENGRAM_EINVAL, "limit");
  q.limit = -5;
  REFUSED(engram_search(c->mgr, &q, NULL, capture_cb, &r), ENGRAM_EINVAL, "limit");
  q.limit = 10;
  q.offset = -1;
  REFUSED(engram_search(c->mgr, &q, NULL, capture_cb, &r), ENGRAM_EINVAL, "offset");
  q.offset = 0;
  q.min_score = 1.5;
  REFUSED(engram_search(c->mgr, &q, NULL, capture_cb, &r), ENGRAM_EINVAL, "min_score");
  q.min_score = 0;
  q.pattern = "abc[def";
  REFUSED(engram_search(c->mgr, &q, NULL, capture_cb, &r), ENGRAM_EINVAL, "pattern");
  REFUSED(engram_list_keys(c->mgr, "abc[def", 10, NULL, NULL, capture_cb, &r), ENGRAM_EINVAL, "pattern");
  REFUSED(engram_list_keys(c->mgr, NULL, 0, NULL, NULL, capture_cb, &r), ENGRAM_EINVAL, "limit");
  REFUSED(engram_list_keys(c->mgr, NULL, -1, NULL, NULL, capture_cb, &r), ENGRAM_EINVAL, "limit");
  q.pattern = NULL;
  f = J("{\"age\": {\"$gt\": [1]}}");
  q.filter = f;
  REFUSED(engram_search(c->mgr, &q, NULL, capture_cb, &r), ENGRAM_EINVAL, "age");
  cJSON_Delete(f);
  f = J("{\"age\": {\"$regex\": \"x\"}}");
  q.filter = f;
  REFUSED(engram_count(c->mgr, &q, NULL, capture_cb, &r), ENGRAM_EINVAL, "$regex");
  cJSON_Delete(f);
  q.filter = NULL;
  vec[1] = NAN;
  q.vector = vec;
  q.dimension = 3;
  REFUSED(engram_search(c->mgr, &q, NULL, capture_cb, &r), ENGRAM_EINVAL, "vector[1]");
  vec[1] = INFINITY;
  REFUSED(engram_search(c->mgr, &q, NULL, capture_cb, &r), ENGRAM_EINVAL, "vector[1]");
  q.dimension = 0;
  REFUSED(engram_search(c->mgr, &q, NULL, capture_cb, &r), ENGRAM_EINVAL, "dimension");
  q.dimension = 70000;
  REFUSED(engram_search(c->mgr, &q, NULL, capture_cb, &r), ENGRAM_EINVAL, "dimension");
  q.vector = NULL;
  q.dimension = 0;
  q.text = "bad \xff text";
  REFUSED(engram_search(c->mgr, &q, NULL, capture_cb, &r), ENGRAM_EINVAL, "text");
  run_for(c, 5);
  assert_int_equal(r.calls, 0);
}

static void bad_batches(void **state) {
  ctx_t *c = *state;
  result_t r = {0};
  cJSON *v = J("1");
  const char *keys[] = {"ok", ""};
  engram_entry_t e[2] = {{"ok", v, NULL, 0, 0}, {"second", NULL, NULL, 0, 0}};
  REFUSED(engram_retrieve_many(c->mgr, NULL, 1, NULL, capture_cb, &r), ENGRAM_EINVAL, "keys");
  REFUSED(engram_retrieve_many(c->mgr, keys, 0, NULL, capture_cb, &r), ENGRAM_EINVAL, "n");
  REFUSED(engram_retrieve_many(c->mgr, keys, 2, NULL, capture_cb, &r), ENGRAM_EINVAL, "keys[1]");
  REFUSED(engram_delete_many(c->mgr, keys, 2, NULL, capture_cb, &r), ENGRAM_EINVAL, "keys[1]");
  REFUSED(engram_store_many(c->mgr, e, 2, NULL, capture_cb, &r), ENGRAM_EINVAL, "entries[1].value");
  e[1].value = v;
  e[1].has_ttl = 1;
  e[1].ttl_ms = -3;
  REFUSED(engram_store_many(c->mgr, e, 2, NULL, capture_cb, &r), ENGRAM_EINVAL, "entries[1].ttl_ms");
  REFUSED(engram_update(c->mgr, "k", NULL, NULL, NULL, capture_cb, &r), ENGRAM_EINVAL, "fn");
  run_for(c, 5);
  assert_int_equal(r.calls, 0);
  cJSON_Delete(v);
}

static void bad_manager_calls(void **state) {
  ctx_t *c = *state;
  result_t r = {0};
  REFUSED(engram_manager_add_source(c->mgr, "bad name!", &engram_source_cache, NULL, NULL, 0, capture_cb, &r),
          ENGRAM_EINVAL, "name");
  REFUSED(engram_manager_add_source(c->mgr, "x", NULL, NULL, NULL, 0, capture_cb, &r), ENGRAM_EINVAL, "vtable");
  REFUSED(engram_manager_add_source(c->mgr, "x", &engram_source_cache, "{\"max_entries\": ", NULL, 0, capture_cb, &r),
          ENGRAM_EINVAL, "options_json");
  REFUSED(engram_manager_add_source(c->mgr, "x", &engram_source_cache, "[1]", NULL, 0, capture_cb, &r), ENGRAM_EINVAL,
          "object");
  REFUSED(engram_manager_remove_source(c->mgr, NULL, capture_cb, &r), ENGRAM_EINVAL, "name");
  REFUSED(engram_manager_set_default_source(c->mgr, NULL), ENGRAM_EINVAL, "name");
  REFUSED(engram_manager_configure(c->mgr, NULL, capture_cb, &r), ENGRAM_EINVAL, "config_json");
  REFUSED(engram_manager_configure(c->mgr, "{\"sources\": {}}", capture_cb, &r), ENGRAM_EINVAL, "sources");
  REFUSED(engram_manager_configure(c->mgr, "{\"sources\": [{\"name\": \"a\", \"type\": \"cache\", \"options\": 3}]}",
                                   capture_cb, &r),
          ENGRAM_EINVAL, "sources[0].options");
  REFUSED(engram_manager_new(NULL, NULL, NULL), ENGRAM_EINVAL, "out");
  REFUSED(engram_register_source_type("cache", &engram_source_cache), ENGRAM_EEXIST, "cache");
  REFUSED(engram_cq_new(NULL, NULL), ENGRAM_EINVAL, "out");
  run_for(c, 5);
  assert_int_equal(r.calls, 0);
  /* A bad option value is the source's open error, naming the option. */
  assert_int_equal(engram_manager_add_source(c->mgr, "y", &engram_source_cache, "{\"max_entries\": -1}", NULL, 0, capture_cb, &r), 0);
  wait_for(c, &r.calls, 1, 5000);
  assert_int_equal(r.status, ENGRAM_EINVAL);
  assert_non_null(strstr(r.message, "max_entries"));
  result_reset(&r);
  assert_int_equal(engram_manager_add_source(c->mgr, "z", &engram_source_cache, "{\"colour\": 1}", NULL, 0, capture_cb, &r), 0);
  wait_for(c, &r.calls, 1, 5000);
  assert_int_equal(r.status, ENGRAM_EINVAL);
  assert_non_null(strstr(r.message, "colour"));
  result_reset(&r);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(bad_keys_and_namespaces, setup, teardown),
      cmocka_unit_test_setup_teardown(bad_options, setup, teardown),
      cmocka_unit_test_setup_teardown(bad_queries, setup, teardown),
      cmocka_unit_test_setup_teardown(bad_batches, setup, teardown),
      cmocka_unit_test_setup_teardown(bad_manager_calls, setup, teardown),
  };
  return cmocka_run_group_tests_name("bad input", tests, NULL, NULL);
}
