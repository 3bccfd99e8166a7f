/*
 * json_text.c — the input rules for JSON (json_text.h).
 *
 * engram__json_text_check walks the text once, left to right, with an explicit stack (one bit per level for
 * "object or array", and the member name or index of the first 32 levels for the path), so its time is linear
 * and its stack use fixed however deep the nesting. It accepts what RFC 8259 accepts, plus a leading UTF-8
 * byte-order mark and raw control characters inside strings (both of which cJSON accepts too), and refuses
 * strings holding "\u0000", bytes that are not UTF-8, or an escaped lone surrogate, and any text after the
 * document. A text it accepts parses in cJSON to the same strings, none of them cut.
 *
 * engram__json_tree_check applies the string rules to a tree a C caller built: one pass over the nodes, the
 * UTF-8 check fused with the walk to the terminating NUL, the path built only when something is wrong.
 *
 * The quoting functions put caller text into messages: cut on character boundaries, control characters and
 * invalid bytes escaped, so a message is always valid UTF-8 and prints on one line.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "engram/source.h"
#include "shared/json_fast.h"
#include "shared/json_text.h"

#define PATH_LEVELS 32    /* levels whose member name or index a path shows */
#define NAME_IN_PATH 48   /* bytes of one member name a path shows */
#define TREE_INLINE 64    /* tree walk: levels kept on the C stack before the walk takes a heap stack */

/* ---- UTF-8 ---- */

/* Length of the valid UTF-8 character at p (n bytes available, n ≥ 1), or 0 when there is none. Reads the bytes
 * in order and stops at the first that does not belong, so a NUL-terminated string is never read past its end. */
static size_t utf8_char(const unsigned char *p, size_t n) {
  unsigned c = p[0], lo = 0x80, hi = 0xBF;
  size_t len, i;
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) len = 2;
  else if (c >= 0xE0 && c <= 0xEF) {
    len = 3;
    if (c == 0xE0) lo = 0xA0; /* else overlong */
    if (c == 0xED) hi = 0x9F; /* else a surrogate */
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4;
    if (c == 0xF0) lo = 0x90; /* else overlong */
    if (c == 0xF4) hi = 0x8F; /* else above U+10FFFF */
  } else {
    return 0;
  }
  if (n < len || p[1] < lo || p[1] > hi) return 0;
  for (i = 2; i < len; i++)
    if ((p[i] & 0xC0) != 0x80) return 0;
  return len;
}

/* 1 when the NUL-terminated s is valid UTF-8. A short ASCII string is done in one loop; a longer one takes
 * glibc's strlen, then ASCII 32 bytes at a time (memcpy loads, within the string): checking a 200-byte ASCII
 * string costs less than copying it. */
static int utf8_cstr(const char *s) {
  const unsigned char *p = (const unsigned char *)s;
  size_t n, i;
  for (i = 0; i < 8; i++) {
    if (p[i] == 0) return 1;
    if (p[i] >= 0x80) break;
  }
  n = i + strlen(s + i);
  while (i < n) {
    size_t cl;
    i = engram__ascii_run(p, i, n);
    if (i == n) return 1;
    if ((cl = utf8_char(p + i, n - i)) == 0) return 0;
    i += cl;
  }
  return 1;
}

/* ---- Quoting ---- */

