/* ds4-hotexperts: counts routed-expert selections per layer over prompts and
 * writes the hot-expert table that `--hot-experts FILE` pre-loads and pins
 * (format in src/experts/experts.h).  Prompts are token-id files (ids
 * separated by spaces, commas or newlines) and/or random ids; each prompt is
 * evaluated from an empty session.  The expert streaming flags may be given,
 * so a table can be built for a model larger than RAM. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "experts/experts.h"
#include "model/model.h"
#include "util/num.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: ds4-hotexperts -m MODEL.gguf -o OUT.hot [--tokens FILE]... [--random N] [options]\n"
            "\n"
            "  -m, --model PATH   model\n"
            "  -o, --out PATH     table to write\n"
            "  --tokens FILE      a prompt as token ids (repeatable)\n"
            "  --random N         also a prompt of N random token ids\n"
            "  --seed S           seed for --random (default 1)\n"
            "  --decode N         after each prompt, decode N more tokens (greedy, counted too)\n"
            "  --batch N          prefill batch (default 256)\n"
            "  -t, --threads N    worker threads (default: all CPUs)\n");
    ds4_experts_usage(f);
}

static int read_ids(const char *path, int32_t **out, int *n, uint32_t vocab) {
    FILE *f = fopen(path, "r");
    if (!f) { fprintf(stderr, "ds4-hotexperts: %s: %s\n", path, strerror(errno)); return -1; }
    int cap = 1024, k = 0;
    int32_t *v = malloc(sizeof *v * (size_t)cap);
    long x;
    int c;
    for (;;) {
        while ((c = fgetc(f)) != EOF && (c == ' ' || c == ',' || c == '\n' || c == '\r' || c == '\t')) {}
        if (c == EOF) break;
        ungetc(c, f);
        if (fscanf(f, "%ld", &x) != 1 || x < 0 || (uint64_t)x >= vocab) {
            fprintf(stderr, "ds4-hotexperts: %s: token %d is not an id in 0..%u\n", path, k, vocab - 1);
            free(v);
            fclose(f);
            return -1;
        }
        if (k == cap) v = realloc(v, sizeof *v * (size_t)(cap *= 2));
        v[k++] = (int32_t)x;
    }
    fclose(f);
    *out = v;
    *n = k;
    return 0;
}

int main(int argc, char **argv) {
    const char *model = NULL, *out = NULL, *files[256];
    int nfiles = 0, threads = 0, batch = 256;
    long n_random = 0, n_decode = 0;
    uint64_t seed = 1;
    ds4_engine_opts o;
    ds4_engine_opts_default(&o);
    ds4_err err = {{0}};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool more = i + 1 < argc;
        long long x = 0;
        int bad = 0;
        int r = ds4_experts_parse_arg(&o.experts, argc, argv, &i, &err);
        if (r < 0) { fprintf(stderr, "ds4-hotexperts: %s\n", err.msg); return 2; }
        if (r > 0) continue;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        if ((!strcmp(a, "-m") || !strcmp(a, "--model")) && more) model = argv[++i];
        else if ((!strcmp(a, "-o") || !strcmp(a, "--out")) && more) out = argv[++i];
        else if (!strcmp(a, "--tokens") && more && nfiles < 256) files[nfiles++] = argv[++i];
        else if (!strcmp(a, "--seed") && more) bad = ds4_parse_uint(a, argv[++i], 0, UINT64_MAX, &seed, &err);
        else if (!strcmp(a, "--random") && more) { bad = ds4_parse_int(a, argv[++i], 0, INT32_MAX, &x, &err); n_random = (long)x; }
        else if (!strcmp(a, "--decode") && more) { bad = ds4_parse_int(a, argv[++i], 0, INT32_MAX, &x, &err); n_decode = (long)x; }
        else if (!strcmp(a, "--batch") && more) { bad = ds4_parse_int(a, argv[++i], 1, 1 << 20, &x, &err); batch = (int)x; }
        else if ((!strcmp(a, "-t") || !strcmp(a, "--threads")) && more) {
            bad = ds4_parse_int(a, argv[++i], 0, 4096, &x, &err);
            threads = (int)x;
        } else { fprintf(stderr, "ds4-hotexperts: unknown or incomplete option '%s'\n", a); usage(stderr); return 2; }
        if (bad) { fprintf(stderr, "ds4-hotexperts: %s\n", err.msg); return 2; }
    }
    if (!model || !out || (nfiles == 0 && n_random <= 0) || n_random < 0 || n_decode < 0 || batch <= 0) {
        usage(stderr);
        return 2;
    }
    ds4_model *m = ds4_model_load(model, &err);
    if (!m) { fprintf(stderr, "ds4-hotexperts: %s: %s\n", model, err.msg); return 1; }
    uint32_t L = m->hp.n_layer, E = m->hp.n_expert, V = m->hp.n_vocab;
    uint64_t *counts = calloc((size_t)L * E, sizeof *counts), n_tok = 0;
    float *logits = malloc(sizeof(float) * V);
    int rc = 0;
    for (int p = 0; p < nfiles + (n_random > 0) && !rc; p++) {
        int32_t *ids = NULL;
        int n = 0;
        if (p < nfiles) {
            if (read_ids(files[p], &ids, &n, V)) { rc = 2; break; }
        } else {
            n = (int)n_random;
            ids = malloc(sizeof *ids * (size_t)n);
            for (int i = 0; i < n; i++) {
                seed = seed * 6364136223846793005ull + 1442695040888963407ull;
                ids[i] = (int32_t)((seed >> 33) % V);
            }
        }
        if (n == 0) { free(ids); continue; }
        o.n_threads = threads;
        o.max_batch = batch;
        o.ctx_max = (uint32_t)(n + n_decode);
        o.expert_counts = counts;
        ds4_session *s = ds4_session_new(m, &o, NULL, &err);
        if (!s || ds4_session_eval(s, ids, n, DS4_LOGITS_LAST, logits, &err)) rc = 1;
        for (long d = 0; !rc && d < n_decode; d++) {
            int32_t best = 0; /* greedy: deterministic without a sampler */
            for (uint32_t v = 1; v < V; v++)
                if (logits[v] > logits[best]) best = (int32_t)v;
            if (ds4_session_eval(s, &best, 1, DS4_LOGITS_LAST, logits, &err)) rc = 1;
        }
        if (rc) fprintf(stderr, "ds4-hotexperts: prompt %d: %s\n", p, err.msg);
        else n_tok += (uint64_t)n + (uint64_t)n_decode;
        if (s && s->experts && !rc) {
            ds4_expert_stats st;
            ds4_experts_stats_get(s->experts, &st);
            ds4_experts_stats_print(stderr, &st);
        }
        ds4_session_free(s);
        free(ids);
    }
    if (!rc && ds4_hot_write(out, m, counts, n_tok, &err)) {
        fprintf(stderr, "ds4-hotexperts: %s\n", err.msg);
        rc = 1;
    }
    if (!rc) {
        /* How concentrated the selections are: share covered by each layer's top quarter. */
        double share = 0;
        uint64_t *row = malloc(sizeof *row * E);
        for (uint32_t l = 0; l < L; l++) {
            uint64_t tot = 0, top = 0;
            memcpy(row, counts + (size_t)l * E, sizeof *row * E);
            for (uint32_t e = 0; e < E; e++) tot += row[e];
            for (uint32_t q = 0; q < (E + 3) / 4; q++) { /* partial selection sort: top quarter */
                uint32_t b = q;
                for (uint32_t e = q + 1; e < E; e++) if (row[e] > row[b]) b = e;
                uint64_t t = row[q]; row[q] = row[b]; row[b] = t;
                top += row[q];
            }
            share += tot ? (double)top / (double)tot : 0;
        }
        free(row);
        printf("%s: %llu tokens, %u layers x %u experts; top quarter of experts = %.1f%% of selections "
               "(mean over layers)\n", out, (unsigned long long)n_tok, L, E, 100.0 * share / L);
    }
    free(counts);
    free(logits);
    ds4_model_free(m);
    return rc;
}
