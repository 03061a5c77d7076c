/* ds4-bench: prefill and generation speed at growing context frontiers.
 *
 *   ds4-bench -m MODEL.gguf [--ctx-start N] [--ctx-max N] [--step-incr N | --step-mul F]
 *             [--gen N] [--threads N] [--roofline] [--tokens-file IDS | --text FILE]
 *
 * Loads the model once, walks one fixed token sequence to each frontier and
 * prints CSV rows (frontier, tokens prefilled, prefill tok/s, generation
 * tok/s, KV bytes [, bytes per generated token, the row's bandwidth, roofline tok/s,
 * fraction, prefill GFLOP/s])
 * and a last line "summary prefill_tps=X gen_tps=Y [roofline_fraction=F]".
 * Lines starting with '#' are comments.  The logic lives in src/bench/bench.c. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench.h"
#include "model/model.h"
#include "quant/simd.h"
#include "text/tokenizer.h"
#include "util/ids.h"
#include "util/num.h"

#define DEFAULT_MODEL "./ds4flash.gguf"

static void usage(FILE *f) {
    fprintf(f,
            "usage: ds4-bench [-m MODEL.gguf] [options]\n"
            "  -m, --model PATH     model file (default %s)\n"
            "  --ctx-start N        first context frontier (default 512)\n"
            "  --ctx-max N          last frontier is <= N (default: ctx-start)\n"
            "  --step-incr N        next frontier = frontier + N\n"
            "  --step-mul F         next frontier = frontier * F (default 2 when ctx-max > ctx-start)\n"
            "  --gen N              greedy tokens generated at each frontier (default 32)\n"
            "  -t, --threads N      worker threads (default: all CPUs)\n"
            "  --roofline           measure memory bandwidth; add bytes/token, the roofline fraction and\n"
            "                       prefill GFLOP/s (the forward pass's arithmetic per second)\n"
            "  --bandwidth GBS      use this bandwidth (GB/s) instead of measuring it\n"
            "  --phases             per row, '# phases' lines: microseconds per token of each forward phase;\n"
            "                       with --roofline also each weight-reading phase's fraction of the\n"
            "                       bandwidth limit in generation ('# phases gen_roofline')\n"
            "  --tokens-file FILE   token ids (commas/white space), cycled to the last frontier\n"
            "  --text FILE          text encoded with the model's tokenizer, cycled\n"
            "  --seed N             seed of the pseudo-random ids (default 1; same ids as peer_llama)\n"
            "  --numerics MODE      model (default) or reference\n"
            "  --batch N            engine batch size (default: engine default)\n"
            "  --repeat N           time each frontier's prefill and generation N times from the\n"
            "                       same state and keep the fastest (default 1; with expert\n"
            "                       streaming, later repeats find the expert cache warm)\n"
            "  --no-warmup          skip prefaulting the weights and the warm-up eval\n",
            DEFAULT_MODEL);
    ds4_experts_usage(f);
    fprintf(f, "With expert streaming on, each row adds expert_hit_rate, expert_mb_per_token and\n"
               "expert_io_ms_per_token over that row's generated tokens.\n");
}

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    for (size_t r; buf && (r = fread(buf + n, 1, cap - n - 1, f)) > 0;) {
        n += r;
        if (n + 1 == cap) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb) free(buf);
            buf = nb;
        }
    }
    fclose(f);
    if (buf) buf[n] = 0;
    if (len) *len = n;
    return buf;
}


static int parse_u32(const char *opt, const char *v, uint32_t *out) {
    ds4_err e = {{0}};
    uint64_t x;
    if (ds4_parse_uint(opt, v, 0, UINT32_MAX, &x, &e)) { fprintf(stderr, "ds4-bench: %s\n", e.msg); return -1; }
    *out = (uint32_t)x;
    return 0;
}

/* A finite number above lo (--step-mul: > 1, --bandwidth: > 0). */
static int parse_above(const char *opt, const char *v, double lo, double hi, double *out) {
    ds4_err e = {{0}};
    if (ds4_parse_real(opt, v, lo, hi, 1, out, &e)) { fprintf(stderr, "ds4-bench: %s\n", e.msg); return -1; }
    return 0;
}

