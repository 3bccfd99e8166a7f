/*
 * jsonl_write.c — prints one memory item as a JSON Lines line for engram_export (src/export/export.c). Values and
 * metadata are printed straight from their cJSON trees into the output buffer, byte for byte as
 * engram_json_print prints them (cJSON_PrintUnformatted's form with exact numbers, docs/export.md), but without an
 * intermediate buffer, its strlen and, for the integers that most values hold, a sprintf("%1.15g") + strtod
 * round trip per number (a third of an export's printing time). Numbers that are not integers below 10^15 in
 * magnitude go through the printer's own number formatter (src/shared/json_print.c), so the bytes never differ. A raw node (the stored text an SQLite export
 * read hands over, ENGRAM_REQ_JSON_TEXT) is copied as it is. Timestamps and versions are printed with a small integer formatter instead of snprintf.
 */
#include "jsonl_write.h"

#include <inttypes.h>
#include <math.h>
#include <string.h>

#include "engram/source.h"
#include "shared/json_print.h"

#define DIRECT_INT_LIMIT 1e15 /* below this, %1.15g prints an integral double as its plain digits */

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

/* A JSON string as cJSON prints one: '"', '\' and control characters escaped, everything else as is. */
static int put_string(engram__obuf_t *b, const char *s) {
  static const char hex[] = "0123456789abcdef";
  size_t n = strlen(s), i;
  char *o;
  if (reserve(b, n * 6 + 2) != 0) return ENGRAM_ENOMEM;
  o = b->p + b->len;
  *o++ = '"';
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c >= 0x20 && c != '"' && c != '\\') {
      *o++ = (char)c;
      continue;
    }
    *o++ = '\\';
    switch (c) {
      case '"': *o++ = '"'; break;
      case '\\': *o++ = '\\'; break;
      case '\b': *o++ = 'b'; break;
      case '\f': *o++ = 'f'; break;
      case '\n': *o++ = 'n'; break;
      case '\r': *o++ = 'r'; break;
      case '\t': *o++ = 't'; break;
      default:
        *o++ = 'u'; *o++ = '0'; *o++ = '0'; *o++ = hex[c >> 4]; *o++ = hex[c & 15];
    }
  }
  *o++ = '"';
  b->len = (size_t)(o - b->p);
  return 0;
}

/* Decimal digits of v (with a '-' when neg) into b. */
static int put_u64(engram__obuf_t *b, uint64_t v, int neg) {
  char tmp[24];
  int i = (int)sizeof tmp;
  do {
    tmp[--i] = (char)('0' + v % 10);
    v /= 10;
  } while (v != 0);
  if (neg) tmp[--i] = '-';
  return put_raw(b, tmp + i, sizeof tmp - (size_t)i);
}

static int put_i64(engram__obuf_t *b, int64_t v) {
  return v < 0 ? put_u64(b, (uint64_t)0 - (uint64_t)v, 1) : put_u64(b, (uint64_t)v, 0);
}

/* A node cJSON prints itself (a number with a fraction or a large one, a raw node): its own unformatted print. */
static int put_by_cjson(engram__obuf_t *b, const cJSON *v) {
  char *s;
  int rc;
  if ((s = cJSON_PrintUnformatted(v)) == NULL) return ENGRAM_ENOMEM;
  rc = put_raw(b, s, strlen(s));
  cJSON_free(s);
  return rc;
}

static int put_value(engram__obuf_t *b, const cJSON *v) {
  const cJSON *c;
  if (cJSON_IsNull(v)) return put_raw(b, "null", 4);
  if (cJSON_IsTrue(v)) return put_raw(b, "true", 4);
  if (cJSON_IsFalse(v)) return put_raw(b, "false", 5);
  if (cJSON_IsNumber(v)) {
    double d = v->valuedouble;
    char num[ENGRAM__JSON_NUMBER_MAX];
    if (d == floor(d) && fabs(d) < DIRECT_INT_LIMIT && !(d == 0 && signbit(d))) return put_i64(b, (int64_t)d);
    return put_raw(b, num, engram__json_number(num, d));
  }
  if (cJSON_IsString(v)) return put_string(b, v->valuestring ? v->valuestring : "");
  /* A raw node: JSON text a backend vouched for as cJSON's own print (ENGRAM_REQ_JSON_TEXT) — its bytes. */
  if (cJSON_IsRaw(v)) return v->valuestring ? put_raw(b, v->valuestring, strlen(v->valuestring)) : put_raw(b, "null", 4);
  if (cJSON_IsArray(v)) {
    if (put_raw(b, "[", 1) != 0) return ENGRAM_ENOMEM;
    for (c = v->child; c != NULL; c = c->next)
      if ((c != v->child && put_raw(b, ",", 1) != 0) || put_value(b, c) != 0) return ENGRAM_ENOMEM;
    return put_raw(b, "]", 1);
  }
  if (cJSON_IsObject(v)) {
    if (put_raw(b, "{", 1) != 0) return ENGRAM_ENOMEM;
    for (c = v->child; c != NULL; c = c->next) {
      if ((c != v->child && put_raw(b, ",", 1) != 0) || put_string(b, c->string ? c->string : "") != 0 || put_raw(b, ":", 1) != 0 ||
          put_value(b, c) != 0)
        return ENGRAM_ENOMEM;
    }
    return put_raw(b, "}", 1);
  }
  return put_by_cjson(b, v);
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
