/*
 * test_embed_http.c — the vector source's "openai" embedder against a local server speaking the real
 * POST /v1/embeddings wire format, written here: plain sockets on 127.0.0.1 (an ephemeral port), a thread that
 * accepts and a thread per connection, vectors derived from each input's text (so a search for a stored text
 * finds its key with score 1), and a script of faults: statuses with bodies and headers for the first n
 * requests (429 with retry-after, 500, 401, insufficient_quota, the error bodies of Ollama, TEI and llama.cpp),
 * 413 above a batch size (or llama.cpp's "too large" 500), slow answers, malformed JSON, the wrong dimension,
 * a partial batch, answers in reverse order. Connection refused uses a port nobody listens on.
 *
 * Each test checks that its call ends exactly once (capture_cb counts; ctx_close asserts no stray callback),
 * with the right status and message or after the retries succeed, how many requests the server saw, and that
 * a failed write stored nothing (retrieve says not found, and a search does not return the key). Backoffs are
 * a few milliseconds (options), so the whole program runs in a few seconds; waits are on conditions.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdatomic.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "engram/vector.h"
#include "support/harness.h"

#define DIM 16
#define SECRET "sk-test-5ecr3t-key-0123456789"

/* ---- The server ---- */

/* What the server saw since the last script_reset. Tests read a copy (seen()), never S under its lock: a failed
 * assertion jumps out of the test, and a mutex left locked would hang the next one. */
typedef struct {
  int requests;
  int max_busy;        /* most requests being answered at once (read, not yet answered) */
  size_t batches[512]; /* inputs per request */
  int n_batches;
  char auth[256], path[128], model[64];
  int dimensions_sent; /* the last request's "dimensions", 0 when absent */
  int float_format;    /* the last request asked for "encoding_format": "float" */
} seen_t;

typedef struct {
  int fd, port;
  pthread_t thread;
  atomic_int stop;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  /* Under mu. */
  seen_t seen;
  int conns, busy;
  /* The script (under mu). */
  int fail_count, fail_status;
  char fail_body[512], fail_headers[256];
  size_t too_large_over; /* > 0: inputs beyond this many are refused */
  int too_large_500;     /* refuse as llama.cpp does (500 "input is too large"), else 413 */
  int dim, partial, malformed, reverse, delay_ms;
  int close_conns; /* answer with Connection: close (else keep-alive) */
} server_t;

static server_t S;
static char URL[128];

static void script_reset(void) {
  pthread_mutex_lock(&S.mu);
  memset(&S.seen, 0, sizeof S.seen);
  S.fail_count = S.fail_status = 0;
  S.fail_body[0] = S.fail_headers[0] = '\0';
  S.too_large_over = 0;
  S.too_large_500 = S.partial = S.malformed = S.reverse = S.delay_ms = S.close_conns = 0;
  S.dim = DIM;
  pthread_mutex_unlock(&S.mu);
}

static seen_t seen(void) {
  seen_t w;
  pthread_mutex_lock(&S.mu);
  w = S.seen;
  pthread_mutex_unlock(&S.mu);
  return w;
}

static int requests_seen(void) { return seen().requests; }

/* The vector of a text: xorshift floats seeded by its FNV-1a hash. */
static void text_vector(const char *t, float *out, int dim) {
  uint64_t h = 1469598103934665603ull;
  int i;
  for (; *t; t++) h = (h ^ (unsigned char)*t) * 1099511628211ull;
  for (i = 0; i < dim; i++) {
    h ^= h << 13, h ^= h >> 7, h ^= h << 17;
    out[i] = (float)((double)(h >> 11) / 9007199254740992.0 * 2.0 - 1.0);
  }
}

static void send_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
    if (k <= 0) return;
    p += k;
    n -= (size_t)k;
  }
}

static void respond(int fd, int status, const char *headers, const char *body, int keep) {
  char head[512];
  int n = snprintf(head, sizeof head,
                   "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %zu\r\nConnection: %s\r\n%s\r\n",
                   status, strlen(body), keep ? "keep-alive" : "close", headers ? headers : "");
  char *all = malloc((size_t)n + strlen(body) + 1); /* one write: no Nagle wait between head and body */
  memcpy(all, head, (size_t)n);
  strcpy(all + n, body);
  send_all(fd, all, (size_t)n + strlen(body));
  free(all);
}

/* Reads one request; returns its body (malloc'd) or NULL. */
static char *read_request(int fd, char *auth, size_t auth_len, char *path, size_t path_len) {
  size_t cap = 1 << 16, len = 0, need = 0, hdr = 0;
  char *buf = malloc(cap + 1), *body;
  for (;;) {
    ssize_t k;
    if (len == cap) {
      cap *= 2;
      buf = realloc(buf, cap + 1);
    }
    k = recv(fd, buf + len, cap - len, 0);
    if (k <= 0) {
      free(buf);
      return NULL;
    }
    len += (size_t)k;
    buf[len] = '\0';
    if (hdr == 0) {
      char *end = strstr(buf, "\r\n\r\n"), *cl, *line;
      if (end == NULL) continue;
      hdr = (size_t)(end - buf) + 4;
      cl = strcasestr(buf, "\r\nContent-Length:");
      need = cl ? (size_t)strtoul(cl + 17, NULL, 10) : 0;
      line = strcasestr(buf, "\r\nAuthorization:");
      if (line != NULL && line < end) {
        line += 17;
        while (*line == ' ') line++;
        snprintf(auth, auth_len, "%.*s", (int)strcspn(line, "\r"), line);
      }
      snprintf(path, path_len, "%.*s", (int)strcspn(buf, "\r"), buf);
    }
    if (len >= hdr + need) break;
  }
  body = strndup(buf + hdr, need);
  free(buf);
  return body;
}