int main(int argc, char **argv) {
    const char *model_path = DEFAULT_MODEL, *tokens_file = NULL, *text_file = NULL;
    ds4_bench_opts o;
    ds4_bench_opts_default(&o);
    bool have_max = false;
    uint32_t u;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEED_ARG() do { if (!v) { fprintf(stderr, "ds4-bench: %s needs an argument\n", a); return 2; } i++; } while (0)
#define U32(dst) do { NEED_ARG(); if (parse_u32(a, v, &u)) return 2; dst = u; } while (0)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        else if (!strcmp(a, "-m") || !strcmp(a, "--model")) { NEED_ARG(); model_path = v; }
        else if (!strcmp(a, "--ctx-start")) U32(o.ctx_start);
        else if (!strcmp(a, "--ctx-max")) { U32(o.ctx_max); have_max = true; }
        else if (!strcmp(a, "--step-incr")) U32(o.step_incr);
        else if (!strcmp(a, "--step-mul")) { NEED_ARG(); if (parse_above(a, v, 1, 1e6, &o.step_mul)) return 2; }
        else if (!strcmp(a, "--gen")) U32(o.gen);
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) U32(o.n_threads);
        else if (!strcmp(a, "--batch")) U32(o.max_batch);
        else if (!strcmp(a, "--repeat")) {
            U32(o.repeat);
            if (o.repeat < 1 || o.repeat > 100) { fprintf(stderr, "ds4-bench: --repeat must be 1..100\n"); return 2; }
        }
        else if (!strcmp(a, "--seed")) U32(o.seed);
        else if (!strcmp(a, "--roofline")) o.roofline = true;
        else if (!strcmp(a, "--phases")) o.phases = true;
        else if (!strcmp(a, "--bandwidth")) {
            NEED_ARG();
            double gbs;
            if (parse_above(a, v, 0, 1e6, &gbs)) return 2;
            o.bandwidth = gbs * 1e9;
            o.roofline = true;
        }
        else if (!strcmp(a, "--tokens-file")) { NEED_ARG(); tokens_file = v; }
        else if (!strcmp(a, "--text")) { NEED_ARG(); text_file = v; }
        else if (!strcmp(a, "--no-warmup")) o.warmup = false;
        else if (!strcmp(a, "--numerics")) {
            NEED_ARG();
            if (!strcmp(v, "reference")) o.numerics = DS4_NUMERICS_REFERENCE;
            else if (!strcmp(v, "model")) o.numerics = DS4_NUMERICS_MODEL;
            else { fprintf(stderr, "ds4-bench: --numerics must be 'model' or 'reference'\n"); return 2; }
        } else {
            ds4_err xerr = {{0}};
            int xr = ds4_experts_parse_arg(&o.experts, argc, argv, &i, &xerr);
            if (xr < 0) { fprintf(stderr, "ds4-bench: %s\n", xerr.msg); return 2; }
            if (xr == 0) {
                fprintf(stderr, "ds4-bench: unknown option '%s' (see ds4-bench --help)\n", a);
                return 2;
            }
        }
#undef U32
#undef NEED_ARG
    }
    if (o.ctx_start == 0) { fprintf(stderr, "ds4-bench: --ctx-start must be >= 1\n"); return 2; }
    if (!have_max) o.ctx_max = o.ctx_start;
    if (o.ctx_max < o.ctx_start) { fprintf(stderr, "ds4-bench: --ctx-max is below --ctx-start\n"); return 2; }
    if (o.ctx_max > o.ctx_start && !o.step_incr && !(o.step_mul > 1)) o.step_mul = 2;
    if (tokens_file && text_file) { fprintf(stderr, "ds4-bench: --tokens-file and --text exclude each other\n"); return 2; }

    ds4_err err = {{0}};
    ds4_model *m = ds4_model_load(model_path, &err);
    if (!m) {
        fprintf(stderr, "ds4-bench: cannot load model: %s\n", err.msg);
        return 1;
    }
    int rc = 1;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    ds4_tok_ids enc = {0};
    ds4_tokenizer *tok = NULL;
    char *text = NULL;
    size_t text_len = 0;
    if (tokens_file) {
        if (!(text = slurp(tokens_file, NULL))) {
            fprintf(stderr, "ds4-bench: cannot read %s: %s\n", tokens_file, strerror(errno));
            goto out;
        }
        ds4_err perr = {{0}};
        if (ds4_parse_ids(text, &ids, &n_ids, &perr)) {
            fprintf(stderr, "ds4-bench: %s: %s\n", tokens_file, perr.msg);
            goto out;
        }
        if (!n_ids) { fprintf(stderr, "ds4-bench: %s holds no token ids\n", tokens_file); goto out; }
        o.tokens = ids;
        o.n_tokens = n_ids;
    } else if (text_file) {
        if (!(text = slurp(text_file, &text_len))) {
            fprintf(stderr, "ds4-bench: cannot read %s: %s\n", text_file, strerror(errno));
            goto out;
        }
        if (!(tok = ds4_tokenizer_load_gguf(m->gguf, &err))) {
            fprintf(stderr, "ds4-bench: --text needs a model with a tokenizer: %s\n", err.msg);
            goto out;
        }
        if (ds4_tok_encode(tok, text, text_len, 0, &enc, &err)) {
            fprintf(stderr, "ds4-bench: cannot tokenize %s: %s\n", text_file, err.msg);
            goto out;
        }
        if (!enc.n) { fprintf(stderr, "ds4-bench: %s encodes to no tokens\n", text_file); goto out; }
        o.tokens = enc.ids;
        o.n_tokens = enc.n;
    }
    o.csv = stdout;
    /* the kernel level in use (DS4_SIMD can force one): runs compare only at the same level */
    printf("# model=%s layers=%u embd=%u vocab=%u experts=%u/%u gen=%d simd=%s\n", model_path, m->hp.n_layer,
           m->hp.n_embd, m->hp.n_vocab, m->hp.n_expert_used, m->hp.n_expert, o.gen, ds4_simd_level());
    ds4_bench_result r;
    if (ds4_bench_run(m, &o, &r, &err)) {
        fprintf(stderr, "ds4-bench: %s\n", err.msg);
        goto out;
    }
    printf("summary prefill_tps=%.2f gen_tps=%.2f", r.prefill_tps, r.gen_tps);
    if (o.roofline) printf(" roofline_fraction=%.4f", r.roofline_fraction);
    printf("\n");
    ds4_bench_result_free(&r);
    rc = 0;
out:
    ds4_tok_ids_free(&enc);
    ds4_tokenizer_free(tok);
    free(text);
    free(ids);
    ds4_model_free(m);
    return rc;
}
