/* Tests for the matmul driver (src/engine/ops.c): how ds4_mm_multi() cuts a
 * job into chunks and per-thread spans must never change a result.
 *
 *   threads        one job of mixed segments (expert slice with a row offset,
 *                  a gate/up pair with a done epilogue, an F32 input read in
 *                  place, strided X/Y) on pools of 1..5 threads and on no
 *                  pool: bit-identical outputs, every epilogue row range
 *                  reported exactly once
 *   many segments  300 small segments (the per-expert prefill shape: heap
 *                  paths for segments, chunks and spans) against one
 *                  ds4_mm() per segment
 *   local          ds4_mm_local() (one thread, caller's scratch) against
 *                  ds4_mm() for the decode, tile and panel paths and the
 *                  float types
 *   gather         segments reading their input rows through xrows (the
 *                  routed tokens of an expert, repeats and any order) equal
 *                  ds4_mm() over a copied-out gather, for every path and
 *                  type; a gathered and a plain segment of the same X do not
 *                  share a conversion
 *   shared gathers several experts' gathers of one input (the prefill MoE:
 *                  every token in k of them), with an in-order segment of
 *                  that input beside them (the gathers copy their rows from
 *                  its conversion) and without, Q8_0 and the Q8_K types mixed
 *                  (IQ2_XXS and Q2_K read the same conversion): each equals
 *                  ds4_mm() over its copied-out rows
 *   mates          a gate/up pair's epilogue gets the mate's rows, kept in
 *                  the task's scratch (mate_local, the mate's Y never
 *                  written) or read from its Y: for the decode, tile and
 *                  panel paths, several types, 1..3 threads, the rows equal
 *                  ds4_mm() of the mate, each reported once
 *   pool thread    ds4_pool_thread(): indices in range, never shared by
 *                  two tasks running at once, 0 outside the pool's workers
 *   pool prefetch  hints of any range between jobs: every task still runs
 *                  once, nothing blocks */
#include "test.h"

#include "engine/ops.h"
#include "engine/pool.h"
#include "quant/quant.h"

#include <stdatomic.h>
#include <stdint.h>
#include <unistd.h>

#include "test_rng.h"

static void fill_gauss(float *v, int64_t n) {
    for (int64_t i = 0; i < n; i++) v[i] = rng_gauss();
}

/* A weight of `type` with ne[] = {ne0, rows, experts}, rows from Gaussians. */
static ds4_weight make_weight(int type, int64_t ne0, int64_t rows, int64_t experts) {
    const ds4_type_traits *t = ds4_type_traits_ref(type);
    size_t rb = ds4_row_size(type, ne0);
    uint8_t *w = malloc(rb * (size_t)(rows * experts));
    float *src = malloc(sizeof(float) * (size_t)ne0);
    for (int64_t r = 0; r < rows * experts; r++) {
        fill_gauss(src, ne0);
        t->from_float(src, w + (size_t)r * rb, ne0);
    }
    free(src);
    return (ds4_weight){ w, type, { ne0, rows, experts }, "test" };
}

/* Epilogue bookkeeping: how many times each row was reported done. */
typedef struct {
    int *hits;
    int64_t nrows;
} done_log;

static void log_done(void *ctx, int64_t r0, int64_t r1, const float *mate, int64_t mate_ld) {
    (void)mate, (void)mate_ld;
    done_log *d = ctx;
    for (int64_t r = r0; r < r1 && r < d->nrows; r++) __atomic_fetch_add(&d->hits[r], 1, __ATOMIC_RELAXED);
}

