/*
 * thread_change.c — the head's update that every change of a thread makes: append, set, delete messages.
 *
 * Every change of a thread is one engram_update of its head (atomic per key on every source: a native update, or
 * the core's read -> function -> conditional store with retries). The function (head_update) allocates sequence
 * numbers and moves the visible range [first, last] in one step; the writes that ride on the update (the appended
 * messages, the trim's and the delete's removals: engram_update_writes_t) are made by the source in the update's
 * atomic step when it can, else by the core right after it. Then the parts that follow it — the sliding TTL, a trim
 * too long to carry, the refresh of the visible messages' expiry — run in parallel, counted down in c->pending, and
 * the call ends once (th_finish).
 */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "thread/thread_block.h"
#include "thread/thread_call.h"
#include "thread/thread_check.h"
#include "shared/error.h"
#include "manager/bulk.h"
#include "thread/thread_hint.h"

/* The writes that ride on the head's update (engram_update_writes_t), from the run's results: the appended
 * messages (numbered from seq0, stamped now, expiring 2 × ttl after the write when the thread has a TTL), and
 * the deletes of what the run trimmed (up to DELETE_CHUNK; a longer trim is deleted apart, after the update) and
 * of the messages M_DELMSG removed. The source makes them in the update's atomic step when it can (SQLite, the
 * cache), else the core makes them right after it; either way before the update is answered. */
static int make_writes(upd_t *u) {
  size_t i, nd = 0, trim = (size_t)(u->new_first - u->old_first);
  th_free_keys(u->dkeys, u->n_dkeys);
  u->dkeys = NULL;
  u->n_dkeys = 0;
  memset(&u->w, 0, sizeof u->w);
  for (i = 0; i < u->n && u->mode == M_APPEND; i++) {
    uint64_t seq = u->seq0 + i;
    cJSON_SetNumberValue(u->nodes[3 * i], (double)seq);
    cJSON_SetNumberValue(u->nodes[3 * i + 1], (double)u->now);
    cJSON_SetNumberValue(u->nodes[3 * i + 2], (double)seq);
    th_msg_key(u->keys[i], TH_KEY_MAX, u->id, u->gen, seq);
    u->entries[i].key = u->keys[i];
    u->entries[i].value = u->msgs[i];
    u->entries[i].metadata = u->meta[i];
    u->expires[i] = u->ttl_ms > 0 ? u->now + 2 * u->ttl_ms : 0;
  }
  if (u->mode == M_APPEND) {
    u->w.n_store = u->n;
    u->w.store = u->entries;
    u->w.store_expires_at_ms = u->expires;
    u->w.store_version = u->versions;
  }
  u->trim_carried = trim <= DELETE_CHUNK;
  nd = (u->trim_carried ? trim : 0) + (u->mode == M_DELMSG ? u->n_deleted : 0);
  if (nd == 0) return 0;
  if ((u->dkeys = engram_calloc(nd, sizeof *u->dkeys)) == NULL) return ENGRAM_ENOMEM;
  for (i = 0; i < nd; i++) {
    char key[TH_KEY_MAX];
    uint64_t seq = u->trim_carried && i < trim ? u->old_first + i : u->deleted[i - (u->trim_carried ? trim : 0)];
    th_msg_key(key, sizeof key, u->id, u->gen, seq);
    if ((u->dkeys[i] = engram_strdup(key)) == NULL) return ENGRAM_ENOMEM;
    u->n_dkeys = i + 1;
  }
  u->w.n_delete = nd;
  u->w.delete_keys = (const char *const *)u->dkeys;
  return 0;
}