static char *embeddings_body(cJSON *input, int dim, int partial, int reverse) {
  int n = cJSON_GetArraySize(input), i, k;
  size_t cap = (size_t)n * (size_t)dim * 16 + 256, len = 0;
  char *out = malloc(cap);
  float v[256];
  len += (size_t)snprintf(out + len, cap - len, "{\"object\":\"list\",\"data\":[");
  for (k = 0; k < n - partial; k++) {
    int j, idx = reverse ? n - 1 - k : k;
    text_vector(cJSON_GetArrayItem(input, idx)->valuestring, v, dim);
    len += (size_t)snprintf(out + len, cap - len, "%s{\"object\":\"embedding\",\"index\":%d,\"embedding\":[", k ? "," : "", idx);
    for (j = 0; j < dim; j++) len += (size_t)snprintf(out + len, cap - len, "%s%.7g", j ? "," : "", (double)v[j]);
    len += (size_t)snprintf(out + len, cap - len, "]}");
  }
  (void)i;
  snprintf(out + len, cap - len, "],\"model\":\"test-embed\",\"usage\":{\"prompt_tokens\":%d,\"total_tokens\":%d}}", n, n);
  return out;
}

/* Answers one request on fd; returns 0, or -1 when the client closed the connection (or sent nothing useful). */
static int serve_one(int fd) {
  char auth[256] = "", path[128] = "";
  char *req = read_request(fd, auth, sizeof auth, path, sizeof path), *body = NULL;
  cJSON *json = req ? cJSON_Parse(req) : NULL, *input = json ? cJSON_GetObjectItem(json, "input") : NULL;
  int status = 200, delay, n = input ? cJSON_GetArraySize(input) : 0, keep;
  char headers[256] = "";
  if (req == NULL) return -1;
  pthread_mutex_lock(&S.mu);
  S.seen.requests++;
  if (++S.busy > S.seen.max_busy) S.seen.max_busy = S.busy;
  if (S.seen.n_batches < 512) S.seen.batches[S.seen.n_batches++] = (size_t)n;
  snprintf(S.seen.auth, sizeof S.seen.auth, "%s", auth);
  snprintf(S.seen.path, sizeof S.seen.path, "%s", path);
  if (json != NULL) {
    cJSON *m = cJSON_GetObjectItem(json, "model"), *d = cJSON_GetObjectItem(json, "dimensions");
    cJSON *f = cJSON_GetObjectItem(json, "encoding_format");
    snprintf(S.seen.model, sizeof S.seen.model, "%s", cJSON_IsString(m) ? m->valuestring : "");
    S.seen.dimensions_sent = cJSON_IsNumber(d) ? d->valueint : 0;
    S.seen.float_format = cJSON_IsString(f) && strcmp(f->valuestring, "float") == 0;
  }
  delay = S.delay_ms;
  keep = !S.close_conns;
  if (input == NULL) {
    status = 400;
    body = strdup("{\"error\":{\"message\":\"no input\",\"type\":\"invalid_request_error\"}}");
  } else if (S.fail_count > 0) {
    S.fail_count--;
    status = S.fail_status;
    body = strdup(S.fail_body);
    snprintf(headers, sizeof headers, "%s", S.fail_headers);
  } else if (S.too_large_over > 0 && (size_t)n > S.too_large_over) {
    status = S.too_large_500 ? 500 : 413;
    body = strdup(S.too_large_500 ? "{\"error\":{\"code\":500,\"message\":\"input is too large to process. increase the "
                                    "physical batch size\",\"type\":\"server_error\"}}"
                                  : "{\"error\":\"Payload Too Large\",\"error_type\":\"Validation\"}");
  } else if (S.malformed) {
    body = strdup("{\"object\":\"list\",\"data\":[{\"index\":0,\"embedding\":[0.1,");
  } else {
    body = embeddings_body(input, S.dim, S.partial, S.reverse);
  }
  pthread_mutex_unlock(&S.mu);
  if (delay > 0) usleep((useconds_t)delay * 1000);
  pthread_mutex_lock(&S.mu);
  S.busy--; /* before the answer: the client cannot start another request in this slot until it has it */
  pthread_mutex_unlock(&S.mu);
  respond(fd, status, headers, body, keep);
  free(body);
  cJSON_Delete(json);
  free(req);
  return keep ? 0 : -1;
}

/* A connection: requests one after the other (keep-alive, as the real services), until the client closes it. */
static void *conn_main(void *arg) {
  int fd = (int)(intptr_t)arg;
  while (serve_one(fd) == 0) {
  }
  close(fd);
  pthread_mutex_lock(&S.mu);
  S.conns--;
  pthread_cond_broadcast(&S.cv);
  pthread_mutex_unlock(&S.mu);
  return NULL;
}

static void *accept_main(void *arg) {
  (void)arg;
  while (!S.stop) {
    struct pollfd p = {S.fd, POLLIN, 0};
    pthread_t t;
    int c;
    if (poll(&p, 1, 50) <= 0) continue;
    if ((c = accept(S.fd, NULL, NULL)) < 0) continue;
    pthread_mutex_lock(&S.mu);
    S.conns++;
    pthread_mutex_unlock(&S.mu);
    if (pthread_create(&t, NULL, conn_main, (void *)(intptr_t)c) == 0) pthread_detach(t);
  }
  return NULL;
}

/* A port on 127.0.0.1 that nobody listens on (bound, then closed). */
static int free_port(int *fd_out) {
  struct sockaddr_in a;
  socklen_t len = sizeof a;
  int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || getsockname(fd, (struct sockaddr *)&a, &len) != 0) return -1;
  *fd_out = fd;
  return ntohs(a.sin_port);
}

