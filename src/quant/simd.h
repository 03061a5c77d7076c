/* SIMD level selection for the quant kernels and the f32 vector helpers.
 *
 * Levels: "scalar" (quant_ref.c, always present), "avx2" (AVX2+FMA+F16C),
 * "avx512" (AVX-512 F/BW/VL/DQ + VNNI), "neon" (aarch64 builds only).  At the
 * first ds4_type_traits_get() / ds4_vec_*() call (or an explicit
 * ds4_simd_init()) the best level this CPU supports is installed into the
 * live traits table, once, under pthread_once.  DS4_SIMD=scalar|avx2|avx512
 * (or "ref") in the environment forces a level; an unsupported request falls
 * back to the best level with a note on stderr.
 *
 * Guarantees per kernel, relative to the scalar reference (tests/test_simd.c):
 *   Q2_K, Q4_K, IQ2_XXS · Q8_K   bit-identical (integer block sums are exact
 *                                and the per-block float steps run in the
 *                                reference's order)
 *   Q8_0 · Q8_0                  bit-identical: the canonical order, per
 *                                block an exact int32 sum, then
 *                                sum += (float)isum * (d_w * d_x) in f32,
 *                                blocks in order, mul then add (no FMA)
 *   F32, BF16 · F32              exact products summed in double lanes: only
 *                                the order of the double sum differs
 *   F16 · F32                    avx2, avx512, neon: fp32 FMA lanes in a fixed
 *                                order per level (simd_avx2.c, dec_avx512.c,
 *                                simd_neon.c), within (8 + √n)·2^-24·Σ|w·x|
 *                                of the reference
 *   f32 -> Q8_0, f32 -> Q8_K     bit-identical
 *   ds4_vec_axpy_f32             bit-identical (mul then add, no FMA)
 *   ds4_vec_ops.idx_scores       bit-identical (one fmaf order, below)
 * Every level's vec_dot_tile and panel_gemm (quant.h) are bit-identical to
 * its own vec_dot (a NaN result's payload aside, where two NaNs meet).  The
 * avx512 level also installs, where the CPU has them, kernels needing more
 * than its base ISA (iq2_avx512.c: VBMI + BITALG or GFNI, dec_avx512.c: GFNI);
 * they keep the same guarantees.
 *
 * ds4_simd_force() rewrites the live table in place: call it only while no
 * other thread is running kernels (start-up, tests). */
#ifndef DS4_QUANT_SIMD_H
#define DS4_QUANT_SIMD_H

#include <stdint.h>

#include "quant/quant.h"

void ds4_simd_init(void);             /* idempotent; implied by first use */
const char *ds4_simd_level(void);     /* the live level's name */
int ds4_simd_supported(const char *level); /* 1 if this build and CPU run it */
int ds4_simd_force(const char *level);     /* 0, or -1 if unsupported/unknown */
const char *const *ds4_simd_levels(void);  /* all level names, NULL-terminated */

/* Attention of hg heads (1 <= hg <= DS4_ATTN_HG_MAX) of one query over the same rows
 * (MODEL.md §6.7, without the inverse RoPE):
 *   s[g][r] = dot(q[g], rows[r], dh)·scale,  mx = max(sink[g], s[g][·]),
 *   den = expf(sink - mx) + Σ_r p,  p = expf(s - mx),
 *   o[g] = (Σ_r p·rows[r]) / den   (0 + p_0·row_0 + p_1·row_1 ..., mul then add)
 * That is the scalar level's order; the avx512 kernel uses its own fixed
 * order (FMA, one chain per dot: vec_avx512.c), within rounding of it.  At
 * every level a head's result does not depend on hg or on the other heads
 * of the call (bit for bit), so batching never changes a logit.
 * scratch: at least ds4_attn_scratch(nrows) floats. */
#define DS4_ATTN_HG_MAX 16
typedef struct ds4_attn_args {
    int hg, dh, nrows;
    const float *const *rows;
    const float *q[DS4_ATTN_HG_MAX];
    float *o[DS4_ATTN_HG_MAX];
    float sink[DS4_ATTN_HG_MAX];
    float scale;
    float *scratch;
    int cold; /* a hint, no effect on results: the rows are likely not in
               * cache (one query per batch: decode), so kernels prefetch */
} ds4_attn_args;
#define ds4_attn_scratch(nrows) ((int64_t)((nrows) + 16) * DS4_ATTN_HG_MAX)

/* e^x by one fixed sequence of float operations, which every level's
 * exp_fast reproduces bit for bit, in a quarter of the instructions of the
 * vector expf (`exp` below, which works in double to give libm's bits):
 * x = n·ln2 + r, n = nearest(x·log2e), r by a two-part ln2 in fmaf
 * (Cody-Waite), e^r = 1 + r + r²·P(r) with Cephes' expf polynomial P in
 * fmaf (Horner), then scaled by 2^n (scalbnf: one rounding, also for a
 * subnormal result).  Within 1 ulp of expf wherever expf(x) >= 2^-126
 * (tests/test_vec.c sweeps a strided sample of all floats and the binade
 * [-1, -0.5) whole, and every float of [-104, 0] with DS4_TEST_EXP_ALL=1);
 * 0 below that (x < DS4_EXPF_FAST_LO, where expf is subnormal, at most
 * 2^-126 away), inf above DS4_EXPF_FAST_HI (where expf overflows), NaN for
 * NaN.  The SwiGLU, the compressors' softmax pooling and the attention
 * softmax use it. */
