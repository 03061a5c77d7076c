/* Portable scalar reference kernels and the per-type traits table.
 *
 * Contract (see quant.h): every kernel works on whole blocks (n a multiple of
 * the type's block size, validated at model load), never allocates, never
 * fails.  Dequantizers are bit-exact with ggml's dequantize_row_* (same
 * operation order in f32), because the GGUFs written by llama.cpp and ds4 are
 * used in place.  The quantized dot kernels follow ggml's scalar
 * ggml_vec_dot_*: integer sums inside a block, one f32 scale multiply per
 * block (or sub-block), so a SIMD variant can reproduce them exactly.  F32,
 * F16 and BF16 dots accumulate in double and round once: the golden parity
 * tests run f32 weights and need ~1e-6 relative accuracy.
 *
 * This file is the executable spec, not the fast path: SIMD variants replace
 * table entries at start-up and are tested against these functions. */
#include "quant/quant.h"
#include "quant/iq2_tables.h"

#include <assert.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static_assert(sizeof(block_q8_0) == 2 + QK8_0, "block_q8_0 must be 34 bytes");
static_assert(sizeof(block_q2_K) == QK_K / 16 + QK_K / 4 + 4, "block_q2_K must be 84 bytes");
static_assert(sizeof(block_q4_K) == 4 + K_SCALE_SIZE + QK_K / 2, "block_q4_K must be 144 bytes");
static_assert(sizeof(block_q8_K) == 4 + QK_K + QK_K / 8, "block_q8_K must be 292 bytes");
static_assert(sizeof(block_iq2_xxs) == 2 + QK_K / 4, "block_iq2_xxs must be 66 bytes");

#ifndef IQ2_NB_SLACK
#define IQ2_NB_SLACK 330 /* squared-distance slack of the neighbour lists */
#endif
#ifndef IQ2_NSCALE
#define IQ2_NSCALE 19    /* candidate scales tried per 32-block */
#endif

#define FP16_TO_F32(h) ds4_fp16_to_f32(h)
#define F32_TO_FP16(f) ds4_f32_to_fp16(f)

/* Round to nearest, ties to even, as ggml's nearest_int (the 1.5*2^23 trick);
 * the K-quant and Q8_K encoders must round exactly like it.  |f| < 2^22. */
static inline int nearest_int(float f) {
    float v = f + 12582912.0f;
    int32_t i;
    memcpy(&i, &v, sizeof i);
    return (i & 0x007fffff) - 0x00400000;
}

/* ------------------------------------------------------------------------
 * F32, F16, BF16
 * ------------------------------------------------------------------------ */

static void f32_to_float(const void *src, float *dst, int64_t n) {
    memcpy(dst, src, (size_t)n * sizeof(float));
}

static void f32_from_float(const float *src, void *dst, int64_t n) {
    memcpy(dst, src, (size_t)n * sizeof(float));
}

static void f32_quantize(const float *src, void *dst, int64_t n, const float *qw) {
    (void)qw;
    f32_from_float(src, dst, n);
}

static float vec_dot_f32_f32(int64_t n, const void *w, const void *x) {
    const float *a = w, *b = x;
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += (double)a[i] * (double)b[i];
    return (float)s;
}

static void f16_to_float(const void *src, float *dst, int64_t n) {
    const ds4_fp16 *s = src;
    for (int64_t i = 0; i < n; i++) dst[i] = FP16_TO_F32(s[i]);
}

static void f16_from_float(const float *src, void *dst, int64_t n) {
    ds4_fp16 *d = dst;
    for (int64_t i = 0; i < n; i++) d[i] = F32_TO_FP16(src[i]);
}

static void f16_quantize(const float *src, void *dst, int64_t n, const float *qw) {
    (void)qw;
    f16_from_float(src, dst, n);
}

static float vec_dot_f16_f32(int64_t n, const void *w, const void *x) {
    const ds4_fp16 *a = w;
    const float *b = x;
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += (double)FP16_TO_F32(a[i]) * (double)b[i];
    return (float)s;
}

static void bf16_to_float(const void *src, float *dst, int64_t n) {
    const uint16_t *s = src;
    for (int64_t i = 0; i < n; i++) dst[i] = ds4_bf16_to_f32(s[i]);
}

static void bf16_from_float(const float *src, void *dst, int64_t n) {
    uint16_t *d = dst;
    for (int64_t i = 0; i < n; i++) d[i] = ds4_f32_to_bf16(src[i]);
}

static void bf16_quantize(const float *src, void *dst, int64_t n, const float *qw) {
    (void)qw;
    bf16_from_float(src, dst, n);
}

static float vec_dot_bf16_f32(int64_t n, const void *w, const void *x) {
    const uint16_t *a = w;
    const float *b = x;
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += (double)ds4_bf16_to_f32(a[i]) * (double)b[i];
    return (float)s;
}

/* Non-matrix integer / f64 types: only sizes matter, but a widening to_float
 * is cheap and handy for inspection tools. */
