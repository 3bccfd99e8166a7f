/*
 * test_sqlite.c — what the SQLite source promises beyond the conformance suite: group commit (many stores, few
 * COMMITs, and acknowledged means durable), crash safety under kill -9, the documented schema as seen by the
 * sqlite3 shell (both ways), two processes writing one file, refused options, awkward keys and values, the
 * TTL sweep, a quick throughput figure, and the source on the home loop ("thread": "home") taking calls from
 * other threads through a completion queue. Every database lives in a temporary directory that is removed at
 * the end (also when a test fails: atexit).
 */
#include <dirent.h>
#include <signal.h>
#include <stdatomic.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../sources/sqlite/sqlite_ckpt.h" /* the checkpointer's policy, checked on its own */
#include "support/harness.h"

static char tmp_dir[64];

static void remove_tmp_dir(void) {
  DIR *d;
  struct dirent *e;
  char p[512];
  if (tmp_dir[0] == '\0' || (d = opendir(tmp_dir)) == NULL) return;
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    snprintf(p, sizeof p, "%s/%s", tmp_dir, e->d_name);
    unlink(p);
  }
  closedir(d);
  rmdir(tmp_dir);
  tmp_dir[0] = '\0';
}

/* A fresh database path in the temporary directory. */
static const char *db_path(const char *name) {
  static char p[256];
  snprintf(p, sizeof p, "%s/%s.db", tmp_dir, unique_name(name));
  return p;
}

static char *options_for(const char *path, const char *extra) {
  static char o[512];
  snprintf(o, sizeof o, "{\"path\": \"%s\", \"busy_timeout_ms\": 30000%s%s}", path, extra ? ", " : "", extra ? extra : "");
  return o;
}

/* Adds a sqlite source named "mem" with options; returns the callback's status (message in r). */
static int add_sqlite(ctx_t *c, const char *options, result_t *r) {
  result_reset(r);
  assert_int_equal(engram_manager_add_source(c->mgr, "mem", &engram_source_sqlite, options, "sqlite under test", 1,
                                             capture_cb, r),
                   0);
  wait_for(c, &r->calls, 1, 30000);
  return r->status;
}

static void open_ctx(ctx_t *c, const char *path) {
  result_t r = {0};
  ctx_init(c, NULL);
  if (add_sqlite(c, options_for(path, NULL), &r) != 0) fail_msg("open %s: %s", path, r.message);
  result_reset(&r);
}

static double info_num(ctx_t *c, const char *field) {
  result_t r = {0};
  const cJSON *v;
  double d;
  assert_int_equal(s_info(c, NULL, &r), 0);
  v = cJSON_GetObjectItemCaseSensitive(r.info, field);
  if (!cJSON_IsNumber(v)) fail_msg("info has no number \"%s\"", field);
  d = v->valuedouble;
  result_reset(&r);
  return d;
}

/* Counts callbacks of many calls at once. */
typedef struct {
  int calls, ok;
  int first_error;
  char message[256];
} tally_t;

static void tally_cb(int status, const engram_reply_t *reply, void *ud) {
  tally_t *t = ud;
  t->calls++; /* one tally counts the callbacks of many calls */
  if (status == 0) t->ok++;
  else if (t->first_error == 0) {
    t->first_error = status;
    snprintf(t->message, sizeof t->message, "%s", reply->message);
  }
}

/* Submits keys [from, to) as "<prefix><i>" → {"i": i}, all at once, and waits for every callback. */
static void store_range(ctx_t *c, const char *prefix, int from, int to, tally_t *t) {
  char key[64];
  int i, want = t->calls + (to - from);
  for (i = from; i < to; i++) {
    cJSON *v = cJSON_CreateObject();
    cJSON_AddNumberToObject(v, "i", i);
    snprintf(key, sizeof key, "%s%d", prefix, i);
    assert_int_equal(engram_store(c->mgr, key, v, NULL, tally_cb, t), 0);
    cJSON_Delete(v);
  }
  wait_for(c, &t->calls, want, 60000);
}

/* ---- Group commit ---- */

static void group_commit_and_durability(void **state) {
  ctx_t c;
  tally_t t = {0};
  result_t r = {0};
  engram_query_t q = ENGRAM_QUERY_INIT;
  const char *path = db_path("group");
  char saved[256];
  double commits;
  (void)state;
  snprintf(saved, sizeof saved, "%s", path);
  open_ctx(&c, saved);
  store_range(&c, "g:", 0, 1000, &t);
  if (t.ok != 1000) fail_msg("%d of 1000 stores succeeded: %s", t.ok, t.message);
  commits = info_num(&c, "commits");
  print_message("1000 stores submitted at once: %.0f commits, largest group %.0f\n", commits, info_num(&c, "max_group"));
  assert_true(commits >= 1 && commits <= 100);
  assert_true(info_num(&c, "committed_calls") >= 1000);
  ctx_close(&c);
  /* Acknowledged means durable: a new manager on the file sees all 1000. */
  open_ctx(&c, saved);
  assert_int_equal(s_count(&c, &q, NULL, &r), 0);
  assert_int_equal((int)r.count, 1000);
  assert_int_equal(s_retrieve(&c, "g:999", NULL, &r), 0);
  assert_int_equal((int)cJSON_GetObjectItem(result_item(&r, 0, "value"), "i")->valuedouble, 999);
  result_reset(&r);
  ctx_close(&c);
}

/* One failing call in a group fails alone; the others of the same group are stored. */
static void failing_call_fails_alone(void **state) {
  ctx_t c;
  result_t r = {0}, rs[5];
  engram_opts_t create = {0}, cas = {0};
  cJSON *v = J("1");
  int i;
  (void)state;
  memset(rs, 0, sizeof rs);
  open_ctx(&c, db_path("alone"));
  assert_int_equal(s_store(&c, "taken", "0", NULL, &r), 0);
  create.flags = ENGRAM_OPT_CREATE_ONLY;
  cas.if_version = 7;
  assert_int_equal(engram_store(c.mgr, "a", v, NULL, capture_cb, &rs[0]), 0);
  assert_int_equal(engram_store(c.mgr, "taken", v, &create, capture_cb, &rs[1]), 0);
  assert_int_equal(engram_store(c.mgr, "b", v, NULL, capture_cb, &rs[2]), 0);
  assert_int_equal(engram_store(c.mgr, "taken", v, &cas, capture_cb, &rs[3]), 0);
  assert_int_equal(engram_store(c.mgr, "c", v, &create, capture_cb, &rs[4]), 0);
  for (i = 0; i < 5; i++) wait_for(&c, &rs[i].calls, 1, 30000);
  assert_int_equal(rs[0].status, 0);
  assert_int_equal(rs[1].status, ENGRAM_EEXIST);
  assert_int_equal(rs[2].status, 0);
  assert_int_equal(rs[3].status, ENGRAM_ECONFLICT);
  assert_int_equal(rs[4].status, 0);
  for (i = 0; i < 5; i++) {
    assert_int_equal(rs[i].calls, 1);
    result_reset(&rs[i]);
  }
  assert_int_equal(s_retrieve(&c, "taken", NULL, &r), 0);
  assert_int_equal((int)result_item(&r, 0, "value")->valuedouble, 0);
  assert_int_equal(s_exists(&c, "c", NULL, &r), 0);
  assert_int_equal((int)r.count, 1);
  cJSON_Delete(v);
  result_reset(&r);
  ctx_close(&c);
}

/* ---- kill -9 ---- */

/* The child: its own manager storing k000000, k000001, ... with up to 64 calls in flight, writing the index of
 * every acknowledged store to the pipe. It never returns; the parent kills it. */
typedef struct {
  ctx_t *c;
  int fd, next, inflight;
} child_t;

static void child_submit(child_t *ch);

