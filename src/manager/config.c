/*
 * config.c — JSON configuration of a manager's sources: BeamMePrompty's `memory_source` DSL as data.
 *
 *   {"sources": [{"name": "cache", "type": "cache", "description": "...", "default": true, "options": {...}}]}
 *
 * The whole document is validated before anything is added, and a malformed one is refused with a message
 * naming the offending field ("sources[1].type: unknown source type \"mongo\""). "${NAME}" inside option
 * strings is replaced from the environment, so secrets stay out of files. Sources are then added one after
 * the other on the home loop; the callback reports the first failure.
 *
 * The text is checked before cJSON parses it (shared/json_text.c): a string holding "\u0000" (which cJSON would
 * cut, so "cache\u0000x" named "cache"), bytes that are not UTF-8 or a lone surrogate escape are refused with the
 * field's path, and so is text after the document. Messages quote names and types cut on character boundaries
 * with control characters escaped.
 */
#include <stdlib.h>
#include <string.h>

#include "shared/error.h"
#include "shared/json_text.h"
#include "actor/actor.h"
#include "manager/manager.h"
#include "manager/registry.h"

int engram__add_source_parsed(engram_manager_t *mgr, const char *name, const engram_source_vtable_t *vt,
                              cJSON *options, const char *description, int is_default, engram_cb cb, void *ud);

/* Replaces ${NAME} in s; returns a new string, or NULL with *rc set (EINVAL for an unset variable). */
static char *substitute(const char *s, const char *path, int *rc) {
  size_t cap = strlen(s) + 1, len = 0;
  char *out = engram_malloc(cap);
  const char *p = s;
  if (out == NULL) {
    *rc = engram__error(ENGRAM_ENOMEM, "out of memory");
    return NULL;
  }
  while (*p) {
    const char *val = NULL, *end;
    size_t add;
    if (p[0] == '$' && p[1] == '{' && (end = strchr(p + 2, '}')) != NULL) {
      char name[256];
      size_t nlen = (size_t)(end - p - 2);
      if (nlen == 0 || nlen >= sizeof name) {
        engram_free(out);
        *rc = engram__error(ENGRAM_EINVAL, "%s: bad environment reference", path);
        return NULL;
      }
      memcpy(name, p + 2, nlen);
      name[nlen] = '\0';
      val = getenv(name);
      if (val == NULL) {
        char q[ENGRAM__QUOTE_MAX + 1];
        engram_free(out);
        *rc = engram__error(ENGRAM_EINVAL, "%s: environment variable \"%s\" is not set", path,
                            engram__quote(q, sizeof q, name));
        return NULL;
      }
      add = strlen(val);
      p = end + 1;
    } else {
      val = p;
      add = 1;
      p++;
    }
    if (len + add + 1 > cap) {
      char *n2;
      cap = (len + add + 1) * 2;
      if ((n2 = engram_realloc(out, cap)) == NULL) {
        engram_free(out);
        *rc = engram__error(ENGRAM_ENOMEM, "out of memory");
        return NULL;
      }
      out = n2;
    }
    memcpy(out + len, val, add);
    len += add;
  }
  out[len] = '\0';
  return out;
}

static int substitute_tree(cJSON *node, char *path, size_t pathcap) {
  cJSON *c;
  size_t base = strlen(path);
  int i = 0, rc = 0;
  if (cJSON_IsString(node) && strstr(node->valuestring, "${") != NULL) {
    char *v = substitute(node->valuestring, path, &rc);
    if (v == NULL) return rc;
    if (!engram_utf8_valid(v, strlen(v))) { /* the environment is not bound by the rules of the text */
      engram_free(v);
      return engram__error(ENGRAM_EINVAL, "%s: an environment variable it names holds invalid UTF-8", path);
    }
    /* cJSON_SetValuestring only shrinks in 1.7.15: replace the buffer with one from cJSON's allocator. */
    {
      char *copy = cJSON_malloc(strlen(v) + 1);
      if (copy == NULL) {
        engram_free(v);
        return engram__error(ENGRAM_ENOMEM, "out of memory");
      }
      strcpy(copy, v);
      cJSON_free(node->valuestring);
      node->valuestring = copy;
    }
    engram_free(v);
    return 0;
  }
  for (c = node->child; c != NULL; c = c->next, i++) {
    if (c->string) {
      size_t at = engram__text_append_quoted(path, pathcap, base, ".", 1, 1, 0);
      engram__text_append_quoted(path, pathcap, at, c->string, strlen(c->string), 48, 0);
    } else {
      snprintf(path + base, pathcap - base, "[%d]", i);
    }
    if ((rc = substitute_tree(c, path, pathcap)) != 0) return rc;
  }
  path[base] = '\0';
  return 0;
}

