/*
 * tools/mcp/stdio.c — the stdio transport of engram-mcp, the one MCP hosts (Claude Desktop, Claude Code,
 * Cursor, VS Code) start by default: newline-delimited JSON-RPC messages on stdin, answers on stdout, one per
 * line, and nothing else on stdout (logs go to stderr).
 *
 * stdin is read by a thread of its own with plain read(2), so it works whatever stdin is (a pipe, a file, a
 * terminal) and a message may arrive split across any number of reads. The thread cuts lines and queues them
 * (at most MAX_QUEUED lines and MAX_QUEUED_BYTES: then it waits, so memory stays bounded when the client
 * writes faster than the tools answer; with MAX_OUTSTANDING messages at the dispatcher the loop stops taking
 * lines, so a flood of calls slows the client down instead of overflowing a source's mailbox); the loop thread takes them through a uv_async and hands each to the dispatcher. Answers are
 * written to stdout with blocking writes on the loop thread, in the order they are ready (tool calls may
 * finish out of order; JSON-RPC ids pair them up). At EOF — even in the middle of a message, whose fragment is
 * dropped — the transport waits until every pending call is answered, then reports done.
 */
#include "transport.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_QUEUED 256                /* lines read and not yet handled */
#define MAX_QUEUED_BYTES (16u << 20) /* their bytes (one line over it is still let through) */
#define MAX_OUTSTANDING 1024         /* messages with the dispatcher: beyond, lines wait in the queue */

typedef struct line_s {
  struct line_s *next;
  int too_long; /* the line was over max_message bytes: data is empty */
  size_t len;
  char data[];
} line_t;

static struct {
  uv_loop_t *loop;
  mcp_server_t *server;
  mcp_session_t *sess;
  size_t max_message;
  void (*done)(void *);
  void *done_ud;
  uv_async_t async;
  pthread_t reader;
  pthread_mutex_t lock;
  pthread_cond_t room;
  line_t *head, *tail; /* guarded by lock */
  size_t queued;       /* guarded by lock */
  size_t queued_bytes; /* guarded by lock */
  int eof;             /* guarded by lock: the reader saw EOF (or an error) */
  int closed;          /* guarded by lock: the async handle is closed, the reader must not touch it */
  int started, stopped, reported, out_broken;
  size_t outstanding; /* messages handed to the dispatcher and not answered yet */
} io;

/* ---- Writing ---- */

static void write_all(const char *p, size_t n) {
  while (n > 0 && !io.out_broken) {
    ssize_t w = write(STDOUT_FILENO, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      fprintf(stderr, "engram-mcp: stdout: %s: answers are dropped from now on\n", strerror(errno));
      io.out_broken = 1;
      return;
    }
    p += w;
    n -= (size_t)w;
  }
}

static void maybe_done(void) {
  int eof;
  pthread_mutex_lock(&io.lock);
  eof = io.eof && io.head == NULL;
  pthread_mutex_unlock(&io.lock);
  if (eof && io.outstanding == 0 && !io.reported && !io.stopped) {
    io.reported = 1;
    io.done(io.done_ud);
  }
}

static void on_answer(void *ud, char *json, mcp_answer_kind_t kind) {
  (void)ud, (void)kind;
  if (io.outstanding-- == MAX_OUTSTANDING && !io.stopped) uv_async_send(&io.async); /* room again: drain */
  if (json != NULL && !io.stopped) {
    size_t n = strlen(json);
    json[n] = '\n'; /* the NUL becomes the delimiter: one write per answer */
    write_all(json, n + 1);
  }
  free(json);
  if (!io.stopped) maybe_done();
}

/* ---- The loop side ---- */

static int blank(const char *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r') return 0;
  return 1;
}

static void on_async(uv_async_t *h) {
  (void)h;
  for (;;) {
    line_t *l;
    if (io.outstanding >= MAX_OUTSTANDING) return; /* on_answer wakes us when there is room */
    pthread_mutex_lock(&io.lock);
    if ((l = io.head) != NULL) {
      io.head = l->next;
      if (io.head == NULL) io.tail = NULL;
      io.queued--;
      io.queued_bytes -= l->len;
      pthread_cond_signal(&io.room);
    }
    pthread_mutex_unlock(&io.lock);
    if (l == NULL) break;
    if (io.stopped) {
      free(l);
      continue;
    }
    if (l->too_long) {
      char msg[160];
      int n = snprintf(msg, sizeof msg,
                       "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32600,\"message\":\"Invalid Request: "
                       "a message over %zu bytes\"}}\n", io.max_message);
      write_all(msg, (size_t)n);
    } else if (!blank(l->data, l->len)) {
      io.outstanding++;
      mcp_handle(io.sess, l->data, l->len, on_answer, NULL);
    }
    free(l);
  }
  maybe_done();
}

