/*
 * prefix.c — operations over a namespace prefix (ENGRAM_OPT_NS_PREFIX: clear, count and list_keys over "u1" and
 * every "u1/…" below it) and engram_list_namespaces, on every source and with nothing asked of a backend
 * beyond the listing every backend has: list_keys across namespaces (ENGRAM_REQ_ALL_NAMESPACES) after a cursor.
 *
 * The walk finds the namespaces under the prefix one at a time, in (namespace, key) order, by seeking: a listing
 * of one key after a cursor that sorts just below where the next namespace can begin. A cursor names a pair
 * (namespace, key) and a listing resumes strictly after it, so "after (N, the greatest key)" skips the rest of
 * namespace N, and "after (the greatest namespace below X, the greatest key)" lands on the first namespace ≥ X.
 * Those greatest strings are the largest valid UTF-8 of the data model's lengths (U+10FFFF repeated, then the
 * largest character that fits): no key or namespace can sort above them, and every source compares bytewise.
 * So a walk costs one one-key listing per namespace found — an index seek on SQLite, PostgreSQL and Redis.
 *
 * On each namespace found, the operation runs as the ordinary one-namespace sub-request (count, clear, a
 * listing page), through the source's complete table, so emulated methods and tiered sources work unchanged.
 * A prefix P covers P and the namespaces that begin with P + "/"; between them in byte order lie namespaces
 * such as "P!x" or "P.x", which the walk jumps over with one more seek, and past "P/…" it stops.
 *
 * Sub-requests may complete inside the dispatch (the cache answers at once), so the walk is a loop that runs
 * the next step when the one before has come back, never a recursion as deep as the number of namespaces.
 */
#include <stdio.h>
#include <string.h>

#include "actor/prefix.h"

enum { W_SEEK, W_WORK, W_PEEK, W_PROBE };

typedef struct {
  int phase;                          /* W_*: what the next step sends */
  char *seek;                         /* the cursor of the next seek (owned), NULL = from the beginning */
  char ns[ENGRAM_NAMESPACE_MAX + 1];  /* the namespace found, being worked on */
  size_t ns_len;
  char *work_cursor;                  /* list_keys: where the listing of ns resumes (owned), NULL = its start */
  char last[ENGRAM_NAMESPACE_MAX + 1];/* list_namespaces: the last namespace listed */
  size_t last_len;
  int have_last;
  uint64_t acc;                       /* count, clear: the sum; list_*: items emitted */
  int probed, probe_hit;              /* list_namespaces: whether the name a namespace was cut to holds keys */
  int gaps;                           /* seeks in a row that landed beside the prefix ("p!x") */
  int driving, pending, done, status;
  char msg[ENGRAM__MSG_MAX];
} walk_t;

static walk_t *walk_of(const engram_request_t *req) { return req->priv->op_state; }

/* ---- The greatest strings ---- */

/* Appends to b (at *n) the largest valid UTF-8 of exactly room bytes: U+10FFFF while 4 bytes fit, then the
 * largest character of the bytes left. */
static void fill_max(char *b, size_t *n, size_t room) {
  static const unsigned char c4[4] = {0xF4, 0x8F, 0xBF, 0xBF}, c3[3] = {0xEF, 0xBF, 0xBF}, c2[2] = {0xDF, 0xBF};
  for (; room >= 4; room -= 4, *n += 4) memcpy(b + *n, c4, 4);
  if (room == 3) memcpy(b + *n, c3, 3);
  else if (room == 2) memcpy(b + *n, c2, 2);
  else if (room == 1) b[*n] = 0x7F;
  *n += room;
}

