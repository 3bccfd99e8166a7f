/*
 * hostile_client — the raw-socket half of examples/server/hostile.sh: what curl cannot do against the server
 * example (stall in the middle of a request, drip it byte by byte, open a thousand idle connections, pipeline
 * ten thousand requests, send bytes that are not HTTP). Plain POSIX sockets on 127.0.0.1, nothing to link;
 * hostile.sh builds it with `cc -o hostile_client hostile_client.c`.
 *
 *   hostile_client exchange PORT WAIT_MS [N [DRIP_MS]]
 *       Sends stdin on one connection as it is (never half-closing: a server that waits for more must decide by
 *       itself), DRIP_MS apart byte by byte if given, and prints each response as "response CODE [close] BODY"
 *       until the server closes ("closed after MS ms, S of T bytes sent"), N responses came or WAIT_MS passed
 *       ("open after ..."). It stops sending after a response that says Connection: close.
 *   hostile_client idle PORT N LIMIT IDLE_MS
 *       Opens N connections that send nothing to a server serving LIMIT. Expects: LIMIT held open; each other
 *       one answered 503 (JSON error, Connection: close) then closed, or closed unanswered (an idle one evicted
 *       to make room, or no descriptor to spare for an answer); then, while the held ones are still open, a new
 *       client's GET /tools answered 200 (after 503s until the held ones have waited long enough to be
 *       evicted); then every held one closed by the server, none before IDLE_MS.
 *   hostile_client pipeline PORT N MODE
 *       N requests on one connection, written back to back, answers checked in order. MODE "mixed": tool calls
 *       (memory_store of key pipe:I) between 404s that name /pipe/I, read while writing. MODE "unread": GET
 *       /tools (2 KB requests, 6 KB answers) between the 404s, nothing read until the server has taken no request
 *       bytes for 500 ms (or all are written): the server meets a client that does not read its answers.
 *
 * Every response must be well-formed, with a body in UTF-8 without control bytes. Exits 0 when all is as
 * expected, 1 on anything unexpected (saying what, on stderr), 2 on a usage or system error.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int port;

static void die(int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "hostile_client: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  exit(code);
}

static long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* A non-blocking socket connecting (or connected) to 127.0.0.1:port. */
static int dial(void) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
  int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  if (fd < 0) die(2, "socket: %s", strerror(errno));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0 && errno != EINPROGRESS) die(2, "connect: %s", strerror(errno));
  return fd;
}

/* ---- Responses ---- */

typedef struct {
  char *data;
  size_t len, cap;
} buf_t;

static void buf_add(buf_t *b, const char *p, size_t n) {
  if (b->len + n + 1 > b->cap) {
    while (b->len + n + 1 > b->cap) b->cap = b->cap ? b->cap * 2 : 65536;
    if ((b->data = realloc(b->data, b->cap)) == NULL) die(2, "out of memory");
  }
  memcpy(b->data + b->len, p, n);
  b->len += n;
  b->data[b->len] = '\0';
}

typedef struct {
  int code, close; /* status; Connection: close */
  char *body;      /* NUL-terminated copy */
  size_t body_len;
} response_t;

/* 1 if the body is UTF-8 with no control byte (a JSON text from this server is). */
static int clean_text(const unsigned char *s, size_t n) {
  for (size_t i = 0; i < n;) {
    unsigned c = s[i], more = c < 0x80 ? 0 : c >= 0xC2 && c <= 0xDF ? 1 : c >= 0xE0 && c <= 0xEF ? 2 : c >= 0xF0 && c <= 0xF4 ? 3 : 9;
    if (c < 0x20 || c == 0x7f || more == 9 || i + more >= n) return 0;
    for (unsigned k = 1; k <= more; k++)
      if ((s[i + k] & 0xC0) != 0x80) return 0;
    i += more + 1;
  }
  return 1;
}

