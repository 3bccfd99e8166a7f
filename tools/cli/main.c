/*
 * tools/cli/main.c — the `engram` command (docs/cli.md): engram's memory from a shell, built on the public API
 * only (engram.h and engram/export.h). Each invocation makes a manager on a loop of its own, configures it from
 * the JSON file engram_manager_configure reads (--config FILE; one cache source when none is given, as
 * engram-mcp), runs one subcommand — get, put, delete, search, list, count, info, sources, export, import (watch
 * only explains why it is not there: events do not cross processes yet) — and
 * closes the manager, so a persistent source (a SQLite file, PostgreSQL, Redis) keeps what one invocation wrote
 * for the next. Output is aligned tables for people, or JSON with --json for programs; errors go to stderr with
 * the engram code's name; the exit code says what happened (0 ok, 1 not found, 2 usage, 3 configuration,
 * 4 operation failed, 5 bad data or file), so scripts can branch on it.
 */
#include <engram.h>
#include <engram/events.h>
#include <engram/export.h>

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

enum { EXIT_OK = 0, EXIT_NOTFOUND = 1, EXIT_USAGE = 2, EXIT_CONFIG = 3, EXIT_FAILED = 4, EXIT_DATA = 5 };

/* ---- options ---- */

typedef struct {
  const char *config, *source, *ns, *metadata, *pattern, *filter, *cursor, *ns_prefix;
  int json, help, create_only, string, fresh, skip_bad, validate_first, progress; /* progress: -1 off, 1 on, 0 auto */
  int prefix, all; /* --prefix: --ns names a namespace prefix (ENGRAM_OPT_NS_PREFIX); clear --all: every namespace */
  long depth;      /* namespaces --depth */
  int has_ttl, has_limit, has_offset, has_min_score, has_if_version, has_alpha;
  int mode; /* search: engram_search_mode_t (ENGRAM_MODE_DEFAULT unless --mode) */
  double alpha;
  int64_t ttl_ms;
  long limit, offset;
  double min_score;
  uint64_t if_version;
  uint32_t deadline_ms;
  const char *args[64];
  int n_args;
} opts_t;

static opts_t o;
static const char *cmd;
static uv_loop_t loop;
static engram_manager_t *mgr;
static int done, exit_code;

typedef struct {
  const char *name, *usage, *summary, *options; /* options: the long options it takes, space separated */
  int min_args, max_args;
  void (*run)(void);
} command_t;

static const char *const common_help =
    "Common options:\n"
    "  --config FILE      sources to use: the JSON engram_manager_configure reads (default: one cache source)\n"
    "  --source NAME      the source to use (default: the configuration's default source)\n"
    "  --json             JSON output instead of tables\n"
    "  --deadline-ms N    deadline of each call (default: none)\n"
    "  -h, --help         this help\n"
    "Exit codes: 0 ok, 1 not found, 2 usage, 3 configuration, 4 operation failed, 5 bad data or file.\n";

static void usage_error(const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "engram%s%s: ", cmd ? " " : "", cmd ? cmd : "");
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\n(engram %s%s--help for help)\n", cmd ? cmd : "", cmd ? " " : "");
  exit(EXIT_USAGE);
}

/* ---- output helpers ---- */

/* Values print with engram_json_print: exact numbers (cJSON would print 0.1 + 0.2 as 0.3). The caller frees the
 * text with free(). */
static char *json_text(const cJSON *v) {
  char *e = v ? engram_json_print_text(v) : NULL, *s = strdup(e ? e : "null");
  engram_free(e);
  return s;
}

static void print_json(cJSON *v) {
  char *s = engram_json_print_text(v);
  if (s == NULL) {
    fprintf(stderr, "engram: out of memory\n");
    exit(EXIT_FAILED);
  }
  puts(s);
  engram_free(s);
}

/* Display width of UTF-8 text: one column per character (good enough for tables of keys). */
static size_t width(const char *s) {
  size_t w = 0;
  for (; *s; s++) w += ((unsigned char)*s & 0xC0) != 0x80;
  return w;
}

/* Text cut to at most max columns (with "..."), control characters shown as spaces; malloc'd. */
static char *cell(const char *s, size_t max) {
  size_t n = strlen(s), i, w = 0, out = 0;
  char *r = malloc(n + 4);
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if ((c & 0xC0) != 0x80) {
      if (max && w == max - 3 && width(s + i) > 3) {
        memcpy(r + out, "...", 3);
        out += 3;
        break;
      }
      w++;
    }
    r[out++] = c < 0x20 ? ' ' : (char)c;
  }
  r[out] = '\0';
  return r;
}

typedef struct {
  char **cells;
  size_t n, cols;
} table_t;

static void table_add(table_t *t, const char *s, size_t max) {
  t->cells = realloc(t->cells, (t->n + 1) * sizeof(char *));
  t->cells[t->n++] = cell(s ? s : "", max);
}

static void table_print(table_t *t) {
  size_t w[16] = {0}, i, c;
  for (i = 0; i < t->n; i++)
    if (width(t->cells[i]) > w[i % t->cols]) w[i % t->cols] = width(t->cells[i]);
  for (i = 0; i < t->n; i += t->cols) {
    for (c = 0; c < t->cols && i + c < t->n; c++) {
      const char *s = t->cells[i + c];
      if (c + 1 == t->cols) printf("%s\n", s);
      else printf("%s%*s  ", s, (int)(w[c] - width(s)), "");
    }
  }
  for (i = 0; i < t->n; i++) free(t->cells[i]);
  free(t->cells);
  t->cells = NULL;
  t->n = 0;
}

