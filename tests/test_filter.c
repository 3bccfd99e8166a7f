/*
 * test_filter.c — unit tests for the shared metadata-filter evaluator (src/shared/filter.c): plain-value equality,
 * every operator, typed comparison (numbers as numbers, strings bytewise, mismatches), missing and nested
 * fields, AND across operators and fields, numbers inside arrays and objects (compared exactly, infinities
 * included), and the exact messages engram_filter_check gives for bad filters.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engram/source.h"

/* Parses filter and metadata (NULL stays NULL), asserts the filter is valid and returns the match result. */
static int fm(const char *filter, const char *metadata) {
  cJSON *f = filter != NULL ? cJSON_Parse(filter) : NULL;
  cJSON *md = metadata != NULL ? cJSON_Parse(metadata) : NULL;
  char err[256];
  int r;
  if (filter != NULL) assert_non_null(f);
  if (metadata != NULL) assert_non_null(md);
  assert_int_equal(engram_filter_check(f, err, sizeof err), 0);
  assert_string_equal(err, "");
  r = engram_filter_match(f, md);
  cJSON_Delete(f);
  cJSON_Delete(md);
  return r;
}

/* Asserts that filter is rejected with exactly the message want. */
static void bad(const char *filter, const char *want) {
  cJSON *f = cJSON_Parse(filter);
  char err[256];
  assert_non_null(f);
  memset(err, 'x', sizeof err);
  assert_int_equal(engram_filter_check(f, err, sizeof err), ENGRAM_EINVAL);
  assert_string_equal(err, want);
  assert_int_equal(engram_filter_check(f, NULL, 0), ENGRAM_EINVAL);
  cJSON_Delete(f);
}

static void test_null_and_empty(void **state) {
  (void)state;
  assert_true(fm(NULL, NULL));
  assert_true(fm(NULL, "{\"a\":1}"));
  assert_true(fm("{}", NULL));
  assert_true(fm("{}", "{\"a\":1}"));
  assert_false(fm("{\"a\":1}", NULL));
  assert_false(fm("{\"a\":1}", "[1]")); /* Non-object metadata behaves as {}. */
  assert_true(fm("{\"a\":{\"$exists\":false}}", NULL));
}

static void test_plain_equality(void **state) {
  (void)state;
  assert_true(fm("{\"a\":1}", "{\"a\":1}"));
  assert_true(fm("{\"a\":1}", "{\"a\":1.0}"));
  assert_false(fm("{\"a\":1}", "{\"a\":2}"));
  assert_false(fm("{\"a\":1}", "{\"a\":\"1\"}"));
  assert_false(fm("{\"a\":1}", "{\"a\":true}"));
  assert_true(fm("{\"a\":\"x\"}", "{\"a\":\"x\",\"b\":2}"));
  assert_false(fm("{\"a\":\"x\"}", "{\"a\":\"X\"}"));
  assert_true(fm("{\"a\":true}", "{\"a\":true}"));
  assert_false(fm("{\"a\":true}", "{\"a\":false}"));
  assert_false(fm("{\"a\":true}", "{\"a\":1}"));
  assert_true(fm("{\"a\":null}", "{\"a\":null}"));
  assert_false(fm("{\"a\":null}", "{}"));  /* A missing field is not null. */
  assert_false(fm("{\"a\":null}", "{\"a\":0}"));
  assert_false(fm("{\"a\":1}", "{\"b\":1}"));
  /* Objects and arrays compare deeply: members in any order, elements in order. */
  assert_true(fm("{\"a\":{\"x\":1,\"y\":[1,\"z\"]}}", "{\"a\":{\"y\":[1,\"z\"],\"x\":1}}"));
  assert_false(fm("{\"a\":{\"x\":1}}", "{\"a\":{\"x\":1,\"y\":2}}"));
  assert_true(fm("{\"a\":[1,2]}", "{\"a\":[1,2]}"));
  assert_false(fm("{\"a\":[1,2]}", "{\"a\":[2,1]}"));
  assert_false(fm("{\"a\":[1]}", "{\"a\":1}"));
  assert_false(fm("{\"tags\":\"x\"}", "{\"tags\":[\"x\",\"y\"]}")); /* No implicit array membership. */
  assert_true(fm("{\"a\":{}}", "{\"a\":{}}"));      /* {} is a plain value, not an operator object. */
  assert_false(fm("{\"a\":{}}", "{\"a\":{\"x\":1}}"));
}

