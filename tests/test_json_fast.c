/*
 * test_json_fast.c — engram_json_parse's fast path (src/shared/json_fast.c) held to cJSON_ParseWithLength: for
 * hand-written texts at every edge the fast path has (escapes, the 15-digit integer limit, fractions, exponents,
 * \u escapes, raw control characters, nesting at 64 and 65, whitespace everywhere, duplicate members, trailing
 * bytes, truncations) and for 20,000 random trees printed by cJSON (compact and formatted, and each cut short),
 * the answer of engram_json_parse is cJSON's own tree node for node (or, where cJSON refuses, ENGRAM_EINVAL), and
 * the fast path either builds that same tree or gives up. It must take the shapes it exists for (a conversation
 * message): the test fails if it gives up on them. Every allocation failing in turn gives ENGRAM_ENOMEM, never a
 * wrong verdict, and leaks nothing. Also engram_json_print (src/shared/json_print.c) held to cJSON_PrintUnformatted:
 * over 400,000 numbers and 20,000 random trees its text reads back as exactly what was printed, and wherever
 * cJSON's text reads back exactly too the two are the same bytes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../src/shared/json_copy.h"
#include "../src/shared/json_fast.h"
#include "../src/shared/json_text.h"
#include "engram/source.h"
#include "support/failing_alloc.h"
#include "support/json_same.h"

/* One text: engram_json_parse agrees with cJSON; the fast path builds the same tree or gives up. Returns 1 when
 * the fast path answered. */
/* json_same_tree, a one-block root's flags aside (cJSON_IsReference | ENGRAM__CJSON_BLOCK). */
static int same_tree_block(cJSON *block, const cJSON *want) {
  int type = block->type, same;
  if ((type & (cJSON_IsReference | ENGRAM__CJSON_BLOCK)) != (cJSON_IsReference | ENGRAM__CJSON_BLOCK)) return 0;
  block->type = type & ~(cJSON_IsReference | ENGRAM__CJSON_BLOCK);
  same = json_same_tree(block, want);
  block->type = type;
  return same;
}

/* One text: engram_json_parse agrees with cJSON; the fast path builds the same tree or gives up, in one block
 * exactly where it does with an allocation per node; engram_json_parse_reply agrees with cJSON too. */
static int check_text(const char *t, size_t n) {
  cJSON *want = cJSON_ParseWithLength(t, n), *got = NULL, *fast = engram__json_fast_parse(t, n);
  cJSON *block = engram__json_fast_parse_block(t, n), *reply = NULL;
  int rc = engram_json_parse(t, n, &got), took = fast != NULL, rrc = engram_json_parse_reply(t, n, &reply);
  if (want != NULL) {
    if (rc != 0 || !json_same_tree(got, want)) fail_msg("engram_json_parse differs from cJSON on \"%.*s\"", (int)n, t);
    if (rrc != 0 || !(block != NULL ? same_tree_block(reply, want) : json_same_tree(reply, want)))
      fail_msg("engram_json_parse_reply differs from cJSON on \"%.*s\"", (int)n, t);
  } else {
    if (rc != ENGRAM_EINVAL || got != NULL) fail_msg("\"%.*s\": cJSON refuses it, engram_json_parse said %d", (int)n, t, rc);
    if (rrc != ENGRAM_EINVAL || reply != NULL) fail_msg("\"%.*s\": cJSON refuses it, engram_json_parse_reply said %d", (int)n, t, rrc);
  }
  if (fast != NULL && !json_same_tree(fast, want)) fail_msg("the fast path built another tree for \"%.*s\"", (int)n, t);
  if ((block != NULL) != (fast != NULL)) fail_msg("the fast path in one block %s on \"%.*s\"", block ? "took" : "gave up", (int)n, t);
  if (block != NULL && !same_tree_block(block, want)) fail_msg("the one-block parse built another tree for \"%.*s\"", (int)n, t);
  cJSON_Delete(want);
  cJSON_Delete(got);
  cJSON_Delete(fast);
  cJSON_Delete(block); /* the root's flag: the block goes whole */
  cJSON_Delete(reply);
  return took;
}

