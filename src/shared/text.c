/*
 * text.c — what text search sees of an item (engram_text_of) and how that text splits into tokens
 * (engram_tokenize), shared by every source so that the same query finds the same items everywhere.
 *
 * A token is a maximal run of ASCII letters and digits and of bytes ≥ 0x80 (so any non-ASCII UTF-8 character
 * joins the word around it: "café" and "naïve" stay whole); every other ASCII byte separates tokens. ASCII
 * letters are folded to lower case; non-ASCII characters are left as they are (no Unicode case folding, which
 * would need tables and differ between backends). A token longer than ENGRAM_TOKEN_MAX (64) bytes is cut to
 * its first 64 bytes, backing off to a UTF-8 character boundary so that a token is never a broken character.
 *
 * The indexed text of an item is its key, then every string leaf of its value — recursively through objects
 * and arrays, in document order — each preceded by one space. Object member names, numbers, booleans and null
 * are not indexed. The walk is iterative, so a deeply nested value cannot overflow the stack.
 */
#include <string.h>

#include "engram/source.h"

#ifndef ENGRAM_TOKEN_MAX
#define ENGRAM_TOKEN_MAX 64
#endif

static int is_word_byte(unsigned char c) {
  return c >= 0x80 || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* The length of buf[0..n) without a UTF-8 character cut short at its end (a truncated token's tail). */
static size_t utf8_boundary(const char *buf, size_t n) {
  size_t k = n, back = 0;
  unsigned char lead;
  size_t want;
  while (k > 0 && back < 3 && ((unsigned char)buf[k - 1] & 0xC0) == 0x80) k--, back++;
  if (k == 0) return n;
  lead = (unsigned char)buf[k - 1];
  if (lead < 0xC0) return n; /* ASCII, or stray continuation bytes: nothing to repair. */
  want = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : 2;
  return (n - (k - 1) < want) ? k - 1 : n;
}

/*
 * Calls fn(token, length, ud) for every token of text[0..len) in order. The token is NUL-terminated in a
 * buffer that is only valid during the call. Returns 0, or the first non-zero value fn returned (which stops
 * the scan), so a caller can pass an error such as ENGRAM_ENOMEM back through it.
 */
int engram_tokenize(const char *text, size_t len, engram_token_fn fn, void *ud) {
  const unsigned char *p = (const unsigned char *)text, *end;
  char buf[ENGRAM_TOKEN_MAX + 1];
  if (text == NULL) return 0;
  end = p + len;
  while (p < end) {
    size_t n = 0;
    int rc, truncated = 0;
    while (p < end && !is_word_byte(*p)) p++;
    if (p == end) break;
    for (; p < end && is_word_byte(*p); p++) {
      unsigned char c = *p;
      if (n == ENGRAM_TOKEN_MAX) truncated = 1;
      else buf[n++] = (char)((c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c);
    }
    if (truncated) n = utf8_boundary(buf, n);
    buf[n] = '\0';
    rc = fn(buf, n, ud);
    if (rc != 0) return rc;
  }
  return 0;
}

/* Iterative pre-order walk over the string leaves of a cJSON tree, in document order. */
typedef struct {
  const cJSON **stack;
  size_t depth, cap;
} walk_t;

static int walk_push(walk_t *w, const cJSON *node) {
  if (w->depth == w->cap) {
    size_t cap = w->cap ? w->cap * 2 : 16;
    const cJSON **s = engram_realloc((void *)w->stack, cap * sizeof *s);
    if (s == NULL) return ENGRAM_ENOMEM;
    w->stack = s;
    w->cap = cap;
  }
  w->stack[w->depth++] = node;
  return 0;
}

/* Visits every string leaf of root: with out ≠ NULL writes " leaf" into out at *pos, else only counts the
 * bytes that would take; *pos advances either way. Returns 0 or ENGRAM_ENOMEM. */
static int walk_strings(const cJSON *root, char *out, size_t *pos) {
  walk_t w = {NULL, 0, 0};
  int rc = 0;
  if (root == NULL) return 0;
  if ((rc = walk_push(&w, root)) != 0) return rc;
  while (w.depth > 0) {
    const cJSON *node = w.stack[w.depth - 1];
    if (node == NULL) {
      /* This level is exhausted: pop it and move its parent on to the next sibling (the root has none). */
      if (--w.depth <= 1) break;
      w.stack[w.depth - 1] = w.stack[w.depth - 1]->next;
      continue;
    }
    if (cJSON_IsString(node) && node->valuestring != NULL) {
      size_t n = strlen(node->valuestring);
      if (out != NULL) {
        out[*pos] = ' ';
        memcpy(out + *pos + 1, node->valuestring, n);
      }
      *pos += n + 1;
    }
    if ((cJSON_IsArray(node) || cJSON_IsObject(node)) && node->child != NULL) {
      if ((rc = walk_push(&w, node->child)) != 0) break;
      continue;
    }
    /* A leaf or an empty container: move on to its next sibling (the root has none to move to). */
    if (w.depth == 1) break;
    w.stack[w.depth - 1] = node->next;
  }
  engram_free((void *)w.stack);
  return rc;
}

char *engram_text_of(const char *key, const cJSON *value) {
  size_t klen = key != NULL ? strlen(key) : 0, total = klen, pos = klen;
  char *out;
  if (walk_strings(value, NULL, &total) != 0) return NULL;
  out = engram_malloc(total + 1);
  if (out == NULL) return NULL;
  if (klen > 0) memcpy(out, key, klen);
  if (walk_strings(value, out, &pos) != 0) {
    engram_free(out);
    return NULL;
  }
  out[pos] = '\0';
  return out;
}
