/* Sampler tests: greedy exactness, RNG reproducibility and known answers,
 * exact distributions (samp_probs) and chi-square goodness of fit of draws
 * against an independent double-precision reference of the sample.h chain,
 * penalties, masks and the non-finite edge cases.  Runs in well under 5 s,
 * also under ASan. */
#include "sample/sample.h"
#include "test.h"

#include <float.h>
#include <stdint.h>
#include <time.h>

/* ============================ reference chain ============================= */

typedef struct ref_cfg {
    double temperature, top_p, min_p;
    int top_k;
} ref_cfg;

static const double *ref_keys;
static int ref_cmp(const void *pa, const void *pb) {
    int a = *(const int *)pa, b = *(const int *)pb;
    if (ref_keys[a] != ref_keys[b]) return ref_keys[a] > ref_keys[b] ? -1 : 1;
    return a - b;
}

/* sample.h steps 4-9 in double, with a full sort: the obviously-correct way. */
static void ref_probs(const double *logit, int n, ref_cfg c, double *out) {
    int *ord = malloc((size_t)n * sizeof *ord);
    double *z = malloc((size_t)n * sizeof *z);
    int nf = 0;
    for (int i = 0; i < n; i++) {
        out[i] = 0;
        if (isfinite(logit[i])) ord[nf++] = i;
    }
    for (int i = 0; i < n; i++) z[i] = logit[i] / (c.temperature > 0 ? c.temperature : 1);
    ref_keys = z;
    qsort(ord, (size_t)nf, sizeof *ord, ref_cmp);
    if (c.temperature <= 0) {
        out[ord[0]] = 1;
        free(ord);
        free(z);
        return;
    }
    int keep = (c.top_k > 0 && c.top_k < nf) ? c.top_k : nf;
    double sum = 0;
    for (int i = 0; i < keep; i++) sum += exp(z[ord[i]] - z[ord[0]]);
    double cum = 0, pmax = 1 / sum;
    int kp = keep;
    for (int i = 0; i < keep; i++) {
        cum += exp(z[ord[i]] - z[ord[0]]) / sum;
        if (c.top_p < 1 && cum >= c.top_p) {
            kp = i + 1;
            break;
        }
    }
    double tot = 0;
    for (int i = 0; i < kp; i++) {
        double p = exp(z[ord[i]] - z[ord[0]]) / sum;
        if (p >= c.min_p * pmax) {
            out[ord[i]] = p;
            tot += p;
        }
    }
    for (int i = 0; i < n; i++) out[i] /= tot;
    free(ord);
    free(z);
}

static samp_params params_of(ref_cfg c) {
    samp_params p;
    samp_params_default(&p);
    p.temperature = (float)c.temperature;
    p.top_p = (float)c.top_p;
    p.top_k = c.top_k;
    p.min_p = (float)c.min_p;
    return p;
}

/* Chi-square critical value at upper tail probability 0.001 by the
 * Wilson-Hilferty cube approximation; z_0.999 = 3.090232. */
static double chi2_crit_001(int df) {
    double h = 2.0 / (9.0 * df);
    double t = 1 - h + 3.090232 * sqrt(h);
    return df * t * t * t;
}

/* Pearson statistic of counts against expected probs q; cells with N q < 5
 * are pooled into one.  Cells with q == 0 are not in the statistic (the caller
 * checks them for zero draws).  Sets *df. */
static double chi2_stat(const long *cnt, const double *q, int n, long N, int *df) {
    double stat = 0, pool_e = 0, pool_o = 0;
    int cells = 0;
    for (int i = 0; i < n; i++) {
        if (q[i] <= 0) continue;
        double e = q[i] * (double)N;
        if (e < 5) {
            pool_e += e;
            pool_o += (double)cnt[i];
            continue;
        }
        stat += ((double)cnt[i] - e) * ((double)cnt[i] - e) / e;
        cells++;
    }
    if (pool_e > 0) {
        stat += (pool_o - pool_e) * (pool_o - pool_e) / pool_e;
        cells++;
    }
    *df = cells - 1;
    return stat;
}

/* A deterministic, uneven test vocabulary. */
static void make_logits(double *ld, float *lf, int n) {
    for (int i = 0; i < n; i++) {
        ld[i] = 2.5 * sin(1.3 * i) + 0.3 * (i % 5);
        ld[i] = (double)(float)ld[i]; /* the sampler sees the f32 value */
        lf[i] = (float)ld[i];
    }
}

