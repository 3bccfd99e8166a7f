/*
 * json_print.c — the one JSON printer for stored values and metadata (engram_json_print, include/engram.h):
 * compact text in cJSON_PrintUnformatted's form (same escapes, same member order, NaN and infinities as null),
 * with exact numbers. cJSON 1.7.15 prints a number with 15 significant digits whenever they read back within a
 * relative DBL_EPSILON of it, so 0.1 + 0.2 (0.30000000000000004) comes out as "0.3" and
 * 8888888888888888888888888888888888882 as a neighbour one unit in the last place away: a stored value would not
 * read back as it was given (the tools' fuzzer found it). Here a number is written with 15 digits only when they
 * read back as exactly the same double, else with 17 — cJSON's two formats, so every number cJSON prints exactly
 * comes out byte for byte as cJSON prints it (1e15 as "1e+15"); an integer below 10^15 by a few divisions instead
 * of sprintf and strtod (it was a fifth of the SQLite actor's time per store).
 *
 * Every backend that keeps values as JSON text (SQLite, PostgreSQL, Redis, the vector source), the export's lines
 * and the tools' results print through it, so a value reads back the same from every source and a round trip
 * through an export keeps it. The output buffer is the caller's and is reused from one call to the next: nothing
 * is allocated once it is big enough. Moved here from the SQLite source (sqlite_json.c) with numbers made exact.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engram/source.h"
#include "shared/json_print.h"

typedef struct {
  char **buf;
  size_t *cap;
  size_t len;
} out_t;

static int reserve(out_t *o, size_t more) {
  size_t want = o->len + more + 1, cap;
  char *nb;
  if (want <= *o->cap) return 0;
  cap = *o->cap ? *o->cap : 256;
  while (cap < want) cap *= 2;
  if ((nb = engram_realloc(*o->buf, cap)) == NULL) return ENGRAM_ENOMEM;
  *o->buf = nb;
  *o->cap = cap;
  return 0;
}

static int put(out_t *o, const char *s, size_t n) {
  if (reserve(o, n) != 0) return ENGRAM_ENOMEM;
  memcpy(*o->buf + o->len, s, n);
  o->len += n;
  return 0;
}

size_t engram__json_number(char out[ENGRAM__JSON_NUMBER_MAX], double d) {
  int n;
  if (isnan(d) || isinf(d)) {
    memcpy(out, "null", 5);
    return 4;
  }
  if (d == floor(d) && fabs(d) < 1e15) { /* what "%1.15g" prints as plain digits */
    char tmp[24], *p = tmp + sizeof tmp;
    unsigned long long u = (unsigned long long)(d < 0 ? -d : d);
    size_t len;
    do {
      *--p = (char)('0' + u % 10);
      u /= 10;
    } while (u != 0);
    if (signbit(d)) *--p = '-'; /* -0 too, as cJSON prints it */
    len = (size_t)(tmp + sizeof tmp - p);
    memcpy(out, p, len);
    out[len] = '\0';
    return len;
  }
  n = snprintf(out, ENGRAM__JSON_NUMBER_MAX, "%1.15g", d);
  if (strtod(out, NULL) != d) n = snprintf(out, ENGRAM__JSON_NUMBER_MAX, "%1.17g", d);
  return (size_t)n;
}

/* The length of the run at the start of p[0, n) that a JSON string holds as is (no '"', '\\' or byte below 32),
 * eight bytes at a time: the byte-at-a-time scan was a quarter of an export's instructions. Each test is exact for
 * "some byte of the word is one": (x - 0x01..01 * c) & ~x & 0x80..80 is non-zero iff a byte of x is below c (c <=
 * 128), and x ^ 0x01..01 * b turns the bytes equal to b into zeros. */
static size_t plain_run(const unsigned char *p, size_t n) {
  const uint64_t ones = 0x0101010101010101ull, high = 0x8080808080808080ull;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w, q, b;
    memcpy(&w, p + i, 8);
    q = w ^ (ones * '"');
    b = w ^ (ones * '\\');
    if ((((w - ones * 32u) & ~w) | ((q - ones) & ~q) | ((b - ones) & ~b)) & high) break;
  }
  for (; i < n && p[i] >= 32 && p[i] != '"' && p[i] != '\\'; i++) {}
  return i;
}

