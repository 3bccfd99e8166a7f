/*
 * tools.c — the dispatcher of the agent tools (engram/tools.h): runs a model's tool call (a tool name and JSON
 * arguments) through the manager and answers the tool's JSON result string in reply->text through the caller's
 * callback, exactly once.
 *
 * engram_tools_call parses the arguments (an object, or a string holding one, as OpenAI sends them), checks
 * every argument against the published schema (tools_schema.c) with a message that names the argument and what
 * is wrong with it, maps them onto the engram operation (engram_store, engram_retrieve, engram_search,
 * engram_delete, engram_list_keys, engram_manager_list_sources; for the thread tools engram_thread_append,
 * engram_thread_window, engram_thread_list, engram_thread_search) and submits it with an internal callback. The
 * thread layer checks a message itself (role, content, tool_call_id, ...), a thread id and a search's words; its
 * refusal ("messages[0].role: ...", "query: empty") is reworded to name the tool's argument ("\"role\": ...").
 * That callback runs where the operation's reply runs (the home loop or the call's completion queue), formats
 * the BeamMePrompty result shape and calls the user's callback with a reply built on the stack
 * (op = ENGRAM_OP_TOOL_CALL).
 *
 * Errors never reach the user's callback from inside engram_tools_call: a bad argument, an unknown tool, or an
 * operation the core refuses at once (ENGRAM_EUNKNOWN_SOURCE, ENGRAM_EINVAL, ENGRAM_EBUSY) takes a trampoline —
 * a list_sources control call through the home loop's control queue (honouring opts->cq) — whose callback
 * delivers the error result {"error": "..."}; for an unknown source it also lists the sources there are.
 *
 * Input rules: the arguments text is checked before cJSON parses it (shared/json_text.c) — a string holding
 * "\u0000" (which cJSON would cut: "a\u0000b" would be the key "a", "cache\u0000x" the source "cache"), bytes
 * that are not UTF-8, a lone surrogate escape or text after the document is an error result naming the
 * argument ("arguments.key", "arguments.value.items[3]"). Every message that quotes caller text (a tool name, an
 * argument name, a pattern, a source name) quotes it cut on a character boundary with control characters and
 * bad bytes escaped, and messages from below are passed on cleaned the same way: a result is always valid UTF-8.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "engram/source.h"
#include "engram/thread.h"
#include "engram/tools.h"
#include "shared/error.h"
#include "shared/json_text.h"

extern const char *const engram__tool_names[10];

/* In the order of engram__tool_names. */
typedef enum {
  T_STORE,
  T_RETRIEVE,
  T_SEARCH,
  T_DELETE,
  T_LIST_KEYS,
  T_LIST_SOURCES,
  T_THREAD_APPEND,
  T_THREAD_WINDOW,
  T_THREAD_LIST,
  T_THREAD_SEARCH,
  T_UNKNOWN
} tool_id_t;

#define SEARCH_LIMIT_MAX 100
#define SEARCH_LIMIT_DEFAULT 10
#define LIST_LIMIT_MAX 1000
#define LIST_LIMIT_DEFAULT 100
#define WINDOW_MESSAGES_MAX 1000
#define WINDOW_TOKENS_MAX 1000000
#define THREADS_LIMIT_MAX 100
#define THREADS_LIMIT_DEFAULT 20
#define THREAD_SEARCH_LIMIT_MAX 100
#define THREAD_SEARCH_LIMIT_DEFAULT 10
#define TTL_MAX_S 3153600000.0 /* 100 years */
#define MSG_MAX 600

static const char oom_result[] = "{\"error\":\"out of memory formatting the tool result\"}";

/* One tool call in flight: what the result needs once the operation answers. */
typedef struct {
  tool_id_t tool;
  engram_cb cb;
  void *ud;
  char *key;         /* store, retrieve, delete: the key; thread tools: the thread id — for the result */
  int format;        /* memory_thread_window: ENGRAM_RENDER_OPENAI or ENGRAM_RENDER_ANTHROPIC */
  cJSON *meta_echo;  /* store: the metadata the result shows */
  int err_status;    /* trampoline: the error to deliver */
  char *err_msg;
  int list_sources;  /* trampoline: append the names of the sources to err_msg */
} call_t;

static void call_free(call_t *c) {
  engram_free(c->key);
  cJSON_Delete(c->meta_echo);
  engram_free(c->err_msg);
  engram_free(c);
}

static const char *tool_name(tool_id_t t) { return t < T_UNKNOWN ? engram__tool_names[t] : "tool"; }

/* ---- Delivery ---- */

/* Runs the user's callback with text as the result, then frees the call. under = the operation's reply. */
static void deliver(call_t *c, int status, const char *message, const char *text, const engram_reply_t *under) {
  engram_reply_t r;
  memset(&r, 0, sizeof r);
  if (under != NULL) {
    r.source = under->source;
    r.items = under->items;
    r.n_items = under->n_items;
    r.count = under->count;
    r.cursor = under->cursor;
    r.info = under->info;
  }
  r.op = ENGRAM_OP_TOOL_CALL;
  r.message = message ? message : "";
  r.text = text;
  c->cb(status, &r, c->ud);
  call_free(c);
}

/* Delivers {"error": message} with status. */
static void deliver_error(call_t *c, int status, const char *message, const engram_reply_t *under) {
  cJSON *o = cJSON_CreateObject();
  char *text = NULL;
  if (o != NULL && cJSON_AddStringToObject(o, "error", message) != NULL) text = engram_json_print_text(o);
  cJSON_Delete(o);
  deliver(c, status, message, text ? text : oom_result, under);
  engram_free(text);
}

/* Delivers a result object (consumed); an allocation failure becomes an ENGRAM_ENOMEM error result. */
static void deliver_result(call_t *c, cJSON *o, int ok, const engram_reply_t *under) {
  char *text = ok && o != NULL ? engram_json_print_text(o) : NULL; /* exact numbers: a value reads back as stored */
  cJSON_Delete(o);
  if (text == NULL) deliver(c, ENGRAM_ENOMEM, "out of memory formatting the tool result", oom_result, under);
  else deliver(c, 0, "", text, under);
  engram_free(text);
}

/* ---- Results (the internal callback of the operation) ---- */

/*
 * Adds a reference to a borrowed reply value (no copy: the reply outlives the formatted text). Built by hand as
 * cJSON's create_reference does, because cJSON 1.7.15's cJSON_AddItemReferenceToObject leaks the reference node
 * when copying the member name fails.
 */
