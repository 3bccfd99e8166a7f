/*
 * json_canon.h — the canonical-text checker (json_canon.c) for the core's own callers: the end of one canonical
 * value at the start of a longer text (an import's line), beside the public engram_json_is_canonical.
 */
#ifndef ENGRAM_SHARED_JSON_CANON_H
#define ENGRAM_SHARED_JSON_CANON_H

/* p at a JSON value inside [p, e): the byte after it when the value is canonical (json_canon.c's rules), else
 * NULL. What follows the value is not looked at. Any thread. */
const char *engram__json_canonical_end(const char *p, const char *e);

#endif
