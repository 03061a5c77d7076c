/* Kernel micro-benchmark: ds4_mm per weight type at every SIMD level.
 *
 *   build/bench/kernels [matvec_MiB=256] [ne0=4096] [type,...]
 *
 * matvec: y = W·x (n = 1) over a weight matrix of ~matvec_MiB, far larger
 *   than the caches, so it measures weight bytes streamed per second (the
 *   decode regime); 1 and 2 threads, best of 3.
 * prefill: W (ne0 x 1024 rows) times n = 8, 16, 64 and 256 tokens, 1 thread,
 *   GFLOP/s counted as 2·ne0·rows·n (the compute regime).  ds4_mm picks the
 *   level's panel GEMM where the type has one (quant.h; from n = 4 on), else
 *   the 4x4 vec_dot tiles, so these columns show the panel path.
 * tile: the level's vec_dot_tile alone, 4 rows x nc = 1 (decode) and 4
 *   (prefill without a panel kernel) columns, over a block of rows that
 *   stays in L2 (<= 256 KB), ns per element and column, 1 thread.
 * act: the activation quantizers (f32 -> Q8_0, Q8_K) on one ne0-float row in
 *   cache, ns per 1024 floats, 1 thread.
 * The first line is this machine's read bandwidth (ds4-bench's probe over a
 * buffer of the same size), the ceiling for the matvec column.  Each
 * level's numbers are followed by its ratio to the scalar level. */
#include <math.h> /* before ops.h, which uses expf */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench/bench.h"
#include "engine/ops.h"
#include "engine/pool.h"
#include "quant/quant.h"
#include "quant/simd.h"

#include "bench_util.h"
static float gauss(void) { /* cheap approximately-normal values */
    float s = 0;
    for (int i = 0; i < 4; i++) s += (float)(next() >> 40) / (float)(1 << 24);
    return (s - 2.0f) * 1.7f;
}

/* Fills a weight matrix by replicating 64 encoded random rows. */
static void fill_weights(int type, int64_t ne0, int64_t rows, uint8_t *w) {
    const ds4_type_traits *t = ds4_type_traits_ref(type);
    size_t rb = ds4_row_size(type, ne0);
    float *x = malloc(sizeof(float) * (size_t)ne0);
    int64_t base = rows < 64 ? rows : 64;
    for (int64_t r = 0; r < base; r++) {
        for (int64_t i = 0; i < ne0; i++) x[i] = gauss();
        t->from_float(x, w + (size_t)r * rb, ne0);
    }
    for (int64_t r = base; r < rows; r++) memcpy(w + (size_t)r * rb, w + (size_t)(r % base) * rb, rb);
    free(x);
}

/* Best of 5 passes of 4-row tiles over `rows` rows x nc columns: ns per
 * element and column. */
static double time_tiles(const ds4_type_traits *t, const uint8_t *w, size_t rb, int rows, const uint8_t *xq,
                         size_t xb, int nc, int64_t ne0, float *Y) {
    const int reps = (int)(2e7 / ((double)ne0 * rows * nc)) + 1;
    double best = 1e30;
    for (int k = 0; k < 5; k++) {
        double t0 = now();
        for (int i = 0; i < reps; i++)
            for (int r = 0; r < rows; r += 4) t->vec_dot_tile(ne0, w + (size_t)r * rb, rb, 4, xq, xb, nc, Y + r, rows);
        double dt = (now() - t0) / reps;
        if (dt < best) best = dt;
    }
    return best * 1e9 / ((double)ne0 * rows * nc);
}

static double time_mm(ds4_pool *pool, const ds4_weight *wt, int64_t rows, const float *X, int n, float *Y, int reps) {
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        ds4_mm(pool, wt, 0, 0, rows, X, wt->ne[0], n, Y, rows);
        double dt = now() - t0;
        if (dt < best) best = dt;
    }
    return best;
}