static void hand_written_edges(void **state) {
  char deep64[200], deep65[200];
  size_t d, i;
  const char *texts[] = {
      "{\"seq\":9946,\"role\":\"user\",\"content\":\"line\\nnext \\\"q\\\" \\\\ \\/ \\t \\b \\f \\r\",\"created_at_ms\":1765000000000}",
      " { \"a\" : [ 1 , -2 , 0 ] ,\n\t\"a\" : { } , \"b\" : [ ] } ",
      "[1.5, -0.25, 1e300, 2E-3, 12345678901234567890, 1234567890123456, 999999999999999, -999999999999999, 2147483648]",
      "[-0, 0, 00, 01, -, 1.]", "[1e5]", "[-2147483649, 2147483647, -2147483648]",
      "{\"u\": \"\\u00e9\\u0001 \\ud83d\\ude00 \xe6\x97\xa5\"}", "\"raw\ttab\"", "\"\\x\"", "\"unterminated",
      "\"just a string\"", "42", "-7", "true", "false", "null", "12abc", "tru", "nul", "[", "{", "]", "{\"a\"}",
      "{\"a\":}", "{\"a\":1,}", "[1,]", "[1 2]", "{1:2}", "", "   ", "[] []", "{}\n", "[true,false,null]",
      "{\"\":\"\"}", "{\"a\":{\"b\":{\"c\":[[[]]]}}}", "\xef\xbb\xbf{}", "\"\\\\\"", "\"a\\u0000b\"", "[\"\x01\"]",
      deep64, deep65,
  };
  size_t n = sizeof texts / sizeof texts[0];
  (void)state;
  for (d = 0; d < 64; d++) deep64[d] = '[';
  deep64[d] = '\0';
  for (i = 0; i < 64; i++) strcat(deep64, "]");
  for (d = 0; d < 65; d++) deep65[d] = '[';
  deep65[d] = '\0';
  for (i = 0; i < 65; i++) strcat(deep65, "]");
  for (i = 0; i < n; i++) check_text(texts[i], strlen(texts[i]));
  /* a raw NUL inside a string, and a cut in the middle of a character: cJSON's verdict either way */
  check_text("[\"a\0b\"]", 7);
  check_text("[\"a\0b", 5);
  check_text("\"\xe6\x97", 3);
  check_text("\"\\udf26\0\"\n", 10); /* a lone low surrogate: cJSON refuses it (found by fuzz_json_fast) */
  check_text("\"\\ud83d x\"", 10);    /* a lone high surrogate */
  check_text("\"\\ud83d\\ude00\"", 14); /* a pair */
  check_text("\"a\\u0000b\"", 10);     /* read by cJSON (cut at the NUL) */
  {
    /* past cJSON's nesting limit (1000): not JSON to cJSON, so ENGRAM_EINVAL, not ENGRAM_ENOMEM */
    static char deep[2100];
    cJSON *out = NULL;
    memset(deep, '[', 1001);
    memset(deep + 1001, ']', 1001);
    assert_int_equal(engram_json_parse(deep, 2002, &out), ENGRAM_EINVAL);
    assert_null(out);
    check_text(deep + 1, 2000); /* 1000 deep: cJSON reads it */
  }
  /* the shapes it exists for: a message, compact, with simple escapes — taken by the fast path */
  assert_true(check_text(texts[0], strlen(texts[0])));
  assert_true(check_text(texts[1], strlen(texts[1])));
  assert_true(check_text(deep64, strlen(deep64)));
  assert_false(check_text(deep65, strlen(deep65))); /* deeper than 64: cJSON's */
  assert_false(check_text(texts[6], strlen(texts[6]))); /* \u escapes: cJSON's */
}

/* ---- random trees ---- */

static uint64_t seed = 20261206;
static uint32_t rnd(void) {
  seed = seed * 6364136223846793005ull + 1442695040888963407ull;
  return (uint32_t)(seed >> 33);
}

static cJSON *random_string(int as_key, char *buf) {
  static const char *const pieces[] = {"a", "role", "\"", "\\", "/", "\n", "\t", "\x01", "\xc3\xa9", "\xe6\x97\xa5",
                                       " ", "0", "content", "\x7f", "\r\n"};
  size_t len = 0, k = rnd() % 6, i;
  for (i = 0; i < k; i++) {
    const char *p = pieces[rnd() % (sizeof pieces / sizeof pieces[0])];
    memcpy(buf + len, p, strlen(p));
    len += strlen(p);
  }
  buf[len] = '\0';
  return as_key ? NULL : cJSON_CreateString(buf);
}

