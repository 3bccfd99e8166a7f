/*
 * tools_schema.c — the JSON definitions of the agent tools (engram/tools.h): the six memory tools and the four
 * conversation tools, in the OpenAI `tools` format and the Anthropic `input_schema` format.
 *
 * The definitions are built with cJSON from code rather than parsed from a text literal, so each parameter is
 * one readable line and the descriptions the model reads sit next to the limits the dispatcher (tools.c)
 * enforces. Names, parameters and descriptions of the memory tools follow BeamMePrompty's; the differences are
 * the fixes docs/tools.md lists (ttl in seconds with fractions, tags kept, namespace, memory_list_keys published
 * with its cursor, a search query that is text). The thread tools (memory_thread_*) map onto engram/thread.h and
 * are listed only when asked for (engram_tools_definitions_ex with ENGRAM_TOOLS_THREADS). Every schema is
 * "type": "object" with "properties" (each with a "type" and a "description"), "required" and
 * "additionalProperties": false.
 */
#include <string.h>

#include "engram/source.h"
#include "engram/thread.h"
#include "engram/tools.h"

/* The tool names, in the order the definitions list them: the six memory tools, then the four thread tools.
 * tools.c dispatches on the same list. */
const char *const engram__tool_names[10] = {"memory_store",         "memory_retrieve",      "memory_search",
                                            "memory_delete",        "memory_list_keys",     "memory_list_sources",
                                            "memory_thread_append", "memory_thread_window", "memory_thread_list",
                                            "memory_thread_search"};

#define N_MEMORY_TOOLS 6
#define N_TOOLS 10

unsigned engram_tools_tool_set(const char *name) {
  size_t i;
  if (name == NULL) return 0;
  for (i = 0; i < N_TOOLS; i++)
    if (strcmp(name, engram__tool_names[i]) == 0) return i < N_MEMORY_TOOLS ? ENGRAM_TOOLS_MEMORY : ENGRAM_TOOLS_THREADS;
  return 0;
}

int engram_tools_is_tool(const char *name) { return engram_tools_tool_set(name) == ENGRAM_TOOLS_MEMORY; }

/* ---- Builder: each helper does nothing once an allocation failed, so callers check once at the end. ---- */

typedef struct {
  int failed;
} bld_t;

static cJSON *check(bld_t *b, cJSON *node) {
  if (node == NULL) b->failed = 1;
  return node;
}

/* Adds properties.<name> = {"type": type, "description": desc} and returns it. */
static cJSON *prop(bld_t *b, cJSON *props, const char *name, const char *type, const char *desc) {
  cJSON *p;
  if (b->failed) return NULL;
  if ((p = check(b, cJSON_AddObjectToObject(props, name))) == NULL) return NULL;
  check(b, cJSON_AddStringToObject(p, "type", type));
  check(b, cJSON_AddStringToObject(p, "description", desc));
  return p;
}

static void num(bld_t *b, cJSON *o, const char *name, double v) {
  if (!b->failed && o != NULL) check(b, cJSON_AddNumberToObject(o, name, v));
}

static void int_range(bld_t *b, cJSON *p, int min, int max, int def) {
  num(b, p, "minimum", min);
  num(b, p, "maximum", max);
  num(b, p, "default", def);
}

/* Adds "enum": [values...] to p. */
static void enum_of(bld_t *b, cJSON *p, const char *const *values, int n) {
  cJSON *e;
  if (b->failed || p == NULL) return;
  if ((e = check(b, cJSON_CreateStringArray(values, n))) != NULL && !cJSON_AddItemToObject(p, "enum", e)) {
    cJSON_Delete(e);
    b->failed = 1;
  }
}

/* properties.<name> of any JSON type: "type" lists every JSON Schema type, so validators see a type. */
static void prop_any(bld_t *b, cJSON *props, const char *name, const char *desc) {
  static const char *const all[] = {"object", "array", "string", "number", "boolean", "null"};
  cJSON *p, *types;
  if (b->failed) return;
  if ((p = check(b, cJSON_AddObjectToObject(props, name))) == NULL) return;
  if ((types = check(b, cJSON_CreateStringArray(all, 6))) != NULL && !cJSON_AddItemToObject(p, "type", types)) {
    cJSON_Delete(types);
    b->failed = 1;
  }
  check(b, cJSON_AddStringToObject(p, "description", desc));
}

