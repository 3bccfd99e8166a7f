/*
 * table.c — a source's complete method table, filled once when the source is added. Every operation gets the
 * backend's method when it has one and the core's emulation (emulate.c) when it does not, and info gets the
 * core's wrapper (info.c) around the backend's part, and a successful write passes through evict.c (the
 * max_items_per_namespace retention option); the actor then dispatches through one table and never
 * asks which methods a backend supplied. search and list_keys go through order.c, which calls the backend's own
 * method unless the call asked for an order the core applies; count, clear and list_keys over a namespace prefix,
 * and list_namespaces, go through prefix.c. Like SQLite's virtual tables, the vtable is
 * versioned: a slot that a later version of the contract appends is read only when vt->version says the backend
 * knows it, so a backend compiled against an older source.h (a shorter struct) is never read past its end.
 */
#include "actor/emulate.h"
#include "actor/evict.h"
#include "actor/follow.h"
#include "actor/info.h"
#include "actor/order.h"
#include "actor/prefix.h"
#include "actor/spin.h"
#include "actor/table.h"

static engram__method_fn or_emulate(engram__method_fn fn) { return fn != NULL ? fn : engram__emulate; }

void engram__table_fill(engram__table_t *t, const engram_source_vtable_t *vt) {
  unsigned i;
  for (i = 0; i < ENGRAM__OP_SLOTS; i++) t->op[i] = NULL;
  /* Version 1: the required methods and the first optional ones. */
  t->op[ENGRAM_OP_STORE] = vt->store;
  t->op[ENGRAM_OP_RETRIEVE] = vt->retrieve;
  t->op[ENGRAM_OP_SEARCH] = engram__order_search; /* the backend's search, or the core's ordering around it */
  t->op[ENGRAM_OP_DELETE] = vt->del;
  t->op[ENGRAM_OP_LIST_KEYS] = engram__prefix_list_keys; /* a prefix walk (prefix.c), else order.c's */
  t->op[ENGRAM_OP_STORE_MANY] = or_emulate(vt->store_many);
  t->op[ENGRAM_OP_RETRIEVE_MANY] = or_emulate(vt->retrieve_many);
  t->op[ENGRAM_OP_DELETE_MANY] = or_emulate(vt->delete_many);
  t->count = or_emulate(vt->count);
  t->op[ENGRAM_OP_COUNT] = engram__prefix_count;
  t->op[ENGRAM_OP_EXISTS] = or_emulate(vt->exists);
  t->op[ENGRAM_OP_UPDATE] = or_emulate(vt->update);
  t->clear = or_emulate(vt->clear);
  t->op[ENGRAM_OP_CLEAR] = engram__prefix_clear;
  t->op[ENGRAM_OP_LIST_NAMESPACES] = engram__prefix_run; /* the core's, from list_keys (prefix.c) */
  t->op[ENGRAM_OP_INFO] = engram__info_start;
  t->backend_info = or_emulate(vt->info);
  t->after_write = engram__evict_after_write; /* max_items_per_namespace; does nothing without it */
  t->writes_native = (vt->flags & ENGRAM_SOURCE_UPDATE_WRITES) && vt->update != NULL;
  t->follow_writes = engram__follow_writes;
  t->spin_ns = (vt->flags & ENGRAM_SOURCE_OWN_THREAD) ? engram__spin_budget_ns() : 0;
  t->spin_wait = engram__spin_wait;
  t->saw_write = engram__emulate_saw_write; /* emulated updates' stale reads; called only while one is reading */
  /* Slots appended by later versions are read here, each under `if (vt->version >= N)`. */
}
