/* AVX2 forward-pass f32 kernels (simd.h ds4_vec_ops), "avx2" level: the
 * slots not set here keep their scalar versions (vec_ref.c).
 *
 *   idx_scores  vec_avx512.c's scheme on 8 lanes: rows across the lanes
 *               (8x8 transposes of a 16-row block), 4 heads x 2 row vectors
 *               of FMA chains (16 ymm registers), relu and the head sum
 *               lane-wise in head order: the scalar reference bit for bit. */
#if defined(__x86_64__) || defined(__i386__)

#include "quant/vec_int.h"

#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif

#define TGT __attribute__((target("avx2,fma")))
#define TGTI TGT static inline __attribute__((always_inline))

#define IDX_RB 16
#define IDX_DMAX 256 /* kt on the stack: 16 KiB at most; wider heads use the reference */

/* r[j] = row j (8 floats) -> r[c] = column c (lane j = row j). */
TGTI void tr8(__m256 *r) {
    __m256 t[8], u[8];
    _Pragma("GCC unroll 4") for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);     /* per 128-bit lane: cols 0,1 of 2 rows */
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]); /* cols 2,3 */
    }
    _Pragma("GCC unroll 2") for (int j = 0; j < 2; j++) { /* u[4j + c], lane L: rows 4j..4j+3 at col 4L + c */
        u[4 * j] = _mm256_shuffle_ps(t[4 * j], t[4 * j + 2], 0x44);
        u[4 * j + 1] = _mm256_shuffle_ps(t[4 * j], t[4 * j + 2], 0xEE);
        u[4 * j + 2] = _mm256_shuffle_ps(t[4 * j + 1], t[4 * j + 3], 0x44);
        u[4 * j + 3] = _mm256_shuffle_ps(t[4 * j + 1], t[4 * j + 3], 0xEE);
    }
    _Pragma("GCC unroll 4") for (int c = 0; c < 4; c++) {
        r[c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x20);
        r[4 + c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x31);
    }
}

#define DEF_IDX_TILE(H)                                                                               \
    TGTI void idx_tile_##H(const float *qh, const float *wh, int dI, const float *kt, __m256 *s0, __m256 *s1) { \
        __m256 a0[H], a1[H];                                                                          \
        _Pragma("GCC unroll 4") for (int g = 0; g < H; g++) a0[g] = a1[g] = _mm256_setzero_ps();                             \
        for (int e = 0; e < dI; e++) {                                                                \
            __m256 k0 = _mm256_load_ps(kt + (size_t)e * 8);                                           \
            __m256 k1 = _mm256_load_ps(kt + (size_t)(IDX_DMAX + e) * 8);                              \
            _Pragma("GCC unroll 4") for (int g = 0; g < H; g++) {                                   \
                __m256 qb = _mm256_broadcast_ss(qh + (size_t)g * dI + e);                             \
                a0[g] = _mm256_fmadd_ps(qb, k0, a0[g]);                                               \
                a1[g] = _mm256_fmadd_ps(qb, k1, a1[g]);                                               \
            }                                                                                         \
        }                                                                                             \
        const __m256 z = _mm256_setzero_ps();                                                         \
        _Pragma("GCC unroll 4") for (int g = 0; g < H; g++) { /* max_ps(x, 0) = x > 0 ? x : 0 */                              \
            __m256 wb = _mm256_broadcast_ss(wh + g);                                                  \
            *s0 = _mm256_fmadd_ps(wb, _mm256_max_ps(a0[g], z), *s0);                                  \
            *s1 = _mm256_fmadd_ps(wb, _mm256_max_ps(a1[g], z), *s1);                                  \
        }                                                                                             \
    }
DEF_IDX_TILE(4)
DEF_IDX_TILE(2)
DEF_IDX_TILE(1)

TGT static void idx_scores_avx2(const float *q, const float *w, int nt, int nI, int dI, const float *k, int64_t n,
                                float *out, int64_t ostride) {
    if (dI < 1 || dI > IDX_DMAX || nI < 1) {
        ds4_vec_idx_scores_ref(q, w, nt, nI, dI, k, n, out, ostride);
        return;
    }
    float kt[2 * IDX_DMAX * 8] __attribute__((aligned(32))); /* [row vector][d][8 rows] */
    for (int64_t i0 = 0; i0 < n; i0 += IDX_RB) {
        for (int v = 0; v < 2; v++)
            for (int c = 0; c < dI; c += 8) {
                int dn = dI - c < 8 ? dI - c : 8;
                __m256i dm = _mm256_cmpgt_epi32(_mm256_set1_epi32(dn), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
                __m256 r[8];
                _Pragma("GCC unroll 8") for (int j = 0; j < 8; j++) {
                    int64_t row = i0 + 8 * v + j;
                    r[j] = row < n ? _mm256_maskload_ps(k + row * dI + c, dm) : _mm256_setzero_ps();
                    if (c % 16 == 0 && row + IDX_RB < n) /* the next block's line (vec_avx512.c) */
                        _mm_prefetch((const char *)(k + (row + IDX_RB) * dI + c), _MM_HINT_T0);
                }
                tr8(r);
                float *dst = kt + ((size_t)v * IDX_DMAX + c) * 8;
                _Pragma("GCC unroll 8") for (int d = 0; d < 8; d++) _mm256_store_ps(dst + d * 8, r[d]);
            }
        int64_t left = n - i0 < IDX_RB ? n - i0 : IDX_RB;
        for (int t = 0; t < nt; t++) {
            const float *qt = q + (size_t)t * nI * dI, *wt = w + (size_t)t * nI;
            __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
            int h = 0;
            for (; h + 4 <= nI; h += 4) idx_tile_4(qt + (size_t)h * dI, wt + h, dI, kt, &s0, &s1);
            if (h + 2 <= nI) { idx_tile_2(qt + (size_t)h * dI, wt + h, dI, kt, &s0, &s1); h += 2; }
            if (h < nI) idx_tile_1(qt + (size_t)h * dI, wt + h, dI, kt, &s0, &s1);
            float *o = out + t * ostride + i0;
            if (left == IDX_RB) {
                _mm256_storeu_ps(o, s0);
                _mm256_storeu_ps(o + 8, s1);
            } else {
                float tmp[IDX_RB];
                _mm256_storeu_ps(tmp, s0);
                _mm256_storeu_ps(tmp + 8, s1);
                memcpy(o, tmp, sizeof(float) * (size_t)left);
            }
        }
    }
}

void ds4_vec_install_avx2(ds4_vec_ops *v) { v->idx_scores = idx_scores_avx2; }

#else /* not x86 */

#include "quant/vec_int.h"
void ds4_vec_install_avx2(ds4_vec_ops *v) { (void)v; }

#endif
