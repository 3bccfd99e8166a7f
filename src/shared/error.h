/* error.h — the core's helpers for the per-thread last-error message (see error.c). */
#ifndef ENGRAM_ERROR_H
#define ENGRAM_ERROR_H

/* Records a printf-style message as the calling thread's last error and returns status. */
int engram__error(int status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
void engram__error_clear(void);

#endif
