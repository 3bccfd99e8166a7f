/*
 * postgres_group.h — plain stores queued one after another on a connection leave as ONE statement
 * (postgres_group.c): a group op (PGS_STORE_MANY) that holds them as its members and hands each its own row of
 * the statement's result. The connections (postgres_conn.c) make groups when they send a segment and undo one
 * whose statement failed, so that each store runs again alone and a failure stays its own.
 *
 * Why: the server's work per upsert is mostly per statement, not per row — the executor's start-up, the
 * ON CONFLICT projection built for every execution, the protocol's messages (docs/sources-postgres.md,
 * Performance). One statement for up to PG_GROUP_MAX stores pays that once.
 */
#ifndef ENGRAM_POSTGRES_GROUP_H
#define ENGRAM_POSTGRES_GROUP_H

#include <stddef.h>

#include "postgres_op.h"

#define PG_GROUP_MAX 64             /* stores in one group statement */
#define PG_GROUP_BYTES (256 * 1024) /* the group's parameter stays under this (a larger store leaves alone) */

/* Takes from the front of the queue *head a run of groupable stores (op->merge) of distinct (namespace, key), at
 * most PG_GROUP_MAX and PG_GROUP_BYTES of parameter, and returns one op (stmt PGS_STORE_MANY, its members linked in
 * queue order) to send in their place; *head then points past them and *taken says how many left the queue.
 * NULL (nothing taken) when the front op is not groupable or no second store can join it, or out of memory: the
 * ops are then sent one by one, as they are. The group op answers its members through their own done, each
 * exactly once: status 0 with the result and op->row set to the member's row (-1: the result has none), or the
 * group's failure. Uses no connection: only the ops and the statement's parameter text. */
pg_op_t *engram__pg_group_take(pg_op_t **head, size_t *taken);

/* Undoes a group whose statement failed: frees the group op and returns its members in order (linked by next,
 * *tail the last, *n how many), no longer groupable, to be queued again and sent one by one. */
pg_op_t *engram__pg_group_split(pg_op_t *group, pg_op_t **tail, size_t *n);

#endif
