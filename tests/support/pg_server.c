/*
 * pg_server.c — the PostgreSQL server the tests run against (see pg_server.h), and the postgres entry of the
 * conformance list.
 *
 * We run as root and initdb refuses root, so initdb and pg_ctl run in forked children that drop to the postgres
 * user, in a temporary directory owned by it. The program becomes a child subreaper, so the postmaster (and,
 * after a kill -9, its orphaned backends) are its children and can be reaped: no zombie keeps the old PID alive
 * when the server starts again. Cleanup happens three ways: pg_server_stop at the end of a run, an atexit
 * handler, and a watchdog process that waits on a pipe and, when the test program is gone for any reason
 * (a crash, a signal, kill -9), stops the server and removes the directory.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "support/pg_server.h"

#define PG_BIN "/usr/lib/postgresql/15/bin"

static char dir[128];      /* the temporary directory: data/ and the socket live in it */
static char datadir[160];
static char conninfo[200];
static int port;
static int started;
static int watchdog_fd = -1;
static uid_t pg_uid;
static gid_t pg_gid;

/* ---- Running programs ---- */

/* Runs argv (as the postgres user when as_pg and we are root), stdout/stderr to log (or captured into out when
 * out != NULL). Returns the exit status, or -1. */
static int run(char *const argv[], int as_pg, const char *log, char *out, size_t outlen) {
  int pfd[2] = {-1, -1}, status;
  pid_t pid;
  if (out != NULL && pipe(pfd) != 0) return -1;
  pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    int fd = -1;
    if (out != NULL) {
      dup2(pfd[1], 1);
      close(pfd[0]);
      close(pfd[1]);
      fd = open(log ? log : "/dev/null", O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (fd >= 0) dup2(fd, 2);
    } else {
      fd = open(log ? log : "/dev/null", O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
      }
    }
    if (as_pg && geteuid() == 0) {
      if (setgroups(0, NULL) != 0 || setgid(pg_gid) != 0 || setuid(pg_uid) != 0) _exit(126);
    }
    if (chdir("/tmp") != 0) _exit(126);
    execv(argv[0], argv);
    _exit(127);
  }
  if (out != NULL) {
    size_t n = 0;
    ssize_t r;
    close(pfd[1]);
    while ((r = read(pfd[0], out + n, n + 1 < outlen ? outlen - n - 1 : 0)) > 0) n += (size_t)r;
    if (r != 0) { /* buffer full: drain the rest */
      char sink[256];
      while (read(pfd[0], sink, sizeof sink) > 0) {
      }
    }
    close(pfd[0]);
    while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == '\r')) n--;
    if (outlen) out[n < outlen ? n : outlen - 1] = '\0';
  }
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int pg_ctl_start(void) {
  char opts[300], log[200];
  char *argv[] = {PG_BIN "/pg_ctl", "-D", datadir, "-o", opts, "-l", log, "-w", "-t", "60", "start", NULL};
  snprintf(opts, sizeof opts, "-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200", port, dir);
  snprintf(log, sizeof log, "%s/server.log", dir);
  return run(argv, 1, NULL, NULL, 0);
}

static void rm_rf(const char *path) {
  char *argv[] = {"/bin/rm", "-rf", (char *)path, NULL};
  run(argv, 0, NULL, NULL, 0);
}

