/*
 * redis_json.c — JSON text in and out of Redis (see redis_json.h). Printing tries cJSON_PrintPreallocated into
 * the scratch buffer first. Parsing is the core's engram_json_parse (a fast path for the common shapes of stored
 * values, cJSON for the rest — src/shared/json_fast.c), whose verdict tells an allocation failure (the text is
 * valid JSON: ENGRAM_ENOMEM) from a value some other tool stored (it is not: ENGRAM_EBACKEND here).
 */
#include <stdint.h>
#include <string.h>

#include "redis_json.h"

char *engram__redis_json_print(engram__redis_scratch_t *sc, const cJSON *v, size_t *len, int *owned) {
  char *s;
  *owned = 0;
  if (sc->p == NULL) {
    if ((sc->p = engram_malloc(16384)) == NULL) return NULL;
    sc->cap = 16384;
  }
  /* cJSON_PrintPreallocated wants a little slack beyond the text. */
  if (cJSON_PrintPreallocated((cJSON *)v, sc->p, (int)sc->cap - 8, 0)) {
    *len = strlen(sc->p);
    return sc->p;
  }
  if ((s = cJSON_PrintUnformatted(v)) == NULL) return NULL;
  *owned = 1;
  *len = strlen(s);
  /* Grow the scratch buffer (up to 1 MiB) so that values of this size fit next time. */
  if (*len + 64 <= (1u << 20)) {
    size_t cap = sc->cap;
    char *p;
    while (cap < *len + 64) cap *= 2;
    if ((p = engram_malloc(cap)) != NULL) {
      engram_free(sc->p);
      sc->p = p;
      sc->cap = cap;
    }
  }
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
