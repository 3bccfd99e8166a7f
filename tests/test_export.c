/*
 * test_export.c — export and import as JSON Lines (include/engram/export.h, docs/export.md): a round trip cache →
 * JSONL → SQLite → JSONL gives byte-identical files (and on through PostgreSQL and Redis, with real servers),
 * versions, timestamps, metadata and expiry survive, one namespace or a prefix exports alone, a corrupt line is
 * reported with its number (stop, skip, or refuse everything before writing), an unwritable destination fails
 * cleanly with nothing left behind, and 200,000 items go into SQLite and out again in bounded memory (resident growth measured
 * through /proc/self/status while the transfer runs; the rates are printed).
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "engram/export.h"
#include "support/harness.h"
#include "support/json_same.h"
#include "support/pg_server.h"
#include "support/redis_server.h"
#include "support/tmp_db.h"

static tmp_db_t tmp;

typedef struct {
  int calls, status;
  engram_transfer_result_t r;
  char message[512];
} done_t;

static void done_cb(int status, const engram_transfer_result_t *r, void *ud) {
  done_t *d = ud;
  if (d->calls++) harness_stray("transfer");
  d->status = status;
  d->r = *r;
  snprintf(d->message, sizeof d->message, "%s", r->message);
  d->r.message = d->message;
}

static void add_source(ctx_t *c, const char *name, const engram_source_vtable_t *vt, const char *options) {
  result_t r = {0};
  result_reset(&r);
  assert_int_equal(engram_manager_add_source(c->mgr, name, vt, options, NULL, 0, capture_cb, &r), 0);
  wait_for(c, &r.calls, 1, 60000);
  if (r.status != 0) fail_msg("add %s: %s", name, r.message);
  result_reset(&r);
}

static char *path_in_tmp(const char *name) {
  static char buf[4][256];
  static int i;
  char *p = buf[i++ % 4];
  snprintf(p, 256, "%s/%s", tmp.dir, name);
  return p;
}

static char *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  char *s;
  long n;
  assert_non_null(f);
  fseek(f, 0, SEEK_END);
  n = ftell(f);
  fseek(f, 0, SEEK_SET);
  s = malloc((size_t)n + 1);
  assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
  s[n] = '\0';
  fclose(f);
  *len = (size_t)n;
  return s;
}

static void export_to(ctx_t *c, const char *source, const char *path, done_t *d) {
  engram_export_opts_t o;
  memset(&o, 0, sizeof o);
  memset(d, 0, sizeof *d);
  o.source = source;
  o.path = path;
  o.page = 7; /* small pages: runs of namespaces cross page boundaries */
  assert_int_equal(engram_export(c->mgr, &o, done_cb, d), 0);
  wait_for(c, &d->calls, 1, 60000);
  if (d->status != 0) fail_msg("export %s: %s", source, d->message);
}

static void import_from(ctx_t *c, const char *source, const char *path, unsigned flags, done_t *d) {
  engram_import_opts_t o;
  memset(&o, 0, sizeof o);
  memset(d, 0, sizeof *d);
  o.source = source;
  o.path = path;
  o.flags = flags;
  o.window = 16;
  assert_int_equal(engram_import(c->mgr, &o, done_cb, d), 0);
  wait_for(c, &d->calls, 1, 60000);
}

static int64_t item_int(const result_t *r, const char *field) {
  const cJSON *v = result_item(r, 0, field);
  assert_non_null(v);
  return (int64_t)v->valuedouble;
}

/* 60 items in four namespaces, with metadata, some with a TTL, some written three times (version 3). */
static void fill_cache(ctx_t *c, const char *source) {
  static const char *const nss[] = {"", "a", "a/b", "zz"};
  int i;
  for (i = 0; i < 60; i++) {
    engram_opts_t o;
    result_t r = {0};
    char key[32], val[200], meta[100];
    cJSON *m;
    int w;
    memset(&o, 0, sizeof o);
    o.source = source;
    o.ns = nss[i % 4];
    snprintf(key, sizeof key, i % 5 ? "key-%02d" : "k\"\\\n\t\x01-%02d", i);
    snprintf(val, sizeof val, "{\"a\":[1,true,null,\"x\"],\"f\":%g,\"n\":%d,\"s\":\"caf\xc3\xa9 %d\"}", i / 8.0, i, i);
    snprintf(meta, sizeof meta, "{\"i\":%d,\"tag\":\"t%d\"}", i, i % 3);
    m = J(meta);
    o.metadata = i % 7 ? m : NULL;
    if (i % 3 == 0) {
      o.flags = ENGRAM_OPT_TTL;
      o.ttl_ms = 3600 * 1000;
    }
    for (w = 0; w < (i % 4 == 1 ? 3 : 1); w++) {
      result_reset(&r);
      assert_int_equal(s_store(c, key, val, &o, &r), 0);
      result_reset(&r);
    }
    cJSON_Delete(m);
  }
}

static size_t count_lines(const char *s, size_t n) {
  size_t i, k = 0;
  for (i = 0; i < n; i++) k += s[i] == '\n';
  return k;
}

static void test_round_trip(void **state) {
  ctx_t c;
  done_t d;
  result_t r = {0};
  engram_opts_t o;
  char opts[300];
  const char *p1 = path_in_tmp("cache.jsonl"), *p2 = path_in_tmp("sqlite.jsonl");
  char *a, *b;
  size_t na, nb;
  (void)state;
  ctx_init(&c, NULL);
  add_source(&c, "cache", &engram_source_cache, NULL);
  snprintf(opts, sizeof opts, "{\"path\": \"%s\"}", tmp_db_next(&tmp));
  add_source(&c, "db", &engram_source_sqlite, opts);
  fill_cache(&c, "cache");
  export_to(&c, "cache", p1, &d);
  assert_int_equal(d.r.items, 60);
  import_from(&c, "db", p1, 0, &d);
  if (d.status != 0) fail_msg("import: %s", d.message);
  assert_int_equal(d.r.items, 60);
  assert_int_equal(d.r.lines, 60);
  export_to(&c, "db", p2, &d);
  a = slurp(p1, &na);
  b = slurp(p2, &nb);
  assert_int_equal(count_lines(a, na), 60);
  assert_int_equal(na, nb);
  assert_memory_equal(a, b, na);
  /* the first line: "" namespace, the smallest key, every member in order */
  {
    static const char first[] = "{\"key\":\"k\\\"\\\\\\n\\t\\u0001-00\",\"ns\":\"\",\"value\":{\"a\":[1,true,null,\"x\"],";
    if (strncmp(a, first, strlen(first)) != 0) fail_msg("first line: %.120s", a);
  }
  /* versions and timestamps kept: compare one item in both sources */
  memset(&o, 0, sizeof o);
  o.flags = ENGRAM_OPT_INCLUDE_METADATA;
  o.ns = "a";
  o.source = "cache";
  result_reset(&r);
  assert_int_equal(s_retrieve(&c, "key-01", &o, &r), 0);
  {
    int64_t created = item_int(&r, "created_at_ms"), updated = item_int(&r, "updated_at_ms");
    int64_t expires = item_int(&r, "expires_at_ms");
    assert_int_equal(item_int(&r, "version"), 3);
    result_reset(&r);
    o.source = "db";
    assert_int_equal(s_retrieve(&c, "key-01", &o, &r), 0);
    assert_int_equal(item_int(&r, "version"), 3);
    assert_int_equal(item_int(&r, "created_at_ms"), created);
    assert_int_equal(item_int(&r, "updated_at_ms"), updated);
    assert_int_equal(item_int(&r, "expires_at_ms"), expires);
    result_reset(&r);
  }
  /* The import handed SQLite the lines' own value text (cJSON_Raw nodes, ENGRAM_SOURCE_REPLICA_MANY): a text index
   * built before an import must still find what the import wrote. Search "zz" (its index now exists), import a
   * line whose value holds a new word, search the word. */
  {
    engram_query_t q = ENGRAM_QUERY_INIT;
    const char *pw = path_in_tmp("word.jsonl");
    FILE *f = fopen(pw, "w");
    assert_non_null(f);
    fputs("{\"key\":\"w\",\"ns\":\"zz\",\"value\":{\"s\":\"quetzalcoatl\"}}\n", f);
    fclose(f);
    memset(&o, 0, sizeof o);
    o.source = "db";
    o.ns = "zz";
    q.text = "quetzalcoatl";
    result_reset(&r);
    assert_int_equal(s_search(&c, &q, &o, &r), 0);
    assert_int_equal(r.n_items, 0);
    result_reset(&r);
    import_from(&c, "db", pw, 0, &d);
    assert_int_equal(d.status, 0);
    assert_int_equal(d.r.items, 1);
    assert_int_equal(s_search(&c, &q, &o, &r), 0);
    assert_int_equal(r.n_items, 1);
    result_reset(&r);
    assert_int_equal(s_delete(&c, "w", &o, &r), 0);
    result_reset(&r);
    memset(&o, 0, sizeof o); /* as above, for what follows */
    o.flags = ENGRAM_OPT_INCLUDE_METADATA;
    o.ns = "a";
  }
  /* importing the same file again replaces the items: still byte-identical, still version 3 */
  import_from(&c, "db", p1, 0, &d);
  assert_int_equal(d.status, 0);
  export_to(&c, "db", p2, &d);
  free(b);
  b = slurp(p2, &nb);
  assert_int_equal(na, nb);
  assert_memory_equal(a, b, na);
  /* fresh writes: the version counts on from the existing item, the timestamps are new */
  import_from(&c, "db", p1, ENGRAM_IMPORT_FRESH, &d);
  assert_int_equal(d.status, 0);
  assert_int_equal(d.r.items, 60);
  o.source = "db";
  assert_int_equal(s_retrieve(&c, "key-01", &o, &r), 0);
  assert_int_equal(item_int(&r, "version"), 4);
  result_reset(&r);
  free(a);
  free(b);
  ctx_close(&c);
}

