/*
 * vector_embed.c — the embedder interface's implementation for the vector source: the registry of embedders
 * (names the "embedder" option can use), the context of one embed call (engram_embed_loop, _dimension, _purpose
 * and _source_name read it from cb_ud), and the built-in "hash" embedder's adapter (engram_embed_hash, from
 * embed_hash.c, wrapped as an engram_embedder_t). The built-in "hash" embedder is always registered; users add
 * theirs with engram_register_embedder.
 *
 * Entries are reference counted: the registry holds one reference for as long as the name is registered and
 * every open vector source holds one, so an embedder unregistered while a source still uses it lives on until
 * that source closes, and its destroy runs exactly once, after the last user let go. A mutex guards the list;
 * embed calls themselves never take it.
 */
#include <stdio.h>
#include <string.h>
#include <uv.h>

#include "vector_embed.h"

/* ---- The context of one embed call ---- */

void engram__embed_call_init(engram__embed_call_t *call, uv_loop_t *loop, size_t dim, int purpose,
                             const char *src_name) {
  call->magic = ENGRAM__EMBED_CALL_MAGIC;
  call->loop = loop;
  call->dim = dim;
  call->purpose = purpose;
  call->abandoned = 0;
  snprintf(call->src_name, sizeof call->src_name, "%s", src_name);
}

void engram__embed_call_clear(engram__embed_call_t *call) { call->magic = 0; }

uv_loop_t *engram_embed_loop(void *cb_ud) {
  engram__embed_call_t *call = engram__embed_call_of(cb_ud);
  return call ? call->loop : NULL;
}
size_t engram_embed_dimension(void *cb_ud) {
  engram__embed_call_t *call = engram__embed_call_of(cb_ud);
  return call ? call->dim : 0;
}
int engram_embed_purpose(void *cb_ud) {
  engram__embed_call_t *call = engram__embed_call_of(cb_ud);
  return call ? call->purpose : ENGRAM_EMBED_DOCUMENT;
}
const char *engram_embed_source_name(void *cb_ud) {
  engram__embed_call_t *call = engram__embed_call_of(cb_ud);
  return call ? call->src_name : "";
}

/* ---- The built-in "hash" embedder ---- */

/* The registered form of engram_embed_hash: embeds every text as a document, at the calling source's dimension.
 * (The vector source does not go through it: it analyzes texts itself, to keep their term lists; this is what
 * another caller of the registered "hash" embedder gets.) */
static void hash_embed(const engram_embedder_t *self, const char *const *texts, size_t n, engram_embed_done_fn done,
                       void *cb_ud) {
  size_t dim = engram_embed_dimension(cb_ud), i;
  float *out = engram_malloc(n * dim * sizeof *out);
  (void)self;
  if (out == NULL) {
    done(cb_ud, ENGRAM_ENOMEM, "out of memory", NULL, dim);
    return;
  }
  for (i = 0; i < n; i++)
    if (engram_embed_hash(texts[i], out + i * dim, dim) != 0) {
      engram_free(out);
      done(cb_ud, ENGRAM_ENOMEM, "out of memory", NULL, dim);
      return;
    }
  done(cb_ud, 0, NULL, out, dim);
  engram_free(out);
}

/* ---- The registry ---- */

struct engram__embedder_ref_s {
  struct engram__embedder_ref_s *next;
  char name[ENGRAM__EMBEDDER_NAME_MAX + 1];
  engram_embedder_t e;
  int (*info)(void *ud, cJSON *into); /* adopted embedders: their figures for info */
  unsigned refs;
  int registered;
  int builtin;
};

/* dimension 0: it makes vectors of the calling source's dimension. */
static engram__embedder_ref_t builtin_hash = {NULL, "hash", {0, 0, NULL, hash_embed, NULL}, NULL, 1, 1, 1};
static engram__embedder_ref_t *list;
static uv_once_t once = UV_ONCE_INIT;
static uv_mutex_t mutex;

static void init(void) { uv_mutex_init(&mutex); }

static int name_ok(const char *name) {
  size_t n, i;
  if (name == NULL || (n = strlen(name)) == 0 || n > ENGRAM_SOURCE_NAME_MAX) return 0;
  for (i = 0; i < n; i++) {
    char c = name[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
          c == '-'))
      return 0;
  }
  return 1;
}

static engram__embedder_ref_t *find(const char *name) {
  engram__embedder_ref_t *r;
  if (strcmp(name, builtin_hash.name) == 0) return &builtin_hash;
  for (r = list; r != NULL; r = r->next)
    if (strcmp(r->name, name) == 0) return r;
  return NULL;
}

