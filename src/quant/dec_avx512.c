/* Decode (matvec) kernels for AVX-512 CPUs with VNNI (the avx512 level):
 * Q2_K · Q8_K (needs GFNI too: Ice Lake, Zen 4 and later) and F16 · F32,
 * for tiles of one column, the two types that made the q2 recipe's decode
 * compute-bound.
 *
 * Contract: as simd.h.  Q2_K is bit-identical to quant_ref.c (exact int32
 * isum and msum per block, then the reference's float step per block, in
 * block order).  F16 sums the exact products in double lanes; only the
 * order of the double sum differs from the reference.  Every tile result is
 * bit-identical to the same kernel's vec_dot.  Tiles with nc > 1 (prefill
 * without a panel kernel) keep the level's base tile for Q2_K (bit-identical
 * anyway); F16 runs its own kernel there too (4 x 4 instances), since its
 * summation order is its own.
 *
 * Q2_K, per block and row (4 rows per call, as ops.c hands decode tiles):
 *   planes  the 64 quant bytes are one zmm; plane j = (v >> 2j) & 3 holds
 *           elements 32j + 0..31 (bytes 0-31) and 128 + 32j + 0..31 (bytes
 *           32-63), so each 16-byte lane is one 16-element sub-block.  The
 *           activations are loaded in that order once per block for all rows.
 *           The shuffle index q | 4j (below) of plane j is one GFNI affine
 *           byte map (bits 2j, 2j+1 to bits 0, 1; constant 4j): one op where
 *           a shift and a ternlog were two (-6%).
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
 * Measured on Zen 5, one thread, 4096 x 4096 Q2_K (L3), nr = 4, nc = 1:
 * 6.4 ns per block for the level's kernel, 4.2 with this scheme, 3.2 with
 * the row loop unrolled, 2.9 with the two-row mins (28-29 GB/s); building
 * the table with one vpmullw on words (instead of vpmovzxbd + vpmulld)
 * gained ~1%, the GFNI plane indices ~6% (2.8 ns, 30 GB/s).  Tried and
 * not kept: index q·4 + j tables for planes 1 and 3 (saves two shifts, costs
 * a shuffle: no change), one dpbusd chain per row (slower: latency),
 * unrolling two blocks (no change).
 *
 * F16: see the section below; 0.054 -> 0.038 ns per element (rows in L2),
 * and 0.028 -> 0.021 ns per element and column in 4-column tiles.
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
#define TGT_GF __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,gfni,avx2,fma,f16c")))
#define INL static inline __attribute__((always_inline)) TGT

/* Prefetch the same block one row block (NR rows) ahead, as simd_avx512.c. */
INL void pf2(const void *p) {
    _mm_prefetch((const char *)p, _MM_HINT_T0);
    _mm_prefetch((const char *)p + 63, _MM_HINT_T0);
}

/* ------------------------------------------------------------------------
 * Q2_K · Q8_K, four rows, one column.
 * ------------------------------------------------------------------------ */

/* byte shuffle: lane k, dword j <- the scale byte of sub-block
 * (k & 1) + 8 (k >> 1) + 2j in both words (0x80: zero byte) */

static const uint8_t q2k_wctl[64] __attribute__((aligned(64))) = {
    0, 128, 0, 128, 2, 128, 2, 128, 4, 128, 4, 128, 6, 128, 6, 128, 1, 128, 1, 128, 3, 128, 3, 128, 5, 128, 5, 128, 7, 128, 7, 128,
    8, 128, 8, 128, 10, 128, 10, 128, 12, 128, 12, 128, 14, 128, 14, 128, 9, 128, 9, 128, 11, 128, 11, 128, 13, 128, 13, 128, 15, 128, 15, 128
};

