/*
 * engram/thread.h — conversation threads: append-only logs of chat messages in a namespace, read back as a
 * window ready for a model (OpenAI Chat Completions `messages`, Anthropic Messages body).
 *
 * A layer of the core on top of the public data operations (engram_update, engram_store_many,
 * engram_retrieve_many, engram_delete_many, engram_list_keys): it works on every source, including a source that
 * implements only the required methods, and on several processes sharing one Redis, PostgreSQL or SQLite file.
 * docs/conversations.md has the model, the guarantees, the key layout (readable with redis-cli, psql, sqlite3),
 * the round trips of each call and what is not done yet.
 *
 * Conventions are engram.h's: every function takes the manager, the thread id, its own arguments, then
 * `opts` (source, namespace, deadline_ms — applied to each round trip —, cq; the other fields are ignored; NULL =
 * defaults), the callback and your pointer. It returns 0 — then `cb(status, reply, ud)` runs exactly once, later,
 * on the home loop or on the thread draining opts->cq — or a negative ENGRAM_E* code at once and never calls
 * back, with engram_last_error() naming the field ("messages[1].role: unknown role \"bot\"..."). Inputs are
 * copied at the call; everything reachable from the reply is borrowed for the callback's duration. Units:
 * milliseconds and bytes. Thread: any, for every function here.
 *
 * A thread id is 1..ENGRAM_THREAD_ID_MAX bytes of [A-Za-z0-9_.@+=-] (anything else would break the key layout).
 *
 * A stored message is a JSON object:
 *   {"seq": 7, "role": "assistant", "content": "text" | [content parts] | null,
 *    "tool_calls": [...as given], "tool_call_id": "call_1", "metadata": {...}, "created_at_ms": 1718000000000}
 * (tool_calls, tool_call_id and metadata only when given). seq is the thread's sequence number, allocated
 * atomically by engram (1, 2, 3, ... — one total order across every process appending to the thread); a
 * sequence number whose message never arrived (a process died between the two steps of an append) is a gap
 * that readers skip.
 *
 * Replies: reply->op is one of engram_thread_op_t; reply->info a JSON object (shapes below); when a reply
 * carries messages, reply->items[i] is message i (key = its storage key, ns, value = the message object,
 * metadata = the message's metadata, created_at_ms; version and score are 0) and reply->count their number.
 *
 * Peers: MemexLLM (Thread, save_thread/get_thread/list_threads/delete_thread, max_messages, FIFO context window),
 * bruno-core (store_message, retrieve_context, clear_conversation), BoxLang AI (add, getAll, maxMessages, clear),
 * LarAgent (chat history per session, driver TTL). Each function names the call it mirrors.
 */
#ifndef ENGRAM_THREAD_H
#define ENGRAM_THREAD_H

#include "../engram.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ENGRAM_THREAD_ID_MAX 128       /* bytes of [A-Za-z0-9_.@+=-] */
#define ENGRAM_THREAD_BATCH_MAX 1000   /* messages per append */
#define ENGRAM_THREAD_PAGE_MAX 10000   /* messages per range page, threads per list page */

/* reply->op of the thread calls (outside engram_op_t's range). */
typedef enum {
  ENGRAM_OP_THREAD_APPEND = 64,
  ENGRAM_OP_THREAD_WINDOW,
  ENGRAM_OP_THREAD_READ,
  ENGRAM_OP_THREAD_GET_MESSAGE,
  ENGRAM_OP_THREAD_DELETE_MESSAGES,
  ENGRAM_OP_THREAD_INFO,
  ENGRAM_OP_THREAD_SET,
  ENGRAM_OP_THREAD_DELETE,
  ENGRAM_OP_THREAD_LIST,
  ENGRAM_OP_THREAD_SUMMARY, /* the callback of engram_summary_complete */
  ENGRAM_OP_THREAD_SEARCH,
  ENGRAM_OP_THREAD_CONTEXT
} engram_thread_op_t;

