/*
 * test_tools.c — the agent tools (engram/tools.h) on a real manager with two cache sources: both definition
 * formats parse and pass a structural JSON Schema validator (which is itself shown to reject broken schemas);
 * every tool's success path with its exact BeamMePrompty result shape; ttl in metadata expiring an item;
 * tags and other metadata kept; memory_source, namespace and the application's opts; every error path (missing
 * or mistyped arguments, unknown arguments, unknown tool, unknown memory_source, malformed JSON, arguments as a
 * string) as an {"error"} result with a non-zero status; hostile strings (a "\u0000" escape, bytes that are not
 * UTF-8, lone surrogate escapes, text after the document, deep nesting) refused naming the argument, with every
 * result valid UTF-8 and long quoted text cut on a character boundary; errors of the operation itself; refusals at once;
 * completion queues; and allocation failures. The thread tools (memory_thread_append / _window / _list /
 * _search): listed only with ENGRAM_TOOLS_THREADS (engram_tools_definitions keeps the six), appends read back
 * through windows in both formats (tool pairs, system kept, omitted, trimming by max_messages), pages of threads
 * with a cursor, messages searched in one thread or in all (each result naming its thread and seq), every bad
 * argument an error result naming the argument, an unknown memory_source, and allocation failures.
 * Every call's callback is counted: exactly one, never from inside engram_tools_call.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engram/tools.h"
#include "support/failing_alloc.h"
#include "support/harness.h"

/* ---- World: a manager with "cache" (the default) and "notes", both cache sources ---- */

static void world(ctx_t *c, const engram_manager_config_t *cfg) {
  result_t r = {0};
  ctx_init(c, cfg);
  assert_int_equal(engram_manager_add_source(c->mgr, "cache", &engram_source_cache, NULL,
                                             "Fast temporary cache for session data", 1, capture_cb, &r),
                   0);
  wait_for(c, &r.calls, 1, 10000);
  assert_int_equal(r.status, 0);
  result_reset(&r);
  assert_int_equal(engram_manager_add_source(c->mgr, "notes", &engram_source_cache, NULL, "Long-term notes", 0,
                                             capture_cb, &r),
                   0);
  wait_for(c, &r.calls, 1, 10000);
  assert_int_equal(r.status, 0);
  result_reset(&r);
}

/* Runs one tool call and waits for its one callback; returns the callback's status. */
static int tool(ctx_t *c, const char *name, const char *args, const engram_opts_t *o, result_t *r) {
  int rc;
  result_reset(r);
  rc = engram_tools_call(c->mgr, name, args, o, capture_cb, r);
  if (rc != 0) fail_msg("%s(%s) refused: %s (%s)", name, args ? args : "NULL", engram_err_name(rc), engram_last_error());
  assert_int_equal(r->calls, 0); /* never from inside the call */
  wait_for(c, &r->calls, 1, 10000);
  uv_run(&c->loop, UV_RUN_NOWAIT);
  uv_run(&c->loop, UV_RUN_NOWAIT);
  assert_int_equal(r->calls, 1);
  assert_int_equal(r->op, ENGRAM_OP_TOOL_CALL);
  assert_non_null(r->text);
  return r->status;
}

/* The result text parsed (the caller deletes it). */
static cJSON *result_json(const result_t *r) {
  cJSON *v = cJSON_Parse(r->text);
  if (v == NULL) fail_msg("the result is not JSON: %s", r->text);
  return v;
}

/* Asserts the result equals want exactly (same members, same values). */
static void expect_json(const result_t *r, const char *want) {
  cJSON *got = result_json(r), *w = J(want);
  if (!cJSON_Compare(got, w, 1)) fail_msg("result\n  %s\nwanted\n  %s", r->text, want);
  cJSON_Delete(got);
  cJSON_Delete(w);
}

/* Asserts an error result: status, {"error": text} and nothing else, text holding substr. */
static void expect_error(ctx_t *c, const char *name, const char *args, const engram_opts_t *o, int status,
                         const char *substr) {
  result_t r = {0};
  cJSON *v;
  const cJSON *e;
  int st = tool(c, name, args, o, &r);
  if (st != status)
    fail_msg("%s(%s): status %s, wanted %s (%s)", name, args ? args : "NULL", engram_err_name(st),
             engram_err_name(status), r.text);
  v = result_json(&r);
  e = cJSON_GetObjectItemCaseSensitive(v, "error");
  if (!cJSON_IsString(e) || cJSON_GetArraySize(v) != 1) fail_msg("%s(%s): not an error result: %s", name, args, r.text);
  if (strstr(e->valuestring, substr) == NULL)
    fail_msg("%s(%s): error \"%s\" does not say \"%s\"", name, args ? args : "NULL", e->valuestring, substr);
  assert_string_equal(r.message, e->valuestring); /* reply->message is the same text */
  cJSON_Delete(v);
  result_reset(&r);
}

/* 1 when key exists in the default source ("" namespace unless ns). */
static int exists_in(ctx_t *c, const char *source, const char *ns, const char *key) {
  result_t r = {0};
  engram_opts_t o = {0};
  int n;
  o.source = source;
  o.ns = ns;
  assert_int_equal(s_exists(c, key, &o, &r), 0);
  n = (int)r.count;
  result_reset(&r);
  return n;
}

/* ---- A structural JSON Schema validator ---- */

static int known_type(const char *t) {
  static const char *const types[] = {"object", "array", "string", "number", "integer", "boolean", "null"};
  size_t i;
  for (i = 0; i < sizeof types / sizeof *types; i++)
    if (strcmp(t, types[i]) == 0) return 1;
  return 0;
}

static int has_type(const cJSON *s, const char *t) {
  const cJSON *ty = cJSON_GetObjectItemCaseSensitive(s, "type"), *x;
  if (cJSON_IsString(ty)) return strcmp(ty->valuestring, t) == 0;
  cJSON_ArrayForEach(x, ty) if (cJSON_IsString(x) && strcmp(x->valuestring, t) == 0) return 1;
  return 0;
}

/* Returns NULL when schema s is a valid object schema, else why not. top: the tool's parameters. */
static const char *schema_problem(const cJSON *s, int top) {
  static char why[256];
  const cJSON *props = cJSON_GetObjectItemCaseSensitive(s, "properties"), *p, *ty, *x, *req, *items;
  if (!cJSON_IsObject(s)) return "schema is not an object";
  if (!cJSON_IsString(cJSON_GetObjectItemCaseSensitive(s, "type")) || !has_type(s, "object"))
    return "\"type\" is not \"object\"";
  if (props == NULL && !top) return NULL;
  if (!cJSON_IsObject(props)) return "\"properties\" is not an object";
  cJSON_ArrayForEach(p, props) {
    ty = cJSON_GetObjectItemCaseSensitive(p, "type");
    if (cJSON_IsString(ty)) {
      if (!known_type(ty->valuestring)) return snprintf(why, sizeof why, "%s: unknown type", p->string), why;
    } else if (cJSON_IsArray(ty) && cJSON_GetArraySize(ty) > 0) {
      cJSON_ArrayForEach(x, ty) if (!cJSON_IsString(x) || !known_type(x->valuestring))
          return snprintf(why, sizeof why, "%s: unknown type in the list", p->string), why;
    } else {
      return snprintf(why, sizeof why, "property %s has no type", p->string), why;
    }
    if (!cJSON_IsString(cJSON_GetObjectItemCaseSensitive(p, "description")) ||
        cJSON_GetObjectItemCaseSensitive(p, "description")->valuestring[0] == '\0')
      return snprintf(why, sizeof why, "property %s has no description", p->string), why;
    if (cJSON_IsString(ty) && strcmp(ty->valuestring, "object") == 0) {
      const char *inner = schema_problem(p, 0);
      if (inner != NULL) return inner;
    }
    if (cJSON_IsString(ty) && strcmp(ty->valuestring, "array") == 0) {
      items = cJSON_GetObjectItemCaseSensitive(p, "items");
      if (!cJSON_IsObject(items) || !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(items, "type")))
        return snprintf(why, sizeof why, "array %s has no typed items", p->string), why;
    }
  }
  req = cJSON_GetObjectItemCaseSensitive(s, "required");
  if (top && req == NULL) return "no \"required\"";
  if (req != NULL) {
    if (!cJSON_IsArray(req)) return "\"required\" is not an array";
    cJSON_ArrayForEach(x, req) {
      const cJSON *y;
      int seen = 0;
      if (!cJSON_IsString(x)) return "\"required\" holds a non-string";
      if (!cJSON_HasObjectItem(props, x->valuestring))
        return snprintf(why, sizeof why, "required %s is not a property", x->valuestring), why;
      cJSON_ArrayForEach(y, req) seen += cJSON_IsString(y) && strcmp(y->valuestring, x->valuestring) == 0;
      if (seen != 1) return "\"required\" repeats a name";
    }
  }
  if (top && !cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(s, "additionalProperties")))
    return "\"additionalProperties\" is not false";
  return NULL;
}

static const char *const names[] = {"memory_store",  "memory_retrieve",  "memory_search",
                                    "memory_delete", "memory_list_keys", "memory_list_sources"};

/* Checks one format's definitions; returns the parameters schema of tool i. */
static const cJSON *tool_schema(const cJSON *defs, engram_tools_format_t f, int i) {
  const cJSON *t = cJSON_GetArrayItem(defs, i), *fn;
  if (f == ENGRAM_TOOLS_OPENAI) {
    assert_int_equal(cJSON_GetArraySize(t), 2);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(t, "type")->valuestring, "function");
    fn = cJSON_GetObjectItemCaseSensitive(t, "function");
    assert_int_equal(cJSON_GetArraySize(fn), 3);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(fn, "name")->valuestring, names[i]);
    assert_true(strlen(cJSON_GetObjectItemCaseSensitive(fn, "description")->valuestring) > 20);
    return cJSON_GetObjectItemCaseSensitive(fn, "parameters");
  }
  assert_int_equal(cJSON_GetArraySize(t), 3);
  assert_string_equal(cJSON_GetObjectItemCaseSensitive(t, "name")->valuestring, names[i]);
  assert_true(strlen(cJSON_GetObjectItemCaseSensitive(t, "description")->valuestring) > 20);
  return cJSON_GetObjectItemCaseSensitive(t, "input_schema");
}

static void expect_props(const cJSON *schema, const char *const *want, int n, const char *required) {
  const cJSON *props = cJSON_GetObjectItemCaseSensitive(schema, "properties");
  char *req = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(schema, "required"));
  int i;
  assert_int_equal(cJSON_GetArraySize(props), n);
  for (i = 0; i < n; i++)
    if (!cJSON_HasObjectItem(props, want[i])) fail_msg("property %s is missing", want[i]);
  assert_string_equal(req, required);
  cJSON_free(req);
}

static void definitions_are_valid_schemas(void **state) {
  static const engram_tools_format_t formats[] = {ENGRAM_TOOLS_OPENAI, ENGRAM_TOOLS_ANTHROPIC};
  static const char *const store_p[] = {"key", "value", "metadata", "memory_source", "namespace"};
  static const char *const key_p[] = {"key", "memory_source", "namespace"};
  static const char *const search_p[] = {"query", "pattern", "filter", "mode", "alpha", "limit", "memory_source",
                                         "namespace"};
  static const char *const list_p[] = {"pattern", "limit", "cursor", "memory_source", "namespace"};
  size_t f;
  int i;
  (void)state;
  for (f = 0; f < 2; f++) {
    char *text = engram_tools_definitions_json(formats[f]);
    cJSON *defs, *tree = engram_tools_definitions(formats[f]);
    const cJSON *s, *limit, *meta;
    assert_non_null(text);
    assert_non_null(tree);
    defs = J(text);
    assert_true(cJSON_Compare(defs, tree, 1)); /* the text is the tree printed */
    assert_int_equal(cJSON_GetArraySize(defs), 6);
    for (i = 0; i < 6; i++) {
      const char *why;
      s = tool_schema(defs, formats[f], i);
      if ((why = schema_problem(s, 1)) != NULL) fail_msg("%s: %s", names[i], why);
      assert_true(engram_tools_is_tool(names[i]));
    }
    expect_props(tool_schema(defs, formats[f], 0), store_p, 5, "[\"key\",\"value\"]");
    expect_props(tool_schema(defs, formats[f], 1), key_p, 3, "[\"key\"]");
    expect_props(tool_schema(defs, formats[f], 2), search_p, 8, "[\"query\"]");
    { /* mode is one of the three, alpha a number in [0, 1], in both formats */
      const cJSON *sp = cJSON_GetObjectItemCaseSensitive(tool_schema(defs, formats[f], 2), "properties");
      const cJSON *mode = cJSON_GetObjectItemCaseSensitive(sp, "mode"), *alpha = cJSON_GetObjectItemCaseSensitive(sp, "alpha");
      char *modes = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(mode, "enum"));
      assert_string_equal(modes, "[\"text\",\"vector\",\"hybrid\"]");
      cJSON_free(modes);
      assert_string_equal(cJSON_GetObjectItemCaseSensitive(alpha, "type")->valuestring, "number");
      assert_true(cJSON_GetObjectItemCaseSensitive(alpha, "minimum")->valuedouble == 0);
      assert_true(cJSON_GetObjectItemCaseSensitive(alpha, "maximum")->valuedouble == 1);
    }
    expect_props(tool_schema(defs, formats[f], 3), key_p, 3, "[\"key\"]");
    expect_props(tool_schema(defs, formats[f], 4), list_p, 5, "[]"); /* published, unlike BeamMePrompty */
    expect_props(tool_schema(defs, formats[f], 5), NULL, 0, "[]");
    limit = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(tool_schema(defs, formats[f], 2), "properties"), "limit");
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(limit, "maximum")->valueint, 100);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(limit, "type")->valuestring, "integer");
    meta = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(tool_schema(defs, formats[f], 0), "properties"), "metadata");
    assert_true(has_type(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(meta, "properties"), "ttl"), "number"));
    assert_true(has_type(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(meta, "properties"), "tags"), "array"));
    cJSON_Delete(defs);
    cJSON_Delete(tree);
    engram_free(text);
  }
  assert_null(engram_tools_definitions((engram_tools_format_t)0));
  assert_null(engram_tools_definitions_json((engram_tools_format_t)3));
  assert_false(engram_tools_is_tool("memory_forget"));
  assert_false(engram_tools_is_tool(NULL));
  /* engram_tools_is_tool stays the six: a front end listing engram_tools_definitions routes what it lists. */
  assert_false(engram_tools_is_tool("memory_thread_append"));
  assert_int_equal(engram_tools_tool_set("memory_store"), ENGRAM_TOOLS_MEMORY);
  assert_int_equal(engram_tools_tool_set("memory_list_sources"), ENGRAM_TOOLS_MEMORY);
  assert_int_equal(engram_tools_tool_set("memory_thread_append"), ENGRAM_TOOLS_THREADS);
  assert_int_equal(engram_tools_tool_set("memory_thread_window"), ENGRAM_TOOLS_THREADS);
  assert_int_equal(engram_tools_tool_set("memory_thread_list"), ENGRAM_TOOLS_THREADS);
  assert_int_equal(engram_tools_tool_set("memory_thread_search"), ENGRAM_TOOLS_THREADS);
  assert_false(engram_tools_is_tool("memory_thread_search"));
  assert_int_equal(engram_tools_tool_set("memory_thread"), 0);
  assert_int_equal(engram_tools_tool_set(NULL), 0);
}