/* One namespace; a prefix; a key pattern. */
static void test_selection(void **state) {
  ctx_t c;
  done_t d;
  engram_export_opts_t o;
  const char *p = path_in_tmp("sel.jsonl");
  char *s;
  size_t n;
  (void)state;
  ctx_init(&c, NULL);
  add_source(&c, "cache", &engram_source_cache, NULL);
  fill_cache(&c, "cache");
  memset(&o, 0, sizeof o);
  o.path = p;
  o.ns = "a";
  memset(&d, 0, sizeof d);
  assert_int_equal(engram_export(c.mgr, &o, done_cb, &d), 0);
  wait_for(&c, &d.calls, 1, 30000);
  assert_int_equal(d.status, 0);
  assert_int_equal(d.r.items, 15);
  s = slurp(p, &n);
  assert_int_equal(count_lines(s, n), 15);
  assert_non_null(strstr(s, "\"ns\":\"a\","));
  assert_null(strstr(s, "\"ns\":\"a/b\""));
  free(s);
  o.ns = NULL;
  o.ns_prefix = "a";
  memset(&d, 0, sizeof d);
  assert_int_equal(engram_export(c.mgr, &o, done_cb, &d), 0);
  wait_for(&c, &d.calls, 1, 30000);
  assert_int_equal(d.status, 0);
  assert_int_equal(d.r.items, 30);
  /* the same through a file descriptor */
  {
    const char *pfd = path_in_tmp("sel-fd.jsonl");
    int fd = open(pfd, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    char *t;
    size_t nt;
    assert_true(fd >= 0);
    o.path = NULL;
    o.flags = ENGRAM_TRANSFER_FD;
    o.fd = fd;
    memset(&d, 0, sizeof d);
    assert_int_equal(engram_export(c.mgr, &o, done_cb, &d), 0);
    wait_for(&c, &d.calls, 1, 30000);
    assert_int_equal(d.status, 0);
    close(fd);
    o.flags = 0;
    o.path = p;
    memset(&d, 0, sizeof d);
    assert_int_equal(engram_export(c.mgr, &o, done_cb, &d), 0);
    wait_for(&c, &d.calls, 1, 30000);
    s = slurp(p, &n);
    t = slurp(pfd, &nt);
    assert_int_equal(n, nt);
    assert_memory_equal(s, t, n);
    assert_int_equal(count_lines(t, nt), 30);
    free(s);
    free(t);
  }
  o.ns_prefix = NULL;
  o.pattern = "key-1*";
  memset(&d, 0, sizeof d);
  assert_int_equal(engram_export(c.mgr, &o, done_cb, &d), 0);
  wait_for(&c, &d.calls, 1, 30000);
  assert_int_equal(d.status, 0);
  assert_int_equal(d.r.items, 8); /* key-11..19 without key-15 (that one has the odd name) */
  /* argument errors: no callback */
  o.path = NULL;
  assert_int_equal(engram_export(c.mgr, &o, done_cb, &d), ENGRAM_EINVAL);
  o.path = p;
  o.file = stdout;
  assert_int_equal(engram_export(c.mgr, &o, done_cb, &d), ENGRAM_EINVAL);
  o.file = NULL;
  o.ns = "a";
  o.ns_prefix = "a";
  assert_int_equal(engram_export(c.mgr, &o, done_cb, &d), ENGRAM_EINVAL);
  o.ns_prefix = NULL;
  o.source = "nope";
  assert_int_equal(engram_export(c.mgr, &o, done_cb, &d), ENGRAM_EUNKNOWN_SOURCE);
  run_barrier(&c);
  assert_int_equal(d.calls, 1);
  ctx_close(&c);
}

typedef struct {
  char *buf;
  size_t len, cap;
} growbuf_t;

static int to_grow(const char *data, size_t len, void *ud) {
  growbuf_t *m = ud;
  if (m->len + len + 1 > m->cap) {
    size_t cap = m->cap ? m->cap * 2 : 65536;
    char *nb;
    while (cap < m->len + len + 1) cap *= 2;
    if ((nb = realloc(m->buf, cap)) == NULL) return -1;
    m->buf = nb;
    m->cap = cap;
  }
  memcpy(m->buf + m->len, data, len);
  m->len += len;
  m->buf[m->len] = '\0';
  return 0;
}

/* Exports source with one selection to memory: page (0 = the default), one namespace or a prefix, a pattern. */
static size_t export_sel(ctx_t *c, const char *source, int page, const char *ns, const char *prefix,
                         const char *pattern, char **out) {
  engram_export_opts_t o;
  done_t d;
  growbuf_t m;
  memset(&o, 0, sizeof o);
  memset(&d, 0, sizeof d);
  memset(&m, 0, sizeof m);
  o.source = source;
  o.page = page;
  o.ns = ns;
  o.ns_prefix = prefix;
  o.pattern = pattern;
  o.write = to_grow;
  o.write_ud = &m;
  assert_int_equal(engram_export(c->mgr, &o, done_cb, &d), 0);
  wait_for(c, &d.calls, 1, 60000);
  if (d.status != 0) fail_msg("export %s: %s", source, d.message);
  assert_int_equal(count_lines(m.buf ? m.buf : "", m.len), d.r.items);
  *out = m.buf;
  return m.len;
}

/* SQLite answers an export with pages of whole items (ENGRAM_SOURCE_LIST_ITEMS: one range scan a page), the cache
 * too, from its key-ordered listing (it answered with keys and retrieve_many before; PostgreSQL and Redis still do,
 * test_servers): the same items give the same bytes through both, for every selection, with
 * pages that end inside a namespace and at the prefix's end (7 items), one page per 2,000 items (the default), and
 * a namespace prefix whose namespaces are followed by others in the same page. Counts are checked against the
 * numbers the fill made, so a page lost or printed twice fails. */
static void test_sqlite_pages_match_the_key_path(void **state) {
  static const char *const nss[] = {"", "a", "a/b", "ab", "b"}; /* 900 items each */
  static const struct {
    const char *ns, *prefix, *pattern;
    size_t items;
  } sel[] = {{NULL, NULL, NULL, 4500}, {"a", NULL, NULL, 900},    {NULL, "a", NULL, 2700},
             {NULL, "a/", NULL, 900}, {NULL, NULL, "k1*", 555}, {NULL, "b", "k2*", 111}};
  const int pages[] = {7, 0, 1000};
  ctx_t c;
  char opts[300];
  int i, k, pg;
  (void)state;
  ctx_init(&c, NULL);
  add_source(&c, "cache", &engram_source_cache, NULL);
  snprintf(opts, sizeof opts, "{\"path\": \"%s\"}", tmp_db_next(&tmp));
  add_source(&c, "db", &engram_source_sqlite, opts);
  for (k = 0; k < 2; k++)
    for (i = 0; i < 4500; i++) {
      engram_opts_t o;
      result_t r = {0};
      char key[32], val[64];
      memset(&o, 0, sizeof o);
      o.source = k ? "db" : "cache";
      o.ns = nss[i % 5];
      snprintf(key, sizeof key, "k%d", i / 5);
      snprintf(val, sizeof val, "{\"i\":%d,\"s\":\"v%d\"}", i, i);
      assert_int_equal(s_store(&c, key, val, &o, &r), 0);
      result_reset(&r);
    }
  /* both sources' items have the same versions; their timestamps differ, so compare lines without them */
  for (pg = 0; pg < 3; pg++)
    for (i = 0; i < (int)(sizeof sel / sizeof sel[0]); i++) {
      char *a, *b, *p;
      size_t na, nb, lines;
      na = export_sel(&c, "cache", pages[pg], sel[i].ns, sel[i].prefix, sel[i].pattern, &a);
      nb = export_sel(&c, "db", pages[pg], sel[i].ns, sel[i].prefix, sel[i].pattern, &b);
      lines = count_lines(b ? b : "", nb);
      if (lines != sel[i].items)
        fail_msg("selection %d, page %d: sqlite exported %zu items, want %zu", i, pages[pg], lines, sel[i].items);
      assert_int_equal(count_lines(a ? a : "", na), sel[i].items);
      for (p = a; p != NULL && (p = strstr(p, "\"created_at_ms\":")) != NULL;) { /* blank the timestamps */
        char *e = strstr(p, ",\"version\"");
        memset(p, ' ', (size_t)(e - p));
        p = e;
      }
      for (p = b; p != NULL && (p = strstr(p, "\"created_at_ms\":")) != NULL;) {
        char *e = strstr(p, ",\"version\"");
        memset(p, ' ', (size_t)(e - p));
        p = e;
      }
      assert_int_equal(na, nb);
      assert_memory_equal(a, b, na);
      free(a);
      free(b);
    }
  ctx_close(&c);
}

/* An export from the cache while the table changes under it (the cache's listing, docs/export.md "Consistency"):
 * between pages (from the progress callback, on the home loop) new keys go in — 15,000 of them, so the table
 * doubles twice and rehashes while the export walks — items present from the start are replaced, and others are
 * deleted; once every item present from the start is replaced at once, so many that the cache drops its listing
 * and the export's next page rebuilds it. Every item present for the whole export must appear exactly once (with
 * the value it had when it was printed), and no key twice; a second export then lists exactly what is there. */
typedef struct {
  ctx_t *c;
  int calls, writes, written;
} churn_t;

static void churn_cb(int status, const engram_reply_t *reply, void *ud) {
  churn_t *ch = ud;
  (void)reply;
  if (status != 0) fail_msg("a write during the export failed: %s", engram_err_name(status));
  ch->written++;
}

static void churn_write(churn_t *ch, const char *ns, const char *key, int del) {
  engram_opts_t o;
  cJSON *v = cJSON_CreateNumber(ch->calls);
  memset(&o, 0, sizeof o);
  o.source = "cache";
  o.ns = ns;
  if (del) assert_int_equal(engram_delete(ch->c->mgr, key, &o, churn_cb, ch), 0);
  else assert_int_equal(engram_store(ch->c->mgr, key, v, &o, churn_cb, ch), 0);
  cJSON_Delete(v);
  ch->writes++;
}

static void churn_progress(const engram_transfer_progress_t *p, void *ud) {
  churn_t *ch = ud;
  char key[32];
  int i, k = ch->calls++;
  (void)p;
  if (k >= 50) return;
  for (i = 0; i < 300; i++) { /* new keys all over the key order: the table grows */
    snprintf(key, sizeof key, "%c%07d", "agtz"[i % 4], k * 300 + i);
    churn_write(ch, i % 2 ? "n2" : "", key, 0);
  }
  for (i = 0; i < 20; i++) { /* deletes */
    snprintf(key, sizeof key, "d%05d", k * 20 + i);
    churn_write(ch, "", key, 1);
  }
  for (i = 0; i < 40; i++) { /* replacements of items present from the start */
    snprintf(key, sizeof key, "s%05d", (k * 97 + i * 31) % 2000);
    churn_write(ch, i % 2 ? "n2" : "", key, 0);
  }
  if (k == 5) /* every one of them at once: more replaced items than the listing keeps */
    for (i = 0; i < 4000; i++) {
      snprintf(key, sizeof key, "s%05d", i / 2);
      churn_write(ch, i % 2 ? "n2" : "", key, 0);
    }
}

static char names[30000][24];
static int cmp_name(const void *a, const void *b) { return strcmp(a, b); }

static void test_cache_export_while_writing(void **state) {
  ctx_t c;
  churn_t ch;
  engram_export_opts_t o;
  done_t d;
  growbuf_t m;
  char *line, *next, *seen;
  size_t lines = 0, stable = 0;
  int i, round;
  (void)state;
  ctx_init(&c, NULL);
  add_source(&c, "cache", &engram_source_cache, NULL);
  for (i = 0; i < 5000; i++) { /* s00000..s01999 in "" and "n2", d00000..d00999 in "" */
    result_t r = {0};
    char key[32];
    engram_opts_t so;
    memset(&so, 0, sizeof so);
    so.source = "cache";
    so.ns = i < 4000 && i % 2 ? "n2" : "";
    if (i < 4000) snprintf(key, sizeof key, "s%05d", i / 2);
    else snprintf(key, sizeof key, "d%05d", i - 4000);
    assert_int_equal(s_store(&c, key, "\"start\"", &so, &r), 0);
    result_reset(&r);
  }
  seen = calloc(4000, 1);
  for (round = 0; round < 2; round++) {
    memset(&ch, 0, sizeof ch);
    ch.c = &c;
    memset(&o, 0, sizeof o);
    memset(&d, 0, sizeof d);
    memset(&m, 0, sizeof m);
    o.source = "cache";
    o.page = 50;
    o.progress_every = 25;
    o.progress = round == 0 ? churn_progress : NULL;
    o.progress_ud = &ch;
    o.write = to_grow;
    o.write_ud = &m;
    assert_int_equal(engram_export(c.mgr, &o, done_cb, &d), 0);
    wait_for(&c, &d.calls, 1, 120000);
    if (d.status != 0) fail_msg("export: %s", d.message);
    wait_for(&c, &ch.written, ch.writes, 60000);
    if (round == 0) assert_true(ch.calls >= 50); /* the writes really came between pages */
    memset(seen, 0, 4000);
    lines = stable = 0;
    for (line = m.buf; line != NULL && *line != '\0'; line = next) {
      cJSON *j, *k, *ns;
      next = strchr(line, '\n');
      assert_non_null(next);
      *next++ = '\0';
      j = cJSON_Parse(line);
      assert_non_null(j);
      k = cJSON_GetObjectItem(j, "key");
      ns = cJSON_GetObjectItem(j, "ns");
      if (lines < sizeof names / sizeof names[0]) snprintf(names[lines], sizeof names[0], "%s\x01%s", ns->valuestring, k->valuestring);
      if (k->valuestring[0] == 's' && strlen(k->valuestring) == 6) { /* s00000..s01999: present from the start */
        int idx = atoi(k->valuestring + 1) * 2 + (ns->valuestring[0] != '\0');
        if (seen[idx]++) fail_msg("round %d: %s/%s exported twice", round, ns->valuestring, k->valuestring);
        stable++;
      }
      lines++;
      cJSON_Delete(j);
    }
    assert_int_equal(stable, 4000); /* every item present for the whole export, exactly once */
    assert_true(lines <= sizeof names / sizeof names[0]);
    qsort(names, lines, sizeof names[0], cmp_name);
    for (i = 1; i < (int)lines; i++)
      if (strcmp(names[i - 1], names[i]) == 0) fail_msg("round %d: %s exported twice", round, names[i]);
    assert_int_equal(lines, d.r.items);
    if (round == 1) assert_int_equal(lines, 4000 + 50 * 300 + 1000 - 50 * 20); /* all there is, nothing twice */
    free(m.buf);
  }
  free(seen);
  ctx_close(&c);
}

/* The shared printer finds a string's plain runs 8 bytes at a time (src/shared/json_print.c, plain_run): every
 * character that needs an escape ('"', '\\', each control character) and a few that do not (' ', 0x7f, 0x80, 0xff,
 * '!', '#', '[', ']'), at every position of strings of 1..40 bytes, before, inside and after whole words, alone and
 * next to another: printed byte for byte as cJSON_PrintUnformatted prints them. */
static void test_printer_string_runs(void **state) {
  static const unsigned char specials[] = {'"', '\\', 1, 8, 9, 10, 12, 13, 31, 0x1f, ' ', 0x7f, 0x80, 0xff, '!', '#', '[', ']'};
  char s[64], *buf = NULL;
  size_t cap = 0, len, n, pos, k;
  (void)state;
  for (n = 1; n <= 40; n++)
    for (pos = 0; pos < n; pos++)
      for (k = 0; k < sizeof specials; k++) {
        cJSON *str;
        char *want;
        memset(s, 'a' + (int)(n % 26), n);
        s[n] = '\0';
        s[pos] = (char)specials[k];
        if (pos + 9 < n) s[pos + 9] = '"';
        str = cJSON_CreateString(s);
        assert_non_null(str);
        want = cJSON_PrintUnformatted(str);
        assert_int_equal(engram_json_print(str, &buf, &cap, &len), 0);
        if (len != strlen(want) || memcmp(buf, want, len) != 0)
          fail_msg("length %zu, byte 0x%02x at %zu: printed %s, cJSON prints %s", n, specials[k], pos, buf, want);
        cJSON_free(want);
        cJSON_Delete(str);
      }
  engram_free(buf);
}

static void write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
}

