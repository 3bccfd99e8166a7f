/*
 * postgres_route.c — routing of the PostgreSQL source's calls (postgres_route.h): the pool picks a ready
 * connection (one key, one connection, so calls on a key keep their order); when none is up a call fails at once
 * with ENGRAM_EUNAVAILABLE and the last connection error, or, with wait_for_connection, is parked until a
 * connection is up. A timer releases parked calls whose deadline passed (ENGRAM_ETIMEDOUT).
 *
 * Every method file routes through here, so parking lives below them: bringing parked calls back is the one
 * step that goes up, and it goes through the dispatch function the caller of engram__pg_unpark passes.
 */
#include "postgres_route.h"

static int park(pg_t *pg, engram_request_t *req);

pgc_t *engram__pg_route(pg_t *pg, engram_request_t *req, const char *key, size_t key_len) {
  pgc_t *c = engram__pgc_pick(&pg->pool, key, key_len);
  if (c != NULL) return c;
  if (engram_request_answered(req)) {
    engram_request_complete(req, ENGRAM_ECANCELED);
    return NULL;
  }
  if (pg->wait_for_connection && !pg->closing) {
    if (park(pg, req) != 0) engram_request_complete(req, ENGRAM_ENOMEM);
    return NULL;
  }
  engram_request_fail(req, ENGRAM_EUNAVAILABLE, "unavailable, reconnecting (%s)",
                      pg->pool.last_error[0] ? pg->pool.last_error : "no connection yet");
  return NULL;
}

static void park_tick(uv_timer_t *t);

static int park(pg_t *pg, engram_request_t *req) {
  if (pg->park_n == pg->park_cap) {
    size_t cap = pg->park_cap ? pg->park_cap * 2 : 64;
    engram_request_t **np = engram_realloc(pg->park, cap * sizeof *np);
    if (np == NULL) return ENGRAM_ENOMEM;
    pg->park = np;
    pg->park_cap = cap;
  }
  pg->park[pg->park_n++] = req;
  if (!pg->park_timer_on) {
    uv_timer_start(&pg->park_timer, park_tick, 100, 100);
    pg->park_timer_on = 1;
  }
  return 0;
}

/* Releases parked calls the core already answered (their deadline passed). */
static void park_tick(uv_timer_t *t) {
  pg_t *pg = t->data;
  size_t i, k = 0;
  engram_request_t **gone = NULL;
  size_t n_gone = 0;
  for (i = 0; i < pg->park_n; i++)
    if (engram_request_answered(pg->park[i])) n_gone++;
  if (n_gone > 0 && (gone = engram_malloc(n_gone * sizeof *gone)) == NULL) return; /* next tick */
  n_gone = 0;
  for (i = 0; i < pg->park_n; i++) {
    if (engram_request_answered(pg->park[i])) gone[n_gone++] = pg->park[i];
    else pg->park[k++] = pg->park[i];
  }
  pg->park_n = k;
  if (k == 0) {
    uv_timer_stop(&pg->park_timer);
    pg->park_timer_on = 0;
  }
  for (i = 0; i < n_gone; i++) engram_request_complete(gone[i], ENGRAM_ETIMEDOUT);
  engram_free(gone);
}

void engram__pg_unpark(pg_t *pg, void (*dispatch)(engram_source_t *src, engram_request_t *req)) {
  engram_request_t **v = pg->park;
  size_t i, n = pg->park_n;
  if (n == 0) return;
  pg->park = NULL;
  pg->park_n = pg->park_cap = 0;
  if (pg->park_timer_on) {
    uv_timer_stop(&pg->park_timer);
    pg->park_timer_on = 0;
  }
  for (i = 0; i < n; i++) dispatch(pg->src, v[i]);
  engram_free(v);
}

void engram__pg_park_cancel(pg_t *pg) {
  engram_request_t **parked = pg->park;
  size_t i, n = pg->park_n;
  pg->park = NULL;
  pg->park_n = pg->park_cap = 0;
  uv_timer_stop(&pg->park_timer);
  pg->park_timer_on = 0;
  for (i = 0; i < n; i++) engram_request_complete(parked[i], ENGRAM_ECANCELED);
  engram_free(parked);
}
