/*
 * embed_hash.h — the built-in "hash" embedder's text hashing (embed_hash.c): the analysis of a text into
 * weighted terms and bigrams, their sketch into a vector, and the exact similarity of two term lists. Used by
 * the vector source, which adds a hashed idf over its items to query embeddings and re-ranks candidates by the
 * exact sparse similarity the hashed vectors approximate, and by the registered "hash" embedder's adapter
 * (vector_embed.c, through engram_embed_hash). Calls nothing of the vector source.
 */
#ifndef ENGRAM_EMBED_HASH_H
#define ENGRAM_EMBED_HASH_H

#include <stddef.h>
#include <stdint.h>

#include "engram/source.h"
#include "engram/vector.h"

/* A term of a text: a word's 32-bit hash (never 0) and its weight. Stored sorted by hash. */
typedef struct {
  uint32_t hash;
  float weight;
} engram__term_t;

typedef struct {
  uint32_t hash, a, b; /* the pair's hash and its two words' hashes */
  uint32_t first;      /* position of the first occurrence */
  float tfw;           /* 1 + ln(tf) */
} engram__bigram_t;

/* The analysis of one text; reusable (engram__hash_text_reset keeps the buffers). */
typedef struct {
  uint32_t *seq;            /* token sequence: word hash, or 0 for a stop word */
  size_t n_seq, cap_seq;
  engram__term_t *terms;    /* distinct words sorted by hash; weight set by a weights_* call */
  uint32_t *first;          /* per term: position of its first occurrence */
  float *tfw;               /* per term: 1 + ln(tf) */
  size_t n_terms, cap_terms;
  engram__bigram_t *bigrams;
  size_t n_bigrams, cap_bigrams;
  int query;                /* set by engram__hash_weights_query: bigrams weigh by idf, not by position */
} engram__hash_text_t;

/* The idf of a word hash (query weighting). */
typedef double (*engram__idf_fn)(uint32_t hash, void *ud);

void engram__hash_text_free(engram__hash_text_t *t);
/* Tokenizes text into t (words, stop words dropped, plural "s" folded; bigrams of adjacent kept words).
 * Returns 0 or ENGRAM_ENOMEM. */
int engram__hash_analyze(engram__hash_text_t *t, const char *text, size_t len);
/* Document weights: (1 + ln tf), doubled for words first seen in the opening tokens; bigrams at half weight. */
void engram__hash_weights_doc(engram__hash_text_t *t);
/* Query weights: (1 + ln tf) × idf(word); bigrams at half the mean idf of their words. idf NULL = 1. */
void engram__hash_weights_query(engram__hash_text_t *t, engram__idf_fn idf, void *ud);
/* The L2-normalized signed-hash sketch of the weighted terms and bigrams into dim floats. */
void engram__hash_sketch(const engram__hash_text_t *t, float *out, size_t dim);
/* Scales the term weights to unit L2 norm (over the words only), for engram__hash_exact. */
void engram__hash_normalize_terms(engram__hash_text_t *t);
/* The exact cosine of two unit-normalized term lists sorted by hash, in [0, 1]. */
double engram__hash_exact(const engram__term_t *q, size_t nq, const engram__term_t *d, size_t nd);
/* Non-zero when the sorted term lists share a word. */
int engram__terms_share(const engram__term_t *q, size_t nq, const engram__term_t *d, size_t nd);

/* Identifies the built-in embedder's vectors in a persisted file; change it when the hashing changes. */
#define ENGRAM__HASH_EMBEDDER_ID "hash/1"

#endif