/*
 * One message to append. role: "system" | "user" | "assistant" | "tool". Content: `content` (non-empty UTF-8
 * text) or `content_parts` (a non-empty JSON array of content parts, or any other non-null JSON value, kept as
 * given) — exactly one of them, except that an assistant message with tool_calls may have neither (content is
 * then stored as null). tool_calls: assistant only, a non-empty array of objects each with a string "id" (OpenAI
 * {"id", "type": "function", "function": {"name", "arguments"}} or Anthropic {"id", "name", "input"}), kept as
 * given. tool_call_id: required for (and only for) role "tool": the id of the call it answers. metadata: a JSON
 * object or NULL. Everything is copied.
 */
typedef struct engram_message_s {
  const char *role;
  const char *content;
  const cJSON *content_parts;
  const cJSON *tool_calls;
  const char *tool_call_id;
  const cJSON *metadata;
} engram_message_t;

/* engram_thread_settings_t.flags */
enum {
  ENGRAM_THREAD_MAX_MESSAGES = 1u << 0, /* set max_messages (≥ 1): after each append the newest N remain */
  ENGRAM_THREAD_TTL = 1u << 1,          /* set ttl_ms (≥ 1): the thread expires ttl_ms after its last append */
  ENGRAM_THREAD_NO_MAX = 1u << 2,       /* remove the thread's max_messages */
  ENGRAM_THREAD_NO_TTL = 1u << 3        /* remove the thread's TTL (takes effect for the head at once; messages
                                           already stored keep the expiry they were stored with) */
};

/*
 * Per-thread settings, kept in the thread's head and applied by every later call until changed. All-zero (or
 * NULL) changes nothing. max_messages: 1..2^53 messages; ttl_ms: 1..2^53 ms (MemexLLM max_messages, BoxLang AI
 * maxMessages, LarAgent's driver TTL).
 */
typedef struct engram_thread_settings_s {
  unsigned flags;
  int64_t max_messages;
  int64_t ttl_ms;
} engram_thread_settings_t;

/*
 * Appends n (1..ENGRAM_THREAD_BATCH_MAX) messages to thread, creating it when missing, in the order given and
 * with consecutive sequence numbers (a concurrent append never lands between them). settings (may be NULL)
 * changes the thread's max_messages / TTL first. With max_messages N, the thread's visible messages after the
 * append are exactly its newest N (the trim and the append are one atomic step for readers); with a TTL, the
 * thread's expiry moves to now + ttl_ms, the new messages are stored to expire 2 × ttl_ms later, and once a ttl_ms
 * has passed since the visible messages were last written they are written again (docs/conversations.md), so no
 * message of a live thread expires before it.
 *
 * Reply: reply->items = the stored messages (seq and created_at_ms stamped), count = n, info =
 *   {"thread": id, "first_seq": s0, "last_seq": s0+n-1, "count": messages visible now, "trimmed": messages
 *    trimmed by max_messages, "created_at_ms": t}
 * Errors at once: ENGRAM_EINVAL (thread id, n, messages[i].role / .content / .content_parts / .tool_calls /
 * .tool_call_id / .metadata, settings.max_messages / .ttl_ms, invalid UTF-8 anywhere), ENGRAM_ENOMEM, and the
 * refusals of engram_update (ENGRAM_EUNKNOWN_SOURCE, ENGRAM_EBUSY, ENGRAM_ECLOSED, opts.ns). Nothing is
 * stored when the call is refused. In the callback: the errors of engram_update / engram_store_many
 * (ENGRAM_ECONFLICT when the head kept changing through 8 rounds of the source's update retries, ENGRAM_ETOOBIG for a message
 * over the source's max_value_bytes — its sequence number is then a gap —, ENGRAM_ETIMEDOUT, ...).
 * Round trips: 1 update of the head, then in parallel 1 store_many + (1 delete_many when trimming) + (1
 * conditional store of the head when the thread has a TTL). Mirrors MemexLLM add_message / save_thread, bruno-core
 * store_message, BoxLang AI add().
 *
 * Appends in flight together: an append made while two others of this process to the same thread, with the same
 * source option, namespace, settings, deadline_ms and cq, are in flight waits (after its checks) until one of them
 * ends, then goes in one update with the others that waited (docs/conversations.md); its reply is exactly what it
 * would have been alone, and callers get their callbacks in the order they called. Its deadline counts from the
 * call (ENGRAM_ETIMEDOUT when it passed while waiting; nothing is stored); a merged update that fails fails each
 * append in it with that error. Threads: any; the callback runs on the home loop, or the cq's poller.
 */