size_t engram__text_append_quoted(char *buf, size_t size, size_t pos, const char *s, size_t n, size_t max, int quotes) {
  const unsigned char *p = (const unsigned char *)s;
  size_t i = 0, start, limit, mark;
  char esc[8];
  if (size == 0) return 0;
  if (pos >= size) pos = size - 1;
  start = mark = pos;
  limit = size - 1 - pos;
  if (max < limit) limit = max;
  while (i < n) {
    size_t cl = utf8_char(p + i, n - i), w;
    const char *out = (const char *)p + i;
    if (cl == 0) {
      snprintf(esc, sizeof esc, "\\x%02x", p[i]);
      cl = 1;
      out = esc;
    } else if (cl == 1 && (p[i] < 0x20 || p[i] == 0x7F || (quotes && (p[i] == '"' || p[i] == '\\')))) {
      if (p[i] == '\n') strcpy(esc, "\\n");
      else if (p[i] == '\t') strcpy(esc, "\\t");
      else if (p[i] == '\r') strcpy(esc, "\\r");
      else if (p[i] == '"' || p[i] == '\\') esc[0] = '\\', esc[1] = (char)p[i], esc[2] = '\0';
      else snprintf(esc, sizeof esc, "\\u%04x", p[i]);
      out = esc;
    }
    w = out == esc ? strlen(esc) : cl;
    if (pos - start + w > limit) { /* does not fit: back to the last place where "..." fits after it */
      pos = mark;
      if (limit >= 3) {
        memcpy(buf + pos, "...", 3);
        pos += 3;
      }
      break;
    }
    memcpy(buf + pos, out, w);
    pos += w;
    i += cl;
    if (pos - start + 3 <= limit) mark = pos;
  }
  buf[pos] = '\0';
  return pos;
}

const char *engram__quote(char *buf, size_t size, const char *s) {
  if (size == 0) return "";
  buf[0] = '\0';
  if (s != NULL) engram__text_append_quoted(buf, size, 0, s, strlen(s), size - 1, 1);
  return buf;
}

const char *engram__text_clean(char *buf, size_t size, const char *s) {
  if (size == 0) return "";
  buf[0] = '\0';
  if (s != NULL) engram__text_append_quoted(buf, size, 0, s, strlen(s), size - 1, 0);
  return buf;
}

/* ---- Paths ---- */

static size_t path_add(char *path, size_t pos, const char *s) {
  return engram__text_append_quoted(path, sizeof ((engram__json_issue_t *)0)->path, pos, s, strlen(s), (size_t)-1, 0);
}

static size_t path_name(char *path, size_t pos, const char *name, size_t n) {
  if (pos > 0) pos = path_add(path, pos, ".");
  return engram__text_append_quoted(path, sizeof ((engram__json_issue_t *)0)->path, pos, name, n, NAME_IN_PATH, 0);
}

static size_t path_index(char *path, size_t pos, size_t index) {
  char ix[32];
  snprintf(ix, sizeof ix, "[%zu]", index);
  return path_add(path, pos, ix);
}

static void issue_init(engram__json_issue_t *out) { memset(out, 0, sizeof *out); }

/* ---- The text check ---- */

typedef struct {
  size_t key, n; /* object: the current member name's text (offset, length); array: n = the current index */
} frame_t;

typedef struct {
  const unsigned char *t;
  size_t len, pos;
  const char *root;
  unsigned depth;
  unsigned char is_obj[(ENGRAM__JSON_DEPTH_MAX + 7) / 8];
  frame_t fr[PATH_LEVELS];
  engram__json_issue_t *out;
  int syntax_only; /* engram_json_parse's verdict: only what makes cJSON refuse a text (no string rules) */
} walk_t;

static int obj_at(const walk_t *w, unsigned level) { return (w->is_obj[level / 8] >> (level % 8)) & 1; }

/* The path of the value that is the current child of the first `levels` containers. */
static void walk_path(walk_t *w, unsigned levels) {
  char *path = w->out->path;
  size_t pos = path_add(path, 0, w->root);
  unsigned i;
  for (i = 0; i < levels; i++) {
    if (i == PATH_LEVELS) {
      path_add(path, pos, "...");
      return;
    }
    if (obj_at(w, i)) pos = path_name(path, pos, (const char *)w->t + w->fr[i].key, w->fr[i].n);
    else pos = path_index(path, pos, w->fr[i].n);
  }
}

static int fail(walk_t *w, engram__json_problem_t problem, size_t offset, int in_name, unsigned levels) {
  w->out->problem = problem;
  w->out->offset = offset;
  w->out->has_offset = 1;
  w->out->in_name = in_name;
  if (problem == ENGRAM__JSON_SYNTAX || problem == ENGRAM__JSON_TRAILING) path_add(w->out->path, 0, w->root);
  else walk_path(w, levels);
  return ENGRAM_EINVAL;
}

