/*
 * fuzz_config.c — libFuzzer harness for the JSON configuration of a manager (src/manager/config.c and the option
 * checks of the in-process source types): engram_manager_configure on a fresh manager on the harness's loop,
 * the loop run until its callback, then the manager closed.
 *
 * Input: a configuration document, {"sources": [...]} or a bare array. Only in-process types run: before the
 * document is handed over, every "type" string "postgres" or "redis" anywhere in it becomes "cache", and every
 * "path" string other than ":memory:" and "" becomes a file name inside a private directory made with mkdtemp
 * under $TMPDIR (or /tmp), emptied after every input and removed at exit — so nothing connects anywhere and
 * nothing is written outside that directory. A document the harness did not have to change is handed over as
 * the raw input bytes (so cJSON's parser, trailing text and environment references "${NAME}" see exactly what
 * was fuzzed); a changed one is printed back with cJSON. Asserted:
 *   - engram_manager_configure returns 0 or ENGRAM_EINVAL; a refusal leaves a message in engram_last_error() and
 *     never calls back;
 *   - an accepted call calls back exactly once; a failure has a message;
 *   - then engram_manager_list_sources lists exactly the document's sources, by name and in order, when the
 *     configuration succeeded (at most as many when it failed part way), with exactly one default when there
 *     is any source;
 *   - the manager closes cleanly, nothing is left on the loop, and ASan/UBSan/LeakSanitizer see nothing.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz_common.h"

static char tmpdir[512];
static unsigned n_paths;

static void empty_tmpdir(void) {
  DIR *d = opendir(tmpdir);
  struct dirent *e;
  char path[1024];
  if (d == NULL) return;
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    snprintf(path, sizeof path, "%s/%s", tmpdir, e->d_name);
    unlink(path);
  }
  closedir(d);
}

static void remove_tmpdir(void) {
  empty_tmpdir();
  rmdir(tmpdir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  const char *t = getenv("TMPDIR");
  (void)argc, (void)argv;
  snprintf(tmpdir, sizeof tmpdir, "%s/engram-fuzz-config-XXXXXX", t && t[0] ? t : "/tmp");
  if (mkdtemp(tmpdir) == NULL) abort();
  atexit(remove_tmpdir);
  return 0;
}

/* Makes the document safe to run; returns non-zero when it changed anything. */
static int sanitize(cJSON *node) {
  cJSON *c;
  int changed = 0;
  for (c = node ? node->child : NULL; c != NULL; c = c->next) {
    if (c->string != NULL && cJSON_IsString(c) && c->valuestring != NULL) {
      if (strcmp(c->string, "type") == 0 &&
          (strcmp(c->valuestring, "postgres") == 0 || strcmp(c->valuestring, "redis") == 0)) {
        cJSON_SetValuestring(c, "cache");
        changed = 1;
      } else if (strcmp(c->string, "path") == 0 && strcmp(c->valuestring, ":memory:") != 0 && c->valuestring[0] != '\0') {
        char path[600], *copy;
        snprintf(path, sizeof path, "%s/f%u.db", tmpdir, n_paths++);
        /* cJSON_SetValuestring only shrinks in cJSON 1.7.15: replace the buffer. */
        if ((copy = cJSON_malloc(strlen(path) + 1)) == NULL) abort();
        strcpy(copy, path);
        cJSON_free(c->valuestring);
        c->valuestring = copy;
        changed = 1;
      }
    }
    changed |= sanitize(c);
  }
  return changed;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *raw = fuzz_cstr(data, size), *printed = NULL;
  const char *text = raw;
  cJSON *doc = cJSON_ParseWithOpts(raw, NULL, 1), *arr = NULL;
  engram_manager_t *m;
  fuzz_reply_t r, ls;
  int rc;

  n_paths = 0;
  /* A text the harness cannot parse goes as it is — engram's parser refuses it too — unless it names what the
   * harness would have to rewrite (belt and braces: such a text never reaches the manager unchecked). */
  if (doc == NULL && (strstr(raw, "path") || strstr(raw, "postgres") || strstr(raw, "redis") || strchr(raw, '\\'))) {
    free(raw);
    return 0;
  }
  if (doc != NULL && sanitize(doc)) {
    if ((printed = cJSON_PrintUnformatted(doc)) == NULL) abort();
    text = printed;
  }
  if (doc != NULL) arr = cJSON_IsArray(doc) ? doc : cJSON_GetObjectItemCaseSensitive(doc, "sources");

  m = fuzz_manager_new();
  memset(&r, 0, sizeof r);
  rc = engram_manager_configure(m, text, fuzz_capture_cb, &r);
  FUZZ_CHECK(rc == 0 || rc == ENGRAM_EINVAL, "engram_manager_configure returned %s (%s)", engram_err_name(rc),
             engram_last_error());
  if (rc != 0) {
    FUZZ_CHECK(engram_last_error()[0] != '\0', "a refused configuration left no message");
    FUZZ_CHECK(r.calls == 0, "a refused configuration called back");
  } else {
    FUZZ_CHECK(r.calls == 0, "the callback ran inside engram_manager_configure");
    fuzz_run_until(&r.calls, "engram_manager_configure");
    FUZZ_CHECK(r.op == ENGRAM_OP_CONFIGURE, "reply->op is %d", (int)r.op);
    if (r.status != 0) FUZZ_CHECK(r.message[0] != '\0', "configuration failed (%s) without a message", engram_err_name(r.status));
  }

  /* The sources there are now. */
  memset(&ls, 0, sizeof ls);
  FUZZ_CHECK(engram_manager_list_sources(m, NULL, fuzz_capture_cb, &ls) == 0, "list_sources: %s", engram_last_error());
  fuzz_run_until(&ls.calls, "list_sources");
  FUZZ_CHECK(ls.status == 0 && cJSON_IsArray(ls.info), "list_sources answered %s", engram_err_name(ls.status));
  {
    int n = cJSON_GetArraySize(ls.info), defaults = 0, i = 0;
    const cJSON *s, *want = arr ? arr->child : NULL;
    if (rc != 0) FUZZ_CHECK(n == 0, "a refused configuration added %d sources", n);
    if (rc == 0 && r.status == 0) FUZZ_CHECK(n == cJSON_GetArraySize(arr), "%d sources configured, %d listed",
                                             cJSON_GetArraySize(arr), n);
    if (rc == 0 && r.status != 0) FUZZ_CHECK(n <= cJSON_GetArraySize(arr), "a failed configuration added %d of %d", n,
                                             cJSON_GetArraySize(arr));
    cJSON_ArrayForEach(s, ls.info) {
      const cJSON *name = cJSON_GetObjectItemCaseSensitive(s, "name");
      const cJSON *want_name = cJSON_GetObjectItemCaseSensitive(want, "name");
      defaults += cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(s, "default"));
      FUZZ_CHECK(cJSON_IsString(name) && cJSON_IsString(want_name) && strcmp(name->valuestring, want_name->valuestring) == 0,
                 "source %d is listed as \"%s\", the document names \"%s\"", i,
                 cJSON_IsString(name) ? name->valuestring : "?", cJSON_IsString(want_name) ? want_name->valuestring : "?");
      want = want ? want->next : NULL;
      i++;
    }
    FUZZ_CHECK(n == 0 || defaults == 1, "%d sources with %d defaults", n, defaults);
  }
  fuzz_reply_clear(&ls);
  fuzz_reply_clear(&r);

  fuzz_manager_close(m);
  empty_tmpdir();
  cJSON_Delete(doc);
  cJSON_free(printed);
  free(raw);
  return 0;
}