TGT_GF static void q2k_rows4(int64_t nb, const block_q2_K *const a[4], size_t pfo, const block_q8_K *x,
                          float out[4]) {
    const __m512i m3 = _mm512_set1_epi8(3);
#define GFM(j) _mm512_set1_epi64((long long)((1ull << (2 * (j))) << 56 | (1ull << (2 * (j) + 1)) << 48))
    const __m512i gf1 = GFM(1), gf2 = GFM(2), gf3 = GFM(3);
#undef GFM
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    /* table lane k, dword j <- scale s of sub-block (k & 1) + 8 (k >> 1) + 2j
     * in both words, then times 256 (bytes 0, s) and 770 (bytes 2s, 3s) */
    const __m512i wctl = _mm512_load_si512((const void *)q2k_wctl);
    const __m512i mulw = _mm512_set1_epi32(770 << 16 | 256);
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
        uint32_t dd[4];
        DS4_UNROLL for (int r = 0; r < 4; r++) {
            const block_q2_K *b = a[r] + i;
            pf2((const uint8_t *)b + pfo);
            const __m512i s4 = _mm512_and_si512(_mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)b->scales)), m4);
            const __m512i tab = _mm512_mullo_epi16(_mm512_shuffle_epi8(s4, wctl), mulw);
            const __m512i v = _mm512_loadu_si512((const void *)b->qs);
            /* plane j index (v >> 2j & 3) | 4j as one affine byte map (GFNI):
             * output bit 0 <- bit 2j, bit 1 <- bit 2j + 1, constant 4j */
            const __m512i i0 = _mm512_and_si512(v, m3);
            const __m512i i1 = _mm512_gf2p8affine_epi64_epi8(v, gf1, 4);
            const __m512i i2 = _mm512_gf2p8affine_epi64_epi8(v, gf2, 8);
            const __m512i i3 = _mm512_gf2p8affine_epi64_epi8(v, gf3, 12);
            __m512i s0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_shuffle_epi8(tab, i0), xq[0]);
            __m512i s1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_shuffle_epi8(tab, i1), xq[1]);
            s0 = _mm512_dpbusd_epi32(s0, _mm512_shuffle_epi8(tab, i2), xq[2]);
            s1 = _mm512_dpbusd_epi32(s1, _mm512_shuffle_epi8(tab, i3), xq[3]);
            acc[r] = _mm512_add_epi32(s0, s1);
            memcpy(&dd[r], &b->d, 4); /* d, dmin */
        }
        /* mins of two rows per zmm: the whole scale byte widened to a word, >> 4 */
        DS4_UNROLL for (int h = 0; h < 2; h++) {
            const __m256i s2 = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)a[2 * h][i].scales)),
                                                       _mm_loadu_si128((const __m128i *)a[2 * h + 1][i].scales), 1);
            mins[h] = _mm512_madd_epi16(bs2, _mm512_srli_epi16(_mm512_cvtepu8_epi16(s2), 4));
        }
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

TGT_GF static void q2k_tile(int64_t n, const void *w, size_t ws, int nr, const void *x, size_t xs, int nc, float *y,
                         int64_t ldy) {
    if (nc > 1) {
        q2k_base_tile(n, w, ws, nr, x, xs, nc, y, ldy);
        return;
    }
    const block_q2_K *a[4];
    for (int r = 0; r < 4; r++) a[r] = (const block_q2_K *)((const uint8_t *)w + (size_t)(r < nr ? r : nr - 1) * ws);
    float out[4];
    /* prefetch 2 row blocks ahead and at least ~8 KB, as Q8_0 (simd_avx512.c) */
    size_t pfr = ws == 0 ? 0 : 2 * (size_t)nr * ws >= 8192 ? 2 * (size_t)nr : (8192 + ws - 1) / ws;
    q2k_rows4(n / QK_K, a, pfr * ws, x, out);
    for (int r = 0; r < nr; r++) y[r] = out[r];
}

TGT_GF static float q2k_dot(int64_t n, const void *w, const void *x) {
    const block_q2_K *a[4] = { w, w, w, w };
    float out[4];
    q2k_rows4(n / QK_K, a, 0, x, out);
    return out[0];
}

