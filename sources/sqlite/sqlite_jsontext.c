/*
 * sqlite_jsontext.c — the SQLite source's answer to an export's reads (ENGRAM_REQ_JSON_TEXT, include/engram/source.h):
 * the value and metadata columns already hold compact JSON text, written by engram_json_print exactly as
 * cJSON_PrintUnformatted prints the tree, and an export only prints them again. Parsing each row into a cJSON tree
 * on this thread, then printing and freeing it on the home loop, was most of an SQLite export's time; here the
 * stored text is handed over as a cJSON_Raw node (two allocations) and the export copies its bytes.
 *
 * The text is handed over only when it is in the form cJSON itself would print for it (engram_json_is_canonical,
 * src/shared/json_canon.c, which gives the rules), so the export's bytes never depend on who wrote the row (another
 * program, an older engram). Anything else is parsed and printed as before (engram__sq_parse_col), and text that
 * is not JSON fails
 * the same way. Called by sqlite.c's retrieve_many and by sqlite_query.c's list_keys for an export's pages of whole
 * items (ENGRAM_REQ_LIST_ITEMS); calls only sqlite_db.c's column helpers.
 */
#include <stdio.h>
#include <string.h>

#include "sqlite_jsontext.h"

/* A column as a raw node when its text is canonical, else parsed; NULL stays NULL. */
static int text_col(sq_t *s, sqlite3_stmt *st, int col, const char *key, const char *what, cJSON **out) {
  const char *text = (const char *)sqlite3_column_text(st, col);
  *out = NULL;
  if (text == NULL) return 0;
  if (!engram_json_is_canonical(text, (size_t)sqlite3_column_bytes(st, col)))
    return engram__sq_parse_col(s, st, col, key, what, out);
  if ((*out = cJSON_CreateRaw(text)) == NULL) {
    snprintf(s->err, sizeof s->err, "out of memory");
    return ENGRAM_ENOMEM;
  }
  return 0;
}

/* Adds the row of st as an item, its columns at value, meta, created, updated, expires, version. */
static int add_text(sq_t *s, engram_request_t *req, sqlite3_stmt *st, const int col[6], const char *ns,
                    const char *key, int with_meta) {
  engram_item_t it;
  cJSON *value = NULL, *meta = NULL;
  int rc;
  memset(&it, 0, sizeof it);
  it.key = key;
  it.ns = ns;
  it.created_at_ms = sqlite3_column_int64(st, col[ROW_CREATED]);
  it.updated_at_ms = sqlite3_column_int64(st, col[ROW_UPDATED]);
  it.expires_at_ms = sqlite3_column_int64(st, col[ROW_EXPIRES]);
  it.version = (uint64_t)sqlite3_column_int64(st, col[ROW_VERSION]);
  it.score = 1.0;
  if (with_meta && (rc = text_col(s, st, col[ROW_META], key, "metadata", &meta)) != 0) return rc;
  if ((rc = text_col(s, st, col[ROW_VALUE], key, "value", &value)) != 0) {
    cJSON_Delete(meta);
    return rc;
  }
  it.value = value;
  it.metadata = meta;
  return engram_reply_add(req, &it, ENGRAM_REPLY_OWN_VALUE | ENGRAM_REPLY_OWN_METADATA);
}

int engram__sq_add_row_text(sq_t *s, engram_request_t *req, sqlite3_stmt *st, const char *ns, const char *key,
                            int with_meta) {
  static const int col[6] = {ROW_VALUE, ROW_META, ROW_CREATED, ROW_UPDATED, ROW_EXPIRES, ROW_VERSION};
  return add_text(s, req, st, col, ns, key, with_meta);
}

int engram__sq_add_listed_text(sq_t *s, engram_request_t *req, sqlite3_stmt *st, const char *ns, const char *key) {
  static const int col[6] = {LIST_ITEM_VALUE, LIST_ITEM_META, 2, 3, 4, LIST_ITEM_VERSION};
  return add_text(s, req, st, col, ns, key, 1);
}
