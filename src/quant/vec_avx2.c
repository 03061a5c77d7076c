/* AVX2 forward-pass f32 kernels (simd.h ds4_vec_ops), "avx2" level: the
 * slots not set here keep their scalar versions (vec_ref.c).
 *
 *   exp         vec_avx512.c's transcription of glibc's expf (libm's bits)
 *               on 4-double halves.
 *   exp_fast    ds4_expf_fast (simd.h) bit for bit; the SwiGLU's e^x (its
 *               other steps as the scalar loop) and the attention's.
 *   attn        attn_512's fixed order on 8 lanes (see attn_avx2): within
 *               rounding of the scalar level, its heads independent of how
 *               they are grouped.
 *   hc mixes    one pass per 8 floats, the scalar steps in order (bit for
 *               bit).
 *
 *   idx_scores  vec_avx512.c's scheme on 8 lanes: rows across the lanes
 *               (8x8 transposes of a 16-row block), 4 heads x 2 row vectors
 *               of FMA chains (16 ymm registers), relu and the head sum
 *               lane-wise in head order: the scalar reference bit for bit. */
#if defined(__x86_64__) || defined(__i386__)

#include "quant/vec_int.h"

#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif

#define TGT __attribute__((target("avx2,fma")))
#define TGTI TGT static inline __attribute__((always_inline))

/* Lanes [0, left) of 8 (all when left >= 8). */
TGTI __m256i tail8(int64_t left) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(left >= 8 ? 8 : (int)left), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* Runs BODY over the 8-float steps of [0, n), i the step's start: whole
 * steps with `full` a constant 1, then one tail with full 0 and m its lane
 * mask.  LD8/ST8 are plain loads and stores where full, vmaskmov at the
 * tail only (vec_avx512.c's FOR_STEPS: masks at every step ran its
 * elementwise loops slower). */
#define FOR_STEPS8(i, m, full, n, ...)                          \
    do {                                                        \
        int64_t i = 0;                                          \
        for (; i + 8 <= (n); i += 8) {                          \
            const int full = 1;                                 \
            const __m256i m = _mm256_set1_epi32(-1);            \
            (void)m;                                            \
            __VA_ARGS__                                         \
        }                                                       \
        if (i < (n)) {                                          \
            const int full = 0;                                 \
            const __m256i m = tail8((n) - i);                   \
            __VA_ARGS__                                         \
        }                                                       \
    } while (0)
#define LD8(p, m, full) ((full) ? _mm256_loadu_ps(p) : _mm256_maskload_ps((p), (m)))
#define ST8(p, m, full, v) ((full) ? _mm256_storeu_ps((p), (v)) : _mm256_maskstore_ps((p), (m), (v)))

#define IDX_RB 16
#define IDX_DMAX 256 /* kt on the stack: 16 KiB at most; wider heads use the reference */

/* r[j] = row j (8 floats) -> r[c] = column c (lane j = row j). */
TGTI void tr8(__m256 *r) {
    __m256 t[8], u[8];
    _Pragma("GCC unroll 4") for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);     /* per 128-bit lane: cols 0,1 of 2 rows */
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]); /* cols 2,3 */
    }
    _Pragma("GCC unroll 2") for (int j = 0; j < 2; j++) { /* u[4j + c], lane L: rows 4j..4j+3 at col 4L + c */
        u[4 * j] = _mm256_shuffle_ps(t[4 * j], t[4 * j + 2], 0x44);
        u[4 * j + 1] = _mm256_shuffle_ps(t[4 * j], t[4 * j + 2], 0xEE);
        u[4 * j + 2] = _mm256_shuffle_ps(t[4 * j + 1], t[4 * j + 3], 0x44);
        u[4 * j + 3] = _mm256_shuffle_ps(t[4 * j + 1], t[4 * j + 3], 0xEE);
    }
    _Pragma("GCC unroll 4") for (int c = 0; c < 4; c++) {
        r[c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x20);
        r[4 + c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x31);
    }
}

