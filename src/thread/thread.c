/*
 * thread.c — conversation threads (include/engram/thread.h) as a layer on the public data operations, so they
 * work on every source (docs/conversations.md).
 *
 * Layout, in the caller's namespace: a head item "thread:<id>" (thread_head.h) and one item per message
 * "thread-msg:<id>:<gen>:<seq, 16 digits>". Every change of a thread is one engram_update of its head (atomic per
 * key on every source: a native update, or the core's read → function → conditional store with retries), which
 * allocates sequence numbers and moves the visible range [first, last] in one step; the message items are
 * written (and trimmed ones removed) after it, in parallel. Readers trust only the head: a number whose message
 * has not arrived (yet, or ever) is a gap they skip, and a trimmed message is invisible the moment the head says
 * so, whenever its item is removed.
 *
 * Each call is a small state machine (call_t) driven by the callbacks of its own sub-calls. They all carry the
 * caller's source, namespace, deadline and completion queue, so every step — and the caller's one callback — runs
 * on the thread that answers the sub-calls (the home loop, or the queue's poller). Parallel steps count down
 * c->pending; the call ends in finish() exactly once.
 *
 * A window also reads the thread's summary item (thread_summary.h) in its first retrieve_many: the summary heads
 * the window (info.summary, and one system message in the rendering) and, when the window names a summariser
 * and leaves out messages the summary does not cover, a summary job starts as the window answers.
 */
#include <inttypes.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engram/source.h"
#include "engram/thread.h"
#include "shared/error.h"
#include "manager/bulk.h"
#include "manager/manager.h"
#include "request/reqpool.h"
#include "shared/json_text.h"
#include "thread/thread_head.h"
#include "thread/thread_hint.h"
#include "thread/thread_queue.h"
#include "thread/thread_summary.h"

#define UPDATE_ROUNDS 8     /* engram_update calls per change when each ends in ENGRAM_ECONFLICT */
#define DELETE_CHUNK 10000  /* keys per delete_many when trimming */
#define LIST_PAGE 1000      /* list_keys page */
#define WINDOW_PAGE 64      /* first page of a token window */
#define WINDOW_PAGE_MAX 4096

enum { M_APPEND = 1, M_SET, M_DELMSG };

/* What the head's update function reads and writes, and the writes that ride on the update (the messages an
 * append stores, the messages a trim or a delete removes: engram_update_writes_t). Kept apart from the call and
 * counted: when the update is answered early (deadline, cancellation) the source may still run the function
 * later, so the block lives until both the call and every update request that named it are gone (the core
 * releases a request's reference when it frees the request). */
typedef struct {
  atomic_int refs;
  int mode;
  char id[ENGRAM_THREAD_ID_MAX + 1];
  size_t n;                       /* M_APPEND: messages */
  unsigned char *is_system;       /* per message */
  engram_thread_settings_t settings;
  cJSON *set_meta;                /* replacement metadata or NULL */
  uint64_t *del;                  /* M_DELMSG: requested numbers (a copy) */
  size_t n_del;
  /* results of the last run */
  int64_t now;
  uint64_t seq0, old_first, new_first;
  char gen[TH_GEN_MAX + 1];
  int64_t ttl_ms;
  uint64_t *deleted;              /* M_DELMSG: numbers that were visible */
  size_t n_deleted;
  int refresh;                    /* with a TTL: store the visible messages [refresh_from, refresh_to] again */
  uint64_t refresh_from, refresh_to;
  /* the writes, remade on each run of the function */
  cJSON **msgs;                   /* M_APPEND: the prepared messages (seq and created_at_ms set per run) */
  cJSON **meta;                   /* M_APPEND: their item metadata */
  cJSON **nodes;                  /* M_APPEND: per message, its "seq", its "created_at_ms", its metadata's "seq" */
  char (*keys)[TH_KEY_MAX];       /* M_APPEND: their keys */
  engram_entry_t *entries;
  int64_t *expires;
  uint64_t *versions;
  char **dkeys;                   /* trimmed or deleted messages' keys */
  size_t n_dkeys;
  int trim_carried;               /* the trim's deletes are in the writes (else made apart: over DELETE_CHUNK) */
  uint64_t count;                 /* visible messages after the run */
  th_head_t head;                 /* the head the last run wrote (metadata not kept): the hint after success */
  engram_update_writes_t w;
  /* M_APPEND: the appends merged into this update (thread_queue.h; 1 when alone), part p being messages
   * [part_off[p], part_off[p + 1]); per part, as after that part alone: visible messages and how many it trimmed */
  size_t n_parts;
  uint64_t *part_off, *part_count, *part_trimmed;
  void *block;                    /* M_APPEND: one allocation holding the per-message and per-part arrays above */
} upd_t;

typedef struct call_s call_t;
struct call_s {
  engram_manager_t *mgr;
  int op;
  engram_cb cb;
  void *ud;
  engram_opts_t o; /* sub-calls: source, ns, deadline_ms, cq */
  char *src, *ns;
  char id[ENGRAM_THREAD_ID_MAX + 1];
  char head_key[sizeof TH_HEAD_PREFIX + ENGRAM_THREAD_ID_MAX];
  char source_name[ENGRAM_SOURCE_NAME_MAX + 1];
  int pending, status, rounds;
  char message[512];
  /* changes (append, set, delete_messages) */
  upd_t *upd;
  size_t n;
  cJSON *head_value;
  uint64_t head_version;
  th_head_t head;
  int have_head;
  int64_t expires_at_ms;
  uint64_t count;
  /* reads */
  engram_window_t win;
  uint64_t from_seq, seq;
  int limit;
  cJSON *sysmsgs, *taken, *open;
  uint64_t walk;    /* next number to look at, walking down (0 = done) */
  size_t page, valid, valid_cnt, cnt, sys_cnt, n_taken;
  uint64_t tok, valid_tok, sys_tok;
  int stopped, over;
  char **keys;      /* keys of the batch in flight */
  size_t n_keys;
  /* window: the summary item */
  char sum_key[TH_KEY_MAX + 16];
  cJSON *sum_value; /* the item's value (a copy), when it parsed */
  th_summary_t sum; /* borrowing from sum_value */
  cJSON *sum_msg;   /* the system message that carries it */
  uint64_t sum_tok;
  uint64_t sum_listed; /* delete: summary items in the batch being deleted */
  /* list */
  char *cursor_in;
  int64_t cur_updated;
  char cur_id[ENGRAM_THREAD_ID_MAX + 1];
  char *list_cursor;
  cJSON *threads;
  char **all_keys;
  size_t n_all, cap_all, heads_done;
  /* appends to one thread in flight together (thread_queue.h) */
  tq_node_t qnode;           /* in the lane's waiting list (call_of: the call around a node) */
  int queued;                /* this call is its lane's busy item: its end lets the waiting ones go */
  uint32_t asked_deadline;   /* the caller's opts.deadline_ms (o.deadline_ms is what remains once merged) */
  int64_t submitted_ms;      /* when the caller made the call: its deadline runs from then */
  size_t part;               /* its part of the (merged) update */
  call_t *members;           /* a merged update's first call: the others merged into it, in arrival order */
  call_t *next_member;
};

/* ---------------------------------------------------------------------------------------------------- */
/* Validation                                                                                            */
/* ---------------------------------------------------------------------------------------------------- */

static int check_id(const char *id) { return th_check_id(id); }

static int check_tree(const cJSON *v, const char *root) {
  engram__json_issue_t is;
  char msg[300];
  int rc = engram__json_tree_check(v, root, &is);
  if (rc == ENGRAM_ENOMEM) return engram__error(rc, "out of memory");
  if (rc != 0) return engram__error(rc, "%s", engram__json_issue_message(&is, root, msg, sizeof msg));
  return 0;
}

static int check_text(const char *s, const char *what) {
  if (!engram_utf8_valid(s, strlen(s))) return engram__error(ENGRAM_EINVAL, "%s: invalid UTF-8", what);
  return 0;
}

static int check_settings(const engram_thread_settings_t *s) {
  if (s == NULL) return 0;
  if (s->flags & ~(unsigned)(ENGRAM_THREAD_MAX_MESSAGES | ENGRAM_THREAD_TTL | ENGRAM_THREAD_NO_MAX | ENGRAM_THREAD_NO_TTL))
    return engram__error(ENGRAM_EINVAL, "settings.flags: unknown bits 0x%x", s->flags);
  if ((s->flags & ENGRAM_THREAD_MAX_MESSAGES) && (s->flags & ENGRAM_THREAD_NO_MAX))
    return engram__error(ENGRAM_EINVAL, "settings.flags: ENGRAM_THREAD_MAX_MESSAGES with ENGRAM_THREAD_NO_MAX");
  if ((s->flags & ENGRAM_THREAD_TTL) && (s->flags & ENGRAM_THREAD_NO_TTL))
    return engram__error(ENGRAM_EINVAL, "settings.flags: ENGRAM_THREAD_TTL with ENGRAM_THREAD_NO_TTL");
  if ((s->flags & ENGRAM_THREAD_MAX_MESSAGES) && (s->max_messages < 1 || s->max_messages > (int64_t)1 << 53))
    return engram__error(ENGRAM_EINVAL, "settings.max_messages: %" PRId64 ", must be 1..2^53", s->max_messages);
  if ((s->flags & ENGRAM_THREAD_TTL) && (s->ttl_ms < 1 || s->ttl_ms > (int64_t)1 << 53))
    return engram__error(ENGRAM_EINVAL, "settings.ttl_ms: %" PRId64 ", must be 1..2^53 ms", s->ttl_ms);
  return 0;
}

