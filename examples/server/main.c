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
 * Usage: server [--port PORT] [--host ADDR] [--config FILE]   (port 0 picks a free port; the line
 *        "listening on http://ADDR:PORT" says which; without --config a single cache source)
 */
#include <engram.h>
#include <engram/tools.h>

#include <http_parser.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uv.h>

#define MAX_BODY (1u << 20)
#define MAX_URL 2048
#define CALL_DEADLINE_MS 10000

typedef struct conn_s {
  uv_tcp_t tcp;
  http_parser parser;
  struct conn_s *prev, *next;
  char url[MAX_URL];
  size_t url_len;
  char *body;
  size_t body_len, body_cap;
  int too_big;         /* body over MAX_BODY: answered 413 */
  int busy;            /* a tool call is pending: the parser is paused */
  int closing;         /* uv_close requested */
  int handle_closed;   /* uv_close finished */
  int keep_alive;
  int hdr_expect;      /* the header being parsed is "Expect" */
  int expect_continue; /* Expect: 100-continue seen */
  char *pending;       /* bytes received after a request the parser paused on */
  size_t pending_len;
} conn_t;

static uv_loop_t *loop;
static engram_manager_t *mgr;
static uv_tcp_t server;
static uv_signal_t sig_term, sig_int;
static http_parser_settings settings;
static conn_t *conns;
static char *tools_openai, *tools_anthropic;
static unsigned long n_requests, n_connections;
static int stopping, exit_code, listening;

static void conn_close(conn_t *c);
static void conn_feed(conn_t *c, const char *data, size_t len);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);

/* ---- Responses ---- */

typedef struct {
  uv_write_t req;
  conn_t *c;
  int close_after;
  char data[];
} write_t;

static void on_written(uv_write_t *req, int status) {
  write_t *w = (write_t *)req;
  conn_t *c = w->c;
  if (status < 0 || w->close_after) conn_close(c);
  free(w);
}

static const char *reason(int code) {
  switch (code) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Payload Too Large";
    case 431: return "Request Header Fields Too Large";
    case 503: return "Service Unavailable";
    default: return "Error";
  }
}

/* Queues one response. extra_headers is "" or CRLF-terminated lines. */
static void respond(conn_t *c, int code, const char *extra_headers, const char *body, int close_after) {
  size_t blen = strlen(body), cap = blen + 512 + strlen(extra_headers);
  write_t *w = malloc(sizeof *w + cap);
  uv_buf_t buf;
  int n;
  if (c->closing || w == NULL) {
    free(w);
    return;
  }
  close_after = close_after || !c->keep_alive || stopping;
  n = snprintf(w->data, cap,
               "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n%s%s\r\n", code,
               reason(code), blen, close_after ? "Connection: close\r\n" : "", extra_headers);
  memcpy(w->data + n, body, blen);
  w->c = c;
  w->close_after = close_after;
  buf = uv_buf_init(w->data, (unsigned)(n + (int)blen));
  n_requests++;
  if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, on_written) != 0) {
    free(w);
    conn_close(c);
  }
}

/* {"error": msg} with a 4xx status. */
static void respond_error(conn_t *c, int code, int close_after, const char *fmt, ...) {
  char msg[512];
  cJSON *o = cJSON_CreateObject();
  char *text;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  cJSON_AddStringToObject(o, "error", msg);
  text = cJSON_PrintUnformatted(o);
  respond(c, code, "", text ? text : "{\"error\":\"out of memory\"}", close_after);
  cJSON_free(text);
  cJSON_Delete(o);
}

/* ---- Tool calls ---- */