static int add_ref(cJSON *o, const char *name, const cJSON *v) {
  cJSON *ref;
  if (v == NULL) return cJSON_AddNullToObject(o, name) != NULL;
  if ((ref = cJSON_CreateNull()) == NULL) return 0;
  memcpy(ref, v, sizeof *ref);
  ref->string = NULL;
  ref->next = ref->prev = NULL;
  ref->type |= cJSON_IsReference; /* cJSON_Delete then leaves the children and strings alone */
  ref->type &= ~cJSON_StringIsConst;
  if (!cJSON_AddItemToObject(o, name, ref)) {
    cJSON_Delete(ref);
    return 0;
  }
  return 1;
}

static int result_search(cJSON *o, const engram_reply_t *reply) {
  cJSON *arr, *it;
  size_t i;
  if (cJSON_AddNumberToObject(o, "found", (double)reply->n_items) == NULL) return 0;
  if ((arr = cJSON_AddArrayToObject(o, "results")) == NULL) return 0;
  for (i = 0; i < reply->n_items; i++) {
    const engram_item_t *item = &reply->items[i];
    if ((it = cJSON_CreateObject()) == NULL) return 0;
    if (!cJSON_AddItemToArray(arr, it)) {
      cJSON_Delete(it);
      return 0;
    }
    if (cJSON_AddStringToObject(it, "key", item->key) == NULL || !add_ref(it, "value", item->value) ||
        cJSON_AddNumberToObject(it, "score", item->score) == NULL)
      return 0;
    if (item->metadata != NULL && !add_ref(it, "metadata", item->metadata)) return 0;
  }
  return 1;
}

static int result_list_keys(cJSON *o, const engram_reply_t *reply) {
  cJSON *arr, *k;
  size_t i;
  if (cJSON_AddNumberToObject(o, "count", (double)reply->n_items) == NULL) return 0;
  if ((arr = cJSON_AddArrayToObject(o, "keys")) == NULL) return 0;
  for (i = 0; i < reply->n_items; i++) {
    if ((k = cJSON_CreateString(reply->items[i].key)) == NULL) return 0;
    if (!cJSON_AddItemToArray(arr, k)) {
      cJSON_Delete(k);
      return 0;
    }
  }
  return reply->cursor == NULL || cJSON_AddStringToObject(o, "cursor", reply->cursor) != NULL;
}

static const char *format_name(int format) { return format == ENGRAM_RENDER_ANTHROPIC ? "anthropic" : "openai"; }

static double info_num(const cJSON *info, const char *name) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(info, name);
  return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

static int result_thread_append(cJSON *o, const call_t *c, const engram_reply_t *reply) {
  return cJSON_AddStringToObject(o, "status", "appended") && cJSON_AddStringToObject(o, "thread", c->key) &&
         cJSON_AddNumberToObject(o, "seq", info_num(reply->info, "first_seq")) &&
         cJSON_AddNumberToObject(o, "count", info_num(reply->info, "count")) &&
         cJSON_AddNumberToObject(o, "trimmed", info_num(reply->info, "trimmed"));
}

/* The window: the rendering the thread layer made (reply->text) parsed, its members spliced into the result. */
static int result_thread_window(cJSON *o, const call_t *c, int status, const engram_reply_t *reply) {
  cJSON *body, *m;
  const cJSON *summary;
  char msg[ENGRAM_THREAD_ID_MAX + 32];
  if (status == ENGRAM_ENOTFOUND) {
    snprintf(msg, sizeof msg, "No thread found: %s", c->key);
    return cJSON_AddFalseToObject(o, "found") && cJSON_AddStringToObject(o, "thread", c->key) &&
           cJSON_AddStringToObject(o, "format", format_name(c->format)) && cJSON_AddArrayToObject(o, "messages") &&
           cJSON_AddNumberToObject(o, "count", 0) && cJSON_AddNumberToObject(o, "omitted", 0) &&
           cJSON_AddStringToObject(o, "message", msg);
  }
  if (!cJSON_AddTrueToObject(o, "found") || !cJSON_AddStringToObject(o, "thread", c->key) ||
      !cJSON_AddStringToObject(o, "format", format_name(c->format)))
    return 0;
  if (reply->text == NULL || (body = cJSON_Parse(reply->text)) == NULL) return 0;
  if (c->format == ENGRAM_RENDER_OPENAI) {
    if (!cJSON_AddItemToObject(o, "messages", body)) {
      cJSON_Delete(body);
      return 0;
    }
  } else {
    /* {"system"?, "messages"}: moved member by member */
    while ((m = body->child) != NULL) {
      cJSON_DetachItemViaPointer(body, m);
      if (!cJSON_AddItemToObject(o, m->string, m)) {
        cJSON_Delete(m);
        cJSON_Delete(body);
        return 0;
      }
    }
    cJSON_Delete(body);
  }
  if (!cJSON_AddNumberToObject(o, "count", (double)reply->n_items) ||
      !cJSON_AddNumberToObject(o, "omitted", info_num(reply->info, "omitted")) ||
      !cJSON_AddNumberToObject(o, "tokens", info_num(reply->info, "tokens")) ||
      !cJSON_AddNumberToObject(o, "first_seq", info_num(reply->info, "first_seq")) ||
      !cJSON_AddNumberToObject(o, "last_seq", info_num(reply->info, "last_seq")))
    return 0;
  summary = cJSON_GetObjectItemCaseSensitive(reply->info, "summary");
  return summary == NULL || add_ref(o, "summary", summary);
}

static int result_thread_list(cJSON *o, const engram_reply_t *reply) {
  const cJSON *threads = cJSON_GetObjectItemCaseSensitive(reply->info, "threads");
  if (cJSON_AddNumberToObject(o, "count", (double)cJSON_GetArraySize(threads)) == NULL) return 0;
  if (!(threads != NULL ? add_ref(o, "threads", threads) : cJSON_AddArrayToObject(o, "threads") != NULL)) return 0;
  return reply->cursor == NULL || cJSON_AddStringToObject(o, "cursor", reply->cursor) != NULL;
}

/* The thread of a message from its storage key "thread-msg:<id>:<gen>:<seq>" (docs/conversations.md; an id has no
 * ':'), into id; 0, or -1 for a key of another shape. */