int engram_register_embedder(const char *name, const engram_embedder_t *embedder) {
  engram__embedder_ref_t *r;
  int rc = 0;
  engram_clear_last_error();
  uv_once(&once, init);
  if (!name_ok(name))
    return engram_set_last_error(ENGRAM_EINVAL, "embedder name: must be 1..%d bytes of [A-Za-z0-9_.-]", ENGRAM_SOURCE_NAME_MAX);
  if (embedder == NULL || embedder->embed == NULL) return engram_set_last_error(ENGRAM_EINVAL, "embedder '%s': embed is NULL", name);
  if (embedder->dimension > ENGRAM_EMBED_DIMENSION_MAX)
    return engram_set_last_error(ENGRAM_EINVAL, "embedder '%s': dimension %zu, must be 0..%d", name, embedder->dimension,
                         ENGRAM_EMBED_DIMENSION_MAX);
  if ((r = engram_calloc(1, sizeof *r)) == NULL) return engram_set_last_error(ENGRAM_ENOMEM, "out of memory");
  snprintf(r->name, sizeof r->name, "%s", name);
  r->e = *embedder;
  r->refs = 1;
  r->registered = 1;
  uv_mutex_lock(&mutex);
  if (find(name) != NULL) {
    rc = ENGRAM_EEXIST;
  } else {
    r->next = list;
    list = r;
  }
  uv_mutex_unlock(&mutex);
  if (rc != 0) {
    engram_free(r);
    return engram_set_last_error(rc, "embedder '%s' is already registered", name);
  }
  return 0;
}

/* Frees r when its last reference is gone (called with the mutex held; destroy runs after it is released). */
static engram__embedder_ref_t *unref_locked(engram__embedder_ref_t *r) {
  engram__embedder_ref_t **pp;
  if (r->builtin || --r->refs > 0) return NULL;
  for (pp = &list; *pp != NULL; pp = &(*pp)->next)
    if (*pp == r) {
      *pp = r->next;
      break;
    }
  return r;
}

static void destroy(engram__embedder_ref_t *r) {
  if (r == NULL) return;
  if (r->e.destroy) r->e.destroy(r->e.ud);
  engram_free(r);
}

int engram_unregister_embedder(const char *name) {
  engram__embedder_ref_t *r, *dead = NULL;
  int rc = 0;
  engram_clear_last_error();
  uv_once(&once, init);
  if (!name_ok(name)) return engram_set_last_error(ENGRAM_EINVAL, "embedder name: must be 1..%d bytes of [A-Za-z0-9_.-]", ENGRAM_SOURCE_NAME_MAX);
  uv_mutex_lock(&mutex);
  r = find(name);
  if (r == NULL || !r->registered) rc = ENGRAM_ENOTFOUND;
  else if (r->builtin) rc = ENGRAM_EINVAL;
  else {
    r->registered = 0;
    dead = unref_locked(r);
    /* Still used: take it off the list of names now, so the name can be registered again. */
    if (dead == NULL) {
      engram__embedder_ref_t **pp;
      for (pp = &list; *pp != NULL; pp = &(*pp)->next)
        if (*pp == r) {
          *pp = r->next;
          break;
        }
    }
  }
  uv_mutex_unlock(&mutex);
  destroy(dead);
  if (rc == ENGRAM_ENOTFOUND) return engram_set_last_error(rc, "no embedder named '%s' is registered", name);
  if (rc == ENGRAM_EINVAL) return engram_set_last_error(rc, "the built-in embedder '%s' cannot be unregistered", name);
  return 0;
}

engram__embedder_ref_t *engram__embedder_acquire(const char *name) {
  engram__embedder_ref_t *r;
  uv_once(&once, init);
  if (name == NULL) return NULL;
  uv_mutex_lock(&mutex);
  r = find(name);
  if (r != NULL && !r->builtin) r->refs++;
  uv_mutex_unlock(&mutex);
  return r;
}

engram__embedder_ref_t *engram__embedder_adopt(const char *name, const engram_embedder_t *embedder,
                                               int (*info)(void *ud, cJSON *into)) {
  engram__embedder_ref_t *r = engram_calloc(1, sizeof *r);
  if (r == NULL) return NULL;
  snprintf(r->name, sizeof r->name, "%s", name);
  r->e = *embedder;
  r->info = info;
  r->refs = 1; /* the source's; registered = 0: never on the list, destroyed at the release */
  return r;
}

void engram__embedder_release(engram__embedder_ref_t *ref) {
  engram__embedder_ref_t *dead;
  if (ref == NULL) return;
  uv_mutex_lock(&mutex);
  dead = unref_locked(ref);
  if (dead != NULL && dead->registered) dead = NULL; /* cannot happen: the registry holds a reference */
  uv_mutex_unlock(&mutex);
  destroy(dead);
}

int engram__embedder_info(const engram__embedder_ref_t *ref, cJSON *into) {
  return ref->info ? ref->info(ref->e.ud, into) : 0;
}

const engram_embedder_t *engram__embedder_of(const engram__embedder_ref_t *ref) { return &ref->e; }
const char *engram__embedder_name(const engram__embedder_ref_t *ref) { return ref->name; }
int engram__embedder_is_builtin(const engram__embedder_ref_t *ref) { return ref->builtin; }