static void reap(void) {
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

/* ---- Watchdog ---- */

static void start_watchdog(void) {
  int p[2];
  pid_t pid;
  if (pipe(p) != 0) return;
  pid = fork();
  if (pid < 0) {
    close(p[0]);
    close(p[1]);
    return;
  }
  if (pid == 0) {
    char c;
    int fd;
    setsid();
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    close(p[1]);
    for (fd = 3; fd < 1024; fd++)
      if (fd != p[0]) close(fd);
    while (read(p[0], &c, 1) > 0 || errno == EINTR) {
    }
    if (access(datadir, F_OK) == 0) {
      char *stop[] = {PG_BIN "/pg_ctl", "-D", datadir, "-m", "immediate", "-w", "-t", "30", "stop", NULL};
      run(stop, 1, NULL, NULL, 0);
    }
    if (access(dir, F_OK) == 0) rm_rf(dir);
    _exit(0);
  }
  close(p[0]);
  fcntl(p[1], F_SETFD, FD_CLOEXEC);
  watchdog_fd = p[1];
}

/* ---- Start and stop ---- */

static int free_port(void) {
  struct sockaddr_in a;
  socklen_t len = sizeof a;
  int s = socket(AF_INET, SOCK_STREAM, 0), p = -1;
  if (s < 0) return -1;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(s, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(s, (struct sockaddr *)&a, &len) == 0)
    p = ntohs(a.sin_port);
  close(s);
  return p;
}

static int write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  if (f == NULL) return -1;
  fputs(text, f);
  fclose(f);
  if (geteuid() == 0 && chown(path, pg_uid, pg_gid) != 0) return -1;
  return 0;
}

