/*
 * embed_openai.c — the "openai" embedder (embed_openai.h): one embed call's texts cut into requests of at most
 * `batch` inputs ("chunks"), at most `concurrency` of them in flight on the source's loop (vector_http.c), their
 * vectors put back in the inputs' order, and one answer to the vector source when every chunk is in — or at
 * the first chunk that fails for good, after which the call's other requests are cancelled.
 *
 * What an answer means (the rules are in docs/sources-vector.md):
 *   - 2xx: the body is read strictly (embed_openai_reply.c); vectors of another length than the source's
 *     dimension end the call with ENGRAM_EDIMENSION, so the source stores nothing.
 *   - 408, 409, 429, 5xx, a timeout or a failed connection: retried up to max_retries times, after the server's
 *     retry-after-ms / retry-after (capped at 60 s) or else a jittered exponential backoff (retry_base_ms ×
 *     2^attempt, at most retry_max_ms, the wait drawn from its upper half). A 429 whose error type or code is
 *     insufficient_quota is not retried: waiting does not buy quota.
 *   - 413, or a 500 saying the input is too large (llama.cpp): the chunk is split in two and both halves are
 *     sent; a single input that is still too large fails the call.
 *   - any other status (400, 401, 403, 404, 422...): the call fails at once with the service's own message.
 * A call whose job the source gave up on (its deadline passed, the source closed) is not retried any further, and is
 * ended (its requests cancelled) the next time the embedder runs, so it does not hold slots a newer call needs.
 * The API key is read from the environment when the source opens; every message this file writes has it
 * blanked out, and URLs are shown without user information or query.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "embed_openai.h"
#include "embed_openai_reply.h"
#include "vector_embed.h"
#include "vector_http.h"

#define RETRY_AFTER_CAP_MS 60000

typedef struct oai_s oai_t;
typedef struct ocall_s ocall_t;
typedef struct chunk_s chunk_t;

struct chunk_s {
  ocall_t *call;
  size_t start, count;
  unsigned attempt;
  uint64_t due;             /* loop time of the next attempt, while waiting */
  engram__http_req_t *req;  /* while active */
  chunk_t *prev, *next;
};

typedef struct {
  chunk_t *head, *tail;
} clist_t;

struct ocall_s {
  oai_t *e;
  const char *const *texts;
  size_t n, dim;            /* dim: the source's dimension */
  engram_embed_done_fn done;
  void *cb_ud;
  float *out;               /* n × dim */
  size_t pending;           /* chunks not finished */
  ocall_t *prev, *next;
};

struct oai_s {
  char *url, *shown_url, *model, *key, *auth;
  size_t dimensions;
  int send_dimensions;
  size_t batch;
  unsigned concurrency, max_retries;
  uint32_t timeout_ms, retry_base_ms, retry_max_ms;
  uv_loop_t *loop;
  engram__http_t *http;
  uv_timer_t *timer;        /* retries; allocated apart, as it closes after the embedder is gone */
  clist_t ready, waiting, active;
  unsigned n_active;
  ocall_t *calls;
  uint64_t rng;
  char *key_env;
  uint64_t n_requests, n_retries, n_splits, n_failed;
};

/* ---- Lists ---- */

static void cl_remove(clist_t *l, chunk_t *c) {
  if (c->prev) c->prev->next = c->next;
  else l->head = c->next;
  if (c->next) c->next->prev = c->prev;
  else l->tail = c->prev;
  c->prev = c->next = NULL;
}

static void cl_push_back(clist_t *l, chunk_t *c) {
  c->next = NULL;
  c->prev = l->tail;
  if (l->tail) l->tail->next = c;
  else l->head = c;
  l->tail = c;
}

static void cl_push_front(clist_t *l, chunk_t *c) {
  c->prev = NULL;
  c->next = l->head;
  if (l->head) l->head->prev = c;
  else l->tail = c;
  l->head = c;
}

/* ---- Messages ---- */

/* Replaces every occurrence of secret in s (capacity cap) with "***", and a start of it (4 bytes or more) that
 * ends s, as a message cut to fit would leave it. */