static void i8_to_float(const void *src, float *dst, int64_t n) {
    const int8_t *s = src;
    for (int64_t i = 0; i < n; i++) dst[i] = (float)s[i];
}
static void i16_to_float(const void *src, float *dst, int64_t n) {
    const int16_t *s = src;
    for (int64_t i = 0; i < n; i++) dst[i] = (float)s[i];
}
static void i32_to_float(const void *src, float *dst, int64_t n) {
    const int32_t *s = src;
    for (int64_t i = 0; i < n; i++) dst[i] = (float)s[i];
}
static void i64_to_float(const void *src, float *dst, int64_t n) {
    const int64_t *s = src;
    for (int64_t i = 0; i < n; i++) dst[i] = (float)s[i];
}
static void f64_to_float(const void *src, float *dst, int64_t n) {
    const double *s = src;
    for (int64_t i = 0; i < n; i++) dst[i] = (float)s[i];
}

/* ------------------------------------------------------------------------
 * Q8_0: x = d * q, 32 per block.  Encoder = ggml's quantize_row_q8_0_ref:
 * d = amax/127, q = roundf(x/d) (ties away from zero, unlike the K-quants).
 * ------------------------------------------------------------------------ */

static void q8_0_to_float(const void *src, float *dst, int64_t n) {
    const block_q8_0 *b = src;
    for (int64_t i = 0; i < n / QK8_0; i++) {
        const float d = FP16_TO_F32(b[i].d);
        for (int j = 0; j < QK8_0; j++) dst[i * QK8_0 + j] = b[i].qs[j] * d;
    }
}

static void q8_0_from_float(const float *src, void *dst, int64_t n) {
    block_q8_0 *b = dst;
    for (int64_t i = 0; i < n / QK8_0; i++) {
        const float *x = src + i * QK8_0;
        float amax = 0.0f;
        for (int j = 0; j < QK8_0; j++) amax = fmaxf(amax, fabsf(x[j]));
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        b[i].d = F32_TO_FP16(d);
        for (int j = 0; j < QK8_0; j++) b[i].qs[j] = (int8_t)roundf(x[j] * id);
    }
}

/* ggml ignores importance weights for Q8_0 too: 8 bits leave nothing to trade. */
static void q8_0_quantize(const float *src, void *dst, int64_t n, const float *qw) {
    (void)qw;
    q8_0_from_float(src, dst, n);
}

static float vec_dot_q8_0_q8_0(int64_t n, const void *w, const void *x) {
    const block_q8_0 *a = w, *b = x;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK8_0; i++) {
        int32_t isum = 0;
        for (int j = 0; j < QK8_0; j++) isum += a[i].qs[j] * b[i].qs[j];
        sum += (float)isum * (FP16_TO_F32(a[i].d) * FP16_TO_F32(b[i].d));
    }
    return sum;
}

/* ------------------------------------------------------------------------
 * Q8_K: activation format of the K-quant/IQ dots.  f32 d, 256 int8, and the
 * sums of each 16 quants so the min terms cost 16 MACs instead of 256.
 * Encoder = ggml's quantize_row_q8_K_ref: scale from the signed extreme so
 * that it maps to -127 exactly (the SIMD IQ2 kernels rely on |q| <= 127).
 * ------------------------------------------------------------------------ */

static void q8_K_to_float(const void *src, float *dst, int64_t n) {
    const block_q8_K *b = src;
    for (int64_t i = 0; i < n / QK_K; i++)
        for (int j = 0; j < QK_K; j++) dst[i * QK_K + j] = b[i].d * b[i].qs[j];
}

static void q8_K_from_float(const float *src, void *dst, int64_t n) {
    block_q8_K *b = dst;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float *x = src + i * QK_K;
        float max = 0.0f, amax = 0.0f;
        for (int j = 0; j < QK_K; j++) {
            float ax = fabsf(x[j]);
            if (ax > amax) { amax = ax; max = x[j]; }
        }
        if (amax == 0.0f) {
            b[i].d = 0.0f;
            memset(b[i].qs, 0, sizeof b[i].qs);
            memset(b[i].bsums, 0, sizeof b[i].bsums);
            continue;
        }
        const float iscale = -127.0f / max;
        for (int j = 0; j < QK_K; j++) {
            int v = nearest_int(iscale * x[j]);
            b[i].qs[j] = (int8_t)(v < 127 ? v : 127);
        }
        for (int j = 0; j < QK_K / 16; j++) {
            int s = 0;
            for (int l = 0; l < 16; l++) s += b[i].qs[16 * j + l];
            b[i].bsums[j] = (int16_t)s;
        }
        b[i].d = 1.0f / iscale;
    }
}

static void q8_K_quantize(const float *src, void *dst, int64_t n, const float *qw) {
    (void)qw;
    q8_K_from_float(src, dst, n);
}

/* ------------------------------------------------------------------------
 * K-quant helpers
 * ------------------------------------------------------------------------ */

/* Per-element importance for the K-quant and IQ2 searches.  Without an
 * imatrix, weight large values more (rms + |x|, as ggml's Q4_K): they carry
 * most of a dot product.  With one, qw[i] is the mean square activation of
 * column i, and sqrt(sigma2 + x^2) keeps small weights from being ignored.
 * A group whose imatrix entries are all zero (columns never activated in
 * the calibration run) falls back to the plain weighting rather than to an
 * arbitrary encoding. */
static void importance(const float *x, const float *qw, int n, float sigma2, float *w) {
    float rms = sqrtf(sigma2);
    if (qw) {
        float sw = 0.0f;
        for (int i = 0; i < n; i++) {
            w[i] = qw[i] * sqrtf(sigma2 + x[i] * x[i]);
            sw += w[i];
        }
        if (sw > 0.0f && isfinite(sw)) return;
    }
    for (int i = 0; i < n; i++) w[i] = rms + fabsf(x[i]);
}

