/*
 * thread_queue.h — the per-process lanes of appends to one thread (thread_lane.c, docs/conversations.md "Appends"):
 * while as many appends to a thread as its lane's depth are in flight, later compatible appends to it wait in the
 * lane, and when one in flight ends they go as one update. This file only keeps the lanes: a lane is named by a key (bytes the
 * caller makes: manager, source, namespace, id and the settings/options that must match to merge), counts its items
 * in flight (at most its depth), and holds the waiting items in arrival order. Items are the caller's records with a
 * tq_node_t inside; the lanes never look into them.
 *
 * Threads: any. One mutex guards every lane; tq_enter and tq_leave run a caller's function under it (the submit of
 * the item that makes or keeps a lane busy), so nothing can join a lane between its decision and the submit. That
 * function must not call back into this file.
 */
#ifndef ENGRAM_THREAD_QUEUE_H
#define ENGRAM_THREAD_QUEUE_H

#include <stddef.h>

#define TQ_KEY_MAX 512 /* longer keys are not queued: the caller runs such an item alone */

typedef struct tq_node_s {
  struct tq_node_s *next;
} tq_node_t;

/* Runs an item (submits it); 0 or an error code. Called under the lanes' mutex. */
typedef int (*tq_run_fn)(void *arg);

/* An item with key [key, key + len). When its lane has fewer than depth (≥ 1; the lane's first item sets it) items
 * in flight and none waiting, run(arg) submits it at once and tq_enter returns 0 — or run's error (then nothing
 * changed). Else node joins the lane's waiting list and tq_enter returns 1 (the item is the lane's until tq_leave
 * hands it back). ENGRAM_ENOMEM when no lane could be made (run was not called: the caller may run the item
 * alone). */
int tq_enter(const void *key, size_t len, unsigned depth, tq_node_t *node, tq_run_fn run, void *arg);

/* One in-flight item of the lane with this key ended. With items waiting, take(&list, arg) is called under the
 * mutex with them (a list in arrival order, linked by next): it unlinks the items it takes and returns 1 when it
 * ran some of them as one new in-flight item (the rest wait on, in order), or 0 when it ran none (then it took
 * every item: *list is NULL). The lane is gone once nothing is in flight or waiting. take must not complete
 * callers (it runs under the mutex): the caller completes what take took after tq_leave returns. */
typedef int (*tq_take_fn)(tq_node_t **list, void *arg);
void tq_leave(const void *key, size_t len, tq_take_fn take, void *arg);

#endif
