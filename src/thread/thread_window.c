/*
 * thread_window.c — engram_thread_window: the newest messages that fit a count or a token budget.
 *
 * A window walks the thread down from its newest message, page by page (one retrieve_many each; with a hint of
 * the head (thread_hint.h) the first page, the head and the summary item go in one round trip), keeps the system
 * messages, never splits a tool call from its result, and answers in chronological order with the summary item
 * (thread_summary.h) at its head. When the window names a summariser and leaves out messages the summary does not
 * cover, a summary job starts as the window answers.
 */
#include <inttypes.h>
#include <string.h>

#include "request/request.h"
#include "thread/thread_call.h"
#include "thread/thread_check.h"
#include "shared/error.h"
#include "thread/thread_hint.h"
#include "thread/thread_summary.h"

static size_t tokens_of(call_t *c, const cJSON *m) {
  return c->win.count_tokens ? c->win.count_tokens(m, c->win.count_ud) : engram_thread_count_tokens(m, NULL);
}

/* tokens_of a page's message m: the default counter's count kept with a cached one. */
static size_t page_tokens(call_t *c, const struct th_pg_s *p, const cJSON *m) {
  return p->e != NULL && c->win.count_tokens == NULL ? th_mc_tokens(p->e) : tokens_of(c, m);
}

static int fits(call_t *c, size_t cnt, uint64_t tok) {
  if ((c->win.flags & ENGRAM_WINDOW_BY_COUNT) && cnt > (size_t)c->win.max_messages) return 0;
  if ((c->win.flags & ENGRAM_WINDOW_BY_TOKENS) && tok > (uint64_t)c->win.max_tokens) return 0;
  return 1;
}

/* Starts the summary job when the window names a summariser and left out messages below cut that the summary does
 * not cover: up to ENGRAM_THREAD_BATCH_MAX of them, oldest first. Failures are dropped: the next window asks. */
static void window_summarize(call_t *c, uint64_t cut) {
  uint64_t *seqs, s = c->head.first;
  size_t n = 0;
  if (c->win.summarize == NULL) return;
  if (c->sum_value != NULL && c->sum.last_seq + 1 > s) s = c->sum.last_seq + 1;
  if (s >= cut || (seqs = engram_malloc(ENGRAM_THREAD_BATCH_MAX * sizeof *seqs)) == NULL) return;
  for (; s < cut && n < ENGRAM_THREAD_BATCH_MAX; s++)
    if (th_head_visible(&c->head, s) && !th_head_is_system(&c->head, s)) seqs[n++] = s;
  if (n > 0)
    (void)th_summary_start(c->mgr, &c->o, c->id, c->head.gen, c->head.ttl_ms, seqs, n,
                           c->sum_value != NULL ? &c->sum : NULL, c->win.summarize, c->win.summarize_ud);
  engram_free(seqs);
}

/* msgs (chronological) with the summary's system message after the leading system messages: a new array (built
 * item by item: cJSON 1.7.15's cJSON_InsertItemInArray refuses to insert before a parsed array's second item). */
static cJSON *with_summary(const cJSON *msgs, const cJSON *sum_msg) {
  cJSON *out = cJSON_CreateArray(), *d;
  const cJSON *m = msgs ? msgs->child : NULL;
  int placed = 0;
  if (out == NULL) return NULL;
  for (;;) {
    const char *role = m ? cJSON_GetStringValue(th_get(m, "role")) : NULL;
    const cJSON *next = m;
    if (!placed && (m == NULL || role == NULL || strcmp(role, "system") != 0)) {
      next = sum_msg;
      placed = 1;
    } else if (m == NULL) {
      break;
    } else {
      m = m->next;
    }
    if ((d = cJSON_Duplicate(next, 1)) == NULL || !cJSON_AddItemToArray(out, d)) {
      cJSON_Delete(d);
      cJSON_Delete(out);
      return NULL;
    }
  }
  return out;
}

