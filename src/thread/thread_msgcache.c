/*
 * thread_msgcache.c — the manager's cache of parsed conversation messages (thread_msgcache.h says why it is safe).
 *
 * A chained hash table (a power of two of buckets, doubled when it holds more entries than buckets) and a doubly
 * linked LRU list, under one mutex; the work under it is a lookup or a link, never a tree walk or a free of a
 * message (an evicted entry is unlinked under the lock and released after it). Each entry is one allocation: the
 * header, then "ns\0id\0gen\0"; its message is the tree the window took from the source's reply, kept as it is.
 * An entry's bytes (what counts against the budget) are its allocation plus th_block_measure's size of the tree.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "actor/actor.h"
#include "manager/manager.h"
#include "engram/source.h"
#include "thread/thread_block.h"
#include "thread/thread_hint.h"
#include "thread/thread_msgcache.h"

#define MC_DEFAULT_BYTES ((int64_t)16 << 20)
#define MC_MIN_BUCKETS 64

struct th_mc_entry_s {
  atomic_int refs;             /* the cache's (while linked) + one per pin */
  th_mc_entry_t *hnext;        /* bucket chain */
  th_mc_entry_t *prev, *next;  /* LRU list: head = most recent */
  uint64_t hash, serial, seq, epoch;
  size_t bytes;
  atomic_size_t tokens;        /* engram_thread_count_tokens of msg, counted on first use (0 = not yet) */
  cJSON *msg;
  size_t ns_len, id_len, gen_len;
  char names[];                /* ns \0 id \0 gen \0 */
};

struct th_mc_s {
  atomic_int refs;
  pthread_mutex_t lock;
  size_t budget, bytes, n, n_buckets;
  th_mc_entry_t **buckets;
  th_mc_entry_t *lru_head, *lru_tail;
};

static uint64_t mix(uint64_t h, uint64_t seq) {
  h ^= seq + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  return h;
}

uint64_t th_mc_epoch(engram_manager_t *mgr) { return atomic_load_explicit(&mgr->restore_epoch, memory_order_acquire); }

void th_mc_thread(th_mc_thread_t *t, uint64_t serial, const char *ns, const char *id, const char *gen, uint64_t epoch) {
  uint64_t h = th_fnv(0xcbf29ce484222325ull, &serial, sizeof serial);
  t->serial = serial;
  t->epoch = epoch;
  t->ns = ns ? ns : "";
  t->id = id;
  t->gen = gen;
  h = th_fnv(h, t->ns, strlen(t->ns) + 1);
  h = th_fnv(h, id, strlen(id) + 1);
  t->hash = th_fnv(h, gen, strlen(gen) + 1);
}

static void entry_unref(th_mc_entry_t *e) {
  if (e != NULL && atomic_fetch_sub_explicit(&e->refs, 1, memory_order_acq_rel) == 1) {
    cJSON_Delete(e->msg);
    engram_free(e);
  }
}

static int same_thread(const th_mc_entry_t *e, const th_mc_thread_t *t, int gen_too) {
  const char *p = e->names;
  if (e->serial != t->serial || strcmp(p, t->ns) != 0) return 0;
  p += e->ns_len + 1;
  if (strcmp(p, t->id) != 0) return 0;
  return !gen_too || strcmp(p + e->id_len + 1, t->gen) == 0;
}

static void lru_unlink(th_mc_t *mc, th_mc_entry_t *e) {
  if (e->prev) e->prev->next = e->next;
  else mc->lru_head = e->next;
  if (e->next) e->next->prev = e->prev;
  else mc->lru_tail = e->prev;
  e->prev = e->next = NULL;
}

static void lru_front(th_mc_t *mc, th_mc_entry_t *e) {
  e->prev = NULL;
  e->next = mc->lru_head;
  if (mc->lru_head) mc->lru_head->prev = e;
  mc->lru_head = e;
  if (mc->lru_tail == NULL) mc->lru_tail = e;
}

/* Unlinks e from its bucket and the list (under the lock); the cache's reference goes to *gone for release after
 * the lock. */
static void unlink_entry(th_mc_t *mc, th_mc_entry_t *e, th_mc_entry_t **gone) {
  th_mc_entry_t **pp = &mc->buckets[e->hash & (mc->n_buckets - 1)];
  while (*pp != e) pp = &(*pp)->hnext;
  *pp = e->hnext;
  lru_unlink(mc, e);
  mc->n--;
  mc->bytes -= e->bytes;
  e->hnext = *gone;
  *gone = e;
}

static void release_gone(th_mc_entry_t *gone) {
  while (gone != NULL) {
    th_mc_entry_t *next = gone->hnext;
    entry_unref(gone);
    gone = next;
  }
}

