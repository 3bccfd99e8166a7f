/*
 * thread_msgcache.h — the manager's cache of parsed conversation messages (thread_msgcache.c), which windows read
 * instead of the source.
 *
 * An agent reads its thread's window before every model call, and a window of 50 messages read them all from the
 * source each time: 50 values on the wire, parsed into trees, for messages the process parsed a moment ago. A
 * stored message never changes: the thread layer writes the item of (generation, seq) once, its content fixed by
 * the append that took the number (a TTL refresh writes the same content again), and what a thread shows is
 * decided by its head (trims and deletes are recorded there, a recreated thread has a new generation). So a
 * message read once can be kept and shown again without asking the source, as long as the head read with the
 * window still names it. docs/conversations.md, "The message cache".
 *
 * Entries are keyed by the source (its serial: a source removed and added again under the same name is another),
 * namespace, thread id, generation and seq; they hold the message's tree, which windows show by reference. An
 * entry is reference-counted: the cache holds one reference, and each window that shows it one more until its
 * callback has returned, so an entry evicted meanwhile lives until then. The cache evicts least recently used
 * entries past its byte budget (engram_manager_config_t.message_cache_bytes) and is itself reference-counted:
 * the manager and every call that uses it hold one. One mutex; any thread.
 */
#ifndef ENGRAM_THREAD_MSGCACHE_H
#define ENGRAM_THREAD_MSGCACHE_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "engram.h"

typedef struct th_mc_s th_mc_t;
typedef struct th_mc_entry_s th_mc_entry_t;

/* The messages of one thread in the cache: made once per call (th_mc_thread), then used for each seq. The
 * strings are borrowed from the call. */
typedef struct {
  uint64_t serial;   /* the source's (engram__source_serial) */
  const char *ns;    /* "" for the default namespace */
  const char *id;
  const char *gen;
  uint64_t hash;     /* of the four above */
  uint64_t epoch;    /* the manager's restore epoch when the call began: entries of another epoch are not used */
} th_mc_thread_t;

/* The cache of mgr for calls naming source (NULL = the default) with one reference for the caller, made on first
 * use when create is non-zero (else NULL until a window made it); sets *serial to the source's serial. NULL when mgr's cache is off, the source is unknown or keeps its items
 * in the process anyway (ENGRAM_SOURCE_ANSWERS_AT_ONCE: the cache source), or out of memory — then windows read
 * every message from the source, as without a cache. Thread: any. */
th_mc_t *th_mc_acquire(engram_manager_t *mgr, const char *source, int create, uint64_t *serial);
/* Drops a reference (NULL: nothing); the last one frees the cache and lets go of its entries. Thread: any. */
void th_mc_release(th_mc_t *mc);
/* The manager's own reference, dropped when it is freed (manager.c calls it through a pointer: no call up). */
void th_mc_release_any(void *mc);

/* Fills t for a thread (the strings must outlive t's uses); epoch: th_mc_epoch when the call began. */
void th_mc_thread(th_mc_thread_t *t, uint64_t serial, const char *ns, const char *id, const char *gen, uint64_t epoch);
/* mgr's restore epoch (engram_manager_s.restore_epoch): an import moves it when it starts and when it ends, since
 * it may write a thread back as it was (its head and messages at older versions), and then numbers a later append
 * takes again would find this process's copies of what they held before. Read when a call begins (the manager is
 * alive then). Thread: any. */
uint64_t th_mc_epoch(engram_manager_t *mgr);

/* The entry of seq, with a reference for the caller (th_mc_unpin), marked recently used; NULL when absent. */
th_mc_entry_t *th_mc_get(th_mc_t *mc, const th_mc_thread_t *t, uint64_t seq);
/* Keeps msg (a message tree the caller owned: taken on success) under seq and returns its entry with a reference
 * for the caller; tree_bytes is msg's th_block_measure size when the caller has it, else 0. An entry already there
 * for seq is returned instead (msg then is not taken). NULL when msg is larger than the budget allows or out of
 * memory (msg not taken). Evicts least recently used entries first. */
th_mc_entry_t *th_mc_put(th_mc_t *mc, const th_mc_thread_t *t, uint64_t seq, cJSON *msg, size_t tree_bytes);
/* The message of e: read only, valid while the caller holds its reference. */
const cJSON *th_mc_msg(const th_mc_entry_t *e);
/* engram_thread_count_tokens of e's message (the default counter), counted once per entry. */
size_t th_mc_tokens(th_mc_entry_t *e);
/* Drops the caller's reference to e (NULL: nothing). Thread: any. */
void th_mc_unpin(th_mc_entry_t *e);

/* Forgets the messages seqs[0..n) of t's thread, or all of them when seqs is NULL, in every generation (t's gen is
 * not used): a delete of those messages, or of the thread. Windows never show them anyway (the head no longer
 * names them); this lets their memory go at once. A walk of the whole cache under its lock. Thread: any. */
void th_mc_forget(th_mc_t *mc, const th_mc_thread_t *t, const uint64_t *seqs, size_t n);

/* th_mc_forget in mgr's cache, when it has one, for the thread id of ns on source (NULL = the default). */
void th_mc_forget_of(engram_manager_t *mgr, const char *source, const char *ns, const char *id, const uint64_t *seqs,
                     size_t n);

#endif
