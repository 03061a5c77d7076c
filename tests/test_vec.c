/* Forward-pass f32 kernels (simd.h ds4_vec_ops) at every SIMD level this
 * CPU runs, against the scalar versions of vec_ref.c:
 *   dot16                      bit-identical to the loop over the level's dot
 *   attn                       bit-identical to the loop over the level's
 *                              own dot/axpy (except exp: see below), every
 *                              head grouping, row count and head dim shape;
 *                              avx512 and avx2 (FMA, own dot order) within 1e-5 of
 *                              Σ|p·row|, and every level's heads bit-equal
 *                              to the same heads computed one at a time
 *   exp                        vs libm expf over a strided sweep of every
 *                              float and the special values: <= 1 ulp, and
 *                              the count of differing results printed (0 on
 *                              x86-64 glibc, whose expf the kernel transcribes)
 *   exp_fast                   bit-identical to ds4_expf_fast over the same
 *                              sweep, thresholds and special values; and
 *                              ds4_expf_fast within 1 ulp of libm expf
 *                              wherever that is >= 2^-126, 0 below, inf above
 *   swiglu                     bit-identical to the loop with ds4_expf_fast
 *   scale_mul, rot, hc mixes   bit-identical
 *   softpool                   bit-identical to ds4_vec_softpool_ref over the
 *                              level's exp_fast: -inf scores (a whole column of
 *                              them too), NaN scores, column tails, 1-128 rows
 *   fp8/fp4 round trips        bit-identical, plus the rounding of every float
 *                              magnitude below the format maximum
 *   idx_scores                 bit-identical, however the call is cut; the
 *                              reference within a rounding bound of exact
 *   idx8 (int8 indexer path)   bit-identical to idx_scores on FP4-exact data
 *                              (and there takes the integer path for every
 *                              group), on data it must refuse (spans, NaN,
 *                              infinity, exponent range) and plain floats */
#include "test.h"
#include "test_rng.h"

#include <float.h>
#include <stdint.h>

#include "quant/idx8.h"
#include "quant/quant.h"
#include "quant/simd.h"
#include "quant/vec_int.h"

static void fill_gauss(float *x, int64_t n, float scale) {
    for (int64_t i = 0; i < n; i++) x[i] = rng_gauss() * scale;
}

static float bits_f(uint32_t u) { float f; memcpy(&f, &u, sizeof f); return f; }
static uint32_t f_bits(float f) { uint32_t u; memcpy(&u, &f, sizeof u); return u; }

/* distance in ulps between two floats of the same sign (or zero) */
static int64_t ulps(float a, float b) {
    if (isnan(a) || isnan(b)) return isnan(a) && isnan(b) ? 0 : INT64_MAX;
    int64_t ia = (int32_t)f_bits(a), ib = (int32_t)f_bits(b);
    if (ia < 0) ia = INT32_MIN - ia;
    if (ib < 0) ib = INT32_MIN - ib;
    return ia > ib ? ia - ib : ib - ia;
}

#define FOR_LEVELS(v, lv)                                                      \
    for (const char *const *lv = ds4_simd_levels(); *lv; lv++)                 \
        if (ds4_simd_supported(*lv) && ds4_simd_vec_ops_for(*lv, &v) == 0)

TEST(dot16) {
    ds4_vec_ops v;
    const int64_t lens[] = {16, 48, 64, 100, 256};
    FOR_LEVELS(v, lv) {
        for (size_t li = 0; li < sizeof lens / sizeof *lens; li++) {
            int64_t n = lens[li];
            rng_seed(7 + (uint64_t)n);
            float *q = malloc(sizeof(float) * 16 * n), *b = malloc(sizeof(float) * n);
            fill_gauss(q, 16 * n, 1.0f);
            fill_gauss(b, n, 1.0f);
            const float *a[16];
            for (int k = 0; k < 16; k++) a[k] = q + k * n;
            float out[16], ref[16];
            v.dot16(&v, a, b, n, out);
            ds4_vec_dot16_ref(&v, a, b, n, ref);
            CHECKF(memcmp(out, ref, sizeof out) == 0, "%s dot16 n=%lld", *lv, (long long)n);
            free(q);
            free(b);
        }
    }
}

/* The attention kernel against the reference loop over the same level's dot
 * and axpy.  With the vector exp the probabilities may differ from libm's in
 * the last bit where libm is not glibc's FMA expf, so compare bits only when
 * exp matched libm bit for bit in the sweep below (x86-64 glibc), else 1e-6. */
static int exp_is_libm = -1;

/* The next up-to-`cap` values of the strided sweep over every 257th bit
 * pattern (both signs, NaNs and infinities included) into x, from *u on;
 * sets *done after the last.  Returns how many. */
static int sweep_next(float *x, int cap, uint32_t *u, int *done) {
    int n = 0;
    for (; n < cap; n++) {
        x[n] = bits_f(*u);
        uint32_t nu = *u + 257;
        if (nu < *u) { *done = 1; return n + 1; }
        *u = nu;
    }
    return n;
}

