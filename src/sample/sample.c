/* Sampler implementation; the contract and the order of operations are in
 * sample.h.
 *
 * Plan (why no full sort).  After mask, penalties and the hook, one pass over
 * the working copy finds the max m and turns every finite logit x into
 * d = (x - m) / T <= 0, so a token's unnormalized weight is e = exp(d) and the
 * argmax has e = 1.  Every truncation removes a tail of the order "d
 * descending, id ascending":
 *   min-p  keeps e >= min_p, i.e. d >= ln(min_p): a threshold, no order needed;
 *   top-k  keeps the k best: heap selection, O(n log k), which also sorts them;
 *   top-p  needs the order, and the normalizer Z of the top-k set.
 * So we gather only tokens passing the min-p threshold (with defaults this is
 * a handful), heap-select top-k among them, and sort only what top-p must
 * scan.  When min_p is 0 and the set is huge, top_p_cut histograms the
 * masses to find the bin where the nucleus ends and sorts only that bin.
 * The sort is our heap routine, not qsort: glibc's qsort may malloc, and the
 * per-token path must not allocate. */
#include "sample/sample.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A candidate: scaled logit d (later its weight e) and the token id. */
typedef struct cand {
    float v;
    int32_t id;
} cand;

struct samp {
    int32_t n_vocab;
    uint64_t rng[4];     /* xoshiro256** state */
    float *work;         /* f32[n_vocab] working copy of the logits */
    cand *a;             /* cand[n_vocab] candidate set */
    cand *b;             /* cand[n_vocab] second set for the top-k normalizer */
    int32_t *cnt;        /* i32[n_vocab] penalty counts, all zero between calls */
    int32_t *touched;    /* i32[n_vocab] ids with cnt != 0 during a call */
    uint32_t *stamp;     /* u32[n_vocab] allow-list marks, valid where == gen */
    uint32_t gen;        /* current allow-list generation */
};

enum { SAMP_MAX_VOCAB = 1 << 24, SHRINK_MIN_ELEMS = 256, SHRINK_BINS = 64 };

/* ===================== RNG: splitmix64 + xoshiro256** ===================== */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

static inline uint64_t rotl64(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t samp_rng_next(samp *s) {
    uint64_t *st = s->rng;
    uint64_t r = rotl64(st[1] * 5, 7) * 9;
    uint64_t t = st[1] << 17;
    st[2] ^= st[0];
    st[3] ^= st[1];
    st[1] ^= st[2];
    st[0] ^= st[3];
    st[2] ^= t;
    st[3] = rotl64(st[3], 45);
    return r;
}

double samp_rng_uniform(samp *s) { return (double)(samp_rng_next(s) >> 11) * 0x1.0p-53; }

void samp_seed(samp *s, uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) s->rng[i] = splitmix64(&x);
}

uint64_t samp_seed_auto(uint64_t counter) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t x = (uint64_t)ts.tv_sec * UINT64_C(1000000000) + (uint64_t)ts.tv_nsec;
    x ^= counter * UINT64_C(0xd1b54a32d192ed03);
    /* 63 bits, so the value fits samp_params.seed and can be reported back. */
    return splitmix64(&x) & (uint64_t)INT64_MAX;
}

void samp_seed_params(samp *s, const samp_params *p, uint64_t counter) {
    samp_seed(s, p->seed >= 0 ? (uint64_t)p->seed : samp_seed_auto(counter));
}

void samp_rng_get(const samp *s, samp_rng_state *out) { memcpy(out->s, s->rng, sizeof out->s); }

int samp_rng_set(samp *s, const samp_rng_state *st) {
    if (!(st->s[0] | st->s[1] | st->s[2] | st->s[3])) return SAMP_ERR_PARAM;
    memcpy(s->rng, st->s, sizeof s->rng);
    return SAMP_OK;
}

/* ============================ params, lifetime ============================ */