/* ------------------------------------------------------------------------
 * F16 · F32 in double lanes.
 *
 * The level's kernel converts each weight with cvtph2ps + cvtps2pd; those
 * conversions issue at one per cycle on Zen 5 and were the limit: 0.057 ns
 * per element with the rows in L2 (one thread).  Here a weight's double is
 * built with integer ops instead.  For the f16 bits h = s|e(5)|m(10), the
 * 64-bit pattern  s << 63 | (h & 0x7fff) << 42  is a double with the f16's
 * sign, its 5-bit exponent in the low exponent bits and its mantissa on top
 * of the double's: exactly w·2^-1008, subnormal f16 included (they land on
 * double subnormals).  Per 32 weights: word A = (h >>arith 6) & 0x81FF (the
 * sign and the top 9 bits, for bits 48-63) and word B = h << 10 (the low 6
 * bits, for bits 32-47); one two-source word permute with zero masking per
 * 8 weights drops them into words 3 and 2 of each qword.  That is 3 ops per
 * 32 weights plus one shuffle per 8 (vpmovsxwq + shift + and, 3 ops per 8,
 * measured 0.046 ns; this: 0.040 ns).
 *
 * Exactness: the activations are converted per 8-element chunk and scaled by
 * 2^200, so every product w·2^-1008 · x·2^200 is exact (11 x 24 significant
 * bits) and lies in [2^-981, 2^-662]; every partial sum is then a multiple
 * of 2^-981 (a normal double) or zero and far from overflow, so each
 * addition rounds exactly as the unscaled one would, and the final double
 * times 2^808 is the unscaled sum in this order.  It is rounded once to
 * float, as the reference; only the order of the double additions differs.
 *
 * Order, the same for every pair whatever tile holds it (nr, nc, position):
 * one accumulator of 8 double lanes per (row, column); chunk j (elements
 * 8j .. 8j + 7, the last one zero-padded) is added with one FMA, lane l
 * taking element 8j + l, for j = 0, 1, 2, ... in order (the 32-element
 * steps and the 8-element tail run the same chunk sequence); then
 * _mm512_reduce_add_pd (lanes 0-3 + 4-7, then the halves of that, then
 * the last pair) and the multiply by 2^808.  So a prefill tile and the
 * decode dot (the 1 x 1 instance) give the same bits.
 *
 * Infinite or NaN weights (exponent 31) are not representable this way: a
 * u16 max of 2h over the tile's rows (>= 0xF800: some row has one) is kept
 * in the loop, and only then are the rows checked one by one and such a row
 * recomputed by the level's kernel for every column, so it still gives what
 * the level's kernel gives (inf/NaN).  The check stays in the loop (one
 * register for all rows): a separate pass over the rows measured ~20%
 * slower.
 *
 * Tiles: 4 x 4 instances, 16 accumulators.  Per 32-element step the rows'
 * A/B words are built once (8 registers), then for each chunk the NC
 * activation vectors are converted and each row's permute feeds NC FMAs.
 * Per step of a 4 x 4 tile that is 64 FMAs + 16 multiplies (x·2^200) on the
 * two FMA pipes, 16 permutes + 16 cvtps2pd + 20 integer ops on the others;
 * measured ~44 cycles on Zen 5 against the 40 of the FMA pipes: 0.0214 ns
 * per element and column at nc = 4 (rows in L2, n = 4096; the 4 x 2 kernel
 * with two accumulators per pair before it: 0.0282), nc = 1 unchanged at
 * ~0.037 (permute-bound; decode streams from memory anyway).  Tried and not
 * kept: vscalefpd for the 2^200 (it issues beside the FMAs, but then the
 * permute/convert pipes bind: 7% slower; half and half: 4% slower), the
 * activation doubles of a step through a stack array read by the FMAs (6%
 * slower).  The activation conversion is per tile call and so per 4 rows;
 * it could only be amortized over more rows by a panel kernel (pack once).
 * ------------------------------------------------------------------------ */

static ds4_vec_dot_fn f16_base_dot;

/* Word permutes: qword q of result k <- B[8k + q] in word 2, A[8k + q] in
 * word 3 (index 32 + i selects the second source); words 0, 1 zeroed. */
