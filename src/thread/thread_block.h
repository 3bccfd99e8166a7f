/*
 * thread_block.h — cJSON trees built in one allocation (thread_block.c), for the values an append makes by the
 * thousand: a message's stored object with its item metadata, and the thread's head.
 *
 * A block holds every node, then every string. Its first node is the root, flagged cJSON_IsReference, so that
 * cJSON_Delete of the root frees the block whole and touches nothing inside it — the convention of the cache's
 * reply trees (sources/cache/cache_image.h), which the core knows (engram_reply_take_value copies such a root).
 * Such a tree may be read, printed, duplicated, and put into or taken out of an array or object as a whole; never
 * add, unlink or free a node inside it. Member names given to the builders are string literals (not copied);
 * strings and copied subtrees are copied into the block. Pure functions, any thread.
 */
#ifndef ENGRAM_THREAD_BLOCK_H
#define ENGRAM_THREAD_BLOCK_H

#include <stddef.h>

#include <cjson/cJSON.h>

typedef struct {
  cJSON *node; /* the next free node */
  char *str;   /* the next free string byte */
} th_block_t;

/* Adds what a copy of v takes to *nodes and *bytes (v may be NULL: nothing). */
void th_block_measure(const cJSON *v, size_t *nodes, size_t *bytes);
/* Allocates a block of nodes and bytes (through cJSON's hooks) and returns its root, an empty node of type type
 * flagged cJSON_IsReference; NULL when out of memory. */
cJSON *th_block_new(th_block_t *b, size_t nodes, size_t bytes, int type);
/* Each appends a member (name: a string literal; NULL for an array element) to parent and returns it. The
 * block must have room for it (measured beforehand). */
cJSON *th_block_add(th_block_t *b, cJSON *parent, const char *name, int type);
cJSON *th_block_num(th_block_t *b, cJSON *parent, const char *name, double v);
cJSON *th_block_str(th_block_t *b, cJSON *parent, const char *name, const char *s); /* s copied: strlen + 1 bytes */
cJSON *th_block_ref(th_block_t *b, cJSON *parent, const char *name, const char *s); /* s referred to, not copied */
/* Links item (its next and prev NULL) as parent's last child, as cJSON does; a block root linked into another
 * block's array stays its own block's (cJSON_Delete of the array's block leaves it alone). */
void th_block_link(cJSON *parent, cJSON *item);
cJSON *th_block_copy(th_block_t *b, cJSON *parent, const char *name, const cJSON *v); /* th_block_measure(v) */

#endif
