/* AVX-512 (F/BW/VL/DQ + VNNI) kernels: the "avx512" dispatch level.
 *
 * Every function carries its own target attribute, so this file builds with
 * the portable flags and its code runs only after dispatch.c has checked
 * CPUID.  Contract per kernel: see simd.h (K-quants, IQ2 and Q8_0
 * bit-identical to quant_ref.c, f32-family dots in double lanes, activation
 * quantizers bit-identical).  One micro-kernel per
 * type handles NR x NC (row, column) pairs at once; vec_dot is its 1x1 case.
 *
 * Integer dots use the VNNI "u8 x s8" forms:
 *   Q8_0    (w + 128) as u8 times x, minus 128·Σx folded into the
 *           accumulator's start value: exact for every int8, no sign trick;
 *   K/IQ2   weights are non-negative (Q4_K/Q2_K quants, IQ2 grid values),
 *           so maddubs(w, x) is exact (|sum| < 2^15) and vpdpwssd applies
 *           the 16-bit (sub-)block scales while accumulating in int32. */
#if defined(__x86_64__) || defined(__i386__)

#include "quant/simd_x86.h"
#include "quant/simd_tile.h"
#include "quant/iq2_tables.h"

INL float h2f(ds4_fp16 h) { return _cvtsh_ss(h); } /* exact, as ds4_fp16_to_f32 */

/* Prefetch `len` bytes at p.  The quantized kernels call it on the same
 * offset NR rows ahead, i.e. the next row block of the matrix: rows of 1-4 KB
 * are too short for the hardware stream prefetchers to ramp up on, which
 * left decode well under memory bandwidth.  Prefetches never fault, so
 * running past the last row is harmless. */
INL void pf(const uint8_t *p, int len) {
    for (int o = 0; o < len; o += 64) _mm_prefetch((const char *)p + o, DS4_PF_STREAM);
}

INL int32_t hsum256_epi32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
}

INL int32_t hsum512_epi32(__m512i v) {
    return hsum256_epi32(_mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1)));
}

/* ------------------------------------------------------------------------
 * F32 / BF16 weights · f32: one 8-lane double FMA accumulator per pair.
 * (F16 runs in fp32 lanes: dec_avx512.c.)
 * ------------------------------------------------------------------------ */

enum { KF32, KBF16 };

INL __m512 load_w16(const uint8_t *row, int64_t i, int kind) {
    if (kind == KF32) return _mm512_loadu_ps((const float *)row + i);
    __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)row + i));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

INL __m512 load_w16_tail(const uint8_t *row, int64_t i, __mmask16 m, int kind) {
    if (kind == KF32) return _mm512_maskz_loadu_ps(m, (const float *)row + i);
    __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)row + i);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* Products of two f32 are exact in double and the sums run in double lanes,
 * so the result differs from the reference's sequential double sum only by
 * the summation order (~1e-16) before the final rounding to f32. */
INL void k_float(int64_t n, const uint8_t *w, size_t ws, const uint8_t *x, size_t xs, float *y, int64_t ldy,
                 const int NR, const int NC, const int kind) {
    __m512d acc[4][4];
    DS4_UNROLL for (int r = 0; r < NR; r++) DS4_UNROLL for (int c = 0; c < NC; c++) acc[r][c] = _mm512_setzero_pd();
    for (int64_t i = 0; i < n; i += 16) {
        const int tail = n - i < 16;
        const __mmask16 m = tail ? (__mmask16)((1u << (n - i)) - 1) : (__mmask16)0xFFFF; /* past n: zeros */
        __m512d xl[4], xh[4];
        DS4_UNROLL for (int c = 0; c < NC; c++) {
            const float *xp = (const float *)(x + c * xs) + i;
            const __m512 xv = tail ? _mm512_maskz_loadu_ps(m, xp) : _mm512_loadu_ps(xp);
            xl[c] = _mm512_cvtps_pd(_mm512_castps512_ps256(xv));
            xh[c] = _mm512_cvtps_pd(_mm512_extractf32x8_ps(xv, 1));
        }
        DS4_UNROLL for (int r = 0; r < NR; r++) {
            const __m512 wv = tail ? load_w16_tail(w + r * ws, i, m, kind) : load_w16(w + r * ws, i, kind);
            const __m512d wl = _mm512_cvtps_pd(_mm512_castps512_ps256(wv));
            const __m512d wh = _mm512_cvtps_pd(_mm512_extractf32x8_ps(wv, 1));
            DS4_UNROLL for (int c = 0; c < NC; c++)
                acc[r][c] = _mm512_fmadd_pd(wh, xh[c], _mm512_fmadd_pd(wl, xl[c], acc[r][c]));
        }
    }
    DS4_UNROLL for (int r = 0; r < NR; r++)
        DS4_UNROLL for (int c = 0; c < NC; c++) y[c * ldy + r] = (float)_mm512_reduce_add_pd(acc[r][c]);
}

