/* ds4: the DwarfStar command line.
 *
 * This first version carries the checking hook of the engine:
 *
 *   ds4 -m MODEL.gguf --tokens 1,5,9 --dump-logits OUT.f32
 *       [--tokens-file FILE] [--decode-from K] [--chunk N]
 *       [--numerics model|reference] [--threads N]
 *
 * It writes raw little-endian f32 logits [n_tokens × vocab] of one run over
 * the tokens.  Tests and the peer comparison drive the engine through it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "model/model.h"

#define DEFAULT_MODEL "./ds4flash.gguf"

static void usage(FILE *f) {
    fprintf(f,
            "usage: ds4 [-m MODEL.gguf] --tokens IDS|--tokens-file FILE --dump-logits OUT.f32 [options]\n"
            "  -m, --model PATH        model file (default %s)\n"
            "  --tokens 1,5,9          token ids (commas or white space)\n"
            "  --tokens-file FILE      token ids from a file\n"
            "  --dump-logits OUT.f32   write f32 logits [n_tokens x vocab]\n"
            "  --decode-from K         prefill K tokens, then decode one token at a time\n"
            "  --chunk N               prefill in chunks of N tokens\n"
            "  --numerics MODE         model (default: FP8/FP4 simulation as released) or reference\n"
            "  -t, --threads N         worker threads (default: all CPUs)\n",
            DEFAULT_MODEL);
}

/* Parses integers separated by commas and/or white space. */
static int parse_ids(const char *s, int32_t **out, int *n) {
    int cap = 64, k = 0;
    int32_t *v = malloc(sizeof *v * (size_t)cap);
    if (!v) return -1;
    while (*s) {
        while (*s == ',' || *s == ' ' || *s == '\n' || *s == '\t' || *s == '\r') s++;
        if (!*s) break;
        char *end;
        errno = 0;
        long x = strtol(s, &end, 10);
        if (end == s || errno || x < 0 || x > INT32_MAX) {
            fprintf(stderr, "ds4: bad token id near '%.20s'\n", s);
            free(v);
            return -1;
        }
        if (k == cap) {
            int32_t *nv = realloc(v, sizeof *v * (size_t)(cap *= 2));
            if (!nv) { free(v); return -1; }
            v = nv;
        }
        v[k++] = (int32_t)x;
        s = end;
    }
    *out = v;
    *n = k;
    return 0;
}

static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    for (size_t r; buf && (r = fread(buf + n, 1, cap - n - 1, f)) > 0;) {
        n += r;
        if (n + 1 == cap) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb) { free(buf); buf = NULL; }
            buf = nb;
        }
    }
    fclose(f);
    if (buf) buf[n] = 0;
    return buf;
}

int main(int argc, char **argv) {
    const char *model_path = DEFAULT_MODEL, *tokens_arg = NULL, *tokens_file = NULL, *dump = NULL;
    int chunk = 0, decode_from = 0;
    ds4_engine_opts opts;
    ds4_engine_opts_default(&opts);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEED_ARG() do { if (!v) { fprintf(stderr, "ds4: %s needs an argument\n", a); return 2; } i++; } while (0)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        else if (!strcmp(a, "-m") || !strcmp(a, "--model")) { NEED_ARG(); model_path = v; }
        else if (!strcmp(a, "--tokens")) { NEED_ARG(); tokens_arg = v; }
        else if (!strcmp(a, "--tokens-file")) { NEED_ARG(); tokens_file = v; }
        else if (!strcmp(a, "--dump-logits")) { NEED_ARG(); dump = v; }
        else if (!strcmp(a, "--decode-from")) { NEED_ARG(); decode_from = atoi(v); }
        else if (!strcmp(a, "--chunk")) { NEED_ARG(); chunk = atoi(v); }
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) { NEED_ARG(); opts.n_threads = atoi(v); }
        else if (!strcmp(a, "--numerics")) {
            NEED_ARG();
            if (!strcmp(v, "reference")) opts.numerics = DS4_NUMERICS_REFERENCE;
            else if (!strcmp(v, "model")) opts.numerics = DS4_NUMERICS_MODEL;
            else { fprintf(stderr, "ds4: --numerics must be 'model' or 'reference', not '%s'\n", v); return 2; }
        } else {
            fprintf(stderr, "ds4: unknown option '%s' (see ds4 --help)\n", a);
            return 2;
        }
#undef NEED_ARG
    }
    if (!dump || (!tokens_arg && !tokens_file)) {
        usage(stderr);
        return 2;
    }
    char *text = NULL;
    if (tokens_file && !(text = read_file(tokens_file))) {
        fprintf(stderr, "ds4: cannot read %s: %s\n", tokens_file, strerror(errno));
        return 1;
    }
    int32_t *ids = NULL;
    int n = 0;
    int rc = parse_ids(tokens_file ? text : tokens_arg, &ids, &n);
    free(text);
    if (rc) return 2;
    if (n == 0) { fprintf(stderr, "ds4: no tokens given\n"); free(ids); return 2; }

    ds4_err err = {{0}};
    ds4_model *m = ds4_model_load(model_path, &err);
    if (!m) {
        fprintf(stderr, "ds4: cannot load model: %s\n", err.msg);
        free(ids);
        return 1;
    }
    size_t V = m->hp.n_vocab;
    float *logits = malloc(sizeof(float) * V * (size_t)n);
    rc = 1;
    if (!logits) {
        fprintf(stderr, "ds4: out of memory for %d x %zu logits\n", n, V);
    } else if (ds4_eval_sequence(m, &opts, ids, n, chunk, decode_from, logits, &err)) {
        fprintf(stderr, "ds4: %s\n", err.msg);
    } else {
        FILE *f = fopen(dump, "wb");
        if (!f || fwrite(logits, sizeof(float), V * (size_t)n, f) != V * (size_t)n || fclose(f)) {
            fprintf(stderr, "ds4: cannot write %s: %s\n", dump, strerror(errno));
        } else {
            rc = 0;
        }
    }
    free(logits);
    free(ids);
    ds4_model_free(m);
    return rc;
}
