/*
 * postgres_query.c — the PostgreSQL source's queries: search, count and list_keys.
 *
 * SQL narrows, C decides (as in the SQLite source). SQL selects the namespace, skips expired rows, orders the
 * rows and narrows a glob to the key range of its literal prefix; the pattern itself (engram_pattern_match) and the
 * metadata filter (engram_filter_match) are evaluated here on each candidate row, with the functions every source
 * uses, so the results are the same everywhere and a user pattern never reaches LIKE. The system-field ranges go
 * into the SQL as one bigint[] parameter (so SQL can still limit, offset and count) and are tested again here
 * on each row (engram_request_in_ranges, on the created_at, updated_at and expires_at every scan selects).
 *
 * Scans walk the namespace in key order in chunks (keyset pagination: key > the last key seen, LIMIT chunk),
 * one statement per chunk, until the page is full or the rows run out, so a search with a small limit reads
 * little even when most rows are filtered out. list_keys pages the same way over (namespace, key); its cursor
 * names the last key returned with the core's one codec (engram_cursor_encode / engram_cursor_parse), so it
 * survives concurrent writes and a cursor any source refuses is refused here too.
 *
 * Text search ranks with the core's BM25 in the process (postgres_text.c: the namespace's index, synced with the
 * table first), the pattern, expiry and ranges applied to the documents; then the rows of the best keys are read
 * (PGS_TEXT_FETCH, in rank order) and go through the same row checks as a scan's, so a filter is applied there:
 * with a filter the ranked keys are read in batches until the page is full. A count without a filter is
 * answered from the index alone.
 *
 * Calls are routed by postgres_route.c and their chunks queued on the pool (postgres_conn.c); the SQL text,
 * tsquery and key ranges come from postgres_sql.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "postgres_query.h"
#include "postgres_route.h"
#include "postgres_text.h"

#define CHUNK 1000
#define FETCH_BATCH 500 /* ranked keys read per statement when a filter drops rows */
#define CHUNK_MAX 5000

typedef enum { MODE_SEARCH, MODE_COUNT, MODE_LIST, MODE_LIST_ALL, MODE_TEXT } scan_mode_t;

typedef struct {
  engram_request_t *req;
  pg_t *pg;
  pgc_t *c;
  scan_mode_t mode;
  int counting;       /* count (MODE_TEXT or a scan) */
  int stmt;
  char *lo, *hi;      /* key range of the pattern's literal prefix */
  char *after;        /* last key seen ("" before the first) */
  char *after_ns;     /* MODE_LIST_ALL: namespace of the last row seen */
  size_t skip;        /* search: offset still to skip */
  size_t added;       /* search: items added; list: keys returned */
  size_t limit;
  uint64_t n;         /* count */
  char *last;         /* list: the cursor (engram_cursor_encode) of the last key returned when the page filled */
  int filtering;      /* C drops rows (pattern or filter), so SQL cannot limit */
  char *ranges;       /* the system-field ranges as a bigint[] literal (RANGES in postgres_sql.c), or NULL */
  int chunk;
  /* Text search: the ranked documents of the namespace's index, and the next one to read. */
  pg_tix_t *tix;
  engram_text_hit_t *hits;
  size_t n_hits, next_hit, batch_start;
  /* The hits' keys, copied when ranked: another search's sync may change the index before a later batch. */
  char *hit_keys;     /* each NUL-terminated */
  size_t *hit_off;
  int ranked;         /* hits were ranked while the sync was in flight, at the index's gen ranked_gen */
  uint64_t ranked_gen;
} scan_t;

static void scan_free(scan_t *s) {
  engram__pg_tix_release(s->tix);
  engram_free(s->hits);
  engram_free(s->hit_keys);
  engram_free(s->hit_off);
  engram_free(s->lo);
  engram_free(s->hi);
  engram_free(s->after);
  engram_free(s->after_ns);
  engram_free(s->last);
  engram_free(s->ranges);
  engram_free(s);
}

static const char *what_of(const scan_t *s) {
  return s->req->op == ENGRAM_OP_COUNT ? "count" : s->req->op == ENGRAM_OP_LIST_KEYS ? "list_keys" : "search";
}

static void scan_finish(scan_t *s, int rc) {
  engram_request_t *req = s->req;
  if (rc == 0 && s->last != NULL) rc = engram_reply_set_cursor(req, s->last);
  if (s->mode == MODE_LIST || s->mode == MODE_LIST_ALL) engram_reply_set_count(req, s->added);
  else engram_reply_set_count(req, s->counting ? s->n : s->added);
  scan_free(s);
  engram_request_complete(req, rc);
}

