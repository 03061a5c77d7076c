/* Shared by the micro-benchmarks in bench/: a monotonic clock in seconds
 * and a fixed-seed xorshift64 generator (the same stream in every program,
 * so runs are comparable).  Header-only: each bench is one program. */
#ifndef DS4_BENCH_UTIL_H
#define DS4_BENCH_UTIL_H

#include <stdint.h>
#include <time.h>

static inline double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t rng = 88172645463325252ull;
static inline uint64_t next(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return rng; }

#endif