static void redact(char *s, size_t cap, const char *secret) {
  size_t k = secret ? strlen(secret) : 0, n, l;
  char *p, tmp[1024];
  if (k == 0) return;
  while ((p = strstr(s, secret)) != NULL) {
    size_t len;
    snprintf(tmp, sizeof tmp, "%.*s***%s", (int)(p - s), s, p + k);
    len = strlen(tmp) < cap ? strlen(tmp) : cap - 1;
    memcpy(s, tmp, len);
    s[len] = '\0';
  }
  n = strlen(s);
  for (l = k - 1 < n ? k - 1 : n; l >= 4; l--)
    if (memcmp(s + n - l, secret, l) == 0) {
      snprintf(s + n - l, cap - (n - l), "***");
      break;
    }
}

static int contains_ci(const char *s, const char *needle) {
  size_t n = strlen(needle);
  for (; *s; s++)
    if (strncasecmp(s, needle, n) == 0) return 1;
  return 0;
}

/* ---- Calls ---- */

static void pump(oai_t *e);

static int abandoned(const ocall_t *call) {
  const engram__embed_call_t *ec = engram__embed_call_of(call->cb_ud);
  return ec == NULL || ec->abandoned;
}

static void drop_chunks(oai_t *e, ocall_t *call, clist_t *l, int active) {
  chunk_t *c = l->head, *next;
  for (; c != NULL; c = next) {
    next = c->next;
    if (c->call != call) continue;
    cl_remove(l, c);
    if (active) {
      engram__http_cancel(c->req);
      e->n_active--;
    }
    engram_free(c);
  }
}

/* Ends call: its chunks are dropped (requests cancelled), then done is called once. status 0 hands over the
 * vectors. A failure's message says what went wrong first (the source cuts messages at 255 bytes, and the
 * service's own words matter most), then "; POST <url>"; the API key is blanked out. */
static void call_finish(ocall_t *call, int status, const char *msg) {
  oai_t *e = call->e;
  char text[600];
  drop_chunks(e, call, &e->ready, 0);
  drop_chunks(e, call, &e->waiting, 0);
  drop_chunks(e, call, &e->active, 1);
  if (call->prev) call->prev->next = call->next;
  else e->calls = call->next;
  if (call->next) call->next->prev = call->prev;
  if (status == 0) {
    call->done(call->cb_ud, 0, NULL, call->out, call->dim);
  } else {
    if (status == ENGRAM_ECANCELED) snprintf(text, sizeof text, "%s", msg ? msg : engram_strerror(status));
    else snprintf(text, sizeof text, "%s; POST %s", msg ? msg : engram_strerror(status), e->shown_url);
    redact(text, sizeof text, e->key);
    e->n_failed++;
    call->done(call->cb_ud, status, text, NULL, call->dim);
  }
  engram_free(call->out);
  engram_free(call);
}

static uint64_t backoff_ms(oai_t *e, unsigned attempt) {
  uint64_t d = e->retry_base_ms;
  unsigned i;
  for (i = 0; i < attempt && d < e->retry_max_ms; i++) d *= 2;
  if (d > e->retry_max_ms) d = e->retry_max_ms;
  e->rng ^= e->rng << 13, e->rng ^= e->rng >> 7, e->rng ^= e->rng << 17; /* xorshift64 */
  return d / 2 + e->rng % (d - d / 2 + 1);
}

static void on_retry_timer(uv_timer_t *t);

static void arm_retry_timer(oai_t *e) {
  chunk_t *c;
  uint64_t first = UINT64_MAX, now = uv_now(e->loop);
  for (c = e->waiting.head; c != NULL; c = c->next)
    if (c->due < first) first = c->due;
  if (first == UINT64_MAX) uv_timer_stop(e->timer);
  else uv_timer_start(e->timer, on_retry_timer, first > now ? first - now : 0, 0);
}

static void on_retry_timer(uv_timer_t *t) {
  oai_t *e = t->data;
  uint64_t now = uv_now(e->loop);
  chunk_t *c = e->waiting.head, *next;
  for (; c != NULL; c = next) {
    next = c->next;
    if (c->due > now) continue;
    cl_remove(&e->waiting, c);
    cl_push_front(&e->ready, c);
  }
  arm_retry_timer(e);
  pump(e);
}

