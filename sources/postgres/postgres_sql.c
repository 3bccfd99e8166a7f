/*
 * postgres_sql.c — the PostgreSQL source's SQL: the schema (a DO block that creates or upgrades it under an
 * advisory lock), the prepared statements, identifiers, text[] literals of keys, key ranges for
 * glob patterns, and the scrubbing of server messages (declared in postgres_sql.h). It works on the texts it is
 * given and uses no other file of the folder: the lowest layer, shared by the options, the connections and the
 * methods.
 *
 * Identifiers (schema, table) are validated ([A-Za-z_][A-Za-z0-9_]{0,62}) and always double-quoted, so they
 * can be written into SQL text; every value travels as a parameter. Text search ranks in the process, with the
 * core's BM25 (postgres_text.c): the table only records which transaction wrote each row (chg) and which keys
 * were deleted (the <table>_gone table, filled by a trigger), so that an index can catch up with one statement.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "postgres_sql.h"

int engram__pg_ident_ok(const char *s) {
  size_t i;
  if (s == NULL || s[0] == '\0' || !((s[0] >= 'A' && s[0] <= 'Z') || (s[0] >= 'a' && s[0] <= 'z') || s[0] == '_'))
    return 0;
  for (i = 1; s[i] != '\0'; i++) {
    char c = s[i];
    if (i > 62 || !((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return 0;
  }
  return 1;
}

/* ---- Growing strings ---- */

typedef engram__pg_sb_t sb_t;

void engram__pg_sb_add(sb_t *b, const char *s, size_t n) {
  if (b->oom) return;
  if (b->n + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    char *ns;
    while (cap < b->n + n + 1) cap *= 2;
    if ((ns = engram_realloc(b->s, cap)) == NULL) {
      b->oom = 1;
      return;
    }
    b->s = ns;
    b->cap = cap;
  }
  memcpy(b->s + b->n, s, n);
  b->n += n;
  b->s[b->n] = '\0';
}

void engram__pg_sb_json_str(sb_t *b, const char *s) {
  const char *p = s, *run = s;
  engram__pg_sb_add(b, "\"", 1);
  for (; *p; p++) {
    unsigned char c = (unsigned char)*p;
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    engram__pg_sb_add(b, run, (size_t)(p - run));
    if (c == '"') engram__pg_sb_add(b, "\\\"", 2);
    else if (c == '\\') engram__pg_sb_add(b, "\\\\", 2);
    else {
      char esc[8];
      snprintf(esc, sizeof esc, "\\u%04x", c);
      engram__pg_sb_add(b, esc, 6);
    }
    run = p + 1;
  }
  engram__pg_sb_add(b, run, (size_t)(p - run));
  engram__pg_sb_add(b, "\"", 1);
}

static void sb_fmt(sb_t *b, const char *fmt, const char *table, const char *schema, const char *gone) {
  const char *p = fmt, *at;
  while ((at = strchr(p, '{')) != NULL) {
    engram__pg_sb_add(b, p, (size_t)(at - p));
    if (at[1] == 'T' && at[2] == '}') engram__pg_sb_add(b, table, strlen(table));
    else if (at[1] == 'S' && at[2] == '}') engram__pg_sb_add(b, schema, strlen(schema));
    else if (at[1] == 'G' && at[2] == '}') engram__pg_sb_add(b, gone, strlen(gone));
    else {
      engram__pg_sb_add(b, at, 1);
      p = at + 1;
      continue;
    }
    p = at + 3;
  }
  engram__pg_sb_add(b, p, strlen(p));
}

static char *sb_take(sb_t *b) {
  if (b->oom) {
    engram_free(b->s);
    return NULL;
  }
  return b->s;
}

/* ---- Statements ---- */

#define LIVE(n) "(expires_at IS NULL OR expires_at > $" #n ")"
/* An update's conditional write names the row version it read — besides its version number, the transaction that
 * wrote it (chg; the engram_chg trigger sets it for other programs' UPDATEs too, an INSERT defaults to it) and its
 * place (ctid) — so a delete and a new row of the key at the same version number (a version restarts at 1), in
 * another transaction (chg differs) or in the same one (a new tuple: the deleted one's ctid is not reused while
 * the transaction lasts), never pass for the row it read ($c, $t NULL: not checked, a chained write). */
#define SAME_ROW(c, t) "AND ($" #c "::bigint IS NULL OR (chg = $" #c "::bigint AND ctid = $" #t "::tid)) "
/* A chained write (postgres_update.c) writes only when the statement right before it, in the same transaction,
 * wrote and set the chain token: a transaction-local setting, so it cannot outlive the segment ($n NULL: any). The
 * token is the number and the transaction's id, so a default value of the setting (a role's, a connection
 * string's) can never pass for it: both statements write, so both have that id. */
#define CHAINED(n)                                                                                                \
  "AND ($" #n "::text IS NULL OR current_setting('engram.chain', true) = $" #n "::text || '/' || txid_current())"
/* A RETURNING column that sets the chain token when the statement writes the row ($n NULL: sets nothing). */
#define SET_TOKEN(n)                                                                                              \
  "CASE WHEN $" #n "::text IS NULL THEN NULL ELSE set_config('engram.chain', $" #n "::text || '/' || "            \
  "txid_current(), true) END"
#define ROWCOLS "key, value, metadata, created_at, updated_at, expires_at, version"
/* The system-field ranges of search, count and list_keys as one parameter $n: NULL (no range), or a bigint[6]
 * {created min, max, updated min, max, expires min, max} (postgres_query.c; the whole span of a field the call
 * has no range on). NULL created/updated read as 0 and a NULL or 0 expires_at as the largest instant, as
 * engram_request_in_ranges reads them, so SQL keeps exactly the rows the C test keeps. */