static void child_ack(int status, const engram_reply_t *reply, void *ud) {
  child_t *ch = ud;
  int idx;
  ch->inflight--;
  if (status != 0) {
    fprintf(stderr, "child: store failed: %s\n", reply->message);
    _exit(3);
  }
  idx = atoi(reply->items[0].key + 1);
  if (write(ch->fd, &idx, sizeof idx) != (ssize_t)sizeof idx) _exit(4);
  child_submit(ch);
}

static void child_submit(child_t *ch) {
  char key[32];
  while (ch->inflight < 64) {
    cJSON *v = cJSON_CreateString("payload that makes the row a little longer than a number");
    snprintf(key, sizeof key, "k%06d", ch->next++);
    if (engram_store(ch->c->mgr, key, v, NULL, child_ack, ch) != 0) _exit(5);
    cJSON_Delete(v);
    ch->inflight++;
  }
}

static void child_main(const char *path, int fd) {
  ctx_t c;
  result_t r = {0};
  child_t ch = {&c, fd, 0, 0};
  memset(&c, 0, sizeof c);
  if (uv_loop_init(&c.loop) != 0 || engram_manager_new(&c.mgr, &c.loop, NULL) != 0) _exit(6);
  if (engram_manager_add_source(c.mgr, "mem", &engram_source_sqlite, options_for(path, "\"synchronous\": \"normal\""),
                                NULL, 1, capture_cb, &r) != 0)
    _exit(7);
  if (!loop_wait(&c.loop, &r.calls, 1, 30000) || r.status != 0) _exit(8);
  child_submit(&ch);
  for (;;) uv_run(&c.loop, UV_RUN_DEFAULT);
}

static int cmp_int(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }

static void kill9_keeps_acknowledged_writes(void **state) {
  const char *p = db_path("kill9");
  char path[256];
  int fds[2], status, n = 0, cap = 1 << 16, i, got;
  int *acked = malloc((size_t)cap * sizeof *acked);
  pid_t pid;
  ctx_t c;
  result_t r = {0};
  sqlite3 *db;
  sqlite3_stmt *st;
  (void)state;
  snprintf(path, sizeof path, "%s", p);
  assert_int_equal(pipe(fds), 0);
  pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    close(fds[0]);
    child_main(path, fds[1]);
  }
  close(fds[1]);
  /* Let it acknowledge a few thousand stores, then kill it mid-stream. */
  while (n < 3000) {
    ssize_t k = read(fds[0], &acked[n], sizeof acked[n]);
    if (k != (ssize_t)sizeof acked[n]) break;
    n++;
  }
  kill(pid, SIGKILL);
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  /* Acknowledgements already in the pipe count too. */
  while (n < cap && read(fds[0], &acked[n], sizeof acked[n]) == (ssize_t)sizeof acked[n]) n++;
  close(fds[0]);
  if (n < 3000) fail_msg("the child acknowledged only %d stores before dying", n);
  print_message("kill -9 after %d acknowledged stores\n", n);
  /* Integrity first, straight through SQLite (the WAL is recovered on open). */
  assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  assert_string_equal((const char *)sqlite3_column_text(st, 0), "ok");
  sqlite3_finalize(st);
  sqlite3_close(db);
  /* Every acknowledged key is there. */
  qsort(acked, (size_t)n, sizeof *acked, cmp_int);
  open_ctx(&c, path);
  for (i = 0; i < n; i += 500) {
    const char *keys[500];
    char buf[500][16];
    int j, m = n - i < 500 ? n - i : 500;
    for (j = 0; j < m; j++) {
      snprintf(buf[j], sizeof buf[j], "k%06d", acked[i + j]);
      keys[j] = buf[j];
    }
    result_reset(&r);
    assert_int_equal(engram_retrieve_many(c.mgr, keys, (size_t)m, NULL, capture_cb, &r), 0);
    wait_for(&c, &r.calls, 1, 30000);
    assert_int_equal(r.status, 0);
    got = (int)r.count;
    if (got != m) fail_msg("%d of %d acknowledged keys from %s are missing", m - got, m, keys[0]);
  }
  result_reset(&r);
  ctx_close(&c);
  free(acked);
}

/* ---- The sqlite3 shell sees the documented schema, and engram sees the shell's rows ---- */

/* Runs sql through the sqlite3 shell on path; returns its output (static buffer), trailing newline cut. */
static const char *shell(const char *path, const char *sql) {
  static char out[4096];
  char script[300], cmd[700];
  FILE *f;
  size_t n;
  snprintf(script, sizeof script, "%s/%s.sql", tmp_dir, unique_name("shell"));
  f = fopen(script, "w");
  assert_non_null(f);
  fprintf(f, ".timeout 10000\n%s\n", sql);
  fclose(f);
  snprintf(cmd, sizeof cmd, "sqlite3 -batch '%s' < '%s' 2>&1", path, script);
  f = popen(cmd, "r");
  assert_non_null(f);
  n = fread(out, 1, sizeof out - 1, f);
  out[n] = '\0';
  assert_int_equal(pclose(f), 0);
  unlink(script);
  while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == '\r')) out[--n] = '\0';
  return out;
}

static void shell_reads_and_writes_the_schema(void **state) {
  ctx_t c;
  result_t r = {0};
  engram_opts_t o = {0};
  engram_query_t q = ENGRAM_QUERY_INIT;
  const char *p = db_path("shell");
  char path[256];
  cJSON *meta = J("{\"tag\": \"t1\"}"), *got, *want;
  const char *value = "{\"msg\": \"it's \\\"quoted\\\" \\\\ back\", \"n\": 3}";
  (void)state;
  snprintf(path, sizeof path, "%s", p);
  open_ctx(&c, path);
  o.ns = "team/a";
  o.metadata = meta;
  assert_int_equal(s_store(&c, "note:1", value, &o, &r), 0);
  /* Read back with the shell, in the documented schema. */
  got = cJSON_Parse(shell(path, "SELECT value FROM engram_items WHERE namespace = 'team/a' AND key = 'note:1';"));
  want = J(value);
  assert_non_null(got);
  assert_true(cJSON_Compare(got, want, 1));
  cJSON_Delete(got);
  cJSON_Delete(want);
  assert_string_equal(shell(path, "SELECT metadata, version, expires_at, created_at > 0, updated_at >= created_at"
                                  " FROM engram_items WHERE key = 'note:1';"),
                      "{\"tag\":\"t1\"}|1|0|1|1");
  /* A row written by the shell is an item like any other: retrieve, search by text, list. */
  shell(path, "INSERT INTO engram_items(namespace, key, value, metadata)"
              " VALUES('team/a', 'from-shell', '{\"text\": \"penguin colony\"}', '{\"tag\": \"t2\"}');");
  o.metadata = NULL;
  o.flags = ENGRAM_OPT_INCLUDE_METADATA;
  assert_int_equal(s_retrieve(&c, "from-shell", &o, &r), 0);
  want = J("{\"text\": \"penguin colony\"}");
  assert_true(cJSON_Compare(result_item(&r, 0, "value"), want, 1));
  cJSON_Delete(want);
  assert_string_equal(cJSON_GetObjectItem(result_item(&r, 0, "metadata"), "tag")->valuestring, "t2");
  assert_int_equal((int)result_item(&r, 0, "version")->valuedouble, 1);
  q.text = "penguin";
  assert_int_equal(s_search(&c, &q, &o, &r), 0);
  assert_int_equal(r.n_items, 1);
  assert_string_equal(result_key(&r, 0), "from-shell");
  /* The shell changes the value: the index follows (a trigger bumps the namespace's generation). */
  shell(path, "UPDATE engram_items SET value = '{\"text\": \"walrus herd\"}' WHERE key = 'from-shell';");
  assert_int_equal(s_search(&c, &q, &o, &r), 0);
  assert_int_equal(r.n_items, 0);
  q.text = "walrus";
  assert_int_equal(s_search(&c, &q, &o, &r), 0);
  assert_int_equal(r.n_items, 1);
  /* And deletes it: gone from reads and from the index. */
  shell(path, "DELETE FROM engram_items WHERE key = 'from-shell';");
  assert_int_equal(s_search(&c, &q, &o, &r), 0);
  assert_int_equal(r.n_items, 0);
  assert_int_equal(s_retrieve(&c, "from-shell", &o, &r), ENGRAM_ENOTFOUND);
  /* Every shell write bumped the namespace's generation (a trigger), which is how the search above saw them. */
  assert_string_equal(shell(path, "SELECT gen >= 4 FROM engram_items_gen WHERE namespace = 'team/a';"), "1");
  /* A row that is not JSON is an error naming its key, not a crash or a silent skip. */
  shell(path, "INSERT INTO engram_items(namespace, key, value) VALUES('team/a', 'broken', 'not json');");
  assert_int_equal(s_retrieve(&c, "broken", &o, &r), ENGRAM_EBACKEND);
  assert_non_null(strstr(r.message, "'broken'"));
  assert_string_equal(shell(path, "PRAGMA integrity_check;"), "ok");
  cJSON_Delete(meta);
  result_reset(&r);
  ctx_close(&c);
}

