/*
 * json_same.h — node-for-node equality of two cJSON trees, as cJSON_Parse would have built them: types, member
 * names, string bytes, numbers bit for bit (valuedouble and valueint), child order, and the first child's prev
 * link on the last child. Shared by test_jsonl_read.c and the fuzz harness fuzz_jsonl_read.c, which both hold the
 * import's fast line reader to its strict path. json_same_value: the same JSON value, numbers bit for bit
 * (test_conformance, test_export).
 */
#ifndef ENGRAM_TEST_JSON_SAME_H
#define ENGRAM_TEST_JSON_SAME_H

#include <string.h>

#include <cjson/cJSON.h>

/* 1 when a and b are the same tree (both NULL counts as the same), else 0. */
static inline int json_same_tree(const cJSON *a, const cJSON *b) {
  const cJSON *x, *y, *last_a = NULL, *last_b = NULL;
  if (a == NULL || b == NULL) return a == b;
  if (a->type != b->type) return 0;
  if ((a->string == NULL) != (b->string == NULL) || (a->string && strcmp(a->string, b->string) != 0)) return 0;
  if (cJSON_IsString(a) && strcmp(a->valuestring, b->valuestring) != 0) return 0;
  if (cJSON_IsNumber(a) && (memcmp(&a->valuedouble, &b->valuedouble, sizeof(double)) != 0 || a->valueint != b->valueint))
    return 0;
  for (x = a->child, y = b->child; x != NULL && y != NULL; x = x->next, y = y->next) {
    if (!json_same_tree(x, y)) return 0;
    last_a = x;
    last_b = y;
  }
  if (x != NULL || y != NULL) return 0;
  return a->child == NULL || (a->child->prev == last_a && b->child->prev == last_b);
}

/* 1 when a and b hold the same JSON value: types (flags and the node's own member name aside), member names and
 * order, string bytes, numbers bit for bit (-0 is not 0); both NULL counts as the same. For values read back
 * from a source, which come as members of a reply or as references. */
static inline int json_same_value(const cJSON *a, const cJSON *b) {
  const cJSON *x, *y;
  if (a == NULL || b == NULL) return a == b;
  if ((a->type & 0xFF) != (b->type & 0xFF)) return 0;
  if (cJSON_IsNumber(a)) return memcmp(&a->valuedouble, &b->valuedouble, sizeof(double)) == 0;
  if (cJSON_IsString(a) || cJSON_IsRaw(a)) return strcmp(a->valuestring, b->valuestring) == 0;
  for (x = a->child, y = b->child; x != NULL && y != NULL; x = x->next, y = y->next)
    if ((cJSON_IsObject(a) && strcmp(x->string, y->string) != 0) || !json_same_value(x, y)) return 0;
  return x == NULL && y == NULL;
}

#endif
