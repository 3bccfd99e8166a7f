/*
 * redis_multi.h — an unconditional store as native commands in one MULTI ... EXEC instead of a Lua script call:
 * the same data layout, versions, created time, metadata removal, TTL, index, namespace set and generation bump
 * (docs/sources-redis.md, "One store in flight"). Why: at one call in flight the server's time is on the round
 * trip, and the script's fixed cost (a Lua call and its KEYS / ARGV tables, about 48 k of redis-server's
 * instructions) is most of a store's; the transaction costs the server about a fifth less. Only a store with
 * no create-only, no if_version and no replica fields fits (those need the item read first, which MULTI cannot
 * branch on); redis_store.c decides when to use it.
 *
 * Level 3 of the source (after redis_cmd, redis_item): formats and reads, sends nothing.
 */
#ifndef ENGRAM_REDIS_MULTI_H
#define ENGRAM_REDIS_MULTI_H

#include <hiredis/hiredis.h>
#include <stddef.h>
#include <stdint.h>

#include "redis_rbuf.h"
#include "redis_state.h"

/* What the EXEC reply of a store said. status 0: written, with version and created. Else ENGRAM_EBACKEND with
 * msg naming the key and Redis's error (a key of another type, an index of another type, a version field that
 * is not an integer, a transaction refused); written tells whether the hash was written all the same (MULTI
 * does not stop at a failed command). bumped: the generation's INCR succeeded; gen_fix: it answered 1 (the
 * generation was absent) or an error, so the caller restarts it from the clock (engram__redis_multi_gen_fix). */
typedef struct {
  int status;
  int written, bumped, gen_fix;
  uint64_t version;
  int64_t created;
  char msg[360];
} engram__redis_multi_result_t;

/* Formats into b (appending) the MULTI ... EXEC of one store of namespace (ns, ns_len): hash is the item hash's
 * RESP bulk argument and args its 7 store arguments as redis_store.c formats them for the store scripts (cond,
 * now, expires, value, metadata, key, slot; docs/sources-redis.md). Returns the number of commands formatted
 * (10 or 11; check b->failed), or 0 with b untouched when the store is conditional (cond is not "0": create-only,
 * if_version or a replica), which the script must do. */
unsigned engram__redis_multi_build(const engram__redis_t *r, engram__rbuf_t *b, const char *ns, size_t ns_len,
                                   const char *hash, size_t hash_len, const char *args, size_t args_len);
/* Reads the EXEC reply (not NULL) of a store formatted by engram__redis_multi_build, for key (in messages). */
void engram__redis_multi_answer(const redisReply *reply, const char *key, size_t key_len,
                                engram__redis_multi_result_t *out);
/* Formats into b (appending) the restart of the generation of (ns, ns_len): SET to the client's clock in
 * microseconds, as the scripts restart it from the server's (redis_script.c, BUMP_LUA). One command. */
void engram__redis_multi_gen_fix(const engram__redis_t *r, engram__rbuf_t *b, const char *ns, size_t ns_len);

#endif
