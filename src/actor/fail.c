/*
 * fail.c — the failing completions a backend calls: engram_request_fail (a status and a printf-style message,
 * prefixed with the source's name) and the stock completions whose wording docs/writing-a-source.md requires
 * to be identical on every source (not found, already exists, version conflict). One place writes each
 * message, so a conformance test can compare them across sources.
 */
#include <stdarg.h>

#include "actor/actor.h"

void engram_request_fail(engram_request_t *req, int status, const char *fmt, ...) {
  va_list ap;
  if (fmt != NULL) {
    va_start(ap, fmt);
    engram__request_set_message_v(req, fmt, ap);
    va_end(ap);
  }
  engram_request_complete(req, status);
}

void engram_request_fail_not_found(engram_request_t *req, const char *key) {
  engram_request_fail(req, ENGRAM_ENOTFOUND, "no memory found for key: %s", key ? key : req->key);
}

void engram_request_fail_exists(engram_request_t *req, const char *key) {
  engram_request_fail(req, ENGRAM_EEXIST, "key '%s' already exists", key ? key : req->key);
}

void engram_request_fail_conflict(engram_request_t *req, const char *key, uint64_t if_version) {
  engram_request_fail(req, ENGRAM_ECONFLICT, "key '%s': version is not %llu", key ? key : req->key,
                      (unsigned long long)if_version);
}
