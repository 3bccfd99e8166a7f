/*
 * postgres_group.c — plain stores that leave together (postgres_group.h): a run of groupable upserts at the front
 * of a connection's queue becomes one PGS_STORE_MANY statement whose parameter is a jsonb array of
 * [namespace, key, now, expires or 0, value(, metadata)], and its result rows are handed back to each store.
 * Likewise a run of conversation appends of different heads (PGS_APPEND_IF_KEEP, not chained: postgres_update.c
 * marks them) becomes one PGS_APPEND_MANY statement, and each append reads the rows of its place in it.
 *
 * Only plain stores group (op->merge, set by postgres_kv.c for PGS_STORE): their statement always returns one row
 * and never depends on another call's outcome. A run stops at a key already in it (ON CONFLICT DO UPDATE cannot
 * touch one row twice in a statement; the second write of a key leaves in the next group, after the first), at
 * PG_GROUP_MAX stores and at PG_GROUP_BYTES of parameter, and at any op that is not a plain store, so nothing
 * moves past another op: the order of a connection's statements, and so of every key's calls, is kept. The
 * group is one statement of the segment's transaction, as its stores were; every row gets the same chg (the
 * transaction), so the text index's sync (postgres_text.c) reads them as it read them one by one.
 *
 * The values are the texts the stores already printed (engram_json_print_text), so the server parses the same
 * JSON; namespace and key become JSON strings (engram__pg_sb_json_str) that jsonb gives back byte for byte.
 */
#include <string.h>

#include "postgres_group.h"
#include "postgres_sql.h"

#define SLOTS 128 /* > 2 * PG_GROUP_MAX: the open-addressing set of the run's (namespace, key) */

static uint32_t key_hash(const char *ns, const char *key) {
  uint32_t h = 2166136261u;
  const char *p;
  for (p = ns; *p; p++) h = (h ^ (unsigned char)*p) * 16777619u;
  h = (h ^ 0xffu) * 16777619u; /* between the two names */
  for (p = key; *p; p++) h = (h ^ (unsigned char)*p) * 16777619u;
  return h;
}

static const char *ns_of(const pg_op_t *op) { return op->values[0] != NULL ? op->values[0] : ""; }

/* Adds op's (namespace, key) to the set; 0 when it was already there. */
static int set_add(const pg_op_t **set, const pg_op_t *op) {
  const char *ns = ns_of(op), *key = op->values[1];
  uint32_t i = key_hash(ns, key) % SLOTS;
  while (set[i] != NULL) {
    if (strcmp(set[i]->values[1], key) == 0 && strcmp(ns_of(set[i]), ns) == 0) return 0;
    i = (i + 1) % SLOTS;
  }
  set[i] = op;
  return 1;
}

/* The bytes op adds to the group's parameter, about. */
static size_t op_bytes(const pg_op_t *op) {
  size_t n = 64 + strlen(ns_of(op)) + strlen(op->values[1]) + strlen(op->values[2]);
  return n + (op->values[3] != NULL ? strlen(op->values[3]) : 0);
}

static int groupable(const pg_op_t *op) {
  return op != NULL && op->merge && op->stmt == PGS_STORE && op->nparams == 6 && op_bytes(op) <= PG_GROUP_BYTES;
}

/* The row of res whose (namespace, key) are op's: its own place first (the usual case), else a search. */
static int row_of(const pg_op_t *op, const PGresult *res, int place) {
  int n = PQntuples(res), r;
  for (r = place; r < n + place; r++) {
    int i = r % n;
    if (strcmp(PQgetvalue(res, i, 3), op->values[1]) == 0 && strcmp(PQgetvalue(res, i, 2), ns_of(op)) == 0) return i;
  }
  return -1;
}

static void group_done(pg_op_t *group, int status, PGresult *res, const char *msg) {
  pg_op_t *m = group->members, *next;
  int place = 0;
  group->members = NULL;
  engram__pg_op_free(group);
  for (; m != NULL; m = next, place++) {
    next = m->next;
    m->next = NULL;
    if (status == 0) m->row = PQntuples(res) > 0 ? row_of(m, res, place) : -1;
    m->done(m, status, status == 0 ? res : NULL, msg);
  }
}

/* Starts a group's element for op: "[namespace, key, now, expires or 0" (both statements' elements start so). */
static void elem_start(engram__pg_sb_t *b, const pg_op_t *op) {
  engram__pg_sb_add(b, "[", 1);
  engram__pg_sb_json_str(b, ns_of(op));
  engram__pg_sb_add(b, ",", 1);
  engram__pg_sb_json_str(b, op->values[1]);
  engram__pg_sb_add(b, ",", 1);
  engram__pg_sb_add(b, op->values[4], strlen(op->values[4]));
  engram__pg_sb_add(b, ",", 1);
  if (op->values[5] != NULL) engram__pg_sb_add(b, op->values[5], strlen(op->values[5]));
  else engram__pg_sb_add(b, "0", 1);
}

/* Ends the group's parameter b and takes the run first..last (n ops) off the queue *head into group: the group,
 * or NULL (nothing taken, the group freed) when b ran out of memory. */