TEST(exp) {
    ds4_vec_ops v;
    FOR_LEVELS(v, lv) {
        enum { CH = 4096 };
        static float x[16384], y[16384];
        int64_t worst = 0, diff = 0, total = 0;
        /* every 257th bit pattern (sweep_next), both signs, plus the
         * neighbourhoods of the branch thresholds */
        uint32_t u = 0;
        int done = 0;
        while (!done) {
            int n = sweep_next(x, CH, &u, &done);
            v.exp(y, x, n);
            for (int i = 0; i < n; i++) {
                float r = expf(x[i]);
                int64_t d = ulps(y[i], r);
                if (d) diff++;
                if (d > worst) worst = d;
            }
            total += n;
        }
        const float special[] = {0.0f, -0.0f, 1.0f, -1.0f, INFINITY, -INFINITY, NAN, 88.0f, 0x1.62e42ep6f,
                                 0x1.62e430p6f, 89.0f, -87.0f, -0x1.9d1d9ep6f, -0x1.9d1da0p6f, -0x1.9fe368p6f,
                                 -0x1.9fe36ap6f, -104.0f, -0x1.9fe366p6f, -103.5f, 1e-30f, -1e-30f, 0x1p-149f};
        int ns = (int)(sizeof special / sizeof *special);
        for (int i = 0; i < ns; i++) x[i] = special[i];
        for (int b = 0; b < 2000; b++) { /* around the thresholds, bit by bit */
            x[ns + 4 * b] = bits_f(f_bits(0x1.62e42ep6f) - 1000 + b);
            x[ns + 4 * b + 1] = bits_f(f_bits(-0x1.9d1d9ep6f) - 1000 + b);
            x[ns + 4 * b + 2] = bits_f(f_bits(-0x1.9fe368p6f) - 1000 + b);
            x[ns + 4 * b + 3] = bits_f(f_bits(-87.33654f) - 1000 + b);
        }
        int n = ns + 8000;
        v.exp(y, x, n);
        for (int i = 0; i < n; i++) {
            int64_t d = ulps(y[i], expf(x[i]));
            if (d) diff++;
            if (d > worst) worst = d;
        }
        total += n;
        printf("  %s exp: %lld of %lld differ from libm expf, worst %lld ulp\n", *lv, (long long)diff,
               (long long)total, (long long)worst);
        CHECKF(worst <= 1, "%s exp: %lld ulps from libm", *lv, (long long)worst);
        if (strcmp(*lv, "scalar") != 0 && (exp_is_libm < 0 || exp_is_libm == 1)) exp_is_libm = diff == 0;
    }
}

/* ds4_expf_fast against libm where e^x is a normal float, and its
 * thresholds; then every level's exp_fast against it, bit for bit. */
static int64_t expf_fast_err(float x) {
    float y = ds4_expf_fast(x), r = expf(x);
    if (isnan(x)) return isnan(y) ? 0 : INT64_MAX;
    if (x < DS4_EXPF_FAST_LO) return y == 0.0f && r < 0x1p-126f ? 0 : INT64_MAX;
    if (x > DS4_EXPF_FAST_HI) return y == INFINITY && r == INFINITY ? 0 : INT64_MAX;
    if (r < 0x1p-126f) return fabsf(y - r) <= 0x1p-126f ? 0 : INT64_MAX; /* the subnormal edge */
    return ulps(y, r);
}

/* expf_fast_err over the bit patterns u0, u0 + step, ... <= u1 (no wrap):
 * the worst into *worst, the count added to *total. */
static void expf_fast_range(uint32_t u0, uint32_t u1, uint32_t step, int64_t *worst, int64_t *total) {
    for (uint32_t u = u0;; u += step) {
        int64_t e = expf_fast_err(bits_f(u));
        if (e > *worst) *worst = e;
        ++*total;
        if (u > u1 - step) break;
    }
}

TEST(exp_fast) {
    enum { CH = 4096 };
    static float x[CH + 8192], y[CH + 8192], want[CH + 8192];
    int64_t worst = 0, total = 0;
    /* ds4_expf_fast itself: every 257th bit pattern, and every float of
     * [-1, -0.5) (a whole binade of softmax arguments); DS4_TEST_EXP_ALL=1
     * also every float of [-104, 0] (1.15e9 of them, ~30 s: at most 1 ulp) */
    if (getenv("DS4_TEST_EXP_ALL")) expf_fast_range(f_bits(-0.0f), f_bits(-104.0f), 1, &worst, &total);
    expf_fast_range(0, UINT32_MAX, 257, &worst, &total);
    expf_fast_range(f_bits(-0.5f), f_bits(-1.0f) - 1, 1, &worst, &total);
    printf("  ds4_expf_fast: worst %lld ulp from libm expf over %lld values\n", (long long)worst, (long long)total);
    CHECKF(worst <= 1, "ds4_expf_fast: %lld ulps from libm", (long long)worst);
    const float special[] = {0.0f, -0.0f, 1.0f, -1.0f, INFINITY, -INFINITY, NAN, -NAN, DS4_EXPF_FAST_LO,
                             DS4_EXPF_FAST_HI, 88.5f, 88.7f, -87.5f, -87.0f, -104.0f, -200.0f, 1e-30f, 0x1p-149f};
    int ns = (int)(sizeof special / sizeof *special);
    for (int i = 0; i < ns; i++) CHECKF(expf_fast_err(special[i]) <= 1, "ds4_expf_fast(%a) = %a", (double)special[i],
                                        (double)ds4_expf_fast(special[i]));
    CHECK(ds4_expf_fast(0.0f) == 1.0f && ds4_expf_fast(-INFINITY) == 0.0f && ds4_expf_fast(INFINITY) == INFINITY);
    ds4_vec_ops v;
    FOR_LEVELS(v, lv) {
        int64_t bad = 0, n = 0;
        uint32_t u = 0;
        for (int done = 0; !done;) {
            int m = sweep_next(x, CH, &u, &done);
            if (done) { /* then the special values and the thresholds' neighbourhoods, bit by bit */
                for (int i = 0; i < ns; i++) x[m++] = special[i];
                for (int b = 0; b < 2000; b++) {
                    x[m++] = bits_f(f_bits(DS4_EXPF_FAST_LO) - 1000 + b);
                    x[m++] = bits_f(f_bits(DS4_EXPF_FAST_HI) - 1000 + b);
                    x[m++] = bits_f(f_bits(88.38f) - 1000 + b); /* n = 128 from here */
                }
            }
            v.exp_fast(y, x, m);
            for (int i = 0; i < m; i++) {
                want[i] = ds4_expf_fast(x[i]);
                if (f_bits(y[i]) != f_bits(want[i]) && !(isnan(y[i]) && isnan(want[i]))) bad++;
            }
            n += m;
        }
        CHECKF(bad == 0, "%s exp_fast: %lld of %lld differ from ds4_expf_fast", *lv, (long long)bad, (long long)n);
    }
}

