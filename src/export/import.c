/*
 * import.c — engram_import (include/engram/export.h, docs/export.md): JSON Lines read back into a source. Lines
 * are read one at a time through a bounded line reader, each read in one pass by jsonl_read.c straight into the
 * key, namespace, value and metadata a store takes — or, for a line that reader leaves undecided, checked by the
 * strict path (the text first, as every JSON boundary of engram does, then cJSON and the members), which gives the
 * verdict and the message of a bad line — and written as stores with at most `window` in flight: replicas
 * that keep version, timestamps and expiry (the manager's internal path, manager/bulk.h), or ordinary stores
 * with ENGRAM_IMPORT_FRESH. Every store's completion reads the next line, so memory is the window plus one
 * line. With ENGRAM_IMPORT_VALIDATE_FIRST a first pass checks every line and rewinds, and nothing is written
 * unless all are good. The chain starts from the answer of a list_sources call, so no callback ever runs inside
 * engram_import, and the target's type is known (a source that cannot take replicas is refused before any
 * write).
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "engram/export.h"
#include "engram/source.h"
#include "manager/bulk.h"
#include "manager/manager.h"
#include "shared/error.h"
#include "jsonl_read.h"

#define WINDOW_DEFAULT 256
#define WINDOW_BATCHED_DEFAULT 4096 /* items in flight when the source takes batches of replicas */
#define BATCH_MAX_ITEMS 1000        /* entries of one batch (window / BATCHES, at most this) */
#define BATCHES 4                   /* batches in flight */
#define WINDOW_MAX 65536
#define LINE_MAX_DEFAULT ((size_t)64 << 20)
#define READ_CHUNK (64u * 1024u)
#define PROGRESS_DEFAULT 10000

typedef struct imp_s imp_t;

/* A store in flight: the callback's user data. `window` of them are allocated with the import and reused. */
typedef struct slot_s {
  imp_t *imp;
  uint64_t line;
  struct slot_s *next_free;
} slot_t;

/* A batch of replicas of one namespace (ENGRAM_SOURCE_REPLICA_MANY): one store_many. Keys are copied into one
 * growing buffer (the reader reuses its own); values and metadata are the parsed trees, handed over at submit. */
typedef struct bat_s {
  imp_t *imp;
  struct bat_s *next_free;
  size_t n;
  char ns[ENGRAM_NAMESPACE_MAX + 1];
  engram_entry_t *e;
  size_t *koff;
  char *keys;
  size_t klen, kcap;
  int64_t *expires, *created, *updated;
  uint64_t *version, *line;
} bat_t;

struct imp_s {
  engram_manager_t *mgr;
  engram_transfer_cb cb;
  void *ud;
  engram_opts_t call;
  char *source, *ns;
  unsigned flags, window;
  size_t max_line;
  /* input */
  FILE *file;
  int fd, use_fd, own_file;
  engram_read_fn read;
  engram_rewind_fn rewind;
  void *read_ud;
  char *path;
  /* line reader: buf[start..end) unread bytes */
  char *buf;
  size_t start, end, cap;
  int eof;
  uint64_t bytes;
  /* progress and counts */
  engram_progress_fn progress;
  void *progress_ud;
  uint64_t every, next_progress;
  uint64_t lines, items, skipped, expired, bad_lines, bad_line;
  int validating;
  engram__jsonl_reader_t rd; /* one line's key and namespace */
  /* writing */
  slot_t *slots, *free_slots;
  unsigned inflight;
  /* batches (when the source takes them): cur fills, ready waits for the mailbox (EBUSY), the rest are out */
  int batched;
  size_t batch_cap;
  bat_t *bats, *free_bats, *cur, *ready;
  int stopping, status, finished;
  int window_default; /* opts.window was 0 */
  char message[512];
};

/* ---- input ---- */

static long raw_read(imp_t *m, char *dst, size_t cap) {
  if (m->read != NULL) return m->read(dst, cap, m->read_ud);
  if (m->file != NULL) {
    size_t n = fread(dst, 1, cap, m->file);
    if (n == 0 && ferror(m->file)) return -1;
    return (long)n;
  }
  for (;;) {
    ssize_t n = read(m->fd, dst, cap);
    if (n < 0 && errno == EINTR) continue;
    return (long)n;
  }
}

