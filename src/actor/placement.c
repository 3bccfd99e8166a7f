/*
 * placement.c — the "thread" option every source accepts (placement.h): "own" or "home", overriding for one
 * source where its type's vtable flag (ENGRAM_SOURCE_OWN_THREAD) would put its actor. Read here once, for the
 * checks of add_source and configure (manager/registry.c) and for the actor's creation (manager/manager.c), so
 * both read it the same way.
 */
#include <stdio.h>
#include <string.h>

#include "actor/placement.h"

#define NAME "thread"

int engram__placement_present(const cJSON *options) {
  return cJSON_IsObject(options) && cJSON_GetObjectItemCaseSensitive(options, NAME) != NULL;
}

int engram__placement_take(cJSON *options, int detach, const engram_source_vtable_t *vt, int *own_thread, char *err,
                           size_t errlen) {
  int type_own = (vt->flags & ENGRAM_SOURCE_OWN_THREAD) != 0, seen = 0;
  const cJSON *k, *opt = NULL;
  *own_thread = type_own;
  if (!cJSON_IsObject(options)) return 0;
  for (k = options->child; k != NULL; k = k->next)
    if (k->string != NULL && strcmp(k->string, NAME) == 0) {
      opt = k;
      seen++;
    }
  if (opt == NULL) return 0;
  if (seen > 1) {
    snprintf(err, errlen, "option \"" NAME "\" given twice");
    return ENGRAM_EINVAL;
  }
  if (!cJSON_IsString(opt) || opt->valuestring == NULL ||
      (strcmp(opt->valuestring, "own") != 0 && strcmp(opt->valuestring, "home") != 0)) {
    snprintf(err, errlen, "option \"" NAME "\": must be \"own\" or \"home\"");
    return ENGRAM_EINVAL;
  }
  if (strcmp(opt->valuestring, "own") == 0) {
    if (!type_own) {
      snprintf(err, errlen, "option \"" NAME "\": \"own\" is for types that block (ENGRAM_SOURCE_OWN_THREAD); '%s' runs "
               "on the home loop", vt->name);
      return ENGRAM_EINVAL;
    }
    *own_thread = 1;
  } else {
    *own_thread = 0;
  }
  if (detach) cJSON_DeleteItemFromObjectCaseSensitive(options, NAME);
  return 0;
}