#define RANGES(n)                                                                                                 \
  " AND ($" #n "::bigint[] IS NULL OR (coalesce(created_at, 0) BETWEEN ($" #n "::bigint[])[1] AND ($" #n            \
  "::bigint[])[2] AND coalesce(updated_at, 0) BETWEEN ($" #n "::bigint[])[3] AND ($" #n "::bigint[])[4] AND"       \
  " coalesce(nullif(expires_at, 0), 9223372036854775807) BETWEEN ($" #n "::bigint[])[5] AND ($" #n "::bigint[])[6]))"
/* The system fields the ranges test (engram_request_in_ranges), after the columns a statement needs itself. */
#define TIMECOLS "created_at, updated_at, expires_at"
#define EXPIRED_OLD "t.expires_at IS NOT NULL AND t.expires_at <= EXCLUDED.updated_at"

/* What a store's upsert does to the row it finds (PGS_STORE, PGS_STORE_MANY, an append's stores): an expired row
 * counts as missing (version back to 1, a new created_at), a live one gets version + 1. */
#define UPSERT_SET                                                                                                 \
  "ON CONFLICT (namespace, key) DO UPDATE SET value = EXCLUDED.value, metadata = EXCLUDED.metadata, "               \
  "created_at = CASE WHEN " EXPIRED_OLD " THEN EXCLUDED.created_at ELSE t.created_at END, "                        \
  "updated_at = EXCLUDED.updated_at, expires_at = EXCLUDED.expires_at, "                                            \
  "version = CASE WHEN " EXPIRED_OLD " THEN 1 ELSE t.version + 1 END, chg = EXCLUDED.chg "

/* The writes that ride on an append's head (h, one row when it was written): $8 the stores, a jsonb array of
 * [key, value, metadata or null, expires_at or 0], written as PGS_STORE writes one (the last of a key repeated);
 * $9 the deletes, a jsonb array of keys (made an array, so the primary key's index finds each: a generic plan
 * cannot tell how many there are). All of it only when h wrote the head. The _KEEP statements have no DELETE
 * (an append without a trim: no statement-level trigger of <table>_gone to run for nothing); $9 is then '[]'. A key both stored and deleted is
 * deleted, as a store followed by a delete leaves it, and counts as deleted. Rows back: kind 0 the head (version,
 * created_at), kind 1 per store (key, version), kind 2 the live items deleted. */
#define APPEND_STORES                                                                                              \
  ", s AS (SELECT DISTINCT ON (e->>0) e->>0 AS k, e->1 AS v, nullif(e->2, 'null'::jsonb) AS md, "                  \
  "nullif((e->>3)::bigint, 0) AS ex FROM jsonb_array_elements($8::jsonb) WITH ORDINALITY AS a(e, ord) "             \
  "WHERE EXISTS (SELECT 1 FROM h) AND NOT jsonb_exists($9::jsonb, e->>0) ORDER BY e->>0, ord DESC), "               \
  "m AS (INSERT INTO {T} AS t (namespace, key, value, metadata, created_at, updated_at, expires_at, version, chg) "  \
  "SELECT $1::text, k, v, md, $5::bigint, $5::bigint, ex, 1, txid_current() FROM s "                                \
  UPSERT_SET "RETURNING t.key, t.version) "
#define APPEND_WRITES                                                                                              \
  APPEND_STORES ", d AS (DELETE FROM {T} WHERE namespace = $1 AND key = ANY (ARRAY(SELECT jsonb_array_elements_text($9::jsonb))) " \
  "AND EXISTS (SELECT 1 FROM h) RETURNING " LIVE(5) " AS alive) "                                                  \
  "SELECT 0 AS kind, tok AS key, version, created_at, chg, tid FROM h "                                            \
  "UNION ALL SELECT 1, key, version, NULL, NULL, NULL FROM m "                                                     \
  "UNION ALL SELECT 2, NULL, (SELECT count(*) FROM d WHERE alive) + (SELECT count(DISTINCT e->>0) FROM "           \
  "jsonb_array_elements($8::jsonb) AS e WHERE jsonb_exists($9::jsonb, e->>0)), NULL, NULL, NULL "                  \
  "WHERE EXISTS (SELECT 1 FROM h)"
#define APPEND_STORES_ONLY                                                                                         \
  APPEND_STORES "SELECT 0 AS kind, tok AS key, version, created_at, chg, tid FROM h "                               \
  "UNION ALL SELECT 1, key, version, NULL, NULL, NULL FROM m"
#define APPEND_HEAD_IF                                                                                             \
  "WITH h AS (UPDATE {T} SET value = $3::jsonb, metadata = $4::jsonb, updated_at = $5, expires_at = $6, "         \
  "version = version + coalesce($11::bigint, 1), chg = txid_current() WHERE namespace = $1 AND key = $2 AND version = $7 AND " LIVE(5) " " \
  SAME_ROW(13, 14) CHAINED(12) " RETURNING version, created_at, chg, ctid::text AS tid, " SET_TOKEN(10) " AS tok)"
#define APPEND_HEAD_NEW                                                                                            \
  "WITH h AS (INSERT INTO {T} AS t (namespace, key, value, metadata, created_at, updated_at, expires_at, version, chg) " \
  "VALUES ($1, $2, $3::jsonb, $4::jsonb, $5, $5, $6, 1, txid_current()) "                                           \
  "ON CONFLICT (namespace, key) DO UPDATE SET value = EXCLUDED.value, metadata = EXCLUDED.metadata, "               \
  "created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at, expires_at = EXCLUDED.expires_at, "         \
  "version = 1, chg = EXCLUDED.chg WHERE " EXPIRED_OLD " AND $7::bigint = 0 "                                       \
  "RETURNING t.version, t.created_at, t.chg, t.ctid::text AS tid, " SET_TOKEN(10) " AS tok)"

