/*
 * knownitem_vector.c — the known-item search task on real text, through the public API: how well the vector
 * source with the built-in "hash" embedder finds a Debian package from its one-line title.
 *
 * Every record of /work/shared/corpus/debian-descriptions.jsonl.gz (or the file named by ENGRAM_CORPUS) is stored
 * as its `text` under its `key` (store_many, 1,000 at a time); then, for 200 records drawn with a fixed seed, the
 * record's `title` is the query and the record's key the one relevant answer. Prints recall@1, recall@10 and
 * MRR@10, the ingest rate, the query rate and the memory per item (info "bytes_per_item"). With "bm25" as an
 * argument the same task also runs on the cache source (BM25), the reference figure; any other argument is the
 * vector source's options JSON (e.g. '{"dimension": 768}' or '{"rerank": 0}').
 *
 * Build and run:  make lib build/bench/knownitem_vector && build/bench/knownitem_vector [bm25] [options]
 * Without the corpus it prints a message and exits 0.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "engram.h"

#define QUERIES 200
#define BATCH 1000

typedef struct {
  int calls, status;
  char message[256];
  char keys[10][128];
  size_t n;
  double bytes_per_item;
} res_t;

static void on_reply(int status, const engram_reply_t *reply, void *ud) {
  res_t *r = ud;
  size_t i;
  r->calls++;
  r->status = status;
  snprintf(r->message, sizeof r->message, "%s", reply->message ? reply->message : "");
  r->n = reply->n_items < 10 ? reply->n_items : 10;
  for (i = 0; i < r->n; i++) snprintf(r->keys[i], sizeof r->keys[i], "%s", reply->items[i].key);
  if (reply->info) {
    const cJSON *b = cJSON_GetObjectItem(reply->info, "bytes_per_item");
    if (b) r->bytes_per_item = b->valuedouble;
  }
}

static void wait_for(uv_loop_t *loop, res_t *r) {
  while (r->calls == 0) uv_run(loop, UV_RUN_ONCE);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

typedef struct {
  char **keys, **titles, **texts;
  size_t n, cap;
} corpus_t;

static int load_corpus(const char *path, corpus_t *c) {
  char cmd[600], *line = NULL;
  size_t lcap = 0;
  FILE *f;
  snprintf(cmd, sizeof cmd, "gzip -dc '%s'", path);
  if ((f = popen(cmd, "r")) == NULL) return -1;
  while (getline(&line, &lcap, f) > 0) {
    cJSON *o = cJSON_Parse(line);
    const cJSON *k, *t, *x;
    if (o == NULL) continue;
    k = cJSON_GetObjectItem(o, "key"), t = cJSON_GetObjectItem(o, "title"), x = cJSON_GetObjectItem(o, "text");
    if (cJSON_IsString(k) && cJSON_IsString(t) && cJSON_IsString(x)) {
      if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 1024;
        c->keys = realloc(c->keys, c->cap * sizeof *c->keys);
        c->titles = realloc(c->titles, c->cap * sizeof *c->titles);
        c->texts = realloc(c->texts, c->cap * sizeof *c->texts);
      }
      c->keys[c->n] = strdup(k->valuestring);
      c->titles[c->n] = strdup(t->valuestring);
      c->texts[c->n] = strdup(x->valuestring);
      c->n++;
    }
    cJSON_Delete(o);
  }
  free(line);
  return pclose(f) == 0 && c->n > 0 ? 0 : -1;
}

static int run(uv_loop_t *loop, engram_manager_t *mgr, const char *name, const engram_source_vtable_t *vt,
               const char *options, const corpus_t *c, const size_t *picks) {
  res_t r;
  engram_entry_t *entries = calloc(BATCH, sizeof *entries);
  cJSON **values = calloc(BATCH, sizeof *values);
  engram_opts_t o;
  size_t i, j, hit1 = 0, hit10 = 0;
  double mrr = 0, t0, ingest, query;
  memset(&r, 0, sizeof r);
  memset(&o, 0, sizeof o);
  o.source = name;
  if (engram_manager_add_source(mgr, name, vt, options, "known-item bench", 0, on_reply, &r) != 0) return -1;
  wait_for(loop, &r);
  if (r.status != 0) {
    fprintf(stderr, "%s: %s\n", name, r.message);
    return -1;
  }
  t0 = now_s();
  for (i = 0; i < c->n; i += BATCH) {
    size_t n = c->n - i < BATCH ? c->n - i : BATCH;
    for (j = 0; j < n; j++) {
      values[j] = cJSON_CreateString(c->texts[i + j]);
      entries[j].key = c->keys[i + j];
      entries[j].value = values[j];
    }
    memset(&r, 0, sizeof r);
    if (engram_store_many(mgr, entries, n, &o, on_reply, &r) != 0) return -1;
    wait_for(loop, &r);
    for (j = 0; j < n; j++) cJSON_Delete(values[j]);
    if (r.status != 0) {
      fprintf(stderr, "%s: store_many: %s\n", name, r.message);
      return -1;
    }
  }
  ingest = now_s() - t0;
  t0 = now_s();
  for (i = 0; i < QUERIES; i++) {
    engram_query_t q = ENGRAM_QUERY_INIT;
    size_t target = picks[i];
    q.text = c->titles[target];
    q.limit = 10;
    memset(&r, 0, sizeof r);
    if (engram_search(mgr, &q, &o, on_reply, &r) != 0) return -1;
    wait_for(loop, &r);
    for (j = 0; j < r.n; j++)
      if (strcmp(r.keys[j], c->keys[target]) == 0) {
        hit1 += j == 0;
        hit10++;
        mrr += 1.0 / (double)(j + 1);
        break;
      }
  }
  query = now_s() - t0;
  memset(&r, 0, sizeof r);
  engram_info(mgr, &o, on_reply, &r);
  wait_for(loop, &r);
  printf("knownitem %-8s items=%zu queries=%d recall@1=%.3f recall@10=%.3f mrr@10=%.3f ingest=%.0f/s "
         "query=%.1f/s (%.2f ms) bytes_per_item=%.0f options=%s\n",
         name, c->n, QUERIES, hit1 / (double)QUERIES, hit10 / (double)QUERIES, mrr / QUERIES, c->n / ingest,
         QUERIES / query, 1000 * query / QUERIES, r.bytes_per_item, options ? options : "{}");
  free(entries);
  free(values);
  return 0;
}

int main(int argc, char **argv) {
  const char *path = getenv("ENGRAM_CORPUS") ? getenv("ENGRAM_CORPUS") : "/work/shared/corpus/debian-descriptions.jsonl.gz";
  const char *options = NULL;
  int bm25 = 0, i, rc = 0;
  corpus_t c = {0};
  size_t *idx, k;
  uint64_t s = 42;
  uv_loop_t loop;
  engram_manager_t *mgr;
  res_t r = {0};
  FILE *probe = fopen(path, "rb");
  for (i = 1; i < argc; i++) {
    if (strcmp(argv[i], "bm25") == 0) bm25 = 1;
    else options = argv[i];
  }
  if (probe == NULL) {
    printf("knownitem_vector: skipped, corpus %s not found (set ENGRAM_CORPUS)\n", path);
    return 0;
  }
  fclose(probe);
  if (load_corpus(path, &c) != 0) {
    fprintf(stderr, "knownitem_vector: cannot read %s\n", path);
    return 1;
  }
  /* 200 distinct records, drawn with a fixed seed (a partial Fisher-Yates shuffle, xorshift64). */
  idx = malloc(c.n * sizeof *idx);
  for (k = 0; k < c.n; k++) idx[k] = k;
  for (k = 0; k < QUERIES; k++) {
    size_t j, t;
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    j = k + (size_t)(s % (c.n - k));
    t = idx[k], idx[k] = idx[j], idx[j] = t;
  }
  uv_loop_init(&loop);
  engram_manager_new(&mgr, &loop, NULL);
  if (run(&loop, mgr, "vector", &engram_source_vector, options, &c, idx) != 0) rc = 1;
  if (rc == 0 && bm25 && run(&loop, mgr, "bm25", &engram_source_cache, NULL, &c, idx) != 0) rc = 1;
  engram_manager_close(mgr, on_reply, &r);
  wait_for(&loop, &r);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  for (k = 0; k < c.n; k++) free(c.keys[k]), free(c.titles[k]), free(c.texts[k]);
  free(c.keys), free(c.titles), free(c.texts), free(idx);
  return rc;
}