static const char *const thread_names[] = {"memory_thread_append", "memory_thread_window", "memory_thread_list",
                                           "memory_thread_search"};

/* The name and the parameters schema of element i of defs, in format f. */
static const cJSON *any_schema(const cJSON *defs, engram_tools_format_t f, int i, const char **name) {
  const cJSON *t = cJSON_GetArrayItem(defs, i);
  if (f == ENGRAM_TOOLS_OPENAI) {
    t = cJSON_GetObjectItemCaseSensitive(t, "function");
    *name = cJSON_GetObjectItemCaseSensitive(t, "name")->valuestring;
    return cJSON_GetObjectItemCaseSensitive(t, "parameters");
  }
  *name = cJSON_GetObjectItemCaseSensitive(t, "name")->valuestring;
  return cJSON_GetObjectItemCaseSensitive(t, "input_schema");
}

/* The thread tools: opt-in, both formats, valid schemas; the six unchanged by default and first with both sets. */
static void thread_definitions(void **state) {
  static const engram_tools_format_t formats[] = {ENGRAM_TOOLS_OPENAI, ENGRAM_TOOLS_ANTHROPIC};
  static const char *const append_p[] = {"thread",   "role",     "content",       "tool_calls",
                                         "tool_call_id", "metadata", "memory_source", "namespace"};
  static const char *const window_p[] = {"thread", "max_messages", "max_tokens", "format", "memory_source", "namespace"};
  static const char *const list_p[] = {"limit", "cursor", "memory_source", "namespace"};
  static const char *const search_p[] = {"thread", "query", "limit", "memory_source", "namespace"};
  size_t f;
  int i;
  (void)state;
  for (f = 0; f < 2; f++) {
    cJSON *six = engram_tools_definitions(formats[f]), *mem = engram_tools_definitions_ex(formats[f], ENGRAM_TOOLS_MEMORY);
    cJSON *thr = engram_tools_definitions_ex(formats[f], ENGRAM_TOOLS_THREADS);
    cJSON *all = engram_tools_definitions_ex(formats[f], ENGRAM_TOOLS_ALL), *parsed;
    char *text = engram_tools_definitions_json_ex(formats[f], ENGRAM_TOOLS_ALL);
    const cJSON *s, *p;
    const char *name;
    assert_non_null(six);
    assert_non_null(thr);
    assert_non_null(all);
    assert_non_null(text);
    assert_true(cJSON_Compare(six, mem, 1));
    assert_int_equal(cJSON_GetArraySize(six), 6);
    assert_int_equal(cJSON_GetArraySize(thr), 4);
    assert_int_equal(cJSON_GetArraySize(all), 10);
    parsed = J(text);
    assert_true(cJSON_Compare(parsed, all, 1));
    for (i = 0; i < 10; i++) {
      const char *why;
      s = any_schema(all, formats[f], i, &name);
      assert_string_equal(name, i < 6 ? names[i] : thread_names[i - 6]);
      assert_true(cJSON_Compare(cJSON_GetArrayItem(all, i), cJSON_GetArrayItem(i < 6 ? six : thr, i < 6 ? i : i - 6), 1));
      if ((why = schema_problem(s, 1)) != NULL) fail_msg("%s: %s", name, why);
    }
    expect_props(any_schema(thr, formats[f], 0, &name), append_p, 8, "[\"thread\",\"role\"]");
    expect_props(any_schema(thr, formats[f], 1, &name), window_p, 6, "[\"thread\"]");
    expect_props(any_schema(thr, formats[f], 2, &name), list_p, 4, "[]");
    expect_props(any_schema(thr, formats[f], 3, &name), search_p, 5, "[\"query\"]");
    p = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(any_schema(thr, formats[f], 3, &name), "properties"), "limit");
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(p, "maximum")->valueint, 100);
    p = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(any_schema(thr, formats[f], 0, &name), "properties"), "role");
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(p, "enum")), 4);
    p = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(any_schema(thr, formats[f], 1, &name), "properties"), "format");
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(p, "enum")), 2);
    cJSON_Delete(six);
    cJSON_Delete(mem);
    cJSON_Delete(thr);
    cJSON_Delete(all);
    cJSON_Delete(parsed);
    engram_free(text);
  }
  assert_null(engram_tools_definitions_ex(ENGRAM_TOOLS_OPENAI, 0));
  assert_null(engram_tools_definitions_ex(ENGRAM_TOOLS_OPENAI, 4));
  assert_null(engram_tools_definitions_ex((engram_tools_format_t)3, ENGRAM_TOOLS_ALL));
  assert_null(engram_tools_definitions_json_ex(ENGRAM_TOOLS_ANTHROPIC, 8));
}

/* The validator is not vacuous: each broken schema is caught. */
static void validator_rejects_broken_schemas(void **state) {
  static const char *const broken[] = {
      "{\"type\":\"array\",\"properties\":{},\"required\":[],\"additionalProperties\":false}",
      "{\"type\":\"object\",\"required\":[],\"additionalProperties\":false}",
      "{\"type\":\"object\",\"properties\":{\"a\":{\"description\":\"x\"}},\"required\":[],\"additionalProperties\":false}",
      "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"str\",\"description\":\"x\"}},\"required\":[],\"additionalProperties\":false}",
      "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\",\"description\":\"x\"}},\"required\":[\"b\"],\"additionalProperties\":false}",
      "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\",\"description\":\"x\"}},\"additionalProperties\":false}",
      "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\",\"description\":\"x\"}},\"required\":[]}",
      "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"array\",\"description\":\"x\"}},\"required\":[],\"additionalProperties\":false}",
      "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"object\",\"description\":\"x\",\"properties\":{\"b\":{}}}},\"required\":[],\"additionalProperties\":false}",
      "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\"}},\"required\":[],\"additionalProperties\":false}",
  };
  const char *good = "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\",\"description\":\"x\"}},"
                     "\"required\":[\"a\"],\"additionalProperties\":false}";
  size_t i;
  cJSON *s;
  (void)state;
  s = J(good);
  assert_null(schema_problem(s, 1));
  cJSON_Delete(s);
  for (i = 0; i < sizeof broken / sizeof *broken; i++) {
    s = J(broken[i]);
    if (schema_problem(s, 1) == NULL) fail_msg("broken schema %zu passed: %s", i, broken[i]);
    cJSON_Delete(s);
  }
}

/* ---- Success paths ---- */

static void store_retrieve_delete_shapes(void **state) {
  ctx_t c;
  result_t r = {0};
  (void)state;
  world(&c, NULL);
  assert_int_equal(tool(&c, "memory_store", "{\"key\":\"fact\",\"value\":{\"a\":1,\"b\":[true,null]}}", NULL, &r), 0);
  expect_json(&r, "{\"status\":\"stored\",\"key\":\"fact\",\"metadata\":{}}");
  assert_string_equal(r.message, "");
  assert_string_equal(r.source, "cache");
  assert_int_equal(tool(&c, "memory_retrieve", "{\"key\":\"fact\"}", NULL, &r), 0);
  expect_json(&r, "{\"found\":true,\"key\":\"fact\",\"value\":{\"a\":1,\"b\":[true,null]}}");
  /* Any JSON value: a string, a number, null. */
  assert_int_equal(tool(&c, "memory_store", "{\"key\":\"s\",\"value\":\"hello \\\"you\\\"\"}", NULL, &r), 0);
  assert_int_equal(tool(&c, "memory_retrieve", "{\"key\":\"s\"}", NULL, &r), 0);
  expect_json(&r, "{\"found\":true,\"key\":\"s\",\"value\":\"hello \\\"you\\\"\"}");
  assert_int_equal(tool(&c, "memory_store", "{\"key\":\"n\",\"value\":2.5}", NULL, &r), 0);
  assert_int_equal(tool(&c, "memory_retrieve", "{\"key\":\"n\"}", NULL, &r), 0);
  expect_json(&r, "{\"found\":true,\"key\":\"n\",\"value\":2.5}");
  assert_int_equal(tool(&c, "memory_store", "{\"key\":\"z\",\"value\":null}", NULL, &r), 0);
  assert_int_equal(tool(&c, "memory_retrieve", "{\"key\":\"z\"}", NULL, &r), 0);
  expect_json(&r, "{\"found\":true,\"key\":\"z\",\"value\":null}");
  /* Storing again replaces the value. */
  assert_int_equal(tool(&c, "memory_store", "{\"key\":\"fact\",\"value\":\"v2\"}", NULL, &r), 0);
  assert_int_equal(tool(&c, "memory_retrieve", "{\"key\":\"fact\"}", NULL, &r), 0);
  expect_json(&r, "{\"found\":true,\"key\":\"fact\",\"value\":\"v2\"}");
  /* A missing key is a successful call with found: false. */
  assert_int_equal(tool(&c, "memory_retrieve", "{\"key\":\"nope\"}", NULL, &r), 0);
  expect_json(&r, "{\"found\":false,\"key\":\"nope\",\"message\":\"No memory found for key: nope\"}");
  assert_string_equal(r.message, "");
  /* Delete, then gone; deleting a missing key succeeds with the same shape. */
  assert_int_equal(tool(&c, "memory_delete", "{\"key\":\"fact\"}", NULL, &r), 0);
  expect_json(&r, "{\"status\":\"deleted\",\"key\":\"fact\"}");
  assert_int_equal(exists_in(&c, "cache", NULL, "fact"), 0);
  assert_int_equal(tool(&c, "memory_retrieve", "{\"key\":\"fact\"}", NULL, &r), 0);
  expect_json(&r, "{\"found\":false,\"key\":\"fact\",\"message\":\"No memory found for key: fact\"}");
  assert_int_equal(tool(&c, "memory_delete", "{\"key\":\"fact\"}", NULL, &r), 0);
  expect_json(&r, "{\"status\":\"deleted\",\"key\":\"fact\"}");
  result_reset(&r);
  ctx_close(&c);
}

static void search_shape(void **state) {
  ctx_t c;
  result_t r = {0};
  cJSON *v;
  const cJSON *res, *it;
  (void)state;
  world(&c, NULL);
  assert_int_equal(tool(&c, "memory_store",
                        "{\"key\":\"fruit:apple\",\"value\":{\"text\":\"a red apple pie\"},"
                        "\"metadata\":{\"tags\":[\"fruit\"],\"source\":\"book\"}}",
                        NULL, &r),
                   0);
  assert_int_equal(tool(&c, "memory_store", "{\"key\":\"fruit:banana\",\"value\":{\"text\":\"a yellow banana\"}}", NULL, &r), 0);
  assert_int_equal(tool(&c, "memory_store",
                        "{\"key\":\"veg:carrot\",\"value\":\"an orange carrot\",\"metadata\":{\"source\":\"user\",\"n\":3}}",
                        NULL, &r),
                   0);
  /* Text search: one hit, exactly key, value, score, metadata. */
  assert_int_equal(tool(&c, "memory_search", "{\"query\":\"apple\"}", NULL, &r), 0);
  v = result_json(&r);
  assert_int_equal(cJSON_GetArraySize(v), 2);
  assert_int_equal(cJSON_GetObjectItemCaseSensitive(v, "found")->valueint, 1);
  res = cJSON_GetObjectItemCaseSensitive(v, "results");
  assert_int_equal(cJSON_GetArraySize(res), 1);
  it = cJSON_GetArrayItem(res, 0);
  assert_int_equal(cJSON_GetArraySize(it), 4);
  assert_string_equal(cJSON_GetObjectItemCaseSensitive(it, "key")->valuestring, "fruit:apple");
  {
    cJSON *want = J("{\"text\":\"a red apple pie\"}"), *wm = J("{\"tags\":[\"fruit\"],\"source\":\"book\"}");
    assert_true(cJSON_Compare(cJSON_GetObjectItemCaseSensitive(it, "value"), want, 1));
    assert_true(cJSON_Compare(cJSON_GetObjectItemCaseSensitive(it, "metadata"), wm, 1));
    cJSON_Delete(want);
    cJSON_Delete(wm);
  }
  assert_true(cJSON_GetObjectItemCaseSensitive(it, "score")->valuedouble > 0);
  assert_true(cJSON_GetObjectItemCaseSensitive(it, "score")->valuedouble <= 1);
  cJSON_Delete(v);
  /* Pattern with an empty query: every match, in key order; an item without metadata has no "metadata". */
  assert_int_equal(tool(&c, "memory_search", "{\"query\":\"\",\"pattern\":\"fruit:*\"}", NULL, &r), 0);
  v = result_json(&r);
  assert_int_equal(cJSON_GetObjectItemCaseSensitive(v, "found")->valueint, 2);
  res = cJSON_GetObjectItemCaseSensitive(v, "results");
  assert_string_equal(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(res, 0), "key")->valuestring, "fruit:apple");
  it = cJSON_GetArrayItem(res, 1);
  assert_string_equal(cJSON_GetObjectItemCaseSensitive(it, "key")->valuestring, "fruit:banana");
  assert_int_equal(cJSON_GetArraySize(it), 3);
  assert_false(cJSON_HasObjectItem(it, "metadata"));
  cJSON_Delete(v);
  /* Metadata filter. */
  assert_int_equal(tool(&c, "memory_search", "{\"query\":\"\",\"filter\":{\"n\":{\"$gte\":3}}}", NULL, &r), 0);
  v = result_json(&r);
  assert_int_equal(cJSON_GetObjectItemCaseSensitive(v, "found")->valueint, 1);
  assert_string_equal(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(v, "results"), 0), "key")->valuestring,
                      "veg:carrot");
  cJSON_Delete(v);
  /* limit. */
  assert_int_equal(tool(&c, "memory_search", "{\"query\":\"\",\"limit\":2}", NULL, &r), 0);
  v = result_json(&r);
  assert_int_equal(cJSON_GetObjectItemCaseSensitive(v, "found")->valueint, 2);
  assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(v, "results")), 2);
  cJSON_Delete(v);
  /* BeamMePrompty's object form of the query: {"pattern"} as its ETS backend reads it, and text + filter. */
  assert_int_equal(tool(&c, "memory_search", "{\"query\":{\"pattern\":\"fruit:*\"}}", NULL, &r), 0);
  v = result_json(&r);
  assert_int_equal(cJSON_GetObjectItemCaseSensitive(v, "found")->valueint, 2);
  res = cJSON_GetObjectItemCaseSensitive(v, "results");
  assert_string_equal(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(res, 0), "key")->valuestring, "fruit:apple");
  assert_string_equal(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(res, 1), "key")->valuestring, "fruit:banana");
  cJSON_Delete(v);
  assert_int_equal(tool(&c, "memory_search",
                        "{\"query\":{\"text\":\"orange carrot apple\",\"filter\":{\"source\":\"user\"},\"mode\":\"text\"}}",
                        NULL, &r),
                   0);
  v = result_json(&r);
  assert_int_equal(cJSON_GetObjectItemCaseSensitive(v, "found")->valueint, 1);
  assert_string_equal(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(v, "results"), 0), "key")->valuestring,
                      "veg:carrot");
  cJSON_Delete(v);
  /* No match: found 0, results []. */
  assert_int_equal(tool(&c, "memory_search", "{\"query\":\"spaceship\"}", NULL, &r), 0);
  expect_json(&r, "{\"found\":0,\"results\":[]}");
  result_reset(&r);
  ctx_close(&c);
}