#define K_F32(n, w, ws, x, xs, y, ldy, R, C) k_float(n, w, ws, x, xs, y, ldy, R, C, KF32)
#define K_BF16(n, w, ws, x, xs, y, ldy, R, C) k_float(n, w, ws, x, xs, y, ldy, R, C, KBF16)
DS4_DEFINE_TILE(TGT, f32_512, K_F32, 4, 4)
DS4_DEFINE_TILE(TGT, bf16_512, K_BF16, 4, 4)

/* ------------------------------------------------------------------------
 * Q8_0 · Q8_0, bit-identical to the reference (canonical order): per block
 * an exact int32 sum, then sum += (float)isum * (d_w * d_x) in f32, blocks
 * in order, mul then add (never fused).  Since every step is an exact
 * integer sum or one correctly rounded f32 operation in the reference's
 * order, any kernel that keeps this order -- this one, the panel GEMM in
 * gemm_avx512_q8.c, the scalar loop -- returns the same bits.
 *
 * Vectorised across rows: per block pair, row r's zmm holds the dpbusd
 * partials of block b (lanes 0-7) and b+1 (lanes 8-15); a transpose tree
 * turns the NR <= 4 rows into one xmm of per-row sums per block, and the
 * float chain then runs in xmm lanes = rows, one chain per column.  Decode
 * (4 rows x 1 column per call) needs ~15 vector ops per 68 weight bytes,
 * far under the ~3.5 bytes/cycle memory stream.
 * ------------------------------------------------------------------------ */

/* Blocks b and (if two) b+1 side by side; a missing second block is zero. */
INL __m512i q8_0_qs2(const block_q8_0 *b, int two) {
    const __m256i lo = _mm256_loadu_si256((const __m256i *)b[0].qs);
    const __m256i hi = two ? _mm256_loadu_si256((const __m256i *)b[1].qs) : _mm256_setzero_si256();
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

/* s[r]: 16 int32 partials, lanes 0-7 of block b, 8-15 of block b+1 (rows
 * r >= NR are not read).  Returns lane r of *lo = Σ block b of row r, of
 * *hi = Σ block b+1.  Integer adds: exact in any order. */
INL void q8_0_sum_rows(const __m512i s[4], const int NR, __m128i *lo, __m128i *hi) {
    const __m512i z = _mm512_setzero_si512();
    const __m512i a = s[0], b = NR > 1 ? s[1] : z, c = NR > 2 ? s[2] : z, d = NR > 3 ? s[3] : z;
    /* per 128-bit lane: (a0+a2, b0+b2, a1+a3, b1+b3), the same for c, d */
    const __m512i ab = _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));
    const __m512i cd = _mm512_add_epi32(_mm512_unpacklo_epi32(c, d), _mm512_unpackhi_epi32(c, d));
    /* per 128-bit lane: (Σa, Σb, Σc, Σd) of its 4 partials */
    const __m512i q = _mm512_add_epi32(_mm512_unpacklo_epi64(ab, cd), _mm512_unpackhi_epi64(ab, cd));
    /* lanes 0+1 are block b, lanes 2+3 block b+1 */
    const __m512i t = _mm512_add_epi32(q, _mm512_shuffle_i32x4(q, q, _MM_SHUFFLE(2, 3, 0, 1)));
    *lo = _mm512_castsi512_si128(t);
    *hi = _mm512_extracti32x4_epi32(t, 2);
}

/* The NR rows' scales of blocks b (lanes 0-3) and b+1 (lanes 4-7) as f32;
 * missing rows and a missing second block read as 0 (never used). */
INL __m256 q8_0_row_scales(const uint8_t *w, size_t ws, int64_t b, const int NR, int two) {
    uint16_t d[8] = { 0 };
    DS4_UNROLL for (int r = 0; r < NR; r++) {
        const block_q8_0 *wb = (const block_q8_0 *)(w + r * ws) + b;
        d[r] = wb[0].d;
        if (two) d[4 + r] = wb[1].d;
    }
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)d));
}

