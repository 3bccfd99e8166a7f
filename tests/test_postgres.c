/*
 * test_postgres.c — the PostgreSQL source beyond the conformance suite, against a real server started for the
 * run (tests/support/pg_server.c): kill -9 of the server with 1,000 calls in flight (one callback each, nothing
 * acknowledged lost, service back by itself), interoperation with psql in the documented schema, bad input
 * (unreachable servers, wrong passwords, hostile identifiers) with passwords never in messages or info, a failing
 * statement inside a pipeline failing only its own call, fail-fast versus wait_for_connection, a connection
 * string whose first host is dead (libpq changes sockets), per-key order across a pool, text search and
 * filters giving the cache's results, the text index following every writer (another source on the table, psql,
 * a transaction open across a search) and the upgrade of a schema-1 table. ENGRAM_PG_BENCH=1 adds a throughput
 * figure against raw libpq.
 */
#include <arpa/inet.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "engram/events.h"
#include "engram/thread.h"
#include "support/harness.h"
#include "support/pg_server.h"

static double cpu_s(void) {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return (double)u.ru_utime.tv_sec + (double)u.ru_utime.tv_usec / 1e6 + (double)u.ru_stime.tv_sec +
         (double)u.ru_stime.tv_usec / 1e6;
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* ---- Helpers ---- */

typedef struct {
  int calls;
  int status;
} tally_t;

static int g_done;

static void tally_cb(int status, const engram_reply_t *reply, void *ud) {
  tally_t *t = ud;
  (void)reply;
  if (++t->calls > 1) harness_stray("tally_cb");
  t->status = status;
  g_done++;
}

static char opts_buf[2048];

/* Options for a fresh table (its name in *table when table ≠ NULL), plus extra members ("..., " form). */
static const char *pg_opts(const char *extra, char *table, size_t tlen) {
  const char *t = unique_name("pgt");
  if (table) snprintf(table, tlen, "%s", t);
  snprintf(opts_buf, sizeof opts_buf, "{\"conninfo\": \"%s\", \"table\": \"%s\"%s%s}", pg_server_conninfo(), t,
           extra ? ", " : "", extra ? extra : "");
  return opts_buf;
}

static int add_source(ctx_t *c, const char *name, const engram_source_vtable_t *vt, const char *options, result_t *r) {
  result_reset(r);
  assert_int_equal(engram_manager_add_source(c->mgr, name, vt, options, "under test", 0, capture_cb, r), 0);
  wait_for(c, &r->calls, 1, 30000);
  assert_int_equal(r->calls, 1);
  return r->status;
}

/* Adds "pg" on a fresh table (asserting success). */
static void add_pg(ctx_t *c, const char *extra, char *table, size_t tlen) {
  result_t r = {0};
  if (add_source(c, "pg", &engram_source_postgres, pg_opts(extra, table, tlen), &r) != 0)
    fail_msg("add pg: %s (%s)", engram_err_name(r.status), r.message);
  result_reset(&r);
}

static engram_opts_t on(const char *source) {
  engram_opts_t o = {0};
  o.source = source;
  return o;
}

static int psql(const char *sql, char *out, size_t outlen) { return pg_server_psql(sql, out, outlen); }

/* Makes sure the server is up (a previous test may have failed while it was down). */
static void ensure_up(void) {
  char out[64];
  if (psql("SELECT 1", out, sizeof out) != 0) assert_int_equal(pg_server_restart(), 0);
}

static int count_rows(const char *table, const char *where) {
  char sql[512], out[64];
  snprintf(sql, sizeof sql, "SELECT count(*) FROM public.\"%s\" WHERE %s", table, where);
  if (psql(sql, out, sizeof out) != 0) fail_msg("psql failed: %s", out);
  return atoi(out);
}

/* ---- The text index: every writer's changes, another transaction's too ---- */

static double info_number(ctx_t *c, const char *source, const char *field, result_t *r) {
  engram_opts_t o = on(source);
  const cJSON *v;
  assert_int_equal(s_info(c, &o, r), 0);
  v = cJSON_GetObjectItemCaseSensitive(r->info, field);
  if (!cJSON_IsNumber(v)) fail_msg("info has no number \"%s\"", field);
  return v->valuedouble;
}

/* The keys a text search of ns through source finds, in rank order, joined by spaces. */
static const char *text_keys(ctx_t *c, const char *source, const char *ns, const char *text, result_t *r) {
  static char out[512];
  engram_opts_t o = on(source);
  engram_query_t q = ENGRAM_QUERY_INIT;
  size_t i, n = 0;
  o.ns = ns;
  q.text = text;
  q.mode = ENGRAM_MODE_TEXT;
  q.limit = 20;
  if (s_search(c, &q, &o, r) != 0) fail_msg("search \"%s\" through %s: %s", text, source, r->message);
  out[0] = '\0';
  for (i = 0; i < r->n_items; i++) n += (size_t)snprintf(out + n, sizeof out - n, "%s%s", i ? " " : "", result_key(r, i));
  return out;
}

static void psql_ok(const char *fmt, const char *table) {
  char sql[1024], out[256];
  snprintf(sql, sizeof sql, fmt, table, table);
  if (psql(sql, out, sizeof out) != 0) fail_msg("psql %s: %s", sql, out);
}

/* Two sources on one table stand for two processes: each keeps its own index of the namespace, and a search
 * through either sees every write acknowledged before it — its own, the other's, psql's (INSERT, UPDATE, DELETE,
 * TRUNCATE) — and a transaction that was still open at one search and committed before the next. */
static void text_index_follows_every_writer(void **state) {
  ctx_t c;
  result_t r = {0};
  engram_opts_t o = on("pg");
  char table[64], opts[1024];
  PGconn *x;
  (void)state;
  ensure_up();
  ctx_init(&c, NULL);
  add_pg(&c, NULL, table, sizeof table);
  snprintf(opts, sizeof opts, "{\"conninfo\": \"%s\", \"table\": \"%s\"}", pg_server_conninfo(), table);
  assert_int_equal(add_source(&c, "pg2", &engram_source_postgres, opts, &r), 0);
  o.ns = "n";
  assert_int_equal(s_store(&c, "a", "{\"t\": \"apple pie\"}", &o, &r), 0);
  assert_int_equal(s_store(&c, "b", "{\"t\": \"apple apple tart\"}", &o, &r), 0);
  assert_int_equal(s_store(&c, "other-ns", "{\"t\": \"apple\"}", NULL, &r), 0); /* the default namespace */
  assert_string_equal(text_keys(&c, "pg2", "n", "apple", &r), "b a");
  assert_string_equal(text_keys(&c, "pg", "n", "apple", &r), "b a");
  /* Writes through pg reach pg2's index: a new row, a delete. */
  assert_int_equal(s_store(&c, "c", "{\"t\": \"apple crumble\"}", &o, &r), 0);
  assert_int_equal(s_delete(&c, "a", &o, &r), 0);
  assert_string_equal(text_keys(&c, "pg2", "n", "apple", &r), "b c");
  assert_string_equal(text_keys(&c, "pg2", "n", "crumble", &r), "c");
  /* psql: an UPDATE that does not know chg, a DELETE, an INSERT. */
  psql_ok("UPDATE public.\"%s\" SET value = '{\"t\": \"pear\"}' WHERE namespace = 'n' AND key = 'b'", table);
  assert_string_equal(text_keys(&c, "pg2", "n", "apple", &r), "c");
  assert_string_equal(text_keys(&c, "pg", "n", "pear", &r), "b");
  psql_ok("DELETE FROM public.\"%s\" WHERE namespace = 'n' AND key = 'c'", table);
  psql_ok("INSERT INTO public.\"%s\" (namespace, key, value) VALUES ('n', 'd', '\"apple\"')", table);
  assert_string_equal(text_keys(&c, "pg2", "n", "apple", &r), "d");
  assert_string_equal(text_keys(&c, "pg", "n", "apple", &r), "d");
  /* A transaction open across a search: not seen while open, seen once committed (its id is below the xmin the
   * search's sync started from, so a sync that went by the highest id seen would miss it). */
  x = PQconnectdb(pg_server_conninfo());
  assert_int_equal(PQstatus(x), CONNECTION_OK);
  {
    char sql[512];
    PGresult *res;
    snprintf(sql, sizeof sql, "BEGIN; INSERT INTO public.\"%s\" (namespace, key, value) VALUES ('n', 'late', '\"apple\"')",
             table);
    res = PQexec(x, sql);
    assert_int_equal(PQresultStatus(res), PGRES_COMMAND_OK);
    PQclear(res);
    assert_int_equal(s_store(&c, "e", "\"apple\"", &o, &r), 0); /* a later transaction, committed */
    assert_string_equal(text_keys(&c, "pg2", "n", "apple", &r), "d e");
    res = PQexec(x, "COMMIT");
    assert_int_equal(PQresultStatus(res), PGRES_COMMAND_OK);
    PQclear(res);
    PQfinish(x);
  }
  assert_string_equal(text_keys(&c, "pg2", "n", "apple", &r), "d e late");
  /* TRUNCATE empties every namespace's index; rows written after it are found. */
  psql_ok("TRUNCATE public.\"%s\"", table);
  psql_ok("INSERT INTO public.\"%s\" (namespace, key, value) VALUES ('n', 'f', '\"apple\"')", table);
  assert_string_equal(text_keys(&c, "pg2", "n", "apple", &r), "f");
  assert_string_equal(text_keys(&c, "pg", "", "apple", &r), "");
  /* On a quiet index a search ranks while its sync is in flight: the ranking stands when the sync changed nothing
   * (counted in info), and is made again when it brought a row written meanwhile. */
  {
    double kept;
    assert_string_equal(text_keys(&c, "pg2", "n", "apple", &r), "f"); /* this sync changes nothing: quiet */
    kept = info_number(&c, "pg2", "text_rankings_during_sync", &r);
    assert_string_equal(text_keys(&c, "pg2", "n", "apple", &r), "f"); /* ranked early, kept */
    assert_true(info_number(&c, "pg2", "text_rankings_during_sync", &r) == kept + 1);
    psql_ok("INSERT INTO public.\"%s\" (namespace, key, value) VALUES ('n', 'g', '\"apple apple\"')", table);
    assert_string_equal(text_keys(&c, "pg2", "n", "apple", &r), "g f"); /* ranked early, then again */
    assert_true(info_number(&c, "pg2", "text_rankings_during_sync", &r) == kept + 1);
    psql_ok("DELETE FROM public.\"%s\" WHERE key = 'g'", table);
    assert_string_equal(text_keys(&c, "pg2", "n", "apple", &r), "f");
  }
  /* Info: one index per namespace searched, its items and its bytes. */
  assert_int_equal((int)info_number(&c, "pg2", "text_indexes", &r), 1);
  assert_int_equal((int)info_number(&c, "pg2", "text_index_items", &r), 1);
  assert_true(info_number(&c, "pg2", "text_index_bytes", &r) > 0);
  assert_int_equal((int)info_number(&c, "pg", "text_indexes", &r), 2);
  result_reset(&r);
  ctx_close(&c);
}

/* text_index_items bounds the documents indexed over all namespaces: the least recently searched namespace's
 * index goes when another's would pass it, and a search of it later builds it again, with the same results. */
static void text_index_items_bounds_the_indexes(void **state) {
  ctx_t c;
  result_t r = {0};
  engram_opts_t a = on("pg"), b = on("pg");
  char table[64];
  (void)state;
  ensure_up();
  ctx_init(&c, NULL);
  add_pg(&c, "\"text_index_items\": 5", table, sizeof table);
  a.ns = "a";
  b.ns = "b";
  assert_int_equal(s_store(&c, "a1", "\"apple one\"", &a, &r), 0);
  assert_int_equal(s_store(&c, "a2", "\"apple two\"", &a, &r), 0);
  assert_int_equal(s_store(&c, "a3", "\"apple three\"", &a, &r), 0);
  assert_int_equal(s_store(&c, "b1", "\"apple uno\"", &b, &r), 0);
  assert_int_equal(s_store(&c, "b2", "\"apple dos\"", &b, &r), 0);
  assert_int_equal(s_store(&c, "b3", "\"apple tres\"", &b, &r), 0);
  assert_string_equal(text_keys(&c, "pg", "a", "two", &r), "a2");
  assert_int_equal((int)info_number(&c, "pg", "text_indexes", &r), 1);
  /* b's index would make 6 items: a's, the least recently searched, goes once b's is built. */
  assert_string_equal(text_keys(&c, "pg", "b", "dos", &r), "b2");
  assert_int_equal((int)info_number(&c, "pg", "text_indexes", &r), 1);
  assert_int_equal((int)info_number(&c, "pg", "text_index_items", &r), 3);
  /* a is built again (with a write made meanwhile), and b goes. */
  assert_int_equal(s_store(&c, "a4", "\"apple four\"", &a, &r), 0);
  assert_string_equal(text_keys(&c, "pg", "a", "apple", &r), "a1 a2 a3 a4");
  assert_int_equal((int)info_number(&c, "pg", "text_indexes", &r), 1);
  assert_int_equal((int)info_number(&c, "pg", "text_index_items", &r), 4);
  /* Within the budget both stay: a namespace of one item. */
  {
    engram_opts_t o = on("pg");
    o.ns = "c";
    assert_int_equal(s_store(&c, "c1", "\"apple\"", &o, &r), 0);
    assert_string_equal(text_keys(&c, "pg", "c", "apple", &r), "c1");
    assert_int_equal((int)info_number(&c, "pg", "text_indexes", &r), 2);
  }
  ctx_close(&c);
  /* The option is checked like every other. */
  {
    char o[1024];
    snprintf(o, sizeof o, "{\"conninfo\": \"%s\", \"text_index_items\": -1}", pg_server_conninfo());
    ctx_init(&c, NULL);
    assert_int_not_equal(add_source(&c, "pg", &engram_source_postgres, o, &r), 0);
    assert_non_null(strstr(r.message, "text_index_items"));
    ctx_close(&c);
  }
  result_reset(&r);
}

/* ---- Conversation appends: the head, the messages and the trim in one statement ---- */

static int append_msgs(ctx_t *c, const char *id, const char *const *texts, size_t n,
                       const engram_thread_settings_t *s, result_t *r) {
  engram_message_t m[4];
  engram_opts_t o = on("pg");
  size_t i;
  memset(m, 0, sizeof m);
  for (i = 0; i < n; i++) {
    m[i].role = "user";
    m[i].content = texts[i];
  }
  o.ns = "chat";
  result_reset(r);
  assert_int_equal(engram_thread_append(c->mgr, id, m, n, s, &o, capture_cb, r), 0);
  wait_for(c, &r->calls, 1, 10000);
  return r->status;
}

static const char *psql_out(const char *fmt, const char *table) {
  static char out[512];
  char sql[1024];
  snprintf(sql, sizeof sql, fmt, table, table);
  if (psql(sql, out, sizeof out) != 0) fail_msg("psql %s: %s", sql, out);
  return out;
}

/* An append is one statement (ENGRAM_SOURCE_UPDATE_WRITES): the head and its messages are written by one
 * transaction (one chg), and a trimmed message's deletion is recorded by that transaction too; a message just
 * appended is found by text search; a message over max_value_bytes, and a message the server refuses (a CHECK
 * constraint added by psql), fail the append with nothing written — the head keeps its version — and the next
 * append takes the same sequence number. */
static void appends_write_head_and_messages_in_one_statement(void **state) {
  ctx_t c;
  result_t r = {0};
  char table[64], bigtext[1300];
  const char *two[] = {"the zebra crossing", "apples and pears"}, *one[] = {"a quokka smiles"};
  const char *big[] = {bigtext}, *bad[] = {"a forbidden word"}, *fourth[] = {"the fourth message"};
  engram_thread_settings_t keep2 = {ENGRAM_THREAD_MAX_MESSAGES, 2, 0};
  engram_opts_t o = on("pg");
  (void)state;
  ensure_up();
  ctx_init(&c, NULL);
  add_pg(&c, "\"max_value_bytes\": 1000", table, sizeof table);
  assert_int_equal(append_msgs(&c, "t", two, 2, &keep2, &r), 0);
  assert_string_equal(psql_out("SELECT count(*) || '|' || count(DISTINCT chg) FROM public.\"%s\" WHERE namespace = "
                               "'chat'", table), "3|1");
  assert_int_equal(append_msgs(&c, "t", one, 1, &keep2, &r), 0); /* trims message 1 */
  assert_string_equal(psql_out("SELECT string_agg(version::text, ',' ORDER BY key) FROM public.\"%s\" WHERE "
                               "namespace = 'chat'", table), "1,1,2"); /* messages 2 and 3, then the head */
  /* The head, message 3 and message 1's deletion: one transaction. */
  assert_string_equal(psql_out("SELECT count(DISTINCT chg) || '|' || count(*) FROM (SELECT chg FROM public.\"%s\" "
                               "WHERE namespace = 'chat' AND (key = 'thread:t' OR key LIKE '%%3') UNION ALL SELECT chg "
                               "FROM public.\"%s_gone\" WHERE namespace = 'chat') x", table), "1|3");
  assert_string_equal(text_keys(&c, "pg", "chat", "quokka", &r), psql_out("SELECT key FROM public.\"%s\" WHERE "
                                                                           "namespace = 'chat' AND key LIKE '%%3'", table));
  o.ns = "chat";
  result_reset(&r);
  assert_int_equal(engram_thread_search(c.mgr, "t", "quokka", 5, &o, capture_cb, &r), 0);
  wait_for(&c, &r.calls, 1, 10000);
  assert_int_equal(r.status, 0);
  assert_int_equal((int)r.n_items, 1);
  /* Over max_value_bytes: refused before anything is sent. */
  memset(bigtext, 'x', 1200);
  bigtext[1200] = '\0';
  assert_int_equal(append_msgs(&c, "t", big, 1, &keep2, &r), ENGRAM_ETOOBIG);
  assert_non_null(strstr(r.message, "thread-msg:t:"));
  /* Refused by the server: the head's write goes with it. */
  psql_ok("ALTER TABLE public.\"%s\" ADD CONSTRAINT no_forbidden CHECK (value::text NOT LIKE '%%forbidden%%')", table);
  assert_int_equal(append_msgs(&c, "t", bad, 1, &keep2, &r), ENGRAM_EBACKEND);
  assert_non_null(strstr(r.message, "no_forbidden"));
  assert_string_equal(psql_out("SELECT string_agg(version::text, ',' ORDER BY key) FROM public.\"%s\" WHERE "
                               "namespace = 'chat'", table), "1,1,2");
  /* The next append takes number 4, trims message 2, and is found at once. */
  assert_int_equal(append_msgs(&c, "t", fourth, 1, &keep2, &r), 0);
  assert_string_equal(psql_out("SELECT string_agg(right(key, 1) || ':' || version, ',' ORDER BY key) FROM "
                               "public.\"%s\" WHERE namespace = 'chat'", table), "3:1,4:1,t:3");
  assert_string_equal(text_keys(&c, "pg", "chat", "fourth", &r), psql_out("SELECT key FROM public.\"%s\" WHERE "
                                                                          "namespace = 'chat' AND key LIKE '%%4'", table));
  assert_string_equal(text_keys(&c, "pg", "chat", "apples", &r), "");
  ctx_close(&c);
  result_reset(&r);
}

/* A namespace larger than one build chunk (4,000 rows): the build reads it in key order in chunks and indexes
 * every row once; rows written after the build are found by the next sync. */
static void text_index_build_reads_in_chunks(void **state) {
  enum { N = 9001 };
  static tally_t t[500];
  ctx_t c;
  result_t r = {0};
  engram_opts_t o = on("pg");
  char table[64], opts[1024], key[32], text[64], want[64];
  int i, j, failed = 0;
  (void)state;
  ensure_up();
  ctx_init(&c, NULL);
  add_pg(&c, NULL, table, sizeof table);
  o.ns = "big";
  for (i = 0; i < N; i += 500) {
    memset(t, 0, sizeof t);
    g_done = 0;
    for (j = 0; j < 500 && i + j < N; j++) {
      cJSON *v = cJSON_CreateObject();
      snprintf(key, sizeof key, "k%05d", i + j);
      snprintf(text, sizeof text, "common word%d", i + j);
      cJSON_AddStringToObject(v, "t", text);
      assert_int_equal(engram_store(c.mgr, key, v, &o, tally_cb, &t[j]), 0);
      cJSON_Delete(v);
    }
    wait_for(&c, &g_done, j, 60000);
    while (j-- > 0) failed += t[j].status != 0;
  }
  assert_int_equal(failed, 0);
  /* A second source on the table: its first search builds from the table alone. */
  snprintf(opts, sizeof opts, "{\"conninfo\": \"%s\", \"table\": \"%s\"}", pg_server_conninfo(), table);
  assert_int_equal(add_source(&c, "pg2", &engram_source_postgres, opts, &r), 0);
  for (i = 0; i < N; i += 1999) { /* first, middle and last chunks, and the last row */
    snprintf(text, sizeof text, "word%d", i);
    snprintf(want, sizeof want, "k%05d", i);
    assert_string_equal(text_keys(&c, "pg2", "big", text, &r), want);
  }
  assert_string_equal(text_keys(&c, "pg2", "big", "word9000", &r), "k09000");
  assert_int_equal((int)info_number(&c, "pg2", "text_index_items", &r), N);
  /* Every row indexed once: a word all rows hold matches all of them (the count comes from the index). */
  {
    engram_query_t q = ENGRAM_QUERY_INIT;
    engram_opts_t o2 = on("pg2");
    o2.ns = "big";
    q.text = "common";
    assert_int_equal(s_count(&c, &q, &o2, &r), 0);
    assert_int_equal((int)r.count, N);
  }
  assert_int_equal(s_store(&c, "k99999", "{\"t\": \"word99999\"}", &o, &r), 0);
  assert_string_equal(text_keys(&c, "pg2", "big", "word99999", &r), "k99999");
  result_reset(&r);
  ctx_close(&c);
}

/* A table of schema version 1 (a tsvector column with its GIN index) is upgraded on open: the column and the
 * index go, chg and the table of deleted keys come, the rows stay and are found by text search. */
static void schema_1_table_is_upgraded(void **state) {
  ctx_t c;
  result_t r = {0};
  char table[64], opts[1024], sql[2048], out[256];
  (void)state;
  ensure_up();
  snprintf(table, sizeof table, "%s", unique_name("pgv1"));
  snprintf(sql, sizeof sql,
           "CREATE TABLE IF NOT EXISTS public.engram_schema (table_name text PRIMARY KEY, version integer NOT NULL, "
           "updated_at timestamptz NOT NULL DEFAULT now()); "
           "CREATE TABLE public.\"%s\" (namespace text COLLATE \"C\" NOT NULL DEFAULT '', key text COLLATE \"C\" NOT NULL, "
           "value jsonb NOT NULL, metadata jsonb, created_at bigint NOT NULL DEFAULT 0, updated_at bigint NOT NULL "
           "DEFAULT 0, expires_at bigint, version bigint NOT NULL DEFAULT 1, search tsvector, PRIMARY KEY (namespace, key)); "
           "CREATE INDEX \"%s_search\" ON public.\"%s\" USING gin (search); "
           "INSERT INTO public.\"%s\" (key, value, search) VALUES ('old', '\"an old row\"', '''old'':1 ''row'':3'); "
           "INSERT INTO public.engram_schema (table_name, version) VALUES ('%s', 1)",
           table, table, table, table, table);
  assert_int_equal(psql(sql, out, sizeof out), 0);
  ctx_init(&c, NULL);
  snprintf(opts, sizeof opts, "{\"conninfo\": \"%s\", \"table\": \"%s\"}", pg_server_conninfo(), table);
  if (add_source(&c, "pg", &engram_source_postgres, opts, &r) != 0) fail_msg("open: %s", r.message);
  assert_string_equal(text_keys(&c, "pg", "", "row", &r), "old");
  assert_int_equal(s_store(&c, "new", "\"a new row\"", NULL, &r), 0);
  assert_string_equal(text_keys(&c, "pg", "", "row", &r), "new old");
  snprintf(sql, sizeof sql,
           "SELECT (SELECT version FROM public.engram_schema WHERE table_name = '%s'), (SELECT count(*) FROM "
           "information_schema.columns WHERE table_name = '%s' AND column_name IN ('search', 'chg')), "
           "to_regclass('public.\"%s_search\"') IS NULL, to_regclass('public.\"%s_gone\"') IS NOT NULL",
           table, table, table, table);
  assert_int_equal(psql(sql, out, sizeof out), 0);
  assert_string_equal(out, "2|1|t|t");
  result_reset(&r);
  ctx_close(&c);
}

/* ---- kill -9 with 1,000 calls in flight ---- */

#define N_FLIGHT 1000

static void kill9_with_1000_calls_in_flight(void **state) {
  ctx_t c;
  char table[64], key[32], val[64];
  static tally_t t[N_FLIGHT];
  tally_t down = {0, 0}, again = {0, 0};
  engram_opts_t o = on("pg");
  int i, ok = 0, unavailable = 0, missing = 0;
  double t0, served;
  static char out[65536];
  PGconn *locker = NULL;
  (void)state;
  ensure_up();
  memset(t, 0, sizeof t);
  g_done = 0;
  ctx_init(&c, NULL);
  add_pg(&c, NULL, table, sizeof table);
  /* The first 100 stores are acknowledged; then another connection locks the table, so that the other 900 are
   * certainly in flight — sent, and waiting on the server — when the server is killed (waiting for the first
   * acknowledgement alone raced with a fast client: every store could be answered before the kill). */
  for (i = 0; i < N_FLIGHT; i++) {
    cJSON *v;
    if (i == 100) {
      char sql[256];
      PGresult *res;
      wait_for(&c, &g_done, 100, 30000);
      assert_int_equal(PQstatus(locker = PQconnectdb(pg_server_conninfo())), CONNECTION_OK);
      snprintf(sql, sizeof sql, "BEGIN; LOCK TABLE public.\"%s\" IN ACCESS EXCLUSIVE MODE", table);
      res = PQexec(locker, sql);
      assert_int_equal(PQresultStatus(res), PGRES_COMMAND_OK);
      PQclear(res);
    }
    snprintf(key, sizeof key, "k%04d", i);
    snprintf(val, sizeof val, "{\"i\": %d, \"text\": \"in flight %d\"}", i, i);
    v = J(val);
    assert_int_equal(engram_store(c.mgr, key, v, &o, tally_cb, &t[i]), 0);
    cJSON_Delete(v);
  }
  /* a condition with a generous deadline: the loop turns (sending the stores) until one of them waits on the lock */
  for (t0 = now_s();;) {
    PGresult *res;
    int waiting;
    uv_run(&c.loop, UV_RUN_NOWAIT);
    res = PQexec(locker, "SELECT count(*) FROM pg_locks WHERE NOT granted");
    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    waiting = atoi(PQgetvalue(res, 0, 0));
    PQclear(res);
    if (waiting > 0) break;
    if (now_s() - t0 > 60) fail_msg("no store of the source waits on the table lock after 60 s");
  }
  assert_int_equal(g_done, 100);
  assert_int_equal(pg_server_kill9(), 0);
  PQfinish(locker);
  wait_for(&c, &g_done, N_FLIGHT, 30000);
  run_for(&c, 50);
  for (i = 0; i < N_FLIGHT; i++) {
    if (t[i].calls != 1) fail_msg("call %d got %d callbacks", i, t[i].calls);
    if (t[i].status == 0) ok++;
    else if (t[i].status == ENGRAM_EUNAVAILABLE) unavailable++;
    else fail_msg("call %d: unexpected %s", i, engram_err_name(t[i].status));
  }
  print_message("kill -9: %d acknowledged, %d ENGRAM_EUNAVAILABLE\n", ok, unavailable);
  assert_int_equal(ok + unavailable, N_FLIGHT);
  assert_int_equal(ok, 100);          /* the acknowledged ones */
  assert_int_equal(unavailable, 900); /* those waiting on the server when it died */
  /* While down, a call fails fast. */
  t0 = now_s();
  {
    cJSON *v = J("1");
    assert_int_equal(engram_store(c.mgr, "while-down", v, &o, tally_cb, &down), 0);
    cJSON_Delete(v);
  }
  wait_for(&c, &down.calls, 1, 5000);
  assert_int_equal(down.status, ENGRAM_EUNAVAILABLE);
  assert_true(now_s() - t0 < 0.5);
  /* The server comes back: the source serves again by itself within 2 s. */
  assert_int_equal(pg_server_restart(), 0);
  t0 = now_s();
  for (;;) {
    cJSON *v = J("\"back\"");
    again.calls = 0;
    assert_int_equal(engram_store(c.mgr, "after-restart", v, &o, tally_cb, &again), 0);
    cJSON_Delete(v);
    wait_for(&c, &again.calls, 1, 5000);
    if (again.status == 0) break;
    assert_int_equal(again.status, ENGRAM_EUNAVAILABLE);
    assert_true(now_s() - t0 < 5.0);
    run_for(&c, 20);
  }
  served = now_s() - t0;
  print_message("served again %.0f ms after the restart\n", served * 1000);
  assert_true(served <= 2.0);
  /* Every acknowledged store is in the table. */
  {
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT string_agg(key, ',' ORDER BY key) FROM public.\"%s\"", table);
    assert_int_equal(psql(sql, out, sizeof out), 0);
  }
  for (i = 0; i < N_FLIGHT; i++) {
    char needle[16];
    if (t[i].status != 0) continue;
    snprintf(needle, sizeof needle, "k%04d", i);
    if (strstr(out, needle) == NULL) missing++;
  }
  assert_int_equal(missing, 0);
  ctx_close(&c);
}