static int thread_of_key(const char *key, char *id, size_t id_size) {
  static const char prefix[] = "thread-msg:";
  const char *p, *end;
  if (key == NULL || strncmp(key, prefix, sizeof prefix - 1) != 0) return -1;
  p = key + sizeof prefix - 1;
  if ((end = strchr(p, ':')) == NULL || end == p || (size_t)(end - p) >= id_size) return -1;
  memcpy(id, p, (size_t)(end - p));
  id[end - p] = '\0';
  return 0;
}

/* {"thread": T | null, "count": n, "messages": [{"thread", "score", then the message's own members: "seq",
 * "role", "content", ...}]}, best first. */
static int result_thread_search(cJSON *o, const call_t *c, const engram_reply_t *reply) {
  cJSON *arr, *m;
  const cJSON *f;
  char id[ENGRAM_THREAD_ID_MAX + 1];
  size_t i;
  if (!(c->key ? cJSON_AddStringToObject(o, "thread", c->key) != NULL : cJSON_AddNullToObject(o, "thread") != NULL) ||
      cJSON_AddNumberToObject(o, "count", (double)reply->n_items) == NULL ||
      (arr = cJSON_AddArrayToObject(o, "messages")) == NULL)
    return 0;
  for (i = 0; i < reply->n_items; i++) {
    const engram_item_t *item = &reply->items[i];
    if ((m = cJSON_CreateObject()) == NULL) return 0;
    if (!cJSON_AddItemToArray(arr, m)) {
      cJSON_Delete(m);
      return 0;
    }
    if (thread_of_key(item->key, id, sizeof id) == 0 ? cJSON_AddStringToObject(m, "thread", id) == NULL
                                                      : cJSON_AddNullToObject(m, "thread") == NULL)
      return 0;
    if (cJSON_AddNumberToObject(m, "score", item->score) == NULL) return 0;
    if (cJSON_IsObject(item->value))
      cJSON_ArrayForEach(f, item->value) if (!add_ref(m, f->string, f)) return 0;
  }
  return 1;
}

static void on_reply(int status, const engram_reply_t *reply, void *ud) {
  call_t *c = ud;
  cJSON *o;
  int ok;
  char msg[ENGRAM_KEY_MAX + 64], why[MSG_MAX - 32];
  if (status != 0 && !((c->tool == T_RETRIEVE || c->tool == T_THREAD_WINDOW) && status == ENGRAM_ENOTFOUND)) {
    /* The source's message may quote a key it cut anywhere: pass it on cleaned. */
    snprintf(msg, sizeof msg, "%s: %s", tool_name(c->tool),
             reply->message && reply->message[0] ? engram__text_clean(why, sizeof why, reply->message)
                                                 : engram_strerror(status));
    deliver_error(c, status, msg, reply);
    return;
  }
  if ((o = cJSON_CreateObject()) == NULL) {
    deliver_result(c, NULL, 0, reply);
    return;
  }
  switch (c->tool) {
    case T_STORE:
      ok = cJSON_AddStringToObject(o, "status", "stored") && cJSON_AddStringToObject(o, "key", c->key) &&
           add_ref(o, "metadata", c->meta_echo);
      break;
    case T_RETRIEVE:
      if (status == ENGRAM_ENOTFOUND) {
        /* The whole key (≤ ENGRAM_KEY_MAX bytes, valid UTF-8): msg has room for it. */
        snprintf(msg, sizeof msg, "No memory found for key: %s", c->key);
        ok = cJSON_AddFalseToObject(o, "found") && cJSON_AddStringToObject(o, "key", c->key) &&
             cJSON_AddStringToObject(o, "message", msg);
      } else {
        ok = cJSON_AddTrueToObject(o, "found") && cJSON_AddStringToObject(o, "key", c->key) &&
             add_ref(o, "value", reply->n_items > 0 ? reply->items[0].value : NULL);
      }
      break;
    case T_SEARCH: ok = result_search(o, reply); break;
    case T_DELETE:
      ok = cJSON_AddStringToObject(o, "status", "deleted") && cJSON_AddStringToObject(o, "key", c->key);
      break;
    case T_LIST_KEYS: ok = result_list_keys(o, reply); break;
    case T_LIST_SOURCES:
      ok = reply->info != NULL ? add_ref(o, "sources", reply->info) : cJSON_AddArrayToObject(o, "sources") != NULL;
      break;
    case T_THREAD_APPEND: ok = result_thread_append(o, c, reply); break;
    case T_THREAD_WINDOW: ok = result_thread_window(o, c, status, reply); break;
    case T_THREAD_LIST: ok = result_thread_list(o, reply); break;
    case T_THREAD_SEARCH: ok = result_thread_search(o, c, reply); break;
    default: ok = 0; break;
  }
  /* A not-found retrieve is a successful tool call (BeamMePrompty answers {:ok, %{found: false}}). */
  deliver_result(c, o, ok, reply);
}

/* ---- Errors before the operation ran: the trampoline ---- */

static void on_trampoline(int status, const engram_reply_t *reply, void *ud) {
  call_t *c = ud;
  char msg[MSG_MAX * 2];
  size_t n = (size_t)snprintf(msg, sizeof msg, "%s", c->err_msg);
  if (c->list_sources && status == 0 && cJSON_IsArray(reply->info) && n < sizeof msg) {
    const cJSON *s;
    const char *sep = " (available: ";
    if (cJSON_GetArraySize(reply->info) == 0) sep = " (there are no memory sources)";
    cJSON_ArrayForEach(s, reply->info) {
      const cJSON *name = cJSON_GetObjectItemCaseSensitive(s, "name");
      if (!cJSON_IsString(name) || n >= sizeof msg) continue;
      n += (size_t)snprintf(msg + n, sizeof msg - n, "%s\"%s\"", sep, name->valuestring);
      sep = ", ";
    }
    if (n < sizeof msg) snprintf(msg + n, sizeof msg - n, "%s", cJSON_GetArraySize(reply->info) ? ")" : sep);
  }
  deliver_error(c, c->err_status, msg, NULL);
}

/* Schedules the error result through the home loop's control queue; frees c when that cannot be done. */
static int fail_later(engram_manager_t *mgr, call_t *c, const engram_opts_t *base, int status, const char *msg) {
  engram_opts_t lo;
  int rc;
  memset(&lo, 0, sizeof lo);
  lo.cq = base->cq;
  c->err_status = status;
  if ((c->err_msg = engram_strdup(msg)) == NULL) {
    call_free(c);
    return engram__error(ENGRAM_ENOMEM, "out of memory");
  }
  rc = engram_manager_list_sources(mgr, &lo, on_trampoline, c);
  if (rc != 0) call_free(c);
  return rc;
}

