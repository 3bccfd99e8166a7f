/*
 * json_text.h — the input rules for JSON (json_text.c): one strict check of JSON *text* before cJSON parses it,
 * the same string rules over the cJSON trees C callers hand in, and the quoting of caller text in messages.
 *
 * The rules: every string — values and member names — is valid UTF-8 with no NUL; an escaped lone UTF-16
 * surrogate ("\ud800") is not a character; a text holds exactly one JSON document, nested at most
 * ENGRAM__JSON_DEPTH_MAX deep. cJSON alone would cut a string at "\u0000" (so "a\u0000b" became the key "a") and
 * keep bytes that are not UTF-8. A refusal names the string with a JSON-path-like name: "arguments.key",
 * "sources[1].name", "value.items[3]".
 *
 * Used by the boundaries of the core that parse JSON text (engram_tools_call, engram_manager_configure,
 * engram_manager_add_source) and by the submit of values and metadata (src/manager/ops.c).
 */
#ifndef ENGRAM_JSON_TEXT_H
#define ENGRAM_JSON_TEXT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cjson/cJSON.h>

#define ENGRAM__JSON_DEPTH_MAX 1000 /* nested arrays and objects: cJSON's own parse limit */
#define ENGRAM__QUOTE_MAX 100       /* bytes of caller text a message quotes, "..." included */

typedef enum {
  ENGRAM__JSON_OK = 0,
  ENGRAM__JSON_SYNTAX,    /* not JSON; offset says where */
  ENGRAM__JSON_TRAILING,  /* text after the document, at offset */
  ENGRAM__JSON_DEEP,      /* nested deeper than ENGRAM__JSON_DEPTH_MAX */
  ENGRAM__JSON_NUL,       /* a string holds "\u0000" or a raw NUL byte */
  ENGRAM__JSON_UTF8,      /* a string holds bytes that are not UTF-8 */
  ENGRAM__JSON_SURROGATE, /* a string holds an escaped lone UTF-16 surrogate (escape says which) */
  ENGRAM__JSON_NO_TEXT,   /* tree: a string or raw node whose valuestring is NULL */
  ENGRAM__JSON_NOMEM      /* tree: no memory for the walk of a deep tree */
} engram__json_problem_t;

/* What was wrong and where. */
typedef struct {
  engram__json_problem_t problem;
  size_t offset;  /* text: the byte offset of the problem (has_offset = 1) */
  int has_offset;
  int in_name;    /* the bad string is a member name: path names the object holding it */
  char path[200]; /* root + ".name" / "[i]" of the string (levels past 32 shown as "..."); root for the whole */
  char escape[8]; /* SURROGATE, NUL: the escape as written, "\ud800" */
} engram__json_issue_t;

/* The end of the ASCII run of p[i, n) that starts at i: 32 bytes, then 8, then one at a time (memcpy loads within
 * the string). The strings' checks (json_text.c, json_copy.c) validate what follows with the strict UTF-8 rules. */
static inline size_t engram__ascii_run(const unsigned char *p, size_t i, size_t n) {
  const uint64_t high = UINT64_C(0x8080808080808080);
  for (; i + 32 <= n; i += 32) {
    uint64_t w[4];
    memcpy(w, p + i, 32);
    if ((w[0] | w[1] | w[2] | w[3]) & high) break;
  }
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    memcpy(&w, p + i, 8);
    if (w & high) break;
  }
  while (i < n && p[i] < 0x80) i++;
  return i;
}

/*
 * Checks text (len bytes) against the rules in one linear, non-recursive pass. root starts the paths of the
 * strings ("arguments" → "arguments.key"; "" → "sources[1].name"). Returns 0 when text is one JSON document that
 * keeps the rules (cJSON will parse it the same), else ENGRAM_EINVAL with *out filled. A UTF-8 byte-order mark
 * at the start is skipped (as cJSON does); raw control characters other than NUL inside strings are accepted
 * (as cJSON does); everything else follows RFC 8259.
 */
int engram__json_text_check(const char *text, size_t len, const char *root, engram__json_issue_t *out);

/*
 * Checks a cJSON tree a caller built: every string leaf, member name and raw node's text is valid UTF-8 (a raw
 * node must hold one JSON text that keeps the rules), no string node lacks its text, and the tree is nested at
 * most ENGRAM__JSON_DEPTH_MAX deep. One pass over the nodes, non-recursive. Returns 0, ENGRAM_EINVAL with *out
 * filled, or ENGRAM_ENOMEM (a tree deeper than 64 levels needs a heap stack).
 */
int engram__json_tree_check(const cJSON *v, const char *root, engram__json_issue_t *out);

/* The issue as a message, "<path>: <what was wrong>" (whole names the document when the path is empty: "config_json").
 * Returns buf. */
const char *engram__json_issue_message(const engram__json_issue_t *is, const char *whole, char *buf, size_t size);

/*
 * Appends n bytes of s to buf (size bytes, holding a string of length pos) as message text: at most max bytes
 * written (and within buf), cut on a character boundary with "..." marking the cut; control characters escaped
 * (\n, \t, \r, \u001b), a byte that does not start a valid UTF-8 character written as \xff; with quotes ≠ 0,
 * '"' and '\' are escaped too (text shown between quotes). The result is always valid UTF-8. Returns the new
 * length.
 */
size_t engram__text_append_quoted(char *buf, size_t size, size_t pos, const char *s, size_t n, size_t max, int quotes);

/* s as text to put between quotes in a message (quotes escaped), at most size - 1 bytes. Returns buf. */
const char *engram__quote(char *buf, size_t size, const char *s);

/* A message made elsewhere (a backend's, a lower layer's), made safe to show: cut on a character boundary,
 * control characters and invalid bytes escaped, quotes kept. Returns buf. */
const char *engram__text_clean(char *buf, size_t size, const char *s);

#endif
