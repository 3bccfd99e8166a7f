/*
 * json_print.h — the number half of the JSON printer (json_print.c), for the core's other writers of JSON text (the
 * export's lines, src/export/jsonl_write.c). The whole printer is public: engram_json_print and
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

#endif