static uint64_t s_count_ns(ctx_t *c, const char *source) {
  engram_opts_t o;
  engram_query_t q = ENGRAM_QUERY_INIT;
  result_t r = {0};
  uint64_t n;
  memset(&o, 0, sizeof o);
  o.source = source;
  result_reset(&r);
  assert_int_equal(s_count(c, &q, &o, &r), 0);
  n = r.count;
  result_reset(&r);
  return n;
}

static void test_corrupt_lines(void **state) {
  ctx_t c;
  done_t d;
  const char *p = path_in_tmp("bad.jsonl");
  (void)state;
  write_file(p, "{\"key\":\"a\",\"value\":1}\n"
                "\n"
                "{\"key\":\"b\",\"value\":{\"x\":[1,2]},\"metadata\":{\"t\":1},\"version\":5}\n"
                "{\"key\":\"c\",\"value\":2,\n"
                "{\"key\":\"d\",\"value\":3}\n");
  ctx_init(&c, NULL);
  add_source(&c, "c1", &engram_source_cache, NULL);
  add_source(&c, "c2", &engram_source_cache, NULL);
  add_source(&c, "c3", &engram_source_cache, NULL);
  /* default: stops at line 4, after lines 1 and 3 were written */
  import_from(&c, "c1", p, 0, &d);
  assert_int_equal(d.status, ENGRAM_EINVAL);
  assert_int_equal(d.r.bad_line, 4);
  assert_non_null(strstr(d.message, "line 4"));
  assert_int_equal(d.r.items, 2);
  assert_int_equal(s_count_ns(&c, "c1"), 2);
  /* validate first: nothing written */
  import_from(&c, "c2", p, ENGRAM_IMPORT_VALIDATE_FIRST, &d);
  assert_int_equal(d.status, ENGRAM_EINVAL);
  assert_int_equal(d.r.bad_line, 4);
  assert_non_null(strstr(d.message, "line 4"));
  assert_int_equal(d.r.items, 0);
  assert_int_equal(s_count_ns(&c, "c2"), 0);
  /* skip: three written, one counted */
  import_from(&c, "c3", p, ENGRAM_IMPORT_SKIP_BAD, &d);
  assert_int_equal(d.status, 0);
  assert_int_equal(d.r.items, 3);
  assert_int_equal(d.r.bad_lines, 1);
  assert_int_equal(d.r.bad_line, 4);
  assert_int_equal(d.r.skipped, 1);
  assert_int_equal(d.r.lines, 5);
  assert_int_equal(s_count_ns(&c, "c3"), 3);
  /* the same into SQLite, which takes the lines in batches (one store_many of replicas, ENGRAM_SOURCE_REPLICA_MANY):
   * the lines read into a batch before the bad one are still written, and the line numbers are the same */
  {
    char opts[300];
    snprintf(opts, sizeof opts, "{\"path\": \"%s\"}", tmp_db_next(&tmp));
    add_source(&c, "s1", &engram_source_sqlite, opts);
    snprintf(opts, sizeof opts, "{\"path\": \"%s\"}", tmp_db_next(&tmp));
    add_source(&c, "s3", &engram_source_sqlite, opts);
    import_from(&c, "s1", p, 0, &d);
    assert_int_equal(d.status, ENGRAM_EINVAL);
    assert_int_equal(d.r.bad_line, 4);
    assert_non_null(strstr(d.message, "line 4"));
    assert_int_equal(d.r.items, 2);
    assert_int_equal(s_count_ns(&c, "s1"), 2);
    import_from(&c, "s3", p, ENGRAM_IMPORT_SKIP_BAD, &d);
    assert_int_equal(d.status, 0);
    assert_int_equal(d.r.items, 3);
    assert_int_equal(d.r.bad_line, 4);
    assert_int_equal(d.r.skipped, 1);
    assert_int_equal(s_count_ns(&c, "s3"), 3);
  }
  /* a wrong member type, an unknown member, a member twice, a missing value, a bad key, invalid UTF-8 */
  {
    static const char *const bad[] = {
        "{\"key\":\"a\",\"value\":1,\"version\":0}",   "{\"key\":\"a\",\"value\":1,\"version\":1.5}",
        "{\"key\":\"a\",\"value\":1,\"extra\":1}",     "{\"key\":\"a\",\"value\":1,\"value\":2}",
        "{\"key\":\"a\"}",                             "{\"key\":\"\",\"value\":1}",
        "{\"key\":\"a\\u0000b\",\"value\":1}",         "{\"key\":\"\xff\",\"value\":1}",
        "{\"key\":\"a\",\"value\":1,\"metadata\":[1]}", "[1]",
        "{\"key\":\"a\",\"value\":1,\"expires_at_ms\":-1}"};
    size_t i;
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
      char text[200];
      snprintf(text, sizeof text, "{\"key\":\"ok\",\"value\":1}\n%s\n", bad[i]);
      write_file(p, text);
      import_from(&c, "c2", p, ENGRAM_IMPORT_VALIDATE_FIRST, &d);
      if (d.status != ENGRAM_EINVAL || d.r.bad_line != 2) fail_msg("bad line %zu (%s) gave %d: %s", i, bad[i], d.status, d.message);
    }
    assert_int_equal(s_count_ns(&c, "c2"), 0);
  }
  /* an over-long line */
  {
    engram_import_opts_t o;
    write_file(p, "{\"key\":\"a\",\"value\":\"0123456789012345678901234567890123456789\"}\n{\"key\":\"b\",\"value\":1}\n");
    memset(&o, 0, sizeof o);
    memset(&d, 0, sizeof d);
    o.source = "c2";
    o.path = p;
    o.max_line_bytes = 30;
    o.flags = ENGRAM_IMPORT_SKIP_BAD;
    assert_int_equal(engram_import(c.mgr, &o, done_cb, &d), 0);
    wait_for(&c, &d.calls, 1, 30000);
    assert_int_equal(d.status, 0);
    assert_int_equal(d.r.bad_line, 1);
    assert_int_equal(d.r.items, 1);
  }
  ctx_close(&c);
}

