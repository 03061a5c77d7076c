/* Tests for the SIMD kernels and their dispatch (src/quant/simd*.c,
 * dispatch.c) against the scalar reference (quant_ref.c), at every level
 * this CPU runs; levels it lacks are skipped with a note.
 *
 *   dot kernels      random blocks (every bit pattern: -128 weights, all
 *                    scale codes, all IQ2 grid/sign codes) at 32..16384
 *                    elements (odd block counts for Q8_0); K-quants, IQ2 and
 *                    Q8_0 bit-identical, F32 and BF16 within 1e-7 of Σ|w·x|
 *                    (summation order of the double lanes), F16 within
 *                    (8 + √n)·2^-24 of it (fp32 lanes at avx512)
 *   tiles            every nr x nc <= 4x4 bit-identical to the level's vec_dot;
 *                    F16 also at 8..4096 elements, every tile position, with
 *                    inf/NaN/subnormal weight rows, overflow, NaN activations
 *   iq2 variants     each IQ2_XXS decode kernel of iq2_avx512.c the CPU
 *                    runs, whichever is installed: dot and 1..4-row tiles
 *                    bit-identical to the reference, 1..64 blocks
 *   q2_K variants    the same for both Q2_K decode kernels of dec_avx2.c
 *   panel gemm       pack + gemm bit-identical to vec_dot (row/token tails,
 *                    1..64 and 100, 300 tokens, 1..28 blocks, starting at a
 *                    later panel; IQ2_XXS with each unpack variant the CPU runs)
 *   quantizers       f32 -> Q8_0 / Q8_K bit-identical, ties and sign cases;
 *                    rows of edge-case blocks (zeros, huge, tiny, denormal,
 *                    ties) at lengths around the 16-block groups
 *   ds4_mm           n = 1, 3, 17, 40 (row offsets, expert slices, strided X;
 *                    17 and 40 take the panel path where there is one)
 *                    against dequantize-then-double-dot; decode == prefill
 *   f32 helpers      dot (bound), axpy (bit-identical), sumsq
 *   dispatch API     force / level / unknown names / table rewrite */
#include "test.h"

#include "engine/ops.h"
#include "engine/pool.h"
#include "quant/quant.h"
#include "quant/simd.h"
#include "quant/simd_int.h"
#include "quant/vec.h"

#include <stdint.h>

/* ---- deterministic data -------------------------------------------------- */

#include "test_rng.h"
static void fill_gauss(float *v, int64_t n) {
    for (int64_t i = 0; i < n; i++) v[i] = rng_gauss();
    /* a few outliers, as real activations have */
    for (int64_t i = 0; i < n / 64; i++) v[rng_next() % (uint64_t)n] *= 20.0f;
}

static const int types[] = { DS4_TYPE_F32, DS4_TYPE_F16, DS4_TYPE_BF16, DS4_TYPE_Q8_0,
                             DS4_TYPE_Q4_K, DS4_TYPE_Q2_K, DS4_TYPE_IQ2_XXS };
#define NTYPES ((int)(sizeof types / sizeof types[0]))

static int exact_type(int t) { return ds4_type_traits_ref(t)->quantized; }

/* Random weight rows: every byte random, except the fp16 scales (finite,
 * modest) and the float types (gaussian values). */
static void random_rows(int type, int64_t n, int rows, void *dst) {
    const ds4_type_traits *t = ds4_type_traits_ref(type);
    size_t rb = ds4_row_size(type, n);
    uint8_t *p = dst;
    if (!t->quantized) {
        float *tmp = malloc((size_t)n * sizeof *tmp);
        for (int r = 0; r < rows; r++) {
            fill_gauss(tmp, n);
            t->from_float(tmp, p + r * rb, n);
        }
        free(tmp);
        return;
    }
    for (size_t i = 0; i < rb * (size_t)rows; i++) p[i] = (uint8_t)rng_next();
    int64_t nb = n / t->blck * rows;
    for (int64_t b = 0; b < nb; b++) {
        uint8_t *blk = p + (size_t)b * t->size;
        ds4_fp16 d = ds4_f32_to_fp16((float)(rng_unit() * 0.02)), dm = ds4_f32_to_fp16((float)(rng_unit() * 0.01));
        switch (type) {
        case DS4_TYPE_Q8_0: memcpy(&((block_q8_0 *)blk)->d, &d, 2); break;
        case DS4_TYPE_Q4_K: memcpy(&((block_q4_K *)blk)->d, &d, 2); memcpy(&((block_q4_K *)blk)->dmin, &dm, 2); break;
        case DS4_TYPE_Q2_K: memcpy(&((block_q2_K *)blk)->d, &d, 2); memcpy(&((block_q2_K *)blk)->dmin, &dm, 2); break;
        case DS4_TYPE_IQ2_XXS: memcpy(&((block_iq2_xxs *)blk)->d, &d, 2); break;
        }
    }
}

/* Activation in the type's vec_dot_type, via the scalar reference encoder. */
static void *ref_activation(int type, const float *x, int64_t n) {
    const ds4_type_traits *t = ds4_type_traits_ref(type);
    void *q = calloc(1, ds4_row_size(t->vec_dot_type, n) + 64);
    ds4_type_traits_ref(t->vec_dot_type)->from_float(x, q, n);
    return q;
}

/* Σ|w_i·x_i| over dequantized values: the scale of summation-order error. */
static double abs_dot(int type, const void *w, const void *xq, int64_t n) {
    const ds4_type_traits *t = ds4_type_traits_ref(type);
    float *a = malloc((size_t)n * sizeof *a), *b = malloc((size_t)n * sizeof *b);
    t->to_float(w, a, n);
    ds4_type_traits_ref(t->vec_dot_type)->to_float(xq, b, n);
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += fabs((double)a[i] * b[i]);
    free(a);
    free(b);
    return s;
}

/* Bound on |dot - reference| of a float type, as a fraction of Σ|w·x|.
 * F16 runs in fp32 lanes at the avx512 level (dec_avx512.c: per lane a
 * chain of ~n/16 FMAs, each rounded once, then 4 tree adds; the rounding
 * errors of random-sign sums grow like √n): (8 + √n)·2^-24, about 2^-24·√n,
 * which a kernel dropping or repeating one element of n would still exceed
 * (~1/n).  F32 and BF16 sum exact products in double: 1e-7 (1 ulp of the
 * result).  worst_f16: the largest F16 error seen, as a fraction of its bound. */