static void window_finish(call_t *c) {
  cJSON *msgs, *info, *d;
  const cJSON *s;
  size_t i, si = 0, nsys = (size_t)cJSON_GetArraySize(c->sysmsgs);
  uint64_t cut = c->head.last + 1, omitted;
  char *text = NULL;
  int show_sum;
  if ((info = th_base_info(c, &msgs)) == NULL) {
    th_fail(c, ENGRAM_ENOMEM, "out of memory");
    return;
  }
  if (c->valid > 0) {
    const cJSON *oldest = cJSON_GetArrayItem(c->taken, (int)c->valid - 1);
    cut = (uint64_t)th_get(oldest, "seq")->valuedouble;
  }
  /* chronological: the taken messages (held newest first; the first `valid` count) merged with the system
   * messages (ascending) by seq, each moved from its list into the window's */
  {
    cJSON *t = c->valid > 0 ? cJSON_GetArrayItem(c->taken, (int)c->valid - 1) : NULL, *sm = c->sysmsgs->child;
    (void)si;
    (void)nsys;
    (void)s;
    while (t != NULL || sm != NULL) {
      if (t != NULL && (sm == NULL || th_get(t, "seq")->valuedouble <
                                          th_get(sm, "seq")->valuedouble)) {
        cJSON *newer = t == c->taken->child ? NULL : t->prev; /* the child's prev is the tail: stop there */
        d = cJSON_DetachItemViaPointer(c->taken, t);
        t = newer;
      } else {
        cJSON *after = sm->next;
        d = cJSON_DetachItemViaPointer(c->sysmsgs, sm);
        sm = after;
      }
      cJSON_AddItemToArray(msgs, d); /* cannot fail: both are set */
    }
  }
  omitted = th_head_live_below(&c->head, cut);
  for (i = 0; i < c->head.nsys && c->head.sys[i] < cut; i++) omitted--;
  /* the summary heads the window when it covers a message older than the window */
  show_sum = c->sum_value != NULL && c->sum.first_seq < cut;
  cJSON_AddNumberToObject(info, "omitted", (double)omitted);
  cJSON_AddNumberToObject(info, "tokens", (double)(c->sys_tok + c->valid_tok - (show_sum ? 0 : c->sum_tok)));
  cJSON_AddBoolToObject(info, "over_limit", c->over);
  if (show_sum) {
    cJSON *o = cJSON_AddObjectToObject(info, "summary");
    if (o == NULL || !cJSON_AddStringToObject(o, "text", c->sum.text) ||
        !cJSON_AddNumberToObject(o, "first_seq", (double)c->sum.first_seq) ||
        !cJSON_AddNumberToObject(o, "last_seq", (double)c->sum.last_seq) ||
        !cJSON_AddNumberToObject(o, "created_at_ms", (double)c->sum.created_at_ms)) {
      cJSON_Delete(info);
      th_fail(c, ENGRAM_ENOMEM, "out of memory");
      return;
    }
  }
  if (c->win.format != ENGRAM_RENDER_NONE) {
    cJSON *rmsgs = show_sum ? with_summary(msgs, c->sum_msg) : NULL;
    cJSON *body = show_sum && rmsgs == NULL ? NULL : engram_thread_render(show_sum ? rmsgs : msgs, c->win.format);
    cJSON_Delete(rmsgs);
    text = body ? engram_json_print_text(body) : NULL;
    cJSON_Delete(body);
    if (text == NULL) {
      cJSON_Delete(info);
      th_fail(c, ENGRAM_ENOMEM, "out of memory rendering the window");
      return;
    }
  }
  window_summarize(c, cut); /* its summariser runs in a later callback, after the window's */
  {
    /* th_finish frees the call; the text outlives it until after the callback */
    size_t n = (size_t)cJSON_GetArraySize(msgs);
    th_finish(c, 0, info, msgs, n, NULL, text);
  }
  engram_free(text);
}

static void window_next(call_t *c);

/* The window's node for the page's message p (its tree *m): the cached entry's message by reference (the call keeps
 * the entry pinned until it is freed, after the callback), else the reply's value taken out of the reply (which
 * the core owns until this callback returns: no copy) and, when the cache is on and the message is the one its key
 * names, kept in the cache and shown from there. Sets *m to the tree the node shows (the reply's may be freed here:
 * read the message through *m after this call). NULL when out of memory. */