static void test_eq_ne(void **state) {
  (void)state;
  assert_true(fm("{\"n\":{\"$eq\":3}}", "{\"n\":3}"));
  assert_false(fm("{\"n\":{\"$eq\":3}}", "{\"n\":\"3\"}"));
  assert_false(fm("{\"n\":{\"$eq\":3}}", "{}"));
  assert_true(fm("{\"n\":{\"$eq\":[1,{\"b\":2}]}}", "{\"n\":[1,{\"b\":2}]}"));
  assert_true(fm("{\"n\":{\"$eq\":{\"$gt\":1}}}", "{\"n\":{\"$gt\":1}}")); /* $eq takes any value literally. */
  assert_false(fm("{\"n\":{\"$ne\":3}}", "{\"n\":3}"));
  assert_true(fm("{\"n\":{\"$ne\":3}}", "{\"n\":4}"));
  assert_true(fm("{\"n\":{\"$ne\":3}}", "{\"n\":\"3\"}")); /* A type mismatch is "not equal". */
  assert_true(fm("{\"n\":{\"$ne\":3}}", "{}"));          /* So is a missing field. */
  assert_true(fm("{\"n\":{\"$ne\":null}}", "{\"n\":false}"));
  assert_false(fm("{\"n\":{\"$ne\":null}}", "{\"n\":null}"));
  assert_true(fm("{\"b\":{\"$eq\":false}}", "{\"b\":false}"));
  assert_true(fm("{\"b\":{\"$ne\":false}}", "{\"b\":true}"));
}

static void test_order_numbers(void **state) {
  (void)state;
  assert_true(fm("{\"n\":{\"$gt\":9}}", "{\"n\":10}"));    /* Numerically, although "10" < "9" as text. */
  assert_false(fm("{\"n\":{\"$gt\":10}}", "{\"n\":9}"));
  assert_false(fm("{\"n\":{\"$gt\":10}}", "{\"n\":10}"));
  assert_true(fm("{\"n\":{\"$gte\":10}}", "{\"n\":10}"));
  assert_true(fm("{\"n\":{\"$lt\":10}}", "{\"n\":3}"));
  assert_false(fm("{\"n\":{\"$lt\":3}}", "{\"n\":3}"));
  assert_true(fm("{\"n\":{\"$lte\":3}}", "{\"n\":3}"));
  assert_true(fm("{\"n\":{\"$gt\":-1.5}}", "{\"n\":-1.25}"));
  assert_true(fm("{\"n\":{\"$lt\":1e3}}", "{\"n\":999.999}"));
  /* Type mismatches never match an order operator. */
  assert_false(fm("{\"n\":{\"$gt\":9}}", "{\"n\":\"10\"}"));
  assert_false(fm("{\"n\":{\"$lt\":9}}", "{\"n\":\"1\"}"));
  assert_false(fm("{\"n\":{\"$gt\":0}}", "{\"n\":true}"));
  assert_false(fm("{\"n\":{\"$gte\":0}}", "{\"n\":null}"));
  assert_false(fm("{\"n\":{\"$lte\":0}}", "{\"n\":[0]}"));
  assert_false(fm("{\"n\":{\"$gt\":0}}", "{}"));
  assert_false(fm("{\"n\":{\"$lt\":0}}", "{}"));
}