/* Σ_r p_r·|row_r[e]| / den in double, p from the reference's scores: the
 * size of the terms the weighted sum adds, against which a level whose
 * kernel sums in another order (FMA, other dot order) is bounded. */
static void attn_mag(const ds4_attn_args *a, double *mag) {
    int dh = a->dh;
    for (int g = 0; g < a->hg; g++) {
        double mx = a->sink[g], den;
        double *s = malloc(sizeof(double) * (size_t)(a->nrows + 1));
        for (int r = 0; r < a->nrows; r++) {
            double d = 0;
            for (int e = 0; e < dh; e++) d += (double)a->q[g][e] * a->rows[r][e];
            s[r] = d * a->scale;
            if (s[r] > mx) mx = s[r];
        }
        den = exp(a->sink[g] - mx);
        for (int e = 0; e < dh; e++) mag[g * dh + e] = 0;
        for (int r = 0; r < a->nrows; r++) {
            double p = exp(s[r] - mx);
            den += p;
            for (int e = 0; e < dh; e++) mag[g * dh + e] += p * fabs(a->rows[r][e]);
        }
        for (int e = 0; e < dh; e++) mag[g * dh + e] /= den;
        free(s);
    }
}

/* Levels whose attn is the reference loop over their own dot/axpy: bit for
 * bit.  The avx512 and avx2 kernels (vec_avx512.c attn_512, vec_avx2.c
 * attn_avx2) use FMA in the weighted
 * sum and a single-chain dot per score, so it differs from the reference by
 * rounding: |o - o_ref| <= 1e-5·Σ|p·row|/den (seen: 2.5e-6, mostly each
 * score's dot rounding, ~1e-6 of |s| here, which moves p by that relative
 * amount).  What it must keep bit for bit is its own batching invariance: every head of an hg-head call equals
 * the same head computed alone (hg = 1), so the engine's prefill, chunked
 * prefill and decode agree whatever head grouping each one picks. */
TEST(attn) {
    ds4_vec_ops v;
    const int dhs[] = {16, 48, 64, 256};
    const int nrs[] = {0, 1, 3, 7, 16, 17, 130, 257};
    const int hgs[] = {1, 2, 3, 4, 7, 8, 16};
    FOR_LEVELS(v, lv) {
        int reordered = strcmp(*lv, "avx512") == 0 || strcmp(*lv, "avx2") == 0;
        double worst_rel = 0;
        for (size_t di = 0; di < sizeof dhs / sizeof *dhs; di++)
            for (size_t ni = 0; ni < sizeof nrs / sizeof *nrs; ni++)
                for (size_t hi = 0; hi < sizeof hgs / sizeof *hgs; hi++) {
                    int dh = dhs[di], nr = nrs[ni], hg = hgs[hi];
                    rng_seed((uint64_t)(dh * 1000 + nr * 10 + hg));
                    float *rowbuf = malloc(sizeof(float) * (size_t)(nr + 1) * dh);
                    const float **rows = malloc(sizeof(float *) * (size_t)(nr + 1));
                    float *q = malloc(sizeof(float) * hg * dh);
                    float *o1 = malloc(sizeof(float) * hg * dh), *o2 = malloc(sizeof(float) * hg * dh);
                    float *o3 = malloc(sizeof(float) * hg * dh);
                    double *mag = malloc(sizeof(double) * hg * dh);
                    float *scratch = malloc(sizeof(float) * (size_t)ds4_attn_scratch(nr));
                    fill_gauss(rowbuf, (int64_t)(nr + 1) * dh, 1.0f);
                    /* hg = 3: scores spread wide (sd 20: s - max reaches about
                     * -110), through exp's subnormal and zero ranges */
                    fill_gauss(q, (int64_t)hg * dh, hg == 3 ? 20.0f : 1.5f);
                    for (int r = 0; r < nr; r++) rows[r] = rowbuf + (size_t)((r * 7) % (nr + 1)) * dh;
                    ds4_attn_args a = {.hg = hg, .dh = dh, .nrows = nr, .rows = rows,
                                       .scale = 1.0f / sqrtf((float)dh), .scratch = scratch};
                    for (int g = 0; g < hg; g++) {
                        a.q[g] = q + g * dh;
                        a.sink[g] = rng_gauss();
                    }
                    if (nr > 3) a.sink[0] = 40.0f; /* a dominating sink: tiny probabilities */
                    ds4_attn_args b = a;
                    for (int g = 0; g < hg; g++) { a.o[g] = o1 + g * dh; b.o[g] = o2 + g * dh; }
                    /* NaN scratch: a kernel must not read score lanes it
                     * never wrote (the tiles it skips past nrows) */
                    size_t nscr = (size_t)ds4_attn_scratch(nr);
                    for (size_t i = 0; i < nscr; i++) scratch[i] = NAN;
                    v.attn(&v, &a);
                    ds4_vec_attn_ref(&v, &b);
                    /* each head alone through the same kernel */
                    for (int g = 0; g < hg; g++) {
                        ds4_attn_args c = a;
                        c.hg = 1;
                        c.q[0] = a.q[g];
                        c.sink[0] = a.sink[g];
                        c.o[0] = o3 + g * dh;
                        for (size_t i = 0; i < nscr; i++) scratch[i] = NAN;
                        v.attn(&v, &c);
                    }
                    CHECKF(memcmp(o1, o3, sizeof(float) * hg * dh) == 0, "%s attn dh=%d nrows=%d hg=%d: "
                           "heads depend on the grouping", *lv, dh, nr, hg);
                    if (reordered) {
                        attn_mag(&a, mag);
                        double worst = 0;
                        for (int i = 0; i < hg * dh; i++) {
                            double e = fabs((double)o1[i] - o2[i]) / (mag[i] + 1e-30);
                            if (e > worst) worst = e;
                        }
                        if (worst > worst_rel) worst_rel = worst;
                        CHECKF(worst < 1e-5, "%s attn dh=%d nrows=%d hg=%d: err %g of sum |p.v|", *lv, dh, nr,
                               hg, worst);
                    } else if (exp_is_libm == 1 || strcmp(*lv, "scalar") == 0) {
                        CHECKF(memcmp(o1, o2, sizeof(float) * hg * dh) == 0, "%s attn dh=%d nrows=%d hg=%d", *lv,
                               dh, nr, hg);
                    } else {
                        double worst = 0;
                        for (int i = 0; i < hg * dh; i++) {
                            double e = fabs((double)o1[i] - o2[i]) / (fabs((double)o2[i]) + 1e-6);
                            if (e > worst) worst = e;
                        }
                        CHECKF(worst < 1e-5, "%s attn dh=%d nrows=%d hg=%d: rel err %g", *lv, dh, nr, hg, worst);
                    }
                    free(rowbuf); free(rows); free(q); free(o1); free(o2); free(o3); free(mag); free(scratch);
                }
        if (reordered) printf("  %s attn: worst error %.3g of sum |p.v| vs the reference order\n", *lv, worst_rel);
    }
}