static const char *const stmt_text[PGS_N] = {
    /* PGS_STORE ($1 ns, $2 key, $3 value, $4 metadata, $5 now, $6 expires). chg: the writing transaction's id, what
     * the text index's sync reads changes by (postgres_text.c). */
    "INSERT INTO {T} AS t (namespace, key, value, metadata, created_at, updated_at, expires_at, version, chg) "
    "VALUES ($1, $2, $3::jsonb, $4::jsonb, $5, $5, $6, 1, txid_current()) " UPSERT_SET "RETURNING version, created_at",
    /* PGS_STORE_NEW: the same, but only an expired row may be replaced (no row back = ENGRAM_EEXIST); $7 NULL or
     * the chain token it sets when it writes (an update's create, postgres_update.c). Rows back: version,
     * created_at, chg, ctid (the row's stamp) */
    "INSERT INTO {T} AS t (namespace, key, value, metadata, created_at, updated_at, expires_at, version, chg) "
    "VALUES ($1, $2, $3::jsonb, $4::jsonb, $5, $5, $6, 1, txid_current()) "
    "ON CONFLICT (namespace, key) DO UPDATE SET value = EXCLUDED.value, metadata = EXCLUDED.metadata, "
    "created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at, expires_at = EXCLUDED.expires_at, "
    "version = 1, chg = EXCLUDED.chg WHERE " EXPIRED_OLD " "
    "RETURNING version, created_at, chg, ctid::text, " SET_TOKEN(7),
    /* PGS_STORE_IF (+ $7 the expected version; $8 NULL or the chain token that must be set: an update chained
     * behind another of the same key (postgres_update.c) writes only when the statement right before it wrote;
     * $9 NULL or how many chained updates this statement writes at once, the last one's value: the version goes
     * up by that many; $10, $11 NULL or the row's expected chg and ctid: an update writes only over the very row
     * version it read; $12 NULL or the chain token it sets when it writes. No row back = ENGRAM_ECONFLICT; rows
     * back: version, created_at, chg, ctid) */
    "UPDATE {T} SET value = $3::jsonb, metadata = $4::jsonb, updated_at = $5, expires_at = $6, "
    "version = version + coalesce($9::bigint, 1), chg = txid_current() WHERE namespace = $1 AND key = $2 AND "
    "version = $7 AND " LIVE(5) " " SAME_ROW(10, 11) CHAINED(8) " RETURNING version, created_at, chg, ctid::text, "
    SET_TOKEN(12),
    /* PGS_GET ($1 ns, $2 key, $3 now) */
    "SELECT value, metadata, created_at, updated_at, expires_at, version FROM {T} "
    "WHERE namespace = $1 AND key = $2 AND " LIVE(3),
    /* PGS_EXISTS */
    "SELECT 1 FROM {T} WHERE namespace = $1 AND key = $2 AND " LIVE(3),
    /* PGS_DELETE: removes the row, expired or not; reports whether it was alive */
    "DELETE FROM {T} WHERE namespace = $1 AND key = $2 RETURNING " LIVE(3),
    /* PGS_COUNT ($1 ns, $2 now, $3 ranges) */
    "SELECT count(*) FROM {T} WHERE namespace = $1 AND " LIVE(2) RANGES(3),
    /* PGS_SCAN ($1 ns, $2 lo, $3 after, $4 now, $5 limit, $6 ranges) */
    "SELECT " ROWCOLS " FROM {T} WHERE namespace = $1 AND key >= $2 AND key > $3 AND " LIVE(4) RANGES(6)
    " ORDER BY key LIMIT $5",
    /* PGS_SCAN_R (+ $6 hi; $7 ranges) */
    "SELECT " ROWCOLS " FROM {T} WHERE namespace = $1 AND key >= $2 AND key > $3 AND key < $6 AND " LIVE(4) RANGES(7)
    " ORDER BY key LIMIT $5",
    /* PGS_SCANM (key, metadata, then TIMECOLS; $6 ranges) */
    "SELECT key, metadata, " TIMECOLS " FROM {T} WHERE namespace = $1 AND key >= $2 AND key > $3 AND " LIVE(4)
    RANGES(6) " ORDER BY key LIMIT $5",
    /* PGS_SCANM_R ($7 ranges) */
    "SELECT key, metadata, " TIMECOLS " FROM {T} WHERE namespace = $1 AND key >= $2 AND key > $3 AND key < $6 AND " LIVE(4)
    RANGES(7) " ORDER BY key LIMIT $5",
    /* PGS_LIST (key, then TIMECOLS; $6 ranges) */
    "SELECT key, " TIMECOLS " FROM {T} WHERE namespace = $1 AND key >= $2 AND key > $3 AND " LIVE(4) RANGES(6)
    " ORDER BY key LIMIT $5",
    /* PGS_LIST_R ($7 ranges) */
    "SELECT key, " TIMECOLS " FROM {T} WHERE namespace = $1 AND key >= $2 AND key > $3 AND key < $6 AND " LIVE(4)
    RANGES(7) " ORDER BY key LIMIT $5",
    /* PGS_LIST_ALL ($1 ns after, $2 key after, $3 now, $4 limit, $5 ranges; namespace, key, then TIMECOLS) */
    "SELECT namespace, key, " TIMECOLS " FROM {T} WHERE (namespace, key) > ($1, $2) AND " LIVE(3) RANGES(5)
    " ORDER BY namespace, key LIMIT $4",
    /* PGS_TEXT_SYNC ($1 ns, $2 chg from, $3 the largest bigint): the text index's sync (postgres_text.c). Kind 0:
     * a row written by a transaction with id >= $2 (key, value, expires_at, created_at, updated_at, chg); kind 1: a
     * key deleted by one (key, chg; a NULL key: a TRUNCATE); kind 2, always one: the statement snapshot's xmin,
     * below which every transaction is over, so the next sync can start there. chg's range has two parameters so
     * that the generic plan, too, estimates it narrow and walks the chg indexes; the namespace is compared as an
     * expression no index holds, so the planner never ANDs in a walk of the namespace's primary-key entries
     * (it did, before the table had statistics: 66,000 entries, 9 ms, for the one row written since). */
    "SELECT 0 AS kind, key, value, expires_at, created_at, updated_at, chg FROM {T} WHERE chg BETWEEN $2 AND $3 AND "
    "namespace || '' = $1 UNION ALL SELECT 1, key, NULL, NULL, NULL, NULL, chg FROM {G} WHERE chg BETWEEN $2 AND $3 AND "
    "(namespace = $1 OR namespace IS NULL) "
    "UNION ALL SELECT 2, NULL, NULL, NULL, NULL, NULL, txid_snapshot_xmin(txid_current_snapshot())",
    /* PGS_TEXT_BUILD ($1 ns, $2 after key, $3 limit): the next rows of the namespace in key order (kind 0), and
     * the snapshot's xmin (kind 2): a build reads the namespace in such chunks */
    "(SELECT 0 AS kind, key, value, expires_at, created_at, updated_at, chg FROM {T} WHERE namespace = $1 AND "
    "key > $2 ORDER BY key LIMIT $3) "
    "UNION ALL SELECT 2, NULL, NULL, NULL, NULL, NULL, txid_snapshot_xmin(txid_current_snapshot())",
    /* PGS_TEXT_FETCH ($1 ns, $2 keys text[], $3 now): the live rows of the ranked keys, in their order (then ord);
     * one primary-key probe per key through LATERAL ... LIMIT 1, as PGS_GET_MANY below (a plain join on unnest got
     * a generic plan reading the namespace's whole key range on a table not yet analyzed) */
    "SELECT t.*, u.ord FROM unnest($2::text[]) WITH ORDINALITY AS u(k, ord) CROSS JOIN LATERAL (SELECT " ROWCOLS
    " FROM {T} WHERE namespace = $1 AND key = u.k AND " LIVE(3) " LIMIT 1) t ORDER BY u.ord",
    /* PGS_CLEAR_NS ($1 ns) */
    "DELETE FROM {T} WHERE namespace = $1",
    /* PGS_CLEAR_ALL */
    "DELETE FROM {T}",
    /* PGS_SWEEP ($1 now, $2 limit); also forgets the deleted keys kept longer than PG_GONE_KEEP_MS */
    "WITH pruned AS (DELETE FROM {G} WHERE at < $1::bigint - " PG_GONE_KEEP_MS ") "
    "DELETE FROM {T} WHERE ctid = ANY (ARRAY(SELECT ctid FROM {T} WHERE expires_at IS NOT NULL AND expires_at <= $1 "
    "LIMIT $2))",
    /* PGS_INFO ($1 now): filled in by engram__pg_sql_build (it names the table in a literal too) */
    NULL,
    /* PGS_STORE_REPLICA ($1 ns, $2 key, $3 value, $4 metadata, $5 updated, $6 expires, $7 created, $8 version): a
     * copy written exactly as given (a tiered source's write-through or read repair) */
    "INSERT INTO {T} AS t (namespace, key, value, metadata, created_at, updated_at, expires_at, version, chg) "
    "VALUES ($1, $2, $3::jsonb, $4::jsonb, $7, $5, $6, $8, txid_current()) "
    "ON CONFLICT (namespace, key) DO UPDATE SET value = EXCLUDED.value, metadata = EXCLUDED.metadata, "
    "created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at, expires_at = EXCLUDED.expires_at, "
    "version = EXCLUDED.version, chg = EXCLUDED.chg "
    "RETURNING version, created_at",
    /* PGS_APPEND_IF ($1 ns, $2 key, $3 value, $4 metadata, $5 now, $6 expires, $7 the expected version, $8 the
     * stores, $9 the deletes, $10 NULL or the chain token it sets when it writes, $11 NULL or how many chained
     * appends this one statement writes at once: the version goes up by that many, $12 NULL or the chain token
     * that must be set, $13, $14 NULL or the expected chg and ctid — as PGS_STORE_IF's $12, $9, $8, $10, $11): the
     * head's conditional write (PGS_STORE_IF) and the writes that ride on it in one statement (postgres_append.c);
     * no row back = ENGRAM_ECONFLICT, and then nothing was written. The head's row (kind 0) carries the token set
     * (or NULL) in its key column and its stamp (chg, ctid) in two more. */
    APPEND_HEAD_IF APPEND_WRITES,
    /* PGS_APPEND_NEW ($1..$10 as PGS_APPEND_IF's, $7 = 0): the head created (PGS_STORE_NEW) with its writes; no row
     * back = a live head appeared meanwhile, and then nothing was written */
    APPEND_HEAD_NEW APPEND_WRITES,
    /* PGS_APPEND_IF_KEEP, PGS_APPEND_NEW_KEEP: the same without deletes ($9 = '[]') */
    APPEND_HEAD_IF APPEND_STORES_ONLY,
    APPEND_HEAD_NEW APPEND_STORES_ONLY,
    /* PGS_GET_MANY ($1 ns, $2 keys text[], $3 now, $4 with metadata: without it the column is NULL, so the server
     * does not print each row's metadata jsonb for a caller that drops it): retrieve_many in one statement, u.ord = the key's 1-based place
     * in $2 (a key given twice gets its row twice). The LATERAL subquery with LIMIT 1 (the primary key holds one row
     * anyway) cannot be flattened into a join, so the plan is one primary-key probe per key whatever the table's
     * statistics: on a table not yet analyzed the generic plans of "key = ANY($2)" and of a plain join on unnest
     * read the namespace's whole key range instead (a bitmap heap scan of 2,055-2,255 rows, 0.6-1.8 ms for 55 keys
     * against 0.14 ms; docs/sources-postgres.md). */
    "SELECT u.ord, t.* FROM unnest($2::text[]) WITH ORDINALITY AS u(k, ord) CROSS JOIN LATERAL (SELECT value, "
    "CASE WHEN $4::boolean THEN metadata END, created_at, updated_at, expires_at, version FROM {T} WHERE namespace = $1 AND key = u.k AND " LIVE(3)
    " LIMIT 1) t",
    /* PGS_GET_RUN ($1 ns, $2 lo, $3 hi, $4 cap, $5 the other keys text[], $6 now, $7 with metadata, as
     * PGS_GET_MANY's $4): retrieve_many when its keys hold
     * a run of neighbours (a conversation window's messages: zero-padded sequence numbers; postgres_kv.c finds it).
     * The run is read by ONE scan of its key range [lo, hi] on the primary key, at most $4 rows, expired ones
     * included (the caller skips them, and rows no key asked for), instead of one index descent per key; the other
     * keys, all outside [lo, hi], are probed as PGS_GET_MANY probes them. Rows carry their key. EXPLAIN ANALYZE
     * (TIMING OFF) of a window's 55 keys in a 30,000-row table: 0.05-0.09 ms against 0.14-0.29 ms for PGS_GET_MANY
     * (7 buffers against 220 for the run). When the scan returns $4 rows it may have stopped short of hi: the
     * caller then sends PGS_GET_MANY for every key.
     * Every parameter is read through a one-row subquery ((SELECT $n)): the planner's estimates are then the same
     * with and without the values, so after its five trial executions PostgreSQL keeps the generic plan (EXPLAIN
     * EXECUTE: planning 0.015 ms) — with the bare parameters a custom plan's estimate stayed cheaper and every
     * execution was planned again (0.17-0.24 ms), which made the range read slower end to end (7ff3033). */
    "(SELECT key, value, CASE WHEN (SELECT $7::boolean) THEN metadata END, created_at, updated_at, expires_at, "
    "version FROM {T} WHERE namespace = (SELECT $1::text) AND key >= (SELECT $2::text) AND key <= (SELECT $3::text) "
    "ORDER BY key LIMIT (SELECT $4::bigint)) UNION ALL SELECT t.* FROM unnest((SELECT $5::text[])) AS u(k) CROSS "
    "JOIN LATERAL (SELECT key, value, CASE WHEN (SELECT $7::boolean) THEN metadata END, "
    "created_at, updated_at, expires_at, version FROM {T} WHERE namespace = (SELECT $1::text) AND key = u.k AND "
    "(expires_at IS NULL OR expires_at > (SELECT $6::bigint)) LIMIT 1) t",
    /* PGS_STORE_MANY ($1 a jsonb array of [namespace, key, now, expires or 0, value(, metadata)]: plain stores of
     * distinct keys that were queued one after another, postgres_group.c): each element upserted exactly as
     * PGS_STORE upserts one (metadata absent = SQL NULL, as PGS_STORE's NULL $4). Rows back: version, created_at
     * (PGS_STORE's columns), then namespace and key, one per element (the executor returns them in the elements'
     * order; the client checks the key). One statement instead of one each: the executor's start-up, the
     * ON CONFLICT projection's set-up and the protocol's per-statement messages are paid once per group. */
    "INSERT INTO {T} AS t (namespace, key, value, metadata, created_at, updated_at, expires_at, version, chg) "
    "SELECT e->>0, e->>1, e->4, e->5, (e->>2)::bigint, (e->>2)::bigint, nullif((e->>3)::bigint, 0), 1, txid_current() "
    "FROM jsonb_array_elements($1::jsonb) AS a(e) " UPSERT_SET "RETURNING version, created_at, namespace, key",
    /* PGS_GET_UPD ($1 ns, $2 key, $3 now): an update's read, PGS_GET's columns and the row's stamp (chg, ctid),
     * which its conditional write names (SAME_ROW) */
    "SELECT value, metadata, created_at, updated_at, expires_at, version, chg, ctid::text FROM {T} "
    "WHERE namespace = $1 AND key = $2 AND " LIVE(3),
    /* PGS_GET_TWO ($1 ns, $2 the first key, $3 now, $4 with metadata, $5 the second key): retrieve_many of two keys
     * (a window whose messages are all cached reads its head and summary item: thread_msgcache.h) as two
     * primary-key probes, PGS_GET_MANY's columns; cheaper for the server than unnest ... LATERAL for two keys */
    "SELECT 1::bigint AS ord, value, CASE WHEN $4::boolean THEN metadata END, created_at, updated_at, expires_at, "
    "version FROM {T} WHERE namespace = $1 AND key = $2 AND " LIVE(3) " UNION ALL "
    "SELECT 2, value, CASE WHEN $4::boolean THEN metadata END, created_at, updated_at, expires_at, version FROM {T} "
    "WHERE namespace = $1 AND key = $5 AND " LIVE(3),
};

