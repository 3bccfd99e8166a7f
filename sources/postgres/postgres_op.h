/*
 * postgres_op.h — the unit of work of the PostgreSQL source (postgres_op.c): an op is one statement with its
 * parameters and the function that receives its result, plus the small helpers every method file uses on
 * results (a jsonb or bigint column) and on failures (one message shape).
 *
 * The connections (postgres_conn.c) queue and send ops and hand each back exactly once through op->done; the
 * method files build them. This file uses no other file of the folder.
 */
#ifndef ENGRAM_POSTGRES_OP_H
#define ENGRAM_POSTGRES_OP_H

#include <libpq-fe.h>
#include <stdint.h>

#include "engram/source.h"

#define PG_MAX_PARAMS 14
#define PG_OP_NUMS 7 /* room for numeric and other short parameters in an op */

typedef struct pg_op_s pg_op_t;

/* Called once per op when its segment is done: status 0 with res (PGRES_TUPLES_OK / PGRES_COMMAND_OK), or an
 * error status (ENGRAM_EBACKEND, ENGRAM_ETIMEDOUT, ENGRAM_EUNAVAILABLE, ENGRAM_ECANCELED) with res NULL and msg.
 * It owns op (engram__pg_op_free or engram__pgc_submit it again); res is cleared after it returns. */
typedef void (*pg_done_fn)(pg_op_t *op, int status, PGresult *res, const char *msg);

struct pg_op_s {
  pg_op_t *next;
  pg_done_fn done;
  engram_request_t *req; /* the call, or NULL for the connection's own work */
  void *ctx;             /* shared state of a multi-op call */
  size_t index;          /* batch item / statement to prepare */
  int stmt;              /* pg_stmt_t (postgres_sql.h) */
  const char *sql;       /* PGS_SQL */
  int nparams;
  const char *values[PG_MAX_PARAMS];
  char *json[2];         /* cJSON-printed texts the op owns (cJSON_free) */
  char *heap[2];         /* other texts the op owns (engram_free) */
  PGresult *res;         /* held until the segment's Sync */
  unsigned got : 1;      /* res received; its NULL terminator comes next */
  unsigned setup : 1;    /* part of the connection's setup */
  unsigned char tries;   /* resends after a transient failure (deadlock, serialization) */
  unsigned merge : 1;    /* a plain upsert (PGS_STORE) that may leave inside a group (postgres_group.c) */
  int row;               /* the result's row that answers this op: 0, or its place in a group's rows; -1: none */
  pg_op_t *members;      /* a group (PGS_STORE_MANY): its stores, in queue order (linked by next) */
  char num[PG_OP_NUMS][24]; /* room for numeric and short text parameters */
};

pg_op_t *engram__pg_op_new(engram_request_t *req, int stmt, pg_done_fn done);
void engram__pg_op_free(pg_op_t *op);
/* Sets parameter i to a decimal number (kept in the op). */
void engram__pg_op_num(pg_op_t *op, int i, int64_t v);
/* Sets parameter i to a copy of s, kept in the op: at most 23 bytes (a ctid's text), longer is cut. */
void engram__pg_op_text(pg_op_t *op, int i, const char *s);

/* Non-zero when res holds this op's row (op->row; a group's member may have none: a user's trigger skipped it). */
int engram__pg_has_row(const pg_op_t *op, const PGresult *res);
/* Parses a jsonb column into a cJSON (NULL for SQL NULL); 0 or ENGRAM_ENOMEM. */
int engram__pg_json(const PGresult *res, int row, int col, cJSON **out);
/* engram__pg_json; for_reply: the tree goes to a reply item, one block where it can (engram_json_parse_reply). */
int engram__pg_json_as(const PGresult *res, int row, int col, cJSON **out, int for_reply);
/* A bigint column (0 for SQL NULL). */
int64_t engram__pg_int(const PGresult *res, int row, int col);
/* A row version's stamp beside its version number: the transaction that wrote it (chg) and its place (ctid, as
 * text). An update's conditional write names it (postgres_sql.c, SAME_ROW). */
typedef struct {
  int64_t chg;
  char tid[24];
} pg_stamp_t;
/* Reads a stamp from columns col (chg) and col + 1 (ctid's text). */
void engram__pg_stamp(const PGresult *res, int row, int col, pg_stamp_t *out);
/* Fails req with "<what>: <msg>" (msg empty or NULL: the status's own words). */
void engram__pg_fail(engram_request_t *req, int status, const char *what, const char *msg);

#endif