INL void k_q8_0(int64_t n, const uint8_t *w, size_t ws, const uint8_t *x, size_t xs, float *y, int64_t ldy,
                const int NR, const int NC) {
    const __m512i k80 = _mm512_set1_epi8((char)0x80);
    const __m512i zero = _mm512_setzero_si512();
    __m128 acc[4];
    DS4_UNROLL for (int c = 0; c < NC; c++) acc[c] = _mm_setzero_ps();
    const int64_t nb = n / QK8_0;
    /* Prefetch distance: two row blocks ahead, and at least ~8 KB.  One
     * block ahead (the other kernels' distance) left decode at ~0.62 of a
     * 64 GB/s machine, two reached 0.72 (ds4-bench, q8_0 small model);
     * three or four were in between.  Short rows need more rows for the
     * same distance in bytes: 512-wide rows streamed at 29.7 GB/s on one
     * Zen 5 core with two row blocks (4.4 KB) ahead, against 35 for
     * 1024-wide ones.
     * The far stage (ds4_pf_far_step: the tile's bytes at twice the distance,
     * into L2, in address order) lifted small-q8 decode on 2 threads from
     * 0.75-0.81 of the roofline to 0.82-0.87 while the probe read ~50 GB/s
     * (9 interleaved pairs) and from 0.82-0.85 to 0.86-0.89 at ~69 GB/s
     * (4 pairs).  Either stage alone was worse: the far one alone, at 1x or
     * 2x, into L1 or L2, got ~190 tok/s at either memory level, where the
     * near one alone gets ~175 or ~255; far stages 3x or 4x ahead, or T2
     * instead of T1, were no better.  (Both stages now prefetch
     * non-temporally: DS4_PF_STREAM, simd_int.h.) */
    const size_t pfd = ds4_decode_pf_dist(ws, NR);
    ds4_pf_far far = ds4_pf_far_init(w, ws, NR, (nb + 1) / 2);
    for (int64_t b = 0; b < nb; b += 2) {
        const int two = b + 1 < nb;
        __m512i wu[4];
        ds4_pf_far_step(&far);
        DS4_UNROLL for (int r = 0; r < NR; r++) {
            const block_q8_0 *wb = (const block_q8_0 *)(w + r * ws) + b;
            pf((const uint8_t *)wb + pfd, 2 * sizeof(block_q8_0));
            wu[r] = _mm512_xor_si512(q8_0_qs2(wb, two), k80); /* w + 128 as u8 */
        }
        const __m256 dw = q8_0_row_scales(w, ws, b, NR, two);
        const __m128 dw0 = _mm256_castps256_ps128(dw), dw1 = _mm256_extractf128_ps(dw, 1);
        DS4_UNROLL for (int c = 0; c < NC; c++) {
            const block_q8_0 *xb = (const block_q8_0 *)(x + c * xs) + b;
            const __m512i xq = q8_0_qs2(xb, two);
            const __m512i corr = _mm512_sub_epi32(zero, ds4_dpbusd(zero, k80, xq)); /* -128·Σx */
            __m512i s[4];
            DS4_UNROLL for (int r = 0; r < NR; r++) s[r] = ds4_dpbusd(corr, wu[r], xq);
            __m128i i0, i1;
            q8_0_sum_rows(s, NR, &i0, &i1);
            const __m128 p0 = _mm_mul_ps(_mm_cvtepi32_ps(i0), _mm_mul_ps(dw0, _mm_set1_ps(h2f(xb[0].d))));
            acc[c] = _mm_add_ps(acc[c], p0);
            if (two) {
                const __m128 p1 = _mm_mul_ps(_mm_cvtepi32_ps(i1), _mm_mul_ps(dw1, _mm_set1_ps(h2f(xb[1].d))));
                acc[c] = _mm_add_ps(acc[c], p1);
            }
        }
    }
    DS4_UNROLL for (int c = 0; c < NC; c++) _mm_mask_storeu_ps(y + c * ldy, (__mmask8)((1u << NR) - 1), acc[c]);
}
DS4_DEFINE_TILE(TGT, q8_0_512, k_q8_0, 4, 4)

/* ------------------------------------------------------------------------
 * Q4_K · Q8_K (bit-identical to the reference).  Per 64-element chunk c the
 * zmm holds the 32 low nibbles (sub-block 2c) then the 32 high nibbles
 * (sub-block 2c+1), matching 64 consecutive Q8_K bytes.
 * ------------------------------------------------------------------------ */

/* 6-bit scales and mins of a Q4_K block unpacked to bytes: sc[0..7] in
 * out[0..1], m[0..7] in out[2..3] (quant_ref.c's q4_K_scale_min, 4 at once). */
INL void q4_K_unpack(const uint8_t *scales, uint32_t out[4]) {
    uint32_t u[3];
    memcpy(u, scales, 12);
    out[0] = u[0] & 0x3f3f3f3fu;
    out[1] = (u[2] & 0x0f0f0f0fu) | (((u[0] >> 6) & 0x03030303u) << 4);
    out[2] = u[1] & 0x3f3f3f3fu;
    out[3] = ((u[2] >> 4) & 0x0f0f0f0fu) | (((u[1] >> 6) & 0x03030303u) << 4);
}

/* int16 index vector: lanes 0..15 = a, 16..31 = b (for vpermw). */
INL __m512i idx_2x16(int a, int b) {
    return _mm512_mask_blend_epi16(0xFFFF0000u, _mm512_set1_epi16((short)a), _mm512_set1_epi16((short)b));
}

