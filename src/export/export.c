/*
 * export.c — engram_export (include/engram/export.h, docs/export.md): a source, a namespace or the namespaces
 * under a prefix written as JSON Lines with every system field. It is a chain of ordinary calls, one at a time:
 * a list_keys page of keys (every namespace through the core's internal listing, manager/bulk.h, or one namespace
 * through the public one; 10,000 keys by default, since some sources sort their whole key set for each page),
 * then one retrieve_many with metadata per run of at most 1,000 keys of one namespace in that page, each item
 * written as a line into a 256 KiB buffer flushed to the destination. Memory stays one page of keys and 1,000
 * items whatever the size of the source. A path is written as a temporary file beside it and renamed at the end, so a failed export
 * leaves nothing half-written. This layer sits above the manager and uses only its public operations and bulk.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engram/export.h"
#include "engram/source.h"
#include "manager/bulk.h"
#include "shared/error.h"

#define PAGE_DEFAULT 10000
#define READ_BATCH 1000 /* keys per retrieve_many: the items held in memory at once */
#define PAGE_MAX 100000
#define FLUSH_AT (256u * 1024u)
#define PROGRESS_DEFAULT 10000

typedef struct {
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
  /* the page being read: keys and namespaces copied from the listing */
  char **keys, **nss;
  size_t n_keys, next;
  char *cursor;
  int last_page, done_listing;
  /* output */
  char *out;
  size_t out_len, out_cap;
  char *vbuf;
  size_t vbuf_cap;
  /* progress */
  engram_progress_fn progress;
  void *progress_ud;
  uint64_t every, next_progress;
  uint64_t items, bytes;
  char message[512];
} exp_t;

static void list_next(exp_t *e);
static void read_next(exp_t *e);

static void free_page(exp_t *e) {
  size_t i;
  for (i = 0; i < e->n_keys; i++) {
    engram_free(e->keys[i]);
    engram_free(e->nss[i]);
  }
  engram_free(e->keys);
  engram_free(e->nss);
  e->keys = e->nss = NULL;
  e->n_keys = e->next = 0;
}

static void exp_free(exp_t *e) {
  free_page(e);
  engram_free(e->source);
  engram_free(e->ns);
  engram_free(e->prefix);
  engram_free(e->pattern);
  engram_free(e->path);
  engram_free(e->tmp_path);
  engram_free(e->cursor);
  engram_free(e->out);
  engram_free(e->vbuf);
  engram_free(e);
}

/* Writes the buffered lines to the destination. 0 or ENGRAM_EIO (message set). */
static int flush_out(exp_t *e) {
  size_t off = 0;
  if (e->out_len == 0) return 0;
  if (e->write != NULL) {
    if (e->write(e->out, e->out_len, e->write_ud) < 0) {
      snprintf(e->message, sizeof e->message, "the write callback refused %zu bytes", e->out_len);
      return ENGRAM_EIO;
    }
  } else if (e->file != NULL) {
    if (fwrite(e->out, 1, e->out_len, e->file) != e->out_len) {
      snprintf(e->message, sizeof e->message, "writing %s: %s", e->path ? e->path : "the file", strerror(errno));
      return ENGRAM_EIO;
    }
  } else {
    while (off < e->out_len) {
      ssize_t w = write(e->fd, e->out + off, e->out_len - off);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) {
        snprintf(e->message, sizeof e->message, "writing fd %d: %s", e->fd, w < 0 ? strerror(errno) : "wrote nothing");
        return ENGRAM_EIO;
      }
      off += (size_t)w;
    }
  }
  e->bytes += e->out_len;
  e->out_len = 0;
  return 0;
}

static void report(exp_t *e) {
  engram_transfer_progress_t p;
  if (e->progress == NULL) return;
  memset(&p, 0, sizeof p);
  p.items = p.lines = e->items;
  p.bytes = e->bytes + e->out_len;
  e->progress(&p, e->progress_ud);
}

/* Ends the export: flush, close / rename or remove, the final callback once, free. */
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

/* Fails with the reply's message (a call's callback). */
static void fail_reply(exp_t *e, int status, const engram_reply_t *reply, const char *what) {
  snprintf(e->message, sizeof e->message, "%s: %s", what,
           reply && reply->message && reply->message[0] ? reply->message : engram_strerror(status));
  finish(e, status);
}

/* Fails because a call could not be submitted. */
static void fail_submit(exp_t *e, int status, const char *what) {
  snprintf(e->message, sizeof e->message, "%s: %s", what, engram_last_error());
  finish(e, status);
}

