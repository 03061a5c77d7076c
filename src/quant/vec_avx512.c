/* AVX-512 forward-pass f32 kernels (simd.h ds4_vec_ops), "avx512" level.
 *
 * Per-function target attributes, like simd_avx512.c: dispatch.c installs
 * them only after its CPUID checks.  Every kernel but attention reproduces
 * its scalar version (vec_ref.c, with the level's dot_512 / axpy_512) bit
 * for bit (attention: its own fixed order, see attn_512):
 *
 *   dots     each result is dot_512's: two FMA accumulators over 32-float
 *            steps (the 16-float tail into the first), added, then the
 *            _mm512_reduce_add_ps tree.  Sixteen such trees run at once as
 *            a transposing reduction whose every lane adds the same pairs
 *            in the same order (reduce16 below).
 *   axpy     mul then add, rows in order: the running sums live in
 *            registers over a register-sized slice of the head dim instead
 *            of being loaded and stored per row.
 *   exp      exp16 evaluates expf by the method glibc's libm uses on FMA
 *            x86-64 (Tang's table-driven reduction: x·32/ln2 split into
 *            k + r, 2^(k/32) from a 32-entry table of 2^(i/32), a degree-3
 *            polynomial in double), with the same table values and
 *            polynomial constants, so it returns libm's expf bit for bit
 *            (the router's scores use it); written here with intrinsics on
 *            8 double lanes, the overflow/underflow/NaN cases as blends.
 *            exp16_fast is ds4_expf_fast (simd.h), the SwiGLU's, the
 *            compressor pooling's and the attention softmax's e^x, in a
 *            quarter of the instructions.
 *   max      order-free; divisions stay divisions; fminf/fmaxf clamps map
 *            to min/max_ps with the NaN-ignoring operand order.
 *   FP8/FP4  the rounding helpers of fp.c as arithmetic (round to nearest
 *            even at the format's step), checked exhaustively in test_vec. */
#if defined(__x86_64__) || defined(__i386__)

#include "quant/vec_int.h"

#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif

#define TGT __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))
#define TGTI TGT static inline __attribute__((always_inline))

static inline __mmask16 tail_mask(int64_t left) {
    return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
}

/* Runs BODY over the 16-float steps of [0, n) with i the step's start and
 * m its lane mask: whole steps with m a constant 0xFFFF (GCC folds it into
 * plain loads and stores), then one masked tail.  With m made by
 * tail_mask() at every step the elementwise loops ran slower (avx512 axpy
 * in the MoE sum, small-q2 prefill: moe_sum ~6.8 -> ~4.9 us a token). */
#define FOR_STEPS(i, m, n, ...)                                    \
    do {                                                           \
        int64_t i = 0;                                             \
        for (; i + 16 <= (n); i += 16) {                           \
            const __mmask16 m = (__mmask16)0xFFFF;                 \
            __VA_ARGS__                                            \
        }                                                          \
        if (i < (n)) {                                             \
            const __mmask16 m = tail_mask((n) - i);                \
            __VA_ARGS__                                            \
        }                                                          \
    } while (0)

/* ---- exp ------------------------------------------------------------------ */

TGTI __m256 exp8(__m256 x) {
    const __m512d invln2n = _mm512_set1_pd(0x1.71547652b82fep+0 * 32);
    const __m512d shift = _mm512_set1_pd(0x1.8p+52);
    const __m512d c0 = _mm512_set1_pd(0x1.c6af84b912394p-5 / 32 / 32 / 32);
    const __m512d c1 = _mm512_set1_pd(0x1.ebfce50fac4f3p-3 / 32 / 32);
    const __m512d c2 = _mm512_set1_pd(0x1.62e42ff0c52d6p-1 / 32);
    const __m512i *tab = (const __m512i *)ds4_exp2f_tab;
    __m512d xd = _mm512_cvtps_pd(x);
    __m512d kd = _mm512_fmadd_pd(invln2n, xd, shift);
    __m512i ki = _mm512_castpd_si512(kd);
    kd = _mm512_sub_pd(kd, shift);
    __m512d r = _mm512_fmsub_pd(invln2n, xd, kd);
    __m512i t0 = _mm512_permutex2var_epi64(_mm512_load_si512(tab), ki, _mm512_load_si512(tab + 1));
    __m512i t1 = _mm512_permutex2var_epi64(_mm512_load_si512(tab + 2), ki, _mm512_load_si512(tab + 3));
    __mmask8 hi = _mm512_test_epi64_mask(ki, _mm512_set1_epi64(16));
    __m512i t = _mm512_add_epi64(_mm512_mask_blend_epi64(hi, t0, t1), _mm512_slli_epi64(ki, 47));
    __m512d z = _mm512_fmadd_pd(c0, r, c1);
    __m512d r2 = _mm512_mul_pd(r, r);
    __m512d y = _mm512_fmadd_pd(c2, r, _mm512_set1_pd(1.0));
    y = _mm512_fmadd_pd(z, r2, y);
    y = _mm512_mul_pd(y, _mm512_castsi512_pd(t));
    return _mm512_cvtpd_ps(y);
}

TGTI __m512 exp16(__m512 x) {
    __m256 lo = exp8(_mm512_castps512_ps256(x));
    __m256 hi = exp8(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1)));
    __m512 y = _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(_mm512_castps256_ps512(lo)),
                                                   _mm256_castps_pd(hi), 1));
    /* glibc's slow path: x > log(0x1p128) overflows to inf, x below
     * log(0x1p-149) gives the smallest subnormal (may-underflow), below
     * log(0x1p-150) (and -inf) 0, NaN propagates (x + x). */
    __mmask16 over = _mm512_cmp_ps_mask(x, _mm512_set1_ps(0x1.62e42ep6f), _CMP_GT_OQ);
    __mmask16 tiny = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-0x1.9d1d9ep6f), _CMP_LT_OQ);
    __mmask16 zero = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-0x1.9fe368p6f), _CMP_LT_OQ);
    __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    y = _mm512_mask_blend_ps(over, y, _mm512_set1_ps(INFINITY));
    y = _mm512_mask_blend_ps(tiny, y, _mm512_set1_ps(0x1p-149f));
    y = _mm512_mask_blend_ps(zero, y, _mm512_setzero_ps());
    y = _mm512_mask_blend_ps(nan, y, _mm512_add_ps(x, x));
    return y;
}

