/*
 * registry.c — source types by name, for JSON configuration ("type": "sqlite"). The built-in types are always
 * there; engram_register_source_type adds a user's own backend. Guarded by a mutex: any thread may register
 * or look up.
 */
#include <string.h>
#include <uv.h>

#include "actor/placement.h"
#include "actor/retention.h"
#include "engram/source.h"
#include "manager/builtin.h"
#include "manager/registry.h"
#include "shared/error.h"

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

int engram__vtable_check(const engram_source_vtable_t *vt) {
  if (vt == NULL) return engram__error(ENGRAM_EINVAL, "vtable: NULL");
  if (vt->version < 1) return engram__error(ENGRAM_EINVAL, "vtable.version: %d, must be ≥ 1", vt->version);
  if (vt->name == NULL) return engram__error(ENGRAM_EINVAL, "vtable.name: NULL");
  if (!vt->open || !vt->store || !vt->retrieve || !vt->search || !vt->del || !vt->list_keys)
    return engram__error(ENGRAM_EINVAL, "vtable '%s': open, store, retrieve, search, del and list_keys are required",
                         vt->name);
  return 0;
}

static int valid_source_name(const char *name) {
  size_t i, len = strlen(name);
  if (len == 0 || len > ENGRAM_SOURCE_NAME_MAX) return 0;
  for (i = 0; i < len; i++) {
    char c = name[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.'))
      return 0;
  }
  return 1;
}

int engram__options_check(const char *where, const engram_source_vtable_t *vt, const cJSON *options) {
  char err[256];
  engram__retention_t r;
  cJSON *own = NULL;
  int rc, own_thread;
  err[0] = '\0';
  /* The retention options every source accepts (actor/retention.h) are the core's: checked here, and taken
   * out before the backend checks the rest, as they are taken out before its open. */
  if (engram__retention_take((cJSON *)options, 0, &r, err, sizeof err) != 0)
    return engram__error(ENGRAM_EINVAL, "%soptions: %s", where, err);
  /* So is "thread", where the actor runs (actor/placement.h). */
  if (engram__placement_take((cJSON *)options, 0, vt, &own_thread, err, sizeof err) != 0)
    return engram__error(ENGRAM_EINVAL, "%soptions: %s", where, err);
  /* The slot exists only in version 2 and later: a version-1 struct ends before it. */
  if (vt->version < 2 || vt->check_options == NULL) return 0;
  if (engram__retention_present(options) || engram__placement_present(options)) {
    if ((own = cJSON_Duplicate(options, 1)) == NULL) return engram__error(ENGRAM_ENOMEM, "out of memory");
    (void)engram__retention_take(own, 1, &r, err, sizeof err);
    (void)engram__placement_take(own, 1, vt, &own_thread, err, sizeof err);
    options = own;
  }
  rc = vt->check_options(options, err, sizeof err);
  cJSON_Delete(own);
  if (rc == 0) return 0;
  return engram__error(ENGRAM_EINVAL, "%soptions: %s", where, err[0] ? err : "refused by the source");
}

int engram__source_name_check(const char *where, const char *name) {
  if (name == NULL) return engram__error(ENGRAM_EINVAL, "%sname: NULL", where);
  if (!valid_source_name(name)) {
    /* Quote only what is safe to quote: the name may be anything, including invalid UTF-8. */
    size_t len = strlen(name);
    if (len == 0) return engram__error(ENGRAM_EINVAL, "%sname: empty, must be 1..%d bytes of [A-Za-z0-9_.-]", where,
                                       ENGRAM_SOURCE_NAME_MAX);
    if (len > ENGRAM_SOURCE_NAME_MAX)
      return engram__error(ENGRAM_EINVAL, "%sname: %zu bytes, must be 1..%d bytes of [A-Za-z0-9_.-]", where, len,
                           ENGRAM_SOURCE_NAME_MAX);
    return engram__error(ENGRAM_EINVAL, "%sname: holds a character outside [A-Za-z0-9_.-]", where);
  }
  return 0;
}

int engram__source_args_check(const char *where, const char *name, const engram_source_vtable_t *vt,
                              const char *description) {
  if (engram__source_name_check(where, name) != 0) return ENGRAM_EINVAL;
  if (engram__vtable_check(vt) != 0) return ENGRAM_EINVAL;
  if (description != NULL && !engram_utf8_valid(description, strlen(description)))
    return engram__error(ENGRAM_EINVAL, "%sdescription: invalid UTF-8", where);
  return 0;
}

int engram_register_source_type(const char *type, const engram_source_vtable_t *vtable) {
  int rc = 0;
  engram__error_clear();
  if (type == NULL || !valid_source_name(type)) /* a type name is quoted in messages and written in configs */
    return engram__error(ENGRAM_EINVAL, "type: must be 1..%d bytes of [A-Za-z0-9_.-]", ENGRAM_SOURCE_NAME_MAX);
  if (engram__vtable_check(vtable) != 0) return ENGRAM_EINVAL;
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
