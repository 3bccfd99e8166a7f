/*
 * thread_context.c — engram_thread_context: the newest messages of all the threads of a namespace, in
 * chronological order, each naming its thread (bruno-core's retrieve_context with no conversation named).
 *
 * Bounded work for a namespace of many threads: the heads come newest-updated first (thread_heads.c), in pages
 * of N, 2N, ... up to CTX_HEADS_MAX heads; of each head whose own updated_at_ms is at or after the N-th newest
 * message found so far (every message of a thread is stamped no later than its head), the newest N visible
 * messages are read (one retrieve_many a page of heads), and the candidates are cut back to the newest N. The
 * heads stop once a page's last head item was updated more than CTX_SLACK_MS before that N-th message: the
 * heads come in the order of the item's updated_at_ms, which a source may stamp when the head's update was
 * submitted, before the update ran and stamped the messages (PostgreSQL does), so the slack covers that delay.
 * Only the head decides what is visible: a message trimmed or deleted by its head is never read, even when its
 * item is still there.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "thread/thread_call.h"
#include "thread/thread_heads.h"
#include "shared/error.h"
#include "shared/json_text.h"

#define CTX_HEADS_MAX 64    /* heads a page */
#define CTX_KEYS_MAX 8192   /* message keys a retrieve_many */
#define CTX_SLACK_MS 10000  /* a head item's updated_at_ms may precede its messages' created_at_ms by this much */

static int64_t num_i(const cJSON *m, const char *f) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(m, f);
  return cJSON_IsNumber(v) ? (int64_t)v->valuedouble : 0;
}

static const char *thread_of(const cJSON *m) { return cJSON_GetObjectItemCaseSensitive(m, "thread")->valuestring; }

/* Chronological: created_at_ms, then thread id, then seq. */
static int msg_cmp(const void *a, const void *b) {
  const cJSON *x = *(const cJSON *const *)a, *y = *(const cJSON *const *)b;
  int64_t tx = num_i(x, "created_at_ms"), ty = num_i(y, "created_at_ms");
  int c;
  if (tx != ty) return tx < ty ? -1 : 1;
  if ((c = strcmp(thread_of(x), thread_of(y))) != 0) return c;
  tx = num_i(x, "seq");
  ty = num_i(y, "seq");
  return tx < ty ? -1 : tx > ty;
}

/* The candidates (c->taken) sorted chronologically, cut to the newest c->limit. 0 or ENGRAM_ENOMEM. */
static int keep_newest(call_t *c) {
  size_t n = (size_t)cJSON_GetArraySize(c->taken), i, drop;
  cJSON **v, *t, *kept;
  if (n == 0) return 0;
  if ((v = engram_malloc(n * sizeof *v)) == NULL || (kept = cJSON_CreateArray()) == NULL) {
    engram_free(v);
    return ENGRAM_ENOMEM;
  }
  i = 0;
  cJSON_ArrayForEach(t, c->taken) v[i++] = t;
  qsort(v, n, sizeof *v, msg_cmp);
  drop = n > (size_t)c->limit ? n - (size_t)c->limit : 0;
  for (i = 0; i < n; i++) {
    cJSON_DetachItemViaPointer(c->taken, v[i]);
    if (i < drop) cJSON_Delete(v[i]);
    else cJSON_AddItemToArray(kept, v[i]); /* cannot fail: both are set */
  }
  engram_free(v);
  cJSON_Delete(c->taken);
  c->taken = kept;
  return 0;
}

/* created_at_ms of the N-th newest candidate, or INT64_MIN while there are fewer than N (the candidates are
 * kept sorted by keep_newest: the oldest first). */
static int64_t nth_newest(const call_t *c) {
  if (cJSON_GetArraySize(c->taken) < c->limit) return INT64_MIN;
  return num_i(c->taken->child, "created_at_ms");
}

