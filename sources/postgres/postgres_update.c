/*
 * postgres_update.c — the PostgreSQL source's native update: read → the user's function → a store conditional
 * on the version read (create-only when the key was missing) → read again on a conflict, bounded.
 *
 * The core's emulation does the same, but with pipelining every concurrent update of a key would read the same
 * version at once and all but one would conflict on each round, so a hundred concurrent updates of one counter
 * could exhaust their retries. Here updates of one key run one after another within the source (a chain per
 * key: the running call and the calls waiting behind it, in arrival order); the version check still guards
 * against other writers (plain stores, other programs), which cost a retry at most. The function runs on the
 * home loop, as the contract says.
 *
 * When calls wait behind one that succeeded, the next one starts from what that one wrote (its value, metadata,
 * version and expiry, kept as "known") instead of reading the row again: one round trip instead of two, and the
 * store's version check still catches any other writer in between (then it reads, as on any conflict). A
 * conversation's appends queue behind each other this way.
 *
 * An update that carries writes (req->writes: a conversation append's messages and trim) sends, instead of the
 * store, the one statement that writes the head on the same condition together with them (postgres_append.c):
 * all of it or, when the condition fails, nothing, and the update reads again.
 *
 * It routes through postgres_route.c, builds its store with the key-value file's statement (postgres_kv.c) and
 * queues on the pool (postgres_conn.c); postgres.c dispatches to it and frees what is left at close.
 */
#include <stdio.h>
#include <string.h>

#include "postgres_append.h"
#include "postgres_kv.h"
#include "postgres_route.h"
#include "postgres_update.h"

#define UPDATE_ATTEMPTS 64

typedef struct pg_upd_s {
  struct pg_upd_s *next;
  pg_t *pg;
  char *id; /* ns \0 key */
  size_t id_len;
  engram_request_t *active;
  engram_request_t **wait; /* FIFO: wait[head..n) */
  size_t head, n, cap;
  unsigned attempt;
  cJSON *value; /* the function's value, for the reply */
  cJSON *meta;  /* the metadata read, kept */
  int64_t expires;
  cJSON *known, *known_meta; /* the row the last call wrote, while calls wait (known == NULL: none) */
  uint64_t known_version;
  int64_t known_expires;
} upd_t;

static void attempt(upd_t *u);
static void from_known(upd_t *u);

static void forget_known(upd_t *u) {
  cJSON_Delete(u->known);
  cJSON_Delete(u->known_meta);
  u->known = u->known_meta = NULL;
}

static upd_t *find(pg_t *pg, const engram_request_t *req) {
  upd_t *u;
  for (u = pg->updates; u != NULL; u = u->next)
    if (u->id_len == req->ns_len + 1 + req->key_len && memcmp(u->id, req->ns, req->ns_len) == 0 &&
        memcmp(u->id + req->ns_len + 1, req->key, req->key_len) == 0)
      return u;
  return NULL;
}

static void chain_free(upd_t *u) {
  pg_t *pg = u->pg;
  upd_t **pp;
  for (pp = &pg->updates; *pp != NULL; pp = &(*pp)->next)
    if (*pp == u) {
      *pp = u->next;
      break;
    }
  cJSON_Delete(u->value);
  cJSON_Delete(u->meta);
  forget_known(u);
  engram_free(u->wait);
  engram_free(u->id);
  engram_free(u);
}

/* The running call is over (completed or parked): start the next one waiting, or drop the chain. */
static void chain_next(upd_t *u) {
  cJSON_Delete(u->value);
  cJSON_Delete(u->meta);
  u->value = u->meta = NULL;
  u->active = NULL;
  while (u->head < u->n) {
    engram_request_t *req = u->wait[u->head++];
    if (engram_request_answered(req)) { /* its deadline passed while it waited */
      engram_request_complete(req, ENGRAM_ETIMEDOUT);
      continue;
    }
    u->active = req;
    u->attempt = 0;
    if (u->known != NULL) from_known(u);
    else attempt(u);
    return;
  }
  chain_free(u);
}

static void finish(upd_t *u, int status) {
  engram_request_t *req = u->active;
  u->active = NULL;
  engram_request_complete(req, status);
  chain_next(u);
}

