/*
 * placement.h — where a source's actor runs, chosen per instance (placement.c): the "thread" option every
 * source accepts, "own" (a thread and loop of the actor's own) or "home" (the manager's home loop, like the
 * cache). The vtable's ENGRAM_SOURCE_OWN_THREAD flag is the default; the option overrides it for one source,
 * e.g. a SQLite source on the caller's loop, which then runs exactly as a raw SQLite client on that loop would
 * (no thread crossing per call; a slow query or a checkpoint copy then blocks the home loop). Like the
 * retention options (retention.h), the core reads it out of the options before the backend checks or opens
 * them, so no backend lists it; the manager hands the result to the actor it creates (engram__actor_config_t).
 */
#ifndef ENGRAM_ACTOR_PLACEMENT_H
#define ENGRAM_ACTOR_PLACEMENT_H

#include "engram/source.h"

/* Non-zero when options (a JSON object or NULL) holds the "thread" option. */
int engram__placement_present(const cJSON *options);
/* Reads and checks options' "thread" for a source of type vt: *own_thread is 1 when its actor gets a thread of its
 * own — vt's ENGRAM_SOURCE_OWN_THREAD when the option is absent, else the option's choice. "own" is refused for a
 * type without the flag (its backend was written for the home loop). 0, or ENGRAM_EINVAL with a message naming
 * the option in err (errlen bytes). With detach non-zero the option is removed from the object. Any thread. */
int engram__placement_take(cJSON *options, int detach, const engram_source_vtable_t *vt, int *own_thread, char *err,
                           size_t errlen);

#endif
