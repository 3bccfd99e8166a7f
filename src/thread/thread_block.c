/*
 * thread_block.c — cJSON trees in one allocation (see thread_block.h).
 *
 * An append built each message's stored object, its item metadata and the head's new value node by node: a
 * malloc and a free per node and per string (about 11 per message, 16 per head), most of an append's glibc time
 * on the cache (callgrind, docs/conversations.md). A block is measured first, allocated once, then filled in
 * order; cJSON_Delete of its root (flagged cJSON_IsReference) frees it with one free. Children are linked as
 * cJSON links them (the first child's prev is the last), so every cJSON reader walks them as usual.
 */
#include <string.h>

#include "thread/thread_block.h"

void th_block_measure(const cJSON *v, size_t *nodes, size_t *bytes) {
  const cJSON *ch;
  if (v == NULL) return;
  (*nodes)++;
  if (v->string != NULL) *bytes += strlen(v->string) + 1;
  if (((v->type & 0xFF) == cJSON_String || (v->type & 0xFF) == cJSON_Raw) && v->valuestring != NULL)
    *bytes += strlen(v->valuestring) + 1;
  for (ch = v->child; ch != NULL; ch = ch->next) th_block_measure(ch, nodes, bytes);
}

cJSON *th_block_new(th_block_t *b, size_t nodes, size_t bytes, int type) {
  char *block = cJSON_malloc(nodes * sizeof(cJSON) + bytes);
  cJSON *root;
  if (block == NULL) return NULL;
  b->node = (cJSON *)(void *)block;
  b->str = block + nodes * sizeof(cJSON);
  root = b->node++;
  memset(root, 0, sizeof *root);
  root->type = type | cJSON_IsReference;
  return root;
}

void th_block_link(cJSON *parent, cJSON *item) {
  cJSON *first = parent->child;
  if (first == NULL) {
    parent->child = item;
  } else {
    first->prev->next = item;
    item->prev = first->prev;
  }
  parent->child->prev = item;
}

cJSON *th_block_add(th_block_t *b, cJSON *parent, const char *name, int type) {
  cJSON *v = b->node++;
  memset(v, 0, sizeof *v);
  v->type = type;
  if (name != NULL) {
    v->string = (char *)name;
    v->type |= cJSON_StringIsConst;
  }
  if (parent != NULL) th_block_link(parent, v);
  return v;
}

cJSON *th_block_num(th_block_t *b, cJSON *parent, const char *name, double d) {
  cJSON *v = th_block_add(b, parent, name, cJSON_Number);
  cJSON_SetNumberHelper(v, d); /* valuedouble, and valueint saturated as cJSON_CreateNumber sets it */
  return v;
}

static char *copy_str(th_block_t *b, const char *s) {
  size_t n = strlen(s) + 1;
  char *d = b->str;
  memcpy(d, s, n);
  b->str += n;
  return d;
}

cJSON *th_block_str(th_block_t *b, cJSON *parent, const char *name, const char *s) {
  cJSON *v = th_block_add(b, parent, name, cJSON_String);
  v->valuestring = copy_str(b, s);
  return v;
}

cJSON *th_block_ref(th_block_t *b, cJSON *parent, const char *name, const char *s) {
  cJSON *v = th_block_add(b, parent, name, cJSON_String);
  v->valuestring = (char *)s;
  return v;
}

cJSON *th_block_copy(th_block_t *b, cJSON *parent, const char *name, const cJSON *src) {
  const cJSON *ch;
  cJSON *v = th_block_add(b, parent, NULL, src->type & 0xFF);
  if (name != NULL) {
    v->string = (char *)name;
    v->type |= cJSON_StringIsConst;
  } else if (src->string != NULL) {
    v->string = copy_str(b, src->string);
  }
  v->valueint = src->valueint;
  v->valuedouble = src->valuedouble;
  if (((src->type & 0xFF) == cJSON_String || (src->type & 0xFF) == cJSON_Raw) && src->valuestring != NULL)
    v->valuestring = copy_str(b, src->valuestring);
  for (ch = src->child; ch != NULL; ch = ch->next) th_block_copy(b, v, NULL, ch);
  return v;
}
