/* Scalar versions of the forward-pass f32 kernels (simd.h ds4_vec_ops):
 * the loops forward.c and engine/ops.c ran before they were dispatched,
 * operation for operation (the dot and the axpy are the level's own). */
#include "quant/vec_int.h"
#include "quant/quant.h"

#include <math.h>
#include <string.h>

/* 2^(i/32) as double bits, minus i << 47 (glibc __exp2f_data.tab): the
 * vector expf of vec_avx512.c and vec_avx2.c. */
const uint64_t ds4_exp2f_tab[32] __attribute__((aligned(64))) = {
    0x3ff0000000000000, 0x3fefd9b0d3158574, 0x3fefb5586cf9890f, 0x3fef9301d0125b51,
    0x3fef72b83c7d517b, 0x3fef54873168b9aa, 0x3fef387a6e756238, 0x3fef1e9df51fdee1,
    0x3fef06fe0a31b715, 0x3feef1a7373aa9cb, 0x3feedea64c123422, 0x3feece086061892d,
    0x3feebfdad5362a27, 0x3feeb42b569d4f82, 0x3feeab07dd485429, 0x3feea47eb03a5585,
    0x3feea09e667f3bcd, 0x3fee9f75e8ec5f74, 0x3feea11473eb0187, 0x3feea589994cce13,
    0x3feeace5422aa0db, 0x3feeb737b0cdc5e5, 0x3feec49182a3f090, 0x3feed503b23e255d,
    0x3feee89f995ad3ad, 0x3feeff76f2fb5e47, 0x3fef199bdd85529c, 0x3fef3720dcef9069,
    0x3fef5818dcfba487, 0x3fef7c97337b9b5f, 0x3fefa4afa2a490da, 0x3fefd0765b6e4540,
};

void ds4_vec_dot16_ref(const ds4_vec_ops *v, const float *const *a, const float *b, int64_t n, float *out) {
    for (int k = 0; k < 16; k++) out[k] = v->dot(a[k], b, n);
}

void ds4_vec_attn_ref(const ds4_vec_ops *v, const ds4_attn_args *a) {
    int hg = a->hg, dh = a->dh, nrows = a->nrows;
    float *sc = a->scratch; /* [r][g] */
    float mx[DS4_ATTN_HG_MAX], den[DS4_ATTN_HG_MAX];
    for (int g = 0; g < hg; g++) mx[g] = a->sink[g];
    for (int r = 0; r < nrows; r++)
        for (int g = 0; g < hg; g++) {
            float s = v->dot(a->q[g], a->rows[r], dh) * a->scale;
            sc[r * hg + g] = s;
            mx[g] = fmaxf(mx[g], s);
        }
    for (int g = 0; g < hg; g++) {
        den[g] = expf(a->sink[g] - mx[g]);
        memset(a->o[g], 0, sizeof(float) * (size_t)dh);
    }
    for (int r = 0; r < nrows; r++)
        for (int g = 0; g < hg; g++) {
            float p = expf(sc[r * hg + g] - mx[g]);
            den[g] += p;
            v->axpy(a->o[g], p, a->rows[r], dh);
        }
    for (int g = 0; g < hg; g++)
        for (int e = 0; e < dh; e++) a->o[g][e] /= den[g];
}

static void exp_ref(float *y, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = expf(x[i]);
}

/* simd.h; the vector versions (vec_avx512.c exp16_fast, vec_avx2.c
 * exp8_fast) run these operations in this order. */
float ds4_expf_fast(float x) {
    if (x != x) return x + x;
    if (x < DS4_EXPF_FAST_LO) return 0.0f;
    if (x > DS4_EXPF_FAST_HI) return INFINITY;
    const float n = nearbyintf(x * DS4_EXPF_FAST_LOG2E); /* |n| <= 128; the product rounded first */
    float r = fmaf(-n, DS4_EXPF_FAST_LN2HI, x); /* ln2's high part (16 bits) */
    r = fmaf(-n, DS4_EXPF_FAST_LN2LO, r);       /* and the rest */
    float p = DS4_EXPF_FAST_P5;
    p = fmaf(p, r, DS4_EXPF_FAST_P4);
    p = fmaf(p, r, DS4_EXPF_FAST_P3);
    p = fmaf(p, r, DS4_EXPF_FAST_P2);
    p = fmaf(p, r, DS4_EXPF_FAST_P1);
    p = fmaf(p, r, DS4_EXPF_FAST_P0);
    p = fmaf(p, r * r, r + 1.0f);
    return scalbnf(p, (int)n);
}

static void exp_fast_ref(float *y, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = ds4_expf_fast(x[i]);
}

static void swiglu_ref(float *g, const float *u, int64_t n, float c, float scale) {
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i], ui = u[i];
        if (c > 1e-6f) {
            gi = fminf(gi, c);
            ui = fminf(fmaxf(ui, -c), c);
        }
        g[i] = gi / (1.0f + ds4_expf_fast(-gi)) * ui * scale;
    }
}

static void scale_mul_ref(float *y, const float *x, float s, const float *w, int64_t n) {
    if (w)
        for (int64_t i = 0; i < n; i++) y[i] = x[i] * s * w[i];
    else
        for (int64_t i = 0; i < n; i++) y[i] = x[i] * s;
}

static void rot_ref(float *t, const float *c, const float *s, int npairs) {
    for (int i = 0; i < npairs; i++) {
        float a = t[2 * i], b = t[2 * i + 1];
        t[2 * i] = a * c[i] - b * s[i];
        t[2 * i + 1] = a * s[i] + b * c[i];
    }
}

/* 2^ceil(log2(r)) exactly, for r > 0. */
static float pow2_ceil(float r) {
    int e;
    float f = frexpf(r, &e); /* r = f·2^e, f in [0.5, 1) */
    return ldexpf(1.0f, f == 0.5f ? e - 1 : e);
}