static const uint16_t f16_perm[4][32] __attribute__((aligned(64))) = {
    { 0, 0, 32, 0, 0, 0, 33, 1, 0, 0, 34, 2, 0, 0, 35, 3, 0, 0, 36, 4, 0, 0, 37, 5, 0, 0, 38, 6, 0, 0, 39, 7 },
    { 0, 0, 40, 8, 0, 0, 41, 9, 0, 0, 42, 10, 0, 0, 43, 11, 0, 0, 44, 12, 0, 0, 45, 13, 0, 0, 46, 14, 0, 0, 47, 15 },
    { 0, 0, 48, 16, 0, 0, 49, 17, 0, 0, 50, 18, 0, 0, 51, 19, 0, 0, 52, 20, 0, 0, 53, 21, 0, 0, 54, 22, 0, 0, 55, 23 },
    { 0, 0, 56, 24, 0, 0, 57, 25, 0, 0, 58, 26, 0, 0, 59, 27, 0, 0, 60, 28, 0, 0, 61, 29, 0, 0, 62, 30, 0, 0, 63, 31 },
};

/* 8 halves -> doubles times 2^-1008 (the tail's form; same values) */
INL __m512d f16x8(__m128i h) {
    const __m512i q = _mm512_slli_epi64(_mm512_cvtepi16_epi64(h), 42);
    return _mm512_castsi512_pd(_mm512_and_si512(q, _mm512_set1_epi64((long long)0x81FFFFFFFFFFFFFFull)));
}

/* Whether a row holds an inf/NaN weight (exponent 31): a u16 max of 2h. */
INL int f16_special(int64_t n, const uint8_t *row) {
    __m512i mx = _mm512_setzero_si512();
    for (int64_t j = 0; j < n; j += 32) {
        const __mmask32 m = n - j >= 32 ? ~(__mmask32)0 : (__mmask32)((1u << (n - j)) - 1);
        const __m512i h = _mm512_maskz_loadu_epi16(m, (const uint16_t *)row + j);
        mx = _mm512_max_epu16(mx, _mm512_add_epi16(h, h));
    }
    return _mm512_cmpge_epu16_mask(mx, _mm512_set1_epi16((short)0xF800)) != 0;
}

/* NR x NC pairs, one accumulator each; every pair runs the same sequence
 * (chunk order, then the reduction) whatever NR and NC are. */
