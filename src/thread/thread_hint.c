/*
 * thread_hint.c — the per-process hint table of thread heads (thread_hint.h).
 *
 * 256 slots, direct-mapped by a 64-bit FNV-1a hash of (manager, source option, namespace, id); a slot keeps the
 * full hash, so two threads share a slot only by replacing each other. A slot holds at most HINT_NUMS system and
 * deleted numbers together: a head with more is not hinted (its window takes the two round trips). One mutex;
 * the work under it is a copy of under 200 bytes.
 */
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include <stddef.h>

#include "engram/source.h"
#include "thread/thread_hint.h"

#define HINT_SLOTS 256
#define HINT_NUMS 14

typedef struct {
  uint64_t hash; /* 0 = empty */
  uint64_t first, last;
  uint8_t nsys, nholes;
  char gen[TH_GEN_MAX + 1];
  uint64_t nums[HINT_NUMS]; /* system numbers, then deleted ones */
} slot_t;

static slot_t slots[HINT_SLOTS];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

uint64_t th_hint_hash(const void *mgr, const char *source, const char *ns, const char *id) {
  uint64_t h = th_fnv(0xcbf29ce484222325ull, &mgr, sizeof mgr);
  h = th_fnv(h, source ? source : "", source ? strlen(source) + 1 : 1);
  h = th_fnv(h, ns ? ns : "", ns ? strlen(ns) + 1 : 1);
  h = th_fnv(h, id, strlen(id) + 1);
  return h ? h : 1;
}

void th_hint_put(uint64_t hash, const th_head_t *h) {
  slot_t s, *d = &slots[hash % HINT_SLOTS];
  if (h->nsys + h->nholes > HINT_NUMS) {
    pthread_mutex_lock(&lock);
    if (d->hash == hash) d->hash = 0; /* what it said is out of date */
    pthread_mutex_unlock(&lock);
    return;
  }
  s.hash = hash;
  s.first = h->first;
  s.last = h->last;
  s.nsys = (uint8_t)h->nsys;
  s.nholes = (uint8_t)h->nholes;
  memcpy(s.gen, h->gen, sizeof s.gen);
  if (h->nsys) memcpy(s.nums, h->sys, h->nsys * sizeof *h->sys);
  if (h->nholes) memcpy(s.nums + h->nsys, h->holes, h->nholes * sizeof *h->holes);
  pthread_mutex_lock(&lock);
  memcpy(d, &s, offsetof(slot_t, nums) + (h->nsys + h->nholes) * sizeof *s.nums);
  pthread_mutex_unlock(&lock);
}

int th_hint_get(uint64_t hash, th_head_t *h) {
  slot_t s;
  const slot_t *d = &slots[hash % HINT_SLOTS];
  memset(h, 0, sizeof *h);
  pthread_mutex_lock(&lock);
  s = *d;
  pthread_mutex_unlock(&lock);
  if (s.hash != hash) return 0;
  if (s.nsys && (h->sys = engram_malloc(s.nsys * sizeof *h->sys)) == NULL) return -1;
  if (s.nholes && (h->holes = engram_malloc(s.nholes * sizeof *h->holes)) == NULL) {
    th_head_free(h);
    return -1;
  }
  h->nsys = s.nsys;
  h->nholes = s.nholes;
  if (s.nsys) memcpy(h->sys, s.nums, s.nsys * sizeof *s.nums);
  if (s.nholes) memcpy(h->holes, s.nums + s.nsys, s.nholes * sizeof *s.nums);
  h->first = s.first;
  h->last = s.last;
  memcpy(h->gen, s.gen, sizeof h->gen);
  return 1;
}

int th_hint_same(const th_head_t *a, const th_head_t *b) {
  return a->first == b->first && a->last == b->last && a->nsys == b->nsys && a->nholes == b->nholes &&
         strcmp(a->gen, b->gen) == 0 && (a->nsys == 0 || memcmp(a->sys, b->sys, a->nsys * sizeof *a->sys) == 0) &&
         (a->nholes == 0 || memcmp(a->holes, b->holes, a->nholes * sizeof *a->holes) == 0);
}