/* Stores key = value through w, then searches q through rd: the number of items rd's search found. */
static size_t stored_then_found(ctx_t *w, ctx_t *rd, const char *key, const char *value, engram_opts_t *o,
                                engram_query_t *q, result_t *r) {
  assert_int_equal(s_store(w, key, value, o, r), 0);
  assert_int_equal(s_search(rd, q, o, r), 0);
  return r->n_items;
}

/* Two managers on one file: each one's writes (store, overwrite, delete, clear) are seen by the other's next text
 * search, with its in-process index already built (the namespace's generation moved by more than its own). */
static void another_managers_writes_are_searched(void **state) {
  ctx_t a, b;
  result_t r = {0};
  engram_query_t q = ENGRAM_QUERY_INIT;
  engram_opts_t o = {0};
  char path[256];
  double builds;
  (void)state;
  snprintf(path, sizeof path, "%s", db_path("two-managers"));
  open_ctx(&a, path);
  open_ctx(&b, path);
  o.ns = "shared";
  o.flags = ENGRAM_OPT_CONFIRM;
  assert_int_equal(s_store(&a, "one", "{\"text\": \"penguin colony\"}", &o, &r), 0);
  /* Nobody searched "shared" by text yet: its writers leave its generation alone (no row, no page written). */
  assert_string_equal(shell(path, "SELECT count(*) FROM engram_items_gen WHERE namespace = 'shared';"), "0");
  q.text = "penguin walrus";
  assert_int_equal(s_search(&b, &q, &o, &r), 0); /* builds b's index, arming the generation */
  assert_int_equal(r.n_items, 1);
  assert_string_equal(shell(path, "SELECT gen FROM engram_items_gen WHERE namespace = 'shared';"), "1");
  assert_int_equal(s_search(&a, &q, &o, &r), 0); /* builds a's index */
  assert_int_equal(r.n_items, 1);
  assert_int_equal(stored_then_found(&a, &b, "two", "{\"text\": \"walrus herd\"}", &o, &q, &r), 2);
  assert_int_equal(stored_then_found(&b, &a, "one", "{\"text\": \"seal\"}", &o, &q, &r), 1);
  assert_string_equal(result_key(&r, 0), "two");
  assert_int_equal(s_delete(&a, "two", &o, &r), 0);
  assert_int_equal(s_search(&b, &q, &o, &r), 0);
  assert_int_equal(r.n_items, 0);
  assert_int_equal(stored_then_found(&a, &b, "three", "{\"text\": \"walrus\"}", &o, &q, &r), 1);
  assert_int_equal(s_clear(&b, &o, &r), 0);
  assert_int_equal(s_search(&a, &q, &o, &r), 0);
  assert_int_equal(r.n_items, 0);
  /* And each one's own writes, without a rebuild in between. */
  builds = info_num(&a, "text_index_builds");
  assert_int_equal(stored_then_found(&a, &a, "four", "{\"text\": \"penguin\"}", &o, &q, &r), 1);
  assert_int_equal(s_store(&a, "five", "{\"text\": \"walrus penguin\"}", &o, &r), 0);
  assert_int_equal(s_delete(&a, "four", &o, &r), 0);
  assert_int_equal(s_search(&a, &q, &o, &r), 0);
  assert_int_equal(r.n_items, 1);
  assert_string_equal(result_key(&r, 0), "five");
  assert_true(info_num(&a, "text_index_builds") == builds);
  /* An index built over a namespace nobody wrote yet (empty, generation not armed) still sees the other's first
   * writes: the build armed the generation, so every later write group bumps it. */
  o.ns = "fresh";
  assert_int_equal(s_search(&b, &q, &o, &r), 0);
  assert_int_equal(r.n_items, 0);
  assert_int_equal(stored_then_found(&a, &b, "first", "{\"text\": \"penguin\"}", &o, &q, &r), 1);
  assert_string_equal(result_key(&r, 0), "first");
  assert_int_equal(stored_then_found(&a, &b, "second", "{\"text\": \"walrus\"}", &o, &q, &r), 2);
  /* a's last commit found "cached" unarmed and a skips that check while no connection has committed since; b's
   * arming is such a commit, so a's next write bumps the generation and b's index sees it. */
  o.ns = "cached";
  assert_int_equal(s_store(&a, "c1", "{\"text\": \"walrus\"}", &o, &r), 0);
  assert_int_equal(stored_then_found(&a, &b, "c2", "{\"text\": \"penguin\"}", &o, &q, &r), 2);
  assert_int_equal(stored_then_found(&a, &b, "c3", "{\"text\": \"penguin walrus\"}", &o, &q, &r), 3);
  result_reset(&r);
  ctx_close(&a);
  ctx_close(&b);
}

/* ---- Two processes on one file ---- */

static void writer_main(const char *path, const char *prefix) {
  ctx_t c;
  result_t r = {0};
  tally_t t = {0};
  char key[64];
  int i, batch;
  memset(&c, 0, sizeof c);
  if (uv_loop_init(&c.loop) != 0 || engram_manager_new(&c.mgr, &c.loop, NULL) != 0) _exit(6);
  if (engram_manager_add_source(c.mgr, "mem", &engram_source_sqlite, options_for(path, NULL), NULL, 1, capture_cb,
                                &r) != 0)
    _exit(7);
  if (!loop_wait(&c.loop, &r.calls, 1, 30000) || r.status != 0) {
    fprintf(stderr, "writer %s: open: %s\n", prefix, r.message);
    _exit(8);
  }
  for (batch = 0; batch < 3000; batch += 250) {
    for (i = batch; i < batch + 250; i++) {
      cJSON *v = cJSON_CreateNumber(i);
      snprintf(key, sizeof key, "%s%d", prefix, i);
      if (engram_store(c.mgr, key, v, NULL, tally_cb, &t) != 0) _exit(9);
      cJSON_Delete(v);
    }
    if (!loop_wait(&c.loop, &t.calls, batch + 250, 60000)) _exit(11);
  }
  if (t.ok != 3000) {
    fprintf(stderr, "writer %s: %d of 3000 stores succeeded: %s\n", prefix, t.ok, t.message);
    _exit(10);
  }
  _exit(0);
}