/* ds4_expf_fast (simd.h) on 16 lanes, its operations in its order, the
 * 2^n scaling by VSCALEFPS (one rounding, as scalbnf); the out-of-range
 * lanes (including x = -inf, whose n·ln2 would be inf - inf) are replaced
 * at the end, NaN passes through every step. */
TGTI __m512 exp16_fast(__m512 x) {
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(DS4_EXPF_FAST_LOG2E)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(DS4_EXPF_FAST_LN2HI), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(DS4_EXPF_FAST_LN2LO), r);
    __m512 p = _mm512_set1_ps(DS4_EXPF_FAST_P5);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(DS4_EXPF_FAST_P4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(DS4_EXPF_FAST_P3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(DS4_EXPF_FAST_P2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(DS4_EXPF_FAST_P1));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(DS4_EXPF_FAST_P0));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    __m512 y = _mm512_scalef_ps(p, n);
    y = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(DS4_EXPF_FAST_LO), _CMP_LT_OQ), y,
                             _mm512_setzero_ps());
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(DS4_EXPF_FAST_HI), _CMP_GT_OQ), y,
                                _mm512_set1_ps(INFINITY));
}

TGT static void exp_fast_512(float *y, const float *x, int64_t n) {
    FOR_STEPS(i, m, n, { _mm512_mask_storeu_ps(y + i, m, exp16_fast(_mm512_maskz_loadu_ps(m, x + i))); });
}

TGT static void exp_512(float *y, const float *x, int64_t n) {
    FOR_STEPS(i, m, n, { _mm512_mask_storeu_ps(y + i, m, exp16(_mm512_maskz_loadu_ps(m, x + i))); });
}

TGT static void swiglu_512(float *g, const float *u, int64_t n, float c, float scale) {
    const __m512 vc = _mm512_set1_ps(c), vnc = _mm512_set1_ps(-c), vs = _mm512_set1_ps(scale);
    const __m512 one = _mm512_set1_ps(1.0f);
    int clamp = c > 1e-6f;
    FOR_STEPS(i, m, n, {
        __m512 gv = _mm512_maskz_loadu_ps(m, g + i), uv = _mm512_maskz_loadu_ps(m, u + i);
        if (clamp) { /* fminf(g, c): min_ps returns its second operand when one is NaN */
            gv = _mm512_min_ps(gv, vc);
            uv = _mm512_min_ps(_mm512_max_ps(uv, vnc), vc);
        }
        __m512 e = exp16_fast(_mm512_sub_ps(_mm512_setzero_ps(), gv));
        __m512 y = _mm512_mul_ps(_mm512_mul_ps(_mm512_div_ps(gv, _mm512_add_ps(one, e)), uv), vs);
        _mm512_mask_storeu_ps(g + i, m, y);
    });
}

/* ---- elementwise ------------------------------------------------------------ */

TGT static void scale_mul_512(float *y, const float *x, float s, const float *w, int64_t n) {
    const __m512 vs = _mm512_set1_ps(s);
    FOR_STEPS(i, m, n, {
        __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), vs);
        if (w) v = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(m, w + i));
        _mm512_mask_storeu_ps(y + i, m, v);
    });
}

/* (a, b) -> (a·c - b·s, a·s + b·c): xc = (a·c, b·c), ys = (b·s, a·s); even
 * lanes subtract, odd lanes add (a·s + b·c == b·c + a·s). */
TGT static void rot_512(float *t, const float *c, const float *s, int npairs) {
    const __m512i dup = _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
    int i = 0;
    for (; i + 8 <= npairs; i += 8) {
        __m512 x = _mm512_loadu_ps(t + 2 * i);
        __m512 cv = _mm512_permutexvar_ps(dup, _mm512_castps256_ps512(_mm256_loadu_ps(c + i)));
        __m512 sv = _mm512_permutexvar_ps(dup, _mm512_castps256_ps512(_mm256_loadu_ps(s + i)));
        __m512 xc = _mm512_mul_ps(x, cv);
        __m512 ys = _mm512_mul_ps(_mm512_permute_ps(x, 0xB1), sv);
        __m512 y = _mm512_mask_sub_ps(_mm512_add_ps(xc, ys), 0x5555, xc, ys);
        _mm512_storeu_ps(t + 2 * i, y);
    }
    for (; i < npairs; i++) {
        float a = t[2 * i], b = t[2 * i + 1];
        t[2 * i] = a * c[i] - b * s[i];
        t[2 * i + 1] = a * s[i] + b * c[i];
    }
}

/* ---- FP8 / FP4 QAT round trips ------------------------------------------------ */

/* fp.c's ds4_round_fp8_e4m3 on |v| <= 448 (the round trip clamps first):
 * below 2^-6 a 2^-9 grid, above it 3 mantissa bits, ties to even. */
TGTI __m512 round_fp8(__m512 v) {
    const __m512 absmask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
    __m512 a = _mm512_and_ps(v, absmask);
    __m512 sub = _mm512_mul_ps(_mm512_roundscale_ps(_mm512_mul_ps(a, _mm512_set1_ps(512.0f)),
                                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC),
                               _mm512_set1_ps(0x1p-9f));
    __m512 e = _mm512_sub_ps(_mm512_getexp_ps(a), _mm512_set1_ps(3.0f)); /* floor(log2 a) - 3 */
    __m512 nrm = _mm512_scalef_ps(_mm512_roundscale_ps(_mm512_scalef_ps(a, _mm512_sub_ps(_mm512_setzero_ps(), e)),
                                                       _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC),
                                  e);
    nrm = _mm512_min_ps(nrm, _mm512_set1_ps(448.0f));
    __mmask16 small = _mm512_cmp_ps_mask(a, _mm512_set1_ps(0x1p-6f), _CMP_LT_OQ);
    __m512 q = _mm512_mask_blend_ps(small, nrm, sub);
    q = _mm512_or_ps(q, _mm512_andnot_ps(absmask, v)); /* copysign (q >= 0) */
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), q, v);
}

