/*
 * events_api.c — engram_events_subscribe (include/engram/events.h): checks the manager and its arguments and
 * hands the rest to the manager's registry of subscriptions (events.c). Apart from events.c because it needs the
 * manager's struct, which events.c must not name (manager.c uses events.c: the files of a layer form no cycle).
 */
#include "manager/events.h"
#include "manager/manager.h"
#include "shared/error.h"

int engram_events_subscribe(engram_manager_t *mgr, const engram_subscribe_opts_t *opts, engram_event_cb cb, void *ud,
                            engram_subscription_t **out) {
  engram__error_clear();
  if (out != NULL) *out = NULL;
  if (mgr == NULL) return engram__error(ENGRAM_EINVAL, "mgr: NULL");
  if (cb == NULL) return engram__error(ENGRAM_EINVAL, "cb: NULL");
  if (out == NULL) return engram__error(ENGRAM_EINVAL, "out: NULL");
  if (atomic_load(&mgr->closed)) return engram__error(ENGRAM_ECLOSED, "manager: closed");
  return engram__events_subscribe(&mgr->events, opts, cb, ud, out);
}
