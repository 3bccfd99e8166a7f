/*
 * agent_memory — the demo `make demo` runs: an LLM agent's memory, configured like BeamMePrompty's SmartAgent
 * (a fast `cache` for the session, `persistent` SQLite storage, `vectors` for semantic search; `redis` and
 * `postgres` join when ENGRAM_REDIS_URL / ENGRAM_PG_URL are set), filled with real text and then used the way
 * an agent uses it: through the memory tools, with each tool call and its JSON result printed.
 *
 * It ingests a JSON-lines corpus ({"key", "text", ...} a line, gzipped or not; by default the Debian
 * package-description corpus, which examples/corpus/build-corpus.sh builds from the machine's apt lists) with
 * store_many batches into the persistent sources, with a progress bar; a later run finds the data already
 * there (the item count matches the marker the ingest left) and skips the ingest. Then it runs an agent-style
 * session through engram_tools_call; a short conversation (engram/thread.h: turns appended to a thread that
 * keeps its newest 8 messages, the window a model would get printed in OpenAI format, and an extractive
 * summariser written below that condenses what falls out of the window, so trimmed turns live on in the
 * summary); and measures recall@10 of 200 known-item queries (query = a record's title, relevant = its key;
 * fixed seed) on each searchable source.
 *
 * The manager lives on this program's libuv loop. The program reads like a script: each step submits calls
 * and then runs the loop until their callbacks have counted down (wait_for), which is how a single-threaded
 * program drives an asynchronous API without threads of its own.
 *
 * Usage: agent_memory [--config FILE] [--dir DIR] [--limit N] [--batch N] [--recall-budget S] [CORPUS.jsonl[.gz]]
 */
#include <engram.h>
#include <engram/tools.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#define DEFAULT_CONFIG "examples/agent_memory/config.json"
#define DEFAULT_CORPUS "../shared/corpus/debian-descriptions.jsonl.gz"
#define MARKER_NS "engram-demo"
#define MARKER_KEY "ingest"
#define N_QUERIES 200
#define QUERY_SEED 42u
#define WINDOW 4         /* store_many batches in flight per source */
#define RECALL_WINDOW 16 /* searches in flight per source */
#define MAX_TARGETS 8

static uv_loop_t *loop;
static engram_manager_t *mgr;
static int tty;

/* ---- Small helpers ---- */

static double now_s(void) { return (double)uv_hrtime() / 1e9; }

static void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "agent_memory: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  exit(1);
}

/* Runs the loop until *pending reaches 0: the script-style wait for calls already submitted. */
static void wait_for(const int *pending) {
  while (*pending > 0) uv_run(loop, UV_RUN_ONCE);
}

/* "63955" → "63,955". */
static const char *grouped(uint64_t v, char *buf) {
  char tmp[32];
  int n = snprintf(tmp, sizeof tmp, "%" PRIu64, v), o = 0;
  for (int i = 0; i < n; i++) {
    if (i > 0 && (n - i) % 3 == 0) buf[o++] = ',';
    buf[o++] = tmp[i];
  }
  buf[o] = '\0';
  return buf;
}

static char *read_file(const char *path) {
  FILE *f = fopen(path, "rb");
  char *buf;
  long n;
  if (f == NULL) return NULL;
  fseek(f, 0, SEEK_END);
  n = ftell(f);
  rewind(f);
  buf = malloc((size_t)n + 1);
  if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
    free(buf);
    buf = NULL;
  }
  if (buf) buf[n] = '\0';
  fclose(f);
  return buf;
}

static void mkdir_p(const char *path) {
  char buf[4096];
  snprintf(buf, sizeof buf, "%s", path);
  for (char *p = buf + 1; *p; p++)
    if (*p == '/') {
      *p = '\0';
      mkdir(buf, 0755);
      *p = '/';
    }
  if (mkdir(buf, 0755) != 0 && errno != EEXIST) die("cannot create %s: %s", path, strerror(errno));
}

/* For display only: shortens long strings (below the top level: an error message stays whole), rounds
 * fractions to 3 decimals, and cuts long arrays after 4 elements. */
static void shorten(cJSON *node, size_t max, int depth) {
  if (cJSON_IsNumber(node) && node->valuedouble != (double)(long long)node->valuedouble)
    cJSON_SetNumberValue(node, (double)(long long)(node->valuedouble * 1000 + 0.5) / 1000);
  if (cJSON_IsArray(node) && depth > 1 && cJSON_GetArraySize(node) > 5) {
    int n = cJSON_GetArraySize(node);
    char more[32];
    while (cJSON_GetArraySize(node) > 4) cJSON_DeleteItemFromArray(node, 4);
    snprintf(more, sizeof more, "(%d more)", n - 4);
    cJSON_AddItemToArray(node, cJSON_CreateString(more));
  }
  if (depth > 1 && cJSON_IsString(node) && strlen(node->valuestring) > max) {
    size_t cut = max;
    while (cut > 0 && ((unsigned char)node->valuestring[cut] & 0xC0) == 0x80) cut--; /* not inside a character */
    char *s = cJSON_malloc(cut + 4);
    memcpy(s, node->valuestring, cut);
    memcpy(s + cut, "...", 4);
    for (char *q = s; *q; q++)
      if (*q == '\n') *q = ' ';
    cJSON_free(node->valuestring);
    node->valuestring = s;
  }
  for (cJSON *c = node->child; c != NULL; c = c->next) shorten(c, max, depth + 1);
}

/* Prints a JSON result compactly, long strings shortened; a long one gets one line per member and per
 * array element, so a search result shows one hit a line. */
