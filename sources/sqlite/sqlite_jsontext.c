/*
 * sqlite_jsontext.c — the SQLite source's answer to an export's reads (ENGRAM_REQ_JSON_TEXT, include/engram/source.h):
 * the value and metadata columns already hold compact JSON text, written by sqlite_json.c exactly as
 * cJSON_PrintUnformatted prints the tree, and an export only prints them again. Parsing each row into a cJSON tree
 * on this thread, then printing and freeing it on the home loop, was most of an SQLite export's time; here the
 * stored text is handed over as a cJSON_Raw node (two allocations) and the export copies its bytes.
 *
 * The text is handed over only when it is in the form cJSON itself would print for it, so the export's bytes never
 * depend on who wrote the row (another program, an older engram): no whitespace outside strings; strings with only
 * the escapes cJSON writes (\" \\ \b \f \n \r \t, and \u00XX in lower case for the other control characters, never
 * \u0000), valid UTF-8; numbers that are integers of at most 15 digits (cJSON prints those as their digits,
 * -0 included); nesting at most 1,000 deep (the parse limit). Anything else — a fraction, an exponent,
 * "\/", "\u00e9", a space — is parsed and printed as before (engram__sq_parse_col), and text that is not JSON fails
 * the same way. Called by sqlite.c's retrieve_many and by sqlite_query.c's list_keys for an export's pages of whole
 * items (ENGRAM_REQ_LIST_ITEMS); calls only sqlite_db.c's column helpers.
 */
#include <stdio.h>
#include <string.h>

#include "sqlite_jsontext.h"

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

int engram__sq_text_is_canonical(const char *p, size_t len) {
  const char *e = p + len;
  char close[DEPTH_MAX];
  int depth = 0;
value:
  if (p >= e) return 0;
  switch (*p) {
    case '{':
    case '[':
      if (depth == DEPTH_MAX) return 0;
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
      if ((p = string_end(p, e)) == NULL) return 0;
      goto after;
    case 't':
      if (e - p < 4 || memcmp(p, "true", 4) != 0) return 0;
      p += 4;
      goto after;
    case 'f':
      if (e - p < 5 || memcmp(p, "false", 5) != 0) return 0;
      p += 5;
      goto after;
    case 'n':
      if (e - p < 4 || memcmp(p, "null", 4) != 0) return 0;
      p += 4;
      goto after;
    default:
      if ((p = number_end(p, e)) == NULL) return 0;
      goto after;
  }
member: /* an object's member name and its colon */
  if (p >= e || *p != '"' || (p = string_end(p, e)) == NULL || p >= e || *p != ':') return 0;
  p++;
  goto value;
after: /* a value ended: the document, a comma, or its container's end */
  if (depth == 0) return p == e;
  if (p >= e) return 0;
  if (*p == ',') {
    p++;
    if (close[depth - 1] == '}') goto member;
    goto value;
  }
  if (*p != close[depth - 1]) return 0;
  p++;
  depth--;
  goto after;
}

/* A column as a raw node when its text is canonical, else parsed; NULL stays NULL. */
static int text_col(sq_t *s, sqlite3_stmt *st, int col, const char *key, const char *what, cJSON **out) {
  const char *text = (const char *)sqlite3_column_text(st, col);
  *out = NULL;
  if (text == NULL) return 0;
  if (!engram__sq_text_is_canonical(text, (size_t)sqlite3_column_bytes(st, col)))
    return engram__sq_parse_col(s, st, col, key, what, out);
  if ((*out = cJSON_CreateRaw(text)) == NULL) {
    snprintf(s->err, sizeof s->err, "out of memory");
    return ENGRAM_ENOMEM;
  }
  return 0;
}

/* Adds the row of st as an item, its columns at value, meta, created, updated, expires, version. */
static int add_text(sq_t *s, engram_request_t *req, sqlite3_stmt *st, const int col[6], const char *ns,
                    const char *key, int with_meta) {
  engram_item_t it;
  cJSON *value = NULL, *meta = NULL;
  int rc;
  memset(&it, 0, sizeof it);
  it.key = key;
  it.ns = ns;
  it.created_at_ms = sqlite3_column_int64(st, col[ROW_CREATED]);
  it.updated_at_ms = sqlite3_column_int64(st, col[ROW_UPDATED]);
  it.expires_at_ms = sqlite3_column_int64(st, col[ROW_EXPIRES]);
  it.version = (uint64_t)sqlite3_column_int64(st, col[ROW_VERSION]);
  it.score = 1.0;
  if (with_meta && (rc = text_col(s, st, col[ROW_META], key, "metadata", &meta)) != 0) return rc;
  if ((rc = text_col(s, st, col[ROW_VALUE], key, "value", &value)) != 0) {
    cJSON_Delete(meta);
    return rc;
  }
  it.value = value;
  it.metadata = meta;
  return engram_reply_add(req, &it, ENGRAM_REPLY_OWN_VALUE | ENGRAM_REPLY_OWN_METADATA);
}

int engram__sq_add_row_text(sq_t *s, engram_request_t *req, sqlite3_stmt *st, const char *ns, const char *key,
                            int with_meta) {
  static const int col[6] = {ROW_VALUE, ROW_META, ROW_CREATED, ROW_UPDATED, ROW_EXPIRES, ROW_VERSION};
  return add_text(s, req, st, col, ns, key, with_meta);
}

int engram__sq_add_listed_text(sq_t *s, engram_request_t *req, sqlite3_stmt *st, const char *ns, const char *key) {
  static const int col[6] = {LIST_ITEM_VALUE, LIST_ITEM_META, 2, 3, 4, LIST_ITEM_VERSION};
  return add_text(s, req, st, col, ns, key, 1);
}
