/*
 * postgres_text.h — the PostgreSQL source's text indexes (postgres_text.c): one in-memory core BM25 index
 * (engram_text_index) per namespace searched, kept current with the table by one statement per search, and
 * ranked in the process, so PostgreSQL ranks exactly as every other source.
 */
#ifndef ENGRAM_POSTGRES_TEXT_H
#define ENGRAM_POSTGRES_TEXT_H

#include "postgres_src.h"

typedef struct pg_tix_s pg_tix_t;

/* The end of a sync: status 0, or the error (and its message) that failed it. */
typedef void (*pg_tix_done_fn)(void *ud, int status, const char *msg);

/* The namespace's index, made (empty) when missing, held for a search until engram__pg_tix_release; NULL on
 * ENOMEM. Indexes of other namespaces that no search holds are freed, least recently used first, while the
 * documents of all exceed the text_index_items option. */
pg_tix_t *engram__pg_tix_get(pg_t *pg, const char *ns, size_t ns_len);
void engram__pg_tix_release(pg_tix_t *tix);
/* Brings tix up to date with the table for req (every write acknowledged before req was submitted, this
 * process's or another's): the first time it reads the namespace's rows; then the rows written and the keys
 * deleted since the last sync. One statement on c. Returns 1 when done will run later (the statement is queued),
 * 0 when done already ran (a failure before anything was sent). */
int engram__pg_tix_sync(pg_t *pg, pg_tix_t *tix, pgc_t *c, engram_request_t *req, pg_tix_done_fn done, void *ud);
/* Non-zero when tix is built and its last sync changed nothing: a search may rank while its own sync is in flight,
 * and keep that ranking when the sync changes nothing either (engram__pg_tix_gen unchanged). */
int engram__pg_tix_quiet(const pg_tix_t *tix);
/* Bumped by every change of tix's documents. */
uint64_t engram__pg_tix_gen(const pg_tix_t *tix);
/* The best k live documents for req's query text (its pattern, expiry and system-field ranges applied; ties by
 * key) into hits (room for k); *n receives how many. Returns 0 or ENGRAM_ENOMEM. */
int engram__pg_tix_rank(pg_tix_t *tix, engram_request_t *req, size_t k, engram_text_hit_t *hits, size_t *n);
/* Documents in the index (an upper bound of what a query can match), and a document's key. */
size_t engram__pg_tix_docs(const pg_tix_t *tix);
const char *engram__pg_tix_key(const pg_tix_t *tix, uint64_t doc, size_t *len);
/* Indexes, documents and bytes (measured when each index was built, plus its documents' keys since) for info. */
void engram__pg_tix_stats(const pg_t *pg, uint64_t *indexes, uint64_t *docs, uint64_t *bytes);
/* Frees every index (no search may be using them: the pool is closed). */
void engram__pg_tix_free_all(pg_t *pg);

#endif
