/*
 * sqlite_json.c — compact JSON text of a cJSON value, written into a buffer the SQLite source reuses from one
 * store to the next, for the value and metadata columns.
 *
 * The output is what cJSON_PrintUnformatted writes (same escapes, same member order, numbers that parse back to
 * the same double), with two differences that matter on the store path: nothing is allocated once the buffer
 * is big enough, and an integral number below 2^53 is written by a few divisions instead of cJSON's
 * sprintf("%1.15g") + sscanf round trip, which was a fifth of the actor thread's time per store. Other numbers
 * follow cJSON: 15 significant digits when they read back exactly, else 17; NaN and infinities become null.
 * It needs nothing of the source: the buffer is the caller's (sq_t's vbuf and mbuf, used by sqlite.c).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sqlite_json.h"

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

static int put_number(out_t *o, double d) {
  char tmp[32];
  int n;
  if (isnan(d) || isinf(d)) return put(o, "null", 4);
  if (d == floor(d) && fabs(d) < 9007199254740992.0) {
    unsigned long long u = (unsigned long long)(d < 0 ? -d : d);
    char *p = tmp + sizeof tmp;
    do {
      *--p = (char)('0' + u % 10);
      u /= 10;
    } while (u != 0);
    if (d < 0) *--p = '-';
    return put(o, p, (size_t)(tmp + sizeof tmp - p));
  }
  n = snprintf(tmp, sizeof tmp, "%1.15g", d);
  if (strtod(tmp, NULL) != d) n = snprintf(tmp, sizeof tmp, "%1.17g", d);
  return put(o, tmp, (size_t)n);
}

static int put_string(out_t *o, const char *s) {
  const unsigned char *p = (const unsigned char *)s;
  size_t i, extra = 0, n = strlen(s);
  char *w;
  for (i = 0; i < n; i++) {
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

static int put_value(out_t *o, const cJSON *v) {
  const cJSON *c;
  int rc = 0;
  switch (v->type & 0xFF) {
    case cJSON_NULL: return put(o, "null", 4);
    case cJSON_False: return put(o, "false", 5);
    case cJSON_True: return put(o, "true", 4);
    case cJSON_Number: return put_number(o, v->valuedouble);
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

const char *engram__sq_print(char **buf, size_t *cap, const cJSON *v) {
  out_t o = {buf, cap, 0};
  if (v == NULL || put_value(&o, v) != 0 || reserve(&o, 0) != 0) return NULL;
  (*buf)[o.len] = '\0';
  return *buf;
}