/* ---- The reader thread ---- */

static void push(line_t *l) {
  pthread_mutex_lock(&io.lock);
  while ((io.queued >= MAX_QUEUED || (io.queued > 0 && io.queued_bytes + l->len > MAX_QUEUED_BYTES)) && !io.closed)
    pthread_cond_wait(&io.room, &io.lock);
  if (io.closed) {
    pthread_mutex_unlock(&io.lock);
    free(l);
    return;
  }
  if (io.tail) io.tail->next = l;
  else io.head = l;
  io.tail = l;
  io.queued++;
  io.queued_bytes += l->len;
  uv_async_send(&io.async);
  pthread_mutex_unlock(&io.lock);
}

static line_t *make_line(const char *p, size_t n, int too_long) {
  line_t *l = malloc(sizeof *l + n + 1);
  if (l == NULL) return NULL;
  l->next = NULL;
  l->too_long = too_long;
  l->len = n;
  memcpy(l->data, p, n);
  l->data[n] = '\0';
  return l;
}

static void *reader(void *arg) {
  size_t cap = 65536, len = 0;
  char *buf = malloc(cap), chunk[65536];
  int skipping = 0; /* inside a line that is too long: drop until its newline */
  (void)arg;
  while (buf != NULL) {
    ssize_t n = read(STDIN_FILENO, chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n < 0) fprintf(stderr, "engram-mcp: stdin: %s\n", strerror(errno));
      if (len > 0 && !blank(buf, len)) fprintf(stderr, "engram-mcp: stdin closed inside a message: %zu bytes dropped\n", len);
      break;
    }
    for (ssize_t i = 0; i < n;) {
      char *nl = memchr(chunk + i, '\n', (size_t)(n - i));
      size_t take = nl ? (size_t)(nl - (chunk + i)) : (size_t)(n - i);
      if (!skipping && len + take > io.max_message) { /* the line is too long: say so once, drop the rest */
        line_t *l = make_line("", 0, 1);
        if (l) push(l);
        skipping = 1;
        len = 0;
      }
      if (!skipping) {
        if (len + take > cap) {
          char *b;
          while (cap < len + take) cap *= 2;
          if ((b = realloc(buf, cap)) == NULL) {
            fprintf(stderr, "engram-mcp: out of memory reading stdin\n");
            goto out;
          }
          buf = b;
        }
        memcpy(buf + len, chunk + i, take);
        len += take;
      }
      i += (ssize_t)take;
      if (nl) { /* the line is complete */
        i++;
        if (!skipping) {
          line_t *l = make_line(buf, len, 0);
          if (l == NULL) {
            fprintf(stderr, "engram-mcp: out of memory reading stdin\n");
            goto out;
          }
          push(l);
        }
        skipping = 0;
        len = 0;
        if (cap > 1 << 20) { /* do not keep a large buffer after a large message */
          char *b = realloc(buf, 65536);
          if (b) buf = b, cap = 65536;
        }
      }
    }
  }
out:
  free(buf);
  pthread_mutex_lock(&io.lock);
  io.eof = 1;
  if (!io.closed) uv_async_send(&io.async);
  pthread_mutex_unlock(&io.lock);
  return NULL;
}

int mcp_stdio_start(uv_loop_t *loop, mcp_server_t *s, size_t max_message, void (*done)(void *ud), void *ud) {
  int rc;
  io.loop = loop;
  io.server = s;
  io.max_message = max_message;
  io.done = done;
  io.done_ud = ud;
  if ((io.sess = mcp_session_new(s)) == NULL) return UV_ENOMEM;
  pthread_mutex_init(&io.lock, NULL);
  pthread_cond_init(&io.room, NULL);
  if ((rc = uv_async_init(loop, &io.async, on_async)) != 0) return rc;
  if ((rc = pthread_create(&io.reader, NULL, reader, NULL)) != 0) {
    uv_close((uv_handle_t *)&io.async, NULL);
    return -rc;
  }
  io.started = 1;
  return 0;
}

void mcp_stdio_stop(void) {
  int eof;
  line_t *l;
  if (!io.started || io.stopped) return;
  io.stopped = 1;
  pthread_mutex_lock(&io.lock);
  io.closed = 1;
  eof = io.eof;
  while ((l = io.head) != NULL) {
    io.head = l->next;
    free(l);
  }
  io.tail = NULL;
  pthread_cond_signal(&io.room);
  pthread_mutex_unlock(&io.lock);
  uv_close((uv_handle_t *)&io.async, NULL);
  /* At EOF the reader has ended: join it. Else it may sit in read(2) until the process exits: let it go (it
   * touches nothing once closed is set). */
  if (eof) pthread_join(io.reader, NULL);
  else pthread_detach(io.reader);
  mcp_session_free(io.sess);
  io.sess = NULL;
}