/* Retries chunk c (taken off every list) after retry_after_ms (-1: the backoff), or fails its call. */
static void retry_or_fail(oai_t *e, chunk_t *c, int64_t retry_after_ms, const char *msg) {
  ocall_t *call = c->call;
  char text[600];
  uint64_t delay;
  if (c->attempt >= e->max_retries) {
    snprintf(text, sizeof text, "%s (gave up after %u %s)", msg, c->attempt, c->attempt == 1 ? "retry" : "retries");
    engram_free(c);
    call_finish(call, ENGRAM_EEMBED, text);
    return;
  }
  if (abandoned(call)) {
    engram_free(c);
    call_finish(call, ENGRAM_ECANCELED, "the call was given up (deadline or close) while retrying");
    return;
  }
  delay = retry_after_ms >= 0 ? (uint64_t)(retry_after_ms < RETRY_AFTER_CAP_MS ? retry_after_ms : RETRY_AFTER_CAP_MS)
                              : backoff_ms(e, c->attempt);
  c->attempt++;
  e->n_retries++;
  c->due = uv_now(e->loop) + delay;
  cl_push_back(&e->waiting, c);
  arm_retry_timer(e);
}

/* A 2xx answer for chunk c (off every list). */
static void on_vectors(oai_t *e, chunk_t *c, const engram__http_result_t *res) {
  ocall_t *call = c->call;
  float *vecs;
  size_t dim;
  char msg[400], text[600];
  int rc = engram__oai_parse_embeddings(res->body, res->body_len, c->count, &vecs, &dim, msg, sizeof msg);
  if (rc != 0) {
    snprintf(text, sizeof text, "%s (HTTP %ld)", msg, res->status);
    engram_free(c);
    call_finish(call, rc, text);
    return;
  }
  if (dim != call->dim) {
    snprintf(text, sizeof text, "model '%s' answered vectors of dimension %zu, the source's is %zu", e->model, dim,
             call->dim);
    engram_free(vecs);
    engram_free(c);
    call_finish(call, ENGRAM_EDIMENSION, text);
    return;
  }
  memcpy(call->out + c->start * dim, vecs, c->count * dim * sizeof *vecs);
  engram_free(vecs);
  engram_free(c);
  if (--call->pending == 0) call_finish(call, 0, NULL);
}

static void on_http(const engram__http_result_t *res, void *ud) {
  chunk_t *c = ud;
  ocall_t *call = c->call;
  oai_t *e = call->e;
  engram__oai_error_t err;
  char msg[600], detail[200];
  long st = res->status;
  cl_remove(&e->active, c);
  c->req = NULL;
  e->n_active--;
  if (res->curl_code != 0) {
    snprintf(msg, sizeof msg, "%s", res->curl_error);
    if (res->transient) retry_or_fail(e, c, -1, msg);
    else {
      engram_free(c);
      call_finish(call, ENGRAM_EEMBED, msg);
    }
  } else if (st >= 200 && st < 300) {
    on_vectors(e, c, res);
  } else {
    engram__oai_parse_error(res->body, res->body_len, &err);
    redact(err.message, sizeof err.message, e->key); /* before more text follows what may be a cut key */
    detail[0] = '\0';
    if (err.type[0] || err.code[0])
      snprintf(detail, sizeof detail, " (%s%s%s)", err.type, err.type[0] && err.code[0] ? ", " : "", err.code);
    snprintf(msg, sizeof msg, "HTTP %ld: %s%s", st, err.message[0] ? err.message : "no message",
             detail);
    if (st == 413 || (st == 500 && (contains_ci(err.message, "too large") || contains_ci(err.message, "too long")))) {
      if (c->count > 1) { /* split: both halves go first */
        chunk_t *half = engram_calloc(1, sizeof *half);
        if (half == NULL) {
          engram_free(c);
          call_finish(call, ENGRAM_ENOMEM, "out of memory");
          return;
        }
        half->call = call;
        half->count = c->count - c->count / 2;
        c->count /= 2;
        half->start = c->start + c->count;
        c->attempt = 0;
        call->pending++;
        e->n_splits++;
        cl_push_front(&e->ready, half);
        cl_push_front(&e->ready, c);
      } else {
        char text[700];
        snprintf(text, sizeof text, "input %zu of the call is too large for the service: %s", c->start, msg);
        engram_free(c);
        call_finish(call, ENGRAM_EEMBED, text);
      }
    } else if (st == 429 && (strcmp(err.type, "insufficient_quota") == 0 || strcmp(err.code, "insufficient_quota") == 0)) {
      engram_free(c);
      call_finish(call, ENGRAM_EEMBED, msg);
    } else if (st == 408 || st == 409 || st == 429 || st >= 500) {
      retry_or_fail(e, c, res->retry_after_ms, msg);
    } else {
      engram_free(c);
      call_finish(call, ENGRAM_EEMBED, msg);
    }
  }
  pump(e);
}

