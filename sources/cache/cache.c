/*
 * cache.c — the in-process cache source (BeamMePrompty's ETS backend, done in C): a chained hash table keyed by
 * (namespace, key) on the home loop, with versions and conditional stores, TTL in ms (checked on every read
 * and swept every sweep_interval_ms), max_entries / max_bytes with LRU eviction (the LRU list is kept only when
 * one of them is set), Redis-style glob or substring
 * patterns, typed metadata filters, and BM25 text search over key + value text.
 *
 * Values and metadata are kept in the entry's own block (one per item, from the cache's slabs, cache_slab.c, apart
 * from the short-lived blocks of the calls: docs/conversations.md, The heap a cache leaves) as compact binary images of
 * their cJSON trees (cache_image.c: strings are copied, never escaped or scanned), about the size of the compact
 * JSON text but several times faster to write and read back than printing and parsing JSON; retrieve rebuilds a
 * cJSON tree from the image for the reply, in one allocation. max_value_bytes limits the image's size.
 * An entry stores its expiry only when it has one, and the periodic sweep runs only while some entry has a
 * TTL, so an unbounded cache without TTLs pays neither. The BM25 index is built on the first text search and
 * maintained from then on, so a cache that is never searched by text pays nothing for it. The table doubles
 * incrementally (as Redis's dict does): each point operation moves a few buckets of the previous table, so no
 * call waits for a million entries to be rehashed, nor for the new table's memory to be zeroed (each move
 * initialises the two new buckets it fills); likewise the TTL sweep walks the table in slices of 4,096
 * buckets. Chain links carry a 15-bit tag of their entry's hash and an
 * end-of-chain flag (link_t), so most misses and collisions are decided without visiting the entry: in a table
 * of a million entries each visit is a cache miss, and they were half of a store's time. Every method completes
 * synchronously: the cache never blocks. This file is the whole source but the image codec, which it calls
 * (cache_image.c) and which calls nothing back. It takes replicas (ENGRAM_SOURCE_REPLICA): a store flagged
 * ENGRAM_REQ_REPLICA keeps the version and timestamps it is given, which is how a tiered source's copies in a
 * cache tier keep the durable tier's (docs/tiered.md). Items it removes on its own — expired ones (found by a
 * call or by the sweep) and LRU victims — are announced to event subscribers (engram_source_announce,
 * docs/events.md) as expired and evicted. It answers an export's pages with whole items (ENGRAM_SOURCE_LIST_ITEMS)
 * from a key-ordered listing of the table built for the export (snap_t), so a page costs its own items, not a walk
 * of the whole table. An ordered search with a limit (ENGRAM_SOURCE_ORDER_LIMIT: a thread list's page) keeps the
 * best entries in a bounded heap while it scans (cache_topk.c) and builds reply items for those only.
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "cache_image.h"
#include "cache_slab.h"
#include "cache_topk.h"
#include "engram/source.h"

/* A link of a hash chain: the address of the next entry, and on 64-bit machines, in the 16 bits above the 48 an
 * address uses, 15 bits of that entry's hash (its tag) and a flag saying that entry ends its chain. A walk
 * looks inside an entry only when its tag matches or the chain goes on past it, so a miss in a chain of one
 * costs no visit to the entry at all (every visit is a cache miss in a large table). The flag is set only when
 * the entry is linked at the head of an empty chain and never set later; a stale 0 (after the entry's successor
 * was removed) merely costs one visit. Should an allocator ever return an address above 2^48, the table drops
 * the tags once (untag_all) and links are plain addresses from then on. */
typedef uintptr_t link_t;

typedef struct entry_s {
  link_t hnext;
  int64_t created_at_ms, updated_at_ms;
  uint64_t version;
  uint32_t hash;
  uint16_t ns_len, key_len;
  uint32_t value_len, meta_len; /* bytes of the images; meta_len 0 = no metadata */
  /* has_expiry: data starts with expires_at_ms. listed: the export's key-ordered listing (snap_t) points at it, so
   * when it leaves the table it is kept, dead, until that listing is dropped (entry_release). */
  unsigned char has_expiry : 1, listed : 1, dead : 1;
  char data[]; /* [expires_at_ms, 8 bytes, when has_expiry] ns \0 key \0 value-image [metadata-image] */
} entry_t;

/* The allocation holds the header up to data (not sizeof, which pads), then the variable part. */
#define ENTRY_HEAD offsetof(entry_t, data)

/* An entry's LRU links (most recently used at the list's head) live in front of its header, in the same
 * allocation, and only in a cache that keeps the list (lru_on: max_entries or max_bytes set): an unbounded
 * cache saves their 16 bytes an item (a conversation's message is an item: docs/conversations.md). */
typedef struct {
  entry_t *prev, *next;
} lru_t;
#define E_LRU(e) ((lru_t *)(void *)((char *)(e) - sizeof(lru_t)))

/* The export's listing (ENGRAM_REQ_LIST_ITEMS): every entry of the table, sorted by (namespace, key), so that a
 * page is a binary search for its cursor and a walk of the next entries instead of a walk of the whole table. It
 * holds pointers: an entry it points at (flagged listed) that leaves the table — deleted, replaced by a store,
 * expired, evicted, cleared — is not freed but kept whole, flagged dead, on the zombies list until the listing is
 * dropped, so every slot can still be read and keeps its key; a page reading a dead slot looks its key up in the
 * table and lists the live entry found there, if any (a replaced item's new version). A key inserted since the
 * listing was built is not in it: the listing is then stale, and an export starting (no cursor) rebuilds it, while
 * one under way goes on with it (an item written during an export may or may not appear: docs/export.md). */
typedef struct {
  struct entry_s **v;
  size_t n;
  int stale;              /* a key was inserted since it was built */
  struct entry_s *zombies; /* dead entries it still points at, chained through hnext (plain addresses) */
  size_t n_zombies;
} snap_t;

typedef struct {
  link_t *buckets;  /* the table: the new, larger one while a resize is in progress */
  size_t mask;
  link_t *old;      /* a resize in progress: the previous table, its buckets [old_pos, old_mask] not yet moved */
  link_t none;      /* always 0: what lookup points at when the key is absent */
  int tagged;       /* links carry tags (see link_t) */
  size_t old_mask, old_pos;
  size_t count;
  size_t bytes;
  entry_t *lru_head, *lru_tail;
  int lru_on;       /* max_entries or max_bytes is set: the LRU list is kept (else it is never read) */
  size_t lru_pre;   /* bytes of LRU links in front of each entry: sizeof(lru_t) when lru_on, else 0 */
  uint64_t evictions, expirations;
  size_t n_expiring; /* entries with an expiry: the sweep runs only while there are some */
  size_t max_entries, max_bytes, max_value_bytes;
  uint64_t sweep_interval_ms;
  size_t sweep_pos; /* the next bucket the sweep visits (sweep) */
  uv_timer_t sweep;
  int sweep_on;
  engram_text_set_t *text; /* one BM25 index per namespace (engram_text_set); NULL until the first text search */
  snap_t snap;             /* the export's key-ordered listing; snap.v NULL when there is none */
  engram__cache_slabs_t slabs; /* where the entries live (cache_slab.h: apart from the short-lived blocks) */
  engram_source_t *src;
} cache_t;

#define E_NS(e) ((e)->data + ((e)->has_expiry ? 8 : 0))
#define E_KEY(e) (E_NS(e) + (e)->ns_len + 1)
#define E_VALUE(e) (E_KEY(e) + (e)->key_len + 1)
#define E_META(e) (E_VALUE(e) + (e)->value_len)

static size_t entry_bytes(const cache_t *c, const entry_t *e) {
  return c->lru_pre + ENTRY_HEAD + (e->has_expiry ? 8u : 0u) + e->ns_len + e->key_len + e->value_len + e->meta_len +
         2u;
}

static void entry_free(cache_t *c, entry_t *e) {
  engram__cache_slab_free(&c->slabs, (char *)e - c->lru_pre, entry_bytes(c, e));
}

static void snap_drop(cache_t *c);

/* An entry that has left the table (unlinked from its chain, the LRU list and the text index): freed, or, when
 * the export's listing points at it, kept dead until the listing is dropped. A listing whose dead entries outgrow
 * half of it is dropped at once (an export under way rebuilds it at its next page), so they never hold more than
 * about half the table's memory again. */
static void entry_release(cache_t *c, entry_t *e) {
  if (!e->listed) {
    entry_free(c, e);
    return;
  }
  e->dead = 1;
  e->hnext = (link_t)c->snap.zombies;
  c->snap.zombies = e;
  if (++c->snap.n_zombies > c->snap.n / 2 + 1024) snap_drop(c);
}

static int64_t entry_expires(const entry_t *e) {
  int64_t v = 0;
  if (e->has_expiry) memcpy(&v, e->data, sizeof v);
  return v;
}

/* The bytes of p mixed into h eight at a time (the last word read overlapping the one before it when n is not a
 * multiple of 8), n itself first, so that ("ab", "c") and ("a", "bc") differ. FNV-1a, a multiply per byte, was a
 * sixth of a retrieve's instructions for a 13-byte key; this is two multiplies. */