static cJSON *claim(call_t *c, const engram_reply_t *r, const struct th_pg_s *p, const cJSON **m) {
  th_mc_entry_t *e = p->e;
  cJSON *d;
  if (e == NULL) {
    /* The reply's tree, whole when it is a block that owns itself (a backend's engram_json_parse_reply: the window
     * and the message cache only read it), else as engram_reply_take_value hands it: a copy of a block in the
     * request's room or of a reference. */
    if ((d = engram__reply_take_read(r, p->ri)) == NULL) return NULL;
    *m = d;
    if (c->mc == NULL || (uint64_t)th_get(d, "seq")->valuedouble != p->seq ||
        c->n_pins == c->cap_pins || (e = th_mc_put(c->mc, &c->mct, p->seq, d, 0)) == NULL)
      return d;
    c->pins[c->n_pins++] = e; /* room reserved by page_plan */
    if (th_mc_msg(e) != d) { /* another window kept the same message first: show that one */
      cJSON_Delete(d);
      *m = th_mc_msg(e);
    }
  }
  return cJSON_CreateObjectReference(th_mc_msg(e)->child);
}

/* Takes one non-system message walking down (the page's p, tree m); sets c->stopped when it does not fit. */
static void window_take(call_t *c, const engram_reply_t *r, const struct th_pg_s *p, const cJSON *m) {
  size_t t = page_tokens(c, p, m);
  const char *role;
  cJSON *d;
  if (!fits(c, c->cnt + 1, c->tok + t)) {
    c->stopped = 1;
    return;
  }
  if ((d = claim(c, r, p, &m)) == NULL || !cJSON_AddItemToArray(c->taken, d)) {
    cJSON_Delete(d);
    c->stopped = -1;
    return;
  }
  c->n_taken++;
  c->cnt++;
  c->tok += t;
  role = cJSON_GetStringValue(th_get(m, "role"));
  if (role != NULL && strcmp(role, "tool") == 0) {
    const char *id = cJSON_GetStringValue(th_get(m, "tool_call_id"));
    if (id != NULL && !cJSON_HasObjectItem(c->open, id) && !cJSON_AddTrueToObject(c->open, id)) c->stopped = -1;
  } else if (role != NULL && strcmp(role, "assistant") == 0) {
    const cJSON *call;
    cJSON_ArrayForEach(call, th_get(m, "tool_calls")) {
      const char *id = cJSON_GetStringValue(th_get(call, "id"));
      if (id != NULL) cJSON_DeleteItemFromObjectCaseSensitive(c->open, id);
    }
  }
  /* a cut here separates no call from its results */
  if (c->open->child == NULL) {
    c->valid = c->n_taken;
    c->valid_cnt = c->cnt;
    c->valid_tok = c->tok - c->sys_tok;
  }
}

static void on_window_page(int status, const engram_reply_t *r, void *ud) {
  call_t *c = ud;
  size_t i, j;
  if (!th_reply_ok(c, status, r)) return;
  for (i = 0; c->page == 0 && i < r->n_items; i++) {
    /* the summary item, read with the first page */
    if (r->items[i].status != 0 || r->items[i].key == NULL || strcmp(r->items[i].key, c->sum_key) != 0) continue;
    if ((c->sum_value = cJSON_Duplicate(r->items[i].value, 1)) == NULL && r->items[i].value != NULL) {
      th_fail(c, ENGRAM_ENOMEM, "out of memory");
      return;
    }
    if (c->sum_value == NULL || th_summary_parse(c->sum_value, &c->sum) != 0) {
      cJSON_Delete(c->sum_value); /* not a summary: ignored */
      c->sum_value = NULL;
      break;
    }
    {
      size_t len = strlen(c->sum.text);
      char *t = engram_malloc(sizeof TH_SUMMARY_PREFIX_TEXT + len);
      if (t != NULL) {
        memcpy(t, TH_SUMMARY_PREFIX_TEXT, sizeof TH_SUMMARY_PREFIX_TEXT - 1);
        memcpy(t + sizeof TH_SUMMARY_PREFIX_TEXT - 1, c->sum.text, len + 1);
      }
      if (t == NULL || (c->sum_msg = cJSON_CreateObject()) == NULL ||
          !cJSON_AddStringToObject(c->sum_msg, "role", "system") || !cJSON_AddStringToObject(c->sum_msg, "content", t)) {
        engram_free(t);
        th_fail(c, ENGRAM_ENOMEM, "out of memory");
        return;
      }
      engram_free(t);
    }
    c->sum_tok = tokens_of(c, c->sum_msg);
    c->sys_tok += c->sum_tok;
    break;
  }
  for (i = 0, j = 0; i < c->n_pg; i++) { /* the page's messages, in the order asked: cached, or read */
    struct th_pg_s *p = &c->pg[i];
    const cJSON *m = p->e != NULL ? th_mc_msg(p->e) : th_msg_of(r, p->ri = c->key_off + j++);
    uint64_t seq;
    if ((p->m = m) == NULL) continue; /* a gap */
    seq = (uint64_t)th_get(m, "seq")->valuedouble;
    if (th_head_is_system(&c->head, seq)) {
      cJSON *d = claim(c, r, p, &m);
      p->m = NULL; /* taken: not a candidate below */
      if (d == NULL || !cJSON_AddItemToArray(c->sysmsgs, d)) {
        cJSON_Delete(d);
        th_fail(c, ENGRAM_ENOMEM, "out of memory");
        return;
      }
      c->sys_cnt++;
      c->sys_tok += page_tokens(c, p, m);
    }
  }
  if (c->page == 0) { /* the first batch held every system message: they are claimed first */
    c->cnt = c->sys_cnt;
    c->tok = c->sys_tok;
    if (!fits(c, c->cnt, c->tok)) {
      c->over = 1;
      c->stopped = 1;
    }
  }
  for (i = 0; i < c->n_pg && !c->stopped; i++)
    if (c->pg[i].m != NULL) window_take(c, r, &c->pg[i], c->pg[i].m);
  if (c->stopped < 0) {
    th_fail(c, ENGRAM_ENOMEM, "out of memory");
    return;
  }
  c->page++;
  if (c->stopped || c->walk == 0) window_finish(c);
  else window_next(c);
}