INL void k_f16(int64_t n, const uint8_t *w, size_t ws, const uint8_t *x, size_t xs, float *y, int64_t ldy,
               const int NR, const int NC) {
    const __m512d sx = _mm512_set1_pd(0x1p200);
    const __m512i amask = _mm512_set1_epi16((short)0x81FF);
    __m512d acc[4][4];
    __m512i mx = _mm512_setzero_si512(); /* u16 max of 2h over all the tile's rows */
    DS4_UNROLL for (int r = 0; r < NR; r++) DS4_UNROLL for (int c = 0; c < NC; c++) acc[r][c] = _mm512_setzero_pd();
    /* Decode (one column) streams the rows: prefetch two row blocks and at
     * least ~8 KB ahead, as the Q8_0 kernel (simd_avx512.c); a prefill tile
     * reads its rows for several columns and leaves it to the hardware. */
    const size_t pfd = NC > 1 || ws == 0 ? 0
                     : (2 * NR * ws >= 8192 ? 2 * (size_t)NR : (8192 + ws - 1) / ws) * ws;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512i A[4], B[4];
        DS4_UNROLL for (int r = 0; r < NR; r++) {
            if (pfd) _mm_prefetch((const char *)((const uint16_t *)(w + r * ws) + i) + pfd, _MM_HINT_T0);
            const __m512i h = _mm512_loadu_si512((const void *)((const uint16_t *)(w + r * ws) + i));
            mx = _mm512_max_epu16(mx, _mm512_add_epi16(h, h));
            A[r] = _mm512_and_si512(_mm512_srai_epi16(h, 6), amask);
            B[r] = _mm512_slli_epi16(h, 10);
        }
        /* chunk k (elements i + 8k ..): NC activation vectors, then per row
         * one permute shared by the NC FMAs */
        DS4_UNROLL for (int k = 0; k < 4; k++) {
            __m512d xd[4];
            DS4_UNROLL for (int c = 0; c < NC; c++)
                xd[c] = _mm512_mul_pd(_mm512_cvtps_pd(_mm256_loadu_ps((const float *)(x + c * xs) + i + 8 * k)), sx);
            const __m512i ctl = _mm512_load_si512((const void *)f16_perm[k]);
            DS4_UNROLL for (int r = 0; r < NR; r++) {
                const __m512d wd = _mm512_castsi512_pd(_mm512_maskz_permutex2var_epi16(0xCCCCCCCCu, A[r], ctl, B[r]));
                DS4_UNROLL for (int c = 0; c < NC; c++) acc[r][c] = _mm512_fmadd_pd(wd, xd[c], acc[r][c]);
            }
        }
    }
    for (; i < n; i += 8) { /* tail chunks, same accumulators; lanes past n load as zeros */
        const __mmask8 m = n - i >= 8 ? (__mmask8)0xFF : (__mmask8)((1u << (n - i)) - 1);
        __m512d xd[4];
        DS4_UNROLL for (int c = 0; c < NC; c++)
            xd[c] = _mm512_mul_pd(_mm512_cvtps_pd(_mm256_maskz_loadu_ps(m, (const float *)(x + c * xs) + i)), sx);
        DS4_UNROLL for (int r = 0; r < NR; r++) {
            const __m128i h = _mm_maskz_loadu_epi16(m, (const uint16_t *)(w + r * ws) + i);
            mx = _mm512_max_epu16(mx, _mm512_castsi128_si512(_mm_add_epi16(h, h)));
            const __m512d wd = f16x8(h);
            DS4_UNROLL for (int c = 0; c < NC; c++) acc[r][c] = _mm512_fmadd_pd(wd, xd[c], acc[r][c]);
        }
    }
    DS4_UNROLL for (int r = 0; r < NR; r++)
        DS4_UNROLL for (int c = 0; c < NC; c++)
            y[c * ldy + r] = (float)(_mm512_reduce_add_pd(acc[r][c]) * 0x1p808);
    if (_mm512_cmpge_epu16_mask(mx, _mm512_set1_epi16((short)0xF800))) /* rare: find the rows */
        for (int r = 0; r < NR; r++)
            if (f16_special(n, w + r * ws))
                for (int c = 0; c < NC; c++) y[c * ldy + r] = f16_base_dot(n, w + r * ws, x + c * xs);
}
DS4_DEFINE_TILE(TGT, f16d, k_f16, 4, 4)

void ds4_simd_install_avx512_dec(ds4_type_traits *t) {
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512vnni") || !__builtin_cpu_supports("avx512bw") ||
        !__builtin_cpu_supports("avx512vl") || !__builtin_cpu_supports("avx512dq"))
        return;
    if (t[DS4_TYPE_Q2_K].vec_dot_tile != q2k_tile) q2k_base_tile = t[DS4_TYPE_Q2_K].vec_dot_tile;
    if (q2k_base_tile && __builtin_cpu_supports("gfni")) {
        t[DS4_TYPE_Q2_K].vec_dot = q2k_dot;
        t[DS4_TYPE_Q2_K].vec_dot_tile = q2k_tile;
    }
    if (t[DS4_TYPE_F16].vec_dot != f16d_dot) f16_base_dot = t[DS4_TYPE_F16].vec_dot;
    if (f16_base_dot) {
        t[DS4_TYPE_F16].vec_dot = f16d_dot;
        t[DS4_TYPE_F16].vec_dot_tile = f16d_tile;
    }
}

#else

#include "quant/simd_int.h"
void ds4_simd_install_avx512_dec(ds4_type_traits *t) { (void)t; }

#endif
