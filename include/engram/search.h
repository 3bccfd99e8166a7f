/*
 * engram/search.h — one search over several sources of a manager at once, fused into one ranking.
 *
 * An agent keeps facts in a persistent store and passages in a vector index; it asks one question of both.
 * engram_search_sources sends the query to each named source concurrently (each through its own mailbox, so a
 * slow source never holds back the others' work), waits until every source answered or its deadline passed,
 * and fuses the answers as a hybrid search fuses its two rankings (engram_fusion_t: reciprocal rank fusion, or
 * a weighted sum of the scores), keeping one item per key. The per-source outcomes travel with the reply, so a
 * failed source yields partial results rather than none. Included by engram.h.
 */
#ifndef ENGRAM_SEARCH_H
#define ENGRAM_SEARCH_H

#include "../engram.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The most sources one engram_search_sources call may name. */
#define ENGRAM_SEARCH_SOURCES_MAX 32

/*
 * How engram_search_sources fuses the sources' rankings. All-zero (or a NULL pointer) is reciprocal rank fusion
 * with k = 60 and equal weights.
 *   fusion   ENGRAM_FUSION_RRF or ENGRAM_FUSION_WEIGHTED (engram.h gives both formulas)
 *   weights  n_sources weights, finite and ≥ 0, not all 0, one per source in the order named; NULL = equal
 *            weights — except a WEIGHTED fusion of exactly two sources, where NULL means alpha
 *   alpha    WEIGHTED, two sources, weights NULL: the second source weighs alpha and the first 1 − alpha, in [0, 1]
 *            (as hybrid mode weighs vector against text); ignored otherwise, but always checked
 *   rrf_k    RRF's k, 1..100000; 0 = 60
 */
typedef struct engram_fusion_opts_s {
  int fusion;
  const double *weights;
  double alpha;
  unsigned rrf_k;
} engram_fusion_opts_t;

/*
 * Searches the n_sources sources named in sources (1..ENGRAM_SEARCH_SOURCES_MAX distinct names) with query, all
 * at once, and answers one fused ranking. Mirrors BeamMePrompty's MemoryManager search (MemoryManager.search
 * with a list of sources), which searched the sources one after another and concatenated the results; here
 * they run concurrently and are fused and de-duplicated.
 *
 * Each source receives query with offset 0, limit offset + limit and min_score 0, and with query.mode,
 * query.fusion and query.alpha when it declares ENGRAM_SOURCE_SEARCH_MODES (the vector source), else mode
 * ENGRAM_MODE_DEFAULT (its text ranking); opts apply to every source (namespace, ranges, deadline_ms, cq);
 * opts->source must be NULL and opts->order_by 0. The answers are fused per fusion (NULL = RRF, k = 60): one
 * item per key (the namespace is the call's), the copy shown being the one from the source that ranked it
 * highest (the first named on a tie), with item->source naming it; then ranked by fused score (ties by key),
 * items scoring below query.min_score dropped, offset skipped and limit kept. Scores are in [0, 1].
 *
 * Reply (borrowed for the callback's duration, as every reply): op ENGRAM_OP_SEARCH, items and count as for
 * engram_search, source NULL, and info an array with one object per source in the order named:
 * {"source": name, "status": 0 or ENGRAM_E*, "error": "ENGRAM_ETIMEDOUT" (absent on success), "message":
 * the source's message, "items": how many it answered}.
 *
 * A failing source (an error, ENGRAM_ETIMEDOUT at the deadline, ENGRAM_ECANCELED when removed) leaves its
 * ranking out: when at least one source answered, status is 0, the items are those of the sources that
 * answered and reply->message names the failed sources; when every source failed, status is the first
 * named source's error and message its message. A call waits for every source: it answers when all answered,
 * which opts->deadline_ms (or the manager's default deadline) bounds.
 *
 * Returns 0 (exactly one callback follows, never from inside this call), or a negative code and no callback:
 * ENGRAM_EINVAL (engram_last_error names the field: "sources[1]: 'vectors' named twice", "fusion.alpha: 1.5,
 * must be in [0, 1]", "opts.source: must be NULL (the sources are named in sources)", "opts.order_by: 2, must be 0 (the fused
 * ranking orders the results)", or the query's own errors
 * as engram_search words them), ENGRAM_EUNKNOWN_SOURCE (naming the source), ENGRAM_ENOTSUP (ranges to a source
 * that cannot filter on them), ENGRAM_EBUSY, ENGRAM_ENOMEM or ENGRAM_ECLOSED. When a source refuses at once
 * after others were sent, the call returns that error and the searches already sent are answered silently.
 *
 * Thread: any. The callback runs on the home loop, or on the thread draining opts->cq.
 */
ENGRAM_EXPORT int engram_search_sources(engram_manager_t *mgr, const char *const *sources, size_t n_sources,
                                        const engram_query_t *query, const engram_fusion_opts_t *fusion,
                                        const engram_opts_t *opts, engram_cb cb, void *ud);

#ifdef __cplusplus
}
#endif

#endif /* ENGRAM_SEARCH_H */
