/*
 * fuzz_mcp.c — libFuzzer harness for engram-mcp's JSON-RPC framing and dispatch (tools/mcp/dispatch.c), driven
 * in-process: the dispatcher's own code is compiled into the harness, not a copy of it.
 *
 * Input: what a client writes on engram-mcp's stdin — newline-delimited JSON-RPC messages (at most 64 lines
 * per input are handed over). One manager on the harness's loop holds a cache source (the default, at most
 * 1,000 items) for the whole run; each input gets a fresh session, as a new stdio client would. Each line is
 * handed to mcp_handle as the stdio transport hands it; then the loop runs until every answer has come.
 * Asserted, for every line:
 *   - the answer runs exactly once (a second answer aborts at once; a missing one is caught when the loop runs
 *     dry or after 10 s);
 *   - an answer text is valid UTF-8 and one JSON object with "jsonrpc": "2.0", an "id" member, and exactly one
 *     of "result" and "error"; an error has an integer "code" and a string "message";
 *   - MCP_ANSWER_PARSE comes with code -32700 and MCP_ANSWER_INVALID with -32600 (and those codes only with
 *     those kinds); a line that is not valid JSON is always answered MCP_ANSWER_PARSE;
 *   - a tools/call result has a "content" array and a boolean isError when present;
 *   - after the session is freed nothing is pending (mcp_server_pending = 0), and ASan/UBSan/LeakSanitizer
 *     see nothing.
 */
#include "../../tools/mcp/dispatch.c"

#include <time.h>

#include "fuzz_common.h"

#define MAX_LINES 64

typedef struct {
  int calls;
  mcp_answer_kind_t kind;
  char *json;
} answer_t;

static engram_manager_t *mgr;
static mcp_server_t *server;

static void on_answer(void *ud, char *json, mcp_answer_kind_t kind) {
  answer_t *a = ud;
  FUZZ_CHECK(a->calls == 0, "a second answer for one message");
  a->calls++;
  a->kind = kind;
  a->json = json;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  mgr = fuzz_manager_new();
  fuzz_add_source(mgr, "cache", &engram_source_cache, "{\"max_entries\": 1000}", 1);
  server = mcp_server_new(mgr, 10000);
  FUZZ_CHECK(server != NULL, "mcp_server_new failed");
  return 0;
}

/* Non-zero when s[0..n) is one JSON value cJSON accepts with nothing but whitespace after it. */
static int is_json(const char *s, size_t n) {
  const char *end = NULL;
  cJSON *v = cJSON_ParseWithLengthOpts(s, n, &end, 0);
  int ok = v != NULL;
  if (ok)
    while (end < s + n && (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n')) end++;
  ok = ok && end == s + n;
  cJSON_Delete(v);
  return ok;
}

static void check_answer(const answer_t *a, const char *line, size_t len) {
  cJSON *doc, *err, *code, *result, *content, *is_error;
  if (a->json == NULL) {
    FUZZ_CHECK(a->kind == MCP_ANSWER_OK, "no answer text with kind %d", (int)a->kind);
    return;
  }
  FUZZ_CHECK(engram_utf8_valid(a->json, strlen(a->json)), "the answer is not UTF-8: %.200s", a->json);
  doc = cJSON_Parse(a->json);
  FUZZ_CHECK(cJSON_IsObject(doc), "the answer is not a JSON object: %.300s", a->json);
  FUZZ_CHECK(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(doc, "jsonrpc")) &&
                 strcmp(cJSON_GetObjectItemCaseSensitive(doc, "jsonrpc")->valuestring, "2.0") == 0,
             "the answer has no \"jsonrpc\": \"2.0\": %.300s", a->json);
  FUZZ_CHECK(cJSON_HasObjectItem(doc, "id"), "the answer has no id: %.300s", a->json);
  err = cJSON_GetObjectItemCaseSensitive(doc, "error");
  result = cJSON_GetObjectItemCaseSensitive(doc, "result");
  FUZZ_CHECK((err != NULL) != (result != NULL), "the answer needs exactly one of result and error: %.300s", a->json);
  if (err != NULL) {
    code = cJSON_GetObjectItemCaseSensitive(err, "code");
    FUZZ_CHECK(cJSON_IsNumber(code) && code->valuedouble == (double)(int)code->valuedouble,
               "an error without an integer code: %.300s", a->json);
    FUZZ_CHECK(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(err, "message")),
               "an error without a message: %.300s", a->json);
    FUZZ_CHECK((a->kind == MCP_ANSWER_PARSE) == (code->valueint == -32700), "kind %d with code %d", (int)a->kind,
               code->valueint);
    FUZZ_CHECK((a->kind == MCP_ANSWER_INVALID) == (code->valueint == -32600), "kind %d with code %d",
               (int)a->kind, code->valueint);
  } else {
    FUZZ_CHECK(a->kind == MCP_ANSWER_OK, "a result with kind %d", (int)a->kind);
    content = cJSON_GetObjectItemCaseSensitive(result, "content");
    is_error = cJSON_GetObjectItemCaseSensitive(result, "isError");
    if (content != NULL) FUZZ_CHECK(cJSON_IsArray(content), "content is not an array: %.300s", a->json);
    if (is_error != NULL) FUZZ_CHECK(cJSON_IsBool(is_error), "isError is not a boolean: %.300s", a->json);
  }
  if (!is_json(line, len)) FUZZ_CHECK(a->kind == MCP_ANSWER_PARSE, "a line that is not JSON got kind %d", (int)a->kind);
  cJSON_Delete(doc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  answer_t answers[MAX_LINES];
  const char *lines[MAX_LINES];
  size_t lens[MAX_LINES], n = 0, i, at = 0;
  char *text = fuzz_cstr(data, size);
  mcp_session_t *sess = mcp_session_new(server);
  uint64_t t0;
  int done;
  FUZZ_CHECK(sess != NULL, "mcp_session_new failed");
  /* Lines as the stdio transport frames them: up to '\n', a trailing '\r' kept (the dispatcher must cope). */
  while (at < size && n < MAX_LINES) {
    const char *nl = memchr(text + at, '\n', size - at);
    size_t len = nl ? (size_t)(nl - (text + at)) : size - at;
    if (len > 0) {
      lines[n] = text + at;
      lens[n] = len;
      n++;
    }
    at += len + 1;
  }
  memset(answers, 0, sizeof answers);
  for (i = 0; i < n; i++) mcp_handle(sess, lines[i], lens[i], on_answer, &answers[i]);
  t0 = uv_hrtime();
  for (;;) {
    for (done = 0, i = 0; i < n; i++) done += answers[i].calls;
    if (done == (int)n) break;
    FUZZ_CHECK(uv_run(fuzz_loop, UV_RUN_ONCE) != 0 || done == (int)n, "the loop ran dry: %zu of %zu answers", (size_t)done, n);
    FUZZ_CHECK(uv_hrtime() - t0 < 10000000000ull, "only %d of %zu answers after 10 s", done, n);
  }
  for (i = 0; i < n; i++) {
    check_answer(&answers[i], lines[i], lens[i]);
    free(answers[i].json);
  }
  mcp_session_free(sess);
  FUZZ_CHECK(mcp_server_pending(server) == 0, "%zu calls still pending", mcp_server_pending(server));
  free(text);
  return 0;
}