void samp_params_default(samp_params *p) {
    p->temperature = 1.0f;
    p->top_p = 1.0f;
    p->top_k = 0;
    p->min_p = 0.05f;
    p->repetition_penalty = 1.0f;
    p->presence_penalty = 0.0f;
    p->frequency_penalty = 0.0f;
    p->penalty_last_n = 64;
    p->seed = -1;
}

int samp_params_check(const samp_params *p, ds4_err *err) {
    if (!p) return ds4_err_set(err, "sampler: NULL params"), SAMP_ERR_PARAM;
#define BAD(...) return ds4_err_set(err, "sampler: " __VA_ARGS__), SAMP_ERR_PARAM
    if (!isfinite(p->temperature) || p->temperature < 0)
        BAD("temperature %g out of range, expected finite >= 0", (double)p->temperature);
    if (!(p->top_p >= 0 && p->top_p <= 1)) BAD("top_p %g out of range, expected [0, 1]", (double)p->top_p);
    if (p->top_k < 0) BAD("top_k %d out of range, expected >= 0 (0 = off)", (int)p->top_k);
    if (!(p->min_p >= 0 && p->min_p <= 1)) BAD("min_p %g out of range, expected [0, 1]", (double)p->min_p);
    if (!isfinite(p->repetition_penalty) || p->repetition_penalty <= 0)
        BAD("repetition_penalty %g out of range, expected finite > 0 (1 = off)", (double)p->repetition_penalty);
    if (!isfinite(p->presence_penalty)) BAD("presence_penalty is not finite");
    if (!isfinite(p->frequency_penalty)) BAD("frequency_penalty is not finite");
    if (p->penalty_last_n < -1) BAD("penalty_last_n %d out of range, expected >= -1", (int)p->penalty_last_n);
    if (p->seed < -1) BAD("seed %lld out of range, expected >= 0 or -1 (none)", (long long)p->seed);
#undef BAD
    return SAMP_OK;
}

samp *samp_new(int32_t n_vocab, uint64_t seed, ds4_err *err) {
    if (n_vocab < 1 || n_vocab > SAMP_MAX_VOCAB) {
        ds4_err_set(err, "sampler: vocabulary size %d out of range [1, %d]", (int)n_vocab, SAMP_MAX_VOCAB);
        return NULL;
    }
    size_t n = (size_t)n_vocab;
    samp *s = calloc(1, sizeof *s);
    if (s) {
        s->n_vocab = n_vocab;
        s->work = malloc(n * sizeof *s->work);
        s->a = malloc(n * sizeof *s->a);
        s->b = malloc(n * sizeof *s->b);
        s->cnt = calloc(n, sizeof *s->cnt);
        s->touched = malloc(n * sizeof *s->touched);
        s->stamp = calloc(n, sizeof *s->stamp);
    }
    if (!s || !s->work || !s->a || !s->b || !s->cnt || !s->touched || !s->stamp) {
        samp_free(s);
        ds4_err_set(err, "sampler: out of memory for %d-token scratch buffers", (int)n_vocab);
        return NULL;
    }
    samp_seed(s, seed);
    return s;
}

void samp_free(samp *s) {
    if (!s) return;
    free(s->work);
    free(s->a);
    free(s->b);
    free(s->cnt);
    free(s->touched);
    free(s->stamp);
    free(s);
}

int32_t samp_n_vocab(const samp *s) { return s->n_vocab; }

/* ================================ masks ================================== */

void samp_mask_allow(samp *s, float *logits, const int32_t *allow, size_t n_allow) {
    /* Generation stamps make the mark array reusable without clearing it. */
    if (++s->gen == 0) {
        memset(s->stamp, 0, (size_t)s->n_vocab * sizeof *s->stamp);
        s->gen = 1;
    }
    for (size_t i = 0; i < n_allow; i++)
        if (allow[i] >= 0 && allow[i] < s->n_vocab) s->stamp[allow[i]] = s->gen;
    for (int32_t i = 0; i < s->n_vocab; i++)
        if (s->stamp[i] != s->gen) logits[i] = -INFINITY;
}