/* fp.c's ds4_round_fp4_e2m1 on |v| <= 6: the magnitudes 0, .5, 1, 1.5 |
 * 2, 3 | 4, 6 are steps of 1/2, 1, 2, and ties go to the even code, which
 * is round-to-nearest-even of a / step in each range. */
TGTI __m512 round_fp4(__m512 v) {
    const __m512 absmask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
    const int rn = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    __m512 a = _mm512_and_ps(v, absmask);
    __m512 q0 = _mm512_mul_ps(_mm512_roundscale_ps(_mm512_add_ps(a, a), rn), _mm512_set1_ps(0.5f));
    __m512 q1 = _mm512_roundscale_ps(a, rn);
    __m512 q2 = _mm512_mul_ps(_mm512_roundscale_ps(_mm512_mul_ps(a, _mm512_set1_ps(0.5f)), rn), _mm512_set1_ps(2.0f));
    __m512 q = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, _mm512_set1_ps(2.0f), _CMP_GE_OQ), q0, q1);
    q = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, _mm512_set1_ps(4.0f), _CMP_GE_OQ), q, q2);
    q = _mm512_min_ps(q, _mm512_set1_ps(6.0f));
    q = _mm512_or_ps(q, _mm512_andnot_ps(absmask, v));
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), q, v);
}

/* vec_ref.c's block round trip for one format; blk is 32 or 64. */
TGTI void fp_roundtrip(float *x, int64_t n, int64_t blk, float qmax, float amin, int fp8) {
    const __m512 absmask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
    for (int64_t b0 = 0; b0 < n; b0 += blk) {
        int64_t len = n - b0 < blk ? n - b0 : blk;
        __m512 am = _mm512_setzero_ps();
        for (int64_t i = 0; i < len; i += 16) /* max_ps(|x|, am) keeps am when x is NaN, as fmaxf */
            am = _mm512_max_ps(_mm512_and_ps(_mm512_maskz_loadu_ps(tail_mask(len - i), x + b0 + i), absmask), am);
        float a = fmaxf(_mm512_reduce_max_ps(am), amin);
        int e;
        float f = frexpf(a / qmax, &e);
        float s = ldexpf(1.0f, f == 0.5f ? e - 1 : e);
        const __m512 vs = _mm512_set1_ps(s), hi = _mm512_set1_ps(qmax), lo = _mm512_set1_ps(-qmax);
        for (int64_t i = 0; i < len; i += 16) {
            __mmask16 m = tail_mask(len - i);
            __m512 v = _mm512_div_ps(_mm512_maskz_loadu_ps(m, x + b0 + i), vs);
            /* v < -qmax ? -qmax : v > qmax ? qmax : v  (NaN stays) */
            v = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, lo, _CMP_LT_OQ), v, lo);
            v = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, hi, _CMP_GT_OQ), v, hi);
            v = fp8 ? round_fp8(v) : round_fp4(v);
            _mm512_mask_storeu_ps(x + b0 + i, m, _mm512_mul_ps(v, vs));
        }
    }
}

TGT static void fp8_rt_512(float *x, int64_t n) { fp_roundtrip(x, n, 64, 448.0f, 1e-4f, 1); }
TGT static void fp4_rt_512(float *x, int64_t n) { fp_roundtrip(x, n, 32, 6.0f, 6.0f * 0x1p-126f, 0); }

/* ---- sixteen dots at once ----------------------------------------------------- */

/* Sixteen vectors A[k] -> one vector whose lane 4i + j is
 * _mm512_reduce_add_ps(A[4j + i]), every lane by the same additions:
 *   reduce_add_ps(v): T3 = v.hi256 + v.lo256, T6 = T3.hi128 + T3.lo128,
 *                     T8 = (T6[0] + T6[2], T6[1] + T6[3]), T8[0] + T8[1].
 * Done in two halves of eight (A[0..7] -> Z0, A[8..15] -> Z1). */
TGTI __m512 reduce8(const __m512 *A) {
    __m512 X[4], Y[2];
    for (int m = 0; m < 4; m++) /* blocks [a0+a2, a1+a3, b0+b2, b1+b3] = [T3a, T3b] */
        X[m] = _mm512_add_ps(_mm512_shuffle_f32x4(A[2 * m], A[2 * m + 1], 0x44),
                             _mm512_shuffle_f32x4(A[2 * m], A[2 * m + 1], 0xEE));
    for (int m = 0; m < 2; m++) /* blocks [T6 of A[4m], A[4m+1], A[4m+2], A[4m+3]] */
        Y[m] = _mm512_add_ps(_mm512_shuffle_f32x4(X[2 * m], X[2 * m + 1], 0x88),
                             _mm512_shuffle_f32x4(X[2 * m], X[2 * m + 1], 0xDD));
    /* block i: [T8 of A[i] (2 lanes), T8 of A[4+i] (2 lanes)] */
    return _mm512_add_ps(_mm512_shuffle_ps(Y[0], Y[1], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_ps(Y[0], Y[1], _MM_SHUFFLE(3, 2, 3, 2)));
}

TGTI __m512 reduce_final(__m512 Z0, __m512 Z1) {
    return _mm512_add_ps(_mm512_shuffle_ps(Z0, Z1, _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_ps(Z0, Z1, _MM_SHUFFLE(3, 1, 3, 1)));
}

/* dot_512's accumulation for eight (q, r) pairs, pair k = qs[k / NR] · rs[k % NR]. */
#define DEF_DOTS8(NQ, NR)                                                                            \
    TGTI void dots8_##NQ##x##NR(const float *const *qs, const float *const *rs, int64_t n, __m512 *A) { \
        __m512 s0[8], s1[8];                                                                         \
        for (int k = 0; k < 8; k++) s0[k] = s1[k] = _mm512_setzero_ps();                             \
        int64_t i = 0;                                                                               \
        for (; i + 32 <= n; i += 32)                                                                 \
            _Pragma("GCC unroll 8") for (int qi = 0; qi < NQ; qi++)                                  \
                _Pragma("GCC unroll 8") for (int ri = 0; ri < NR; ri++) {                            \
                    int k = qi * NR + ri;                                                            \
                    s0[k] = _mm512_fmadd_ps(_mm512_loadu_ps(qs[qi] + i), _mm512_loadu_ps(rs[ri] + i), s0[k]); \
                    s1[k] = _mm512_fmadd_ps(_mm512_loadu_ps(qs[qi] + i + 16), _mm512_loadu_ps(rs[ri] + i + 16), \
                                            s1[k]);                                                  \
                }                                                                                    \
        for (; i < n; i += 16) {                                                                     \
            __mmask16 m = tail_mask(n - i);                                                          \
            _Pragma("GCC unroll 8") for (int qi = 0; qi < NQ; qi++)                                  \
                _Pragma("GCC unroll 8") for (int ri = 0; ri < NR; ri++) {                            \
                    int k = qi * NR + ri;                                                            \
                    s0[k] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, qs[qi] + i),                    \
                                            _mm512_maskz_loadu_ps(m, rs[ri] + i), s0[k]);            \
                }                                                                                    \
        }                                                                                            \
        for (int k = 0; k < 8; k++) A[k] = _mm512_add_ps(s0[k], s1[k]);                              \
    }
