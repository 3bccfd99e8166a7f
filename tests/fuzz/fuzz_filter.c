/*
 * fuzz_filter.c — libFuzzer harness for the shared metadata filters (src/shared/filter.c): engram_filter_check
 * and engram_filter_match.
 *
 * Input: FILTER METADATA — two JSON texts one after the other (the second may be missing or malformed: the
 * metadata is then NULL). Asserted, for every input:
 *   - check returns 0 or ENGRAM_EINVAL, the same with and without a message buffer; its message is "" on success
 *     and starts with "filter" on failure, and a short buffer is never overrun (every length 0..64 is tried on
 *     a buffer of exactly that size, under ASan);
 *   - match returns 0 or 1, on checked and unchecked filters alike (never a crash);
 *   - for a checked filter, the documented algebra holds: the filter matches exactly when each of its members
 *     matches alone (AND), an operator object exactly when each operator matches alone; a plain value v is
 *     {"$eq": v} is {"$in": [v]} is the negation of {"$ne": v} and of {"$nin": [v]}; $exists true and false are
 *     complements; $gt implies $gte, $lt implies $lte, $gte and $lte together are $eq, $gt and $lte never both
 *     hold; $in over several values is the OR of $eq over each;
 *   - reflexivity: a filter built from the metadata itself matches it — for each top-level member (and each
 *     member one level down, through a dotted path) whose name a filter can address, {name: v}, $eq v, $in [v],
 *     $exists true and (numbers, strings) $gte/$lte v match, and $ne, $nin, $exists false, $gt, $lt do not.
 *     Values holding an object with a repeated member name are skipped (their equality is unspecified).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"

static int match(const cJSON *f, const cJSON *md) {
  int r = engram_filter_match(f, md);
  FUZZ_CHECK(r == 0 || r == 1, "engram_filter_match returned %d", r);
  return r;
}

/* {name: v} with v copied. */
static cJSON *one(const char *name, const cJSON *v) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddItemToObject(o, name, cJSON_Duplicate(v, 1));
  return o;
}

/* {name: {op: v}} with v copied. */
static cJSON *one_op(const char *name, const char *op, const cJSON *v) {
  cJSON *o = cJSON_CreateObject(), *ops = cJSON_CreateObject();
  cJSON_AddItemToObject(ops, op, cJSON_Duplicate(v, 1));
  cJSON_AddItemToObject(o, name, ops);
  return o;
}

/* {name: {op: [v]}}. */
static cJSON *one_op_arr(const char *name, const char *op, const cJSON *v) {
  cJSON *o = cJSON_CreateObject(), *ops = cJSON_CreateObject(), *arr = cJSON_CreateArray();
  cJSON_AddItemToArray(arr, cJSON_Duplicate(v, 1));
  cJSON_AddItemToObject(ops, op, arr);
  cJSON_AddItemToObject(o, name, ops);
  return o;
}

static int m_free(cJSON *f, const cJSON *md) {
  char err[256];
  int r;
  FUZZ_CHECK(engram_filter_check(f, err, sizeof err) == 0, "a derived filter is refused: %s", err);
  r = match(f, md);
  cJSON_Delete(f);
  return r;
}

static int is_operator_object(const cJSON *v) {
  return cJSON_IsObject(v) && v->child != NULL && v->child->string != NULL && v->child->string[0] == '$';
}

/* Non-zero when v holds an object with a repeated member name. */
static int has_dup_names(const cJSON *v) {
  const cJSON *a, *b;
  if (!cJSON_IsArray(v) && !cJSON_IsObject(v)) return 0;
  for (a = v->child; a != NULL; a = a->next) {
    if (cJSON_IsObject(v))
      for (b = a->next; b != NULL; b = b->next)
        if (strcmp(a->string, b->string) == 0) return 1;
    if (has_dup_names(a)) return 1;
  }
  return 0;
}

/* A name a filter can address as one path segment. */
static int addressable(const char *name) {
  return name != NULL && name[0] != '\0' && name[0] != '$' && strchr(name, '.') == NULL;
}

/* Non-zero when c is the first member of parent named c->string. */
static int first_of_name(const cJSON *parent, const cJSON *c) {
  const cJSON *x;
  for (x = parent->child; x != c; x = x->next)
    if (strcmp(x->string, c->string) == 0) return 0;
  return 1;
}

