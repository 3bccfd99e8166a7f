/*
 * tools/mcp/main.c — engram-mcp, engram's memory served over the Model Context Protocol: the command line, the
 * manager (configured from the same JSON file engram_manager_configure reads; a single cache source when none
 * is given, as examples/server), and the start and stop of one transport around the shared dispatcher.
 *
 *   engram-mcp [--config FILE]                       stdio: JSON-RPC lines on stdin/stdout; ends at EOF
 *   engram-mcp [--config FILE] --http ADDR:PORT      Streamable HTTP at http://ADDR:PORT/mcp
 *       [--token-env NAME]     require "Authorization: Bearer $NAME" (the token is read from that variable)
 *       [--allow-origin URL]   accept this Origin beside loopback ones (repeatable)
 *       [--max-body BYTES]     larger request bodies get 413 (default 4 MiB; also the stdio line limit)
 *       [--call-timeout MS]    deadline of every tool call (default 30000)
 *       [--idle-timeout MS] [--request-timeout MS] [--max-connections N]   HTTP limits (60000, 30000, 1024)
 *       [--tools SETS]         the tools offered: all (default: the six memory tools and the conversation
 *                              tools), memory, threads, or memory,threads
 *
 * stdout carries protocol messages only (stdio); every log line goes to stderr. SIGINT / SIGTERM stop the
 * transport, close the manager (pending calls end ENGRAM_ECANCELED) and exit 0; at stdin's EOF the process
 * waits for its pending calls to be answered, then closes the manager and exits 0.
 */
#include "transport.h"

#include <engram/tools.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ORIGINS 16

static struct {
  const char *config, *http, *token_env;
  const char *origins[MAX_ORIGINS + 1];
  int n_origins;
  size_t max_body;
  uint32_t call_ms;
  unsigned tool_sets;
  unsigned idle_ms, request_ms, max_connections;
} opt = {NULL, NULL, NULL, {NULL}, 0, 4u << 20, 30000, ENGRAM_TOOLS_ALL, 60000, 30000, 1024};

static uv_loop_t *loop;
static engram_manager_t *mgr;
static mcp_server_t *server;
static uv_signal_t sig_term, sig_int;
static int stopping, exit_code;

static void on_manager_closed(int status, const engram_reply_t *reply, void *ud) {
  (void)ud;
  if (status != 0) {
    fprintf(stderr, "engram-mcp: closing the manager: %s %s\n", engram_err_name(status), reply->message);
    exit_code = 1;
  }
  uv_close((uv_handle_t *)&sig_term, NULL);
  uv_close((uv_handle_t *)&sig_int, NULL);
}

static void stop(void) {
  if (stopping) return;
  stopping = 1;
  if (opt.http) mcp_http_stop();
  else mcp_stdio_stop();
  if (engram_manager_close(mgr, on_manager_closed, NULL) != 0) {
    uv_close((uv_handle_t *)&sig_term, NULL);
    uv_close((uv_handle_t *)&sig_int, NULL);
  }
}

static void on_signal(uv_signal_t *h, int signum) {
  (void)h;
  fprintf(stderr, "engram-mcp: signal %d: stopping\n", signum);
  stop();
}

static void on_stdin_done(void *ud) {
  (void)ud;
  stop();
}

/* "ADDR:PORT", "[v6]:PORT" or ":PORT" (loopback). */
static int split_host_port(const char *s, char *host, size_t cap, int *port) {
  const char *colon = strrchr(s, ':');
  char *end;
  long p;
  size_t hl;
  if (colon == NULL) return -1;
  p = strtol(colon + 1, &end, 10);
  if (colon[1] == '\0' || *end != '\0' || p < 0 || p > 65535) return -1;
  hl = (size_t)(colon - s);
  if (hl >= 2 && s[0] == '[' && s[hl - 1] == ']') s++, hl -= 2;
  if (hl == 0) s = "127.0.0.1", hl = strlen(s);
  if (hl >= cap) return -1;
  memcpy(host, s, hl);
  host[hl] = '\0';
  *port = (int)p;
  return 0;
}

static void on_configured(int status, const engram_reply_t *reply, void *ud) {
  int rc;
  (void)ud;
  if (status != 0) {
    fprintf(stderr, "engram-mcp: configuration failed: %s\n", reply->message);
    exit_code = 1;
    return stop();
  }
  if ((server = mcp_server_new(mgr, opt.call_ms)) == NULL || mcp_server_set_tools(server, opt.tool_sets) != 0) {
    fprintf(stderr, "engram-mcp: out of memory\n");
    exit_code = 1;
    return stop();
  }
  if (opt.http) {
    mcp_http_options_t h = {0};
    char host[256];
    h.max_body = opt.max_body;
    h.origins = opt.origins;
    h.idle_ms = opt.idle_ms;
    h.header_ms = opt.request_ms;
    h.max_connections = opt.max_connections;
    h.token = opt.token_env ? getenv(opt.token_env) : NULL;
    if (opt.token_env && (h.token == NULL || h.token[0] == '\0')) {
      fprintf(stderr, "engram-mcp: --token-env %s: the variable is unset or empty\n", opt.token_env);
      exit_code = 1;
      return stop();
    }
    split_host_port(opt.http, host, sizeof host, &h.port); /* checked in main */
    h.host = host;
    if ((rc = mcp_http_start(loop, server, &h)) != 0) {
      fprintf(stderr, "engram-mcp: cannot serve http on %s: %s\n", opt.http, uv_strerror(rc));
      exit_code = 1;
      return stop();
    }
  } else if ((rc = mcp_stdio_start(loop, server, opt.max_body, on_stdin_done, NULL)) != 0) {
    fprintf(stderr, "engram-mcp: stdio: %s\n", uv_strerror(rc));
    exit_code = 1;
    return stop();
  }
}

