/*
 * postgres_notify.c — the PostgreSQL source's invalidation channel (postgres_notify.h): what lets a process that
 * keeps copies of this table's rows (a tiered source's cache tier) drop them when another process writes.
 *
 * Publishing needs no change to the write paths: a trigger on the items table calls pg_notify for every row a
 * statement inserts, updates or deletes (and once for a TRUNCATE), inside the writing transaction, so the
 * notification is delivered exactly when the write commits and never for a write rolled back. Every process
 * writing the table therefore publishes, whether it listens or not. Payload: "<version> <ns bytes> <ns><key>"
 * (version 0 for a delete), or "*" for a truncate; channel: engram__pg_notify_channel.
 *
 * Listening: on the first watch this file opens a connection of its own (libpq's asynchronous API on the home
 * loop, application_name "engram-listener"), creates the trigger and its function if missing (under the
 * schema's advisory lock, so two programs opening at once do not race), runs LISTEN, and once that returned
 * reports UP to the watchers; every notification then becomes a KEY (or ALL) event. A notification from one of
 * this source's own pool connections (PGnotify.be_pid) is a write this process made itself and is skipped.
 * When the connection breaks (an I/O error, pg_terminate_backend, a server restart) or its setup fails, the
 * watchers hear DOWN and the connection is tried again after a backoff of 50 ms doubling up to the source's
 * reconnect_max_ms; the next UP tells them the channel is whole again (what was published meanwhile is lost:
 * they must drop what they kept). The listener stops when the last watcher leaves, and on close every watcher
 * gets END.
 */
#include <stdio.h>
#include <string.h>

#include "postgres_notify.h"

enum { LS_IDLE = 0, LS_BACKOFF, LS_CONNECTING, LS_SETUP, LS_UP };

typedef struct pgw_s {
  struct pgw_s *next;
  engram_watch_cb cb;
  void *ud;
  int dead; /* unwatched: END delivered, unlinked when no delivery is under way */
} pgw_t;

typedef struct {
  uv_poll_t h;
  struct pg_notify_s *n;
} lpoll_t;

struct pg_notify_s {
  pg_t *pg;
  pgw_t *watchers;
  int delivering;
  int state;
  PGconn *conn;
  lpoll_t *poll;
  int poll_fd, poll_events;
  uv_timer_t timer; /* connect timeout, then backoff */
  uint64_t backoff_ms;
  const char **kw, **val;
  char *setup;      /* the trigger DDL and LISTEN */
  char channel[64];
  int handles;      /* the timer and poll handles not closed yet */
  int closing;
  void (*done)(void *ud);
  void *done_ud;
  uint64_t received, skipped_own, ups, downs;
};

typedef struct pg_notify_s pgn_t;

/* ---- Watchers ---- */

static void deliver(pgn_t *n, const engram_watch_event_t *ev) {
  pgw_t *w, **pp;
  n->delivering++;
  for (w = n->watchers; w != NULL; w = w->next)
    if (!w->dead) w->cb(ev, w->ud);
  if (--n->delivering == 0)
    for (pp = &n->watchers; (w = *pp) != NULL;) {
      if (w->dead) {
        *pp = w->next;
        engram_free(w);
      } else {
        pp = &w->next;
      }
    }
}

static void deliver_kind(pgn_t *n, engram_watch_kind_t kind, const char *message) {
  engram_watch_event_t ev;
  memset(&ev, 0, sizeof ev);
  ev.kind = kind;
  ev.message = message;
  deliver(n, &ev);
}

static int live_watchers(const pgn_t *n) {
  const pgw_t *w;
  for (w = n->watchers; w != NULL; w = w->next)
    if (!w->dead) return 1;
  return 0;
}

/* ---- Handles ---- */

static void maybe_done(pgn_t *n) {
  if (n->closing && n->handles == 0) {
    void (*done)(void *) = n->done;
    void *ud = n->done_ud;
    pg_t *pg = n->pg;
    engram_free(n->kw);
    engram_free(n->val);
    engram_free(n->setup);
    engram_free(n);
    pg->notify = NULL;
    done(ud);
  }
}

static void poll_freed(uv_handle_t *h) {
  lpoll_t *p = h->data;
  pgn_t *n = p->n;
  engram_free(p);
  n->handles--;
  maybe_done(n);
}

