/*
 * export.c — engram_export (include/engram/export.h, docs/export.md): a source, a namespace or the namespaces
 * under a prefix written as JSON Lines with every system field. It is a pipeline of ordinary calls: list_keys pages
 * of keys (every namespace through the core's internal listing, manager/bulk.h, or one namespace through the
 * public one; 50,000 keys by default, since the cache walks its whole table for every page), each page cut into
 * batches of at most 1,000 keys of one namespace, and one retrieve_many with metadata per batch, READ_DEPTH of them
 * in flight, so that a threaded source (SQLite) reads the next batches while this thread prints one. The next page
 * is listed while the last batches of the current one are read. Lines leave in listing order: the oldest batch
 * prints straight into the 256 KiB output buffer; a batch that answers before it keeps its lines until its turn.
 * Lines are printed by jsonl_write.c. Memory stays about two pages of keys and READ_DEPTH batches whatever the size
 * of the source. A source that lists whole items (ENGRAM_SOURCE_LIST_ITEMS: SQLite) is read another way: pages of
 * at most ITEM_PAGE whole items, each one ordered range scan (engram__list_items), the next page asked for as soon
 * as one answers and before its lines are printed, so the source reads a page while this thread prints the last;
 * memory is then two pages of items. The export tries that first and falls back to keys when the source refuses
 * it (ENGRAM_ENOTSUP). A path is written as a temporary file beside it and renamed at the end, so a failed export leaves
 * nothing half-written. A failure stops new calls; the final callback runs once the calls out have answered. This
 * layer sits above the manager and uses only its public operations and bulk.h. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engram/export.h"
#include "engram/source.h"
#include "manager/bulk.h"
#include "shared/error.h"
#include "jsonl_write.h"

#define PAGE_DEFAULT 50000
#define READ_BATCH 1000 /* keys per retrieve_many */
#define READ_DEPTH 4    /* retrieve_many calls in flight */
#define PAGE_MAX 100000
#define FLUSH_AT (256u * 1024u)
#define PROGRESS_DEFAULT 10000
#define ITEM_PAGE 2000  /* whole items a page when the source lists them (two pages in memory: ~1.5 MB of text) */

typedef struct exp_s exp_t;

/* One retrieve_many: a run of at most READ_BATCH keys of one namespace, copied from a listing page into one
 * allocation (the batch itself, then the key pointers, then the strings). */
typedef struct batch_s {
  struct batch_s *next;
  exp_t *e;
  const char *ns;
  const char **keys;
  size_t n;
  int done;             /* its reply has been printed */
  uint64_t items;       /* lines it printed */
  engram__obuf_t out;   /* its lines, when it answered before a batch ahead of it was written */
} batch_t;

struct exp_s {
  engram_manager_t *mgr;
  engram_transfer_cb cb;
  void *ud;
  engram_opts_t call; /* source, ns (one namespace) / NULL, deadline, cq, INCLUDE_METADATA for the reads */
  char *source, *ns, *prefix, *pattern;
  size_t prefix_len;
  int page;
  /* destination */
  FILE *file;
  int fd, use_fd, own_file;
  engram_write_fn write;
  void *write_ud;
  char *path, *tmp_path;
  /* the pipeline: batches in key order, head = the oldest not yet written */
  batch_t *head, *tail, *to_submit;
  size_t queued;      /* batches listed and not yet submitted */
  unsigned inflight;  /* retrieve_many calls out */
  int listing;        /* a list_keys call out */
  char *cursor;
  int done_listing;
  int whole_items;    /* the source lists whole items: no retrieve_many */
  int status;         /* the first failure; the export ends once nothing is out */
  /* output */
  engram__obuf_t out;
  /* progress */
  engram_progress_fn progress;
  void *progress_ud;
  uint64_t every, next_progress;
  uint64_t items, bytes;
  char message[512];
};

static void pump(exp_t *e);

static void batch_free(batch_t *b) {
  engram__obuf_free(&b->out);
  engram_free(b);
}

static void exp_free(exp_t *e) {
  while (e->head != NULL) {
    batch_t *b = e->head;
    e->head = b->next;
    batch_free(b);
  }
  engram_free(e->source);
  engram_free(e->ns);
  engram_free(e->prefix);
  engram_free(e->pattern);
  engram_free(e->path);
  engram_free(e->tmp_path);
  engram_free(e->cursor);
  engram__obuf_free(&e->out);
  engram_free(e);
}

