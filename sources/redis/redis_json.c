/*
 * redis_json.c — JSON text in and out of Redis (see redis_json.h). Printing is the core's engram_json_print (exact
 * numbers) into the scratch buffer, which keeps up to 1 MiB from one store to the next. Parsing is the core's engram_json_parse (a fast path for the common shapes of stored
 * values, cJSON for the rest — src/shared/json_fast.c), whose verdict tells an allocation failure (the text is
 * valid JSON: ENGRAM_ENOMEM) from a value some other tool stored (it is not: ENGRAM_EBACKEND here).
 */
#include <stdint.h>
#include <string.h>

#include "redis_json.h"

char *engram__redis_json_print(engram__redis_scratch_t *sc, const cJSON *v, size_t *len, int *owned) {
  char *s;
  *owned = 0;
  if (engram_json_print(v, &sc->p, &sc->cap, len) != 0) return NULL;
  if (sc->cap <= (1u << 20)) return sc->p;
  /* Text over 1 MiB: handed over to the caller, so that the scratch buffer stays small. */
  s = sc->p;
  sc->p = NULL;
  sc->cap = 0;
  *owned = 1;
  return s;
}

void engram__redis_scratch_free(engram__redis_scratch_t *sc) {
  engram_free(sc->p);
  sc->p = NULL;
  sc->cap = 0;
}

/* ---- JSON text read back from Redis ---- */

int engram__redis_parse_json(const char *s, size_t n, cJSON **out) {
  int rc = engram_json_parse(s, n, out); /* the core's reader: its fast path, then cJSON, then a syntax check */
  return rc == ENGRAM_EINVAL ? ENGRAM_EBACKEND : rc;
}

int engram__redis_parse_json_reply(const char *s, size_t n, cJSON **out) {
  int rc = engram_json_parse_reply(s, n, out); /* the same, in one block where it can: a reply item's tree */
  return rc == ENGRAM_EINVAL ? ENGRAM_EBACKEND : rc;
}