static void test_order_strings(void **state) {
  (void)state;
  assert_false(fm("{\"s\":{\"$gt\":\"9\"}}", "{\"s\":\"10\"}")); /* Bytewise: "10" < "9". */
  assert_true(fm("{\"s\":{\"$lt\":\"9\"}}", "{\"s\":\"10\"}"));
  assert_true(fm("{\"s\":{\"$lt\":\"abd\"}}", "{\"s\":\"abc\"}"));
  assert_true(fm("{\"s\":{\"$lt\":\"abc\"}}", "{\"s\":\"ab\"}")); /* A prefix sorts first. */
  assert_false(fm("{\"s\":{\"$gt\":\"abc\"}}", "{\"s\":\"ab\"}"));
  assert_true(fm("{\"s\":{\"$gte\":\"abc\"}}", "{\"s\":\"abc\"}"));
  assert_true(fm("{\"s\":{\"$lte\":\"abc\"}}", "{\"s\":\"abc\"}"));
  assert_true(fm("{\"s\":{\"$lt\":\"a\"}}", "{\"s\":\"Z\"}"));   /* Upper case sorts before lower case. */
  assert_true(fm("{\"s\":{\"$gt\":\"z\"}}", "{\"s\":\"é\"}"));   /* UTF-8 bytes ≥ 0x80 sort after ASCII. */
  assert_true(fm("{\"d\":{\"$gte\":\"2024-01-01\",\"$lt\":\"2025-01-01\"}}", "{\"d\":\"2024-06-30\"}"));
  assert_false(fm("{\"s\":{\"$gt\":\"1\"}}", "{\"s\":9}"));
}

static void test_in_nin(void **state) {
  (void)state;
  assert_true(fm("{\"c\":{\"$in\":[\"red\",\"blue\"]}}", "{\"c\":\"blue\"}"));
  assert_false(fm("{\"c\":{\"$in\":[\"red\",\"blue\"]}}", "{\"c\":\"green\"}"));
  assert_false(fm("{\"c\":{\"$in\":[\"red\",\"blue\"]}}", "{}"));
  assert_false(fm("{\"c\":{\"$in\":[]}}", "{\"c\":1}"));
  assert_true(fm("{\"c\":{\"$in\":[1,\"a\",true,null,[1,2]]}}", "{\"c\":true}"));
  assert_true(fm("{\"c\":{\"$in\":[1,\"a\",true,null,[1,2]]}}", "{\"c\":[1,2]}"));
  assert_true(fm("{\"c\":{\"$in\":[1,\"a\",true,null,[1,2]]}}", "{\"c\":null}"));
  assert_false(fm("{\"c\":{\"$in\":[1,2]}}", "{\"c\":\"1\"}"));
  assert_true(fm("{\"c\":{\"$nin\":[\"red\",\"blue\"]}}", "{\"c\":\"green\"}"));
  assert_false(fm("{\"c\":{\"$nin\":[\"red\",\"blue\"]}}", "{\"c\":\"red\"}"));
  assert_true(fm("{\"c\":{\"$nin\":[\"red\",\"blue\"]}}", "{}"));   /* Missing matches $nin. */
  assert_true(fm("{\"c\":{\"$nin\":[1,2]}}", "{\"c\":\"1\"}"));     /* A type mismatch matches $nin. */
  assert_true(fm("{\"c\":{\"$nin\":[]}}", "{\"c\":1}"));
}

static void test_exists(void **state) {
  (void)state;
  assert_true(fm("{\"a\":{\"$exists\":true}}", "{\"a\":0}"));
  assert_true(fm("{\"a\":{\"$exists\":true}}", "{\"a\":null}")); /* Present, even as null. */
  assert_false(fm("{\"a\":{\"$exists\":true}}", "{\"b\":1}"));
  assert_false(fm("{\"a\":{\"$exists\":false}}", "{\"a\":null}"));
  assert_true(fm("{\"a\":{\"$exists\":false}}", "{\"b\":1}"));
}

