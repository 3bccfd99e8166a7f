/*
 * thread_head.c — the thread head's parsed form and its arithmetic (see thread_head.h). The head is one JSON
 * item per thread:
 *   {"thread": id, "gen": g, "first": 71, "last": 120, "count": 50, "max_messages": 50, "ttl_ms": 0,
 *    "system": [..], "holes": [..], "metadata": {..}, "created_at_ms": t0, "updated_at_ms": t1,
 *    "refreshed_at_ms": t2}
 */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "engram/source.h"
#include "shared/error.h"
#include "shared/json_text.h"
#include "thread/thread_block.h"
#include "thread/thread_head.h"

static uint64_t num_u(const cJSON *v) { return cJSON_IsNumber(v) && v->valuedouble > 0 ? (uint64_t)v->valuedouble : 0; }

static int64_t num_i(const cJSON *v) { return cJSON_IsNumber(v) && v->valuedouble > 0 ? (int64_t)v->valuedouble : 0; }

static int parse_list(const cJSON *a, uint64_t **out, size_t *n) {
  const cJSON *x;
  size_t i = 0, cnt = (size_t)cJSON_GetArraySize(a);
  *out = NULL;
  *n = 0;
  if (!cJSON_IsArray(a) || cnt == 0) return 0;
  if ((*out = engram_malloc(cnt * sizeof **out)) == NULL) return -1;
  cJSON_ArrayForEach(x, a) if (cJSON_IsNumber(x) && x->valuedouble >= 1) (*out)[i++] = (uint64_t)x->valuedouble;
  *n = i;
  return 0;
}

/* One pass over the head's members (a lookup per field walked the member list each time: a tenth of an
 * append on the cache). Unknown members are ignored; a member named twice counts by its first occurrence, as
 * cJSON's lookup did. */
int th_head_parse(const cJSON *v, th_head_t *h) {
  const cJSON *id = NULL, *gen = NULL, *first = NULL, *last = NULL, *maxm = NULL, *ttl = NULL, *created = NULL,
              *updated = NULL, *refreshed = NULL, *sys = NULL, *holes = NULL, *meta = NULL, *k;
  memset(h, 0, sizeof *h);
  if (!cJSON_IsObject(v)) return ENGRAM_EINVAL;
  for (k = v->child; k != NULL; k = k->next) {
    const char *n = k->string;
    const cJSON **slot = NULL;
    if (n == NULL) continue;
    switch (n[0]) {
      case 't': slot = strcmp(n, "thread") == 0 ? &id : strcmp(n, "ttl_ms") == 0 ? &ttl : NULL; break;
      case 'g': slot = strcmp(n, "gen") == 0 ? &gen : NULL; break;
      case 'f': slot = strcmp(n, "first") == 0 ? &first : NULL; break;
      case 'l': slot = strcmp(n, "last") == 0 ? &last : NULL; break;
      case 'm': slot = strcmp(n, "max_messages") == 0 ? &maxm : strcmp(n, "metadata") == 0 ? &meta : NULL; break;
      case 'c': slot = strcmp(n, "created_at_ms") == 0 ? &created : NULL; break;
      case 'u': slot = strcmp(n, "updated_at_ms") == 0 ? &updated : NULL; break;
      case 'r': slot = strcmp(n, "refreshed_at_ms") == 0 ? &refreshed : NULL; break;
      case 's': slot = strcmp(n, "system") == 0 ? &sys : NULL; break;
      case 'h': slot = strcmp(n, "holes") == 0 ? &holes : NULL; break;
      default: break;
    }
    if (slot != NULL && *slot == NULL) *slot = k;
  }
  if (!cJSON_IsString(id) || !cJSON_IsString(gen) || strlen(id->valuestring) > ENGRAM_THREAD_ID_MAX ||
      strlen(gen->valuestring) > TH_GEN_MAX || !cJSON_IsNumber(first))
    return ENGRAM_EINVAL;
  strcpy(h->id, id->valuestring);
  strcpy(h->gen, gen->valuestring);
  h->first = num_u(first);
  h->last = num_u(last);
  h->max_messages = num_i(maxm);
  h->ttl_ms = num_i(ttl);
  h->created_at_ms = num_i(created);
  h->updated_at_ms = num_i(updated);
  h->refreshed_at_ms = num_i(refreshed);
  h->metadata = meta;
  if (h->first == 0) h->first = 1;
  if (parse_list(sys, &h->sys, &h->nsys) != 0 || parse_list(holes, &h->holes, &h->nholes) != 0) {
    th_head_free(h);
    return ENGRAM_ENOMEM;
  }
  return 0;
}

