/* NEON kernels (aarch64): the "neon" dispatch level.
 *
 * Compiled only on aarch64 (AdvSIMD is part of the base ISA there, so no
 * runtime check is needed); elsewhere this file reduces to an empty
 * installer.  Covered, each with its vec_dot and 4x2-instance tile:
 *   F32/BF16 · f32       exact products summed in double lanes;
 *   F16 · f32            fp32 FMA lanes (as the x86 levels: simd.h);
 *   Q8_0 · Q8_0          bit-identical;
 *   Q4_K, Q2_K, IQ2_XXS · Q8_K   bit-identical;
 * plus the f32 -> Q8_0 / Q8_K quantizers (bit-identical: FCVTAS rounds ties
 * away from zero like roundf, FCVTNS ties to even like the reference's
 * nearest_int) and the f32 helpers.  No panel GEMM on this level (ops.c
 * uses the tiles).
 *
 * Integer dots: every block's (sub-)block sums are exact in int32 lanes,
 * with SDOT (vdotq_s32) when the compiler targets +dotprod
 * (__ARM_FEATURE_DOTPROD), else widening multiplies (vmull_s8 / vmlal_high_s8
 * into int16 pairs, then vpadalq_s16; exact because the K/IQ2 weight side is
 * small, see dot16).  K-quant and IQ2 (sub-)block scales are integer
 * multiplies in the lanes (vmlaq_n_s32), so one integer horizontal add per
 * block is the reference's isum; then the reference's float steps per block,
 * in its order, as separate mul / sub / add (FP_CONTRACT off below for
 * clang; GCC in ISO C mode, the project's -std=c11, does not contract).
 * Same contract as the x86 files (simd.h).  Not run natively in CI here:
 * scripts/neon_check.sh cross-builds the kernel tests for aarch64 (with and
 * without +dotprod) and runs them under qemu-user. */
#if defined(__aarch64__) && defined(__ARM_NEON)

#include "quant/quant.h"
#include "quant/simd_int.h"
#include "quant/simd_tile.h"
#include "quant/iq2_tables.h"

#include <arm_neon.h>

#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif

#define INL static inline __attribute__((always_inline))

INL float h2f(ds4_fp16 h) { return vgetq_lane_f32(vcvt_f32_f16(vreinterpret_f16_u16(vdup_n_u16(h))), 0); }

/* ---- F32 / BF16 · f32 ---- */

enum { KF32, KBF16 };

INL float32x4_t load_w4(const void *p, int kind) {
    if (kind == KF32) return vld1q_f32((const float *)p);
    const uint16x4_t h = vld1_u16((const uint16_t *)p);
    return vreinterpretq_f32_u32(vshll_n_u16(h, 16));
}

/* Exact products summed in double lanes (see simd_avx512.c). */
INL void k_float(int64_t n, const uint8_t *w, size_t ws, const uint8_t *x, size_t xs, float *y, int64_t ldy,
                 const int NR, const int NC, const int kind) {
    const size_t esz = kind == KF32 ? 4 : 2;
    float64x2_t acc[4][4];
    DS4_UNROLL for (int r = 0; r < NR; r++) DS4_UNROLL for (int c = 0; c < NC; c++) acc[r][c] = vdupq_n_f64(0.0);
    for (int64_t i = 0; i < n; i += 4) {
        const size_t rem = n - i < 4 ? (size_t)(n - i) : 4;
        float64x2_t xl[4], xh[4];
        DS4_UNROLL for (int c = 0; c < NC; c++) {
            float buf[4] = { 0 };
            const float *xp = (const float *)(x + c * xs) + i;
            if (rem < 4) { __builtin_memcpy(buf, xp, rem * sizeof(float)); xp = buf; }
            const float32x4_t xv = vld1q_f32(xp);
            xl[c] = vcvt_f64_f32(vget_low_f32(xv));
            xh[c] = vcvt_high_f64_f32(xv);
        }
        DS4_UNROLL for (int r = 0; r < NR; r++) {
            uint8_t buf[16] = { 0 };
            const uint8_t *wp = w + r * ws + (size_t)i * esz;
            if (rem < 4) { __builtin_memcpy(buf, wp, rem * esz); wp = buf; }
            const float32x4_t wv = load_w4(wp, kind);
            const float64x2_t wl = vcvt_f64_f32(vget_low_f32(wv)), wh = vcvt_high_f64_f32(wv);
            DS4_UNROLL for (int c = 0; c < NC; c++) acc[r][c] = vfmaq_f64(vfmaq_f64(acc[r][c], wl, xl[c]), wh, xh[c]);
        }
    }
    DS4_UNROLL for (int r = 0; r < NR; r++) DS4_UNROLL for (int c = 0; c < NC; c++) y[c * ldy + r] = (float)vaddvq_f64(acc[r][c]);
}

