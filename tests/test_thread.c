/*
 * test_thread.c — conversation threads (include/engram/thread.h) on every entry of the conformance source list
 * (tests/support/sources_list.c): trimming by max_messages, windows by count and by tokens (tool calls never
 * split from their results, system messages kept), concurrent appenders on one loop and — on sqlite, redis and
 * postgres — in 4 processes (this binary run again with --append-child), the sliding TTL, listing, reads by
 * range, deletes, the renderings, every bad input, and summaries (engram_summarize_fn): the summariser receives
 * exactly the messages that fell out of the window and no summary covers, its answer — given later, or at once
 * inside the call — heads later windows (info.summary, the renderings, the token count) and rolls forward;
 * a failing summariser or a bad summary leaves the thread as it was; a window never waits for its summariser;
 * one request per thread at a time; no message is ever deleted by it; deleting the thread deletes the summary.
 * Every call's callback is counted (capture_cb).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "engram/export.h"
#include "support/failing_alloc.h"
#include "support/harness.h"

static const conf_source_t *cur_source;

static int setup(void **state) {
  ctx_t *c = calloc(1, sizeof *c);
  ctx_init(c, NULL);
  ctx_add(c, cur_source);
  *state = c;
  return 0;
}

static int teardown(void **state) {
  ctx_t *c = *state;
  ctx_close(c);
  free(c);
  return 0;
}

/* ---- synchronous helpers ---- */

static int finish_call(ctx_t *c, int rc, result_t *r) {
  if (rc != 0) fail_msg("call refused: %s (%s)", engram_err_name(rc), engram_last_error());
  wait_for(c, &r->calls, 1, 60000);
  return r->status;
}

static engram_message_t M(const char *role, const char *content) {
  engram_message_t m;
  memset(&m, 0, sizeof m);
  m.role = role;
  m.content = content;
  return m;
}

static int t_append(ctx_t *c, const char *id, const engram_message_t *m, size_t n, const engram_thread_settings_t *s,
                    result_t *r) {
  result_reset(r);
  return finish_call(c, engram_thread_append(c->mgr, id, m, n, s, NULL, capture_cb, r), r);
}

static int t_append1(ctx_t *c, const char *id, const char *role, const char *content, const engram_thread_settings_t *s,
                     result_t *r) {
  engram_message_t m = M(role, content);
  return t_append(c, id, &m, 1, s, r);
}

static int t_window(ctx_t *c, const char *id, const engram_window_t *w, result_t *r) {
  result_reset(r);
  return finish_call(c, engram_thread_window(c->mgr, id, w, NULL, capture_cb, r), r);
}

static int t_read(ctx_t *c, const char *id, uint64_t from, int limit, result_t *r) {
  result_reset(r);
  return finish_call(c, engram_thread_read(c->mgr, id, from, limit, NULL, capture_cb, r), r);
}

static int t_info(ctx_t *c, const char *id, result_t *r) {
  result_reset(r);
  return finish_call(c, engram_thread_info(c->mgr, id, NULL, capture_cb, r), r);
}

static uint64_t seq_of(const cJSON *m) { return (uint64_t)cJSON_GetObjectItemCaseSensitive(m, "seq")->valuedouble; }
static const char *str_of(const cJSON *m, const char *f) {
  return cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(m, f));
}
static const cJSON *info_msgs(const result_t *r) { return cJSON_GetObjectItemCaseSensitive(r->info, "messages"); }
static double info_num(const result_t *r, const char *f) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(r->info, f);
  if (!cJSON_IsNumber(v)) fail_msg("info.%s missing", f);
  return v->valuedouble;
}

/* Every message of the thread, in order, read page by page (as a caller would). */
static cJSON *read_all(ctx_t *c, const char *id) {
  cJSON *all = cJSON_CreateArray();
  result_t r = {0};
  uint64_t from = 0;
  for (;;) {
    const cJSON *m;
    assert_int_equal(t_read(c, id, from, 97, &r), 0);
    assert_int_equal((int)r.n_items, cJSON_GetArraySize(info_msgs(&r)));
    cJSON_ArrayForEach(m, info_msgs(&r)) cJSON_AddItemToArray(all, cJSON_Duplicate(m, 1));
    if (r.cursor == NULL) break;
    from = strtoull(r.cursor, NULL, 10);
  }
  result_reset(&r);
  return all;
}

/* ---- cases ---- */

static void trim_120_keeps_71_to_120(void **state) {
  ctx_t *c = *state;
  result_t r = {0};
  engram_thread_settings_t s = {ENGRAM_THREAD_MAX_MESSAGES, 50, 0};
  engram_window_t w = ENGRAM_WINDOW_INIT;
  char text[32];
  cJSON *all;
  const cJSON *m;
  engram_opts_t o = {0};
  uint64_t want = 71;
  int i;
  for (i = 1; i <= 120; i++) {
    snprintf(text, sizeof text, "message %d", i);
    assert_int_equal(t_append1(c, "trim", "user", text, i == 1 ? &s : NULL, &r), 0);
    assert_int_equal(r.calls, 1);
    assert_int_equal((int)info_num(&r, "first_seq"), i);
    assert_int_equal((int)info_num(&r, "count"), i < 50 ? i : 50);
  }
  all = read_all(c, "trim");
  assert_int_equal(cJSON_GetArraySize(all), 50);
  cJSON_ArrayForEach(m, all) {
    assert_int_equal((int)seq_of(m), (int)want);
    snprintf(text, sizeof text, "message %d", (int)want);
    assert_string_equal(str_of(m, "content"), text);
    want++;
  }
  cJSON_Delete(all);
  w.max_messages = 100;
  assert_int_equal(t_window(c, "trim", &w, &r), 0);
  assert_int_equal((int)r.n_items, 50);
  assert_int_equal((int)seq_of(result_item(&r, 0, "value")), 71);
  assert_int_equal((int)info_num(&r, "omitted"), 0);
  assert_int_equal(t_info(c, "trim", &r), 0);
  assert_int_equal((int)info_num(&r, "count"), 50);
  assert_int_equal((int)info_num(&r, "first_seq"), 71);
  assert_int_equal((int)info_num(&r, "last_seq"), 120);
  assert_int_equal((int)info_num(&r, "max_messages"), 50);
  /* the trimmed items are gone from the source too (the append answers after its delete_many) */
  (void)o;
  assert_int_equal(s_list(c, "thread-msg:trim:*", 1000, NULL, NULL, &r), 0);
  assert_int_equal((int)r.n_items, 50);
  result_reset(&r);
}

/* A conversation with tool calls: system, then turns where an assistant calls tools and tool messages answer. */
static void build_tool_thread(ctx_t *c, const char *id, int turns) {
  result_t r = {0};
  int t;
  engram_message_t sys = M("system", "You are a careful assistant.");
  assert_int_equal(t_append(c, id, &sys, 1, NULL, &r), 0);
  for (t = 0; t < turns; t++) {
    engram_message_t batch[6];
    char q[64], a[64], id1[32], id2[32], res1[128], res2[128], calls_json[400];
    cJSON *calls;
    size_t n = 0;
    int ncalls = t % 3; /* 0, 1 or 2 tool calls */
    snprintf(q, sizeof q, "question %d with some words", t);
    batch[n++] = M("user", q);
    snprintf(id1, sizeof id1, "call_%d_a", t);
    snprintf(id2, sizeof id2, "call_%d_b", t);
    if (ncalls == 1)
      snprintf(calls_json, sizeof calls_json,
               "[{\"id\": \"%s\", \"type\": \"function\", \"function\": {\"name\": \"lookup\", \"arguments\": \"{\\\"q\\\": %d}\"}}]",
               id1, t);
    else
      snprintf(calls_json, sizeof calls_json,
               "[{\"id\": \"%s\", \"type\": \"function\", \"function\": {\"name\": \"lookup\", \"arguments\": \"{}\"}},"
               " {\"id\": \"%s\", \"type\": \"function\", \"function\": {\"name\": \"weather\", \"arguments\": \"{}\"}}]",
               id1, id2);
    calls = J(calls_json);
    if (ncalls > 0) {
      engram_message_t am = M("assistant", NULL);
      am.tool_calls = calls;
      batch[n++] = am;
      snprintf(res1, sizeof res1, "result of %s: a fairly long tool output text", id1);
      batch[n] = M("tool", res1);
      batch[n++].tool_call_id = id1;
      if (ncalls == 2) {
        snprintf(res2, sizeof res2, "result of %s", id2);
        batch[n] = M("tool", res2);
        batch[n++].tool_call_id = id2;
      }
    }
    snprintf(a, sizeof a, "answer %d", t);
    batch[n++] = M("assistant", a);
    /* appended in two calls, as an agent does: the call and its results, then the answer */
    assert_int_equal(t_append(c, id, batch, n - 1, NULL, &r), 0);
    assert_int_equal(t_append(c, id, &batch[n - 1], 1, NULL, &r), 0);
    cJSON_Delete(calls);
  }
  result_reset(&r);
}

/* Checks a window's invariants against the whole thread. */
static void check_window(const cJSON *win, const cJSON *all, double omitted) {
  const cJSON *m, *x;
  uint64_t prev = 0;
  int nonsys = 0, total_nonsys = 0, has_sys = 0;
  cJSON_ArrayForEach(m, win) {
    const char *role = str_of(m, "role");
    assert_true(seq_of(m) > prev); /* chronological */
    prev = seq_of(m);
    if (strcmp(role, "system") == 0) {
      has_sys = 1;
      continue;
    }
    nonsys++;
    if (strcmp(role, "tool") == 0) { /* its call is in the window, before it */
      int found = 0;
      const cJSON *y;
      cJSON_ArrayForEach(x, win) {
        if (seq_of(x) >= seq_of(m)) break;
        cJSON_ArrayForEach(y, cJSON_GetObjectItemCaseSensitive(x, "tool_calls")) if (strcmp(str_of(y, "id"), str_of(m, "tool_call_id")) == 0) found = 1;
      }
      if (!found) fail_msg("tool result %s without its call in the window", str_of(m, "tool_call_id"));
    }
    if (cJSON_GetObjectItemCaseSensitive(m, "tool_calls") != NULL) { /* every result of the thread is in the window */
      const cJSON *call;
      cJSON_ArrayForEach(call, cJSON_GetObjectItemCaseSensitive(m, "tool_calls")) {
        cJSON_ArrayForEach(x, all) {
          if (str_of(x, "tool_call_id") && strcmp(str_of(x, "tool_call_id"), str_of(call, "id")) == 0) {
            const cJSON *y;
            int in = 0;
            cJSON_ArrayForEach(y, win) if (seq_of(y) == seq_of(x)) in = 1;
            if (!in) fail_msg("call %s in the window without its result %d", str_of(call, "id"), (int)seq_of(x));
          }
        }
      }
    }
  }
  assert_true(has_sys);
  cJSON_ArrayForEach(x, all) if (strcmp(str_of(x, "role"), "system") != 0) total_nonsys++;
  assert_int_equal((int)omitted, total_nonsys - nonsys);
}

static void token_window_keeps_tool_pairs(void **state) {
  ctx_t *c = *state;
  result_t r = {0};
  engram_window_t w = ENGRAM_WINDOW_INIT;
  cJSON *all;
  int b, n, split_seen = 0;
  build_tool_thread(c, "tools", 9);
  all = read_all(c, "tools");
  assert_true(cJSON_GetArraySize(all) > 30);
  w.flags = ENGRAM_WINDOW_BY_TOKENS;
  for (b = 1; b <= 200; b += 3) {
    w.max_tokens = b;
    assert_int_equal(t_window(c, "tools", &w, &r), 0);
    check_window(info_msgs(&r), all, info_num(&r, "omitted"));
    assert_true(info_num(&r, "tokens") <= b || cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r.info, "over_limit")));
  }
  w.flags = ENGRAM_WINDOW_BY_COUNT;
  for (n = 1; n <= 40; n++) {
    w.max_messages = n;
    assert_int_equal(t_window(c, "tools", &w, &r), 0);
    assert_true((int)r.n_items <= n || cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r.info, "over_limit")));
    if ((int)r.n_items < n && info_num(&r, "omitted") > 0) split_seen = 1; /* a cut moved back to a boundary */
    check_window(info_msgs(&r), all, info_num(&r, "omitted"));
  }
  assert_true(split_seen);
  /* both limits at once, with a caller's counter: every message costs 10 */
  cJSON_Delete(all);
  result_reset(&r);
}

static size_t ten_tokens(const cJSON *m, void *ud) {
  (*(int *)ud)++;
  return 10;
}

static void system_message_is_kept(void **state) {
  ctx_t *c = *state;
  result_t r = {0};
  engram_window_t w = ENGRAM_WINDOW_INIT;
  char text[32];
  int i, counted = 0;
  assert_int_equal(t_append1(c, "sys", "system", "Be brief.", NULL, &r), 0);
  for (i = 1; i <= 30; i++) {
    snprintf(text, sizeof text, "u%d", i);
    assert_int_equal(t_append1(c, "sys", i % 2 ? "user" : "assistant", text, NULL, &r), 0);
  }
  w.max_messages = 5;
  assert_int_equal(t_window(c, "sys", &w, &r), 0);
  assert_int_equal((int)r.n_items, 5);
  assert_string_equal(str_of(result_item(&r, 0, "value"), "role"), "system");
  assert_int_equal((int)seq_of(result_item(&r, 0, "value")), 1);
  assert_int_equal((int)seq_of(result_item(&r, 1, "value")), 28);
  assert_int_equal((int)seq_of(result_item(&r, 4, "value")), 31);
  assert_int_equal((int)info_num(&r, "omitted"), 26);
  /* a token budget with a caller's counter: 10 per message, 45 tokens = the system message + 3 */
  w.flags = ENGRAM_WINDOW_BY_TOKENS;
  w.max_tokens = 45;
  w.count_tokens = ten_tokens;
  w.count_ud = &counted;
  assert_int_equal(t_window(c, "sys", &w, &r), 0);
  assert_int_equal((int)r.n_items, 4);
  assert_int_equal((int)info_num(&r, "tokens"), 40);
  assert_true(counted >= 4);
  /* a budget below the system message: the system message alone, over_limit */
  w.max_tokens = 5;
  assert_int_equal(t_window(c, "sys", &w, &r), 0);
  assert_int_equal((int)r.n_items, 1);
  assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r.info, "over_limit")));
  /* renderings, in the reply and as a function */
  w = (engram_window_t)ENGRAM_WINDOW_INIT;
  w.max_messages = 3;
  w.format = ENGRAM_RENDER_OPENAI;
  assert_int_equal(t_window(c, "sys", &w, &r), 0);
  {
    cJSON *v = J(r.text);
    assert_int_equal(cJSON_GetArraySize(v), 3);
    assert_string_equal(str_of(cJSON_GetArrayItem(v, 0), "role"), "system");
    assert_string_equal(str_of(cJSON_GetArrayItem(v, 2), "content"), "u30");
    cJSON_Delete(v);
  }
  w.format = ENGRAM_RENDER_ANTHROPIC;
  assert_int_equal(t_window(c, "sys", &w, &r), 0);
  {
    cJSON *v = J(r.text);
    assert_string_equal(str_of(v, "system"), "Be brief.");
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(v, "messages")), 2);
    cJSON_Delete(v);
  }
  result_reset(&r);
}

static void renderings(void **state) {
  cJSON *msgs = J("[{\"seq\":1,\"role\":\"system\",\"content\":\"S1\"},{\"seq\":2,\"role\":\"system\",\"content\":\"S2\"},"
                  "{\"seq\":3,\"role\":\"user\",\"content\":\"hi\"},"
                  "{\"seq\":4,\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\","
                  "\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"x\\\":1}\"}},{\"id\":\"c2\",\"type\":\"function\","
                  "\"function\":{\"name\":\"g\",\"arguments\":\"not json\"}}]},"
                  "{\"seq\":5,\"role\":\"tool\",\"content\":\"r1\",\"tool_call_id\":\"c1\"},"
                  "{\"seq\":6,\"role\":\"tool\",\"content\":\"r2\",\"tool_call_id\":\"c2\"},"
                  "{\"seq\":7,\"role\":\"assistant\",\"content\":\"done\"}]");
  cJSON *oa = engram_thread_render(msgs, ENGRAM_RENDER_OPENAI), *an = engram_thread_render(msgs, ENGRAM_RENDER_ANTHROPIC);
  cJSON *want_oa = J("[{\"role\":\"system\",\"content\":\"S1\"},{\"role\":\"system\",\"content\":\"S2\"},"
                     "{\"role\":\"user\",\"content\":\"hi\"},{\"role\":\"assistant\",\"content\":null,\"tool_calls\":"
                     "[{\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"x\\\":1}\"}},"
                     "{\"id\":\"c2\",\"type\":\"function\",\"function\":{\"name\":\"g\",\"arguments\":\"not json\"}}]},"
                     "{\"role\":\"tool\",\"content\":\"r1\",\"tool_call_id\":\"c1\"},"
                     "{\"role\":\"tool\",\"content\":\"r2\",\"tool_call_id\":\"c2\"},"
                     "{\"role\":\"assistant\",\"content\":\"done\"}]");
  cJSON *want_an = J("{\"system\":\"S1\\n\\nS2\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"hi\"}]},"
                     "{\"role\":\"assistant\",\"content\":[{\"type\":\"tool_use\",\"id\":\"c1\",\"name\":\"f\",\"input\":{\"x\":1}},"
                     "{\"type\":\"tool_use\",\"id\":\"c2\",\"name\":\"g\",\"input\":{}}]},"
                     "{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":\"c1\",\"content\":\"r1\"},"
                     "{\"type\":\"tool_result\",\"tool_use_id\":\"c2\",\"content\":\"r2\"}]},"
                     "{\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"done\"}]}]}");
  (void)state;
  assert_true(cJSON_Compare(oa, want_oa, 1));
  assert_true(cJSON_Compare(an, want_an, 1));
  assert_null(engram_thread_render(msgs, (engram_render_format_t)9));
  assert_null(engram_thread_render(NULL, ENGRAM_RENDER_OPENAI));
  assert_int_equal((int)engram_thread_count_tokens(cJSON_GetArrayItem(msgs, 2), NULL), 1);
  cJSON_Delete(oa);
  cJSON_Delete(an);
  cJSON_Delete(want_oa);
  cJSON_Delete(want_an);
  cJSON_Delete(msgs);
}