void th_head_free(th_head_t *h) {
  engram_free(h->sys);
  engram_free(h->holes);
  h->sys = h->holes = NULL;
  h->nsys = h->nholes = 0;
}

/* A per-process salt for generations: random (getrandom), so that processes with the same pid — one per container,
 * each pid 1 — do not make the same sequence of generations (the message cache of a third process would take one
 * thread's messages for the other's: thread_msgcache.h); the pid when the kernel gives no random bytes. */
static unsigned gen_salt(void) {
  static atomic_uint salt; /* 0 = not drawn yet */
  unsigned s = atomic_load_explicit(&salt, memory_order_relaxed);
  if (s == 0) {
    if (getrandom(&s, sizeof s, GRND_NONBLOCK) != (ssize_t)sizeof s) s = (unsigned)getpid() * 40503u;
    unsigned none = 0;
    s |= 1u;
    /* two threads drawing at once: the first salt stored is the one every generation uses */
    if (!atomic_compare_exchange_strong_explicit(&salt, &none, s, memory_order_relaxed, memory_order_relaxed)) s = none;
  }
  return s;
}

void th_head_init(th_head_t *h, const char *id, int64_t now) {
  static atomic_uint counter;
  unsigned c = atomic_fetch_add(&counter, 1u) * 2654435761u ^ gen_salt();
  memset(h, 0, sizeof *h);
  snprintf(h->id, sizeof h->id, "%s", id);
  /* a new generation per incarnation of the thread: messages of a deleted or expired one never collide */
  snprintf(h->gen, sizeof h->gen, "%llx%04x", (unsigned long long)now, c & 0xffffu);
  h->first = 1;
  h->last = 0;
  h->created_at_ms = h->updated_at_ms = h->refreshed_at_ms = now;
}

/* Members under constant names (cJSON's CS form: the name is not copied, nor freed with the tree): every name
 * here is a string literal, and a head is built on every change of a thread, so this saves an allocation per
 * member. Copies (cJSON_Duplicate) keep pointing at the literal. */
static int add_owned(cJSON *o, const char *name, cJSON *v) {
  if (v == NULL) return -1;
  if (!cJSON_AddItemToObjectCS(o, name, v)) {
    cJSON_Delete(v);
    return -1;
  }
  return 0;
}

static int add_num(cJSON *o, const char *name, double v) { return add_owned(o, name, cJSON_CreateNumber(v)); }

static int add_str(cJSON *o, const char *name, const char *v) { return add_owned(o, name, cJSON_CreateString(v)); }

uint64_t th_head_count(const th_head_t *h) { return h->last >= h->first ? h->last - h->first + 1 - h->nholes : 0; }

/* In one block (thread_block.h): the head is written on every change of a thread, and built node by node it was
 * 16 mallocs and, once the source let go of it, 16 frees. */
