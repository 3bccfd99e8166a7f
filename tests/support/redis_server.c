/*
 * redis_server.c — starts and stops a real redis-server for tests (see redis_server.h), and the redis source's
 * entry in the conformance suite: the server starts once per test program, and every test gets a unique key
 * prefix so that tests never see each other's items.
 *
 * Cleanup must happen however the program ends: atexit for a normal exit (cmocka reports failures and
 * returns), async-signal-safe handlers (kill, unlink, rmdir only) for SIGINT/SIGTERM/SIGHUP/SIGABRT, and
 * PR_SET_PDEATHSIG in the child so that the server dies with the test even after SIGKILL.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "support/harness.h"
#include "support/redis_server.h"

static volatile pid_t server_pid = -1;
static int server_port;
static char dir_path[256];
static char log_path[300];
static int hooks_installed;

static void remove_dir(void) {
  if (dir_path[0] == '\0') return;
  unlink(log_path);
  rmdir(dir_path);
}

static void cleanup_at_exit(void) {
  if (server_pid > 0) {
    kill(server_pid, SIGKILL);
    waitpid(server_pid, NULL, 0);
    server_pid = -1;
  }
  remove_dir();
  dir_path[0] = '\0';
}

static void on_signal(int sig) {
  /* Only async-signal-safe calls here. */
  if (server_pid > 0) kill(server_pid, SIGKILL);
  if (dir_path[0] != '\0') {
    unlink(log_path);
    rmdir(dir_path);
  }
  signal(sig, SIG_DFL);
  raise(sig);
}

static void install_hooks(void) {
  if (hooks_installed) return;
  hooks_installed = 1;
  atexit(cleanup_at_exit);
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  signal(SIGHUP, on_signal);
  signal(SIGABRT, on_signal);
}

static int free_port(void) {
  struct sockaddr_in a;
  socklen_t len = sizeof a;
  int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;
  if (fd < 0) return -1;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(fd, (struct sockaddr *)&a, &len) == 0)
    port = ntohs(a.sin_port);
  close(fd);
  return port;
}

static int ping(int port) {
  struct timeval tv = {0, 200000};
  redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
  redisReply *r;
  int ok = 0;
  if (c == NULL) return 0;
  if (!c->err && (r = redisCommand(c, "PING")) != NULL) {
    ok = r->type == REDIS_REPLY_STATUS && strcmp(r->str, "PONG") == 0;
    freeReplyObject(r);
  }
  redisFree(c);
  return ok;
}

static pid_t spawn(int port) {
  char portbuf[16];
  pid_t pid;
  snprintf(portbuf, sizeof portbuf, "%d", port);
  pid = fork();
  if (pid == 0) {
    int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0600);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
      close(fd);
    }
    if (getenv("ENGRAM_TEST_REDIS_DURABLE") != NULL) /* the soak: an acknowledged write survives SIGKILL */
      execlp("redis-server", "redis-server", "--port", portbuf, "--bind", "127.0.0.1", "--save", "", "--appendonly",
             "yes", "--appendfsync", "everysec", "--dir", dir_path, "--daemonize", "no", "--databases", "16",
             (char *)NULL);
    else
      execlp("redis-server", "redis-server", "--port", portbuf, "--bind", "127.0.0.1", "--save", "", "--appendonly",
             "no", "--dir", dir_path, "--daemonize", "no", "--databases", "16", (char *)NULL);
    _exit(127);
  }
  return pid;
}

/* Starts redis-server on port and waits until it answers PING (5 s). */
static int launch(int port) {
  int i, status;
  pid_t pid = spawn(port);
  if (pid < 0) return -1;
  server_pid = pid;
  for (i = 0; i < 500; i++) {
    if (waitpid(pid, &status, WNOHANG) == pid) {
      server_pid = -1;
      return -1; /* exited: port taken, or no redis-server */
    }
    if (ping(port)) return 0;
    sleep_ms(10);
  }
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
  server_pid = -1;
  return -1;
}

