/*
 * tools/mcp/transport.h — the two transports of engram-mcp, each feeding messages to the dispatcher (mcp.h)
 * and writing its answers: stdio (newline-delimited JSON-RPC on stdin/stdout) and Streamable HTTP (POST /mcp).
 * main.c starts one of them once the manager is configured and stops it when the process ends.
 */
#ifndef ENGRAM_MCP_TRANSPORT_H
#define ENGRAM_MCP_TRANSPORT_H

#include "mcp.h"

#include <uv.h>

/* ---- stdio ---- */

/*
 * Reads stdin on a thread of its own (stdin may be a pipe, a file or a terminal), one message per line (a line
 * over max_message bytes is answered -32600 and skipped), and writes each answer and a newline to stdout.
 * At EOF, once every pending call is answered, done(ud) runs on the loop. Returns 0 or a negative uv error.
 */
int mcp_stdio_start(uv_loop_t *loop, mcp_server_t *s, size_t max_message, void (*done)(void *ud), void *ud);
/* Closes the transport's handles (the loop can then end). Calls still pending are answered into nothing. */
void mcp_stdio_stop(void);

/* ---- Streamable HTTP ---- */

typedef struct {
  const char *host;          /* address to bind (default 127.0.0.1) */
  int port;                  /* 0 = any free port */
  size_t max_body;           /* a larger body is refused with 413 */
  const char *token;         /* non-NULL: every request needs "Authorization: Bearer <token>" */
  const char *const *origins;/* extra allowed Origin values (NULL-terminated), beside loopback origins */
  unsigned idle_ms;          /* a connection idle this long is closed */
  unsigned header_ms;        /* headers and body must arrive within this after a request's first byte */
  unsigned max_connections;  /* connections served at once; a newcomer beyond gets 503 (0 = 1024) */
} mcp_http_options_t;

/* Binds, listens and prints "listening on http://ADDR:PORT/mcp" on stderr. Returns 0 or a negative uv error. */
int mcp_http_start(uv_loop_t *loop, mcp_server_t *s, const mcp_http_options_t *opts);
/* Stops listening and closes every connection; pending calls are answered into nothing. */
void mcp_http_stop(void);

#endif
