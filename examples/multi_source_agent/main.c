/*
 * multi_source_agent — one agent, several named memory sources, configured from JSON as BeamMePrompty's
 * `memory do ... memory_source ... end` block: a `session` cache and an `archive` SQLite file (the default),
 * plus `team` (PostgreSQL) and `shared` (Redis) when ENGRAM_PG_URL / ENGRAM_REDIS_URL are set.
 *
 * It shows how calls are routed: a call that names no source goes to the default; opts.source names one;
 * engram_manager_set_default_source moves the default; engram_manager_remove_source on the default makes the
 * next source (in the order added) the default, and a call naming a removed source is refused at once with
 * ENGRAM_EUNKNOWN_SOURCE; the memory tools route by their memory_source argument and memory_list_sources
 * tells the model which sources there are. Each step prints what it did and what came back.
 *
 * Usage: multi_source_agent [--config FILE]   (default examples/multi_source_agent/config.json; the SQLite file
 *        lives in a temporary directory removed at the end)
 */
#include <engram.h>
#include <engram/tools.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

static uv_loop_t *loop;
static engram_manager_t *mgr;
static int problems;

typedef struct {
  int pending;
  int status;
  char message[512];
  char *text; /* the value as JSON, a tool result, or the list of sources */
} result_t;

static void on_result(int status, const engram_reply_t *reply, void *ud) {
  result_t *r = ud;
  r->status = status;
  snprintf(r->message, sizeof r->message, "%s", reply->message ? reply->message : "");
  free(r->text);
  r->text = NULL;
  if (reply->text) r->text = strdup(reply->text);
  else if (reply->info) r->text = cJSON_PrintUnformatted(reply->info);
  else if (status == 0 && reply->n_items == 1 && reply->items[0].value) r->text = cJSON_PrintUnformatted(reply->items[0].value);
  r->pending = 0;
}

/* Submits with the given call's return code, then runs the loop until the callback ran. */
static int finish(int rc, result_t *r, const char *what) {
  if (rc != 0) {
    printf("  %-44s refused at once: %s (%s)\n", what, engram_err_name(rc), engram_last_error());
    return rc;
  }
  while (r->pending) uv_run(loop, UV_RUN_ONCE);
  printf("  %-44s %s %s\n", what, r->status == 0 ? "→" : engram_err_name(r->status),
         r->status == 0 ? (r->text ? r->text : "ok") : r->message);
  return r->status;
}

static int store(const char *source, const char *key, const char *json) {
  result_t r = {1, 0, "", NULL};
  engram_opts_t o = {0};
  cJSON *v = cJSON_Parse(json);
  char what[128];
  int rc;
  o.source = source;
  snprintf(what, sizeof what, "store %s = %s on %s", key, json, source ? source : "(default)");
  rc = finish(engram_store(mgr, key, v, &o, on_result, &r), &r, what);
  cJSON_Delete(v);
  free(r.text);
  return rc;
}

/* Retrieves key from source (NULL = the default) and checks the value is the expected one. */
static void retrieve(const char *source, const char *key, const char *expect) {
  result_t r = {1, 0, "", NULL};
  engram_opts_t o = {0};
  char what[128];
  o.source = source;
  snprintf(what, sizeof what, "retrieve %s from %s", key, source ? source : "(default)");
  if (finish(engram_retrieve(mgr, key, &o, on_result, &r), &r, what) == 0 && expect && (!r.text || strcmp(r.text, expect))) {
    printf("  !! expected %s\n", expect);
    problems++;
  }
  free(r.text);
}

static void list_sources(const char *why) {
  result_t r = {1, 0, "", NULL};
  cJSON *arr, *s;
  if (engram_manager_list_sources(mgr, NULL, on_result, &r) != 0) {
    problems++;
    return;
  }
  while (r.pending) uv_run(loop, UV_RUN_ONCE);
  printf("  sources (%s):", why);
  arr = cJSON_Parse(r.text);
  cJSON_ArrayForEach(s, arr) {
    printf(" %s%s", cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(s, "name")),
           cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(s, "default")) ? "*" : "");
  }
  printf("   (* = default)\n");
  cJSON_Delete(arr);
  free(r.text);
}

static void tool(const char *name, const char *args) {
  result_t r = {1, 0, "", NULL};
  char what[160];
  snprintf(what, sizeof what, "tool %s %s", name, args);
  printf("  %s\n", what);
  if (engram_tools_call(mgr, name, args, NULL, on_result, &r) != 0) {
    problems++;
    return;
  }
  while (r.pending) uv_run(loop, UV_RUN_ONCE);
  printf("    → %s\n", r.text ? r.text : "(no result)");
  free(r.text);
}

/* The config file plus the optional sources whose environment variable is set (as the agent_memory demo). */
static char *load_config(const char *path, char names[][ENGRAM_SOURCE_NAME_MAX + 1], int *n_names) {
  FILE *f = fopen(path, "rb");
  char buf[1 << 16];
  size_t n;
  cJSON *doc, *sources, *opt, *e;
  char *out;
  if (f == NULL) {
    fprintf(stderr, "multi_source_agent: cannot read %s (run from the repository root or pass --config)\n", path);
    exit(1);
  }
  n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  if ((doc = cJSON_Parse(buf)) == NULL || !cJSON_IsArray(sources = cJSON_GetObjectItemCaseSensitive(doc, "sources"))) {
    fprintf(stderr, "multi_source_agent: %s: malformed configuration\n", path);
    exit(1);
  }
  opt = cJSON_DetachItemFromObjectCaseSensitive(doc, "optional_sources");
  cJSON_ArrayForEach(e, opt) {
    const char *var = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e, "when_env"));
    const char *val = var ? getenv(var) : NULL;
    if (val && val[0]) cJSON_AddItemToArray(sources, cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(e, "source"), 1));
  }
  cJSON_Delete(opt);
  *n_names = 0;
  cJSON_ArrayForEach(e, sources) snprintf(names[(*n_names)++], ENGRAM_SOURCE_NAME_MAX + 1, "%s",
                                          cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e, "name")));
  out = cJSON_PrintUnformatted(doc);
  cJSON_Delete(doc);
  return out;
}