cJSON *th_head_value(const th_head_t *h) {
  size_t nodes = 14 + h->nsys + h->nholes, bytes = strlen(h->id) + strlen(h->gen) + 2, i;
  th_block_t b;
  cJSON *o, *a;
  if (h->metadata != NULL) th_block_measure(h->metadata, &nodes, &bytes);
  else nodes++;
  if ((o = th_block_new(&b, nodes, bytes, cJSON_Object)) == NULL) return NULL;
  th_block_str(&b, o, "thread", h->id);
  th_block_str(&b, o, "gen", h->gen);
  th_block_num(&b, o, "first", (double)h->first);
  th_block_num(&b, o, "last", (double)h->last);
  th_block_num(&b, o, "count", (double)th_head_count(h));
  th_block_num(&b, o, "max_messages", (double)h->max_messages);
  th_block_num(&b, o, "ttl_ms", (double)h->ttl_ms);
  a = th_block_add(&b, o, "system", cJSON_Array);
  for (i = 0; i < h->nsys; i++) th_block_num(&b, a, NULL, (double)h->sys[i]);
  a = th_block_add(&b, o, "holes", cJSON_Array);
  for (i = 0; i < h->nholes; i++) th_block_num(&b, a, NULL, (double)h->holes[i]);
  if (h->metadata != NULL) th_block_copy(&b, o, "metadata", h->metadata);
  else th_block_add(&b, o, "metadata", cJSON_Object);
  th_block_num(&b, o, "created_at_ms", (double)h->created_at_ms);
  th_block_num(&b, o, "updated_at_ms", (double)h->updated_at_ms);
  th_block_num(&b, o, "refreshed_at_ms", (double)h->refreshed_at_ms);
  return o;
}

cJSON *th_head_info(const th_head_t *h, int64_t expires_at_ms) {
  cJSON *o = cJSON_CreateObject();
  if (o == NULL) return NULL;
  if (add_str(o, "thread", h->id) || add_num(o, "first_seq", (double)h->first) ||
      add_num(o, "last_seq", (double)h->last) || add_num(o, "count", (double)th_head_count(h)) ||
      add_num(o, "max_messages", (double)h->max_messages) || add_num(o, "ttl_ms", (double)h->ttl_ms) ||
      add_owned(o, "metadata", h->metadata ? cJSON_Duplicate(h->metadata, 1) : cJSON_CreateObject()) ||
      add_num(o, "created_at_ms", (double)h->created_at_ms) || add_num(o, "updated_at_ms", (double)h->updated_at_ms) ||
      add_num(o, "expires_at_ms", (double)expires_at_ms)) {
    cJSON_Delete(o);
    return NULL;
  }
  return o;
}

static int in_list(const uint64_t *a, size_t n, uint64_t x) {
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (a[mid] == x) return 1;
    if (a[mid] < x) lo = mid + 1;
    else hi = mid;
  }
  return 0;
}

int th_head_visible(const th_head_t *h, uint64_t seq) {
  return seq >= h->first && seq <= h->last && !in_list(h->holes, h->nholes, seq);
}

int th_head_is_system(const th_head_t *h, uint64_t seq) { return in_list(h->sys, h->nsys, seq); }

uint64_t th_head_live_below(const th_head_t *h, uint64_t x) {
  uint64_t n;
  size_t i;
  if (x > h->last + 1) x = h->last + 1;
  if (x <= h->first) return 0;
  n = x - h->first;
  for (i = 0; i < h->nholes && h->holes[i] < x; i++) n--;
  return n;
}

static void drop_below(uint64_t *a, size_t *n, uint64_t x) {
  size_t i = 0;
  while (i < *n && a[i] < x) i++;
  if (i) memmove(a, a + i, (*n - i) * sizeof *a);
  *n -= i;
}

uint64_t th_head_trim(th_head_t *h) {
  uint64_t old = h->first, live = th_head_count(h), rem, pos;
  size_t i;
  if (h->max_messages <= 0 || live <= (uint64_t)h->max_messages) return old;
  rem = live - (uint64_t)h->max_messages; /* visible messages to drop, oldest first */
  pos = h->first;
  for (i = 0; i < h->nholes && rem > 0; i++) {
    uint64_t gap = h->holes[i] - pos; /* live numbers in [pos, hole) */
    if (gap >= rem) break;
    rem -= gap;
    pos = h->holes[i] + 1;
  }
  pos += rem;
  h->first = pos;
  drop_below(h->holes, &h->nholes, pos);
  drop_below(h->sys, &h->nsys, pos);
  /* leading holes: move first past them */
  while (h->nholes > 0 && h->holes[0] == h->first) {
    h->first++;
    drop_below(h->holes, &h->nholes, h->first);
  }
  return old;
}