/* Checks samp_probs against the reference, then draws N tokens and runs the
 * chi-square test (plus a power check against a wrong distribution). */
static void check_distribution(const char *what, const double *ld, const float *lf, int n, ref_cfg c,
                               long N, uint64_t seed) {
    double *q = malloc((size_t)n * sizeof *q), *qw = malloc((size_t)n * sizeof *qw);
    float *pr = malloc((size_t)n * sizeof *pr);
    long *cnt = calloc((size_t)n, sizeof *cnt);
    ref_probs(ld, n, c, q);
    samp *s = samp_new(n, seed, NULL);
    samp_params p = params_of(c);

    CHECK_EQ_INT(samp_probs(s, lf, &p, NULL, pr), SAMP_OK);
    double maxdiff = 0;
    for (int i = 0; i < n; i++) {
        double d = fabs(pr[i] - q[i]);
        if (d > maxdiff) maxdiff = d;
        CHECKF((pr[i] > 0) == (q[i] > 0), "%s: id %d kept by one side only (%g vs %g)", what, i, pr[i], q[i]);
    }
    CHECKF(maxdiff < 2e-6, "%s: samp_probs differs from reference by %g", what, maxdiff);

    for (long k = 0; k < N; k++) {
        int32_t t = -1;
        if (samp_sample(s, lf, &p, NULL, &t) != SAMP_OK || t < 0 || t >= n) {
            CHECKF(0, "%s: sample failed (tok %d)", what, (int)t);
            break;
        }
        cnt[t]++;
    }
    long leaked = 0;
    for (int i = 0; i < n; i++)
        if (q[i] == 0) leaked += cnt[i];
    CHECKF(leaked == 0, "%s: %ld draws of truncated tokens", what, leaked);

    int df;
    double stat = chi2_stat(cnt, q, n, N, &df);
    if (df >= 1) {
        double crit = chi2_crit_001(df);
        CHECKF(stat < crit, "%s: chi2 %.2f >= %.2f (df %d)", what, stat, crit, df);
        /* Power: the same draws must reject the distribution at a 15% higher
         * temperature, or this test could not see a temperature bug. */
        ref_cfg cw = c;
        cw.temperature *= 1.15;
        ref_probs(ld, n, cw, qw);
        int dfw;
        double sw = chi2_stat(cnt, qw, n, N, &dfw);
        int wrong_support = 0;
        for (int i = 0; i < n; i++)
            if (qw[i] == 0 && cnt[i]) wrong_support = 1;
        CHECKF(wrong_support || sw > chi2_crit_001(dfw), "%s: power check: wrong T not rejected (%.2f)", what, sw);
        printf("     %-28s df %4d  chi2 %8.2f  crit %8.2f\n", what, df, stat, crit);
    }
    samp_free(s);
    free(q);
    free(qw);
    free(pr);
    free(cnt);
}

/* ================================= tests ================================== */

TEST(defaults) {
    samp_params p;
    samp_params_default(&p);
    CHECK(p.temperature == 1.0f && p.top_p == 1.0f && p.top_k == 0 && p.min_p == 0.05f);
    CHECK(p.repetition_penalty == 1.0f && p.presence_penalty == 0 && p.frequency_penalty == 0);
    CHECK(p.penalty_last_n == 64 && p.seed == -1);
    CHECK_EQ_INT(samp_params_check(&p, NULL), SAMP_OK);

    ds4_err e = {{0}};
    samp_params b = p;
    b.temperature = NAN;
    CHECK_EQ_INT(samp_params_check(&b, &e), SAMP_ERR_PARAM);
    CHECK_STR_CONTAINS(e.msg, "temperature");
    b = p, b.temperature = -1;
    CHECK_EQ_INT(samp_params_check(&b, NULL), SAMP_ERR_PARAM);
    b = p, b.top_p = 1.5f;
    CHECK_EQ_INT(samp_params_check(&b, NULL), SAMP_ERR_PARAM);
    b = p, b.top_p = NAN;
    CHECK_EQ_INT(samp_params_check(&b, NULL), SAMP_ERR_PARAM);
    b = p, b.top_k = -1;
    CHECK_EQ_INT(samp_params_check(&b, NULL), SAMP_ERR_PARAM);
    b = p, b.min_p = -0.1f;
    CHECK_EQ_INT(samp_params_check(&b, NULL), SAMP_ERR_PARAM);
    b = p, b.repetition_penalty = 0;
    CHECK_EQ_INT(samp_params_check(&b, NULL), SAMP_ERR_PARAM);
    b = p, b.frequency_penalty = INFINITY;
    CHECK_EQ_INT(samp_params_check(&b, NULL), SAMP_ERR_PARAM);
    b = p, b.penalty_last_n = -2;
    CHECK_EQ_INT(samp_params_check(&b, NULL), SAMP_ERR_PARAM);

    /* samp_sample refuses bad params without drawing. */
    samp *s = samp_new(4, 1, NULL);
    float l[4] = {0, 1, 2, 3};
    int32_t t = 7;
    b = p, b.top_k = -3;
    CHECK_EQ_INT(samp_sample(s, l, &b, NULL, &t), SAMP_ERR_PARAM);
    CHECK_EQ_INT(t, -1);
    CHECK_EQ_INT(samp_sample(s, NULL, &p, NULL, &t), SAMP_ERR_PARAM);
    samp_free(s);

    CHECK(samp_new(0, 1, &e) == NULL);
    CHECK_STR_CONTAINS(e.msg, "vocabulary size");
    CHECK(samp_new(-5, 1, NULL) == NULL);
    samp_free(NULL);
}