static int hex4(const walk_t *w, size_t at, unsigned *cp) {
  size_t i;
  unsigned v = 0;
  if (at > w->len || w->len - at < 4) return 0;
  for (i = 0; i < 4; i++) {
    unsigned c = w->t[at + i];
    v <<= 4;
    if (c >= '0' && c <= '9') v |= c - '0';
    else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
    else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
    else return 0;
  }
  *cp = v;
  return 1;
}

static void skip_ws(walk_t *w) {
  while (w->pos < w->len) {
    unsigned char c = w->t[w->pos];
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
    w->pos++;
  }
}

/* A string at w->pos (its opening quote); is_name: a member name (a problem then names the object). */
static int string(walk_t *w, int is_name) {
  unsigned levels = is_name ? w->depth - 1 : w->depth;
  const unsigned char *t = w->t;
  w->pos++;
  for (;;) {
    size_t at = w->pos, cl;
    unsigned c, cp, lo;
    if (at >= w->len) return fail(w, ENGRAM__JSON_SYNTAX, at, 0, 0);
    c = t[at];
    if (c == '"') {
      w->pos++;
      return 0;
    }
    if (c == '\\') {
      if (at + 1 >= w->len) return fail(w, ENGRAM__JSON_SYNTAX, at + 1, 0, 0);
      c = t[at + 1];
      if (c != 'u') {
        if (c != '"' && c != '\\' && c != '/' && c != 'b' && c != 'f' && c != 'n' && c != 'r' && c != 't')
          return fail(w, ENGRAM__JSON_SYNTAX, at, 0, 0);
        w->pos += 2;
        continue;
      }
      if (!hex4(w, at + 2, &cp)) return fail(w, ENGRAM__JSON_SYNTAX, at, 0, 0);
      if (cp == 0 || (cp >= 0xD800 && cp <= 0xDFFF)) {
        if (cp >= 0xD800 && cp <= 0xDBFF && at + 7 < w->len && t[at + 6] == '\\' && t[at + 7] == 'u' &&
            hex4(w, at + 8, &lo) && lo >= 0xDC00 && lo <= 0xDFFF) {
          w->pos += 12; /* a surrogate pair: one character */
          continue;
        }
        if (w->syntax_only) { /* cJSON reads "\u0000" (and cuts the string there) but refuses a lone surrogate */
          if (cp != 0) return fail(w, ENGRAM__JSON_SYNTAX, at, 0, 0);
          w->pos += 6;
          continue;
        }
        memcpy(w->out->escape, t + at, 6);
        w->out->escape[6] = '\0';
        return fail(w, cp == 0 ? ENGRAM__JSON_NUL : ENGRAM__JSON_SURROGATE, at, is_name, levels);
      }
      w->pos += 6;
      continue;
    }
    if (c < 0x80 || w->syntax_only) { /* cJSON takes any byte but the quote inside a string */
      if (c == 0 && !w->syntax_only) return fail(w, ENGRAM__JSON_NUL, at, is_name, levels);
      w->pos++; /* raw control characters are accepted, as cJSON does */
      continue;
    }
    if ((cl = utf8_char(t + at, w->len - at)) == 0) return fail(w, ENGRAM__JSON_UTF8, at, is_name, levels);
    w->pos += cl;
  }
}

/* A member name and its colon, at w->pos; the name is recorded for the path once it is known to be good. */
static int member(walk_t *w) {
  size_t start;
  skip_ws(w);
  if (w->pos >= w->len || w->t[w->pos] != '"') return fail(w, ENGRAM__JSON_SYNTAX, w->pos, 0, 0);
  start = w->pos + 1;
  if (string(w, 1) != 0) return ENGRAM_EINVAL;
  if (w->depth - 1 < PATH_LEVELS) {
    w->fr[w->depth - 1].key = start;
    w->fr[w->depth - 1].n = w->pos - 1 - start;
  }
  skip_ws(w);
  if (w->pos >= w->len || w->t[w->pos] != ':') return fail(w, ENGRAM__JSON_SYNTAX, w->pos, 0, 0);
  w->pos++;
  return 0;
}

