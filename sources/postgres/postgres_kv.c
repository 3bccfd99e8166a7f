/*
 * postgres_kv.c — the PostgreSQL source's key-value methods (postgres_kv.h): store (one upsert statement that
 * honours create-only and if_version, or, flagged ENGRAM_REQ_REPLICA, writes the row with the version and
 * timestamps given: a tiered source's copy), retrieve, exists, delete, retrieve_many (one statement for all its keys:
 * PGS_GET_MANY, the keys as one text[] parameter; PGS_GET_RUN, one key-range scan, when they hold a run of
 * neighbouring keys such as a conversation window's messages), the pipelined batch forms of store and delete (one statement per
 * item on one connection) and clear. A plain store (and a store_many's item) is marked groupable: stores queued
 * together then leave as one statement and each reads its own row of it (op->row, postgres_group.c). Each call is routed (postgres_route.c), builds its ops (postgres_op.c) and
 * queues them on the pool (postgres_conn.c); the native update (postgres_update.c) reuses the store statement.
 * Writes carry no text index: each row's chg (the writing transaction, set in the SQL) is what a search's sync
 * reads (postgres_text.c).
 *
 * A call's statements carry its values as parameters; identifiers were validated at open. Every read skips
 * expired rows (expires_at > now), so an expired item is invisible at once and removed by the sweep.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "postgres_kv.h"
#include "postgres_route.h"

/* ---- Store ---- */

/* Builds the statement that stores one item. *rc: ENGRAM_ENOMEM or ENGRAM_ETOOBIG when NULL is returned. */
pg_op_t *engram__pg_store_op(pg_t *pg, engram_request_t *req, const char *key, const cJSON *value, const cJSON *meta,
                             int64_t expires, uint64_t if_version, unsigned flags, pg_done_fn done, int *rc) {
  int replica = (flags & ENGRAM_REQ_REPLICA) != 0;
  int stmt = replica       ? PGS_STORE_REPLICA
             : if_version ? PGS_STORE_IF
             : (flags & ENGRAM_OPT_CREATE_ONLY) ? PGS_STORE_NEW
                                                : PGS_STORE;
  pg_op_t *op = engram__pg_op_new(req, stmt, done);
  *rc = ENGRAM_ENOMEM;
  if (op == NULL) return NULL;
  if ((op->json[0] = engram_json_print_text(value)) == NULL) goto fail;
  if (pg->max_value_bytes && strlen(op->json[0]) > pg->max_value_bytes) {
    *rc = ENGRAM_ETOOBIG;
    goto fail;
  }
  if (meta != NULL && (op->json[1] = engram_json_print_text(meta)) == NULL) goto fail;
  op->values[0] = req->ns;
  op->values[1] = key;
  op->values[2] = op->json[0];
  op->values[3] = op->json[1];
  engram__pg_op_num(op, 4, replica ? req->updated_at_ms : req->now_ms);
  if (expires != 0) engram__pg_op_num(op, 5, expires);
  op->nparams = 6;
  if (replica) {
    engram__pg_op_num(op, 6, req->created_at_ms);
    engram__pg_op_num(op, 7, (int64_t)req->version);
    op->nparams = 8;
  } else if (if_version) {
    engram__pg_op_num(op, 6, (int64_t)if_version);
    op->nparams = 12; /* $8..$12 NULL: the chain token and the row's stamp, which an update sets (postgres_update.c) */
  } else if (stmt == PGS_STORE_NEW) {
    op->nparams = 7; /* $7 NULL: the chain token an update's create sets */
  }
  return op;
fail:
  engram__pg_op_free(op);
  return NULL;
}

static void store_fail_rc(pg_t *pg, engram_request_t *req, const char *key, int rc) {
  if (rc == ENGRAM_ETOOBIG)
    engram_request_fail(req, rc, "key '%s': value larger than max_value_bytes (%llu)", key,
                        (unsigned long long)pg->max_value_bytes);
  else engram_request_complete(req, rc);
}

