/*
 * thread_check.c — validation of the thread calls' arguments and the stored form of a message.
 *
 * Every public thread function checks its arguments before anything is queued (docs/conversations.md, Bad input):
 * a message's role, content, tool calls and metadata, a thread's settings. Each refusal names the field
 * (messages[i].content, settings.max_messages) and nothing is stored. th_prepare_message builds a message's stored
 * JSON object and its item metadata once, at the call, in one block; the head's update numbers and stamps them
 * (thread_change.c).
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "engram/source.h"
#include "thread/thread_check.h"
#include "thread/thread_block.h"
#include "thread/thread_head.h"
#include "shared/error.h"
#include "shared/json_text.h"

int th_check_tree(const cJSON *v, const char *root) {
  engram__json_issue_t is;
  char msg[300];
  int rc = engram__json_tree_check(v, root, &is);
  if (rc == ENGRAM_ENOMEM) return engram__error(rc, "out of memory");
  if (rc != 0) return engram__error(rc, "%s", engram__json_issue_message(&is, root, msg, sizeof msg));
  return 0;
}

static int check_text(const char *s, const char *what) {
  if (!engram_utf8_valid(s, strlen(s))) return engram__error(ENGRAM_EINVAL, "%s: invalid UTF-8", what);
  return 0;
}

int th_check_settings(const engram_thread_settings_t *s) {
  if (s == NULL) return 0;
  if (s->flags & ~(unsigned)(ENGRAM_THREAD_MAX_MESSAGES | ENGRAM_THREAD_TTL | ENGRAM_THREAD_NO_MAX | ENGRAM_THREAD_NO_TTL))
    return engram__error(ENGRAM_EINVAL, "settings.flags: unknown bits 0x%x", s->flags);
  if ((s->flags & ENGRAM_THREAD_MAX_MESSAGES) && (s->flags & ENGRAM_THREAD_NO_MAX))
    return engram__error(ENGRAM_EINVAL, "settings.flags: ENGRAM_THREAD_MAX_MESSAGES with ENGRAM_THREAD_NO_MAX");
  if ((s->flags & ENGRAM_THREAD_TTL) && (s->flags & ENGRAM_THREAD_NO_TTL))
    return engram__error(ENGRAM_EINVAL, "settings.flags: ENGRAM_THREAD_TTL with ENGRAM_THREAD_NO_TTL");
  if ((s->flags & ENGRAM_THREAD_MAX_MESSAGES) && (s->max_messages < 1 || s->max_messages > (int64_t)1 << 53))
    return engram__error(ENGRAM_EINVAL, "settings.max_messages: %" PRId64 ", must be 1..2^53", s->max_messages);
  if ((s->flags & ENGRAM_THREAD_TTL) && (s->ttl_ms < 1 || s->ttl_ms > (int64_t)1 << 53))
    return engram__error(ENGRAM_EINVAL, "settings.ttl_ms: %" PRId64 ", must be 1..2^53 ms", s->ttl_ms);
  return 0;
}

int th_check_message(const engram_message_t *m, size_t i) {
  char f[64];
  char q[80];
  int rc, is_tool, is_asst;
  if (m->role == NULL) return engram__error(ENGRAM_EINVAL, "messages[%zu].role: NULL", i);
  if (strcmp(m->role, "system") != 0 && strcmp(m->role, "user") != 0 && strcmp(m->role, "assistant") != 0 &&
      strcmp(m->role, "tool") != 0)
    return engram__error(ENGRAM_EINVAL, "messages[%zu].role: unknown role \"%s\" (system, user, assistant or tool)", i,
                         engram__quote(q, sizeof q, m->role));
  is_tool = strcmp(m->role, "tool") == 0;
  is_asst = strcmp(m->role, "assistant") == 0;
  if (m->content != NULL && m->content_parts != NULL)
    return engram__error(ENGRAM_EINVAL, "messages[%zu].content: both content and content_parts are set", i);
  if (m->content != NULL) { /* the field's name is formatted for an error only (snprintf was 2 % of an append) */
    if (m->content[0] == '\0') return engram__error(ENGRAM_EINVAL, "messages[%zu].content: empty", i);
    if (!engram_utf8_valid(m->content, strlen(m->content)))
      return engram__error(ENGRAM_EINVAL, "messages[%zu].content: invalid UTF-8", i);
  }
  if (m->content_parts != NULL) {
    snprintf(f, sizeof f, "messages[%zu].content_parts", i);
    if (cJSON_IsNull(m->content_parts) || cJSON_IsInvalid(m->content_parts) ||
        (cJSON_IsArray(m->content_parts) && cJSON_GetArraySize(m->content_parts) == 0) ||
        (cJSON_IsString(m->content_parts) && m->content_parts->valuestring && m->content_parts->valuestring[0] == '\0'))
      return engram__error(ENGRAM_EINVAL, "%s: empty", f);
    if ((rc = th_check_tree(m->content_parts, f)) != 0) return rc;
  }
  if (m->tool_calls != NULL) {
    const cJSON *call;
    int k = 0;
    snprintf(f, sizeof f, "messages[%zu].tool_calls", i);
    if (!is_asst) return engram__error(ENGRAM_EINVAL, "%s: only an assistant message has tool calls", f);
    if (!cJSON_IsArray(m->tool_calls) || cJSON_GetArraySize(m->tool_calls) == 0)
      return engram__error(ENGRAM_EINVAL, "%s: must be a non-empty array", f);
    if ((rc = th_check_tree(m->tool_calls, f)) != 0) return rc;
    cJSON_ArrayForEach(call, m->tool_calls) {
      const cJSON *id = cJSON_GetObjectItemCaseSensitive(call, "id");
      if (!cJSON_IsObject(call) || !cJSON_IsString(id) || id->valuestring[0] == '\0')
        return engram__error(ENGRAM_EINVAL, "%s[%d].id: missing (each call needs a non-empty string id)", f, k);
      k++;
    }
  }
  if (m->content == NULL && m->content_parts == NULL && !(is_asst && m->tool_calls != NULL))
    return engram__error(ENGRAM_EINVAL, "messages[%zu].content: empty (only an assistant message with tool_calls may "
                                        "have no content)", i);
  if (is_tool) {
    snprintf(f, sizeof f, "messages[%zu].tool_call_id", i);
    if (m->tool_call_id == NULL || m->tool_call_id[0] == '\0')
      return engram__error(ENGRAM_EINVAL, "%s: missing (a tool message answers a tool call)", f);
    if ((rc = check_text(m->tool_call_id, f)) != 0) return rc;
  } else if (m->tool_call_id != NULL) {
    return engram__error(ENGRAM_EINVAL, "messages[%zu].tool_call_id: only a tool message has one", i);
  }
  if (m->metadata != NULL) {
    snprintf(f, sizeof f, "messages[%zu].metadata", i);
    if (!cJSON_IsObject(m->metadata)) return engram__error(ENGRAM_EINVAL, "%s: must be a JSON object", f);
    if ((rc = th_check_tree(m->metadata, f)) != 0) return rc;
  }
  return 0;
}

