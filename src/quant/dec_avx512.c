/* Decode (matvec) kernels for AVX-512 CPUs with VNNI (the avx512 level):
 * Q2_K · Q8_K (needs GFNI too: Ice Lake, Zen 4 and later) for tiles of one
 * column, and F16 · F32 for every tile (decode and prefill): the two types
 * that made the q2 recipe's decode compute-bound.
 *
 * Contract: as simd.h.  Q2_K is bit-identical to quant_ref.c (exact int32
 * isum and msum per block, then the reference's float step per block, in
 * block order).  F16 sums in fp32 FMA lanes, in a fixed order of its own
 * (within (8 + √n)·2^-24·Σ|w·x| of the reference's double sum).  Every tile
 * result is bit-identical to the same kernel's vec_dot.  Tiles with nc > 1
 * (prefill without a panel kernel) keep the level's base tile for Q2_K
 * (bit-identical anyway); F16 runs its own kernel there too (4 x 4
 * instances), since its summation order is its own.
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
 * F16: see the section below.  bench/kernels, rows in L2, 4-row tiles, ns
 * per element and column (double lanes -> fp32): n = 4096: nc = 1 0.043 ->
 * 0.030, nc = 4 0.022 -> 0.0125; n = 1024: 0.041 -> 0.019, 0.023 -> 0.0087.
 */
#if defined(__x86_64__)

#include "quant/simd_int.h"
#include "quant/simd_tile.h"

#include <immintrin.h>

#include "quant/dpbusd.h"
#include <stdbool.h>
#include <string.h>

#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif

#define TGT __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")))
#define TGT_GF __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,gfni,avx2,fma,f16c")))
#define INL static inline __attribute__((always_inline)) TGT

/* Prefetch the same block one row block (NR rows) ahead, as simd_avx512.c. */
INL void pf2(const void *p) {
    _mm_prefetch((const char *)p, DS4_PF_STREAM);
    _mm_prefetch((const char *)p + 63, DS4_PF_STREAM);
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
            __m512i s0 = ds4_dpbusd(_mm512_setzero_si512(), _mm512_shuffle_epi8(tab, i0), xq[0]);
            __m512i s1 = ds4_dpbusd(_mm512_setzero_si512(), _mm512_shuffle_epi8(tab, i1), xq[1]);
            s0 = ds4_dpbusd(s0, _mm512_shuffle_epi8(tab, i2), xq[2]);
            s1 = ds4_dpbusd(s1, _mm512_shuffle_epi8(tab, i3), xq[3]);
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
    q2k_rows4(n / QK_K, a, ds4_decode_pf_dist(ws, nr), x, out);
    for (int r = 0; r < nr; r++) y[r] = out[r];
}

TGT_GF static float q2k_dot(int64_t n, const void *w, const void *x) {
    const block_q2_K *a[4] = { w, w, w, w };
    float out[4];
    q2k_rows4(n / QK_K, a, 0, x, out);
    return out[0];
}

