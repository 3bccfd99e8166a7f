/*
 * fuzz_list_keys.c — libFuzzer harness for list_keys cursors on every embedded source (cache, sqlite, vector),
 * with the cache as a differential oracle, and for the cursor codec (engram_cursor_parse / engram_cursor_encode).
 *
 * Setup, once: one manager on the harness's loop with three sources — "cache", "sqlite" (path ":memory:") and
 * "vector" (in memory, dimension 8) — holding the same keys: about 60 keys in five namespaces, chosen to stress
 * the order (prefixes of each other, glob characters, backslashes, ASCII controls and DEL, two- to four-byte
 * UTF-8 up to U+10FFFF, a 1024-byte key). Nothing is written to disk.
 *
 * Input: LIMIT \n NAMESPACE \n PATTERN \n CURSOR — a decimal limit, the namespace (bytes as they are), the
 * pattern (an empty line is NULL) and the cursor (a missing line is NULL; an empty one is ""). Asserted:
 *   - engram_list_keys returns the same code for the three sources (the core validates before any source);
 *   - once accepted, the three answer the same status and, on success, the same keys in the same order and the
 *     same cursor — page after page, following the cursor they return (up to 25 pages);
 *   - the cache also agrees with a model computed here from the key list: the keys of that namespace matching
 *     the pattern (engram_pattern_match), strictly after the cursor's (namespace, key) pair in engram_key_cmp
 *     order, the first LIMIT of them, and a cursor naming the last one exactly when more remain; a cursor that
 *     engram_cursor_parse refuses is refused by every source with ENGRAM_EINVAL;
 *   - the codec is canonical: a cursor that parses is re-encoded byte for byte; encoding any (namespace, key)
 *     within the limits and parsing the result gives them back; parse refuses what encode cannot produce.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"

static const char *const source_names[3] = {"cache", "sqlite", "vector"};
static engram_manager_t *mgr;

/* The stored (namespace, key) pairs. */
typedef struct {
  const char *ns, *key;
} pair_t;
static pair_t *pairs;
static size_t n_pairs;
static char long_key[ENGRAM_KEY_MAX + 1];

static const char *const namespaces[] = {"", "a", "a/b", "proj", "\xC3\xBCn\xC3\xAF"};
static const char *const keys[] = {
    "a", "a*", "a\\", "a\\*", "ab", "a[b]", "a?", "b", "user", "user:1", "user:2", "user:10", "user:10x", "user:9",
    "user:", "k0", "k1", "k2", "k24", "k3", "k9", "A", "Z", "~", "\x7F", "\x01k", " space", "key with space",
    "\xC3\xA9", "\xC3\xA9" "a", "caf\xC3\xA9", "z", "\xE2\x82\xAC", "\xF0\x9F\x98\x80", "\xF4\x8F\xBF\xBF",
    "\xF4\x8F\xBF\xBF" "x", "%", "_", "0:k", "1:ak", NULL /* the long key */};

static void store_all(void) {
  size_t i, j, s, n_keys = sizeof keys / sizeof *keys;
  memset(long_key, 'x', ENGRAM_KEY_MAX);
  long_key[ENGRAM_KEY_MAX] = '\0';
  pairs = calloc(n_keys * 5, sizeof *pairs);
  for (i = 0; i < sizeof namespaces / sizeof *namespaces; i++) {
    for (j = 0; j < n_keys; j++) {
      const char *k = keys[j] ? keys[j] : long_key;
      /* Every key in "" and "proj"; every other one elsewhere, so the namespaces differ. */
      if ((i != 0 && i != 3) && j % 2 == 1) continue;
      pairs[n_pairs].ns = namespaces[i];
      pairs[n_pairs].key = k;
      n_pairs++;
    }
  }
  for (s = 0; s < 3; s++) {
    for (i = 0; i < n_pairs; i++) {
      engram_opts_t o;
      fuzz_reply_t r;
      cJSON *v = cJSON_CreateObject();
      int rc;
      cJSON_AddStringToObject(v, "text", pairs[i].key);
      memset(&o, 0, sizeof o);
      o.source = source_names[s];
      o.ns = pairs[i].ns;
      memset(&r, 0, sizeof r);
      rc = engram_store(mgr, pairs[i].key, v, &o, fuzz_capture_cb, &r);
      FUZZ_CHECK(rc == 0, "store %s: %s", source_names[s], engram_last_error());
      fuzz_run_until(&r.calls, "store");
      FUZZ_CHECK(r.status == 0, "store into %s: %s", source_names[s], r.message);
      fuzz_reply_clear(&r);
      cJSON_Delete(v);
    }
  }
}

/* The manager lives for the whole process; it is closed at exit so that LeakSanitizer's final check (which runs
 * after this handler) finds every entry freed: the cache's table links entries by tagged pointers (a hash tag in
 * the top bits), which LeakSanitizer does not recognise as references, so entries still held at exit would be
 * reported as leaked (they were hidden behind the LRU list's plain pointers until that list became optional). */