static void iso_time(int64_t ms, char *buf, size_t size) {
  time_t s = (time_t)(ms / 1000);
  struct tm tm;
  if (ms == 0) {
    snprintf(buf, size, "0");
    return;
  }
  gmtime_r(&s, &tm);
  snprintf(buf, size, "%" PRId64 " (%04d-%02d-%02dT%02d:%02d:%02d.%03dZ)", ms, tm.tm_year + 1900, tm.tm_mon + 1,
           tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}

/* An item as the export's line object (the same members, in the same order), with score for search. */
static cJSON *item_json(const engram_item_t *it, int with_score) {
  cJSON *j = cJSON_CreateObject();
  cJSON_AddStringToObject(j, "key", it->key);
  cJSON_AddStringToObject(j, "ns", it->ns ? it->ns : "");
  cJSON_AddItemToObject(j, "value", it->value ? cJSON_Duplicate(it->value, 1) : cJSON_CreateNull());
  cJSON_AddItemToObject(j, "metadata", it->metadata ? cJSON_Duplicate(it->metadata, 1) : cJSON_CreateNull());
  cJSON_AddNumberToObject(j, "created_at_ms", (double)it->created_at_ms);
  cJSON_AddNumberToObject(j, "updated_at_ms", (double)it->updated_at_ms);
  cJSON_AddNumberToObject(j, "expires_at_ms", (double)it->expires_at_ms);
  cJSON_AddNumberToObject(j, "version", (double)it->version);
  if (with_score) cJSON_AddNumberToObject(j, "score", it->score);
  return j;
}

/* A failed call: the message and the code's name on stderr; exit code 1 for ENGRAM_ENOTFOUND, else 4. */
static void call_failed(int status, const char *message) {
  fprintf(stderr, "engram %s: %s (%s)\n", cmd, message && message[0] ? message : engram_strerror(status),
          engram_err_name(status));
  exit_code = status == ENGRAM_ENOTFOUND ? EXIT_NOTFOUND : EXIT_FAILED;
  done = 1;
}

/* A call refused before it was sent. */
static void refused(int rc) {
  call_failed(rc, engram_last_error());
}

static engram_opts_t call_opts(void) {
  engram_opts_t co;
  memset(&co, 0, sizeof co);
  co.source = o.source;
  co.ns = o.ns;
  co.deadline_ms = o.deadline_ms;
  if (o.prefix) co.flags |= ENGRAM_OPT_NS_PREFIX;
  return co;
}

static cJSON *parse_json_arg(const char *what, const char *text) {
  cJSON *v = cJSON_Parse(text);
  if (v == NULL) usage_error("%s: not valid JSON: %s", what, text);
  return v;
}

static engram_query_t make_query(const char *text, cJSON **filter) {
  engram_query_t q = ENGRAM_QUERY_INIT;
  q.text = text;
  q.pattern = o.pattern;
  *filter = NULL;
  if (o.filter) {
    *filter = parse_json_arg("--filter", o.filter);
    q.filter = *filter;
  }
  return q;
}

static void run_loop(void) {
  while (!done) uv_run(&loop, UV_RUN_ONCE);
}

/* ---- get ---- */

static void on_get(int status, const engram_reply_t *reply, void *ud) {
  const engram_item_t *it = &reply->items[0];
  (void)ud;
  done = 1;
  if (status != 0) return call_failed(status, reply->message);
  if (o.json) {
    cJSON *j = item_json(it, 0);
    print_json(j);
    cJSON_Delete(j);
  } else {
    table_t t = {NULL, 0, 2};
    char buf[64], *v = json_text(it->value), *m = json_text(it->metadata);
    table_add(&t, "key", 0);
    table_add(&t, it->key, 0);
    table_add(&t, "ns", 0);
    table_add(&t, it->ns, 0);
    table_add(&t, "value", 0);
    table_add(&t, v, 0);
    table_add(&t, "metadata", 0);
    table_add(&t, m, 0);
    iso_time(it->created_at_ms, buf, sizeof buf);
    table_add(&t, "created", 0);
    table_add(&t, buf, 0);
    iso_time(it->updated_at_ms, buf, sizeof buf);
    table_add(&t, "updated", 0);
    table_add(&t, buf, 0);
    iso_time(it->expires_at_ms, buf, sizeof buf);
    table_add(&t, "expires", 0);
    table_add(&t, it->expires_at_ms ? buf : "never", 0);
    snprintf(buf, sizeof buf, "%" PRIu64, it->version);
    table_add(&t, "version", 0);
    table_add(&t, buf, 0);
    table_print(&t);
    free(v);
    free(m);
  }
}

static void cmd_get(void) {
  engram_opts_t co = call_opts();
  int rc;
  co.flags = ENGRAM_OPT_INCLUDE_METADATA;
  if ((rc = engram_retrieve(mgr, o.args[0], &co, on_get, NULL)) != 0) refused(rc);
}

/* ---- put ---- */

static void on_put(int status, const engram_reply_t *reply, void *ud) {
  (void)ud;
  done = 1;
  if (status != 0) return call_failed(status, reply->message);
  if (o.json) {
    cJSON *j = item_json(&reply->items[0], 0);
    cJSON_DeleteItemFromObjectCaseSensitive(j, "value");
    print_json(j);
    cJSON_Delete(j);
  } else {
    printf("stored %s (version %" PRIu64 ")\n", reply->items[0].key, reply->items[0].version);
  }
}

static char *read_stdin(void) {
  size_t n = 0, cap = 65536;
  char *s = malloc(cap);
  size_t got;
  while ((got = fread(s + n, 1, cap - n - 1, stdin)) > 0) {
    n += got;
    if (cap - n - 1 == 0) s = realloc(s, cap *= 2);
  }
  s[n] = '\0';
  return s;
}

static void cmd_put(void) {
  engram_opts_t co = call_opts();
  cJSON *value, *meta = NULL;
  char *text = NULL;
  const char *arg = o.args[1];
  int rc;
  if (strcmp(arg, "-") == 0) arg = text = read_stdin();
  if (o.string) value = cJSON_CreateString(arg);
  else if ((value = cJSON_Parse(arg)) == NULL) value = cJSON_CreateString(arg); /* not JSON: a string */
  if (o.metadata) {
    meta = parse_json_arg("--metadata", o.metadata);
    if (!cJSON_IsObject(meta)) usage_error("--metadata: must be a JSON object");
    co.metadata = meta;
  }
  if (o.has_ttl) {
    co.flags |= ENGRAM_OPT_TTL;
    co.ttl_ms = o.ttl_ms;
  }
  if (o.create_only) co.flags |= ENGRAM_OPT_CREATE_ONLY;
  if (o.has_if_version) co.if_version = o.if_version;
  if ((rc = engram_store(mgr, o.args[0], value, &co, on_put, NULL)) != 0) refused(rc);
  cJSON_Delete(value);
  cJSON_Delete(meta);
  free(text);
}

/* ---- delete ---- */

static void on_delete(int status, const engram_reply_t *reply, void *ud) {
  (void)ud;
  done = 1;
  if (status != 0) return call_failed(status, reply->message);
  if (o.json) printf("{\"deleted\":%" PRIu64 "}\n", reply->count);
  else printf("deleted %" PRIu64 "\n", reply->count);
}

static void cmd_delete(void) {
  engram_opts_t co = call_opts();
  int rc;
  if (o.n_args == 1) rc = engram_delete(mgr, o.args[0], &co, on_delete, NULL);
  else rc = engram_delete_many(mgr, o.args, (size_t)o.n_args, &co, on_delete, NULL);
  if (rc != 0) refused(rc);
}

/* ---- search, count ---- */

static void on_search(int status, const engram_reply_t *reply, void *ud) {
  size_t i;
  (void)ud;
  done = 1;
  if (status != 0) return call_failed(status, reply->message);
  if (o.json) {
    cJSON *a = cJSON_CreateArray();
    for (i = 0; i < reply->n_items; i++) cJSON_AddItemToArray(a, item_json(&reply->items[i], 1));
    print_json(a);
    cJSON_Delete(a);
    return;
  }
  {
    table_t t = {NULL, 0, 4};
    table_add(&t, "SCORE", 0);
    table_add(&t, "KEY", 0);
    table_add(&t, "NS", 0);
    table_add(&t, "VALUE", 0);
    for (i = 0; i < reply->n_items; i++) {
      char score[32], *v = json_text(reply->items[i].value);
      snprintf(score, sizeof score, "%.3f", reply->items[i].score);
      table_add(&t, score, 0);
      table_add(&t, reply->items[i].key, 40);
      table_add(&t, reply->items[i].ns, 20);
      table_add(&t, v, 60);
      free(v);
    }
    table_print(&t);
  }
}

static void cmd_search(void) {
  engram_opts_t co = call_opts();
  cJSON *filter;
  engram_query_t q = make_query(o.n_args ? o.args[0] : NULL, &filter);
  int rc;
  if (o.has_limit) q.limit = (int)o.limit;
  if (o.has_offset) q.offset = (int)o.offset;
  if (o.has_min_score) q.min_score = o.min_score;
  q.mode = o.mode;
  if (o.has_alpha) { /* weighted fusion: alpha * vector score + (1 - alpha) * text score */
    q.fusion = ENGRAM_FUSION_WEIGHTED;
    q.alpha = o.alpha;
  }
  if ((rc = engram_search(mgr, &q, &co, on_search, NULL)) != 0) refused(rc);
  cJSON_Delete(filter);
}

static void on_count(int status, const engram_reply_t *reply, void *ud) {
  (void)ud;
  done = 1;
  if (status != 0) return call_failed(status, reply->message);
  if (o.json) printf("{\"count\":%" PRIu64 "}\n", reply->count);
  else printf("%" PRIu64 "\n", reply->count);
}

static void cmd_count(void) {
  engram_opts_t co = call_opts();
  cJSON *filter;
  engram_query_t q = make_query(o.n_args ? o.args[0] : NULL, &filter);
  int rc;
  if ((rc = engram_count(mgr, &q, &co, on_count, NULL)) != 0) refused(rc);
  cJSON_Delete(filter);
}

/* ---- list ---- */

static cJSON *list_keys_json;
static long list_left;
static int list_header_done;

static void list_page(const char *cursor);

static void on_list(int status, const engram_reply_t *reply, void *ud) {
  size_t i;
  (void)ud;
  if (status != 0) return call_failed(status, reply->message);
  if (!o.json && !list_header_done) {
    list_header_done = 1;
    printf(o.prefix ? "NAMESPACE\tKEY\n" : "KEY\n");
  }
  for (i = 0; i < reply->n_items; i++) {
    if (o.json && o.prefix) { /* over a prefix: each key with its namespace */
      cJSON *k = cJSON_CreateObject();
      cJSON_AddStringToObject(k, "ns", reply->items[i].ns ? reply->items[i].ns : "");
      cJSON_AddStringToObject(k, "key", reply->items[i].key);
      cJSON_AddItemToArray(list_keys_json, k);
    } else if (o.json) {
      cJSON_AddItemToArray(list_keys_json, cJSON_CreateString(reply->items[i].key));
    } else {
      char *c = cell(reply->items[i].key, 0);
      if (o.prefix) {
        char *n = cell(reply->items[i].ns ? reply->items[i].ns : "", 0);
        printf("%s\t%s\n", n, c);
        free(n);
      } else {
        puts(c);
      }
      free(c);
    }
  }
  if (o.has_limit) list_left -= (long)reply->n_items;
  if (reply->cursor != NULL && (!o.has_limit || list_left > 0)) {
    list_page(reply->cursor);
    return;
  }
  done = 1;
  if (o.json) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddItemToObject(j, "keys", list_keys_json);
    cJSON_AddItemToObject(j, "cursor", reply->cursor ? cJSON_CreateString(reply->cursor) : cJSON_CreateNull());
    print_json(j);
    cJSON_Delete(j);
  } else if (reply->cursor != NULL) {
    fprintf(stderr, "more keys: --cursor '%s'\n", reply->cursor);
  }
}

