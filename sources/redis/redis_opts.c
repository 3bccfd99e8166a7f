/*
 * redis_opts.c — the redis source's options: a redis:// URL or host/port/db/username/password, the key prefix,
 * timeouts, windows and retry limits. Unknown options are refused by name. Messages never quote the URL or the
 * password.
 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "redis_src.h"

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* A percent-decoded copy of s[0..n), or NULL (ENOMEM, or a bad escape: *bad set). */
static char *decode(const char *s, size_t n, int *bad) {
  char *out = engram_malloc(n + 1);
  size_t i, k = 0;
  if (out == NULL) return NULL;
  for (i = 0; i < n; i++) {
    if (s[i] == '%') {
      if (i + 2 >= n || hexval((unsigned char)s[i + 1]) < 0 || hexval((unsigned char)s[i + 2]) < 0) {
        *bad = 1;
        engram_free(out);
        return NULL;
      }
      out[k++] = (char)(hexval((unsigned char)s[i + 1]) * 16 + hexval((unsigned char)s[i + 2]));
      i += 2;
    } else {
      out[k++] = s[i];
    }
  }
  out[k] = '\0';
  return out;
}

void engram__redis_endpoint_free(engram__redis_endpoint_t *e) {
  engram_free(e->host);
  if (e->username) {
    memset(e->username, 0, strlen(e->username));
    engram_free(e->username);
  }
  if (e->password) {
    memset(e->password, 0, strlen(e->password));
    engram_free(e->password);
  }
  memset(e, 0, sizeof *e);
}

/* redis://[[username][:password]@]host[:port][/db]. Messages never quote the URL (it may hold a password). */
static int parse_url(const char *url, engram__redis_endpoint_t *e, char *err, size_t errlen) {
  const char *p, *auth_end, *at, *host, *host_end, *port = NULL;
  int bad = 0;
  static const char form[] = "option \"url\": expected redis://[[username][:password]@]host[:port][/db]";
  if (strncmp(url, "redis://", 8) != 0) {
    snprintf(err, errlen, "%s (only the redis:// scheme is supported)", form);
    return ENGRAM_EINVAL;
  }
  p = url + 8;
  auth_end = p + strcspn(p, "/?#");
  at = NULL;
  for (host = p; host < auth_end; host++)
    if (*host == '@') at = host;
  if (at != NULL) {
    const char *colon = memchr(p, ':', (size_t)(at - p));
    if (colon != NULL) {
      if (colon > p && (e->username = decode(p, (size_t)(colon - p), &bad)) == NULL) goto fail;
      if ((e->password = decode(colon + 1, (size_t)(at - colon - 1), &bad)) == NULL) goto fail;
      if (e->password[0] == '\0') {
        engram_free(e->password);
        e->password = NULL;
      }
    } else if (at > p) {
      /* A lone userinfo is the password (redis://secret@host), as redis-cli reads it. */
      if ((e->password = decode(p, (size_t)(at - p), &bad)) == NULL) goto fail;
    }
    p = at + 1;
  }
  if (*p == '[') {
    host = p + 1;
    host_end = memchr(host, ']', (size_t)(auth_end - host));
    if (host_end == NULL) goto form_fail;
    if (host_end + 1 < auth_end) {
      if (host_end[1] != ':') goto form_fail;
      port = host_end + 2;
    }
  } else {
    host = p;
    host_end = memchr(host, ':', (size_t)(auth_end - host));
    if (host_end != NULL) port = host_end + 1;
    else host_end = auth_end;
  }
  if (host_end == host) goto form_fail;
  if ((e->host = engram_strndup(host, (size_t)(host_end - host))) == NULL) goto fail;
  if (port != NULL) {
    long v = 0;
    const char *q;
    if (port == auth_end) goto form_fail;
    for (q = port; q < auth_end; q++) {
      if (!isdigit((unsigned char)*q)) goto form_fail;
      v = v * 10 + (*q - '0');
      if (v > 65535) goto form_fail;
    }
    if (v == 0) goto form_fail;
    e->port = (int)v;
  }
  if (*auth_end == '/') {
    const char *q = auth_end + 1;
    long v = 0;
    for (; *q && *q != '?' && *q != '#'; q++) {
      if (!isdigit((unsigned char)*q)) goto form_fail;
      v = v * 10 + (*q - '0');
      if (v > 100000) goto form_fail;
    }
    e->db = (int)v;
  }
  return 0;
form_fail:
  snprintf(err, errlen, "%s", form);
  return ENGRAM_EINVAL;
fail:
  if (bad) {
    snprintf(err, errlen, "option \"url\": bad %%-escape in the user information");
    return ENGRAM_EINVAL;
  }
  snprintf(err, errlen, "out of memory");
  return ENGRAM_ENOMEM;
}

static int opt_uint(const cJSON *options, const char *name, uint64_t def, uint64_t min, uint64_t max, uint64_t *out,
                    char *err, size_t errlen) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(options, name);
  *out = def;
  if (v == NULL) return 0;
  if (!cJSON_IsNumber(v) || v->valuedouble < (double)min || v->valuedouble > (double)max ||
      v->valuedouble != (double)(uint64_t)v->valuedouble) {
    snprintf(err, errlen, "option \"%s\": must be an integer in %llu..%llu", name, (unsigned long long)min,
             (unsigned long long)max);
    return ENGRAM_EINVAL;
  }
  *out = (uint64_t)v->valuedouble;
  return 0;
}