static uint64_t hash_bytes(uint64_t h, const char *p, size_t n) {
  const uint64_t k = 0x9E3779B97F4A7C15ull;
  uint64_t w = 0;
  size_t i;
  h = (h ^ n) * k;
  if (n < 8) {
    for (i = 0; i < n; i++) w |= (uint64_t)(unsigned char)p[i] << (8 * i);
    h = (h ^ w) * k;
    return h ^ (h >> 32);
  }
  for (i = 0; i + 8 <= n; i += 8) {
    memcpy(&w, p + i, 8);
    h = (h ^ w) * k;
    h ^= h >> 32;
  }
  if (i < n) {
    memcpy(&w, p + n - 8, 8);
    h = (h ^ w) * k;
    h ^= h >> 32;
  }
  return h;
}

/* One 64-bit hash of (namespace, key), finished with MurmurHash3's 64-bit finaliser: the bucket takes its low
 * bits and the link's tag its top ones, and every input bit reaches both. */
static uint64_t hash_of(const char *ns, size_t ns_len, const char *key, size_t key_len) {
  uint64_t h = hash_bytes(hash_bytes(0x243F6A8885A308D3ull, ns, ns_len), key, key_len);
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ull;
  h ^= h >> 33;
  return h;
}

/* The entry's hash (it picks the bucket) and the link's tag, both from one 64-bit hash. */
static uint32_t hash32(uint64_t h) { return (uint32_t)(h ^ (h >> 32)); }
static unsigned tag_of_hash(uint64_t h) { return (unsigned)(h >> 49); }

/* ---- Links ---- */

#define LINK_ADDR_BITS 48
#define LINK_LAST ((uint64_t)1 << LINK_ADDR_BITS)

static entry_t *to_entry(const cache_t *c, link_t l) {
  return (entry_t *)(c->tagged ? (uintptr_t)((uint64_t)l & (LINK_LAST - 1)) : l);
}
static unsigned link_tag(link_t l) { return (unsigned)((uint64_t)l >> (LINK_ADDR_BITS + 1)); }
static int link_last(link_t l) { return ((uint64_t)l & LINK_LAST) != 0; }

/* Tests set this to make the next store act as if the allocator had returned an address above 2^48. */
int engram__cache_untag_now;

/* The link to e, carrying tag and last when the table uses tags. */
static link_t make_link(const cache_t *c, entry_t *e, unsigned tag, int last) {
  if (!c->tagged) return (link_t)e;
  return (link_t)((uint64_t)(uintptr_t)e | ((uint64_t)tag << (LINK_ADDR_BITS + 1)) | (last ? LINK_LAST : 0));
}

/* ---- LRU ---- */

/* The LRU list is kept only when something evicts by it (lru_on): keeping it costs a retrieve two cache misses
 * in a large table (the entry's list neighbours, written to unlink it), as many as the lookup itself. */
static void lru_unlink(cache_t *c, entry_t *e) {
  lru_t *l;
  if (!c->lru_on) return;
  l = E_LRU(e);
  if (l->prev) E_LRU(l->prev)->next = l->next;
  else c->lru_head = l->next;
  if (l->next) E_LRU(l->next)->prev = l->prev;
  else c->lru_tail = l->prev;
  l->prev = l->next = NULL;
}

static void lru_push_front(cache_t *c, entry_t *e) {
  lru_t *l;
  if (!c->lru_on) return;
  l = E_LRU(e);
  l->prev = NULL;
  l->next = c->lru_head;
  if (c->lru_head) E_LRU(c->lru_head)->prev = e;
  else c->lru_tail = e;
  c->lru_head = e;
}

static void lru_touch(cache_t *c, entry_t *e) {
  if (!c->lru_on || c->lru_head == e) return;
  lru_unlink(c, e);
  lru_push_front(c, e);
}

/* ---- Table ---- */

/* Old buckets moved to the new table per point operation while a resize is in progress: the previous table has
 * half the new one's buckets, and the next doubling comes after as many inserts, so the move always ends first. */
#define REHASH_STEP 4

/* Whether bucket i of c->buckets has been initialised. The new table of a resize is allocated, not zeroed
 * (grow): old bucket p feeds new buckets p and p + (old size) only, and those two are set to empty just before
 * p's entries move into them (rehash_step), so until then they hold whatever the allocator returned. Every
 * lookup and insert goes to the old table for such a bucket (chain_of); a walk over the new table's buckets
 * skips them (their entries are still in the old table). */
static int bucket_ready(const cache_t *c, size_t i) { return c->old == NULL || (i & c->old_mask) < c->old_pos; }

static void rehash_step(cache_t *c, size_t steps) {
  if (c->old == NULL) return;
  for (; steps > 0 && c->old_pos <= c->old_mask; steps--, c->old_pos++) {
    link_t l = c->old[c->old_pos], nx;
    c->buckets[c->old_pos] = 0;
    c->buckets[c->old_pos + c->old_mask + 1] = 0;
    for (; l != 0; l = nx) {
      entry_t *e = to_entry(c, l);
      link_t *head = &c->buckets[e->hash & c->mask];
      nx = e->hnext;
      e->hnext = *head;
      *head = make_link(c, e, link_tag(l), *head == 0);
    }
    c->old[c->old_pos] = 0;
  }
#if defined(__GNUC__)
  /* The next operation moves the next buckets: start loading their first entries now (each is a cache miss in
   * a large table, and the move has to write into every entry it relinks). */
  {
    size_t i;
    for (i = c->old_pos; i < c->old_pos + REHASH_STEP && i <= c->old_mask; i++)
      if (c->old[i] != 0) __builtin_prefetch(to_entry(c, c->old[i]), 1);
  }
#endif
  if (c->old_pos > c->old_mask) {
    engram_free(c->old);
    c->old = NULL;
  }
}

/* Finishes a resize in progress: whole-table walks see one table. */
static void rehash_all(cache_t *c) { rehash_step(c, (size_t)-1); }

/* The head of the chain for hash h: a key whose bucket of the previous table has not moved yet lives (and is
 * inserted) there. */
static link_t *chain_of(cache_t *c, uint32_t h) {
  if (c->old != NULL && (h & c->old_mask) >= c->old_pos) return &c->old[h & c->old_mask];
  return &c->buckets[h & c->mask];
}

/* Non-zero when the n bytes at a and b are equal: up to 16 bytes as two 8-byte words that overlap when n is not
 * 8 or 16 (a key like "memory:123456" is 13 bytes), without a call to memcmp; longer ones through memcmp. */
static int same_bytes(const char *a, const char *b, size_t n) {
  uint64_t x, y, u, v;
  if (n > 16 || n < 8) return memcmp(a, b, n) == 0;
  memcpy(&x, a, 8);
  memcpy(&y, b, 8);
  memcpy(&u, a + n - 8, 8);
  memcpy(&v, b + n - 8, 8);
  return ((x ^ y) | (u ^ v)) == 0;
}

/* The link holding (ns, key), or NULL. */
static link_t *find_link(cache_t *c, const char *ns, size_t ns_len, const char *key, size_t key_len, uint64_t h64) {
  uint32_t h = hash32(h64);
  unsigned tag = tag_of_hash(h64);
  link_t *pp = chain_of(c, h);
  while (*pp != 0) {
    link_t l = *pp;
    entry_t *e;
    if (c->tagged && link_tag(l) != tag) {
      if (link_last(l)) return NULL;
      e = to_entry(c, l);
    } else {
      e = to_entry(c, l);
      if (e->hash == h && e->key_len == key_len && e->ns_len == ns_len && same_bytes(E_KEY(e), key, key_len) &&
          (ns_len == 0 || memcmp(E_NS(e), ns, ns_len) == 0))
        return pp;
    }
    pp = &e->hnext;
  }
  return NULL;
}

/* The link pointing at entry x (which is in the table). */
static link_t *link_to(cache_t *c, const entry_t *x) {
  link_t *pp = chain_of(c, x->hash);
  while (to_entry(c, *pp) != x) pp = &to_entry(c, *pp)->hnext;
  return pp;
}

/* Drops the tags from every link, once (see link_t). */
static void untag_all(cache_t *c) {
  size_t i, t;
  for (t = 0; t < 2; t++) {
    link_t *b = t ? c->old : c->buckets;
    size_t mask = t ? c->old_mask : c->mask;
    for (i = 0; b != NULL && i <= mask; i++) {
      link_t *pp = &b[i];
      if (!t && !bucket_ready(c, i)) continue; /* not initialised yet: its entries are in the old table */
      while (*pp != 0) {
        entry_t *e = to_entry(c, *pp);
        *pp = (link_t)e;
        pp = &e->hnext;
      }
    }
  }
  c->tagged = 0;
}

