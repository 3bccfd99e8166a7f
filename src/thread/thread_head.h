/*
 * thread_head.h — the thread head (include/engram/thread.h, docs/conversations.md): its parsed form, parsing
 * and serialising, the arithmetic of the visible range (holes, trimming), and the storage keys. Pure functions
 * (thread_head.c); thread_change.c and the readers drive the asynchronous calls with them.
 */
#ifndef ENGRAM_THREAD_HEAD_H
#define ENGRAM_THREAD_HEAD_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "engram/thread.h"

/* o[name] for a thread object (a message, a head): cJSON_GetObjectItemCaseSensitive with the first byte compared
 * before a strcmp call — a window looks up a handful of members of each of its messages, and most members differ in
 * their first byte (seq, role, content, tool_calls, metadata, created_at_ms). */
static inline const cJSON *th_get(const cJSON *o, const char *name) {
  const cJSON *c;
  if (o == NULL) return NULL;
  for (c = o->child; c != NULL; c = c->next)
    if (c->string != NULL && c->string[0] == name[0] && strcmp(c->string, name) == 0) return c;
  return NULL;
}

#define TH_GEN_MAX 24
#define TH_HEAD_PREFIX "thread:"
#define TH_MSG_PREFIX "thread-msg:"
/* "thread-msg:" id ":" gen ":" 16 digits + NUL */
#define TH_KEY_MAX (sizeof TH_MSG_PREFIX + ENGRAM_THREAD_ID_MAX + TH_GEN_MAX + 20)

typedef struct {
  char id[ENGRAM_THREAD_ID_MAX + 1];
  char gen[TH_GEN_MAX + 1];
  uint64_t first, last;  /* visible range; empty when first > last */
  int64_t max_messages;  /* 0 = none */
  int64_t ttl_ms;        /* 0 = none */
  int64_t created_at_ms, updated_at_ms;
  int64_t refreshed_at_ms; /* with a TTL: when every visible message was last stored (their expiry ≥ it + 2 × ttl) */
  uint64_t *sys;         /* sequence numbers of visible system messages, ascending */
  size_t nsys;
  uint64_t *holes;       /* deleted sequence numbers inside [first, last], ascending */
  size_t nholes;
  const cJSON *metadata; /* borrowed from the parsed value, or set by the caller */
} th_head_t;

/* Parses a head value: 0; ENGRAM_EINVAL when v is not a head; ENGRAM_ENOMEM when its arrays could not be
 * allocated (a memory shortage must never read as "no head": an append would start a new generation and hide
 * the thread). h is empty on error. Arrays are allocated: th_head_free. */
int th_head_parse(const cJSON *v, th_head_t *h);
void th_head_free(th_head_t *h);
/* A new empty head (first 1, last 0) with a fresh generation. */
void th_head_init(th_head_t *h, const char *id, int64_t now);
/* The head as a value (metadata copied), in one block (thread_block.h: cJSON_Delete of it frees it whole; never
 * add or unlink a node); NULL on ENOMEM. */
cJSON *th_head_value(const th_head_t *h);
/* The thread info object of engram_thread_info; NULL on ENOMEM. */
cJSON *th_head_info(const th_head_t *h, int64_t expires_at_ms);
/* Visible messages. */
uint64_t th_head_count(const th_head_t *h);
/* Non-zero when seq is visible (in range, not deleted). */
int th_head_visible(const th_head_t *h, uint64_t seq);
int th_head_is_system(const th_head_t *h, uint64_t seq);
/* Visible sequence numbers below x (x ≥ first). */
uint64_t th_head_live_below(const th_head_t *h, uint64_t x);
/* Applies max_messages: moves first so that at most max_messages are visible and drops holes / system numbers
 * below it. Returns the old first. */
uint64_t th_head_trim(th_head_t *h);
/* Records seq as deleted (0 or -1 on ENOMEM); seq must be visible. Advances first over leading holes. */
int th_head_delete(th_head_t *h, uint64_t seq);
/* Adds seq to the system list (ascending appends); 0 or -1. */
int th_head_add_system(th_head_t *h, uint64_t seq);

/* 0 when id is a valid thread id, else ENGRAM_EINVAL with engram_last_error() naming the fault ("thread: ..."). */
int th_check_id(const char *id);

void th_head_key(char *buf, size_t size, const char *id);
/* th_msg_key in two steps, for many keys of one thread: the prefix "thread-msg:<id>:<gen>:" into buf (size bytes,
 * room left for the 16 digits) and its length, 0 when it does not fit; then th_msg_key_seq writes seq's 16 digits
 * and the NUL at buf + that length (seq ≤ TH_SEQ_DIGITS_MAX). */
#define TH_SEQ_DIGITS_MAX 9999999999999999ull
size_t th_msg_key_prefix(char *buf, size_t size, const char *id, const char *gen);
void th_msg_key_seq(char *at, uint64_t seq);
void th_msg_key(char *buf, size_t size, const char *id, const char *gen, uint64_t seq);

#endif