static void swiglu_loop(float *g, const float *u, int64_t n, float c, float scale) {
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i], ui = u[i];
        if (c > 1e-6f) { gi = fminf(gi, c); ui = fminf(fmaxf(ui, -c), c); }
        g[i] = gi / (1.0f + ds4_expf_fast(-gi)) * ui * scale;
    }
}

TEST(elementwise) {
    ds4_vec_ops v;
    const int64_t lens[] = {1, 15, 16, 33, 64, 200, 1024};
    FOR_LEVELS(v, lv) {
        for (size_t li = 0; li < sizeof lens / sizeof *lens; li++) {
            int64_t n = lens[li];
            rng_seed(99 + (uint64_t)n);
            float *x = malloc(sizeof(float) * n), *w = malloc(sizeof(float) * n), *u = malloc(sizeof(float) * n);
            float *y1 = malloc(sizeof(float) * n), *y2 = malloc(sizeof(float) * n);
            fill_gauss(x, n, 8.0f);
            fill_gauss(w, n, 1.0f);
            fill_gauss(u, n, 8.0f);
            if (n > 4) { x[0] = 1e4f; x[1] = -1e4f; x[2] = 0.0f; x[3] = -0.0f; }
            /* swiglu, with and without the clamp */
            for (int cl = 0; cl < 2; cl++) {
                float c = cl ? 10.0f : 0.0f;
                memcpy(y1, x, sizeof(float) * n);
                memcpy(y2, x, sizeof(float) * n);
                v.swiglu(y1, u, n, c, 0.7f);
                swiglu_loop(y2, u, n, c, 0.7f);
                int64_t worst = 0;
                for (int64_t i = 0; i < n; i++) { int64_t d = ulps(y1[i], y2[i]); if (d > worst) worst = d; }
                CHECKF(worst == 0, "%s swiglu n=%lld c=%g: %lld ulp", *lv,
                       (long long)n, c, (long long)worst);
            }
            /* scale_mul */
            for (int ww = 0; ww < 2; ww++) {
                v.scale_mul(y1, x, 0.37f, ww ? w : NULL, n);
                for (int64_t i = 0; i < n; i++) y2[i] = ww ? x[i] * 0.37f * w[i] : x[i] * 0.37f;
                CHECKF(memcmp(y1, y2, sizeof(float) * n) == 0, "%s scale_mul n=%lld w=%d", *lv, (long long)n, ww);
            }
            /* rot: n pairs of 2n floats */
            if (n <= 200) {
                float *t1 = malloc(sizeof(float) * 2 * n), *t2 = malloc(sizeof(float) * 2 * n);
                fill_gauss(t1, 2 * n, 3.0f);
                memcpy(t2, t1, sizeof(float) * 2 * n);
                for (int64_t i = 0; i < n; i++) { w[i] = cosf((float)i * 0.3f); u[i] = -sinf((float)i * 0.3f); }
                v.rot(t1, w, u, (int)n);
                for (int64_t i = 0; i < n; i++) {
                    float a = t2[2 * i], b = t2[2 * i + 1];
                    t2[2 * i] = a * w[i] - b * u[i];
                    t2[2 * i + 1] = a * u[i] + b * w[i];
                }
                CHECKF(memcmp(t1, t2, sizeof(float) * 2 * n) == 0, "%s rot n=%lld", *lv, (long long)n);
                free(t1); free(t2);
            }
            free(x); free(w); free(u); free(y1); free(y2);
        }
    }
}