static void algebra_of_operator(const char *field, const cJSON *op, const cJSON *md, int got) {
  const char *n = op->string;
  if (strcmp(n, "$eq") == 0) {
    FUZZ_CHECK(got != m_free(one_op(field, "$ne", op), md), "field \"%s\": $eq and $ne agree", field);
    FUZZ_CHECK(got == m_free(one_op_arr(field, "$in", op), md), "field \"%s\": $eq v and $in [v] differ", field);
    FUZZ_CHECK(got != m_free(one_op_arr(field, "$nin", op), md), "field \"%s\": $eq v and $nin [v] agree", field);
    if (!is_operator_object(op)) FUZZ_CHECK(got == m_free(one(field, op), md), "field \"%s\": $eq v and v differ", field);
  } else if (strcmp(n, "$exists") == 0) {
    cJSON *neg = cJSON_CreateBool(!cJSON_IsTrue(op));
    FUZZ_CHECK(got != m_free(one_op(field, "$exists", neg), md), "field \"%s\": $exists true and false agree", field);
    cJSON_Delete(neg);
  } else if (strcmp(n, "$in") == 0 || strcmp(n, "$nin") == 0) {
    const cJSON *e;
    int any = 0;
    cJSON_ArrayForEach(e, op) any |= m_free(one_op(field, "$eq", e), md);
    if (strcmp(n, "$in") == 0) FUZZ_CHECK(got == any, "field \"%s\": $in is not the OR of $eq", field);
    else FUZZ_CHECK(got == !any, "field \"%s\": $nin is not the NOR of $eq", field);
  } else if (strcmp(n, "$gt") == 0 || strcmp(n, "$gte") == 0 || strcmp(n, "$lt") == 0 || strcmp(n, "$lte") == 0) {
    int gt = m_free(one_op(field, "$gt", op), md), gte = m_free(one_op(field, "$gte", op), md);
    int lt = m_free(one_op(field, "$lt", op), md), lte = m_free(one_op(field, "$lte", op), md);
    int eq = m_free(one_op(field, "$eq", op), md);
    FUZZ_CHECK(!gt || gte, "field \"%s\": $gt without $gte", field);
    FUZZ_CHECK(!lt || lte, "field \"%s\": $lt without $lte", field);
    FUZZ_CHECK(!(gt && lte) && !(lt && gte), "field \"%s\": $gt with $lte, or $lt with $gte", field);
    FUZZ_CHECK((gte && lte) == eq, "field \"%s\": $gte and $lte together (%d) are not $eq (%d)", field, gte && lte, eq);
    FUZZ_CHECK(gte == (gt || eq) && lte == (lt || eq), "field \"%s\": $gte is not $gt or $eq", field);
  }
}

/* The algebra of a checked filter over md. */
static void algebra(const cJSON *filter, const cJSON *md, int whole) {
  const cJSON *f, *o;
  int all = 1;
  for (f = filter->child; f != NULL; f = f->next) {
    int got = m_free(one(f->string, f), md);
    all &= got;
    if (is_operator_object(f)) {
      int ops = 1;
      for (o = f->child; o != NULL; o = o->next) {
        int g = m_free(one_op(f->string, o->string, o), md);
        ops &= g;
        algebra_of_operator(f->string, o, md, g);
      }
      FUZZ_CHECK(got == ops, "field \"%s\": the operator object is not the AND of its operators", f->string);
    } else {
      FUZZ_CHECK(got == m_free(one_op(f->string, "$eq", f), md), "field \"%s\": v and $eq v differ", f->string);
      FUZZ_CHECK(got == m_free(one_op_arr(f->string, "$in", f), md), "field \"%s\": v and $in [v] differ", f->string);
      FUZZ_CHECK(got != m_free(one_op(f->string, "$ne", f), md), "field \"%s\": v and $ne v agree", f->string);
      FUZZ_CHECK(got != m_free(one_op_arr(f->string, "$nin", f), md), "field \"%s\": v and $nin [v] agree", f->string);
    }
  }
  FUZZ_CHECK(whole == all, "the filter (%d) is not the AND of its fields (%d)", whole, all);
}

