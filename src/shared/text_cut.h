/*
 * text_cut.h — appending caller-supplied text to a message without ever cutting a UTF-8 character in half
 * (see text_cut.c): messages may quote keys, option names and patterns, and must stay valid UTF-8.
 */
#ifndef ENGRAM_TEXT_CUT_H
#define ENGRAM_TEXT_CUT_H

#include <stddef.h>

/* Appends at most max bytes of s to buf (size bufsize, holding a string of length pos), ending on a character
 * boundary and within the buffer; bytes of s that are not valid UTF-8 are written as '?'. Returns the new
 * length. */
size_t engram__text_append_cut(char *buf, size_t bufsize, size_t pos, const char *s, size_t max);

#endif
