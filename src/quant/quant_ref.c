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
    [DS4_TYPE_Q2_K] = { "q2_K", QK_K, sizeof(block_q2_K), true, NULL, NULL,
                        NULL, NULL, DS4_TYPE_Q8_K },
    [DS4_TYPE_Q4_K] = { "q4_K", QK_K, sizeof(block_q4_K), true, NULL, NULL,
                        NULL, NULL, DS4_TYPE_Q8_K },
    [DS4_TYPE_IQ2_XXS] = { "iq2_xxs", QK_K, sizeof(block_iq2_xxs), true, NULL,
                           NULL, NULL, NULL, DS4_TYPE_Q8_K },
    [DS4_TYPE_I8] = { "i8", 1, 1, false, i8_to_float, NULL, NULL, NULL, DS4_TYPE_I8 },
    [DS4_TYPE_I16] = { "i16", 1, 2, false, i16_to_float, NULL, NULL, NULL, DS4_TYPE_I16 },
    [DS4_TYPE_I32] = { "i32", 1, 4, false, i32_to_float, NULL, NULL, NULL, DS4_TYPE_I32 },
    [DS4_TYPE_I64] = { "i64", 1, 8, false, i64_to_float, NULL, NULL, NULL, DS4_TYPE_I64 },
    [DS4_TYPE_F64] = { "f64", 1, 8, false, f64_to_float, NULL, NULL, NULL, DS4_TYPE_F64 },
};

const ds4_type_traits *ds4_type_traits_get(int type) {
    if (type < 0 || type >= DS4_TYPE_COUNT || !type_traits[type].name) return NULL;
    return &type_traits[type];
}

const char *ds4_type_name(int type) {
    /* Unknown ids get a per-id name; a small ring of buffers keeps a few
     * results valid at once (used only in diagnostics). */
    static _Thread_local char buf[4][16];
    static _Thread_local int next;
    const ds4_type_traits *t = ds4_type_traits_get(type);
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
    const ds4_type_traits *t = ds4_type_traits_get(type);
    if (!t || n < 0 || n % t->blck != 0) return 0;
    return (size_t)(n / t->blck) * t->size;
}

void ds4_quantize_row_for(int weight_type, const float *x, void *dst, int64_t n) {
    const ds4_type_traits *t = ds4_type_traits_get(weight_type);
    assert(t && t->vec_dot);
    const ds4_type_traits *a = ds4_type_traits_get(t->vec_dot_type);
    a->from_float(x, dst, n);
}
