/*
 * thread_summary.c — the summary job of a window (thread_summary.h; the contract is engram_summarize_fn and
 * engram_summary_complete in include/engram/thread.h).
 *
 * A job starts after a window's callback has run, when the window left out messages its summary does not cover:
 * one retrieve_many of those messages (with the window's source, namespace, deadline and completion queue), then
 * the caller's summariser with the messages that are there (gaps skipped). The summariser answers through
 * engram_summary_complete, from any thread, now or later: a failure frees the job and changes nothing; a summary
 * is written by engram_update of the summary item with a function that keeps the stored summary when it already
 * covers as much (the higher last_seq wins), then — for a thread with a TTL — a store of the same value
 * conditional on the version just written, with the expiry (update has no TTL in the contract yet; the head does
 * the same). Nothing here deletes or rewrites a message.
 *
 * The job is the request handed to the summariser (engram_summary_request_t). Its update input (value to write,
 * last_seq) is the job itself; when the update answers early (deadline, cancellation) the source may still run
 * the function, so the job is then left to it (a small block, as thread_change.c does for the head's update).
 *
 * One job per summary item at a time in a process: a window whose thread already has a job pending (its
 * summariser has not answered yet) starts none, so a slow summariser is not asked the same thing once per
 * window. The pending table is a short list under a mutex, keyed by manager, source, namespace and summary key.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "engram/source.h"
#include "engram/thread.h"
#include "shared/error.h"
#include "shared/json_text.h"
#include "thread/thread_head.h"
#include "thread/thread_summary.h"

struct engram_summary_request_s {
  engram_manager_t *mgr;
  engram_opts_t o;          /* source, ns, deadline_ms, cq */
  char *src, *ns;
  char id[ENGRAM_THREAD_ID_MAX + 1];
  char key[TH_KEY_MAX + 16];
  char **keys;              /* the messages to read */
  size_t n_keys;
  char *prev_text;          /* the summary the job started from, or NULL */
  uint64_t prev_first;      /* its first_seq (0 = none) */
  uint64_t last_seq;        /* the newest number this job covers */
  int64_t ttl_ms;
  engram_summarize_fn fn;
  void *fn_ud;
  cJSON *value;             /* the summary item to write */
  engram_cb cb;             /* engram_summary_complete's */
  void *ud;
  struct pending_s *pending; /* this job's entry in the pending table */
  int fail_status;          /* the summariser's non-zero status, reported by on_failed */
};

/* ---- Pending jobs ---- */

typedef struct pending_s {
  struct pending_s *next;
  size_t len;
  char name[]; /* manager \0 source \0 ns \0 key */
} pending_t;

static pthread_mutex_t pending_lock = PTHREAD_MUTEX_INITIALIZER;
static pending_t *pending_list;

/* Registers name (len bytes); NULL when a job with that name is pending or memory is short. */
static pending_t *pending_take(const char *name, size_t len) {
  pending_t *p, *e = engram_malloc(sizeof *e + len);
  if (e == NULL) return NULL;
  e->len = len;
  memcpy(e->name, name, len);
  pthread_mutex_lock(&pending_lock);
  for (p = pending_list; p != NULL; p = p->next)
    if (p->len == len && memcmp(p->name, name, len) == 0) break;
  if (p == NULL) {
    e->next = pending_list;
    pending_list = e;
  }
  pthread_mutex_unlock(&pending_lock);
  if (p != NULL) {
    engram_free(e);
    return NULL;
  }
  return e;
}

static void pending_release(pending_t *e) {
  pending_t **pp;
  if (e == NULL) return;
  pthread_mutex_lock(&pending_lock);
  for (pp = &pending_list; *pp != NULL && *pp != e; pp = &(*pp)->next) {
  }
  if (*pp == e) *pp = e->next;
  pthread_mutex_unlock(&pending_lock);
  engram_free(e);
}

void th_summary_key(char *buf, size_t size, const char *id, const char *gen) {
  snprintf(buf, size, TH_MSG_PREFIX "%s:%s:" TH_SUMMARY_SUFFIX, id, gen);
}

static uint64_t num_u(const cJSON *o, const char *name) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
  return cJSON_IsNumber(v) && v->valuedouble >= 1 ? (uint64_t)v->valuedouble : 0;
}

int th_summary_parse(const cJSON *v, th_summary_t *s) {
  const cJSON *t = cJSON_GetObjectItemCaseSensitive(v, "summary");
  const cJSON *at = cJSON_GetObjectItemCaseSensitive(v, "created_at_ms");
  memset(s, 0, sizeof *s);
  if (!cJSON_IsObject(v) || !cJSON_IsString(t) || t->valuestring[0] == '\0') return ENGRAM_EINVAL;
  s->text = t->valuestring;
  s->first_seq = num_u(v, "first_seq");
  s->last_seq = num_u(v, "last_seq");
  s->created_at_ms = cJSON_IsNumber(at) ? (int64_t)at->valuedouble : 0;
  if (s->first_seq == 0 || s->last_seq < s->first_seq) return ENGRAM_EINVAL;
  return 0;
}

