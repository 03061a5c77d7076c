/* MoE job micro-benchmark: the routed gate/up job as forward.c's moe()
 * hands it to ds4_mm_multi (the shared expert's Q8_0 gate/up pair, then
 * each selected expert's pair, gate carrying up), timed alone on the pool.
 *
 *   build/bench/moe [type=iq2_xxs] [layers=10] [threads=2] [ntok=512]
 *
 * Shape: the `small` preset's (embd 1024, expert_ff 512, 64 experts, top 6);
 * type: the routed experts' weight type (the q2 recipe's iq2_xxs, q8_0's
 * q8_0).  Weights are random bytes with modest fp16 scales (values do not
 * change the kernels' speed), one set per layer.
 *
 * decode (one token): us per layer and GB/s of weights streamed,
 *   warm  the same 6 experts of each layer every token: all layers' job
 *         weights (~27 MB at iq2_xxs) stay in this machine's L3;
 *   cold  other experts every token, ~170 MB cycled, so they come from DRAM
 *         as in a real decode;
 *   1 thread, warm: the kernels' own rate.
 *   warm vs cold shows whether the job is bound by the kernels or memory.
 * prefill (ntok tokens, top-6 of 64 at random): us per layer and GMAC/s,
 *   routed  each expert's tokens gathered through an index list (xrows), as
 *           the engine does;
 *   inorder the same jobs reading x in order (no gather);
 *   padding lanes computed over tokens routed: panels hold 16 tokens, so
 *           each expert's last panel is partly empty. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/ops.h"
#include "engine/pool.h"
#include "quant/quant.h"

#include "bench_util.h"

enum { D = 1024, FF = 512, E = 64, K = 6, PANEL = 16 };

static void random_weights(uint8_t *w, size_t n, int type) {
    const ds4_type_traits *t = ds4_type_traits_ref(type);
    for (size_t i = 0; i < n; i++) w[i] = (uint8_t)(next() >> 56);
    for (size_t o = 0; o + t->size <= n; o += t->size) { /* d: the block's first fp16 */
        ds4_fp16 d = ds4_f32_to_fp16(0.01f + (float)(next() % 1000) * 1e-5f);
        memcpy(w + o, &d, sizeof d);
    }
}

typedef struct {
    ds4_weight gate, up, gsh, ush;
} layer_w;

/* One gate/up job over n tokens of x: the shared pair, then the pairs of
 * the experts with tokens (first[e] .. first[e + 1] of etok). */
static int job(const layer_w *L, const float *x, int n, const int *first, const int32_t *etok, bool gather, float *g,
               float *u, ds4_mm_seg *seg) {
    int ns = 0;
    seg[ns] = ds4_seg(&L->gsh, 0, 0, FF, x, D, n, g + (size_t)n * K * FF, FF);
    seg[ns++].pair = 1;
    seg[ns++] = ds4_seg(&L->ush, 0, 0, FF, x, D, n, u + (size_t)n * K * FF, FF);
    for (int e = 0; e < E; e++) {
        int c0 = first[e], cnt = first[e + 1] - c0;
        if (!cnt) continue;
        seg[ns] = ds4_seg(&L->gate, e, 0, FF, x, D, cnt, g + (size_t)c0 * FF, FF);
        seg[ns].xrows = gather ? etok + c0 : NULL;
        seg[ns++].pair = 1;
        seg[ns] = ds4_seg(&L->up, e, 0, FF, x, D, cnt, u + (size_t)c0 * FF, FF);
        seg[ns++].xrows = gather ? etok + c0 : NULL;
    }
    return ns;
}

/* Routes n tokens to K distinct random experts; groups them by expert. */
static void route(int n, int *first, int32_t *etok) {
    int *eid = malloc(sizeof *eid * (size_t)n * K), fill[E];
    for (int t = 0; t < n; t++)
        for (int i = 0; i < K; i++) {
            int e, dup;
            do {
                e = (int)(next() % E);
                dup = 0;
                for (int j = 0; j < i; j++) dup |= eid[t * K + j] == e;
            } while (dup);
            eid[t * K + i] = e;
        }
    memset(first, 0, sizeof *first * (E + 1));
    for (int i = 0; i < n * K; i++) first[eid[i] + 1]++;
    for (int e = 0; e < E; e++) first[e + 1] += first[e];
    memcpy(fill, first, sizeof fill);
    for (int i = 0; i < n * K; i++) etok[fill[eid[i]]++] = i / K;
    free(eid);
}

/* Mean seconds per job over reps passes of every layer (the first pass
 * warms up and is not counted).  Each layer keeps one routing, unless
 * `cold`: then every job routes anew (other experts each token). */
static double time_jobs(ds4_pool *pool, const layer_w *lw, int layers, const float *x, int n, bool gather, bool cold,
                        int reps, float *g, float *u) {
    int *first = malloc(sizeof *first * (size_t)layers * (E + 1));
    int32_t *etok = malloc(sizeof *etok * (size_t)layers * n * K);
    ds4_mm_seg *seg = malloc(sizeof *seg * (2 * E + 2));
    for (int l = 0; l < layers; l++) route(n, first + l * (E + 1), etok + (size_t)l * n * K);
    double total = 0;
    int count = 0;
    for (int r = 0; r <= reps; r++)
        for (int l = 0; l < layers; l++) {
            int *fl = first + l * (E + 1);
            int32_t *el = etok + (size_t)l * n * K;
            if (cold) route(n, fl, el);
            int ns = job(&lw[l], x, n, fl, el, gather, g, u, seg);
            double t0 = now();
            ds4_mm_multi(pool, seg, ns);
            double dt = now() - t0;
            if (r > 0) { total += dt; count++; }
        }
    free(seg);
    free(etok);
    free(first);
    return total / count;
}

