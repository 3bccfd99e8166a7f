/*
 * fuzz_json_fast.c — libFuzzer harness for the fast path of engram_json_parse (src/shared/json_fast.c), the
 * reader of every JSON text a backend reads back from its store (another program may have written it).
 *
 * Input: any bytes (NULs included), taken as the text with its length. Asserted, for every input:
 *   - the fast path either gives up (NULL) or builds exactly the tree cJSON_ParseWithLength builds, node for node
 *     (types, member names, string bytes, numbers bit for bit, child order, the first child's prev link);
 *   - engram_json_parse answers 0 with cJSON's tree when cJSON reads the text, else an error (ENGRAM_EINVAL, or
 *     ENGRAM_ENOMEM) and no tree. Which error is the verdict of a syntax check that follows cJSON's rules, and
 *     cJSON has corners it does not share (a byte order mark skipped before some values and not others: BOM + "1"
 *     refused, BOM + " 1" read), so the harness does not hold the verdict to cJSON byte for byte; test_json_fast
 *     pins it for the cases that matter (texts cut short, nesting past 1,000, lone surrogates, \u0000), and an
 *     input found here that says ENGRAM_ENOMEM for a text that is not JSON joins those cases;
 *   - the one-block parse (engram__json_fast_parse_block, engram_json_parse_reply's) answers exactly where the fast
 *     path does, with the same tree, its root flagged cJSON_IsReference | ENGRAM__CJSON_BLOCK.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/shared/json_fast.h"
#include "fuzz_common.h"
#include "../support/json_same.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *t = (const char *)data;
  cJSON *want = cJSON_ParseWithLength(t, size), *fast = engram__json_fast_parse(t, size), *got = NULL;
  int rc = engram_json_parse(t, size, &got);
  if (fast != NULL) FUZZ_CHECK(want != NULL && json_same_tree(fast, want), "the fast path built another tree than cJSON");
  if (want != NULL) {
    FUZZ_CHECK(rc == 0 && json_same_tree(got, want), "engram_json_parse: %d or another tree where cJSON reads it", rc);
  } else {
    FUZZ_CHECK((rc == ENGRAM_EINVAL || rc == ENGRAM_ENOMEM) && got == NULL,
               "engram_json_parse: %d (or a tree) where cJSON refuses the text", rc);
  }
  {
    /* The same parse in one block (engram_json_parse_reply's): exactly where the fast path answers, the same tree,
     * its root flagged; the block goes whole with cJSON_Delete of the root (ASan: no leak, no stray free). */
    cJSON *block = engram__json_fast_parse_block(t, size);
    FUZZ_CHECK((block != NULL) == (fast != NULL), "the one-block parse %s where the fast path did not",
               block != NULL ? "answered" : "gave up");
    if (block != NULL) {
      int type = block->type;
      FUZZ_CHECK((type & (cJSON_IsReference | ENGRAM__CJSON_BLOCK)) == (cJSON_IsReference | ENGRAM__CJSON_BLOCK),
                 "the one-block root is not flagged");
      block->type = type & ~(cJSON_IsReference | ENGRAM__CJSON_BLOCK);
      FUZZ_CHECK(json_same_tree(block, want), "the one-block parse built another tree than cJSON");
      block->type = type;
    }
    cJSON_Delete(block);
  }
  cJSON_Delete(want);
  cJSON_Delete(fast);
  cJSON_Delete(got);
  return 0;
}
