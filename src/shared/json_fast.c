/*
 * json_fast.c — a fast path from JSON text to cJSON for the text backends read back from their stores
 * (engram_json_parse, include/engram/source.h): about four times fewer instructions than cJSON_ParseWithLength
 * for the documents engram stores most (a conversation message: a few members, integers, strings with simple
 * escapes). A retrieve_many of 55 messages spent two thirds of its client time in cJSON's parser (callgrind: 7,000
 * instructions a message, its numbers through localeconv and strtod) on PostgreSQL and Redis alike.
 *
 * It builds the same tree cJSON would, with cJSON's own constructors and allocator (cJSON_malloc), so cJSON_Delete
 * frees it: objects and arrays in document order, strings without "\u" escapes, integers of up to 15 digits (exact
 * in a double; cJSON_CreateNumber sets valueint as the parser does), true, false, null. Anything else — a fraction
 * or exponent, a longer integer, a "\u" escape, a raw control character, nesting deeper than 64, text that is not
 * JSON, or memory running out — makes it give up (NULL), and engram_json_parse hands the whole text to cJSON, so
 * every answer is cJSON's own. Tests: test_json_fast (every shape against cJSON, node for node) and the sources'
 * read-back tests.
 */
#include <stdint.h>
#include <string.h>

#include "shared/json_fast.h"

#define FAST_DEPTH 64

typedef struct {
  const char *p, *e;
  int depth;
} rd_t;

static cJSON *rd_value(rd_t *r);

static void rd_ws(rd_t *r) {
  while (r->p < r->e && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r')) r->p++;
}

/* A string at r->p (the opening quote): its bytes unescaped into memory from cJSON_malloc, or NULL (give up, or out
 * of memory: either way cJSON decides). */
static char *rd_string(rd_t *r) {
  const char *s = r->p + 1, *q;
  size_t escapes = 0, n;
  char *out, *o;
  for (q = s; q < r->e && *q != '"'; q++) {
    unsigned char c;
    /* Eight bytes at a time while none of them is a quote, a backslash or a control character. */
    while (r->e - q >= 8) {
      uint64_t v, ones = 0x0101010101010101u, highs = 0x8080808080808080u;
      memcpy(&v, q, 8);
      if ((((v ^ (ones * '"')) - ones) & ~(v ^ (ones * '"')) & highs) |
          (((v ^ (ones * '\\')) - ones) & ~(v ^ (ones * '\\')) & highs) | ((v - ones * 0x20) & ~v & highs))
        break;
      q += 8;
    }
    if (q >= r->e || *q == '"') break;
    c = (unsigned char)*q;
    if (c < 0x20) return NULL;
    if (c == '\\') {
      if (++q >= r->e) return NULL;
      switch (*q) {
        case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't': break;
        default: return NULL; /* \u and anything else: cJSON's */
      }
      escapes++;
    }
  }
  if (q >= r->e) return NULL;
  n = (size_t)(q - s) - escapes;
  if ((out = cJSON_malloc(n + 1)) == NULL) return NULL;
  if (escapes == 0) {
    memcpy(out, s, n);
  } else {
    const char *i;
    for (i = s, o = out; i < q; i++) {
      if (*i != '\\') {
        *o++ = *i;
        continue;
      }
      switch (*++i) {
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        default: *o++ = *i; break; /* " \ / */
      }
    }
  }
  out[n] = '\0';
  r->p = q + 1;
  return out;
}

static cJSON *rd_number(rd_t *r) {
  const char *q = r->p;
  double v = 0;
  int neg = 0, digits = 0;
  if (*q == '-') neg = 1, q++;
  if (q >= r->e || *q < '0' || *q > '9') return NULL;
  if (*q == '0' && q + 1 < r->e && q[1] >= '0' && q[1] <= '9') return NULL; /* "01": cJSON's */
  for (; q < r->e && *q >= '0' && *q <= '9'; q++, digits++) v = v * 10 + (*q - '0');
  if (digits > 15 || (q < r->e && (*q == '.' || *q == 'e' || *q == 'E' || *q == '+' || *q == '-'))) return NULL;
  r->p = q;
  return cJSON_CreateNumber(neg ? -v : v);
}

static int rd_word(rd_t *r, const char *w, size_t n) {
  if ((size_t)(r->e - r->p) < n || memcmp(r->p, w, n) != 0) return 0;
  r->p += n;
  return 1;
}

/* The members (object) or elements (array) after the opening bracket, up to and including the closing one. */
static cJSON *rd_container(rd_t *r, int object) {
  cJSON *c = object ? cJSON_CreateObject() : cJSON_CreateArray(), *item;
  char close = object ? '}' : ']', *key = NULL;
  if (c == NULL || ++r->depth > FAST_DEPTH) goto fail;
  r->p++;
  rd_ws(r);
  if (r->p < r->e && *r->p == close) {
    r->p++;
    r->depth--;
    return c;
  }
  for (;;) {
    if (object) {
      if (r->p >= r->e || *r->p != '"' || (key = rd_string(r)) == NULL) goto fail;
      rd_ws(r);
      if (r->p >= r->e || *r->p != ':') goto fail;
      r->p++;
      rd_ws(r);
    }
    if ((item = rd_value(r)) == NULL) goto fail;
    item->string = key;
    key = NULL;
    if (!cJSON_AddItemToArray(c, item)) { /* the item's key goes with it */
      cJSON_Delete(item);
      goto fail;
    }
    rd_ws(r);
    if (r->p >= r->e) goto fail;
    if (*r->p == close) break;
    if (*r->p != ',') goto fail;
    r->p++;
    rd_ws(r);
  }
  r->p++;
  r->depth--;
  return c;
fail:
  cJSON_free(key);
  cJSON_Delete(c);
  return NULL;
}

static cJSON *rd_value(rd_t *r) {
  cJSON *v;
  char *s;
  if (r->p >= r->e) return NULL;
  switch (*r->p) {
    case '{': return rd_container(r, 1);
    case '[': return rd_container(r, 0);
    case '"':
      if ((s = rd_string(r)) == NULL) return NULL;
      if ((v = cJSON_CreateNull()) == NULL) {
        cJSON_free(s);
        return NULL;
      }
      v->type = cJSON_String;
      v->valuestring = s;
      return v;
    case 't': return rd_word(r, "true", 4) ? cJSON_CreateTrue() : NULL;
    case 'f': return rd_word(r, "false", 5) ? cJSON_CreateFalse() : NULL;
    case 'n': return rd_word(r, "null", 4) ? cJSON_CreateNull() : NULL;
    default: return rd_number(r);
  }
}

cJSON *engram__json_fast_parse(const char *text, size_t len) {
  rd_t r;
  cJSON *v;
  r.p = text;
  r.e = text + len;
  r.depth = 0;
  rd_ws(&r);
  if ((v = rd_value(&r)) != NULL) {
    rd_ws(&r);
    if (r.p == r.e) return v;
    cJSON_Delete(v);
  }
  return NULL;
}
