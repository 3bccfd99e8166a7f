/*
 * thread_list.c — engram_thread_list: the threads of a namespace, newest-updated first.
 *
 * A page is one ordered search of the head items (thread_heads.c: updated_at_ms descending, ties by id
 * descending), after the cursor's position (an updated_at range and the id), asking for one head more than the
 * page so that the reply knows whether another page follows; items that are not heads, or that a search of the
 * same millisecond's ties returns again, are skipped and, when they leave the page short, the search goes on
 * from where it stopped. The cursor is "u" + the last thread's head item updated_at_ms + ":" + its id.
 *
 * When the source cannot answer that search — more than ENGRAM_ORDER_MAX heads in the namespace (ENGRAM_ETOOBIG)
 * or, from the second page on, a source without system-field ranges (ENGRAM_ENOTSUP) — the page is made as
 * before the ordered search existed: every head key listed, every head read (LIST_PAGE at a time), sorted in
 * the same order, with the same cursor.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "thread/thread_call.h"
#include "thread/thread_heads.h"
#include "shared/error.h"
#include "shared/json_text.h"

static int64_t info_updated(const cJSON *t) {
  return (int64_t)cJSON_GetObjectItemCaseSensitive(t, "updated_at_ms")->valuedouble;
}

static const char *info_id(const cJSON *t) { return cJSON_GetObjectItemCaseSensitive(t, "thread")->valuestring; }

/* The order: updated_at_ms descending, then id descending (the ordered search's: key descending). */
static int info_cmp(const void *a, const void *b) {
  const cJSON *x = *(const cJSON *const *)a, *y = *(const cJSON *const *)b;
  int64_t ux = info_updated(x), uy = info_updated(y);
  if (ux != uy) return ux > uy ? -1 : 1;
  return -strcmp(info_id(x), info_id(y));
}

static void list_answer(call_t *c, int more) {
  cJSON *info = cJSON_CreateObject();
  char cur[40 + ENGRAM_THREAD_ID_MAX];
  int n = cJSON_GetArraySize(c->threads);
  if (info == NULL) {
    th_fail(c, ENGRAM_ENOMEM, "out of memory");
    return;
  }
  if (more && n > 0) {
    const cJSON *last = cJSON_GetArrayItem(c->threads, n - 1);
    snprintf(cur, sizeof cur, "u%" PRId64 ":%s", info_updated(last), info_id(last));
  }
  if (!cJSON_AddItemToObject(info, "threads", c->threads)) {
    cJSON_Delete(info);
    th_fail(c, ENGRAM_ENOMEM, "out of memory");
    return;
  }
  c->threads = NULL;
  th_finish(c, 0, info, NULL, (uint64_t)n, more && n > 0 ? cur : NULL, NULL);
}

/* ---- the page by one ordered search ---- */

static th_pager_t *pager_of(call_t *c) { return &c->pager; }

static void list_fallback_or_fail(call_t *c);
static void on_list_search(int status, const engram_reply_t *r, void *ud);

static void list_search(call_t *c) {
  int rc = th_heads_search(c, pager_of(c), c->limit + 1, on_list_search);
  if (rc == ENGRAM_ENOTSUP) list_fallback_or_fail(c);
  else if (rc != 0) th_fail(c, rc, "threads: %s", engram_last_error());
}

static void on_list_search(int status, const engram_reply_t *r, void *ud) {
  call_t *c = ud;
  th_pager_t *p = pager_of(c);
  size_t i;
  if (status == ENGRAM_ETOOBIG || status == ENGRAM_ENOTSUP) {
    list_fallback_or_fail(c);
    return;
  }
  if (!th_reply_ok(c, status, r)) return;
  for (i = 0; i < r->n_items; i++) {
    th_head_t h;
    cJSON *info;
    int rc;
    if (th_heads_id(p, &r->items[i]) == NULL) continue; /* already seen */
    if ((rc = th_heads_info(&r->items[i], &h, &info)) == ENGRAM_EINVAL) continue; /* not a head */
    th_head_free(&h);
    if (rc != 0) goto nomem;
    if (c->cnt == (size_t)c->limit) { /* one more exists: the page is full */
      cJSON_Delete(info);
      list_answer(c, 1);
      return;
    }
    if (!cJSON_AddItemToArray(c->threads, info)) {
      cJSON_Delete(info);
      goto nomem;
    }
    c->cnt++; /* threads in the page (cJSON_GetArraySize walks the list) */
  }
  th_pager_next(p, r, c->limit + 1);
  if (p->end) list_answer(c, 0);
  else list_search(c);
  return;
nomem:
  th_fail(c, ENGRAM_ENOMEM, "out of memory");
}