static void list_page(const char *cursor) {
  engram_opts_t co = call_opts();
  int limit = 1000, rc;
  if (o.has_limit && list_left < limit) limit = (int)list_left;
  if ((rc = engram_list_keys(mgr, o.n_args ? o.args[0] : NULL, limit, cursor, &co, on_list, NULL)) != 0) refused(rc);
}

static void cmd_list(void) {
  list_keys_json = cJSON_CreateArray();
  list_left = o.limit;
  if (o.has_limit && o.limit < 1) usage_error("--limit: must be at least 1");
  list_page(o.cursor);
}

/* ---- clear, namespaces ---- */

static void on_clear(int status, const engram_reply_t *reply, void *ud) {
  (void)ud;
  done = 1;
  if (status != 0) return call_failed(status, reply->message);
  if (o.json) printf("{\"cleared\":%" PRIu64 "}\n", reply->count);
  else printf("%" PRIu64 "\n", reply->count);
}

static void cmd_clear(void) {
  engram_opts_t co = call_opts();
  int rc;
  if (o.all && (o.ns != NULL || o.prefix)) usage_error("clear: --all clears every namespace; give it without --ns and --prefix");
  if (!o.all && o.ns == NULL) usage_error("clear: name a namespace (--ns NS, with --prefix for everything below it) or --all");
  if (o.all) co.flags |= ENGRAM_OPT_CONFIRM;
  if ((rc = engram_clear(mgr, &co, on_clear, NULL)) != 0) refused(rc);
}