/* The cursor after every key of namespace ns (or, with subtree, after every namespace ns + "/…" too). */
static char *cursor_after(const char *ns, size_t ns_len, int subtree) {
  char nb[ENGRAM_NAMESPACE_MAX + 1], kb[ENGRAM_KEY_MAX + 1];
  size_t n = ns_len, k = 0;
  memcpy(nb, ns, ns_len);
  if (subtree && ns_len + 1 <= ENGRAM_NAMESPACE_MAX) {
    nb[n++] = '/';
    fill_max(nb, &n, ENGRAM_NAMESPACE_MAX - n);
  }
  fill_max(kb, &k, ENGRAM_KEY_MAX);
  return engram_cursor_encode(nb, n, kb, k);
}

/* The cursor just below namespace x (x non-empty): a listing after it starts at the first namespace ≥ x. The
 * greatest namespace below x is x less its last character, then that character less one, then the largest fill
 * (x's last character U+0001: x less it, which nothing lies between). */
static char *cursor_before(const char *x, size_t x_len) {
  char nb[ENGRAM_NAMESPACE_MAX + 1], kb[ENGRAM_KEY_MAX + 1];
  size_t n = x_len, k = 0, start = x_len;
  unsigned cp;
  while (start > 0 && ((unsigned char)x[start - 1] & 0xC0) == 0x80) start--; /* the last character's first byte */
  if (start > 0) start--;
  {
    const unsigned char *p = (const unsigned char *)x + start;
    size_t len = x_len - start;
    cp = len == 1 ? p[0]
         : len == 2 ? ((p[0] & 0x1Fu) << 6) | (p[1] & 0x3Fu)
         : len == 3 ? ((p[0] & 0x0Fu) << 12) | ((p[1] & 0x3Fu) << 6) | (p[2] & 0x3Fu)
                    : ((p[0] & 0x07u) << 18) | ((p[1] & 0x3Fu) << 12) | ((p[2] & 0x3Fu) << 6) | (p[3] & 0x3Fu);
  }
  memcpy(nb, x, start);
  n = start;
  if (cp > 1) {
    unsigned c = cp - 1;
    if (c >= 0xD800 && c <= 0xDFFF) c = 0xD7FF; /* no surrogates in UTF-8 */
    if (c < 0x80) nb[n++] = (char)c;
    else if (c < 0x800) {
      nb[n++] = (char)(0xC0 | (c >> 6));
      nb[n++] = (char)(0x80 | (c & 0x3F));
    } else if (c < 0x10000) {
      nb[n++] = (char)(0xE0 | (c >> 12));
      nb[n++] = (char)(0x80 | ((c >> 6) & 0x3F));
      nb[n++] = (char)(0x80 | (c & 0x3F));
    } else {
      nb[n++] = (char)(0xF0 | (c >> 18));
      nb[n++] = (char)(0x80 | ((c >> 12) & 0x3F));
      nb[n++] = (char)(0x80 | ((c >> 6) & 0x3F));
      nb[n++] = (char)(0x80 | (c & 0x3F));
    }
    fill_max(nb, &n, ENGRAM_NAMESPACE_MAX - n);
  }
  fill_max(kb, &k, ENGRAM_KEY_MAX);
  return engram_cursor_encode(nb, n, kb, k);
}

/* ---- Where a namespace lies against the prefix ---- */

enum { NS_IN, NS_GAP, NS_PAST };

/* NS_IN: ns is p or below it; NS_GAP: ns begins with p but sorts before p + "/" ("p!x"), or sorts before p;
 * NS_PAST: ns sorts after every namespace under p. An empty prefix takes everything in. */
static int place(const char *p, size_t p_len, const char *ns, size_t ns_len) {
  size_t n = ns_len < p_len ? ns_len : p_len;
  int c;
  if (p_len == 0) return NS_IN;
  c = memcmp(ns, p, n);
  if (c < 0 || (c == 0 && ns_len < p_len)) return NS_GAP;
  if (c > 0) return NS_PAST;
  if (ns_len == p_len || ns[p_len] == '/') return NS_IN;
  return (unsigned char)ns[p_len] < '/' ? NS_GAP : NS_PAST;
}