int32_t samp_argmax(const float *logits, int32_t n) {
    int32_t best = -1;
    float m = -INFINITY;
    for (int32_t i = 0; i < n; i++)
        if (logits[i] > m) { /* NaN and -inf compare false: skipped */
            m = logits[i];
            best = i;
        }
    return best;
}

/* Penalties over the window, once per distinct id (llama.cpp
 * llama_sampler_penalties_apply).  cnt[] is returned to all-zero. */
static void apply_penalties(samp *s, const samp_params *p, const int32_t *ids, size_t n_ids) {
    size_t start = 0, nt = 0;
    if (p->penalty_last_n >= 0 && (size_t)p->penalty_last_n < n_ids) start = n_ids - (size_t)p->penalty_last_n;
    for (size_t i = start; i < n_ids; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= s->n_vocab) continue;
        if (s->cnt[id]++ == 0) s->touched[nt++] = id;
    }
    for (size_t i = 0; i < nt; i++) {
        int32_t id = s->touched[i];
        float x = s->work[id];
        if (p->repetition_penalty != 1.0f) x = x <= 0 ? x * p->repetition_penalty : x / p->repetition_penalty;
        x -= (float)s->cnt[id] * p->frequency_penalty + p->presence_penalty;
        s->work[id] = x;
        s->cnt[id] = 0;
    }
}

/* ============================ selection, sort ============================= */

/* The strict total order every truncation uses: larger v first, then lower id. */
static inline int better(cand x, cand y) { return x.v > y.v || (x.v == y.v && x.id < y.id); }

/* Heap whose root is the worst element. */
static void sift_down(cand *h, size_t n, size_t i) {
    for (;;) {
        size_t l = 2 * i + 1, c;
        if (l >= n) return;
        c = (l + 1 < n && better(h[l], h[l + 1])) ? l + 1 : l;
        if (!better(h[i], h[c])) return;
        cand t = h[i];
        h[i] = h[c];
        h[c] = t;
        i = c;
    }
}

/* Leaves the k best of a[0..n) in a[0..k), sorted best first.  O(n log k),
 * in place, no allocation; k == n is a heap sort. */
static void top_sorted(cand *a, size_t n, size_t k) {
    if (k == 0) return;
    for (size_t i = k / 2; i-- > 0;) sift_down(a, k, i);
    for (size_t j = k; j < n; j++)
        if (better(a[j], a[0])) {
            a[0] = a[j];
            sift_down(a, k, 0);
        }
    for (size_t end = k - 1; end > 0; end--) {
        cand t = a[0];
        a[0] = a[end];
        a[end] = t;
        sift_down(a, end, 0);
    }
}

/* Top-p over an unordered set a[0..na) of scaled logits d <= 0: rearranges a
 * so the nucleus is a[0..return) and returns its size.
 *
 * Sorting everything is O(n log n) and with min_p 0 the set can be the whole
 * vocabulary.  Instead: histogram the masses into 64 bins by d (1 nat wide at
 * the first level), find the bin where the cumulative mass crosses target;
 * bins before it are wholly in the nucleus, bins after it wholly out.  Refine
 * inside the boundary bin with 64x finer bins, then sort only what is left.
 * A bin index is monotone in d, which is all correctness needs; the kept
 * mass is summed per bin, so the cut equals the sorted scan up to rounding. */
