/*
 * engram/tools.h — the agent tools: BeamMePrompty's six memory tools (memory_store, memory_retrieve,
 * memory_search, memory_delete, memory_list_keys, memory_list_sources) and four conversation tools
 * (memory_thread_append, memory_thread_window, memory_thread_list, memory_thread_search — engram/thread.h) as
 * JSON tool definitions an LLM API accepts (OpenAI `tools` and Anthropic `input_schema` formats), and one
 * dispatcher that runs a model's tool call through a manager and answers the tool's JSON result string through
 * the usual callback.
 *
 * The memory tools are what engram_tools_definitions has always listed; the thread tools are opt-in
 * (engram_tools_definitions_ex with ENGRAM_TOOLS_THREADS), so an application or front end that lists the six
 * keeps listing exactly the six. engram_tools_call runs every tool of both sets.
 *
 * Names, parameters and result shapes are BeamMePrompty's, with its quirks fixed: metadata.ttl (seconds,
 * fractions allowed) and metadata.tags are honoured, memory_list_keys publishes its parameters (and pages with
 * a cursor), and a bad argument or an unknown memory_source is an error result {"error": "..."} that says what
 * was wrong — never a crash. docs/tools.md has the definitions, the result shapes and an example exchange.
 */
#ifndef ENGRAM_TOOLS_H
#define ENGRAM_TOOLS_H

#include "../engram.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The wire format of the tool definitions. */
typedef enum {
  ENGRAM_TOOLS_OPENAI = 1,   /* [{"type": "function", "function": {"name", "description", "parameters"}}] */
  ENGRAM_TOOLS_ANTHROPIC = 2 /* [{"name", "description", "input_schema"}] */
} engram_tools_format_t;

/*
 * The six tool definitions as a cJSON array in format, for splicing into a request body; the caller owns it
 * (cJSON_Delete). Each tool's parameters are a JSON Schema object: "type": "object", "properties" (every
 * property has a "type" and a "description"), "required" and "additionalProperties": false.
 * Returns NULL on ENGRAM_ENOMEM or an unknown format. Thread: any.
 */
ENGRAM_EXPORT cJSON *engram_tools_definitions(engram_tools_format_t format);

/*
 * The same definitions as compact JSON text; the caller frees it with engram_free (or cJSON_free).
 * Returns NULL on ENGRAM_ENOMEM or an unknown format. Thread: any.
 */
ENGRAM_EXPORT char *engram_tools_definitions_json(engram_tools_format_t format);

/* Non-zero when name is one of the six memory tools (for routing a model's tool calls). The thread tools are not
 * counted, so a front end that lists engram_tools_definitions routes exactly what it lists; use
 * engram_tools_tool_set for both sets. Thread: any. */
ENGRAM_EXPORT int engram_tools_is_tool(const char *name);

/* Tool sets, for engram_tools_definitions_ex and engram_tools_tool_set. */
enum {
  ENGRAM_TOOLS_MEMORY = 1u << 0,  /* the six memory tools (engram_tools_definitions) */
  /* memory_thread_append, memory_thread_window, memory_thread_list, memory_thread_search */
  ENGRAM_TOOLS_THREADS = 1u << 1,
  ENGRAM_TOOLS_ALL = ENGRAM_TOOLS_MEMORY | ENGRAM_TOOLS_THREADS
};

/*
 * The definitions of the tool sets in sets (ENGRAM_TOOLS_MEMORY and/or ENGRAM_TOOLS_THREADS), memory tools first,
 * as a cJSON array in format that the caller owns (cJSON_Delete); same schema conventions as
 * engram_tools_definitions, which is engram_tools_definitions_ex(format, ENGRAM_TOOLS_MEMORY).
 * Returns NULL on ENGRAM_ENOMEM, an unknown format, or sets 0 or with unknown bits. Thread: any.
 */
ENGRAM_EXPORT cJSON *engram_tools_definitions_ex(engram_tools_format_t format, unsigned sets);

/* The same as compact JSON text (engram_free it); NULL as engram_tools_definitions_ex. Thread: any. */
ENGRAM_EXPORT char *engram_tools_definitions_json_ex(engram_tools_format_t format, unsigned sets);

/* The set a tool name belongs to: ENGRAM_TOOLS_MEMORY, ENGRAM_TOOLS_THREADS, or 0 for a name engram does not
 * know (or NULL). Route a model's call to engram_tools_call when (engram_tools_tool_set(name) & the sets you
 * listed) != 0. Thread: any. */
ENGRAM_EXPORT unsigned engram_tools_tool_set(const char *name);

