/*
 * thread_search.c — searching the messages of one thread, or of every thread of a namespace
 * (engram_thread_search, engram_thread_search_query with a ranking mode: include/engram/thread.h), on top of the public data operations like the rest of the
 * thread layer, so it works on every source and ranks as the source ranks (BM25, or the vector source's
 * embedder).
 *
 * Two round trips. (1) One engram_search over the message items only: key pattern "thread-msg:<id>:*" (or
 * "thread-msg:*"), and the metadata filter seq ≥ 1, which every message item has and heads and summaries do not.
 * (2) One engram_retrieve_many of the heads of the threads the results belong to: the head alone says what is
 * visible (docs/conversations.md), so a message is kept only when its thread exists, its key's generation is
 * the head's, and its sequence number is visible (in [first, last], not deleted) — an item trimmed by
 * max_messages, or left by an earlier life of the thread, is never returned, even before it is removed. Because
 * some results may be dropped, the search asks for more than the caller's limit (2 × limit + 16) and pages on
 * (at most 8 pages) while fewer than limit survived and the source had more. Each page's heads are parsed once.
 *
 * Like the other thread calls (thread_call.h), every sub-call carries the caller's source, namespace, deadline and completion queue, so the
 * steps and the caller's one callback run on the thread that answers them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engram/source.h"
#include "engram/thread.h"
#include "shared/error.h"
#include "shared/json_text.h"
#include "thread/thread_head.h"

#define SEARCH_PAGES 8 /* pages asked of the source at most */

typedef struct {
  engram_manager_t *mgr;
  engram_cb cb;
  void *ud;
  engram_opts_t o;
  char *src, *ns, *text;
  char id[ENGRAM_THREAD_ID_MAX + 1]; /* "" = every thread of the namespace */
  char pattern[sizeof TH_MSG_PREFIX + ENGRAM_THREAD_ID_MAX + 4];
  cJSON *filter;
  int mode, fusion, ef_search; /* the caller's ranking (engram_thread_search_query) */
  double alpha, min_score;
  int limit, page_size, pages, offset, source_exhausted, n_kept;
  cJSON *page;   /* the current page: [{"key", "value", "score"}] */
  cJSON *kept;   /* the same shape: messages found visible, best first */
  char source_name[ENGRAM_SOURCE_NAME_MAX + 1];
  char message[400];
} search_t;

static void s_free(search_t *s) {
  engram_free(s->src);
  engram_free(s->ns);
  engram_free(s->text);
  cJSON_Delete(s->filter);
  cJSON_Delete(s->page);
  cJSON_Delete(s->kept);
  engram_free(s);
}

/* Calls the caller back once and frees the call. */
static void s_finish(search_t *s, int status) {
  engram_reply_t r;
  engram_item_t *items = NULL;
  cJSON *info = NULL, *msgs;
  size_t n = 0, i = 0;
  const cJSON *e;
  memset(&r, 0, sizeof r);
  if (status == 0) {
    n = (size_t)cJSON_GetArraySize(s->kept);
    if ((info = cJSON_CreateObject()) == NULL || (msgs = cJSON_AddArrayToObject(info, "messages")) == NULL ||
        (s->id[0] ? !cJSON_AddStringToObject(info, "thread", s->id) : !cJSON_AddNullToObject(info, "thread")) ||
        (n && (items = engram_calloc(n, sizeof *items)) == NULL)) {
      status = ENGRAM_ENOMEM;
      n = 0;
    } else {
      cJSON_ArrayForEach(e, s->kept) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(e, "value");
        cJSON *d = cJSON_Duplicate(v, 1);
        if (d == NULL || !cJSON_AddItemToArray(msgs, d)) {
          cJSON_Delete(d);
          status = ENGRAM_ENOMEM;
          break;
        }
        items[i].key = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e, "key"));
        items[i].ns = s->ns ? s->ns : "";
        items[i].value = d;
        items[i].metadata = cJSON_GetObjectItemCaseSensitive(d, "metadata"); /* the message's own, as thread_call.c */
        items[i].score = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(e, "score"));
        items[i].created_at_ms = (int64_t)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(d, "created_at_ms"));
        items[i].source = s->source_name[0] ? s->source_name : s->src;
        i++;
      }
      if (status != 0) n = 0;
    }
  }
  r.op = (engram_op_t)ENGRAM_OP_THREAD_SEARCH;
  r.message = status == 0 ? "" : s->message[0] ? s->message : engram_strerror(status);
  r.source = s->source_name[0] ? s->source_name : s->src;
  r.items = status == 0 ? items : NULL;
  r.n_items = status == 0 ? n : 0;
  r.count = status == 0 ? n : 0;
  r.info = status == 0 ? info : NULL;
  s->cb(status, &r, s->ud);
  engram_free(items);
  cJSON_Delete(info);
  s_free(s);
}

