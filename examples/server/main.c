/*
 * server — an event-driven HTTP/JSON server that hands an LLM application the memory tools: engram embedded on
 * the server's own libuv loop, HTTP parsed with libhttp-parser.
 *
 *   GET  /tools              the six tool definitions (OpenAI format; ?format=anthropic for Anthropic's)
 *   POST /tools/call         {"name": "memory_store", "arguments": {...}}  → the tool's JSON result
 *
 * "arguments" may be an object or a JSON string holding one (OpenAI sends tool arguments as a string). A tool
 * that fails (unknown tool, bad argument, unknown memory_source) still answers 200 with its error result
 * {"error": "..."} — that is what the model should read — and the engram status in an X-Engram-Status header; a
 * request that is not a well-formed call answers 4xx with {"error": "..."}. Connections are keep-alive and
 * served concurrently; a connection handles its requests in order (pipelined requests wait, paused in the
 * parser, until the previous response is queued). SIGTERM or SIGINT stops listening, closes the connections,
 * closes the manager (pending tool calls end with ENGRAM_ECANCELED) and exits 0.
 *
 * A server on a network meets clients that are slow, broken or hostile, and one of them must never be able to
 * take the server from the others. So (examples/server/hostile.sh checks each point):
 *
 *   - Every connection runs on a clock. A request's headers must be complete --header-timeout ms after its first
 *     byte (else 408 and close: slowloris), its body --body-timeout ms after the headers (else 400 and close: a
 *     client that stalls, or a Content-Length longer than what it sends), and a connection waiting for a request
 *     is closed after --idle-timeout ms. A tool call has its own deadline (CALL_DEADLINE_MS).
 *   - At most --max-connections are served: by default 512, fewer when the open-file limit (getrlimit) leaves
 *     less room, as it does for any value given. When the server is full, a newcomer takes the slot of the
 *     connection that has waited longest for a request, if it has waited a quarter of the idle timeout — so idle
 *     clients cannot lock others out — and is refused otherwise: 503 with a JSON error and Connection: close.
 *   - A body over MAX_BODY is refused with 413 as soon as its headers announce it. The body must be one JSON
 *     value in UTF-8 without NUL bytes, followed by nothing but whitespace; else 400, with the offset of the
 *     first bad byte (bytes that are not UTF-8 are never echoed back). When a Content-Length is shorter than
 *     the body, the rest is read as the next request: 400 and close.
 *   - A client that does not read its responses is not read either once MAX_QUEUED bytes wait for it.
 *   - A connection that has to close (an error, Connection: close, a refusal) closes gracefully: its last
 *     response, then FIN, then whatever the client still sends is read and dropped (LINGER_MS at most), so
 *     the client reads the response rather than a connection reset. When the descriptors run out, such a
 *     lingering connection gives its descriptor to a newcomer; a newcomer with none to take is closed unanswered
 *     after what it already sent is read and dropped (FIN, not a reset, unless it sends more afterwards).
 *
 * Usage: server [--port PORT] [--host ADDR] [--config FILE] [--max-connections N]
 *               [--header-timeout MS] [--body-timeout MS] [--idle-timeout MS]
 *        (defaults: port 8080, host 127.0.0.1, a single cache source, 512 connections, 10000 / 30000 / 30000 ms;
 *        port 0 picks a free port, and the line "listening on http://ADDR:PORT" says which)
 */
#include <engram.h>
#include <engram/tools.h>

#include <http_parser.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <uv.h>

#define MAX_BODY (1u << 20)           /* bytes in a request body */
#define MAX_URL 2048                  /* bytes in a request target */
#define MAX_QUEUED (1u << 20)         /* bytes of responses queued for a client before it stops being read */
#define CALL_DEADLINE_MS 10000        /* a tool call's deadline */
#define LINGER_MS 2000                /* after the last response: how long the client's leftovers are dropped */
#define RESERVED_FDS 64               /* descriptors kept for the manager and the loop, beside the connections */
#define DEFAULT_MAX_CONNECTIONS 512

/* What a connection waits for. Each phase has its clock (phase_ms) and its way to end (on_timeout). */
typedef enum {
  WAIT_REQUEST, /* the first byte of a request: closed after --idle-timeout */
  WAIT_HEADERS, /* the end of the headers: 408 after --header-timeout */
  WAIT_BODY,    /* the end of the body: 400 after --body-timeout */
  WAIT_TOOL,    /* a tool call: no clock (the call has its deadline); the parser is paused */
  WAIT_CLOSE    /* the last response is queued: what comes is dropped until EOF, or LINGER_MS */
} phase_t;