static double worst_f16;
static int within_tol(int type, double ref, double got, double absdot, int64_t n) {
    const double err = fabs(ref - got);
    if (type != DS4_TYPE_F16) return err <= 1e-7 * absdot + 1e-30;
    const double tol = (8.0 + sqrt((double)n)) * 0x1p-24 * absdot + 1e-30;
    if (err / tol > worst_f16) worst_f16 = err / tol;
    return err <= tol;
}

static const char *const *levels(void) { return ds4_simd_levels(); }

static int level_ok(const char *lv) {
    if (ds4_simd_supported(lv)) return 1;
    static int noted[8];
    int i = 0;
    for (const char *const *l = levels(); *l && *l != lv; l++) i++;
    if (!noted[i & 7]) { printf("  note: level %s not available on this CPU/build: skipped\n", lv); noted[i & 7] = 1; }
    return 0;
}

/* ---- dot kernels and tiles ------------------------------------------------ */

TEST(vec_dot_vs_scalar) {
    const int64_t lens[] = { 32, 96, 256, 4096, 4128, 16384 }; /* 3 and 129 Q8_0 blocks: odd pair tails */
    const int64_t flens[] = { 1, 7, 15, 17, 33, 100, 129, 1000 }; /* float tails */
    const int nlens = (int)(sizeof lens / sizeof *lens);
    for (const char *const *lv = levels(); *lv; lv++) {
        if (!level_ok(*lv)) continue;
        for (int ti = 0; ti < NTYPES; ti++) {
            int type = types[ti];
            const ds4_type_traits *ref = ds4_type_traits_ref(type);
            ds4_type_traits simd;
            CHECK(ds4_simd_traits_for(*lv, type, &simd) == 0);
            int nl = nlens + (ref->quantized ? 0 : (int)(sizeof flens / sizeof *flens));
            for (int li = 0; li < nl; li++) {
                int64_t n = li < nlens ? lens[li] : flens[li - nlens];
                if (n % ref->blck) continue;
                rng_seed((uint64_t)(type * 1000 + li));
                size_t rb = ds4_row_size(type, n);
                uint8_t *w = malloc(rb * 4);
                random_rows(type, n, 4, w);
                float *x = malloc((size_t)n * sizeof *x);
                fill_gauss(x, n);
                void *xq = ref_activation(type, x, n);
                for (int r = 0; r < 4; r++) {
                    const void *wr = w + r * rb;
                    float a = ref->vec_dot(n, wr, xq), b = simd.vec_dot(n, wr, xq);
                    if (exact_type(type)) {
                        CHECKF(memcmp(&a, &b, 4) == 0, "%s %s n=%lld row %d: %.9g vs %.9g", *lv, ref->name,
                               (long long)n, r, a, b);
                    } else {
                        /* float types: within_tol */
                        const double ad = abs_dot(type, wr, xq, n);
                        CHECKF(within_tol(type, a, b, ad, n), "%s %s n=%lld: %.9g vs %.9g (sum |w x| %g)", *lv,
                               ref->name, (long long)n, a, b, ad);
                    }
                }
                free(w);
                free(x);
                free(xq);
            }
        }
    }
}

TEST(tiles_match_vec_dot) {
    const int64_t n = 1024;
    for (const char *const *lv = levels(); *lv; lv++) {
        if (!level_ok(*lv)) continue;
        for (int ti = 0; ti < NTYPES; ti++) {
            int type = types[ti];
            ds4_type_traits s;
            ds4_simd_traits_for(*lv, type, &s);
            if (!s.vec_dot_tile) continue; /* the scalar level loops over vec_dot */
            rng_seed((uint64_t)type);
            size_t rb = ds4_row_size(type, n), xb = ds4_row_size(s.vec_dot_type, n);
            uint8_t *w = malloc(rb * 4), *xq = malloc(xb * 4);
            random_rows(type, n, 4, w);
            float *x = malloc((size_t)n * sizeof *x);
            for (int c = 0; c < 4; c++) {
                fill_gauss(x, n);
                ds4_type_traits_ref(s.vec_dot_type)->from_float(x, xq + c * xb, n);
            }
            for (int nr = 1; nr <= 4; nr++)
                for (int nc = 1; nc <= 4; nc++) {
                    float y[4 * 5];
                    for (int i = 0; i < 20; i++) y[i] = NAN;
                    s.vec_dot_tile(n, w, rb, nr, xq, xb, nc, y, 5);
                    int bad = 0;
                    for (int c = 0; c < nc; c++)
                        for (int r = 0; r < nr; r++) {
                            float d = s.vec_dot(n, w + r * rb, xq + c * xb);
                            bad += memcmp(&d, &y[c * 5 + r], 4) != 0;
                        }
                    CHECKF(bad == 0, "%s %s tile %dx%d: %d results differ from vec_dot", *lv, s.name, nr, nc, bad);
                }
            free(w);
            free(xq);
            free(x);
        }
    }
}

/* Mismatches of a decode kernel set s (vec_dot and every nr <= 4
 * one-column tile) against the reference, over 4 rows w of n elements and
 * activations x. */
static int decode_mismatches(const ds4_type_traits *s, int type, int64_t n, const uint8_t *w, const float *x) {
    const ds4_type_traits *ref = ds4_type_traits_ref(type);
    const size_t rb = ds4_row_size(type, n);
    void *xq = ref_activation(type, x, n);
    float want[4];
    int bad = 0;
    for (int r = 0; r < 4; r++) {
        want[r] = ref->vec_dot(n, w + r * rb, xq);
        const float got = s->vec_dot(n, w + r * rb, xq);
        bad += memcmp(&want[r], &got, 4) != 0;
    }
    for (int nr = 1; nr <= 4; nr++) {
        float y[4] = { NAN, NAN, NAN, NAN };
        s->vec_dot_tile(n, w, rb, nr, xq, 0, 1, y, 4);
        for (int r = 0; r < nr; r++) bad += memcmp(&want[r], &y[r], 4) != 0;
    }
    free(xq);
    return bad;
}