static void two_processes_write_one_file(void **state) {
  const char *p = db_path("two");
  char path[256];
  pid_t a, b;
  int sa, sb;
  ctx_t c;
  result_t r = {0};
  engram_query_t q = ENGRAM_QUERY_INIT;
  (void)state;
  snprintf(path, sizeof path, "%s", p);
  if ((a = fork()) == 0) writer_main(path, "a:");
  if ((b = fork()) == 0) writer_main(path, "b:");
  assert_true(a > 0 && b > 0);
  assert_int_equal(waitpid(a, &sa, 0), a);
  assert_int_equal(waitpid(b, &sb, 0), b);
  assert_true(WIFEXITED(sa) && WEXITSTATUS(sa) == 0);
  assert_true(WIFEXITED(sb) && WEXITSTATUS(sb) == 0);
  open_ctx(&c, path);
  assert_int_equal(s_count(&c, &q, NULL, &r), 0);
  assert_int_equal((int)r.count, 6000);
  q.pattern = "a:*";
  assert_int_equal(s_count(&c, &q, NULL, &r), 0);
  assert_int_equal((int)r.count, 3000);
  assert_int_equal(s_retrieve(&c, "b:2999", NULL, &r), 0);
  assert_int_equal((int)result_item(&r, 0, "value")->valuedouble, 2999);
  result_reset(&r);
  ctx_close(&c);
}

/* ---- Bad input ---- */

static void refused_options_name_the_problem(void **state) {
  ctx_t c;
  result_t r = {0};
  const char *path = db_path("opts");
  char opts[512];
  (void)state;
  ctx_init(&c, NULL);
  snprintf(opts, sizeof opts, "{\"path\": \"%s\", \"table\": \"x; DROP TABLE y\"}", path);
  assert_int_equal(add_sqlite(&c, opts, &r), ENGRAM_EINVAL);
  assert_non_null(strstr(r.message, "option \"table\""));
  assert_non_null(strstr(r.message, "x; DROP TABLE y"));
  snprintf(opts, sizeof opts, "{\"path\": \"%s\", \"pathh\": 1}", path);
  assert_int_equal(add_sqlite(&c, opts, &r), ENGRAM_EINVAL);
  assert_non_null(strstr(r.message, "unknown option \"pathh\""));
  /* A name given twice is refused (cJSON would read the first and drop the second without a word). */
  snprintf(opts, sizeof opts, "{\"path\": \"%s\", \"busy_timeout_ms\": 10, \"busy_timeout_ms\": 5000}", path);
  assert_int_equal(add_sqlite(&c, opts, &r), ENGRAM_EINVAL);
  assert_non_null(strstr(r.message, "option \"busy_timeout_ms\" given twice"));
  snprintf(opts, sizeof opts, "{\"path\": \"%s\", \"synchronous\": \"sometimes\"}", path);
  assert_int_equal(add_sqlite(&c, opts, &r), ENGRAM_EINVAL);
  assert_non_null(strstr(r.message, "synchronous"));
  assert_int_equal(add_sqlite(&c, "{\"path\": \"/nonexistent-engram-dir/sub/x.db\"}", &r), ENGRAM_EBACKEND);
  assert_non_null(strstr(r.message, "/nonexistent-engram-dir/sub/x.db"));
  assert_non_null(strstr(r.message, "mem"));
  assert_int_equal(add_sqlite(&c, "{\"table\": \"sqlite_master\"}", &r), ENGRAM_EINVAL);
  /* Nothing was added by the failures; a good one still opens, with a table name of its own. */
  snprintf(opts, sizeof opts, "{\"path\": \"%s\", \"table\": \"_Mem_2\", \"synchronous\": \"normal\"}", path);
  assert_int_equal(add_sqlite(&c, opts, &r), 0);
  assert_int_equal(s_store(&c, "k", "1", NULL, &r), 0);
  assert_int_equal(s_info(&c, NULL, &r), 0);
  assert_string_equal(cJSON_GetObjectItem(r.info, "table")->valuestring, "_Mem_2");
  assert_string_equal(cJSON_GetObjectItem(r.info, "path")->valuestring, path);
  assert_string_equal(cJSON_GetObjectItem(r.info, "journal_mode")->valuestring, "wal");
  assert_true(cJSON_GetObjectItem(r.info, "file_bytes")->valuedouble > 0);
  assert_true(cJSON_GetObjectItem(r.info, "wal_bytes")->valuedouble > 0);
  result_reset(&r);
  ctx_close(&c);
}

static void awkward_keys_and_values_round_trip(void **state) {
  ctx_t c;
  result_t r = {0};
  engram_opts_t o = {0};
  const char *keys[] = {"'; DROP TABLE engram_items; --", "quote\"double", "back\\slash\\\\", "\xf0\x9f\x90\xa7 penguin",
                        "%_like_wildcards_%", "tab\there"};
  const char *values[] = {"\"'; DROP TABLE engram_items; --\"", "{\"q\": \"\\\"\", \"b\": \"\\\\\"}",
                          "[\"\xe6\x97\xa5\xe6\x9c\xac\", \"\\u0001\", \"\\ud83d\\udc27\"]", "{\"nested\": {\"k'\": [1, null]}}",
                          "[-1.5e300, 0.1, 1e-7, 123456789012345678, -0.0, 3.141592653589793, 5e-324, -42]", "\"\""};
  size_t i, n = 1 << 20;
  char *big;
  cJSON *v, *w;
  (void)state;
  open_ctx(&c, db_path("awkward"));
  o.ns = "ns with 'quote' and \xc3\xa9";
  for (i = 0; i < 6; i++) assert_int_equal(s_store(&c, keys[i], values[i], &o, &r), 0);
  for (i = 0; i < 6; i++) {
    assert_int_equal(s_retrieve(&c, keys[i], &o, &r), 0);
    assert_string_equal(result_key(&r, 0), keys[i]);
    assert_string_equal(result_item(&r, 0, "ns")->valuestring, o.ns);
    w = J(values[i]);
    assert_true(cJSON_Compare(result_item(&r, 0, "value"), w, 1));
    cJSON_Delete(w);
  }
  /* LIKE wildcards in a pattern are plain characters. */
  assert_int_equal(s_list(&c, "%_like*", 100, NULL, &o, &r), 0);
  assert_int_equal(r.n_items, 1);
  assert_int_equal(s_list(&c, "*", 100, NULL, &o, &r), 0);
  assert_int_equal(r.n_items, 6);
  /* A 1 MiB object of unicode text. */
  big = malloc(n + 64);
  strcpy(big, "{\"text\": \"");
  for (i = strlen(big); i < n; i += 3) memcpy(big + i, "\xe2\x82\xac", 3); /* € */
  strcpy(big + i, "\"}");
  assert_int_equal(s_store(&c, "big", big, NULL, &r), 0);
  assert_int_equal(s_retrieve(&c, "big", NULL, &r), 0);
  v = J(big);
  assert_true(cJSON_Compare(result_item(&r, 0, "value"), v, 1));
  cJSON_Delete(v);
  free(big);
  result_reset(&r);
  ctx_close(&c);
}

/* list_keys reads cursors with the core's one codec: what src/shared/cursor.c refuses (a sign, a space or another
 * blank before the namespace length), the SQLite source refuses too, where strtoul once accepted it. */
static void foreign_cursors_are_refused(void **state) {
  ctx_t c;
  result_t r = {0};
  const char *bad[] = {" 0:k", "+0:k", "-0:k", "\f0:k"};
  size_t i;
  (void)state;
  open_ctx(&c, db_path("cursors"));
  assert_int_equal(s_store(&c, "k", "1", NULL, &r), 0);
  assert_int_equal(s_store(&c, "l", "1", NULL, &r), 0);
  for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    if (s_list(&c, NULL, 10, bad[i], NULL, &r) != ENGRAM_EINVAL)
      fail_msg("cursor \"%s\": %s, want ENGRAM_EINVAL", bad[i], engram_err_name(r.status));
  }
  /* The cursor the source makes still resumes after the key it names. */
  assert_int_equal(s_list(&c, NULL, 1, NULL, NULL, &r), 0);
  assert_int_equal(r.n_items, 1);
  assert_string_equal(r.cursor, "0:k");
  assert_int_equal(s_list(&c, NULL, 10, r.cursor, NULL, &r), 0);
  assert_int_equal(r.n_items, 1);
  assert_string_equal(result_key(&r, 0), "l");
  assert_null(r.cursor);
  result_reset(&r);
  ctx_close(&c);
}