static void store_done(pg_op_t *op, int status, PGresult *res, const char *msg) {
  engram_request_t *req = op->req;
  int stmt = op->stmt, row = op->row, has_row = status == 0 && engram__pg_has_row(op, res);
  engram__pg_op_free(op);
  if (status != 0) {
    engram_request_fail(req, status, "store of key '%s': %s", req->key, msg);
    return;
  }
  if (stmt == PGS_EXISTS) { /* create-only and conditional at once: nothing can satisfy both */
    if (PQntuples(res) > 0) engram_request_fail_exists(req, NULL);
    else engram_request_fail_conflict(req, NULL, req->if_version);
    return;
  }
  if (!has_row) {
    if (stmt == PGS_STORE_NEW) engram_request_fail_exists(req, NULL);
    else engram_request_fail_conflict(req, NULL, req->if_version);
    return;
  } else {
    engram_item_t it;
    memset(&it, 0, sizeof it);
    it.key = req->key;
    it.ns = req->ns;
    it.metadata = req->metadata;
    it.version = (uint64_t)engram__pg_int(res, row, 0);
    it.created_at_ms = engram__pg_int(res, row, 1);
    it.updated_at_ms = (req->flags & ENGRAM_REQ_REPLICA) ? req->updated_at_ms : req->now_ms;
    it.expires_at_ms = req->expires_at_ms;
    it.score = 1.0;
    engram_request_complete(req, engram_reply_add(req, &it, 0));
  }
}

void engram__pg_store(engram_source_t *src, engram_request_t *req) {
  pg_t *pg = engram_source_state(src);
  pgc_t *c = engram__pg_route(pg, req, req->key, req->key_len);
  pg_op_t *op;
  int rc;
  if (c == NULL) return;
  if (!(req->flags & ENGRAM_REQ_REPLICA) && (req->flags & ENGRAM_OPT_CREATE_ONLY) && req->if_version != 0) {
    if ((op = engram__pg_op_new(req, PGS_EXISTS, store_done)) == NULL) {
      engram_request_complete(req, ENGRAM_ENOMEM);
      return;
    }
    op->values[0] = req->ns;
    op->values[1] = req->key;
    engram__pg_op_num(op, 2, req->now_ms);
    op->nparams = 3;
  } else if ((op = engram__pg_store_op(pg, req, req->key, req->value, req->metadata, req->expires_at_ms, req->if_version,
                            req->flags, store_done, &rc)) == NULL) {
    store_fail_rc(pg, req, req->key, rc);
    return;
  }
  op->merge = op->stmt == PGS_STORE; /* a plain upsert may leave in a group with its neighbours (postgres_group.c) */
  engram__pgc_submit(c, op);
}

/* ---- Retrieve, exists, delete ---- */

/* Adds the row (value at column b, then metadata, created_at, updated_at, expires_at, version). */
static int add_row(engram_request_t *req, const PGresult *res, int row, int b, const char *ns, const char *key,
                   int with_meta, double score) {
  engram_item_t it;
  cJSON *value, *meta = NULL;
  int rc;
  memset(&it, 0, sizeof it);
  if ((rc = engram__pg_json_as(res, row, b, &value, 1)) != 0) return rc; /* one block each: the reply's */
  if (with_meta && (rc = engram__pg_json_as(res, row, b + 1, &meta, 1)) != 0) {
    cJSON_Delete(value);
    return rc;
  }
  it.key = key;
  it.ns = ns;
  it.value = value;
  it.metadata = meta;
  it.created_at_ms = engram__pg_int(res, row, b + 2);
  it.updated_at_ms = engram__pg_int(res, row, b + 3);
  it.expires_at_ms = engram__pg_int(res, row, b + 4);
  it.version = (uint64_t)engram__pg_int(res, row, b + 5);
  it.score = score;
  return engram_reply_add(req, &it, ENGRAM_REPLY_OWN_VALUE | ENGRAM_REPLY_OWN_METADATA);
}

static pg_op_t *key_op(engram_request_t *req, int stmt, const char *key, pg_done_fn done) {
  pg_op_t *op = engram__pg_op_new(req, stmt, done);
  if (op == NULL) return NULL;
  op->values[0] = req->ns;
  op->values[1] = key;
  engram__pg_op_num(op, 2, req->now_ms);
  op->nparams = 3;
  return op;
}