/* ---- Arguments ---- */

typedef struct {
  tool_id_t tool;
  const cJSON *args;
  int status;        /* ENGRAM_EINVAL (the argument is bad) or ENGRAM_ENOMEM */
  char err[MSG_MAX];
} parse_t;

static int bad(parse_t *p, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

static int bad(parse_t *p, const char *fmt, ...) {
  va_list ap;
  int n = snprintf(p->err, sizeof p->err, "%s: ", tool_name(p->tool));
  if (n < 0 || (size_t)n >= sizeof p->err) n = 0;
  va_start(ap, fmt);
  vsnprintf(p->err + n, sizeof p->err - (size_t)n, fmt, ap);
  va_end(ap);
  p->status = ENGRAM_EINVAL;
  return ENGRAM_EINVAL;
}

static int nomem(parse_t *p) {
  p->status = ENGRAM_ENOMEM;
  return ENGRAM_ENOMEM;
}

static const char *json_type(const cJSON *v) {
  if (cJSON_IsString(v)) return "a string";
  if (cJSON_IsNumber(v)) return "a number";
  if (cJSON_IsBool(v)) return "a boolean";
  if (cJSON_IsArray(v)) return "an array";
  if (cJSON_IsObject(v)) return "an object";
  if (cJSON_IsNull(v)) return "null";
  return "invalid";
}

/* The argument name, or NULL when absent or null (models send null for an optional argument they skip). */
static const cJSON *arg(const parse_t *p, const char *name) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(p->args, name);
  return cJSON_IsNull(v) ? NULL : v;
}

/* Rejects arguments the schema does not list (it says additionalProperties: false). */
static int known_args(parse_t *p, const char *const *allowed, size_t n) {
  const cJSON *v;
  size_t i, len;
  char list[256], q[ENGRAM__QUOTE_MAX + 1];
  cJSON_ArrayForEach(v, p->args) {
    for (i = 0; i < n && strcmp(v->string, allowed[i]) != 0; i++) {
    }
    if (i < n) continue;
    list[0] = '\0';
    for (i = 0, len = 0; i < n && len < sizeof list; i++)
      len += (size_t)snprintf(list + len, sizeof list - len, "%s%s", i ? ", " : "", allowed[i]);
    engram__quote(q, sizeof q, v->string);
    if (n == 0) return bad(p, "unknown argument \"%s\" (this tool takes no arguments)", q);
    return bad(p, "unknown argument \"%s\" (the arguments are: %s)", q, list);
  }
  return 0;
}

static int get_string(parse_t *p, const char *name, int required, const char **out) {
  const cJSON *v = arg(p, name);
  *out = NULL;
  if (v == NULL) return required ? bad(p, "\"%s\" is required", name) : 0;
  if (!cJSON_IsString(v)) return bad(p, "\"%s\" must be a string, not %s", name, json_type(v));
  *out = v->valuestring;
  return 0;
}

static int get_key(parse_t *p, const char **out) {
  size_t len;
  if (get_string(p, "key", 1, out) != 0) return ENGRAM_EINVAL;
  len = strlen(*out);
  if (len == 0) return bad(p, "\"key\" must not be empty");
  if (len > ENGRAM_KEY_MAX) return bad(p, "\"key\" is %zu bytes long, the limit is %d", len, ENGRAM_KEY_MAX);
  return 0;
}

static int get_int(parse_t *p, const char *name, int min, int max, int def, int *out) {
  const cJSON *v = arg(p, name);
  *out = def;
  if (v == NULL) return 0;
  if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < min || v->valuedouble > max) {
    if (cJSON_IsNumber(v)) return bad(p, "\"%s\" must be an integer %d..%d, not %g", name, min, max, v->valuedouble);
    return bad(p, "\"%s\" must be an integer %d..%d, not %s", name, min, max, json_type(v));
  }
  *out = (int)v->valuedouble;
  return 0;
}

/* memory_source and namespace, common to the tools that touch items; fills o from base. */
static int get_target(parse_t *p, const engram_opts_t *base, engram_opts_t *o, char **ns_owned) {
  const char *src, *ns;
  size_t len;
  *ns_owned = NULL;
  if (get_string(p, "memory_source", 0, &src) != 0 || get_string(p, "namespace", 0, &ns) != 0) return p->status;
  if (src != NULL && src[0] == '\0') return bad(p, "\"memory_source\" must not be empty (omit it for the default source)");
  if (src != NULL) o->source = src;
  if (ns == NULL || ns[0] == '\0') return 0;
  if ((len = strlen(ns)) > ENGRAM_NAMESPACE_MAX)
    return bad(p, "\"namespace\" is %zu bytes long, the limit is %d", len, ENGRAM_NAMESPACE_MAX);
  if (base->ns == NULL || base->ns[0] == '\0') {
    o->ns = ns;
    return 0;
  }
  /* The application confined the agent to base->ns: the model's namespace is a level below it. */
  if ((*ns_owned = engram_malloc(strlen(base->ns) + len + 2)) == NULL) return nomem(p);
  sprintf(*ns_owned, "%s/%s", base->ns, ns);
  o->ns = *ns_owned;
  return 0;
}