TEST(softpool) {
    ds4_vec_ops v;
    const int rows_[] = {1, 8, 128}, ds[] = {1, 15, 16, 40, 256, 300};
    FOR_LEVELS(v, lv) {
        for (size_t ri = 0; ri < sizeof rows_ / sizeof *rows_; ri++)
            for (size_t di = 0; di < sizeof ds / sizeof *ds; di++) {
                int rows = rows_[ri], d = ds[di];
                rng_seed(7 + (uint64_t)(rows * 1000 + d));
                float *kv = malloc(sizeof(float) * (size_t)rows * d), *sc = malloc(sizeof(float) * (size_t)rows * d);
                const float **kp = malloc(sizeof(float *) * (size_t)rows), **sp = malloc(sizeof(float *) * (size_t)rows);
                float *y1 = malloc(sizeof(float) * d), *y2 = malloc(sizeof(float) * d);
                fill_gauss(kv, (int64_t)rows * d, 2.0f);
                fill_gauss(sc, (int64_t)rows * d, 6.0f);
                for (int r = 0; r < rows; r++) {
                    kp[r] = kv + (size_t)r * d;
                    sp[r] = sc + (size_t)r * d;
                    if (r % 3 == 1) sc[(size_t)r * d + (r * 7) % d] = -INFINITY; /* a masked row */
                }
                if (d > 2) {
                    for (int r = 0; r < rows; r++) sc[(size_t)r * d + 1] = -INFINITY; /* nothing left: 0 */
                    sc[2] = NAN;                                                   /* never the max */
                }
                v.softpool(&v, kp, sp, rows, d, y1);
                ds4_vec_softpool_ref(&v, kp, sp, rows, d, y2);
                CHECKF(memcmp(y1, y2, sizeof(float) * d) == 0, "%s softpool rows=%d d=%d", *lv, rows, d);
                if (d > 2) CHECKF(y1[1] == 0.0f, "%s softpool rows=%d d=%d: all -inf column %g", *lv, rows, d, y1[1]);
                /* a weighted mean lies within its rows' range */
                int in = 1;
                for (int e = 3; e < d; e++) {
                    float lo = INFINITY, hi = -INFINITY;
                    for (int r = 0; r < rows; r++)
                        if (sp[r][e] != -INFINITY) { lo = fminf(lo, kp[r][e]); hi = fmaxf(hi, kp[r][e]); }
                    if (lo <= hi && (y1[e] < lo - 1e-5f * fabsf(lo) || y1[e] > hi + 1e-5f * fabsf(hi))) in = 0;
                }
                CHECKF(in, "%s softpool rows=%d d=%d: a mean outside its rows", *lv, rows, d);
                free(kv); free(sc); free(kp); free(sp); free(y1); free(y2);
            }
    }
}

/* The hyper-connection mixes against their scalar versions over the same
 * level's axpy/scale_mul: bit-identical, for the stream counts the kernels
 * specialise (4), others they loop over, and one past their register limit
 * (the fallback), with tails. */
TEST(hc_mixes) {
    ds4_vec_ops v;
    const int64_t lens[] = {1, 16, 37, 1024};
    const int hs[] = {1, 3, 4, 8, 9, 16};
    FOR_LEVELS(v, lv) {
        for (size_t li = 0; li < sizeof lens / sizeof *lens; li++)
            for (size_t hi = 0; hi < sizeof hs / sizeof *hs; hi++) {
                int64_t n = lens[li];
                int H = hs[hi];
                rng_seed(1000 + 31 * (uint64_t)n + (uint64_t)H);
                size_t hn = (size_t)H * (size_t)n;
                float *X1 = malloc(sizeof(float) * hn), *X2 = malloc(sizeof(float) * hn);
                float *scr = malloc(sizeof(float) * hn), *o = malloc(sizeof(float) * n);
                float *x1 = malloc(sizeof(float) * n), *x2 = malloc(sizeof(float) * n);
                float w[16], post[16], C[256];
                fill_gauss(X1, (int64_t)hn, 3.0f);
                fill_gauss(o, n, 2.0f);
                fill_gauss(w, H, 1.0f);
                fill_gauss(post, H, 1.0f);
                fill_gauss(C, H * H, 0.5f);
                X1[0] = 0.0f; /* 0·w and -0 sums: the fixed start matters */
                if (H > 1) w[1] = -0.0f;
                memcpy(X2, X1, sizeof(float) * hn);
                v.hc_collapse(&v, x1, X1, w, H, n);
                ds4_vec_hc_collapse_ref(&v, x2, X2, w, H, n);
                CHECKF(memcmp(x1, x2, sizeof(float) * n) == 0, "%s hc_collapse H=%d n=%lld", *lv, H, (long long)n);
                v.hc_expand(&v, X1, o, post, C, H, n, scr);
                ds4_vec_hc_expand_ref(&v, X2, o, post, C, H, n, scr);
                CHECKF(memcmp(X1, X2, sizeof(float) * hn) == 0, "%s hc_expand H=%d n=%lld", *lv, H, (long long)n);
                free(X1); free(X2); free(scr); free(o); free(x1); free(x2);
            }
    }
}

/* The round trips on blocks whose scales span the formats' ranges, with
 * exact ties, zeros and NaN-free extremes; and the rounding itself over
 * every float magnitude below the format maximum, through one-element
 * blocks whose scale is 1 (|x| = qmax sets s = 1 for the whole block). */
