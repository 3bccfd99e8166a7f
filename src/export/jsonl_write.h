/*
 * jsonl_write.h — the export's line printer (src/export/jsonl_write.c): one memory item as one JSON Lines line,
 * byte for byte what engram_json_print gives for each member, appended to a growable buffer. Internal
 * to src/export/.
 */
#ifndef ENGRAM_EXPORT_JSONL_WRITE_H
#define ENGRAM_EXPORT_JSONL_WRITE_H

#include <stddef.h>

#include "engram.h"

/* A growable output buffer: p[0..len) written, cap bytes allocated (engram_malloc). Zeroed = empty. */
typedef struct {
  char *p;
  size_t len, cap;
} engram__obuf_t;

/* Appends it as one line ("{"key":...,"version":N}\n", docs/export.md's member order). 0 or ENGRAM_ENOMEM (the
 * buffer then holds a partial line: the caller gives up). Thread: the caller's; touches nothing shared. */
int engram__jsonl_put_item(engram__obuf_t *b, const engram_item_t *it);

/* Frees the buffer's memory and zeroes it. */
void engram__obuf_free(engram__obuf_t *b);

#endif