ENGRAM_EXPORT int engram_thread_append(engram_manager_t *mgr, const char *thread, const engram_message_t *messages,
                                       size_t n, const engram_thread_settings_t *settings, const engram_opts_t *opts,
                                       engram_cb cb, void *ud);

/* A token counter: the tokens one stored message (the JSON object above) costs. Must not block; runs on the
 * thread that runs the window's callback. */
typedef size_t (*engram_token_counter_fn)(const cJSON *message, void *ud);

/* The default counter: ceil(bytes / 4) over the UTF-8 bytes of the content (text, or the content parts as
 * compact JSON) and of tool_calls as compact JSON, at least 1. Thread: any. */
ENGRAM_EXPORT size_t engram_thread_count_tokens(const cJSON *message, void *ud);

/* Renderings of a window (engram_window_t.format, engram_thread_render). */
typedef enum {
  ENGRAM_RENDER_NONE = 0,
  ENGRAM_RENDER_OPENAI = 1,   /* [{"role", "content", "tool_calls"?, "tool_call_id"?}, ...] */
  ENGRAM_RENDER_ANTHROPIC = 2 /* {"system": "...", "messages": [{"role": "user"|"assistant", "content": [...]}]} */
} engram_render_format_t;

/*
 * Summaries (issue 12 item 5). A window may name a summariser: a function of yours — typically one that asks an
 * LLM, possibly much later — that condenses the messages that fell out of the window into a text. engram stores
 * that text as a separate item of the thread and later windows are headed by it; it never deletes, changes or
 * hides a message (only max_messages, the TTL and explicit deletes remove messages).
 *
 * When a window with window.summarize leaves out visible non-system messages that the thread's summary does not
 * cover yet (those numbered above the summary's last_seq, or all of them when there is none), then after the
 * window's callback has run engram reads up to ENGRAM_THREAD_BATCH_MAX of them (oldest first; the rest go to a
 * later window) and calls
 *   summarize(req, thread, previous, messages, summarize_ud)
 * thread: the thread id; previous: the current summary's text, or NULL (a rolling summary: fold the new
 * messages into it); messages: a JSON array of the stored message objects (the shape above, chronological, system
 * messages left out), borrowed for the duration of the call. The function must not block: it answers now or
 * later, from any thread, with engram_summary_complete(req, ...) — exactly once per request. It runs on the
 * thread that runs the window's callback (the home loop, or the thread draining opts->cq).
 *
 * The summary item is {"summary": text, "first_seq": oldest message covered, "last_seq": newest message covered,
 * "created_at_ms"} under the key "thread-msg:<id>:<gen>:summary" in the thread's namespace
 * (docs/conversations.md): deleting the thread deletes it; a thread with a TTL stores it to expire 2 × ttl_ms
 * after it is written (a later window writes a new one). It is written by an atomic update that keeps whichever
 * summary covers more (the higher last_seq), so two windows racing to summarise never move it backwards.
 *
 * How it heads a window: reply->info.summary = {"text", "first_seq", "last_seq", "created_at_ms"} whenever the
 * thread has a summary that covers a message older than the window; the rendering (window.format, reply->text)
 * then carries it as one system message, "Summary of the earlier conversation: <text>", placed after the
 * thread's leading system messages (with ENGRAM_RENDER_ANTHROPIC it joins the "system" text). With
 * ENGRAM_WINDOW_BY_TOKENS, the summary's tokens (that system message, by the window's counter) are claimed first,
 * with the system messages; they are not a message for max_messages. info.messages and reply->items hold stored
 * messages only.
 *
 * Failures never touch the thread: a window answers without waiting for its summariser; a summariser that
 * fails (status ≠ 0), answers late, or whose summary cannot be stored leaves the thread and its summary as they
 * were, and the next window asks again. Summarised messages that are later deleted stay summarised.
 */
