/* Panel GEMM micro-benchmark: the live level's vec_dot_tile path against
 * pack + panel_gemm, single-threaded, per weight type; F16 (no panel
 * kernel) runs the tile path alone.
 *
 *   build/bench/gemm [rows=1024] [n=4096] [reps=7] [ntok...=16 64 256]
 *
 * tile:  the loop ops.c's mm_rows runs over all rows as one piece (token
 *        chunks of ~512 KB of activations, row blocks of ~256 KB of
 *        weights, per block tokens DS4_TILE at a time, rows DS4_TILE at a
 *        time);
 * panel: pack(all tokens) + panel_gemm(all rows, all tokens); "pack" is the
 *        pack share of that time.
 * GF/s = 2·rows·n·ntok / seconds, best of reps.  Results of both paths are
 * compared bit for bit (the panel contract), "MISMATCH" if they differ. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "quant/quant.h"
#include "quant/simd.h"

#include "bench_util.h"
static float gauss(void) {
    float s = 0;
    for (int i = 0; i < 4; i++) s += (float)(next() >> 40) / (float)(1 << 24);
    return (s - 2.0f) * 1.7f;
}

/* Random weight bytes with finite, modest fp16 scales (values do not change
 * the kernels' speed; quantizing real rows with the IQ2 search is slow). */
static void random_weights(int type, int64_t n, int rows, uint8_t *w) {
    const ds4_type_traits *t = ds4_type_traits_ref(type);
    size_t rb = ds4_row_size(type, n);
    if (!t->quantized) { /* float types: gaussian values */
        float *v = malloc((size_t)n * sizeof *v);
        for (int r = 0; r < rows; r++) {
            for (int64_t i = 0; i < n; i++) v[i] = 0.1f * gauss();
            t->from_float(v, w + (size_t)r * rb, n);
        }
        free(v);
        return;
    }
    for (size_t i = 0; i < rb * (size_t)rows; i++) w[i] = (uint8_t)next();
    int64_t nb = n / t->blck * rows;
    for (int64_t b = 0; b < nb; b++) {
        uint8_t *blk = w + (size_t)b * t->size;
        ds4_fp16 d = ds4_f32_to_fp16(0.01f + (float)(next() % 1000) * 1e-5f), dm = ds4_f32_to_fp16(0.005f);
        switch (type) {
        case DS4_TYPE_Q8_0: memcpy(&((block_q8_0 *)blk)->d, &d, 2); break;
        case DS4_TYPE_Q4_K: memcpy(&((block_q4_K *)blk)->d, &d, 2); memcpy(&((block_q4_K *)blk)->dmin, &dm, 2); break;
        case DS4_TYPE_Q2_K: memcpy(&((block_q2_K *)blk)->d, &d, 2); memcpy(&((block_q2_K *)blk)->dmin, &dm, 2); break;
        case DS4_TYPE_IQ2_XXS: memcpy(&((block_iq2_xxs *)blk)->d, &d, 2); break;
        }
    }
}

static void run_tile(const ds4_type_traits *t, int64_t n, const uint8_t *w, size_t rb, int rows, const uint8_t *xq,
                     size_t xb, int ntok, float *y) {
    int chunk = (int)((512u << 10) / xb) / DS4_TILE * DS4_TILE;
    if (chunk < DS4_TILE) chunk = DS4_TILE;
    int rblk = (int)((256u << 10) / rb) / DS4_TILE * DS4_TILE; /* ops.c's MM_TILE_WBLOCK */
    if (rblk < DS4_TILE) rblk = DS4_TILE;
    for (int t0 = 0; t0 < ntok; t0 += chunk) {
        int t1 = t0 + chunk < ntok ? t0 + chunk : ntok;
        for (int b0 = 0; b0 < rows; b0 += rblk) {
            int b1 = b0 + rblk < rows ? b0 + rblk : rows;
            for (int c = t0; c < t1; c += DS4_TILE) {
                int nc = t1 - c < DS4_TILE ? t1 - c : DS4_TILE;
                for (int r = b0; r < b1; r += DS4_TILE) {
                    int nr = b1 - r < DS4_TILE ? b1 - r : DS4_TILE;
                    t->vec_dot_tile(n, w + (size_t)r * rb, rb, nr, xq + (size_t)c * xb, xb, nc,
                                    y + (int64_t)c * rows + r, rows);
                }
            }
        }
    }
}