static int server_start(void) {
  pthread_mutex_init(&S.mu, NULL);
  pthread_cond_init(&S.cv, NULL);
  if ((S.port = free_port(&S.fd)) < 0 || listen(S.fd, 64) != 0) return -1;
  snprintf(URL, sizeof URL, "http://127.0.0.1:%d/v1", S.port);
  script_reset();
  return pthread_create(&S.thread, NULL, accept_main, NULL);
}

static void server_stop(void) {
  struct timespec until;
  S.stop = 1;
  pthread_join(S.thread, NULL);
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += 20;
  pthread_mutex_lock(&S.mu);
  while (S.conns > 0 && pthread_cond_timedwait(&S.cv, &S.mu, &until) == 0) {
  }
  pthread_mutex_unlock(&S.mu);
  close(S.fd);
}

/* ---- Helpers ---- */

/* Adds source "v" with the openai embedder at url; extra is appended inside the embedder object. */
static int add_openai(ctx_t *c, const char *url, const char *extra, result_t *r) {
  char opts[1024];
  snprintf(opts, sizeof opts,
           "{\"embed_timeout_ms\": 20000, \"embedder\": {\"type\": \"openai\", \"url\": \"%s\", \"model\": "
           "\"test-embed\", \"dimensions\": %d, \"retry_base_ms\": 5, \"retry_max_ms\": 40%s}}",
           url, DIM, extra ? extra : "");
  result_reset(r);
  assert_int_equal(engram_manager_add_source(c->mgr, "v", &engram_source_vector, opts, "test", 1, capture_cb, r), 0);
  wait_for(c, &r->calls, 1, 30000);
  return r->status;
}

static void open_ok(ctx_t *c, const char *extra) {
  result_t r = {0};
  ctx_init(c, NULL);
  if (add_openai(c, URL, extra, &r) != 0) fail_msg("add_source: %s", r.message);
  result_reset(&r);
}

/* Searches for text; returns the rank of key among the results (-1 when absent). */
static int rank_of(ctx_t *c, const char *text, const char *key, double *score) {
  engram_query_t q = ENGRAM_QUERY_INIT;
  result_t r = {0};
  size_t i;
  int rank = -1;
  q.text = text;
  q.limit = 20;
  script_reset();
  assert_int_equal(s_search(c, &q, NULL, &r), 0);
  for (i = 0; i < r.n_items; i++)
    if (strcmp(result_key(&r, i), key) == 0) {
      rank = (int)i;
      if (score) *score = cJSON_GetNumberValue(result_item(&r, i, "score"));
      break;
    }
  result_reset(&r);
  return rank;
}

/* The key is neither retrievable nor found by a search for its text. */
static void assert_absent(ctx_t *c, const char *key, const char *text) {
  result_t r = {0};
  script_reset();
  assert_int_equal(s_retrieve(c, key, NULL, &r), ENGRAM_ENOTFOUND);
  result_reset(&r);
  assert_int_equal(rank_of(c, text, key, NULL), -1);
}

static void fail_with(int count, int status, const char *headers, const char *body) {
  script_reset();
  pthread_mutex_lock(&S.mu);
  S.fail_count = count;
  S.fail_status = status;
  snprintf(S.fail_headers, sizeof S.fail_headers, "%s", headers ? headers : "");
  snprintf(S.fail_body, sizeof S.fail_body, "%s", body);
  pthread_mutex_unlock(&S.mu);
}

static int store_many_texts(ctx_t *c, const char *prefix, int n, result_t *r) {
  engram_entry_t e[64];
  cJSON *vals[64];
  char keys[64][32], text[64];
  int i, rc;
  for (i = 0; i < n; i++) {
    snprintf(keys[i], sizeof keys[i], "%s%d", prefix, i);
    snprintf(text, sizeof text, "text number %d of %s", i, prefix);
    vals[i] = cJSON_CreateString(text);
    e[i].key = keys[i], e[i].value = vals[i], e[i].metadata = NULL, e[i].has_ttl = 0, e[i].ttl_ms = 0;
  }
  result_reset(r);
  rc = engram_store_many(c->mgr, e, (size_t)n, NULL, capture_cb, r);
  for (i = 0; i < n; i++) cJSON_Delete(vals[i]);
  assert_int_equal(rc, 0);
  wait_for(c, &r->calls, 1, 30000);
  return r->status;
}

/* ---- Tests ---- */

static void batches_concurrency_and_order(void **state) {
  ctx_t c;
  result_t r = {0};
  seen_t w;
  char text[64], key[32];
  double score = 0;
  int i;
  (void)state;
  open_ok(&c, ", \"batch\": 2, \"concurrency\": 3");
  script_reset();
  pthread_mutex_lock(&S.mu);
  S.reverse = 1; /* data in reverse order: the index must put each vector back */
  S.delay_ms = 100;
  pthread_mutex_unlock(&S.mu);
  assert_int_equal(store_many_texts(&c, "b", 11, &r), 0);
  assert_int_equal(r.count, 11);
  w = seen();
  assert_int_equal(w.requests, 6); /* 11 inputs in batches of at most 2 */
  for (i = 0; i < w.n_batches; i++) assert_true(w.batches[i] >= 1 && w.batches[i] <= 2);
  assert_true(w.max_busy <= 3); /* concurrency */
  assert_true(w.max_busy >= 2); /* 100 ms answers: the batches overlapped */
  assert_string_equal(w.path, "POST /v1/embeddings HTTP/1.1");
  assert_string_equal(w.auth, ""); /* no api_key_env: no Authorization header */
  assert_string_equal(w.model, "test-embed");
  assert_int_equal(w.dimensions_sent, 0); /* send_dimensions is off by default */
  assert_true(w.float_format);
  result_reset(&r);
  for (i = 0; i < 11; i++) {
    snprintf(text, sizeof text, "text number %d of b", i);
    snprintf(key, sizeof key, "b%d", i);
    assert_int_equal(rank_of(&c, text, key, &score), 0);
    assert_true(score > 0.999);
  }
  ctx_close(&c);
}