TEST(threads) {
    rng_seed(11);
    const int n = 5;
    ds4_weight wq = make_weight(DS4_TYPE_Q8_0, 256, 96, 3); /* expert slice, row offset */
    ds4_weight wg = make_weight(DS4_TYPE_Q8_0, 256, 200, 1); /* gate/up pair */
    ds4_weight wu = make_weight(DS4_TYPE_Q8_0, 256, 200, 1);
    ds4_weight wf = make_weight(DS4_TYPE_F32, 100, 37, 1);   /* F32 input used in place */
    ds4_weight wk = make_weight(DS4_TYPE_Q2_K, 512, 64, 1);
    int64_t ldx = 260;
    float *X = malloc(sizeof(float) * (size_t)(ldx * n)), *XF = malloc(sizeof(float) * 100 * n);
    float *XK = malloc(sizeof(float) * 512 * n);
    fill_gauss(X, ldx * n);
    fill_gauss(XF, 100 * n);
    fill_gauss(XK, 512 * n);
    enum { NOUT = 5 };
    const int64_t ldy[NOUT] = { 71, 203, 200, 37, 64 };
    float *ref[NOUT], *out[NOUT];
    for (int i = 0; i < NOUT; i++) {
        ref[i] = calloc((size_t)(ldy[i] * n), sizeof(float));
        out[i] = calloc((size_t)(ldy[i] * n), sizeof(float));
    }
    /* the reference: one ds4_mm() per segment on a 1-thread pool */
    ds4_pool *p1 = ds4_pool_new(1);
    ds4_mm(p1, &wq, 1, 13, 70, X, ldx, n, ref[0], ldy[0]);
    ds4_mm(p1, &wg, 0, 0, 200, X, ldx, n, ref[1], ldy[1]);
    ds4_mm(p1, &wu, 0, 0, 200, X, ldx, n, ref[2], ldy[2]);
    ds4_mm(p1, &wf, 0, 0, 37, XF, 100, n, ref[3], ldy[3]);
    ds4_mm(p1, &wk, 0, 0, 64, XK, 512, n, ref[4], ldy[4]);
    ds4_pool_free(p1);
    int hits[200];
    done_log dl = { hits, 200 };
    for (int threads = 0; threads <= 5; threads++) { /* 0: no pool */
        ds4_pool *pool = threads > 0 ? ds4_pool_new(threads) : NULL;
        memset(hits, 0, sizeof hits);
        for (int i = 0; i < NOUT; i++) memset(out[i], 0, sizeof(float) * (size_t)(ldy[i] * n));
        ds4_mm_seg seg[NOUT];
        seg[0] = ds4_seg(&wq, 1, 13, 70, X, ldx, n, out[0], ldy[0]);
        seg[1] = ds4_seg(&wg, 0, 0, 200, X, ldx, n, out[1], ldy[1]);
        seg[1].pair = 1;
        seg[1].done = log_done;
        seg[1].done_ctx = &dl;
        seg[2] = ds4_seg(&wu, 0, 0, 200, X, ldx, n, out[2], ldy[2]);
        seg[3] = ds4_seg(&wf, 0, 0, 37, XF, 100, n, out[3], ldy[3]);
        seg[4] = ds4_seg(&wk, 0, 0, 64, XK, 512, n, out[4], ldy[4]);
        ds4_mm_multi(pool, seg, NOUT);
        ds4_pool_free(pool);
        int once = 1;
        for (int r = 0; r < 200; r++) once &= hits[r] == 1;
        CHECKF(once, "threads=%d: some epilogue row not reported exactly once", threads);
        for (int i = 0; i < NOUT; i++)
            CHECKF(memcmp(out[i], ref[i], sizeof(float) * (size_t)(ldy[i] * n)) == 0,
                   "threads=%d segment %d differs from ds4_mm", threads, i);
    }
    for (int i = 0; i < NOUT; i++) { free(ref[i]); free(out[i]); }
    free(X); free(XF); free(XK);
    free((void *)wq.data); free((void *)wg.data); free((void *)wu.data); free((void *)wf.data);
    free((void *)wk.data);
}

TEST(many_segments) {
    rng_seed(12);
    enum { E = 300 };
    ds4_weight w = make_weight(DS4_TYPE_Q8_0, 64, 24, E);
    const int n = 6;
    float *X = malloc(sizeof(float) * 64 * n);
    fill_gauss(X, 64 * n);
    float *Y = calloc((size_t)E * 24 * n, sizeof(float)), *R = calloc((size_t)E * 24 * n, sizeof(float));
    ds4_mm_seg *seg = malloc(sizeof *seg * E);
    for (int e = 0; e < E; e++) /* expert e over the first 1 + e % n tokens, output block e */
        seg[e] = ds4_seg(&w, e, 0, 24, X, 64, 1 + e % n, Y + (size_t)e * 24 * n, 24);
    for (int threads = 1; threads <= 3; threads++) {
        ds4_pool *pool = ds4_pool_new(threads);
        memset(Y, 0, sizeof(float) * (size_t)E * 24 * n);
        ds4_mm_multi(pool, seg, E);
        if (threads == 1)
            for (int e = 0; e < E; e++) ds4_mm(pool, &w, e, 0, 24, X, 64, 1 + e % n, R + (size_t)e * 24 * n, 24);
        CHECKF(memcmp(Y, R, sizeof(float) * (size_t)E * 24 * n) == 0, "threads=%d: %d segments differ", threads, E);
        ds4_pool_free(pool);
    }
    free(seg); free(X); free(Y); free(R); free((void *)w.data);
}

