/*
 * jsonl_read.c — the import's line reader (jsonl_read.h): a fast path, and the strict path that is the rule
 * (engram__jsonl_read_strict, at the end). The strict path, which an import used for every line, walks a line
 * twice (engram__json_text_check, then cJSON_Parse) and builds a tree of the whole line, whose key, namespace and
 * number nodes are freed at once while the value and metadata live on in the store: two passes, and a dozen
 * allocations freed between ones kept. The fast path walks the line once, decodes the key and the namespace into
 * fixed buffers of the reader, converts the integers in place, and allocates only the value's and the metadata's
 * nodes — the trees the replica store takes.
 *
 * The fast path implements a subset of the strict rules and gives up (ENGRAM__JSONL_UNDECIDED) on anything
 * outside it, so it never decides against a line and never takes one the strict path would refuse: strings are
 * decoded as cJSON decodes them (escapes, surrogate pairs to UTF-8, raw control characters kept) and refused
 * when they hold NUL, a lone surrogate or bytes that are not UTF-8; numbers must match RFC 8259's grammar and are
 * converted by strtod with the locale's decimal point, as cJSON does; trees are linked as cJSON_Parse links them
 * (the first child's prev is the last one), so later cJSON calls on them behave the same.
 */
#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engram/source.h"
#include "jsonl_read.h"
#include "shared/json_canon.h"
#include "shared/json_text.h"

#define MAX_SAFE_INT 9007199254740992.0 /* 2^53: JSON numbers are doubles */
#define NUMBER_MAX 63                   /* cJSON reads at most 63 characters of a number */
#define STRING_INLINE 512               /* strings up to this many bytes are decoded on the stack */

typedef struct {
  const unsigned char *p, *end;
  char point;
  int nomem;
} rd_t;

void engram__jsonl_reader_init(engram__jsonl_reader_t *r) {
  const struct lconv *lc = localeconv();
  r->point = lc != NULL && lc->decimal_point != NULL && lc->decimal_point[0] != '\0' ? lc->decimal_point[0] : '.';
  r->raw_text = 0;
}

static void ws(rd_t *r) {
  while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\r' || *r->p == '\n')) r->p++;
}

static int hex4(const unsigned char *p, const unsigned char *end, unsigned *out) {
  unsigned v = 0;
  int i;
  if (end - p < 4) return 0;
  for (i = 0; i < 4; i++) {
    unsigned c = p[i];
    v <<= 4;
    if (c >= '0' && c <= '9') v |= c - '0';
    else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
    else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
    else return 0;
  }
  *out = v;
  return 1;
}

/* The length of the string at r->p (its opening quote) once decoded: the bytes up to the closing quote, an upper
 * bound (escapes only shrink). -1 when it does not close. */
static long raw_span(const rd_t *r) {
  const unsigned char *p = r->p + 1;
  for (;;) {
    const unsigned char *q = memchr(p, '"', (size_t)(r->end - p));
    const unsigned char *b;
    size_t slashes = 0;
    if (q == NULL) return -1;
    for (b = q; b > p && b[-1] == '\\'; b--) slashes++;
    if (slashes % 2 == 0) return (long)(q - (r->p + 1));
    p = q + 1;
  }
}

/* Decodes the string at r->p (its opening quote) into dst (cap bytes, room for the NUL included) and moves past
 * it. Returns its length, or -1: not a string the rules accept, or longer than cap - 1. */