/* The head's update function (runs on the source's actor thread, maybe more than once). */
static int head_update(const cJSON *current, cJSON **next, void *ud) {
  upd_t *u = ud;
  th_head_t h;
  size_t i;
  int rc = 0;
  int64_t now = engram_now_ms();
  engram_free(u->deleted);
  u->deleted = NULL;
  u->n_deleted = 0;
  if (current != NULL && (rc = th_head_parse(current, &h)) == ENGRAM_ENOMEM) return ENGRAM_ENOMEM;
  if (current == NULL || rc != 0) {
    if (u->mode == M_DELMSG) return ENGRAM_ENOTFOUND;
    th_head_init(&h, u->id, now);
  }
  h.updated_at_ms = now;
  if (u->settings.flags & ENGRAM_THREAD_NO_MAX) h.max_messages = 0;
  if (u->settings.flags & ENGRAM_THREAD_MAX_MESSAGES) h.max_messages = u->settings.max_messages;
  if (u->settings.flags & ENGRAM_THREAD_NO_TTL) h.ttl_ms = 0;
  if (u->settings.flags & ENGRAM_THREAD_TTL) h.ttl_ms = u->settings.ttl_ms;
  if (u->set_meta != NULL) h.metadata = u->set_meta;
  u->seq0 = h.last + 1;
  u->refresh = 0;
  if (h.ttl_ms > 0 && now - h.refreshed_at_ms >= h.ttl_ms) {
    /* Messages are stored to expire 2 × ttl after their write; once a ttl has passed since every visible one was
     * last written, this change writes them again, so none expires before the head does. */
    u->refresh = h.last >= h.first;
    u->refresh_to = h.last;
    h.refreshed_at_ms = now;
  }
  u->old_first = h.first;
  if (u->mode == M_APPEND) {
    size_t p;
    /* part by part, each trimmed as it would be alone (trimming after each part and once at the end keep the same
     * newest N), so that each merged caller's count and trimmed are what its own append would have answered */
    for (p = 0; p < u->n_parts; p++) {
      uint64_t f = h.first, base = h.last + 1 - u->part_off[p];
      for (i = (size_t)u->part_off[p]; i < u->part_off[p + 1]; i++)
        if (u->is_system[i] && th_head_add_system(&h, base + i) != 0) goto nomem;
      h.last += u->part_off[p + 1] - u->part_off[p];
      th_head_trim(&h);
      u->part_trimmed[p] = h.first - f;
      u->part_count[p] = th_head_count(&h);
    }
  }
  if (u->mode == M_DELMSG) {
    if ((u->deleted = engram_malloc((u->n_del ? u->n_del : 1) * sizeof *u->deleted)) == NULL) goto nomem;
    for (i = 0; i < u->n_del; i++)
      if (th_head_visible(&h, u->del[i])) {
        if (th_head_delete(&h, u->del[i]) != 0) goto nomem;
        u->deleted[u->n_deleted++] = u->del[i];
      }
  }
  if (u->mode != M_APPEND) u->old_first = th_head_trim(&h);
  u->new_first = h.first;
  u->count = th_head_count(&h);
  u->refresh_from = h.first;
  if (u->refresh && u->refresh_to < h.first) u->refresh = 0;
  u->now = now;
  u->ttl_ms = h.ttl_ms;
  memcpy(u->gen, h.gen, sizeof u->gen);
  if (make_writes(u) != 0) goto nomem;
  *next = th_head_value(&h);
  th_head_free(&u->head); /* the previous run's */
  u->head = h;            /* kept for the hint (thread_hint.h) when this run's write is the one that counts */
  u->head.metadata = NULL;
  return *next ? 0 : ENGRAM_ENOMEM;
nomem:
  th_head_free(&h);
  return ENGRAM_ENOMEM;
}

static void change_start(call_t *c);

/* An append's reply from its part of the update (the update is over: nothing runs its function again): its
 * messages with their numbers, first/last seq, the visible count and the trim as after its part. The info object
 * is one block (thread_block.h) whose "messages" array links the messages' own blocks, which stay the update's
 * (freed with it, after every caller's callback); the items name the keys the update wrote. Finishes c. */
