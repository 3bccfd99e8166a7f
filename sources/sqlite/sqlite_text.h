/*
 * sqlite_text.h — the SQLite source's text search over the core's in-process BM25 index (sqlite_text.c): one
 * index per namespace, built by the first text search, kept up to date by this connection's writes, and checked
 * against the namespace's generation in "<table>_gen" so that other writers' changes are seen.
 *
 * Every function runs on the source's actor thread only.
 */
#ifndef ENGRAM_SOURCES_SQLITE_TEXT_H
#define ENGRAM_SOURCES_SQLITE_TEXT_H

#include "sqlite_db.h"

/* A text search (counting = 0: the items of the page go into req's reply, *count = how many) or a text count
 * (*count = the matches with score >= min_score). Returns 0 or an engram status with s->err set. */
int engram__sq_text_query(sq_t *s, engram_request_t *req, int counting, uint64_t *count);

/* Write hooks, called after the statement succeeded inside the group's transaction: key of namespace ns now
 * holds value (expires: absolute ms, 0 = never) / was removed / every row of the table (or of some namespaces)
 * was deleted. They never fail: when memory runs out the namespace's index is rebuilt by the next search. */
void engram__sq_text_written(sq_t *s, const char *ns, size_t ns_len, const char *key, size_t key_len,
                             const cJSON *value, int64_t expires);
void engram__sq_text_removed(sq_t *s, const char *ns, size_t ns_len, const char *key, size_t key_len);
void engram__sq_text_cleared(sq_t *s);

/* Before the group's COMMIT: bumps the generation of every namespace the group wrote. Returns 0 or an engram
 * status with s->err set (the group must then be rolled back). */
int engram__sq_text_pre_commit(sq_t *s);
/* After a rollback, and at close: drops every index (they held writes that are gone). */
void engram__sq_text_rolled_back(sq_t *s);
/* Documents held by the indexes (info). */
size_t engram__sq_text_items(const sq_t *s);

#endif
