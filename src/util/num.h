/* Numeric option values as users type them (`--ctx 4096`, `--temp 0.7`):
 * the whole string must be the number, in range, or the call fails with a
 * message naming the option, what it accepts and what was given:
 *   "--ctx expects an integer in [16, 16777216], got 'abc'"
 * Every program's flag parser goes through these, so a typo never turns
 * into 0 (atoi) or a value silently cut to fit. */
#ifndef DS4_UTIL_NUM_H
#define DS4_UTIL_NUM_H

#include <stdint.h>

#include "util/err.h"

/* A base-10 integer in [lo, hi]. */
int ds4_parse_int(const char *opt, const char *v, long long lo, long long hi, long long *out, ds4_err *err);

/* A base-10 unsigned integer in [lo, hi] (seeds: the whole 64-bit range). */
int ds4_parse_uint(const char *opt, const char *v, uint64_t lo, uint64_t hi, uint64_t *out, ds4_err *err);

/* A finite number in [lo, hi], or in (lo, hi] when lo_open (a ratio that
 * must exceed 1, a bandwidth that must exceed 0). */
int ds4_parse_real(const char *opt, const char *v, double lo, double hi, int lo_open, double *out, ds4_err *err);

#endif