/* 60 stores of 8 texts each plus a store_many of 50 in batches of 3 on 4 connections, on kept-alive connections,
 * then the same on connections closed after every answer: every key stored and found. */
static void many_requests_keep_alive_and_close(void **state) {
  ctx_t c;
  result_t r = {0}, rs[60];
  char keys[60][16], text[64];
  int i, pass;
  (void)state;
  open_ok(&c, ", \"batch\": 3, \"concurrency\": 4");
  for (pass = 0; pass < 2; pass++) {
    script_reset();
    pthread_mutex_lock(&S.mu);
    S.close_conns = pass;
    pthread_mutex_unlock(&S.mu);
    memset(rs, 0, sizeof rs);
    for (i = 0; i < 60; i++) { /* submitted together: they queue on the source and run one after the other */
      cJSON *v;
      snprintf(keys[i], sizeof keys[i], "m%d_%d", pass, i);
      snprintf(text, sizeof text, "stored text %d pass %d", i, pass);
      v = cJSON_CreateString(text);
      assert_int_equal(engram_store(c.mgr, keys[i], v, NULL, capture_cb, &rs[i]), 0);
      cJSON_Delete(v);
    }
    for (i = 0; i < 60; i++) {
      wait_for(&c, &rs[i].calls, 1, 30000);
      assert_int_equal(rs[i].status, 0);
      result_reset(&rs[i]);
    }
    assert_int_equal(store_many_texts(&c, pass ? "mc" : "mk", 50, &r), 0);
    assert_int_equal(r.count, 50);
    result_reset(&r);
    assert_int_equal(requests_seen(), 60 + 17);
    assert_true(seen().max_busy <= 4);
    assert_int_equal(rank_of(&c, "stored text 42 pass 0", "m0_42", NULL), 0);
    assert_int_equal(rank_of(&c, pass ? "text number 49 of mc" : "text number 49 of mk", pass ? "mc49" : "mk49", NULL), 0);
  }
  ctx_close(&c);
}