/* ---- psql interoperation ---- */

static void psql_reads_and_writes_the_documented_schema(void **state) {
  ctx_t c;
  result_t r = {0};
  char table[64], sql[1024], out[1024];
  engram_opts_t o = on("pg");
  engram_query_t q = ENGRAM_QUERY_INIT;
  cJSON *meta = J("{\"tag\": \"x\", \"n\": 2}"), *want, *f;
  (void)state;
  ensure_up();
  ctx_init(&c, NULL);
  add_pg(&c, NULL, table, sizeof table);
  o.ns = "team";
  o.metadata = meta;
  o.flags = ENGRAM_OPT_TTL;
  o.ttl_ms = 60000;
  assert_int_equal(s_store(&c, "interop", "{\"text\": \"Hello psql\", \"n\": 3}", &o, &r), 0);
  snprintf(sql, sizeof sql,
           "SELECT namespace, key, value->>'text', value->'n', metadata->>'tag', version, expires_at - updated_at, "
           "chg > 0, updated_at > 1600000000000 FROM public.\"%s\" WHERE key = 'interop'", table);
  assert_int_equal(psql(sql, out, sizeof out), 0);
  assert_string_equal(out, "team|interop|Hello psql|3|x|1|60000|t|t");
  /* A row written by psql, with only the columns a person would fill in. */
  snprintf(sql, sizeof sql,
           "INSERT INTO public.\"%s\" (key, value, metadata) VALUES ('from_psql', '{\"greeting\": \"Bonjour le monde\"}', "
           "'{\"lang\": \"fr\"}')", table);
  assert_int_equal(psql(sql, out, sizeof out), 0);
  o = on("pg");
  o.flags = ENGRAM_OPT_INCLUDE_METADATA;
  assert_int_equal(s_retrieve(&c, "from_psql", &o, &r), 0);
  want = J("{\"greeting\": \"Bonjour le monde\"}");
  assert_true(cJSON_Compare(result_item(&r, 0, "value"), want, 1));
  cJSON_Delete(want);
  assert_int_equal((int)result_item(&r, 0, "version")->valuedouble, 1);
  assert_true(result_item(&r, 0, "created_at_ms")->valuedouble > 1.6e12);
  assert_string_equal(cJSON_GetObjectItem(result_item(&r, 0, "metadata"), "lang")->valuestring, "fr");
  /* Text search finds it: the column's default recorded its transaction (chg), which the index's sync reads. */
  o = on("pg");
  q.text = "BONJOUR";
  assert_int_equal(s_search(&c, &q, &o, &r), 0);
  assert_int_equal(r.n_items, 1);
  assert_string_equal(result_key(&r, 0), "from_psql");
  f = J("{\"lang\": \"fr\"}");
  q.text = NULL;
  q.filter = f;
  assert_int_equal(s_count(&c, &q, &o, &r), 0);
  assert_int_equal((int)r.count, 1);
  cJSON_Delete(f);
  /* An update by psql bumps nothing engram relies on but the value; engram's update then sees it. */
  snprintf(sql, sizeof sql, "UPDATE public.\"%s\" SET value = '{\"greeting\": \"Hallo Welt\"}' WHERE key = 'from_psql'", table);
  assert_int_equal(psql(sql, out, sizeof out), 0);
  q.filter = NULL;
  q.text = "welt";
  assert_int_equal(s_search(&c, &q, &o, &r), 0);
  assert_int_equal(r.n_items, 1);
  cJSON_Delete(meta);
  result_reset(&r);
  ctx_close(&c);
}