static void list_keys_pages(void **state) {
  ctx_t c;
  result_t r = {0};
  cJSON *v;
  char args[128], cursor[128];
  int i;
  (void)state;
  world(&c, NULL);
  for (i = 1; i <= 5; i++) {
    snprintf(args, sizeof args, "{\"key\":\"k%d\",\"value\":%d}", i, i);
    assert_int_equal(tool(&c, "memory_store", args, NULL, &r), 0);
  }
  assert_int_equal(tool(&c, "memory_list_keys", "{}", NULL, &r), 0);
  expect_json(&r, "{\"count\":5,\"keys\":[\"k1\",\"k2\",\"k3\",\"k4\",\"k5\"]}");
  assert_int_equal(tool(&c, "memory_list_keys", "{\"pattern\":\"k[24]\"}", NULL, &r), 0);
  expect_json(&r, "{\"count\":2,\"keys\":[\"k2\",\"k4\"]}");
  /* Pages of two: a cursor until the last page. */
  assert_int_equal(tool(&c, "memory_list_keys", "{\"limit\":2}", NULL, &r), 0);
  v = result_json(&r);
  assert_int_equal(cJSON_GetObjectItemCaseSensitive(v, "count")->valueint, 2);
  assert_string_equal(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(v, "keys"), 1)->valuestring, "k2");
  assert_true(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(v, "cursor")));
  snprintf(cursor, sizeof cursor, "%s", cJSON_GetObjectItemCaseSensitive(v, "cursor")->valuestring);
  cJSON_Delete(v);
  v = cJSON_CreateObject();
  cJSON_AddNumberToObject(v, "limit", 2);
  cJSON_AddStringToObject(v, "cursor", cursor);
  {
    char *a = cJSON_PrintUnformatted(v);
    assert_int_equal(tool(&c, "memory_list_keys", a, NULL, &r), 0);
    cJSON_free(a);
  }
  cJSON_Delete(v);
  v = result_json(&r);
  assert_string_equal(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(v, "keys"), 0)->valuestring, "k3");
  snprintf(cursor, sizeof cursor, "%s", cJSON_GetObjectItemCaseSensitive(v, "cursor")->valuestring);
  cJSON_Delete(v);
  v = cJSON_CreateObject();
  cJSON_AddNumberToObject(v, "limit", 2);
  cJSON_AddStringToObject(v, "cursor", cursor);
  {
    char *a = cJSON_PrintUnformatted(v);
    assert_int_equal(tool(&c, "memory_list_keys", a, NULL, &r), 0);
    cJSON_free(a);
  }
  cJSON_Delete(v);
  expect_json(&r, "{\"count\":1,\"keys\":[\"k5\"]}"); /* the last page: no cursor */
  /* Another source is empty. */
  assert_int_equal(tool(&c, "memory_list_keys", "{\"memory_source\":\"notes\"}", NULL, &r), 0);
  expect_json(&r, "{\"count\":0,\"keys\":[]}");
  result_reset(&r);
  ctx_close(&c);
}

static void list_sources_shape(void **state) {
  static const char *const no_args[] = {NULL, "", "  ", "{}", "\"{}\"", "\"\"", "null"};
  const char *want = "{\"sources\":[{\"name\":\"cache\",\"type\":\"cache\",\"description\":\"Fast temporary cache for "
                     "session data\",\"default\":true},{\"name\":\"notes\",\"type\":\"cache\",\"description\":\"Long-term "
                     "notes\",\"default\":false}]}";
  ctx_t c;
  result_t r = {0};
  size_t i;
  (void)state;
  world(&c, NULL);
  for (i = 0; i < sizeof no_args / sizeof *no_args; i++) {
    int st = tool(&c, "memory_list_sources", no_args[i], NULL, &r);
    if (i == sizeof no_args / sizeof *no_args - 1) {
      /* JSON null is not an object. */
      assert_int_equal(st, ENGRAM_EINVAL);
      assert_non_null(strstr(r.text, "must be a JSON object"));
      continue;
    }
    assert_int_equal(st, 0);
    expect_json(&r, want);
  }
  result_reset(&r);
  ctx_close(&c);
}

/* ---- Metadata: ttl and tags ---- */

static void ttl_expires_the_item(void **state) {
  ctx_t c;
  result_t r = {0};
  engram_opts_t o = {0};
  (void)state;
  world(&c, NULL);
  assert_int_equal(tool(&c, "memory_store", "{\"key\":\"brief\",\"value\":1,\"metadata\":{\"ttl\":0.05}}", NULL, &r), 0);
  expect_json(&r, "{\"status\":\"stored\",\"key\":\"brief\",\"metadata\":{\"ttl\":0.05}}");
  assert_int_equal(tool(&c, "memory_retrieve", "{\"key\":\"brief\"}", NULL, &r), 0);
  expect_json(&r, "{\"found\":true,\"key\":\"brief\",\"value\":1}");
  /* The item carries the expiry (≈ 50 ms out), and ttl itself is not kept as metadata. */
  o.flags = ENGRAM_OPT_INCLUDE_METADATA;
  assert_int_equal(s_retrieve(&c, "brief", &o, &r), 0);
  assert_true(result_item(&r, 0, "expires_at_ms")->valuedouble > result_item(&r, 0, "updated_at_ms")->valuedouble);
  assert_true(result_item(&r, 0, "expires_at_ms")->valuedouble <= result_item(&r, 0, "updated_at_ms")->valuedouble + 50);
  assert_null(result_item(&r, 0, "metadata"));
  run_for(&c, 120);
  assert_int_equal(tool(&c, "memory_retrieve", "{\"key\":\"brief\"}", NULL, &r), 0);
  expect_json(&r, "{\"found\":false,\"key\":\"brief\",\"message\":\"No memory found for key: brief\"}");
  /* ttl 0 expires at once (as BeamMePrompty); no ttl never expires. */
  assert_int_equal(tool(&c, "memory_store", "{\"key\":\"gone\",\"value\":1,\"metadata\":{\"ttl\":0}}", NULL, &r), 0);
  assert_int_equal(tool(&c, "memory_retrieve", "{\"key\":\"gone\"}", NULL, &r), 0);
  expect_json(&r, "{\"found\":false,\"key\":\"gone\",\"message\":\"No memory found for key: gone\"}");
  assert_int_equal(tool(&c, "memory_store", "{\"key\":\"kept\",\"value\":1,\"metadata\":{\"ttl\":null}}", NULL, &r), 0);
  assert_int_equal(s_retrieve(&c, "kept", &o, &r), 0);
  assert_int_equal((int)result_item(&r, 0, "expires_at_ms")->valuedouble, 0);
  /* An integer number of seconds. */
  assert_int_equal(tool(&c, "memory_store", "{\"key\":\"hour\",\"value\":1,\"metadata\":{\"ttl\":3600}}", NULL, &r), 0);
  assert_int_equal(s_retrieve(&c, "hour", &o, &r), 0);
  assert_true(result_item(&r, 0, "expires_at_ms")->valuedouble - result_item(&r, 0, "updated_at_ms")->valuedouble ==
              3600000.0);
  result_reset(&r);
  ctx_close(&c);
}

static void tags_and_metadata_are_kept(void **state) {
  ctx_t c;
  result_t r = {0};
  engram_opts_t o = {0};
  cJSON *v, *want;
  (void)state;
  world(&c, NULL);
  assert_int_equal(tool(&c, "memory_store",
                        "{\"key\":\"t\",\"value\":\"x\",\"metadata\":{\"tags\":[\"a\",\"b\"],\"source\":\"chat\","
                        "\"ttl\":60,\"mood\":\"calm\"}}",
                        NULL, &r),
                   0);
  expect_json(&r, "{\"status\":\"stored\",\"key\":\"t\",\"metadata\":{\"tags\":[\"a\",\"b\"],\"source\":\"chat\","
                  "\"ttl\":60,\"mood\":\"calm\"}}");
  o.flags = ENGRAM_OPT_INCLUDE_METADATA;
  assert_int_equal(s_retrieve(&c, "t", &o, &r), 0);
  want = J("{\"tags\":[\"a\",\"b\"],\"source\":\"chat\",\"mood\":\"calm\"}");
  assert_true(cJSON_Compare(result_item(&r, 0, "metadata"), want, 1));
  /* Tags come back in search results, and metadata can be filtered on. */
  assert_int_equal(tool(&c, "memory_search", "{\"query\":\"\",\"filter\":{\"mood\":\"calm\"}}", NULL, &r), 0);
  v = result_json(&r);
  assert_int_equal(cJSON_GetObjectItemCaseSensitive(v, "found")->valueint, 1);
  assert_true(cJSON_Compare(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(v, "results"), 0), "metadata"),
                            want, 1));
  cJSON_Delete(v);
  cJSON_Delete(want);
  assert_int_equal(tool(&c, "memory_search", "{\"query\":\"\",\"filter\":{\"mood\":\"angry\"}}", NULL, &r), 0);
  expect_json(&r, "{\"found\":0,\"results\":[]}");
  result_reset(&r);
  ctx_close(&c);
}

/* ---- Sources, namespaces and the application's options ---- */

static void memory_source_namespace_and_opts(void **state) {
  ctx_t c;
  result_t r = {0};
  engram_opts_t o = {0};
  cJSON *meta;
  (void)state;
  world(&c, NULL);
  assert_int_equal(tool(&c, "memory_store", "{\"key\":\"n1\",\"value\":1,\"memory_source\":\"notes\"}", NULL, &r), 0);
  assert_string_equal(r.source, "notes");
  assert_int_equal(exists_in(&c, "notes", NULL, "n1"), 1);
  assert_int_equal(exists_in(&c, "cache", NULL, "n1"), 0);
  assert_int_equal(tool(&c, "memory_retrieve", "{\"key\":\"n1\"}", NULL, &r), 0);
  expect_json(&r, "{\"found\":false,\"key\":\"n1\",\"message\":\"No memory found for key: n1\"}");
  assert_int_equal(tool(&c, "memory_retrieve", "{\"key\":\"n1\",\"memory_source\":\"notes\"}", NULL, &r), 0);
  expect_json(&r, "{\"found\":true,\"key\":\"n1\",\"value\":1}");
  /* A namespace keeps items apart; every tool takes it. */
  assert_int_equal(tool(&c, "memory_store", "{\"key\":\"p\",\"value\":\"in proj\",\"namespace\":\"proj\"}", NULL, &r), 0);
  assert_int_equal(exists_in(&c, "cache", "proj", "p"), 1);
  assert_int_equal(exists_in(&c, "cache", NULL, "p"), 0);
  assert_int_equal(tool(&c, "memory_retrieve", "{\"key\":\"p\",\"namespace\":\"proj\"}", NULL, &r), 0);
  expect_json(&r, "{\"found\":true,\"key\":\"p\",\"value\":\"in proj\"}");
  assert_int_equal(tool(&c, "memory_list_keys", "{\"namespace\":\"proj\"}", NULL, &r), 0);
  expect_json(&r, "{\"count\":1,\"keys\":[\"p\"]}");
  assert_int_equal(tool(&c, "memory_search", "{\"query\":\"proj\",\"namespace\":\"proj\"}", NULL, &r), 0);
  assert_non_null(strstr(r.text, "\"found\":1"));
  assert_int_equal(tool(&c, "memory_delete", "{\"key\":\"p\",\"namespace\":\"proj\"}", NULL, &r), 0);
  assert_int_equal(exists_in(&c, "cache", "proj", "p"), 0);
  /* The application confines the agent: opts->ns, opts->source; the model's namespace is a level below. */
  o.ns = "tenant";
  o.source = "notes";
  assert_int_equal(tool(&c, "memory_store", "{\"key\":\"a\",\"value\":1}", &o, &r), 0);
  assert_int_equal(exists_in(&c, "notes", "tenant", "a"), 1);
  assert_int_equal(tool(&c, "memory_store", "{\"key\":\"b\",\"value\":1,\"namespace\":\"proj\"}", &o, &r), 0);
  assert_int_equal(exists_in(&c, "notes", "tenant/proj", "b"), 1);
  assert_int_equal(exists_in(&c, "notes", "proj", "b"), 0);
  assert_int_equal(tool(&c, "memory_list_keys", "{}", &o, &r), 0);
  expect_json(&r, "{\"count\":1,\"keys\":[\"a\"]}");
  /* The application's ttl and metadata apply when the model gives none. */
  meta = J("{\"agent\":\"planner\"}");
  o.metadata = meta;
  o.flags = ENGRAM_OPT_TTL;
  o.ttl_ms = 30;
  assert_int_equal(tool(&c, "memory_store", "{\"key\":\"d\",\"value\":1}", &o, &r), 0);
  expect_json(&r, "{\"status\":\"stored\",\"key\":\"d\",\"metadata\":{\"agent\":\"planner\"}}");
  assert_int_equal(exists_in(&c, "notes", "tenant", "d"), 1);
  run_for(&c, 80);
  assert_int_equal(exists_in(&c, "notes", "tenant", "d"), 0);
  cJSON_Delete(meta);
  result_reset(&r);
  ctx_close(&c);
}

/* ---- Errors ---- */

typedef struct {
  const char *name, *args;
  int status;
  const char *says;
} bad_call_t;

