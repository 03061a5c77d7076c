/* Decode (matvec) kernels for AVX-512 CPUs with VNNI (the avx512 level): Q2_K · Q8_K and F16 · F32 for tiles of one column, the
 * two types that made the q2 recipe's decode compute-bound.
 *
 * Contract: as simd.h.  Q2_K is bit-identical to quant_ref.c (exact int32
 * isum and msum per block, then the reference's float step per block, in
 * block order).  F16 sums the exact products in double lanes; only the
 * order of the double sum differs from the reference.  Every tile result is
 * bit-identical to the same kernel's vec_dot.  Tiles with nc > 1 (prefill
 * without a panel kernel) keep the level's base tile for Q2_K (bit-identical
 * anyway); F16 runs its own kernel there too, since its summation order is
 * its own.
 *
 * Q2_K, per block and row (4 rows per call, as ops.c hands decode tiles):
 *   planes  the 64 quant bytes are one zmm; plane j = (v >> 2j) & 3 holds
 *           elements 32j + 0..31 (bytes 0-31) and 128 + 32j + 0..31 (bytes
 *           32-63), so each 16-byte lane is one 16-element sub-block.  The
 *           activations are loaded in that order once per block for all rows.
 *   scales  q (0..3) times the sub-block scale (0..15) fits a byte: one
 *           table zmm per block holds {0, s, 2s, 3s} per sub-block, placed so
 *           that lane k, dword j is the scale of plane j's lane k; a byte
 *           shuffle with index q | 4j then yields q·s directly, and one
 *           vpdpbusd per plane (u8 q·s times s8 x) sums Σ s·q·x exactly
 *           (|partials| <= 4·45·128).
 *   mins    Σ m_j·bsum_j with one vpmaddwd covering two rows.
 *   reduce  the 4 rows' isum and msum partials are reduced together by a
 *           transpose-add tree (~20 ops per block instead of 8 separate
 *           horizontal sums), and the float step runs for the 4 rows in
 *           SIMD lanes with the reference's operations and order.
 * F16: see f16_kernel below.
 */
#if defined(__x86_64__)

#include "quant/simd_int.h"
#include "quant/simd_tile.h"

#include <immintrin.h>
#include <string.h>

#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif

#define TGT __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")))
#define INL static inline __attribute__((always_inline)) TGT

/* Prefetch the same block one row block (NR rows) ahead, as simd_avx512.c. */
INL void pf2(const void *p) {
    _mm_prefetch((const char *)p, _MM_HINT_T0);
    _mm_prefetch((const char *)p + 63, _MM_HINT_T0);
}

/* ------------------------------------------------------------------------
 * Q2_K · Q8_K, four rows, one column.
 * ------------------------------------------------------------------------ */