/* Drops each thread's leading tool results (their call is older than the context), then answers. */
static void context_answer(call_t *c) {
  cJSON *info, *msgs, *m, *next, *called = cJSON_CreateObject();
  char *text = NULL;
  size_t n;
  if (called == NULL || (info = cJSON_CreateObject()) == NULL) {
    cJSON_Delete(called);
    th_fail(c, ENGRAM_ENOMEM, "out of memory");
    return;
  }
  for (m = c->taken->child; m != NULL; m = next) {
    const char *role = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(m, "role"));
    next = m->next;
    if (cJSON_GetObjectItemCaseSensitive(called, thread_of(m)) != NULL) continue;
    if (role != NULL && strcmp(role, "tool") == 0) cJSON_Delete(cJSON_DetachItemViaPointer(c->taken, m));
    else if (cJSON_AddTrueToObject(called, thread_of(m)) == NULL) goto nomem;
  }
  cJSON_Delete(called);
  called = NULL;
  msgs = c->taken;
  if (!cJSON_AddItemToObject(info, "messages", msgs)) goto nomem;
  c->taken = NULL;
  if (cJSON_AddNumberToObject(info, "threads_read", (double)c->cnt) == NULL) goto nomem;
  n = (size_t)cJSON_GetArraySize(msgs);
  if (c->win.format != ENGRAM_RENDER_NONE) {
    cJSON *body = engram_thread_render(msgs, c->win.format);
    text = body ? engram_json_print_text(body) : NULL;
    cJSON_Delete(body);
    if (text == NULL) goto nomem;
  }
  th_finish(c, 0, info, NULL, n, NULL, text);
  engram_free(text);
  return;
nomem:
  cJSON_Delete(called);
  cJSON_Delete(info);
  th_fail(c, ENGRAM_ENOMEM, "out of memory");
}

static void heads_page(call_t *c);

static void on_messages(int status, const engram_reply_t *r, void *ud) {
  call_t *c = ud;
  size_t i;
  if (!th_reply_ok(c, status, r)) return;
  for (i = 0; i < r->n_items; i++) {
    const cJSON *m = th_msg_of(r, i);
    const char *id = c->keys[i] + sizeof TH_MSG_PREFIX - 1, *end = strchr(id, ':');
    cJSON *d;
    if (m == NULL) continue; /* a gap */
    if ((d = engram_reply_take_value(r, i)) == NULL || !cJSON_AddItemToArray(c->taken, d)) {
      cJSON_Delete(d);
      th_fail(c, ENGRAM_ENOMEM, "out of memory");
      return;
    }
    {
      char idbuf[ENGRAM_THREAD_ID_MAX + 1];
      size_t len = end != NULL && (size_t)(end - id) < sizeof idbuf ? (size_t)(end - id) : 0;
      memcpy(idbuf, id, len);
      idbuf[len] = '\0';
      cJSON_DeleteItemFromObjectCaseSensitive(d, "thread");
      if (cJSON_AddStringToObject(d, "thread", idbuf) == NULL) {
        th_fail(c, ENGRAM_ENOMEM, "out of memory");
        return;
      }
    }
  }
  th_free_keys(c->keys, c->n_keys);
  c->keys = NULL;
  c->n_keys = 0;
  if (keep_newest(c) != 0) {
    th_fail(c, ENGRAM_ENOMEM, "out of memory");
    return;
  }
  if (c->pager.end) context_answer(c);
  else heads_page(c);
}

/* Adds the keys of the newest c->limit visible messages of head h to c->keys. 0 or ENGRAM_ENOMEM. */
static int add_keys(call_t *c, const th_head_t *h) {
  size_t want = (size_t)c->limit, k = 0;
  uint64_t s;
  char **p = engram_realloc(c->keys, (c->n_keys + want) * sizeof *p);
  if (p == NULL) return ENGRAM_ENOMEM;
  c->keys = p;
  for (s = h->last; s >= h->first && s > 0 && k < want; s--) {
    char key[TH_KEY_MAX];
    if (!th_head_visible(h, s)) continue;
    th_msg_key(key, sizeof key, h->id, h->gen, s);
    if ((c->keys[c->n_keys] = engram_strdup(key)) == NULL) return ENGRAM_ENOMEM;
    c->n_keys++;
    k++;
  }
  return 0;
}

