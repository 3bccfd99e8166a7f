/*
 * thread_read.c — reads of a thread by number: engram_thread_info, _read (a range), _get_message.
 *
 * Each reads the head first (only the head says which numbers are visible: a number whose message has not
 * arrived is a gap, skipped), then the messages of the range by key with one retrieve_many.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "thread/thread_call.h"
#include "thread/thread_check.h"
#include "shared/error.h"

static void on_info_head(int status, const engram_reply_t *r, void *ud) {
  call_t *c = ud;
  cJSON *info;
  if ((status = th_take_head(c, status, r)) != 0) {
    th_finish(c, status, NULL, NULL, 0, NULL, NULL);
    return;
  }
  if ((info = th_head_info(&c->head, c->expires_at_ms)) == NULL) {
    th_fail(c, ENGRAM_ENOMEM, "out of memory");
    return;
  }
  th_finish(c, 0, info, NULL, th_head_count(&c->head), NULL, NULL);
}

int engram_thread_info(engram_manager_t *mgr, const char *thread, const engram_opts_t *opts, engram_cb cb, void *ud) {
  call_t *c;
  int rc;
  if ((rc = th_check_call(mgr, thread, cb)) != 0) return rc;
  if ((c = th_call_new(mgr, ENGRAM_OP_THREAD_INFO, thread, opts, cb, ud)) == NULL)
    return engram__error(ENGRAM_ENOMEM, "out of memory");
  return th_read_submit(c, on_info_head);
}

/* ---------------------------------------------------------------------------------------------------- */
/* Reads: range, one message                                                                              */
/* ---------------------------------------------------------------------------------------------------- */


static void on_range_msgs(int status, const engram_reply_t *r, void *ud) {
  call_t *c = ud;
  cJSON *msgs, *info;
  size_t i;
  char cur[24];
  if (!th_reply_ok(c, status, r)) return;
  if ((info = th_base_info(c, &msgs)) == NULL) {
    th_fail(c, ENGRAM_ENOMEM, "out of memory");
    return;
  }
  for (i = 0; i < r->n_items; i++) {
    const cJSON *m = th_msg_of(r, i);
    cJSON *d;
    if (m == NULL) continue;
    if ((d = cJSON_Duplicate(m, 1)) == NULL || !cJSON_AddItemToArray(msgs, d)) {
      cJSON_Delete(d);
      cJSON_Delete(info);
      th_fail(c, ENGRAM_ENOMEM, "out of memory");
      return;
    }
  }
  if (c->walk != 0) {
    snprintf(cur, sizeof cur, "%" PRIu64, c->walk);
    cJSON_AddNumberToObject(info, "next_seq", (double)c->walk);
  } else {
    cJSON_AddNullToObject(info, "next_seq");
  }
  th_finish(c, 0, info, msgs, (uint64_t)cJSON_GetArraySize(msgs), c->walk ? cur : NULL, NULL);
}

static void on_range_head(int status, const engram_reply_t *r, void *ud) {
  call_t *c = ud;
  uint64_t s, *seqs;
  size_t n = 0;
  int rc;
  if ((status = th_take_head(c, status, r)) != 0) {
    th_finish(c, status, NULL, NULL, 0, NULL, NULL);
    return;
  }
  if ((seqs = engram_malloc((size_t)c->limit * sizeof *seqs)) == NULL) {
    th_fail(c, ENGRAM_ENOMEM, "out of memory");
    return;
  }
  s = c->from_seq < c->head.first ? c->head.first : c->from_seq;
  for (; s <= c->head.last && n < (size_t)c->limit; s++)
    if (th_head_visible(&c->head, s)) seqs[n++] = s;
  c->walk = s <= c->head.last ? s : 0;
  rc = th_make_keys(c, seqs, n);
  engram_free(seqs);
  if (rc == 0 && n == 0) {
    engram_reply_t empty;
    memset(&empty, 0, sizeof empty);
    empty.op = ENGRAM_OP_RETRIEVE_MANY;
    on_range_msgs(0, &empty, c);
    return;
  }
  if (rc == 0) rc = engram_retrieve_many(c->mgr, (const char *const *)c->keys, n, &c->o, on_range_msgs, c);
  if (rc != 0) th_fail(c, rc, "thread \"%s\": %s", c->id, rc == ENGRAM_ENOMEM ? "out of memory" : engram_last_error());
}

