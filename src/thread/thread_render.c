/*
 * thread_render.c — pure functions of the conversation layer (include/engram/thread.h): the default token counter
 * and the renderings of stored messages as an OpenAI Chat Completions `messages` array or an Anthropic Messages
 * body. No I/O, no manager: thread_window.c and the tools use them, nothing here calls back.
 */
#include <string.h>

#include "engram/source.h"
#include "engram/thread.h"
#include "thread/thread_head.h"

static size_t json_bytes(const cJSON *v) {
  char *s;
  size_t n;
  if (v == NULL || cJSON_IsNull(v)) return 0;
  if (cJSON_IsString(v)) return strlen(v->valuestring);
  s = engram_json_print_text(v);
  n = s ? strlen(s) : 0;
  engram_free(s);
  return n;
}

size_t engram_thread_count_tokens(const cJSON *message, void *ud) {
  size_t bytes;
  (void)ud;
  if (message == NULL) return 1;
  bytes = json_bytes(th_get(message, "content")) + json_bytes(th_get(message, "tool_calls"));
  bytes = (bytes + 3) / 4;
  return bytes ? bytes : 1;
}

static const char *str_of(const cJSON *o, const char *name) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
  return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* Adds a duplicate of v (or null) as o[name]; 0 or -1 on ENOMEM. */
static int add_dup(cJSON *o, const char *name, const cJSON *v) {
  cJSON *d = v ? cJSON_Duplicate(v, 1) : cJSON_CreateNull();
  if (d == NULL) return -1;
  if (!cJSON_AddItemToObject(o, name, d)) {
    cJSON_Delete(d);
    return -1;
  }
  return 0;
}

static int add_str(cJSON *o, const char *name, const char *s) { return cJSON_AddStringToObject(o, name, s) ? 0 : -1; }

static cJSON *render_openai(const cJSON *messages) {
  cJSON *out = cJSON_CreateArray();
  const cJSON *m;
  if (out == NULL) return NULL;
  cJSON_ArrayForEach(m, messages) {
    cJSON *o = cJSON_CreateObject();
    const char *role = str_of(m, "role"), *tcid = str_of(m, "tool_call_id");
    const cJSON *tc = cJSON_GetObjectItemCaseSensitive(m, "tool_calls");
    if (o == NULL || !cJSON_AddItemToArray(out, o)) {
      cJSON_Delete(o);
      goto fail;
    }
    if (add_str(o, "role", role ? role : "user") != 0) goto fail;
    if (add_dup(o, "content", cJSON_GetObjectItemCaseSensitive(m, "content")) != 0) goto fail;
    if (tc != NULL && role != NULL && strcmp(role, "assistant") == 0 && add_dup(o, "tool_calls", tc) != 0) goto fail;
    if (tcid != NULL && add_str(o, "tool_call_id", tcid) != 0) goto fail;
  }
  return out;
fail:
  cJSON_Delete(out);
  return NULL;
}

/* Appends the content of a message as Anthropic blocks to arr. */
static int content_blocks(cJSON *arr, const cJSON *content) {
  if (content == NULL || cJSON_IsNull(content)) return 0;
  if (cJSON_IsString(content)) {
    cJSON *b = cJSON_CreateObject();
    if (b == NULL || !cJSON_AddItemToArray(arr, b)) {
      cJSON_Delete(b);
      return -1;
    }
    return add_str(b, "type", "text") || add_str(b, "text", content->valuestring) ? -1 : 0;
  }
  if (cJSON_IsArray(content)) {
    const cJSON *p;
    cJSON_ArrayForEach(p, content) {
      cJSON *d = cJSON_Duplicate(p, 1);
      if (d == NULL || !cJSON_AddItemToArray(arr, d)) {
        cJSON_Delete(d);
        return -1;
      }
    }
    return 0;
  }
  {
    cJSON *d = cJSON_Duplicate(content, 1);
    if (d == NULL || !cJSON_AddItemToArray(arr, d)) {
      cJSON_Delete(d);
      return -1;
    }
  }
  return 0;
}

/* One tool call as a tool_use block: OpenAI {"id", "function": {"name", "arguments": "json"}} or Anthropic
 * {"id", "name", "input"}. */
