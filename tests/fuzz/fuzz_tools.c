/*
 * fuzz_tools.c — libFuzzer harness for the agent tools' dispatcher (src/tools/tools.c): engram_tools_call with
 * every tool name of the published definitions and the fuzzed arguments.
 *
 * Input: the arguments text of a tool call, as a model would send it (an object, a JSON string holding one, or
 * anything else). For each input a fresh manager on the harness's loop holds two cache sources, "cache" (the
 * default) and "notes", and every tool named by engram_tools_definitions(ENGRAM_TOOLS_OPENAI) is called with the
 * input twice over: with no options, and with the application's options {ns: "agent"} (the agent confined to a
 * namespace). Asserted:
 *   - engram_tools_call returns 0 and its callback then runs exactly once, never inside the call, with
 *     reply->op = ENGRAM_OP_TOOL_CALL and reply->text a JSON object;
 *   - a failed call (status ENGRAM_EINVAL, ENGRAM_EUNKNOWN_SOURCE or ENGRAM_ETOOBIG — nothing else is expected
 *     from a cache) answers {"error": "<tool>: ..."}; a successful one answers the documented shape of its tool
 *     (store: status "stored", the key and the metadata it was given; retrieve: found and the key; search: found =
 *     the number of results, each with a key and a score in [0, 1]; delete: status "deleted" and the key;
 *     list_keys: count = the number of keys, a cursor string only when there is more; list_sources: both
 *     sources);
 *   - when the input is a JSON object, the same arguments sent as a JSON string holding that text (OpenAI's way)
 *     give the same status, and on success the same result text;
 *   - a successful memory_store without metadata.ttl round-trips: memory_retrieve with the same key,
 *     memory_source and namespace finds exactly the value stored (members in order, numbers exact; a number JSON
 *     cannot hold, such as 1e999, reads back as null), memory_delete deletes it, and memory_retrieve then finds
 *     nothing;
 *   - the manager closes cleanly, nothing is left on the loop, and ASan/UBSan/LeakSanitizer see nothing.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engram/tools.h"
#include "fuzz_common.h"

static char *tool_names[16];
static size_t n_tools;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  cJSON *defs = engram_tools_definitions(ENGRAM_TOOLS_OPENAI), *t;
  (void)argc, (void)argv;
  if (defs == NULL) abort();
  cJSON_ArrayForEach(t, defs) {
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(t, "function"), "name");
    if (!cJSON_IsString(name) || n_tools == sizeof tool_names / sizeof *tool_names) abort();
    tool_names[n_tools++] = strdup(name->valuestring);
  }
  cJSON_Delete(defs);
  if (n_tools != 6) abort();
  return 0;
}

/* One tool call, waited for. The result text is parsed into *out (the caller frees it). */
static void call(engram_manager_t *m, const char *name, const char *args, const engram_opts_t *o, fuzz_reply_t *r,
                 cJSON **out) {
  int rc;
  memset(r, 0, sizeof *r);
  rc = engram_tools_call(m, name, args, o, fuzz_capture_cb, r);
  FUZZ_CHECK(rc == 0, "engram_tools_call(%s) refused at once: %s (%s)", name, engram_err_name(rc), engram_last_error());
  FUZZ_CHECK(r->calls == 0, "%s: the callback ran inside engram_tools_call", name);
  fuzz_run_until(&r->calls, name);
  FUZZ_CHECK(r->op == ENGRAM_OP_TOOL_CALL, "%s: reply->op is %d", name, (int)r->op);
  FUZZ_CHECK(r->text != NULL, "%s: no result text (status %s)", name, engram_err_name(r->status));
  *out = cJSON_Parse(r->text);
  FUZZ_CHECK(cJSON_IsObject(*out), "%s: the result is not a JSON object: %s", name, r->text);
}

static const char *str(const cJSON *o, const char *name) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
  return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* Equality of a value sent and the value read back through JSON text: numbers JSON cannot hold become null. */
static int same_through_text(const cJSON *sent, const cJSON *got) {
  const cJSON *x, *y;
  if (cJSON_IsNumber(sent) && !isfinite(sent->valuedouble)) return cJSON_IsNull(got);
  if (cJSON_IsArray(sent) || cJSON_IsObject(sent)) {
    if ((sent->type & 0xFF) != (got->type & 0xFF)) return 0;
    for (x = sent->child, y = got->child; x != NULL && y != NULL; x = x->next, y = y->next) {
      if (cJSON_IsObject(sent) && strcmp(x->string, y->string) != 0) return 0;
      if (!same_through_text(x, y)) return 0;
    }
    return x == NULL && y == NULL;
  }
  return fuzz_json_same(sent, got);
}