static void prop_source(bld_t *b, cJSON *props) {
  prop(b, props, "memory_source", "string",
       "Name of the memory source to use (optional; the default source when omitted). Use the memory_list_sources "
       "tool to see which sources are available and what each one is for.");
}

static void prop_namespace(bld_t *b, cJSON *props) {
  cJSON *p = prop(b, props, "namespace", "string",
                  "Optional namespace, e.g. a project or a topic: items in different namespaces never see each "
                  "other. Use the same namespace to retrieve, search, delete or list what you stored in it.");
  num(b, p, "maxLength", ENGRAM_NAMESPACE_MAX);
}

static void prop_key(bld_t *b, cJSON *props, const char *desc) {
  cJSON *p = prop(b, props, "key", "string", desc);
  num(b, p, "minLength", 1);
  num(b, p, "maxLength", ENGRAM_KEY_MAX);
}

/* A parameters object: {"type": "object", "properties": {}, "required": [...], "additionalProperties": false}. */
static cJSON *params(bld_t *b, cJSON *tool, const char *const *required, int n_required, cJSON **props) {
  cJSON *p, *req;
  *props = NULL;
  if (b->failed) return NULL;
  if ((p = check(b, cJSON_AddObjectToObject(tool, "parameters"))) == NULL) return NULL;
  check(b, cJSON_AddStringToObject(p, "type", "object"));
  *props = check(b, cJSON_AddObjectToObject(p, "properties"));
  if (!b->failed) {
    req = n_required > 0 ? cJSON_CreateStringArray(required, n_required) : cJSON_CreateArray();
    if (check(b, req) != NULL && !cJSON_AddItemToObject(p, "required", req)) {
      cJSON_Delete(req);
      b->failed = 1;
    }
  }
  check(b, cJSON_AddFalseToObject(p, "additionalProperties"));
  return p;
}

/* Starts a tool {"name", "description", "parameters"} in the array. */
static cJSON *tool(bld_t *b, cJSON *arr, const char *name, const char *desc) {
  cJSON *t;
  if (b->failed) return NULL;
  if ((t = check(b, cJSON_CreateObject())) == NULL) return NULL;
  if (!cJSON_AddItemToArray(arr, t)) {
    cJSON_Delete(t);
    b->failed = 1;
    return NULL;
  }
  check(b, cJSON_AddStringToObject(t, "name", name));
  check(b, cJSON_AddStringToObject(t, "description", desc));
  return t;
}

/* ---- The six tools, in a neutral form [{"name", "description", "parameters"}] ---- */

static void def_store(bld_t *b, cJSON *arr) {
  static const char *const req[] = {"key", "value"};
  cJSON *t = tool(b, arr, "memory_store",
                  "Store information in the agent's memory for later retrieval. Useful for remembering facts, "
                  "context, or intermediate results. Storing under an existing key replaces its value."),
        *props, *meta, *mprops, *p, *items;
  params(b, t, req, 2, &props);
  prop_key(b, props, "Unique identifier for the memory item");
  prop_any(b, props, "value", "The information to store: any JSON value (an object, a string, a number, ...)");
  meta = prop(b, props, "metadata", "object",
              "Optional metadata about the stored item. ttl and tags have a meaning; any other field is kept with "
              "the item and can be matched by memory_search's filter.");
  if (!b->failed) mprops = check(b, cJSON_AddObjectToObject(meta, "properties"));
  else mprops = NULL;
  p = prop(b, mprops, "tags", "array", "Tags for categorizing the memory");
  if (!b->failed && (items = check(b, cJSON_AddObjectToObject(p, "items"))) != NULL)
    check(b, cJSON_AddStringToObject(items, "type", "string"));
  p = prop(b, mprops, "ttl", "number",
           "Time to live in seconds (fractions allowed): the item expires after it. 0 expires it at once. Omit it "
           "to keep the item until it is deleted.");
  num(b, p, "minimum", 0);
  prop(b, mprops, "source", "string", "Source of the information");
  prop_source(b, props);
  prop_namespace(b, props);
}

