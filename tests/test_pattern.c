/*
 * test_pattern.c — unit tests for the shared key-pattern matcher (src/shared/pattern.c): the glob elements and their
 * escapes, the substring rule for patterns without a glob character, UTF-8 characters under `?` and classes,
 * invalid patterns, the literal prefix used for range scans, allocation failures, and linear-time matching of
 * patterns that would make a naive backtracking matcher explode.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "engram/source.h"

static int m(const char *pattern, const char *s) { return engram_pattern_match(pattern, s, strlen(s)); }

static void test_empty_matches_everything(void **state) {
  (void)state;
  assert_true(m(NULL, ""));
  assert_true(m(NULL, "anything"));
  assert_true(m("", ""));
  assert_true(m("", "anything"));
  assert_true(engram_pattern_match("abc", NULL, 0) == 0);
  assert_true(engram_pattern_match("*", NULL, 0));
}

static void test_substring_rule(void **state) {
  (void)state;
  assert_true(m("user", "user"));
  assert_true(m("user", "a-user-1"));
  assert_true(m("user", "username"));
  assert_true(m("user", "my-user"));
  assert_false(m("user", "User"));  /* Case-sensitive. */
  assert_false(m("user", "use"));
  assert_false(m("user", ""));
  assert_true(m("aab", "aaab"));    /* A partial match must not skip the real one. */
  /* Escapes resolve before the substring test, and escaped glob characters stay literal. */
  assert_true(m("a\\*b", "xa*by"));
  assert_false(m("a\\*b", "xaXby"));
  assert_false(m("a\\*b", "xaby"));
  assert_true(m("\\?", "what?"));
  assert_false(m("\\?", "what"));
  assert_true(m("\\[x\\]", "a[x]b"));
  assert_false(m("\\[x\\]", "ax"));
  assert_true(m("a\\\\b", "a\\b"));
  assert_true(m("\\q", "q"));       /* Escaping an ordinary character is harmless. */
  assert_true(m("]", "a]b"));       /* A lone ] is not a glob character. */
  assert_true(m("é", "café"));
  assert_false(m("x", "café"));
  /* The substring rule is bytewise over the given length, not the C string. */
  assert_true(engram_pattern_match("bc", "abcd", 3));
  assert_false(engram_pattern_match("cd", "abcd", 3));
}

static void test_star(void **state) {
  (void)state;
  assert_true(m("*", ""));
  assert_true(m("*", "abc"));
  assert_true(m("**", "abc"));
  assert_true(m("user:*", "user:"));
  assert_true(m("user:*", "user:42"));
  assert_false(m("user:*", "xuser:42")); /* Globs are anchored at both ends. */
  assert_false(m("user:*", "user"));
  assert_true(m("*:42", "user:42"));
  assert_false(m("*:42", "user:421"));
  assert_true(m("a*b*c", "abc"));
  assert_true(m("a*b*c", "aXXbYYc"));
  assert_true(m("a*b*c", "abcbc"));
  assert_false(m("a*b*c", "aXXbYYcd"));
  assert_true(m("*a*", "banana"));
  assert_false(m("*x*", "banana"));
  assert_true(m("*ana", "banana"));
  assert_true(m("*é", "café"));
}

static void test_question_mark(void **state) {
  (void)state;
  assert_true(m("a?c", "abc"));
  assert_false(m("a?c", "ac"));
  assert_false(m("a?c", "abbc"));
  assert_true(m("???", "abc"));
  assert_false(m("???", "ab"));
  /* One UTF-8 character, whatever its length in bytes. */
  assert_true(m("caf?", "café"));
  assert_true(m("?", "é"));
  assert_true(m("?", "\xF0\x9F\x98\x80")); /* U+1F600, four bytes */
  assert_false(m("??", "é"));
  assert_true(m("?b", "éb"));
  assert_true(m("*?b", "éb"));
  /* An invalid byte is a character of its own. */
  assert_true(engram_pattern_match("a?c", "a\xFF" "c", 3));
  assert_true(engram_pattern_match("??", "\xC3\x28", 2)); /* C3 lacks its continuation: two characters */
}