static cJSON *ns_json;
static long ns_left;
static int ns_header_done;

static void ns_page(const char *cursor);

static void on_namespaces(int status, const engram_reply_t *reply, void *ud) {
  size_t i;
  (void)ud;
  if (status != 0) return call_failed(status, reply->message);
  if (!o.json && !ns_header_done) {
    ns_header_done = 1;
    printf("NAMESPACE\n");
  }
  for (i = 0; i < reply->n_items; i++) {
    if (o.json) cJSON_AddItemToArray(ns_json, cJSON_CreateString(reply->items[i].ns));
    else {
      char *c = cell(reply->items[i].ns[0] ? reply->items[i].ns : "\"\"", 0);
      puts(c);
      free(c);
    }
  }
  if (o.has_limit) ns_left -= (long)reply->n_items;
  if (reply->cursor != NULL && (!o.has_limit || ns_left > 0)) {
    ns_page(reply->cursor);
    return;
  }
  done = 1;
  if (o.json) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddItemToObject(j, "namespaces", ns_json);
    cJSON_AddItemToObject(j, "cursor", reply->cursor ? cJSON_CreateString(reply->cursor) : cJSON_CreateNull());
    print_json(j);
    cJSON_Delete(j);
  } else if (reply->cursor != NULL) {
    fprintf(stderr, "more namespaces: --cursor '%s'\n", reply->cursor);
  }
}

static void ns_page(const char *cursor) {
  engram_opts_t co = call_opts();
  int limit = 1000, rc;
  co.ns = o.n_args ? o.args[0] : NULL;
  if (o.has_limit && ns_left < limit) limit = (int)ns_left;
  if ((rc = engram_list_namespaces(mgr, (int)o.depth, limit, cursor, &co, on_namespaces, NULL)) != 0) refused(rc);
}

static void cmd_namespaces(void) {
  ns_json = cJSON_CreateArray();
  ns_left = o.limit;
  ns_page(o.cursor);
}

/* ---- info, sources ---- */

static void print_object_table(const cJSON *obj) {
  table_t t = {NULL, 0, 2};
  const cJSON *c;
  cJSON_ArrayForEach(c, obj) {
    char *v = cJSON_IsString(c) ? strdup(c->valuestring) : json_text(c);
    table_add(&t, c->string, 0);
    table_add(&t, v, 0);
    free(v);
  }
  table_print(&t);
}

static void on_info(int status, const engram_reply_t *reply, void *ud) {
  (void)ud;
  done = 1;
  if (status != 0) return call_failed(status, reply->message);
  if (o.json) print_json((cJSON *)reply->info);
  else print_object_table(reply->info);
}

static void cmd_info(void) {
  engram_opts_t co = call_opts();
  int rc;
  if ((rc = engram_info(mgr, &co, on_info, NULL)) != 0) refused(rc);
}

static void on_sources(int status, const engram_reply_t *reply, void *ud) {
  const cJSON *s;
  table_t t = {NULL, 0, 4};
  (void)ud;
  done = 1;
  if (status != 0) return call_failed(status, reply->message);
  if (o.json) {
    print_json((cJSON *)reply->info);
    return;
  }
  table_add(&t, "NAME", 0);
  table_add(&t, "TYPE", 0);
  table_add(&t, "DEFAULT", 0);
  table_add(&t, "DESCRIPTION", 0);
  cJSON_ArrayForEach(s, reply->info) {
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(s, "description");
    table_add(&t, cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(s, "name")), 0);
    table_add(&t, cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(s, "type")), 0);
    table_add(&t, cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(s, "default")) ? "yes" : "", 0);
    table_add(&t, cJSON_IsString(d) ? d->valuestring : "", 60);
  }
  table_print(&t);
}

static void cmd_sources(void) {
  int rc;
  if ((rc = engram_manager_list_sources(mgr, NULL, on_sources, NULL)) != 0) refused(rc);
}

/* ---- export, import ---- */

static uint64_t progress_total; /* export: items in the source (info); import: bytes of the file; 0 = unknown */
static int show_progress;

static void on_progress(const engram_transfer_progress_t *p, void *ud) {
  const char *verb = ud;
  char bar[64] = "";
  uint64_t at = strcmp(verb, "imported") == 0 ? p->bytes : p->items;
  if (!show_progress) return;
  if (progress_total > 0) { /* [########------------]  40% */
    int pct = (int)(at * 100 / progress_total > 100 ? 100 : at * 100 / progress_total), i;
    bar[0] = '[';
    for (i = 0; i < 20; i++) bar[1 + i] = i < pct / 5 ? '#' : '-';
    snprintf(bar + 21, sizeof bar - 21, "] %3d%% ", pct);
  }
  fprintf(stderr, "\r%s%s %" PRIu64 " %s, %.1f MB ", bar, p->validating ? "checking" : verb,
          p->validating ? p->lines : p->items, p->validating ? "lines" : "items", (double)p->bytes / 1e6);
  fflush(stderr);
}

