/*
 * pattern.c — the one key-pattern matcher every source shares (list_keys and search's query.pattern).
 *
 * Patterns are Redis-style globs: `*` matches any run of characters, `?` one character, `[abc]` `[a-z]` one
 * character of a class, `[^a]` or `[!a]` one character outside it, and `\` makes the next byte literal (also
 * inside a class). A `]` right after `[` or `[^` closes the class (so `[]` matches nothing and `[^]` any one
 * character); write `\]` for a literal one. A `-` first or last in a class is literal, and a reversed range
 * such as `[z-a]` means `[a-z]` (as in Redis). Characters are UTF-8: `?` and classes consume one whole UTF-8
 * character (an invalid byte counts as one character of its own), ranges compare code points, and `*`
 * advances character by character; literals compare bytewise, so matching is case-sensitive.
 *
 * A pattern with no unescaped `*`, `?` or `[` matches as a substring of the key after its escapes are resolved
 * (BeamMePrompty's ETS rule): "user" matches "a-user-1", "a\*b" matches "xa*by". NULL or "" matches
 * everything. Globs are anchored at both ends. An invalid pattern (an unterminated `[` or a trailing lone `\`)
 * matches nothing; engram_pattern_check reports it as ENGRAM_EINVAL so the core rejects it at submit time.
 *
 * Matching is the classic iterative star-backtracking algorithm: it remembers only the last `*` and, on a
 * mismatch, lets that star swallow one more character. Earlier stars never need revisiting, so the worst case
 * is O(pattern × key) with no recursion and no allocation, whatever the user sends.
 */
#include <stdint.h>
#include <string.h>

#include "engram/source.h"

/* Decodes the character at s (n ≥ 1 bytes available) leniently: a well-formed UTF-8 sequence yields its code
 * point, anything else yields 0x110000 + the byte, one byte long, so that no invalid byte collides with a real
 * code point. Returns the length in bytes. */
static size_t char_at(const unsigned char *s, size_t n, uint32_t *cp) {
  unsigned c = s[0];
  size_t need, i;
  uint32_t v, min;
  if (c < 0x80) {
    *cp = c;
    return 1;
  }
  if (c >= 0xC2 && c <= 0xDF) need = 2, v = c & 0x1F, min = 0x80;
  else if (c >= 0xE0 && c <= 0xEF) need = 3, v = c & 0x0F, min = 0x800;
  else if (c >= 0xF0 && c <= 0xF4) need = 4, v = c & 0x07, min = 0x10000;
  else goto invalid;
  if (n < need) goto invalid;
  for (i = 1; i < need; i++) {
    if ((s[i] & 0xC0) != 0x80) goto invalid;
    v = (v << 6) | (s[i] & 0x3F);
  }
  if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) goto invalid;
  *cp = v;
  return need;
invalid:
  *cp = 0x110000u + c;
  return 1;
}

/* Parses the class whose body starts at p (just after the `[`) and tests the character c against it. Returns
 * the position after the closing `]`, with *matched set, or NULL when the class is unterminated or ends in a
 * lone `\`. */
static const unsigned char *class_match(const unsigned char *p, const unsigned char *end, uint32_t c,
                                        int *matched) {
  int neg = 0, hit = 0;
  if (p < end && (*p == '^' || *p == '!')) {
    neg = 1;
    p++;
  }
  for (;;) {
    uint32_t lo, hi;
    if (p >= end) return NULL;
    if (*p == ']') {
      p++;
      break;
    }
    if (*p == '\\' && ++p >= end) return NULL;
    p += char_at(p, (size_t)(end - p), &lo);
    hi = lo;
    /* A range needs a character after the `-` that is not the closing bracket. */
    if (end - p >= 2 && p[0] == '-' && p[1] != ']') {
      p++;
      if (*p == '\\' && ++p >= end) return NULL;
      p += char_at(p, (size_t)(end - p), &hi);
      if (lo > hi) {
        uint32_t t = lo;
        lo = hi;
        hi = t;
      }
    }
    if (c >= lo && c <= hi) hit = 1;
  }
  *matched = hit != neg;
  return p;
}

