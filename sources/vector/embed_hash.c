/*
 * embed_hash.c — the built-in "hash" embedder: a text embedding that needs no model and no network, so that the
 * vector source works out of the box and its tests run anywhere.
 *
 * This file is the hashing itself, a library with no state that calls only the core (engram_tokenize): the
 * analysis of a text into weighted terms and bigrams, their signed-hash sketch, the exact cosine of two term
 * lists, and engram_embed_hash (engram/vector.h). Its adapter as a registered engram_embedder_t lives with the
 * embedder interface (vector_embed.c); the vector source calls the analysis directly (vector.c, vector_items.c)
 * to keep each item's term list.
 *
 * A text is split with engram_tokenize (the same words every source indexes). English stop words are dropped
 * (they carry no meaning and, hashed, only add collision noise) and a plural "s" is folded ("files" → "file",
 * not "class"). Each remaining word is a term weighted 1 + ln(tf) — sublinear, so that a word repeated ten
 * times does not drown the rest — and doubled when the word first appears in the opening 24 tokens, where a
 * description says what it is about. Adjacent kept words also form bigrams at half weight ("command line").
 * The features are hashed with a sign (the hashing trick with signed buckets, so collisions cancel on average
 * instead of adding up) into `dimension` floats, and the vector is L2-normalized: cosine = dot product.
 *
 * What a fixed function of one text cannot know is how rare a word is. The vector source therefore weights the
 * words of a *query* by an idf computed over its own items (a hashed document-frequency table, vector_items.c)
 * and, since 384 hashed dimensions blur a long description, re-ranks the best candidates of the hashed search
 * by the exact cosine of the term lists the vectors approximate (engram__hash_exact). Measured on the Debian
 * known-item task (tests/bench/knownitem_vector.c), see docs/sources-vector.md.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "embed_hash.h"

#define POS_BOOST_TOKENS 24 /* words first seen in the opening tokens weigh POS_BOOST times more */
#define POS_BOOST 2.0f
#define BIGRAM_WEIGHT 0.5f

/* Sorted: looked up with bsearch. */
static const char *const stop_words[] = {
    "a",    "all",   "also", "an",    "and",   "any",   "are",   "as",    "at",    "be",    "but",   "by",
    "can",  "de",    "etc",  "for",   "from",  "has",   "have",  "if",    "in",    "into",  "is",    "it",
    "its",  "may",   "more", "not",   "of",    "on",    "one",   "only",  "or",    "other", "so",    "some",
    "such", "than",  "that", "the",   "their", "then",  "there", "these", "they",  "this",  "to",    "use",
    "used", "using", "very", "was",   "well",  "were",  "which", "will",  "with",  "you",   "your",
};

static int cmp_word(const void *key, const void *elem) { return strcmp(key, *(const char *const *)elem); }

static int is_stop(const char *tok, size_t len) {
  if (len > 5) return 0;
  return bsearch(tok, stop_words, sizeof stop_words / sizeof stop_words[0], sizeof stop_words[0], cmp_word) != NULL;
}

static uint64_t mix64(uint64_t x) {
  x ^= x >> 30; /* splitmix64's finalizer */
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}

static uint32_t word_hash(const char *s, size_t n) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a, then mixed */
  size_t i;
  for (i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
  return (uint32_t)mix64(h) | 1u; /* never 0: 0 marks a stop word in the sequence */
}

static int grow(void **arr, size_t *cap, size_t need, size_t elem) {
  size_t c = *cap ? *cap : 32;
  void *p;
  if (need <= *cap) return 0;
  while (c < need) c *= 2;
  if ((p = engram_realloc(*arr, c * elem)) == NULL) return ENGRAM_ENOMEM;
  *arr = p;
  *cap = c;
  return 0;
}

void engram__hash_text_free(engram__hash_text_t *t) {
  engram_free(t->seq);
  engram_free(t->terms);
  engram_free(t->first);
  engram_free(t->tfw);
  engram_free(t->bigrams);
  memset(t, 0, sizeof *t);
}

static int on_token(const char *tok, size_t len, void *ud) {
  engram__hash_text_t *t = ud;
  if (grow((void **)&t->seq, &t->cap_seq, t->n_seq + 1, sizeof *t->seq) != 0) return ENGRAM_ENOMEM;
  if (is_stop(tok, len)) {
    t->seq[t->n_seq++] = 0;
    return 0;
  }
  if (len > 4 && tok[len - 1] == 's' && tok[len - 2] != 's') len--;
  t->seq[t->n_seq++] = word_hash(tok, len);
  return 0;
}