static float mean_square(const float *x, int n) {
    float s = 0.0f;
    for (int i = 0; i < n; i++) s += x[i] * x[i];
    return s / (float)n;
}

/* Weighted least-squares fit x[i] ~ d*L[i] - m, L[i] in [0, nmax], d >= 0,
 * m >= 0 (the formats store the min unsigned and subtract it).  Tries a
 * fan of quantization grids around the [min, max] range, solves the 2x2
 * normal equations for (d, m) given each candidate L, keeps the best, then
 * polishes with a few re-quantize/re-fit rounds.  Returns d; *m_out = m. */
static float fit_scale_min(int n, int nmax, const float *x, const float *w, uint8_t *L, float *m_out) {
    float xmin = x[0], xmax = x[0];
    float sw = 0.0f;
    for (int i = 0; i < n; i++) {
        if (x[i] < xmin) xmin = x[i];
        if (x[i] > xmax) xmax = x[i];
        sw += w[i];
    }
    if (xmin > 0.0f) xmin = 0.0f; /* the offset can only pull values down */
    if (xmax <= xmin || sw <= 0.0f) {
        memset(L, 0, (size_t)n);
        *m_out = -xmin;
        return 0.0f;
    }

    uint8_t Lt[32];
    float best_err = INFINITY, best_d = (xmax - xmin) / (float)nmax, best_b = xmin;
    for (int k = -10; k <= 10 + 4; k++) {
        float d, b;
        if (k <= 10) {
            /* candidate grid: nmax-1 .. nmax+1 steps across [xmin, xmax] */
            float iscale = ((float)nmax + 0.1f * (float)k) / (xmax - xmin);
            for (int i = 0; i < n; i++) {
                int l = nearest_int(iscale * (x[i] - xmin));
                Lt[i] = (uint8_t)(l < 0 ? 0 : l > nmax ? nmax : l);
            }
        } else {
            /* polish: re-quantize against the best (d, b) so far */
            if (best_d <= 0.0f) break;
            float id = 1.0f / best_d;
            for (int i = 0; i < n; i++) {
                int l = nearest_int((x[i] - best_b) * id);
                Lt[i] = (uint8_t)(l < 0 ? 0 : l > nmax ? nmax : l);
            }
        }
        float swl = 0, swl2 = 0, swx = 0, swlx = 0;
        for (int i = 0; i < n; i++) {
            float wl = w[i] * Lt[i];
            swl += wl;
            swl2 += wl * Lt[i];
            swx += w[i] * x[i];
            swlx += wl * x[i];
        }
        float det = sw * swl2 - swl * swl;
        if (det <= 0.0f) continue;
        d = (sw * swlx - swl * swx) / det;
        b = (swl2 * swx - swl * swlx) / det;
        if (b > 0.0f) { /* min must stay <= 0: refit the scale alone */
            b = 0.0f;
            d = swl2 > 0.0f ? swlx / swl2 : 0.0f;
        }
        if (d <= 0.0f) continue;
        float err = 0.0f;
        for (int i = 0; i < n; i++) {
            float e = d * Lt[i] + b - x[i];
            err += w[i] * e * e;
        }
        if (err < best_err) {
            best_err = err;
            best_d = d;
            best_b = b;
            memcpy(L, Lt, (size_t)n);
        }
    }
    if (best_err == INFINITY) { /* degenerate: plain min/max grid */
        float id = 1.0f / best_d;
        for (int i = 0; i < n; i++) {
            int l = nearest_int((x[i] - xmin) * id);
            L[i] = (uint8_t)(l < 0 ? 0 : l > nmax ? nmax : l);
        }
    }
    *m_out = -best_b;
    return best_d;
}

/* ------------------------------------------------------------------------
 * Q4_K: 8 sub-blocks of 32; x = d*sc*q - dmin*m, sc and m 6-bit, q 4-bit.
 * Scale bytes (ggml's packing): sub-block j < 4 keeps sc in scales[j] and m
 * in scales[j+4] (low 6 bits); j >= 4 keeps the low nibbles in scales[j+4]
 * (sc low, m high) and the top 2 bits in bits 6-7 of scales[j-4] (sc) and
 * scales[j] (m).  Quants: 64-element chunks of 32 bytes, low nibbles first.
 * ------------------------------------------------------------------------ */

static inline void q4_K_scale_min(int j, const uint8_t *q, uint8_t *sc, uint8_t *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

static void q4_K_to_float(const void *src, float *dst, int64_t n) {
    const block_q4_K *b = src;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float d = FP16_TO_F32(b[i].d);
        const float dmin = FP16_TO_F32(b[i].dmin);
        const uint8_t *q = b[i].qs;
        float *y = dst + i * QK_K;
        for (int c = 0; c < 4; c++) {
            uint8_t sc, m;
            q4_K_scale_min(2 * c, b[i].scales, &sc, &m);
            const float d1 = d * sc, m1 = dmin * m;
            q4_K_scale_min(2 * c + 1, b[i].scales, &sc, &m);
            const float d2 = d * sc, m2 = dmin * m;
            for (int l = 0; l < 32; l++) y[l] = d1 * (q[l] & 0xf) - m1;
            for (int l = 0; l < 32; l++) y[32 + l] = d2 * (q[l] >> 4) - m2;
            y += 64;
            q += 32;
        }
    }
}