static void transfer_done(int status, const engram_transfer_result_t *r, void *ud) {
  const char *verb = ud;
  done = 1;
  if (show_progress) fprintf(stderr, "\n");
  if (status != 0) {
    fprintf(stderr, "engram %s: %s (%s)\n", cmd, r->message[0] ? r->message : engram_strerror(status), engram_err_name(status));
    exit_code = status == ENGRAM_EINVAL || status == ENGRAM_EIO ? EXIT_DATA : EXIT_FAILED;
    if (r->items > 0 && strcmp(verb, "imported") == 0)
      fprintf(stderr, "engram %s: %" PRIu64 " items were imported before it stopped\n", cmd, r->items);
    return;
  }
  if (strcmp(verb, "imported") == 0) {
    if (o.json)
      printf("{\"items\":%" PRIu64 ",\"lines\":%" PRIu64 ",\"skipped\":%" PRIu64 ",\"expired\":%" PRIu64
             ",\"bad_lines\":%" PRIu64 ",\"bad_line\":%" PRIu64 "}\n",
             r->items, r->lines, r->skipped, r->expired, r->bad_lines, r->bad_line);
    else {
      printf("imported %" PRIu64 " items from %" PRIu64 " lines", r->items, r->lines);
      if (r->skipped) printf(" (%" PRIu64 " skipped: %" PRIu64 " bad, %" PRIu64 " expired)", r->skipped, r->bad_lines, r->expired);
      printf("\n");
      if (r->bad_lines) fprintf(stderr, "engram import: first bad %s\n", r->message);
    }
  } else if (o.n_args > 0 && strcmp(o.args[0], "-") != 0) { /* stdout carries the data otherwise */
    if (o.json) printf("{\"items\":%" PRIu64 ",\"bytes\":%" PRIu64 "}\n", r->items, r->bytes);
    else printf("exported %" PRIu64 " items (%" PRIu64 " bytes) to %s\n", r->items, r->bytes, o.args[0]);
  }
}

static void start_export(void) {
  engram_export_opts_t eo;
  int rc;
  memset(&eo, 0, sizeof eo);
  eo.source = o.source;
  eo.ns = o.ns;
  eo.ns_prefix = o.ns_prefix;
  eo.pattern = o.pattern;
  eo.deadline_ms = o.deadline_ms;
  eo.progress = on_progress;
  eo.progress_ud = "exported";
  if (o.n_args == 0 || strcmp(o.args[0], "-") == 0) eo.file = stdout;
  else eo.path = o.args[0];
  if ((rc = engram_export(mgr, &eo, transfer_done, "exported")) != 0) {
    fprintf(stderr, "engram export: %s (%s)\n", engram_last_error(), engram_err_name(rc));
    exit_code = rc == ENGRAM_EIO || rc == ENGRAM_EINVAL ? EXIT_DATA : EXIT_FAILED;
    done = 1;
  }
}

static void on_export_info(int status, const engram_reply_t *reply, void *ud) {
  const cJSON *items = status == 0 ? cJSON_GetObjectItemCaseSensitive(reply->info, "items") : NULL;
  (void)ud;
  if (cJSON_IsNumber(items) && o.ns == NULL && o.ns_prefix == NULL && o.pattern == NULL)
    progress_total = (uint64_t)items->valuedouble;
  start_export();
}

static void cmd_export(void) {
  int to_stdout = o.n_args == 0 || strcmp(o.args[0], "-") == 0;
  show_progress = o.progress > 0 || (o.progress == 0 && isatty(2) && (!to_stdout || !isatty(1)));
  if (show_progress) { /* the item count, for a percentage */
    engram_opts_t co = call_opts();
    co.ns = NULL;
    if (engram_info(mgr, &co, on_export_info, NULL) == 0) return;
  }
  start_export();
}

static void cmd_import(void) {
  engram_import_opts_t io;
  struct stat st;
  int rc;
  memset(&io, 0, sizeof io);
  io.source = o.source;
  io.ns = o.ns;
  io.deadline_ms = o.deadline_ms;
  io.flags = (o.fresh ? ENGRAM_IMPORT_FRESH : 0) | (o.skip_bad ? ENGRAM_IMPORT_SKIP_BAD : 0) |
             (o.validate_first ? ENGRAM_IMPORT_VALIDATE_FIRST : 0);
  io.progress = on_progress;
  io.progress_ud = "imported";
  if (o.n_args == 0 || strcmp(o.args[0], "-") == 0) {
    io.fd = 0;
    io.flags |= ENGRAM_TRANSFER_FD;
  } else {
    io.path = o.args[0];
    if (stat(io.path, &st) == 0) progress_total = (uint64_t)st.st_size;
  }
  show_progress = o.progress > 0 || (o.progress == 0 && isatty(2));
  if ((rc = engram_import(mgr, &io, transfer_done, "imported")) != 0) {
    fprintf(stderr, "engram import: %s (%s)\n", engram_last_error(), engram_err_name(rc));
    exit_code = rc == ENGRAM_EIO || rc == ENGRAM_EINVAL ? EXIT_DATA : EXIT_FAILED;
    done = 1;
  }
}

/* watch: the changes other processes make to the source (engram_events_watch), one line each, until SIGINT or
 * SIGTERM ends it (exit 0), or --limit N changes were printed. */
static engram_remote_watch_t *watch_handle;
static uv_signal_t watch_sigint, watch_sigterm;
static long watch_changes;

static void watch_stop(void) {
  if (watch_handle != NULL) {
    engram_remote_watch_t *w = watch_handle;
    watch_handle = NULL;
    engram_events_unwatch(w); /* END follows */
  }
}

static void on_watch_signal(uv_signal_t *h, int sig) {
  (void)h;
  (void)sig;
  watch_stop();
}

