/* probe_source.h — a recording test backend (probe_source.c) for manager and runtime tests. */
#ifndef ENGRAM_TEST_PROBE_H
#define ENGRAM_TEST_PROBE_H

#include "engram/source.h"

typedef struct {
  int opens, closes, calls;
  int held_answered_at_close;
  engram_op_t last_op;
  unsigned last_flags;
  uint64_t last_if_version;
  int64_t last_expires_at_ms, last_now_ms;
  char last_ns[300];
  char last_key[1100];
  char *last_metadata;
} probe_stats_t;

extern probe_stats_t probe_stats;
/* Options: {"fail_open": "reason"} fails open with ENGRAM_EUNAVAILABLE; {"hold": true} keeps every call
 * without completing it; {"fail_calls": true} fails every call with ENGRAM_EBACKEND "probe says no";
 * {"max_inflight": n} sets the source's window with engram_source_set_max_inflight at open. */
extern const engram_source_vtable_t probe_source;
/* The same, on an actor thread of its own. probe_release / probe_held are then not thread-safe: tests use
 * them only with probe_source. */
extern const engram_source_vtable_t probe_source_threaded;

/* Completes every held call with status (home loop); returns how many. */
size_t probe_release(int status);
size_t probe_held(void);
void probe_reset(void);

#endif