static void append_reply(call_t *c) {
  upd_t *u = c->upd;
  size_t i, off = (size_t)u->part_off[c->part], end = (size_t)u->part_off[c->part + 1];
  th_block_t b;
  cJSON *info = th_block_new(&b, 8, strlen(c->id) + 1, cJSON_Object), *msgs;
  engram_item_t *items = engram_calloc(end - off, sizeof *items);
  if (info == NULL || items == NULL) {
    cJSON_Delete(info);
    engram_free(items);
    th_fail(c, ENGRAM_ENOMEM, "out of memory");
    return;
  }
  msgs = th_block_add(&b, info, "messages", cJSON_Array);
  for (i = off; i < end; i++) {
    engram_item_t *it = &items[i - off];
    u->msgs[i]->next = u->msgs[i]->prev = NULL;
    th_block_link(msgs, u->msgs[i]);
    it->key = u->keys[i];
    it->ns = c->ns ? c->ns : "";
    it->value = u->msgs[i];
    it->metadata = cJSON_GetObjectItemCaseSensitive(u->msgs[i], "metadata");
    it->created_at_ms = u->now;
    it->source = c->source_name;
  }
  th_block_str(&b, info, "thread", c->id);
  th_block_num(&b, info, "first_seq", (double)(u->seq0 + off));
  th_block_num(&b, info, "last_seq", (double)(u->seq0 + end - 1));
  th_block_num(&b, info, "count", (double)u->part_count[c->part]);
  th_block_num(&b, info, "trimmed", (double)u->part_trimmed[c->part]);
  th_block_num(&b, info, "created_at_ms", (double)u->now);
  th_finish_items(c, 0, info, items, end - off, end - off, NULL, NULL);
}

/* An append that succeeded: its messages go into the manager's message cache (thread_msgcache.h), so that this
 * process's next window reads only the head and the summary item — an agent appends, then reads its window. Each
 * is copied into one block (the update's own trees are freed with it). Nothing when the cache is off or the source
 * keeps its items in the process; a copy that fails is only not kept. */
static void keep_appended(call_t *c) {
  upd_t *u = c->upd;
  th_mc_thread_t t;
  th_mc_t *mc = c->mc; /* acquired at the call (engram_thread_append) */
  size_t i;
  if (u == NULL || u->mode != M_APPEND || u->n == 0 || mc == NULL) return;
  th_mc_thread(&t, c->mc_serial, c->ns, c->id, u->gen, c->mc_epoch);
  for (i = 0; i < u->n; i++) {
    size_t nodes = 0, bytes = 0;
    th_block_t b;
    const cJSON *ch;
    cJSON *copy;
    th_mc_entry_t *e;
    th_block_measure(u->msgs[i], &nodes, &bytes);
    if ((copy = th_block_new(&b, nodes, bytes, cJSON_Object)) == NULL) break;
    for (ch = u->msgs[i]->child; ch != NULL; ch = ch->next) th_block_copy(&b, copy, NULL, ch);
    if ((e = th_mc_put(mc, &t, u->seq0 + i, copy, nodes * sizeof(cJSON) + bytes)) == NULL || th_mc_msg(e) != copy)
      cJSON_Delete(copy);
    th_mc_unpin(e);
  }
}

static void change_part_done(call_t *c) {
  cJSON *info;
  if (--c->pending > 0) return;
  if (c->status != 0) {
    th_finish(c, c->status, NULL, NULL, 0, NULL, NULL);
    return;
  }
  /* the update is over (nothing runs its function again): what it wrote is the thread's head now */
  if (c->upd != NULL && c->upd->head.gen[0]) th_hint_put(th_hint_hash(c->mgr, c->src, c->ns, c->id), &c->upd->head);
  if (c->op == ENGRAM_OP_THREAD_APPEND) {
    keep_appended(c);
    call_t *m = c->members, *next;
    c->members = NULL;
    if (c->leave != NULL) c->leave(c); /* the next appends to the thread go now */
    for (; m != NULL; m = next) { /* merged callers: each its own reply, in arrival order after the first */
      next = m->next_member;
      append_reply(m);
    }
    append_reply(c);
    return;
  }
  info = th_head_info(&c->head, c->expires_at_ms);
  if (info == NULL) {
    th_fail(c, ENGRAM_ENOMEM, "out of memory");
    return;
  }
  th_finish(c, 0, info, NULL, c->op == ENGRAM_OP_THREAD_DELETE_MESSAGES ? (uint64_t)c->upd->n_deleted : c->count, NULL,
         NULL);
}

