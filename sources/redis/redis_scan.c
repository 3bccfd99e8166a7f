/*
 * redis_scan.c — the redis source's operations that walk a namespace: list_keys, search, count and clear.
 * They never use KEYS or SCAN: each namespace has an index (a sorted set of its keys, all with score 0), read
 * in bounded batches with ZRANGEBYLEX through the scan script, which also drops index members whose hash has
 * expired (lazy cleanup). A glob pattern's literal prefix narrows the lex range; the pattern itself is matched
 * here with engram_pattern_match, never handed to Redis. Search and count without text then fetch the matching
 * items with pipelined HMGETs (one round trip per batch) and apply typed metadata filters (engram_filter_match)
 * and the system-field ranges (engram_request_in_ranges) in process; list_keys with ranges fetches its keys'
 * fields the same way before it emits them. Ranked text search and count have their own walk (redis_search.c).
 *
 * Cursors are the core's keyset cursors (engram_cursor_parse, engram_reply_set_key_cursor): "<namespace
 * length>:<namespace><key>" naming the last key listed, parsed strictly, so a cursor the other sources refuse is
 * refused here too. The walk goes in their order — namespaces bytewise (the namespace set, sorted), then keys
 * bytewise (ZRANGEBYLEX over members that all score 0 compares them with memcmp) — so the next page starts
 * strictly after that key, keys that exist during the whole listing are visited exactly once, and a cursor
 * naming another namespace places the listing as everywhere: before this namespace, from the start; after it,
 * nothing left.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redis_call.h"
#include "redis_cmd.h"
#include "redis_item.h"
#include "redis_json.h"
#include "redis_rbuf.h"
#include "redis_scan.h"
#include "redis_search.h"

typedef struct scan_s scan_t;

typedef struct {
  scan_t *s;
  char *key;
  size_t key_len;
  engram__redis_held_t h;
} fetch_t;

struct scan_s {
  engram__redis_t *r;
  engram_request_t *req;
  int counting, filter, all_ns;
  int ranges; /* system-field ranges: search fetches every candidate (filter set), list_keys fetches its keys' fields */
  /* Namespaces to walk (all_ns) or just the request's. */
  char **nss;
  size_t n_nss, ns_i;
  const char *ns;
  size_t ns_len;
  /* The lex range still to read in the current namespace. */
  char *min, *max;
  size_t min_len, max_len, min_cap;
  char *narrow; /* literal prefix of a glob pattern, or NULL */
  int exhausted;
  size_t pending;
  int status;
  char msg[320];
  /* list_keys */
  uint64_t emitted;
  char *last_key; /* the last key emitted, and its namespace (s->ns then: alive until scan_free) */
  size_t last_key_len, last_ns_len;
  const char *last_ns;
  int has_more;
  /* search / count */
  fetch_t *fetch;
  size_t n_fetch, cap_fetch;
  uint64_t matched, count, added;
  int done;
};

static void scan_next(scan_t *s);
static void clear_next(scan_t *s);

/* ---- Helpers ---- */

static void fetch_release(fetch_t *f) {
  engram_free(f->key);
  engram__redis_held_release(&f->h);
  memset(f, 0, sizeof *f);
}

static void scan_free(scan_t *s) {
  size_t i;
  for (i = 0; i < s->n_nss; i++) engram_free(s->nss[i]);
  engram_free(s->nss);
  engram_free(s->min);
  engram_free(s->max);
  engram_free(s->narrow);
  engram_free(s->last_key);
  for (i = 0; i < s->n_fetch; i++) fetch_release(&s->fetch[i]);
  engram_free(s->fetch);
  engram_free(s);
}

static void scan_finish(scan_t *s, int status) {
  engram__redis_t *r = s->r;
  engram_request_t *req = s->req;
  char msg[320];
  if (status == 0) status = s->status;
  memcpy(msg, s->msg, sizeof msg);
  req->backend_data = NULL;
  scan_free(s);
  if (status != 0 && msg[0] != '\0') engram__redis_finish(r, req, status, "%s", msg);
  else engram__redis_finish(r, req, status, NULL);
}

