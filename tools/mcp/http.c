/*
 * tools/mcp/http.c — the Streamable HTTP transport of engram-mcp (MCP revision 2025-11-25): one endpoint, /mcp.
 * A POST carries one JSON-RPC message; a request is answered 200 with application/json (this server never
 * opens an SSE stream), a notification or a response 202 with no body, a body that is not JSON or not a
 * JSON-RPC message 400 with the JSON-RPC error. GET (the server-to-client stream) and DELETE (sessions) are
 * answered 405: the server keeps no session and has nothing to push. HTTP is parsed by libhttp-parser, as in
 * examples/server, whose connection handling this follows in a smaller form.
 *
 * Security, as the specification asks of a local server: it binds 127.0.0.1 unless told otherwise; an Origin
 * header that is not a loopback origin (or one given with --allow-origin) gets 403, and so does, on a loopback
 * bind, a Host header that does not name loopback (DNS rebinding); with a token, a request without
 * "Authorization: Bearer <token>" gets 401. A body over max_body gets 413 (announced: before it is read), a
 * MCP-Protocol-Version header naming a revision the server does not speak gets 400.
 *
 * Connections are keep-alive and served concurrently; each handles its requests in order (the parser is
 * paused while a tool call runs). Headers and body must arrive within header_ms of a request's first byte (else
 * 408), an idle connection is closed after idle_ms, and at most max_connections are open (a newcomer beyond
 * gets 503), so slow or idle clients cannot hold the server.
 */
#include "transport.h"

#include <http_parser.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>

#define MAX_URL 1024
#define MAX_HEADER 1024 /* bytes kept of a header we read; a longer one is treated as invalid */
#define MAX_QUEUED (1u << 20)
#define LINGER_MS 2000

enum { H_NONE, H_ORIGIN, H_HOST, H_AUTH, H_VERSION, H_EXPECT, H_COUNT };

typedef struct conn_s {
  uv_tcp_t tcp;
  uv_timer_t timer;
  uv_shutdown_t shutdown;
  http_parser parser;
  struct conn_s *prev, *next;
  int handles;  /* open handles; freed at 0 when no call is pending */
  int busy;     /* a message is with the dispatcher */
  int closing, lingering, eof, keep_alive, in_message;
  char url[MAX_URL];
  size_t url_len;
  char field[32];
  size_t field_len;
  int field_done; /* the field name is complete: values follow */
  int hdr;        /* which header the current value belongs to */
  char hv[H_COUNT][MAX_HEADER];
  size_t hv_len[H_COUNT];
  int hv_seen[H_COUNT], hv_overflow[H_COUNT];
  char *body;
  size_t body_len, body_cap;
  char *pending; /* bytes received after a request the parser paused on */
  size_t pending_len;
  mcp_session_t *sess; /* of the message being handled */
} conn_t;

static struct {
  uv_loop_t *loop;
  mcp_server_t *server;
  mcp_http_options_t o;
  int loopback_bind;
  uv_tcp_t listener;
  int listening, stopped;
  conn_t *conns;
  unsigned n_conns; /* connections open (closing ones until their handles are closed) */
  http_parser_settings settings;
} hs;

static void conn_close(conn_t *c);
static void conn_feed(conn_t *c, const char *data, size_t len);
static void conn_continue(conn_t *c);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);
static void on_timeout(uv_timer_t *t);

/* ---- Responses ---- */

typedef struct {
  uv_write_t req;
  conn_t *c;
  int last;
  char data[];
} write_t;

static size_t queued(const conn_t *c) { return uv_stream_get_write_queue_size((const uv_stream_t *)&c->tcp); }

static void on_shutdown(uv_shutdown_t *req, int status) {
  (void)status;
  conn_t *c = req->handle->data;
  if (status < 0) conn_close(c);
}

/* The last response is written: FIN, then read and drop what the client still sends (LINGER_MS at most), so
 * it reads our answer rather than a reset. */
static void conn_linger(conn_t *c) {
  if (c->closing) return;
  c->lingering = 1;
  uv_timer_start(&c->timer, on_timeout, LINGER_MS, 0);
  if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, on_shutdown) != 0) return conn_close(c);
  if (!c->eof) uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
  else conn_close(c);
}

