/*
 * thread_summary.h — summaries of a thread's older messages (engram_summarize_fn, engram_summary_complete in
 * include/engram/thread.h): the summary item's key and parsed form, and the background job a window starts
 * after its callback — read the messages that fell out, call the caller's summariser, store its answer by an
 * atomic update that keeps the summary covering more. thread_window.c reads the item and starts jobs; the job
 * (thread_summary.c) uses only the public operations and thread_head.h's keys.
 */
#ifndef ENGRAM_THREAD_SUMMARY_H
#define ENGRAM_THREAD_SUMMARY_H

#include <stddef.h>
#include <stdint.h>

#include "engram/thread.h"

#define TH_SUMMARY_SUFFIX "summary"
#define TH_SUMMARY_PREFIX_TEXT "Summary of the earlier conversation: "

/* A summary item's value {"summary", "first_seq", "last_seq", "created_at_ms"}, parsed (text borrowed). */
typedef struct {
  const char *text;
  uint64_t first_seq, last_seq;
  int64_t created_at_ms;
} th_summary_t;

/* "thread-msg:<id>:<gen>:summary" into buf (TH_KEY_MAX bytes are enough). */
void th_summary_key(char *buf, size_t size, const char *id, const char *gen);

/* 0 when v is a summary item's value (s filled, borrowing from v), else ENGRAM_EINVAL. */
int th_summary_parse(const cJSON *v, th_summary_t *s);

/*
 * Starts a job: reads the messages seqs[0..n) (ascending, non-system, n ≥ 1) of thread id / gen with o's source,
 * namespace, deadline and cq, then calls fn with them and prev's text (prev may be NULL). ttl_ms: the thread's
 * TTL (0 = none) for the summary item's expiry. Returns 0, or an error (nothing started; nothing to clean up).
 * The caller's window callback has already run, so an error is simply dropped by the caller.
 */
int th_summary_start(engram_manager_t *mgr, const engram_opts_t *o, const char *id, const char *gen, int64_t ttl_ms,
                     const uint64_t *seqs, size_t n, const th_summary_t *prev, engram_summarize_fn fn, void *fn_ud);

#endif /* ENGRAM_THREAD_SUMMARY_H */