static th_mc_entry_t *find(th_mc_t *mc, const th_mc_thread_t *t, uint64_t h, uint64_t seq) {
  th_mc_entry_t *e;
  for (e = mc->buckets[h & (mc->n_buckets - 1)]; e != NULL; e = e->hnext)
    if (e->hash == h && e->seq == seq && same_thread(e, t, 1)) return e;
  return NULL;
}

static void grow(th_mc_t *mc) {
  size_t nb = mc->n_buckets * 2, i;
  th_mc_entry_t **b = engram_calloc(nb, sizeof *b);
  if (b == NULL) return; /* longer chains: still correct */
  for (i = 0; i < mc->n_buckets; i++) {
    th_mc_entry_t *e = mc->buckets[i], *next;
    for (; e != NULL; e = next) {
      next = e->hnext;
      e->hnext = b[e->hash & (nb - 1)];
      b[e->hash & (nb - 1)] = e;
    }
  }
  engram_free(mc->buckets);
  mc->buckets = b;
  mc->n_buckets = nb;
}

static th_mc_t *mc_new(size_t budget) {
  th_mc_t *mc = engram_calloc(1, sizeof *mc);
  if (mc == NULL) return NULL;
  if ((mc->buckets = engram_calloc(MC_MIN_BUCKETS, sizeof *mc->buckets)) == NULL ||
      pthread_mutex_init(&mc->lock, NULL) != 0) {
    engram_free(mc->buckets);
    engram_free(mc);
    return NULL;
  }
  mc->n_buckets = MC_MIN_BUCKETS;
  mc->budget = budget;
  atomic_init(&mc->refs, 1);
  return mc;
}

void th_mc_release(th_mc_t *mc) {
  th_mc_entry_t *gone = NULL;
  size_t i;
  if (mc == NULL || atomic_fetch_sub_explicit(&mc->refs, 1, memory_order_acq_rel) != 1) return;
  for (i = 0; i < mc->n_buckets; i++) {
    th_mc_entry_t *e = mc->buckets[i], *next;
    for (; e != NULL; e = next) {
      next = e->hnext;
      e->hnext = gone;
      gone = e;
    }
  }
  release_gone(gone); /* entries a window still shows live until it lets go */
  pthread_mutex_destroy(&mc->lock);
  engram_free(mc->buckets);
  engram_free(mc);
}

void th_mc_release_any(void *mc) { th_mc_release(mc); }

th_mc_t *th_mc_acquire(engram_manager_t *mgr, const char *source, int create, uint64_t *serial) {
  engram_source_t *src;
  th_mc_t *mc;
  int64_t want = mgr->cfg.message_cache_bytes;
  int local;
  *serial = 0;
  if (want < 0) return NULL;
  uv_rwlock_rdlock(&mgr->lock);
  src = engram__manager_find_locked(mgr, source);
  if (src != NULL) *serial = src->serial;
  local = src == NULL || (src->vt->flags & ENGRAM_SOURCE_ANSWERS_AT_ONCE) != 0;
  uv_rwlock_rdunlock(&mgr->lock);
  if (local) return NULL;
  if ((mc = atomic_load_explicit(&mgr->msg_cache, memory_order_acquire)) == NULL) {
    th_mc_t *mine;
    void *expected = NULL;
    if (!create) return NULL;
    mine = mc_new(want == 0 ? (size_t)MC_DEFAULT_BYTES : (size_t)want);
    if (mine == NULL) return NULL;
    if (atomic_compare_exchange_strong_explicit(&mgr->msg_cache, &expected, mine, memory_order_acq_rel,
                                                memory_order_acquire)) {
      mgr->msg_cache_release = th_mc_release_any; /* read when the manager is freed, after every call */
      mc = mine;
    } else {
      th_mc_release(mine);
      mc = expected;
    }
  }
  atomic_fetch_add_explicit(&mc->refs, 1, memory_order_relaxed);
  return mc;
}

th_mc_entry_t *th_mc_get(th_mc_t *mc, const th_mc_thread_t *t, uint64_t seq) {
  uint64_t h = mix(t->hash, seq);
  th_mc_entry_t *e;
  pthread_mutex_lock(&mc->lock);
  if ((e = find(mc, t, h, seq)) != NULL && e->epoch != t->epoch) e = NULL; /* kept before an import: not used */
  if (e != NULL) {
    atomic_fetch_add_explicit(&e->refs, 1, memory_order_relaxed);
    if (mc->lru_head != e) {
      lru_unlink(mc, e);
      lru_front(mc, e);
    }
  }
  pthread_mutex_unlock(&mc->lock);
  return e;
}