static void on_part(int status, const engram_reply_t *r, void *ud) {
  call_t *c = ud;
  size_t i;
  th_note(c, status, r);
  if (status == 0 && r->op == ENGRAM_OP_STORE_MANY)
    for (i = 0; i < r->n_items; i++)
      if (r->items[i].status != 0) {
        engram_reply_t one = *r;
        one.message = r->message && r->message[0] ? r->message : engram_strerror(r->items[i].status);
        th_note(c, r->items[i].status, &one);
        break;
      }
  change_part_done(c);
}

/* The TTL the head's update carries itself: the one this call's settings name, else none (0). */
static int64_t update_ttl(const upd_t *u) {
  return (u->settings.flags & ENGRAM_THREAD_TTL) ? u->settings.ttl_ms : 0;
}

/* The change's one engram_update of the head. When the call names the thread's TTL, the update carries it
 * (ENGRAM_OPT_TTL: the head expires ttl_ms after this change), which saves the store that otherwise slides it. */
static void on_head_updated(int status, const engram_reply_t *r, void *ud);
int th_update_head(call_t *c) {
  engram_opts_t o = c->o;
  if (update_ttl(c->upd) > 0) {
    o.flags |= ENGRAM_OPT_TTL;
    o.ttl_ms = update_ttl(c->upd);
  }
  int rc;
  atomic_fetch_add_explicit(&c->upd->refs, 1, memory_order_relaxed); /* the request's, released by the core */
  rc = engram__update_with_writes(c->mgr, c->head_key, head_update, c->upd, &c->upd->w, th_upd_unref, &o,
                                  on_head_updated, c);
  if (rc != 0) atomic_fetch_sub_explicit(&c->upd->refs, 1, memory_order_relaxed); /* refused: never released */
  return rc;
}

/* The head's sliding TTL: a store of the value the update wrote, conditional on its version, with the TTL (an
 * update keeps the item's expiry). A conflict means a later change wrote the head, and that one slides it. */
static void on_touched(int status, const engram_reply_t *r, void *ud) {
  call_t *c = ud;
  if (status == ENGRAM_ECONFLICT || status == ENGRAM_ENOTFOUND) status = 0;
  else if (status == 0 && r->n_items > 0) c->expires_at_ms = r->items[0].expires_at_ms;
  th_note(c, status, r);
  change_part_done(c);
}

/* Starts a sub-call of the parallel phase; a refusal counts as its answer. */
static void part(call_t *c, int rc) {
  if (rc == 0) return;
  if (c->status == 0) {
    c->status = rc;
    snprintf(c->message, sizeof c->message, "thread \"%s\": %s", c->id, engram_last_error());
  }
  c->pending--;
}

static void delete_range(call_t *c, uint64_t from, uint64_t to_excl) {
  while (from < to_excl) {
    size_t n = (size_t)(to_excl - from < DELETE_CHUNK ? to_excl - from : DELETE_CHUNK), i;
    char **keys = engram_calloc(n, sizeof *keys);
    int rc = keys ? 0 : ENGRAM_ENOMEM;
    for (i = 0; rc == 0 && i < n; i++) {
      char key[TH_KEY_MAX];
      th_msg_key(key, sizeof key, c->id, c->upd->gen, from + i);
      if ((keys[i] = engram_strdup(key)) == NULL) rc = ENGRAM_ENOMEM;
    }
    c->pending++;
    if (rc == 0) rc = engram_delete_many(c->mgr, (const char *const *)keys, n, &c->o, on_part, c);
    if (rc == ENGRAM_ENOMEM) engram__error(rc, "out of memory");
    part(c, rc);
    th_free_keys(keys, n);
    from += n;
  }
}

/* The refresh: the visible messages read back (one retrieve_many), then stored again with 2 × ttl. A message that
 * was deleted or trimmed meanwhile may come back as an item, but readers trust the head, which no longer shows
 * it, and the item expires by itself. */
