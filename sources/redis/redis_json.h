/*
 * redis_json.h — JSON text in and out of Redis for the redis source: values and metadata are printed into a
 * reused scratch buffer (no allocation per store once it has grown), and text read back is parsed with a
 * verdict that tells an allocation failure (the text is JSON) from a value some other tool stored (it is
 * not). Knows nothing of the source's state.
 */
#ifndef ENGRAM_REDIS_JSON_H
#define ENGRAM_REDIS_JSON_H

#include <stddef.h>

#include "engram/source.h"

/* A reused buffer for printed JSON (zeroed = empty). */
typedef struct {
  char *p;
  size_t cap;
} engram__redis_scratch_t;

/* Compact JSON text of v (engram_json_print: exact numbers) in s, grown as needed; text over 1 MiB is handed over
 * instead (*owned = 1 — free it with engram_free) so that s keeps at most 1 MiB. *len gets its length. NULL on
 * ENOMEM. The text in s is valid until the next call. */
char *engram__redis_json_print(engram__redis_scratch_t *s, const cJSON *v, size_t *len, int *owned);
void engram__redis_scratch_free(engram__redis_scratch_t *s);

/* Parses JSON text read from Redis into *out: 0, ENGRAM_ENOMEM, or ENGRAM_EBACKEND when the text is not JSON. */
int engram__redis_parse_json(const char *s, size_t n, cJSON **out);
/* engram__redis_parse_json for a reply item's tree: one block where it can (engram_json_parse_reply). */
int engram__redis_parse_json_reply(const char *s, size_t n, cJSON **out);

#endif