static int digits(walk_t *w) {
  size_t from = w->pos;
  while (w->pos < w->len && w->t[w->pos] >= '0' && w->t[w->pos] <= '9') w->pos++;
  return w->pos > from;
}

/* A number as RFC 8259 writes it: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static int number(walk_t *w) {
  if (w->t[w->pos] == '-') w->pos++;
  if (w->pos < w->len && w->t[w->pos] == '0') w->pos++;
  else if (!digits(w)) return fail(w, ENGRAM__JSON_SYNTAX, w->pos, 0, 0);
  if (w->pos < w->len && w->t[w->pos] == '.') {
    w->pos++;
    if (!digits(w)) return fail(w, ENGRAM__JSON_SYNTAX, w->pos, 0, 0);
  }
  if (w->pos < w->len && (w->t[w->pos] == 'e' || w->t[w->pos] == 'E')) {
    w->pos++;
    if (w->pos < w->len && (w->t[w->pos] == '+' || w->t[w->pos] == '-')) w->pos++;
    if (!digits(w)) return fail(w, ENGRAM__JSON_SYNTAX, w->pos, 0, 0);
  }
  return 0;
}

static int literal(walk_t *w, const char *word) {
  size_t n = strlen(word);
  if (w->len - w->pos < n || memcmp(w->t + w->pos, word, n) != 0) return fail(w, ENGRAM__JSON_SYNTAX, w->pos, 0, 0);
  w->pos += n;
  return 0;
}

static int text_check(const char *text, size_t len, const char *root, engram__json_issue_t *out, int syntax_only);

/* engram_json_parse past its fast path: cJSON, and the verdict of a failure. */
static int parse_by_cjson(const char *text, size_t len, cJSON **out) {
  engram__json_issue_t is;
  if ((*out = cJSON_ParseWithLength(text, len)) != NULL) return 0;
  /* cJSON failed: for lack of memory when the text is one cJSON reads (its syntax, its depth limit — string rules
   * such as "\u0000" or bytes that are not UTF-8 do not stop cJSON, so the check leaves them out: a text cut in
   * the middle of a character is still refused for the cut), else because it is not JSON. */
  return text_check(text, len, "", &is, 1) == 0 ? ENGRAM_ENOMEM : ENGRAM_EINVAL;
}

int engram_json_parse(const char *text, size_t len, cJSON **out) {
  *out = NULL;
  if (text == NULL) return ENGRAM_EINVAL;
  if ((*out = engram__json_fast_parse(text, len)) != NULL) return 0; /* json_fast.c: the common shapes */
  return parse_by_cjson(text, len, out);
}

int engram_json_parse_reply(const char *text, size_t len, cJSON **out) {
  *out = NULL;
  if (text == NULL) return ENGRAM_EINVAL;
  if ((*out = engram__json_fast_parse_block(text, len)) != NULL) return 0; /* json_fast.c: one block */
  /* The one-block parse gave up where the fast path would (or its block could not be had): cJSON's. */
  return parse_by_cjson(text, len, out);
}

int engram__json_text_check(const char *text, size_t len, const char *root, engram__json_issue_t *out) {
  return text_check(text, len, root, out, 0);
}

