/*
 * redis_item.h — an item of the redis source as Redis holds it, in both directions: the commands that read,
 * store and delete one item (HMGET of its fields, the one-item store script, the delete script, formatted into
 * r->cmd or a given buffer), and the decoding of what comes back (the fields of an HMGET reply, copied out when
 * they must outlive it, turned into a reply item). Every operation that touches items uses these; they send
 * nothing and finish nothing themselves.
 */
#ifndef ENGRAM_REDIS_ITEM_H
#define ENGRAM_REDIS_ITEM_H

#include <hiredis/hiredis.h>
#include <stddef.h>
#include <stdint.h>

#include "redis_rbuf.h"
#include "redis_state.h"

/* An item's stamp (the `stamp` field: the namespace's generation when the item was last written, decimal text,
 * redis_script.c) is at most ENGRAM__REDIS_STAMP_MAX - 1 bytes as engram keeps it; an update's condition, its
 * version ":" stamp, fits ENGRAM__REDIS_COND_MAX. */
#define ENGRAM__REDIS_STAMP_MAX 32
#define ENGRAM__REDIS_COND_MAX (21 + ENGRAM__REDIS_STAMP_MAX)

/* The fields of an item's hash as HMGET returns them (pointers into the reply). */
typedef struct {
  int found;                /* the hash exists, has a value and has not expired */
  const char *value, *meta; /* JSON text; meta NULL when absent */
  size_t value_len, meta_len;
  const char *stamp;        /* the update read's only (engram__redis_build_update_read); NULL when absent */
  size_t stamp_len;
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

/* Formats HMGET of an item's fields (value metadata created updated version expires) into b. */
void engram__redis_build_hmget(const engram__redis_t *r, engram__rbuf_t *b, const char *ns, size_t ns_len,
                               const char *key, size_t key_len);
/* Formats an update's read into b: HMGET of those six fields and `stamp`, the seventh. */
void engram__redis_build_update_read(const engram__redis_t *r, engram__rbuf_t *b, const char *ns, size_t ns_len,
                                     const char *key, size_t key_len);
/* Reads an HMGET reply of those fields (six, or seven with the stamp); returns 0 or ENGRAM_EBACKEND (not an
 * array of 6 or 7). */
int engram__redis_parse_fields(const redisReply *reply, int64_t now, engram__redis_fields_t *f);
/* The read of one item for retrieve and retrieve_many: with ENGRAM_OPT_INCLUDE_METADATA in flags the HMGET of the
 * six fields, else the HMGET of `value` and `expires` only (a third of the fields for Redis to look up and for
 * hiredis to hand back as reply objects; the item then carries no version, times or metadata, as the flag
 * documents). engram__redis_parse_read reads the reply of the same flags into f (the other fields 0); 0 or
 * ENGRAM_EBACKEND (not the reply of that HMGET). */
void engram__redis_build_read(const engram__redis_t *r, engram__rbuf_t *b, const char *ns, size_t ns_len,
                              const char *key, size_t key_len, unsigned flags);
int engram__redis_parse_read(const redisReply *reply, unsigned flags, int64_t now, engram__redis_fields_t *f);

/* Copies a parsed reply's fields into h (state 1 found, 2 missing). 0 or ENGRAM_ENOMEM. */
int engram__redis_held_take(engram__redis_held_t *h, const engram__redis_fields_t *f);
/* The held fields as a found item's fields (pointing into h). */
engram__redis_fields_t engram__redis_held_fields(const engram__redis_held_t *h);
/* Frees what h holds and resets it. */
void engram__redis_held_release(engram__redis_held_t *h);

/* Adds an item built from f to the reply (value and metadata parsed from their JSON text when asked). Returns 0,
 * ENGRAM_ENOMEM or ENGRAM_EBACKEND (stored text is not JSON). */
int engram__redis_add_item(engram_request_t *req, const char *key, const char *ns, const engram__redis_fields_t *f,
                           int with_value, int with_meta, double score);

/* Formats the store script for one item into r->cmd: create_only, if_version (0 = none) with the stamp read
 * along with it (if_stamp_len 0: the item had none; ENGRAM__REDIS_STAMP_MAX or more: the version alone is
 * compared), timestamps in Unix ms (expires 0 = never), the value, and metadata as a cJSON object or as JSON
 * text (both NULL = none). Returns 0, ENGRAM_ETOOBIG (value beyond max_value_bytes) or ENGRAM_ENOMEM. */
int engram__redis_build_store(engram__redis_t *r, const char *ns, size_t ns_len, const char *key,
                              size_t key_len, int create_only, uint64_t if_version, const char *if_stamp,
                              size_t if_stamp_len, int64_t now, int64_t expires, const cJSON *value, const cJSON *meta,
                              const char *meta_text, size_t meta_len);
/* Reads the store script's reply: 0 with *version, *created and the stamp written (stamp, *stamp_len),
 * ENGRAM_EEXIST, ENGRAM_ECONFLICT, or ENGRAM_EBACKEND. */
int engram__redis_parse_store(const redisReply *reply, uint64_t *version, int64_t *created,
                              char stamp[ENGRAM__REDIS_STAMP_MAX], size_t *stamp_len);
/* Copies a stamp a script answered (e: a string reply, NULL = none) into stamp: 0, or ENGRAM_EBACKEND (not a
 * string, or ENGRAM__REDIS_STAMP_MAX bytes or more). */
int engram__redis_take_stamp(const redisReply *e, char stamp[ENGRAM__REDIS_STAMP_MAX], size_t *stamp_len);
/* Formats the update_writes script into r->cmd: the updated item (ns, key) conditional on its version and stamp
 * (found; the stamp as engram__redis_build_store's) or on its absence, written with value, the metadata text it had (NULL = none), now and expires (0 = never),
 * then w's stores (upserts at now, each with its own expiry) and deletes, in one namespace. Returns 0,
 * ENGRAM_ETOOBIG (a value beyond max_value_bytes) or ENGRAM_ENOMEM. */
int engram__redis_build_update_writes(engram__redis_t *r, const char *ns, size_t ns_len, const char *key,
                                      size_t key_len, int found, uint64_t version, const char *stamp,
                                      size_t stamp_len, int64_t now, int64_t expires, const cJSON *value,
                                      const char *meta_text, size_t meta_len, const engram_update_writes_t *w);
/* Formats the delete script for one item into r->cmd. */
void engram__redis_build_delete(engram__redis_t *r, const char *ns, size_t ns_len, const char *key,
                                size_t key_len);

#endif