static int start_chunk(oai_t *e, chunk_t *c, const char **why) {
  ocall_t *call = c->call;
  const char *headers[5];
  char *body;
  int nh = 0;
  body = engram__oai_request_body(e->model, call->texts + c->start, c->count, e->send_dimensions ? e->dimensions : 0);
  *why = "out of memory";
  if (body == NULL) return ENGRAM_ENOMEM;
  headers[nh++] = "Content-Type: application/json";
  headers[nh++] = "Accept: application/json";
  headers[nh++] = "Expect:";
  if (e->auth) headers[nh++] = e->auth;
  headers[nh] = NULL;
  c->req = engram__http_post(e->http, e->url, headers, body, strlen(body), e->timeout_ms, on_http, c, why);
  cJSON_free(body);
  if (c->req == NULL) return ENGRAM_ENOMEM;
  cl_remove(&e->ready, c);
  cl_push_back(&e->active, c);
  e->n_active++;
  e->n_requests++;
  return 0;
}

/* Ends the calls the source gave up on (deadline, close), cancelling their requests, so that they do not hold
 * the concurrency slots a newer call needs. */
static void sweep_abandoned(oai_t *e) {
  ocall_t *call = e->calls;
  while (call != NULL) {
    if (abandoned(call)) {
      call_finish(call, ENGRAM_ECANCELED, "the call was given up (deadline or close)");
      call = e->calls; /* finishing changed the list: start again */
    } else {
      call = call->next;
    }
  }
}

/* Starts ready chunks while there is room. */
static void pump(oai_t *e) {
  chunk_t *c;
  sweep_abandoned(e);
  while (e->n_active < e->concurrency && (c = e->ready.head) != NULL) {
    const char *why = NULL;
    if (abandoned(c->call)) {
      call_finish(c->call, ENGRAM_ECANCELED, "the call was given up (deadline or close) before it was sent");
      continue;
    }
    if (start_chunk(e, c, &why) != 0) {
      char text[300];
      snprintf(text, sizeof text, "%s", why ? why : "out of memory");
      call_finish(c->call, ENGRAM_EEMBED, text);
    }
  }
}

static void oai_embed(const engram_embedder_t *self, const char *const *texts, size_t n, engram_embed_done_fn done,
                      void *cb_ud) {
  oai_t *e = self->ud;
  ocall_t *call;
  size_t start;
  if (e->http == NULL) {
    uv_loop_t *loop = engram_embed_loop(cb_ud);
    int rc;
    if (loop == NULL || (e->timer = engram_malloc(sizeof *e->timer)) == NULL) {
      done(cb_ud, ENGRAM_ENOMEM, "out of memory", NULL, 0);
      return;
    }
    if ((rc = engram__http_new(&e->http, loop)) != 0) {
      engram_free(e->timer);
      e->timer = NULL;
      done(cb_ud, rc, rc == ENGRAM_ENOMEM ? "out of memory" : "libcurl could not be initialized", NULL, 0);
      return;
    }
    e->loop = loop;
    uv_timer_init(loop, e->timer);
    e->timer->data = e;
  }
  if ((call = engram_calloc(1, sizeof *call)) == NULL ||
      (call->out = engram_malloc(n * engram_embed_dimension(cb_ud) * sizeof(float) + 1)) == NULL) {
    engram_free(call);
    done(cb_ud, ENGRAM_ENOMEM, "out of memory", NULL, 0);
    return;
  }
  call->e = e;
  call->texts = texts;
  call->n = n;
  call->dim = engram_embed_dimension(cb_ud);
  call->done = done;
  call->cb_ud = cb_ud;
  call->next = e->calls;
  if (e->calls) e->calls->prev = call;
  e->calls = call;
  for (start = 0; start < n; start += e->batch) {
    chunk_t *c = engram_calloc(1, sizeof *c);
    if (c == NULL) {
      call_finish(call, ENGRAM_ENOMEM, "out of memory");
      return;
    }
    c->call = call;
    c->start = start;
    c->count = n - start < e->batch ? n - start : e->batch;
    call->pending++;
    cl_push_back(&e->ready, c);
  }
  pump(e);
}