static int check_message(const engram_message_t *m, size_t i) {
  char f[64];
  char q[80];
  int rc, is_tool, is_asst;
  if (m->role == NULL) return engram__error(ENGRAM_EINVAL, "messages[%zu].role: NULL", i);
  if (strcmp(m->role, "system") != 0 && strcmp(m->role, "user") != 0 && strcmp(m->role, "assistant") != 0 &&
      strcmp(m->role, "tool") != 0)
    return engram__error(ENGRAM_EINVAL, "messages[%zu].role: unknown role \"%s\" (system, user, assistant or tool)", i,
                         engram__quote(q, sizeof q, m->role));
  is_tool = strcmp(m->role, "tool") == 0;
  is_asst = strcmp(m->role, "assistant") == 0;
  if (m->content != NULL && m->content_parts != NULL)
    return engram__error(ENGRAM_EINVAL, "messages[%zu].content: both content and content_parts are set", i);
  if (m->content != NULL) { /* the field's name is formatted for an error only (snprintf was 2 % of an append) */
    if (m->content[0] == '\0') return engram__error(ENGRAM_EINVAL, "messages[%zu].content: empty", i);
    if (!engram_utf8_valid(m->content, strlen(m->content)))
      return engram__error(ENGRAM_EINVAL, "messages[%zu].content: invalid UTF-8", i);
  }
  if (m->content_parts != NULL) {
    snprintf(f, sizeof f, "messages[%zu].content_parts", i);
    if (cJSON_IsNull(m->content_parts) || cJSON_IsInvalid(m->content_parts) ||
        (cJSON_IsArray(m->content_parts) && cJSON_GetArraySize(m->content_parts) == 0) ||
        (cJSON_IsString(m->content_parts) && m->content_parts->valuestring && m->content_parts->valuestring[0] == '\0'))
      return engram__error(ENGRAM_EINVAL, "%s: empty", f);
    if ((rc = check_tree(m->content_parts, f)) != 0) return rc;
  }
  if (m->tool_calls != NULL) {
    const cJSON *call;
    int k = 0;
    snprintf(f, sizeof f, "messages[%zu].tool_calls", i);
    if (!is_asst) return engram__error(ENGRAM_EINVAL, "%s: only an assistant message has tool calls", f);
    if (!cJSON_IsArray(m->tool_calls) || cJSON_GetArraySize(m->tool_calls) == 0)
      return engram__error(ENGRAM_EINVAL, "%s: must be a non-empty array", f);
    if ((rc = check_tree(m->tool_calls, f)) != 0) return rc;
    cJSON_ArrayForEach(call, m->tool_calls) {
      const cJSON *id = cJSON_GetObjectItemCaseSensitive(call, "id");
      if (!cJSON_IsObject(call) || !cJSON_IsString(id) || id->valuestring[0] == '\0')
        return engram__error(ENGRAM_EINVAL, "%s[%d].id: missing (each call needs a non-empty string id)", f, k);
      k++;
    }
  }
  if (m->content == NULL && m->content_parts == NULL && !(is_asst && m->tool_calls != NULL))
    return engram__error(ENGRAM_EINVAL, "messages[%zu].content: empty (only an assistant message with tool_calls may "
                                        "have no content)", i);
  if (is_tool) {
    snprintf(f, sizeof f, "messages[%zu].tool_call_id", i);
    if (m->tool_call_id == NULL || m->tool_call_id[0] == '\0')
      return engram__error(ENGRAM_EINVAL, "%s: missing (a tool message answers a tool call)", f);
    if ((rc = check_text(m->tool_call_id, f)) != 0) return rc;
  } else if (m->tool_call_id != NULL) {
    return engram__error(ENGRAM_EINVAL, "messages[%zu].tool_call_id: only a tool message has one", i);
  }
  if (m->metadata != NULL) {
    snprintf(f, sizeof f, "messages[%zu].metadata", i);
    if (!cJSON_IsObject(m->metadata)) return engram__error(ENGRAM_EINVAL, "%s: must be a JSON object", f);
    if ((rc = check_tree(m->metadata, f)) != 0) return rc;
  }
  return 0;
}

/* Adds v to o under name, a string literal (cJSON's CS form: the name is neither copied nor freed — one
 * allocation less per member of every message, metadata and reply an append builds). Takes v; returns v, or NULL
 * (v freed) when v is NULL or cannot be added. */
static cJSON *add_cs(cJSON *o, const char *name, cJSON *v) {
  if (v != NULL && cJSON_AddItemToObjectCS(o, name, v)) return v;
  cJSON_Delete(v);
  return NULL;
}

/* The four roles as string literals: a message's "role" and its item metadata's "role" refer to them (cJSON's
 * string references: neither copied nor freed). role was checked to be one of them. */
static const char ROLE_SYSTEM[] = "system", ROLE_USER[] = "user", ROLE_ASSISTANT[] = "assistant", ROLE_TOOL[] = "tool";
static const char *role_literal(const char *role) {
  return strcmp(role, ROLE_SYSTEM) == 0 ? ROLE_SYSTEM : strcmp(role, ROLE_USER) == 0 ? ROLE_USER
         : strcmp(role, ROLE_ASSISTANT) == 0                                       ? ROLE_ASSISTANT
                                                                                   : ROLE_TOOL;
}

/* The stored form: {"seq": 0, "role", "content", "tool_calls"?, "tool_call_id"?, "metadata"?, "created_at_ms": 0};
 * seq and created_at_ms are set once the head gave them. */
static cJSON *prepare_message(const engram_message_t *m, const char *role) {
  cJSON *o = cJSON_CreateObject();
  if (o == NULL) return NULL;
  if (!add_cs(o, "seq", cJSON_CreateNumber(0)) || !add_cs(o, "role", cJSON_CreateStringReference(role)) ||
      !add_cs(o, "content", m->content         ? cJSON_CreateString(m->content)
                            : m->content_parts ? cJSON_Duplicate(m->content_parts, 1)
                                               : cJSON_CreateNull()) ||
      (m->tool_calls && !add_cs(o, "tool_calls", cJSON_Duplicate(m->tool_calls, 1))) ||
      (m->tool_call_id && !add_cs(o, "tool_call_id", cJSON_CreateString(m->tool_call_id))) ||
      (m->metadata && !add_cs(o, "metadata", cJSON_Duplicate(m->metadata, 1))) ||
      !add_cs(o, "created_at_ms", cJSON_CreateNumber(0))) {
    cJSON_Delete(o);
    return NULL;
  }
  return o;
}

/* ---------------------------------------------------------------------------------------------------- */
/* Calls: creation, the end, helpers                                                                      */
/* ---------------------------------------------------------------------------------------------------- */

static void free_keys(char **keys, size_t n) {
  size_t i;
  if (keys == NULL) return;
  for (i = 0; i < n; i++) engram_free(keys[i]);
  engram_free(keys);
}

static void upd_free(upd_t *u) {
  size_t i;
  cJSON_Delete(u->set_meta);
  engram_free(u->deleted);
  engram_free(u->del);
  for (i = 0; u->msgs && i < u->n; i++) cJSON_Delete(u->msgs[i]);
  for (i = 0; u->meta && i < u->n; i++) cJSON_Delete(u->meta[i]);
  engram_free(u->block); /* msgs, meta, nodes, keys, entries, expires, versions, is_system */
  free_keys(u->dkeys, u->n_dkeys);
  th_head_free(&u->head);
  engram_free(u);
}

/* Drops one reference: the call's, or (through the core's release hook) an update request's. Any thread. */
static void upd_unref(void *ud) {
  upd_t *u = ud;
  if (u != NULL && atomic_fetch_sub_explicit(&u->refs, 1, memory_order_acq_rel) == 1) upd_free(u);
}

static void call_free(call_t *c) {
  if (c == NULL) return;
  upd_unref(c->upd);
  cJSON_Delete(c->head_value);
  th_head_free(&c->head);
  cJSON_Delete(c->sysmsgs);
  cJSON_Delete(c->taken);
  cJSON_Delete(c->open);
  cJSON_Delete(c->sum_value);
  cJSON_Delete(c->sum_msg);
  free_keys(c->keys, c->n_keys);
  free_keys(c->all_keys, c->n_all);
  engram_free(c->cursor_in);
  engram_free(c->list_cursor);
  cJSON_Delete(c->threads);
  engram_free(c->src);
  engram_free(c->ns);
  engram__reqpool_put(ENGRAM__POOL_THREAD_CALL, c); /* ~2 KiB: kept for the next call (request/reqpool.c) */
}

static call_t *call_new(engram_manager_t *mgr, int op, const char *id, const engram_opts_t *opts, engram_cb cb, void *ud) {
  call_t *c = engram__reqpool_get(ENGRAM__POOL_THREAD_CALL, sizeof *c);
  if (c == NULL) return NULL;
  memset(c, 0, sizeof *c);
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
      call_free(c);
      return NULL;
    }
    c->o.deadline_ms = opts->deadline_ms;
    c->o.cq = opts->cq;
  }
  c->o.source = c->src;
  c->o.ns = c->ns;
  return c;
}

/* Items for the messages in arr (an array of stored message objects); NULL with *n = 0 when empty. */
static engram_item_t *items_of(call_t *c, const cJSON *arr, size_t *n) {
  size_t k = (size_t)cJSON_GetArraySize(arr), i = 0;
  engram_item_t *items;
  const cJSON *m;
  *n = 0;
  if (k == 0) return NULL;
  /* one block: the items, then a key slot per item (freed as one by finish) */
  if ((items = engram_calloc(1, k * (sizeof *items + TH_KEY_MAX))) == NULL) return NULL;
  cJSON_ArrayForEach(m, arr) {
    const cJSON *seq = cJSON_GetObjectItemCaseSensitive(m, "seq"), *t = cJSON_GetObjectItemCaseSensitive(m, "created_at_ms");
    char *key = (char *)(items + k) + i * TH_KEY_MAX;
    th_msg_key(key, TH_KEY_MAX, c->id, c->have_head ? c->head.gen : c->upd ? c->upd->gen : "",
               cJSON_IsNumber(seq) ? (uint64_t)seq->valuedouble : 0);
    items[i].key = key;
    items[i].ns = c->ns ? c->ns : "";
    items[i].value = m;
    items[i].metadata = cJSON_GetObjectItemCaseSensitive(m, "metadata");
    items[i].created_at_ms = cJSON_IsNumber(t) ? (int64_t)t->valuedouble : 0;
    items[i].source = c->source_name;
    i++;
  }
  *n = i;
  return items;
}

/* Calls the caller back once and frees the call. info and msgs (an array inside info, or NULL) are borrowed by the
 * reply. */
static void lane_leave(call_t *c);

static void finish(call_t *c, int status, cJSON *info, const cJSON *msgs, uint64_t count, const char *cursor,
                   const char *text) {
  engram_reply_t r;
  engram_item_t *items = NULL;
  call_t *m = c->members, *next;
  size_t n = 0;
  c->members = NULL;
  if (c->queued) lane_leave(c); /* an append: the next appends to the thread go now */
  memset(&r, 0, sizeof r);
  if (status == 0 && msgs != NULL) items = items_of(c, msgs, &n);
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
    memcpy(m->message, c->message, sizeof m->message);
    finish(m, status ? status : ENGRAM_EBACKEND, NULL, NULL, 0, NULL, NULL);
  }
  call_free(c);
}

static void fail(call_t *c, int status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static void fail(call_t *c, int status, const char *fmt, ...) {
  if (fmt != NULL) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->message, sizeof c->message, fmt, ap);
    va_end(ap);
  }
  finish(c, status, NULL, NULL, 0, NULL, NULL);
}