DEF_DOTS8(8, 1)

/* Lane L of the result: dot(a[L], b).  Slot k of the reduction holds pair
 * 4·(k % 4) + k / 4. */
TGT static void dot16_512(const ds4_vec_ops *v, const float *const *a, const float *b, int64_t n, float *out) {
    (void)v;
    __m512 A[8], Z[2];
    for (int h = 0; h < 2; h++) {
        const float *qs[8];
        for (int k = 0; k < 8; k++) qs[k] = a[4 * (k % 4) + k / 4 + 2 * h];
        dots8_8x1(qs, &b, n, A);
        Z[h] = reduce8(A);
    }
    _mm512_storeu_ps(out, reduce_final(Z[0], Z[1]));
}

/* ---- attention ------------------------------------------------------------------ */

/* attn_512 computes every (query, head) by one fixed sequence of operations
 * that does not depend on hg, on which other heads share the call, or on
 * how rows and heads are tiled, so the engine's results do not depend on
 * its batching (one prefill == chunked prefill == decode, bit for bit):
 *
 *   score    s[r] = hsum(acc)·scale, acc = one FMA chain over the 16-float
 *            chunks of q·row in order, hsum = the _mm512_reduce_add_ps tree
 *            (done sixteen at a time by reduce8/reduce_final, every lane by
 *            the same additions);
 *   softmax  mx = max(sink, s[·]); p = exp16_fast(s - mx) (ds4_expf_fast);
 *            den = expf(sink - mx) + hsum(Σ over 16-row chunks of p, in
 *            order, rows past nrows counting 0);
 *   output   o[e] = (0 + p_0·row_0[e] + p_1·row_1[e] + ..., one FMA per row,
 *            rows in order) / den.
 *
 * It is not the scalar level's operation order (v->dot's two accumulators,
 * mul-then-add axpy, a sequential den): the levels differ by rounding only
 * (tests/test_vec.c bounds it).  Heads are taken in tiles of 4, 2 or 1
 * (G heads x 16/G rows per score tile, G heads x 256/G floats per output
 * tile), and rows in blocks that stay in L1 while every tile of the call
 * uses them: rows are read from L2 about twice per call, whatever hg. */

#define ATTN_RB 32 /* rows per output block: 32 KiB at d_h = 256 */

/* Lane L: hsum(acc[L]) = the _mm512_reduce_add_ps tree of acc[L] (lanes
 * i + 8, then i + 4, i + 2, i + 1 added; addition commutes exactly), for
 * sixteen vectors at once: each stage adds a blend of two inputs to the
 * complementary halves swapped, half the cross-lane shuffles of
 * reduce8/reduce_final. */
