/*
 * redis_rank.c — the text side of the redis source's ranked search (see redis_rank.h): the indexed text of an
 * item read straight from its stored JSON text, and a streamed BM25 scorer that ranks a namespace's items batch
 * by batch as they arrive from Redis, without building an index (redis_search.c drives both).
 *
 * Text. An item's indexed text is engram_text_of(key, value): the key, then every string leaf of the value,
 * each after one space. Parsing every value with cJSON only to walk its leaves costs an allocation per node, so
 * the JSON text is scanned where it lies: engram__redis_text_of copies the leaves (decoding the simple escapes
 * \" \\ \/ \b \f \n \r \t), and engram__redis_rank_add_json tokenizes them in place — a simple escape stands
 * for a byte that is never part of a token, so every token is a run of the raw text and nothing is copied. The
 * scanner takes only text that cJSON provably reads the same way — strict JSON with no \u escape, no raw
 * control character, nesting under 256, numbers under 64 characters and nothing but whitespace after the value —
 * and anything else goes to cJSON and engram_text_of, so the text and the verdict on a value that is not JSON
 * are cJSON's. Tokens follow engram_tokenize: runs of ASCII letters and digits and bytes ≥ 0x80, ASCII folded to
 * lower case, cut to ENGRAM_TOKEN_MAX bytes at a UTF-8 character boundary.
 *
 * Scorer. The same BM25 as src/shared/text_index.c (k1 = 1.2, b = 0.75, idf = ln(1 + (N − df + 0.5) / (df + 0.5)),
 * raw score s reported as s / (s + 1), ties by key), streamed: N, the total length and each query term's df
 * accumulate over every item added; per item only its length and its query terms' frequencies are kept, and only
 * for items that hold a query term. The scores are the index's bit for bit: the index adds a document's per-term
 * contributions in the order of its term ids, which it hands out in order of first appearance over the documents
 * put (in key order, here as there); the scorer records that order for the query's terms and adds in it, with the
 * same expression. Items arrive in key order, so an item's number orders ties by key.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "redis_json.h"
#include "redis_rank.h"

#define BM25_K1 1.2 /* as src/shared/text_index.c */
#define BM25_B 0.75
#define UNSEEN UINT32_MAX
#define FX_MAX_DEPTH 256
#define FX_MAX_NUMBER 63 /* cJSON reads at most 63 characters of a number */

/* ---- Scanning stored JSON ---- */

/* Byte classes: 1 a token byte (an ASCII letter or digit, or any byte ≥ 0x80, as engram_tokenize), 2 a byte that
 * interrupts a JSON string's run ('"', '\\', a control character), 0 any other byte. */
static const unsigned char cls[256] = {
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0,
    0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 2, 0, 0, 0,
    0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
};

static void rk_token(engram__redis_rank_t *rk, const char *s, size_t n);

/* Where the string leaves of a value go: appended to out (after a space each), or tokenized into rk. */
typedef struct {
  engram__rbuf_t *out;
  engram__redis_rank_t *rk;
} fx_t;

static const char *fx_ws(const char *p, const char *e) {
  while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
  return p;
}

/* A string starting after its opening quote: a leaf of the value (value ≠ 0) or a member name. A simple escape
 * stands for a byte that is never a token byte, so tokens are runs of the raw text. */
static const char *fx_string(const char *p, const char *e, const fx_t *x, int value) {
  engram__rbuf_t *out = value ? x->out : NULL;
  engram__redis_rank_t *rk = value ? x->rk : NULL;
  const char *run = p;
  if (out != NULL) engram__rbuf_raw(out, " ", 1);
  for (;;) {
    unsigned char c;
    char d;
    if (p >= e) return NULL;
    c = (unsigned char)*p;
    if (cls[c] != 2) {
      if (rk != NULL && cls[c] == 1) {
        const char *s = p;
        while (p < e && cls[(unsigned char)*p] == 1) p++;
        rk_token(rk, s, (size_t)(p - s));
      } else {
        p++;
      }
      continue;
    }
    if (c == '"') {
      if (out != NULL && p > run) engram__rbuf_raw(out, run, (size_t)(p - run));
      return p + 1;
    }
    if (c != '\\') return NULL; /* a raw control character: cJSON decides */
    if (out != NULL && p > run) engram__rbuf_raw(out, run, (size_t)(p - run));
    if (++p >= e) return NULL;
    switch (*p) {
      case '"': d = '"'; break;
      case '\\': d = '\\'; break;
      case '/': d = '/'; break;
      case 'b': d = '\b'; break;
      case 'f': d = '\f'; break;
      case 'n': d = '\n'; break;
      case 'r': d = '\r'; break;
      case 't': d = '\t'; break;
      default: return NULL; /* \u (and anything invalid): cJSON decides */
    }
    if (out != NULL) engram__rbuf_raw(out, &d, 1);
    run = ++p;
  }
}

