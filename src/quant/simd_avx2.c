/* AVX2 + FMA + F16C kernels: the "avx2" dispatch level.
 *
 * Same contract and structure as simd_avx512.c (see simd.h): per-function
 * target attributes, one NR x NC micro-kernel per type whose 1x1 case is
 * vec_dot.  With 16 ymm registers the tiles are smaller (4x2 for the float
 * types, 2x2 for the integer ones).  Without VNNI the integer dots use
 * maddubs (u8 x s8 -> s16 pairs) then madd (s16 x s16 -> s32):
 *   Q8_0    sign trick: |w| times x with w's sign, exact while x != -128
 *           (our Q8_0 encoder never emits -128; |q| <= 127);
 *   K/IQ2   weights are non-negative, so maddubs is exact and the madd
 *           multiplies in the 16-bit (sub-)block scale. */
#if defined(__x86_64__) || defined(__i386__)

#include "quant/quant.h"
#include "quant/simd_int.h"
#include "quant/simd_tile.h"
#include "quant/iq2_tables.h"

#include <immintrin.h>
#include <string.h>

#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif

#define TGT __attribute__((target("avx2,fma,f16c")))
#define INL static inline __attribute__((always_inline)) TGT

INL float h2f(ds4_fp16 h) { return _cvtsh_ss(h); }

/* Prefetches never fault; the distance is ds4_decode_pf_dist's (two row
 * blocks and ~8 KB: one block, 2.2 KB on 1024-wide Q8_0 rows, left the
 * stream waiting on memory). */
INL void pf(const uint8_t *p, int len) {
    for (int o = 0; o < len; o += 64) _mm_prefetch((const char *)p + o, DS4_PF_STREAM);
}

INL int32_t hsum_epi32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
}