TGTI __m512 hsum16(const __m512 *acc) {
    __m512 B[16], X[8], Y[4], Z[2];
    /* stage 4 below leaves lanes 4j + (0, 2, 1, 3): feed them swapped */
    _Pragma("GCC unroll 16") for (int k = 0; k < 16; k++) B[k] = acc[(k & ~3) | ((k & 1) << 1) | ((k >> 1) & 1)];
    /* X[k]: lanes 0-7 B[k] (i + i+8), lanes 8-15 B[k+8] */
    _Pragma("GCC unroll 8") for (int k = 0; k < 8; k++)
        X[k] = _mm512_add_ps(_mm512_mask_blend_ps(0xFF00, B[k], B[k + 8]), _mm512_shuffle_f32x4(B[k], B[k + 8], 0x4E));
    /* Y[k]: 128-bit blocks B[k], B[k+4], B[k+8], B[k+12] (i + i+4) */
    const __m512i sw4 = _mm512_set_epi32(27, 26, 25, 24, 15, 14, 13, 12, 19, 18, 17, 16, 7, 6, 5, 4);
    _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++)
        Y[k] = _mm512_add_ps(_mm512_mask_blend_ps(0xF0F0, X[k], X[k + 4]), _mm512_permutex2var_ps(X[k], sw4, X[k + 4]));
    /* Z[k]: per block j, lanes 0-1 B[k+4j], 2-3 B[k+2+4j] (i + i+2) */
    _Pragma("GCC unroll 2") for (int k = 0; k < 2; k++)
        Z[k] = _mm512_add_ps(_mm512_mask_blend_ps(0xCCCC, Y[k], Y[k + 2]),
                             _mm512_shuffle_ps(Y[k], Y[k + 2], _MM_SHUFFLE(1, 0, 3, 2)));
    /* lanes 4j + (B[4j], B[4j+2], B[4j+1], B[4j+3]) (i + i+1) */
    return _mm512_add_ps(_mm512_shuffle_ps(Z[0], Z[1], _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_ps(Z[0], Z[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

/* Lane g·R + r: score of head q[g] against row rp[r], unscaled, G·R = 16. */
#define DEF_SCORES(G, R)                                                                              \
    TGTI __m512 scores_##G##x##R(const float *const *q, const float *const *rp, int dh) {            \
        __m512 acc[16];                                                                               \
        _Pragma("GCC unroll 16") for (int k = 0; k < 16; k++) acc[k] = _mm512_setzero_ps();          \
        for (int i = 0; i < dh; i += 16) {                                                            \
            __m512 qv[G];                                                                             \
            _Pragma("GCC unroll 16") for (int g = 0; g < G; g++) qv[g] = _mm512_loadu_ps(q[g] + i);  \
            _Pragma("GCC unroll 16") for (int r = 0; r < R; r++) {                                    \
                __m512 rv = _mm512_loadu_ps(rp[r] + i);                                               \
                _Pragma("GCC unroll 16") for (int g = 0; g < G; g++)                                  \
                    acc[g * R + r] = _mm512_fmadd_ps(qv[g], rv, acc[g * R + r]);                      \
            }                                                                                         \
        }                                                                                             \
        return hsum16(acc);                                                                           \
    }
DEF_SCORES(4, 4)
DEF_SCORES(2, 8)
DEF_SCORES(1, 16)

/* Heads g0 .. g0+G-1 against rows [r0, r0 + 16/G) (clamped to nrows - 1;
 * the caller overwrites the scores of rows >= nrows), scaled, into
 * sc[g·nrp + r].  The caller skips tiles wholly past nrows: the last
 * block's pad lanes are then never written, and the softmax's blend
 * replaces whatever they hold. */
TGTI void score_tile(const ds4_attn_args *a, int g0, int G, int r0, float *sc, int nrp) {
    int R = 16 / G;
    const float *rp[16];
    for (int r = 0; r < R; r++) rp[r] = a->rows[r0 + r < a->nrows ? r0 + r : a->nrows - 1];
    const float *const *q = a->q + g0;
    const __m512 vscale = _mm512_set1_ps(a->scale);
    float *d = sc + (size_t)g0 * nrp + r0;
    if (G == 4) {
        __m512 s = _mm512_mul_ps(scores_4x4(q, rp, a->dh), vscale);
        _mm_storeu_ps(d, _mm512_extractf32x4_ps(s, 0));
        _mm_storeu_ps(d + nrp, _mm512_extractf32x4_ps(s, 1));
        _mm_storeu_ps(d + 2 * nrp, _mm512_extractf32x4_ps(s, 2));
        _mm_storeu_ps(d + 3 * nrp, _mm512_extractf32x4_ps(s, 3));
    } else if (G == 2) {
        __m512 s = _mm512_mul_ps(scores_2x8(q, rp, a->dh), vscale);
        _mm256_storeu_ps(d, _mm512_castps512_ps256(s));
        _mm256_storeu_ps(d + nrp, _mm512_extractf32x8_ps(s, 1));
    } else {
        _mm512_storeu_ps(d, _mm512_mul_ps(scores_1x16(q, rp, a->dh), vscale));
    }
}

/* Output tile: heads g0 .. g0+G-1, floats [c0, c0 + 16·NV), rows [r0, r1):
 * acc = (r0 == 0 ? 0 : o) + Σ p·row by FMA in row order, stored to o,
 * divided by den[g] when r1 == nrows. */
#define DEF_ACCUM(G, NV)                                                                              \
    TGTI void accum_##G##_##NV(const ds4_attn_args *a, int g0, const float *p, int nrp, const float *den, \
                               int c0, int r0, int r1) {                                              \
        __m512 acc[G][NV];                                                                            \
        _Pragma("GCC unroll 16") for (int g = 0; g < G; g++)                                          \
            _Pragma("GCC unroll 16") for (int v = 0; v < NV; v++)                                     \
                acc[g][v] = r0 == 0 ? _mm512_setzero_ps() : _mm512_loadu_ps(a->o[g0 + g] + c0 + 16 * v); \
        for (int r = r0; r < r1; r++) {                                                               \
            const float *row = a->rows[r] + c0;                                                       \
            __m512 rv[NV];                                                                            \
            _Pragma("GCC unroll 16") for (int v = 0; v < NV; v++) rv[v] = _mm512_loadu_ps(row + 16 * v); \
            _Pragma("GCC unroll 16") for (int g = 0; g < G; g++) {                                    \
                __m512 pv = _mm512_set1_ps(p[(size_t)(g0 + g) * nrp + r]);                            \
                _Pragma("GCC unroll 16") for (int v = 0; v < NV; v++)                                 \
                    acc[g][v] = _mm512_fmadd_ps(pv, rv[v], acc[g][v]);                                \
            }                                                                                         \
        }                                                                                             \
        int last = r1 == a->nrows;                                                                    \
        _Pragma("GCC unroll 16") for (int g = 0; g < G; g++) {                                        \
            __m512 d = _mm512_set1_ps(den[g0 + g]);                                                   \
            _Pragma("GCC unroll 16") for (int v = 0; v < NV; v++)                                     \
                _mm512_storeu_ps(a->o[g0 + g] + c0 + 16 * v, last ? _mm512_div_ps(acc[g][v], d) : acc[g][v]); \
        }                                                                                             \
    }
DEF_ACCUM(4, 4)
DEF_ACCUM(4, 1)
DEF_ACCUM(2, 8)
DEF_ACCUM(2, 1)
DEF_ACCUM(1, 16)
DEF_ACCUM(1, 1)

/* Heads of the call in tiles: 4 while >= 4 remain, then 2, then 1. */
static inline int head_tile(int left) { return left >= 4 ? 4 : left >= 2 ? 2 : 1; }

TGT static void attn_512(const ds4_vec_ops *v, const ds4_attn_args *a) {
    int hg = a->hg, dh = a->dh, nrows = a->nrows;
    if (hg < 1 || hg > DS4_ATTN_HG_MAX || dh % 16 || nrows == 0) {
        ds4_vec_attn_ref(v, a);
        return;
    }
    int nrp = (nrows + 15) & ~15;
    float *sc = a->scratch; /* [g][r], row stride nrp */
    float den[DS4_ATTN_HG_MAX];

    /* Scores: each block of 16 rows is scored against every head while it
     * is in L1; in the last block only the row tiles that hold a row (a
     * ratio-128 layer's 128 window rows plus 1-4 compressed ones took 9
     * blocks of 4 tiles, now 8 blocks and 1 tile). */
    for (int r0 = 0; r0 < nrows; r0 += 16) {
        /* decode: the next block's rows, which come from memory (the
         * compressed ones scattered by the indexer's selection); decode attn
         * phase ~268 -> ~256 us per token on small-q2 (5 interleaved pairs),
         * while prefill, whose queries share their rows in L2, lost ~5% to
         * the extra loads */
        if (a->cold)
            for (int r = r0 + 16; r < r0 + 32 && r < nrows; r++)
                for (int c = 0; c < dh; c += 16) _mm_prefetch((const char *)(a->rows[r] + c), _MM_HINT_T0);
        for (int g0 = 0, G; g0 < hg; g0 += G) {
            G = head_tile(hg - g0);
            for (int r = r0; r < r0 + 16 && r < nrows; r += 16 / G) score_tile(a, g0, G, r, sc, nrp);
        }
    }

    /* Softmax with the sink. */
    const __mmask16 tail = (__mmask16)(0xFFFFu >> (nrp - nrows));
    for (int g = 0; g < hg; g++) {
        float *s = sc + (size_t)g * nrp;
        __m512 pad = _mm512_mask_blend_ps(tail, _mm512_set1_ps(-INFINITY), _mm512_loadu_ps(s + nrp - 16));
        _mm512_storeu_ps(s + nrp - 16, pad);
        __m512 m = _mm512_set1_ps(a->sink[g]);
        for (int r = 0; r < nrp; r += 16) m = _mm512_max_ps(m, _mm512_loadu_ps(s + r));
        __m512 mx = _mm512_set1_ps(_mm512_reduce_max_ps(m));
        __m512 dsum = _mm512_setzero_ps();
        for (int r = 0; r < nrp; r += 16) {
            __m512 p = exp16_fast(_mm512_sub_ps(_mm512_loadu_ps(s + r), mx));
            _mm512_storeu_ps(s + r, p);
            dsum = _mm512_add_ps(dsum, p);
        }
        den[g] = expf(a->sink[g] - _mm512_cvtss_f32(mx)) + _mm512_reduce_add_ps(dsum);
    }

    /* Weighted sum, in blocks of ATTN_RB rows reused from L1 by every tile. */
    for (int r0 = 0; r0 < nrows; r0 += ATTN_RB) {
        int r1 = r0 + ATTN_RB < nrows ? r0 + ATTN_RB : nrows;
        for (int g0 = 0, G; g0 < hg; g0 += G) {
            G = head_tile(hg - g0);
            int cw = 256 / G, c0 = 0;
            for (; c0 + cw <= dh; c0 += cw) {
                if (G == 4) accum_4_4(a, g0, sc, nrp, den, c0, r0, r1);
                else if (G == 2) accum_2_8(a, g0, sc, nrp, den, c0, r0, r1);
                else accum_1_16(a, g0, sc, nrp, den, c0, r0, r1);
            }
            for (; c0 < dh; c0 += 16) {
                if (G == 4) accum_4_1(a, g0, sc, nrp, den, c0, r0, r1);
                else if (G == 2) accum_2_1(a, g0, sc, nrp, den, c0, r0, r1);
                else accum_1_1(a, g0, sc, nrp, den, c0, r0, r1);
            }
        }
    }
}

/* Hyper-connection mixes in one pass: per 16 floats, the H old stream
 * values are loaded once and every output is formed in registers, the
 * scalar version's mul-then-add steps in its order (so bit-identical to it),
 * instead of H + H² passes over the rows plus a copy.  Up to HC_MAX streams
 * (V4 has 4); more fall back on the scalar version.  The loops over H carry
 * unroll pragmas: at -O2 GCC 12 kept even the constant-H (4) copy as loops
 * over stack arrays, every stream value stored and reloaded per 16 floats;
 * unrolled, H = 4 lives in registers (small-q2 prefill hc 40-43 -> 35-39
 * us a token, 7 interleaved pairs). */
#define HC_MAX 8

TGTI void hc_expand_n(float *X, const float *o, const float *post, const float *C, const int H, int64_t n) {
    /* zero-filled: unrolled for a variable H, the loops would otherwise
     * read (never use) entries past H, and GCC warns */
    __m512 pk[HC_MAX] = {{0}}, cjk[HC_MAX][HC_MAX] = {{{0}}};
    _Pragma("GCC unroll 8") for (int k = 0; k < H; k++) {
        pk[k] = _mm512_set1_ps(post[k]);
        _Pragma("GCC unroll 8") for (int j = 0; j < H; j++) cjk[j][k] = _mm512_set1_ps(C[j * H + k]);
    }
    FOR_STEPS(i, m, n, {
        __m512 old[HC_MAX] = {{0}};
        _Pragma("GCC unroll 8") for (int j = 0; j < H; j++) old[j] = _mm512_maskz_loadu_ps(m, X + (size_t)j * n + i);
        const __m512 ov = _mm512_maskz_loadu_ps(m, o + i);
        _Pragma("GCC unroll 8") for (int k = 0; k < H; k++) {
            __m512 y = _mm512_mul_ps(ov, pk[k]);
            _Pragma("GCC unroll 8") for (int j = 0; j < H; j++) y = _mm512_add_ps(y, _mm512_mul_ps(cjk[j][k], old[j]));
            _mm512_mask_storeu_ps(X + (size_t)k * n + i, m, y);
        }
    });
}

TGT static void hc_expand_512(const ds4_vec_ops *v, float *X, const float *o, const float *post, const float *C,
                              int H, int64_t n, float *scratch) {
    if (H == 4) hc_expand_n(X, o, post, C, 4, n); /* constant H: the loops unroll into registers */
    else if (H >= 1 && H <= HC_MAX) hc_expand_n(X, o, post, C, H, n);
    else ds4_vec_hc_expand_ref(v, X, o, post, C, H, n, scratch);
}

TGTI void hc_collapse_n(float *x, const float *X, const float *w, const int H, int64_t n) {
    __m512 wj[HC_MAX] = {{0}};
    _Pragma("GCC unroll 8") for (int j = 0; j < H; j++) wj[j] = _mm512_set1_ps(w[j]);
    FOR_STEPS(i, m, n, {
        __m512 y = _mm512_setzero_ps();
        _Pragma("GCC unroll 8") for (int j = 0; j < H; j++) y = _mm512_add_ps(y, _mm512_mul_ps(wj[j], _mm512_maskz_loadu_ps(m, X + (size_t)j * n + i)));
        _mm512_mask_storeu_ps(x + i, m, y);
    });
}

TGT static void hc_collapse_512(const ds4_vec_ops *v, float *x, const float *X, const float *w, int H, int64_t n) {
    if (H == 4) hc_collapse_n(x, X, w, 4, n);
    else if (H >= 1 && H <= HC_MAX) hc_collapse_n(x, X, w, H, n);
    else ds4_vec_hc_collapse_ref(v, x, X, w, H, n);
}

/* ---- lightning-indexer scores --------------------------------------------------- */

/* idx_scores_512 puts rows across the lanes: a block of IDX_RB rows is
 * transposed once (16x16 tiles) into kt[d] = (k_{i0}[d], ..., k_{i0+15}[d]),
 * and then, for every token of the call while the block sits in L1, H heads
 * x 2 row vectors run as 2·H independent FMA chains over d, q_h[d] a
 * broadcast: lane r's chain is exactly the reference's fmaf chain of row r,
 * and relu and the head sum are lane-wise in head order, so every lane is
 * the scalar reference bit for bit whatever the tiling.  The transposes
 * cost ~4/(nt·nI) of the FMAs.  Each row load also prefetches the same
 * line of the next block: in decode the rows come from memory (~1 MB a
 * layer at 16K on the small model), and without it the indexer phase took
 * twice as long (small-q2, 16K frontier: 355 -> 190 us a token, 2
 * interleaved pairs; two blocks ahead was no better). */
#define IDX_RB 32
#define IDX_DMAX 256 /* kt on the stack: 32 KiB at most; wider heads use the reference */

/* r[j] = row j (16 floats) -> r[c] = column c (lane j = row j). */
TGTI void tr16(__m512 *r) {
    __m512 t[16];
    _Pragma("GCC unroll 8") for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);     /* per 128-bit lane: cols 0,1 of 2 rows */
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]); /* cols 2,3 */
    }
    __m512 u[16]; /* u[4j + c], lane L: rows 4j..4j+3 at col 4L + c */
    _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) {
        __m512d a = _mm512_castps_pd(t[4 * j]), b = _mm512_castps_pd(t[4 * j + 1]);
        __m512d c = _mm512_castps_pd(t[4 * j + 2]), d = _mm512_castps_pd(t[4 * j + 3]);
        u[4 * j] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        u[4 * j + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        u[4 * j + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        u[4 * j + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    /* 4x4 transpose of the 128-bit lanes of u[c], u[4+c], u[8+c], u[12+c] */
    _Pragma("GCC unroll 4") for (int c = 0; c < 4; c++) {
        __m512 v0 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x88), v1 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xDD);
        __m512 v2 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x88), v3 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xDD);
        r[c] = _mm512_shuffle_f32x4(v0, v2, 0x88);
        r[8 + c] = _mm512_shuffle_f32x4(v0, v2, 0xDD);
        r[4 + c] = _mm512_shuffle_f32x4(v1, v3, 0x88);
        r[12 + c] = _mm512_shuffle_f32x4(v1, v3, 0xDD);
    }
}