typedef struct {
  uint32_t hash, pos;
} occ_t;

static int cmp_occ(const void *a, const void *b) {
  const occ_t *x = a, *y = b;
  if (x->hash != y->hash) return x->hash < y->hash ? -1 : 1;
  return x->pos < y->pos ? -1 : x->pos > y->pos;
}

/* Groups occurrences (sorted by hash, then position) into distinct entries; returns how many. */
static size_t group(occ_t *occ, size_t n, uint32_t *hash, uint32_t *first, float *tfw) {
  size_t i = 0, m = 0;
  while (i < n) {
    size_t j = i;
    while (j < n && occ[j].hash == occ[i].hash) j++;
    hash[m] = occ[i].hash;
    first[m] = occ[i].pos;
    tfw[m] = 1.0f + logf((float)(j - i));
    m++;
    i = j;
  }
  return m;
}

int engram__hash_analyze(engram__hash_text_t *t, const char *text, size_t len) {
  occ_t *occ = NULL;
  size_t i, n = 0, m;
  uint32_t *h = NULL, *first = NULL;
  float *tfw = NULL;
  int rc = ENGRAM_ENOMEM;
  t->n_seq = t->n_terms = t->n_bigrams = 0;
  if (engram_tokenize(text, len, on_token, t) != 0) return ENGRAM_ENOMEM;
  if (t->n_seq == 0) return 0;
  if ((occ = engram_malloc(t->n_seq * sizeof *occ)) == NULL) return ENGRAM_ENOMEM;
  if ((h = engram_malloc(t->n_seq * sizeof *h)) == NULL || (first = engram_malloc(t->n_seq * sizeof *first)) == NULL ||
      (tfw = engram_malloc(t->n_seq * sizeof *tfw)) == NULL)
    goto out;
  /* Words. */
  for (i = 0; i < t->n_seq; i++)
    if (t->seq[i] != 0) occ[n].hash = t->seq[i], occ[n].pos = (uint32_t)i, n++;
  qsort(occ, n, sizeof *occ, cmp_occ);
  m = group(occ, n, h, first, tfw);
  if (grow((void **)&t->terms, &t->cap_terms, m, sizeof *t->terms) != 0) goto out;
  {
    size_t cap = t->cap_terms; /* first and tfw follow terms' capacity */
    uint32_t *f2 = engram_realloc(t->first, cap * sizeof *f2);
    float *w2;
    if (f2 == NULL) goto out;
    t->first = f2;
    if ((w2 = engram_realloc(t->tfw, cap * sizeof *w2)) == NULL) goto out;
    t->tfw = w2;
  }
  for (i = 0; i < m; i++) {
    t->terms[i].hash = h[i];
    t->terms[i].weight = tfw[i];
    t->first[i] = first[i];
    t->tfw[i] = tfw[i];
  }
  t->n_terms = m;
  /* Bigrams of adjacent kept words: grouped the same way, remembering each pair's words for query idf. */
  n = 0;
  for (i = 0; i + 1 < t->n_seq; i++)
    if (t->seq[i] != 0 && t->seq[i + 1] != 0)
      occ[n].hash = (uint32_t)mix64(((uint64_t)t->seq[i] << 32) | t->seq[i + 1]) | 1u, occ[n].pos = (uint32_t)i, n++;
  qsort(occ, n, sizeof *occ, cmp_occ);
  m = group(occ, n, h, first, tfw);
  if (grow((void **)&t->bigrams, &t->cap_bigrams, m, sizeof *t->bigrams) != 0) goto out;
  for (i = 0; i < m; i++) {
    engram__bigram_t *b = &t->bigrams[i];
    b->hash = h[i];
    b->first = first[i];
    b->tfw = tfw[i];
    b->a = t->seq[first[i]];
    b->b = t->seq[first[i] + 1];
  }
  t->n_bigrams = m;
  rc = 0;
out:
  engram_free(occ);
  engram_free(h);
  engram_free(first);
  engram_free(tfw);
  return rc;
}

static float pos_weight(uint32_t pos) { return pos < POS_BOOST_TOKENS ? POS_BOOST : 1.0f; }

void engram__hash_weights_doc(engram__hash_text_t *t) {
  size_t i;
  t->query = 0;
  for (i = 0; i < t->n_terms; i++) t->terms[i].weight = t->tfw[i] * pos_weight(t->first[i]);
}

void engram__hash_weights_query(engram__hash_text_t *t, engram__idf_fn idf, void *ud) {
  size_t i;
  t->query = 1;
  for (i = 0; i < t->n_terms; i++) t->terms[i].weight = t->tfw[i] * (idf ? (float)idf(t->terms[i].hash, ud) : 1.0f);
}

