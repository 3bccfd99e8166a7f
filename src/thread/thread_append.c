/*
 * thread_append.c — the public change functions: engram_thread_append, _set, _delete_messages.
 *
 * Each validates its arguments (thread_check.c), prepares the update (thread_change.c) and submits it — an
 * append through its thread's lane (thread_lane.c), so that appends to one thread in flight together go as one
 * update.
 */
#include <inttypes.h>
#include <string.h>

#include "thread/thread_call.h"
#include "thread/thread_check.h"
#include "shared/error.h"
#include "thread/thread_queue.h"

int engram_thread_append(engram_manager_t *mgr, const char *thread, const engram_message_t *messages, size_t n,
                         const engram_thread_settings_t *settings, const engram_opts_t *opts, engram_cb cb, void *ud) {
  call_t *c;
  size_t i;
  int rc;
  if ((rc = th_check_call(mgr, thread, cb)) != 0) return rc;
  if (messages == NULL) return engram__error(ENGRAM_EINVAL, "messages: NULL");
  if (n < 1 || n > ENGRAM_THREAD_BATCH_MAX)
    return engram__error(ENGRAM_EINVAL, "n: %zu, must be 1..%d", n, ENGRAM_THREAD_BATCH_MAX);
  for (i = 0; i < n; i++)
    if ((rc = th_check_message(&messages[i], i)) != 0) return rc;
  if ((rc = th_check_settings(settings)) != 0) return rc;
  if ((c = th_call_new(mgr, ENGRAM_OP_THREAD_APPEND, thread, opts, cb, ud)) == NULL ||
      (c->upd = th_upd_new(c, M_APPEND, settings, NULL)) == NULL || th_upd_arrays(c->upd, n, 1) != 0) {
    th_call_free(c);
    return engram__error(ENGRAM_ENOMEM, "out of memory");
  }
  c->n = n;
  for (i = 0; i < n; i++) {
    upd_t *u = c->upd;
    const char *role = th_role_literal(messages[i].role);
    u->is_system[i] = role == th_role_system;
    if ((u->msgs[i] = th_prepare_message(&messages[i], role, u->id, &u->meta[i], &u->nodes[3 * i])) == NULL) {
      th_call_free(c);
      return engram__error(ENGRAM_ENOMEM, "out of memory");
    }
  }
  c->asked_deadline = c->o.deadline_ms;
  c->submitted_ms = engram_now_ms();
  c->mc = th_mc_acquire(mgr, c->src, 1, &c->mc_serial); /* where its messages go once written (keep_appended) */
  {
    unsigned char key[TQ_KEY_MAX];
    size_t len = th_lane_key(c, key);
    if (len > 0) {
      rc = tq_enter(key, len, th_lane_depth(c), &c->qnode, th_lane_run, c); /* 1: waits behind the thread's append in flight */
      if (rc >= 0) return 0;
    }
  }
  return th_change_submit(c); /* no lane (key too long, no memory for one) or refused in it: alone */
}

int engram_thread_set(engram_manager_t *mgr, const char *thread, const cJSON *metadata,
                      const engram_thread_settings_t *settings, const engram_opts_t *opts, engram_cb cb, void *ud) {
  call_t *c;
  int rc;
  if ((rc = th_check_call(mgr, thread, cb)) != 0) return rc;
  if (metadata != NULL) {
    if (!cJSON_IsObject(metadata)) return engram__error(ENGRAM_EINVAL, "metadata: must be a JSON object");
    if ((rc = th_check_tree(metadata, "metadata")) != 0) return rc;
  }
  if ((rc = th_check_settings(settings)) != 0) return rc;
  if (metadata == NULL && (settings == NULL || settings->flags == 0))
    return engram__error(ENGRAM_EINVAL, "metadata: NULL and settings change nothing");
  if ((c = th_call_new(mgr, ENGRAM_OP_THREAD_SET, thread, opts, cb, ud)) == NULL ||
      (c->upd = th_upd_new(c, M_SET, settings, metadata)) == NULL) {
    th_call_free(c);
    return engram__error(ENGRAM_ENOMEM, "out of memory");
  }
  return th_change_submit(c);
}

int engram_thread_delete_messages(engram_manager_t *mgr, const char *thread, const uint64_t *seqs, size_t n,
                                  const engram_opts_t *opts, engram_cb cb, void *ud) {
  call_t *c;
  size_t i;
  int rc;
  if ((rc = th_check_call(mgr, thread, cb)) != 0) return rc;
  if (seqs == NULL) return engram__error(ENGRAM_EINVAL, "seqs: NULL");
  if (n < 1 || n > ENGRAM_THREAD_BATCH_MAX)
    return engram__error(ENGRAM_EINVAL, "n: %zu, must be 1..%d", n, ENGRAM_THREAD_BATCH_MAX);
  for (i = 0; i < n; i++)
    if (seqs[i] < 1 || seqs[i] > (uint64_t)1 << 53)
      return engram__error(ENGRAM_EINVAL, "seqs[%zu]: %" PRIu64 ", must be 1..2^53", i, seqs[i]);
  if ((c = th_call_new(mgr, ENGRAM_OP_THREAD_DELETE_MESSAGES, thread, opts, cb, ud)) == NULL ||
      (c->upd = th_upd_new(c, M_DELMSG, NULL, NULL)) == NULL || (c->upd->del = engram_malloc(n * sizeof *seqs)) == NULL) {
    th_call_free(c);
    return engram__error(ENGRAM_ENOMEM, "out of memory");
  }
  memcpy(c->upd->del, seqs, n * sizeof *seqs);
  c->upd->n_del = n;
  th_mc_forget_of(mgr, c->src, c->ns, c->id, seqs, n); /* this process's parsed copies go at once */
  return th_change_submit(c);
}
