/*
 * cache_image.h — the cache source's compact binary image of a cJSON tree (cache_image.c).
 */
#ifndef ENGRAM_CACHE_IMAGE_H
#define ENGRAM_CACHE_IMAGE_H

#include <stddef.h>

#include <cjson/cJSON.h>

/* Bytes of v's image, or 0 for a node that is not JSON (cJSON_Invalid). */
size_t engram__cache_image_size(const cJSON *v);
/* Writes v's image (engram__cache_image_size(v) bytes, known to be non-zero) at p; returns the end. */
unsigned char *engram__cache_image_write(const cJSON *v, unsigned char *p);
/* Rebuilds the tree of the image at image (allocated through cJSON's hooks); NULL when out of memory. */
cJSON *engram__cache_image_read(const char *image);
/* The same tree in one allocation (nodes, then strings) for a reply: the root is flagged cJSON_IsReference when
 * the tree has more than one node or a string, so that cJSON_Delete of the root frees the block whole and touches
 * nothing inside it. Read it, print it, duplicate it; never unlink or add a node (a reply is borrowed anyway, and
 * engram_reply_take_value gives a taker a copy of its own). NULL when out of memory. */
cJSON *engram__cache_image_read_block(const char *image);

#endif