/* An index name made from the table's: "<table>_<suffix>", or a cut table name plus a hash when that would pass
 * PostgreSQL's 63 bytes. */
static void index_name(char *out, size_t outlen, const char *table, const char *suffix) {
  size_t tl = strlen(table), sl = strlen(suffix);
  if (tl + 1 + sl <= 63) {
    snprintf(out, outlen, "%s_%s", table, suffix);
  } else {
    uint32_t h = 2166136261u;
    const char *p;
    for (p = table; *p; p++) h = (h ^ (unsigned char)*p) * 16777619u;
    snprintf(out, outlen, "%.*s_%08x_%s", (int)(63 - 10 - sl), table, (unsigned)h, suffix);
  }
}

/*
 * The schema, created or upgraded in one statement: a DO block that takes a transaction-level advisory lock per
 * schema (so that two programs opening at once do not race), creates the schema, the engram_schema table
 * that records each table's schema version, and, the first time, the items table, its indexes and the
 * tokenizer function. A table at an older version would be upgraded here step by step; a newer version
 * than this code knows refuses to open. S is the quoted schema, T the table name, Q the qualified name.
 */
static const char *const ddl_fmt =
    "DO $engram$\n"
    "DECLARE ver integer;\n"
    "BEGIN\n"
    "  PERFORM pg_advisory_xact_lock(1701277281, hashtext('S:{S}'));\n"
    "  IF to_regnamespace('{S}') IS NULL THEN\n"
    "    CREATE SCHEMA {S};\n"
    "  END IF;\n"
    "  IF to_regclass('{S}.engram_schema') IS NULL THEN\n"
    "    CREATE TABLE {S}.engram_schema (table_name text PRIMARY KEY, version integer NOT NULL,\n"
    "      updated_at timestamptz NOT NULL DEFAULT now());\n"
    "  END IF;\n"
    "  SELECT version INTO ver FROM {S}.engram_schema WHERE table_name = '{T}';\n"
    "  IF ver IS NULL THEN\n"
    "    CREATE TABLE IF NOT EXISTS {Q} (\n"
    "      namespace text COLLATE \"C\" NOT NULL DEFAULT '',\n"
    "      key text COLLATE \"C\" NOT NULL,\n"
    "      value jsonb NOT NULL,\n"
    "      metadata jsonb,\n"
    "      created_at bigint NOT NULL DEFAULT (extract(epoch FROM clock_timestamp()) * 1000)::bigint,\n"
    "      updated_at bigint NOT NULL DEFAULT (extract(epoch FROM clock_timestamp()) * 1000)::bigint,\n"
    "      expires_at bigint,\n"
    "      version bigint NOT NULL DEFAULT 1,\n"
    "      chg bigint NOT NULL DEFAULT txid_current(),\n"
    "      PRIMARY KEY (namespace, key));\n"
    "    CREATE INDEX IF NOT EXISTS {IE} ON {Q} (expires_at) WHERE expires_at IS NOT NULL;\n"
    /* Version 1 -> 2: the tsvector column and its GIN index leave the write path; chg (the writing transaction's
     * id) and the table of deleted keys let each process keep its own BM25 index current (postgres_text.c). */
    "  ELSIF ver = 1 THEN\n"
    "    DROP INDEX IF EXISTS {S}.{IS};\n"
    "    DROP INDEX IF EXISTS {S}.{IU};\n"
    "    ALTER TABLE {Q} DROP COLUMN IF EXISTS search, ADD COLUMN IF NOT EXISTS chg bigint NOT NULL DEFAULT 0;\n"
    "    ALTER TABLE {Q} ALTER COLUMN chg SET DEFAULT txid_current();\n"
    "  ELSIF ver > 2 THEN\n"
    "    RAISE EXCEPTION 'table {Q} has engram schema version %, newer than this engram understands (2)', ver;\n"
    "  END IF;\n"
    "  IF ver IS NULL OR ver < 2 THEN\n"
    "    CREATE INDEX IF NOT EXISTS {IC} ON {Q} (chg);\n"
    "    CREATE TABLE IF NOT EXISTS {G} (namespace text COLLATE \"C\", key text COLLATE \"C\", chg bigint NOT NULL,\n"
    "      at bigint NOT NULL DEFAULT (extract(epoch FROM clock_timestamp()) * 1000)::bigint);\n"
    "    CREATE INDEX IF NOT EXISTS {IG} ON {G} (chg);\n"
    /* Deleted keys (every DELETE, whoever runs it: one INSERT per statement from its transition table) and a
     * TRUNCATE (a NULL key) are recorded; an UPDATE that left chg as it was (another program's) gets it set. */
    "    CREATE OR REPLACE FUNCTION {S}.{FG}() RETURNS trigger LANGUAGE plpgsql AS $f$\n"
    "    BEGIN\n"
    "      INSERT INTO {G} (namespace, key, chg) SELECT namespace, key, txid_current() FROM engram_gone_rows;\n"
    "      RETURN NULL;\n"
    "    END $f$;\n"
    "    CREATE OR REPLACE FUNCTION {S}.{FT}() RETURNS trigger LANGUAGE plpgsql AS $f$\n"
    "    BEGIN\n"
    "      INSERT INTO {G} (namespace, key, chg) VALUES (NULL, NULL, txid_current());\n"
    "      RETURN NULL;\n"
    "    END $f$;\n"
    "    CREATE OR REPLACE FUNCTION {S}.{FC}() RETURNS trigger LANGUAGE plpgsql AS $f$\n"
    "    BEGIN\n"
    "      NEW.chg := txid_current();\n"
    "      RETURN NEW;\n"
    "    END $f$;\n"
    "    CREATE TRIGGER engram_gone AFTER DELETE ON {Q} REFERENCING OLD TABLE AS engram_gone_rows\n"
    "      FOR EACH STATEMENT EXECUTE FUNCTION {S}.{FG}();\n"
    "    CREATE TRIGGER engram_gone_truncate AFTER TRUNCATE ON {Q} FOR EACH STATEMENT EXECUTE FUNCTION {S}.{FT}();\n"
    "    CREATE TRIGGER engram_chg BEFORE UPDATE ON {Q} FOR EACH ROW WHEN (NEW.chg = OLD.chg)\n"
    "      EXECUTE FUNCTION {S}.{FC}();\n"
    "    COMMENT ON TABLE {Q} IS 'engram memory items, schema version 2 (see {S}.engram_schema)';\n"
    "    INSERT INTO {S}.engram_schema (table_name, version) VALUES ('{T}', 2)\n"
    "      ON CONFLICT (table_name) DO UPDATE SET version = 2, updated_at = now();\n"
    "  END IF;\n"
    "END\n"
    "$engram$";

