/*
 * redis_json.c — JSON text in and out of Redis (see redis_json.h). Printing tries cJSON_PrintPreallocated into
 * the scratch buffer first. Parsing is cJSON's; when it fails, a non-allocating syntax check decides whether
 * the failure was an allocation (the text is valid JSON: ENGRAM_ENOMEM) or the text itself (ENGRAM_EBACKEND).
 */
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

int engram__redis_parse_json(const char *s, size_t n, cJSON **out) {
  const char *end;
  if ((*out = cJSON_ParseWithLength(s, n)) != NULL) return 0;
  end = v_value(s, s + n, 0);
  return end != NULL && ws(end, s + n) == s + n ? ENGRAM_ENOMEM : ENGRAM_EBACKEND;
}