int engram_pattern_check(const char *pattern) {
  const unsigned char *p, *end;
  int dummy;
  if (pattern == NULL) return 0;
  p = (const unsigned char *)pattern;
  end = p + strlen(pattern);
  while (p < end) {
    if (*p == '\\') {
      if (p + 1 >= end) return ENGRAM_EINVAL;
      p += 2;
    } else if (*p == '[') {
      p = class_match(p + 1, end, 0, &dummy);
      if (p == NULL) return ENGRAM_EINVAL;
    } else {
      p++;
    }
  }
  return 0;
}

int engram_pattern_is_glob(const char *pattern) {
  const char *p;
  if (pattern == NULL) return 0;
  for (p = pattern; *p != '\0'; p++) {
    if (*p == '\\') {
      if (p[1] == '\0') break;
      p++;
    } else if (*p == '*' || *p == '?' || *p == '[') {
      return 1;
    }
  }
  return 0;
}

/*
 * Matches the glob [p, pend) against [s, send). With unanchored set, the pattern behaves as if wrapped in
 * `*...*` (the substring rule), without copying it. Returns 1 on a match, 0 otherwise (also for an invalid
 * pattern).
 */
static int glob_match(const unsigned char *p, const unsigned char *pend, const unsigned char *s,
                      const unsigned char *send, int unanchored) {
  const unsigned char *star_p = NULL, *star_s = NULL;
  if (unanchored) {
    star_p = p;
    star_s = s;
  }
  for (;;) {
    const unsigned char *np = NULL; /* the pattern after the element that matched, or NULL on a mismatch */
    size_t adv = 0;                 /* the bytes of s the element consumed */
    if (p < pend && *p == '*') {
      while (p < pend && *p == '*') p++;
      if (p == pend) return 1; /* A trailing star swallows the rest. */
      star_p = p;
      star_s = s;
      continue;
    }
    if (p == pend) {
      if (s == send || unanchored) return 1;
    } else if (s < send) {
      uint32_t c;
      int matched;
      switch (*p) {
        case '?':
          adv = char_at(s, (size_t)(send - s), &c);
          np = p + 1;
          break;
        case '[':
          adv = char_at(s, (size_t)(send - s), &c);
          np = class_match(p + 1, pend, c, &matched);
          if (np == NULL) return 0; /* Unterminated class: the pattern is invalid. */
          if (!matched) np = NULL;
          break;
        case '\\':
          if (p + 1 >= pend) return 0; /* Trailing lone backslash: invalid. */
          if (p[1] == *s) np = p + 2, adv = 1;
          break;
        default:
          if (*p == *s) np = p + 1, adv = 1;
          break;
      }
    }
    if (np != NULL) {
      p = np;
      s += adv;
      continue;
    }
    /* Mismatch: let the last star swallow one more character, or fail when there is none or s is spent. */
    if (star_p == NULL || star_s >= send) return 0;
    {
      uint32_t c;
      star_s += char_at(star_s, (size_t)(send - star_s), &c);
    }
    p = star_p;
    s = star_s;
  }
}

int engram_pattern_match(const char *pattern, const char *s, size_t len) {
  const unsigned char *p = (const unsigned char *)pattern;
  if (pattern == NULL || *pattern == '\0') return 1;
  if (s == NULL) {
    s = "";
    len = 0;
  }
  return glob_match(p, p + strlen(pattern), (const unsigned char *)s, (const unsigned char *)s + len,
                    !engram_pattern_is_glob(pattern));
}

/*
 * The literal prefix every key the pattern matches starts with. A glob yields its characters up to the first
 * unescaped glob character, escapes resolved ("user\*:*" → "user*:"). A substring pattern (no glob character)
 * and NULL yield "": a substring may sit anywhere in the key, so no range scan can narrow it.
 */
int engram_pattern_prefix(const char *pattern, char **out) {
  const char *p;
  char *buf;
  size_t n = 0;
  *out = NULL;
  if (engram_pattern_check(pattern) != 0) return ENGRAM_EINVAL;
  if (!engram_pattern_is_glob(pattern)) {
    buf = engram_strdup("");
    if (buf == NULL) return ENGRAM_ENOMEM;
    *out = buf;
    return 0;
  }
  buf = engram_malloc(strlen(pattern) + 1);
  if (buf == NULL) return ENGRAM_ENOMEM;
  for (p = pattern; *p != '\0' && *p != '*' && *p != '?' && *p != '['; p++) {
    if (*p == '\\') p++; /* engram_pattern_check guarantees a byte follows. */
    buf[n++] = *p;
  }
  buf[n] = '\0';
  *out = buf;
  return 0;
}
