/*
 * registry.c — source types by name, for JSON configuration ("type": "sqlite"). The built-in types are always
 * there; engram_register_source_type adds a user's own backend. Guarded by a mutex: any thread may register
 * or look up.
 */
#include <string.h>
#include <uv.h>

#include "engram/source.h"
#include "error.h"
#include "registry.h"

#define MAX_TYPES 64

typedef struct {
  char name[ENGRAM_SOURCE_NAME_MAX + 1];
  const engram_source_vtable_t *vt;
} type_entry_t;

static type_entry_t user_types[MAX_TYPES];
static size_t n_user_types;
static uv_once_t once = UV_ONCE_INIT;
static uv_mutex_t mutex;

static void init_mutex(void) { uv_mutex_init(&mutex); }

static const engram_source_vtable_t *builtin(const char *type) {
  size_t i;
  for (i = 0; engram__builtin_sources[i] != NULL; i++)
    if (strcmp(engram__builtin_sources[i]->name, type) == 0) return engram__builtin_sources[i];
  return NULL;
}

const engram_source_vtable_t *engram_source_type(const char *type) {
  const engram_source_vtable_t *vt;
  size_t i;
  if (type == NULL) return NULL;
  if ((vt = builtin(type)) != NULL) return vt;
  uv_once(&once, init_mutex);
  uv_mutex_lock(&mutex);
  for (i = 0; i < n_user_types; i++)
    if (strcmp(user_types[i].name, type) == 0) vt = user_types[i].vt;
  uv_mutex_unlock(&mutex);
  return vt;
}

int engram__check_vtable(const engram_source_vtable_t *vt);

int engram_register_source_type(const char *type, const engram_source_vtable_t *vtable) {
  int rc = 0;
  engram__error_clear();
  if (type == NULL || type[0] == '\0' || strlen(type) > ENGRAM_SOURCE_NAME_MAX)
    return engram__error(ENGRAM_EINVAL, "type: must be 1..%d bytes", ENGRAM_SOURCE_NAME_MAX);
  if (engram__check_vtable(vtable) != 0) return ENGRAM_EINVAL;
  if (engram_source_type(type) != NULL) return engram__error(ENGRAM_EEXIST, "type '%s' is already registered", type);
  uv_once(&once, init_mutex);
  uv_mutex_lock(&mutex);
  if (n_user_types == MAX_TYPES) {
    rc = engram__error(ENGRAM_ENOMEM, "too many source types (%d)", MAX_TYPES);
  } else {
    snprintf(user_types[n_user_types].name, sizeof user_types[n_user_types].name, "%s", type);
    user_types[n_user_types++].vt = vtable;
  }
  uv_mutex_unlock(&mutex);
  return rc;
}
