/*
 * redis_src.h — what the files of the redis source share: the instance state, the RESP command buffer, the
 * key encoding of the data layout (docs/sources-redis.md), the Lua scripts, and the request admission and
 * completion helpers. redis.c holds open/close, admission and the single-key operations, redis_store.c the
 * coalescing of stores into calls of the batch store script, redis_batch.c the pipelined batches,
 * redis_update.c the native update, redis_scan.c the operations that walk a namespace index
 * (list_keys, search, count, clear), redis_search.c ranked text search and its cached indexes, redis_rank.c
 * the indexed text of a stored value and the streamed BM25 scorer, redis_opts.c the options, redis_cmd.c the
 * buffer, keys and scripts.
 */
#ifndef ENGRAM_REDIS_SRC_H
#define ENGRAM_REDIS_SRC_H

#include <hiredis/async.h>
#include <string.h>
#include <uv.h>

#include "engram/source.h"
#include "redis_conn.h"

/* The Lua scripts, loaded on every connect (their index is their place in conn.scripts and conn.sha). */
enum { RS_STORE = 0, RS_DELETE, RS_SCAN, RS_CLEAR, RS_STORE_BATCH, RS_COUNT_ };
extern const char *const engram__redis_scripts[RS_COUNT_];

/* A growable buffer in which RESP commands are formatted; failed is set by any allocation failure. */
typedef struct {
  char *p;
  size_t len, cap;
  int failed;
} engram__rbuf_t;

void engram__rbuf_reset(engram__rbuf_t *b);
void engram__rbuf_free(engram__rbuf_t *b);
/* Appends len raw bytes (the slow path grows the buffer). */
void engram__rbuf_raw_slow(engram__rbuf_t *b, const void *s, size_t len);
static inline void engram__rbuf_raw(engram__rbuf_t *b, const void *s, size_t len) {
  if (b->failed || b->len + len > b->cap) {
    engram__rbuf_raw_slow(b, s, len);
    return;
  }
  memcpy(b->p + b->len, s, len);
  b->len += len;
}
/* "*n\r\n" */
void engram__rbuf_array(engram__rbuf_t *b, size_t n);
/* One bulk argument. */
void engram__rbuf_arg(engram__rbuf_t *b, const void *s, size_t len);
void engram__rbuf_arg_str(engram__rbuf_t *b, const char *s);
void engram__rbuf_arg_i64(engram__rbuf_t *b, int64_t v);
/* A bulk argument written in pieces: its header with the total length, raw pieces, then the trailer. */
void engram__rbuf_arg_begin(engram__rbuf_t *b, size_t total);
void engram__rbuf_arg_end(engram__rbuf_t *b);

/* A waiting update chain per (namespace, key): updates through one source never race each other. */
typedef struct engram__redis_lock_s engram__redis_lock_t;
/* Stores coalesced into one call of the batch store script (redis_store.c). */
typedef struct engram__redis_sb_s engram__redis_sb_t;
/* A namespace's entry in the text search cache (redis_search.c). */
typedef struct engram__redis_tc_s engram__redis_tc_t;

typedef struct engram__redis_s {
  engram_source_t *src;
  uv_loop_t *loop;
  engram__redis_conn_t conn;
  char *prefix;
  size_t prefix_len;
  char *address;            /* "host:port" for messages and info */
  unsigned max_inflight;    /* engram requests out on the connection at once */
  unsigned outstanding;
  int wait_for_connection;  /* queue calls while disconnected instead of failing them */
  int lazy;                 /* open without a server */
  int opened;               /* engram_source_opened was called */
  int closing;
  int open_status;          /* a failed open, reported once everything is closed */
  char open_err[300];
  size_t max_value_bytes;
  unsigned update_retries;
  unsigned scan_batch;
  unsigned store_batch;     /* stores per call of the batch store script at most */
  /* Requests waiting for a slot or for the connection, linked through backend_data. */
  engram_request_t *q_head, *q_tail;
  unsigned q_n;
  int pumping;
  uv_timer_t wait_timer;    /* releases queued calls answered by their deadline while disconnected */
  int wait_timer_open;
  int conn_closed;
  engram__redis_lock_t **locks; /* update chains: a small hash table */
  size_t n_locks_buckets;
  engram__rbuf_t cmd;       /* reused for every command */
  /* Store coalescing (redis_store.c): the batch being formed, batches whose send failed (completed from the
   * prepare handle, never inside another command's send), recycled batches, and the prepare handle that sends
   * the batch being formed before the loop polls. */
  engram__redis_sb_t *sb, *sb_failed, *sb_free;
  unsigned sb_n_free;
  engram__rbuf_t bcmd;      /* the batch command being formatted */
  uv_prepare_t prep;
  int prep_open, prep_active;
  char *scratch;            /* reused for JSON text */
  size_t scratch_cap;
  uint64_t lost, unavailable;
  uint64_t store_calls, stores_batched; /* batch store script calls sent, stores that went into them */
  /* Ranked text search (redis_search.c): cached text indexes per namespace, within search_cache_items items. */
  engram__redis_tc_t *tc;
  unsigned n_tc;
  uint64_t tc_tick;
  size_t search_cache_items, tc_items;
  uint64_t search_hits, search_builds, search_walks, search_stale;
  char last_error[256];
} engram__redis_t;

