/* Token-id lists as users write them: integers separated by commas and/or
 * white space ("1,5,9" or one per line).  Used by `ds4 --tokens`,
 * `--tokens-file` and ds4-bench. */
#ifndef DS4_UTIL_IDS_H
#define DS4_UTIL_IDS_H

#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

/* Parses s into a malloc'd array (*out, *n entries; an empty list gives
 * *n = 0).  A non-integer, negative or > INT32_MAX entry is refused with a
 * message quoting where it is. */
int ds4_parse_ids(const char *s, int32_t **out, size_t *n, ds4_err *err);

#endif
