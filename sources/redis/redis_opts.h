/*
 * redis_opts.h — the redis source's options (docs/sources-redis.md): where to connect (a redis:// URL, or host,
 * port, db, username and password) and everything else, written into the instance state.
 */
#ifndef ENGRAM_REDIS_OPTS_H
#define ENGRAM_REDIS_OPTS_H

#include <stddef.h>

#include "redis_state.h"

/* Where to connect; the strings are engram_malloc'd (the connection takes them over). */
typedef struct {
  char *host, *username, *password;
  int port, db;
} engram__redis_endpoint_t;

/* Parses options into r (prefix, windows, limits, flags, the connection's timeouts) and e (where to connect).
 * Returns 0, ENGRAM_EINVAL or ENGRAM_ENOMEM with a message in err (never quoting the URL or the password). */
int engram__redis_parse_options(engram__redis_t *r, const cJSON *options, engram__redis_endpoint_t *e, char *err,
                                size_t errlen);
/* Frees e's strings (wiping the credentials). */
void engram__redis_endpoint_free(engram__redis_endpoint_t *e);

#endif
