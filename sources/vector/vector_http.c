/*
 * vector_http.c — the curl-on-libuv driver (vector_http.h): libcurl's multi-socket interface run by a libuv loop.
 * libcurl asks to watch a socket (socket_cb) → a uv_poll for it, whose events go back through
 * curl_multi_socket_action; libcurl asks for a wake-up (timer_cb) → one uv_timer, whose expiry does the same with
 * CURL_SOCKET_TIMEOUT. After each action the finished transfers are collected (collect) and their done callbacks
 * run, from the loop — never inside engram__http_post. Connections are kept by libcurl for the next request.
 *
 * A response body is capped (MAX_BODY) so a confused server cannot exhaust memory; the retry-after-ms and
 * retry-after headers of the last response are read as they arrive. Closing is asynchronous: engram__http_free
 * drops every transfer, lets libcurl close its sockets, closes the poll handles and the timer, and frees the
 * driver from the last close callback, so the loop must run on after it (the vector source's loop does).
 */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "engram/source.h"
#include "vector_http.h"

#define MAX_BODY (64u << 20)

typedef struct sock_s {
  uv_poll_t poll;
  curl_socket_t fd;
  engram__http_t *h;
  struct sock_s *prev, *next;
} sock_t;

struct engram__http_s {
  uv_loop_t *loop;
  CURLM *multi;
  uv_timer_t timer;
  sock_t *socks;
  engram__http_req_t *reqs;
  int handles; /* open uv handles (the timer and the polls) */
  int closing;
};

struct engram__http_req_s {
  engram__http_t *h;
  CURL *easy;
  struct curl_slist *headers;
  char *body;
  size_t body_len, body_cap;
  int64_t retry_after_ms, retry_after_s_ms;
  char errbuf[CURL_ERROR_SIZE];
  engram__http_done_fn done;
  void *ud;
  engram__http_req_t *prev, *next;
};

static uv_once_t global_once = UV_ONCE_INIT;
static CURLcode global_rc;

static void global_init(void) { global_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

/* ---- Handles ---- */

static void maybe_free(engram__http_t *h) {
  if (h->closing && h->handles == 0) engram_free(h);
}

static void on_sock_closed(uv_handle_t *handle) {
  sock_t *s = handle->data;
  engram__http_t *h = s->h;
  engram_free(s);
  h->handles--;
  maybe_free(h);
}

static void on_timer_closed(uv_handle_t *handle) {
  engram__http_t *h = handle->data;
  h->handles--;
  maybe_free(h);
}

static void sock_drop(sock_t *s) {
  engram__http_t *h = s->h;
  if (s->prev) s->prev->next = s->next;
  else h->socks = s->next;
  if (s->next) s->next->prev = s->prev;
  uv_poll_stop(&s->poll);
  uv_close((uv_handle_t *)&s->poll, on_sock_closed);
}

/* ---- Requests ---- */

static void req_unlink(engram__http_req_t *r) {
  engram__http_t *h = r->h;
  if (r->prev) r->prev->next = r->next;
  else h->reqs = r->next;
  if (r->next) r->next->prev = r->prev;
  r->prev = r->next = NULL;
}

static void req_free(engram__http_req_t *r) {
  if (r->easy) curl_easy_cleanup(r->easy);
  curl_slist_free_all(r->headers);
  engram_free(r->body);
  engram_free(r);
}

/* The transport failures another attempt may get past. */
static int transient(CURLcode rc) {
  switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_PARTIAL_FILE:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR: return 1;
    default: return 0;
  }
}

/* Runs the done callbacks of the finished transfers. */
static void collect(engram__http_t *h) {
  CURLMsg *msg;
  int left;
  while ((msg = curl_multi_info_read(h->multi, &left)) != NULL) {
    engram__http_req_t *r = NULL;
    engram__http_result_t res;
    if (msg->msg != CURLMSG_DONE) continue;
    curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
    memset(&res, 0, sizeof res);
    res.curl_code = (int)msg->data.result;
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &res.status);
    curl_multi_remove_handle(h->multi, r->easy);
    req_unlink(r);
    if (res.curl_code != CURLE_OK) {
      res.curl_error = r->errbuf[0] ? r->errbuf : curl_easy_strerror((CURLcode)res.curl_code);
      res.transient = transient(msg->data.result);
    }
    res.body = r->body ? r->body : "";
    res.body_len = r->body_len;
    res.retry_after_ms = r->retry_after_ms >= 0 ? r->retry_after_ms : r->retry_after_s_ms;
    r->done(&res, r->ud);
    req_free(r);
  }
}