static void scan_done(pg_op_t *op, int status, PGresult *res, const char *msg);

/* Text search reads its ranked keys in batches when rows can still be dropped after the read (a filter). */
static int q_filtering_batch(const scan_t *s) { return s->req->query.filter != NULL; }

/* Sends the statement for the next chunk (or the text query). */
static void scan_next(scan_t *s) {
  const engram_request_t *req = s->req;
  pg_op_t *op;
  if (!engram__pgc_ready(s->c)) {
    engram_request_t *r = s->req;
    char m[400];
    snprintf(m, sizeof m, "%s", s->pg->pool.last_error[0] ? s->pg->pool.last_error : "connection lost");
    const char *what = what_of(s);
    scan_free(s);
    engram__pg_fail(r, ENGRAM_EUNAVAILABLE, what, m);
    return;
  }
  if ((op = engram__pg_op_new(s->req, s->stmt, scan_done)) == NULL) {
    scan_finish(s, ENGRAM_ENOMEM);
    return;
  }
  op->ctx = s;
  switch (s->mode) {
    case MODE_TEXT: {
      /* The next batch of ranked keys: all that are left without a filter, else FETCH_BATCH. */
      size_t n = s->n_hits - s->next_hit, i;
      const char **keys;
      size_t *lens;
      int rc;
      if (q_filtering_batch(s) && n > FETCH_BATCH) n = FETCH_BATCH;
      keys = engram_malloc(n * sizeof *keys);
      lens = engram_malloc(n * sizeof *lens);
      for (i = 0; keys != NULL && lens != NULL && i < n; i++) {
        keys[i] = s->hit_keys + s->hit_off[s->next_hit + i];
        lens[i] = strlen(keys[i]);
      }
      rc = keys != NULL && lens != NULL ? engram__pg_text_array(keys, lens, n, &op->heap[0]) : ENGRAM_ENOMEM;
      engram_free(keys);
      engram_free(lens);
      if (rc != 0) {
        engram__pg_op_free(op);
        scan_finish(s, rc);
        return;
      }
      s->batch_start = s->next_hit;
      s->next_hit += n;
      op->values[0] = req->ns;
      op->values[1] = op->heap[0];
      engram__pg_op_num(op, 2, req->now_ms);
      op->nparams = 3;
      break;
    }
    case MODE_LIST_ALL:
      op->values[0] = s->after_ns;
      op->values[1] = s->after;
      engram__pg_op_num(op, 2, req->now_ms);
      engram__pg_op_num(op, 3, s->chunk);
      op->values[4] = s->ranges;
      op->nparams = 5;
      break;
    default:
      op->values[0] = req->ns;
      op->values[1] = s->lo ? s->lo : "";
      op->values[2] = s->after;
      engram__pg_op_num(op, 3, req->now_ms);
      engram__pg_op_num(op, 4, s->chunk);
      op->values[5] = s->ranges;
      op->nparams = 6;
      if (s->hi != NULL) {
        op->values[5] = s->hi;
        op->values[6] = s->ranges;
        op->nparams = 7;
      }
      break;
  }
  engram__pgc_submit(s->c, op);
}

/* Takes one row: pattern, filter, then count / skip / add. Returns 0 to go on, 1 when the page is full, or an
 * error. Columns: key at 0; full rows (search) value at 1...; key + metadata (count) metadata at 1. */
