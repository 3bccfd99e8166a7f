/*
 * query_mode.c — the checks of a query's search mode, fusion and alpha (engram.h: engram_search_mode_t,
 * engram_fusion_t), run at the call by every operation that takes a query (ops.c) and by engram_search_sources
 * (search_many.c), so a bad mode or alpha is refused before anything is queued, with the field named.
 */
#include <string.h>

#include "engram/source.h" /* engram_tokenize */
#include "manager/query_mode.h"
#include "shared/error.h"

static int has_token_cb(const char *tok, size_t len, void *ud) {
  (void)tok;
  (void)len;
  *(int *)ud = 1;
  return 1;
}

int engram__query_mode_check(const engram_query_t *q) {
  int words = 0;
  if (q->mode < ENGRAM_MODE_DEFAULT || q->mode > ENGRAM_MODE_HYBRID)
    return engram__error(ENGRAM_EINVAL, "query.mode: %d is not a mode (0 default, 1 text, 2 vector, 3 hybrid)",
                         q->mode);
  if (q->fusion != ENGRAM_FUSION_RRF && q->fusion != ENGRAM_FUSION_WEIGHTED)
    return engram__error(ENGRAM_EINVAL, "query.fusion: %d is not a fusion (0 rrf, 1 weighted)", q->fusion);
  if (!(q->alpha >= 0.0 && q->alpha <= 1.0))
    return engram__error(ENGRAM_EINVAL, "query.alpha: %g, must be in [0, 1]", q->alpha);
  if (q->ef_search < 0 || q->ef_search > 100000)
    return engram__error(ENGRAM_EINVAL, "query.ef_search: %d, must be in 0..100000 (0 = the index's ef_search)",
                         q->ef_search);
  if (q->mode == ENGRAM_MODE_TEXT && q->vector != NULL && q->text == NULL)
    return engram__error(ENGRAM_EINVAL, "query.vector: mode text ranks query.text by BM25, and there is none");
  if (q->mode == ENGRAM_MODE_HYBRID) {
    if (q->text != NULL) engram_tokenize(q->text, strlen(q->text), has_token_cb, &words);
    if (!words)
      return engram__error(ENGRAM_EINVAL, "query.text: mode hybrid needs words to rank by BM25 (%s)",
                           q->text == NULL ? "none given" : "it has none");
  }
  return 0;
}

int engram__query_mode_needs_vector(const engram_query_t *q) {
  return q->mode == ENGRAM_MODE_VECTOR || q->mode == ENGRAM_MODE_HYBRID;
}