#define K_F32(n, w, ws, x, xs, y, ldy, R, C) k_float(n, w, ws, x, xs, y, ldy, R, C, KF32)
#define K_BF16(n, w, ws, x, xs, y, ldy, R, C) k_float(n, w, ws, x, xs, y, ldy, R, C, KBF16)
DS4_DEFINE_TILE(, f32_neon, K_F32, 4, 2)
DS4_DEFINE_TILE(, bf16_neon, K_BF16, 4, 2)

/* ---- F16 · f32 in fp32 lanes ----
 * As the x86 levels (simd_avx2.c, dec_avx512.c; the same error bound): the
 * double lanes cost two widenings and two 2-lane FMAs per 4 elements.  Per
 * pair two accumulators of 4 float lanes, a and b: chunk j (elements 8j ..
 * 8j + 7) adds its first half to a and its second to b by one FMA each, j
 * in order; a last chunk of fewer than 8 elements is read from zero-padded
 * copies.  Then (a + b), lanes i + i+2, i + i+1.  Two chains per pair hide
 * the FMA latency in decode's 4 x 1 tile; every tile and vec_dot run this
 * same sequence per pair, so they give the same bits. */
INL float32x4_t f16w4(const uint16_t *p) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p))); }

INL float f16_hsum(float32x4_t a, float32x4_t b) {
    const float32x4_t s = vaddq_f32(a, b);
    const float32x2_t h = vadd_f32(vget_low_f32(s), vget_high_f32(s)); /* i + i+2 */
    return vget_lane_f32(h, 0) + vget_lane_f32(h, 1);
}

INL void k_f16(int64_t n, const uint8_t *w, size_t ws, const uint8_t *x, size_t xs, float *y, int64_t ldy,
               const int NR, const int NC) {
    float32x4_t a[4][4], b[4][4];
    DS4_UNROLL for (int r = 0; r < NR; r++) DS4_UNROLL for (int c = 0; c < NC; c++) {
        a[r][c] = vdupq_n_f32(0.0f);
        b[r][c] = vdupq_n_f32(0.0f);
    }
    for (int64_t i = 0; i < n; i += 8) {
        const int64_t rem = n - i < 8 ? n - i : 8;
        float32x4_t xl[4], xh[4];
        DS4_UNROLL for (int c = 0; c < NC; c++) {
            float buf[8] = { 0 };
            const float *xp = (const float *)(x + c * xs) + i;
            if (rem < 8) { __builtin_memcpy(buf, xp, (size_t)rem * sizeof(float)); xp = buf; }
            xl[c] = vld1q_f32(xp);
            xh[c] = vld1q_f32(xp + 4);
        }
        DS4_UNROLL for (int r = 0; r < NR; r++) {
            uint16_t buf[8] = { 0 };
            const uint16_t *wp = (const uint16_t *)(w + r * ws) + i;
            if (rem < 8) { __builtin_memcpy(buf, wp, (size_t)rem * 2); wp = buf; }
            const float32x4_t wl = f16w4(wp), wh = f16w4(wp + 4);
            DS4_UNROLL for (int c = 0; c < NC; c++) {
                a[r][c] = vfmaq_f32(a[r][c], wl, xl[c]);
                b[r][c] = vfmaq_f32(b[r][c], wh, xh[c]);
            }
        }
    }
    DS4_UNROLL for (int r = 0; r < NR; r++) DS4_UNROLL for (int c = 0; c < NC; c++) y[c * ldy + r] = f16_hsum(a[r][c], b[r][c]);
}
DS4_DEFINE_TILE(, f16_neon, k_f16, 4, 2)