static char *read_file(const char *path) {
  FILE *f = fopen(path, "rb");
  char *buf = NULL;
  long n;
  if (f == NULL) return NULL;
  if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
      (buf = malloc((size_t)n + 1)) != NULL) {
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

static int usage(void) {
  fprintf(stderr, "usage: engram-mcp [--config FILE] [--http ADDR:PORT [--token-env NAME] [--allow-origin URL]...]\n"
                  "                  [--max-body BYTES] [--call-timeout MS] [--tools all|memory|threads|memory,threads]\n"
                  "                  [--idle-timeout MS] [--request-timeout MS] [--max-connections N]\n"
                  "  stdio by default (newline-delimited JSON-RPC); --http serves Streamable HTTP at /mcp\n");
  return 2;
}

static int parse_args(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    char *end;
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) return -1;
    if (v == NULL) return -1;
    i++;
    if (strcmp(a, "--config") == 0) opt.config = v;
    else if (strcmp(a, "--http") == 0) {
      char host[256];
      int port;
      if (split_host_port(v, host, sizeof host, &port) != 0) return -1;
      opt.http = v;
    } else if (strcmp(a, "--token-env") == 0) opt.token_env = v;
    else if (strcmp(a, "--allow-origin") == 0) {
      if (opt.n_origins == MAX_ORIGINS) return -1;
      opt.origins[opt.n_origins++] = v;
    } else if (strcmp(a, "--max-body") == 0) {
      unsigned long long n = strtoull(v, &end, 10);
      if (*v == '\0' || *end != '\0' || n < 64 || n > (1ull << 30)) return -1;
      opt.max_body = (size_t)n;
    } else if (strcmp(a, "--call-timeout") == 0) {
      unsigned long n = strtoul(v, &end, 10);
      if (*v == '\0' || *end != '\0' || n > 86400000ul) return -1;
      opt.call_ms = (uint32_t)n;
    } else if (strcmp(a, "--idle-timeout") == 0 || strcmp(a, "--request-timeout") == 0 ||
               strcmp(a, "--max-connections") == 0) {
      unsigned long n = strtoul(v, &end, 10);
      if (*v == '\0' || *end != '\0' || n < 1 || n > 86400000ul) return -1;
      if (a[2] == 'i') opt.idle_ms = (unsigned)n;
      else if (a[2] == 'r') opt.request_ms = (unsigned)n;
      else if (n <= 1000000) opt.max_connections = (unsigned)n;
      else return -1;
    } else if (strcmp(a, "--tools") == 0) {
      if (strcmp(v, "all") == 0 || strcmp(v, "memory,threads") == 0 || strcmp(v, "threads,memory") == 0)
        opt.tool_sets = ENGRAM_TOOLS_ALL;
      else if (strcmp(v, "memory") == 0) opt.tool_sets = ENGRAM_TOOLS_MEMORY;
      else if (strcmp(v, "threads") == 0) opt.tool_sets = ENGRAM_TOOLS_THREADS;
      else return -1;
    } else return -1;
  }
  return 0;
}

int main(int argc, char **argv) {
  char *config;
  int rc;
  if (parse_args(argc, argv) != 0) return usage();
  signal(SIGPIPE, SIG_IGN);
  if (opt.config == NULL) {
    config = strdup("{\"sources\": [{\"name\": \"cache\", \"type\": \"cache\", \"description\": \"Fast temporary "
                    "cache for session data\", \"default\": true}]}");
  } else if ((config = read_file(opt.config)) == NULL) {
    fprintf(stderr, "engram-mcp: cannot read %s\n", opt.config);
    return 1;
  }
  loop = uv_default_loop();
  if ((rc = engram_manager_new(&mgr, loop, NULL)) != 0) {
    fprintf(stderr, "engram-mcp: engram_manager_new: %s\n", engram_err_name(rc));
    free(config);
    return 1;
  }
  uv_signal_init(loop, &sig_term);
  uv_signal_init(loop, &sig_int);
  uv_signal_start(&sig_term, on_signal, SIGTERM);
  uv_signal_start(&sig_int, on_signal, SIGINT);
  if ((rc = engram_manager_configure(mgr, config, on_configured, NULL)) != 0) {
    fprintf(stderr, "engram-mcp: configuration refused: %s\n", engram_last_error());
    free(config);
    exit_code = 1;
    stop();
  } else {
    free(config);
  }
  uv_run(loop, UV_RUN_DEFAULT);
  rc = uv_loop_close(loop);
  mcp_server_free(server);
  if (rc != 0) {
    fprintf(stderr, "engram-mcp: handles left open at exit\n");
    return 1;
  }
  return exit_code;
}
