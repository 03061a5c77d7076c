/* Growable byte buffer; see buf.h. */
#include "util/buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int ds4_buf_reserve(ds4_buf *b, size_t extra) {
    if (extra > (size_t)-1 - b->len - 1) return -1;
    size_t need = b->len + extra + 1;
    if (need <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) cap = cap > (size_t)-1 / 2 ? need : cap * 2;
    char *p = realloc(b->data, cap);
    if (!p) return -1;
    b->data = p;
    b->cap = cap;
    return 0;
}

int ds4_buf_append(ds4_buf *b, const void *p, size_t n) {
    if (ds4_buf_reserve(b, n) < 0) return -1;
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0;
    return 0;
}

int ds4_buf_puts(ds4_buf *b, const char *s) { return ds4_buf_append(b, s, strlen(s)); }

int ds4_buf_putc(ds4_buf *b, char c) { return ds4_buf_append(b, &c, 1); }

int ds4_buf_printf(ds4_buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || ds4_buf_reserve(b, (size_t)n) < 0) return -1;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

void ds4_buf_consume(ds4_buf *b, size_t n) {
    if (n >= b->len) { ds4_buf_truncate(b, 0); return; }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
    b->data[b->len] = 0;
}

void ds4_buf_truncate(ds4_buf *b, size_t n) {
    if (n > b->len) return;
    b->len = n;
    if (b->data) b->data[n] = 0;
}

char *ds4_buf_take(ds4_buf *b, size_t *len_out) {
    if (!b->data && ds4_buf_reserve(b, 0) < 0) return NULL;
    b->data[b->len] = 0;
    char *p = b->data;
    if (len_out) *len_out = b->len;
    b->data = NULL;
    b->len = b->cap = 0;
    return p;
}

void ds4_buf_free(ds4_buf *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}