static void get_done(pg_op_t *op, int status, PGresult *res, const char *msg) {
  engram_request_t *req = op->req;
  engram__pg_op_free(op);
  if (status != 0) engram_request_fail(req, status, "retrieve of key '%s': %s", req->key, msg);
  else if (PQntuples(res) == 0) engram_request_fail_not_found(req, NULL);
  else engram_request_complete(req, add_row(req, res, 0, 0, req->ns, req->key,
                                            (req->flags & ENGRAM_OPT_INCLUDE_METADATA) != 0, 1.0));
}

static void exists_done(pg_op_t *op, int status, PGresult *res, const char *msg) {
  engram_request_t *req = op->req;
  engram__pg_op_free(op);
  if (status != 0) {
    engram_request_fail(req, status, "exists of key '%s': %s", req->key, msg);
    return;
  }
  engram_reply_set_count(req, PQntuples(res) > 0);
  engram_request_complete(req, 0);
}

/* A DELETE ... RETURNING (alive): 1 when a live row went. */
static int deleted_live(const PGresult *res) {
  return PQntuples(res) == 1 && PQgetvalue(res, 0, 0)[0] == 't';
}

static void delete_done(pg_op_t *op, int status, PGresult *res, const char *msg) {
  engram_request_t *req = op->req;
  engram__pg_op_free(op);
  if (status != 0) {
    engram_request_fail(req, status, "delete of key '%s': %s", req->key, msg);
    return;
  }
  engram_reply_set_count(req, (uint64_t)deleted_live(res));
  engram_request_complete(req, 0);
}

static void single_key(engram_source_t *src, engram_request_t *req, int stmt, pg_done_fn done) {
  pg_t *pg = engram_source_state(src);
  pgc_t *c = engram__pg_route(pg, req, req->key, req->key_len);
  pg_op_t *op;
  if (c == NULL) return;
  if ((op = key_op(req, stmt, req->key, done)) == NULL) {
    engram_request_complete(req, ENGRAM_ENOMEM);
    return;
  }
  engram__pgc_submit(c, op);
}

void engram__pg_retrieve(engram_source_t *src, engram_request_t *req) { single_key(src, req, PGS_GET, get_done); }
void engram__pg_exists(engram_source_t *src, engram_request_t *req) { single_key(src, req, PGS_EXISTS, exists_done); }
void engram__pg_delete(engram_source_t *src, engram_request_t *req) { single_key(src, req, PGS_DELETE, delete_done); }

/* ---- retrieve_many: one statement, the keys as a text[] ---- */

/* The statements' "with metadata" parameter: the server prints each row's metadata only for a caller that asked. */
static const char *with_meta(const engram_request_t *req) { return req->flags & ENGRAM_OPT_INCLUDE_METADATA ? "t" : "f"; }

/* The reply items of a retrieve_many in input order: key i from row row_of[i] of res (its value parsed into the
 * item, which owns it), or ENGRAM_ENOTFOUND when row_of[i] < 0. *found counts the rows. 0 or ENGRAM_ENOMEM. */
static int answer_rows(engram_request_t *req, PGresult *res, const int *row_of, uint64_t *found) {
  size_t i;
  int rc = 0;
  for (i = 0; rc == 0 && i < req->n; i++) {
    if (row_of[i] >= 0) {
      rc = add_row(req, res, row_of[i], 1, req->ns, req->keys[i], (req->flags & ENGRAM_OPT_INCLUDE_METADATA) != 0, 1.0);
      if (rc == 0) {
        engram_reply_set_item_status(req, i, 0);
        (*found)++;
      }
    } else {
      engram_item_t it;
      memset(&it, 0, sizeof it);
      it.key = req->keys[i];
      it.ns = req->ns;
      it.status = ENGRAM_ENOTFOUND;
      it.score = 1.0;
      if ((rc = engram_reply_add(req, &it, 0)) == 0) engram_reply_set_item_status(req, i, ENGRAM_ENOTFOUND);
    }
  }
  return rc;
}

/* Each row carries its key's 1-based place in the array (u.ord), so rows are matched to keys without comparing
 * text, a key given twice is answered twice, and keys without a live row are ENGRAM_ENOTFOUND. The values are
 * parsed once, into the reply items that own them (ENGRAM_REPLY_OWN_VALUE), one block each (add_row: a taker of
 * engram_reply_take_value gets a copy, a conversation window keeps the block). */
