/*
 * sqlite_jsontext.h — the SQLite source's export reads (sqlite_jsontext.c): rows answered with their stored JSON
 * text as cJSON_Raw nodes when the request carries ENGRAM_REQ_JSON_TEXT and the text is as cJSON prints it.
 */
#ifndef ENGRAM_SOURCES_SQLITE_JSONTEXT_H
#define ENGRAM_SOURCES_SQLITE_JSONTEXT_H

#include <stddef.h>

#include "sqlite_db.h"

/* Adds the current row of st (columns as engram__sq_add_row with base 0) to req's reply: value and, when with_meta,
 * metadata as cJSON_Raw nodes of their stored text when canonical, else parsed. 0, ENGRAM_ENOMEM or
 * ENGRAM_EBACKEND (stored text that is not JSON; s->err says which). Actor thread. */
int engram__sq_add_row_text(sq_t *s, engram_request_t *req, sqlite3_stmt *st, const char *ns, const char *key,
                            int with_meta);

/* The same for a row of the SQ_LIST_*_ITEMS statements (an export's page of whole items: namespace, key, created,
 * updated, expires, then LIST_ITEM_VALUE, LIST_ITEM_META, LIST_ITEM_VERSION), metadata always included. */
int engram__sq_add_listed_text(sq_t *s, engram_request_t *req, sqlite3_stmt *st, const char *ns, const char *key);

#endif