static pg_op_t *group_finish(pg_op_t *group, engram__pg_sb_t *b, pg_op_t *first, pg_op_t *last, size_t n,
                             pg_op_t **head, size_t *taken) {
  engram__pg_sb_add(b, "]", 1);
  if (b->oom) {
    engram_free(b->s);
    engram__pg_op_free(group);
    return NULL;
  }
  group->heap[0] = b->s;
  group->values[0] = b->s;
  group->nparams = 1;
  group->members = first;
  *head = last->next;
  last->next = NULL;
  *taken = n;
  return group;
}

/* ---- Appends of different heads (PGS_APPEND_MANY) ---- */

#define AKEYS 512            /* heads and stores of one append group at most */
#define ASLOTS (2 * AKEYS)   /* the open-addressing set of their (namespace, key) */

typedef struct {
  const char *ns, *key;
  size_t owner; /* the member (1-based) that writes it */
  int head;     /* it is that member's head */
} akey_t;

/* The slot of (ns, key) in the set: its entry, or the empty slot where it goes. */
static akey_t *akey_slot(akey_t *set, const char *ns, const char *key) {
  uint32_t i = key_hash(ns, key) % ASLOTS;
  while (set[i].key != NULL && (strcmp(set[i].key, key) != 0 || strcmp(set[i].ns, ns) != 0)) i = (i + 1) % ASLOTS;
  return &set[i];
}

/* An append that may leave in a group: one head conditional on its version (and maybe its value: $10), written
 * once (not chained: $11 NULL), no deletes, at most PG_GROUP_APPEND_STORES messages. Larger appends leave alone:
 * grouped, ten messages per append ran at 34-40 k messages/s against 44-59 k before (bench_thread, alternating
 * pairs), alone 46-62 k against 59-61 k — one long statement the client waits for, where statements alone kept
 * the server busy while the client handled the ones before (docs/sources-postgres.md, Grouped appends). */
static int append_groupable(const pg_op_t *op) {
  return op != NULL && op->merge && op->stmt == PGS_APPEND_IF_KEEP && op->req != NULL && op->req->writes != NULL &&
         op->req->writes->n_store <= PG_GROUP_APPEND_STORES && op->nparams == 11 && op->values[10] == NULL;
}

static size_t append_bytes(const pg_op_t *op) {
  return 96 + strlen(ns_of(op)) + strlen(op->values[1]) + strlen(op->values[2]) +
         (op->values[3] != NULL ? strlen(op->values[3]) : 0) + strlen(op->values[7]) +
         (op->values[9] != NULL ? strlen(op->values[9]) : 0);
}

/* Adds op's head and stores to the set as member owner: 0 when one of them is written by a member before it (or
 * its head is one of its own stores), and then the run ends before op. A key stored twice by one append is its
 * own: the last one wins, as in PGS_APPEND_IF. */
static int append_keys(akey_t *set, size_t *nkeys, const pg_op_t *op, size_t owner) {
  const engram_update_writes_t *w = op->req->writes;
  const char *ns = ns_of(op);
  akey_t *e;
  size_t i;
  if (*nkeys + 1 + w->n_store > AKEYS || (e = akey_slot(set, ns, op->values[1]))->key != NULL) return 0;
  e->ns = ns;
  e->key = op->values[1];
  e->owner = owner;
  e->head = 1;
  for (i = 0; i < w->n_store; i++) {
    e = akey_slot(set, ns, w->store[i].key);
    if (e->key != NULL) {
      if (e->owner != owner || e->head) return 0;
      continue;
    }
    e->ns = ns;
    e->key = w->store[i].key;
    e->owner = owner;
    e->head = 0;
  }
  *nkeys += 1 + w->n_store;
  return 1;
}

/* Hands each append of a group the result with the places of its own rows (op->own: the rows whose fifth column is
 * its 1-based place in the group), sorted out once for all of them: a scan of every row by every append cost
 * ~23,000 instructions a message in the client (callgrind). */
static void append_group_done(pg_op_t *group, int status, PGresult *res, const char *msg) {
  pg_op_t *m = group->members, *next;
  size_t n = 0, place;
  int rows = status == 0 ? PQntuples(res) : 0, r, *start = NULL, *order = NULL;
  group->members = NULL;
  engram__pg_op_free(group);
  for (next = m; next != NULL; next = next->next) n++;
  if (status == 0 && ((start = engram_calloc(n + 2, sizeof *start)) == NULL ||
                      (order = engram_malloc(((size_t)rows + 1) * sizeof *order)) == NULL)) {
    status = ENGRAM_ENOMEM;
    msg = "out of memory";
  }
  if (status == 0) { /* a counting sort of the rows by place: start[p]..start[p + 1] are place p's */
    for (r = 0; r < rows; r++) {
      int64_t p = engram__pg_int(res, r, 4);
      if (p >= 1 && (size_t)p <= n) start[p + 1]++;
    }
    for (place = 1; place <= n; place++) start[place + 1] += start[place];
    for (r = 0; r < rows; r++) {
      int64_t p = engram__pg_int(res, r, 4);
      if (p >= 1 && (size_t)p <= n) order[start[p]++] = r;
    }
    for (place = n; place >= 1; place--) start[place] = start[place - 1]; /* back to each place's first */
    start[1] = 0;
  }
  for (place = 1; m != NULL; m = next, place++) {
    next = m->next;
    m->next = NULL;
    m->row = (int)place;
    if (status == 0) {
      m->own = order + start[place];
      m->n_own = start[place + 1] - start[place];
    }
    m->done(m, status, status == 0 ? res : NULL, msg);
  }
  engram_free(start);
  engram_free(order);
}