TEST(fp_roundtrips) {
    ds4_vec_ops v, sc;
    CHECK(ds4_simd_vec_ops_for("scalar", &sc) == 0);
    FOR_LEVELS(v, lv) {
        const int64_t lens[] = {1, 20, 32, 64, 100, 192, 256};
        for (size_t li = 0; li < sizeof lens / sizeof *lens; li++) {
            int64_t n = lens[li];
            for (int rep = 0; rep < 20; rep++) {
                rng_seed((uint64_t)(n * 100 + rep));
                float *x1 = malloc(sizeof(float) * n), *x2 = malloc(sizeof(float) * n);
                float scale = ldexpf(1.0f, rep * 6 - 60);
                fill_gauss(x1, n, scale);
                if (rep % 5 == 1)
                    for (int64_t i = 0; i < n; i++) x1[i] = 0.0f;
                if (rep % 5 == 2)
                    for (int64_t i = 0; i < n; i++) x1[i] = (float)((int)(rng_unit() * 25) - 12) * 0.25f;
                memcpy(x2, x1, sizeof(float) * n);
                v.fp8_roundtrip(x1, n);
                sc.fp8_roundtrip(x2, n);
                CHECKF(memcmp(x1, x2, sizeof(float) * n) == 0, "%s fp8 n=%lld rep=%d", *lv, (long long)n, rep);
                fill_gauss(x1, n, scale);
                if (rep % 5 == 2)
                    for (int64_t i = 0; i < n; i++) x1[i] = (float)((int)(rng_unit() * 25) - 12) * 0.25f;
                memcpy(x2, x1, sizeof(float) * n);
                v.fp4_roundtrip(x1, n);
                sc.fp4_roundtrip(x2, n);
                CHECKF(memcmp(x1, x2, sizeof(float) * n) == 0, "%s fp4 n=%lld rep=%d", *lv, (long long)n, rep);
                free(x1);
                free(x2);
            }
        }
        /* rounding: blocks {qmax, x_1 .. x_{blk-1}} have scale 1, so every
         * x_i is rounded as is; every STRIDE-th magnitude up to qmax */
        const struct { float qmax; int blk; void (*rt)(float *, int64_t); float (*ref)(float); } f[2] = {
            {448.0f, 64, v.fp8_roundtrip, ds4_round_fp8_e4m3}, {6.0f, 32, v.fp4_roundtrip, ds4_round_fp4_e2m1}};
        uint32_t stride = getenv("DS4_TEST_VEC_STRIDE") ? (uint32_t)atoi(getenv("DS4_TEST_VEC_STRIDE")) : 61;
        for (int k = 0; k < 2; k++) {
            enum { NB = 1024 };
            static float buf[NB * 64], in[NB * 64];
            int64_t bad = 0;
            uint32_t top = f_bits(f[k].qmax);
            int blk = f[k].blk;
            for (uint32_t u0 = 0, j = 0; u0 <= top;) {
                int m = 0;
                for (; m < NB * blk; m++) {
                    if (m % blk == 0) { in[m] = f[k].qmax; continue; }
                    in[m] = u0 <= top ? ((j++ & 1) ? -bits_f(u0) : bits_f(u0)) : 0.0f;
                    u0 += stride;
                }
                memcpy(buf, in, sizeof(float) * m);
                f[k].rt(buf, m);
                for (int i = 0; i < m; i++)
                    if (f_bits(buf[i]) != f_bits(f[k].ref(in[i]))) bad++;
            }
            CHECKF(bad == 0, "%s %s rounding: %lld mismatches", *lv, k ? "fp4" : "fp8", (long long)bad);
        }
    }
}

/* Indexer scores: every level's kernel equals the scalar reference bit for
 * bit on ragged shapes (heads not a multiple of 8/16, head dims not a
 * multiple of 16, row counts with tails, several tokens per call), a score
 * does not depend on how the call is cut (one row or one token at a time),
 * and the reference is within (dI + nI + 4)·2^-24·Σ_h|w_h|·Σ_d|q_h[d]·k[d]|
 * of the exact value (a double computation of the same formula). */
TEST(idx_scores) {
    static const int shapes[][3] = { /* nI, dI, n */
        {16, 64, 100}, {1, 16, 1}, {3, 20, 15}, {5, 7, 16}, {8, 33, 17}, {13, 64, 31}, {17, 48, 32},
        {24, 128, 33}, {64, 128, 70}, {9, 256, 40}, {4, 300, 19}, {2, 2, 5},
    };
    ds4_vec_ops v;
    FOR_LEVELS(v, lv) {
        for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
            int nI = shapes[si][0], dI = shapes[si][1], n = shapes[si][2], nt = 3;
            int64_t os = n + 5;
            rng_seed(100 + si);
            float *q = malloc(sizeof(float) * nt * nI * dI), *w = malloc(sizeof(float) * nt * nI);
            float *k = malloc(sizeof(float) * n * dI);
            float *out = malloc(sizeof(float) * nt * os), *ref = malloc(sizeof(float) * nt * os);
            float *one = malloc(sizeof(float) * nt * os);
            fill_gauss(q, (int64_t)nt * nI * dI, 1.0f);
            fill_gauss(w, (int64_t)nt * nI, 0.3f);
            fill_gauss(k, (int64_t)n * dI, 1.0f);
            if (si == 0) /* exact zeros and negative weights: relu's 0 and -0 paths */
                for (int e = 0; e < dI; e++) k[e] = 0.0f;
            for (int64_t i = 0; i < nt * os; i++) out[i] = ref[i] = one[i] = -1.0f;
            v.idx_scores(q, w, nt, nI, dI, k, n, out, os);
            ds4_vec_idx_scores_ref(q, w, nt, nI, dI, k, n, ref, os);
            CHECKF(memcmp(out, ref, sizeof(float) * nt * os) == 0, "%s idx_scores nI=%d dI=%d n=%d", *lv, nI, dI, n);
            /* one token and one row per call: the same bits */
            for (int t = 0; t < nt; t++)
                for (int i = 0; i < n; i++)
                    v.idx_scores(q + (size_t)t * nI * dI, w + t * nI, 1, nI, dI, k + (size_t)i * dI, 1,
                                 one + t * os + i, os);
            CHECKF(memcmp(one, ref, sizeof(float) * nt * os) == 0, "%s idx_scores split nI=%d dI=%d n=%d", *lv,
                   nI, dI, n);
            if (!strcmp(*lv, "scalar")) {
                double worst = 0;
                for (int t = 0; t < nt; t++)
                    for (int i = 0; i < n; i++) {
                        double exact = 0, mag = 0;
                        for (int h = 0; h < nI; h++) {
                            const float *qh = q + ((size_t)t * nI + h) * dI, *ki = k + (size_t)i * dI;
                            double d = 0, m = 0;
                            for (int e = 0; e < dI; e++) { d += (double)qh[e] * ki[e]; m += fabs((double)qh[e] * ki[e]); }
                            exact += w[t * nI + h] * (d > 0 ? d : 0);
                            mag += fabs(w[t * nI + h]) * m;
                        }
                        double err = fabs(ref[t * os + i] - exact), bound = (dI + nI + 4) * 0x1p-24 * mag;
                        if (bound > 0 && err / bound > worst) worst = err / bound;
                        CHECKF(err <= bound, "ref vs exact nI=%d dI=%d t=%d i=%d: %g > %g", nI, dI, t, i, err, bound);
                    }
                if (si == 0) printf("  idx_scores ref: worst error %.3f of the bound\n", worst);
            }
            free(q); free(w); free(k); free(out); free(ref); free(one);
        }
    }
}