/* Cuts ns to its first depth levels (0 = whole); returns the length kept. */
static size_t cut_depth(const char *ns, size_t ns_len, size_t depth) {
  size_t i, levels = 1;
  if (depth == 0) return ns_len;
  for (i = 0; i < ns_len; i++)
    if (ns[i] == '/' && ++levels > depth) return i;
  return ns_len;
}

/* ---- The drive loop ---- */

static void step(engram_source_t *src, engram_request_t *req);

static void end(engram_request_t *req, int status, const char *msg) {
  walk_t *w = walk_of(req);
  if (w->done) return;
  w->done = 1;
  w->status = status;
  if (msg != NULL) snprintf(w->msg, sizeof w->msg, "%s", msg);
}

/* Runs steps until one is waiting for a sub-request that has not come back; finishes the request once done. */
static void drive(engram_source_t *src, engram_request_t *req) {
  walk_t *w = walk_of(req);
  if (w->driving) {
    w->pending = 1;
    return;
  }
  w->driving = 1;
  do {
    w->pending = 0;
    if (!w->done && engram_request_answered(req)) end(req, ENGRAM_ECANCELED, NULL);
    if (!w->done) step(src, req);
  } while (w->pending && !w->done);
  w->driving = 0;
  if (w->done) {
    int status = w->status;
    if (w->msg[0] != '\0' && !req->priv->answered) memcpy(req->priv->message, w->msg, sizeof req->priv->message);
    engram_reply_set_count(req, w->acc);
    engram_free(w->seek);
    engram_free(w->work_cursor);
    engram_free(w);
    req->priv->op_state = NULL;
    engram_request_complete(req, status);
  }
}

/* A sub-request came back: what it says was taken by the caller; go on. */
static void resume(engram_request_t *sub) {
  engram_request_t *parent = sub->priv->parent;
  engram_source_t *src = parent->priv->actor;
  engram__request_unref(sub);
  drive(src, parent);
}

/* Ends the walk with a failed sub-request's status and message. Returns non-zero when it failed. */
static int failed(engram_request_t *sub) {
  if (sub->priv->status == 0) return 0;
  end(sub->priv->parent, sub->priv->status, sub->priv->message);
  return 1;
}

static void set_seek(walk_t *w, char *cursor) {
  engram_free(w->seek);
  w->seek = cursor;
}

/* ---- Seek: the next namespace under the prefix ---- */

static void work(engram_source_t *src, engram_request_t *req);

static void sought(engram_request_t *sub) {
  engram_request_t *req = sub->priv->parent;
  walk_t *w = walk_of(req);
  int peek = w->phase == W_PEEK;
  if (!failed(sub)) {
    const engram_item_t *it = sub->priv->n_items > 0 ? &sub->priv->items[0] : NULL;
    size_t len = it ? strlen(it->ns) : 0;
    int where = it ? place(req->ns, req->ns_len, it->ns, len) : NS_PAST;
    char *next = NULL;
    if (where == NS_IN) {
      w->gaps = 0;
      if (peek) { /* a full page, and more to come: the cursor stays; done */
        end(req, 0, NULL);
      } else {
        memcpy(w->ns, it->ns, len);
        w->ns[len] = '\0';
        w->ns_len = len;
        w->phase = W_WORK;
      }
    } else if (where == NS_GAP) { /* "p!x" and the like: on to the first namespace ≥ p + "/" */
      char x[ENGRAM_NAMESPACE_MAX + 2];
      memcpy(x, req->ns, req->ns_len);
      x[req->ns_len] = '/';
      if (req->ns_len + 1 > ENGRAM_NAMESPACE_MAX) where = NS_PAST; /* nothing can lie below p */
      else if (++w->gaps > 1) /* the seek before p + "/" landed before it again: a listing that ignores cursors */
        end(req, ENGRAM_EBACKEND, "list_keys across namespaces did not resume after its cursor");
      else if ((next = cursor_before(x, req->ns_len + 1)) == NULL) end(req, ENGRAM_ENOMEM, NULL);
      else set_seek(w, next);
    }
    if (where == NS_PAST) {
      if (peek) engram_reply_set_cursor(req, NULL);
      end(req, 0, NULL);
    }
  }
  resume(sub);
}