TEST(greedy) {
    samp_params p;
    samp_params_default(&p);
    p.temperature = 0;
    p.top_k = 3, p.top_p = 0.1f, p.min_p = 0.5f; /* irrelevant when greedy */
    samp *s = samp_new(6, 1, NULL);
    float l[6] = {1, 3, 2, 3, -7, 3};
    int32_t t;
    CHECK_EQ_INT(samp_sample(s, l, &p, NULL, &t), SAMP_OK);
    CHECK_EQ_INT(t, 1); /* ties -> lowest id */
    CHECK_EQ_INT(samp_argmax(l, 6), 1);
    samp_rng_state a, b;
    samp_rng_get(s, &a);
    for (int i = 0; i < 10; i++) samp_sample(s, l, &p, NULL, &t);
    samp_rng_get(s, &b);
    CHECK(memcmp(&a, &b, sizeof a) == 0); /* greedy consumes no randomness */
    float pr[6];
    CHECK_EQ_INT(samp_probs(s, l, &p, NULL, pr), SAMP_OK);
    CHECK(pr[1] == 1 && pr[3] == 0 && pr[5] == 0);
    samp_free(s);

    /* Real vocabulary size, pseudo-random logits: matches a naive loop. */
    int n = 129280;
    float *big = malloc((size_t)n * sizeof *big);
    s = samp_new(n, 9, NULL);
    uint64_t x = 12345;
    for (int rep = 0; rep < 5; rep++) {
        int best = 0;
        for (int i = 0; i < n; i++) {
            x = x * 6364136223846793005ULL + 1442695040888963407ULL;
            big[i] = (float)((x >> 40) % 100000) / 1000.0f;
            if (big[i] > big[best]) best = i;
        }
        CHECK_EQ_INT(samp_sample(s, big, &p, NULL, &t), SAMP_OK);
        CHECK_EQ_INT(t, best);
        CHECK_EQ_INT(samp_argmax(big, n), best);
    }
    free(big);
    samp_free(s);

    float nanonly[2] = {NAN, -INFINITY};
    CHECK_EQ_INT(samp_argmax(nanonly, 2), -1);
    CHECK_EQ_INT(samp_argmax(l, 0), -1);
}

TEST(rng) {
    samp *s = samp_new(8, 0, NULL);
    samp_rng_state st;
    samp_rng_get(s, &st);
    /* splitmix64(0) first output, the generator's published reference value. */
    CHECK(st.s[0] == UINT64_C(0xe220a8397b1dcdaf));
    samp_rng_state ref = {{1, 2, 3, 4}};
    CHECK_EQ_INT(samp_rng_set(s, &ref), SAMP_OK);
    /* xoshiro256** from {1,2,3,4}: rotl(2*5,7)*9 = 11520, then rotl(0,7)*9 = 0. */
    CHECK(samp_rng_next(s) == 11520);
    CHECK(samp_rng_next(s) == 0);
    samp_rng_state zero = {{0, 0, 0, 0}};
    samp_rng_get(s, &st);
    CHECK_EQ_INT(samp_rng_set(s, &zero), SAMP_ERR_PARAM);
    samp_rng_state st2;
    samp_rng_get(s, &st2);
    CHECK(memcmp(&st, &st2, sizeof st) == 0);
    double lo = 1, hi = 0, mean = 0;
    for (int i = 0; i < 10000; i++) {
        double u = samp_rng_uniform(s);
        if (u < lo) lo = u;
        if (u > hi) hi = u;
        mean += u;
    }
    CHECK(lo >= 0 && hi < 1 && lo < 0.01 && hi > 0.99);
    CHECK_NEAR(mean / 10000, 0.5, 0.02);
    uint64_t a1 = samp_seed_auto(1), a2 = samp_seed_auto(2);
    CHECK(a1 != a2 && a1 <= (uint64_t)INT64_MAX && a2 <= (uint64_t)INT64_MAX);
    samp_free(s);
}

