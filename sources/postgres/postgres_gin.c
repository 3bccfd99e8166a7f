/*
 * postgres_gin.c — upkeep of the text index's pending list, on a connection of its own (postgres_gin.h). It
 * uses the pool (postgres_conn.c) and the ops below it; the store statement (postgres_kv.c) tells it how much
 * tsvector text went out.
 *
 * The items table's GIN index (search) keeps fastupdate on: a new row's lexemes are appended to a pending list
 * and merged into the index later, in bulk — storing the Debian corpus is about three times faster that way
 * than with fastupdate off. But the merge happens inside whichever INSERT finds the list past
 * gin_pending_list_limit (4 MB by default): that one statement then takes 100-300 ms, and every statement
 * pipelined behind it on the connection waits as long (the p99 of store latency at half load was ~190 ms).
 *
 * So the source merges the list itself before it gets there, on the maintenance connection (conns[nconn] in
 * postgres_conn.c, connected on first use): once GIN_CLEAN_BYTES of tsvector text were sent since the last
 * cleaning, it runs SELECT gin_clean_pending_list(index). While that runs, the pool's inserts go on appending
 * (an insert that finds the list long and a cleaning under way leaves the merge to it), so no call waits for it.
 * gin_clean_pending_list needs the index's owner; when the server refuses it (another role owns the table, an
 * index that is not ours), the source stops trying, closes the connection, and says why in info
 * (gin_cleanup_error): the inserts then merge the list themselves, as PostgreSQL does by default. The option
 * "gin_cleanup": false never opens the connection.
 */
#include <stdio.h>
#include <string.h>

#include "postgres_gin.h"

/* tsvector text per cleaning; the pending list holds about 2-3 times as many bytes, well below the 4 MB at which
 * an insert would merge it. */
#ifndef GIN_CLEAN_BYTES
#define GIN_CLEAN_BYTES (256u << 10)
#endif

static void gin_done(pg_op_t *op, int status, PGresult *res, const char *msg) {
  pg_t *pg = op->ctx;
  (void)res;
  engram__pg_op_free(op);
  pg->gin_running = 0;
  if (status == 0) {
    pg->gin_cleanings++;
    return;
  }
  if (status == ENGRAM_EBACKEND && !pg->closing) {
    /* Refused (not the owner, no such index or function): the inserts keep merging on their own. */
    pg->gin_off = 1;
    snprintf(pg->gin_error, sizeof pg->gin_error, "%s", msg && msg[0] ? msg : "refused");
    engram__pgc_retire(engram__pgc_maint(&pg->pool));
  }
  /* Unavailable, timed out, canceled: the next GIN_CLEAN_BYTES try again. */
}

void engram__pg_gin_note(pg_t *pg, size_t bytes) {
  pgc_t *c = engram__pgc_maint(&pg->pool);
  pg_op_t *op;
  if (!pg->gin_cleanup || pg->gin_off || pg->closing || c == NULL) return;
  pg->gin_bytes += bytes;
  if (pg->gin_running || pg->gin_bytes < GIN_CLEAN_BYTES) return;
  if ((op = engram__pg_op_new(NULL, PGS_SQL, gin_done)) == NULL) return; /* next time */
  op->ctx = pg;
  op->sql = pg->sql.gin;
  op->values[0] = pg->sql.gin_index;
  op->nparams = 1;
  pg->gin_bytes = 0;
  pg->gin_running = 1;
  if (c->st == PGC_DOWN) engram__pgc_connect(c); /* a failed attempt fails the op at the next idle */
  engram__pgc_submit(c, op);
}