#define DS4_EXPF_FAST_LO (-0x1.5d589ep+6f) /* ~ln 2^-126 */
#define DS4_EXPF_FAST_HI (0x1.62e42ep+6f)  /* largest x with expf(x) finite */
float ds4_expf_fast(float x);

/* f32 helpers for the forward pass, dispatched like the table.  Every slot
 * is set at every level (vec_ref.c holds the scalar ones); the kernels of
 * vec_avx512.c are bit-identical to the scalar ones given the level's own
 * dot/axpy.  `exp` is a vector transcription of glibc's expf (x86-64 FMA
 * variant), bit-identical to it there and within 1 ulp of any correctly
 * rounded expf (tests/test_vec.c); `exp_fast` is ds4_expf_fast at every
 * level. */
typedef struct ds4_vec_ops {
    float (*dot)(const float *a, const float *b, int64_t n);
    void (*axpy)(float *y, float a, const float *x, int64_t n); /* y += a·x */
    double (*sumsq)(const float *x, int64_t n);                 /* Σ x², in double */
    /* out[k] = dot(a[k], b, n) for k < 16, each exactly as v->dot */
    void (*dot16)(const struct ds4_vec_ops *v, const float *const *a, const float *b, int64_t n, float *out);
    void (*attn)(const struct ds4_vec_ops *v, const ds4_attn_args *a);
    void (*exp)(float *y, const float *x, int64_t n);           /* y = expf(x) */
    void (*exp_fast)(float *y, const float *x, int64_t n);      /* y = ds4_expf_fast(x), bit for bit */
    /* g = (g' / (1 + ds4_expf_fast(-g')) · u') · scale, g' = min(g, c), u' =
     * clamp(u, ±c) (no clamping when c <= 1e-6) */
    void (*swiglu)(float *g, const float *u, int64_t n, float c, float scale);
    void (*scale_mul)(float *y, const float *x, float s, const float *w, int64_t n); /* y = x·s·w (w NULL: x·s) */
    /* RoPE pairs: (a, b) <- (a·c_i - b·s_i, a·s_i + b·c_i) over t[2i], t[2i+1] */
    void (*rot)(float *t, const float *c, const float *s, int npairs);
    void (*fp8_roundtrip)(float *x, int64_t n); /* = ds4_fp8_roundtrip (engine/ops.h) */
    void (*fp4_roundtrip)(float *x, int64_t n); /* = ds4_fp4_roundtrip */
    /* Hyper-connection mixes over H streams X_j (rows of n floats at stride
     * n), every element in the order of the loops they replace: start from
     * 0 (collapse) or o·post_k (expand), then add w·X_j for j = 0, 1, ...,
     * each a mul then an add.
     *   hc_collapse  x = Σ_j w[j]·X_j
     *   hc_expand    X_k <- o·post[k] + Σ_j C[j·H + k]·X_j for every k, all
     *                from the old streams; scratch: H·n floats (the scalar
     *                version copies the old streams there) */
    void (*hc_collapse)(const struct ds4_vec_ops *v, float *x, const float *X, const float *w, int H, int64_t n);
    void (*hc_expand)(const struct ds4_vec_ops *v, float *X, const float *o, const float *post, const float *C,
                      int H, int64_t n, float *scratch);
    /* A compressor's softmax pooling (MODEL.md §6.4) of `rows` rows of d
     * columns: per column e, out[e] = Σ_r p_r·kv[r][e] / Σ_r p_r with
     * p_r = ds4_expf_fast(sc[r][e] - max_r sc[r][e]), the sums in
     * double over r = 0, 1, ... (each a mul then an add), rows whose score
     * is -inf left out, 0 where none is left.  Bit-identical at every level. */
    void (*softpool)(const struct ds4_vec_ops *v, const float *const *kv, const float *const *sc, int rows, int d,
                     float *out);
    /* Lightning-indexer scores of nt tokens against n rows (MODEL.md §6.6):
     *   out[t·ostride + i] = Σ_h w[t·nI + h]·relu(q_{t,h}·k_i)
     * q: nt·nI·dI floats (token t, head h at (t·nI + h)·dI), k: n rows of
     * dI floats at stride dI.  One order at every level, bit for bit: each
     * dot a single fmaf chain from +0 over d = 0, 1, ..., relu(x) = x > 0 ?
     * x : 0, then s = fmaf(w_h, relu_h, s) from +0 over h = 0, 1, ...  So a
     * score does not depend on nt, n, or where its row and token sit in the
     * call (prefill == chunked prefill == decode). */
    void (*idx_scores)(const float *q, const float *w, int nt, int nI, int dI, const float *k, int64_t n,
                       float *out, int64_t ostride);
    /* The exact int8 route to idx_scores's bits (idx8.h), or NULL where the
     * level has none (avx512 has it). */
    const struct ds4_idx8_ops *idx8;
} ds4_vec_ops;

/* The live helper set (implies ds4_simd_init()); stays valid, and follows
 * ds4_simd_force(). */
const ds4_vec_ops *ds4_vec_ops_live(void);

/* A level's table row / helpers without installing them (tests, benches):
 * 0, or -1 if the level is unsupported here or the type unknown. */
int ds4_simd_traits_for(const char *level, int type, ds4_type_traits *out);
int ds4_simd_vec_ops_for(const char *level, ds4_vec_ops *out);

#endif