/* FP4-exact vectors as the model numerics make them: Gaussian values, each
 * 32-block scaled by 2^(0..span) on top of `scale`, then the FP4 round
 * trip. */
static void fill_fp4(const ds4_vec_ops *v, float *x, int n, int dI, float scale, int span) {
    for (int i = 0; i < n; i++) {
        float *r = x + (size_t)i * dI;
        for (int e = 0; e < dI; e++) r[e] = rng_gauss() * scale * (float)(1 << (span ? (e / 32 * 7 + i) % (span + 1) : 0));
        v->fp4_roundtrip(r, dI);
    }
}

/* idx8.h's conditions, written independently of the kernel: x is c·2^e
 * with integer |c| <= 127 and e = floor(log2 max|x|) - 6 in [-126, 126]
 * (1), all zero (0), or neither (-1). */
static int expect_codes(const float *x, int d, int *e) {
    float a = 0;
    for (int j = 0; j < d; j++) {
        if (!isfinite(x[j])) return -1;
        a = fmaxf(a, fabsf(x[j]));
    }
    *e = 0;
    if (a == 0) return 0;
    if (a < FLT_MIN) return -1;
    int top;
    frexpf(a, &top); /* a = f·2^top, f in [0.5, 1) */
    int ee = top - 1 - 6;
    if (ee < -126 || ee > 126) return -1;
    for (int j = 0; j < d; j++) {
        double c = ldexp((double)x[j], -ee);
        if (c != floor(c) || fabs(c) > 127) return -1;
    }
    *e = ee;
    return 1;
}

/* (bad, min e, max e) of the nonzero vectors among n. */
static void expect_meta(const float *x, int n, int d, int m[3]) {
    m[0] = 0; m[1] = INT32_MAX; m[2] = INT32_MIN;
    for (int i = 0; i < n; i++) {
        int e, rc = expect_codes(x + (size_t)i * d, d, &e);
        if (rc < 0) m[0]++;
        if (rc > 0) { m[1] = e < m[1] ? e : m[1]; m[2] = e > m[2] ? e : m[2]; }
    }
}

/* The (token, group) pairs that should take the integer path. */
static int64_t expect_pairs(const float *q, int nt, int nI, int dI, const float *k, int n) {
    int64_t pairs = 0;
    for (int t = 0; t < nt; t++) {
        int qm[3];
        expect_meta(q + (size_t)t * nI * dI, nI, dI, qm);
        for (int g = 0; g < (n + 15) / 16; g++) {
            int km[3];
            expect_meta(k + (size_t)g * 16 * dI, n - 16 * g < 16 ? n - 16 * g : 16, dI, km);
            if (qm[0] || km[0]) continue;
            if (qm[1] == INT32_MAX || km[1] == INT32_MAX || (qm[1] + km[1] >= -149 && qm[2] + km[2] <= 104)) pairs++;
        }
    }
    return pairs;
}

/* idx8 against the level's idx_scores (and the scalar reference where no
 * NaN is involved), whole and cut into one token and one group per call;
 * the integer path's (token, group) count must be expect_pairs'.  Returns
 * that count, -1 on a failure. */
static int64_t idx8_check(const ds4_vec_ops *v, const float *q, const float *w, int nt, int nI, int dI,
                          const float *k, int n, bool nan_free, const char *what) {
    size_t gb = ds4_idx8_group_bytes(dI), qb = ds4_idx8_query_bytes(nI, dI);
    int ng = (n + 15) / 16;
    uint8_t *groups = aligned_alloc(64, gb * (size_t)(ng ? ng : 1)), *qr = aligned_alloc(64, qb * (size_t)nt);
    for (int i = 0; i < n; i++) v->idx8->put_row(groups, i, k + (size_t)i * dI, dI);
    for (int t = 0; t < nt; t++) v->idx8->query(q + (size_t)t * nI * dI, nI, dI, qr + qb * (size_t)t);
    int64_t os = n + 3;
    float *out = malloc(sizeof(float) * nt * os), *lvl = malloc(sizeof(float) * nt * os);
    float *ref = malloc(sizeof(float) * nt * os), *cut = malloc(sizeof(float) * nt * os);
    for (int64_t i = 0; i < nt * os; i++) out[i] = lvl[i] = ref[i] = cut[i] = -1.0f;
    int64_t used = v->idx8->scores(v, q, qr, qb, w, nt, nI, dI, groups, k, n, out, os);
    v->idx_scores(q, w, nt, nI, dI, k, n, lvl, os);
    ds4_vec_idx_scores_ref(q, w, nt, nI, dI, k, n, ref, os);
    int64_t used_cut = 0;
    for (int t = 0; t < nt; t++)
        for (int g = 0; g < ng; g++) {
            int cnt = n - 16 * g < 16 ? n - 16 * g : 16;
            used_cut += v->idx8->scores(v, q + (size_t)t * nI * dI, qr + qb * (size_t)t, qb, w + t * nI, 1, nI, dI,
                                        groups + gb * (size_t)g, k + (size_t)g * 16 * dI, cnt, cut + t * os + 16 * g,
                                        os);
        }
    int64_t want = expect_pairs(q, nt, nI, dI, k, n);
    bool ok = memcmp(out, lvl, sizeof(float) * nt * os) == 0 && memcmp(cut, lvl, sizeof(float) * nt * os) == 0 &&
              (!nan_free || memcmp(out, ref, sizeof(float) * nt * os) == 0);
    CHECKF(ok, "idx8 %s nI=%d dI=%d n=%d: scores differ", what, nI, dI, n);
    CHECKF(used == want && used_cut == want, "idx8 %s nI=%d dI=%d n=%d: %lld (cut %lld) integer pairs, want %lld",
           what, nI, dI, n, (long long)used, (long long)used_cut, (long long)want);
    free(groups); free(qr); free(out); free(lvl); free(ref); free(cut);
    return ok && used == want ? used : -1;
}

