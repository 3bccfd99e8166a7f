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
 *
 * A reply's tree is rebuilt in one allocation (engram__cache_image_read_block): every node, then every string,
 * in one block that cJSON_Delete of the root frees whole, the root flagged cJSON_IsReference so that cJSON_Delete
 * leaves its children and strings alone. A reply is borrowed for the callback (engram.h, Ownership), and
 * engram_reply_take_value hands a taker a tree of its own (request.c), so no one unlinks a node of the block.
 * For the cache's reads this was a malloc and a free per node and per string: a 200-byte string value took two
 * of each, the three-member object of bench_tiered six, a sixth of a cache retrieve's instructions. When the reply's
 * request has room for the block (engram_reply_room, source.h: a few hundred bytes inside the request itself),
 * the block is built there and costs no allocation at all — the one malloc and free left were ~360 instructions of
 * a ~2,170-instruction retrieve in bench_cache.
 */
#include <limits.h>
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

/* Appends item to v's children in O(1): cJSON keeps the last child in child->prev; *last is the one before. */
static void im_append(cJSON *v, cJSON **last, cJSON *item) {
  if (*last == NULL) {
    v->child = item;
  } else {
    (*last)->next = item;
    item->prev = *last;
  }
  v->child->prev = item;
  *last = item;
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
        im_append(v, &last, item);
      }
      return v;
  }
}

cJSON *engram__cache_image_read(const char *image) {
  const unsigned char *p = (const unsigned char *)image;
  return im_read(&p);
}

/* ---- One block ---- */

/* Reads the length of a string whose tag is at *p (advancing *p past tag and length). */
static uint32_t im_str_len(const unsigned char **p) {
  int tag = *(*p)++;
  uint32_t len;
  if (tag == IM_STR32 || tag == IM_RAW32) {
    memcpy(&len, *p, 4);
    *p += 4;
  } else {
    len = *(*p)++;
  }
  return len;
}

/* Counts the nodes and the string bytes (terminators included) of the tree the image at *p rebuilds into,
 * advancing *p past it. */
static void im_measure(const unsigned char **p, size_t *nodes, size_t *bytes) {
  int tag = **p;
  uint32_t count, i, len;
  (*nodes)++;
  switch (tag) {
    case IM_NULL:
    case IM_FALSE:
    case IM_TRUE: (*p)++; return;
    case IM_NUMBER: *p += 9; return;
    case IM_STR8:
    case IM_STR32:
    case IM_RAW8:
    case IM_RAW32:
      len = im_str_len(p);
      *bytes += (size_t)len + 1;
      *p += len;
      return;
    default: /* IM_ARRAY, IM_OBJECT */
      (*p)++;
      memcpy(&count, *p, 4);
      *p += 4;
      for (i = 0; i < count; i++) {
        if (tag == IM_OBJECT) {
          len = im_str_len(p);
          *bytes += (size_t)len + 1;
          *p += len;
        }
        im_measure(p, nodes, bytes);
      }
      return;
  }
}

typedef struct {
  cJSON *node; /* the next free node */
  char *str;   /* the next free string byte */
} im_block_t;

static char *im_block_str(const unsigned char **p, im_block_t *b) {
  uint32_t len = im_str_len(p);
  char *s = b->str;
  memcpy(s, *p, len);
  s[len] = '\0';
  *p += len;
  b->str += len + 1;
  return s;
}

/* Rebuilds the tree of the image at *p in the block's nodes and strings (pre-order: the root first). */
static cJSON *im_build(const unsigned char **p, im_block_t *b) {
  cJSON *v = b->node++, *last = NULL, *item;
  int tag = **p;
  uint32_t count, i;
  double d;
  memset(v, 0, sizeof *v);
  switch (tag) {
    case IM_NULL: (*p)++; v->type = cJSON_NULL; return v;
    case IM_FALSE: (*p)++; v->type = cJSON_False; return v;
    case IM_TRUE: (*p)++; v->type = cJSON_True; return v;
    case IM_NUMBER:
      memcpy(&d, *p + 1, 8);
      *p += 9;
      v->type = cJSON_Number;
      v->valuedouble = d; /* valueint as cJSON_CreateNumber sets it (saturated), 0 for a NaN */
      v->valueint = d != d ? 0 : d >= INT_MAX ? INT_MAX : d <= (double)INT_MIN ? INT_MIN : (int)d;
      return v;
    case IM_STR8:
    case IM_STR32:
    case IM_RAW8:
    case IM_RAW32:
      v->type = tag <= IM_STR32 ? cJSON_String : cJSON_Raw;
      v->valuestring = im_block_str(p, b);
      return v;
    default: /* IM_ARRAY, IM_OBJECT */
      (*p)++;
      v->type = tag == IM_OBJECT ? cJSON_Object : cJSON_Array;
      memcpy(&count, *p, 4);
      *p += 4;
      for (i = 0; i < count; i++) {
        char *name = tag == IM_OBJECT ? im_block_str(p, b) : NULL;
        item = im_build(p, b);
        item->string = name;
        im_append(v, &last, item);
      }
      return v;
  }
}

cJSON *engram__cache_image_read_block(const char *image, engram_request_t *req, int *roomed) {
  const unsigned char *p = (const unsigned char *)image;
  size_t nodes = 0, bytes = 0;
  im_block_t b;
  cJSON *root;
  char *block = NULL;
  int in_room;
  if (*p >= IM_STR8 && *p <= IM_RAW32) { /* a lone string (the usual value): one node and its bytes, measured
                                            from its length alone, without the walk */
    const unsigned char *q = p;
    nodes = 1;
    bytes = (size_t)im_str_len(&q) + 1;
  } else {
    im_measure(&p, &nodes, &bytes);
  }
  in_room = req != NULL && (block = engram_reply_room(req, nodes * sizeof(cJSON) + bytes)) != NULL;
  if (roomed != NULL) *roomed = in_room;
  if (!in_room && (block = cJSON_malloc(nodes * sizeof(cJSON) + bytes)) == NULL) return NULL;
  b.node = (cJSON *)(void *)block;
  b.str = block + nodes * sizeof(cJSON);
  p = (const unsigned char *)image;
  root = im_build(&p, &b);
  /* One allocated node alone is an ordinary node; more are freed with it only (cJSON_Delete skips a reference's
   * child and valuestring). A tree in the room is never freed on its own: a taker must copy even one node. */
  if (in_room || nodes > 1 || bytes > 0) root->type |= cJSON_IsReference;
  return root;
}
