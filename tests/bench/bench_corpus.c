/*
 * bench_corpus.c — the whole Debian corpus (63,955 package descriptions, ../shared/corpus/) through each embedded
 * source — cache, sqlite, vector — next to the raw library doing the same work:
 *
 *  1. ingest, items/s: engram stores every record (key = package, value = {"text": description}, metadata =
 *     {"title", "section", "tags"}) with 1,000 calls in flight, against
 *       cache:  ck_ht put of the key and the record's JSON text (built with cJSON, as engram must),
 *       sqlite: raw upserts of key, value JSON and metadata JSON committed every 1,000 rows (WAL, NORMAL),
 *       vector: engram_embed_hash of the text and an append to a float matrix (the index's own work);
 *  2. known-item search quality (query = a record's title, relevant = its key; the fixed 200-record sample of
 *     tests/test_text_recall.c): recall@10, MRR@10 and the mean query time, against
 *       cache:  the BM25 index (src/shared/text_index.c) over the text alone — the reference of the corpus README,
 *       sqlite: a raw FTS5 table over the text, the title's words OR-ed, ORDER BY bm25,
 *       vector: engram_embed_hash vectors of text and title, exact cosine (no idf weighting of the query).
 * The sqlite source's first text search builds its BM25 index: that query's time is shown apart.
 */
#include <ck_ht.h>
#include <malloc.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/benchlib.h"
#include "engram/source.h"

#define WINDOW 1000
#define DIM 384

static bl_corpus_t corpus;
static const char *dir;

/* The record's value and metadata as JSON text, built through cJSON as engram's callers do. */
static void record_json(const bl_record_t *r, char **value, char **meta) {
  cJSON *v = cJSON_CreateObject(), *m = cJSON_CreateObject(), *tags = cJSON_Parse(r->tags_json);
  if (v == NULL || m == NULL || tags == NULL || !cJSON_AddStringToObject(v, "text", r->text) ||
      !cJSON_AddStringToObject(m, "title", r->title) || !cJSON_AddStringToObject(m, "section", r->section) ||
      !cJSON_AddItemToObject(m, "tags", tags))
    bl_die("out of memory");
  *value = cJSON_PrintUnformatted(v);
  *meta = cJSON_PrintUnformatted(m);
  if (*value == NULL || *meta == NULL) bl_die("out of memory");
  cJSON_Delete(v);
  cJSON_Delete(m);
}

/* ---- cache baselines ---- */

static void *ht_malloc(size_t r) { return malloc(r); }
static void ht_free(void *p, size_t b, bool r) {
  (void)b;
  (void)r;
  free(p);
}
static struct ck_malloc ht_allocator = {.malloc = ht_malloc, .free = ht_free};

static double raw_cache_ingest(void) {
  ck_ht_t ht;
  ck_ht_iterator_t it = CK_HT_ITERATOR_INITIALIZER;
  ck_ht_entry_t *ep;
  double t;
  size_t i;
  if (!ck_ht_init(&ht, CK_HT_MODE_BYTESTRING, NULL, &ht_allocator, 1024, 6602834)) bl_die("ck_ht_init");
  t = bl_now();
  for (i = 0; i < corpus.n; i++) {
    const bl_record_t *r = &corpus.r[i];
    size_t kl = strlen(r->key), vl, ml;
    char *value, *meta, *k, *blob;
    ck_ht_entry_t e;
    ck_ht_hash_t h;
    record_json(r, &value, &meta);
    vl = strlen(value);
    ml = strlen(meta);
    k = malloc(kl);
    blob = malloc(vl + ml + 2);
    if (k == NULL || blob == NULL) bl_die("out of memory");
    memcpy(k, r->key, kl);
    memcpy(blob, value, vl + 1);
    memcpy(blob + vl + 1, meta, ml + 1);
    cJSON_free(value);
    cJSON_free(meta);
    ck_ht_hash(&h, &ht, k, (uint16_t)kl);
    ck_ht_entry_set(&e, h, k, (uint16_t)kl, blob);
    if (!ck_ht_set_spmc(&ht, h, &e)) bl_die("ck_ht_set_spmc");
    if (ck_ht_entry_key(&e) != NULL && ck_ht_entry_key(&e) != k) { /* a duplicate key replaced an older entry */
      free(ck_ht_entry_key(&e));
      free(ck_ht_entry_value(&e));
    }
  }
  t = bl_now() - t;
  while (ck_ht_next(&ht, &it, &ep)) {
    free(ck_ht_entry_key(ep));
    free(ck_ht_entry_value(ep));
  }
  ck_ht_destroy(&ht);
  return (double)corpus.n / t;
}