TEST(seed_reproducible) {
    enum { N = 1000, DRAWS = 5000 };
    double ld[N];
    float lf[N];
    make_logits(ld, lf, N);
    samp_params p;
    samp_params_default(&p);
    p.min_p = 0; /* keep many candidates so different seeds visibly differ */
    samp *s1 = samp_new(N, 42, NULL), *s2 = samp_new(N, 42, NULL), *s3 = samp_new(N, 43, NULL);
    int32_t *seq = malloc(DRAWS * sizeof *seq);
    int same12 = 1, diff13 = 0;
    for (int i = 0; i < DRAWS; i++) {
        int32_t a, b, c;
        samp_sample(s1, lf, &p, NULL, &a);
        samp_sample(s2, lf, &p, NULL, &b);
        samp_sample(s3, lf, &p, NULL, &c);
        seq[i] = a;
        same12 &= a == b;
        diff13 += a != c;
    }
    CHECK(same12);
    CHECKF(diff13 > DRAWS / 2, "seeds 42 and 43 agree on %d of %d draws", DRAWS - diff13, DRAWS);

    /* Reseeding replays; snapshot/restore of the state resumes exactly. */
    samp_seed(s1, 42);
    int replay = 1;
    for (int i = 0; i < DRAWS; i++) {
        int32_t a;
        samp_sample(s1, lf, &p, NULL, &a);
        replay &= a == seq[i];
    }
    CHECK(replay);
    samp_params ps = p;
    ps.seed = 42;
    samp_seed_params(s2, &ps, 999);
    int32_t t;
    samp_sample(s2, lf, &p, NULL, &t);
    CHECK_EQ_INT(t, seq[0]);
    samp_rng_state snap;
    samp_rng_get(s2, &snap);
    int32_t after[100];
    for (int i = 0; i < 100; i++) samp_sample(s2, lf, &p, NULL, &after[i]);
    samp_rng_set(s3, &snap);
    int resumed = 1;
    for (int i = 0; i < 100; i++) {
        samp_sample(s3, lf, &p, NULL, &t);
        resumed &= t == after[i] && t == seq[i + 1];
    }
    CHECK(resumed);
    free(seq);
    samp_free(s1);
    samp_free(s2);
    samp_free(s3);
}

TEST(chi_square) {
    enum { N = 32 };
    double ld[N];
    float lf[N];
    make_logits(ld, lf, N);
    const long D = 200000;
    check_distribution("T=1 plain", ld, lf, N, (ref_cfg){1.0, 1.0, 0.0, 0}, D, 1);
    check_distribution("T=0.7 top_k=10", ld, lf, N, (ref_cfg){0.7, 1.0, 0.0, 10}, D, 2);
    check_distribution("T=1.3 top_p=0.8", ld, lf, N, (ref_cfg){1.3, 0.8, 0.0, 0}, D, 3);
    check_distribution("T=1 min_p=0.1", ld, lf, N, (ref_cfg){1.0, 1.0, 0.1, 0}, D, 4);
    check_distribution("defaults (min_p=0.05)", ld, lf, N, (ref_cfg){1.0, 1.0, 0.05, 0}, D, 5);
    check_distribution("T=0.8 k=20 p=0.9 min_p=0.02", ld, lf, N, (ref_cfg){0.8, 0.9, 0.02, 20}, D, 6);
    /* min-p leaves fewer than k, so top-p must normalize over the full top-k. */
    check_distribution("T=1.5 k=12 p=0.7 min_p=0.2", ld, lf, N, (ref_cfg){1.5, 0.7, 0.2, 12}, D, 7);

    /* Large vocabulary with min_p 0: exercises the histogram shrink before
     * the top-p sort.  64 strong tokens over a wide low tail. */
    enum { NB = 4096 };
    static double bd[NB];
    static float bf[NB];
    for (int i = 0; i < NB; i++) {
        bd[i] = i < 64 ? 4.0 - i / 16.0 : -2.0 - 4.0 * fmod(i * 0.6180339887, 1.0);
        bd[i] = (double)(float)bd[i];
        bf[i] = (float)bd[i];
    }
    check_distribution("V=4096 T=1 top_p=0.7", bd, bf, NB, (ref_cfg){1.0, 0.7, 0.0, 0}, 12000, 8);
    check_distribution("V=4096 T=0.9 k=100 p=0.95", bd, bf, NB, (ref_cfg){0.9, 0.95, 0.0, 100}, 12000, 9);
}

