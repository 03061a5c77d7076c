/* ds4-synthbench: throughput and cross-backend checks on an in-memory
 * synthetic model (synth/synth.h), so the Flash shape runs without its file.
 *
 *   ds4-synthbench [--preset tiny|small|flash] [--layers N] [--recipe q2]
 *       [--seed S] [--ctx N] [--batch N] [--prefill N] [--decode N]
 *       [--backend cpu|cuda|auto] [--gpu-expert-cache-mb N] [--threads N]
 *       [--compare cpu] [--file-check MODEL.gguf]
 *
 * Prints model bytes, prefill tok/s (one call of --prefill tokens) and
 * decode tok/s (--decode greedy tokens).  --compare cpu reruns the same
 * token sequence (prefill + teacher-forced decode) on the CPU backend and
 * prints the per-position relative L2 error of the logits and argmax
 * agreement (the CUDA-vs-CPU check on a quantized model).  --file-check
 * compares the synthetic image with a ds4-mkmodel file of the same
 * arguments tensor by tensor (only tensors the generator fills from its
 * rows: types F32/F16/BF16/Q8_0/I32). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "convert/mkmodel.h"
#include "engine/engine.h"
#include "gguf/gguf.h"
#include "model/model.h"
#include "synth/synth.h"
#include "util/num.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int argmax(const float *x, size_t n) {
    size_t b = 0;
    for (size_t i = 1; i < n; i++) if (x[i] > x[b]) b = i;
    return (int)b;
}

/* Runs prefill of tok[0..np) then teacher-forced decode of tok[np..np+nd);
 * logits of the last prefill position and every decode step -> out. */
static int run_seq(const ds4_model *m, const ds4_engine_opts *o, const int32_t *tok, int np, int nd, float *out,
                   double *t_prefill, double *t_decode, ds4_err *err) {
    ds4_session *s = ds4_session_new(m, o, NULL, err);
    if (!s) return -1;
    size_t V = m->hp.n_vocab;
    double t0 = now();
    int rc = ds4_session_eval(s, tok, np, DS4_LOGITS_LAST, out, err);
    double t1 = now();
    for (int i = 0; rc == 0 && i < nd; i++) rc = ds4_session_eval(s, tok + np + i, 1, DS4_LOGITS_LAST, out + (size_t)(i + 1) * V, err);
    double t2 = now();
    if (t_prefill) *t_prefill = t1 - t0;
    if (t_decode) *t_decode = t2 - t1;
    ds4_session_free(s);
    return rc;
}