/* engram__pg_group_take for a run of appends (the front op is one). */
static pg_op_t *append_take(pg_op_t **head, size_t *taken) {
  akey_t *set;
  pg_op_t *first = *head, *last = first, *op, *group;
  engram__pg_sb_t b = {NULL, 0, 0, 0};
  size_t n = 1, nkeys = 0, bytes;
  if (!append_groupable(first->next) || (set = engram_calloc(ASLOTS, sizeof *set)) == NULL) return NULL;
  if (!append_keys(set, &nkeys, first, 1)) {
    engram_free(set);
    return NULL;
  }
  bytes = append_bytes(first);
  for (op = first->next; n < PG_GROUP_MAX && append_groupable(op); op = op->next) {
    if (bytes + append_bytes(op) > PG_GROUP_BYTES || !append_keys(set, &nkeys, op, n + 1)) break;
    bytes += append_bytes(op);
    last = op;
    n++;
  }
  engram_free(set);
  if (n < 2 || (group = engram__pg_op_new(NULL, PGS_APPEND_MANY, append_group_done)) == NULL) return NULL;
  /* [namespace, key, now, expires or 0, expected version, value, metadata or null, stores(, expected value)]
   * each: the texts the appends printed (postgres_append.c, postgres_update.c) */
  engram__pg_sb_add(&b, "[", 1);
  for (op = first;; op = op->next) {
    if (op != first) engram__pg_sb_add(&b, ",", 1);
    elem_start(&b, op);
    engram__pg_sb_add(&b, ",", 1);
    engram__pg_sb_add(&b, op->values[6], strlen(op->values[6]));
    engram__pg_sb_add(&b, ",", 1);
    engram__pg_sb_add(&b, op->values[2], strlen(op->values[2]));
    engram__pg_sb_add(&b, ",", 1);
    if (op->values[3] != NULL) engram__pg_sb_add(&b, op->values[3], strlen(op->values[3]));
    else engram__pg_sb_add(&b, "null", 4);
    engram__pg_sb_add(&b, ",", 1);
    engram__pg_sb_add(&b, op->values[7], strlen(op->values[7]));
    if (op->values[9] != NULL) { /* the value expected, when the update started from a row it did not read */
      engram__pg_sb_add(&b, ",", 1);
      engram__pg_sb_add(&b, op->values[9], strlen(op->values[9]));
    }
    engram__pg_sb_add(&b, "]", 1);
    if (op == last) break;
  }
  return group_finish(group, &b, first, last, n, head, taken);
}

pg_op_t *engram__pg_group_take(pg_op_t **head, size_t *taken) {
  const pg_op_t *set[SLOTS];
  pg_op_t *first = *head, *last = first, *op, *group;
  engram__pg_sb_t b = {NULL, 0, 0, 0};
  size_t n = 1, bytes;
  *taken = 0;
  if (append_groupable(first)) return append_take(head, taken);
  if (!groupable(first) || !groupable(first->next)) return NULL;
  memset(set, 0, sizeof set);
  set_add(set, first);
  bytes = op_bytes(first);
  for (op = first->next; n < PG_GROUP_MAX && groupable(op); op = op->next) {
    if (bytes + op_bytes(op) > PG_GROUP_BYTES || !set_add(set, op)) break;
    bytes += op_bytes(op);
    last = op;
    n++;
  }
  if (n < 2 || (group = engram__pg_op_new(NULL, PGS_STORE_MANY, group_done)) == NULL) return NULL;
  engram__pg_sb_add(&b, "[", 1);
  for (op = first;; op = op->next) {
    if (op != first) engram__pg_sb_add(&b, ",", 1);
    elem_start(&b, op);
    engram__pg_sb_add(&b, ",", 1);
    engram__pg_sb_add(&b, op->values[2], strlen(op->values[2]));
    if (op->values[3] != NULL) {
      engram__pg_sb_add(&b, ",", 1);
      engram__pg_sb_add(&b, op->values[3], strlen(op->values[3]));
    }
    engram__pg_sb_add(&b, "]", 1);
    if (op == last) break;
  }
  return group_finish(group, &b, first, last, n, head, taken);
}

pg_op_t *engram__pg_group_split(pg_op_t *group, pg_op_t **tail, size_t *n) {
  pg_op_t *m = group->members, *op;
  *n = 0;
  *tail = NULL;
  group->members = NULL;
  engram__pg_op_free(group);
  for (op = m; op != NULL; op = op->next) {
    op->merge = 0;
    op->got = 0;
    *tail = op;
    (*n)++;
  }
  return m;
}
