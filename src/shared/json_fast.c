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
 *
 * The same parser also builds the tree in one allocation (engram__json_fast_parse_block, under
 * engram_json_parse_reply): a first pass counts the nodes (one, plus one per comma and per non-empty container)
 * and the string bytes, the block is allocated once, and the parse takes nodes and strings from it in order; the
 * root is flagged so that cJSON_Delete of it frees the block whole. A reply's 50 messages then cost 50 frees
 * instead of ~500 (a conversation window read from Redis: docs/conversations.md). Where the counts are wrong
 * (text that is not JSON) the block runs out and the parse gives up, as it does on any shape it does not take.
 */
#include <limits.h>
#include <stdint.h>
#include <string.h>

#include "shared/json_fast.h"

#define FAST_DEPTH 64

typedef struct {
  const char *p, *e;
  int depth;
  /* One block (engram__json_fast_parse_block): the nodes and the strings taken in order from the block's two parts,
   * counted beforehand (measure); blk 0: each from cJSON_malloc, as cJSON's parser does. */
  int blk;
  cJSON *node, *node_end;
  char *str, *str_end;
} rd_t;

/* A node of the given type, zeroed. */
static cJSON *new_node(rd_t *r, int type) {
  cJSON *n;
  if (!r->blk) {
    if ((n = cJSON_CreateNull()) != NULL) n->type = type;
    return n;
  }
  if (r->node == r->node_end) return NULL;
  n = r->node++;
  memset(n, 0, sizeof *n);
  n->type = type;
  return n;
}

/* Room for a string of n bytes and its NUL. */
static char *new_str(rd_t *r, size_t n) {
  char *s;
  if (!r->blk) return cJSON_malloc(n + 1);
  if ((size_t)(r->str_end - r->str) < n + 1) return NULL;
  s = r->str;
  r->str += n + 1;
  return s;
}

/* What a failed parse built: freed (heap), or left in the block that goes with it. */
static void drop_str(rd_t *r, char *s) {
  if (!r->blk) cJSON_free(s);
}

static void drop(rd_t *r, cJSON *n) {
  if (!r->blk) cJSON_Delete(n);
}

static cJSON *rd_value(rd_t *r);

static void rd_ws(rd_t *r) {
  while (r->p < r->e && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r')) r->p++;
}

/* The first quote, backslash or control character in [q, e) (e when none): eight bytes at a time, the byte found by
 * the lowest flag of the word (the borrow of the classic test for a zero byte can flag bytes above a true match,
 * never below one), then the tail byte by byte. */
static inline const char *special(const char *q, const char *e) {
  const uint64_t ones = 0x0101010101010101u, highs = 0x8080808080808080u;
  while (e - q >= 8) {
    uint64_t v, m;
    memcpy(&v, q, 8);
    m = (((v ^ (ones * '"')) - ones) & ~(v ^ (ones * '"')) & highs) |
        (((v ^ (ones * '\\')) - ones) & ~(v ^ (ones * '\\')) & highs) | ((v - ones * 0x20) & ~v & highs);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (m != 0) return q + (__builtin_ctzll(m) >> 3); /* the lowest flag is the first byte in memory */
#else
    if (m != 0) break; /* elsewhere the byte loop below finds it */
#endif
    q += 8;
  }
  while (q < e && *q != '"' && *q != '\\' && (unsigned char)*q >= 0x20) q++;
  return q;
}

/* A string at r->p (the opening quote): its bytes unescaped into memory from cJSON_malloc, or NULL (give up, or out
 * of memory: either way cJSON decides). */
static char *rd_string(rd_t *r) {
  const char *s = r->p + 1, *q;
  size_t escapes = 0, n;
  char *out, *o;
  for (q = s;;) {
    q = special(q, r->e);
    if (q >= r->e) return NULL;
    if (*q == '"') break;
    if ((unsigned char)*q < 0x20) return NULL;
    if (++q >= r->e) return NULL; /* a backslash: what it escapes */
    switch (*q) {
      case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't': break;
      default: return NULL; /* \u and anything else: cJSON's */
    }
    escapes++;
    q++;
  }
  n = (size_t)(q - s) - escapes;
  if ((out = new_str(r, n)) == NULL) return NULL;
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
  cJSON *n;
  double v = 0;
  int neg = 0, digits = 0;
  if (*q == '-') neg = 1, q++;
  if (q >= r->e || *q < '0' || *q > '9') return NULL;
  if (*q == '0' && q + 1 < r->e && q[1] >= '0' && q[1] <= '9') return NULL; /* "01": cJSON's */
  for (; q < r->e && *q >= '0' && *q <= '9'; q++, digits++) v = v * 10 + (*q - '0');
  if (digits > 15 || (q < r->e && (*q == '.' || *q == 'e' || *q == 'E' || *q == '+' || *q == '-'))) return NULL;
  r->p = q;
  if (neg) v = -v;
  if (!r->blk) return cJSON_CreateNumber(v);
  if ((n = new_node(r, cJSON_Number)) != NULL) { /* as cJSON_CreateNumber sets it: valueint saturated */
    n->valuedouble = v;
    n->valueint = v >= INT_MAX ? INT_MAX : v <= (double)INT_MIN ? INT_MIN : (int)v;
  }
  return n;
}

static int rd_word(rd_t *r, const char *w, size_t n) {
  if ((size_t)(r->e - r->p) < n || memcmp(r->p, w, n) != 0) return 0;
  r->p += n;
  return 1;
}

/* The members (object) or elements (array) after the opening bracket, up to and including the closing one. */
static cJSON *rd_container(rd_t *r, int object) {
  cJSON *c = new_node(r, object ? cJSON_Object : cJSON_Array), *item;
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
      drop(r, item);
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
  drop_str(r, key);
  drop(r, c);
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
      if ((v = new_node(r, cJSON_String)) == NULL) return NULL; /* first: a block's root is its first node */
      if ((s = rd_string(r)) == NULL) {
        drop(r, v);
        return NULL;
      }
      v->valuestring = s;
      return v;
    case 't': return rd_word(r, "true", 4) ? new_node(r, cJSON_True) : NULL;
    case 'f': return rd_word(r, "false", 5) ? new_node(r, cJSON_False) : NULL;
    case 'n': return rd_word(r, "null", 4) ? new_node(r, cJSON_NULL) : NULL;
    default: return rd_number(r);
  }
}