/* Row sets for a decode variant s of `type`: for each length, 3 sets of 4
 * rows (seeded seed0 + 10·length index + set): two random (every code) with
 * gaussian activations, one made all-extreme by `extreme` against ±1
 * activations (the largest exact sums).  Each must match the reference bit
 * for bit (decode_mismatches); returns the number of sets checked. */
static int check_row_sets(const ds4_type_traits *s, int type, const char *what, const int64_t *lens, int nlens,
                          uint64_t seed0, void (*extreme)(uint8_t *w, int64_t nblocks)) {
    int tested = 0;
    for (int li = 0; li < nlens; li++) {
        const int64_t n = lens[li];
        for (int set = 0; set < 3; set++) {
            rng_seed(seed0 + (uint64_t)(10 * li + set));
            const size_t rb = ds4_row_size(type, n);
            uint8_t *w = malloc(rb * 4);
            float *x = malloc((size_t)n * sizeof *x);
            random_rows(type, n, 4, w);
            fill_gauss(x, n);
            if (set == 2) {
                extreme(w, n / QK_K * 4);
                for (int64_t i = 0; i < n; i++) x[i] = (rng_next() & 1) ? 1.0f : -1.0f;
            }
            const int bad = decode_mismatches(s, type, n, w, x);
            CHECKF(bad == 0, "%s n=%lld set %d: %d results differ from the reference", what, (long long)n, set, bad);
            tested++;
            free(w);
            free(x);
        }
    }
    return tested;
}

/* Every IQ2_XXS weight at its largest magnitude and scale. */
static void iq2_extreme(uint8_t *w, int64_t nblocks) {
    for (int64_t b = 0; b < nblocks; b++) {
        block_iq2_xxs *blk = (block_iq2_xxs *)(w + (size_t)b * sizeof(block_iq2_xxs));
        for (int k = 0; k < QK_K / 8; k++) blk->qs[k] |= (uint16_t)(k % 4 == 3 ? 0xF000 : 0);
    }
}

/* Every Q2_K quant 3, every scale and min 15. */
static void q2k_extreme(uint8_t *w, int64_t nblocks) {
    for (int64_t b = 0; b < nblocks; b++) {
        block_q2_K *blk = (block_q2_K *)(w + (size_t)b * sizeof(block_q2_K));
        memset(blk->scales, 0xFF, sizeof blk->scales);
        memset(blk->qs, 0xFF, sizeof blk->qs);
    }
}

/* The IQ2_XXS decode variants of iq2_avx512.c, each where this CPU has its
 * ISA, whichever one the level installed (the pick is by vendor): vec_dot
 * and every nr <= 4 one-column tile bit-identical to the reference, at 1 to
 * 64 blocks (the GFNI kernel sums 8 slots per batch, of 8 blocks of a row
 * or, for rows of fewer than 8 blocks, 4, 2 or 1 blocks of each of 2, 4 or
 * 8 rows: short batches, one batch, several), over random rows (every grid, sign and scale code) and
 * activations with outliers, and all-extreme rows and activations (the
 * largest exact sums). */
TEST(iq2_avx512_variants) {
    static const char *const names[] = { "vbmi", "gfni" };
    const int64_t lens[] = { 256, 512, 768, 1024, 1280, 1792, 2048, 2304, 2816, 4096, 7168, 16384 };
    int tested = 0;
    if (!ds4_simd_supported("avx512")) return;
    for (int v = 0; v < 2; v++) {
        ds4_type_traits s;
        ds4_simd_traits_for("avx512", DS4_TYPE_IQ2_XXS, &s);
        if (ds4_iq2_avx512_variant(names[v], &s) != 0) {
            printf("  note: iq2_xxs %s variant not available on this CPU: skipped\n", names[v]);
            continue;
        }
        char what[32];
        snprintf(what, sizeof what, "iq2_xxs %s", names[v]);
        tested += check_row_sets(&s, DS4_TYPE_IQ2_XXS, what, lens, (int)(sizeof lens / sizeof *lens), 7000,
                                 iq2_extreme);
    }
    printf("  iq2_xxs avx512 variants: %d row sets bit-identical to the reference\n", tested);
}

/* The avx2 level's Q2_K decode variants (dec_avx2.c), each where this CPU
 * runs it: vec_dot and every nr <= 4 one-column tile bit-identical to the
 * reference at 1 to 64 blocks, over random rows (every quant, scale and
 * min code) and activations with outliers, and over all-extreme rows
 * (every quant 3, every scale and min 15) against ±max activations. */
TEST(q2k_avx2_variants) {
    const int64_t lens[] = { 256, 512, 768, 1024, 1280, 2048, 4096, 7168, 16384 };
    int tested = 0;
    if (!ds4_simd_supported("avx2")) return;
    for (int v = 0; v < 2; v++) {
        ds4_type_traits s;
        ds4_simd_traits_for("avx2", DS4_TYPE_Q2_K, &s);
        if (ds4_dec_avx2_q2k_variant(v, &s) != 0) {
            printf("  note: q2_K avx2 %s decode variant not available on this CPU: skipped\n", v ? "vnni" : "madd");
            continue;
        }
        tested += check_row_sets(&s, DS4_TYPE_Q2_K, v ? "q2_K avx2 vnni" : "q2_K avx2 madd", lens,
                                 (int)(sizeof lens / sizeof *lens), 8000, q2k_extreme);
    }
    printf("  q2_K avx2 decode variants: %d row sets bit-identical to the reference\n", tested);
}

/* The same bits, or both NaN: which NaN payload a sum of two NaNs keeps
 * depends on the operand order of the instruction that meets them (x86
 * keeps the first source's), and the compiler picks the FMA and add forms;
 * with a single NaN source the bits agree. */
static int same_f16_result(float a, float b) { return memcmp(&a, &b, 4) == 0 || (isnan(a) && isnan(b)); }

/* F16 tiles: every pair's result is independent of the tile shape and
 * position (prefill == decode, bit for bit but for NaN payloads), at
 * lengths that exercise the 32-element steps, the 16-element tail chunks
 * and partial chunks.  Rows:
 * gaussian, +inf, NaN, -inf and +inf (NaN), subnormals and zeros, 65504
 * times 1e36 (the product overflows: +inf, as the reference's float
 * result); a column with one NaN activation.  The inf/NaN results must
 * classify as the reference's do (inf of the same sign, or NaN), and the
 * finite ones stay within within_tol. */
