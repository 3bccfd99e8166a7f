/*
 * test_jsonl_read.c — the import's two line readers (src/export/jsonl_read.c) agree. The fast path
 * (engram__jsonl_read) may take a line only when the strict path (engram__jsonl_read_strict, the rule of
 * docs/export.md) takes it too and gives the same item — the same key, namespace, integers, and value and
 * metadata trees equal node for node (types, string bytes, member names, numbers bit for bit, the links cJSON_Parse
 * leaves) — and it must take the lines an export writes, or the import gains nothing. Checked on a table of
 * lines (good ones it must take, bad and unusual ones it must leave to the strict path), on 300,000 random
 * mutations of good lines (bytes replaced with JSON's troublemakers, inserted, deleted, spans repeated), and under
 * a failing allocator (every allocation point: ENGRAM_ENOMEM and nothing left allocated, or the item). The raw_text
 * mode (an import into SQLite: a canonical value as its own text) is held to the strict path the same way: its raw
 * text parses to the strict path's tree and is exactly what cJSON prints for it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../src/export/jsonl_read.h"
#include "engram/source.h"
#include "support/failing_alloc.h"
#include "support/json_same.h"

typedef struct {
  long fast_read, strict_read, strict_bad, raw_read;
} tally_t;

/* A value the raw_text mode gave (a cJSON_Raw node of the line's text, or a tree when the text was not canonical)
 * against the strict path's tree: the same tree once parsed, and exactly the bytes cJSON prints for that tree. */
static int raw_same(const cJSON *raw, const cJSON *tree) {
  cJSON *parsed;
  char *printed;
  int same;
  if (raw == NULL || tree == NULL) return raw == tree;
  if (!cJSON_IsRaw(raw)) return json_same_tree(raw, tree);
  if ((parsed = cJSON_Parse(raw->valuestring)) == NULL) return 0;
  printed = cJSON_PrintUnformatted(tree);
  same = printed != NULL && strcmp(printed, raw->valuestring) == 0 && json_same_tree(parsed, tree);
  cJSON_free(printed);
  cJSON_Delete(parsed);
  return same;
}

/* Reads line both ways; fails the test when the fast path takes a line the strict path refuses or reads another
 * item — in its raw_text mode too (an import into SQLite), where a value whose text is canonical comes as that
 * text. Returns the fast path's result. */