#define DEF_IDX_TILE(H)                                                                               \
    TGTI void idx_tile_##H(const float *qh, const float *wh, int dI, const float *kt, __m256 *s0, __m256 *s1) { \
        __m256 a0[H], a1[H];                                                                          \
        _Pragma("GCC unroll 4") for (int g = 0; g < H; g++) a0[g] = a1[g] = _mm256_setzero_ps();                             \
        for (int e = 0; e < dI; e++) {                                                                \
            __m256 k0 = _mm256_load_ps(kt + (size_t)e * 8);                                           \
            __m256 k1 = _mm256_load_ps(kt + (size_t)(IDX_DMAX + e) * 8);                              \
            _Pragma("GCC unroll 4") for (int g = 0; g < H; g++) {                                   \
                __m256 qb = _mm256_broadcast_ss(qh + (size_t)g * dI + e);                             \
                a0[g] = _mm256_fmadd_ps(qb, k0, a0[g]);                                               \
                a1[g] = _mm256_fmadd_ps(qb, k1, a1[g]);                                               \
            }                                                                                         \
        }                                                                                             \
        const __m256 z = _mm256_setzero_ps();                                                         \
        _Pragma("GCC unroll 4") for (int g = 0; g < H; g++) { /* max_ps(x, 0) = x > 0 ? x : 0 */                              \
            __m256 wb = _mm256_broadcast_ss(wh + g);                                                  \
            *s0 = _mm256_fmadd_ps(wb, _mm256_max_ps(a0[g], z), *s0);                                  \
            *s1 = _mm256_fmadd_ps(wb, _mm256_max_ps(a1[g], z), *s1);                                  \
        }                                                                                             \
    }
DEF_IDX_TILE(4)
DEF_IDX_TILE(2)
DEF_IDX_TILE(1)

TGT static void idx_scores_avx2(const float *q, const float *w, int nt, int nI, int dI, const float *k, int64_t n,
                                float *out, int64_t ostride) {
    if (dI < 1 || dI > IDX_DMAX || nI < 1) {
        ds4_vec_idx_scores_ref(q, w, nt, nI, dI, k, n, out, ostride);
        return;
    }
    float kt[2 * IDX_DMAX * 8] __attribute__((aligned(32))); /* [row vector][d][8 rows] */
    for (int64_t i0 = 0; i0 < n; i0 += IDX_RB) {
        for (int v = 0; v < 2; v++)
            for (int c = 0; c < dI; c += 8) {
                const __m256i dm = tail8(dI - c);
                __m256 r[8];
                _Pragma("GCC unroll 8") for (int j = 0; j < 8; j++) {
                    int64_t row = i0 + 8 * v + j;
                    r[j] = row < n ? _mm256_maskload_ps(k + row * dI + c, dm) : _mm256_setzero_ps();
                    if (c % 16 == 0 && row + IDX_RB < n) /* the next block's line (vec_avx512.c) */
                        _mm_prefetch((const char *)(k + (row + IDX_RB) * dI + c), _MM_HINT_T0);
                }
                tr8(r);
                float *dst = kt + ((size_t)v * IDX_DMAX + c) * 8;
                _Pragma("GCC unroll 8") for (int d = 0; d < 8; d++) _mm256_store_ps(dst + d * 8, r[d]);
            }
        int64_t left = n - i0 < IDX_RB ? n - i0 : IDX_RB;
        for (int t = 0; t < nt; t++) {
            const float *qt = q + (size_t)t * nI * dI, *wt = w + (size_t)t * nI;
            __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
            int h = 0;
            for (; h + 4 <= nI; h += 4) idx_tile_4(qt + (size_t)h * dI, wt + h, dI, kt, &s0, &s1);
            if (h + 2 <= nI) { idx_tile_2(qt + (size_t)h * dI, wt + h, dI, kt, &s0, &s1); h += 2; }
            if (h < nI) idx_tile_1(qt + (size_t)h * dI, wt + h, dI, kt, &s0, &s1);
            float *o = out + t * ostride + i0;
            if (left == IDX_RB) {
                _mm256_storeu_ps(o, s0);
                _mm256_storeu_ps(o + 8, s1);
            } else {
                float tmp[IDX_RB];
                _mm256_storeu_ps(tmp, s0);
                _mm256_storeu_ps(tmp + 8, s1);
                memcpy(o, tmp, sizeof(float) * (size_t)left);
            }
        }
    }
}

/* ---- exp, SwiGLU ------------------------------------------------------------ */

/* vec_avx512.c's exp8 (glibc's FMA expf, Tang's table method in double) on
 * two 4-double halves, the table entry by a 64-bit gather: libm's bits. */
