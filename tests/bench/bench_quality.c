/*
 * bench_quality.c — search quality on real text, per search mode and per source: the known-item task on the
 * Debian corpus (../shared/corpus/debian-descriptions.jsonl.gz, 63,955 package descriptions) with a sample of
 * 1,000 queries of its own, drawn with a fixed seed, so that a recall figure moves only when the ranking does.
 *
 * Task: every record is stored by key with value {"text": description} (metadata title/section/tags, not
 * searched), through bl_ingest_engram; for each sampled record its title is the query and its key the one
 * relevant answer. Recall@10 (the key among the first 10) and MRR@10 (1 / its rank there, else 0) are
 * reported for each mode a source answers:
 *   cache, sqlite, redis, postgres   text (each source's own text ranking; the sources index key + text)
 *   vector (built-in hash embedder)  text (BM25), vector, hybrid RRF, hybrid weighted (alpha, default 0.5)
 *   cache + vector together          engram_search_sources: the cache's text ranking and the vector
 *                                    source's vector ranking fused by RRF (the manager-level hybrid)
 * plus each mode's mean query time (one query in flight). A text-only source slower than 80 ms a query over
 * queries 2..20 (today sqlite's FTS5 and postgres's ts_rank, ~150 ms) answers the sample's first 100 queries
 * only, to keep the run short; the metric names the count. The vector source always answers the whole sample. Redis and PostgreSQL run on test servers started the
 * way the tests start them (tests/support/); a server that does not start skips its source with a note.
 *
 * Knobs: BENCH_QUALITY_QUERIES (1,000; at most 1,000 — the sample is fixed), BENCH_QUALITY_SEED (20261206),
 * BENCH_QUALITY_ALPHA (0.5), BENCH_QUALITY_VECTOR (the vector source's options JSON, default
 * {"dimension": 384}), BENCH_ONLY (sections: cache, sqlite, redis, postgres, vector, sources), ENGRAM_CORPUS.
 * Prints a note and exits 0 without the corpus. Run alone: build/release/bench/bench_quality.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/benchlib.h"
#include "support/pg_server.h"
#include "support/redis_server.h"

#define MAX_QUERIES 1000
#define WINDOW 1000
#define PROBE 20         /* queries timed before deciding a source is slow */
#define SLOW_MS 80       /* ... when they took longer than this on average, */
#define SLOW_QUERIES 100 /* ... it answers this many queries only */

static bl_corpus_t corpus;
static size_t sample[MAX_QUERIES], n_queries;

/* The fixed sample: n distinct record indexes, a partial Fisher-Yates shuffle driven by splitmix64. */
static void draw_sample(uint64_t seed) {
  size_t *idx = malloc(corpus.n * sizeof *idx), i;
  if (idx == NULL) bl_die("out of memory");
  for (i = 0; i < corpus.n; i++) idx[i] = i;
  for (i = 0; i < n_queries; i++) {
    uint64_t z = (seed += 0x9e3779b97f4a7c15ull);
    size_t j, t;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    j = i + (size_t)(z % (corpus.n - i));
    t = idx[i], idx[i] = idx[j], idx[j] = t;
    sample[i] = idx[i];
  }
  free(idx);
}

typedef struct {
  int done, status;
  char msg[256];
  char keys[10][160];
  size_t n;
} out_t;

static void on_search(int status, const engram_reply_t *reply, void *ud) {
  out_t *o = ud;
  size_t i;
  o->status = status;
  snprintf(o->msg, sizeof o->msg, "%s", reply->message ? reply->message : "");
  o->n = status == 0 && reply->n_items < 10 ? reply->n_items : status == 0 ? 10 : 0;
  for (i = 0; i < o->n; i++) snprintf(o->keys[i], sizeof o->keys[i], "%s", reply->items[i].key);
  o->done = 1;
}

typedef struct {
  const char *label;              /* "text", "vector", "hybrid RRF", ... */
  int may_cap;                    /* a text-only source: may answer SLOW_QUERIES only when it is slow */
  int mode, fusion;
  double alpha;
  const char *const *sources;     /* non-NULL: engram_search_sources over these */
  size_t n_sources;
} mode_t_;

