/*
 * tools/mcp/dispatch.c — the engram-mcp dispatcher: reads one JSON-RPC 2.0 message, answers the MCP methods
 * (revision 2025-11-25 and the earlier revisions whose messages are the same for what this server does, with
 * the initialize handshake; and the stateless revision 2026-07-28: server/discover, the revision and the
 * client's capabilities in each request's params._meta, "resultType" in every result) and
 * runs tools/call through engram_tools_call, so the MCP tools are exactly engram's agent tools (names, schemas,
 * results). It is shared by the stdio and the HTTP transports, which only move bytes.
 *
 * Protocol faults are JSON-RPC errors: -32700 malformed JSON, -32600 not a request (batches included: refused
 * since revision 2025-06-18), -32601 unknown method, -32602 bad params or an unknown tool. A tool call that
 * fails (a bad argument, an unknown memory_source, a timeout) is not a protocol fault: it is a result with
 * "isError": true whose text is engram's error object, which the model reads and can act on.
 */
#include "mcp.h"

#include <engram/source.h> /* engram_utf8_valid */
#include <engram/tools.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The stateless revision: no initialize; each request names it in params._meta (mcp.h). */
#define MODERN_VERSION "2026-07-28"
#define META_VERSION "io.modelcontextprotocol/protocolVersion"
#define META_CAPS "io.modelcontextprotocol/clientCapabilities"
#define UNSUPPORTED_VERSION (-32022) /* UnsupportedProtocolVersionError (2026-07-28) */
#define LIST_TTL_MS 300000           /* cache hint of tools/list and server/discover (2026-07-28) */

/* The handshake revisions, newest first: initialize echoes the client's revision when it is one of these, else
 * answers the first (the stateless revision is never the answer to initialize: it has no initialize). */
static const char *const versions[] = {"2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"};

typedef struct call_s {
  struct call_s *prev, *next; /* in the session's pending list */
  mcp_session_t *sess;        /* NULL once the session is gone: the answer is dropped */
  mcp_server_t *server;
  cJSON *id;
  int cancelled;
  int modern; /* a 2026-07-28 request: the result carries resultType */
  mcp_answer_fn answer;
  void *ud;
} call_t;

struct mcp_server_s {
  engram_manager_t *mgr;
  uint32_t deadline_ms;
  unsigned sets; /* the tool sets listed and routed (ENGRAM_TOOLS_MEMORY, ENGRAM_TOOLS_THREADS) */
  size_t pending;
  cJSON *tools; /* the tools/list result */
};

struct mcp_session_s {
  mcp_server_t *server;
  call_t *calls;
};

static int legacy_version(const char *v) {
  for (size_t i = 0; v && i < sizeof versions / sizeof versions[0]; i++)
    if (strcmp(v, versions[i]) == 0) return 1;
  return 0;
}

int mcp_version_supported(const char *v) { return v != NULL && (strcmp(v, MODERN_VERSION) == 0 || legacy_version(v)); }

/* Every revision spoken, newest first. */
static cJSON *supported_versions(void) {
  cJSON *a = cJSON_CreateArray();
  if (a == NULL) return NULL;
  cJSON_AddItemToArray(a, cJSON_CreateString(MODERN_VERSION));
  for (size_t i = 0; i < sizeof versions / sizeof versions[0]; i++) cJSON_AddItemToArray(a, cJSON_CreateString(versions[i]));
  return a;
}

/* The tools/list result: engram's definitions (Anthropic's shape) with input_schema renamed inputSchema. */
static cJSON *build_tools(unsigned sets) {
  cJSON *defs = engram_tools_definitions_ex(ENGRAM_TOOLS_ANTHROPIC, sets), *result, *t;
  if (defs == NULL) return NULL;
  cJSON_ArrayForEach(t, defs) {
    cJSON *schema = cJSON_DetachItemFromObjectCaseSensitive(t, "input_schema");
    if (schema) cJSON_AddItemToObject(t, "inputSchema", schema);
  }
  if ((result = cJSON_CreateObject()) == NULL) {
    cJSON_Delete(defs);
    return NULL;
  }
  cJSON_AddItemToObject(result, "tools", defs);
  return result;
}

mcp_server_t *mcp_server_new(engram_manager_t *mgr, uint32_t call_deadline_ms) {
  mcp_server_t *s = calloc(1, sizeof *s);
  if (s == NULL) return NULL;
  s->mgr = mgr;
  s->deadline_ms = call_deadline_ms;
  s->sets = ENGRAM_TOOLS_ALL;
  if ((s->tools = build_tools(s->sets)) == NULL) {
    free(s);
    return NULL;
  }
  return s;
}