/* Heap bytes per item of the core's BM25 index (engram_text_index, what the cache, sqlite and redis keep per
 * namespace) over key + text of every record: mallinfo2's bytes in use before and after building it. */
static double text_index_bytes_per_item(void) {
  engram_text_index_t *ix;
  struct mallinfo2 a, b;
  size_t i;
  char *t;
  a = mallinfo2();
  if (engram_text_index_new(&ix) != 0) bl_die("out of memory");
  for (i = 0; i < corpus.n; i++) {
    size_t kl = strlen(corpus.r[i].key), tl = strlen(corpus.r[i].text);
    if ((t = malloc(kl + tl + 2)) == NULL) bl_die("out of memory");
    memcpy(t, corpus.r[i].key, kl);
    t[kl] = ' ';
    memcpy(t + kl + 1, corpus.r[i].text, tl + 1);
    if (engram_text_index_put(ix, i, t, kl + tl + 1) != 0) bl_die("out of memory");
    free(t);
  }
  b = mallinfo2();
  engram_text_index_free(ix);
  return corpus.n ? ((double)b.uordblks - (double)a.uordblks) / (double)corpus.n : 0;
}

static size_t bm25_rank(void *ud, const char *query, size_t *out, size_t k) {
  engram_text_hit_t hits[10];
  size_t n = 0, i;
  if (engram_text_index_search(ud, query, k, NULL, NULL, NULL, hits, &n) != 0) bl_die("text index search failed");
  for (i = 0; i < n; i++) out[i] = (size_t)hits[i].doc;
  return n;
}

/* ---- sqlite baselines ---- */

static double raw_sqlite_ingest(void) {
  sqlite3 *db;
  sqlite3_stmt *st;
  char path[256];
  double t;
  size_t i;
  snprintf(path, sizeof path, "%s/raw_corpus.db", dir);
  if (sqlite3_open(path, &db) != SQLITE_OK) bl_die("sqlite3_open");
  if (sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                       "CREATE TABLE kv(ns TEXT, key TEXT, value TEXT, metadata TEXT, PRIMARY KEY(ns, key)) WITHOUT ROWID;",
                   NULL, NULL, NULL) != SQLITE_OK ||
      sqlite3_prepare_v2(db, "INSERT INTO kv VALUES('', ?1, ?2, ?3) ON CONFLICT(ns, key) DO UPDATE SET"
                             " value = excluded.value, metadata = excluded.metadata", -1, &st, NULL) != SQLITE_OK)
    bl_die("sqlite: %s", sqlite3_errmsg(db));
  t = bl_now();
  for (i = 0; i < corpus.n; i++) {
    char *value, *meta;
    if (i % 1000 == 0) sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
    record_json(&corpus.r[i], &value, &meta);
    sqlite3_bind_text(st, 1, corpus.r[i].key, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, value, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, meta, -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE) bl_die("sqlite upsert: %s", sqlite3_errmsg(db));
    sqlite3_reset(st);
    cJSON_free(value);
    cJSON_free(meta);
    if (i % 1000 == 999 || i == corpus.n - 1)
      if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) bl_die("sqlite commit: %s", sqlite3_errmsg(db));
  }
  t = bl_now() - t;
  sqlite3_finalize(st);
  sqlite3_close(db);
  return (double)corpus.n / t;
}

typedef struct {
  sqlite3 *db;
  sqlite3_stmt *q;
  double build_s;
} fts_t;

