/*
 * thread_queue.c — the lanes of appends to one thread (thread_queue.h). A lane exists only while an item of it is
 * in flight: made by the first item, dropped when its last item ends with nobody waiting. Lanes hang in 64 lists
 * by an FNV-1a hash of the key; one mutex guards them all (the work under it is a short list walk and one submit,
 * which queues a request for a source's actor and returns).
 */
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "engram/source.h"
#include "thread/thread_queue.h"

#define TQ_BUCKETS 64

typedef struct lane_s {
  struct lane_s *next;
  uint64_t hash;
  tq_node_t *head, *tail; /* waiting items, arrival order */
  unsigned busy, depth;    /* items in flight, and how many may be */
  size_t len;
  unsigned char key[]; /* len bytes */
} lane_t;

static lane_t *buckets[TQ_BUCKETS];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static uint64_t hash_of(const void *key, size_t len) {
  const unsigned char *b = key;
  uint64_t h = 0xcbf29ce484222325ull;
  while (len--) h = (h ^ *b++) * 0x100000001b3ull;
  return h;
}

/* The lane with this key and the link that points at it (for removal); NULL when none. Under the lock. */
static lane_t **find(const void *key, size_t len, uint64_t h) {
  lane_t **pp = &buckets[h % TQ_BUCKETS];
  for (; *pp != NULL; pp = &(*pp)->next)
    if ((*pp)->hash == h && (*pp)->len == len && memcmp((*pp)->key, key, len) == 0) return pp;
  return NULL;
}

int tq_enter(const void *key, size_t len, unsigned depth, tq_node_t *node, tq_run_fn run, void *arg) {
  uint64_t h = hash_of(key, len);
  lane_t **pp, *l;
  int rc;
  node->next = NULL;
  pthread_mutex_lock(&lock);
  if ((pp = find(key, len, h)) != NULL) {
    l = *pp;
    if (l->busy < l->depth && l->head == NULL) { /* room in flight, nobody waiting: goes at once */
      if ((rc = run(arg)) == 0) l->busy++;
      pthread_mutex_unlock(&lock);
      return rc;
    }
    if (l->tail) l->tail->next = node;
    else l->head = node;
    l->tail = node;
    pthread_mutex_unlock(&lock);
    return 1;
  }
  if ((l = engram_malloc(sizeof *l + len)) == NULL) {
    pthread_mutex_unlock(&lock);
    return ENGRAM_ENOMEM;
  }
  l->hash = h;
  l->head = l->tail = NULL;
  l->busy = 1;
  l->depth = depth ? depth : 1;
  l->len = len;
  memcpy(l->key, key, len);
  if ((rc = run(arg)) == 0) {
    l->next = buckets[h % TQ_BUCKETS];
    buckets[h % TQ_BUCKETS] = l;
  }
  pthread_mutex_unlock(&lock);
  if (rc != 0) engram_free(l);
  return rc;
}

void tq_leave(const void *key, size_t len, tq_take_fn take, void *arg) {
  uint64_t h = hash_of(key, len);
  lane_t **pp, *l = NULL;
  pthread_mutex_lock(&lock);
  if ((pp = find(key, len, h)) != NULL) {
    tq_node_t *list = (*pp)->head, *t;
    (*pp)->busy--;
    if (list != NULL && take(&list, arg)) (*pp)->busy++;
    (*pp)->head = list;
    for (t = list; t != NULL && t->next != NULL; t = t->next) {
    }
    (*pp)->tail = t;
    if ((*pp)->busy == 0 && list == NULL) {
      l = *pp;
      *pp = l->next; /* gone: freed below */
    }
  }
  pthread_mutex_unlock(&lock);
  engram_free(l);
}
