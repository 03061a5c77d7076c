/* ds4 engine checking hook:
 *
 *   ds4 -m MODEL.gguf --tokens 1,5,9 --dump-logits OUT.f32
 *       [--tokens-file FILE] [--decode-from K] [--chunk N]
 *       [--numerics model|reference] [--threads N]
 *
 * Writes raw little-endian f32 logits [n_tokens x vocab] of one run over the
 * tokens (ds4_eval_sequence).  Tests, the golden check and the peer
 * comparison drive the engine through it, so its behaviour is frozen. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "util/ids.h"


static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    ds4_buf b = {0};
    char tmp[65536];
    size_t r;
    while ((r = fread(tmp, 1, sizeof tmp, f)) > 0)
        if (ds4_buf_append(&b, tmp, r)) { fclose(f); ds4_buf_free(&b); return NULL; }
    fclose(f);
    return ds4_buf_take(&b, NULL);
}

int ds4_cli_dump_logits(const ds4_cli_opts *o) {
    char *text = NULL;
    if (o->tokens_file && !(text = slurp(o->tokens_file))) {
        fprintf(stderr, "ds4: cannot read %s: %s\n", o->tokens_file, strerror(errno));
        return DS4_EXIT_RUNTIME;
    }
    int32_t *ids = NULL;
    size_t nids = 0;
    ds4_err perr = {{0}};
    int rc = ds4_parse_ids(o->tokens_file ? text : o->tokens, &ids, &nids, &perr);
    free(text);
    if (rc) {
        fprintf(stderr, "ds4: %s\n", perr.msg);
        return DS4_EXIT_USAGE;
    }
    if (nids > INT32_MAX) {
        fprintf(stderr, "ds4: too many tokens\n");
        free(ids);
        return DS4_EXIT_USAGE;
    }
    int n = (int)nids;
    if (n == 0) {
        fprintf(stderr, "ds4: no tokens given\n");
        free(ids);
        return DS4_EXIT_USAGE;
    }
    ds4_engine_opts opts;
    ds4_engine_opts_default(&opts);
    opts.n_threads = o->threads;
    opts.numerics = o->numerics;
    opts.backend = o->backend;
    opts.gpu_expert_cache_mb = o->gpu_expert_cache_mb;
    ds4_err err = {{0}};
    const char *path = o->model_path ? o->model_path : DS4_CLI_DEFAULT_MODEL;
    ds4_model *m = ds4_model_load(path, &err);
    if (!m) {
        fprintf(stderr, "ds4: cannot load model: %s\n", err.msg);
        free(ids);
        return DS4_EXIT_RUNTIME;
    }
    size_t V = m->hp.n_vocab;
    float *logits = malloc(sizeof(float) * V * (size_t)n);
    rc = DS4_EXIT_RUNTIME;
    if (!logits) {
        fprintf(stderr, "ds4: out of memory for %d x %zu logits\n", n, V);
    } else if (ds4_eval_sequence(m, &opts, ids, n, o->chunk, o->decode_from, logits, &err)) {
        fprintf(stderr, "ds4: %s\n", err.msg);
    } else {
        FILE *f = fopen(o->dump_logits, "wb");
        int ok = f && fwrite(logits, sizeof(float), V * (size_t)n, f) == V * (size_t)n;
        if (f && fclose(f)) ok = 0;
        if (!ok) fprintf(stderr, "ds4: cannot write %s: %s\n", o->dump_logits, strerror(errno));
        else rc = DS4_EXIT_OK;
    }
    free(logits);
    free(ids);
    ds4_model_free(m);
    return rc;
}