static void scan_error(scan_t *s, const redisAsyncContext *ac, int status, const redisReply *reply) {
  if (s->status != 0) return;
  s->status = status;
  if (status == ENGRAM_EUNAVAILABLE) engram__redis_why(s->r, ac, s->msg, sizeof s->msg);
  else if (reply != NULL && reply->type == REDIS_REPLY_ERROR)
    snprintf(s->msg, sizeof s->msg, "redis: %.*s", (int)(reply->len > 300 ? 300 : reply->len), reply->str);
  else if (status == ENGRAM_EBACKEND) snprintf(s->msg, sizeof s->msg, "unexpected reply from redis");
}

static int ns_cmp(const char *a, size_t an, const char *b, size_t bn) {
  int r = memcmp(a, b, an < bn ? an : bn);
  if (r != 0) return r;
  return an < bn ? -1 : an > bn;
}

/* Sets the range's lower bound to mark ('(' or '[') followed by s[0..n). */
static int set_min(scan_t *s, char mark, const char *str, size_t n) {
  return engram__redis_set_bound(&s->min, &s->min_cap, &s->min_len, mark, str, n);
}

/* Starts the range of the current namespace: after the cursor key when given, and not before the pattern's
 * literal prefix. */
static int range_start(scan_t *s, const char *after, size_t after_len) {
  size_t n = s->narrow ? strlen(s->narrow) : 0;
  s->exhausted = 0;
  if (after != NULL && (n == 0 || ns_cmp(after, after_len, s->narrow, n) >= 0)) return set_min(s, '(', after, after_len);
  if (n > 0) return set_min(s, '[', s->narrow, n);
  return set_min(s, '-', "", 0);
}

static int qsort_ns(const void *a, const void *b) {
  const char *x = *(char *const *)a, *y = *(char *const *)b;
  return ns_cmp(x, strlen(x), y, strlen(y));
}

/* ---- The namespace list (whole-source clear, list_keys over every namespace) ---- */

static void on_members(redisAsyncContext *ac, void *rep, void *pd);

static void members_start(scan_t *s) {
  engram__redis_t *r = s->r;
  int rc;
  engram__rbuf_reset(&r->cmd);
  engram__rbuf_array(&r->cmd, 2);
  engram__rbuf_arg(&r->cmd, "SMEMBERS", 8);
  engram__redis_arg_nsset(r, &r->cmd);
  if ((rc = engram__redis_send(r, on_members, s)) != 0) {
    scan_error(s, NULL, rc, NULL);
    scan_finish(s, 0);
  }
}

/* Moves to namespace ns_i (all_ns); returns 0, or 1 when none is left. */
static int next_namespace(scan_t *s, const char *after_ns, size_t after_ns_len, const char *after_key,
                          size_t after_key_len) {
  for (; s->ns_i < s->n_nss; s->ns_i++) {
    const char *ns = s->nss[s->ns_i];
    size_t len = strlen(ns);
    int c = after_ns ? ns_cmp(ns, len, after_ns, after_ns_len) : 1;
    if (c < 0) continue;
    s->ns = ns;
    s->ns_len = len;
    if (range_start(s, c == 0 ? after_key : NULL, c == 0 ? after_key_len : 0) != 0) {
      scan_error(s, NULL, ENGRAM_ENOMEM, NULL);
      return 1;
    }
    return 0;
  }
  return 1;
}