INL void k_q4_K(int64_t n, const uint8_t *w, size_t ws, const uint8_t *x, size_t xs, float *y, int64_t ldy,
                const int NR, const int NC) {
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    float sum[4][4];
    DS4_UNROLL for (int r = 0; r < NR; r++) DS4_UNROLL for (int c = 0; c < NC; c++) sum[r][c] = 0.0f;
    const int64_t nb = n / QK_K;
    for (int64_t i = 0; i < nb; i++) {
        __m128i sc16[4];  /* 8 sub-block scales as int16 */
        __m256i mins16[4]; /* m0 m0 m1 m1 ... m7 m7 as int16, against bsums */
        float wd[4], wdmin[4];
        DS4_UNROLL for (int r = 0; r < NR; r++) {
            const block_q4_K *a = (const block_q4_K *)(w + r * ws) + i;
            pf((const uint8_t *)a + NR * ws, sizeof *a);
            uint32_t u[4];
            q4_K_unpack(a->scales, u);
            const __m128i b = _mm_set_epi32(0, 0, (int)u[1], (int)u[0]);
            const __m128i m = _mm_set_epi32(0, 0, (int)u[3], (int)u[2]);
            sc16[r] = _mm_cvtepu8_epi16(b);
            mins16[r] = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m, m));
            wd[r] = h2f(a->d);
            wdmin[r] = h2f(a->dmin);
        }
        __m512i acc[4][4];
        DS4_UNROLL for (int r = 0; r < NR; r++) DS4_UNROLL for (int c = 0; c < NC; c++) acc[r][c] = _mm512_setzero_si512();
        for (int k = 0; k < 4; k++) {
            const __m512i idx = idx_2x16(2 * k, 2 * k + 1);
            __m512i q4[4], scv[4];
            DS4_UNROLL for (int r = 0; r < NR; r++) {
                const block_q4_K *a = (const block_q4_K *)(w + r * ws) + i;
                const __m256i v = _mm256_loadu_si256((const __m256i *)(a->qs + 32 * k));
                const __m256i lo = _mm256_and_si256(v, m4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
                q4[r] = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
                scv[r] = _mm512_permutexvar_epi16(idx, _mm512_castsi128_si512(sc16[r]));
            }
            DS4_UNROLL for (int c = 0; c < NC; c++) {
                const block_q8_K *xb = (const block_q8_K *)(x + c * xs) + i;
                const __m512i q8 = _mm512_loadu_si512((const void *)(xb->qs + 64 * k));
                DS4_UNROLL for (int r = 0; r < NR; r++)
                    acc[r][c] = ds4_dpwssd(acc[r][c], _mm512_maddubs_epi16(q4[r], q8), scv[r]);
            }
        }
        DS4_UNROLL for (int c = 0; c < NC; c++) {
            const block_q8_K *xb = (const block_q8_K *)(x + c * xs) + i;
            const __m256i bs = _mm256_loadu_si256((const __m256i *)xb->bsums);
            DS4_UNROLL for (int r = 0; r < NR; r++) {
                const int32_t isum = hsum512_epi32(acc[r][c]);
                const int32_t msum = hsum256_epi32(_mm256_madd_epi16(bs, mins16[r]));
                sum[r][c] += xb->d * wd[r] * (float)isum - xb->d * wdmin[r] * (float)msum;
            }
        }
    }
    DS4_UNROLL for (int r = 0; r < NR; r++) DS4_UNROLL for (int c = 0; c < NC; c++) y[c * ldy + r] = sum[r][c];
}
DS4_DEFINE_TILE(TGT, q4_K_512, k_q4_K, 4, 4)

/* ------------------------------------------------------------------------
 * Q2_K · Q8_K (bit-identical).  Step s covers elements 64s..64s+63: quant
 * half s/2, shifts 2j and 2j+2 (j = 2(s%2)), groups 4s..4s+3.
 * ------------------------------------------------------------------------ */

/* int16 index vector: 8 lanes each of g, g+1, g+2, g+3. */
INL __m512i idx_4x8(int g) {
    return _mm512_set_epi16(g + 3, g + 3, g + 3, g + 3, g + 3, g + 3, g + 3, g + 3, g + 2, g + 2, g + 2, g + 2,
                            g + 2, g + 2, g + 2, g + 2, g + 1, g + 1, g + 1, g + 1, g + 1, g + 1, g + 1, g + 1,
                            g, g, g, g, g, g, g, g);
}