static void on_written(uv_write_t *req, int status) {
  write_t *w = (write_t *)req;
  conn_t *c = w->c;
  int last = w->last;
  free(w);
  if (status < 0) return conn_close(c);
  if (last) return conn_linger(c);
  if (c->eof && !c->busy && c->pending == NULL && queued(c) == 0) conn_close(c);
}

static const char *reason(int code) {
  switch (code) {
    case 200: return "OK";
    case 202: return "Accepted";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Error";
  }
}

/* Queues one response. extra is "" or CRLF-terminated header lines; body may be "" (then no Content-Type). */
static void respond(conn_t *c, int code, const char *extra, const char *body, int last) {
  size_t blen = strlen(body), cap = blen + 256 + strlen(extra);
  write_t *w;
  uv_buf_t buf;
  int n;
  if (c->closing || c->lingering || (w = malloc(sizeof *w + cap)) == NULL) return;
  last = last || !c->keep_alive || hs.stopped;
  n = snprintf(w->data, cap, "HTTP/1.1 %d %s\r\n%sContent-Length: %zu\r\n%s%s\r\n", code, reason(code),
               blen ? "Content-Type: application/json\r\n" : "", blen, last ? "Connection: close\r\n" : "", extra);
  memcpy(w->data + n, body, blen);
  w->c = c;
  w->last = last;
  buf = uv_buf_init(w->data, (unsigned)((size_t)n + blen));
  if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, on_written) != 0) {
    free(w);
    return conn_close(c);
  }
  if (last) { /* nothing more is parsed on this connection */
    c->lingering = 1;
    uv_timer_stop(&c->timer);
  }
}

/* Queues bytes that are not a response (100 Continue). */
static void send_raw(conn_t *c, const char *data, size_t len) {
  write_t *w;
  uv_buf_t buf;
  if (c->closing || c->lingering || (w = malloc(sizeof *w + len)) == NULL) return;
  memcpy(w->data, data, len);
  w->c = c;
  w->last = 0;
  buf = uv_buf_init(w->data, (unsigned)len);
  if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, on_written) != 0) {
    free(w);
    conn_close(c);
  }
}

/* A JSON-RPC error object as the body of an HTTP error (id null: the message was not read). */
static void respond_rpc_error(conn_t *c, int code, int rpc_code, int last, const char *extra, const char *fmt, ...) {
  char msg[300], body[512];
  va_list ap;
  cJSON *m = cJSON_CreateObject(), *e = cJSON_CreateObject();
  char *text = NULL;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (m && e) {
    cJSON_AddStringToObject(m, "jsonrpc", "2.0");
    cJSON_AddNullToObject(m, "id");
    cJSON_AddNumberToObject(e, "code", rpc_code);
    cJSON_AddStringToObject(e, "message", msg);
    cJSON_AddItemToObject(m, "error", e);
    e = NULL;
    text = engram_json_print_text(m);
  }
  cJSON_Delete(m);
  cJSON_Delete(e);
  snprintf(body, sizeof body, "%s", text ? text : "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32603,\"message\":\"out of memory\"}}");
  engram_free(text);
  respond(c, code, extra, body, last);
}

/* ---- Checks ---- */

/* "localhost", "127.0.0.1" or "[::1]", then nothing or ":PORT". */
static int loopback_authority(const char *s, size_t n) {
  static const char *const names[] = {"localhost", "127.0.0.1", "[::1]"};
  for (size_t i = 0; i < 3; i++) {
    size_t k = strlen(names[i]);
    if (n >= k && strncasecmp(s, names[i], k) == 0) {
      size_t j = k;
      if (j == n) return 1;
      if (s[j] != ':' || j + 1 == n) continue;
      for (j++; j < n && s[j] >= '0' && s[j] <= '9'; j++) {}
      if (j == n) return 1;
    }
  }
  return 0;
}

static int origin_allowed(const char *origin) {
  for (const char *const *o = hs.o.origins; o && *o; o++)
    if (strcmp(*o, origin) == 0) return 1;
  if (strncasecmp(origin, "http://", 7) == 0) return loopback_authority(origin + 7, strlen(origin + 7));
  if (strncasecmp(origin, "https://", 8) == 0) return loopback_authority(origin + 8, strlen(origin + 8));
  return 0;
}