/* ---- TTL sweep and native update ---- */

static int append_x(const cJSON *current, cJSON **next, void *ud) {
  (void)ud;
  *next = cJSON_CreateString(current && cJSON_IsString(current) ? "xx" : "x");
  return 0;
}

static void sweep_deletes_expired_rows(void **state) {
  ctx_t c;
  result_t r = {0};
  engram_opts_t o = {0};
  cJSON *meta = J("{\"m\": 1}");
  (void)state;
  open_ctx(&c, db_path("sweep"));
  o.flags = ENGRAM_OPT_TTL;
  o.ttl_ms = 30;
  assert_int_equal(s_store(&c, "brief1", "1", &o, &r), 0);
  assert_int_equal(s_store(&c, "brief2", "2", &o, &r), 0);
  o.ttl_ms = 600000;
  o.metadata = meta;
  assert_int_equal(s_store(&c, "long", "\"v\"", &o, &r), 0);
  assert_int_equal((int)info_num(&c, "rows"), 3);
  /* Nobody reads them: the sweep (every second) deletes them. */
  run_for(&c, 2200);
  assert_int_equal((int)info_num(&c, "rows"), 1);
  assert_true(info_num(&c, "expirations") >= 2);
  /* Update keeps metadata and expiry, bumps the version. */
  result_reset(&r);
  assert_int_equal(engram_update(c.mgr, "long", append_x, NULL, NULL, capture_cb, &r), 0);
  wait_for(&c, &r.calls, 1, 30000);
  assert_int_equal(r.status, 0);
  assert_string_equal(result_item(&r, 0, "value")->valuestring, "xx");
  assert_int_equal((int)result_item(&r, 0, "version")->valuedouble, 2);
  assert_true(result_item(&r, 0, "expires_at_ms")->valuedouble > 0);
  assert_int_equal((int)cJSON_GetObjectItem(result_item(&r, 0, "metadata"), "m")->valuedouble, 1);
  cJSON_Delete(meta);
  result_reset(&r);
  ctx_close(&c);
}

/* ---- Configuration by type name; listing and clearing every namespace ---- */

/* list_keys across namespaces, as the core asks for it with ENGRAM_REQ_ALL_NAMESPACES. */
static void list_every_namespace(engram_source_t *src, engram_request_t *req) {
  req->flags |= ENGRAM_REQ_ALL_NAMESPACES;
  engram_source_sqlite.list_keys(src, req);
}

static void configured_by_type_and_cleared_across_namespaces(void **state) {
  ctx_t c;
  result_t r = {0};
  engram_opts_t a = {0}, b = {0}, all = {0};
  engram_query_t q = ENGRAM_QUERY_INIT;
  static engram_source_vtable_t no_clear;
  char config[512], key[32];
  int i;
  (void)state;
  ctx_init(&c, NULL);
  snprintf(config, sizeof config, "{\"sources\": [{\"name\": \"db\", \"type\": \"sqlite\", \"default\": true,"
           " \"options\": {\"path\": \"%s\"}}]}", db_path("config"));
  assert_int_equal(engram_manager_configure(c.mgr, config, capture_cb, &r), 0);
  wait_for(&c, &r.calls, 1, 30000);
  assert_int_equal(r.status, 0);
  assert_int_equal(s_store(&c, "k", "1", NULL, &r), 0);
  assert_string_equal(r.source, "db");
  /* Without a native clear the core lists every namespace (ENGRAM_REQ_ALL_NAMESPACES) and deletes page by page. */
  no_clear = engram_source_sqlite;
  no_clear.clear = NULL;
  no_clear.list_keys = list_every_namespace;
  result_reset(&r);
  assert_int_equal(engram_manager_add_source(c.mgr, "nc", &no_clear, options_for(db_path("noclear"), NULL), NULL, 1,
                                             capture_cb, &r), 0);
  wait_for(&c, &r.calls, 1, 30000);
  assert_int_equal(r.status, 0);
  a.ns = "a";
  b.ns = "b/c";
  for (i = 0; i < 1100; i++) {
    snprintf(key, sizeof key, "x%04d", i);
    assert_int_equal(s_store(&c, key, "1", i % 2 ? &a : &b, &r), 0);
  }
  /* Keyset pages over both namespaces, in (namespace, key) order: every key exactly once. */
  {
    char *cursor = NULL, last[64] = "";
    int seen = 0, pages = 0;
    size_t j;
    do {
      assert_int_equal(s_list(&c, "x*", 300, cursor, NULL, &r), 0);
      free(cursor);
      cursor = r.cursor ? strdup(r.cursor) : NULL;
      for (j = 0; j < r.n_items; j++) {
        char cur[64];
        snprintf(cur, sizeof cur, "%s|%s", result_item(&r, j, "ns")->valuestring, result_key(&r, j));
        if (strcmp(cur, last) <= 0) fail_msg("%s listed after %s", cur, last);
        snprintf(last, sizeof last, "%s", cur);
        seen++;
      }
      pages++;
    } while (cursor != NULL && pages < 10);
    assert_int_equal(seen, 1100);
    assert_int_equal(pages, 4);
    assert_string_equal(last, "b/c|x1098");
  }
  all.flags = ENGRAM_OPT_CONFIRM;
  assert_int_equal(s_clear(&c, &all, &r), 0);
  assert_int_equal((int)r.count, 1100);
  assert_int_equal(s_count(&c, &q, &a, &r), 0);
  assert_int_equal((int)r.count, 0);
  assert_int_equal(s_count(&c, &q, &b, &r), 0);
  assert_int_equal((int)r.count, 0);
  /* The native clear of the other source counts what it removed. */
  all.source = "db";
  assert_int_equal(s_clear(&c, &all, &r), 0);
  assert_int_equal((int)r.count, 1);
  result_reset(&r);
  ctx_close(&c);
}

/* ---- Checkpoints and read groups ---- */

/* WAL checkpoints run on the source's checkpointer thread, and the WAL stays bounded even under one long stream of
 * commits with no pause (where SQLite would restart it only with the actor's help): 60,000 stores of 1.6 KB
 * submitted at once write ~110 MB of WAL frames, while the WAL file stays near the ~40 MB (10,000 frames) at
 * which the actor copies the tail. Every store is then there, and the file is sound. */