typedef struct engram_summary_request_s engram_summary_request_t;

typedef void (*engram_summarize_fn)(engram_summary_request_t *req, const char *thread, const char *previous,
                                    const cJSON *messages, void *ud);

/*
 * Answers a summary request: status 0 with summary = the new summary (1..65,536 bytes of UTF-8; copied), or a
 * non-zero status (any value, e.g. the LLM call's failure; summary ignored) to drop the request and leave the
 * thread as it is. The request is consumed in every case — never use req again.
 * cb (may be NULL) reports the outcome once, on the home loop or on the thread draining the window's opts->cq:
 * 0 (stored; reply->info = the stored summary item's value, op = ENGRAM_OP_THREAD_SUMMARY), ENGRAM_EEXIST (a
 * summary covering as many messages was stored meanwhile: this one is dropped), the summariser's own status
 * when it was not 0 (nothing stored), or the store's error (ENGRAM_ETIMEDOUT, ENGRAM_ECLOSED, ...).
 * Returns 0 (then cb runs exactly once, never from inside this call), or at once, without calling cb:
 * ENGRAM_EINVAL (req NULL; status 0 with a summary NULL, empty, over 65,536 bytes or not UTF-8 — the request is
 * still consumed), ENGRAM_ENOMEM, ENGRAM_ECLOSED (the manager is closing). Complete every request before the
 * manager's close callback has run (the request refers to the manager). Thread: any.
 */
ENGRAM_EXPORT int engram_summary_complete(engram_summary_request_t *req, int status, const char *summary, engram_cb cb,
                                          void *ud);

#define ENGRAM_SUMMARY_MAX 65536 /* bytes of summary text */

/* engram_window_t.flags: which limits apply (at least one). */
enum {
  ENGRAM_WINDOW_BY_COUNT = 1u << 0, /* at most max_messages messages */
  ENGRAM_WINDOW_BY_TOKENS = 1u << 1 /* at most max_tokens tokens, measured by count_tokens */
};

/* What a window holds. Initialise with ENGRAM_WINDOW_INIT (the newest 50 messages, no rendering). */
typedef struct engram_window_s {
  unsigned flags;                       /* ENGRAM_WINDOW_BY_COUNT and/or ENGRAM_WINDOW_BY_TOKENS */
  int max_messages;                     /* BY_COUNT: 1..100000, system messages included */
  int64_t max_tokens;                   /* BY_TOKENS: ≥ 1, system messages included */
  engram_token_counter_fn count_tokens; /* NULL = engram_thread_count_tokens */
  void *count_ud;
  engram_render_format_t format;        /* ≠ NONE: reply->text holds the rendered window as compact JSON text */
  engram_summarize_fn summarize;        /* NULL = no summariser (an existing summary still heads the window) */
  void *summarize_ud;                   /* passed to summarize; must stay valid until its request is completed */
} engram_window_t;

#define ENGRAM_WINDOW_INIT {ENGRAM_WINDOW_BY_COUNT, 50, 0, NULL, NULL, ENGRAM_RENDER_NONE, NULL, NULL}