static void q4_K_quantize(const float *src, void *dst, int64_t n, const float *qw) {
    block_q4_K *b = dst;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float *x = src + i * QK_K;
        const float *xw = qw ? qw + i * QK_K : NULL;
        uint8_t L[QK_K];
        float w[32], scales[8], mins[8];
        float sigma2 = mean_square(x, QK_K);
        float max_scale = 0.0f, max_min = 0.0f;
        for (int j = 0; j < 8; j++) {
            importance(x + 32 * j, xw ? xw + 32 * j : NULL, 32, sigma2, w);
            scales[j] = fit_scale_min(32, 15, x + 32 * j, w, L + 32 * j, &mins[j]);
            if (scales[j] > max_scale) max_scale = scales[j];
            if (mins[j] > max_min) max_min = mins[j];
        }
        /* 6-bit sub-block scales and mins relative to the block maxima */
        const float iscale = max_scale > 0.0f ? 63.0f / max_scale : 0.0f;
        const float imin = max_min > 0.0f ? 63.0f / max_min : 0.0f;
        memset(b[i].scales, 0, sizeof b[i].scales);
        for (int j = 0; j < 8; j++) {
            int ls = nearest_int(iscale * scales[j]), lm = nearest_int(imin * mins[j]);
            ls = ls > 63 ? 63 : ls;
            lm = lm > 63 ? 63 : lm;
            if (j < 4) {
                b[i].scales[j] = (uint8_t)ls;
                b[i].scales[j + 4] = (uint8_t)lm;
            } else {
                b[i].scales[j + 4] = (uint8_t)((ls & 0xf) | ((lm & 0xf) << 4));
                b[i].scales[j - 4] |= (uint8_t)((ls >> 4) << 6);
                b[i].scales[j] |= (uint8_t)((lm >> 4) << 6);
            }
        }
        b[i].d = F32_TO_FP16(max_scale / 63.0f);
        b[i].dmin = F32_TO_FP16(max_min / 63.0f);
        /* re-quantize against the scales actually stored */
        const float d = FP16_TO_F32(b[i].d), dmin = FP16_TO_F32(b[i].dmin);
        for (int j = 0; j < 8; j++) {
            uint8_t sc, m;
            q4_K_scale_min(j, b[i].scales, &sc, &m);
            const float dl = d * sc, ml = dmin * m;
            if (dl == 0.0f) { memset(L + 32 * j, 0, 32); continue; }
            for (int l = 0; l < 32; l++) {
                int q = nearest_int((x[32 * j + l] + ml) / dl);
                L[32 * j + l] = (uint8_t)(q < 0 ? 0 : q > 15 ? 15 : q);
            }
        }
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++)
                b[i].qs[32 * c + l] = (uint8_t)(L[64 * c + l] | (L[64 * c + 32 + l] << 4));
    }
}

static void q4_K_from_float(const float *src, void *dst, int64_t n) {
    q4_K_quantize(src, dst, n, NULL);
}

static float vec_dot_q4_K_q8_K(int64_t n, const void *w, const void *x) {
    const block_q4_K *a = w;
    const block_q8_K *b = x;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const uint8_t *q4 = a[i].qs;
        const int8_t *q8 = b[i].qs;
        int32_t isum = 0, msum = 0;
        for (int c = 0; c < 4; c++) {
            uint8_t sc1, m1, sc2, m2;
            q4_K_scale_min(2 * c, a[i].scales, &sc1, &m1);
            q4_K_scale_min(2 * c + 1, a[i].scales, &sc2, &m2);
            int32_t s1 = 0, s2 = 0;
            for (int l = 0; l < 32; l++) {
                s1 += q8[l] * (q4[l] & 0xf);
                s2 += q8[32 + l] * (q4[l] >> 4);
            }
            isum += sc1 * s1 + sc2 * s2;
            /* min term: sum of the activation over each sub-block, from bsums */
            msum += m1 * (b[i].bsums[4 * c] + b[i].bsums[4 * c + 1]) +
                    m2 * (b[i].bsums[4 * c + 2] + b[i].bsums[4 * c + 3]);
            q4 += 32;
            q8 += 64;
        }
        sum += b[i].d * FP16_TO_F32(a[i].d) * (float)isum - b[i].d * FP16_TO_F32(a[i].dmin) * (float)msum;
    }
    return sum;
}

/* ------------------------------------------------------------------------
 * Q2_K: 16 groups of 16; x = d*(sc&15)*q - dmin*(sc>>4), q 2-bit.  Quants
 * (ggml's order): each 128-element half uses 32 bytes; element 32*j + l of
 * the half sits in bits 2j..2j+1 of byte l.  Group g = element / 16.
 * ------------------------------------------------------------------------ */

static void q2_K_to_float(const void *src, float *dst, int64_t n) {
    const block_q2_K *b = src;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float d = FP16_TO_F32(b[i].d);
        const float dmin = FP16_TO_F32(b[i].dmin);
        const uint8_t *q = b[i].qs;
        float *y = dst + i * QK_K;
        int is = 0;
        for (int h = 0; h < 2; h++) {
            for (int j = 0; j < 4; j++) {
                const int shift = 2 * j;
                for (int part = 0; part < 2; part++) {
                    const uint8_t sc = b[i].scales[is++];
                    const float dl = d * (sc & 0xf), ml = dmin * (sc >> 4);
                    for (int l = 0; l < 16; l++) *y++ = dl * ((q[16 * part + l] >> shift) & 3) - ml;
                }
            }
            q += 32;
        }
    }
}