/* Writes the buffered lines to the destination. 0 or ENGRAM_EIO (message set). */
static int flush_out(exp_t *e) {
  size_t off = 0, len = e->out.len;
  const char *p = e->out.p;
  if (len == 0) return 0;
  if (e->write != NULL) {
    if (e->write(p, len, e->write_ud) < 0) {
      snprintf(e->message, sizeof e->message, "the write callback refused %zu bytes", len);
      return ENGRAM_EIO;
    }
  } else if (e->file != NULL) {
    if (fwrite(p, 1, len, e->file) != len) {
      snprintf(e->message, sizeof e->message, "writing %s: %s", e->path ? e->path : "the file", strerror(errno));
      return ENGRAM_EIO;
    }
  } else {
    while (off < len) {
      ssize_t w = write(e->fd, p + off, len - off);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) {
        snprintf(e->message, sizeof e->message, "writing fd %d: %s", e->fd, w < 0 ? strerror(errno) : "wrote nothing");
        return ENGRAM_EIO;
      }
      off += (size_t)w;
    }
  }
  e->bytes += len;
  e->out.len = 0;
  return 0;
}

static void report(exp_t *e) {
  engram_transfer_progress_t p;
  if (e->progress == NULL) return;
  memset(&p, 0, sizeof p);
  p.items = p.lines = e->items;
  p.bytes = e->bytes + e->out.len;
  e->progress(&p, e->progress_ud);
}

/* Ends the export (nothing is out any more): flush, close / rename or remove, the final callback once, free. */
static void finish(exp_t *e, int status) {
  engram_transfer_result_t r;
  if (status == 0) status = flush_out(e);
  if (e->file != NULL && status == 0 && fflush(e->file) != 0) {
    snprintf(e->message, sizeof e->message, "writing %s: %s", e->path ? e->path : "the file", strerror(errno));
    status = ENGRAM_EIO;
  }
  if (e->own_file) {
    if (status == 0 && fsync(fileno(e->file)) != 0) {
      snprintf(e->message, sizeof e->message, "fsync %s: %s", e->tmp_path, strerror(errno));
      status = ENGRAM_EIO;
    }
    if (fclose(e->file) != 0 && status == 0) {
      snprintf(e->message, sizeof e->message, "closing %s: %s", e->tmp_path, strerror(errno));
      status = ENGRAM_EIO;
    }
    e->file = NULL;
    if (status == 0 && rename(e->tmp_path, e->path) != 0) {
      snprintf(e->message, sizeof e->message, "renaming %s to %s: %s", e->tmp_path, e->path, strerror(errno));
      status = ENGRAM_EIO;
    }
    if (status != 0) unlink(e->tmp_path);
  }
  if (status == 0) {
    e->message[0] = '\0';
    report(e);
  }
  memset(&r, 0, sizeof r);
  r.items = r.lines = e->items;
  r.bytes = e->bytes;
  r.message = e->message;
  e->cb(status, &r, e->ud);
  exp_free(e);
}