/* ------------------------------------------------------------------------
 * F16 · F32 in fp32 lanes.
 *
 * cvtph2ps turns 16 halves into floats exactly (subnormals, inf and NaN
 * included), so a chunk costs one converting load per row and one FMA per
 * pair; the products are rounded once each, inside the FMA, and summed in
 * float (HF's reference runs these matmuls in fp32 too).  Error against the
 * scalar reference (quant_ref.c: exact products summed in double): per lane
 * a chain of ~n/16 FMAs, then 4 tree adds; test_simd bounds it by
 * (8 + √n)·2^-24·Σ|w·x| and sees at most ~0.15 of that.
 *
 * Order, the same for every pair whatever tile holds it (nr, nc, position):
 * one accumulator of 16 float lanes per (row, column); chunk j (elements
 * 16j .. 16j + 15) is added by one FMA, lane l taking element 16j + l, for
 * j = 0, 1, 2, ... in order; the last chunk of a row whose length is not a
 * multiple of 16 is loaded with a mask (weights and activations past n are
 * zeros).  Then one reduction tree: lanes i + i+8, i + i+4, i + i+2,
 * i + i+1 (f16_hsum1 for one pair, f16_hsum4 / f16_hsum16 for 4 / 16 pairs
 * at once by transpose-adds, each lane running the same additions).  So a
 * prefill tile and the decode dot give the same bits; ops.c's grouping of
 * rows and tokens never changes a result.  (A NaN's payload may differ when
 * two different NaNs meet: which one an add keeps depends on the operand
 * order the compiler picks.)
 *
 * Special values need no path of their own: an inf weight gives ±inf, or
 * NaN for inf·0 and inf - inf; a NaN weight or activation gives NaN; a
 * product beyond FLT_MAX (|w| <= 65504, so |x| > ~5e33) overflows to ±inf
 * where the reference, summing in double, could still come back into range
 * by cancellation -- activations are nowhere near that.
 *
 * Tiles: 4 x 4 pairs in 16 zmm accumulators; per chunk 4 activation loads,
 * 4 converting row loads and 16 FMAs (22 registers).  Measured on Zen 5, one
 * thread (FMA peak ~250 GF/s: 2 x 16-lane FMAs per cycle at ~3.9 GHz):
 * a 4 x 4 tile with its data in L1/L2 runs at 227 GF/s (n = 1024) to 235
 * (n = 4096); in ops.c's loop (bench/gemm, rows x n, 16-256 tokens) 256 x
 * 1024: 82 -> 195-215 GF/s, 512 x 1024: 82 -> 175-185, 24 x 4096 (the HC
 * mixes): 85 -> 150-185 (L2-bound: a tile's 4 activation rows, 64 KB, and
 * 4 weight rows, 32 KB, no longer fit in L1 together).  The double-lane
 * kernel before this built doubles from the f16 bits with integer ops and
 * word permutes (~0.021 ns per element and column at nc = 4).
 *
 * Decode (nc = 1): 4 rows at once, 4 accumulator chains (8 cycles per
 * 32-element step), prefetching one row block (NR rows) and at least ~8 KB
 * ahead, as the other decode kernels: rows in L2, 0.043 -> 0.030 ns per
 * element at n = 4096, 0.041 -> 0.019 at 1024.  From DRAM on one thread it
 * streams at ~26-33 GB/s where the slower double kernel reached ~37-44
 * (interleaved runs over 64 MB of rows).  Slowing the loop down restores
 * that (5-8 dummy shuffles per step: ~35-40 GB/s; the fast loop apparently
 * outruns what the prefetchers sustain); not kept: it tunes to this
 * machine's memory and costs the in-cache case.  Two rows at a time (half
 * the streams) gave ~31, prefetch hints T1/T2/NTA, longer or shorter
 * distances nothing; one row block ahead instead of two gained ~8% on the
 * 1024-wide matrices (2 KB rows), none at 4096.  With 2 threads old and new
 * were within the noise of this shared machine, and in ds4-bench's decode.
 *
 * Since session 25, where the near distance is under 16 KB (the 1024-wide
 * compressors: 8 KB), the Q8_0 kernel's far stage (ds4_pf_far, simd_int.h)
 * asks for the tile's rows again at twice that distance, into L2.  2
 * threads, 40 layers' worth of weights from DRAM (probe ~45-49 GB/s): a
 * 512 x 1024 F16 matvec 28.4 -> 23.9 us; a job shaped like the attention
 * projections (Q8_0 q_a and kv, F16 compressors) 107 -> 97 us; small-q2
 * decode, 6 interleaved pairs: attn_proj 0.857 -> 0.945 of the bandwidth
 * limit (560 -> 509 us a token), the whole step 0.761 -> 0.783.  Not for
 * longer near distances: with the HC mixes (8 KB rows, 32 KB ahead) the far
 * stage ran past their 98 KB per thread (4.2 -> 4.6-7 us), and it did
 * nothing for 4096-wide matrices; near 16 KB + far 32 KB was worse than
 * 8 + 16.
 * ------------------------------------------------------------------------ */

#define F16_UNROLL16 _Pragma("GCC unroll 16")
#define F16_FAR_BELOW 16384 /* near distances (bytes) that get the far stage */

/* The 16 halves at row + i as floats (cvtph2ps: exact, inf/NaN/subnormals
 * included); m zero-pads a tail chunk. */
INL __m512 f16w(const uint16_t *row, int64_t i) {
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(row + i)));
}
INL __m512 f16w_tail(const uint16_t *row, int64_t i, __mmask16 m) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, row + i));
}

/* Horizontal sums, every lane by the same tree: lanes i + i+8, then
 * i + i+4, i + i+2, i + i+1 (_mm512_reduce_add_ps's pairing).  Of one
 * accumulator: */
INL float f16_hsum1(__m512 a) {
    const __m256 s1 = _mm256_add_ps(_mm512_castps512_ps256(a), _mm512_extractf32x8_ps(a, 1));
    const __m128 s2 = _mm_add_ps(_mm256_castps256_ps128(s1), _mm256_extractf128_ps(s1, 1));
    const __m128 s3 = _mm_add_ps(s2, _mm_movehl_ps(s2, s2));
    return _mm_cvtss_f32(_mm_add_ss(s3, _mm_movehdup_ps(s3)));
}

