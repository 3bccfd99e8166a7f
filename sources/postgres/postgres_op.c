/*
 * postgres_op.c — ops of the PostgreSQL source (postgres_op.h): their allocation and release (an op owns its
 * printed JSON, its other texts and its held result), numeric parameters kept inside the op, and the helpers
 * that read a result's columns (a jsonb column through engram_json_parse, the core's reader with its fast path)
 * and word a failed call. Used by the connections and by every method file; uses no other file of the folder, so
 * none of them depends on another through it.
 */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>

#include "postgres_op.h"

pg_op_t *engram__pg_op_new(engram_request_t *req, int stmt, pg_done_fn done) {
  pg_op_t *op = engram_calloc(1, sizeof *op);
  if (op == NULL) return NULL;
  op->req = req;
  op->stmt = stmt;
  op->done = done;
  return op;
}

void engram__pg_op_free(pg_op_t *op) {
  if (op == NULL) return;
  if (op->res) PQclear(op->res);
  engram_free(op->json[0]);
  engram_free(op->json[1]);
  engram_free(op->heap[0]);
  engram_free(op->heap[1]);
  engram_free(op);
}

static char *free_slot(pg_op_t *op) {
  int slot;
  for (slot = 0; slot < PG_OP_NUMS - 1; slot++)
    if (op->num[slot][0] == '\0') break;
  assert(op->num[slot][0] == '\0' && "more short parameters than PG_OP_NUMS");
  return op->num[slot];
}

void engram__pg_op_num(pg_op_t *op, int i, int64_t v) {
  char *slot = free_slot(op);
  snprintf(slot, sizeof op->num[0], "%lld", (long long)v);
  op->values[i] = slot;
}

void engram__pg_stamp(const PGresult *res, int row, int col, pg_stamp_t *out) {
  out->chg = engram__pg_int(res, row, col);
  snprintf(out->tid, sizeof out->tid, "%s", PQgetvalue(res, row, col + 1));
}

void engram__pg_op_text(pg_op_t *op, int i, const char *s) {
  char *slot = free_slot(op);
  snprintf(slot, sizeof op->num[0], "%s", s);
  op->values[i] = slot;
}

/* bigint text is an optional '-' and up to 19 digits: up to 18 are read here (strtoll's locale-aware path cost about
 * 300 instructions a column, 69,000 a retrieve_many of 55 rows); anything else goes to strtoll. */
int64_t engram__pg_int(const PGresult *res, int row, int col) {
  const char *s, *p;
  int64_t v = 0;
  int len;
  if (PQgetisnull(res, row, col)) return 0;
  s = PQgetvalue(res, row, col);
  len = PQgetlength(res, row, col);
  p = s + (len > 0 && s[0] == '-');
  if (len == 0 || s + len - p > 18 || p == s + len) return strtoll(s, NULL, 10);
  for (; p < s + len; p++) {
    if (*p < '0' || *p > '9') return strtoll(s, NULL, 10);
    v = v * 10 + (*p - '0');
  }
  return s[0] == '-' ? -v : v;
}

int engram__pg_has_row(const pg_op_t *op, const PGresult *res) { return op->row >= 0 && op->row < PQntuples(res); }

int engram__pg_json(const PGresult *res, int row, int col, cJSON **out) { return engram__pg_json_as(res, row, col, out, 0); }

int engram__pg_json_as(const PGresult *res, int row, int col, cJSON **out, int for_reply) {
  const char *text = PQgetvalue(res, row, col);
  size_t len = (size_t)PQgetlength(res, row, col);
  *out = NULL;
  if (PQgetisnull(res, row, col)) return 0;
  switch (for_reply ? engram_json_parse_reply(text, len, out) : engram_json_parse(text, len, out)) {
    case 0: return 0;
    case ENGRAM_ENOMEM: return ENGRAM_ENOMEM;
    default: return ENGRAM_EBACKEND; /* not JSON: a jsonb column never holds that */
  }
}

void engram__pg_fail(engram_request_t *req, int status, const char *what, const char *msg) {
  engram_request_fail(req, status, "%s: %s", what, msg && msg[0] ? msg : engram_strerror(status));
}