static void def_retrieve(bld_t *b, cJSON *arr) {
  static const char *const req[] = {"key"};
  cJSON *t = tool(b, arr, "memory_retrieve",
                  "Retrieve previously stored information from the agent's memory by its key. Useful for accessing "
                  "context or facts that were stored earlier."),
        *props;
  params(b, t, req, 1, &props);
  prop_key(b, props, "The key of the memory item to retrieve");
  prop_source(b, props);
  prop_namespace(b, props);
}

static void def_search(bld_t *b, cJSON *arr) {
  static const char *const req[] = {"query"};
  static const char *const modes[] = {"text", "vector", "hybrid"};
  cJSON *t = tool(b, arr, "memory_search",
                  "Search through the agent's memory. The query is matched against keys and the text in values and "
                  "results are ranked by relevance (score 1 = best); pattern and filter narrow the results."),
        *props, *p;
  params(b, t, req, 1, &props);
  prop(b, props, "query", "string",
       "Words to search for. An empty string matches every item (then narrow with pattern or filter). An object "
       "{\"text\", \"pattern\", \"filter\", \"mode\", \"alpha\"} is accepted too (BeamMePrompty's form).");
  prop(b, props, "pattern", "string",
       "Optional key pattern: a glob with * ? [abc], or plain text that must occur in the key");
  prop(b, props, "filter", "object",
       "Optional metadata filter: {\"field\": value} for equality, or {\"field\": {\"$gt\": 3}} with $eq $ne $gt "
       "$gte $lt $lte $in $nin $exists. Several fields must all match.");
  p = prop(b, props, "mode", "string",
           "Optional ranking: \"text\" (keyword relevance, BM25), \"vector\" (meaning: the words embedded, on a "
           "vector memory source) or \"hybrid\" (both rankings fused; a vector memory source). Default: the "
           "source's own.");
  enum_of(b, p, modes, 3);
  p = prop(b, props, "alpha", "number",
           "Optional, with mode \"hybrid\": how much the meaning (vector) score counts against the keyword score, "
           "0 to 1. Without it the two rankings are fused by rank (reciprocal rank fusion).");
  num(b, p, "minimum", 0);
  num(b, p, "maximum", 1);
  p = prop(b, props, "limit", "integer", "Maximum number of results to return");
  int_range(b, p, 1, 100, 10);
  prop_source(b, props);
  prop_namespace(b, props);
}

static void def_delete(bld_t *b, cJSON *arr) {
  static const char *const req[] = {"key"};
  cJSON *t = tool(b, arr, "memory_delete",
                  "Delete information from the agent's memory. Useful for removing outdated or incorrect facts. "
                  "Deleting a key that does not exist succeeds."),
        *props;
  params(b, t, req, 1, &props);
  prop_key(b, props, "The key of the memory item to delete");
  prop_source(b, props);
  prop_namespace(b, props);
}

static void def_list_keys(bld_t *b, cJSON *arr) {
  cJSON *t = tool(b, arr, "memory_list_keys",
                  "List the keys stored in the agent's memory, a page at a time. Useful for understanding what "
                  "information is stored. When the result has a cursor, pass it back to get the next page."),
        *props, *p;
  params(b, t, NULL, 0, &props);
  prop(b, props, "pattern", "string",
       "Optional key pattern: a glob with * ? [abc], or plain text that must occur in the key");
  p = prop(b, props, "limit", "integer", "Maximum number of keys to return");
  int_range(b, p, 1, 1000, 100);
  prop(b, props, "cursor", "string", "The cursor of the previous page's result; omit it for the first page");
  prop_source(b, props);
  prop_namespace(b, props);
}

static void def_list_sources(bld_t *b, cJSON *arr) {
  cJSON *t = tool(b, arr, "memory_list_sources",
                  "List the available memory sources: each one's name, type, description and whether it is the "
                  "default. Use it to learn which sources exist and what each one is for before naming a "
                  "memory_source in the other memory tools."),
        *props;
  params(b, t, NULL, 0, &props);
}

/* ---- The thread tools (engram/thread.h) ---- */

static void prop_thread(bld_t *b, cJSON *props, const char *desc) {
  cJSON *p = prop(b, props, "thread", "string", desc);
  num(b, p, "minLength", 1);
  num(b, p, "maxLength", ENGRAM_THREAD_ID_MAX);
  if (!b->failed && p != NULL) check(b, cJSON_AddStringToObject(p, "pattern", "^[A-Za-z0-9_.@+=-]+$"));
}