TEST(local) {
    const int types[] = { DS4_TYPE_Q8_0, DS4_TYPE_Q2_K, DS4_TYPE_IQ2_XXS, DS4_TYPE_F16, DS4_TYPE_F32 };
    const int ns[] = { 1, 3, 16, 21 }; /* decode, tiles, full and partial panels */
    ds4_pool *pool = ds4_pool_new(2);
    for (size_t ti = 0; ti < sizeof types / sizeof *types; ti++)
        for (size_t ni = 0; ni < sizeof ns / sizeof *ns; ni++) {
            int type = types[ti], n = ns[ni];
            int64_t ne0 = ds4_type_traits_ref(type)->blck == QK_K ? 512 : 128;
            rng_seed(100 + ti * 10 + ni);
            ds4_weight w = make_weight(type, ne0, 40, 1);
            int64_t ldx = ne0 + 8;
            float *X = malloc(sizeof(float) * (size_t)(ldx * n));
            fill_gauss(X, ldx * n);
            float *Y = calloc((size_t)(41 * n), sizeof(float)), *R = calloc((size_t)(41 * n), sizeof(float));
            void *scratch = aligned_alloc(64, (ds4_mm_local_scratch(&w, n) + 63) & ~(size_t)63);
            ds4_mm_local(&w, X, ldx, n, Y, 41, scratch);
            ds4_mm(pool, &w, 0, 0, 40, X, ldx, n, R, 41);
            CHECKF(memcmp(Y, R, sizeof(float) * (size_t)(41 * n)) == 0, "%s n=%d: ds4_mm_local differs from ds4_mm",
                   ds4_type_traits_ref(type)->name, n);
            free(scratch); free(X); free(Y); free(R); free((void *)w.data);
        }
    ds4_pool_free(pool);
}

TEST(gather) {
    const int types[] = { DS4_TYPE_Q8_0, DS4_TYPE_Q2_K, DS4_TYPE_IQ2_XXS, DS4_TYPE_F16, DS4_TYPE_F32 };
    const int ns[] = { 1, 3, 16, 37 };
    ds4_pool *pool = ds4_pool_new(2);
    for (size_t ti = 0; ti < sizeof types / sizeof *types; ti++)
        for (size_t ni = 0; ni < sizeof ns / sizeof *ns; ni++) {
            int type = types[ti], n = ns[ni], ntok = 50;
            int64_t ne0 = ds4_type_traits_ref(type)->blck == QK_K ? 512 : 128;
            rng_seed(300 + ti * 10 + ni);
            ds4_weight w = make_weight(type, ne0, 40, 2);
            float *X = malloc(sizeof(float) * (size_t)(ne0 * ntok)), *G = malloc(sizeof(float) * (size_t)(ne0 * n));
            fill_gauss(X, ne0 * ntok);
            int32_t rows[64];
            for (int t = 0; t < n; t++) rows[t] = (int32_t)((t * 7 + 3 * ni) % ntok); /* out of order */
            if (n > 2) rows[2] = rows[0];                                              /* and a repeat */
            for (int t = 0; t < n; t++) memcpy(G + (size_t)t * ne0, X + (size_t)rows[t] * ne0, sizeof(float) * ne0);
            float *Y = calloc((size_t)(80 * n), sizeof(float)), *R = calloc((size_t)(80 * n), sizeof(float));
            float *P = calloc((size_t)(40 * n), sizeof(float)), *Q = calloc((size_t)(40 * n), sizeof(float));
            /* expert 1 gathered, expert 0 over the first n rows in order */
            ds4_mm_seg seg[2] = { ds4_seg(&w, 1, 0, 40, X, ne0, n, Y, 80), ds4_seg(&w, 0, 0, 40, X, ne0, n, P, 40) };
            seg[0].xrows = rows;
            ds4_mm_multi(pool, seg, 2);
            ds4_mm(pool, &w, 1, 0, 40, G, ne0, n, R, 80);
            ds4_mm(pool, &w, 0, 0, 40, X, ne0, n, Q, 40);
            CHECKF(memcmp(Y, R, sizeof(float) * (size_t)(80 * n)) == 0, "%s n=%d: gathered rows differ",
                   ds4_type_traits_ref(type)->name, n);
            CHECKF(memcmp(P, Q, sizeof(float) * (size_t)(40 * n)) == 0, "%s n=%d: the plain segment beside it differs",
                   ds4_type_traits_ref(type)->name, n);
            free(X); free(G); free(Y); free(R); free(P); free(Q); free((void *)w.data);
        }
    ds4_pool_free(pool);
}