static void timer_closed(uv_handle_t *h) {
  pgn_t *n = h->data;
  n->handles--;
  maybe_done(n);
}

static void poll_stop(pgn_t *n) {
  if (n->poll == NULL) return;
  uv_poll_stop(&n->poll->h);
  uv_close((uv_handle_t *)&n->poll->h, poll_freed);
  n->poll = NULL;
  n->poll_fd = -1;
}

static void on_poll(uv_poll_t *h, int status, int events);

/* Watches fd for events (a new handle when libpq changed sockets). 0 or a libuv / engram error. */
static int watch_fd(pgn_t *n, int fd, int events) {
  int rc;
  if (n->poll != NULL && n->poll_fd != fd) poll_stop(n);
  if (n->poll == NULL) {
    if ((n->poll = engram_calloc(1, sizeof *n->poll)) == NULL) return ENGRAM_ENOMEM;
    if ((rc = uv_poll_init(n->pg->loop, &n->poll->h, fd)) != 0) {
      engram_free(n->poll);
      n->poll = NULL;
      return rc;
    }
    n->poll->h.data = n->poll;
    n->poll->n = n;
    n->poll_fd = fd;
    n->handles++;
  }
  n->poll_events = events;
  return uv_poll_start(&n->poll->h, events, on_poll);
}

/* ---- The connection ---- */

static void start(pgn_t *n);
static void stop(pgn_t *n);

/* Closes the connection, if any, and stops the timer. */
static void stop(pgn_t *n) {
  poll_stop(n);
  if (n->conn != NULL) {
    PQfinish(n->conn);
    n->conn = NULL;
  }
  uv_timer_stop(&n->timer);
  n->state = LS_IDLE;
}

static void on_backoff(uv_timer_t *t) { start(t->data); }

/* The connection failed or broke: tell the watchers (when it was up), close it, try again later. */
static void down(pgn_t *n, const char *why) {
  char msg[320];
  int was_up = n->state == LS_UP;
  engram__pg_scrub(msg, sizeof msg, why && why[0] ? why : "connection lost", n->pg->password);
  stop(n);
  if (was_up) {
    n->downs++;
    deliver_kind(n, ENGRAM_WATCH_DOWN, msg);
  }
  if (n->closing || !live_watchers(n)) return;
  n->state = LS_BACKOFF;
  uv_timer_start(&n->timer, on_backoff, n->backoff_ms, 0);
  n->backoff_ms *= 2;
  if (n->backoff_ms > n->pg->reconnect_max_ms) n->backoff_ms = n->pg->reconnect_max_ms;
  if (n->backoff_ms == 0) n->backoff_ms = 50;
}

/* Is pid one of this source's own connections (its writes, already known to this process)? */
static int own_pid(pgn_t *n, int pid) {
  pg_pool_t *pool = &n->pg->pool;
  int i;
  for (i = 0; pool->conns != NULL && i <= pool->nconn; i++)
    if (pool->conns[i].conn != NULL && PQstatus(pool->conns[i].conn) == CONNECTION_OK &&
        PQbackendPID(pool->conns[i].conn) == pid)
      return 1;
  return 0;
}

/* One notification: "<version> <ns bytes> <ns><key>", or "*" (anything else counts as "*"). */
static void notified(pgn_t *n, const PGnotify *nf) {
  engram_watch_event_t ev;
  const char *p = nf->extra, *sp;
  unsigned long long version = 0, ns_len = 0;
  size_t len = strlen(p);
  int ok = 0;
  n->received++;
  if (own_pid(n, nf->be_pid)) {
    n->skipped_own++;
    return;
  }
  memset(&ev, 0, sizeof ev);
  if ((sp = strchr(p, ' ')) != NULL && sscanf(p, "%llu %llu", &version, &ns_len) == 2 &&
      (sp = strchr(sp + 1, ' ')) != NULL) {
    size_t rest = len - (size_t)(sp + 1 - p);
    if (ns_len < rest) {
      ev.kind = ENGRAM_WATCH_KEY;
      ev.ns = sp + 1;
      ev.ns_len = (size_t)ns_len;
      ev.key = sp + 1 + ns_len;
      ev.key_len = rest - (size_t)ns_len;
      ev.version = version;
      ok = 1;
    }
  }
  if (!ok) ev.kind = ENGRAM_WATCH_ALL;
  deliver(n, &ev);
}

