/*
 * thread_call.c — a thread call's life: creation, sub-call errors, the head's read, the one callback.
 *
 * Every thread function is a small state machine (call_t, thread_call.h) driven by the callbacks of its own
 * sub-calls on the public data operations. This file holds what they all share: creating and freeing a call, the
 * first error of a sub-call (th_note), reading the head (th_take_head), the keys and items of messages, and
 * th_finish, which calls the caller back exactly once and frees the call (and answers every append merged into a
 * failed update).
 */
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "thread/thread_call.h"
#include "request/reqpool.h"
#include "shared/json_text.h"
#include "thread/thread_hint.h"

void th_free_keys(char **keys, size_t n) {
  size_t i;
  if (keys == NULL) return;
  for (i = 0; i < n; i++) engram_free(keys[i]);
  engram_free(keys);
}

void th_upd_free(upd_t *u) {
  size_t i;
  cJSON_Delete(u->set_meta);
  engram_free(u->deleted);
  engram_free(u->del);
  for (i = 0; u->msgs && i < u->n; i++) /* each with its item metadata: one block */
    if (u->msgs[i] != NULL) {
      u->msgs[i]->next = NULL; /* linked into a reply's "messages" (thread_change.c): cJSON_Delete would follow */
      cJSON_Delete(u->msgs[i]);
    }
  engram_free(u->block); /* msgs, meta, nodes, keys, entries, expires, versions, is_system */
  th_free_keys(u->dkeys, u->n_dkeys);
  th_head_free(&u->head);
  engram_free(u);
}

/* Drops one reference: the call's, or (through the core's release hook) an update request's. Any thread. */
void th_upd_unref(void *ud) {
  upd_t *u = ud;
  if (u != NULL && atomic_fetch_sub_explicit(&u->refs, 1, memory_order_acq_rel) == 1) th_upd_free(u);
}

void th_call_free(call_t *c) {
  if (c == NULL) return;
  th_upd_unref(c->upd);
  cJSON_Delete(c->head_value);
  th_head_free(&c->head);
  cJSON_Delete(c->sysmsgs);
  cJSON_Delete(c->taken);
  cJSON_Delete(c->open);
  cJSON_Delete(c->sum_value);
  cJSON_Delete(c->sum_msg);
  th_free_keys(c->keys, c->n_keys);
  th_free_keys(c->all_keys, c->n_all);
  engram_free(c->cursor_in);
  engram_free(c->list_cursor);
  cJSON_Delete(c->threads);
  {
    size_t i;
    for (i = 0; i < c->n_pins; i++) th_mc_unpin(c->pins[i]); /* after the window's references went with its reply */
    engram_free(c->pins);
    engram_free(c->pg);
    th_mc_release(c->mc);
  }
  engram_free(c->src);
  engram_free(c->ns);
  engram__reqpool_put(ENGRAM__POOL_THREAD_CALL, c); /* ~2 KiB: kept for the next call (request/reqpool.c) */
}

/* The text buffers of call_t (1.1 KiB of its 2.1) start as empty strings; everything else starts zeroed. An append
 * zeroed the whole call: ~2,200 of its instructions by callgrind's count of memset's byte loop. The asserts keep
 * every other field inside the zeroed ranges when call_t changes. */
#define END_OF(f) (offsetof(call_t, f) + sizeof((call_t *)0)->f)
_Static_assert(offsetof(call_t, head_key) == END_OF(id) && offsetof(call_t, source_name) == END_OF(head_key) &&
                   offsetof(call_t, pending) >= END_OF(source_name) && offsetof(call_t, pending) < END_OF(source_name) + 8 &&
                   offsetof(call_t, upd) >= END_OF(message) && offsetof(call_t, upd) < END_OF(message) + 8 &&
                   offsetof(call_t, sum_value) >= END_OF(sum_key) && offsetof(call_t, sum_value) < END_OF(sum_key) + 8 &&
                   offsetof(call_t, list_cursor) >= END_OF(cur_id) && offsetof(call_t, list_cursor) < END_OF(cur_id) + 8,
               "call_t: a field between the text buffers th_call_new leaves unzeroed");