static void fail(upd_t *u, int status, const char *fmt, const char *arg1, const char *arg2) {
  engram_request_t *req = u->active;
  u->active = NULL;
  engram_request_fail(req, status, fmt, arg1, arg2);
  chain_next(u);
}

static void stored(pg_op_t *op, int status, PGresult *res, const char *msg) {
  upd_t *u = op->ctx;
  engram_request_t *req = u->active;
  uint64_t version = 0;
  int64_t created = 0;
  engram__pg_op_free(op);
  if (status != 0) {
    fail(u, status, "update of key '%s': %s", req->key, msg);
    return;
  }
  if (req->writes != NULL ? !engram__pg_append_result(req, res, &version, &created)
                          : PQntuples(res) == 0) { /* another writer came in between: read again */
    if (++u->attempt < UPDATE_ATTEMPTS && !engram_request_answered(req)) {
      attempt(u);
      return;
    }
    {
      char n[16];
      snprintf(n, sizeof n, "%u", u->attempt);
      fail(u, ENGRAM_ECONFLICT, "update of key '%s': version conflict after %s attempts", req->key, n);
    }
    return;
  } else {
    engram_item_t it;
    memset(&it, 0, sizeof it);
    it.key = req->key;
    it.ns = req->ns;
    it.value = u->value;
    it.metadata = u->meta;
    if (req->writes == NULL) {
      version = (uint64_t)engram__pg_int(res, 0, 0);
      created = engram__pg_int(res, 0, 1);
    }
    /* Calls wait: the next one starts from this row. */
    forget_known(u);
    if (u->head < u->n && (u->known = cJSON_Duplicate(u->value, 1)) != NULL) {
      if (u->meta != NULL && (u->known_meta = cJSON_Duplicate(u->meta, 1)) == NULL) forget_known(u);
      u->known_version = version;
      u->known_expires = u->expires;
    }
    it.version = version;
    it.created_at_ms = created;
    it.updated_at_ms = req->now_ms;
    it.expires_at_ms = u->expires;
    it.score = 1.0;
    u->value = u->meta = NULL;
    finish(u, engram_reply_add(req, &it, ENGRAM_REPLY_OWN_VALUE | ENGRAM_REPLY_OWN_METADATA));
  }
}

static void run(upd_t *u, cJSON *current, int found, uint64_t version);

static void read_done(pg_op_t *op, int status, PGresult *res, const char *msg) {
  upd_t *u = op->ctx;
  engram_request_t *req = u->active;
  cJSON *current = NULL;
  uint64_t version = 0;
  engram__pg_op_free(op);
  if (status != 0) {
    fail(u, status, "update of key '%s': %s", req->key, msg);
    return;
  }
  cJSON_Delete(u->meta);
  u->meta = NULL;
  u->expires = 0;
  if (PQntuples(res) > 0) {
    if (engram__pg_json(res, 0, 0, &current) != 0 || engram__pg_json(res, 0, 1, &u->meta) != 0) {
      cJSON_Delete(current);
      finish(u, ENGRAM_ENOMEM);
      return;
    }
    u->expires = engram__pg_int(res, 0, 4);
    version = (uint64_t)engram__pg_int(res, 0, 5);
  }
  run(u, current, PQntuples(res) > 0, version);
}

/* The next call on the key, from the row the last one wrote (no read). */
static void from_known(upd_t *u) {
  engram_request_t *req = u->active;
  cJSON *current = u->known;
  if (engram__pg_route(u->pg, req, req->key, req->key_len) == NULL) { /* failed fast, or parked */
    forget_known(u);
    u->active = NULL;
    chain_next(u);
    return;
  }
  cJSON_Delete(u->meta);
  u->meta = u->known_meta;
  u->expires = u->known_expires;
  u->known = u->known_meta = NULL;
  run(u, current, 1, u->known_version);
}

/* The user's function on current (the row's value, or NULL when found is 0; u->meta and u->expires are the
 * row's), then the conditional store. Takes current. */