static void retry_429_with_retry_after(void **state) {
  ctx_t c;
  result_t r = {0};
  uint64_t t0;
  (void)state;
  open_ok(&c, NULL);
  fail_with(2, 429, "retry-after-ms: 30\r\n",
            "{\"error\":{\"message\":\"Rate limit reached\",\"type\":\"requests\",\"code\":\"rate_limit_exceeded\"}}");
  assert_int_equal(s_store(&c, "k", "\"rate limited text\"", NULL, &r), 0);
  assert_int_equal(requests_seen(), 3);
  /* retry-after in seconds is honoured too: one failure, then about a second's wait. */
  fail_with(1, 429, "Retry-After: 1\r\n", "{\"error\":\"slow down\"}");
  t0 = uv_hrtime();
  assert_int_equal(s_store(&c, "k2", "\"second text\"", NULL, &r), 0);
  assert_true(uv_hrtime() - t0 >= 900000000ull);
  assert_int_equal(requests_seen(), 2);
  /* ... and as an HTTP date (a second or two ahead: whole seconds). */
  {
    char hdr[128];
    time_t when = time(NULL) + 2;
    struct tm tm;
    gmtime_r(&when, &tm);
    strftime(hdr, sizeof hdr, "Retry-After: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
    fail_with(1, 503, hdr, "{\"error\":\"restarting\"}");
    t0 = uv_hrtime();
    assert_int_equal(s_store(&c, "k3", "\"third text\"", NULL, &r), 0);
    assert_true(uv_hrtime() - t0 >= 500000000ull);
    assert_int_equal(requests_seen(), 2);
  }
  assert_int_equal(s_info(&c, NULL, &r), 0);
  {
    const cJSON *svc = cJSON_GetObjectItem(r.info, "embedder_service");
    assert_non_null(svc);
    assert_int_equal((int)cJSON_GetNumberValue(cJSON_GetObjectItem(svc, "retries")), 4);
    assert_int_equal((int)cJSON_GetNumberValue(cJSON_GetObjectItem(svc, "requests")), 7);
    assert_int_equal((int)cJSON_GetNumberValue(cJSON_GetObjectItem(svc, "in_flight")), 0);
  }
  result_reset(&r);
  assert_int_equal(rank_of(&c, "rate limited text", "k", NULL), 0);
  ctx_close(&c);
}

static void retry_500_then_success_and_give_up(void **state) {
  ctx_t c;
  result_t r = {0};
  (void)state;
  open_ok(&c, ", \"max_retries\": 2");
  fail_with(1, 500, NULL, "{\"error\":\"boom\"}");
  assert_int_equal(s_store(&c, "k", "\"five hundred\"", NULL, &r), 0);
  assert_int_equal(requests_seen(), 2);
  fail_with(100, 503, NULL, "{\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}");
  assert_int_equal(s_store(&c, "gone", "\"never stored\"", NULL, &r), ENGRAM_EEMBED);
  assert_non_null(strstr(r.message, "HTTP 503"));
  assert_non_null(strstr(r.message, "overloaded"));
  assert_non_null(strstr(r.message, "gave up after 2 retries"));
  assert_int_equal(requests_seen(), 3);
  result_reset(&r);
  assert_absent(&c, "gone", "never stored");
  ctx_close(&c);
}

static void split_on_413_and_too_large_500(void **state) {
  ctx_t c;
  result_t r = {0};
  (void)state;
  open_ok(&c, ", \"batch\": 8, \"concurrency\": 1");
  script_reset();
  pthread_mutex_lock(&S.mu);
  S.too_large_over = 2;
  pthread_mutex_unlock(&S.mu);
  assert_int_equal(store_many_texts(&c, "s", 7, &r), 0);
  assert_int_equal(r.count, 7);
  /* 7 → 413; 3 → 413, 1 ok, 2 ok; 4 → 413, 2 ok, 2 ok */
  assert_int_equal(requests_seen(), 7);
  result_reset(&r);
  assert_int_equal(rank_of(&c, "text number 5 of s", "s5", NULL), 0);
  /* llama.cpp's way: a 500 saying the input is too large. */
  script_reset();
  pthread_mutex_lock(&S.mu);
  S.too_large_over = 1;
  S.too_large_500 = 1;
  pthread_mutex_unlock(&S.mu);
  assert_int_equal(store_many_texts(&c, "l", 3, &r), 0);
  assert_int_equal(r.count, 3);
  result_reset(&r);
  /* Two inputs refused together, accepted one by one. */
  script_reset();
  pthread_mutex_lock(&S.mu);
  S.too_large_over = 1;
  pthread_mutex_unlock(&S.mu);
  assert_int_equal(store_many_texts(&c, "x", 2, &r), 0); /* split into two single inputs: both go through */
  assert_int_equal(requests_seen(), 3);
  result_reset(&r);
  ctx_close(&c);
}

static void single_input_too_large(void **state) {
  ctx_t c;
  result_t r = {0};
  (void)state;
  open_ok(&c, NULL);
  fail_with(1, 413, NULL, "{\"error\":{\"message\":\"input too long\",\"type\":\"invalid_request_error\"}}");
  assert_int_equal(s_store(&c, "big", "\"a huge text\"", NULL, &r), ENGRAM_EEMBED);
  assert_non_null(strstr(r.message, "too large"));
  assert_non_null(strstr(r.message, "input too long"));
  assert_int_equal(requests_seen(), 1);
  result_reset(&r);
  assert_absent(&c, "big", "a huge text");
  ctx_close(&c);
}

static void slower_than_timeout(void **state) {
  ctx_t c;
  result_t r = {0};
  (void)state;
  open_ok(&c, ", \"timeout_ms\": 200, \"max_retries\": 1");
  script_reset();
  pthread_mutex_lock(&S.mu);
  S.delay_ms = 1200;
  pthread_mutex_unlock(&S.mu);
  assert_int_equal(s_store(&c, "slow", "\"slow text\"", NULL, &r), ENGRAM_EEMBED);
  assert_non_null(strstr(r.message, "timed out"));
  assert_non_null(strstr(r.message, "gave up after 1 retry"));
  assert_int_equal(requests_seen(), 2);
  result_reset(&r);
  assert_absent(&c, "slow", "slow text");
  ctx_close(&c);
}

static void connection_refused(void **state) {
  ctx_t c;
  result_t r = {0};
  char url[128];
  int fd, port = free_port(&fd);
  (void)state;
  assert_true(port > 0);
  close(fd); /* bound, never listened: connecting is refused */
  snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/embeddings", port);
  ctx_init(&c, NULL);
  assert_int_equal(add_openai(&c, url, ", \"max_retries\": 2", &r), 0);
  assert_int_equal(s_store(&c, "k", "\"refused\"", NULL, &r), ENGRAM_EEMBED);
  assert_non_null(strstr(r.message, "onnect"));
  assert_non_null(strstr(r.message, "gave up after 2 retries"));
  result_reset(&r);
  assert_int_equal(s_retrieve(&c, "k", NULL, &r), ENGRAM_ENOTFOUND);
  result_reset(&r);
  ctx_close(&c);
}

static void malformed_partial_wrong_dimension(void **state) {
  ctx_t c;
  result_t r = {0};
  (void)state;
  open_ok(&c, NULL);
  script_reset();
  pthread_mutex_lock(&S.mu);
  S.malformed = 1;
  pthread_mutex_unlock(&S.mu);
  assert_int_equal(s_store(&c, "m", "\"malformed answer\"", NULL, &r), ENGRAM_EEMBED);
  assert_non_null(strstr(r.message, "not valid JSON"));
  assert_int_equal(requests_seen(), 1); /* not retried */
  result_reset(&r);
  assert_absent(&c, "m", "malformed answer");

  script_reset();
  pthread_mutex_lock(&S.mu);
  S.partial = 1;
  pthread_mutex_unlock(&S.mu);
  assert_int_equal(store_many_texts(&c, "p", 3, &r), ENGRAM_EEMBED);
  assert_non_null(strstr(r.message, "2 embeddings for 3 inputs"));
  result_reset(&r);
  assert_absent(&c, "p0", "text number 0 of p");
  assert_absent(&c, "p2", "text number 2 of p");

  script_reset();
  pthread_mutex_lock(&S.mu);
  S.dim = DIM + 1;
  pthread_mutex_unlock(&S.mu);
  assert_int_equal(s_store(&c, "d", "\"other dimension\"", NULL, &r), ENGRAM_EDIMENSION);
  assert_non_null(strstr(r.message, "dimension 17"));
  result_reset(&r);
  /* A search through a model of another dimension fails the same way. */
  {
    engram_query_t q = ENGRAM_QUERY_INIT;
    script_reset();
    pthread_mutex_lock(&S.mu);
    S.dim = DIM - 1;
    pthread_mutex_unlock(&S.mu);
    q.text = "other dimension";
    assert_int_equal(s_search(&c, &q, NULL, &r), ENGRAM_EDIMENSION);
    result_reset(&r);
  }
  assert_absent(&c, "d", "other dimension");
  /* The index was left as it was: a good store still works. */
  script_reset();
  assert_int_equal(s_store(&c, "ok", "\"fine text\"", NULL, &r), 0);
  result_reset(&r);
  assert_int_equal(rank_of(&c, "fine text", "ok", NULL), 0);
  ctx_close(&c);
}

static void no_retry_on_401_and_insufficient_quota(void **state) {
  ctx_t c;
  result_t r = {0};
  (void)state;
  open_ok(&c, ", \"send_dimensions\": true");
  script_reset();
  assert_int_equal(s_store(&c, "k", "\"first value\"", NULL, &r), 0);
  assert_int_equal(seen().dimensions_sent, DIM);
  fail_with(100, 401, NULL,
            "{\"error\":{\"message\":\"Incorrect API key provided\",\"type\":\"invalid_request_error\",\"code\":"
            "\"invalid_api_key\"}}");
  assert_int_equal(s_store(&c, "k", "\"unauthorized\"", NULL, &r), ENGRAM_EEMBED);
  assert_non_null(strstr(r.message, "HTTP 401"));
  assert_non_null(strstr(r.message, "embedder 'openai:test-embed' failed"));
  assert_non_null(strstr(r.message, "Incorrect API key provided (invalid_request_error, invalid_api_key)"));
  assert_int_equal(requests_seen(), 1);
  fail_with(100, 429, "retry-after-ms: 5\r\n",
            "{\"error\":{\"message\":\"You exceeded your current quota\",\"type\":\"insufficient_quota\",\"code\":"
            "\"insufficient_quota\"}}");
  assert_int_equal(s_store(&c, "k", "\"no quota\"", NULL, &r), ENGRAM_EEMBED);
  assert_non_null(strstr(r.message, "exceeded your current quota"));
  assert_int_equal(requests_seen(), 1);
  /* Other services' error bodies: Ollama, TEI. */
  fail_with(100, 404, NULL, "{\"error\":\"model \\\"nomic\\\" not found, try pulling it first\"}");
  assert_int_equal(s_store(&c, "k", "\"ollama\"", NULL, &r), ENGRAM_EEMBED);
  assert_non_null(strstr(r.message, "HTTP 404"));
  assert_non_null(strstr(r.message, "model \"nomic\" not found"));
  assert_int_equal(requests_seen(), 1);
  fail_with(100, 422, NULL, "{\"error\":\"Input validation error: inputs cannot be empty\",\"error_type\":\"Validation\"}");
  assert_int_equal(s_store(&c, "k", "\"tei\"", NULL, &r), ENGRAM_EEMBED);
  assert_non_null(strstr(r.message, "inputs cannot be empty (Validation)"));
  fail_with(100, 400, NULL, "{\"object\":\"error\",\"message\":\"This model does not support matryoshka\",\"type\":"
                            "\"BadRequestError\",\"code\":400}"); /* vLLM */
  assert_int_equal(s_store(&c, "k", "\"vllm\"", NULL, &r), ENGRAM_EEMBED);
  assert_non_null(strstr(r.message, "does not support matryoshka (BadRequestError, 400)"));
  assert_int_equal(requests_seen(), 1);
  fail_with(100, 400, NULL, "not json at all\r\nsecond line");
  assert_int_equal(s_store(&c, "k", "\"plain\"", NULL, &r), ENGRAM_EEMBED);
  assert_non_null(strstr(r.message, "HTTP 400"));
  assert_non_null(strstr(r.message, "not json at all"));
  assert_null(strstr(r.message, "second line"));
  result_reset(&r);
  /* The failed overwrites changed nothing: the first value is still there, under its first version. */
  script_reset();
  assert_int_equal(s_retrieve(&c, "k", NULL, &r), 0);
  assert_string_equal(cJSON_GetStringValue(result_item(&r, 0, "value")), "first value");
  result_reset(&r);
  assert_int_equal(rank_of(&c, "first value", "k", NULL), 0);
  ctx_close(&c);
}

static void api_key_never_shown(void **state) {
  ctx_t c;
  result_t r = {0};
  char *text;
  (void)state;
  setenv("ENGRAM_TEST_EMBED_KEY", SECRET, 1);
  open_ok(&c, ", \"api_key_env\": \"ENGRAM_TEST_EMBED_KEY\"");
  script_reset();
  assert_int_equal(s_store(&c, "k", "\"with a key\"", NULL, &r), 0);
  assert_string_equal(seen().auth, "Bearer " SECRET);
  /* A server that echoes the key in its error: the message blanks it out. */
  fail_with(100, 401, NULL, "{\"error\":{\"message\":\"Incorrect API key provided: " SECRET ".\"}}");
  assert_int_equal(s_store(&c, "k2", "\"echo\"", NULL, &r), ENGRAM_EEMBED);
  assert_null(strstr(r.message, SECRET));
  assert_non_null(strstr(r.message, "Incorrect API key provided: ***."));
  /* ... also where the source's 255-byte cut of messages would fall inside the key. */
  {
    char body[512], pad[181];
    memset(pad, 'a', 180);
    pad[180] = '\0';
    snprintf(body, sizeof body, "{\"error\":{\"message\":\"%s%s\"}}", pad, SECRET);
    fail_with(100, 401, NULL, body);
    assert_int_equal(s_store(&c, "k3", "\"cut\"", NULL, &r), ENGRAM_EEMBED);
    assert_non_null(strstr(r.message, "aaaa***"));
    assert_null(strstr(r.message, "sk-test"));
  }
  assert_int_equal(s_info(&c, NULL, &r), 0);
  text = cJSON_PrintUnformatted(r.info);
  assert_non_null(text);
  assert_null(strstr(text, SECRET));
  assert_non_null(strstr(text, "openai:test-embed"));
  assert_non_null(strstr(text, "\"api_key_env\":\"ENGRAM_TEST_EMBED_KEY\""));
  cJSON_free(text);
  result_reset(&r);
  ctx_close(&c);
  /* Credentials in the URL stay out of messages and info too. */
  {
    char url[160], want[160];
    snprintf(url, sizeof url, "http://user:pa55word@127.0.0.1:%d/v1?token=t0ken", S.port);
    snprintf(want, sizeof want, "http://127.0.0.1:%d/v1/embeddings", S.port);
    ctx_init(&c, NULL);
    assert_int_equal(add_openai(&c, url, NULL, &r), 0);
    fail_with(100, 403, NULL, "{\"error\":\"forbidden\"}");
    assert_int_equal(s_store(&c, "k", "\"userinfo\"", NULL, &r), ENGRAM_EEMBED);
    assert_non_null(strstr(r.message, want));
    assert_null(strstr(r.message, "pa55word"));
    assert_null(strstr(r.message, "t0ken"));
    assert_string_equal(seen().path, "POST /v1/embeddings?token=t0ken HTTP/1.1"); /* the query is kept on the wire */
    assert_int_equal(s_info(&c, NULL, &r), 0);
    text = cJSON_PrintUnformatted(r.info);
    assert_null(strstr(text, "pa55word"));
    assert_null(strstr(text, "t0ken"));
    assert_non_null(strstr(text, want));
    cJSON_free(text);
    result_reset(&r);
    ctx_close(&c);
  }
  /* A missing variable, a URL that is not http(s), missing fields, an unknown one: refused at add, naming it. */
  unsetenv("ENGRAM_TEST_EMBED_KEY");
  ctx_init(&c, NULL);
  assert_int_equal(add_openai(&c, URL, ", \"api_key_env\": \"ENGRAM_TEST_EMBED_KEY\"", &r), ENGRAM_EINVAL);
  assert_non_null(strstr(r.message, "api_key_env"));
  assert_non_null(strstr(r.message, "ENGRAM_TEST_EMBED_KEY is not set"));
  assert_int_equal(add_openai(&c, "ftp://127.0.0.1/v1", NULL, &r), ENGRAM_EINVAL);
  assert_non_null(strstr(r.message, "\"url\""));
  assert_int_equal(add_openai(&c, URL, ", \"batch\": 0", &r), ENGRAM_EINVAL);
  assert_non_null(strstr(r.message, "\"batch\""));
  assert_int_equal(add_openai(&c, URL, ", \"colour\": 1", &r), ENGRAM_EINVAL);
  assert_non_null(strstr(r.message, "colour"));
  result_reset(&r);
  assert_int_equal(engram_manager_add_source(c.mgr, "w", &engram_source_vector,
                                             "{\"embedder\": {\"type\": \"openai\", \"url\": \"http://x/v1\"}}", "t", 0,
                                             capture_cb, &r),
                   0);
  wait_for(&c, &r.calls, 1, 30000);
  assert_int_equal(r.status, ENGRAM_EINVAL);
  assert_non_null(strstr(r.message, "\"model\""));
  result_reset(&r);
  ctx_close(&c);
}

static void deadline_and_close_while_waiting(void **state) {
  ctx_t c;
  result_t r = {0}, late = {0};
  engram_opts_t o = {0};
  cJSON *v;
  (void)state;
  open_ok(&c, ", \"max_retries\": 100, \"concurrency\": 1");
  /* The call's deadline passes while the embedder keeps being told to come back later. */
  fail_with(1000, 429, "retry-after-ms: 20\r\n", "{\"error\":\"busy\"}");
  o.deadline_ms = 300;
  assert_int_equal(s_store(&c, "t", "\"deadline text\"", &o, &r), ENGRAM_ETIMEDOUT);
  result_reset(&r);
  script_reset();
  assert_int_equal(s_store(&c, "after", "\"after the deadline\"", NULL, &r), 0); /* the queue moved on */
  result_reset(&r);
  assert_absent(&c, "t", "deadline text");
  /* A call given up while its request is still on the wire gives its slot (concurrency 1 here) to the next call
   * at once: the next store does not wait for the slow answer. */
  {
    uint64_t t0;
    script_reset();
    pthread_mutex_lock(&S.mu);
    S.delay_ms = 2500;
    pthread_mutex_unlock(&S.mu);
    result_reset(&late);
    v = cJSON_CreateString("given up text");
    o.deadline_ms = 200;
    assert_int_equal(engram_store(c.mgr, "g", v, &o, capture_cb, &late), 0);
    cJSON_Delete(v);
    wait_for(&c, &late.calls, 1, 30000);
    assert_int_equal(late.status, ENGRAM_ETIMEDOUT);
    result_reset(&late);
    pthread_mutex_lock(&S.mu);
    S.delay_ms = 0;
    pthread_mutex_unlock(&S.mu);
    t0 = uv_hrtime();
    assert_int_equal(s_store(&c, "g2", "\"next text\"", NULL, &r), 0);
    assert_true(uv_hrtime() - t0 < 1500000000ull); /* not behind the 2.5 s answer */
    result_reset(&r);
  }
  /* Closed with a request on the wire: the call ends once, ECANCELED, and the loop closes cleanly. */
  script_reset();
  pthread_mutex_lock(&S.mu);
  S.delay_ms = 800;
  pthread_mutex_unlock(&S.mu);
  v = cJSON_CreateString("closing text");
  assert_int_equal(engram_store(c.mgr, "c", v, NULL, capture_cb, &late), 0);
  cJSON_Delete(v);
  {
    int waited = 0; /* until the request is on the wire (a condition, with a generous limit) */
    while (requests_seen() == 0 && waited++ < 20000) sleep_ms(1);
    assert_int_equal(requests_seen(), 1);
  }
  ctx_close(&c);
  assert_int_equal(late.calls, 1);
  assert_int_equal(late.status, ENGRAM_ECANCELED);
  result_reset(&late);
}

/* The file records the embedder ("openai:<model>") and the dimension: another model or dimension is refused. */
static void file_records_model_and_dimension(void **state) {
  ctx_t c;
  result_t r = {0};
  char dir[] = "/tmp/engram_embed_http_XXXXXX", path[128];
  (void)state;
  assert_non_null(mkdtemp(dir));
  snprintf(path, sizeof path, "%s/v.db", dir);
  ctx_init(&c, NULL);
  script_reset();
  {
    char o[1024];
    snprintf(o, sizeof o,
             "{\"path\": \"%s\", \"embedder\": {\"type\": \"openai\", \"url\": \"%s\", \"model\": \"test-embed\", "
             "\"dimensions\": %d}}",
             path, URL, DIM);
    assert_int_equal(engram_manager_add_source(c.mgr, "f", &engram_source_vector, o, "t", 1, capture_cb, &r), 0);
    wait_for(&c, &r.calls, 1, 30000);
    assert_int_equal(r.status, 0);
    result_reset(&r);
    assert_int_equal(s_store(&c, "kept", "\"persisted text\"", NULL, &r), 0);
    result_reset(&r);
    assert_int_equal(engram_manager_remove_source(c.mgr, "f", capture_cb, &r), 0);
    wait_for(&c, &r.calls, 1, 30000);
    result_reset(&r);
    /* Another model: refused, naming both. */
    snprintf(o, sizeof o,
             "{\"path\": \"%s\", \"embedder\": {\"type\": \"openai\", \"url\": \"%s\", \"model\": \"other-model\", "
             "\"dimensions\": %d}}",
             path, URL, DIM);
    assert_int_equal(engram_manager_add_source(c.mgr, "f", &engram_source_vector, o, "t", 1, capture_cb, &r), 0);
    wait_for(&c, &r.calls, 1, 30000);
    assert_int_equal(r.status, ENGRAM_EINVAL);
    assert_non_null(strstr(r.message, "openai:test-embed"));
    assert_non_null(strstr(r.message, "openai:other-model"));
    result_reset(&r);
    /* Another dimension: ENGRAM_EDIMENSION. */
    snprintf(o, sizeof o,
             "{\"path\": \"%s\", \"embedder\": {\"type\": \"openai\", \"url\": \"%s\", \"model\": \"test-embed\", "
             "\"dimensions\": %d}}",
             path, URL, DIM * 2);
    assert_int_equal(engram_manager_add_source(c.mgr, "f", &engram_source_vector, o, "t", 1, capture_cb, &r), 0);
    wait_for(&c, &r.calls, 1, 30000);
    assert_int_equal(r.status, ENGRAM_EDIMENSION);
    result_reset(&r);
    /* The same model and dimension: the item is back and found. */
    snprintf(o, sizeof o,
             "{\"path\": \"%s\", \"embedder\": {\"type\": \"openai\", \"url\": \"%s\", \"model\": \"test-embed\", "
             "\"dimensions\": %d}}",
             path, URL, DIM);
    assert_int_equal(engram_manager_add_source(c.mgr, "f", &engram_source_vector, o, "t", 1, capture_cb, &r), 0);
    wait_for(&c, &r.calls, 1, 30000);
    assert_int_equal(r.status, 0);
    result_reset(&r);
    assert_int_equal(rank_of(&c, "persisted text", "kept", NULL), 0);
  }
  ctx_close(&c);
  {
    char f[160];
    snprintf(f, sizeof f, "%s/v.db", dir), unlink(f);
    snprintf(f, sizeof f, "%s/v.db-wal", dir), unlink(f);
    snprintf(f, sizeof f, "%s/v.db-shm", dir), unlink(f);
    rmdir(dir);
  }
}

static int group_setup(void **state) {
  (void)state;
  return server_start();
}

static int group_teardown(void **state) {
  (void)state;
  server_stop();
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(batches_concurrency_and_order),
      cmocka_unit_test(many_requests_keep_alive_and_close),
      cmocka_unit_test(retry_429_with_retry_after),
      cmocka_unit_test(retry_500_then_success_and_give_up),
      cmocka_unit_test(split_on_413_and_too_large_500),
      cmocka_unit_test(single_input_too_large),
      cmocka_unit_test(slower_than_timeout),
      cmocka_unit_test(connection_refused),
      cmocka_unit_test(malformed_partial_wrong_dimension),
      cmocka_unit_test(no_retry_on_401_and_insufficient_quota),
      cmocka_unit_test(api_key_never_shown),
      cmocka_unit_test(deadline_and_close_while_waiting),
      cmocka_unit_test(file_records_model_and_dimension),
  };
  if (getenv("ENGRAM_TEST_FILTER") != NULL) cmocka_set_test_filter(getenv("ENGRAM_TEST_FILTER"));
  return cmocka_run_group_tests_name("embed_http", tests, group_setup, group_teardown);
}