/* The next line (without its "\n", NUL-terminated in place) in *line and *len. Returns 1, 0 at the end, ENGRAM_EIO, or
 * 2 for a line longer than max_line (its bytes are skipped up to the next newline). */
static int next_line(imp_t *m, char **line, size_t *len) {
  size_t scanned = 0;
  int too_long = 0;
  for (;;) {
    char *nl = memchr(m->buf + m->start + scanned, '\n', m->end - m->start - scanned);
    long got;
    if (nl != NULL) {
      size_t n = (size_t)(nl - (m->buf + m->start));
      *nl = '\0';
      *line = m->buf + m->start;
      *len = n;
      m->start += n + 1;
      return too_long || n > m->max_line ? 2 : 1;
    }
    scanned = m->end - m->start;
    if (m->eof) {
      if (scanned == 0) return too_long ? 2 : 0;
      /* a last line without "\n" */
      m->buf[m->end] = '\0';
      *line = m->buf + m->start;
      *len = scanned;
      m->start = m->end;
      return too_long || scanned > m->max_line ? 2 : 1;
    }
    if (scanned > m->max_line) { /* drop what we have of an over-long line and keep looking for its end */
      too_long = 1;
      m->start = m->end = 0;
      scanned = 0;
    }
    if (m->start > 0 && m->start == m->end) m->start = m->end = 0;
    if (m->cap - m->end < READ_CHUNK + 1) {
      if (m->start > 0) { /* slide the unread bytes down */
        memmove(m->buf, m->buf + m->start, m->end - m->start);
        m->end -= m->start;
        m->start = 0;
      }
      if (m->cap - m->end < READ_CHUNK + 1) {
        size_t cap = m->cap * 2;
        char *p = engram_realloc(m->buf, cap);
        if (p == NULL) return ENGRAM_ENOMEM;
        m->buf = p;
        m->cap = cap;
      }
    }
    got = raw_read(m, m->buf + m->end, READ_CHUNK);
    if (got < 0) {
      snprintf(m->message, sizeof m->message, "reading %s: %s", m->path ? m->path : "the input",
               m->read ? "the read callback failed" : strerror(errno));
      return ENGRAM_EIO;
    }
    if (got == 0) m->eof = 1;
    m->end += (size_t)got;
    m->bytes += (uint64_t)got;
  }
}

static int input_rewind(imp_t *m) {
  m->start = m->end = 0;
  m->eof = 0;
  m->bytes = 0;
  if (m->read != NULL) return m->rewind(m->read_ud) < 0 ? -1 : 0;
  if (m->file != NULL) return fseek(m->file, 0, SEEK_SET);
  return lseek(m->fd, 0, SEEK_SET) < 0 ? -1 : 0;
}

/* ---- one line ---- */

typedef engram__jsonl_item_t item_t;

/* Parses and checks one line into *it (value and metadata owned by the caller on success): the fast reader, and
 * the strict path for what it leaves undecided. 0, or -1 with err set, or ENGRAM_ENOMEM. */
static int parse_line(imp_t *m, const char *line, size_t len, item_t *it, char *err, size_t errlen) {
  int rc = engram__jsonl_read(&m->rd, line, len, it);
  if (rc == ENGRAM__JSONL_READ) return 0;
  if (rc == ENGRAM_ENOMEM) return rc;
  return engram__jsonl_read_strict(&m->rd, line, len, it, err, errlen);
}

static void item_free(item_t *it) {
  cJSON_Delete(it->value);
  cJSON_Delete(it->metadata);
  it->value = it->metadata = NULL;
}

static int blank(const char *s, size_t n) {
  size_t i;
  for (i = 0; i < n; i++)
    if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r') return 0;
  return 1;
}

/* ---- the chain ---- */

static void fill(imp_t *m);

static void report(imp_t *m) {
  engram_transfer_progress_t p;
  if (m->progress == NULL) return;
  memset(&p, 0, sizeof p);
  p.items = m->items;
  p.lines = m->lines;
  p.skipped = m->skipped;
  p.bytes = m->bytes - (m->end - m->start);
  p.validating = m->validating;
  m->progress(&p, m->progress_ud);
}

static void bat_clear(bat_t *b) {
  size_t i;
  for (i = 0; i < b->n; i++) {
    cJSON_Delete((cJSON *)b->e[i].value);
    cJSON_Delete((cJSON *)b->e[i].metadata);
    b->e[i].value = b->e[i].metadata = NULL;
  }
  b->n = 0;
  b->klen = 0;
}