static void bad_arguments_are_error_results(void **state) {
  static const bad_call_t calls[] = {
      {"memory_store", "{\"value\":1}", ENGRAM_EINVAL, "memory_store: \"key\" is required"},
      {"memory_store", "{\"key\":5,\"value\":1}", ENGRAM_EINVAL, "memory_store: \"key\" must be a string, not a number"},
      {"memory_store", "{\"key\":\"\",\"value\":1}", ENGRAM_EINVAL, "\"key\" must not be empty"},
      {"memory_store", "{\"key\":\"k\"}", ENGRAM_EINVAL, "memory_store: \"value\" is required"},
      {"memory_store", "{\"key\":\"k\",\"value\":1,\"metadata\":\"x\"}", ENGRAM_EINVAL, "\"metadata\" must be an object, not a string"},
      {"memory_store", "{\"key\":\"k\",\"value\":1,\"metadata\":{\"ttl\":\"10\"}}", ENGRAM_EINVAL,
       "\"metadata.ttl\" must be a number of seconds, not a string"},
      {"memory_store", "{\"key\":\"k\",\"value\":1,\"metadata\":{\"ttl\":-1}}", ENGRAM_EINVAL, "\"metadata.ttl\" must be a number of seconds 0.."},
      {"memory_store", "{\"key\":\"k\",\"value\":1,\"metadata\":{\"tags\":\"a\"}}", ENGRAM_EINVAL,
       "\"metadata.tags\" must be an array of strings, not a string"},
      {"memory_store", "{\"key\":\"k\",\"value\":1,\"metadata\":{\"tags\":[\"a\",1]}}", ENGRAM_EINVAL, "an element is a number"},
      {"memory_store", "{\"key\":\"k\",\"value\":1,\"colour\":\"red\"}", ENGRAM_EINVAL,
       "unknown argument \"colour\" (the arguments are: key, value, metadata, memory_source, namespace)"},
      {"memory_store", "{\"key\":\"k\",\"value\":1,\"memory_source\":7}", ENGRAM_EINVAL, "\"memory_source\" must be a string, not a number"},
      {"memory_store", "{\"key\":\"k\",\"value\":1,\"memory_source\":\"\"}", ENGRAM_EINVAL, "\"memory_source\" must not be empty"},
      {"memory_store", "{\"key\":\"k\",\"value\":1,\"namespace\":[\"a\"]}", ENGRAM_EINVAL, "\"namespace\" must be a string, not an array"},
      {"memory_retrieve", "{}", ENGRAM_EINVAL, "memory_retrieve: \"key\" is required"},
      {"memory_retrieve", "{\"key\":true}", ENGRAM_EINVAL, "\"key\" must be a string, not a boolean"},
      {"memory_delete", "{\"key\":{}}", ENGRAM_EINVAL, "memory_delete: \"key\" must be a string, not an object"},
      {"memory_delete", "{\"key\":\"k\",\"query\":\"x\"}", ENGRAM_EINVAL, "unknown argument \"query\""},
      {"memory_search", "{}", ENGRAM_EINVAL, "memory_search: \"query\" is required"},
      {"memory_search", "{\"query\":5}", ENGRAM_EINVAL, "\"query\" must be a string or an object, not a number"},
      {"memory_search", "{\"query\":{\"patern\":\"a*\"}}", ENGRAM_EINVAL,
       "unknown member \"patern\" of \"query\" (the members are: text, pattern, filter, mode, alpha)"},
      {"memory_search", "{\"query\":{\"text\":1}}", ENGRAM_EINVAL, "\"query.text\" must be a string, not a number"},
      {"memory_search", "{\"query\":{\"pattern\":\"a*\"},\"pattern\":\"b*\"}", ENGRAM_EINVAL,
       "\"pattern\" is given twice: in \"query\" and beside it"},
      {"memory_search", "{\"query\":{\"filter\":{\"a\":1}},\"filter\":{\"b\":1}}", ENGRAM_EINVAL,
       "\"filter\" is given twice"},
      {"memory_search", "{\"query\":{\"mode\":\"semantic\"}}", ENGRAM_EINVAL,
       "\"query.mode\" must be \"text\", \"vector\" or \"hybrid\", not \"semantic\""},
      {"memory_search", "{\"query\":\"a\",\"mode\":\"fuzzy\"}", ENGRAM_EINVAL,
       "memory_search: \"mode\" must be \"text\", \"vector\" or \"hybrid\", not \"fuzzy\""},
      {"memory_search", "{\"query\":\"a\",\"mode\":3}", ENGRAM_EINVAL, "\"mode\" must be a string, not a number"},
      {"memory_search", "{\"query\":{\"text\":\"a\",\"mode\":\"text\"},\"mode\":\"text\"}", ENGRAM_EINVAL,
       "\"mode\" is given twice: in \"query\" and beside it"},
      {"memory_search", "{\"query\":\"a\",\"mode\":\"hybrid\",\"alpha\":1.5}", ENGRAM_EINVAL,
       "\"alpha\" must be a number in [0, 1], not 1.5"},
      {"memory_search", "{\"query\":\"a\",\"mode\":\"hybrid\",\"alpha\":\"0.5\"}", ENGRAM_EINVAL,
       "\"alpha\" must be a number in [0, 1], not a string"},
      {"memory_search", "{\"query\":{\"text\":\"a\",\"alpha\":-0.1,\"mode\":\"hybrid\"}}", ENGRAM_EINVAL,
       "\"query.alpha\" must be a number in [0, 1], not -0.1"},
      {"memory_search", "{\"query\":\"a\",\"alpha\":0.5}", ENGRAM_EINVAL,
       "\"alpha\" weighs the vector ranking in mode \"hybrid\" only (mode is not given)"},
      {"memory_search", "{\"query\":\"\",\"mode\":\"hybrid\"}", ENGRAM_EINVAL, "mode \"hybrid\" needs words in \"query\""},
      {"memory_search", "{\"query\":{\"filter\":{\"n\":{\"$bogus\":1}}}}", ENGRAM_EINVAL, "memory_search: \"filter\": "},
      {"memory_search", "{\"query\":{\"pattern\":\"[a\"}}", ENGRAM_EINVAL, "memory_search: "},
      {"memory_search", "{\"query\":\"a\",\"limit\":0}", ENGRAM_EINVAL, "memory_search: \"limit\" must be an integer 1..100"},
      {"memory_search", "{\"query\":\"a\",\"limit\":101}", ENGRAM_EINVAL, "memory_search: \"limit\" must be an integer 1..100"},
      {"memory_search", "{\"query\":\"a\",\"limit\":2.5}", ENGRAM_EINVAL, "memory_search: \"limit\" must be an integer 1..100"},
      {"memory_search", "{\"query\":\"a\",\"limit\":\"5\"}", ENGRAM_EINVAL, "\"limit\" must be an integer 1..100, not a string"},
      {"memory_search", "{\"query\":\"a\",\"filter\":\"x\"}", ENGRAM_EINVAL, "\"filter\" must be an object, not a string"},
      {"memory_search", "{\"query\":\"a\",\"filter\":{\"n\":{\"$near\":1}}}", ENGRAM_EINVAL, "memory_search: \"filter\": "},
      {"memory_search", "{\"query\":\"a\",\"pattern\":\"[abc\"}", ENGRAM_EINVAL, "\"pattern\": \"[abc\" is not a valid glob"},
      {"memory_list_keys", "{\"limit\":1001}", ENGRAM_EINVAL, "memory_list_keys: \"limit\" must be an integer 1..1000"},
      {"memory_list_keys", "{\"cursor\":5}", ENGRAM_EINVAL, "\"cursor\" must be a string, not a number"},
      {"memory_list_keys", "{\"key\":\"k\"}", ENGRAM_EINVAL,
       "unknown argument \"key\" (the arguments are: pattern, limit, cursor, memory_source, namespace)"},
      {"memory_list_sources", "{\"memory_source\":\"cache\"}", ENGRAM_EINVAL,
       "memory_list_sources: unknown argument \"memory_source\" (this tool takes no arguments)"},
      /* Unknown tools. */
      {"memory_forget", "{\"key\":\"k\"}", ENGRAM_EINVAL,
       "unknown tool \"memory_forget\" (the memory tools are memory_store, memory_retrieve, memory_search, "
       "memory_delete, memory_list_keys, memory_list_sources; the thread tools are memory_thread_append, "
       "memory_thread_window, memory_thread_list, memory_thread_search)"},
      {"", "{}", ENGRAM_EINVAL, "unknown tool \"\""},
      /* Malformed arguments, and arguments that are not an object. */
      {"memory_store", "{\"key\":\"k\",", ENGRAM_EINVAL, "memory_store: arguments: malformed JSON near offset"},
      {"memory_store", "{\"key\":\"k\",\"value\":1} trailing", ENGRAM_EINVAL,
       "malformed JSON: text after the document at offset 22"},
      {"memory_store", "[1,2]", ENGRAM_EINVAL, "memory_store: arguments must be a JSON object, not an array"},
      {"memory_store", "42", ENGRAM_EINVAL, "arguments must be a JSON object, not a number"},
      {"memory_store", "\"[1]\"", ENGRAM_EINVAL, "arguments must be a JSON object; the string holds an array"},
      {"memory_store", "\"\\\"{}\\\"\"", ENGRAM_EINVAL, "the string holds a string"},
      {"memory_store", "\"{\\\"key\\\":\"", ENGRAM_EINVAL, "arguments: the string holds malformed JSON near offset 7"},
      /* Unknown sources, detected up front; the message lists the sources there are. */
      {"memory_store", "{\"key\":\"k\",\"value\":1,\"memory_source\":\"x\"}", ENGRAM_EUNKNOWN_SOURCE,
       "memory_store: unknown memory_source \"x\" (available: \"cache\", \"notes\")"},
      {"memory_retrieve", "{\"key\":\"k\",\"memory_source\":\"vectors\"}", ENGRAM_EUNKNOWN_SOURCE,
       "memory_retrieve: unknown memory_source \"vectors\" (available: \"cache\", \"notes\")"},
      {"memory_search", "{\"query\":\"k\",\"memory_source\":\"x\"}", ENGRAM_EUNKNOWN_SOURCE, "memory_search: unknown memory_source \"x\""},
      {"memory_delete", "{\"key\":\"k\",\"memory_source\":\"x\"}", ENGRAM_EUNKNOWN_SOURCE, "memory_delete: unknown memory_source \"x\""},
      {"memory_list_keys", "{\"memory_source\":\"x\"}", ENGRAM_EUNKNOWN_SOURCE, "memory_list_keys: unknown memory_source \"x\""},
      /* The source rejects a cursor it did not make: an error from the operation's own callback. */
      {"memory_list_keys", "{\"cursor\":\"garbage\"}", ENGRAM_EINVAL, "memory_list_keys: source 'cache': cursor \"garbage\""},
  };
  ctx_t c;
  result_t r = {0};
  size_t i;
  char *long_key, *args;
  (void)state;
  world(&c, NULL);
  for (i = 0; i < sizeof calls / sizeof *calls; i++)
    expect_error(&c, calls[i].name, calls[i].args, NULL, calls[i].status, calls[i].says);
  /* Too long a key or namespace. */
  long_key = calloc(1, 2100);
  args = calloc(1, 2200);
  memset(long_key, 'x', 2000);
  snprintf(args, 2200, "{\"key\":\"%s\",\"value\":1}", long_key);
  expect_error(&c, "memory_store", args, NULL, ENGRAM_EINVAL, "\"key\" is 2000 bytes long, the limit is 1024");
  long_key[300] = '\0';
  snprintf(args, 2200, "{\"key\":\"k\",\"namespace\":\"%s\"}", long_key);
  expect_error(&c, "memory_retrieve", args, NULL, ENGRAM_EINVAL, "\"namespace\" is 300 bytes long, the limit is 256");
  free(long_key);
  free(args);
  /* A key that is not UTF-8: refused before the arguments are parsed, naming the argument. */
  expect_error(&c, "memory_store", "{\"key\":\"\xff\xfe\",\"value\":1}", NULL, ENGRAM_EINVAL,
               "memory_store: arguments.key: invalid UTF-8 at offset 8");
  /* Nothing was stored by any of them. */
  assert_int_equal(tool(&c, "memory_list_keys", "{}", NULL, &r), 0);
  expect_json(&r, "{\"count\":0,\"keys\":[]}");
  assert_int_equal(tool(&c, "memory_list_keys", "{\"memory_source\":\"notes\"}", NULL, &r), 0);
  expect_json(&r, "{\"count\":0,\"keys\":[]}");
  result_reset(&r);
  ctx_close(&c);
}

static void arguments_as_a_string(void **state) {
  ctx_t c;
  result_t r = {0};
  (void)state;
  world(&c, NULL);
  /* OpenAI: "arguments": "{\"key\": ...}" — the JSON string holding the object. */
  assert_int_equal(tool(&c, "memory_store", "\"{\\\"key\\\":\\\"s\\\",\\\"value\\\":{\\\"x\\\":[1,2]}}\"", NULL, &r), 0);
  expect_json(&r, "{\"status\":\"stored\",\"key\":\"s\",\"metadata\":{}}");
  assert_int_equal(tool(&c, "memory_retrieve", " \"{\\\"key\\\": \\\"s\\\"}\" \n", NULL, &r), 0);
  expect_json(&r, "{\"found\":true,\"key\":\"s\",\"value\":{\"x\":[1,2]}}");
  /* null for optional arguments means "not given". */
  assert_int_equal(tool(&c, "memory_store",
                        "{\"key\":\"t\",\"value\":1,\"metadata\":null,\"memory_source\":null,\"namespace\":null}", NULL, &r),
                   0);
  expect_json(&r, "{\"status\":\"stored\",\"key\":\"t\",\"metadata\":{}}");
  assert_int_equal(tool(&c, "memory_search", "{\"query\":\"\",\"limit\":null,\"pattern\":null,\"filter\":null}", NULL, &r), 0);
  assert_non_null(strstr(r.text, "\"found\":2"));
  assert_int_equal(tool(&c, "memory_search", "{\"query\":\"\",\"limit\":1.0}", NULL, &r), 0); /* 1.0 is an integer */
  assert_non_null(strstr(r.text, "\"found\":1"));
  result_reset(&r);
  ctx_close(&c);
}

/* ---- Hostile strings: the input rules ---- */

/* The result text is valid UTF-8 (and so is reply->message, when it fits the harness's copy). */
static void expect_utf8(const result_t *r, const char *what) {
  if (!engram_utf8_valid(r->text, strlen(r->text))) fail_msg("%s: the result is not valid UTF-8: %s", what, r->text);
  if (!engram_utf8_valid(r->message, strlen(r->message))) fail_msg("%s: reply->message is not valid UTF-8", what);
}

