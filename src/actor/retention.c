/*
 * retention.c — the retention options every source accepts (retention.h): default_ttl_ms gives writes that
 * carry no TTL an expiry. Implemented once here, over the request as the contract defines it, rather than in
 * each backend: the core takes the option out of the source's options before the backend checks or opens
 * them, and stamps the expiry on the request as the actor starts it, where every backend already reads it
 * (expires_at_ms of a store, entry_expires_at_ms of a store_many). An update is the one write whose expiry
 * depends on the item: without ENGRAM_OPT_TTL it keeps an existing item's expiry, so the default is stamped in
 * expires_at_ms and a backend applies it only when the update creates the key (docs/writing-a-source.md).
 * max_items_per_namespace is read here too; evict.c applies it after each write.
 */
#include <stdio.h>
#include <string.h>

#include "actor/retention.h"
#include "request/request.h"

static const char *const names[] = {"default_ttl_ms", "max_items_per_namespace", NULL};

int engram__retention_present(const cJSON *options) {
  size_t i;
  if (!cJSON_IsObject(options)) return 0;
  for (i = 0; names[i] != NULL; i++)
    if (cJSON_GetObjectItemCaseSensitive(options, names[i]) != NULL) return 1;
  return 0;
}

int engram__retention_take(cJSON *options, int detach, engram__retention_t *out, char *err, size_t errlen) {
  uint64_t ttl;
  const cJSON *k;
  size_t i;
  memset(out, 0, sizeof *out);
  if (!cJSON_IsObject(options)) return 0;
  /* A name given twice: cJSON reads the first, so refuse it rather than silently keep one. */
  for (i = 0; names[i] != NULL; i++) {
    int seen = 0;
    for (k = options->child; k != NULL; k = k->next)
      if (k->string != NULL && strcmp(k->string, names[i]) == 0) seen++;
    if (seen > 1) {
      snprintf(err, errlen, "option \"%s\" given twice", names[i]);
      return ENGRAM_EINVAL;
    }
  }
  if (engram_opt_uint(options, "default_ttl_ms", 0, 0, ENGRAM__RETENTION_MAX, &ttl, err, errlen) != 0)
    return ENGRAM_EINVAL;
  out->default_ttl_ms = (int64_t)ttl;
  /* The eviction reads a namespace through an ordered search (order.c), which holds at most ENGRAM_ORDER_MAX. */
  if (engram_opt_uint(options, "max_items_per_namespace", 0, 0, ENGRAM_ORDER_MAX, &out->max_items, err, errlen) != 0)
    return ENGRAM_EINVAL;
  if (detach)
    for (i = 0; names[i] != NULL; i++) cJSON_DeleteItemFromObjectCaseSensitive(options, names[i]);
  return 0;
}

void engram__retention_apply(const engram__retention_t *r, engram_request_t *req) {
  size_t i;
  if (r->default_ttl_ms <= 0) return;
  switch (req->op) {
    case ENGRAM_OP_STORE:
      /* A replica is written exactly as given; a store with a TTL (ttl_ms ≥ 0 makes expires_at_ms ≥ now_ms > 0)
       * keeps its own. */
      if (!(req->flags & ENGRAM_REQ_REPLICA) && !(req->flags & ENGRAM_OPT_TTL) && req->expires_at_ms == 0)
        req->expires_at_ms = req->now_ms + r->default_ttl_ms;
      break;
    case ENGRAM_OP_STORE_MANY:
      /* a batch of replicas (ENGRAM_SOURCE_REPLICA_MANY) is written exactly as given, as a replica store is */
      if (req->entries == NULL || req->entry_expires_at_ms == NULL || (req->flags & ENGRAM_REQ_REPLICA)) break;
      for (i = 0; i < req->n; i++) {
        if (req->entries[i].has_ttl) continue;
        req->entries[i].has_ttl = 1;
        req->entries[i].ttl_ms = r->default_ttl_ms;
        req->entry_expires_at_ms[i] = req->now_ms + r->default_ttl_ms;
      }
      break;
    case ENGRAM_OP_UPDATE:
      if (!(req->flags & ENGRAM_OPT_TTL)) req->expires_at_ms = req->now_ms + r->default_ttl_ms;
      /* its writes without an expiry get the default too, as the same stores made apart would */
      if (req->priv->writes_src != NULL) req->priv->writes_default_expires = req->now_ms + r->default_ttl_ms;
      break;
    default: break;
  }
}