/* Takes one complete response off the front of b: 1, 0 if incomplete; dies on a malformed one. */
static int take_response(buf_t *b, response_t *r) {
  char *end = b->len ? strstr(b->data, "\r\n\r\n") : NULL, *cl;
  size_t head, blen = 0;
  if (end == NULL) return 0;
  head = (size_t)(end - b->data) + 4;
  if (sscanf(b->data, "HTTP/1.1 %d ", &r->code) != 1) die(1, "not an HTTP response: %.80s", b->data);
  end[2] = '\0'; /* search the headers only */
  if ((cl = strcasestr(b->data, "\r\ncontent-length:")) != NULL) blen = strtoul(cl + 17, NULL, 10);
  else if (r->code >= 200) die(1, "a response without Content-Length: %.200s", b->data);
  r->close = strcasestr(b->data, "\r\nconnection: close\r\n") != NULL;
  end[2] = '\r';
  if (b->len < head + blen) return 0;
  if ((r->body = malloc(blen + 1)) == NULL) die(2, "out of memory");
  memcpy(r->body, b->data + head, blen);
  r->body[blen] = '\0';
  r->body_len = blen;
  if (!clean_text((unsigned char *)r->body, blen)) die(1, "HTTP %d: the body is not clean UTF-8 text", r->code);
  memmove(b->data, b->data + head + blen, b->len - head - blen);
  b->len -= head + blen;
  b->data[b->len] = '\0';
  return 1;
}

/* Reads what is there: 1 on data or EAGAIN, 0 on EOF; dies on a reset (the server must close gracefully). */
static int read_some(int fd, buf_t *b) {
  char tmp[65536];
  ssize_t n = read(fd, tmp, sizeof tmp);
  if (n > 0) buf_add(b, tmp, (size_t)n);
  if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) die(1, "read: %s (a reset, not a graceful close)", strerror(errno));
  return n != 0;
}

/* ---- exchange ---- */

static buf_t read_stdin(void) {
  buf_t in = {0};
  char tmp[65536];
  ssize_t n;
  while ((n = read(0, tmp, sizeof tmp)) > 0) buf_add(&in, tmp, (size_t)n);
  if (n < 0) die(2, "stdin: %s", strerror(errno));
  return in;
}

static int cmd_exchange(long wait_ms, long want, long drip_ms) {
  buf_t in = read_stdin(), got = {0};
  size_t sent = 0;
  long t0 = now_ms(), next_drip = t0, n = 0;
  int fd = dial(), open = 1, send_failed = 0;
  response_t r;
  while (open && (want == 0 || n < want) && now_ms() - t0 < wait_ms) {
    int sending = sent < in.len && !send_failed && now_ms() >= next_drip;
    struct pollfd p = {fd, (short)(POLLIN | (sending ? POLLOUT : 0)), 0};
    long left = wait_ms - (now_ms() - t0), timeout = drip_ms && sent < in.len && !sending ? next_drip - now_ms() : left;
    poll(&p, 1, (int)(timeout < 0 ? 0 : timeout > left ? left : timeout));
    if (p.revents & POLLOUT) {
      ssize_t w = write(fd, in.data + sent, drip_ms ? 1 : in.len - sent);
      if (w > 0) sent += (size_t)w, next_drip = now_ms() + drip_ms;
      else if (errno != EAGAIN) send_failed = 1; /* the server stopped reading us: read its answer */
    }
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) open = read_some(fd, &got);
    while (take_response(&got, &r)) {
      printf("response %d%s %.300s\n", r.code, r.close ? " close" : "", r.body);
      send_failed |= r.close; /* like any client: no more sending on a connection that is closing */
      free(r.body);
      n++;
    }
  }
  if (got.len > 0) printf("partial response: %zu bytes\n", got.len);
  printf("%s after %ld ms, %zu of %zu bytes sent\n", open ? "open" : "closed", now_ms() - t0, sent, in.len);
  close(fd);
  return 0;
}

/* ---- idle ---- */

typedef struct {
  int fd;
  long opened, closed; /* ms; closed 0 while open */
  int refused;         /* answered 503 */
  buf_t got;
} idle_t;

