/*
 * engram/vector.h — embedders for the vector source: the interface a user implements to plug any model into
 * engram (a local inference library, an HTTP embedding service), the registry that names them for JSON
 * configuration ({"type": "vector", "options": {"embedder": "name"}}), and the built-in "hash" embedder.
 *
 * An embedder turns n texts into n vectors of `dimension` floats. The vector source calls embed() on its actor
 * thread and goes on only when done() reports back, so an embedder may answer at once (a CPU model) or later
 * (an HTTP request on the source's loop, engram_embed_loop). Every text a source embeds is non-empty UTF-8.
 *
 * Contract of embed(self, texts, n, done, cb_ud):
 *   - texts[0..n) are borrowed until done is called; n ≥ 1 and, when max_batch ≠ 0, n ≤ max_batch.
 *   - done(cb_ud, status, error_message, vectors, dimension) is called exactly once, on the loop thread of the
 *     source that called embed (engram_embed_loop(cb_ud)): either from inside embed() or later from a callback
 *     of that loop. status 0: vectors holds n × dimension floats, row i for texts[i], borrowed for the call.
 *     status ≠ 0: error_message (may be NULL) says why; the source fails the call with ENGRAM_EEMBED and that
 *     message — except status ENGRAM_EDIMENSION (the embedder saw vectors of another dimension than
 *     engram_embed_dimension), which fails the call with ENGRAM_EDIMENSION. Vectors of another dimension than the
 *     source's fail the call with ENGRAM_EDIMENSION; a NaN or an infinity fails it with ENGRAM_EEMBED. Nothing is
 *     stored by a call whose embedding failed.
 *   - An answer that comes after the call's deadline (or after the source's embed_timeout_ms, or after the
 *     source closed) is dropped: the caller was already told ENGRAM_ETIMEDOUT / ENGRAM_ECANCELED and nothing is
 *     stored. done must still be called once, so the source can free the call's context.
 *   - Several vector sources run on threads of their own: one embedder may be called from several of those
 *     threads at the same time, and must be thread-safe in that sense.
 * The embedder is told whether it embeds documents (store, update) or a search query (engram_embed_purpose):
 * models trained with "query:" / "passage:" prefixes or an input_type parameter need the difference.
 */
#ifndef ENGRAM_VECTOR_H
#define ENGRAM_VECTOR_H

#include <stddef.h>

#include "../engram.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ENGRAM_EMBED_DIMENSION_MAX 65536

/* engram_embed_purpose(): what the texts of a call are. */
enum { ENGRAM_EMBED_DOCUMENT = 0, ENGRAM_EMBED_QUERY = 1 };

/* Reports the outcome of one embed call (see the contract above). Thread: the source's loop thread. */
typedef void (*engram_embed_done_fn)(void *cb_ud, int status, const char *error_message, const float *vectors,
                                     size_t dimension);

typedef struct engram_embedder_s engram_embedder_t;

struct engram_embedder_s {
  size_t dimension; /* floats per vector, 1..65536; 0 = any: it makes vectors of engram_embed_dimension(cb_ud) */
  size_t max_batch; /* most texts per embed call (an API's batch limit); 0 = no limit */
  void *ud;         /* the embedder's own data (a model, a connection pool), handed to embed as self->ud */
  void (*embed)(const engram_embedder_t *self, const char *const *texts, size_t n, engram_embed_done_fn done,
                void *cb_ud);
  void (*destroy)(void *ud); /* frees ud once no source uses the embedder any more; may be NULL */
};

/*
 * Registers an embedder under name (1..64 bytes of [A-Za-z0-9_.-]), for the vector source's "embedder" option.
 * The struct is copied; ownership of embedder->ud passes to engram on success (destroy runs once the name is
 * unregistered and no open source uses it), and stays with the caller on failure. Returns 0, ENGRAM_EINVAL (bad
 * name, embed NULL, dimension > 65536), ENGRAM_EEXIST (the name is taken; "hash" always is) or ENGRAM_ENOMEM;
 * engram_last_error() says why. Thread: any.
 */
ENGRAM_EXPORT int engram_register_embedder(const char *name, const engram_embedder_t *embedder);

/*
 * Removes a registered embedder. Sources already open keep using it; its destroy runs when the last of them
 * closes. Returns 0, ENGRAM_EINVAL ("hash" or a bad name) or ENGRAM_ENOTFOUND. Thread: any.
 */
ENGRAM_EXPORT int engram_unregister_embedder(const char *name);

/* ---- The context of one embed call (cb_ud). Valid from embed() until done has been called. ---- */

/* The loop of the source's actor thread: start asynchronous work (sockets, timers, uv_queue_work) on it, and
 * call done from one of its callbacks. */
ENGRAM_EXPORT uv_loop_t *engram_embed_loop(void *cb_ud);
/* The dimension the source expects (what an embedder with dimension 0 must produce). */
ENGRAM_EXPORT size_t engram_embed_dimension(void *cb_ud);
/* ENGRAM_EMBED_DOCUMENT or ENGRAM_EMBED_QUERY. */
ENGRAM_EXPORT int engram_embed_purpose(void *cb_ud);
/* The name of the source that asked (for logs). */
ENGRAM_EXPORT const char *engram_embed_source_name(void *cb_ud);

/*
 * The built-in "hash" embedder (the default; no model, no network): signed feature hashing of the text's
 * tokens (engram_tokenize; English stop words dropped, a plural "s" folded) — unigrams weighted 1 + ln(tf),
 * doubled for words first seen in the opening 24 tokens, plus adjacent-word bigrams at half weight — into
 * dimension floats, L2-normalized. Writes dimension floats to out (all zero when the text has no token).
 * Returns 0, ENGRAM_EINVAL (dimension 0 or > 65536, NULL argument) or ENGRAM_ENOMEM. Thread: any.
 * The vector source adds two things this function cannot: query terms weighted by a hashed idf over the source's
 * own items, and an exact re-ranking of the best candidates (docs/sources-vector.md).
 */
ENGRAM_EXPORT int engram_embed_hash(const char *text, float *out, size_t dimension);

#ifdef __cplusplus
}
#endif

#endif /* ENGRAM_VECTOR_H */