/*
 * Reads the window a model should see: the thread's visible system messages, always, plus the newest other
 * messages that fit every limit, in chronological (sequence) order. The window is a contiguous run of the newest
 * messages, cut only where no tool call is separated from its results: it never holds a tool result without
 * the assistant message whose tool_calls name it, nor such an assistant message without the results that follow
 * it. System messages count toward both limits; when they alone exceed a limit they are returned anyway and
 * info.over_limit is true.
 *
 * Reply: items = the window's messages, count = their number, info =
 *   {"thread": id, "messages": [...the same message objects...], "omitted": visible messages older than the
 *    window that it does not hold, "first_seq", "last_seq": the thread's visible range, "tokens": tokens of the
 *    window (by the counter, the summary included), "over_limit": bool, "summary": {...} when one heads the window}
 * and, with window->format, reply->text = the rendering (see engram_thread_render; headed by the summary when
 * there is one) as compact JSON text. With window->summarize, messages left out are summarised after the
 * callback (see engram_summarize_fn above).
 * Callback errors: ENGRAM_ENOTFOUND (no such thread, or expired), those of engram_retrieve[_many].
 * Errors at once: ENGRAM_EINVAL (thread, window NULL, window.flags, window.max_messages, window.max_tokens 0 or
 * negative, window.format), and engram_retrieve's refusals.
 * Round trips: 1 retrieve_many of the head, the first page and the summary item when this process's hint of the
 * head is right (it last saw the head as it is: docs/conversations.md, "Windows in one round trip"), else
 * 1 retrieve of the head + 1 retrieve_many (more only when gaps, or a token budget larger than the first page of
 * 64 messages, need older pages: each further page is one retrieve_many of twice the size); the summary item is
 * read in the first retrieve_many. A summariser adds, after the callback, 1 retrieve_many of the
 * messages to summarise and, once it answers, 1 update (+1 conditional store with a TTL).
 * The message cache: messages this manager appended or read before are not read again (the manager's
 * message_cache_bytes, engram.h; not on the cache source), so an agent's window after its own append reads the
 * head and the summary item only. The head read with the window still decides what is shown; a message item
 * rewritten behind the thread's back is shown as the process first saw it (docs/conversations.md, "The message
 * cache"). The reply's message objects may then be shared with the cache (nodes flagged cJSON_IsReference):
 * borrowed for the callback, as every reply — read, print or duplicate them (cJSON_Duplicate; the take functions
 * of source.h are for replies of engram_source_call only: an item's metadata here is a node of its message).
 * Mirrors MemexLLM's HistoryManager context (FIFOAlgorithm max_messages), bruno-core retrieve_context(limit)
 * for one conversation, BoxLang AI getAll() with maxMessages.
 */
ENGRAM_EXPORT int engram_thread_window(engram_manager_t *mgr, const char *thread, const engram_window_t *window,
                                       const engram_opts_t *opts, engram_cb cb, void *ud);

/*
 * Reads the thread page by page in sequence order: up to limit (1..ENGRAM_THREAD_PAGE_MAX) sequence numbers of
 * the visible range starting at from_seq (0 or below the visible range = its start), skipping gaps and deleted
 * messages (a page may therefore hold fewer than limit messages). reply->cursor = the from_seq of the next page
 * as decimal text (pass it back with strtoull), or NULL at the end. No tool-call pairing is applied.
 * Reply: items, count, info = {"thread", "messages": [...], "first_seq", "last_seq", "next_seq": n | null}.
 * Callback errors: ENGRAM_ENOTFOUND (no thread). Round trips: 2 (head, retrieve_many).
 * Mirrors MemexLLM get_thread (the whole thread), BoxLang AI getAll().
 */
ENGRAM_EXPORT int engram_thread_read(engram_manager_t *mgr, const char *thread, uint64_t from_seq, int limit,
                                     const engram_opts_t *opts, engram_cb cb, void *ud);