static void s_fail(search_t *s, int status, const engram_reply_t *r) {
  char clean[300];
  if (s->message[0] == '\0')
    snprintf(s->message, sizeof s->message, "thread search%s%s%s: %s", s->id[0] ? " \"" : "", s->id,
             s->id[0] ? "\"" : "",
             engram__text_clean(clean, sizeof clean, r && r->message && r->message[0] ? r->message : engram_strerror(status)));
  s_finish(s, status);
}

static int s_page(search_t *s);

/* Splits a message key "thread-msg:<id>:<gen>:<16 digits>" into its thread, generation and number; 0 or -1
 * (another item: a summary, or a key written by something else). */
static int split_key(const char *key, char *id, size_t id_size, char *gen, size_t gen_size, uint64_t *seq) {
  const char *p, *a, *b;
  char *end;
  size_t plen = sizeof TH_MSG_PREFIX - 1;
  if (key == NULL || strncmp(key, TH_MSG_PREFIX, plen) != 0) return -1;
  p = key + plen;
  if ((b = strrchr(p, ':')) == NULL || b == p) return -1;
  for (a = b - 1; a > p && *a != ':'; a--) {
  }
  if (a == p || (size_t)(a - p) >= id_size || (size_t)(b - a - 1) >= gen_size || b[1] < '0' || b[1] > '9') return -1;
  *seq = strtoull(b + 1, &end, 10);
  if (*end != '\0' || *seq == 0) return -1;
  memcpy(id, p, (size_t)(a - p));
  id[a - p] = '\0';
  memcpy(gen, a + 1, (size_t)(b - a - 1));
  gen[b - a - 1] = '\0';
  return 0;
}

/* The heads of the page's threads have come back: keeps the visible messages, then pages on or answers. Each head
 * is parsed once; the kept entries move from the page to s->kept (no copy). */
static void on_heads(int status, const engram_reply_t *r, void *ud) {
  search_t *s = ud;
  th_head_t *heads = NULL;
  size_t h, n_heads = 0;
  cJSON *e, *next;
  if (status != 0) {
    s_fail(s, status, r);
    return;
  }
  if (r->n_items && (heads = engram_calloc(r->n_items, sizeof *heads)) == NULL) {
    s_fail(s, ENGRAM_ENOMEM, NULL);
    return;
  }
  for (h = 0; h < r->n_items; h++) {
    int rc;
    if (r->items[h].status != 0 || r->items[h].value == NULL) continue;
    if ((rc = th_head_parse(r->items[h].value, &heads[n_heads])) == ENGRAM_ENOMEM) status = ENGRAM_ENOMEM;
    else if (rc == 0) n_heads++; /* not a head (something else under its key): no message of it is visible */
  }
  for (e = status == 0 && s->page ? s->page->child : NULL; e != NULL && s->n_kept < s->limit; e = next) {
    const char *key = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e, "key"));
    char id[ENGRAM_THREAD_ID_MAX + 1], gen[TH_GEN_MAX + 1];
    uint64_t seq;
    next = e->next;
    if (split_key(key, id, sizeof id, gen, sizeof gen, &seq) != 0) continue;
    for (h = 0; h < n_heads && strcmp(heads[h].id, id) != 0; h++) {
    }
    if (h < n_heads && strcmp(heads[h].gen, gen) == 0 && th_head_visible(&heads[h], seq)) {
      cJSON_AddItemToArray(s->kept, cJSON_DetachItemViaPointer(s->page, e));
      s->n_kept++;
    }
  }
  for (h = 0; h < n_heads; h++) th_head_free(&heads[h]);
  engram_free(heads);
  if (status != 0) {
    s_fail(s, status, NULL);
    return;
  }
  if (s->n_kept >= s->limit || s->source_exhausted || s->pages >= SEARCH_PAGES) {
    s_finish(s, 0);
    return;
  }
  if ((status = s_page(s)) != 0) s_fail(s, status, NULL);
}