typedef struct conn_s {
  uv_tcp_t tcp;
  uv_timer_t timer;
  uv_shutdown_t shutdown;
  http_parser parser;
  struct conn_s *prev, *next;
  phase_t phase;
  uint64_t waiting_since; /* loop time WAIT_REQUEST began: who has waited longest is evicted first */
  int handles;            /* open handles (tcp, timer); the struct is freed at 0 with no tool call pending */
  int accepted, served;   /* counted in n_open, in n_served (a refused connection is not served) */
  int busy;               /* a tool call is pending */
  int write_blocked;      /* over MAX_QUEUED bytes wait for the client: parsing and reading stop */
  int eof;                /* the client sent EOF: answer what it asked, then close */
  int closing;            /* uv_close requested */
  int lingering;          /* the last response is out and FIN sent: only the client's close is awaited */
  int keep_alive;
  int hdr_expect;         /* the header being parsed is "Expect" */
  int expect_continue;    /* Expect: 100-continue seen */
  char url[MAX_URL];
  size_t url_len;
  char *body;
  size_t body_len, body_cap;
  char *pending; /* bytes received after a request the parser paused on */
  size_t pending_len;
} conn_t;

static struct {
  const char *host, *config;
  int port;
  long max_connections;
  unsigned header_ms, body_ms, idle_ms;
} opt = {"127.0.0.1", NULL, 8080, 0, 10000, 30000, 30000};

static uv_loop_t *loop;
static engram_manager_t *mgr;
static uv_tcp_t server;
static uv_signal_t sig_term, sig_int;
static http_parser_settings settings;
static conn_t *conns;
static char *tools_openai, *tools_anthropic;
static long conn_cap;         /* connections open at all (refused ones included): what the descriptors allow */
static long n_open, n_served; /* connections open now; served now */
static unsigned long n_responses, n_connections, n_refused, n_evicted, n_timeouts;
static int stopping, exit_code, listening;

static void conn_close(conn_t *c);
static void conn_feed(conn_t *c, const char *data, size_t len);
static void conn_continue(conn_t *c);
static void conn_linger(conn_t *c);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);
static void on_timeout(uv_timer_t *t);

/* ---- Phases and their clocks ---- */

static unsigned phase_ms(phase_t phase) {
  switch (phase) {
    case WAIT_REQUEST: return opt.idle_ms;
    case WAIT_HEADERS: return opt.header_ms;
    case WAIT_BODY: return opt.body_ms;
    case WAIT_CLOSE: return LINGER_MS;
    default: return 0;
  }
}

/* Moves the connection to a phase and restarts its clock. Nothing leaves WAIT_CLOSE. */
static void enter(conn_t *c, phase_t phase) {
  unsigned ms = phase_ms(phase);
  if (c->closing || c->phase == WAIT_CLOSE) return;
  c->phase = phase;
  if (phase == WAIT_REQUEST) c->waiting_since = uv_now(loop);
  if (ms > 0) uv_timer_start(&c->timer, on_timeout, ms, 0);
  else uv_timer_stop(&c->timer);
}

static size_t queued(const conn_t *c) { return uv_stream_get_write_queue_size((const uv_stream_t *)&c->tcp); }

/* ---- Responses ---- */

typedef struct {
  uv_write_t req;
  conn_t *c;
  int last; /* the connection closes once this is written */
  char data[];
} write_t;

static void on_written(uv_write_t *req, int status) {
  write_t *w = (write_t *)req;
  conn_t *c = w->c;
  int last = w->last;
  free(w);
  if (status < 0) return conn_close(c);
  if (last) return conn_linger(c);
  if (c->write_blocked && queued(c) <= MAX_QUEUED / 2) { /* the client reads again: so do we */
    c->write_blocked = 0;
    conn_continue(c);
  } else if (c->write_blocked && c->phase == WAIT_REQUEST) {
    enter(c, WAIT_REQUEST); /* it reads, slowly: its idle clock starts again */
  } else if (c->eof && !c->busy && c->pending == NULL && queued(c) == 0) {
    conn_close(c); /* everything the client asked before its EOF is answered */
  }
}