static int insert_sorted(uint64_t **a, size_t *n, uint64_t x) {
  size_t i = *n;
  uint64_t *p = engram_realloc(*a, (*n + 1) * sizeof **a);
  if (p == NULL) return -1;
  *a = p;
  while (i > 0 && p[i - 1] > x) {
    p[i] = p[i - 1];
    i--;
  }
  p[i] = x;
  (*n)++;
  return 0;
}

int th_head_add_system(th_head_t *h, uint64_t seq) { return insert_sorted(&h->sys, &h->nsys, seq); }

int th_head_delete(th_head_t *h, uint64_t seq) {
  size_t i;
  if (insert_sorted(&h->holes, &h->nholes, seq) != 0) return -1;
  for (i = 0; i < h->nsys; i++)
    if (h->sys[i] == seq) {
      memmove(h->sys + i, h->sys + i + 1, (h->nsys - i - 1) * sizeof *h->sys);
      h->nsys--;
      break;
    }
  while (h->nholes > 0 && h->holes[0] == h->first) {
    h->first++;
    drop_below(h->holes, &h->nholes, h->first);
  }
  return 0;
}

void th_head_key(char *buf, size_t size, const char *id) {
  size_t p = sizeof TH_HEAD_PREFIX - 1, n = strlen(id);
  if (size == 0) return;
  if (p >= size) p = size - 1;
  if (n > size - 1 - p) n = size - 1 - p;
  memcpy(buf, TH_HEAD_PREFIX, p);
  memcpy(buf + p, id, n);
  buf[p + n] = '\0';
}

/* By hand: a window names 50 or more keys, and snprintf was a tenth of its time. */
size_t th_msg_key_prefix(char *buf, size_t size, const char *id, const char *gen) {
  size_t il = strlen(id), gl = strlen(gen), p = sizeof TH_MSG_PREFIX - 1;
  if (size < p + il + gl + 2 + 16 + 1) return 0; /* never, for checked ids */
  memcpy(buf, TH_MSG_PREFIX, p);
  memcpy(buf + p, id, il);
  p += il;
  buf[p++] = ':';
  memcpy(buf + p, gen, gl);
  p += gl;
  buf[p++] = ':';
  return p;
}

void th_msg_key_seq(char *at, uint64_t seq) {
  int d;
  for (d = 15; d >= 0; d--, seq /= 10) at[d] = (char)('0' + seq % 10);
  at[16] = '\0';
}

void th_msg_key(char *buf, size_t size, const char *id, const char *gen, uint64_t seq) {
  size_t p = seq > TH_SEQ_DIGITS_MAX ? 0 : th_msg_key_prefix(buf, size, id, gen);
  if (p == 0) { /* the slow way */
    snprintf(buf, size, TH_MSG_PREFIX "%s:%s:%016llu", id, gen, (unsigned long long)seq);
    return;
  }
  th_msg_key_seq(buf + p, seq);
}

static int id_char(unsigned char ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' || ch == '.' ||
         ch == '@' || ch == '+' || ch == '=' || ch == '-';
}

int th_check_id(const char *id) {
  char q[80];
  size_t i, n;
  if (id == NULL) return engram__error(ENGRAM_EINVAL, "thread: NULL");
  n = strlen(id);
  if (n == 0) return engram__error(ENGRAM_EINVAL, "thread: empty");
  if (n > ENGRAM_THREAD_ID_MAX)
    return engram__error(ENGRAM_EINVAL, "thread: %zu bytes, at most %d", n, ENGRAM_THREAD_ID_MAX);
  for (i = 0; i < n; i++)
    if (!id_char((unsigned char)id[i]))
      return engram__error(ENGRAM_EINVAL, "thread: \"%s\": byte %zu is not one of [A-Za-z0-9_.@+=-]",
                           engram__quote(q, sizeof q, id), i);
  return 0;
}