INL float hsum_ps(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* ------------------------------------------------------------------------
 * F32 / BF16 · f32: one 4-lane double accumulator per pair; a tail of
 * n % 8 goes through zero-padded copies so every pair sees the same ops.
 * ------------------------------------------------------------------------ */

enum { KF32, KBF16 };

INL __m256 load_w8(const void *p, int kind) {
    if (kind == KF32) return _mm256_loadu_ps((const float *)p);
    const __m128i h = _mm_loadu_si128((const __m128i *)p);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

INL double hsum_pd(__m256d v) {
    const __m128d h = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
}

/* Exact products summed in double lanes (see simd_avx512.c). */
INL void k_float(int64_t n, const uint8_t *w, size_t ws, const uint8_t *x, size_t xs, float *y, int64_t ldy,
                 const int NR, const int NC, const int kind) {
    const size_t esz = kind == KF32 ? 4 : 2;
    __m256d acc[4][4];
    DS4_UNROLL for (int r = 0; r < NR; r++) DS4_UNROLL for (int c = 0; c < NC; c++) acc[r][c] = _mm256_setzero_pd();
    for (int64_t i = 0; i < n; i += 8) {
        const size_t rem = n - i < 8 ? (size_t)(n - i) : 8;
        __m256d xl[4], xh[4];
        DS4_UNROLL for (int c = 0; c < NC; c++) {
            const float *xp = (const float *)(x + c * xs) + i;
            __m256 xv;
            if (rem == 8) xv = _mm256_loadu_ps(xp);
            else { float buf[8] = { 0 }; memcpy(buf, xp, rem * sizeof(float)); xv = _mm256_loadu_ps(buf); }
            xl[c] = _mm256_cvtps_pd(_mm256_castps256_ps128(xv));
            xh[c] = _mm256_cvtps_pd(_mm256_extractf128_ps(xv, 1));
        }
        DS4_UNROLL for (int r = 0; r < NR; r++) {
            const uint8_t *wp = w + r * ws + (size_t)i * esz;
            __m256 wv;
            if (rem == 8) wv = load_w8(wp, kind);
            else { uint8_t buf[32] = { 0 }; memcpy(buf, wp, rem * esz); wv = load_w8(buf, kind); }
            const __m256d wl = _mm256_cvtps_pd(_mm256_castps256_ps128(wv));
            const __m256d wh = _mm256_cvtps_pd(_mm256_extractf128_ps(wv, 1));
            DS4_UNROLL for (int c = 0; c < NC; c++)
                acc[r][c] = _mm256_fmadd_pd(wh, xh[c], _mm256_fmadd_pd(wl, xl[c], acc[r][c]));
        }
    }
    DS4_UNROLL for (int r = 0; r < NR; r++)
        DS4_UNROLL for (int c = 0; c < NC; c++) y[c * ldy + r] = (float)hsum_pd(acc[r][c]);
}

#define K_F32(n, w, ws, x, xs, y, ldy, R, C) k_float(n, w, ws, x, xs, y, ldy, R, C, KF32)
#define K_BF16(n, w, ws, x, xs, y, ldy, R, C) k_float(n, w, ws, x, xs, y, ldy, R, C, KBF16)
DS4_DEFINE_TILE(TGT, f32_avx2, K_F32, 4, 2)
DS4_DEFINE_TILE(TGT, bf16_avx2, K_BF16, 4, 2)

/* ------------------------------------------------------------------------
 * F16 · F32 in fp32 lanes (as dec_avx512.c does for the avx512 level; the
 * error bound and its reasoning are the same: products rounded once inside
 * the FMA, per lane a chain of ~n/8 of them, then 3 tree adds).
 *
 * Order, the same for every pair whatever tile holds it: one accumulator of
 * 8 float lanes per (row, column); chunk j (elements 8j .. 8j + 7) is added
 * by one FMA, lane l taking element 8j + l, j in order; a last chunk of
 * fewer than 8 elements is read from zero-padded copies.  Then lanes
 * i + i+4, i + i+2, i + i+1 (f16_hsum1 for one pair, f16_hsum8 for up to 8
 * at once by transpose-adds).  So prefill tiles and decode dots give the
 * same bits.
 *
 * Why: the double lanes cost two conversions and two FMAs per 8 elements
 * and a 4-wide FMA chain; the HC mixes, the compressors, the indexer and
 * the router are F16 (15% of a q2 decode's bytes, most of its attention
 * projections in prefill).  Zen 5, AVX2 level, small-q2, 2 threads: see
 * the commit; bench/kernels f16 avx2 rows.
 * ------------------------------------------------------------------------ */

INL __m256 f16w8(const uint16_t *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }

INL float f16_hsum1(__m256 a) {
    const __m128 s1 = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    const __m128 s2 = _mm_add_ps(s1, _mm_movehl_ps(s1, s1));
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
}

/* Lane k <- Σ a[k] for 8 accumulators, each by f16_hsum1's tree: stage 1
 * pairs a[k] with a[k+4] (low half: a[k]'s i + i+4, high half: a[k+4]'s),
 * stage 2 a[k] with a[k+2], stage 3 leaves lanes 1 and 2 (5 and 6)
 * swapped, which the input order undoes. */
INL __m256 f16_hsum8(const __m256 *a) {
    const __m256 b[8] = { a[0], a[2], a[1], a[3], a[4], a[6], a[5], a[7] };
    __m256 x[4], y[2];
    DS4_UNROLL for (int k = 0; k < 4; k++)
        x[k] = _mm256_add_ps(_mm256_blend_ps(b[k], b[k + 4], 0xF0), _mm256_permute2f128_ps(b[k], b[k + 4], 0x21));
    DS4_UNROLL for (int k = 0; k < 2; k++)
        y[k] = _mm256_add_ps(_mm256_shuffle_ps(x[k], x[k + 2], _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm256_shuffle_ps(x[k], x[k + 2], _MM_SHUFFLE(3, 2, 3, 2)));
    return _mm256_add_ps(_mm256_shuffle_ps(y[0], y[1], _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm256_shuffle_ps(y[0], y[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

INL void k_f16(int64_t n, const uint8_t *w, size_t ws, const uint8_t *x, size_t xs, float *y, int64_t ldy,
               const int NR, const int NC) {
    const uint16_t *wr[4];
    const float *xc[4];
    __m256 acc[4][4];
    DS4_UNROLL for (int r = 0; r < NR; r++) wr[r] = (const uint16_t *)(w + r * ws);
    DS4_UNROLL for (int c = 0; c < NC; c++) xc[c] = (const float *)(x + c * xs);
    DS4_UNROLL for (int r = 0; r < NR; r++) DS4_UNROLL for (int c = 0; c < NC; c++) acc[r][c] = _mm256_setzero_ps();
    /* decode streams the rows: prefetch as dec_avx512.c's F16 kernel */
    const size_t pfd = NC > 1 || ws == 0 ? 0 : (NR * ws >= 8192 ? (size_t)NR : (8192 + ws - 1) / ws) * ws;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) { /* a line of every row per step */
        if (pfd) DS4_UNROLL for (int r = 0; r < NR; r++) _mm_prefetch((const char *)(wr[r] + i) + pfd, _MM_HINT_T0);
        DS4_UNROLL for (int k = 0; k < 32; k += 8) {
            __m256 xv[4];
            DS4_UNROLL for (int c = 0; c < NC; c++) xv[c] = _mm256_loadu_ps(xc[c] + i + k);
            DS4_UNROLL for (int r = 0; r < NR; r++) {
                const __m256 wv = f16w8(wr[r] + i + k);
                DS4_UNROLL for (int c = 0; c < NC; c++) acc[r][c] = _mm256_fmadd_ps(wv, xv[c], acc[r][c]);
            }
        }
    }
    for (; i < n; i += 8) { /* the same chunks; a partial one from zero-padded copies */
        const int64_t rem = n - i < 8 ? n - i : 8;
        __m256 xv[4];
        DS4_UNROLL for (int c = 0; c < NC; c++) {
            if (rem == 8) { xv[c] = _mm256_loadu_ps(xc[c] + i); continue; }
            float buf[8] = { 0 };
            memcpy(buf, xc[c] + i, (size_t)rem * sizeof(float));
            xv[c] = _mm256_loadu_ps(buf);
        }
        DS4_UNROLL for (int r = 0; r < NR; r++) {
            __m256 wv;
            if (rem == 8) wv = f16w8(wr[r] + i);
            else { uint16_t buf[8] = { 0 }; memcpy(buf, wr[r] + i, (size_t)rem * 2); wv = f16w8(buf); }
            DS4_UNROLL for (int c = 0; c < NC; c++) acc[r][c] = _mm256_fmadd_ps(wv, xv[c], acc[r][c]);
        }
    }
    if (NR * NC == 1) {
        y[0] = f16_hsum1(acc[0][0]);
        return;
    }
    __m256 a8[8];
    float s[8];
    DS4_UNROLL for (int k = 0; k < 8; k++) a8[k] = _mm256_setzero_ps();
    DS4_UNROLL for (int c = 0; c < NC; c++) DS4_UNROLL for (int r = 0; r < NR; r++) a8[4 * c + r] = acc[r][c];
    _mm256_storeu_ps(s, f16_hsum8(a8));
    DS4_UNROLL for (int c = 0; c < NC; c++) DS4_UNROLL for (int r = 0; r < NR; r++) y[c * ldy + r] = s[4 * c + r];
}
DS4_DEFINE_TILE(TGT, f16_avx2, k_f16, 4, 2)

/* ------------------------------------------------------------------------
 * Q8_0 · Q8_0, bit-identical to the reference (canonical order, see
 * simd_avx512.c): per block an exact int32 sum, then
 * sum += (float)isum * (d_w * d_x) in f32, blocks in order, mul then add.
 * The 2x2 (row, column) pairs of a tile run in the 4 lanes of one xmm
 * chain: per block, each pair's 8 int32 partials (maddubs + madd) are
 * folded by a hadd tree into lane c*2 + r.  One column (decode, vec_dot)
 * puts two blocks in the lanes instead (k_q8_0_col).
 * ------------------------------------------------------------------------ */

/* Lane i of the result = Σ of the 8 int32 lanes of v[i] (exact). */
INL __m128i q8_0_sum4(__m256i a, __m256i b, __m256i c, __m256i d) {
    const __m256i t = _mm256_hadd_epi32(_mm256_hadd_epi32(a, b), _mm256_hadd_epi32(c, d));
    return _mm_add_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256(t, 1));
}

/* Row r's block b against the column's block: the 8 int32 partials. */
INL __m256i q8_0_part(const block_q8_0 *wb, __m256i xq, __m256i ones) {
    const __m256i wq = _mm256_loadu_si256((const __m256i *)wb->qs);
    return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(wq), _mm256_sign_epi8(xq, wq)), ones);
}

/* One column (decode): the 4 lanes are (row, block) for NR <= 2 rows and
 * the blocks b, b+1; the chain adds block b's lanes, then block b+1's. */
INL void k_q8_0_col(int64_t n, const uint8_t *w, size_t ws, const uint8_t *x, float *y, const int NR) {
    const size_t pfd = ds4_decode_pf_dist(ws, NR);
    const __m256i ones = _mm256_set1_epi16(1);
    const __m256i z = _mm256_setzero_si256();
    const block_q8_0 *w0 = (const block_q8_0 *)w, *w1 = (const block_q8_0 *)(w + ws), *xb = (const block_q8_0 *)x;
    __m128 acc = _mm_setzero_ps(); /* lanes 0, 1: rows 0, 1 */
    const int64_t nb = n / QK8_0;
    int64_t b = 0;
    for (; b + 1 < nb; b += 2) {
        pf((const uint8_t *)(w0 + b) + pfd, 2 * sizeof *w0);
        if (NR > 1) pf((const uint8_t *)(w1 + b) + pfd, 2 * sizeof *w1);
        const __m256i x0 = _mm256_loadu_si256((const __m256i *)xb[b].qs);
        const __m256i x1 = _mm256_loadu_si256((const __m256i *)xb[b + 1].qs);
        const __m128i isum = q8_0_sum4(q8_0_part(w0 + b, x0, ones), NR > 1 ? q8_0_part(w1 + b, x0, ones) : z,
                                       q8_0_part(w0 + b + 1, x1, ones), NR > 1 ? q8_0_part(w1 + b + 1, x1, ones) : z);
        const float dx0 = h2f(xb[b].d), dx1 = h2f(xb[b + 1].d);
        const __m128 dw = _mm_setr_ps(h2f(w0[b].d), NR > 1 ? h2f(w1[b].d) : 0.0f, h2f(w0[b + 1].d),
                                      NR > 1 ? h2f(w1[b + 1].d) : 0.0f);
        const __m128 s = _mm_mul_ps(_mm_cvtepi32_ps(isum), _mm_mul_ps(dw, _mm_setr_ps(dx0, dx0, dx1, dx1)));
        acc = _mm_add_ps(acc, s);                    /* block b (lanes 2, 3: unused) */
        acc = _mm_add_ps(acc, _mm_movehl_ps(s, s)); /* then block b+1 */
    }
    if (b < nb) { /* odd count: the last block alone */
        const __m256i x0 = _mm256_loadu_si256((const __m256i *)xb[b].qs);
        const __m128i isum = q8_0_sum4(q8_0_part(w0 + b, x0, ones), NR > 1 ? q8_0_part(w1 + b, x0, ones) : z, z, z);
        const float dx0 = h2f(xb[b].d);
        const __m128 dw = _mm_setr_ps(h2f(w0[b].d), NR > 1 ? h2f(w1[b].d) : 0.0f, 0.0f, 0.0f);
        acc = _mm_add_ps(acc, _mm_mul_ps(_mm_cvtepi32_ps(isum), _mm_mul_ps(dw, _mm_set1_ps(dx0))));
    }
    y[0] = _mm_cvtss_f32(acc);
    if (NR > 1) y[1] = _mm_cvtss_f32(_mm_shuffle_ps(acc, acc, 1));
}

INL void k_q8_0(int64_t n, const uint8_t *w, size_t ws, const uint8_t *x, size_t xs, float *y, int64_t ldy,
                const int NR, const int NC) {
    if (NC == 1) { /* decode: fill the lanes with block pairs instead */
        k_q8_0_col(n, w, ws, x, y, NR);
        return;
    }
    const size_t pfd = ds4_decode_pf_dist(ws, NR);
    const __m256i ones = _mm256_set1_epi16(1);
    __m128 acc = _mm_setzero_ps(); /* lane c*2 + r */
    const int64_t nb = n / QK8_0;
    for (int64_t b = 0; b < nb; b++) {
        __m256i wq[2], aw[2];
        float dw[2] = { 0.0f, 0.0f }, dx[2] = { 0.0f, 0.0f };
        DS4_UNROLL for (int r = 0; r < NR; r++) {
            const block_q8_0 *wb = (const block_q8_0 *)(w + r * ws) + b;
            if (!(b & 1)) pf((const uint8_t *)wb + pfd, 2 * sizeof *wb);
            wq[r] = _mm256_loadu_si256((const __m256i *)wb->qs);
            aw[r] = _mm256_abs_epi8(wq[r]);
            dw[r] = h2f(wb->d);
        }
        __m256i p[4] = { _mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(),
                         _mm256_setzero_si256() };
        DS4_UNROLL for (int c = 0; c < NC; c++) {
            const block_q8_0 *xb = (const block_q8_0 *)(x + c * xs) + b;
            const __m256i xq = _mm256_loadu_si256((const __m256i *)xb->qs);
            dx[c] = h2f(xb->d);
            DS4_UNROLL for (int r = 0; r < NR; r++)
                p[c * 2 + r] = _mm256_madd_epi16(_mm256_maddubs_epi16(aw[r], _mm256_sign_epi8(xq, wq[r])), ones);
        }
        const __m128 d = _mm_mul_ps(_mm_setr_ps(dw[0], dw[1], dw[0], dw[1]), _mm_setr_ps(dx[0], dx[0], dx[1], dx[1]));
        const __m128i isum = q8_0_sum4(p[0], p[1], p[2], p[3]);
        acc = _mm_add_ps(acc, _mm_mul_ps(_mm_cvtepi32_ps(isum), d));
    }
    float out[4];
    _mm_storeu_ps(out, acc);
    DS4_UNROLL for (int c = 0; c < NC; c++) DS4_UNROLL for (int r = 0; r < NR; r++) y[c * ldy + r] = out[c * 2 + r];
}
DS4_DEFINE_TILE(TGT, q8_0_avx2, k_q8_0, 2, 2)

/* ------------------------------------------------------------------------
 * Q4_K · Q8_K (bit-identical): per 64-chunk, low nibbles x sub-block 2k,
 * high nibbles x sub-block 2k+1, each madd'ed with its 6-bit scale.
 * ------------------------------------------------------------------------ */

INL void q4_K_unpack(const uint8_t *scales, uint8_t out[16]) {
    uint32_t u[3], o[4];
    memcpy(u, scales, 12);
    o[0] = u[0] & 0x3f3f3f3fu;
    o[1] = (u[2] & 0x0f0f0f0fu) | (((u[0] >> 6) & 0x03030303u) << 4);
    o[2] = u[1] & 0x3f3f3f3fu;
    o[3] = ((u[2] >> 4) & 0x0f0f0f0fu) | (((u[1] >> 6) & 0x03030303u) << 4);
    memcpy(out, o, 16); /* sc[0..7], m[0..7] */
}

INL void k_q4_K(int64_t n, const uint8_t *w, size_t ws, const uint8_t *x, size_t xs, float *y, int64_t ldy,
                const int NR, const int NC) {
    const size_t pfd = ds4_decode_pf_dist(ws, NR);
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    float sum[4][4];
    DS4_UNROLL for (int r = 0; r < NR; r++) DS4_UNROLL for (int c = 0; c < NC; c++) sum[r][c] = 0.0f;
    const int64_t nb = n / QK_K;
    for (int64_t i = 0; i < nb; i++) {
        uint8_t sm[4][16];
        __m256i mins16[4];
        float wd[4], wdmin[4];
        DS4_UNROLL for (int r = 0; r < NR; r++) {
            const block_q4_K *a = (const block_q4_K *)(w + r * ws) + i;
            pf((const uint8_t *)a + pfd, sizeof *a);
            q4_K_unpack(a->scales, sm[r]);
            const __m128i m = _mm_loadl_epi64((const __m128i *)(sm[r] + 8));
            mins16[r] = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m, m));
            wd[r] = h2f(a->d);
            wdmin[r] = h2f(a->dmin);
        }
        __m256i acc[4][4];
        DS4_UNROLL for (int r = 0; r < NR; r++) DS4_UNROLL for (int c = 0; c < NC; c++) acc[r][c] = _mm256_setzero_si256();
        for (int k = 0; k < 4; k++) {
            __m256i lo[4], hi[4], s1[4], s2[4];
            DS4_UNROLL for (int r = 0; r < NR; r++) {
                const block_q4_K *a = (const block_q4_K *)(w + r * ws) + i;
                const __m256i v = _mm256_loadu_si256((const __m256i *)(a->qs + 32 * k));
                lo[r] = _mm256_and_si256(v, m4);
                hi[r] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
                s1[r] = _mm256_set1_epi16(sm[r][2 * k]);
                s2[r] = _mm256_set1_epi16(sm[r][2 * k + 1]);
            }
            DS4_UNROLL for (int c = 0; c < NC; c++) {
                const block_q8_K *xb = (const block_q8_K *)(x + c * xs) + i;
                const __m256i qa = _mm256_loadu_si256((const __m256i *)(xb->qs + 64 * k));
                const __m256i qb = _mm256_loadu_si256((const __m256i *)(xb->qs + 64 * k + 32));
                DS4_UNROLL for (int r = 0; r < NR; r++) {
                    const __m256i pa = _mm256_madd_epi16(_mm256_maddubs_epi16(lo[r], qa), s1[r]);
                    const __m256i pb = _mm256_madd_epi16(_mm256_maddubs_epi16(hi[r], qb), s2[r]);
                    acc[r][c] = _mm256_add_epi32(acc[r][c], _mm256_add_epi32(pa, pb));
                }
            }
        }
        DS4_UNROLL for (int c = 0; c < NC; c++) {
            const block_q8_K *xb = (const block_q8_K *)(x + c * xs) + i;
            const __m256i bs = _mm256_loadu_si256((const __m256i *)xb->bsums);
            DS4_UNROLL for (int r = 0; r < NR; r++) {
                const int32_t isum = hsum_epi32(acc[r][c]);
                const int32_t msum = hsum_epi32(_mm256_madd_epi16(bs, mins16[r]));
                sum[r][c] += xb->d * wd[r] * (float)isum - xb->d * wdmin[r] * (float)msum;
            }
        }
    }
    DS4_UNROLL for (int r = 0; r < NR; r++) DS4_UNROLL for (int c = 0; c < NC; c++) y[c * ldy + r] = sum[r][c];
}
DS4_DEFINE_TILE(TGT, q4_K_avx2, k_q4_K, 2, 2)

/* ------------------------------------------------------------------------
 * Q2_K · Q8_K (bit-identical): step s = 32 elements (half s/4, shift
 * 2(s%4)), groups 2s and 2s+1 in the low and high 8 int16 lanes.
 * ------------------------------------------------------------------------ */

INL void k_q2_K(int64_t n, const uint8_t *w, size_t ws, const uint8_t *x, size_t xs, float *y, int64_t ldy,
                const int NR, const int NC) {
    const size_t pfd = ds4_decode_pf_dist(ws, NR);
    const __m256i m3 = _mm256_set1_epi8(3);
    const __m128i m4 = _mm_set1_epi8(0x0f);
    float sum[4][4];
    DS4_UNROLL for (int r = 0; r < NR; r++) DS4_UNROLL for (int c = 0; c < NC; c++) sum[r][c] = 0.0f;
    const int64_t nb = n / QK_K;
    for (int64_t i = 0; i < nb; i++) {
        __m256i m16[4];
        int16_t sc[4][16];
        float wd[4], wdmin[4];
        DS4_UNROLL for (int r = 0; r < NR; r++) {
            const block_q2_K *a = (const block_q2_K *)(w + r * ws) + i;
            pf((const uint8_t *)a + pfd, sizeof *a);
            const __m128i s = _mm_loadu_si128((const __m128i *)a->scales);
            _mm256_storeu_si256((__m256i *)sc[r], _mm256_cvtepu8_epi16(_mm_and_si128(s, m4)));
            m16[r] = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(s, 4), m4));
            wd[r] = h2f(a->d);
            wdmin[r] = h2f(a->dmin);
        }
        __m256i acc[4][4];
        DS4_UNROLL for (int r = 0; r < NR; r++) DS4_UNROLL for (int c = 0; c < NC; c++) acc[r][c] = _mm256_setzero_si256();
        for (int s = 0; s < 8; s++) {
            const __m128i sh = _mm_cvtsi32_si128(2 * (s & 3));
            __m256i q2[4], scv[4];
            DS4_UNROLL for (int r = 0; r < NR; r++) {
                const block_q2_K *a = (const block_q2_K *)(w + r * ws) + i;
                const __m256i v = _mm256_loadu_si256((const __m256i *)(a->qs + 32 * (s >> 2)));
                q2[r] = _mm256_and_si256(_mm256_srl_epi16(v, sh), m3);
                scv[r] = _mm256_set_m128i(_mm_set1_epi16(sc[r][2 * s + 1]), _mm_set1_epi16(sc[r][2 * s]));
            }
            DS4_UNROLL for (int c = 0; c < NC; c++) {
                const block_q8_K *xb = (const block_q8_K *)(x + c * xs) + i;
                const __m256i q8 = _mm256_loadu_si256((const __m256i *)(xb->qs + 32 * s));
                DS4_UNROLL for (int r = 0; r < NR; r++)
                    acc[r][c] = _mm256_add_epi32(acc[r][c], _mm256_madd_epi16(_mm256_maddubs_epi16(q2[r], q8), scv[r]));
            }
        }
        DS4_UNROLL for (int c = 0; c < NC; c++) {
            const block_q8_K *xb = (const block_q8_K *)(x + c * xs) + i;
            const __m256i bs = _mm256_loadu_si256((const __m256i *)xb->bsums);
            DS4_UNROLL for (int r = 0; r < NR; r++) {
                const int32_t isum = hsum_epi32(acc[r][c]);
                const int32_t msum = hsum_epi32(_mm256_madd_epi16(bs, m16[r]));
                const float dall = xb->d * wd[r], dmin = xb->d * wdmin[r];
                sum[r][c] += dall * (float)isum - dmin * (float)msum;
            }
        }
    }
    DS4_UNROLL for (int r = 0; r < NR; r++) DS4_UNROLL for (int c = 0; c < NC; c++) y[c * ldy + r] = sum[r][c];
}
DS4_DEFINE_TILE(TGT, q2_K_avx2, k_q2_K, 2, 2)