static cJSON *random_tree(int depth) {
  char buf[64];
  uint32_t kind = depth > 6 ? 2 + rnd() % 6 : rnd() % 8;
  switch (kind) {
    case 0: {
      cJSON *o = cJSON_CreateObject();
      size_t k = rnd() % 5, i;
      for (i = 0; i < k; i++) {
        random_string(1, buf);
        cJSON_AddItemToObject(o, buf, random_tree(depth + 1));
      }
      return o;
    }
    case 1: {
      cJSON *a = cJSON_CreateArray();
      size_t k = rnd() % 5, i;
      for (i = 0; i < k; i++) cJSON_AddItemToArray(a, random_tree(depth + 1));
      return a;
    }
    case 2: return random_string(0, buf);
    case 3: return cJSON_CreateNumber((double)(int64_t)((((uint64_t)rnd() << 32) | rnd()) >> (rnd() % 64)) * (rnd() % 2 ? 1 : -1));
    case 4: return cJSON_CreateNumber((double)(rnd() % 100000) / 64.0 - 500);
    case 5: return cJSON_CreateNumber((double)rnd() * 1e10 * (rnd() % 2 ? 1e-30 : 1e30));
    case 6: return cJSON_CreateBool(rnd() % 2);
    default: return cJSON_CreateNull();
  }
}

static void random_trees_and_cuts(void **state) {
  int i, took = 0;
  (void)state;
  for (i = 0; i < 20000; i++) {
    cJSON *v = random_tree(0);
    char *t = i % 2 ? cJSON_Print(v) : cJSON_PrintUnformatted(v);
    size_t n = strlen(t);
    took += check_text(t, n);
    if (n > 1) check_text(t, rnd() % n); /* cut short */
    cJSON_free(t);
    cJSON_Delete(v);
  }
  /* most random trees have a fraction, an exponent or a \u-needing byte somewhere; many do not */
  assert_true(took > 2000);
}

/* ---- engram_json_print (src/shared/json_print.c): exact numbers, cJSON's bytes wherever cJSON is exact ---- */

static int bits_equal(double a, double b) { return memcmp(&a, &b, sizeof a) == 0; }

/* One number: engram's text reads back as exactly d (null for NaN and infinities); where cJSON's text reads back
 * exactly too, the two texts are the same bytes. Returns 1 when cJSON's text does not read back as d. */
static int check_number(double d) {
  cJSON *n = cJSON_CreateNumber(d);
  char *e = engram_json_print_text(n), *c = cJSON_PrintUnformatted(n);
  int lossy = 0;
  assert_non_null(e);
  assert_non_null(c);
  if (d != d || d - d != 0) {
    assert_string_equal(e, "null");
  } else {
    if (!bits_equal(strtod(e, NULL), d)) fail_msg("%.17g printed as %s", d, e);
    if (bits_equal(strtod(c, NULL), d)) {
      if (strcmp(e, c) != 0) fail_msg("%.17g: engram %s, cJSON %s", d, e, c);
    } else {
      lossy = 1;
    }
  }
  engram_free(e);
  cJSON_free(c);
  cJSON_Delete(n);
  return lossy;
}

static void printer_numbers(void **state) {
  static const double edges[] = {0.0, -0.0, 1, -1, 0.1, 0.30000000000000004, 1e15, -1e15, 999999999999999,
                                 1e15 + 1, 4503599627370497, 9007199254740992, 9007199254740993, 1e300, 5e-324,
                                 1.7976931348623157e308, 3.141592653589793, 8.8888888888888889e36, 2e-7, 1e-5};
  size_t i, lossy = 0;
  (void)state;
  for (i = 0; i < sizeof edges / sizeof edges[0]; i++) lossy += (size_t)check_number(edges[i]);
  assert_true(check_number(0.1 + 0.2)); /* cJSON 1.7.15 prints it "0.3" */
  for (i = 0; i < 200000; i++) {
    uint64_t u = ((uint64_t)rnd() << 32) | rnd();
    double d;
    memcpy(&d, &u, sizeof d);
    lossy += (size_t)check_number(d);                                   /* any bit pattern */
    lossy += (size_t)check_number((double)(rnd() % 1000000) / 1000.0); /* short decimals */
  }
  assert_true(lossy > 1000); /* the sweep meets the numbers cJSON gets wrong */
}

/* Random trees: engram's text parses back to the same tree, bit for bit; where cJSON's does too, same bytes. */
static void printer_trees(void **state) {
  int i;
  (void)state;
  for (i = 0; i < 20000; i++) {
    cJSON *v = random_tree(0), *back_e, *back_c;
    char *e = engram_json_print_text(v), *c = cJSON_PrintUnformatted(v);
    assert_non_null(e);
    back_e = cJSON_Parse(e);
    back_c = cJSON_Parse(c);
    assert_true(json_same_tree(back_e, v));
    if (json_same_tree(back_c, v)) assert_string_equal(e, c);
    cJSON_Delete(back_e);
    cJSON_Delete(back_c);
    engram_free(e);
    cJSON_free(c);
    cJSON_Delete(v);
  }
}