/*
 * Searches messages by text, ranked as the source ranks (BM25 on every source but the vector one, which ranks by
 * its embedder): the messages of thread, or of every thread of the namespace when thread is NULL. query: UTF-8
 * text, not only whitespace; limit: 1..ENGRAM_THREAD_PAGE_MAX results. Only visible messages are returned —
 * those of the thread's current generation within its visible range and not deleted, whatever items a trim or
 * an earlier life of the thread left behind; never heads or summaries.
 * Reply: items = the messages, best first (key = the storage key, value = the message object, metadata = the
 * message's metadata, score in [0, 1], created_at_ms), count = their number, info = {"thread": id | null,
 * "messages": [...the same objects]}. A thread that does not exist has no messages: count 0, not an error.
 * Errors at once: ENGRAM_EINVAL (thread, query, limit), ENGRAM_ENOMEM, and the refusals of engram_search. In
 * the callback: the errors of engram_search and engram_retrieve_many (ENGRAM_ETIMEDOUT, ENGRAM_EUNAVAILABLE, ...).
 * Round trips: 1 search + 1 retrieve_many of the heads per page of 2 × limit + 16 results (more pages, at most 8,
 * only while invisible results leave fewer than limit). Mirrors LangGraph's store search over a conversation's
 * namespace and bruno-core's search of a user's memories; MemexLLM and BoxLang AI have no message search.
 */
ENGRAM_EXPORT int engram_thread_search(engram_manager_t *mgr, const char *thread, const char *query, int limit,
                                       const engram_opts_t *opts, engram_cb cb, void *ud);

/*
 * engram_thread_search with a whole query, for the ranking modes of issue 15: query->text (required, as above),
 * query->limit (1..ENGRAM_THREAD_PAGE_MAX), query->mode / fusion / alpha (ENGRAM_MODE_VECTOR or ENGRAM_MODE_HYBRID
 * rank the messages by the source's embedder, or by both fused, on a source that ranks by vector — the vector
 * source; the others refuse them with ENGRAM_ENOTSUP at the call, as engram_search does), query->min_score and
 * query->ef_search. The thread layer sets the search's pattern, filter and paging itself: query->pattern,
 * query->filter and query->vector must be NULL and query->offset 0 (ENGRAM_EINVAL naming the field). The query is
 * copied; reply, errors, threads and round trips as engram_thread_search, which is this call with
 * ENGRAM_QUERY_INIT, its text and its limit. Mirrors LangGraph's store search with a query over a namespace.
 */
ENGRAM_EXPORT int engram_thread_search_query(engram_manager_t *mgr, const char *thread, const engram_query_t *query,
                                             const engram_opts_t *opts, engram_cb cb, void *ud);

/* One message by sequence number: items[0] / info = the message. ENGRAM_ENOTFOUND when the thread is missing or
 * the message is not visible (trimmed, deleted, a gap). seq ≥ 1. Round trips: 2. Mirrors MemexLLM's
 * Thread.get_message. */
ENGRAM_EXPORT int engram_thread_get_message(engram_manager_t *mgr, const char *thread, uint64_t seq,
                                            const engram_opts_t *opts, engram_cb cb, void *ud);

/*
 * Deletes n (1..ENGRAM_THREAD_BATCH_MAX) messages by sequence number (each ≥ 1; numbers not visible are
 * ignored). Readers stop seeing them at once (the head records them), then the items are removed.
 * reply->count = messages that were visible; info = the thread's info after the call (engram_thread_info's
 * shape). Callback errors: ENGRAM_ENOTFOUND (no thread). Round trips: 1 update + 1 delete_many (+1 conditional
 * store with a TTL). Mirrors BoxLang AI's message removal; no MemexLLM equivalent (it rewrites the thread).
 */
ENGRAM_EXPORT int engram_thread_delete_messages(engram_manager_t *mgr, const char *thread, const uint64_t *seqs,
                                                size_t n, const engram_opts_t *opts, engram_cb cb, void *ud);

