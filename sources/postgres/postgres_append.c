/*
 * postgres_append.c — the PostgreSQL source's update with writes (ENGRAM_SOURCE_UPDATE_WRITES: a conversation
 * append's messages and trim, engram_update_writes_t): the head's conditional write, the stores and the deletes as
 * ONE statement (PGS_APPEND_IF / PGS_APPEND_NEW, postgres_sql.c: data-modifying CTEs, so one round trip and one
 * transaction). The stores and deletes run only when the head's condition held; when it failed, no row comes
 * back, nothing was written, and the update reads again (postgres_update.c).
 *
 * The stores are written as a plain store writes a row (the same columns, chg = the writing transaction for the
 * text index's sync, postgres_text.c; the table's triggers record deleted keys and notify watchers as for any
 * write). Each message's value is checked against max_value_bytes here, before anything is sent: one over the
 * limit fails the update with ENGRAM_ETOOBIG and writes nothing. This file builds the op and reads its rows back
 * into the writes; postgres_update.c sends it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "postgres_append.h"
#include "postgres_sql.h"

/* ---- Growing text (engram__pg_sb_t, postgres_sql.h) ---- */

typedef engram__pg_sb_t buf_t;

static void puts_(buf_t *b, const char *s) { engram__pg_sb_add(b, s, strlen(s)); }

/* ---- The op ---- */

pg_op_t *engram__pg_append_op_n(pg_t *pg, engram_request_t *const *reqs, size_t k, const cJSON *value,
                                const cJSON *meta, int64_t expires, uint64_t if_version, pg_done_fn done, int *rc,
                                size_t *too_big, size_t *too_big_req) {
  engram_request_t *req = reqs[k - 1];
  size_t n_delete = 0, r, i;
  int stmt;
  pg_op_t *op;
  buf_t st = {0}, dl = {0};
  for (r = 0; r < k; r++) n_delete += reqs[r]->writes->n_delete;
  stmt = n_delete ? (if_version ? PGS_APPEND_IF : PGS_APPEND_NEW) : (if_version ? PGS_APPEND_IF_KEEP : PGS_APPEND_NEW_KEEP);
  op = engram__pg_op_new(req, stmt, done);
  *rc = ENGRAM_ENOMEM;
  *too_big = (size_t)-1;
  *too_big_req = 0;
  if (op == NULL) return NULL;
  if ((op->json[0] = engram_json_print_text(value)) == NULL) goto fail;
  if (pg->max_value_bytes && strlen(op->json[0]) > pg->max_value_bytes) {
    *rc = ENGRAM_ETOOBIG;
    goto fail;
  }
  if (meta != NULL && (op->json[1] = engram_json_print_text(meta)) == NULL) goto fail;
  engram__pg_sb_add(&st, "[", 1);
  engram__pg_sb_add(&dl, "[", 1);
  for (r = 0; r < k; r++) {
    const engram_update_writes_t *w = reqs[r]->writes;
    for (i = 0; i < w->n_store && !st.oom; i++) {
      const engram_entry_t *e = &w->store[i];
      char *v = engram_json_print_text(e->value), num[32];
      if (v == NULL) goto fail;
      if (pg->max_value_bytes && strlen(v) > pg->max_value_bytes) {
        engram_free(v);
        *rc = ENGRAM_ETOOBIG;
        *too_big = i;
        *too_big_req = r;
        goto fail;
      }
      puts_(&st, st.n > 1 ? ",[" : "[");
      engram__pg_sb_json_str(&st, e->key);
      engram__pg_sb_add(&st, ",", 1);
      puts_(&st, v);
      engram_free(v);
      engram__pg_sb_add(&st, ",", 1);
      if (e->metadata != NULL) {
        char *m = engram_json_print_text(e->metadata);
        if (m == NULL) goto fail;
        puts_(&st, m);
        engram_free(m);
      } else {
        puts_(&st, "null");
      }
      snprintf(num, sizeof num, ",%lld]", (long long)(w->store_expires_at_ms ? w->store_expires_at_ms[i] : 0));
      puts_(&st, num);
    }
    for (i = 0; i < w->n_delete; i++) {
      if (dl.n > 1) engram__pg_sb_add(&dl, ",", 1);
      engram__pg_sb_json_str(&dl, w->delete_keys[i]);
    }
  }
  engram__pg_sb_add(&st, "]", 1);
  engram__pg_sb_add(&dl, "]", 1);
  if (st.oom || dl.oom) goto fail;
  op->heap[0] = st.s;
  op->heap[1] = dl.s;
  st.s = dl.s = NULL;
  op->values[0] = req->ns;
  op->values[1] = req->key;
  op->values[2] = op->json[0];
  op->values[3] = op->json[1];
  engram__pg_op_num(op, 4, req->now_ms);
  if (expires != 0) engram__pg_op_num(op, 5, expires);
  engram__pg_op_num(op, 6, (int64_t)if_version);
  op->values[7] = op->heap[0];
  op->values[8] = op->heap[1];
  op->nparams = 10; /* $10 NULL: the chain token, which postgres_update.c sets */
  if (if_version) { /* the _IF statements: $11 the count; $12..$14 NULL, the chain token and the row's stamp */
    if (k > 1) engram__pg_op_num(op, 10, (int64_t)k);
    op->nparams = 14;
  }
  return op;
fail:
  engram_free(st.s);
  engram_free(dl.s);
  engram__pg_op_free(op);
  return NULL;
}

pg_op_t *engram__pg_append_op(pg_t *pg, engram_request_t *req, const cJSON *value, const cJSON *meta, int64_t expires,
                              uint64_t if_version, pg_done_fn done, int *rc, size_t *too_big) {
  size_t r;
  return engram__pg_append_op_n(pg, &req, 1, value, meta, expires, if_version, done, rc, too_big, &r);
}

/* ---- Its rows ---- */

int engram__pg_append_result(engram_request_t *req, const PGresult *res, uint64_t *version, int64_t *created,
                             pg_stamp_t *stamp) {
  engram_update_writes_t *w = req->writes;
  int rows = PQntuples(res), r, head = 0, next = 0;
  size_t i;
  for (i = 0; i < w->n_store; i++) w->store_version[i] = 0;
  w->deleted = 0;
  for (r = 0; r < rows; r++) {
    int kind = (int)engram__pg_int(res, r, 0);
    if (kind == 0) {
      head = 1;
      *version = (uint64_t)engram__pg_int(res, r, 2);
      *created = engram__pg_int(res, r, 3);
      if (stamp != NULL) engram__pg_stamp(res, r, 4, stamp);
    } else if (kind == 2) {
      w->deleted = (uint64_t)engram__pg_int(res, r, 2);
    }
  }
  if (!head) return 0;
  /* Each store's version, by key: the rows come back in the statement's own order, so look from after the last
   * one found (one step each when the orders agree). A key stored and deleted has none (0). */
  for (i = 0; i < w->n_store; i++) {
    const char *key = w->store[i].key;
    int k;
    for (k = 0; k < rows; k++) {
      int row = (next + k) % rows;
      if (PQgetisnull(res, row, 1) || strcmp(PQgetvalue(res, row, 1), key) != 0) continue;
      if (engram__pg_int(res, row, 0) != 1) continue;
      w->store_version[i] = (uint64_t)engram__pg_int(res, row, 2);
      next = row + 1;
      break;
    }
  }
  return 1;
}