static void on_members(redisAsyncContext *ac, void *rep, void *pd) {
  scan_t *s = pd;
  engram_request_t *req = s->req;
  redisReply *reply = rep;
  size_t i;
  if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
    scan_error(s, ac, reply == NULL ? ENGRAM_EUNAVAILABLE : ENGRAM_EBACKEND, reply);
    scan_finish(s, 0);
    return;
  }
  if (reply->elements > 0 && (s->nss = engram_calloc(reply->elements, sizeof *s->nss)) == NULL) {
    scan_finish(s, ENGRAM_ENOMEM);
    return;
  }
  for (i = 0; i < reply->elements; i++) {
    const redisReply *e = reply->element[i];
    if (e->type != REDIS_REPLY_STRING || !engram_utf8_valid(e->str, e->len)) continue;
    if ((s->nss[s->n_nss] = engram_strndup(e->str, e->len)) == NULL) {
      scan_finish(s, ENGRAM_ENOMEM);
      return;
    }
    s->n_nss++;
  }
  if (s->n_nss > 1) qsort(s->nss, s->n_nss, sizeof *s->nss, qsort_ns);
  if (req->op == ENGRAM_OP_CLEAR) {
    clear_next(s);
    return;
  }
  {
    const char *cns = NULL, *ckey = NULL;
    size_t cns_len = 0, ckey_len = 0;
    if (req->cursor != NULL) engram_cursor_parse(req->cursor, &cns, &cns_len, &ckey, &ckey_len); /* checked at start */
    if (next_namespace(s, cns, cns_len, ckey, ckey_len) != 0) {
      scan_finish(s, 0);
      return;
    }
  }
  scan_next(s);
}

/* ---- The scan loop ---- */

static void on_scan(redisAsyncContext *ac, void *rep, void *pd);
static void on_fetch(redisAsyncContext *ac, void *rep, void *pd);
static void after_batch(scan_t *s);

static int scan_send(scan_t *s) {
  engram__redis_t *r = s->r;
  engram__rbuf_t *b = &r->cmd;
  size_t batch = r->scan_batch;
  const engram_request_t *req = s->req;
  /* A page of list_keys without a pattern needs no more than limit + 1 members. */
  if (req->op == ENGRAM_OP_LIST_KEYS && req->query.pattern == NULL && !s->ranges && (size_t)req->query.limit + 1 < batch)
    batch = (size_t)req->query.limit + 1;
  engram__rbuf_reset(b);
  engram__redis_begin_script(r, b, RS_SCAN, 1, 4);
  engram__redis_arg_index(r, b, s->ns, s->ns_len);
  engram__rbuf_arg(b, s->min, s->min_len);
  if (s->max) engram__rbuf_arg(b, s->max, s->max_len);
  else engram__rbuf_arg(b, "+", 1);
  engram__rbuf_arg_i64(b, (int64_t)batch);
  engram__redis_arg_item_prefix(r, b, s->ns, s->ns_len);
  return engram__redis_send(r, on_scan, s);
}

static void scan_next(scan_t *s) {
  int rc = scan_send(s);
  if (rc != 0) {
    scan_error(s, NULL, rc, NULL);
    scan_finish(s, 0);
  }
}

/* list_keys: one live key of the current namespace, in order. Returns non-zero to stop the batch. */
static int list_one(scan_t *s, const char *key, size_t key_len) {
  engram_item_t it;
  char *k;
  int rc;
  if (s->emitted >= (uint64_t)s->req->query.limit) {
    s->has_more = 1;
    return 1;
  }
  if ((k = engram_strndup(key, key_len)) == NULL) {
    s->status = ENGRAM_ENOMEM;
    return 1;
  }
  memset(&it, 0, sizeof it);
  it.key = k;
  it.ns = s->ns;
  it.score = 1.0;
  if ((rc = engram_reply_add(s->req, &it, 0)) != 0) {
    engram_free(k);
    s->status = ENGRAM_ENOMEM;
    return 1;
  }
  /* The next page's cursor names the last key emitted (engram_reply_set_key_cursor at the end). */
  engram_free(s->last_key);
  s->last_key = k;
  s->last_key_len = key_len;
  s->last_ns = s->ns;
  s->last_ns_len = s->ns_len;
  s->emitted++;
  return 0;
}

