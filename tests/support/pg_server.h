/*
 * pg_server.h — a real PostgreSQL 15 server for tests: made with initdb in a temporary directory owned by the
 * postgres user, started with pg_ctl on a free loopback port, stopped and removed at exit — also when a test
 * fails or the program dies (a watchdog process does it when the test program is gone). The fault tests can
 * kill -9 it and start it again on the same port. Trust authentication, plus one role with a password
 * (PG_SERVER_PW_USER / PG_SERVER_PW_PASS) that must use it, to test that passwords never leak.
 */
#ifndef ENGRAM_TEST_PG_SERVER_H
#define ENGRAM_TEST_PG_SERVER_H

#include <stddef.h>

#include "support/harness.h"

#define PG_SERVER_PW_USER "engram_pw"
#define PG_SERVER_PW_PASS "secret123"

/* Starts the server once per program (later calls return 0 at once). 0, or -1 with a message on stderr. */
int pg_server_start(void);
/* Stops the server (immediate mode) and removes its directory. Safe to call twice. */
void pg_server_stop(void);
int pg_server_port(void);
/* "host=127.0.0.1 port=N user=postgres dbname=postgres" */
const char *pg_server_conninfo(void);

/* A JSON member for the tests' postgres options (the source's default is 5,000 ms): connecting and setting up the
 * table on a loaded CI machine (ASan build, other tests and CPU hogs running) must not fail a test's setup. */
#define PG_TEST_CONNECT_TIMEOUT "\"connect_timeout_ms\": 30000"
/* kill -9 of the postmaster and every process it started; returns once they are all gone. 0 or -1. */
int pg_server_kill9(void);
/* Starts the server again on the same port and directory (after pg_server_kill9); waits until it accepts
 * connections. 0 or -1. */
int pg_server_restart(void);
/* Runs sql with psql (unaligned, tuples only); its output goes to out (trailing newline removed). Returns psql's
 * exit status (0 = success). */
int pg_server_psql(const char *sql, char *out, size_t outlen);

/* The conformance suite's entry: one server per program, a fresh table per test. */
extern const conf_source_t conf_source_postgres;

#endif