/* ---- Keys of the data layout (redis_cmd.c) ---- */

/* The item hash: prefix "i:" <ns length> ":" ns ":" key. */
void engram__redis_arg_item(const engram__redis_t *r, engram__rbuf_t *b, const char *ns, size_t ns_len, const char *key,
                            size_t key_len);
/* The prefix of every item hash of a namespace: prefix "i:" <ns length> ":" ns ":". */
void engram__redis_arg_item_prefix(const engram__redis_t *r, engram__rbuf_t *b, const char *ns, size_t ns_len);
/* The namespace index (a sorted set of keys, score 0): prefix "x:" <ns length> ":" ns. */
void engram__redis_arg_index(const engram__redis_t *r, engram__rbuf_t *b, const char *ns, size_t ns_len);
/* The namespace's generation, bumped by every script that changes its items: prefix "g:" <ns length> ":" ns. */
void engram__redis_arg_gen(const engram__redis_t *r, engram__rbuf_t *b, const char *ns, size_t ns_len);
/* The set of namespaces: prefix "namespaces". */
void engram__redis_arg_nsset(const engram__redis_t *r, engram__rbuf_t *b);
/* Starts an EVALSHA (or EVAL with use_eval) of script with nkeys keys and nargs arguments to follow. */
void engram__redis_begin_script(const engram__redis_t *r, engram__rbuf_t *b, int script, int use_eval, int nkeys,
                                int nargs);
/* Non-zero when reply is a NOSCRIPT error (the script cache was flushed): resend with EVAL. */
int engram__redis_is_noscript(const redisReply *reply);
/* JSON text of v in r->scratch (or a fresh allocation, *owned = 1, when it does not fit); NULL on ENOMEM. */
char *engram__redis_json(engram__redis_t *r, const cJSON *v, size_t *len, int *owned);
/* Parses JSON text read from Redis into *out: 0, ENGRAM_ENOMEM, or ENGRAM_EBACKEND when the text is not JSON. */
int engram__redis_parse_json(const char *s, size_t n, cJSON **out);
/* The integer in a reply (integer, or a string holding one); def otherwise. */
int64_t engram__redis_int(const redisReply *reply, int64_t def);

/* ---- Items (redis.c) ---- */

/* The fields of an item's hash as HMGET returns them (pointers into the reply). */
typedef struct {
  int found;                /* the hash exists, has a value and has not expired */
  const char *value, *meta; /* JSON text; meta NULL when absent */
  size_t value_len, meta_len;
  int64_t created, updated, expires;
  uint64_t version;
} engram__redis_fields_t;

/* An item's fields copied out of a reply, kept until the results are assembled (scans and text search). */
typedef struct {
  int state; /* 0 waiting, 1 found, 2 missing */
  char *value, *meta;
  size_t value_len, meta_len;
  int64_t created, updated, expires;
  uint64_t version;
} engram__redis_held_t;

/* Sets a ZRANGEBYLEX bound: mark ('(', '[' or '-') followed by s[0..n), growing *buf (*cap bytes) as needed;
 * *len receives its length. 0 or ENGRAM_ENOMEM. */
int engram__redis_set_bound(char **buf, size_t *cap, size_t *len, char mark, const char *s, size_t n);
/* Copies a parsed reply's fields into h (state 1 found, 2 missing). 0 or ENGRAM_ENOMEM. */
int engram__redis_held_take(engram__redis_held_t *h, const engram__redis_fields_t *f);
/* The held fields as a found item's fields (pointing into h). */
engram__redis_fields_t engram__redis_held_fields(const engram__redis_held_t *h);
/* Frees what h holds and resets it. */
void engram__redis_held_release(engram__redis_held_t *h);

