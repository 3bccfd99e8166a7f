/*
 * vector_query.h — what the vector source answers from its table (vector_query.c): similarity search and count,
 * reads, deletes, listing, clear and info. Called by vector.c's request queue; each completes its request.
 */
#ifndef ENGRAM_VECTOR_QUERY_H
#define ENGRAM_VECTOR_QUERY_H

#include <stddef.h>

#include "vector_source.h"

/* Runs a search or count with the query vector qvec (NULL: no similarity) and, for text queries, the query's
 * unit-normalized term list (qterms, for the share rule and re-ranking). Completes req. */
void engram__vq_run(engram__vsrc_t *v, engram_request_t *req, const float *qvec, const engram__term_t *qterms,
                    size_t nqterms, int text_query);
void engram__vq_retrieve(engram__vsrc_t *v, engram_request_t *req);
void engram__vq_retrieve_many(engram__vsrc_t *v, engram_request_t *req);
void engram__vq_exists(engram__vsrc_t *v, engram_request_t *req);
void engram__vq_delete(engram__vsrc_t *v, engram_request_t *req);
void engram__vq_delete_many(engram__vsrc_t *v, engram_request_t *req);
void engram__vq_list_keys(engram__vsrc_t *v, engram_request_t *req);
void engram__vq_clear(engram__vsrc_t *v, engram_request_t *req);
void engram__vq_info(engram__vsrc_t *v, engram_request_t *req);

#endif
