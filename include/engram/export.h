/*
 * engram/export.h — export and import of memory as JSON Lines (docs/export.md), so that a memory moves between
 * sources, machines and backends with every system field: one item per line,
 *
 *   {"key":"k","ns":"","value":<any JSON>,"metadata":<object or null>,"created_at_ms":1765000000000,
 *    "updated_at_ms":1765000000000,"expires_at_ms":0,"version":3}
 *
 * members always in that order, no spaces, "\n" after each line, strings escaped as cJSON prints them (only '"',
 * '\' and control characters; UTF-8 is written as is). Times are Unix epoch milliseconds; expires_at_ms 0 = never.
 *
 * Both run as a chain of ordinary engram calls (list_keys and retrieve_many pages for an export, stores for an
 * import), so memory stays bounded whatever the size of the source or the file: one page of items (export), one
 * window of stores plus one line (import). Like every engram operation they return 0 and later call the final
 * callback exactly once, or return a negative ENGRAM_E* code (engram_last_error() says why) and never call back;
 * the callbacks (write, progress, final) never run inside engram_export / engram_import, and run on the manager's
 * home loop thread, or on the thread polling opts.cq when one is named. Writing to a file and reading one happen
 * on that thread, synchronously.
 */
#ifndef ENGRAM_EXPORT_H
#define ENGRAM_EXPORT_H

#include <stdint.h>
#include <stdio.h>

#include "../engram.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Progress, handed to opts.progress (borrowed for the call). */
typedef struct engram_transfer_progress_s {
  uint64_t items;   /* export: lines written; import: items stored */
  uint64_t lines;   /* import: lines read (blank lines included); export: = items */
  uint64_t skipped; /* import: lines not stored (bad lines with ENGRAM_IMPORT_SKIP_BAD, expired items, failed stores
                       with ENGRAM_IMPORT_SKIP_BAD) */
  uint64_t bytes;   /* export: bytes written; import: bytes read */
  int validating;   /* import with ENGRAM_IMPORT_VALIDATE_FIRST: 1 during the first (checking) pass, then 0 */
} engram_transfer_progress_t;

/* The outcome, handed to the final callback (borrowed for its duration). */
typedef struct engram_transfer_result_s {
  uint64_t items, lines, skipped, bytes; /* as in engram_transfer_progress_t, at the end */
  uint64_t expired;   /* import: items skipped because their expires_at_ms had passed (counted in skipped too) */
  uint64_t bad_lines; /* import: bad lines seen (skipped with ENGRAM_IMPORT_SKIP_BAD) */
  uint64_t bad_line;  /* import: the line number (1-based) of the first bad line or failed store, 0 = none */
  const char *message; /* "" on success; else what went wrong, e.g. "line 7: value: missing" */
} engram_transfer_result_t;

/* The final callback: status first (0 or ENGRAM_E*), the result (never NULL), the user data. */
typedef void (*engram_transfer_cb)(int status, const engram_transfer_result_t *result, void *ud);
/* Progress: every opts.progress_every items, and once at the end. Must not block for long. */
typedef void (*engram_progress_fn)(const engram_transfer_progress_t *progress, void *ud);
/* An export's writer: takes len bytes (whole lines, up to about 256 KiB at a time); returns 0, or a negative value
 * to stop the export with ENGRAM_EIO. */
typedef int (*engram_write_fn)(const char *data, size_t len, void *ud);
/* An import's reader: fills up to cap bytes of buf; returns the count, 0 at the end, or a negative value for an
 * error (the import ends with ENGRAM_EIO). */
typedef long (*engram_read_fn)(char *buf, size_t cap, void *ud);
/* Rewinds an import's reader to its start (for ENGRAM_IMPORT_VALIDATE_FIRST): 0 or negative. */
typedef int (*engram_rewind_fn)(void *ud);

/* engram_export_opts_t.flags / engram_import_opts_t.flags */
enum {
  ENGRAM_TRANSFER_FD = 1u << 0,             /* use opts.fd (fd 0 is a valid descriptor, so it needs a flag) */
  ENGRAM_IMPORT_FRESH = 1u << 8,            /* import as fresh writes: version 1 / +1, timestamps now, TTL kept as
                                               the time remaining (expires_at_ms - now) */
  ENGRAM_IMPORT_SKIP_BAD = 1u << 9,         /* skip bad lines and failed stores (counted) instead of stopping */
  ENGRAM_IMPORT_VALIDATE_FIRST = 1u << 10   /* check every line first; any bad line refuses the whole import before
                                               anything is written (needs a path, a seekable file or fd, or rewind) */
};

/*
 * Export options. Zeroed = the default source, every namespace, every key, 50,000 keys a page. Exactly one
 * destination: path, file, fd (with ENGRAM_TRANSFER_FD) or write.
 */
typedef struct engram_export_opts_s {
  const char *source;     /* NULL = the default source */
  const char *ns;         /* one namespace ("" is one); NULL = every namespace (see ns_prefix) */
  const char *ns_prefix;  /* with ns NULL: only namespaces starting with these bytes ("team/"); NULL = all */
  const char *pattern;    /* key glob or substring (engram_list_keys's rule); NULL = every key */
  unsigned flags;         /* ENGRAM_TRANSFER_FD */
  int page;               /* keys per list_keys page: 1..100000, 0 = 50000 (values are read 1,000 at a time,
                             4 reads in flight) */
  /* destination */
  const char *path;       /* written as path.tmp.XXXXXX beside it, fsynced and renamed over path at the end;
                             removed on failure, so path is never half-written */
  FILE *file;             /* written with fwrite and fflush'ed at the end (not closed) */
  int fd;                 /* with ENGRAM_TRANSFER_FD: written with write(2) (not closed) */
  engram_write_fn write;  /* or handed to this function */
  void *write_ud;
  engram_progress_fn progress; /* optional */
  void *progress_ud;
  uint64_t progress_every; /* items between progress calls; 0 = 10,000 */
  uint32_t deadline_ms;   /* per underlying call; 0 = the manager's default */
  engram_cq_t *cq;        /* run every callback through this completion queue instead of the home loop */
} engram_export_opts_t;

