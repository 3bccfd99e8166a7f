/*
 * sqlite_query.c — the SQLite source's queries: search, count and list_keys.
 *
 * SQL narrows, C decides. SQL selects the namespace, skips expired rows, orders the result, and narrows a glob
 * pattern to the key range of its literal prefix (engram_pattern_prefix); the pattern itself
 * (engram_pattern_match) and the metadata filter (engram_filter_match) are evaluated in C on each candidate
 * row, with the very functions every other source uses, so results are identical everywhere. The system-field
 * ranges are both: bound into every scan, list, text and count statement (so SQLite skips the rows outside them
 * and a count with ranges alone stays one statement) and tested again on each row with engram_request_in_ranges.
 * A user pattern never reaches LIKE or GLOB.
 *
 * Text search and text count go to sqlite_text.c (the core's BM25 index per namespace). list_keys pages by keyset: ORDER BY namespace, key and
 * WHERE (namespace, key) > the cursor, so a cursor survives concurrent writes and visits every key that
 * exists for the whole listing exactly once (an export's pages, ENGRAM_REQ_LIST_ITEMS, read every column of the
 * same scan and hand value and metadata over as text, sqlite_jsontext.c). The cursor is the core's one codec ("<namespace length>:
 * <namespace><key>", engram_cursor_parse and engram_reply_set_key_cursor), so a cursor every other source refuses
 * is refused here too.
 *
 * sqlite.c installs these methods; they run their statements through sqlite_db.c and call nothing above it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sqlite_db.h"
#include "sqlite_jsontext.h"
#include "sqlite_query.h"
#include "sqlite_text.h"

/* ---- Key ranges from a glob's literal prefix ---- */

typedef struct {
  char *lo; /* NULL = from the first key */
  char *hi; /* NULL = to the last key */
} range_t;

static void range_free(range_t *r) {
  engram_free(r->lo);
  engram_free(r->hi);
  r->lo = r->hi = NULL;
}

/* [prefix, prefix with its last byte incremented): every key that starts with the glob's literal prefix. */
static int range_of(const char *pattern, range_t *r) {
  size_t n;
  r->lo = r->hi = NULL;
  if (pattern == NULL || !engram_pattern_is_glob(pattern)) return 0; /* a substring can be anywhere */
  if (engram_pattern_prefix(pattern, &r->lo) != 0) return ENGRAM_ENOMEM; /* the core checked the pattern */
  if ((n = strlen(r->lo)) == 0) return 0;
  if ((r->hi = engram_strdup(r->lo)) == NULL) return ENGRAM_ENOMEM;
  while (n > 0 && (unsigned char)r->hi[n - 1] == 0xFF) n--;
  if (n == 0) {
    engram_free(r->hi);
    r->hi = NULL;
  } else {
    r->hi[n - 1] = (char)((unsigned char)r->hi[n - 1] + 1);
    r->hi[n] = '\0';
  }
  return 0;
}

/* Binds the range; a missing upper bound is a zero-length BLOB, which sorts after every TEXT in SQLite. */
static void bind_range(sqlite3_stmt *st, int ilo, int ihi, const char *lo, const char *hi) {
  sqlite3_bind_text(st, ilo, lo ? lo : "", -1, SQLITE_STATIC);
  if (hi) sqlite3_bind_text(st, ihi, hi, -1, SQLITE_STATIC);
  else sqlite3_bind_zeroblob(st, ihi, 0);
}

/* Binds the system-field ranges at ?11..?16 (RANGES_SQL in sqlite_db.c): the request's, or the whole span of each
 * field. SQL then drops the rows outside them; take_row still tests each row (engram_request_in_ranges), as it
 * does the pattern, so the two can never disagree on what is returned. */
static void bind_ranges(sqlite3_stmt *st, const engram_request_t *req) {
  unsigned f = req->flags;
  sqlite3_bind_int64(st, 11, (f & ENGRAM_OPT_CREATED_RANGE) ? req->created_at.min_ms : INT64_MIN);
  sqlite3_bind_int64(st, 12, (f & ENGRAM_OPT_CREATED_RANGE) ? req->created_at.max_ms : INT64_MAX);
  sqlite3_bind_int64(st, 13, (f & ENGRAM_OPT_UPDATED_RANGE) ? req->updated_at.min_ms : INT64_MIN);
  sqlite3_bind_int64(st, 14, (f & ENGRAM_OPT_UPDATED_RANGE) ? req->updated_at.max_ms : INT64_MAX);
  sqlite3_bind_int64(st, 15, (f & ENGRAM_OPT_EXPIRES_RANGE) ? req->expires_at.min_ms : INT64_MIN);
  sqlite3_bind_int64(st, 16, (f & ENGRAM_OPT_EXPIRES_RANGE) ? req->expires_at.max_ms : INT64_MAX);
}

