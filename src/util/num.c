/* Numeric option values; see num.h. */
#include "util/num.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>

/* strto* skip leading white space and accept a sign; an option value with
 * either is a typo here ("- 5", " 7"), except a minus sign on a signed type. */
static int bad_start(const char *v, int sign_ok) { return !*v || isspace((unsigned char)*v) || (!sign_ok && *v == '-') || *v == '+'; }

int ds4_parse_int(const char *opt, const char *v, long long lo, long long hi, long long *out, ds4_err *err) {
    char *end = (char *)v; /* a bad start leaves it there: refused below */
    errno = 0;
    long long x = bad_start(v, 1) ? 0 : strtoll(v, &end, 10);
    if (end == v || *end || errno || x < lo || x > hi)
        return ds4_err_set(err, "%s expects an integer in [%lld, %lld], got '%s'", opt, lo, hi, v);
    *out = x;
    return 0;
}

int ds4_parse_uint(const char *opt, const char *v, uint64_t lo, uint64_t hi, uint64_t *out, ds4_err *err) {
    char *end = (char *)v;
    errno = 0;
    unsigned long long x = bad_start(v, 0) ? 0 : strtoull(v, &end, 10);
    if (end == v || *end || errno || x < lo || x > hi)
        return ds4_err_set(err, "%s expects an integer in [%llu, %llu], got '%s'", opt, (unsigned long long)lo,
                           (unsigned long long)hi, v);
    *out = x;
    return 0;
}

int ds4_parse_real(const char *opt, const char *v, double lo, double hi, int lo_open, double *out, ds4_err *err) {
    char *end = (char *)v;
    errno = 0;
    double x = bad_start(v, 1) ? 0 : strtod(v, &end);
    if (end == v || *end || errno || !isfinite(x) || (lo_open ? !(x > lo) : !(x >= lo)) || !(x <= hi))
        return ds4_err_set(err, "%s expects a number in %c%g, %g], got '%s'", opt, lo_open ? '(' : '[', lo, hi, v);
    *out = x;
    return 0;
}