/* ---- Creation and destruction ---- */

static void free_handle(uv_handle_t *h) { engram_free(h); }

static void wipe_free(char *s) {
  if (s == NULL) return;
  {
    volatile char *p = s;
    while (*p) *p++ = '\0';
  }
  engram_free(s);
}

static void oai_destroy(void *ud) {
  oai_t *e = ud;
  while (e->calls != NULL) call_finish(e->calls, ENGRAM_ECANCELED, "the source closed");
  engram__http_free(e->http);
  if (e->timer != NULL) {
    uv_timer_stop(e->timer);
    uv_close((uv_handle_t *)e->timer, free_handle);
  }
  engram_free(e->url);
  engram_free(e->shown_url);
  engram_free(e->model);
  engram_free(e->key_env);
  wipe_free(e->key);
  wipe_free(e->auth);
  engram_free(e);
}

int engram__openai_info(void *ud, cJSON *into) {
  const oai_t *e = ud;
  cJSON *o = cJSON_AddObjectToObject(into, "embedder_service");
  if (o == NULL || !cJSON_AddStringToObject(o, "url", e->shown_url) || !cJSON_AddStringToObject(o, "model", e->model) ||
      !cJSON_AddNumberToObject(o, "dimensions", (double)e->dimensions) ||
      !cJSON_AddNumberToObject(o, "batch", (double)e->batch) ||
      !cJSON_AddNumberToObject(o, "concurrency", e->concurrency) ||
      !cJSON_AddNumberToObject(o, "timeout_ms", e->timeout_ms) ||
      !cJSON_AddNumberToObject(o, "max_retries", e->max_retries) ||
      (e->key_env && !cJSON_AddStringToObject(o, "api_key_env", e->key_env)) ||
      !cJSON_AddNumberToObject(o, "requests", (double)e->n_requests) ||
      !cJSON_AddNumberToObject(o, "retries", (double)e->n_retries) ||
      !cJSON_AddNumberToObject(o, "splits", (double)e->n_splits) ||
      !cJSON_AddNumberToObject(o, "failed_calls", (double)e->n_failed) ||
      !cJSON_AddNumberToObject(o, "in_flight", e->n_active))
    return ENGRAM_ENOMEM;
  return 0;
}

/* url without user information ("user:pass@") and without query or fragment. */
static char *shown(const char *url) {
  const char *host = strstr(url, "://"), *at, *end;
  char *out;
  size_t n;
  host = host ? host + 3 : url;
  end = host + strcspn(host, "/?#");
  at = memchr(host, '@', (size_t)(end - host));
  n = strcspn(url, "?#");
  if ((out = engram_malloc(n + 1)) == NULL) return NULL;
  if (at != NULL) {
    size_t pre = (size_t)(host - url);
    memcpy(out, url, pre);
    memcpy(out + pre, at + 1, n - (size_t)(at + 1 - url));
    out[pre + n - (size_t)(at + 1 - url)] = '\0';
  } else {
    memcpy(out, url, n);
    out[n] = '\0';
  }
  return out;
}

static const char *const known[] = {"type", "url", "model", "dimensions", "send_dimensions", "api_key_env", "batch",
                                    "concurrency", "timeout_ms", "max_retries", "retry_base_ms", "retry_max_ms", NULL};

#define FAIL(...)                         \
  do {                                    \
    snprintf(err, errlen, __VA_ARGS__);   \
    oai_destroy(e);                       \
    return ENGRAM_EINVAL;                 \
  } while (0)