static int take_row(scan_t *s, const PGresult *res, int row, double score) {
  engram_request_t *req = s->req;
  const engram_query_t *q = &req->query;
  const char *key = PQgetvalue(res, row, 0);
  size_t klen = (size_t)PQgetlength(res, row, 0);
  int rc;
  if (q->pattern != NULL && !engram_pattern_match(q->pattern, key, klen)) return 0;
  if (req->flags & ENGRAM_OPT_RANGES) {
    /* created_at, updated_at, expires_at: after key (PGS_LIST*), key + metadata (PGS_SCANM*), or a full row. */
    int tc = s->stmt == PGS_LIST || s->stmt == PGS_LIST_R ? 1 : s->stmt == PGS_SCANM || s->stmt == PGS_SCANM_R ? 2 : 3;
    if (!engram_request_in_ranges(req, engram__pg_int(res, row, tc), engram__pg_int(res, row, tc + 1),
                                  engram__pg_int(res, row, tc + 2)))
      return 0;
  }
  if (q->filter != NULL) {
    cJSON *meta;
    int meta_col = s->stmt == PGS_SCANM || s->stmt == PGS_SCANM_R ? 1 : 2;
    if ((rc = engram__pg_json(res, row, meta_col, &meta)) != 0) return rc;
    rc = engram_filter_match(q->filter, meta);
    cJSON_Delete(meta);
    if (!rc) return 0;
  }
  if (s->counting) {
    s->n++;
    return 0;
  }
  if (s->skip > 0) {
    s->skip--;
    return 0;
  }
  {
    /* The full row: value at 1, metadata at 2, then created_at, updated_at, expires_at, version. */
    engram_item_t it;
    cJSON *value, *meta;
    memset(&it, 0, sizeof it);
    if ((rc = engram__pg_json(res, row, 1, &value)) != 0) return rc;
    if ((rc = engram__pg_json(res, row, 2, &meta)) != 0) {
      cJSON_Delete(value);
      return rc;
    }
    it.key = key;
    it.ns = req->ns;
    it.value = value;
    it.metadata = meta;
    it.created_at_ms = engram__pg_int(res, row, 3);
    it.updated_at_ms = engram__pg_int(res, row, 4);
    it.expires_at_ms = engram__pg_int(res, row, 5);
    it.version = (uint64_t)engram__pg_int(res, row, 6);
    it.score = score;
    if ((rc = engram_reply_add(req, &it, ENGRAM_REPLY_OWN_VALUE | ENGRAM_REPLY_OWN_METADATA)) != 0) return rc;
  }
  return ++s->added >= s->limit ? 1 : 0;
}

/* list_keys: one row. Returns 0 to go on, 1 when done (a key beyond a full page exists), or an error. */
static int take_key(scan_t *s, const PGresult *res, int row) {
  engram_request_t *req = s->req;
  int all = s->mode == MODE_LIST_ALL;
  const char *ns = all ? PQgetvalue(res, row, 0) : req->ns;
  size_t ns_len = all ? (size_t)PQgetlength(res, row, 0) : req->ns_len;
  const char *key = PQgetvalue(res, row, all ? 1 : 0);
  size_t klen = (size_t)PQgetlength(res, row, all ? 1 : 0);
  engram_item_t it;
  int rc;
  if (req->query.pattern != NULL && !engram_pattern_match(req->query.pattern, key, klen)) return 0;
  if (req->flags & ENGRAM_OPT_RANGES) {
    int tc = all ? 2 : 1; /* created_at, updated_at, expires_at after the key */
    if (!engram_request_in_ranges(req, engram__pg_int(res, row, tc), engram__pg_int(res, row, tc + 1),
                                  engram__pg_int(res, row, tc + 2)))
      return 0;
  }
  if (s->added == s->limit) return 1; /* one more match: the page gets its cursor (s->last) */
  memset(&it, 0, sizeof it);
  it.key = key;
  it.ns = ns;
  it.score = 1.0;
  if ((rc = engram_reply_add(req, &it, 0)) != 0) return rc;
  if (++s->added == s->limit && (s->last = engram_cursor_encode(ns, ns_len, key, klen)) == NULL)
    return ENGRAM_ENOMEM;
  return 0;
}

