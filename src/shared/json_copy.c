/*
 * json_copy.c — engram__json_copy_block (json_copy.h): a cJSON tree copied into one block.
 *
 * A store takes a copy of its caller's value (the caller may change or free the tree once the call returns), and a
 * copy made by cJSON_Duplicate is a malloc per node and per string, freed one by one by cJSON_Delete when the
 * request ends: for a 200-byte string value, ~245 instructions to copy and ~210 to free, an eighth of a cache
 * store (callgrind, docs/benchmarks.md). Copied into the request's own block instead (request.c,
 * engram__request_copy_in), it costs a bump pointer and a memcpy per node and string, and nothing to free; and the
 * walk that copies also checks the strings, which engram__json_tree_check walked the tree for once more (with a
 * strlen of each string in each walk). A bump allocator over the block: nodes aligned for cJSON, strings packed
 * between them; the walk is recursive, and a tree deeper than the block can hold nodes fails at the first node
 * that does not fit (a 512-byte block holds 8 nodes: ENGRAM__JSON_DEPTH_MAX is never near).
 */
#include <stdint.h>
#include <string.h>

#include "engram/source.h"
#include "shared/json_copy.h"
#include "shared/json_text.h"

typedef struct {
  char *p, *end;
} bump_t;

static void *bump(bump_t *b, size_t n, size_t align) {
  uintptr_t at = ((uintptr_t)b->p + align - 1) & ~(uintptr_t)(align - 1);
  if (at > (uintptr_t)b->end || n > (uintptr_t)b->end - at) return NULL;
  b->p = (char *)at + n;
  return (void *)at;
}

/* Non-zero when s[0, n) (no NUL in it: n is its strlen) is valid UTF-8: its ASCII runs word by word
 * (engram__ascii_run), each character between them by the strict validator every public string goes through
 * (utf8.c) — as utf8_cstr in json_text.c, so a long string with a few accented letters costs about what an ASCII
 * one does. */
static int text_ok(const char *s, size_t n) {
  const unsigned char *p = (const unsigned char *)s;
  size_t i = 0;
  while ((i = engram__ascii_run(p, i, n)) < n) {
    size_t cl = p[i] < 0xE0 ? 2 : p[i] < 0xF0 ? 3 : 4; /* what the lead byte says; the validator checks it */
    if (cl > n - i || !engram_utf8_valid(s + i, cl)) return 0;
    i += cl;
  }
  return 1;
}

/* A copy of s in the block, checked when `check` (else copied as it is: a name the rules do not cover). The room is
 * taken first, so a string longer than what is left costs only a bounded strnlen. */
static char *copy_str(bump_t *b, const char *s, int check) {
  size_t left = (size_t)(b->end - b->p), n = strnlen(s, left);
  char *d;
  if (n == left || (d = bump(b, n + 1, 1)) == NULL) return NULL;
  if (check && !text_ok(s, n)) return NULL;
  memcpy(d, s, n + 1);
  return d;
}

/* s copied with its children; in_object: s is a member of an object (its name is checked). */
static cJSON *copy_node(bump_t *b, const cJSON *s, int in_object) {
  cJSON *d = bump(b, sizeof *d, _Alignof(cJSON)), *last = NULL;
  const cJSON *c;
  int type = s->type & 0xFF, object = type == cJSON_Object;
  if (d == NULL || type == cJSON_Raw || (type == cJSON_String && s->valuestring == NULL)) return NULL;
  memset(d, 0, sizeof *d);
  d->type = s->type & ~(cJSON_IsReference | cJSON_StringIsConst);
  d->valueint = s->valueint;
  d->valuedouble = s->valuedouble;
  if (s->valuestring != NULL && (d->valuestring = copy_str(b, s->valuestring, type == cJSON_String)) == NULL)
    return NULL;
  if (s->string != NULL && (d->string = copy_str(b, s->string, in_object)) == NULL) return NULL;
  for (c = s->child; c != NULL; c = c->next) {
    cJSON *k = copy_node(b, c, object);
    if (k == NULL) return NULL;
    if (last == NULL) {
      d->child = k;
    } else {
      last->next = k;
      k->prev = last;
    }
    last = k;
  }
  if (d->child != NULL) d->child->prev = last; /* cJSON's list: the first child's prev is the last */
  return d;
}

cJSON *engram__json_copy_block(const cJSON *v, void *buf, size_t cap, size_t *used) {
  bump_t b;
  cJSON *root;
  b.p = buf;
  b.end = (char *)buf + cap;
  if (v == NULL || (root = copy_node(&b, v, 0)) == NULL) return NULL;
  *used = (size_t)(b.p - (char *)buf);
  return root;
}