int mcp_server_set_tools(mcp_server_t *s, unsigned sets) {
  cJSON *tools = sets != 0 && (sets & ~(unsigned)ENGRAM_TOOLS_ALL) == 0 ? build_tools(sets) : NULL;
  if (tools == NULL) return -1;
  cJSON_Delete(s->tools);
  s->tools = tools;
  s->sets = sets;
  return 0;
}

void mcp_server_free(mcp_server_t *s) {
  if (s == NULL) return;
  cJSON_Delete(s->tools);
  free(s);
}

size_t mcp_server_pending(const mcp_server_t *s) { return s->pending; }

mcp_session_t *mcp_session_new(mcp_server_t *s) {
  mcp_session_t *sess = calloc(1, sizeof *sess);
  if (sess) sess->server = s;
  return sess;
}

void mcp_session_free(mcp_session_t *sess) {
  if (sess == NULL) return;
  for (call_t *c = sess->calls; c != NULL; c = c->next) c->sess = NULL;
  free(sess);
}

/* ---- Building answers ---- */

static char *print_and_free(cJSON *msg) {
  char *text = msg ? engram_json_print_text(msg) : NULL; /* exact numbers in structuredContent */
  char *out = NULL;
  if (text) { /* hand out a malloc()ed copy: the receiver frees with free() whatever engram's allocator is */
    size_t n = strlen(text);
    if ((out = malloc(n + 1)) != NULL) memcpy(out, text, n + 1);
    engram_free(text);
  }
  cJSON_Delete(msg);
  return out;
}

/* {"jsonrpc": "2.0", "id": id} — id duplicated, or null. */
static cJSON *envelope(const cJSON *id) {
  cJSON *msg = cJSON_CreateObject();
  if (msg == NULL) return NULL;
  cJSON_AddStringToObject(msg, "jsonrpc", "2.0");
  cJSON_AddItemToObject(msg, "id", id ? cJSON_Duplicate(id, 1) : cJSON_CreateNull());
  return msg;
}

/* Takes data (may be NULL). */
static char *error_data_text(const cJSON *id, int code, const char *message, cJSON *data) {
  cJSON *msg = envelope(id), *err = cJSON_CreateObject();
  if (msg == NULL || err == NULL) {
    cJSON_Delete(msg);
    cJSON_Delete(err);
    cJSON_Delete(data);
    return NULL;
  }
  cJSON_AddNumberToObject(err, "code", code);
  cJSON_AddStringToObject(err, "message", message);
  if (data) cJSON_AddItemToObject(err, "data", data);
  cJSON_AddItemToObject(msg, "error", err);
  return print_and_free(msg);
}

static char *error_text(const cJSON *id, int code, const char *message) {
  return error_data_text(id, code, message, NULL);
}

/* The 2026-07-28 error for a revision the server does not speak: data = {"supported": [...], "requested"}. */
static char *unsupported_version_text(const cJSON *id, const char *requested) {
  cJSON *data = cJSON_CreateObject();
  char msg[120], quoted[48];
  size_t i = 0;
  for (; requested && requested[i] && i + 1 < sizeof quoted; i++) { /* printable ASCII only */
    unsigned char ch = (unsigned char)requested[i];
    quoted[i] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
  }
  quoted[i] = '\0';
  if (data) {
    cJSON_AddItemToObject(data, "supported", supported_versions());
    if (requested) cJSON_AddStringToObject(data, "requested", requested);
    else cJSON_AddNullToObject(data, "requested");
  }
  snprintf(msg, sizeof msg, "Unsupported protocol version: %s", requested ? quoted : "(not a string)");
  return error_data_text(id, UNSUPPORTED_VERSION, msg, data);
}

char *mcp_unsupported_version(const char *requested) { return unsupported_version_text(NULL, requested); }

/* Takes result. A 2026-07-28 result says it is complete (no further input is required). */
static char *result_text_era(const cJSON *id, cJSON *result, int modern) {
  cJSON *msg = envelope(id);
  if (msg == NULL || result == NULL) {
    cJSON_Delete(msg);
    cJSON_Delete(result);
    return NULL;
  }
  if (modern) cJSON_AddStringToObject(result, "resultType", "complete");
  cJSON_AddItemToObject(msg, "result", result);
  return print_and_free(msg);
}

static char *result_text(const cJSON *id, cJSON *result) { return result_text_era(id, result, 0); }