/* Expands {S} {T} {Q} {G} and the object names {IS} {IE} {IU} {IC} {IG} {FG} {FT} {FC} in ddl_fmt. */
static char *build_ddl(const char *schema, const char *table, const char *qtable) {
  static const char *const names[][2] = {{"IS", "search"},   {"IE", "expires"}, {"IU", "unindexed"}, {"IC", "chg"},
                                         {"IG", "gone_chg"}, {"FG", "gone_fn"}, {"FT", "gone_truncate_fn"},
                                         {"FC", "chg_fn"}};
  enum { NN = sizeof names / sizeof names[0] };
  sb_t b = {NULL, 0, 0, 0};
  char qs[80], q[NN][136], g[128], qg[220];
  const char *p = ddl_fmt;
  size_t i;
  snprintf(qs, sizeof qs, "\"%s\"", schema);
  for (i = 0; i < NN; i++) {
    char n[128];
    index_name(n, sizeof n, table, names[i][1]);
    snprintf(q[i], sizeof q[i], "\"%s\"", n);
  }
  index_name(g, sizeof g, table, "gone");
  snprintf(qg, sizeof qg, "\"%s\".\"%s\"", schema, g);
  while (*p != '\0') {
    const char *open = strchr(p, '{'), *close;
    size_t len;
    if (open == NULL) {
      engram__pg_sb_add(&b, p, strlen(p));
      break;
    }
    close = strchr(open, '}');
    engram__pg_sb_add(&b, p, (size_t)(open - p));
    if (close == NULL) {
      engram__pg_sb_add(&b, open, strlen(open));
      break;
    }
    len = (size_t)(close - open - 1);
    if (len == 1 && open[1] == 'S') engram__pg_sb_add(&b, qs, strlen(qs));
    else if (len == 1 && open[1] == 'T') engram__pg_sb_add(&b, table, strlen(table));
    else if (len == 1 && open[1] == 'Q') engram__pg_sb_add(&b, qtable, strlen(qtable));
    else if (len == 1 && open[1] == 'G') engram__pg_sb_add(&b, qg, strlen(qg));
    else {
      for (i = 0; i < NN; i++)
        if (len == 2 && memcmp(open + 1, names[i][0], 2) == 0) break;
      if (i < NN) engram__pg_sb_add(&b, q[i], strlen(q[i]));
      else engram__pg_sb_add(&b, open, (size_t)(close - open + 1)); /* "{}" of the SQL itself */
    }
    p = close + 1;
  }
  return sb_take(&b);
}