/* Compares without leaking the token's length or content through timing (beyond the header's length). */
static int token_ok(const char *auth) {
  size_t tl = strlen(hs.o.token), al;
  unsigned diff = 0;
  if (strncasecmp(auth, "Bearer ", 7) != 0) return 0;
  auth += 7;
  al = strlen(auth);
  for (size_t i = 0; i < al; i++) diff |= (unsigned char)auth[i] ^ (unsigned char)hs.o.token[i % (tl ? tl : 1)];
  return diff == 0 && al == tl;
}

/* ---- Messages ---- */

static void on_answer(void *ud, char *json, mcp_answer_kind_t kind) {
  conn_t *c = ud;
  c->busy = 0;
  mcp_session_free(c->sess);
  c->sess = NULL;
  if (c->handles == 0) { /* the connection closed while the call ran */
    free(json);
    free(c->pending);
    free(c);
    return;
  }
  if (!c->closing) {
    if (json == NULL) respond(c, 202, "", "", 0);
    else respond(c, kind == MCP_ANSWER_OK ? 200 : 400, "", json, 0);
    if (!c->lingering) uv_timer_start(&c->timer, on_timeout, hs.o.idle_ms, 0);
    conn_continue(c);
  }
  free(json);
}

static void handle_post(conn_t *c) {
  const char *v = c->hv_seen[H_VERSION] ? c->hv[H_VERSION] : NULL;
  if (v && !mcp_version_supported(v)) { /* 400, with the list of revisions spoken */
    char *text = mcp_unsupported_version(v);
    if (text == NULL) return respond_rpc_error(c, 500, -32603, 1, "", "out of memory");
    respond(c, 400, "", text, 0);
    free(text);
    return;
  }
  if ((c->sess = mcp_session_new(hs.server)) == NULL)
    return respond_rpc_error(c, 500, -32603, 1, "", "out of memory");
  c->busy = 1;
  mcp_handle(c->sess, c->body ? c->body : "", c->body_len, on_answer, c);
}

static void route(conn_t *c) {
  const char *q = memchr(c->url, '?', c->url_len);
  size_t plen = q ? (size_t)(q - c->url) : c->url_len;
  enum http_method m = (enum http_method)c->parser.method;
  for (int h = H_ORIGIN; h < H_COUNT; h++)
    if (c->hv_overflow[h]) return respond_rpc_error(c, 400, -32600, 1, "", "a header over %d bytes", MAX_HEADER);
  if (c->hv_seen[H_ORIGIN] && !origin_allowed(c->hv[H_ORIGIN]))
    return respond_rpc_error(c, 403, -32600, 0, "", "Forbidden: origin not allowed");
  if (hs.loopback_bind && c->hv_seen[H_HOST] && !loopback_authority(c->hv[H_HOST], c->hv_len[H_HOST]))
    return respond_rpc_error(c, 403, -32600, 0, "", "Forbidden: the Host header must name this loopback server");
  if (!(plen == 4 && memcmp(c->url, "/mcp", 4) == 0))
    return respond_rpc_error(c, 404, -32600, 0, "", "Not Found: the MCP endpoint is /mcp");
  if (hs.o.token && !(c->hv_seen[H_AUTH] && token_ok(c->hv[H_AUTH])))
    return respond_rpc_error(c, 401, -32600, 0, "WWW-Authenticate: Bearer\r\n", "Unauthorized: a bearer token is required");
  if (m != HTTP_POST)
    return respond_rpc_error(c, 405, -32600, 0, "Allow: POST\r\n", "Method Not Allowed: POST one JSON-RPC message to /mcp");
  handle_post(c);
}

/* ---- HTTP parsing ---- */

static int on_message_begin(http_parser *p) {
  conn_t *c = p->data;
  c->url_len = 0;
  c->url[0] = '\0';
  c->body_len = 0;
  c->field_len = 0;
  c->field_done = 0;
  c->hdr = H_NONE;
  c->in_message = 1;
  memset(c->hv_seen, 0, sizeof c->hv_seen);
  memset(c->hv_overflow, 0, sizeof c->hv_overflow);
  memset(c->hv_len, 0, sizeof c->hv_len);
  if (c->body_cap > 65536) {
    free(c->body);
    c->body = NULL;
    c->body_cap = 0;
  }
  uv_timer_start(&c->timer, on_timeout, hs.o.header_ms, 0);
  return 0;
}