/* Heads [h, h + H) of one token against the block's two row vectors, folded
 * into the running sums s0, s1 in head order. */
#define DEF_IDX_TILE(H)                                                                               \
    TGTI void idx_tile_##H(const float *qh, const float *wh, int dI, const float *kt, __m512 *s0, __m512 *s1) { \
        __m512 a0[H], a1[H];                                                                          \
        _Pragma("GCC unroll 8") for (int g = 0; g < H; g++) a0[g] = a1[g] = _mm512_setzero_ps();     \
        for (int e = 0; e < dI; e++) {                                                                \
            __m512 k0 = _mm512_load_ps(kt + (size_t)e * 16);                                          \
            __m512 k1 = _mm512_load_ps(kt + (size_t)(IDX_DMAX + e) * 16);                             \
            _Pragma("GCC unroll 8") for (int g = 0; g < H; g++) {                                     \
                __m512 qb = _mm512_set1_ps(qh[(size_t)g * dI + e]);                                   \
                a0[g] = _mm512_fmadd_ps(qb, k0, a0[g]);                                               \
                a1[g] = _mm512_fmadd_ps(qb, k1, a1[g]);                                               \
            }                                                                                         \
        }                                                                                             \
        const __m512 z = _mm512_setzero_ps();                                                         \
        _Pragma("GCC unroll 8") for (int g = 0; g < H; g++) { /* max_ps(x, 0) = x > 0 ? x : 0 */      \
            __m512 wb = _mm512_set1_ps(wh[g]);                                                        \
            *s0 = _mm512_fmadd_ps(wb, _mm512_max_ps(a0[g], z), *s0);                                  \
            *s1 = _mm512_fmadd_ps(wb, _mm512_max_ps(a1[g], z), *s1);                                  \
        }                                                                                             \
    }