/* Runs the sample through source in one mode and records recall@10, MRR@10 and the mean query time. */
static void measure(engram_manager_t *mgr, uv_loop_t *loop, const char *bench, const char *source, const mode_t_ *m) {
  double recall = 0, mrr = 0, t0 = bl_now(), t1 = t0, secs;
  char metric[128];
  size_t i, r, n = n_queries;
  for (i = 0; i < n; i++) {
    /* A source too slow for the whole sample (over SLOW_MS a query on queries 2..PROBE) answers the first
     * SLOW_QUERIES only; the count is in the metric's name. */
    if (i == 1) t1 = bl_now(); /* the first query may build an index: not timed for the probe */
    if (m->may_cap && i == PROBE && n > SLOW_QUERIES && (bl_now() - t1) * 1e3 / (PROBE - 1) > SLOW_MS) {
      n = SLOW_QUERIES;
      bl_note("%s %s: over %d ms a query, measured on the first %d queries of the sample", bench, m->label, SLOW_MS,
              SLOW_QUERIES);
    }
    const bl_record_t *want = &corpus.r[sample[i]];
    engram_query_t q = ENGRAM_QUERY_INIT;
    engram_opts_t o;
    out_t out;
    int rc;
    memset(&o, 0, sizeof o);
    memset(&out, 0, sizeof out);
    q.text = want->title;
    q.limit = 10;
    q.mode = m->mode;
    q.fusion = m->fusion;
    q.alpha = m->alpha;
    if (m->sources != NULL) {
      engram_fusion_opts_t f = {ENGRAM_FUSION_RRF, NULL, 0, 0};
      rc = engram_search_sources(mgr, m->sources, m->n_sources, &q, &f, &o, on_search, &out);
    } else {
      o.source = source;
      rc = engram_search(mgr, &q, &o, on_search, &out);
    }
    if (rc != 0) bl_die("%s %s: search refused: %s (%s)", bench, m->label, engram_err_name(rc), engram_last_error());
    while (!out.done) uv_run(loop, UV_RUN_ONCE);
    if (out.status != 0) bl_die("%s %s: \"%s\": %s (%s)", bench, m->label, want->title, engram_err_name(out.status), out.msg);
    for (r = 0; r < out.n; r++)
      if (strcmp(out.keys[r], want->key) == 0) {
        recall += 1;
        mrr += 1.0 / (double)(r + 1);
        break;
      }
  }
  secs = bl_now() - t0;
  snprintf(metric, sizeof metric, "known-item %s recall@10 (%zu q)", m->label, n);
  bl_result(bench, metric, recall / (double)n, -1, "fraction");
  snprintf(metric, sizeof metric, "known-item %s MRR@10 (%zu q)", m->label, n);
  bl_result(bench, metric, mrr / (double)n, -1, "fraction");
  snprintf(metric, sizeof metric, "known-item %s mean query time", m->label);
  bl_result(bench, metric, 1e3 * secs / (double)n, -1, "ms");
}

static const mode_t_ TEXT = {"text", 1, ENGRAM_MODE_TEXT, 0, 0, NULL, 0};

static void remove_source(engram_manager_t *mgr, uv_loop_t *loop, const char *name) {
  out_t out;
  memset(&out, 0, sizeof out);
  if (engram_manager_remove_source(mgr, name, on_search, &out) != 0) bl_die("remove_source %s refused", name);
  while (!out.done) uv_run(loop, UV_RUN_ONCE);
}

/* Adds a text-only source, ingests the corpus, measures text mode, and removes it (freeing its memory). */
static void text_source(engram_manager_t *mgr, uv_loop_t *loop, const char *name, const engram_source_vtable_t *vt,
                        const char *options, int keep) {
  double rate;
  bl_section(name);
  bl_add_source(mgr, loop, name, vt, options);
  rate = bl_ingest_engram(mgr, loop, name, &corpus, WINDOW);
  bl_note("%s: %zu records ingested at %.0f items/s", name, corpus.n, rate);
  measure(mgr, loop, name, name, &TEXT);
  if (!keep) remove_source(mgr, loop, name);
}