/* The page of seqs[0..n) (system messages first on the first page, then walking down): each number's cached entry
 * (pinned for the call) or, for the others, its key in c->keys, in order (seqs is reused for them). Reserves room
 * to pin every message the page reads. 0 or ENGRAM_ENOMEM. */
static int page_plan(call_t *c, uint64_t *seqs, size_t n) {
  size_t i, k = 0;
  c->n_pg = 0;
  c->key_off = 0;
  if (n > c->cap_pg) {
    struct th_pg_s *pg = engram_realloc(c->pg, n * sizeof *pg);
    if (pg == NULL) return ENGRAM_ENOMEM;
    c->pg = pg;
    c->cap_pg = n;
  }
  if (c->mc != NULL && c->n_pins + n > c->cap_pins) {
    size_t cap = c->n_pins + n < 64 ? 64 : (c->n_pins + n) * 2;
    th_mc_entry_t **pins = engram_realloc(c->pins, cap * sizeof *pins);
    if (pins == NULL) return ENGRAM_ENOMEM;
    c->pins = pins;
    c->cap_pins = cap;
  }
  for (i = 0; i < n; i++) {
    struct th_pg_s *p = &c->pg[i];
    p->seq = seqs[i];
    p->m = NULL;
    p->ri = 0;
    p->e = c->mc != NULL ? th_mc_get(c->mc, &c->mct, seqs[i]) : NULL;
    if (p->e != NULL) c->pins[c->n_pins++] = p->e;
    else seqs[k++] = seqs[i];
  }
  c->n_pg = n;
  return th_make_keys(c, seqs, k);
}

/* The keys of the next page walking down from c->walk (plus, on the first page, every system message and the
 * summary item) into c->keys: 0; 1 when there is nothing more to read; ENGRAM_ENOMEM. */
