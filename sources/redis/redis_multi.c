/*
 * redis_multi.c — an unconditional store as one MULTI ... EXEC of native commands (see redis_multi.h), with the
 * store script's layout and answers:
 *
 *   MULTI
 *   HINCRBY item version 1            the new version: 1 for a new item, +1 over the old one
 *   HSETNX  item created now          created is kept when the item had one
 *   HSET    item value V updated now expires E [metadata M]
 *   HDEL    item metadata             (only when the store has no metadata: the old item's goes)
 *   PEXPIREAT item E | PERSIST item   native TTL in step with the expires field
 *   ZADD    index 0 key               a no-op when the key is indexed already
 *   SADD    namespaces ns
 *   INCR    generation
 *   HGET    item created              the created time to answer with
 *   EXEC
 *
 * What differs from the script, because MULTI runs every queued command even when one fails: the script reads
 * the item first and writes nothing when it is a key of another type (WRONGTYPE), where here the commands that
 * do not touch the hash still run (its TTL set or removed, the key added to the index, the namespace to the
 * set, the generation bumped) and the store fails ENGRAM_EBACKEND with Redis's message; a version field that is
 * not an integer (written by another tool) fails the store the same way with the other fields written, where
 * the script counted from 0. A generation that was absent (INCR answers 1) or not an integer is restarted from
 * the clock by a second command (engram__redis_multi_gen_fix) instead of inside the same step. A transaction
 * refused as a whole (EXECABORT: out of memory under maxmemory) wrote nothing.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "redis_cmd.h"
#include "redis_multi.h"

typedef struct {
  const char *raw, *s; /* the whole "$n\r\n...\r\n", and its content */
  size_t raw_len, n;
} bulk_t;

/* Reads the RESP bulk argument at *p (formatted by this source) and moves *p past it. 0, or -1 at the end. */
static int read_bulk(const char **p, const char *end, bulk_t *o) {
  const char *q = *p, *nl;
  size_t n;
  if (q >= end || *q != '$' || (nl = memchr(q, '\n', (size_t)(end - q))) == NULL) return -1;
  n = (size_t)strtoull(q + 1, NULL, 10);
  if ((size_t)(end - (nl + 1)) < n + 2) return -1;
  o->raw = q;
  o->s = nl + 1;
  o->n = n;
  o->raw_len = (size_t)(o->s + n + 2 - q);
  *p = o->s + n + 2;
  return 0;
}

static void cmd2(engram__rbuf_t *b, size_t n, const char *name, size_t name_len, const bulk_t *key) {
  engram__rbuf_array(b, n);
  engram__rbuf_arg(b, name, name_len);
  engram__rbuf_raw(b, key->raw, key->raw_len);
}

