/*
 * fuzz_server.c — libFuzzer harness for the example HTTP server's request path (examples/server/main.c), driven
 * in-process: the server's own code, not a copy of it.
 *
 * The server's main.c is compiled into this harness (its main renamed, so libFuzzer's main runs), with a fresh
 * manager holding one cache source — what the server configures without --config — on the harness's loop. Each
 * input is the byte stream one client sends on one connection. The connection is handed to the server's own
 * on_connection through its accept path: the listening handle is a stand-in whose accepted descriptor is one end
 * of a socketpair(AF_UNIX) — no listening socket, no address, no network. The input is written to the other end
 * in pieces whose size depends on the input (so requests are split across reads at varying points), the loop
 * running between pieces, then the client half-closes (EOF) and reads everything the server answers until the
 * server closes. Everything else — HTTP parsing (libhttp-parser), pipelining and pausing, body checks
 * (parse_body: UTF-8, NUL, trailing data, cJSON_ParseWithLengthOpts), engram_tools_call and the response
 * writes — is the server's code.
 *
 * Asserted, for every input:
 *   - the server closes the connection by itself after the client's EOF, within 5 seconds (no request is left
 *     hanging, no connection is leaked), and its connection counters come back to zero;
 *   - what it sent is a well-formed sequence of HTTP/1.1 responses (parsed with http-parser in response mode):
 *     each with a known status, Content-Type: application/json and a body that is one JSON value; besides
 *     interim "100 Continue" responses, at least one response when the client sent a complete request and at
 *     most one more than the complete requests it sent (the last being an error for what follows);
 *   - a 200 answer to POST /tools/call carries X-Engram-Status, and its body is a JSON object with an "error"
 *     string exactly when that status is not ENGRAM_OK; every 4xx/5xx body is {"error": "..."};
 *   - the manager then closes cleanly, nothing is left on the loop, and ASan/UBSan/LeakSanitizer see nothing.
 */
#define main engram_server_example_main
#include "../../examples/server/main.c"
#undef main

#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz_common.h"

/* ---- The client's side ---- */

typedef struct {
  char *buf;
  size_t len, cap;
  int eof;
} inbox_t;

static uv_pipe_t client;
static inbox_t inbox;
static int listener_fds[2] = {-1, -1};

static void client_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b) {
  (void)h, (void)suggested;
  if (inbox.cap - inbox.len < 65536) {
    inbox.cap = inbox.cap * 2 + 65536;
    if ((inbox.buf = realloc(inbox.buf, inbox.cap)) == NULL) abort();
  }
  *b = uv_buf_init(inbox.buf + inbox.len, (unsigned)(inbox.cap - inbox.len));
}

static void client_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  (void)b;
  if (n > 0) inbox.len += (size_t)n;
  else if (n < 0) {
    inbox.eof = 1;
    uv_read_stop(s);
  }
}

static int guard_fired;
static void on_guard(uv_timer_t *t) {
  (void)t;
  guard_fired = 1;
}

/* ---- Counting the complete requests the client sent ---- */

static int req_complete;
static int count_request(http_parser *p) {
  (void)p;
  req_complete++;
  return 0;
}

/* ---- Checking the responses ---- */

typedef struct {
  int status;
  int content_json, has_engram_status, engram_ok;
  int hdr; /* the header being parsed: 1 Content-Type, 2 X-Engram-Status */
  char *body;
  size_t body_len;
  int n_final, n_continue;
} resp_t;

static int r_begin(http_parser *p) {
  resp_t *r = p->data;
  r->content_json = r->has_engram_status = r->engram_ok = 0;
  r->hdr = 0;
  r->body_len = 0;
  return 0;
}

static int r_field(http_parser *p, const char *at, size_t len) {
  resp_t *r = p->data;
  r->hdr = len == 12 && strncasecmp(at, "Content-Type", 12) == 0 ? 1 : len == 15 && strncasecmp(at, "X-Engram-Status", 15) == 0 ? 2 : 0;
  return 0;
}