void ds4_vec_fp_roundtrip_ref(float *x, int64_t n, int64_t blk, float qmax, float amin, float (*round_fn)(float)) {
    for (int64_t b0 = 0; b0 < n; b0 += blk) {
        int64_t b1 = b0 + blk < n ? b0 + blk : n;
        float a = 0;
        for (int64_t i = b0; i < b1; i++) a = fmaxf(a, fabsf(x[i]));
        a = fmaxf(a, amin);
        float s = pow2_ceil(a / qmax);
        for (int64_t i = b0; i < b1; i++) {
            float v = x[i] / s;
            v = v < -qmax ? -qmax : v > qmax ? qmax : v;
            x[i] = round_fn(v) * s;
        }
    }
}

static void fp8_rt_ref(float *x, int64_t n) {
    ds4_vec_fp_roundtrip_ref(x, n, 64, 448.0f, 1e-4f, ds4_round_fp8_e4m3);
}

static void fp4_rt_ref(float *x, int64_t n) {
    ds4_vec_fp_roundtrip_ref(x, n, 32, 6.0f, 6.0f * 0x1p-126f, ds4_round_fp4_e2m1);
}

void ds4_vec_hc_collapse_ref(const ds4_vec_ops *v, float *x, const float *X, const float *w, int H, int64_t n) {
    memset(x, 0, sizeof(float) * (size_t)n);
    for (int j = 0; j < H; j++) v->axpy(x, w[j], X + (size_t)j * n, n);
}

void ds4_vec_hc_expand_ref(const ds4_vec_ops *v, float *X, const float *o, const float *post, const float *C, int H,
                           int64_t n, float *scratch) {
    memcpy(scratch, X, sizeof(float) * (size_t)H * (size_t)n);
    for (int k = 0; k < H; k++) {
        float *y = X + (size_t)k * n;
        v->scale_mul(y, o, post[k], NULL, n); /* o·post_k */
        for (int j = 0; j < H; j++) v->axpy(y, C[j * H + k], scratch + (size_t)j * n, n);
    }
}

/* simd.h's order; the 16 heads of a group interleave their chains (each
 * still one chain over d), which changes nothing but the speed. */
void ds4_vec_idx_scores_ref(const float *q, const float *w, int nt, int nI, int dI, const float *k, int64_t n,
                            float *out, int64_t ostride) {
    for (int t = 0; t < nt; t++) {
        const float *qt = q + (size_t)t * nI * dI, *wt = w + (size_t)t * nI;
        for (int64_t i = 0; i < n; i++) {
            const float *ki = k + i * dI;
            float s = 0;
            for (int h0 = 0; h0 < nI; h0 += 16) {
                int hn = nI - h0 < 16 ? nI - h0 : 16;
                float acc[16] = {0};
                for (int e = 0; e < dI; e++)
                    for (int h = 0; h < hn; h++) acc[h] = fmaf(qt[(size_t)(h0 + h) * dI + e], ki[e], acc[h]);
                for (int h = 0; h < hn; h++) s = fmaf(wt[h0 + h], acc[h] > 0 ? acc[h] : 0.0f, s);
            }
            out[t * ostride + i] = s;
        }
    }
}

/* Columns in chunks of SOFTPOOL_COLS, so the row loop's scratch stays on
 * the stack (every column keeps its own order: the chunking changes no bit). */
#define SOFTPOOL_COLS 256

void ds4_vec_softpool_ref(const ds4_vec_ops *v, const float *const *kv, const float *const *sc, int rows, int d,
                          float *out) {
    double num[SOFTPOOL_COLS], den[SOFTPOOL_COLS];
    float mx[SOFTPOOL_COLS], p[SOFTPOOL_COLS];
    for (int e0 = 0; e0 < d; e0 += SOFTPOOL_COLS) {
        int n = d - e0 < SOFTPOOL_COLS ? d - e0 : SOFTPOOL_COLS;
        for (int e = 0; e < n; e++) { mx[e] = -INFINITY; num[e] = 0; den[e] = 0; }
        for (int r = 0; r < rows; r++) /* a NaN score never wins (mx is never NaN) */
            for (int e = 0; e < n; e++) mx[e] = sc[r][e0 + e] > mx[e] ? sc[r][e0 + e] : mx[e];
        for (int r = 0; r < rows; r++) {
            const float *s = sc[r] + e0, *k = kv[r] + e0;
            for (int e = 0; e < n; e++) p[e] = s[e] - mx[e];
            v->exp_fast(p, p, n);
            for (int e = 0; e < n; e++) {
                if (s[e] == -INFINITY) continue;
                den[e] += p[e];
                num[e] += (double)p[e] * k[e];
            }
        }
        for (int e = 0; e < n; e++) out[e0 + e] = den[e] > 0 ? (float)(num[e] / den[e]) : 0.0f;
    }
}

void ds4_vec_install_ref(ds4_vec_ops *v) {
    v->dot16 = ds4_vec_dot16_ref;
    v->attn = ds4_vec_attn_ref;
    v->exp = exp_ref;
    v->exp_fast = exp_fast_ref;
    v->swiglu = swiglu_ref;
    v->scale_mul = scale_mul_ref;
    v->rot = rot_ref;
    v->fp8_roundtrip = fp8_rt_ref;
    v->fp4_roundtrip = fp4_rt_ref;
    v->hc_collapse = ds4_vec_hc_collapse_ref;
    v->hc_expand = ds4_vec_hc_expand_ref;
    v->softpool = ds4_vec_softpool_ref;
    v->idx_scores = ds4_vec_idx_scores_ref;
    v->idx8 = NULL;
}