/* Formats HMGET of an item's fields (value metadata created updated version expires) into b. */
void engram__redis_build_hmget(const engram__redis_t *r, engram__rbuf_t *b, const char *ns, size_t ns_len,
                               const char *key, size_t key_len);
/* Reads an HMGET reply of those fields; returns 0 or ENGRAM_EBACKEND (not an array of 6). */
int engram__redis_parse_fields(const redisReply *reply, int64_t now, engram__redis_fields_t *f);
/* Adds an item built from f to the reply (value and metadata parsed from their JSON text when asked). Returns 0,
 * ENGRAM_ENOMEM or ENGRAM_EBACKEND (stored text is not JSON). */
int engram__redis_add_item(engram_request_t *req, const char *key, const char *ns, const engram__redis_fields_t *f,
                           int with_value, int with_meta, double score);

/* Formats the store script for one item into r->cmd: create_only, if_version (0 = none), timestamps in Unix ms
 * (expires 0 = never), the value, and metadata as a cJSON object or as JSON text (both NULL = none). Returns
 * 0, ENGRAM_ETOOBIG (value beyond max_value_bytes) or ENGRAM_ENOMEM. */
int engram__redis_build_store(engram__redis_t *r, int use_eval, const char *ns, size_t ns_len, const char *key,
                              size_t key_len, int create_only, uint64_t if_version, int64_t now, int64_t expires,
                              const cJSON *value, const cJSON *meta, const char *meta_text, size_t meta_len);
/* Reads the store script's reply: 0 with *version and *created, ENGRAM_EEXIST, ENGRAM_ECONFLICT, or
 * ENGRAM_EBACKEND. */
int engram__redis_parse_store(const redisReply *reply, uint64_t *version, int64_t *created);
/* Formats the delete script for one item into r->cmd. */
void engram__redis_build_delete(engram__redis_t *r, int use_eval, const char *ns, size_t ns_len, const char *key,
                                size_t key_len);

/* ---- Requests (redis.c) ---- */

/* Sends the command in r->cmd. Returns 0 or ENGRAM_EUNAVAILABLE / ENGRAM_ENOMEM (fn will not run). */
int engram__redis_send(engram__redis_t *r, redisCallbackFn *fn, void *pd);
/* Finishes a started request: completes it with status (and a printf-style message when fmt ≠ NULL), frees its
 * slot and starts waiting requests. */