TEST(f16_tiles_shape_invariant) {
    const int64_t lens[] = { 8, 24, 32, 40, 100, 1024, 4096 };
    enum { R = 6, C = 5 };
    int tiles = 0;
    for (const char *const *lv = levels(); *lv; lv++) {
        if (!level_ok(*lv)) continue;
        ds4_type_traits s;
        ds4_simd_traits_for(*lv, DS4_TYPE_F16, &s);
        if (!s.vec_dot_tile) continue;
        const ds4_type_traits *ref = ds4_type_traits_ref(DS4_TYPE_F16);
        for (int set = 0; set < (int)(sizeof lens / sizeof *lens) * 4; set++) {
            const int64_t n = lens[set / 4]; /* 4 data sets per length */
            rng_seed(900 + (uint64_t)set);
            const size_t rb = ds4_row_size(DS4_TYPE_F16, n), xb = (size_t)n * sizeof(float);
            uint8_t *w = malloc(rb * R);
            float *x = malloc(xb * C), *tmp = malloc(xb);
            for (int r = 0; r < R; r++) {
                fill_gauss(tmp, n);
                ref->from_float(tmp, w + r * rb, n);
            }
            uint16_t *h = (uint16_t *)w;
            for (int c = 0; c < C; c++) fill_gauss(x + (size_t)c * n, n);
            /* Pairs of huge activations that cancel (x_j = -x_i, equal weights):
             * the small products added while such a partial sum is large lose
             * low bits, so another summation order shows in the float result. */
            for (int p = 0; p < 6; p++) {
                /* mostly in the same double lane a few 8-element chunks apart */
                const int64_t i = (int64_t)(rng_next() % (uint64_t)n), d = 8 * (1 + (int64_t)(rng_next() % 4));
                const int64_t j = p % 3 && i + d < n ? i + d : (int64_t)(rng_next() % (uint64_t)n);
                if (i == j) continue;
                for (int r = 0; r < R; r++) h[r * n + j] = h[r * n + i];
                for (int c = 0; c < C; c++) {
                    x[(size_t)c * n + i] = ldexpf(rng_next() & 1 ? 1.5f : -1.25f, 24 + (int)(rng_next() % 20));
                    x[(size_t)c * n + j] = -x[(size_t)c * n + i];
                }
            }
            h[1 * n + n - 1] = 0x7C00;                          /* +inf, last element (a tail chunk when n % 32) */
            h[2 * n + n / 3] = 0x7E01;                          /* NaN */
            h[3 * n + 0] = 0xFC00; h[3 * n + n / 2 + 1] = 0x7C00; /* -inf and +inf: NaN */
            for (int64_t i = 0; i < n; i++)                     /* subnormals and signed zeros */
                if (i % 3 == 0) h[4 * n + i] = (uint16_t)((rng_next() & 0x83FF) & (i % 9 ? 0xFFFF : 0x8000));
            x[(size_t)2 * n + n - 1] = 0.0f;                    /* row 1, column 2: inf · 0 */
            h[5 * n + n / 4] = 0x7BFF;                          /* row 5, column 3: 65504 · 1e36 overflows */
            x[(size_t)3 * n + n / 4] = 1e36f;
            x[(size_t)4 * n + n / 5] = NAN;                     /* column 4: a NaN activation */
            float dot[R][C];
            for (int r = 0; r < R; r++)
                for (int c = 0; c < C; c++) {
                    const void *wr = w + r * rb, *xc = (const uint8_t *)x + c * xb;
                    dot[r][c] = s.vec_dot(n, wr, xc);
                    const float a = ref->vec_dot(n, wr, xc), b = dot[r][c];
                    if (isnan(a) || isinf(a)) {
                        CHECKF(isnan(a) ? isnan(b) : b == a, "%s f16 n=%lld row %d col %d: %g, reference %g", *lv,
                               (long long)n, r, c, b, a);
                    } else {
                        CHECKF(within_tol(DS4_TYPE_F16, a, b, abs_dot(DS4_TYPE_F16, wr, xc, n), n),
                               "%s f16 n=%lld row %d col %d: %.9g vs %.9g", *lv, (long long)n, r, c, b, a);
                    }
                }
            /* the 4x4 tile at the origin: the pairs it holds, as a second reference */
            float base[4 * 4];
            s.vec_dot_tile(n, w, rb, 4, x, xb, 4, base, 4);
            for (int nr = 1; nr <= 4; nr++)
                for (int nc = 1; nc <= 4; nc++)
                    for (int r0 = 0; r0 + nr <= R; r0++)
                        for (int c0 = 0; c0 + nc <= C; c0++) {
                            float y[4 * 5];
                            for (int i = 0; i < 20; i++) y[i] = -1.0f;
                            s.vec_dot_tile(n, w + r0 * rb, rb, nr, (const uint8_t *)x + c0 * xb, xb, nc, y, 5);
                            int bad = 0, bad4 = 0;
                            for (int c = 0; c < nc; c++)
                                for (int r = 0; r < nr; r++) {
                                    const float v = y[c * 5 + r];
                                    bad += !same_f16_result(v, dot[r0 + r][c0 + c]);
                                    if (r0 + r < 4 && c0 + c < 4) bad4 += !same_f16_result(v, base[(c0 + c) * 4 + r0 + r]);
                                }
                            CHECKF(bad == 0 && bad4 == 0, "%s f16 n=%lld tile %dx%d at (%d, %d): %d differ from vec_dot, %d from the 4x4 tile",
                                   *lv, (long long)n, nr, nc, r0, c0, bad, bad4);
                            tiles++;
                        }
            free(w);
            free(x);
            free(tmp);
        }
    }
    printf("  f16: %d tiles bit-identical to vec_dot and to the 4x4 tile; worst error vs the reference %.2f of its bound\n",
           tiles, worst_f16);
}

/* Panel GEMM (quant.h): pack ntok activation rows, multiply nr rows, and
 * every result is bit-identical to the level's vec_dot -- for every row and
 * token count (tails of both: rows around the kernels' 16-row chunks and
 * their tiles, every token count to 64 and two that take several tiles and
 * token chunks), for row lengths of one block to several of the kernels'
 * block ranges, and when the kernel starts at a later panel.  On an avx512
 * CPU the IQ2_XXS kernel is checked with each unpack variant the CPU runs. */
