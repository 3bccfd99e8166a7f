/*
 * text_cut.c — appends caller-supplied text to a message on UTF-8 character boundaries (text_cut.h). A quoted
 * key or option name that is too long is cut before the character that would not fit, never inside it, and a
 * byte that does not start a valid character becomes '?', so a message is always valid UTF-8.
 */
#include <string.h>

#include "engram/source.h"
#include "text_cut.h"

/* Length of the valid UTF-8 character at s (n bytes available), or 0 when it is not one. */
static size_t char_len(const unsigned char *s, size_t n) {
  size_t len, i;
  if (s[0] < 0x80) return s[0] != 0;
  if (s[0] >= 0xC2 && s[0] <= 0xDF) len = 2;
  else if (s[0] >= 0xE0 && s[0] <= 0xEF) len = 3;
  else if (s[0] >= 0xF0 && s[0] <= 0xF4) len = 4;
  else return 0;
  if (len > n) return 0;
  for (i = 1; i < len; i++)
    if ((s[i] & 0xC0) != 0x80) return 0;
  return engram_utf8_valid((const char *)s, len) ? len : 0;
}

size_t engram__text_append_cut(char *buf, size_t bufsize, size_t pos, const char *s, size_t max) {
  const unsigned char *p = (const unsigned char *)s;
  size_t n = strlen(s), used = 0;
  if (bufsize == 0) return 0;
  if (pos >= bufsize) pos = bufsize - 1;
  while (used < n) {
    size_t cl = char_len(p + used, n - used);
    size_t w = cl ? cl : 1;
    if (used + w > max || pos + w >= bufsize) break;
    if (cl) memcpy(buf + pos, p + used, cl);
    else buf[pos] = '?';
    pos += w;
    used += w;
  }
  buf[pos] = '\0';
  return pos;
}
