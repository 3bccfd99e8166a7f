/*
 * redis_cmd.h — the vocabulary of the redis source's commands: the Redis keys of the data layout
 * (docs/sources-redis.md), the header of a script call (EVALSHA with the SHA the connection loaded; a flushed
 * script cache is redis_pipe.c's business), ZRANGEBYLEX bounds, and the integer reader every reply callback
 * uses. Each
 * key is written as one bulk argument straight into a command buffer.
 */
#ifndef ENGRAM_REDIS_CMD_H
#define ENGRAM_REDIS_CMD_H

#include <hiredis/hiredis.h>
#include <stddef.h>
#include <stdint.h>

#include "redis_rbuf.h"
#include "redis_script.h"
#include "redis_state.h"

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
/* Starts an EVALSHA of script (RS_*) with nkeys keys and nargs arguments to follow. */
void engram__redis_begin_script(const engram__redis_t *r, engram__rbuf_t *b, int script, int nkeys, int nargs);
/* Sets a ZRANGEBYLEX bound: mark ('(', '[' or '-') followed by s[0..n), growing *buf (*cap bytes) as needed;
 * *len receives its length. 0 or ENGRAM_ENOMEM. */
int engram__redis_set_bound(char **buf, size_t *cap, size_t *len, char mark, const char *s, size_t n);

/* The integer in a reply (integer, or a string holding one); def otherwise. */
int64_t engram__redis_int(const redisReply *reply, int64_t def);

#endif
