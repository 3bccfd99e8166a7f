/*
 * postgres_sql.h — the PostgreSQL source's SQL and text helpers (postgres_sql.c): the prepared statements
 * (pg_stmt_t) and the schema DDL built for one schema and table (pg_sql_t), identifier checks, text[] literals,
 * key ranges of glob prefixes, and the scrubbing of server and libpq messages.
 *
 * The lowest file of sources/postgres/: pure text work on what it is given, using nothing of the folder's other
 * files, so every one of them may use it.
 */
#ifndef ENGRAM_POSTGRES_SQL_H
#define ENGRAM_POSTGRES_SQL_H

#include <libpq-fe.h>
#include <stdint.h>

#include "engram/source.h"

/* A growing NUL-terminated string (the statements' text, an append's JSON parameters): oom is set, and the text
 * kept as it was, when a growth fails; the owner frees s. */
typedef struct {
  char *s;
  size_t n, cap;
  int oom;
} engram__pg_sb_t;
void engram__pg_sb_add(engram__pg_sb_t *b, const char *s, size_t n);
/* Appends the JSON string literal of s (quotes, backslashes and control characters escaped; other bytes as they are). */
void engram__pg_sb_json_str(engram__pg_sb_t *b, const char *s);

#define PG_SCHEMA_VERSION 2
/* How long the table of deleted keys (<table>_gone) keeps a key: a text index not synced for half as long is built
 * again (postgres_text.c). Milliseconds, as SQL text. */
#define PG_GONE_KEEP_MS "3600000"

/* Prepared statements (engram__pg_sql_build writes their text). */
typedef enum {
  PGS_STORE = 0,  /* upsert */
  PGS_STORE_NEW,  /* create-only upsert: replaces only an expired row */
  PGS_STORE_IF,   /* update conditional on the version */
  PGS_GET,
  PGS_EXISTS,
  PGS_DELETE,
  PGS_COUNT,
  PGS_SCAN,       /* full rows of a namespace in key order, from a key range start */
  PGS_SCAN_R,     /* ... with an upper bound */
  PGS_SCANM,      /* key and metadata only */
  PGS_SCANM_R,
  PGS_LIST,       /* keys only */
  PGS_LIST_R,
  PGS_LIST_ALL,   /* (namespace, key) of every namespace */
  PGS_TEXT_SYNC,  /* the text index's changes since a transaction id (postgres_text.c) */
  PGS_TEXT_BUILD, /* ... every row of a namespace */
  PGS_TEXT_FETCH, /* the rows of ranked keys */
  PGS_CLEAR_NS,
  PGS_CLEAR_ALL,
  PGS_SWEEP,
  PGS_INFO,
  PGS_STORE_REPLICA, /* store ENGRAM_REQ_REPLICA: the row exactly as given (version, timestamps) */
  PGS_APPEND_IF,  /* an update's conditional head write with its writes (postgres_append.c) */
  PGS_APPEND_NEW, /* ... the head created (create-only) */
  PGS_APPEND_IF_KEEP,  /* PGS_APPEND_IF without deletes */
  PGS_APPEND_NEW_KEEP, /* PGS_APPEND_NEW without deletes */
  PGS_GET_MANY,   /* retrieve_many: the live rows of a text[] of keys, each with its 1-based place in it */
  PGS_GET_RUN,    /* retrieve_many with a run of neighbouring keys: one key-range scan for the run, probes for the rest */
  PGS_STORE_MANY, /* plain stores of distinct keys queued one after another, as one statement (postgres_group.c) */
  PGS_GET_UPD,    /* an update's read: PGS_GET plus the row's stamp (chg, ctid) its conditional write names */
  PGS_GET_TWO,    /* retrieve_many of two keys: two primary-key probes, PGS_GET_MANY's columns */
  PGS_N,
  /* Not prepared: */
  PGS_SQL = 100,  /* ad-hoc SQL text (op->sql), with parameters */
  PGS_PREPARE     /* prepares statement op->index */
} pg_stmt_t;

/* The SQL of one source instance (engram_malloc'd texts). */
typedef struct pg_sql_s {
  char *stmt[PGS_N];  /* the prepared statements' text */
  char *ddl;          /* the schema's DO block */
  char *setup;        /* session settings, $1 = setup_arg */
  char setup_arg[24]; /* statement_timeout in ms, as text */
  char ddl_arg[24];   /* statement_timeout for the set-up, as text: at least connect_timeout_ms */
  char *gin;          /* gin_clean_pending_list($1) */
  char *gin_index;    /* $1 of gin: the search index's qualified name */
} pg_sql_t;

/* Non-zero when s is a plain identifier ([A-Za-z_][A-Za-z0-9_]{0,62}). */
int engram__pg_ident_ok(const char *s);
/* Builds every text of sql for the table qtable ("schema"."table"); 0 or ENGRAM_ENOMEM (then free it). The
 * set-up of a connection (the schema's DO block and the prepared statements) runs under
 * max(statement_timeout_ms, connect_timeout_ms) (none when statement_timeout_ms is 0): it creates tables and
 * indexes and may wait for another program's advisory lock, so a statement timeout meant for calls (100 ms, say)
 * failed the opening itself on a busy server. */
int engram__pg_sql_build(pg_sql_t *sql, const char *schema, const char *table, const char *qtable,
                         uint64_t statement_timeout_ms, uint64_t connect_timeout_ms);
void engram__pg_sql_free(pg_sql_t *sql);
/* The text[] literal of n keys ({"a","b\"c"}); 0 or ENGRAM_ENOMEM. */
int engram__pg_text_array(const char *const *keys, const size_t *lens, size_t n, char **out);
/* Key range of a glob's literal prefix: lo (NULL: none) and hi (NULL: none), valid UTF-8. */
int engram__pg_range(const char *pattern, char **lo, char **hi);
/* Copies msg into out (first lines, trimmed), with every occurrence of password (NULL: none) replaced by "***". */
void engram__pg_scrub(char *out, size_t outlen, const char *msg, const char *password);
/* The message of a failed result ("ERROR 23505: ..."), scrubbed of password. */
void engram__pg_result_error(const PGresult *res, const char *password, char *out, size_t outlen);

#endif