/* ---- Schema versions ---- */

static void reopen_keeps_data_and_newer_schema_is_refused(void **state) {
  ctx_t c;
  result_t r = {0};
  engram_opts_t o = on("pg");
  char table[64], opts[2048], sql[256], out[64];
  (void)state;
  ensure_up();
  ctx_init(&c, NULL);
  snprintf(opts, sizeof opts, "%s", pg_opts(NULL, table, sizeof table));
  assert_int_equal(add_source(&c, "pg", &engram_source_postgres, opts, &r), 0);
  assert_int_equal(s_store(&c, "kept", "\"across opens\"", &o, &r), 0);
  ctx_close(&c);
  snprintf(sql, sizeof sql, "SELECT version FROM public.engram_schema WHERE table_name = '%s'", table);
  assert_int_equal(psql(sql, out, sizeof out), 0);
  assert_string_equal(out, "2");
  /* Opened again: the table is registered, nothing is created, the data is there. */
  ctx_init(&c, NULL);
  assert_int_equal(add_source(&c, "pg", &engram_source_postgres, opts, &r), 0);
  assert_int_equal(s_retrieve(&c, "kept", &o, &r), 0);
  assert_string_equal(result_item(&r, 0, "value")->valuestring, "across opens");
  ctx_close(&c);
  /* A table at a newer schema version than this code knows is refused, with the reason. */
  snprintf(sql, sizeof sql, "UPDATE public.engram_schema SET version = 3 WHERE table_name = '%s'", table);
  assert_int_equal(psql(sql, out, sizeof out), 0);
  ctx_init(&c, NULL);
  assert_int_equal(add_source(&c, "pg", &engram_source_postgres, opts, &r), ENGRAM_EBACKEND);
  assert_non_null(strstr(r.message, "newer than this engram"));
  result_reset(&r);
  ctx_close(&c);
}

/* ---- Bad input ---- */

static void unreachable_server_names_host_and_port_not_password(void **state) {
  ctx_t c;
  result_t r = {0};
  char o[512];
  (void)state;
  ensure_up();
  ctx_init(&c, NULL);
  snprintf(o, sizeof o, "{\"conninfo\": \"host=127.0.0.1 port=1 user=postgres password=secret123 dbname=postgres\"}");
  assert_int_equal(add_source(&c, "pg", &engram_source_postgres, o, &r), ENGRAM_EUNAVAILABLE);
  assert_non_null(strstr(r.message, "127.0.0.1"));
  assert_non_null(strstr(r.message, "port 1"));
  assert_null(strstr(r.message, "secret123"));
  snprintf(o, sizeof o, "{\"conninfo\": \"postgresql://postgres:secret123@127.0.0.1:1/postgres\"}");
  assert_int_equal(add_source(&c, "pg", &engram_source_postgres, o, &r), ENGRAM_EUNAVAILABLE);
  assert_non_null(strstr(r.message, "127.0.0.1"));
  assert_null(strstr(r.message, "secret123"));
  /* A password the server refuses: the reason is given, the password is not. */
  snprintf(o, sizeof o, "{\"conninfo\": \"host=127.0.0.1 port=%d user=" PG_SERVER_PW_USER " password=wrongpass99 dbname=postgres\"}",
           pg_server_port());
  assert_int_equal(add_source(&c, "pg", &engram_source_postgres, o, &r), ENGRAM_EUNAVAILABLE);
  assert_non_null(strstr(r.message, "password authentication failed"));
  assert_null(strstr(r.message, "wrongpass99"));
  /* A conninfo libpq cannot parse: no piece of it is echoed. */
  snprintf(o, sizeof o, "{\"conninfo\": \"host=127.0.0.1 password=sekrit bogus\"}");
  assert_int_equal(add_source(&c, "pg", &engram_source_postgres, o, &r), ENGRAM_EINVAL);
  assert_null(strstr(r.message, "bogus"));
  assert_null(strstr(r.message, "sekrit"));
  result_reset(&r);
  ctx_close(&c);
}

/* A server that accepts the connection but never answers: connect_timeout_ms bounds the open. */
static void silent_server_times_out(void **state) {
  ctx_t c;
  result_t r = {0};
  struct sockaddr_in a;
  socklen_t len = sizeof a;
  int s = socket(AF_INET, SOCK_STREAM, 0);
  char o[512];
  double t0;
  (void)state;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof a), 0);
  assert_int_equal(listen(s, 8), 0);
  assert_int_equal(getsockname(s, (struct sockaddr *)&a, &len), 0);
  ctx_init(&c, NULL);
  snprintf(o, sizeof o, "{\"conninfo\": \"host=127.0.0.1 port=%d user=postgres password=secret123\", \"connect_timeout_ms\": 300}",
           ntohs(a.sin_port));
  t0 = now_s();
  assert_int_equal(add_source(&c, "pg", &engram_source_postgres, o, &r), ENGRAM_EUNAVAILABLE);
  assert_true(now_s() - t0 >= 0.25 && now_s() - t0 < 5.0);
  assert_non_null(strstr(r.message, "connect_timeout_ms"));
  assert_null(strstr(r.message, "secret123"));
  close(s);
  result_reset(&r);
  ctx_close(&c);
}

static void right_password_never_shows_in_info(void **state) {
  ctx_t c;
  result_t r = {0};
  char o[512], *text;
  engram_opts_t eo = on("pg");
  (void)state;
  ensure_up();
  ctx_init(&c, NULL);
  snprintf(o, sizeof o,
           "{\"conninfo\": \"postgresql://" PG_SERVER_PW_USER ":" PG_SERVER_PW_PASS "@127.0.0.1:%d/postgres\", \"table\": \"%s\"}",
           pg_server_port(), unique_name("pw"));
  if (add_source(&c, "pg", &engram_source_postgres, o, &r) != 0) fail_msg("open: %s", r.message);
  assert_int_equal(s_store(&c, "k", "1", &eo, &r), 0);
  assert_int_equal(s_info(&c, &eo, &r), 0);
  text = cJSON_PrintUnformatted(r.info);
  assert_null(strstr(text, PG_SERVER_PW_PASS));
  assert_non_null(strstr(text, "\"user\":\"" PG_SERVER_PW_USER "\""));
  assert_non_null(strstr(text, "\"health\":\"connected\""));
  assert_int_equal((int)cJSON_GetObjectItem(r.info, "items")->valuedouble, 1);
  assert_true(cJSON_GetObjectItem(r.info, "table_bytes")->valuedouble > 0);
  assert_non_null(strstr(cJSON_GetObjectItem(r.info, "server_version")->valuestring, "15."));
  free(text);
  result_reset(&r);
  ctx_close(&c);
}

static void hostile_identifiers_and_options_refused(void **state) {
  ctx_t c;
  result_t r = {0};
  char o[512];
  char out[64];
  (void)state;
  ensure_up();
  ctx_init(&c, NULL);
  snprintf(o, sizeof o, "{\"conninfo\": \"%s\", \"table\": \"x; DROP TABLE y\"}", pg_server_conninfo());
  assert_int_equal(add_source(&c, "pg", &engram_source_postgres, o, &r), ENGRAM_EINVAL);
  assert_non_null(strstr(r.message, "table"));
  snprintf(o, sizeof o, "{\"conninfo\": \"%s\", \"schema\": \"public\\\"; --\"}", pg_server_conninfo());
  assert_int_equal(add_source(&c, "pg", &engram_source_postgres, o, &r), ENGRAM_EINVAL);
  assert_non_null(strstr(r.message, "schema"));
  snprintf(o, sizeof o, "{\"conninfo\": \"%s\", \"table\": \"a123456789012345678901234567890123456789012345678901234567890123\"}",
           pg_server_conninfo());
  assert_int_equal(add_source(&c, "pg", &engram_source_postgres, o, &r), ENGRAM_EINVAL);
  snprintf(o, sizeof o, "{\"conninfo\": \"%s\", \"tabel\": \"x\"}", pg_server_conninfo());
  assert_int_equal(add_source(&c, "pg", &engram_source_postgres, o, &r), ENGRAM_EINVAL);
  assert_non_null(strstr(r.message, "tabel"));
  snprintf(o, sizeof o, "{\"conninfo\": \"%s\", \"connections\": 0}", pg_server_conninfo());
  assert_int_equal(add_source(&c, "pg", &engram_source_postgres, o, &r), ENGRAM_EINVAL);
  /* Nothing named y or "x; DROP..." came to exist. */
  assert_int_equal(psql("SELECT count(*) FROM pg_class WHERE relname LIKE 'x;%' OR relname = 'y'", out, sizeof out), 0);
  assert_string_equal(out, "0");
  result_reset(&r);
  ctx_close(&c);
}

