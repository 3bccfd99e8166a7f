/*
 * info.c — a source's info: the core's own view of the actor (type, description, default, health, mailbox
 * depth, in-flight count, operation and error counters, latency percentiles) merged with the fields the
 * backend reports (items, bytes, ...). Runs on the actor thread, where every counter it reads is written. It is
 * the info entry of every source's method table (table.c); the backend's part is the table's backend_info.
 */
#include <math.h>
#include <string.h>

#include "actor/actor.h"
#include "actor/info.h"

static const char *health_name(int h) {
  switch (h) {
    case ENGRAM_HEALTH_CONNECTED: return "connected";
    case ENGRAM_HEALTH_RECONNECTING: return "reconnecting";
    default: return "down";
  }
}

/* The upper bound (µs) of histogram bucket b (see latency_record in actor.c). */
static double bucket_us(unsigned b) {
  if (b == 0) return 0;
  b -= 1;
  return ldexp(1.0 + (double)((b % 4) + 1) / 4.0, (int)(b / 4));
}

static double percentile(const engram_source_t *src, double p) {
  uint64_t total = 0, seen = 0, want;
  unsigned b;
  for (b = 0; b < ENGRAM__LAT_BUCKETS; b++) total += src->lat[b];
  if (total == 0) return 0;
  want = (uint64_t)ceil(p * (double)total);
  if (want == 0) want = 1;
  for (b = 0; b < ENGRAM__LAT_BUCKETS; b++) {
    seen += src->lat[b];
    if (seen >= want) return bucket_us(b);
  }
  return bucket_us(ENGRAM__LAT_BUCKETS - 1);
}

static void info_backend_done(engram_request_t *sub) {
  engram_request_t *parent = sub->priv->parent;
  engram_source_t *src = parent->priv->actor;
  cJSON *info = parent->priv->info, *child;
  int status = sub->priv->status;
  if (status == 0 && sub->priv->info != NULL) {
    /* The backend's fields join the core's; the core's own names win. */
    while ((child = sub->priv->info->child) != NULL) {
      cJSON_DetachItemViaPointer(sub->priv->info, child);
      if (cJSON_GetObjectItemCaseSensitive(info, child->string) != NULL) cJSON_Delete(child);
      else cJSON_AddItemToObject(info, child->string, child) ? (void)0 : cJSON_Delete(child);
    }
  } else if (status != 0) {
    cJSON_AddStringToObject(info, "info_error", sub->priv->message);
  }
  engram__request_unref(sub);
  (void)src;
  engram_request_complete(parent, 0);
}

void engram__info_start(engram_source_t *src, engram_request_t *req) {
  cJSON *info = cJSON_CreateObject(), *lat;
  engram_request_t *sub;
  int ok = info != NULL;
  ok = ok && cJSON_AddStringToObject(info, "name", src->name);
  ok = ok && cJSON_AddStringToObject(info, "type", src->vt->name);
  ok = ok && cJSON_AddStringToObject(info, "description", src->description ? src->description : "");
  ok = ok && cJSON_AddBoolToObject(info, "default", atomic_load(&src->is_default));
  ok = ok && cJSON_AddStringToObject(info, "health", health_name(atomic_load(&src->health)));
  ok = ok && cJSON_AddStringToObject(info, "thread", src->own_thread ? "own" : "home");
  ok = ok && cJSON_AddNumberToObject(info, "mailbox_depth", (double)engram__mailbox_depth(&src->mb));
  ok = ok && cJSON_AddNumberToObject(info, "mailbox_capacity", (double)src->mb.capacity);
  ok = ok && cJSON_AddNumberToObject(info, "inflight", (double)src->inflight_n);
  ok = ok && cJSON_AddNumberToObject(info, "max_inflight", (double)src->max_inflight);
  ok = ok && cJSON_AddNumberToObject(info, "ops", (double)src->ops);
  ok = ok && cJSON_AddNumberToObject(info, "errors", (double)src->errors);
  ok = ok && (lat = cJSON_AddObjectToObject(info, "latency_us")) != NULL;
  ok = ok && cJSON_AddNumberToObject(lat, "p50", percentile(src, 0.50));
  ok = ok && cJSON_AddNumberToObject(lat, "p99", percentile(src, 0.99));
  ok = ok && cJSON_AddNumberToObject(lat, "p999", percentile(src, 0.999));
  if (!ok) {
    cJSON_Delete(info);
    engram_request_complete(req, ENGRAM_ENOMEM);
    return;
  }
  engram_reply_set_info(req, info);
  sub = engram__subrequest(req, ENGRAM_OP_INFO, NULL, req->ns, info_backend_done);
  if (sub == NULL) {
    engram_request_complete(req, ENGRAM_ENOMEM);
    return;
  }
  src->table.backend_info(src, sub); /* the backend's own info, or the emulated one */
}
