/*
 * fuzz_common.h — what the libFuzzer harnesses of tests/fuzz/ share: a check macro that aborts with a message
 * (libFuzzer then saves the input as a crash), a NUL-terminated copy of the input, a home loop and the
 * synchronous helpers that run it until one callback arrived (exactly once), a manager's open and close, and a
 * strict deep equality of cJSON trees (members in order, numbers bit-for-bit equal or ==).
 *
 * Each harness is one translation unit that includes this header; everything here is static.
 */
#ifndef ENGRAM_FUZZ_COMMON_H
#define ENGRAM_FUZZ_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "engram.h"
#include "engram/source.h"

#define FUZZ_CHECK(cond, ...)                                                                   \
  do {                                                                                          \
    if (!(cond)) {                                                                              \
      fprintf(stderr, "\n*** fuzz check failed at %s:%d: %s\n*** ", __FILE__, __LINE__, #cond); \
      fprintf(stderr, __VA_ARGS__);                                                             \
      fputc('\n', stderr);                                                                      \
      abort();                                                                                  \
    }                                                                                           \
  } while (0)

/* A NUL-terminated copy of the input (malloc'd). */
static inline char *fuzz_cstr(const uint8_t *data, size_t size) {
  char *s = malloc(size + 1);
  if (s == NULL) abort();
  if (size) memcpy(s, data, size);
  s[size] = '\0';
  return s;
}

/* ---- The home loop ---- */

static uv_loop_t fuzz_loop_storage;
static uv_loop_t *fuzz_loop;

static inline uv_loop_t *fuzz_loop_get(void) {
  if (fuzz_loop == NULL) {
    if (uv_loop_init(&fuzz_loop_storage) != 0) abort();
    fuzz_loop = &fuzz_loop_storage;
  }
  return fuzz_loop;
}

/* Runs the loop until *flag is non-zero. A loop that runs dry first means a callback was lost. */
static inline void fuzz_run_until(const volatile int *flag, const char *what) {
  while (!*flag) {
    int alive = uv_run(fuzz_loop, UV_RUN_ONCE);
    FUZZ_CHECK(*flag || alive, "the loop ran dry waiting for %s: its callback was lost", what);
  }
}

/* One captured reply. */
typedef struct {
  volatile int calls;
  int status;
  char message[512];
  char *text;      /* reply->text (tool calls), malloc'd */
  char *cursor;    /* reply->cursor, malloc'd */
  cJSON *keys;     /* list_keys: array of "ns\x1fkey" strings */
  cJSON *info;     /* reply->info, duplicated */
  uint64_t count;
  engram_op_t op;
} fuzz_reply_t;

static inline void fuzz_reply_clear(fuzz_reply_t *r) {
  free(r->text);
  free(r->cursor);
  cJSON_Delete(r->keys);
  cJSON_Delete(r->info);
  memset(r, 0, sizeof *r);
}

static inline char *fuzz_strdup_or_null(const char *s) {
  char *d;
  if (s == NULL) return NULL;
  if ((d = strdup(s)) == NULL) abort();
  return d;
}

static inline void fuzz_capture_cb(int status, const engram_reply_t *reply, void *ud) {
  fuzz_reply_t *r = ud;
  size_t i;
  FUZZ_CHECK(reply != NULL, "a callback got a NULL reply");
  FUZZ_CHECK(r->calls == 0, "a second callback for one call (op %d, status %d)", (int)reply->op, status);
  r->calls++;
  r->status = status;
  r->op = reply->op;
  FUZZ_CHECK(reply->message != NULL, "reply->message is NULL (status %d)", status);
  snprintf(r->message, sizeof r->message, "%s", reply->message);
  r->text = fuzz_strdup_or_null(reply->text);
  r->cursor = fuzz_strdup_or_null(reply->cursor);
  r->count = reply->count;
  r->info = reply->info ? cJSON_Duplicate(reply->info, 1) : NULL;
  if (reply->op == ENGRAM_OP_LIST_KEYS) {
    r->keys = cJSON_CreateArray();
    for (i = 0; i < reply->n_items; i++) {
      const engram_item_t *it = &reply->items[i];
      size_t nl, kl;
      char *both;
      FUZZ_CHECK(it->key != NULL && it->ns != NULL, "list_keys item %zu without key or namespace", i);
      nl = strlen(it->ns);
      kl = strlen(it->key);
      both = malloc(nl + kl + 2);
      memcpy(both, it->ns, nl);
      both[nl] = '\x1f';
      memcpy(both + nl + 1, it->key, kl + 1);
      cJSON_AddItemToArray(r->keys, cJSON_CreateString(both));
      free(both);
    }
  }
}

/* ---- Manager ---- */

static inline engram_manager_t *fuzz_manager_new(void) {
  engram_manager_t *m = NULL;
  int rc = engram_manager_new(&m, fuzz_loop_get(), NULL);
  FUZZ_CHECK(rc == 0 && m != NULL, "engram_manager_new: %s", engram_err_name(rc));
  return m;
}

/* Adds a source and waits for it; the harness's own setup must succeed. */
static inline void fuzz_add_source(engram_manager_t *m, const char *name, const engram_source_vtable_t *vt,
                            const char *options, int is_default) {
  fuzz_reply_t r;
  int rc;
  memset(&r, 0, sizeof r);
  rc = engram_manager_add_source(m, name, vt, options, "fuzz", is_default, fuzz_capture_cb, &r);
  FUZZ_CHECK(rc == 0, "add_source %s: %s (%s)", name, engram_err_name(rc), engram_last_error());
  fuzz_run_until(&r.calls, "add_source");
  FUZZ_CHECK(r.status == 0, "add_source %s: %s", name, r.message);
  fuzz_reply_clear(&r);
}

/* Closes the manager, then runs the loop until nothing is left on it: a handle left open would hang here (and
 * libFuzzer's -timeout reports it). */
static inline void fuzz_manager_close(engram_manager_t *m) {
  fuzz_reply_t r;
  int rc;
  memset(&r, 0, sizeof r);
  rc = engram_manager_close(m, fuzz_capture_cb, &r);
  FUZZ_CHECK(rc == 0, "engram_manager_close: %s", engram_err_name(rc));
  fuzz_run_until(&r.calls, "engram_manager_close");
  FUZZ_CHECK(r.status == 0, "engram_manager_close answered %s", engram_err_name(r.status));
  fuzz_reply_clear(&r);
  uv_run(fuzz_loop, UV_RUN_DEFAULT);
  FUZZ_CHECK(!uv_loop_alive(fuzz_loop), "handles left on the loop after the manager closed");
  /* The request blocks this thread keeps for reuse would make every run look like a leak to libFuzzer. */
  engram_release_thread_cache();
}

/* ---- JSON ---- */

/* Strict deep equality: same types, numbers equal (== or the same bits), strings equal, arrays and objects with
 * the same members in the same order (names too). */
static inline int fuzz_json_same(const cJSON *a, const cJSON *b) {
  const cJSON *x, *y;
  if (a == NULL || b == NULL) return a == b;
  if ((a->type & 0xFF) != (b->type & 0xFF)) return 0;
  switch (a->type & 0xFF) {
    case cJSON_Number:
      return a->valuedouble == b->valuedouble || memcmp(&a->valuedouble, &b->valuedouble, sizeof(double)) == 0;
    case cJSON_String:
    case cJSON_Raw:
      return strcmp(a->valuestring ? a->valuestring : "", b->valuestring ? b->valuestring : "") == 0;
    case cJSON_Array:
    case cJSON_Object:
      for (x = a->child, y = b->child; x != NULL && y != NULL; x = x->next, y = y->next) {
        if ((a->type & 0xFF) == cJSON_Object && strcmp(x->string ? x->string : "", y->string ? y->string : "") != 0)
          return 0;
        if (!fuzz_json_same(x, y)) return 0;
      }
      return x == NULL && y == NULL;
    default: return 1; /* null, true, false */
  }
}

#endif /* ENGRAM_FUZZ_COMMON_H */