/* Of four at once, by transpose-adds: lanes 0, 4, 8, 12 get the sums of
 * a[0], a[2], a[1], a[3]. */
INL __m512 f16_hsum4(const __m512 *a) {
    const __m512i sw4 = _mm512_set_epi32(27, 26, 25, 24, 15, 14, 13, 12, 19, 18, 17, 16, 7, 6, 5, 4);
    /* lanes 0-7: a[0] i + i+8, lanes 8-15: a[1] (X0); a[2], a[3] (X1) */
    const __m512 X0 = _mm512_add_ps(_mm512_mask_blend_ps(0xFF00, a[0], a[1]), _mm512_shuffle_f32x4(a[0], a[1], 0x4E));
    const __m512 X1 = _mm512_add_ps(_mm512_mask_blend_ps(0xFF00, a[2], a[3]), _mm512_shuffle_f32x4(a[2], a[3], 0x4E));
    /* 128-bit blocks a[0], a[2], a[1], a[3]: i + i+4 */
    const __m512 Y = _mm512_add_ps(_mm512_mask_blend_ps(0xF0F0, X0, X1), _mm512_permutex2var_ps(X0, sw4, X1));
    const __m512 Z = _mm512_add_ps(Y, _mm512_shuffle_ps(Y, Y, _MM_SHUFFLE(1, 0, 3, 2)));    /* i + i+2 */
    return _mm512_add_ps(Z, _mm512_shuffle_ps(Z, Z, _MM_SHUFFLE(2, 3, 0, 1)));            /* i + i+1 */
}