/*
 * The thread's head: info = {"thread", "first_seq", "last_seq", "count", "max_messages" (0 = none), "ttl_ms"
 * (0 = none), "metadata": {...}, "created_at_ms", "updated_at_ms", "expires_at_ms" (0 = never)}.
 * Callback errors: ENGRAM_ENOTFOUND. Round trips: 1. Mirrors MemexLLM get_thread (its id and metadata).
 */
ENGRAM_EXPORT int engram_thread_info(engram_manager_t *mgr, const char *thread, const engram_opts_t *opts, engram_cb cb,
                                     void *ud);

/*
 * Sets the thread's metadata (a JSON object replacing the old one; NULL = keep it) and/or its settings, creating
 * an empty thread when missing. Lowering max_messages trims at once. A call that changes neither is refused.
 * Reply: info = the thread's info after the call. Round trips: 1 update (+1 delete_many when it trims, +1
 * conditional store with a TTL). Mirrors MemexLLM save_thread (metadata) and Thread(max_messages).
 */
ENGRAM_EXPORT int engram_thread_set(engram_manager_t *mgr, const char *thread, const cJSON *metadata,
                                    const engram_thread_settings_t *settings, const engram_opts_t *opts, engram_cb cb,
                                    void *ud);

/*
 * Deletes the thread: its head first (readers see no thread from then on), then every message of it.
 * reply->count = messages removed; deleting a missing thread succeeds with count 0. Round trips: 1 retrieve + 1
 * delete + per 1,000 messages 1 list_keys + 1 delete_many. Mirrors MemexLLM delete_thread, bruno-core
 * clear_conversation, BoxLang AI clear(), LarAgent removeFromMemory.
 */
ENGRAM_EXPORT int engram_thread_delete(engram_manager_t *mgr, const char *thread, const engram_opts_t *opts,
                                       engram_cb cb, void *ud);

/*
 * Lists the threads of opts->ns, newest-updated first — by the head item's updated_at_ms (the system field the
 * source stamps each time a change writes the head) descending, then id descending — limit
 * (1..ENGRAM_THREAD_PAGE_MAX) per page, starting after cursor (NULL = the start; pass back reply->cursor, which is
 * NULL after the last page). info = {"threads": [engram_thread_info shapes...]}, count = threads in the page;
 * each thread's "updated_at_ms" here is that item field, the order's key (engram_thread_info reports the time
 * the change stamped into the head: the same or a few ms earlier — PostgreSQL stamps the item at the call's
 * submission — and earlier still when a TTL's conditional store wrote the head after it).
 * Paging: the cursor ("u" + updated_at_ms + ":" + id) is a position in that order, not an offset. A thread that
 * exists and is not changed for the whole listing is listed exactly once. A thread changed while you page moves
 * to the front, before the cursor: listed once if an earlier page held it, not at all in this pass otherwise;
 * a thread created meanwhile is not listed; a deleted one disappears. (Heads written by processes whose clocks
 * disagree by more than the time between pages can break this.) Cursors of the listing before this order
 * ("<updated_at_ms>:<id>") are refused with ENGRAM_EINVAL: start again from NULL.
 * Cost: one ordered search a page (opts.order_by updated_at, a range on updated_at_ms after the cursor: docs/api.md,
 * Order): the source finds the namespace's heads updated at or before the cursor and the core sorts them, so a
 * page costs one round trip and a pass over those heads. With more than ENGRAM_ORDER_MAX heads, or on a source
 * without system-field ranges, the page is made by reading every head (per 1,000 threads 1 list_keys + 1
 * retrieve_many), in the same order. Errors at once: ENGRAM_EINVAL (limit, a cursor this function did not
 * make). Mirrors MemexLLM list_threads(limit, offset).
 */
ENGRAM_EXPORT int engram_thread_list(engram_manager_t *mgr, int limit, const char *cursor, const engram_opts_t *opts,
                                     engram_cb cb, void *ud);