int engram__pg_sql_build(pg_sql_t *sql, const char *schema, const char *table, const char *qtable,
                         uint64_t statement_timeout_ms, uint64_t connect_timeout_ms) {
  int i;
  sb_t b = {NULL, 0, 0, 0};
  char qs[80], g[128], qg[220];
  snprintf(qs, sizeof qs, "\"%s\"", schema);
  index_name(g, sizeof g, table, "gone");
  snprintf(qg, sizeof qg, "\"%s\".\"%s\"", schema, g);
  snprintf(sql->setup_arg, sizeof sql->setup_arg, "%llu", (unsigned long long)statement_timeout_ms);
  snprintf(sql->ddl_arg, sizeof sql->ddl_arg, "%llu",
           (unsigned long long)(statement_timeout_ms != 0 && connect_timeout_ms > statement_timeout_ms ? connect_timeout_ms
                                                                                                  : statement_timeout_ms));
  for (i = 0; i < PGS_N; i++) {
    sb_t s = {NULL, 0, 0, 0};
    if (stmt_text[i] == NULL) continue;
    sb_fmt(&s, stmt_text[i], qtable, qs, qg);
    if ((sql->stmt[i] = sb_take(&s)) == NULL) return ENGRAM_ENOMEM;
  }
  /* Identifiers are [A-Za-z0-9_] only, so the quoted name is safe inside a literal too. */
  sb_fmt(&b, "SELECT (SELECT count(*) FROM {T} WHERE " LIVE(1) "), pg_total_relation_size('{T}'::regclass)", qtable, qs, qg);
  if ((sql->stmt[PGS_INFO] = sb_take(&b)) == NULL) return ENGRAM_ENOMEM;
  if ((sql->ddl = build_ddl(schema, table, qtable)) == NULL) return ENGRAM_ENOMEM;
  if ((sql->setup = engram_strdup("SELECT set_config('statement_timeout', $1, false)")) == NULL) return ENGRAM_ENOMEM;
  if ((sql->gin = engram_strdup("SELECT gin_clean_pending_list($1::regclass)")) == NULL) return ENGRAM_ENOMEM;
  {
    char is[128];
    size_t n;
    index_name(is, sizeof is, table, "search");
    n = strlen(schema) + strlen(is) + 6;
    if ((sql->gin_index = engram_malloc(n)) == NULL) return ENGRAM_ENOMEM;
    snprintf(sql->gin_index, n, "\"%s\".\"%s\"", schema, is);
  }
  return 0;
}

