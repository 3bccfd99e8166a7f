/*
 * fuzz_pattern.c — libFuzzer harness for the shared glob matcher (src/shared/pattern.c): engram_pattern_check,
 * engram_pattern_is_glob, engram_pattern_match and engram_pattern_prefix.
 *
 * Input: PATTERN \0 STRING — the bytes before the first NUL are the pattern, the rest (any bytes, NULs
 * included) the string it is matched against. Asserted, for every input:
 *   - check and prefix agree: check == 0 exactly when prefix returns 0 with a string, else *out stays NULL;
 *   - an invalid pattern matches nothing; a substring pattern (no glob character) has the prefix "";
 *   - the prefix invariant the range scans of sqlite/postgres/redis rely on: every string the pattern matches
 *     starts with engram_pattern_prefix — checked on STRING and on a witness string built from the pattern
 *     (literals, STRING's text for each `*`, a member of each class), which must match;
 *   - when pattern and STRING are valid UTF-8 (what the public API lets through), engram_pattern_match agrees
 *     with a reference matcher written from the documented rules: a dynamic program over code points for globs
 *     (anchored; `?` one character; classes with ranges, negation, escapes, a closing `]` right after `[`), and
 *     memmem of the unescaped pattern for substring patterns.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"

/* ---- UTF-8 ---- */