int redis_server_start(int port) {
  int attempt;
  install_hooks();
  if (server_pid > 0) return server_port;
  if (dir_path[0] == '\0') {
    snprintf(dir_path, sizeof dir_path, "/tmp/engram-redis-XXXXXX");
    if (mkdtemp(dir_path) == NULL) {
      fprintf(stderr, "redis_server: mkdtemp: %s\n", strerror(errno));
      dir_path[0] = '\0';
      return -1;
    }
    snprintf(log_path, sizeof log_path, "%s/redis.log", dir_path);
  }
  for (attempt = 0; attempt < 5; attempt++) {
    int p = port ? port : free_port();
    if (p > 0 && launch(p) == 0) {
      server_port = p;
      return p;
    }
    if (port) break;
  }
  fprintf(stderr, "redis_server: could not start redis-server (see %s)\n", log_path);
  return -1;
}

int redis_server_port(void) { return server_port; }

int redis_server_pid(void) { return server_pid > 0 ? (int)server_pid : -1; }

void redis_server_kill9(void) {
  if (server_pid <= 0) return;
  kill(server_pid, SIGKILL);
  waitpid(server_pid, NULL, 0);
  server_pid = -1;
}

int redis_server_restart(void) {
  int i;
  if (server_pid > 0) return 0;
  /* The port may need a moment after a SIGKILL. */
  for (i = 0; i < 50; i++) {
    if (launch(server_port) == 0) return 0;
    sleep_ms(20);
  }
  return -1;
}

void redis_server_stop(void) {
  if (server_pid > 0) {
    int i;
    kill(server_pid, SIGTERM);
    for (i = 0; i < 300 && waitpid(server_pid, NULL, WNOHANG) != server_pid; i++) sleep_ms(10);
    if (i == 300) {
      kill(server_pid, SIGKILL);
      waitpid(server_pid, NULL, 0);
    }
    server_pid = -1;
  }
  remove_dir();
  dir_path[0] = '\0';
}

int redis_cli(char *out, size_t outlen, ...) {
  const char *argv[64];
  char portbuf[16];
  int n = 0, pipefd[2], status;
  size_t got = 0;
  ssize_t k;
  pid_t pid;
  va_list ap;
  snprintf(portbuf, sizeof portbuf, "%d", server_port);
  argv[n++] = "redis-cli";
  argv[n++] = "-h";
  argv[n++] = "127.0.0.1";
  argv[n++] = "-p";
  argv[n++] = portbuf;
  va_start(ap, outlen);
  while (n < 63 && (argv[n] = va_arg(ap, const char *)) != NULL) n++;
  va_end(ap);
  argv[n] = NULL;
  if (pipe(pipefd) != 0) return -1;
  pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    dup2(pipefd[1], 1);
    close(pipefd[0]);
    close(pipefd[1]);
    execvp("redis-cli", (char *const *)argv);
    _exit(127);
  }
  close(pipefd[1]);
  while (got < outlen - 1 && (k = read(pipefd[0], out + got, outlen - 1 - got)) > 0) got += (size_t)k;
  {
    char sink[256];
    while (read(pipefd[0], sink, sizeof sink) > 0) {
    } /* the rest does not fit: drain it so that redis-cli can exit */
  }
  close(pipefd[0]);
  out[got] = '\0';
  while (got > 0 && (out[got - 1] == '\n' || out[got - 1] == '\r')) out[--got] = '\0';
  if (waitpid(pid, &status, 0) != pid) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* ---- The conformance entry ---- */

static int conf_setup(void) { return redis_server_start(0) > 0 ? 0 : -1; }

static void conf_teardown(void) { redis_server_stop(); }

static char *conf_options(void) {
  char buf[256];
  snprintf(buf, sizeof buf, "{\"host\": \"127.0.0.1\", \"port\": %d, \"prefix\": \"%s:\", \"connect_timeout_ms\": %d}", redis_server_port(),
           unique_name("conf"), REDIS_TEST_CONNECT_TIMEOUT_MS);
  return engram_strdup(buf);
}

const conf_source_t conf_source_redis = {"redis", &engram_source_redis, conf_setup, conf_teardown, conf_options};

/* "redis-required-only": Redis with only the required methods. Its calls are truly concurrent (pipelined on
 * one connection), so 100 emulated updates of one key all read the same version at once: the case the core's
 * per-key serialization of emulated updates (src/actor/emulate.c) exists for. */
static engram_source_vtable_t required_vt;
static int required_setup(void) {
  conf_required_only(&required_vt, &engram_source_redis, "redis-required-only");
  return conf_setup();
}

const conf_source_t conf_source_redis_required = {"redis-required-only", &required_vt, required_setup, conf_teardown,
                                                  conf_options};