/* search / count: one live key matching the pattern. Returns non-zero to stop the batch. */
static int search_one(scan_t *s, const char *key, size_t key_len) {
  const engram_query_t *q = &s->req->query;
  fetch_t *f;
  if (!s->filter) {
    /* Every matching key counts: fetch only the ones the page shows. */
    uint64_t i = s->matched++;
    if (s->counting) {
      s->count++;
      return 0;
    }
    if (i < (uint64_t)q->offset) return 0;
    if (i >= (uint64_t)q->offset + (uint64_t)q->limit) {
      s->done = 1;
      return 1;
    }
  }
  if (s->n_fetch == s->cap_fetch) {
    size_t cap = s->cap_fetch ? s->cap_fetch * 2 : 64;
    fetch_t *nf = engram_realloc(s->fetch, cap * sizeof *nf);
    if (nf == NULL) {
      s->status = ENGRAM_ENOMEM;
      return 1;
    }
    s->fetch = nf;
    s->cap_fetch = cap;
  }
  f = &s->fetch[s->n_fetch];
  memset(f, 0, sizeof *f);
  if ((f->key = engram_strndup(key, key_len)) == NULL) {
    s->status = ENGRAM_ENOMEM;
    return 1;
  }
  f->key_len = key_len;
  f->s = s;
  s->n_fetch++;
  return 0;
}

static void on_scan(redisAsyncContext *ac, void *rep, void *pd) {
  scan_t *s = pd;
  engram_request_t *req = s->req;
  redisReply *reply = rep, *live;
  size_t i, n_scanned;
  int rc;
  if (reply == NULL) {
    scan_error(s, ac, ENGRAM_EUNAVAILABLE, NULL);
    scan_finish(s, 0);
    return;
  }
  if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 || reply->element[1]->type != REDIS_REPLY_STRING ||
      reply->element[2]->type != REDIS_REPLY_ARRAY) {
    scan_error(s, ac, ENGRAM_EBACKEND, reply);
    scan_finish(s, 0);
    return;
  }
  n_scanned = (size_t)engram__redis_int(reply->element[0], 0);
  live = reply->element[2];
  {
    size_t batch = s->r->scan_batch;
    if (req->op == ENGRAM_OP_LIST_KEYS && req->query.pattern == NULL && !s->ranges && (size_t)req->query.limit + 1 < batch)
      batch = (size_t)req->query.limit + 1;
    if (n_scanned < batch) s->exhausted = 1;
    else if (set_min(s, '(', reply->element[1]->str, reply->element[1]->len) != 0) s->status = ENGRAM_ENOMEM;
  }
  for (i = 0; i < live->elements && s->status == 0; i++) {
    const redisReply *k = live->element[i];
    if (k->type != REDIS_REPLY_STRING || !engram_utf8_valid(k->str, k->len)) continue; /* not written by engram */
    if (req->query.pattern != NULL && !engram_pattern_match(req->query.pattern, k->str, k->len)) continue;
    if (req->op == ENGRAM_OP_LIST_KEYS && !s->ranges ? list_one(s, k->str, k->len) : search_one(s, k->str, k->len)) break;
  }
  if (s->status != 0) {
    scan_finish(s, 0);
    return;
  }
  if ((req->op != ENGRAM_OP_LIST_KEYS || s->ranges) && s->n_fetch > 0) {
    /* Fetch the batch's items: every HMGET at once. */
    engram__redis_t *r = s->r;
    s->pending = 1;
    for (i = 0; i < s->n_fetch; i++) {
      engram__rbuf_reset(&r->cmd);
      engram__redis_build_hmget(r, &r->cmd, s->ns, s->ns_len, s->fetch[i].key, s->fetch[i].key_len);
      if ((rc = engram__redis_send(r, on_fetch, &s->fetch[i])) != 0) {
        scan_error(s, NULL, rc, NULL);
        break;
      }
      s->pending++;
    }
    if (--s->pending == 0) after_batch(s);
    return;
  }
  after_batch(s);
}

