/*
 * postgres_opts.c — the PostgreSQL source's options (postgres_opts.h): names checked against the one list of
 * known names, numbers, booleans and strings read with the core's option readers (engram_opt_*, so a mistake is
 * worded as on every source), identifiers validated (postgres_sql.c), and the connection string — a
 * postgresql:// URI or key=value pairs — parsed with PQconninfoParse into the keyword/value arrays that
 * PQconnectStartParams takes. The password is kept only to be scrubbed from messages; what messages and info
 * show is the host and port.
 */
#include <stdio.h>
#include <string.h>

#include "postgres_opts.h"

/* Every option open() accepts; any other name is refused with this list (engram_opt_check_names). */
static const char *const known_options[] = {
    "conninfo",         "schema",          "table",           "connections", "statement_timeout_ms",
    "connect_timeout_ms", "wait_for_connection", "sweep_interval_ms", "max_value_bytes", "reconnect_max_ms",
    "gin_cleanup",      "text_index_items", NULL};

/* A schema or table name: a plain identifier, so that it can be written (double-quoted) into SQL text. */
static int opt_ident(const cJSON *options, const char *name, const char *def, char **out, char *err, size_t errlen) {
  const char *s;
  int rc = engram_opt_string(options, name, def, 0, &s, err, errlen);
  if (rc != 0) return rc;
  if (!engram__pg_ident_ok(s)) {
    snprintf(err, errlen, "option \"%s\": \"%.80s\" is not a plain identifier ([A-Za-z_][A-Za-z0-9_]{0,62})", name, s);
    return ENGRAM_EINVAL;
  }
  if ((*out = engram_strdup(s)) == NULL) {
    snprintf(err, errlen, "out of memory");
    return ENGRAM_ENOMEM;
  }
  return 0;
}

/* Copies a libpq parse error into out with every double-quoted part blanked: it may quote a piece of the
 * connection string, which may be a password. */
static void blank_quoted(char *out, size_t outlen, const char *s) {
  size_t o = 0;
  int in = 0;
  for (; *s != '\0' && o + 5 < outlen; s++) {
    if (*s == '"') {
      if (!in) {
        memcpy(out + o, "\"...", 4);
        o += 4;
      } else {
        out[o++] = '"';
      }
      in = !in;
      continue;
    }
    if (!in) out[o++] = *s;
  }
  out[o] = '\0';
}

static int add_param(pg_t *pg, size_t *n, const char *k, const char *v) {
  if ((pg->kw[*n] = engram_strdup(k)) == NULL || (pg->val[*n] = engram_strdup(v)) == NULL) return ENGRAM_ENOMEM;
  (*n)++;
  return 0;
}

/* Parses conninfo (a URI or key=value text) into the parameters PQconnectStartParams takes. */
static int parse_conninfo(pg_t *pg, const char *conninfo, char *err, size_t errlen) {
  char *perr = NULL;
  PQconninfoOption *opts = PQconninfoParse(conninfo, &perr), *o;
  size_t n = 0, count = 0;
  int has_enc = 0, rc = 0;
  const char *host = NULL, *hostaddr = NULL, *port = NULL, *db = NULL, *user = NULL;
  char where[300];
  if (opts == NULL) {
    char m[256];
    blank_quoted(m, sizeof m, perr ? perr : "out of memory");
    PQfreemem(perr);
    engram__pg_scrub(err, errlen, m, NULL);
    {
      char full[300];
      snprintf(full, sizeof full, "option \"conninfo\": not a libpq connection string or URI (%s)", err);
      snprintf(err, errlen, "%s", full);
    }
    return ENGRAM_EINVAL;
  }
  for (o = opts; o->keyword != NULL; o++) count++;
  pg->kw = engram_calloc(count + 3, sizeof *pg->kw);
  pg->val = engram_calloc(count + 3, sizeof *pg->val);
  if (pg->kw == NULL || pg->val == NULL) rc = ENGRAM_ENOMEM;
  for (o = opts; rc == 0 && o->keyword != NULL; o++) {
    if (o->val == NULL || o->val[0] == '\0') continue;
    if (strcmp(o->keyword, "password") == 0 && (pg->password = engram_strdup(o->val)) == NULL) rc = ENGRAM_ENOMEM;
    if (strcmp(o->keyword, "host") == 0) host = o->val;
    if (strcmp(o->keyword, "hostaddr") == 0) hostaddr = o->val;
    if (strcmp(o->keyword, "port") == 0) port = o->val;
    if (strcmp(o->keyword, "dbname") == 0) db = o->val;
    if (strcmp(o->keyword, "user") == 0) user = o->val;
    if (strcmp(o->keyword, "client_encoding") == 0) has_enc = 1;
    if (rc == 0) rc = add_param(pg, &n, o->keyword, o->val);
  }
  if (rc == 0 && !has_enc) rc = add_param(pg, &n, "client_encoding", "UTF8");
  if (rc == 0) rc = add_param(pg, &n, "fallback_application_name", "engram");
  if (rc == 0) {
    const char *h = host ? host : hostaddr ? hostaddr : "(default socket)";
    snprintf(where, sizeof where, "host %s port %s", h, port ? port : "5432");
    if ((pg->where = engram_strdup(where)) == NULL || (pg->host = engram_strdup(h)) == NULL ||
        (pg->port = engram_strdup(port ? port : "5432")) == NULL || (pg->dbname = engram_strdup(db ? db : "")) == NULL ||
        (pg->user = engram_strdup(user ? user : "")) == NULL)
      rc = ENGRAM_ENOMEM;
  }
  PQconninfoFree(opts);
  if (rc != 0) snprintf(err, errlen, "out of memory");
  return rc;
}

