/*
 * redis_rbuf.h — a growable buffer in which the redis source formats RESP commands (and other text it builds
 * byte by byte: the indexed text of an item, the keys of a cached index). Commands are formatted here and
 * handed to hiredis already formatted (redisAsyncFormattedCommand), so the hot path allocates nothing of its
 * own once the buffer has grown. Any allocation failure sets `failed`, after which every append is a no-op:
 * a caller formats a whole command and checks once. Knows nothing of the source; the lowest file of it.
 */
#ifndef ENGRAM_REDIS_RBUF_H
#define ENGRAM_REDIS_RBUF_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct {
  char *p;
  size_t len, cap;
  int failed;
} engram__rbuf_t;

/* Empties b (and frees a buffer grown beyond 1 MiB, so one large value is not kept around). */
void engram__rbuf_reset(engram__rbuf_t *b);
void engram__rbuf_free(engram__rbuf_t *b);
/* Appends len raw bytes (the slow path grows the buffer). */
void engram__rbuf_raw_slow(engram__rbuf_t *b, const void *s, size_t len);
static inline void engram__rbuf_raw(engram__rbuf_t *b, const void *s, size_t len) {
  if (b->failed || b->len + len > b->cap) {
    engram__rbuf_raw_slow(b, s, len);
    return;
  }
  memcpy(b->p + b->len, s, len);
  b->len += len;
}
/* "*n\r\n" */
void engram__rbuf_array(engram__rbuf_t *b, size_t n);
/* One bulk argument. */
void engram__rbuf_arg(engram__rbuf_t *b, const void *s, size_t len);
void engram__rbuf_arg_str(engram__rbuf_t *b, const char *s);
void engram__rbuf_arg_i64(engram__rbuf_t *b, int64_t v);
/* A bulk argument written in pieces: its header with the total length, raw pieces, then the trailer. */
void engram__rbuf_arg_begin(engram__rbuf_t *b, size_t total);
void engram__rbuf_arg_end(engram__rbuf_t *b);
/* The decimal digits of v into out (room for 20, no NUL); returns their count. */
static inline int engram__rbuf_digits(uint64_t v, char *out) {
  char tmp[24];
  int k = 0, i;
  do {
    tmp[k++] = (char)('0' + v % 10);
    v /= 10;
  } while (v > 0);
  for (i = 0; i < k; i++) out[i] = tmp[k - 1 - i];
  return k;
}

#endif