static void show_json(const char *prefix, const char *text) {
  cJSON *v = cJSON_Parse(text);
  char *s;
  if (v == NULL) {
    printf("%s%s\n", prefix, text);
    return;
  }
  shorten(v, 72, 0);
  s = cJSON_PrintUnformatted(v);
  if (strlen(s) <= 150 || !cJSON_IsObject(v)) {
    printf("%s%s\n", prefix, s);
  } else {
    printf("%s{\n", prefix);
    for (cJSON *m = v->child; m != NULL; m = m->next) {
      char *ms;
      if (cJSON_IsArray(m) && cJSON_GetArraySize(m) > 0) {
        printf("%s  \"%s\": [\n", prefix, m->string);
        for (cJSON *e = m->child; e != NULL; e = e->next) {
          ms = cJSON_PrintUnformatted(e);
          printf("%s    %s%s\n", prefix, ms, e->next ? "," : "");
          cJSON_free(ms);
        }
        printf("%s  ]%s\n", prefix, m->next ? "," : "");
      } else {
        ms = cJSON_PrintUnformatted(m);
        printf("%s  \"%s\": %s%s\n", prefix, m->string, ms, m->next ? "," : "");
        cJSON_free(ms);
      }
    }
    printf("%s}\n", prefix);
  }
  cJSON_free(s);
  cJSON_Delete(v);
}

/* ---- Configuration: the JSON file plus the optional sources whose environment variable is set ---- */

typedef struct {
  char names[MAX_TARGETS][ENGRAM_SOURCE_NAME_MAX + 1];
  int n;
} names_t;

static names_t configured, ingest_targets, recall_targets;

static int has_name(const names_t *ns, const char *name) {
  for (int i = 0; i < ns->n; i++)
    if (strcmp(ns->names[i], name) == 0) return 1;
  return 0;
}

static void add_name(names_t *ns, const char *name) {
  if (ns->n < MAX_TARGETS && !has_name(ns, name)) snprintf(ns->names[ns->n++], sizeof ns->names[0], "%s", name);
}

/* The demo's config file is an engram configuration ({"sources": [...]}) with two more members that
 * engram_manager_configure ignores: "optional_sources" ([{"when_env": VAR, "source": {...}}]: added when VAR
 * is set) and "demo" ({"ingest": [names], "recall": [names]}). Returns the text to hand to configure. */
static char *load_config(const char *path) {
  char *text = read_file(path), *out;
  cJSON *doc, *sources, *opt, *demo, *e;
  if (text == NULL) die("cannot read the configuration %s: %s (run from the repository root or pass --config)", path, strerror(errno));
  if ((doc = cJSON_Parse(text)) == NULL) die("%s: malformed JSON", path);
  free(text);
  sources = cJSON_GetObjectItemCaseSensitive(doc, "sources");
  if (!cJSON_IsArray(sources)) die("%s: \"sources\" must be an array", path);
  opt = cJSON_DetachItemFromObjectCaseSensitive(doc, "optional_sources");
  cJSON_ArrayForEach(e, opt) {
    cJSON *var = cJSON_GetObjectItemCaseSensitive(e, "when_env");
    cJSON *src = cJSON_GetObjectItemCaseSensitive(e, "source");
    const char *val = cJSON_IsString(var) ? getenv(var->valuestring) : NULL;
    if (!cJSON_IsObject(src)) die("%s: optional_sources entries need a \"source\" object", path);
    if (val != NULL && val[0] != '\0') cJSON_AddItemToArray(sources, cJSON_Duplicate(src, 1));
  }
  cJSON_Delete(opt);
  cJSON_ArrayForEach(e, sources) {
    cJSON *name = cJSON_GetObjectItemCaseSensitive(e, "name");
    if (cJSON_IsString(name)) add_name(&configured, name->valuestring);
  }
  demo = cJSON_DetachItemFromObjectCaseSensitive(doc, "demo");
  cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(demo, "ingest"))
    if (cJSON_IsString(e) && has_name(&configured, e->valuestring)) add_name(&ingest_targets, e->valuestring);
  cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(demo, "recall"))
    if (cJSON_IsString(e) && has_name(&configured, e->valuestring)) add_name(&recall_targets, e->valuestring);
  cJSON_Delete(demo);
  out = cJSON_Print(doc);
  cJSON_Delete(doc);
  return out;
}

/* ---- Calls that wait: status and the reply's useful parts, copied out of the callback ---- */

typedef struct {
  int pending;
  int status;
  char message[512];
  uint64_t count;
  char *text;  /* tool result, or a retrieved value as JSON */
  cJSON *info;
} result_t;

static void result_reset(result_t *r) {
  free(r->text);
  cJSON_Delete(r->info);
  memset(r, 0, sizeof *r);
  r->pending = 1;
}

static void on_result(int status, const engram_reply_t *reply, void *ud) {
  result_t *r = ud;
  r->status = status;
  snprintf(r->message, sizeof r->message, "%s", reply->message ? reply->message : "");
  r->count = reply->count;
  if (reply->text) r->text = strdup(reply->text);
  else if (status == 0 && reply->n_items > 0 && reply->items[0].value) r->text = cJSON_PrintUnformatted(reply->items[0].value);
  if (reply->info) r->info = cJSON_Duplicate(reply->info, 1);
  r->pending = 0;
}

static void check_submit(int rc, const char *what) {
  if (rc != 0) die("%s refused: %s (%s)", what, engram_err_name(rc), engram_last_error());
}