static void awkward_keys_and_values_round_trip(void **state) {
  ctx_t c;
  result_t r = {0};
  engram_opts_t o = on("pg");
  engram_query_t q = ENGRAM_QUERY_INIT;
  const char *keys[] = {"it's", "say \"hi\"", "back\\slash", "\xe6\x97\xa5\xe6\x9c\xac", "emoji \xf0\x9f\x98\x80", "%_like_*"};
  const char *value = "{\"q\": \"it's \\\"quoted\\\" \\\\ back\\\\slash\", \"u\": \"\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e "
                      "\xc3\xa9moji \xf0\x9f\x98\x80\", \"ctl\": \"tab\\there\\nnewline\"}";
  size_t i, n = (size_t)1 << 20, pos = 0;
  char *big;
  cJSON *want = J(value), *bigv;
  (void)state;
  ensure_up();
  ctx_init(&c, NULL);
  add_pg(&c, NULL, NULL, 0);
  o.ns = "n's \"ns\"";
  for (i = 0; i < sizeof keys / sizeof keys[0]; i++) {
    assert_int_equal(s_store(&c, keys[i], value, &o, &r), 0);
    assert_int_equal(s_retrieve(&c, keys[i], &o, &r), 0);
    assert_string_equal(result_key(&r, 0), keys[i]);
    assert_true(cJSON_Compare(result_item(&r, 0, "value"), want, 1));
  }
  /* retrieve_many sends the keys as one text[] parameter: quotes, backslashes and commas survive it, a key given
   * twice is answered twice, a missing one in its place, metadata on request, in input order. */
  {
    const char *many[] = {"say \"hi\"", "missing,{x}", "back\\slash", "it's", "say \"hi\"", "NULL", "emoji \xf0\x9f\x98\x80"};
    const int found[] = {1, 0, 1, 1, 1, 0, 1};
    engram_opts_t om = o;
    om.flags = ENGRAM_OPT_INCLUDE_METADATA;
    om.metadata = want;
    assert_int_equal(s_store(&c, "it's", value, &om, &r), 0);
    result_reset(&r);
    assert_int_equal(engram_retrieve_many(c.mgr, many, 7, &om, capture_cb, &r), 0);
    wait_for(&c, &r.calls, 1, 10000);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.n_items, 7);
    assert_int_equal((int)r.count, 5);
    for (i = 0; i < 7; i++) {
      assert_string_equal(result_key(&r, i), many[i]);
      assert_int_equal((int)result_item(&r, i, "status")->valuedouble, found[i] ? 0 : ENGRAM_ENOTFOUND);
      if (found[i]) assert_true(cJSON_Compare(result_item(&r, i, "value"), want, 1));
    }
    assert_true(cJSON_Compare(result_item(&r, 3, "metadata"), want, 1));
    assert_null(result_item(&r, 0, "metadata"));
    result_reset(&r);
  }
  assert_int_equal(s_list(&c, "%*", 100, NULL, &o, &r), 0);
  assert_int_equal(r.n_items, 1); /* % and _ are literal: no LIKE anywhere */
  assert_string_equal(result_key(&r, 0), "%_like_*");
  /* A 1 MiB value of words: round trip, and a word deep inside it is searchable. */
  big = malloc(n + 64);
  big[pos++] = '"';
  for (i = 0; pos < n; i++) pos += (size_t)sprintf(big + pos, "w%zu ", i % 5000);
  pos += (size_t)sprintf(big + pos, "needleword\"");
  bigv = J(big);
  o = on("pg");
  assert_int_equal(s_store(&c, "big", big, &o, &r), 0);
  assert_int_equal(s_retrieve(&c, "big", &o, &r), 0);
  assert_true(cJSON_Compare(result_item(&r, 0, "value"), bigv, 1));
  q.text = "needleword";
  assert_int_equal(s_search(&c, &q, &o, &r), 0);
  assert_int_equal(r.n_items, 1);
  assert_string_equal(result_key(&r, 0), "big");
  cJSON_Delete(bigv);
  free(big);
  cJSON_Delete(want);
  result_reset(&r);
  ctx_close(&c);
}

/* retrieve_many of a run of neighbouring keys (a window's messages: the same text but for a trailing number of one
 * width) is one key-range scan (PGS_GET_RUN) plus probes for the other keys: rows in the range that no key asked for
 * are skipped, an expired row there is not found, a key given twice is answered twice, missing keys are not found;
 * and when other keys crowd the range past the scan's cap, the call is answered by probes, just as right. info
 * counts both paths, so this test fails if the range scan is never taken. */
static void retrieve_many_of_a_run_reads_its_key_range(void **state) {
  ctx_t c;
  result_t r = {0};
  engram_opts_t o = on("pg");
  char table[64], key[32], val[32], sql[512], out[64];
  const char *many[40];
  char names[40][16];
  int want[40], i, n = 0, round;
  (void)state;
  ensure_up();
  ctx_init(&c, NULL);
  add_pg(&c, NULL, table, sizeof table);
  for (i = 1; i <= 30; i++) {
    snprintf(key, sizeof key, "m:%04d", i);
    snprintf(val, sizeof val, "{\"n\": %d}", i);
    assert_int_equal(s_store(&c, key, val, &o, &r), 0);
  }
  assert_int_equal(s_store(&c, "other", "{\"n\": 1000}", &o, &r), 0);
  /* inside the range, asked for by no key */
  snprintf(sql, sizeof sql, "INSERT INTO public.\"%s\" (key, value) VALUES ('m:0015x', '\"intruder\"')", table);
  assert_int_equal(psql(sql, out, sizeof out), 0);
  snprintf(sql, sizeof sql, "UPDATE public.\"%s\" SET expires_at = 1 WHERE key = 'm:0010'", table);
  assert_int_equal(psql(sql, out, sizeof out), 0);
  snprintf(sql, sizeof sql, "DELETE FROM public.\"%s\" WHERE key = 'm:0020'", table);
  assert_int_equal(psql(sql, out, sizeof out), 0);
  /* the keys, out of order: 25, then 3..24, 12 again, other, zzz */
  snprintf(names[n], sizeof names[n], "m:0025"), want[n++] = 25;
  for (i = 3; i <= 24; i++) snprintf(names[n], sizeof names[n], "m:%04d", i), want[n++] = i == 10 || i == 20 ? 0 : i;
  snprintf(names[n], sizeof names[n], "m:0012"), want[n++] = 12;
  snprintf(names[n], sizeof names[n], "other"), want[n++] = 1000;
  snprintf(names[n], sizeof names[n], "zzz"), want[n++] = 0;
  for (i = 0; i < n; i++) many[i] = names[i];
  for (round = 0; round < 2; round++) {
    int found = 0;
    if (round == 1) { /* 60 rows crowd the range: more than the scan's cap (30 numbers + 17) */
      snprintf(sql, sizeof sql, "INSERT INTO public.\"%s\" (key, value) SELECT 'm:0005x' || lpad(g::text, 2, '0'), "
                                "'0' FROM generate_series(1, 60) g", table);
      assert_int_equal(psql(sql, out, sizeof out), 0);
    }
    result_reset(&r);
    assert_int_equal(engram_retrieve_many(c.mgr, many, (size_t)n, &o, capture_cb, &r), 0);
    wait_for(&c, &r.calls, 1, 10000);
    assert_int_equal(r.status, 0);
    assert_int_equal((int)r.n_items, n);
    for (i = 0; i < n; i++) {
      const cJSON *v = result_item(&r, (size_t)i, "value");
      assert_string_equal(result_key(&r, (size_t)i), many[i]);
      assert_int_equal((int)result_item(&r, (size_t)i, "status")->valuedouble, want[i] ? 0 : ENGRAM_ENOTFOUND);
      if (want[i] == 0) continue;
      found++;
      assert_non_null(v);
      assert_int_equal((int)cJSON_GetObjectItem(v, "n")->valuedouble, want[i]);
    }
    assert_int_equal((int)r.count, found);
    result_reset(&r);
    assert_int_equal((int)info_number(&c, "pg", "retrieve_many_range_scans", &r), 1);
    assert_int_equal((int)info_number(&c, "pg", "retrieve_many_range_fallbacks", &r), round);
    result_reset(&r);
  }
  /* the range scan sends the rows' metadata only when asked (its last parameter): m:0021..m:0030, m:0025 with some */
  snprintf(sql, sizeof sql, "UPDATE public.\"%s\" SET metadata = '{\"k\": 25}' WHERE key = 'm:0025'", table);
  assert_int_equal(psql(sql, out, sizeof out), 0);
  for (i = 0; i < 10; i++) snprintf(names[i], sizeof names[i], "m:%04d", 21 + i), many[i] = names[i];
  for (round = 0; round < 2; round++) {
    engram_opts_t om = o;
    om.flags = round ? ENGRAM_OPT_INCLUDE_METADATA : 0;
    result_reset(&r);
    assert_int_equal(engram_retrieve_many(c.mgr, many, 10, &om, capture_cb, &r), 0);
    wait_for(&c, &r.calls, 1, 10000);
    assert_int_equal(r.status, 0);
    assert_int_equal((int)cJSON_GetObjectItem(result_item(&r, 4, "value"), "n")->valuedouble, 25);
    if (round) assert_int_equal((int)cJSON_GetObjectItem(result_item(&r, 4, "metadata"), "k")->valuedouble, 25);
    else assert_null(result_item(&r, 4, "metadata"));
    assert_null(result_item(&r, 3, "metadata"));
  }
  result_reset(&r);
  assert_int_equal((int)info_number(&c, "pg", "retrieve_many_range_scans", &r), 3);
  result_reset(&r);
  ctx_close(&c);
}

/* Updates queued behind one of their key are chained: each runs its function on the row the one before writes and
 * its statement goes in the same segment, conditional on that statement having written (the chain token). 40
 * increments in one turn end at 40, each reply with its own version. Then a plain store slips in between (update,
 * store, update, update, all in one turn): the first update's condition fails, and the second's predicted row
 * (version + 1) now exists with the store's value — only the chain token keeps it from writing 42 over the
 * store's 100; both chained updates run again from a fresh read, and the counter ends at 103 (44 without the
 * token check: checked by mutation). */
typedef struct {
  int answered, ok;
  uint64_t version[64];
} incr_t;

static int incr_fn(const cJSON *current, cJSON **next, void *fn_ud) {
  (void)fn_ud;
  *next = cJSON_CreateNumber((cJSON_IsNumber(current) ? current->valuedouble : 0) + 1);
  return *next ? 0 : ENGRAM_ENOMEM;
}

static void incr_cb(int status, const engram_reply_t *reply, void *ud) {
  incr_t *x = ud;
  if (status == 0 && reply->n_items == 1 && x->ok < 64) x->version[x->ok++] = reply->items[0].version;
  x->answered++;
}

static void queued_updates_chain_and_redo_after_another_writer(void **state) {
  ctx_t c;
  result_t r = {0};
  engram_opts_t o = on("pg");
  incr_t x;
  cJSON *hundred = cJSON_CreateNumber(100);
  int i, j;
  (void)state;
  ensure_up();
  ctx_init(&c, NULL);
  add_pg(&c, NULL, NULL, 0);
  assert_int_equal(s_store(&c, "ctr", "0", &o, &r), 0);
  memset(&x, 0, sizeof x);
  for (i = 0; i < 40; i++) assert_int_equal(engram_update(c.mgr, "ctr", incr_fn, NULL, &o, incr_cb, &x), 0);
  wait_for(&c, &x.answered, 40, 30000);
  assert_int_equal(x.ok, 40);
  for (i = 0; i < 40; i++)
    for (j = i + 1; j < 40; j++) assert_true(x.version[i] != x.version[j]);
  assert_int_equal(s_retrieve(&c, "ctr", &o, &r), 0);
  assert_int_equal((int)result_item(&r, 0, "value")->valuedouble, 40);
  assert_true(info_number(&c, "pg", "updates_chained", &r) >= 20); /* 39 wait behind the first */
  assert_int_equal((int)info_number(&c, "pg", "updates_chained_redone", &r), 0);
  result_reset(&r);
  memset(&x, 0, sizeof x);
  assert_int_equal(engram_update(c.mgr, "ctr", incr_fn, NULL, &o, incr_cb, &x), 0);
  assert_int_equal(engram_store(c.mgr, "ctr", hundred, &o, capture_cb, &r), 0);
  assert_int_equal(engram_update(c.mgr, "ctr", incr_fn, NULL, &o, incr_cb, &x), 0);
  assert_int_equal(engram_update(c.mgr, "ctr", incr_fn, NULL, &o, incr_cb, &x), 0);
  wait_for(&c, &x.answered, 3, 30000);
  wait_for(&c, &r.calls, 1, 30000);
  assert_int_equal(r.status, 0);
  assert_int_equal(x.ok, 3);
  result_reset(&r);
  assert_int_equal(s_retrieve(&c, "ctr", &o, &r), 0);
  assert_int_equal((int)result_item(&r, 0, "value")->valuedouble, 103);
  assert_true(info_number(&c, "pg", "updates_chained_redone", &r) >= 1);
  result_reset(&r);
  cJSON_Delete(hundred);
  ctx_close(&c);
}

/* A delete and stores of the key between an update's read and its write must not make a stale write look current
 * (tag_fn, tag_cb: tests/support/harness.h). */
/* Update a, update b (waiting behind a, so chained on what a writes), then a delete and two stores that rebuild
 * exactly the row a would write ("a" at version 2), all in one turn: a's write fails (the row is not the one it
 * read), and b's must fail with it, so that both run again in call order: "a" + "a" + "b". When the chained
 * write was conditional on the predicted version and value only, b wrote "ab" over the stores' row and a ran
 * after it: "aba", b answered before a. */
