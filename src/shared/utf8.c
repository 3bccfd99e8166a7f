/*
 * utf8.c — strict UTF-8 validation for every string that crosses the public API (keys, namespaces, patterns).
 *
 * The data model says keys and namespaces are UTF-8 with no NUL byte, and every backend relies on that (SQLite
 * and PostgreSQL reject or mangle invalid text, Redis would store it but other sources would not). One strict
 * validator keeps the sources identical: it rejects overlong encodings, UTF-16 surrogates (U+D800..U+DFFF),
 * code points above U+10FFFF, truncated sequences, stray continuation bytes and the NUL byte itself.
 */
#include <stddef.h>

#include "engram/source.h"

int engram_utf8_valid(const char *s, size_t len) {
  const unsigned char *p = (const unsigned char *)s;
  const unsigned char *end = p + len;
  if (s == NULL) return len == 0;
  while (p < end) {
    unsigned c = *p;
    if (c == 0) return 0;
    if (c < 0x80) {
      p++;
      continue;
    }
    if (c >= 0xC2 && c <= 0xDF) {
      /* Two bytes: U+0080..U+07FF (C0 and C1 would be overlong). */
      if (end - p < 2 || (p[1] & 0xC0) != 0x80) return 0;
      p += 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      /* Three bytes: U+0800..U+FFFF minus the surrogates. E0 needs A0..BF next (else overlong), ED needs
       * 80..9F next (else a surrogate). */
      unsigned lo = (c == 0xE0) ? 0xA0 : 0x80, hi = (c == 0xED) ? 0x9F : 0xBF;
      if (end - p < 3 || p[1] < lo || p[1] > hi || (p[2] & 0xC0) != 0x80) return 0;
      p += 3;
    } else if (c >= 0xF0 && c <= 0xF4) {
      /* Four bytes: U+10000..U+10FFFF. F0 needs 90..BF next (else overlong), F4 needs 80..8F (else too big). */
      unsigned lo = (c == 0xF0) ? 0x90 : 0x80, hi = (c == 0xF4) ? 0x8F : 0xBF;
      if (end - p < 4 || p[1] < lo || p[1] > hi || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80) return 0;
      p += 4;
    } else {
      /* A continuation byte out of place, an overlong lead (C0, C1) or a lead beyond U+10FFFF (F5..FF). */
      return 0;
    }
  }
  return 1;
}