INL void k_q2_K(int64_t n, const uint8_t *w, size_t ws, const uint8_t *x, size_t xs, float *y, int64_t ldy,
                const int NR, const int NC) {
    const __m256i m3 = _mm256_set1_epi8(3);
    const __m128i m4 = _mm_set1_epi8(0x0f);
    float sum[4][4];
    DS4_UNROLL for (int r = 0; r < NR; r++) DS4_UNROLL for (int c = 0; c < NC; c++) sum[r][c] = 0.0f;
    const int64_t nb = n / QK_K;
    for (int64_t i = 0; i < nb; i++) {
        __m256i sc16[4], m16[4];
        float wd[4], wdmin[4];
        DS4_UNROLL for (int r = 0; r < NR; r++) {
            const block_q2_K *a = (const block_q2_K *)(w + r * ws) + i;
            pf((const uint8_t *)a + NR * ws, sizeof *a);
            const __m128i s = _mm_loadu_si128((const __m128i *)a->scales);
            sc16[r] = _mm256_cvtepu8_epi16(_mm_and_si128(s, m4));
            m16[r] = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(s, 4), m4));
            wd[r] = h2f(a->d);
            wdmin[r] = h2f(a->dmin);
        }
        __m512i acc[4][4];
        DS4_UNROLL for (int r = 0; r < NR; r++) DS4_UNROLL for (int c = 0; c < NC; c++) acc[r][c] = _mm512_setzero_si512();
        for (int s = 0; s < 4; s++) {
            const __m512i idx = idx_4x8(4 * s);
            const int sh = 4 * (s & 1);
            __m512i q2[4], scv[4];
            DS4_UNROLL for (int r = 0; r < NR; r++) {
                const block_q2_K *a = (const block_q2_K *)(w + r * ws) + i;
                const __m256i v = _mm256_loadu_si256((const __m256i *)(a->qs + 32 * (s >> 1)));
                const __m256i lo = _mm256_and_si256(_mm256_srl_epi16(v, _mm_cvtsi32_si128(sh)), m3);
                const __m256i hi = _mm256_and_si256(_mm256_srl_epi16(v, _mm_cvtsi32_si128(sh + 2)), m3);
                q2[r] = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
                scv[r] = _mm512_permutexvar_epi16(idx, _mm512_castsi256_si512(sc16[r]));
            }
            DS4_UNROLL for (int c = 0; c < NC; c++) {
                const block_q8_K *xb = (const block_q8_K *)(x + c * xs) + i;
                const __m512i q8 = _mm512_loadu_si512((const void *)(xb->qs + 64 * s));
                DS4_UNROLL for (int r = 0; r < NR; r++)
                    acc[r][c] = ds4_dpwssd(acc[r][c], _mm512_maddubs_epi16(q2[r], q8), scv[r]);
            }
        }
        DS4_UNROLL for (int c = 0; c < NC; c++) {
            const block_q8_K *xb = (const block_q8_K *)(x + c * xs) + i;
            const __m256i bs = _mm256_loadu_si256((const __m256i *)xb->bsums);
            DS4_UNROLL for (int r = 0; r < NR; r++) {
                const int32_t isum = hsum512_epi32(acc[r][c]);
                const int32_t msum = hsum256_epi32(_mm256_madd_epi16(bs, m16[r]));
                const float dall = xb->d * wd[r], dmin = xb->d * wdmin[r];
                sum[r][c] += dall * (float)isum - dmin * (float)msum;
            }
        }
    }
    DS4_UNROLL for (int r = 0; r < NR; r++) DS4_UNROLL for (int c = 0; c < NC; c++) y[c * ldy + r] = sum[r][c];
}
DS4_DEFINE_TILE(TGT, q2_K_512, k_q2_K, 4, 4)

/* ------------------------------------------------------------------------
 * IQ2_XXS · Q8_K (bit-identical).  Two 32-groups per zmm: the grid bytes
 * (unsigned magnitudes) from the table, the signs as a 64-bit lane mask that
 * negates the activation bytes (|q8| <= 127, so negation is exact).
 * ------------------------------------------------------------------------ */

INL uint64_t iq2_signs4(uint32_t aux) {
    return (uint64_t)ds4_ksigns_iq2xs[aux & 127] | (uint64_t)ds4_ksigns_iq2xs[(aux >> 7) & 127] << 8 |
           (uint64_t)ds4_ksigns_iq2xs[(aux >> 14) & 127] << 16 | (uint64_t)ds4_ksigns_iq2xs[(aux >> 21) & 127] << 24;
}

INL void k_iq2_xxs(int64_t n, const uint8_t *w, size_t ws, const uint8_t *x, size_t xs, float *y, int64_t ldy,
                   const int NR, const int NC) {
    const uint64_t *G = ds4_iq2xxs_grid;
    const __m512i zero = _mm512_setzero_si512();
    float sum[4][4];
    DS4_UNROLL for (int r = 0; r < NR; r++) DS4_UNROLL for (int c = 0; c < NC; c++) sum[r][c] = 0.0f;
    const int64_t nb = n / QK_K;
    for (int64_t i = 0; i < nb; i++) {
        __m512i acc[4][4];
        DS4_UNROLL for (int r = 0; r < NR; r++) DS4_UNROLL for (int c = 0; c < NC; c++) acc[r][c] = _mm512_setzero_si512();
        for (int s = 0; s < 4; s++) {
            __m512i grid[4], ls[4];
            __mmask64 sg[4];
            DS4_UNROLL for (int r = 0; r < NR; r++) {
                const block_iq2_xxs *a = (const block_iq2_xxs *)(w + r * ws) + i;
                uint32_t q[4]; /* grids, aux of group 2s; grids, aux of group 2s+1 */
                memcpy(q, a->qs + 8 * s, sizeof q);
                if (s == 0) pf((const uint8_t *)a + NR * ws, sizeof *a);
                /* two 256-bit halves: an 8-way set_epi64 goes through memory */
                const __m256i g0 = _mm256_set_epi64x((long long)G[q[0] >> 24], (long long)G[(q[0] >> 16) & 255],
                                                     (long long)G[(q[0] >> 8) & 255], (long long)G[q[0] & 255]);
                const __m256i g1 = _mm256_set_epi64x((long long)G[q[2] >> 24], (long long)G[(q[2] >> 16) & 255],
                                                     (long long)G[(q[2] >> 8) & 255], (long long)G[q[2] & 255]);
                grid[r] = _mm512_inserti64x4(_mm512_castsi256_si512(g0), g1, 1);
                sg[r] = (__mmask64)(iq2_signs4(q[1]) | iq2_signs4(q[3]) << 32);
                ls[r] = _mm512_mask_blend_epi16(0xFFFF0000u, _mm512_set1_epi16((short)(2 * (q[1] >> 28) + 1)),
                                                _mm512_set1_epi16((short)(2 * (q[3] >> 28) + 1)));
            }
            DS4_UNROLL for (int c = 0; c < NC; c++) {
                const block_q8_K *xb = (const block_q8_K *)(x + c * xs) + i;
                const __m512i q8 = _mm512_loadu_si512((const void *)(xb->qs + 64 * s));
                DS4_UNROLL for (int r = 0; r < NR; r++) {
                    const __m512i q8s = _mm512_mask_sub_epi8(q8, sg[r], zero, q8);
                    acc[r][c] = ds4_dpwssd(acc[r][c], _mm512_maddubs_epi16(grid[r], q8s), ls[r]);
                }
            }
        }
        DS4_UNROLL for (int r = 0; r < NR; r++) {
            const float wd = h2f(((const block_iq2_xxs *)(w + r * ws) + i)->d);
            DS4_UNROLL for (int c = 0; c < NC; c++) {
                const block_q8_K *xb = (const block_q8_K *)(x + c * xs) + i;
                const float d = wd * xb->d;
                sum[r][c] += d * (float)hsum512_epi32(acc[r][c]);
            }
        }
    }
    DS4_UNROLL for (int r = 0; r < NR; r++)
        DS4_UNROLL for (int c = 0; c < NC; c++) y[c * ldy + r] = 0.125f * sum[r][c];
}
DS4_DEFINE_TILE(TGT, iq2_xxs_512, k_iq2_xxs, 4, 4)