static size_t top_p_cut(cand *a, size_t na, double target) {
    size_t lo = 0;          /* a[0..lo) is in the nucleus */
    double kept = 0;        /* their mass */
    float top = 0, width = 1; /* bin i covers d in (top - (i+1) width, top - i width] */
    for (int level = 0; level < 4 && na - lo > SHRINK_MIN_ELEMS; level++) {
        double mass[SHRINK_BINS] = {0};
        size_t count[SHRINK_BINS] = {0};
        for (size_t i = lo; i < na; i++) {
            float b = (top - a[i].v) / width;
            int bin = b < (float)(SHRINK_BINS - 1) ? (b > 0 ? (int)b : 0) : SHRINK_BINS - 1;
            mass[bin] += expf(a[i].v);
            count[bin]++;
            a[i].id |= bin << 24; /* park the bin in the id's free top bits (n_vocab <= 2^24) */
        }
        int cut = SHRINK_BINS - 1;
        double cum = kept;
        for (int b = 0; b < SHRINK_BINS; b++) {
            if (cum + mass[b] >= target) {
                cut = b;
                break;
            }
            cum += mass[b];
        }
        /* Stable-enough partition: bins < cut to the front, then bin cut. */
        size_t o = lo;
        for (size_t i = lo; i < na; i++)
            if ((a[i].id >> 24) < cut) {
                cand t = a[o];
                a[o++] = a[i];
                a[i] = t;
            }
        size_t mid = o;
        for (size_t i = mid; i < na; i++)
            if ((a[i].id >> 24) == cut) {
                cand t = a[o];
                a[o++] = a[i];
                a[i] = t;
            }
        for (size_t i = lo; i < o; i++) a[i].id &= (1 << 24) - 1;
        kept = cum;
        lo = mid;
        na = o;
        if (cut == SHRINK_BINS - 1) break; /* the open-ended tail bin cannot be refined */
        top -= (float)cut * width;
        width /= SHRINK_BINS;
    }
    top_sorted(a + lo, na - lo, na - lo);
    for (size_t i = lo; i < na; i++) {
        kept += expf(a[i].v);
        if (kept >= target) return i + 1;
    }
    return na;
}

/* ================================ pipeline ================================ */

/* Runs steps 1-8 of sample.h.  On success the final set is s->a[0..*n_out)
 * with unnormalized weights in .v (the argmax has 1), *total their sum, and
 * *greedy tells whether temperature <= 0 chose the argmax. */