/* One tool call, printed as an agent transcript: the call, then its JSON result. */
static void tool(const char *name, const char *args) {
  result_t r = {0};
  result_reset(&r);
  printf("\n> %s %s\n", name, args);
  check_submit(engram_tools_call(mgr, name, args, NULL, on_result, &r), name);
  wait_for(&r.pending);
  show_json(r.status == 0 ? "< " : "< (error) ", r.text ? r.text : "(no result)");
  result_reset(&r);
  r.pending = 0;
}

static uint64_t count_items(const char *source, const char *ns, int *status) {
  result_t r = {0};
  engram_opts_t o = {0};
  engram_query_t q = ENGRAM_QUERY_INIT;
  uint64_t n;
  o.source = source, o.ns = ns;
  result_reset(&r);
  check_submit(engram_count(mgr, &q, &o, on_result, &r), "count");
  wait_for(&r.pending);
  *status = r.status;
  n = r.count;
  result_reset(&r);
  r.pending = 0;
  return n;
}

/* ---- The corpus: a JSON-lines file, gzipped or not ---- */

typedef struct {
  FILE *f;
  pid_t gz; /* the gzip -dc child, or 0 */
} input_t;

static void input_open(input_t *in, const char *path) {
  unsigned char magic[2] = {0, 0};
  FILE *f = fopen(path, "rb");
  if (f == NULL) die("cannot open the corpus %s: %s", path, strerror(errno));
  if (fread(magic, 1, 2, f) < 2) magic[0] = 0;
  in->gz = 0;
  if (magic[0] == 0x1f && magic[1] == 0x8b) {
    int fds[2];
    fclose(f);
    if (pipe(fds) != 0) die("pipe: %s", strerror(errno));
    if ((in->gz = fork()) == 0) {
      dup2(fds[1], STDOUT_FILENO);
      close(fds[0]);
      close(fds[1]);
      execlp("gzip", "gzip", "-dc", "--", path, (char *)NULL);
      _exit(127);
    }
    close(fds[1]);
    in->f = fdopen(fds[0], "r");
  } else {
    rewind(f);
    in->f = f;
  }
}

static void input_close(input_t *in) {
  int st;
  fclose(in->f);
  if (in->gz > 0) waitpid(in->gz, &st, 0);
}

static size_t count_lines(const char *path, size_t limit) {
  input_t in;
  char buf[1 << 16];
  size_t n = 0, got;
  input_open(&in, path);
  while ((got = fread(buf, 1, sizeof buf, in.f)) > 0 && n < limit)
    for (size_t i = 0; i < got; i++) n += buf[i] == '\n';
  input_close(&in);
  return n < limit ? n : limit;
}

/* Known-item queries: the title of 200 records chosen with a fixed seed, and the key that must be found. */
typedef struct {
  size_t line;
  char *key, *title;
} query_t;

static query_t queries[N_QUERIES];
static int n_queries;

static uint64_t rng_state = QUERY_SEED;
static uint64_t rng(void) { /* xorshift64* */
  rng_state ^= rng_state >> 12, rng_state ^= rng_state << 25, rng_state ^= rng_state >> 27;
  return rng_state * 2685821657736338717ull;
}

static int cmp_line(const void *a, const void *b) {
  size_t x = ((const query_t *)a)->line, y = ((const query_t *)b)->line;
  return x < y ? -1 : x > y;
}

static void choose_queries(size_t total) {
  n_queries = total < N_QUERIES ? (int)total : N_QUERIES;
  for (int i = 0; i < n_queries; i++) {
    size_t line;
    int dup;
    do {
      line = (size_t)(rng() % total);
      dup = 0;
      for (int j = 0; j < i; j++) dup |= queries[j].line == line;
    } while (dup);
    queries[i].line = line;
  }
  qsort(queries, (size_t)n_queries, sizeof *queries, cmp_line);
}

/* ---- Ingest ---- */

typedef struct {
  const char *name;
  int needed;
  int inflight;         /* batches */
  uint64_t done, failed;
  char first_error[256];
  double finished_at;
} target_t;

static target_t targets[MAX_TARGETS];
static int n_targets;
static double ingest_start, last_draw;
static uint64_t last_drawn = UINT64_MAX; /* items shown by the last plain line */
static size_t ingest_total, ingest_submitted;

typedef struct {
  target_t *t;
  size_t n;
} batch_t;

static uint64_t min_done(void) {
  uint64_t m = UINT64_MAX;
  for (int i = 0; i < n_targets; i++)
    if (targets[i].needed && targets[i].done < m) m = targets[i].done;
  return m == UINT64_MAX ? 0 : m;
}

static void draw_progress(int final) {
  double t = now_s(), el = t - ingest_start;
  uint64_t done = min_done();
  double rate = el > 0 ? (double)done / el : 0, frac = ingest_total ? (double)done / (double)ingest_total : 1;
  double eta = rate > 0 ? (double)(ingest_total - done) / rate : 0;
  char a[32], b[32], c[32];
  if (!final && t - last_draw < (tty ? 0.1 : 5.0)) return;
  if (final && !tty && done == last_drawn) return; /* that line was already printed */
  last_draw = t;
  last_drawn = done;
  if (tty) {
    char bar[31];
    int fill = (int)(frac * 30);
    for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '.';
    bar[30] = '\0';
    printf("\r  [%s] %3d%%  %s/%s items  %s items/s  ETA %d:%02d\033[K", bar, (int)(frac * 100), grouped(done, a),
           grouped(ingest_total, b), grouped((uint64_t)rate, c), (int)eta / 60, (int)eta % 60);
    if (final) printf("\n");
  } else {
    printf("  ingest: %s/%s items (%d%%), %s items/s, ETA %d:%02d\n", grouped(done, a), grouped(ingest_total, b),
           (int)(frac * 100), grouped((uint64_t)rate, c), (int)eta / 60, (int)eta % 60);
  }
  fflush(stdout);
}