static void test_and(void **state) {
  (void)state;
  assert_true(fm("{\"n\":{\"$gt\":1,\"$lt\":5}}", "{\"n\":3}"));
  assert_false(fm("{\"n\":{\"$gt\":1,\"$lt\":5}}", "{\"n\":5}"));
  assert_false(fm("{\"n\":{\"$gt\":1,\"$lt\":5}}", "{\"n\":1}"));
  assert_true(fm("{\"n\":{\"$exists\":true,\"$ne\":2}}", "{\"n\":3}"));
  assert_false(fm("{\"n\":{\"$exists\":true,\"$ne\":2}}", "{}"));
  assert_true(fm("{\"a\":1,\"b\":\"x\",\"c\":{\"$in\":[true]}}", "{\"a\":1,\"b\":\"x\",\"c\":true,\"d\":0}"));
  assert_false(fm("{\"a\":1,\"b\":\"x\",\"c\":{\"$in\":[true]}}", "{\"a\":1,\"b\":\"y\",\"c\":true}"));
  assert_false(fm("{\"a\":1,\"b\":\"x\"}", "{\"a\":1}"));
}

static void test_nested_fields(void **state) {
  (void)state;
  assert_true(fm("{\"a.b\":1}", "{\"a\":{\"b\":1}}"));
  assert_false(fm("{\"a.b\":1}", "{\"a\":{\"b\":2}}"));
  assert_true(fm("{\"a.b.c\":{\"$gte\":10}}", "{\"a\":{\"b\":{\"c\":12}}}"));
  assert_false(fm("{\"a.b\":1}", "{\"a.b\":1}"));            /* A dotted name is always a path. */
  assert_false(fm("{\"a.b\":1}", "{\"a\":[{\"b\":1}]}"));    /* Paths do not enter arrays. */
  assert_false(fm("{\"a.b\":{\"$exists\":true}}", "{\"a\":5}"));
  assert_true(fm("{\"a.b\":{\"$exists\":false}}", "{\"a\":5}"));
  assert_true(fm("{\"a.x\":{\"$ne\":1}}", "{\"a\":{\"b\":1}}"));
  assert_true(fm("{\"a\":{\"b\":1}}", "{\"a\":{\"b\":1}}")); /* Plain object value: deep equality. */
  assert_true(fm("{\"user.tags\":{\"$eq\":[\"x\"]}}", "{\"user\":{\"tags\":[\"x\"]}}"));
}

/* Numbers inside arrays and objects compare as they do at the top level (==): cJSON_Compare, used before, took
 * numbers within a relative epsilon as equal and an infinity as unequal to itself, so a filter copied from the
 * metadata, {"a": [1e400]}, did not match it (found by tests/fuzz/fuzz_filter). */
static void test_nested_numbers(void **state) {
  (void)state;
  assert_true(fm("{\"a\":1e400}", "{\"a\":1e400}"));
  assert_true(fm("{\"a\":[1e400]}", "{\"a\":[1e400]}"));
  assert_true(fm("{\"a\":{\"$eq\":{\"x\":-1e400}}}", "{\"a\":{\"x\":-1e400}}"));
  assert_false(fm("{\"a\":{\"$ne\":{\"x\":-1e400}}}", "{\"a\":{\"x\":-1e400}}"));
  assert_true(fm("{\"a\":{\"$in\":[[1e400]]}}", "{\"a\":[1e400]}"));
  assert_false(fm("{\"a\":{\"$nin\":[[1e400]]}}", "{\"a\":[1e400]}"));
  assert_true(fm("{\"a\":{\"$eq\":{\"$lt\":2e308}}}", "{\"a\":{\"$lt\":2e308}}"));
  assert_false(fm("{\"a\":1}", "{\"a\":1.0000000000000002}"));
  assert_false(fm("{\"a\":[1]}", "{\"a\":[1.0000000000000002]}"));
  assert_false(fm("{\"a\":{\"x\":1}}", "{\"a\":{\"x\":1.0000000000000002}}"));
  assert_true(fm("{\"a\":[0]}", "{\"a\":[-0]}"));
  /* Shape rules unchanged: members in any order, elements in order, types strict. */
  assert_true(fm("{\"a\":{\"x\":[1,{\"y\":null}],\"z\":true}}", "{\"a\":{\"z\":true,\"x\":[1,{\"y\":null}]}}"));
  assert_false(fm("{\"a\":{\"x\":[1,{\"y\":null}]}}", "{\"a\":{\"x\":[1,{\"y\":false}]}}"));
  assert_false(fm("{\"a\":[1,2]}", "{\"a\":[1,2,3]}"));
  assert_false(fm("{\"a\":{\"x\":1}}", "{\"a\":{\"x\":1,\"y\":1}}"));
  assert_false(fm("{\"a\":[\"1\"]}", "{\"a\":[1]}"));
}