/* Of sixteen (vec_avx512.c's hsum16): lane m <- Σ acc[m]. */
INL __m512 f16_hsum16(const __m512 *acc) {
    __m512 B[16], X[8], Y[4], Z[2];
    /* stage 4 below leaves lanes 4j + (0, 2, 1, 3): feed them swapped */
    F16_UNROLL16 for (int k = 0; k < 16; k++) B[k] = acc[(k & ~3) | ((k & 1) << 1) | ((k >> 1) & 1)];
    /* X[k]: lanes 0-7 B[k] (i + i+8), lanes 8-15 B[k+8] */
    F16_UNROLL16 for (int k = 0; k < 8; k++)
        X[k] = _mm512_add_ps(_mm512_mask_blend_ps(0xFF00, B[k], B[k + 8]), _mm512_shuffle_f32x4(B[k], B[k + 8], 0x4E));
    /* Y[k]: 128-bit blocks B[k], B[k+4], B[k+8], B[k+12] (i + i+4) */
    const __m512i sw4 = _mm512_set_epi32(27, 26, 25, 24, 15, 14, 13, 12, 19, 18, 17, 16, 7, 6, 5, 4);
    F16_UNROLL16 for (int k = 0; k < 4; k++)
        Y[k] = _mm512_add_ps(_mm512_mask_blend_ps(0xF0F0, X[k], X[k + 4]), _mm512_permutex2var_ps(X[k], sw4, X[k + 4]));
    /* Z[k]: per block j, lanes 0-1 B[k+4j], 2-3 B[k+2+4j] (i + i+2) */
    F16_UNROLL16 for (int k = 0; k < 2; k++)
        Z[k] = _mm512_add_ps(_mm512_mask_blend_ps(0xCCCC, Y[k], Y[k + 2]),
                             _mm512_shuffle_ps(Y[k], Y[k + 2], _MM_SHUFFLE(1, 0, 3, 2)));
    /* lanes 4j + (B[4j], B[4j+2], B[4j+1], B[4j+3]) (i + i+1) */
    return _mm512_add_ps(_mm512_shuffle_ps(Z[0], Z[1], _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_ps(Z[0], Z[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

/* One 16-element chunk at i for the NR x NC pairs: the NC activation vectors,
 * then per row one conversion feeding NC FMAs. */
#define F16_CHUNK(WLOAD, XLOAD)                                                                \
    do {                                                                                       \
        __m512 xv_[4];                                                                         \
        DS4_UNROLL for (int c = 0; c < NC; c++) xv_[c] = XLOAD(c);                             \
        DS4_UNROLL for (int r = 0; r < NR; r++) {                                              \
            const __m512 wv_ = WLOAD(r);                                                       \
            DS4_UNROLL for (int c = 0; c < NC; c++) acc[r][c] = _mm512_fmadd_ps(wv_, xv_[c], acc[r][c]); \
        }                                                                                      \
    } while (0)

/* NR x NC pairs, one accumulator each; every pair runs the same sequence
 * (chunk order, tail, reduction tree) whatever NR and NC are. */
INL void k_f16(int64_t n, const uint8_t *w, size_t ws, const uint8_t *x, size_t xs, float *y, int64_t ldy,
               const int NR, const int NC) {
    const uint16_t *wr[4];
    const float *xc[4];
    __m512 acc[4][4];
    DS4_UNROLL for (int r = 0; r < NR; r++) wr[r] = (const uint16_t *)(w + r * ws);
    DS4_UNROLL for (int c = 0; c < NC; c++) xc[c] = (const float *)(x + c * xs);
    DS4_UNROLL for (int r = 0; r < NR; r++) DS4_UNROLL for (int c = 0; c < NC; c++) acc[r][c] = _mm512_setzero_ps();
    /* Decode (one column) streams the rows: prefetch one row block (the next
     * call's rows) and at least ~8 KB ahead; a prefill tile reads its rows
     * for several columns and leaves it to the hardware. */
    const size_t pfd = NC > 1 || ws == 0 ? 0 : (NR * ws >= 8192 ? (size_t)NR : (8192 + ws - 1) / ws) * ws;
    /* and where that is short (rows of up to ~1K halves), the far stage
     * (simd_int.h) at twice it: header comment */
    const bool far_on = pfd && pfd < F16_FAR_BELOW;
    ds4_pf_far far = ds4_pf_far_at(w, ws, NR, n / 32, 2 * pfd);
    int64_t i = 0;
#define WF(r) f16w(wr[r], i)
#define XF(c) _mm512_loadu_ps(xc[c] + i)
#define WF2(r) f16w(wr[r], i + 16)
#define XF2(c) _mm512_loadu_ps(xc[c] + i + 16)
    for (; i + 32 <= n; i += 32) { /* a line of every row per step */
        if (far_on) ds4_pf_far_step(&far);
        if (pfd) DS4_UNROLL for (int r = 0; r < NR; r++) _mm_prefetch((const char *)(wr[r] + i) + pfd, DS4_PF_STREAM);
        F16_CHUNK(WF, XF);
        F16_CHUNK(WF2, XF2);
    }
#undef WF2
#undef XF2
    for (; i < n; i += 16) { /* the same chunks; lanes past n load as zeros */
        const __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
#define WT(r) f16w_tail(wr[r], i, m)
#define XT(c) _mm512_maskz_loadu_ps(m, xc[c] + i)
        F16_CHUNK(WT, XT);
#undef WT
#undef XT
    }
#undef WF
#undef XF
    float s[16];
    if (NR * NC == 1) {
        y[0] = f16_hsum1(acc[0][0]);
    } else if (NR * NC <= 4) { /* decode's 4 x 1 */
        __m512 a4[4];
        DS4_UNROLL for (int k = 0; k < 4; k++) a4[k] = _mm512_setzero_ps();
        DS4_UNROLL for (int c = 0; c < NC; c++) DS4_UNROLL for (int r = 0; r < NR; r++) a4[c * NR + r] = acc[r][c];
        _mm512_storeu_ps(s, f16_hsum4(a4));
        static const int lane[4] = { 0, 8, 4, 12 };
        DS4_UNROLL for (int c = 0; c < NC; c++) DS4_UNROLL for (int r = 0; r < NR; r++) y[c * ldy + r] = s[lane[c * NR + r]];
    } else {
        __m512 a16[16];
        F16_UNROLL16 for (int k = 0; k < 16; k++) a16[k] = _mm512_setzero_ps();
        DS4_UNROLL for (int c = 0; c < NC; c++) DS4_UNROLL for (int r = 0; r < NR; r++) a16[4 * c + r] = acc[r][c];
        _mm512_storeu_ps(s, f16_hsum16(a16));
        DS4_UNROLL for (int c = 0; c < NC; c++) DS4_UNROLL for (int r = 0; r < NR; r++) y[c * ldy + r] = s[4 * c + r];
    }
}
#undef F16_CHUNK
DS4_DEFINE_TILE(TGT, f16s, k_f16, 4, 4)

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
    /* the level's only F16 kernel (simd_avx512.c has none; F16C comes with
     * the avx2 level this one builds on) */
    t[DS4_TYPE_F16].vec_dot = f16s_dot;
    t[DS4_TYPE_F16].vec_dot_tile = f16s_tile;
}

#else

#include "quant/simd_int.h"
void ds4_simd_install_avx512_dec(ds4_type_traits *t) { (void)t; }

#endif