int engram_thread_read(engram_manager_t *mgr, const char *thread, uint64_t from_seq, int limit,
                       const engram_opts_t *opts, engram_cb cb, void *ud) {
  call_t *c;
  int rc;
  if ((rc = th_check_call(mgr, thread, cb)) != 0) return rc;
  if (limit < 1 || limit > ENGRAM_THREAD_PAGE_MAX)
    return engram__error(ENGRAM_EINVAL, "limit: %d, must be 1..%d", limit, ENGRAM_THREAD_PAGE_MAX);
  if ((c = th_call_new(mgr, ENGRAM_OP_THREAD_READ, thread, opts, cb, ud)) == NULL)
    return engram__error(ENGRAM_ENOMEM, "out of memory");
  c->from_seq = from_seq;
  c->limit = limit;
  return th_read_submit(c, on_range_head);
}

static void on_get_msg(int status, const engram_reply_t *r, void *ud) {
  call_t *c = ud;
  cJSON *info, *arr;
  const cJSON *m;
  th_note(c, status == ENGRAM_ENOTFOUND ? 0 : status, r);
  if (status == ENGRAM_ENOTFOUND || (status == 0 && (r->n_items < 1 || !cJSON_IsObject(r->items[0].value)))) {
    th_fail(c, ENGRAM_ENOTFOUND, "thread \"%s\": no message %" PRIu64, c->id, c->seq);
    return;
  }
  if (status != 0) {
    th_finish(c, status, NULL, NULL, 0, NULL, NULL);
    return;
  }
  m = r->items[0].value;
  arr = cJSON_CreateArray();
  info = cJSON_Duplicate(m, 1);
  if (arr == NULL || info == NULL || !cJSON_AddItemReferenceToArray(arr, info)) {
    cJSON_Delete(arr);
    cJSON_Delete(info);
    th_fail(c, ENGRAM_ENOMEM, "out of memory");
    return;
  }
  /* the reference array is freed before info by taking it apart first */
  {
    engram_reply_t rr;
    engram_item_t *items;
    size_t n;
    memset(&rr, 0, sizeof rr);
    items = th_items_of(c, arr, &n);
    rr.op = (engram_op_t)c->op;
    rr.message = "";
    rr.source = c->source_name;
    rr.items = items;
    rr.n_items = n;
    rr.count = n;
    rr.info = info;
    c->cb(0, &rr, c->ud);
    engram_free(items); /* and its keys */
    cJSON_Delete(arr);
    cJSON_Delete(info);
    th_call_free(c);
  }
}

static void on_get_head(int status, const engram_reply_t *r, void *ud) {
  call_t *c = ud;
  int rc;
  if ((status = th_take_head(c, status, r)) != 0) {
    th_finish(c, status, NULL, NULL, 0, NULL, NULL);
    return;
  }
  if (!th_head_visible(&c->head, c->seq)) {
    th_fail(c, ENGRAM_ENOTFOUND, "thread \"%s\": no message %" PRIu64 " (visible: %" PRIu64 "..%" PRIu64 ")", c->id, c->seq,
         c->head.first, c->head.last);
    return;
  }
  rc = th_make_keys(c, &c->seq, 1);
  if (rc == 0) rc = engram_retrieve(c->mgr, c->keys[0], &c->o, on_get_msg, c);
  if (rc != 0) th_fail(c, rc, "thread \"%s\": %s", c->id, rc == ENGRAM_ENOMEM ? "out of memory" : engram_last_error());
}

int engram_thread_get_message(engram_manager_t *mgr, const char *thread, uint64_t seq, const engram_opts_t *opts,
                              engram_cb cb, void *ud) {
  call_t *c;
  int rc;
  if ((rc = th_check_call(mgr, thread, cb)) != 0) return rc;
  if (seq < 1) return engram__error(ENGRAM_EINVAL, "seq: 0, must be ≥ 1");
  if ((c = th_call_new(mgr, ENGRAM_OP_THREAD_GET_MESSAGE, thread, opts, cb, ud)) == NULL)
    return engram__error(ENGRAM_ENOMEM, "out of memory");
  c->seq = seq;
  return th_read_submit(c, on_get_head);
}