static void bats_free(imp_t *m) {
  size_t i;
  if (m->bats == NULL) return;
  for (i = 0; i < BATCHES; i++) {
    bat_clear(&m->bats[i]);
    engram_free(m->bats[i].e);
    engram_free(m->bats[i].koff);
    engram_free(m->bats[i].keys);
    engram_free(m->bats[i].expires);
    engram_free(m->bats[i].version);
    engram_free(m->bats[i].line);
  }
  engram_free(m->bats);
  m->bats = NULL;
}

static void imp_free(imp_t *m) {
  bats_free(m);
  if (m->own_file && m->file != NULL) fclose(m->file);
  engram_free(m->buf);
  engram_free(m->source);
  engram_free(m->ns);
  engram_free(m->path);
  engram_free(m->slots);
  engram_free(m);
}

static void finish(imp_t *m) {
  engram_transfer_result_t r;
  if (m->status == 0) {
    if (m->bad_line == 0) m->message[0] = '\0'; /* SKIP_BAD keeps the first bad line's message */
    report(m);
  }
  memset(&r, 0, sizeof r);
  r.items = m->items;
  r.lines = m->lines;
  r.skipped = m->skipped;
  r.bytes = m->bytes - (m->end - m->start);
  r.expired = m->expired;
  r.bad_lines = m->bad_lines;
  r.bad_line = m->bad_line;
  r.message = m->message;
  m->finished = 1;
  /* the items are written: windows begun from now on do not use messages this process kept before (nor during).
   * Not when the manager closed under the import: it may be gone (a completion queue polled later), and no window
   * comes after it. */
  if (m->status != ENGRAM_ECANCELED && m->status != ENGRAM_ECLOSED)
    atomic_fetch_add_explicit(&m->mgr->restore_epoch, 1, memory_order_acq_rel);
  m->cb(m->status, &r, m->ud);
  imp_free(m);
}

/* Stops reading; the import ends when the stores in flight have answered. */
static void stop(imp_t *m, int status) {
  if (m->stopping) return;
  m->stopping = 1;
  m->status = status;
}

/* A failed store of line `line`: counted and skipped (SKIP_BAD), or the end of the import. */
static void store_failed(imp_t *m, uint64_t line, int status, const char *why) {
  char what[400];
  snprintf(what, sizeof what, "store failed: %s", why);
  if (m->flags & ENGRAM_IMPORT_SKIP_BAD) {
    m->skipped++;
    if (m->bad_line == 0) {
      m->bad_line = line;
      snprintf(m->message, sizeof m->message, "line %llu: %s", (unsigned long long)line, what);
    }
  } else if (!m->stopping) {
    if (m->bad_line == 0 || m->bad_line > line) m->bad_line = line;
    snprintf(m->message, sizeof m->message, "line %llu: %s", (unsigned long long)line, what);
    stop(m, status);
  }
}

/* A bad line: counted and skipped, or the end of the import. Returns 1 when the import stops. */
static int bad(imp_t *m, uint64_t line, const char *what) {
  m->bad_lines++;
  if (m->bad_line == 0) m->bad_line = line;
  if ((m->flags & ENGRAM_IMPORT_SKIP_BAD) && !m->validating) {
    m->skipped++;
    if (m->bad_lines == 1) snprintf(m->message, sizeof m->message, "line %llu: %s", (unsigned long long)line, what);
    return 0;
  }
  snprintf(m->message, sizeof m->message, "line %llu: %s", (unsigned long long)line, what);
  stop(m, ENGRAM_EINVAL);
  return 1;
}

static void on_store(int status, const engram_reply_t *reply, void *ud) {
  slot_t *s = ud;
  imp_t *m = s->imp;
  uint64_t line = s->line;
  s->next_free = m->free_slots;
  m->free_slots = s;
  m->inflight--;
  if (status == 0) m->items++;
  else store_failed(m, line, status, reply->message && reply->message[0] ? reply->message : engram_strerror(status));
  if (m->progress != NULL && m->items >= m->next_progress) {
    report(m);
    while (m->next_progress <= m->items) m->next_progress += m->every;
  }
  fill(m);
}