/* Queues bytes in order behind the connection's earlier responses. */
static void send_bytes(conn_t *c, const char *data, size_t len, int last) {
  write_t *w = malloc(sizeof *w + len);
  uv_buf_t buf;
  if (w == NULL) return conn_close(c);
  memcpy(w->data, data, len);
  w->c = c;
  w->last = last;
  buf = uv_buf_init(w->data, (unsigned)len);
  if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, on_written) != 0) {
    free(w);
    return conn_close(c);
  }
  if (last) enter(c, WAIT_CLOSE); /* stops the parser: see conn_feed */
  else if (queued(c) > MAX_QUEUED) c->write_blocked = 1;
}

static const char *reason(int code) {
  switch (code) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 431: return "Request Header Fields Too Large";
    case 503: return "Service Unavailable";
    default: return "Error";
  }
}

/* Queues one response; nothing after the last one. extra_headers is "" or CRLF-terminated lines. */
static void respond(conn_t *c, int code, const char *extra_headers, const char *body, int last) {
  size_t blen = strlen(body), cap = blen + 256 + strlen(extra_headers);
  char *text;
  int n;
  if (c->closing || c->phase == WAIT_CLOSE || (text = malloc(cap)) == NULL) return;
  last = last || !c->keep_alive || stopping;
  n = snprintf(text, cap, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n%s%s\r\n",
               code, reason(code), blen, last ? "Connection: close\r\n" : "", extra_headers);
  memcpy(text + n, body, blen);
  n_responses++;
  send_bytes(c, text, (size_t)n + blen, last);
  free(text);
}

/* {"error": msg} with an error status. The message must be UTF-8: see printable(). */
static void respond_error(conn_t *c, int code, int last, const char *fmt, ...) {
  char msg[512];
  cJSON *o = cJSON_CreateObject();
  char *text;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  cJSON_AddStringToObject(o, "error", msg);
  text = cJSON_PrintUnformatted(o);
  respond(c, code, code == 503 ? "Retry-After: 1\r\n" : "", text ? text : "{\"error\":\"out of memory\"}", last);
  cJSON_free(text);
  cJSON_Delete(o);
}

/* A copy of what a client sent, fit to quote in an error: printable ASCII, anything else as '?'. */
static const char *printable(char *dst, size_t cap, const char *src) {
  size_t i = 0;
  for (; src[i] != '\0' && i + 1 < cap; i++) dst[i] = src[i] >= 0x20 && src[i] < 0x7f ? src[i] : '?';
  dst[i] = '\0';
  return dst;
}

/* ---- The request body ---- */

/* The offset of the first byte that is not well-formed UTF-8 (RFC 3629: no overlong forms, no surrogates,
 * nothing past U+10FFFF), or len when there is none. */
static size_t utf8_check(const unsigned char *s, size_t len) {
  size_t i = 0;
  while (i < len) {
    unsigned c = s[i], lo = 0x80, hi = 0xBF, more;
    if (c < 0x80) {
      i++;
      continue;
    }
    if (c >= 0xC2 && c <= 0xDF) more = 1;
    else if (c >= 0xE0 && c <= 0xEF) more = 2, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    else if (c >= 0xF0 && c <= 0xF4) more = 3, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    else return i;
    for (unsigned k = 1; k <= more; k++) {
      if (i + k >= len || s[i + k] < (k == 1 ? lo : 0x80) || s[i + k] > (k == 1 ? hi : 0xBF)) return i;
    }
    i += more + 1;
  }
  return len;
}