/* Records the first error of a sub-call (status, its message). */
static void note(call_t *c, int status, const engram_reply_t *r) {
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

static int no_thread(call_t *c) {
  snprintf(c->message, sizeof c->message, "no thread \"%s\"%s%s", c->id, c->ns && c->ns[0] ? " in namespace " : "",
           c->ns && c->ns[0] ? c->ns : "");
  return ENGRAM_ENOTFOUND;
}

/* Reads the head from a retrieve reply (ENGRAM_OPT_INCLUDE_METADATA): 0, or an error for the caller. */
static int take_head(call_t *c, int status, const engram_reply_t *r) {
  note(c, status, r);
  if (status == ENGRAM_ENOTFOUND) return no_thread(c);
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

static int retrieve_head(call_t *c, engram_cb next) {
  engram_opts_t o = c->o;
  o.flags = ENGRAM_OPT_INCLUDE_METADATA;
  return engram_retrieve(c->mgr, c->head_key, &o, next, c);
}

/* ---------------------------------------------------------------------------------------------------- */
/* Changes: append, set, delete messages                                                                  */
/* ---------------------------------------------------------------------------------------------------- */

/* The writes that ride on the head's update (engram_update_writes_t), from the run's results: the appended
 * messages (numbered from seq0, stamped now, expiring 2 × ttl after the write when the thread has a TTL), and
 * the deletes of what the run trimmed (up to DELETE_CHUNK; a longer trim is deleted apart, after the update) and
 * of the messages M_DELMSG removed. The source makes them in the update's atomic step when it can (SQLite, the
 * cache), else the core makes them right after it; either way before the update is answered. */
static int make_writes(upd_t *u) {
  size_t i, nd = 0, trim = (size_t)(u->new_first - u->old_first);
  free_keys(u->dkeys, u->n_dkeys);
  u->dkeys = NULL;
  u->n_dkeys = 0;
  memset(&u->w, 0, sizeof u->w);
  for (i = 0; i < u->n && u->mode == M_APPEND; i++) {
    uint64_t seq = u->seq0 + i;
    cJSON_SetNumberValue(u->nodes[3 * i], (double)seq);
    cJSON_SetNumberValue(u->nodes[3 * i + 1], (double)u->now);
    cJSON_SetNumberValue(u->nodes[3 * i + 2], (double)seq);
    th_msg_key(u->keys[i], TH_KEY_MAX, u->id, u->gen, seq);
    u->entries[i].key = u->keys[i];
    u->entries[i].value = u->msgs[i];
    u->entries[i].metadata = u->meta[i];
    u->expires[i] = u->ttl_ms > 0 ? u->now + 2 * u->ttl_ms : 0;
  }
  if (u->mode == M_APPEND) {
    u->w.n_store = u->n;
    u->w.store = u->entries;
    u->w.store_expires_at_ms = u->expires;
    u->w.store_version = u->versions;
  }
  u->trim_carried = trim <= DELETE_CHUNK;
  nd = (u->trim_carried ? trim : 0) + (u->mode == M_DELMSG ? u->n_deleted : 0);
  if (nd == 0) return 0;
  if ((u->dkeys = engram_calloc(nd, sizeof *u->dkeys)) == NULL) return ENGRAM_ENOMEM;
  for (i = 0; i < nd; i++) {
    char key[TH_KEY_MAX];
    uint64_t seq = u->trim_carried && i < trim ? u->old_first + i : u->deleted[i - (u->trim_carried ? trim : 0)];
    th_msg_key(key, sizeof key, u->id, u->gen, seq);
    if ((u->dkeys[i] = engram_strdup(key)) == NULL) return ENGRAM_ENOMEM;
    u->n_dkeys = i + 1;
  }
  u->w.n_delete = nd;
  u->w.delete_keys = (const char *const *)u->dkeys;
  return 0;
}

/* The head's update function (runs on the source's actor thread, maybe more than once). */
static int head_update(const cJSON *current, cJSON **next, void *ud) {
  upd_t *u = ud;
  th_head_t h;
  size_t i;
  int rc = 0;
  int64_t now = engram_now_ms();
  engram_free(u->deleted);
  u->deleted = NULL;
  u->n_deleted = 0;
  if (current != NULL && (rc = th_head_parse(current, &h)) == ENGRAM_ENOMEM) return ENGRAM_ENOMEM;
  if (current == NULL || rc != 0) {
    if (u->mode == M_DELMSG) return ENGRAM_ENOTFOUND;
    th_head_init(&h, u->id, now);
  }
  h.updated_at_ms = now;
  if (u->settings.flags & ENGRAM_THREAD_NO_MAX) h.max_messages = 0;
  if (u->settings.flags & ENGRAM_THREAD_MAX_MESSAGES) h.max_messages = u->settings.max_messages;
  if (u->settings.flags & ENGRAM_THREAD_NO_TTL) h.ttl_ms = 0;
  if (u->settings.flags & ENGRAM_THREAD_TTL) h.ttl_ms = u->settings.ttl_ms;
  if (u->set_meta != NULL) h.metadata = u->set_meta;
  u->seq0 = h.last + 1;
  u->refresh = 0;
  if (h.ttl_ms > 0 && now - h.refreshed_at_ms >= h.ttl_ms) {
    /* Messages are stored to expire 2 × ttl after their write; once a ttl has passed since every visible one was
     * last written, this change writes them again, so none expires before the head does. */
    u->refresh = h.last >= h.first;
    u->refresh_to = h.last;
    h.refreshed_at_ms = now;
  }
  u->old_first = h.first;
  if (u->mode == M_APPEND) {
    size_t p;
    /* part by part, each trimmed as it would be alone (trimming after each part and once at the end keep the same
     * newest N), so that each merged caller's count and trimmed are what its own append would have answered */
    for (p = 0; p < u->n_parts; p++) {
      uint64_t f = h.first, base = h.last + 1 - u->part_off[p];
      for (i = (size_t)u->part_off[p]; i < u->part_off[p + 1]; i++)
        if (u->is_system[i] && th_head_add_system(&h, base + i) != 0) goto nomem;
      h.last += u->part_off[p + 1] - u->part_off[p];
      th_head_trim(&h);
      u->part_trimmed[p] = h.first - f;
      u->part_count[p] = th_head_count(&h);
    }
  }
  if (u->mode == M_DELMSG) {
    if ((u->deleted = engram_malloc((u->n_del ? u->n_del : 1) * sizeof *u->deleted)) == NULL) goto nomem;
    for (i = 0; i < u->n_del; i++)
      if (th_head_visible(&h, u->del[i])) {
        if (th_head_delete(&h, u->del[i]) != 0) goto nomem;
        u->deleted[u->n_deleted++] = u->del[i];
      }
  }
  if (u->mode != M_APPEND) u->old_first = th_head_trim(&h);
  u->new_first = h.first;
  u->count = th_head_count(&h);
  u->refresh_from = h.first;
  if (u->refresh && u->refresh_to < h.first) u->refresh = 0;
  u->now = now;
  u->ttl_ms = h.ttl_ms;
  memcpy(u->gen, h.gen, sizeof u->gen);
  if (make_writes(u) != 0) goto nomem;
  *next = th_head_value(&h);
  th_head_free(&u->head); /* the previous run's */
  u->head = h;            /* kept for the hint (thread_hint.h) when this run's write is the one that counts */
  u->head.metadata = NULL;
  return *next ? 0 : ENGRAM_ENOMEM;
nomem:
  th_head_free(&h);
  return ENGRAM_ENOMEM;
}

static void change_start(call_t *c);
static int make_keys(call_t *c, const uint64_t *seqs, size_t n);
static const cJSON *msg_of(const engram_reply_t *r, size_t i);

/* An append's reply from its part of the update (the update is over: nothing runs its function again, so its
 * messages move into the reply): its messages with their numbers, first/last seq, the visible count and the trim
 * as after its part. Finishes c. */
static void append_reply(call_t *c) {
  upd_t *u = c->upd;
  size_t i, off = (size_t)u->part_off[c->part], end = (size_t)u->part_off[c->part + 1];
  cJSON *msgs = cJSON_CreateArray(), *info = cJSON_CreateObject();
  if (info == NULL || msgs == NULL || !cJSON_AddItemToObjectCS(info, "messages", msgs)) {
    cJSON_Delete(msgs);
    cJSON_Delete(info);
    fail(c, ENGRAM_ENOMEM, "out of memory");
    return;
  }
  for (i = off; i < end; i++) {
    cJSON_AddItemToArray(msgs, u->msgs[i]);
    u->msgs[i] = NULL;
  }
  if (!add_cs(info, "thread", cJSON_CreateString(c->id)) ||
      !add_cs(info, "first_seq", cJSON_CreateNumber((double)(u->seq0 + off))) ||
      !add_cs(info, "last_seq", cJSON_CreateNumber((double)(u->seq0 + end - 1))) ||
      !add_cs(info, "count", cJSON_CreateNumber((double)u->part_count[c->part])) ||
      !add_cs(info, "trimmed", cJSON_CreateNumber((double)u->part_trimmed[c->part])) ||
      !add_cs(info, "created_at_ms", cJSON_CreateNumber((double)u->now))) {
    cJSON_Delete(info);
    fail(c, ENGRAM_ENOMEM, "out of memory");
    return;
  }
  /* the items name the generation the head gave */
  finish(c, 0, info, msgs, end - off, NULL, NULL);
}

static void change_part_done(call_t *c) {
  cJSON *info;
  if (--c->pending > 0) return;
  if (c->status != 0) {
    finish(c, c->status, NULL, NULL, 0, NULL, NULL);
    return;
  }
  /* the update is over (nothing runs its function again): what it wrote is the thread's head now */
  if (c->upd != NULL && c->upd->head.gen[0]) th_hint_put(th_hint_hash(c->mgr, c->src, c->ns, c->id), &c->upd->head);
  if (c->op == ENGRAM_OP_THREAD_APPEND) {
    call_t *m = c->members, *next;
    c->members = NULL;
    if (c->queued) lane_leave(c); /* the next appends to the thread go now */
    for (; m != NULL; m = next) { /* merged callers: each its own reply, in arrival order after the first */
      next = m->next_member;
      append_reply(m);
    }
    append_reply(c);
    return;
  }
  info = th_head_info(&c->head, c->expires_at_ms);
  if (info == NULL) {
    fail(c, ENGRAM_ENOMEM, "out of memory");
    return;
  }
  finish(c, 0, info, NULL, c->op == ENGRAM_OP_THREAD_DELETE_MESSAGES ? (uint64_t)c->upd->n_deleted : c->count, NULL,
         NULL);
}

static void on_part(int status, const engram_reply_t *r, void *ud) {
  call_t *c = ud;
  size_t i;
  note(c, status, r);
  if (status == 0 && r->op == ENGRAM_OP_STORE_MANY)
    for (i = 0; i < r->n_items; i++)
      if (r->items[i].status != 0) {
        engram_reply_t one = *r;
        one.message = r->message && r->message[0] ? r->message : engram_strerror(r->items[i].status);
        note(c, r->items[i].status, &one);
        break;
      }
  change_part_done(c);
}

/* The TTL the head's update carries itself: the one this call's settings name, else none (0). */
static int64_t update_ttl(const upd_t *u) {
  return (u->settings.flags & ENGRAM_THREAD_TTL) ? u->settings.ttl_ms : 0;
}

/* The change's one engram_update of the head. When the call names the thread's TTL, the update carries it
 * (ENGRAM_OPT_TTL: the head expires ttl_ms after this change), which saves the store that otherwise slides it. */
static void on_head_updated(int status, const engram_reply_t *r, void *ud);
static int update_head(call_t *c) {
  engram_opts_t o = c->o;
  if (update_ttl(c->upd) > 0) {
    o.flags |= ENGRAM_OPT_TTL;
    o.ttl_ms = update_ttl(c->upd);
  }
  int rc;
  atomic_fetch_add_explicit(&c->upd->refs, 1, memory_order_relaxed); /* the request's, released by the core */
  rc = engram__update_with_writes(c->mgr, c->head_key, head_update, c->upd, &c->upd->w, upd_unref, &o,
                                  on_head_updated, c);
  if (rc != 0) atomic_fetch_sub_explicit(&c->upd->refs, 1, memory_order_relaxed); /* refused: never released */
  return rc;
}

/* The head's sliding TTL: a store of the value the update wrote, conditional on its version, with the TTL (an
 * update keeps the item's expiry). A conflict means a later change wrote the head, and that one slides it. */
static void on_touched(int status, const engram_reply_t *r, void *ud) {
  call_t *c = ud;
  if (status == ENGRAM_ECONFLICT || status == ENGRAM_ENOTFOUND) status = 0;
  else if (status == 0 && r->n_items > 0) c->expires_at_ms = r->items[0].expires_at_ms;
  note(c, status, r);
  change_part_done(c);
}

/* Starts a sub-call of the parallel phase; a refusal counts as its answer. */
static void part(call_t *c, int rc) {
  if (rc == 0) return;
  if (c->status == 0) {
    c->status = rc;
    snprintf(c->message, sizeof c->message, "thread \"%s\": %s", c->id, engram_last_error());
  }
  c->pending--;
}

static void delete_range(call_t *c, uint64_t from, uint64_t to_excl) {
  while (from < to_excl) {
    size_t n = (size_t)(to_excl - from < DELETE_CHUNK ? to_excl - from : DELETE_CHUNK), i;
    char **keys = engram_calloc(n, sizeof *keys);
    int rc = keys ? 0 : ENGRAM_ENOMEM;
    for (i = 0; rc == 0 && i < n; i++) {
      char key[TH_KEY_MAX];
      th_msg_key(key, sizeof key, c->id, c->upd->gen, from + i);
      if ((keys[i] = engram_strdup(key)) == NULL) rc = ENGRAM_ENOMEM;
    }
    c->pending++;
    if (rc == 0) rc = engram_delete_many(c->mgr, (const char *const *)keys, n, &c->o, on_part, c);
    if (rc == ENGRAM_ENOMEM) engram__error(rc, "out of memory");
    part(c, rc);
    free_keys(keys, n);
    from += n;
  }
}

/* The refresh: the visible messages read back (one retrieve_many), then stored again with 2 × ttl. A message that
 * was deleted or trimmed meanwhile may come back as an item, but readers trust the head, which no longer shows
 * it, and the item expires by itself. */
static void on_refreshed_read(int status, const engram_reply_t *r, void *ud) {
  call_t *c = ud;
  engram_entry_t *e = NULL;
  cJSON **meta = NULL;
  size_t i, n = 0;
  int rc = 0;
  note(c, status, r);
  if (status != 0 || r->n_items == 0) {
    change_part_done(c);
    return;
  }
  e = engram_calloc(r->n_items, sizeof *e);
  meta = engram_calloc(r->n_items, sizeof *meta);
  if (e == NULL || meta == NULL) rc = ENGRAM_ENOMEM;
  for (i = 0; rc == 0 && i < r->n_items; i++) {
    const cJSON *m = msg_of(r, i);
    if (m == NULL) continue;
    if ((meta[n] = cJSON_CreateObject()) == NULL || !cJSON_AddStringToObject(meta[n], "thread", c->id) ||
        !cJSON_AddNumberToObject(meta[n], "seq", cJSON_GetObjectItemCaseSensitive(m, "seq")->valuedouble) ||
        !cJSON_AddStringToObject(meta[n], "role", cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(m, "role"))
                                                      ? cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(m, "role"))
                                                      : "")) {
      rc = ENGRAM_ENOMEM;
      n++;
      break;
    }
    e[n].key = r->items[i].key;
    e[n].value = m;
    e[n].metadata = meta[n];
    e[n].has_ttl = 1;
    e[n].ttl_ms = 2 * c->upd->ttl_ms;
    n++;
  }
  if (rc == 0 && n > 0) {
    c->pending++;
    part(c, engram_store_many(c->mgr, e, n, &c->o, on_part, c));
  } else if (rc != 0) {
    engram_reply_t one;
    memset(&one, 0, sizeof one);
    one.message = "out of memory refreshing the messages' expiry";
    note(c, rc, &one);
  }
  for (i = 0; meta && i < n; i++) cJSON_Delete(meta[i]);
  engram_free(meta);
  engram_free(e);
  change_part_done(c);
}