static void test_bad_filters(void **state) {
  char small[12];
  cJSON *f, *md;
  (void)state;
  bad("[]", "filter must be a JSON object");
  bad("\"x\"", "filter must be a JSON object");
  bad("{\"age\":{\"$gt\":true}}", "filter field \"age\": $gt needs a number or a string");
  bad("{\"age\":{\"$gte\":null}}", "filter field \"age\": $gte needs a number or a string");
  bad("{\"age\":{\"$lt\":[1]}}", "filter field \"age\": $lt needs a number or a string");
  bad("{\"age\":{\"$lte\":{}}}", "filter field \"age\": $lte needs a number or a string");
  bad("{\"c\":{\"$in\":\"red\"}}", "filter field \"c\": $in needs an array");
  bad("{\"c\":{\"$nin\":{}}}", "filter field \"c\": $nin needs an array");
  bad("{\"c\":{\"$exists\":1}}", "filter field \"c\": $exists needs true or false");
  bad("{\"c\":{\"$foo\":1}}", "filter field \"c\": unknown operator $foo");
  bad("{\"c\":{\"$gt\":1,\"$regex\":\"x\"}}", "filter field \"c\": unknown operator $regex");
  bad("{\"c\":{\"$gt\":1,\"x\":2}}", "filter field \"c\": operator object mixes operators with the plain key \"x\"");
  bad("{\"$and\":[]}", "filter field \"$and\": field names cannot start with '$' (reserved for operators)");
  bad("{\"\":1}", "filter field \"\": empty field name");
  bad("{\"a..b\":1}", "filter field \"a..b\": empty segment in dotted field name");
  bad("{\".a\":1}", "filter field \".a\": empty segment in dotted field name");
  bad("{\"a.\":1}", "filter field \"a.\": empty segment in dotted field name");
  /* A later field's error is found after earlier valid ones. */
  bad("{\"ok\":1,\"n\":{\"$in\":3}}", "filter field \"n\": $in needs an array");
  /* A short buffer is truncated, never overrun. */
  f = cJSON_Parse("{\"age\":{\"$gt\":true}}");
  assert_int_equal(engram_filter_check(f, small, sizeof small), ENGRAM_EINVAL);
  assert_int_equal(strlen(small), sizeof small - 1);
  assert_memory_equal(small, "filter fiel", sizeof small);
  cJSON_Delete(f);
  /* An unchecked bad filter never matches, even where its field is present. */
  f = cJSON_Parse("{\"age\":{\"$foo\":1}}");
  md = cJSON_Parse("{\"age\":1}");
  assert_false(engram_filter_match(f, md));
  cJSON_Delete(f);
  cJSON_Delete(md);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_null_and_empty),
      cmocka_unit_test(test_plain_equality),
      cmocka_unit_test(test_eq_ne),
      cmocka_unit_test(test_order_numbers),
      cmocka_unit_test(test_order_strings),
      cmocka_unit_test(test_in_nin),
      cmocka_unit_test(test_exists),
      cmocka_unit_test(test_and),
      cmocka_unit_test(test_nested_fields),
      cmocka_unit_test(test_nested_numbers),
      cmocka_unit_test(test_bad_filters),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