/* ---- every allocation failing in turn ---- */

static const char *alloc_text = "{\"seq\":12,\"role\":\"assistant\",\"content\":\"ok \\\"then\\\"\",\"tool_calls\":[{\"id\":\"c1\"}],"
                                "\"n\":[1,2,3,true,null]}";
static cJSON *alloc_want;

static void parse_once(void *arg) {
  cJSON *got = NULL;
  int rc = engram_json_parse(alloc_text, strlen(alloc_text), &got);
  (void)arg;
  if (rc == 0) {
    assert_true(json_same_tree(got, alloc_want));
  } else {
    assert_int_equal(rc, ENGRAM_ENOMEM); /* never "not JSON" */
    assert_null(got);
  }
  cJSON_Delete(got);
}

static void parse_reply_once(void *arg) {
  cJSON *got = NULL;
  int rc = engram_json_parse_reply(alloc_text, strlen(alloc_text), &got);
  (void)arg;
  if (rc == 0) {
    assert_true((got->type & ENGRAM__CJSON_BLOCK) ? same_tree_block(got, alloc_want) : json_same_tree(got, alloc_want));
  } else {
    assert_int_equal(rc, ENGRAM_ENOMEM);
    assert_null(got);
  }
  cJSON_Delete(got);
}

static void allocation_failures(void **state) {
  (void)state;
  alloc_want = cJSON_Parse(alloc_text);
  assert_non_null(alloc_want);
  assert_true(failing_alloc_loop(parse_once, NULL) >= 10); /* every node of the tree is an allocation point */
  /* One allocation point (the block); when it fails the fallback's node-by-node parse answers */
  assert_true(failing_alloc_loop(parse_reply_once, NULL) >= 1);
  cJSON_Delete(alloc_want);
}

/* ---- engram__reply_take_read (src/request/request.c): a block that owns itself handed over whole ---- */

cJSON *engram__reply_take_read(const engram_reply_t *reply, size_t i); /* src/request/request.h (internal) */

/* A block root is taken whole; cJSON's reference to one (flags copied, pointing into the original's block) and an
 * ordinary tree are taken as engram_reply_take_value takes them: the reference copied (the item keeps it), the
 * ordinary tree handed over. */
static void take_read_hands_over_only_owned_blocks(void **state) {
  const char *t = "{\"seq\":3,\"role\":\"user\",\"content\":\"hello\"}";
  cJSON *block = engram__json_fast_parse_block(t, strlen(t)), *arr = cJSON_CreateArray(), *plain = cJSON_Parse(t);
  cJSON *sblock = engram__json_fast_parse_block("\"text\"", 6), *got;
  engram_item_t items[4];
  engram_reply_t r;
  (void)state;
  assert_non_null(block);
  assert_non_null(sblock);
  assert_true(cJSON_AddItemReferenceToArray(arr, block)); /* a node with the block root's flags, child and all */
  assert_true((arr->child->type & ENGRAM__CJSON_BLOCK) != 0);
  memset(items, 0, sizeof items);
  memset(&r, 0, sizeof r);
  items[0].value = block;
  items[1].value = arr->child;
  items[2].value = plain;
  items[3].value = sblock;
  r.items = items;
  r.n_items = 4;
  assert_ptr_equal(engram__reply_take_read(&r, 0), block); /* whole */
  assert_null(items[0].value);
  got = engram__reply_take_read(&r, 1); /* the reference: a copy, the item keeps it */
  assert_non_null(got);
  assert_ptr_not_equal(got, arr->child);
  assert_ptr_equal(items[1].value, arr->child);
  assert_true(json_same_value(got, plain));
  cJSON_Delete(got);
  assert_ptr_equal(engram__reply_take_read(&r, 2), plain); /* ordinary: handed over */
  assert_null(items[2].value);
  assert_ptr_equal(engram__reply_take_read(&r, 3), sblock); /* a string root: its text next in the block */
  cJSON_Delete(arr); /* the reference node only */
  cJSON_Delete(block);
  cJSON_Delete(plain);
  cJSON_Delete(sblock);
}

/* ---- engram__json_copy_block (src/shared/json_copy.c): a store's copy in its request's block ---- */