static void refresh_messages(call_t *c) {
  upd_t *u = c->upd;
  uint64_t s, *seqs;
  size_t n = 0, cap = (size_t)(u->refresh_to - u->refresh_from + 1);
  int rc;
  if (cap > ENGRAM_THREAD_PAGE_MAX * 10) cap = ENGRAM_THREAD_PAGE_MAX * 10; /* the newest 100,000 at most */
  c->pending++;
  if ((seqs = engram_malloc(cap * sizeof *seqs)) == NULL) {
    part(c, engram__error(ENGRAM_ENOMEM, "out of memory"));
    return;
  }
  for (s = u->refresh_to; s >= u->refresh_from && s > 0 && n < cap; s--)
    if (th_head_visible(&c->head, s)) seqs[n++] = s;
  rc = make_keys(c, seqs, n);
  engram_free(seqs);
  if (rc == 0 && n == 0) {
    c->pending--;
    return;
  }
  if (rc == 0) rc = engram_retrieve_many(c->mgr, (const char *const *)c->keys, n, &c->o, on_refreshed_read, c);
  else engram__error(rc, "out of memory");
  part(c, rc);
}

static void on_head_updated(int status, const engram_reply_t *r, void *ud) {
  call_t *c = ud;
  upd_t *u = c->upd;
  int touch;
  if (status == ENGRAM_ECONFLICT && ++c->rounds < UPDATE_ROUNDS) {
    change_start(c);
    return;
  }
  if (status == ENGRAM_ENOTFOUND) {
    note(c, 0, r);
    fail(c, no_thread(c), NULL);
    return;
  }
  if (status != 0) {
    note(c, status, r);
    finish(c, status, NULL, NULL, 0, NULL, NULL);
    return;
  }
  note(c, 0, r);
  /* The head's expiry: slid by the update itself when the call named the TTL (the common case: settings on every
   * append); else a store of the value the update wrote, conditional on its version, with the TTL the head holds;
   * and a head without a TTL that still has an expiry (ENGRAM_THREAD_NO_TTL, now or in a change that raced this
   * one) is stored without one, so it stops expiring at once. */
  touch = r->n_items > 0 &&
          ((u->ttl_ms > 0 && u->ttl_ms != update_ttl(u)) || (u->ttl_ms == 0 && r->items[0].expires_at_ms != 0));
  /* An append needs the head read back only for that store or a refresh: its reply comes from the update's run. */
  if (r->n_items < 1 || r->items[0].value == NULL ||
      ((u->mode != M_APPEND || touch || u->refresh) &&
       ((c->head_value = cJSON_Duplicate(r->items[0].value, 1)) == NULL || th_head_parse(c->head_value, &c->head) != 0))) {
    fail(c, ENGRAM_ENOMEM, "thread \"%s\": out of memory reading the head", c->id);
    return;
  }
  c->have_head = c->head_value != NULL;
  c->head_version = r->items[0].version;
  c->expires_at_ms = r->items[0].expires_at_ms;
  c->count = u->count;
  /* the parallel phase: every sub-call counts in pending; the extra 1 is released at the end of this function */
  c->pending = 1;
  /* The messages, the trim (up to DELETE_CHUNK) and the deleted messages rode on the update; a longer trim is
   * deleted here. */
  if (u->new_first > u->old_first && !u->trim_carried) delete_range(c, u->old_first, u->new_first);
  if (u->refresh && u->ttl_ms > 0) refresh_messages(c);
  if (touch) {
    engram_opts_t o = c->o;
    o.flags = u->ttl_ms > 0 ? ENGRAM_OPT_TTL : 0;
    o.ttl_ms = u->ttl_ms;
    o.if_version = c->head_version;
    o.metadata = r->items[0].metadata;
    c->pending++;
    part(c, engram_store(c->mgr, c->head_key, c->head_value, &o, on_touched, c));
  }
  change_part_done(c);
}

static void change_start(call_t *c) {
  int rc = update_head(c);
  if (rc != 0) {
    snprintf(c->message, sizeof c->message, "thread \"%s\": %s", c->id, engram_last_error());
    finish(c, rc, NULL, NULL, 0, NULL, NULL);
  }
}

static int change_submit(call_t *c) {
  int rc = update_head(c);
  if (rc != 0) call_free(c);
  return rc;
}

static upd_t *upd_new(call_t *c, int mode, const engram_thread_settings_t *settings, const cJSON *meta) {
  upd_t *u = engram_calloc(1, sizeof *u);
  if (u == NULL) return NULL;
  atomic_init(&u->refs, 1); /* the call's */
  u->mode = mode;
  memcpy(u->id, c->id, sizeof u->id);
  if (settings) u->settings = *settings;
  if (meta != NULL && (u->set_meta = cJSON_Duplicate(meta, 1)) == NULL) {
    upd_free(u);
    return NULL;
  }
  return u;
}

/* The per-message and per-part arrays of an append of n messages in parts (merged appends), in one allocation
 * (u->block): one malloc and one free an append instead of eight. */
static int upd_arrays(upd_t *u, size_t n, size_t parts) {
  size_t ptrs = 5 * n * sizeof(cJSON *), entries = n * sizeof(engram_entry_t);
  size_t words = (2 * n + 3 * parts + 1) * sizeof(uint64_t), keys = n * sizeof *u->keys;
  char *b = engram_calloc(1, ptrs + entries + words + keys + n);
  if (b == NULL) return ENGRAM_ENOMEM;
  u->block = b;
  u->msgs = (cJSON **)(void *)b;
  u->meta = u->msgs + n;
  u->nodes = u->meta + n; /* 3 per message */
  u->entries = (engram_entry_t *)(void *)(b + ptrs);
  u->expires = (int64_t *)(void *)(b + ptrs + entries);
  u->versions = (uint64_t *)(void *)(b + ptrs + entries + n * sizeof(int64_t));
  u->part_off = u->versions + n; /* parts + 1 */
  u->part_count = u->part_off + parts + 1;
  u->part_trimmed = u->part_count + parts;
  u->keys = (char(*)[TH_KEY_MAX])(void *)(b + ptrs + entries + words);
  u->is_system = (unsigned char *)(b + ptrs + entries + words + keys);
  u->n = n;
  u->n_parts = parts;
  u->part_off[parts] = n;
  return 0;
}

/* ---------------------------------------------------------------------------------------------------- */
/* Appends to one thread in flight together: lanes (thread_queue.h)                                       */
/* ---------------------------------------------------------------------------------------------------- */

/* While LANE_DEPTH appends to a thread are in flight, the later appends to it with the same settings and options
 * (manager, source, namespace, id, settings, deadline, completion queue: the lane's key) wait in its lane; when one
 * in flight ends, the waiting ones (up to ENGRAM_THREAD_BATCH_MAX messages) go as one update, each its own part,
 * and each caller gets its own reply. Nothing waits for company: an append to a lane with room goes at once. */

/* Appends of a lane in flight at once: 2 — one update queued in the source behind the running one (so the source
 * goes from one to the next without waiting for this process), the rest merged behind them. callgrind,
 * BENCH_ONLY=append,cache bench_thread, 20,000 minus 10,000 messages each way: 25.0 k instructions a message before
 * lanes, 19.8 k with 1, 22.9 k with 2; but with 1 the cache's wall clock at 10 messages an append fell below the
 * base's (each merged update waits a loop turn for the one before), with 2 it did not (docs/benchmarks.md). */
#define LANE_DEPTH 2

