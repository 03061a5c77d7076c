/* NEON kernels (aarch64): the "neon" dispatch level.
 *
 * Compiled only on aarch64 (AdvSIMD is part of the base ISA there, so no
 * runtime check is needed); elsewhere this file reduces to an empty
 * installer.  Covered: F32/F16/BF16 · f32 (double lanes), Q8_0 · Q8_0
 * (bit-identical: exact int32 block sums via SDOT when the compiler targets +dotprod, else
 * widening multiplies), the f32 -> Q8_0 / Q8_K quantizers (bit-identical:
 * FCVTAS rounds ties away from zero like roundf, FCVTNS ties to even like
 * the reference's nearest_int) and the f32 helpers.  Q2_K, Q4_K and IQ2_XXS
 * keep the scalar reference on this level for now.
 * Same contract as the x86 files (simd.h); built but not run in CI here. */
#if defined(__aarch64__) && defined(__ARM_NEON)

#include "quant/quant.h"
#include "quant/simd_int.h"
#include "quant/simd_tile.h"

#include <arm_neon.h>

#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif

#define INL static inline __attribute__((always_inline))

INL float h2f(ds4_fp16 h) { return vgetq_lane_f32(vcvt_f32_f16(vreinterpret_f16_u16(vdup_n_u16(h))), 0); }

/* ---- F32 / F16 / BF16 · f32 ---- */

enum { KF32, KF16, KBF16 };

INL float32x4_t load_w4(const void *p, int kind) {
    if (kind == KF32) return vld1q_f32((const float *)p);
    const uint16x4_t h = vld1_u16((const uint16_t *)p);
    if (kind == KF16) return vcvt_f32_f16(vreinterpret_f16_u16(h));
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
#define K_F16(n, w, ws, x, xs, y, ldy, R, C) k_float(n, w, ws, x, xs, y, ldy, R, C, KF16)
#define K_BF16(n, w, ws, x, xs, y, ldy, R, C) k_float(n, w, ws, x, xs, y, ldy, R, C, KBF16)
DS4_DEFINE_TILE(, f32_neon, K_F32, 4, 2)
DS4_DEFINE_TILE(, f16_neon, K_F16, 4, 2)
DS4_DEFINE_TILE(, bf16_neon, K_BF16, 4, 2)

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
