/*
 * fuzz_jsonl_read.c — libFuzzer harness for the import's line reader (src/export/jsonl_read.c): the fast path
 * (engram__jsonl_read) against the strict path (engram__jsonl_read_strict), which is docs/export.md's rule.
 *
 * Input: one line, any bytes (NULs included). Asserted, for every input:
 *   - the fast path answers READ or UNDECIDED (no allocation fails here) and keeps nothing when undecided;
 *   - the strict path answers 0, -1 with a message, or ENGRAM_ENOMEM only for a text cJSON cannot read (a number
 *     of more than 63 characters), and keeps nothing unless 0;
 *   - when the fast path reads the line, the strict path reads it too, to the same item: key, namespace, the
 *     three times (given or not) and the version equal, value and metadata equal node for node — types, string
 *     bytes, member names, numbers bit for bit, and the first child's prev link on the last child as cJSON_Parse
 *     leaves it.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/export/jsonl_read.h"
#include "fuzz_common.h"
#include "../support/json_same.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static engram__jsonl_reader_t r1, r2;
  engram__jsonl_item_t a, b;
  char err[400];
  char *line = fuzz_cstr(data, size);
  int fast, strict;
  engram__jsonl_reader_init(&r1);
  engram__jsonl_reader_init(&r2);
  err[0] = '\0';
  fast = engram__jsonl_read(&r1, line, size, &a);
  strict = engram__jsonl_read_strict(&r2, line, size, &b, err, sizeof err);
  FUZZ_CHECK(fast == ENGRAM__JSONL_READ || fast == ENGRAM__JSONL_UNDECIDED, "fast path: %d", fast);
  FUZZ_CHECK(strict == 0 || strict == -1 || strict == ENGRAM_ENOMEM, "strict path: %d", strict);
  if (fast != ENGRAM__JSONL_READ) FUZZ_CHECK(a.value == NULL && a.metadata == NULL, "an undecided line kept a tree");
  if (strict != 0) FUZZ_CHECK(b.value == NULL && b.metadata == NULL, "a refused line kept a tree");
  if (strict == -1) FUZZ_CHECK(err[0] != '\0', "a refused line without a message");
  if (fast == ENGRAM__JSONL_READ) {
    FUZZ_CHECK(strict == 0, "the fast path took a line the strict path refuses (%d: %s)", strict, err);
    FUZZ_CHECK(strcmp(a.key, b.key) == 0 && strcmp(a.ns, b.ns) == 0, "key or namespace differ");
    FUZZ_CHECK(a.created == b.created && a.updated == b.updated && a.expires == b.expires && a.version == b.version &&
                   a.has_created == b.has_created && a.has_updated == b.has_updated,
               "times or version differ");
    FUZZ_CHECK(json_same_tree(a.value, b.value), "values differ");
    FUZZ_CHECK(json_same_tree(a.metadata, b.metadata), "metadata differ");
  }
  cJSON_Delete(a.value);
  cJSON_Delete(a.metadata);
  cJSON_Delete(b.value);
  cJSON_Delete(b.metadata);
  free(line);
  return 0;
}
