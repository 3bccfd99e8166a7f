/*
 * custom_source — a minimal complete backend, the one docs/writing-a-source.md walks through: a fixed-size
 * array of items on the home loop implementing only the six required methods. The core emulates everything
 * else (store_many, update, count, clear, ...). The program adds it to a manager and exercises it.
 */
#include <engram.h>
#include <engram/source.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

#define CAP 64

typedef struct {
  char key[ENGRAM_KEY_MAX + 1], ns[ENGRAM_NAMESPACE_MAX + 1];
  cJSON *value;
  uint64_t version;
  int64_t expires_at_ms;
} slot_t;

typedef struct {
  slot_t slots[CAP];
} mini_t;

static slot_t *find(mini_t *m, engram_request_t *req, const char *key) {
  int64_t now = engram_now_ms();
  for (int i = 0; i < CAP; i++) {
    slot_t *s = &m->slots[i];
    if (s->value == NULL || strcmp(s->key, key) || strcmp(s->ns, req->ns)) continue;
    if (s->expires_at_ms && s->expires_at_ms <= now) { /* expired: remove on read */
      cJSON_Delete(s->value);
      s->value = NULL;
      return NULL;
    }
    return s;
  }
  return NULL;
}

static void mini_open(engram_source_t *src, const cJSON *options) { engram_source_opened(src, 0, NULL); }

static void mini_store(engram_source_t *src, engram_request_t *req) {
  mini_t *m = engram_source_state(src);
  slot_t *s = find(m, req, req->key);
  engram_item_t it = {0};
  if (s && (req->flags & ENGRAM_OPT_CREATE_ONLY)) return engram_request_fail(req, ENGRAM_EEXIST, "key '%s' exists", req->key);
  if (req->if_version && (!s || s->version != req->if_version)) return engram_request_complete(req, ENGRAM_ECONFLICT);
  for (int i = 0; !s && i < CAP; i++)
    if (m->slots[i].value == NULL) s = &m->slots[i], s->version = 0;
  if (!s) return engram_request_fail(req, ENGRAM_EBACKEND, "full (%d items)", CAP);
  cJSON_Delete(s->value);
  s->value = engram_request_take_value(req); /* keep the request's copy: no second copy */
  snprintf(s->key, sizeof s->key, "%s", req->key);
  snprintf(s->ns, sizeof s->ns, "%s", req->ns);
  s->version++;
  s->expires_at_ms = req->expires_at_ms;
  it.key = req->key, it.ns = req->ns, it.version = s->version, it.expires_at_ms = s->expires_at_ms;
  it.metadata = req->metadata;
  engram_request_complete(req, engram_reply_add(req, &it, 0));
}

static void mini_retrieve(engram_source_t *src, engram_request_t *req) {
  slot_t *s = find(engram_source_state(src), req, req->key);
  engram_item_t it = {0};
  if (!s) return engram_request_fail(req, ENGRAM_ENOTFOUND, "no memory found for key: %s", req->key);
  it.key = s->key, it.ns = s->ns, it.value = s->value, it.version = s->version, it.expires_at_ms = s->expires_at_ms;
  engram_request_complete(req, engram_reply_add(req, &it, 0)); /* value duplicated into the reply */
}

static void mini_del(engram_source_t *src, engram_request_t *req) {
  slot_t *s = find(engram_source_state(src), req, req->key);
  if (s) cJSON_Delete(s->value), s->value = NULL;
  engram_reply_set_count(req, s != NULL);
  engram_request_complete(req, 0);
}

/* search and list_keys: every live item of the namespace matching the pattern (and, for search, the filter). */
static void scan(engram_source_t *src, engram_request_t *req, int with_values) {
  mini_t *m = engram_source_state(src);
  int rc = 0, n = 0, skip = req->op == ENGRAM_OP_SEARCH ? req->query.offset : 0;
  for (int i = 0; i < CAP && rc == 0 && n < req->query.limit; i++) {
    slot_t *s = &m->slots[i];
    engram_item_t it = {0};
    if (!s->value || !find(m, req, s->key) || (strcmp(s->ns, req->ns) && !(req->flags & ENGRAM_REQ_ALL_NAMESPACES))) continue;
    if (!engram_pattern_match(req->query.pattern, s->key, strlen(s->key))) continue;
    if (with_values && req->query.filter && !engram_filter_match(req->query.filter, NULL)) continue;
    if (skip > 0 && skip--) continue;
    it.key = s->key, it.ns = s->ns, it.value = with_values ? s->value : NULL, it.score = 1.0, it.version = s->version;
    rc = engram_reply_add(req, &it, 0);
    n++;
  }
  engram_request_complete(req, rc); /* no cursor: one page (a real source returns keyset cursors) */
}
static void mini_search(engram_source_t *src, engram_request_t *req) { scan(src, req, 1); }
static void mini_list_keys(engram_source_t *src, engram_request_t *req) { scan(src, req, 0); }

static void mini_close(engram_source_t *src) {
  mini_t *m = engram_source_state(src);
  for (int i = 0; i < CAP; i++) cJSON_Delete(m->slots[i].value);
  engram_source_closed(src);
}

static const engram_source_vtable_t mini_source = {
    .version = ENGRAM_SOURCE_VTABLE_VERSION, .name = "mini", .instance_size = sizeof(mini_t),
    .open = mini_open, .close = mini_close, .store = mini_store, .retrieve = mini_retrieve,
    .search = mini_search, .del = mini_del, .list_keys = mini_list_keys,
};

/* ---- Using it ---- */

static int steps;
static void next(engram_manager_t *mgr);
static void on_reply(int status, const engram_reply_t *r, void *mgr) {
  printf("step %d: %s %s count=%llu items=%zu\n", steps, engram_err_name(status), r->message,
         (unsigned long long)r->count, r->n_items);
  next(mgr);
}
static int add_one(const cJSON *cur, cJSON **out, void *ud) {
  *out = cJSON_CreateNumber(cur ? cur->valuedouble + 1 : 1);
  return 0;
}
static void on_closed(int status, const engram_reply_t *r, void *ud) { printf("closed\n"); }

static void next(engram_manager_t *mgr) {
  cJSON *v = cJSON_CreateString("hello");
  engram_query_t q = ENGRAM_QUERY_INIT;
  switch (steps++) {
    case 0: engram_store(mgr, "greeting", v, NULL, on_reply, mgr); break;
    case 1: engram_update(mgr, "counter", add_one, NULL, NULL, on_reply, mgr); break;  /* emulated */
    case 2: engram_update(mgr, "counter", add_one, NULL, NULL, on_reply, mgr); break;
    case 3: engram_count(mgr, &q, NULL, on_reply, mgr); break;                         /* emulated */
    case 4: engram_exists(mgr, "greeting", NULL, on_reply, mgr); break;                /* emulated */
    default: engram_manager_close(mgr, on_closed, NULL); break;
  }
  cJSON_Delete(v);
}

int main(void) {
  engram_manager_t *mgr;
  uv_loop_t *loop = uv_default_loop();
  if (engram_manager_new(&mgr, loop, NULL) != 0) return 1;
  engram_manager_add_source(mgr, "mini", &mini_source, NULL, "a minimal backend", 1, on_reply, mgr);
  return uv_run(loop, UV_RUN_DEFAULT);
}