static void seek(engram_source_t *src, engram_request_t *req) {
  walk_t *w = walk_of(req);
  engram_request_t *sub = engram__subrequest(req, ENGRAM_OP_LIST_KEYS, NULL, "", sought);
  if (sub == NULL) {
    end(req, ENGRAM_ENOMEM, NULL);
    return;
  }
  sub->flags = ENGRAM_REQ_ALL_NAMESPACES;
  sub->query.limit = 1;
  sub->cursor = sub->priv->cursor_in = w->seek; /* handed over: the sub-request frees it; each step sets a new one */
  w->seek = NULL;
  engram__actor_dispatch(src, sub);
}

/* ---- Work: the operation on the namespace found ---- */

/* After the namespace in w->ns: its keys (or, for a namespace listed cut to a depth, its subtree too). */
static int seek_past(walk_t *w, const char *ns, size_t ns_len, int subtree) {
  char *c = cursor_after(ns, ns_len, subtree);
  if (c == NULL) return ENGRAM_ENOMEM;
  set_seek(w, c);
  return 0;
}

static void worked(engram_request_t *sub) {
  engram_request_t *req = sub->priv->parent;
  engram_source_t *src = req->priv->actor;
  walk_t *w = walk_of(req);
  if (!failed(sub)) {
    int rc = 0;
    if (req->op == ENGRAM_OP_COUNT) {
      w->acc += sub->priv->count;
    } else if (req->op == ENGRAM_OP_CLEAR) {
      w->acc += sub->priv->count;
      /* one cleared event per namespace (the parent, over a prefix, announces nothing itself) */
      if (src->events != NULL && atomic_load_explicit(&src->events->active, memory_order_relaxed))
        src->events->completed(src->events, src, sub);
    } else { /* LIST_KEYS */
      size_t i, n = sub->priv->n_items;
      for (i = 0; rc == 0 && i < n; i++) {
        engram_item_t it = sub->priv->items[i];
        it.value = NULL;
        it.metadata = NULL;
        it.ns = w->ns;
        rc = engram_reply_add(req, &it, 0);
        w->acc++;
      }
      if (rc == 0 && sub->priv->cursor != NULL) { /* the page is full and this namespace goes on */
        rc = engram_reply_set_cursor(req, sub->priv->cursor);
        if (rc == 0) end(req, 0, NULL);
      } else if (rc == 0 && w->acc >= (uint64_t)req->query.limit) {
        /* full, and this namespace ended with it: the cursor names the last key; peek whether more follow */
        const engram_item_t *last = &req->priv->items[req->priv->n_items - 1];
        rc = engram_reply_set_key_cursor(req, w->ns, w->ns_len, last->key, strlen(last->key));
        w->phase = W_PEEK;
      }
      engram_free(w->work_cursor);
      w->work_cursor = NULL;
    }
    if (rc == 0 && !w->done && w->phase == W_WORK) {
      w->phase = W_SEEK;
      rc = seek_past(w, w->ns, w->ns_len, 0);
    } else if (rc == 0 && w->phase == W_PEEK) {
      rc = seek_past(w, w->ns, w->ns_len, 0);
    }
    if (rc != 0) end(req, rc, NULL);
  }
  resume(sub);
}

/* list_namespaces: the depth names are cut to — never above the prefix's own levels, so every name listed lies
 * under the prefix. */
static size_t depth_of(const engram_request_t *req) {
  size_t i, levels = 1, depth = req->n;
  if (depth == 0 || req->ns_len == 0) return depth;
  for (i = 0; i < req->ns_len; i++) levels += req->ns[i] == '/';
  return depth < levels ? levels : depth;
}

static void probed(engram_request_t *sub) {
  walk_t *w = walk_of(sub->priv->parent);
  if (!failed(sub)) {
    w->probed = 1;
    w->probe_hit = sub->priv->n_items > 0;
    w->phase = W_WORK;
  }
  resume(sub);
}