static void on_fetch(redisAsyncContext *ac, void *rep, void *pd) {
  fetch_t *f = pd;
  scan_t *s = f->s;
  redisReply *reply = rep;
  engram__redis_fields_t fl;
  if (reply == NULL) {
    scan_error(s, ac, ENGRAM_EUNAVAILABLE, NULL);
  } else if (reply->type == REDIS_REPLY_ERROR || engram__redis_parse_fields(reply, engram_now_ms(), &fl) != 0) {
    scan_error(s, ac, ENGRAM_EBACKEND, reply);
  } else if (s->status == 0 && engram__redis_held_take(&f->h, &fl) != 0) {
    s->status = ENGRAM_ENOMEM;
  }
  if (--s->pending == 0) after_batch(s);
}

static int add_result(scan_t *s, const fetch_t *f, double score) {
  engram__redis_fields_t fl = engram__redis_held_fields(&f->h);
  int rc = engram__redis_add_item(s->req, f->key, s->ns, &fl, 1, 1, score);
  if (rc == 0) s->added++;
  if (rc == ENGRAM_EBACKEND) {
    s->status = rc;
    snprintf(s->msg, sizeof s->msg, "key '%s': the stored item is not valid JSON", f->key);
  }
  return rc;
}

/* Filters the fetched batch, in key order. */
static void process_fetched(scan_t *s) {
  const engram_query_t *q = &s->req->query;
  size_t i;
  for (i = 0; i < s->n_fetch && s->status == 0; i++) {
    fetch_t *f = &s->fetch[i];
    if (f->h.state != 1) continue;
    if (!engram_request_in_ranges(s->req, f->h.created, f->h.updated, f->h.expires)) continue;
    if (q->filter != NULL) {
      cJSON *meta = NULL;
      int ok, rc = f->h.meta ? engram__redis_parse_json(f->h.meta, f->h.meta_len, &meta) : 0;
      if (rc != 0) {
        s->status = rc;
        if (rc == ENGRAM_EBACKEND) snprintf(s->msg, sizeof s->msg, "key '%s': the stored metadata is not valid JSON", f->key);
        break;
      }
      ok = engram_filter_match(q->filter, meta);
      cJSON_Delete(meta);
      if (!ok) continue;
    }
    if (s->filter) {
      uint64_t k = s->matched++;
      if (s->counting) {
        s->count++;
        continue;
      }
      if (k < (uint64_t)q->offset) continue;
      if (k >= (uint64_t)q->offset + (uint64_t)q->limit) {
        s->done = 1;
        break;
      }
    }
    if (add_result(s, f, 1.0) != 0 && s->status == 0) s->status = ENGRAM_ENOMEM;
  }
  for (i = 0; i < s->n_fetch; i++) fetch_release(&s->fetch[i]);
  s->n_fetch = 0;
}

/* list_keys with ranges: the batch's keys whose fields came back in range, in key order, up to a full page. */
static void list_fetched(scan_t *s) {
  size_t i;
  for (i = 0; i < s->n_fetch && s->status == 0; i++) {
    const fetch_t *f = &s->fetch[i];
    if (f->h.state != 1 || !engram_request_in_ranges(s->req, f->h.created, f->h.updated, f->h.expires)) continue;
    if (list_one(s, f->key, f->key_len)) break;
  }
  for (i = 0; i < s->n_fetch; i++) fetch_release(&s->fetch[i]);
  s->n_fetch = 0;
}