static void many_done(pg_op_t *op, int status, PGresult *res, const char *msg) {
  engram_request_t *req = op->req;
  size_t n = req->n, i;
  int *row_of, rows, row, rc = 0;
  uint64_t found = 0;
  engram__pg_op_free(op);
  if (status != 0) {
    engram__pg_fail(req, status, "retrieve_many", msg);
    return;
  }
  if ((row_of = engram_malloc((n ? n : 1) * sizeof *row_of)) == NULL) {
    engram_request_complete(req, ENGRAM_ENOMEM);
    return;
  }
  for (i = 0; i < n; i++) row_of[i] = -1;
  rows = PQntuples(res);
  for (row = 0; row < rows; row++) {
    int64_t ord = engram__pg_int(res, row, 0);
    if (ord >= 1 && (uint64_t)ord <= n) row_of[ord - 1] = row;
  }
  rc = answer_rows(req, res, row_of, &found);
  engram_free(row_of);
  if (rc == 0) engram_reply_set_count(req, found);
  engram_request_complete(req, rc);
}

static void retrieve_many_probes(pgc_t *c, engram_request_t *req) {
  pg_op_t *op;
  size_t *lens, i;
  int rc;
  if (req->n == 2) { /* two probes without the text[]: PGS_GET_TWO */
    if ((op = key_op(req, PGS_GET_TWO, req->keys[0], many_done)) == NULL) {
      engram_request_complete(req, ENGRAM_ENOMEM);
      return;
    }
    op->values[3] = with_meta(req);
    op->values[4] = req->keys[1];
    op->nparams = 5;
    engram__pgc_submit(c, op);
    return;
  }
  if ((op = key_op(req, PGS_GET_MANY, NULL, many_done)) == NULL ||
      (lens = engram_malloc((req->n ? req->n : 1) * sizeof *lens)) == NULL) {
    engram__pg_op_free(op);
    engram_request_complete(req, ENGRAM_ENOMEM);
    return;
  }
  for (i = 0; i < req->n; i++) lens[i] = strlen(req->keys[i]);
  rc = engram__pg_text_array((const char *const *)req->keys, lens, req->n, &op->heap[0]);
  engram_free(lens);
  if (rc != 0) {
    engram__pg_op_free(op);
    engram_request_complete(req, rc);
    return;
  }
  op->values[1] = op->heap[0];
  op->values[3] = with_meta(req);
  op->nparams = 4;
  engram__pgc_submit(c, op);
}

/* ---- retrieve_many of a run of neighbouring keys: one key-range scan (PGS_GET_RUN) ----
 * Keys that differ only in a trailing number of the same width (a conversation's messages:
 * thread-msg:<id>:<gen>:<16-digit sequence>, src/thread/thread_head.c) are neighbours in the primary key: a window's
 * 54 messages are one stretch of the index. The longest run of such keys (sorted bytewise, as COLLATE "C" sorts;
 * each next number at most RUN_GAP above the last) of at least RUN_MIN keys is read by one range scan, capped at
 * the numbers it spans plus RUN_SLACK rows (other keys may sort inside the range: "...:0007x"); the other keys are
 * probed in the same statement. A scan that reached its cap may have stopped short: then the call is sent again as
 * PGS_GET_MANY. Nothing here depends on what the keys mean: any keys are answered right, runs are only faster. */

#define RUN_MIN 8
#define RUN_GAP 4
#define RUN_SLACK 16

typedef struct {
  const char *k;
  size_t i; /* the key's place in req->keys */
} kpos_t;

static int kpos_cmp(const void *a, const void *b) {
  const kpos_t *x = a, *y = b;
  int c = strcmp(x->k, y->k);
  return c != 0 ? c : (x->i > y->i) - (x->i < y->i);
}

/* How many of the last (up to 18) characters of k are digits. */
static size_t tail_digits(const char *k, size_t len) {
  size_t d = 0;
  while (d < len && d < 18 && k[len - 1 - d] >= '0' && k[len - 1 - d] <= '9') d++;
  return d;
}

static int64_t digits_value(const char *p, size_t d) {
  int64_t v = 0;
  while (d-- > 0) v = v * 10 + (*p++ - '0');
  return v;
}

/* b follows a in a run: same length, same text but for a trailing number of the same width, at most RUN_GAP above.
 * *step: how far above. */