static int put_string(out_t *o, const char *s) {
  const unsigned char *p = (const unsigned char *)s;
  size_t i, extra = 0, n = strlen(s);
  char *w;
  for (i = plain_run(p, n); i < n; i++) {
    if (p[i] == '"' || p[i] == '\\' || p[i] == '\b' || p[i] == '\f' || p[i] == '\n' || p[i] == '\r' || p[i] == '\t')
      extra += 1;
    else if (p[i] < 32)
      extra += 5;
  }
  if (reserve(o, n + extra + 2) != 0) return ENGRAM_ENOMEM;
  w = *o->buf + o->len;
  *w++ = '"';
  if (extra == 0) {
    memcpy(w, s, n);
    w += n;
  } else {
    for (i = 0; i < n; i++) {
      unsigned char c = p[i];
      if (c >= 32 && c != '"' && c != '\\') {
        *w++ = (char)c;
        continue;
      }
      *w++ = '\\';
      switch (c) {
        case '"': *w++ = '"'; break;
        case '\\': *w++ = '\\'; break;
        case '\b': *w++ = 'b'; break;
        case '\f': *w++ = 'f'; break;
        case '\n': *w++ = 'n'; break;
        case '\r': *w++ = 'r'; break;
        case '\t': *w++ = 't'; break;
        default: w += sprintf(w, "u%04x", c); break;
      }
    }
  }
  *w++ = '"';
  o->len = (size_t)(w - *o->buf);
  return 0;
}

/* Recursive like cJSON's printer; the trees printed here were checked at submit (at most 1,000 deep) or parsed by
 * cJSON (the same limit). */
static int put_value(out_t *o, const cJSON *v) {
  const cJSON *c;
  char num[ENGRAM__JSON_NUMBER_MAX];
  int rc = 0;
  switch (v->type & 0xFF) {
    case cJSON_NULL: return put(o, "null", 4);
    case cJSON_False: return put(o, "false", 5);
    case cJSON_True: return put(o, "true", 4);
    case cJSON_Number: return put(o, num, engram__json_number(num, v->valuedouble));
    case cJSON_String: return v->valuestring ? put_string(o, v->valuestring) : ENGRAM_EINVAL;
    case cJSON_Raw: return v->valuestring ? put(o, v->valuestring, strlen(v->valuestring)) : ENGRAM_EINVAL;
    case cJSON_Array:
    case cJSON_Object:
      if ((rc = put(o, cJSON_IsArray(v) ? "[" : "{", 1)) != 0) return rc;
      for (c = v->child; c != NULL && rc == 0; c = c->next) {
        if (c != v->child && (rc = put(o, ",", 1)) != 0) break;
        if (cJSON_IsObject(v)) {
          if (c->string == NULL) return ENGRAM_EINVAL;
          if ((rc = put_string(o, c->string)) != 0 || (rc = put(o, ":", 1)) != 0) break;
        }
        rc = put_value(o, c);
      }
      return rc ? rc : put(o, cJSON_IsArray(v) ? "]" : "}", 1);
    default: return ENGRAM_EINVAL;
  }
}

/* v's text, or (v NULL) the JSON string of s, appended at *len. */
static int append(char **buf, size_t *cap, size_t *len, const cJSON *v, const char *s) {
  out_t o;
  int rc;
  o.buf = buf;
  o.cap = cap;
  o.len = *len;
  rc = v != NULL ? put_value(&o, v) : s != NULL ? put_string(&o, s) : ENGRAM_EINVAL;
  *len = o.len;
  return rc;
}

int engram__json_append(char **buf, size_t *cap, size_t *len, const cJSON *v) {
  return v != NULL ? append(buf, cap, len, v, NULL) : ENGRAM_EINVAL;
}

int engram__json_append_string(char **buf, size_t *cap, size_t *len, const char *s) {
  return append(buf, cap, len, NULL, s);
}

int engram_json_print(const cJSON *v, char **buf, size_t *cap, size_t *len) {
  out_t o;
  int rc;
  if (buf == NULL || cap == NULL) return ENGRAM_EINVAL;
  o.buf = buf;
  o.cap = cap;
  o.len = 0;
  if (v == NULL) return ENGRAM_EINVAL;
  if ((rc = put_value(&o, v)) != 0 || (rc = reserve(&o, 0)) != 0) return rc;
  (*buf)[o.len] = '\0';
  if (len != NULL) *len = o.len;
  return 0;
}

char *engram_json_print_text(const cJSON *v) {
  char *buf = NULL;
  size_t cap = 0;
  if (engram_json_print(v, &buf, &cap, NULL) != 0) {
    engram_free(buf);
    return NULL;
  }
  return buf;
}