static void on_watch_event(int status, const engram_event_t *ev, void *ud) {
  (void)ud;
  if (ev->kind == ENGRAM_EVENT_END) {
    watch_handle = NULL;
    uv_close((uv_handle_t *)&watch_sigint, NULL);
    uv_close((uv_handle_t *)&watch_sigterm, NULL);
    if (status == ENGRAM_ECLOSED) call_failed(status, "the source was closed");
    done = 1;
    return;
  }
  if (o.json) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "kind", engram_event_kind_name(ev->kind));
    if (ev->source) cJSON_AddStringToObject(j, "source", ev->source);
    if (ev->ns) cJSON_AddStringToObject(j, "ns", ev->ns);
    if (ev->key) cJSON_AddStringToObject(j, "key", ev->key);
    if (ev->kind == ENGRAM_EVENT_CHANGED) cJSON_AddNumberToObject(j, "version", (double)ev->version);
    cJSON_AddNumberToObject(j, "at_ms", (double)ev->at_ms);
    print_json(j);
    cJSON_Delete(j);
  } else if (ev->kind == ENGRAM_EVENT_CHANGED) {
    printf("changed\t%s\t%s\t%" PRIu64 "\n", ev->ns, ev->key, ev->version);
  } else if (ev->kind == ENGRAM_EVENT_LIVE) {
    printf("live\t(every change from now on is printed)\n");
  } else if (ev->kind == ENGRAM_EVENT_MISSED) {
    printf("missed\t(the channel is down: changes may go unprinted until the next \"live\")\n");
  } else if (ev->kind == ENGRAM_EVENT_CLEARED) {
    printf("cleared\t(anything may have changed)\n");
  }
  fflush(stdout);
  if (ev->kind == ENGRAM_EVENT_CHANGED && o.has_limit && ++watch_changes >= o.limit) watch_stop();
}

static void cmd_watch(void) {
  int rc;
  if ((rc = engram_events_watch(mgr, o.source, on_watch_event, NULL, &watch_handle)) != 0) {
    refused(rc);
    return;
  }
  uv_signal_init(&loop, &watch_sigint);
  uv_signal_init(&loop, &watch_sigterm);
  uv_signal_start(&watch_sigint, on_watch_signal, SIGINT);
  uv_signal_start(&watch_sigterm, on_watch_signal, SIGTERM);
}

/* ---- the table of subcommands ---- */

static const command_t commands[] = {
    {"get", "get KEY", "print an item: value, metadata, timestamps, version (exit 1 when missing)", "ns", 1, 1, cmd_get},
    {"put", "put KEY VALUE|-",
     "store VALUE (JSON; text that is not JSON is stored as a string; - reads stdin)\n"
     "  --ns NS            namespace (default \"\")\n"
     "  --ttl-ms N         expire after N ms\n"
     "  --metadata JSON    a JSON object kept with the item\n"
     "  --string           store VALUE as a string even when it is JSON\n"
     "  --create-only      fail (exit 4, ENGRAM_EEXIST) when the key exists\n"
     "  --if-version N     store only when the current version is N (else ENGRAM_ECONFLICT)",
     "ns ttl-ms metadata string create-only if-version", 2, 2, cmd_put},
    {"delete", "delete KEY...", "delete keys (a missing key is not an error); prints how many existed", "ns", 1, 64,
     cmd_delete},
    {"search", "search [TEXT]",
     "ranked search in one namespace\n"
     "  --ns NS  --pattern GLOB  --filter JSON  --limit N (default 10)  --offset N  --min-score X\n"
     "  --mode text|vector|hybrid  rank by words (BM25), by meaning or by both fused (default: the source's own;\n"
     "                     vector and hybrid need a vector source, else exit 4, ENGRAM_ENOTSUP)\n"
     "  --alpha X          with --mode hybrid: fuse by weight, X (in [0, 1]) on the vector score, 1 - X on the text",
     "ns pattern filter limit offset min-score mode alpha", 0, 1, cmd_search},
    {"list", "list [PATTERN]",
     "list keys of one namespace in key order (every page unless --limit)\n"
     "  --ns NS  --limit N  --cursor CURSOR (continue a listing)\n"
     "  --prefix           --ns names a prefix: NS and every NS/... below it, in (namespace, key) order",
     "ns limit cursor prefix", 0, 1, cmd_list},
    {"count", "count [TEXT]",
     "count matching items of one namespace\n  --ns NS  --pattern GLOB  --filter JSON\n"
     "  --prefix           --ns names a prefix: NS and every NS/... below it (no TEXT then)",
     "ns pattern filter prefix", 0, 1, cmd_count},
    {"clear", "clear",
     "delete every item of a namespace; prints how many were removed\n"
     "  --ns NS            the namespace\n"
     "  --prefix           NS and every NS/... below it (\"forget this user everywhere\")\n"
     "  --all              every namespace of the source",
     "ns prefix all", 0, 0, cmd_clear},
    {"namespaces", "namespaces [PREFIX]",
     "list the namespaces holding items, ascending (every page unless --limit)\n"
     "  PREFIX             only PREFIX and the namespaces below it (PREFIX/...)\n"
     "  --depth N          cut each to its first N levels (\"/\" separates them), each listed once\n"
     "  --limit N  --cursor CURSOR (continue a listing)",
     "depth limit cursor", 0, 1, cmd_namespaces},
    {"info", "info", "the source's info (type, health, items, counters, latency)", "", 0, 0, cmd_info},
    {"sources", "sources", "the configured sources", "", 0, 0, cmd_sources},
    {"export", "export [FILE|-]",
     "write the source as JSON Lines (docs/export.md) to FILE (written whole or not at all) or stdout\n"
     "  --ns NS            one namespace only (default: every namespace)\n"
     "  --ns-prefix P      only namespaces starting with P\n"
     "  --pattern GLOB     only matching keys\n"
     "  --progress, --no-progress   a progress line on stderr (default: when stderr is a terminal)",
     "ns ns-prefix pattern progress no-progress", 0, 1, cmd_export},
    {"import", "import [FILE|-]",
     "read JSON Lines into the source, keeping versions and timestamps (stdin when no FILE)\n"
     "  --fresh            import as new writes (versions and timestamps start again)\n"
     "  --skip-bad         skip bad lines (counted) instead of stopping at the first\n"
     "  --validate-first   check every line first; write nothing unless all are good (FILE only)\n"
     "  --ns NS            put every item into NS instead of its own namespace\n"
     "  --progress, --no-progress   a progress line on stderr (default: when stderr is a terminal)",
     "ns fresh skip-bad validate-first progress no-progress", 0, 1, cmd_import},
    {"watch", "watch",
     "print the changes other processes make to the source, a line each, until interrupted (exit 0)\n"
     "  (PostgreSQL and Redis sources: their invalidation channel; others exit 4, ENGRAM_ENOTSUP)\n"
     "  --limit N          stop after N changes\n"
     "  lines: live | changed NS KEY VERSION | missed | cleared; --json: one object a line",
     "limit", 0, 0, cmd_watch},
};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