static void checkpoints_run_off_the_actor_and_bound_the_wal(void **state) {
  ctx_t c;
  tally_t t = {0};
  result_t r = {0};
  engram_query_t q = ENGRAM_QUERY_INIT;
  const char *path = db_path("ckpt");
  char saved[256], key[32], big[1601];
  sqlite3 *db;
  sqlite3_stmt *st;
  double wal, passes;
  int i;
  (void)state;
  snprintf(saved, sizeof saved, "%s", path);
  memset(big, 'x', 1600);
  big[1600] = '\0';
  ctx_init(&c, NULL);
  if (add_sqlite(&c, options_for(saved, "\"synchronous\": \"normal\""), &r) != 0) fail_msg("open: %s", r.message);
  result_reset(&r);
  for (i = 0; i < 60000; i++) {
    cJSON *v = cJSON_CreateObject();
    cJSON_AddNumberToObject(v, "i", i);
    cJSON_AddStringToObject(v, "pad", big);
    snprintf(key, sizeof key, "w%05d", i);
    assert_int_equal(engram_store(c.mgr, key, v, NULL, tally_cb, &t), 0);
    cJSON_Delete(v);
  }
  wait_for(&c, &t.calls, 60000, 120000);
  if (t.ok != 60000) fail_msg("%d of 60000 stores succeeded: %s", t.ok, t.message);
  assert_int_equal(s_info(&c, NULL, &r), 0);
  assert_true(cJSON_IsTrue(cJSON_GetObjectItem(r.info, "checkpoint_thread")));
  passes = cJSON_GetObjectItem(r.info, "checkpoints")->valuedouble;
  wal = cJSON_GetObjectItem(r.info, "wal_bytes")->valuedouble;
  print_message("60000 stores of 1.6 KB at once: %.0f checkpoint passes, %.0f copied by the actor, %.0f commits,"
                " WAL file %.1f MB\n", passes, cJSON_GetObjectItem(r.info, "inline_checkpoints")->valuedouble,
                cJSON_GetObjectItem(r.info, "commits")->valuedouble, wal / 1048576.0);
  /* The thread's passes, or — when a busy machine gave it no CPU — the actor's own, kept the WAL bounded. */
  assert_true(passes + cJSON_GetObjectItem(r.info, "inline_checkpoints")->valuedouble >= 1);
  assert_int_equal((int)cJSON_GetObjectItem(r.info, "checkpoint_failures")->valuedouble, 0);
  assert_true(wal < 64.0 * 1048576.0);
  result_reset(&r);
  ctx_close(&c);
  /* Everything acknowledged is there, and the file is sound. */
  open_ctx(&c, saved);
  assert_int_equal(s_count(&c, &q, NULL, &r), 0);
  assert_int_equal((int)r.count, 60000);
  assert_int_equal(s_retrieve(&c, "w59999", NULL, &r), 0);
  assert_int_equal((int)cJSON_GetObjectItem(result_item(&r, 0, "value"), "i")->valuedouble, 59999);
  result_reset(&r);
  ctx_close(&c);
  assert_int_equal(sqlite3_open(saved, &db), SQLITE_OK);
  assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  assert_string_equal((const char *)sqlite3_column_text(st, 0), "ok");
  sqlite3_finalize(st);
  sqlite3_close(db);
}

/* Point reads of one loop iteration share one read transaction; a write in the same iteration ends it and opens
 * the write group, so calls submitted back to back still see every write submitted before them, and a write
 * made by another connection meanwhile is seen by the next reads. */
static void reads_of_a_batch_see_the_writes_before_them(void **state) {
  ctx_t c;
  result_t rs[9], r = {0};
  cJSON *one = J("1"), *two = J("2");
  const char *path = db_path("reads");
  char saved[256];
  sqlite3 *db;
  int i;
  (void)state;
  memset(rs, 0, sizeof rs);
  snprintf(saved, sizeof saved, "%s", path);
  open_ctx(&c, saved);
  assert_int_equal(s_store(&c, "other", "0", NULL, &r), 0);
  /* All submitted before the first callback: they reach the actor together. */
  assert_int_equal(engram_retrieve(c.mgr, "k", NULL, capture_cb, &rs[0]), 0);
  assert_int_equal(engram_retrieve(c.mgr, "other", NULL, capture_cb, &rs[1]), 0);
  assert_int_equal(engram_store(c.mgr, "k", one, NULL, capture_cb, &rs[2]), 0);
  assert_int_equal(engram_retrieve(c.mgr, "k", NULL, capture_cb, &rs[3]), 0);
  assert_int_equal(engram_store(c.mgr, "k", two, NULL, capture_cb, &rs[4]), 0);
  assert_int_equal(engram_retrieve(c.mgr, "k", NULL, capture_cb, &rs[5]), 0);
  assert_int_equal(engram_delete(c.mgr, "k", NULL, capture_cb, &rs[6]), 0);
  assert_int_equal(engram_exists(c.mgr, "k", NULL, capture_cb, &rs[7]), 0);
  assert_int_equal(engram_retrieve(c.mgr, "other", NULL, capture_cb, &rs[8]), 0);
  for (i = 0; i < 9; i++) wait_for(&c, &rs[i].calls, 1, 30000);
  assert_int_equal(rs[0].status, ENGRAM_ENOTFOUND);
  assert_int_equal(rs[1].status, 0);
  assert_int_equal(rs[2].status, 0);
  assert_int_equal(rs[3].status, 0);
  assert_int_equal((int)result_item(&rs[3], 0, "value")->valuedouble, 1);
  assert_int_equal(rs[4].status, 0);
  assert_int_equal(rs[5].status, 0);
  assert_int_equal((int)result_item(&rs[5], 0, "value")->valuedouble, 2);
  assert_int_equal(rs[6].status, 0);
  assert_int_equal((int)rs[6].count, 1);
  assert_int_equal(rs[7].status, 0);
  assert_int_equal((int)rs[7].count, 0);
  assert_int_equal(rs[8].status, 0);
  for (i = 0; i < 9; i++) {
    assert_int_equal(rs[i].calls, 1);
    result_reset(&rs[i]);
  }
  /* Another connection writes while the source is idle after reading: not blocked, and seen next time. */
  assert_int_equal(s_retrieve(&c, "other", NULL, &r), 0);
  assert_int_equal(sqlite3_open(saved, &db), SQLITE_OK);
  sqlite3_busy_timeout(db, 5000);
  assert_int_equal(sqlite3_exec(db, "INSERT INTO engram_items(key, value) VALUES('outside', '\"hi\"')", NULL, NULL, NULL),
                   SQLITE_OK);
  sqlite3_close(db);
  assert_int_equal(s_retrieve(&c, "outside", NULL, &r), 0);
  assert_string_equal(result_item(&r, 0, "value")->valuestring, "hi");
  cJSON_Delete(one);
  cJSON_Delete(two);
  result_reset(&r);
  ctx_close(&c);
}

/* ---- A quick throughput figure (the benchmark issue measures properly) ---- */

static void throughput_figure(void **state) {
  ctx_t c;
  tally_t t = {0};
  uint64_t t0, ns;
  int i;
  (void)state;
  open_ctx(&c, db_path("speed"));
  t0 = uv_hrtime();
  for (i = 0; i < 100000; i += 1000) store_range(&c, "s:", i, i + 1000, &t);
  ns = uv_hrtime() - t0;
  assert_int_equal(t.ok, 100000);
  print_message("sqlite (synchronous=full): 100000 stores, 1000 at a time: %.2f s = %.0f stores/s, %.0f commits\n",
                (double)ns / 1e9, 100000.0 / ((double)ns / 1e9), info_num(&c, "commits"));
  ctx_close(&c);
}