static void close_at_exit(void) { fuzz_manager_close(mgr); }

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  mgr = fuzz_manager_new();
  atexit(close_at_exit);
  fuzz_add_source(mgr, "cache", &engram_source_cache, NULL, 1);
  fuzz_add_source(mgr, "sqlite", &engram_source_sqlite, "{\"path\": \":memory:\"}", 0);
  fuzz_add_source(mgr, "vector", &engram_source_vector, "{\"dimension\": 8}", 0);
  store_all();
  engram_release_thread_cache();
  return 0;
}

/* ---- The model ---- */

static int pair_cmp(const void *a, const void *b) {
  const pair_t *x = *(pair_t *const *)a, *y = *(pair_t *const *)b;
  return engram_key_cmp(x->ns, strlen(x->ns), x->key, strlen(x->key), y->ns, strlen(y->ns), y->key, strlen(y->key));
}

/* The page the model expects: keys as "ns\x1fkey" strings, and the cursor (malloc'd) or NULL. */
static cJSON *model_page(const char *ns, const char *pattern, int limit, const char *cns, size_t cns_len,
                         const char *ckey, size_t ckey_len, char **cursor) {
  pair_t **sel = calloc(n_pairs + 1, sizeof *sel);
  size_t n = 0, i;
  cJSON *out = cJSON_CreateArray();
  if (limit == 0) limit = 1000; /* list_keys' limit 0 is BeamMePrompty's default page of 1,000 */
  for (i = 0; i < n_pairs; i++) {
    const pair_t *p = &pairs[i];
    if (strcmp(p->ns, ns) != 0) continue;
    if (pattern != NULL && !engram_pattern_match(pattern, p->key, strlen(p->key))) continue;
    if (cns != NULL && engram_key_cmp(p->ns, strlen(p->ns), p->key, strlen(p->key), cns, cns_len, ckey, ckey_len) <= 0)
      continue;
    sel[n++] = &pairs[i];
  }
  qsort(sel, n, sizeof *sel, pair_cmp);
  *cursor = NULL;
  for (i = 0; i < n && i < (size_t)limit; i++) {
    size_t nl = strlen(sel[i]->ns), kl = strlen(sel[i]->key);
    char *both = malloc(nl + kl + 2);
    memcpy(both, sel[i]->ns, nl);
    both[nl] = '\x1f';
    memcpy(both + nl + 1, sel[i]->key, kl + 1);
    cJSON_AddItemToArray(out, cJSON_CreateString(both));
    free(both);
  }
  if (n > (size_t)limit && limit > 0) {
    char *c = engram_cursor_encode(sel[limit - 1]->ns, strlen(sel[limit - 1]->ns), sel[limit - 1]->key,
                                   strlen(sel[limit - 1]->key));
    *cursor = strdup(c);
    engram_free(c);
  }
  free(sel);
  return out;
}

/* ---- The codec ---- */

static void codec(const char *cursor, const char *a, const char *b) {
  const char *ns, *key;
  size_t ns_len, key_len;
  if (cursor != NULL && engram_cursor_parse(cursor, &ns, &ns_len, &key, &key_len) == 0) {
    char *again = engram_cursor_encode(ns, ns_len, key, key_len);
    FUZZ_CHECK(again != NULL && strcmp(again, cursor) == 0, "cursor \"%s\" parses but re-encodes as \"%s\"", cursor,
               again ? again : "(null)");
    FUZZ_CHECK(ns_len <= ENGRAM_NAMESPACE_MAX && key_len >= 1 && key_len <= ENGRAM_KEY_MAX &&
                   engram_utf8_valid(ns, ns_len) && engram_utf8_valid(key, key_len),
               "cursor \"%s\" parses into a pair outside the data model", cursor);
    engram_free(again);
  }
  /* (a, b) as (namespace, key): within the model's limits, encode then parse gives them back. */
  if (a != NULL && b != NULL) {
    size_t al = strlen(a), bl = strlen(b);
    int in_model = al <= ENGRAM_NAMESPACE_MAX && bl >= 1 && bl <= ENGRAM_KEY_MAX && engram_utf8_valid(a, al) &&
                   engram_utf8_valid(b, bl);
    char *c = engram_cursor_encode(a, al, b, bl);
    int rc = engram_cursor_parse(c, &ns, &ns_len, &key, &key_len);
    FUZZ_CHECK(c != NULL, "engram_cursor_encode returned NULL");
    FUZZ_CHECK((rc == 0) == in_model, "encode(\"%s\", \"%s\") = \"%s\" parses: %d, in the model: %d", a, b, c, rc,
               in_model);
    if (rc == 0)
      FUZZ_CHECK(ns_len == al && key_len == bl && memcmp(ns, a, al) == 0 && memcmp(key, b, bl) == 0,
                 "encode then parse of (\"%s\", \"%s\") gives another pair", a, b);
    engram_free(c);
  }
}

