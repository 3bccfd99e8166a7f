/*
 * thread_call.h — what the files of the thread layer share: a call (call_t), the head's update (upd_t), and the
 * functions one file defines and another calls. Internal to src/thread/; the public API is include/engram/thread.h.
 *
 * Layout of the layer (docs/conversations.md): thread_check.c validates arguments; thread_call.c creates, reports
 * and ends calls; thread_change.c makes every change one update of the head; thread_lane.c merges appends to one
 * thread in flight together; thread_append.c, thread_read.c, thread_window.c, thread_delete.c, thread_list.c and
 * thread_context.c are the public functions; thread_head.c, thread_heads.c, thread_hint.c, thread_queue.c,
 * thread_summary.c, thread_render.c and thread_search.c are their parts.
 */
#ifndef ENGRAM_THREAD_CALL_H
#define ENGRAM_THREAD_CALL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "engram/source.h"
#include "engram/thread.h"
#include "thread/thread_head.h"
#include "thread/thread_msgcache.h"
#include "thread/thread_queue.h"
#include "thread/thread_summary.h"


#define UPDATE_ROUNDS 8     /* engram_update calls per change when each ends in ENGRAM_ECONFLICT */
#define DELETE_CHUNK 10000  /* keys per delete_many when trimming */
#define LIST_PAGE 1000      /* list_keys page */
#define WINDOW_PAGE 64      /* first page of a token window */
#define WINDOW_PAGE_MAX 4096

enum { M_APPEND = 1, M_SET, M_DELMSG };

/* What the head's update function reads and writes, and the writes that ride on the update (the messages an
 * append stores, the messages a trim or a delete removes: engram_update_writes_t). Kept apart from the call and
 * counted: when the update is answered early (deadline, cancellation) the source may still run the function
 * later, so the block lives until both the call and every update request that named it are gone (the core
 * releases a request's reference when it frees the request). */
typedef struct {
  atomic_int refs;
  int mode;
  char id[ENGRAM_THREAD_ID_MAX + 1];
  size_t n;                       /* M_APPEND: messages */
  unsigned char *is_system;       /* per message */
  engram_thread_settings_t settings;
  cJSON *set_meta;                /* replacement metadata or NULL */
  uint64_t *del;                  /* M_DELMSG: requested numbers (a copy) */
  size_t n_del;
  /* results of the last run */
  int64_t now;
  uint64_t seq0, old_first, new_first;
  char gen[TH_GEN_MAX + 1];
  int64_t ttl_ms;
  uint64_t *deleted;              /* M_DELMSG: numbers that were visible */
  size_t n_deleted;
  int refresh;                    /* with a TTL: store the visible messages [refresh_from, refresh_to] again */
  uint64_t refresh_from, refresh_to;
  /* the writes, remade on each run of the function */
  cJSON **msgs;                   /* M_APPEND: the prepared messages (seq and created_at_ms set per run) */
  cJSON **meta;                   /* M_APPEND: their item metadata (in the message's block: never freed alone) */
  cJSON **nodes;                  /* M_APPEND: per message, its "seq", its "created_at_ms", its metadata's "seq" */
  char (*keys)[TH_KEY_MAX];       /* M_APPEND: their keys */
  engram_entry_t *entries;
  int64_t *expires;
  uint64_t *versions;
  char **dkeys;                   /* trimmed or deleted messages' keys */
  size_t n_dkeys;
  int trim_carried;               /* the trim's deletes are in the writes (else made apart: over DELETE_CHUNK) */
  uint64_t count;                 /* visible messages after the run */
  th_head_t head;                 /* the head the last run wrote (metadata not kept): the hint after success */
  engram_update_writes_t w;
  /* M_APPEND: the appends merged into this update (thread_queue.h; 1 when alone), part p being messages
   * [part_off[p], part_off[p + 1]); per part, as after that part alone: visible messages and how many it trimmed */
  size_t n_parts;
  uint64_t *part_off, *part_count, *part_trimmed;
  void *block;                    /* M_APPEND: one allocation holding the per-message and per-part arrays above */
} upd_t;

/* Where the next page of a namespace's thread heads starts (thread_heads.h: list and context): after (pos_u,
 * pos_id) in the order (updated_at_ms, id) descending, skipping off more items of the search. */
typedef struct {
  int has_pos;
  int64_t pos_u; /* a head item's updated_at_ms */
  char pos_id[ENGRAM_THREAD_ID_MAX + 1];
  int off;
  int end;       /* the last page has been read */
} th_pager_t;