unsigned engram__redis_multi_build(const engram__redis_t *r, engram__rbuf_t *b, const char *ns, size_t ns_len,
                                   const char *hash, size_t hash_len, const char *args, size_t args_len) {
  const char *p = args, *end = args + args_len;
  bulk_t item, a[7];
  int i, meta;
  item.raw = hash;
  item.raw_len = hash_len;
  for (i = 0; i < 7; i++)
    if (read_bulk(&p, end, &a[i]) != 0) return 0;
  if (a[0].n != 1 || a[0].s[0] != '0') return 0; /* create-only, if_version or a replica: the script's */
  meta = a[4].n > 0;
  engram__rbuf_array(b, 1);
  engram__rbuf_arg(b, "MULTI", 5);
  cmd2(b, 4, "HINCRBY", 7, &item);
  engram__rbuf_arg(b, "version", 7);
  engram__rbuf_arg(b, "1", 1);
  cmd2(b, 4, "HSETNX", 6, &item);
  engram__rbuf_arg(b, "created", 7);
  engram__rbuf_raw(b, a[1].raw, a[1].raw_len);
  cmd2(b, meta ? 10 : 8, "HSET", 4, &item);
  engram__rbuf_arg(b, "value", 5);
  engram__rbuf_raw(b, a[3].raw, a[3].raw_len);
  engram__rbuf_arg(b, "updated", 7);
  engram__rbuf_raw(b, a[1].raw, a[1].raw_len);
  engram__rbuf_arg(b, "expires", 7);
  engram__rbuf_raw(b, a[2].raw, a[2].raw_len);
  if (meta) {
    engram__rbuf_arg(b, "metadata", 8);
    engram__rbuf_raw(b, a[4].raw, a[4].raw_len);
  } else {
    cmd2(b, 3, "HDEL", 4, &item);
    engram__rbuf_arg(b, "metadata", 8);
  }
  if (a[2].n == 1 && a[2].s[0] == '0') {
    cmd2(b, 2, "PERSIST", 7, &item);
  } else {
    cmd2(b, 3, "PEXPIREAT", 9, &item);
    engram__rbuf_raw(b, a[2].raw, a[2].raw_len);
  }
  engram__rbuf_array(b, 4);
  engram__rbuf_arg(b, "ZADD", 4);
  engram__redis_arg_index(r, b, ns, ns_len);
  engram__rbuf_arg(b, "0", 1);
  engram__rbuf_raw(b, a[5].raw, a[5].raw_len);
  engram__rbuf_array(b, 3);
  engram__rbuf_arg(b, "SADD", 4);
  engram__redis_arg_nsset(r, b);
  engram__rbuf_arg(b, ns, ns_len);
  engram__rbuf_array(b, 2);
  engram__rbuf_arg(b, "INCR", 4);
  engram__redis_arg_gen(r, b, ns, ns_len);
  cmd2(b, 3, "HGET", 4, &item);
  engram__rbuf_arg(b, "created", 7);
  engram__rbuf_array(b, 1);
  engram__rbuf_arg(b, "EXEC", 4);
  return meta ? 10u : 11u;
}

static void fail(engram__redis_multi_result_t *out, const char *key, size_t key_len, const char *what, size_t n) {
  out->status = ENGRAM_EBACKEND;
  snprintf(out->msg, sizeof out->msg, "key '%.*s': redis: %.*s", (int)(key_len > 200 ? 200 : key_len), key,
           (int)(n > 300 ? 300 : n), what);
}

void engram__redis_multi_answer(const redisReply *reply, const char *key, size_t key_len,
                                engram__redis_multi_result_t *out) {
  const redisReply *incr;
  size_t i, n;
  memset(out, 0, sizeof *out);
  if (reply->type == REDIS_REPLY_ERROR) {
    fail(out, key, key_len, reply->str, reply->len);
    return;
  }
  n = reply->type == REDIS_REPLY_ARRAY ? reply->elements : 0;
  if (n != 8 && n != 9) {
    static const char what[] = "unexpected reply to the store transaction";
    fail(out, key, key_len, what, sizeof what - 1);
    return;
  }
  out->written = reply->element[2]->type != REDIS_REPLY_ERROR;
  incr = reply->element[n - 2];
  out->bumped = incr->type == REDIS_REPLY_INTEGER;
  out->gen_fix = !out->bumped || incr->integer == 1;
  for (i = 0; i < n; i++) /* the first failed command, in order: HINCRBY's WRONGTYPE before the others' */
    if (reply->element[i]->type == REDIS_REPLY_ERROR) {
      fail(out, key, key_len, reply->element[i]->str, reply->element[i]->len);
      return;
    }
  if (reply->element[0]->type != REDIS_REPLY_INTEGER || reply->element[0]->integer <= 0) {
    static const char what[] = "unexpected version from HINCRBY";
    fail(out, key, key_len, what, sizeof what - 1);
    return;
  }
  out->version = (uint64_t)reply->element[0]->integer;
  out->created = engram__redis_int(reply->element[n - 1], 0);
}

void engram__redis_multi_gen_fix(const engram__redis_t *r, engram__rbuf_t *b, const char *ns, size_t ns_len) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  engram__rbuf_array(b, 3);
  engram__rbuf_arg(b, "SET", 3);
  engram__redis_arg_gen(r, b, ns, ns_len);
  engram__rbuf_arg_i64(b, (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000);
}