static void chained_update_never_overtakes_the_one_it_follows(void **state) {
  ctx_t c;
  result_t r = {0}, d = {0}, s1 = {0}, s2 = {0};
  engram_opts_t o = on("pg");
  tags_t x;
  cJSON *vx = cJSON_CreateString("x"), *va = cJSON_CreateString("a");
  (void)state;
  ensure_up();
  ctx_init(&c, NULL);
  add_pg(&c, NULL, NULL, 0);
  assert_int_equal(s_store(&c, "tagged", "\"\"", &o, &r), 0);
  result_reset(&r);
  memset(&x, 0, sizeof x);
  assert_int_equal(engram_update(c.mgr, "tagged", tag_fn, "a", &o, tag_cb, &x), 0);
  assert_int_equal(engram_update(c.mgr, "tagged", tag_fn, "b", &o, tag_cb, &x), 0);
  assert_int_equal(engram_delete(c.mgr, "tagged", &o, capture_cb, &d), 0);
  assert_int_equal(engram_store(c.mgr, "tagged", vx, &o, capture_cb, &s1), 0);
  assert_int_equal(engram_store(c.mgr, "tagged", va, &o, capture_cb, &s2), 0);
  wait_for(&c, &x.answered, 2, 30000);
  wait_for(&c, &s2.calls, 1, 30000);
  assert_int_equal(d.status, 0);
  assert_int_equal(s1.status, 0);
  assert_int_equal(s2.status, 0);
  assert_int_equal(x.answered, 2);
  assert_int_equal(x.status[0], 0);
  assert_int_equal(x.status[1], 0);
  assert_string_equal(x.value[0], "aa"); /* a answered first, b second */
  assert_string_equal(x.value[1], "aab");
  assert_true(x.version[0] < x.version[1]);
  assert_int_equal(s_retrieve(&c, "tagged", &o, &r), 0);
  assert_string_equal(result_item(&r, 0, "value")->valuestring, "aab");
  result_reset(&r);
  result_reset(&d);
  result_reset(&s1);
  result_reset(&s2);
  cJSON_Delete(vx);
  cJSON_Delete(va);
  ctx_close(&c);
}

/* An update reads "" at version 1; a delete and a store of "x" (version 1 again) come in before its write. The
 * write is conditional on the row the update read — its version, the transaction that wrote it (chg) and its place
 * (ctid) — so it fails and the update runs again on "x": "xa". On the version alone it wrote "a" over the store's
 * "x", a function of a value already deleted, with the deleted row's metadata and expiry instead of the store's.
 * Twice: the row read written in an earlier transaction (chg tells it from the new one), then in the same one as
 * the delete and the new row (the first store in the same turn: only ctid tells them apart; checked by mutation). */
static void update_never_writes_over_a_recreated_row(void **state) {
  ctx_t c;
  result_t r = {0}, d = {0}, s1 = {0};
  engram_opts_t o = on("pg"), ot = on("pg");
  tags_t x;
  cJSON *vx = cJSON_CreateString("x"), *md = cJSON_Parse("{\"m\": 1}");
  int round;
  (void)state;
  ensure_up();
  ctx_init(&c, NULL);
  add_pg(&c, NULL, NULL, 0);
  ot.metadata = md;
  ot.ttl_ms = 3600000;
  ot.flags |= ENGRAM_OPT_TTL;
  for (round = 0; round < 2; round++) {
    result_t s0 = {0};
    engram_opts_t om = o;
    cJSON *empty = cJSON_CreateString("");
    const char *key = round == 0 ? "recreated" : "recreated-in-one-turn";
    if (round == 0) { /* the row read is written in an earlier transaction */
      assert_int_equal(engram_store(c.mgr, key, empty, &o, capture_cb, &s0), 0);
      wait_for(&c, &s0.calls, 1, 30000);
    } else { /* ... in the same one (same turn, same segment) */
      assert_int_equal(engram_store(c.mgr, key, empty, &o, capture_cb, &s0), 0);
    }
    memset(&x, 0, sizeof x);
    assert_int_equal(engram_update(c.mgr, key, tag_fn, "a", &o, tag_cb, &x), 0);
    assert_int_equal(engram_delete(c.mgr, key, &o, capture_cb, &d), 0);
    assert_int_equal(engram_store(c.mgr, key, vx, &ot, capture_cb, &s1), 0);
    wait_for(&c, &x.answered, 1, 30000);
    wait_for(&c, &s1.calls, 1, 30000);
    assert_int_equal(s0.status, 0);
    assert_int_equal(d.status, 0);
    assert_int_equal(s1.status, 0);
    assert_int_equal(x.answered, 1);
    assert_int_equal(x.status[0], 0);
    om.flags |= ENGRAM_OPT_INCLUDE_METADATA;
    assert_int_equal(s_retrieve(&c, key, &om, &r), 0);
    assert_string_equal(result_item(&r, 0, "value")->valuestring, "xa");
    assert_non_null(result_item(&r, 0, "metadata"));
    assert_int_equal((int)cJSON_GetNumberValue(cJSON_GetObjectItem(result_item(&r, 0, "metadata"), "m")), 1);
    assert_non_null(result_item(&r, 0, "expires_at_ms"));
    assert_true(result_item(&r, 0, "expires_at_ms")->valuedouble > 0);
    result_reset(&r);
    result_reset(&d);
    result_reset(&s0);
    result_reset(&s1);
    cJSON_Delete(empty);
  }
  cJSON_Delete(vx);
  cJSON_Delete(md);
  ctx_close(&c);
}

/* Values come back from jsonb's text through the source's own parser (postgres_json.c: a fast path for common
 * shapes, cJSON for the rest): each must read back as cJSON parses the stored text — same members in jsonb's
 * order, same numbers, same strings — through retrieve and retrieve_many alike. */
static void jsonb_values_read_back_as_cjson_parses_them(void **state) {
  ctx_t c;
  result_t r = {0};
  engram_opts_t o = on("pg");
  static char deep[400];
  const char *texts[] = {
      "{\"a\": 1, \"b\": -2, \"seq\": 123456789012345, \"role\": \"user\", \"content\": \"line\\nnext \\\"q\\\" \\\\ "
      "\\/ \\t \\b \\f \\r\", \"created_at_ms\": 1765000000000}",
      "[1.5, -0.25, 1e300, 12345678901234567890, 1234567890123456, 999999999999999, -999999999999999, 0, 2147483648]",
      "{\"u\": \"\\u00e9\\u0001 \\ud83d\\ude00 \xe6\x97\xa5\"}",
      "{\"x\": [true, false, null, {\"y\": [\"z\", {}, []]}], \"zz\": \"\"}",
      "[\"abcdefghijklmnopqrstuvwxyz0123456789 then a \\\"quote\\\" and a tab\\t after a long run\", "
      "\"\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe3\x81\xae\xe3\x83\x86\xe3\x82\xad\xe3\x82\xb9\xe3\x83\x88 \\\"q\\\" "
      "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\\n\", \"01234567\\\\\", \"0123456789abcde\"]",
      "\"just a string\"", "42", "-7", "true", "false", "null", "[]", "{}", "[0, 10, 100]",
      deep,
  };
  const char *keys[16];
  char keybuf[16][8];
  size_t n = sizeof texts / sizeof texts[0], i, d;
  (void)state;
  for (d = 0; d < 70; d++) deep[d] = '[';
  deep[d++] = '1';
  for (i = 0; i < 70; i++) deep[d++] = ']';
  deep[d] = '\0';
  ensure_up();
  ctx_init(&c, NULL);
  add_pg(&c, NULL, NULL, 0);
  for (i = 0; i < n; i++) {
    snprintf(keybuf[i], sizeof keybuf[i], "j%zu", i);
    keys[i] = keybuf[i];
    assert_int_equal(s_store(&c, keys[i], texts[i], &o, &r), 0);
  }
  result_reset(&r);
  assert_int_equal(engram_retrieve_many(c.mgr, keys, n, &o, capture_cb, &r), 0);
  wait_for(&c, &r.calls, 1, 10000);
  assert_int_equal(r.status, 0);
  assert_int_equal((int)r.count, (int)n);
  for (i = 0; i < n; i++) {
    cJSON *want = cJSON_Parse(texts[i]);
    char *a = cJSON_PrintUnformatted(want), *b = cJSON_PrintUnformatted(result_item(&r, i, "value"));
    result_t one = {0};
    char *e;
    assert_non_null(a);
    assert_non_null(b);
    if (strcmp(a, b) != 0) fail_msg("value %zu: stored %s, read back %s", i, a, b);
    assert_int_equal(s_retrieve(&c, keys[i], &o, &one), 0);
    e = cJSON_PrintUnformatted(result_item(&one, 0, "value"));
    assert_string_equal(e, a);
    free(e);
    result_reset(&one);
    free(a);
    free(b);
    cJSON_Delete(want);
  }
  result_reset(&r);
  ctx_close(&c);
}

/* ---- A failing statement inside a pipeline ---- */

/* Plain stores queued in one loop turn leave as group statements (PGS_STORE_MANY, postgres_group.c), and each call
 * is answered as its own statement would have answered it: versions in call order for a key written several times
 * (a group never holds a key twice), version 1 and a new created_at over an expired row, version + 1 over a live
 * one, metadata and expiry as given, awkward keys and namespaces byte for byte (they travel as JSON strings), and a
 * text search right after sees every acknowledged write. info counts the groups, so this test fails if no group is
 * ever sent. (failing_statement_fails_only_its_call and statement_timeout_fails_only_the_slow_call run a group whose
 * statement fails: its stores go again one by one.) */
static void stores_in_one_turn_leave_as_one_statement(void **state) {
  enum { N = 160 };
  ctx_t c;
  char table[64], sql[512], out[256];
  static char keybuf[N][32], valbuf[N][96];
  static result_t res[N];
  static const char *const awkward[] = {"it's", "say \"hi\"", "back\\slash", "ctl\x01\x1f end", "\xe6\x97\xa5\xe6\x9c\xac"};
  result_t r = {0};
  engram_opts_t o = on("pg");
  cJSON *meta = J("{\"tag\": \"m\", \"n\": 0.1}");
  int64_t t0;
  int i, same = 0;
  (void)state;
  ensure_up();
  ctx_init(&c, NULL);
  add_pg(&c, NULL, table, sizeof table);
  o.ns = "g's \"ns\"\\";
  assert_int_equal(s_store(&c, "live", "0", &o, &r), 0);
  assert_int_equal(s_store(&c, "exp", "0", &o, &r), 0);
  snprintf(sql, sizeof sql, "UPDATE public.\"%s\" SET expires_at = 1, created_at = 1 WHERE key = 'exp'", table);
  assert_int_equal(psql(sql, out, sizeof out), 0);
  t0 = engram_now_ms();
  for (i = 0; i < N; i++) {
    engram_opts_t oi = o;
    cJSON *v;
    if (i % 10 == 0) snprintf(keybuf[i], sizeof keybuf[i], "same");
    else if (i == 3) snprintf(keybuf[i], sizeof keybuf[i], "live");
    else if (i == 7) snprintf(keybuf[i], sizeof keybuf[i], "exp");
    else if (i % 10 == 5 && i / 10 < 5) snprintf(keybuf[i], sizeof keybuf[i], "%s", awkward[i / 10]);
    else snprintf(keybuf[i], sizeof keybuf[i], "k%03d", i);
    snprintf(valbuf[i], sizeof valbuf[i], "{\"text\": \"grouped uniq%03d words\", \"i\": %d, \"f\": 0.1}", i, i);
    if (i % 3 == 0) oi.metadata = meta;
    if (i % 4 == 1) {
      oi.flags |= ENGRAM_OPT_TTL;
      oi.ttl_ms = 600000;
    }
    v = J(valbuf[i]);
    result_reset(&res[i]);
    assert_int_equal(engram_store(c.mgr, keybuf[i], v, &oi, capture_cb, &res[i]), 0);
    cJSON_Delete(v);
  }
  for (i = 0; i < N; i++) wait_for(&c, &res[i].calls, 1, 30000);
  for (i = 0; i < N; i++) {
    int64_t want = i % 10 == 0 ? ++same : i == 3 ? 2 : 1;
    engram_opts_t om = o;
    if (res[i].status != 0) fail_msg("store %d (%s): %s %s", i, keybuf[i], engram_err_name(res[i].status), res[i].message);
    assert_int_equal(res[i].calls, 1);
    assert_int_equal((int64_t)result_item(&res[i], 0, "version")->valuedouble, want);
    if (i != 3 && i % 10 != 0) /* "exp" too: its expired row's created_at (1) is replaced */ assert_true((int64_t)result_item(&res[i], 0, "created_at_ms")->valuedouble >= t0);
    if (i % 10 == 0 && i < N - 10) continue; /* "same": only its last value stays */
    om.flags = ENGRAM_OPT_INCLUDE_METADATA;
    assert_int_equal(s_retrieve(&c, keybuf[i], &om, &r), 0);
    assert_string_equal(result_key(&r, 0), keybuf[i]);
    assert_int_equal((int)cJSON_GetObjectItem(result_item(&r, 0, "value"), "i")->valuedouble, i);
    if (i % 3 == 0) assert_true(cJSON_Compare(result_item(&r, 0, "metadata"), meta, 1));
    else assert_null(result_item(&r, 0, "metadata"));
    if (i % 4 == 1) assert_true((int64_t)result_item(&r, 0, "expires_at_ms")->valuedouble >= t0 + 600000);
    else assert_true(result_item(&r, 0, "expires_at_ms") == NULL || result_item(&r, 0, "expires_at_ms")->valuedouble == 0);
  }
  assert_true(info_number(&c, "pg", "store_groups", &r) >= 1);
  assert_true(info_number(&c, "pg", "stores_grouped", &r) >= N / 2);
  /* The rows as psql reads them: the namespace and the keys byte for byte, metadata NULL where none was given. */
  snprintf(sql, sizeof sql, "SELECT count(*) FROM public.\"%s\" WHERE namespace = E'g''s \"ns\"\\\\' AND key IN "
           "(E'ctl\\x01\\x1f end', 'say \"hi\"', E'back\\\\slash', 'it''s', U&'\\65E5\\672C')", table);
  assert_int_equal(psql(sql, out, sizeof out), 0);
  assert_string_equal(out, "5");
  /* A text search right after the writes sees them. */
  assert_string_equal(text_keys(&c, "pg", o.ns, "uniq077", &r), "k077");
  assert_string_equal(text_keys(&c, "pg", o.ns, "uniq150", &r), "same");
  assert_string_equal(text_keys(&c, "pg", o.ns, "uniq140", &r), "");
  assert_string_equal(text_keys(&c, "pg", o.ns, "uniq035", &r), "ctl\x01\x1f end");
  cJSON_Delete(meta);
  for (i = 0; i < N; i++) result_reset(&res[i]);
  result_reset(&r);
  ctx_close(&c);
}