static void scan_done(pg_op_t *op, int status, PGresult *res, const char *msg) {
  scan_t *s = op->ctx;
  int rows, r, rc = 0, more;
  engram__pg_op_free(op);
  if (status != 0) {
    engram_request_t *req = s->req;
    const char *what = what_of(s);
    scan_free(s);
    engram__pg_fail(req, status, what, msg);
    return;
  }
  rows = PQntuples(res);
  for (r = 0; rc == 0 && r < rows; r++) {
    if (s->mode == MODE_TEXT) {
      /* ord: the key's place in the batch (1-based); a key deleted since the ranking has no row. */
      int64_t ord = engram__pg_int(res, r, 7);
      if (ord < 1 || (size_t)ord > s->next_hit - s->batch_start) continue;
      rc = take_row(s, res, r, s->hits[s->batch_start + (size_t)ord - 1].score);
    } else if (s->mode == MODE_LIST || s->mode == MODE_LIST_ALL) {
      rc = take_key(s, res, r);
    } else {
      rc = take_row(s, res, r, 1.0);
    }
  }
  if (rc == 1 && (s->mode == MODE_LIST || s->mode == MODE_LIST_ALL) && s->last == NULL) rc = ENGRAM_ENOMEM;
  if (s->mode == MODE_TEXT) {
    if (rc == 0 && s->next_hit < s->n_hits) scan_next(s);
    else scan_finish(s, rc < 0 ? rc : 0);
    return;
  }
  if (rc != 0 || rows < s->chunk) {
    if (rc == 0 && (s->mode == MODE_LIST || s->mode == MODE_LIST_ALL)) {
      /* The rows ran out: no key beyond this page. */
      engram_free(s->last);
      s->last = NULL;
    }
    scan_finish(s, rc < 0 ? rc : 0);
    return;
  }
  /* Next chunk: after the last row of this one. */
  more = rows - 1;
  {
    int kc = s->mode == MODE_LIST_ALL ? 1 : 0;
    char *after = engram_strndup(PQgetvalue(res, more, kc), (size_t)PQgetlength(res, more, kc));
    char *after_ns = s->mode == MODE_LIST_ALL ? engram_strndup(PQgetvalue(res, more, 0), (size_t)PQgetlength(res, more, 0)) : NULL;
    if (after == NULL || (s->mode == MODE_LIST_ALL && after_ns == NULL)) {
      engram_free(after);
      engram_free(after_ns);
      scan_finish(s, ENGRAM_ENOMEM);
      return;
    }
    engram_free(s->after);
    s->after = after;
    if (after_ns) {
      engram_free(s->after_ns);
      s->after_ns = after_ns;
    }
  }
  scan_next(s);
}

/* ---- Entry points ---- */

/* The call's system-field ranges as the bigint[] literal the statements take (RANGES in postgres_sql.c): the
 * whole span of a field the call has no range on; NULL (and 0) when it has none. */
static int ranges_text(const engram_request_t *req, char **out) {
  unsigned f = req->flags;
  char buf[160];
  *out = NULL;
  if (!(f & ENGRAM_OPT_RANGES)) return 0;
  snprintf(buf, sizeof buf, "{%lld,%lld,%lld,%lld,%lld,%lld}",
           (long long)((f & ENGRAM_OPT_CREATED_RANGE) ? req->created_at.min_ms : INT64_MIN),
           (long long)((f & ENGRAM_OPT_CREATED_RANGE) ? req->created_at.max_ms : INT64_MAX),
           (long long)((f & ENGRAM_OPT_UPDATED_RANGE) ? req->updated_at.min_ms : INT64_MIN),
           (long long)((f & ENGRAM_OPT_UPDATED_RANGE) ? req->updated_at.max_ms : INT64_MAX),
           (long long)((f & ENGRAM_OPT_EXPIRES_RANGE) ? req->expires_at.min_ms : INT64_MIN),
           (long long)((f & ENGRAM_OPT_EXPIRES_RANGE) ? req->expires_at.max_ms : INT64_MAX));
  return (*out = engram_strdup(buf)) == NULL ? ENGRAM_ENOMEM : 0;
}

static scan_t *scan_new(pg_t *pg, engram_request_t *req) {
  scan_t *s = engram_calloc(1, sizeof *s);
  if (s == NULL) return NULL;
  s->req = req;
  s->pg = pg;
  if ((s->after = engram_strdup("")) == NULL || ranges_text(req, &s->ranges) != 0) {
    engram_free(s->after);
    engram_free(s);
    return NULL;
  }
  return s;
}

/* Ranks the namespace's index for the call into s->hits and copies the hits' keys: 0 or ENGRAM_ENOMEM. */
static int rank(scan_t *s) {
  engram_request_t *req = s->req;
  const engram_query_t *q = &req->query;
  size_t k, n = 0;
  int rc;
  engram_free(s->hits);
  engram_free(s->hit_keys);
  engram_free(s->hit_off);
  s->hits = NULL;
  s->hit_keys = NULL;
  s->hit_off = NULL;
  s->n_hits = 0;
  /* Every match when rows are counted or may be dropped after the read, else the page and what it skips. */
  k = engram__pg_tix_docs(s->tix);
  if (q->filter == NULL && !s->counting && s->skip + s->limit < k) k = s->skip + s->limit;
  if (k > 0 && (s->hits = engram_malloc(k * sizeof *s->hits)) == NULL) return ENGRAM_ENOMEM;
  if (k > 0 && (rc = engram__pg_tix_rank(s->tix, req, k, s->hits, &n)) != 0) return rc;
  while (n > 0 && s->hits[n - 1].score < q->min_score) n--; /* best first: drop the tail below min_score */
  s->n_hits = n;
  if (n > 0 && (q->filter != NULL || !s->counting)) {
    size_t i, bytes = 0, len;
    for (i = 0; i < n; i++) {
      engram__pg_tix_key(s->tix, s->hits[i].doc, &len);
      bytes += len + 1;
    }
    if ((s->hit_keys = engram_malloc(bytes)) == NULL || (s->hit_off = engram_malloc(n * sizeof *s->hit_off)) == NULL)
      return ENGRAM_ENOMEM;
    for (i = 0, bytes = 0; i < n; i++) {
      const char *key = engram__pg_tix_key(s->tix, s->hits[i].doc, &len);
      s->hit_off[i] = bytes;
      memcpy(s->hit_keys + bytes, key, len);
      s->hit_keys[bytes + len] = '\0';
      bytes += len + 1;
    }
  }
  return 0;
}