/* ---- Candidate rows ---- */

typedef struct {
  sq_t *s;
  engram_request_t *req;
  int counting;
  size_t skip;   /* offset still to skip */
  size_t added;  /* items added */
  uint64_t n;    /* counting: rows accepted */
} run_t;

/* Applies pattern and filter to the row of st (namespace, key at 0 and 1, the row from 2), then counts it, skips
 * it or adds it. Returns 0 to go on, 1 when the page is full, or an error. */
static int take_row(run_t *r, sqlite3_stmt *st, double score) {
  const engram_query_t *q = &r->req->query;
  const char *ns = (const char *)sqlite3_column_text(st, 0);
  const char *key = (const char *)sqlite3_column_text(st, 1);
  size_t klen = (size_t)sqlite3_column_bytes(st, 1);
  cJSON *meta = NULL;
  int rc;
  if (key == NULL) return 0;
  if (q->pattern != NULL && !engram_pattern_match(q->pattern, key, klen)) return 0;
  if (!engram_request_in_ranges(r->req, sqlite3_column_int64(st, 2 + ROW_CREATED), sqlite3_column_int64(st, 2 + ROW_UPDATED),
                                sqlite3_column_int64(st, 2 + ROW_EXPIRES)))
    return 0;
  if (q->filter != NULL) {
    if ((rc = engram__sq_parse_col(r->s, st, 2 + ROW_META, key, "metadata", &meta)) != 0) return rc;
    if (!engram_filter_match(q->filter, meta)) {
      cJSON_Delete(meta);
      return 0;
    }
  }
  if (r->counting) {
    cJSON_Delete(meta);
    r->n++;
    return 0;
  }
  if (r->skip > 0) {
    cJSON_Delete(meta);
    r->skip--;
    return 0;
  }
  if ((rc = engram__sq_add_row(r->s, r->req, st, 2, ns ? ns : "", key, 1, 1, meta, score)) != 0) return rc;
  return ++r->added >= (size_t)q->limit ? 1 : 0;
}

/* Runs every candidate row of st through take_row; scored: column 8 holds bm25(). */
static int run_rows(run_t *r, sqlite3_stmt *st, int scored) {
  int rc = 0, step;
  while ((step = sqlite3_step(st)) == SQLITE_ROW) {
    double score = 1.0;
    if (scored) {
      double sc = -sqlite3_column_double(st, 8);
      if (sc < 0) sc = 0;
      score = sc / (sc + 1.0);
      if (score < r->req->query.min_score) break; /* rows come best first */
    }
    if ((rc = take_row(r, st, score)) != 0) break;
  }
  if (rc == 0 && step != SQLITE_ROW && step != SQLITE_DONE) rc = engram__sq_error(r->s, step);
  sqlite3_reset(st);
  return rc < 0 ? rc : 0;
}

/* ---- Search and count ---- */

static int scan_query(run_t *r) {
  sq_t *s = r->s;
  engram_request_t *req = r->req;
  const engram_query_t *q = &req->query;
  int64_t now = engram_now_ms();
  range_t range;
  sqlite3_stmt *st;
  int rc;
  if (r->counting && q->pattern == NULL && q->filter == NULL) {
    if ((st = engram__sq_stmt(s, SQ_COUNT_NS)) == NULL) return ENGRAM_EBACKEND;
    sqlite3_bind_text(st, 1, req->ns, (int)req->ns_len, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, now);
    bind_ranges(st, req);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) r->n = (uint64_t)sqlite3_column_int64(st, 0);
    rc = rc == SQLITE_ROW ? 0 : engram__sq_error(s, rc);
    sqlite3_reset(st);
    return rc;
  }
  if ((rc = range_of(q->pattern, &range)) != 0) {
    range_free(&range);
    return rc;
  }
  if ((st = engram__sq_stmt(s, SQ_SCAN_NS)) == NULL) {
    range_free(&range);
    return ENGRAM_EBACKEND;
  }
  sqlite3_bind_text(st, 1, req->ns, (int)req->ns_len, SQLITE_STATIC);
  bind_range(st, 2, 3, range.lo, range.hi);
  sqlite3_bind_int64(st, 4, now);
  bind_ranges(st, req);
  rc = run_rows(r, st, 0);
  range_free(&range);
  return rc;
}