TGTI __m256d exp4d(__m256d xd) {
    const __m256d invln2n = _mm256_set1_pd(0x1.71547652b82fep+0 * 32);
    const __m256d shift = _mm256_set1_pd(0x1.8p+52);
    const __m256d c0 = _mm256_set1_pd(0x1.c6af84b912394p-5 / 32 / 32 / 32);
    const __m256d c1 = _mm256_set1_pd(0x1.ebfce50fac4f3p-3 / 32 / 32);
    const __m256d c2 = _mm256_set1_pd(0x1.62e42ff0c52d6p-1 / 32);
    __m256d kd = _mm256_fmadd_pd(invln2n, xd, shift);
    const __m256i ki = _mm256_castpd_si256(kd);
    kd = _mm256_sub_pd(kd, shift);
    const __m256d r = _mm256_fmsub_pd(invln2n, xd, kd);
    const __m256i idx = _mm256_and_si256(ki, _mm256_set1_epi64x(31));
    __m256i t = _mm256_i64gather_epi64((const long long *)ds4_exp2f_tab, idx, 8);
    t = _mm256_add_epi64(t, _mm256_slli_epi64(ki, 47));
    const __m256d z = _mm256_fmadd_pd(c0, r, c1);
    const __m256d r2 = _mm256_mul_pd(r, r);
    __m256d y = _mm256_fmadd_pd(c2, r, _mm256_set1_pd(1.0));
    y = _mm256_fmadd_pd(z, r2, y);
    return _mm256_mul_pd(y, _mm256_castsi256_pd(t));
}