static void test_classes(void **state) {
  (void)state;
  assert_true(m("[abc]x", "bx"));
  assert_false(m("[abc]x", "dx"));
  assert_true(m("key[0-9]", "key7"));
  assert_false(m("key[0-9]", "keyx"));
  assert_false(m("key[0-9]", "key10"));
  assert_true(m("[9-0]", "5"));         /* A reversed range is the same range. */
  assert_true(m("[a-cx-z]", "y"));
  assert_false(m("[a-cx-z]", "m"));
  assert_true(m("[^a]b", "cb"));
  assert_false(m("[^a]b", "ab"));
  assert_true(m("[!a]b", "cb"));
  assert_false(m("[!a]b", "ab"));
  assert_false(m("[^a-z]", "q"));
  assert_true(m("[^a-z]", "Q"));
  /* Classes consume one UTF-8 character and ranges compare code points. */
  assert_true(m("[^a]b", "éb"));
  assert_true(m("caf[éè]", "café"));
  assert_false(m("caf[éè]", "cafe"));
  assert_true(m("[à-ï]", "ê"));
  assert_false(m("[à-ï]", "z"));
  /* ] right after [ or [^ closes the class: [] matches nothing, [^] any one character. */
  assert_false(m("a[]", "a]"));
  assert_false(m("a[]", "a"));
  assert_true(m("a[^]", "ax"));
  assert_false(m("a[^]", "a"));
  /* A - first or last is literal. */
  assert_true(m("[a-]", "-"));
  assert_true(m("[a-]", "a"));
  assert_false(m("[a-]", "b"));
  assert_true(m("[-a]", "-"));
  /* Escapes inside a class. */
  assert_true(m("[\\]]", "]"));
  assert_true(m("[\\]a]", "a"));
  assert_true(m("[\\\\]", "\\"));
  assert_true(m("[\\-]", "-"));
  assert_true(m("[\\^a]", "^"));
  assert_true(m("[\\*]", "*"));
  assert_false(m("[\\*]", "x"));
  assert_true(m("[a\\-z]", "-"));
  assert_false(m("[a\\-z]", "m"));     /* An escaped - does not make a range. */
  assert_true(m("[*?]", "?"));          /* Glob characters are literal inside a class. */
}

static void test_escapes_in_globs(void **state) {
  (void)state;
  assert_true(m("\\**", "*abc"));
  assert_false(m("\\**", "abc"));
  assert_true(m("a\\?*", "a?b"));
  assert_false(m("a\\?*", "ab"));
  assert_true(m("\\[*\\]", "[x]"));
  assert_false(m("\\[*\\]", "x"));
  assert_true(m("*\\\\", "dir\\"));
  assert_false(m("*\\\\", "dir"));
  assert_true(m("*\\]", "a]"));
}

static void test_is_glob(void **state) {
  (void)state;
  assert_false(engram_pattern_is_glob(NULL));
  assert_false(engram_pattern_is_glob(""));
  assert_false(engram_pattern_is_glob("user"));
  assert_true(engram_pattern_is_glob("user*"));
  assert_true(engram_pattern_is_glob("?"));
  assert_true(engram_pattern_is_glob("a[bc]"));
  assert_false(engram_pattern_is_glob("a\\*"));
  assert_false(engram_pattern_is_glob("\\?\\["));
  assert_false(engram_pattern_is_glob("a]"));
  assert_true(engram_pattern_is_glob("\\\\*")); /* An escaped backslash leaves the star unescaped. */
  assert_false(engram_pattern_is_glob("a\\"));
}

static void test_check(void **state) {
  (void)state;
  assert_int_equal(engram_pattern_check(NULL), 0);
  assert_int_equal(engram_pattern_check(""), 0);
  assert_int_equal(engram_pattern_check("a*b?[c-d][^e]\\*"), 0);
  assert_int_equal(engram_pattern_check("[]"), 0);
  assert_int_equal(engram_pattern_check("]"), 0);
  assert_int_equal(engram_pattern_check("a\\\\"), 0);
  assert_int_equal(engram_pattern_check("[abc"), ENGRAM_EINVAL);
  assert_int_equal(engram_pattern_check("x[^"), ENGRAM_EINVAL);
  assert_int_equal(engram_pattern_check("["), ENGRAM_EINVAL);
  assert_int_equal(engram_pattern_check("[a\\]"), ENGRAM_EINVAL); /* The ] is escaped: still open. */
  assert_int_equal(engram_pattern_check("[a\\"), ENGRAM_EINVAL);
  assert_int_equal(engram_pattern_check("abc\\"), ENGRAM_EINVAL);
  assert_int_equal(engram_pattern_check("\\"), ENGRAM_EINVAL);
  /* Invalid patterns match nothing, as globs or as substrings. */
  assert_false(m("[abc", "[abc"));
  assert_false(m("*[abc", "x[abc"));
  assert_false(m("abc\\", "abc\\"));
  assert_false(m("abc\\", "abc"));
}