static void on_refreshed_read(int status, const engram_reply_t *r, void *ud) {
  call_t *c = ud;
  engram_entry_t *e = NULL;
  cJSON **meta = NULL;
  size_t i, n = 0;
  int rc = 0;
  th_note(c, status, r);
  if (status != 0 || r->n_items == 0) {
    change_part_done(c);
    return;
  }
  e = engram_calloc(r->n_items, sizeof *e);
  meta = engram_calloc(r->n_items, sizeof *meta);
  if (e == NULL || meta == NULL) rc = ENGRAM_ENOMEM;
  for (i = 0; rc == 0 && i < r->n_items; i++) {
    const cJSON *m = th_msg_of(r, i);
    if (m == NULL) continue;
    if ((meta[n] = cJSON_CreateObject()) == NULL || !cJSON_AddStringToObject(meta[n], "thread", c->id) ||
        !cJSON_AddNumberToObject(meta[n], "seq", cJSON_GetObjectItemCaseSensitive(m, "seq")->valuedouble) ||
        !cJSON_AddStringToObject(meta[n], "role", cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(m, "role"))
                                                      ? cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(m, "role"))
                                                      : "")) {
      rc = ENGRAM_ENOMEM;
      n++;
      break;
    }
    e[n].key = r->items[i].key;
    e[n].value = m;
    e[n].metadata = meta[n];
    e[n].has_ttl = 1;
    e[n].ttl_ms = 2 * c->upd->ttl_ms;
    n++;
  }
  if (rc == 0 && n > 0) {
    c->pending++;
    part(c, engram_store_many(c->mgr, e, n, &c->o, on_part, c));
  } else if (rc != 0) {
    engram_reply_t one;
    memset(&one, 0, sizeof one);
    one.message = "out of memory refreshing the messages' expiry";
    th_note(c, rc, &one);
  }
  for (i = 0; meta && i < n; i++) cJSON_Delete(meta[i]);
  engram_free(meta);
  engram_free(e);
  change_part_done(c);
}

static void refresh_messages(call_t *c) {
  upd_t *u = c->upd;
  uint64_t s, *seqs;
  size_t n = 0, cap = (size_t)(u->refresh_to - u->refresh_from + 1);
  int rc;
  if (cap > ENGRAM_THREAD_PAGE_MAX * 10) cap = ENGRAM_THREAD_PAGE_MAX * 10; /* the newest 100,000 at most */
  c->pending++;
  if ((seqs = engram_malloc(cap * sizeof *seqs)) == NULL) {
    part(c, engram__error(ENGRAM_ENOMEM, "out of memory"));
    return;
  }
  for (s = u->refresh_to; s >= u->refresh_from && s > 0 && n < cap; s--)
    if (th_head_visible(&c->head, s)) seqs[n++] = s;
  rc = th_make_keys(c, seqs, n);
  engram_free(seqs);
  if (rc == 0 && n == 0) {
    c->pending--;
    return;
  }
  if (rc == 0) rc = engram_retrieve_many(c->mgr, (const char *const *)c->keys, n, &c->o, on_refreshed_read, c);
  else engram__error(rc, "out of memory");
  part(c, rc);
}

