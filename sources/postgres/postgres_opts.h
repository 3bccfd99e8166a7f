/*
 * postgres_opts.h — the PostgreSQL source's options (postgres_opts.c): parses open()'s options object into the
 * option fields of pg_t, or refuses it with a message naming the option.
 */
#ifndef ENGRAM_POSTGRES_OPTS_H
#define ENGRAM_POSTGRES_OPTS_H

#include "postgres_src.h"

/* 0, ENGRAM_EINVAL or ENGRAM_ENOMEM with a message in err; what it allocated is pg's to free either way. */
int engram__pg_parse_options(pg_t *pg, const cJSON *options, char *err, size_t errlen);

#endif
