/*
 * redis_state.h — the per-instance state of the redis source (the instance_size bytes the core allocates
 * zeroed), which every file of the source shares. It holds data only; its fields are grouped by the file that
 * owns them (sets them up, changes them, frees them): other files read them, and change only the shared buffers
 * and what the comments say. The private types of the higher files (store batches, update chains, cached text
 * indexes) appear here as opaque pointers only.
 *
 * The files of the source by level (a file calls only files of lower levels, and within a level only the ones
 * named before it; docs/sources-redis.md draws the same picture):
 *   1. redis_rbuf (command buffer), redis_json (JSON text), redis_script (Lua scripts), redis_uv (libuv adapter);
 *   2. redis_conn (the connection), redis_pipe (the commands in flight on it, kept in order across a flushed
 *      script cache), redis_rank (text scanner, streamed BM25) — none knows this state;
 *   3. redis_cmd (keys of the data layout, script calls), redis_item (an item's commands and replies),
 *      redis_opts (options);
 *   4. redis_call (admission, sending, finishing a call);
 *   5. redis_store (stores coalesced into batch script calls);
 *   6. the operations: redis_single, redis_batch, redis_update, redis_search, redis_scan;
 *      and redis_notify (the invalidation channel: a listening connection of its own, watch / unwatch);
 *   7. redis.c (the vtable, open, close, dispatch, info).
 * Where a lower file reports upward it calls a function it was given by redis.c: the call layer's start (run an
 * admitted request) and before_send (send the stores formed first), the store coalescing's stored (a store's
 * result), the close notices of both, and the connection's callbacks (redis_conn.h).
 */
#ifndef ENGRAM_REDIS_STATE_H
#define ENGRAM_REDIS_STATE_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "engram/source.h"
#include "redis_conn.h"
#include "redis_json.h"
#include "redis_pipe.h"
#include "redis_rbuf.h"

typedef struct engram__redis_s engram__redis_t;
/* A waiting update chain per (namespace, key): updates through one source never race each other (redis_update.c). */
typedef struct engram__redis_lock_s engram__redis_lock_t;
/* Stores coalesced into one call of the batch store script (redis_store.c). */
typedef struct engram__redis_sb_s engram__redis_sb_t;
/* A namespace's entry in the text search cache (redis_search.c). */
typedef struct engram__redis_tc_s engram__redis_tc_t;

/* Runs a request admitted to the window (redis_call.c calls it; redis.c dispatches by operation). */
typedef void engram__redis_start_fn(engram__redis_t *r, engram_request_t *req);
/* A notice to a higher file: before every command sent through engram__redis_send (redis_store.c sends the
 * stores formed before it), or a handle closed (redis.c waits for every one before reporting the close). */
typedef void engram__redis_hook_fn(engram__redis_t *r);
/* The result of a coalesced store: of req (ENGRAM_OP_STORE, i = 0) or of its entry i (ENGRAM_OP_STORE_MANY).
 * status 0 (with version and created), ENGRAM_EEXIST, ENGRAM_ECONFLICT, or another error with its message in
 * msg (or NULL / ""). Called exactly once per store added (redis_store.c calls it; redis.c routes it). */
typedef void engram__redis_stored_fn(engram__redis_t *r, engram_request_t *req, size_t i, int status,
                                     uint64_t version, int64_t created, const char *msg);

struct engram__redis_s {
  /* redis.c: the instance, its lifecycle and the address ("host:port", for messages and info). */
  engram_source_t *src;
  uv_loop_t *loop;
  char *address;
  int lazy;                 /* open without a server */
  int opened;               /* engram_source_opened was called */
  int closing;              /* close started: nothing new is sent (read by every file) */
  int open_status;          /* a failed open, reported once everything is closed */
  char open_err[300];
  int conn_closed;
  uint64_t lost;            /* connections lost */
  char last_error[256];     /* the last connection failure (read by redis_call.c for messages) */

  /* redis_conn.c: the connection (configured by redis_opts.c and redis.c). */
  engram__redis_conn_t conn;
  /* redis_pipe.c: every command of a call goes through it (set up and freed by redis.c). */
  engram__redis_pipe_t pipe;

  /* redis_opts.c: the configuration. */
  char *prefix;             /* every Redis key starts with it (redis_cmd.c) */
  size_t prefix_len;
  unsigned max_inflight;    /* engram requests out on the connection at once (redis_call.c) */
  int wait_for_connection;  /* queue calls while disconnected instead of failing them (redis_call.c) */
  size_t max_value_bytes;   /* redis_item.c, redis_store.c */
  unsigned update_retries;  /* redis_update.c */
  unsigned scan_batch;      /* redis_scan.c, redis_search.c */
  unsigned store_batch;     /* stores per call of the batch store script at most (redis_store.c) */
  size_t search_cache_items; /* redis_search.c */

  /* Shared buffers: every command is formatted into cmd (then sent by engram__redis_send), JSON is printed
   * into scratch (redis_json.h). Freed by redis.c. */
  engram__rbuf_t cmd;
  engram__redis_scratch_t scratch;

  /* redis_call.c: admission. Requests waiting for a slot or for the connection, linked through backend_data. */
  engram__redis_start_fn *start;
  engram__redis_hook_fn *before_send;
  unsigned outstanding;
  engram_request_t *q_head, *q_tail;
  unsigned q_n;
  int pumping;
  uv_timer_t wait_timer;    /* releases queued calls answered by their deadline while disconnected */
  int wait_timer_open;
  engram__redis_hook_fn *wait_timer_closed; /* closing: runs once the wait timer is closed */
  uint64_t unavailable;     /* calls failed with ENGRAM_EUNAVAILABLE (also counted by redis_single.c) */

  /* redis_store.c: store coalescing — the batch being formed, batches whose send failed (completed from the
   * prepare handle, never inside another command's send), recycled batches, the prepare handle that sends the
   * batch being formed before the loop polls, and where results go. */
  engram__redis_stored_fn *stored;
  engram__redis_sb_t *sb, *sb_failed, *sb_free;
  unsigned sb_n_free;
  engram__rbuf_t bcmd;      /* the batch command being formatted */
  uv_prepare_t prep;
  int prep_open, prep_active;
  engram__redis_hook_fn *prep_closed; /* closing: runs once the prepare handle is closed */
  uint64_t store_calls, stores_batched; /* batch store script calls sent, stores that went into them */

  /* redis_update.c: update chains, a small hash table. */
  engram__redis_lock_t **locks;

  /* redis_search.c: cached text indexes per namespace, within search_cache_items items, and counters. */
  engram__redis_tc_t *tc;
  unsigned n_tc;
  uint64_t tc_tick;
  size_t tc_items;
  uint64_t search_hits, search_builds, search_walks, search_stale;

  /* redis_notify.c: the invalidation channel's listener and watchers, NULL until the first watch. */
  struct engram__redis_notify_s *notify;
};

#endif