static void q2_K_quantize(const float *src, void *dst, int64_t n, const float *qw) {
    block_q2_K *b = dst;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float *x = src + i * QK_K;
        const float *xw = qw ? qw + i * QK_K : NULL;
        uint8_t L[QK_K];
        float w[16], scales[16], mins[16];
        float sigma2 = mean_square(x, QK_K);
        float max_scale = 0.0f, max_min = 0.0f;
        for (int j = 0; j < 16; j++) {
            importance(x + 16 * j, xw ? xw + 16 * j : NULL, 16, sigma2, w);
            scales[j] = fit_scale_min(16, 3, x + 16 * j, w, L + 16 * j, &mins[j]);
            if (scales[j] > max_scale) max_scale = scales[j];
            if (mins[j] > max_min) max_min = mins[j];
        }
        /* 4-bit group scales and mins relative to the block maxima */
        const float iscale = max_scale > 0.0f ? 15.0f / max_scale : 0.0f;
        const float imin = max_min > 0.0f ? 15.0f / max_min : 0.0f;
        for (int j = 0; j < 16; j++) {
            int ls = nearest_int(iscale * scales[j]), lm = nearest_int(imin * mins[j]);
            ls = ls > 15 ? 15 : ls;
            lm = lm > 15 ? 15 : lm;
            b[i].scales[j] = (uint8_t)(ls | (lm << 4));
        }
        b[i].d = F32_TO_FP16(max_scale / 15.0f);
        b[i].dmin = F32_TO_FP16(max_min / 15.0f);
        const float d = FP16_TO_F32(b[i].d), dmin = FP16_TO_F32(b[i].dmin);
        for (int j = 0; j < 16; j++) {
            const float dl = d * (b[i].scales[j] & 0xf), ml = dmin * (b[i].scales[j] >> 4);
            if (dl == 0.0f) { memset(L + 16 * j, 0, 16); continue; }
            for (int l = 0; l < 16; l++) {
                int q = nearest_int((x[16 * j + l] + ml) / dl);
                L[16 * j + l] = (uint8_t)(q < 0 ? 0 : q > 3 ? 3 : q);
            }
        }
        for (int h = 0; h < 2; h++)
            for (int l = 0; l < 32; l++) {
                const uint8_t *Lh = L + 128 * h + l;
                b[i].qs[32 * h + l] = (uint8_t)(Lh[0] | (Lh[32] << 2) | (Lh[64] << 4) | (Lh[96] << 6));
            }
    }
}

static void q2_K_from_float(const float *src, void *dst, int64_t n) {
    q2_K_quantize(src, dst, n, NULL);
}

static float vec_dot_q2_K_q8_K(int64_t n, const void *w, const void *x) {
    const block_q2_K *a = w;
    const block_q8_K *b = x;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const uint8_t *q2 = a[i].qs;
        const int8_t *q8 = b[i].qs;
        const uint8_t *sc = a[i].scales;
        int32_t msum = 0;
        for (int j = 0; j < 16; j++) msum += b[i].bsums[j] * (sc[j] >> 4);
        int32_t isum = 0;
        int is = 0;
        for (int h = 0; h < 2; h++) {
            for (int j = 0; j < 4; j++) {
                const int shift = 2 * j;
                for (int part = 0; part < 2; part++) {
                    int32_t s = 0;
                    for (int l = 0; l < 16; l++) s += q8[l] * ((q2[16 * part + l] >> shift) & 3);
                    isum += (sc[is++] & 0xf) * s;
                    q8 += 16;
                }
            }
            q2 += 32;
        }
        const float dall = b[i].d * FP16_TO_F32(a[i].d);
        const float dmin = b[i].d * FP16_TO_F32(a[i].dmin);
        sum += dall * (float)isum - dmin * (float)msum;
    }
    return sum;
}

/* ------------------------------------------------------------------------
 * IQ2_XXS: 8 groups of 32 per block, each stored in 4 u16 = two u32 words:
 * word 0 = 4 grid indices (byte l for 8-group l), word 1 = 4 x 7-bit sign
 * indices (bits 7l..7l+6) and the 4-bit scale s (bits 28..31);
 * x = d * (0.5 + s) * 0.25 * grid[j] * sign[j].
 * ------------------------------------------------------------------------ */

static inline uint32_t iq2_word(const uint16_t *q, int k) {
    return (uint32_t)q[2 * k] | ((uint32_t)q[2 * k + 1] << 16);
}

static inline int iq2_grid_val(int idx, int j) {
    return (int)((ds4_iq2xxs_grid[idx] >> (8 * j)) & 0xff);
}

static void iq2_xxs_to_float(const void *src, float *dst, int64_t n) {
    const block_iq2_xxs *b = src;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float d = FP16_TO_F32(b[i].d);
        float *y = dst + i * QK_K;
        for (int ib = 0; ib < QK_K / 32; ib++) {
            const uint32_t grids = iq2_word(b[i].qs + 4 * ib, 0);
            const uint32_t aux = iq2_word(b[i].qs + 4 * ib, 1);
            const float db = d * (0.5f + (float)(aux >> 28)) * 0.25f;
            for (int l = 0; l < 4; l++) {
                const int gi = (grids >> (8 * l)) & 0xff;
                const uint8_t signs = ds4_ksigns_iq2xs[(aux >> (7 * l)) & 127];
                for (int j = 0; j < 8; j++)
                    y[j] = db * (float)iq2_grid_val(gi, j) * ((signs >> j) & 1 ? -1.0f : 1.0f);
                y += 8;
            }
        }
    }
}