/* Four callers on the loop, each appending 50 messages one after another, all at once. */
typedef struct {
  ctx_t *c;
  int who, next, failed;
  result_t r;
} appender_t;

static void appender_cb(int status, const engram_reply_t *reply, void *ud);
static int appenders_done; /* appenders that made all their appends */

static void appender_go(appender_t *a) {
  char text[32];
  engram_message_t m;
  snprintf(text, sizeof text, "%d:%d", a->who, a->next);
  m = M("user", text);
  result_reset(&a->r);
  assert_int_equal(engram_thread_append(a->c->mgr, "many", &m, 1, NULL, NULL, appender_cb, a), 0);
}

static void appender_cb(int status, const engram_reply_t *reply, void *ud) {
  appender_t *a = ud;
  capture_cb(status, reply, &a->r);
  if (status != 0) {
    fprintf(stderr, "appender %d: %s %s\n", a->who, engram_err_name(status), reply->message);
    a->failed++;
  }
  if (++a->next < 50) appender_go(a);
  else appenders_done++;
}

/* Every "<who>:<i>" exactly once, sequence numbers 1..n without a hole, each writer's i in order. */
static void check_total_order(const cJSON *all, int writers, int per) {
  int *last = calloc((size_t)writers, sizeof *last), *seen = calloc((size_t)(writers * per), sizeof *seen);
  const cJSON *m;
  uint64_t want = 1;
  int i;
  for (i = 0; i < writers; i++) last[i] = -1;
  cJSON_ArrayForEach(m, all) {
    int who, k;
    assert_int_equal((int)seq_of(m), (int)want);
    want++;
    assert_int_equal(sscanf(str_of(m, "content"), "%d:%d", &who, &k), 2);
    assert_true(who >= 0 && who < writers && k >= 0 && k < per);
    if (seen[who * per + k]++) fail_msg("message %d:%d twice", who, k);
    if (k <= last[who]) fail_msg("writer %d: %d after %d", who, k, last[who]);
    last[who] = k;
  }
  assert_int_equal(cJSON_GetArraySize(all), writers * per);
  free(last);
  free(seen);
}

static void four_callers_one_order(void **state) {
  ctx_t *c = *state;
  appender_t a[4];
  int i;
  cJSON *all;
  memset(a, 0, sizeof a);
  appenders_done = 0;
  for (i = 0; i < 4; i++) {
    a[i].c = c;
    a[i].who = i;
    appender_go(&a[i]);
  }
  wait_for(c, &appenders_done, 4, 120000);
  for (i = 0; i < 4; i++) {
    assert_int_equal(a[i].failed, 0);
    result_reset(&a[i].r);
  }
  all = read_all(c, "many");
  check_total_order(all, 4, 50);
  cJSON_Delete(all);
}

/* ---- appends to one thread in flight at once: merged behind the one in flight (thread_queue.h) ---- */

#define BURST 12
typedef struct {
  result_t r[BURST];
  int done;
} burst_t;
typedef struct {
  burst_t *b;
  int i;
} burst_ref_t;

static void burst_cb(int status, const engram_reply_t *reply, void *ud) {
  burst_ref_t *x = ud;
  capture_cb(status, reply, &x->b->r[x->i]);
  x->b->done++;
}

/* Submits k appends to id at once (none can end before the loop runs, so all but the first wait behind it and go as
 * one update): append i carries sizes[i] messages "<tag>:<i>:<j>", with settings s and opts o; waits for every
 * callback. */
static void burst(ctx_t *c, const char *id, const char *tag, int k, const int *sizes, const engram_thread_settings_t *s,
                  const engram_opts_t *o, burst_t *b, burst_ref_t *refs) {
  static char texts[BURST][10][32];
  int i, j;
  memset(b, 0, sizeof *b);
  for (i = 0; i < k; i++) {
    engram_message_t m[10];
    for (j = 0; j < sizes[i]; j++) {
      snprintf(texts[i][j], sizeof texts[i][j], "%s:%d:%d", tag, i, j);
      m[j] = M(j % 2 ? "assistant" : "user", texts[i][j]);
    }
    refs[i].b = b;
    refs[i].i = i;
    assert_int_equal(engram_thread_append(c->mgr, id, m, (size_t)sizes[i], s, o, burst_cb, &refs[i]), 0);
  }
  wait_for(c, &b->done, k, 60000);
}

/* Append i's reply carries its own messages, in order, numbered from first_seq. */
static void check_own_reply(const result_t *r, const char *tag, int i, int size) {
  const cJSON *m;
  int j = 0;
  char text[32];
  assert_int_equal(r->calls, 1);
  if (r->status != 0) fail_msg("append %d: %s %s", i, engram_err_name(r->status), r->message);
  assert_int_equal((int)r->n_items, size);
  assert_int_equal((int)info_num(r, "last_seq") - (int)info_num(r, "first_seq") + 1, size);
  cJSON_ArrayForEach(m, info_msgs(r)) {
    snprintf(text, sizeof text, "%s:%d:%d", tag, i, j);
    assert_string_equal(str_of(m, "content"), text);
    assert_int_equal((int)seq_of(m), (int)info_num(r, "first_seq") + j);
    assert_int_equal((int)seq_of(result_item(r, (size_t)j, "value")), (int)seq_of(m));
    j++;
  }
}

static void merged_appends_answer_each_caller(void **state) {
  ctx_t *c = *state;
  static burst_t b;
  burst_ref_t refs[BURST];
  int sizes[BURST], i, total = 0, seq = 1, kept = 0;
  engram_thread_settings_t max5 = {ENGRAM_THREAD_MAX_MESSAGES, 5, 0}, no_ttl = {ENGRAM_THREAD_NO_TTL, 0, 0};
  engram_opts_t o = {0};
  result_t r = {0};
  cJSON *all;
  const cJSON *m;
  /* no max_messages: each caller's numbers follow the order of the calls, its count is the thread's after it */
  for (i = 0; i < BURST; i++) total += sizes[i] = 1 + i % 4;
  burst(c, "merged", "a", BURST, sizes, NULL, NULL, &b, refs);
  for (i = 0; i < BURST; i++) {
    check_own_reply(&b.r[i], "a", i, sizes[i]);
    assert_int_equal((int)info_num(&b.r[i], "first_seq"), seq);
    seq += sizes[i];
    assert_int_equal((int)info_num(&b.r[i], "count"), seq - 1);
    assert_int_equal((int)info_num(&b.r[i], "trimmed"), 0);
    result_reset(&b.r[i]);
  }
  all = read_all(c, "merged");
  assert_int_equal(cJSON_GetArraySize(all), total);
  cJSON_Delete(all);
  /* max_messages 5: each caller's count and trimmed are what its append alone would have answered, and the thread
   * ends with exactly the newest 5 */
  for (i = 0; i < BURST; i++) sizes[i] = 2;
  burst(c, "merged-max", "b", BURST, sizes, &max5, NULL, &b, refs);
  for (i = 0; i < BURST; i++) {
    int before = kept;
    check_own_reply(&b.r[i], "b", i, 2);
    assert_int_equal((int)info_num(&b.r[i], "first_seq"), 2 * i + 1);
    kept = kept + 2 > 5 ? 5 : kept + 2;
    assert_int_equal((int)info_num(&b.r[i], "count"), kept);
    assert_int_equal((int)info_num(&b.r[i], "trimmed"), before + 2 - kept);
    result_reset(&b.r[i]);
  }
  all = read_all(c, "merged-max");
  assert_int_equal(cJSON_GetArraySize(all), 5);
  assert_int_equal((int)seq_of(cJSON_GetArrayItem(all, 0)), 2 * BURST - 4);
  assert_string_equal(str_of(cJSON_GetArrayItem(all, 4), "content"), "b:11:1");
  cJSON_Delete(all);
  assert_int_equal(s_list(c, "thread-msg:merged-max:*", 1000, NULL, NULL, &r), 0);
  assert_int_equal((int)r.n_items, 5); /* the trims rode on the merged update */
  result_reset(&r);
  /* calls with other settings are not merged with these: every message still once, each reply its own */
  for (i = 0; i < BURST; i++) sizes[i] = 3;
  memset(&b, 0, sizeof b);
  {
    static char texts[BURST][3][32];
    int j;
    for (i = 0; i < BURST; i++) {
      engram_message_t mm[3];
      for (j = 0; j < 3; j++) {
        snprintf(texts[i][j], sizeof texts[i][j], "c:%d:%d", i, j);
        mm[j] = M("user", texts[i][j]);
      }
      refs[i].b = &b;
      refs[i].i = i;
      assert_int_equal(engram_thread_append(c->mgr, "merged-mixed", mm, 3, i % 2 ? &no_ttl : NULL, NULL, burst_cb,
                                            &refs[i]), 0);
    }
    wait_for(c, &b.done, BURST, 60000);
  }
  for (i = 0; i < BURST; i++) {
    check_own_reply(&b.r[i], "c", i, 3);
    result_reset(&b.r[i]);
  }
  all = read_all(c, "merged-mixed");
  assert_int_equal(cJSON_GetArraySize(all), 3 * BURST);
  seq = 1;
  cJSON_ArrayForEach(m, all) assert_int_equal((int)seq_of(m), seq++);
  cJSON_Delete(all);
  /* a deadline that passes while the calls wait behind the first: each waiting one ends once, with
   * ENGRAM_ETIMEDOUT, and stores nothing */
  o.deadline_ms = 1;
  for (i = 0; i < BURST; i++) sizes[i] = 1;
  memset(&b, 0, sizeof b);
  {
    static char texts[BURST][32];
    int64_t t0;
    for (i = 0; i < BURST; i++) {
      engram_message_t mm;
      snprintf(texts[i], sizeof texts[i], "d:%d:0", i);
      mm = M("user", texts[i]);
      refs[i].b = &b;
      refs[i].i = i;
      assert_int_equal(engram_thread_append(c->mgr, "merged-late", &mm, 1, NULL, &o, burst_cb, &refs[i]), 0);
    }
    t0 = engram_now_ms(); /* after the last call: every deadline passes before the loop runs (no sleep: the clock) */
    while (engram_now_ms() < t0 + 3) {
    }
    wait_for(c, &b.done, BURST, 60000);
  }
  for (i = 0; i < 2; i++) { /* in flight at once (the cache: two; else one, thread.c lane_depth) */
    assert_int_equal(b.r[i].calls, 1);
    assert_true(b.r[i].status == 0 || b.r[i].status == ENGRAM_ETIMEDOUT);
    result_reset(&b.r[i]);
  }
  for (i = 2; i < BURST; i++) {
    assert_int_equal(b.r[i].calls, 1);
    assert_int_equal(b.r[i].status, ENGRAM_ETIMEDOUT);
    assert_non_null(strstr(b.r[i].message, "merged-late"));
    result_reset(&b.r[i]);
  }
  /* the thread goes on: a later append lands after whatever the first two stored, and no waiting one's message is
   * there */
  assert_int_equal(t_append1(c, "merged-late", "user", "after", NULL, &r), 0);
  all = read_all(c, "merged-late");
  assert_true(cJSON_GetArraySize(all) <= 3);
  assert_string_equal(str_of(cJSON_GetArrayItem(all, cJSON_GetArraySize(all) - 1), "content"), "after");
  cJSON_ArrayForEach(m, all) assert_true(strcmp(str_of(m, "content"), "after") == 0 ||
                                         strcmp(str_of(m, "content"), "d:0:0") == 0 ||
                                         strcmp(str_of(m, "content"), "d:1:0") == 0);
  cJSON_Delete(all);
  result_reset(&r);
}

/* ---- 4 processes x 1,000 appends to one thread ---- */

static const char *self_path;

/* The child: opens the same source (same options), appends per messages "<who>:<i>" one after another. */
static int child_main(const char *type, const char *options, const char *who_s, const char *n_s) {
  ctx_t c;
  result_t r = {0};
  engram_source_vtable_t vt;
  const engram_source_vtable_t *base = NULL;
  int who = atoi(who_s), n = atoi(n_s), i;
  if (strncmp(type, "sqlite", 6) == 0) base = &engram_source_sqlite;
#if ENGRAM_WITH_REDIS
  if (strncmp(type, "redis", 5) == 0) base = &engram_source_redis;
#endif
#if ENGRAM_WITH_POSTGRES
  if (strncmp(type, "postgres", 8) == 0) base = &engram_source_postgres;
#endif
  if (base == NULL) return 3;
  if (strstr(type, "required-only")) conf_required_only(&vt, base, type);
  else vt = *base;
  memset(&c, 0, sizeof c);
  if (uv_loop_init(&c.loop) != 0 || engram_manager_new(&c.mgr, &c.loop, NULL) != 0) return 4;
  if (engram_manager_add_source(c.mgr, "mem", &vt, options, NULL, 1, capture_cb, &r) != 0) return 5;
  if (!loop_wait(&c.loop, &r.calls, 1, 30000) || r.status != 0) {
    fprintf(stderr, "child %d: open: %s\n", who, r.message);
    return 6;
  }
  for (i = 0; i < n; i++) {
    char text[32];
    engram_message_t m;
    snprintf(text, sizeof text, "%d:%d", who, i);
    m = M("user", text);
    result_reset(&r);
    if (engram_thread_append(c.mgr, "shared", &m, 1, NULL, NULL, capture_cb, &r) != 0) return 7;
    if (!loop_wait(&c.loop, &r.calls, 1, 60000)) return 8;
    if (r.status != 0) {
      fprintf(stderr, "child %d: append %d: %s %s\n", who, i, engram_err_name(r.status), r.message);
      return 9;
    }
  }
  result_reset(&r);
  if (engram_manager_close(c.mgr, capture_cb, &r) != 0) return 10;
  loop_wait(&c.loop, &r.calls, 1, 30000);
  uv_run(&c.loop, UV_RUN_DEFAULT);
  uv_loop_close(&c.loop);
  result_reset(&r);
  engram_release_thread_cache();
  return 0;
}

static char *child_options;

static void four_processes_one_order(void **state) {
  ctx_t *c = *state;
  pid_t pid[4];
  char whos[4][16];
  int i;
  cJSON *all;
  /* the sources several processes share (sqlite-memory is one process's; the -required-only variants run the
   * same appends through the core's emulated update in the other cases) */
  if (strcmp(cur_source->type, "sqlite") != 0 && strcmp(cur_source->type, "redis") != 0 &&
      strcmp(cur_source->type, "postgres") != 0)
    skip();
  assert_non_null(child_options);
  for (i = 0; i < 4; i++) {
    char *argv[] = {(char *)self_path, "--append-child", (char *)cur_source->type, child_options, whos[i], "1000", NULL};
    snprintf(whos[i], sizeof whos[i], "%d", i);
    pid[i] = fork();
    assert_true(pid[i] >= 0);
    if (pid[i] == 0) {
      execv(self_path, argv);
      _exit(127);
    }
  }
  for (i = 0; i < 4; i++) {
    int st;
    /* the children run on their own; the parent's loop has nothing to do meanwhile */
    assert_int_equal(waitpid(pid[i], &st, 0), pid[i]);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) fail_msg("child %d ended with status 0x%x", i, st);
  }
  all = read_all(c, "shared");
  check_total_order(all, 4, 1000);
  cJSON_Delete(all);
}

/* Merged appends of this process while another process appends to the same thread: one child appends 80 messages
 * one after another, this process 80 in 10 bursts of 8 at once (merged behind the first of each burst). One total
 * order: each message once, numbers without a hole, each writer's in its order. */