/* Decodes one character of valid UTF-8 (the caller checked). */
static size_t dec(const unsigned char *s, uint32_t *cp) {
  if (s[0] < 0x80) return *cp = s[0], 1;
  if (s[0] < 0xE0) return *cp = ((uint32_t)(s[0] & 0x1F) << 6) | (s[1] & 0x3F), 2;
  if (s[0] < 0xF0) return *cp = ((uint32_t)(s[0] & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F), 3;
  *cp = ((uint32_t)(s[0] & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) | ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
  return 4;
}

static size_t enc(uint32_t cp, unsigned char *out) {
  if (cp < 0x80) return out[0] = (unsigned char)cp, 1;
  if (cp < 0x800) return out[0] = (unsigned char)(0xC0 | (cp >> 6)), out[1] = (unsigned char)(0x80 | (cp & 0x3F)), 2;
  if (cp < 0x10000) {
    out[0] = (unsigned char)(0xE0 | (cp >> 12));
    out[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    out[2] = (unsigned char)(0x80 | (cp & 0x3F));
    return 3;
  }
  out[0] = (unsigned char)(0xF0 | (cp >> 18));
  out[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
  out[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
  out[3] = (unsigned char)(0x80 | (cp & 0x3F));
  return 4;
}

/* ---- The reference: the documented rules, over code points ---- */

typedef enum { E_LIT, E_ANY, E_STAR, E_CLASS } ekind_t;
typedef struct {
  uint32_t lo, hi;
} range_t;
typedef struct {
  ekind_t kind;
  uint32_t c;       /* E_LIT */
  int neg;          /* E_CLASS */
  size_t r0, nr;    /* E_CLASS: ranges[r0 .. r0 + nr) */
} elem_t;

typedef struct {
  elem_t *e;
  size_t n;
  range_t *r;
  size_t nr;
} glob_t_;

/* Parses a valid-UTF-8 glob into elements; returns 0, or -1 when the pattern is invalid. */
static int ref_parse(const uint32_t *p, size_t n, glob_t_ *g) {
  size_t i = 0;
  g->e = calloc(n + 1, sizeof *g->e);
  g->r = calloc(n + 1, sizeof *g->r);
  g->n = g->nr = 0;
  while (i < n) {
    elem_t *el = &g->e[g->n++];
    if (p[i] == '*') {
      el->kind = E_STAR;
      i++;
    } else if (p[i] == '?') {
      el->kind = E_ANY;
      i++;
    } else if (p[i] == '\\') {
      if (i + 1 >= n) return -1;
      el->kind = E_LIT;
      el->c = p[i + 1];
      i += 2;
    } else if (p[i] == '[') {
      el->kind = E_CLASS;
      el->r0 = g->nr;
      i++;
      if (i < n && (p[i] == '^' || p[i] == '!')) el->neg = 1, i++;
      for (;;) {
        uint32_t lo, hi;
        if (i >= n) return -1;
        if (p[i] == ']') {
          i++;
          break;
        }
        if (p[i] == '\\' && ++i >= n) return -1;
        lo = hi = p[i++];
        if (i + 1 < n && p[i] == '-' && p[i + 1] != ']') {
          i++;
          if (p[i] == '\\' && ++i >= n) return -1;
          hi = p[i++];
          if (lo > hi) {
            uint32_t t = lo;
            lo = hi;
            hi = t;
          }
        }
        g->r[g->nr].lo = lo;
        g->r[g->nr].hi = hi;
        g->nr++;
      }
      el->nr = g->nr - el->r0;
    } else {
      el->kind = E_LIT;
      el->c = p[i++];
    }
  }
  return 0;
}

static int class_has(const glob_t_ *g, const elem_t *el, uint32_t c) {
  size_t k;
  int hit = 0;
  for (k = 0; k < el->nr; k++)
    if (c >= g->r[el->r0 + k].lo && c <= g->r[el->r0 + k].hi) hit = 1;
  return hit != el->neg;
}

static int elem_one(const glob_t_ *g, const elem_t *el, uint32_t c) {
  switch (el->kind) {
    case E_LIT: return el->c == c;
    case E_ANY: return 1;
    case E_CLASS: return class_has(g, el, c);
    default: return 0;
  }
}

/* Anchored match of the elements against s[0..n): dp over (element, position), two rows. */
static int ref_glob(const glob_t_ *g, const uint32_t *s, size_t n) {
  unsigned char *next = calloc(n + 1, 1), *cur = calloc(n + 1, 1), *t;
  size_t i, j;
  int r;
  next[n] = 1; /* no elements left: matches only the end */
  for (i = g->n; i-- > 0;) {
    const elem_t *el = &g->e[i];
    if (el->kind == E_STAR) {
      cur[n] = next[n];
      for (j = n; j-- > 0;) cur[j] = next[j] || cur[j + 1];
    } else {
      cur[n] = 0;
      for (j = 0; j < n; j++) cur[j] = next[j + 1] && elem_one(g, el, s[j]);
    }
    t = next, next = cur, cur = t;
  }
  r = next[0];
  free(next);
  free(cur);
  return r;
}

static uint32_t *decode_all(const char *s, size_t len, size_t *n) {
  uint32_t *out = calloc(len + 1, sizeof *out);
  size_t i = 0;
  *n = 0;
  while (i < len) i += dec((const unsigned char *)s + i, &out[(*n)++]);
  return out;
}

/* ---- The witness: a string the pattern must match ---- */

/* A code point outside the class's ranges (for a negated class), or 0 when none of the candidates is. */
static uint32_t outside(const glob_t_ *g, const elem_t *el) {
  static const uint32_t cand[] = {'a', 'Z', '0', ' ', '~', '-', 0xE9, 0x4E2D, 0x1F600, 0x10FFFF, 0x7F, 1};
  size_t k;
  for (k = 0; k < sizeof cand / sizeof *cand; k++)
    if (class_has(g, el, cand[k])) return cand[k];
  return 0;
}

/* Builds a witness into out (room for enough bytes); returns its length, or (size_t)-1 when no witness is
 * built (a class that matches nothing, or one whose members the candidates miss). */
static size_t witness(const glob_t_ *g, const char *fill, size_t fill_len, char *out) {
  size_t i, n = 0;
  unsigned char *o = (unsigned char *)out;
  for (i = 0; i < g->n; i++) {
    const elem_t *el = &g->e[i];
    uint32_t c;
    switch (el->kind) {
      case E_LIT: n += enc(el->c, o + n); break;
      case E_ANY: o[n++] = 'q'; break;
      case E_STAR:
        memcpy(o + n, fill, fill_len);
        n += fill_len;
        break;
      case E_CLASS:
        if (!el->neg && el->nr > 0) c = g->r[el->r0].lo;
        else if ((c = outside(g, el)) == 0) return (size_t)-1;
        if (c >= 0xD800 && c <= 0xDFFF) return (size_t)-1;
        n += enc(c, o + n);
        break;
    }
  }
  return n;
}

/* ---- The harness ---- */

static void check_prefix_of(const char *pattern, const char *prefix, const char *s, size_t len, const char *what) {
  size_t pl = strlen(prefix);
  FUZZ_CHECK(len >= pl && memcmp(s, prefix, pl) == 0,
             "pattern \"%s\" matches %s \"%.*s\" (%zu bytes) which does not start with its prefix \"%s\"", pattern, what,
             (int)len, s, len, prefix);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *buf = fuzz_cstr(data, size);
  const char *pattern = buf;
  size_t plen = strlen(pattern);
  const char *s = plen < size ? buf + plen + 1 : buf + size;
  size_t slen = plen < size ? size - plen - 1 : 0;
  char *prefix = NULL;
  int check = engram_pattern_check(pattern), prc, glob = engram_pattern_is_glob(pattern), m;
  int p_utf8 = engram_utf8_valid(pattern, plen), s_utf8 = engram_utf8_valid(s, slen);

  prc = engram_pattern_prefix(pattern, &prefix);
  FUZZ_CHECK(check == 0 || check == ENGRAM_EINVAL, "engram_pattern_check returned %d", check);
  FUZZ_CHECK(prc == check, "check says %d but prefix says %d for \"%s\"", check, prc, pattern);
  FUZZ_CHECK((prc == 0) == (prefix != NULL), "prefix returned %d with out %s", prc, prefix ? "set" : "NULL");
  if (prc == 0 && !glob) FUZZ_CHECK(prefix[0] == '\0', "substring pattern \"%s\" has prefix \"%s\"", pattern, prefix);

  m = engram_pattern_match(pattern, s, slen);
  FUZZ_CHECK(m == 0 || m == 1, "engram_pattern_match returned %d", m);
  if (check != 0 && plen > 0) FUZZ_CHECK(!m, "invalid pattern \"%s\" matched \"%.*s\"", pattern, (int)slen, s);
  if (m && prefix != NULL) check_prefix_of(pattern, prefix, s, slen, "the input");
  FUZZ_CHECK(engram_pattern_match(pattern, s, slen) == m, "two matches of the same input differ");

  if (p_utf8 && s_utf8 && check == 0 && plen > 0) {
    size_t np, ns;
    uint32_t *pp = decode_all(pattern, plen, &np), *ss = decode_all(s, slen, &ns);
    if (!glob) {
      /* Substring rule: the pattern with its escapes resolved occurs in the string. */
      char *lit = malloc(plen + 1);
      size_t i, n = 0;
      int want;
      for (i = 0; i < plen; i++) {
        if (pattern[i] == '\\') i++;
        lit[n++] = pattern[i];
      }
      want = n == 0 || (slen >= n && memmem(s, slen, lit, n) != NULL);
      FUZZ_CHECK(m == want, "substring pattern \"%s\" (literal \"%.*s\") on \"%.*s\": match %d, reference %d", pattern,
                 (int)n, lit, (int)slen, s, m, want);
      /* Witness: STRING + literal + STRING. */
      {
        char *w = malloc(2 * slen + n + 1);
        memcpy(w, s, slen);
        memcpy(w + slen, lit, n);
        memcpy(w + slen + n, s, slen);
        FUZZ_CHECK(engram_pattern_match(pattern, w, 2 * slen + n), "substring pattern \"%s\" misses its witness \"%.*s\"",
                   pattern, (int)(2 * slen + n), w);
        free(w);
      }
      free(lit);
    } else {
      glob_t_ g;
      int rp = ref_parse(pp, np, &g);
      FUZZ_CHECK(rp == 0, "engram_pattern_check accepts \"%s\" but the reference parser does not", pattern);
      if ((unsigned long long)g.n * (ns + 1) <= 4000000ull) {
        int want = ref_glob(&g, ss, ns);
        FUZZ_CHECK(m == want, "glob \"%s\" on \"%.*s\": match %d, reference %d", pattern, (int)slen, s, m, want);
      }
      {
        size_t stars = 0, i, wl;
        char *w;
        for (i = 0; i < g.n; i++) stars += g.e[i].kind == E_STAR;
        w = malloc(4 * g.n + stars * slen + 1);
        wl = witness(&g, s, slen, w);
        if (wl != (size_t)-1) {
          FUZZ_CHECK(engram_pattern_match(pattern, w, wl), "glob \"%s\" misses its witness \"%.*s\"", pattern, (int)wl, w);
          check_prefix_of(pattern, prefix, w, wl, "its witness");
        }
        free(w);
      }
      free(g.e);
      free(g.r);
    }
    free(pp);
    free(ss);
  }
  engram_free(prefix);
  free(buf);
  return 0;
}