static void on_closed(int status, const engram_reply_t *reply, void *ud) {
  (void)reply;
  *(int *)ud = status;
}

int main(int argc, char **argv) {
  const char *config_path = "examples/multi_source_agent/config.json";
  char dir[] = "/tmp/engram-agent.XXXXXX", db[64], names[8][ENGRAM_SOURCE_NAME_MAX + 1], *config;
  int n_names, rc, closed = 1;
  result_t r = {1, 0, "", NULL};
  if (argc == 3 && strcmp(argv[1], "--config") == 0) config_path = argv[2];
  else if (argc != 1) {
    fprintf(stderr, "usage: multi_source_agent [--config FILE]\n");
    return 2;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (mkdtemp(dir) == NULL) return 1;
  setenv("ENGRAM_AGENT_DIR", dir, 1); /* ${ENGRAM_AGENT_DIR} in the configuration */
  config = load_config(config_path, names, &n_names);

  loop = uv_default_loop();
  engram_manager_new(&mgr, loop, NULL);
  printf("1. configure from %s\n", config_path);
  if ((rc = finish(engram_manager_configure(mgr, config, on_result, &r), &r, "engram_manager_configure")) != 0) return 1;
  free(config);
  list_sources("as configured: \"default\": true marks archive");

  printf("\n2. routing: no source = the default; opts.source names one\n");
  store(NULL, "goal", "\"ship the release\"");
  store("session", "goal", "\"answer the user's question\"");
  retrieve(NULL, "goal", "\"ship the release\"");
  retrieve("archive", "goal", "\"ship the release\"");
  retrieve("session", "goal", "\"answer the user's question\"");
  for (int i = 0; i < n_names; i++) {
    if (strcmp(names[i], "session") == 0 || strcmp(names[i], "archive") == 0) continue;
    store(names[i], "goal", "\"keep the team informed\"");
    retrieve(names[i], "goal", "\"keep the team informed\"");
  }

  printf("\n3. engram_manager_set_default_source(\"session\")\n");
  rc = engram_manager_set_default_source(mgr, "session");
  printf("  set_default_source → %s\n", engram_err_name(rc));
  list_sources("after set_default_source");
  retrieve(NULL, "goal", "\"answer the user's question\"");
  rc = engram_manager_set_default_source(mgr, "nowhere");
  printf("  set_default_source(\"nowhere\") → %s\n", engram_err_name(rc));
  if (rc != ENGRAM_EUNKNOWN_SOURCE) problems++;

  printf("\n4. the memory tools route by memory_source\n");
  tool("memory_list_sources", "{}");
  tool("memory_store", "{\"key\": \"user:name\", \"value\": \"Ada\", \"memory_source\": \"archive\"}");
  tool("memory_retrieve", "{\"key\": \"user:name\"}");
  tool("memory_retrieve", "{\"key\": \"user:name\", \"memory_source\": \"archive\"}");
  tool("memory_search", "{\"query\": \"release\", \"memory_source\": \"archive\"}");

  printf("\n5. engram_manager_remove_source(\"session\"): the default falls back to the next source added\n");
  r = (result_t){1, 0, "", NULL};
  finish(engram_manager_remove_source(mgr, "session", on_result, &r), &r, "remove_source session");
  free(r.text);
  list_sources("after remove_source");
  retrieve(NULL, "goal", "\"ship the release\"");
  retrieve("session", "goal", NULL); /* refused at once: ENGRAM_EUNKNOWN_SOURCE */
  if (strcmp(engram_last_error(), "") == 0) problems++;
  tool("memory_retrieve", "{\"key\": \"goal\", \"memory_source\": \"session\"}");
  tool("memory_list_sources", "{}");

  /* Leave the shared servers as we found them. */
  for (int i = 0; i < n_names; i++) {
    engram_opts_t o = {0};
    if (strcmp(names[i], "session") == 0 || strcmp(names[i], "archive") == 0) continue;
    o.source = names[i];
    r = (result_t){1, 0, "", NULL};
    finish(engram_delete(mgr, "goal", &o, on_result, &r), &r, "delete goal (cleanup)");
    free(r.text);
  }

  engram_manager_close(mgr, on_closed, &closed);
  uv_run(loop, UV_RUN_DEFAULT);
  rc = uv_loop_close(loop);
  snprintf(db, sizeof db, "%s/archive.db", dir);
  unlink(db);
  snprintf(db, sizeof db, "%s/archive.db-wal", dir);
  unlink(db);
  snprintf(db, sizeof db, "%s/archive.db-shm", dir);
  unlink(db);
  rmdir(dir);
  printf("\nclosed: %s; %d problem(s)\n", engram_err_name(closed), problems);
  return closed == 0 && rc == 0 && problems == 0 ? 0 : 1;
}