static void merged_with_another_process(void **state) {
  ctx_t *c = *state;
  char *argv[] = {(char *)self_path, "--append-child", NULL, NULL, "0", "80", NULL};
  static burst_t b;
  burst_ref_t refs[BURST];
  static char texts[80][16];
  pid_t pid;
  int st, round, i;
  cJSON *all;
  if (strcmp(cur_source->type, "sqlite") != 0 && strcmp(cur_source->type, "redis") != 0 &&
      strcmp(cur_source->type, "postgres") != 0)
    skip();
  assert_non_null(child_options);
  argv[2] = (char *)cur_source->type;
  argv[3] = child_options;
  pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    execv(self_path, argv);
    _exit(127);
  }
  for (round = 0; round < 10; round++) {
    memset(&b, 0, sizeof b);
    for (i = 0; i < 8; i++) {
      engram_message_t m;
      snprintf(texts[round * 8 + i], sizeof texts[0], "1:%d", round * 8 + i);
      m = M("user", texts[round * 8 + i]);
      refs[i].b = &b;
      refs[i].i = i;
      assert_int_equal(engram_thread_append(c->mgr, "shared", &m, 1, NULL, NULL, burst_cb, &refs[i]), 0);
    }
    wait_for(c, &b.done, 8, 60000);
    for (i = 0; i < 8; i++) {
      assert_int_equal(b.r[i].calls, 1);
      if (b.r[i].status != 0) fail_msg("append: %s %s", engram_err_name(b.r[i].status), b.r[i].message);
      assert_int_equal((int)b.r[i].n_items, 1);
      result_reset(&b.r[i]);
    }
  }
  assert_int_equal(waitpid(pid, &st, 0), pid);
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) fail_msg("child ended with status 0x%x", st);
  all = read_all(c, "shared");
  check_total_order(all, 2, 80);
  cJSON_Delete(all);
}

/* A TTL named on the call slides the head within its update; ENGRAM_THREAD_NO_TTL stops the head expiring at once
 * (the head item itself, read back, has no expiry), and a TTL set again brings the expiry back. */
static void no_ttl_stops_the_head_expiring(void **state) {
  ctx_t *c = *state;
  result_t r = {0};
  engram_thread_settings_t ttl = {ENGRAM_THREAD_TTL, 0, 600000}, none = {ENGRAM_THREAD_NO_TTL, 0, 0};
  engram_opts_t o = {0};
  int64_t before;
  o.flags = ENGRAM_OPT_INCLUDE_METADATA;
  before = engram_now_ms();
  assert_int_equal(t_append1(c, "nottl", "user", "one", &ttl, &r), 0);
  assert_int_equal(t_info(c, "nottl", &r), 0);
  assert_true(info_num(&r, "expires_at_ms") >= (double)(before + 600000));
  assert_int_equal(s_retrieve(c, "thread:nottl", &o, &r), 0);
  assert_true(result_item(&r, 0, "expires_at_ms")->valuedouble >= (double)(before + 600000));
  assert_int_equal(t_append1(c, "nottl", "user", "two", &none, &r), 0);
  assert_int_equal(t_info(c, "nottl", &r), 0);
  assert_true(info_num(&r, "expires_at_ms") == 0);
  assert_int_equal(s_retrieve(c, "thread:nottl", &o, &r), 0);
  assert_true(result_item(&r, 0, "expires_at_ms")->valuedouble == 0);
  assert_int_equal(t_append1(c, "nottl", "user", "three", NULL, &r), 0); /* stays without one */
  assert_int_equal(s_retrieve(c, "thread:nottl", &o, &r), 0);
  assert_true(result_item(&r, 0, "expires_at_ms")->valuedouble == 0);
  before = engram_now_ms();
  assert_int_equal(t_append1(c, "nottl", "user", "four", &ttl, &r), 0);
  assert_int_equal(s_retrieve(c, "thread:nottl", &o, &r), 0);
  assert_true(result_item(&r, 0, "expires_at_ms")->valuedouble >= (double)(before + 600000));
  result_reset(&r);
}

static void ttl_slides_then_thread_disappears(void **state) {
  ctx_t *c = *state;
  result_t r = {0};
  engram_thread_settings_t s = {ENGRAM_THREAD_TTL, 0, 400};
  engram_window_t w = ENGRAM_WINDOW_INIT;
  int64_t t0, deadline, t_info_at, prev_done;
  int k = 0, attempt, stalled = 1;
  /* Appends for 2.5 TTLs (400 ms): the thread and every message stay, as each append pushes the expiry out.
   * What is checked is the sliding, not the machine's speed: when this process itself stalls for most of a TTL
   * between two appends (a loaded CI machine), the thread may rightly expire, and the phase starts over with a
   * fresh thread (at most 5 times) instead of failing. */
  for (attempt = 0; attempt < 5 && stalled; attempt++) {
    char id[32];
    snprintf(id, sizeof id, "ttl%d", attempt);
    stalled = 0;
    k = 0;
    t0 = prev_done = engram_now_ms();
    while (engram_now_ms() - t0 < 1000) {
      int64_t done;
      assert_int_equal(t_append1(c, id, "user", "still here", k == 0 ? &s : NULL, &r), 0);
      done = engram_now_ms();
      if (k > 0 && done - prev_done > 300) { /* 3/4 of the TTL without an append: not the code's fault */
        stalled = 1;
        break;
      }
      prev_done = done;
      k++;
      t_info_at = engram_now_ms();
      assert_int_equal(t_info(c, id, &r), 0);
      if (info_num(&r, "expires_at_ms") < (double)t_info_at)
        fail_msg("expires_at_ms %.0f before the info call at %" PRId64 " (append %d)", info_num(&r, "expires_at_ms"),
                 t_info_at, k);
      run_for(c, 40);
    }
    if (!stalled) {
      assert_int_equal(t_window(c, id, &w, &r), 0);
      if (engram_now_ms() - prev_done > 300) { /* stalled before the window: start over */
        stalled = 1;
        continue;
      }
      assert_int_equal((int)r.n_items, k < 50 ? k : 50);
      assert_int_equal((int)seq_of(result_item(&r, 0, "value")), k <= 50 ? 1 : k - 49);
    }
  }
  if (stalled) fail_msg("5 attempts stalled for most of a TTL between appends: the machine is too loaded");
  {
    char id[32];
    snprintf(id, sizeof id, "ttl%d", attempt - 1);
  /* then it disappears: wait for it, with a generous deadline */
  deadline = engram_now_ms() + 20000;
  while (t_info(c, id, &r) == 0) {
    if (engram_now_ms() > deadline) fail_msg("the thread is still there 20 s after its TTL");
    run_for(c, 50);
  }
  assert_int_equal(r.status, ENGRAM_ENOTFOUND);
  assert_int_equal(t_window(c, id, &w, &r), ENGRAM_ENOTFOUND);
  /* a new thread under the same id starts afresh */
  assert_int_equal(t_append1(c, id, "user", "again", NULL, &r), 0);
  assert_int_equal((int)info_num(&r, "first_seq"), 1);
  assert_int_equal(t_read(c, id, 0, 100, &r), 0);
  assert_int_equal((int)r.n_items, 1);
  }
  result_reset(&r);
}

/* Runs the loop until the wall clock has moved past the current millisecond (a condition). */
static void next_ms(ctx_t *c) { wait_clock_past(c, engram_now_ms()); }

static void list_threads_newest_first(void **state) {
  ctx_t *c = *state;
  result_t r = {0};
  engram_opts_t o = {0};
  cJSON *meta = J("{\"user\": \"ada\"}");
  char id[16];
  int i, seen = 0;
  char *cursor = NULL;
  for (i = 0; i < 7; i++) {
    snprintf(id, sizeof id, "t%d", i);
    assert_int_equal(t_append1(c, id, "user", "hello", NULL, &r), 0);
    next_ms(c); /* distinct updated_at_ms */
  }
  /* touching t2 moves it to the front */
  assert_int_equal(t_append1(c, "t2", "assistant", "hi", NULL, &r), 0);
  next_ms(c);
  result_reset(&r);
  assert_int_equal(engram_thread_set(c->mgr, "t4", meta, NULL, NULL, capture_cb, &r), 0);
  wait_for(c, &r.calls, 1, 30000);
  assert_int_equal(r.status, 0);
  /* a plain item in the namespace is not a thread */
  assert_int_equal(s_store(c, "thread:fake", "{\"x\": 1}", NULL, &r), 0);
  for (;;) {
    const cJSON *t;
    result_reset(&r);
    assert_int_equal(engram_thread_list(c->mgr, 3, cursor, &o, capture_cb, &r), 0);
    wait_for(c, &r.calls, 1, 30000);
    assert_int_equal(r.status, 0);
    cJSON_ArrayForEach(t, cJSON_GetObjectItemCaseSensitive(r.info, "threads")) {
      const char *tid = str_of(t, "thread");
      if (seen == 0) assert_string_equal(tid, "t4");
      if (seen == 1) assert_string_equal(tid, "t2");
      if (seen == 2) assert_string_equal(tid, "t6");
      if (strcmp(tid, "t4") == 0) assert_string_equal(str_of(cJSON_GetObjectItemCaseSensitive(t, "metadata"), "user"), "ada");
      if (strcmp(tid, "t2") == 0) assert_int_equal((int)cJSON_GetObjectItemCaseSensitive(t, "count")->valuedouble, 2);
      seen++;
    }
    free(cursor);
    cursor = r.cursor ? strdup(r.cursor) : NULL;
    if (cursor == NULL) break;
  }
  assert_int_equal(seen, 7);
  /* threads of another namespace are not listed */
  o.ns = "other";
  result_reset(&r);
  assert_int_equal(engram_thread_list(c->mgr, 10, NULL, &o, capture_cb, &r), 0);
  wait_for(c, &r.calls, 1, 30000);
  assert_int_equal((int)r.count, 0);
  cJSON_Delete(meta);
  result_reset(&r);
}

static void get_delete_and_set(void **state) {
  ctx_t *c = *state;
  result_t r = {0};
  engram_message_t ms[5];
  uint64_t del[] = {2, 4, 99};
  engram_thread_settings_t s = {ENGRAM_THREAD_MAX_MESSAGES, 2, 0};
  cJSON *parts = J("[{\"type\": \"text\", \"text\": \"look\"}, {\"type\": \"image_url\", \"image_url\": {\"url\": \"x\"}}]");
  cJSON *meta = J("{\"lang\": \"en\"}");
  int i;
  for (i = 0; i < 5; i++) ms[i] = M("user", "m");
  ms[1].content = NULL;
  ms[1].content_parts = parts;
  ms[2].metadata = meta;
  assert_int_equal(t_append(c, "gd", ms, 5, NULL, &r), 0);
  assert_int_equal((int)r.n_items, 5);
  assert_int_equal((int)info_num(&r, "last_seq"), 5);
  result_reset(&r);
  assert_int_equal(engram_thread_get_message(c->mgr, "gd", 2, NULL, capture_cb, &r), 0);
  wait_for(c, &r.calls, 1, 30000);
  assert_int_equal(r.status, 0);
  assert_true(cJSON_Compare(cJSON_GetObjectItemCaseSensitive(result_item(&r, 0, "value"), "content"), parts, 1));
  result_reset(&r);
  assert_int_equal(engram_thread_get_message(c->mgr, "gd", 3, NULL, capture_cb, &r), 0);
  wait_for(c, &r.calls, 1, 30000);
  assert_true(cJSON_Compare(result_item(&r, 0, "metadata"), meta, 1));
  result_reset(&r);
  assert_int_equal(engram_thread_delete_messages(c->mgr, "gd", del, 3, NULL, capture_cb, &r), 0);
  wait_for(c, &r.calls, 1, 30000);
  assert_int_equal(r.status, 0);
  assert_int_equal((int)r.count, 2);
  assert_int_equal((int)info_num(&r, "count"), 3);
  result_reset(&r);
  assert_int_equal(engram_thread_get_message(c->mgr, "gd", 4, NULL, capture_cb, &r), 0);
  wait_for(c, &r.calls, 1, 30000);
  assert_int_equal(r.status, ENGRAM_ENOTFOUND);
  assert_int_equal(t_read(c, "gd", 0, 10, &r), 0);
  assert_int_equal((int)r.n_items, 3);
  assert_int_equal((int)seq_of(result_item(&r, 1, "value")), 3);
  /* lowering max_messages trims at once: the newest 2 of 1, 3, 5 */
  result_reset(&r);
  assert_int_equal(engram_thread_set(c->mgr, "gd", NULL, &s, NULL, capture_cb, &r), 0);
  wait_for(c, &r.calls, 1, 30000);
  assert_int_equal(r.status, 0);
  assert_int_equal((int)info_num(&r, "count"), 2);
  assert_int_equal(t_read(c, "gd", 0, 10, &r), 0);
  assert_int_equal((int)r.n_items, 2);
  assert_int_equal((int)seq_of(result_item(&r, 0, "value")), 3);
  /* delete the thread: head and messages */
  result_reset(&r);
  assert_int_equal(engram_thread_delete(c->mgr, "gd", NULL, capture_cb, &r), 0);
  wait_for(c, &r.calls, 1, 30000);
  assert_int_equal(r.status, 0);
  assert_true(r.count >= 2);
  assert_int_equal(t_info(c, "gd", &r), ENGRAM_ENOTFOUND);
  assert_int_equal(s_list(c, "thread*", 1000, NULL, NULL, &r), 0);
  assert_int_equal((int)r.n_items, 0);
  result_reset(&r);
  assert_int_equal(engram_thread_delete(c->mgr, "gd", NULL, capture_cb, &r), 0);
  wait_for(c, &r.calls, 1, 30000);
  assert_int_equal(r.status, 0);
  assert_int_equal((int)r.count, 0);
  assert_int_equal(t_read(c, "nope", 0, 10, &r), ENGRAM_ENOTFOUND);
  assert_non_null(strstr(r.message, "nope"));
  cJSON_Delete(parts);
  cJSON_Delete(meta);
  result_reset(&r);
}

/* Refused at once, naming the field; nothing stored. */
static void expect_refused(int rc, const char *field) {
  assert_int_equal(rc, ENGRAM_EINVAL);
  if (strstr(engram_last_error(), field) == NULL) fail_msg("error \"%s\" does not name %s", engram_last_error(), field);
}

static void bad_input_is_refused(void **state) {
  ctx_t *c = *state;
  result_t r = {0};
  engram_message_t m = M("user", "ok"), two[2];
  engram_thread_settings_t s = {0};
  engram_window_t w = ENGRAM_WINDOW_INIT;
  cJSON *calls = J("[{\"id\": \"c1\", \"type\": \"function\", \"function\": {\"name\": \"f\", \"arguments\": \"{}\"}}]");
  cJSON *bad_calls = J("[{\"type\": \"function\"}]"), *arr = J("[1]");
  char long_id[ENGRAM_THREAD_ID_MAX + 2];
  memset(long_id, 'a', sizeof long_id - 1);
  long_id[sizeof long_id - 1] = '\0';
#define APPEND(id, msgs, n, set) engram_thread_append(c->mgr, id, msgs, n, set, NULL, capture_cb, &r)
  m.role = "bot";
  expect_refused(APPEND("x", &m, 1, NULL), "messages[0].role");
  m = M("user", "");
  expect_refused(APPEND("x", &m, 1, NULL), "messages[0].content");
  m = M("user", NULL);
  expect_refused(APPEND("x", &m, 1, NULL), "messages[0].content");
  m = M("tool", "result");
  expect_refused(APPEND("x", &m, 1, NULL), "messages[0].tool_call_id");
  m = M("user", "\xc3\x28");
  expect_refused(APPEND("x", &m, 1, NULL), "messages[0].content");
  two[0] = M("user", "fine");
  two[1] = M("user", "fine");
  two[1].metadata = arr;
  expect_refused(APPEND("x", two, 2, NULL), "messages[1].metadata");
  two[1] = M("user", "fine");
  two[1].tool_calls = calls;
  expect_refused(APPEND("x", two, 2, NULL), "messages[1].tool_calls");
  two[1] = M("assistant", NULL);
  two[1].tool_calls = bad_calls;
  expect_refused(APPEND("x", two, 2, NULL), "messages[1].tool_calls[0].id");
  two[1].tool_calls = calls; /* an assistant call without content is fine; the thread id is not */
  m = M("user", "ok");
  s.flags = ENGRAM_THREAD_MAX_MESSAGES;
  s.max_messages = 0;
  expect_refused(APPEND("x", &m, 1, &s), "settings.max_messages");
  s.max_messages = -3;
  expect_refused(APPEND("x", &m, 1, &s), "settings.max_messages");
  s.flags = ENGRAM_THREAD_TTL;
  s.ttl_ms = 0;
  expect_refused(APPEND("x", &m, 1, &s), "settings.ttl_ms");
  expect_refused(APPEND("", &m, 1, NULL), "thread");
  expect_refused(APPEND(NULL, &m, 1, NULL), "thread");
  expect_refused(APPEND(long_id, &m, 1, NULL), "thread");
  expect_refused(APPEND("a:b", &m, 1, NULL), "thread");
  expect_refused(APPEND("a*", &m, 1, NULL), "thread");
  expect_refused(APPEND("a b", &m, 1, NULL), "thread");
  expect_refused(APPEND("x", &m, 0, NULL), "n");
  w.flags = ENGRAM_WINDOW_BY_TOKENS;
  w.max_tokens = 0;
  expect_refused(engram_thread_window(c->mgr, "x", &w, NULL, capture_cb, &r), "window.max_tokens");
  w.flags = ENGRAM_WINDOW_BY_COUNT;
  w.max_messages = 0;
  expect_refused(engram_thread_window(c->mgr, "x", &w, NULL, capture_cb, &r), "window.max_messages");
  w.flags = 0;
  expect_refused(engram_thread_window(c->mgr, "x", &w, NULL, capture_cb, &r), "window.flags");
  expect_refused(engram_thread_read(c->mgr, "x", 0, 0, NULL, capture_cb, &r), "limit");
  expect_refused(engram_thread_list(c->mgr, 10, "junk", NULL, capture_cb, &r), "cursor");
  expect_refused(engram_thread_set(c->mgr, "x", NULL, NULL, NULL, capture_cb, &r), "metadata");
  /* nothing was stored, and no callback came */
  assert_int_equal(r.calls, 0);
  assert_int_equal(s_list(c, NULL, 1000, NULL, NULL, &r), 0);
  assert_int_equal((int)r.n_items, 0);
  /* the valid forms of the same calls work */
  assert_int_equal(t_append(c, "x", two, 2, NULL, &r), 0);
  {
    engram_opts_t o = {0};
    o.source = "nosuch";
    assert_int_equal(engram_thread_append(c->mgr, "x", &m, 1, NULL, &o, capture_cb, &r), ENGRAM_EUNKNOWN_SOURCE);
  }
  cJSON_Delete(calls);
  cJSON_Delete(bad_calls);
  cJSON_Delete(arr);
  result_reset(&r);
#undef APPEND
}