static int fx_digit(const char *p, const char *e) { return p < e && *p >= '0' && *p <= '9'; }

static const char *fx_number(const char *p, const char *e) {
  const char *s = p;
  if (p < e && *p == '-') p++;
  if (!fx_digit(p, e)) return NULL;
  if (*p == '0') p++;
  else
    while (fx_digit(p, e)) p++;
  if (p < e && *p == '.') {
    if (!fx_digit(++p, e)) return NULL;
    while (fx_digit(p, e)) p++;
  }
  if (p < e && (*p == 'e' || *p == 'E')) {
    p++;
    if (p < e && (*p == '+' || *p == '-')) p++;
    if (!fx_digit(p, e)) return NULL;
    while (fx_digit(p, e)) p++;
  }
  return p - s > FX_MAX_NUMBER ? NULL : p;
}

static const char *fx_word(const char *p, const char *e, const char *w, size_t n) {
  return (size_t)(e - p) >= n && memcmp(p, w, n) == 0 ? p + n : NULL;
}

/* One value at p (whitespace skipped); NULL when the text is not in the subset this scanner vouches for. */
static const char *fx_value(const char *p, const char *e, int depth, const fx_t *x) {
  if (depth > FX_MAX_DEPTH || (p = fx_ws(p, e)) >= e) return NULL;
  switch (*p) {
    case '"': return fx_string(p + 1, e, x, 1);
    case 't': return fx_word(p, e, "true", 4);
    case 'f': return fx_word(p, e, "false", 5);
    case 'n': return fx_word(p, e, "null", 4);
    case '[':
      if ((p = fx_ws(p + 1, e)) < e && *p == ']') return p + 1;
      for (;;) {
        if ((p = fx_value(p, e, depth + 1, x)) == NULL || (p = fx_ws(p, e)) >= e) return NULL;
        if (*p == ']') return p + 1;
        if (*p++ != ',') return NULL;
      }
    case '{':
      if ((p = fx_ws(p + 1, e)) < e && *p == '}') return p + 1;
      for (;;) {
        if ((p = fx_ws(p, e)) >= e || *p != '"' || (p = fx_string(p + 1, e, x, 0)) == NULL ||
            (p = fx_ws(p, e)) >= e || *p++ != ':')
          return NULL;
        if ((p = fx_value(p, e, depth + 1, x)) == NULL || (p = fx_ws(p, e)) >= e) return NULL;
        if (*p == '}') return p + 1;
        if (*p++ != ',') return NULL;
      }
    default: return fx_number(p, e);
  }
}

/* Non-zero when json[0..len) is one value of the scanner's subset (the sink has seen all its leaves). */
static int fx_whole(const char *json, size_t len, const fx_t *x) {
  const char *end = fx_value(json, json + len, 0, x);
  return end != NULL && fx_ws(end, json + len) == json + len;
}

int engram__redis_text_of(engram__rbuf_t *out, const char *key, size_t key_len, const char *json, size_t len) {
  fx_t x;
  cJSON *value;
  char *text;
  int rc;
  x.out = out;
  x.rk = NULL;
  engram__rbuf_reset(out);
  engram__rbuf_raw(out, key, key_len);
  if (fx_whole(json, len, &x)) return out->failed ? ENGRAM_ENOMEM : 0;
  /* Outside the scanner's subset: what cJSON makes of it. */
  if ((rc = engram__redis_parse_json(json, len, &value)) != 0) return rc;
  text = engram_text_of(key, value);
  cJSON_Delete(value);
  if (text == NULL) return ENGRAM_ENOMEM;
  engram__rbuf_reset(out);
  engram__rbuf_raw(out, text, strlen(text));
  engram_free(text);
  return out->failed ? ENGRAM_ENOMEM : 0;
}

/* ---- The streamed scorer ---- */