static int r_value(http_parser *p, const char *at, size_t len) {
  resp_t *r = p->data;
  if (r->hdr == 1) r->content_json = len == 16 && memcmp(at, "application/json", 16) == 0;
  if (r->hdr == 2) {
    r->has_engram_status = 1;
    r->engram_ok = len == 9 && memcmp(at, "ENGRAM_OK", 9) == 0;
  }
  return 0;
}

static int r_body(http_parser *p, const char *at, size_t len) {
  resp_t *r = p->data;
  if ((r->body = realloc(r->body, r->body_len + len + 1)) == NULL) abort();
  memcpy(r->body + r->body_len, at, len);
  r->body_len += len;
  return 0;
}

static int r_complete(http_parser *p) {
  resp_t *r = p->data;
  int code = (int)p->status_code;
  cJSON *doc;
  const cJSON *err;
  if (code == 100) {
    r->n_continue++;
    return 0;
  }
  r->n_final++;
  FUZZ_CHECK(code == 200 || code == 400 || code == 404 || code == 405 || code == 408 || code == 413 || code == 431 ||
                 code == 503,
             "unexpected status %d", code);
  FUZZ_CHECK(r->content_json, "response %d without Content-Type: application/json", code);
  doc = cJSON_ParseWithLength(r->body ? r->body : "", r->body_len);
  FUZZ_CHECK(doc != NULL, "response %d: the body is not JSON: %.*s", code, (int)r->body_len, r->body ? r->body : "");
  err = cJSON_GetObjectItemCaseSensitive(doc, "error");
  if (code != 200) FUZZ_CHECK(cJSON_IsString(err), "response %d without an \"error\" string", code);
  if (code == 200 && r->has_engram_status) {
    FUZZ_CHECK(cJSON_IsObject(doc), "a tool result is not an object");
    FUZZ_CHECK(r->engram_ok == !cJSON_IsString(err), "X-Engram-Status %s but the result %s an error",
               r->engram_ok ? "OK" : "not OK", cJSON_IsString(err) ? "is" : "is not");
  }
  cJSON_Delete(doc);
  r->status = code;
  return 0;
}

/* ---- Setup ---- */

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  signal(SIGPIPE, SIG_IGN);
  loop = fuzz_loop_get();
#ifdef DEFAULT_MAX_CONNECTIONS
  {
    /* The server sizes its connection table from the open-file limit; its message goes to /dev/null. */
    int out = dup(1), nul = open("/dev/null", O_WRONLY);
    fflush(stdout);
    dup2(nul, 1);
    plan_connections();
    fflush(stdout);
    dup2(out, 1);
    close(out);
    close(nul);
  }
#endif
  tools_openai = engram_tools_definitions_json(ENGRAM_TOOLS_OPENAI);
  tools_anthropic = engram_tools_definitions_json(ENGRAM_TOOLS_ANTHROPIC);
  if (tools_openai == NULL || tools_anthropic == NULL) abort();
  settings.on_message_begin = on_message_begin;
  settings.on_url = on_url;
  settings.on_header_field = on_header_field;
  settings.on_header_value = on_header_value;
  settings.on_headers_complete = on_headers_complete;
  settings.on_body = on_body;
  settings.on_message_complete = on_message_complete;
  /* The stand-in listening handle: open on a socket that never becomes readable (its peer stays open and
   * silent), so libuv can watch it after each accept. */
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, listener_fds) != 0) abort();
  uv_tcp_init(loop, &server);
  if (uv_tcp_open(&server, listener_fds[0]) != 0) abort();
  return 0;
}