static int window_keys(call_t *c) {
  size_t want, n = 0, i;
  uint64_t *seqs, s;
  int rc;
  if (c->win.flags & ENGRAM_WINDOW_BY_COUNT && c->page == 0) {
    /* exactly the newest numbers the window can hold beside the system messages: with no gap among them (the
     * usual case: the cache, SQLite, Redis and PostgreSQL write messages with their head) nothing is read in
     * vain; a gap costs one more page (below) */
    want = (size_t)c->win.max_messages > c->head.nsys ? (size_t)c->win.max_messages - c->head.nsys : 0;
    if (want > WINDOW_PAGE_MAX) want = WINDOW_PAGE_MAX;
  } else if (c->win.flags & ENGRAM_WINDOW_BY_COUNT) {
    want = (size_t)c->win.max_messages > c->cnt ? (size_t)c->win.max_messages - c->cnt + 4 : 4;
    if (want > WINDOW_PAGE_MAX) want = WINDOW_PAGE_MAX;
  } else {
    want = WINDOW_PAGE << (c->page < 6 ? c->page : 6);
  }
  if (c->win.flags & ENGRAM_WINDOW_BY_COUNT && c->cnt >= (size_t)c->win.max_messages) return 1;
  if ((seqs = engram_malloc((want + (c->page == 0 ? c->head.nsys : 0)) * sizeof *seqs)) == NULL) return ENGRAM_ENOMEM;
  if (c->page == 0)
    for (i = 0; i < c->head.nsys; i++) seqs[n++] = c->head.sys[i];
  for (s = c->walk; s >= c->head.first && s > 0 && n < want + (c->page == 0 ? c->head.nsys : 0); s--)
    if (th_head_visible(&c->head, s) && !th_head_is_system(&c->head, s)) seqs[n++] = s;
  c->walk = s >= c->head.first && s > 0 ? s : 0;
  rc = page_plan(c, seqs, n);
  engram_free(seqs);
  if (rc == 0 && n == 0) return 1;
  if (rc == 0 && c->page == 0) { /* the summary item rides with the first page */
    size_t nk = c->n_keys; /* the page's messages that are not cached */
    char **k = engram_realloc(c->keys, (nk + 1) * sizeof *k);
    if (k == NULL) rc = ENGRAM_ENOMEM;
    else if ((c->keys = k, k[nk] = engram_strdup(c->sum_key)) == NULL) rc = ENGRAM_ENOMEM;
    else c->n_keys = nk + 1;
  }
  return rc;
}

/* Requests the next page (window_keys). */
static void window_next(call_t *c) {
  int rc = window_keys(c);
  if (rc == 1) {
    window_finish(c);
    return;
  }
  if (rc == 0 && c->n_keys == 0) { /* every message of the page is cached */
    engram_reply_t none;
    memset(&none, 0, sizeof none);
    none.op = ENGRAM_OP_RETRIEVE_MANY;
    none.message = "";
    on_window_page(0, &none, c);
    return;
  }
  if (rc == 0) rc = engram_retrieve_many(c->mgr, (const char *const *)c->keys, c->n_keys, &c->o, on_window_page, c);
  if (rc != 0) th_fail(c, rc, "thread \"%s\": %s", c->id, rc == ENGRAM_ENOMEM ? "out of memory" : engram_last_error());
}

/* The walk's state once c->head is known (read, or hinted): 0 or ENGRAM_ENOMEM. */
static int window_start(call_t *c) {
  if ((c->sysmsgs == NULL && (c->sysmsgs = cJSON_CreateArray()) == NULL) ||
      (c->taken == NULL && (c->taken = cJSON_CreateArray()) == NULL) ||
      (c->open == NULL && (c->open = cJSON_CreateObject()) == NULL))
    return ENGRAM_ENOMEM;
  c->walk = c->head.last >= c->head.first ? c->head.last : 0;
  th_summary_key(c->sum_key, sizeof c->sum_key, c->id, c->head.gen);
  if (c->mc != NULL) th_mc_thread(&c->mct, c->mc_serial, c->ns, c->id, c->head.gen, c->mc_epoch);
  return 0;
}

static void on_window_head(int status, const engram_reply_t *r, void *ud) {
  call_t *c = ud;
  if ((status = th_take_head(c, status, r)) != 0) {
    th_finish(c, status, NULL, NULL, 0, NULL, NULL);
    return;
  }
  if (window_start(c) != 0) {
    th_fail(c, ENGRAM_ENOMEM, "out of memory");
    return;
  }
  window_next(c);
}

/* Windows in one round trip (thread_hint.h). The first retrieve_many names the head and the first page the hint
 * implies; when the head read there names the same messages as the hint, that page is the one the two-step walk
 * would have read after the head (the same keys), and the walk goes on from it. Otherwise the messages read are
 * dropped and the walk starts from the head read — the two-step path, one round trip later. */