/* ---- Methods ---- */

/* What initialize and server/discover both say: capabilities, serverInfo, instructions. */
static cJSON *describe(void) {
  cJSON *r = cJSON_CreateObject(), *caps = cJSON_CreateObject(), *info = cJSON_CreateObject();
  if (r == NULL || caps == NULL || info == NULL) {
    cJSON_Delete(r);
    cJSON_Delete(caps);
    cJSON_Delete(info);
    return NULL;
  }
  cJSON_AddItemToObject(caps, "tools", cJSON_CreateObject());
  cJSON_AddItemToObject(r, "capabilities", caps);
  cJSON_AddStringToObject(info, "name", "engram-mcp");
  cJSON_AddStringToObject(info, "title", "engram memory");
  cJSON_AddStringToObject(info, "version", "0.1.0");
  cJSON_AddItemToObject(r, "serverInfo", info);
  cJSON_AddStringToObject(r, "instructions",
                          "Long-term memory. memory_store saves a value under a key, memory_retrieve reads it back, "
                          "memory_search finds items by text or key pattern, memory_list_keys pages through keys, "
                          "memory_delete forgets, memory_list_sources names the stores (memory_source); "
                          "memory_thread_* keep conversations when offered.");
  return r;
}

/* initialize (the handshake revisions): the client's revision when spoken, else the latest handshake one. */
static cJSON *initialize_result(const cJSON *params) {
  const cJSON *asked = cJSON_GetObjectItemCaseSensitive(params, "protocolVersion");
  cJSON *r = describe();
  if (r == NULL) return NULL;
  cJSON_AddStringToObject(r, "protocolVersion",
                          cJSON_IsString(asked) && legacy_version(asked->valuestring) ? asked->valuestring
                                                                                      : MCP_LATEST_VERSION);
  return r;
}

/* server/discover (2026-07-28): every revision spoken, and the same description; cacheable. */
static cJSON *discover_result(void) {
  cJSON *r = describe();
  if (r == NULL) return NULL;
  cJSON_AddItemToObject(r, "supportedVersions", supported_versions());
  cJSON_AddNumberToObject(r, "ttlMs", LIST_TTL_MS);
  cJSON_AddStringToObject(r, "cacheScope", "public");
  return r;
}

static cJSON *tools_list_result(const mcp_server_t *s, int modern) {
  cJSON *r = cJSON_Duplicate(s->tools, 1);
  if (r && modern) {
    cJSON_AddNumberToObject(r, "ttlMs", LIST_TTL_MS);
    cJSON_AddStringToObject(r, "cacheScope", "public");
  }
  return r;
}

static void on_tool(int status, const engram_reply_t *reply, void *ud) {
  call_t *c = ud;
  mcp_session_t *sess = c->sess;
  const char *text = reply->text ? reply->text : "{\"error\":\"no result\"}";
  char *out = NULL;
  c->server->pending--;
  if (sess) { /* unlink */
    if (c->prev) c->prev->next = c->next;
    else sess->calls = c->next;
    if (c->next) c->next->prev = c->prev;
  }
  if (sess && !c->cancelled) {
    cJSON *r = cJSON_CreateObject(), *content = cJSON_CreateArray(), *item = cJSON_CreateObject();
    cJSON *structured = cJSON_Parse(text);
    if (r && content && item) {
      cJSON_AddStringToObject(item, "type", "text");
      cJSON_AddStringToObject(item, "text", text);
      cJSON_AddItemToArray(content, item);
      item = NULL;
      cJSON_AddItemToObject(r, "content", content);
      content = NULL;
      if (cJSON_IsObject(structured)) {
        cJSON_AddItemToObject(r, "structuredContent", structured);
        structured = NULL;
      }
      cJSON_AddBoolToObject(r, "isError", status != 0);
      out = result_text_era(c->id, r, c->modern);
      r = NULL;
    }
    cJSON_Delete(r);
    cJSON_Delete(content);
    cJSON_Delete(item);
    cJSON_Delete(structured);
    if (out == NULL) out = error_text(c->id, -32603, "out of memory");
  }
  /* A cancelled call, or one whose session is gone, gets no response (the receiver of a cancellation SHOULD
   * NOT answer); the transport still learns that the call is over. */
  c->answer(c->ud, out, MCP_ANSWER_OK);
  cJSON_Delete(c->id);
  free(c);
}