static void call_clear(call_t *c) {
  char *p = (char *)c;
  memset(p, 0, offsetof(call_t, id));
  c->id[0] = c->head_key[0] = c->source_name[0] = '\0';
  memset(p + offsetof(call_t, pending), 0, offsetof(call_t, message) - offsetof(call_t, pending));
  c->message[0] = '\0';
  memset(p + offsetof(call_t, upd), 0, offsetof(call_t, sum_key) - offsetof(call_t, upd));
  c->sum_key[0] = '\0';
  memset(p + offsetof(call_t, sum_value), 0, offsetof(call_t, cur_id) - offsetof(call_t, sum_value));
  c->cur_id[0] = '\0';
  memset(p + offsetof(call_t, list_cursor), 0, sizeof *c - offsetof(call_t, list_cursor));
}

call_t *th_call_new(engram_manager_t *mgr, int op, const char *id, const engram_opts_t *opts, engram_cb cb, void *ud) {
  call_t *c = engram__reqpool_get(ENGRAM__POOL_THREAD_CALL, sizeof *c);
  if (c == NULL) return NULL;
  call_clear(c);
  c->mgr = mgr;
  c->op = op;
  c->cb = cb;
  c->ud = ud;
  if (id != NULL) {
    size_t n = strlen(id); /* checked: at most ENGRAM_THREAD_ID_MAX */
    if (n >= sizeof c->id) n = sizeof c->id - 1;
    memcpy(c->id, id, n);
    c->id[n] = '\0';
    th_head_key(c->head_key, sizeof c->head_key, c->id);
  }
  if (opts != NULL) {
    if ((opts->source && (c->src = engram_strdup(opts->source)) == NULL) ||
        (opts->ns && (c->ns = engram_strdup(opts->ns)) == NULL)) {
      th_call_free(c);
      return NULL;
    }
    c->o.deadline_ms = opts->deadline_ms;
    c->o.cq = opts->cq;
  }
  c->o.source = c->src;
  c->o.ns = c->ns;
  c->mc_epoch = th_mc_epoch(mgr); /* the manager is alive now; a callback may run after it is gone */
  return c;
}

/* Items for the messages in arr (an array of stored message objects); NULL with *n = 0 when empty. */
engram_item_t *th_items_of(call_t *c, const cJSON *arr, size_t *n) {
  size_t k = (size_t)cJSON_GetArraySize(arr), i = 0, plen;
  const char *gen = c->have_head ? c->head.gen : c->upd ? c->upd->gen : "";
  char prefix[TH_KEY_MAX];
  engram_item_t *items;
  const cJSON *m;
  *n = 0;
  if (k == 0) return NULL;
  /* one block: the items, then a key slot per item (freed as one by th_finish); not zeroed — every field is set */
  if ((items = engram_malloc(k * (sizeof *items + TH_KEY_MAX))) == NULL) return NULL;
  plen = th_msg_key_prefix(prefix, sizeof prefix, c->id, gen); /* the keys' shared "thread-msg:<id>:<gen>:" */
  cJSON_ArrayForEach(m, arr) {
    const cJSON *seq = NULL, *t = NULL, *meta = NULL, *f;
    char *key = (char *)(items + k) + i * TH_KEY_MAX;
    uint64_t v;
    for (f = m->child; f != NULL; f = f->next) { /* one pass over the message's members */
      if (f->string == NULL) continue;
      if (f->string[0] == 's' && strcmp(f->string, "seq") == 0) seq = f;
      else if (f->string[0] == 'c' && strcmp(f->string, "created_at_ms") == 0) t = f;
      else if (f->string[0] == 'm' && strcmp(f->string, "metadata") == 0) meta = f;
    }
    v = cJSON_IsNumber(seq) ? (uint64_t)seq->valuedouble : 0;
    if (plen != 0 && v <= TH_SEQ_DIGITS_MAX) {
      memcpy(key, prefix, plen);
      th_msg_key_seq(key + plen, v);
    } else {
      th_msg_key(key, TH_KEY_MAX, c->id, gen, v);
    }
    memset(&items[i], 0, sizeof items[i]);
    items[i].key = key;
    items[i].ns = c->ns ? c->ns : "";
    items[i].value = m;
    items[i].metadata = meta;
    items[i].created_at_ms = cJSON_IsNumber(t) ? (int64_t)t->valuedouble : 0;
    items[i].source = c->source_name;
    i++;
  }
  *n = i;
  return items;
}

