/*
 * jsonl_read.h — the import's line reader (src/export/jsonl_read.c), in two paths. The fast one reads one JSON
 * Lines line of docs/export.md's
 * format read in a single pass straight into what a replica store takes — the key and namespace decoded into the
 * reader's own buffers, the value and metadata built as cJSON trees of their own, the integers converted — with
 * nothing else allocated. It accepts only lines it can vouch for: every line it takes is one the strict path
 * (engram__json_text_check, then cJSON_Parse and the member checks in import.c) accepts with the same result;
 * anything unusual (a bad or unknown member, a wrong type, an escaped member name, nesting deeper than
 * ENGRAM__JSONL_FAST_DEPTH, a number of more than 63 characters, any syntax error) is handed back undecided, and
 * import.c runs the strict path on it (engram__jsonl_read_strict), which gives the verdict and the message.
 * Internal to src/export/ (and tests/test_jsonl_read.c, which checks that the two paths agree).
 */
#ifndef ENGRAM_EXPORT_JSONL_READ_H
#define ENGRAM_EXPORT_JSONL_READ_H

#include <stddef.h>
#include <stdint.h>

#include "engram.h"

#define ENGRAM__JSONL_FAST_DEPTH 64 /* deeper values go the strict path (which allows 1,000) */

/* One line's item. key and ns point into the reader (valid until its next read); value and metadata (NULL =
 * none) belong to the caller (cJSON_Delete). */
typedef struct {
  const char *key, *ns;
  cJSON *value, *metadata;
  int64_t created, updated, expires;
  uint64_t version;
  int has_created, has_updated;
} engram__jsonl_item_t;

/* The reader's buffers. Zeroed, then engram__jsonl_reader_init. */
typedef struct {
  char key[ENGRAM_KEY_MAX + 1];
  char ns[ENGRAM_NAMESPACE_MAX + 1];
  char point; /* the C locale's decimal point, as cJSON's number parser uses it */
  /* Set by the caller: a value (or metadata object) whose text is already as cJSON_PrintUnformatted prints it
   * (engram_json_is_canonical) is given as a cJSON_Raw node holding that text instead of a tree — for an import
   * into a source that stores the text (SQLite), which then neither builds nor prints a tree. Its bytes are what
   * the tree would print, so what is stored does not change. */
  int raw_text;
} engram__jsonl_reader_t;

void engram__jsonl_reader_init(engram__jsonl_reader_t *r);

enum { ENGRAM__JSONL_READ = 0, ENGRAM__JSONL_UNDECIDED = 1 };

/*
 * Reads line (len bytes; line[len] must be readable, e.g. the NUL the line reader puts there) into *it:
 * ENGRAM__JSONL_READ (a good item, *it filled), ENGRAM__JSONL_UNDECIDED (nothing kept: run the strict path), or
 * ENGRAM_ENOMEM (nothing kept). Thread: the caller's; touches nothing shared but cJSON's allocator.
 */
int engram__jsonl_read(engram__jsonl_reader_t *r, const char *line, size_t len, engram__jsonl_item_t *it);

/*
 * The strict path, the rule of docs/export.md: the line's text checked as every JSON boundary of engram checks it
 * (engram__json_text_check), parsed by cJSON, each member checked. 0 with *it filled as engram__jsonl_read fills
 * it; -1 for a bad line, with the reason in err (errlen bytes: "value: missing", "unknown member \"x\"", the
 * text check's message); or ENGRAM_ENOMEM. Thread: the caller's.
 */
int engram__jsonl_read_strict(engram__jsonl_reader_t *r, const char *line, size_t len, engram__jsonl_item_t *it,
                              char *err, size_t errlen);

#endif