static void on_heads(int status, const engram_reply_t *r, void *ud) {
  call_t *c = ud;
  int64_t floor = nth_newest(c);
  size_t i;
  int rc;
  if (!th_reply_ok(c, status, r)) return;
  for (i = 0; i < r->n_items; i++) {
    th_head_t h;
    if (th_heads_id(&c->pager, &r->items[i]) == NULL) continue; /* seen on an earlier page */
    if ((rc = th_head_parse(r->items[i].value, &h)) == ENGRAM_EINVAL) continue; /* not a head */
    if (rc == 0 && h.updated_at_ms >= floor && th_head_count(&h) > 0) {
      rc = add_keys(c, &h);
      c->cnt++;
    }
    th_head_free(&h);
    if (rc != 0) {
      th_fail(c, ENGRAM_ENOMEM, "out of memory");
      return;
    }
  }
  th_pager_next(&c->pager, r, c->page);
  /* the remaining heads' items were updated at or before this page's last: too old once past the slack */
  if (r->n_items > 0 && floor != INT64_MIN && r->items[r->n_items - 1].updated_at_ms < floor - CTX_SLACK_MS)
    c->pager.end = 1;
  if (c->n_keys == 0) {
    if (c->pager.end) context_answer(c);
    else heads_page(c);
    return;
  }
  {
    engram_opts_t o = c->o;
    o.flags = 0;
    if ((rc = engram_retrieve_many(c->mgr, (const char *const *)c->keys, c->n_keys, &o, on_messages, c)) != 0)
      th_fail(c, rc, "context: %s", engram_last_error());
  }
}

/* The next page of heads: twice the last, at most CTX_HEADS_MAX and CTX_KEYS_MAX keys. */
static int heads_submit(call_t *c) {
  size_t cap = CTX_KEYS_MAX / (size_t)c->limit;
  if (cap > CTX_HEADS_MAX) cap = CTX_HEADS_MAX;
  if (cap < 1) cap = 1;
  c->page = c->page == 0 ? (size_t)c->limit : c->page * 2;
  if (c->page > cap) c->page = cap;
  return th_heads_search(c, &c->pager, (int)c->page, on_heads);
}

static void heads_page(call_t *c) {
  int rc = heads_submit(c);
  if (rc != 0) th_fail(c, rc, "context: %s", engram_last_error());
}

int engram_thread_context(engram_manager_t *mgr, int max_messages, engram_render_format_t format,
                          const engram_opts_t *opts, engram_cb cb, void *ud) {
  call_t *c;
  int rc;
  engram__error_clear();
  if (mgr == NULL) return engram__error(ENGRAM_EINVAL, "mgr: NULL");
  if (cb == NULL) return engram__error(ENGRAM_EINVAL, "cb: NULL");
  if (max_messages < 1 || max_messages > ENGRAM_THREAD_BATCH_MAX)
    return engram__error(ENGRAM_EINVAL, "max_messages: %d, must be 1..%d", max_messages, ENGRAM_THREAD_BATCH_MAX);
  if (format != ENGRAM_RENDER_NONE && format != ENGRAM_RENDER_OPENAI && format != ENGRAM_RENDER_ANTHROPIC)
    return engram__error(ENGRAM_EINVAL, "format: %d, unknown", (int)format);
  if ((c = th_call_new(mgr, ENGRAM_OP_THREAD_CONTEXT, NULL, opts, cb, ud)) == NULL ||
      (c->taken = cJSON_CreateArray()) == NULL) {
    th_call_free(c);
    return engram__error(ENGRAM_ENOMEM, "out of memory");
  }
  c->limit = max_messages;
  c->win.format = format;
  if ((rc = heads_submit(c)) != 0) th_call_free(c);
  return rc;
}