/* list_namespaces: the walk found w->ns. It is listed cut to the depth, once. A namespace inside the subtree of
 * the name it is cut to ("u1/a" cut to "u1") may come after that name was listed — "u1" itself, with keys of its
 * own, is listed before "u1!x" and "u1/a" (or on an earlier page) — so whether the name holds keys is asked
 * first, with one listing of one key; either way the whole subtree is then passed over. */
static void name_found(engram_source_t *src, engram_request_t *req) {
  walk_t *w = walk_of(req);
  size_t cut = cut_depth(w->ns, w->ns_len, depth_of(req));
  int rc = 0, seen = w->have_last && cut == w->last_len && memcmp(w->ns, w->last, cut) == 0;
  if (!seen && cut < w->ns_len) {
    if (!w->probed) {
      char name[ENGRAM_NAMESPACE_MAX + 1];
      engram_request_t *sub;
      memcpy(name, w->ns, cut);
      name[cut] = '\0';
      if ((sub = engram__subrequest(req, ENGRAM_OP_LIST_KEYS, NULL, name, probed)) == NULL) {
        end(req, ENGRAM_ENOMEM, NULL);
        return;
      }
      sub->query.limit = 1;
      w->phase = W_PROBE;
      engram__actor_dispatch(src, sub);
      return;
    }
    seen = w->probe_hit;
  }
  w->probed = 0;
  if (!seen) {
    engram_item_t it;
    memset(&it, 0, sizeof it);
    it.key = "";
    it.ns = w->ns;
    it.score = 1.0;
    w->ns[cut] = '\0'; /* the walk moves past it below, by the name */
    rc = engram_reply_add(req, &it, 0);
    w->acc++;
  }
  memcpy(w->last, w->ns, cut);
  w->last[cut] = '\0';
  w->last_len = cut;
  w->have_last = 1;
  /* On past this namespace's keys; and past the subtree of the name when this namespace lies inside it, since
   * all of it is listed as that name. Namespaces that sort between a name and its subtree ("u1!x" between "u1"
   * and "u1/a") are not inside it, so a name found as itself moves past its own keys only. */
  if (rc == 0) rc = seek_past(w, w->last, w->last_len, cut < w->ns_len);
  if (rc != 0) {
    end(req, rc, NULL);
    return;
  }
  if (!seen && w->acc >= (uint64_t)req->query.limit) {
    char *c = engram_malloc(w->last_len + 3);
    if (c == NULL) {
      end(req, ENGRAM_ENOMEM, NULL);
      return;
    }
    c[0] = 'n';
    c[1] = ':';
    memcpy(c + 2, w->last, w->last_len);
    c[w->last_len + 2] = '\0';
    rc = engram_reply_set_cursor(req, c);
    engram_free(c);
    if (rc != 0) end(req, rc, NULL);
    w->phase = W_PEEK;
  } else if (w->phase != W_PEEK) {
    w->phase = W_SEEK;
  }
  w->pending = 1; /* nothing sent: the loop takes the next step */
}

static void work(engram_source_t *src, engram_request_t *req) {
  walk_t *w = walk_of(req);
  engram_request_t *sub;
  if (req->op == ENGRAM_OP_LIST_NAMESPACES) {
    name_found(src, req);
    return;
  }
  sub = engram__subrequest(req, req->op, NULL, w->ns, worked);
  if (sub == NULL) {
    end(req, ENGRAM_ENOMEM, NULL);
    return;
  }
  sub->flags = req->op == ENGRAM_OP_CLEAR ? 0 : req->flags & ENGRAM_OPT_RANGES;
  sub->created_at = req->created_at;
  sub->updated_at = req->updated_at;
  sub->expires_at = req->expires_at;
  if (req->op != ENGRAM_OP_CLEAR) sub->query = req->query;
  if (req->op == ENGRAM_OP_LIST_KEYS) {
    sub->query.limit = req->query.limit - (int)w->acc;
    sub->cursor = w->work_cursor; /* owned by the walk, which outlives the sub-request */
  }
  engram__actor_dispatch(src, sub);
}