static int neighbours(const char *a, const char *b, int64_t *step) {
  size_t la = strlen(a), d = tail_digits(a, la);
  int64_t diff;
  if (d == 0 || strlen(b) != la || tail_digits(b, la) < d || memcmp(a, b, la - d) != 0) return 0;
  diff = digits_value(b + la - d, d) - digits_value(a + la - d, d);
  if (diff < 0 || diff > RUN_GAP) return 0;
  *step = diff;
  return 1;
}

/* One allocation: the run's bounds and the keys sorted. The statement's op keeps it (op->heap[1]) for the
 * answer, which matches rows to keys with it: the keys are sorted once a call, not twice (a window's 52 keys: a
 * qsort with strcmp of keys that share their first 30 bytes). */
typedef struct {
  size_t lo, hi;  /* the run: s[lo..hi] */
  int64_t cap;    /* the scan's row limit */
  kpos_t s[];     /* the keys sorted */
} run_t;

/* Sorts req's keys and finds their longest run: 1 (*out set: engram_free it), 0 (none: nothing to free), or
 * ENGRAM_ENOMEM. */
static int find_run(const engram_request_t *req, run_t **out) {
  size_t n = req->n, i, start = 0, best = 0;
  int64_t span = 0, best_span = 0, step;
  run_t *run;
  kpos_t *s;
  if (n < RUN_MIN) return 0;
  if ((run = engram_malloc(sizeof *run + n * sizeof *s)) == NULL) return ENGRAM_ENOMEM;
  s = run->s;
  for (i = 0; i < n; i++) {
    s[i].k = req->keys[i];
    s[i].i = i;
  }
  qsort(s, n, sizeof *s, kpos_cmp);
  for (i = 1; i <= n; i++) {
    if (i < n && neighbours(s[i - 1].k, s[i].k, &step)) {
      span += step;
      continue;
    }
    if (i - start > best) {
      best = i - start;
      run->lo = start;
      run->hi = i - 1;
      best_span = span;
    }
    start = i;
    span = 0;
  }
  if (best < RUN_MIN) {
    engram_free(run);
    return 0;
  }
  run->cap = best_span + 1 + RUN_SLACK;
  *out = run;
  return 1;
}

static void run_done(pg_op_t *op, int status, PGresult *res, const char *msg) {
  engram_request_t *req = op->req;
  pg_t *pg = op->ctx;
  size_t n = req->n, i;
  int *row_of = NULL, rows, row, rc;
  int64_t in_range = 0;
  uint64_t found = 0;
  run_t *run = (run_t *)op->heap[1]; /* the keys as the statement was made from them */
  op->heap[1] = NULL;
  engram__pg_op_free(op);
  if (status != 0) {
    engram_free(run);
    engram__pg_fail(req, status, "retrieve_many", msg);
    return;
  }
  if ((row_of = engram_malloc(n * sizeof *row_of)) == NULL) {
    engram_free(run);
    engram_request_complete(req, ENGRAM_ENOMEM);
    return;
  }
  for (i = 0; i < n; i++) row_of[i] = -1;
  rows = PQntuples(res);
  for (row = 0; row < rows; row++) {
    kpos_t want = {PQgetvalue(res, row, 0), 0};
    size_t lo = 0, hi = n, k;
    if (strcmp(want.k, run->s[run->lo].k) >= 0 && strcmp(want.k, run->s[run->hi].k) <= 0) {
      in_range++;
      /* the range's rows were not filtered by expiry in SQL (the cap counts them all) */
      if (!PQgetisnull(res, row, 5) && engram__pg_int(res, row, 5) <= req->now_ms) continue;
    }
    while (lo < hi) { /* the first sorted key not below the row's */
      size_t mid = lo + (hi - lo) / 2;
      if (strcmp(run->s[mid].k, want.k) < 0) lo = mid + 1;
      else hi = mid;
    }
    for (k = lo; k < n && strcmp(run->s[k].k, want.k) == 0; k++) row_of[run->s[k].i] = row;
  }
  rc = in_range >= run->cap;
  engram_free(run);
  if (rc) { /* the scan may have stopped short of hi: every key by its own probe */
    pgc_t *c = engram__pgc_pick(&pg->pool, req->keys[0], strlen(req->keys[0]));
    pg->range_fallbacks++;
    engram_free(row_of);
    if (c == NULL) engram__pg_fail(req, ENGRAM_EUNAVAILABLE, "retrieve_many", pg->pool.last_error);
    else retrieve_many_probes(c, req);
    return;
  }
  pg->range_reads++;
  rc = answer_rows(req, res, row_of, &found);
  engram_free(row_of);
  if (rc == 0) engram_reply_set_count(req, found);
  engram_request_complete(req, rc);
}

