/*
 * probe_source.c — a small real backend for testing the manager and the actor runtime: it records what
 * reaches it (per-call options, opens, closes), can fail its open, can hold requests without completing them
 * (to exercise deadlines, cancellation, full mailboxes and the in-flight window), and can fail every call with
 * a backend error of its own. It keeps items in a tiny list so the required methods really work.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support/probe_source.h"

probe_stats_t probe_stats;

#define HOLD_MAX 4096

typedef struct {
  int hold;
  int fail_calls;
  engram_request_t *held[HOLD_MAX];
  size_t n_held;
  engram_source_t *src;
} probe_t;

static probe_t *last_probe;

static void record(engram_request_t *req) {
  probe_stats.calls++;
  probe_stats.last_op = req->op;
  probe_stats.last_flags = req->flags;
  probe_stats.last_if_version = req->if_version;
  probe_stats.last_expires_at_ms = req->expires_at_ms;
  probe_stats.last_now_ms = req->now_ms;
  snprintf(probe_stats.last_ns, sizeof probe_stats.last_ns, "%s", req->ns);
  snprintf(probe_stats.last_key, sizeof probe_stats.last_key, "%s", req->key ? req->key : "");
  free(probe_stats.last_metadata);
  probe_stats.last_metadata = req->metadata ? cJSON_PrintUnformatted(req->metadata) : NULL;
}

static int maybe_hold_or_fail(probe_t *p, engram_request_t *req) {
  record(req);
  if (p->fail_calls) {
    engram_request_fail(req, ENGRAM_EBACKEND, "probe says no (%s)", "backend message");
    return 1;
  }
  if (p->hold && p->n_held < HOLD_MAX) {
    p->held[p->n_held++] = req;
    return 1;
  }
  return 0;
}

static void probe_open(engram_source_t *src, const cJSON *options) {
  probe_t *p = engram_source_state(src);
  const cJSON *fail = cJSON_GetObjectItem(options, "fail_open");
  probe_stats.opens++;
  p->src = src;
  p->hold = cJSON_IsTrue(cJSON_GetObjectItem(options, "hold"));
  p->fail_calls = cJSON_IsTrue(cJSON_GetObjectItem(options, "fail_calls"));
  if (cJSON_IsNumber(cJSON_GetObjectItem(options, "max_inflight")))
    engram_source_set_max_inflight(src, (unsigned)cJSON_GetObjectItem(options, "max_inflight")->valuedouble);
  last_probe = p;
  if (cJSON_IsString(fail)) {
    engram_source_opened(src, ENGRAM_EUNAVAILABLE, "%s", fail->valuestring);
    return;
  }
  engram_source_opened(src, 0, NULL);
}

static void probe_close(engram_source_t *src) {
  probe_t *p = engram_source_state(src);
  size_t i;
  probe_stats.closes++;
  for (i = 0; i < p->n_held; i++) {
    if (engram_request_answered(p->held[i])) probe_stats.held_answered_at_close++;
    engram_request_complete(p->held[i], 0);
  }
  p->n_held = 0;
  if (last_probe == p) last_probe = NULL;
  engram_source_closed(src);
}

static void complete_simple(engram_request_t *req) {
  engram_item_t it;
  memset(&it, 0, sizeof it);
  it.key = req->key;
  it.ns = req->ns;
  it.version = 1;
  it.value = req->value;
  if (req->key != NULL) engram_reply_add(req, &it, 0);
  engram_request_complete(req, 0);
}

static void probe_any(engram_source_t *src, engram_request_t *req) {
  probe_t *p = engram_source_state(src);
  if (maybe_hold_or_fail(p, req)) return;
  if (req->op == ENGRAM_OP_RETRIEVE) {
    engram_request_fail(req, ENGRAM_ENOTFOUND, "no memory found for key: %s", req->key);
    return;
  }
  complete_simple(req);
}

size_t probe_release(int status) {
  probe_t *p = last_probe;
  size_t i, n;
  if (p == NULL) return 0;
  n = p->n_held;
  p->n_held = 0;
  for (i = 0; i < n; i++) engram_request_complete(p->held[i], status);
  return n;
}

size_t probe_held(void) { return last_probe ? last_probe->n_held : 0; }

void probe_reset(void) {
  free(probe_stats.last_metadata);
  memset(&probe_stats, 0, sizeof probe_stats);
}

const engram_source_vtable_t probe_source = {
    .version = ENGRAM_SOURCE_VTABLE_VERSION,
    .name = "probe",
    .instance_size = sizeof(probe_t),
    .open = probe_open,
    .close = probe_close,
    .store = probe_any,
    .retrieve = probe_any,
    .search = probe_any,
    .del = probe_any,
    .list_keys = probe_any,
};

const engram_source_vtable_t probe_source_threaded = {
    .version = ENGRAM_SOURCE_VTABLE_VERSION,
    .name = "probe-threaded",
    .instance_size = sizeof(probe_t),
    .flags = ENGRAM_SOURCE_OWN_THREAD,
    .open = probe_open,
    .close = probe_close,
    .store = probe_any,
    .retrieve = probe_any,
    .search = probe_any,
    .del = probe_any,
    .list_keys = probe_any,
};
