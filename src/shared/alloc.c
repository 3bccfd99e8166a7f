/*
 * alloc.c — the one replaceable allocator behind every engram allocation.
 *
 * engram_set_allocator swaps the functions used by engram_malloc & co. and installs the same functions as
 * cJSON's hooks, because values inside requests and replies are cJSON trees that engram allocates and frees.
 * Tests use it to fail the Nth allocation and prove that every path reports ENGRAM_ENOMEM and leaks nothing.
 */
#include <stdlib.h>
#include <string.h>

#include "engram/source.h"

static engram_allocator_t current = {malloc, realloc, free};

static void *cjson_malloc(size_t n) { return current.malloc_fn(n); }
static void cjson_free(void *p) { current.free_fn(p); }

int engram_set_allocator(const engram_allocator_t *a) {
  cJSON_Hooks hooks;
  if (a == NULL) {
    current.malloc_fn = malloc;
    current.realloc_fn = realloc;
    current.free_fn = free;
    cJSON_InitHooks(NULL);
    return 0;
  }
  if (a->malloc_fn == NULL || a->realloc_fn == NULL || a->free_fn == NULL) return ENGRAM_EINVAL;
  current = *a;
  hooks.malloc_fn = cjson_malloc;
  hooks.free_fn = cjson_free;
  cJSON_InitHooks(&hooks);
  return 0;
}

/* The current free function, which reqpool.c records with each block it keeps. */
void (*engram__allocator_free_fn(void))(void *);
void (*engram__allocator_free_fn(void))(void *) { return current.free_fn; }

void *engram_malloc(size_t size) { return current.malloc_fn(size ? size : 1); }

/* With the default allocator this is the C library's calloc, which leaves the pages of a fresh mapping as the
 * kernel zeroed them instead of writing every byte: a large table (a text index's resize) then costs no page
 * faults until it is used. A replaced allocator has no calloc: its malloc, then the zeros written. */
void *engram_calloc(size_t n, size_t size) {
  void *p;
  if (size != 0 && n > SIZE_MAX / size) return NULL;
  if (current.malloc_fn == malloc) return calloc(1, n * size != 0 ? n * size : 1);
  p = engram_malloc(n * size);
  if (p != NULL) memset(p, 0, n * size);
  return p;
}

void *engram_realloc(void *ptr, size_t size) { return current.realloc_fn(ptr, size ? size : 1); }

void engram_free(void *ptr) {
  if (ptr != NULL) current.free_fn(ptr);
}

char *engram_strndup(const char *s, size_t n) {
  char *p = engram_malloc(n + 1);
  if (p == NULL) return NULL;
  memcpy(p, s, n);
  p[n] = '\0';
  return p;
}

char *engram_strdup(const char *s) { return engram_strndup(s, strlen(s)); }