/* The body as one JSON value, or NULL with the reason in why. */
static cJSON *parse_body(const char *body, size_t len, char *why, size_t cap) {
  const char *nul = len ? memchr(body, '\0', len) : NULL, *end = NULL;
  size_t bad = utf8_check((const unsigned char *)body, len);
  cJSON *doc = NULL;
  if (len == 0) snprintf(why, cap, "empty body: expected {\"name\": ..., \"arguments\": {...}}");
  else if (nul != NULL) snprintf(why, cap, "the body holds a NUL byte at offset %zu", (size_t)(nul - body));
  else if (bad < len) snprintf(why, cap, "the body is not UTF-8: invalid byte at offset %zu", bad);
  else if ((doc = cJSON_ParseWithLengthOpts(body, len, &end, 0)) == NULL)
    snprintf(why, cap, "malformed JSON body near offset %zu", end ? (size_t)(end - body) : (size_t)0);
  else {
    while (end < body + len && (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n')) end++;
    if (end < body + len) { /* cJSON stops after one value: what follows must be whitespace */
      snprintf(why, cap, "trailing data after the JSON value, at offset %zu", (size_t)(end - body));
      cJSON_Delete(doc);
      doc = NULL;
    } else if (engram_json_check(body, len, "body", why, cap) != 0) {
      /* engram's input rules, which cJSON does not keep: it ends a string at "\u0000" (a tool name
       * "memory_store\u0000x" would run memory_store) and accepts lone surrogate escapes */
      cJSON_Delete(doc);
      doc = NULL;
    }
  }
  return doc;
}

/* ---- Tool calls ---- */

static void on_tool(int status, const engram_reply_t *reply, void *ud) {
  conn_t *c = ud;
  char header[96];
  c->busy = 0;
  if (c->handles == 0) { /* the connection was closed (the client left, or we are stopping) while the call ran */
    free(c->pending);
    free(c);
    return;
  }
  if (c->closing) return;
  snprintf(header, sizeof header, "X-Engram-Status: %s\r\n", status == 0 ? "ENGRAM_OK" : engram_err_name(status));
  respond(c, 200, header, reply->text ? reply->text : "{\"error\":\"no result\"}", 0);
  enter(c, WAIT_REQUEST);
  conn_continue(c);
}

static void handle_call(conn_t *c) {
  cJSON *doc, *name, *args;
  char *args_text = NULL, why[160];
  engram_opts_t o = {0};
  int rc;
  if ((doc = parse_body(c->body, c->body_len, why, sizeof why)) == NULL) return respond_error(c, 400, 0, "%s", why);
  name = cJSON_GetObjectItemCaseSensitive(doc, "name");
  args = cJSON_GetObjectItemCaseSensitive(doc, "arguments");
  if (!cJSON_IsObject(doc) || !cJSON_IsString(name)) {
    cJSON_Delete(doc);
    return respond_error(c, 400, 0, "the body must be an object with a string \"name\" (and \"arguments\")");
  }
  if (args != NULL && !cJSON_IsObject(args) && !cJSON_IsString(args) && !cJSON_IsNull(args)) {
    cJSON_Delete(doc);
    return respond_error(c, 400, 0, "\"arguments\" must be an object or a JSON string holding one");
  }
  if (cJSON_IsObject(args)) args_text = cJSON_PrintUnformatted(args);
  o.deadline_ms = CALL_DEADLINE_MS;
  /* A string argument is handed over as it came: the dispatcher parses it (and names what is wrong with it). */
  rc = engram_tools_call(mgr, name->valuestring, cJSON_IsString(args) ? args->valuestring : args_text, &o, on_tool, c);
  cJSON_free(args_text);
  cJSON_Delete(doc);
  if (rc != 0) return respond_error(c, 503, 0, "engram_tools_call: %s (%s)", engram_err_name(rc), engram_last_error());
  c->busy = 1; /* on_message_complete pauses the parser: one request at a time per connection */
}

/* ---- HTTP parsing ---- */

static int on_message_begin(http_parser *p) {
  conn_t *c = p->data;
  c->url_len = 0;
  c->url[0] = '\0';
  c->body_len = 0;
  if (c->body_cap > 65536) { /* do not keep a large buffer for an idle connection */
    free(c->body);
    c->body = NULL;
    c->body_cap = 0;
  }
  c->hdr_expect = 0;
  c->expect_continue = 0;
  enter(c, WAIT_HEADERS);
  return 0;
}

static int on_url(http_parser *p, const char *at, size_t len) {
  conn_t *c = p->data;
  if (c->url_len + len >= MAX_URL) {
    respond_error(c, 414, 1, "request target over %d bytes", MAX_URL - 1);
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
  c->hdr_expect = len == 6 && strncasecmp(at, "expect", 6) == 0;
  return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len) {
  conn_t *c = p->data;
  if (c->hdr_expect && len == 12 && strncasecmp(at, "100-continue", 12) == 0) c->expect_continue = 1;
  return 0;
}

/* A body announced over MAX_BODY is refused before it comes; curl and others wait for "100 Continue" before
 * sending a body they announced with Expect. */
static int on_headers_complete(http_parser *p) {
  static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
  conn_t *c = p->data;
  if (p->content_length != ULLONG_MAX && p->content_length > MAX_BODY) {
    respond_error(c, 413, 1, "a body of %llu bytes: the limit is %u", (unsigned long long)p->content_length, MAX_BODY);
    http_parser_pause(p, 1);
    return 0;
  }
  if (c->expect_continue) send_bytes(c, cont, sizeof cont - 1, 0);
  enter(c, WAIT_BODY);
  return 0;
}

static int on_body(http_parser *p, const char *at, size_t len) {
  conn_t *c = p->data;
  if (c->body_len + len > MAX_BODY) { /* a chunked body, whose size was not announced */
    respond_error(c, 413, 1, "a body over %u bytes", MAX_BODY);
    http_parser_pause(p, 1);
    return 0;
  }
  if (c->body_len + len > c->body_cap) {
    size_t cap = c->body_cap ? c->body_cap : 4096;
    char *b;
    while (cap < c->body_len + len) cap *= 2;
    if ((b = realloc(c->body, cap)) == NULL) return 1;
    c->body = b;
    c->body_cap = cap;
  }
  memcpy(c->body + c->body_len, at, len);
  c->body_len += len;
  return 0;
}

static void route(conn_t *c, http_parser *p) {
  char path[MAX_URL], quoted[128];
  const char *q = strchr(c->url, '?');
  size_t plen = q ? (size_t)(q - c->url) : c->url_len;
  memcpy(path, c->url, plen);
  path[plen] = '\0';
  if (strcmp(path, "/tools") == 0) {
    if (p->method != HTTP_GET) respond(c, 405, "Allow: GET\r\n", "{\"error\":\"use GET /tools\"}", 0);
    else respond(c, 200, "", q && strstr(q, "format=anthropic") ? tools_anthropic : tools_openai, 0);
  } else if (strcmp(path, "/tools/call") == 0) {
    if (p->method != HTTP_POST) respond(c, 405, "Allow: POST\r\n", "{\"error\":\"use POST /tools/call\"}", 0);
    else handle_call(c);
  } else {
    respond_error(c, 404, 0, "no route %s %s (GET /tools, POST /tools/call)", http_method_str(p->method),
                  printable(quoted, sizeof quoted, path));
  }
}

static int on_message_complete(http_parser *p) {
  conn_t *c = p->data;
  c->keep_alive = http_should_keep_alive(p) && !p->upgrade; /* no protocol switch here: close after this one */
  route(c, p);
  enter(c, c->busy ? WAIT_TOOL : WAIT_REQUEST);
  /* The rest of the input waits for the tool or for the client to read; after the last response it is never
   * parsed (a request pipelined behind "Connection: close" must not run). */
  if (c->busy || c->write_blocked || c->phase == WAIT_CLOSE) http_parser_pause(p, 1);
  return 0;
}

static void conn_feed(conn_t *c, const char *data, size_t len) {
  size_t done = http_parser_execute(&c->parser, &settings, data, len);
  enum http_errno err = HTTP_PARSER_ERRNO(&c->parser);
  if (c->closing || c->phase == WAIT_CLOSE) return; /* the last response is queued: the rest is dropped */
  if (err == HPE_PAUSED) {
    uv_read_stop((uv_stream_t *)&c->tcp); /* back-pressure on the client until we go on */
    if (done < len) {                     /* keep what follows the paused request */
      if ((c->pending = malloc(len - done)) == NULL) return conn_close(c);
      memcpy(c->pending, data + done, len - done);
      c->pending_len = len - done;
    }
  } else if (err == HPE_HEADER_OVERFLOW) {
    respond_error(c, 431, 1, "request headers over %d bytes", HTTP_MAX_HEADER_SIZE);
  } else if (err != HPE_OK) {
    respond_error(c, 400, 1, "malformed HTTP request: %s", http_errno_description(err));
  }
}

/* Whatever held the connection is over (the tool answered, the client reads again): parse what came meanwhile,
 * then read on. */
static void conn_continue(conn_t *c) {
  char *rest = c->pending;
  size_t n = c->pending_len;
  if (c->closing || c->phase == WAIT_CLOSE || c->busy || c->write_blocked) return;
  c->pending = NULL;
  c->pending_len = 0;
  http_parser_pause(&c->parser, 0);
  if (rest != NULL) conn_feed(c, rest, n);
  free(rest);
  if (c->closing || c->phase == WAIT_CLOSE || c->busy || c->write_blocked) return;
  if (!c->eof) uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
  else if (queued(c) == 0) conn_close(c);
}

/* ---- Connections ---- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  static char slab[65536]; /* reads are consumed at once (the parser copies what it keeps) */
  (void)h, (void)suggested;
  *buf = uv_buf_init(slab, sizeof slab);
}

static void on_handle_closed(uv_handle_t *h) {
  conn_t *c = h->data;
  if (--c->handles > 0) return;
  if (c->prev) c->prev->next = c->next;
  else conns = c->next;
  if (c->next) c->next->prev = c->prev;
  free(c->body);
  if (!c->busy) { /* else on_tool frees it */
    free(c->pending);
    free(c);
  }
}

static void conn_close(conn_t *c) {
  if (c->closing) return;
  c->closing = 1;
  n_open -= c->accepted;
  n_served -= c->served;
  uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
  uv_close((uv_handle_t *)&c->timer, on_handle_closed);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  if (status < 0) conn_close(req->handle->data);
}

/* The last response is written: FIN, then read and drop until the client closes too (or LINGER_MS). */
static void conn_linger(conn_t *c) {
  if (c->closing) return;
  if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, on_shutdown) != 0) return conn_close(c);
  c->lingering = 1;
  uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

/* Reads and drops what the client has already sent, so that closing the socket sends FIN rather than a reset
 * (a socket closed with unread bytes resets the connection, and the client may lose the response before it). */
static void drain(conn_t *c) {
  uv_os_fd_t fd;
  char buf[4096];
  if (uv_fileno((const uv_handle_t *)&c->tcp, &fd) != 0) return;
  for (int i = 0; i < 16 && recv(fd, buf, sizeof buf, MSG_DONTWAIT) > 0; i++) {
  }
}

/* No descriptor to spare for a newcomer: a connection that is only lingering (answered, FIN sent, waiting for its
 * client's close) gives its descriptor up first. 1 if one was closed. */
static int reclaim_lingering(void) {
  for (conn_t *c = conns; c != NULL; c = c->next) {
    if (c->lingering && !c->closing) {
      drain(c);
      conn_close(c);
      return 1;
    }
  }
  return 0;
}

static void on_timeout(uv_timer_t *t) {
  conn_t *c = t->data;
  http_parser *p = &c->parser;
  n_timeouts++;
  if (c->phase == WAIT_HEADERS) {
    respond_error(c, 408, 1, "request headers not complete after %u ms", opt.header_ms);
  } else if (c->phase == WAIT_BODY && !(p->flags & F_CHUNKED)) { /* content_length: what is still to come */
    respond_error(c, 400, 1, "request body incomplete after %u ms: %zu of %llu bytes", opt.body_ms, c->body_len,
                  (unsigned long long)(c->body_len + p->content_length));
  } else if (c->phase == WAIT_BODY) {
    respond_error(c, 400, 1, "chunked request body incomplete after %u ms (%zu bytes)", opt.body_ms, c->body_len);
  } else {
    conn_close(c); /* idle, or the client did not close after our last response */
  }
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  conn_t *c = s->data;
  if (n == UV_EOF && c->phase != WAIT_CLOSE && (c->busy || c->write_blocked || c->pending || queued(c) > 0)) {
    c->eof = 1; /* a half-close: what it asked is still answered (see on_written) */
    uv_read_stop(s);
    return;
  }
  if (n < 0) return conn_close(c); /* EOF or error */
  if (n == 0 || c->phase == WAIT_CLOSE) return;
  if (c->busy || c->write_blocked) { /* a read that raced with uv_read_stop: keep it behind the paused request */
    char *p = realloc(c->pending, c->pending_len + (size_t)n);
    if (p == NULL) return conn_close(c);
    memcpy(p + c->pending_len, buf->base, (size_t)n);
    c->pending = p;
    c->pending_len += (size_t)n;
    return;
  }
  conn_feed(c, buf->base, (size_t)n);
}

static int evictable(const conn_t *c) {
  return c->served && !c->closing && c->phase == WAIT_REQUEST && !c->busy && c->pending == NULL && queued(c) == 0;
}

/* The server is full: closes the connection that has waited longest for a request, if it has waited a quarter
 * of the idle timeout (a burst of new clients does not push each other out). 1 if a slot was freed. */
static int evict_idlest(void) {
  conn_t *idlest = NULL;
  for (conn_t *c = conns; c != NULL; c = c->next) {
    if (evictable(c) && (idlest == NULL || c->waiting_since < idlest->waiting_since)) idlest = c;
  }
  if (idlest == NULL || uv_now(loop) - idlest->waiting_since < opt.idle_ms / 4) return 0;
  n_evicted++;
  conn_close(idlest);
  return 1;
}

static void on_connection(uv_stream_t *srv, int status) {
  conn_t *c;
  if (status < 0 || (c = calloc(1, sizeof *c)) == NULL) return;
  uv_tcp_init(loop, &c->tcp);
  uv_timer_init(loop, &c->timer);
  c->tcp.data = c->timer.data = c;
  c->handles = 2;
  c->next = conns;
  if (conns) conns->prev = c;
  conns = c;
  if (uv_accept(srv, (uv_stream_t *)&c->tcp) != 0) return conn_close(c);
  c->accepted = 1;
  n_open++;
  n_connections++;
  if (n_open > conn_cap && !reclaim_lingering()) { /* no descriptor to spare, even for an answer */
    drain(c);
    return conn_close(c);
  }
  uv_tcp_nodelay(&c->tcp, 1);
  if (n_served >= opt.max_connections && !evict_idlest()) {
    n_refused++;
    respond_error(c, 503, 1, "server full (%ld connections): try again later", opt.max_connections);
    return;
  }
  c->served = 1;
  n_served++;
  http_parser_init(&c->parser, HTTP_REQUEST);
  c->parser.data = c;
  enter(c, WAIT_REQUEST);
  uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

/* ---- Start and stop ---- */

static void on_manager_closed(int status, const engram_reply_t *reply, void *ud) {
  (void)reply, (void)ud;
  printf("manager closed: %s\n", engram_err_name(status));
  if (status != 0) exit_code = 1;
  uv_close((uv_handle_t *)&sig_term, NULL);
  uv_close((uv_handle_t *)&sig_int, NULL);
}

static void on_signal(uv_signal_t *h, int signum) {
  (void)h;
  if (stopping) return;
  stopping = 1;
  printf("signal %d: stopping (%lu responses on %lu connections; %lu refused, %lu evicted, %lu timed out)\n",
         signum, n_responses, n_connections, n_refused, n_evicted, n_timeouts);
  if (listening) uv_close((uv_handle_t *)&server, NULL);
  for (conn_t *c = conns; c != NULL; c = c->next) conn_close(c);
  engram_manager_close(mgr, on_manager_closed, NULL);
}

static void fail_start(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  exit_code = 1;
  on_signal(&sig_term, 0);
}

static void on_configured(int status, const engram_reply_t *reply, void *ud) {
  struct sockaddr_storage addr;
  int len = sizeof addr, rc;
  char name[64] = "";
  (void)ud;
  if (status != 0) return fail_start("server: configuration failed: %s\n", reply->message);
  if ((rc = uv_ip4_addr(opt.host, opt.port, (struct sockaddr_in *)&addr)) != 0 &&
      (rc = uv_ip6_addr(opt.host, opt.port, (struct sockaddr_in6 *)&addr)) != 0)
    return fail_start("server: bad address %s: %s\n", opt.host, uv_strerror(rc));
  uv_tcp_init(loop, &server);
  listening = 1; /* the handle exists: close it when stopping */
  if ((rc = uv_tcp_bind(&server, (struct sockaddr *)&addr, 0)) != 0 ||
      (rc = uv_listen((uv_stream_t *)&server, 511, on_connection)) != 0)
    return fail_start("server: cannot listen on %s:%d: %s\n", opt.host, opt.port, uv_strerror(rc));
  uv_tcp_getsockname(&server, (struct sockaddr *)&addr, &len);
  if (addr.ss_family == AF_INET6) uv_ip6_name((struct sockaddr_in6 *)&addr, name, sizeof name);
  else uv_ip4_name((struct sockaddr_in *)&addr, name, sizeof name);
  printf("listening on http://%s:%d (GET /tools, POST /tools/call)\n", name,
         ntohs(((struct sockaddr_in *)&addr)->sin_port));
  fflush(stdout);
}

/* How many connections fit under the open-file limit, RESERVED_FDS (half of a tiny limit) left for the rest:
 * every connection open, refused ones included, up to conn_cap; served ones up to 3/4 of it. */
static void plan_connections(void) {
  struct rlimit rl;
  long nofile = 65536, fit;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < 65536)
    nofile = (long)rl.rlim_cur;
  conn_cap = nofile - (nofile >= 2 * RESERVED_FDS ? RESERVED_FDS : nofile / 2);
  fit = conn_cap * 3 / 4 > 0 ? conn_cap * 3 / 4 : 1;
  if (opt.max_connections == 0) {
    opt.max_connections = fit < DEFAULT_MAX_CONNECTIONS ? fit : DEFAULT_MAX_CONNECTIONS;
  } else if (opt.max_connections > fit) {
    fprintf(stderr, "server: --max-connections %ld lowered to %ld (open-file limit %ld)\n", opt.max_connections,
            fit, nofile);
    opt.max_connections = fit;
  }
  printf("limits: %ld connections (open-file limit %ld); headers %u ms, body %u ms, idle %u ms\n",
         opt.max_connections, nofile, opt.header_ms, opt.body_ms, opt.idle_ms);
}

static char *read_file(const char *path) {
  FILE *f = fopen(path, "rb");
  char *buf = NULL;
  long n;
  if (f == NULL) return NULL;
  if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n + 1))) {
    if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
      free(buf);
      buf = NULL;
    } else {
      buf[n] = '\0';
    }
  }
  fclose(f);
  return buf;
}