static int check_line(const char *line, size_t len, tally_t *t) {
  static engram__jsonl_reader_t r1, r2;
  engram__jsonl_item_t a, b;
  char err[400], *copy = malloc(len + 1);
  int fast, strict;
  assert_non_null(copy);
  memcpy(copy, line, len);
  copy[len] = '\0';
  engram__jsonl_reader_init(&r1);
  engram__jsonl_reader_init(&r2);
  fast = engram__jsonl_read(&r1, copy, len, &a);
  strict = engram__jsonl_read_strict(&r2, copy, len, &b, err, sizeof err);
  assert_true(fast == ENGRAM__JSONL_READ || fast == ENGRAM__JSONL_UNDECIDED);
  /* ENGRAM_ENOMEM: cJSON_Parse failed on a text the check passed — out of memory, or a number of more than 63
   * characters, which cJSON cannot read (the strict path then reports a line "out of memory") */
  assert_true(strict == 0 || strict == -1 || strict == ENGRAM_ENOMEM);
  if (fast == ENGRAM__JSONL_UNDECIDED) assert_true(a.value == NULL && a.metadata == NULL);
  if (strict != 0) assert_true(b.value == NULL && b.metadata == NULL);
  if (strict == -1) assert_true(err[0] != '\0');
  if (fast == ENGRAM__JSONL_READ) {
    if (strict != 0) fail_msg("the fast path took a line the strict path refuses (%s): %.*s", err, (int)len, line);
    if (strcmp(a.key, b.key) != 0 || strcmp(a.ns, b.ns) != 0 || a.created != b.created || a.updated != b.updated ||
        a.expires != b.expires || a.version != b.version || a.has_created != b.has_created ||
        a.has_updated != b.has_updated || !json_same_tree(a.value, b.value) || !json_same_tree(a.metadata, b.metadata))
      fail_msg("the two paths read different items from: %.*s", (int)len, line);
    t->fast_read++;
  }
  {
    static engram__jsonl_reader_t r3;
    engram__jsonl_item_t c;
    int raw;
    engram__jsonl_reader_init(&r3);
    r3.raw_text = 1;
    raw = engram__jsonl_read(&r3, copy, len, &c);
    assert_true(raw == ENGRAM__JSONL_READ || raw == ENGRAM__JSONL_UNDECIDED);
    if (raw == ENGRAM__JSONL_READ) {
      if (strict != 0) fail_msg("the raw_text mode took a line the strict path refuses (%s): %.*s", err, (int)len, line);
      if (strcmp(c.key, b.key) != 0 || strcmp(c.ns, b.ns) != 0 || c.version != b.version || c.expires != b.expires ||
          !raw_same(c.value, b.value) || !raw_same(c.metadata, b.metadata))
        fail_msg("the raw_text mode read another item from: %.*s", (int)len, line);
      t->raw_read += cJSON_IsRaw(c.value);
    }
    cJSON_Delete(c.value);
    cJSON_Delete(c.metadata);
  }
  t->strict_read += strict == 0;
  t->strict_bad += strict != 0;
  cJSON_Delete(a.value);
  cJSON_Delete(a.metadata);
  cJSON_Delete(b.value);
  cJSON_Delete(b.metadata);
  free(copy);
  return fast;
}

/* Lines the fast path must take: what an export writes, and the format's freedoms. */
static const char *const good[] = {
    "{\"key\":\"user:42\",\"ns\":\"team/a\",\"value\":{\"name\":\"Ada\"},\"metadata\":{\"tag\":\"person\"},"
    "\"created_at_ms\":1765000000000,\"updated_at_ms\":1765000360000,\"expires_at_ms\":0,\"version\":3}",
    "{\"key\":\"a\",\"value\":1}",
    "  {\"value\" : [1, 2.5, -0, -0.0, 1e300, -1E-300, 2e+5, 123456789012345678, 4503599627370497] , \"key\":\"a\"}\t\r",
    "\xEF\xBB\xBF{\"key\":\"bom\",\"value\":null}",
    "{\"key\":\"caf\xc3\xa9 \xf0\x9f\x98\x80\",\"ns\":\"\",\"value\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\u20ac\\ud83d\\ude00\\u001f\"}",
    "{\"key\":\"k\",\"value\":{\"\":{},\"a\":[],\"b\":[[true,false,null]],\"a\":\"dup members stay, as in cJSON\"}}",
    "{\"key\":\"k\",\"value\":\"raw\x01control\x7f\",\"metadata\":null,\"version\":9007199254740992}",
    "{\"key\":\"k\",\"value\":{\"x\\u0041\\n\":1},\"metadata\":{},\"expires_at_ms\":0}",
    "{\"key\":\"k\",\"value\":\"\",\"created_at_ms\":0,\"updated_at_ms\":5}",
    "{\"key\":\"k\",\"value\":2147483648}",
    "{\"key\":\"k\",\"value\":-2147483649.5}",
    "{\"key\":\"k\",\"value\":1.0e2,\"version\":1e2}",
    "{\"key\":\"k\",\"value\":[1e400,-1e400]}", /* cJSON keeps infinities; so does the fast path */
    "{\"key\":\"k\",\"value\":[999999999999999,-999999999999999,9999999999999999,-0,0,-1,10,100200300400500]}",
};

