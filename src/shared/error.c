/*
 * error.c — names and descriptions of the ENGRAM_E* codes, generated from the one list ENGRAM_ERRNO_MAP, and
 * the per-thread "last error" message that explains why a public entry point returned an error.
 */
#include <stdarg.h>
#include <stdio.h>

#include "engram.h"
#include "engram/source.h"
#include "shared/error.h"

const char *engram_strerror(int status) {
  switch (status) {
    case 0: return "success";
#define XX(name, code, text) case ENGRAM_##name: return text;
    ENGRAM_ERRNO_MAP(XX)
#undef XX
    default: return "unknown error";
  }
}

const char *engram_err_name(int status) {
  switch (status) {
    case 0: return "ENGRAM_OK";
#define XX(name, code, text) case ENGRAM_##name: return "ENGRAM_" #name;
    ENGRAM_ERRNO_MAP(XX)
#undef XX
    default: return "ENGRAM_UNKNOWN";
  }
}

static _Thread_local char last_error[512];

const char *engram_last_error(void) { return last_error; }

int engram__error(int status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(last_error, sizeof last_error, fmt, ap);
  va_end(ap);
  return status;
}

void engram__error_clear(void) { last_error[0] = '\0'; }

int engram_set_last_error(int status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(last_error, sizeof last_error, fmt, ap);
  va_end(ap);
  return status;
}

void engram_clear_last_error(void) { last_error[0] = '\0'; }
