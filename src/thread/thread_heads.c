/*
 * thread_heads.c — a page of a namespace's thread heads, newest-updated first (thread_heads.h): the ordered
 * search that reads it, the position that skips what earlier pages held, a head item's list info, and the
 * check of a sub-call's answer that the list and the context share.
 */
#include <stdio.h>
#include <string.h>

#include "thread/thread_heads.h"

int th_heads_search(call_t *c, const th_pager_t *p, int n, engram_cb cb) {
  engram_query_t q = ENGRAM_QUERY_INIT;
  engram_opts_t o = c->o;
  q.pattern = TH_HEAD_PREFIX "*";
  q.limit = n;
  q.offset = p->off;
  o.order_by = ENGRAM_ORDER_UPDATED_AT;
  o.flags = ENGRAM_OPT_DESCENDING;
  if (p->has_pos) {
    o.flags |= ENGRAM_OPT_UPDATED_RANGE;
    o.updated_at.min_ms = 0;
    o.updated_at.max_ms = p->pos_u;
  }
  return engram_search(c->mgr, &q, &o, cb, c);
}

const char *th_heads_id(const th_pager_t *p, const engram_item_t *it) {
  const size_t pre = sizeof TH_HEAD_PREFIX - 1;
  const char *id;
  if (it->key == NULL || strncmp(it->key, TH_HEAD_PREFIX, pre) != 0) return NULL;
  id = it->key + pre;
  /* the order is (updated_at_ms, key) descending: what sorts at or above the position was seen */
  if (p->has_pos && (it->updated_at_ms > p->pos_u || (it->updated_at_ms == p->pos_u && strcmp(id, p->pos_id) >= 0)))
    return NULL;
  return id;
}

void th_pager_next(th_pager_t *p, const engram_reply_t *r, int limit) {
  const engram_item_t *last;
  if (r->n_items < (size_t)limit) p->end = 1;
  if (r->n_items == 0) return;
  last = &r->items[r->n_items - 1];
  if (p->has_pos && last->updated_at_ms == p->pos_u) {
    p->off += (int)r->n_items; /* a page of ties at the position: step over it */
    return;
  }
  p->has_pos = 1;
  p->pos_u = last->updated_at_ms;
  snprintf(p->pos_id, sizeof p->pos_id, "%s",
           strncmp(last->key, TH_HEAD_PREFIX, sizeof TH_HEAD_PREFIX - 1) == 0 ? last->key + sizeof TH_HEAD_PREFIX - 1
                                                                            : "");
  p->off = 0;
}

int th_heads_info(const engram_item_t *it, th_head_t *h, cJSON **info) {
  cJSON *u;
  int rc;
  *info = NULL;
  if (it->status != 0 || (rc = th_head_parse(it->value, h)) == ENGRAM_EINVAL) return ENGRAM_EINVAL;
  if (rc != 0) return rc;
  if ((*info = th_head_info(h, it->expires_at_ms)) == NULL) return ENGRAM_ENOMEM;
  if ((u = cJSON_GetObjectItemCaseSensitive(*info, "updated_at_ms")) != NULL) cJSON_SetNumberValue(u, (double)it->updated_at_ms);
  return 0;
}