/* Reads what arrived: the setup's results (then UP), notifications. */
static void read_input(pgn_t *n) {
  PGresult *res;
  PGnotify *nf;
  if (PQconsumeInput(n->conn) != 1) {
    down(n, PQerrorMessage(n->conn));
    return;
  }
  while (n->conn != NULL && !PQisBusy(n->conn) && (res = PQgetResult(n->conn)) != NULL) {
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
      char m[320];
      engram__pg_result_error(res, n->pg->password, m, sizeof m);
      PQclear(res);
      down(n, m);
      return;
    }
    PQclear(res);
  }
  /* Not busy after the loop: PQgetResult returned NULL, every result of the setup is in. */
  if (n->conn != NULL && n->state == LS_SETUP && !PQisBusy(n->conn)) {
    n->state = LS_UP;
    n->ups++;
    n->backoff_ms = 50;
    uv_timer_stop(&n->timer);
    deliver_kind(n, ENGRAM_WATCH_UP, NULL);
  }
  while (n->conn != NULL && (nf = PQnotifies(n->conn)) != NULL) {
    if (n->state == LS_UP) notified(n, nf);
    PQfreemem(nf);
  }
  if (n->conn != NULL && PQstatus(n->conn) == CONNECTION_BAD) down(n, PQerrorMessage(n->conn));
}

static void flush_out(pgn_t *n) {
  int r = PQflush(n->conn), rc;
  if (r < 0) {
    down(n, PQerrorMessage(n->conn));
    return;
  }
  if ((rc = watch_fd(n, PQsocket(n->conn), r == 1 ? UV_READABLE | UV_WRITABLE : UV_READABLE)) != 0)
    down(n, rc == ENGRAM_ENOMEM ? "out of memory" : uv_strerror(rc));
}

static void connected(pgn_t *n) {
  if (PQsetnonblocking(n->conn, 1) != 0 || PQsendQuery(n->conn, n->setup) != 1) {
    down(n, PQerrorMessage(n->conn));
    return;
  }
  n->state = LS_SETUP;
  flush_out(n);
}

static void connect_step(pgn_t *n) {
  PostgresPollingStatusType r = PQconnectPoll(n->conn);
  int rc;
  if (r == PGRES_POLLING_OK) {
    connected(n);
  } else if (r == PGRES_POLLING_FAILED) {
    down(n, PQerrorMessage(n->conn));
  } else if (PQsocket(n->conn) < 0) {
    down(n, "libpq has no socket");
  } else {
    /* libpq may have moved to another socket (the next host, an SSL fallback): watch afresh. */
    poll_stop(n);
    if ((rc = watch_fd(n, PQsocket(n->conn), r == PGRES_POLLING_READING ? UV_READABLE : UV_WRITABLE)) != 0)
      down(n, rc == ENGRAM_ENOMEM ? "out of memory" : uv_strerror(rc));
  }
}

static void on_poll(uv_poll_t *h, int status, int events) {
  lpoll_t *p = h->data;
  pgn_t *n = p->n;
  if (n->poll != p || n->conn == NULL) return;
  if (status < 0) {
    down(n, uv_strerror(status));
    return;
  }
  if (n->state == LS_CONNECTING) {
    connect_step(n);
    return;
  }
  if (events & UV_WRITABLE) {
    flush_out(n);
    if (n->conn == NULL) return;
  }
  if (events & UV_READABLE) read_input(n);
}

static void on_connect_timeout(uv_timer_t *t) {
  pgn_t *n = t->data;
  char m[96];
  snprintf(m, sizeof m, "listener: no connection after %llu ms (connect_timeout_ms)",
           (unsigned long long)n->pg->connect_timeout_ms);
  down(n, m);
}

static void quiet(void *arg, const char *message) {
  (void)arg;
  (void)message;
}

