/* Internal to src/quant: the common preamble of the AVX-512 kernel files
 * (simd_avx512.c, gemm_avx512_q8.c, gemm_avx512_k.c), and the store of the
 * panel kernels' pair tiles.  Include it only
 * inside their `#if defined(__x86_64__) || defined(__i386__)` section.
 *
 * Every kernel function carries TGT, so the files build with the portable
 * flags and their code runs only after dispatch.c has checked CPUID for the
 * avx512 level's features; INL is TGT plus forced inlining, which the
 * micro-kernels need for their constant-folded NR x NC instances. */
#ifndef DS4_QUANT_SIMD_X86_H
#define DS4_QUANT_SIMD_X86_H

#include <immintrin.h>
#include <stddef.h>
#include <string.h>

#include "quant/dpbusd.h"
#include "quant/quant.h"
#include "quant/simd_int.h"

#ifdef __clang__
#pragma STDC FP_CONTRACT OFF /* GCC in ISO C mode already keeps a*b+c unfused */
#endif

#define TGT __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")))
#define INL static inline __attribute__((always_inline)) TGT
#define UNROLL _Pragma("GCC unroll 8")

/* A pair tile's sums (gemm_avx512_q8.c q8_0_tile_pairs, gemm_avx512_k.c
 * k_tile_pairs: 8 vectors, 64-bit lane t of vector i holding token t of rows
 * 2i, 2i + 1) to y: an 8 x 8 transpose of 64-bit lanes gives each
 * token its 16 rows in order, one masked store per token (t < ntok, rows <
 * nrows). */
INL void ds4_store_pairs(const float *buf, int nrows, int ntok, float *y, int64_t ldy) {
    __m512d a[8], t[8], u[8];
    UNROLL for (int i = 0; i < 8; i++) a[i] = _mm512_load_pd((const double *)(const void *)(buf + 16 * i));
    UNROLL for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm512_unpacklo_pd(a[2 * i], a[2 * i + 1]);     /* tokens 0,2,4,6 of pairs 2i, 2i+1 */
        t[2 * i + 1] = _mm512_unpackhi_pd(a[2 * i], a[2 * i + 1]); /* tokens 1,3,5,7 */
    }
    UNROLL for (int h = 0; h < 2; h++) /* pairs 4h..4h+3 */
        UNROLL for (int o = 0; o < 2; o++) { /* o: the even (0) or odd (1) tokens */
            u[4 * h + 2 * o] = _mm512_shuffle_f64x2(t[4 * h + o], t[4 * h + 2 + o], 0x88);     /* tokens o, 4+o */
            u[4 * h + 2 * o + 1] = _mm512_shuffle_f64x2(t[4 * h + o], t[4 * h + 2 + o], 0xDD); /* 2+o, 6+o */
        }
    const __mmask16 m = (__mmask16)((1u << nrows) - 1);
    UNROLL for (int o = 0; o < 2; o++)
        UNROLL for (int j = 0; j < 2; j++) { /* u[2o + j] (pairs 0-3), u[4 + 2o + j] (4-7): tokens o + 2j, o + 2j + 4 */
            const __m512d lo = u[2 * o + j], hi = u[4 + 2 * o + j];
            const int tk0 = o + 2 * j, tk1 = tk0 + 4;
            if (tk0 < ntok) _mm512_mask_storeu_ps(y + (int64_t)tk0 * ldy, m, _mm512_castpd_ps(_mm512_shuffle_f64x2(lo, hi, 0x88)));
            if (tk1 < ntok) _mm512_mask_storeu_ps(y + (int64_t)tk1 * ldy, m, _mm512_castpd_ps(_mm512_shuffle_f64x2(lo, hi, 0xDD)));
        }
}

#endif