/* Adds "items": {"type": type} to p. */
static void items_of(bld_t *b, cJSON *p, const char *type) {
  cJSON *items;
  if (!b->failed && p != NULL && (items = check(b, cJSON_AddObjectToObject(p, "items"))) != NULL)
    check(b, cJSON_AddStringToObject(items, "type", type));
}

static void def_thread_append(bld_t *b, cJSON *arr) {
  static const char *const req[] = {"thread", "role"};
  static const char *const roles[] = {"system", "user", "assistant", "tool"};
  static const char *const content_types[] = {"string", "array"};
  cJSON *t = tool(b, arr, "memory_thread_append",
                  "Append one message to a conversation thread (created when it does not exist). Messages keep the "
                  "order they were appended in; read the newest of them back with memory_thread_window."),
        *props, *p, *types;
  params(b, t, req, 2, &props);
  prop_thread(b, props, "The thread's id: letters, digits and _ . @ + = - (e.g. a session or conversation id)");
  p = prop(b, props, "role", "string", "Who speaks: system, user, assistant, or tool (the result of a tool call)");
  enum_of(b, p, roles, 4);
  if (!b->failed && (p = check(b, cJSON_AddObjectToObject(props, "content"))) != NULL) {
    if ((types = check(b, cJSON_CreateStringArray(content_types, 2))) != NULL && !cJSON_AddItemToObject(p, "type", types)) {
      cJSON_Delete(types);
      b->failed = 1;
    }
    check(b, cJSON_AddStringToObject(p, "description",
                                     "The message: text, or an array of content parts (OpenAI or Anthropic blocks) "
                                     "kept as given. Required, except for an assistant message that has tool_calls."));
    items_of(b, p, "object");
  }
  p = prop(b, props, "tool_calls", "array",
           "Assistant messages only: the tool calls the assistant made, each an object with a string id (OpenAI "
           "{id, type, function} or Anthropic {id, name, input}), kept as given");
  items_of(b, p, "object");
  prop(b, props, "tool_call_id", "string", "Tool messages only (and required for them): the id of the call answered");
  prop(b, props, "metadata", "object", "Optional metadata kept with the message");
  prop_source(b, props);
  prop_namespace(b, props);
}

static void def_thread_window(bld_t *b, cJSON *arr) {
  static const char *const req[] = {"thread"};
  static const char *const formats[] = {"openai", "anthropic"};
  cJSON *t = tool(b, arr, "memory_thread_window",
                  "Read the newest messages of a conversation thread, oldest first, ready to use as model input: the "
                  "thread's system messages are always kept, and a tool call is never separated from its result. "
                  "The result says how many older messages were left out."),
        *props, *p;
  params(b, t, req, 1, &props);
  prop_thread(b, props, "The thread's id");
  p = prop(b, props, "max_messages", "integer",
           "At most this many messages (system messages included); 50 when neither limit is given");
  int_range(b, p, 1, 1000, 50);
  p = prop(b, props, "max_tokens", "integer", "At most this many tokens (estimated as bytes / 4)");
  num(b, p, "minimum", 1);
  num(b, p, "maximum", 1000000);
  p = prop(b, props, "format", "string",
           "The message format of the result: openai (Chat Completions messages) or anthropic (a Messages "
           "body's system and messages)");
  enum_of(b, p, formats, 2);
  if (!b->failed && p != NULL) check(b, cJSON_AddStringToObject(p, "default", "openai"));
  prop_source(b, props);
  prop_namespace(b, props);
}

static void def_thread_list(bld_t *b, cJSON *arr) {
  cJSON *t = tool(b, arr, "memory_thread_list",
                  "List the conversation threads, most recently updated first, with each one's message count and "
                  "metadata, a page at a time. When the result has a cursor, pass it back to get the next page."),
        *props, *p;
  params(b, t, NULL, 0, &props);
  p = prop(b, props, "limit", "integer", "Maximum number of threads to return");
  int_range(b, p, 1, 100, 20);
  prop(b, props, "cursor", "string", "The cursor of the previous page's result; omit it for the first page");
  prop_source(b, props);
  prop_namespace(b, props);
}