/* Adds v to o under name, a string literal (cJSON's CS form: the name is neither copied nor freed — one
 * allocation less per member of every message, metadata and reply an append builds). Takes v; returns v, or NULL
 * (v freed) when v is NULL or cannot be added. */
cJSON *th_add_cs(cJSON *o, const char *name, cJSON *v) {
  if (v != NULL && cJSON_AddItemToObjectCS(o, name, v)) return v;
  cJSON_Delete(v);
  return NULL;
}

/* The four roles as string literals: a message's "role" and its item metadata's "role" refer to them (cJSON's
 * string references: neither copied nor freed). role was checked to be one of them. */
const char th_role_system[] = "system";
static const char ROLE_USER[] = "user", ROLE_ASSISTANT[] = "assistant", ROLE_TOOL[] = "tool";
const char *th_role_literal(const char *role) {
  return strcmp(role, th_role_system) == 0 ? th_role_system : strcmp(role, ROLE_USER) == 0 ? ROLE_USER
         : strcmp(role, ROLE_ASSISTANT) == 0                                       ? ROLE_ASSISTANT
                                                                                   : ROLE_TOOL;
}

/* The stored form, {"seq": 0, "role", "content", "tool_calls"?, "tool_call_id"?, "metadata"?, "created_at_ms": 0},
 * and its item metadata, {"thread": id, "seq": 0, "role"}, in one block (thread_block.h): one allocation a
 * message instead of one per node and string. The metadata's nodes follow the message's in the block, so it goes
 * with the message: never free it on its own. role and id are referred to, not copied (role: a literal; id: the
 * update's, which outlives the block's use as item metadata). seq and created_at_ms are set once the head gave
 * them, through nodes[0] (the message's seq), nodes[1] (its created_at_ms) and nodes[2] (the metadata's seq). */
cJSON *th_prepare_message(const engram_message_t *m, const char *role, const char *id, cJSON **meta, cJSON **nodes) {
  size_t n = 5 + 4, bytes = 0; /* object, seq, role, content, created_at_ms; metadata object, thread, seq, role */
  th_block_t b;
  cJSON *o;
  if (m->content != NULL) bytes += strlen(m->content) + 1;
  th_block_measure(m->content_parts, &n, &bytes);
  th_block_measure(m->tool_calls, &n, &bytes);
  th_block_measure(m->metadata, &n, &bytes);
  if (m->tool_call_id != NULL) {
    n++;
    bytes += strlen(m->tool_call_id) + 1;
  }
  if ((o = th_block_new(&b, n, bytes, cJSON_Object)) == NULL) return NULL;
  nodes[0] = th_block_num(&b, o, "seq", 0);
  th_block_ref(&b, o, "role", role);
  if (m->content != NULL) th_block_str(&b, o, "content", m->content);
  else if (m->content_parts != NULL) th_block_copy(&b, o, "content", m->content_parts);
  else th_block_add(&b, o, "content", cJSON_NULL);
  if (m->tool_calls != NULL) th_block_copy(&b, o, "tool_calls", m->tool_calls);
  if (m->tool_call_id != NULL) th_block_str(&b, o, "tool_call_id", m->tool_call_id);
  if (m->metadata != NULL) th_block_copy(&b, o, "metadata", m->metadata);
  nodes[1] = th_block_num(&b, o, "created_at_ms", 0);
  *meta = th_block_add(&b, NULL, NULL, cJSON_Object);
  th_block_ref(&b, *meta, "thread", id);
  nodes[2] = th_block_num(&b, *meta, "seq", 0);
  th_block_ref(&b, *meta, "role", role);
  return o;
}

int th_check_call(const engram_manager_t *mgr, const char *thread, engram_cb cb) {
  engram__error_clear();
  if (mgr == NULL) return engram__error(ENGRAM_EINVAL, "mgr: NULL");
  if (cb == NULL) return engram__error(ENGRAM_EINVAL, "cb: NULL");
  return th_check_id(thread);
}