TEST(idx8_scores) {
    static const int shapes[][3] = { /* nI, dI, n */
        {64, 128, 70}, {16, 64, 100}, {3, 4, 1}, {5, 20, 33}, {8, 36, 16}, {13, 64, 47}, {1, 1024, 17},
        {9, 128, 64},
    };
    ds4_vec_ops v;
    int levels = 0;
    FOR_LEVELS(v, lv) {
        if (!v.idx8) continue;
        levels++;
        for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
            int nI = shapes[si][0], dI = shapes[si][1], n = shapes[si][2], nt = 3;
            CHECK(ds4_idx8_shape_ok(nI, dI));
            int64_t all = (int64_t)nt * ((n + 15) / 16);
            rng_seed(300 + si);
            float *q = malloc(sizeof(float) * nt * nI * dI), *w = malloc(sizeof(float) * nt * nI);
            float *k = malloc(sizeof(float) * n * dI);
            fill_gauss(w, (int64_t)nt * nI, 0.3f);
            /* FP4 data, block scales 1-2x apart on top of the amax's own
             * spread: (nearly) every group takes the integer path; a zero
             * row and a zero head change nothing */
            fill_fp4(&v, q, nt * nI, dI, 1.0f, 1);
            fill_fp4(&v, k, n, dI, 0.5f, 1);
            memset(k, 0, sizeof(float) * dI);
            memset(q + dI, 0, sizeof(float) * dI * (nI > 1));
            int64_t used = idx8_check(&v, q, w, nt, nI, dI, k, n, true, "fp4");
            CHECKF(used * 4 >= all * 3, "%s idx8 fp4 nI=%d dI=%d: only %lld of %lld pairs integer", *lv, nI, dI,
                   (long long)used, (long long)all);
            /* spans up to 8x: more rows and heads fall back */
            fill_fp4(&v, q, nt * nI, dI, 1.0f, 3);
            fill_fp4(&v, k, n, dI, 0.5f, 3);
            idx8_check(&v, q, w, nt, nI, dI, k, n, true, "fp4 wide");
            /* a 2^10 span in group 0, a NaN and then an infinity in the last */
            if (dI >= 8 && n > 16) {
                fill_fp4(&v, k, n, dI, 0.5f, 0);
                k[(size_t)5 * dI] = 1024.0f * 6.0f;
                k[(size_t)(n - 1) * dI + 1] = NAN;
                used = idx8_check(&v, q, w, nt, nI, dI, k, n, false, "nan row");
                CHECK(used >= 0 && used <= all - 2 * nt);
                k[(size_t)(n - 1) * dI + 1] = INFINITY;
                used = idx8_check(&v, q, w, nt, nI, dI, k, n, false, "inf row");
                CHECK(used >= 0 && used <= all - 2 * nt);
            }
            /* the exponent range: near the bottom (e_q + e_k < -149 must
             * fall back: a subnormal unit) and the top (past 2^127) */
            fill_fp4(&v, q, nt * nI, dI, 0x1p-45f, 0);
            fill_fp4(&v, k, n, dI, 0x1p-100f, 0);
            CHECK(idx8_check(&v, q, w, nt, nI, dI, k, n, true, "tiny") == 0);
            fill_fp4(&v, q, nt * nI, dI, 0x1p-30f, 0);
            CHECK(idx8_check(&v, q, w, nt, nI, dI, k, n, true, "small") > 0);
            fill_fp4(&v, q, nt * nI, dI, 0x1p58f, 0);
            fill_fp4(&v, k, n, dI, 0x1p60f, 0);
            CHECK(idx8_check(&v, q, w, nt, nI, dI, k, n, false, "huge") == 0);
            /* plain floats (the reference numerics): nothing converts */
            fill_gauss(q, (int64_t)nt * nI * dI, 1.0f);
            fill_gauss(k, (int64_t)n * dI, 1.0f);
            CHECK(idx8_check(&v, q, w, nt, nI, dI, k, n, true, "plain") == 0);
            free(q); free(w); free(k);
        }
    }
    printf("  idx8: %d level(s) with the integer path\n", levels);
}

TEST(live_table) {
    const ds4_vec_ops *live = ds4_vec_ops_live();
    CHECK(live != NULL);
    CHECK(live->attn && live->dot16 && live->exp && live->exp_fast && live->swiglu && live->scale_mul && live->rot &&
          live->fp8_roundtrip && live->fp4_roundtrip &&
          live->hc_collapse && live->hc_expand && live->idx_scores);
    const char *lv0 = ds4_simd_level();
    CHECK(ds4_simd_force("scalar") == 0);
    CHECK(ds4_vec_ops_live() == live && live->attn == ds4_vec_attn_ref);
    CHECK(ds4_simd_force(lv0) == 0);
}

int main(void) {
    RUN(dot16);
    RUN(exp);
    RUN(attn);
    RUN(elementwise);
    RUN(exp_fast);
    RUN(softpool);
    RUN(hc_mixes);
    RUN(fp_roundtrips);
    RUN(idx_scores);
    RUN(idx8_scores);
    RUN(live_table);
    TEST_END();
}