int engram__pg_parse_options(pg_t *pg, const cJSON *options, char *err, size_t errlen) {
  const cJSON *v;
  const char *conninfo;
  uint64_t nconn;
  int rc;
  if ((rc = engram_opt_check_names(options, known_options, err, errlen)) != 0 ||
      (rc = opt_ident(options, "schema", "public", &pg->schema, err, errlen)) != 0 ||
      (rc = opt_ident(options, "table", "engram_items", &pg->table, err, errlen)) != 0 ||
      (rc = engram_opt_uint(options, "connections", 1, 1, 64, &nconn, err, errlen)) != 0 ||
      (rc = engram_opt_uint(options, "statement_timeout_ms", 0, 0, 86400000, &pg->statement_timeout_ms, err, errlen)) != 0 ||
      (rc = engram_opt_uint(options, "connect_timeout_ms", 5000, 1, 600000, &pg->connect_timeout_ms, err, errlen)) != 0 ||
      (rc = engram_opt_uint(options, "sweep_interval_ms", 60000, 0, 86400000, &pg->sweep_interval_ms, err, errlen)) != 0 ||
      (rc = engram_opt_uint(options, "max_value_bytes", 16u << 20, 0, 1u << 30, &pg->max_value_bytes, err, errlen)) != 0 ||
      (rc = engram_opt_uint(options, "reconnect_max_ms", 1000, 10, 600000, &pg->reconnect_max_ms, err, errlen)) != 0 ||
      (rc = engram_opt_bool(options, "wait_for_connection", 0, &pg->wait_for_connection, err, errlen)) != 0 ||
      (rc = engram_opt_bool(options, "gin_cleanup", 1, &pg->gin_cleanup, err, errlen)) != 0 ||
      (rc = engram_opt_uint(options, "text_index_items", 2000000, 0, UINT32_MAX, &pg->text_index_items, err,
                            errlen)) != 0)
    return rc;
  pg->nconn = (int)nconn;
  /* conninfo "" means libpq's defaults and PG* environment, as when the option is absent. */
  v = cJSON_GetObjectItemCaseSensitive(options, "conninfo");
  if (cJSON_IsString(v) && v->valuestring[0] == '\0') conninfo = "";
  else if ((rc = engram_opt_string(options, "conninfo", "", 0, &conninfo, err, errlen)) != 0) return rc;
  if ((rc = parse_conninfo(pg, conninfo, err, errlen)) != 0) return rc;
  {
    size_t n = strlen(pg->schema) + strlen(pg->table) + 6;
    if ((pg->qtable = engram_malloc(n)) == NULL) {
      snprintf(err, errlen, "out of memory");
      return ENGRAM_ENOMEM;
    }
    snprintf(pg->qtable, n, "\"%s\".\"%s\"", pg->schema, pg->table);
  }
  return 0;
}