/* ... only on a source that answers at once (ENGRAM_SOURCE_ANSWERS_AT_ONCE: the cache, where it was measured — an
 * update there is answered in the actor's turn, and a merged one waits a loop turn more). Elsewhere a lane lets ONE append be in flight and merges the rest:
 *  - SQLite (a thread of its own): an update queued behind the running one waits in that thread's mailbox among the
 *    other lanes' updates anyway, and each update costs its head's read, function, write and savepoint beside its
 *    messages (sq_update: ~55 k instructions an update beside 20 k a message): with one in flight the bench's mix
 *    (BENCH_ONLY=append,sqlite bench_thread, 20,000 minus 10,000 messages each way) made 4,144 updates instead of
 *    7,324, SQLite's thread 1,018.9 M -> 848.1 M instructions (callgrind);
 *  - PostgreSQL and Redis: the server's work is per statement / script (its start-up, the head's write), so fewer,
 *    larger updates cost it less: BENCH_ONLY=append,postgres and append,redis, 8 alternating pairs each at load
 *    2-4, messages / stores at one message per append: PostgreSQL median 0.22 -> 0.29 (higher in 7 of 8, one
 *    tie), Redis 0.355 -> 0.415 (6 higher, 1 tie, 1 lower); at ten per append 0.575 -> 0.615 and 0.525 -> 0.575
 *    (mixed, 4/8 and 5/8) — docs/benchmarks.md. Other types (vector, tiered, your own) were not measured. */
#define LANE_DEPTH_OTHER 1

/* The lane depth of c's source: LANE_DEPTH on a source that answers at once, else LANE_DEPTH_OTHER (an unknown
 * source too: its call is refused anyway). Any thread (the manager's read lock, as every submit takes it). */
static unsigned lane_depth(const call_t *c) {
  engram_source_t *src;
  int at_once;
  uv_rwlock_rdlock(&c->mgr->lock);
  src = engram__manager_find_locked(c->mgr, c->src);
  at_once = src != NULL && (src->vt->flags & ENGRAM_SOURCE_ANSWERS_AT_ONCE) != 0;
  uv_rwlock_rdunlock(&c->mgr->lock);
  return at_once ? LANE_DEPTH : LANE_DEPTH_OTHER;
}

#define call_of(node) ((call_t *)(void *)((char *)(node) - offsetof(call_t, qnode)))

typedef struct {
  void *mgr, *cq;
  uint32_t deadline_ms;
  unsigned flags;
  int64_t max_messages, ttl_ms;
} lane_head_t;

/* The lane key of an append: 0 when too long to queue (then it goes alone). */
static size_t lane_key(const call_t *c, unsigned char *buf) {
  lane_head_t k;
  const engram_thread_settings_t *st = &c->upd->settings;
  size_t ls = c->src ? strlen(c->src) : 0, ln = c->ns ? strlen(c->ns) : 0, li = strlen(c->id);
  if (sizeof k + ls + ln + li + 3 > TQ_KEY_MAX) return 0;
  memset(&k, 0, sizeof k); /* padding too: keys compare as bytes */
  k.mgr = c->mgr;
  k.cq = c->o.cq;
  k.deadline_ms = c->asked_deadline;
  k.flags = st->flags;
  k.max_messages = (st->flags & ENGRAM_THREAD_MAX_MESSAGES) ? st->max_messages : 0;
  k.ttl_ms = (st->flags & ENGRAM_THREAD_TTL) ? st->ttl_ms : 0;
  memcpy(buf, &k, sizeof k);
  buf += sizeof k;
  buf[0] = c->src ? 1 : 0; /* the default source and one named "" differ */
  memcpy(buf + 1, c->src ? c->src : "", ls);
  buf[1 + ls] = '\0';
  memcpy(buf + 2 + ls, c->ns ? c->ns : "", ln + 1);
  memcpy(buf + 3 + ls + ln, c->id, li);
  return sizeof k + ls + ln + li + 3;
}

/* tq_run_fn: submits a lone append as its lane's busy item. */
static int lane_run(void *arg) {
  call_t *c = arg;
  int rc;
  c->queued = 1;
  if ((rc = update_head(c)) != 0) c->queued = 0;
  return rc;
}

typedef struct {
  call_t *lead;   /* the lane's call that ended */
  call_t *failed; /* calls take_group could not run, to answer after tq_leave (each with status and message) */
} take_t;

static void take_failed(take_t *t, call_t *m, int status, const char *msg) {
  m->status = status;
  snprintf(m->message, sizeof m->message, "thread \"%s\": %.300s", m->id, msg);
  m->next_member = t->failed;
  t->failed = m;
}

/* Merges the calls group[0..k) (k ≥ 2) into one update owned by group[0]: their prepared messages move into it in
 * order, each call's part is its own. 0 or ENGRAM_ENOMEM (nothing moved). */
static int merge(call_t **group, size_t k) {
  call_t *lead = group[0];
  size_t total = 0, i, j, at = 0;
  upd_t *u;
  for (j = 0; j < k; j++) total += group[j]->upd->n;
  if ((u = upd_new(lead, M_APPEND, &lead->upd->settings, NULL)) == NULL) return ENGRAM_ENOMEM;
  if (upd_arrays(u, total, k) != 0) {
    upd_free(u);
    return ENGRAM_ENOMEM;
  }
  for (j = 0; j < k; j++) {
    upd_t *o = group[j]->upd;
    u->part_off[j] = at;
    for (i = 0; i < o->n; i++, at++) {
      u->msgs[at] = o->msgs[i];
      u->meta[at] = o->meta[i];
      /* the item metadata's "thread" refers to o->id: the same id, now u's */
      cJSON_GetObjectItemCaseSensitive(u->meta[at], "thread")->valuestring = u->id;
      memcpy(&u->nodes[3 * at], &o->nodes[3 * i], 3 * sizeof *u->nodes);
      u->is_system[at] = o->is_system[i];
      o->msgs[i] = o->meta[i] = NULL;
    }
    upd_unref(o);
    group[j]->upd = u;
    group[j]->part = j;
    if (j > 0) atomic_fetch_add_explicit(&u->refs, 1, memory_order_relaxed); /* each call holds one */
  }
  return 0;
}

/* tq_take_fn: the waiting appends of a lane whose busy one ended. Those whose deadline passed while they waited
 * end with ENGRAM_ETIMEDOUT; the others, up to ENGRAM_THREAD_BATCH_MAX messages, go as one update with what is left
 * of the earliest deadline among them. When it is refused (mailbox full, manager closed), every waiting call ends
 * with that error. */
static int take_group(tq_node_t **list, void *arg) {
  take_t *t = arg;
  engram_manager_t *mgr = t->lead->mgr;
  call_t *group[ENGRAM_THREAD_BATCH_MAX];
  size_t k = 0, msgs = 0;
  int64_t now = engram_now_ms(), end = INT64_MAX;
  uint32_t d = t->lead->asked_deadline ? t->lead->asked_deadline : mgr->cfg.default_deadline_ms;
  int rc;
  while (*list != NULL) {
    call_t *m = call_of(*list);
    if (k > 0 && msgs + m->upd->n > ENGRAM_THREAD_BATCH_MAX) break;
    *list = (*list)->next;
    if (d > 0 && m->submitted_ms + d <= now) {
      take_failed(t, m, ENGRAM_ETIMEDOUT, "deadline exceeded waiting behind an append to the same thread");
      continue;
    }
    if (d > 0 && m->submitted_ms + d < end) end = m->submitted_ms + d;
    group[k++] = m;
    msgs += m->upd->n;
  }
  if (k == 0) return 0; /* every one timed out */
  rc = k > 1 ? merge(group, k) : 0;
  if (rc == 0) {
    size_t j;
    for (j = k - 1; j > 0; j--) { /* members in arrival order */
      group[j]->next_member = group[0]->members;
      group[0]->members = group[j];
    }
    group[0]->o.deadline_ms = d > 0 ? (uint32_t)(end - now) : 0;
    if ((rc = lane_run(group[0])) == 0) return 1;
    group[0]->members = NULL;
  }
  {
    const char *why = rc == ENGRAM_ENOMEM ? "out of memory" : engram_last_error();
    char msg[300];
    snprintf(msg, sizeof msg, "%s", why && why[0] ? why : engram_strerror(rc));
    while (k > 0) take_failed(t, group[--k], rc, msg);
    while (*list != NULL) {
      call_t *m = call_of(*list);
      *list = (*list)->next;
      take_failed(t, m, rc, msg);
    }
  }
  return 0;
}

/* The lane's busy append (c) ended: the waiting ones go; those that cannot are answered here. */
static void lane_leave(call_t *c) {
  unsigned char key[TQ_KEY_MAX];
  size_t len = lane_key(c, key);
  take_t t = {c, NULL};
  call_t *m, *rev = NULL;
  c->queued = 0;
  tq_leave(key, len, take_group, &t);
  while ((m = t.failed) != NULL) { /* in arrival order */
    t.failed = m->next_member;
    m->next_member = rev;
    rev = m;
  }
  while ((m = rev) != NULL) {
    rev = m->next_member;
    m->next_member = NULL;
    finish(m, m->status, NULL, NULL, 0, NULL, NULL);
  }
}

int engram_thread_append(engram_manager_t *mgr, const char *thread, const engram_message_t *messages, size_t n,
                         const engram_thread_settings_t *settings, const engram_opts_t *opts, engram_cb cb, void *ud) {
  call_t *c;
  size_t i;
  int rc;
  engram__error_clear();
  if (mgr == NULL) return engram__error(ENGRAM_EINVAL, "mgr: NULL");
  if (cb == NULL) return engram__error(ENGRAM_EINVAL, "cb: NULL");
  if ((rc = check_id(thread)) != 0) return rc;
  if (messages == NULL) return engram__error(ENGRAM_EINVAL, "messages: NULL");
  if (n < 1 || n > ENGRAM_THREAD_BATCH_MAX)
    return engram__error(ENGRAM_EINVAL, "n: %zu, must be 1..%d", n, ENGRAM_THREAD_BATCH_MAX);
  for (i = 0; i < n; i++)
    if ((rc = check_message(&messages[i], i)) != 0) return rc;
  if ((rc = check_settings(settings)) != 0) return rc;
  if ((c = call_new(mgr, ENGRAM_OP_THREAD_APPEND, thread, opts, cb, ud)) == NULL ||
      (c->upd = upd_new(c, M_APPEND, settings, NULL)) == NULL || upd_arrays(c->upd, n, 1) != 0) {
    call_free(c);
    return engram__error(ENGRAM_ENOMEM, "out of memory");
  }
  c->n = n;
  for (i = 0; i < n; i++) {
    upd_t *u = c->upd;
    const char *role = role_literal(messages[i].role);
    u->is_system[i] = role == ROLE_SYSTEM;
    if ((u->msgs[i] = prepare_message(&messages[i], role)) == NULL || (u->meta[i] = cJSON_CreateObject()) == NULL ||
        !add_cs(u->meta[i], "thread", cJSON_CreateStringReference(u->id)) ||
        (u->nodes[3 * i + 2] = add_cs(u->meta[i], "seq", cJSON_CreateNumber(0))) == NULL ||
        !add_cs(u->meta[i], "role", cJSON_CreateStringReference(role)) ||
        (u->nodes[3 * i] = cJSON_GetObjectItemCaseSensitive(u->msgs[i], "seq")) == NULL ||
        (u->nodes[3 * i + 1] = cJSON_GetObjectItemCaseSensitive(u->msgs[i], "created_at_ms")) == NULL) {
      call_free(c);
      return engram__error(ENGRAM_ENOMEM, "out of memory");
    }
  }
  c->asked_deadline = c->o.deadline_ms;
  c->submitted_ms = engram_now_ms();
  {
    unsigned char key[TQ_KEY_MAX];
    size_t len = lane_key(c, key);
    if (len > 0) {
      rc = tq_enter(key, len, lane_depth(c), &c->qnode, lane_run, c); /* 1: waits behind the thread's append in flight */
      if (rc >= 0) return 0;
    }
  }
  return change_submit(c); /* no lane (key too long, no memory for one) or refused in it: alone */
}