static int on_url(http_parser *p, const char *at, size_t len) {
  conn_t *c = p->data;
  if (c->url_len + len >= MAX_URL) {
    respond_rpc_error(c, 414, -32600, 1, "", "request target over %d bytes", MAX_URL - 1);
    http_parser_pause(p, 1);
    return 0;
  }
  memcpy(c->url + c->url_len, at, len);
  c->url_len += len;
  c->url[c->url_len] = '\0';
  return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len) {
  conn_t *c = p->data;
  if (c->field_done) { /* a new field begins */
    c->field_len = 0;
    c->field_done = 0;
  }
  if (c->field_len + len < sizeof c->field) memcpy(c->field + c->field_len, at, len);
  c->field_len += len;
  return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len) {
  conn_t *c = p->data;
  int h;
  if (!c->field_done) { /* the field name is complete: which header is it? */
    c->field_done = 1;
    c->hdr = H_NONE;
    if (c->field_len < sizeof c->field) {
      c->field[c->field_len] = '\0';
      if (strcasecmp(c->field, "origin") == 0) c->hdr = H_ORIGIN;
      else if (strcasecmp(c->field, "host") == 0) c->hdr = H_HOST;
      else if (strcasecmp(c->field, "authorization") == 0) c->hdr = H_AUTH;
      else if (strcasecmp(c->field, "mcp-protocol-version") == 0) c->hdr = H_VERSION;
      else if (strcasecmp(c->field, "expect") == 0) c->hdr = H_EXPECT;
    }
    if (c->hdr != H_NONE) { /* a repeated header: the last one counts */
      c->hv_seen[c->hdr] = 1;
      c->hv_len[c->hdr] = 0;
      c->hv[c->hdr][0] = '\0';
    }
  }
  if ((h = c->hdr) == H_NONE) return 0;
  if (c->hv_len[h] + len >= MAX_HEADER) {
    c->hv_overflow[h] = 1;
    return 0;
  }
  memcpy(c->hv[h] + c->hv_len[h], at, len);
  c->hv_len[h] += len;
  c->hv[h][c->hv_len[h]] = '\0';
  return 0;
}

/* A body announced over max_body is refused before it comes; a client that asked (Expect: 100-continue, as curl
 * does for large bodies) is told to send its body, instead of waiting a second to send it anyway. */
static int on_headers_complete(http_parser *p) {
  static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
  conn_t *c = p->data;
  if (p->content_length != ULLONG_MAX && p->content_length > hs.o.max_body) {
    respond_rpc_error(c, 413, -32600, 1, "", "a body of %llu bytes: the limit is %zu",
                      (unsigned long long)p->content_length, hs.o.max_body);
    http_parser_pause(p, 1);
  } else if (c->hv_seen[H_EXPECT] && strcasecmp(c->hv[H_EXPECT], "100-continue") == 0) {
    send_raw(c, cont, sizeof cont - 1);
  }
  return 0;
}

static int on_body(http_parser *p, const char *at, size_t len) {
  conn_t *c = p->data;
  if (c->body_len + len > hs.o.max_body) { /* a chunked body, whose size was not announced */
    respond_rpc_error(c, 413, -32600, 1, "", "a body over %zu bytes", hs.o.max_body);
    http_parser_pause(p, 1);
    return 0;
  }
  if (c->body_len + len + 1 > c->body_cap) {
    size_t cap = c->body_cap ? c->body_cap : 4096;
    char *b;
    while (cap < c->body_len + len + 1) cap *= 2;
    if ((b = realloc(c->body, cap)) == NULL) return 1;
    c->body = b;
    c->body_cap = cap;
  }
  memcpy(c->body + c->body_len, at, len);
  c->body_len += len;
  return 0;
}