DEF_IDX_TILE(8)
DEF_IDX_TILE(4)
DEF_IDX_TILE(2)
DEF_IDX_TILE(1)

TGT static void idx_scores_512(const float *q, const float *w, int nt, int nI, int dI, const float *k, int64_t n,
                               float *out, int64_t ostride) {
    if (dI < 1 || dI > IDX_DMAX || nI < 1) {
        ds4_vec_idx_scores_ref(q, w, nt, nI, dI, k, n, out, ostride);
        return;
    }
    float kt[2 * IDX_DMAX * 16] __attribute__((aligned(64))); /* [row vector][d][16 rows] */
    for (int64_t i0 = 0; i0 < n; i0 += IDX_RB) {
        /* transpose rows [i0, i0 + 32) (zeros past n) */
        for (int v = 0; v < 2; v++)
            for (int c = 0; c < dI; c += 16) {
                __mmask16 dm = tail_mask(dI - c);
                __m512 r[16];
                _Pragma("GCC unroll 16") for (int j = 0; j < 16; j++) {
                    int64_t row = i0 + 16 * v + j;
                    r[j] = row < n ? _mm512_maskz_loadu_ps(dm, k + row * dI + c) : _mm512_setzero_ps();
                    if (row + IDX_RB < n) _mm_prefetch((const char *)(k + (row + IDX_RB) * dI + c), _MM_HINT_T0);
                }
                tr16(r);
                float *dst = kt + ((size_t)v * IDX_DMAX + c) * 16;
                _Pragma("GCC unroll 16") for (int d = 0; d < 16; d++) _mm512_store_ps(dst + d * 16, r[d]);
            }
        __mmask16 m0 = tail_mask(n - i0), m1 = n - i0 > 16 ? tail_mask(n - i0 - 16) : 0;
        for (int t = 0; t < nt; t++) {
            const float *qt = q + (size_t)t * nI * dI, *wt = w + (size_t)t * nI;
            __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
            int h = 0;
            for (; h + 8 <= nI; h += 8) idx_tile_8(qt + (size_t)h * dI, wt + h, dI, kt, &s0, &s1);
            if (h + 4 <= nI) { idx_tile_4(qt + (size_t)h * dI, wt + h, dI, kt, &s0, &s1); h += 4; }
            if (h + 2 <= nI) { idx_tile_2(qt + (size_t)h * dI, wt + h, dI, kt, &s0, &s1); h += 2; }
            if (h < nI) idx_tile_1(qt + (size_t)h * dI, wt + h, dI, kt, &s0, &s1);
            float *o = out + t * ostride + i0;
            _mm512_mask_storeu_ps(o, m0, s0);
            if (m1) _mm512_mask_storeu_ps(o + 16, m1, s1);
        }
    }
}