static int out_reserve(exp_t *e, size_t more) {
  size_t cap;
  char *p;
  if (e->out_len + more <= e->out_cap) return 0;
  cap = e->out_cap ? e->out_cap : FLUSH_AT + 4096;
  while (cap < e->out_len + more) cap *= 2;
  if ((p = engram_realloc(e->out, cap)) == NULL) return ENGRAM_ENOMEM;
  e->out = p;
  e->out_cap = cap;
  return 0;
}

static void put_raw(exp_t *e, const char *s, size_t n) {
  memcpy(e->out + e->out_len, s, n);
  e->out_len += n;
}

/* A JSON string as cJSON prints one: '"', '\' and control characters escaped, everything else as is. */
static int put_string(exp_t *e, const char *s) {
  static const char hex[] = "0123456789abcdef";
  size_t n = strlen(s), i;
  if (out_reserve(e, n * 6 + 2) != 0) return ENGRAM_ENOMEM;
  e->out[e->out_len++] = '"';
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    char *o = e->out + e->out_len;
    if (c >= 0x20 && c != '"' && c != '\\') {
      *o = (char)c;
      e->out_len++;
      continue;
    }
    o[0] = '\\';
    switch (c) {
      case '"': o[1] = '"'; e->out_len += 2; break;
      case '\\': o[1] = '\\'; e->out_len += 2; break;
      case '\b': o[1] = 'b'; e->out_len += 2; break;
      case '\f': o[1] = 'f'; e->out_len += 2; break;
      case '\n': o[1] = 'n'; e->out_len += 2; break;
      case '\r': o[1] = 'r'; e->out_len += 2; break;
      case '\t': o[1] = 't'; e->out_len += 2; break;
      default:
        o[1] = 'u'; o[2] = '0'; o[3] = '0'; o[4] = hex[c >> 4]; o[5] = hex[c & 15];
        e->out_len += 6;
    }
  }
  e->out[e->out_len++] = '"';
  return 0;
}

/* A JSON value printed unformatted, through a reused buffer (cJSON_PrintPreallocated), else a fresh print. */
static int put_json(exp_t *e, const cJSON *v) {
  size_t n;
  if (v == NULL) {
    if (out_reserve(e, 4) != 0) return ENGRAM_ENOMEM;
    put_raw(e, "null", 4);
    return 0;
  }
  if (e->vbuf == NULL) {
    if ((e->vbuf = engram_malloc(64 * 1024)) == NULL) return ENGRAM_ENOMEM;
    e->vbuf_cap = 64 * 1024;
  }
  if (cJSON_PrintPreallocated((cJSON *)v, e->vbuf, (int)e->vbuf_cap, 0)) {
    n = strlen(e->vbuf);
    if (out_reserve(e, n) != 0) return ENGRAM_ENOMEM;
    put_raw(e, e->vbuf, n);
  } else {
    char *s = cJSON_PrintUnformatted(v);
    if (s == NULL) return ENGRAM_ENOMEM;
    n = strlen(s);
    if (out_reserve(e, n) != 0) {
      cJSON_free(s);
      return ENGRAM_ENOMEM;
    }
    put_raw(e, s, n);
    cJSON_free(s);
  }
  return 0;
}

static int put_line(exp_t *e, const engram_item_t *it) {
  char num[160];
  int n;
  if (out_reserve(e, 8) != 0) return ENGRAM_ENOMEM;
  put_raw(e, "{\"key\":", 7);
  if (put_string(e, it->key) != 0) return ENGRAM_ENOMEM;
  if (out_reserve(e, 6) != 0) return ENGRAM_ENOMEM;
  put_raw(e, ",\"ns\":", 6);
  if (put_string(e, it->ns ? it->ns : "") != 0) return ENGRAM_ENOMEM;
  if (out_reserve(e, 9) != 0) return ENGRAM_ENOMEM;
  put_raw(e, ",\"value\":", 9);
  if (put_json(e, it->value) != 0) return ENGRAM_ENOMEM;
  if (out_reserve(e, 12) != 0) return ENGRAM_ENOMEM;
  put_raw(e, ",\"metadata\":", 12);
  if (put_json(e, it->metadata) != 0) return ENGRAM_ENOMEM;
  n = snprintf(num, sizeof num, ",\"created_at_ms\":%" PRId64 ",\"updated_at_ms\":%" PRId64
               ",\"expires_at_ms\":%" PRId64 ",\"version\":%" PRIu64 "}\n",
               it->created_at_ms, it->updated_at_ms, it->expires_at_ms, it->version);
  if (out_reserve(e, (size_t)n) != 0) return ENGRAM_ENOMEM;
  put_raw(e, num, (size_t)n);
  return 0;
}