/* Reads what came on each open connection; the events are counted in *refused and *closed_early. */
static void idle_poll(idle_t *c, int n, long timeout_ms, int *refused, int *closed) {
  struct pollfd *p = calloc((size_t)n, sizeof *p);
  response_t r;
  if (p == NULL) die(2, "out of memory");
  for (int i = 0; i < n; i++) p[i] = (struct pollfd){c[i].closed ? -1 : c[i].fd, POLLIN, 0};
  poll(p, (nfds_t)n, (int)timeout_ms);
  for (int i = 0; i < n; i++) {
    if (c[i].closed || !(p[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
    if (read_some(c[i].fd, &c[i].got)) {
      if (take_response(&c[i].got, &r)) {
        if (r.code != 503 || !r.close || strstr(r.body, "\"error\"") == NULL)
          die(1, "idle connection %d: HTTP %d%s %s (expected 503, Connection: close, a JSON error)", i, r.code,
              r.close ? " close" : "", r.body);
        c[i].refused = 1;
        free(r.body);
      }
      continue;
    }
    if (c[i].got.len > 0) die(1, "idle connection %d: closed after a partial response", i);
    c[i].closed = now_ms();
    close(c[i].fd);
    free(c[i].got.data);
    if (c[i].refused) ++*refused;
    else ++*closed;
  }
  free(p);
}

/* GET /tools on a new connection: its status (503 while the server is full). */
static int normal_request(void) {
  static const char req[] = "GET /tools HTTP/1.1\r\nHost: x\r\n\r\n";
  buf_t got = {0};
  response_t r = {0};
  long t0 = now_ms();
  int fd = dial(), open = 1;
  struct pollfd p = {fd, POLLOUT, 0};
  if (poll(&p, 1, 10000) != 1 || write(fd, req, sizeof req - 1) != (ssize_t)(sizeof req - 1)) die(1, "GET /tools: cannot send");
  p.events = POLLIN;
  while (open && !take_response(&got, &r) && now_ms() - t0 < 10000 && poll(&p, 1, 10000) >= 0) open = read_some(fd, &got);
  close(fd);
  free(got.data);
  free(r.body);
  if (r.code == 0) die(1, "GET /tools: no answer within 10 s");
  return r.code;
}

static int cmd_idle(int n, int limit, long idle_ms) {
  idle_t *c = calloc((size_t)n, sizeof *c);
  int refused = 0, closed = 0, held, code = 0, tries = 0;
  long t0 = now_ms(), deadline = t0 + idle_ms + 30000, t_ok;
  if (c == NULL) die(2, "out of memory");
  for (int i = 0; i < n; i++) { /* reading every 50 connects: refused ones are closed as their 503 comes */
    c[i].fd = dial();
    c[i].opened = now_ms();
    if (i % 50 == 49) idle_poll(c, i + 1, 0, &refused, &closed);
  }
  /* Settled: every connection beyond the limit answered 503 or closed. */
  while (refused + closed < n - limit && now_ms() < deadline) idle_poll(c, n, 100, &refused, &closed);
  held = n - refused - closed;
  for (int i = 0; i < n; i++)
    if (c[i].closed && !c[i].refused && c[i].closed - c[i].opened >= idle_ms)
      die(1, "connection %d closed by the idle timeout before the flood settled: use a longer --idle-timeout", i);
  if (held != limit) die(1, "%d connections held open after the flood, expected %d (%d refused, %d closed)", held, limit, refused, closed);
  if (refused == 0) die(1, "no connection refused with 503 (%d closed unanswered)", closed);
  printf("%d idle connections: %d held, %d refused with 503, %d closed unanswered (evicted, or no descriptor to spare), in %ld ms\n",
         n, held, refused, closed, now_ms() - t0);
  /* A newcomer gets in while they are open: 503 until the oldest held one may be evicted, then 200. */
  while (now_ms() < deadline && (code = normal_request()) == 503) {
    tries++;
    idle_poll(c, n, 20, &refused, &closed);
  }
  t_ok = now_ms();
  idle_poll(c, n, 0, &refused, &closed);
  held = n - refused - closed;
  if (code != 200) die(1, "GET /tools beside the idle connections: HTTP %d", code);
  if (held < limit - 1) die(1, "GET /tools answered only after %d of the %d idle connections closed", limit - held, limit);
  printf("GET /tools answered 200 after %ld ms (%d refusals first) with %d idle connections open\n", t_ok - t0, tries, held);
  /* The idle timeout closes the rest. */
  while (refused + closed < n && now_ms() < deadline) idle_poll(c, n, 100, &refused, &closed);
  if (refused + closed < n) die(1, "%d idle connections still open %ld ms after the flood", n - refused - closed, now_ms() - t0);
  long first = -1, last = 0; /* below: 50 ms allowed for the server's loop clock, read once per iteration */
  int early = 0, timed_out = 0;
  for (int i = 0; i < n; i++) {
    long after = c[i].closed - c[i].opened;
    if (c[i].refused || c[i].closed <= t_ok) continue; /* refused, or evicted before GET /tools got in */
    if (after < idle_ms - 50 && ++early == 1) continue; /* the one evicted to let GET /tools in */
    if (after < idle_ms - 50) die(1, "idle connection %d closed after %ld ms, before the idle timeout (%ld ms)", i, after, idle_ms);
    timed_out++;
    if (first < 0 || after < first) first = after;
    if (after > last) last = after;
  }
  printf("the idle timeout closed the other %d after %ld..%ld ms (--idle-timeout %ld)\n", timed_out, first, last, idle_ms);
  free(c);
  return 0;
}

/* ---- pipeline ---- */

static void add_request(buf_t *out, int i, int unread) {
  char req[2560];
  int n;
  if (i % 2 == 1)
    n = snprintf(req, sizeof req, "GET /pipe/%d HTTP/1.1\r\nHost: x\r\n\r\n", i);
  else if (unread) /* 2 KB a request: more than the socket buffers hold, so the server's refusal to read shows */
    n = snprintf(req, sizeof req, "GET /tools HTTP/1.1\r\nHost: x\r\nX-Pad: %02000d\r\n\r\n", i);
  else {
    char body[128];
    int blen = snprintf(body, sizeof body, "{\"name\":\"memory_store\",\"arguments\":{\"key\":\"pipe:%d\",\"value\":%d}}", i, i);
    n = snprintf(req, sizeof req, "POST /tools/call HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", blen, body);
  }
  buf_add(out, req, (size_t)n);
}

/* Dies unless r is the answer to request i. */
static void check_answer(const response_t *r, int i, int unread) {
  char want[64];
  if (i % 2 == 1) {
    snprintf(want, sizeof want, "/pipe/%d ", i);
    if (r->code != 404 || strstr(r->body, want) == NULL) die(1, "answer %d: HTTP %d %.200s (expected 404 naming %s)", i, r->code, r->body, want);
  } else if (unread) {
    if (r->code != 200 || strstr(r->body, "\"memory_store\"") == NULL) die(1, "answer %d: HTTP %d %.200s (expected the tools)", i, r->code, r->body);
  } else {
    snprintf(want, sizeof want, "\"key\":\"pipe:%d\"", i);
    if (r->code != 200 || strstr(r->body, want) == NULL) die(1, "answer %d: HTTP %d %.200s (expected %s)", i, r->code, r->body, want);
  }
  if (r->close) die(1, "answer %d closes the connection", i);
}

static int cmd_pipeline(int n, int unread) {
  buf_t out = {0}, got = {0};
  size_t sent = 0, stalled_at = 0;
  long t0 = now_ms();
  int fd = dial(), answered = 0, open = 1;
  response_t r;
  for (int i = 0; i < n; i++) add_request(&out, i, unread);
  while (answered < n && open && now_ms() - t0 < 60000) {
    int reading = !unread || sent == out.len || stalled_at > 0;
    struct pollfd p = {fd, (short)((reading ? POLLIN : 0) | (sent < out.len ? POLLOUT : 0)), 0};
    /* unread: when the server stops taking requests (500 ms without progress), it is our turn to read */
    if (poll(&p, 1, reading ? 10000 : 500) == 0 && !reading) stalled_at = sent;
    if (p.revents & POLLOUT) {
      ssize_t w = write(fd, out.data + sent, out.len - sent);
      if (w < 0 && errno != EAGAIN) die(1, "write after %zu bytes: %s", sent, strerror(errno));
      if (w > 0) sent += (size_t)w;
    }
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) open = read_some(fd, &got);
    while (take_response(&got, &r)) {
      check_answer(&r, answered++, unread);
      free(r.body);
    }
  }
  if (answered < n) die(1, "%d of %d pipelined requests answered (connection %s)", answered, n, open ? "open" : "closed");
  printf("%d pipelined requests (%s) answered in order in %ld ms", n, unread ? "unread" : "mixed", now_ms() - t0);
  if (stalled_at) printf("; the server stopped reading after %zu of %zu request bytes", stalled_at, out.len);
  printf("\n");
  close(fd);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 3 || (port = atoi(argv[2])) <= 0) die(2, "usage: hostile_client exchange|idle|pipeline PORT ...");
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (strcmp(argv[1], "exchange") == 0 && argc >= 4)
    return cmd_exchange(atol(argv[3]), argc > 4 ? atol(argv[4]) : 0, argc > 5 ? atol(argv[5]) : 0);
  if (strcmp(argv[1], "idle") == 0 && argc == 6) return cmd_idle(atoi(argv[3]), atoi(argv[4]), atol(argv[5]));
  if (strcmp(argv[1], "pipeline") == 0 && argc == 5) return cmd_pipeline(atoi(argv[3]), strcmp(argv[4], "unread") == 0);
  die(2, "usage: hostile_client exchange PORT WAIT_MS [N [DRIP_MS]] | idle PORT N LIMIT IDLE_MS | pipeline PORT N mixed|unread");
  return 2;
}
