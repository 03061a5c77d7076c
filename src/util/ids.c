/* Token-id list parsing; see ids.h. */
#include "util/ids.h"

#include <errno.h>
#include <stdlib.h>

static int is_sep(char c) { return c == ',' || c == ' ' || c == '\n' || c == '\t' || c == '\r'; }

int ds4_parse_ids(const char *s, int32_t **out, size_t *n, ds4_err *err) {
    size_t cap = 256, k = 0;
    int32_t *v = malloc(sizeof *v * cap);
    if (!v) return ds4_err_set(err, "out of memory");
    for (;;) {
        while (is_sep(*s)) s++;
        if (!*s) break;
        char *end;
        errno = 0;
        long x = strtol(s, &end, 10);
        if (end == s || errno || x < 0 || x > INT32_MAX || (*end && !is_sep(*end))) {
            free(v);
            int len = 0; /* the offending item, not the rest of the list */
            while (len < 20 && s[len] && !is_sep(s[len])) len++;
            return ds4_err_set(err, "bad token id '%.*s'", len, s);
        }
        if (k == cap) {
            int32_t *nv = realloc(v, sizeof *v * (cap *= 2));
            if (!nv) { free(v); return ds4_err_set(err, "out of memory"); }
            v = nv;
        }
        v[k++] = (int32_t)x;
        s = end;
    }
    *out = v;
    *n = k;
    return 0;
}