/* Exact distributions on a large, flat-ish vocabulary where the nucleus holds
 * thousands of tokens: the multi-level histogram cut must match a full sort. */
TEST(top_p_large_exact) {
    enum { N = 60000 };
    double *ld = malloc(N * sizeof *ld), *q = malloc(N * sizeof *q);
    float *lf = malloc(N * sizeof *lf), *pr = malloc(N * sizeof *pr);
    uint64_t x = 4242;
    for (int i = 0; i < N; i++) {
        double g = 0;
        for (int k = 0; k < 4; k++) {
            x = x * 6364136223846793005ULL + 1442695040888963407ULL;
            g += (double)(x >> 11) * 0x1.0p-53 - 0.5;
        }
        lf[i] = (float)(g * 3.0);
        ld[i] = lf[i];
    }
    samp *s = samp_new(N, 1, NULL);
    const double ps[] = {0.05, 0.5, 0.9, 0.99, 0.999};
    const double ts[] = {0.5, 1.0, 2.0};
    for (size_t a = 0; a < sizeof ps / sizeof ps[0]; a++)
        for (size_t b = 0; b < sizeof ts / sizeof ts[0]; b++) {
            ref_cfg c = {ts[b], ps[a], 0.0, 0};
            samp_params p = params_of(c);
            ref_probs(ld, N, c, q);
            CHECK_EQ_INT(samp_probs(s, lf, &p, NULL, pr), SAMP_OK);
            int kept_ref = 0, kept = 0;
            double maxdiff = 0;
            for (int i = 0; i < N; i++) {
                kept_ref += q[i] > 0;
                kept += pr[i] > 0;
                if (fabs(pr[i] - q[i]) > maxdiff) maxdiff = fabs(pr[i] - q[i]);
            }
            /* A cut landing on the boundary token may differ by rounding. */
            CHECKF(abs(kept - kept_ref) <= 1, "top_p %g T %g: kept %d vs %d", ps[a], ts[b], kept, kept_ref);
            CHECKF(maxdiff < 1e-6, "top_p %g T %g: max diff %g", ps[a], ts[b], maxdiff);
        }
    samp_free(s);
    free(ld);
    free(q);
    free(lf);
    free(pr);
}

TEST(truncation_edges) {
    samp_params p;
    samp_params_default(&p);
    p.min_p = 0;
    float pr[5];
    /* Ties at the top-k boundary go to the lower ids. */
    float tie[5] = {1, 1, 1, 1, 0};
    samp *s = samp_new(5, 3, NULL);
    p.top_k = 2;
    CHECK_EQ_INT(samp_probs(s, tie, &p, NULL, pr), SAMP_OK);
    CHECK(fabs(pr[0] - 0.5) < 1e-6 && fabs(pr[1] - 0.5) < 1e-6 && pr[2] == 0 && pr[3] == 0 && pr[4] == 0);
    /* Tiny and zero top_p keep exactly the argmax. */
    float l[5] = {0.1f, 2.0f, 1.9f, -1, 0};
    p.top_k = 0;
    p.top_p = 1e-6f;
    CHECK_EQ_INT(samp_probs(s, l, &p, NULL, pr), SAMP_OK);
    CHECK(pr[1] == 1 && pr[2] == 0);
    p.top_p = 0;
    int all_argmax = 1;
    for (int i = 0; i < 200; i++) {
        int32_t t;
        samp_sample(s, l, &p, NULL, &t);
        all_argmax &= t == 1;
    }
    CHECK(all_argmax);
    /* min_p = 1 keeps only the max. */
    p.top_p = 1;
    p.min_p = 1;
    CHECK_EQ_INT(samp_probs(s, l, &p, NULL, pr), SAMP_OK);
    CHECK(pr[1] == 1);
    /* Tiny temperature: no NaN from (x - m) / T, the argmax takes it all. */
    p.min_p = 0;
    p.temperature = 1e-30f;
    CHECK_EQ_INT(samp_probs(s, l, &p, NULL, pr), SAMP_OK);
    CHECK(pr[1] == 1 && pr[0] == 0);
    /* Huge temperature: uniform. */
    p.temperature = 1e30f;
    CHECK_EQ_INT(samp_probs(s, l, &p, NULL, pr), SAMP_OK);
    CHECK_NEAR(pr[3], 0.2, 1e-6);
    samp_free(s);
}

