/*
 * retention.h — the retention options every source accepts, whatever its type (retention.c): default_ttl_ms,
 * the expiry given to writes that carry no TTL, and max_items_per_namespace, the most items a namespace keeps
 * (the oldest by created_at_ms are evicted after a write, evict.c). The core reads them out of a source's options before the
 * backend sees its own (so no backend lists them, and a backend's unknown-option check never meets them) and
 * applies them to each request as the actor starts it, so every source — built-in or a user's — behaves alike.
 */
#ifndef ENGRAM_RETENTION_H
#define ENGRAM_RETENTION_H

#include "engram/source.h"

/* The largest default_ttl_ms: 2^53, the largest integer a JSON number holds exactly. */
#define ENGRAM__RETENTION_MAX ((uint64_t)1 << 53)

typedef struct {
  int64_t default_ttl_ms; /* 0 = none: a write without a TTL never expires */
  uint64_t max_items;     /* max_items_per_namespace; 0 = no limit */
} engram__retention_t;

/* Non-zero when options (a JSON object or NULL) holds a retention option. */
int engram__retention_present(const cJSON *options);
/* Reads and checks the retention options of options (a JSON object or NULL) into *out (zeroed when absent):
 * 0, or ENGRAM_EINVAL with a message naming the option in err (errlen bytes). With detach non-zero, the
 * options are removed from the object (options then holds the backend's own only). Any thread. */
int engram__retention_take(cJSON *options, int detach, engram__retention_t *out, char *err, size_t errlen);
/* Applies the retention options to a request the actor is starting: a store without an expiry (not a
 * replica), the entries of a store_many without a TTL of their own, and an update without ENGRAM_OPT_TTL (whose
 * expires_at_ms a backend uses only when the update creates the key) get now_ms + default_ttl_ms. Actor thread. */
void engram__retention_apply(const engram__retention_t *r, engram_request_t *req);

#endif