static void store_burst(ctx_t *c, const char *const *keys, const char *const *values, const unsigned *flags, size_t n,
                        tally_t *t) {
  size_t i;
  g_done = 0;
  for (i = 0; i < n; i++) {
    engram_opts_t o = on("pg");
    cJSON *v = J(values[i]);
    o.flags = flags ? flags[i] : 0;
    t[i].calls = 0;
    assert_int_equal(engram_store(c->mgr, keys[i], v, &o, tally_cb, &t[i]), 0);
    cJSON_Delete(v);
  }
  wait_for(c, &g_done, (int)n, 30000);
}

static void failing_statement_fails_only_its_call(void **state) {
  ctx_t c;
  result_t r = {0};
  engram_opts_t o = on("pg");
  char table[64], sql[1024], out[256];
  const char *k3[] = {"b", "a", "c"}, *v3[] = {"1", "2", "3"};
  unsigned f3[] = {0, ENGRAM_OPT_CREATE_ONLY, 0};
  tally_t t3[3];
  static const char *keys[300];
  static char keybuf[300][16], valbuf[300][48];
  static const char *vals[300];
  static tally_t t[300];
  int i;
  (void)state;
  ensure_up();
  ctx_init(&c, NULL);
  add_pg(&c, NULL, table, sizeof table);
  assert_int_equal(s_store(&c, "a", "0", &o, &r), 0);
  /* A create-only conflict between two successful stores in one burst. */
  store_burst(&c, k3, v3, f3, 3, t3);
  assert_int_equal(t3[0].status, 0);
  assert_int_equal(t3[1].status, ENGRAM_EEXIST);
  assert_int_equal(t3[2].status, 0);
  assert_int_equal(s_retrieve(&c, "a", &o, &r), 0);
  assert_int_equal((int)result_item(&r, 0, "value")->valuedouble, 0);
  /* A statement the server rejects (a trigger raising an error for one key) in the middle of 300 pipelined
   * stores, around writes of one key whose order must survive the replay. */
  snprintf(sql, sizeof sql,
           "CREATE FUNCTION public.poison_%s() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN IF NEW.key LIKE 'poison%%' "
           "THEN RAISE EXCEPTION 'poisoned key %%', NEW.key; END IF; RETURN NEW; END $$; CREATE TRIGGER poison BEFORE "
           "INSERT OR UPDATE ON public.\"%s\" FOR EACH ROW EXECUTE FUNCTION public.poison_%s()", table, table, table);
  assert_int_equal(psql(sql, out, sizeof out), 0);
  for (i = 0; i < 300; i++) {
    if (i % 10 == 0) snprintf(keybuf[i], sizeof keybuf[i], "same");
    else if (i == 155) snprintf(keybuf[i], sizeof keybuf[i], "poison1");
    else snprintf(keybuf[i], sizeof keybuf[i], "k%03d", i);
    snprintf(valbuf[i], sizeof valbuf[i], "{\"i\": %d}", i);
    keys[i] = keybuf[i];
    vals[i] = valbuf[i];
  }
  store_burst(&c, keys, vals, NULL, 300, t);
  for (i = 0; i < 300; i++) {
    assert_int_equal(t[i].calls, 1);
    if (i == 155) assert_int_equal(t[i].status, ENGRAM_EBACKEND);
    else if (t[i].status != 0) fail_msg("store %d (%s): %s", i, keys[i], engram_err_name(t[i].status));
  }
  assert_int_equal(count_rows(table, "key LIKE 'k%'"), 270 - 1);
  assert_int_equal(count_rows(table, "key = 'poison1'"), 0);
  assert_int_equal(s_retrieve(&c, "same", &o, &r), 0);
  assert_int_equal((int)cJSON_GetObjectItem(result_item(&r, 0, "value"), "i")->valuedouble, 290);
  /* The failing call's message carries the server's. */
  {
    result_t pr = {0};
    assert_int_equal(s_store(&c, "poison2", "1", &o, &pr), ENGRAM_EBACKEND);
    assert_non_null(strstr(pr.message, "poisoned key poison2"));
    result_reset(&pr);
  }
  /* Invalid UTF-8 inside a value is refused at the call (the core checks values at submit; no callback), and
   * the calls around it go through. */
  {
    static const char *kb[] = {"u1", "u2", "u3"};
    tally_t tb[3];
    cJSON *bad = cJSON_CreateString("ok \xff bad");
    g_done = 0;
    memset(tb, 0, sizeof tb);
    {
      cJSON *one = J("1"), *three = J("3");
      assert_int_equal(engram_store(c.mgr, kb[0], one, &o, tally_cb, &tb[0]), 0);
      assert_int_equal(engram_store(c.mgr, kb[1], bad, &o, tally_cb, &tb[1]), ENGRAM_EINVAL);
      assert_non_null(strstr(engram_last_error(), "invalid UTF-8"));
      assert_int_equal(engram_store(c.mgr, kb[2], three, &o, tally_cb, &tb[2]), 0);
      cJSON_Delete(one);
      cJSON_Delete(three);
    }
    cJSON_Delete(bad);
    wait_for(&c, &g_done, 2, 30000);
    assert_int_equal(tb[0].status, 0);
    assert_int_equal(tb[1].calls, 0);
    assert_int_equal(tb[2].status, 0);
  }
  assert_int_equal(s_info(&c, &o, &r), 0);
  assert_true(cJSON_GetObjectItem(r.info, "statements_failed")->valuedouble >= 2); /* poison1 and poison2; u2 never reached the server */
  result_reset(&r);
  ctx_close(&c);
}

/* statement_timeout_ms: a statement the server cancels fails its call with ENGRAM_ETIMEDOUT, alone. */
/* statement_timeout_ms bounds calls, not the opening: the schema's DO block (tables, indexes, the tokenizer
 * function, an advisory lock another program may hold) runs under connect_timeout_ms when that is longer. With
 * 1 ms it used to be cancelled on every fresh table (and with 100 ms under load), so the source never opened. */
static void statement_timeout_spares_the_schema_setup(void **state) {
  ctx_t c;
  char table[64];
  (void)state;
  ensure_up();
  ctx_init(&c, NULL);
  add_pg(&c, "\"statement_timeout_ms\": 1", table, sizeof table);
  assert_int_equal(count_rows(table, "true"), 0); /* the table exists */
  ctx_close(&c);
}

static void statement_timeout_fails_only_the_slow_call(void **state) {
  ctx_t c;
  char table[64], sql[1024], out[256];
  const char *keys[] = {"fast1", "slow", "fast2"}, *vals[] = {"1", "2", "3"};
  tally_t t[3];
  result_t r = {0};
  engram_opts_t o = on("pg");
  (void)state;
  ensure_up();
  ctx_init(&c, NULL);
  add_pg(&c, "\"statement_timeout_ms\": 100", table, sizeof table);
  snprintf(sql, sizeof sql,
           "CREATE FUNCTION public.slow_%s() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN IF NEW.key = 'slow' THEN "
           "PERFORM pg_sleep(2); END IF; RETURN NEW; END $$; CREATE TRIGGER slow BEFORE INSERT ON public.\"%s\" "
           "FOR EACH ROW EXECUTE FUNCTION public.slow_%s()", table, table, table);
  assert_int_equal(psql(sql, out, sizeof out), 0);
  memset(t, 0, sizeof t);
  store_burst(&c, keys, vals, NULL, 3, t);
  assert_int_equal(t[0].status, 0);
  assert_int_equal(t[1].status, ENGRAM_ETIMEDOUT);
  assert_int_equal(t[2].status, 0);
  assert_int_equal(s_retrieve(&c, "fast2", &o, &r), 0);
  assert_int_equal(s_retrieve(&c, "slow", &o, &r), ENGRAM_ENOTFOUND);
  result_reset(&r);
  ctx_close(&c);
}

/* ---- Down: fail fast, or wait ---- */

static void down_fails_fast_or_waits(void **state) {
  ctx_t c;
  result_t r = {0}, w1 = {0}, w2 = {0};
  engram_opts_t fast = on("fast"), wait = on("wait");
  char o[2048];
  double t0;
  cJSON *v = J("{\"w\": 1}");
  (void)state;
  ensure_up();
  ctx_init(&c, NULL);
  snprintf(o, sizeof o, "%s", pg_opts(NULL, NULL, 0));
  assert_int_equal(add_source(&c, "fast", &engram_source_postgres, o, &r), 0);
  snprintf(o, sizeof o, "%s", pg_opts("\"wait_for_connection\": true", NULL, 0));
  assert_int_equal(add_source(&c, "wait", &engram_source_postgres, o, &r), 0);
  assert_int_equal(pg_server_kill9(), 0);
  run_for(&c, 100); /* both notice (their sockets close) */
  t0 = now_s();
  assert_int_equal(s_store(&c, "k", "1", &fast, &r), ENGRAM_EUNAVAILABLE);
  assert_true(now_s() - t0 < 0.5);
  assert_non_null(strstr(r.message, "127.0.0.1"));
  assert_int_equal(s_info(&c, &fast, &r), 0);
  assert_string_not_equal(cJSON_GetObjectItem(r.info, "health")->valuestring, "connected");
  /* Waiting with a short deadline: ETIMEDOUT at the deadline. */
  wait.deadline_ms = 300;
  t0 = now_s();
  assert_int_equal(s_store(&c, "k", "1", &wait, &r), ENGRAM_ETIMEDOUT);
  assert_true(now_s() - t0 >= 0.25);
  /* Waiting with a long deadline: served once the server is back. */
  wait.deadline_ms = 20000;
  assert_int_equal(engram_store(c.mgr, "k1", v, &wait, capture_cb, &w1), 0);
  assert_int_equal(engram_retrieve(c.mgr, "k1", &wait, capture_cb, &w2), 0);
  run_for(&c, 200);
  assert_int_equal(w1.calls, 0);
  assert_int_equal(pg_server_restart(), 0);
  wait_for(&c, &w2.calls, 1, 10000);
  assert_int_equal(w1.calls, 1);
  assert_int_equal(w1.status, 0);
  assert_int_equal(w2.status, 0); /* in order: the store went first */
  t0 = now_s();
  while (s_store(&c, "k", "1", &fast, &r) != 0) { /* the fail-fast source reconnects by itself too */
    assert_int_equal(r.status, ENGRAM_EUNAVAILABLE);
    assert_true(now_s() - t0 < 2.0);
    run_for(&c, 20);
  }
  assert_int_equal(s_info(&c, &fast, &r), 0);
  assert_string_equal(cJSON_GetObjectItem(r.info, "health")->valuestring, "connected");
  assert_true(cJSON_GetObjectItem(r.info, "reconnects")->valuedouble >= 1);
  cJSON_Delete(v);
  result_reset(&r);
  result_reset(&w1);
  result_reset(&w2);
  ctx_close(&c);
}

/* ---- Callbacks that submit again while the server is down ---- */

/* Updates of one key wait behind each other in the source (a chain per key). With the server down each fails at
 * once, and a callback that tries again at once fed the chain a new update for every one it failed; when a
 * completion admitted mailbox requests itself, the loop turn never ended, its timers never ran, and the source
 * never reconnected. Here 64 updates of one key retry from their callbacks while PostgreSQL is killed and
 * restarted: a 10 ms timer must keep firing (a watchdog thread aborts the test when it stops for 15 s), the
 * source reconnects, and every call is answered once. */
typedef struct {
  ctx_t *c;
  engram_opts_t o;
  int stop, submitted, answered, ok, unavailable, other;
} retry_t;

static int bump_fn(const cJSON *current, cJSON **next, void *fn_ud) {
  (void)current;
  (void)fn_ud;
  *next = cJSON_CreateNumber(1);
  return *next ? 0 : ENGRAM_ENOMEM;
}

static void retry_cb(int status, const engram_reply_t *reply, void *ud) {
  retry_t *r = ud;
  (void)reply;
  r->answered++;
  if (status == 0) r->ok++;
  else if (status == ENGRAM_EUNAVAILABLE) r->unavailable++;
  else r->other++;
  if (!r->stop && engram_update(r->c->mgr, "hot", bump_fn, NULL, &r->o, retry_cb, r) == 0) r->submitted++;
}

static int ticks;
static atomic_int watchdog_ticks, watchdog_done;
static void tick_cb(uv_timer_t *t) {
  (void)t;
  ticks++;
  atomic_fetch_add(&watchdog_ticks, 1);
}

static void watchdog(void *arg) {
  int last = -1, still = 0;
  (void)arg;
  while (!atomic_load(&watchdog_done)) {
    int now = atomic_load(&watchdog_ticks);
    still = now == last ? still + 1 : 0;
    last = now;
    if (still >= 150) { /* 15 s without a timer tick */
      fprintf(stderr, "retrying_updates_while_down: the loop stopped turning (no 10 ms tick for 15 s)\n");
      abort();
    }
    usleep(100000);
  }
}

