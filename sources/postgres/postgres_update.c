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
 * Every conditional write names the row version it ran on: its version number, and its stamp — the transaction
 * that wrote it (chg) and its place (ctid; postgres_sql.c, SAME_ROW). A version number alone is not enough: a
 * delete and a new row of the key start again at version 1, so a row deleted and written again (by this process
 * between an update's read and its write, by another process, or by plain SQL) could pass for the one read, and
 * the update would write a function of a deleted value over the new row, with the old row's metadata and expiry.
 *
 * When calls wait behind one that succeeded, the next one starts from what that one wrote (its value, metadata,
 * version, stamp and expiry, kept as "known") instead of reading the row again: one round trip instead of two, and
 * the store's condition still catches any other writer in between (then it reads, as on any conflict). A
 * conversation's appends queue behind each other this way.
 *
 * An update that carries writes (req->writes: a conversation append's messages and trim) sends, instead of the
 * store, the one statement that writes the head on the same condition together with them (postgres_append.c):
 * all of it or, when the condition fails, nothing, and the update reads again.
 *
 * Chained updates: when the running call's statement is sent and calls wait behind it, each of them runs its
 * function at once on the value the one before writes (the predicted row: that value, the version + 1, the same
 * metadata and expiry), and ONE statement for all of them goes right behind, in the same segment: the row written
 * once with the last one's value, its version up by their number (each call's reply has its own version), and,
 * for appends, every call's messages. It writes only when the running call's statement, right before it in the
 * same transaction, wrote: that statement sets a chain token (a transaction-local setting, engram.chain, to a number
 * new for each running call and the transaction's id) when it writes, and the chained one requires it
 * (postgres_sql.c, CHAINED); when a segment's end falls between the two, the chained one finds no token. So when
 * the running call did not write (another writer came in between, or it failed), nothing is written and the chained
 * calls wait again at the front of the queue, to run from a fresh read once the statement is back. (Until
 * 2026-12-07 the condition was the predicted version and value; a delete and stores of the key queued between the
 * read and the write could rebuild exactly that row, and the chained call then wrote before the one it follows.)
 * An append with deletes (a trim) is chained alone. Nobody sees the rows in between: a segment is one transaction.
 * A conversation's queued appends thus cost two statements and one round trip instead of one each.
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
#define CHAIN_MAX 64 /* calls chained behind the running one at most */

/* A chained call: its statement is in flight behind the running call's. */
typedef struct {
  engram_request_t *req;
  cJSON *value, *meta; /* what it writes (the reply's value), the metadata kept */
  int64_t expires;
  int redo;            /* its condition failed: back to the queue once the chain is settled */
} chained_t;

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
  pg_stamp_t row;   /* the stamp of the row the running call ran on (version != 0) */
  uint64_t token;   /* the chain token the running call's statement sets when it writes; 0: none */
  cJSON *known, *known_meta; /* the row the last call wrote, while calls wait (known == NULL: none) */
  uint64_t known_version;
  int64_t known_expires;
  pg_stamp_t known_stamp;
  chained_t *ch;             /* chained calls in flight, in order: ch[ch_done..ch_n) not back yet */
  size_t ch_n, ch_done, ch_cap;
} upd_t;

static void attempt(upd_t *u);
static void from_known(upd_t *u);
static void chain_more(upd_t *u, pgc_t *c, uint64_t version);

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
  engram_free(u->ch);
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
  if (u->ch_done < u->ch_n) return; /* chained calls are in flight: the last one back starts the next call */
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
  pg_stamp_t stamp;
  if (req->writes != NULL ? !engram__pg_append_result(req, res, &version, &created, &stamp)
                          : PQntuples(res) == 0) { /* another writer came in between: read again */
    forget_known(u);
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
      engram__pg_stamp(res, 0, 2, &stamp);
    }
    /* The next call (waiting, chained or to come while chained calls are in flight) starts from this row. */
    forget_known(u);
    if ((u->head < u->n || u->ch_done < u->ch_n) && (u->known = cJSON_Duplicate(u->value, 1)) != NULL) {
      if (u->meta != NULL && (u->known_meta = cJSON_Duplicate(u->meta, 1)) == NULL) forget_known(u);
      u->known_version = version;
      u->known_expires = u->expires;
      u->known_stamp = stamp;
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

/* Puts k calls back at the front of the queue, in order: 0 or ENGRAM_ENOMEM. */
static int requeue_front(upd_t *u, engram_request_t **reqs, size_t k) {
  if (u->head < k) {
    size_t waiting = u->n - u->head;
    if (waiting + k > u->cap) {
      engram_request_t **nw = engram_realloc(u->wait, (waiting + k) * sizeof *nw);
      if (nw == NULL) return ENGRAM_ENOMEM;
      u->wait = nw;
      u->cap = waiting + k;
    }
    memmove(u->wait + k, u->wait + u->head, waiting * sizeof *u->wait);
    u->head = k;
    u->n = waiting + k;
  }
  u->head -= k;
  memcpy(u->wait + u->head, reqs, k * sizeof *reqs);
  return 0;
}

/* Every chained call is back: those whose condition failed wait again at the front of the queue (in order), and
 * when no call is running the next one starts (from the row the last statement wrote, or a read). */
static void chain_settled(upd_t *u) {
  engram_request_t *redo[CHAIN_MAX];
  size_t i, k = 0;
  for (i = 0; i < u->ch_n; i++)
    if (u->ch[i].redo) redo[k++] = u->ch[i].req;
  u->ch_n = u->ch_done = 0;
  if (k > 0 && requeue_front(u, redo, k) != 0)
    for (i = 0; i < k; i++) engram_request_complete(redo[i], ENGRAM_ENOMEM);
  if (u->active == NULL) chain_next(u);
}

/* The statement of k chained calls is back (k > 1: appends written by one statement, the head's version up by k). */
static void chained_done(pg_op_t *op, int status, PGresult *res, const char *msg) {
  upd_t *u = op->ctx;
  size_t k = op->index ? op->index : 1, j;
  int written = 0;
  uint64_t head_version = 0;
  int64_t created = 0;
  pg_stamp_t stamp;
  engram__pg_op_free(op);
  if (status == 0) {
    engram_request_t *last = u->ch[u->ch_done + k - 1].req;
    written = last->writes != NULL ? engram__pg_append_result(last, res, &head_version, &created, &stamp)
                                   : PQntuples(res) > 0;
    if (written && last->writes == NULL) {
      head_version = (uint64_t)engram__pg_int(res, 0, 0);
      created = engram__pg_int(res, 0, 1);
      engram__pg_stamp(res, 0, 2, &stamp);
    }
  }
  for (j = 0; j < k; j++) {
    chained_t *e = &u->ch[u->ch_done++];
    engram_request_t *req = e->req;
    if (status != 0) {
      forget_known(u);
      cJSON_Delete(e->value);
      cJSON_Delete(e->meta);
      engram_request_fail(req, status, "update of key '%s': %s", req->key, msg);
    } else if (!written) {
      /* the row was not the one predicted (a statement before did not write): run again from a fresh row */
      forget_known(u);
      cJSON_Delete(e->value);
      cJSON_Delete(e->meta);
      e->redo = 1;
      u->pg->upd_redone++;
    } else {
      engram_item_t it;
      uint64_t version = head_version - (uint64_t)(k - 1 - j), v;
      int64_t c;
      if (req->writes != NULL && j + 1 < k) engram__pg_append_result(req, res, &v, &c, NULL); /* its stores' versions */
      forget_known(u);
      if (j + 1 == k && (u->known = cJSON_Duplicate(e->value, 1)) != NULL) { /* the row the statement left */
        if (e->meta != NULL && (u->known_meta = cJSON_Duplicate(e->meta, 1)) == NULL) forget_known(u);
        u->known_version = version;
        u->known_expires = e->expires;
        u->known_stamp = stamp;
      }
      memset(&it, 0, sizeof it);
      it.key = req->key;
      it.ns = req->ns;
      it.value = e->value;
      it.metadata = e->meta;
      it.version = version;
      it.created_at_ms = created;
      it.updated_at_ms = req->now_ms;
      it.expires_at_ms = e->expires;
      it.score = 1.0;
      engram_request_complete(req, engram_reply_add(req, &it, ENGRAM_REPLY_OWN_VALUE | ENGRAM_REPLY_OWN_METADATA));
    }
    e->value = e->meta = NULL;
  }
  if (u->ch_done == u->ch_n) chain_settled(u);
}

/* Queues ONE statement for the chained calls ch[from..u->ch_n) (their functions ran): the row written once with the
 * last one's value, its version up by their number, and, for appends, all their messages — the server's time goes
 * to each statement's executor start-up more than to its rows. version: the version the statement before writes;
 * the statement requires that one's chain token (u->token). 0, or non-zero when nothing was queued. */
static int chain_send(upd_t *u, pgc_t *c, size_t from, uint64_t version) {
  engram_request_t *reqs[CHAIN_MAX];
  size_t k = u->ch_n - from, j, too_big, too_req;
  chained_t *last = &u->ch[u->ch_n - 1];
  pg_op_t *st;
  int rc;
  for (j = 0; j < k; j++) reqs[j] = u->ch[from + j].req;
  if (last->req->writes != NULL)
    st = engram__pg_append_op_n(u->pg, reqs, k, last->value, last->meta, last->expires, version, chained_done, &rc,
                                &too_big, &too_req);
  else
    st = engram__pg_store_op(u->pg, last->req, last->req->key, last->value, last->meta, last->expires, version, 0,
                             chained_done, &rc);
  if (st == NULL) return ENGRAM_ENOMEM;
  engram__pg_op_num(st, last->req->writes != NULL ? 11 : 7, (int64_t)u->token); /* $12 / $8: the token required */
  if (last->req->writes == NULL && k > 1) engram__pg_op_num(st, 8, (int64_t)k);
  st->index = k;
  st->ctx = u;
  engram__pgc_submit(c, st);
  return 0;
}

/* The running call's statement (conditional on version, 0 = create) was just queued on c: the calls waiting behind
 * it run their functions now, each on the row the one before writes, and their statement(s) are queued behind it,
 * conditional on the running call's statement having written (its chain token), all in one statement; an append with
 * deletes (a trim) goes alone and ends the chain (a trim's deletes could remove a key a later call stores). Stops before a
 * call whose deadline passed or whose function fails: it stays first in the queue and runs from the written row
 * as before. */
static void chain_more(upd_t *u, pgc_t *c, uint64_t version) {
  const cJSON *prev = u->value;
  int64_t expires = u->expires;
  int alone = 0;
  if (u->ch_n != 0 || prev == NULL || u->token == 0) return; /* one chain in flight at a time; a token to follow */
  version = version ? version + 1 : 1;
  while (u->head < u->n && u->ch_n < CHAIN_MAX && !alone) {
    engram_request_t *req = u->wait[u->head];
    cJSON *current, *next = NULL;
    chained_t *e;
    int rc;
    if (engram_request_answered(req) || req->op != u->active->op) break;
    if (u->ch_n == u->ch_cap) {
      size_t cap = u->ch_cap ? u->ch_cap * 2 : 8;
      chained_t *nc = engram_realloc(u->ch, cap * sizeof *nc);
      if (nc == NULL) break;
      u->ch = nc;
      u->ch_cap = cap;
    }
    if ((current = cJSON_Duplicate(prev, 1)) == NULL) break;
    if (req->flags & ENGRAM_OPT_TTL) expires = req->expires_at_ms;
    rc = engram_request_run_update(req, current, &next);
    cJSON_Delete(current);
    /* req->writes is what the function made (set by engram_request_run_update): appends and plain updates are not
     * chained together */
    if (rc != 0 || (req->writes == NULL) != (u->active->writes == NULL)) { /* it runs again, first in the queue */
      cJSON_Delete(next);
      break;
    }
    /* an append with deletes (a trim): alone in its statement, the last of the chain */
    alone = req->writes != NULL && req->writes->n_delete != 0;
    if (alone && u->ch_n > 0) { /* not with the appends before it: it waits for the next chain */
      cJSON_Delete(next);
      break;
    }
    e = &u->ch[u->ch_n];
    memset(e, 0, sizeof *e);
    e->req = req;
    e->value = next;
    e->expires = expires;
    if (u->meta != NULL && (e->meta = cJSON_Duplicate(u->meta, 1)) == NULL) {
      cJSON_Delete(next);
      break;
    }
    u->ch_n++;
    u->head++;
    prev = e->value;
  }
  if (u->ch_n == 0) return;
  if (chain_send(u, c, 0, version) != 0) { /* nothing sent: back to the queue, in order */
    engram_request_t *back[CHAIN_MAX];
    size_t i, k = u->ch_n;
    for (i = 0; i < k; i++) {
      back[i] = u->ch[i].req;
      cJSON_Delete(u->ch[i].value);
      cJSON_Delete(u->ch[i].meta);
    }
    u->ch_n = 0;
    if (requeue_front(u, back, k) != 0)
      for (i = 0; i < k; i++) engram_request_complete(back[i], ENGRAM_ENOMEM);
    return;
  }
  u->pg->upd_chained += u->ch_n;
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
    engram__pg_stamp(res, 0, 6, &u->row);
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
  u->row = u->known_stamp;
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
  /* The condition names the row version read (its stamp), and when calls wait, the statement sets a new chain token
   * for the one chained behind it (postgres_sql.c: SAME_ROW, SET_TOKEN). */
  if (version != 0) {
    engram__pg_op_num(st, req->writes != NULL ? 12 : 9, u->row.chg);
    engram__pg_op_text(st, req->writes != NULL ? 13 : 10, u->row.tid);
  }
  u->token = 0;
  if (u->head < u->n) {
    u->token = ++pg->chain_tokens;
    engram__pg_op_num(st, req->writes != NULL ? 9 : version ? 11 : 6, (int64_t)u->token);
  }
  st->ctx = u;
  engram__pgc_submit(c, st);
  chain_more(u, c, version);
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
  if ((op = engram__pg_op_new(req, PGS_GET_UPD, read_done)) == NULL) {
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