typedef struct {
  char *tok;      /* as engram_tokenize gives it: ASCII folded to lower case */
  uint32_t len;
  uint32_t df;    /* items holding the term */
  uint32_t first; /* rank of its first appearance over the items added (UNSEEN before) */
  double idf;
} rk_term_t;

typedef struct {
  uint32_t term, tf;
} rk_tf_t;

/* An item holding at least one query term. */
typedef struct {
  size_t key_off, tf_off;
  uint32_t key_len, n_tf;
  uint32_t seq; /* the item's number among those added: key order */
  uint32_t dl;  /* its length in tokens */
  uint64_t version;
  double score; /* raw BM25, once scored */
} rk_doc_t;

struct engram__redis_rank_s {
  rk_term_t *terms;
  uint32_t n_terms, next_first;
  uint32_t lenmask[256]; /* per first byte: bit min(len, 31) of each query term starting with it */
  uint32_t *cur_tf, *touched, n_touched, dl; /* the item being added; touched in order of first appearance */
  rk_doc_t *docs;
  size_t n_docs, cap_docs;
  rk_tf_t *tfs;
  size_t n_tfs, cap_tfs;
  engram__rbuf_t keys; /* the matching items' keys, each NUL-terminated */
  uint64_t n_items, total_len;
};

static unsigned char fold(unsigned char c) { return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + ('a' - 'A')) : c; }

/* engram_tokenize's cut of a token longer than ENGRAM_TOKEN_MAX: its first ENGRAM_TOKEN_MAX bytes, without a
 * UTF-8 character cut short at their end. */
static size_t token_cut(const char *buf) {
  size_t n = ENGRAM_TOKEN_MAX, k = n, back = 0, want;
  unsigned char lead;
  while (k > 0 && back < 3 && ((unsigned char)buf[k - 1] & 0xC0) == 0x80) k--, back++;
  if (k == 0) return n;
  lead = (unsigned char)buf[k - 1];
  if (lead < 0xC0) return n;
  want = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : 2;
  return (n - (k - 1) < want) ? k - 1 : n;
}

/* One token of the item being added: s[0..n) as it appears in the text (not folded yet). */
static void rk_token(engram__redis_rank_t *rk, const char *s, size_t n) {
  uint32_t j;
  size_t i;
  rk->dl++;
  if (n > ENGRAM_TOKEN_MAX) n = token_cut(s);
  if (!(rk->lenmask[fold((unsigned char)s[0])] & (1u << (n < 31 ? n : 31)))) return;
  for (j = 0; j < rk->n_terms; j++) {
    const rk_term_t *t = &rk->terms[j];
    if (t->len != n) continue;
    for (i = 0; i < n && (unsigned char)t->tok[i] == fold((unsigned char)s[i]); i++) {
    }
    if (i < n) continue;
    if (rk->cur_tf[j]++ == 0) rk->touched[rk->n_touched++] = j;
    return;
  }
}

typedef struct {
  engram__redis_rank_t *rk;
} qctx_t;

static int query_token(const char *tok, size_t len, void *ud) {
  qctx_t *q = ud;
  engram__redis_rank_t *rk = q->rk;
  uint32_t j;
  rk_term_t *t;
  for (j = 0; j < rk->n_terms; j++)
    if (rk->terms[j].len == len && memcmp(rk->terms[j].tok, tok, len) == 0) return 0; /* counted once */
  if ((t = engram_realloc(rk->terms, (rk->n_terms + 1) * sizeof *t)) == NULL) return ENGRAM_ENOMEM;
  rk->terms = t;
  t = &rk->terms[rk->n_terms];
  memset(t, 0, sizeof *t);
  if ((t->tok = engram_strndup(tok, len)) == NULL) return ENGRAM_ENOMEM;
  t->len = (uint32_t)len;
  t->first = UNSEEN;
  rk->n_terms++;
  rk->lenmask[(unsigned char)tok[0]] |= 1u << (len < 31 ? len : 31);
  return 0;
}

void engram__redis_rank_free(engram__redis_rank_t *rk) {
  uint32_t j;
  if (rk == NULL) return;
  for (j = 0; j < rk->n_terms; j++) engram_free(rk->terms[j].tok);
  engram_free(rk->terms);
  engram_free(rk->cur_tf);
  engram_free(rk->touched);
  engram_free(rk->docs);
  engram_free(rk->tfs);
  engram__rbuf_free(&rk->keys);
  engram_free(rk);
}