static long decode(rd_t *r, char *dst, size_t cap) {
  const unsigned char *p = r->p + 1, *end = r->end;
  size_t n = 0;
  int high = 0;
  for (;;) {
    unsigned c, cp;
    if (p >= end) return -1;
    c = *p;
    if (c == '"') break;
    if (c != '\\') {
      if (c == 0) return -1;
      high |= c >= 0x80;
      if (n + 1 >= cap) return -1;
      dst[n++] = (char)c;
      p++;
      continue;
    }
    if (end - p < 2) return -1;
    switch (p[1]) {
      case '"': cp = '"'; break;
      case '\\': cp = '\\'; break;
      case '/': cp = '/'; break;
      case 'b': cp = '\b'; break;
      case 'f': cp = '\f'; break;
      case 'n': cp = '\n'; break;
      case 'r': cp = '\r'; break;
      case 't': cp = '\t'; break;
      case 'u': cp = 0x110000; break; /* below */
      default: return -1;
    }
    if (cp != 0x110000) {
      if (n + 1 >= cap) return -1;
      dst[n++] = (char)cp;
      p += 2;
      continue;
    }
    if (!hex4(p + 2, end, &cp) || cp == 0 || (cp >= 0xDC00 && cp <= 0xDFFF)) return -1;
    if (cp >= 0xD800 && cp <= 0xDBFF) {
      unsigned lo;
      if (end - p < 12 || p[6] != '\\' || p[7] != 'u' || !hex4(p + 8, end, &lo) || lo < 0xDC00 || lo > 0xDFFF)
        return -1;
      cp = 0x10000 + (((cp & 0x3FF) << 10) | (lo & 0x3FF));
      p += 12;
    } else {
      p += 6;
    }
    if (n + 5 > cap) return -1;
    if (cp < 0x80) {
      dst[n++] = (char)cp;
    } else if (cp < 0x800) {
      dst[n++] = (char)(0xC0 | (cp >> 6));
      dst[n++] = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      dst[n++] = (char)(0xE0 | (cp >> 12));
      dst[n++] = (char)(0x80 | ((cp >> 6) & 0x3F));
      dst[n++] = (char)(0x80 | (cp & 0x3F));
    } else {
      dst[n++] = (char)(0xF0 | (cp >> 18));
      dst[n++] = (char)(0x80 | ((cp >> 12) & 0x3F));
      dst[n++] = (char)(0x80 | ((cp >> 6) & 0x3F));
      dst[n++] = (char)(0x80 | (cp & 0x3F));
    }
  }
  dst[n] = '\0';
  /* Escapes give whole characters and never start with a continuation byte, so checking the decoded bytes checks
   * the raw ones. */
  if (high && !engram_utf8_valid(dst, n)) return -1;
  r->p = p + 1;
  return (long)n;
}

/* A string decoded into memory of cJSON's allocator (for a node's valuestring or member name). NULL: not
 * accepted, or no memory (r->nomem). */
static char *decode_alloc(rd_t *r) {
  char inline_buf[STRING_INLINE], *tmp = inline_buf, *out = NULL;
  long span = raw_span(r), n;
  if (span < 0) return NULL;
  if ((size_t)span + 1 > sizeof inline_buf && (tmp = engram_malloc((size_t)span + 1)) == NULL) {
    r->nomem = 1;
    return NULL;
  }
  if ((n = decode(r, tmp, (size_t)span + 1)) >= 0) {
    if ((out = cJSON_malloc((size_t)n + 1)) == NULL) r->nomem = 1;
    else memcpy(out, tmp, (size_t)n + 1);
  }
  if (tmp != inline_buf) engram_free(tmp);
  return out;
}

static int is_digit(const rd_t *r) { return r->p < r->end && *r->p >= '0' && *r->p <= '9'; }

/* A number at r->p as RFC 8259 writes it, converted as cJSON converts it. 0, or -1 (not one, or too long). */
static int number(rd_t *r, double *out) {
  const unsigned char *start = r->p;
  char buf[NUMBER_MAX + 1], *after;
  size_t n, i;
  int plain = 1; /* no fraction, no exponent */
  if (r->p < r->end && *r->p == '-') r->p++;
  if (r->p < r->end && *r->p == '0') r->p++;
  else if (!is_digit(r)) return -1;
  else while (is_digit(r)) r->p++;
  if (r->p < r->end && *r->p == '.') {
    r->p++;
    plain = 0;
    if (!is_digit(r)) return -1;
    while (is_digit(r)) r->p++;
  }
  if (r->p < r->end && (*r->p == 'e' || *r->p == 'E')) {
    r->p++;
    plain = 0;
    if (r->p < r->end && (*r->p == '+' || *r->p == '-')) r->p++;
    if (!is_digit(r)) return -1;
    while (is_digit(r)) r->p++;
  }
  n = (size_t)(r->p - start);
  if (n > NUMBER_MAX) return -1;
  if (plain && n - (start[0] == '-') <= 15) {
    /* an integer of at most 15 digits is a double exactly: strtod would give this very value (timestamps,
     * versions and most numbers of a value take this way) */
    uint64_t v = 0;
    for (i = start[0] == '-'; i < n; i++) v = v * 10 + (uint64_t)(start[i] - '0');
    *out = start[0] == '-' ? -(double)v : (double)v;
    return 0;
  }
  for (i = 0; i < n; i++) buf[i] = start[i] == '.' ? r->point : (char)start[i];
  buf[n] = '\0';
  *out = strtod(buf, &after);
  return after == buf + n ? 0 : -1;
}