int engram_thread_set(engram_manager_t *mgr, const char *thread, const cJSON *metadata,
                      const engram_thread_settings_t *settings, const engram_opts_t *opts, engram_cb cb, void *ud) {
  call_t *c;
  int rc;
  engram__error_clear();
  if (mgr == NULL) return engram__error(ENGRAM_EINVAL, "mgr: NULL");
  if (cb == NULL) return engram__error(ENGRAM_EINVAL, "cb: NULL");
  if ((rc = check_id(thread)) != 0) return rc;
  if (metadata != NULL) {
    if (!cJSON_IsObject(metadata)) return engram__error(ENGRAM_EINVAL, "metadata: must be a JSON object");
    if ((rc = check_tree(metadata, "metadata")) != 0) return rc;
  }
  if ((rc = check_settings(settings)) != 0) return rc;
  if (metadata == NULL && (settings == NULL || settings->flags == 0))
    return engram__error(ENGRAM_EINVAL, "metadata: NULL and settings change nothing");
  if ((c = call_new(mgr, ENGRAM_OP_THREAD_SET, thread, opts, cb, ud)) == NULL ||
      (c->upd = upd_new(c, M_SET, settings, metadata)) == NULL) {
    call_free(c);
    return engram__error(ENGRAM_ENOMEM, "out of memory");
  }
  return change_submit(c);
}

int engram_thread_delete_messages(engram_manager_t *mgr, const char *thread, const uint64_t *seqs, size_t n,
                                  const engram_opts_t *opts, engram_cb cb, void *ud) {
  call_t *c;
  size_t i;
  int rc;
  engram__error_clear();
  if (mgr == NULL) return engram__error(ENGRAM_EINVAL, "mgr: NULL");
  if (cb == NULL) return engram__error(ENGRAM_EINVAL, "cb: NULL");
  if ((rc = check_id(thread)) != 0) return rc;
  if (seqs == NULL) return engram__error(ENGRAM_EINVAL, "seqs: NULL");
  if (n < 1 || n > ENGRAM_THREAD_BATCH_MAX)
    return engram__error(ENGRAM_EINVAL, "n: %zu, must be 1..%d", n, ENGRAM_THREAD_BATCH_MAX);
  for (i = 0; i < n; i++)
    if (seqs[i] < 1 || seqs[i] > (uint64_t)1 << 53)
      return engram__error(ENGRAM_EINVAL, "seqs[%zu]: %" PRIu64 ", must be 1..2^53", i, seqs[i]);
  if ((c = call_new(mgr, ENGRAM_OP_THREAD_DELETE_MESSAGES, thread, opts, cb, ud)) == NULL ||
      (c->upd = upd_new(c, M_DELMSG, NULL, NULL)) == NULL || (c->upd->del = engram_malloc(n * sizeof *seqs)) == NULL) {
    call_free(c);
    return engram__error(ENGRAM_ENOMEM, "out of memory");
  }
  memcpy(c->upd->del, seqs, n * sizeof *seqs);
  c->upd->n_del = n;
  return change_submit(c);
}

/* ---------------------------------------------------------------------------------------------------- */
/* Info                                                                                                   */
/* ---------------------------------------------------------------------------------------------------- */

static void on_info_head(int status, const engram_reply_t *r, void *ud) {
  call_t *c = ud;
  cJSON *info;
  if ((status = take_head(c, status, r)) != 0) {
    finish(c, status, NULL, NULL, 0, NULL, NULL);
    return;
  }
  if ((info = th_head_info(&c->head, c->expires_at_ms)) == NULL) {
    fail(c, ENGRAM_ENOMEM, "out of memory");
    return;
  }
  finish(c, 0, info, NULL, th_head_count(&c->head), NULL, NULL);
}

static int read_submit(call_t *c, engram_cb next) {
  int rc = retrieve_head(c, next);
  if (rc != 0) call_free(c);
  return rc;
}

int engram_thread_info(engram_manager_t *mgr, const char *thread, const engram_opts_t *opts, engram_cb cb, void *ud) {
  call_t *c;
  int rc;
  engram__error_clear();
  if (mgr == NULL) return engram__error(ENGRAM_EINVAL, "mgr: NULL");
  if (cb == NULL) return engram__error(ENGRAM_EINVAL, "cb: NULL");
  if ((rc = check_id(thread)) != 0) return rc;
  if ((c = call_new(mgr, ENGRAM_OP_THREAD_INFO, thread, opts, cb, ud)) == NULL)
    return engram__error(ENGRAM_ENOMEM, "out of memory");
  return read_submit(c, on_info_head);
}

/* ---------------------------------------------------------------------------------------------------- */
/* Reads: range, one message                                                                              */
/* ---------------------------------------------------------------------------------------------------- */

/* Sets c->keys to the keys of seqs (n of them). 0 or ENGRAM_ENOMEM. */
static int make_keys(call_t *c, const uint64_t *seqs, size_t n) {
  size_t i;
  free_keys(c->keys, c->n_keys);
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
static const cJSON *msg_of(const engram_reply_t *r, size_t i) {
  const cJSON *v;
  if (i >= r->n_items || r->items[i].status != 0) return NULL;
  v = r->items[i].value;
  return cJSON_IsObject(v) && cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(v, "seq")) ? v : NULL;
}