/* Starts doubling the table; the entries move over the next operations (rehash_step), which also initialise
 * the new table's buckets as they fill them (bucket_ready). The new table is not zeroed here: zeroing it in
 * one go made the store that crossed 2^20 entries write 16 MiB of fresh pages — 4,096 first-touch page faults,
 * about 50 ms on the benchmark VM, during which every other call waited (bench_cache's open loop at 50 %,
 * docs/benchmarks.md) — and 32 MiB at 2^21. Each operation now touches the few new buckets it moves into. */
static int grow(cache_t *c) {
  size_t n = (c->mask + 1) * 2;
  link_t *b = n > SIZE_MAX / sizeof *b ? NULL : engram_malloc(n * sizeof *b);
  if (b == NULL) return ENGRAM_ENOMEM; /* the table stays as it is, only fuller */
  rehash_all(c);                      /* (never needed in practice: a resize ends long before the next) */
  c->old = c->buckets;
  c->old_mask = c->mask;
  c->old_pos = 0;
  c->buckets = b;
  c->mask = n - 1;
  return 0;
}

/* Unlinks e (at *pp) from every structure and frees it. */
static void remove_at(cache_t *c, link_t *pp) {
  entry_t *e = to_entry(c, *pp);
  *pp = e->hnext;
  lru_unlink(c, e);
  c->count--;
  c->bytes -= entry_bytes(c, e);
  c->n_expiring -= e->has_expiry;
  if (c->text) engram_text_set_remove(c->text, E_NS(e), e->ns_len, (uint64_t)(uintptr_t)e);
  entry_release(c, e);
}

/* Announces that the cache removed e on its own (ENGRAM_EVENT_EXPIRED / EVICTED), when anyone subscribes. */
static void announce(cache_t *c, const entry_t *e, unsigned kind) {
  if (engram_source_events_wanted(c->src))
    engram_source_announce(c->src, kind, E_NS(e), e->ns_len, E_KEY(e), e->key_len, e->version);
}

static int expired(const entry_t *e, int64_t now) {
  int64_t x;
  if (!e->has_expiry) return 0;
  x = entry_expires(e);
  return x != 0 && x <= now;
}

/* The link to a live entry, or a link holding 0 when there is none; an expired entry is removed (and counted)
 * on the way. *h64 (when not NULL) receives the key's hash. */
static link_t *lookup_h(cache_t *c, const char *ns, size_t ns_len, const char *key, size_t key_len, int64_t now,
                        uint64_t *h64) {
  uint64_t h = hash_of(ns, ns_len, key, key_len);
  link_t *pp;
  rehash_step(c, REHASH_STEP);
  if (h64 != NULL) *h64 = h;
  pp = find_link(c, ns, ns_len, key, key_len, h);
  if (pp == NULL) return &c->none;
  if (expired(to_entry(c, *pp), now)) {
    announce(c, to_entry(c, *pp), ENGRAM_EVENT_EXPIRED);
    remove_at(c, pp);
    c->expirations++;
    return &c->none;
  }
  return pp;
}

static entry_t *lookup(cache_t *c, const char *ns, size_t ns_len, const char *key, size_t key_len, int64_t now,
                       link_t **pp) {
  *pp = lookup_h(c, ns, ns_len, key, key_len, now, NULL);
  return to_entry(c, **pp);
}

static void evict(cache_t *c, const entry_t *keep) {
  while ((c->max_entries && c->count > c->max_entries) || (c->max_bytes && c->bytes > c->max_bytes)) {
    entry_t *victim = c->lru_tail;
    if (victim == NULL || victim == keep) break;
    announce(c, victim, ENGRAM_EVENT_EVICTED);
    remove_at(c, link_to(c, victim));
    c->evictions++;
  }
}

static int index_entry(cache_t *c, entry_t *e) {
  char *text;
  cJSON *value;
  engram_text_index_t *ix;
  int rc;
  if (c->text == NULL) return 0;
  if ((ix = engram_text_set_get(c->text, E_NS(e), e->ns_len, 1)) == NULL) return ENGRAM_ENOMEM;
  value = engram__cache_image_read(E_VALUE(e));
  if (value == NULL) return ENGRAM_ENOMEM;
  text = engram_text_of(E_KEY(e), value);
  cJSON_Delete(value);
  if (text == NULL) return ENGRAM_ENOMEM;
  rc = engram_text_index_put(ix, (uint64_t)(uintptr_t)e, text, strlen(text));
  engram_free(text);
  return rc;
}

/* ---- Replies ---- */

/* An item of a reply. Its value and metadata are rebuilt from their images each in one block (cache_image.h,
 * engram__cache_image_read_block), in the request's reply room when it has room, else in one allocation: the
 * reply is borrowed by the caller for the callback, and the block goes whole with the request. own_key: e is the
 * key the request names (a retrieve), whose key and namespace are passed as the request's own pointers, which
 * engram_reply_add knows without comparing them. */
static int add_item_of(engram_request_t *req, const entry_t *e, int with_value, int with_meta, double score,
                       int own_key) {
  engram_item_t it;
  cJSON *value = NULL, *meta = NULL;
  int roomed = 0;
  memset(&it, 0, sizeof it);
  it.key = own_key ? req->key : E_KEY(e);
  it.ns = own_key ? req->ns : E_NS(e);
  it.created_at_ms = e->created_at_ms;
  it.updated_at_ms = e->updated_at_ms;
  it.expires_at_ms = entry_expires(e);
  it.version = e->version;
  it.score = score;
  if (with_value && (value = engram__cache_image_read_block(E_VALUE(e), req, &roomed)) == NULL) return ENGRAM_ENOMEM;
  if (with_meta && e->meta_len && (meta = engram__cache_image_read_block(E_META(e), req, NULL)) == NULL) {
    if (!roomed) cJSON_Delete(value); /* a value in the request's room goes with the request */
    return ENGRAM_ENOMEM;
  }
  it.value = value;
  it.metadata = meta;
  return engram_reply_add(req, &it, ENGRAM_REPLY_OWN_VALUE | ENGRAM_REPLY_OWN_METADATA);
}

static int add_item(engram_request_t *req, const entry_t *e, int with_value, int with_meta, double score) {
  return add_item_of(req, e, with_value, with_meta, score, 0);
}

/* ---- Store ---- */

/* Stores one item; returns 0 or an error, and adds the reply item when add_reply. On success *stored (when not
 * NULL) receives the new entry, which eviction never takes: an update reads its system fields there, since a
 * lookup would drop an entry stored already expired (an update with a TTL of 0). */
static int store_one(cache_t *c, engram_request_t *req, const char *key, size_t key_len, const cJSON *value,
                     const cJSON *meta, int64_t expires, uint64_t if_version, unsigned flags, int add_reply,
                     entry_t **stored) {
  const char *ns = req->ns;
  size_t ns_len = req->ns_len;
  int64_t now = req->now_ms;
  uint64_t h64;
  link_t *pp = lookup_h(c, ns, ns_len, key, key_len, now, &h64);
  entry_t *old = to_entry(c, *pp), *e;
  size_t vlen, mlen = 0, xlen = expires != 0 ? 8 : 0;
  int rc;
  int replica = (flags & ENGRAM_REQ_REPLICA) != 0; /* the item exactly as given (a tiered source's copy) */
  if (!replica && old != NULL && (flags & ENGRAM_OPT_CREATE_ONLY)) return ENGRAM_EEXIST;
  if (!replica && if_version != 0 && (old == NULL || old->version != if_version)) return ENGRAM_ECONFLICT;
  if ((vlen = engram__cache_image_size(value)) == 0 || (meta != NULL && (mlen = engram__cache_image_size(meta)) == 0))
    return ENGRAM_EINVAL;
  if (c->max_value_bytes && vlen > c->max_value_bytes) return ENGRAM_ETOOBIG;
  if ((e = engram__cache_slab_alloc(&c->slabs, c->lru_pre + ENTRY_HEAD + xlen + ns_len + key_len + vlen + mlen + 2)) == NULL)
    return ENGRAM_ENOMEM;
  e = (entry_t *)(void *)((char *)e + c->lru_pre);
  if (c->tagged && ((uint64_t)(uintptr_t)e >> LINK_ADDR_BITS != 0 || engram__cache_untag_now))
    untag_all(c); /* before any link is read */
  memset(e, 0, ENTRY_HEAD);
  e->has_expiry = xlen != 0;
  if (xlen) memcpy(e->data, &expires, sizeof expires);
  e->ns_len = (uint16_t)ns_len;
  e->key_len = (uint16_t)key_len;
  e->value_len = (uint32_t)vlen;
  e->meta_len = (uint32_t)mlen;
  memcpy(E_NS(e), ns, ns_len);
  E_NS(e)[ns_len] = '\0';
  memcpy(E_KEY(e), key, key_len);
  E_KEY(e)[key_len] = '\0';
  engram__cache_image_write(value, (unsigned char *)E_VALUE(e));
  if (meta != NULL) engram__cache_image_write(meta, (unsigned char *)E_META(e));
  e->hash = hash32(h64);
  if (replica) {
    e->created_at_ms = req->created_at_ms;
    e->updated_at_ms = req->updated_at_ms;
    e->version = req->version;
  } else {
    e->created_at_ms = old ? old->created_at_ms : now;
    e->updated_at_ms = now;
    e->version = old ? old->version + 1 : 1;
  }
  if (c->text != NULL && (rc = index_entry(c, e)) != 0) {
    entry_free(c, e);
    return rc;
  }
  if (old != NULL) {
    /* Replace in place in the chain. */
    e->hnext = old->hnext;
    *pp = make_link(c, e, tag_of_hash(h64), link_last(*pp));
    lru_unlink(c, old);
    c->bytes -= entry_bytes(c, old);
    c->n_expiring -= old->has_expiry;
    if (c->text) engram_text_set_remove(c->text, E_NS(old), old->ns_len, (uint64_t)(uintptr_t)old);
    entry_release(c, old);
  } else {
    link_t *head;
    if (c->count + 1 > c->mask + 1) grow(c);
    c->snap.stale = 1; /* a new key: an export that starts from now on needs a listing holding it */
    head = chain_of(c, e->hash);
    e->hnext = *head;
    *head = make_link(c, e, tag_of_hash(h64), *head == 0);
    c->count++;
  }
  lru_push_front(c, e);
  c->bytes += entry_bytes(c, e);
  c->n_expiring += e->has_expiry;
  evict(c, e);
  if (stored != NULL) *stored = e;
  if (add_reply) {
    engram_item_t it;
    memset(&it, 0, sizeof it);
    it.key = key;
    it.ns = ns;
    it.metadata = meta;
    it.created_at_ms = e->created_at_ms;
    it.updated_at_ms = e->updated_at_ms;
    it.expires_at_ms = expires;
    it.version = e->version;
    it.score = 1.0;
    if (engram_reply_add(req, &it, 0) != 0) return ENGRAM_ENOMEM; /* stored; only the reply is short */
  }
  return 0;
}