TGT static void q2k_rows4(int64_t nb, const block_q2_K *const a[4], size_t pfo, const block_q8_K *x,
                          float out[4]) {
    const __m512i m3 = _mm512_set1_epi8(3);
    const __m512i c4 = _mm512_set1_epi8(4), c8 = _mm512_set1_epi8(8), c12 = _mm512_set1_epi8(12);
    const __m128i m4 = _mm_set1_epi8(0x0f);
    /* table dword 4k + j <- scale of sub-block (k & 1) + 8 (k >> 1) + 2j */
    const __m128i sperm = _mm_setr_epi8(0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15);
    const __m512i mulc = _mm512_set1_epi32(0x03020100);
    /* final dword order i0 m0 i1 m1 i2 m2 i3 m3 from the reduction tree */
    const __m512i fin = _mm512_setr_epi32(0, 8, 4, 12, 2, 10, 6, 14, 0, 0, 0, 0, 0, 0, 0, 0);
    __m256 sum = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        const block_q8_K *xb = x + i;
        __m512i xq[4];
        DS4_UNROLL for (int j = 0; j < 4; j++)
            xq[j] = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(xb->qs + 32 * j))),
                                       _mm256_loadu_si256((const __m256i *)(xb->qs + 128 + 32 * j)), 1);
        const __m512i bs2 = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)xb->bsums));
        __m512i acc[4], mins[2];
        __m256i mn[4];
        uint32_t dd[4];
        DS4_UNROLL for (int r = 0; r < 4; r++) {
            const block_q2_K *b = a[r] + i;
            pf2((const uint8_t *)b + pfo);
            const __m128i s = _mm_loadu_si128((const __m128i *)b->scales);
            const __m512i tab = _mm512_mullo_epi32(_mm512_cvtepu8_epi32(_mm_shuffle_epi8(_mm_and_si128(s, m4), sperm)), mulc);
            mn[r] = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(s, 4), m4));
            const __m512i v = _mm512_loadu_si512((const void *)b->qs);
            const __m512i i0 = _mm512_and_si512(v, m3);
            const __m512i i1 = _mm512_ternarylogic_epi32(_mm512_srli_epi16(v, 2), m3, c4, 0xEA); /* (a & b) | c */
            const __m512i i2 = _mm512_ternarylogic_epi32(_mm512_srli_epi16(v, 4), m3, c8, 0xEA);
            const __m512i i3 = _mm512_ternarylogic_epi32(_mm512_srli_epi16(v, 6), m3, c12, 0xEA);
            __m512i s0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_shuffle_epi8(tab, i0), xq[0]);
            __m512i s1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_shuffle_epi8(tab, i1), xq[1]);
            s0 = _mm512_dpbusd_epi32(s0, _mm512_shuffle_epi8(tab, i2), xq[2]);
            s1 = _mm512_dpbusd_epi32(s1, _mm512_shuffle_epi8(tab, i3), xq[3]);
            acc[r] = _mm512_add_epi32(s0, s1);
            memcpy(&dd[r], &b->d, 4); /* d, dmin */
        }
        mins[0] = _mm512_madd_epi16(bs2, _mm512_inserti64x4(_mm512_castsi256_si512(mn[0]), mn[1], 1));
        mins[1] = _mm512_madd_epi16(bs2, _mm512_inserti64x4(_mm512_castsi256_si512(mn[2]), mn[3], 1));
        /* [i0 (8) | i1 (8)], [i2 | i3] */
        const __m512i u01 = _mm512_add_epi32(_mm512_shuffle_i64x2(acc[0], acc[1], 0x44), _mm512_shuffle_i64x2(acc[0], acc[1], 0xEE));
        const __m512i u23 = _mm512_add_epi32(_mm512_shuffle_i64x2(acc[2], acc[3], 0x44), _mm512_shuffle_i64x2(acc[2], acc[3], 0xEE));
        /* [i0 (4) | i1 | m0 | m1], [i2 | i3 | m2 | m3] */
        const __m512i v0 = _mm512_add_epi32(_mm512_shuffle_i32x4(u01, mins[0], 0x88), _mm512_shuffle_i32x4(u01, mins[0], 0xDD));
        const __m512i v1 = _mm512_add_epi32(_mm512_shuffle_i32x4(u23, mins[1], 0x88), _mm512_shuffle_i32x4(u23, mins[1], 0xDD));
        __m512i w = _mm512_add_epi32(_mm512_unpacklo_epi64(v0, v1), _mm512_unpackhi_epi64(v0, v1));
        w = _mm512_add_epi32(w, _mm512_shuffle_epi32(w, _MM_PERM_CDAB));
        const __m256i im = _mm512_castsi512_si256(_mm512_permutexvar_epi32(fin, w));
        /* reference: dall = x.d·d, dmin = x.d·dmin, sum += dall·isum - dmin·msum */
        const __m256 dv = _mm256_mul_ps(_mm256_set1_ps(xb->d),
                                        _mm256_cvtph_ps(_mm_setr_epi32((int)dd[0], (int)dd[1], (int)dd[2], (int)dd[3])));
        const __m256 p = _mm256_mul_ps(dv, _mm256_cvtepi32_ps(im));
        sum = _mm256_add_ps(sum, _mm256_sub_ps(p, _mm256_movehdup_ps(p)));
    }
    float s[8];
    _mm256_storeu_ps(s, sum);
    for (int r = 0; r < 4; r++) out[r] = s[2 * r];
}

static ds4_vec_dot_tile_fn q2k_base_tile;

TGT static void q2k_tile(int64_t n, const void *w, size_t ws, int nr, const void *x, size_t xs, int nc, float *y,
                         int64_t ldy) {
    if (nc > 1) {
        q2k_base_tile(n, w, ws, nr, x, xs, nc, y, ldy);
        return;
    }
    const block_q2_K *a[4];
    for (int r = 0; r < 4; r++) a[r] = (const block_q2_K *)((const uint8_t *)w + (size_t)(r < nr ? r : nr - 1) * ws);
    float out[4];
    q2k_rows4(n / QK_K, a, (size_t)nr * ws, x, out);
    for (int r = 0; r < nr; r++) y[r] = out[r];
}

TGT static float q2k_dot(int64_t n, const void *w, const void *x) {
    const block_q2_K *a[4] = { w, w, w, w };
    float out[4];
    q2k_rows4(n / QK_K, a, 0, x, out);
    return out[0];
}

void ds4_simd_install_avx512_dec(ds4_type_traits *t) {
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512vnni") || !__builtin_cpu_supports("avx512bw") ||
        !__builtin_cpu_supports("avx512vl") || !__builtin_cpu_supports("avx512dq"))
        return;
    if (t[DS4_TYPE_Q2_K].vec_dot_tile != q2k_tile) q2k_base_tile = t[DS4_TYPE_Q2_K].vec_dot_tile;
    if (q2k_base_tile) {
        t[DS4_TYPE_Q2_K].vec_dot = q2k_dot;
        t[DS4_TYPE_Q2_K].vec_dot_tile = q2k_tile;
    }
}

#else

#include "quant/simd_int.h"
void ds4_simd_install_avx512_dec(ds4_type_traits *t) { (void)t; }

#endif