static void on_window_spec(int status, const engram_reply_t *r, void *ud) {
  call_t *c = ud;
  th_head_t hint = c->head;
  engram_reply_t head;
  const engram_reply_t *hr = r;
  memset(&c->head, 0, sizeof c->head);
  if (status == 0) { /* the head is item 0, with its own status */
    head = *r;
    head.n_items = r->n_items > 0 ? 1 : 0;
    if (r->n_items > 0) status = r->items[0].status;
    hr = &head;
  }
  if ((status = th_take_head(c, status, hr)) != 0) {
    th_head_free(&hint);
    th_finish(c, status, NULL, NULL, 0, NULL, NULL);
    return;
  }
  if (th_hint_same(&hint, &c->head)) {
    th_head_free(&hint);
    on_window_page(0, r, c); /* item 0, the head, is neither a message nor the summary: skipped there */
    return;
  }
  th_head_free(&hint);
  if (window_start(c) != 0) {
    th_fail(c, ENGRAM_ENOMEM, "out of memory");
    return;
  }
  window_next(c);
}

/* Submits a window's first read with the hint: 0; 1 when there is no hint to use (the caller reads the head
 * first: nothing was submitted, the call's state is as new); else the refusal's code. */
static int window_spec(call_t *c) {
  char **k;
  int rc = th_hint_get(th_hint_hash(c->mgr, c->src, c->ns, c->id), &c->head);
  if (rc <= 0) return 1;
  if ((rc = window_start(c)) == 0 && (rc = window_keys(c)) == 0) {
    if ((k = engram_realloc(c->keys, (c->n_keys + 1) * sizeof *k)) == NULL) {
      rc = ENGRAM_ENOMEM;
    } else {
      c->keys = k;
      memmove(k + 1, k, c->n_keys * sizeof *k);
      c->n_keys++;
      c->key_off = 1;
      if ((k[0] = engram_strdup(c->head_key)) == NULL) rc = ENGRAM_ENOMEM;
    }
  }
  if (rc != 0) { /* an empty thread by the hint, or no memory: the two-step path decides */
    th_head_free(&c->head);
    cJSON_Delete(c->sysmsgs);
    cJSON_Delete(c->taken);
    cJSON_Delete(c->open);
    c->sysmsgs = c->taken = c->open = NULL;
    th_free_keys(c->keys, c->n_keys);
    c->keys = NULL;
    c->n_keys = 0;
    c->walk = 0;
    return 1;
  }
  return engram_retrieve_many(c->mgr, (const char *const *)c->keys, c->n_keys, &c->o, on_window_spec, c);
}

int engram_thread_window(engram_manager_t *mgr, const char *thread, const engram_window_t *window,
                         const engram_opts_t *opts, engram_cb cb, void *ud) {
  call_t *c;
  int rc;
  if ((rc = th_check_call(mgr, thread, cb)) != 0) return rc;
  if (window == NULL) return engram__error(ENGRAM_EINVAL, "window: NULL (use ENGRAM_WINDOW_INIT)");
  if ((window->flags & (ENGRAM_WINDOW_BY_COUNT | ENGRAM_WINDOW_BY_TOKENS)) == 0 ||
      (window->flags & ~(unsigned)(ENGRAM_WINDOW_BY_COUNT | ENGRAM_WINDOW_BY_TOKENS)))
    return engram__error(ENGRAM_EINVAL, "window.flags: 0x%x, must be ENGRAM_WINDOW_BY_COUNT and/or "
                                        "ENGRAM_WINDOW_BY_TOKENS", window->flags);
  if ((window->flags & ENGRAM_WINDOW_BY_COUNT) && (window->max_messages < 1 || window->max_messages > 100000))
    return engram__error(ENGRAM_EINVAL, "window.max_messages: %d, must be 1..100000", window->max_messages);
  if ((window->flags & ENGRAM_WINDOW_BY_TOKENS) && window->max_tokens < 1)
    return engram__error(ENGRAM_EINVAL, "window.max_tokens: %" PRId64 ", must be ≥ 1", window->max_tokens);
  if (window->format != ENGRAM_RENDER_NONE && window->format != ENGRAM_RENDER_OPENAI &&
      window->format != ENGRAM_RENDER_ANTHROPIC)
    return engram__error(ENGRAM_EINVAL, "window.format: %d, unknown", (int)window->format);
  if ((c = th_call_new(mgr, ENGRAM_OP_THREAD_WINDOW, thread, opts, cb, ud)) == NULL)
    return engram__error(ENGRAM_ENOMEM, "out of memory");
  c->win = *window;
  c->mc = th_mc_acquire(mgr, c->src, 1, &c->mc_serial);
  if ((rc = window_spec(c)) == 1) return th_read_submit(c, on_window_head);
  if (rc != 0) th_call_free(c);
  return rc;
}