void engram__redis_finish(engram__redis_t *r, engram_request_t *req, int status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;
/* Finishes req after a failed send (ac = NULL) or a NULL reply (ac = the dying context): ENGRAM_EUNAVAILABLE
 * naming the server and the cause, or rc itself when it is another error (ENGRAM_ENOMEM). */
void engram__redis_finish_unavailable(engram__redis_t *r, engram_request_t *req, const redisAsyncContext *ac, int rc);
/* The message of such a failure, into buf. */
void engram__redis_why(engram__redis_t *r, const redisAsyncContext *ac, char *buf, size_t len);
/* Finishes req with the error reply of redis (ENGRAM_EBACKEND). */
void engram__redis_finish_reply_error(engram__redis_t *r, engram_request_t *req, const redisReply *reply);
/* The state of the source a reply callback belongs to. */
engram__redis_t *engram__redis_of(const redisAsyncContext *ac);

/* ---- Store coalescing (redis_store.c) ---- */

/* Initialises the prepare handle on r->loop. Returns 0 or ENGRAM_EBACKEND. */
int engram__redis_store_init(engram__redis_t *r);
/* Adds the store of req (ENGRAM_OP_STORE, i = 0) or of its entry i (ENGRAM_OP_STORE_MANY) to the batch being
 * formed, which is sent before the loop next polls, when it is full, or before any other command (commands
 * keep their order). Returns 0 (the result comes later: a store is finished, a store_many entry reported with
 * engram__redis_store_many_result), or ENGRAM_ETOOBIG / ENGRAM_ENOMEM (nothing was added, nothing was
 * finished). */
int engram__redis_store_add(engram__redis_t *r, engram_request_t *req, size_t i);
/* Sends the batch being formed, if any. Completes nothing itself: a failed send is reported from the prepare
 * handle. */
void engram__redis_store_flush(engram__redis_t *r);
/* Closing: fails what was never sent ("source closed"), closes the prepare handle (on_closed runs when it is
 * closed), and frees the recycled batches once nothing is in flight (engram__redis_store_free). */
void engram__redis_store_close(engram__redis_t *r, void (*on_closed)(uv_handle_t *));
void engram__redis_store_free(engram__redis_t *r);

/* ---- Batches (redis_batch.c), update (redis_update.c) ---- */

void engram__redis_batch(engram__redis_t *r, engram_request_t *req);
/* The result of entry i of a store_many request: status 0 (with version and created), ENGRAM_EEXIST,
 * ENGRAM_ECONFLICT, or an error that fails the whole call (msg: its message, or NULL). */
void engram__redis_store_many_result(engram__redis_t *r, engram_request_t *req, size_t i, int status,
                                     uint64_t version, int64_t created, const char *msg);
void engram__redis_update(engram__redis_t *r, engram_request_t *req);

/* ---- Options (redis_opts.c) ---- */

typedef struct {
  char *host, *username, *password;
  int port, db;
} engram__redis_endpoint_t;

/* Parses options into r (prefix, windows, timeouts, flags) and e (where to connect). Returns 0, ENGRAM_EINVAL
 * or ENGRAM_ENOMEM with a message in err. */
int engram__redis_parse_options(engram__redis_t *r, const cJSON *options, engram__redis_endpoint_t *e, char *err,
                                size_t errlen);
/* Frees e's strings (wiping the password). */
void engram__redis_endpoint_free(engram__redis_endpoint_t *e);

/* ---- Scans (redis_scan.c) ---- */

void engram__redis_list_keys(engram__redis_t *r, engram_request_t *req);
void engram__redis_search(engram__redis_t *r, engram_request_t *req);
void engram__redis_clear(engram__redis_t *r, engram_request_t *req);

/* ---- Ranked text search (redis_search.c, redis_rank.c) ---- */

/* Search or count with a non-empty query.text. */
void engram__redis_text_search(engram__redis_t *r, engram_request_t *req);
/* Frees every cached index (nothing may use them any more). */
void engram__redis_search_cache_free(engram__redis_t *r);

/* The indexed text of an item (engram_text_of(key, value)) from its stored JSON text, into out (not
 * NUL-terminated; key must be). Returns 0, ENGRAM_ENOMEM, or ENGRAM_EBACKEND when json is not JSON. */
int engram__redis_text_of(engram__rbuf_t *out, const char *key, size_t key_len, const char *json, size_t len);

/* The streamed BM25 scorer: items are added in key order; then scored; then ranked. */
typedef struct engram__redis_rank_s engram__redis_rank_t;
int engram__redis_rank_new(const char *query, engram__redis_rank_t **out);
void engram__redis_rank_free(engram__redis_rank_t *rk);
/* Adds the next item (key order) with its indexed text. Returns 0 or ENGRAM_ENOMEM. */
int engram__redis_rank_add(engram__redis_rank_t *rk, const char *key, size_t key_len, const char *text, size_t len,
                           uint64_t version);
/* The same from the item's stored JSON text, tokenized where it lies; returns 1 (nothing added) when the text
 * is outside the subset it reads (engram__redis_text_of + engram__redis_rank_add then decide). */
int engram__redis_rank_add_json(engram__redis_rank_t *rk, const char *key, size_t key_len, const char *json,
                                size_t len, uint64_t version);
/* Scores the matching items (those holding a query term) once every item was added. */
void engram__redis_rank_score(engram__redis_rank_t *rk);
/* The number of matching items; matching item i's key (NUL-terminated) and score in [0, 1]. */
size_t engram__redis_rank_matching(const engram__redis_rank_t *rk);
const char *engram__redis_rank_key(const engram__redis_rank_t *rk, uint32_t i);
double engram__redis_rank_score_of(const engram__redis_rank_t *rk, uint32_t i);
/* The best m matching items into out (room for m), best first (ties by key); returns how many. */
size_t engram__redis_rank_top(const engram__redis_rank_t *rk, size_t m, uint32_t *out);
/* How many matching items score at least min_score. */
uint64_t engram__redis_rank_count(const engram__redis_rank_t *rk, double min_score);

#endif