static void step(engram_source_t *src, engram_request_t *req) {
  walk_t *w = walk_of(req);
  switch (w->phase) {
    case W_SEEK:
    case W_PEEK: seek(src, req); break;
    case W_WORK: work(src, req); break;
    default: break; /* W_PROBE: waiting */
  }
}

/* ---- Entry points ---- */

/* Sets the walk's start from the call's cursor (list_keys, list_namespaces) or the prefix. 0 or an error. */
static int start(engram_request_t *req, walk_t *w) {
  if (req->cursor != NULL && req->op == ENGRAM_OP_LIST_NAMESPACES) {
    const char *ns = req->cursor + 2;
    size_t len = strlen(ns);
    if (place(req->ns, req->ns_len, ns, len) != NS_IN) {
      engram__request_set_message(req, "cursor \"%.40s\" names a namespace outside the prefix '%.40s'", req->cursor,
                                  req->ns);
      return ENGRAM_EINVAL;
    }
    memcpy(w->last, ns, len);
    w->last[len] = '\0';
    w->last_len = len;
    w->have_last = 1;
    return seek_past(w, ns, len, 0); /* its subtree, if cut, is skipped when the walk lands in it */
  }
  if (req->cursor != NULL) { /* list_keys: resume inside the cursor's namespace */
    const char *cns, *ckey;
    size_t cns_len, ckey_len;
    if (engram_cursor_parse(req->cursor, &cns, &cns_len, &ckey, &ckey_len) != 0) {
      engram__request_set_message(req, "cursor \"%.40s\" was not made by this source", req->cursor);
      return ENGRAM_EINVAL;
    }
    if (place(req->ns, req->ns_len, cns, cns_len) != NS_IN) {
      engram__request_set_message(req, "cursor \"%.40s\" names a namespace outside the prefix '%.40s'", req->cursor,
                                  req->ns);
      return ENGRAM_EINVAL;
    }
    memcpy(w->ns, cns, cns_len);
    w->ns[cns_len] = '\0';
    w->ns_len = cns_len;
    if ((w->work_cursor = engram_strdup(req->cursor)) == NULL) return ENGRAM_ENOMEM;
    w->phase = W_WORK;
    return 0;
  }
  if (req->ns_len > 0 && (w->seek = cursor_before(req->ns, req->ns_len)) == NULL) return ENGRAM_ENOMEM;
  return 0;
}

void engram__prefix_run(engram_source_t *src, engram_request_t *req) {
  walk_t *w = engram_calloc(1, sizeof *w);
  int rc;
  if (w == NULL) {
    engram_request_complete(req, ENGRAM_ENOMEM);
    return;
  }
  req->priv->op_state = w;
  w->phase = W_SEEK;
  if ((rc = start(req, w)) != 0) {
    char msg[ENGRAM__MSG_MAX];
    memcpy(msg, req->priv->message, sizeof msg);
    end(req, rc, msg[0] ? msg : NULL);
  }
  drive(src, req);
}

void engram__prefix_count(engram_source_t *src, engram_request_t *req) {
  if (req->flags & ENGRAM_OPT_NS_PREFIX) engram__prefix_run(src, req);
  else src->table.count(src, req);
}

void engram__prefix_clear(engram_source_t *src, engram_request_t *req) {
  if (req->flags & ENGRAM_OPT_NS_PREFIX) engram__prefix_run(src, req);
  else src->table.clear(src, req);
}

void engram__prefix_list_keys(engram_source_t *src, engram_request_t *req) {
  if ((req->flags & ENGRAM_OPT_NS_PREFIX) && req->priv->parent == NULL) engram__prefix_run(src, req);
  else engram__order_list_keys(src, req);
}
