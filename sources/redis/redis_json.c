/*
 * redis_json.c — JSON text in and out of Redis (see redis_json.h). Printing tries cJSON_PrintPreallocated into
 * the scratch buffer first. Parsing takes a fast path for the common shapes of stored values and gives anything
 * else to cJSON; when cJSON fails, a non-allocating syntax check decides whether the failure was an allocation
 * (the text is valid JSON: ENGRAM_ENOMEM) or the text itself (ENGRAM_EBACKEND).
 *
 * The fast path (the same as sources/postgres/postgres_json.c's; a backend sees only its own folder, so each
 * holds a copy — engram_json_parse in src/shared is where one copy would serve every source) builds the tree
 * cJSON would, with cJSON's constructors and allocator: objects and arrays in document order, strings without
 * "\u" escapes, integers of up to 15 digits, true, false, null. A fraction or exponent, a longer integer, a
 * "\u" escape, a raw control character, nesting deeper than 64 or text that is not JSON makes it give up and
 * hand the whole text to cJSON_ParseWithLength. cJSON spent about 7,000 instructions on a 130-byte message
 * (its numbers through localeconv and strtod): two thirds of a retrieve_many's client time (callgrind).
 */
#include <stdint.h>
#include <string.h>

#include "redis_json.h"

char *engram__redis_json_print(engram__redis_scratch_t *sc, const cJSON *v, size_t *len, int *owned) {
  char *s;
  *owned = 0;
  if (sc->p == NULL) {
    if ((sc->p = engram_malloc(16384)) == NULL) return NULL;
    sc->cap = 16384;
  }
  /* cJSON_PrintPreallocated wants a little slack beyond the text. */
  if (cJSON_PrintPreallocated((cJSON *)v, sc->p, (int)sc->cap - 8, 0)) {
    *len = strlen(sc->p);
    return sc->p;
  }
  if ((s = cJSON_PrintUnformatted(v)) == NULL) return NULL;
  *owned = 1;
  *len = strlen(s);
  /* Grow the scratch buffer (up to 1 MiB) so that values of this size fit next time. */
  if (*len + 64 <= (1u << 20)) {
    size_t cap = sc->cap;
    char *p;
    while (cap < *len + 64) cap *= 2;
    if ((p = engram_malloc(cap)) != NULL) {
      engram_free(sc->p);
      sc->p = p;
      sc->cap = cap;
    }
  }
  return s;
}

void engram__redis_scratch_free(engram__redis_scratch_t *sc) {
  engram_free(sc->p);
  sc->p = NULL;
  sc->cap = 0;
}

/* ---- JSON text read back from Redis ---- */

/* A non-allocating JSON syntax check, so that a failed cJSON parse can be told apart: out of memory (the text is
 * valid) or a value some other tool stored (it is not). */
static const char *ws(const char *p, const char *e) {
  while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
  return p;
}

static const char *v_value(const char *p, const char *e, int depth);

static const char *v_string(const char *p, const char *e) {
  int i;
  if (p >= e || *p != '"') return NULL;
  for (p++; p < e; p++) {
    unsigned char c = (unsigned char)*p;
    if (c == '"') return p + 1;
    if (c < 0x20) return NULL;
    if (c == '\\') {
      if (++p >= e) return NULL;
      if (*p == 'u') {
        for (i = 0; i < 4; i++)
          if (++p >= e || !((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f') || (*p >= 'A' && *p <= 'F'))) return NULL;
      } else if (!strchr("\"\\/bfnrt", *p)) {
        return NULL;
      }
    }
  }
  return NULL;
}

static const char *v_digits(const char *p, const char *e) {
  const char *s = p;
  while (p < e && *p >= '0' && *p <= '9') p++;
  return p > s ? p : NULL;
}

static const char *v_number(const char *p, const char *e) {
  if (p < e && *p == '-') p++;
  if ((p = v_digits(p, e)) == NULL) return NULL;
  if (p < e && *p == '.' && (p = v_digits(p + 1, e)) == NULL) return NULL;
  if (p < e && (*p == 'e' || *p == 'E')) {
    p++;
    if (p < e && (*p == '+' || *p == '-')) p++;
    if ((p = v_digits(p, e)) == NULL) return NULL;
  }
  return p;
}

static const char *v_word(const char *p, const char *e, const char *w) {
  size_t n = strlen(w);
  return (size_t)(e - p) >= n && memcmp(p, w, n) == 0 ? p + n : NULL;
}

static const char *v_value(const char *p, const char *e, int depth) {
  if (depth > 1000 || (p = ws(p, e)) >= e) return NULL;
  switch (*p) {
    case '"': return v_string(p, e);
    case 't': return v_word(p, e, "true");
    case 'f': return v_word(p, e, "false");
    case 'n': return v_word(p, e, "null");
    case '[':
      if ((p = ws(p + 1, e)) < e && *p == ']') return p + 1;
      for (;;) {
        if ((p = v_value(p, e, depth + 1)) == NULL || (p = ws(p, e)) >= e) return NULL;
        if (*p == ']') return p + 1;
        if (*p++ != ',') return NULL;
      }
    case '{':
      if ((p = ws(p + 1, e)) < e && *p == '}') return p + 1;
      for (;;) {
        if ((p = v_string(ws(p, e), e)) == NULL || (p = ws(p, e)) >= e || *p++ != ':') return NULL;
        if ((p = v_value(p, e, depth + 1)) == NULL || (p = ws(p, e)) >= e) return NULL;
        if (*p == '}') return p + 1;
        if (*p++ != ',') return NULL;
      }
    default: return v_number(p, e);
  }
}

/* ---- The fast path ---- */

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

/* The tree of the whole text by the fast path, or NULL (cJSON decides). */
static cJSON *fast_parse(const char *text, size_t len) {
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

int engram__redis_parse_json(const char *s, size_t n, cJSON **out) {
  const char *end;
  if ((*out = fast_parse(s, n)) != NULL) return 0;
  if ((*out = cJSON_ParseWithLength(s, n)) != NULL) return 0;
  end = v_value(s, s + n, 0);
  return end != NULL && ws(end, s + n) == s + n ? ENGRAM_ENOMEM : ENGRAM_EBACKEND;
}
