/*
 * redis_opts.c — the redis source's options (see redis_opts.h): a redis:// URL or host/port/db/username/password,
 * the key prefix, timeouts, windows and retry limits. The values are read with the core's option readers
 * (engram_opt_*), so mistakes are worded as on every source; an unknown option is refused by name, with the one
 * list of known names below. The URL is parsed here; messages never quote it or the password.
 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "redis_opts.h"

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

static const char *const known_options[] = {
    "url", "host", "port", "db", "username", "password", "prefix", "connect_timeout_ms", "max_inflight",
    "wait_for_connection", "lazy_connect", "reconnect_min_ms", "reconnect_max_ms", "max_value_bytes",
    "update_retries", "scan_batch", "store_batch", "search_cache_items", NULL};

int engram__redis_parse_options(engram__redis_t *r, const cJSON *options, engram__redis_endpoint_t *e, char *err,
                                size_t errlen) {
  const char *url, *host, *user, *pass, *prefix;
  uint64_t port, db, cto, maxin, rmin, rmax, mvb, retries, batch, sbatch, scache;
  int rc;
  if ((rc = engram_opt_check_names(options, known_options, err, errlen)) ||
      (rc = engram_opt_string(options, "url", NULL, 0, &url, err, errlen)) ||
      (rc = engram_opt_string(options, "host", NULL, 0, &host, err, errlen)) ||
      (rc = engram_opt_string(options, "username", NULL, 0, &user, err, errlen)) ||
      (rc = engram_opt_string(options, "password", NULL, 0, &pass, err, errlen)) ||
      (rc = engram_opt_string(options, "prefix", "engram:", 0, &prefix, err, errlen)) ||
      (rc = engram_opt_uint(options, "port", 6379, 1, 65535, &port, err, errlen)) ||
      (rc = engram_opt_uint(options, "db", 0, 0, 100000, &db, err, errlen)) ||
      (rc = engram_opt_uint(options, "connect_timeout_ms", 2000, 1, 3600000, &cto, err, errlen)) ||
      (rc = engram_opt_uint(options, "max_inflight", 1000, 1, 1000000, &maxin, err, errlen)) ||
      (rc = engram_opt_uint(options, "reconnect_min_ms", 50, 1, 3600000, &rmin, err, errlen)) ||
      (rc = engram_opt_uint(options, "reconnect_max_ms", 2000, 1, 3600000, &rmax, err, errlen)) ||
      (rc = engram_opt_uint(options, "max_value_bytes", 16u << 20, 0, 512u << 20, &mvb, err, errlen)) ||
      (rc = engram_opt_uint(options, "update_retries", 16, 1, 1000000, &retries, err, errlen)) ||
      (rc = engram_opt_uint(options, "scan_batch", 500, 1, 100000, &batch, err, errlen)) ||
      (rc = engram_opt_uint(options, "store_batch", 64, 1, 1000, &sbatch, err, errlen)) ||
      (rc = engram_opt_uint(options, "search_cache_items", 250000, 0, UINT32_MAX - 1, &scache, err, errlen)) ||
      (rc = engram_opt_bool(options, "wait_for_connection", 0, &r->wait_for_connection, err, errlen)) ||
      (rc = engram_opt_bool(options, "lazy_connect", 0, &r->lazy, err, errlen)))
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
  if ((r->prefix = engram_strdup(prefix)) == NULL) {
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