static void hostile_strings_are_refused(void **state) {
  static const bad_call_t calls[] = {
      /* "\u0000" in every string an argument can hold: cJSON would cut there ("a\u0000b" → the key "a"). */
      {"memory_store", "{\"key\":\"a\\u0000b\",\"value\":1}", ENGRAM_EINVAL,
       "memory_store: arguments.key: \\u0000 (NUL) is not allowed in a string"},
      {"memory_retrieve", "{\"key\":\"a\\u0000\"}", ENGRAM_EINVAL, "memory_retrieve: arguments.key: \\u0000 (NUL)"},
      {"memory_delete", "{\"key\":\"\\u0000\"}", ENGRAM_EINVAL, "memory_delete: arguments.key: \\u0000 (NUL)"},
      {"memory_store", "{\"key\":\"k\",\"value\":1,\"namespace\":\"n\\u0000x\"}", ENGRAM_EINVAL,
       "arguments.namespace: \\u0000 (NUL)"},
      {"memory_store", "{\"key\":\"k\",\"value\":1,\"memory_source\":\"cache\\u0000x\"}", ENGRAM_EINVAL,
       "arguments.memory_source: \\u0000 (NUL)"},
      {"memory_store", "{\"key\":\"k\",\"value\":{\"t\":\"a\\u0000b\"}}", ENGRAM_EINVAL, "arguments.value.t: \\u0000 (NUL)"},
      {"memory_store", "{\"key\":\"k\",\"value\":{\"items\":[1,2,3,\"\\u0000\"]}}", ENGRAM_EINVAL,
       "arguments.value.items[3]: \\u0000 (NUL)"},
      {"memory_store", "{\"key\":\"k\",\"value\":{\"a\\u0000\":1}}", ENGRAM_EINVAL,
       "arguments.value: \\u0000 (NUL) is not allowed in a member name"},
      {"memory_store", "{\"key\":\"k\",\"value\":1,\"metadata\":{\"tags\":[\"a\",\"b\\u0000\"]}}", ENGRAM_EINVAL,
       "arguments.metadata.tags[1]: \\u0000 (NUL)"},
      {"memory_store", "{\"key\\u0000x\":\"k\",\"value\":1}", ENGRAM_EINVAL,
       "memory_store: arguments: \\u0000 (NUL) is not allowed in a member name"},
      {"memory_search", "{\"query\":\"fox\\u0000\"}", ENGRAM_EINVAL, "arguments.query: \\u0000 (NUL)"},
      {"memory_search", "{\"query\":\"\",\"filter\":{\"tag\":\"x\\u0000\"}}", ENGRAM_EINVAL, "arguments.filter.tag: \\u0000"},
      {"memory_list_keys", "{\"pattern\":\"a*\\u0000\"}", ENGRAM_EINVAL, "arguments.pattern: \\u0000 (NUL)"},
      {"memory_list_keys", "{\"cursor\":\"\\u0000\"}", ENGRAM_EINVAL, "arguments.cursor: \\u0000 (NUL)"},
      /* OpenAI's string form: the outer string holds a NUL after the object, or the object holds one. */
      {"memory_store", "\"{\\\"key\\\":\\\"k\\\",\\\"value\\\":1}\\u0000garbage\"", ENGRAM_EINVAL,
       "memory_store: arguments: \\u0000 (NUL) is not allowed in a string"},
      {"memory_store", "\"{\\\"key\\\":\\\"a\\\\u0000b\\\",\\\"value\\\":1}\"", ENGRAM_EINVAL,
       "memory_store: arguments.key: \\u0000 (NUL)"},
      /* Bytes that are not UTF-8, anywhere. */
      {"memory_store", "{\"key\":\"k\",\"value\":\"\xff\"}", ENGRAM_EINVAL, "arguments.value: invalid UTF-8 at offset 20"},
      {"memory_store", "{\"key\":\"k\",\"value\":{\"t\\n\xc3\":1}}", ENGRAM_EINVAL, "arguments.value: a member name holds invalid UTF-8"},
      {"memory_store", "{\"key\":\"k\",\"value\":1,\"metadata\":{\"tags\":[\"\xc3\"]}}", ENGRAM_EINVAL,
       "arguments.metadata.tags[0]: invalid UTF-8"},
      {"memory_store", "{\"key\":\"k\",\"value\":1,\"namespace\":\"\xed\xa0\x80\"}", ENGRAM_EINVAL, /* a surrogate, encoded */
       "arguments.namespace: invalid UTF-8"},
      {"memory_store", "{\"key\":\"k\",\"value\":1,\"memory_source\":\"c\xff\"}", ENGRAM_EINVAL, "arguments.memory_source: invalid UTF-8"},
      {"memory_search", "{\"query\":\"\",\"pattern\":\"\xff[\"}", ENGRAM_EINVAL, "arguments.pattern: invalid UTF-8"},
      {"memory_search", "{\"query\":\"\xc0\xaf\"}", ENGRAM_EINVAL, "arguments.query: invalid UTF-8"}, /* overlong */
      {"memory_store", "{\"key\":\"k\",\"value\":1}\xff", ENGRAM_EINVAL, "text after the document at offset 21"},
      /* Escaped lone surrogates: no character, and cJSON's own refusal did not say so. */
      {"memory_store", "{\"key\":\"\\ud800\",\"value\":1}", ENGRAM_EINVAL,
       "memory_store: arguments.key: \\ud800 is a lone UTF-16 surrogate"},
      {"memory_store", "{\"key\":\"k\",\"value\":[\"\\udc00x\"]}", ENGRAM_EINVAL, "arguments.value[0]: \\udc00 is a lone UTF-16 surrogate"},
      {"memory_store", "{\"key\":\"k\",\"value\":\"\\uD83D\\u0041\"}", ENGRAM_EINVAL, "arguments.value: \\uD83D is a lone"},
      /* Text after the document. */
      {"memory_store", "{\"key\":\"k\",\"value\":1}{}", ENGRAM_EINVAL, "text after the document at offset 21"},
      {"memory_store", "\"{\\\"key\\\":\\\"k\\\",\\\"value\\\":1} x\"", ENGRAM_EINVAL,
       "arguments: the string holds malformed JSON: text after the document at offset 22"},
  };
  ctx_t c;
  result_t r = {0};
  size_t i;
  char *long_text, *args;
  (void)state;
  world(&c, NULL);
  for (i = 0; i < sizeof calls / sizeof *calls; i++) {
    expect_error(&c, calls[i].name, calls[i].args, NULL, calls[i].status, calls[i].says);
    tool(&c, calls[i].name, calls[i].args, NULL, &r);
    expect_utf8(&r, calls[i].args);
  }
  /* Nesting deeper than cJSON's limit is refused by name, and deep text does not overflow the stack. */
  long_text = calloc(1, 200100);
  args = calloc(1, 200200);
  memset(long_text, '[', 100000);
  memset(long_text + 100000, ']', 100000);
  snprintf(args, 200200, "{\"key\":\"k\",\"value\":%s}", long_text);
  expect_error(&c, "memory_store", args, NULL, ENGRAM_EINVAL, "arguments.value[0][0][0]");
  expect_error(&c, "memory_store", args, NULL, ENGRAM_EINVAL, "nested deeper than 1000 levels");
  /* A pair of escapes is one character, stored and found again. */
  assert_int_equal(tool(&c, "memory_store", "{\"key\":\"smile \\ud83d\\ude00\",\"value\":\"\\u00e9\"}", NULL, &r), 0);
  assert_int_equal(tool(&c, "memory_retrieve", "{\"key\":\"smile \xf0\x9f\x98\x80\"}", NULL, &r), 0);
  expect_json(&r, "{\"found\":true,\"key\":\"smile \xf0\x9f\x98\x80\",\"value\":\"\xc3\xa9\"}");
  assert_int_equal(tool(&c, "memory_delete", "{\"key\":\"smile \xf0\x9f\x98\x80\"}", NULL, &r), 0);
  /* Nothing else was stored: no key "a", no item in "cache" from "cache\u0000x". */
  assert_int_equal(tool(&c, "memory_list_keys", "{}", NULL, &r), 0);
  expect_json(&r, "{\"count\":0,\"keys\":[]}");
  assert_int_equal(tool(&c, "memory_list_keys", "{\"memory_source\":\"notes\"}", NULL, &r), 0);
  expect_json(&r, "{\"count\":0,\"keys\":[]}");
  free(long_text);
  free(args);
  result_reset(&r);
  ctx_close(&c);
}

/* Caller text quoted in a message is cut on a character boundary, control characters and bad bytes escaped. */
static void quoted_text_is_cut_on_characters(void **state) {
  ctx_t c;
  result_t r = {0};
  char name[400], key[ENGRAM_KEY_MAX + 1], args[4096], want[ENGRAM_KEY_MAX + 64];
  cJSON *v;
  size_t i;
  (void)state;
  world(&c, NULL);
  /* Tool names: "x" then 2-byte characters, so that a cut at 100 bytes fell inside one. */
  strcpy(name, "x");
  for (i = 0; i < 150; i++) strcat(name, "\xc3\xa9");
  expect_error(&c, name, "{}", NULL, ENGRAM_EINVAL, "unknown tool \"x\xc3\xa9\xc3\xa9");
  tool(&c, name, "{}", NULL, &r);
  expect_utf8(&r, "long tool name");
  assert_non_null(strstr(r.text, "...\\\" (the memory tools are"));
  /* Bytes that are not UTF-8 and control characters in a tool name are shown escaped, never echoed. */
  expect_error(&c, "memory_\xff\x01store\n", "{}", NULL, ENGRAM_EINVAL, "unknown tool \"memory_\\xff\\u0001store\\n\"");
  tool(&c, "memory_\xff\x01store\n", "{}", NULL, &r);
  expect_utf8(&r, "tool name with bad bytes");
  /* An unknown argument, a pattern and an unknown source, each long and multi-byte. */
  snprintf(args, sizeof args, "{\"key\":\"k\",\"value\":1,\"%s\":1}", name);
  expect_error(&c, "memory_store", args, NULL, ENGRAM_EINVAL, "unknown argument \"x\xc3\xa9");
  tool(&c, "memory_store", args, NULL, &r);
  expect_utf8(&r, "unknown argument");
  snprintf(args, sizeof args, "{\"query\":\"\",\"pattern\":\"[%s\"}", name + 1);
  expect_error(&c, "memory_search", args, NULL, ENGRAM_EINVAL, "is not a valid glob");
  tool(&c, "memory_search", args, NULL, &r);
  expect_utf8(&r, "pattern");
  snprintf(args, sizeof args, "{\"key\":\"k\",\"value\":1,\"memory_source\":\"%s\\n\"}", name);
  expect_error(&c, "memory_store", args, NULL, ENGRAM_EUNKNOWN_SOURCE, "unknown memory_source \"x\xc3\xa9");
  tool(&c, "memory_store", args, NULL, &r);
  expect_utf8(&r, "memory_source");
  snprintf(args, sizeof args, "{\"key\":\"k\",\"value\":1,\"memory_source\":\"a\\tb\"}");
  expect_error(&c, "memory_store", args, NULL, ENGRAM_EUNKNOWN_SOURCE, "unknown memory_source \"a\\tb\"");
  /* The whole key in "No memory found for key", however long: 1 + 2 × 511 = 1,023 bytes. */
  strcpy(key, "x");
  for (i = 0; i < 511; i++) strcat(key, "\xc3\xa9");
  snprintf(args, sizeof args, "{\"key\":\"%s\"}", key);
  assert_int_equal(tool(&c, "memory_retrieve", args, NULL, &r), 0);
  expect_utf8(&r, "long key");
  v = result_json(&r);
  snprintf(want, sizeof want, "No memory found for key: %s", key);
  assert_string_equal(cJSON_GetObjectItemCaseSensitive(v, "message")->valuestring, want);
  cJSON_Delete(v);
  result_reset(&r);
  ctx_close(&c);
}

static int direct_calls;
static void count_cb(int status, const engram_reply_t *reply, void *ud) {
  (void)status;
  (void)reply;
  (void)ud;
  direct_calls++;
}

