/*
 * order.h — search and list_keys in an order the caller chose (opts.order_by), applied by the core (order.c).
 */
#ifndef ENGRAM_ORDER_H
#define ENGRAM_ORDER_H

#include "actor/actor.h"

/* The table entries of search and list_keys: the backend's own method, or — when the call asked for an order
 * other than the backend's (req->priv->order_by) — one search of every match, sorted and cut here. Actor thread. */
void engram__order_search(engram_source_t *src, engram_request_t *req);
void engram__order_list_keys(engram_source_t *src, engram_request_t *req);
/* Runs req (a search or list_keys with priv->order_by set) in that order even when it is a sub-request of
 * another operation (max_items_per_namespace's pass, evict.c); the table entries above order only top-level
 * calls. Actor thread. */
void engram__order_run(engram_source_t *src, engram_request_t *req);

#endif