static void start(pgn_t *n) {
  if (n->closing || n->conn != NULL || !live_watchers(n)) return;
  n->conn = PQconnectStartParams(n->kw, n->val, 0);
  if (n->conn == NULL) {
    down(n, "out of memory");
    return;
  }
  PQsetNoticeProcessor(n->conn, quiet, NULL);
  if (PQstatus(n->conn) == CONNECTION_BAD) {
    down(n, PQerrorMessage(n->conn));
    return;
  }
  n->state = LS_CONNECTING;
  uv_timer_start(&n->timer, on_connect_timeout, n->pg->connect_timeout_ms, 0);
  connect_step(n);
}

/* ---- Setup text ---- */

void engram__pg_notify_channel(const pg_t *pg, char out[64]) {
  int len = snprintf(out, 64, "engram:%s.%s", pg->schema, pg->table);
  if (len < 0 || len > 63) {
    uint64_t h = 1469598103934665603ull;
    const char *s;
    for (s = pg->schema; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    h = (h ^ '.') * 1099511628211ull;
    for (s = pg->table; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    snprintf(out, 64, "engram:%016llx", (unsigned long long)h);
  }
}

/* The listener's setup: the trigger function and triggers (created when missing, under the schema's advisory
 * lock, as postgres_sql.c's DDL), then LISTEN. Schema and table are plain identifiers (postgres_opts.c). */
static char *build_setup(const pg_t *pg, const char *channel) {
  static const char fmt[] =
      "DO $engram$\n"
      "BEGIN\n"
      "  PERFORM pg_advisory_xact_lock(1701277281, hashtext('S:\"%s\"'));\n"
      "  IF to_regprocedure('\"%s\".engram_notify_%s()') IS NULL THEN\n"
      "    CREATE FUNCTION \"%s\".engram_notify_%s() RETURNS trigger LANGUAGE plpgsql AS $f$\n"
      "    BEGIN\n"
      "      IF TG_OP = 'TRUNCATE' THEN\n"
      "        PERFORM pg_notify('%s', '*');\n"
      "      ELSIF TG_OP = 'DELETE' THEN\n"
      "        PERFORM pg_notify('%s', '0 ' || octet_length(OLD.namespace) || ' ' || OLD.namespace || OLD.key);\n"
      "      ELSE\n"
      "        PERFORM pg_notify('%s', NEW.version || ' ' || octet_length(NEW.namespace) || ' ' || NEW.namespace || NEW.key);\n"
      "      END IF;\n"
      "      RETURN NULL;\n"
      "    END $f$;\n"
      "  END IF;\n"
      "  IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = '\"%s\".\"%s\"'::regclass AND tgname = 'engram_notify') THEN\n"
      "    CREATE TRIGGER engram_notify AFTER INSERT OR DELETE OR UPDATE OF namespace, key, value, metadata, version,\n"
      "      expires_at ON \"%s\".\"%s\" FOR EACH ROW EXECUTE FUNCTION \"%s\".engram_notify_%s();\n"
      "    CREATE TRIGGER engram_notify_truncate AFTER TRUNCATE ON \"%s\".\"%s\"\n"
      "      FOR EACH STATEMENT EXECUTE FUNCTION \"%s\".engram_notify_%s();\n"
      "  END IF;\n"
      "END\n"
      "$engram$;\n"
      "LISTEN \"%s\"";
  const char *S = pg->schema, *T = pg->table;
  int len = snprintf(NULL, 0, fmt, S, S, T, S, T, channel, channel, channel, S, T, S, T, S, T, S, T, S, T, channel);
  char *out;
  if (len < 0 || (out = engram_malloc((size_t)len + 1)) == NULL) return NULL;
  snprintf(out, (size_t)len + 1, fmt, S, S, T, S, T, channel, channel, channel, S, T, S, T, S, T, S, T, S, T, channel);
  return out;
}

/* The pool's connection parameters with application_name set (unless the conninfo gave one). Borrowed texts. */
static int build_params(pgn_t *n) {
  pg_t *pg = n->pg;
  size_t i, k = 0, count = 0;
  int has_app = 0;
  while (pg->kw[count] != NULL) count++;
  if ((n->kw = engram_calloc(count + 2, sizeof *n->kw)) == NULL || (n->val = engram_calloc(count + 2, sizeof *n->val)) == NULL)
    return ENGRAM_ENOMEM;
  for (i = 0; i < count; i++) {
    if (strcmp(pg->kw[i], "application_name") == 0) has_app = 1;
    n->kw[k] = pg->kw[i];
    n->val[k++] = pg->val[i];
  }
  if (!has_app) {
    n->kw[k] = "application_name";
    n->val[k++] = "engram-listener";
  }
  return 0;
}

/* ---- The vtable's methods ---- */

int engram__pg_watch(engram_source_t *src, engram_watch_cb cb, void *ud, void **handle) {
  pg_t *pg = engram_source_state(src);
  pgn_t *n = pg->notify;
  pgw_t *w;
  if (pg->closing) return ENGRAM_ECLOSED;
  if (n == NULL) {
    if ((n = engram_calloc(1, sizeof *n)) == NULL) return ENGRAM_ENOMEM;
    n->pg = pg;
    n->poll_fd = -1;
    n->backoff_ms = 50;
    engram__pg_notify_channel(pg, n->channel);
    if (build_params(n) != 0 || (n->setup = build_setup(pg, n->channel)) == NULL) {
      engram_free(n->kw);
      engram_free(n->val);
      engram_free(n);
      return ENGRAM_ENOMEM;
    }
    uv_timer_init(pg->loop, &n->timer);
    n->timer.data = n;
    n->handles = 1;
    pg->notify = n;
  }
  if ((w = engram_calloc(1, sizeof *w)) == NULL) return ENGRAM_ENOMEM;
  w->cb = cb;
  w->ud = ud;
  w->next = n->watchers;
  n->watchers = w;
  *handle = w;
  if (n->state == LS_UP) {
    engram_watch_event_t ev;
    memset(&ev, 0, sizeof ev);
    ev.kind = ENGRAM_WATCH_UP;
    cb(&ev, ud);
  } else if (n->state == LS_IDLE) {
    start(n);
  }
  return 0;
}

void engram__pg_unwatch(engram_source_t *src, void *handle) {
  pg_t *pg = engram_source_state(src);
  pgn_t *n = pg->notify;
  pgw_t *w = handle;
  engram_watch_event_t ev;
  if (n == NULL || w == NULL || w->dead) return;
  w->dead = 1;
  memset(&ev, 0, sizeof ev);
  ev.kind = ENGRAM_WATCH_END;
  ev.status = ENGRAM_ECANCELED;
  n->delivering++; /* w stays linked until no delivery is under way */
  w->cb(&ev, w->ud);
  n->delivering--;
  if (n->delivering == 0) {
    pgw_t **pp;
    for (pp = &n->watchers; *pp != NULL; pp = &(*pp)->next)
      if (*pp == w) {
        *pp = w->next;
        engram_free(w);
        break;
      }
  }
  if (!live_watchers(n) && !n->closing) stop(n); /* nobody listens: stop (a later watch starts again) */
}

const char *engram__pg_notify_state(const pg_t *pg) {
  const pgn_t *n = pg ? pg->notify : NULL;
  if (n == NULL || !live_watchers(n)) return "none";
  if (n->state == LS_UP) return "up";
  if (n->state == LS_CONNECTING || n->state == LS_SETUP) return "connecting";
  return "down";
}

uint64_t engram__pg_notify_received(const pg_t *pg) { return pg && pg->notify ? pg->notify->received : 0; }

void engram__pg_notify_shutdown(pg_t *pg, void (*done)(void *ud), void *ud) {
  pgn_t *n = pg->notify;
  pgw_t *w;
  engram_watch_event_t ev;
  if (n == NULL) {
    done(ud);
    return;
  }
  n->closing = 1;
  n->done = done;
  n->done_ud = ud;
  memset(&ev, 0, sizeof ev);
  ev.kind = ENGRAM_WATCH_END;
  ev.status = ENGRAM_ECLOSED;
  n->delivering++;
  for (w = n->watchers; w != NULL; w = w->next)
    if (!w->dead) {
      w->dead = 1;
      w->cb(&ev, w->ud);
    }
  n->delivering--;
  while ((w = n->watchers) != NULL) {
    n->watchers = w->next;
    engram_free(w);
  }
  stop(n);
  uv_close((uv_handle_t *)&n->timer, timer_closed);
}
