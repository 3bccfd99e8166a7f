/*
 * prefix.h — clear, count and list_keys over a namespace prefix (ENGRAM_OPT_NS_PREFIX) and list_namespaces, run
 * by the core on every source from its listing across namespaces (prefix.c).
 */
#ifndef ENGRAM_PREFIX_H
#define ENGRAM_PREFIX_H

#include "actor/actor.h"
#include "actor/order.h"

/* The table entries of count, clear and list_keys: the walk when the call carries ENGRAM_OPT_NS_PREFIX, else the
 * method they wrap (the table's count / clear, order.c's list_keys). Actor thread. */
void engram__prefix_count(engram_source_t *src, engram_request_t *req);
void engram__prefix_clear(engram_source_t *src, engram_request_t *req);
void engram__prefix_list_keys(engram_source_t *src, engram_request_t *req);
/* The table entry of list_namespaces (ns = the prefix, query.limit, n = max_depth, cursor "n:<ns>"). */
void engram__prefix_run(engram_source_t *src, engram_request_t *req);

#endif