static uint32_t fnv(const uint8_t *d, size_t n) {
  uint32_t h = 2166136261u;
  while (n--) h = (h ^ *d++) * 16777619u;
  return h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  int sv[2], i;
  size_t off = 0, piece;
  uint32_t h = fnv(data, size);
  uv_timer_t guard;
  http_parser rp, qp;
  http_parser_settings rs, qs;
  resp_t r;

  mgr = fuzz_manager_new();
  fuzz_add_source(mgr, "cache", &engram_source_cache, NULL, 1);

  /* The connection: the server accepts one end of a socketpair. */
  FUZZ_CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0, "socketpair: %s", strerror(errno));
  server.accepted_fd = sv[0];
  on_connection((uv_stream_t *)&server, 0);
  FUZZ_CHECK(conns != NULL, "the server did not take the connection");
  memset(&inbox, 0, sizeof inbox);
  uv_pipe_init(loop, &client, 0);
  FUZZ_CHECK(uv_pipe_open(&client, sv[1]) == 0, "uv_pipe_open");
  uv_read_start((uv_stream_t *)&client, client_alloc, client_read);

  /* The client sends the input in pieces (the whole of it, or 1..64 bytes at a time), letting the loop run
   * between them, then half-closes. */
  piece = h % 3 == 0 ? (size ? size : 1) : 1 + (h >> 8) % 64;
  while (off < size) {
    size_t n = size - off < piece ? size - off : piece;
    ssize_t w = send(sv[1], data + off, n, MSG_NOSIGNAL);
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) w = 0;
    if (w < 0) break; /* the server closed its end already (EPIPE, ECONNRESET) */
    off += (size_t)w;
    for (i = 0; i < 4; i++) uv_run(loop, UV_RUN_NOWAIT);
  }
  shutdown(sv[1], SHUT_WR);

  /* Until the server closes the connection (the client's read sees EOF) and has let go of it. */
  guard_fired = 0;
  uv_timer_init(loop, &guard);
  uv_timer_start(&guard, on_guard, 5000, 0);
  while (!(inbox.eof && conns == NULL) && !guard_fired) uv_run(loop, UV_RUN_ONCE);
  FUZZ_CHECK(!guard_fired, "the server did not close the connection within 5 s of the client's EOF (eof seen: %d)",
             inbox.eof);
  uv_close((uv_handle_t *)&guard, NULL);
  uv_close((uv_handle_t *)&client, NULL); /* closes sv[1] */
  uv_run(loop, UV_RUN_NOWAIT);
#ifdef DEFAULT_MAX_CONNECTIONS
  FUZZ_CHECK(n_open == 0 && n_served == 0, "connection counters left at open %ld, served %ld", n_open, n_served);
#endif

  if (getenv("FUZZ_SERVER_DEBUG") != NULL) /* to read what a crash input got back */
    fprintf(stderr, "---- the server sent %zu bytes:\n%.*s\n----\n", inbox.len, (int)inbox.len, inbox.buf ? inbox.buf : "");

  /* What the client sent: the complete requests, up to the first parse error. */
  memset(&qs, 0, sizeof qs);
  qs.on_message_complete = count_request;
  http_parser_init(&qp, HTTP_REQUEST);
  req_complete = 0;
  http_parser_execute(&qp, &qs, (const char *)data, size);

  /* What the server answered. */
  memset(&r, 0, sizeof r);
  memset(&rs, 0, sizeof rs);
  rs.on_message_begin = r_begin;
  rs.on_header_field = r_field;
  rs.on_header_value = r_value;
  rs.on_body = r_body;
  rs.on_message_complete = r_complete;
  http_parser_init(&rp, HTTP_RESPONSE);
  rp.data = &r;
  {
    size_t done = http_parser_execute(&rp, &rs, inbox.buf ? inbox.buf : "", inbox.len);
    FUZZ_CHECK(done == inbox.len && HTTP_PARSER_ERRNO(&rp) == HPE_OK,
               "the server's output is not a sequence of HTTP responses (%s at byte %zu of %zu)",
               http_errno_name(HTTP_PARSER_ERRNO(&rp)), done, inbox.len);
    http_parser_execute(&rp, &rs, NULL, 0); /* the end of the stream: a response cut short is an error */
    FUZZ_CHECK(HTTP_PARSER_ERRNO(&rp) == HPE_OK, "the server's output ends inside a response (%s)",
               http_errno_name(HTTP_PARSER_ERRNO(&rp)));
  }
  if (req_complete > 0) FUZZ_CHECK(r.n_final >= 1, "%d complete requests and no answer", req_complete);
  FUZZ_CHECK(r.n_final <= req_complete + 1, "%d answers to %d complete requests", r.n_final, req_complete);
  free(r.body);
  free(inbox.buf);
  inbox.buf = NULL;

  fuzz_manager_close(mgr);
  mgr = NULL;
  return 0;
}
