/*
 * redis_cmd.c — the vocabulary of the redis source's commands (see redis_cmd.h): the key encoding of the data
 * layout, the header of a script call, ZRANGEBYLEX bounds, and reading integers in replies.
 *
 * Keys: prefix "i:" <ns byte length> ":" ns ":" key for an item's hash, prefix "x:" <ns byte length> ":" ns
 * for a namespace's index, prefix "g:" <ns byte length> ":" ns for its generation counter (bumped by every
 * script that changes its items), prefix "namespaces" for the set of namespaces. The length makes the encoding
 * unambiguous whatever bytes a namespace or key holds (':' included).
 */
#include <string.h>

#include "redis_cmd.h"

/* ---- Keys ---- */

/* Begins an argument "prefix tag <ns length>:ns" with room for extra bytes after it (the key encoding above). */
static void ns_key_begin(const engram__redis_t *r, engram__rbuf_t *b, const char *tag, const char *ns, size_t ns_len,
                         size_t extra) {
  char nl[24];
  size_t k = (size_t)engram__rbuf_digits(ns_len, nl);
  engram__rbuf_arg_begin(b, r->prefix_len + 2 + k + 1 + ns_len + extra);
  engram__rbuf_raw(b, r->prefix, r->prefix_len);
  engram__rbuf_raw(b, tag, 2);
  engram__rbuf_raw(b, nl, k);
  engram__rbuf_raw(b, ":", 1);
  engram__rbuf_raw(b, ns, ns_len);
}

void engram__redis_arg_item(const engram__redis_t *r, engram__rbuf_t *b, const char *ns, size_t ns_len, const char *key,
                            size_t key_len) {
  ns_key_begin(r, b, "i:", ns, ns_len, 1 + key_len);
  engram__rbuf_raw(b, ":", 1);
  engram__rbuf_raw(b, key, key_len);
  engram__rbuf_arg_end(b);
}

void engram__redis_arg_item_prefix(const engram__redis_t *r, engram__rbuf_t *b, const char *ns, size_t ns_len) {
  ns_key_begin(r, b, "i:", ns, ns_len, 1);
  engram__rbuf_raw(b, ":", 1);
  engram__rbuf_arg_end(b);
}

void engram__redis_arg_index(const engram__redis_t *r, engram__rbuf_t *b, const char *ns, size_t ns_len) {
  ns_key_begin(r, b, "x:", ns, ns_len, 0);
  engram__rbuf_arg_end(b);
}

void engram__redis_arg_gen(const engram__redis_t *r, engram__rbuf_t *b, const char *ns, size_t ns_len) {
  ns_key_begin(r, b, "g:", ns, ns_len, 0);
  engram__rbuf_arg_end(b);
}

/* A ZRANGEBYLEX bound: mark ('(', '[' or '-') followed by s[0..n), in a buffer grown as needed. */
int engram__redis_set_bound(char **buf, size_t *cap, size_t *len, char mark, const char *s, size_t n) {
  if (*cap < n + 2) {
    char *p = engram_realloc(*buf, n + 2);
    if (p == NULL) return ENGRAM_ENOMEM;
    *buf = p;
    *cap = n + 2;
  }
  (*buf)[0] = mark;
  memcpy(*buf + 1, s, n);
  *len = n + 1;
  return 0;
}

void engram__redis_arg_nsset(const engram__redis_t *r, engram__rbuf_t *b) {
  engram__rbuf_arg_begin(b, r->prefix_len + 10);
  engram__rbuf_raw(b, r->prefix, r->prefix_len);
  engram__rbuf_raw(b, "namespaces", 10);
  engram__rbuf_arg_end(b);
}

void engram__redis_begin_script(const engram__redis_t *r, engram__rbuf_t *b, int script, int nkeys, int nargs) {
  engram__rbuf_array(b, (size_t)(3 + nkeys + nargs));
  engram__rbuf_arg(b, "EVALSHA", 7);
  engram__rbuf_arg(b, r->conn.sha[script], 40);
  engram__rbuf_arg_i64(b, nkeys);
}

int64_t engram__redis_int(const redisReply *reply, int64_t def) {
  if (reply == NULL) return def;
  if (reply->type == REDIS_REPLY_INTEGER) return reply->integer;
  if (reply->type == REDIS_REPLY_STRING && reply->len > 0 && reply->len < 20) {
    const char *p = reply->str, *end = reply->str + reply->len;
    int neg = *p == '-';
    int64_t v = 0;
    if (neg) p++;
    if (p == end) return def;
    for (; p < end; p++) {
      if (*p < '0' || *p > '9') return def;
      v = v * 10 + (*p - '0');
    }
    return neg ? -v : v;
  }
  return def;
}