/* ---- summaries ---- */

/* What the summariser saw; mode 0 keeps the request for the test, 1 answers inside the call, 2 fails inside it. */
typedef struct {
  int calls, mode;
  engram_summary_request_t *req;
  char thread[ENGRAM_THREAD_ID_MAX + 1];
  char previous[256];
  int had_previous;
  uint64_t seqs[64];
  int n, roles_ok;
  result_t done;      /* engram_summary_complete's callback (modes 1, 2) */
  const result_t *win; /* the window's result: its callback must have run before the summariser's call */
  int after_window;    /* every call so far came after the window's callback */
} summ_t;

static void summarizer(engram_summary_request_t *req, const char *thread, const char *previous, const cJSON *messages,
                       void *ud) {
  summ_t *sm = ud;
  const cJSON *m;
  if (sm->calls++ == 0) sm->after_window = 1;
  if (sm->win == NULL || sm->win->calls != 1) sm->after_window = 0;
  sm->req = req;
  snprintf(sm->thread, sizeof sm->thread, "%s", thread);
  sm->had_previous = previous != NULL;
  snprintf(sm->previous, sizeof sm->previous, "%s", previous ? previous : "");
  sm->n = 0;
  sm->roles_ok = 1;
  cJSON_ArrayForEach(m, messages) {
    if (sm->n < 64) sm->seqs[sm->n++] = seq_of(m);
    if (str_of(m, "role") == NULL || strcmp(str_of(m, "role"), "system") == 0) sm->roles_ok = 0;
  }
  if (sm->mode == 1) {
    assert_int_equal(engram_summary_complete(req, 0, "inline summary", capture_cb, &sm->done), 0);
    assert_int_equal(sm->done.calls, 0); /* never from inside the call */
    sm->req = NULL;
  } else if (sm->mode == 2) {
    assert_int_equal(engram_summary_complete(req, -42, NULL, capture_cb, &sm->done), 0);
    sm->req = NULL;
  }
}

static int t_window_summ(ctx_t *c, const char *id, int max_messages, engram_render_format_t f, summ_t *sm, result_t *r) {
  engram_window_t w = ENGRAM_WINDOW_INIT;
  w.max_messages = max_messages;
  w.format = f;
  if (sm != NULL) {
    w.summarize = summarizer;
    w.summarize_ud = sm;
  }
  return t_window(c, id, &w, r);
}

/* Waits for the summariser's call number want. */
static void wait_summ(ctx_t *c, summ_t *sm, int want) { wait_for(c, &sm->calls, want, 60000); }

static void expect_seqs(const summ_t *sm, uint64_t from, uint64_t to) {
  int i;
  if (sm->n != (int)(to - from + 1)) fail_msg("summariser got %d messages, wanted %" PRIu64 "..%" PRIu64, sm->n, from, to);
  for (i = 0; i < sm->n; i++) assert_int_equal((int)sm->seqs[i], (int)(from + (uint64_t)i));
  assert_true(sm->roles_ok);
}

static int summary_items(ctx_t *c) {
  result_t r = {0};
  int n;
  assert_int_equal(s_list(c, "thread-msg:*:summary", 100, NULL, NULL, &r), 0);
  n = (int)r.n_items;
  result_reset(&r);
  return n;
}

static void summaries_head_later_windows(void **state) {
  ctx_t *c = *state;
  result_t r = {0}, done = {0};
  summ_t sm;
  const cJSON *sum;
  cJSON *all, *want;
  char text[32];
  int i;
  memset(&sm, 0, sizeof sm);
  assert_int_equal(t_append1(c, "s", "system", "Be brief.", NULL, &r), 0);
  for (i = 2; i <= 11; i++) {
    snprintf(text, sizeof text, "turn %d", i);
    assert_int_equal(t_append1(c, "s", i % 2 ? "assistant" : "user", text, NULL, &r), 0);
  }
  /* No summary yet: a window without a summariser shows none and starts nothing. */
  assert_int_equal(t_window_summ(c, "s", 4, ENGRAM_RENDER_NONE, NULL, &r), 0);
  assert_null(cJSON_GetObjectItemCaseSensitive(r.info, "summary"));
  /* With one: the window answers first (system + 9, 10, 11), then the summariser gets 2..8. */
  sm.win = &r;
  assert_int_equal(t_window_summ(c, "s", 4, ENGRAM_RENDER_NONE, &sm, &r), 0);
  assert_int_equal((int)r.n_items, 4);
  assert_int_equal((int)info_num(&r, "omitted"), 7);
  wait_summ(c, &sm, 1);
  assert_true(sm.after_window); /* the window did not wait for its summariser */
  assert_string_equal(sm.thread, "s");
  assert_false(sm.had_previous);
  expect_seqs(&sm, 2, 8);
  /* While it is pending, another window starts no second request. */
  assert_int_equal(t_window_summ(c, "s", 4, ENGRAM_RENDER_NONE, &sm, &r), 0);
  run_for(c, 30);
  assert_int_equal(sm.calls, 1);
  assert_null(cJSON_GetObjectItemCaseSensitive(r.info, "summary"));
  /* The answer, late: stored, reported once. */
  assert_int_equal(engram_summary_complete(sm.req, 0, "S1: turns 2 to 8", capture_cb, &done), 0);
  assert_int_equal(done.calls, 0);
  wait_for(c, &done.calls, 1, 60000);
  assert_int_equal(done.status, 0);
  assert_int_equal((int)done.op, ENGRAM_OP_THREAD_SUMMARY);
  assert_string_equal(str_of(done.info, "summary"), "S1: turns 2 to 8");
  assert_int_equal((int)cJSON_GetObjectItemCaseSensitive(done.info, "first_seq")->valuedouble, 2);
  assert_int_equal((int)cJSON_GetObjectItemCaseSensitive(done.info, "last_seq")->valuedouble, 8);
  result_reset(&done);
  assert_int_equal(summary_items(c), 1);
  /* Later windows are headed by it: info.summary, and one system message after the leading system messages. */
  assert_int_equal(t_window_summ(c, "s", 4, ENGRAM_RENDER_OPENAI, NULL, &r), 0);
  sum = cJSON_GetObjectItemCaseSensitive(r.info, "summary");
  assert_non_null(sum);
  assert_string_equal(str_of(sum, "text"), "S1: turns 2 to 8");
  assert_int_equal((int)cJSON_GetObjectItemCaseSensitive(sum, "first_seq")->valuedouble, 2);
  assert_int_equal((int)cJSON_GetObjectItemCaseSensitive(sum, "last_seq")->valuedouble, 8);
  assert_int_equal((int)r.n_items, 4); /* items and info.messages: stored messages only */
  assert_int_equal(cJSON_GetArraySize(info_msgs(&r)), 4);
  want = J("[{\"role\":\"system\",\"content\":\"Be brief.\"},"
           "{\"role\":\"system\",\"content\":\"Summary of the earlier conversation: S1: turns 2 to 8\"},"
           "{\"role\":\"assistant\",\"content\":\"turn 9\"},{\"role\":\"user\",\"content\":\"turn 10\"},"
           "{\"role\":\"assistant\",\"content\":\"turn 11\"}]");
  {
    cJSON *got = J(r.text);
    if (!cJSON_Compare(got, want, 1)) fail_msg("rendering: %s", r.text);
    cJSON_Delete(got);
  }
  cJSON_Delete(want);
  assert_int_equal(t_window_summ(c, "s", 4, ENGRAM_RENDER_ANTHROPIC, NULL, &r), 0);
  {
    cJSON *got = J(r.text);
    assert_string_equal(str_of(got, "system"), "Be brief.\n\nSummary of the earlier conversation: S1: turns 2 to 8");
    cJSON_Delete(got);
  }
  /* A window that holds every message has nothing older: no summary heads it. */
  assert_int_equal(t_window_summ(c, "s", 50, ENGRAM_RENDER_NONE, NULL, &r), 0);
  assert_null(cJSON_GetObjectItemCaseSensitive(r.info, "summary"));
  assert_int_equal((int)r.n_items, 11);
  /* It rolls forward: three more turns, the summariser gets the previous text and only 9..11; answered inside. */
  for (i = 12; i <= 14; i++) assert_int_equal(t_append1(c, "s", "user", "more", NULL, &r), 0);
  sm.mode = 1;
  assert_int_equal(t_window_summ(c, "s", 4, ENGRAM_RENDER_NONE, &sm, &r), 0);
  assert_string_equal(str_of(cJSON_GetObjectItemCaseSensitive(r.info, "summary"), "text"), "S1: turns 2 to 8");
  wait_summ(c, &sm, 2);
  assert_true(sm.had_previous);
  assert_string_equal(sm.previous, "S1: turns 2 to 8");
  expect_seqs(&sm, 9, 11);
  wait_for(c, &sm.done.calls, 1, 60000);
  assert_int_equal(sm.done.status, 0);
  result_reset(&sm.done);
  assert_int_equal(t_window_summ(c, "s", 4, ENGRAM_RENDER_NONE, &sm, &r), 0);
  sum = cJSON_GetObjectItemCaseSensitive(r.info, "summary");
  assert_string_equal(str_of(sum, "text"), "inline summary");
  assert_int_equal((int)cJSON_GetObjectItemCaseSensitive(sum, "first_seq")->valuedouble, 2);
  assert_int_equal((int)cJSON_GetObjectItemCaseSensitive(sum, "last_seq")->valuedouble, 11);
  run_for(c, 20);
  assert_int_equal(sm.calls, 2); /* everything older is covered: no new request */
  /* The summary's tokens are claimed with the system messages in a token window. */
  {
    engram_window_t w = ENGRAM_WINDOW_INIT;
    double with_sum;
    w.flags = ENGRAM_WINDOW_BY_TOKENS;
    w.max_tokens = 1000;
    assert_int_equal(t_window(c, "s", &w, &r), 0);
    assert_null(cJSON_GetObjectItemCaseSensitive(r.info, "summary")); /* all 14 fit: nothing older */
    w.flags = ENGRAM_WINDOW_BY_COUNT | ENGRAM_WINDOW_BY_TOKENS;
    w.max_messages = 4;
    assert_int_equal(t_window(c, "s", &w, &r), 0);
    with_sum = info_num(&r, "tokens");
    assert_non_null(cJSON_GetObjectItemCaseSensitive(r.info, "summary"));
    /* system "Be brief." (3) + "Summary of the earlier conversation: inline summary" (13) + 3 × "more" (1) */
    assert_int_equal((int)with_sum, 3 + 13 + 3);
    w.max_tokens = 3 + 13 + 2; /* one message less fits */
    assert_int_equal(t_window(c, "s", &w, &r), 0);
    assert_int_equal((int)r.n_items, 3);
  }
  /* Nothing was deleted: every message is still there, in order. */
  all = read_all(c, "s");
  assert_int_equal(cJSON_GetArraySize(all), 14);
  for (i = 0; i < 14; i++) assert_int_equal((int)seq_of(cJSON_GetArrayItem(all, i)), i + 1);
  cJSON_Delete(all);
  /* Deleting the thread deletes its summary item. */
  result_reset(&r);
  assert_int_equal(finish_call(c, engram_thread_delete(c->mgr, "s", NULL, capture_cb, &r), &r), 0);
  assert_int_equal((int)r.count, 14); /* messages; the summary item went with them but is not counted */
  assert_int_equal(summary_items(c), 0);
  result_reset(&r);
}

static void failing_summarizer_changes_nothing(void **state) {
  ctx_t *c = *state;
  result_t r = {0}, done = {0};
  summ_t sm;
  cJSON *before, *after;
  int i;
  memset(&sm, 0, sizeof sm);
  sm.win = &r;
  for (i = 1; i <= 6; i++) assert_int_equal(t_append1(c, "f", "user", "hello", NULL, &r), 0);
  before = read_all(c, "f");
  /* Fails inside the call: reported once with its own status; nothing stored. */
  sm.mode = 2;
  assert_int_equal(t_window_summ(c, "f", 2, ENGRAM_RENDER_NONE, &sm, &r), 0);
  wait_summ(c, &sm, 1);
  expect_seqs(&sm, 1, 4);
  assert_true(sm.after_window);
  wait_for(c, &sm.done.calls, 1, 60000);
  assert_int_equal(sm.done.status, -42);
  assert_int_equal((int)sm.done.op, ENGRAM_OP_THREAD_SUMMARY);
  result_reset(&sm.done);
  assert_int_equal(summary_items(c), 0);
  /* The next window asks again; this time a bad summary is refused at once (request consumed), no callback. */
  sm.mode = 0;
  assert_int_equal(t_window_summ(c, "f", 2, ENGRAM_RENDER_NONE, &sm, &r), 0);
  wait_summ(c, &sm, 2);
  assert_int_equal(engram_summary_complete(sm.req, 0, "", capture_cb, &done), ENGRAM_EINVAL);
  assert_non_null(strstr(engram_last_error(), "summary: empty"));
  assert_int_equal(t_window_summ(c, "f", 2, ENGRAM_RENDER_NONE, &sm, &r), 0);
  wait_summ(c, &sm, 3);
  assert_int_equal(engram_summary_complete(sm.req, 0, "bad \xff", capture_cb, &done), ENGRAM_EINVAL);
  assert_non_null(strstr(engram_last_error(), "summary: invalid UTF-8"));
  assert_int_equal(t_window_summ(c, "f", 2, ENGRAM_RENDER_NONE, &sm, &r), 0);
  wait_summ(c, &sm, 4);
  assert_int_equal(engram_summary_complete(sm.req, 0, NULL, NULL, NULL), ENGRAM_EINVAL);
  /* Failing without a callback: consumed quietly. */
  assert_int_equal(t_window_summ(c, "f", 2, ENGRAM_RENDER_NONE, &sm, &r), 0);
  wait_summ(c, &sm, 5);
  assert_int_equal(engram_summary_complete(sm.req, 7, NULL, NULL, NULL), 0);
  run_for(c, 20);
  assert_int_equal(done.calls, 0);
  assert_int_equal(engram_summary_complete(NULL, 0, "x", capture_cb, &done), ENGRAM_EINVAL);
  /* The thread is exactly as it was, and its window still answers. */
  assert_int_equal(summary_items(c), 0);
  after = read_all(c, "f");
  assert_true(cJSON_Compare(before, after, 1));
  assert_int_equal(t_window_summ(c, "f", 2, ENGRAM_RENDER_OPENAI, NULL, &r), 0);
  assert_int_equal((int)r.n_items, 2);
  assert_null(cJSON_GetObjectItemCaseSensitive(r.info, "summary"));
  cJSON_Delete(before);
  cJSON_Delete(after);
  result_reset(&r);
}

/* With a completion queue, the summariser runs on the thread that polls it (after the window's callback), and so
 * does engram_summary_complete's callback; a thread with a TTL gets a summary item that expires. */
