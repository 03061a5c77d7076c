/* Attention kernel micro-benchmark: the live level's V->attn (simd.h) on
 * one query, single-threaded, against the FMA peak measured in the same
 * run.
 *
 *   build/bench/attn [nrows=181] [heads=16] [cold=0]
 *
 * heads: hg, the heads sharing each row (prefill passes 16, decode 8 per
 *   thread on 2 threads); d_h = 256, as V4.
 * cold: 1 evicts the rows before every call (a 64 MiB read sweep, past
 *   L3), as in decode, where the KV rows come from memory; 0 keeps them in
 *   L2, as in prefill.
 * Per call: us, GFLOP/s (2 FLOP per multiply-add: 2·hg·nrows·d_h
 * multiply-adds, scores and weighted sums), and the fraction of the FMA
 * peak of the level's widest FMA (12 independent chains), measured here. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quant/simd.h"

#include "bench_util.h"

/* f32 FMA peak of one core (GFLOP/s): 12 independent chains of the widest
 * FMA the CPU has (16 or 8 lanes), the bound the kernel's FMAs run against. */
#if defined(__x86_64__)
#include <immintrin.h>
#define PEAK_LOOP(VT, SET1, FMA, LANES)                                                    \
    VT acc[12], x = SET1(1.0f), y = SET1(0.999f);                                        \
    for (int i = 0; i < 12; i++) acc[i] = SET1((float)i);                                \
    const long n = 20000000;                                                              \
    double t0 = now();                                                                    \
    for (long i = 0; i < n; i++) {                                                        \
        _Pragma("GCC unroll 12") for (int k = 0; k < 12; k++) acc[k] = FMA(acc[k], y, x);   \
        __asm__ volatile("" : "+v"(y));                                                   \
    }                                                                                     \
    double dt = now() - t0;                                                               \
    float out[LANES];                                                                     \
    for (int k = 1; k < 12; k++) acc[0] = FMA(acc[0], y, acc[k]);                         \
    memcpy(out, &acc[0], sizeof out);                                                     \
    if (out[0] == 12345.0f) printf("!");                                                  \
    return 12.0 * n * (LANES) * 2 / dt / 1e9;
__attribute__((target("avx512f"))) static double peak512(void) {
    PEAK_LOOP(__m512, _mm512_set1_ps, _mm512_fmadd_ps, 16)
}
__attribute__((target("avx2,fma"))) static double peak256(void) {
    PEAK_LOOP(__m256, _mm256_set1_ps, _mm256_fmadd_ps, 8)
}
static double fma_peak(const char *level) {
    __builtin_cpu_init();
    if (strcmp(level, "avx512") == 0) return peak512();
    if (__builtin_cpu_supports("fma")) return peak256();
    return 0;
}
#else
static double fma_peak(const char *level) {
    (void)level;
    return 0;
}
#endif

int main(int argc, char **argv) {
    int nrows = argc > 1 ? atoi(argv[1]) : 181, hg = argc > 2 ? atoi(argv[2]) : 16;
    int cold = argc > 3 ? atoi(argv[3]) : 0;
    const int dh = 256, pool = 1024;
    if (nrows < 1 || nrows > pool || hg < 1 || hg > DS4_ATTN_HG_MAX) {
        fprintf(stderr, "usage: attn [nrows 1..%d] [heads 1..%d] [cold 0|1]\n", pool, DS4_ATTN_HG_MAX);
        return 2;
    }
    const ds4_vec_ops *V = ds4_vec_ops_live();
    float *data = aligned_alloc(64, sizeof(float) * (size_t)dh * pool);
    float *q = aligned_alloc(64, sizeof(float) * (size_t)dh * DS4_ATTN_HG_MAX);
    float *o = aligned_alloc(64, sizeof(float) * (size_t)dh * DS4_ATTN_HG_MAX);
    float *sc = aligned_alloc(64, sizeof(float) * (size_t)ds4_attn_scratch(nrows));
    const float **rows = malloc(sizeof *rows * (size_t)nrows);
    size_t fb = (size_t)64 << 20;
    char *flush = cold ? malloc(fb) : NULL;
    if (!data || !q || !o || !sc || !rows || (cold && !flush)) return 1;
    for (int i = 0; i < dh * pool; i++) data[i] = (float)(next() >> 40) / (float)(1 << 24) - 0.5f;
    for (int i = 0; i < dh * DS4_ATTN_HG_MAX; i++) q[i] = (float)(next() >> 40) / (float)(1 << 24) - 0.5f;
    /* rows scattered over the pool, as the indexer's selection leaves them */
    for (int r = 0; r < nrows; r++) rows[r] = data + (size_t)((r * 37) % pool) * dh;
    if (cold) memset(flush, 1, fb);
    ds4_attn_args a = {.hg = hg, .dh = dh, .nrows = nrows, .rows = rows, .scale = 0.0625f, .scratch = sc,
                       .cold = cold};
    for (int g = 0; g < hg; g++) {
        a.q[g] = q + (size_t)g * dh;
        a.o[g] = o + (size_t)g * dh;
        a.sink[g] = 0.1f;
    }
    int calls = cold ? 100 : 3000;
    volatile long sink = 0;
    double best = 1e30;
    for (int rep = 0; rep < 5; rep++) {
        double tot = 0;
        for (int it = 0; it < calls; it++) {
            if (cold)
                for (size_t i = 0; i < fb; i += 64) sink += flush[i];
            double t0 = now();
            V->attn(V, &a);
            tot += now() - t0;
        }
        if (tot / calls < best) best = tot / calls;
    }
    double peak = fma_peak(ds4_simd_level());
    double gf = 4.0 * hg * nrows * dh / best / 1e9;
    printf("level %s, d_h %d, heads %d, rows %d, %s\n", ds4_simd_level(), dh, hg, nrows, cold ? "cold" : "in L2");
    if (peak > 0)
        printf("attn  %8.2f us/call  %7.1f GFLOP/s  %.2f of the FMA peak (%.0f GFLOP/s, one core)\n", best * 1e6, gf,
               gf / peak, peak);
    else
        printf("attn  %8.2f us/call  %7.1f GFLOP/s\n", best * 1e6, gf);
    printf("check o[0][0] = %g\n", (double)o[0]);
    free(flush);
    free(rows);
    free(sc);
    free(o);
    free(q);
    free(data);
    return 0;
}