/*
 * The newest messages of all the threads of opts->ns, in chronological order — bruno-core's retrieve_context(limit)
 * with no conversation named: at most max_messages (1..ENGRAM_THREAD_BATCH_MAX) visible messages, the newest by
 * created_at_ms across the threads, answered oldest first (created_at_ms, then thread id, then seq), each message
 * object (the stored shape) with a "thread": id member added. Only what the heads make visible: a message
 * trimmed by max_messages or deleted is never returned, even while its item is still stored. A thread's oldest
 * messages in the answer that are tool results (the assistant message that called them is older than the
 * answer) are left out, so the answer may hold fewer than max_messages; system messages are not kept apart
 * (unlike a window): they count by their time like any message.
 * format: ENGRAM_RENDER_NONE, or OPENAI / ANTHROPIC to get reply->text as engram_thread_render's rendering of
 * the messages (compact JSON text, borrowed for the callback), as a window's.
 * Reply: count = messages, items none (the messages come from several threads: read info), info =
 *   {"messages": [...], "threads_read": threads whose messages were read}; an empty namespace answers count 0.
 * Errors at once: ENGRAM_EINVAL (max_messages, format), ENGRAM_ENOMEM, engram_search's refusals. In the callback:
 * the errors of engram_search and engram_retrieve_many (ENGRAM_ETIMEDOUT, ENGRAM_EUNAVAILABLE, ENGRAM_ETOOBIG
 * when the namespace holds more than ENGRAM_ORDER_MAX threads, ENGRAM_ENOTSUP on a source without system-field
 * ranges once a second page of heads is needed, ...).
 * Cost, bounded for a namespace of many threads: the heads are read newest-updated first (as engram_thread_list:
 * one ordered search a page, pages of max_messages, twice that, ... up to 64 heads); only a thread whose head was
 * updated at or after the max_messages-th newest message found so far can contribute, and of each such thread
 * the newest max_messages visible messages are read (one retrieve_many a page of heads, at most 8,192 keys).
 * The heads stop once they were written more than 10 s before that message (the source may stamp a head when
 * its update is submitted, before the update stamps the messages: a head whose update ran more than 10 s after
 * its submission, and whose thread is older than every other candidate, may be missed).
 * Threads: callback on the home loop or the thread draining opts->cq. Mirrors bruno-core retrieve_context
 * (user_id = the namespace, conversation_id None); for one conversation use engram_thread_window.
 */
ENGRAM_EXPORT int engram_thread_context(engram_manager_t *mgr, int max_messages, engram_render_format_t format,
                                        const engram_opts_t *opts, engram_cb cb, void *ud);

/*
 * Renders stored messages (a JSON array of the message objects above, chronological — e.g. a window's
 * info.messages) for a model; returns a new cJSON the caller owns (cJSON_Delete), or NULL on ENGRAM_ENOMEM, an
 * unknown format or messages not an array.
 *   ENGRAM_RENDER_OPENAI: the Chat Completions `messages` array: {"role", "content"} per message, plus
 *     "tool_calls" (as stored) on assistant messages and "tool_call_id" on tool messages; content null when the
 *     message has none.
 *   ENGRAM_RENDER_ANTHROPIC: a Messages request body {"system": the system messages' text joined by "\n\n"
 *     (absent when there is none), "messages": [...]}: user and assistant turns alternate (consecutive turns of
 *     one role are merged); content is an array of blocks: text ({"type": "text", "text"}), assistant tool calls
 *     as {"type": "tool_use", "id", "name", "input"} (OpenAI calls converted: arguments parsed as JSON, {} when
 *     they are not an object), tool results as {"type": "tool_result", "tool_use_id", "content"} in a user
 *     turn. Content parts are passed through as given.
 * Thread: any. Mirrors MemexLLM's OpenAI integration (with_history) and the message shapes of both APIs.
 */
ENGRAM_EXPORT cJSON *engram_thread_render(const cJSON *messages, engram_render_format_t format);

#ifdef __cplusplus
}
#endif

#endif /* ENGRAM_THREAD_H */