int main(int argc, char **argv) {
    int rows = argc > 1 ? atoi(argv[1]) : 1024;
    int64_t n = argc > 2 ? atoll(argv[2]) : 4096;
    int reps = argc > 3 ? atoi(argv[3]) : 7;
    int ntoks[16] = { 16, 64, 256 }, nnt = 3;
    if (argc > 4) {
        nnt = 0;
        for (int i = 4; i < argc && nnt < 16; i++) ntoks[nnt++] = atoi(argv[i]);
    }
    if (rows < 1 || n < 256 || n % 256 || reps < 1) {
        fprintf(stderr, "usage: gemm [rows] [n (multiple of 256)] [reps] [ntok...]\n");
        return 2;
    }
    int maxt = 0;
    for (int i = 0; i < nnt; i++) maxt = ntoks[i] > maxt ? ntoks[i] : maxt;
    printf("level %s, rows %d, n %lld, 1 thread, best of %d\n", ds4_simd_level(), rows, (long long)n, reps);
    printf("%-8s %5s %10s %10s %8s %7s\n", "type", "ntok", "tile GF/s", "panel GF/s", "ratio", "pack%");
    const int types[] = { DS4_TYPE_Q8_0, DS4_TYPE_Q4_K, DS4_TYPE_Q2_K, DS4_TYPE_IQ2_XXS, DS4_TYPE_F16 };
    float *xf = malloc((size_t)n * sizeof *xf);
    for (size_t ti = 0; ti < sizeof types / sizeof *types; ti++) {
        const ds4_type_traits *t = ds4_type_traits_get(types[ti]);
        if (!t->panel_gemm && !t->quantized && t->vec_dot_tile) { /* tiles only */
            size_t rb = ds4_row_size(types[ti], n), xb = ds4_row_size(t->vec_dot_type, n);
            uint8_t *w = malloc(rb * (size_t)rows), *xq = malloc(xb * (size_t)maxt);
            float *y0 = malloc(sizeof(float) * (size_t)rows * (size_t)maxt);
            random_weights(types[ti], n, rows, w);
            for (int i = 0; i < maxt; i++) {
                for (int64_t j = 0; j < n; j++) xf[j] = gauss();
                ds4_type_traits_get(t->vec_dot_type)->from_float(xf, xq + (size_t)i * xb, n);
            }
            for (int k = 0; k < nnt; k++) {
                double best = 1e30;
                for (int r = 0; r < reps; r++) {
                    double t0 = now();
                    run_tile(t, n, w, rb, rows, xq, xb, ntoks[k], y0);
                    double d = now() - t0;
                    if (d < best) best = d;
                }
                printf("%-8s %5d %10.1f %10s\n", t->name, ntoks[k], 2.0 * rows * (double)n * ntoks[k] / best / 1e9, "-");
                fflush(stdout);
            }
            free(w);
            free(xq);
            free(y0);
            continue;
        }
        if (!t->panel_gemm) {
            printf("%-8s  (no panel kernel at this level)\n", t->name);
            continue;
        }
        size_t rb = ds4_row_size(types[ti], n), xb = ds4_row_size(t->vec_dot_type, n);
        uint8_t *w = malloc(rb * (size_t)rows), *xq = malloc(xb * (size_t)maxt);
        random_weights(types[ti], n, rows, w);
        for (int i = 0; i < maxt; i++) {
            for (int64_t j = 0; j < n; j++) xf[j] = gauss();
            ds4_type_traits_get(t->vec_dot_type)->from_float(xf, xq + (size_t)i * xb, n);
        }
        size_t pb = t->panel_bytes(n);
        /* 64-byte aligned, as ops.c allocates them (a panel row is one line) */
        size_t pbytes = pb * (size_t)((maxt + t->panel_tokens - 1) / t->panel_tokens);
        uint8_t *panels = aligned_alloc(64, (pbytes + 63) & ~(size_t)63);
        float *y0 = malloc(sizeof(float) * (size_t)rows * (size_t)maxt), *y1 = malloc(sizeof(float) * (size_t)rows * (size_t)maxt);
        for (int k = 0; k < nnt; k++) {
            int ntok = ntoks[k];
            double best_tile = 1e30, best_panel = 1e30, best_pack = 1e30;
            for (int r = 0; r < reps; r++) {
                double t0 = now();
                run_tile(t, n, w, rb, rows, xq, xb, ntok, y0);
                double t1 = now();
                t->panel_pack(n, xq, xb, ntok, panels);
                double t2 = now();
                t->panel_gemm(n, w, rb, rows, panels, ntok, y1, rows);
                double t3 = now();
                if (t1 - t0 < best_tile) best_tile = t1 - t0;
                if (t3 - t1 < best_panel) best_panel = t3 - t1;
                if (t2 - t1 < best_pack) best_pack = t2 - t1;
            }
            int same = memcmp(y0, y1, sizeof(float) * (size_t)rows * (size_t)ntok) == 0;
            double flop = 2.0 * rows * (double)n * ntok;
            printf("%-8s %5d %10.1f %10.1f %7.2fx %6.1f%%%s\n", t->name, ntok, flop / best_tile / 1e9,
                   flop / best_panel / 1e9, best_tile / best_panel, 100.0 * best_pack / best_panel,
                   same ? "" : "  MISMATCH");
            fflush(stdout);
        }
        free(w);
        free(xq);
        free(panels);
        free(y0);
        free(y1);
    }
    free(xf);
    return 0;
}