/* ---- Q8_0 · Q8_0 ---- */

INL int32x4_t dot32_s8(const int8_t *a, const int8_t *b) {
    const int8x16_t a0 = vld1q_s8(a), a1 = vld1q_s8(a + 16), b0 = vld1q_s8(b), b1 = vld1q_s8(b + 16);
#if defined(__ARM_FEATURE_DOTPROD)
    return vdotq_s32(vdotq_s32(vdupq_n_s32(0), a0, b0), a1, b1);
#else
    int16x8_t p0 = vmull_s8(vget_low_s8(a0), vget_low_s8(b0));
    int16x8_t p1 = vmull_s8(vget_high_s8(a0), vget_high_s8(b0));
    int16x8_t p2 = vmull_s8(vget_low_s8(a1), vget_low_s8(b1));
    int16x8_t p3 = vmull_s8(vget_high_s8(a1), vget_high_s8(b1));
    return vaddq_s32(vaddq_s32(vpaddlq_s16(p0), vpaddlq_s16(p1)), vaddq_s32(vpaddlq_s16(p2), vpaddlq_s16(p3)));
#endif
}

/* Bit-identical to the reference (canonical Q8_0 order, simd.h): per block
 * the exact int32 sum (SDOT or widening products, then an integer
 * horizontal add), then sum += (float)isum * (d_w * d_x) in f32 scalars, in
 * block order, mul then add (FP_CONTRACT off above; GCC in ISO C mode does
 * not contract). */
INL void k_q8_0(int64_t n, const uint8_t *w, size_t ws, const uint8_t *x, size_t xs, float *y, int64_t ldy,
                const int NR, const int NC) {
    float sum[4][4];
    DS4_UNROLL for (int r = 0; r < NR; r++) DS4_UNROLL for (int c = 0; c < NC; c++) sum[r][c] = 0.0f;
    for (int64_t b = 0; b < n / QK8_0; b++) {
        DS4_UNROLL for (int c = 0; c < NC; c++) {
            const block_q8_0 *xb = (const block_q8_0 *)(x + c * xs) + b;
            const float dx = h2f(xb->d);
            DS4_UNROLL for (int r = 0; r < NR; r++) {
                const block_q8_0 *wb = (const block_q8_0 *)(w + r * ws) + b;
                const int32_t isum = vaddvq_s32(dot32_s8(wb->qs, xb->qs));
                const float d = h2f(wb->d) * dx;
                const float p = (float)isum * d;
                sum[r][c] = sum[r][c] + p;
            }
        }
    }
    DS4_UNROLL for (int r = 0; r < NR; r++) DS4_UNROLL for (int c = 0; c < NC; c++) y[c * ldy + r] = sum[r][c];
}
DS4_DEFINE_TILE(, q8_0_neon, k_q8_0, 4, 2)

/* ---- K-quants and IQ2_XXS · Q8_K ----
 *
 * Same scheme as simd_avx2.c / simd_avx512.c: the weight quants are small
 * integers (Q4_K nibbles 0..15, Q2_K crumbs 0..3, IQ2_XXS grid bytes 8..43
 * with their signs applied to the weight, never to the activation, so a
 * -128 activation byte stays exact), so each (sub-)block's integer sum is
 * computed exactly in int32 lanes and multiplied by its integer scale there
 * (vmlaq_n_s32); one integer horizontal add per block gives the reference's
 * isum, and the float steps follow per block in the reference's order. */

/* acc + the 16 products a[i]*b[i], spread over 4 int32 lanes.  Exact when
 * |a| <= 63 (no SDOT: a pair of products fits int16, |2*63*128| < 2^15). */
INL int32x4_t dot16(int32x4_t acc, int8x16_t a, int8x16_t b) {
#if defined(__ARM_FEATURE_DOTPROD)
    return vdotq_s32(acc, a, b);
#else
    return vpadalq_s16(acc, vmlal_high_s8(vmull_s8(vget_low_s8(a), vget_low_s8(b)), a, b));
#endif
}

