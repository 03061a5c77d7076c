/* Error reporting: one fixed buffer per call chain.
 *
 * Functions that can fail take a `ds4_err *` (may be NULL) and return -1 or
 * NULL after writing a human-readable message naming what is wrong (file,
 * tensor, key, expected vs found).  Callers add context by prefixing with
 * ds4_err_prefix().  No global state, no allocation: safe on every path,
 * including out-of-memory. */
#ifndef DS4_UTIL_ERR_H
#define DS4_UTIL_ERR_H

#include <stddef.h>

typedef struct ds4_err {
    char msg[1024];
} ds4_err;

/* Formats into e (if non-NULL) and returns -1, so `return ds4_err_set(...)` reads well. */
int ds4_err_set(ds4_err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prepends "prefix: " to the current message. Returns -1. */
int ds4_err_prefix(ds4_err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