static void summary_on_a_queue_and_with_a_ttl(void **state) {
  ctx_t *c = *state;
  result_t r = {0}, done = {0};
  summ_t sm;
  engram_thread_settings_t ttl = {ENGRAM_THREAD_TTL, 0, 60000};
  engram_window_t w = ENGRAM_WINDOW_INIT;
  engram_opts_t o = {0};
  engram_cq_t *cq;
  int i, waited;
  memset(&sm, 0, sizeof sm);
  for (i = 1; i <= 5; i++) assert_int_equal(t_append1(c, "q", "user", "words", i == 1 ? &ttl : NULL, &r), 0);
  assert_int_equal(engram_cq_new(&cq, NULL), 0);
  o.cq = cq;
  w.max_messages = 2;
  w.summarize = summarizer;
  w.summarize_ud = &sm;
  sm.win = &r;
  result_reset(&r);
  assert_int_equal(engram_thread_window(c->mgr, "q", &w, &o, capture_cb, &r), 0);
  /* Nothing runs until the queue is polled: the loop alone delivers neither the window nor the summariser. */
  for (waited = 0; r.calls == 0 && waited < 60000; waited += 2) {
    run_for(c, 2);
    assert_int_equal(sm.calls, 0);
    if (engram_cq_pending(cq) > 0) engram_cq_poll(cq, 0);
  }
  assert_int_equal(r.calls, 1);
  assert_int_equal(r.status, 0);
  for (waited = 0; sm.calls == 0 && waited < 60000; waited += 2) {
    run_for(c, 2);
    engram_cq_poll(cq, 0);
  }
  assert_int_equal(sm.calls, 1);
  assert_true(sm.after_window);
  expect_seqs(&sm, 1, 3);
  assert_int_equal(engram_summary_complete(sm.req, 0, "queued summary", capture_cb, &done), 0);
  for (waited = 0; done.calls == 0 && waited < 60000; waited += 2) {
    run_for(c, 2);
    if (done.calls == 0) engram_cq_poll(cq, 0);
  }
  assert_int_equal(done.calls, 1);
  assert_int_equal(done.status, 0);
  result_reset(&done);
  run_for(c, 5);
  assert_int_equal(engram_cq_pending(cq), 0);
  engram_cq_free(cq);
  /* The summary item carries an expiry: 2 × the thread's TTL after it was written. */
  {
    result_t l = {0};
    engram_opts_t mo = {0};
    char key[256];
    int64_t before = engram_now_ms();
    assert_int_equal(s_list(c, "thread-msg:q:*:summary", 10, NULL, NULL, &l), 0);
    assert_int_equal((int)l.n_items, 1);
    snprintf(key, sizeof key, "%s", result_key(&l, 0));
    result_reset(&l);
    mo.flags = ENGRAM_OPT_INCLUDE_METADATA;
    assert_int_equal(s_retrieve(c, key, &mo, &l), 0);
    assert_true(result_item(&l, 0, "expires_at_ms")->valuedouble > (double)before + 60000);
    assert_true(result_item(&l, 0, "expires_at_ms")->valuedouble <= (double)engram_now_ms() + 120000);
    result_reset(&l);
  }
  assert_int_equal(t_window_summ(c, "q", 2, ENGRAM_RENDER_NONE, NULL, &r), 0);
  assert_string_equal(str_of(cJSON_GetObjectItemCaseSensitive(r.info, "summary"), "text"), "queued summary");
  result_reset(&r);
}

/* ---- summaries under allocation failures: every call ends once (or with ENGRAM_ENOMEM), nothing leaks ---- */

typedef struct {
  int calls, status;
} count_t;

static void count_cb(int status, const engram_reply_t *reply, void *ud) {
  count_t *k = ud;
  (void)reply;
  if (++k->calls > 1) harness_stray("summary alloc");
  k->status = status;
}

static count_t alloc_done;

/* Answers inside the call; a refusal (ENGRAM_ENOMEM) consumes the request all the same. */
static void alloc_summarizer(engram_summary_request_t *req, const char *thread, const char *previous,
                             const cJSON *messages, void *ud) {
  (void)thread;
  (void)messages;
  (void)ud;
  (void)engram_summary_complete(req, 0, previous ? "rolled summary" : "first summary", count_cb, &alloc_done);
}

/* Runs the loop until *calls is want, at most `rounds` passes (a dropped job never calls back); nap: sleep 1 ms
 * between passes (the cache answers on the loop itself, so a short wait needs no nap). */
static void spin(uv_loop_t *loop, const int *calls, int want, int rounds, int nap) {
  while (*calls < want && rounds-- > 0) {
    uv_run(loop, UV_RUN_NOWAIT);
    if (*calls < want && nap) sleep_ms(1);
  }
}

static void summary_alloc_scenario(void *unused) {
  uv_loop_t loop;
  engram_manager_t *mgr;
  count_t k = {0, 0};
  engram_message_t m[6];
  engram_window_t w = ENGRAM_WINDOW_INIT;
  int rc, i, round;
  (void)unused;
  memset(&alloc_done, 0, sizeof alloc_done);
  assert_int_equal(uv_loop_init(&loop), 0);
  while ((rc = engram_manager_new(&mgr, &loop, NULL)) == ENGRAM_ENOMEM) {
  }
  assert_int_equal(rc, 0);
  if (engram_manager_add_source(mgr, "cache", &engram_source_cache, NULL, "d", 1, count_cb, &k) == 0)
    spin(&loop, &k.calls, 1, 10000, 1);
  for (i = 0; i < 6; i++) m[i] = M(i % 2 ? "assistant" : "user", "some words to summarise.");
  k.calls = 0;
  if (engram_thread_append(mgr, "a", m, 6, NULL, NULL, count_cb, &k) == 0) spin(&loop, &k.calls, 1, 10000, 1);
  w.max_messages = 2;
  w.format = ENGRAM_RENDER_OPENAI;
  w.summarize = alloc_summarizer;
  for (round = 0; round < 2; round++) { /* the second window is headed by the first one's summary */
    k.calls = 0;
    alloc_done.calls = 0;
    if (engram_thread_append(mgr, "a", m, 2, NULL, NULL, count_cb, &k) == 0) spin(&loop, &k.calls, 1, 10000, 1);
    k.calls = 0;
    if (engram_thread_window(mgr, "a", &w, NULL, count_cb, &k) == 0) {
      spin(&loop, &k.calls, 1, 10000, 1);
      assert_int_equal(k.calls, 1);
      spin(&loop, &alloc_done.calls, 1, 50, 0); /* the summary, when the job got that far */
    }
  }
  k.calls = 0;
  while ((rc = engram_manager_close(mgr, count_cb, &k)) == ENGRAM_ENOMEM) {
  }
  assert_int_equal(rc, 0);
  spin(&loop, &k.calls, 1, 10000, 1);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&loop), 0);
  assert_true(alloc_done.calls <= 1);
}

static void summary_allocation_failures(void **state) {
  long points;
  (void)state;
  summary_alloc_scenario(NULL); /* once without failures: the summary is written and read back */
  assert_int_equal(alloc_done.calls, 1);
  assert_int_equal(alloc_done.status, 0);
  points = failing_alloc_loop(summary_alloc_scenario, NULL);
  printf("  summaries: every one of %ld allocations failed once\n", points);
  assert_true(getenv("ENGRAM_ALLOC_ONLY") || points > 100);
}

/* ---- Message search ---- */

static int t_search(ctx_t *c, const char *id, const char *query, int limit, result_t *r) {
  result_reset(r);
  return finish_call(c, engram_thread_search(c->mgr, id, query, limit, NULL, capture_cb, r), r);
}

/* The sequence numbers of the results that belong to thread id, in result order, as "1,3"; fails when a result is
 * of another thread (with only_id) or its value and key disagree. */
static void result_seqs(const result_t *r, const char *only_id, char *out, size_t size) {
  size_t i, used = 0;
  out[0] = '\0';
  for (i = 0; i < r->n_items; i++) {
    const cJSON *v = result_item(r, i, "value");
    const char *key = result_key(r, i);
    char prefix[64];
    assert_non_null(v);
    assert_non_null(key);
    if (only_id) {
      snprintf(prefix, sizeof prefix, "thread-msg:%s:", only_id);
      if (strncmp(key, prefix, strlen(prefix)) != 0) fail_msg("result %zu: %s is not a message of %s", i, key, only_id);
    }
    if (strtoull(strrchr(key, ':') + 1, NULL, 10) != seq_of(v)) fail_msg("result %zu: key %s, seq %llu", i, key,
                                                                        (unsigned long long)seq_of(v));
    used += (size_t)snprintf(out + used, size - used, "%s%llu", i ? "," : "", (unsigned long long)seq_of(v));
  }
}

/* The thread of result i ("sa" from "thread-msg:sa:<gen>:<seq>"). */
static void result_thread(const result_t *r, size_t i, char *out, size_t size) {
  const char *key = result_key(r, i) + strlen("thread-msg:");
  snprintf(out, size, "%.*s", (int)(strchr(key, ':') - key), key);
}

static void search_finds_visible_messages_only(void **state) {
  ctx_t *c = *state;
  result_t r = {0};
  engram_message_t a[4] = {M("user", "the zebra crossing"), M("assistant", "apples and pears"),
                           M("user", "zebra stripes are black and white"), M("assistant", "nothing to see")};
  engram_message_t b[2] = {M("user", "a zebra in the zoo"), M("assistant", "other things")};
  engram_thread_settings_t one = {ENGRAM_THREAD_MAX_MESSAGES, 1, 0};
  uint64_t del3 = 3;
  char seqs[256], th[64];
  size_t i;
  int found_sa1 = 0, found_sa3 = 0, found_sb1 = 0;
  assert_int_equal(t_append(c, "sa", a, 4, NULL, &r), 0);
  assert_int_equal(t_append(c, "sb", b, 2, NULL, &r), 0);
  /* One thread: its two zebra messages come first (BM25 returns only them; a vector source ranks the rest lower),
   * and nothing of the other thread. */
  assert_int_equal(t_search(c, "sa", "zebra", 10, &r), 0);
  assert_true(r.n_items >= 2 && r.n_items <= 4);
  assert_int_equal((int)r.count, (int)r.n_items);
  result_seqs(&r, "sa", seqs, sizeof seqs);
  if (strcmp(seqs, "1,3") != 0 && strcmp(seqs, "3,1") != 0 && strncmp(seqs, "1,3,", 4) != 0 && strncmp(seqs, "3,1,", 4) != 0)
    fail_msg("thread sa, \"zebra\": seqs %s, expected 1 and 3 first", seqs);
  assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(r.info, "thread")), "sa");
  assert_int_equal(cJSON_GetArraySize(info_msgs(&r)), (int)r.n_items);
  {
    double sc = cJSON_GetNumberValue(result_item(&r, 0, "score"));
    if (!(sc > 0 && sc <= 1)) fail_msg("best score %g, expected in (0, 1]", sc);
  }
  /* limit 1: the best only */
  assert_int_equal(t_search(c, "sa", "zebra", 1, &r), 0);
  assert_int_equal((int)r.n_items, 1);
  /* Every thread of the namespace: the three zebra messages first. */
  assert_int_equal(t_search(c, NULL, "zebra", 3, &r), 0);
  assert_int_equal((int)r.n_items, 3);
  assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(r.info, "thread")));
  for (i = 0; i < r.n_items; i++) {
    uint64_t q = seq_of(result_item(&r, i, "value"));
    result_thread(&r, i, th, sizeof th);
    if (strcmp(th, "sa") == 0 && q == 1) found_sa1 = 1;
    else if (strcmp(th, "sa") == 0 && q == 3) found_sa3 = 1;
    else if (strcmp(th, "sb") == 0 && q == 1) found_sb1 = 1;
    else fail_msg("namespace search, \"zebra\": result %zu is %s:%llu", i, th, (unsigned long long)q);
  }
  assert_true(found_sa1 && found_sa3 && found_sb1);
  /* An item left by an earlier life of the thread (another generation), laid out like a message and ranking
   * best, is not a visible message: never returned. */
  {
    engram_opts_t so = {0};
    cJSON *meta = J("{\"thread\": \"sa\", \"seq\": 2, \"role\": \"user\"}");
    so.metadata = meta;
    assert_int_equal(s_store(c, "thread-msg:sa:0000deadbeef0000:0000000000000002",
                             "{\"seq\": 2, \"role\": \"user\", \"content\": \"zebra zebra zebra\"}", &so, &r), 0);
    cJSON_Delete(meta);
    assert_int_equal(t_search(c, "sa", "zebra", 10, &r), 0);
    for (i = 0; i < r.n_items; i++)
      if (strstr(result_key(&r, i), "deadbeef")) fail_msg("an item of another generation was returned");
    assert_true(r.n_items >= 2);
  }
  /* A deleted message and a trimmed one are gone from the results at once. */
  result_reset(&r);
  assert_int_equal(engram_thread_delete_messages(c->mgr, "sa", &del3, 1, NULL, capture_cb, &r), 0);
  wait_for(c, &r.calls, 1, 30000);
  assert_int_equal(r.status, 0);
  result_reset(&r);
  assert_int_equal(engram_thread_set(c->mgr, "sb", NULL, &one, NULL, capture_cb, &r), 0); /* keeps sb:2 only */
  wait_for(c, &r.calls, 1, 30000);
  assert_int_equal(r.status, 0);
  assert_int_equal(t_search(c, NULL, "zebra", 10, &r), 0);
  for (i = 0; i < r.n_items; i++) {
    uint64_t q = seq_of(result_item(&r, i, "value"));
    result_thread(&r, i, th, sizeof th);
    if ((strcmp(th, "sa") == 0 && q == 3) || (strcmp(th, "sb") == 0 && q == 1))
      fail_msg("namespace search after the delete and the trim: %s:%llu is not visible", th, (unsigned long long)q);
  }
  assert_true(r.n_items >= 1);
  result_thread(&r, 0, th, sizeof th);
  assert_string_equal(th, "sa"); /* sa:1, the one zebra message left */
  assert_int_equal((int)seq_of(result_item(&r, 0, "value")), 1);
  /* A thread that does not exist has no messages. */
  assert_int_equal(t_search(c, "nope", "zebra", 10, &r), 0);
  assert_int_equal((int)r.n_items, 0);
  /* Bad input, refused at once. */
  result_reset(&r);
  expect_refused(engram_thread_search(c->mgr, "sa", NULL, 10, NULL, capture_cb, &r), "query");
  expect_refused(engram_thread_search(c->mgr, "sa", " \t", 10, NULL, capture_cb, &r), "query");
  expect_refused(engram_thread_search(c->mgr, "sa", "\xff", 10, NULL, capture_cb, &r), "query");
  expect_refused(engram_thread_search(c->mgr, "sa", "zebra", 0, NULL, capture_cb, &r), "limit");
  expect_refused(engram_thread_search(c->mgr, "sa", "zebra", ENGRAM_THREAD_PAGE_MAX + 1, NULL, capture_cb, &r), "limit");
  expect_refused(engram_thread_search(c->mgr, "a b", "zebra", 10, NULL, capture_cb, &r), "thread");
  run_barrier(c);
  assert_int_equal(r.calls, 0); /* the refused calls never called back */
  result_reset(&r);
}

#define CASE(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

/* engram_thread_search_query: the ranking mode reaches the source (vector and hybrid on a source that ranks by
 * vector, refused with ENGRAM_ENOTSUP elsewhere: at the call when the vtable lacks ENGRAM_SOURCE_SEARCH_MODES, in
 * the callback when it passes the query on to one that does not rank by vector — a tiered source), only
 * visible messages come back in every mode, and the fields the layer sets itself are refused. */
static void search_modes_and_query_fields(void **state) {
  ctx_t *c = *state;
  result_t r = {0};
  engram_thread_settings_t s = {ENGRAM_THREAD_MAX_MESSAGES, 3, 0};
  engram_query_t q = ENGRAM_QUERY_INIT;
  int modes = (c->src->vt->flags & ENGRAM_SOURCE_SEARCH_MODES) != 0, m, rc;
  static const char *texts[] = {"deployment window moved to friday", "lunch at noon", "deployment checklist ready",
                                "coffee machine broken", "the deployment went fine"};
  size_t i;
  for (i = 0; i < 5; i++) assert_int_equal(t_append1(c, "moded", "user", texts[i], &s, &r), 0);
  /* visible: 3..5 ("deployment checklist ready", "coffee machine broken", "the deployment went fine") */
  q.text = "deployment";
  q.limit = 5;
  for (m = ENGRAM_MODE_TEXT; m <= ENGRAM_MODE_HYBRID; m++) {
    q.mode = m;
    result_reset(&r);
    rc = engram_thread_search_query(c->mgr, "moded", &q, NULL, capture_cb, &r);
    if (m != ENGRAM_MODE_TEXT && !modes) {
      assert_int_equal(rc, ENGRAM_ENOTSUP);
      continue;
    }
    rc = finish_call(c, rc, &r);
    if (m != ENGRAM_MODE_TEXT && strncmp(c->src->type, "vector", 6) != 0) {
      /* a source that passes modes on (tiered) to one that does not rank by vector: refused in the callback */
      assert_int_equal(rc, ENGRAM_ENOTSUP);
      continue;
    }
    assert_int_equal(rc, 0);
    assert_true(r.n_items >= 1);
    for (i = 0; i < r.n_items; i++) {
      uint64_t seq = seq_of(result_item(&r, i, "value"));
      assert_true(seq >= 3 && seq <= 5); /* never the trimmed message 1 */
    }
    if (m == ENGRAM_MODE_TEXT) {
      assert_int_equal((int)r.n_items, 2); /* BM25: only messages holding the word */
      assert_true(seq_of(result_item(&r, 0, "value")) == 3 || seq_of(result_item(&r, 0, "value")) == 5);
    }
  }
  result_reset(&r);
  q.mode = ENGRAM_MODE_TEXT;
  q.pattern = "*";
  expect_refused(engram_thread_search_query(c->mgr, "moded", &q, NULL, capture_cb, &r), "query.pattern");
  q.pattern = NULL;
  q.offset = 2;
  expect_refused(engram_thread_search_query(c->mgr, "moded", &q, NULL, capture_cb, &r), "query.offset");
  q.offset = 0;
  q.limit = 0;
  expect_refused(engram_thread_search_query(c->mgr, "moded", &q, NULL, capture_cb, &r), "query.limit");
  q.limit = 5;
  q.text = "  ";
  expect_refused(engram_thread_search_query(c->mgr, "moded", &q, NULL, capture_cb, &r), "query.text");
  q.text = "deployment";
  q.mode = 9;
  expect_refused(engram_thread_search_query(c->mgr, "moded", &q, NULL, capture_cb, &r), "query.mode");
  expect_refused(engram_thread_search_query(c->mgr, "moded", NULL, NULL, capture_cb, &r), "query");
  run_barrier(c);
  assert_int_equal(r.calls, 0); /* refused calls never call back */
}