static float vec_dot_iq2_xxs_q8_K(int64_t n, const void *w, const void *x) {
    const block_iq2_xxs *a = w;
    const block_q8_K *b = x;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float d = FP16_TO_F32(a[i].d) * b[i].d;
        const int8_t *q8 = b[i].qs;
        int32_t bsum = 0;
        for (int ib = 0; ib < QK_K / 32; ib++) {
            const uint32_t grids = iq2_word(a[i].qs + 4 * ib, 0);
            const uint32_t aux = iq2_word(a[i].qs + 4 * ib, 1);
            /* (0.5 + s) * 0.25 = (2s + 1) / 8: keep the integer part here,
             * apply the 1/8 once at the end as ggml does */
            const int32_t ls = 2 * (int32_t)(aux >> 28) + 1;
            int32_t sumi = 0;
            for (int l = 0; l < 4; l++) {
                const int gi = (grids >> (8 * l)) & 0xff;
                const uint8_t signs = ds4_ksigns_iq2xs[(aux >> (7 * l)) & 127];
                for (int j = 0; j < 8; j++) {
                    const int v = iq2_grid_val(gi, j) * q8[j];
                    sumi += (signs >> j) & 1 ? -v : v;
                }
                q8 += 8;
            }
            bsum += sumi * ls;
        }
        sum += d * (float)bsum;
    }
    return 0.125f * sum;
}

/* IQ2_XXS encoder.  The grid holds 256 of the 3^8 = 6561 magnitude patterns
 * (levels 8, 25, 43), so a group's nearest pattern is usually not encodable.
 * At first use we build, for every pattern, the list of grid points close to
 * it (within one level step of the nearest); the search then rounds a group
 * to its pattern and scores only those candidates with the real weighted
 * error.  Signs are taken from the data; patterns must have an even number
 * of minus signs, so an odd count flips the least important element (which
 * then wants the smallest magnitude). */

static const float iq2_level_mag[3] = { 8.0f, 25.0f, 43.0f };

#define IQ2_NPAT 6561 /* 3^8 */
static uint32_t iq2_nb_start[IQ2_NPAT + 1];
static uint8_t *iq2_nb_list;
/* grid point g's element j as an index into iq2_best_grid's cost table,
 * 3·j + level: the candidate loop is then 8 loads and adds */
static uint8_t iq2_gcost[256][8];
static pthread_once_t iq2_once = PTHREAD_ONCE_INIT;

static void iq2_init(void) {
    uint8_t glev[256][8];
    for (int g = 0; g < 256; g++)
        for (int j = 0; j < 8; j++) {
            int v = iq2_grid_val(g, j);
            glev[g][j] = (uint8_t)(v == 8 ? 0 : v == 25 ? 1 : 2);
            iq2_gcost[g][j] = (uint8_t)(3 * j + glev[g][j]);
        }
    /* two passes: count, then fill */
    uint8_t *list = NULL;
    for (int pass = 0; pass < 2; pass++) {
        uint32_t total = 0;
        for (int p = 0; p < IQ2_NPAT; p++) {
            int lev[8], t = p;
            for (int j = 0; j < 8; j++) { lev[j] = t % 3; t /= 3; }
            int dist[256], dmin = 1 << 30;
            for (int g = 0; g < 256; g++) {
                int dd = 0;
                for (int j = 0; j < 8; j++) {
                    int e = (int)iq2_level_mag[lev[j]] - (int)iq2_level_mag[glev[g][j]];
                    dd += e * e;
                }
                dist[g] = dd;
                if (dd < dmin) dmin = dd;
            }
            if (pass == 0) iq2_nb_start[p] = total;
            /* nearest points plus the next shell (one more level step) */
            for (int g = 0; g < 256; g++)
                if (dist[g] <= dmin + IQ2_NB_SLACK) {
                    if (pass == 1) list[total] = (uint8_t)g;
                    total++;
                }
        }
        if (pass == 0) {
            iq2_nb_start[IQ2_NPAT] = total;
            list = malloc(total);
            if (!list) abort(); /* ~25 KB (3.8 points per pattern), once per process */
        }
    }
    iq2_nb_list = list;
}

/* Best encodable grid point for 8 sign-adjusted targets xv (mostly >= 0)
 * with weights w at group scale c (value = c * grid).  Returns the index and
 * adds the weighted squared error to *err. */
static int iq2_best_grid(const float *xv, const float *w, float c, float *err) {
    float cost[24]; /* [3·j + level] */
    int p = 0, mul = 1;
    for (int j = 0; j < 8; j++) {
        for (int l = 0; l < 3; l++) {
            float e = xv[j] - c * iq2_level_mag[l];
            cost[3 * j + l] = w[j] * e * e;
        }
        /* nearest level: midpoints 16.5 and 34 in grid units */
        float t = c > 0.0f ? xv[j] / c : 0.0f;
        int lev = !(t < 16.5f) + !(t < 34.0f); /* t < 16.5 ? 0 : t < 34 ? 1 : 2, without branches */
        p += lev * mul;
        mul *= 3;
    }
    int best = iq2_nb_list[iq2_nb_start[p]];
    float best_cost = INFINITY;
    for (uint32_t k = iq2_nb_start[p]; k < iq2_nb_start[p + 1]; k++) {
        const int g = iq2_nb_list[k];
        const uint8_t *gc = iq2_gcost[g];
        float s = 0.0f;
        for (int j = 0; j < 8; j++) s += cost[gc[j]];
        if (s < best_cost) { best_cost = s; best = g; }
    }
    *err += best_cost;
    return best;
}