/* Calls the caller back once and frees the call. info and msgs (an array inside info, or NULL) are borrowed by the
 * reply. */

void th_finish(call_t *c, int status, cJSON *info, const cJSON *msgs, uint64_t count, const char *cursor,
                   const char *text) {
  engram_item_t *items = NULL;
  size_t n = 0;
  if (status == 0 && msgs != NULL) items = th_items_of(c, msgs, &n);
  th_finish_items(c, status, info, items, n, count, cursor, text);
}

/* th_finish with the reply's items made by the caller (items: one allocation, taken and freed here). */
void th_finish_items(call_t *c, int status, cJSON *info, engram_item_t *items, size_t n, uint64_t count,
                     const char *cursor, const char *text) {
  engram_reply_t r;
  call_t *m = c->members, *next;
  c->members = NULL;
  if (c->leave != NULL) c->leave(c); /* an append: the next appends to the thread go now */
  memset(&r, 0, sizeof r);
  r.op = (engram_op_t)c->op;
  r.message = status == 0 ? "" : c->message[0] ? c->message : engram_strerror(status);
  r.source = c->source_name[0] ? c->source_name : c->src;
  r.items = items;
  r.n_items = n;
  r.count = count;
  r.cursor = cursor;
  r.info = info;
  r.text = text;
  c->cb(status, &r, c->ud);
  engram_free(items); /* and its keys */
  cJSON_Delete(info);
  for (; m != NULL; m = next) { /* a merged update that failed: every caller merged into it gets its error */
    next = m->next_member;
    memcpy(m->message, c->message, strlen(c->message) + 1); /* the same size: the text, not the bytes after it */
    th_finish(m, status ? status : ENGRAM_EBACKEND, NULL, NULL, 0, NULL, NULL);
  }
  th_call_free(c);
}

void th_fail(call_t *c, int status, const char *fmt, ...) {
  if (fmt != NULL) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->message, sizeof c->message, fmt, ap);
    va_end(ap);
  }
  th_finish(c, status, NULL, NULL, 0, NULL, NULL);
}

/* Records the first error of a sub-call (status, its message). */
void th_note(call_t *c, int status, const engram_reply_t *r) {
  if (r && r->source && !c->source_name[0]) {
    size_t n = strlen(r->source);
    if (n >= sizeof c->source_name) n = sizeof c->source_name - 1;
    memcpy(c->source_name, r->source, n);
    c->source_name[n] = '\0';
  }
  if (status != 0 && c->status == 0) {
    char clean[400];
    c->status = status;
    snprintf(c->message, sizeof c->message, "thread \"%s\": %s", c->id,
             engram__text_clean(clean, sizeof clean, r && r->message && r->message[0] ? r->message : engram_strerror(status)));
  }
}

int th_reply_ok(call_t *c, int status, const engram_reply_t *r) {
  th_note(c, status, r);
  if (status == 0) return 1;
  th_finish(c, status, NULL, NULL, 0, NULL, NULL);
  return 0;
}

