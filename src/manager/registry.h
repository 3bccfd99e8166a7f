/*
 * registry.h — source types by name (registry.c), and the checks every way of adding a source applies.
 */
#ifndef ENGRAM_REGISTRY_H
#define ENGRAM_REGISTRY_H

#include "engram/source.h"

/* 0, or ENGRAM_EINVAL with the calling thread's last error naming what is wrong with vt (NULL, version, name,
 * a required method missing). */
int engram__vtable_check(const engram_source_vtable_t *vt);
/* A source name: 1..64 bytes of [A-Za-z0-9_.-]. 0, or ENGRAM_EINVAL with the last error set (the name is never
 * quoted when it is wrong: it may be anything). */
int engram__source_name_check(const char *where, const char *name);
/* The checks of engram_manager_add_source, applied by engram_manager_configure too: name (1..64 bytes of
 * [A-Za-z0-9_.-]), vt, description (valid UTF-8, NULL allowed). where prefixes the message ("" or
 * "sources[2]."). 0 or ENGRAM_EINVAL with the last error set. */
int engram__source_args_check(const char *where, const char *name, const engram_source_vtable_t *vt,
                              const char *description);

/* Checks the retention options every source accepts (actor/retention.h) and "thread" (actor/placement.h), then runs vt's check_options on the
 * rest when vt has one (version ≥ 2): 0, or ENGRAM_EINVAL with the last error set to "<where>options: <the
 * message>" (ENGRAM_ENOMEM when a copy fails). Any thread. */
int engram__options_check(const char *where, const engram_source_vtable_t *vt, const cJSON *options);

#endif