/* Random trees (whose strings keep the rules) copied into a block of 8 KiB: the same tree node for node, or NULL
 * only when it would not fit; hand-made trees that break a rule are never copied (the caller's check then names
 * the problem), a member name in an array is not a rule's business (as engram__json_tree_check), and a copy takes
 * cJSON's own appends. */
static void copy_block_keeps_the_rules(void **state) {
  static union {
    cJSON align;
    char b[8192];
  } buf;
  engram__json_issue_t is;
  size_t used;
  cJSON *v, *c, *bad, *extra;
  int i, copied = 0;
  (void)state;
  for (i = 0; i < 20000; i++) {
    char *t;
    v = random_tree(0);
    assert_int_equal(engram__json_tree_check(v, "v", &is), 0);
    c = engram__json_copy_block(v, buf.b, sizeof buf.b, &used);
    if (c != NULL) {
      copied++;
      assert_true(used <= sizeof buf.b);
      if (!json_same_tree(c, v)) fail_msg("the copy differs from its tree");
    } else {
      t = cJSON_PrintUnformatted(v); /* only too large: a tree of more than 8 KiB has at least 8192 / 64 nodes */
      assert_true(strlen(t) > 8192 / 64);
      cJSON_free(t);
    }
    cJSON_Delete(v);
  }
  assert_true(copied > 15000);
  /* A bad byte past 45 ASCII ones, in a value; a bad member name; a raw node; a string node without text. */
  bad = cJSON_CreateString("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\xff");
  assert_null(engram__json_copy_block(bad, buf.b, sizeof buf.b, &used));
  assert_int_not_equal(engram__json_tree_check(bad, "v", &is), 0);
  cJSON_Delete(bad);
  bad = cJSON_CreateString("long \xc3\xa9 then a cut \xe2\x82");
  assert_null(engram__json_copy_block(bad, buf.b, sizeof buf.b, &used));
  cJSON_Delete(bad);
  bad = cJSON_CreateObject();
  cJSON_AddNumberToObject(bad, "n\xc3", 1);
  assert_null(engram__json_copy_block(bad, buf.b, sizeof buf.b, &used));
  assert_int_not_equal(engram__json_tree_check(bad, "v", &is), 0);
  cJSON_Delete(bad);
  bad = cJSON_CreateObject();
  cJSON_AddRawToObject(bad, "r", "[1]");
  assert_null(engram__json_copy_block(bad, buf.b, sizeof buf.b, &used));
  cJSON_Delete(bad);
  bad = cJSON_CreateArray();
  cJSON_AddItemToArray(bad, cJSON_CreateString("x"));
  cJSON_free(bad->child->valuestring);
  bad->child->valuestring = NULL;
  assert_null(engram__json_copy_block(bad, buf.b, sizeof buf.b, &used));
  cJSON_Delete(bad);
  /* An array element with a name that is not UTF-8: copied, as the check lets it be. */
  v = cJSON_CreateArray();
  cJSON_AddItemToArray(v, cJSON_CreateString("caf\xc3\xa9 \xf0\x9f\x98\x80"));
  v->child->string = strdup("\xff");
  assert_int_equal(engram__json_tree_check(v, "v", &is), 0);
  assert_non_null(c = engram__json_copy_block(v, buf.b, sizeof buf.b, &used));
  assert_true(json_same_tree(c, v));
  /* cJSON's append on the copy: the first child's prev is the last. */
  extra = cJSON_CreateTrue();
  assert_true(cJSON_AddItemToArray(c, extra));
  assert_int_equal(cJSON_GetArraySize(c), 2);
  assert_ptr_equal(c->child->prev, extra);
  assert_ptr_equal(cJSON_DetachItemFromArray(c, 1), extra);
  cJSON_Delete(extra);
  /* Too small a block (the copy above is done with: these write over it): NULL, whichever part does not fit. */
  assert_null(engram__json_copy_block(v, buf.b, sizeof(cJSON), &used));
  assert_null(engram__json_copy_block(v, buf.b, 2 * sizeof(cJSON) + 4, &used));
  assert_non_null(engram__json_copy_block(v, buf.b, used, &used));
  cJSON_Delete(v);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(hand_written_edges),
      cmocka_unit_test(random_trees_and_cuts),
      cmocka_unit_test(allocation_failures),
      cmocka_unit_test(copy_block_keeps_the_rules),
      cmocka_unit_test(take_read_hands_over_only_owned_blocks),
      cmocka_unit_test(printer_numbers),
      cmocka_unit_test(printer_trees),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