INL int8x16_t u2s(uint8x16_t v) { return vreinterpretq_s8_u8(v); }

/* Σ bsums[j] * m[j] over the 16 bsums of a Q8_K block (exact: |bsum| <= 16*128,
 * m <= 63), m given as two int16x8 halves. */
INL int32_t bsum_dot(const int16_t *bsums, int16x8_t m_lo, int16x8_t m_hi) {
    const int16x8_t b0 = vld1q_s16(bsums), b1 = vld1q_s16(bsums + 8);
    int32x4_t t = vmull_s16(vget_low_s16(b0), vget_low_s16(m_lo));
    t = vmlal_high_s16(t, b0, m_lo);
    t = vmlal_s16(t, vget_low_s16(b1), vget_low_s16(m_hi));
    t = vmlal_high_s16(t, b1, m_hi);
    return vaddvq_s32(t);
}

/* Q4_K / Q2_K: one block's float steps for an NR x NC tile, as the
 * reference: sum += xd·d·isum - xd·dmin·msum (mul, mul, sub, add; the min
 * term from the activation's 16-sums and the row's mins). */
INL void k_block_steps(const uint8_t *x, size_t xs, int64_t i, int32x4_t acc[4][4], const int16x8_t *mlo,
                       const int16x8_t *mhi, const float *wd, const float *wdmin, float sum[4][4], const int NR,
                       const int NC) {
    DS4_UNROLL for (int c = 0; c < NC; c++) {
        const block_q8_K *xb = (const block_q8_K *)(x + c * xs) + i;
        DS4_UNROLL for (int r = 0; r < NR; r++) {
            const int32_t isum = vaddvq_s32(acc[r][c]);
            const int32_t msum = bsum_dot(xb->bsums, mlo[r], mhi[r]);
            const float d = xb->d * wd[r], dmin = xb->d * wdmin[r];
            const float p = d * (float)isum, q = dmin * (float)msum;
            const float t = p - q;
            sum[r][c] = sum[r][c] + t;
        }
    }
}


INL int16x8_t widen_lo(uint8x16_t v) { return vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(v))); }
INL int16x8_t widen_hi(uint8x16_t v) { return vreinterpretq_s16_u16(vmovl_high_u8(v)); }

/* Q4_K's twelve scale bytes -> sc[0..7], m[0..7] (6 bits each). */
INL void q4_K_unpack(const uint8_t *scales, uint8_t out[16]) {
    uint32_t u[3], o[4];
    __builtin_memcpy(u, scales, 12);
    o[0] = u[0] & 0x3f3f3f3fu;
    o[1] = (u[2] & 0x0f0f0f0fu) | (((u[0] >> 6) & 0x03030303u) << 4);
    o[2] = u[1] & 0x3f3f3f3fu;
    o[3] = ((u[2] >> 4) & 0x0f0f0f0fu) | (((u[1] >> 6) & 0x03030303u) << 4);
    __builtin_memcpy(out, o, 16);
}

/* Q4_K: per 64-chunk k, low nibbles x sub-block 2k (activations 64k..+31),
 * high nibbles x sub-block 2k+1 (64k+32..+63); each 32-sum times its 6-bit
 * scale; the min term from the bsums pairs.  Per block, as the reference:
 * sum += (xd * d) * isum - (xd * dmin) * msum, mul/sub/add unfused. */