int main(void) {
  uv_loop_t loop;
  engram_manager_t *mgr;
  char opts[512], alabel[64];
  const char *vopts = getenv("BENCH_QUALITY_VECTOR") ? getenv("BENCH_QUALITY_VECTOR") : "{\"dimension\": 384}";
  double alpha = 0.5, t;
  const char *as = getenv("BENCH_QUALITY_ALPHA");
  int both = bl_want("sources"), have_cache = 0;
  if (as != NULL) alpha = atof(as);
  if (bl_corpus_path() == NULL) {
    printf("bench_quality: skipped, no corpus (set ENGRAM_CORPUS)\n");
    return 0;
  }
  n_queries = (size_t)bl_env_long("BENCH_QUALITY_QUERIES", MAX_QUERIES);
  if (n_queries == 0 || n_queries > MAX_QUERIES) n_queries = MAX_QUERIES;
  t = bl_now();
  bl_corpus_load(&corpus, 0);
  draw_sample((uint64_t)bl_env_long("BENCH_QUALITY_SEED", 20261206));
  printf("\n(corpus: %zu records read in %.1f s; %zu known-item queries, seed %ld)\n", corpus.n, bl_now() - t,
         n_queries, bl_env_long("BENCH_QUALITY_SEED", 20261206));
  uv_loop_init(&loop);
  mgr = bl_manager(&loop);

  if (bl_want("cache") || both) {
    text_source(mgr, &loop, "cache", &engram_source_cache, NULL, both);
    have_cache = 1;
  }
  if (bl_want("sqlite")) {
    snprintf(opts, sizeof opts, "{\"path\": \"%s/quality.db\", \"synchronous\": \"normal\"}", bl_tmpdir());
    text_source(mgr, &loop, "sqlite", &engram_source_sqlite, opts, 0);
  }
#if ENGRAM_WITH_REDIS
  if (bl_want("redis")) {
    int port = redis_server_start(0);
    if (port < 0) {
      bl_note("redis: redis-server did not start, skipped");
    } else {
      snprintf(opts, sizeof opts, "{\"host\": \"127.0.0.1\", \"port\": %d}", port);
      text_source(mgr, &loop, "redis", &engram_source_redis, opts, 0);
      redis_server_stop();
    }
  }
#endif
#if ENGRAM_WITH_POSTGRES
  if (bl_want("postgres")) {
    if (pg_server_start() != 0) {
      bl_note("postgres: PostgreSQL did not start, skipped");
    } else {
      snprintf(opts, sizeof opts, "{\"conninfo\": \"%s\"}", pg_server_conninfo());
      text_source(mgr, &loop, "postgres", &engram_source_postgres, opts, 0);
      pg_server_stop();
    }
  }
#endif
  if (bl_want("vector") || both) {
    static const char *const pair[] = {"cache", "vector"};
    mode_t_ modes[5] = {
        {"text", 0, ENGRAM_MODE_TEXT, 0, 0, NULL, 0},
        {"vector", 0, ENGRAM_MODE_VECTOR, 0, 0, NULL, 0},
        {"hybrid RRF", 0, ENGRAM_MODE_HYBRID, ENGRAM_FUSION_RRF, 0, NULL, 0},
        {alabel, 0, ENGRAM_MODE_HYBRID, ENGRAM_FUSION_WEIGHTED, 0, NULL, 0},
        {"cache text + vector, RRF", 0, ENGRAM_MODE_VECTOR, 0, 0, pair, 2},
    };
    size_t i;
    modes[3].alpha = alpha;
    snprintf(alabel, sizeof alabel, "hybrid weighted a=%.2f", alpha);
    bl_section("vector (built-in hash embedder)");
    bl_add_source(mgr, &loop, "vector", &engram_source_vector, vopts);
    t = bl_ingest_engram(mgr, &loop, "vector", &corpus, WINDOW);
    bl_note("vector: %zu records ingested at %.0f items/s, options %s", corpus.n, t, vopts);
    for (i = 0; i < 4; i++)
      if (bl_want("vector")) measure(mgr, &loop, "vector", "vector", &modes[i]);
    if (both && have_cache) measure(mgr, &loop, "sources", NULL, &modes[4]);
  }

  bl_close_manager(mgr, &loop);
  if (uv_loop_close(&loop) != 0) bl_die("loop not closed");
  bl_corpus_free(&corpus);
  return 0;
}
