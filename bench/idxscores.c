/* Lightning-indexer micro-benchmark, one thread, rows in L2 (as in the
 * engine at these sizes):
 *
 *   build/bench/idxscores [nrows=2048] [reps=20]
 *
 * scores: ns per row-score (one token against one row, all nI heads) for the
 *   V4 Flash shape (nI = 64, dI = 128) and the `small` synthetic shape
 *   (nI = 16, dI = 64), by
 *     dot16   the old loop: V->dot16 per 16 heads, then the scalar relu·w sum
 *     nt=1    the level's idx_scores, one token per call (decode)
 *     nt=8    8 tokens per call (prefill), ns per token·row
 *   and, at levels with the exact int8 path (idx8.h), the same two columns
 *   through it, its ratio to idx_scores, and the share of (token, group)
 *   pairs it computed in integers.  q and k are FP4-exact, as in the model
 *   numerics (uniform values through the FP4 round trip).
 * topk: ns per visible row of selecting K = 512 of nrows·8 scores, the old
 *   min-heap (random scores, and ascending scores: the heap's worst case)
 *   against ds4_topk.
 * Best of 3 repetitions of `reps` calls each, at every SIMD level. */
#include <math.h> /* before ops.h, which uses expf */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/ops.h"
#include "quant/idx8.h"
#include "quant/simd.h"

#include "bench_util.h"
static float unif(void) { return (float)((double)(next() >> 11) / 9007199254740992.0) * 2.0f - 1.0f; }

static volatile float sink;

/* forward.c's loop before idx_scores */
static void old_scores(const ds4_vec_ops *V, const float *q, const float *w, int nI, int dI, const float *k, int n,
                       float *score) {
    const float *qp[16];
    float dots[256];
    for (int i = 0; i < n; i++) {
        const float *ki = k + (size_t)i * dI;
        int h = 0;
        for (; h + 16 <= nI; h += 16) {
            for (int g = 0; g < 16; g++) qp[g] = q + (size_t)(h + g) * dI;
            V->dot16(V, qp, ki, dI, dots + h);
        }
        for (; h < nI; h++) dots[h] = V->dot(q + (size_t)h * dI, ki, dI);
        float acc = 0;
        for (h = 0; h < nI; h++)
            if (dots[h] > 0) acc += w[h] * dots[h];
        score[i] = acc;
    }
}

/* forward.c's min-heap before ds4_topk (selection only, no ordering) */
static int heap_less(const float *sc, int32_t a, int32_t b) { return sc[a] < sc[b] || (sc[a] == sc[b] && a > b); }
static void heap_sift(int32_t *h, int n, int i, const float *sc) {
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && heap_less(sc, h[l], h[m])) m = l;
        if (r < n && heap_less(sc, h[r], h[m])) m = r;
        if (m == i) return;
        int32_t tmp = h[i]; h[i] = h[m]; h[m] = tmp;
        i = m;
    }
}
static void heap_topk(const float *score, int nvis, int K, int32_t *sel) {
    int n = 0;
    for (int32_t i = 0; i < nvis; i++) {
        if (n < K) {
            sel[n++] = i;
            if (n == K)
                for (int k = K / 2 - 1; k >= 0; k--) heap_sift(sel, K, k, score);
        } else if (heap_less(score, sel[0], i)) {
            sel[0] = i;
            heap_sift(sel, K, 0, score);
        }
    }
}