int th_no_thread(call_t *c) {
  snprintf(c->message, sizeof c->message, "no thread \"%s\"%s%s", c->id, c->ns && c->ns[0] ? " in namespace " : "",
           c->ns && c->ns[0] ? c->ns : "");
  return ENGRAM_ENOTFOUND;
}

/* Reads the head from a retrieve reply (ENGRAM_OPT_INCLUDE_METADATA): 0, or an error for the caller. */
int th_take_head(call_t *c, int status, const engram_reply_t *r) {
  th_note(c, status, r);
  if (status == ENGRAM_ENOTFOUND) return th_no_thread(c);
  if (status != 0) return status;
  {
    int rc = r->n_items < 1 ? ENGRAM_EINVAL : th_head_parse(r->items[0].value, &c->head);
    if (rc == ENGRAM_ENOMEM) {
      snprintf(c->message, sizeof c->message, "thread \"%s\": out of memory reading the head", c->id);
      return ENGRAM_ENOMEM;
    }
    if (rc != 0) {
      snprintf(c->message, sizeof c->message, "thread \"%s\": the item \"%s\" is not a thread head", c->id,
               c->head_key);
      return ENGRAM_EBACKEND;
    }
  }
  c->have_head = 1;
  c->expires_at_ms = r->items[0].expires_at_ms;
  th_hint_put(th_hint_hash(c->mgr, c->src, c->ns, c->id), &c->head);
  return 0;
}

int th_retrieve_head(call_t *c, engram_cb next) {
  engram_opts_t o = c->o;
  o.flags = ENGRAM_OPT_INCLUDE_METADATA;
  return engram_retrieve(c->mgr, c->head_key, &o, next, c);
}

/* Sets c->keys to the keys of seqs (n of them). 0 or ENGRAM_ENOMEM. */
int th_make_keys(call_t *c, const uint64_t *seqs, size_t n) {
  size_t i;
  th_free_keys(c->keys, c->n_keys);
  c->n_keys = 0;
  if ((c->keys = engram_calloc(n ? n : 1, sizeof *c->keys)) == NULL) return ENGRAM_ENOMEM;
  for (i = 0; i < n; i++) {
    char key[TH_KEY_MAX];
    th_msg_key(key, sizeof key, c->id, c->head.gen, seqs[i]);
    if ((c->keys[i] = engram_strdup(key)) == NULL) {
      c->n_keys = i;
      return ENGRAM_ENOMEM;
    }
  }
  c->n_keys = n;
  return 0;
}

/* A message item of a retrieve_many reply, when it is one this thread may show. */
const cJSON *th_msg_of(const engram_reply_t *r, size_t i) {
  const cJSON *v;
  if (i >= r->n_items || r->items[i].status != 0) return NULL;
  v = r->items[i].value;
  return cJSON_IsObject(v) && cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(v, "seq")) ? v : NULL;
}

cJSON *th_base_info(call_t *c, cJSON **msgs) {
  cJSON *info = cJSON_CreateObject();
  *msgs = cJSON_CreateArray();
  if (info == NULL || *msgs == NULL || !cJSON_AddStringToObject(info, "thread", c->id) ||
      !cJSON_AddItemToObject(info, "messages", *msgs)) {
    if (info == NULL || cJSON_GetObjectItemCaseSensitive(info, "messages") != *msgs) cJSON_Delete(*msgs);
    cJSON_Delete(info);
    *msgs = NULL;
    return NULL;
  }
  if (!cJSON_AddNumberToObject(info, "first_seq", (double)c->head.first) ||
      !cJSON_AddNumberToObject(info, "last_seq", (double)c->head.last)) {
    cJSON_Delete(info);
    *msgs = NULL;
    return NULL;
  }
  return info;
}

/* Submits a read's first step, the head's retrieve; frees the call when it is refused (the caller gets rc). */
int th_read_submit(call_t *c, engram_cb next) {
  int rc = th_retrieve_head(c, next);
  if (rc != 0) th_call_free(c);
  return rc;
}
