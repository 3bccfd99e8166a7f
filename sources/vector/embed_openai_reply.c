/*
 * embed_openai_reply.c — the wire format of OpenAI-compatible /v1/embeddings services (embed_openai_reply.h):
 * builds the request body, reads a success body into a matrix whose rows follow the inputs' order (each item of
 * "data" names its input by "index"; services may answer out of order), and reads the error bodies of OpenAI,
 * vLLM, Ollama, llama.cpp and TEI into one message, type and code. Every check of a success body is strict —
 * a partial batch, a duplicate or out-of-range index, rows of different lengths — because a vector stored
 * under the wrong key is worse than a failed call.
 */
#include <stdio.h>
#include <string.h>

#include "embed_openai_reply.h"
#include "engram/source.h"
#include "engram/vector.h"

char *engram__oai_request_body(const char *model, const char *const *texts, size_t n, size_t dimensions) {
  cJSON *root = cJSON_CreateObject(), *input;
  char *out = NULL;
  size_t i;
  if (root == NULL || !cJSON_AddStringToObject(root, "model", model) ||
      (input = cJSON_AddArrayToObject(root, "input")) == NULL)
    goto done;
  for (i = 0; i < n; i++) {
    cJSON *s = cJSON_CreateString(texts[i]);
    if (s == NULL || !cJSON_AddItemToArray(input, s)) {
      cJSON_Delete(s);
      goto done;
    }
  }
  if (!cJSON_AddStringToObject(root, "encoding_format", "float")) goto done;
  if (dimensions != 0 && !cJSON_AddNumberToObject(root, "dimensions", (double)dimensions)) goto done;
  out = cJSON_PrintUnformatted(root);
done:
  cJSON_Delete(root);
  return out;
}

int engram__oai_parse_embeddings(const char *body, size_t len, size_t n, float **vecs, size_t *dim, char *msg,
                                 size_t msglen) {
  cJSON *root = cJSON_ParseWithLength(body, len);
  const cJSON *data, *item;
  float *out = NULL;
  unsigned char *seen = NULL;
  size_t d = 0, pos = 0, count;
  int rc = ENGRAM_EEMBED;
  *vecs = NULL;
  *dim = 0;
  if (root == NULL) {
    snprintf(msg, msglen, "the response is not valid JSON");
    return ENGRAM_EEMBED;
  }
  data = cJSON_GetObjectItemCaseSensitive(root, "data");
  if (!cJSON_IsArray(data)) {
    snprintf(msg, msglen, "the response has no \"data\" array");
    goto done;
  }
  count = (size_t)cJSON_GetArraySize(data);
  if (count != n) {
    snprintf(msg, msglen, "the service answered %zu embeddings for %zu inputs", count, n);
    goto done;
  }
  if ((seen = engram_calloc(n ? n : 1, 1)) == NULL) {
    rc = ENGRAM_ENOMEM;
    snprintf(msg, msglen, "out of memory");
    goto done;
  }
  cJSON_ArrayForEach(item, data) {
    const cJSON *idx = cJSON_GetObjectItemCaseSensitive(item, "index");
    const cJSON *emb = cJSON_GetObjectItemCaseSensitive(item, "embedding"), *x;
    size_t row = pos, k = 0, m;
    if (idx != NULL) {
      if (!cJSON_IsNumber(idx) || idx->valuedouble < 0 || idx->valuedouble >= (double)n ||
          idx->valuedouble != (double)(size_t)idx->valuedouble) {
        snprintf(msg, msglen, "data[%zu].index is not an input's index (0..%zu)", pos, n - 1);
        goto done;
      }
      row = (size_t)idx->valuedouble;
    }
    if (seen[row]) {
      snprintf(msg, msglen, "data[%zu] repeats index %zu", pos, row);
      goto done;
    }
    seen[row] = 1;
    if (!cJSON_IsArray(emb)) {
      snprintf(msg, msglen, "data[%zu].embedding is not an array of numbers%s", pos,
               cJSON_IsString(emb) ? " (base64 answers are not read: the request asks for \"float\")" : "");
      goto done;
    }
    m = (size_t)cJSON_GetArraySize(emb);
    if (pos == 0) {
      if (m == 0 || m > ENGRAM_EMBED_DIMENSION_MAX) {
        snprintf(msg, msglen, "data[0].embedding has %zu values (1..%d expected)", m, ENGRAM_EMBED_DIMENSION_MAX);
        goto done;
      }
      d = m;
      if ((out = engram_malloc(n * d * sizeof *out)) == NULL) {
        rc = ENGRAM_ENOMEM;
        snprintf(msg, msglen, "out of memory");
        goto done;
      }
    } else if (m != d) {
      snprintf(msg, msglen, "embeddings of different lengths in one response (%zu and %zu)", d, m);
      goto done;
    }
    cJSON_ArrayForEach(x, emb) {
      if (!cJSON_IsNumber(x)) {
        snprintf(msg, msglen, "data[%zu].embedding[%zu] is not a number", pos, k);
        goto done;
      }
      out[row * d + k++] = (float)x->valuedouble;
    }
    pos++;
  }
  *vecs = out;
  *dim = d;
  out = NULL;
  rc = 0;
done:
  engram_free(out);
  engram_free(seen);
  cJSON_Delete(root);
  return rc;
}

/* Copies a string member of obj into dst (a number too, as text); nothing when absent. */
static void copy_field(const cJSON *obj, const char *name, char *dst, size_t cap) {
  const cJSON *f = cJSON_GetObjectItemCaseSensitive(obj, name);
  if (cJSON_IsString(f) && f->valuestring != NULL) snprintf(dst, cap, "%s", f->valuestring);
  else if (cJSON_IsNumber(f)) snprintf(dst, cap, "%.0f", f->valuedouble);
}

/* The first line of a body that is not JSON, printable ASCII only. */
static void plain_message(const char *body, size_t len, char *dst, size_t cap) {
  size_t i, o = 0;
  for (i = 0; i < len && body[i] != '\n' && o + 1 < cap; i++) {
    unsigned char c = (unsigned char)body[i];
    if (c == '\r') continue;
    dst[o++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
  }
  dst[o] = '\0';
}

void engram__oai_parse_error(const char *body, size_t len, engram__oai_error_t *e) {
  cJSON *root;
  const cJSON *err;
  memset(e, 0, sizeof *e);
  if (body == NULL || len == 0) return;
  root = cJSON_ParseWithLength(body, len);
  if (!cJSON_IsObject(root)) {
    cJSON_Delete(root);
    plain_message(body, len, e->message, sizeof e->message);
    return;
  }
  err = cJSON_GetObjectItemCaseSensitive(root, "error");
  if (cJSON_IsObject(err)) { /* OpenAI, vLLM, llama.cpp */
    copy_field(err, "message", e->message, sizeof e->message);
    copy_field(err, "type", e->type, sizeof e->type);
    copy_field(err, "code", e->code, sizeof e->code);
  } else if (cJSON_IsString(err)) { /* Ollama, TEI */
    copy_field(root, "error", e->message, sizeof e->message);
    copy_field(root, "error_type", e->type, sizeof e->type);
    copy_field(root, "type", e->type, sizeof e->type);
  } else { /* vLLM's older {"object": "error", "message", "type", "code"}, or anything with a message */
    copy_field(root, "message", e->message, sizeof e->message);
    copy_field(root, "detail", e->message, sizeof e->message);
    copy_field(root, "type", e->type, sizeof e->type);
    copy_field(root, "code", e->code, sizeof e->code);
  }
  if (e->message[0] == '\0') plain_message(body, len, e->message, sizeof e->message);
  cJSON_Delete(root);
}