static int blank(char ch) { return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n'; }

/*
 * Parses text; blank or NULL text is {}. On failure returns NULL with p->status set; what starts the message of
 * a syntax error. The text is checked first (json_text.h): a string with "\u0000", bytes that are not UTF-8 or
 * a lone surrogate escape is refused naming the argument, as is text after the document.
 */
int engram_json_check(const char *text, size_t len, const char *root, char *msg, size_t msg_size) {
  engram__json_issue_t is;
  char buf[400];
  if (root == NULL) root = "";
  if (msg != NULL && msg_size > 0) msg[0] = '\0';
  if (text == NULL) {
    if (msg != NULL && msg_size > 0) snprintf(msg, msg_size, "%s: NULL", root[0] ? root : "text");
    return ENGRAM_EINVAL;
  }
  if (engram__json_text_check(text, len, root, &is) == 0) return 0;
  if (msg == NULL || msg_size == 0) return ENGRAM_EINVAL;
  if (is.problem == ENGRAM__JSON_SYNTAX)
    snprintf(msg, msg_size, "%s: malformed JSON near offset %zu", root[0] ? root : "text", is.offset);
  else if (is.problem == ENGRAM__JSON_TRAILING)
    snprintf(msg, msg_size, "%s: text after the JSON document at offset %zu", root[0] ? root : "text", is.offset);
  else
    snprintf(msg, msg_size, "%s", engram__json_issue_message(&is, root[0] ? root : "text", buf, sizeof buf));
  len = strlen(msg); /* a message cut by msg_size ends on a character boundary */
  while (len > 0 && !engram_utf8_valid(msg, len)) len--;
  msg[len] = '\0';
  return ENGRAM_EINVAL;
}

static cJSON *parse_text(parse_t *p, const char *text, const char *what) {
  const char *s = text, *end = NULL;
  cJSON *v;
  engram__json_issue_t is;
  char msg[MSG_MAX - 40];
  while (s != NULL && blank(*s)) s++;
  if (s == NULL || *s == '\0') {
    if ((v = cJSON_CreateObject()) == NULL) nomem(p);
    return v;
  }
  if (engram__json_text_check(s, strlen(s), "arguments", &is) != 0) {
    size_t at = is.offset + (size_t)(s - text);
    if (is.problem == ENGRAM__JSON_SYNTAX)
      bad(p, "%s malformed JSON near offset %zu (the arguments must be a JSON object)", what, at);
    else if (is.problem == ENGRAM__JSON_TRAILING)
      bad(p, "%s malformed JSON: text after the document at offset %zu (the arguments must be one JSON object)", what,
          at);
    else
      bad(p, "%s", engram__json_issue_message(&is, "arguments", msg, sizeof msg));
    return NULL;
  }
  if ((v = cJSON_ParseWithOpts(s, &end, 1)) == NULL) {
    end = NULL;
    v = cJSON_ParseWithOpts(s, &end, 1); /* cJSON reports an allocation failure as a syntax error: retry */
  }
  if (v == NULL)
    bad(p, "%s malformed JSON near offset %ld (the arguments must be a JSON object)", what,
        (long)(end != NULL && end >= text ? end - text : 0));
  return v;
}

/* The arguments: an object, or a JSON string holding an object (OpenAI sends them so), or nothing ({}). */
static cJSON *parse_args(parse_t *p, const char *text) {
  cJSON *v = parse_text(p, text, "arguments:"), *inner;
  if (v == NULL || !cJSON_IsString(v)) return v;
  inner = parse_text(p, v->valuestring, "arguments: the string holds");
  cJSON_Delete(v);
  if (inner != NULL && !cJSON_IsObject(inner)) {
    bad(p, "arguments must be a JSON object; the string holds %s", json_type(inner));
    cJSON_Delete(inner);
    return NULL;
  }
  return inner;
}

/* ---- The tools ---- */

static const char *const store_args[] = {"key", "value", "metadata", "memory_source", "namespace"};
static const char *const key_args[] = {"key", "memory_source", "namespace"};
static const char *const search_args[] = {"query", "pattern", "filter", "mode", "alpha", "limit", "memory_source",
                                          "namespace"};
static const char *const list_args[] = {"pattern", "limit", "cursor", "memory_source", "namespace"};
static const char *const append_args[] = {"thread",   "role",     "content",       "tool_calls",
                                          "tool_call_id", "metadata", "memory_source", "namespace"};
static const char *const window_args[] = {"thread", "max_messages", "max_tokens", "format", "memory_source", "namespace"};
static const char *const threads_args[] = {"limit", "cursor", "memory_source", "namespace"};
static const char *const thread_search_args[] = {"thread", "query", "limit", "memory_source", "namespace"};

#define N_OF(a) (sizeof(a) / sizeof *(a))

static int check_pattern(parse_t *p, const char *pattern) {
  char q[ENGRAM__QUOTE_MAX + 1];
  if (pattern != NULL && engram_pattern_check(pattern) != 0)
    return bad(p, "\"pattern\": \"%s\" is not a valid glob (unterminated [ or trailing \\)",
               engram__quote(q, sizeof q, pattern));
  return 0;
}

/* The metadata of memory_store: checks ttl and tags; *stored = metadata without ttl (NULL when empty). */
static int get_metadata(parse_t *p, call_t *c, engram_opts_t *o, cJSON **stored) {
  const cJSON *m = arg(p, "metadata"), *ttl, *tags, *t;
  *stored = NULL;
  if (m == NULL) {
    c->meta_echo = o->metadata ? cJSON_Duplicate(o->metadata, 1) : cJSON_CreateObject();
    return c->meta_echo == NULL ? nomem(p) : 0;
  }
  if (!cJSON_IsObject(m)) return bad(p, "\"metadata\" must be an object, not %s", json_type(m));
  ttl = cJSON_GetObjectItemCaseSensitive(m, "ttl");
  if (ttl != NULL && !cJSON_IsNull(ttl)) {
    if (!cJSON_IsNumber(ttl) || !isfinite(ttl->valuedouble) || ttl->valuedouble < 0 || ttl->valuedouble > TTL_MAX_S) {
      if (cJSON_IsNumber(ttl))
        return bad(p, "\"metadata.ttl\" must be a number of seconds 0..%.0f, not %g", TTL_MAX_S, ttl->valuedouble);
      return bad(p, "\"metadata.ttl\" must be a number of seconds, not %s", json_type(ttl));
    }
    o->flags |= ENGRAM_OPT_TTL;
    o->ttl_ms = (int64_t)llround(ttl->valuedouble * 1000.0);
  }
  tags = cJSON_GetObjectItemCaseSensitive(m, "tags");
  if (tags != NULL && !cJSON_IsNull(tags)) {
    if (!cJSON_IsArray(tags)) return bad(p, "\"metadata.tags\" must be an array of strings, not %s", json_type(tags));
    cJSON_ArrayForEach(t, tags) if (!cJSON_IsString(t))
        return bad(p, "\"metadata.tags\" must be an array of strings; an element is %s", json_type(t));
  }
  if ((c->meta_echo = cJSON_Duplicate(m, 1)) == NULL || (*stored = cJSON_Duplicate(m, 1)) == NULL) return nomem(p);
  cJSON_DeleteItemFromObjectCaseSensitive(*stored, "ttl"); /* ttl became the item's expiry */
  if ((*stored)->child == NULL) {
    cJSON_Delete(*stored);
    *stored = NULL;
  }
  o->metadata = *stored;
  return 0;
}

/*
 * Rewords a refusal of the thread layer (engram_last_error) so that it names the tool's argument:
 * "messages[0].role: unknown role ..." → "\"role\": unknown role ...", "messages[0].content_parts: empty" →
 * "\"content\": empty", "thread: empty" → "\"thread\": empty"; other messages are passed on as they are.
 */
static int thread_refusal(parse_t *p, const char *why) {
  char clean[MSG_MAX - 40], field[64];
  const char *s = engram__text_clean(clean, sizeof clean, why), *colon;
  size_t n, i;
  if (strncmp(s, "messages[0].", 12) == 0) s += 12;
  colon = strstr(s, ": ");
  n = colon ? (size_t)(colon - s) : 0;
  for (i = 0; i < n && (s[i] == '_' || s[i] == '.' || s[i] == '[' || s[i] == ']' || (s[i] >= 'a' && s[i] <= 'z') ||
                        (s[i] >= '0' && s[i] <= '9'));
       i++) {
  }
  if (n == 0 || i < n || n >= sizeof field) return bad(p, "%s", s);
  memcpy(field, s, n);
  field[n] = '\0';
  if (strncmp(field, "content_parts", 13) == 0) return bad(p, "\"content%s\"%s", field + 13, colon);
  return bad(p, "\"%s\"%s", field, colon);
}

/* The arguments of memory_thread_append as one message (borrowing from p->args). */
static int get_message(parse_t *p, engram_message_t *m) {
  const cJSON *content = arg(p, "content"), *calls = arg(p, "tool_calls"), *meta = arg(p, "metadata");
  memset(m, 0, sizeof *m);
  if (get_string(p, "role", 1, &m->role) != 0 || get_string(p, "tool_call_id", 0, &m->tool_call_id) != 0)
    return p->status;
  if (cJSON_IsString(content)) m->content = content->valuestring;
  else if (cJSON_IsArray(content)) m->content_parts = content;
  else if (content != NULL)
    return bad(p, "\"content\" must be a string or an array of content parts, not %s", json_type(content));
  if (calls != NULL && !cJSON_IsArray(calls))
    return bad(p, "\"tool_calls\" must be an array of objects, not %s", json_type(calls));
  if (meta != NULL && !cJSON_IsObject(meta)) return bad(p, "\"metadata\" must be an object, not %s", json_type(meta));
  m->tool_calls = calls;
  m->metadata = meta;
  return 0;
}

static int get_format(parse_t *p, int *format) {
  const char *f;
  char q[ENGRAM__QUOTE_MAX + 1];
  *format = ENGRAM_RENDER_OPENAI;
  if (get_string(p, "format", 0, &f) != 0) return p->status;
  if (f == NULL || strcmp(f, "openai") == 0) return 0;
  if (strcmp(f, "anthropic") == 0) {
    *format = ENGRAM_RENDER_ANTHROPIC;
    return 0;
  }
  return bad(p, "\"format\" must be \"openai\" or \"anthropic\", not \"%s\"", engram__quote(q, sizeof q, f));
}

/* memory_search's "mode" ("text", "vector" or "hybrid") and "alpha" (hybrid: the vector score's weight in [0, 1],
 * weighted fusion; without it, reciprocal rank fusion), from the arguments or the query object (where = "" or
 * "query."): sets q->mode, q->fusion and q->alpha. */
static int get_mode(parse_t *p, const cJSON *mode, const cJSON *alpha, const char *where, engram_query_t *q) {
  static const char *const modes[] = {"text", "vector", "hybrid"};
  char quoted[80];
  size_t i;
  if (mode != NULL && !cJSON_IsNull(mode)) {
    if (q->mode != ENGRAM_MODE_DEFAULT) return bad(p, "\"mode\" is given twice: in \"query\" and beside it");
    if (!cJSON_IsString(mode)) return bad(p, "\"%smode\" must be a string, not %s", where, json_type(mode));
    for (i = 0; i < N_OF(modes) && strcmp(mode->valuestring, modes[i]) != 0; i++) {
    }
    if (i == N_OF(modes))
      return bad(p, "\"%smode\" must be \"text\", \"vector\" or \"hybrid\", not \"%s\"", where,
                 engram__quote(quoted, sizeof quoted, mode->valuestring));
    q->mode = ENGRAM_MODE_TEXT + (int)i;
  }
  if (alpha != NULL && !cJSON_IsNull(alpha)) {
    if (q->fusion == ENGRAM_FUSION_WEIGHTED) return bad(p, "\"alpha\" is given twice: in \"query\" and beside it");
    if (!cJSON_IsNumber(alpha)) return bad(p, "\"%salpha\" must be a number in [0, 1], not %s", where, json_type(alpha));
    if (!(alpha->valuedouble >= 0 && alpha->valuedouble <= 1))
      return bad(p, "\"%salpha\" must be a number in [0, 1], not %g", where, alpha->valuedouble);
    q->fusion = ENGRAM_FUSION_WEIGHTED;
    q->alpha = alpha->valuedouble;
  }
  return 0;
}

/*
 * memory_search's query: a string (the words), or — as BeamMePrompty's own tool definitions have it, where the
 * query is an object whose format the backend reads (its ETS backend reads {"pattern": ...}) — an object with
 * any of "text" (the words), "pattern", "filter", "mode" and "alpha". pattern, filter, mode and alpha may also
 * stand beside the query, but not in both places. *text is "" when no words. Sets qq's mode, fusion and alpha.
 */
static int get_query(parse_t *p, const char **text, const char **pattern, const cJSON **filter, engram_query_t *qq) {
  static const char *const members[] = {"text", "pattern", "filter", "mode", "alpha"};
  const cJSON *qv = arg(p, "query"), *m, *v;
  size_t i;
  char q[80];
  *text = "";
  *pattern = NULL;
  *filter = NULL;
  if (get_string(p, "pattern", 0, pattern) != 0) return ENGRAM_EINVAL;
  *filter = arg(p, "filter");
  if (qv == NULL) return bad(p, "\"query\" is required");
  if (get_mode(p, arg(p, "mode"), arg(p, "alpha"), "", qq) != 0) return ENGRAM_EINVAL;
  if (cJSON_IsString(qv)) {
    *text = qv->valuestring;
  } else {
    if (!cJSON_IsObject(qv)) return bad(p, "\"query\" must be a string or an object, not %s", json_type(qv));
    for (m = qv->child; m != NULL; m = m->next) {
      for (i = 0; i < N_OF(members) && strcmp(members[i], m->string) != 0; i++) {
      }
      if (i == N_OF(members))
        return bad(p, "unknown member \"%s\" of \"query\" (the members are: text, pattern, filter, mode, alpha)",
                   engram__quote(q, sizeof q, m->string));
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(qv, "text")) != NULL && !cJSON_IsNull(v)) {
      if (!cJSON_IsString(v)) return bad(p, "\"query.text\" must be a string, not %s", json_type(v));
      *text = v->valuestring;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(qv, "pattern")) != NULL && !cJSON_IsNull(v)) {
      if (!cJSON_IsString(v)) return bad(p, "\"query.pattern\" must be a string, not %s", json_type(v));
      if (*pattern != NULL) return bad(p, "\"pattern\" is given twice: in \"query\" and beside it");
      *pattern = v->valuestring;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(qv, "filter")) != NULL && !cJSON_IsNull(v)) {
      if (*filter != NULL) return bad(p, "\"filter\" is given twice: in \"query\" and beside it");
      *filter = v;
    }
    if (get_mode(p, cJSON_GetObjectItemCaseSensitive(qv, "mode"), cJSON_GetObjectItemCaseSensitive(qv, "alpha"),
                 "query.", qq) != 0)
      return ENGRAM_EINVAL;
  }
  if (qq->fusion == ENGRAM_FUSION_WEIGHTED && qq->mode != ENGRAM_MODE_HYBRID)
    return bad(p, "\"alpha\" weighs the vector ranking in mode \"hybrid\" only (mode is %s)",
               qq->mode == ENGRAM_MODE_TEXT ? "\"text\"" : qq->mode == ENGRAM_MODE_VECTOR ? "\"vector\"" : "not given");
  if (qq->mode == ENGRAM_MODE_HYBRID && (*text)[0] == '\0')
    return bad(p, "mode \"hybrid\" needs words in \"query\" (they are ranked by BM25 and embedded)");
  return 0;
}