th_mc_entry_t *th_mc_put(th_mc_t *mc, const th_mc_thread_t *t, uint64_t seq, cJSON *msg, size_t tree_bytes) {
  size_t ns_len = strlen(t->ns), id_len = strlen(t->id), gen_len = strlen(t->gen), nodes = 0, str = 0, bytes;
  uint64_t h = mix(t->hash, seq);
  th_mc_entry_t *e, *had, *gone = NULL;
  if (msg == NULL) return NULL;
  if (tree_bytes == 0) {
    th_block_measure(msg, &nodes, &str);
    tree_bytes = nodes * sizeof(cJSON) + str;
  }
  bytes = sizeof *e + ns_len + id_len + gen_len + 3 + tree_bytes;
  if (bytes > mc->budget) return NULL;
  if ((e = engram_malloc(sizeof *e + ns_len + id_len + gen_len + 3)) == NULL) return NULL;
  atomic_init(&e->refs, 2); /* the cache's and the caller's */
  e->hnext = e->prev = e->next = NULL;
  e->hash = h;
  e->serial = t->serial;
  e->seq = seq;
  e->epoch = t->epoch;
  e->bytes = bytes;
  atomic_init(&e->tokens, 0);
  e->msg = msg;
  e->ns_len = ns_len;
  e->id_len = id_len;
  e->gen_len = gen_len;
  memcpy(e->names, t->ns, ns_len + 1);
  memcpy(e->names + ns_len + 1, t->id, id_len + 1);
  memcpy(e->names + ns_len + id_len + 2, t->gen, gen_len + 1);
  pthread_mutex_lock(&mc->lock);
  if ((had = find(mc, t, h, seq)) != NULL && had->epoch == t->epoch) { /* another window kept it first */
    atomic_fetch_add_explicit(&had->refs, 1, memory_order_relaxed);
    pthread_mutex_unlock(&mc->lock);
    e->msg = NULL;
    engram_free(e);
    return had;
  }
  if (had != NULL) unlink_entry(mc, had, &gone); /* kept in another epoch: replaced */
  while (mc->bytes + bytes > mc->budget && mc->lru_tail != NULL) unlink_entry(mc, mc->lru_tail, &gone);
  if (mc->n >= mc->n_buckets) grow(mc);
  e->hnext = mc->buckets[h & (mc->n_buckets - 1)];
  mc->buckets[h & (mc->n_buckets - 1)] = e;
  lru_front(mc, e);
  mc->n++;
  mc->bytes += bytes;
  pthread_mutex_unlock(&mc->lock);
  release_gone(gone);
  return e;
}

const cJSON *th_mc_msg(const th_mc_entry_t *e) { return e->msg; }

size_t th_mc_tokens(th_mc_entry_t *e) {
  size_t t = atomic_load_explicit(&e->tokens, memory_order_relaxed);
  if (t == 0) { /* windows on two threads may both count it: the same number */
    t = engram_thread_count_tokens(e->msg, NULL);
    atomic_store_explicit(&e->tokens, t, memory_order_relaxed);
  }
  return t;
}

void th_mc_unpin(th_mc_entry_t *e) { entry_unref(e); }

static int cmp_seq(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

void th_mc_forget(th_mc_t *mc, const th_mc_thread_t *t, const uint64_t *seqs, size_t n) {
  th_mc_entry_t *gone = NULL, *e, *next;
  uint64_t *sorted = NULL;
  if (seqs != NULL) {
    if (n == 0 || (sorted = engram_malloc(n * sizeof *sorted)) == NULL) return; /* out of memory: they stay until
                                                                                    evicted; no window shows them */
    memcpy(sorted, seqs, n * sizeof *sorted);
    qsort(sorted, n, sizeof *sorted, cmp_seq);
  }
  pthread_mutex_lock(&mc->lock);
  for (e = mc->lru_head; e != NULL; e = next) {
    next = e->next;
    if (same_thread(e, t, 0) && (sorted == NULL || bsearch(&e->seq, sorted, n, sizeof *sorted, cmp_seq) != NULL))
      unlink_entry(mc, e, &gone);
  }
  pthread_mutex_unlock(&mc->lock);
  release_gone(gone);
  engram_free(sorted);
}

void th_mc_forget_of(engram_manager_t *mgr, const char *source, const char *ns, const char *id, const uint64_t *seqs,
                     size_t n) {
  uint64_t serial;
  th_mc_thread_t t;
  th_mc_t *mc = th_mc_acquire(mgr, source, 0, &serial);
  if (mc == NULL) return;
  th_mc_thread(&t, serial, ns, id, "", 0);
  th_mc_forget(mc, &t, seqs, n);
  th_mc_release(mc);
}