static void job_free(engram_summary_request_t *j) {
  size_t i;
  if (j == NULL) return;
  pending_release(j->pending);
  for (i = 0; j->keys && i < j->n_keys; i++) engram_free(j->keys[i]);
  engram_free(j->keys);
  engram_free(j->prev_text);
  engram_free(j->src);
  engram_free(j->ns);
  cJSON_Delete(j->value);
  engram_free(j);
}

/* ---- Reading the messages, calling the summariser ---- */

static void on_messages(int status, const engram_reply_t *r, void *ud) {
  engram_summary_request_t *j = ud;
  cJSON *msgs;
  size_t i;
  if (status != 0 || (msgs = cJSON_CreateArray()) == NULL) {
    job_free(j); /* the window has answered; the next window asks again */
    return;
  }
  for (i = 0; i < r->n_items; i++) {
    const cJSON *v = r->items[i].value;
    cJSON *d;
    if (r->items[i].status != 0 || !cJSON_IsObject(v) || !cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(v, "seq")))
      continue; /* a gap */
    if ((d = cJSON_Duplicate(v, 1)) == NULL || !cJSON_AddItemToArray(msgs, d)) {
      cJSON_Delete(d);
      cJSON_Delete(msgs);
      job_free(j);
      return;
    }
  }
  if (msgs->child == NULL) {
    cJSON_Delete(msgs);
    job_free(j);
    return;
  }
  /* The messages are read: the keys are no longer needed, and the summariser may complete (and so free the job)
   * from inside its call. */
  for (i = 0; i < j->n_keys; i++) engram_free(j->keys[i]);
  engram_free(j->keys);
  j->keys = NULL;
  j->n_keys = 0;
  if (j->prev_first == 0) j->prev_first = num_u(msgs->child, "seq");
  j->fn(j, j->id, j->prev_text, msgs, j->fn_ud);
  cJSON_Delete(msgs);
}

int th_summary_start(engram_manager_t *mgr, const engram_opts_t *o, const char *id, const char *gen, int64_t ttl_ms,
                     const uint64_t *seqs, size_t n, const th_summary_t *prev, engram_summarize_fn fn, void *fn_ud) {
  engram_summary_request_t *j = engram_calloc(1, sizeof *j);
  size_t i;
  int rc;
  if (j == NULL) return ENGRAM_ENOMEM;
  j->mgr = mgr;
  j->fn = fn;
  j->fn_ud = fn_ud;
  j->ttl_ms = ttl_ms;
  j->last_seq = seqs[n - 1];
  snprintf(j->id, sizeof j->id, "%s", id);
  th_summary_key(j->key, sizeof j->key, id, gen);
  if ((o->source && (j->src = engram_strdup(o->source)) == NULL) || (o->ns && (j->ns = engram_strdup(o->ns)) == NULL) ||
      (prev != NULL && (j->prev_text = engram_strdup(prev->text)) == NULL) ||
      (j->keys = engram_calloc(n, sizeof *j->keys)) == NULL) {
    job_free(j);
    return ENGRAM_ENOMEM;
  }
  if (prev != NULL) j->prev_first = prev->first_seq;
  j->o.source = j->src;
  j->o.ns = j->ns;
  j->o.deadline_ms = o->deadline_ms;
  j->o.cq = o->cq;
  {
    char name[2 * ENGRAM_SOURCE_NAME_MAX + ENGRAM_NAMESPACE_MAX + TH_KEY_MAX + 32];
    int len = snprintf(name, sizeof name, "%p%c%s%c%s%c%s", (void *)mgr, 0, o->source ? o->source : "", 0,
                       o->ns ? o->ns : "", 0, j->key);
    if (len < 0 || (size_t)len >= sizeof name || (j->pending = pending_take(name, (size_t)len)) == NULL) {
      job_free(j);
      return ENGRAM_EEXIST; /* pending already (or no memory to tell): this window starts none */
    }
  }
  for (i = 0; i < n; i++, j->n_keys++) {
    char key[TH_KEY_MAX];
    th_msg_key(key, sizeof key, id, gen, seqs[i]);
    if ((j->keys[i] = engram_strdup(key)) == NULL) {
      job_free(j);
      return ENGRAM_ENOMEM;
    }
  }
  rc = engram_retrieve_many(mgr, (const char *const *)j->keys, j->n_keys, &j->o, on_messages, j);
  if (rc != 0) job_free(j);
  return rc;
}

/* ---- Storing the answer ---- */

/* Runs on the source's actor thread: writes the job's summary unless the stored one covers as much. */
static int summary_update(const cJSON *current, cJSON **next, void *ud) {
  engram_summary_request_t *j = ud;
  th_summary_t s;
  if (current != NULL && th_summary_parse(current, &s) == 0 && s.last_seq >= j->last_seq) return ENGRAM_EEXIST;
  *next = cJSON_Duplicate(j->value, 1);
  return *next ? 0 : ENGRAM_ENOMEM;
}