/* E experts, each token routed to k of them (the copy-from-one-conversion
 * path of ds4_mm_multi: more gathered rows than tokens). */
static void gather_shared_case(ds4_pool *pool, const int *types, int with_plain, int n) {
    enum { E = 5, K = 3, R = 32 };
    int64_t ne0 = 512;
    ds4_weight w[E];
    for (int e = 0; e < E; e++) w[e] = make_weight(types[e % 2], ne0, R, 1);
    float *X = malloc(sizeof(float) * (size_t)(ne0 * n));
    fill_gauss(X, ne0 * n);
    int32_t *rows = malloc(sizeof(int32_t) * (size_t)(E * n));
    int cnt[E] = {0};
    for (int t = 0; t < n; t++)
        for (int i = 0; i < K; i++) {
            int e = (t * 2 + i * 3 + t / 3) % E; /* K distinct experts per token */
            rows[e * n + cnt[e]++] = t;
        }
    float *Y = calloc((size_t)(E + 1) * R * n, sizeof(float)), *Ref = calloc((size_t)R * n, sizeof(float));
    float *G = malloc(sizeof(float) * (size_t)(ne0 * n));
    ds4_mm_seg seg[E + 1];
    int ns = 0;
    if (with_plain) seg[ns++] = ds4_seg(&w[0], 0, 0, R, X, ne0, n, Y + (size_t)E * R * n, R);
    for (int e = 0; e < E; e++) {
        seg[ns] = ds4_seg(&w[e], 0, 0, R, X, ne0, cnt[e], Y + (size_t)e * R * n, R);
        seg[ns++].xrows = rows + e * n;
    }
    ds4_mm_multi(pool, seg, ns);
    for (int e = 0; e < E; e++) {
        for (int c = 0; c < cnt[e]; c++)
            memcpy(G + (size_t)c * ne0, X + (size_t)rows[e * n + c] * ne0, sizeof(float) * ne0);
        ds4_mm(pool, &w[e], 0, 0, R, G, ne0, cnt[e], Ref, R);
        CHECKF(memcmp(Y + (size_t)e * R * n, Ref, sizeof(float) * (size_t)(R * cnt[e])) == 0,
               "%s/%s plain=%d n=%d: expert %d's gathered rows differ", ds4_type_traits_ref(types[0])->name,
               ds4_type_traits_ref(types[1])->name, with_plain, n, e);
    }
    if (with_plain) {
        ds4_mm(pool, &w[0], 0, 0, R, X, ne0, n, Ref, R);
        CHECKF(memcmp(Y + (size_t)E * R * n, Ref, sizeof(float) * (size_t)(R * n)) == 0,
               "plain=1 n=%d: the in-order segment differs", n);
    }
    for (int e = 0; e < E; e++) free((void *)w[e].data);
    free(X); free(rows); free(Y); free(Ref); free(G);
}

TEST(gather_shared) {
    static const int q8[2] = { DS4_TYPE_Q8_0, DS4_TYPE_Q8_0 }, k[2] = { DS4_TYPE_IQ2_XXS, DS4_TYPE_Q2_K };
    const int ns[] = { 2, 9, 40 }; /* tile path, panels (>= 4 tokens an expert) */
    ds4_pool *pool = ds4_pool_new(2);
    for (int plain = 0; plain < 2; plain++)
        for (size_t i = 0; i < sizeof ns / sizeof *ns; i++) {
            rng_seed(900 + 10 * plain + (uint64_t)i);
            gather_shared_case(pool, q8, plain, ns[i]);
            gather_shared_case(pool, k, plain, ns[i]);
        }
    ds4_pool_free(pool);
}

typedef struct {
    float *m;        /* [n][nrows]: the mate rows done was handed */
    int64_t nrows;
    int n;
    int *hits;
} mate_log;

static void copy_mate(void *ctx, int64_t r0, int64_t r1, const float *mate, int64_t ld) {
    mate_log *c = ctx;
    for (int t = 0; t < c->n; t++)
        memcpy(c->m + (size_t)t * c->nrows + r0, mate + (size_t)t * ld, sizeof(float) * (size_t)(r1 - r0));
    for (int64_t r = r0; r < r1; r++) __atomic_fetch_add(&c->hits[r], 1, __ATOMIC_RELAXED);
}