/* ---- compressor pooling ------------------------------------------------- */

/* ds4_vec_softpool_ref 16 columns at a time: the column max, then per row
 * p = exp16_fast(s - mx) and the double sums, 8 columns per register, each a
 * mul then an add, the -inf rows masked out -- the scalar loop's
 * operations lane by lane.  (The scalar loop was ~1.4% of a small-q2
 * prefill: this engine compiles forward.c for baseline x86-64.) */
TGT static void softpool_512(const ds4_vec_ops *v, const float *const *kv, const float *const *sc, int rows, int d,
                             float *out) {
    (void)v;
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    for (int e0 = 0; e0 < d; e0 += 16) {
        const __mmask16 m = tail_mask(d - e0);
        __m512 mx = ninf;
        for (int r = 0; r < rows; r++) mx = _mm512_max_ps(_mm512_maskz_loadu_ps(m, sc[r] + e0), mx);
        __m512d num0 = _mm512_setzero_pd(), num1 = num0, den0 = num0, den1 = num0;
        for (int r = 0; r < rows; r++) {
            const __m512 s = _mm512_maskz_loadu_ps(m, sc[r] + e0), k = _mm512_maskz_loadu_ps(m, kv[r] + e0);
            const __m512 p = exp16_fast(_mm512_sub_ps(s, mx));
            const __mmask16 live = _mm512_cmp_ps_mask(s, ninf, _CMP_NEQ_UQ);
            const __mmask8 l0 = (__mmask8)live, l1 = (__mmask8)(live >> 8);
            const __m512d p0 = _mm512_cvtps_pd(_mm512_castps512_ps256(p));
            const __m512d p1 = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(p), 1)));
            const __m512d k0 = _mm512_cvtps_pd(_mm512_castps512_ps256(k));
            const __m512d k1 = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(k), 1)));
            den0 = _mm512_mask_add_pd(den0, l0, den0, p0);
            den1 = _mm512_mask_add_pd(den1, l1, den1, p1);
            num0 = _mm512_mask_add_pd(num0, l0, num0, _mm512_mul_pd(p0, k0));
            num1 = _mm512_mask_add_pd(num1, l1, num1, _mm512_mul_pd(p1, k1));
        }
        const __m512d zero = _mm512_setzero_pd();
        const __m256 o0 = _mm512_cvtpd_ps(_mm512_maskz_div_pd(_mm512_cmp_pd_mask(den0, zero, _CMP_GT_OQ), num0, den0));
        const __m256 o1 = _mm512_cvtpd_ps(_mm512_maskz_div_pd(_mm512_cmp_pd_mask(den1, zero, _CMP_GT_OQ), num1, den1));
        const __m512 o = _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(_mm512_castps256_ps512(o0)),
                                                             _mm256_castps_pd(o1), 1));
        _mm512_mask_storeu_ps(out + e0, m, o);
    }
}

void ds4_vec_install_avx512(ds4_vec_ops *v) {
    v->dot16 = dot16_512;
    v->softpool = softpool_512;
    v->attn = attn_512;
    v->exp = exp_512;
    v->exp_fast = exp_fast_512;
    v->swiglu = swiglu_512;
    v->scale_mul = scale_mul_512;
    v->rot = rot_512;
    v->fp8_roundtrip = fp8_rt_512;
    v->fp4_roundtrip = fp4_rt_512;
    v->hc_collapse = hc_collapse_512;
    v->hc_expand = hc_expand_512;
    v->idx_scores = idx_scores_512;
}

#else /* not x86 */

#include "quant/vec_int.h"

void ds4_vec_install_avx512(ds4_vec_ops *v) { (void)v; }

#endif