static int run_query(sq_t *s, engram_request_t *req, int counting, uint64_t *count) {
  run_t r;
  int rc;
  memset(&r, 0, sizeof r);
  r.s = s;
  r.req = req;
  r.counting = counting;
  r.skip = counting ? 0 : (size_t)req->query.offset;
  if (req->query.vector != NULL) return ENGRAM_ENOTSUP;
  if (!counting && req->query.limit <= 0) return 0;
  if (req->query.text != NULL && req->query.text[0] != '\0') {
    uint64_t n = 0;
    rc = engram__sq_text_query(s, req, counting, &n);
    if (counting) r.n = n;
    else r.added = (size_t)n;
  } else {
    rc = scan_query(&r);
  }
  *count = counting ? r.n : r.added;
  return rc;
}

static void finish_query(sq_t *s, engram_request_t *req, int rc, const char *what) {
  if (rc == ENGRAM_ENOTSUP) engram_request_fail(req, rc, "%s by vector needs a vector source", what);
  else if (rc == 0 || rc == ENGRAM_ENOMEM) engram_request_complete(req, rc);
  else engram_request_fail(req, rc, "%s: %s", what, s->err);
}

void engram__sqlite_search(engram_source_t *src, engram_request_t *req) {
  sq_t *s = engram_source_state(src);
  uint64_t n = 0;
  int rc = run_query(s, req, 0, &n);
  engram_reply_set_count(req, n);
  finish_query(s, req, rc, "search");
}

void engram__sqlite_count(engram_source_t *src, engram_request_t *req) {
  sq_t *s = engram_source_state(src);
  uint64_t n = 0;
  int rc = run_query(s, req, 1, &n);
  engram_reply_set_count(req, n);
  finish_query(s, req, rc, "count");
}

/* ---- list_keys ---- */

/* Binds the page's statement; returns it, or NULL with *empty set when the cursor is past this namespace. */
static sqlite3_stmt *list_stmt(sq_t *s, engram_request_t *req, const char *cns, size_t cns_len, const char *ckey,
                               size_t ckey_len, const range_t *range, int64_t now, int *empty) {
  sqlite3_stmt *st;
  int items = (req->flags & ENGRAM_REQ_LIST_ITEMS) != 0;
  *empty = 0;
  if (req->flags & ENGRAM_REQ_ALL_NAMESPACES) {
    sq_stmt_id id = cns ? (items ? SQ_LIST_ALL_AFTER_ITEMS : SQ_LIST_ALL_AFTER) : (items ? SQ_LIST_ALL_ITEMS : SQ_LIST_ALL);
    if ((st = engram__sq_stmt(s, id)) == NULL) return NULL;
    sqlite3_bind_int64(st, 1, now);
    if (cns) {
      sqlite3_bind_text(st, 2, cns, (int)cns_len, SQLITE_STATIC);
      sqlite3_bind_text(st, 3, ckey, (int)ckey_len, SQLITE_STATIC);
    }
    bind_ranges(st, req);
    return st;
  }
  if (cns != NULL) {
    /* (cursor ns, cursor key) against this namespace: before it → no bound; after it → nothing left. */
    size_t n = cns_len < req->ns_len ? cns_len : req->ns_len;
    int c = memcmp(cns, req->ns, n);
    if (c == 0 && cns_len != req->ns_len) c = cns_len < req->ns_len ? -1 : 1;
    if (c > 0) {
      *empty = 1;
      return NULL;
    }
    if (c < 0) cns = ckey = NULL;
  }
  if ((st = engram__sq_stmt(s, items ? SQ_LIST_NS_ITEMS : SQ_LIST_NS)) == NULL) return NULL;
  sqlite3_bind_text(st, 1, req->ns, (int)req->ns_len, SQLITE_STATIC);
  /* key > cursor and key >= prefix: from the greater of the two, excluding the cursor's own key. */
  bind_range(st, 2, 3, ckey && (range->lo == NULL || strcmp(ckey, range->lo) > 0) ? ckey : range->lo, range->hi);
  if (ckey) sqlite3_bind_text(st, 4, ckey, (int)ckey_len, SQLITE_STATIC);
  else sqlite3_bind_null(st, 4);
  sqlite3_bind_int64(st, 5, now);
  bind_ranges(st, req);
  return st;
}