/* A number in [lo, hi], or -1. */
static long number(const char *s, long lo, long hi) {
  char *end;
  long v = strtol(s, &end, 10);
  return *s != '\0' && *end == '\0' && v >= lo && v <= hi ? v : -1;
}

static int set_ms(unsigned *ms, const char *v) {
  long n = number(v, 1, 86400000);
  if (n > 0) *ms = (unsigned)n;
  return n > 0;
}

static int parse_args(int argc, char **argv) {
  for (int i = 1; i < argc; i += 2) {
    const char *a = argv[i], *v = argv[i + 1];
    int ok = 1;
    if (v == NULL) return -1;
    if (strcmp(a, "--port") == 0) ok = (opt.port = (int)number(v, 0, 65535)) >= 0;
    else if (strcmp(a, "--host") == 0) opt.host = v;
    else if (strcmp(a, "--config") == 0) opt.config = v;
    else if (strcmp(a, "--max-connections") == 0) ok = (opt.max_connections = number(v, 1, 1000000)) > 0;
    else if (strcmp(a, "--header-timeout") == 0) ok = set_ms(&opt.header_ms, v);
    else if (strcmp(a, "--body-timeout") == 0) ok = set_ms(&opt.body_ms, v);
    else if (strcmp(a, "--idle-timeout") == 0) ok = set_ms(&opt.idle_ms, v);
    else ok = 0;
    if (!ok) return -1;
  }
  return 0;
}