static int on_message_complete(http_parser *p) {
  conn_t *c = p->data;
  c->in_message = 0;
  c->keep_alive = http_should_keep_alive(p) && !p->upgrade;
  uv_timer_stop(&c->timer);
  route(c);
  if (!c->busy && !c->lingering) uv_timer_start(&c->timer, on_timeout, hs.o.idle_ms, 0);
  /* One request at a time: the rest waits for the answer; after the last response nothing is parsed. */
  if (c->busy || c->lingering) http_parser_pause(p, 1);
  return 0;
}

static void conn_feed(conn_t *c, const char *data, size_t len) {
  size_t done = http_parser_execute(&c->parser, &hs.settings, data, len);
  enum http_errno err = HTTP_PARSER_ERRNO(&c->parser);
  if (c->closing || c->lingering) return;
  if (err == HPE_PAUSED) {
    uv_read_stop((uv_stream_t *)&c->tcp);
    if (done < len) {
      char *p = realloc(c->pending, c->pending_len + len - done);
      if (p == NULL) return conn_close(c);
      memcpy(p + c->pending_len, data + done, len - done);
      c->pending = p;
      c->pending_len += len - done;
    }
  } else if (err == HPE_HEADER_OVERFLOW) {
    respond_rpc_error(c, 431, -32600, 1, "", "request headers over %d bytes", HTTP_MAX_HEADER_SIZE);
  } else if (err != HPE_OK) {
    respond_rpc_error(c, 400, -32600, 1, "", "malformed HTTP request: %s", http_errno_description(err));
  }
}

static void conn_continue(conn_t *c) {
  char *rest = c->pending;
  size_t n = c->pending_len;
  if (c->closing || c->lingering || c->busy) return;
  c->pending = NULL;
  c->pending_len = 0;
  http_parser_pause(&c->parser, 0);
  if (rest != NULL) conn_feed(c, rest, n);
  free(rest);
  if (c->closing || c->lingering || c->busy) return;
  if (!c->eof) uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
  else if (queued(c) == 0) conn_close(c);
}

/* ---- Connections ---- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  static char slab[65536]; /* consumed at once: the parser callbacks copy what they keep */
  (void)h, (void)suggested;
  *buf = uv_buf_init(slab, sizeof slab);
}

static void on_handle_closed(uv_handle_t *h) {
  conn_t *c = h->data;
  if (--c->handles > 0) return;
  hs.n_conns--;
  if (c->prev) c->prev->next = c->next;
  else hs.conns = c->next;
  if (c->next) c->next->prev = c->prev;
  free(c->body);
  c->body = NULL;
  if (!c->busy) { /* else on_answer frees it */
    free(c->pending);
    free(c);
  }
}

static void conn_close(conn_t *c) {
  if (c->closing) return;
  c->closing = 1;
  uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
  uv_close((uv_handle_t *)&c->timer, on_handle_closed);
}

static void on_timeout(uv_timer_t *t) {
  conn_t *c = t->data;
  if (c->in_message && !c->lingering && !c->busy)
    respond_rpc_error(c, 408, -32600, 1, "", "request not complete after %u ms", hs.o.header_ms);
  else conn_close(c); /* idle, or lingering after our last response */
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  conn_t *c = s->data;
  if (n == UV_EOF && !c->lingering && (c->busy || c->pending || queued(c) > 0)) {
    c->eof = 1; /* a half-close: what it asked is still answered */
    uv_read_stop(s);
    return;
  }
  if (n < 0) return conn_close(c);
  if (n == 0 || c->lingering) return;
  if (c->busy) { /* a read that raced with uv_read_stop: keep it behind the paused request */
    char *p = realloc(c->pending, c->pending_len + (size_t)n);
    if (p == NULL) return conn_close(c);
    memcpy(p + c->pending_len, buf->base, (size_t)n);
    c->pending = p;
    c->pending_len += (size_t)n;
    return;
  }
  conn_feed(c, buf->base, (size_t)n);
}