TEST(panel_gemm_matches_vec_dot) {
    /* 160: an odd count of 32-blocks (Q8_0 packs blocks in pairs) */
    const int64_t lens[] = { 160, 256, 512, 1024, 2816, 7168 };
    const int nrs[] = { 1, 3, 4, 5, 7, 13, 16, 23, 30, 37 };
    enum { MAXR = 37, MAXT = 300 };
    int ntoks[64 + 2], nnt = 0;
    for (int t = 1; t <= 64; t++) ntoks[nnt++] = t;
    ntoks[nnt++] = 100;
    ntoks[nnt++] = MAXT;
    int tested = 0;
    for (const char *const *lv = levels(); *lv; lv++) {
        if (!level_ok(*lv)) continue;
        for (int ti = 0; ti < NTYPES; ti++) {
            int type = types[ti];
            ds4_type_traits s;
            ds4_simd_traits_for(*lv, type, &s);
            if (!s.panel_gemm) continue;
            /* the live panel format and kernel, then (avx2 Q8_0) the other variant this CPU runs */
            ds4_type_traits vs[2] = { s, s };
            int nvs = 1;
            for (int v = 0; v < 2 && type == DS4_TYPE_Q8_0 && strcmp(*lv, "avx2") == 0; v++) {
                ds4_type_traits t = s;
                if (ds4_gemm_avx2_q8_variant(v, &t) == 0 && t.panel_gemm != s.panel_gemm) vs[nvs++] = t;
            }
            for (int vi = 0; vi < nvs; vi++) {
                s = vs[vi];
                CHECK(s.panel_tokens > 0 && s.panel_bytes && s.panel_pack);
                /* the live kernel, then the other IQ2_XXS unpack variants this CPU runs */
                ds4_panel_gemm_fn gemms[4] = { s.panel_gemm, NULL, NULL, NULL };
                const char *gname[4] = { vi ? " (the other panel variant)" : "", " (base unpack)", " (vbmi unpack)",
                                         " (gfni unpack)" };
                int ng = 1;
                for (int v = 0; v < 3 && type == DS4_TYPE_IQ2_XXS && strcmp(*lv, "avx512") == 0; v++) {
                    ds4_panel_gemm_fn g = ds4_gemm_avx512_k_iq2_variant(v);
                    if (g && g != s.panel_gemm) { gname[ng] = gname[v + 1]; gemms[ng++] = g; }
                }
                /* the avx2 K-quant kernels with and without AVX-VNNI (same panels) */
                for (int v = 0; v < 2 && strcmp(*lv, "avx2") == 0; v++) {
                    ds4_panel_gemm_fn g = ds4_gemm_avx2_k_variant(type, v);
                    if (g && g != s.panel_gemm) { gname[ng] = v ? " (avx-vnni)" : " (no vnni)"; gemms[ng++] = g; }
                }
                for (size_t li = 0; li < sizeof lens / sizeof *lens; li++) {
                    int64_t n = lens[li];
                    if (n % ds4_type_traits_get(type)->blck) continue;
                    rng_seed((uint64_t)(type * 77 + li));
                    size_t rb = ds4_row_size(type, n), xb = ds4_row_size(s.vec_dot_type, n);
                    int P = s.panel_tokens;
                    uint8_t *w = malloc(rb * MAXR), *xq = malloc(xb * MAXT);
                    random_rows(type, n, MAXR, w);
                    float *x = malloc((size_t)n * sizeof *x);
                    for (int t = 0; t < MAXT; t++) {
                        fill_gauss(x, n);
                        ds4_type_traits_ref(s.vec_dot_type)->from_float(x, xq + (size_t)t * xb, n);
                    }
                    float *ref = malloc(sizeof *ref * MAXT * MAXR); /* vec_dot of every (token, row) */
                    for (int t = 0; t < MAXT; t++)
                        for (int r = 0; r < MAXR; r++) ref[t * MAXR + r] = s.vec_dot(n, w + (size_t)r * rb, xq + (size_t)t * xb);
                    size_t pb = s.panel_bytes(n);
                    uint8_t *panels = malloc(pb * (size_t)((MAXT + P - 1) / P));
                    const int ymax = MAXT * (MAXR + 3 + 32); /* the widest ldy below, and an offset */
                    float *y = malloc(sizeof *y * (size_t)ymax);
                    for (int ki = 0; ki < nnt; ki++) {
                        int ntok = ntoks[ki];
                        s.panel_pack(n, xq, xb, ntok, panels);
                        for (int gi = 0; gi < 4 && gemms[gi]; gi++)
                            for (size_t ni = 0; ni < sizeof nrs / sizeof *nrs; ni++)
                                for (int pass = 0; pass < 3; pass++) {
                                    /* 1: start at the second panel; 2: rows of y at a multiple of 16
                                     * floats, starting 5 floats past a 64-byte line */
                                    int nr = nrs[ni], ldy = pass == 2 ? (nr + 15) / 16 * 16 + 16 : nr + 3;
                                    int t0 = pass == 1 ? P : 0, yoff = 0;
                                    if (t0 >= ntok) continue;
                                    if (pass == 2) yoff = (int)((16 - ((uintptr_t)y / sizeof *y) % 16) % 16) + 5;
                                    for (int i = 0; i < ymax; i++) y[i] = NAN;
                                    float *yo = y + yoff;
                                    gemms[gi](n, w, rb, nr, panels + pb * (size_t)(t0 / P), ntok - t0, yo, ldy);
                                    int bad = 0, spill = 0;
                                    for (int t = t0; t < ntok; t++)
                                        for (int r = 0; r < nr; r++) {
                                            bad += memcmp(&ref[t * MAXR + r], &yo[(t - t0) * ldy + r], 4) != 0;
                                            yo[(t - t0) * ldy + r] = NAN;
                                        }
                                    for (int i = 0; i < ymax; i++) spill += !isnan(y[i]); /* nothing else written */
                                    CHECKF(bad == 0 && spill == 0,
                                           "%s %s%s n=%lld nr=%d ntok=%d t0=%d ldy=%d: %d differ, %d written outside", *lv,
                                           s.name, gname[gi], (long long)n, nr, ntok, t0, ldy, bad, spill);
                                }
                    }
                    tested++;
                    free(w);
                    free(xq);
                    free(x);
                    free(ref);
                    free(panels);
                    free(y);
                }
            }
        }
    }
    printf("  panel gemm: %d (level, type, length) cases\n", tested);
}