static void refused_at_once(void **state) {
  ctx_t c;
  result_t r = {0};
  (void)state;
  world(&c, NULL);
  direct_calls = 0;
  assert_int_equal(engram_tools_call(NULL, "memory_store", "{}", NULL, count_cb, NULL), ENGRAM_EINVAL);
  assert_non_null(strstr(engram_last_error(), "mgr"));
  assert_int_equal(engram_tools_call(c.mgr, NULL, "{}", NULL, count_cb, NULL), ENGRAM_EINVAL);
  assert_non_null(strstr(engram_last_error(), "name"));
  assert_int_equal(engram_tools_call(c.mgr, "memory_store", "{}", NULL, NULL, NULL), ENGRAM_EINVAL);
  assert_non_null(strstr(engram_last_error(), "cb"));
  run_for(&c, 5);
  assert_int_equal(direct_calls, 0);
  /* After close: ENGRAM_ECLOSED at once for a good call and for a bad one alike, and no callback. */
  assert_int_equal(engram_manager_close(c.mgr, capture_cb, &r), 0);
  assert_int_equal(engram_tools_call(c.mgr, "memory_store", "{\"key\":\"k\",\"value\":1}", NULL, count_cb, NULL),
                   ENGRAM_ECLOSED);
  assert_int_equal(engram_tools_call(c.mgr, "memory_store", "{}", NULL, count_cb, NULL), ENGRAM_ECLOSED);
  assert_int_equal(engram_tools_call(c.mgr, "memory_list_sources", NULL, NULL, count_cb, NULL), ENGRAM_ECLOSED);
  wait_for(&c, &r.calls, 1, 10000);
  assert_int_equal(uv_run(&c.loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(direct_calls, 0);
  assert_int_equal(r.calls, 1);
  result_reset(&r);
  assert_int_equal(uv_loop_close(&c.loop), 0);
}

static void operation_errors_pass_through(void **state) {
  engram_manager_config_t cfg = {0};
  ctx_t c;
  result_t r = {0}, r2 = {0};
  engram_opts_t o = {0};
  cJSON *v;
  (void)state;
  cfg.mailbox_capacity = 1;
  world(&c, &cfg);
  /* The operation's own error: CREATE_ONLY from the application, the key exists → ENGRAM_EEXIST. */
  o.flags = ENGRAM_OPT_CREATE_ONLY;
  assert_int_equal(tool(&c, "memory_store", "{\"key\":\"once\",\"value\":1}", &o, &r), 0);
  expect_error(&c, "memory_store", "{\"key\":\"once\",\"value\":2}", &o, ENGRAM_EEXIST,
               "memory_store: source 'cache': key 'once' already exists");
  assert_int_equal(tool(&c, "memory_retrieve", "{\"key\":\"once\"}", NULL, &r), 0);
  expect_json(&r, "{\"found\":true,\"key\":\"once\",\"value\":1}");
  /* A full mailbox refuses the second call at once: an error result through the callback (ENGRAM_EBUSY). */
  result_reset(&r);
  assert_int_equal(engram_tools_call(c.mgr, "memory_store", "{\"key\":\"a\",\"value\":1}", NULL, capture_cb, &r), 0);
  assert_int_equal(engram_tools_call(c.mgr, "memory_store", "{\"key\":\"b\",\"value\":1}", NULL, capture_cb, &r2), 0);
  assert_int_equal(r.calls + r2.calls, 0);
  wait_for(&c, &r.calls, 1, 10000);
  wait_for(&c, &r2.calls, 1, 10000);
  uv_run(&c.loop, UV_RUN_NOWAIT);
  assert_int_equal(r.calls, 1);
  assert_int_equal(r2.calls, 1);
  assert_int_equal(r.status, 0);
  assert_int_equal(r2.status, ENGRAM_EBUSY);
  v = J(r2.text);
  assert_non_null(strstr(cJSON_GetObjectItemCaseSensitive(v, "error")->valuestring, "memory_store: source 'cache': mailbox full"));
  cJSON_Delete(v);
  assert_int_equal(exists_in(&c, "cache", NULL, "b"), 0);
  result_reset(&r);
  result_reset(&r2);
  ctx_close(&c);
}

/* With opts->cq the result (success or error) waits in the queue until the polling thread runs it. */
static void completion_queue_delivery(void **state) {
  static const char *const cases[][3] = {
      {"memory_store", "{\"key\":\"q\",\"value\":1}", "{\"status\":\"stored\",\"key\":\"q\",\"metadata\":{}}"},
      {"memory_retrieve", "{\"key\":\"q\"}", "{\"found\":true,\"key\":\"q\",\"value\":1}"},
      {"memory_forget", "{}", NULL},
      {"memory_store", "{}", NULL},
      {"memory_store", "{\"key\":\"q\",\"value\":1,\"memory_source\":\"x\"}", NULL},
  };
  ctx_t c;
  result_t r = {0};
  engram_opts_t o = {0};
  engram_cq_t *cq;
  size_t i;
  int waited;
  (void)state;
  world(&c, NULL);
  assert_int_equal(engram_cq_new(&cq, NULL), 0);
  o.cq = cq;
  for (i = 0; i < sizeof cases / sizeof *cases; i++) {
    result_reset(&r);
    assert_int_equal(engram_tools_call(c.mgr, cases[i][0], cases[i][1], &o, capture_cb, &r), 0);
    for (waited = 0; engram_cq_pending(cq) == 0 && waited < 5000; waited += 5) run_for(&c, 5);
    assert_int_equal(engram_cq_pending(cq), 1);
    assert_int_equal(r.calls, 0); /* the loop ran, but the reply waits for the poll */
    assert_int_equal(engram_cq_poll(cq, 0), 1);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.op, ENGRAM_OP_TOOL_CALL);
    if (cases[i][2] != NULL) {
      assert_int_equal(r.status, 0);
      expect_json(&r, cases[i][2]);
    } else {
      assert_true(r.status != 0);
      assert_non_null(strstr(r.text, "{\"error\":"));
    }
    run_for(&c, 2);
    assert_int_equal(engram_cq_poll(cq, 0), 0);
    assert_int_equal(r.calls, 1);
  }
  engram_cq_free(cq);
  result_reset(&r);
  ctx_close(&c);
}

/* ---- The thread tools ---- */

/* Member name of the result, as a number. */
static double rnum(const cJSON *v, const char *name) {
  const cJSON *x = cJSON_GetObjectItemCaseSensitive(v, name);
  if (!cJSON_IsNumber(x)) fail_msg("result member %s is not a number", name);
  return x->valuedouble;
}

static void thread_append_and_window(void **state) {
  ctx_t c;
  result_t r = {0};
  cJSON *v, *want;
  engram_opts_t o = {0};
  (void)state;
  world(&c, NULL);
  assert_int_equal(tool(&c, "memory_thread_append",
                        "{\"thread\":\"chat-1\",\"role\":\"system\",\"content\":\"Be brief.\"}", NULL, &r), 0);
  expect_json(&r, "{\"status\":\"appended\",\"thread\":\"chat-1\",\"seq\":1,\"count\":1,\"trimmed\":0}");
  assert_string_equal(r.source, "cache");
  assert_int_equal(tool(&c, "memory_thread_append",
                        "{\"thread\":\"chat-1\",\"role\":\"user\",\"content\":\"Weather in Paris?\","
                        "\"metadata\":{\"lang\":\"en\"}}", NULL, &r), 0);
  expect_json(&r, "{\"status\":\"appended\",\"thread\":\"chat-1\",\"seq\":2,\"count\":2,\"trimmed\":0}");
  /* OpenAI's string form of the arguments, an assistant tool call without content, its result. */
  assert_int_equal(tool(&c, "memory_thread_append",
                        "\"{\\\"thread\\\":\\\"chat-1\\\",\\\"role\\\":\\\"assistant\\\",\\\"content\\\":null,"
                        "\\\"tool_calls\\\":[{\\\"id\\\":\\\"call_1\\\",\\\"type\\\":\\\"function\\\",\\\"function\\\":"
                        "{\\\"name\\\":\\\"weather\\\",\\\"arguments\\\":\\\"{\\\\\\\"city\\\\\\\":\\\\\\\"Paris\\\\\\\"}\\\"}}]}\"",
                        NULL, &r), 0);
  expect_json(&r, "{\"status\":\"appended\",\"thread\":\"chat-1\",\"seq\":3,\"count\":3,\"trimmed\":0}");
  assert_int_equal(tool(&c, "memory_thread_append",
                        "{\"thread\":\"chat-1\",\"role\":\"tool\",\"tool_call_id\":\"call_1\",\"content\":\"18C, sunny\"}",
                        NULL, &r), 0);
  assert_int_equal(tool(&c, "memory_thread_append",
                        "{\"thread\":\"chat-1\",\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"Sunny, 18C.\"}]}",
                        NULL, &r), 0);
  expect_json(&r, "{\"status\":\"appended\",\"thread\":\"chat-1\",\"seq\":5,\"count\":5,\"trimmed\":0}");
  /* The whole window, OpenAI (the default format). */
  assert_int_equal(tool(&c, "memory_thread_window", "{\"thread\":\"chat-1\"}", NULL, &r), 0);
  v = result_json(&r);
  assert_int_equal((int)rnum(v, "count"), 5);
  assert_int_equal((int)rnum(v, "omitted"), 0);
  assert_true(rnum(v, "tokens") > 5);
  assert_int_equal((int)rnum(v, "first_seq"), 1);
  assert_int_equal((int)rnum(v, "last_seq"), 5);
  want = J("[{\"role\":\"system\",\"content\":\"Be brief.\"},"
           "{\"role\":\"user\",\"content\":\"Weather in Paris?\"},"
           "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"call_1\",\"type\":\"function\","
           "\"function\":{\"name\":\"weather\",\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"}}]},"
           "{\"role\":\"tool\",\"content\":\"18C, sunny\",\"tool_call_id\":\"call_1\"},"
           "{\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"Sunny, 18C.\"}]}]");
  if (!cJSON_Compare(cJSON_GetObjectItemCaseSensitive(v, "messages"), want, 1)) fail_msg("openai window: %s", r.text);
  assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(v, "found")));
  assert_string_equal(cJSON_GetObjectItemCaseSensitive(v, "format")->valuestring, "openai");
  assert_int_equal(cJSON_GetArraySize(v), 9); /* found thread format messages count omitted tokens first_seq last_seq */
  cJSON_Delete(want);
  cJSON_Delete(v);
  /* Two messages: the system message, then the newest one; the tool pair and the question are omitted. */
  assert_int_equal(tool(&c, "memory_thread_window", "{\"thread\":\"chat-1\",\"max_messages\":2}", NULL, &r), 0);
  v = result_json(&r);
  want = J("[{\"role\":\"system\",\"content\":\"Be brief.\"},"
           "{\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"Sunny, 18C.\"}]}]");
  if (!cJSON_Compare(cJSON_GetObjectItemCaseSensitive(v, "messages"), want, 1)) fail_msg("2-message window: %s", r.text);
  assert_int_equal((int)rnum(v, "count"), 2);
  assert_int_equal((int)rnum(v, "omitted"), 3);
  cJSON_Delete(want);
  cJSON_Delete(v);
  /* Three messages would cut between the call and its result: the window keeps neither half. */
  assert_int_equal(tool(&c, "memory_thread_window", "{\"thread\":\"chat-1\",\"max_messages\":3}", NULL, &r), 0);
  v = result_json(&r);
  assert_int_equal((int)rnum(v, "count"), 2);
  assert_null(strstr(r.text, "call_1"));
  cJSON_Delete(v);
  /* A token budget; with both limits, both apply. */
  assert_int_equal(tool(&c, "memory_thread_window", "{\"thread\":\"chat-1\",\"max_tokens\":1}", NULL, &r), 0);
  v = result_json(&r);
  assert_int_equal((int)rnum(v, "count"), 1); /* the system message alone, over the budget */
  assert_int_equal((int)rnum(v, "omitted"), 4);
  cJSON_Delete(v);
  assert_int_equal(tool(&c, "memory_thread_window", "{\"thread\":\"chat-1\",\"max_tokens\":100000,\"max_messages\":4}",
                        NULL, &r), 0);
  v = result_json(&r);
  assert_int_equal((int)rnum(v, "count"), 4);
  assert_int_equal((int)rnum(v, "omitted"), 1);
  cJSON_Delete(v);
  /* Anthropic: system text apart, tool_use / tool_result blocks, alternating turns. */
  assert_int_equal(tool(&c, "memory_thread_window", "{\"thread\":\"chat-1\",\"format\":\"anthropic\"}", NULL, &r), 0);
  v = result_json(&r);
  assert_string_equal(cJSON_GetObjectItemCaseSensitive(v, "format")->valuestring, "anthropic");
  assert_string_equal(cJSON_GetObjectItemCaseSensitive(v, "system")->valuestring, "Be brief.");
  want = J("[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Weather in Paris?\"}]},"
           "{\"role\":\"assistant\",\"content\":[{\"type\":\"tool_use\",\"id\":\"call_1\",\"name\":\"weather\","
           "\"input\":{\"city\":\"Paris\"}}]},"
           "{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":\"call_1\",\"content\":\"18C, sunny\"}]},"
           "{\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"Sunny, 18C.\"}]}]");
  if (!cJSON_Compare(cJSON_GetObjectItemCaseSensitive(v, "messages"), want, 1)) fail_msg("anthropic window: %s", r.text);
  assert_int_equal((int)rnum(v, "count"), 5);
  assert_int_equal(cJSON_GetArraySize(v), 10); /* the openai members plus system */
  cJSON_Delete(want);
  cJSON_Delete(v);
  /* A thread that does not exist: a successful call, found false (as memory_retrieve). */
  assert_int_equal(tool(&c, "memory_thread_window", "{\"thread\":\"nope\",\"format\":\"anthropic\"}", NULL, &r), 0);
  expect_json(&r, "{\"found\":false,\"thread\":\"nope\",\"format\":\"anthropic\",\"messages\":[],\"count\":0,"
                  "\"omitted\":0,\"message\":\"No thread found: nope\"}");
  /* The thread is an ordinary engram thread: the C API reads what the tool appended. */
  {
    engram_window_t w = ENGRAM_WINDOW_INIT;
    result_t t = {0};
    assert_int_equal(engram_thread_window(c.mgr, "chat-1", &w, NULL, capture_cb, &t), 0);
    wait_for(&c, &t.calls, 1, 10000);
    assert_int_equal(t.status, 0);
    assert_int_equal((int)t.count, 5);
    want = J("{\"lang\":\"en\"}");
    assert_true(cJSON_Compare(result_item(&t, 1, "metadata"), want, 1));
    cJSON_Delete(want);
    result_reset(&t);
  }
  /* namespace and memory_source, under the application's opts->ns. */
  o.ns = "tenant";
  assert_int_equal(tool(&c, "memory_thread_append",
                        "{\"thread\":\"t\",\"role\":\"user\",\"content\":\"hi\",\"namespace\":\"proj\","
                        "\"memory_source\":\"notes\"}", &o, &r), 0);
  assert_string_equal(r.source, "notes");
  assert_int_equal(exists_in(&c, "notes", "tenant/proj", "thread:t"), 1);
  assert_int_equal(exists_in(&c, "cache", "tenant/proj", "thread:t"), 0);
  assert_int_equal(tool(&c, "memory_thread_window", "{\"thread\":\"t\",\"namespace\":\"proj\"}", &o, &r), 0);
  assert_non_null(strstr(r.text, "\"found\":false")); /* default source: not there */
  assert_int_equal(tool(&c, "memory_thread_window", "{\"thread\":\"t\",\"namespace\":\"proj\",\"memory_source\":\"notes\"}",
                        &o, &r), 0);
  assert_non_null(strstr(r.text, "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]"));
  result_reset(&r);
  ctx_close(&c);
}

/* max_messages set by the application trims what the tool appends; the window shows the newest. */
static void thread_tools_see_trimming(void **state) {
  ctx_t c;
  result_t r = {0}, t = {0};
  engram_thread_settings_t s = {ENGRAM_THREAD_MAX_MESSAGES, 3, 0};
  char args[160];
  cJSON *v;
  int i;
  (void)state;
  world(&c, NULL);
  assert_int_equal(engram_thread_set(c.mgr, "short", NULL, &s, NULL, capture_cb, &t), 0);
  wait_for(&c, &t.calls, 1, 10000);
  assert_int_equal(t.status, 0);
  result_reset(&t);
  for (i = 1; i <= 5; i++) {
    snprintf(args, sizeof args, "{\"thread\":\"short\",\"role\":\"user\",\"content\":\"turn %d\"}", i);
    assert_int_equal(tool(&c, "memory_thread_append", args, NULL, &r), 0);
    v = result_json(&r);
    assert_int_equal((int)rnum(v, "seq"), i);
    assert_int_equal((int)rnum(v, "count"), i < 3 ? i : 3);
    assert_int_equal((int)rnum(v, "trimmed"), i <= 3 ? 0 : 1);
    cJSON_Delete(v);
  }
  assert_int_equal(tool(&c, "memory_thread_window", "{\"thread\":\"short\"}", NULL, &r), 0);
  v = result_json(&r);
  {
    cJSON *want = J("[{\"role\":\"user\",\"content\":\"turn 3\"},{\"role\":\"user\",\"content\":\"turn 4\"},"
                    "{\"role\":\"user\",\"content\":\"turn 5\"}]");
    if (!cJSON_Compare(cJSON_GetObjectItemCaseSensitive(v, "messages"), want, 1)) fail_msg("trimmed window: %s", r.text);
    cJSON_Delete(want);
  }
  assert_int_equal((int)rnum(v, "omitted"), 0); /* trimmed messages are gone, not omitted */
  assert_int_equal((int)rnum(v, "first_seq"), 3);
  cJSON_Delete(v);
  result_reset(&r);
  ctx_close(&c);
}