/* ------------------------------------------------------------------------
 * IQ2_XXS · Q8_K (bit-identical): per 32-group, grid bytes from the table
 * and the signs as ±1 bytes (vpsignb on the activations).
 * ------------------------------------------------------------------------ */

INL void k_iq2_xxs(int64_t n, const uint8_t *w, size_t ws, const uint8_t *x, size_t xs, float *y, int64_t ldy,
                   const int NR, const int NC) {
    const size_t pfd = ds4_decode_pf_dist(ws, NR);
    const uint64_t *G = ds4_iq2xxs_grid, *S = ds4_iq2_sign_pm1;
    float sum[4][4];
    DS4_UNROLL for (int r = 0; r < NR; r++) DS4_UNROLL for (int c = 0; c < NC; c++) sum[r][c] = 0.0f;
    const int64_t nb = n / QK_K;
    for (int64_t i = 0; i < nb; i++) {
        __m256i acc[4][4];
        DS4_UNROLL for (int r = 0; r < NR; r++) DS4_UNROLL for (int c = 0; c < NC; c++) acc[r][c] = _mm256_setzero_si256();
        for (int g = 0; g < 8; g++) {
            __m256i grid[4], sgn[4], ls[4];
            DS4_UNROLL for (int r = 0; r < NR; r++) {
                const block_iq2_xxs *a = (const block_iq2_xxs *)(w + r * ws) + i;
                uint32_t q[2];
                memcpy(q, a->qs + 4 * g, sizeof q);
                if (g == 0) pf((const uint8_t *)a + pfd, sizeof *a);
                grid[r] = _mm256_set_epi64x((long long)G[q[0] >> 24], (long long)G[(q[0] >> 16) & 255],
                                            (long long)G[(q[0] >> 8) & 255], (long long)G[q[0] & 255]);
                sgn[r] = _mm256_set_epi64x((long long)S[(q[1] >> 21) & 127], (long long)S[(q[1] >> 14) & 127],
                                           (long long)S[(q[1] >> 7) & 127], (long long)S[q[1] & 127]);
                ls[r] = _mm256_set1_epi16((short)(2 * (q[1] >> 28) + 1));
            }
            DS4_UNROLL for (int c = 0; c < NC; c++) {
                const block_q8_K *xb = (const block_q8_K *)(x + c * xs) + i;
                const __m256i q8 = _mm256_loadu_si256((const __m256i *)(xb->qs + 32 * g));
                DS4_UNROLL for (int r = 0; r < NR; r++) {
                    const __m256i p = _mm256_maddubs_epi16(grid[r], _mm256_sign_epi8(q8, sgn[r]));
                    acc[r][c] = _mm256_add_epi32(acc[r][c], _mm256_madd_epi16(p, ls[r]));
                }
            }
        }
        DS4_UNROLL for (int r = 0; r < NR; r++) {
            const float wd = h2f(((const block_iq2_xxs *)(w + r * ws) + i)->d);
            DS4_UNROLL for (int c = 0; c < NC; c++) {
                const block_q8_K *xb = (const block_q8_K *)(x + c * xs) + i;
                const float d = wd * xb->d;
                sum[r][c] += d * (float)hsum_epi32(acc[r][c]);
            }
        }
    }
    DS4_UNROLL for (int r = 0; r < NR; r++)
        DS4_UNROLL for (int c = 0; c < NC; c++) y[c * ldy + r] = 0.125f * sum[r][c];
}
DS4_DEFINE_TILE(TGT, iq2_xxs_avx2, k_iq2_xxs, 2, 2)