static void on_poll(uv_poll_t *p, int status, int events) {
  sock_t *s = p->data;
  engram__http_t *h = s->h;
  int flags = 0, running;
  if (status < 0) flags = CURL_CSELECT_ERR | CURL_CSELECT_IN | CURL_CSELECT_OUT;
  if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
  if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
  curl_multi_socket_action(h->multi, s->fd, flags, &running);
  collect(h);
}

static void on_timeout(uv_timer_t *t) {
  engram__http_t *h = t->data;
  int running;
  curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  collect(h);
}

static int socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp) {
  engram__http_t *h = userp;
  sock_t *s = socketp;
  int events = 0;
  (void)easy;
  if (what == CURL_POLL_REMOVE) {
    if (s != NULL) {
      if (!h->closing) curl_multi_assign(h->multi, fd, NULL);
      sock_drop(s);
    }
    return 0;
  }
  if (s == NULL) {
    if ((s = engram_calloc(1, sizeof *s)) == NULL) return -1;
    if (uv_poll_init_socket(h->loop, &s->poll, fd) != 0) {
      engram_free(s);
      return -1;
    }
    s->fd = fd;
    s->h = h;
    s->poll.data = s;
    s->next = h->socks;
    if (h->socks) h->socks->prev = s;
    h->socks = s;
    h->handles++;
    curl_multi_assign(h->multi, fd, s);
  }
  if (what == CURL_POLL_IN || what == CURL_POLL_INOUT) events |= UV_READABLE;
  if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT) events |= UV_WRITABLE;
  uv_poll_start(&s->poll, events, on_poll);
  return 0;
}

/* libcurl asks to be called after timeout_ms (-1: never). 0 goes through the timer too: socket_action must not
 * be called from inside this callback. */
static int timer_cb(CURLM *multi, long timeout_ms, void *userp) {
  engram__http_t *h = userp;
  (void)multi;
  if (timeout_ms < 0) uv_timer_stop(&h->timer);
  else uv_timer_start(&h->timer, on_timeout, (uint64_t)timeout_ms, 0);
  return 0;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *userp) {
  engram__http_req_t *r = userp;
  size_t n = size * nmemb;
  if (r->body_len + n + 1 > r->body_cap) {
    size_t cap = r->body_cap ? r->body_cap : 4096;
    char *grown;
    while (cap < r->body_len + n + 1) cap *= 2;
    if (cap > MAX_BODY || (grown = engram_realloc(r->body, cap)) == NULL) return 0; /* CURLE_WRITE_ERROR */
    r->body = grown;
    r->body_cap = cap;
  }
  memcpy(r->body + r->body_len, data, n);
  r->body_len += n;
  r->body[r->body_len] = '\0';
  return n;
}

/* Reads retry-after-ms (milliseconds, may be fractional) and retry-after (seconds or an HTTP date). A new status
 * line (an interim 100 response, say) forgets what came before. */
static size_t on_header(char *data, size_t size, size_t nmemb, void *userp) {
  engram__http_req_t *r = userp;
  size_t n = size * nmemb;
  char line[256];
  const char *v;
  if (n >= sizeof line) return n;
  memcpy(line, data, n);
  line[n] = '\0';
  line[strcspn(line, "\r\n")] = '\0';
  if (strncmp(line, "HTTP/", 5) == 0) {
    r->retry_after_ms = r->retry_after_s_ms = -1;
    return n;
  }
  if (strncasecmp(line, "retry-after-ms:", 15) == 0) {
    double ms = strtod(line + 15, NULL);
    if (ms >= 0 && ms < 1e12) r->retry_after_ms = (int64_t)ms;
  } else if (strncasecmp(line, "retry-after:", 12) == 0) {
    char *end;
    double s;
    for (v = line + 12; *v == ' ' || *v == '\t'; v++) {
    }
    s = strtod(v, &end);
    if (end != v && s >= 0 && s < 1e9) {
      r->retry_after_s_ms = (int64_t)(s * 1000);
    } else {
      time_t when = curl_getdate(v, NULL), now = time(NULL);
      if (when != (time_t)-1) r->retry_after_s_ms = when > now ? (int64_t)(when - now) * 1000 : 0;
    }
  }
  return n;
}

