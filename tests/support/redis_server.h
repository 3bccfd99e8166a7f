/*
 * redis_server.h — a real redis-server for tests: started on a free loopback port in a temporary directory
 * (`--save '' --appendonly no`, nothing persisted), stopped and its directory removed at exit — also when a
 * test fails or the program is interrupted (atexit + signal handlers, and PR_SET_PDEATHSIG in the server so it
 * dies with the test). The fault tests kill it with SIGKILL and restart it on the same port. One server per
 * test program. With ENGRAM_TEST_REDIS_DURABLE set in the environment it runs with an append-only file, written before each reply (the soak:
 * an acknowledged write must survive SIGKILL).
 */
#ifndef ENGRAM_TEST_REDIS_SERVER_H
#define ENGRAM_TEST_REDIS_SERVER_H

#include <stddef.h>

/* Starts the server (port 0 = a free one). Returns the port, or -1 (reason on stderr). */
int redis_server_start(int port);
/* The running (or last) server's port. */
int redis_server_port(void);

/* The connect_timeout_ms the tests give a redis source (the source's default is 2,000): the handshake (connect, INFO,
 * SCRIPT LOAD of every script) to a redis-server on loopback once took longer than 2 s on a loaded CI machine
 * (ASan build, other tests and CPU hogs running), and the test then failed in its setup. */
#define REDIS_TEST_CONNECT_TIMEOUT_MS 30000
#define REDIS_TEST_STR_(x) #x
#define REDIS_TEST_STR(x) REDIS_TEST_STR_(x)
/* The same as a JSON member, to splice into an options literal: "{" REDIS_TEST_CONNECT_TIMEOUT ", ...}". */
#define REDIS_TEST_CONNECT_TIMEOUT "\"connect_timeout_ms\": " REDIS_TEST_STR(REDIS_TEST_CONNECT_TIMEOUT_MS)
/* The server's process id, or -1 when it is not running (for SIGSTOP / SIGCONT in fault tests). */
int redis_server_pid(void);
/* Stops the server (SIGTERM, then waits) and removes its directory. */
void redis_server_stop(void);
/* Kills the server with SIGKILL and reaps it; the directory stays for a restart. */
void redis_server_kill9(void);
/* Starts the server again on the same port. Returns 0 or -1. */
int redis_server_restart(void);
/* Runs redis-cli against the server with the given arguments (NULL-terminated), capturing stdout into out
 * (NUL-terminated, trailing newline removed). Returns redis-cli's exit status, or -1. */
int redis_cli(char *out, size_t outlen, ...);

#endif
