/* hello — the README's twenty-line example: a cache source, one store, one retrieve, close. */
#include <engram.h>
#include <stdio.h>
#include <uv.h>

static void on_closed(int status, const engram_reply_t *r, void *ud) { printf("closed: %s\n", engram_err_name(status)); }
static void on_retrieved(int status, const engram_reply_t *r, void *mgr) {
  char *s = status == 0 ? cJSON_PrintUnformatted(r->items[0].value) : NULL;
  printf("retrieve: %s %s\n", engram_err_name(status), s ? s : r->message);
  cJSON_free(s);
  engram_manager_close(mgr, on_closed, NULL);
}
static void on_stored(int status, const engram_reply_t *r, void *mgr) {
  printf("store: %s, version %llu\n", engram_err_name(status), (unsigned long long)r->items[0].version);
  engram_retrieve(mgr, "user:42", NULL, on_retrieved, mgr);
}
static void on_added(int status, const engram_reply_t *r, void *mgr) {
  cJSON *v = cJSON_Parse("{\"name\": \"Ada\", \"likes\": [\"math\"]}");
  engram_store(mgr, "user:42", v, NULL, on_stored, mgr); /* the value is copied: free it now */
  cJSON_Delete(v);
}
int main(void) {
  engram_manager_t *mgr;
  engram_manager_new(&mgr, uv_default_loop(), NULL);
  engram_manager_add_source(mgr, "cache", &engram_source_cache, NULL, "fast cache", 1, on_added, mgr);
  return uv_run(uv_default_loop(), UV_RUN_DEFAULT);
}
