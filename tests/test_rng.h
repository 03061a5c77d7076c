/* Deterministic test data shared by the kernel tests: a seeded xorshift64
 * generator, uniform doubles in (0, 1) and Box–Muller Gaussians.  One state
 * per test program (static); seed it with rng_seed() before use. */
#ifndef DS4_TEST_RNG_H
#define DS4_TEST_RNG_H

#include <math.h>
#include <stdint.h>

static uint64_t rng_state = 1;
static inline void rng_seed(uint64_t s) { rng_state = s * 0x9e3779b97f4a7c15ull + 1; }
static inline uint64_t rng_next(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}
static inline double rng_unit(void) { return ((double)(rng_next() >> 11) + 0.5) / 9007199254740992.0; }
static inline float rng_gauss(void) {
    double u1 = rng_unit(), u2 = rng_unit();
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

#endif