static int literal(rd_t *r, const char *word, size_t n) {
  if ((size_t)(r->end - r->p) < n || memcmp(r->p, word, n) != 0) return -1;
  r->p += n;
  return 0;
}

static cJSON *node_or_nomem(rd_t *r, cJSON *node) {
  if (node == NULL) r->nomem = 1;
  return node;
}

/* The value at r->p as a tree of its own. NULL: not accepted, or no memory (r->nomem). */
static cJSON *value(rd_t *r, unsigned depth) {
  unsigned c;
  if (r->p >= r->end) return NULL;
  c = *r->p;
  if (c == '{' || c == '[') {
    cJSON *node, *last = NULL;
    unsigned close = c == '{' ? '}' : ']';
    if (depth > ENGRAM__JSONL_FAST_DEPTH) return NULL;
    if ((node = node_or_nomem(r, c == '{' ? cJSON_CreateObject() : cJSON_CreateArray())) == NULL) return NULL;
    r->p++;
    ws(r);
    if (r->p < r->end && *r->p == close) {
      r->p++;
      return node;
    }
    for (;;) {
      char *name = NULL;
      cJSON *child;
      if (c == '{') {
        if (r->p >= r->end || *r->p != '"' || (name = decode_alloc(r)) == NULL) goto fail;
        ws(r);
        if (r->p >= r->end || *r->p != ':') {
          cJSON_free(name);
          goto fail;
        }
        r->p++;
        ws(r);
      }
      if ((child = value(r, depth + 1)) == NULL) {
        cJSON_free(name);
        goto fail;
      }
      child->string = name;
      if (last == NULL) node->child = child;
      else {
        last->next = child;
        child->prev = last;
      }
      last = child;
      node->child->prev = last; /* as cJSON_Parse leaves it: appends are O(1) */
      ws(r);
      if (r->p >= r->end) goto fail;
      if (*r->p == ',') {
        r->p++;
        ws(r);
        continue;
      }
      if (*r->p != close) goto fail;
      r->p++;
      return node;
    }
  fail:
    cJSON_Delete(node);
    return NULL;
  }
  if (c == '"') {
    char *s = decode_alloc(r);
    cJSON *node;
    if (s == NULL) return NULL;
    if ((node = node_or_nomem(r, cJSON_CreateNull())) == NULL) {
      cJSON_free(s);
      return NULL;
    }
    node->type = cJSON_String;
    node->valuestring = s;
    return node;
  }
  if (c == '-' || (c >= '0' && c <= '9')) {
    double d;
    if (number(r, &d) != 0) return NULL;
    return node_or_nomem(r, cJSON_CreateNumber(d));
  }
  if (c == 't') return literal(r, "true", 4) == 0 ? node_or_nomem(r, cJSON_CreateTrue()) : NULL;
  if (c == 'f') return literal(r, "false", 5) == 0 ? node_or_nomem(r, cJSON_CreateFalse()) : NULL;
  if (c == 'n') return literal(r, "null", 4) == 0 ? node_or_nomem(r, cJSON_CreateNull()) : NULL;
  return NULL;
}

/* The value at r->p as a cJSON_Raw node of its own text, when that text is canonical (engram_json_is_canonical:
 * valid, and exactly what cJSON prints for its parse); NULL otherwise (r->p unmoved) or when memory ran out
 * (r->nomem). The reader's raw_text mode. */
static cJSON *raw_value(rd_t *r) {
  const char *end = engram__json_canonical_end((const char *)r->p, (const char *)r->end);
  size_t n;
  char *text;
  cJSON *node;
  if (end == NULL) return NULL;
  n = (size_t)(end - (const char *)r->p);
  if ((text = cJSON_malloc(n + 1)) == NULL || (node = cJSON_CreateNull()) == NULL) {
    if (text != NULL) cJSON_free(text);
    r->nomem = 1;
    return NULL;
  }
  memcpy(text, r->p, n);
  text[n] = '\0';
  node->type = cJSON_Raw;
  node->valuestring = text; /* freed by cJSON_Delete, as cJSON_CreateRaw's copy would be */
  r->p = (const unsigned char *)end;
  return node;
}

/* An integer member's value, with import.c's rule: an integer from min to 2^53. */
static int integer(rd_t *r, double min, int64_t *out) {
  double d;
  if (r->p >= r->end || (*r->p != '-' && (*r->p < '0' || *r->p > '9'))) return -1;
  if (number(r, &d) != 0 || !isfinite(d) || d != floor(d) || d < min || d > MAX_SAFE_INT) return -1;
  *out = (int64_t)d;
  return 0;
}