/* The source's completed-call count (engram_info "ops"): how many calls a thread call made. */
static double source_ops(ctx_t *c) {
  result_t r = {0};
  double ops;
  assert_int_equal(finish_call(c, engram_info(c->mgr, NULL, capture_cb, &r), &r), 0);
  ops = info_num(&r, "ops");
  result_reset(&r);
  return ops;
}

/* Calls a window of the newest 5 made, and its messages' numbers ("3,4,5,6,7"). */
static double window_calls(ctx_t *c, const char *id, const engram_opts_t *o, char *seqs, size_t size) {
  result_t r = {0};
  engram_window_t w = ENGRAM_WINDOW_INIT;
  const cJSON *m;
  double before, after;
  size_t len = 0;
  w.flags = ENGRAM_WINDOW_BY_COUNT;
  w.max_messages = 5;
  before = source_ops(c);
  result_reset(&r);
  assert_int_equal(finish_call(c, engram_thread_window(c->mgr, id, &w, o, capture_cb, &r), &r), 0);
  seqs[0] = '\0';
  cJSON_ArrayForEach(m, info_msgs(&r)) len += (size_t)snprintf(seqs + len, size - len, "%s%" PRIu64, len ? "," : "", seq_of(m));
  result_reset(&r);
  after = source_ops(c);
  return after - before - 1; /* less the info call's own */
}

/* A lane's depth follows the source (thread.c lane_depth): four appends to one thread made at once go as three
 * updates (two in flight at once, the other two merged) on a source that answers at once (ENGRAM_SOURCE_ANSWERS_AT_ONCE:
 * the cache, also with only its required methods), and as two (one in flight, the other three
 * merged) on every other source, where each update costs its head's read and write (or a server's statement or
 * script) beside the messages. Counted by the source's calls, against those of one lone append. */
static void lane_depth_follows_the_source(void **state) {
  ctx_t *c = *state;
  result_t r = {0};
  burst_t b;
  burst_ref_t refs[BURST];
  const int sizes[4] = {1, 1, 1, 1};
  double one, four;
  int at_once = (cur_source->vt->flags & ENGRAM_SOURCE_ANSWERS_AT_ONCE) != 0, i; /* the cache, with or without its
                                                                                   optional methods */
  assert_int_equal(t_append1(c, "depth", "user", "first", NULL, &r), 0); /* the thread exists: no creation below */
  result_reset(&r);
  one = source_ops(c);
  assert_int_equal(t_append1(c, "depth", "user", "lone", NULL, &r), 0);
  result_reset(&r);
  one = source_ops(c) - one - 1; /* less the info call's own */
  assert_true(one >= 1);
  four = source_ops(c);
  burst(c, "depth", "d", 4, sizes, NULL, NULL, &b, refs);
  four = source_ops(c) - four - 1;
  for (i = 0; i < 4; i++) {
    check_own_reply(&b.r[i], "d", i, 1);
    result_reset(&b.r[i]);
  }
  if (at_once) assert_true(four >= 3 * one); /* an emulated update may read again on a conflict: more, never fewer */
  else assert_true(four == 2 * one);
}

/* A window reads the head and the messages in one call when this process's hint of the head is right
 * (src/thread/thread_hint.h), and in two — with the same answer — when someone else changed the thread since. The
 * "someone else" is the same manager called with the source's name instead of NULL: a different hint key. */
static void window_hint_one_call_or_two(void **state) {
  ctx_t *c = *state;
  result_t r = {0};
  engram_opts_t named = {0};
  engram_thread_settings_t s = {ENGRAM_THREAD_MAX_MESSAGES, 6, 0};
  char seqs[128], text[32];
  int i;
  named.source = "mem";
  for (i = 1; i <= 7; i++) {
    snprintf(text, sizeof text, "m%d", i);
    assert_int_equal(t_append1(c, "hinted", "user", text, &s, &r), 0);
  }
  /* the appends left the hint: one call */
  assert_int_equal((int)window_calls(c, "hinted", NULL, seqs, sizeof seqs), 1);
  assert_string_equal(seqs, "3,4,5,6,7");
  /* an append under the other key: the first key's hint is stale (first, last moved) — two calls, the new answer */
  result_reset(&r);
  {
    engram_message_t m = M("user", "m8");
    assert_int_equal(finish_call(c, engram_thread_append(c->mgr, "hinted", &m, 1, &s, &named, capture_cb, &r), &r), 0);
  }
  assert_int_equal((int)window_calls(c, "hinted", NULL, seqs, sizeof seqs), 2);
  assert_string_equal(seqs, "4,5,6,7,8");
  /* that window's head read renewed the hint */
  assert_int_equal((int)window_calls(c, "hinted", NULL, seqs, sizeof seqs), 1);
  assert_string_equal(seqs, "4,5,6,7,8");
  /* a deleted message (a hole) and a new generation under the other key: each found stale, answers right */
  result_reset(&r);
  {
    uint64_t del = 6;
    assert_int_equal(finish_call(c, engram_thread_delete_messages(c->mgr, "hinted", &del, 1, &named, capture_cb, &r), &r), 0);
  }
  assert_int_equal((int)window_calls(c, "hinted", NULL, seqs, sizeof seqs), 2);
  assert_string_equal(seqs, "3,4,5,7,8");
  result_reset(&r);
  assert_int_equal(finish_call(c, engram_thread_delete(c->mgr, "hinted", &named, capture_cb, &r), &r), 0);
  {
    engram_message_t m = M("user", "again");
    result_reset(&r);
    assert_int_equal(finish_call(c, engram_thread_append(c->mgr, "hinted", &m, 1, NULL, &named, capture_cb, &r), &r), 0);
  }
  assert_int_equal((int)window_calls(c, "hinted", NULL, seqs, sizeof seqs), 2);
  assert_string_equal(seqs, "1");
  /* a thread deleted behind the hint: one call, and it says so */
  result_reset(&r);
  assert_int_equal(finish_call(c, engram_thread_delete(c->mgr, "hinted", &named, capture_cb, &r), &r), 0);
  {
    engram_window_t w = ENGRAM_WINDOW_INIT;
    w.flags = ENGRAM_WINDOW_BY_COUNT;
    w.max_messages = 5;
    result_reset(&r);
    assert_int_equal(finish_call(c, engram_thread_window(c->mgr, "hinted", &w, NULL, capture_cb, &r), &r), ENGRAM_ENOTFOUND);
    assert_non_null(strstr(r.message, "no thread \"hinted\""));
  }
  result_reset(&r);
}

/* A hinted window of N reads exactly the newest N visible numbers with the head (no spare keys): when one of them
 * is a gap — its item missing while the head still counts it (here: removed behind the thread's back, as a process
 * dying between a head update and its message write would leave it) — the window reads one more page and still
 * answers the newest N messages it can find. */
static void window_gap_costs_one_page(void **state) {
  ctx_t off, *c = &off;
  engram_manager_config_t cfg;
  result_t r = {0};
  char seqs[128], text[32], key[256] = "";
  const cJSON *it;
  int i;
  (void)state;
  /* without the message cache: a process that appended (or read) message 7 would keep showing it, as the head
   * still names it (docs/conversations.md, "The message cache") */
  memset(&cfg, 0, sizeof cfg);
  cfg.message_cache_bytes = -1;
  ctx_init(&off, &cfg);
  ctx_add(&off, cur_source);
  for (i = 1; i <= 8; i++) {
    snprintf(text, sizeof text, "m%d", i);
    assert_int_equal(t_append1(c, "gapped", "user", text, NULL, &r), 0);
  }
  /* the key of message 7, from its reply's item */
  {
    result_reset(&r);
    assert_int_equal(finish_call(c, engram_thread_get_message(c->mgr, "gapped", 7, NULL, capture_cb, &r), &r), 0);
    cJSON_ArrayForEach(it, r.items) {
      const char *k = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(it, "key"));
      if (k != NULL && strlen(k) > 2 && strcmp(k + strlen(k) - 2, "07") == 0) snprintf(key, sizeof key, "%s", k);
    }
    assert_true(key[0] != '\0');
  }
  result_reset(&r);
  assert_int_equal(finish_call(c, engram_delete(c->mgr, key, NULL, capture_cb, &r), &r), 0);
  result_reset(&r);
  /* the first page (8, 7, 6, 5, 4) finds 4 messages; the second reads 3 */
  assert_int_equal((int)window_calls(c, "gapped", NULL, seqs, sizeof seqs), 2);
  assert_string_equal(seqs, "3,4,5,6,8");
  result_reset(&r);
  ctx_close(&off);
}


/* The contents of a window of the newest n of id, comma-separated ("m1,m2"), and the source calls it made. */
static double window_texts(ctx_t *c, const char *id, int n, char *out, size_t size) {
  result_t r = {0};
  engram_window_t w = ENGRAM_WINDOW_INIT;
  const cJSON *m;
  double before;
  size_t len = 0;
  w.flags = ENGRAM_WINDOW_BY_COUNT;
  w.max_messages = n;
  before = source_ops(c);
  assert_int_equal(t_window(c, id, &w, &r), 0);
  out[0] = '\0';
  cJSON_ArrayForEach(m, info_msgs(&r)) {
    len += (size_t)snprintf(out + len, size - len, "%s%s", len ? "," : "", str_of(m, "content"));
    assert_true(len < size);
  }
  result_reset(&r);
  return source_ops(c) - before - 1; /* less the info call's own */
}

/* Writes message seq of id again behind the thread's back (a plain store of its item: outside the contract, which
 * writes a message once) with content text. */
static void overwrite_message(ctx_t *c, const char *id, uint64_t seq, const char *text) {
  result_t r = {0};
  char key[256] = "";
  const cJSON *it;
  cJSON *v;
  assert_int_equal(finish_call(c, engram_thread_get_message(c->mgr, id, seq, NULL, capture_cb, &r), &r), 0);
  cJSON_ArrayForEach(it, r.items) snprintf(key, sizeof key, "%s", cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(it, "key")));
  assert_true(key[0] != '\0');
  v = cJSON_Duplicate(result_item(&r, 0, "value"), 1);
  cJSON_ReplaceItemInObjectCaseSensitive(v, "content", cJSON_CreateString(text));
  result_reset(&r);
  assert_int_equal(finish_call(c, engram_store(c->mgr, key, v, NULL, capture_cb, &r), &r), 0);
  result_reset(&r);
  cJSON_Delete(v);
}

/* The message cache (src/thread/thread_msgcache.h): a window shows the messages this process has appended or read
 * without reading them again — a window of them reads only the head and the summary item (one call),
 * and a message's item written again behind the thread's back is not seen (the contract writes a message once).
 * What the head says still decides: a message appended by another writer (here: under the source's name, another
 * hint), a deleted message and a new generation all show at once. Not on a source that keeps its items in the
 * process anyway (ENGRAM_SOURCE_ANSWERS_AT_ONCE: the cache), which it does not cache; off with
 * message_cache_bytes < 0 (then the rewritten item shows). */
static void window_reads_each_message_once(void **state) {
  ctx_t *c = *state, off;
  engram_manager_config_t cfg;
  result_t r = {0};
  engram_opts_t named = {0};
  char texts[256];
  int i, local = (cur_source->vt->flags & ENGRAM_SOURCE_ANSWERS_AT_ONCE) != 0;
  named.source = "mem";
  for (i = 1; i <= 5; i++) {
    snprintf(texts, sizeof texts, "m%d", i);
    assert_int_equal(t_append1(c, "kept", "user", texts, NULL, &r), 0);
  }
  /* the appends kept their messages: rewritten before any window read them, they still show as appended */
  overwrite_message(c, "kept", 5, "early");
  assert_int_equal((int)window_texts(c, "kept", 5, texts, sizeof texts), 1);
  assert_string_equal(texts, local ? "m1,m2,m3,m4,early" : "m1,m2,m3,m4,m5");
  overwrite_message(c, "kept", 5, "m5");
  overwrite_message(c, "kept", 3, "rewritten");
  assert_int_equal((int)window_texts(c, "kept", 5, texts, sizeof texts), 1);
  assert_string_equal(texts, local ? "m1,m2,rewritten,m4,m5" : "m1,m2,m3,m4,m5");
  /* an append by another writer: one more message read, the rest from the cache */
  {
    engram_message_t m = M("user", "m6");
    result_reset(&r);
    assert_int_equal(finish_call(c, engram_thread_append(c->mgr, "kept", &m, 1, NULL, &named, capture_cb, &r), &r), 0);
  }
  assert_int_equal((int)window_texts(c, "kept", 5, texts, sizeof texts), 2); /* the hint is stale: head, then m6 */
  assert_string_equal(texts, local ? "m2,rewritten,m4,m5,m6" : "m2,m3,m4,m5,m6");
  /* a deleted message is gone from the window (the head says so), and a deleted thread's messages from the cache */
  {
    uint64_t del = 4;
    result_reset(&r);
    assert_int_equal(finish_call(c, engram_thread_delete_messages(c->mgr, "kept", &del, 1, &named, capture_cb, &r), &r), 0);
  }
  assert_true(window_texts(c, "kept", 5, texts, sizeof texts) <= 2);
  assert_string_equal(texts, local ? "m1,m2,rewritten,m5,m6" : "m1,m2,m3,m5,m6");
  result_reset(&r);
  assert_int_equal(finish_call(c, engram_thread_delete(c->mgr, "kept", &named, capture_cb, &r), &r), 0);
  result_reset(&r);
  assert_int_equal(t_append1(c, "kept", "user", "again", NULL, &r), 0);
  assert_int_equal((int)window_texts(c, "kept", 5, texts, sizeof texts), 1);
  assert_string_equal(texts, "again");
  result_reset(&r);
  /* off: every window reads every message */
  memset(&cfg, 0, sizeof cfg);
  cfg.message_cache_bytes = -1;
  ctx_init(&off, &cfg);
  ctx_add(&off, cur_source);
  for (i = 1; i <= 3; i++) {
    snprintf(texts, sizeof texts, "o%d", i);
    assert_int_equal(t_append1(&off, "uncached", "user", texts, NULL, &r), 0);
  }
  assert_int_equal((int)window_texts(&off, "uncached", 5, texts, sizeof texts), 1);
  assert_string_equal(texts, "o1,o2,o3");
  overwrite_message(&off, "uncached", 2, "rewritten");
  assert_int_equal((int)window_texts(&off, "uncached", 5, texts, sizeof texts), 1);
  assert_string_equal(texts, "o1,rewritten,o3");
  result_reset(&r);
  ctx_close(&off);
}

/* A message cache smaller than a window: entries are evicted while the window that just kept them still shows them
 * (each lives until that window's callback has returned), and every window answers the same messages, in order,
 * whatever was evicted. Two windows in flight at once share entries. */
static void small_message_cache_answers_the_same(void **state) {
  ctx_t *c = *state, small;
  engram_manager_config_t cfg;
  result_t r = {0}, a = {0}, b = {0};
  engram_window_t w = ENGRAM_WINDOW_INIT;
  char texts[4096], want[4096];
  size_t len = 0;
  int i, round;
  (void)c;
  memset(&cfg, 0, sizeof cfg);
  cfg.message_cache_bytes = 3000; /* a few messages */
  ctx_init(&small, &cfg);
  ctx_add(&small, cur_source);
  want[0] = '\0';
  for (i = 1; i <= 40; i++) {
    snprintf(texts, sizeof texts, "message number %d with some words to take room", i);
    assert_int_equal(t_append1(&small, "small", i % 2 ? "user" : "assistant", texts, NULL, &r), 0);
    if (i > 10) len += (size_t)snprintf(want + len, sizeof want - len, "%s%s", len ? "," : "", texts);
    assert_true(len < sizeof want);
  }
  result_reset(&r);
  for (round = 0; round < 3; round++) {
    assert_true(window_texts(&small, "small", 30, texts, sizeof texts) >= 1);
    assert_string_equal(texts, want);
  }
  w.flags = ENGRAM_WINDOW_BY_COUNT;
  w.max_messages = 30;
  assert_int_equal(engram_thread_window(small.mgr, "small", &w, NULL, capture_cb, &a), 0);
  assert_int_equal(engram_thread_window(small.mgr, "small", &w, NULL, capture_cb, &b), 0);
  wait_for(&small, &a.calls, 1, 60000);
  wait_for(&small, &b.calls, 1, 60000);
  assert_int_equal(a.status, 0);
  assert_int_equal(b.status, 0);
  assert_int_equal(cJSON_GetArraySize(info_msgs(&a)), 30);
  assert_int_equal(cJSON_GetArraySize(info_msgs(&b)), 30);
  assert_string_equal(str_of(cJSON_GetArrayItem(info_msgs(&a), 29), "content"), "message number 40 with some words to take room");
  assert_string_equal(str_of(cJSON_GetArrayItem(info_msgs(&b), 0), "content"), "message number 11 with some words to take room");
  result_reset(&a);
  result_reset(&b);
  ctx_close(&small);
}