static void cache_store(engram_source_t *src, engram_request_t *req) {
  cache_t *c = engram_source_state(src);
  int rc = store_one(c, req, req->key, req->key_len, req->value, req->metadata, req->expires_at_ms, req->if_version,
                     req->flags, 1, NULL);
  if (rc == ENGRAM_EEXIST) engram_request_fail_exists(req, NULL);
  else if (rc == ENGRAM_ECONFLICT) engram_request_fail_conflict(req, NULL, req->if_version);
  else if (rc == ENGRAM_EINVAL)
    engram_request_fail(req, rc, "key '%s': the value or metadata holds a node that is not JSON", req->key);
  else if (rc == ENGRAM_ETOOBIG)
    engram_request_fail(req, rc, "key '%s': value larger than max_value_bytes (%zu)", req->key, c->max_value_bytes);
  else engram_request_complete(req, rc);
}

/* write_now (vtable version 5, the write-now service of include/engram/source.h): a tiered source's write-through
 * copy written at once, as cache_store writes a replica. store_one reads the namespace, the clock and the replica's
 * system fields from a request: a blank one on the stack carries them (no reply is added, so nothing else of it
 * is read). */
static int cache_write_now(engram_source_t *src, const engram_source_call_t *call) {
  cache_t *c = engram_source_state(src);
  engram_request_t r;
  int rc;
  memset(&r, 0, sizeof r);
  r.op = ENGRAM_OP_STORE;
  r.key = call->key;
  r.key_len = strlen(call->key);
  r.ns = call->ns != NULL ? call->ns : "";
  r.ns_len = strlen(r.ns);
  r.now_ms = call->now_ms ? call->now_ms : engram_now_ms();
  r.flags = call->flags;
  r.version = call->version;
  r.created_at_ms = call->created_at_ms;
  r.updated_at_ms = call->updated_at_ms;
  rc = store_one(c, &r, r.key, r.key_len, call->value, call->metadata, call->expires_at_ms, 0, call->flags, 0, NULL);
  if (rc == ENGRAM_EINVAL) engram_set_last_error(rc, "key '%s': the value or metadata holds a node that is not JSON", r.key);
  else if (rc == ENGRAM_ETOOBIG)
    engram_set_last_error(rc, "key '%s': value larger than max_value_bytes (%zu)", r.key, c->max_value_bytes);
  else if (rc != 0) engram_set_last_error(rc, "key '%s': %s", r.key, engram_strerror(rc));
  return rc;
}

static void cache_store_many(engram_source_t *src, engram_request_t *req) {
  cache_t *c = engram_source_state(src);
  size_t i, ok = 0;
  engram_item_t blank;
  memset(&blank, 0, sizeof blank);
  for (i = 0; i < req->n; i++) {
    const engram_entry_t *en = &req->entries[i];
    int rc = store_one(c, req, en->key, strlen(en->key), en->value, en->metadata, req->entry_expires_at_ms[i], 0,
                       req->flags, 1, NULL);
    if (rc != 0) {
      /* Keep items aligned with the input: a placeholder carrying the key and the status. */
      blank.key = en->key;
      blank.ns = req->ns;
      if (engram_reply_add(req, &blank, 0) != 0) {
        engram_request_complete(req, ENGRAM_ENOMEM);
        return;
      }
    } else {
      ok++;
    }
    engram_reply_set_item_status(req, i, rc);
  }
  engram_reply_set_count(req, ok);
  engram_request_complete(req, 0);
}

/* ---- Retrieve, exists, delete ---- */

static void cache_retrieve(engram_source_t *src, engram_request_t *req) {
  cache_t *c = engram_source_state(src);
  link_t *pp;
  entry_t *e = lookup(c, req->ns, req->ns_len, req->key, req->key_len, req->now_ms, &pp);
  if (e == NULL) {
    engram_request_fail_not_found(req, NULL);
    return;
  }
  lru_touch(c, e);
  engram_request_complete(req, add_item_of(req, e, 1, (req->flags & ENGRAM_OPT_INCLUDE_METADATA) != 0, 1.0, 1));
}

/* prefetch (vtable version 6): the retrieve's chain head, loaded while the calls queued before it are served —
 * with a thousand calls in flight, a thousand calls early. In a large table the bucket is a cache miss. */
static void cache_prefetch(engram_source_t *src, const engram_request_t *req) {
  cache_t *c = engram_source_state(src);
  if (c->buckets == NULL) return;
#if defined(__GNUC__)
  __builtin_prefetch(chain_of(c, hash32(hash_of(req->ns, req->ns_len, req->key, req->key_len))));
#endif
}

static void cache_retrieve_many(engram_source_t *src, engram_request_t *req) {
  cache_t *c = engram_source_state(src);
  int64_t now = engram_now_ms();
  size_t i, found = 0;
  engram_item_t blank;
  memset(&blank, 0, sizeof blank);
  for (i = 0; i < req->n; i++) {
    link_t *pp;
    entry_t *e = lookup(c, req->ns, req->ns_len, req->keys[i], strlen(req->keys[i]), now, &pp);
    int rc;
    if (e != NULL) {
      lru_touch(c, e);
      rc = add_item(req, e, 1, (req->flags & ENGRAM_OPT_INCLUDE_METADATA) != 0, 1.0);
      found += rc == 0;
    } else {
      blank.key = req->keys[i];
      blank.ns = req->ns;
      rc = engram_reply_add(req, &blank, 0);
      if (rc == 0) rc = ENGRAM_ENOTFOUND;
    }
    if (rc == ENGRAM_ENOMEM) {
      engram_request_complete(req, ENGRAM_ENOMEM);
      return;
    }
    engram_reply_set_item_status(req, i, rc);
  }
  engram_reply_set_count(req, found);
  engram_request_complete(req, 0);
}

static void cache_exists(engram_source_t *src, engram_request_t *req) {
  cache_t *c = engram_source_state(src);
  link_t *pp;
  engram_reply_set_count(req, lookup(c, req->ns, req->ns_len, req->key, req->key_len, engram_now_ms(), &pp) != NULL);
  engram_request_complete(req, 0);
}

/* read_now (vtable version 4, the read-now service of include/engram/source.h): a tiered source's hot-key read
 * answered from this cache without a call of its own. Adds the item to the caller's request as cache_retrieve
 * would, completing nothing; ENGRAM_ENOTFOUND on a miss. */
static int cache_read_now(engram_source_t *src, engram_request_t *req) {
  cache_t *c = engram_source_state(src);
  link_t *pp;
  entry_t *e = lookup(c, req->ns, req->ns_len, req->key, req->key_len, req->now_ms, &pp);
  if (e == NULL) return ENGRAM_ENOTFOUND;
  lru_touch(c, e);
  return add_item_of(req, e, 1, (req->flags & ENGRAM_OPT_INCLUDE_METADATA) != 0, 1.0, 1);
}

static int delete_one(cache_t *c, const char *ns, size_t ns_len, const char *key, size_t key_len) {
  link_t *pp;
  if (lookup(c, ns, ns_len, key, key_len, engram_now_ms(), &pp) == NULL) return 0;
  remove_at(c, pp);
  return 1;
}