static void iq2_xxs_quantize(const float *src, void *dst, int64_t n, const float *qw) {
    pthread_once(&iq2_once, iq2_init);
    block_iq2_xxs *b = dst;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float *x = src + i * QK_K;
        const float *xw = qw ? qw + i * QK_K : NULL;
        float w[QK_K], xv[QK_K], scale[8];
        uint8_t signs7[32]; /* 7-bit sign index per 8-group */
        const float sigma2 = mean_square(x, QK_K);
        for (int ib = 0; ib < 8; ib++)
            importance(x + 32 * ib, xw ? xw + 32 * ib : NULL, 32, sigma2, w + 32 * ib);

        /* signs from the data, with the parity fix-up */
        for (int g = 0; g < 32; g++) {
            int mask = 0, nneg = 0;
            for (int j = 0; j < 8; j++) {
                const float v = x[8 * g + j];
                if (v < 0.0f) { mask |= 1 << j; nneg++; }
                xv[8 * g + j] = fabsf(v);
            }
            if (nneg & 1) {
                int jmin = 0;
                float vmin = INFINITY;
                for (int j = 0; j < 8; j++) {
                    const float imp = w[8 * g + j] * x[8 * g + j] * x[8 * g + j];
                    if (imp < vmin) { vmin = imp; jmin = j; }
                }
                mask ^= 1 << jmin;
                xv[8 * g + jmin] = -xv[8 * g + jmin];
            }
            signs7[g] = (uint8_t)(mask & 127); /* bit 7 is implied by parity */
        }

        /* per 32-block: best float scale c (value = c * grid) */
        for (int ib = 0; ib < 8; ib++) {
            const float *xb = xv + 32 * ib, *wb = w + 32 * ib;
            float amax = 0.0f;
            for (int k = 0; k < 32; k++) amax = fmaxf(amax, xb[k]);
            scale[ib] = 0.0f;
            if (amax == 0.0f) continue;
            float best_err = INFINITY;
            for (int t = 0; t <= IQ2_NSCALE + 2; t++) {
                /* The largest target lands at grid value 34 .. 52, or at the
                 * lower levels 8 and 25 (flat groups: grid 0 is all 8s); the
                 * last round re-searches at the best least-squares scale. */
                float c = t < IQ2_NSCALE ? amax / (34.0f + 18.0f * (float)t / (IQ2_NSCALE - 1))
                        : t == IQ2_NSCALE ? amax / 8.0f
                        : t == IQ2_NSCALE + 1 ? amax / 25.0f
                        : scale[ib];
                if (c <= 0.0f) break;
                int gi[4];
                float dummy = 0.0f;
                for (int l = 0; l < 4; l++) gi[l] = iq2_best_grid(xb + 8 * l, wb + 8 * l, c, &dummy);
                /* least-squares scale for these grid points */
                float sxg = 0.0f, sgg = 0.0f, sxx = 0.0f;
                for (int l = 0; l < 4; l++)
                    for (int j = 0; j < 8; j++) {
                        const float g = (float)iq2_grid_val(gi[l], j);
                        const float wk = wb[8 * l + j], xk = xb[8 * l + j];
                        sxg += wk * xk * g;
                        sgg += wk * g * g;
                        sxx += wk * xk * xk;
                    }
                if (sgg <= 0.0f || sxg <= 0.0f) continue;
                const float err = sxx - sxg * sxg / sgg;
                if (err < best_err) { best_err = err; scale[ib] = sxg / sgg; }
            }
        }

        /* super-block scale: value = (d/8) * (2s+1) * grid, s in 0..15 */
        float max_c = 0.0f;
        for (int ib = 0; ib < 8; ib++) max_c = fmaxf(max_c, scale[ib]);
        b[i].d = F32_TO_FP16(8.0f * max_c / 31.0f);
        const float D = FP16_TO_F32(b[i].d) / 8.0f;
        for (int ib = 0; ib < 8; ib++) {
            const float *xb = xv + 32 * ib, *wb = w + 32 * ib;
            int s0 = D > 0.0f ? nearest_int((scale[ib] / D - 1.0f) * 0.5f) : 0;
            s0 = s0 < 0 ? 0 : s0 > 15 ? 15 : s0;
            /* the rounded scale moves the optimum: re-search the grid at the
             * neighbouring codes too and keep the best */
            int best_s = s0, best_gi[4] = { 0, 0, 0, 0 };
            float best_err = INFINITY;
            for (int s = s0 - 1; s <= s0 + 1; s++) {
                if (s < 0 || s > 15) continue;
                const float c = D * (float)(2 * s + 1);
                float err = 0.0f;
                int gi[4];
                for (int l = 0; l < 4; l++) gi[l] = iq2_best_grid(xb + 8 * l, wb + 8 * l, c, &err);
                if (err < best_err) {
                    best_err = err;
                    best_s = s;
                    memcpy(best_gi, gi, sizeof gi);
                }
            }
            const uint32_t w0 = (uint32_t)best_gi[0] | ((uint32_t)best_gi[1] << 8) |
                                ((uint32_t)best_gi[2] << 16) | ((uint32_t)best_gi[3] << 24);
            uint32_t w1 = (uint32_t)best_s << 28;
            for (int l = 0; l < 4; l++) w1 |= (uint32_t)signs7[4 * ib + l] << (7 * l);
            b[i].qs[4 * ib + 0] = (uint16_t)(w0 & 0xffff);
            b[i].qs[4 * ib + 1] = (uint16_t)(w0 >> 16);
            b[i].qs[4 * ib + 2] = (uint16_t)(w1 & 0xffff);
            b[i].qs[4 * ib + 3] = (uint16_t)(w1 >> 16);
        }
    }
}

