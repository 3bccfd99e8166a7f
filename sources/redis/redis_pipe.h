/*
 * redis_pipe.h — the redis source's pipeline: every command of a call goes to Redis through it, and it keeps
 * the effects of pipelined commands in the order they were sent when the server's script cache is flushed.
 *
 * Why it exists: the source sends its writes as EVALSHA of its Lua scripts, many at once on one connection. If
 * the script cache is flushed (SCRIPT FLUSH, a restarted or failed-over server that kept the connection's
 * address), an EVALSHA is answered NOSCRIPT without running — but the commands sent after it still run. Sending
 * that one command again later (as EVAL) would let a later store of the same key, or a read that should see
 * it, run before it: a store could then fail ECONFLICT that should have succeeded, and a retrieve could miss a
 * store its caller had already been told about.
 *
 * What it does: it keeps a copy of every command until its reply has been handed on. On a NOSCRIPT reply it
 * sends SCRIPT LOAD of the owner's scripts (for the EVALSHAs to come), then the command again as an EVAL that
 * carries the script's text (so the second try cannot be answered NOSCRIPT, however often the cache is flushed
 * meanwhile), and holds every new command until the replies of all commands sent before that moment are back
 * (a "window"). Within the window, a command answered NOSCRIPT is sent again — in its original order — and
 * only its second reply is handed on. Reads (every non-script command of the source only reads) go out untracked
 * unless a window is open (their copies cost too much memory with thousands in flight), so a read sent right
 * behind a write that meets a flushed cache may miss it. Then the held commands go out in order. A script call answered successfully
 * inside the window ran after another client loaded the scripts; it is handed on as is (one process keeps its
 * order; two processes flushing and loading each other's scripts can still interleave, which the docs state).
 * A command is sent again at most ENGRAM__REDIS_PIPE_REPLAYS times (a read can fall into one window after
 * another); then its reply is handed on as it is.
 *
 * Level 2 of the source (after redis_conn): it knows the connection, not the source's state.
 */
#ifndef ENGRAM_REDIS_PIPE_H
#define ENGRAM_REDIS_PIPE_H

#include <hiredis/async.h>
#include <stddef.h>
#include <stdint.h>

#include "redis_conn.h"

#define ENGRAM__REDIS_PIPE_REPLAYS 3

typedef struct engram__redis_pipe_entry_s engram__redis_pipe_entry_t;

typedef struct engram__redis_pipe_s {
  engram__redis_conn_t *conn;
  uint64_t seq;         /* the number given to the last command sent (each send, first or again, takes one) */
  uint64_t window_end;  /* 0, or: commands numbered up to this ran while a script was missing */
  uint64_t loaded_seq;  /* the number of the last SCRIPT LOAD sent */
  unsigned inflight;    /* commands sent whose reply has not come back */
  engram__redis_pipe_entry_t *held_head, *held_tail; /* new commands waiting for the window to end */
  engram__redis_pipe_entry_t *free_list;             /* small entries kept for reuse */
  unsigned n_free;
  uint64_t recoveries;  /* windows opened (NOSCRIPT replies that sent SCRIPT LOAD) */
  uint64_t replayed;    /* commands sent again */
} engram__redis_pipe_t;

/* Sets up an empty pipeline on conn. */
void engram__redis_pipe_init(engram__redis_pipe_t *p, engram__redis_conn_t *conn);
/* Sends a formatted (RESP) command. fn runs exactly once: with the reply, or with a NULL reply when the
 * connection dies first (every command in flight, and every held one, gets NULL). A command that is not an
 * EVALSHA/EVAL must only read: it may be run twice. Returns 0, ENGRAM_EUNAVAILABLE (the connection is not
 * ready; fn will not run) or ENGRAM_ENOMEM (fn will not run). Loop thread only. */
int engram__redis_pipe_send(engram__redis_pipe_t *p, redisCallbackFn *fn, void *pd, const char *cmd, size_t len);
/* Frees the kept entries. Only once the connection is closed (no command in flight or held). */
void engram__redis_pipe_free(engram__redis_pipe_t *p);

#endif