/*
 * Runs one tool call of a model — a tool of either set: name is the tool's name, arguments_json its arguments — a JSON object text,
 * or a JSON string holding an object text (OpenAI sends arguments as a string), or NULL / "" for {}.
 * opts (may be NULL) are the application's defaults: opts->source is the source when the model names no
 * memory_source, opts->ns the namespace the agent is confined to (a model's "namespace" argument becomes a
 * level below it: "<opts->ns>/<namespace>"), opts->ttl_ms / opts->metadata / opts->flags apply to
 * memory_store when the model gives none, opts->deadline_ms and opts->cq as for every operation. (opts->ns
 * confines the thread tools the same way: their threads live in "<opts->ns>/<namespace>".)
 *
 * Returns 0, after which cb runs exactly once — never from inside this call — on the home loop, or on the
 * thread that drains opts->cq, with reply->op = ENGRAM_OP_TOOL_CALL and reply->text = the tool's JSON result
 * (borrowed for the callback's duration; the other reply fields are those of the underlying operation):
 *   memory_store         {"status": "stored", "key": K, "metadata": {...}}
 *   memory_retrieve      {"found": true, "key": K, "value": V}
 *                        {"found": false, "key": K, "message": "No memory found for key: K"}   (status 0)
 *   memory_search        {"found": N, "results": [{"key", "value", "score", "metadata"?}, ...]}
 *   memory_delete        {"status": "deleted", "key": K}
 *   memory_list_keys     {"count": N, "keys": [...], "cursor": C}   (cursor only when there is a next page)
 *   memory_list_sources  {"sources": [{"name", "type", "description", "default"}, ...]}
 *   memory_thread_append {"status": "appended", "thread": T, "seq": n, "count": visible messages, "trimmed": k}
 *   memory_thread_window {"found": true, "thread": T, "format": "openai", "messages": [...rendered...],
 *                         "count": N, "omitted": k, "tokens": t, "first_seq", "last_seq"} — with "anthropic",
 *                        "system" (when there is system text) and "messages" of the Anthropic body; when the
 *                        thread's summary heads the window (engram/thread.h), "summary": {"text", "first_seq",
 *                        "last_seq", "created_at_ms"} and the rendering carries it as a system message.
 *                        {"found": false, "thread": T, "format": F, "messages": [], "count": 0, "omitted": 0,
 *                         "message": "No thread found: T"}   (status 0, as memory_retrieve)
 *   memory_thread_list   {"count": N, "threads": [{"thread", "first_seq", "last_seq", "count", "max_messages",
 *                         "ttl_ms", "metadata", "created_at_ms", "updated_at_ms", "expires_at_ms"}, ...],
 *                         "cursor": C}   (newest-updated first; cursor only when there is a next page)
 *   memory_thread_search {"thread": T or null (every thread), "count": N, "messages": [{"thread", "score", "seq",
 *                         "role", "content", ...the message's other members}, ...]}   (best first; no match, or
 *                         no such thread: count 0 — engram_thread_search)
 * Every failure is an error result {"error": "<tool>: <what was wrong>"} with a non-zero status: ENGRAM_EINVAL
 * for an unknown tool, malformed JSON or a bad argument, ENGRAM_EUNKNOWN_SOURCE for an unknown memory_source
 * (the message lists the sources there are), or the underlying operation's error (ENGRAM_ETIMEDOUT,
 * ENGRAM_ECANCELED, ENGRAM_EBACKEND, ...). Hand reply->text back to the model whatever the status.
 *
 * Returns ENGRAM_EINVAL at once (no callback) when mgr, name or cb is NULL, and ENGRAM_ENOMEM or
 * ENGRAM_ECLOSED (no callback) when the call cannot be queued at all. Thread: any.
 */
ENGRAM_EXPORT int engram_tools_call(engram_manager_t *mgr, const char *name, const char *arguments_json, const engram_opts_t *opts,
                      engram_cb cb, void *ud);

/*
 * Checks that text (len bytes; it need not be NUL-terminated) is one JSON document that keeps engram's input
 * rules, so that cJSON parses it to exactly what it says: valid UTF-8, no "\u0000" or lone surrogate escape in a
 * string or member name, nesting within engram's limit, nothing but whitespace after it. A front end runs it on
 * a request body before cJSON_Parse: cJSON ends a string at "\u0000", so a body naming the tool
 * "memory_store\u0000x" would otherwise reach engram_tools_call as "memory_store". root names the document in
 * messages ("body" gives "body.name: ..."). Returns 0, or ENGRAM_EINVAL with a message in msg (msg_size bytes,
 * NUL-terminated, valid UTF-8; msg may be NULL) naming the first fault by path or byte offset. Thread: any.
 */
ENGRAM_EXPORT int engram_json_check(const char *text, size_t len, const char *root, char *msg, size_t msg_size);

#ifdef __cplusplus
}
#endif

#endif /* ENGRAM_TOOLS_H */