static void cache_delete(engram_source_t *src, engram_request_t *req) {
  cache_t *c = engram_source_state(src);
  engram_reply_set_count(req, (uint64_t)delete_one(c, req->ns, req->ns_len, req->key, req->key_len));
  engram_request_complete(req, 0);
}

static void cache_delete_many(engram_source_t *src, engram_request_t *req) {
  cache_t *c = engram_source_state(src);
  size_t i, n = 0;
  for (i = 0; i < req->n; i++) n += (size_t)delete_one(c, req->ns, req->ns_len, req->keys[i], strlen(req->keys[i]));
  engram_reply_set_count(req, n);
  engram_request_complete(req, 0);
}

/* ---- Update: atomic here, since the actor runs one method at a time ---- */

/* The writes that ride on an update (ENGRAM_SOURCE_UPDATE_WRITES): refused as a whole, before anything is
 * written, when one of them could not be stored (the update fails with its status; the request is completed
 * here); else 0. */
static int check_writes(cache_t *c, engram_request_t *req) {
  const engram_update_writes_t *w = req->writes;
  size_t i, vlen;
  for (i = 0; i < w->n_store; i++) {
    const engram_entry_t *en = &w->store[i];
    if ((vlen = engram__cache_image_size(en->value)) == 0 ||
        (en->metadata != NULL && engram__cache_image_size(en->metadata) == 0)) {
      engram_request_fail(req, ENGRAM_EINVAL, "update of key '%s': its write of key '%s': the value or metadata "
                          "holds a node that is not JSON", req->key, en->key);
      return ENGRAM_EINVAL;
    }
    if (c->max_value_bytes && vlen > c->max_value_bytes) {
      engram_request_fail(req, ENGRAM_ETOOBIG, "update of key '%s': its write of key '%s': value larger than "
                          "max_value_bytes (%zu)", req->key, en->key, c->max_value_bytes);
      return ENGRAM_ETOOBIG;
    }
  }
  return 0;
}

/* Makes the writes after the updated item is stored (the actor runs one method at a time, so nothing comes
 * between). Only out of memory can fail here. */
static int make_writes(cache_t *c, engram_request_t *req) {
  engram_update_writes_t *w = req->writes;
  size_t i;
  for (i = 0; i < w->n_store; i++) {
    const engram_entry_t *en = &w->store[i];
    entry_t *e = NULL;
    int rc = store_one(c, req, en->key, strlen(en->key), en->value, en->metadata, w->store_expires_at_ms[i], 0, 0, 0,
                       &e);
    if (rc != 0) return rc;
    w->store_version[i] = e->version;
  }
  for (i = 0; i < w->n_delete; i++)
    w->deleted += (uint64_t)delete_one(c, req->ns, req->ns_len, w->delete_keys[i], strlen(w->delete_keys[i]));
  return 0;
}

static void cache_update(engram_source_t *src, engram_request_t *req) {
  cache_t *c = engram_source_state(src);
  link_t *pp;
  entry_t *e = lookup(c, req->ns, req->ns_len, req->key, req->key_len, engram_now_ms(), &pp);
  cJSON *current = NULL, *next = NULL, *meta = NULL;
  int64_t expires;
  int rc;
  engram_item_t it;
  if (e != NULL) {
    /* in one block (cache_image.h): the function only reads it, and node by node it was a malloc and a free a
     * node — on a thread's append, 6.7 k of an update's instructions (docs/conversations.md) */
    current = engram__cache_image_read_block(E_VALUE(e), NULL, NULL);
    if (current == NULL || (e->meta_len && (meta = engram__cache_image_read(E_META(e))) == NULL)) {
      cJSON_Delete(current);
      engram_request_complete(req, ENGRAM_ENOMEM);
      return;
    }
  }
  rc = engram_request_run_update(req, current, &next);
  cJSON_Delete(current);
  if (rc != 0) {
    cJSON_Delete(meta);
    engram_request_complete(req, rc);
    return;
  }
  /* Without ENGRAM_OPT_TTL an existing item keeps its expiry; a created one takes expires_at_ms (0, or the
   * source's default_ttl_ms stamped by the core). */
  expires = (req->flags & ENGRAM_OPT_TTL) ? req->expires_at_ms : e ? entry_expires(e) : req->expires_at_ms;
  if (req->writes != NULL && (rc = check_writes(c, req)) != 0) { /* all or nothing: refused before any write */
    cJSON_Delete(next);
    cJSON_Delete(meta);
    return;
  }
  rc = store_one(c, req, req->key, req->key_len, next, meta, expires, 0, 0, 0, &e);
  if (rc == 0) {
    memset(&it, 0, sizeof it);
    it.key = req->key;
    it.ns = req->ns;
    it.value = next;
    it.metadata = meta;
    if (e) { /* read now: the writes below may evict the entry */
      it.created_at_ms = e->created_at_ms;
      it.updated_at_ms = e->updated_at_ms;
      it.expires_at_ms = entry_expires(e);
      it.version = e->version;
    }
    if (req->writes != NULL) rc = make_writes(c, req);
  }
  if (rc == 0) {
    rc = engram_reply_add(req, &it, ENGRAM_REPLY_OWN_VALUE | ENGRAM_REPLY_OWN_METADATA);
  } else {
    cJSON_Delete(next);
    cJSON_Delete(meta);
  }
  engram_request_complete(req, rc);
}

/* ---- Scans: search, count, list_keys, clear ---- */

/* How a scan tests the request's pattern (query.pattern), decided once when the scan starts (scan_of). */
enum { PAT_ANY, PAT_PREFIX, PAT_GLOB };

typedef struct {
  cache_t *c;
  engram_request_t *req;
  int64_t now;
  int pat;        /* PAT_* */
  size_t pat_len; /* PAT_PREFIX: the pattern is these bytes of literal text, then a final '*' */
} scan_t;

/* A scan of the table for req, with its pattern classified once. A pattern that is literal text and one final
 * '*' ("thread:*": a thread list's heads) matches exactly the keys
 * that start with that text, tested with a memcmp; any other goes through engram_pattern_match, which measures
 * the pattern and looks for glob characters on every call (with the match itself, 40 % of the instructions of a
 * thread list's page once the ordered search kept only the page's heads, callgrind). */
static scan_t scan_of(cache_t *c, engram_request_t *req) {
  scan_t s = {c, req, engram_now_ms(), PAT_ANY, 0};
  const char *p = req->query.pattern;
  size_t n = p != NULL ? strlen(p) : 0;
  if (n > 0 && p[n - 1] == '*' && strcspn(p, "*?[\\") == n - 1) {
    s.pat = PAT_PREFIX;
    s.pat_len = n - 1;
  } else if (n > 0) {
    s.pat = PAT_GLOB;
  }
  return s;
}

/* Does e belong to the request's namespace and match its pattern and filter (and is it alive)? */
static int accepts(const scan_t *s, const entry_t *e) {
  const engram_request_t *req = s->req;
  if (expired(e, s->now)) return 0;
  if (!(req->flags & ENGRAM_REQ_ALL_NAMESPACES) &&
      (e->ns_len != req->ns_len || memcmp(E_NS(e), req->ns, req->ns_len) != 0))
    return 0;
  if (s->pat == PAT_PREFIX ? e->key_len < s->pat_len || memcmp(E_KEY(e), req->query.pattern, s->pat_len) != 0
                           : s->pat == PAT_GLOB && !engram_pattern_match(req->query.pattern, E_KEY(e), e->key_len))
    return 0;
  if (!engram_request_in_ranges(req, e->created_at_ms, e->updated_at_ms, entry_expires(e))) return 0;
  if (req->query.filter) {
    cJSON *meta = e->meta_len ? engram__cache_image_read(E_META(e)) : NULL;
    int ok = engram_filter_match(req->query.filter, meta);
    cJSON_Delete(meta);
    if (!ok) return 0;
  }
  return 1;
}

static int text_accept(uint64_t doc, void *ud) { return accepts(ud, (const entry_t *)(uintptr_t)doc); }

static int cmp_entry_key(const entry_t *a, const entry_t *b) {
  size_t n = a->ns_len < b->ns_len ? a->ns_len : b->ns_len;
  int r = memcmp(E_NS(a), E_NS(b), n);
  if (r != 0) return r;
  if (a->ns_len != b->ns_len) return a->ns_len < b->ns_len ? -1 : 1;
  n = a->key_len < b->key_len ? a->key_len : b->key_len;
  r = memcmp(E_KEY(a), E_KEY(b), n);
  if (r != 0) return r;
  return a->key_len < b->key_len ? -1 : a->key_len > b->key_len;
}

static int text_tie(uint64_t a, uint64_t b, void *ud) {
  (void)ud;
  return cmp_entry_key((const entry_t *)(uintptr_t)a, (const entry_t *)(uintptr_t)b);
}

static int qsort_entries(const void *a, const void *b) { return cmp_entry_key(*(entry_t *const *)a, *(entry_t *const *)b); }