int engram__openai_embedder_new(const cJSON *cfg, engram_embedder_t *out, char *name, size_t name_len, char *err,
                                size_t errlen) {
  oai_t *e = engram_calloc(1, sizeof *e);
  char why[300];
  const char *url, *model, *env = NULL;
  uint64_t u;
  size_t n;
  memset(out, 0, sizeof *out);
  if (e == NULL) {
    snprintf(err, errlen, "out of memory");
    return ENGRAM_ENOMEM;
  }
  if (engram_opt_check_names(cfg, known, why, sizeof why) != 0) FAIL("embedder: %s", why);
  if (engram_opt_string(cfg, "url", NULL, 4096, &url, why, sizeof why) != 0) FAIL("embedder %s", why);
  if (url == NULL) FAIL("embedder option \"url\": required (e.g. \"http://localhost:11434/v1\")");
  if (strncasecmp(url, "http://", 7) != 0 && strncasecmp(url, "https://", 8) != 0)
    FAIL("embedder option \"url\": must be an http:// or https:// URL");
  if (engram_opt_string(cfg, "model", NULL, 256, &model, why, sizeof why) != 0) FAIL("embedder %s", why);
  if (model == NULL) FAIL("embedder option \"model\": required (e.g. \"text-embedding-3-small\")");
  if (engram_opt_uint(cfg, "dimensions", 0, 1, ENGRAM_EMBED_DIMENSION_MAX, &u, why, sizeof why) != 0)
    FAIL("embedder %s", why);
  if (u == 0) FAIL("embedder option \"dimensions\": required (the length of the model's vectors, e.g. 1536)");
  e->dimensions = (size_t)u;
  if (engram_opt_bool(cfg, "send_dimensions", 0, &e->send_dimensions, why, sizeof why) != 0) FAIL("embedder %s", why);
  if (engram_opt_uint(cfg, "batch", 64, 1, 4096, &u, why, sizeof why) != 0) FAIL("embedder %s", why);
  e->batch = (size_t)u;
  if (engram_opt_uint(cfg, "concurrency", 4, 1, 64, &u, why, sizeof why) != 0) FAIL("embedder %s", why);
  e->concurrency = (unsigned)u;
  if (engram_opt_uint(cfg, "timeout_ms", 30000, 1, 600000, &u, why, sizeof why) != 0) FAIL("embedder %s", why);
  e->timeout_ms = (uint32_t)u;
  if (engram_opt_uint(cfg, "max_retries", 4, 0, 100, &u, why, sizeof why) != 0) FAIL("embedder %s", why);
  e->max_retries = (unsigned)u;
  if (engram_opt_uint(cfg, "retry_base_ms", 500, 1, 60000, &u, why, sizeof why) != 0) FAIL("embedder %s", why);
  e->retry_base_ms = (uint32_t)u;
  if (engram_opt_uint(cfg, "retry_max_ms", 20000, 1, 600000, &u, why, sizeof why) != 0) FAIL("embedder %s", why);
  e->retry_max_ms = (uint32_t)u < e->retry_base_ms ? e->retry_base_ms : (uint32_t)u;
  if (engram_opt_string(cfg, "api_key_env", NULL, 256, &env, why, sizeof why) != 0) FAIL("embedder %s", why);
  if (env != NULL) {
    const char *key = getenv(env);
    if (key == NULL || key[0] == '\0')
      FAIL("embedder option \"api_key_env\": the environment variable %s is not set (it must hold the API key)", env);
    if (strpbrk(key, "\r\n") != NULL)
      FAIL("embedder option \"api_key_env\": the environment variable %s holds a line break", env);
    n = strlen(key) + sizeof "Authorization: Bearer ";
    if ((e->key = engram_strdup(key)) == NULL || (e->auth = engram_malloc(n)) == NULL ||
        (e->key_env = engram_strdup(env)) == NULL)
      goto nomem;
    snprintf(e->auth, n, "Authorization: Bearer %s", key);
  }
  /* A base URL ("…/v1") gets the endpoint appended (before any query, which is kept: Azure's api-version); a URL
   * already naming it is used as it is. */
  n = strcspn(url, "?#");
  {
    size_t base = n, cap = strlen(url) + sizeof "/embeddings";
    while (base > 0 && url[base - 1] == '/') base--;
    if ((e->url = engram_malloc(cap)) != NULL) {
      if (base >= 11 && strncmp(url + base - 11, "/embeddings", 11) == 0) snprintf(e->url, cap, "%s", url);
      else snprintf(e->url, cap, "%.*s/embeddings%s", (int)base, url, url + n);
    }
  }
  if (e->url == NULL || (e->shown_url = shown(e->url)) == NULL || (e->model = engram_strdup(model)) == NULL) goto nomem;
  e->rng = (uint64_t)uv_hrtime() | 1;
  snprintf(name, name_len, "openai:%s", model);
  out->dimension = e->dimensions;
  out->max_batch = 0;
  out->ud = e;
  out->embed = oai_embed;
  out->destroy = oai_destroy;
  return 0;
nomem:
  oai_destroy(e);
  snprintf(err, errlen, "out of memory");
  return ENGRAM_ENOMEM;
}