INL void k_q4_K(int64_t n, const uint8_t *w, size_t ws, const uint8_t *x, size_t xs, float *y, int64_t ldy,
                const int NR, const int NC) {
    const uint8x16_t m4 = vdupq_n_u8(0x0f);
    float sum[4][4];
    DS4_UNROLL for (int r = 0; r < NR; r++) DS4_UNROLL for (int c = 0; c < NC; c++) sum[r][c] = 0.0f;
    for (int64_t i = 0; i < n / QK_K; i++) {
        uint8_t sm[4][16];
        int16x8_t mlo[4], mhi[4];
        float wd[4], wdmin[4];
        DS4_UNROLL for (int r = 0; r < NR; r++) {
            const block_q4_K *a = (const block_q4_K *)(w + r * ws) + i;
            q4_K_unpack(a->scales, sm[r]);
            const uint8x8_t m = vld1_u8(sm[r] + 8); /* m0..m7, each for two bsums */
            mlo[r] = vreinterpretq_s16_u16(vmovl_u8(vzip1_u8(m, m)));
            mhi[r] = vreinterpretq_s16_u16(vmovl_u8(vzip2_u8(m, m)));
            wd[r] = h2f(a->d);
            wdmin[r] = h2f(a->dmin);
        }
        int32x4_t acc[4][4];
        DS4_UNROLL for (int r = 0; r < NR; r++) DS4_UNROLL for (int c = 0; c < NC; c++) acc[r][c] = vdupq_n_s32(0);
        for (int k = 0; k < 4; k++) {
            DS4_UNROLL for (int h = 0; h < 2; h++) { /* h = 0: low nibbles, 1: high */
                int8x16_t q0[4], q1[4];
                DS4_UNROLL for (int r = 0; r < NR; r++) {
                    const block_q4_K *a = (const block_q4_K *)(w + r * ws) + i;
                    const uint8x16_t v0 = vld1q_u8(a->qs + 32 * k), v1 = vld1q_u8(a->qs + 32 * k + 16);
                    q0[r] = u2s(h ? vshrq_n_u8(v0, 4) : vandq_u8(v0, m4));
                    q1[r] = u2s(h ? vshrq_n_u8(v1, 4) : vandq_u8(v1, m4));
                }
                DS4_UNROLL for (int c = 0; c < NC; c++) {
                    const int8_t *q8 = ((const block_q8_K *)(x + c * xs) + i)->qs + 64 * k + 32 * h;
                    const int8x16_t x0 = vld1q_s8(q8), x1 = vld1q_s8(q8 + 16);
                    DS4_UNROLL for (int r = 0; r < NR; r++) {
                        const int32x4_t s = dot16(dot16(vdupq_n_s32(0), q0[r], x0), q1[r], x1);
                        acc[r][c] = vmlaq_n_s32(acc[r][c], s, sm[r][2 * k + h]);
                    }
                }
            }
        }
        k_block_steps(x, xs, i, acc, mlo, mhi, wd, wdmin, sum, NR, NC);
    }
    DS4_UNROLL for (int r = 0; r < NR; r++) DS4_UNROLL for (int c = 0; c < NC; c++) y[c * ldy + r] = sum[r][c];
}
DS4_DEFINE_TILE(, q4_K_neon, k_q4_K, 4, 2)

/* Q2_K: per 128-half h, two 16-byte quant vectors (parts 0 and 1); shift
 * step j takes crumb j of each byte: group 8h + 2j + part, activations
 * 128h + 32j + 16*part.  Each 16-sum times its 4-bit scale; the min term
 * from the bsums and the high nibbles.  Float steps as the reference:
 * dall = xd * d, dmin = xd * dmin, sum += dall * isum - dmin * msum. */