static void raw_fts_build(fts_t *f) {
  sqlite3_stmt *ins;
  char path[256];
  size_t i;
  double t;
  snprintf(path, sizeof path, "%s/raw_fts.db", dir);
  if (sqlite3_open(path, &f->db) != SQLITE_OK) bl_die("sqlite3_open");
  if (sqlite3_exec(f->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; CREATE VIRTUAL TABLE docs USING fts5(text);",
                   NULL, NULL, NULL) != SQLITE_OK ||
      sqlite3_prepare_v2(f->db, "INSERT INTO docs(rowid, text) VALUES(?1, ?2)", -1, &ins, NULL) != SQLITE_OK ||
      sqlite3_prepare_v2(f->db, "SELECT rowid FROM docs WHERE docs MATCH ?1 ORDER BY bm25(docs) LIMIT ?2", -1, &f->q,
                         NULL) != SQLITE_OK)
    bl_die("sqlite fts: %s", sqlite3_errmsg(f->db));
  t = bl_now();
  sqlite3_exec(f->db, "BEGIN", NULL, NULL, NULL);
  for (i = 0; i < corpus.n; i++) {
    sqlite3_bind_int64(ins, 1, (sqlite3_int64)i);
    sqlite3_bind_text(ins, 2, corpus.r[i].text, -1, SQLITE_STATIC);
    if (sqlite3_step(ins) != SQLITE_DONE) bl_die("fts insert: %s", sqlite3_errmsg(f->db));
    sqlite3_reset(ins);
  }
  sqlite3_exec(f->db, "COMMIT", NULL, NULL, NULL);
  f->build_s = bl_now() - t;
  sqlite3_finalize(ins);
}

typedef struct {
  char *buf;
  size_t len, cap;
} qbuf_t;

/* Each distinct token as an FTS5 string ("tok"), joined by OR. */
static int add_token(const char *tok, size_t len, void *ud) {
  qbuf_t *b = ud;
  if (b->len + len + 8 > b->cap) return 1;
  if (b->len) {
    memcpy(b->buf + b->len, " OR ", 4);
    b->len += 4;
  }
  b->buf[b->len++] = '"';
  memcpy(b->buf + b->len, tok, len);
  b->len += len;
  b->buf[b->len++] = '"';
  b->buf[b->len] = '\0';
  return 0;
}

static size_t fts_rank(void *ud, const char *query, size_t *out, size_t k) {
  fts_t *f = ud;
  char buf[4096];
  qbuf_t b = {buf, 0, sizeof buf};
  size_t n = 0;
  buf[0] = '\0';
  engram_tokenize(query, strlen(query), add_token, &b);
  if (b.len == 0) return 0;
  sqlite3_bind_text(f->q, 1, buf, (int)b.len, SQLITE_STATIC);
  sqlite3_bind_int(f->q, 2, (int)k);
  while (n < k && sqlite3_step(f->q) == SQLITE_ROW) out[n++] = (size_t)sqlite3_column_int64(f->q, 0);
  sqlite3_reset(f->q);
  return n;
}

/* ---- vector baselines ---- */

typedef struct {
  float *m; /* corpus.n x DIM */
} vraw_t;

static double raw_vector_ingest(vraw_t *v) {
  double t;
  size_t i;
  if ((v->m = malloc(corpus.n * DIM * sizeof *v->m)) == NULL) bl_die("out of memory");
  t = bl_now();
  for (i = 0; i < corpus.n; i++)
    if (engram_embed_hash(corpus.r[i].text, v->m + i * DIM, DIM) != 0) bl_die("engram_embed_hash failed");
  return (double)corpus.n / (bl_now() - t);
}

static size_t vector_rank(void *ud, const char *query, size_t *out, size_t k) {
  vraw_t *v = ud;
  float q[DIM], best[10];
  size_t r, j, n = 0;
  if (engram_embed_hash(query, q, DIM) != 0) bl_die("engram_embed_hash failed");
  for (r = 0; r < corpus.n; r++) {
    const float *m = v->m + r * DIM;
    float dot = 0;
    for (j = 0; j < DIM; j++) dot += q[j] * m[j];
    if (n < k || dot > best[n - 1]) {
      size_t at = n < k ? n++ : k - 1;
      while (at > 0 && best[at - 1] < dot) {
        best[at] = best[at - 1];
        out[at] = out[at - 1];
        at--;
      }
      best[at] = dot;
      out[at] = r;
    }
  }
  return n;
}