/* A page of search results: copies them (key, value, score), then reads the heads of their threads. */
static void on_page(int status, const engram_reply_t *r, void *ud) {
  search_t *s = ud;
  char **keys = NULL;
  size_t i, n_keys = 0;
  int rc = 0;
  if (r && r->source && !s->source_name[0]) snprintf(s->source_name, sizeof s->source_name, "%s", r->source);
  if (status != 0) {
    s_fail(s, status, r);
    return;
  }
  cJSON_Delete(s->page);
  if ((s->page = cJSON_CreateArray()) == NULL ||
      (r->n_items && (keys = engram_calloc(r->n_items, sizeof *keys)) == NULL)) {
    engram_free(keys);
    s_fail(s, ENGRAM_ENOMEM, NULL);
    return;
  }
  s->source_exhausted = r->n_items < (size_t)s->page_size;
  s->offset += (int)r->n_items;
  for (i = 0; i < r->n_items && rc == 0; i++) {
    const engram_item_t *it = &r->items[i];
    char id[ENGRAM_THREAD_ID_MAX + 1], gen[TH_GEN_MAX + 1], hk[sizeof TH_HEAD_PREFIX + ENGRAM_THREAD_ID_MAX];
    uint64_t seq;
    size_t k;
    cJSON *e, *d = NULL;
    if (split_key(it->key, id, sizeof id, gen, sizeof gen, &seq) != 0 || it->value == NULL) continue;
    if ((e = cJSON_CreateObject()) == NULL || !cJSON_AddItemToArray(s->page, e)) {
      cJSON_Delete(e);
      rc = ENGRAM_ENOMEM;
      break;
    }
    /* cJSON_AddItemToObject leaves the item to the caller when it fails (copying the name): d is deleted then. */
    if (!cJSON_AddStringToObject(e, "key", it->key) || (d = cJSON_Duplicate(it->value, 1)) == NULL ||
        !cJSON_AddItemToObject(e, "value", d)) {
      cJSON_Delete(d);
      rc = ENGRAM_ENOMEM;
      break;
    }
    if (!cJSON_AddNumberToObject(e, "score", it->score)) {
      rc = ENGRAM_ENOMEM;
      break;
    }
    th_head_key(hk, sizeof hk, id);
    for (k = 0; k < n_keys && strcmp(keys[k], hk) != 0; k++) {
    }
    if (k == n_keys && (keys[n_keys++] = engram_strdup(hk)) == NULL) rc = ENGRAM_ENOMEM;
  }
  if (rc == 0 && n_keys == 0) { /* nothing on this page: page on, or answer */
    for (i = 0; i < n_keys; i++) engram_free(keys[i]);
    engram_free(keys);
    if (s->source_exhausted || s->pages >= SEARCH_PAGES) s_finish(s, 0);
    else if ((rc = s_page(s)) != 0) s_fail(s, rc, NULL);
    return;
  }
  if (rc == 0) rc = engram_retrieve_many(s->mgr, (const char *const *)keys, n_keys, &s->o, on_heads, s);
  for (i = 0; i < n_keys; i++) engram_free(keys[i]);
  engram_free(keys);
  if (rc != 0) {
    snprintf(s->message, sizeof s->message, "thread search: reading the heads: %s", engram_last_error());
    s_fail(s, rc, NULL);
  }
}

static int s_page(search_t *s) {
  engram_query_t q;
  memset(&q, 0, sizeof q);
  q.mode = s->mode; /* 0: the source's default */
  q.fusion = s->fusion;
  q.alpha = s->alpha;
  q.ef_search = s->ef_search;
  q.min_score = s->min_score;
  q.text = s->text;
  q.pattern = s->pattern;
  q.filter = s->filter;
  q.limit = s->page_size;
  q.offset = s->offset;
  s->pages++;
  return engram_search(s->mgr, &q, &s->o, on_page, s);
}

