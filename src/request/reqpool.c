/*
 * reqpool.c — per-thread reuse of request blocks.
 *
 * The pool knows nothing of requests: it keeps blocks of the one size its caller (request.c) always asks for.
 * Every call allocates one request block of about 1.6 KiB and frees it once its callback has run, usually on the
 * same thread (the actor drops its reference before routing the answer home). Blocks of that size are above
 * glibc's fast bins and overflow its per-thread cache as soon as hundreds of calls are in flight, so each call
 * paid for a trip through the arena (consolidation, and a lock shared with the actor thread): a fifth of a
 * cache call's time. Each thread now keeps freed blocks of one standard size in a thread-local list and hands
 * them out again. Nothing is shared, so nothing is locked.
 *
 * How many it keeps (pool_max): a burst of more calls than the pool holds pays the allocator again for the rest,
 * and on a home loop that is when it hurts. bench_cache's open loop submits up to 1,000 due calls in a loop turn
 * and the home-loop cache answers them in the next, so the pool takes 1,000 blocks back and is asked for 1,000
 * more; with 512 kept, the other 488 went through glibc's free and malloc of a 1.6 KiB block (callgrind of that
 * section while engram was behind: ~190 instructions a call in the pool's get and ~170 in its put, against ~30
 * in each with every block kept: ~8 % of a store's ~3,800 on the home loop). That cost arrives exactly when calls queue up, so it slowed the draining of a
 * backlog (docs/benchmarks.md, Cache p99 at 50 %). Requests keep up to 2,048 blocks (about 3.3 MiB per thread at
 * most, held until engram_release_thread_cache or the thread's exit); the other kinds keep 512.
 *
 * The same reuse serves the other fixed-size block every call of a front layer allocates: the state of a
 * conversation call (src/thread, about 2 KiB, which paid the same consolidation: a seventh of a cache append).
 * Each kind of block has a list of its own (engram__pool_kind_t), since a list holds blocks of one size.
 *
 * Each kept block remembers the free function of the allocator that made it, so a block outlives an
 * engram_set_allocator swap safely: it is never handed out under a different allocator and is released with
 * its own. A thread's blocks are released when the thread exits (a pthread key destructor), and on demand with
 * engram_release_thread_cache (leak checks, or after a burst).
 */
#include <pthread.h>
#include <stdint.h>

#include "engram/source.h"
#include "request/reqpool.h"

/* Blocks kept per thread and kind (see above): a request block is about 1.6 KiB, a conversation call's state 2 KiB. */
static const unsigned pool_max[ENGRAM__POOL_KINDS] = {2048u, 512u};

void (*engram__allocator_free_fn(void))(void *);

typedef struct pooled_s {
  struct pooled_s *next;
  void (*free_fn)(void *);
} pooled_t;

typedef struct {
  pooled_t *head;
  unsigned n;
  int registered; /* the exit destructor knows this thread */
} reqpool_t;

static _Thread_local reqpool_t pools[ENGRAM__POOL_KINDS];
static pthread_key_t pool_key;
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;
static int pool_key_ok;

static void release(reqpool_t *p) {
  pooled_t *b;
  while ((b = p->head) != NULL) {
    p->head = b->next;
    b->free_fn(b);
  }
  p->n = 0;
}

static void release_all(reqpool_t *p) {
  unsigned k;
  for (k = 0; k < ENGRAM__POOL_KINDS; k++) release(&p[k]);
}

static void on_thread_exit(void *arg) { release_all(arg); }

static void make_key(void) { pool_key_ok = pthread_key_create(&pool_key, on_thread_exit) == 0; }

void *engram__reqpool_get(engram__pool_kind_t kind, size_t block_size) {
  reqpool_t *p = &pools[kind];
  pooled_t *b;
  void (*free_fn)(void *) = engram__allocator_free_fn();
  while ((b = p->head) != NULL) {
    p->head = b->next;
    p->n--;
    if (b->free_fn == free_fn) return b;
    b->free_fn(b); /* made by an allocator that has been replaced since */
  }
  return engram_malloc(block_size);
}

void engram__reqpool_put(engram__pool_kind_t kind, void *block) {
  reqpool_t *p = &pools[kind];
  pooled_t *b = block;
  if (p->n >= pool_max[kind]) {
    engram_free(block);
    return;
  }
  if (!pools[0].registered) { /* the first kind carries the registration of the thread's whole array */
    pthread_once(&pool_once, make_key);
    if (!pool_key_ok || pthread_setspecific(pool_key, pools) != 0) {
      engram_free(block); /* no way to release the pool at thread exit: do not keep anything */
      return;
    }
    pools[0].registered = 1;
  }
  b->free_fn = engram__allocator_free_fn();
  b->next = p->head;
  p->head = b;
  p->n++;
}

void engram_release_thread_cache(void) { release_all(pools); }