/* The end of the run of keys of one namespace starting at e->next, at most READ_BATCH keys. */
static size_t run_end(exp_t *e) {
  size_t j = e->next + 1;
  while (j < e->n_keys && j - e->next < READ_BATCH && strcmp(e->nss[j], e->nss[e->next]) == 0) j++;
  return j;
}

static void on_read(int status, const engram_reply_t *reply, void *ud) {
  exp_t *e = ud;
  size_t i;
  if (status != 0) {
    fail_reply(e, status, reply, "retrieve_many");
    return;
  }
  for (i = 0; i < reply->n_items; i++) {
    const engram_item_t *it = &reply->items[i];
    if (it->status != 0) continue; /* deleted or expired since it was listed */
    if (put_line(e, it) != 0) {
      snprintf(e->message, sizeof e->message, "out of memory writing a line");
      finish(e, ENGRAM_ENOMEM);
      return;
    }
    e->items++;
    if (e->out_len >= FLUSH_AT && (status = flush_out(e)) != 0) {
      finish(e, status);
      return;
    }
  }
  if (e->progress != NULL && e->items >= e->next_progress) {
    report(e);
    while (e->next_progress <= e->items) e->next_progress += e->every;
  }
  read_next(e);
}

/* Reads the next run of the page, or lists the next page. */
static void read_next(exp_t *e) {
  size_t end;
  int rc;
  engram_opts_t o;
  if (e->next >= e->n_keys) {
    free_page(e);
    if (e->done_listing) finish(e, 0);
    else list_next(e);
    return;
  }
  end = run_end(e);
  o = e->call;
  o.ns = e->nss[e->next];
  o.flags = ENGRAM_OPT_INCLUDE_METADATA;
  rc = engram_retrieve_many(e->mgr, (const char *const *)(e->keys + e->next), end - e->next, &o, on_read, e);
  e->next = end;
  if (rc != 0) fail_submit(e, rc, "retrieve_many");
}

/* 1 when ns is under the prefix; -1 when it sorts after every namespace under it (the listing can stop). */
static int ns_wanted(exp_t *e, const char *ns) {
  int c;
  if (e->prefix == NULL) return 1;
  c = strncmp(ns, e->prefix, e->prefix_len);
  if (c == 0) return 1;
  return c > 0 ? -1 : 0;
}

static void on_list(int status, const engram_reply_t *reply, void *ud) {
  exp_t *e = ud;
  size_t i, n = 0;
  if (status != 0) {
    fail_reply(e, status, reply, "list_keys");
    return;
  }
  engram_free(e->cursor);
  e->cursor = NULL;
  if (reply->cursor == NULL) e->done_listing = 1;
  else if ((e->cursor = engram_strdup(reply->cursor)) == NULL) goto nomem;
  if (reply->n_items > 0) {
    if ((e->keys = engram_calloc(reply->n_items, sizeof(char *))) == NULL ||
        (e->nss = engram_calloc(reply->n_items, sizeof(char *))) == NULL)
      goto nomem;
  }
  for (i = 0; i < reply->n_items; i++) {
    const char *ns = e->ns ? e->ns : (reply->items[i].ns ? reply->items[i].ns : "");
    int w = ns_wanted(e, ns);
    if (w < 0) {
      e->done_listing = 1;
      break;
    }
    if (w == 0) continue;
    e->n_keys = n + 1; /* so free_page sees what was copied */
    if ((e->keys[n] = engram_strdup(reply->items[i].key)) == NULL || (e->nss[n] = engram_strdup(ns)) == NULL) goto nomem;
    n++;
  }
  e->n_keys = n;
  e->next = 0;
  read_next(e);
  return;
nomem:
  snprintf(e->message, sizeof e->message, "out of memory copying a page of keys");
  finish(e, ENGRAM_ENOMEM);
}

static int list_submit(exp_t *e) {
  if (e->ns != NULL) return engram_list_keys(e->mgr, e->pattern, e->page, e->cursor, &e->call, on_list, e);
  return engram__list_keys_all(e->mgr, e->pattern, e->page, e->cursor, &e->call, on_list, e);
}

static void list_next(exp_t *e) {
  int rc = list_submit(e);
  if (rc != 0) fail_submit(e, rc, "list_keys");
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
  if ((rc = list_submit(e)) != 0) {
    if (e->own_file) {
      fclose(e->file);
      unlink(e->tmp_path);
    }
    exp_free(e);
    return rc; /* the listing's own last error stays */
  }
  return 0;
}