static void thread_list_pages(void **state) {
  ctx_t c;
  result_t r = {0};
  char args[240], cursor[160];
  cJSON *v;
  const cJSON *threads;
  int i;
  (void)state;
  world(&c, NULL);
  assert_int_equal(tool(&c, "memory_thread_list", "{}", NULL, &r), 0);
  expect_json(&r, "{\"count\":0,\"threads\":[]}");
  for (i = 1; i <= 3; i++) {
    snprintf(args, sizeof args, "{\"thread\":\"th%d\",\"role\":\"user\",\"content\":\"m\"}", i);
    assert_int_equal(tool(&c, "memory_thread_append", args, NULL, &r), 0);
    run_for(&c, 3); /* distinct updated_at_ms */
  }
  assert_int_equal(tool(&c, "memory_thread_append", "{\"thread\":\"th1\",\"role\":\"user\",\"content\":\"again\"}", NULL, &r), 0);
  /* Newest-updated first: th1 (appended to last), th3, th2; pages of two with a cursor. */
  assert_int_equal(tool(&c, "memory_thread_list", "{\"limit\":2}", NULL, &r), 0);
  v = result_json(&r);
  assert_int_equal((int)rnum(v, "count"), 2);
  threads = cJSON_GetObjectItemCaseSensitive(v, "threads");
  assert_string_equal(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(threads, 0), "thread")->valuestring, "th1");
  assert_int_equal(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(threads, 0), "count")->valueint, 2);
  assert_true(cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(threads, 0), "metadata")));
  assert_string_equal(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(threads, 1), "thread")->valuestring, "th3");
  assert_true(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(v, "cursor")));
  snprintf(cursor, sizeof cursor, "%s", cJSON_GetObjectItemCaseSensitive(v, "cursor")->valuestring);
  cJSON_Delete(v);
  snprintf(args, sizeof args, "{\"limit\":2,\"cursor\":\"%s\"}", cursor);
  assert_int_equal(tool(&c, "memory_thread_list", args, NULL, &r), 0);
  v = result_json(&r);
  assert_int_equal((int)rnum(v, "count"), 1);
  assert_string_equal(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(v, "threads"), 0),
                                                       "thread")->valuestring, "th2");
  assert_false(cJSON_HasObjectItem(v, "cursor")); /* the last page */
  cJSON_Delete(v);
  /* Another source, another namespace: empty. */
  assert_int_equal(tool(&c, "memory_thread_list", "{\"memory_source\":\"notes\"}", NULL, &r), 0);
  expect_json(&r, "{\"count\":0,\"threads\":[]}");
  assert_int_equal(tool(&c, "memory_thread_list", "{\"namespace\":\"elsewhere\"}", NULL, &r), 0);
  expect_json(&r, "{\"count\":0,\"threads\":[]}");
  result_reset(&r);
  ctx_close(&c);
}

/* The result message with thread id and seq, or NULL. */
static const cJSON *found_message(const cJSON *v, const char *thread, int seq) {
  const cJSON *m;
  cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(v, "messages")) {
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(m, "thread");
    if (cJSON_IsString(t) && strcmp(t->valuestring, thread) == 0 &&
        (int)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(m, "seq")) == seq)
      return m;
  }
  return NULL;
}

static void thread_search_finds_messages(void **state) {
  static const char *const appends[] = {
      "{\"thread\":\"trip\",\"role\":\"user\",\"content\":\"Book a train to Lyon\",\"metadata\":{\"lang\":\"en\"}}",
      "{\"thread\":\"trip\",\"role\":\"assistant\",\"content\":\"The train to Lyon is booked for Friday\"}",
      "{\"thread\":\"work\",\"role\":\"user\",\"content\":\"The Lyon office meets on Monday\"}",
      "{\"thread\":\"work\",\"role\":\"user\",\"content\":\"Send the quarterly report\"}"};
  ctx_t c;
  result_t r = {0};
  cJSON *v;
  const cJSON *m, *prev = NULL;
  size_t i;
  (void)state;
  world(&c, NULL);
  for (i = 0; i < sizeof appends / sizeof *appends; i++)
    assert_int_equal(tool(&c, "memory_thread_append", appends[i], NULL, &r), 0);
  /* Every thread of the namespace: the three messages about Lyon, best first, each naming its thread. */
  assert_int_equal(tool(&c, "memory_thread_search", "{\"query\":\"train Lyon\"}", NULL, &r), 0);
  assert_string_equal(r.source, "cache");
  v = result_json(&r);
  assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(v, "thread")));
  assert_int_equal((int)rnum(v, "count"), 3);
  assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(v, "messages")), 3);
  assert_non_null(m = found_message(v, "trip", 1));
  assert_string_equal(cJSON_GetObjectItemCaseSensitive(m, "role")->valuestring, "user");
  assert_string_equal(cJSON_GetObjectItemCaseSensitive(m, "content")->valuestring, "Book a train to Lyon");
  assert_string_equal(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(m, "metadata"), "lang")->valuestring,
                      "en");
  assert_non_null(found_message(v, "trip", 2));
  assert_non_null(found_message(v, "work", 1));
  assert_null(found_message(v, "work", 2));
  cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(v, "messages")) {
    double sc = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(m, "score"));
    assert_true(sc > 0 && sc <= 1);
    if (prev != NULL) assert_true(sc <= cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(prev, "score")));
    prev = m;
  }
  /* Only Lyon: the work message matches on one word, the trip ones on two; the best is a trip message. */
  assert_string_equal(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(v, "messages"), 0),
                                                       "thread")->valuestring, "trip");
  cJSON_Delete(v);
  /* One thread. */
  assert_int_equal(tool(&c, "memory_thread_search", "{\"thread\":\"work\",\"query\":\"Lyon report\"}", NULL, &r), 0);
  v = result_json(&r);
  assert_string_equal(cJSON_GetObjectItemCaseSensitive(v, "thread")->valuestring, "work");
  assert_int_equal((int)rnum(v, "count"), 2);
  cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(v, "messages"))
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(m, "thread")->valuestring, "work");
  cJSON_Delete(v);
  /* limit, and the OpenAI string form of the arguments. */
  assert_int_equal(tool(&c, "memory_thread_search", "\"{\\\"query\\\":\\\"Lyon\\\",\\\"limit\\\":1}\"", NULL, &r), 0);
  v = result_json(&r);
  assert_int_equal((int)rnum(v, "count"), 1);
  cJSON_Delete(v);
  /* No such thread, no match, another source, another namespace: count 0, not an error. */
  assert_int_equal(tool(&c, "memory_thread_search", "{\"thread\":\"nope\",\"query\":\"Lyon\"}", NULL, &r), 0);
  expect_json(&r, "{\"thread\":\"nope\",\"count\":0,\"messages\":[]}");
  assert_int_equal(tool(&c, "memory_thread_search", "{\"query\":\"zebra\"}", NULL, &r), 0);
  expect_json(&r, "{\"thread\":null,\"count\":0,\"messages\":[]}");
  assert_int_equal(tool(&c, "memory_thread_search", "{\"query\":\"Lyon\",\"memory_source\":\"notes\"}", NULL, &r), 0);
  expect_json(&r, "{\"thread\":null,\"count\":0,\"messages\":[]}");
  assert_int_equal(tool(&c, "memory_thread_search", "{\"query\":\"Lyon\",\"namespace\":\"elsewhere\"}", NULL, &r), 0);
  expect_json(&r, "{\"thread\":null,\"count\":0,\"messages\":[]}");
  /* A namespace of its own: found there, and only there. */
  assert_int_equal(tool(&c, "memory_thread_append",
                        "{\"thread\":\"trip\",\"role\":\"user\",\"content\":\"Lyon again\",\"namespace\":\"elsewhere\"}",
                        NULL, &r), 0);
  assert_int_equal(tool(&c, "memory_thread_search", "{\"query\":\"Lyon\",\"namespace\":\"elsewhere\"}", NULL, &r), 0);
  v = result_json(&r);
  assert_int_equal((int)rnum(v, "count"), 1);
  assert_non_null(found_message(v, "trip", 1));
  cJSON_Delete(v);
  result_reset(&r);
  ctx_close(&c);
}

static void thread_bad_arguments(void **state) {
  static const bad_call_t calls[] = {
      {"memory_thread_append", "{\"role\":\"user\",\"content\":\"x\"}", ENGRAM_EINVAL, "memory_thread_append: \"thread\" is required"},
      {"memory_thread_append", "{\"thread\":7,\"role\":\"user\",\"content\":\"x\"}", ENGRAM_EINVAL,
       "memory_thread_append: \"thread\" must be a string, not a number"},
      {"memory_thread_append", "{\"thread\":\"\",\"role\":\"user\",\"content\":\"x\"}", ENGRAM_EINVAL,
       "memory_thread_append: \"thread\": empty"},
      {"memory_thread_append", "{\"thread\":\"a:b\",\"role\":\"user\",\"content\":\"x\"}", ENGRAM_EINVAL,
       "memory_thread_append: \"thread\": \"a:b\": byte 1 is not one of [A-Za-z0-9_.@+=-]"},
      {"memory_thread_append", "{\"thread\":\"t\",\"content\":\"x\"}", ENGRAM_EINVAL, "memory_thread_append: \"role\" is required"},
      {"memory_thread_append", "{\"thread\":\"t\",\"role\":\"bot\",\"content\":\"x\"}", ENGRAM_EINVAL,
       "memory_thread_append: \"role\": unknown role \"bot\" (system, user, assistant or tool)"},
      {"memory_thread_append", "{\"thread\":\"t\",\"role\":[\"user\"],\"content\":\"x\"}", ENGRAM_EINVAL,
       "\"role\" must be a string, not an array"},
      {"memory_thread_append", "{\"thread\":\"t\",\"role\":\"user\"}", ENGRAM_EINVAL,
       "memory_thread_append: \"content\": empty (only an assistant message with tool_calls may have no content)"},
      {"memory_thread_append", "{\"thread\":\"t\",\"role\":\"user\",\"content\":\"\"}", ENGRAM_EINVAL,
       "memory_thread_append: \"content\": empty"},
      {"memory_thread_append", "{\"thread\":\"t\",\"role\":\"user\",\"content\":[]}", ENGRAM_EINVAL,
       "memory_thread_append: \"content\": empty"},
      {"memory_thread_append", "{\"thread\":\"t\",\"role\":\"user\",\"content\":5}", ENGRAM_EINVAL,
       "\"content\" must be a string or an array of content parts, not a number"},
      {"memory_thread_append", "{\"thread\":\"t\",\"role\":\"tool\",\"content\":\"r\"}", ENGRAM_EINVAL,
       "memory_thread_append: \"tool_call_id\": missing (a tool message answers a tool call)"},
      {"memory_thread_append", "{\"thread\":\"t\",\"role\":\"user\",\"content\":\"r\",\"tool_call_id\":\"c\"}", ENGRAM_EINVAL,
       "\"tool_call_id\": only a tool message has one"},
      {"memory_thread_append", "{\"thread\":\"t\",\"role\":\"tool\",\"content\":\"r\",\"tool_call_id\":1}", ENGRAM_EINVAL,
       "\"tool_call_id\" must be a string, not a number"},
      {"memory_thread_append", "{\"thread\":\"t\",\"role\":\"user\",\"content\":\"r\",\"tool_calls\":[{\"id\":\"a\"}]}",
       ENGRAM_EINVAL, "\"tool_calls\": only an assistant message has tool calls"},
      {"memory_thread_append", "{\"thread\":\"t\",\"role\":\"assistant\",\"tool_calls\":{}}", ENGRAM_EINVAL,
       "\"tool_calls\" must be an array of objects, not an object"},
      {"memory_thread_append", "{\"thread\":\"t\",\"role\":\"assistant\",\"tool_calls\":[{\"name\":\"f\"}]}", ENGRAM_EINVAL,
       "memory_thread_append: \"tool_calls[0].id\": missing"},
      {"memory_thread_append", "{\"thread\":\"t\",\"role\":\"user\",\"content\":\"r\",\"metadata\":[1]}", ENGRAM_EINVAL,
       "\"metadata\" must be an object, not an array"},
      {"memory_thread_append", "{\"thread\":\"t\",\"role\":\"user\",\"content\":\"r\",\"seq\":3}", ENGRAM_EINVAL,
       "unknown argument \"seq\" (the arguments are: thread, role, content, tool_calls, tool_call_id, metadata, "
       "memory_source, namespace)"},
      {"memory_thread_append", "{\"thread\":\"t\",\"role\":\"user\",\"content\":\"a\\u0000b\"}", ENGRAM_EINVAL,
       "memory_thread_append: arguments.content: \\u0000 (NUL) is not allowed in a string"},
      {"memory_thread_append", "{\"thread\":\"t\",\"role\":\"user\",\"content\":\"\xff\"}", ENGRAM_EINVAL,
       "memory_thread_append: arguments.content: invalid UTF-8"},
      {"memory_thread_append", "{\"thread\":\"t\\u0000x\",\"role\":\"user\",\"content\":\"a\"}", ENGRAM_EINVAL,
       "arguments.thread: \\u0000 (NUL)"},
      {"memory_thread_append", "{\"thread\":\"t\",\"role\":\"user\",\"content\":\"a\",\"memory_source\":\"x\"}",
       ENGRAM_EUNKNOWN_SOURCE, "memory_thread_append: unknown memory_source \"x\" (available: \"cache\", \"notes\")"},
      {"memory_thread_window", "{}", ENGRAM_EINVAL, "memory_thread_window: \"thread\" is required"},
      {"memory_thread_window", "{\"thread\":\"t t\"}", ENGRAM_EINVAL, "memory_thread_window: \"thread\": \"t t\": byte 1"},
      {"memory_thread_window", "{\"thread\":\"t\",\"max_messages\":0}", ENGRAM_EINVAL,
       "memory_thread_window: \"max_messages\" must be an integer 1..1000, not 0"},
      {"memory_thread_window", "{\"thread\":\"t\",\"max_messages\":1001}", ENGRAM_EINVAL, "\"max_messages\" must be an integer 1..1000"},
      {"memory_thread_window", "{\"thread\":\"t\",\"max_tokens\":0}", ENGRAM_EINVAL,
       "memory_thread_window: \"max_tokens\" must be an integer 1..1000000, not 0"},
      {"memory_thread_window", "{\"thread\":\"t\",\"max_tokens\":\"9\"}", ENGRAM_EINVAL, "\"max_tokens\" must be an integer 1..1000000, not a string"},
      {"memory_thread_window", "{\"thread\":\"t\",\"format\":\"xml\"}", ENGRAM_EINVAL,
       "memory_thread_window: \"format\" must be \"openai\" or \"anthropic\", not \"xml\""},
      {"memory_thread_window", "{\"thread\":\"t\",\"format\":1}", ENGRAM_EINVAL, "\"format\" must be a string, not a number"},
      {"memory_thread_window", "{\"thread\":\"t\",\"limit\":1}", ENGRAM_EINVAL,
       "unknown argument \"limit\" (the arguments are: thread, max_messages, max_tokens, format, memory_source, namespace)"},
      {"memory_thread_window", "{\"thread\":\"t\",\"memory_source\":\"x\"}", ENGRAM_EUNKNOWN_SOURCE,
       "memory_thread_window: unknown memory_source \"x\" (available: \"cache\", \"notes\")"},
      {"memory_thread_list", "{\"limit\":0}", ENGRAM_EINVAL, "memory_thread_list: \"limit\" must be an integer 1..100, not 0"},
      {"memory_thread_list", "{\"limit\":101}", ENGRAM_EINVAL, "\"limit\" must be an integer 1..100"},
      {"memory_thread_list", "{\"cursor\":5}", ENGRAM_EINVAL, "\"cursor\" must be a string, not a number"},
      {"memory_thread_list", "{\"cursor\":\"garbage\"}", ENGRAM_EINVAL,
       "memory_thread_list: \"cursor\": \"garbage\" is not a cursor of engram_thread_list"},
      {"memory_thread_list", "{\"thread\":\"t\"}", ENGRAM_EINVAL,
       "unknown argument \"thread\" (the arguments are: limit, cursor, memory_source, namespace)"},
      {"memory_thread_list", "{\"memory_source\":\"x\"}", ENGRAM_EUNKNOWN_SOURCE, "memory_thread_list: unknown memory_source \"x\""},
      {"memory_thread_list", "[]", ENGRAM_EINVAL, "memory_thread_list: arguments must be a JSON object, not an array"},
      {"memory_thread_search", "{}", ENGRAM_EINVAL, "memory_thread_search: \"query\" is required"},
      {"memory_thread_search", "{\"thread\":\"t\"}", ENGRAM_EINVAL, "memory_thread_search: \"query\" is required"},
      {"memory_thread_search", "{\"query\":5}", ENGRAM_EINVAL, "memory_thread_search: \"query\" must be a string, not a number"},
      {"memory_thread_search", "{\"query\":\" \\t\"}", ENGRAM_EINVAL, "memory_thread_search: \"query\": empty"},
      {"memory_thread_search", "{\"query\":\"\"}", ENGRAM_EINVAL, "memory_thread_search: \"query\": empty"},
      {"memory_thread_search", "{\"query\":\"a\\u0000b\"}", ENGRAM_EINVAL, "arguments.query: \\u0000 (NUL)"},
      {"memory_thread_search", "{\"query\":\"x\",\"thread\":\"\"}", ENGRAM_EINVAL, "memory_thread_search: \"thread\": empty"},
      {"memory_thread_search", "{\"query\":\"x\",\"thread\":\"a:b\"}", ENGRAM_EINVAL,
       "memory_thread_search: \"thread\": \"a:b\": byte 1 is not one of [A-Za-z0-9_.@+=-]"},
      {"memory_thread_search", "{\"query\":\"x\",\"thread\":3}", ENGRAM_EINVAL,
       "memory_thread_search: \"thread\" must be a string, not a number"},
      {"memory_thread_search", "{\"query\":\"x\",\"limit\":0}", ENGRAM_EINVAL,
       "memory_thread_search: \"limit\" must be an integer 1..100, not 0"},
      {"memory_thread_search", "{\"query\":\"x\",\"limit\":101}", ENGRAM_EINVAL, "\"limit\" must be an integer 1..100, not 101"},
      {"memory_thread_search", "{\"query\":\"x\",\"limit\":2.5}", ENGRAM_EINVAL, "\"limit\" must be an integer 1..100, not 2.5"},
      {"memory_thread_search", "{\"query\":\"x\",\"format\":\"openai\"}", ENGRAM_EINVAL,
       "memory_thread_search: unknown argument \"format\" (the arguments are: thread, query, limit, memory_source, namespace)"},
      {"memory_thread_search", "{\"query\":\"x\",\"memory_source\":\"x\"}", ENGRAM_EUNKNOWN_SOURCE,
       "memory_thread_search: unknown memory_source \"x\" (available: \"cache\", \"notes\")"},
      {"memory_thread_search", "[\"x\"]", ENGRAM_EINVAL, "memory_thread_search: arguments must be a JSON object, not an array"},
  };
  ctx_t c;
  result_t r = {0};
  size_t i;
  (void)state;
  world(&c, NULL);
  for (i = 0; i < sizeof calls / sizeof *calls; i++) {
    expect_error(&c, calls[i].name, calls[i].args, NULL, calls[i].status, calls[i].says);
    tool(&c, calls[i].name, calls[i].args, NULL, &r);
    expect_utf8(&r, calls[i].args);
  }
  /* Nothing was stored by any of them: no thread in either source. */
  assert_int_equal(tool(&c, "memory_list_keys", "{}", NULL, &r), 0);
  expect_json(&r, "{\"count\":0,\"keys\":[]}");
  assert_int_equal(tool(&c, "memory_list_keys", "{\"memory_source\":\"notes\"}", NULL, &r), 0);
  expect_json(&r, "{\"count\":0,\"keys\":[]}");
  result_reset(&r);
  ctx_close(&c);
}