static int prepare(samp *s, const float *logits, const samp_params *p, const samp_opts *o,
                   size_t *n_out, double *total, int *greedy) {
    if (!s || !logits || samp_params_check(p, NULL) != SAMP_OK) return SAMP_ERR_PARAM;
    if (o && ((o->n_recent && !o->recent) || (o->n_ban && !o->ban))) return SAMP_ERR_PARAM;
    const int32_t n = s->n_vocab;
    float *w = s->work;

    /* 1-3: mask, penalties, hook on a private copy. */
    memcpy(w, logits, (size_t)n * sizeof *w);
    if (o) {
        if (o->allow) samp_mask_allow(s, w, o->allow, o->n_allow);
        for (size_t i = 0; i < o->n_ban; i++)
            if (o->ban[i] >= 0 && o->ban[i] < n) w[o->ban[i]] = -INFINITY;
        if (o->n_recent && p->penalty_last_n != 0 &&
            (p->repetition_penalty != 1.0f || p->presence_penalty != 0 || p->frequency_penalty != 0))
            apply_penalties(s, p, o->recent, o->n_recent);
        if (o->hook) o->hook(o->hook_user, w, n);
    }

    /* Sanitize (NaN -> -inf, +inf -> FLT_MAX) and find the argmax. */
    float m = -INFINITY;
    int32_t am = -1, n_fin = 0;
    for (int32_t i = 0; i < n; i++) {
        float x = w[i];
        if (isnan(x)) x = -INFINITY;
        else if (x > FLT_MAX) x = FLT_MAX;
        w[i] = x;
        if (x > -INFINITY) {
            n_fin++;
            if (x > m) {
                m = x;
                am = i;
            }
        }
    }
    if (n_fin == 0) return SAMP_ERR_EMPTY;

    /* 4: greedy, or a single survivor. */
    *greedy = p->temperature <= 0;
    if (*greedy || n_fin == 1) {
        s->a[0] = (cand){1.0f, am};
        *n_out = 1;
        *total = 1.0;
        return SAMP_OK;
    }

    /* 5-6: gather the min-p survivors as d = (x - m) / T.  Division, not a
     * multiply by 1/T: for tiny T, 1/T is inf and 0 * inf would be NaN. */
    const float T = p->temperature;
    const size_t K = (p->top_k > 0 && p->top_k < n_fin) ? (size_t)p->top_k : (size_t)n_fin;
    const int use_top_p = p->top_p < 1.0f;
    const int z_full = use_top_p && K == (size_t)n_fin;
    /* Slack below ln(min_p); the exact e >= min_p test is applied below. */
    const float d_min = p->min_p > 0 ? logf(p->min_p) - 1e-3f : -INFINITY;
    cand *a = s->a;
    size_t na = 0;
    double Z = 0;
    for (int32_t i = 0; i < n; i++) {
        if (w[i] == -INFINITY) continue;
        float d = (w[i] - m) / T;
        if (z_full) Z += expf(d);
        if (d >= d_min) a[na++] = (cand){d, i};
    }
    int sorted = 0;
    if (na > K) {
        /* The gathered set is a prefix of the full order, so its best K are the
         * global top-k, and Z over them is the top-k normalizer. */
        top_sorted(a, na, K);
        na = K;
        sorted = 1;
        if (use_top_p)
            for (size_t i = 0; i < na; i++) Z += expf(a[i].v);
    } else if (use_top_p && !z_full) {
        /* min-p already cut inside the top-k set, but top-p normalizes over
         * the whole top-k set: select it from everything. */
        size_t nb = 0;
        for (int32_t i = 0; i < n; i++)
            if (w[i] != -INFINITY) s->b[nb++] = (cand){(w[i] - m) / T, i};
        top_sorted(s->b, nb, K);
        for (size_t i = 0; i < K; i++) Z += expf(s->b[i].v);
    }

    /* 7: top-p over the order; the argmax always stays. */
    if (use_top_p) {
        double target = (double)p->top_p * Z, cum = 0;
        if (!sorted) {
            na = top_p_cut(a, na, target);
        } else {
            for (size_t i = 0; i < na; i++) {
                cum += expf(a[i].v);
                if (cum >= target) {
                    na = i + 1;
                    break;
                }
            }
        }
    }

    /* 8: exact min-p on the weights (e_max is exp(0) = 1), weights into .v. */
    size_t k = 0;
    double tot = 0;
    for (size_t i = 0; i < na; i++) {
        float e = expf(a[i].v);
        if (p->min_p > 0 && e < p->min_p) continue;
        a[k++] = (cand){e, a[i].id};
        tot += e;
    }
    *n_out = k;
    *total = tot;
    return SAMP_OK;
}

int samp_sample(samp *s, const float *logits, const samp_params *p, const samp_opts *o, int32_t *out_tok) {
    size_t n = 0;
    double total = 0;
    int greedy = 0;
    *out_tok = -1;
    int rc = prepare(s, logits, p, o, &n, &total, &greedy);
    if (rc != SAMP_OK) return rc;
    if (greedy) {
        *out_tok = s->a[0].id;
        return SAMP_OK;
    }
    /* 9: inverse CDF over the final set.  Zero-weight entries can never be
     * hit by u < cum; rounding past the end falls back to the last positive. */
    double u = samp_rng_uniform(s) * total, cum = 0;
    int32_t pick = s->a[0].id;
    for (size_t i = 0; i < n; i++) {
        if (s->a[i].v <= 0) continue;
        pick = s->a[i].id;
        cum += s->a[i].v;
        if (u < cum) break;
    }
    *out_tok = pick;
    return SAMP_OK;
}

int samp_probs(samp *s, const float *logits, const samp_params *p, const samp_opts *o, float *probs_out) {
    size_t n = 0;
    double total = 0;
    int greedy = 0;
    int rc = prepare(s, logits, p, o, &n, &total, &greedy);
    if (rc != SAMP_OK) return rc;
    memset(probs_out, 0, (size_t)s->n_vocab * sizeof *probs_out);
    for (size_t i = 0; i < n; i++) probs_out[s->a[i].id] = (float)(s->a[i].v / total);
    return SAMP_OK;
}