/* Filters built from md's own value v at path must select md. */
static void reflexive(const char *path, const cJSON *v, const cJSON *md) {
  if (has_dup_names(v)) return;
  if (!is_operator_object(v)) FUZZ_CHECK(m_free(one(path, v), md), "{\"%s\": its own value} does not match", path);
  FUZZ_CHECK(m_free(one_op(path, "$eq", v), md), "\"%s\": $eq its own value does not match", path);
  FUZZ_CHECK(m_free(one_op_arr(path, "$in", v), md), "\"%s\": $in [its own value] does not match", path);
  FUZZ_CHECK(!m_free(one_op(path, "$ne", v), md), "\"%s\": $ne its own value matches", path);
  FUZZ_CHECK(!m_free(one_op_arr(path, "$nin", v), md), "\"%s\": $nin [its own value] matches", path);
  {
    cJSON *t = cJSON_CreateTrue(), *fa = cJSON_CreateFalse();
    FUZZ_CHECK(m_free(one_op(path, "$exists", t), md), "\"%s\": $exists true does not match", path);
    FUZZ_CHECK(!m_free(one_op(path, "$exists", fa), md), "\"%s\": $exists false matches", path);
    cJSON_Delete(t);
    cJSON_Delete(fa);
  }
  if (cJSON_IsNumber(v) || cJSON_IsString(v)) {
    FUZZ_CHECK(m_free(one_op(path, "$gte", v), md) && m_free(one_op(path, "$lte", v), md),
               "\"%s\": $gte/$lte its own value does not match", path);
    FUZZ_CHECK(!m_free(one_op(path, "$gt", v), md) && !m_free(one_op(path, "$lt", v), md),
               "\"%s\": $gt/$lt its own value matches", path);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *end = NULL;
  cJSON *filter = cJSON_ParseWithLengthOpts((const char *)data, size, &end, 0), *md = NULL;
  char err[256], *small;
  int rc, whole;
  size_t len;
  if (filter != NULL && end != NULL && end >= (const char *)data && (size_t)(end - (const char *)data) < size)
    md = cJSON_ParseWithLength(end, size - (size_t)(end - (const char *)data));

  memset(err, 'x', sizeof err);
  rc = engram_filter_check(filter, err, sizeof err);
  FUZZ_CHECK(rc == 0 || rc == ENGRAM_EINVAL, "engram_filter_check returned %d", rc);
  FUZZ_CHECK(engram_filter_check(filter, NULL, 0) == rc, "check with and without a message buffer differ");
  FUZZ_CHECK(memchr(err, '\0', sizeof err) != NULL, "the message is not terminated");
  if (rc == 0) FUZZ_CHECK(err[0] == '\0', "a valid filter left the message \"%s\"", err);
  else FUZZ_CHECK(strncmp(err, "filter", 6) == 0, "the message \"%s\" does not start with \"filter\"", err);
  for (len = 0; len <= 64; len++) {
    small = malloc(len ? len : 1);
    FUZZ_CHECK(engram_filter_check(filter, small, len) == rc, "check with a %zu-byte buffer differs", len);
    if (len > 0) FUZZ_CHECK(memchr(small, '\0', len) != NULL, "a %zu-byte message is not terminated", len);
    free(small);
  }

  whole = match(filter, md);
  FUZZ_CHECK(match(filter, md) == whole, "two matches differ");
  if (filter == NULL) FUZZ_CHECK(whole == 1, "a NULL filter does not match");

  if (rc == 0 && cJSON_IsObject(filter)) algebra(filter, md, whole);

  if (cJSON_IsObject(md)) {
    const cJSON *c, *d;
    for (c = md->child; c != NULL; c = c->next) {
      if (!addressable(c->string) || !first_of_name(md, c)) continue;
      reflexive(c->string, c, md);
      if (!cJSON_IsObject(c)) continue;
      for (d = c->child; d != NULL; d = d->next) {
        char path[512];
        if (!addressable(d->string) || !first_of_name(c, d)) continue;
        if ((size_t)snprintf(path, sizeof path, "%s.%s", c->string, d->string) >= sizeof path) continue;
        reflexive(path, d, md);
      }
    }
  }
  cJSON_Delete(filter);
  cJSON_Delete(md);
  return 0;
}