/* A backup written back with engram_import rewinds a thread's head (the items come back at their versions), and the
 * next appends take the same numbers again with new content: a window begun after the import does not show what
 * this process had kept of the old ones (the manager's restore epoch, src/thread/thread_msgcache.h). "a" appends,
 * reads, exports and imports; "u", a manager without the cache on the same storage, appends after the import (as
 * another process would). On the entries whose storage two managers can share by the same options. */
typedef struct {
  int calls, status;
} xfer_t;

static void xfer_cb(int status, const engram_transfer_result_t *res, void *ud) {
  xfer_t *x = ud;
  (void)res;
  x->calls++;
  x->status = status;
}

static void add_shared(ctx_t *c, const char *opts) {
  result_t r = {0};
  assert_int_equal(engram_manager_add_source(c->mgr, "mem", cur_source->vt, opts, NULL, 1, capture_cb, &r), 0);
  wait_for(c, &r.calls, 1, 30000);
  if (r.status != 0) fail_msg("add_source: %s", r.message);
  result_reset(&r);
}

static void import_of_a_backup_drops_the_cached_messages(void **state) {
  ctx_t a, u;
  engram_manager_config_t off;
  engram_export_opts_t eo;
  engram_import_opts_t io;
  xfer_t x = {0, 0};
  result_t r = {0};
  char texts[256], path[] = "/tmp/engram-backup-XXXXXX", *opts;
  int fd, i;
  (void)state;
  if (strcmp(cur_source->type, "sqlite") != 0 && strcmp(cur_source->type, "redis") != 0 &&
      strcmp(cur_source->type, "postgres") != 0)
    skip();
  assert_true((fd = mkstemp(path)) >= 0);
  close(fd);
  opts = cur_source->options ? cur_source->options() : NULL;
  memset(&off, 0, sizeof off);
  off.message_cache_bytes = -1;
  ctx_init(&a, NULL);
  ctx_init(&u, &off);
  add_shared(&a, opts);
  add_shared(&u, opts);
  for (i = 1; i <= 3; i++) {
    snprintf(texts, sizeof texts, "m%d", i);
    assert_int_equal(t_append1(&a, "backed", "user", texts, NULL, &r), 0);
  }
  memset(&eo, 0, sizeof eo);
  eo.path = path;
  assert_int_equal(engram_export(a.mgr, &eo, xfer_cb, &x), 0);
  wait_for(&a, &x.calls, 1, 30000);
  assert_int_equal(x.status, 0);
  assert_int_equal(t_append1(&a, "backed", "user", "m4", NULL, &r), 0);
  assert_int_equal(t_append1(&a, "backed", "user", "m5", NULL, &r), 0);
  window_texts(&a, "backed", 10, texts, sizeof texts);
  assert_string_equal(texts, "m1,m2,m3,m4,m5");
  memset(&io, 0, sizeof io);
  io.path = path;
  x.calls = 0;
  assert_int_equal(engram_import(a.mgr, &io, xfer_cb, &x), 0); /* the head as it was at 3 messages */
  wait_for(&a, &x.calls, 1, 30000);
  assert_int_equal(x.status, 0);
  assert_int_equal(t_append1(&u, "backed", "user", "n4", NULL, &r), 0); /* numbers 4 and 5 again */
  assert_int_equal(t_append1(&u, "backed", "user", "n5", NULL, &r), 0);
  result_reset(&r);
  window_texts(&a, "backed", 10, texts, sizeof texts);
  assert_string_equal(texts, "m1,m2,m3,n4,n5");
  ctx_close(&a);
  ctx_close(&u);
  engram_free(opts);
  unlink(path);
}

/* Windows submitted from four threads at once on one manager with a small message cache (each submission looks
 * entries up and pins them on its own thread; the answers keep and evict entries on the home loop): every window is
 * the newest 20 messages, whole and in order. Run under TSan in CI (make tsan). */
#define WIN_THREADS 4
#define WIN_CALLS 40

static atomic_int win_answered, win_bad;

static void win_check_cb(int status, const engram_reply_t *reply, void *ud) {
  const cJSON *msgs = reply->info ? cJSON_GetObjectItemCaseSensitive(reply->info, "messages") : NULL, *m;
  int k = 41; /* messages 41..60 */
  (void)ud;
  if (status != 0 || cJSON_GetArraySize(msgs) != 20) atomic_fetch_add(&win_bad, 1);
  else
    cJSON_ArrayForEach(m, msgs) {
      char want[32];
      snprintf(want, sizeof want, "w%d", k++);
      if (seq_of(m) != (uint64_t)(k - 1) || strcmp(str_of(m, "content"), want) != 0) {
        atomic_fetch_add(&win_bad, 1);
        break;
      }
    }
  atomic_fetch_add(&win_answered, 1);
}

typedef struct {
  engram_manager_t *mgr;
  int refused;
} win_caller_t;

static void win_caller(void *arg) {
  win_caller_t *w = arg;
  engram_window_t win = ENGRAM_WINDOW_INIT;
  int i;
  win.flags = ENGRAM_WINDOW_BY_COUNT;
  win.max_messages = 20;
  for (i = 0; i < WIN_CALLS; i++) {
    int rc;
    while ((rc = engram_thread_window(w->mgr, "shared-win", &win, NULL, win_check_cb, NULL)) == ENGRAM_EBUSY) sleep_ms(1);
    if (rc != 0) w->refused++;
  }
}

static int win_all_answered(void *arg) { return atomic_load(&win_answered) >= *(int *)arg; }

static void windows_from_four_threads(void **state) {
  ctx_t small;
  engram_manager_config_t cfg;
  result_t r = {0};
  uv_thread_t th[WIN_THREADS];
  win_caller_t w[WIN_THREADS];
  char text[32];
  int i, want = WIN_THREADS * WIN_CALLS;
  (void)state;
  memset(&cfg, 0, sizeof cfg);
  cfg.message_cache_bytes = 4000; /* about ten messages: evictions all the time */
  ctx_init(&small, &cfg);
  ctx_add(&small, cur_source);
  for (i = 1; i <= 60; i++) {
    snprintf(text, sizeof text, "w%d", i);
    assert_int_equal(t_append1(&small, "shared-win", "user", text, NULL, &r), 0);
  }
  result_reset(&r);
  atomic_store(&win_answered, 0);
  atomic_store(&win_bad, 0);
  for (i = 0; i < WIN_THREADS; i++) {
    w[i].mgr = small.mgr;
    w[i].refused = 0;
    assert_int_equal(uv_thread_create(&th[i], win_caller, &w[i]), 0);
  }
  wait_until(&small, win_all_answered, &want, 120000, "every window answered");
  for (i = 0; i < WIN_THREADS; i++) {
    uv_thread_join(&th[i]);
    assert_int_equal(w[i].refused, 0);
  }
  assert_int_equal(atomic_load(&win_answered), want);
  assert_int_equal(atomic_load(&win_bad), 0);
  ctx_close(&small);
}

/* ---- listing by pages and the cross-thread context (engram_thread_list, engram_thread_context) ---- */

typedef struct {
  int calls, failed;
} many_t;

static void many_cb(int status, const engram_reply_t *reply, void *ud) {
  many_t *m = ud;
  (void)reply;
  if (status != 0) m->failed++;
  m->calls++;
}

/* Creates threads "<prefix><i>", i in [0, n), with engram_thread_set (metadata {"i": i}), 200 in flight at once. */
static void make_threads(ctx_t *c, const char *prefix, int n) {
  many_t m = {0, 0};
  int i = 0;
  while (i < n) {
    int batch = n - i < 200 ? n - i : 200, j;
    for (j = 0; j < batch; j++, i++) {
      char id[64], meta[48];
      cJSON *md;
      snprintf(id, sizeof id, "%s%d", prefix, i);
      snprintf(meta, sizeof meta, "{\"i\": %d}", i);
      md = J(meta);
      assert_int_equal(engram_thread_set(c->mgr, id, md, NULL, NULL, many_cb, &m), 0);
      cJSON_Delete(md);
    }
    wait_for(c, &m.calls, i, 120000);
  }
  assert_int_equal(m.failed, 0);
}

/* One page of engram_thread_list; returns the reply's cursor (malloc'd) or NULL. */
static char *list_page(ctx_t *c, int limit, const char *cursor, result_t *r) {
  result_reset(r);
  assert_int_equal(finish_call(c, engram_thread_list(c->mgr, limit, cursor, NULL, capture_cb, r), r), 0);
  assert_int_equal((int)r->count, cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(r->info, "threads")));
  return r->cursor ? strdup(r->cursor) : NULL;
}

/* Pages through 2,000 threads 97 at a time: each listed once, newest-updated first (updated_at_ms descending,
 * ties by id descending), with its metadata and count. Between the first and second page one thread already
 * listed and one not yet listed are appended to: they move to the front, behind the cursor, so the first is not
 * listed again and the second is not listed in this pass (the docstring's promise). */
static void list_pages_of_many_threads(void **state) {
  ctx_t *c = *state;
  enum { N = 600, LIMIT = 47 };
  result_t r = {0};
  static unsigned char seen[N];
  char *cursor = NULL, old_id[80] = "", moved_seen[32] = "", moved_unseen[32] = "";
  int64_t last_u = INT64_MAX;
  int pages = 0, total = 0, i;
  memset(seen, 0, sizeof seen);
  make_threads(c, "lp", N);
  do {
    const cJSON *t;
    char *next = list_page(c, LIMIT, cursor, &r);
    pages++;
    if (next != NULL) assert_int_equal((int)r.count, LIMIT);
    cJSON_ArrayForEach(t, cJSON_GetObjectItemCaseSensitive(r.info, "threads")) {
      const char *id = str_of(t, "thread");
      int64_t u = (int64_t)cJSON_GetObjectItemCaseSensitive(t, "updated_at_ms")->valuedouble;
      int k = atoi(id + 2);
      assert_true(strncmp(id, "lp", 2) == 0 && k >= 0 && k < N);
      assert_int_equal(seen[k], 0);
      seen[k] = 1;
      total++;
      assert_int_equal((int)cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(t, "metadata"), "i")->valuedouble, k);
      assert_int_equal((int)cJSON_GetObjectItemCaseSensitive(t, "count")->valuedouble, 0);
      /* the order, across pages */
      assert_true(u < last_u || (u == last_u && strcmp(id, old_id) < 0));
      last_u = u;
      snprintf(old_id, sizeof old_id, "%s", id);
    }
    if (pages == 1) {
      result_t a = {0};
      for (i = 0; i < N && (!moved_seen[0] || !moved_unseen[0]); i++) {
        char *slot = seen[i] ? moved_seen : moved_unseen;
        if (!slot[0]) snprintf(slot, 32, "lp%d", i);
      }
      next_ms(c);
      assert_int_equal(t_append1(c, moved_seen, "user", "again", NULL, &a), 0);
      next_ms(c);
      assert_int_equal(t_append1(c, moved_unseen, "user", "first", NULL, &a), 0);
      result_reset(&a);
    }
    free(cursor);
    cursor = next;
  } while (cursor != NULL);
  assert_true(pages >= N / LIMIT);
  assert_int_equal(total, N - 1);
  assert_int_equal(seen[atoi(moved_unseen + 2)], 0);
  assert_int_equal(seen[atoi(moved_seen + 2)], 1);
  /* a new listing starts with the two moved threads, newest first */
  cursor = list_page(c, 2, NULL, &r);
  assert_string_equal(str_of(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(r.info, "threads"), 0), "thread"), moved_unseen);
  assert_string_equal(str_of(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(r.info, "threads"), 1), "thread"), moved_seen);
  assert_int_equal((int)cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(r.info, "threads"), 0), "count")->valuedouble, 1);
  free(cursor);
  /* a cursor of the listing before pages were searched ("<updated_at_ms>:<id>") is refused */
  result_reset(&r);
  expect_refused(engram_thread_list(c->mgr, 10, "1718000000000:lp1", NULL, capture_cb, &r), "cursor");
  result_reset(&r);
}

/* A source without system-field ranges (one written against an older contract) cannot place a page after the
 * cursor by a range: from the second page on the list reads every head as it did before, in the same order. */
static engram_source_vtable_t no_ranges_vt;
static const conf_source_t *no_ranges_of(void) {
  static conf_source_t s;
  no_ranges_vt = engram_source_cache;
  no_ranges_vt.name = "cache-no-ranges";
  no_ranges_vt.flags &= ~(unsigned)ENGRAM_SOURCE_RANGES;
  s.type = "cache-no-ranges";
  s.vt = &no_ranges_vt;
  return &s;
}

static void list_without_ranges_reads_every_head(void **state) {
  ctx_t c;
  result_t r = {0};
  char *cursor = NULL, prev[32] = "";
  int total = 0;
  int64_t last_u = INT64_MAX;
  (void)state;
  ctx_init(&c, NULL);
  ctx_add(&c, no_ranges_of());
  make_threads(&c, "nr", 40);
  do {
    const cJSON *t;
    char *next = list_page(&c, 7, cursor, &r);
    cJSON_ArrayForEach(t, cJSON_GetObjectItemCaseSensitive(r.info, "threads")) {
      int64_t u = (int64_t)cJSON_GetObjectItemCaseSensitive(t, "updated_at_ms")->valuedouble;
      assert_true(u < last_u || (u == last_u && strcmp(str_of(t, "thread"), prev) < 0));
      last_u = u;
      snprintf(prev, sizeof prev, "%s", str_of(t, "thread"));
      total++;
    }
    free(cursor);
    cursor = next;
  } while (cursor != NULL);
  assert_int_equal(total, 40);
  result_reset(&r);
  ctx_close(&c);
}


static int t_context(ctx_t *c, int n, engram_render_format_t f, result_t *r) {
  result_reset(r);
  return finish_call(c, engram_thread_context(c->mgr, n, f, NULL, capture_cb, r), r);
}

/* "thread:content" of each message of a context reply, comma-separated. */
static void context_text(const result_t *r, char *out, size_t size) {
  const cJSON *m;
  size_t len = 0;
  out[0] = '\0';
  cJSON_ArrayForEach(m, info_msgs(r)) {
    const char *content = str_of(m, "content");
    len += (size_t)snprintf(out + len, size - len, "%s%s:%s", len ? "," : "", str_of(m, "thread"),
                            content ? content : "-");
    assert_true(len < size);
  }
}

/* engram_thread_context: the newest N messages of every thread of the namespace, chronological (created_at_ms,
 * thread, seq), each naming its thread; leading tool results of a thread left out; what the heads hide (a
 * deleted message whose item is written back, a trimmed one) never shown; rendered on request; and bounded
 * work: of 40 threads older than the newest messages only the first page's one is read. */