/* ---- activation quantizers -------------------------------------------------- */

static void check_quantizer(const char *lv, int qtype, const float *x, int64_t n, const char *what) {
    ds4_type_traits s;
    ds4_simd_traits_for(lv, qtype, &s);
    const ds4_type_traits *r = ds4_type_traits_ref(qtype);
    size_t sz = ds4_row_size(qtype, n);
    uint8_t *a = calloc(1, sz), *b = calloc(1, sz);
    r->from_float(x, a, n);
    s.from_float(x, b, n);
    CHECKF(memcmp(a, b, sz) == 0, "%s %s quantizer differs (%s)", lv, r->name, what);
    free(a);
    free(b);
}

TEST(quantizers_bit_exact) {
    const int64_t n = 4096;
    float *x = malloc(n * sizeof *x);
    for (const char *const *lv = levels(); *lv; lv++) {
        if (!level_ok(*lv)) continue;
        for (int rep = 0; rep < 8; rep++) {
            rng_seed(100 + rep);
            fill_gauss(x, n);
            if (rep & 1) for (int64_t i = 0; i < n; i++) x[i] *= 1e-3f;
            check_quantizer(*lv, DS4_TYPE_Q8_0, x, n, "gauss");
            check_quantizer(*lv, DS4_TYPE_Q8_K, x, n, "gauss");
        }
        /* Q8_0 ties: amax 127 gives d = 1, so x.5 values round away from zero
         * (RNE would differ); a zero block; negative extremes. */
        for (int i = 0; i < 256; i++) x[i] = (float)((i % 64) - 32) + 0.5f;
        x[0] = 127.0f; x[32] = -127.0f; x[64] = 127.0f; x[96] = 127.0f;
        for (int i = 128; i < 160; i++) x[i] = 0.0f;
        check_quantizer(*lv, DS4_TYPE_Q8_0, x, 256, "ties");
        /* Q8_K: +a and -a both at the max (the first wins), ties of the
         * rescaled values, a zero block. */
        rng_seed(7);
        fill_gauss(x, 1024);
        x[10] = -50.0f; x[20] = 50.0f;
        x[256 + 3] = 50.0f; x[256 + 200] = -50.0f;
        for (int i = 512; i < 768; i++) x[i] = (float)(i % 255) - 127.0f + 0.5f;
        x[512] = -127.0f;
        for (int i = 768; i < 1024; i++) x[i] = 0.0f;
        check_quantizer(*lv, DS4_TYPE_Q8_K, x, 1024, "ties/signs/zero");
    }
    free(x);
}

/* Activation rows built block by block (32 floats) from edge cases: the
 * avx512 Q8_0 quantizer works on 16 blocks at once in chunks of 128, so the
 * lengths cover one block, a partial group, group + 1 block, whole chunks and
 * a chunk tail; Q8_K gets the lengths that are whole 256-blocks.  Every
 * byte is compared (the outputs start different), and nothing may be written
 * past the row.  Left out on purpose: blocks whose largest magnitude lies in
 * about (2^-143, 2^-121), where 1/d overflows to inf and the reference's
 * float -> int8 conversion is undefined (Q8_0; Q8_K has its own rows). */
static void fill_edge_blocks(float *x, int64_t n) {
    for (int64_t b0 = 0; b0 < n; b0 += 32) {
        float *v = x + b0;
        const int kind = (int)(rng_next() % 10);
        for (int j = 0; j < 32; j++) v[j] = rng_gauss();
        switch (kind) {
        case 0: break; /* plain gaussian */
        case 1: for (int j = 0; j < 32; j++) v[j] = 0.0f; break;
        case 2: for (int j = 0; j < 32; j++) v[j] = j & 1 ? -0.0f : 0.0f; break;
        case 3: v[rng_next() % 32] = (rng_next() & 1 ? 1.0f : -1.0f) * 3.0e38f; break; /* fp16 d overflows */
        case 4: v[rng_next() % 32] = (float)(65504 + rng_next() % 32) * 127.0f; break; /* d at the fp16 top */
        case 5: for (int j = 0; j < 32; j++) v[j] *= 1e-30f; break; /* tiny, still normal d */
        case 6: /* denormals: under a normal max, or alone (|x| <= 63·2^-149: d underflows to 0) */
            for (int j = 0; j < 32; j++) v[j] = (float)((int)(rng_next() % 127) - 63) * 0x1p-149f;
            if (rng_next() & 1) v[rng_next() % 32] = 0.25f;
            break;
        case 7: /* amax 127 -> d = 1: x.5 ties; doubled, amax 254 -> d = 2 and odd values tie */
            for (int j = 0; j < 32; j++) v[j] = (float)((int)(rng_next() % 254) - 127) + 0.5f;
            v[rng_next() % 32] = rng_next() & 1 ? 127.0f : -127.0f;
            if (rng_next() & 1) /* or one ulp short of the tie: must round towards zero */
                for (int j = 0; j < 32; j++) v[j] = fabsf(v[j]) == 127.0f ? v[j] : nextafterf(v[j], 0.0f);
            if (rng_next() & 1) for (int j = 0; j < 32; j++) v[j] *= 2.0f;
            break;
        case 8: /* wide dynamic range inside the block */
            for (int j = 0; j < 32; j++) v[j] = ldexpf(v[j], (int)(rng_next() % 80) - 40);
            break;
        case 9: /* equal magnitudes of both signs at the max (Q8_K: the first wins) */
            v[rng_next() % 32] = 9.0f;
            v[rng_next() % 32] = -9.0f;
            break;
        }
    }
}

/* Q8_K rows, block by block (256 floats): +a and -a both at the largest
 * magnitude (the first decides), one sign only, zeros, x.5 ties at
 * iscale = ±1, huge, and |max| < 127/FLT_MAX, where iscale overflows and the
 * reference's nearest_int gives 0 for every element. */