int main(int argc, char **argv) {
    int type = argc > 1 ? ds4_type_from_name(argv[1]) : DS4_TYPE_IQ2_XXS;
    int layers = argc > 2 ? atoi(argv[2]) : 10, threads = argc > 3 ? atoi(argv[3]) : 2;
    int ntok = argc > 4 ? atoi(argv[4]) : 512;
    if (type < 0 || !ds4_type_traits_ref(type)->quantized || D % ds4_type_traits_ref(type)->blck || layers < 1 ||
        threads < 1 || ntok < 1 || ntok > 8192) {
        fprintf(stderr, "usage: %s [type=iq2_xxs (a quantized type)] [layers>=1] [threads>=1] [ntok 1..8192]\n",
                argv[0]);
        return 2;
    }
    size_t rb = ds4_row_size(type, D), rq = ds4_row_size(DS4_TYPE_Q8_0, D);
    layer_w *lw = calloc((size_t)layers, sizeof *lw);
    for (int l = 0; l < layers; l++) {
        uint8_t *g = malloc(rb * FF * E), *u = malloc(rb * FF * E), *gs = malloc(rq * FF), *us = malloc(rq * FF);
        if (!g || !u || !gs || !us) { fprintf(stderr, "out of memory\n"); return 1; }
        random_weights(g, rb * FF * E, type);
        random_weights(u, rb * FF * E, type);
        random_weights(gs, rq * FF, DS4_TYPE_Q8_0);
        random_weights(us, rq * FF, DS4_TYPE_Q8_0);
        lw[l].gate = (ds4_weight){g, type, {D, FF, E}, "gate"};
        lw[l].up = (ds4_weight){u, type, {D, FF, E}, "up"};
        lw[l].gsh = (ds4_weight){gs, DS4_TYPE_Q8_0, {D, FF, 1}, "gate_sh"};
        lw[l].ush = (ds4_weight){us, DS4_TYPE_Q8_0, {D, FF, 1}, "up_sh"};
    }
    float *x = malloc(sizeof *x * (size_t)D * ntok);
    float *g = malloc(sizeof *g * (size_t)(K + 1) * ntok * FF), *u = malloc(sizeof *u * (size_t)(K + 1) * ntok * FF);
    for (size_t i = 0; i < (size_t)D * ntok; i++) x[i] = sinf((float)i * 0.37f);
    ds4_pool *pool = ds4_pool_new(threads), *one = ds4_pool_new(1);

    const char *tn = ds4_type_traits_ref(type)->name;
    double bytes = 2.0 * (K * rb * FF + rq * FF);
    printf("moe gate/up job, routed %s, embd %d, ff %d, top %d of %d, %d layers, %d threads\n", tn, D, FF, K, E,
           layers, threads);
    double warm = time_jobs(pool, lw, layers, x, 1, false, false, 40, g, u);
    double cold = time_jobs(pool, lw, layers, x, 1, false, true, 40, g, u);
    double w1 = time_jobs(one, lw, layers, x, 1, false, false, 20, g, u);
    printf("decode   warm %7.1f us/layer %5.1f GB/s | cold %7.1f us/layer %5.1f GB/s | 1 thread warm %7.1f us\n",
           warm * 1e6, bytes / warm / 1e9, cold * 1e6, bytes / cold / 1e9, w1 * 1e6);

    int first[E + 1];
    int32_t *etok = malloc(sizeof *etok * (size_t)ntok * K);
    route(ntok, first, etok);
    long lanes = 0;
    for (int e = 0; e < E; e++) lanes += (first[e + 1] - first[e] + PANEL - 1) / PANEL * PANEL;
    free(etok);
    double macs = 2.0 * D * FF * ((double)ntok * K + ntok);
    int reps = ntok >= 256 ? 3 : 10;
    double routed = time_jobs(pool, lw, layers, x, ntok, true, false, reps, g, u);
    double inorder = time_jobs(pool, lw, layers, x, ntok, false, false, reps, g, u);
    printf("prefill  %d tokens: routed %8.0f us/layer %6.0f GMAC/s | inorder %8.0f us/layer %6.0f GMAC/s | "
           "padding %.3f\n",
           ntok, routed * 1e6, macs / routed / 1e9, inorder * 1e6, macs / inorder / 1e9,
           (double)lanes / ((double)ntok * K));
    ds4_pool_free(pool);
    ds4_pool_free(one);
    for (int l = 0; l < layers; l++) {
        free((void *)lw[l].gate.data);
        free((void *)lw[l].up.data);
        free((void *)lw[l].gsh.data);
        free((void *)lw[l].ush.data);
    }
    free(lw);
    free(x);
    free(g);
    free(u);
    return 0;
}