TEST(non_finite) {
    samp_params p;
    samp_params_default(&p);
    samp *s = samp_new(4, 5, NULL);
    int32_t t;
    float pr[4];
    /* All -inf except one: that one, greedy or not. */
    float one[4] = {-INFINITY, -INFINITY, 0.5f, -INFINITY};
    CHECK_EQ_INT(samp_sample(s, one, &p, NULL, &t), SAMP_OK);
    CHECK_EQ_INT(t, 2);
    p.temperature = 0;
    CHECK_EQ_INT(samp_sample(s, one, &p, NULL, &t), SAMP_OK);
    CHECK_EQ_INT(t, 2);
    p.temperature = 1;
    /* Nothing drawable: an error, no token, RNG untouched. */
    float none[4] = {-INFINITY, NAN, -INFINITY, NAN};
    samp_rng_state a, b;
    samp_rng_get(s, &a);
    t = 0;
    CHECK_EQ_INT(samp_sample(s, none, &p, NULL, &t), SAMP_ERR_EMPTY);
    CHECK_EQ_INT(t, -1);
    samp_rng_get(s, &b);
    CHECK(memcmp(&a, &b, sizeof a) == 0);
    p.temperature = 0;
    CHECK_EQ_INT(samp_sample(s, none, &p, NULL, &t), SAMP_ERR_EMPTY);
    p.temperature = 1;
    /* NaN is -inf: never drawn. */
    float nanl[4] = {NAN, 1.0f, NAN, 0.0f};
    p.min_p = 0;
    int ok = 1;
    for (int i = 0; i < 2000; i++) {
        CHECK_EQ_INT(samp_sample(s, nanl, &p, NULL, &t), SAMP_OK);
        ok &= t == 1 || t == 3;
    }
    CHECK(ok);
    CHECK_EQ_INT(samp_probs(s, nanl, &p, NULL, pr), SAMP_OK);
    CHECK(pr[0] == 0 && pr[2] == 0);
    CHECK_NEAR(pr[1], 1 / (1 + exp(-1.0)), 1e-6);
    /* +inf is clamped to FLT_MAX: the +inf tokens share the mass. */
    float infl[4] = {0, INFINITY, 5, INFINITY};
    CHECK_EQ_INT(samp_probs(s, infl, &p, NULL, pr), SAMP_OK);
    CHECK(pr[1] == 0.5f && pr[3] == 0.5f && pr[0] == 0 && pr[2] == 0);
    samp_free(s);

    /* Vocabulary of one. */
    s = samp_new(1, 6, NULL);
    float single = -3;
    samp_params_default(&p);
    p.top_k = 5, p.top_p = 0.5f;
    CHECK_EQ_INT(samp_sample(s, &single, &p, NULL, &t), SAMP_OK);
    CHECK_EQ_INT(t, 0);
    p.temperature = 0;
    CHECK_EQ_INT(samp_sample(s, &single, &p, NULL, &t), SAMP_OK);
    CHECK_EQ_INT(t, 0);
    samp_free(s);
}