/* ------------------------------------------------------------------------
 * Activation quantizers (bit-identical to quant_ref.c).
 * ------------------------------------------------------------------------ */

/* 32 int32 (four ymm, in order) -> 32 int8, saturating: the in-lane packs
 * leave dword 4L + k holding bytes 4L..4L+3 of vector k (L: 128-bit lane),
 * one dword permute puts them in order. */
INL __m256i pack32_epi8(__m256i a, __m256i b, __m256i c, __m256i d) {
    const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
    return _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

/* Lane j of the result = the largest lane of m[j] (8 inputs), by a
 * transpose-reduce: each step maxes lanes that hold the same input, halving
 * the lanes per input and doubling the inputs per vector (7 maxes and 14
 * shuffles instead of 8 horizontal reductions).  Afterwards lane L holds
 * the input fed at position [0, 2, 4, 6, 1, 3, 5, 7][L], so the inputs are
 * fed in the inverse order and lane j comes out as m[j].  (As the avx512
 * max16x16; max is exact, so the order of the maxes does not matter.) */
INL __m256 max8x8(const __m256 m[8]) {
    static const int feed[8] = {0, 4, 1, 5, 2, 6, 3, 7};
    __m256 a[4], b[2];
    DS4_UNROLL for (int p = 0; p < 4; p++) { /* halves: input 2p low, 2p+1 high */
        const __m256 x = m[feed[2 * p]], y = m[feed[2 * p + 1]];
        a[p] = _mm256_max_ps(_mm256_permute2f128_ps(x, y, 0x20), _mm256_permute2f128_ps(x, y, 0x31));
    }
    DS4_UNROLL for (int q = 0; q < 2; q++) /* floats 0,1 of each half from a[2q], 2,3 from a[2q+1] */
        b[q] = _mm256_max_ps(_mm256_shuffle_ps(a[2 * q], a[2 * q + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm256_shuffle_ps(a[2 * q], a[2 * q + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    return _mm256_max_ps(_mm256_shuffle_ps(b[0], b[1], _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm256_shuffle_ps(b[0], b[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

/* Lane j = the sum of the lanes of v[j] (8 inputs): the same transpose-
 * reduce with adds, exact in int32 (the Q8_K sums of 16 quants). */
INL __m256i sum8x8_epi32(const __m256i v[8]) {
    static const int feed[8] = {0, 4, 1, 5, 2, 6, 3, 7};
    __m256 a[4], b[2];
    DS4_UNROLL for (int p = 0; p < 4; p++) {
        const __m256i x = v[feed[2 * p]], y = v[feed[2 * p + 1]];
        a[p] = _mm256_castsi256_ps(_mm256_add_epi32(_mm256_permute2x128_si256(x, y, 0x20),
                                                     _mm256_permute2x128_si256(x, y, 0x31)));
    }
    DS4_UNROLL for (int q = 0; q < 2; q++)
        b[q] = _mm256_castsi256_ps(
            _mm256_add_epi32(_mm256_castps_si256(_mm256_shuffle_ps(a[2 * q], a[2 * q + 1], _MM_SHUFFLE(1, 0, 1, 0))),
                             _mm256_castps_si256(_mm256_shuffle_ps(a[2 * q], a[2 * q + 1], _MM_SHUFFLE(3, 2, 3, 2)))));
    return _mm256_add_epi32(_mm256_castps_si256(_mm256_shuffle_ps(b[0], b[1], _MM_SHUFFLE(2, 0, 2, 0))),
                            _mm256_castps_si256(_mm256_shuffle_ps(b[0], b[1], _MM_SHUFFLE(3, 1, 3, 1))));
}

/* The scales of nb <= 8 Q8_0 blocks at once, as the reference: d =
 * amax/127, id = d != 0 ? 1/d : 0 as vector divisions (IEEE division is
 * correctly rounded, as the scalar one), d to fp16 by F16C with round to
 * nearest even (ds4_f32_to_fp16's rounding).  Writes 8 of each; blocks past
 * nb count as zero.  The avx512 q8_0_scales16 on 8 lanes. */
INL void q8_0_scales8(const float *x, int nb, float *id, ds4_fp16 *dh) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 m[8];
    _Pragma("GCC unroll 8") for (int j = 0; j < 8; j++) {
        m[j] = _mm256_setzero_ps();
        if (j < nb)
            DS4_UNROLL for (int k = 0; k < 4; k++) m[j] = _mm256_max_ps(m[j], _mm256_andnot_ps(sign, _mm256_loadu_ps(x + 32 * j + 8 * k)));
    }
    const __m256 d = _mm256_div_ps(max8x8(m), _mm256_set1_ps(127.0f));
    const __m256 nz = _mm256_cmp_ps(d, _mm256_setzero_ps(), _CMP_NEQ_UQ);
    _mm256_storeu_ps(id, _mm256_and_ps(nz, _mm256_div_ps(_mm256_set1_ps(1.0f), d)));
    _mm_storeu_si128((__m128i *)dh, _mm256_cvtps_ph(d, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

/* 8 floats x·id -> int32 with roundf's ties away from zero: add
 * copysignf(0.49999997f, t) and truncate (the avx512 q8_0_round16 trick,
 * checked there against roundf on all 2^32 inputs). */
INL __m256i q8_0_round8(__m256 x, __m256 id) {
    const __m256 t = _mm256_mul_ps(x, id);
    const __m256 h = _mm256_or_ps(_mm256_and_ps(t, _mm256_set1_ps(-0.0f)), _mm256_castsi256_ps(_mm256_set1_epi32(0x3effffff)));
    return _mm256_cvttps_epi32(_mm256_add_ps(t, h));
}

/* One block's 32 quants. */
INL void q8_0_quants8(const float *x, float id, int8_t *qs) {
    const __m256 vid = _mm256_set1_ps(id);
    _mm256_storeu_si256((__m256i *)qs, pack32_epi8(q8_0_round8(_mm256_loadu_ps(x), vid),
                                                   q8_0_round8(_mm256_loadu_ps(x + 8), vid),
                                                   q8_0_round8(_mm256_loadu_ps(x + 16), vid),
                                                   q8_0_round8(_mm256_loadu_ps(x + 24), vid)));
}

/* Zen 5, avx2 level (bench/kernels act): 314 -> 74-78 ns per 1024 floats
 * (Q8_K below: 181 -> 93-98) against the per-block loop this replaced. */
DS4_DEFINE_Q8_0_FROM_FLOAT(TGT, q8_0_from_float_avx2, 8, q8_0_scales8, q8_0_quants8)

/* iscale of one Q8_K block as the reference (-127 over the first element of
 * largest magnitude, signed), 0 for an all-zero block.  The signed extreme
 * comes from the block's max and min; only when both reach the largest
 * magnitude (+a and -a in one block, rare) is the first one searched for. */
INL float q8_K_iscale8(const float *x) {
    __m256 hi[4], lo[4];
    DS4_UNROLL for (int k = 0; k < 4; k++) hi[k] = lo[k] = _mm256_loadu_ps(x + 8 * k);
    for (int j = 32; j < QK_K; j += 32) /* the accumulators stay in registers */
        DS4_UNROLL for (int k = 0; k < 4; k++) {
            const __m256 v = _mm256_loadu_ps(x + j + 8 * k);
            hi[k] = _mm256_max_ps(hi[k], v);
            lo[k] = _mm256_min_ps(lo[k], v);
        }
    __m256 h = _mm256_max_ps(_mm256_max_ps(hi[0], hi[1]), _mm256_max_ps(hi[2], hi[3]));
    __m256 l = _mm256_min_ps(_mm256_min_ps(lo[0], lo[1]), _mm256_min_ps(lo[2], lo[3]));
    __m128 h4 = _mm_max_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    __m128 l4 = _mm_min_ps(_mm256_castps256_ps128(l), _mm256_extractf128_ps(l, 1));
    h4 = _mm_max_ps(h4, _mm_movehl_ps(h4, h4));
    l4 = _mm_min_ps(l4, _mm_movehl_ps(l4, l4));
    const float mx = _mm_cvtss_f32(_mm_max_ss(h4, _mm_movehdup_ps(h4)));
    const float mn = _mm_cvtss_f32(_mm_min_ss(l4, _mm_movehdup_ps(l4)));
    const float amax = mx > -mn ? mx : -mn;
    if (amax == 0.0f) return 0.0f;
    float max = mx == amax ? mx : mn;
    if (mx == -mn) {
        const __m256 sign = _mm256_set1_ps(-0.0f), va = _mm256_set1_ps(amax);
        for (int j = 0; j < QK_K; j += 8) {
            const int m = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(x + j)), va, _CMP_EQ_OQ));
            if (m) { max = x[j + __builtin_ctz((unsigned)m)]; break; }
        }
    }
    return -127.0f / max;
}

/* Quants (RNE, the conversion's default rounding, = the reference's
 * nearest_int here, clamped to 127) and sums of 16 of one block. */
INL void q8_K_quant8(const float *x, float iscale, block_q8_K *b) {
    const __m256 vs = _mm256_set1_ps(iscale);
    const __m256i k127 = _mm256_set1_epi32(127);
    DS4_UNROLL for (int h = 0; h < 2; h++) { /* 8 groups of 16 per half */
        __m256i s[8];
        DS4_UNROLL for (int g = 0; g < 8; g += 2) {
            const float *v = x + 128 * h + 16 * g;
            __m256i q[4];
            DS4_UNROLL for (int k = 0; k < 4; k++)
                q[k] = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(vs, _mm256_loadu_ps(v + 8 * k))), k127);
            _mm256_storeu_si256((__m256i *)(b->qs + 128 * h + 16 * g), pack32_epi8(q[0], q[1], q[2], q[3]));
            s[g] = _mm256_add_epi32(q[0], q[1]);
            s[g + 1] = _mm256_add_epi32(q[2], q[3]);
        }
        const __m256i sums = sum8x8_epi32(s); /* |sum| <= 16·128: packs exactly */
        _mm_storeu_si128((__m128i *)(b->bsums + 8 * h),
                         _mm_packs_epi32(_mm256_castsi256_si128(sums), _mm256_extracti128_si256(sums, 1)));
    }
    b->d = 1.0f / iscale;
}

DS4_DEFINE_Q8K_FROM_FLOAT(TGT, q8_K_from_float_avx2, q8_K_iscale8, q8_K_quant8)

/* ------------------------------------------------------------------------
 * f32 helpers
 * ------------------------------------------------------------------------ */

TGT static float dot_avx2(const float *a, const float *b, int64_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    if (i + 8 <= n) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        i += 8;
    }
    float s = hsum_ps(_mm256_add_ps(s0, s1));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

TGT static void axpy_avx2(float *y, float a, const float *x, int64_t n) {
    const __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) /* mul, then add: the scalar loop's bits */
        _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(y + i), _mm256_mul_ps(va, _mm256_loadu_ps(x + i))));
    for (; i < n; i++) y[i] += a * x[i];
}

TGT static double sumsq_avx2(const float *x, int64_t n) {
    __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256d a = _mm256_cvtps_pd(_mm_loadu_ps(x + i)), b = _mm256_cvtps_pd(_mm_loadu_ps(x + i + 4));
        s0 = _mm256_fmadd_pd(a, a, s0);
        s1 = _mm256_fmadd_pd(b, b, s1);
    }
    const __m256d s = _mm256_add_pd(s0, s1);
    const __m128d h = _mm_add_pd(_mm256_castpd256_pd128(s), _mm256_extractf128_pd(s, 1));
    double r = _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
    for (; i < n; i++) r += (double)x[i] * x[i];
    return r;
}

void ds4_simd_install_avx2(ds4_type_traits *t, ds4_vec_ops *v) {
#define SET(T, NAME) (t[T].vec_dot = NAME##_dot, t[T].vec_dot_tile = NAME##_tile)
    SET(DS4_TYPE_F32, f32_avx2);
    SET(DS4_TYPE_F16, f16_avx2);
    SET(DS4_TYPE_BF16, bf16_avx2);
    SET(DS4_TYPE_Q8_0, q8_0_avx2);
    SET(DS4_TYPE_Q4_K, q4_K_avx2);
    SET(DS4_TYPE_Q2_K, q2_K_avx2);
    SET(DS4_TYPE_IQ2_XXS, iq2_xxs_avx2);
#undef SET
    t[DS4_TYPE_Q8_0].from_float = q8_0_from_float_avx2;
    t[DS4_TYPE_Q8_K].from_float = q8_K_from_float_avx2;
    v->dot = dot_avx2;
    v->axpy = axpy_avx2;
    v->sumsq = sumsq_avx2;
}

#else /* not x86 */

#include "quant/simd_int.h"
void ds4_simd_install_avx2(ds4_type_traits *t, ds4_vec_ops *v) { (void)t; (void)v; }

#endif