static void after_batch(scan_t *s) {
  engram_request_t *req = s->req;
  if (s->status != 0) {
    scan_finish(s, 0);
    return;
  }
  if (req->op == ENGRAM_OP_LIST_KEYS && s->ranges) {
    list_fetched(s);
    if (s->status != 0) {
      scan_finish(s, 0);
      return;
    }
  }
  if (req->op == ENGRAM_OP_LIST_KEYS) {
    if (s->has_more) {
      engram_reply_set_count(req, s->emitted);
      scan_finish(s, s->last_key != NULL ? engram_reply_set_key_cursor(req, s->last_ns, s->last_ns_len, s->last_key,
                                                                        s->last_key_len)
                                         : 0);
      return;
    }
    if (s->exhausted) {
      /* Next namespace (whole-source listing), or the end. */
      if (s->all_ns) {
        s->ns_i++;
        if (next_namespace(s, NULL, 0, NULL, 0) == 0) {
          scan_next(s);
          return;
        }
      }
      engram_reply_set_count(req, s->emitted);
      scan_finish(s, 0);
      return;
    }
    scan_next(s);
    return;
  }
  process_fetched(s);
  if (s->status != 0) {
    scan_finish(s, 0);
    return;
  }
  if (!s->done && !s->exhausted) {
    scan_next(s);
    return;
  }
  engram_reply_set_count(req, s->counting ? s->count : s->added);
  scan_finish(s, 0);
}

static scan_t *scan_new(engram__redis_t *r, engram_request_t *req) {
  scan_t *s = engram_calloc(1, sizeof *s);
  if (s == NULL) return NULL;
  s->r = r;
  s->req = req;
  s->ns = req->ns;
  s->ns_len = req->ns_len;
  req->backend_data = s;
  return s;
}

/* Sets up the range narrowing of a glob pattern. */
static int narrow(scan_t *s) {
  const char *pattern = s->req->query.pattern;
  char *prefix = NULL;
  size_t n;
  if (pattern == NULL || !engram_pattern_is_glob(pattern)) return 0;
  if (engram_pattern_prefix(pattern, &prefix) != 0) return ENGRAM_ENOMEM; /* the core checked the pattern */
  if ((n = strlen(prefix)) == 0) {
    engram_free(prefix);
    return 0;
  }
  s->narrow = prefix;
  /* Every key starting with prefix sorts before prefix + 0xff (UTF-8 never holds that byte). */
  if ((s->max = engram_malloc(n + 2)) == NULL) return ENGRAM_ENOMEM;
  s->max[0] = '(';
  memcpy(s->max + 1, prefix, n);
  s->max[n + 1] = (char)0xff;
  s->max_len = n + 2;
  return 0;
}

/* ---- list_keys ---- */

void engram__redis_list_keys(engram__redis_t *r, engram_request_t *req) {
  scan_t *s;
  const char *cns = NULL, *ckey = NULL;
  size_t cns_len = 0, ckey_len = 0;
  if (req->cursor != NULL && engram_cursor_parse(req->cursor, &cns, &cns_len, &ckey, &ckey_len) != 0) {
    engram__redis_finish(r, req, ENGRAM_EINVAL, "cursor \"%.40s\" was not made by this source", req->cursor);
    return;
  }
  if (cns != NULL && !(req->flags & ENGRAM_REQ_ALL_NAMESPACES)) {
    /* A cursor naming another namespace, in (namespace, key) order: before this one → from the start; after it
     * → nothing left. */
    int c = ns_cmp(cns, cns_len, req->ns, req->ns_len);
    if (c > 0) {
      engram_reply_set_count(req, 0);
      engram__redis_finish(r, req, 0, NULL);
      return;
    }
    if (c < 0) ckey = NULL, ckey_len = 0;
  }
  if ((s = scan_new(r, req)) == NULL || narrow(s) != 0) {
    if (s) scan_free(s);
    req->backend_data = NULL;
    engram__redis_finish(r, req, ENGRAM_ENOMEM, NULL);
    return;
  }
  s->ranges = (req->flags & ENGRAM_OPT_RANGES) != 0;
  s->filter = s->ranges; /* search_one then queues every key for its fields */
  if (req->flags & ENGRAM_REQ_ALL_NAMESPACES) {
    s->all_ns = 1;
    members_start(s);
    return;
  }
  if (range_start(s, ckey, ckey_len) != 0) {
    scan_finish(s, ENGRAM_ENOMEM);
    return;
  }
  scan_next(s);
}

/* ---- search, count ---- */