/*
 * Checks the arguments of c->tool and submits its operation. Returns 0 (submitted); ENGRAM_EINVAL with p->err set
 * (a bad argument); ENGRAM_ENOMEM; or the operation's own refusal (engram_last_error says why).
 */
static int run(engram_manager_t *mgr, call_t *c, parse_t *p, const engram_opts_t *base) {
  engram_opts_t o = *base;
  const char *key = NULL, *query = NULL, *pattern = NULL, *cursor = NULL;
  char *ns_owned = NULL, ferr[256];
  cJSON *stored = NULL;
  const cJSON *value = NULL, *filter = NULL;
  engram_query_t q = ENGRAM_QUERY_INIT;
  engram_message_t msg;
  engram_window_t win = ENGRAM_WINDOW_INIT;
  int rc = 0, limit, max_messages, max_tokens;
  switch (c->tool) {
    case T_STORE:
      if (known_args(p, store_args, N_OF(store_args)) || get_key(p, &key)) return p->status;
      if ((value = cJSON_GetObjectItemCaseSensitive(p->args, "value")) == NULL) return bad(p, "\"value\" is required");
      if (get_target(p, base, &o, &ns_owned) || get_metadata(p, c, &o, &stored)) break;
      if ((c->key = engram_strdup(key)) == NULL) {
        rc = nomem(p);
        break;
      }
      rc = engram_store(mgr, key, value, &o, on_reply, c);
      break;
    case T_RETRIEVE:
    case T_DELETE:
      if (known_args(p, key_args, N_OF(key_args)) || get_key(p, &key) || get_target(p, base, &o, &ns_owned)) break;
      if ((c->key = engram_strdup(key)) == NULL) {
        rc = nomem(p);
        break;
      }
      o.flags &= ~(unsigned)ENGRAM_OPT_TTL;
      rc = c->tool == T_RETRIEVE ? engram_retrieve(mgr, key, &o, on_reply, c) : engram_delete(mgr, key, &o, on_reply, c);
      break;
    case T_SEARCH:
      if (known_args(p, search_args, N_OF(search_args)) || get_query(p, &query, &pattern, &filter, &q) ||
          check_pattern(p, pattern) || get_int(p, "limit", 1, SEARCH_LIMIT_MAX, SEARCH_LIMIT_DEFAULT, &limit) ||
          get_target(p, base, &o, &ns_owned))
        break;
      if (filter != NULL) {
        if (!cJSON_IsObject(filter)) {
          bad(p, "\"filter\" must be an object, not %s", json_type(filter));
          break;
        }
        if (engram_filter_check(filter, ferr, sizeof ferr) != 0) {
          char clean[sizeof ferr];
          bad(p, "\"filter\": %s", engram__text_clean(clean, sizeof clean, ferr));
          break;
        }
      }
      q.text = query[0] ? query : NULL;
      q.pattern = pattern && pattern[0] ? pattern : NULL;
      q.filter = filter;
      q.limit = limit;
      rc = engram_search(mgr, &q, &o, on_reply, c);
      break;
    case T_LIST_KEYS:
      if (known_args(p, list_args, N_OF(list_args)) || get_string(p, "pattern", 0, &pattern) ||
          check_pattern(p, pattern) || get_int(p, "limit", 1, LIST_LIMIT_MAX, LIST_LIMIT_DEFAULT, &limit) ||
          get_string(p, "cursor", 0, &cursor) || get_target(p, base, &o, &ns_owned))
        break;
      rc = engram_list_keys(mgr, pattern && pattern[0] ? pattern : NULL, limit, cursor && cursor[0] ? cursor : NULL,
                            &o, on_reply, c);
      break;
    case T_LIST_SOURCES:
      if (known_args(p, NULL, 0)) break;
      rc = engram_manager_list_sources(mgr, &o, on_reply, c);
      break;
    case T_THREAD_APPEND:
      if (known_args(p, append_args, N_OF(append_args)) || get_string(p, "thread", 1, &key) || get_message(p, &msg) ||
          get_target(p, base, &o, &ns_owned))
        break;
      if ((c->key = engram_strdup(key)) == NULL) {
        rc = nomem(p);
        break;
      }
      rc = engram_thread_append(mgr, key, &msg, 1, NULL, &o, on_reply, c);
      if (rc == ENGRAM_EINVAL) thread_refusal(p, engram_last_error());
      break;
    case T_THREAD_WINDOW:
      if (known_args(p, window_args, N_OF(window_args)) || get_string(p, "thread", 1, &key) ||
          get_int(p, "max_messages", 1, WINDOW_MESSAGES_MAX, 0, &max_messages) ||
          get_int(p, "max_tokens", 1, WINDOW_TOKENS_MAX, 0, &max_tokens) || get_format(p, &c->format) ||
          get_target(p, base, &o, &ns_owned))
        break;
      if (max_messages > 0 || max_tokens > 0) {
        win.flags = (max_messages > 0 ? (unsigned)ENGRAM_WINDOW_BY_COUNT : 0u) |
                    (max_tokens > 0 ? (unsigned)ENGRAM_WINDOW_BY_TOKENS : 0u);
        win.max_messages = max_messages;
        win.max_tokens = max_tokens;
      }
      win.format = (engram_render_format_t)c->format;
      if ((c->key = engram_strdup(key)) == NULL) {
        rc = nomem(p);
        break;
      }
      rc = engram_thread_window(mgr, key, &win, &o, on_reply, c);
      if (rc == ENGRAM_EINVAL) thread_refusal(p, engram_last_error());
      break;
    case T_THREAD_LIST:
      if (known_args(p, threads_args, N_OF(threads_args)) ||
          get_int(p, "limit", 1, THREADS_LIMIT_MAX, THREADS_LIMIT_DEFAULT, &limit) || get_string(p, "cursor", 0, &cursor) ||
          get_target(p, base, &o, &ns_owned))
        break;
      rc = engram_thread_list(mgr, limit, cursor && cursor[0] ? cursor : NULL, &o, on_reply, c);
      if (rc == ENGRAM_EINVAL) thread_refusal(p, engram_last_error());
      break;
    case T_THREAD_SEARCH:
      if (known_args(p, thread_search_args, N_OF(thread_search_args)) || get_string(p, "thread", 0, &key) ||
          get_string(p, "query", 1, &query) ||
          get_int(p, "limit", 1, THREAD_SEARCH_LIMIT_MAX, THREAD_SEARCH_LIMIT_DEFAULT, &limit) ||
          get_target(p, base, &o, &ns_owned))
        break;
      if (key != NULL && (c->key = engram_strdup(key)) == NULL) { /* NULL: every thread of the namespace */
        rc = nomem(p);
        break;
      }
      /* The thread layer checks the id and the words ("thread: empty", "query: empty" → "\"thread\": empty"). */
      rc = engram_thread_search(mgr, key, query, limit, &o, on_reply, c);
      if (rc == ENGRAM_EINVAL) thread_refusal(p, engram_last_error());
      break;
    default: break;
  }
  engram_free(ns_owned);
  cJSON_Delete(stored); /* engram_store copied it */
  if (p->status != 0) return p->status;
  return rc;
}