/* Lines the fast path must leave to the strict path (bad ones, and good ones outside its subset). */
static const char *const undecided[] = {
    "{\"key\":\"a\\u0000b\",\"value\":1}", "{\"key\":\"a\",\"value\":\"\\ud800\"}", "{\"key\":\"a\",\"value\":\"\\udc00x\"}",
    "{\"key\":\"a\",\"value\":\"\\ud800\\u0041\"}", "{\"key\":\"\xff\",\"value\":1}", "{\"key\":\"a\",\"value\":\"\xc0\xaf\"}",
    "{\"key\":\"a\",\"value\":\"\xed\xa0\x80\"}", "{\"key\":\"a\",\"value\":\"\xe2\x82\"}", "{\"key\":\"a\",\"value\":1} x",
    "{\"key\":\"a\",\"value\":1,}", "{\"key\":\"a\",\"value\":01}", "{\"key\":\"a\",\"value\":1.}", "{\"key\":\"a\",\"value\":.5}",
    "{\"key\":\"a\",\"value\":+1}", "{\"key\":\"a\",\"value\":1e}", "{\"key\":\"a\",\"value\":[1,]}", "{\"key\":\"a\",\"value\":tru}",
    "{\"key\":\"a\",\"value\":1,\"extra\":1}", "{\"key\":\"a\",\"value\":1,\"value\":2}", "{\"key\":\"a\"}", "{\"value\":1}",
    "{\"key\":\"\",\"value\":1}", "{\"key\":1,\"value\":1}", "{\"key\":\"a\",\"ns\":null,\"value\":1}",
    "{\"key\":\"a\",\"value\":1,\"version\":0}", "{\"key\":\"a\",\"value\":1,\"version\":1.5}",
    "{\"key\":\"a\",\"value\":1,\"version\":9007199254740994}", "{\"key\":\"a\",\"value\":1,\"created_at_ms\":-1}",
    "{\"key\":\"a\",\"value\":1,\"expires_at_ms\":\"0\"}", "{\"key\":\"a\",\"value\":1,\"metadata\":[1]}",
    "{\"key\":\"a\",\"value\":1,\"metadata\":\"x\"}", "[1]", "", "{}", "{\"key\":\"a\",\"value\":1",
    "{\"k\\u0065y\":\"a\",\"value\":1}", /* good, but an escaped member name: the strict path's */
    "{\"key\":\"a\",\"value\":1,\"version\":1e400}",
    "{\"key\":\"a\",\"value\":\"a\\x\"}", "{\"key\":\"a\",\"value\":\"\\u12\"}", "{\"key\":\"a\",\"value\":\"open}",
    "{\"key\":\"a\" \"value\":1}", "{\"key\" \"a\",\"value\":1}", "{\"key\":\"a\",\"value\":nul}",
};

static void test_table(void **state) {
  tally_t t = {0};
  size_t i;
  (void)state;
  for (i = 0; i < sizeof good / sizeof good[0]; i++) {
    if (check_line(good[i], strlen(good[i]), &t) != ENGRAM__JSONL_READ) fail_msg("the fast path left good line %zu: %s", i, good[i]);
  }
  assert_int_equal(t.strict_read, (long)(sizeof good / sizeof good[0]));
  for (i = 0; i < sizeof undecided / sizeof undecided[0]; i++) {
    if (check_line(undecided[i], strlen(undecided[i]), &t) == ENGRAM__JSONL_READ)
      fail_msg("the fast path took line %zu: %s", i, undecided[i]);
  }
}

/* Limits: a 1,024-byte key and a 256-byte namespace are taken, one byte more is left; 64 levels of nesting are
 * taken, 65 left (the strict path takes them, up to 1,000); numbers of 63 characters taken, 64 left. */