void engram__pg_sql_free(pg_sql_t *sql) {
  int i;
  for (i = 0; i < PGS_N; i++) {
    engram_free(sql->stmt[i]);
    sql->stmt[i] = NULL;
  }
  engram_free(sql->ddl);
  engram_free(sql->setup);
  engram_free(sql->gin);
  engram_free(sql->gin_index);
  sql->ddl = sql->setup = sql->gin = sql->gin_index = NULL;
}

/* ---- Arrays ---- */

int engram__pg_text_array(const char *const *keys, const size_t *lens, size_t n, char **out) {
  sb_t b = {NULL, 0, 0, 0};
  size_t i, j;
  engram__pg_sb_add(&b, "{", 1);
  for (i = 0; i < n; i++) {
    const char *k = keys[i], *run = k;
    if (i > 0) engram__pg_sb_add(&b, ",", 1);
    engram__pg_sb_add(&b, "\"", 1);
    for (j = 0; j < lens[i]; j++) {
      if (k[j] != '"' && k[j] != '\\') continue;
      engram__pg_sb_add(&b, run, (size_t)(k + j - run));
      engram__pg_sb_add(&b, "\\", 1);
      run = k + j;
    }
    engram__pg_sb_add(&b, run, (size_t)(k + lens[i] - run));
    engram__pg_sb_add(&b, "\"", 1);
  }
  engram__pg_sb_add(&b, "}", 1);
  return (*out = sb_take(&b)) == NULL ? ENGRAM_ENOMEM : 0;
}