int engram__jsonl_read(engram__jsonl_reader_t *rdr, const char *line, size_t len, engram__jsonl_item_t *it) {
  static const char *const names[8] = {"key", "ns", "value", "metadata", "created_at_ms", "updated_at_ms",
                                       "expires_at_ms", "version"};
  static const unsigned char name_len[8] = {3, 2, 5, 8, 13, 13, 13, 7};
  rd_t r;
  unsigned seen = 0;
  memset(it, 0, sizeof *it);
  it->ns = "";
  it->version = 1;
  r.p = (const unsigned char *)line;
  r.end = r.p + len;
  r.point = rdr->point;
  r.nomem = 0;
  if (len >= 3 && memcmp(line, "\xEF\xBB\xBF", 3) == 0) r.p += 3;
  ws(&r);
  if (r.p >= r.end || *r.p != '{') goto undecided;
  r.p++;
  ws(&r);
  for (;;) {
    const unsigned char *name;
    size_t n;
    int k;
    int64_t v;
    long got;
    if (r.p >= r.end || *r.p != '"') goto undecided;
    name = ++r.p;
    while (r.p < r.end && *r.p != '"' && *r.p != '\\') r.p++;
    if (r.p >= r.end || *r.p != '"') goto undecided; /* an escaped name: the strict path */
    n = (size_t)(r.p - name);
    r.p++;
    for (k = 0; k < 8; k++)
      if (n == name_len[k] && memcmp(name, names[k], n) == 0) break;
    if (k == 8 || (seen & (1u << k))) goto undecided;
    seen |= 1u << k;
    ws(&r);
    if (r.p >= r.end || *r.p != ':') goto undecided;
    r.p++;
    ws(&r);
    switch (k) {
      case 0:
        if (r.p >= r.end || *r.p != '"' || (got = decode(&r, rdr->key, sizeof rdr->key)) <= 0) goto undecided;
        it->key = rdr->key;
        break;
      case 1:
        if (r.p >= r.end || *r.p != '"' || decode(&r, rdr->ns, sizeof rdr->ns) < 0) goto undecided;
        it->ns = rdr->ns;
        break;
      case 2:
        if (rdr->raw_text && (it->value = raw_value(&r)) != NULL) break;
        if (r.nomem || (it->value = value(&r, 1)) == NULL) goto undecided;
        break;
      case 3:
        if (r.p < r.end && *r.p == 'n') {
          if (literal(&r, "null", 4) != 0) goto undecided;
        } else if (r.p >= r.end || *r.p != '{') {
          goto undecided;
        } else if (rdr->raw_text && (it->metadata = raw_value(&r)) != NULL) {
          break;
        } else if (r.nomem || (it->metadata = value(&r, 1)) == NULL) {
          goto undecided;
        }
        break;
      case 4: if (integer(&r, 0, &it->created) != 0) goto undecided; it->has_created = 1; break;
      case 5: if (integer(&r, 0, &it->updated) != 0) goto undecided; it->has_updated = 1; break;
      case 6: if (integer(&r, 0, &it->expires) != 0) goto undecided; break;
      default:
        if (integer(&r, 1, &v) != 0) goto undecided;
        it->version = (uint64_t)v;
    }
    ws(&r);
    if (r.p < r.end && *r.p == ',') {
      r.p++;
      ws(&r);
      continue;
    }
    if (r.p < r.end && *r.p == '}') {
      r.p++;
      break;
    }
    goto undecided;
  }
  ws(&r);
  if (r.p != r.end || it->key == NULL || it->value == NULL) goto undecided;
  return ENGRAM__JSONL_READ;
undecided:
  cJSON_Delete(it->value);
  cJSON_Delete(it->metadata);
  memset(it, 0, sizeof *it);
  return r.nomem ? ENGRAM_ENOMEM : ENGRAM__JSONL_UNDECIDED;
}

static int int_member(const cJSON *v, const char *name, double min, int64_t *out, char *err, size_t errlen) {
  double d;
  if (!cJSON_IsNumber(v) || !isfinite(d = v->valuedouble) || d != floor(d) || d < min || d > MAX_SAFE_INT) {
    snprintf(err, errlen, "%s: must be an integer >= %.0f", name, min);
    return -1;
  }
  *out = (int64_t)d;
  return 0;
}