static void retrying_updates_while_down_keep_the_loop_turning(void **state) {
  ctx_t c;
  retry_t r;
  uv_timer_t tick;
  uv_thread_t dog;
  int i, ticks_before;
  (void)state;
  ensure_up();
  ctx_init(&c, NULL);
  add_pg(&c, NULL, NULL, 0);
  memset(&r, 0, sizeof r);
  r.c = &c;
  r.o = on("pg");
  r.o.deadline_ms = 20000;
  uv_timer_init(&c.loop, &tick);
  uv_timer_start(&tick, tick_cb, 10, 10);
  atomic_store(&watchdog_done, 0);
  assert_int_equal(uv_thread_create(&dog, watchdog, NULL), 0);
  for (i = 0; i < 64; i++) {
    assert_int_equal(engram_update(c.mgr, "hot", bump_fn, NULL, &r.o, retry_cb, &r), 0);
    r.submitted++;
  }
  wait_for(&c, &r.ok, 64, 30000);
  assert_int_equal(pg_server_kill9(), 0);
  wait_for(&c, &r.unavailable, 1000, 30000); /* failing fast, and trying again */
  ticks_before = ticks;
  wait_for(&c, &ticks, ticks_before + 20, 30000); /* the loop still turns */
  assert_int_equal(pg_server_restart(), 0);
  i = r.ok;
  wait_for(&c, &r.ok, i + 100, 30000); /* reconnected: updates succeed again */
  r.stop = 1;
  wait_for(&c, &r.answered, r.submitted, 30000);
  atomic_store(&watchdog_done, 1);
  uv_thread_join(&dog);
  assert_int_equal(r.answered, r.submitted);
  assert_int_equal(r.other, 0);
  uv_close((uv_handle_t *)&tick, NULL);
  ctx_close(&c);
}

/* ---- Connections ---- */

static void dead_first_host_moves_to_the_next_socket(void **state) {
  ctx_t c;
  result_t r = {0};
  char o[512];
  engram_opts_t eo = on("pg");
  (void)state;
  ensure_up();
  ctx_init(&c, NULL);
  snprintf(o, sizeof o, "{\"conninfo\": \"host=127.0.0.1,127.0.0.1 port=1,%d user=postgres dbname=postgres\", \"table\": \"%s\"}",
           pg_server_port(), unique_name("mh"));
  if (add_source(&c, "pg", &engram_source_postgres, o, &r) != 0) fail_msg("open: %s", r.message);
  assert_int_equal(s_store(&c, "k", "\"v\"", &eo, &r), 0);
  assert_int_equal(s_retrieve(&c, "k", &eo, &r), 0);
  result_reset(&r);
  ctx_close(&c);
}

static void pool_keeps_per_key_order(void **state) {
  ctx_t c;
  result_t r = {0};
  engram_opts_t o = on("pg");
  static tally_t t[800];
  char key[32], val[32];
  int i;
  (void)state;
  ensure_up();
  ctx_init(&c, NULL);
  add_pg(&c, "\"connections\": 4", NULL, 0);
  { /* the other three connect: each info is a round trip through the loop; 30 s deadline */
    uint64_t until = uv_now(&c.loop) + 30000;
    while (info_number(&c, "pg", "connections_ready", &r) < 4) {
      uv_update_time(&c.loop);
      if (uv_now(&c.loop) > until) fail_msg("the pool's 4 connections were not ready after 30 s");
    }
  }
  result_reset(&r);
  g_done = 0;
  memset(t, 0, sizeof t);
  for (i = 0; i < 800; i++) {
    cJSON *v;
    snprintf(key, sizeof key, i % 2 ? "ctr" : "other%d", i);
    snprintf(val, sizeof val, "%d", i);
    v = J(val);
    assert_int_equal(engram_store(c.mgr, key, v, &o, tally_cb, &t[i]), 0);
    cJSON_Delete(v);
  }
  wait_for(&c, &g_done, 800, 30000);
  for (i = 0; i < 800; i++) assert_int_equal(t[i].status, 0);
  assert_int_equal(s_retrieve(&c, "ctr", &o, &r), 0);
  assert_int_equal((int)result_item(&r, 0, "value")->valuedouble, 799);
  assert_int_equal((int)result_item(&r, 0, "version")->valuedouble, 400);
  assert_int_equal(s_info(&c, &o, &r), 0);
  assert_int_equal((int)cJSON_GetObjectItem(r.info, "connections_ready")->valuedouble, 4);
  result_reset(&r);
  ctx_close(&c);
}

/* ---- Same results as the cache ---- */

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The result's keys, sorted and joined. */
static void keys_of(const result_t *r, char *out, size_t outlen) {
  const char *v[256];
  size_t i, n = r->n_items < 256 ? r->n_items : 256, pos = 0;
  for (i = 0; i < n; i++) v[i] = result_key(r, i);
  qsort(v, n, sizeof *v, cmp_str);
  out[0] = '\0';
  for (i = 0; i < n && pos < outlen; i++) pos += (size_t)snprintf(out + pos, outlen - pos, "%s,", v[i]);
}

static void text_and_filters_match_the_cache(void **state) {
  ctx_t c;
  result_t r = {0};
  engram_opts_t pg = on("pg"), ca = on("cache");
  const char *docs[] = {
      "\"The quick brown fox jumps over the lazy dog\"",
      "{\"title\": \"E-mail from foo.bar@example.com\", \"body\": \"about C++ and 3.14\"}",
      "{\"t\": \"caf\xc3\xa9 na\xc3\xafve r\xc3\xa9sum\xc3\xa9\", \"tags\": [\"Coffee\", \"FOOD\"]}",
      "\"HTTP/2 and HTTPS over TCP; http://example.org/path?q=1\"",
      "{\"deep\": {\"er\": [\"x\", {\"est\": \"dog days\"}]}}",
      "\"zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz long token\"",
      "\"\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe3\x81\xae\xe6\x96\x87 text\"",
      "{\"n\": 42}",
  };
  const char *queries[] = {"dog", "FOX lazy", "example", "com", "c", "3 14", "caf\xc3\xa9", "naive", "coffee food",
                           "http", "https tcp", "days", "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
                           "long", "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe3\x81\xae\xe6\x96\x87", "doc0", "nothing-here", "!!!"};
  const char *metas[] = {"{\"n\": 1, \"s\": \"a\", \"b\": true}", "{\"n\": 2.5, \"s\": \"B\"}", "{\"n\": \"3\", \"s\": \"c\", \"o\": {\"p\": 1}}",
                         "{\"n\": -1, \"arr\": [1, 2]}", "{\"s\": null}", "{}", "{\"n\": 10, \"s\": \"ab\", \"o\": {\"p\": 2}}",
                         "{\"n\": 1e3, \"s\": \"\xc3\xa9\"}"};
  const char *filters[] = {"{\"n\": {\"$gt\": 1}}", "{\"n\": {\"$lte\": 2.5}}", "{\"s\": {\"$gte\": \"B\"}}", "{\"s\": null}",
                           "{\"o.p\": 2}", "{\"o.p\": {\"$exists\": true}}", "{\"arr\": [1, 2]}", "{\"n\": {\"$in\": [1, \"3\", 10]}}",
                           "{\"n\": {\"$nin\": [1, 10]}}", "{\"s\": {\"$ne\": \"a\"}}", "{\"b\": true}", "{\"n\": 1000}",
                           "{\"s\": {\"$lt\": \"\xc3\xa9\"}, \"n\": {\"$exists\": true}}"};
  size_t i, j;
  char a[2048], b[2048];
  (void)state;
  ensure_up();
  ctx_init(&c, NULL);
  add_pg(&c, NULL, NULL, 0);
  assert_int_equal(add_source(&c, "cache", &engram_source_cache, NULL, &r), 0);
  for (i = 0; i < sizeof docs / sizeof docs[0]; i++) {
    char key[16];
    cJSON *m = J(metas[i]);
    snprintf(key, sizeof key, "doc%zu", i);
    pg.metadata = ca.metadata = m;
    assert_int_equal(s_store(&c, key, docs[i], &pg, &r), 0);
    assert_int_equal(s_store(&c, key, docs[i], &ca, &r), 0);
    cJSON_Delete(m);
  }
  pg.metadata = ca.metadata = NULL;
  for (i = 0; i < sizeof queries / sizeof queries[0]; i++) {
    engram_query_t q = ENGRAM_QUERY_INIT;
    q.text = queries[i];
    q.limit = 100;
    assert_int_equal(s_search(&c, &q, &pg, &r), 0);
    for (j = 0; j < r.n_items; j++) {
      double s = result_item(&r, j, "score")->valuedouble;
      assert_true(s > 0 && s < 1);
      if (j > 0) assert_true(s <= result_item(&r, j - 1, "score")->valuedouble);
    }
    keys_of(&r, a, sizeof a);
    assert_int_equal(s_search(&c, &q, &ca, &r), 0);
    keys_of(&r, b, sizeof b);
    if (strcmp(a, b) != 0) fail_msg("text \"%s\": postgres [%s], cache [%s]", queries[i], a, b);
    {
      int commas = 0;
      const char *p;
      for (p = a; *p; p++) commas += *p == ',';
      assert_int_equal(s_count(&c, &q, &pg, &r), 0);
      assert_int_equal((int)r.count, commas);
    }
  }
  for (i = 0; i < sizeof filters / sizeof filters[0]; i++) {
    engram_query_t q = ENGRAM_QUERY_INIT;
    cJSON *f = J(filters[i]);
    uint64_t n1, n2;
    q.filter = f;
    q.limit = 100;
    assert_int_equal(s_search(&c, &q, &pg, &r), 0);
    keys_of(&r, a, sizeof a);
    assert_int_equal(s_search(&c, &q, &ca, &r), 0);
    keys_of(&r, b, sizeof b);
    if (strcmp(a, b) != 0) fail_msg("filter %s: postgres [%s], cache [%s]", filters[i], a, b);
    assert_int_equal(s_count(&c, &q, &pg, &r), 0);
    n1 = r.count;
    assert_int_equal(s_count(&c, &q, &ca, &r), 0);
    n2 = r.count;
    assert_int_equal((int)n1, (int)n2);
    /* With a pattern, a text query and a filter at once. */
    q.pattern = "doc[0-6]";
    q.text = "dog example caf\xc3\xa9 http days";
    assert_int_equal(s_search(&c, &q, &pg, &r), 0);
    keys_of(&r, a, sizeof a);
    assert_int_equal(s_search(&c, &q, &ca, &r), 0);
    keys_of(&r, b, sizeof b);
    if (strcmp(a, b) != 0) fail_msg("filter %s + text + pattern: postgres [%s], cache [%s]", filters[i], a, b);
    cJSON_Delete(f);
  }
  result_reset(&r);
  ctx_close(&c);
}

/* The core's clear emulation lists every namespace (ENGRAM_REQ_ALL_NAMESPACES): the source's list_keys across
 * namespaces, driven through a copy of the vtable without a native clear. */
static void listing_across_namespaces(void **state) {
  static engram_source_vtable_t no_clear;
  ctx_t c;
  result_t r = {0};
  char table[64], opts[2048];
  const char *nss[] = {"", "a", "a/b", "z"};
  size_t i, j;
  (void)state;
  ensure_up();
  no_clear = engram_source_postgres;
  no_clear.clear = NULL;
  ctx_init(&c, NULL);
  snprintf(opts, sizeof opts, "%s", pg_opts(NULL, table, sizeof table));
  assert_int_equal(add_source(&c, "pg", &no_clear, opts, &r), 0);
  for (i = 0; i < 4; i++) {
    static engram_entry_t e[600];
    static char keys[600][16];
    cJSON *v = J("{\"x\": 1}");
    engram_opts_t o = on("pg");
    o.ns = nss[i];
    for (j = 0; j < 600; j++) {
      snprintf(keys[j], sizeof keys[j], "k%03zu", j);
      e[j].key = keys[j];
      e[j].value = v;
      e[j].metadata = NULL;
      e[j].has_ttl = 0;
    }
    result_reset(&r);
    assert_int_equal(engram_store_many(c.mgr, e, 600, &o, capture_cb, &r), 0);
    wait_for(&c, &r.calls, 1, 30000);
    assert_int_equal(r.status, 0);
    assert_int_equal((int)r.count, 600);
    cJSON_Delete(v);
  }
  assert_int_equal(count_rows(table, "true"), 2400);
  {
    engram_opts_t all = on("pg");
    all.flags = ENGRAM_OPT_CONFIRM;
    assert_int_equal(s_clear(&c, &all, &r), 0);
    assert_int_equal((int)r.count, 2400);
  }
  assert_int_equal(count_rows(table, "true"), 0);
  result_reset(&r);
  ctx_close(&c);
}

/* ---- Expiry ---- */

static void expired_rows_are_swept(void **state) {
  ctx_t c;
  result_t r = {0};
  engram_opts_t o = on("pg");
  char table[64];
  int i;
  (void)state;
  ensure_up();
  ctx_init(&c, NULL);
  add_pg(&c, "\"sweep_interval_ms\": 100", table, sizeof table);
  o.flags = ENGRAM_OPT_TTL;
  o.ttl_ms = 30;
  assert_int_equal(s_store(&c, "short", "1", &o, &r), 0);
  o.flags = 0;
  assert_int_equal(s_store(&c, "long", "1", &o, &r), 0);
  assert_int_equal(count_rows(table, "true"), 2);
  for (i = 0; i < 50 && count_rows(table, "true") != 1; i++) run_for(&c, 100);
  assert_int_equal(count_rows(table, "key = 'short'"), 0);
  assert_int_equal(count_rows(table, "key = 'long'"), 1);
  /* A create-only store over an expired row (not swept yet) succeeds and starts at version 1. */
  o.flags = ENGRAM_OPT_TTL;
  o.ttl_ms = 0;
  assert_int_equal(s_store(&c, "gone", "1", &o, &r), 0);
  o.flags = ENGRAM_OPT_CREATE_ONLY;
  assert_int_equal(s_store(&c, "gone", "2", &o, &r), 0);
  assert_int_equal((int)result_item(&r, 0, "version")->valuedouble, 1);
  result_reset(&r);
  ctx_close(&c);
}

