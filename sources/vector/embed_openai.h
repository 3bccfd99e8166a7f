/*
 * embed_openai.h — the "openai" embedder (embed_openai.c): vectors from a service speaking OpenAI's
 * POST /v1/embeddings (OpenAI, Ollama, llama.cpp's server, vLLM, Hugging Face TEI), configured by the vector
 * source's option {"embedder": {"type": "openai", ...}} (docs/sources-vector.md). One instance per source,
 * created when the source opens and destroyed when it closes; it runs its requests on the source's loop
 * (vector_http.c) and its answers follow the embedder contract of include/engram/vector.h.
 */
#ifndef ENGRAM_EMBED_OPENAI_H
#define ENGRAM_EMBED_OPENAI_H

#include <stddef.h>

#include "engram/source.h"
#include "engram/vector.h"

/*
 * Reads the "embedder" object cfg into *out (embed, destroy and ud set; dimension = cfg's "dimensions";
 * max_batch 0, since the embedder batches by itself) and writes its name, "openai:<model>", into name.
 * Returns 0, or ENGRAM_EINVAL / ENGRAM_ENOMEM with err naming the field (a missing API key variable too).
 * On success the caller owns out->ud and frees it with out->destroy.
 */
int engram__openai_embedder_new(const cJSON *cfg, engram_embedder_t *out, char *name, size_t name_len, char *err,
                                size_t errlen);

/* Adds "embedder_service" to a source's info: the URL (without user information or query), model, dimensions,
 * batch, concurrency, timeout_ms, max_retries, api_key_env (the variable's name, never its value) and counters —
 * requests sent, retries, splits, failed calls, requests in flight. Returns 0 or ENGRAM_ENOMEM. */
int engram__openai_info(void *ud, cJSON *into);

#endif
