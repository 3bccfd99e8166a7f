/*
 * thread_heads.h — the thread heads of a namespace, newest-updated first, a page at a time: one ordered search
 * (the contract's order on search: updated_at_ms descending, ties by key descending) of the items whose key
 * matches "thread:*", positioned after the last head seen by a range on updated_at_ms. Shared by
 * engram_thread_list (thread_list.c) and engram_thread_context (thread_context.c); internal to src/thread/.
 *
 * Why a range and not the search's offset: between two pages (two calls of engram_thread_list) threads are
 * updated and move to the front, so an offset would shift; a position (updated_at_ms, id) does not. Within one
 * page of ties the offset steps over the ties already taken (th_pager_next).
 */
#ifndef ENGRAM_THREAD_HEADS_H
#define ENGRAM_THREAD_HEADS_H

#include <stdint.h>

#include "thread/thread_call.h"

/* Submits the search of the next page of at most n (1..ENGRAM_ORDER_MAX) head items, in c's source and
 * namespace, the reply going to cb(status, reply, c). Returns engram_search's code (ENGRAM_ENOTSUP at once: a
 * source without system-field ranges, when p has a position). */
int th_heads_search(call_t *c, const th_pager_t *p, int n, engram_cb cb);
/* The thread id of a head item of such a reply, or NULL when the item is at or before p's position (already
 * seen) or its key is not a head key. */
const char *th_heads_id(const th_pager_t *p, const engram_item_t *it);
/* After a reply of n items asked for with limit: moves p past them (p->end when the search had no more). */
void th_pager_next(th_pager_t *p, const engram_reply_t *r, int limit);
/* The info object of engram_thread_list for head item it (parsed into h, which the caller frees with
 * th_head_free): engram_thread_info's shape, with "updated_at_ms" the item's updated_at_ms (the order's key).
 * 0, ENGRAM_EINVAL (not a head: h empty) or ENGRAM_ENOMEM. */
int th_heads_info(const engram_item_t *it, th_head_t *h, cJSON **info);

#endif