/* A batch answered: each entry counted as stored or failed (with its own line), the batch reused. */
static void on_batch(int status, const engram_reply_t *reply, void *ud) {
  bat_t *b = ud;
  imp_t *m = b->imp;
  size_t i;
  m->inflight -= (unsigned)b->n;
  for (i = 0; i < b->n; i++) {
    int st = status != 0 ? status : i < reply->n_items ? reply->items[i].status : ENGRAM_EBACKEND;
    if (st == 0) {
      m->items++;
      if (m->progress != NULL && m->items >= m->next_progress) { /* every N items, as with single stores */
        report(m);
        m->next_progress += m->every;
      }
      continue;
    }
    if (status != 0)
      store_failed(m, b->line[i], st, reply && reply->message && reply->message[0] ? reply->message : engram_strerror(st));
    else {
      char why[ENGRAM_KEY_MAX + 100];
      snprintf(why, sizeof why, "key '%.200s': %s", b->keys + b->koff[i], engram_strerror(st));
      store_failed(m, b->line[i], st, why);
    }
  }
  bat_clear(b); /* the trees went with the call: only keys and counts to reset */
  b->next_free = m->free_bats;
  m->free_bats = b;
  if (m->progress != NULL && m->items >= m->next_progress) {
    report(m);
    while (m->next_progress <= m->items) m->next_progress += m->every;
  }
  fill(m);
}

/* Sends a full (or last) batch. 0, or the refusal (ENGRAM_EBUSY: b waits in m->ready, its trees kept). */
static int bat_submit(imp_t *m, bat_t *b) {
  engram_opts_t o = m->call;
  size_t i;
  int rc;
  o.ns = b->ns;
  for (i = 0; i < b->n; i++) b->e[i].key = b->keys + b->koff[i];
  rc = engram__store_many_replica(m->mgr, b->e, b->n, b->expires, b->version, b->created, b->updated, &o, on_batch, b);
  if (rc == 0) {
    m->inflight += (unsigned)b->n;
    return 0;
  }
  if (rc == ENGRAM_EBUSY && m->inflight > 0) {
    m->ready = b; /* again when a batch answers */
    return rc;
  }
  if (!m->stopping) {
    char what[400];
    snprintf(what, sizeof what, "store refused: %s", engram_last_error());
    if (m->bad_line == 0) m->bad_line = b->line[0];
    snprintf(m->message, sizeof m->message, "line %llu: %s", (unsigned long long)b->line[0], what);
  }
  bat_clear(b);
  b->next_free = m->free_bats;
  m->free_bats = b;
  stop(m, rc);
  return rc;
}

/* Adds one item to the batch being filled (its trees are taken). 0, or ENGRAM_ENOMEM (the item freed). */
static int bat_add(imp_t *m, bat_t *b, item_t *it, uint64_t line) {
  size_t klen = strlen(it->key) + 1, i = b->n;
  if (b->klen + klen > b->kcap) {
    size_t cap = b->kcap ? b->kcap * 2 : 16384;
    char *p;
    while (cap < b->klen + klen) cap *= 2;
    if ((p = engram_realloc(b->keys, cap)) == NULL) {
      item_free(it);
      return ENGRAM_ENOMEM;
    }
    b->keys = p;
    b->kcap = cap;
  }
  if (i == 0) snprintf(b->ns, sizeof b->ns, "%s", m->ns ? m->ns : it->ns);
  memcpy(b->keys + b->klen, it->key, klen);
  b->koff[i] = b->klen;
  b->klen += klen;
  memset(&b->e[i], 0, sizeof b->e[i]);
  b->e[i].value = it->value;
  b->e[i].metadata = it->metadata;
  it->value = it->metadata = NULL;
  b->expires[i] = it->expires;
  b->created[i] = it->has_created ? it->created : engram_now_ms();
  b->updated[i] = it->has_updated ? it->updated : b->created[i];
  b->version[i] = it->version;
  b->line[i] = line;
  b->n++;
  return 0;
}

/* Allocates the batches: BATCHES of batch_cap entries. 0 or ENGRAM_ENOMEM. */
static int bats_init(imp_t *m) {
  size_t i, n = m->batch_cap;
  if ((m->bats = engram_calloc(BATCHES, sizeof *m->bats)) == NULL) return ENGRAM_ENOMEM;
  for (i = 0; i < BATCHES; i++) {
    bat_t *b = &m->bats[i];
    b->imp = m;
    if ((b->e = engram_calloc(n, sizeof *b->e)) == NULL || (b->koff = engram_malloc(n * sizeof *b->koff)) == NULL ||
        (b->expires = engram_malloc(3 * n * sizeof *b->expires)) == NULL ||
        (b->version = engram_malloc(n * sizeof *b->version)) == NULL || (b->line = engram_malloc(n * sizeof *b->line)) == NULL)
      return ENGRAM_ENOMEM;
    b->created = b->expires + n;
    b->updated = b->expires + 2 * n;
    b->next_free = m->free_bats;
    m->free_bats = b;
  }
  return 0;
}