static void print_help(const command_t *c) {
  size_t i;
  if (c == NULL) {
    printf("usage: engram [--config FILE] [--source NAME] [--json] COMMAND [ARGS]\n\nCommands:\n");
    for (i = 0; i < N_COMMANDS; i++) {
      const char *nl = strchr(commands[i].summary, '\n');
      printf("  %-18s %.*s\n", commands[i].usage, nl ? (int)(nl - commands[i].summary) : (int)strlen(commands[i].summary),
             commands[i].summary);
    }
    printf("\n%s\nengram COMMAND --help describes a command. See docs/cli.md.\n", common_help);
    return;
  }
  printf("usage: engram [options] %s\n\n%s\n", c->usage, c->summary);
  if (strstr(c->options, "ns") && !strstr(c->summary, "--ns")) printf("  --ns NS            namespace (default \"\")\n");
  printf("\n%s", common_help);
}

static int takes(const command_t *c, const char *name) {
  size_t n = strlen(name);
  const char *p = c->options;
  while ((p = strstr(p, name)) != NULL) {
    if ((p == c->options || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0')) return 1;
    p += n;
  }
  return 0;
}

static long num_arg(const char *name, const char *v, long min) {
  char *end;
  long n;
  errno = 0;
  n = strtol(v, &end, 10);
  if (errno || *v == '\0' || *end != '\0' || n < min) usage_error("--%s: %s is not an integer >= %ld", name, v, min);
  return n;
}

static void parse(int argc, char **argv, const command_t **which) {
  int i, no_more = 0;
  static const char *const with_value[] = {"config", "source", "ns", "ttl-ms", "metadata", "if-version", "pattern",
                                           "filter", "limit", "offset", "min-score", "cursor", "ns-prefix",
                                           "deadline-ms", "mode", "alpha", "depth", NULL};
  static const char *const global[] = {"config", "source", "json", "help", "deadline-ms", NULL};
  const command_t *c = NULL;
  for (i = 1; i < argc; i++) {
    const char *a = argv[i], *name, *val = NULL, *eq;
    char nbuf[64];
    size_t k;
    int has_value = 0, is_global = 0;
    if (no_more || a[0] != '-' || strcmp(a, "-") == 0) {
      if (c == NULL) {
        for (k = 0; k < N_COMMANDS; k++)
          if (strcmp(commands[k].name, a) == 0) c = &commands[k];
        if (c == NULL) usage_error("unknown command '%s'", a);
        cmd = c->name;
      } else {
        if (o.n_args == 64) usage_error("too many arguments");
        o.args[o.n_args++] = a;
      }
      continue;
    }
    if (strcmp(a, "--") == 0) {
      no_more = 1;
      continue;
    }
    if (strcmp(a, "-h") == 0) a = "--help";
    if (a[1] != '-') usage_error("unknown option '%s'", a);
    name = a + 2;
    if ((eq = strchr(name, '=')) != NULL) {
      snprintf(nbuf, sizeof nbuf, "%.*s", (int)(eq - name), name);
      name = nbuf;
      val = eq + 1;
    }
    for (k = 0; with_value[k]; k++)
      if (strcmp(with_value[k], name) == 0) has_value = 1;
    for (k = 0; global[k]; k++)
      if (strcmp(global[k], name) == 0) is_global = 1;
    if (!is_global && (c == NULL || !takes(c, name)))
      usage_error(c ? "option --%s does not apply to %s" : "unknown option --%s%s", name, c ? c->name : "");
    if (has_value && val == NULL) {
      if (i + 1 >= argc) usage_error("--%s needs a value", name);
      val = argv[++i];
    } else if (!has_value && val != NULL) {
      usage_error("--%s takes no value", name);
    }
    if (!strcmp(name, "config")) o.config = val;
    else if (!strcmp(name, "source")) o.source = val;
    else if (!strcmp(name, "json")) o.json = 1;
    else if (!strcmp(name, "help")) o.help = 1;
    else if (!strcmp(name, "deadline-ms")) o.deadline_ms = (uint32_t)num_arg(name, val, 0);
    else if (!strcmp(name, "ns")) o.ns = val;
    else if (!strcmp(name, "ttl-ms")) o.has_ttl = 1, o.ttl_ms = num_arg(name, val, 0);
    else if (!strcmp(name, "metadata")) o.metadata = val;
    else if (!strcmp(name, "string")) o.string = 1;
    else if (!strcmp(name, "create-only")) o.create_only = 1;
    else if (!strcmp(name, "if-version")) o.has_if_version = 1, o.if_version = (uint64_t)num_arg(name, val, 1);
    else if (!strcmp(name, "pattern")) o.pattern = val;
    else if (!strcmp(name, "filter")) o.filter = val;
    else if (!strcmp(name, "limit")) o.has_limit = 1, o.limit = num_arg(name, val, 1);
    else if (!strcmp(name, "offset")) o.has_offset = 1, o.offset = num_arg(name, val, 0);
    else if (!strcmp(name, "min-score")) {
      char *end;
      o.has_min_score = 1;
      o.min_score = strtod(val, &end);
      if (*end != '\0' || !(o.min_score >= 0 && o.min_score <= 1)) usage_error("--min-score: must be a number in [0, 1]");
    } else if (!strcmp(name, "mode")) {
      if (!strcmp(val, "text")) o.mode = ENGRAM_MODE_TEXT;
      else if (!strcmp(val, "vector")) o.mode = ENGRAM_MODE_VECTOR;
      else if (!strcmp(val, "hybrid")) o.mode = ENGRAM_MODE_HYBRID;
      else usage_error("--mode: '%s' is not a mode (text, vector or hybrid)", val);
    } else if (!strcmp(name, "alpha")) {
      char *end;
      o.has_alpha = 1;
      o.alpha = strtod(val, &end);
      if (*val == '\0' || *end != '\0' || !(o.alpha >= 0 && o.alpha <= 1))
        usage_error("--alpha: '%s' is not a number in [0, 1]", val);
    } else if (!strcmp(name, "cursor")) o.cursor = val;
    else if (!strcmp(name, "ns-prefix")) o.ns_prefix = val;
    else if (!strcmp(name, "fresh")) o.fresh = 1;
    else if (!strcmp(name, "skip-bad")) o.skip_bad = 1;
    else if (!strcmp(name, "validate-first")) o.validate_first = 1;
    else if (!strcmp(name, "progress")) o.progress = 1;
    else if (!strcmp(name, "no-progress")) o.progress = -1;
    else if (!strcmp(name, "prefix")) o.prefix = 1;
    else if (!strcmp(name, "all")) o.all = 1;
    else if (!strcmp(name, "depth")) o.depth = num_arg(name, val, 0);
  }
  *which = c;
}

/* ---- main ---- */

static char *read_file(const char *path) {
  FILE *f = fopen(path, "rb");
  char *s;
  long n;
  if (f == NULL) return NULL;
  if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
    fclose(f);
    return NULL;
  }
  s = malloc((size_t)n + 1);
  if (s == NULL || fread(s, 1, (size_t)n, f) != (size_t)n) {
    free(s);
    fclose(f);
    return NULL;
  }
  s[n] = '\0';
  fclose(f);
  return s;
}

static int configured_status;
static char configured_message[600];
static void on_configured(int status, const engram_reply_t *reply, void *ud) {
  (void)ud;
  configured_status = status;
  snprintf(configured_message, sizeof configured_message, "%s", reply->message ? reply->message : "");
  done = 1;
}

static void on_closed(int status, const engram_reply_t *reply, void *ud) {
  (void)status;
  (void)reply;
  (void)ud;
  done = 1;
}

int main(int argc, char **argv) {
  const command_t *c = NULL;
  char *config;
  int rc;
  parse(argc, argv, &c);
  if (o.help || c == NULL) {
    print_help(c);
    return o.help ? EXIT_OK : EXIT_USAGE;
  }
  if (o.n_args < c->min_args || o.n_args > c->max_args)
    usage_error("%s takes %s%d argument%s (%s)", c->name, o.n_args < c->min_args ? "at least " : "at most ",
                o.n_args < c->min_args ? c->min_args : c->max_args,
                (o.n_args < c->min_args ? c->min_args : c->max_args) == 1 ? "" : "s", c->usage);
  if (o.skip_bad && o.validate_first) usage_error("--skip-bad and --validate-first are exclusive");
  if (o.ns && o.ns_prefix) usage_error("--ns and --ns-prefix are exclusive");
  if (o.has_alpha && o.mode != ENGRAM_MODE_HYBRID) usage_error("--alpha: weighs the two rankings of --mode hybrid only");
  if (o.mode == ENGRAM_MODE_HYBRID && o.n_args == 0) usage_error("--mode hybrid: needs TEXT (its words are ranked by BM25)");
  { /* JSON arguments are checked before a manager exists, so a usage error never leaves one open */
    cJSON *j;
    if (o.metadata) {
      j = parse_json_arg("--metadata", o.metadata);
      if (!cJSON_IsObject(j)) usage_error("--metadata: must be a JSON object");
      cJSON_Delete(j);
    }
    if (o.filter) cJSON_Delete(parse_json_arg("--filter", o.filter));
  }
  if (o.config == NULL)
    config = strdup("{\"sources\": [{\"name\": \"cache\", \"type\": \"cache\", \"description\": \"Fast temporary cache "
                    "for session data\", \"default\": true}]}");
  else if ((config = read_file(o.config)) == NULL) {
    fprintf(stderr, "engram: --config %s: %s\n", o.config, strerror(errno));
    return EXIT_CONFIG;
  }
  if (uv_loop_init(&loop) != 0 || engram_manager_new(&mgr, &loop, NULL) != 0) {
    fprintf(stderr, "engram: cannot start: %s\n", engram_last_error());
    return EXIT_FAILED;
  }
  if ((rc = engram_manager_configure(mgr, config, on_configured, NULL)) != 0) {
    fprintf(stderr, "engram: --config %s: %s (%s)\n", o.config ? o.config : "(default)", engram_last_error(),
            engram_err_name(rc));
    exit_code = EXIT_CONFIG;
  } else {
    run_loop();
    if (configured_status != 0) {
      fprintf(stderr, "engram: --config %s: %s (%s)\n", o.config ? o.config : "(default)", configured_message,
              engram_err_name(configured_status));
      exit_code = EXIT_CONFIG;
    } else {
      done = 0;
      c->run();
      run_loop();
    }
  }
  free(config);
  fflush(stdout);
  if (ferror(stdout) && exit_code == 0) {
    fprintf(stderr, "engram %s: writing the output failed\n", cmd);
    exit_code = EXIT_DATA;
  }
  done = 0;
  engram_manager_close(mgr, on_closed, NULL);
  run_loop();
  uv_run(&loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&loop) != 0) fprintf(stderr, "engram: the loop did not close cleanly\n");
  return exit_code;
}