/* ------------------------------------------------------------------------
 * Activation quantizers (bit-identical to quant_ref.c).
 * ------------------------------------------------------------------------ */

/* Lane j of the result = the largest lane of m[j] (16 inputs).  A
 * transpose-reduce: each step maxes pairs of lanes that hold the same input,
 * so the result is that input's exact maximum, and halves the lanes per input
 * while doubling the inputs per vector: 15 maxes, 20 shuffles and 10 blends
 * in all, instead of 16 horizontal reductions.  Steps 1-2 combine 128-bit
 * lanes, steps 3-4 floats inside them (steps 1 and 3 as blend + one shuffle,
 * which spares the shuffle unit); afterwards float k of 128-bit lane L holds
 * what went in at position 4k + L, so the inputs are fed in that transposed
 * order and lane j comes out as m[j]. */
INL __m512 max16x16(const __m512 m[16]) {
#define T(s) m[((s) & 3) * 4 + ((s) >> 2)]
    __m512 a[8], b[4], c[2];
    UNROLL for (int p = 0; p < 8; p++) /* 128-bit lanes 0,1: input 2p; 2,3: input 2p+1 */
        a[p] = _mm512_max_ps(_mm512_mask_blend_ps(0xFF00, T(2 * p), T(2 * p + 1)),
                             _mm512_shuffle_f32x4(T(2 * p), T(2 * p + 1), _MM_SHUFFLE(1, 0, 3, 2)));
#undef T
    DS4_UNROLL for (int p = 0; p < 4; p++) /* 128-bit lane k: input k of the four */
        b[p] = _mm512_max_ps(_mm512_shuffle_f32x4(a[2 * p], a[2 * p + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_f32x4(a[2 * p], a[2 * p + 1], _MM_SHUFFLE(3, 1, 3, 1)));
    DS4_UNROLL for (int p = 0; p < 2; p++) /* floats 0,1 of each lane from b[2p], 2,3 from b[2p+1] */
        c[p] = _mm512_max_ps(_mm512_mask_blend_ps(0xCCCC, b[2 * p], b[2 * p + 1]),
                             _mm512_shuffle_ps(b[2 * p], b[2 * p + 1], _MM_SHUFFLE(1, 0, 3, 2)));
    return _mm512_max_ps(_mm512_shuffle_ps(c[0], c[1], _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_ps(c[0], c[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

/* max(|a|, |b|) per lane in one instruction: VRANGEPS imm[1:0] = 11 selects
 * the operand of larger magnitude, imm[3:2] = 10 clears its sign bit. */
INL __m512 absmax(__m512 a, __m512 b) { return _mm512_range_ps(a, b, 0x0B); }

/* 16 floats x·id -> int8 with roundf's ties away from zero: add
 * copysignf(0.49999997f, t) and truncate.  The constant is just below one
 * half, so a fraction below 0.5 never carries into the next integer while
 * 0.5 or more always does (a sum landing halfway rounds to the even value,
 * the integer); checked over all 2^32 inputs, infinities and NaN included,
 * against the floor-and-compare form this replaced.  Saturating pack. */
INL __m128i q8_0_round16(__m512 x, __m512 id) {
    const __m512 t = _mm512_mul_ps(x, id);
    const __m512i h = _mm512_ternarylogic_epi32(_mm512_set1_epi32(INT32_MIN), _mm512_castps_si512(t),
                                                _mm512_set1_epi32(0x3effffff), 0xEA); /* (A & B) | C */
    return _mm512_cvtsepi32_epi8(_mm512_cvttps_epi32(_mm512_add_ps(t, _mm512_castsi512_ps(h))));
}

/* The scales of nb <= 16 Q8_0 blocks at once, as the reference: d = amax/127,
 * id = d != 0 ? 1/d : 0, both as vector divisions (IEEE division is
 * correctly rounded, the same as the scalar one), d to fp16 by the F16C
 * conversion, round to nearest even like ds4_f32_to_fp16 (equal on all 2^32
 * inputs).  Writes 16 of each; blocks past nb count as zero. */
INL void q8_0_scales16(const float *x, int nb, float *id, ds4_fp16 *dh) {
    __m512 m[16];
    _Pragma("GCC unroll 16") for (int j = 0; j < 16; j++)
        m[j] = j < nb ? absmax(_mm512_loadu_ps(x + 32 * j), _mm512_loadu_ps(x + 32 * j + 16)) : _mm512_setzero_ps();
    const __m512 d = _mm512_div_ps(max16x16(m), _mm512_set1_ps(127.0f));
    const __mmask16 nz = _mm512_cmp_ps_mask(d, _mm512_setzero_ps(), _CMP_NEQ_UQ);
    _mm512_storeu_ps(id, _mm512_maskz_div_ps(nz, _mm512_set1_ps(1.0f), d));
    _mm256_storeu_si256((__m256i *)dh, _mm512_cvtps_ph(d, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

/* One block's 32 quants. */
INL void q8_0_quants16(const float *x, float id, int8_t *qs) {
    const __m512 vid = _mm512_set1_ps(id);
    _mm_storeu_si128((__m128i *)qs, q8_0_round16(_mm512_loadu_ps(x), vid));
    _mm_storeu_si128((__m128i *)(qs + 16), q8_0_round16(_mm512_loadu_ps(x + 16), vid));
}

DS4_DEFINE_Q8_0_FROM_FLOAT(TGT, q8_0_from_float_512, 16, q8_0_scales16, q8_0_quants16)

/* f32 -> Q8_K, per block as the reference: iscale = -127/max for the
 * first element of largest magnitude (signed), q = RNE(iscale·x) clamped to
 * 127 (the conversion's default rounding is the reference's nearest_int),
 * d = 1/iscale, sums of 16; the driver is simd_tile.h's
 * DS4_DEFINE_Q8K_FROM_FLOAT. */

/* iscale of one block, 0 for an all-zero block.  The signed extreme comes
 * from the block's max and min: only when both reach the largest magnitude
 * (+a and -a in one block, rare) does the first position decide, and only
 * then is it searched for. */
INL float q8_K_iscale(const float *x) {
    __m512 hi[4], lo[4];
    DS4_UNROLL for (int k = 0; k < 4; k++) hi[k] = lo[k] = _mm512_loadu_ps(x + 16 * k);
    _Pragma("GCC unroll 16") for (int j = 4; j < 16; j++) {
        const __m512 v = _mm512_loadu_ps(x + 16 * j);
        hi[j & 3] = _mm512_max_ps(hi[j & 3], v);
        lo[j & 3] = _mm512_min_ps(lo[j & 3], v);
    }
    const float mx = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(hi[0], hi[1]), _mm512_max_ps(hi[2], hi[3])));
    const float mn = _mm512_reduce_min_ps(_mm512_min_ps(_mm512_min_ps(lo[0], lo[1]), _mm512_min_ps(lo[2], lo[3])));
    const float amax = mx > -mn ? mx : -mn;
    if (amax == 0.0f) return 0.0f;
    float max = mx == amax ? mx : mn;
    if (mx == -mn)
        for (int j = 0; j < QK_K; j += 16) {
            const __mmask16 m = _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_loadu_ps(x + j)), _mm512_set1_ps(amax), _CMP_EQ_OQ);
            if (m) { max = x[j + __builtin_ctz(m)]; break; }
        }
    return -127.0f / max;
}

/* Quants and sums of one block.  Four quant vectors at a time go to bytes
 * with the in-lane saturating packs (as one int32 -> int8 saturation; |q| <=
 * 127 anyway), which leave dword 4L + k holding bytes 4L..4L+3 of vector k:
 * a permute puts them in order for the store, and before it VPDPBUSD with
 * ones sums each dword's 4 bytes, so the 4 dwords of vector k across the
 * 128-bit lanes add up to sum k; two transpose steps over the four 64-byte
 * groups give all 16 sums in order. */
INL void q8_K_quant(const float *x, float iscale, block_q8_K *b) {
    const __m512 vs = _mm512_set1_ps(iscale);
    __m512i s[4];
    DS4_UNROLL for (int g = 0; g < 4; g++) {
        __m512i q[4];
        DS4_UNROLL for (int k = 0; k < 4; k++)
            q[k] = _mm512_min_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(vs, _mm512_loadu_ps(x + 64 * g + 16 * k))),
                                    _mm512_set1_epi32(127));
        const __m512i p = _mm512_packs_epi16(_mm512_packs_epi32(q[0], q[1]), _mm512_packs_epi32(q[2], q[3]));
        _mm512_storeu_si512(b->qs + 64 * g,
                            _mm512_permutexvar_epi32(_mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), p));
        s[g] = ds4_dpbusd(_mm512_setzero_si512(), _mm512_set1_epi8(1), p);
    }
    __m512i u[2]; /* 128-bit lanes 0,1: group 2h, 2,3: group 2h+1 */
    DS4_UNROLL for (int h = 0; h < 2; h++)
        u[h] = _mm512_add_epi32(_mm512_mask_blend_epi32(0xFF00, s[2 * h], s[2 * h + 1]),
                                _mm512_shuffle_i32x4(s[2 * h], s[2 * h + 1], _MM_SHUFFLE(1, 0, 3, 2)));
    const __m512i sums = _mm512_add_epi32(_mm512_shuffle_i32x4(u[0], u[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                          _mm512_shuffle_i32x4(u[0], u[1], _MM_SHUFFLE(3, 1, 3, 1)));
    _mm256_storeu_si256((__m256i *)b->bsums, _mm512_cvtepi32_epi16(sums));
    b->d = 1.0f / iscale;
}

DS4_DEFINE_Q8K_FROM_FLOAT(TGT, q8_K_from_float_512, q8_K_iscale, q8_K_quant)

/* ------------------------------------------------------------------------
 * f32 helpers
 * ------------------------------------------------------------------------ */

TGT static float dot_512(const float *a, const float *b, int64_t n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
    }
    for (; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

TGT static void axpy_512(float *y, float a, const float *x, int64_t n) {
    const __m512 va = _mm512_set1_ps(a);
    int64_t i = 0;
    /* whole vectors without masks, then one masked tail (mul, add: as the
     * scalar loop).  With a mask made at every step the MoE sum (4 KB rows
     * scattered over ~13 MB) took ~6.8 us a small-q2 prefill token, ~4.8
     * this way (vec_avx512.c's FOR_STEPS) */
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, _mm512_add_ps(_mm512_loadu_ps(y + i), _mm512_mul_ps(va, _mm512_loadu_ps(x + i))));
    if (i < n) {
        const __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        const __m512 p = _mm512_mul_ps(va, _mm512_maskz_loadu_ps(m, x + i));
        _mm512_mask_storeu_ps(y + i, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, y + i), p));
    }
}

TGT static double sumsq_512(const float *x, int64_t n) {
    /* eight chains: with two, the FMA latency bound it (HCPre's norm of the
     * 4·embd-wide streams, ~1.4% of a small-q2 prefill) */
    __m512d s[8];
    _Pragma("GCC unroll 8") for (int k = 0; k < 8; k++) s[k] = _mm512_setzero_pd();
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) /* x² is exact in double: fma == mul + add */
        _Pragma("GCC unroll 8") for (int k = 0; k < 8; k++) {
            const __m512d a = _mm512_cvtps_pd(_mm256_loadu_ps(x + i + 8 * k));
            s[k] = _mm512_fmadd_pd(a, a, s[k]);
        }
    for (; i + 8 <= n; i += 8) {
        const __m512d a = _mm512_cvtps_pd(_mm256_loadu_ps(x + i));
        s[0] = _mm512_fmadd_pd(a, a, s[0]);
    }
    const __m512d t = _mm512_add_pd(_mm512_add_pd(_mm512_add_pd(s[0], s[1]), _mm512_add_pd(s[2], s[3])),
                                    _mm512_add_pd(_mm512_add_pd(s[4], s[5]), _mm512_add_pd(s[6], s[7])));
    double r = _mm512_reduce_add_pd(t);
    for (; i < n; i++) r += (double)x[i] * x[i];
    return r;
}

void ds4_simd_install_avx512(ds4_type_traits *t, ds4_vec_ops *v) {
#define SET(T, NAME) (t[T].vec_dot = NAME##_dot, t[T].vec_dot_tile = NAME##_tile)
    SET(DS4_TYPE_F32, f32_512);
    SET(DS4_TYPE_BF16, bf16_512);
    SET(DS4_TYPE_Q8_0, q8_0_512);
    SET(DS4_TYPE_Q4_K, q4_K_512);
    SET(DS4_TYPE_Q2_K, q2_K_512);
    SET(DS4_TYPE_IQ2_XXS, iq2_xxs_512);
#undef SET
    t[DS4_TYPE_Q8_0].from_float = q8_0_from_float_512;
    t[DS4_TYPE_Q8_K].from_float = q8_K_from_float_512;
    v->dot = dot_512;
    v->axpy = axpy_512;
    v->sumsq = sumsq_512;
}

#else /* not x86 */

#include "quant/simd_int.h"
void ds4_simd_install_avx512(ds4_type_traits *t, ds4_vec_ops *v) { (void)t; (void)v; }

#endif
