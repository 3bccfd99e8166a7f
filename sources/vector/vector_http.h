/*
 * vector_http.h — HTTP POST requests on a libuv loop through libcurl's multi-socket interface (vector_http.c),
 * for the embedders of the vector source that call a service (embed_openai.c). libcurl tells the driver which
 * sockets to watch (CURLMOPT_SOCKETFUNCTION → a uv_poll per socket) and when to wake it (CURLMOPT_TIMERFUNCTION
 * → one uv_timer); the driver hands socket events and timeouts back with curl_multi_socket_action. So every
 * request runs on the loop's thread, with no thread per request (libcurl's threaded DNS resolver aside).
 *
 * A driver belongs to one loop and is used from that loop's thread only. Each request ends with exactly one call
 * of its done callback, from a callback of the loop (never from inside engram__http_post), unless it is
 * cancelled first (engram__http_cancel, or engram__http_free for all that remain): then it never calls back.
 */
#ifndef ENGRAM_VECTOR_HTTP_H
#define ENGRAM_VECTOR_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct engram__http_s engram__http_t;
typedef struct engram__http_req_s engram__http_req_t;

/* The outcome of a request, valid inside its done callback (the driver frees the request when it returns). */
typedef struct {
  int curl_code;          /* CURLE_OK (0) when a response arrived */
  const char *curl_error; /* libcurl's explanation when curl_code ≠ 0 */
  int transient;          /* the failure may pass: no connection, a timeout, a connection cut, no answer */
  long status;            /* the HTTP status (0 when no response) */
  const char *body;       /* the response body, NUL-terminated */
  size_t body_len;
  int64_t retry_after_ms; /* from retry-after-ms, else retry-after (seconds or an HTTP date); -1 when absent */
} engram__http_result_t;

typedef void (*engram__http_done_fn)(const engram__http_result_t *res, void *ud);

/* A driver on loop. Returns 0 or ENGRAM_ENOMEM / ENGRAM_EBACKEND (libcurl refused). */
int engram__http_new(engram__http_t **out, uv_loop_t *loop);
/* Cancels every request still open (none calls back), and closes the driver's handles; the memory is freed
 * when the loop has closed them. Not from inside a done callback of this driver. */
void engram__http_free(engram__http_t *h);

/*
 * Starts POST url with body (copied) and the given header lines ("Name: value", NULL-terminated list, copied).
 * timeout_ms bounds the whole exchange (0 = none). Returns the request, or NULL (out of memory, or libcurl
 * refused the options: *err says why).
 */
engram__http_req_t *engram__http_post(engram__http_t *h, const char *url, const char *const *headers, const char *body,
                                      size_t body_len, uint32_t timeout_ms, engram__http_done_fn done, void *ud,
                                      const char **err);
/* Ends a request that has not called back; it never will. */
void engram__http_cancel(engram__http_req_t *r);

#endif