/* The namespace's index is current: rank (unless the ranking made while the sync was in flight still holds: the
 * sync changed nothing), then count, or read the rows of the best keys. */
static void text_synced(void *ud, int status, const char *msg) {
  scan_t *s = ud;
  engram_request_t *req = s->req;
  const engram_query_t *q = &req->query;
  size_t n;
  int rc;
  if (status != 0) {
    const char *what = what_of(s);
    scan_free(s);
    engram__pg_fail(req, status, what, msg);
    return;
  }
  if (s->ranked && s->ranked_gen == engram__pg_tix_gen(s->tix)) {
    s->pg->text_ranked_early++;
  } else if ((rc = rank(s)) != 0) {
    scan_finish(s, rc);
    return;
  }
  n = s->n_hits;
  if (q->filter == NULL) {
    if (s->counting) {
      s->n = n;
      scan_finish(s, 0);
      return;
    }
    s->next_hit = s->skip < n ? s->skip : n; /* the offset is applied here */
    s->skip = 0;
  }
  if (s->next_hit >= s->n_hits) {
    scan_finish(s, 0);
    return;
  }
  scan_next(s);
}

static void run_query(engram_source_t *src, engram_request_t *req, int counting) {
  pg_t *pg = engram_source_state(src);
  const engram_query_t *q = &req->query;
  const char *what = counting ? "count" : "search";
  scan_t *s;
  pgc_t *c;
  int rc, quiet;
  if (q->vector != NULL) {
    engram_request_fail(req, ENGRAM_ENOTSUP, "%s by vector needs a vector source", what);
    return;
  }
  if (!counting && q->limit <= 0) {
    engram_request_complete(req, 0);
    return;
  }
  if ((c = engram__pg_route(pg, req, NULL, 0)) == NULL) return;
  if ((s = scan_new(pg, req)) == NULL) {
    engram_request_complete(req, ENGRAM_ENOMEM);
    return;
  }
  s->c = c;
  s->counting = counting;
  s->skip = counting ? 0 : (size_t)q->offset;
  s->limit = counting ? SIZE_MAX : (size_t)q->limit;
  s->filtering = q->pattern != NULL || q->filter != NULL; /* the ranges are in the SQL */
  if (q->text != NULL && q->text[0] != '\0') {
    s->mode = MODE_TEXT;
    s->stmt = PGS_TEXT_FETCH;
    if ((s->tix = engram__pg_tix_get(pg, req->ns, req->ns_len)) == NULL) {
      scan_finish(s, ENGRAM_ENOMEM);
      return;
    }
    /* On a quiet index (the last sync changed nothing), rank while the sync is on its way: the sync is sent now
     * rather than at the loop's prepare phase, and when it changes nothing either, this ranking stands (the
     * index's gen tells) and the search costs the sync's round trip or the ranking, whichever is longer, instead
     * of both. Otherwise, or after a change, text_synced ranks again. */
    quiet = engram__pg_tix_quiet(s->tix);
    if (engram__pg_tix_sync(pg, s->tix, c, req, text_synced, s) && quiet) {
      engram__pgc_flush(c);
      s->ranked_gen = engram__pg_tix_gen(s->tix);
      s->ranked = rank(s) == 0;
    }
    return;
  }
  /* A scan (a count reaches here only with a pattern or a filter: a plain count is one statement). */
  s->mode = counting ? MODE_COUNT : MODE_SEARCH;
  if ((rc = engram__pg_range(q->pattern, &s->lo, &s->hi)) != 0) {
    scan_finish(s, rc);
    return;
  }
  if (counting && q->filter == NULL) s->stmt = s->hi ? PGS_LIST_R : PGS_LIST;
  else if (counting) s->stmt = s->hi ? PGS_SCANM_R : PGS_SCANM;
  else s->stmt = s->hi ? PGS_SCAN_R : PGS_SCAN;
  s->chunk = s->filtering ? CHUNK : (int)(s->skip + s->limit < CHUNK_MAX ? s->skip + s->limit : CHUNK_MAX);
  scan_next(s);
}