/* Batched: puts a parsed item into a batch, sending the batch when it is full or the namespace changes. Returns
 * 0, 1 when no batch is free (the item is kept in *it: the caller pushes its line back), or a stop status. */
static int bat_put(imp_t *m, item_t *it, uint64_t line) {
  const char *ns = m->ns ? m->ns : it->ns;
  int rc;
  if (m->cur != NULL && m->cur->n > 0 && strcmp(m->cur->ns, ns) != 0) { /* one namespace a batch */
    bat_t *b = m->cur;
    m->cur = NULL;
    if ((rc = bat_submit(m, b)) != 0) {
      if (rc == ENGRAM_EBUSY) return 1;
      item_free(it);
      return rc;
    }
  }
  if (m->cur == NULL) {
    if (m->free_bats == NULL || m->ready != NULL) return 1;
    m->cur = m->free_bats;
    m->free_bats = m->cur->next_free;
  }
  if ((rc = bat_add(m, m->cur, it, line)) != 0) return rc;
  if (m->cur->n == m->batch_cap) {
    bat_t *b = m->cur;
    m->cur = NULL;
    if ((rc = bat_submit(m, b)) != 0 && rc != ENGRAM_EBUSY) return rc;
  }
  return 0;
}

/* Submits one item (its value and metadata are handed over or freed). 0, or the submit's error (EBUSY: try again
 * later). */
static int submit_item(imp_t *m, item_t *it, uint64_t line) {
  engram_opts_t o = m->call;
  slot_t *s = m->free_slots; /* never NULL: fewer than window stores are in flight */
  int rc;
  s->imp = m;
  s->line = line;
  o.ns = m->ns ? m->ns : it->ns;
  if (m->flags & ENGRAM_IMPORT_FRESH) {
    o.metadata = it->metadata;
    if (it->expires > 0) {
      o.flags |= ENGRAM_OPT_TTL;
      o.ttl_ms = it->expires - engram_now_ms();
      if (o.ttl_ms < 1) o.ttl_ms = 1;
    }
    rc = engram_store(m->mgr, it->key, it->value, &o, on_store, s); /* copies them */
    item_free(it);
  } else {
    int64_t created = it->has_created ? it->created : engram_now_ms();
    int64_t updated = it->has_updated ? it->updated : created;
    /* The parsed value and metadata are handed over (taken by the call, also when it fails): no copy. */
    rc = engram__store_replica(m->mgr, it->key, it->value, it->metadata, it->expires, it->version, created, updated,
                               &o, on_store, s);
    it->value = it->metadata = NULL;
  }
  if (rc == 0) {
    m->free_slots = s->next_free;
    m->inflight++;
  }
  return rc;
}