/* Collects matching entries (sorted by namespace, key); *out freed by the caller. */
static int collect(scan_t *s, int sorted_elsewhere, entry_t ***out, size_t *n_out) {
  cache_t *c = s->c;
  entry_t **v = NULL, *e;
  size_t n = 0, cap = 0, i;
  rehash_all(c);
  for (i = 0; i <= c->mask; i++) {
    for (e = to_entry(c, c->buckets[i]); e != NULL; e = to_entry(c, e->hnext)) {
      if (!accepts(s, e)) continue;
      if (n == cap) {
        entry_t **nv;
        cap = cap ? cap * 2 : 64;
        if ((nv = engram_realloc(v, cap * sizeof *v)) == NULL) {
          engram_free(v);
          return ENGRAM_ENOMEM;
        }
        v = nv;
      }
      v[n++] = e;
    }
  }
  /* in key order, unless the caller counts or sorts the matches itself (ENGRAM_REQ_ANY_ORDER: an ordered call) */
  if (n > 1 && !sorted_elsewhere) qsort(v, n, sizeof *v, qsort_entries);
  *out = v;
  *n_out = n;
  return 0;
}

static int build_text_index(cache_t *c) {
  size_t i;
  entry_t *e;
  if (c->text != NULL) return 0;
  if (engram_text_set_new(&c->text) != 0) return ENGRAM_ENOMEM;
  rehash_all(c);
  for (i = 0; i <= c->mask; i++)
    for (e = to_entry(c, c->buckets[i]); e != NULL; e = to_entry(c, e->hnext))
      if (index_entry(c, e) != 0) {
        engram_text_set_free(c->text);
        c->text = NULL;
        return ENGRAM_ENOMEM;
      }
  return 0;
}

static int tie_entries(const void *a, const void *b) { return cmp_entry_key(a, b); }

/* An ordered search that carries its order and limit (ENGRAM_REQ_ORDER_LIMIT, include/engram/source.h): every
 * match counted (the reply's count), those after the order's position offered to a bounded heap of query.limit
 * (cache_topk.c), and reply items made for the ones it kept only, in no order (the core sorts them). */
static int run_top_k(scan_t *s) {
  cache_t *c = s->c;
  engram_request_t *req = s->req;
  const engram_req_order_t *o = &req->order;
  engram__cache_topk_t t;
  entry_t *e;
  size_t i;
  uint64_t matches = 0;
  int rc = 0;
  memset(&t, 0, sizeof t);
  t.k = req->query.limit > 0 ? (size_t)req->query.limit : 0;
  t.desc = o->desc;
  t.tie = tie_entries;
  rehash_all(c);
  for (i = 0; rc == 0 && i <= c->mask; i++) {
    for (e = to_entry(c, c->buckets[i]); rc == 0 && e != NULL; e = to_entry(c, e->hnext)) {
      int64_t v;
      if (!accepts(s, e)) continue;
      matches++;
      v = o->by == ENGRAM_ORDER_CREATED_AT ? e->created_at_ms : o->by == ENGRAM_ORDER_UPDATED_AT ? e->updated_at_ms : 0;
      if (o->has_after && engram_order_cmp(o, v, E_NS(e), e->ns_len, E_KEY(e), e->key_len, o->after_ms, o->after_ns,
                                           o->after_ns_len, o->after_key, o->after_key_len) <= 0)
        continue;
      rc = engram__cache_topk_offer(&t, e, v);
    }
  }
  for (i = 0; rc == 0 && i < t.n; i++) rc = add_item(req, t.h[i].p, 1, 1, 1.0);
  engram__cache_topk_free(&t);
  engram_reply_set_count(req, matches);
  return rc;
}

/* Runs the query; fills either the reply items (search) or *count (count). */
static int run_query(cache_t *c, engram_request_t *req, int counting, uint64_t *count) {
  scan_t s = scan_of(c, req);
  const engram_query_t *q = &req->query;
  size_t i, k, start, n = 0;
  int rc = 0;
  if (q->vector != NULL) return ENGRAM_ENOTSUP;
  if (q->text != NULL && q->text[0] != '\0') {
    engram_text_hit_t *hits;
    if ((rc = build_text_index(c)) != 0) return rc;
    k = counting ? c->count : (size_t)q->offset + (size_t)q->limit;
    if (k == 0) k = 1;
    if ((hits = engram_malloc(k * sizeof *hits)) == NULL) return ENGRAM_ENOMEM;
    rc = engram_text_index_search(engram_text_set_get(c->text, req->ns, req->ns_len, 0), q->text, k, text_accept,
                                  text_tie, &s, hits, &n);
    if (rc == 0 && counting) {
      for (i = 0; i < n && hits[i].score >= q->min_score; i++) {
      }
      *count = i;
    }
    for (i = counting ? n : (size_t)q->offset; rc == 0 && i < n; i++) {
      if (hits[i].score < q->min_score) break;
      rc = add_item(req, (const entry_t *)(uintptr_t)hits[i].doc, 1, 1, hits[i].score);
    }
    engram_free(hits);
    return rc;
  } else if (!counting && (req->flags & ENGRAM_REQ_ORDER_LIMIT) && req->order.by != 0) {
    return run_top_k(&s);
  } else {
    entry_t **v;
    if ((rc = collect(&s, counting || (req->flags & ENGRAM_REQ_ANY_ORDER), &v, &n)) != 0) return rc;
    if (counting) {
      *count = n;
    } else {
      start = (size_t)q->offset;
      for (i = start; rc == 0 && i < n && i < start + (size_t)q->limit; i++) rc = add_item(req, v[i], 1, 1, 1.0);
    }
    engram_free(v);
    return rc;
  }
}

static void cache_search(engram_source_t *src, engram_request_t *req) {
  int rc = run_query(engram_source_state(src), req, 0, NULL);
  if (rc == ENGRAM_ENOTSUP) engram_request_fail(req, rc, "search by vector needs a vector source");
  else engram_request_complete(req, rc);
}

static void cache_count(engram_source_t *src, engram_request_t *req) {
  uint64_t n = 0;
  int rc = run_query(engram_source_state(src), req, 1, &n);
  engram_reply_set_count(req, n);
  if (rc == ENGRAM_ENOTSUP) engram_request_fail(req, rc, "count by vector needs a vector source");
  else engram_request_complete(req, rc);
}

/* Cursor: "<ns_len>:<ns><key>" of the last item of the previous page. */
static int after_cursor(const entry_t *e, const char *ns, size_t ns_len, const char *key, size_t key_len) {
  return engram_key_cmp(E_NS(e), e->ns_len, E_KEY(e), e->key_len, ns, ns_len, key, key_len) > 0;
}

/*
 * The first k entries, in key order, that the scan accepts and that come after the cursor (cns NULL: from the
 * start), sorted: one walk of the table keeping a bounded max-heap of k pointers, O(n log k) time and k
 * pointers of memory. Collecting and sorting every entry for each page (as search does) made a whole listing
 * in pages quadratic: exporting 200,000 items in 1,000-key pages ran at ~4,900 items/s.
 */
static int collect_page(scan_t *s, const char *cns, size_t cns_len, const char *ckey, size_t ckey_len, size_t k,
                        entry_t ***out, size_t *n_out) {
  cache_t *c = s->c;
  entry_t **h, *e;
  size_t n = 0, i;
  *out = NULL;
  *n_out = 0;
  if (k == 0) return 0;
  if ((h = engram_malloc(k * sizeof *h)) == NULL) return ENGRAM_ENOMEM;
  rehash_all(c);
  for (i = 0; i <= c->mask; i++) {
    for (e = to_entry(c, c->buckets[i]); e != NULL; e = to_entry(c, e->hnext)) {
      size_t j, child;
      if (!accepts(s, e) || (cns != NULL && !after_cursor(e, cns, cns_len, ckey, ckey_len))) continue;
      if (n < k) { /* sift up */
        for (j = n++; j > 0 && cmp_entry_key(h[(j - 1) / 2], e) < 0; j = (j - 1) / 2) h[j] = h[(j - 1) / 2];
        h[j] = e;
        continue;
      }
      if (cmp_entry_key(e, h[0]) >= 0) continue; /* not among the first k */
      for (j = 0; (child = 2 * j + 1) < n; j = child) { /* sift down from the root */
        if (child + 1 < n && cmp_entry_key(h[child + 1], h[child]) > 0) child++;
        if (cmp_entry_key(h[child], e) <= 0) break;
        h[j] = h[child];
      }
      h[j] = e;
    }
  }
  if (n > 1) qsort(h, n, sizeof *h, qsort_entries);
  *out = h;
  *n_out = n;
  return 0;
}

/* ---- The export's listing: pages of whole items in key order (ENGRAM_REQ_LIST_ITEMS) ---- */

/* Drops the export's listing: its live entries lose the flag, its dead ones are freed. */
static void snap_drop(cache_t *c) {
  size_t i;
  entry_t *z, *nx;
  for (i = 0; i < c->snap.n; i++)
    if (!c->snap.v[i]->dead) c->snap.v[i]->listed = 0;
  for (z = c->snap.zombies; z != NULL; z = nx) {
    nx = (entry_t *)z->hnext;
    entry_free(c, z);
  }
  engram_free(c->snap.v);
  memset(&c->snap, 0, sizeof c->snap);
}

