/*
 * cache_image.h — the cache source's compact binary image of a cJSON tree (cache_image.c).
 */
#ifndef ENGRAM_CACHE_IMAGE_H
#define ENGRAM_CACHE_IMAGE_H

#include <stddef.h>

#include <cjson/cJSON.h>

#include "engram/source.h"

/* Bytes of v's image, or 0 for a node that is not JSON (cJSON_Invalid). */
size_t engram__cache_image_size(const cJSON *v);
/* Writes v's image (engram__cache_image_size(v) bytes, known to be non-zero) at p; returns the end. */
unsigned char *engram__cache_image_write(const cJSON *v, unsigned char *p);
/* Rebuilds the tree of the image at image (allocated through cJSON's hooks); NULL when out of memory. */
cJSON *engram__cache_image_read(const char *image);
/* The same tree in one block (nodes, then strings) for req's reply: in req's reply room when it has room
 * (engram_reply_room; req may be NULL), else in one allocation. The root is flagged cJSON_IsReference when the block
 * is in the room or the tree has more than one node or a string, so that cJSON_Delete of the root frees an
 * allocated block whole and touches nothing inside it. Read it, print it, duplicate it; never unlink or add a node
 * (a reply is borrowed anyway, and engram_reply_take_value gives a taker a copy of its own). Hand it to req with
 * engram_reply_add (ENGRAM_REPLY_OWN_VALUE / _METADATA), or free it with cJSON_Delete unless *roomed (when not
 * NULL) says it is in the room. NULL when out of memory. */
cJSON *engram__cache_image_read_block(const char *image, engram_request_t *req, int *roomed);

#endif
