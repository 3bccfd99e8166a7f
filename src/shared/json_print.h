/*
 * json_print.h — the JSON printer's internal entry points (json_print.c) for the core's other writers of JSON text
 * (the export's lines, src/export/jsonl_write.c): a number, and a value or string appended to a growing buffer. The whole printer is public: engram_json_print and
 * engram_json_print_text in include/engram.h.
 */
#ifndef ENGRAM_JSON_PRINT_H
#define ENGRAM_JSON_PRINT_H

#include <stddef.h>

#define ENGRAM__JSON_NUMBER_MAX 32 /* "%1.17g" of any double, and its NUL */

/* Writes d as engram_json_print writes a number (digits for an integer below 10^15, -0 as "-0", else 15 significant
 * digits when they read back as exactly d, else 17; NaN and infinities as null) into out, NUL-terminated; returns
 * its length. Any thread. */
size_t engram__json_number(char out[ENGRAM__JSON_NUMBER_MAX], double d);

/* Append v's text (engram_json_print's form), or the JSON string of s, at *len of *buf (grown with engram_realloc;
 * no NUL written) and advance *len. 0, ENGRAM_ENOMEM or ENGRAM_EINVAL (a node without its text); on an error *len
 * covers what was written. Any thread. */
int engram__json_append(char **buf, size_t *cap, size_t *len, const cJSON *v);
int engram__json_append_string(char **buf, size_t *cap, size_t *len, const char *s);

#endif
