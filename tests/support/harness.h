/*
 * harness.h — what every engram test shares: a loop + manager per test, callbacks that capture replies into
 * plain data (deep copies, so they outlive the callback), waits that run the loop until a counted number of
 * callbacks arrived (with a time limit, so a lost callback fails the test instead of hanging it), and the list
 * of sources the conformance suite runs against.
 */
#ifndef ENGRAM_TEST_HARNESS_H
#define ENGRAM_TEST_HARNESS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <uv.h>

#include "engram.h"
#include "engram/source.h"

/* A captured reply. */
typedef struct {
  int calls;          /* callbacks received: must end at exactly 1 */
  int status;
  char message[512];
  char source[80];
  engram_op_t op;
  cJSON *items;       /* array of {"status","key","ns","value","metadata","version","created_at_ms",...} */
  size_t n_items;
  uint64_t count;
  char *cursor;
  cJSON *info;
  char *text;
} result_t;

void result_reset(result_t *r);
/* Records the reply in r (a result_t). A second callback for one call is a stray: it is counted in
 * harness_strays and otherwise ignored (the first reply stays). */
void capture_cb(int status, const engram_reply_t *reply, void *ud);
/* Callbacks of this program that arrived for a call already answered: capture_cb and every test's own counting
 * callbacks add to it (harness_stray), and ctx_close asserts it is zero once the loop has run dry. */
extern int harness_strays;
/* Counts one stray callback: call it from a test's own callback when it sees a second one for one call. */
void harness_stray(const char *where);
/* item i's field as a cJSON node, or NULL */
const cJSON *result_item(const result_t *r, size_t i, const char *field);
const char *result_key(const result_t *r, size_t i);

/* A source the conformance suite runs against. */
typedef struct {
  const char *type;                         /* "cache", "sqlite", ... */
  const engram_source_vtable_t *vt;
  int (*setup)(void);                       /* once per test program (start a server); NULL = nothing */
  void (*teardown)(void);                   /* once per test program */
  char *(*options)(void);                   /* options JSON for a fresh, empty instance (engram_malloc'd) */
} conf_source_t;

/* Run by ctx_add before it adds s: adds the sources s is made of — a tiered entry's tiers
 * (tests/support/sources_tiered.c), matched by s->vt — to the manager, waiting for each on loop; nothing for
 * any other entry. */
void conf_prepare(engram_manager_t *mgr, uv_loop_t *loop, const conf_source_t *s);

/* NULL-terminated list (tests/support/sources_list.c). ENGRAM_TEST_SOURCES="cache,sqlite" restricts it. */
extern const conf_source_t *const conf_sources[];
int conf_source_enabled(const conf_source_t *s);
/* *out = *from under the type name `name`, with every optional method removed: the core then emulates them
 * all (the "-required-only" conformance entries). */
void conf_required_only(engram_source_vtable_t *out, const engram_source_vtable_t *from, const char *name);

/* A test's world: a loop, a manager on it, and (after ctx_add) one source named "mem". */
typedef struct {
  uv_loop_t loop;
  engram_manager_t *mgr;
  const conf_source_t *src;
} ctx_t;

/* Creates the loop and manager (cfg may be NULL). */
void ctx_init(ctx_t *c, const engram_manager_config_t *cfg);
/* Adds source s as "mem" (asserts success). */
void ctx_add(ctx_t *c, const conf_source_t *s);
/* Closes the manager, runs the loop dry and asserts uv_loop_close == 0. */
void ctx_close(ctx_t *c);
/* Runs the loop until *counter ≥ want, failing the test after timeout_ms. */
void wait_for(ctx_t *c, const int *counter, int want, int timeout_ms);
/* Runs any loop until *counter ≥ want or timeout_ms passed (valgrind-safe, unlike UV_RUN_ONCE loops); returns
 * non-zero when the count was reached. For loops outside a ctx_t (e.g. in a forked child). */
int loop_wait(uv_loop_t *loop, const int *counter, int want, int timeout_ms);
/* Runs the loop for ms milliseconds. */
void run_for(ctx_t *c, int ms);
/* Runs the loop, testing cond(arg) on every turn (an idle handle keeps the turns coming), until it holds; fails
 * the test naming what after timeout_ms. A condition with a deadline, not a duration. */
void wait_until(ctx_t *c, int (*cond)(void *arg), void *arg, int timeout_ms, const char *what);
/* Runs the loop for n more turns (at least): calls made after it come on a turn of their own. */
void run_turns(ctx_t *c, int n);

/* Updates that leave a trace: tag_fn (an engram_update_fn) appends its tag (fn_ud, a string) to a string value
 * (a missing or non-string value counts as ""); tag_cb (ud: a tags_t) records, in completion order, the status,
 * value and version each of the first 4 updates answered with. */
typedef struct {
  int answered, status[4];
  char value[4][16];
  uint64_t version[4];
} tags_t;
int tag_fn(const cJSON *current, cJSON **next, void *fn_ud);
void tag_cb(int status, const engram_reply_t *reply, void *ud);
/* Runs the loop until the wall clock (engram_now_ms) is past t — so that what is written next gets a later
 * timestamp — each step lasting the time left until t; fails the test when it has not after 10 s. A condition
 * with a deadline, not a duration. */
void wait_clock_past(ctx_t *c, int64_t t);
/* Runs the loop until a list_sources call made now has come back (30 s deadline): a condition, not a duration.
 * After it, a test may assert that calls refused earlier (which queue nothing) never called back. */
void run_barrier(ctx_t *c);

/* Synchronous helpers over the async API (assert that the call was accepted; return the callback's status). */
int s_store(ctx_t *c, const char *key, const char *json, const engram_opts_t *o, result_t *r);
int s_retrieve(ctx_t *c, const char *key, const engram_opts_t *o, result_t *r);
int s_delete(ctx_t *c, const char *key, const engram_opts_t *o, result_t *r);
int s_exists(ctx_t *c, const char *key, const engram_opts_t *o, result_t *r);
int s_search(ctx_t *c, const engram_query_t *q, const engram_opts_t *o, result_t *r);
int s_count(ctx_t *c, const engram_query_t *q, const engram_opts_t *o, result_t *r);
int s_list(ctx_t *c, const char *pattern, int limit, const char *cursor, const engram_opts_t *o, result_t *r);
int s_clear(ctx_t *c, const engram_opts_t *o, result_t *r);
int s_list_ns(ctx_t *c, int max_depth, int limit, const char *cursor, const engram_opts_t *o, result_t *r);
int s_info(ctx_t *c, const engram_opts_t *o, result_t *r);

/* Parses JSON text (asserts it is valid); the caller deletes it. */
cJSON *J(const char *json);
/* Sleeps ms on the calling thread. */
void sleep_ms(int ms);
/* A unique name for temporary things (tables, prefixes, files): "<prefix>_<pid>_<counter>". */
const char *unique_name(const char *prefix);

#endif