/* ---- The harness ---- */

static void list_all(const char *ns, const char *pattern, int limit, const char *cursor, int rcs[3], fuzz_reply_t r[3]) {
  size_t s;
  for (s = 0; s < 3; s++) {
    engram_opts_t o;
    memset(&o, 0, sizeof o);
    memset(&r[s], 0, sizeof r[s]);
    o.source = source_names[s];
    o.ns = ns;
    rcs[s] = engram_list_keys(mgr, pattern, limit, cursor, &o, fuzz_capture_cb, &r[s]);
  }
  for (s = 0; s < 3; s++)
    if (rcs[s] == 0) fuzz_run_until(&r[s].calls, source_names[s]);
}

static char *key_list(const cJSON *list) {
  char *s = list ? cJSON_PrintUnformatted(list) : NULL;
  return s ? s : strdup("(none)");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *buf = fuzz_cstr(data, size), *line[4] = {NULL, NULL, NULL, NULL}, *p = buf;
  const char *ns, *pattern, *cursor;
  int limit, page, i;
  char *owned_cursor = NULL;
  for (i = 0; i < 4 && p != NULL; i++) {
    char *nl;
    line[i] = p;
    if ((nl = memchr(p, '\n', (size_t)(buf + size - p))) != NULL) *nl = '\0', p = nl + 1;
    else p = NULL;
  }
  limit = (int)strtol(line[0], NULL, 10);
  ns = line[1] ? line[1] : "";
  pattern = line[2] && line[2][0] ? line[2] : NULL;
  cursor = line[3];
  codec(cursor, ns, line[2]);

  for (page = 0; page < 25; page++) {
    int rcs[3];
    fuzz_reply_t r[3];
    const char *cns = NULL, *ckey = NULL;
    size_t cns_len = 0, ckey_len = 0, s;
    int cur_ok = cursor == NULL || engram_cursor_parse(cursor, &cns, &cns_len, &ckey, &ckey_len) == 0;
    list_all(ns, pattern, limit, cursor, rcs, r);
    FUZZ_CHECK(rcs[0] == rcs[1] && rcs[0] == rcs[2], "list_keys returns %d / %d / %d (cache / sqlite / vector)", rcs[0],
               rcs[1], rcs[2]);
    if (rcs[0] != 0) break;
    for (s = 1; s < 3; s++) {
      char *a = key_list(r[0].keys), *b = key_list(r[s].keys);
      FUZZ_CHECK(r[s].status == r[0].status, "page %d: cache answers %s (%s), %s answers %s (%s)", page,
                 engram_err_name(r[0].status), r[0].message, source_names[s], engram_err_name(r[s].status), r[s].message);
      if (r[0].status == 0) {
        FUZZ_CHECK(fuzz_json_same(r[0].keys, r[s].keys), "page %d: cache lists %s, %s lists %s", page, a, source_names[s], b);
        FUZZ_CHECK((r[0].cursor == NULL) == (r[s].cursor == NULL) &&
                       (r[0].cursor == NULL || strcmp(r[0].cursor, r[s].cursor) == 0),
                   "page %d: cache's cursor \"%s\", %s's \"%s\"", page, r[0].cursor ? r[0].cursor : "(none)",
                   source_names[s], r[s].cursor ? r[s].cursor : "(none)");
      }
      free(a);
      free(b);
    }
    if (!cur_ok) {
      FUZZ_CHECK(r[0].status == ENGRAM_EINVAL, "a cursor the codec refuses (\"%s\") is answered %s", cursor,
                 engram_err_name(r[0].status));
    } else {
      char *want_cursor;
      cJSON *want = model_page(ns, pattern, limit, cns, cns_len, ckey, ckey_len, &want_cursor);
      char *a = key_list(r[0].keys), *b = key_list(want);
      FUZZ_CHECK(r[0].status == 0, "cache refuses a valid listing: %s", r[0].message);
      FUZZ_CHECK(fuzz_json_same(r[0].keys, want), "page %d: cache lists %s, the model %s", page, a, b);
      FUZZ_CHECK((r[0].cursor == NULL) == (want_cursor == NULL) &&
                     (want_cursor == NULL || strcmp(r[0].cursor, want_cursor) == 0),
                 "page %d: cache's cursor \"%s\", the model's \"%s\"", page, r[0].cursor ? r[0].cursor : "(none)",
                 want_cursor ? want_cursor : "(none)");
      free(a);
      free(b);
      free(want_cursor);
      cJSON_Delete(want);
    }
    free(owned_cursor);
    owned_cursor = r[0].status == 0 && r[0].cursor ? strdup(r[0].cursor) : NULL;
    for (s = 0; s < 3; s++) fuzz_reply_clear(&r[s]);
    if (owned_cursor == NULL) break;
    codec(owned_cursor, NULL, NULL);
    cursor = owned_cursor;
  }
  free(owned_cursor);
  free(buf);
  engram_release_thread_cache();
  return 0;
}