/* Reads and submits lines while the window has room; ends the import when everything has answered. */
static void fill(imp_t *m) {
  char err[400];
  if (m->ready != NULL) { /* a batch the mailbox refused: first (also when stopping: its lines came before) */
    bat_t *b = m->ready;
    m->ready = NULL;
    (void)bat_submit(m, b);
  }
  while (!m->stopping && m->ready == NULL &&
         (m->batched ? (m->cur != NULL || m->free_bats != NULL) : m->inflight < m->window)) {
    char *line;
    size_t len;
    item_t it;
    int rc = next_line(m, &line, &len);
    if (rc == 0) {
      if (m->cur != NULL && m->cur->n > 0) { /* the last batch */
        bat_t *b = m->cur;
        m->cur = NULL;
        if (bat_submit(m, b) == ENGRAM_EBUSY) break; /* sent when a batch answers; then the end */
      }
      m->stopping = 1; /* the end: status stays what it is */
      break;
    }
    if (rc < 0) {
      if (rc == ENGRAM_ENOMEM) snprintf(m->message, sizeof m->message, "out of memory reading a line");
      stop(m, rc);
      break;
    }
    m->lines++;
    if (rc == 2) {
      snprintf(err, sizeof err, "longer than %zu bytes", m->max_line);
      bad(m, m->lines, err);
      continue;
    }
    if (blank(line, len)) continue;
    rc = parse_line(m, line, len, &it, err, sizeof err);
    if (rc == ENGRAM_ENOMEM) {
      snprintf(m->message, sizeof m->message, "line %llu: out of memory", (unsigned long long)m->lines);
      stop(m, rc);
      break;
    }
    if (rc != 0) {
      bad(m, m->lines, err);
      continue;
    }
    if (it.expires > 0 && it.expires <= engram_now_ms()) {
      m->expired++;
      m->skipped++;
      item_free(&it);
      continue;
    }
    if (m->batched) {
      rc = bat_put(m, &it, m->lines);
      if (rc == 1) { /* no batch free: this line again when one answers */
        size_t at = (size_t)(line - m->buf);
        item_free(&it);
        if (at + len < m->end) m->buf[at + len] = '\n';
        m->start = at;
        m->lines--;
        break;
      }
      if (rc == ENGRAM_ENOMEM) {
        snprintf(m->message, sizeof m->message, "line %llu: out of memory", (unsigned long long)m->lines);
        stop(m, rc);
      }
      if (rc != 0) break; /* bat_submit stopped the import */
      continue;
    }
    rc = submit_item(m, &it, m->lines);
    if (rc == ENGRAM_EBUSY && m->inflight > 0) {
      /* the mailbox is full of other calls: this line again when a store answers */
      size_t at = (size_t)(line - m->buf); /* push the line back: it is still in the buffer */
      if (at + len < m->end) m->buf[at + len] = '\n';
      m->start = at;
      m->lines--;
      break;
    }
    if (rc != 0) {
      char what[400];
      snprintf(what, sizeof what, "store refused: %s", engram_last_error());
      if (m->bad_line == 0) m->bad_line = m->lines;
      snprintf(m->message, sizeof m->message, "line %llu: %s", (unsigned long long)m->lines, what);
      stop(m, rc);
      break;
    }
  }
  /* Stopping (a bad line, a read error, a failed store): the lines already read into a batch are still written,
   * as single stores would have been. */
  if (m->batched && m->stopping && m->cur != NULL && m->cur->n > 0 && m->ready == NULL) {
    bat_t *b = m->cur;
    m->cur = NULL;
    (void)bat_submit(m, b);
  }
  if (m->stopping && m->inflight == 0 && !m->finished) finish(m);
}

/* The first pass of ENGRAM_IMPORT_VALIDATE_FIRST: every line checked, nothing written. 0 or the status. */
static int validate_all(imp_t *m) {
  char err[400];
  m->validating = 1;
  for (;;) {
    char *line;
    size_t len;
    item_t it;
    int rc = next_line(m, &line, &len);
    if (rc == 0) break;
    if (rc < 0) {
      if (rc == ENGRAM_ENOMEM) snprintf(m->message, sizeof m->message, "out of memory reading a line");
      return rc;
    }
    m->lines++;
    if (rc == 2) {
      snprintf(err, sizeof err, "longer than %zu bytes", m->max_line);
      bad(m, m->lines, err);
      return ENGRAM_EINVAL;
    }
    if (blank(line, len)) continue;
    rc = parse_line(m, line, len, &it, err, sizeof err);
    if (rc == ENGRAM_ENOMEM) {
      snprintf(m->message, sizeof m->message, "line %llu: out of memory", (unsigned long long)m->lines);
      return rc;
    }
    if (rc != 0) {
      bad(m, m->lines, err);
      return ENGRAM_EINVAL;
    }
    item_free(&it);
    if (m->progress != NULL && m->lines % m->every == 0) report(m);
  }
  m->validating = 0;
  m->lines = 0;
  m->stopping = 0;
  m->status = 0;
  if (input_rewind(m) != 0) {
    snprintf(m->message, sizeof m->message, "rewinding %s for the second pass failed", m->path ? m->path : "the input");
    return ENGRAM_EIO;
  }
  return 0;
}

