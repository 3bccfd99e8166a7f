/*
 * filter.c — the one metadata-filter evaluator, so that a filter selects the same items on every source.
 *
 * A filter is a JSON object; each member names a field of the item's metadata and a condition, and all the
 * members must hold (AND). A field name may use dots to reach into nested objects ("a.b" is metadata.a.b;
 * a name is always read as a path, never as a literal key holding dots). The condition is either a plain
 * value, meaning equality, or an operator object whose keys all start with `$`:
 *
 *   $eq v, $ne v        equality / inequality with any JSON value
 *   $gt $gte $lt $lte   order; v is a number or a string
 *   $in [..], $nin [..] equal to one of / none of the array's values
 *   $exists true|false  the field is present (even as null) / absent
 *
 * Several operators in one object AND together. Comparisons are typed: numbers compare as numbers (3 < 10),
 * strings bytewise (memcmp order, a prefix first), booleans and null only by equality, and arrays and objects
 * by deep equality (same members regardless of order, same elements in order, and inside them the same typed
 * rules: numbers by ==, so a nested 1e400 equals itself and 1 never equals 1.0000000000000002). A type
 * mismatch never matches, except under $ne and $nin, which then match; a missing field matches only $ne, $nin
 * and $exists:false. NULL metadata, or metadata that is not an object, behaves as {}.
 *
 * An object value whose first key does not start with `$` is a plain value compared for deep equality; an
 * empty object is the plain value {}. Top-level field names may not start with `$` (reserved for future
 * logical operators such as $and / $or) and may not be empty or hold an empty path segment.
 * engram_filter_check validates all of this once at submit time; engram_filter_match then assumes a checked
 * filter and treats anything it does not understand as "no match".
 */
#include <stdio.h>
#include <string.h>

#include "engram/source.h"

typedef enum { OP_EQ, OP_NE, OP_GT, OP_GTE, OP_LT, OP_LTE, OP_IN, OP_NIN, OP_EXISTS, OP_UNKNOWN } filter_op_t;

static filter_op_t op_of(const char *name) {
  static const char *const names[] = {"$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists"};
  size_t i;
  for (i = 0; i < sizeof names / sizeof names[0]; i++)
    if (strcmp(name, names[i]) == 0) return (filter_op_t)i;
  return OP_UNKNOWN;
}

/* Non-zero when the object v is an operator object (its first key starts with `$`). */
static int is_operator_object(const cJSON *v) {
  return cJSON_IsObject(v) && v->child != NULL && v->child->string != NULL && v->child->string[0] == '$';
}

/* Writes `filter field "<field>": <a><b><c>` into err and returns ENGRAM_EINVAL. */
static int fail(char *err, size_t errlen, const char *field, const char *a, const char *b, const char *c) {
  if (err != NULL && errlen > 0) snprintf(err, errlen, "filter field \"%s\": %s%s%s", field, a, b, c);
  return ENGRAM_EINVAL;
}

/* Checks a field name: not empty, not starting with `$`, no empty dotted segment. */
static int check_field_name(const char *name, char *err, size_t errlen) {
  size_t n = strlen(name);
  if (n == 0) return fail(err, errlen, name, "empty field name", "", "");
  if (name[0] == '$')
    return fail(err, errlen, name, "field names cannot start with '$' (reserved for operators)", "", "");
  if (name[0] == '.' || name[n - 1] == '.' || strstr(name, "..") != NULL)
    return fail(err, errlen, name, "empty segment in dotted field name", "", "");
  return 0;
}

int engram_filter_check(const cJSON *filter, char *err, size_t errlen) {
  const cJSON *f, *o;
  if (err != NULL && errlen > 0) err[0] = '\0';
  if (filter == NULL) return 0;
  if (!cJSON_IsObject(filter)) {
    if (err != NULL && errlen > 0) snprintf(err, errlen, "filter must be a JSON object");
    return ENGRAM_EINVAL;
  }
  for (f = filter->child; f != NULL; f = f->next) {
    const char *field = f->string != NULL ? f->string : "";
    int rc = check_field_name(field, err, errlen);
    if (rc != 0) return rc;
    if (!is_operator_object(f)) continue; /* A plain value: equality, always valid. */
    for (o = f->child; o != NULL; o = o->next) {
      const char *name = o->string != NULL ? o->string : "";
      switch (op_of(name)) {
        case OP_EQ:
        case OP_NE:
          break;
        case OP_GT:
        case OP_GTE:
        case OP_LT:
        case OP_LTE:
          if (!cJSON_IsNumber(o) && !cJSON_IsString(o))
            return fail(err, errlen, field, name, " needs a number or a string", "");
          break;
        case OP_IN:
        case OP_NIN:
          if (!cJSON_IsArray(o)) return fail(err, errlen, field, name, " needs an array", "");
          break;
        case OP_EXISTS:
          if (!cJSON_IsBool(o)) return fail(err, errlen, field, name, " needs true or false", "");
          break;
        case OP_UNKNOWN:
          if (name[0] != '$')
            return fail(err, errlen, field, "operator object mixes operators with the plain key \"", name, "\"");
          return fail(err, errlen, field, "unknown operator ", name, "");
      }
    }
  }
  return 0;
}

