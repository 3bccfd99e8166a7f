/*
 * json_copy.h — a checked copy of a cJSON tree into one caller-given block (json_copy.c): the nodes and their
 * strings packed in the block, so the copy costs no allocation and goes with the block, never with cJSON_Delete.
 */
#ifndef ENGRAM_SHARED_JSON_COPY_H
#define ENGRAM_SHARED_JSON_COPY_H

#include <stddef.h>

#include <cJSON.h>

/* Copies v (deep, as cJSON_Duplicate(v, 1): references followed, member names copied) into buf[0, cap), checking
 * on the way the string rules engram__json_tree_check enforces (json_text.h): every string value and every member
 * name of an object valid UTF-8. buf is aligned for a cJSON node. Returns the copy's root and sets *used to the
 * bytes it took; returns NULL when the copy does not fit, or when v holds something this copy does not vouch for
 * — a string that breaks the rules, a string node without text, a cJSON_Raw node — and the caller then checks v
 * with engram__json_tree_check (which names the problem) and copies it the usual way. Nothing of buf is in use
 * after a NULL. The copy must never reach cJSON_Delete, nor any of its nodes: it lives as long as buf. Any
 * thread; v is only read. */
cJSON *engram__json_copy_block(const cJSON *v, void *buf, size_t cap, size_t *used);

#endif
