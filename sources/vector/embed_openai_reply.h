/*
 * embed_openai_reply.h — reading the answers of an OpenAI-compatible /v1/embeddings service (embed_openai_reply.c):
 * the request body, a success body (vectors matched to inputs by their "index"), and the error bodies of the
 * services engram talks to — OpenAI and vLLM ({"error": {"message", "type", "code"}}), Ollama ({"error": "…"}),
 * llama.cpp's server ({"error": {"code", "message", "type"}}), Hugging Face TEI ({"error": "…", "error_type": …})
 * and vLLM's older {"object": "error", "message": …} — turned into one readable message. Pure functions over
 * text: no I/O, no state, so they are easy to test and to fuzz.
 */
#ifndef ENGRAM_EMBED_OPENAI_REPLY_H
#define ENGRAM_EMBED_OPENAI_REPLY_H

#include <stddef.h>

/*
 * The JSON body of a request embedding texts[0..n) with model: {"model", "input": [...], "encoding_format":
 * "float"} plus "dimensions" when dimensions ≠ 0. Returns the text (cJSON_free it) or NULL when out of memory.
 */
char *engram__oai_request_body(const char *model, const char *const *texts, size_t n, size_t dimensions);

/*
 * Parses a success body answering n inputs. On success returns 0 with *vecs (engram_malloc'd, n × *dim floats,
 * row i for input i, placed by the item's "index") and *dim. Otherwise returns non-zero with msg saying what is
 * wrong (malformed JSON, a missing or duplicate index, fewer embeddings than inputs, rows of different lengths,
 * a value that is not a number); *vecs is NULL. Returns ENGRAM_ENOMEM when out of memory.
 */
int engram__oai_parse_embeddings(const char *body, size_t len, size_t n, float **vecs, size_t *dim, char *msg,
                                 size_t msglen);

/* What an error body says. Every field is a NUL-terminated string, "" when absent. */
typedef struct {
  char message[320];
  char type[64];
  char code[64];
} engram__oai_error_t;

/* Reads an error body of any of the shapes above; a body that is not JSON gives its first line (printable bytes
 * only, cut to fit) as the message. */
void engram__oai_parse_error(const char *body, size_t len, engram__oai_error_t *e);

#endif