static int tool_use_block(cJSON *arr, const cJSON *call) {
  cJSON *b = cJSON_CreateObject(), *input = NULL;
  const cJSON *fn = cJSON_GetObjectItemCaseSensitive(call, "function");
  const char *id = str_of(call, "id"), *name = str_of(call, "name");
  if (b == NULL || !cJSON_AddItemToArray(arr, b)) {
    cJSON_Delete(b);
    return -1;
  }
  if (cJSON_IsObject(fn)) {
    const char *args = str_of(fn, "arguments");
    const cJSON *argo = cJSON_GetObjectItemCaseSensitive(fn, "arguments");
    if (name == NULL) name = str_of(fn, "name");
    if (args != NULL) input = cJSON_Parse(args);
    else if (cJSON_IsObject(argo)) input = cJSON_Duplicate(argo, 1);
  } else {
    const cJSON *in = cJSON_GetObjectItemCaseSensitive(call, "input");
    if (cJSON_IsObject(in)) input = cJSON_Duplicate(in, 1);
  }
  if (input != NULL && !cJSON_IsObject(input)) {
    cJSON_Delete(input);
    input = NULL;
  }
  if (input == NULL && (input = cJSON_CreateObject()) == NULL) return -1;
  if (add_str(b, "type", "tool_use") || add_str(b, "id", id ? id : "") || add_str(b, "name", name ? name : "")) {
    cJSON_Delete(input);
    return -1;
  }
  if (!cJSON_AddItemToObject(b, "input", input)) {
    cJSON_Delete(input);
    return -1;
  }
  return 0;
}

static cJSON *render_anthropic(const cJSON *messages) {
  cJSON *body = cJSON_CreateObject(), *msgs = NULL, *turn = NULL;
  const cJSON *m;
  char *system = NULL;
  size_t slen = 0;
  const char *turn_role = NULL;
  if (body == NULL) return NULL;
  cJSON_ArrayForEach(m, messages) {
    const char *role = str_of(m, "role");
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
    const char *want;
    if (role != NULL && strcmp(role, "system") == 0) {
      /* every system message goes to the top-level "system" text */
      char *text = cJSON_IsString(content) ? NULL : (content && !cJSON_IsNull(content) ? engram_json_print_text(content) : NULL);
      const char *t = cJSON_IsString(content) ? content->valuestring : text ? text : "";
      size_t tl = strlen(t);
      char *ns = engram_realloc(system, slen + tl + 3);
      if (ns == NULL) {
        engram_free(text);
        goto fail;
      }
      system = ns;
      if (slen) {
        memcpy(system + slen, "\n\n", 2);
        slen += 2;
      }
      memcpy(system + slen, t, tl);
      slen += tl;
      system[slen] = '\0';
      engram_free(text);
      continue;
    }
    want = role != NULL && strcmp(role, "assistant") == 0 ? "assistant" : "user";
    if (msgs == NULL && (msgs = cJSON_CreateArray()) == NULL) goto fail;
    if (turn == NULL || strcmp(turn_role, want) != 0) {
      cJSON *t = cJSON_CreateObject(), *c;
      if (t == NULL || !cJSON_AddItemToArray(msgs, t)) {
        cJSON_Delete(t);
        goto fail;
      }
      if (add_str(t, "role", want) != 0 || (c = cJSON_AddArrayToObject(t, "content")) == NULL) goto fail;
      turn = c;
      turn_role = want;
    }
    if (role != NULL && strcmp(role, "tool") == 0) {
      cJSON *b = cJSON_CreateObject();
      const char *tcid = str_of(m, "tool_call_id");
      if (b == NULL || !cJSON_AddItemToArray(turn, b)) {
        cJSON_Delete(b);
        goto fail;
      }
      if (add_str(b, "type", "tool_result") || add_str(b, "tool_use_id", tcid ? tcid : "")) goto fail;
      if (content != NULL && !cJSON_IsNull(content) && add_dup(b, "content", content) != 0) goto fail;
      continue;
    }
    if (content_blocks(turn, content) != 0) goto fail;
    if (strcmp(want, "assistant") == 0) {
      const cJSON *calls = cJSON_GetObjectItemCaseSensitive(m, "tool_calls"), *call;
      cJSON_ArrayForEach(call, calls) if (tool_use_block(turn, call) != 0) goto fail;
    }
  }
  if (system != NULL && add_str(body, "system", system) != 0) goto fail;
  if (msgs == NULL && (msgs = cJSON_CreateArray()) == NULL) goto fail;
  if (!cJSON_AddItemToObject(body, "messages", msgs)) goto fail;
  engram_free(system);
  return body;
fail:
  if (msgs != NULL && cJSON_GetObjectItemCaseSensitive(body, "messages") != msgs) cJSON_Delete(msgs);
  cJSON_Delete(body);
  engram_free(system);
  return NULL;
}

cJSON *engram_thread_render(const cJSON *messages, engram_render_format_t format) {
  if (!cJSON_IsArray(messages)) return NULL;
  if (format == ENGRAM_RENDER_OPENAI) return render_openai(messages);
  if (format == ENGRAM_RENDER_ANTHROPIC) return render_anthropic(messages);
  return NULL;
}