void engram__redis_search(engram__redis_t *r, engram_request_t *req) {
  const engram_query_t *q = &req->query;
  scan_t *s;
  if (q->vector != NULL) {
    engram__redis_finish(r, req, ENGRAM_ENOTSUP, "%s by vector needs a vector source",
                         req->op == ENGRAM_OP_COUNT ? "count" : "search");
    return;
  }
  if (q->text != NULL && q->text[0] != '\0') {
    engram__redis_text_search(r, req);
    return;
  }
  if ((s = scan_new(r, req)) == NULL || narrow(s) != 0 || range_start(s, NULL, 0) != 0) {
    if (s) scan_free(s);
    req->backend_data = NULL;
    engram__redis_finish(r, req, ENGRAM_ENOMEM, NULL);
    return;
  }
  s->counting = req->op == ENGRAM_OP_COUNT;
  s->ranges = (req->flags & ENGRAM_OPT_RANGES) != 0;
  s->filter = q->filter != NULL || s->ranges; /* every candidate is fetched and tested before the page is cut */
  if (q->min_score > 1.0) { /* every non-text result scores 1 */
    scan_finish(s, 0);
    return;
  }
  scan_next(s);
}

/* ---- clear ---- */

static void on_clear(redisAsyncContext *ac, void *rep, void *pd);

static int clear_send(scan_t *s) {
  engram__redis_t *r = s->r;
  engram__rbuf_t *b = &r->cmd;
  engram__rbuf_reset(b);
  engram__redis_begin_script(r, b, RS_CLEAR, 3, 3);
  engram__redis_arg_index(r, b, s->ns, s->ns_len);
  engram__redis_arg_nsset(r, b);
  engram__redis_arg_gen(r, b, s->ns, s->ns_len);
  engram__redis_arg_item_prefix(r, b, s->ns, s->ns_len);
  engram__rbuf_arg_i64(b, (int64_t)r->scan_batch);
  engram__rbuf_arg(b, s->ns, s->ns_len);
  return engram__redis_send(r, on_clear, s);
}

/* Clears the current namespace batch by batch, then the next one (whole-source clear). */
static void clear_next(scan_t *s) {
  int rc;
  if (s->all_ns) {
    if (s->ns_i >= s->n_nss) {
      engram_reply_set_count(s->req, s->count);
      scan_finish(s, 0);
      return;
    }
    s->ns = s->nss[s->ns_i];
    s->ns_len = strlen(s->ns);
  }
  if ((rc = clear_send(s)) != 0) {
    scan_error(s, NULL, rc, NULL);
    scan_finish(s, 0);
  }
}

static void on_clear(redisAsyncContext *ac, void *rep, void *pd) {
  scan_t *s = pd;
  redisReply *reply = rep;
  if (reply == NULL) {
    scan_error(s, ac, ENGRAM_EUNAVAILABLE, NULL);
    scan_finish(s, 0);
    return;
  }
  if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2) {
    scan_error(s, ac, ENGRAM_EBACKEND, reply);
    scan_finish(s, 0);
    return;
  }
  s->count += (uint64_t)engram__redis_int(reply->element[1], 0);
  if (engram__redis_int(reply->element[0], 0) < (int64_t)s->r->scan_batch) {
    if (!s->all_ns) {
      engram_reply_set_count(s->req, s->count);
      scan_finish(s, 0);
      return;
    }
    s->ns_i++;
  }
  if (engram_request_answered(s->req)) {
    scan_finish(s, ENGRAM_ECANCELED);
    return;
  }
  clear_next(s);
}

void engram__redis_clear(engram__redis_t *r, engram_request_t *req) {
  scan_t *s = scan_new(r, req);
  if (s == NULL) {
    engram__redis_finish(r, req, ENGRAM_ENOMEM, NULL);
    return;
  }
  if (req->flags & ENGRAM_REQ_ALL_NAMESPACES) {
    s->all_ns = 1;
    members_start(s);
    return;
  }
  clear_next(s);
}
