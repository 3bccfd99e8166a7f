/*
 * cursor.c — keyset cursors shared by the in-process sources: the order of (namespace, key) pairs (bytewise,
 * namespace first) and the cursor text "<ns_len>:<ns><key>" naming the last pair of a page, so a listing
 * resumes strictly after it and visits every key that exists for the whole listing exactly once.
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
  char *end;
  unsigned long n;
  size_t rest;
  if (cursor == NULL || cursor[0] < '0' || cursor[0] > '9') return ENGRAM_EINVAL;
  n = strtoul(cursor, &end, 10);
  if (*end != ':') return ENGRAM_EINVAL;
  rest = strlen(end + 1);
  if (n > rest) return ENGRAM_EINVAL;
  *ns = end + 1;
  *ns_len = n;
  *key = end + 1 + n;
  *key_len = rest - n;
  return 0;
}

int engram_reply_set_key_cursor(engram_request_t *req, const char *ns, size_t ns_len, const char *key, size_t key_len) {
  char *cur = engram_malloc(24 + ns_len + key_len);
  int p, rc;
  if (cur == NULL) return ENGRAM_ENOMEM;
  p = snprintf(cur, 24, "%zu:", ns_len);
  memcpy(cur + p, ns, ns_len);
  memcpy(cur + p + ns_len, key, key_len);
  cur[p + ns_len + key_len] = '\0';
  rc = engram_reply_set_cursor(req, cur);
  engram_free(cur);
  return rc;
}