static void on_sources(int status, const engram_reply_t *reply, void *ud) {
  imp_t *m = ud;
  if (status == 0 && cJSON_IsArray(reply->info)) { /* the target exists: else nothing is read */
    const cJSON *s;
    int found = 0;
    cJSON_ArrayForEach(s, reply->info) {
      const cJSON *name = cJSON_GetObjectItemCaseSensitive(s, "name");
      found |= m->source ? (cJSON_IsString(name) && strcmp(name->valuestring, m->source) == 0)
                         : cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(s, "default"));
    }
    if (!found) {
      if (m->source) snprintf(m->message, sizeof m->message, "unknown memory source '%.64s'", m->source);
      else snprintf(m->message, sizeof m->message, "no memory source: add one first");
      m->status = ENGRAM_EUNKNOWN_SOURCE;
      finish(m);
      return;
    }
  }
  if (status == 0 && !(m->flags & ENGRAM_IMPORT_FRESH) && cJSON_IsArray(reply->info)) {
    /* A source whose type cannot take replicas is refused before any line is read. */
    const cJSON *s;
    cJSON_ArrayForEach(s, reply->info) {
      const cJSON *name = cJSON_GetObjectItemCaseSensitive(s, "name");
      const cJSON *def = cJSON_GetObjectItemCaseSensitive(s, "default");
      const cJSON *type = cJSON_GetObjectItemCaseSensitive(s, "type");
      const engram_source_vtable_t *vt;
      int match = m->source ? (cJSON_IsString(name) && strcmp(name->valuestring, m->source) == 0) : cJSON_IsTrue(def);
      if (!match || !cJSON_IsString(type)) continue;
      vt = engram_source_type(type->valuestring);
      if (vt != NULL && (vt->flags & ENGRAM_SOURCE_REPLICA_MANY) && (vt->flags & ENGRAM_SOURCE_REPLICA)) {
        m->batched = 1; /* batches of replicas: one store_many each (the mailbox takes window / BATCHES items) */
        if (m->window_default) m->window = WINDOW_BATCHED_DEFAULT;
        m->rd.raw_text = 1; /* values already in cJSON's printed form go as their text: SQLite stores it as is */
        m->batch_cap = m->window / BATCHES;
        if (m->batch_cap > BATCH_MAX_ITEMS) m->batch_cap = BATCH_MAX_ITEMS;
        if (m->batch_cap == 0) m->batch_cap = 1;
        if (bats_init(m) != 0) {
          snprintf(m->message, sizeof m->message, "out of memory");
          m->status = ENGRAM_ENOMEM;
          finish(m);
          return;
        }
      }
      if (vt != NULL && !(vt->flags & ENGRAM_SOURCE_REPLICA)) {
        snprintf(m->message, sizeof m->message,
                 "source '%s' (%s) cannot keep given versions and timestamps; import with ENGRAM_IMPORT_FRESH",
                 cJSON_IsString(name) ? name->valuestring : "?", type->valuestring);
        m->status = ENGRAM_ENOTSUP;
        finish(m);
        return;
      }
    }
  }
  if (m->flags & ENGRAM_IMPORT_VALIDATE_FIRST) {
    int rc = validate_all(m);
    if (rc != 0) {
      m->status = rc;
      finish(m);
      return;
    }
  }
  fill(m);
}