/* ---- The strict path ---- */

/* A member detached from the line's object, without its member name: a tree of its own, as the fast path builds. */
static cJSON *unnamed(cJSON *v) {
  if (!(v->type & cJSON_StringIsConst)) cJSON_free(v->string);
  v->string = NULL;
  return v;
}

/* The text checked, parsed by cJSON, the members checked. On success the key and the namespace are copied into the
 * reader's buffers (they fit: checked) and value and metadata are detached from the line's tree, so *it is what
 * the fast reader gives. */
int engram__jsonl_read_strict(engram__jsonl_reader_t *rd, const char *line, size_t len, engram__jsonl_item_t *it,
                              char *err, size_t errlen) {
  engram__json_issue_t is;
  const cJSON *c;
  const cJSON *value = NULL, *metadata = NULL;
  cJSON *doc;
  char msg[400];
  int seen[8] = {0};
  static const char *const names[] = {"key", "ns", "value", "metadata", "created_at_ms", "updated_at_ms",
                                      "expires_at_ms", "version"};
  memset(it, 0, sizeof *it);
  it->ns = "";
  it->version = 1;
  if (engram__json_text_check(line, len, "", &is) != 0) {
    snprintf(err, errlen, "%s", engram__json_issue_message(&is, "the line", msg, sizeof msg));
    return -1;
  }
  if ((doc = cJSON_ParseWithLength(line, len)) == NULL) return ENGRAM_ENOMEM; /* checked above: only memory */
  if (!cJSON_IsObject(doc)) {
    snprintf(err, errlen, "not a JSON object");
    goto bad;
  }
  for (c = doc->child; c != NULL; c = c->next) {
    int k;
    int64_t n;
    for (k = 0; k < 8; k++)
      if (strcmp(c->string, names[k]) == 0) break;
    if (k == 8) {
      snprintf(err, errlen, "unknown member \"%s\"", engram__quote(msg, 80, c->string));
      goto bad;
    }
    if (seen[k]++) {
      snprintf(err, errlen, "member \"%s\" given twice", names[k]);
      goto bad;
    }
    switch (k) {
      case 0:
        if (!cJSON_IsString(c) || c->valuestring[0] == '\0' || strlen(c->valuestring) > ENGRAM_KEY_MAX) {
          snprintf(err, errlen, "key: must be a string of 1..%d bytes", ENGRAM_KEY_MAX);
          goto bad;
        }
        it->key = c->valuestring;
        break;
      case 1:
        if (!cJSON_IsString(c) || strlen(c->valuestring) > ENGRAM_NAMESPACE_MAX) {
          snprintf(err, errlen, "ns: must be a string of 0..%d bytes", ENGRAM_NAMESPACE_MAX);
          goto bad;
        }
        it->ns = c->valuestring;
        break;
      case 2: value = c; break;
      case 3:
        if (!cJSON_IsObject(c) && !cJSON_IsNull(c)) {
          snprintf(err, errlen, "metadata: must be an object or null");
          goto bad;
        }
        metadata = cJSON_IsObject(c) ? c : NULL;
        break;
      case 4: if (int_member(c, names[k], 0, &it->created, err, errlen)) goto bad; it->has_created = 1; break;
      case 5: if (int_member(c, names[k], 0, &it->updated, err, errlen)) goto bad; it->has_updated = 1; break;
      case 6: if (int_member(c, names[k], 0, &it->expires, err, errlen)) goto bad; break;
      default:
        if (int_member(c, names[k], 1, &n, err, errlen)) goto bad;
        it->version = (uint64_t)n;
    }
  }
  if (it->key == NULL) {
    snprintf(err, errlen, "key: missing");
    goto bad;
  }
  if (value == NULL) {
    snprintf(err, errlen, "value: missing");
    goto bad;
  }
  memcpy(rd->key, it->key, strlen(it->key) + 1);
  it->key = rd->key;
  memcpy(rd->ns, it->ns, strlen(it->ns) + 1);
  it->ns = rd->ns;
  it->value = unnamed(cJSON_DetachItemViaPointer(doc, (cJSON *)value));
  it->metadata = metadata ? unnamed(cJSON_DetachItemViaPointer(doc, (cJSON *)metadata)) : NULL;
  cJSON_Delete(doc);
  return 0;
bad:
  cJSON_Delete(doc);
  memset(it, 0, sizeof *it);
  return -1;
}