int engram__redis_rank_new(const char *query, engram__redis_rank_t **out) {
  engram__redis_rank_t *rk = engram_calloc(1, sizeof *rk);
  qctx_t q;
  *out = NULL;
  if (rk == NULL) return ENGRAM_ENOMEM;
  q.rk = rk;
  if (engram_tokenize(query, strlen(query), query_token, &q) != 0 ||
      (rk->n_terms > 0 && ((rk->cur_tf = engram_calloc(rk->n_terms, sizeof *rk->cur_tf)) == NULL ||
                           (rk->touched = engram_malloc(rk->n_terms * sizeof *rk->touched)) == NULL))) {
    engram__redis_rank_free(rk);
    return ENGRAM_ENOMEM;
  }
  *out = rk;
  return 0;
}

static int item_token(const char *tok, size_t len, void *ud) {
  rk_token(ud, tok, len);
  return 0;
}

static int grow(void **p, size_t *cap, size_t need, size_t elem) {
  size_t c = *cap ? *cap : 64;
  void *q;
  if (need <= *cap) return 0;
  while (c < need) c *= 2;
  if ((q = engram_realloc(*p, c * elem)) == NULL) return ENGRAM_ENOMEM;
  *p = q;
  *cap = c;
  return 0;
}

/* Forgets the item being added. */
static void item_reset(engram__redis_rank_t *rk) {
  uint32_t i;
  for (i = 0; i < rk->n_touched; i++) rk->cur_tf[rk->touched[i]] = 0;
  rk->n_touched = 0;
  rk->dl = 0;
}

/* Counts the item whose tokens were seen. Terms first seen in it take their ranks in the order they appeared
 * (touched is in that order), as text_index hands out term ids. Returns 0 or ENGRAM_ENOMEM. */
static int item_commit(engram__redis_rank_t *rk, const char *key, size_t key_len, uint64_t version) {
  rk_doc_t *d;
  uint32_t i;
  int rc = 0;
  if (rk->n_touched > 0) {
    size_t key_off = rk->keys.len;
    engram__rbuf_raw(&rk->keys, key, key_len);
    engram__rbuf_raw(&rk->keys, "", 1);
    if (rk->keys.failed || grow((void **)&rk->docs, &rk->cap_docs, rk->n_docs + 1, sizeof *rk->docs) != 0 ||
        grow((void **)&rk->tfs, &rk->cap_tfs, rk->n_tfs + rk->n_touched, sizeof *rk->tfs) != 0) {
      rc = ENGRAM_ENOMEM;
    } else {
      d = &rk->docs[rk->n_docs++];
      d->key_off = key_off;
      d->key_len = (uint32_t)key_len;
      d->tf_off = rk->n_tfs;
      d->n_tf = rk->n_touched;
      d->seq = (uint32_t)rk->n_items;
      d->dl = rk->dl;
      d->version = version;
      d->score = 0;
      for (i = 0; i < rk->n_touched; i++) {
        uint32_t j = rk->touched[i];
        if (rk->terms[j].first == UNSEEN) rk->terms[j].first = rk->next_first++;
        rk->tfs[rk->n_tfs].term = j;
        rk->tfs[rk->n_tfs++].tf = rk->cur_tf[j];
        rk->terms[j].df++;
      }
    }
  }
  if (rc == 0) {
    rk->n_items++;
    rk->total_len += rk->dl;
  }
  item_reset(rk);
  return rc;
}

int engram__redis_rank_add(engram__redis_rank_t *rk, const char *key, size_t key_len, const char *text, size_t len,
                           uint64_t version) {
  item_reset(rk);
  engram_tokenize(text, len, item_token, rk);
  return item_commit(rk, key, key_len, version);
}

int engram__redis_rank_add_json(engram__redis_rank_t *rk, const char *key, size_t key_len, const char *json,
                                size_t len, uint64_t version) {
  const char *p = key, *e = key + key_len;
  fx_t x;
  item_reset(rk);
  while (p < e) { /* the key's tokens, then the leaves' */
    if (cls[(unsigned char)*p] == 1) {
      const char *s = p;
      while (p < e && cls[(unsigned char)*p] == 1) p++;
      rk_token(rk, s, (size_t)(p - s));
    } else {
      p++;
    }
  }
  x.out = NULL;
  x.rk = rk;
  if (!fx_whole(json, len, &x)) {
    item_reset(rk);
    return 1;
  }
  return item_commit(rk, key, key_len, version);
}