int engram_import(engram_manager_t *mgr, const engram_import_opts_t *opts, engram_transfer_cb cb, void *ud) {
  imp_t *m;
  int n_in, rc;
  unsigned i;
  engram_opts_t lo;
  unsigned known = ENGRAM_TRANSFER_FD | ENGRAM_IMPORT_FRESH | ENGRAM_IMPORT_SKIP_BAD | ENGRAM_IMPORT_VALIDATE_FIRST;
  engram__error_clear();
  if (mgr == NULL) return engram__error(ENGRAM_EINVAL, "mgr: NULL");
  if (opts == NULL) return engram__error(ENGRAM_EINVAL, "opts: NULL (an input is needed)");
  if (cb == NULL) return engram__error(ENGRAM_EINVAL, "cb: NULL");
  n_in = (opts->path != NULL) + (opts->file != NULL) + ((opts->flags & ENGRAM_TRANSFER_FD) != 0) + (opts->read != NULL);
  if (n_in != 1)
    return engram__error(ENGRAM_EINVAL, "opts: %s input (give one of path, file, fd, read)", n_in ? "more than one" : "no");
  if (opts->flags & ~known) return engram__error(ENGRAM_EINVAL, "opts.flags: unknown bits 0x%x", opts->flags & ~known);
  if ((opts->flags & ENGRAM_IMPORT_SKIP_BAD) && (opts->flags & ENGRAM_IMPORT_VALIDATE_FIRST))
    return engram__error(ENGRAM_EINVAL, "opts.flags: ENGRAM_IMPORT_SKIP_BAD and ENGRAM_IMPORT_VALIDATE_FIRST are exclusive");
  if (opts->window > WINDOW_MAX) return engram__error(ENGRAM_EINVAL, "opts.window: %u, must be 0..%d", opts->window, WINDOW_MAX);
  if ((opts->flags & ENGRAM_TRANSFER_FD) && opts->fd < 0) return engram__error(ENGRAM_EINVAL, "opts.fd: %d", opts->fd);
  if (opts->ns != NULL && (strlen(opts->ns) > ENGRAM_NAMESPACE_MAX || !engram_utf8_valid(opts->ns, strlen(opts->ns))))
    return engram__error(ENGRAM_EINVAL, "opts.ns: must be 0..%d bytes of UTF-8", ENGRAM_NAMESPACE_MAX);
  if (opts->flags & ENGRAM_IMPORT_VALIDATE_FIRST) {
    if (opts->read != NULL && opts->rewind == NULL)
      return engram__error(ENGRAM_EINVAL, "opts: ENGRAM_IMPORT_VALIDATE_FIRST with a read callback needs rewind");
    if ((opts->file != NULL && fseek(opts->file, 0, SEEK_CUR) != 0) ||
        ((opts->flags & ENGRAM_TRANSFER_FD) && lseek(opts->fd, 0, SEEK_CUR) < 0))
      return engram__error(ENGRAM_EINVAL, "opts: ENGRAM_IMPORT_VALIDATE_FIRST needs an input that can be rewound (a pipe cannot)");
  }
  if ((m = engram_calloc(1, sizeof *m)) == NULL) return engram__error(ENGRAM_ENOMEM, "out of memory");
  m->mgr = mgr;
  m->cb = cb;
  m->ud = ud;
  m->flags = opts->flags;
  m->window = opts->window ? opts->window : WINDOW_DEFAULT;
  m->window_default = opts->window == 0;
  m->max_line = opts->max_line_bytes ? opts->max_line_bytes : LINE_MAX_DEFAULT;
  m->progress = opts->progress;
  m->progress_ud = opts->progress_ud;
  m->every = opts->progress_every ? opts->progress_every : PROGRESS_DEFAULT;
  m->next_progress = m->every;
  m->file = opts->file;
  m->use_fd = (opts->flags & ENGRAM_TRANSFER_FD) != 0;
  m->fd = opts->fd;
  m->read = opts->read;
  m->rewind = opts->rewind;
  m->read_ud = opts->read_ud;
  m->cap = 2 * READ_CHUNK + 2;
  if ((opts->source && (m->source = engram_strdup(opts->source)) == NULL) ||
      (opts->ns && (m->ns = engram_strdup(opts->ns)) == NULL) ||
      (opts->path && (m->path = engram_strdup(opts->path)) == NULL) || (m->buf = engram_malloc(m->cap)) == NULL ||
      (m->slots = engram_malloc(m->window * sizeof *m->slots)) == NULL) {
    imp_free(m);
    return engram__error(ENGRAM_ENOMEM, "out of memory");
  }
  engram__jsonl_reader_init(&m->rd);
  for (i = m->window; i > 0; i--) {
    m->slots[i - 1].next_free = m->free_slots;
    m->free_slots = &m->slots[i - 1];
  }
  m->call.source = m->source;
  m->call.deadline_ms = opts->deadline_ms;
  m->call.cq = opts->cq;
  if (m->path != NULL) {
    if ((m->file = fopen(m->path, "r")) == NULL) {
      rc = engram__error(ENGRAM_EIO, "path: cannot open %s: %s", m->path, strerror(errno));
      imp_free(m);
      return rc;
    }
    m->own_file = 1;
  }
  memset(&lo, 0, sizeof lo);
  lo.cq = opts->cq;
  if ((rc = engram_manager_list_sources(mgr, &lo, on_sources, m)) != 0) {
    imp_free(m);
    return rc;
  }
  /* windows begun from now on do not use messages this process kept before the import (manager.h); finish moves
   * it again for what they keep while it runs */
  atomic_fetch_add_explicit(&mgr->restore_epoch, 1, memory_order_acq_rel);
  return 0;
}