static void fill_edge_blocks_k(float *x, int64_t n) {
    for (int64_t b0 = 0; b0 < n; b0 += 256) {
        float *v = x + b0;
        const int kind = (int)(rng_next() % 7);
        for (int j = 0; j < 256; j++) v[j] = rng_gauss();
        const int p1 = (int)(rng_next() % 256), p2 = (int)(rng_next() % 256);
        switch (kind) {
        case 0: break;
        case 1: v[p1] = 30.0f; v[p2] = -30.0f; break; /* p1 == p2: one sign only */
        case 2: v[p1] = -7.5f; v[p2] = 7.5f; v[(p1 + 1) % 256] = 7.5f; break;
        case 3: for (int j = 0; j < 256; j++) v[j] = rng_next() % 5 ? 0.0f : -0.0f; break;
        case 4: /* max -127 or +127: iscale = 1 or -1, x.5 ties to even */
            for (int j = 0; j < 256; j++) v[j] = (float)((int)(rng_next() % 254) - 127) + 0.5f;
            v[p1] = rng_next() & 1 ? -127.0f : 127.0f;
            break;
        case 5: v[p1] = 3.0e38f; if (rng_next() & 1) v[p2] = -3.0e38f; break;
        case 6: /* tiny: iscale overflows to ±inf (or stays finite near 2^-121) */
            for (int j = 0; j < 256; j++) v[j] = ldexpf(v[j], -124 - (int)(rng_next() % 26));
            break;
        }
    }
}

static int check_quantizer_exact(const char *lv, int qtype, const float *x, int64_t n) {
    ds4_type_traits s;
    ds4_simd_traits_for(lv, qtype, &s);
    const ds4_type_traits *r = ds4_type_traits_ref(qtype);
    const size_t sz = ds4_row_size(qtype, n), pad = 64;
    uint8_t *a = malloc(sz + pad), *b = malloc(sz + pad);
    memset(a, 0x55, sz + pad);
    memset(b, 0xaa, sz + pad);
    r->from_float(x, a, n);
    s.from_float(x, b, n);
    size_t first = 0;
    while (first < sz && a[first] == b[first]) first++;
    int tail_ok = 1;
    for (size_t i = sz; i < sz + pad; i++) tail_ok &= b[i] == 0xaa;
    CHECKF(first == sz, "%s %s n=%lld: first differing byte %zu of %zu", lv, r->name, (long long)n, first, sz);
    CHECKF(tail_ok, "%s %s n=%lld: wrote past the row", lv, r->name, (long long)n);
    free(a);
    free(b);
    return first == sz && tail_ok;
}

TEST(quantizers_edge_blocks) {
    const int64_t lens[] = { 32, 64, 96, 256, 512, 512 + 32, 4096, 4096 + 5 * 32, 7168, 8192 + 256 };
    float *x = malloc(sizeof(float) * 8448);
    int cases = 0; /* Q8_K: 16 blocks per chunk on avx512, so 8448 = two chunks + 1 */
    for (const char *const *lv = levels(); *lv; lv++) {
        if (!level_ok(*lv) || strcmp(*lv, "scalar") == 0) continue;
        for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++)
            for (int rep = 0; rep < 4; rep++) {
                const int64_t n = lens[k];
                rng_seed(1000 + 10 * (uint64_t)k + (uint64_t)rep);
                fill_edge_blocks(x, n);
                cases += check_quantizer_exact(*lv, DS4_TYPE_Q8_0, x, n);
                if (n % 256 == 0) {
                    cases += check_quantizer_exact(*lv, DS4_TYPE_Q8_K, x, n);
                    fill_edge_blocks_k(x, n);
                    cases += check_quantizer_exact(*lv, DS4_TYPE_Q8_K, x, n);
                }
            }
    }
    printf("  %d (level, type, row) cases bit-identical\n", cases);
    free(x);
}

/* ---- ds4_mm -------------------------------------------------------------------- */

/* Reference: dequantized weights times the dequantized activation (the
 * reference encoding of x), in double; tolerance from Σ|w·x|. */
static void mm_case(ds4_pool *pool, const char *lv, int type, int64_t ne0, int64_t rows, int n) {
    const ds4_type_traits *ref = ds4_type_traits_ref(type);
    const int64_t experts = 2, e = 1, row0 = 3, nrows = rows - 5;
    size_t rb = ds4_row_size(type, ne0);
    uint8_t *w = malloc(rb * (size_t)(rows * experts));
    float *src = malloc((size_t)ne0 * sizeof *src);
    for (int64_t r = 0; r < rows * experts; r++) { /* realistic rows via the reference encoder */
        fill_gauss(src, ne0);
        ref->from_float(src, w + r * rb, ne0);
    }
    int64_t ldx = ne0 + 8; /* strided activations */
    float *X = malloc(sizeof(float) * (size_t)(ldx * n));
    for (int t = 0; t < n; t++) fill_gauss(X + t * ldx, ne0);
    int64_t ldy = nrows + 3;
    float *Y = malloc(sizeof(float) * (size_t)(ldy * n)), *Y1 = malloc(sizeof(float) * (size_t)nrows);
    ds4_weight wt = { w, type, { ne0, rows, experts }, "test" };
    ds4_mm(pool, &wt, e, row0, nrows, X, ldx, n, Y, ldy);

    const ds4_type_traits *at = ds4_type_traits_ref(ref->vec_dot_type);
    void *xq = malloc(ds4_row_size(ref->vec_dot_type, ne0));
    float *xd = malloc((size_t)ne0 * sizeof *xd), *wd = malloc((size_t)ne0 * sizeof *wd);
    int bad = 0, mismatch = 0;
    for (int t = 0; t < n; t++) {
        at->from_float(X + t * ldx, xq, ne0);
        at->to_float(xq, xd, ne0);
        for (int64_t r = 0; r < nrows; r++) {
            ref->to_float(w + (size_t)((e * rows) + row0 + r) * rb, wd, ne0);
            double s = 0, sa = 0;
            for (int64_t i = 0; i < ne0; i++) { s += (double)wd[i] * xd[i]; sa += fabs((double)wd[i] * xd[i]); }
            double tol = 2e-5 * sa + 1e-30;
            if (fabs(s - Y[t * ldy + r]) > tol) {
                if (bad++ < 3)
                    fprintf(stderr, "  %s %s ne0=%lld n=%d t=%d r=%lld: %.9g vs %.9g\n", lv, ref->name,
                            (long long)ne0, n, t, (long long)r, Y[t * ldy + r], s);
            }
        }
        /* the decode path (n = 1) gives the same bits as column t of the batch */
        ds4_mm(pool, &wt, e, row0, nrows, X + t * ldx, ldx, 1, Y1, nrows);
        mismatch += memcmp(Y1, Y + t * ldy, sizeof(float) * (size_t)nrows) != 0;
    }
    CHECKF(bad == 0, "%s %s ne0=%lld n=%d: %d results off the reference", lv, ref->name, (long long)ne0, n, bad);
    CHECKF(mismatch == 0, "%s %s n=%d: %d decode columns differ from the batch", lv, ref->name, n, mismatch);
    free(w); free(src); free(X); free(Y); free(Y1); free(xq); free(xd); free(wd);
}