/* n bytes from byte `from` of e's (namespace, key) as one string, ns \0 key, then 0s, into out: neither holds a
 * \0, so these strings compare bytewise in the listing's order (cmp_entry_key: a namespace that is a prefix of
 * another sorts first, then keys). */
static void key_bytes(const entry_t *e, size_t from, size_t n, unsigned char *out) {
  size_t ns_end = e->ns_len, key_end = ns_end + 1u + e->key_len, k;
  memset(out, 0, n);
  if (from < ns_end) {
    k = ns_end - from < n ? ns_end - from : n;
    memcpy(out, E_NS(e) + from, k);
  }
  if (from + n > ns_end + 1u && from < key_end) { /* the key's part of the window */
    size_t at = from > ns_end + 1u ? from - ns_end - 1u : 0, to = from + n < key_end ? from + n : key_end;
    memcpy(out + (ns_end + 1u + at - from), E_KEY(e) + at, to - (ns_end + 1u + at));
  }
}

typedef struct {
  uint64_t w; /* 8 bytes of the entry's ns \0 key string after the prefix every entry shares, big-endian */
  entry_t *e;
} snap_rec_t;

/* Sorts the entries in key order: the 8 bytes that follow the prefix all of them share, as one integer, by an LSD
 * radix sort (a pass for each byte that is not the same everywhere), then each run of equal integers (keys that
 * differ only further on) by cmp_entry_key. qsort with cmp_entry_key alone took ~1,600 instructions an entry for
 * 60,000 ("item:%08d" keys) and this ~340; it holds 32 bytes an entry while it runs. */
static int sort_entries(entry_t **v, size_t n) {
  snap_rec_t *mem, *a, *b, *t;
  size_t i, j, lcp, (*cnt)[256];
  unsigned char first[ENGRAM_NAMESPACE_MAX + ENGRAM_KEY_MAX + 2], cur[sizeof first], win[8];
  int pass;
  if (n < 2) return 0;
  if ((mem = engram_malloc(2 * n * sizeof *mem + 8 * sizeof *cnt)) == NULL) return ENGRAM_ENOMEM;
  a = mem;
  b = mem + n;
  cnt = (size_t(*)[256])(void *)(mem + 2 * n);
  memset(cnt, 0, 8 * sizeof *cnt);
  lcp = (size_t)v[0]->ns_len + 1u + v[0]->key_len;
  key_bytes(v[0], 0, lcp, first);
  for (i = 1; i < n && lcp > 0; i++) {
    key_bytes(v[i], 0, lcp, cur);
    for (j = 0; j < lcp && cur[j] == first[j]; j++) {}
    lcp = j;
  }
  for (i = 0; i < n; i++) {
    uint64_t w = 0;
    key_bytes(v[i], lcp, 8, win);
    for (j = 0; j < 8; j++) w = w << 8 | win[j];
    a[i].w = w;
    a[i].e = v[i];
    for (j = 0; j < 8; j++) cnt[j][(w >> (8 * j)) & 0xFF]++;
  }
  for (pass = 0; pass < 8; pass++) {
    size_t sum = 0, k, *c = cnt[pass];
    if (c[(a[0].w >> (8 * pass)) & 0xFF] == n) continue; /* this byte is the same everywhere */
    for (k = 0; k < 256; k++) {
      size_t x = c[k];
      c[k] = sum;
      sum += x;
    }
    for (i = 0; i < n; i++) b[c[(a[i].w >> (8 * pass)) & 0xFF]++] = a[i];
    t = a;
    a = b;
    b = t;
  }
  for (i = 0; i < n; i++) v[i] = a[i].e;
  for (i = 0; i < n; i = j) { /* runs of keys that differ only past those 8 bytes */
    for (j = i + 1; j < n && a[j].w == a[i].w; j++) {}
    if (j - i > 1) qsort(v + i, j - i, sizeof *v, qsort_entries);
  }
  engram_free(mem);
  return 0;
}

/* (Re)builds the export's listing from the whole table: O(n) once (sort_entries), then each page costs its own
 * entries. */
static int snap_build(cache_t *c) {
  size_t i, n = 0;
  entry_t *e, **v;
  snap_drop(c);
  rehash_all(c);
  if ((v = engram_malloc((c->count ? c->count : 1) * sizeof *v)) == NULL) return ENGRAM_ENOMEM;
  for (i = 0; i <= c->mask; i++)
    for (e = to_entry(c, c->buckets[i]); e != NULL; e = to_entry(c, e->hnext)) v[n++] = e;
  if (sort_entries(v, n) != 0) {
    engram_free(v);
    return ENGRAM_ENOMEM;
  }
  for (i = 0; i < n; i++) v[i]->listed = 1;
  c->snap.v = v;
  c->snap.n = n;
  return 0;
}