TGTI __m256 exp8(__m256 x) {
    const __m128 lo = _mm256_cvtpd_ps(exp4d(_mm256_cvtps_pd(_mm256_castps256_ps128(x))));
    const __m128 hi = _mm256_cvtpd_ps(exp4d(_mm256_cvtps_pd(_mm256_extractf128_ps(x, 1))));
    __m256 y = _mm256_set_m128(hi, lo);
    /* glibc's slow path, as exp16 (vec_avx512.c): overflow to inf, the
     * smallest subnormal, 0, NaN propagated (x + x) */
    y = _mm256_blendv_ps(y, _mm256_set1_ps(INFINITY), _mm256_cmp_ps(x, _mm256_set1_ps(0x1.62e42ep6f), _CMP_GT_OQ));
    y = _mm256_blendv_ps(y, _mm256_set1_ps(0x1p-149f), _mm256_cmp_ps(x, _mm256_set1_ps(-0x1.9d1d9ep6f), _CMP_LT_OQ));
    y = _mm256_blendv_ps(y, _mm256_setzero_ps(), _mm256_cmp_ps(x, _mm256_set1_ps(-0x1.9fe368p6f), _CMP_LT_OQ));
    return _mm256_blendv_ps(y, _mm256_add_ps(x, x), _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}

/* ds4_expf_fast (simd.h) on 8 lanes, its operations in its order.  With
 * no VSCALEFPS, 2^n (n in [-126, 128] for the in-range lanes) is applied
 * as two factors 2^floor(n/2) and 2^(n - floor(n/2)), each a normal float
 * built in the exponent field: p times the first is exact, times the
 * second rounds once, as scalbnf does (subnormal and overflowing results
 * included).  Out-of-range lanes are replaced at the end; NaN passes
 * through (its n is garbage, but p is NaN). */
TGTI __m256 exp8_fast(__m256 x) {
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(DS4_EXPF_FAST_LOG2E)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(DS4_EXPF_FAST_LN2HI), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(DS4_EXPF_FAST_LN2LO), r);
    __m256 p = _mm256_set1_ps(DS4_EXPF_FAST_P5);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(DS4_EXPF_FAST_P4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(DS4_EXPF_FAST_P3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(DS4_EXPF_FAST_P2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(DS4_EXPF_FAST_P1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(DS4_EXPF_FAST_P0));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    const __m256i ni = _mm256_cvtps_epi32(n), n1 = _mm256_srai_epi32(ni, 1), n2 = _mm256_sub_epi32(ni, n1);
    const __m256i bias = _mm256_set1_epi32(127);
    const __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
    const __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
    __m256 y = _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
    y = _mm256_blendv_ps(y, _mm256_setzero_ps(), _mm256_cmp_ps(x, _mm256_set1_ps(DS4_EXPF_FAST_LO), _CMP_LT_OQ));
    return _mm256_blendv_ps(y, _mm256_set1_ps(INFINITY), _mm256_cmp_ps(x, _mm256_set1_ps(DS4_EXPF_FAST_HI), _CMP_GT_OQ));
}

TGT static void exp_fast_avx2(float *y, const float *x, int64_t n) {
    FOR_STEPS8(i, m, full, n, { ST8(y + i, m, full, exp8_fast(LD8(x + i, m, full))); });
}

TGT static void exp_avx2(float *y, const float *x, int64_t n) {
    FOR_STEPS8(i, m, full, n, { ST8(y + i, m, full, exp8(LD8(x + i, m, full))); });
}

TGT static void swiglu_avx2(float *g, const float *u, int64_t n, float c, float scale) {
    const __m256 vc = _mm256_set1_ps(c), vnc = _mm256_set1_ps(-c), vs = _mm256_set1_ps(scale);
    const __m256 one = _mm256_set1_ps(1.0f);
    const int clamp = c > 1e-6f;
    FOR_STEPS8(i, m, full, n, {
        __m256 gv = LD8(g + i, m, full), uv = LD8(u + i, m, full);
        if (clamp) { /* fminf(g, c): min_ps returns its second operand when one is NaN */
            gv = _mm256_min_ps(gv, vc);
            uv = _mm256_min_ps(_mm256_max_ps(uv, vnc), vc);
        }
        const __m256 e = exp8_fast(_mm256_sub_ps(_mm256_setzero_ps(), gv));
        ST8(g + i, m, full, _mm256_mul_ps(_mm256_mul_ps(_mm256_div_ps(gv, _mm256_add_ps(one, e)), uv), vs));
    });
}

/* ---- attention -------------------------------------------------------------- */

/* attn_avx2: vec_avx512.c's attn_512 on 8 lanes, one fixed sequence of
 * operations per (query, head) whatever hg, the head tiling or the row
 * blocks (so prefill == chunked prefill == decode, bit for bit):
 *   score    s[r] = hsum8(acc)·scale, acc one FMA chain over the 8-float
 *            chunks of q·row in order, hsum8 the tree (i + i+4), (i + i+2),
 *            (i + i+1), every lane by the same additions;
 *   softmax  mx = max(sink, s[·]); p = exp8_fast(s - mx) (ds4_expf_fast);
 *            den = expf(sink - mx) + hsum of the 8-row chunk sums of p in
 *            order (rows past nrows count 0);
 *   output   o[e] = (0 + p_0·row_0[e] + p_1·row_1[e] + ..., one FMA per
 *            row, rows in order) / den.
 * Heads in tiles of 4, 2 or 1 (G heads x 8/G rows per score tile, G heads x
 * 64/G floats per output tile); rows in blocks that stay in L1 across the
 * tiles.  Not the scalar level's order (two-accumulator dot, mul-then-add
 * axpy): the levels differ by rounding (tests/test_vec.c bounds it). */
#define ATTN_RB 32

/* Lane L of the result: the tree sum of acc[L]'s 8 lanes.  The stages
 * leave lanes in the order (0, 2, 1, 3 | 4, 6, 5, 7): feed them swapped. */
TGTI __m256 hsum8(const __m256 *acc) {
    __m256 B[8], X[4], Y[2];
    _Pragma("GCC unroll 8") for (int k = 0; k < 8; k++) B[k] = acc[(k & ~3) | ((k & 1) << 1) | ((k >> 1) & 1)];
    _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++) /* lanes 0-3: B[k] i + i+4; 4-7: B[k+4] */
        X[k] = _mm256_add_ps(_mm256_blend_ps(B[k], B[k + 4], 0xF0), _mm256_permute2f128_ps(B[k], B[k + 4], 0x21));
    _Pragma("GCC unroll 2") for (int k = 0; k < 2; k++) /* per half: X[k] i + i+2, X[k+2] i + i+2 */
        Y[k] = _mm256_add_ps(_mm256_blend_ps(X[k], X[k + 2], 0xCC), _mm256_shuffle_ps(X[k], X[k + 2], _MM_SHUFFLE(1, 0, 3, 2)));
    return _mm256_add_ps(_mm256_shuffle_ps(Y[0], Y[1], _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm256_shuffle_ps(Y[0], Y[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

/* Lane g·R + r: score of head q[g] against row rp[r], unscaled, G·R = 8. */
#define DEF_SCORES(G, R)                                                                              \
    TGTI __m256 scores_##G##x##R(const float *const *q, const float *const *rp, int dh) {            \
        __m256 acc[8];                                                                                \
        _Pragma("GCC unroll 8") for (int k = 0; k < 8; k++) acc[k] = _mm256_setzero_ps();            \
        for (int i = 0; i < dh; i += 8) {                                                             \
            __m256 qv[G];                                                                             \
            _Pragma("GCC unroll 8") for (int g = 0; g < G; g++) qv[g] = _mm256_loadu_ps(q[g] + i);   \
            _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) {                                     \
                const __m256 rv = _mm256_loadu_ps(rp[r] + i);                                         \
                _Pragma("GCC unroll 8") for (int g = 0; g < G; g++)                                   \
                    acc[g * R + r] = _mm256_fmadd_ps(qv[g], rv, acc[g * R + r]);                      \
            }                                                                                         \
        }                                                                                             \
        return hsum8(acc);                                                                            \
    }
DEF_SCORES(4, 2)
DEF_SCORES(2, 4)
DEF_SCORES(1, 8)

/* Heads g0 .. g0+G-1 against rows [r0, r0 + 8/G) (clamped to nrows - 1; the
 * caller overwrites the scores of rows >= nrows), scaled, into sc[g·nrp + r].
 * attn_avx2 skips tiles wholly past nrows; the softmax blends their lanes away. */
TGTI void score_tile(const ds4_attn_args *a, int g0, int G, int r0, float *sc, int nrp) {
    const int R = 8 / G;
    const float *rp[8];
    for (int r = 0; r < R; r++) rp[r] = a->rows[r0 + r < a->nrows ? r0 + r : a->nrows - 1];
    const float *const *q = a->q + g0;
    const __m256 s = G == 4 ? scores_4x2(q, rp, a->dh) : G == 2 ? scores_2x4(q, rp, a->dh) : scores_1x8(q, rp, a->dh);
    float t[8];
    _mm256_storeu_ps(t, _mm256_mul_ps(s, _mm256_set1_ps(a->scale)));
    for (int g = 0; g < G; g++) memcpy(sc + (size_t)(g0 + g) * nrp + r0, t + g * R, sizeof(float) * (size_t)R);
}

/* Output tile: heads g0 .. g0+G-1, floats [c0, c0 + 8·NV), rows [r0, r1):
 * acc = (r0 == 0 ? 0 : o) + Σ p·row by FMA in row order, stored to o,
 * divided by den[g] when r1 == nrows. */
#define DEF_ACCUM(G, NV)                                                                              \
    TGTI void accum_##G##_##NV(const ds4_attn_args *a, int g0, const float *p, int nrp, const float *den, \
                               int c0, int r0, int r1) {                                              \
        __m256 acc[G][NV];                                                                            \
        _Pragma("GCC unroll 8") for (int g = 0; g < G; g++)                                           \
            _Pragma("GCC unroll 8") for (int v = 0; v < NV; v++)                                      \
                acc[g][v] = r0 == 0 ? _mm256_setzero_ps() : _mm256_loadu_ps(a->o[g0 + g] + c0 + 8 * v); \
        for (int r = r0; r < r1; r++) {                                                               \
            const float *row = a->rows[r] + c0;                                                       \
            _Pragma("GCC unroll 8") for (int g = 0; g < G; g++) {                                     \
                const __m256 pv = _mm256_broadcast_ss(p + (size_t)(g0 + g) * nrp + r);                \
                _Pragma("GCC unroll 8") for (int v = 0; v < NV; v++)                                  \
                    acc[g][v] = _mm256_fmadd_ps(pv, _mm256_loadu_ps(row + 8 * v), acc[g][v]);         \
            }                                                                                         \
        }                                                                                             \
        const int last = r1 == a->nrows;                                                              \
        _Pragma("GCC unroll 8") for (int g = 0; g < G; g++) {                                         \
            const __m256 d = _mm256_set1_ps(den[g0 + g]);                                             \
            _Pragma("GCC unroll 8") for (int v = 0; v < NV; v++)                                      \
                _mm256_storeu_ps(a->o[g0 + g] + c0 + 8 * v, last ? _mm256_div_ps(acc[g][v], d) : acc[g][v]); \
        }                                                                                             \
    }
DEF_ACCUM(4, 2)
DEF_ACCUM(4, 1)
DEF_ACCUM(2, 4)
DEF_ACCUM(2, 1)
DEF_ACCUM(1, 8)
DEF_ACCUM(1, 1)

static inline int head_tile(int left) { return left >= 4 ? 4 : left >= 2 ? 2 : 1; }

TGT static void attn_avx2(const ds4_vec_ops *v, const ds4_attn_args *a) {
    const int hg = a->hg, dh = a->dh, nrows = a->nrows;
    if (hg < 1 || hg > DS4_ATTN_HG_MAX || dh % 8 || nrows == 0) {
        ds4_vec_attn_ref(v, a);
        return;
    }
    const int nrp = (nrows + 7) & ~7;
    float *sc = a->scratch; /* [g][r], row stride nrp */
    float den[DS4_ATTN_HG_MAX];
    for (int r0 = 0; r0 < nrows; r0 += 8) {
        if (a->cold) /* decode: the next block's rows, from memory (attn_512) */
            for (int r = r0 + 8; r < r0 + 16 && r < nrows; r++)
                for (int c = 0; c < dh; c += 16) _mm_prefetch((const char *)(a->rows[r] + c), _MM_HINT_T0);
        for (int g0 = 0, G; g0 < hg; g0 += G) {
            G = head_tile(hg - g0);
            for (int r = r0; r < r0 + 8 && r < nrows; r += 8 / G) score_tile(a, g0, G, r, sc, nrp);
        }
    }
    const __m256i tail = tail8(nrows - (nrp - 8));
    for (int g = 0; g < hg; g++) {
        float *s = sc + (size_t)g * nrp;
        _mm256_storeu_ps(s + nrp - 8, _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), _mm256_loadu_ps(s + nrp - 8),
                                                       _mm256_castsi256_ps(tail)));
        __m256 m = _mm256_set1_ps(a->sink[g]);
        for (int r = 0; r < nrp; r += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(s + r));
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        const float mxs = _mm_cvtss_f32(m4);
        const __m256 mx = _mm256_set1_ps(mxs);
        __m256 dsum = _mm256_setzero_ps();
        for (int r = 0; r < nrp; r += 8) {
            const __m256 p = exp8_fast(_mm256_sub_ps(_mm256_loadu_ps(s + r), mx));
            _mm256_storeu_ps(s + r, p);
            dsum = _mm256_add_ps(dsum, p);
        }
        __m128 d4 = _mm_add_ps(_mm256_castps256_ps128(dsum), _mm256_extractf128_ps(dsum, 1));
        d4 = _mm_add_ps(d4, _mm_movehl_ps(d4, d4));
        d4 = _mm_add_ss(d4, _mm_movehdup_ps(d4));
        den[g] = expf(a->sink[g] - mxs) + _mm_cvtss_f32(d4);
    }
    for (int r0 = 0; r0 < nrows; r0 += ATTN_RB) {
        const int r1 = r0 + ATTN_RB < nrows ? r0 + ATTN_RB : nrows;
        for (int g0 = 0, G; g0 < hg; g0 += G) {
            G = head_tile(hg - g0);
            const int cw = 64 / G;
            int c0 = 0;
            for (; c0 + cw <= dh; c0 += cw) {
                if (G == 4) accum_4_2(a, g0, sc, nrp, den, c0, r0, r1);
                else if (G == 2) accum_2_4(a, g0, sc, nrp, den, c0, r0, r1);
                else accum_1_8(a, g0, sc, nrp, den, c0, r0, r1);
            }
            for (; c0 < dh; c0 += 8) {
                if (G == 4) accum_4_1(a, g0, sc, nrp, den, c0, r0, r1);
                else if (G == 2) accum_2_1(a, g0, sc, nrp, den, c0, r0, r1);
                else accum_1_1(a, g0, sc, nrp, den, c0, r0, r1);
            }
        }
    }
}

/* ---- hyper-connection mixes ------------------------------------------------- */

/* vec_avx512.c's one-pass mixes on 8 lanes: per 8 floats the H old stream
 * values are loaded once and every output formed in registers, the scalar
 * version's mul-then-add steps in its order (bit-identical to it).  Up to
 * HC_MAX streams (V4 has 4); more fall back on the scalar version.  Unroll
 * pragmas on the loops over H, as at avx512: without them GCC 12 -O2 keeps
 * the streams in stack arrays even for constant H. */
#define HC_MAX 8

TGTI void hc_expand_n(float *X, const float *o, const float *post, const float *C, const int H, int64_t n) {
    /* zero-filled: unrolled for a variable H, the loops would otherwise
     * read (never use) entries past H, and GCC warns */
    __m256 pk[HC_MAX] = {{0}}, cjk[HC_MAX][HC_MAX] = {{{0}}};
    _Pragma("GCC unroll 8") for (int k = 0; k < H; k++) {
        pk[k] = _mm256_set1_ps(post[k]);
        _Pragma("GCC unroll 8") for (int j = 0; j < H; j++) cjk[j][k] = _mm256_set1_ps(C[j * H + k]);
    }
    FOR_STEPS8(i, m, full, n, {
        __m256 old[HC_MAX] = {{0}};
        _Pragma("GCC unroll 8") for (int j = 0; j < H; j++) old[j] = LD8(X + (size_t)j * n + i, m, full);
        const __m256 ov = LD8(o + i, m, full);
        _Pragma("GCC unroll 8") for (int k = 0; k < H; k++) {
            __m256 y = _mm256_mul_ps(ov, pk[k]);
            _Pragma("GCC unroll 8") for (int j = 0; j < H; j++) y = _mm256_add_ps(y, _mm256_mul_ps(cjk[j][k], old[j]));
            ST8(X + (size_t)k * n + i, m, full, y);
        }
    });
}

TGT static void hc_expand_avx2(const ds4_vec_ops *v, float *X, const float *o, const float *post, const float *C,
                               int H, int64_t n, float *scratch) {
    if (H == 4) hc_expand_n(X, o, post, C, 4, n); /* constant H: the loops unroll into registers */
    else if (H >= 1 && H <= HC_MAX) hc_expand_n(X, o, post, C, H, n);
    else ds4_vec_hc_expand_ref(v, X, o, post, C, H, n, scratch);
}

TGTI void hc_collapse_n(float *x, const float *X, const float *w, const int H, int64_t n) {
    __m256 wj[HC_MAX] = {{0}};
    _Pragma("GCC unroll 8") for (int j = 0; j < H; j++) wj[j] = _mm256_set1_ps(w[j]);
    FOR_STEPS8(i, m, full, n, {
        __m256 y = _mm256_setzero_ps();
        _Pragma("GCC unroll 8") for (int j = 0; j < H; j++) y = _mm256_add_ps(y, _mm256_mul_ps(wj[j], LD8(X + (size_t)j * n + i, m, full)));
        ST8(x + i, m, full, y);
    });
}

TGT static void hc_collapse_avx2(const ds4_vec_ops *v, float *x, const float *X, const float *w, int H, int64_t n) {
    if (H == 4) hc_collapse_n(x, X, w, 4, n);
    else if (H >= 1 && H <= HC_MAX) hc_collapse_n(x, X, w, H, n);
    else ds4_vec_hc_collapse_ref(v, x, X, w, H, n);
}

/* ---- elementwise ------------------------------------------------------------ */

/* y = x·s (·w), the reference's products in its order. */
TGT static void scale_mul_avx2(float *y, const float *x, float s, const float *w, int64_t n) {
    const __m256 vs = _mm256_set1_ps(s);
    FOR_STEPS8(i, m, full, n, {
        __m256 v = _mm256_mul_ps(LD8(x + i, m, full), vs);
        if (w) v = _mm256_mul_ps(v, LD8(w + i, m, full));
        ST8(y + i, m, full, v);
    });
}

/* (a, b) -> (a·c - b·s, a·s + b·c), four pairs a step: xc = (a·c, b·c),
 * ys = (b·s, a·s), addsub subtracts in even lanes and adds in odd ones
 * (a·s + b·c == b·c + a·s). */
TGT static void rot_avx2(float *t, const float *c, const float *s, int npairs) {
    const __m256i dup = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3);
    int i = 0;
    for (; i + 4 <= npairs; i += 4) {
        const __m256 x = _mm256_loadu_ps(t + 2 * i);
        const __m256 cv = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_loadu_ps(c + i)), dup);
        const __m256 sv = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_loadu_ps(s + i)), dup);
        const __m256 xc = _mm256_mul_ps(x, cv), ys = _mm256_mul_ps(_mm256_permute_ps(x, 0xB1), sv);
        _mm256_storeu_ps(t + 2 * i, _mm256_addsub_ps(xc, ys));
    }
    for (; i < npairs; i++) {
        float a = t[2 * i], b = t[2 * i + 1];
        t[2 * i] = a * c[i] - b * s[i];
        t[2 * i + 1] = a * s[i] + b * c[i];
    }
}