int main(int argc, char **argv) {
    size_t mib = argc > 1 ? (size_t)atol(argv[1]) : 256;
    int64_t ne0 = argc > 2 ? atol(argv[2]) : 4096;
    const char *only = argc > 3 ? argv[3] : NULL; /* comma-separated type names */
    const int types[] = { DS4_TYPE_F32, DS4_TYPE_F16, DS4_TYPE_BF16, DS4_TYPE_Q8_0,
                          DS4_TYPE_Q4_K, DS4_TYPE_Q2_K, DS4_TYPE_IQ2_XXS };
    const int ntypes = (int)(sizeof types / sizeof *types);
    enum { NPF = 4 };
    const int pn[NPF] = { 8, 16, 64, 256 };
    const int64_t prows = 1024;
    enum { MAXLV = 4 };
    double res[MAXLV][8][2 + NPF]; /* [level][type][mv1, mv2, pf8, pf16, pf64, pf256] */
    memset(res, 0, sizeof res);

    size_t bytes = mib << 20;
    size_t pbytes = (size_t)prows * ds4_row_size(DS4_TYPE_F32, ne0); /* the largest prefill matrix */
    uint8_t *w = malloc(bytes > pbytes ? bytes : pbytes);
    float *X = malloc(sizeof(float) * (size_t)(ne0 * pn[NPF - 1]));
    float *Y = malloc(sizeof(float) * (size_t)(bytes / 64 + prows * pn[NPF - 1]));
    if (!w || !X || !Y) { fprintf(stderr, "out of memory\n"); return 1; }
    memset(w, 1, bytes);
    for (int64_t i = 0; i < ne0 * pn[NPF - 1]; i++) X[i] = gauss();
    ds4_pool *p1 = ds4_pool_new(1), *p2 = ds4_pool_new(2);
    /* ds4-bench's probe (bench.c): plain and prefetching reads, the faster */
    printf("read bandwidth (%zu MiB buffer): 1 thread %.1f GB/s, 2 threads %.1f GB/s\n", mib,
           ds4_bench_membw(1, bytes, 3) / 1e9, ds4_bench_membw(2, bytes, 3) / 1e9);
    printf("ne0 = %lld; matvec over ~%zu MiB; prefill %lld rows x n tokens, 1 thread\n\n", (long long)ne0, mib,
           (long long)prows);

    const char *const *lv = ds4_simd_levels();
    int nlv = 0;
    for (; lv[nlv]; nlv++) {}
    for (int ti = 0; ti < ntypes; ti++) {
        int type = types[ti];
        if (only && !strstr(only, ds4_type_name(type))) continue;
        size_t rb = ds4_row_size(type, ne0);
        int64_t rows = (int64_t)(bytes / rb);
        fill_weights(type, ne0, rows > prows ? rows : prows, w);
        ds4_weight wt = { w, type, { ne0, rows, 1 }, "bench" };
        for (int l = 0; l < nlv && l < MAXLV; l++) {
            if (ds4_simd_force(lv[l]) != 0) continue;
            double mvb = (double)rb * (double)rows;
            time_mm(p1, &wt, rows, X, 1, Y, 1); /* warm-up, page faults */
            res[l][ti][0] = mvb / time_mm(p1, &wt, rows, X, 1, Y, 3) / 1e9;
            res[l][ti][1] = mvb / time_mm(p2, &wt, rows, X, 1, Y, 3) / 1e9;
            for (int k = 0; k < NPF; k++) {
                double fl = 2.0 * (double)ne0 * (double)prows * pn[k];
                res[l][ti][2 + k] = fl / time_mm(p1, &wt, prows, X, pn[k], Y, pn[k] < 64 ? 5 : 2) / 1e9;
            }
        }
    }

    printf("%-8s %-7s %9s %9s %9s %9s %9s %10s   %s\n", "type", "level", "mv GB/s", "mv2 GB/s", "pf8 GF/s",
           "pf16 GF/s", "pf64 GF/s", "pf256 GF/s", "x scalar (mv, mv2, pf64, pf256)");
    for (int ti = 0; ti < ntypes; ti++)
        for (int l = 0; l < nlv && l < MAXLV; l++) {
            if (res[l][ti][0] == 0) continue;
            const double *v = res[l][ti], *v0 = res[0][ti];
            printf("%-8s %-7s %9.2f %9.2f %9.2f %9.2f %9.2f %10.2f", ds4_type_name(types[ti]), lv[l], v[0], v[1], v[2],
                   v[3], v[4], v[5]);
            if (l > 0)
                printf("   %5.1fx %5.1fx %5.1fx %5.1fx", v[0] / v0[0], v[1] / v0[1], v[4] / v0[4], v[5] / v0[5]);
            printf("\n");
        }

    /* Tiles alone: rows in L2, one thread. */
    printf("\n%-8s %-7s %11s %11s   (ns per element and column, 4-row tiles, rows in L2)\n", "tile", "level", "nc=1",
           "nc=4");
    for (int ti = 0; ti < ntypes; ti++) {
        int type = types[ti];
        if (only && !strstr(only, ds4_type_name(type))) continue;
        size_t rb = ds4_row_size(type, ne0);
        int rows = (int)((256u << 10) / rb) / 4 * 4;
        rows = rows < 4 ? 4 : rows > 64 ? 64 : rows;
        fill_weights(type, ne0, rows, w);
        for (int l = 0; l < nlv; l++) {
            if (ds4_simd_force(lv[l]) != 0) continue;
            const ds4_type_traits *t = ds4_type_traits_get(type);
            if (!t->vec_dot_tile) continue;
            size_t xb = ds4_row_size(t->vec_dot_type, ne0);
            uint8_t *xq = malloc(xb * 4);
            for (int c = 0; c < 4; c++) ds4_quantize_row_for(type, X + (size_t)c * ne0, xq + c * xb, ne0);
            double a = time_tiles(t, w, rb, rows, xq, xb, 1, ne0, Y), b = time_tiles(t, w, rb, rows, xq, xb, 4, ne0, Y);
            printf("%-8s %-7s %11.4f %11.4f\n", ds4_type_name(type), lv[l], a, b);
            free(xq);
        }
    }

    /* Activation quantizers (ds4_mm runs one per token row before the dots):
     * one ne0-float row, in cache, best of 5 runs of ~4M floats each. */
    printf("\n%-8s %-7s %14s   %s\n", "act", "level", "ns/1024 floats", "x scalar");
    const int qtypes[] = { DS4_TYPE_Q8_0, DS4_TYPE_Q8_K };
    for (int qi = 0; qi < 2; qi++) {
        if (ne0 % (qtypes[qi] == DS4_TYPE_Q8_0 ? 32 : 256) != 0) continue;
        double ns0 = 0;
        for (int l = 0; l < nlv; l++) {
            ds4_type_traits q;
            if (ds4_simd_traits_for(lv[l], qtypes[qi], &q) != 0) continue;
            const int reps = (int)(4194304 / ne0) + 1;
            double best = 1e30;
            for (int r = 0; r < 5; r++) {
                double t0 = now();
                for (int k = 0; k < reps; k++) q.from_float(X, w, ne0);
                double dt = (now() - t0) / reps;
                if (dt < best) best = dt;
            }
            const double ns = best * 1e9 * 1024.0 / (double)ne0;
            if (l == 0) ns0 = ns;
            printf("%-8s %-7s %14.1f", ds4_type_name(qtypes[qi]), lv[l], ns);
            if (l > 0 && ns0 > 0) printf("   %5.1fx", ns0 / ns);
            printf("\n");
        }
    }
    ds4_pool_free(p1);
    ds4_pool_free(p2);
    free(w);
    free(X);
    free(Y);
    return 0;
}