static int text_check(const char *text, size_t len, const char *root, engram__json_issue_t *out, int syntax_only) {
  walk_t w;
  int after = 0; /* 0: a value comes next; 1: a value just ended */
  issue_init(out);
  memset(&w, 0, sizeof w);
  w.syntax_only = syntax_only;
  w.t = (const unsigned char *)(text ? text : "");
  w.len = text ? len : 0;
  w.root = root ? root : "";
  w.out = out;
  if (w.len >= 3 && memcmp(w.t, "\xEF\xBB\xBF", 3) == 0) w.pos = 3;
  for (;;) {
    unsigned c;
    skip_ws(&w);
    if (!after) {
      if (w.pos >= w.len) return fail(&w, ENGRAM__JSON_SYNTAX, w.pos, 0, 0);
      c = w.t[w.pos];
      if (c == '{' || c == '[') {
        unsigned d = w.depth;
        if (d == ENGRAM__JSON_DEPTH_MAX) return fail(&w, ENGRAM__JSON_DEEP, w.pos, 0, d);
        if (c == '{') w.is_obj[d / 8] |= (unsigned char)(1u << (d % 8));
        else w.is_obj[d / 8] &= (unsigned char)~(1u << (d % 8));
        if (d < PATH_LEVELS) w.fr[d].key = w.fr[d].n = 0;
        w.depth++;
        w.pos++;
        skip_ws(&w);
        if (w.pos < w.len && w.t[w.pos] == (c == '{' ? '}' : ']')) {
          w.pos++;
          w.depth--;
          after = 1;
        } else if (c == '{' && member(&w) != 0) {
          return ENGRAM_EINVAL;
        }
        continue;
      }
      if (c == '"') {
        if (string(&w, 0) != 0) return ENGRAM_EINVAL;
      } else if (c == '-' || (c >= '0' && c <= '9')) {
        if (number(&w) != 0) return ENGRAM_EINVAL;
      } else if (literal(&w, c == 't' ? "true" : c == 'f' ? "false" : "null") != 0) {
        return ENGRAM_EINVAL;
      }
      after = 1;
      continue;
    }
    /* A value ended: the document ends, the container goes on, or it closes. */
    if (w.depth == 0) {
      if (w.pos < w.len) return fail(&w, ENGRAM__JSON_TRAILING, w.pos, 0, 0);
      return 0;
    }
    if (w.pos >= w.len) return fail(&w, ENGRAM__JSON_SYNTAX, w.pos, 0, 0);
    c = w.t[w.pos];
    if (c == ',') {
      w.pos++;
      if (obj_at(&w, w.depth - 1)) {
        if (member(&w) != 0) return ENGRAM_EINVAL;
      } else if (w.depth - 1 < PATH_LEVELS) {
        w.fr[w.depth - 1].n++;
      }
      after = 0;
    } else if (c == (obj_at(&w, w.depth - 1) ? '}' : ']')) {
      w.pos++;
      w.depth--;
    } else {
      return fail(&w, ENGRAM__JSON_SYNTAX, w.pos, 0, 0);
    }
  }
}

/* ---- The tree check ---- */

/* The path of node, whose ancestors are stack[0..depth-1] (stack[0] the root), or of its parent (to_parent). */
static void tree_path(const cJSON *const *stack, size_t depth, const cJSON *node, const char *root, int to_parent,
                      char *path) {
  size_t pos = path_add(path, 0, root ? root : ""), k, last = to_parent ? depth - 1 : depth;
  for (k = 1; k <= last; k++) {
    const cJSON *parent = stack[k - 1], *child = k < depth ? stack[k] : node, *s;
    size_t index = 0;
    if (k > PATH_LEVELS) {
      path_add(path, pos, "...");
      return;
    }
    if (cJSON_IsObject(parent)) {
      const char *name = child->string ? child->string : "";
      pos = path_name(path, pos, name, strlen(name));
    } else {
      for (s = parent->child; s != NULL && s != child; s = s->next) index++;
      pos = path_index(path, pos, index);
    }
  }
}

static int tree_fail(engram__json_issue_t *out, engram__json_problem_t problem, const cJSON *const *stack, size_t depth,
                     const cJSON *node, const char *root, int in_name) {
  issue_init(out);
  out->problem = problem;
  out->in_name = in_name;
  tree_path(stack, depth, node, root, in_name, out->path);
  return problem == ENGRAM__JSON_NOMEM ? ENGRAM_ENOMEM : ENGRAM_EINVAL;
}