typedef struct {
  engram_manager_t *mgr;
  cJSON *doc;       /* the validated sources array (owned) */
  cJSON *owner;     /* the parsed document */
  int next;
  int status;
  char message[ENGRAM__MSG_MAX];
  engram_cb cb;
  void *ud;
  engram_request_t *req;
} configure_t;

static int validate(cJSON *arr) {
  cJSON *s;
  int i = 0, j;
  char path[512], q[ENGRAM__QUOTE_MAX + 1];
  if (!cJSON_IsArray(arr)) return engram__error(ENGRAM_EINVAL, "sources: must be an array");
  for (s = arr->child; s != NULL; s = s->next, i++) {
    cJSON *name = cJSON_GetObjectItemCaseSensitive(s, "name"), *type = cJSON_GetObjectItemCaseSensitive(s, "type");
    cJSON *desc = cJSON_GetObjectItemCaseSensitive(s, "description"), *def = cJSON_GetObjectItemCaseSensitive(s, "default");
    cJSON *opt = cJSON_GetObjectItemCaseSensitive(s, "options"), *other;
    cJSON *k;
    if (!cJSON_IsObject(s)) return engram__error(ENGRAM_EINVAL, "sources[%d]: must be an object", i);
    for (k = s->child; k != NULL; k = k->next)
      if (strcmp(k->string, "name") && strcmp(k->string, "type") && strcmp(k->string, "description") &&
          strcmp(k->string, "default") && strcmp(k->string, "options"))
        return engram__error(ENGRAM_EINVAL, "sources[%d].%s: unknown field", i, engram__quote(q, sizeof q, k->string));
    if (!cJSON_IsString(name)) return engram__error(ENGRAM_EINVAL, "sources[%d].name: missing or not a string", i);
    if (!cJSON_IsString(type)) return engram__error(ENGRAM_EINVAL, "sources[%d].type: missing or not a string", i);
    if (engram_source_type(type->valuestring) == NULL)
      return engram__error(ENGRAM_EINVAL, "sources[%d].type: unknown source type \"%s\"", i,
                           engram__quote(q, sizeof q, type->valuestring));
    if (desc != NULL && !cJSON_IsString(desc))
      return engram__error(ENGRAM_EINVAL, "sources[%d].description: not a string", i);
    if (def != NULL && !cJSON_IsBool(def)) return engram__error(ENGRAM_EINVAL, "sources[%d].default: not a boolean", i);
    if (opt != NULL && !cJSON_IsObject(opt)) return engram__error(ENGRAM_EINVAL, "sources[%d].options: not an object", i);
    for (other = arr->child, j = 0; other != s; other = other->next, j++) {
      cJSON *oname = cJSON_GetObjectItemCaseSensitive(other, "name");
      if (strcmp(oname->valuestring, name->valuestring) == 0)
        return engram__error(ENGRAM_EINVAL, "sources[%d].name: \"%s\" is also the name of sources[%d]", i,
                             engram__quote(q, sizeof q, name->valuestring), j);
    }
    snprintf(path, sizeof path, "sources[%d].", i);
    if (engram__source_args_check(path, name->valuestring, engram_source_type(type->valuestring),
                                  desc ? desc->valuestring : NULL) != 0)
      return ENGRAM_EINVAL;
    if (opt != NULL) {
      int rc;
      snprintf(path, sizeof path, "sources[%d].options", i);
      if ((rc = substitute_tree(opt, path, sizeof path)) != 0) return rc;
      snprintf(path, sizeof path, "sources[%d].", i);
      if (engram__options_check(path, engram_source_type(type->valuestring), opt) != 0) {
        char msg[512]; /* the backend's message may quote an option: show it safely */
        return engram__error(ENGRAM_EINVAL, "%s", engram__text_clean(msg, sizeof msg, engram_last_error()));
      }
    }
  }
  return 0;
}

static void configure_next(configure_t *c);

static void configure_added(int status, const engram_reply_t *reply, void *ud) {
  configure_t *c = ud;
  if (status != 0 && c->status == 0) {
    c->status = status;
    snprintf(c->message, sizeof c->message, "%s", reply->message);
    c->next = -1;
  }
  configure_next(c);
}