static int refuse_write(const char *data, size_t len, void *ud) {
  (void)data;
  (void)len;
  (void)ud;
  return -1;
}

static size_t dir_entries(const char *dir) {
  DIR *d = opendir(dir);
  struct dirent *e;
  size_t n = 0;
  assert_non_null(d);
  while ((e = readdir(d)) != NULL) n += e->d_name[0] != '.';
  closedir(d);
  return n;
}

static void test_unwritable(void **state) {
  ctx_t c;
  done_t d;
  engram_export_opts_t o;
  engram_import_opts_t io;
  FILE *full;
  size_t before;
  (void)state;
  ctx_init(&c, NULL);
  add_source(&c, "cache", &engram_source_cache, NULL);
  fill_cache(&c, "cache");
  memset(&o, 0, sizeof o);
  memset(&d, 0, sizeof d);
  o.path = "/nonexistent-engram-dir/out.jsonl";
  assert_int_equal(engram_export(c.mgr, &o, done_cb, &d), ENGRAM_EIO);
  assert_non_null(strstr(engram_last_error(), "/nonexistent-engram-dir/out.jsonl"));
  /* a writer that fails: EIO in the callback */
  o.path = NULL;
  o.write = refuse_write;
  assert_int_equal(engram_export(c.mgr, &o, done_cb, &d), 0);
  wait_for(&c, &d.calls, 1, 30000);
  assert_int_equal(d.status, ENGRAM_EIO);
  /* a full disk (/dev/full) through a FILE* */
  full = fopen("/dev/full", "w");
  if (full != NULL) {
    memset(&d, 0, sizeof d);
    o.write = NULL;
    o.file = full;
    assert_int_equal(engram_export(c.mgr, &o, done_cb, &d), 0);
    wait_for(&c, &d.calls, 1, 30000);
    assert_int_equal(d.status, ENGRAM_EIO);
    assert_non_null(strstr(d.message, "No space"));
    fclose(full);
  }
  /* a path whose export fails midway (the source is removed under it): the temporary file is gone and the path
   * never appears. The removal is a control request the home loop takes in its poll phase, while a home-loop
   * actor runs at most `batch` (256) of the export's calls per loop turn: an export of 2,000 keys a page at a time
   * (4,000 calls) cannot end before the removal lands, whatever the machine's speed. */
  add_source(&c, "big", &engram_source_cache, NULL);
  {
    static engram_entry_t e[2000];
    static char keys[2000][16];
    cJSON *v = J("{\"x\": 1}");
    result_t r = {0};
    engram_opts_t so;
    size_t i;
    memset(&so, 0, sizeof so);
    so.source = "big";
    for (i = 0; i < 2000; i++) {
      memset(&e[i], 0, sizeof e[i]);
      snprintf(keys[i], sizeof keys[i], "big-%04zu", i);
      e[i].key = keys[i];
      e[i].value = v;
    }
    result_reset(&r);
    assert_int_equal(engram_store_many(c.mgr, e, 2000, &so, capture_cb, &r), 0);
    wait_for(&c, &r.calls, 1, 30000);
    assert_int_equal(r.status, 0);
    assert_int_equal((int)r.count, 2000);
    result_reset(&r);
    cJSON_Delete(v);
  }
  before = dir_entries(tmp.dir);
  memset(&o, 0, sizeof o);
  memset(&d, 0, sizeof d);
  o.path = path_in_tmp("never.jsonl");
  o.source = "big";
  o.page = 1;
  assert_int_equal(engram_export(c.mgr, &o, done_cb, &d), 0);
  assert_int_equal(dir_entries(tmp.dir), before + 1); /* the temporary file */
  {
    result_t r = {0};
    result_reset(&r);
    assert_int_equal(engram_manager_remove_source(c.mgr, "big", capture_cb, &r), 0);
    wait_for(&c, &r.calls, 1, 30000);
    result_reset(&r);
  }
  wait_for(&c, &d.calls, 1, 30000);
  assert_int_not_equal(d.status, 0);
  assert_true(d.r.items < 2000);
  assert_int_equal(dir_entries(tmp.dir), before);
  assert_int_equal(access(o.path, F_OK), -1);
  /* import: a missing file, a pipe with VALIDATE_FIRST */
  memset(&io, 0, sizeof io);
  io.path = "/nonexistent-engram-dir/in.jsonl";
  assert_int_equal(engram_import(c.mgr, &io, done_cb, &d), ENGRAM_EIO);
  {
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    io.path = NULL;
    io.fd = fds[0];
    io.flags = ENGRAM_TRANSFER_FD | ENGRAM_IMPORT_VALIDATE_FIRST;
    assert_int_equal(engram_import(c.mgr, &io, done_cb, &d), ENGRAM_EINVAL);
    close(fds[0]);
    close(fds[1]);
  }
  ctx_close(&c);
}