static void on_connection(uv_stream_t *srv, int status) {
  conn_t *c;
  if (status < 0 || (c = calloc(1, sizeof *c)) == NULL) return;
  uv_tcp_init(hs.loop, &c->tcp);
  uv_timer_init(hs.loop, &c->timer);
  c->tcp.data = c->timer.data = c;
  c->handles = 2;
  hs.n_conns++;
  c->next = hs.conns;
  if (hs.conns) hs.conns->prev = c;
  hs.conns = c;
  if (uv_accept(srv, (uv_stream_t *)&c->tcp) != 0) return conn_close(c);
  uv_tcp_nodelay(&c->tcp, 1);
  http_parser_init(&c->parser, HTTP_REQUEST);
  c->parser.data = c;
  c->keep_alive = 1;
  if (hs.n_conns > hs.o.max_connections) { /* full: the newcomer is told so and closed, the others go on */
    respond_rpc_error(c, 503, -32603, 1, "Retry-After: 1\r\n", "server full (%u connections): try again later",
                      hs.o.max_connections);
    return;
  }
  uv_timer_start(&c->timer, on_timeout, hs.o.idle_ms, 0);
  uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

int mcp_http_start(uv_loop_t *loop, mcp_server_t *s, const mcp_http_options_t *opts) {
  struct sockaddr_storage addr;
  int len = sizeof addr, rc, port;
  struct rlimit rl;
  char name[64] = "";
  hs.loop = loop;
  hs.server = s;
  hs.o = *opts;
  if (hs.o.host == NULL) hs.o.host = "127.0.0.1";
  if (hs.o.idle_ms == 0) hs.o.idle_ms = 60000;
  if (hs.o.header_ms == 0) hs.o.header_ms = 30000;
  if (hs.o.max_body == 0) hs.o.max_body = 4u << 20;
  if (hs.o.max_connections == 0) hs.o.max_connections = 1024;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur > 128 &&
      hs.o.max_connections > rl.rlim_cur - 64) { /* keep descriptors for the manager, the sources, the loop */
    hs.o.max_connections = (unsigned)(rl.rlim_cur - 64);
    fprintf(stderr, "engram-mcp: at most %u connections (open-file limit %llu)\n", hs.o.max_connections,
            (unsigned long long)rl.rlim_cur);
  }
  hs.settings.on_message_begin = on_message_begin;
  hs.settings.on_url = on_url;
  hs.settings.on_header_field = on_header_field;
  hs.settings.on_header_value = on_header_value;
  hs.settings.on_headers_complete = on_headers_complete;
  hs.settings.on_body = on_body;
  hs.settings.on_message_complete = on_message_complete;
  if ((rc = uv_ip4_addr(hs.o.host, hs.o.port, (struct sockaddr_in *)&addr)) != 0 &&
      (rc = uv_ip6_addr(hs.o.host, hs.o.port, (struct sockaddr_in6 *)&addr)) != 0)
    return rc;
  uv_tcp_init(loop, &hs.listener);
  hs.listening = 1;
  if ((rc = uv_tcp_bind(&hs.listener, (struct sockaddr *)&addr, 0)) != 0 ||
      (rc = uv_listen((uv_stream_t *)&hs.listener, 511, on_connection)) != 0)
    return rc;
  uv_tcp_getsockname(&hs.listener, (struct sockaddr *)&addr, &len);
  if (addr.ss_family == AF_INET6) {
    uv_ip6_name((struct sockaddr_in6 *)&addr, name, sizeof name);
    port = ntohs(((struct sockaddr_in6 *)&addr)->sin6_port);
    hs.loopback_bind = strcmp(name, "::1") == 0;
  } else {
    uv_ip4_name((struct sockaddr_in *)&addr, name, sizeof name);
    port = ntohs(((struct sockaddr_in *)&addr)->sin_port);
    hs.loopback_bind = strncmp(name, "127.", 4) == 0;
  }
  if (!hs.loopback_bind)
    fprintf(stderr, "engram-mcp: warning: serving on %s, not a loopback address: anyone who can reach it can use "
                    "the memory%s\n", name, hs.o.token ? " with the token" : " (no --token-env given)");
  fprintf(stderr, addr.ss_family == AF_INET6 ? "listening on http://[%s]:%d/mcp\n" : "listening on http://%s:%d/mcp\n",
          name, port);
  return 0;
}

void mcp_http_stop(void) {
  if (hs.stopped) return;
  hs.stopped = 1;
  if (hs.listening) uv_close((uv_handle_t *)&hs.listener, NULL);
  for (conn_t *c = hs.conns; c != NULL; c = c->next) conn_close(c);
}