static void test_limits(void **state) {
  static char line[8192];
  char key[ENGRAM_KEY_MAX + 2], ns[ENGRAM_NAMESPACE_MAX + 2], num[80];
  tally_t t = {0};
  int depth;
  (void)state;
  memset(key, 'k', sizeof key);
  memset(ns, 'n', sizeof ns);
  key[ENGRAM_KEY_MAX] = ns[ENGRAM_NAMESPACE_MAX] = '\0';
  snprintf(line, sizeof line, "{\"key\":\"%s\",\"ns\":\"%s\",\"value\":1}", key, ns);
  assert_int_equal(check_line(line, strlen(line), &t), ENGRAM__JSONL_READ);
  key[ENGRAM_KEY_MAX] = 'k';
  key[ENGRAM_KEY_MAX + 1] = '\0';
  snprintf(line, sizeof line, "{\"key\":\"%s\",\"value\":1}", key);
  assert_int_equal(check_line(line, strlen(line), &t), ENGRAM__JSONL_UNDECIDED);
  ns[ENGRAM_NAMESPACE_MAX] = 'n';
  ns[ENGRAM_NAMESPACE_MAX + 1] = '\0';
  snprintf(line, sizeof line, "{\"key\":\"k\",\"ns\":\"%s\",\"value\":1}", ns);
  assert_int_equal(check_line(line, strlen(line), &t), ENGRAM__JSONL_UNDECIDED);
  assert_int_equal(t.strict_bad, 2);
  for (depth = 63; depth <= 66; depth++) {
    size_t n = 0;
    int k;
    n += (size_t)snprintf(line + n, sizeof line - n, "{\"key\":\"k\",\"value\":");
    for (k = 0; k < depth; k++) line[n++] = '[';
    for (k = 0; k < depth; k++) line[n++] = ']';
    n += (size_t)snprintf(line + n, sizeof line - n, "}");
    assert_int_equal(check_line(line, n, &t), depth <= ENGRAM__JSONL_FAST_DEPTH ? ENGRAM__JSONL_READ : ENGRAM__JSONL_UNDECIDED);
  }
  memset(num, '1', sizeof num);
  num[63] = '\0';
  snprintf(line, sizeof line, "{\"key\":\"k\",\"value\":%s}", num);
  assert_int_equal(check_line(line, strlen(line), &t), ENGRAM__JSONL_READ);
  num[63] = '1';
  num[64] = '\0';
  snprintf(line, sizeof line, "{\"key\":\"k\",\"value\":%s}", num);
  assert_int_equal(check_line(line, strlen(line), &t), ENGRAM__JSONL_UNDECIDED);
  /* a long string (past the reader's stack buffer) */
  memset(line, 0, sizeof line);
  strcpy(line, "{\"key\":\"k\",\"value\":\"");
  memset(line + strlen(line), 'x', 3000);
  strcat(line, "\\u00e9\"}");
  assert_int_equal(check_line(line, strlen(line), &t), ENGRAM__JSONL_READ);
}

static uint64_t rng = 0x9E3779B97F4A7C15u;
static unsigned next_rand(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (unsigned)(rng >> 11);
}