INL void k_q2_K(int64_t n, const uint8_t *w, size_t ws, const uint8_t *x, size_t xs, float *y, int64_t ldy,
                const int NR, const int NC) {
    const uint8x16_t m3 = vdupq_n_u8(3), m4 = vdupq_n_u8(0x0f);
    float sum[4][4];
    DS4_UNROLL for (int r = 0; r < NR; r++) DS4_UNROLL for (int c = 0; c < NC; c++) sum[r][c] = 0.0f;
    for (int64_t i = 0; i < n / QK_K; i++) {
        uint8_t sc[4][16];
        int16x8_t mlo[4], mhi[4];
        float wd[4], wdmin[4];
        DS4_UNROLL for (int r = 0; r < NR; r++) {
            const block_q2_K *a = (const block_q2_K *)(w + r * ws) + i;
            const uint8x16_t s = vld1q_u8(a->scales);
            vst1q_u8(sc[r], vandq_u8(s, m4));
            const uint8x16_t m = vshrq_n_u8(s, 4);
            mlo[r] = widen_lo(m);
            mhi[r] = widen_hi(m);
            wd[r] = h2f(a->d);
            wdmin[r] = h2f(a->dmin);
        }
        int32x4_t acc[4][4];
        DS4_UNROLL for (int r = 0; r < NR; r++) DS4_UNROLL for (int c = 0; c < NC; c++) acc[r][c] = vdupq_n_s32(0);
        for (int h = 0; h < 2; h++) {
            uint8x16_t v0[4], v1[4];
            DS4_UNROLL for (int r = 0; r < NR; r++) {
                const block_q2_K *a = (const block_q2_K *)(w + r * ws) + i;
                v0[r] = vld1q_u8(a->qs + 32 * h);
                v1[r] = vld1q_u8(a->qs + 32 * h + 16);
            }
            DS4_UNROLL for (int j = 0; j < 4; j++) {
                int8x16_t q0[4], q1[4];
                DS4_UNROLL for (int r = 0; r < NR; r++) {
                    q0[r] = u2s(vandq_u8(v0[r], m3));
                    q1[r] = u2s(vandq_u8(v1[r], m3));
                    v0[r] = vshrq_n_u8(v0[r], 2);
                    v1[r] = vshrq_n_u8(v1[r], 2);
                }
                DS4_UNROLL for (int c = 0; c < NC; c++) {
                    const int8_t *q8 = ((const block_q8_K *)(x + c * xs) + i)->qs + 128 * h + 32 * j;
                    const int8x16_t x0 = vld1q_s8(q8), x1 = vld1q_s8(q8 + 16);
                    DS4_UNROLL for (int r = 0; r < NR; r++) {
                        const int g = 8 * h + 2 * j;
                        acc[r][c] = vmlaq_n_s32(acc[r][c], dot16(vdupq_n_s32(0), q0[r], x0), sc[r][g]);
                        acc[r][c] = vmlaq_n_s32(acc[r][c], dot16(vdupq_n_s32(0), q1[r], x1), sc[r][g + 1]);
                    }
                }
            }
        }
        k_block_steps(x, xs, i, acc, mlo, mhi, wd, wdmin, sum, NR, NC);
    }
    DS4_UNROLL for (int r = 0; r < NR; r++) DS4_UNROLL for (int c = 0; c < NC; c++) y[c * ldy + r] = sum[r][c];
}
DS4_DEFINE_TILE(, q2_K_neon, k_q2_K, 4, 2)

/* IQ2_XXS: per 32-group g, the four grid entries (8 magnitude bytes each,
 * byte j = element j) and the four sign patterns as ±1 bytes
 * (ds4_iq2_sign_pm1) give the signed weights (|w| <= 43, so the product
 * with the sign is exact); the 32-sum times the odd scale 2s+1.  Per block
 * sum += (d * xd) * bsum; the 1/8 once at the end, as the reference. */
