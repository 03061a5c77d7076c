/* Internal to the per-ISA kernel files.  DS4_DEFINE_TILE turns one
 * always-inline micro-kernel
 *
 *   K(n, w, ws, x, xs, y, ldy, NR, NC)   NR rows x NC columns, NR/NC constant
 *
 * into the table's vec_dot (the 1x1 instance) and vec_dot_tile (the caller's
 * nr x nc <= 4x4 request cut into TR x TC instances, rows outer so a weight
 * row block is reused from L1 across the columns).  Because both paths run
 * the same instance code per (row, column), their results are identical.
 * DS4_DEFINE_Q8_0_FROM_FLOAT and DS4_DEFINE_Q8K_FROM_FLOAT build the
 * activation encoders around a level's scale and quant steps. */
#ifndef DS4_QUANT_SIMD_TILE_H
#define DS4_QUANT_SIMD_TILE_H

#include <stddef.h>
#include <stdint.h>

#define DS4_UNROLL _Pragma("GCC unroll 4")

#define DS4_TILE_CASE(K, R, C) \
    case (R) * 8 + (C): K(n, wp, ws, xp, xs, yp, ldy, R, C); break;

#define DS4_TILE_CASES_4x4(K) \
    DS4_TILE_CASE(K, 1, 1) DS4_TILE_CASE(K, 1, 2) DS4_TILE_CASE(K, 1, 3) DS4_TILE_CASE(K, 1, 4) \
    DS4_TILE_CASE(K, 2, 1) DS4_TILE_CASE(K, 2, 2) DS4_TILE_CASE(K, 2, 3) DS4_TILE_CASE(K, 2, 4) \
    DS4_TILE_CASE(K, 3, 1) DS4_TILE_CASE(K, 3, 2) DS4_TILE_CASE(K, 3, 3) DS4_TILE_CASE(K, 3, 4) \
    DS4_TILE_CASE(K, 4, 1) DS4_TILE_CASE(K, 4, 2) DS4_TILE_CASE(K, 4, 3) DS4_TILE_CASE(K, 4, 4)
#define DS4_TILE_CASES_4x2(K) \
    DS4_TILE_CASE(K, 1, 1) DS4_TILE_CASE(K, 1, 2) DS4_TILE_CASE(K, 2, 1) DS4_TILE_CASE(K, 2, 2) \
    DS4_TILE_CASE(K, 3, 1) DS4_TILE_CASE(K, 3, 2) DS4_TILE_CASE(K, 4, 1) DS4_TILE_CASE(K, 4, 2)
#define DS4_TILE_CASES_2x2(K) \
    DS4_TILE_CASE(K, 1, 1) DS4_TILE_CASE(K, 1, 2) DS4_TILE_CASE(K, 2, 1) DS4_TILE_CASE(K, 2, 2)

/* Defines NAME_dot (ds4_vec_dot_fn) and NAME_tile (ds4_vec_dot_tile_fn). */
#define DS4_DEFINE_TILE(ATTR, NAME, K, TR, TC)                                                       \
    ATTR static float NAME##_dot(int64_t n, const void *w, const void *x) {                          \
        float y;                                                                                     \
        K(n, (const uint8_t *)w, 0, (const uint8_t *)x, 0, &y, 0, 1, 1);                             \
        return y;                                                                                    \
    }                                                                                                \
    ATTR static void NAME##_tile(int64_t n, const void *w, size_t ws, int nr, const void *x,         \
                                 size_t xs, int nc, float *y, int64_t ldy) {                         \
        for (int r = 0; r < nr; r += TR) {                                                           \
            const int rr = nr - r < TR ? nr - r : TR;                                                \
            for (int c = 0; c < nc; c += TC) {                                                       \
                const int cc = nc - c < TC ? nc - c : TC;                                            \
                const uint8_t *wp = (const uint8_t *)w + (size_t)r * ws;                             \
                const uint8_t *xp = (const uint8_t *)x + (size_t)c * xs;                             \
                float *yp = y + (int64_t)c * ldy + r;                                                \
                switch (rr * 8 + cc) {                                                               \
                    DS4_TILE_CASES_##TR##x##TC(K)                                                    \
                default: break;                                                                      \
                }                                                                                    \
            }                                                                                        \
        }                                                                                            \
    }