/* Random mutations of good lines: wherever the fast path takes one, the strict path agrees. */
static void test_mutations(void **state) {
  static const char pick[] = "\"\\{}[],:0123456789-+.eEu tfnrbl\x01\x7f";
  static const char *const extra[] = {"\\u0000", "\\ud800", "\\udc00", "\\ud83d\\ude00", "\xc3\xa9", "\xff", "\xed\xa0\x80",
                                      "\xf4\x90\x80\x80", "\xe0\x80\xaf", "\xef\xbb\xbf", "1e400", "null", "\\\"", "\x00"};
  tally_t t = {0};
  long i, rounds = 300000;
  char buf[1024];
  (void)state;
  if (getenv("ENGRAM_TEST_QUICK")) rounds = 30000;
  for (i = 0; i < rounds; i++) {
    const char *src = good[next_rand() % (sizeof good / sizeof good[0])];
    size_t len = strlen(src), k, edits = 1 + next_rand() % 3;
    memcpy(buf, src, len);
    for (k = 0; k < edits && len > 0; k++) {
      size_t at = next_rand() % len, op = next_rand() % 5;
      if (op == 0) {
        buf[at] = pick[next_rand() % (sizeof pick - 1)];
      } else if (op == 1 && len + 1 < 900) { /* insert a byte */
        memmove(buf + at + 1, buf + at, len - at);
        buf[at] = pick[next_rand() % (sizeof pick - 1)];
        len++;
      } else if (op == 2) { /* delete a byte */
        memmove(buf + at, buf + at + 1, len - at - 1);
        len--;
      } else if (op == 3 && len + 16 < 900) { /* insert a troublemaker */
        const char *e = extra[next_rand() % (sizeof extra / sizeof extra[0])];
        size_t el = e[0] ? strlen(e) : 1;
        memmove(buf + at + el, buf + at, len - at);
        memcpy(buf + at, e, el);
        len += el;
      } else if (len + 40 < 900) { /* repeat a span */
        size_t from = next_rand() % len, n = 1 + next_rand() % 32;
        if (from + n > len) n = len - from;
        memmove(buf + at + n, buf + at, len - at);
        memmove(buf + at, buf + (from >= at ? from + n : from), n);
        len += n;
      }
    }
    check_line(buf, len, &t);
  }
  print_message("# %ld mutated lines: %ld taken by the fast path (%ld with a raw value in raw_text mode), %ld good, "
                "%ld bad by the strict path\n", rounds, t.fast_read, t.raw_read, t.strict_read, t.strict_bad);
  /* the mutations must reach both sides, or the check proves nothing */
  assert_true(t.fast_read > rounds / 50);
  assert_true(t.raw_read > rounds / 100);
  assert_true(t.strict_bad > rounds / 4);
}

/* Every allocation point failing: ENGRAM_ENOMEM with nothing left allocated (the loop counts live blocks), or
 * the item. */
static void read_rich_line(void *arg) {
  engram__jsonl_reader_t r;
  engram__jsonl_item_t it;
  const char *line = arg;
  char big[1200];
  int rc;
  engram__jsonl_reader_init(&r);
  rc = engram__jsonl_read(&r, line, strlen(line), &it);
  assert_true(rc == ENGRAM__JSONL_READ || rc == ENGRAM_ENOMEM);
  if (rc == ENGRAM_ENOMEM) assert_true(it.value == NULL && it.metadata == NULL);
  cJSON_Delete(it.value);
  cJSON_Delete(it.metadata);
  r.raw_text = 1; /* the raw value's text and node fail too */
  rc = engram__jsonl_read(&r, line, strlen(line), &it);
  assert_true(rc == ENGRAM__JSONL_READ || rc == ENGRAM_ENOMEM);
  if (rc == ENGRAM_ENOMEM) assert_true(it.value == NULL && it.metadata == NULL);
  cJSON_Delete(it.value);
  cJSON_Delete(it.metadata);
  r.raw_text = 0;
  /* a string past the stack buffer: its scratch allocation fails too */
  memset(big, 0, sizeof big);
  strcpy(big, "{\"key\":\"k\",\"value\":[\"");
  memset(big + strlen(big), 'y', 600);
  strcat(big, "\"]}");
  rc = engram__jsonl_read(&r, big, strlen(big), &it);
  assert_true(rc == ENGRAM__JSONL_READ || rc == ENGRAM_ENOMEM);
  cJSON_Delete(it.value);
  cJSON_Delete(it.metadata);
}

static void test_out_of_memory(void **state) {
  (void)state;
  assert_true(failing_alloc_loop(read_rich_line, (void *)good[0]) > 5);
  assert_true(failing_alloc_loop(read_rich_line, (void *)good[5]) > 5);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_table), cmocka_unit_test(test_limits),
                                     cmocka_unit_test(test_mutations), cmocka_unit_test(test_out_of_memory)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
