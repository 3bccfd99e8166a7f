/*
 * thread_delete.c — engram_thread_delete: a thread's head, messages and summary items removed.
 *
 * The head goes first (the thread is gone for every reader at once), then every message and summary item of the
 * thread, listed page by page and deleted with delete_many.
 */
#include <stdio.h>
#include <string.h>

#include "thread/thread_call.h"
#include "thread/thread_check.h"
#include "shared/error.h"

static void del_list(call_t *c);

static void on_del_msgs(int status, const engram_reply_t *r, void *ud) {
  call_t *c = ud;
  if (!th_reply_ok(c, status, r)) return;
  /* the summary item is removed with the messages but is not one: reply->count counts messages */
  c->count += r->count - (r->count < c->sum_listed ? r->count : c->sum_listed);
  c->sum_listed = 0;
  if (c->list_cursor == NULL) th_finish(c, 0, NULL, NULL, c->count, NULL, NULL);
  else del_list(c);
}

static void on_del_listed(int status, const engram_reply_t *r, void *ud) {
  call_t *c = ud;
  size_t i;
  int rc = 0;
  if (!th_reply_ok(c, status, r)) return;
  engram_free(c->list_cursor);
  c->list_cursor = r->cursor ? engram_strdup(r->cursor) : NULL;
  if (r->cursor && c->list_cursor == NULL) rc = ENGRAM_ENOMEM;
  if (rc == 0 && r->n_items == 0) {
    if (c->list_cursor == NULL) th_finish(c, 0, NULL, NULL, c->count, NULL, NULL);
    else del_list(c);
    return;
  }
  th_free_keys(c->keys, c->n_keys);
  c->n_keys = 0;
  if (rc == 0 && (c->keys = engram_calloc(r->n_items, sizeof *c->keys)) == NULL) rc = ENGRAM_ENOMEM;
  for (i = 0; rc == 0 && i < r->n_items; i++, c->n_keys++) {
    size_t len = strlen(r->items[i].key);
    if ((c->keys[i] = engram_strdup(r->items[i].key)) == NULL) rc = ENGRAM_ENOMEM;
    if (len > sizeof TH_SUMMARY_SUFFIX && strcmp(r->items[i].key + len - (sizeof TH_SUMMARY_SUFFIX - 1), TH_SUMMARY_SUFFIX) == 0)
      c->sum_listed++;
  }
  if (rc == 0) rc = engram_delete_many(c->mgr, (const char *const *)c->keys, c->n_keys, &c->o, on_del_msgs, c);
  if (rc != 0) th_fail(c, rc, "thread \"%s\": %s", c->id, rc == ENGRAM_ENOMEM ? "out of memory" : engram_last_error());
}

static void del_list(call_t *c) {
  char pattern[TH_KEY_MAX];
  int rc;
  snprintf(pattern, sizeof pattern, TH_MSG_PREFIX "%s:%s:*", c->id, c->head.gen);
  rc = engram_list_keys(c->mgr, pattern, LIST_PAGE, c->list_cursor, &c->o, on_del_listed, c);
  if (rc != 0) th_fail(c, rc, "thread \"%s\": %s", c->id, engram_last_error());
}

static void on_del_head(int status, const engram_reply_t *r, void *ud) {
  call_t *c = ud;
  if (!th_reply_ok(c, status, r)) return;
  del_list(c);
}

static void on_del_read(int status, const engram_reply_t *r, void *ud) {
  call_t *c = ud;
  int rc;
  if (status == ENGRAM_ENOTFOUND) {
    th_note(c, 0, r);
    th_finish(c, 0, NULL, NULL, 0, NULL, NULL);
    return;
  }
  if ((status = th_take_head(c, status, r)) != 0) {
    th_finish(c, status, NULL, NULL, 0, NULL, NULL);
    return;
  }
  rc = engram_delete(c->mgr, c->head_key, &c->o, on_del_head, c);
  if (rc != 0) th_fail(c, rc, "thread \"%s\": %s", c->id, engram_last_error());
}

int engram_thread_delete(engram_manager_t *mgr, const char *thread, const engram_opts_t *opts, engram_cb cb, void *ud) {
  call_t *c;
  int rc;
  if ((rc = th_check_call(mgr, thread, cb)) != 0) return rc;
  if ((c = th_call_new(mgr, ENGRAM_OP_THREAD_DELETE, thread, opts, cb, ud)) == NULL)
    return engram__error(ENGRAM_ENOMEM, "out of memory");
  th_mc_forget_of(mgr, c->src, c->ns, c->id, NULL, 0); /* this process's parsed copies go at once */
  return th_read_submit(c, on_del_read);
}