/* ---- Allocation failures: every call ends with 0 + one callback, or ENGRAM_ENOMEM; nothing leaks ---- */


typedef struct {
  int calls, status, text_ok;
} mini_t;

/* Allocates nothing: the text must be there and look like a JSON object. */
static void mini_cb(int status, const engram_reply_t *reply, void *ud) {
  mini_t *m = ud;
  if (++m->calls > 1) harness_stray("mini_cb");
  m->status = status;
  m->text_ok = reply->text != NULL && reply->text[0] == '{' && reply->op == ENGRAM_OP_TOOL_CALL;
}

static void alloc_call(ctx_t *c, const char *name, const char *args) {
  mini_t m = {0};
  int rc = engram_tools_call(c->mgr, name, args, NULL, mini_cb, &m);
  if (rc == ENGRAM_ENOMEM) {
    uv_run(&c->loop, UV_RUN_NOWAIT);
    if (m.calls != 0) fail_msg("%s: ENOMEM returned and a callback ran", name);
    return;
  }
  if (rc != 0) fail_msg("%s: returned %s (%s)", name, engram_err_name(rc), engram_last_error());
  if (m.calls != 0) fail_msg("%s: callback from inside the call", name);
  wait_for(c, &m.calls, 1, 10000);
  uv_run(&c->loop, UV_RUN_NOWAIT);
  if (m.calls != 1) fail_msg("%s: %d callbacks", name, m.calls);
  if (!m.text_ok) fail_msg("%s: no JSON result text (status %s)", name, engram_err_name(m.status));
}

static void alloc_scenario(void) {
  ctx_t c;
  mini_t m = {0};
  char *text;
  cJSON *defs;
  int rc;
  memset(&c, 0, sizeof c);
  assert_int_equal(uv_loop_init(&c.loop), 0);
  while ((rc = engram_manager_new(&c.mgr, &c.loop, NULL)) == ENGRAM_ENOMEM) {
  }
  assert_int_equal(rc, 0);
  rc = engram_manager_add_source(c.mgr, "cache", &engram_source_cache, NULL, "d", 1, mini_cb, &m);
  if (rc == 0) wait_for(&c, &m.calls, 1, 10000);
  text = engram_tools_definitions_json(ENGRAM_TOOLS_OPENAI);
  engram_free(text);
  defs = engram_tools_definitions(ENGRAM_TOOLS_ANTHROPIC);
  cJSON_Delete(defs);
  alloc_call(&c, "memory_store", "{\"key\":\"a\",\"value\":{\"t\":\"quick fox\"},\"metadata\":{\"tags\":[\"x\"],\"ttl\":60}}");
  alloc_call(&c, "memory_store", "\"{\\\"key\\\":\\\"b\\\",\\\"value\\\":2,\\\"namespace\\\":\\\"n\\\"}\"");
  alloc_call(&c, "memory_retrieve", "{\"key\":\"a\"}");
  alloc_call(&c, "memory_retrieve", "{\"key\":\"missing\"}");
  alloc_call(&c, "memory_search", "{\"query\":\"fox\",\"filter\":{\"tags\":{\"$exists\":true}}}");
  alloc_call(&c, "memory_list_keys", "{\"limit\":1}");
  alloc_call(&c, "memory_list_sources", NULL);
  alloc_call(&c, "memory_delete", "{\"key\":\"a\"}");
  alloc_call(&c, "memory_store", "{\"key\":\"k\",\"value\":1,\"memory_source\":\"x\"}");
  alloc_call(&c, "memory_search", "{\"query\":\"a\",\"limit\":0}");
  alloc_call(&c, "memory_nope", "{");
  alloc_call(&c, "memory_store", "{\"key\":");
  defs = engram_tools_definitions_ex(ENGRAM_TOOLS_OPENAI, ENGRAM_TOOLS_ALL);
  cJSON_Delete(defs);
  alloc_call(&c, "memory_thread_append", "{\"thread\":\"t\",\"role\":\"system\",\"content\":\"Be brief.\"}");
  alloc_call(&c, "memory_thread_append",
             "{\"thread\":\"t\",\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\","
             "\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}],\"metadata\":{\"m\":1}}");
  alloc_call(&c, "memory_thread_append", "{\"thread\":\"t\",\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"ok\"}");
  alloc_call(&c, "memory_thread_window", "{\"thread\":\"t\"}");
  alloc_call(&c, "memory_thread_window", "{\"thread\":\"t\",\"format\":\"anthropic\",\"max_tokens\":50}");
  alloc_call(&c, "memory_thread_window", "{\"thread\":\"missing\"}");
  alloc_call(&c, "memory_thread_list", "{\"limit\":1}");
  alloc_call(&c, "memory_thread_append", "{\"thread\":\"t\",\"role\":\"bot\",\"content\":\"x\"}");
  alloc_call(&c, "memory_thread_list", "{\"cursor\":\"x\"}");
  alloc_call(&c, "memory_thread_search", "{\"query\":\"ok brief\"}");
  alloc_call(&c, "memory_thread_search", "{\"thread\":\"t\",\"query\":\"brief\",\"limit\":1}");
  alloc_call(&c, "memory_thread_search", "{\"query\":\" \"}");
  m.calls = 0;
  while ((rc = engram_manager_close(c.mgr, mini_cb, &m)) == ENGRAM_ENOMEM) {
  }
  assert_int_equal(rc, 0);
  wait_for(&c, &m.calls, 1, 10000);
  assert_int_equal(uv_run(&c.loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&c.loop), 0);
}

static void tools_alloc_run(void *unused) {
  (void)unused;
  alloc_scenario();
}

static void allocation_failures(void **state) {
  long points;
  (void)state;
  points = failing_alloc_loop(tools_alloc_run, NULL);
  printf("  tools: every one of %ld allocations failed once\n", points);
  assert_true(getenv("ENGRAM_ALLOC_ONLY") || points > 100);
}

/* engram_json_check: the input rules for a front end's request body, before cJSON parses it. */
static void json_check_for_front_ends(void **state) {
  char msg[200], tiny[12];
  const char *ok = "{\"name\": \"memory_store\", \"arguments\": {\"key\": \"caf\xc3\xa9\", \"value\": [1, 2]}}  \n";
  const char *nul = "{\"name\": \"memory_store\\u0000x\"}";
  const char *trailing = "{\"name\": \"a\"} x";
  const char *bad = "{\"name\": ";
  const char *raw = "{\"name\": \"a\xff\"}";
  (void)state;
  assert_int_equal(engram_json_check(ok, strlen(ok), "body", msg, sizeof msg), 0);
  assert_string_equal(msg, "");
  /* The length is honoured: a document cut short is malformed, one followed by other bytes is fine when the
   * length stops before them. */
  assert_int_equal(engram_json_check(ok, 10, "body", msg, sizeof msg), ENGRAM_EINVAL);
  assert_non_null(strstr(msg, "body: malformed JSON near offset"));
  assert_int_equal(engram_json_check(trailing, 13, "body", msg, sizeof msg), 0);
  assert_int_equal(engram_json_check(nul, strlen(nul), "body", msg, sizeof msg), ENGRAM_EINVAL);
  if (strstr(msg, "body.name: \\u0000 (NUL) is not allowed") == NULL) fail_msg("message: %s", msg);
  assert_int_equal(engram_json_check(trailing, strlen(trailing), "body", msg, sizeof msg), ENGRAM_EINVAL);
  assert_string_equal(msg, "body: text after the JSON document at offset 14");
  assert_int_equal(engram_json_check(bad, strlen(bad), NULL, msg, sizeof msg), ENGRAM_EINVAL);
  assert_non_null(strstr(msg, "text: malformed JSON near offset"));
  assert_int_equal(engram_json_check(raw, strlen(raw), "body", msg, sizeof msg), ENGRAM_EINVAL);
  assert_non_null(strstr(msg, "body.name"));
  assert_true(engram_utf8_valid(msg, strlen(msg)));
  assert_int_equal(engram_json_check(NULL, 0, "body", msg, sizeof msg), ENGRAM_EINVAL);
  assert_string_equal(msg, "body: NULL");
  /* No room for the message: still the verdict; a cut message stays valid UTF-8. */
  assert_int_equal(engram_json_check(nul, strlen(nul), "body", NULL, 0), ENGRAM_EINVAL);
  assert_int_equal(engram_json_check(nul, strlen(nul), "b\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9", tiny, sizeof tiny),
                   ENGRAM_EINVAL);
  assert_true(engram_utf8_valid(tiny, strlen(tiny)));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(definitions_are_valid_schemas),
      cmocka_unit_test(thread_definitions),
      cmocka_unit_test(validator_rejects_broken_schemas),
      cmocka_unit_test(store_retrieve_delete_shapes),
      cmocka_unit_test(search_shape),
      cmocka_unit_test(list_keys_pages),
      cmocka_unit_test(list_sources_shape),
      cmocka_unit_test(ttl_expires_the_item),
      cmocka_unit_test(tags_and_metadata_are_kept),
      cmocka_unit_test(memory_source_namespace_and_opts),
      cmocka_unit_test(thread_append_and_window),
      cmocka_unit_test(thread_tools_see_trimming),
      cmocka_unit_test(thread_list_pages),
      cmocka_unit_test(thread_search_finds_messages),
      cmocka_unit_test(thread_bad_arguments),
      cmocka_unit_test(bad_arguments_are_error_results),
      cmocka_unit_test(arguments_as_a_string),
      cmocka_unit_test(hostile_strings_are_refused),
      cmocka_unit_test(quoted_text_is_cut_on_characters),
      cmocka_unit_test(refused_at_once),
      cmocka_unit_test(operation_errors_pass_through),
      cmocka_unit_test(completion_queue_delivery),
      cmocka_unit_test(allocation_failures),
      cmocka_unit_test(json_check_for_front_ends),
  };
  return cmocka_run_group_tests_name("agent tools", tests, NULL, NULL);
}