static void on_batch(int status, const engram_reply_t *reply, void *ud) {
  batch_t *b = ud;
  target_t *t = b->t;
  uint64_t ok = status == 0 ? reply->count : 0;
  if (status != 0 || ok < b->n) {
    const char *msg = status != 0 ? reply->message : "";
    for (size_t i = 0; status == 0 && i < reply->n_items; i++)
      if (reply->items[i].status != 0) {
        msg = engram_strerror(reply->items[i].status);
        break;
      }
    if (t->first_error[0] == '\0') snprintf(t->first_error, sizeof t->first_error, "%s: %s", engram_err_name(status), msg);
  }
  t->done += ok;
  t->failed += b->n - ok;
  t->inflight--;
  t->finished_at = now_s();
  free(b);
  draw_progress(0);
}

/* Submits one batch to every target that needs the ingest, waiting while a target's window is full. */
static void submit_batch(engram_entry_t *entries, size_t n) {
  for (int i = 0; i < n_targets; i++) {
    target_t *t = &targets[i];
    engram_opts_t o = {0};
    batch_t *b;
    int rc;
    if (!t->needed) continue;
    while (t->inflight >= WINDOW) uv_run(loop, UV_RUN_ONCE);
    b = malloc(sizeof *b);
    b->t = t, b->n = n;
    o.source = t->name;
    rc = engram_store_many(mgr, entries, n, &o, on_batch, b);
    if (rc != 0) die("store_many into %s refused: %s (%s)", t->name, engram_err_name(rc), engram_last_error());
    t->inflight++;
  }
  ingest_submitted += n;
}

static int all_idle(void) {
  for (int i = 0; i < n_targets; i++)
    if (targets[i].inflight > 0) return 0;
  return 1;
}

/* Reads the corpus once: collects the query titles and, when some target needs it, ingests every record:
 * value {"text": ...}, metadata = the record's other fields (title, section, tags, ...). */
static void read_corpus(const char *path, size_t limit, size_t batch, int ingest, size_t *bad_lines) {
  input_t in;
  char *line = NULL;
  size_t cap = 0, lineno = 0;
  ssize_t len;
  int qi = 0;
  engram_entry_t *entries = calloc(batch, sizeof *entries);
  cJSON **docs = calloc(batch, sizeof *docs);
  size_t nb = 0;
  input_open(&in, path);
  ingest_start = last_draw = now_s();
  while (lineno < limit && (len = getline(&line, &cap, in.f)) > 0) {
    size_t this_line = lineno++;
    cJSON *doc = cJSON_ParseWithLength(line, (size_t)len), *key, *text, *title, *value, *meta;
    key = cJSON_GetObjectItemCaseSensitive(doc, "key");
    text = cJSON_GetObjectItemCaseSensitive(doc, "text");
    if (!cJSON_IsString(key) || !cJSON_IsString(text) || key->valuestring[0] == '\0' ||
        strlen(key->valuestring) > ENGRAM_KEY_MAX) {
      (*bad_lines)++;
      cJSON_Delete(doc);
      continue;
    }
    title = cJSON_GetObjectItemCaseSensitive(doc, "title");
    while (qi < n_queries && queries[qi].line < this_line) qi++;
    if (qi < n_queries && queries[qi].line == this_line) {
      queries[qi].key = strdup(key->valuestring);
      queries[qi].title = strdup(cJSON_IsString(title) ? title->valuestring : text->valuestring);
    }
    if (!ingest) {
      cJSON_Delete(doc);
      continue;
    }
    /* The record becomes {"text": ...} with everything else as metadata. */
    value = cJSON_CreateObject();
    cJSON_AddItemToObject(value, "text", cJSON_DetachItemViaPointer(doc, text));
    cJSON_DetachItemViaPointer(doc, key);
    meta = doc;
    entries[nb].key = key->valuestring;
    entries[nb].value = value;
    entries[nb].metadata = meta;
    docs[nb] = key; /* freed with the batch; value and meta too */
    nb++;
    if (nb == batch) {
      submit_batch(entries, nb); /* engram copied everything: free it now */
      for (size_t i = 0; i < nb; i++) {
        cJSON_Delete((cJSON *)entries[i].value);
        cJSON_Delete((cJSON *)entries[i].metadata);
        cJSON_Delete(docs[i]);
      }
      nb = 0;
    }
  }
  if (nb > 0) {
    submit_batch(entries, nb);
    for (size_t i = 0; i < nb; i++) {
      cJSON_Delete((cJSON *)entries[i].value);
      cJSON_Delete((cJSON *)entries[i].metadata);
      cJSON_Delete(docs[i]);
    }
  }
  while (!all_idle()) uv_run(loop, UV_RUN_ONCE);
  free(line);
  free(entries);
  free(docs);
  input_close(&in);
}

/* ---- Recall of the known-item queries ---- */

typedef struct {
  int *pending;
  int q;
  int rank; /* 1..10, or 0 = not in the top 10 */
  int status;
} probe_t;

static probe_t probes[N_QUERIES];

static void on_probe(int status, const engram_reply_t *reply, void *ud) {
  probe_t *p = ud;
  p->status = status;
  for (size_t i = 0; status == 0 && i < reply->n_items && p->rank == 0; i++)
    if (strcmp(reply->items[i].key, queries[p->q].key) == 0) p->rank = (int)i + 1;
  (*p->pending)--;
}