void engram__sqlite_list_keys(engram_source_t *src, engram_request_t *req) {
  sq_t *s = engram_source_state(src);
  const char *cns = NULL, *ckey = NULL, *pattern = req->query.pattern;
  size_t cns_len = 0, ckey_len = 0, limit = (size_t)req->query.limit, emitted = 0;
  range_t range = {NULL, NULL};
  sqlite3_stmt *st;
  int rc = 0, step, empty = 0;
  engram_item_t it;
  char *last = NULL; /* ns \0 key of the last item emitted */
  size_t last_ns = 0, last_key = 0;
  if (req->cursor != NULL && engram_cursor_parse(req->cursor, &cns, &cns_len, &ckey, &ckey_len) != 0) {
    engram_request_fail(req, ENGRAM_EINVAL, "cursor \"%.40s\" was not made by this source", req->cursor);
    return;
  }
  if (!(req->flags & ENGRAM_REQ_ALL_NAMESPACES) && (rc = range_of(pattern, &range)) != 0) {
    range_free(&range);
    engram_request_complete(req, rc);
    return;
  }
  st = list_stmt(s, req, cns, cns_len, ckey, ckey_len, &range, engram_now_ms(), &empty);
  if (st == NULL) {
    range_free(&range);
    engram_reply_set_count(req, 0);
    if (empty) engram_request_complete(req, 0);
    else engram_request_fail(req, ENGRAM_EBACKEND, "list_keys: %s", s->err);
    return;
  }
  memset(&it, 0, sizeof it);
  it.score = 1.0;
  while ((step = sqlite3_step(st)) == SQLITE_ROW) {
    const char *ns = (const char *)sqlite3_column_text(st, 0);
    const char *key = (const char *)sqlite3_column_text(st, 1);
    size_t ns_len = (size_t)sqlite3_column_bytes(st, 0), key_len = (size_t)sqlite3_column_bytes(st, 1);
    if (key == NULL || (pattern != NULL && !engram_pattern_match(pattern, key, key_len))) continue;
    if (!engram_request_in_ranges(req, sqlite3_column_int64(st, 2), sqlite3_column_int64(st, 3), sqlite3_column_int64(st, 4)))
      continue;
    if (emitted == limit) { /* one more match exists: the page gets a cursor */
      rc = engram_reply_set_key_cursor(req, last, last_ns, last + last_ns + 1, last_key);
      break;
    }
    it.ns = ns ? ns : "";
    it.key = key;
    rc = (req->flags & ENGRAM_REQ_LIST_ITEMS) ? engram__sq_add_listed_text(s, req, st, it.ns, key) /* an export's */
                                              : engram_reply_add(req, &it, 0);
    if (rc == ENGRAM_EBACKEND) { /* stored text that is not JSON: left out, as retrieve_many answers it as that
                                  * key's error and the export writes only the items it read */
      rc = 0;
      continue;
    }
    if (rc != 0) break;
    emitted++;
    if (emitted == limit) {
      char *nl = engram_realloc(last, ns_len + key_len + 2);
      if (nl == NULL) {
        rc = ENGRAM_ENOMEM;
        break;
      }
      last = nl;
      memcpy(last, it.ns, ns_len);
      last[ns_len] = '\0';
      memcpy(last + ns_len + 1, key, key_len);
      last[ns_len + 1 + key_len] = '\0';
      last_ns = ns_len;
      last_key = key_len;
    }
  }
  if (rc == 0 && step != SQLITE_ROW && step != SQLITE_DONE) rc = engram__sq_error(s, step);
  sqlite3_reset(st);
  engram_free(last);
  range_free(&range);
  engram_reply_set_count(req, emitted);
  if (rc == 0 || rc == ENGRAM_ENOMEM) engram_request_complete(req, rc);
  else engram_request_fail(req, rc, "list_keys: %s", s->err);
}