static void configure_next(configure_t *c) {
  cJSON *s = c->next >= 0 ? cJSON_GetArrayItem(c->doc, c->next) : NULL;
  engram_request_t *req = c->req;
  if (s != NULL) {
    cJSON *opt = cJSON_DetachItemFromObjectCaseSensitive(s, "options");
    cJSON *desc = cJSON_GetObjectItemCaseSensitive(s, "description");
    const char *type = cJSON_GetObjectItemCaseSensitive(s, "type")->valuestring;
    int rc;
    c->next++;
    if (opt == NULL && (opt = cJSON_CreateObject()) == NULL) {
      rc = ENGRAM_ENOMEM;
    } else {
      rc = engram__add_source_parsed(c->mgr, cJSON_GetObjectItemCaseSensitive(s, "name")->valuestring,
                                     engram_source_type(type), opt, desc ? desc->valuestring : NULL,
                                     cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(s, "default")), configure_added, c);
    }
    if (rc == 0) return;
    c->status = rc;
    snprintf(c->message, sizeof c->message, "%s", engram_last_error());
  }
  /* Done: answer the configure call. */
  req->priv->on_done = NULL;
  if (c->status != 0) engram__request_answer(req, c->status, "%s", c->message);
  else engram__request_answer(req, 0, NULL);
  cJSON_Delete(c->owner);
  engram_free(c);
  req->backend_data = NULL;
  engram__route(req);
}

static void configure_process(engram_manager_t *mgr, engram_request_t *req) {
  configure_t *c = req->backend_data;
  (void)mgr;
  configure_next(c);
}

int engram_manager_configure(engram_manager_t *mgr, const char *config_json, engram_cb cb, void *ud) {
  cJSON *doc, *arr;
  configure_t *c;
  engram_request_t *req;
  engram__json_issue_t is;
  char msg[400];
  int rc;
  engram__error_clear();
  if (mgr == NULL) return engram__error(ENGRAM_EINVAL, "mgr: NULL");
  if (cb == NULL) return engram__error(ENGRAM_EINVAL, "cb: NULL");
  if (config_json == NULL) return engram__error(ENGRAM_EINVAL, "config_json: NULL");
  /* The text first: cJSON would cut a string at "\u0000" and keep bytes that are not UTF-8. */
  if (engram__json_text_check(config_json, strlen(config_json), "", &is) != 0)
    return engram__error(ENGRAM_EINVAL, "%s", engram__json_issue_message(&is, "config_json", msg, sizeof msg));
  /* cJSON reports an allocation failure as a syntax error: a second attempt tells them apart. */
  if ((doc = cJSON_ParseWithOpts(config_json, NULL, 1)) == NULL) doc = cJSON_ParseWithOpts(config_json, NULL, 1);
  if (doc == NULL) {
    const char *at = cJSON_GetErrorPtr();
    return engram__error(ENGRAM_EINVAL, "config_json: malformed JSON at offset %ld",
                         (long)(at && at >= config_json ? at - config_json : 0));
  }
  arr = cJSON_IsArray(doc) ? doc : cJSON_GetObjectItemCaseSensitive(doc, "sources");
  if (arr == NULL) {
    cJSON_Delete(doc);
    return engram__error(ENGRAM_EINVAL, "sources: missing (expected {\"sources\": [...]})");
  }
  if ((rc = validate(arr)) != 0) {
    cJSON_Delete(doc);
    return rc;
  }
  c = engram_calloc(1, sizeof *c);
  req = engram__request_new(ENGRAM_OP_CONFIGURE, NULL, 0, NULL, 0);
  if (c == NULL || req == NULL) {
    engram_free(c);
    if (req) engram__request_unref(req);
    cJSON_Delete(doc);
    return engram__error(ENGRAM_ENOMEM, "out of memory");
  }
  c->mgr = mgr;
  c->doc = arr;
  c->owner = doc;
  c->req = req;
  req->backend_data = c;
  req->priv->cb = cb;
  req->priv->ud = ud;
  req->priv->control_fn = configure_process;
  if (atomic_load(&mgr->closed)) {
    cJSON_Delete(doc);
    engram_free(c);
    engram__request_unref(req);
    return engram__error(ENGRAM_ECLOSED, "manager: closed");
  }
  return engram__manager_control(mgr, req);
}
