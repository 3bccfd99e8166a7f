/*
 * tools/mcp/mcp.h — the engram-mcp dispatcher: JSON-RPC 2.0 and the MCP methods (initialize, ping, tools/list,
 * tools/call, notifications/initialized, notifications/cancelled) over engram's agent tools, kept apart from
 * the transports (stdio.c, http.c) so that both answer every message the same way. A transport hands each
 * message it received to mcp_handle and writes out whatever the dispatcher answers; the dispatcher knows
 * nothing of pipes or sockets. Everything here runs on the manager's home loop thread (one thread).
 */
#ifndef ENGRAM_MCP_H
#define ENGRAM_MCP_H

#include <engram.h>
#include <stddef.h>
#include <stdint.h>

#define MCP_LATEST_VERSION "2025-11-25"

/* Everything about the server that the dispatcher needs. */
typedef struct mcp_server_s mcp_server_t;

/* A conversation with one client: a stdio process is one session; over HTTP each POST is one (stateless). It
 * holds the pending calls that notifications/cancelled can name. */
typedef struct mcp_session_s mcp_session_t;

/*
 * The answer to one message: json is the response text (owned by the receiver; free it with free()), or NULL
 * when the message gets no response (a notification, a response, a cancelled request). Runs exactly once per
 * mcp_handle, either inside it (most methods) or later on the home loop (tools/call). kind tells an HTTP
 * transport which status fits: MCP_ANSWER_OK (a response, or nothing for a notification), MCP_ANSWER_PARSE /
 * MCP_ANSWER_INVALID (the message was not JSON / not a JSON-RPC message at all: HTTP 400).
 */
typedef enum { MCP_ANSWER_OK = 0, MCP_ANSWER_PARSE = 1, MCP_ANSWER_INVALID = 2 } mcp_answer_kind_t;
typedef void (*mcp_answer_fn)(void *ud, char *json, mcp_answer_kind_t kind);

/* Creates the dispatcher over a configured manager; call_deadline_ms bounds every tool call (0 = the manager's
 * default). NULL on out of memory. */
mcp_server_t *mcp_server_new(engram_manager_t *mgr, uint32_t call_deadline_ms);
void mcp_server_free(mcp_server_t *s);

/* The tools listed and callable: ENGRAM_TOOLS_MEMORY and/or ENGRAM_TOOLS_THREADS (engram/tools.h); a new server
 * offers ENGRAM_TOOLS_ALL (the six memory tools and the conversation tools). 0, or -1 (bad sets, no memory). */
int mcp_server_set_tools(mcp_server_t *s, unsigned sets);

/* Tool calls started and not yet answered, over every session. */
size_t mcp_server_pending(const mcp_server_t *s);

mcp_session_t *mcp_session_new(mcp_server_t *s);
/* Frees the session; its pending calls still run to their end, but their answers are dropped. */
void mcp_session_free(mcp_session_t *sess);

/* Handles one message (len bytes, not NUL-terminated necessarily); answer runs exactly once. */
void mcp_handle(mcp_session_t *sess, const char *text, size_t len, mcp_answer_fn answer, void *ud);

/* Non-zero when v is one of the protocol revisions the dispatcher speaks (for the MCP-Protocol-Version header). */
int mcp_version_supported(const char *v);

/* The JSON-RPC error (id null) for a revision not spoken: -32022 with data {"supported": [...], "requested"};
 * free() it. NULL on out of memory. */
char *mcp_unsupported_version(const char *requested);

#endif