/* ---- FP8 / FP4 QAT round trips ------------------------------------------------ */

/* vec_avx512.c's round_fp8 on 8 lanes (fp.c's ds4_round_fp8_e4m3 on |v| <=
 * 448): below 2^-6 a 2^-9 grid, above it 3 mantissa bits, ties to even.
 * AVX2 has no getexp/scalef: a >= 2^-6 is normal there, so 2^-e and 2^e
 * (e = floor(log2 a) - 3) come from its exponent bits and the products are
 * exact; lanes below 2^-6 (zeros included) take the grid and NaNs stay. */
TGTI __m256 round_fp8(__m256 v) {
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const int rn = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    const __m256 a = _mm256_and_ps(v, absmask);
    const __m256 sub = _mm256_mul_ps(_mm256_round_ps(_mm256_mul_ps(a, _mm256_set1_ps(512.0f)), rn),
                                     _mm256_set1_ps(0x1p-9f));
    /* biased exponent of a, minus 3: 2^e has bits (be - 3) << 23, 2^-e has (254 - (be - 3)) << 23 */
    const __m256i be = _mm256_sub_epi32(_mm256_srli_epi32(_mm256_castps_si256(a), 23), _mm256_set1_epi32(3));
    const __m256 up = _mm256_castsi256_ps(_mm256_slli_epi32(be, 23));
    const __m256 down = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_sub_epi32(_mm256_set1_epi32(254), be), 23));
    __m256 nrm = _mm256_mul_ps(_mm256_round_ps(_mm256_mul_ps(a, down), rn), up);
    nrm = _mm256_min_ps(nrm, _mm256_set1_ps(448.0f));
    __m256 q = _mm256_blendv_ps(nrm, sub, _mm256_cmp_ps(a, _mm256_set1_ps(0x1p-6f), _CMP_LT_OQ));
    q = _mm256_or_ps(q, _mm256_andnot_ps(absmask, v)); /* copysign (q >= 0) */
    return _mm256_blendv_ps(q, v, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
}