/* Records the first failure (the message too); the export ends when the calls out have answered. */
static void fail(exp_t *e, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail(exp_t *e, int status, const char *fmt, ...) {
  va_list ap;
  if (e->status != 0) return;
  e->status = status;
  va_start(ap, fmt);
  vsnprintf(e->message, sizeof e->message, fmt, ap);
  va_end(ap);
}

static void fail_reply(exp_t *e, int status, const engram_reply_t *reply, const char *what) {
  fail(e, status, "%s: %s", what, reply && reply->message && reply->message[0] ? reply->message : engram_strerror(status));
}

/* Writes the batches at the head that have answered, in order; reports progress. */
static void drain(exp_t *e) {
  int rc;
  while (e->status == 0 && e->head != NULL && e->head->done) {
    batch_t *b = e->head;
    if (b->out.len > 0) {
      if (e->out.len == 0 && b->out.len >= FLUSH_AT) { /* hand its buffer over instead of copying it */
        engram__obuf_t t = e->out;
        e->out = b->out;
        b->out = t;
      } else {
        if (e->out.len + b->out.len > e->out.cap) {
          size_t cap = e->out.cap ? e->out.cap : FLUSH_AT + 4096;
          char *p;
          while (cap < e->out.len + b->out.len) cap *= 2;
          if ((p = engram_realloc(e->out.p, cap)) == NULL) {
            fail(e, ENGRAM_ENOMEM, "out of memory writing a line");
            return;
          }
          e->out.p = p;
          e->out.cap = cap;
        }
        memcpy(e->out.p + e->out.len, b->out.p, b->out.len);
        e->out.len += b->out.len;
      }
    }
    e->items += b->items;
    e->head = b->next;
    if (e->head == NULL) e->tail = NULL;
    batch_free(b);
    if (e->out.len >= FLUSH_AT && (rc = flush_out(e)) != 0) {
      e->status = rc; /* flush_out set the message */
      return;
    }
  }
  if (e->progress != NULL && e->items >= e->next_progress) {
    report(e);
    while (e->next_progress <= e->items) e->next_progress += e->every;
  }
}

static void on_read(int status, const engram_reply_t *reply, void *ud) {
  batch_t *b = ud;
  exp_t *e = b->e;
  size_t i;
  e->inflight--;
  b->done = 1;
  if (status != 0) {
    fail_reply(e, status, reply, "retrieve_many");
  } else if (e->status == 0) {
    /* The head's lines go straight to the output; a batch that answered early keeps them until its turn. */
    engram__obuf_t *dst = b == e->head ? &e->out : &b->out;
    for (i = 0; i < reply->n_items; i++) {
      const engram_item_t *it = &reply->items[i];
      if (it->status != 0) continue; /* deleted or expired since it was listed */
      if (engram__jsonl_put_item(dst, it) != 0) {
        fail(e, ENGRAM_ENOMEM, "out of memory writing a line");
        break;
      }
      b->items++;
      if (dst == &e->out && e->out.len >= FLUSH_AT) {
        int rc = flush_out(e);
        if (rc != 0) {
          e->status = rc;
          break;
        }
      }
    }
    drain(e);
  }
  pump(e);
}

static void submit_read(exp_t *e, batch_t *b) {
  engram_opts_t o = e->call;
  int rc;
  o.ns = b->ns;
  o.flags = ENGRAM_OPT_INCLUDE_METADATA;
  rc = engram__retrieve_many_text(e->mgr, b->keys, b->n, &o, on_read, b); /* raw JSON text where a source keeps it */
  if (rc != 0) fail(e, rc, "retrieve_many: %s", engram_last_error());
  else e->inflight++;
}

static void on_list(int status, const engram_reply_t *reply, void *ud);
static void on_items(int status, const engram_reply_t *reply, void *ud);

static int list_submit(exp_t *e) {
  if (e->whole_items)
    return engram__list_items(e->mgr, e->pattern, e->page < ITEM_PAGE ? e->page : ITEM_PAGE, e->cursor, &e->call,
                              on_items, e);
  if (e->ns != NULL) return engram_list_keys(e->mgr, e->pattern, e->page, e->cursor, &e->call, on_list, e);
  return engram__list_keys_all(e->mgr, e->pattern, e->page, e->cursor, &e->call, on_list, e);
}

/* Keeps READ_DEPTH reads out and the next page listed while the last batches of this one are read; ends the
 * export when everything is written (or something failed) and nothing is out. */
static void pump(exp_t *e) {
  while (e->status == 0 && e->inflight < READ_DEPTH && e->to_submit != NULL) {
    batch_t *b = e->to_submit;
    e->to_submit = b->next;
    e->queued--;
    submit_read(e, b);
  }
  if (e->status == 0 && !e->listing && !e->done_listing && e->queued <= READ_DEPTH) {
    int rc = list_submit(e);
    if (rc != 0) fail(e, rc, "list_keys: %s", engram_last_error());
    else e->listing = 1;
  }
  if (e->inflight == 0 && !e->listing) {
    if (e->status != 0) finish(e, e->status);
    else if (e->done_listing && e->head == NULL) finish(e, 0);
  }
}

/* 1 when ns is under the prefix; -1 when it sorts after every namespace under it (the listing can stop). */
static int ns_wanted(exp_t *e, const char *ns) {
  int c;
  if (e->prefix == NULL) return 1;
  c = strncmp(ns, e->prefix, e->prefix_len);
  if (c == 0) return 1;
  return c > 0 ? -1 : 0;
}

static const char *item_ns(exp_t *e, const engram_item_t *it) { return e->ns ? e->ns : (it->ns ? it->ns : ""); }

/* Appends the keys items[from, to) (all of namespace ns) as one batch. 0 or ENGRAM_ENOMEM. */
static int add_batch(exp_t *e, const engram_item_t *items, size_t from, size_t to, const char *ns) {
  size_t bytes = sizeof(batch_t) + (to - from) * sizeof(char *) + strlen(ns) + 1, i;
  batch_t *b;
  char *p;
  for (i = from; i < to; i++) bytes += strlen(items[i].key) + 1;
  if ((b = engram_malloc(bytes)) == NULL) return ENGRAM_ENOMEM;
  memset(b, 0, sizeof *b);
  b->e = e;
  b->keys = (const char **)(b + 1);
  p = (char *)(b->keys + (to - from));
  for (i = from; i < to; i++) {
    size_t n = strlen(items[i].key) + 1;
    memcpy(p, items[i].key, n);
    b->keys[b->n++] = p;
    p += n;
  }
  memcpy(p, ns, strlen(ns) + 1);
  b->ns = p;
  if (e->tail != NULL) e->tail->next = b;
  else e->head = b;
  e->tail = b;
  if (e->to_submit == NULL) e->to_submit = b;
  e->queued++;
  return 0;
}

/* The start of a listing page's answer, either kind: 0 to go on (the old cursor dropped), or 1 when the page is
 * not to be read (the listing failed, or the export already stopped), the export pumped. */
static int page_done_early(exp_t *e, int status, const engram_reply_t *reply) {
  e->listing = 0;
  if (status != 0) fail_reply(e, status, reply, "list_keys");
  if (status != 0 || e->status != 0) {
    pump(e);
    return 1;
  }
  engram_free(e->cursor);
  e->cursor = NULL;
  return 0;
}

static void on_list(int status, const engram_reply_t *reply, void *ud) {
  exp_t *e = ud;
  size_t i = 0, n = reply ? reply->n_items : 0;
  if (page_done_early(e, status, reply)) return;
  if (reply->cursor == NULL) e->done_listing = 1;
  else if ((e->cursor = engram_strdup(reply->cursor)) == NULL) goto nomem;
  while (i < n) {
    const char *ns = item_ns(e, &reply->items[i]);
    int w = ns_wanted(e, ns);
    size_t j = i + 1;
    if (w < 0) {
      e->done_listing = 1;
      break;
    }
    while (j < n && j - i < READ_BATCH && strcmp(item_ns(e, &reply->items[j]), ns) == 0) j++;
    if (w > 0 && add_batch(e, reply->items, i, j, ns) != 0) goto nomem;
    i = j;
  }
  pump(e);
  return;
nomem:
  fail(e, ENGRAM_ENOMEM, "out of memory copying a page of keys");
  pump(e);
}

/* A page of whole items: the next page is asked for first (the source reads it while this one prints), unless
 * this one ends the listing or passes the namespace prefix; then the lines go straight to the output. */
static void on_items(int status, const engram_reply_t *reply, void *ud) {
  exp_t *e = ud;
  size_t i, n = reply ? reply->n_items : 0, end = n;
  if (page_done_early(e, status, reply)) return;
  if (e->prefix != NULL) /* the items past the prefix, if any, end the page and the listing */
    for (end = 0; end < n && ns_wanted(e, item_ns(e, &reply->items[end])) >= 0; end++) {}
  if (reply->cursor == NULL || end < n) e->done_listing = 1;
  else if ((e->cursor = engram_strdup(reply->cursor)) == NULL) {
    fail(e, ENGRAM_ENOMEM, "out of memory copying a cursor");
    pump(e);
    return;
  }
  if (!e->done_listing) { /* the next page, read while this one prints */
    int rc = list_submit(e);
    if (rc != 0) fail(e, rc, "list_keys: %s", engram_last_error());
    else e->listing = 1;
  }
  for (i = 0; i < end && e->status == 0; i++) {
    const engram_item_t *it = &reply->items[i];
    if (it->value == NULL || (e->prefix != NULL && ns_wanted(e, item_ns(e, it)) == 0)) continue;
    if (engram__jsonl_put_item(&e->out, it) != 0) {
      fail(e, ENGRAM_ENOMEM, "out of memory writing a line");
      break;
    }
    e->items++;
    if (e->out.len >= FLUSH_AT && (status = flush_out(e)) != 0) e->status = status; /* flush_out set the message */
  }
  if (e->status == 0 && e->progress != NULL && e->items >= e->next_progress) {
    report(e);
    while (e->next_progress <= e->items) e->next_progress += e->every;
  }
  pump(e); /* ends the export when this was the last page (or something failed) */
}

static int dup_opt(char **dst, const char *s) {
  if (s == NULL) return 0;
  return (*dst = engram_strdup(s)) == NULL ? ENGRAM_ENOMEM : 0;
}

int engram_export(engram_manager_t *mgr, const engram_export_opts_t *opts, engram_transfer_cb cb, void *ud) {
  exp_t *e;
  int n_dest, rc;
  engram__error_clear();
  if (mgr == NULL) return engram__error(ENGRAM_EINVAL, "mgr: NULL");
  if (opts == NULL) return engram__error(ENGRAM_EINVAL, "opts: NULL (a destination is needed)");
  if (cb == NULL) return engram__error(ENGRAM_EINVAL, "cb: NULL");
  n_dest = (opts->path != NULL) + (opts->file != NULL) + ((opts->flags & ENGRAM_TRANSFER_FD) != 0) + (opts->write != NULL);
  if (n_dest != 1)
    return engram__error(ENGRAM_EINVAL, "opts: %s destination (give one of path, file, fd, write)", n_dest ? "more than one" : "no");
  if (opts->flags & ~(unsigned)ENGRAM_TRANSFER_FD) return engram__error(ENGRAM_EINVAL, "opts.flags: unknown bits 0x%x", opts->flags);
  if (opts->page < 0 || opts->page > PAGE_MAX) return engram__error(ENGRAM_EINVAL, "opts.page: %d, must be 0..%d", opts->page, PAGE_MAX);
  if (opts->ns != NULL && opts->ns_prefix != NULL) return engram__error(ENGRAM_EINVAL, "opts: ns and ns_prefix are exclusive");
  if (opts->pattern != NULL && engram_pattern_check(opts->pattern) != 0)
    return engram__error(ENGRAM_EINVAL, "opts.pattern: not a valid glob (unterminated [ or trailing \\)");
  if ((opts->flags & ENGRAM_TRANSFER_FD) && opts->fd < 0) return engram__error(ENGRAM_EINVAL, "opts.fd: %d", opts->fd);
  if ((e = engram_calloc(1, sizeof *e)) == NULL) return engram__error(ENGRAM_ENOMEM, "out of memory");
  e->mgr = mgr;
  e->cb = cb;
  e->ud = ud;
  e->page = opts->page ? opts->page : PAGE_DEFAULT;
  e->progress = opts->progress;
  e->progress_ud = opts->progress_ud;
  e->every = opts->progress_every ? opts->progress_every : PROGRESS_DEFAULT;
  e->next_progress = e->every;
  if (dup_opt(&e->source, opts->source) || dup_opt(&e->ns, opts->ns) || dup_opt(&e->pattern, opts->pattern) ||
      (opts->ns_prefix != NULL && opts->ns_prefix[0] != '\0' && dup_opt(&e->prefix, opts->ns_prefix)) ||
      dup_opt(&e->path, opts->path)) {
    exp_free(e);
    return engram__error(ENGRAM_ENOMEM, "out of memory");
  }
  e->prefix_len = e->prefix ? strlen(e->prefix) : 0;
  e->call.source = e->source;
  e->call.ns = e->ns;
  e->call.deadline_ms = opts->deadline_ms;
  e->call.cq = opts->cq;
  e->file = opts->file;
  e->write = opts->write;
  e->write_ud = opts->write_ud;
  e->use_fd = (opts->flags & ENGRAM_TRANSFER_FD) != 0;
  e->fd = opts->fd;
  if (e->path != NULL) {
    size_t n = strlen(e->path) + 16;
    int fd;
    if ((e->tmp_path = engram_malloc(n)) == NULL) {
      exp_free(e);
      return engram__error(ENGRAM_ENOMEM, "out of memory");
    }
    snprintf(e->tmp_path, n, "%s.tmp.XXXXXX", e->path);
    if ((fd = mkstemp(e->tmp_path)) < 0) {
      rc = engram__error(ENGRAM_EIO, "path: cannot create %s: %s", e->tmp_path, strerror(errno));
      exp_free(e);
      return rc;
    }
    (void)fchmod(fd, 0644); /* mkstemp makes 0600; an export is an ordinary file */
    if ((e->file = fdopen(fd, "w")) == NULL) {
      rc = engram__error(ENGRAM_EIO, "path: %s: %s", e->tmp_path, strerror(errno));
      close(fd);
      unlink(e->tmp_path);
      exp_free(e);
      return rc;
    }
    e->own_file = 1;
  }
  e->listing = 1;
  e->whole_items = 1; /* a source without ENGRAM_SOURCE_LIST_ITEMS refuses it at once: then keys and reads */
  if ((rc = list_submit(e)) == ENGRAM_ENOTSUP) {
    e->whole_items = 0;
    rc = list_submit(e);
  }
  if (rc != 0) {
    if (e->own_file) {
      fclose(e->file);
      unlink(e->tmp_path);
    }
    exp_free(e);
    return rc; /* the listing's own last error stays */
  }
  return 0;
}