static void retrieve_many(pg_t *pg, pgc_t *c, engram_request_t *req) {
  pg_op_t *op = NULL;
  const char **other = NULL;
  size_t *lens = NULL, i, m = 0;
  run_t *run = NULL;
  int rc = find_run(req, &run);
  if (rc == 0) {
    retrieve_many_probes(c, req);
    return;
  }
  if (rc != 1 || (op = engram__pg_op_new(req, PGS_GET_RUN, run_done)) == NULL ||
      (other = engram_malloc(req->n * sizeof *other)) == NULL || (lens = engram_malloc(req->n * sizeof *lens)) == NULL) {
    engram_free(run);
    engram_free(other);
    engram__pg_op_free(op);
    engram_request_complete(req, ENGRAM_ENOMEM);
    return;
  }
  for (i = 0; i < req->n; i++)
    if (i < run->lo || i > run->hi) {
      other[m] = run->s[i].k;
      lens[m++] = strlen(run->s[i].k);
    }
  rc = engram__pg_text_array(other, lens, m, &op->heap[0]);
  engram_free(other);
  engram_free(lens);
  op->ctx = pg;
  op->values[0] = req->ns;
  op->values[1] = run->s[run->lo].k; /* the request's own key texts: they outlive the op */
  op->values[2] = run->s[run->hi].k;
  engram__pg_op_num(op, 3, run->cap);
  op->values[4] = op->heap[0];
  engram__pg_op_num(op, 5, req->now_ms);
  op->values[6] = with_meta(req);
  op->nparams = 7;
  op->heap[1] = (char *)run; /* for run_done; freed with the op */
  if (rc != 0) {
    engram__pg_op_free(op);
    engram_request_complete(req, rc);
    return;
  }
  engram__pgc_submit(c, op);
}

/* ---- Batches of stores and deletes: one statement per item, pipelined on one connection ---- */

typedef struct {
  int status;
  int64_t created, updated, expires;
  uint64_t version;
} slot_t;

typedef struct {
  engram_request_t *req;
  size_t pending; /* statements out, + 1 while they are being sent */
  int failed;     /* the whole call failed (connection lost, out of memory) */
  uint64_t acc;
  char msg[320];
  slot_t slots[];
} batch_t;

static void batch_free(batch_t *b) { engram_free(b); }

static void batch_finish(batch_t *b) {
  engram_request_t *req = b->req;
  size_t i;
  int rc = 0;
  if (b->failed) {
    int st = b->failed;
    char msg[sizeof b->msg];
    memcpy(msg, b->msg, sizeof msg);
    batch_free(b);
    if (msg[0]) engram_request_fail(req, st, "%s", msg);
    else engram_request_complete(req, st);
    return;
  }
  for (i = 0; rc == 0 && i < req->n; i++) {
    slot_t *s = &b->slots[i];
    engram_item_t it;
    memset(&it, 0, sizeof it);
    it.ns = req->ns;
    it.status = s->status;
    it.score = 1.0;
    if (req->op == ENGRAM_OP_STORE_MANY) {
      it.key = req->entries[i].key;
      if (s->status == 0) it.metadata = req->entries[i].metadata;
    } else {
      it.key = req->keys[i];
    }
    it.created_at_ms = s->created;
    it.updated_at_ms = s->updated;
    it.expires_at_ms = s->expires;
    it.version = s->version;
    rc = engram_reply_add(req, &it, 0);
    if (rc == 0) engram_reply_set_item_status(req, i, s->status);
  }
  engram_reply_set_count(req, b->acc);
  batch_free(b);
  engram_request_complete(req, rc);
}

static void batch_fail(batch_t *b, int status, const char *what, const char *msg) {
  if (b->failed) return;
  b->failed = status;
  if (msg != NULL) snprintf(b->msg, sizeof b->msg, "%s: %s", what, msg);
}