/* The weight of bigram b: for documents, half the mean position weight of its words; for queries, half the
 * mean idf of its words (looked up in the term list, which holds both words). */
static float bigram_weight(const engram__hash_text_t *t, const engram__bigram_t *b, int query) {
  if (!query) return b->tfw * BIGRAM_WEIGHT * (pos_weight(b->first) + pos_weight(b->first + 1)) * 0.5f;
  {
    float wa = 1.0f, wb = 1.0f;
    size_t lo = 0, hi = t->n_terms;
    /* The term weights are tfw × idf; divide tfw back out to get each word's idf. */
    while (lo < hi) {
      size_t mid = (lo + hi) / 2;
      if (t->terms[mid].hash < b->a) lo = mid + 1;
      else hi = mid;
    }
    if (lo < t->n_terms && t->terms[lo].hash == b->a) wa = t->terms[lo].weight / t->tfw[lo];
    lo = 0, hi = t->n_terms;
    while (lo < hi) {
      size_t mid = (lo + hi) / 2;
      if (t->terms[mid].hash < b->b) lo = mid + 1;
      else hi = mid;
    }
    if (lo < t->n_terms && t->terms[lo].hash == b->b) wb = t->terms[lo].weight / t->tfw[lo];
    return b->tfw * BIGRAM_WEIGHT * (wa + wb) * 0.5f;
  }
}

static void add_feature(float *out, size_t dim, uint64_t feature, float w) {
  uint64_t h = mix64(feature ^ 0x9e3779b97f4a7c15ull);
  size_t bucket = (size_t)(((h >> 32) * (uint64_t)dim) >> 32);
  out[bucket] += (h & 1u) ? w : -w;
}

static void sketch(const engram__hash_text_t *t, float *out, size_t dim, int query) {
  size_t i;
  double norm = 0;
  memset(out, 0, dim * sizeof *out);
  for (i = 0; i < t->n_terms; i++) add_feature(out, dim, t->terms[i].hash, t->terms[i].weight);
  for (i = 0; i < t->n_bigrams; i++)
    add_feature(out, dim, ((uint64_t)1 << 32) | t->bigrams[i].hash, bigram_weight(t, &t->bigrams[i], query));
  for (i = 0; i < dim; i++) norm += (double)out[i] * out[i];
  if (norm > 0) {
    float inv = (float)(1.0 / sqrt(norm));
    for (i = 0; i < dim; i++) out[i] *= inv;
  }
}

void engram__hash_sketch(const engram__hash_text_t *t, float *out, size_t dim) { sketch(t, out, dim, t->query); }

void engram__hash_normalize_terms(engram__hash_text_t *t) {
  double norm = 0;
  size_t i;
  for (i = 0; i < t->n_terms; i++) norm += (double)t->terms[i].weight * t->terms[i].weight;
  if (norm > 0) {
    float inv = (float)(1.0 / sqrt(norm));
    for (i = 0; i < t->n_terms; i++) t->terms[i].weight *= inv;
  }
}

double engram__hash_exact(const engram__term_t *q, size_t nq, const engram__term_t *d, size_t nd) {
  size_t i = 0, j = 0;
  double s = 0;
  while (i < nq && j < nd) {
    if (q[i].hash < d[j].hash) i++;
    else if (q[i].hash > d[j].hash) j++;
    else s += (double)q[i++].weight * d[j++].weight;
  }
  return s < 0 ? 0 : s > 1 ? 1 : s;
}

int engram__terms_share(const engram__term_t *q, size_t nq, const engram__term_t *d, size_t nd) {
  size_t i;
  for (i = 0; i < nq; i++) {
    size_t lo = 0, hi = nd;
    while (lo < hi) {
      size_t mid = (lo + hi) / 2;
      if (d[mid].hash < q[i].hash) lo = mid + 1;
      else hi = mid;
    }
    if (lo < nd && d[lo].hash == q[i].hash) return 1;
  }
  return 0;
}

int engram_embed_hash(const char *text, float *out, size_t dimension) {
  engram__hash_text_t t;
  int rc;
  if (text == NULL || out == NULL || dimension == 0 || dimension > ENGRAM_EMBED_DIMENSION_MAX) return ENGRAM_EINVAL;
  memset(&t, 0, sizeof t);
  if ((rc = engram__hash_analyze(&t, text, strlen(text))) == 0) {
    engram__hash_weights_doc(&t);
    sketch(&t, out, dimension, 0);
  }
  engram__hash_text_free(&t);
  return rc;
}