int engram__json_tree_check(const cJSON *v, const char *root, engram__json_issue_t *out) {
  const cJSON *inline_stack[TREE_INLINE], **stack = inline_stack, *node = v;
  size_t depth = 0, cap = TREE_INLINE;
  int rc = 0;
  out->problem = ENGRAM__JSON_OK; /* the rest is filled on a failure only: this runs on every store */
  if (v == NULL) return 0;
  for (;;) {
    int type = node->type & 0xFF;
    /* A member name (cJSON prints a missing one as ""). */
    if (depth > 0 && (stack[depth - 1]->type & 0xFF) == cJSON_Object && node->string != NULL &&
        !utf8_cstr(node->string)) {
      rc = tree_fail(out, ENGRAM__JSON_UTF8, stack, depth, node, root, 1);
      break;
    }
    if (type == cJSON_String || type == cJSON_Raw) {
      if (node->valuestring == NULL) {
        rc = tree_fail(out, ENGRAM__JSON_NO_TEXT, stack, depth, node, root, 0);
        break;
      }
      if (type == cJSON_String && !utf8_cstr(node->valuestring)) {
        rc = tree_fail(out, ENGRAM__JSON_UTF8, stack, depth, node, root, 0);
        break;
      }
      if (type == cJSON_Raw) {
        char path[sizeof out->path];
        tree_path(stack, depth, node, root, 0, path);
        if ((rc = engram__json_text_check(node->valuestring, strlen(node->valuestring), path, out)) != 0) break;
      }
    } else if (type == cJSON_Array || type == cJSON_Object) {
      if (depth >= ENGRAM__JSON_DEPTH_MAX) { /* this container would be level DEPTH_MAX + 1 */
        rc = tree_fail(out, ENGRAM__JSON_DEEP, stack, depth, node, root, 0);
        break;
      }
      if (node->child != NULL) {
        if (depth == cap) {
          size_t ncap = cap * 2 > ENGRAM__JSON_DEPTH_MAX ? ENGRAM__JSON_DEPTH_MAX : cap * 2;
          const cJSON **grown = engram_malloc(ncap * sizeof *grown);
          if (grown == NULL) {
            rc = tree_fail(out, ENGRAM__JSON_NOMEM, stack, depth, node, root, 0);
            break;
          }
          memcpy(grown, stack, depth * sizeof *grown);
          if (stack != inline_stack) engram_free(stack);
          stack = grown;
          cap = ncap;
        }
        stack[depth++] = node;
        node = node->child;
        continue;
      }
    }
    /* Next: the sibling, or the sibling of the nearest ancestor that has one; the root's siblings are not ours. */
    while (depth > 0 && node->next == NULL) node = stack[--depth];
    if (depth == 0) break;
    node = node->next;
  }
  if (stack != inline_stack) engram_free(stack);
  return rc;
}

/* ---- Messages ---- */

const char *engram__json_issue_message(const engram__json_issue_t *is, const char *whole, char *buf, size_t size) {
  const char *where = is->path[0] ? is->path : (whole ? whole : "JSON text");
  char at[48] = "";
  if (size == 0) return "";
  if (is->has_offset) snprintf(at, sizeof at, " at offset %zu", is->offset);
  switch (is->problem) {
    case ENGRAM__JSON_OK: snprintf(buf, size, "%s: no problem", where); break;
    case ENGRAM__JSON_SYNTAX: snprintf(buf, size, "%s: malformed JSON near offset %zu", where, is->offset); break;
    case ENGRAM__JSON_TRAILING:
      snprintf(buf, size, "%s: malformed JSON: text after the document at offset %zu", where, is->offset);
      break;
    case ENGRAM__JSON_DEEP:
      snprintf(buf, size, "%s: nested deeper than %d levels", where, ENGRAM__JSON_DEPTH_MAX);
      break;
    case ENGRAM__JSON_NUL:
      snprintf(buf, size, "%s: %s (NUL) is not allowed in a %s%s", where, is->escape[0] ? "\\u0000" : "a NUL byte",
               is->in_name ? "member name" : "string", at);
      break;
    case ENGRAM__JSON_UTF8:
      snprintf(buf, size, "%s: %sinvalid UTF-8%s", where, is->in_name ? "a member name holds " : "", at);
      break;
    case ENGRAM__JSON_SURROGATE:
      snprintf(buf, size, "%s: %s%s is a lone UTF-16 surrogate, not a character%s", where,
               is->in_name ? "a member name holds " : "", is->escape, at);
      break;
    case ENGRAM__JSON_NO_TEXT:
      snprintf(buf, size, "%s: a string node without its text (valuestring is NULL)", where);
      break;
    case ENGRAM__JSON_NOMEM: snprintf(buf, size, "%s: out of memory checking the value", where); break;
  }
  return buf;
}
