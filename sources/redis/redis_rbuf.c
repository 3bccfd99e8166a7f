/*
 * redis_rbuf.c — the RESP command buffer of the redis source (see redis_rbuf.h): growth, and the array and bulk
 * headers written without printf.
 */
#include <string.h>

#include "engram/source.h"
#include "redis_rbuf.h"

static int grow(engram__rbuf_t *b, size_t more) {
  size_t cap;
  char *p;
  if (b->failed) return -1;
  cap = b->cap ? b->cap : 4096;
  while (cap < b->len + more) cap *= 2;
  if ((p = engram_realloc(b->p, cap)) == NULL) {
    b->failed = 1;
    return -1;
  }
  b->p = p;
  b->cap = cap;
  return 0;
}

static inline int reserve(engram__rbuf_t *b, size_t more) {
  if (b->len + more <= b->cap && !b->failed) return 0;
  return grow(b, more);
}

void engram__rbuf_reset(engram__rbuf_t *b) {
  b->len = 0;
  b->failed = 0;
  /* Do not keep a huge buffer around after one large value. */
  if (b->cap > (1u << 20)) {
    engram_free(b->p);
    b->p = NULL;
    b->cap = 0;
  }
}

void engram__rbuf_free(engram__rbuf_t *b) {
  engram_free(b->p);
  memset(b, 0, sizeof *b);
}

void engram__rbuf_raw_slow(engram__rbuf_t *b, const void *s, size_t len) {
  if (len == 0 || reserve(b, len) != 0) return;
  memcpy(b->p + b->len, s, len);
  b->len += len;
}

static void header(engram__rbuf_t *b, char c, size_t n) {
  char *p;
  if (reserve(b, 24) != 0) return;
  p = b->p + b->len;
  *p++ = c;
  if (n < 10) *p++ = (char)('0' + n);
  else if (n < 100) {
    *p++ = (char)('0' + n / 10);
    *p++ = (char)('0' + n % 10);
  } else {
    p += engram__rbuf_digits(n, p);
  }
  b->len = (size_t)(p - b->p);
  b->p[b->len++] = '\r';
  b->p[b->len++] = '\n';
}

void engram__rbuf_array(engram__rbuf_t *b, size_t n) { header(b, '*', n); }

void engram__rbuf_arg_begin(engram__rbuf_t *b, size_t total) {
  header(b, '$', total);
  reserve(b, total + 2);
}

void engram__rbuf_arg_end(engram__rbuf_t *b) { engram__rbuf_raw(b, "\r\n", 2); }

void engram__rbuf_arg(engram__rbuf_t *b, const void *s, size_t len) {
  engram__rbuf_arg_begin(b, len);
  engram__rbuf_raw(b, s, len);
  engram__rbuf_arg_end(b);
}

void engram__rbuf_arg_str(engram__rbuf_t *b, const char *s) { engram__rbuf_arg(b, s, strlen(s)); }

void engram__rbuf_arg_i64(engram__rbuf_t *b, int64_t v) {
  char tmp[24];
  int n = 0;
  if (v < 0) {
    tmp[n++] = '-';
    n += engram__rbuf_digits(v == INT64_MIN ? (uint64_t)INT64_MAX + 1u : (uint64_t)-v, tmp + n);
  } else {
    n = engram__rbuf_digits((uint64_t)v, tmp);
  }
  engram__rbuf_arg(b, tmp, (size_t)n);
}