typedef struct call_s call_t;
struct call_s {
  engram_manager_t *mgr;
  int op;
  engram_cb cb;
  void *ud;
  engram_opts_t o; /* sub-calls: source, ns, deadline_ms, cq */
  char *src, *ns;
  char id[ENGRAM_THREAD_ID_MAX + 1];
  char head_key[sizeof TH_HEAD_PREFIX + ENGRAM_THREAD_ID_MAX];
  char source_name[ENGRAM_SOURCE_NAME_MAX + 1];
  int pending, status, rounds;
  char message[512];
  /* changes (append, set, delete_messages) */
  upd_t *upd;
  size_t n;
  cJSON *head_value;
  uint64_t head_version;
  th_head_t head;
  int have_head;
  int64_t expires_at_ms;
  uint64_t count;
  /* reads */
  engram_window_t win;
  uint64_t from_seq, seq;
  int limit;
  cJSON *sysmsgs, *taken, *open;
  uint64_t walk;    /* next number to look at, walking down (0 = done) */
  size_t page, valid, valid_cnt, cnt, sys_cnt, n_taken;
  uint64_t tok, valid_tok, sys_tok;
  int stopped, over;
  char **keys;      /* keys of the batch in flight */
  size_t n_keys;
  /* window: the message cache (thread_msgcache.h) — the page in flight, each number with its cached entry or
   * its place among the keys read (key_off + j: the head comes first when the hint's read carries it) */
  th_mc_t *mc;               /* with a reference, or NULL: every message is read from the source */
  uint64_t mc_serial, mc_epoch; /* the source's serial; the manager's restore epoch when the call began */
  th_mc_thread_t mct;        /* the thread in it (gen: c->head.gen, set by window_start) */
  th_mc_entry_t **pins;      /* every entry this call looked up or kept: unpinned when the call is freed */
  size_t n_pins, cap_pins;
  struct th_pg_s {
    uint64_t seq;
    th_mc_entry_t *e;        /* cached, or NULL: read (reply item key_off + its rank among the uncached) */
    size_t ri;
    const cJSON *m;          /* set as the page is taken */
  } *pg;
  size_t n_pg, cap_pg, key_off;
  /* window: the summary item */
  char sum_key[TH_KEY_MAX + 16];
  cJSON *sum_value; /* the item's value (a copy), when it parsed */
  th_summary_t sum; /* borrowing from sum_value */
  cJSON *sum_msg;   /* the system message that carries it */
  uint64_t sum_tok;
  uint64_t sum_listed; /* delete: summary items in the batch being deleted */
  /* list */
  char *cursor_in;
  int64_t cur_updated;
  char cur_id[ENGRAM_THREAD_ID_MAX + 1];
  char *list_cursor;
  cJSON *threads;
  char **all_keys;
  size_t n_all, cap_all, heads_done;
  th_pager_t pager; /* list, context: the heads' next page (thread_heads.c) */
  /* appends to one thread in flight together (thread_queue.h) */
  tq_node_t qnode;           /* in the lane's waiting list (call_of: the call around a node) */
  void (*leave)(call_t *c);  /* set while this call is its lane's busy item (thread_lane.c): called as it ends, it lets
                              * the waiting appends go (a hook, so that ending a call does not call up into lanes) */
  uint32_t asked_deadline;   /* the caller's opts.deadline_ms (o.deadline_ms is what remains once merged) */
  int64_t submitted_ms;      /* when the caller made the call: its deadline runs from then */
  size_t part;               /* its part of the (merged) update */
  call_t *members;           /* a merged update's first call: the others merged into it, in arrival order */
  call_t *next_member;
};




/* thread_call.c: a call's life */
call_t *th_call_new(engram_manager_t *mgr, int op, const char *id, const engram_opts_t *opts, engram_cb cb, void *ud);
void th_call_free(call_t *c);
void th_free_keys(char **keys, size_t n);
engram_item_t *th_items_of(call_t *c, const cJSON *arr, size_t *n);
void th_finish(call_t *c, int status, cJSON *info, const cJSON *msgs, uint64_t count, const char *cursor, const char *text);
void th_finish_items(call_t *c, int status, cJSON *info, engram_item_t *items, size_t n, uint64_t count,
                     const char *cursor, const char *text);
void th_fail(call_t *c, int status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
void th_note(call_t *c, int status, const engram_reply_t *r);
/* A sub-call's answer: records its source and first error (th_note); returns 1 when status is 0, else ends the
 * call with that error (its one callback) and returns 0. */
int th_reply_ok(call_t *c, int status, const engram_reply_t *r);
int th_no_thread(call_t *c);
int th_take_head(call_t *c, int status, const engram_reply_t *r);
int th_retrieve_head(call_t *c, engram_cb next);
int th_read_submit(call_t *c, engram_cb next);
int th_make_keys(call_t *c, const uint64_t *seqs, size_t n);
const cJSON *th_msg_of(const engram_reply_t *r, size_t i);
cJSON *th_base_info(call_t *c, cJSON **msgs);
upd_t *th_upd_new(call_t *c, int mode, const engram_thread_settings_t *settings, const cJSON *meta);
void th_upd_free(upd_t *u);
void th_upd_unref(void *ud);
int th_upd_arrays(upd_t *u, size_t n, size_t parts);
int th_update_head(call_t *c);

/* thread_change.c: the head's update */
int th_change_submit(call_t *c);

/* thread_lane.c: lanes of appends to one thread */
unsigned th_lane_depth(const call_t *c);
size_t th_lane_key(const call_t *c, unsigned char *buf);
int th_lane_run(void *arg);

#endif
