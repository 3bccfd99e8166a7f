/*
 * find_here.h — the source named name in the manager's table, found on the home loop without the table's lock
 * (read_now.c). The table is written only on the home loop (adds and removals are control messages handled
 * there), so a reader on that thread sees it whole without the lock, which only keeps readers on other threads
 * from seeing it half-written. The home-loop services a composite source calls on every call — the source-call
 * service (call.c) and the read-now and write-now services (read_now.c) — look their targets up this way: the
 * lock pair and the shared hint were a tenth of what a call to a tier adds on the home loop. So do the public
 * calls made inside a callback the home loop runs (ops.c).
 */
#ifndef ENGRAM_MANAGER_FIND_HERE_H
#define ENGRAM_MANAGER_FIND_HERE_H

#include "manager/manager.h"

/* The source named name (not NULL), or NULL. Home loop only. */
engram_source_t *engram__manager_find_here(engram_manager_t *mgr, const char *name);
/* The default source, or NULL when there is none or it is changing: engram_manager_set_default_source may move it
 * from any thread (under the write lock), so the sources' atomic is_default flags are read, not default_idx;
 * NULL while no flag is set, and while two are, either may be returned (a call made during the change may go to
 * the old default or the new). Home loop only. */
engram_source_t *engram__manager_default_here(engram_manager_t *mgr);

#endif
