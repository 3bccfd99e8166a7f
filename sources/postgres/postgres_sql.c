/*
 * postgres_sql.c — the PostgreSQL source's SQL: the schema (a DO block that creates or upgrades it under an
 * advisory lock), the prepared statements, identifiers, the text-search vectors and queries, key ranges for
 * glob patterns, and the scrubbing of server messages (declared in postgres_sql.h). It works on the texts it is
 * given and uses no other file of the folder: the lowest layer, shared by the options, the connections and the
 * methods.
 *
 * Identifiers (schema, table) are validated ([A-Za-z_][A-Za-z0-9_]{0,62}) and always double-quoted, so they
 * can be written into SQL text; every value travels as a parameter. Text search uses engram_tokenize on the
 * client: a store sends the item's tokens as a tsvector literal ('tok':1,4 ...), and a search sends its
 * distinct tokens as an OR tsquery ('a' | 'b'), so PostgreSQL never re-parses the words and matches exactly
 * what every other source matches. A row written by another program without a vector (search IS NULL) gets
 * one at query time from engram_tsvector_v1, the same tokenizer in SQL (see docs/sources-postgres.md).
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

typedef struct {
  char *s;
  size_t n, cap;
  int oom;
} sb_t;

static void sb_add(sb_t *b, const char *s, size_t n) {
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

/* Appends fmt with every "{T}" replaced by the quoted table name and every "{S}" by the quoted schema. */
static void sb_fmt(sb_t *b, const char *fmt, const char *table, const char *schema) {
  const char *p = fmt, *at;
  while ((at = strchr(p, '{')) != NULL) {
    sb_add(b, p, (size_t)(at - p));
    if (at[1] == 'T' && at[2] == '}') sb_add(b, table, strlen(table));
    else if (at[1] == 'S' && at[2] == '}') sb_add(b, schema, strlen(schema));
    else {
      sb_add(b, at, 1);
      p = at + 1;
      continue;
    }
    p = at + 3;
  }
  sb_add(b, p, strlen(p));
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

static const char *const stmt_text[PGS_N] = {
    /* PGS_STORE ($1 ns, $2 key, $3 value, $4 metadata, $5 now, $6 expires, $7 tsvector) */
    "INSERT INTO {T} AS t (namespace, key, value, metadata, created_at, updated_at, expires_at, version, search) "
    "VALUES ($1, $2, $3::jsonb, $4::jsonb, $5, $5, $6, 1, $7::tsvector) "
    "ON CONFLICT (namespace, key) DO UPDATE SET value = EXCLUDED.value, metadata = EXCLUDED.metadata, "
    "created_at = CASE WHEN " EXPIRED_OLD " THEN EXCLUDED.created_at ELSE t.created_at END, "
    "updated_at = EXCLUDED.updated_at, expires_at = EXCLUDED.expires_at, "
    "version = CASE WHEN " EXPIRED_OLD " THEN 1 ELSE t.version + 1 END, search = EXCLUDED.search "
    "RETURNING version, created_at",
    /* PGS_STORE_NEW: the same, but only an expired row may be replaced (no row back = ENGRAM_EEXIST) */
    "INSERT INTO {T} AS t (namespace, key, value, metadata, created_at, updated_at, expires_at, version, search) "
    "VALUES ($1, $2, $3::jsonb, $4::jsonb, $5, $5, $6, 1, $7::tsvector) "
    "ON CONFLICT (namespace, key) DO UPDATE SET value = EXCLUDED.value, metadata = EXCLUDED.metadata, "
    "created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at, expires_at = EXCLUDED.expires_at, "
    "version = 1, search = EXCLUDED.search WHERE " EXPIRED_OLD " "
    "RETURNING version, created_at",
    /* PGS_STORE_IF (+ $8 the expected version; no row back = ENGRAM_ECONFLICT) */
    "UPDATE {T} SET value = $3::jsonb, metadata = $4::jsonb, updated_at = $5, expires_at = $6, version = version + 1, "
    "search = $7::tsvector WHERE namespace = $1 AND key = $2 AND version = $8 AND " LIVE(5) " "
    "RETURNING version, created_at",
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
    /* PGS_TEXT ($1 ns, $2 tsquery, $3 now, $4 limit or NULL, $5 offset, $6 ranges). A row written by another program may have
     * no vector (search IS NULL): its vector is computed here, from the same tokenizer in SQL; a partial index
     * finds such rows. */
    "SELECT " ROWCOLS ", ts_rank('{1,1,1,1}', coalesce(search, {S}.engram_tsvector_v1(key, value)), $2::tsquery) AS r "
    "FROM {T} WHERE namespace = $1 AND (search @@ $2::tsquery OR (search IS NULL AND "
    "{S}.engram_tsvector_v1(key, value) @@ $2::tsquery)) AND " LIVE(3) RANGES(6) " ORDER BY r DESC, key LIMIT $4 OFFSET $5",
    /* PGS_TEXT_COUNT: the same shape, without the values (the system fields stay: the ranges test them) */
    "SELECT key, NULL::jsonb, metadata, created_at, updated_at, expires_at, NULL::bigint, "
    "ts_rank('{1,1,1,1}', coalesce(search, {S}.engram_tsvector_v1(key, value)), $2::tsquery) AS r "
    "FROM {T} WHERE namespace = $1 AND (search @@ $2::tsquery OR (search IS NULL AND "
    "{S}.engram_tsvector_v1(key, value) @@ $2::tsquery)) AND " LIVE(3) RANGES(6) " ORDER BY r DESC, key LIMIT $4 OFFSET $5",
    /* PGS_CLEAR_NS ($1 ns) */
    "DELETE FROM {T} WHERE namespace = $1",
    /* PGS_CLEAR_ALL */
    "DELETE FROM {T}",
    /* PGS_SWEEP ($1 now, $2 limit) */
    "DELETE FROM {T} WHERE ctid = ANY (ARRAY(SELECT ctid FROM {T} WHERE expires_at IS NOT NULL AND expires_at <= $1 "
    "LIMIT $2))",
    /* PGS_INFO ($1 now): filled in by engram__pg_sql_build (it names the table in a literal too) */
    NULL,
    /* PGS_STORE_REPLICA ($1 ns, $2 key, $3 value, $4 metadata, $5 updated, $6 expires, $7 tsvector, $8 created,
     * $9 version): a copy written exactly as given (a tiered source's write-through or read repair) */
    "INSERT INTO {T} AS t (namespace, key, value, metadata, created_at, updated_at, expires_at, version, search) "
    "VALUES ($1, $2, $3::jsonb, $4::jsonb, $8, $5, $6, $9, $7::tsvector) "
    "ON CONFLICT (namespace, key) DO UPDATE SET value = EXCLUDED.value, metadata = EXCLUDED.metadata, "
    "created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at, expires_at = EXCLUDED.expires_at, "
    "version = EXCLUDED.version, search = EXCLUDED.search "
    "RETURNING version, created_at",
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
    /* The tokenizer of src/shared/text.c in SQL: key and string leaves, split at every ASCII byte that is not a letter
     * or a digit, ASCII letters folded, tokens cut to 64 bytes on a character boundary. */
    "    IF to_regprocedure('{S}.engram_tsvector_v1(text,jsonb)') IS NULL THEN\n"
    "    CREATE FUNCTION {S}.engram_tsvector_v1(k text, v jsonb) RETURNS tsvector\n"
    "    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $f$\n"
    "      SELECT coalesce(string_agg('''' || t || ''':' || least(p, 16383), ' '), '')::tsvector\n"
    "      FROM (SELECT CASE WHEN octet_length(w) <= 64 THEN w ELSE (SELECT left(w, n) FROM generate_series(64, 1, -1)\n"
    "                    AS n WHERE octet_length(left(w, n)) <= 64 LIMIT 1) END AS t, row_number() OVER () AS p\n"
    "            FROM (SELECT k AS s UNION ALL SELECT e #>> '{}' FROM jsonb_path_query(v, 'strict $.**') AS e\n"
    "                  WHERE jsonb_typeof(e) = 'string') AS leaves,\n"
    "                 regexp_split_to_table(translate(s, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz'),\n"
    "                                       '[\\x01-\\x2f\\x3a-\\x40\\x5b-\\x60\\x7b-\\x7f]+') AS w\n"
    "            WHERE w <> '') AS toks\n"
    "    $f$;\n"
    "    END IF;\n"
    "    CREATE TABLE IF NOT EXISTS {Q} (\n"
    "      namespace text COLLATE \"C\" NOT NULL DEFAULT '',\n"
    "      key text COLLATE \"C\" NOT NULL,\n"
    "      value jsonb NOT NULL,\n"
    "      metadata jsonb,\n"
    "      created_at bigint NOT NULL DEFAULT (extract(epoch FROM clock_timestamp()) * 1000)::bigint,\n"
    "      updated_at bigint NOT NULL DEFAULT (extract(epoch FROM clock_timestamp()) * 1000)::bigint,\n"
    "      expires_at bigint,\n"
    "      version bigint NOT NULL DEFAULT 1,\n"
    "      search tsvector,\n"
    "      PRIMARY KEY (namespace, key));\n"
    "    CREATE INDEX IF NOT EXISTS {IS} ON {Q} USING gin (search);\n"
    "    CREATE INDEX IF NOT EXISTS {IE} ON {Q} (expires_at) WHERE expires_at IS NOT NULL;\n"
    "    CREATE INDEX IF NOT EXISTS {IU} ON {Q} (namespace) WHERE search IS NULL;\n"
    "    COMMENT ON TABLE {Q} IS 'engram memory items, schema version 1 (see {S}.engram_schema)';\n"
    "    INSERT INTO {S}.engram_schema (table_name, version) VALUES ('{T}', 1);\n"
    "  ELSIF ver > 1 THEN\n"
    "    RAISE EXCEPTION 'table {Q} has engram schema version %, newer than this engram understands (1)', ver;\n"
    "  END IF;\n"
    "END\n"
    "$engram$";

/* Expands {S} {T} {Q} {IS} {IE} {IU} in ddl_fmt. */
static char *build_ddl(const char *schema, const char *table, const char *qtable) {
  sb_t b = {NULL, 0, 0, 0};
  char qs[80], is[128], ie[128], iu[128], qis[136], qie[136], qiu[136];
  const char *p = ddl_fmt;
  snprintf(qs, sizeof qs, "\"%s\"", schema);
  index_name(is, sizeof is, table, "search");
  index_name(ie, sizeof ie, table, "expires");
  snprintf(qis, sizeof qis, "\"%s\"", is);
  snprintf(qie, sizeof qie, "\"%s\"", ie);
  index_name(iu, sizeof iu, table, "unindexed");
  snprintf(qiu, sizeof qiu, "\"%s\"", iu);
  while (*p != '\0') {
    const char *open = strchr(p, '{'), *close;
    if (open == NULL) {
      sb_add(&b, p, strlen(p));
      break;
    }
    close = strchr(open, '}');
    sb_add(&b, p, (size_t)(open - p));
    if (close == NULL) {
      sb_add(&b, open, strlen(open));
      break;
    }
    if (close - open == 2 && open[1] == 'S') sb_add(&b, qs, strlen(qs));
    else if (close - open == 2 && open[1] == 'T') sb_add(&b, table, strlen(table));
    else if (close - open == 2 && open[1] == 'Q') sb_add(&b, qtable, strlen(qtable));
    else if (close - open == 3 && open[1] == 'I' && open[2] == 'S') sb_add(&b, qis, strlen(qis));
    else if (close - open == 3 && open[1] == 'I' && open[2] == 'E') sb_add(&b, qie, strlen(qie));
    else if (close - open == 3 && open[1] == 'I' && open[2] == 'U') sb_add(&b, qiu, strlen(qiu));
    else sb_add(&b, open, (size_t)(close - open + 1)); /* "{}" of the SQL itself */
    p = close + 1;
  }
  return sb_take(&b);
}

int engram__pg_sql_build(pg_sql_t *sql, const char *schema, const char *table, const char *qtable,
                         uint64_t statement_timeout_ms) {
  int i;
  sb_t b = {NULL, 0, 0, 0};
  char qs[80];
  snprintf(qs, sizeof qs, "\"%s\"", schema);
  snprintf(sql->setup_arg, sizeof sql->setup_arg, "%llu", (unsigned long long)statement_timeout_ms);
  for (i = 0; i < PGS_N; i++) {
    sb_t s = {NULL, 0, 0, 0};
    if (stmt_text[i] == NULL) continue;
    sb_fmt(&s, stmt_text[i], qtable, qs);
    if ((sql->stmt[i] = sb_take(&s)) == NULL) return ENGRAM_ENOMEM;
  }
  /* Identifiers are [A-Za-z0-9_] only, so the quoted name is safe inside a literal too. */
  sb_fmt(&b, "SELECT (SELECT count(*) FROM {T} WHERE " LIVE(1) "), pg_total_relation_size('{T}'::regclass)", qtable, qs);
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

/* ---- Text search ---- */

typedef struct {
  uint32_t off, len, pos;
} tok_t;

typedef struct {
  sb_t arena; /* tokens, NUL-separated */
  tok_t *v;
  size_t n, cap;
  uint32_t pos;
  const char *base; /* arena.s, fixed once collection ends */
} toks_t;

static int collect_token(const char *tok, size_t len, void *ud) {
  toks_t *t = ud;
  if (t->n == t->cap) {
    size_t cap = t->cap ? t->cap * 2 : 32;
    tok_t *nv = engram_realloc(t->v, cap * sizeof *nv);
    if (nv == NULL) return ENGRAM_ENOMEM;
    t->v = nv;
    t->cap = cap;
  }
  t->v[t->n].off = (uint32_t)t->arena.n;
  t->v[t->n].len = (uint32_t)len;
  t->v[t->n].pos = ++t->pos;
  sb_add(&t->arena, tok, len + 1); /* with its NUL */
  if (t->arena.oom) return ENGRAM_ENOMEM;
  t->n++;
  return 0;
}

static _Thread_local const char *sort_base; /* qsort has no context argument */

static int cmp_tok(const void *a, const void *b) {
  const tok_t *x = a, *y = b;
  int r = strcmp(sort_base + x->off, sort_base + y->off);
  if (r != 0) return r;
  return (x->pos > y->pos) - (x->pos < y->pos);
}

/* Tokens of text, sorted (then by position); the caller frees t->v and t->arena.s. */
static int tokenize_sorted(const char *text, toks_t *t) {
  int rc;
  memset(t, 0, sizeof *t);
  rc = engram_tokenize(text, strlen(text), collect_token, t);
  if (rc == 0 && t->arena.oom) rc = ENGRAM_ENOMEM;
  if (rc == 0 && t->n > 1) {
    sort_base = t->arena.s;
    qsort(t->v, t->n, sizeof *t->v, cmp_tok);
  }
  return rc;
}

/* PostgreSQL's limits: positions 1..16383, 255 positions per lexeme, 1 MB of lexeme text per tsvector. */
#define TSV_MAXPOS 16383u
#define TSV_NPOS 255u
#define TSV_BYTES 1000000u

/* A position as decimal digits, after a comma unless first; returns the length. (snprintf was 41% of building a
 * tsvector: a store's client CPU, on the 2 cores the server shares.) */
static int fmt_pos(char *out, uint32_t p, int comma) {
  char rev[10];
  int n = 0, k = 0;
  do {
    rev[n++] = (char)('0' + p % 10u);
    p /= 10u;
  } while (p != 0);
  if (comma) out[k++] = ',';
  while (n > 0) out[k++] = rev[--n];
  return k;
}

int engram__pg_tsvector(const char *key, const cJSON *value, char **out) {
  char *text = engram_text_of(key, value);
  toks_t t;
  sb_t b = {NULL, 0, 0, 0};
  size_t i = 0, lex_bytes = 0;
  int rc;
  *out = NULL;
  if (text == NULL) return ENGRAM_ENOMEM;
  rc = tokenize_sorted(text, &t);
  engram_free(text);
  if (rc != 0) {
    engram_free(t.v);
    engram_free(t.arena.s);
    return rc;
  }
  sb_add(&b, "", 0);
  while (i < t.n) {
    const char *tok = t.arena.s + t.v[i].off;
    size_t j = i, npos = 0;
    uint32_t last = 0;
    char num[16];
    while (j < t.n && strcmp(t.arena.s + t.v[j].off, tok) == 0) j++;
    if (lex_bytes + t.v[i].len <= TSV_BYTES) {
      lex_bytes += t.v[i].len;
      if (b.n > 0) sb_add(&b, " ", 1);
      sb_add(&b, "'", 1);
      sb_add(&b, tok, t.v[i].len);
      sb_add(&b, "':", 2);
      for (; i < j && npos < TSV_NPOS; i++) {
        uint32_t p = t.v[i].pos > TSV_MAXPOS ? TSV_MAXPOS : t.v[i].pos;
        int n;
        if (p == last) continue;
        n = fmt_pos(num, p, npos != 0);
        sb_add(&b, num, (size_t)n);
        last = p;
        npos++;
      }
    }
    i = j;
  }
  engram_free(t.v);
  engram_free(t.arena.s);
  if ((*out = sb_take(&b)) == NULL) return ENGRAM_ENOMEM;
  return 0;
}

int engram__pg_tsquery(const char *text, char **out) {
  toks_t t;
  sb_t b = {NULL, 0, 0, 0};
  size_t i;
  int rc = tokenize_sorted(text, &t);
  *out = NULL;
  for (i = 0; rc == 0 && i < t.n; i++) {
    const char *tok = t.arena.s + t.v[i].off;
    if (i > 0 && strcmp(tok, t.arena.s + t.v[i - 1].off) == 0) continue;
    if (b.n > 0) sb_add(&b, " | ", 3);
    sb_add(&b, "'", 1);
    sb_add(&b, tok, t.v[i].len);
    sb_add(&b, "'", 1);
  }
  engram_free(t.v);
  engram_free(t.arena.s);
  if (rc != 0 || b.oom) {
    engram_free(b.s);
    return rc ? rc : ENGRAM_ENOMEM;
  }
  *out = b.s; /* NULL when there was no token */
  return 0;
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