static void def_thread_search(bld_t *b, cJSON *arr) {
  static const char *const req[] = {"query"};
  cJSON *t = tool(b, arr, "memory_thread_search",
                  "Search the messages of conversation threads by words, best match first: one thread's messages, or "
                  "every thread's when no thread is given. Only messages still in their thread are found (not ones "
                  "trimmed or deleted). Each result names its thread and its seq (the message's number there)."),
        *props, *p;
  params(b, t, req, 1, &props);
  prop_thread(b, props, "The thread to search (optional; every thread of the namespace when omitted)");
  p = prop(b, props, "query", "string", "The words to look for in the messages");
  num(b, p, "minLength", 1);
  p = prop(b, props, "limit", "integer", "Maximum number of messages to return");
  int_range(b, p, 1, 100, 10);
  prop_source(b, props);
  prop_namespace(b, props);
}

/* Moves the neutral definitions into the requested format. */
static cJSON *wrap(bld_t *b, cJSON *neutral, engram_tools_format_t format) {
  cJSON *out = check(b, cJSON_CreateArray()), *t, *w, *fn, *p;
  if (out == NULL) return NULL;
  while (!b->failed && (t = cJSON_DetachItemFromArray(neutral, 0)) != NULL) {
    if (format == ENGRAM_TOOLS_ANTHROPIC) {
      /* {"name", "description", "input_schema"}: rename parameters in place. */
      p = cJSON_DetachItemFromObjectCaseSensitive(t, "parameters");
      if (!cJSON_AddItemToObject(t, "input_schema", p)) {
        cJSON_Delete(p);
        cJSON_Delete(t);
        b->failed = 1;
        break;
      }
      w = t;
    } else {
      /* {"type": "function", "function": {"name", "description", "parameters"}} */
      fn = t;
      if ((w = check(b, cJSON_CreateObject())) == NULL || check(b, cJSON_AddStringToObject(w, "type", "function")) == NULL ||
          !cJSON_AddItemToObject(w, "function", fn)) {
        cJSON_Delete(w);
        cJSON_Delete(fn);
        b->failed = 1;
        break;
      }
    }
    if (!cJSON_AddItemToArray(out, w)) {
      cJSON_Delete(w);
      b->failed = 1;
    }
  }
  return out;
}

cJSON *engram_tools_definitions_ex(engram_tools_format_t format, unsigned sets) {
  bld_t b = {0};
  cJSON *neutral, *out;
  if (format != ENGRAM_TOOLS_OPENAI && format != ENGRAM_TOOLS_ANTHROPIC) return NULL;
  if (sets == 0 || (sets & ~(unsigned)ENGRAM_TOOLS_ALL) != 0) return NULL;
  if ((neutral = cJSON_CreateArray()) == NULL) return NULL;
  if (sets & ENGRAM_TOOLS_MEMORY) {
    def_store(&b, neutral);
    def_retrieve(&b, neutral);
    def_search(&b, neutral);
    def_delete(&b, neutral);
    def_list_keys(&b, neutral);
    def_list_sources(&b, neutral);
  }
  if (sets & ENGRAM_TOOLS_THREADS) {
    def_thread_append(&b, neutral);
    def_thread_window(&b, neutral);
    def_thread_list(&b, neutral);
    def_thread_search(&b, neutral);
  }
  out = b.failed ? NULL : wrap(&b, neutral, format);
  cJSON_Delete(neutral);
  if (b.failed) {
    cJSON_Delete(out);
    return NULL;
  }
  return out;
}

cJSON *engram_tools_definitions(engram_tools_format_t format) {
  return engram_tools_definitions_ex(format, ENGRAM_TOOLS_MEMORY);
}

char *engram_tools_definitions_json_ex(engram_tools_format_t format, unsigned sets) {
  cJSON *defs = engram_tools_definitions_ex(format, sets);
  char *text;
  if (defs == NULL) return NULL;
  text = cJSON_PrintUnformatted(defs);
  cJSON_Delete(defs);
  return text;
}

char *engram_tools_definitions_json(engram_tools_format_t format) {
  return engram_tools_definitions_json_ex(format, ENGRAM_TOOLS_MEMORY);
}