/* The arguments object the dispatcher sees, or NULL when the text is not one. */
static cJSON *args_object(const char *text) {
  const char *s = text;
  cJSON *v, *inner;
  while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n') s++;
  if (*s == '\0') return cJSON_CreateObject();
  v = cJSON_ParseWithOpts(s, NULL, 1);
  if (!cJSON_IsString(v)) return v;
  inner = args_object(v->valuestring);
  cJSON_Delete(v);
  return inner;
}

static void check_shape(const char *tool, const fuzz_reply_t *r, const cJSON *res, const cJSON *args) {
  const char *err = str(res, "error");
  const cJSON *a_key = cJSON_GetObjectItemCaseSensitive(args, "key");
  if (r->status != 0) {
    size_t tl = strlen(tool);
    FUZZ_CHECK(r->status == ENGRAM_EINVAL || r->status == ENGRAM_EUNKNOWN_SOURCE || r->status == ENGRAM_ETOOBIG,
               "%s: unexpected status %s: %s", tool, engram_err_name(r->status), r->text);
    FUZZ_CHECK(err != NULL && strncmp(err, tool, tl) == 0 && err[tl] == ':',
               "%s failed (%s) without an error naming the tool: %s", tool, engram_err_name(r->status), r->text);
    return;
  }
  FUZZ_CHECK(err == NULL, "%s succeeded with an error result: %s", tool, r->text);
  if (strcmp(tool, "memory_store") == 0 || strcmp(tool, "memory_delete") == 0) {
    const char *st = str(res, "status"), *k = str(res, "key");
    FUZZ_CHECK(st != NULL && strcmp(st, tool[7] == 's' ? "stored" : "deleted") == 0, "%s: status: %s", tool, r->text);
    FUZZ_CHECK(k != NULL && cJSON_IsString(a_key) && strcmp(k, a_key->valuestring) == 0, "%s: key: %s", tool, r->text);
    if (tool[7] == 's') {
      const cJSON *meta = cJSON_GetObjectItemCaseSensitive(res, "metadata"), *a_meta = cJSON_GetObjectItemCaseSensitive(args, "metadata");
      FUZZ_CHECK(cJSON_IsObject(meta), "memory_store: metadata is not an object: %s", r->text);
      if (cJSON_IsObject(a_meta)) FUZZ_CHECK(same_through_text(a_meta, meta), "memory_store: metadata echo differs: %s", r->text);
      else FUZZ_CHECK(meta->child == NULL, "memory_store: metadata echo without metadata: %s", r->text);
    }
  } else if (strcmp(tool, "memory_retrieve") == 0) {
    const char *k = str(res, "key");
    FUZZ_CHECK(cJSON_IsBool(cJSON_GetObjectItemCaseSensitive(res, "found")), "memory_retrieve: found: %s", r->text);
    FUZZ_CHECK(k != NULL && cJSON_IsString(a_key) && strcmp(k, a_key->valuestring) == 0, "memory_retrieve: key: %s", r->text);
  } else if (strcmp(tool, "memory_search") == 0) {
    const cJSON *found = cJSON_GetObjectItemCaseSensitive(res, "found"), *results = cJSON_GetObjectItemCaseSensitive(res, "results"), *it;
    FUZZ_CHECK(cJSON_IsNumber(found) && cJSON_IsArray(results) && found->valuedouble == cJSON_GetArraySize(results),
               "memory_search: found and results disagree: %s", r->text);
    cJSON_ArrayForEach(it, results) {
      const cJSON *score = cJSON_GetObjectItemCaseSensitive(it, "score");
      FUZZ_CHECK(str(it, "key") != NULL && cJSON_IsNumber(score) && score->valuedouble >= 0 && score->valuedouble <= 1,
                 "memory_search: a result without a key or a score in [0, 1]: %s", r->text);
    }
  } else if (strcmp(tool, "memory_list_keys") == 0) {
    const cJSON *count = cJSON_GetObjectItemCaseSensitive(res, "count"), *keys = cJSON_GetObjectItemCaseSensitive(res, "keys");
    const cJSON *cursor = cJSON_GetObjectItemCaseSensitive(res, "cursor");
    FUZZ_CHECK(cJSON_IsNumber(count) && cJSON_IsArray(keys) && count->valuedouble == cJSON_GetArraySize(keys),
               "memory_list_keys: count and keys disagree: %s", r->text);
    FUZZ_CHECK(cursor == NULL || (cJSON_IsString(cursor) && cJSON_GetArraySize(keys) > 0),
               "memory_list_keys: a cursor that is not a string or on an empty page: %s", r->text);
  } else if (strcmp(tool, "memory_list_sources") == 0) {
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(res, "sources");
    FUZZ_CHECK(cJSON_IsArray(s) && cJSON_GetArraySize(s) == 2, "memory_list_sources: %s", r->text);
  }
}