INL void k_iq2_xxs(int64_t n, const uint8_t *w, size_t ws, const uint8_t *x, size_t xs, float *y, int64_t ldy,
                   const int NR, const int NC) {
    const uint64_t *G = ds4_iq2xxs_grid, *S = ds4_iq2_sign_pm1;
    float sum[4][4];
    DS4_UNROLL for (int r = 0; r < NR; r++) DS4_UNROLL for (int c = 0; c < NC; c++) sum[r][c] = 0.0f;
    for (int64_t i = 0; i < n / QK_K; i++) {
        int32x4_t acc[4][4];
        DS4_UNROLL for (int r = 0; r < NR; r++) DS4_UNROLL for (int c = 0; c < NC; c++) acc[r][c] = vdupq_n_s32(0);
        for (int g = 0; g < QK_K / 32; g++) {
            int8x16_t q0[4], q1[4];
            int32_t ls[4];
            DS4_UNROLL for (int r = 0; r < NR; r++) {
                const block_iq2_xxs *a = (const block_iq2_xxs *)(w + r * ws) + i;
                uint32_t q[2];
                __builtin_memcpy(q, a->qs + 4 * g, sizeof q);
                const int8x16_t g0 = vreinterpretq_s8_u64(vcombine_u64(vcreate_u64(G[q[0] & 255]), vcreate_u64(G[(q[0] >> 8) & 255])));
                const int8x16_t g1 = vreinterpretq_s8_u64(vcombine_u64(vcreate_u64(G[(q[0] >> 16) & 255]), vcreate_u64(G[q[0] >> 24])));
                const int8x16_t s0 = vreinterpretq_s8_u64(vcombine_u64(vcreate_u64(S[q[1] & 127]), vcreate_u64(S[(q[1] >> 7) & 127])));
                const int8x16_t s1 = vreinterpretq_s8_u64(vcombine_u64(vcreate_u64(S[(q[1] >> 14) & 127]), vcreate_u64(S[(q[1] >> 21) & 127])));
                q0[r] = vmulq_s8(g0, s0);
                q1[r] = vmulq_s8(g1, s1);
                ls[r] = 2 * (int32_t)(q[1] >> 28) + 1;
            }
            DS4_UNROLL for (int c = 0; c < NC; c++) {
                const int8_t *q8 = ((const block_q8_K *)(x + c * xs) + i)->qs + 32 * g;
                const int8x16_t x0 = vld1q_s8(q8), x1 = vld1q_s8(q8 + 16);
                DS4_UNROLL for (int r = 0; r < NR; r++)
                    acc[r][c] = vmlaq_n_s32(acc[r][c], dot16(dot16(vdupq_n_s32(0), q0[r], x0), q1[r], x1), ls[r]);
            }
        }
        DS4_UNROLL for (int r = 0; r < NR; r++) {
            const float wd = h2f(((const block_iq2_xxs *)(w + r * ws) + i)->d);
            DS4_UNROLL for (int c = 0; c < NC; c++) {
                const block_q8_K *xb = (const block_q8_K *)(x + c * xs) + i;
                const float d = wd * xb->d;
                const float p = d * (float)vaddvq_s32(acc[r][c]);
                sum[r][c] = sum[r][c] + p;
            }
        }
    }
    DS4_UNROLL for (int r = 0; r < NR; r++) DS4_UNROLL for (int c = 0; c < NC; c++) y[c * ldy + r] = 0.125f * sum[r][c];
}
DS4_DEFINE_TILE(, iq2_xxs_neon, k_iq2_xxs, 4, 2)

/* ---- quantizers ---- */

static void q8_0_from_float_neon(const float *src, void *dst, int64_t n) {
    block_q8_0 *b = dst;
    for (int64_t i = 0; i < n / QK8_0; i++) {
        const float *x = src + i * QK8_0;
        float32x4_t v[8], m = vdupq_n_f32(0.0f);
        for (int k = 0; k < 8; k++) { v[k] = vld1q_f32(x + 4 * k); m = vmaxq_f32(m, vabsq_f32(v[k])); }
        const float amax = vmaxvq_f32(m);
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        b[i].d = ds4_f32_to_fp16(d);
        for (int k = 0; k < 8; k++) {
            const int32x4_t q = vcvtaq_s32_f32(vmulq_n_f32(v[k], id)); /* roundf; |q| <= 127 */
            b[i].qs[4 * k + 0] = (int8_t)vgetq_lane_s32(q, 0);
            b[i].qs[4 * k + 1] = (int8_t)vgetq_lane_s32(q, 1);
            b[i].qs[4 * k + 2] = (int8_t)vgetq_lane_s32(q, 2);
            b[i].qs[4 * k + 3] = (int8_t)vgetq_lane_s32(q, 3);
        }
    }
}