int engram_thread_search_query(engram_manager_t *mgr, const char *thread, const engram_query_t *qry,
                               const engram_opts_t *opts, engram_cb cb, void *ud) {
  search_t *s;
  const char *query;
  int rc, limit;
  engram__error_clear();
  if (mgr == NULL) return engram__error(ENGRAM_EINVAL, "mgr: NULL");
  if (cb == NULL) return engram__error(ENGRAM_EINVAL, "cb: NULL");
  if (thread != NULL && (rc = th_check_id(thread)) != 0) return rc;
  if (qry == NULL) return engram__error(ENGRAM_EINVAL, "query: NULL (use ENGRAM_QUERY_INIT)");
  if ((query = qry->text) == NULL) return engram__error(ENGRAM_EINVAL, "query.text: NULL");
  if (!engram_utf8_valid(query, strlen(query))) return engram__error(ENGRAM_EINVAL, "query.text: invalid UTF-8");
  if (strspn(query, " \t\r\n") == strlen(query)) return engram__error(ENGRAM_EINVAL, "query.text: empty");
  if (qry->pattern != NULL) return engram__error(ENGRAM_EINVAL, "query.pattern: must be NULL (the thread search sets it)");
  if (qry->filter != NULL) return engram__error(ENGRAM_EINVAL, "query.filter: must be NULL (the thread search sets it)");
  if (qry->vector != NULL) return engram__error(ENGRAM_EINVAL, "query.vector: must be NULL (messages are found by text)");
  if (qry->offset != 0) return engram__error(ENGRAM_EINVAL, "query.offset: %d, must be 0 (the thread search pages itself)",
                                             qry->offset);
  limit = qry->limit;
  if (limit < 1 || limit > ENGRAM_THREAD_PAGE_MAX)
    return engram__error(ENGRAM_EINVAL, "query.limit: %d, must be 1..%d", limit, ENGRAM_THREAD_PAGE_MAX);
  if ((s = engram_calloc(1, sizeof *s)) == NULL) return engram__error(ENGRAM_ENOMEM, "out of memory");
  s->mgr = mgr;
  s->cb = cb;
  s->ud = ud;
  s->limit = limit;
  s->page_size = 2 * limit + 16;
  s->mode = qry->mode;
  s->fusion = qry->fusion;
  s->alpha = qry->alpha;
  s->ef_search = qry->ef_search;
  s->min_score = qry->min_score;
  if (thread != NULL) snprintf(s->id, sizeof s->id, "%s", thread);
  snprintf(s->pattern, sizeof s->pattern, TH_MSG_PREFIX "%s%s*", s->id, s->id[0] ? ":" : "");
  if ((s->text = engram_strdup(query)) == NULL || (s->kept = cJSON_CreateArray()) == NULL ||
      (s->filter = cJSON_Parse("{\"seq\": {\"$gte\": 1}}")) == NULL ||
      (opts && opts->source && (s->src = engram_strdup(opts->source)) == NULL) ||
      (opts && opts->ns && (s->ns = engram_strdup(opts->ns)) == NULL)) {
    s_free(s);
    return engram__error(ENGRAM_ENOMEM, "out of memory");
  }
  if (opts != NULL) {
    s->o.deadline_ms = opts->deadline_ms;
    s->o.cq = opts->cq;
  }
  s->o.source = s->src;
  s->o.ns = s->ns;
  if ((rc = s_page(s)) != 0) { /* refused at the call: engram_last_error() says why; no callback */
    s_free(s);
    return rc;
  }
  return 0;
}

int engram_thread_search(engram_manager_t *mgr, const char *thread, const char *query, int limit,
                         const engram_opts_t *opts, engram_cb cb, void *ud) {
  engram_query_t q = ENGRAM_QUERY_INIT;
  engram__error_clear();
  if (query == NULL) return engram__error(ENGRAM_EINVAL, "query: NULL");
  if (!engram_utf8_valid(query, strlen(query))) return engram__error(ENGRAM_EINVAL, "query: invalid UTF-8");
  if (strspn(query, " \t\r\n") == strlen(query)) return engram__error(ENGRAM_EINVAL, "query: empty");
  if (limit < 1 || limit > ENGRAM_THREAD_PAGE_MAX)
    return engram__error(ENGRAM_EINVAL, "limit: %d, must be 1..%d", limit, ENGRAM_THREAD_PAGE_MAX);
  q.text = query;
  q.limit = limit;
  return engram_thread_search_query(mgr, thread, &q, opts, cb, ud);
}