/* vec_avx512.c's round_fp4 on 8 lanes (fp.c's ds4_round_fp4_e2m1 on |v| <=
 * 6): steps of 1/2, 1, 2 below 2, 4, 6, each round-to-nearest-even. */
TGTI __m256 round_fp4(__m256 v) {
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const int rn = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    const __m256 a = _mm256_and_ps(v, absmask);
    const __m256 q0 = _mm256_mul_ps(_mm256_round_ps(_mm256_add_ps(a, a), rn), _mm256_set1_ps(0.5f));
    const __m256 q1 = _mm256_round_ps(a, rn);
    const __m256 q2 = _mm256_mul_ps(_mm256_round_ps(_mm256_mul_ps(a, _mm256_set1_ps(0.5f)), rn), _mm256_set1_ps(2.0f));
    __m256 q = _mm256_blendv_ps(q0, q1, _mm256_cmp_ps(a, _mm256_set1_ps(2.0f), _CMP_GE_OQ));
    q = _mm256_blendv_ps(q, q2, _mm256_cmp_ps(a, _mm256_set1_ps(4.0f), _CMP_GE_OQ));
    q = _mm256_min_ps(q, _mm256_set1_ps(6.0f));
    q = _mm256_or_ps(q, _mm256_andnot_ps(absmask, v));
    return _mm256_blendv_ps(q, v, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
}

TGTI float hmax8(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
}

/* vec_ref.c's block round trip for one format; blk is 32 or 64. */
TGTI void fp_roundtrip(float *x, int64_t n, int64_t blk, float qmax, float amin, int fp8) {
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    for (int64_t b0 = 0; b0 < n; b0 += blk) {
        int64_t len = n - b0 < blk ? n - b0 : blk;
        __m256 am = _mm256_setzero_ps();
        for (int64_t i = 0; i < len; i += 8) /* max_ps(|x|, am) keeps am when x is NaN, as fmaxf */
            am = _mm256_max_ps(_mm256_and_ps(_mm256_maskload_ps(x + b0 + i, tail8(len - i)), absmask), am);
        float a = fmaxf(hmax8(am), amin); /* (the lanes' order does not matter to a max without NaNs) */
        int e;
        float f = frexpf(a / qmax, &e);
        float s = ldexpf(1.0f, f == 0.5f ? e - 1 : e);
        const __m256 vs = _mm256_set1_ps(s), hi = _mm256_set1_ps(qmax), lo = _mm256_set1_ps(-qmax);
        for (int64_t i = 0; i < len; i += 8) {
            const __m256i m = tail8(len - i);
            __m256 v = _mm256_div_ps(_mm256_maskload_ps(x + b0 + i, m), vs);
            /* v < -qmax ? -qmax : v > qmax ? qmax : v  (NaN stays) */
            v = _mm256_blendv_ps(v, lo, _mm256_cmp_ps(v, lo, _CMP_LT_OQ));
            v = _mm256_blendv_ps(v, hi, _mm256_cmp_ps(v, hi, _CMP_GT_OQ));
            v = fp8 ? round_fp8(v) : round_fp4(v);
            _mm256_maskstore_ps(x + b0 + i, m, _mm256_mul_ps(v, vs));
        }
    }
}

TGT static void fp8_rt_avx2(float *x, int64_t n) { fp_roundtrip(x, n, 64, 448.0f, 1e-4f, 1); }
TGT static void fp4_rt_avx2(float *x, int64_t n) { fp_roundtrip(x, n, 32, 6.0f, 6.0f * 0x1p-126f, 0); }

void ds4_vec_install_avx2(ds4_vec_ops *v) {
    v->idx_scores = idx_scores_avx2;
    v->exp = exp_avx2;
    v->exp_fast = exp_fast_avx2;
    v->swiglu = swiglu_avx2;
    v->attn = attn_avx2;
    v->hc_expand = hc_expand_avx2;
    v->hc_collapse = hc_collapse_avx2;
    v->fp8_roundtrip = fp8_rt_avx2;
    v->fp4_roundtrip = fp4_rt_avx2;
    v->scale_mul = scale_mul_avx2;
    v->rot = rot_avx2;
}

#else /* not x86 */

#include "quant/vec_int.h"
void ds4_vec_install_avx2(ds4_vec_ops *v) { (void)v; }

#endif