void engram__redis_rank_score(engram__redis_rank_t *rk) {
  double avgdl, inv_avgdl;
  size_t i;
  uint32_t j, k;
  if (rk->n_items == 0) return;
  for (j = 0; j < rk->n_terms; j++) {
    rk_term_t *t = &rk->terms[j];
    t->idf = log(1.0 + ((double)rk->n_items - t->df + 0.5) / (t->df + 0.5));
  }
  avgdl = (double)rk->total_len / (double)rk->n_items;
  inv_avgdl = avgdl > 0 ? 1.0 / avgdl : 0.0;
  for (i = 0; i < rk->n_docs; i++) {
    rk_doc_t *d = &rk->docs[i];
    rk_tf_t *tf = &rk->tfs[d->tf_off];
    double s = 0;
    uint32_t dl = d->dl;
    /* In the order of the terms' first appearance (text_index's term ids). */
    for (j = 1; j < d->n_tf; j++) {
      rk_tf_t x = tf[j];
      for (k = j; k > 0 && rk->terms[tf[k - 1].term].first > rk->terms[x.term].first; k--) tf[k] = tf[k - 1];
      tf[k] = x;
    }
    for (j = 0; j < d->n_tf; j++) {
      double idf = rk->terms[tf[j].term].idf, f = tf[j].tf;
      s += idf * f * (BM25_K1 + 1) / (f + BM25_K1 * (1 - BM25_B + BM25_B * dl * inv_avgdl));
    }
    d->score = s;
  }
}

/* Non-zero when matching item a ranks strictly before b: higher score, then lower number (key order). */
static int before(const engram__redis_rank_t *rk, uint32_t a, uint32_t b) {
  const rk_doc_t *x = &rk->docs[a], *y = &rk->docs[b];
  if (x->score != y->score) return x->score > y->score;
  return x->seq < y->seq;
}

/* The heap in h[0..n) keeps its worst-ranked item at the root. */
static void sift_down(const engram__redis_rank_t *rk, uint32_t *h, size_t n, size_t i) {
  for (;;) {
    size_t l = 2 * i + 1, w = i;
    uint32_t tmp;
    if (l < n && before(rk, h[w], h[l])) w = l;
    if (l + 1 < n && before(rk, h[w], h[l + 1])) w = l + 1;
    if (w == i) return;
    tmp = h[i];
    h[i] = h[w];
    h[w] = tmp;
    i = w;
  }
}

static void sift_up(const engram__redis_rank_t *rk, uint32_t *h, size_t i) {
  while (i > 0) {
    size_t p = (i - 1) / 2;
    uint32_t tmp;
    if (!before(rk, h[p], h[i])) return;
    tmp = h[i];
    h[i] = h[p];
    h[p] = tmp;
    i = p;
  }
}

size_t engram__redis_rank_top(const engram__redis_rank_t *rk, size_t m, uint32_t *out) {
  size_t h = 0, i;
  if (m > rk->n_docs) m = rk->n_docs;
  if (m == 0) return 0;
  for (i = 0; i < rk->n_docs; i++) {
    uint32_t c = (uint32_t)i;
    if (h < m) {
      out[h] = c;
      sift_up(rk, out, h++);
    } else if (before(rk, c, out[0])) {
      out[0] = c;
      sift_down(rk, out, h, 0);
    }
  }
  for (i = h; i > 1; i--) { /* heapsort: best first */
    uint32_t tmp = out[0];
    out[0] = out[i - 1];
    out[i - 1] = tmp;
    sift_down(rk, out, i - 1, 0);
  }
  return h;
}

size_t engram__redis_rank_matching(const engram__redis_rank_t *rk) { return rk->n_docs; }

double engram__redis_rank_score_of(const engram__redis_rank_t *rk, uint32_t i) {
  double s = rk->docs[i].score;
  return s / (s + 1.0);
}

const char *engram__redis_rank_key(const engram__redis_rank_t *rk, uint32_t i) {
  return rk->keys.p + rk->docs[i].key_off;
}

uint64_t engram__redis_rank_count(const engram__redis_rank_t *rk, double min_score) {
  uint64_t n = 0;
  size_t i;
  for (i = 0; i < rk->n_docs; i++)
    if (engram__redis_rank_score_of(rk, (uint32_t)i) >= min_score) n++;
  return n;
}
