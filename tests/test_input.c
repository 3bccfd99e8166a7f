/*
 * test_input.c — bad input gets a clear error and stores nothing: every public entry point refuses NULL
 * arguments, empty / oversized / non-UTF-8 keys and namespaces, negative TTLs, limits < 0 (list_keys' limit 0 is
 * BeamMePrompty's default of 1,000, and a search's limit ≤ 0 is refused), unterminated
 * patterns, bad filters, bad vectors, unknown sources and malformed configuration, with a message that names
 * what was wrong, no callback, and no change to the source. The input rules: values, metadata and filters whose
 * strings are not UTF-8, JSON text (configuration, options) holding "\u0000", bad bytes, lone surrogate escapes or
 * text after the document; and every message is valid UTF-8, caller text in it cut on a character boundary.
 * System-field ranges with min above max or a negative bound, and ranges sent to a source that cannot apply them.
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
    if (!engram_utf8_valid(engram_last_error(), strlen(engram_last_error())))                          \
      fail_msg("%s: the message is not valid UTF-8", #call);                                            \
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

/* list_keys with limit 0 is not bad input: it means BeamMePrompty's default page of 1,000 keys (issue 12 item 3). */
static void list_keys_limit_zero_is_1000(void **unused) {
  ctx_t c;
  result_t r = {0};
  engram_entry_t *e = calloc(1005, sizeof *e);
  char (*keys)[16] = calloc(1005, sizeof *keys);
  cJSON *one = cJSON_CreateNumber(1);
  size_t i;
  (void)unused;
  ctx_init(&c, NULL);
  ctx_add(&c, conf_sources[0]);
  for (i = 0; i < 1005; i++) {
    snprintf(keys[i], sizeof keys[i], "k%04zu", i);
    e[i].key = keys[i];
    e[i].value = one;
  }
  assert_int_equal(engram_store_many(c.mgr, e, 1005, NULL, capture_cb, &r), 0);
  wait_for(&c, &r.calls, 1, 60000);
  assert_int_equal(r.status, 0);
  result_reset(&r);
  assert_int_equal(s_list(&c, NULL, 0, NULL, NULL, &r), 0);
  assert_int_equal((int)r.n_items, 1000);
  assert_non_null(r.cursor);
  assert_string_equal(result_key(&r, 999), "k0999");
  result_reset(&r);
  free(e);
  free(keys);
  cJSON_Delete(one);
  ctx_close(&c);
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
  REFUSED(engram_list_keys(c->mgr, NULL, -1, NULL, NULL, capture_cb, &r), ENGRAM_EINVAL, "limit");
  REFUSED(engram_list_keys(c->mgr, NULL, 100001, NULL, NULL, capture_cb, &r), ENGRAM_EINVAL, "limit");
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

/* Values, metadata and filters given as cJSON trees: a string leaf or member name that is not UTF-8 is refused,
 * naming it; so are raw nodes that are not one good JSON text, string nodes without text, and nesting deeper
 * than cJSON could parse back. */
static void bad_trees(void **state) {
  ctx_t *c = *state;
  result_t r = {0};
  cJSON *good = J("{\"ok\": \"caf\u00e9\"}"), *v = J("{\"items\": [\"a\", 1]}"), *named = J("{\"m\": {}}");
  cJSON *meta = J("{\"tags\": []}"), *raw = cJSON_CreateObject(), *nulls = cJSON_CreateArray(), *deep, *cur, *f;
  cJSON *long_bad;
  engram_entry_t e[2];
  engram_query_t q = ENGRAM_QUERY_INIT;
  engram_opts_t o = {0};
  int i;
  cJSON_AddItemToArray(cJSON_GetObjectItem(v, "items"), cJSON_CreateString("bad\xff"));
  REFUSED(engram_store(c->mgr, "k", v, NULL, capture_cb, &r), ENGRAM_EINVAL, "value.items[2]: invalid UTF-8");
  /* Past the check's 32- and 8-byte ASCII steps: a bad byte at 45 in a value small enough for the request's room,
   * and a truncated character at its end. */
  REFUSED(engram_store(c->mgr, "k", long_bad = cJSON_CreateString("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\xff"),
                       NULL, capture_cb, &r),
          ENGRAM_EINVAL, "value: invalid UTF-8");
  cJSON_Delete(long_bad);
  REFUSED(engram_store(c->mgr, "k", long_bad = cJSON_CreateString("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\xe2\x82"),
                       NULL, capture_cb, &r),
          ENGRAM_EINVAL, "value: invalid UTF-8");
  cJSON_Delete(long_bad);
  cJSON_AddNumberToObject(cJSON_GetObjectItem(named, "m"), "n\xc3", 1);
  REFUSED(engram_store(c->mgr, "k", named, NULL, capture_cb, &r), ENGRAM_EINVAL, "value.m: a member name holds invalid UTF-8");
  cJSON_AddItemToArray(cJSON_GetObjectItem(meta, "tags"), cJSON_CreateString("\xed\xa0\x80")); /* a surrogate */
  o.metadata = meta;
  REFUSED(engram_store(c->mgr, "k", good, &o, capture_cb, &r), ENGRAM_EINVAL, "opts.metadata.tags[0]: invalid UTF-8");
  REFUSED(engram_store_many(c->mgr, (engram_entry_t[]){{"k", good, NULL, 0, 0}}, 1, &o, capture_cb, &r), ENGRAM_EINVAL,
          "opts.metadata.tags[0]");
  o.metadata = NULL;
  memset(e, 0, sizeof e);
  e[0].key = "a";
  e[0].value = good;
  e[1].key = "b";
  e[1].value = v;
  REFUSED(engram_store_many(c->mgr, e, 2, NULL, capture_cb, &r), ENGRAM_EINVAL, "entries[1].value.items[2]: invalid UTF-8");
  e[1].value = good;
  e[0].metadata = meta;
  REFUSED(engram_store_many(c->mgr, e, 2, NULL, capture_cb, &r), ENGRAM_EINVAL, "entries[0].metadata.tags[0]");
  /* A raw node must hold one JSON text that keeps the rules; a string node must have its text. */
  cJSON_AddRawToObject(raw, "r", "{\"x\": \"\\u0000\"}");
  REFUSED(engram_store(c->mgr, "k", raw, NULL, capture_cb, &r), ENGRAM_EINVAL, "value.r.x: \\u0000 (NUL)");
  cJSON_AddItemToArray(nulls, cJSON_CreateString("x"));
  cJSON_free(nulls->child->valuestring);
  nulls->child->valuestring = NULL;
  REFUSED(engram_store(c->mgr, "k", nulls, NULL, capture_cb, &r), ENGRAM_EINVAL, "value[0]: a string node without its text");
  /* 1,001 levels: cJSON could not parse the stored text back. */
  deep = cJSON_CreateArray();
  for (cur = deep, i = 1; i < 1001; i++) {
    cJSON *n = cJSON_CreateArray();
    cJSON_AddItemToArray(cur, n);
    cur = n;
  }
  REFUSED(engram_store(c->mgr, "k", deep, NULL, capture_cb, &r), ENGRAM_EINVAL, "nested deeper than 1000 levels");
  /* A filter's strings too. */
  f = J("{\"tag\": {\"$in\": [\"a\"]}}");
  cJSON_AddItemToArray(cJSON_GetObjectItem(cJSON_GetObjectItem(f, "tag"), "$in"), cJSON_CreateString("\xff"));
  q.filter = f;
  REFUSED(engram_search(c->mgr, &q, NULL, capture_cb, &r), ENGRAM_EINVAL, "query.filter.tag.$in[1]: invalid UTF-8");
  REFUSED(engram_count(c->mgr, &q, NULL, capture_cb, &r), ENGRAM_EINVAL, "query.filter.tag.$in[1]");
  run_barrier(c);
  assert_int_equal(r.calls, 0);
  cJSON_Delete(good);
  cJSON_Delete(v);
  cJSON_Delete(named);
  cJSON_Delete(meta);
  cJSON_Delete(raw);
  cJSON_Delete(nulls);
  cJSON_Delete(deep);
  cJSON_Delete(f);
}

/* Messages quote caller text cut on a character boundary, with bad bytes and control characters escaped. */
static void messages_stay_utf8(void **state) {
  ctx_t *c = *state;
  result_t r = {0};
  engram_query_t q = ENGRAM_QUERY_INIT;
  engram_opts_t o = {0};
  cJSON *v = J("1");
  char pattern[2100], doc[2400];
  int i;
  o.source = "no\xff\nsuch";
  REFUSED(engram_store(c->mgr, "k", v, &o, capture_cb, &r), ENGRAM_EUNKNOWN_SOURCE, "unknown memory source 'no\\xff\\nsuch'");
  /* "[" then 1,000 two-byte characters: the old cut at 511 bytes fell inside one. */
  strcpy(pattern, "[");
  for (i = 0; i < 1000; i++) strcat(pattern, "\xc3\xa9");
  q.pattern = pattern;
  REFUSED(engram_search(c->mgr, &q, NULL, capture_cb, &r), ENGRAM_EINVAL, "...\" is not a valid glob");
  REFUSED(engram_list_keys(c->mgr, pattern, 10, NULL, NULL, capture_cb, &r), ENGRAM_EINVAL, "query.pattern: \"[\xc3\xa9");
  /* A source type that is long and multi-byte. */
  snprintf(doc, sizeof doc, "{\"sources\": [{\"name\": \"a\", \"type\": \"%s\"}]}", pattern + 1);
  REFUSED(engram_manager_configure(c->mgr, doc, capture_cb, &r), ENGRAM_EINVAL, "sources[0].type: unknown source type");
  REFUSED(engram_manager_configure(c->mgr, "{\"sources\": [{\"name\": \"a\", \"type\": \"x\\u001b[2J\"}]}", capture_cb, &r),
          ENGRAM_EINVAL, "unknown source type \"x\\u001b[2J\"");
  /* remove_source: a name no source can have is refused at once, and never echoed. */
  REFUSED(engram_manager_remove_source(c->mgr, "\xff\xfe", capture_cb, &r), ENGRAM_EINVAL, "name: no source can have it");
  REFUSED(engram_manager_remove_source(c->mgr, "", capture_cb, &r), ENGRAM_EINVAL, "name");
  run_barrier(c);
  assert_int_equal(r.calls, 0);
  cJSON_Delete(v);
}

/* JSON text given to the manager (configure, add_source's options) is checked before cJSON parses it. */
static void bad_json_text(void **state) {
  static const struct {
    const char *doc, *msg;
  } configs[] = {
      /* cJSON would cut at the NUL: "a\u0000b" would have added a source "a". */
      {"{\"sources\": [{\"name\": \"a\\u0000b\", \"type\": \"cache\"}]}",
       "sources[0].name: \\u0000 (NUL) is not allowed in a string at offset 24"},
      {"{\"sources\": [{\"name\": \"a\", \"type\": \"cache\\u0000x\"}]}", "sources[0].type: \\u0000 (NUL)"},
      {"{\"sources\": [{\"name\": \"a\", \"type\": \"cache\", \"description\": \"d\\u0000\"}]}",
       "sources[0].description: \\u0000 (NUL)"},
      {"{\"sources\": [{\"name\": \"a\", \"type\": \"cache\", \"options\": {\"max_entries\\u0000x\": 5}}]}",
       "sources[0].options: \\u0000 (NUL) is not allowed in a member name"},
      {"{\"sources\": [{\"name\": \"a\", \"type\": \"sqlite\", \"options\": {\"path\": \"/tmp/x.db\\u0000\"}}]}",
       "sources[0].options.path: \\u0000 (NUL)"},
      {"{\"sources\": [{\"name\": \"a\", \"type\": \"cache\"}], \"x\\u0000\": 1}", "config_json: \\u0000 (NUL)"},
      /* Bytes that are not UTF-8, and lone surrogates. */
      {"{\"sources\": [{\"name\": \"a\", \"type\": \"sqlite\", \"options\": {\"path\": \"\xff.db\"}}]}",
       "sources[0].options.path: invalid UTF-8 at offset 66"},
      {"{\"sources\": [{\"name\": \"a\", \"type\": \"cache\", \"description\": \"\\ud800\"}]}",
       "sources[0].description: \\ud800 is a lone UTF-16 surrogate"},
      {"[{\"name\": \"a\", \"type\": \"cache\", \"description\": \"\\udfff\\ud800\"}]", "[0].description: \\udfff is a lone"},
      /* Text after the document, and nesting cJSON would refuse without saying why. */
      {"{\"sources\": []}\n{\"sources\": []}", "config_json: malformed JSON: text after the document at offset 16"},
      {"{\"sources\": [], \"x\": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
       "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
       "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
       "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
       "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
       "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
       "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
       "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
       "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
       "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
       "]}",
       "x[0][0]"},
  };
  ctx_t *c = *state;
  result_t r = {0};
  size_t i;
  for (i = 0; i < sizeof configs / sizeof *configs; i++) {
    int rc = engram_manager_configure(c->mgr, configs[i].doc, capture_cb, &r);
    if (rc != ENGRAM_EINVAL) fail_msg("config %zu: returned %s", i, engram_err_name(rc));
    if (strstr(engram_last_error(), configs[i].msg) == NULL)
      fail_msg("config %zu: \"%s\" does not say \"%s\"", i, engram_last_error(), configs[i].msg);
    assert_true(engram_utf8_valid(engram_last_error(), strlen(engram_last_error())));
  }
  /* add_source's options_json: the same check, the paths rooted at options_json. */
  REFUSED(engram_manager_add_source(c->mgr, "x", &engram_source_cache, "{\"max_entries\\u0000x\": 1}", NULL, 0, capture_cb, &r),
          ENGRAM_EINVAL, "options_json: \\u0000 (NUL) is not allowed in a member name");
  REFUSED(engram_manager_add_source(c->mgr, "x", &engram_source_sqlite, "{\"path\": \":memory:\\u0000/tmp/x\"}", NULL, 0,
                                    capture_cb, &r),
          ENGRAM_EINVAL, "options_json.path: \\u0000 (NUL)");
  REFUSED(engram_manager_add_source(c->mgr, "x", &engram_source_sqlite, "{\"path\": \"\xc3(\"}", NULL, 0, capture_cb, &r),
          ENGRAM_EINVAL, "options_json.path: invalid UTF-8 at offset 10");
  REFUSED(engram_manager_add_source(c->mgr, "x", &engram_source_cache, "{\"max_entries\": 1} {}", NULL, 0, capture_cb, &r),
          ENGRAM_EINVAL, "options_json: malformed JSON: text after the document at offset 19");
  REFUSED(engram_manager_add_source(c->mgr, "x", &engram_source_cache, "{\"\\udbff\": 1}", NULL, 0, capture_cb, &r),
          ENGRAM_EINVAL, "options_json: a member name holds \\udbff");
  run_barrier(c);
  assert_int_equal(r.calls, 0);
  /* Nothing was added: the one source is still "mem". */
  assert_int_equal(engram_manager_list_sources(c->mgr, NULL, capture_cb, &r), 0);
  wait_for(c, &r.calls, 1, 5000);
  assert_int_equal(cJSON_GetArraySize(r.info), 1);
  result_reset(&r);
}

/* System-field ranges: each one validated when its flag is set (0 ≤ min_ms ≤ max_ms), naming the field; a source
 * that does not declare ENGRAM_SOURCE_RANGES refuses them at once instead of answering unfiltered. */
static engram_source_vtable_t no_ranges_vt;

static void bad_ranges(void **state) {
  ctx_t *c = *state;
  result_t r = {0};
  engram_query_t q = ENGRAM_QUERY_INIT;
  engram_opts_t o = {0};
  o.flags = ENGRAM_OPT_CREATED_RANGE;
  o.created_at.min_ms = 20;
  o.created_at.max_ms = 10;
  REFUSED(engram_search(c->mgr, &q, &o, capture_cb, &r), ENGRAM_EINVAL, "opts.created_at: min_ms 20 is above max_ms 10");
  REFUSED(engram_count(c->mgr, &q, &o, capture_cb, &r), ENGRAM_EINVAL, "opts.created_at");
  REFUSED(engram_list_keys(c->mgr, NULL, 10, NULL, &o, capture_cb, &r), ENGRAM_EINVAL, "opts.created_at");
  o.flags = ENGRAM_OPT_UPDATED_RANGE;
  o.updated_at.min_ms = -1;
  o.updated_at.max_ms = 10;
  REFUSED(engram_search(c->mgr, &q, &o, capture_cb, &r), ENGRAM_EINVAL, "opts.updated_at: min_ms -1 is negative");
  o.flags = ENGRAM_OPT_EXPIRES_RANGE;
  o.expires_at.min_ms = ENGRAM_TIME_MAX;
  o.expires_at.max_ms = 0;
  REFUSED(engram_list_keys(c->mgr, NULL, 10, NULL, &o, capture_cb, &r), ENGRAM_EINVAL, "opts.expires_at: min_ms");
  /* A range whose flag is not set is not read. */
  o.flags = ENGRAM_OPT_CREATED_RANGE;
  o.created_at.min_ms = 0;
  o.created_at.max_ms = ENGRAM_TIME_MAX;
  assert_int_equal(s_search(c, &q, &o, &r), 0);
  /* Orders: a known one, and descending only with one. */
  o.order_by = 9;
  REFUSED(engram_search(c->mgr, &q, &o, capture_cb, &r), ENGRAM_EINVAL, "opts.order_by: 9 is not an order");
  o.order_by = ENGRAM_ORDER_DEFAULT;
  o.flags = ENGRAM_OPT_DESCENDING;
  REFUSED(engram_list_keys(c->mgr, NULL, 10, NULL, &o, capture_cb, &r), ENGRAM_EINVAL,
          "ENGRAM_OPT_DESCENDING needs opts.order_by");
  o.flags = ENGRAM_OPT_CREATED_RANGE;
  /* A source without ENGRAM_SOURCE_RANGES: refused at the call, no callback. */
  no_ranges_vt = *conf_sources[0]->vt;
  no_ranges_vt.name = "cache-without-ranges";
  no_ranges_vt.flags &= ~(unsigned)ENGRAM_SOURCE_RANGES;
  result_reset(&r);
  assert_int_equal(engram_manager_add_source(c->mgr, "plain", &no_ranges_vt, NULL, "", 0, capture_cb, &r), 0);
  wait_for(c, &r.calls, 1, 30000);
  assert_int_equal(r.status, 0);
  result_reset(&r);
  o.source = "plain";
  REFUSED(engram_search(c->mgr, &q, &o, capture_cb, &r), ENGRAM_ENOTSUP, "source 'plain' (cache-without-ranges) cannot filter");
  REFUSED(engram_list_keys(c->mgr, NULL, 10, NULL, &o, capture_cb, &r), ENGRAM_ENOTSUP, "cannot filter on created_at");
  o.flags = 0;
  assert_int_equal(s_search(c, &q, &o, &r), 0);
  run_barrier(c);
  assert_int_equal(r.calls, 1);
  result_reset(&r);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(bad_keys_and_namespaces, setup, teardown),
      cmocka_unit_test_setup_teardown(bad_options, setup, teardown),
      cmocka_unit_test_setup_teardown(bad_queries, setup, teardown),
      cmocka_unit_test(list_keys_limit_zero_is_1000),
      cmocka_unit_test_setup_teardown(bad_batches, setup, teardown),
      cmocka_unit_test_setup_teardown(bad_manager_calls, setup, teardown),
      cmocka_unit_test_setup_teardown(bad_trees, setup, teardown),
      cmocka_unit_test_setup_teardown(messages_stay_utf8, setup, teardown),
      cmocka_unit_test_setup_teardown(bad_json_text, setup, teardown),
      cmocka_unit_test_setup_teardown(bad_ranges, setup, teardown),
  };
  return cmocka_run_group_tests_name("bad input", tests, NULL, NULL);
}
