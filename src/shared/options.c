/*
 * options.c — the option readers every backend uses on its open() options (a JSON object): unsigned integers
 * with bounds, booleans and strings, and the check that refuses an unknown option name by listing the known
 * ones. One implementation, so every source words the same mistake the same way and names the option.
 * Messages are cut on UTF-8 character boundaries: a caller's option name may be any text.
 */
#include <stdio.h>
#include <string.h>

#include "engram/source.h"
#include "text_cut.h"

int engram_opt_check_names(const cJSON *options, const char *const *known, char *err, size_t errlen) {
  const cJSON *k;
  size_t i, p;
  if (options == NULL) return 0;
  if (!cJSON_IsObject(options)) {
    snprintf(err, errlen, "options: must be a JSON object");
    return ENGRAM_EINVAL;
  }
  for (k = options->child; k != NULL; k = k->next) {
    for (i = 0; known[i] != NULL && strcmp(known[i], k->string) != 0; i++) {
    }
    if (known[i] != NULL) {
      /* A name given twice: cJSON would read the first and silently drop the second. */
      const cJSON *d;
      for (d = options->child; d != k && strcmp(d->string, k->string) != 0; d = d->next) {
      }
      if (d == k) continue;
      if (errlen == 0) return ENGRAM_EINVAL;
      p = (size_t)snprintf(err, errlen, "option \"");
      p = engram__text_append_cut(err, errlen, p, k->string, 64);
      engram__text_append_cut(err, errlen, p, "\" given twice", (size_t)-1);
      return ENGRAM_EINVAL;
    }
    if (errlen == 0) return ENGRAM_EINVAL;
    p = (size_t)snprintf(err, errlen, "unknown option \"");
    p = engram__text_append_cut(err, errlen, p, k->string, 64);
    p = engram__text_append_cut(err, errlen, p, "\" (known: ", (size_t)-1);
    for (i = 0; known[i] != NULL; i++) {
      if (i > 0) p = engram__text_append_cut(err, errlen, p, ", ", (size_t)-1);
      p = engram__text_append_cut(err, errlen, p, known[i], (size_t)-1);
    }
    engram__text_append_cut(err, errlen, p, ")", (size_t)-1);
    return ENGRAM_EINVAL;
  }
  return 0;
}

int engram_opt_uint(const cJSON *options, const char *name, uint64_t def, uint64_t min, uint64_t max, uint64_t *out,
                    char *err, size_t errlen) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(options, name);
  *out = def;
  if (v == NULL) return 0;
  if (!cJSON_IsNumber(v) || v->valuedouble < (double)min || v->valuedouble > (double)max ||
      v->valuedouble != (double)(uint64_t)v->valuedouble) {
    snprintf(err, errlen, "option \"%s\": %s, must be an integer in %llu..%llu", name,
             cJSON_IsNumber(v) ? "out of range" : "not a number", (unsigned long long)min, (unsigned long long)max);
    return ENGRAM_EINVAL;
  }
  *out = (uint64_t)v->valuedouble;
  return 0;
}

int engram_opt_bool(const cJSON *options, const char *name, int def, int *out, char *err, size_t errlen) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(options, name);
  *out = def;
  if (v == NULL) return 0;
  if (!cJSON_IsBool(v)) {
    snprintf(err, errlen, "option \"%s\": must be true or false", name);
    return ENGRAM_EINVAL;
  }
  *out = cJSON_IsTrue(v);
  return 0;
}

int engram_opt_string(const cJSON *options, const char *name, const char *def, size_t max_bytes, const char **out,
                      char *err, size_t errlen) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(options, name);
  size_t len;
  *out = def;
  if (v == NULL) return 0;
  if (!cJSON_IsString(v) || v->valuestring[0] == '\0') {
    snprintf(err, errlen, "option \"%s\": must be a non-empty string", name);
    return ENGRAM_EINVAL;
  }
  len = strlen(v->valuestring);
  if (!engram_utf8_valid(v->valuestring, len)) {
    snprintf(err, errlen, "option \"%s\": not valid UTF-8", name);
    return ENGRAM_EINVAL;
  }
  if (max_bytes != 0 && len > max_bytes) {
    snprintf(err, errlen, "option \"%s\": %zu bytes, the limit is %zu", name, len, max_bytes);
    return ENGRAM_EINVAL;
  }
  *out = v->valuestring;
  return 0;
}
