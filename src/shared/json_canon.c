/*
 * json_canon.c — is a JSON text exactly what cJSON_PrintUnformatted prints for its parse? (include/engram/source.h,
 * engram_json_is_canonical). Such text can be handed over as it is — a cJSON_Raw node — wherever the bytes
 * cJSON would print are wanted: SQLite's answers to an export (the stored text, sources/sqlite/sqlite_jsontext.c)
 * and an import's values on their way into SQLite (the line's own text, src/export/jsonl_read.c), so neither
 * builds a tree only to print it again. The rules: no whitespace outside strings; strings with only the escapes
 * cJSON writes (\" \\ \b \f \n \r \t, and \u00XX in lower case for the other control characters, never
 * \u0000), valid UTF-8 without NUL; numbers that are integers of at most 15 digits (cJSON prints those as their
 * digits, -0 included); nesting at most 1,000 deep (cJSON's parse limit). Anything else — a fraction, an exponent,
 * "\/", "\u00e9", a space — is not canonical (the caller parses and prints it), and text that is not JSON is not
 * canonical either. Moved here from sqlite_jsontext.c so both users share one checker.
 */
#include <stddef.h>
#include <string.h>

#include "engram/source.h"
#include "shared/json_canon.h"

#define DEPTH_MAX 1000

static int hex_lower(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

/* p at a string's opening quote: the byte after its closing quote when the string is as cJSON prints strings,
 * else NULL. */
static const char *string_end(const char *p, const char *e) {
  const char *start = ++p;
  while (p < e) {
    unsigned char c = (unsigned char)*p;
    if (c == '"') return engram_utf8_valid(start, (size_t)(p - start)) ? p + 1 : NULL;
    if (c < 0x20) return NULL;
    if (c != '\\') {
      p++;
      continue;
    }
    if (e - p < 2) return NULL;
    switch (p[1]) {
      case '"': case '\\': case 'b': case 'f': case 'n': case 'r': case 't':
        p += 2;
        break;
      case 'u': {
        int lo, v;
        if (e - p < 6 || p[2] != '0' || p[3] != '0' || (p[4] != '0' && p[4] != '1') || (lo = hex_lower(p[5])) < 0)
          return NULL;
        v = (p[4] - '0') * 16 + lo;
        if (v == 0 || v == '\b' || v == '\f' || v == '\n' || v == '\r' || v == '\t') return NULL;
        p += 6;
        break;
      }
      default:
        return NULL;
    }
  }
  return NULL;
}

/* p at a number: the byte after it when it is an integer cJSON prints as the same digits, else NULL. */
static const char *number_end(const char *p, const char *e) {
  const char *digits;
  int neg = *p == '-';
  if (neg) p++;
  if (p >= e) return NULL;
  if (*p == '0') {
    p++; /* "-0" too: cJSON prints -0.0 as -0 */
  } else if (*p >= '1' && *p <= '9') {
    digits = p;
    while (p < e && *p >= '0' && *p <= '9') p++;
    if (p - digits > 15) return NULL;
  } else {
    return NULL;
  }
  if (p < e && (*p == '.' || *p == 'e' || *p == 'E' || (*p >= '0' && *p <= '9'))) return NULL;
  return p;
}

const char *engram__json_canonical_end(const char *p, const char *e) {
  char close[DEPTH_MAX];
  int depth = 0;
value:
  if (p >= e) return NULL;
  switch (*p) {
    case '{':
    case '[':
      if (depth == DEPTH_MAX) return NULL;
      close[depth++] = *p == '{' ? '}' : ']';
      p++;
      if (p < e && *p == close[depth - 1]) {
        p++;
        depth--;
        goto after;
      }
      if (close[depth - 1] == '}') goto member;
      goto value;
    case '"':
      if ((p = string_end(p, e)) == NULL) return NULL;
      goto after;
    case 't':
      if (e - p < 4 || memcmp(p, "true", 4) != 0) return NULL;
      p += 4;
      goto after;
    case 'f':
      if (e - p < 5 || memcmp(p, "false", 5) != 0) return NULL;
      p += 5;
      goto after;
    case 'n':
      if (e - p < 4 || memcmp(p, "null", 4) != 0) return NULL;
      p += 4;
      goto after;
    default:
      if ((p = number_end(p, e)) == NULL) return NULL;
      goto after;
  }
member: /* an object's member name and its colon */
  if (p >= e || *p != '"' || (p = string_end(p, e)) == NULL || p >= e || *p != ':') return NULL;
  p++;
  goto value;
after: /* a value ended: the document, a comma, or its container's end */
  if (depth == 0) return p;
  if (p >= e) return NULL;
  if (*p == ',') {
    p++;
    if (close[depth - 1] == '}') goto member;
    goto value;
  }
  if (*p != close[depth - 1]) return NULL;
  p++;
  depth--;
  goto after;
}

int engram_json_is_canonical(const char *text, size_t len) {
  return text != NULL && engram__json_canonical_end(text, text + len) == text + len;
}
