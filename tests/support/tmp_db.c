/* tmp_db.c — see tmp_db.h. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "support/harness.h"
#include "support/tmp_db.h"

#define MAX_OPEN 8

static tmp_db_t *open_dbs[MAX_OPEN];

static void remove_db(const char *path) {
  char p[200];
  if (path[0] == '\0') return;
  unlink(path);
  snprintf(p, sizeof p, "%s-wal", path);
  unlink(p);
  snprintf(p, sizeof p, "%s-shm", path);
  unlink(p);
}

void tmp_db_close(tmp_db_t *t) {
  int i;
  remove_db(t->last);
  t->last[0] = '\0';
  if (t->dir[0] != '\0') rmdir(t->dir);
  t->dir[0] = '\0';
  for (i = 0; i < MAX_OPEN; i++)
    if (open_dbs[i] == t) open_dbs[i] = NULL;
}

static void close_all(void) {
  int i;
  for (i = 0; i < MAX_OPEN; i++)
    if (open_dbs[i] != NULL) tmp_db_close(open_dbs[i]);
}

int tmp_db_open(tmp_db_t *t, const char *prefix) {
  static int registered;
  int i;
  t->last[0] = '\0';
  snprintf(t->dir, sizeof t->dir, "/tmp/%s_XXXXXX", prefix);
  if (mkdtemp(t->dir) == NULL) {
    t->dir[0] = '\0';
    return -1;
  }
  if (!registered) {
    registered = 1;
    atexit(close_all);
  }
  for (i = 0; i < MAX_OPEN; i++)
    if (open_dbs[i] == NULL || open_dbs[i] == t) {
      open_dbs[i] = t;
      break;
    }
  return 0;
}

const char *tmp_db_next(tmp_db_t *t) {
  remove_db(t->last);
  snprintf(t->last, sizeof t->last, "%s/%s.db", t->dir, unique_name("conf"));
  return t->last;
}