/* A plain count's statement has the scan's shape (ns, ..., now) but a different result: handled here. */
static void count_done(pg_op_t *op, int status, PGresult *res, const char *msg) {
  scan_t *s = op->ctx;
  engram_request_t *req = s->req;
  engram__pg_op_free(op);
  scan_free(s);
  if (status != 0) {
    engram__pg_fail(req, status, "count", msg);
    return;
  }
  engram_reply_set_count(req, (uint64_t)engram__pg_int(res, 0, 0));
  engram_request_complete(req, 0);
}

void engram__pg_search(engram_source_t *src, engram_request_t *req) { run_query(src, req, 0); }

void engram__pg_count(engram_source_t *src, engram_request_t *req) {
  const engram_query_t *q = &req->query;
  pg_t *pg = engram_source_state(src);
  if (q->vector == NULL && (q->text == NULL || q->text[0] == '\0') && q->pattern == NULL && q->filter == NULL) {
    pgc_t *c = engram__pg_route(pg, req, NULL, 0);
    scan_t *s;
    pg_op_t *op;
    if (c == NULL) return;
    if ((s = scan_new(pg, req)) == NULL || (op = engram__pg_op_new(req, PGS_COUNT, count_done)) == NULL) {
      if (s) scan_free(s);
      engram_request_complete(req, ENGRAM_ENOMEM);
      return;
    }
    op->ctx = s;
    op->values[0] = req->ns;
    engram__pg_op_num(op, 1, req->now_ms);
    op->values[2] = s->ranges;
    op->nparams = 3;
    engram__pgc_submit(c, op);
    return;
  }
  run_query(src, req, 1);
}

void engram__pg_list_keys(engram_source_t *src, engram_request_t *req) {
  pg_t *pg = engram_source_state(src);
  const char *cns = NULL, *ckey = NULL;
  size_t cns_len = 0, ckey_len = 0;
  int all = (req->flags & ENGRAM_REQ_ALL_NAMESPACES) != 0, rc;
  scan_t *s;
  pgc_t *c;
  if (req->cursor != NULL && engram_cursor_parse(req->cursor, &cns, &cns_len, &ckey, &ckey_len) != 0) {
    engram_request_fail(req, ENGRAM_EINVAL, "cursor \"%.40s\" was not made by this source", req->cursor);
    return;
  }
  if (!all && cns != NULL) {
    /* A cursor from another namespace: before this one → from the start; after it → nothing left. */
    int cmp = engram_key_cmp(cns, cns_len, "", 0, req->ns, req->ns_len, "", 0);
    if (cmp > 0) {
      engram_reply_set_count(req, 0);
      engram_request_complete(req, 0);
      return;
    }
    if (cmp < 0) cns = ckey = NULL;
  }
  if ((c = engram__pg_route(pg, req, NULL, 0)) == NULL) return;
  if ((s = scan_new(pg, req)) == NULL) {
    engram_request_complete(req, ENGRAM_ENOMEM);
    return;
  }
  s->c = c;
  s->limit = (size_t)req->query.limit;
  s->mode = all ? MODE_LIST_ALL : MODE_LIST;
  s->filtering = req->query.pattern != NULL; /* the ranges are in the SQL */
  s->chunk = s->filtering ? CHUNK : (int)(s->limit + 1 < CHUNK_MAX ? s->limit + 1 : CHUNK_MAX);
  if (ckey != NULL) {
    engram_free(s->after);
    if ((s->after = engram_strndup(ckey, ckey_len)) == NULL) {
      scan_finish(s, ENGRAM_ENOMEM);
      return;
    }
  }
  if (all) {
    s->stmt = PGS_LIST_ALL;
    if ((s->after_ns = engram_strndup(cns ? cns : "", cns ? cns_len : 0)) == NULL) {
      scan_finish(s, ENGRAM_ENOMEM);
      return;
    }
  } else {
    if ((rc = engram__pg_range(req->query.pattern, &s->lo, &s->hi)) != 0) {
      scan_finish(s, rc);
      return;
    }
    s->stmt = s->hi ? PGS_LIST_R : PGS_LIST;
  }
  scan_next(s);
}
