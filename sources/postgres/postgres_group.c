/*
 * postgres_group.c — plain stores that leave together (postgres_group.h): a run of groupable upserts at the front
 * of a connection's queue becomes one PGS_STORE_MANY statement whose parameter is a jsonb array of
 * [namespace, key, now, expires or 0, value(, metadata)], and its result rows are handed back to each store.
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

pg_op_t *engram__pg_group_take(pg_op_t **head, size_t *taken) {
  const pg_op_t *set[SLOTS];
  pg_op_t *first = *head, *last = first, *op, *group;
  engram__pg_sb_t b = {NULL, 0, 0, 0};
  size_t n = 1, bytes;
  *taken = 0;
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
    engram__pg_sb_add(&b, "[", 1);
    engram__pg_sb_json_str(&b, ns_of(op));
    engram__pg_sb_add(&b, ",", 1);
    engram__pg_sb_json_str(&b, op->values[1]);
    engram__pg_sb_add(&b, ",", 1);
    engram__pg_sb_add(&b, op->values[4], strlen(op->values[4]));
    engram__pg_sb_add(&b, ",", 1);
    if (op->values[5] != NULL) engram__pg_sb_add(&b, op->values[5], strlen(op->values[5]));
    else engram__pg_sb_add(&b, "0", 1);
    engram__pg_sb_add(&b, ",", 1);
    engram__pg_sb_add(&b, op->values[2], strlen(op->values[2]));
    if (op->values[3] != NULL) {
      engram__pg_sb_add(&b, ",", 1);
      engram__pg_sb_add(&b, op->values[3], strlen(op->values[3]));
    }
    engram__pg_sb_add(&b, "]", 1);
    if (op == last) break;
  }
  engram__pg_sb_add(&b, "]", 1);
  if (b.oom) {
    engram_free(b.s);
    engram__pg_op_free(group);
    return NULL;
  }
  group->heap[0] = b.s;
  group->values[0] = b.s;
  group->nparams = 1;
  group->members = first;
  *head = last->next;
  last->next = NULL;
  *taken = n;
  return group;
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