/* Follows a dotted path through nested objects; NULL when any step is missing or not an object. */
static const cJSON *lookup(const cJSON *metadata, const char *path) {
  const cJSON *cur = metadata;
  const char *seg = path;
  for (;;) {
    const char *dot = strchr(seg, '.');
    size_t n = dot != NULL ? (size_t)(dot - seg) : strlen(seg);
    const cJSON *c;
    if (!cJSON_IsObject(cur)) return NULL;
    for (c = cur->child; c != NULL; c = c->next)
      if (c->string != NULL && strlen(c->string) == n && memcmp(c->string, seg, n) == 0) break;
    if (c == NULL || dot == NULL) return c;
    cur = c;
    seg = dot + 1;
  }
}

static int json_equal(const cJSON *a, const cJSON *b);

/* Every member of object a has a member of the same name in b (the first one) with an equal value. */
static int members_in(const cJSON *a, const cJSON *b) {
  const cJSON *x, *y;
  for (x = a->child; x != NULL; x = x->next) {
    if (x->string == NULL || (y = cJSON_GetObjectItemCaseSensitive(b, x->string)) == NULL || !json_equal(x, y)) return 0;
  }
  return 1;
}

/* Typed equality: 1 equal, 0 different (including a type mismatch). Arrays and objects compare deeply with the
 * same rules at every level (as cJSON_Compare does for their shape, but not for numbers: it takes numbers within
 * a relative epsilon as equal and an infinity as unequal to itself, so a filter could not match a nested
 * value copied from the metadata). */
static int json_equal(const cJSON *a, const cJSON *b) {
  const cJSON *x, *y;
  if (cJSON_IsNumber(a)) return cJSON_IsNumber(b) && a->valuedouble == b->valuedouble;
  if (cJSON_IsString(a)) return cJSON_IsString(b) && strcmp(a->valuestring, b->valuestring) == 0;
  if (cJSON_IsBool(a)) return cJSON_IsBool(b) && cJSON_IsTrue(a) == cJSON_IsTrue(b);
  if (cJSON_IsNull(a)) return cJSON_IsNull(b);
  if (cJSON_IsArray(a)) {
    if (!cJSON_IsArray(b)) return 0;
    for (x = a->child, y = b->child; x != NULL && y != NULL; x = x->next, y = y->next)
      if (!json_equal(x, y)) return 0;
    return x == NULL && y == NULL;
  }
  if (cJSON_IsObject(a)) return cJSON_IsObject(b) && members_in(a, b) && members_in(b, a);
  return 0;
}

/* Order between a field value and an operand: sets *cmp (<0, 0, >0) and returns 1 when both are numbers or
 * both strings; returns 0 on a type mismatch. */
static int json_order(const cJSON *a, const cJSON *b, int *cmp) {
  if (cJSON_IsNumber(a) && cJSON_IsNumber(b)) {
    *cmp = (a->valuedouble > b->valuedouble) - (a->valuedouble < b->valuedouble);
    return 1;
  }
  if (cJSON_IsString(a) && cJSON_IsString(b)) {
    size_t la = strlen(a->valuestring), lb = strlen(b->valuestring);
    int r = memcmp(a->valuestring, b->valuestring, la < lb ? la : lb);
    *cmp = r != 0 ? r : (la > lb) - (la < lb);
    return 1;
  }
  return 0;
}

static int in_array(const cJSON *v, const cJSON *arr) {
  const cJSON *e;
  for (e = arr->child; e != NULL; e = e->next)
    if (json_equal(v, e)) return 1;
  return 0;
}

/* Evaluates one operator against the field value v (NULL when the field is missing). */
static int op_match(filter_op_t op, const cJSON *v, const cJSON *arg) {
  int cmp;
  switch (op) {
    case OP_EQ: return v != NULL && json_equal(v, arg);
    case OP_NE: return v == NULL || !json_equal(v, arg);
    case OP_GT: return v != NULL && json_order(v, arg, &cmp) && cmp > 0;
    case OP_GTE: return v != NULL && json_order(v, arg, &cmp) && cmp >= 0;
    case OP_LT: return v != NULL && json_order(v, arg, &cmp) && cmp < 0;
    case OP_LTE: return v != NULL && json_order(v, arg, &cmp) && cmp <= 0;
    case OP_IN: return v != NULL && cJSON_IsArray(arg) && in_array(v, arg);
    case OP_NIN: return cJSON_IsArray(arg) && (v == NULL || !in_array(v, arg));
    case OP_EXISTS: return cJSON_IsBool(arg) && (v != NULL) == (cJSON_IsTrue(arg) != 0);
    default: return 0;
  }
}

int engram_filter_match(const cJSON *filter, const cJSON *metadata) {
  const cJSON *f, *o;
  if (filter == NULL) return 1;
  if (!cJSON_IsObject(filter)) return 0;
  for (f = filter->child; f != NULL; f = f->next) {
    const cJSON *v = f->string != NULL ? lookup(metadata, f->string) : NULL;
    if (!is_operator_object(f)) {
      if (v == NULL || !json_equal(v, f)) return 0;
      continue;
    }
    for (o = f->child; o != NULL; o = o->next)
      if (o->string == NULL || !op_match(op_of(o->string), v, o)) return 0;
  }
  return 1;
}