static void report(engram_summary_request_t *j, int status, const engram_reply_t *under, const cJSON *info) {
  engram_reply_t r;
  char msg[400], clean[300];
  if (j->cb != NULL) {
    memset(&r, 0, sizeof r);
    r.op = (engram_op_t)ENGRAM_OP_THREAD_SUMMARY;
    r.source = under ? under->source : j->src;
    r.info = status == 0 ? info : NULL;
    r.count = status == 0;
    if (status == 0) {
      r.message = "";
    } else {
      snprintf(msg, sizeof msg, "thread \"%s\": summary: %s", j->id,
               engram__text_clean(clean, sizeof clean,
                                  under && under->message && under->message[0] ? under->message : engram_strerror(status)));
      r.message = msg;
    }
    j->cb(status, &r, j->ud);
  }
  job_free(j);
}

static void on_touched(int status, const engram_reply_t *r, void *ud) {
  engram_summary_request_t *j = ud;
  /* A conflict: a later summary was written meanwhile and carries its own expiry. */
  report(j, status == ENGRAM_ECONFLICT ? 0 : status, r, j->value);
}

static void on_stored(int status, const engram_reply_t *r, void *ud) {
  engram_summary_request_t *j = ud;
  engram_opts_t o;
  int rc;
  if (status == ENGRAM_ETIMEDOUT || status == ENGRAM_ECANCELED) {
    /* The source may still run summary_update with j: leave j (and the value it reads) to it. */
    engram_summary_request_t *copy = engram_calloc(1, sizeof *copy);
    if (copy == NULL) return; /* nothing can be reported without memory; the job stays with the source */
    *copy = *j;
    copy->value = NULL;
    copy->keys = NULL;
    copy->prev_text = NULL;
    copy->src = NULL;
    copy->ns = NULL;
    j->pending = NULL; /* the copy releases it */
    report(copy, status, r, NULL);
    return;
  }
  if (status != 0 || j->ttl_ms <= 0 || r->n_items < 1) {
    report(j, status, r, j->value);
    return;
  }
  o = j->o;
  o.flags = ENGRAM_OPT_TTL;
  o.ttl_ms = 2 * j->ttl_ms;
  o.if_version = r->items[0].version;
  rc = engram_store(j->mgr, j->key, j->value, &o, on_touched, j);
  if (rc != 0) report(j, rc, NULL, NULL);
}

static void on_failed(int status, const engram_reply_t *r, void *ud) {
  engram_summary_request_t *j = ud;
  (void)status;
  (void)r;
  report(j, j->fail_status, NULL, NULL);
}

int engram_summary_complete(engram_summary_request_t *req, int status, const char *summary, engram_cb cb, void *ud) {
  engram_summary_request_t *j = req;
  size_t len;
  int rc;
  engram__error_clear();
  if (j == NULL) return engram__error(ENGRAM_EINVAL, "req: NULL");
  j->cb = cb;
  j->ud = ud;
  if (status != 0) {
    engram_opts_t lo;
    if (cb == NULL) {
      job_free(j);
      return 0;
    }
    /* Reported through the home loop's control queue (with the window's cq), never from inside this call. */
    memset(&lo, 0, sizeof lo);
    lo.cq = j->o.cq;
    j->fail_status = status;
    rc = engram_manager_list_sources(j->mgr, &lo, on_failed, j);
    if (rc != 0) job_free(j);
    return rc;
  }
  len = summary != NULL ? strlen(summary) : 0;
  if (summary == NULL || len == 0 || len > ENGRAM_SUMMARY_MAX || !engram_utf8_valid(summary, len)) {
    if (summary == NULL) rc = engram__error(ENGRAM_EINVAL, "summary: NULL");
    else if (len == 0) rc = engram__error(ENGRAM_EINVAL, "summary: empty");
    else if (len > ENGRAM_SUMMARY_MAX) rc = engram__error(ENGRAM_EINVAL, "summary: %zu bytes, at most %d", len, ENGRAM_SUMMARY_MAX);
    else rc = engram__error(ENGRAM_EINVAL, "summary: invalid UTF-8");
    job_free(j);
    return rc;
  }
  if ((j->value = cJSON_CreateObject()) == NULL || !cJSON_AddStringToObject(j->value, "summary", summary) ||
      !cJSON_AddNumberToObject(j->value, "first_seq", (double)j->prev_first) ||
      !cJSON_AddNumberToObject(j->value, "last_seq", (double)j->last_seq) ||
      !cJSON_AddNumberToObject(j->value, "created_at_ms", (double)engram_now_ms())) {
    job_free(j);
    return engram__error(ENGRAM_ENOMEM, "out of memory");
  }
  rc = engram_update(j->mgr, j->key, summary_update, j, &j->o, on_stored, j);
  if (rc != 0) job_free(j);
  return rc;
}