/* Defines NAME, a Q8_0 from_float (quant.h) bit-identical to the
 * reference, from two always-inline steps of the level:
 *   SCALES(x, nb, id, dh)  the scales of nb <= G blocks at once: id = 1/d
 *                          (0 where d = 0) and d as fp16, G of each written
 *   QUANTS(x, id, qs)      one block's 32 quants, roundf(x·id)
 * In chunks of 128 blocks (16 KB of input, still in L1 for the second
 * pass): first all scales, G blocks per step, then all quants.  Two passes
 * rather than one per G blocks because the scales end in a long dependency
 * chain (reductions, two divisions) that the quants of the same blocks
 * would otherwise wait on; the fp16 scales are stored in the second pass,
 * as scalars, which is cheaper than extracting them from a vector one by
 * one.  G divides 128. */
#define DS4_DEFINE_Q8_0_FROM_FLOAT(ATTR, NAME, G, SCALES, QUANTS)                                    \
    ATTR static void NAME(const float *src, void *dst, int64_t n) {                                  \
        block_q8_0 *b = dst;                                                                         \
        const int64_t nb = n / QK8_0;                                                                \
        for (int64_t c = 0; c < nb; c += 128) {                                                      \
            const int cn = nb - c < 128 ? (int)(nb - c) : 128;                                       \
            const float *x = src + c * QK8_0;                                                        \
            block_q8_0 *bc = b + c;                                                                  \
            float id[128];                                                                           \
            ds4_fp16 dh[128];                                                                        \
            for (int i = 0; i < cn; i += (G)) SCALES(x + i * QK8_0, cn - i < (G) ? cn - i : (G), id + i, dh + i); \
            for (int j = 0; j < cn; j++) {                                                           \
                bc[j].d = dh[j];                                                                     \
                QUANTS(x + QK8_0 * j, id[j], bc[j].qs);                                              \
            }                                                                                        \
        }                                                                                            \
    }

/* Defines NAME, a Q8_K from_float (quant.h) bit-identical to the
 * reference, from two always-inline steps of the level:
 *   ISCALE(x)            -127 over the block's first element of largest
 *                        magnitude; 0 for an all-zero block
 *   QUANT(x, iscale, b)  quants, sums of 16 and d = 1/iscale
 * In chunks of 16 blocks (16 KB, still in L1 for the second pass): first
 * every scale, then every block's quants, so that no block's quants wait on
 * its scale's reductions and division.  An all-zero block, or |max| <
 * 127/FLT_MAX, where iscale overflows (the reference's nearest_int then
 * gives 0 everywhere, the 1.5·2^23 trick on ±inf or NaN): zeros, d = 1/iscale
 * (±0).  Needs quant.h and string.h. */
#define DS4_DEFINE_Q8K_FROM_FLOAT(ATTR, NAME, ISCALE, QUANT)                                         \
    ATTR static void NAME(const float *src, void *dst, int64_t n) {                                  \
        block_q8_K *b = dst;                                                                         \
        const int64_t nb = n / QK_K;                                                                 \
        for (int64_t c = 0; c < nb; c += 16) {                                                       \
            const int cn = nb - c < 16 ? (int)(nb - c) : 16;                                         \
            float is[16];                                                                            \
            for (int i = 0; i < cn; i++) is[i] = ISCALE(src + (c + i) * QK_K);                       \
            for (int i = 0; i < cn; i++) {                                                           \
                block_q8_K *bi = b + c + i;                                                          \
                if (is[i] != 0.0f && !__builtin_isinf(is[i])) {                                      \
                    QUANT(src + (c + i) * QK_K, is[i], bi);                                          \
                    continue;                                                                        \
                }                                                                                    \
                memset(bi, 0, sizeof *bi);                                                           \
                if (is[i] != 0.0f) bi->d = 1.0f / is[i];                                             \
            }                                                                                        \
        }                                                                                            \
    }

#endif