TEST(penalties) {
    samp *s = samp_new(4, 7, NULL);
    samp_params p;
    samp_params_default(&p);
    p.min_p = 0;
    p.repetition_penalty = 2;
    p.frequency_penalty = 0.5f;
    p.presence_penalty = 0.25f;
    p.penalty_last_n = -1;
    const float l[4] = {2, -1, 0.5f, 3};
    float lcopy[4];
    memcpy(lcopy, l, sizeof l);
    /* 7 and -5 are out of range and ignored. */
    int32_t win[] = {0, 1, 1, 3, 3, 3, 7, -5};
    samp_opts o = {.recent = win, .n_recent = 8};
    /* id0: 2/2 - (1*0.5 + 0.25) = 0.25;  id1: -1*2 - (2*0.5 + 0.25) = -3.25;
     * id2: untouched 0.5;  id3: 3/2 - (3*0.5 + 0.25) = -0.25. */
    const double want[4] = {0.25, -3.25, 0.5, -0.25};
    double z = 0;
    for (int i = 0; i < 4; i++) z += exp(want[i]);
    float pr[4];
    CHECK_EQ_INT(samp_probs(s, l, &p, &o, pr), SAMP_OK);
    for (int i = 0; i < 4; i++) CHECK_NEAR(pr[i], exp(want[i]) / z, 1e-6);
    CHECK(memcmp(l, lcopy, sizeof l) == 0); /* input untouched */
    /* Repeat: counts were reset, the result is the same. */
    CHECK_EQ_INT(samp_probs(s, l, &p, &o, pr), SAMP_OK);
    CHECK_NEAR(pr[2], exp(0.5) / z, 1e-6);
    /* Greedy sees the penalties: argmax moves from 3 to 2. */
    samp_params g = p;
    g.temperature = 0;
    int32_t t;
    CHECK_EQ_INT(samp_sample(s, l, &g, &o, &t), SAMP_OK);
    CHECK_EQ_INT(t, 2);
    /* Window of the last 3 ids: {3, 7, -5} -> only id3 once. */
    p.penalty_last_n = 3;
    CHECK_EQ_INT(samp_probs(s, l, &p, &o, pr), SAMP_OK);
    double w3[4] = {2, -1, 0.5, 3.0 / 2 - 0.75};
    z = 0;
    for (int i = 0; i < 4; i++) z += exp(w3[i]);
    for (int i = 0; i < 4; i++) CHECK_NEAR(pr[i], exp(w3[i]) / z, 1e-6);
    /* penalty_last_n 0: no penalties. */
    p.penalty_last_n = 0;
    CHECK_EQ_INT(samp_probs(s, l, &p, &o, pr), SAMP_OK);
    z = 0;
    for (int i = 0; i < 4; i++) z += exp(l[i]);
    for (int i = 0; i < 4; i++) CHECK_NEAR(pr[i], exp(l[i]) / z, 1e-6);
    /* Repetition penalty alone keeps the sign rule: negative logits multiply. */
    samp_params_default(&p);
    p.min_p = 0, p.repetition_penalty = 1.5f, p.penalty_last_n = -1;
    int32_t w1[] = {1, 2};
    samp_opts o1 = {.recent = w1, .n_recent = 2};
    double w4[4] = {2, -1.5, 0.5 / 1.5, 3};
    CHECK_EQ_INT(samp_probs(s, l, &p, &o1, pr), SAMP_OK);
    z = 0;
    for (int i = 0; i < 4; i++) z += exp(w4[i]);
    for (int i = 0; i < 4; i++) CHECK_NEAR(pr[i], exp(w4[i]) / z, 1e-6);
    /* A window pointer that is NULL with a count is a parameter error. */
    samp_opts bad = {.recent = NULL, .n_recent = 3};
    CHECK_EQ_INT(samp_sample(s, l, &p, &bad, &t), SAMP_ERR_PARAM);
    samp_free(s);
}

static void hook_boost3(void *user, float *logits, int32_t n) {
    (void)n;
    *(int *)user += 1;
    logits[3] = 100;
}