/* ---- the fallback: every head read, then sorted ---- */

static void fallback_finish(call_t *c) {
  size_t n = (size_t)cJSON_GetArraySize(c->taken), i, start = 0;
  cJSON **v = engram_calloc(n ? n : 1, sizeof *v), *t;
  const th_pager_t *p = pager_of(c);
  if (v == NULL) {
    th_fail(c, ENGRAM_ENOMEM, "out of memory");
    return;
  }
  i = 0;
  cJSON_ArrayForEach(t, c->taken) v[i++] = t;
  qsort(v, n, sizeof *v, info_cmp);
  if (p->has_pos)
    while (start < n && (info_updated(v[start]) > p->pos_u ||
                         (info_updated(v[start]) == p->pos_u && strcmp(info_id(v[start]), p->pos_id) >= 0)))
      start++;
  for (i = start; i < n && i - start < (size_t)c->limit; i++) {
    cJSON *d = cJSON_Duplicate(v[i], 1);
    if (d == NULL || !cJSON_AddItemToArray(c->threads, d)) {
      cJSON_Delete(d);
      engram_free(v);
      th_fail(c, ENGRAM_ENOMEM, "out of memory");
      return;
    }
  }
  engram_free(v);
  list_answer(c, i < n);
}

static void fallback_heads(call_t *c);

static void on_fallback_heads(int status, const engram_reply_t *r, void *ud) {
  call_t *c = ud;
  size_t i;
  if (!th_reply_ok(c, status, r)) return;
  for (i = 0; i < r->n_items; i++) {
    th_head_t h;
    cJSON *info;
    int rc = th_heads_info(&r->items[i], &h, &info);
    if (rc == ENGRAM_EINVAL) continue; /* gone, or not a head */
    th_head_free(&h);
    if (rc != 0 || !cJSON_AddItemToArray(c->taken, info)) {
      cJSON_Delete(info);
      th_fail(c, ENGRAM_ENOMEM, "out of memory");
      return;
    }
  }
  fallback_heads(c);
}

/* Reads the listed heads LIST_PAGE at a time, then sorts. */
static void fallback_heads(call_t *c) {
  size_t n = c->n_all - c->heads_done;
  engram_opts_t o = c->o;
  int rc;
  if (n == 0) {
    fallback_finish(c);
    return;
  }
  if (n > LIST_PAGE) n = LIST_PAGE;
  o.flags = ENGRAM_OPT_INCLUDE_METADATA;
  rc = engram_retrieve_many(c->mgr, (const char *const *)c->all_keys + c->heads_done, n, &o, on_fallback_heads, c);
  c->heads_done += n;
  if (rc != 0) th_fail(c, rc, "threads: %s", engram_last_error());
}

static void fallback_keys(call_t *c);

static void on_fallback_keys(int status, const engram_reply_t *r, void *ud) {
  call_t *c = ud;
  size_t i;
  if (!th_reply_ok(c, status, r)) return;
  if (c->n_all + r->n_items > c->cap_all) {
    size_t cap = (c->cap_all ? c->cap_all * 2 : 64) + r->n_items;
    char **p = engram_realloc(c->all_keys, cap * sizeof *p);
    if (p == NULL) {
      th_fail(c, ENGRAM_ENOMEM, "out of memory");
      return;
    }
    c->all_keys = p;
    c->cap_all = cap;
  }
  for (i = 0; i < r->n_items; i++) {
    if ((c->all_keys[c->n_all] = engram_strdup(r->items[i].key)) == NULL) {
      th_fail(c, ENGRAM_ENOMEM, "out of memory");
      return;
    }
    c->n_all++;
  }
  engram_free(c->list_cursor);
  c->list_cursor = r->cursor ? engram_strdup(r->cursor) : NULL;
  if (r->cursor && c->list_cursor == NULL) {
    th_fail(c, ENGRAM_ENOMEM, "out of memory");
    return;
  }
  if (c->list_cursor != NULL) fallback_keys(c);
  else fallback_heads(c);
}