TEST(mates) {
    const int types[] = { DS4_TYPE_Q8_0, DS4_TYPE_Q2_K, DS4_TYPE_IQ2_XXS, DS4_TYPE_F16 };
    const int ns[] = { 1, 3, 16, 37, 300 }; /* decode, tiles, panels; 300: pool scratch, many pieces */
    enum { ROWS = 136 };                     /* not a multiple of 16 */
    for (size_t ti = 0; ti < sizeof types / sizeof *types; ti++)
        for (size_t ni = 0; ni < sizeof ns / sizeof *ns; ni++)
            for (int threads = 1; threads <= 3; threads++)
                for (int local = 0; local < 2; local++) {
                    int type = types[ti], n = ns[ni];
                    int64_t ne0 = ds4_type_traits_ref(type)->blck == QK_K ? 512 : 256;
                    rng_seed(1200 + ti * 100 + ni * 10 + (uint64_t)threads);
                    ds4_weight wg = make_weight(type, ne0, ROWS, 2), wu = make_weight(type, ne0, ROWS, 2);
                    float *X = malloc(sizeof(float) * (size_t)(ne0 * n));
                    fill_gauss(X, ne0 * n);
                    float *G = calloc((size_t)(ROWS * n), sizeof(float)), *U = calloc((size_t)(ROWS * n), sizeof(float));
                    float *M = calloc((size_t)(ROWS * n), sizeof(float)), *RG = calloc((size_t)(ROWS * n), sizeof(float));
                    float *RU = calloc((size_t)(ROWS * n), sizeof(float));
                    int hits[ROWS] = {0};
                    mate_log ml = { M, ROWS, n, hits };
                    ds4_pool *pool = ds4_pool_new(threads);
                    ds4_mm_seg seg[2] = { ds4_seg(&wg, 1, 0, ROWS, X, ne0, n, G, ROWS),
                                          ds4_seg(&wu, 1, 0, ROWS, X, ne0, n, local ? NULL : U, ROWS) };
                    seg[0].pair = 1;
                    seg[0].mate_local = local;
                    seg[0].done = copy_mate;
                    seg[0].done_ctx = &ml;
                    ds4_mm_multi(pool, seg, 2);
                    ds4_mm(pool, &wg, 1, 0, ROWS, X, ne0, n, RG, ROWS);
                    ds4_mm(pool, &wu, 1, 0, ROWS, X, ne0, n, RU, ROWS);
                    ds4_pool_free(pool);
                    int once = 1;
                    for (int r = 0; r < ROWS; r++) once &= hits[r] == 1;
                    const char *tn = ds4_type_traits_ref(type)->name;
                    CHECKF(once, "%s n=%d threads=%d local=%d: a row not reported exactly once", tn, n, threads, local);
                    CHECKF(memcmp(G, RG, sizeof(float) * (size_t)(ROWS * n)) == 0,
                           "%s n=%d threads=%d local=%d: the leading segment differs", tn, n, threads, local);
                    CHECKF(memcmp(M, RU, sizeof(float) * (size_t)(ROWS * n)) == 0,
                           "%s n=%d threads=%d local=%d: the mate rows handed to done differ", tn, n, threads, local);
                    if (!local)
                        CHECKF(memcmp(U, RU, sizeof(float) * (size_t)(ROWS * n)) == 0,
                               "%s n=%d threads=%d: the mate's Y differs", tn, n, threads);
                    free(X); free(G); free(U); free(M); free(RG); free(RU);
                    free((void *)wg.data); free((void *)wu.data);
                }
}

typedef struct {
    ds4_pool *p, *other;
    _Atomic int busy[8];
    _Atomic int bad, seen_mask;
} pt_ctx;

static void pt_task(void *c, int64_t i) {
    pt_ctx *x = c;
    int k = ds4_pool_thread(x->p);
    if (k < 0 || k >= ds4_pool_size(x->p) || ds4_pool_thread(x->other) != 0) { x->bad++; return; }
    if (atomic_exchange(&x->busy[k], 1)) x->bad++; /* another running task holds this index */
    volatile double sink = 0;
    for (int j = 0; j < 2000 + (int)(i % 7) * 500; j++) sink += j;
    atomic_store(&x->busy[k], 0);
    atomic_fetch_or(&x->seen_mask, 1 << k);
}

