/* ds4 runtime pieces shared by the one-shot and interactive modes: opening
 * the model + tokenizer + generation driver, reading prompt files, the SIGINT
 * flag, and the think-max context rule. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"

atomic_int ds4_cli_sigint;

static void on_sigint(int sig) {
    (void)sig;
    atomic_store(&ds4_cli_sigint, 1);
}

void ds4_cli_install_sigint(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: a blocking terminal read returns EINTR */
    sigaction(SIGINT, &sa, NULL);
}

const char *ds4_cli_mode_name(ds4_think_mode mode) {
    switch (mode) {
    case DS4_THINK_NONE: return "nothink";
    case DS4_THINK_HIGH: return "think";
    case DS4_THINK_MAX: return "think-max";
    }
    return "?";
}

ds4_think_mode ds4_cli_effective_mode(ds4_think_mode mode, uint32_t ctx) {
    if (mode == DS4_THINK_MAX && ctx < DS4_THINK_MAX_MIN_CTX) {
        fprintf(stderr,
                "ds4: note: --think-max needs a context of at least %d tokens (--ctx %d); "
                "using --think with --ctx %u\n",
                DS4_THINK_MAX_MIN_CTX, DS4_THINK_MAX_MIN_CTX, ctx);
        return DS4_THINK_HIGH;
    }
    return mode;
}

int ds4_cli_read_text_file(const char *path, char **out, size_t *len, ds4_err *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return ds4_err_set(err, "cannot open %s: %s", path, strerror(errno));
    ds4_buf b = {0};
    char tmp[65536];
    size_t r;
    while ((r = fread(tmp, 1, sizeof tmp, f)) > 0) {
        if (ds4_buf_append(&b, tmp, r)) {
            fclose(f);
            ds4_buf_free(&b);
            return ds4_err_set(err, "%s: out of memory", path);
        }
    }
    int rerr = ferror(f);
    fclose(f);
    if (rerr) {
        ds4_buf_free(&b);
        return ds4_err_set(err, "cannot read %s", path);
    }
    size_t bad;
    if (!ds4_utf8_valid(b.data ? b.data : "", b.len, &bad)) {
        ds4_buf_free(&b);
        return ds4_err_set(err, "%s is not valid UTF-8 (first bad byte at offset %zu)", path, bad);
    }
    const char *nul = b.len ? memchr(b.data, 0, b.len) : NULL;
    if (nul) {
        size_t off = (size_t)(nul - b.data);
        ds4_buf_free(&b);
        return ds4_err_set(err, "%s contains a NUL byte at offset %zu", path, off);
    }
    *out = ds4_buf_take(&b, len);
    if (!*out) return ds4_err_set(err, "%s: out of memory", path);
    return 0;
}

int ds4_cli_app_open(ds4_cli_app *app, const ds4_cli_opts *o, int need_gen) {
    memset(app, 0, sizeof *app);
    const char *path = o->model_path ? o->model_path : DS4_CLI_DEFAULT_MODEL;
    struct stat sb;
    if (stat(path, &sb) != 0) {
        if (errno == ENOENT) {
            fprintf(stderr,
                    "ds4: model file '%s' is missing.\n"
                    "  Pass a DeepSeek V4 GGUF with -m PATH (convert one with ds4-convert, see README.md),\n"
                    "  or try DwarfStar on a small random model: ./ds4 --demo\n",
                    path);
        } else {
            fprintf(stderr, "ds4: cannot access model file '%s': %s\n", path, strerror(errno));
        }
        return DS4_EXIT_RUNTIME;
    }
    ds4_err err = {{0}};
    if (!(app->model = ds4_model_load(path, &err))) {
        fprintf(stderr, "ds4: cannot load model '%s': %s\n", path, err.msg);
        return DS4_EXIT_RUNTIME;
    }
    if (!(app->tok = ds4_tokenizer_load_gguf(app->model->gguf, &err))) {
        fprintf(stderr, "ds4: model '%s' has no usable tokenizer: %s\n", path, err.msg);
        ds4_cli_app_close(app);
        return DS4_EXIT_RUNTIME;
    }
    ds4_engine_opts_default(&app->eopts);
    app->eopts.n_threads = o->threads;
    app->eopts.numerics = o->numerics;
    app->eopts.ctx_max = o->ctx;
    app->eopts.experts = o->experts;
    app->eopts.backend = o->backend;
    app->eopts.gpu_expert_cache_mb = o->gpu_expert_cache_mb;
    if (need_gen && !(app->gen = ds4_gen_new(app->model, app->tok, &app->eopts, 0, &err))) {
        fprintf(stderr, "ds4: cannot start a session (ctx %u): %s\n", o->ctx, err.msg);
        ds4_cli_app_close(app);
        return DS4_EXIT_RUNTIME;
    }
    return 0;
}

int ds4_cli_app_set_ctx(ds4_cli_app *app, uint32_t ctx, ds4_err *err) {
    ds4_engine_opts e = app->eopts;
    e.ctx_max = ctx;
    ds4_gen *g = ds4_gen_new(app->model, app->tok, &e, 0, err);
    if (!g) return -1;
    ds4_gen_free(app->gen);
    app->gen = g;
    app->eopts = e;
    return 0;
}

void ds4_cli_app_close(ds4_cli_app *app) {
    ds4_gen_free(app->gen);
    ds4_tokenizer_free(app->tok);
    ds4_model_free(app->model);
    memset(app, 0, sizeof *app);
}