static void iq2_xxs_from_float(const float *src, void *dst, int64_t n) {
    iq2_xxs_quantize(src, dst, n, NULL);
}

/* ------------------------------------------------------------------------
 * The table
 * ------------------------------------------------------------------------ */

static const ds4_type_traits type_traits[DS4_TYPE_COUNT] = {
    [DS4_TYPE_F32] = { "f32", 1, sizeof(float), false, f32_to_float, f32_from_float,
                       f32_quantize, vec_dot_f32_f32, DS4_TYPE_F32 },
    [DS4_TYPE_F16] = { "f16", 1, sizeof(ds4_fp16), false, f16_to_float, f16_from_float,
                       f16_quantize, vec_dot_f16_f32, DS4_TYPE_F32 },
    [DS4_TYPE_BF16] = { "bf16", 1, sizeof(uint16_t), false, bf16_to_float, bf16_from_float,
                        bf16_quantize, vec_dot_bf16_f32, DS4_TYPE_F32 },
    [DS4_TYPE_Q8_0] = { "q8_0", QK8_0, sizeof(block_q8_0), true, q8_0_to_float, q8_0_from_float,
                        q8_0_quantize, vec_dot_q8_0_q8_0, DS4_TYPE_Q8_0 },
    [DS4_TYPE_Q8_K] = { "q8_K", QK_K, sizeof(block_q8_K), true, q8_K_to_float, q8_K_from_float,
                        q8_K_quantize, NULL, DS4_TYPE_Q8_K },
    [DS4_TYPE_Q2_K] = { "q2_K", QK_K, sizeof(block_q2_K), true, q2_K_to_float, q2_K_from_float,
                        q2_K_quantize, vec_dot_q2_K_q8_K, DS4_TYPE_Q8_K },
    [DS4_TYPE_Q4_K] = { "q4_K", QK_K, sizeof(block_q4_K), true, q4_K_to_float, q4_K_from_float,
                        q4_K_quantize, vec_dot_q4_K_q8_K, DS4_TYPE_Q8_K },
    [DS4_TYPE_IQ2_XXS] = { "iq2_xxs", QK_K, sizeof(block_iq2_xxs), true, iq2_xxs_to_float,
                           iq2_xxs_from_float, iq2_xxs_quantize, vec_dot_iq2_xxs_q8_K, DS4_TYPE_Q8_K },
    [DS4_TYPE_I8] = { "i8", 1, 1, false, i8_to_float, NULL, NULL, NULL, DS4_TYPE_I8 },
    [DS4_TYPE_I16] = { "i16", 1, 2, false, i16_to_float, NULL, NULL, NULL, DS4_TYPE_I16 },
    [DS4_TYPE_I32] = { "i32", 1, 4, false, i32_to_float, NULL, NULL, NULL, DS4_TYPE_I32 },
    [DS4_TYPE_I64] = { "i64", 1, 8, false, i64_to_float, NULL, NULL, NULL, DS4_TYPE_I64 },
    [DS4_TYPE_F64] = { "f64", 1, 8, false, f64_to_float, NULL, NULL, NULL, DS4_TYPE_F64 },
};

/* The live table, with SIMD entries, is dispatch.c's ds4_type_traits_get. */
const ds4_type_traits *ds4_type_traits_ref(int type) {
    if (type < 0 || type >= DS4_TYPE_COUNT || !type_traits[type].name) return NULL;
    return &type_traits[type];
}

const char *ds4_type_name(int type) {
    /* Unknown ids get a per-id name; a small ring of buffers keeps a few
     * results valid at once (used only in diagnostics). */
    static _Thread_local char buf[4][16];
    static _Thread_local int next;
    const ds4_type_traits *t = ds4_type_traits_ref(type);
    if (t) return t->name;
    char *b = buf[next++ & 3];
    snprintf(b, sizeof buf[0], "type#%d", type);
    return b;
}

int ds4_type_from_name(const char *name) {
    if (!name) return -1;
    for (int t = 0; t < DS4_TYPE_COUNT; t++)
        if (type_traits[t].name && strcasecmp(type_traits[t].name, name) == 0) return t;
    return -1;
}

size_t ds4_row_size(int type, int64_t n) {
    const ds4_type_traits *t = ds4_type_traits_ref(type);
    if (!t || n < 0 || n % t->blck != 0) return 0;
    return (size_t)(n / t->blck) * t->size;
}

void ds4_quantize_row_for(int weight_type, const float *x, void *dst, int64_t n) {
    const ds4_type_traits *t = ds4_type_traits_get(weight_type);
    assert(t && t->vec_dot);
    const ds4_type_traits *a = ds4_type_traits_get(t->vec_dot_type);
    a->from_float(x, dst, n);
}