static void context_across_threads(void **state) {
  ctx_t *c = *state;
  result_t r = {0};
  char got[1024], key[256] = "", *value = NULL;
  engram_thread_settings_t one = {ENGRAM_THREAD_MAX_MESSAGES, 1, 0};
  engram_message_t sys2[2], call = M("assistant", NULL), res = M("tool", "result");
  cJSON *calls = J("[{\"id\": \"call_1\", \"type\": \"function\", \"function\": {\"name\": \"f\", \"arguments\": \"{}\"}}]");
  const cJSON *it;
  /* an empty namespace */
  assert_int_equal(t_context(c, 10, ENGRAM_RENDER_NONE, &r), 0);
  assert_int_equal((int)r.count, 0);
  call.tool_calls = calls;
  res.tool_call_id = "call_1";
  sys2[0] = M("system", "c-sys");
  sys2[1] = M("user", "c1");
  assert_int_equal(t_append1(c, "ca", "user", "a1", NULL, &r), 0);
  next_ms(c);
  assert_int_equal(t_append1(c, "cb", "user", "b1", NULL, &r), 0);
  next_ms(c);
  assert_int_equal(t_append1(c, "ca", "assistant", "a2", NULL, &r), 0);
  next_ms(c);
  assert_int_equal(t_append(c, "cc", sys2, 2, NULL, &r), 0);
  next_ms(c);
  assert_int_equal(t_append(c, "cb", &call, 1, NULL, &r), 0);
  next_ms(c);
  assert_int_equal(t_append(c, "cb", &res, 1, NULL, &r), 0);
  next_ms(c);
  assert_int_equal(t_append1(c, "ca", "user", "a3", NULL, &r), 0);
  assert_int_equal(t_context(c, 100, ENGRAM_RENDER_NONE, &r), 0);
  context_text(&r, got, sizeof got);
  assert_string_equal(got, "ca:a1,cb:b1,ca:a2,cc:c-sys,cc:c1,cb:-,cb:result,ca:a3");
  assert_int_equal((int)r.count, 8);
  assert_int_equal((int)info_num(&r, "threads_read"), 3);
  assert_int_equal(t_context(c, 4, ENGRAM_RENDER_NONE, &r), 0);
  context_text(&r, got, sizeof got);
  assert_string_equal(got, "cc:c1,cb:-,cb:result,ca:a3");
  /* the newest two start with a tool result whose call is older: left out */
  assert_int_equal(t_context(c, 2, ENGRAM_RENDER_NONE, &r), 0);
  context_text(&r, got, sizeof got);
  assert_string_equal(got, "ca:a3");
  /* rendered like a window */
  assert_int_equal(t_context(c, 3, ENGRAM_RENDER_OPENAI, &r), 0);
  {
    cJSON *body = J(r.text);
    assert_int_equal(cJSON_GetArraySize(body), 3);
    assert_string_equal(str_of(cJSON_GetArrayItem(body, 0), "role"), "assistant");
    assert_string_equal(str_of(cJSON_GetArrayItem(body, 1), "tool_call_id"), "call_1");
    assert_string_equal(str_of(cJSON_GetArrayItem(body, 2), "content"), "a3");
    cJSON_Delete(body);
  }
  /* a3 deleted by its head, then its item written back behind the thread's back: still invisible */
  {
    engram_window_t w = ENGRAM_WINDOW_INIT;
    uint64_t three = 3;
    assert_int_equal(t_window(c, "ca", &w, &r), 0);
    cJSON_ArrayForEach(it, r.items) {
      const char *k = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(it, "key"));
      if (k != NULL && strlen(k) > 2 && strcmp(k + strlen(k) - 2, "03") == 0) {
        snprintf(key, sizeof key, "%s", k);
        value = engram_json_print_text(cJSON_GetObjectItemCaseSensitive(it, "value"));
      }
    }
    assert_true(key[0] != '\0' && value != NULL);
    result_reset(&r);
    assert_int_equal(finish_call(c, engram_thread_delete_messages(c->mgr, "ca", &three, 1, NULL, capture_cb, &r), &r), 0);
    assert_int_equal(s_store(c, key, value, NULL, &r), 0);
    engram_free(value);
  }
  next_ms(c);
  /* a thread trimmed to its newest message */
  assert_int_equal(t_append1(c, "cd", "user", "d1", &one, &r), 0);
  next_ms(c);
  assert_int_equal(t_append1(c, "cd", "user", "d2", &one, &r), 0);
  assert_int_equal(t_context(c, 100, ENGRAM_RENDER_NONE, &r), 0);
  context_text(&r, got, sizeof got);
  assert_string_equal(got, "ca:a1,cb:b1,ca:a2,cc:c-sys,cc:c1,cb:-,cb:result,cd:d2");
  /* bounded work: 40 threads older than the newest 3 messages; only the first page's heads are read */
  make_threads(c, "old", 40);
  {
    many_t m = {0, 0};
    int i;
    for (i = 0; i < 40; i++) {
      char id[16];
      engram_message_t msg = M("user", "old");
      snprintf(id, sizeof id, "old%d", i);
      assert_int_equal(engram_thread_append(c->mgr, id, &msg, 1, NULL, NULL, many_cb, &m), 0);
    }
    wait_for(c, &m.calls, 40, 120000);
    assert_int_equal(m.failed, 0);
  }
  next_ms(c);
  assert_int_equal(t_append1(c, "new1", "user", "n1", NULL, &r), 0);
  next_ms(c);
  assert_int_equal(t_append1(c, "new2", "user", "n2", NULL, &r), 0);
  next_ms(c);
  assert_int_equal(t_append1(c, "new1", "user", "n3", NULL, &r), 0);
  assert_int_equal(t_context(c, 3, ENGRAM_RENDER_NONE, &r), 0);
  context_text(&r, got, sizeof got);
  assert_string_equal(got, "new1:n1,new2:n2,new1:n3");
  assert_true(info_num(&r, "threads_read") <= 3);
  /* bad input */
  result_reset(&r);
  expect_refused(engram_thread_context(c->mgr, 0, ENGRAM_RENDER_NONE, NULL, capture_cb, &r), "max_messages");
  expect_refused(engram_thread_context(c->mgr, 1001, ENGRAM_RENDER_NONE, NULL, capture_cb, &r), "max_messages");
  expect_refused(engram_thread_context(c->mgr, 5, (engram_render_format_t)9, NULL, capture_cb, &r), "format");
  run_barrier(c);
  assert_int_equal(r.calls, 0);
  cJSON_Delete(calls);
  result_reset(&r);
}


static char *list_cursor_cb_out;
/* count_cb that also keeps the reply's cursor in list_cursor_cb_out (128 bytes; "" when none). */
static void list_cursor_cb(int status, const engram_reply_t *reply, void *ud) {
  snprintf(list_cursor_cb_out, 128, "%s", status == 0 && reply->cursor ? reply->cursor : "");
  count_cb(status, reply, ud);
}

/* Every allocation of a list (the ordered search and, on a source without ranges, the fallback) and of a context
 * call fails once: each call ends with one callback or a refusal, and nothing leaks. */
static void list_context_alloc_scenario(void *unused) {
  uv_loop_t loop;
  engram_manager_t *mgr;
  count_t k = {0, 0};
  engram_message_t m[3];
  const char *ids[3] = {"x", "y", "z"};
  char cursor[128] = "";
  int rc, i, src;
  (void)unused;
  assert_int_equal(uv_loop_init(&loop), 0);
  while ((rc = engram_manager_new(&mgr, &loop, NULL)) == ENGRAM_ENOMEM) {
  }
  assert_int_equal(rc, 0);
  k.calls = 0;
  if (engram_manager_add_source(mgr, "cache", &engram_source_cache, NULL, "d", 1, count_cb, &k) == 0)
    spin(&loop, &k.calls, 1, 10000, 1);
  k.calls = 0;
  if (engram_manager_add_source(mgr, "nr", &no_ranges_vt, NULL, NULL, 0, count_cb, &k) == 0)
    spin(&loop, &k.calls, 1, 10000, 1);
  m[0] = M("user", "hello");
  m[1] = M("assistant", "hi");
  m[2] = M("user", "bye");
  for (src = 0; src < 2; src++) {
    engram_opts_t o = {0};
    o.source = src ? "nr" : "cache";
    for (i = 0; i < 3; i++) {
      k.calls = 0;
      if (engram_thread_append(mgr, ids[i], m, (size_t)(i + 1), NULL, &o, count_cb, &k) == 0)
        spin(&loop, &k.calls, 1, 10000, 1);
    }
    cursor[0] = '\0';
    for (i = 0; i < 2; i++) { /* two pages of 2 */
      list_cursor_cb_out = cursor;
      k.calls = 0;
      if (engram_thread_list(mgr, 2, cursor[0] ? cursor : NULL, &o, list_cursor_cb, &k) == 0) {
        spin(&loop, &k.calls, 1, 10000, 1);
        assert_int_equal(k.calls, 1);
      }
      if (!cursor[0]) break;
    }
    k.calls = 0;
    if (engram_thread_context(mgr, 4, ENGRAM_RENDER_ANTHROPIC, &o, count_cb, &k) == 0) {
      spin(&loop, &k.calls, 1, 10000, 1);
      assert_int_equal(k.calls, 1);
    }
  }
  k.calls = 0;
  while ((rc = engram_manager_close(mgr, count_cb, &k)) == ENGRAM_ENOMEM) {
  }
  assert_int_equal(rc, 0);
  spin(&loop, &k.calls, 1, 10000, 1);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&loop), 0);
}

static void list_context_allocation_failures(void **state) {
  long points;
  (void)state;
  (void)no_ranges_of(); /* sets no_ranges_vt */
  list_context_alloc_scenario(NULL);
  points = failing_alloc_loop(list_context_alloc_scenario, NULL);
  printf("  list and context: every one of %ld allocations failed once\n", points);
  assert_true(getenv("ENGRAM_ALLOC_ONLY") || points > 100);
}

static const struct CMUnitTest cases[] = {
    CASE(trim_120_keeps_71_to_120), CASE(token_window_keeps_tool_pairs), CASE(system_message_is_kept),
    CASE(four_callers_one_order),   CASE(four_processes_one_order),      CASE(merged_appends_answer_each_caller), CASE(merged_with_another_process), CASE(lane_depth_follows_the_source),      CASE(ttl_slides_then_thread_disappears), CASE(no_ttl_stops_the_head_expiring),
    CASE(list_threads_newest_first), CASE(get_delete_and_set),           CASE(bad_input_is_refused),
    CASE(summaries_head_later_windows), CASE(failing_summarizer_changes_nothing),
    CASE(summary_on_a_queue_and_with_a_ttl), CASE(search_finds_visible_messages_only), CASE(window_hint_one_call_or_two), CASE(window_gap_costs_one_page), CASE(window_reads_each_message_once),
    CASE(small_message_cache_answers_the_same), CASE(windows_from_four_threads),
    CASE(import_of_a_backup_drops_the_cached_messages), CASE(search_modes_and_query_fields),
    /* listing by pages, the cross-thread context */
    CASE(list_pages_of_many_threads), CASE(context_across_threads),
};

/* ---- appends whose trees are built in one block each (src/thread/thread_block.c) ---- */

typedef struct {
  int calls;
  cJSON *got; /* every successful reply's messages (copies), by seq */
} blk_t;

static void blk_cb(int status, const engram_reply_t *reply, void *ud) {
  blk_t *b = ud;
  const cJSON *m;
  b->calls++;
  if (status != 0 || b->got == NULL) return;
  cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(reply->info, "messages")) {
    cJSON *d = cJSON_Duplicate(m, 1);
    if (d != NULL && !cJSON_AddItemToArray(b->got, d)) cJSON_Delete(d);
  }
}

static const cJSON *by_seq(const cJSON *arr, int seq) {
  const cJSON *m;
  cJSON_ArrayForEach(m, arr) if ((int)cJSON_GetObjectItemCaseSensitive(m, "seq")->valuedouble == seq) return m;
  fail_msg("no message %d", seq);
  return NULL;
}

/* Four appends in flight to one thread (the cache lets two go, the last two merge into one update) of messages with
 * content parts, tool calls, a tool result and nested metadata, then a window. check: no allocation fails — every
 * reply's message reads back the same from the window (the stored value), and the item metadata is right. */
static void block_scenario(void *arg) {
  int check = arg != NULL;
  uv_loop_t loop;
  engram_manager_t *mgr;
  count_t k = {0, 0};
  blk_t b = {0, NULL};
  engram_message_t m[3];
  engram_thread_settings_t st = {ENGRAM_THREAD_MAX_MESSAGES, 6, 0};
  engram_window_t w = ENGRAM_WINDOW_INIT;
  cJSON *parts = cJSON_Parse("[{\"type\": \"text\", \"text\": \"look\"}, {\"type\": \"image_url\", \"image_url\": "
                             "{\"url\": \"https://x/y.png\"}}]");
  cJSON *calls = cJSON_Parse("[{\"id\": \"c1\", \"type\": \"function\", \"function\": {\"name\": \"f\", "
                             "\"arguments\": \"{\\\"q\\\": 1}\"}}]");
  cJSON *meta = cJSON_Parse("{\"k\": [1, \"two\", {\"z\": null, \"t\": true}], \"e\": {}}");
  int rc, i, accepted = 0;
  if (parts == NULL || calls == NULL || meta == NULL) { /* a parse that failed under the failing allocator */
    cJSON_Delete(parts);
    cJSON_Delete(calls);
    cJSON_Delete(meta);
    return;
  }
  assert_int_equal(uv_loop_init(&loop), 0);
  while ((rc = engram_manager_new(&mgr, &loop, NULL)) == ENGRAM_ENOMEM) {
  }
  assert_int_equal(rc, 0);
  if (engram_manager_add_source(mgr, "cache", &engram_source_cache, NULL, "d", 1, count_cb, &k) == 0)
    spin(&loop, &k.calls, 1, 10000, 1);
  memset(m, 0, sizeof m);
  m[0].role = "user";
  m[0].content_parts = parts;
  m[0].metadata = meta;
  m[1].role = "assistant";
  m[1].tool_calls = calls;
  m[2].role = "tool";
  m[2].tool_call_id = "c1";
  m[2].content = "r\xc3\xa9sultat";
  if (check) b.got = cJSON_CreateArray();
  for (i = 0; i < 4; i++)
    if (engram_thread_append(mgr, "b", m, 3, &st, NULL, blk_cb, &b) == 0) accepted++;
  spin(&loop, &b.calls, accepted, 10000, 1);
  assert_int_equal(b.calls, accepted);
  w.max_messages = 20;
  k.calls = 0;
  if (check) {
    result_t r = {0};
    const cJSON *x, *y;
    char key[256];
    int seen = 0;
    assert_int_equal(accepted, 4);
    assert_int_equal(cJSON_GetArraySize(b.got), 12);
    assert_int_equal(engram_thread_window(mgr, "b", &w, NULL, capture_cb, &r), 0);
    spin(&loop, &r.calls, 1, 10000, 1);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.n_items, 6); /* max_messages: 7..12 */
    for (i = 0; i < (int)r.n_items; i++) {
      x = result_item(&r, (size_t)i, "value");
      cJSON_ArrayForEach(y, b.got) if (cJSON_Compare(x, y, 1)) seen++;
    }
    snprintf(key, sizeof key, "%s", result_key(&r, r.n_items - 1));
    assert_int_equal(seen, 6); /* each stored message is one a reply gave, member for member */
    x = by_seq(b.got, 1); /* the user message as given (replies come in arrival order, not by seq) */
    assert_true(cJSON_Compare(cJSON_GetObjectItemCaseSensitive(x, "content"), parts, 1));
    assert_true(cJSON_Compare(cJSON_GetObjectItemCaseSensitive(x, "metadata"), meta, 1));
    x = by_seq(b.got, 2);
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(x, "content")));
    assert_true(cJSON_Compare(cJSON_GetObjectItemCaseSensitive(x, "tool_calls"), calls, 1));
    x = by_seq(b.got, 12);
    assert_string_equal(str_of(x, "content"), "r\xc3\xa9sultat");
    assert_string_equal(str_of(x, "tool_call_id"), "c1");
    assert_int_equal((int)cJSON_GetObjectItemCaseSensitive(x, "seq")->valuedouble, 12);
    result_reset(&r);
    /* the item metadata of the newest message: {"thread", "seq", "role"} */
    assert_int_equal(engram_retrieve(mgr, key, &(engram_opts_t){.flags = ENGRAM_OPT_INCLUDE_METADATA}, capture_cb, &r), 0);
    spin(&loop, &r.calls, 1, 10000, 1);
    assert_int_equal(r.status, 0);
    assert_string_equal(str_of(result_item(&r, 0, "metadata"), "thread"), "b");
    assert_int_equal((int)cJSON_GetObjectItemCaseSensitive(result_item(&r, 0, "metadata"), "seq")->valuedouble, 12);
    assert_string_equal(str_of(result_item(&r, 0, "metadata"), "role"), "tool");
    result_reset(&r);
  } else if (engram_thread_window(mgr, "b", &w, NULL, count_cb, &k) == 0) {
    spin(&loop, &k.calls, 1, 10000, 1);
    assert_int_equal(k.calls, 1);
  }
  cJSON_Delete(b.got);
  k.calls = 0;
  while ((rc = engram_manager_close(mgr, count_cb, &k)) == ENGRAM_ENOMEM) {
  }
  assert_int_equal(rc, 0);
  spin(&loop, &k.calls, 1, 10000, 1);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&loop), 0);
  cJSON_Delete(parts);
  cJSON_Delete(calls);
  cJSON_Delete(meta);
}

static void append_blocks(void **state) {
  long points;
  (void)state;
  block_scenario(state); /* checked, without failures */
  points = failing_alloc_loop(block_scenario, NULL);
  printf("  appends in blocks: every one of %ld allocations failed once\n", points);
  assert_true(getenv("ENGRAM_ALLOC_ONLY") || points > 100);
}

static const struct CMUnitTest pure_cases[] = {cmocka_unit_test(renderings), cmocka_unit_test(summary_allocation_failures),
                                               cmocka_unit_test(list_without_ranges_reads_every_head),
                                               cmocka_unit_test(list_context_allocation_failures),
                                               cmocka_unit_test(append_blocks)};

/* The processes test must give its children the options of the very source the parent opened: the entry's
 * options() makes a fresh name each call, so the setup below wraps it and keeps the last one. */
static conf_source_t wrapped;
static const conf_source_t *wrapped_from;
static char *wrapped_options(void) {
  char *o = wrapped_from->options ? wrapped_from->options() : NULL;
  free(child_options);
  child_options = o ? strdup(o) : strdup("{}");
  return o;
}

int main(int argc, char **argv) {
  int failed = 0;
  size_t i;
  self_path = argv[0];
  if (argc == 6 && strcmp(argv[1], "--append-child") == 0) return child_main(argv[2], argv[3], argv[4], argv[5]);
  {
    static char buf[4096];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n > 0) {
      buf[n] = '\0';
      self_path = buf;
    }
  }
  failed += cmocka_run_group_tests(pure_cases, NULL, NULL);
  for (i = 0; conf_sources[i] != NULL; i++) {
    char name[96];
    if (!conf_source_enabled(conf_sources[i])) continue;
    if (conf_sources[i]->setup && conf_sources[i]->setup() != 0) {
      fprintf(stderr, "thread[%s]: setup failed\n", conf_sources[i]->type);
      failed++;
      continue;
    }
    wrapped = *conf_sources[i];
    wrapped_from = conf_sources[i];
    wrapped.options = wrapped_options;
    cur_source = &wrapped;
    snprintf(name, sizeof name, "thread[%s]", conf_sources[i]->type);
    failed += _cmocka_run_group_tests(name, cases, sizeof cases / sizeof cases[0], NULL, NULL);
    if (conf_sources[i]->teardown) conf_sources[i]->teardown();
  }
  free(child_options);
  return failed ? 1 : 0;
}