/* tools/call: answers now (a bad request) or later (on_tool). */
static void tools_call(mcp_session_t *sess, const cJSON *id, const cJSON *params, int modern, mcp_answer_fn answer,
                       void *ud) {
  mcp_server_t *s = sess->server;
  const cJSON *name = cJSON_GetObjectItemCaseSensitive(params, "name");
  const cJSON *args = cJSON_GetObjectItemCaseSensitive(params, "arguments");
  char *args_text = NULL, msg[200];
  engram_opts_t o = {0};
  call_t *c;
  int rc;
  if (!cJSON_IsString(name)) return answer(ud, error_text(id, -32602, "tools/call: params.name must be a string"), 0);
  if ((engram_tools_tool_set(name->valuestring) & s->sets) == 0) { /* only what tools/list offers */
    char quoted[80];
    size_t i = 0;
    for (; name->valuestring[i] && i + 1 < sizeof quoted; i++) { /* quote printable ASCII only */
      unsigned char ch = (unsigned char)name->valuestring[i];
      quoted[i] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
    }
    quoted[i] = '\0';
    snprintf(msg, sizeof msg, "Unknown tool: %s", quoted);
    return answer(ud, error_text(id, -32602, msg), 0);
  }
  if (args != NULL && !cJSON_IsObject(args) && !cJSON_IsNull(args))
    return answer(ud, error_text(id, -32602, "tools/call: params.arguments must be an object"), 0);
  if ((c = calloc(1, sizeof *c)) == NULL || (c->id = cJSON_Duplicate(id, 1)) == NULL ||
      (cJSON_IsObject(args) && (args_text = engram_json_print_text(args)) == NULL)) { /* exact numbers */
    if (c) cJSON_Delete(c->id);
    free(c);
    return answer(ud, error_text(id, -32603, "out of memory"), 0);
  }
  c->sess = sess;
  c->server = s;
  c->answer = answer;
  c->ud = ud;
  c->modern = modern;
  o.deadline_ms = s->deadline_ms;
  rc = engram_tools_call(s->mgr, name->valuestring, args_text, &o, on_tool, c);
  engram_free(args_text);
  if (rc != 0) {
    snprintf(msg, sizeof msg, "engram_tools_call: %s (%s)", engram_err_name(rc), engram_last_error());
    cJSON_Delete(c->id);
    free(c);
    return answer(ud, error_text(id, -32603, msg), 0);
  }
  s->pending++;
  c->next = sess->calls;
  if (sess->calls) sess->calls->prev = c;
  sess->calls = c;
}

static void cancel(mcp_session_t *sess, const cJSON *params) {
  const cJSON *rid = cJSON_GetObjectItemCaseSensitive(params, "requestId");
  if (rid == NULL) return;
  for (call_t *c = sess->calls; c != NULL; c = c->next) {
    if (cJSON_Compare(c->id, rid, 1)) c->cancelled = 1;
  }
}

/* ---- One message ---- */

static int valid_id(const cJSON *id) { return cJSON_IsString(id) || cJSON_IsNumber(id); }