int main(int argc, char **argv) {
  char *config;
  int rc;
  if (parse_args(argc, argv) != 0) {
    fprintf(stderr, "usage: server [--port PORT] [--host ADDR] [--config FILE] [--max-connections N]\n"
                    "              [--header-timeout MS] [--body-timeout MS] [--idle-timeout MS]\n");
    return 2;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  signal(SIGPIPE, SIG_IGN);
  plan_connections();
  if (opt.config == NULL) {
    config = strdup("{\"sources\": [{\"name\": \"cache\", \"type\": \"cache\", \"description\": \"Fast temporary "
                    "cache for session data\", \"default\": true}]}");
  } else if ((config = read_file(opt.config)) == NULL) {
    fprintf(stderr, "server: cannot read %s\n", opt.config);
    return 1;
  }
  tools_openai = engram_tools_definitions_json(ENGRAM_TOOLS_OPENAI);
  tools_anthropic = engram_tools_definitions_json(ENGRAM_TOOLS_ANTHROPIC);
  if (tools_openai == NULL || tools_anthropic == NULL) return 1;

  settings.on_message_begin = on_message_begin;
  settings.on_url = on_url;
  settings.on_header_field = on_header_field;
  settings.on_header_value = on_header_value;
  settings.on_headers_complete = on_headers_complete;
  settings.on_body = on_body;
  settings.on_message_complete = on_message_complete;

  loop = uv_default_loop();
  if ((rc = engram_manager_new(&mgr, loop, NULL)) != 0) {
    fprintf(stderr, "server: engram_manager_new: %s\n", engram_err_name(rc));
    return 1;
  }
  uv_signal_init(loop, &sig_term);
  uv_signal_init(loop, &sig_int);
  uv_signal_start(&sig_term, on_signal, SIGTERM);
  uv_signal_start(&sig_int, on_signal, SIGINT);
  if ((rc = engram_manager_configure(mgr, config, on_configured, NULL)) != 0) {
    fprintf(stderr, "server: configuration refused: %s\n", engram_last_error());
    return 1;
  }
  free(config);
  uv_run(loop, UV_RUN_DEFAULT);
  rc = uv_loop_close(loop);
  cJSON_free(tools_openai);
  cJSON_free(tools_anthropic);
  if (rc != 0) {
    fprintf(stderr, "server: handles left open at exit\n");
    return 1;
  }
  printf("server: exit %d\n", exit_code);
  return exit_code;
}