static void q8_K_from_float_neon(const float *src, void *dst, int64_t n) {
    block_q8_K *b = dst;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float *x = src + i * QK_K;
        float32x4_t m = vdupq_n_f32(0.0f);
        for (int j = 0; j < QK_K; j += 4) m = vmaxq_f32(m, vabsq_f32(vld1q_f32(x + j)));
        const float amax = vmaxvq_f32(m);
        if (amax == 0.0f) {
            __builtin_memset(&b[i], 0, sizeof b[i]);
            continue;
        }
        float max = 0.0f;
        for (int j = 0; j < QK_K; j++) /* first element of largest magnitude */
            if (__builtin_fabsf(x[j]) == amax) { max = x[j]; break; }
        const float iscale = -127.0f / max;
        if (__builtin_isinf(iscale)) { /* |max| < 127/FLT_MAX: the reference's nearest_int gives 0 everywhere */
            __builtin_memset(&b[i], 0, sizeof b[i]);
            b[i].d = 1.0f / iscale;
            continue;
        }
        for (int j = 0; j < QK_K; j += 16) {
            int32_t s = 0;
            for (int k = 0; k < 16; k += 4) {
                int32x4_t q = vminq_s32(vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(x + j + k), iscale)), vdupq_n_s32(127));
                s += vaddvq_s32(q);
                b[i].qs[j + k + 0] = (int8_t)vgetq_lane_s32(q, 0);
                b[i].qs[j + k + 1] = (int8_t)vgetq_lane_s32(q, 1);
                b[i].qs[j + k + 2] = (int8_t)vgetq_lane_s32(q, 2);
                b[i].qs[j + k + 3] = (int8_t)vgetq_lane_s32(q, 3);
            }
            b[i].bsums[j / 16] = (int16_t)s;
        }
        b[i].d = 1.0f / iscale;
    }
}

/* ---- f32 helpers ---- */

static float dot_neon(const float *a, const float *b, int64_t n) {
    float32x4_t s0 = vdupq_n_f32(0.0f), s1 = vdupq_n_f32(0.0f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        s0 = vfmaq_f32(s0, vld1q_f32(a + i), vld1q_f32(b + i));
        s1 = vfmaq_f32(s1, vld1q_f32(a + i + 4), vld1q_f32(b + i + 4));
    }
    float s = vaddvq_f32(vaddq_f32(s0, s1));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

static void axpy_neon(float *y, float a, const float *x, int64_t n) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) /* mul, then add: the scalar loop's bits */
        vst1q_f32(y + i, vaddq_f32(vld1q_f32(y + i), vmulq_n_f32(vld1q_f32(x + i), a)));
    for (; i < n; i++) y[i] += a * x[i];
}

static double sumsq_neon(const float *x, int64_t n) {
    float64x2_t s0 = vdupq_n_f64(0.0), s1 = vdupq_n_f64(0.0);
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const float32x4_t v = vld1q_f32(x + i);
        const float64x2_t lo = vcvt_f64_f32(vget_low_f32(v)), hi = vcvt_high_f64_f32(v);
        s0 = vfmaq_f64(s0, lo, lo);
        s1 = vfmaq_f64(s1, hi, hi);
    }
    double s = vaddvq_f64(vaddq_f64(s0, s1));
    for (; i < n; i++) s += (double)x[i] * x[i];
    return s;
}

void ds4_simd_install_neon(ds4_type_traits *t, ds4_vec_ops *v) {
#define SET(T, NAME) (t[T].vec_dot = NAME##_dot, t[T].vec_dot_tile = NAME##_tile)
    SET(DS4_TYPE_F32, f32_neon);
    SET(DS4_TYPE_F16, f16_neon);
    SET(DS4_TYPE_BF16, bf16_neon);
    SET(DS4_TYPE_Q8_0, q8_0_neon);
    SET(DS4_TYPE_Q4_K, q4_K_neon);
    SET(DS4_TYPE_Q2_K, q2_K_neon);
    SET(DS4_TYPE_IQ2_XXS, iq2_xxs_neon);
#undef SET
    t[DS4_TYPE_Q8_0].from_float = q8_0_from_float_neon;
    t[DS4_TYPE_Q8_K].from_float = q8_K_from_float_neon;
    v->dot = dot_neon;
    v->axpy = axpy_neon;
    v->sumsq = sumsq_neon;
}

#else /* not aarch64 */

#include "quant/simd_int.h"
void ds4_simd_install_neon(ds4_type_traits *t, ds4_vec_ops *v) { (void)t; (void)v; }

#endif