/*
 * Import options. Zeroed = the default source, each line's own namespace, versions and timestamps kept, stop at
 * the first bad line. Exactly one input: path, file, fd (with ENGRAM_TRANSFER_FD) or read.
 */
typedef struct engram_import_opts_s {
  const char *source;     /* NULL = the default source */
  const char *ns;         /* NULL = each line's "ns"; set = every item goes into this namespace */
  unsigned flags;         /* ENGRAM_TRANSFER_FD | ENGRAM_IMPORT_* */
  unsigned window;        /* stores in flight at once: 1..65536, 0 = 256 */
  size_t max_line_bytes;  /* a longer line is bad; 0 = 64 MiB */
  /* input */
  const char *path;
  FILE *file;             /* read with fread (not closed) */
  int fd;                 /* with ENGRAM_TRANSFER_FD: read with read(2) (not closed) */
  engram_read_fn read;
  engram_rewind_fn rewind; /* with read and ENGRAM_IMPORT_VALIDATE_FIRST */
  void *read_ud;
  engram_progress_fn progress; /* optional */
  void *progress_ud;
  uint64_t progress_every; /* items between progress calls; 0 = 10,000 */
  uint32_t deadline_ms;   /* per store; 0 = the manager's default */
  engram_cq_t *cq;        /* run every callback through this completion queue instead of the home loop */
} engram_import_opts_t;

/*
 * Exports a source (or one namespace, or the namespaces starting with ns_prefix, optionally only keys matching
 * pattern) as JSON Lines, in (namespace, key) byte order, one line per live item. Items written or deleted during
 * the export may or may not appear (each page is read when it is reached); an item that expires or is deleted
 * between its listing and its read is left out. Memory: about two pages of keys, 4 reads of 1,000 items and a 256 KiB
 * output buffer.
 * Returns 0 (cb follows once) or ENGRAM_EINVAL (no destination or two, bad page, bad pattern, ns and ns_prefix
 * both set), ENGRAM_EIO (path cannot be created: nothing is created), ENGRAM_ENOMEM, ENGRAM_EUNKNOWN_SOURCE,
 * ENGRAM_EBUSY, ENGRAM_ECLOSED. cb: 0 with result->items lines written; ENGRAM_EIO (a write failed; a path is then
 * removed), or the error of an underlying call (ENGRAM_ETIMEDOUT, ENGRAM_EUNAVAILABLE, ENGRAM_EBACKEND,
 * ENGRAM_ECANCELED...). Thread: any; mgr must stay open until cb.
 */
ENGRAM_EXPORT int engram_export(engram_manager_t *mgr, const engram_export_opts_t *opts, engram_transfer_cb cb,
                                void *ud);

/*
 * Imports JSON Lines into a source. Each non-blank line is one object with "key" (a string, 1..1024 bytes) and
 * "value" (any JSON), and optionally "ns" (string, default ""), "metadata" (object or null), "created_at_ms",
 * "updated_at_ms", "expires_at_ms" (integers ≥ 0) and "version" (integer ≥ 1); any other member, a member twice,
 * or a wrong type makes the line bad. By default every item is written exactly as given — version, timestamps
 * and expiry kept, an existing item replaced — which needs a source that takes replicas (cache, sqlite, postgres,
 * redis; others answer ENGRAM_ENOTSUP: use ENGRAM_IMPORT_FRESH); a missing version is 1, missing timestamps are
 * the time of the import. With ENGRAM_IMPORT_FRESH each item is an ordinary store. Items whose expires_at_ms has
 * passed are skipped (result->expired). Memory: up to window stores in flight and one line.
 * A bad line (or a failed store) ends the import with its line number in the message and result->bad_line —
 * after the items before it were written; with ENGRAM_IMPORT_SKIP_BAD it is counted and skipped; with
 * ENGRAM_IMPORT_VALIDATE_FIRST the whole input is checked first and nothing is written unless every line is good.
 * Returns 0 (cb follows once) or ENGRAM_EINVAL (no input or two, SKIP_BAD with VALIDATE_FIRST, VALIDATE_FIRST on
 * an input that cannot be rewound), ENGRAM_EIO (path cannot be opened), ENGRAM_ENOMEM, ENGRAM_ECLOSED.
 * cb: 0; ENGRAM_EINVAL (a bad line); ENGRAM_EIO (reading failed); ENGRAM_EUNKNOWN_SOURCE or ENGRAM_ENOTSUP (no such
 * source, or one that cannot keep versions: nothing was read or written); or a store's error (ENGRAM_ETIMEDOUT,
 * ENGRAM_EUNAVAILABLE, ENGRAM_EBACKEND, ENGRAM_ETOOBIG...). Thread: any; mgr must stay open until cb.
 */
ENGRAM_EXPORT int engram_import(engram_manager_t *mgr, const engram_import_opts_t *opts, engram_transfer_cb cb,
                                void *ud);

#ifdef __cplusplus
}
#endif

#endif /* ENGRAM_EXPORT_H */