int main(void) {
  uv_loop_t loop;
  engram_manager_t *mgr;
  char opts[512];
  size_t n_q = (size_t)bl_env_long("BENCH_KNOWN_ITEM_QUERIES", 200), i;
  double e_rate, r_rate, t;
  bl_ki_t ek, rk;
  dir = bl_tmpdir();
  t = bl_now();
  bl_corpus_load(&corpus, (size_t)bl_env_long("BENCH_CORPUS_LIMIT", 0));
  printf("\n(corpus: %zu records, %.1f MB of text, read in %.1f s from %s)\n", corpus.n, corpus.text_bytes / 1e6,
         bl_now() - t, bl_corpus_path());
  uv_loop_init(&loop);
  mgr = bl_manager(&loop);

  if (bl_want("cache")) {
    engram_text_index_t *ix;
    bl_section("cache: Debian corpus ingest and known-item search");
    bl_add_source(mgr, &loop, "cache", &engram_source_cache, NULL);
    r_rate = raw_cache_ingest();
    e_rate = bl_ingest_engram(mgr, &loop, "cache", &corpus, WINDOW);
    bl_result("cache", "ingest items/s (raw: ck_ht + JSON text)", e_rate, r_rate, "items/s");
    ek = bl_known_item_engram(mgr, &loop, "cache", &corpus, n_q);
    if (engram_text_index_new(&ix) != 0) bl_die("out of memory");
    for (i = 0; i < corpus.n; i++)
      if (engram_text_index_put(ix, i, corpus.r[i].text, strlen(corpus.r[i].text)) != 0) bl_die("out of memory");
    rk = bl_known_item_raw(&corpus, n_q, bm25_rank, ix);
    engram_text_index_free(ix);
    bl_note("engram indexes key + text (BM25, built at the first search: %.0f ms); baseline: BM25 over text alone",
            ek.first_ms);
    bl_result_known_item("cache", &ek, &rk);
    bl_result("cache", "BM25 index heap bytes per item (engram_text_index, key + text)", text_index_bytes_per_item(), NAN,
              "bytes");
  }

  if (bl_want("sqlite")) {
    fts_t f;
    bl_section("sqlite: Debian corpus ingest and known-item search");
    snprintf(opts, sizeof opts, "{\"path\": \"%s/engram_corpus.db\", \"synchronous\": \"normal\"}", dir);
    bl_add_source(mgr, &loop, "sqlite", &engram_source_sqlite, opts);
    r_rate = raw_sqlite_ingest();
    e_rate = bl_ingest_engram(mgr, &loop, "sqlite", &corpus, WINDOW);
    bl_result("sqlite", "ingest items/s (raw: batched upserts)", e_rate, r_rate, "items/s");
    ek = bl_known_item_engram(mgr, &loop, "sqlite", &corpus, n_q);
    raw_fts_build(&f);
    rk = bl_known_item_raw(&corpus, n_q, fts_rank, &f);
    bl_note("engram's BM25 index (key + text) is built by the first text search; baseline: FTS5 over text alone");
    bl_result("sqlite", "first text search incl. index build (raw: FTS5 build)", ek.first_ms / 1e3, f.build_s, "s");
    bl_result_known_item("sqlite", &ek, &rk);
    bl_result("sqlite", "known-item p50 query time, each after a store", bl_mixed_search_p50(mgr, &loop, "sqlite", &corpus, n_q), NAN, "ms");
    sqlite3_finalize(f.q);
    sqlite3_close(f.db);
  }

  if (bl_want("vector")) {
    vraw_t v;
    bl_section("vector: Debian corpus ingest and known-item search");
    snprintf(opts, sizeof opts, "{\"dimension\": %d}", DIM);
    bl_add_source(mgr, &loop, "vector", &engram_source_vector, opts);
    r_rate = raw_vector_ingest(&v);
    e_rate = bl_ingest_engram(mgr, &loop, "vector", &corpus, WINDOW);
    bl_result("vector", "ingest items/s (raw: embed_hash + append)", e_rate, r_rate, "items/s");
    ek = bl_known_item_engram(mgr, &loop, "vector", &corpus, n_q);
    rk = bl_known_item_raw(&corpus, n_q, vector_rank, &v);
    bl_note("built-in hash embedder, %d dimensions; baseline: the same vectors, exact cosine, no query idf", DIM);
    bl_result_known_item("vector", &ek, &rk);
    free(v.m);
  }

  bl_close_manager(mgr, &loop);
  if (uv_loop_close(&loop) != 0) bl_die("loop not closed");
  bl_corpus_free(&corpus);
  return 0;
}