/* Runs the known-item queries on one source, RECALL_WINDOW at a time, until all ran or the time budget is
 * spent (a source that scans every item per query would otherwise hold the demo for minutes); the figures
 * then cover the queries that ran, and say so. */
static void recall(const char *source, double budget_s) {
  int pending = 0, found = 0, errors = 0, n = 0, next = 0, first_error = 0;
  double mrr = 0, t0 = now_s(), el;
  for (;;) {
    while (pending < RECALL_WINDOW && next < n_queries && now_s() - t0 < budget_s) {
      engram_query_t q = ENGRAM_QUERY_INIT;
      engram_opts_t o = {0};
      int i = next++, rc;
      if (queries[i].title == NULL) continue;
      q.text = queries[i].title, q.limit = 10;
      o.source = source;
      probes[i] = (probe_t){&pending, i, 0, 1}; /* status 1: not run */
      rc = engram_search(mgr, &q, &o, on_probe, &probes[i]);
      if (rc != 0) die("search on %s refused: %s (%s)", source, engram_err_name(rc), engram_last_error());
      pending++;
    }
    if (pending == 0) break;
    uv_run(loop, UV_RUN_ONCE);
  }
  el = now_s() - t0;
  for (int i = 0; i < next; i++) {
    if (queries[i].title == NULL) continue;
    n++;
    if (probes[i].status != 0 && errors++ == 0) first_error = probes[i].status;
    if (probes[i].rank > 0) found++, mrr += 1.0 / probes[i].rank;
  }
  printf("  %-12s recall@10 = %.3f  MRR@10 = %.3f  (%d queries in %.2f s, %.0f queries/s%s%s%s)\n", source,
         n ? (double)found / n : 0, n ? mrr / n : 0, n, el, el > 0 ? n / el : 0,
         next < n_queries ? "; stopped at the time budget" : "", errors ? "; errors: " : "",
         errors ? engram_err_name(first_error) : "");
}

/* ---- update: the agent's preference record gains a visit ---- */

static int add_visit(const cJSON *current, cJSON **next, void *ud) {
  cJSON *v = current ? cJSON_Duplicate(current, 1) : cJSON_CreateObject(), *visits;
  (void)ud;
  if (v == NULL) return ENGRAM_ENOMEM;
  visits = cJSON_GetObjectItemCaseSensitive(v, "visits");
  if (cJSON_IsNumber(visits)) cJSON_SetNumberValue(visits, visits->valuedouble + 1);
  else cJSON_AddNumberToObject(v, "visits", 1);
  cJSON_ReplaceItemInObjectCaseSensitive(v, "editor", cJSON_CreateString("emacs"));
  *next = v;
  return 0;
}

static void on_updated(int status, const engram_reply_t *reply, void *ud) {
  result_t *r = ud;
  char *s = status == 0 && reply->n_items ? cJSON_PrintUnformatted(reply->items[0].value) : NULL;
  if (status == 0) printf("< version %" PRIu64 ": %s\n", reply->items[0].version, s ? s : "null");
  else printf("< (error) %s: %s\n", engram_err_name(status), reply->message);
  cJSON_free(s);
  r->pending = 0;
}

/* ---- The conversation: an extractive summariser and the thread calls ---- */

#define CHAT "demo-chat"
#define SUMMARY_MAX 480 /* bytes of summary kept: the newest sentences */

/* The first sentence of text (up to . ? ! or 90 bytes, cut on a character), appended to out. */
static void first_sentence(char *out, size_t size, const char *text) {
  size_t n = 0, len = strlen(out);
  while (text[n] && n < 90 && !(n > 0 && (text[n - 1] == '.' || text[n - 1] == '?' || text[n - 1] == '!'))) n++;
  while (n > 0 && ((unsigned char)text[n] & 0xC0) == 0x80) n--; /* not inside a character */
  snprintf(out + len, size - len, "%.*s", (int)n, text);
}

/*
 * An extractive summariser (engram_summarize_fn): no model, just selection — the previous summary, then for each
 * user and assistant message that fell out of the window "role: its first sentence", joined by " | "; when the
 * result grows past SUMMARY_MAX, the oldest sentences are dropped. A real agent would ask its LLM here and call
 * engram_summary_complete when the answer comes; this one answers at once.
 */
static void extractive_summary(engram_summary_request_t *req, const char *thread, const char *previous,
                               const cJSON *messages, void *ud) {
  char out[4096] = "";
  const cJSON *m;
  const char *keep;
  (void)thread;
  if (previous) snprintf(out, sizeof out, "%s", previous);
  cJSON_ArrayForEach(m, messages) {
    const char *role = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(m, "role"));
    const char *text = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(m, "content"));
    if (role == NULL || text == NULL || strcmp(role, "tool") == 0 || strlen(out) + 110 >= sizeof out) continue;
    snprintf(out + strlen(out), sizeof out - strlen(out), "%s%s: ", out[0] ? " | " : "", role);
    first_sentence(out, sizeof out, text);
  }
  keep = out;
  while (strlen(keep) > SUMMARY_MAX && strstr(keep, " | ") != NULL) keep = strstr(keep, " | ") + 3;
  if (engram_summary_complete(req, 0, keep, on_result, ud) != 0) ((result_t *)ud)->pending = 0;
}

/* Runs the loop until *pending is 0 or ms have passed (a summariser that is never called must not hang). */
static void wait_at_most(const int *pending, int ms) {
  double end = now_s() + ms / 1000.0;
  while (*pending > 0 && now_s() < end) uv_run(loop, UV_RUN_NOWAIT), usleep(1000);
}