static int keys_submit(call_t *c) {
  return engram_list_keys(c->mgr, TH_HEAD_PREFIX "*", LIST_PAGE, c->list_cursor, &c->o, on_fallback_keys, c);
}

static void fallback_keys(call_t *c) {
  int rc = keys_submit(c);
  if (rc != 0) th_fail(c, rc, "threads: %s", engram_last_error());
}

/* Starts the page again the old way, from the cursor's position (the pager's is the cursor's until a page of
 * ties moved its offset, which the sort below does not need). Returns the first list_keys' code (0: submitted);
 * the caller ends the call on failure. */
static int list_fallback(call_t *c) {
  th_pager_t *p = pager_of(c);
  cJSON_Delete(c->threads);
  c->threads = cJSON_CreateArray();
  if (c->threads == NULL || (c->taken == NULL && (c->taken = cJSON_CreateArray()) == NULL))
    return engram__error(ENGRAM_ENOMEM, "out of memory");
  p->has_pos = c->cursor_in != NULL;
  p->pos_u = c->cur_updated;
  snprintf(p->pos_id, sizeof p->pos_id, "%s", c->cur_id);
  return keys_submit(c);
}

/* From a callback: the fallback, or the call's end when it could not start. */
static void list_fallback_or_fail(call_t *c) {
  int rc = list_fallback(c);
  if (rc != 0) th_fail(c, rc, "threads: %s", engram_last_error());
}

int engram_thread_list(engram_manager_t *mgr, int limit, const char *cursor, const engram_opts_t *opts, engram_cb cb,
                       void *ud) {
  call_t *c;
  th_pager_t *p;
  int64_t upd = 0;
  const char *s;
  int rc;
  engram__error_clear();
  if (mgr == NULL) return engram__error(ENGRAM_EINVAL, "mgr: NULL");
  if (cb == NULL) return engram__error(ENGRAM_EINVAL, "cb: NULL");
  if (limit < 1 || limit > ENGRAM_THREAD_PAGE_MAX)
    return engram__error(ENGRAM_EINVAL, "limit: %d, must be 1..%d", limit, ENGRAM_THREAD_PAGE_MAX);
  if (cursor != NULL) {
    char q[80];
    for (s = cursor + 1; cursor[0] == 'u' && *s >= '0' && *s <= '9' && s - cursor < 19; s++) upd = upd * 10 + (*s - '0');
    if (cursor[0] != 'u' || s == cursor + 1 || *s != ':' || th_check_id(s + 1) != 0)
      return engram__error(ENGRAM_EINVAL, "cursor: \"%s\" is not a cursor of engram_thread_list",
                           engram__quote(q, sizeof q, cursor));
  }
  if ((c = th_call_new(mgr, ENGRAM_OP_THREAD_LIST, NULL, opts, cb, ud)) == NULL ||
      (c->threads = cJSON_CreateArray()) == NULL ||
      (cursor && (c->cursor_in = engram_strdup(cursor)) == NULL)) {
    th_call_free(c);
    return engram__error(ENGRAM_ENOMEM, "out of memory");
  }
  c->limit = limit;
  p = &c->pager;
  if (cursor) {
    c->cur_updated = upd;
    snprintf(c->cur_id, sizeof c->cur_id, "%s", strchr(cursor, ':') + 1);
    p->has_pos = 1;
    p->pos_u = upd;
    snprintf(p->pos_id, sizeof p->pos_id, "%s", c->cur_id);
  }
  rc = th_heads_search(c, p, limit + 1, on_list_search);
  if (rc == ENGRAM_ENOTSUP) { /* a source without system-field ranges: the page the old way */
    engram__error_clear();
    rc = list_fallback(c);
  }
  if (rc != 0) th_call_free(c);
  return rc;
}