cJSON *engram__json_fast_parse(const char *text, size_t len) {
  rd_t r;
  cJSON *v;
  memset(&r, 0, sizeof r);
  r.p = text;
  r.e = text + len;
  rd_ws(&r);
  if ((v = rd_value(&r)) != NULL) {
    rd_ws(&r);
    if (r.p == r.e) return v;
    cJSON_Delete(v);
  }
  return NULL;
}

/* The nodes and string bytes a parse of [p, e) takes, for a text the fast path may take: one node for the root,
 * one more for each comma and for each container that is not empty; each string (keys too) its bytes between the
 * quotes (escapes only shorten it) and a NUL. Strings are skipped 8 bytes at a time. Returns 0 when the text holds
 * what the fast path gives up on anyway — a fraction or an exponent, an integer of more than 15 digits, a "\u"
 * escape, a raw control character in a string, nesting deeper than FAST_DEPTH — so that no block is allocated for
 * a parse that cannot answer; else 1. A text that is not JSON may pass: its counts are then wrong, and the parse
 * gives up when the block runs out. */
static int measure(const char *p, const char *e, size_t *nodes, size_t *bytes) {
  size_t n = 1, b = 0, digits = 0;
  int depth = 0;
  while (p < e) {
    char c = *p++;
    if (c >= '0' && c <= '9') {
      if (++digits > 15) return 0;
      continue;
    }
    if (digits != 0 && (c == '.' || c == 'e' || c == 'E')) return 0;
    digits = 0;
    if (c == '"') {
      const char *s = p;
      for (;;) {
        p = special(p, e);
        if (p >= e || *p == '"') break;
        if (*p != '\\' || e - p < 2 || p[1] == 'u') return 0; /* a control character, a cut escape, or \u */
        p += 2;
      }
      b += (size_t)(p - s) + 1;
      if (p < e) p++; /* the closing quote */
    } else if (c == ',') {
      n++;
    } else if (c == '[' || c == '{') {
      const char *q = p;
      if (++depth > FAST_DEPTH) return 0;
      while (q < e && (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r')) q++;
      if (q < e && *q != ']' && *q != '}') n++;
    } else if (c == ']' || c == '}') {
      depth--;
    }
  }
  *nodes = n;
  *bytes = b;
  return 1;
}

cJSON *engram__json_fast_parse_block(const char *text, size_t len) {
  rd_t r;
  cJSON *v;
  size_t nodes, bytes;
  char *block;
  if (!measure(text, text + len, &nodes, &bytes) || nodes > (SIZE_MAX - bytes) / sizeof(cJSON) ||
      (block = cJSON_malloc(nodes * sizeof(cJSON) + bytes)) == NULL)
    return NULL;
  memset(&r, 0, sizeof r);
  r.p = text;
  r.e = text + len;
  r.blk = 1;
  r.node = (cJSON *)(void *)block;
  r.node_end = r.node + nodes;
  r.str = block + nodes * sizeof(cJSON);
  r.str_end = r.str + bytes;
  rd_ws(&r);
  if ((v = rd_value(&r)) != NULL) {
    rd_ws(&r);
    if (r.p == r.e) {
      v->type |= cJSON_IsReference | ENGRAM__CJSON_BLOCK; /* cJSON_Delete of the root frees the block whole */
      return v;
    }
  }
  cJSON_free(block);
  return NULL;
}