int main(int argc, char **argv) {
    int nrows = argc > 1 ? atoi(argv[1]) : 2048, reps = argc > 2 ? atoi(argv[2]) : 20;
    if (nrows < 16 || reps < 1) { fprintf(stderr, "usage: idxscores [nrows>=16] [reps]\n"); return 2; }
    static const int shapes[][2] = {{64, 128}, {16, 64}};
    enum { NT = 8 };
    for (const char *const *lv = ds4_simd_levels(); *lv; lv++) {
        ds4_vec_ops V;
        if (!ds4_simd_supported(*lv) || ds4_simd_vec_ops_for(*lv, &V)) continue;
        for (int s = 0; s < 2; s++) {
            int nI = shapes[s][0], dI = shapes[s][1];
            float *q = malloc(sizeof(float) * NT * nI * dI), *w = malloc(sizeof(float) * NT * nI);
            float *k = malloc(sizeof(float) * (size_t)nrows * dI), *out = malloc(sizeof(float) * NT * nrows);
            for (int i = 0; i < NT * nI * dI; i++) q[i] = unif();
            for (int i = 0; i < NT * nI; i++) w[i] = unif();
            for (size_t i = 0; i < (size_t)nrows * dI; i++) k[i] = unif();
            for (int i = 0; i < NT * nI; i++) V.fp4_roundtrip(q + (size_t)i * dI, dI);
            for (int i = 0; i < nrows; i++) V.fp4_roundtrip(k + (size_t)i * dI, dI);
            double best[3] = {1e30, 1e30, 1e30};
            int r = strcmp(*lv, "scalar") ? reps : 1;
            for (int rep = 0; rep < 3; rep++) {
                double t0 = now();
                for (int i = 0; i < r; i++) old_scores(&V, q, w, nI, dI, k, nrows, out);
                double t1 = now();
                for (int i = 0; i < r; i++) V.idx_scores(q, w, 1, nI, dI, k, nrows, out, nrows);
                double t2 = now();
                for (int i = 0; i < r; i++) V.idx_scores(q, w, NT, nI, dI, k, nrows, out, nrows);
                double t3 = now();
                double d[3] = {(t1 - t0) / r / nrows, (t2 - t1) / r / nrows, (t3 - t2) / r / nrows / NT};
                for (int j = 0; j < 3; j++) best[j] = d[j] < best[j] ? d[j] : best[j];
            }
            sink = out[nrows - 1];
            printf("%-7s scores nI=%2d dI=%3d rows=%d: dot16 %7.2f  nt=1 %7.2f  nt=8 %7.2f ns/row-score"
                   "  (x%.2f, x%.2f)\n", *lv, nI, dI, nrows, 1e9 * best[0], 1e9 * best[1], 1e9 * best[2],
                   best[0] / best[1], best[0] / best[2]);
            if (V.idx8) {
                size_t gb = ds4_idx8_group_bytes(dI), qb = ds4_idx8_query_bytes(nI, dI);
                uint8_t *groups = aligned_alloc(64, gb * (size_t)((nrows + 15) / 16));
                uint8_t *qr = aligned_alloc(64, qb * NT);
                for (int i = 0; i < nrows; i++) V.idx8->put_row(groups, i, k + (size_t)i * dI, dI);
                double b8[3] = {1e30, 1e30, 1e30};
                int64_t used = 0;
                for (int rep = 0; rep < 3; rep++) {
                    double t0 = now();
                    for (int i = 0; i < reps; i++)
                        for (int t = 0; t < NT; t++) V.idx8->query(q + (size_t)t * nI * dI, nI, dI, qr + qb * t);
                    double t1 = now();
                    for (int i = 0; i < reps; i++)
                        used = V.idx8->scores(&V, q, qr, qb, w, 1, nI, dI, groups, k, nrows, out, nrows);
                    double t2 = now();
                    for (int i = 0; i < reps; i++)
                        V.idx8->scores(&V, q, qr, qb, w, NT, nI, dI, groups, k, nrows, out, nrows);
                    double t3 = now();
                    double d[3] = {(t1 - t0) / reps / NT, (t2 - t1) / reps / nrows, (t3 - t2) / reps / nrows / NT};
                    for (int j = 0; j < 3; j++) b8[j] = d[j] < b8[j] ? d[j] : b8[j];
                }
                printf("%-7s idx8   nI=%2d dI=%3d rows=%d: query %7.0f ns  nt=1 %7.2f  nt=8 %7.2f ns/row-score"
                       "  (x%.2f, x%.2f of idx_scores; %.0f%% of groups integer)\n", *lv, nI, dI, nrows, 1e9 * b8[0],
                       1e9 * b8[1], 1e9 * b8[2], best[1] / b8[1], best[2] / b8[2],
                       100.0 * (double)used / (double)((nrows + 15) / 16));
                free(groups); free(qr);
            }
            free(q); free(w); free(k); free(out);
        }
    }
    /* top-k over nrows·8 scores (a 1M-context layer sees 2^18) */
    int n = nrows * 8, K = 512;
    float *sc = malloc(sizeof(float) * n);
    int32_t *sel = malloc(sizeof(int32_t) * K);
    uint32_t *scratch = malloc(sizeof(uint32_t) * n);
    for (int mode = 0; mode < 2; mode++) {
        for (int i = 0; i < n; i++) sc[i] = mode ? (float)i : unif();
        double best[2] = {1e30, 1e30};
        for (int rep = 0; rep < 3; rep++) {
            double t0 = now();
            for (int i = 0; i < reps; i++) heap_topk(sc, n, K, sel);
            double t1 = now();
            for (int i = 0; i < reps; i++) ds4_topk(sc, n, K, sel, scratch);
            double t2 = now();
            double d[2] = {(t1 - t0) / reps / n, (t2 - t1) / reps / n};
            for (int j = 0; j < 2; j++) best[j] = d[j] < best[j] ? d[j] : best[j];
        }
        printf("topk K=%d of %d %-9s: heap %6.2f  ds4_topk %6.2f ns/row  (x%.2f)\n", K, n,
               mode ? "ascending" : "random", 1e9 * best[0], 1e9 * best[1], best[0] / best[1]);
    }
    free(sc);
    free(sel);
    free(scratch);
    return 0;
}