void mcp_handle(mcp_session_t *sess, const char *text, size_t len, mcp_answer_fn answer, void *ud) {
  const char *end = NULL;
  cJSON *doc = cJSON_ParseWithLengthOpts(text, len, &end, 0);
  const cJSON *id, *method, *params, *jsonrpc, *meta, *version;
  char why[300];
  int has_id, modern = 0;
  if (doc != NULL) { /* one value, then only whitespace */
    while (end < text + len && (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n')) end++;
    if (end < text + len || memchr(text, '\0', len) != NULL) {
      cJSON_Delete(doc);
      doc = NULL;
    }
  }
  if (doc == NULL) return answer(ud, error_text(NULL, -32700, "Parse error: not one well-formed JSON value"), MCP_ANSWER_PARSE);
  /* engram's input rules (UTF-8, no \u0000 or lone surrogate in a string, bounded nesting): cJSON would cut
   * "memory_store\u0000x" to a real tool's name. The fault is named; the id is kept unless it is the string at
   * fault (not UTF-8, which must never be echoed, or cut at its "\u0000": found by tests/fuzz/fuzz_mcp.c). */
  if (engram_json_check(text, len, "message", why, sizeof why) != 0) {
    int id_at_fault = strncmp(why, "message.id", 10) == 0 && (why[10] == ':' || why[10] == ' ');
    id = cJSON_GetObjectItemCaseSensitive(doc, "id");
    /* The check names the first fault only: an id that is not UTF-8 may come after it. */
    if (cJSON_IsString(id) && !engram_utf8_valid(id->valuestring, strlen(id->valuestring))) id_at_fault = 1;
    answer(ud, error_text(cJSON_IsObject(doc) && valid_id(id) && !id_at_fault ? id : NULL, -32600, why),
           MCP_ANSWER_INVALID);
    return cJSON_Delete(doc);
  }
  if (cJSON_IsArray(doc)) {
    cJSON_Delete(doc);
    return answer(ud, error_text(NULL, -32600, "Invalid Request: JSON-RPC batches are not supported"), MCP_ANSWER_INVALID);
  }
  id = cJSON_GetObjectItemCaseSensitive(doc, "id");
  method = cJSON_GetObjectItemCaseSensitive(doc, "method");
  params = cJSON_GetObjectItemCaseSensitive(doc, "params");
  jsonrpc = cJSON_GetObjectItemCaseSensitive(doc, "jsonrpc");
  has_id = id != NULL;
  if (!cJSON_IsObject(doc) || !cJSON_IsString(jsonrpc) || strcmp(jsonrpc->valuestring, "2.0") != 0 ||
      (has_id && !valid_id(id))) {
    answer(ud, error_text(valid_id(id) ? id : NULL, -32600, "Invalid Request: not a JSON-RPC 2.0 message"),
           MCP_ANSWER_INVALID);
    return cJSON_Delete(doc);
  }
  if (method == NULL && has_id &&
      (cJSON_GetObjectItemCaseSensitive(doc, "result") || cJSON_GetObjectItemCaseSensitive(doc, "error"))) {
    answer(ud, NULL, MCP_ANSWER_OK); /* a response: this server sends no requests, so nothing waits for it */
    return cJSON_Delete(doc);
  }
  if (!cJSON_IsString(method)) {
    answer(ud, error_text(has_id ? id : NULL, -32600, "Invalid Request: \"method\" must be a string"),
           MCP_ANSWER_INVALID);
    return cJSON_Delete(doc);
  }
  if (params != NULL && !cJSON_IsObject(params)) {
    if (has_id) answer(ud, error_text(id, -32602, "Invalid params: \"params\" must be an object"), 0);
    else answer(ud, NULL, MCP_ANSWER_OK);
    return cJSON_Delete(doc);
  }
  if (!has_id) { /* a notification: never answered */
    if (strcmp(method->valuestring, "notifications/cancelled") == 0) cancel(sess, params);
    /* notifications/initialized and anything else: nothing to do */
    answer(ud, NULL, MCP_ANSWER_OK);
    return cJSON_Delete(doc);
  }
  /* The stateless revision: the request names its revision (and the client's capabilities) in params._meta;
   * a request without it is one of the handshake revisions. A revision not spoken gets -32022 with the list. */
  meta = cJSON_GetObjectItemCaseSensitive(params, "_meta");
  version = cJSON_IsObject(meta) ? cJSON_GetObjectItemCaseSensitive(meta, META_VERSION) : NULL;
  if (version != NULL) {
    if (!cJSON_IsString(version) || !mcp_version_supported(version->valuestring)) {
      answer(ud, unsupported_version_text(id, cJSON_IsString(version) ? version->valuestring : NULL), 0);
      return cJSON_Delete(doc);
    }
    modern = strcmp(version->valuestring, MODERN_VERSION) == 0;
    if (modern && !cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(meta, META_CAPS))) {
      answer(ud, error_text(id, -32602, "Invalid params: _meta." META_CAPS " must be an object"), 0);
      return cJSON_Delete(doc);
    }
  }
  if (strcmp(method->valuestring, "initialize") == 0) {
    answer(ud, result_text(id, initialize_result(params)), 0);
  } else if (strcmp(method->valuestring, "server/discover") == 0) {
    answer(ud, result_text_era(id, discover_result(), 1), 0);
  } else if (strcmp(method->valuestring, "ping") == 0) {
    answer(ud, result_text_era(id, cJSON_CreateObject(), modern), 0);
  } else if (strcmp(method->valuestring, "tools/list") == 0) {
    answer(ud, result_text_era(id, tools_list_result(sess->server, modern), modern), 0);
  } else if (strcmp(method->valuestring, "tools/call") == 0) {
    if (params == NULL) answer(ud, error_text(id, -32602, "tools/call: params with a name are required"), 0);
    else tools_call(sess, id, params, modern, answer, ud);
  } else {
    answer(ud, error_text(id, -32601, "Method not found"), 0);
  }
  cJSON_Delete(doc);
}
