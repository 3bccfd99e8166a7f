/*
 * vector_embed.h — the embedder interface as the vector source uses it (vector_embed.c): the registry of named
 * embedders (a counted reference a source takes at open and gives back at close), the context of one embed call
 * (the cb_ud an embedder receives, which engram_embed_loop & co. read), and the built-in "hash" embedder, whose
 * adapter lives here so that embed_hash.c stays a pure text-hashing library below it.
 *
 * vector.c (and vector_query.c, for a name in info) call down into this file; it calls only embed_hash.c
 * (engram_embed_hash) and the core. An embedder a source made for itself (the "openai" one) is adopted: a
 * reference with no name in the registry, destroyed at the source's release, with an info function of its own.
 */
#ifndef ENGRAM_VECTOR_EMBED_H
#define ENGRAM_VECTOR_EMBED_H

#include <stddef.h>
#include <stdint.h>

#include "engram/source.h"
#include "engram/vector.h"

/* ---- The registry ---- */

typedef struct engram__embedder_ref_s engram__embedder_ref_t;

/* The longest name an embedder reference carries (a registered name is at most ENGRAM_SOURCE_NAME_MAX bytes; an
 * adopted one is "openai:<model>"). */
#define ENGRAM__EMBEDDER_NAME_MAX 200

/* A counted reference to the embedder registered as name, or NULL when there is none. Thread: any. */
engram__embedder_ref_t *engram__embedder_acquire(const char *name);
/* A reference to an embedder that belongs to one source and has no name in the registry (the "openai" embedder
 * made from the source's options): name is what info and messages call it (cut to ENGRAM__EMBEDDER_NAME_MAX
 * bytes). The struct is copied; on success the reference owns embedder->ud, whose destroy runs at the release.
 * NULL when out of memory (ud stays the caller's). Thread: any. */
engram__embedder_ref_t *engram__embedder_adopt(const char *name, const engram_embedder_t *embedder,
                                               int (*info)(void *ud, cJSON *into));
/* Adds an adopted embedder's own figures to the source's info object (its info function, given at adopt);
 * nothing for the others. Returns 0 or ENGRAM_ENOMEM. Thread: the source's. */
int engram__embedder_info(const engram__embedder_ref_t *ref, cJSON *into);
/* Drops the reference; the last one of an unregistered embedder runs its destroy. Thread: any. */
void engram__embedder_release(engram__embedder_ref_t *ref);
const engram_embedder_t *engram__embedder_of(const engram__embedder_ref_t *ref);
const char *engram__embedder_name(const engram__embedder_ref_t *ref);
/* Non-zero for the built-in "hash" embedder. */
int engram__embedder_is_builtin(const engram__embedder_ref_t *ref);

/* ---- The context of one embed call ---- */

/*
 * What an embedder receives as cb_ud: the loop to answer on, the dimension and purpose asked for, and the
 * caller's name. A caller puts it first in a struct of its own (the vector source's job), so that its done
 * callback gets that struct back through engram__embed_call_of; it fills it with engram__embed_call_init and
 * clears it with engram__embed_call_clear before freeing it, so a stray pointer is not taken for a live call.
 */
typedef struct {
  uint32_t magic; /* ENGRAM__EMBED_CALL_MAGIC while the call is live */
  uv_loop_t *loop;
  size_t dim;
  int purpose;    /* ENGRAM_EMBED_DOCUMENT or ENGRAM_EMBED_QUERY */
  int abandoned;  /* set by the source when it gave up on the call (deadline, close): an embedder that can tell
                     (embed_openai.c) stops retrying; done must still be called once */
  char src_name[ENGRAM_SOURCE_NAME_MAX + 1];
} engram__embed_call_t;

#define ENGRAM__EMBED_CALL_MAGIC 0x7645636au

void engram__embed_call_init(engram__embed_call_t *call, uv_loop_t *loop, size_t dim, int purpose,
                             const char *src_name);
void engram__embed_call_clear(engram__embed_call_t *call);
/* The live call cb_ud points to, or NULL. */
static inline engram__embed_call_t *engram__embed_call_of(void *cb_ud) {
  engram__embed_call_t *call = cb_ud;
  return call != NULL && call->magic == ENGRAM__EMBED_CALL_MAGIC ? call : NULL;
}

#endif