/* The request is answered: let the parser go on with what the client sent meanwhile. */
static void conn_resume(conn_t *c) {
  char *rest = c->pending;
  size_t n = c->pending_len;
  c->busy = 0;
  c->pending = NULL;
  c->pending_len = 0;
  if (c->closing) {
    free(rest);
    return;
  }
  http_parser_pause(&c->parser, 0);
  if (rest != NULL) conn_feed(c, rest, n);
  free(rest);
  if (!c->closing && !c->busy) uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void on_tool(int status, const engram_reply_t *reply, void *ud) {
  conn_t *c = ud;
  char header[96];
  if (c->closing) { /* the client went away (or we are stopping) while the call ran */
    c->busy = 0;
    free(c->pending);
    c->pending = NULL;
    if (c->handle_closed) free(c);
    return;
  }
  snprintf(header, sizeof header, "X-Engram-Status: %s\r\n", status == 0 ? "ENGRAM_OK" : engram_err_name(status));
  respond(c, 200, header, reply->text ? reply->text : "{\"error\":\"no result\"}", 0);
  conn_resume(c);
}

static void handle_call(conn_t *c) {
  cJSON *doc, *name, *args;
  char *args_text = NULL;
  engram_opts_t o = {0};
  int rc;
  if (c->body_len == 0) return respond_error(c, 400, 0, "empty body: expected {\"name\": ..., \"arguments\": {...}}");
  if ((doc = cJSON_ParseWithLength(c->body, c->body_len)) == NULL)
    return respond_error(c, 400, 0, "malformed JSON body");
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
  c->busy = 1;
  uv_read_stop((uv_stream_t *)&c->tcp); /* one request at a time per connection: back-pressure on the client */
}

/* ---- HTTP parsing ---- */

static int on_message_begin(http_parser *p) {
  conn_t *c = p->data;
  c->url_len = 0;
  c->body_len = 0;
  c->too_big = 0;
  c->hdr_expect = 0;
  c->expect_continue = 0;
  return 0;
}

static int on_url(http_parser *p, const char *at, size_t len) {
  conn_t *c = p->data;
  if (c->url_len + len >= MAX_URL) return 1; /* parse error → 400 */
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

/* curl and others wait for "100 Continue" before sending a body they announced with Expect. */
static int on_headers_complete(http_parser *p) {
  conn_t *c = p->data;
  static char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
  if (c->expect_continue && !c->closing) {
    uv_buf_t b = uv_buf_init(cont, sizeof cont - 1);
    uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
  }
  return 0;
}

static int on_body(http_parser *p, const char *at, size_t len) {
  conn_t *c = p->data;
  if (c->too_big || c->body_len + len > MAX_BODY) {
    c->too_big = 1;
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

static int on_message_complete(http_parser *p) {
  conn_t *c = p->data;
  char path[MAX_URL];
  const char *q;
  size_t plen;
  c->keep_alive = http_should_keep_alive(p);
  q = strchr(c->url, '?');
  plen = q ? (size_t)(q - c->url) : c->url_len;
  memcpy(path, c->url, plen);
  path[plen] = '\0';
  if (c->too_big) {
    respond_error(c, 413, 1, "body over %u bytes", MAX_BODY);
  } else if (strcmp(path, "/tools") == 0) {
    if (p->method != HTTP_GET) respond(c, 405, "Allow: GET\r\n", "{\"error\":\"use GET /tools\"}", 0);
    else respond(c, 200, "", q && strstr(q, "format=anthropic") ? tools_anthropic : tools_openai, 0);
  } else if (strcmp(path, "/tools/call") == 0) {
    if (p->method != HTTP_POST) respond(c, 405, "Allow: POST\r\n", "{\"error\":\"use POST /tools/call\"}", 0);
    else handle_call(c);
  } else {
    respond_error(c, 404, 0, "no route %s %s (GET /tools, POST /tools/call)", http_method_str(p->method), path);
  }
  if (c->busy) http_parser_pause(p, 1); /* the rest of the input waits for this answer */
  return 0;
}

static void conn_feed(conn_t *c, const char *data, size_t len) {
  size_t done = http_parser_execute(&c->parser, &settings, data, len);
  enum http_errno err = HTTP_PARSER_ERRNO(&c->parser);
  if (err == HPE_PAUSED) {
    if (done < len) { /* keep what follows the paused request */
      char *rest = malloc(len - done);
      if (rest == NULL) return conn_close(c);
      memcpy(rest, data + done, len - done);
      c->pending = rest;
      c->pending_len = len - done;
    }
    return;
  }
  if (err != HPE_OK) {
    if (err == HPE_HEADER_OVERFLOW) respond_error(c, 431, 1, "request headers too large");
    else respond_error(c, 400, 1, "malformed HTTP request: %s", http_errno_description(err));
    uv_read_stop((uv_stream_t *)&c->tcp); /* the connection closes once the response is written */
  }
}

/* ---- Connections ---- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  static char slab[65536]; /* reads are consumed at once (the parser copies what it keeps) */
  (void)h, (void)suggested;
  *buf = uv_buf_init(slab, sizeof slab);
}

static void on_conn_closed(uv_handle_t *h) {
  conn_t *c = h->data;
  if (c->prev) c->prev->next = c->next;
  else conns = c->next;
  if (c->next) c->next->prev = c->prev;
  c->handle_closed = 1;
  free(c->body);
  if (!c->busy) {
    free(c->pending);
    free(c);
  }
}

static void conn_close(conn_t *c) {
  if (c->closing) return;
  c->closing = 1;
  uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  conn_t *c = s->data;
  if (n < 0) return conn_close(c); /* EOF or error */
  if (n == 0) return;
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
  if (status < 0 || stopping) return;
  if ((c = calloc(1, sizeof *c)) == NULL) return;
  uv_tcp_init(loop, &c->tcp);
  c->tcp.data = c;
  if (uv_accept(srv, (uv_stream_t *)&c->tcp) != 0) {
    c->closing = 1;
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
    c->next = conns, conns = c;
    if (c->next) c->next->prev = c;
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  http_parser_init(&c->parser, HTTP_REQUEST);
  c->parser.data = c;
  c->next = conns;
  if (conns) conns->prev = c;
  conns = c;
  n_connections++;
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
  printf("signal %d: stopping (%lu requests on %lu connections)\n", signum, n_requests, n_connections);
  if (listening) uv_close((uv_handle_t *)&server, NULL);
  for (conn_t *c = conns; c != NULL; c = c->next) conn_close(c);
  engram_manager_close(mgr, on_manager_closed, NULL);
}

static const char *host = "127.0.0.1";
static int port = 8080;

static void on_configured(int status, const engram_reply_t *reply, void *ud) {
  struct sockaddr_storage addr;
  int len = sizeof addr, rc;
  char name[64] = "";
  (void)ud;
  if (status != 0) {
    fprintf(stderr, "server: configuration failed: %s\n", reply->message);
    exit_code = 1;
    on_signal(&sig_term, 0);
    return;
  }
  if ((rc = uv_ip4_addr(host, port, (struct sockaddr_in *)&addr)) != 0 &&
      (rc = uv_ip6_addr(host, port, (struct sockaddr_in6 *)&addr)) != 0) {
    fprintf(stderr, "server: bad address %s: %s\n", host, uv_strerror(rc));
    exit_code = 1;
    on_signal(&sig_term, 0);
    return;
  }
  uv_tcp_init(loop, &server);
  listening = 1; /* the handle exists: close it when stopping */
  if ((rc = uv_tcp_bind(&server, (struct sockaddr *)&addr, 0)) != 0 ||
      (rc = uv_listen((uv_stream_t *)&server, 511, on_connection)) != 0) {
    fprintf(stderr, "server: cannot listen on %s:%d: %s\n", host, port, uv_strerror(rc));
    exit_code = 1;
    on_signal(&sig_term, 0);
    return;
  }
  uv_tcp_getsockname(&server, (struct sockaddr *)&addr, &len);
  if (addr.ss_family == AF_INET6) uv_ip6_name((struct sockaddr_in6 *)&addr, name, sizeof name);
  else uv_ip4_name((struct sockaddr_in *)&addr, name, sizeof name);
  printf("listening on http://%s:%d (GET /tools, POST /tools/call)\n", name,
         ntohs(((struct sockaddr_in *)&addr)->sin_port));
  fflush(stdout);
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

int main(int argc, char **argv) {
  const char *config_path = NULL;
  char *config;
  int rc;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) port = atoi(argv[++i]);
    else if (strcmp(argv[i], "--host") == 0 && i + 1 < argc) host = argv[++i];
    else if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) config_path = argv[++i];
    else {
      fprintf(stderr, "usage: server [--port PORT] [--host ADDR] [--config FILE]\n");
      return 2;
    }
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  signal(SIGPIPE, SIG_IGN);
  if (config_path == NULL) {
    config = strdup("{\"sources\": [{\"name\": \"cache\", \"type\": \"cache\", \"description\": \"Fast temporary "
                    "cache for session data\", \"default\": true}]}");
  } else if ((config = read_file(config_path)) == NULL) {
    fprintf(stderr, "server: cannot read %s\n", config_path);
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