/* memory_store succeeded without a ttl: the value reads back, deletes, and is gone. */
static void round_trip(engram_manager_t *m, const cJSON *args, const engram_opts_t *o) {
  static const char *const keep[] = {"key", "memory_source", "namespace"};
  const cJSON *value = cJSON_GetObjectItemCaseSensitive(args, "value"), *got, *found;
  cJSON *ka = cJSON_CreateObject(), *res;
  char *text;
  fuzz_reply_t r;
  size_t i;
  for (i = 0; i < 3; i++) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(args, keep[i]);
    if (v != NULL) cJSON_AddItemToObject(ka, keep[i], cJSON_Duplicate(v, 1));
  }
  text = cJSON_PrintUnformatted(ka);
  call(m, "memory_retrieve", text, o, &r, &res);
  found = cJSON_GetObjectItemCaseSensitive(res, "found");
  got = cJSON_GetObjectItemCaseSensitive(res, "value");
  FUZZ_CHECK(r.status == 0 && cJSON_IsTrue(found), "retrieve after a store does not find it: %s (store args %s)", r.text,
             text);
  FUZZ_CHECK(got != NULL && same_through_text(value, got), "retrieve after a store reads another value: %s", r.text);
  cJSON_Delete(res);
  fuzz_reply_clear(&r);
  call(m, "memory_delete", text, o, &r, &res);
  FUZZ_CHECK(r.status == 0, "delete after a store failed: %s", r.text);
  cJSON_Delete(res);
  fuzz_reply_clear(&r);
  call(m, "memory_retrieve", text, o, &r, &res);
  FUZZ_CHECK(r.status == 0 && cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(res, "found")),
             "retrieve after a delete: %s", r.text);
  cJSON_Delete(res);
  fuzz_reply_clear(&r);
  cJSON_free(text);
  cJSON_Delete(ka);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *text = fuzz_cstr(data, size), *wrapped = NULL;
  cJSON *args = args_object(text), *direct = cJSON_Parse(text);
  engram_manager_t *m = fuzz_manager_new();
  engram_opts_t variants[2];
  size_t v, i;

  memset(variants, 0, sizeof variants);
  variants[1].ns = "agent";
  if (cJSON_IsObject(direct)) { /* the same arguments as OpenAI sends them: a JSON string holding the text */
    cJSON *s = cJSON_CreateString(text);
    wrapped = cJSON_PrintUnformatted(s);
    cJSON_Delete(s);
  }
  fuzz_add_source(m, "cache", &engram_source_cache, NULL, 1);
  fuzz_add_source(m, "notes", &engram_source_cache, NULL, 0);

  for (v = 0; v < 2; v++) {
    const engram_opts_t *o = v == 0 ? NULL : &variants[1];
    for (i = 0; i < n_tools; i++) {
      fuzz_reply_t r, r2;
      cJSON *res, *res2;
      call(m, tool_names[i], text, o, &r, &res);
      check_shape(tool_names[i], &r, res, args);
      if (wrapped != NULL) {
        call(m, tool_names[i], wrapped, o, &r2, &res2);
        FUZZ_CHECK(r2.status == r.status, "%s: the arguments as an object give %s, as a string %s (%s / %s)",
                   tool_names[i], engram_err_name(r.status), engram_err_name(r2.status), r.text, r2.text);
        if (r.status == 0) FUZZ_CHECK(strcmp(r.text, r2.text) == 0, "%s: object and string arguments answer %s / %s",
                                      tool_names[i], r.text, r2.text);
        cJSON_Delete(res2);
        fuzz_reply_clear(&r2);
      }
      if (i == 0 && r.status == 0) {
        const cJSON *meta = cJSON_GetObjectItemCaseSensitive(args, "metadata");
        const cJSON *ttl = cJSON_GetObjectItemCaseSensitive(meta, "ttl");
        if (ttl == NULL || cJSON_IsNull(ttl)) round_trip(m, args, o);
      }
      cJSON_Delete(res);
      fuzz_reply_clear(&r);
    }
  }
  fuzz_manager_close(m);
  cJSON_Delete(args);
  cJSON_Delete(direct);
  cJSON_free(wrapped);
  free(text);
  return 0;
}