/* A source that cannot keep versions: refused before anything is written, unless FRESH. */
static void test_no_replica(void **state) {
  ctx_t c;
  done_t d;
  const char *p = path_in_tmp("vec.jsonl");
  (void)state;
  write_file(p, "{\"key\":\"a\",\"value\":\"hello world\"}\n");
  ctx_init(&c, NULL);
  add_source(&c, "vec", &engram_source_vector, "{\"dimension\": 16}");
  import_from(&c, "vec", p, 0, &d);
  assert_int_equal(d.status, ENGRAM_ENOTSUP);
  assert_int_equal(d.r.items, 0);
  import_from(&c, "vec", p, ENGRAM_IMPORT_FRESH, &d);
  assert_int_equal(d.status, 0);
  assert_int_equal(d.r.items, 1);
  import_from(&c, "nope", p, 0, &d);
  assert_int_equal(d.status, ENGRAM_EUNKNOWN_SOURCE);
  assert_int_equal(d.r.lines, 0);
  ctx_close(&c);
}

/* ---- the line printer prints values exactly as cJSON_PrintUnformatted does ---- */

typedef struct {
  char buf[4096];
  size_t len;
} membuf_t;

static int to_mem(const char *data, size_t len, void *ud) {
  membuf_t *m = ud;
  if (m->len + len >= sizeof m->buf) return -1;
  memcpy(m->buf + m->len, data, len);
  m->len += len;
  m->buf[m->len] = '\0';
  return 0;
}