static void test_prefix(void **state) {
  char *p = (char *)"sentinel";
  (void)state;
  assert_int_equal(engram_pattern_prefix("user:*", &p), 0);
  assert_string_equal(p, "user:");
  engram_free(p);
  assert_int_equal(engram_pattern_prefix("us\\*er?x", &p), 0);
  assert_string_equal(p, "us*er");
  engram_free(p);
  assert_int_equal(engram_pattern_prefix("a\\[b[cd]*", &p), 0);
  assert_string_equal(p, "a[b");
  engram_free(p);
  assert_int_equal(engram_pattern_prefix("*suffix", &p), 0);
  assert_string_equal(p, "");
  engram_free(p);
  /* A substring pattern may match anywhere, so it narrows nothing. */
  assert_int_equal(engram_pattern_prefix("user", &p), 0);
  assert_string_equal(p, "");
  engram_free(p);
  assert_int_equal(engram_pattern_prefix(NULL, &p), 0);
  assert_string_equal(p, "");
  engram_free(p);
  assert_int_equal(engram_pattern_prefix("us[er", &p), ENGRAM_EINVAL);
  assert_null(p);
}

/* An allocator that fails once fail_at allocations have succeeded (fail_at < 0: never). */
static long fail_at = -1;
static void *failing_malloc(size_t n) {
  if (fail_at == 0) return NULL;
  if (fail_at > 0) fail_at--;
  return malloc(n);
}
static void *failing_realloc(void *p, size_t n) {
  if (fail_at == 0) return NULL;
  if (fail_at > 0) fail_at--;
  return realloc(p, n);
}

static void test_prefix_enomem(void **state) {
  static const engram_allocator_t failing = {failing_malloc, failing_realloc, free};
  const char *patterns[] = {"user:*", "user"};
  size_t i;
  (void)state;
  assert_int_equal(engram_set_allocator(&failing), 0);
  for (i = 0; i < 2; i++) {
    char *p = (char *)"sentinel";
    fail_at = 0;
    assert_int_equal(engram_pattern_prefix(patterns[i], &p), ENGRAM_ENOMEM);
    assert_null(p);
    fail_at = 1;
    assert_int_equal(engram_pattern_prefix(patterns[i], &p), 0);
    assert_non_null(p);
    engram_free(p);
  }
  fail_at = -1;
  assert_int_equal(engram_set_allocator(NULL), 0);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Patterns that take exponential time under naive recursive backtracking finish at once here. */
static void test_no_exponential_backtracking(void **state) {
  size_t n = 20000, i;
  char *s = malloc(n + 1), pat[64];
  double t0;
  (void)state;
  assert_non_null(s);
  memset(s, 'a', n);
  s[n] = '\0';
  strcpy(pat, "a*a*a*a*a*a*a*a*a*a*a*a*b");
  t0 = now_s();
  assert_false(m(pat, s));
  assert_false(m("*?*?*?*?*?*?*?*?*?*?b", s));
  assert_false(m("*[a]*[a]*[a]*[a]*[a]*[a]*[ab]c", s));
  s[n - 1] = 'b';
  assert_true(m(pat, s));
  for (i = 0; i < n; i++) s[i] = (i % 2) ? 'b' : 'a';
  assert_false(m("*ab*ab*ab*ab*abc", s));
  /* O(pattern × key) is a few million steps here; exponential would never finish. */
  assert_true(now_s() - t0 < 2.0);
  free(s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_empty_matches_everything),
      cmocka_unit_test(test_substring_rule),
      cmocka_unit_test(test_star),
      cmocka_unit_test(test_question_mark),
      cmocka_unit_test(test_classes),
      cmocka_unit_test(test_escapes_in_globs),
      cmocka_unit_test(test_is_glob),
      cmocka_unit_test(test_check),
      cmocka_unit_test(test_prefix),
      cmocka_unit_test(test_prefix_enomem),
      cmocka_unit_test(test_no_exponential_backtracking),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
