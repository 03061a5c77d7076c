/* Command-line flags for expert streaming, shared by every program that
 * loads a model, so the flags and their checks read the same everywhere.
 * Contract in experts.h. */
#include <stdlib.h>
#include <string.h>

#include "experts/experts.h"
#include "util/num.h"

int ds4_experts_parse_arg(ds4_experts_opts *o, int argc, char **argv, int *i, ds4_err *err) {
    const char *a = argv[*i];
    bool has = *i + 1 < argc;
    const char *v = has ? argv[*i + 1] : NULL;
    uint64_t x;
    if (!strcmp(a, "--expert-no-direct")) { o->no_direct = true; return 1; }
    if (!strcmp(a, "--expert-no-uring")) { o->no_uring = true; return 1; }
    if (!strcmp(a, "--expert-no-prefetch")) { o->no_prefetch = true; return 1; }
    if (strcmp(a, "--expert-cache-mb") && strcmp(a, "--ram-budget-mb") && strcmp(a, "--hot-experts") &&
        strcmp(a, "--hot-pct"))
        return 0;
    if (!has) return ds4_err_set(err, "%s needs a value", a);
    (*i)++;
    if (!strcmp(a, "--hot-experts")) { o->hot_path = v; return 1; }
    if (!strcmp(a, "--hot-pct")) {
        if (ds4_parse_uint(a, v, 1, 100, &x, err)) return -1;
        o->hot_pct = (int)x;
        return 1;
    }
    if (ds4_parse_uint(a, v, 1, (uint64_t)1 << 40, &x, err)) return -1;
    if (!strcmp(a, "--expert-cache-mb")) o->cache_mb = x; else o->ram_budget_mb = x;
    return 1;
}

void ds4_experts_usage(FILE *f) {
    fprintf(f,
            "Expert streaming (models larger than RAM; routed experts read from the file on demand):\n"
            "  --expert-cache-mb N     keep at most N MiB of routed experts in RAM\n"
            "  --ram-budget-mb N       size the expert cache so the whole process fits in N MiB\n"
            "  --hot-experts FILE      pre-load and pin the experts a ds4-hotexperts table lists\n"
            "  --hot-pct P             pin at most P%% of the cache (default 50)\n"
            "  --expert-no-direct      buffered reads (default: O_DIRECT where the filesystem allows)\n"
            "  --expert-no-uring       pread instead of io_uring\n"
            "  --expert-no-prefetch    no read-ahead of the next layer's experts\n");
}