static void batch_done(pg_op_t *op, int status, PGresult *res, const char *msg) {
  batch_t *b = op->ctx;
  engram_request_t *req = b->req;
  size_t index = op->index;
  slot_t *s = &b->slots[index];
  int stmt = op->stmt, row = op->row, has_row = status == 0 && engram__pg_has_row(op, res);
  engram__pg_op_free(op);
  if (status == ENGRAM_EUNAVAILABLE || status == ENGRAM_ECANCELED) {
    batch_fail(b, status, req->op == ENGRAM_OP_STORE_MANY ? "store_many" : "delete_many", msg);
  } else if (status != 0) {
    s->status = status; /* this item's statement failed; the others stand */
  } else if (req->op == ENGRAM_OP_STORE_MANY) {
    if (!has_row) {
      s->status = stmt == PGS_STORE_NEW ? ENGRAM_EEXIST : ENGRAM_ECONFLICT;
    } else {
      s->version = (uint64_t)engram__pg_int(res, row, 0);
      s->created = engram__pg_int(res, row, 1);
      s->updated = req->now_ms;
      s->expires = req->entry_expires_at_ms ? req->entry_expires_at_ms[index] : 0;
      b->acc++;
    }
  } else {
    b->acc += (uint64_t)deleted_live(res);
  }
  if (--b->pending == 0) batch_finish(b);
}

void engram__pg_batch(engram_source_t *src, engram_request_t *req) {
  pg_t *pg = engram_source_state(src);
  const char *first = req->n == 0 ? NULL : req->op == ENGRAM_OP_STORE_MANY ? req->entries[0].key : req->keys[0];
  pgc_t *c = engram__pg_route(pg, req, first, first ? strlen(first) : 0);
  batch_t *b;
  size_t i;
  if (c == NULL) return;
  if (req->op == ENGRAM_OP_RETRIEVE_MANY) {
    retrieve_many(pg, c, req);
    return;
  }
  if ((b = engram_calloc(1, sizeof *b + req->n * sizeof(slot_t))) == NULL) {
    engram_request_complete(req, ENGRAM_ENOMEM);
    return;
  }
  b->req = req;
  b->pending = 1;
  for (i = 0; i < req->n && !b->failed; i++) {
    pg_op_t *op;
    int rc = ENGRAM_ENOMEM;
    if (req->op == ENGRAM_OP_STORE_MANY) {
      const engram_entry_t *e = &req->entries[i];
      op = engram__pg_store_op(pg, req, e->key, e->value, e->metadata, req->entry_expires_at_ms ? req->entry_expires_at_ms[i] : 0, 0,
                    req->flags, batch_done, &rc);
    } else {
      op = key_op(req, PGS_DELETE, req->keys[i], batch_done);
    }
    if (op == NULL) {
      if (rc == ENGRAM_ETOOBIG) b->slots[i].status = rc;
      else batch_fail(b, rc, "batch", NULL);
      continue;
    }
    op->ctx = b;
    op->index = i;
    op->merge = op->stmt == PGS_STORE;
    b->pending++;
    engram__pgc_submit(c, op);
  }
  if (--b->pending == 0) batch_finish(b);
}

/* ---- Clear ---- */

static void clear_done(pg_op_t *op, int status, PGresult *res, const char *msg) {
  engram_request_t *req = op->req;
  engram__pg_op_free(op);
  if (status != 0) {
    engram_request_fail(req, status, "clear: %s", msg);
    return;
  }
  engram_reply_set_count(req, (uint64_t)strtoull(PQcmdTuples(res), NULL, 10));
  engram_request_complete(req, 0);
}

void engram__pg_clear(engram_source_t *src, engram_request_t *req) {
  pg_t *pg = engram_source_state(src);
  pgc_t *c = engram__pg_route(pg, req, NULL, 0);
  pg_op_t *op;
  int all = (req->flags & ENGRAM_REQ_ALL_NAMESPACES) != 0;
  if (c == NULL) return;
  if ((op = engram__pg_op_new(req, all ? PGS_CLEAR_ALL : PGS_CLEAR_NS, clear_done)) == NULL) {
    engram_request_complete(req, ENGRAM_ENOMEM);
    return;
  }
  if (!all) {
    op->values[0] = req->ns;
    op->nparams = 1;
  }
  engram__pgc_submit(c, op);
}