/* ---- Throughput figure (ENGRAM_PG_BENCH=1) ---- */

static int bench_inflight;
static int bench_left;
static engram_manager_t *bench_mgr;
static int bench_next;
static int bench_fail;

static void bench_submit(void);

static void bench_cb(int status, const engram_reply_t *reply, void *ud) {
  (void)reply;
  (void)ud;
  if (status != 0) bench_fail++;
  bench_inflight--;
  g_done++;
  bench_submit();
}

static void bench_submit(void) {
  engram_opts_t o = on("pg");
  char key[32], val[128];
  while (bench_inflight < 800 && bench_left > 0) {
    cJSON *v;
    snprintf(key, sizeof key, "p%d", bench_next);
    snprintf(val, sizeof val, "{\"text\":\"memory number %d for the anchor benchmark\",\"i\":%d}", bench_next, bench_next);
    v = cJSON_Parse(val);
    if (engram_store(bench_mgr, key, v, &o, bench_cb, NULL) != 0) bench_fail++;
    cJSON_Delete(v);
    bench_next++;
    bench_left--;
    bench_inflight++;
  }
}

/* Raw libpq pipeline upserts of the same documents, batches of 500 (as /work/shared/anchors/pg_raw.c). */
static double raw_pipeline(const char *sql_create, const char *sql_upsert, int nparams, int n) {
  PGconn *conn = PQconnectdb(pg_server_conninfo());
  char key[32], val[128], tsv[256];
  const char *p[7] = {"bench", key, val, NULL, "1700000000000", NULL, tsv};
  double t0;
  int i, j;
  if (PQstatus(conn) != CONNECTION_OK) return 0;
  PQclear(PQexec(conn, sql_create));
  PQclear(PQprepare(conn, "up", sql_upsert, nparams, NULL));
  PQenterPipelineMode(conn);
  t0 = now_s();
  for (i = 0; i < n; i += 500) {
    for (j = i; j < i + 500 && j < n; j++) {
      snprintf(key, sizeof key, "p%d", j);
      snprintf(val, sizeof val, "{\"text\":\"memory number %d for the anchor benchmark\",\"i\":%d}", j, j);
      snprintf(tsv, sizeof tsv, "'anchor':7 'benchmark':8 'for':5 'memory':2 'number':3 'p%d':1 '%d':4 'the':6", j, j);
      PQsendQueryPrepared(conn, "up", nparams, p, NULL, NULL, 0);
    }
    PQpipelineSync(conn);
    for (j = i; j < i + 500 && j < n; j++) {
      PQclear(PQgetResult(conn));
      PQgetResult(conn);
    }
    PQclear(PQgetResult(conn));
  }
  t0 = now_s() - t0;
  PQexitPipelineMode(conn);
  PQfinish(conn);
  return n / t0;
}

static void throughput_figure(void **state) {
  ctx_t c;
  char table[64], create[256], upsert[2048];
  double t0, eng, raw_anchor, raw_same, cpu0;
  int n = 50000;
  (void)state;
  if (getenv("ENGRAM_PG_BENCH") == NULL) {
    print_message("set ENGRAM_PG_BENCH=1 for the throughput figure\n");
    return;
  }
  ensure_up();
  ctx_init(&c, NULL);
  add_pg(&c, getenv("ENGRAM_PG_BENCH_OPTS"), table, sizeof table); /* e.g. "connections": 2 */
  run_for(&c, 200);
  bench_mgr = c.mgr;
  bench_left = n;
  bench_next = bench_fail = bench_inflight = 0;
  g_done = 0;
  t0 = now_s();
  cpu0 = cpu_s();
  bench_submit();
  wait_for(&c, &g_done, n, 120000);
  eng = n / (now_s() - t0);
  cpu0 = (cpu_s() - cpu0) / (now_s() - t0);
  assert_int_equal(bench_fail, 0);
  {
    /* One at a time (each call waits for the previous one's callback). */
    result_t r = {0};
    engram_opts_t o = on("pg");
    char key[32];
    int i, m = 2000;
    t0 = now_s();
    for (i = 0; i < m; i++) {
      snprintf(key, sizeof key, "s%d", i);
      assert_int_equal(s_store(&c, key, "{\"text\":\"one at a time\"}", &o, &r), 0);
    }
    print_message("one at a time: engram %.0f stores/s\n", m / (now_s() - t0));
    result_reset(&r);
  }
  raw_anchor = raw_pipeline("CREATE TABLE IF NOT EXISTS anchor_kv(ns text, key text, value jsonb, PRIMARY KEY(ns, key))",
                            "INSERT INTO anchor_kv(ns,key,value) VALUES($1,$2,$3::jsonb) ON CONFLICT (ns,key) DO UPDATE SET "
                            "value=EXCLUDED.value", 3, n);
  snprintf(create, sizeof create, "TRUNCATE public.\"%s\"", table);
  snprintf(upsert, sizeof upsert,
           "INSERT INTO public.\"%s\" AS t (namespace, key, value, metadata, created_at, updated_at, expires_at, version, "
           "chg) VALUES ($1, $2, $3::jsonb, $4::jsonb, $5, $5, $6, 1, txid_current()) ON CONFLICT (namespace, key) DO UPDATE "
           "SET value = EXCLUDED.value, metadata = EXCLUDED.metadata, created_at = CASE WHEN t.expires_at IS NOT NULL AND "
           "t.expires_at <= EXCLUDED.updated_at THEN EXCLUDED.created_at ELSE t.created_at END, updated_at = "
           "EXCLUDED.updated_at, expires_at = EXCLUDED.expires_at, version = CASE WHEN t.expires_at IS NOT NULL AND "
           "t.expires_at <= EXCLUDED.updated_at THEN 1 ELSE t.version + 1 END, chg = EXCLUDED.chg RETURNING version, "
           "created_at", table);
  raw_same = raw_pipeline(create, upsert, 6, n);
  print_message("stores/s: engram %.0f (800 in flight, client CPU %.0f%%); raw libpq pipeline: anchor table %.0f (ratio %.2f), engram's "
                "table and statement %.0f (ratio %.2f)\n", eng, cpu0 * 100, raw_anchor, eng / raw_anchor, raw_same, eng / raw_same);
  ctx_close(&c);
}

/* ---- engram_events_watch: the changes other writers make, through the source's invalidation channel ---- */

typedef struct {
  int live, changed, cleared, missed, ended, end_status;
  char last_ns[64], last_key[64], seen[512];
  uint64_t last_version;
} watch_log_t;

static void on_watch(int status, const engram_event_t *ev, void *ud) {
  watch_log_t *l = ud;
  if (l->ended) harness_stray("on_watch after END");
  switch (ev->kind) {
    case ENGRAM_EVENT_LIVE: l->live++; break;
    case ENGRAM_EVENT_CHANGED:
      l->changed++;
      snprintf(l->last_ns, sizeof l->last_ns, "%s", ev->ns);
      snprintf(l->last_key, sizeof l->last_key, "%s", ev->key);
      l->last_version = ev->version;
      if (strlen(l->seen) + strlen(ev->key) + 2 < sizeof l->seen) {
        strcat(l->seen, ev->key);
        strcat(l->seen, " ");
      }
      break;
    case ENGRAM_EVENT_CLEARED: l->cleared++; break;
    case ENGRAM_EVENT_MISSED: l->missed++; break;
    case ENGRAM_EVENT_END:
      l->ended = 1;
      l->end_status = status;
      break;
    default: break;
  }
}

static void events_watch_reports_other_writers(void **state) {
  ctx_t c;
  result_t r = {0};
  watch_log_t l;
  engram_remote_watch_t *w = NULL;
  engram_opts_t a = on("pg"), b = on("pg2");
  char table[64], opts[2048], sql[512], out[64];
  (void)state;
  ensure_up();
  memset(&l, 0, sizeof l);
  ctx_init(&c, NULL);
  snprintf(opts, sizeof opts, "%s", pg_opts(NULL, table, sizeof table));
  assert_int_equal(add_source(&c, "pg", &engram_source_postgres, opts, &r), 0);
  assert_int_equal(add_source(&c, "pg2", &engram_source_postgres, opts, &r), 0); /* another writer, same table */
  assert_int_equal(add_source(&c, "mem", &engram_source_cache, NULL, &r), 0);
  /* bad input, at the call */
  assert_int_equal(engram_events_watch(c.mgr, "mem", on_watch, &l, &w), ENGRAM_ENOTSUP);
  assert_non_null(strstr(engram_last_error(), "invalidation channel"));
  assert_int_equal(engram_events_watch(c.mgr, "nope", on_watch, &l, &w), ENGRAM_EUNKNOWN_SOURCE);
  assert_int_equal(engram_events_watch(c.mgr, "pg", NULL, &l, &w), ENGRAM_EINVAL);
  assert_int_equal(engram_events_unwatch(NULL), ENGRAM_EINVAL);

  assert_int_equal(engram_events_watch(c.mgr, "pg", on_watch, &l, &w), 0);
  wait_for(&c, &l.live, 1, 30000);
  /* the watched source's own write is not reported; the other writer's are, in order */
  assert_int_equal(s_store(&c, "own", "1", &a, &r), 0);
  b.ns = "team";
  assert_int_equal(s_store(&c, "k1", "1", &b, &r), 0);
  wait_for(&c, &l.changed, 1, 30000);
  assert_string_equal(l.last_ns, "team");
  assert_string_equal(l.last_key, "k1");
  assert_int_equal((int)l.last_version, 1);
  assert_int_equal(s_store(&c, "k1", "2", &b, &r), 0);
  wait_for(&c, &l.changed, 2, 30000);
  assert_int_equal((int)l.last_version, 2);
  assert_int_equal(s_delete(&c, "k1", &b, &r), 0);
  wait_for(&c, &l.changed, 3, 30000);
  assert_int_equal((int)l.last_version, 0);
  /* a process of its own (psql) */
  snprintf(sql, sizeof sql, "DELETE FROM public.\"%s\" WHERE key = 'own'", table);
  assert_int_equal(psql(sql, out, sizeof out), 0);
  wait_for(&c, &l.changed, 4, 30000);
  assert_string_equal(l.seen, "k1 k1 k1 own ");
  /* TRUNCATE: anything may have changed */
  snprintf(sql, sizeof sql, "TRUNCATE public.\"%s\"", table);
  assert_int_equal(psql(sql, out, sizeof out), 0);
  wait_for(&c, &l.cleared, 1, 30000);
  assert_int_equal(engram_events_unwatch(w), 0);
  wait_for(&c, &l.ended, 1, 30000);
  assert_int_equal(l.end_status, ENGRAM_ECANCELED);
  assert_int_equal(l.missed, 0);
  /* closing the manager ends a watch with ENGRAM_ECLOSED */
  memset(&l, 0, sizeof l);
  assert_int_equal(engram_events_watch(c.mgr, "pg", on_watch, &l, &w), 0);
  wait_for(&c, &l.live, 1, 30000);
  result_reset(&r);
  ctx_close(&c);
  assert_int_equal(l.ended, 1);
  assert_int_equal(l.end_status, ENGRAM_ECLOSED);
}

static int group_setup(void **state) {
  (void)state;
  return pg_server_start();
}

static int group_teardown(void **state) {
  (void)state;
  pg_server_stop();
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(psql_reads_and_writes_the_documented_schema),
            cmocka_unit_test(reopen_keeps_data_and_newer_schema_is_refused),
      cmocka_unit_test(unreachable_server_names_host_and_port_not_password),
      cmocka_unit_test(silent_server_times_out),
      cmocka_unit_test(right_password_never_shows_in_info),
      cmocka_unit_test(hostile_identifiers_and_options_refused),
      cmocka_unit_test(awkward_keys_and_values_round_trip),
      cmocka_unit_test(jsonb_values_read_back_as_cjson_parses_them),
      cmocka_unit_test(retrieve_many_of_a_run_reads_its_key_range),
      cmocka_unit_test(queued_updates_chain_and_redo_after_another_writer),
      cmocka_unit_test(chained_update_never_overtakes_the_one_it_follows),
      cmocka_unit_test(update_never_writes_over_a_recreated_row),
      cmocka_unit_test(stores_in_one_turn_leave_as_one_statement),
      cmocka_unit_test(failing_statement_fails_only_its_call),
      cmocka_unit_test(statement_timeout_spares_the_schema_setup),
      cmocka_unit_test(statement_timeout_fails_only_the_slow_call),
      cmocka_unit_test(dead_first_host_moves_to_the_next_socket),
      cmocka_unit_test(pool_keeps_per_key_order),
      cmocka_unit_test(text_and_filters_match_the_cache),
      cmocka_unit_test(listing_across_namespaces),
      cmocka_unit_test(events_watch_reports_other_writers),
      cmocka_unit_test(expired_rows_are_swept),
      cmocka_unit_test(text_index_follows_every_writer),
      cmocka_unit_test(schema_1_table_is_upgraded),
      cmocka_unit_test(text_index_build_reads_in_chunks),
      cmocka_unit_test(text_index_items_bounds_the_indexes),
      cmocka_unit_test(appends_write_head_and_messages_in_one_statement),
      cmocka_unit_test(kill9_with_1000_calls_in_flight),
      cmocka_unit_test(down_fails_fast_or_waits),
      cmocka_unit_test(retrying_updates_while_down_keep_the_loop_turning),
      cmocka_unit_test(throughput_figure),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