/* The first slot of the listing whose (namespace, key) is above (ns, key) — or, with or_equal, not below it. */
static size_t snap_seek(const cache_t *c, const char *ns, size_t ns_len, const char *key, size_t key_len, int or_equal) {
  size_t lo = 0, hi = c->snap.n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    const entry_t *e = c->snap.v[mid];
    int r = engram_key_cmp(E_NS(e), e->ns_len, E_KEY(e), e->key_len, ns, ns_len, key, key_len);
    if (r > 0 || (or_equal && r == 0)) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

/*
 * A page of whole items for the export, in (namespace, key) order from the listing above: the request's usual
 * cursor, limit, namespace (or all), pattern, ranges and expiry; each item as retrieve_many with metadata adds it.
 * An export that starts (no cursor) rebuilds a stale listing; a page past the end of the table drops it. Every item
 * present for the whole export is listed exactly once: a page starts strictly after the cursor's key, the
 * listing holds each key once, and an item present since the export began is in any listing the export reads —
 * the one it started with (built before it began, with no key inserted in between, or by it) or one rebuilt
 * later, which holds every item present then — either as its entry or as a dead entry of the same key whose live
 * successor the lookup finds.
 */
static void cache_list_items(cache_t *c, engram_request_t *req, const char *cns, size_t cns_len, const char *ckey,
                             size_t ckey_len) {
  scan_t s = scan_of(c, req);
  int all_ns = (req->flags & ENGRAM_REQ_ALL_NAMESPACES) != 0, rc = 0, more = 0;
  size_t i, limit = (size_t)req->query.limit, emitted = 0;
  const entry_t *last = NULL;
  if ((c->snap.v == NULL || (req->cursor == NULL && c->snap.stale)) && (rc = snap_build(c)) != 0) {
    engram_request_complete(req, rc);
    return;
  }
  if (req->cursor != NULL) i = snap_seek(c, cns, cns_len, ckey, ckey_len, 0);
  else if (!all_ns) i = snap_seek(c, req->ns, req->ns_len, "", 0, 1);
  else i = 0;
  for (; rc == 0 && i < c->snap.n; i++) {
    entry_t *e = c->snap.v[i];
    if (!all_ns && (e->ns_len != req->ns_len || memcmp(E_NS(e), req->ns, req->ns_len) != 0)) break; /* past it */
    if (e->dead) { /* deleted or replaced since the listing was built: the key's live entry, if any */
      uint64_t h = hash_of(E_NS(e), e->ns_len, E_KEY(e), e->key_len);
      link_t *pp = find_link(c, E_NS(e), e->ns_len, E_KEY(e), e->key_len, h);
      if (pp == NULL) continue;
      e = to_entry(c, *pp);
    }
    if (!accepts(&s, e)) continue;
    if (emitted == limit) {
      more = 1;
      break;
    }
    rc = add_item(req, e, 1, 1, 1.0);
    last = e;
    emitted++;
  }
  if (rc == 0 && more) rc = engram_reply_set_key_cursor(req, E_NS(last), last->ns_len, E_KEY(last), last->key_len);
  if (rc == 0 && !more) snap_drop(c); /* the end: give its memory back (a later export builds it anew) */
  engram_reply_set_count(req, emitted);
  engram_request_complete(req, rc);
}

static void cache_list_keys(engram_source_t *src, engram_request_t *req) {
  cache_t *c = engram_source_state(src);
  scan_t s = scan_of(c, req);
  entry_t **v;
  size_t n, i, limit = (size_t)req->query.limit, emitted = 0, k;
  const char *cns = NULL, *ckey = NULL;
  size_t cns_len = 0, ckey_len = 0;
  int rc;
  if (req->cursor != NULL && engram_cursor_parse(req->cursor, &cns, &cns_len, &ckey, &ckey_len) != 0) {
    engram_request_fail(req, ENGRAM_EINVAL, "cursor \"%.40s\" was not made by this source", req->cursor);
    return;
  }
  if (req->flags & ENGRAM_REQ_LIST_ITEMS) {
    cache_list_items(c, req, cns, cns_len, ckey, ckey_len);
    return;
  }
  /* One more than the page: whether a next page exists. Never more room than there are items. */
  k = limit + 1 < c->count + 1 ? limit + 1 : c->count + 1;
  if ((rc = collect_page(&s, req->cursor != NULL ? cns : NULL, cns_len, ckey, ckey_len, k, &v, &n)) != 0) {
    engram_request_complete(req, rc);
    return;
  }
  for (i = 0; rc == 0 && i < n && emitted < limit; i++, emitted++) rc = add_item(req, v[i], 0, 0, 1.0);
  if (rc == 0 && i < n && emitted > 0) {
    const entry_t *last = v[i - 1];
    rc = engram_reply_set_key_cursor(req, E_NS(last), last->ns_len, E_KEY(last), last->key_len);
  }
  engram_free(v);
  engram_reply_set_count(req, emitted);
  engram_request_complete(req, rc);
}

static void cache_clear(engram_source_t *src, engram_request_t *req) {
  cache_t *c = engram_source_state(src);
  size_t i, n = 0;
  rehash_all(c);
  for (i = 0; i <= c->mask; i++) {
    link_t *pp = &c->buckets[i];
    while (*pp != 0) {
      entry_t *e = to_entry(c, *pp);
      if ((req->flags & ENGRAM_REQ_ALL_NAMESPACES) || (e->ns_len == req->ns_len && memcmp(E_NS(e), req->ns, e->ns_len) == 0)) {
        remove_at(c, pp);
        n++;
      } else {
        pp = &e->hnext;
      }
    }
  }
  engram_reply_set_count(req, n);
  engram_request_complete(req, 0);
}

static void cache_info(engram_source_t *src, engram_request_t *req) {
  cache_t *c = engram_source_state(src);
  cJSON *o = cJSON_CreateObject();
  if (o == NULL || !cJSON_AddNumberToObject(o, "items", (double)c->count) ||
      !cJSON_AddNumberToObject(o, "bytes", (double)c->bytes) ||
      !cJSON_AddNumberToObject(o, "evictions", (double)c->evictions) ||
      !cJSON_AddNumberToObject(o, "expirations", (double)c->expirations) ||
      !cJSON_AddNumberToObject(o, "max_entries", (double)c->max_entries) ||
      !cJSON_AddNumberToObject(o, "max_bytes", (double)c->max_bytes) ||
      !cJSON_AddBoolToObject(o, "text_index", c->text != NULL)) {
    cJSON_Delete(o);
    engram_request_complete(req, ENGRAM_ENOMEM);
    return;
  }
  engram_reply_set_info(req, o);
  engram_request_complete(req, 0);
}

/* ---- Sweep, open, close ---- */

/* Buckets the sweep visits per slice: a slice of a large table costs well under a millisecond, so the calls
 * in the mailbox never wait behind a whole-table walk (tens of ms at a million entries). */
#define SWEEP_SLICE 4096u

/* Walks the table in slices, one per loop turn about a millisecond apart, starting every sweep_interval_ms.
 * While a resize is in progress each slice first moves SWEEP_SLICE buckets of the previous table (the work a
 * slice of calls would have done): on an idle cache nothing else moves them, and entries left in the previous
 * table would never be swept. The previous table has half the buckets, so the move ends by the middle of the
 * pass; a new bucket not filled yet is skipped (bucket_ready), and an entry moved behind the sweep's position is
 * freed by the next pass. Expired entries are invisible to every call anyway; the sweep only gives their memory
 * back. */
static void sweep(uv_timer_t *t) {
  cache_t *c = t->data;
  int64_t now = engram_now_ms();
  size_t i, end;
  if (c->n_expiring == 0) { /* nothing can expire: no need to walk the table */
    c->sweep_pos = 0;
    uv_timer_start(t, sweep, c->sweep_interval_ms, 0);
    return;
  }
  rehash_step(c, SWEEP_SLICE);
  if (c->sweep_pos > c->mask) c->sweep_pos = 0;
  end = c->sweep_pos + SWEEP_SLICE;
  if (end > c->mask + 1) end = c->mask + 1;
  for (i = c->sweep_pos; i < end; i++) {
    link_t *pp = &c->buckets[i];
    if (!bucket_ready(c, i)) continue; /* its entries are still in the old table (moved, then swept, later) */
    while (*pp != 0) {
      entry_t *e = to_entry(c, *pp);
      if (expired(e, now)) {
        announce(c, e, ENGRAM_EVENT_EXPIRED);
        remove_at(c, pp);
        c->expirations++;
      } else {
        pp = &e->hnext;
      }
    }
  }
  c->sweep_pos = end > c->mask ? 0 : end;
  uv_timer_start(t, sweep, c->sweep_pos != 0 ? 1 : c->sweep_interval_ms, 0);
}

static const char *const known_options[] = {"max_entries", "max_bytes", "sweep_interval_ms", "max_value_bytes",
                                            NULL};

static void cache_open(engram_source_t *src, const cJSON *options) {
  cache_t *c = engram_source_state(src);
  uint64_t max_entries, max_bytes, sweep_ms, max_value;
  char err[256];
  if (engram_opt_check_names(options, known_options, err, sizeof err) ||
      engram_opt_uint(options, "max_entries", 0, 0, UINT32_MAX, &max_entries, err, sizeof err) ||
      engram_opt_uint(options, "max_bytes", 0, 0, (uint64_t)1 << 50, &max_bytes, err, sizeof err) ||
      engram_opt_uint(options, "sweep_interval_ms", 1000, 0, 86400000, &sweep_ms, err, sizeof err) ||
      engram_opt_uint(options, "max_value_bytes", 16u << 20, 0, 1u << 30, &max_value, err, sizeof err)) {
    engram_source_opened(src, ENGRAM_EINVAL, "%s", err);
    return;
  }
  c->src = src;
  c->max_entries = (size_t)max_entries;
  c->max_bytes = (size_t)max_bytes;
  c->lru_on = c->max_entries != 0 || c->max_bytes != 0;
  c->lru_pre = c->lru_on ? sizeof(lru_t) : 0;
  c->max_value_bytes = (size_t)max_value;
  c->sweep_interval_ms = sweep_ms;
  c->mask = 63;
  c->tagged = sizeof(uintptr_t) == 8; /* 64-bit addresses leave room for tags (see link_t) */
  if ((c->buckets = engram_calloc(c->mask + 1, sizeof *c->buckets)) == NULL) {
    engram_source_opened(src, ENGRAM_ENOMEM, "out of memory");
    return;
  }
  if (sweep_ms > 0) {
    uv_timer_init(engram_source_loop(src), &c->sweep);
    c->sweep.data = c;
    uv_timer_start(&c->sweep, sweep, sweep_ms, 0);
    uv_unref((uv_handle_t *)&c->sweep);
    c->sweep_on = 1;
  }
  engram_source_opened(src, 0, NULL);
}

static void free_all(cache_t *c) {
  size_t i;
  entry_t *e, *nx;
  snap_drop(c); /* frees its dead entries; the live ones are freed with the table */
  if (c->buckets != NULL) rehash_all(c);
  for (i = 0; c->buckets && i <= c->mask; i++)
    for (e = to_entry(c, c->buckets[i]); e != NULL; e = nx) {
      nx = to_entry(c, e->hnext);
      entry_free(c, e);
    }
  engram_free(c->buckets);
  c->buckets = NULL;
  engram__cache_slab_release(&c->slabs);
  engram_text_set_free(c->text);
  c->text = NULL;
}

static void on_sweep_closed(uv_handle_t *h) {
  cache_t *c = h->data;
  engram_source_closed(c->src);
}

static void cache_close(engram_source_t *src) {
  cache_t *c = engram_source_state(src);
  free_all(c);
  if (c->sweep_on) {
    c->sweep_on = 0;
    uv_close((uv_handle_t *)&c->sweep, on_sweep_closed);
    return;
  }
  engram_source_closed(src);
}

const engram_source_vtable_t engram_source_cache = {
    .version = ENGRAM_SOURCE_VTABLE_VERSION,
    .name = "cache",
    .instance_size = sizeof(cache_t),
    .flags = ENGRAM_SOURCE_REPLICA | ENGRAM_SOURCE_RANGES | ENGRAM_SOURCE_UPDATE_WRITES | ENGRAM_SOURCE_ANSWERS_AT_ONCE |
             ENGRAM_SOURCE_LIST_ITEMS | ENGRAM_SOURCE_ORDER_LIMIT,
    .open = cache_open,
    .close = cache_close,
    .store = cache_store,
    .retrieve = cache_retrieve,
    .search = cache_search,
    .del = cache_delete,
    .list_keys = cache_list_keys,
    .store_many = cache_store_many,
    .retrieve_many = cache_retrieve_many,
    .delete_many = cache_delete_many,
    .count = cache_count,
    .exists = cache_exists,
    .update = cache_update,
    .clear = cache_clear,
    .info = cache_info,
    .read_now = cache_read_now,
    .write_now = cache_write_now,
    .prefetch = cache_prefetch,
};
