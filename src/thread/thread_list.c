/*
 * thread_list.c — engram_thread_list: the threads of a namespace, newest-updated first.
 *
 * Lists the head keys of the namespace, reads every head, and answers one page ordered by updated_at_ms
 * descending, then id, with a cursor naming the last thread of the page.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "thread/thread_call.h"
#include "shared/error.h"
#include "shared/json_text.h"

static int64_t info_updated(const cJSON *t) {
  return (int64_t)cJSON_GetObjectItemCaseSensitive(t, "updated_at_ms")->valuedouble;
}

static const char *info_id(const cJSON *t) { return cJSON_GetObjectItemCaseSensitive(t, "thread")->valuestring; }

/* updated_at_ms descending, then id ascending */
static int info_cmp(const void *a, const void *b) {
  const cJSON *x = *(const cJSON *const *)a, *y = *(const cJSON *const *)b;
  int64_t ux = info_updated(x), uy = info_updated(y);
  if (ux != uy) return ux > uy ? -1 : 1;
  return strcmp(info_id(x), info_id(y));
}

static void list_finish(call_t *c) {
  size_t n = (size_t)cJSON_GetArraySize(c->threads), i, start = 0, k = 0;
  cJSON **v = engram_calloc(n ? n : 1, sizeof *v), *info = NULL, *arr = NULL, *t;
  char cur[40 + ENGRAM_THREAD_ID_MAX];
  int more = 0;
  if (v == NULL) {
    th_fail(c, ENGRAM_ENOMEM, "out of memory");
    return;
  }
  i = 0;
  cJSON_ArrayForEach(t, c->threads) v[i++] = t;
  qsort(v, n, sizeof *v, info_cmp);
  if (c->cursor_in != NULL)
    while (start < n && (info_updated(v[start]) > c->cur_updated ||
                         (info_updated(v[start]) == c->cur_updated && strcmp(info_id(v[start]), c->cur_id) <= 0)))
      start++;
  if ((info = cJSON_CreateObject()) == NULL || (arr = cJSON_AddArrayToObject(info, "threads")) == NULL) goto nomem;
  for (i = start; i < n && k < (size_t)c->limit; i++, k++) {
    cJSON *d = cJSON_Duplicate(v[i], 1);
    if (d == NULL || !cJSON_AddItemToArray(arr, d)) {
      cJSON_Delete(d);
      goto nomem;
    }
  }
  more = i < n;
  if (more) snprintf(cur, sizeof cur, "%" PRId64 ":%s", info_updated(v[i - 1]), info_id(v[i - 1]));
  engram_free(v);
  th_finish(c, 0, info, NULL, k, more ? cur : NULL, NULL);
  return;
nomem:
  engram_free(v);
  cJSON_Delete(info);
  th_fail(c, ENGRAM_ENOMEM, "out of memory");
}

static void list_heads(call_t *c);

static void on_list_heads(int status, const engram_reply_t *r, void *ud) {
  call_t *c = ud;
  size_t i;
  th_note(c, status, r);
  if (status != 0) {
    th_finish(c, status, NULL, NULL, 0, NULL, NULL);
    return;
  }
  for (i = 0; i < r->n_items; i++) {
    th_head_t h;
    cJSON *info;
    if (r->items[i].status != 0 || th_head_parse(r->items[i].value, &h) != 0) continue; /* gone, or not a head */
    info = th_head_info(&h, r->items[i].expires_at_ms);
    th_head_free(&h);
    if (info == NULL || !cJSON_AddItemToArray(c->threads, info)) {
      cJSON_Delete(info);
      th_fail(c, ENGRAM_ENOMEM, "out of memory");
      return;
    }
  }
  list_heads(c);
}

/* Reads the listed heads LIST_PAGE at a time, then sorts. */
static void list_heads(call_t *c) {
  size_t n = c->n_all - c->heads_done;
  engram_opts_t o = c->o;
  int rc;
  if (n == 0) {
    list_finish(c);
    return;
  }
  if (n > LIST_PAGE) n = LIST_PAGE;
  o.flags = ENGRAM_OPT_INCLUDE_METADATA;
  rc = engram_retrieve_many(c->mgr, (const char *const *)c->all_keys + c->heads_done, n, &o, on_list_heads, c);
  c->heads_done += n;
  if (rc != 0) th_fail(c, rc, "threads: %s", engram_last_error());
}

static void list_keys_page(call_t *c);

static void on_list_keys(int status, const engram_reply_t *r, void *ud) {
  call_t *c = ud;
  size_t i;
  th_note(c, status, r);
  if (status != 0) {
    th_finish(c, status, NULL, NULL, 0, NULL, NULL);
    return;
  }
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
  if (c->list_cursor != NULL) list_keys_page(c);
  else list_heads(c);
}

static void list_keys_page(call_t *c) {
  int rc = engram_list_keys(c->mgr, TH_HEAD_PREFIX "*", LIST_PAGE, c->list_cursor, &c->o, on_list_keys, c);
  if (rc != 0) th_fail(c, rc, "threads: %s", engram_last_error());
}

int engram_thread_list(engram_manager_t *mgr, int limit, const char *cursor, const engram_opts_t *opts, engram_cb cb,
                       void *ud) {
  call_t *c;
  int64_t upd = 0;
  const char *p;
  int rc;
  engram__error_clear();
  if (mgr == NULL) return engram__error(ENGRAM_EINVAL, "mgr: NULL");
  if (cb == NULL) return engram__error(ENGRAM_EINVAL, "cb: NULL");
  if (limit < 1 || limit > ENGRAM_THREAD_PAGE_MAX)
    return engram__error(ENGRAM_EINVAL, "limit: %d, must be 1..%d", limit, ENGRAM_THREAD_PAGE_MAX);
  if (cursor != NULL) {
    char q[80];
    for (p = cursor; *p >= '0' && *p <= '9' && p - cursor < 18; p++) upd = upd * 10 + (*p - '0');
    if (p == cursor || *p != ':' || th_check_id(p + 1) != 0)
      return engram__error(ENGRAM_EINVAL, "cursor: \"%s\" is not a cursor of engram_thread_list",
                           engram__quote(q, sizeof q, cursor));
  }
  if ((c = th_call_new(mgr, ENGRAM_OP_THREAD_LIST, NULL, opts, cb, ud)) == NULL || (c->threads = cJSON_CreateArray()) == NULL ||
      (cursor && (c->cursor_in = engram_strdup(cursor)) == NULL)) {
    th_call_free(c);
    return engram__error(ENGRAM_ENOMEM, "out of memory");
  }
  c->limit = limit;
  if (cursor) {
    c->cur_updated = upd;
    snprintf(c->cur_id, sizeof c->cur_id, "%s", strchr(cursor, ':') + 1);
  }
  rc = engram_list_keys(mgr, TH_HEAD_PREFIX "*", LIST_PAGE, NULL, &c->o, on_list_keys, c);
  if (rc != 0) th_call_free(c);
  return rc;
}