static void run(upd_t *u, cJSON *current, int found, uint64_t version) {
  engram_request_t *req = u->active;
  pg_t *pg = u->pg;
  cJSON *next = NULL;
  pgc_t *c;
  pg_op_t *st;
  size_t too_big = (size_t)-1;
  int rc;
  /* A new expiry; else the row keeps its own, and a created row takes expires_at_ms (0, or the default_ttl_ms the
   * core stamped). */
  if ((req->flags & ENGRAM_OPT_TTL) || !found) u->expires = req->expires_at_ms;
  if (engram_request_answered(req)) {
    cJSON_Delete(current);
    finish(u, ENGRAM_ECANCELED);
    return;
  }
  rc = engram_request_run_update(req, current, &next);
  cJSON_Delete(current);
  if (rc != 0) {
    fail(u, rc, NULL, NULL, NULL); /* the message is already on the request */
    return;
  }
  cJSON_Delete(u->value);
  u->value = next;
  if ((c = engram__pgc_pick(&pg->pool, req->key, req->key_len)) == NULL) {
    fail(u, ENGRAM_EUNAVAILABLE, "update of key '%s': %s", req->key,
         pg->pool.last_error[0] ? pg->pool.last_error : "connection lost");
    return;
  }
  if (req->writes != NULL)
    st = engram__pg_append_op(pg, req, next, u->meta, u->expires, version, stored, &rc, &too_big);
  else
    st = engram__pg_store_op(pg, req, req->key, next, u->meta, u->expires, version,
                             version ? 0 : ENGRAM_OPT_CREATE_ONLY, stored, &rc);
  if (st == NULL) {
    if (rc == ENGRAM_ETOOBIG && too_big != (size_t)-1)
      fail(u, rc, "update of key '%s': the value of '%s' (one of its writes) is larger than max_value_bytes", req->key,
           req->writes->store[too_big].key);
    else if (rc == ENGRAM_ETOOBIG)
      fail(u, rc, "update of key '%s': the new value is larger than max_value_bytes%s", req->key, "");
    else finish(u, rc);
    return;
  }
  st->ctx = u;
  engram__pgc_submit(c, st);
}

static void attempt(upd_t *u) {
  engram_request_t *req = u->active;
  forget_known(u);
  pgc_t *c = engram__pg_route(u->pg, req, req->key, req->key_len);
  pg_op_t *op;
  if (c == NULL) { /* failed fast, or parked until a connection is up (it comes back through update) */
    u->active = NULL;
    chain_next(u);
    return;
  }
  if ((op = engram__pg_op_new(req, PGS_GET, read_done)) == NULL) {
    finish(u, ENGRAM_ENOMEM);
    return;
  }
  op->ctx = u;
  op->values[0] = req->ns;
  op->values[1] = req->key;
  engram__pg_op_num(op, 2, req->now_ms);
  op->nparams = 3;
  engram__pgc_submit(c, op);
}

void engram__pg_update(engram_source_t *src, engram_request_t *req) {
  pg_t *pg = engram_source_state(src);
  upd_t *u = find(pg, req);
  if (u != NULL) { /* one is running on this key: wait behind it */
    if (u->n == u->cap) {
      size_t cap = u->cap ? u->cap * 2 : 8;
      engram_request_t **nw;
      if (u->head > 0) { /* reuse the room of the calls already started */
        memmove(u->wait, u->wait + u->head, (u->n - u->head) * sizeof *u->wait);
        u->n -= u->head;
        u->head = 0;
      }
      if (u->n == u->cap) {
        if ((nw = engram_realloc(u->wait, cap * sizeof *nw)) == NULL) {
          engram_request_complete(req, ENGRAM_ENOMEM);
          return;
        }
        u->wait = nw;
        u->cap = cap;
      }
    }
    u->wait[u->n++] = req;
    return;
  }
  if ((u = engram_calloc(1, sizeof *u)) == NULL || (u->id = engram_malloc(req->ns_len + 1 + req->key_len)) == NULL) {
    engram_free(u);
    engram_request_complete(req, ENGRAM_ENOMEM);
    return;
  }
  memcpy(u->id, req->ns, req->ns_len);
  u->id[req->ns_len] = '\0';
  memcpy(u->id + req->ns_len + 1, req->key, req->key_len);
  u->id_len = req->ns_len + 1 + req->key_len;
  u->pg = pg;
  u->active = req;
  u->next = pg->updates;
  pg->updates = u;
  attempt(u);
}

void engram__pg_update_free(pg_t *pg) {
  while (pg->updates != NULL) {
    upd_t *u = pg->updates;
    while (u->head < u->n) engram_request_complete(u->wait[u->head++], ENGRAM_ECANCELED);
    u->active = NULL;
    chain_free(u);
  }
}