int pg_server_start(void) {
  static int registered;
  struct passwd *pw;
  char log[200], path[200], out[256];
  int attempt;
  if (started) return 0;
  if ((pw = getpwnam("postgres")) == NULL && geteuid() == 0) {
    fprintf(stderr, "pg_server: no postgres user\n");
    return -1;
  }
  pg_uid = pw ? pw->pw_uid : geteuid();
  pg_gid = pw ? pw->pw_gid : getegid();
  prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
  snprintf(dir, sizeof dir, "/tmp/engram_pg_XXXXXX");
  if (mkdtemp(dir) == NULL) {
    dir[0] = '\0';
    return -1;
  }
  snprintf(datadir, sizeof datadir, "%s/data", dir);
  if (geteuid() == 0 && chown(dir, pg_uid, pg_gid) != 0) goto fail;
  chmod(dir, 0700);
  if (!registered) {
    registered = 1;
    atexit(pg_server_stop);
  }
  start_watchdog();
  snprintf(log, sizeof log, "%s/initdb.log", dir);
  {
    char *argv[] = {PG_BIN "/initdb", "-D", datadir, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync", NULL};
    if (run(argv, 1, log, NULL, 0) != 0) {
      fprintf(stderr, "pg_server: initdb failed (see %s)\n", log);
      goto fail;
    }
  }
  snprintf(path, sizeof path, "%s/pg_hba.conf", datadir);
  if (write_file(path, "local all all trust\n"
                       "host all " PG_SERVER_PW_USER " 127.0.0.1/32 scram-sha-256\n"
                       "host all all 127.0.0.1/32 trust\n") != 0)
    goto fail;
  /* A port free a moment ago can be taken before the server binds it (other test programs run at once): up to
   * five ports are tried. */
  for (attempt = 0;; attempt++) {
    if ((port = free_port()) <= 0) goto fail;
    if (pg_ctl_start() == 0) break;
    if (attempt == 4) {
      fprintf(stderr, "pg_server: pg_ctl start failed (see %s/server.log)\n", dir);
      goto fail;
    }
  }
  started = 1;
  snprintf(conninfo, sizeof conninfo, "host=127.0.0.1 port=%d user=postgres dbname=postgres", port);
  if (pg_server_psql("CREATE ROLE " PG_SERVER_PW_USER " LOGIN SUPERUSER PASSWORD '" PG_SERVER_PW_PASS "'", out, sizeof out) != 0) {
    fprintf(stderr, "pg_server: cannot create the password role: %s\n", out);
    pg_server_stop();
    return -1;
  }
  return 0;
fail:
  if (dir[0]) rm_rf(dir);
  dir[0] = '\0';
  return -1;
}

void pg_server_stop(void) {
  if (started) {
    char *argv[] = {PG_BIN "/pg_ctl", "-D", datadir, "-m", "immediate", "-w", "-t", "30", "stop", NULL};
    run(argv, 1, NULL, NULL, 0);
    started = 0;
  }
  if (dir[0] != '\0') {
    rm_rf(dir);
    dir[0] = '\0';
  }
  reap();
  if (watchdog_fd >= 0) {
    close(watchdog_fd); /* the watchdog finds nothing left to do and exits */
    watchdog_fd = -1;
  }
}

int pg_server_port(void) { return port; }
const char *pg_server_conninfo(void) { return conninfo; }

int pg_server_psql(const char *sql, char *out, size_t outlen) {
  char p[16];
  char buf[8192];
  char *argv[] = {PG_BIN "/psql", "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", p,
                  "-U", "postgres", "-d", "postgres", "-c", (char *)sql, NULL};
  snprintf(p, sizeof p, "%d", port);
  if (out == NULL) {
    out = buf;
    outlen = sizeof buf;
  }
  return run(argv, 0, NULL, out, outlen);
}

/* ---- Faults ---- */

static pid_t postmaster_pid(void) {
  char path[200], line[64];
  FILE *f;
  snprintf(path, sizeof path, "%s/postmaster.pid", datadir);
  if ((f = fopen(path, "r")) == NULL) return -1;
  if (fgets(line, sizeof line, f) == NULL) line[0] = '\0';
  fclose(f);
  return (pid_t)atoi(line);
}

/* The parent pid and state of pid, from /proc. 0 or -1. */
static int proc_stat(pid_t pid, pid_t *ppid, char *state) {
  char path[64], buf[512], *rp;
  FILE *f;
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  if ((f = fopen(path, "r")) == NULL) return -1;
  if (fgets(buf, sizeof buf, f) == NULL) buf[0] = '\0';
  fclose(f);
  if ((rp = strrchr(buf, ')')) == NULL) return -1;
  if (sscanf(rp + 2, "%c %d", state, ppid) != 2) return -1;
  return 0;
}

static int gone(pid_t pid) {
  pid_t pp;
  char st;
  waitpid(pid, NULL, WNOHANG);
  return proc_stat(pid, &pp, &st) != 0 || st == 'Z' || st == 'X';
}

int pg_server_kill9(void) {
  pid_t pm = postmaster_pid(), kids[256];
  int nk = 0, i;
  DIR *d;
  struct dirent *e;
  char path[200];
  struct timespec ts = {0, 10 * 1000000L};
  time_t t0;
  if (pm <= 0) return -1;
  kill(pm, SIGSTOP); /* no new children while we look */
  if ((d = opendir("/proc")) != NULL) {
    while ((e = readdir(d)) != NULL && nk < 256) {
      pid_t pid = (pid_t)atoi(e->d_name), pp;
      char st;
      if (pid > 0 && proc_stat(pid, &pp, &st) == 0 && pp == pm) kids[nk++] = pid;
    }
    closedir(d);
  }
  kill(pm, SIGKILL);
  for (i = 0; i < nk; i++) kill(kids[i], SIGKILL);
  t0 = time(NULL);
  while (!gone(pm) && time(NULL) - t0 < 10) nanosleep(&ts, NULL);
  for (i = 0; i < nk; i++)
    while (!gone(kids[i]) && time(NULL) - t0 < 10) nanosleep(&ts, NULL);
  reap();
  /* The lock files name dead processes now; PostgreSQL would take a zombie for a live postmaster. */
  snprintf(path, sizeof path, "%s/postmaster.pid", datadir);
  unlink(path);
  snprintf(path, sizeof path, "%s/.s.PGSQL.%d.lock", dir, port);
  unlink(path);
  snprintf(path, sizeof path, "%s/.s.PGSQL.%d", dir, port);
  unlink(path);
  return gone(pm) ? 0 : -1;
}

int pg_server_restart(void) { return pg_ctl_start() == 0 ? 0 : -1; }

/* ---- Conformance entry ---- */

static int conf_setup(void) { return pg_server_start(); }
static void conf_teardown(void) { pg_server_stop(); }

static char *conf_options(void) {
  char buf[512];
  snprintf(buf, sizeof buf, "{" PG_TEST_CONNECT_TIMEOUT ", \"conninfo\": \"%s\", \"table\": \"%s\", \"sweep_interval_ms\": 200}", pg_server_conninfo(),
           unique_name("conf"));
  return engram_strdup(buf);
}

const conf_source_t conf_source_postgres = {"postgres", &engram_source_postgres, conf_setup, conf_teardown,
                                            conf_options};