/* ---- The driver ---- */

int engram__http_new(engram__http_t **out, uv_loop_t *loop) {
  engram__http_t *h;
  *out = NULL;
  uv_once(&global_once, global_init);
  if (global_rc != CURLE_OK) return ENGRAM_EBACKEND;
  if ((h = engram_calloc(1, sizeof *h)) == NULL) return ENGRAM_ENOMEM;
  if ((h->multi = curl_multi_init()) == NULL) {
    engram_free(h);
    return ENGRAM_ENOMEM;
  }
  h->loop = loop;
  curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
  curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
  curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
  curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
  uv_timer_init(loop, &h->timer);
  h->timer.data = h;
  h->handles = 1;
  *out = h;
  return 0;
}

void engram__http_cancel(engram__http_req_t *r) {
  curl_multi_remove_handle(r->h->multi, r->easy);
  req_unlink(r);
  req_free(r);
}

void engram__http_free(engram__http_t *h) {
  if (h == NULL) return;
  while (h->reqs != NULL) engram__http_cancel(h->reqs);
  h->closing = 1;
  curl_multi_cleanup(h->multi); /* closes the cached connections (their sockets leave through socket_cb) */
  h->multi = NULL;
  while (h->socks != NULL) sock_drop(h->socks);
  uv_timer_stop(&h->timer);
  uv_close((uv_handle_t *)&h->timer, on_timer_closed);
}

engram__http_req_t *engram__http_post(engram__http_t *h, const char *url, const char *const *headers, const char *body,
                                      size_t body_len, uint32_t timeout_ms, engram__http_done_fn done, void *ud,
                                      const char **err) {
  engram__http_req_t *r = engram_calloc(1, sizeof *r);
  struct curl_slist *l;
  size_t i;
  CURLcode rc = CURLE_OK;
  *err = "out of memory";
  if (r == NULL) return NULL;
  r->h = h;
  r->done = done;
  r->ud = ud;
  r->retry_after_ms = r->retry_after_s_ms = -1;
  if ((r->easy = curl_easy_init()) == NULL) goto fail;
  for (i = 0; headers != NULL && headers[i] != NULL; i++) {
    if ((l = curl_slist_append(r->headers, headers[i])) == NULL) goto fail;
    r->headers = l;
  }
#define SET(opt, val) \
  if (rc == CURLE_OK) rc = curl_easy_setopt(r->easy, opt, val)
  SET(CURLOPT_URL, url);
  SET(CURLOPT_PROTOCOLS_STR, "http,https");
  SET(CURLOPT_NOSIGNAL, 1L);
  SET(CURLOPT_HTTPHEADER, r->headers);
  SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
  SET(CURLOPT_COPYPOSTFIELDS, body);
  SET(CURLOPT_TIMEOUT_MS, (long)timeout_ms);
  SET(CURLOPT_CONNECTTIMEOUT_MS, (long)(timeout_ms && timeout_ms < 10000 ? timeout_ms : 10000));
  SET(CURLOPT_ACCEPT_ENCODING, "");
  SET(CURLOPT_USERAGENT, "engram");
  SET(CURLOPT_WRITEFUNCTION, on_body);
  SET(CURLOPT_WRITEDATA, r);
  SET(CURLOPT_HEADERFUNCTION, on_header);
  SET(CURLOPT_HEADERDATA, r);
  SET(CURLOPT_ERRORBUFFER, r->errbuf);
  SET(CURLOPT_PRIVATE, (char *)r);
#undef SET
  if (rc != CURLE_OK) {
    *err = curl_easy_strerror(rc);
    goto fail;
  }
  if (curl_multi_add_handle(h->multi, r->easy) != CURLM_OK) goto fail;
  r->next = h->reqs;
  if (h->reqs) h->reqs->prev = r;
  h->reqs = r;
  *err = NULL;
  return r;
fail:
  req_free(r);
  return NULL;
}