TEST(mask) {
    enum { N = 16 };
    samp *s = samp_new(N, 8, NULL);
    samp_params p;
    samp_params_default(&p);
    float l[N];
    for (int i = 0; i < N; i++) l[i] = (float)(i % 3);
    int32_t allow[] = {5, 9, 99, -1}; /* 99 and -1 ignored */
    samp_opts o = {.allow = allow, .n_allow = 4};
    float pr[N];
    CHECK_EQ_INT(samp_probs(s, l, &p, &o, pr), SAMP_OK);
    /* l[5] = 2, l[9] = 0 */
    CHECK_NEAR(pr[5], 1 / (1 + exp(-2.0)), 1e-6);
    CHECK_NEAR(pr[9], exp(-2.0) / (1 + exp(-2.0)), 1e-6);
    int only = 1;
    for (int i = 0; i < 3000; i++) {
        int32_t t;
        samp_sample(s, l, &p, &o, &t);
        only &= t == 5 || t == 9;
    }
    CHECK(only);
    /* Greedy inside the mask: the best allowed, even though 2, 8, ... are larger. */
    int32_t allow2[] = {0, 9, 3};
    samp_opts o2 = {.allow = allow2, .n_allow = 3};
    samp_params g = p;
    g.temperature = 0;
    int32_t t;
    CHECK_EQ_INT(samp_sample(s, l, &g, &o2, &t), SAMP_OK);
    CHECK_EQ_INT(t, 0); /* l[0] = l[3] = l[9] = 0: lowest id */
    /* Empty allow list allows nothing. */
    samp_opts o3 = {.allow = allow, .n_allow = 0};
    CHECK_EQ_INT(samp_sample(s, l, &p, &o3, &t), SAMP_ERR_EMPTY);
    /* Ban list. */
    int32_t ban[] = {2, 5, 8, 11, 14};
    samp_opts ob = {.ban = ban, .n_ban = 5};
    CHECK_EQ_INT(samp_sample(s, l, &g, &ob, &t), SAMP_OK);
    CHECK_EQ_INT(t, 1);
    CHECK_EQ_INT(samp_probs(s, l, &p, &ob, pr), SAMP_OK);
    CHECK(pr[2] == 0 && pr[5] == 0 && pr[14] == 0 && pr[1] > 0);
    /* Hook runs once per call on the working copy. */
    int calls = 0;
    samp_opts oh = {.hook = hook_boost3, .hook_user = &calls};
    CHECK_EQ_INT(samp_sample(s, l, &p, &oh, &t), SAMP_OK);
    CHECK_EQ_INT(t, 3);
    CHECK_EQ_INT(calls, 1);
    CHECK(l[3] == 0);
    /* In-place helper; a second call must not remember the first set. */
    float m[N];
    memcpy(m, l, sizeof m);
    samp_mask_allow(s, m, allow2, 3);
    memcpy(m, l, sizeof m);
    int32_t a4[] = {4};
    samp_mask_allow(s, m, a4, 1);
    int okm = m[4] == l[4];
    for (int i = 0; i < N; i++)
        if (i != 4) okm &= m[i] == -INFINITY;
    CHECK(okm);
    samp_free(s);
}

/* Per-token cost at the real vocabulary; loose bounds only catch a blow-up
 * (e.g. an accidental full sort or O(n^2)), the numbers go to stdout. */
TEST(speed_129k) {
    int n = 129280;
    float *l = malloc((size_t)n * sizeof *l);
    uint64_t x = 777;
    for (int i = 0; i < n; i++) { /* roughly normal, sd ~2, plus a few peaks */
        double g = 0;
        for (int k = 0; k < 4; k++) {
            x = x * 6364136223846793005ULL + 1442695040888963407ULL;
            g += (double)(x >> 11) * 0x1.0p-53 - 0.5;
        }
        l[i] = (float)(g * 3.5);
    }
    for (int i = 0; i < 8; i++) l[(i * 7919) % n] = 12.0f - (float)i;
    samp *s = samp_new(n, 1, NULL);
    struct {
        const char *name;
        ref_cfg c;
        int reps;
    } cases[] = {
        {"defaults", {1.0, 1.0, 0.05, 0}, 200},
        {"T=1 only (min_p 0)", {1.0, 1.0, 0.0, 0}, 50},
        {"top_p 0.95, min_p 0", {1.0, 0.95, 0.0, 0}, 20},
        {"k=40 p=0.95 min_p=0.05", {0.8, 0.95, 0.05, 40}, 100},
        {"greedy", {0.0, 1.0, 0.05, 0}, 200},
    };
    int32_t *win = malloc(64 * sizeof *win);
    for (int i = 0; i < 64; i++) win[i] = (i * 2003) % n;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        samp_params p = params_of(cases[c].c);
        p.repetition_penalty = 1.1f;
        samp_opts o = {.recent = win, .n_recent = 64};
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        int ok = 1;
        for (int r = 0; r < cases[c].reps; r++) {
            int32_t t;
            ok &= samp_sample(s, l, &p, &o, &t) == SAMP_OK && t >= 0 && t < n;
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double us = ((double)(t1.tv_sec - t0.tv_sec) * 1e6 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e3) / cases[c].reps;
        CHECK(ok);
        CHECKF(us < 100000, "%s: %.0f us per token", cases[c].name, us);
        printf("     %-28s %8.1f us/token\n", cases[c].name, us);
    }
    free(win);
    free(l);
    samp_free(s);
}

int main(void) {
    RUN(defaults);
    RUN(greedy);
    RUN(rng);
    RUN(seed_reproducible);
    RUN(chi_square);
    RUN(top_p_large_exact);
    RUN(truncation_edges);
    RUN(non_finite);
    RUN(penalties);
    RUN(mask);
    RUN(speed_129k);
    TEST_END();
}