TEST(mm_vs_naive) {
    ds4_pool *pool = ds4_pool_new(2);
    const int ns[] = { 1, 3, 17, 40 }; /* 17, 40: the panel path where a level has one (partial panels) */
    for (const char *const *lv = levels(); *lv; lv++) {
        if (!level_ok(*lv)) continue;
        CHECK(ds4_simd_force(*lv) == 0);
        for (int ti = 0; ti < NTYPES; ti++) {
            int type = types[ti];
            int64_t ne0 = ds4_type_traits_ref(type)->blck == QK_K ? 512 : 96;
            if (type == DS4_TYPE_F32) ne0 = 100; /* not a multiple of any vector width */
            for (int k = 0; k < (int)(sizeof ns / sizeof *ns); k++) {
                rng_seed((uint64_t)(type * 10 + k));
                mm_case(pool, *lv, type, ne0, 23, ns[k]);
            }
        }
    }
    ds4_simd_force("scalar");
    ds4_simd_init();
    ds4_pool_free(pool);
}

/* ---- f32 helpers ------------------------------------------------------------------- */

TEST(vec_helpers) {
    const int64_t lens[] = { 1, 5, 16, 31, 64, 128, 509, 4096 };
    ds4_vec_ops sc;
    CHECK(ds4_simd_vec_ops_for("scalar", &sc) == 0);
    for (const char *const *lv = levels(); *lv; lv++) {
        if (!level_ok(*lv)) continue;
        ds4_vec_ops v;
        CHECK(ds4_simd_vec_ops_for(*lv, &v) == 0);
        for (size_t li = 0; li < sizeof lens / sizeof *lens; li++) {
            int64_t n = lens[li];
            rng_seed((uint64_t)n);
            float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
            float *y1 = malloc(n * sizeof *y1), *y2 = malloc(n * sizeof *y2);
            fill_gauss(a, n);
            fill_gauss(b, n);
            fill_gauss(y1, n);
            memcpy(y2, y1, n * sizeof *y1);
            double s = 0, sa = 0, ss = 0;
            for (int64_t i = 0; i < n; i++) { s += (double)a[i] * b[i]; sa += fabs((double)a[i] * b[i]); ss += (double)a[i] * a[i]; }
            CHECKF(fabs(v.dot(a, b, n) - s) <= 1e-6 * sa + 1e-30, "%s dot n=%lld", *lv, (long long)n);
            sc.axpy(y1, 0.37f, b, n);
            v.axpy(y2, 0.37f, b, n);
            CHECKF(memcmp(y1, y2, n * sizeof *y1) == 0, "%s axpy n=%lld not bit-identical", *lv, (long long)n);
            CHECKF(fabs(v.sumsq(a, n) - ss) <= 1e-14 * ss, "%s sumsq n=%lld", *lv, (long long)n);
            free(a); free(b); free(y1); free(y2);
        }
    }
}

/* ---- dispatch API ----------------------------------------------------------------- */

TEST(dispatch_api) {
    ds4_simd_init();
    const char *start = ds4_simd_level();
    CHECK(start != NULL && ds4_simd_supported(start));
    CHECK(ds4_simd_force("no-such-level") == -1);
    CHECK(ds4_simd_force(NULL) == -1);
    CHECK(ds4_simd_supported("scalar") && ds4_simd_supported("ref"));
    for (const char *const *lv = levels(); *lv; lv++) {
        if (!ds4_simd_supported(*lv)) {
            CHECK(ds4_simd_force(*lv) == -1);
            continue;
        }
        CHECK(ds4_simd_force(*lv) == 0);
        CHECK(strcmp(ds4_simd_level(), *lv) == 0);
        for (int ti = 0; ti < NTYPES; ti++) {
            ds4_type_traits s;
            ds4_simd_traits_for(*lv, types[ti], &s);
            const ds4_type_traits *live = ds4_type_traits_get(types[ti]);
            CHECKF(live->vec_dot == s.vec_dot && live->vec_dot_tile == s.vec_dot_tile,
                   "%s %s: live table not rewritten", *lv, s.name);
            CHECK(strcmp(live->name, s.name) == 0 && live->size == s.size);
            if (strcmp(*lv, "scalar") != 0) /* a SIMD level really replaces the kernel */
                CHECKF(s.vec_dot != ds4_type_traits_ref(types[ti])->vec_dot && s.vec_dot_tile, "%s %s: no SIMD kernel", *lv, s.name);
        }
        ds4_type_traits q;
        ds4_simd_traits_for(*lv, DS4_TYPE_Q8_K, &q);
        CHECK(ds4_type_traits_get(DS4_TYPE_Q8_K)->from_float == q.from_float);
    }
    CHECK(ds4_simd_force("scalar") == 0);
    CHECK(ds4_type_traits_get(DS4_TYPE_Q8_0)->vec_dot == ds4_type_traits_ref(DS4_TYPE_Q8_0)->vec_dot);
    CHECK(ds4_simd_force(start) == 0);
    printf("  levels here:");
    for (const char *const *lv = levels(); *lv; lv++)
        if (ds4_simd_supported(*lv)) printf(" %s", *lv);
    printf(" (default %s)\n", start);
}

int main(void) {
    RUN(dispatch_api);
    RUN(vec_dot_vs_scalar);
    RUN(tiles_match_vec_dot);
    RUN(iq2_avx512_variants);
    RUN(q2k_avx2_variants);
    RUN(f16_tiles_shape_invariant);
    RUN(panel_gemm_matches_vec_dot);
    RUN(quantizers_bit_exact);
    RUN(quantizers_edge_blocks);
    RUN(vec_helpers);
    RUN(mm_vs_naive);
    TEST_END();
}