static void on_head_updated(int status, const engram_reply_t *r, void *ud) {
  call_t *c = ud;
  upd_t *u = c->upd;
  int touch;
  if (status == ENGRAM_ECONFLICT && ++c->rounds < UPDATE_ROUNDS) {
    change_start(c);
    return;
  }
  if (status == ENGRAM_ENOTFOUND) {
    th_note(c, 0, r);
    th_fail(c, th_no_thread(c), NULL);
    return;
  }
  if (status != 0) {
    th_note(c, status, r);
    th_finish(c, status, NULL, NULL, 0, NULL, NULL);
    return;
  }
  th_note(c, 0, r);
  /* The head's expiry: slid by the update itself when the call named the TTL (the common case: settings on every
   * append); else a store of the value the update wrote, conditional on its version, with the TTL the head holds;
   * and a head without a TTL that still has an expiry (ENGRAM_THREAD_NO_TTL, now or in a change that raced this
   * one) is stored without one, so it stops expiring at once. */
  touch = r->n_items > 0 &&
          ((u->ttl_ms > 0 && u->ttl_ms != update_ttl(u)) || (u->ttl_ms == 0 && r->items[0].expires_at_ms != 0));
  /* An append needs the head read back only for that store or a refresh: its reply comes from the update's run. */
  if (r->n_items < 1 || r->items[0].value == NULL ||
      ((u->mode != M_APPEND || touch || u->refresh) &&
       ((c->head_value = cJSON_Duplicate(r->items[0].value, 1)) == NULL || th_head_parse(c->head_value, &c->head) != 0))) {
    th_fail(c, ENGRAM_ENOMEM, "thread \"%s\": out of memory reading the head", c->id);
    return;
  }
  c->have_head = c->head_value != NULL;
  c->head_version = r->items[0].version;
  c->expires_at_ms = r->items[0].expires_at_ms;
  c->count = u->count;
  /* the parallel phase: every sub-call counts in pending; the extra 1 is released at the end of this function */
  c->pending = 1;
  /* The messages, the trim (up to DELETE_CHUNK) and the deleted messages rode on the update; a longer trim is
   * deleted here. */
  if (u->new_first > u->old_first && !u->trim_carried) delete_range(c, u->old_first, u->new_first);
  if (u->refresh && u->ttl_ms > 0) refresh_messages(c);
  if (touch) {
    engram_opts_t o = c->o;
    o.flags = u->ttl_ms > 0 ? ENGRAM_OPT_TTL : 0;
    o.ttl_ms = u->ttl_ms;
    o.if_version = c->head_version;
    o.metadata = r->items[0].metadata;
    c->pending++;
    part(c, engram_store(c->mgr, c->head_key, c->head_value, &o, on_touched, c));
  }
  change_part_done(c);
}

static void change_start(call_t *c) {
  int rc = th_update_head(c);
  if (rc != 0) {
    snprintf(c->message, sizeof c->message, "thread \"%s\": %s", c->id, engram_last_error());
    th_finish(c, rc, NULL, NULL, 0, NULL, NULL);
  }
}

int th_change_submit(call_t *c) {
  int rc = th_update_head(c);
  if (rc != 0) th_call_free(c);
  return rc;
}

upd_t *th_upd_new(call_t *c, int mode, const engram_thread_settings_t *settings, const cJSON *meta) {
  upd_t *u = engram_calloc(1, sizeof *u);
  if (u == NULL) return NULL;
  atomic_init(&u->refs, 1); /* the call's */
  u->mode = mode;
  memcpy(u->id, c->id, sizeof u->id);
  if (settings) u->settings = *settings;
  if (meta != NULL && (u->set_meta = cJSON_Duplicate(meta, 1)) == NULL) {
    th_upd_free(u);
    return NULL;
  }
  return u;
}

/* The per-message and per-part arrays of an append of n messages in parts (merged appends), in one allocation
 * (u->block): one malloc and one free an append instead of eight. */
int th_upd_arrays(upd_t *u, size_t n, size_t parts) {
  size_t ptrs = 5 * n * sizeof(cJSON *), entries = n * sizeof(engram_entry_t);
  size_t words = (2 * n + 3 * parts + 1) * sizeof(uint64_t), keys = n * sizeof *u->keys;
  char *b = engram_calloc(1, ptrs + entries + words + keys + n);
  if (b == NULL) return ENGRAM_ENOMEM;
  u->block = b;
  u->msgs = (cJSON **)(void *)b;
  u->meta = u->msgs + n;
  u->nodes = u->meta + n; /* 3 per message */
  u->entries = (engram_entry_t *)(void *)(b + ptrs);
  u->expires = (int64_t *)(void *)(b + ptrs + entries);
  u->versions = (uint64_t *)(void *)(b + ptrs + entries + n * sizeof(int64_t));
  u->part_off = u->versions + n; /* parts + 1 */
  u->part_count = u->part_off + parts + 1;
  u->part_trimmed = u->part_count + parts;
  u->keys = (char(*)[TH_KEY_MAX])(void *)(b + ptrs + entries + words);
  u->is_system = (unsigned char *)(b + ptrs + entries + words + keys);
  u->n = n;
  u->n_parts = parts;
  u->part_off[parts] = n;
  return 0;
}