static double cpu_ms(void) {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u); /* every thread of the process: the actor's watch included */
  return (double)(u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1e3 + (double)(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e3;
}

/* One call in flight at a time: the actor watches its mailbox briefly before sleeping and producers skip the
 * wake-up while it watches (actor/spin.c, on in this program: see main). A push lost between the two would leave a call unanswered (wait_for
 * fails at its timeout). Then, idle, the process must not burn CPU: the watch only follows recent calls. */
static void one_at_a_time_then_idle(void **state) {
  ctx_t c;
  result_t r = {0};
  char key[32], val[32];
  double c0, used;
  int i;
  (void)state;
  open_ctx(&c, db_path("rt"));
  for (i = 0; i < 2000; i++) {
    snprintf(key, sizeof key, "rt%d", i % 50);
    snprintf(val, sizeof val, "%d", i);
    assert_int_equal(s_store(&c, key, val, NULL, &r), 0);
    result_reset(&r);
    assert_int_equal(s_retrieve(&c, key, NULL, &r), 0);
    assert_int_equal((int)result_item(&r, 0, "value")->valuedouble, i);
    result_reset(&r);
    if (i % 500 == 499) sleep_ms(3); /* the actor goes back to sleep: the next push must wake it */
  }
  run_for(&c, 20);
  c0 = cpu_ms();
  run_for(&c, 400);
  used = cpu_ms() - c0;
  print_message("idle 400 ms after 4000 calls one at a time: %.1f ms CPU\n", used);
  if (used > 40) fail_msg("an idle manager used %.1f ms of CPU in 400 ms", used);
  ctx_close(&c);
}

/* ---- Placement: "thread": "home" ---- */

/* Calls from other threads to a SQLite source on the home loop, answered through a completion queue that the
 * test's thread polls: the mailbox takes them from any thread while the source runs on the loop's thread. */
#define HOME_THREADS 2
#define HOME_CALLS 500

typedef struct {
  engram_manager_t *mgr;
  engram_cq_t *cq;
  int id;
} home_caller_t;

static atomic_int home_ok, home_failed, home_wrong_thread;
static uv_thread_t home_poller;

static void home_cq_cb(int status, const engram_reply_t *reply, void *ud) {
  uv_thread_t self = uv_thread_self();
  (void)reply;
  (void)ud;
  if (!uv_thread_equal(&self, &home_poller)) atomic_fetch_add(&home_wrong_thread, 1);
  atomic_fetch_add(status == 0 ? &home_ok : &home_failed, 1);
}

static void home_caller(void *arg) {
  home_caller_t *h = arg;
  engram_opts_t o = {0};
  char key[32];
  int i;
  o.cq = h->cq;
  for (i = 0; i < HOME_CALLS; i++) {
    cJSON *v = cJSON_CreateNumber(h->id * 100000 + i);
    snprintf(key, sizeof key, "t%d:%d", h->id, i);
    while (engram_store(h->mgr, key, v, &o, home_cq_cb, NULL) == ENGRAM_EBUSY) sleep_ms(1);
    cJSON_Delete(v);
    if (i % 5 == 4) { /* a read of a key this thread stored before */
      snprintf(key, sizeof key, "t%d:%d", h->id, i - 4);
      while (engram_retrieve(h->mgr, key, &o, home_cq_cb, NULL) == ENGRAM_EBUSY) sleep_ms(1);
    }
  }
}

static void home_placement_takes_calls_from_other_threads(void **state) {
  ctx_t c;
  result_t r = {0};
  engram_cq_t *cq;
  engram_opts_t o = {0};
  home_caller_t h[HOME_THREADS];
  uv_thread_t th[HOME_THREADS];
  int i, want = HOME_THREADS * (HOME_CALLS + HOME_CALLS / 5), spins = 0;
  char key[32];
  (void)state;
  atomic_store(&home_ok, 0);
  atomic_store(&home_failed, 0);
  atomic_store(&home_wrong_thread, 0);
  home_poller = uv_thread_self();
  ctx_init(&c, NULL);
  /* A value that is neither "own" nor "home" is refused, naming the option; so is "own" for a home-loop type. */
  assert_int_equal(engram_manager_add_source(c.mgr, "mem", &engram_source_sqlite,
                                             options_for(db_path("place"), "\"thread\": \"elsewhere\""), NULL, 1,
                                             capture_cb, &r),
                   ENGRAM_EINVAL);
  assert_non_null(strstr(engram_last_error(), "option \"thread\": must be \"own\" or \"home\""));
  assert_int_equal(engram_manager_add_source(c.mgr, "c", &engram_source_cache, "{\"thread\": \"own\"}", NULL, 0,
                                             capture_cb, &r),
                   ENGRAM_EINVAL);
  assert_non_null(strstr(engram_last_error(), "option \"thread\""));
  /* The default placement of the type is its own thread; "home" puts this one on the loop. */
  assert_int_equal(engram_manager_add_source(c.mgr, "own", &engram_source_sqlite, options_for(db_path("own"), NULL),
                                             NULL, 0, capture_cb, &r),
                   0);
  wait_for(&c, &r.calls, 1, 30000);
  assert_int_equal(r.status, 0);
  o.source = "own";
  assert_int_equal(s_info(&c, &o, &r), 0);
  assert_string_equal(cJSON_GetObjectItem(r.info, "thread")->valuestring, "own");
  assert_int_equal(add_sqlite(&c, options_for(db_path("home"), "\"thread\": \"home\""), &r), 0);
  assert_int_equal(s_info(&c, NULL, &r), 0);
  assert_string_equal(cJSON_GetObjectItem(r.info, "thread")->valuestring, "home");
  result_reset(&r);
  assert_int_equal(engram_cq_new(&cq, NULL), 0);
  for (i = 0; i < HOME_THREADS; i++) {
    h[i].mgr = c.mgr;
    h[i].cq = cq;
    h[i].id = i;
    assert_int_equal(uv_thread_create(&th[i], home_caller, &h[i]), 0);
  }
  /* The loop's thread runs the source and polls the queue, as a game frame would. */
  while (atomic_load(&home_ok) + atomic_load(&home_failed) < want && spins++ < 60000) {
    uv_run(&c.loop, UV_RUN_NOWAIT);
    engram_cq_poll(cq, 0);
    if (atomic_load(&home_ok) + atomic_load(&home_failed) < want) sleep_ms(1);
  }
  for (i = 0; i < HOME_THREADS; i++) uv_thread_join(&th[i]);
  assert_int_equal(atomic_load(&home_ok), want);
  assert_int_equal(atomic_load(&home_failed), 0);
  assert_int_equal(atomic_load(&home_wrong_thread), 0);
  assert_int_equal((int)engram_cq_pending(cq), 0);
  /* Every store is there, read back on the loop's thread. */
  for (i = 0; i < HOME_THREADS; i++) {
    snprintf(key, sizeof key, "t%d:%d", i, HOME_CALLS - 1);
    assert_int_equal(s_retrieve(&c, key, NULL, &r), 0);
    assert_int_equal((int)result_item(&r, 0, "value")->valuedouble, i * 100000 + HOME_CALLS - 1);
    result_reset(&r);
  }
  {
    engram_query_t q = {0};
    assert_int_equal(s_count(&c, &q, NULL, &r), 0);
    assert_int_equal((int)r.count, HOME_THREADS * HOME_CALLS);
  }
  result_reset(&r);
  ctx_close(&c);
  engram_cq_free(cq);
}

/* The tail of a long WAL that the actor copies itself before its next transaction — on the caller's loop for a
 * source placed there — is short while the checkpointer's passes gain on the commits (sqlite_ckpt.c,
 * engram__sq_ckpt_next). Before, the actor copied as soon as the thread was idle past 10,000 frames: the frames
 * committed during the thread's last pass, ~1,000 under bench_sqlite's open loop at half of raw SQLite's peak,
 * 6-30 ms on the home loop every ~300 ms. The policy is a pure function, driven here through a model of that
 * stream (counted, not timed): 27 frames a millisecond committed every 3 ms, a pass of n frames taking
 * 2 ms + n * 10 us (two fsyncs and the copy, as measured there). */
static int model_tail(int frames_per_ms, int *passes) {
  int frames = 0, copied = 0, chase = 0, busy_ms = 0, lag, t;
  *passes = 0;
  for (t = 3; t < 100000; t += 3) { /* a commit every 3 ms; the hook then decides, as wal_hook does */
    frames += 3 * frames_per_ms;
    busy_ms -= 3;
    lag = frames - copied;
    if (frames >= ENGRAM_SQ_HARD_FRAMES) return lag; /* a takeover: the actor copies whatever is left */
    if (busy_ms > 0) continue;                       /* a pass is running */
    switch (engram__sq_ckpt_next(frames, lag, chase)) {
      case SQ_CKPT_TAIL: return lag;
      case SQ_CKPT_PASS:
        if (frames >= ENGRAM_SQ_INLINE_FRAMES) chase = lag;
        (*passes)++;
        copied = frames; /* the pass copies what was committed when it began ... */
        busy_ms = 2 + lag / 100; /* ... and takes this long, while the commits go on */
        break;
      default: break;
    }
  }
  return -1;
}

static void wal_tail_policy_leaves_the_actor_a_short_copy(void **state) {
  int passes, tail;
  (void)state;
  /* Past the length at which the WAL is to start over, a long lag is the thread's to copy, not the actor's. */
  assert_int_equal(engram__sq_ckpt_next(ENGRAM_SQ_INLINE_FRAMES + 1000, 1000, 0), SQ_CKPT_PASS);
  assert_int_equal(engram__sq_ckpt_next(ENGRAM_SQ_INLINE_FRAMES + 1000, 300, 1000), SQ_CKPT_PASS);
  assert_int_equal(engram__sq_ckpt_next(ENGRAM_SQ_INLINE_FRAMES + 1000, ENGRAM_SQ_TAIL_FRAMES, 300), SQ_CKPT_TAIL);
  /* A pass that did not gain (as many frames committed during it as it copied): the actor copies, as before. */
  assert_int_equal(engram__sq_ckpt_next(ENGRAM_SQ_INLINE_FRAMES + 1000, 2000, 1000), SQ_CKPT_TAIL);
  /* Below that length: a pass every CKPT_FRAMES frames, nothing else. */
  assert_int_equal(engram__sq_ckpt_next(100, 10, 0), SQ_CKPT_NOTHING);
  assert_int_equal(engram__sq_ckpt_next(ENGRAM_SQ_CKPT_FRAMES, ENGRAM_SQ_CKPT_FRAMES, 0), SQ_CKPT_PASS);
  /* The stream of bench_sqlite's open loop: the passes shrink the lag until the actor's copy is short. */
  tail = model_tail(27, &passes);
  print_message("model, 27 frames/ms: the actor copies %d frames after %d passes of the thread\n", tail, passes);
  assert_true(tail > 0 && tail <= ENGRAM_SQ_TAIL_FRAMES);
  /* A stream faster than the passes: they stop gaining, and the actor copies what is left (as it always did). */
  tail = model_tail(150, &passes);
  print_message("model, 150 frames/ms: the actor copies %d frames after %d passes of the thread\n", tail, passes);
  assert_true(tail > ENGRAM_SQ_TAIL_FRAMES);
}

/* The same on a real file, the source on the home loop: each loop turn commits 100 stores of 1.6 KB (~45 WAL
 * frames) while the checkpointer copies, ~110 MB of frames in all. However the thread is scheduled every store
 * is stored, the WAL stays bounded, and the tails the actor copied are reported (inline_checkpoints,
 * inline_takeovers, inline_max_frames); how long they are depends on the disk's fsyncs against the stream, so it
 * is printed, not asserted (the policy is, above). */
static void home_loop_stream_keeps_the_wal_bounded(void **state) {
  ctx_t c;
  tally_t t = {0};
  result_t r = {0};
  const char *path = db_path("tail");
  char saved[256], key[32], big[1601];
  int i, j;
  (void)state;
  snprintf(saved, sizeof saved, "%s", path);
  memset(big, 'y', 1600);
  big[1600] = '\0';
  ctx_init(&c, NULL);
  if (add_sqlite(&c, options_for(saved, "\"synchronous\": \"normal\", \"thread\": \"home\""), &r) != 0)
    fail_msg("open: %s", r.message);
  result_reset(&r);
  for (i = 0; i < 600; i++) {
    for (j = 0; j < 100; j++) {
      cJSON *v = cJSON_CreateObject();
      cJSON_AddNumberToObject(v, "i", i * 100 + j);
      cJSON_AddStringToObject(v, "pad", big);
      snprintf(key, sizeof key, "s%05d", i * 100 + j);
      assert_int_equal(engram_store(c.mgr, key, v, NULL, tally_cb, &t), 0);
      cJSON_Delete(v);
    }
    wait_for(&c, &t.calls, (i + 1) * 100, 60000); /* this turn's group committed before the next is submitted */
  }
  if (t.ok != 60000) fail_msg("%d of 60000 stores succeeded: %s", t.ok, t.message);
  assert_int_equal(s_info(&c, NULL, &r), 0);
  assert_true(cJSON_IsTrue(cJSON_GetObjectItem(r.info, "checkpoint_thread")));
  print_message("60000 stores in groups of 100 on the home loop: %.0f commits, %.0f checkpoint passes, %.0f tails "
                "copied by the actor (%.0f takeovers), the longest of the others %.0f frames, WAL file %.1f MB\n",
                cJSON_GetObjectItem(r.info, "commits")->valuedouble,
                cJSON_GetObjectItem(r.info, "checkpoints")->valuedouble,
                cJSON_GetObjectItem(r.info, "inline_checkpoints")->valuedouble,
                cJSON_GetObjectItem(r.info, "inline_takeovers")->valuedouble,
                cJSON_GetObjectItem(r.info, "inline_max_frames")->valuedouble,
                cJSON_GetObjectItem(r.info, "wal_bytes")->valuedouble / 1048576.0);
  assert_true(cJSON_GetObjectItem(r.info, "commits")->valuedouble >= 600);
  assert_true(cJSON_GetObjectItem(r.info, "inline_checkpoints")->valuedouble >= 1); /* the WAL started over */
  assert_true(cJSON_GetObjectItem(r.info, "inline_takeovers")->valuedouble <=
              cJSON_GetObjectItem(r.info, "inline_checkpoints")->valuedouble);
  assert_int_equal((int)cJSON_GetObjectItem(r.info, "checkpoint_failures")->valuedouble, 0);
  assert_true(cJSON_GetObjectItem(r.info, "wal_bytes")->valuedouble < 64.0 * 1048576.0);
  result_reset(&r);
  ctx_close(&c);
}

int main(void) {
  static const struct CMUnitTest tests[] = {
      cmocka_unit_test(group_commit_and_durability),
      cmocka_unit_test(one_at_a_time_then_idle),
      cmocka_unit_test(failing_call_fails_alone),
      cmocka_unit_test(kill9_keeps_acknowledged_writes),
      cmocka_unit_test(shell_reads_and_writes_the_schema),
      cmocka_unit_test(another_managers_writes_are_searched),
      cmocka_unit_test(two_processes_write_one_file),
      cmocka_unit_test(refused_options_name_the_problem),
      cmocka_unit_test(awkward_keys_and_values_round_trip),
      cmocka_unit_test(foreign_cursors_are_refused),
      cmocka_unit_test(sweep_deletes_expired_rows),
      cmocka_unit_test(configured_by_type_and_cleared_across_namespaces),
      cmocka_unit_test(checkpoints_run_off_the_actor_and_bound_the_wal),
      cmocka_unit_test(reads_of_a_batch_see_the_writes_before_them),
      cmocka_unit_test(throughput_figure),
      cmocka_unit_test(home_placement_takes_calls_from_other_threads),
      cmocka_unit_test(wal_tail_policy_leaves_the_actor_a_short_copy),
      cmocka_unit_test(home_loop_stream_keeps_the_wal_bounded),
  };
  int rc;
  snprintf(tmp_dir, sizeof tmp_dir, "/tmp/engram_sqlite_test_XXXXXX");
  if (mkdtemp(tmp_dir) == NULL) {
    perror("mkdtemp");
    return 1;
  }
  atexit(remove_tmp_dir);
  /* The actor's mailbox watch (actor/spin.c) is off by default: these tests run with it on, so that its
   * skipped wake-ups are exercised by every test here, unless the environment chose. */
  setenv("ENGRAM_ACTOR_SPIN_US", "50", 0);
  rc = cmocka_run_group_tests_name("sqlite", tests, NULL, NULL);
  remove_tmp_dir();
  return rc;
}