/* Exports one namespace of source into m (reset first). */
static void export_ns(ctx_t *c, const char *source, const char *ns, membuf_t *m) {
  engram_export_opts_t eo;
  done_t d;
  memset(&eo, 0, sizeof eo);
  memset(&d, 0, sizeof d);
  m->len = 0;
  m->buf[0] = '\0';
  eo.source = source;
  eo.ns = ns;
  eo.write = to_mem;
  eo.write_ud = m;
  assert_int_equal(engram_export(c->mgr, &eo, done_cb, &d), 0);
  wait_for(c, &d.calls, 1, 60000);
  if (d.status != 0) fail_msg("export of %s, namespace %s: %s (%s)", source, ns, engram_err_name(d.status), d.message);
}

/* Every value prints as engram_json_print prints it — byte for byte cJSON_PrintUnformatted's text wherever cJSON
 * prints the numbers exactly, and numbers that read back as the same double where cJSON's would not — from the
 * cache (trees) and from SQLite (its stored text handed over as is when it is in that form, ENGRAM_REQ_JSON_TEXT,
 * else parsed and printed); each line's value parses back to the tree stored, to the bit. */
static void test_printer(void **state) {
  static const char *const values[] = {
      "{\"n\":[0,-0.0,7,-7,12345,0.1,1.5,-2.25,1e300,-1e-300,123456789012345678,999999999999999,1000000000000000,"
      "4503599627370497,3.141592653589793,1e15,2e-7]}",
      "[\"\\u0001\\b\\f\\n\\r\\t\\\"\\\\/ caf\xc3\xa9 \xf0\x9f\x98\x80\",{},[],{\"\":null},[[true,false]]]",
      "\"just a string\"", "42", "-0.5", "null", "true", "{\"a\":{\"b\":{\"c\":[1,{\"d\":\"e\"}]}}}",
      "[-1,0,2147483648,-2147483649,100000000000000,-999999999999999]",
      /* cJSON 1.7.15 prints these one unit in the last place off ("0.3", "8.88888888888889e+36"): the fuzzer's find */
      "[0.30000000000000004,8888888888888888888888888888888888882,{\"x\":-0.30000000000000004}]"};
  static const size_t lossy_in_cjson = 9;
  static const char *const sources[] = {"mem", "sq"};
  char opts[300];
  ctx_t c;
  size_t i, k;
  (void)state;
  ctx_init(&c, NULL);
  add_source(&c, "mem", &engram_source_cache, NULL);
  snprintf(opts, sizeof opts, "{\"path\": \"%s\"}", tmp_db_next(&tmp));
  add_source(&c, "sq", &engram_source_sqlite, opts);
  for (k = 0; k < 2; k++)
    for (i = 0; i < sizeof values / sizeof values[0]; i++) {
      engram_opts_t o;
      result_t r = {0};
      membuf_t m;
      const char *text = values[i];
      cJSON *v = J(text), *meta = J("{\"x\":0.3,\"y\":-12,\"z\":\"\\u007f\"}"), *line, *got;
      char *vs = engram_json_print_text(v), *ms = engram_json_print_text(meta), *cj = cJSON_PrintUnformatted(v);
      char want[2048], ns[16], *at;
      assert_non_null(vs);
      if (i == lossy_in_cjson) assert_string_not_equal(vs, cj);
      else assert_string_equal(vs, cj);
      snprintf(ns, sizeof ns, "p%zu", i); /* one item a namespace: each export sees its own */
      memset(&o, 0, sizeof o);
      memset(&m, 0, sizeof m);
      o.source = sources[k];
      o.ns = ns;
      o.metadata = meta;
      result_reset(&r);
      assert_int_equal(s_store(&c, "k", text, &o, &r), 0);
      result_reset(&r);
      export_ns(&c, sources[k], ns, &m);
      snprintf(want, sizeof want, "{\"key\":\"k\",\"ns\":\"%s\",\"value\":%s,\"metadata\":%s,\"created_at_ms\":", ns,
               vs, ms);
      if (strncmp(m.buf, want, strlen(want)) != 0) fail_msg("%s: line\n%s\nwant a start of\n%s", sources[k], m.buf, want);
      at = strstr(m.buf, ",\"version\":1}\n");
      assert_non_null(at);
      assert_string_equal(at, ",\"version\":1}\n");
      line = cJSON_Parse(m.buf);
      got = cJSON_GetObjectItemCaseSensitive(line, "value");
      if (got == NULL || !json_same_value(v, got)) fail_msg("%s: the line's value does not read back as stored: %s", sources[k], m.buf);
      cJSON_Delete(line);
      engram_free(vs);
      engram_free(ms);
      cJSON_free(cj);
      cJSON_Delete(v);
      cJSON_Delete(meta);
    }
  ctx_close(&c);
}

/* Rows another program wrote into the SQLite table, in forms cJSON would not print (spaces, a fraction written
 * 1.0, escapes it would not write, a 16-digit integer, -0), export as cJSON prints their parse — not as stored —
 * and text that cJSON does print the same way as stored; a row whose text is not JSON is left out. */