static void chat_append(const engram_opts_t *o, const char *role, const char *content) {
  engram_message_t m = {0};
  engram_thread_settings_t keep8 = {ENGRAM_THREAD_MAX_MESSAGES, 8, 0};
  result_t r = {0};
  m.role = role;
  m.content = content;
  result_reset(&r);
  check_submit(engram_thread_append(mgr, CHAT, &m, 1, &keep8, o, on_result, &r), "thread_append");
  wait_for(&r.pending);
  if (r.status != 0) die("thread_append: %s", r.message);
  printf("  + #%-2d %-9s %.60s%s   (visible %d, trimmed %d)\n",
         (int)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(r.info, "first_seq")), role, content,
         strlen(content) > 60 ? "..." : "", (int)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(r.info, "count")),
         (int)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(r.info, "trimmed")));
  result_reset(&r);
  r.pending = 0;
}

/* The window a model would get (newest 4, OpenAI format), with the summariser; waits for its summary. */
static void chat_window(const engram_opts_t *o, int print) {
  engram_window_t w = ENGRAM_WINDOW_INIT;
  result_t r = {0}, summary = {0};
  const cJSON *sum, *oldest;
  int asks;
  w.max_messages = 4;
  w.format = ENGRAM_RENDER_OPENAI;
  w.summarize = extractive_summary;
  w.summarize_ud = &summary;
  result_reset(&r);
  result_reset(&summary);
  check_submit(engram_thread_window(mgr, CHAT, &w, o, on_result, &r), "thread_window");
  wait_for(&r.pending);
  if (r.status != 0) die("thread_window: %s", r.message);
  sum = cJSON_GetObjectItemCaseSensitive(r.info, "summary");
  printf("  window: %d messages, %d older ones omitted, visible #%d..#%d%s\n", (int)r.count,
         (int)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(r.info, "omitted")),
         (int)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(r.info, "first_seq")),
         (int)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(r.info, "last_seq")),
         sum ? ", headed by the summary of older turns" : "");
  if (print) {
    cJSON *msgs = cJSON_Parse(r.text);
    printf("  messages (OpenAI Chat Completions):\n");
    for (cJSON *m = msgs ? msgs->child : NULL; m != NULL; m = m->next) {
      char *line = cJSON_PrintUnformatted(m);
      printf("    %s%s\n", line, m->next ? "," : "");
      cJSON_free(line);
    }
    cJSON_Delete(msgs);
  }
  /* The summariser is asked when the window left out messages no summary covers; it runs after the window's
   * callback and answers at once here (a model would take longer). */
  oldest = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(r.info, "messages"), 0);
  asks = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(r.info, "omitted")) > 0 &&
         (sum == NULL || cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(sum, "last_seq")) + 1 <
                             cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(oldest, "seq")));
  if (asks) wait_at_most(&summary.pending, 5000);
  if (summary.pending == 0 && summary.status == 0 && summary.info != NULL)
    printf("  summariser: messages #%d..#%d now summarised (%zu bytes); no message was deleted\n",
           (int)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(summary.info, "first_seq")),
           (int)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(summary.info, "last_seq")),
           strlen(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(summary.info, "summary"))));
  result_reset(&r);
  result_reset(&summary);
  r.pending = summary.pending = 0;
}

static void conversation(const char *source) {
  engram_opts_t o = {0};
  result_t r = {0};
  o.source = source;
  o.ns = "demo-user-1";
  printf("\n== a conversation (engram/thread.h: thread \"%s\" on \"%s\", max_messages 8, windows of 4)\n", CHAT,
         source);
  result_reset(&r);
  check_submit(engram_thread_delete(mgr, CHAT, &o, on_result, &r), "thread_delete"); /* start fresh */
  wait_for(&r.pending);
  chat_append(&o, "user", "I want to learn to brew coffee at home. Where do I start?");
  chat_append(&o, "assistant", "Start with a pour-over dripper and a burr grinder. Fresh beans matter most.");
  chat_append(&o, "user", "What grind size for pour-over? I have a hand grinder.");
  chat_append(&o, "assistant", "Medium-fine, like table salt. Adjust finer if it drains too fast.");
  chat_append(&o, "user", "How much coffee per cup?");
  chat_append(&o, "assistant", "About 15 g of coffee to 250 g of water at 93 C.");
  chat_window(&o, 0);
  chat_append(&o, "user", "My coffee tastes sour. Why?");
  chat_append(&o, "assistant", "Sour means under-extracted: grind finer or use hotter water.");
  chat_append(&o, "user", "And if it is bitter?");
  chat_append(&o, "assistant", "Bitter means over-extracted: grind coarser or pour faster.");
  printf("  (#1 and #2 were trimmed by max_messages 8; the summary still has them)\n");
  chat_window(&o, 0);
  printf("  the window a model gets now:\n");
  chat_window(&o, 1);
  tool("memory_thread_window", "{\"thread\": \"" CHAT "\", \"max_messages\": 2, \"format\": \"anthropic\", "
                               "\"namespace\": \"demo-user-1\", \"memory_source\": \"cache\"}");
  result_reset(&r);
  r.pending = 0;
}

static void on_closed(int status, const engram_reply_t *reply, void *ud) {
  (void)reply;
  *(int *)ud = status == 0 ? 0 : 1;
}

/* ---- main ---- */

