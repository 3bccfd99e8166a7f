/*
 * jsonl_write.c — prints one memory item as a JSON Lines line for engram_export (src/export/export.c). Key,
 * namespace, value and metadata are printed by the shared printer (src/shared/json_print.c: cJSON's compact form
 * with exact numbers, byte for byte what engram_json_print gives, docs/export.md) straight into the output buffer,
 * with no intermediate buffer or strlen; a raw node (the stored text an SQLite export read hands over,
 * ENGRAM_REQ_JSON_TEXT) is copied as it is. Timestamps and versions are printed with a small integer formatter (two
 * digits a step) instead of snprintf.
 */
#include "jsonl_write.h"

#include <inttypes.h>
#include <string.h>

#include "engram/source.h"
#include "shared/json_print.h"

void engram__obuf_free(engram__obuf_t *b) {
  engram_free(b->p);
  b->p = NULL;
  b->len = b->cap = 0;
}

static int reserve(engram__obuf_t *b, size_t more) {
  size_t cap;
  char *p;
  if (b->len + more <= b->cap) return 0;
  cap = b->cap ? b->cap : 64 * 1024;
  while (cap < b->len + more) cap *= 2;
  if ((p = engram_realloc(b->p, cap)) == NULL) return ENGRAM_ENOMEM;
  b->p = p;
  b->cap = cap;
  return 0;
}

static int put_raw(engram__obuf_t *b, const char *s, size_t n) {
  if (reserve(b, n) != 0) return ENGRAM_ENOMEM;
  memcpy(b->p + b->len, s, n);
  b->len += n;
  return 0;
}

/* A JSON string as cJSON prints one: '"', '\\' and control characters escaped, everything else as is. */
static int put_string(engram__obuf_t *b, const char *s) {
  return engram__json_append_string(&b->p, &b->cap, &b->len, s);
}

/* Decimal digits of v (with a '-' when neg) into b, two at a time from a table (a 13-digit timestamp took 13
 * divisions). */
static int put_u64(engram__obuf_t *b, uint64_t v, int neg) {
  static const char pairs[] = "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
                              "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
                              "8081828384858687888990919293949596979899";
  char tmp[24];
  int i = (int)sizeof tmp;
  while (v >= 100) {
    unsigned d = (unsigned)(v % 100) * 2u;
    v /= 100;
    tmp[--i] = pairs[d + 1];
    tmp[--i] = pairs[d];
  }
  if (v >= 10) {
    tmp[--i] = pairs[v * 2 + 1];
    tmp[--i] = pairs[v * 2];
  } else {
    tmp[--i] = (char)('0' + v);
  }
  if (neg) tmp[--i] = '-';
  return put_raw(b, tmp + i, sizeof tmp - (size_t)i);
}

static int put_i64(engram__obuf_t *b, int64_t v) {
  return v < 0 ? put_u64(b, (uint64_t)0 - (uint64_t)v, 1) : put_u64(b, (uint64_t)v, 0);
}

/* A value or metadata tree: the shared printer (exact numbers; a raw node — the stored text an SQLite export read
 * hands over, ENGRAM_REQ_JSON_TEXT — copied as it is). */
static int put_value(engram__obuf_t *b, const cJSON *v) {
  return engram__json_append(&b->p, &b->cap, &b->len, v);
}

int engram__jsonl_put_item(engram__obuf_t *b, const engram_item_t *it) {
  if (put_raw(b, "{\"key\":", 7) != 0 || put_string(b, it->key) != 0 || put_raw(b, ",\"ns\":", 6) != 0 ||
      put_string(b, it->ns ? it->ns : "") != 0 || put_raw(b, ",\"value\":", 9) != 0 ||
      (it->value ? put_value(b, it->value) : put_raw(b, "null", 4)) != 0 || put_raw(b, ",\"metadata\":", 12) != 0 ||
      (it->metadata ? put_value(b, it->metadata) : put_raw(b, "null", 4)) != 0 ||
      put_raw(b, ",\"created_at_ms\":", 17) != 0 || put_i64(b, it->created_at_ms) != 0 ||
      put_raw(b, ",\"updated_at_ms\":", 17) != 0 || put_i64(b, it->updated_at_ms) != 0 ||
      put_raw(b, ",\"expires_at_ms\":", 17) != 0 || put_i64(b, it->expires_at_ms) != 0 ||
      put_raw(b, ",\"version\":", 11) != 0 || put_u64(b, it->version, 0) != 0 || put_raw(b, "}\n", 2) != 0)
    return ENGRAM_ENOMEM;
  return 0;
}