/* ---- Key ranges ---- */

/* Decodes the UTF-8 character that ends s[0..n): its code point and length. */
static unsigned last_char(const char *s, size_t n, size_t *clen) {
  size_t k = n;
  unsigned cp;
  unsigned char c;
  size_t i;
  while (k > 0 && ((unsigned char)s[k - 1] & 0xC0) == 0x80) k--;
  if (k == 0) {
    *clen = n;
    return 0;
  }
  k--;
  *clen = n - k;
  c = (unsigned char)s[k];
  if (c < 0x80) return c;
  cp = c >= 0xF0 ? c & 0x07 : c >= 0xE0 ? c & 0x0F : c & 0x1F;
  for (i = k + 1; i < n; i++) cp = (cp << 6) | ((unsigned char)s[i] & 0x3F);
  return cp;
}

static size_t put_utf8(char *o, unsigned cp) {
  if (cp < 0x80) {
    o[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    o[0] = (char)(0xC0 | (cp >> 6));
    o[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    o[0] = (char)(0xE0 | (cp >> 12));
    o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
  }
  o[0] = (char)(0xF0 | (cp >> 18));
  o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
  o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
  o[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}

/*
 * [prefix, successor): every key that starts with the glob's literal prefix sorts at or after the prefix and
 * before the prefix with its last character replaced by the next code point (UTF-8 byte order is code point
 * order, and PostgreSQL compares these columns bytewise under COLLATE "C"). The successor stays valid UTF-8:
 * surrogates are skipped and a last U+10FFFF is dropped in favour of its predecessor's successor.
 */
int engram__pg_range(const char *pattern, char **lo, char **hi) {
  size_t n;
  *lo = *hi = NULL;
  if (pattern == NULL || !engram_pattern_is_glob(pattern)) return 0; /* a substring can be anywhere */
  if (engram_pattern_prefix(pattern, lo) != 0) return ENGRAM_ENOMEM;
  if ((n = strlen(*lo)) == 0) {
    engram_free(*lo);
    *lo = NULL;
    return 0;
  }
  if ((*hi = engram_malloc(n + 4)) == NULL) {
    engram_free(*lo);
    *lo = NULL;
    return ENGRAM_ENOMEM;
  }
  memcpy(*hi, *lo, n);
  while (n > 0) {
    size_t clen;
    unsigned cp = last_char(*hi, n, &clen) + 1;
    if (cp == 0xD800) cp = 0xE000;
    n -= clen;
    if (cp <= 0x10FFFF) {
      n += put_utf8(*hi + n, cp);
      (*hi)[n] = '\0';
      return 0;
    }
  }
  engram_free(*hi); /* the prefix was all U+10FFFF: no upper bound */
  *hi = NULL;
  return 0;
}

/* ---- Messages ---- */

void engram__pg_scrub(char *out, size_t outlen, const char *msg, const char *password) {
  size_t o = 0, plen = password ? strlen(password) : 0;
  const char *p = msg ? msg : "";
  if (outlen == 0) return;
  while (*p != '\0' && o + 1 < outlen) {
    if (plen > 0 && strncmp(p, password, plen) == 0) {
      const char *stars = "***";
      while (*stars && o + 1 < outlen) out[o++] = *stars++;
      p += plen;
      continue;
    }
    /* libpq ends messages with a newline and indents hints with tabs: fold them into one line. */
    if (*p == '\n' || *p == '\t' || *p == '\r') {
      if (o > 0 && out[o - 1] != ' ' && p[1] != '\0') out[o++] = ' ';
      p++;
      continue;
    }
    out[o++] = *p++;
  }
  while (o > 0 && out[o - 1] == ' ') o--;
  out[o] = '\0';
}

void engram__pg_result_error(const PGresult *res, const char *password, char *out, size_t outlen) {
  char raw[600];
  const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
  const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
  const char *detail = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL) : NULL;
  if (primary == NULL) primary = res ? PQresultErrorMessage(res) : "no result";
  snprintf(raw, sizeof raw, "ERROR %s: %s%s%s", state ? state : "?????", primary, detail ? " (" : "",
           detail ? detail : "");
  if (detail) {
    size_t n = strlen(raw);
    if (n + 1 < sizeof raw) {
      raw[n] = ')';
      raw[n + 1] = '\0';
    }
  }
  engram__pg_scrub(out, outlen, raw, password);
}