static void usage(void) {
  fprintf(stderr, "usage: agent_memory [--config FILE] [--dir DIR] [--limit N] [--batch N] [--recall-budget S]\n"
                  "                    [CORPUS.jsonl[.gz]]\n"
                  "  CORPUS   JSON lines {\"key\", \"text\", ...}, gzipped or not (default %s;\n"
                  "           examples/corpus/build-corpus.sh builds it from this machine's apt lists)\n"
                  "  --dir    where persistent data lives (default $ENGRAM_DEMO_DIR, else build/demo)\n"
                  "  --limit  ingest at most N records;  --batch  store_many batch size (default 512)\n"
                  "  --recall-budget  seconds of recall queries per source (default 60)\n",
          DEFAULT_CORPUS);
  exit(2);
}

int main(int argc, char **argv) {
  const char *config_path = DEFAULT_CONFIG, *corpus = NULL, *dir = NULL;
  size_t limit = SIZE_MAX, batch = 512, total, bad_lines = 0;
  double recall_budget = 60;
  char *config_json, a[32], b[32];
  result_t r = {0};
  int any_ingest = 0, closed = -1, rc;
  double t_start = now_s();

  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) config_path = argv[++i];
    else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc) dir = argv[++i];
    else if (strcmp(argv[i], "--limit") == 0 && i + 1 < argc) limit = strtoull(argv[++i], NULL, 10);
    else if (strcmp(argv[i], "--batch") == 0 && i + 1 < argc) batch = strtoull(argv[++i], NULL, 10);
    else if (strcmp(argv[i], "--recall-budget") == 0 && i + 1 < argc) recall_budget = atof(argv[++i]);
    else if (argv[i][0] == '-') usage();
    else corpus = argv[i];
  }
  if (batch == 0 || batch > 100000 || limit == 0 || !(recall_budget > 0)) usage();
  if (corpus == NULL) corpus = DEFAULT_CORPUS;
  if (access(corpus, R_OK) != 0)
    die("no corpus at %s: build it with `examples/corpus/build-corpus.sh %s` or pass any JSON-lines file of "
        "{\"key\", \"text\", ...}", corpus, corpus);
  if (dir != NULL) setenv("ENGRAM_DEMO_DIR", dir, 1);
  else if (getenv("ENGRAM_DEMO_DIR") == NULL || getenv("ENGRAM_DEMO_DIR")[0] == '\0') setenv("ENGRAM_DEMO_DIR", "build/demo", 1);
  dir = getenv("ENGRAM_DEMO_DIR");
  mkdir_p(dir);
  tty = isatty(STDOUT_FILENO);
  setvbuf(stdout, NULL, _IOLBF, 0);

  /* 1. The manager and its sources, from the JSON configuration. */
  config_json = load_config(config_path);
  loop = uv_default_loop();
  check_submit(engram_manager_new(&mgr, loop, NULL), "engram_manager_new");
  printf("== engram agent-memory demo\n");
  printf("configuration %s (data in %s): sources", config_path, dir);
  for (int i = 0; i < configured.n; i++) printf(" %s", configured.names[i]);
  printf("\n");
  result_reset(&r);
  rc = engram_manager_configure(mgr, config_json, on_result, &r);
  if (rc != 0) die("configuration refused: %s", engram_last_error());
  wait_for(&r.pending);
  if (r.status != 0) die("configuration failed: %s", r.message);
  free(config_json);

  /* 2. Which sources already hold the corpus? The ingest leaves a marker with its item count. */
  total = count_lines(corpus, limit);
  printf("\n== corpus %s: %s records%s\n", corpus, grouped(total, a), limit != SIZE_MAX ? " (--limit)" : "");
  for (int i = 0; i < ingest_targets.n; i++) {
    target_t *t = &targets[n_targets++];
    engram_opts_t o = {0};
    int st;
    uint64_t have = count_items(ingest_targets.names[i], "", &st), want = 0;
    memset(t, 0, sizeof *t);
    t->name = ingest_targets.names[i];
    if (st != 0) die("count on %s failed: %s", t->name, engram_err_name(st));
    o.source = t->name, o.ns = MARKER_NS;
    result_reset(&r);
    check_submit(engram_retrieve(mgr, MARKER_KEY, &o, on_result, &r), "retrieve");
    wait_for(&r.pending);
    if (r.status == 0 && r.text) {
      cJSON *m = cJSON_Parse(r.text);
      cJSON *items = cJSON_GetObjectItemCaseSensitive(m, "items"), *src = cJSON_GetObjectItemCaseSensitive(m, "corpus");
      cJSON *lim = cJSON_GetObjectItemCaseSensitive(m, "records");
      if (cJSON_IsNumber(items) && cJSON_IsString(src) && strcmp(src->valuestring, corpus) == 0 && cJSON_IsNumber(lim) &&
          (size_t)lim->valuedouble == total)
        want = (uint64_t)items->valuedouble;
      cJSON_Delete(m);
    }
    t->needed = !(want > 0 && have == want);
    if (t->needed && have > 0) {
      /* Stale or partial data from another corpus or an interrupted run: start from an empty namespace. */
      engram_opts_t c = {0};
      c.source = t->name, c.ns = "";
      result_reset(&r);
      check_submit(engram_clear(mgr, &c, on_result, &r), "clear");
      wait_for(&r.pending);
    }
    if (t->needed) printf("  %-12s %s items: ingest needed\n", t->name, grouped(have, a));
    else printf("  %-12s %s items, as the last ingest left them: skipping the ingest\n", t->name, grouped(have, a));
    any_ingest |= t->needed;
  }

  /* 3. Ingest (or only read the query titles when every source has the data). */
  choose_queries(total ? total : 1);
  if (total == 0) n_queries = 0;
  ingest_total = total;
  if (any_ingest) printf("\n== ingest: store_many batches of %zu, %d in flight per source\n", batch, WINDOW);
  read_corpus(corpus, limit, batch, any_ingest, &bad_lines);
  if (any_ingest) {
    double el;
    draw_progress(1);
    for (int i = 0; i < n_targets; i++) {
      target_t *t = &targets[i];
      engram_opts_t o = {0};
      cJSON *m;
      int st;
      uint64_t have;
      if (!t->needed) continue;
      el = t->finished_at - ingest_start;
      printf("  %-12s %s items in %.1f s: %s items/s%s%s\n", t->name, grouped(t->done, a), el,
             grouped((uint64_t)(el > 0 ? (double)t->done / el : 0), b), t->failed ? ", failed: " : "",
             t->failed ? t->first_error : "");
      /* The marker: the count the next run compares with. */
      have = count_items(t->name, "", &st);
      m = cJSON_CreateObject();
      cJSON_AddStringToObject(m, "text", "engram demo ingest marker");
      cJSON_AddStringToObject(m, "corpus", corpus);
      cJSON_AddNumberToObject(m, "records", (double)total);
      cJSON_AddNumberToObject(m, "items", (double)have);
      o.source = t->name, o.ns = MARKER_NS;
      result_reset(&r);
      check_submit(engram_store(mgr, MARKER_KEY, m, &o, on_result, &r), "store");
      cJSON_Delete(m);
      wait_for(&r.pending);
      if (r.status != 0) printf("  %-12s marker not stored: %s\n", t->name, r.message);
    }
    printf("  ingest wall time %.1f s for %s records\n", now_s() - ingest_start, grouped(ingest_submitted, a));
  }
  if (bad_lines) printf("  %zu lines skipped (not a JSON object with string \"key\" and \"text\")\n", bad_lines);

  /* 4. An agent's session through the memory tools. */
  printf("\n== agent session (engram_tools_call: each tool call and its JSON result)\n");
  tool("memory_list_sources", "{}");
  tool("memory_store", "{\"key\": \"user:preferences\", \"value\": {\"editor\": \"vim\", \"shell\": \"zsh\"}, "
                       "\"metadata\": {\"tags\": [\"preference\", \"session\"], \"ttl\": 3600}}");
  tool("memory_retrieve", "{\"key\": \"user:preferences\"}");
  if (has_name(&configured, "vectors"))
    tool("memory_search", "{\"query\": \"tool to transfer files over HTTP from the command line\", "
                          "\"memory_source\": \"vectors\", \"limit\": 5}");
  if (has_name(&configured, "persistent")) {
    tool("memory_search", "{\"query\": \"download files HTTP command line resume\", \"memory_source\": \"persistent\", "
                          "\"limit\": 5}");
    tool("memory_list_keys", "{\"pattern\": \"*-doc\", \"limit\": 5, \"memory_source\": \"persistent\"}");
  }
  printf("\n> engram_update(\"user:preferences\", add_visit)   (read, change, conditional store: atomic per key)\n");
  result_reset(&r);
  check_submit(engram_update(mgr, "user:preferences", add_visit, NULL, NULL, on_updated, &r), "update");
  wait_for(&r.pending);
  tool("memory_delete", "{\"key\": \"user:preferences\"}");
  tool("memory_retrieve", "{\"key\": \"user:preferences\"}");
  tool("memory_retrieve", "{\"key\": \"user:preferences\", \"memory_source\": \"archive\"}");

  /* 5. A conversation: a thread, its window, trimming, and summaries (on the session cache). */
  if (has_name(&configured, "cache")) conversation("cache");

  /* 6. Known-item recall on the searchable sources. */
  if (n_queries > 0 && recall_targets.n > 0) {
    printf("\n== recall@10 of %d known-item queries (query = a record's title, relevant = its key; seed %u)\n",
           n_queries, QUERY_SEED);
    for (int i = 0; i < recall_targets.n; i++) recall(recall_targets.names[i], recall_budget);
  }

  /* 7. What each source says about itself. */
  printf("\n== info\n");
  for (int i = 0; i < configured.n; i++) {
    engram_opts_t o = {0};
    cJSON *lat, *items;
    o.source = configured.names[i];
    result_reset(&r);
    check_submit(engram_info(mgr, &o, on_result, &r), "info");
    wait_for(&r.pending);
    if (r.status != 0) {
      printf("  %-12s %s\n", configured.names[i], r.message);
      continue;
    }
    lat = cJSON_GetObjectItemCaseSensitive(r.info, "latency_us");
    items = cJSON_GetObjectItemCaseSensitive(r.info, "items");
    printf("  %-12s %-8s %s, %s items, %s ops, latency p50 %.1f ms, p99 %.1f ms\n", configured.names[i],
           cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(r.info, "type")),
           cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(r.info, "health")),
           cJSON_IsNumber(items) ? grouped((uint64_t)items->valuedouble, a) : "?",
           grouped((uint64_t)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(r.info, "ops")), b),
           cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(lat, "p50")) / 1000,
           cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(lat, "p99")) / 1000);
  }
  result_reset(&r);
  r.pending = 0;

  /* 8. Close: every source flushes and closes, then the loop has nothing left. */
  check_submit(engram_manager_close(mgr, on_closed, &closed), "close");
  while (closed < 0) uv_run(loop, UV_RUN_ONCE);
  uv_run(loop, UV_RUN_DEFAULT);
  if (uv_loop_close(loop) != 0) die("the loop still has handles after close");
  for (int i = 0; i < n_queries; i++) free(queries[i].key), free(queries[i].title);
  printf("\n== done in %.1f s\n", now_s() - t_start);
  return closed;
}
