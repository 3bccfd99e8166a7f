/*
 * postgres_known.c — the rows this PostgreSQL source last wrote by an update (postgres_known.h), kept so that the
 * next update of the key starts from its row instead of reading it: a conversation's appends, which the thread
 * layer sends one at a time per thread, then cost one statement each instead of two (a read, then the write).
 *
 * A chained hash table of at most PG_KNOWN_MAX entries, with the entries also on a list in the order they were
 * put, so the oldest goes first when the table is full. Nothing here decides whether a row is still current: the
 * update's write is conditional on the version and the value taken from here (postgres_update.c), so a stale
 * entry costs a statement that writes nothing and a read, never a lost write.
 */
#include <string.h>

#include "postgres_known.h"

#define BUCKETS 2048 /* 2 × PG_KNOWN_MAX: short chains */

typedef struct known_s {
  struct known_s *chain;           /* the bucket's next entry */
  struct known_s *older, *newer;   /* the order entries were put in */
  uint32_t hash;
  char *ns, *key;                  /* one allocation: ns \0 key \0 */
  cJSON *value, *meta;
  uint64_t version;
  int64_t expires;
} known_t;

struct pg_known_s {
  known_t *bucket[BUCKETS];
  known_t *oldest, *newest;
  size_t n;
};

static uint32_t hash_of(const char *ns, const char *key) {
  uint32_t h = 2166136261u;
  const char *p;
  for (p = ns; *p; p++) h = (h ^ (unsigned char)*p) * 16777619u;
  h = (h ^ 0xffu) * 16777619u;
  for (p = key; *p; p++) h = (h ^ (unsigned char)*p) * 16777619u;
  return h;
}

/* The link that points at the entry of (ns, key), or at the NULL ending its bucket's chain. */
static known_t **slot(struct pg_known_s *t, const char *ns, const char *key, uint32_t h) {
  known_t **pp = &t->bucket[h % BUCKETS];
  while (*pp != NULL && ((*pp)->hash != h || strcmp((*pp)->key, key) != 0 || strcmp((*pp)->ns, ns) != 0))
    pp = &(*pp)->chain;
  return pp;
}

/* Unlinks *pp (an entry) from its chain and the age list, and frees it. */
static void drop(struct pg_known_s *t, known_t **pp) {
  known_t *e = *pp;
  *pp = e->chain;
  if (e->older != NULL) e->older->newer = e->newer;
  else t->oldest = e->newer;
  if (e->newer != NULL) e->newer->older = e->older;
  else t->newest = e->older;
  t->n--;
  cJSON_Delete(e->value);
  cJSON_Delete(e->meta);
  engram_free(e->ns);
  engram_free(e);
}

static void drop_key(struct pg_known_s *t, const char *ns, const char *key) {
  uint32_t h = hash_of(ns, key);
  known_t **pp = slot(t, ns, key, h);
  if (*pp != NULL) drop(t, pp);
}

void engram__pg_known_put(pg_t *pg, const char *ns, const char *key, cJSON *value, cJSON *meta, uint64_t version,
                          int64_t expires) {
  struct pg_known_s *t = pg->known;
  size_t nl = strlen(ns), kl = strlen(key);
  uint32_t h = hash_of(ns, key);
  known_t **pp, *e;
  if (value == NULL || (t == NULL && (t = pg->known = engram_calloc(1, sizeof *t)) == NULL)) goto none;
  if (*(pp = slot(t, ns, key, h)) != NULL) drop(t, pp);
  if (t->n >= PG_KNOWN_MAX) drop(t, slot(t, t->oldest->ns, t->oldest->key, t->oldest->hash));
  if ((e = engram_calloc(1, sizeof *e)) == NULL || (e->ns = engram_malloc(nl + kl + 2)) == NULL) {
    engram_free(e);
    goto none;
  }
  memcpy(e->ns, ns, nl + 1);
  e->key = e->ns + nl + 1;
  memcpy(e->key, key, kl + 1);
  e->hash = h;
  e->value = value;
  e->meta = meta;
  e->version = version;
  e->expires = expires;
  pp = &t->bucket[h % BUCKETS];
  e->chain = *pp;
  *pp = e;
  e->older = t->newest;
  if (t->newest != NULL) t->newest->newer = e;
  else t->oldest = e;
  t->newest = e;
  t->n++;
  return;
none:
  cJSON_Delete(value);
  cJSON_Delete(meta);
}

int engram__pg_known_take(pg_t *pg, const char *ns, const char *key, int64_t now_ms, cJSON **value, cJSON **meta,
                          uint64_t *version, int64_t *expires) {
  struct pg_known_s *t = pg->known;
  known_t **pp, *e;
  uint32_t h;
  if (t == NULL || t->n == 0) return 0;
  h = hash_of(ns, key);
  if ((e = *(pp = slot(t, ns, key, h))) == NULL) return 0;
  if (e->expires != 0 && e->expires <= now_ms) { /* expired: the update reads (and finds it missing) */
    drop(t, pp);
    return 0;
  }
  *value = e->value;
  *meta = e->meta;
  *version = e->version;
  *expires = e->expires;
  e->value = e->meta = NULL;
  drop(t, pp);
  return 1;
}

void engram__pg_known_forget(pg_t *pg, const engram_request_t *req) {
  struct pg_known_s *t = pg->known;
  size_t i;
  if (t == NULL || t->n == 0) return;
  switch (req->op) {
    case ENGRAM_OP_STORE:
    case ENGRAM_OP_DELETE: drop_key(t, req->ns, req->key); break;
    case ENGRAM_OP_STORE_MANY:
      for (i = 0; i < req->n; i++) drop_key(t, req->ns, req->entries[i].key);
      break;
    case ENGRAM_OP_DELETE_MANY:
      for (i = 0; i < req->n; i++) drop_key(t, req->ns, req->keys[i]);
      break;
    case ENGRAM_OP_CLEAR:
      if (req->flags & ENGRAM_REQ_ALL_NAMESPACES) {
        engram__pg_known_clear(pg);
      } else {
        known_t *e, *newer;
        for (e = t->oldest; e != NULL; e = newer) {
          newer = e->newer;
          if (strcmp(e->ns, req->ns) == 0) drop(t, slot(t, e->ns, e->key, e->hash));
        }
      }
      break;
    default: break;
  }
}

void engram__pg_known_clear(pg_t *pg) {
  struct pg_known_s *t = pg->known;
  if (t == NULL) return;
  while (t->oldest != NULL) drop(t, slot(t, t->oldest->ns, t->oldest->key, t->oldest->hash));
  engram_free(t);
  pg->known = NULL;
}
