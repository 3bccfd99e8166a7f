/*
 * cache_image.c — the cache source's compact binary image of a cJSON tree, in which it keeps values and
 * metadata (cache.c). A type byte, then lengths and bytes: strings are copied as they are, never escaped
 * or scanned, so writing an image and rebuilding a tree from it cost a fraction of printing and parsing JSON text,
 * for about the same size. The layout:
 *   null, false, true   one type byte
 *   number              the byte, then the 8-byte double
 *   string, raw         the byte, a 1-byte (< 256) or 4-byte length, then the bytes (no NUL)
 *   array, object       the byte, a 4-byte count, then the items; each object member preceded by its name as a
 *                       string
 * Images are written and read by this process only, in the byte order of the machine.
 */
#include <string.h>

#include "cache_image.h"
#include "engram/source.h"

enum { IM_NULL, IM_FALSE, IM_TRUE, IM_NUMBER, IM_STR8, IM_STR32, IM_RAW8, IM_RAW32, IM_ARRAY, IM_OBJECT };

static size_t im_str_size(size_t len) { return len < 256 ? 2 + len : 5 + len; }

size_t engram__cache_image_size(const cJSON *v) {
  const cJSON *ch;
  size_t n, k;
  switch (v->type & 0xFF) {
    case cJSON_NULL:
    case cJSON_False:
    case cJSON_True: return 1;
    case cJSON_Number: return 9;
    case cJSON_String:
    case cJSON_Raw: return im_str_size(v->valuestring ? strlen(v->valuestring) : 0);
    case cJSON_Array:
    case cJSON_Object:
      n = 5;
      for (ch = v->child; ch != NULL; ch = ch->next) {
        if ((k = engram__cache_image_size(ch)) == 0) return 0;
        n += k;
        if ((v->type & 0xFF) == cJSON_Object) n += im_str_size(ch->string ? strlen(ch->string) : 0);
      }
      return n;
    default: return 0;
  }
}

static unsigned char *im_put_str(unsigned char *p, int tag8, const char *s) {
  size_t len = s ? strlen(s) : 0;
  if (len < 256) {
    *p++ = (unsigned char)tag8;
    *p++ = (unsigned char)len;
  } else {
    uint32_t l32 = (uint32_t)len;
    *p++ = (unsigned char)(tag8 + 1);
    memcpy(p, &l32, 4);
    p += 4;
  }
  if (len) memcpy(p, s, len);
  return p + len;
}

unsigned char *engram__cache_image_write(const cJSON *v, unsigned char *p) {
  const cJSON *ch;
  uint32_t count = 0;
  switch (v->type & 0xFF) {
    case cJSON_NULL: *p++ = IM_NULL; return p;
    case cJSON_False: *p++ = IM_FALSE; return p;
    case cJSON_True: *p++ = IM_TRUE; return p;
    case cJSON_Number:
      *p++ = IM_NUMBER;
      memcpy(p, &v->valuedouble, 8);
      return p + 8;
    case cJSON_String: return im_put_str(p, IM_STR8, v->valuestring);
    case cJSON_Raw: return im_put_str(p, IM_RAW8, v->valuestring);
    default: /* array or object */
      *p++ = (v->type & 0xFF) == cJSON_Object ? IM_OBJECT : IM_ARRAY;
      for (ch = v->child; ch != NULL; ch = ch->next) count++;
      memcpy(p, &count, 4);
      p += 4;
      for (ch = v->child; ch != NULL; ch = ch->next) {
        if ((v->type & 0xFF) == cJSON_Object) p = im_put_str(p, IM_STR8, ch->string);
        p = engram__cache_image_write(ch, p);
      }
      return p;
  }
}

/* Reads a length-prefixed string at *p (tag already read) into a cJSON-allocated C string. */
static char *im_get_str(const unsigned char **p, int wide) {
  uint32_t len;
  char *s;
  if (wide) {
    memcpy(&len, *p, 4);
    *p += 4;
  } else {
    len = *(*p)++;
  }
  if ((s = cJSON_malloc(len + 1u)) == NULL) return NULL;
  memcpy(s, *p, len);
  s[len] = '\0';
  *p += len;
  return s;
}

/* Rebuilds the cJSON tree of the image at *p (advancing *p); NULL when out of memory. */
static cJSON *im_read(const unsigned char **p) {
  int tag = *(*p)++;
  cJSON *v, *last = NULL;
  double d;
  uint32_t count, i;
  switch (tag) {
    case IM_NULL: return cJSON_CreateNull();
    case IM_FALSE: return cJSON_CreateFalse();
    case IM_TRUE: return cJSON_CreateTrue();
    case IM_NUMBER:
      memcpy(&d, *p, 8);
      *p += 8;
      return cJSON_CreateNumber(d);
    case IM_STR8:
    case IM_STR32:
    case IM_RAW8:
    case IM_RAW32:
      if ((v = cJSON_CreateNull()) == NULL) return NULL;
      if ((v->valuestring = im_get_str(p, tag == IM_STR32 || tag == IM_RAW32)) == NULL) {
        cJSON_Delete(v);
        return NULL;
      }
      v->type = tag <= IM_STR32 ? cJSON_String : cJSON_Raw;
      return v;
    default: /* IM_ARRAY, IM_OBJECT */
      if ((v = tag == IM_OBJECT ? cJSON_CreateObject() : cJSON_CreateArray()) == NULL) return NULL;
      memcpy(&count, *p, 4);
      *p += 4;
      for (i = 0; i < count; i++) {
        char *name = NULL;
        cJSON *item;
        if (tag == IM_OBJECT) {
          int t = *(*p)++;
          if ((name = im_get_str(p, t == IM_STR32)) == NULL) {
            cJSON_Delete(v);
            return NULL;
          }
        }
        if ((item = im_read(p)) == NULL) {
          cJSON_free(name);
          cJSON_Delete(v);
          return NULL;
        }
        item->string = name;
        /* Append in O(1): cJSON keeps the last child in child->prev. */
        if (last == NULL) {
          v->child = item;
        } else {
          last->next = item;
          item->prev = last;
        }
        v->child->prev = item;
        last = item;
      }
      return v;
  }
}

cJSON *engram__cache_image_read(const char *image) {
  const unsigned char *p = (const unsigned char *)image;
  return im_read(&p);
}