int main(int argc, char **argv) {
    const char *preset = "flash", *recipe = "q2", *compare = NULL, *file_check = NULL;
    long layers = 0, np = 512, nd = 64, ctx = 4096, batch = 256, threads = 0;
    uint64_t seed = 1;
    ds4_engine_opts o;
    ds4_engine_opts_default(&o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) { fprintf(stderr, "ds4-synthbench: %s needs a value\n", a); return 2; }
        i++;
        long long x = 0;
        ds4_err e = {{0}};
        int bad = 0;
        if (!strcmp(a, "--preset")) preset = v;
        else if (!strcmp(a, "--layers")) { bad = ds4_parse_int(a, v, 0, DS4_MAX_LAYERS - 1, &x, &e); layers = (long)x; }
        else if (!strcmp(a, "--recipe")) recipe = v;
        else if (!strcmp(a, "--seed")) bad = ds4_parse_uint(a, v, 0, UINT64_MAX, &seed, &e);
        else if (!strcmp(a, "--ctx")) { bad = ds4_parse_int(a, v, 2, 1L << 30, &x, &e); ctx = (long)x; }
        else if (!strcmp(a, "--batch")) { bad = ds4_parse_int(a, v, 1, 1L << 20, &x, &e); batch = (long)x; }
        else if (!strcmp(a, "--prefill")) { bad = ds4_parse_int(a, v, 1, 1L << 30, &x, &e); np = (long)x; }
        else if (!strcmp(a, "--decode")) { bad = ds4_parse_int(a, v, 0, 1L << 30, &x, &e); nd = (long)x; }
        else if (!strcmp(a, "--threads")) { bad = ds4_parse_int(a, v, 0, 4096, &x, &e); threads = (long)x; }
        else if (!strcmp(a, "--gpu-expert-cache-mb"))
            bad = ds4_parse_uint(a, v, 0, (uint64_t)1 << 40, &o.gpu_expert_cache_mb, &e);
        else if (!strcmp(a, "--compare")) compare = v;
        else if (!strcmp(a, "--file-check")) file_check = v;
        else if (!strcmp(a, "--backend")) {
            int b = ds4_backend_parse(v);
            if (b < 0) { fprintf(stderr, "ds4-synthbench: bad backend '%s'\n", v); return 2; }
            o.backend = (enum ds4_backend)b;
        } else { fprintf(stderr, "ds4-synthbench: unknown option %s\n", a); return 2; }
        if (bad) { fprintf(stderr, "ds4-synthbench: %s\n", e.msg); return 2; }
    }
    if (np < 1 || nd < 0 || np + nd + 1 > ctx) { fprintf(stderr, "ds4-synthbench: need 1 <= prefill, prefill+decode < ctx\n"); return 2; }
    ds4_err err = {{0}};
    ds4_hparams hp;
    if (ds4_mkmodel_preset(preset, &hp, &err)) { fprintf(stderr, "ds4-synthbench: %s\n", err.msg); return 2; }
    if (layers > 0) ds4_mkmodel_set_layers(&hp, (uint32_t)layers);
    double t0 = now();
    ds4_synth *sy = ds4_synth_open(&hp, recipe, seed, (int)threads, &err);
    if (!sy) { fprintf(stderr, "ds4-synthbench: %s\n", err.msg); return 1; }
    const ds4_model *m = sy->model;
    printf("model: preset %s, %u layers, recipe %s, image %.2f GiB, built in %.1f s\n", preset, m->hp.n_layer, recipe,
           sy->image_bytes / 1073741824.0, now() - t0);
    int rc = 0;
    if (file_check) {
        ds4_model *fm = ds4_model_load(file_check, &err);
        if (!fm) { fprintf(stderr, "ds4-synthbench: %s\n", err.msg); return 1; }
        int64_t nt = gguf_n_tensors(fm->gguf), same = 0, diff = 0, skipped = 0;
        for (int64_t i = 0; i < nt; i++) {
            const gguf_tensor *a = gguf_tensor_at(fm->gguf, i);
            char name[128];
            snprintf(name, sizeof name, "%.*s", (int)a->name.len, a->name.ptr);
            const gguf_tensor *b = gguf_find_tensor(m->gguf, name);
            if (!b) { skipped++; continue; }
            bool gen = a->type == 0 || a->type == 1 || a->type == 8 || a->type == 26 || a->type == 30;
            if (!gen) { skipped++; continue; }
            if (a->nbytes == b->nbytes && a->type == b->type && a->offset == b->offset && !memcmp(a->data, b->data, a->nbytes)) same++;
            else { diff++; fprintf(stderr, "differs: %s\n", name); }
        }
        printf("file check: %lld identical, %lld different, %lld not comparable\n", (long long)same, (long long)diff,
               (long long)skipped);
        rc |= diff != 0;
        ds4_model_free(fm);
    }
    o.ctx_max = (uint32_t)ctx;
    o.max_batch = (int)batch;
    o.n_threads = (int)threads;
    size_t V = m->hp.n_vocab;
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)(np + nd));
    uint64_t st = seed * 2654435761u + 1;
    for (long i = 0; i < np + nd; i++) { st = st * 6364136223846793005ull + 1442695040888963407ull; tok[i] = (int32_t)((st >> 33) % V); }
    float *lg = malloc(sizeof(float) * V * (size_t)(nd + 1));
    double tp = 0, td = 0;
    if (run_seq(m, &o, tok, (int)np, (int)nd, lg, &tp, &td, &err)) { fprintf(stderr, "ds4-synthbench: %s\n", err.msg); return 1; }
    printf("prefill %ld tok: %.3f s, %.1f tok/s\n", np, tp, np / tp);
    if (nd) printf("decode %ld tok: %.3f s, %.2f tok/s (%.2f ms/tok)\n", nd, td, nd / td, 1e3 * td / nd);
    if (compare) {
        ds4_engine_opts c = o;
        c.backend = (enum ds4_backend)ds4_backend_parse(compare);
        float *ref = malloc(sizeof(float) * V * (size_t)(nd + 1));
        if (run_seq(m, &c, tok, (int)np, (int)nd, ref, NULL, NULL, &err)) { fprintf(stderr, "ds4-synthbench: %s\n", err.msg); return 1; }
        double worst = 0, sum = 0;
        int agree = 0;
        for (long i = 0; i <= nd; i++) {
            const float *a = lg + (size_t)i * V, *b = ref + (size_t)i * V;
            double num = 0, den = 0;
            for (size_t j = 0; j < V; j++) { double d = (double)a[j] - b[j]; num += d * d; den += (double)b[j] * b[j]; }
            double rel = den > 0 ? sqrt(num / den) : sqrt(num);
            if (!(rel == rel)) rel = INFINITY;
            sum += rel;
            if (rel > worst) worst = rel;
            agree += argmax(a, V) == argmax(b, V);
        }
        printf("compare vs %s: %ld positions, max rel L2 %.3g, mean %.3g, argmax agree %d/%ld\n", compare, nd + 1, worst,
               sum / (nd + 1), agree, nd + 1);
        free(ref);
    }
    free(lg);
    free(tok);
    ds4_synth_free(sy);
    return rc;
}