static void test_sqlite_text_as_cjson_prints_it(void **state) {
  static const char *const stored[][2] = {
      {" {\"a\" : 1.0, \"b\":\"\\u00e9\\/\", \"c\":[ 1 ,2]} ", "{\"a\":1,\"b\":\"\xc3\xa9/\",\"c\":[1,2]}"},
      {"[1234567890123456,-0,1E2,\"\\u001F\\u0008\"]", NULL},
      {"{\"x\":[true,false,null,\"\\u001f\\\"\"],\"y\":{}}", "{\"x\":[true,false,null,\"\\u001f\\\"\"],\"y\":{}}"},
  };
  const char *path = tmp_db_next(&tmp);
  char opts[300], sql[512], want[512];
  ctx_t c;
  sqlite3 *db;
  size_t i;
  (void)state;
  ctx_init(&c, NULL);
  snprintf(opts, sizeof opts, "{\"path\": \"%s\"}", path);
  add_source(&c, "sq", &engram_source_sqlite, opts);
  assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
  sqlite3_busy_timeout(db, 10000);
  for (i = 0; i < sizeof stored / sizeof stored[0]; i++) {
    engram_opts_t o;
    result_t r = {0};
    membuf_t m;
    char ns[16], *text;
    cJSON *parsed;
    snprintf(ns, sizeof ns, "q%zu", i);
    memset(&o, 0, sizeof o);
    memset(&m, 0, sizeof m);
    o.source = "sq";
    o.ns = ns;
    assert_int_equal(s_store(&c, "k", "0", &o, &r), 0);
    result_reset(&r);
    text = sqlite3_mprintf("UPDATE engram_items SET value = %Q WHERE namespace = %Q AND key = 'k'", stored[i][0], ns);
    snprintf(sql, sizeof sql, "%s", text);
    sqlite3_free(text);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    export_ns(&c, "sq", ns, &m);
    parsed = cJSON_Parse(stored[i][0]);
    assert_non_null(parsed);
    text = cJSON_PrintUnformatted(parsed);
    if (stored[i][1] != NULL) assert_string_equal(text, stored[i][1]); /* the test's own expectation holds */
    snprintf(want, sizeof want, "{\"key\":\"k\",\"ns\":\"%s\",\"value\":%s,\"metadata\":null,", ns, text);
    if (strncmp(m.buf, want, strlen(want)) != 0) fail_msg("line\n%s\nwant a start of\n%s", m.buf, want);
    cJSON_free(text);
    cJSON_Delete(parsed);
  }
  /* Not JSON: the row is left out (retrieve_many reports it as that key's error, and the export writes only the
   * items that were read), as before the stored text was handed over. */
  assert_int_equal(sqlite3_exec(db, "UPDATE engram_items SET value = '{\"a\":' WHERE namespace = 'q0'", NULL, NULL, NULL),
                   SQLITE_OK);
  {
    engram_export_opts_t eo;
    done_t d;
    membuf_t m;
    memset(&eo, 0, sizeof eo);
    memset(&d, 0, sizeof d);
    memset(&m, 0, sizeof m);
    eo.source = "sq";
    eo.ns = "q0";
    eo.write = to_mem;
    eo.write_ud = &m;
    assert_int_equal(engram_export(c.mgr, &eo, done_cb, &d), 0);
    wait_for(&c, &d.calls, 1, 60000);
    assert_int_equal(d.status, 0);
    assert_int_equal(d.r.items, 0);
    assert_int_equal(m.len, 0);
  }
  sqlite3_close(db);
  ctx_close(&c);
}

/* ---- 200,000 items in bounded memory ---- */

static long rss_kb(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long kb = -1;
  if (f == NULL) return -1;
  while (fgets(line, sizeof line, f))
    if (strncmp(line, "VmRSS:", 6) == 0) kb = atol(line + 6);
  fclose(f);
  return kb;
}

static long peak_kb;
static void sample_rss(const engram_transfer_progress_t *p, void *ud) {
  long kb = rss_kb();
  (void)p;
  (void)ud;
  if (kb > peak_kb) peak_kb = kb;
}

/* 200,000 items; ENGRAM_TEST_EXPORT_ITEMS=1000000 runs the million by hand (too slow for the suite). */
static int big_n(void) {
  const char *e = getenv("ENGRAM_TEST_EXPORT_ITEMS");
  return e && atoi(e) > 0 ? atoi(e) : 200000;
}
#define BIG_N big_n()
/* AddressSanitizer keeps freed memory in quarantine (256 MiB), so resident size says nothing under it. */
#if defined(__SANITIZE_ADDRESS__)
#define RSS_BOUND(kb) ((void)(kb))
#else
#define RSS_BOUND(kb) assert_true((kb) < 64 * 1024)
#endif

static void test_big(void **state) {
  ctx_t c;
  done_t d;
  const char *pin = path_in_tmp("big-in.jsonl"), *pout = path_in_tmp("big-out.jsonl");
  char opts[300];
  FILE *f;
  int i;
  long base;
  uint64_t t0;
  double secs;
  engram_import_opts_t io;
  engram_export_opts_t eo;
  char *a, *b;
  size_t na, nb;
  (void)state;
  f = fopen(pin, "w");
  assert_non_null(f);
  for (i = 0; i < BIG_N; i++)
    fprintf(f,
            "{\"key\":\"item-%07d\",\"ns\":\"bulk\",\"value\":{\"n\":%d,\"text\":\"the quick brown fox jumps over the "
            "lazy dog %d\"},\"metadata\":{\"i\":%d},\"created_at_ms\":1700000000000,\"updated_at_ms\":1700000000%03d,"
            "\"expires_at_ms\":0,\"version\":%d}\n",
            i, i, i, i, i % 1000, 1 + i % 5);
  fclose(f);
  ctx_init(&c, NULL);
  snprintf(opts, sizeof opts, "{\"path\": \"%s\", \"synchronous\": \"normal\"}", tmp_db_next(&tmp));
  add_source(&c, "db", &engram_source_sqlite, opts);
  /* import into SQLite (the export code is the same whatever the source; the cache's own listing sorts its whole
   * key set for every page, which makes a 200,000-item cache export too slow for the suite under load) */
  memset(&io, 0, sizeof io);
  memset(&d, 0, sizeof d);
  io.source = "db";
  io.path = pin;
  io.progress = sample_rss;
  io.progress_every = 5000;
  base = peak_kb = rss_kb();
  t0 = uv_hrtime();
  assert_int_equal(engram_import(c.mgr, &io, done_cb, &d), 0);
  wait_for(&c, &d.calls, 1, BIG_N <= 200000 ? 120000 : 900000);
  secs = (double)(uv_hrtime() - t0) / 1e9;
  if (d.status != 0) fail_msg("import: %s", d.message);
  assert_int_equal(d.r.items, BIG_N);
  sample_rss(NULL, NULL);
  printf("# import into sqlite: %d items in %.2f s (%.0f items/s), resident growth %ld KiB\n", BIG_N, secs,
         BIG_N / secs, peak_kb - base);
  RSS_BOUND(peak_kb - base);
  /* export from SQLite: byte-identical to the input (it was written in export form and key order) */
  memset(&eo, 0, sizeof eo);
  memset(&d, 0, sizeof d);
  eo.source = "db";
  eo.path = pout;
  eo.progress = sample_rss;
  eo.progress_every = 5000;
  base = peak_kb = rss_kb();
  t0 = uv_hrtime();
  assert_int_equal(engram_export(c.mgr, &eo, done_cb, &d), 0);
  wait_for(&c, &d.calls, 1, BIG_N <= 200000 ? 120000 : 900000);
  secs = (double)(uv_hrtime() - t0) / 1e9;
  assert_int_equal(d.status, 0);
  assert_int_equal(d.r.items, BIG_N);
  sample_rss(NULL, NULL);
  printf("# export from sqlite: %d items in %.2f s (%.0f items/s), resident growth %ld KiB\n", BIG_N, secs,
         BIG_N / secs, peak_kb - base);
  RSS_BOUND(peak_kb - base);
  a = slurp(pin, &na);
  b = slurp(pout, &nb);
  assert_int_equal(na, nb);
  assert_memory_equal(a, b, na);
  free(b);
  free(a);
  unlink(pin);
  unlink(pout);
  ctx_close(&c);
}

#if ENGRAM_WITH_POSTGRES && ENGRAM_WITH_REDIS
/* cache → sqlite → postgres → redis, each exported: byte-identical (values whose object members are already in
 * jsonb's order: PostgreSQL's jsonb sorts them by length, then bytes). */