static int opt_bool(const cJSON *options, const char *name, int *out, char *err, size_t errlen) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(options, name);
  *out = 0;
  if (v == NULL) return 0;
  if (!cJSON_IsBool(v)) {
    snprintf(err, errlen, "option \"%s\": must be true or false", name);
    return ENGRAM_EINVAL;
  }
  *out = cJSON_IsTrue(v);
  return 0;
}

static int opt_str(const cJSON *options, const char *name, const char **out, char *err, size_t errlen) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(options, name);
  *out = NULL;
  if (v == NULL) return 0;
  if (!cJSON_IsString(v) || v->valuestring[0] == '\0') {
    snprintf(err, errlen, "option \"%s\": must be a non-empty string", name);
    return ENGRAM_EINVAL;
  }
  *out = v->valuestring;
  return 0;
}

static const char *const known_options[] = {
    "url", "host", "port", "db", "username", "password", "prefix", "connect_timeout_ms", "max_inflight",
    "wait_for_connection", "lazy_connect", "reconnect_min_ms", "reconnect_max_ms", "max_value_bytes",
    "update_retries", "scan_batch", "store_batch", "search_cache_items", NULL};

int engram__redis_parse_options(engram__redis_t *r, const cJSON *options, engram__redis_endpoint_t *e, char *err, size_t errlen) {
  const cJSON *k;
  const char *url, *host, *user, *pass, *prefix;
  uint64_t port, db, cto, maxin, rmin, rmax, mvb, retries, batch, sbatch, scache;
  int i, rc;
  for (k = options->child; k != NULL; k = k->next) {
    for (i = 0; known_options[i] != NULL && strcmp(known_options[i], k->string) != 0; i++) {
    }
    if (known_options[i] == NULL) {
      snprintf(err, errlen, "unknown option \"%.60s\" (known: url, host, port, db, username, password, prefix, "
               "connect_timeout_ms, max_inflight, wait_for_connection, lazy_connect, reconnect_min_ms, "
               "reconnect_max_ms, max_value_bytes, update_retries, scan_batch, store_batch, search_cache_items)",
               k->string);
      return ENGRAM_EINVAL;
    }
  }
  if ((rc = opt_str(options, "url", &url, err, errlen)) || (rc = opt_str(options, "host", &host, err, errlen)) ||
      (rc = opt_str(options, "username", &user, err, errlen)) ||
      (rc = opt_str(options, "password", &pass, err, errlen)) || (rc = opt_str(options, "prefix", &prefix, err, errlen)) ||
      (rc = opt_uint(options, "port", 6379, 1, 65535, &port, err, errlen)) ||
      (rc = opt_uint(options, "db", 0, 0, 100000, &db, err, errlen)) ||
      (rc = opt_uint(options, "connect_timeout_ms", 2000, 1, 3600000, &cto, err, errlen)) ||
      (rc = opt_uint(options, "max_inflight", 1000, 1, 1000000, &maxin, err, errlen)) ||
      (rc = opt_uint(options, "reconnect_min_ms", 50, 1, 3600000, &rmin, err, errlen)) ||
      (rc = opt_uint(options, "reconnect_max_ms", 2000, 1, 3600000, &rmax, err, errlen)) ||
      (rc = opt_uint(options, "max_value_bytes", 16u << 20, 0, 512u << 20, &mvb, err, errlen)) ||
      (rc = opt_uint(options, "update_retries", 16, 1, 1000000, &retries, err, errlen)) ||
      (rc = opt_uint(options, "scan_batch", 500, 1, 100000, &batch, err, errlen)) ||
      (rc = opt_uint(options, "store_batch", 64, 1, 1000, &sbatch, err, errlen)) ||
      (rc = opt_uint(options, "search_cache_items", 250000, 0, UINT32_MAX - 1, &scache, err, errlen)) ||
      (rc = opt_bool(options, "wait_for_connection", &r->wait_for_connection, err, errlen)) ||
      (rc = opt_bool(options, "lazy_connect", &r->lazy, err, errlen)))
    return rc;
  if (url != NULL && (host || user || pass || cJSON_GetObjectItemCaseSensitive(options, "port") ||
                      cJSON_GetObjectItemCaseSensitive(options, "db"))) {
    snprintf(err, errlen, "option \"url\": give either url or host/port/db/username/password, not both");
    return ENGRAM_EINVAL;
  }
  e->port = (int)port;
  e->db = (int)db;
  if (url != NULL) {
    if ((rc = parse_url(url, e, err, errlen)) != 0) return rc;
  } else {
    if ((e->host = engram_strdup(host ? host : "127.0.0.1")) == NULL ||
        (user && (e->username = engram_strdup(user)) == NULL) || (pass && (e->password = engram_strdup(pass)) == NULL)) {
      snprintf(err, errlen, "out of memory");
      return ENGRAM_ENOMEM;
    }
  }
  if (e->username != NULL && e->password == NULL) {
    snprintf(err, errlen, "option \"username\": needs a password");
    return ENGRAM_EINVAL;
  }
  if ((r->prefix = engram_strdup(prefix ? prefix : "engram:")) == NULL) {
    snprintf(err, errlen, "out of memory");
    return ENGRAM_ENOMEM;
  }
  r->prefix_len = strlen(r->prefix);
  r->max_inflight = (unsigned)maxin;
  r->max_value_bytes = (size_t)mvb;
  r->update_retries = (unsigned)retries;
  r->scan_batch = (unsigned)batch;
  r->store_batch = (unsigned)sbatch;
  r->search_cache_items = (size_t)scache;
  r->conn.connect_timeout_ms = (uint32_t)cto;
  r->conn.backoff_min_ms = (uint32_t)rmin;
  r->conn.backoff_max_ms = (uint32_t)(rmax < rmin ? rmin : rmax);
  return 0;
}