static cJSON *base_info(call_t *c, cJSON **msgs) {
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

static void on_range_msgs(int status, const engram_reply_t *r, void *ud) {
  call_t *c = ud;
  cJSON *msgs, *info;
  size_t i;
  char cur[24];
  note(c, status, r);
  if (status != 0) {
    finish(c, status, NULL, NULL, 0, NULL, NULL);
    return;
  }
  if ((info = base_info(c, &msgs)) == NULL) {
    fail(c, ENGRAM_ENOMEM, "out of memory");
    return;
  }
  for (i = 0; i < r->n_items; i++) {
    const cJSON *m = msg_of(r, i);
    cJSON *d;
    if (m == NULL) continue;
    if ((d = cJSON_Duplicate(m, 1)) == NULL || !cJSON_AddItemToArray(msgs, d)) {
      cJSON_Delete(d);
      cJSON_Delete(info);
      fail(c, ENGRAM_ENOMEM, "out of memory");
      return;
    }
  }
  if (c->walk != 0) {
    snprintf(cur, sizeof cur, "%" PRIu64, c->walk);
    cJSON_AddNumberToObject(info, "next_seq", (double)c->walk);
  } else {
    cJSON_AddNullToObject(info, "next_seq");
  }
  finish(c, 0, info, msgs, (uint64_t)cJSON_GetArraySize(msgs), c->walk ? cur : NULL, NULL);
}

static void on_range_head(int status, const engram_reply_t *r, void *ud) {
  call_t *c = ud;
  uint64_t s, *seqs;
  size_t n = 0;
  int rc;
  if ((status = take_head(c, status, r)) != 0) {
    finish(c, status, NULL, NULL, 0, NULL, NULL);
    return;
  }
  if ((seqs = engram_malloc((size_t)c->limit * sizeof *seqs)) == NULL) {
    fail(c, ENGRAM_ENOMEM, "out of memory");
    return;
  }
  s = c->from_seq < c->head.first ? c->head.first : c->from_seq;
  for (; s <= c->head.last && n < (size_t)c->limit; s++)
    if (th_head_visible(&c->head, s)) seqs[n++] = s;
  c->walk = s <= c->head.last ? s : 0;
  rc = make_keys(c, seqs, n);
  engram_free(seqs);
  if (rc == 0 && n == 0) {
    engram_reply_t empty;
    memset(&empty, 0, sizeof empty);
    empty.op = ENGRAM_OP_RETRIEVE_MANY;
    on_range_msgs(0, &empty, c);
    return;
  }
  if (rc == 0) rc = engram_retrieve_many(c->mgr, (const char *const *)c->keys, n, &c->o, on_range_msgs, c);
  if (rc != 0) fail(c, rc, "thread \"%s\": %s", c->id, rc == ENGRAM_ENOMEM ? "out of memory" : engram_last_error());
}

int engram_thread_read(engram_manager_t *mgr, const char *thread, uint64_t from_seq, int limit,
                       const engram_opts_t *opts, engram_cb cb, void *ud) {
  call_t *c;
  int rc;
  engram__error_clear();
  if (mgr == NULL) return engram__error(ENGRAM_EINVAL, "mgr: NULL");
  if (cb == NULL) return engram__error(ENGRAM_EINVAL, "cb: NULL");
  if ((rc = check_id(thread)) != 0) return rc;
  if (limit < 1 || limit > ENGRAM_THREAD_PAGE_MAX)
    return engram__error(ENGRAM_EINVAL, "limit: %d, must be 1..%d", limit, ENGRAM_THREAD_PAGE_MAX);
  if ((c = call_new(mgr, ENGRAM_OP_THREAD_READ, thread, opts, cb, ud)) == NULL)
    return engram__error(ENGRAM_ENOMEM, "out of memory");
  c->from_seq = from_seq;
  c->limit = limit;
  return read_submit(c, on_range_head);
}

static void on_get_msg(int status, const engram_reply_t *r, void *ud) {
  call_t *c = ud;
  cJSON *info, *arr;
  const cJSON *m;
  note(c, status == ENGRAM_ENOTFOUND ? 0 : status, r);
  if (status == ENGRAM_ENOTFOUND || (status == 0 && (r->n_items < 1 || !cJSON_IsObject(r->items[0].value)))) {
    fail(c, ENGRAM_ENOTFOUND, "thread \"%s\": no message %" PRIu64, c->id, c->seq);
    return;
  }
  if (status != 0) {
    finish(c, status, NULL, NULL, 0, NULL, NULL);
    return;
  }
  m = r->items[0].value;
  arr = cJSON_CreateArray();
  info = cJSON_Duplicate(m, 1);
  if (arr == NULL || info == NULL || !cJSON_AddItemReferenceToArray(arr, info)) {
    cJSON_Delete(arr);
    cJSON_Delete(info);
    fail(c, ENGRAM_ENOMEM, "out of memory");
    return;
  }
  /* the reference array is freed before info by taking it apart first */
  {
    engram_reply_t rr;
    engram_item_t *items;
    size_t n;
    memset(&rr, 0, sizeof rr);
    items = items_of(c, arr, &n);
    rr.op = (engram_op_t)c->op;
    rr.message = "";
    rr.source = c->source_name;
    rr.items = items;
    rr.n_items = n;
    rr.count = n;
    rr.info = info;
    c->cb(0, &rr, c->ud);
    engram_free(items); /* and its keys */
    cJSON_Delete(arr);
    cJSON_Delete(info);
    call_free(c);
  }
}

static void on_get_head(int status, const engram_reply_t *r, void *ud) {
  call_t *c = ud;
  int rc;
  if ((status = take_head(c, status, r)) != 0) {
    finish(c, status, NULL, NULL, 0, NULL, NULL);
    return;
  }
  if (!th_head_visible(&c->head, c->seq)) {
    fail(c, ENGRAM_ENOTFOUND, "thread \"%s\": no message %" PRIu64 " (visible: %" PRIu64 "..%" PRIu64 ")", c->id, c->seq,
         c->head.first, c->head.last);
    return;
  }
  rc = make_keys(c, &c->seq, 1);
  if (rc == 0) rc = engram_retrieve(c->mgr, c->keys[0], &c->o, on_get_msg, c);
  if (rc != 0) fail(c, rc, "thread \"%s\": %s", c->id, rc == ENGRAM_ENOMEM ? "out of memory" : engram_last_error());
}

int engram_thread_get_message(engram_manager_t *mgr, const char *thread, uint64_t seq, const engram_opts_t *opts,
                              engram_cb cb, void *ud) {
  call_t *c;
  int rc;
  engram__error_clear();
  if (mgr == NULL) return engram__error(ENGRAM_EINVAL, "mgr: NULL");
  if (cb == NULL) return engram__error(ENGRAM_EINVAL, "cb: NULL");
  if ((rc = check_id(thread)) != 0) return rc;
  if (seq < 1) return engram__error(ENGRAM_EINVAL, "seq: 0, must be ≥ 1");
  if ((c = call_new(mgr, ENGRAM_OP_THREAD_GET_MESSAGE, thread, opts, cb, ud)) == NULL)
    return engram__error(ENGRAM_ENOMEM, "out of memory");
  c->seq = seq;
  return read_submit(c, on_get_head);
}

/* ---------------------------------------------------------------------------------------------------- */
/* Window                                                                                                 */
/* ---------------------------------------------------------------------------------------------------- */

static size_t tokens_of(call_t *c, const cJSON *m) {
  return c->win.count_tokens ? c->win.count_tokens(m, c->win.count_ud) : engram_thread_count_tokens(m, NULL);
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
    const char *role = m ? cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(m, "role")) : NULL;
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
  if ((info = base_info(c, &msgs)) == NULL) {
    fail(c, ENGRAM_ENOMEM, "out of memory");
    return;
  }
  if (c->valid > 0) {
    const cJSON *oldest = cJSON_GetArrayItem(c->taken, (int)c->valid - 1);
    cut = (uint64_t)cJSON_GetObjectItemCaseSensitive(oldest, "seq")->valuedouble;
  }
  /* chronological: the taken messages (held newest first; the first `valid` count) merged with the system
   * messages (ascending) by seq, each moved from its list into the window's */
  {
    cJSON *t = c->valid > 0 ? cJSON_GetArrayItem(c->taken, (int)c->valid - 1) : NULL, *sm = c->sysmsgs->child;
    (void)si;
    (void)nsys;
    (void)s;
    while (t != NULL || sm != NULL) {
      if (t != NULL && (sm == NULL || cJSON_GetObjectItemCaseSensitive(t, "seq")->valuedouble <
                                          cJSON_GetObjectItemCaseSensitive(sm, "seq")->valuedouble)) {
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
      fail(c, ENGRAM_ENOMEM, "out of memory");
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
      fail(c, ENGRAM_ENOMEM, "out of memory rendering the window");
      return;
    }
  }
  window_summarize(c, cut); /* its summariser runs in a later callback, after the window's */
  {
    /* finish frees the call; the text outlives it until after the callback */
    size_t n = (size_t)cJSON_GetArraySize(msgs);
    finish(c, 0, info, msgs, n, NULL, text);
  }
  engram_free(text);
}

static void window_next(call_t *c);

/* Takes one non-system message walking down (r's item i, m: taken out of the reply, which the core owns until
 * this callback returns: no copy); sets c->stopped when it does not fit. */
static void window_take(call_t *c, const engram_reply_t *r, size_t i, const cJSON *m) {
  size_t t = tokens_of(c, m);
  const char *role;
  cJSON *d;
  if (!fits(c, c->cnt + 1, c->tok + t)) {
    c->stopped = 1;
    return;
  }
  if ((d = engram_reply_take_value(r, i)) == NULL || !cJSON_AddItemToArray(c->taken, d)) {
    cJSON_Delete(d);
    c->stopped = -1;
    return;
  }
  c->n_taken++;
  c->cnt++;
  c->tok += t;
  role = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(m, "role"));
  if (role != NULL && strcmp(role, "tool") == 0) {
    const char *id = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(m, "tool_call_id"));
    if (id != NULL && !cJSON_HasObjectItem(c->open, id) && !cJSON_AddTrueToObject(c->open, id)) c->stopped = -1;
  } else if (role != NULL && strcmp(role, "assistant") == 0) {
    const cJSON *call;
    cJSON_ArrayForEach(call, cJSON_GetObjectItemCaseSensitive(m, "tool_calls")) {
      const char *id = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(call, "id"));
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
  size_t i;
  note(c, status, r);
  if (status != 0) {
    finish(c, status, NULL, NULL, 0, NULL, NULL);
    return;
  }
  for (i = 0; c->page == 0 && i < r->n_items; i++) {
    /* the summary item, read with the first page */
    if (r->items[i].status != 0 || r->items[i].key == NULL || strcmp(r->items[i].key, c->sum_key) != 0) continue;
    if ((c->sum_value = cJSON_Duplicate(r->items[i].value, 1)) == NULL && r->items[i].value != NULL) {
      fail(c, ENGRAM_ENOMEM, "out of memory");
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
        fail(c, ENGRAM_ENOMEM, "out of memory");
        return;
      }
      engram_free(t);
    }
    c->sum_tok = tokens_of(c, c->sum_msg);
    c->sys_tok += c->sum_tok;
    break;
  }
  for (i = 0; i < r->n_items; i++) {
    const cJSON *m = msg_of(r, i);
    uint64_t seq;
    if (m == NULL) continue; /* a gap, or the summary */
    seq = (uint64_t)cJSON_GetObjectItemCaseSensitive(m, "seq")->valuedouble;
    if (th_head_is_system(&c->head, seq)) {
      cJSON *d = engram_reply_take_value(r, i); /* m itself: moved, not copied */
      if (d == NULL || !cJSON_AddItemToArray(c->sysmsgs, d)) {
        cJSON_Delete(d);
        fail(c, ENGRAM_ENOMEM, "out of memory");
        return;
      }
      c->sys_cnt++;
      c->sys_tok += tokens_of(c, m);
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
  for (i = 0; i < r->n_items && !c->stopped; i++) {
    const cJSON *m = msg_of(r, i);
    if (m == NULL || th_head_is_system(&c->head, (uint64_t)cJSON_GetObjectItemCaseSensitive(m, "seq")->valuedouble))
      continue;
    window_take(c, r, i, m);
  }
  if (c->stopped < 0) {
    fail(c, ENGRAM_ENOMEM, "out of memory");
    return;
  }
  c->page++;
  if (c->stopped || c->walk == 0) window_finish(c);
  else window_next(c);
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
  rc = make_keys(c, seqs, n);
  engram_free(seqs);
  if (rc == 0 && n == 0) return 1;
  if (rc == 0 && c->page == 0) { /* the summary item rides with the first page */
    char **k = engram_realloc(c->keys, (n + 1) * sizeof *k);
    if (k == NULL) rc = ENGRAM_ENOMEM;
    else if ((c->keys = k, k[n] = engram_strdup(c->sum_key)) == NULL) rc = ENGRAM_ENOMEM;
    else c->n_keys = ++n;
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
  if (rc == 0) rc = engram_retrieve_many(c->mgr, (const char *const *)c->keys, c->n_keys, &c->o, on_window_page, c);
  if (rc != 0) fail(c, rc, "thread \"%s\": %s", c->id, rc == ENGRAM_ENOMEM ? "out of memory" : engram_last_error());
}

/* The walk's state once c->head is known (read, or hinted): 0 or ENGRAM_ENOMEM. */
static int window_start(call_t *c) {
  if ((c->sysmsgs == NULL && (c->sysmsgs = cJSON_CreateArray()) == NULL) ||
      (c->taken == NULL && (c->taken = cJSON_CreateArray()) == NULL) ||
      (c->open == NULL && (c->open = cJSON_CreateObject()) == NULL))
    return ENGRAM_ENOMEM;
  c->walk = c->head.last >= c->head.first ? c->head.last : 0;
  th_summary_key(c->sum_key, sizeof c->sum_key, c->id, c->head.gen);
  return 0;
}

static void on_window_head(int status, const engram_reply_t *r, void *ud) {
  call_t *c = ud;
  if ((status = take_head(c, status, r)) != 0) {
    finish(c, status, NULL, NULL, 0, NULL, NULL);
    return;
  }
  if (window_start(c) != 0) {
    fail(c, ENGRAM_ENOMEM, "out of memory");
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
  if ((status = take_head(c, status, hr)) != 0) {
    th_head_free(&hint);
    finish(c, status, NULL, NULL, 0, NULL, NULL);
    return;
  }
  if (th_hint_same(&hint, &c->head)) {
    th_head_free(&hint);
    on_window_page(0, r, c); /* item 0, the head, is neither a message nor the summary: skipped there */
    return;
  }
  th_head_free(&hint);
  if (window_start(c) != 0) {
    fail(c, ENGRAM_ENOMEM, "out of memory");
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
      if ((k[0] = engram_strdup(c->head_key)) == NULL) rc = ENGRAM_ENOMEM;
    }
  }
  if (rc != 0) { /* an empty thread by the hint, or no memory: the two-step path decides */
    th_head_free(&c->head);
    cJSON_Delete(c->sysmsgs);
    cJSON_Delete(c->taken);
    cJSON_Delete(c->open);
    c->sysmsgs = c->taken = c->open = NULL;
    free_keys(c->keys, c->n_keys);
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
  engram__error_clear();
  if (mgr == NULL) return engram__error(ENGRAM_EINVAL, "mgr: NULL");
  if (cb == NULL) return engram__error(ENGRAM_EINVAL, "cb: NULL");
  if ((rc = check_id(thread)) != 0) return rc;
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
  if ((c = call_new(mgr, ENGRAM_OP_THREAD_WINDOW, thread, opts, cb, ud)) == NULL)
    return engram__error(ENGRAM_ENOMEM, "out of memory");
  c->win = *window;
  if ((rc = window_spec(c)) == 1) return read_submit(c, on_window_head);
  if (rc != 0) call_free(c);
  return rc;
}

/* ---------------------------------------------------------------------------------------------------- */
/* Delete a thread                                                                                        */
/* ---------------------------------------------------------------------------------------------------- */

static void del_list(call_t *c);

static void on_del_msgs(int status, const engram_reply_t *r, void *ud) {
  call_t *c = ud;
  note(c, status, r);
  if (status != 0) {
    finish(c, status, NULL, NULL, 0, NULL, NULL);
    return;
  }
  /* the summary item is removed with the messages but is not one: reply->count counts messages */
  c->count += r->count - (r->count < c->sum_listed ? r->count : c->sum_listed);
  c->sum_listed = 0;
  if (c->list_cursor == NULL) finish(c, 0, NULL, NULL, c->count, NULL, NULL);
  else del_list(c);
}

static void on_del_listed(int status, const engram_reply_t *r, void *ud) {
  call_t *c = ud;
  size_t i;
  int rc = 0;
  note(c, status, r);
  if (status != 0) {
    finish(c, status, NULL, NULL, 0, NULL, NULL);
    return;
  }
  engram_free(c->list_cursor);
  c->list_cursor = r->cursor ? engram_strdup(r->cursor) : NULL;
  if (r->cursor && c->list_cursor == NULL) rc = ENGRAM_ENOMEM;
  if (rc == 0 && r->n_items == 0) {
    if (c->list_cursor == NULL) finish(c, 0, NULL, NULL, c->count, NULL, NULL);
    else del_list(c);
    return;
  }
  free_keys(c->keys, c->n_keys);
  c->n_keys = 0;
  if (rc == 0 && (c->keys = engram_calloc(r->n_items, sizeof *c->keys)) == NULL) rc = ENGRAM_ENOMEM;
  for (i = 0; rc == 0 && i < r->n_items; i++, c->n_keys++) {
    size_t len = strlen(r->items[i].key);
    if ((c->keys[i] = engram_strdup(r->items[i].key)) == NULL) rc = ENGRAM_ENOMEM;
    if (len > sizeof TH_SUMMARY_SUFFIX && strcmp(r->items[i].key + len - (sizeof TH_SUMMARY_SUFFIX - 1), TH_SUMMARY_SUFFIX) == 0)
      c->sum_listed++;
  }
  if (rc == 0) rc = engram_delete_many(c->mgr, (const char *const *)c->keys, c->n_keys, &c->o, on_del_msgs, c);
  if (rc != 0) fail(c, rc, "thread \"%s\": %s", c->id, rc == ENGRAM_ENOMEM ? "out of memory" : engram_last_error());
}

static void del_list(call_t *c) {
  char pattern[TH_KEY_MAX];
  int rc;
  snprintf(pattern, sizeof pattern, TH_MSG_PREFIX "%s:%s:*", c->id, c->head.gen);
  rc = engram_list_keys(c->mgr, pattern, LIST_PAGE, c->list_cursor, &c->o, on_del_listed, c);
  if (rc != 0) fail(c, rc, "thread \"%s\": %s", c->id, engram_last_error());
}

static void on_del_head(int status, const engram_reply_t *r, void *ud) {
  call_t *c = ud;
  note(c, status, r);
  if (status != 0) {
    finish(c, status, NULL, NULL, 0, NULL, NULL);
    return;
  }
  del_list(c);
}

static void on_del_read(int status, const engram_reply_t *r, void *ud) {
  call_t *c = ud;
  int rc;
  if (status == ENGRAM_ENOTFOUND) {
    note(c, 0, r);
    finish(c, 0, NULL, NULL, 0, NULL, NULL);
    return;
  }
  if ((status = take_head(c, status, r)) != 0) {
    finish(c, status, NULL, NULL, 0, NULL, NULL);
    return;
  }
  rc = engram_delete(c->mgr, c->head_key, &c->o, on_del_head, c);
  if (rc != 0) fail(c, rc, "thread \"%s\": %s", c->id, engram_last_error());
}

int engram_thread_delete(engram_manager_t *mgr, const char *thread, const engram_opts_t *opts, engram_cb cb, void *ud) {
  call_t *c;
  int rc;
  engram__error_clear();
  if (mgr == NULL) return engram__error(ENGRAM_EINVAL, "mgr: NULL");
  if (cb == NULL) return engram__error(ENGRAM_EINVAL, "cb: NULL");
  if ((rc = check_id(thread)) != 0) return rc;
  if ((c = call_new(mgr, ENGRAM_OP_THREAD_DELETE, thread, opts, cb, ud)) == NULL)
    return engram__error(ENGRAM_ENOMEM, "out of memory");
  return read_submit(c, on_del_read);
}

/* ---------------------------------------------------------------------------------------------------- */
/* List threads                                                                                           */
/* ---------------------------------------------------------------------------------------------------- */

static int64_t info_updated(const cJSON *t) {
  return (int64_t)cJSON_GetObjectItemCaseSensitive(t, "updated_at_ms")->valuedouble;
}

static const char *info_id(const cJSON *t) { return cJSON_GetObjectItemCaseSensitive(t, "thread")->valuestring; }

/* updated_at_ms descending, then id ascending */
static int info_cmp(const void *a, const void *b) {
  const cJSON *x = *(const cJSON *const *)a, *y = *(const cJSON *const *)b;
  int64_t ux = info_updated(x), uy = info_updated(y);
  if (ux != uy) return ux > uy ? -1 : 1;
  return strcmp(info_id(x), info_id(y));
}

static void list_finish(call_t *c) {
  size_t n = (size_t)cJSON_GetArraySize(c->threads), i, start = 0, k = 0;
  cJSON **v = engram_calloc(n ? n : 1, sizeof *v), *info = NULL, *arr = NULL, *t;
  char cur[40 + ENGRAM_THREAD_ID_MAX];
  int more = 0;
  if (v == NULL) {
    fail(c, ENGRAM_ENOMEM, "out of memory");
    return;
  }
  i = 0;
  cJSON_ArrayForEach(t, c->threads) v[i++] = t;
  qsort(v, n, sizeof *v, info_cmp);
  if (c->cursor_in != NULL)
    while (start < n && (info_updated(v[start]) > c->cur_updated ||
                         (info_updated(v[start]) == c->cur_updated && strcmp(info_id(v[start]), c->cur_id) <= 0)))
      start++;
  if ((info = cJSON_CreateObject()) == NULL || (arr = cJSON_AddArrayToObject(info, "threads")) == NULL) goto nomem;
  for (i = start; i < n && k < (size_t)c->limit; i++, k++) {
    cJSON *d = cJSON_Duplicate(v[i], 1);
    if (d == NULL || !cJSON_AddItemToArray(arr, d)) {
      cJSON_Delete(d);
      goto nomem;
    }
  }
  more = i < n;
  if (more) snprintf(cur, sizeof cur, "%" PRId64 ":%s", info_updated(v[i - 1]), info_id(v[i - 1]));
  engram_free(v);
  finish(c, 0, info, NULL, k, more ? cur : NULL, NULL);
  return;
nomem:
  engram_free(v);
  cJSON_Delete(info);
  fail(c, ENGRAM_ENOMEM, "out of memory");
}

static void list_heads(call_t *c);

static void on_list_heads(int status, const engram_reply_t *r, void *ud) {
  call_t *c = ud;
  size_t i;
  note(c, status, r);
  if (status != 0) {
    finish(c, status, NULL, NULL, 0, NULL, NULL);
    return;
  }
  for (i = 0; i < r->n_items; i++) {
    th_head_t h;
    cJSON *info;
    if (r->items[i].status != 0 || th_head_parse(r->items[i].value, &h) != 0) continue; /* gone, or not a head */
    info = th_head_info(&h, r->items[i].expires_at_ms);
    th_head_free(&h);
    if (info == NULL || !cJSON_AddItemToArray(c->threads, info)) {
      cJSON_Delete(info);
      fail(c, ENGRAM_ENOMEM, "out of memory");
      return;
    }
  }
  list_heads(c);
}

/* Reads the listed heads LIST_PAGE at a time, then sorts. */
static void list_heads(call_t *c) {
  size_t n = c->n_all - c->heads_done;
  engram_opts_t o = c->o;
  int rc;
  if (n == 0) {
    list_finish(c);
    return;
  }
  if (n > LIST_PAGE) n = LIST_PAGE;
  o.flags = ENGRAM_OPT_INCLUDE_METADATA;
  rc = engram_retrieve_many(c->mgr, (const char *const *)c->all_keys + c->heads_done, n, &o, on_list_heads, c);
  c->heads_done += n;
  if (rc != 0) fail(c, rc, "threads: %s", engram_last_error());
}

static void list_keys_page(call_t *c);

static void on_list_keys(int status, const engram_reply_t *r, void *ud) {
  call_t *c = ud;
  size_t i;
  note(c, status, r);
  if (status != 0) {
    finish(c, status, NULL, NULL, 0, NULL, NULL);
    return;
  }
  if (c->n_all + r->n_items > c->cap_all) {
    size_t cap = (c->cap_all ? c->cap_all * 2 : 64) + r->n_items;
    char **p = engram_realloc(c->all_keys, cap * sizeof *p);
    if (p == NULL) {
      fail(c, ENGRAM_ENOMEM, "out of memory");
      return;
    }
    c->all_keys = p;
    c->cap_all = cap;
  }
  for (i = 0; i < r->n_items; i++) {
    if ((c->all_keys[c->n_all] = engram_strdup(r->items[i].key)) == NULL) {
      fail(c, ENGRAM_ENOMEM, "out of memory");
      return;
    }
    c->n_all++;
  }
  engram_free(c->list_cursor);
  c->list_cursor = r->cursor ? engram_strdup(r->cursor) : NULL;
  if (r->cursor && c->list_cursor == NULL) {
    fail(c, ENGRAM_ENOMEM, "out of memory");
    return;
  }
  if (c->list_cursor != NULL) list_keys_page(c);
  else list_heads(c);
}

static void list_keys_page(call_t *c) {
  int rc = engram_list_keys(c->mgr, TH_HEAD_PREFIX "*", LIST_PAGE, c->list_cursor, &c->o, on_list_keys, c);
  if (rc != 0) fail(c, rc, "threads: %s", engram_last_error());
}

int engram_thread_list(engram_manager_t *mgr, int limit, const char *cursor, const engram_opts_t *opts, engram_cb cb,
                       void *ud) {
  call_t *c;
  int64_t upd = 0;
  const char *p;
  int rc;
  engram__error_clear();
  if (mgr == NULL) return engram__error(ENGRAM_EINVAL, "mgr: NULL");
  if (cb == NULL) return engram__error(ENGRAM_EINVAL, "cb: NULL");
  if (limit < 1 || limit > ENGRAM_THREAD_PAGE_MAX)
    return engram__error(ENGRAM_EINVAL, "limit: %d, must be 1..%d", limit, ENGRAM_THREAD_PAGE_MAX);
  if (cursor != NULL) {
    char q[80];
    for (p = cursor; *p >= '0' && *p <= '9' && p - cursor < 18; p++) upd = upd * 10 + (*p - '0');
    if (p == cursor || *p != ':' || check_id(p + 1) != 0)
      return engram__error(ENGRAM_EINVAL, "cursor: \"%s\" is not a cursor of engram_thread_list",
                           engram__quote(q, sizeof q, cursor));
  }
  if ((c = call_new(mgr, ENGRAM_OP_THREAD_LIST, NULL, opts, cb, ud)) == NULL || (c->threads = cJSON_CreateArray()) == NULL ||
      (cursor && (c->cursor_in = engram_strdup(cursor)) == NULL)) {
    call_free(c);
    return engram__error(ENGRAM_ENOMEM, "out of memory");
  }
  c->limit = limit;
  if (cursor) {
    c->cur_updated = upd;
    snprintf(c->cur_id, sizeof c->cur_id, "%s", strchr(cursor, ':') + 1);
  }
  rc = engram_list_keys(mgr, TH_HEAD_PREFIX "*", LIST_PAGE, NULL, &c->o, on_list_keys, c);
  if (rc != 0) call_free(c);
  return rc;
}