int engram_tools_call(engram_manager_t *mgr, const char *name, const char *arguments_json, const engram_opts_t *opts,
                      engram_cb cb, void *ud) {
  static const engram_opts_t no_opts;
  const engram_opts_t *base = opts ? opts : &no_opts;
  call_t *c;
  parse_t p;
  cJSON *args;
  char msg[MSG_MAX], q[ENGRAM__QUOTE_MAX + 1], why[MSG_MAX - 40];
  int rc;
  size_t i;
  engram__error_clear();
  if (mgr == NULL) return engram__error(ENGRAM_EINVAL, "mgr: NULL");
  if (name == NULL) return engram__error(ENGRAM_EINVAL, "name: NULL");
  if (cb == NULL) return engram__error(ENGRAM_EINVAL, "cb: NULL");
  if ((c = engram_calloc(1, sizeof *c)) == NULL) return engram__error(ENGRAM_ENOMEM, "out of memory");
  c->cb = cb;
  c->ud = ud;
  for (c->tool = T_STORE; c->tool < T_UNKNOWN && strcmp(name, engram__tool_names[c->tool]) != 0; c->tool++) {
  }
  if (c->tool == T_UNKNOWN) {
    size_t n = (size_t)snprintf(msg, sizeof msg, "unknown tool \"%s\" (the memory tools are",
                                engram__quote(q, sizeof q, name));
    for (i = 0; i < N_OF(engram__tool_names) && n < sizeof msg; i++)
      n += (size_t)snprintf(msg + n, sizeof msg - n, "%s %s", i == T_THREAD_APPEND ? "; the thread tools are" : i ? "," : "",
                            engram__tool_names[i]);
    if (n < sizeof msg) snprintf(msg + n, sizeof msg - n, ")");
    return fail_later(mgr, c, base, ENGRAM_EINVAL, msg);
  }
  memset(&p, 0, sizeof p);
  p.tool = c->tool;
  if ((args = parse_args(&p, arguments_json)) != NULL && !cJSON_IsObject(args)) {
    bad(&p, "arguments must be a JSON object, not %s", json_type(args));
    cJSON_Delete(args);
    args = NULL;
  }
  if (args == NULL) {
    if (p.status == ENGRAM_ENOMEM) {
      call_free(c);
      return engram__error(ENGRAM_ENOMEM, "out of memory parsing the arguments");
    }
    return fail_later(mgr, c, base, ENGRAM_EINVAL, p.err);
  }
  p.args = args;
  rc = run(mgr, c, &p, base);
  if (rc == 0) {
    cJSON_Delete(args);
    return 0;
  }
  if (p.status == ENGRAM_EINVAL) {
    snprintf(msg, sizeof msg, "%s", p.err);
  } else if (rc == ENGRAM_ENOMEM || rc == ENGRAM_ECLOSED) {
    /* Nothing can be queued: report it at once (engram_last_error says why), no callback. */
    cJSON_Delete(args);
    call_free(c);
    return rc == ENGRAM_ENOMEM && p.status == ENGRAM_ENOMEM ? engram__error(rc, "out of memory") : rc;
  } else if (rc == ENGRAM_EUNKNOWN_SOURCE) {
    const cJSON *src = arg(&p, "memory_source");
    if (cJSON_IsString(src))
      snprintf(msg, sizeof msg, "%s: unknown memory_source \"%s\"", name, engram__quote(q, sizeof q, src->valuestring));
    else snprintf(msg, sizeof msg, "%s: %s", name, engram__text_clean(why, sizeof why, engram_last_error()));
    c->list_sources = 1;
  } else {
    /* Refused by the core at once (e.g. a full mailbox): its message says why. */
    snprintf(msg, sizeof msg, "%s: %s", name, engram__text_clean(why, sizeof why, engram_last_error()));
  }
  cJSON_Delete(args);
  return fail_later(mgr, c, base, p.status == ENGRAM_EINVAL ? ENGRAM_EINVAL : rc, msg);
}
