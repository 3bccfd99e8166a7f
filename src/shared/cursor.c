/*
 * cursor.c — the one keyset cursor codec every source uses for list_keys: the order of (namespace, key) pairs
 * (bytewise, namespace first) and the cursor text "<ns_len>:<ns><key>" naming the last pair of a page, so a
 * listing resumes strictly after it and visits every key that exists for the whole listing exactly once.
 * The parser is strict (a decimal length without sign, space or leading zero, a namespace and a key within the
 * data model's limits, valid UTF-8): a cursor one source refuses, every source refuses.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engram/source.h"

static int bytes_cmp(const char *a, size_t alen, const char *b, size_t blen) {
  int r = memcmp(a, b, alen < blen ? alen : blen);
  if (r != 0) return r;
  return alen < blen ? -1 : alen > blen;
}

int engram_key_cmp(const char *ns_a, size_t ns_a_len, const char *key_a, size_t key_a_len, const char *ns_b,
                   size_t ns_b_len, const char *key_b, size_t key_b_len) {
  int r = bytes_cmp(ns_a, ns_a_len, ns_b, ns_b_len);
  return r != 0 ? r : bytes_cmp(key_a, key_a_len, key_b, key_b_len);
}

int engram_cursor_parse(const char *cursor, const char **ns, size_t *ns_len, const char **key, size_t *key_len) {
  size_t n = 0, digits = 0, rest;
  const char *p = cursor;
  if (cursor == NULL) return ENGRAM_EINVAL;
  while (*p >= '0' && *p <= '9') {
    if (++digits > 3 || (digits == 2 && n == 0)) return ENGRAM_EINVAL; /* too long, or a leading zero */
    n = n * 10 + (size_t)(*p++ - '0');
  }
  if (digits == 0 || *p != ':' || n > ENGRAM_NAMESPACE_MAX) return ENGRAM_EINVAL;
  p++;
  rest = strlen(p);
  if (n > rest || rest - n == 0 || rest - n > ENGRAM_KEY_MAX || !engram_utf8_valid(p, rest)) return ENGRAM_EINVAL;
  if (!engram_utf8_valid(p, n)) return ENGRAM_EINVAL; /* the namespace must end on a character boundary */
  *ns = p;
  *ns_len = n;
  *key = p + n;
  *key_len = rest - n;
  return 0;
}

char *engram_cursor_encode(const char *ns, size_t ns_len, const char *key, size_t key_len) {
  char *cur = engram_malloc(24 + ns_len + key_len);
  int p;
  if (cur == NULL) return NULL;
  p = snprintf(cur, 24, "%zu:", ns_len);
  memcpy(cur + p, ns, ns_len);
  memcpy(cur + p + ns_len, key, key_len);
  cur[p + ns_len + key_len] = '\0';
  return cur;
}