TEST(pool_thread) {
    pt_ctx x = {.p = ds4_pool_new(3), .other = ds4_pool_new(2)};
    CHECK_EQ_INT(ds4_pool_thread(x.p), 0);
    CHECK_EQ_INT(ds4_pool_thread(NULL), 0);
    for (int r = 0; r < 50; r++) ds4_pool_run(x.p, 64, pt_task, &x);
    CHECK_EQ_INT(atomic_load(&x.bad), 0);
    CHECK(atomic_load(&x.seen_mask) & 1); /* the caller took part as 0 */
    ds4_pool_free(x.p);
    ds4_pool_free(x.other);
}

/* The hand-over between jobs when threads sleep: gaps between jobs longer
 * than the spin budget put the workers to sleep, and the job after a gap
 * must wake them (its task 0, which the caller claims first, takes 5 ms:
 * a woken worker runs the others); tasks longer than the budget put the
 * caller to sleep on the last task, and the finisher must wake it (or
 * ds4_pool_run never returns).  Every task of every job runs once. */
typedef struct {
    ds4_pool *p;
    atomic_long runs, on_worker;
    int slow;  /* 0: none, 1: task 0 sleeps (after a gap), 2: task 1 sleeps */
} wake_ctx;

static void wake_task(void *ctx, int64_t i) {
    wake_ctx *w = ctx;
    if ((w->slow == 1 && i == 0) || (w->slow == 2 && i == 1)) usleep(w->slow == 1 ? 5000 : 2000);
    if (w->slow == 1 && ds4_pool_thread(w->p) != 0) atomic_fetch_add(&w->on_worker, 1);
    atomic_fetch_add(&w->runs, 1);
}

TEST(pool_wakeups) {
    for (int threads = 2; threads <= 3; threads++) {
        wake_ctx w = {.p = ds4_pool_new(threads)};
        long want = 0;
        int ok = 1;
        for (int j = 0; j < 400 && ok; j++) {
            int n = 1 + j % 5;
            w.slow = j % 40 == 21 ? 1 : j % 40 == 7 ? 2 : 0;
            ds4_pool_run(w.p, n, wake_task, &w);
            want += n;
            ok = atomic_load(&w.runs) == want; /* all done when run returns */
            if (j % 40 == 20) usleep(3000); /* the workers fall asleep */
        }
        CHECKF(ok, "threads=%d: %ld task runs, want %ld", threads, (long)atomic_load(&w.runs), want);
        CHECKF(atomic_load(&w.on_worker) > 0, "threads=%d: no worker woke for a job after a gap", threads);
        ds4_pool_free(w.p);
    }
}

/* Prefetch hints between and during jobs (ds4_pool_prefetch): a hint never
 * blocks the caller or costs a task, whatever the range: empty, NULL, a
 * buffer, a length far past the buffer's end (prefetches do not fault;
 * the share is capped), posted while the workers spin or sleep. */
TEST(pool_prefetch) {
    static char buf[1 << 16];
    for (int threads = 1; threads <= 5; threads++) {
        wake_ctx w = {.p = ds4_pool_new(threads)};
        long want = 0;
        int ok = 1;
        for (int j = 0; j < 300 && ok; j++) {
            switch (j % 5) {
            case 0: ds4_pool_prefetch(w.p, buf, sizeof buf); break;
            case 1: ds4_pool_prefetch(w.p, NULL, 4096); break;
            case 2: ds4_pool_prefetch(w.p, buf, 0); break;
            case 3: ds4_pool_prefetch(w.p, buf + 100, (size_t)1 << 30); break;
            default: ds4_pool_prefetch(w.p, buf + 1, 3); break;
            }
            int n = 1 + j % 4;
            ds4_pool_run(w.p, n, wake_task, &w);
            want += n;
            ok = atomic_load(&w.runs) == want;
            if (j % 100 == 50) usleep(3000); /* the workers fall asleep: hints are ignored */
        }
        ds4_pool_prefetch(NULL, buf, sizeof buf); /* no pool: nothing */
        CHECKF(ok, "threads=%d: %ld task runs, want %ld", threads, (long)atomic_load(&w.runs), want);
        ds4_pool_free(w.p);
    }
}

int main(void) {
    RUN(threads);
    RUN(many_segments);
    RUN(local);
    RUN(gather);
    RUN(gather_shared);
    RUN(mates);
    RUN(pool_thread);
    RUN(pool_wakeups);
    RUN(pool_prefetch);
    TEST_END();
}
