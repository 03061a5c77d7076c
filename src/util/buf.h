/* Growable byte buffer (util/buf).
 *
 * A tiny owned, NUL-terminated dynamic byte string used wherever text is
 * assembled piecewise (prompt rendering, DSML parsing, JSON output).  The
 * buffer may contain NUL bytes; `len` is authoritative, `data[len]` is always
 * 0 once anything was appended, so `data` can be passed as a C string when
 * the content has no embedded NUL.
 *
 * Ownership: a ds4_buf is a value type.  Zero-initialise it
 * (`ds4_buf b = {0};`), append, then either ds4_buf_free() it or take the
 * allocation with ds4_buf_take() (caller frees with free()).
 * Errors: append functions return 0, or -1 when memory runs out (the buffer
 * is left unchanged and still valid).  Not thread-safe: one owner at a time. */
#ifndef DS4_UTIL_BUF_H
#define DS4_UTIL_BUF_H

#include <stddef.h>

typedef struct ds4_buf {
    char  *data;  /* bytes, NUL-terminated; NULL until the first append */
    size_t len;   /* bytes used, excluding the terminator */
    size_t cap;   /* bytes allocated */
} ds4_buf;

/* Ensures room for `extra` more bytes plus the terminator. */
int  ds4_buf_reserve(ds4_buf *b, size_t extra);
int  ds4_buf_append(ds4_buf *b, const void *p, size_t n);
int  ds4_buf_puts(ds4_buf *b, const char *s);
int  ds4_buf_putc(ds4_buf *b, char c);
int  ds4_buf_printf(ds4_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Removes the first n bytes (n > len clears it). */
void ds4_buf_consume(ds4_buf *b, size_t n);
/* Sets len to n (n <= len); keeps the allocation. */
void ds4_buf_truncate(ds4_buf *b, size_t n);
/* Returns the owned NUL-terminated data ("" allocated if empty; NULL on OOM)
 * and resets b to empty.  Free the result with free(). */
char *ds4_buf_take(ds4_buf *b, size_t *len_out);
void ds4_buf_free(ds4_buf *b);

#endif