static void test_servers(void **state) {
  ctx_t c;
  done_t d;
  char opts[400];
  const char *p[4] = {path_in_tmp("s-cache.jsonl"), path_in_tmp("s-sqlite.jsonl"), path_in_tmp("s-pg.jsonl"),
                      path_in_tmp("s-redis.jsonl")};
  char *a, *b;
  size_t na, nb;
  int i;
  (void)state;
  if (pg_server_start() != 0) fail_msg("cannot start PostgreSQL");
  if (redis_server_start(0) <= 0) fail_msg("cannot start redis-server");
  ctx_init(&c, NULL);
  add_source(&c, "cache", &engram_source_cache, NULL);
  snprintf(opts, sizeof opts, "{\"path\": \"%s\"}", tmp_db_next(&tmp));
  add_source(&c, "db", &engram_source_sqlite, opts);
  snprintf(opts, sizeof opts, "{" PG_TEST_CONNECT_TIMEOUT ", \"conninfo\": \"%s\", \"table\": \"%s\"}", pg_server_conninfo(), unique_name("exp"));
  add_source(&c, "pg", &engram_source_postgres, opts);
  snprintf(opts, sizeof opts, "{" REDIS_TEST_CONNECT_TIMEOUT ", \"url\": \"redis://127.0.0.1:%d\", \"prefix\": \"%s:\"}", redis_server_port(),
           unique_name("exp"));
  add_source(&c, "redis", &engram_source_redis, opts);
  fill_cache(&c, "cache");
  export_to(&c, "cache", p[0], &d);
  import_from(&c, "db", p[0], 0, &d);
  assert_int_equal(d.status, 0);
  export_to(&c, "db", p[1], &d);
  import_from(&c, "pg", p[1], 0, &d);
  if (d.status != 0) fail_msg("import into postgres: %s", d.message);
  export_to(&c, "pg", p[2], &d);
  import_from(&c, "redis", p[2], 0, &d);
  if (d.status != 0) fail_msg("import into redis: %s", d.message);
  export_to(&c, "redis", p[3], &d);
  a = slurp(p[0], &na);
  for (i = 1; i < 4; i++) {
    b = slurp(p[i], &nb);
    if (na != nb || memcmp(a, b, na) != 0) fail_msg("export %d differs from the cache's", i);
    free(b);
  }
  free(a);
  ctx_close(&c);
}
#endif

/* ---- a manager on its own thread, every callback through a completion queue polled here ---- */

static uv_thread_t poller;
static atomic_int cq_added, cq_done, cq_wrong_thread, cq_writes, cq_progress_calls;
static int cq_status;
static engram_transfer_result_t cq_result;
static FILE *cq_out;

static void on_added(int status, const engram_reply_t *reply, void *ud) {
  (void)ud;
  if (status != 0) fprintf(stderr, "add: %s\n", reply->message);
  atomic_fetch_add(&cq_added, status == 0 ? 1 : 1000);
}

static void check_thread(void) {
  uv_thread_t self = uv_thread_self();
  if (!uv_thread_equal(&self, &poller)) atomic_fetch_add(&cq_wrong_thread, 1);
}

static void cq_progress(const engram_transfer_progress_t *p, void *ud) {
  (void)p;
  (void)ud;
  check_thread();
  atomic_fetch_add(&cq_progress_calls, 1);
}

static int cq_write(const char *data, size_t len, void *ud) {
  (void)ud;
  check_thread();
  atomic_fetch_add(&cq_writes, 1);
  return fwrite(data, 1, len, cq_out) == len ? 0 : -1;
}

static void cq_final(int status, const engram_transfer_result_t *r, void *ud) {
  (void)ud;
  check_thread();
  cq_status = status;
  cq_result = *r;
  cq_result.message = "";
  if (status != 0) fprintf(stderr, "transfer: %s\n", r->message);
  atomic_fetch_add(&cq_done, 1);
}

static void cq_wait(engram_cq_t *cq, atomic_int *counter, int want) {
  uint64_t end = uv_hrtime() + 60 * (uint64_t)1000000000;
  while (atomic_load(counter) < want && uv_hrtime() < end) {
    if (cq != NULL) engram_cq_poll(cq, 0);
    sleep_ms(1);
  }
  if (atomic_load(counter) < want) fail_msg("waited 60 s for %d (have %d)", want, atomic_load(counter));
}

static void test_completion_queue(void **state) {
  engram_manager_t *mgr;
  engram_cq_t *cq;
  engram_import_opts_t io;
  engram_export_opts_t eo;
  const char *pin = path_in_tmp("cq-in.jsonl"), *pout = path_in_tmp("cq-out.jsonl");
  char opts[300], *a, *b;
  size_t na, nb;
  FILE *f;
  int i;
  (void)state;
  f = fopen(pin, "w");
  assert_non_null(f);
  for (i = 0; i < 3000; i++)
    fprintf(f, "{\"key\":\"k%05d\",\"ns\":\"n%d\",\"value\":[%d],\"metadata\":null,\"created_at_ms\":5,"
               "\"updated_at_ms\":6,\"expires_at_ms\":0,\"version\":7}\n", i, i / 1000, i);
  fclose(f);
  poller = uv_thread_self();
  atomic_store(&cq_added, 0);
  atomic_store(&cq_done, 0);
  atomic_store(&cq_wrong_thread, 0);
  atomic_store(&cq_writes, 0);
  atomic_store(&cq_progress_calls, 0);
  assert_int_equal(engram_manager_new(&mgr, NULL, NULL), 0);
  assert_int_equal(engram_cq_new(&cq, NULL), 0);
  snprintf(opts, sizeof opts, "{\"path\": \"%s\"}", tmp_db_next(&tmp));
  assert_int_equal(engram_manager_add_source(mgr, "db", &engram_source_sqlite, opts, NULL, 0, on_added, NULL), 0);
  cq_wait(NULL, &cq_added, 1);
  assert_int_equal(atomic_load(&cq_added), 1);
  memset(&io, 0, sizeof io);
  io.path = pin;
  io.cq = cq;
  io.progress = cq_progress;
  io.progress_every = 500;
  assert_int_equal(engram_import(mgr, &io, cq_final, NULL), 0);
  cq_wait(cq, &cq_done, 1);
  assert_int_equal(cq_status, 0);
  assert_int_equal(cq_result.items, 3000);
  assert_true(atomic_load(&cq_progress_calls) >= 6); /* every 500 items, and at the end */
  cq_out = fopen(pout, "w");
  assert_non_null(cq_out);
  memset(&eo, 0, sizeof eo);
  eo.write = cq_write;
  eo.cq = cq;
  eo.page = 700;
  eo.progress = cq_progress;
  eo.progress_every = 500;
  assert_int_equal(engram_export(mgr, &eo, cq_final, NULL), 0);
  cq_wait(cq, &cq_done, 2);
  fclose(cq_out);
  assert_int_equal(cq_status, 0);
  assert_int_equal(cq_result.items, 3000);
  assert_true(atomic_load(&cq_writes) >= 1);
  assert_int_equal(atomic_load(&cq_wrong_thread), 0);
  a = slurp(pin, &na);
  b = slurp(pout, &nb);
  assert_int_equal(na, nb);
  assert_memory_equal(a, b, na);
  free(a);
  free(b);
  assert_int_equal(engram_manager_shutdown(mgr), 0);
  assert_int_equal(engram_cq_poll(cq, 0), 0);
  engram_cq_free(cq);
}

static int setup(void **state) {
  (void)state;
  return tmp_db_open(&tmp, "engram_export");
}

static int teardown(void **state) {
  (void)state;
  tmp_db_close(&tmp);
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_round_trip), cmocka_unit_test(test_selection), cmocka_unit_test(test_corrupt_lines),
      cmocka_unit_test(test_unwritable), cmocka_unit_test(test_no_replica), cmocka_unit_test(test_printer), cmocka_unit_test(test_sqlite_text_as_cjson_prints_it), cmocka_unit_test(test_sqlite_pages_match_the_key_path), cmocka_unit_test(test_cache_export_while_writing),
      cmocka_unit_test(test_printer_string_runs),
      cmocka_unit_test(test_big),
      cmocka_unit_test(test_completion_queue),
#if ENGRAM_WITH_POSTGRES && ENGRAM_WITH_REDIS
      cmocka_unit_test(test_servers),
#endif
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
