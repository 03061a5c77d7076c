/* ds4 --demo: a small synthetic model to try the CLI without downloading one.
 *
 * The demo model is the mkmodel "tiny" preset (golden tiny-b shapes: 5
 * layers, width 128) with the real DeepSeek V4 tokenizer (129 280 tokens),
 * seed 1, recipe q8_0: about 48 MB, made in about a second, and identical
 * bytes on every machine.  Its weights are random, so it talks gibberish;
 * the point is the whole path (tokenizer, chat template, engine, sampler,
 * streaming output) on real token ids.
 *
 * Where: $XDG_CACHE_HOME/dwarfstar/ds4-demo-v1.gguf, else
 * ~/.cache/dwarfstar/ds4-demo-v1.gguf, else ./ds4-demo-v1.gguf; with -m PATH
 * the demo model is created at PATH instead.  It is written to a temporary
 * name and renamed, so an interrupted run never leaves a truncated model.
 * The tokenizer comes from $DS4_TOKENIZER, else data/tokenizer.json next to
 * the binary (or two levels up, for build-san/bin/ds4), else in the cwd. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "convert/mkmodel.h"

#define DEMO_FILE "ds4-demo-v1.gguf"
#define DEMO_SEED 1

static int file_exists(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

const char *ds4_cli_find_tokenizer(void) {
    static char path[PATH_MAX + 64];
    const char *env = getenv("DS4_TOKENIZER");
    if (env && *env) {
        snprintf(path, sizeof path, "%s", env);
        return file_exists(path) ? path : NULL;
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = 0;
            snprintf(path, sizeof path, "%s/data/tokenizer.json", exe);
            if (file_exists(path)) return path;
            snprintf(path, sizeof path, "%s/../../data/tokenizer.json", exe);
            if (file_exists(path)) return path;
        }
    }
    snprintf(path, sizeof path, "data/tokenizer.json");
    return file_exists(path) ? path : NULL;
}

/* mkdir -p of the directory part of path. */
static int make_parent_dirs(const char *path) {
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(tmp, 0755) && errno != EEXIST) return -1;
        *p = '/';
    }
    return 0;
}

static const char *default_demo_path(void) {
    static char path[PATH_MAX];
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    if (xdg && *xdg) snprintf(path, sizeof path, "%s/dwarfstar/" DEMO_FILE, xdg);
    else if (home && *home) snprintf(path, sizeof path, "%s/.cache/dwarfstar/" DEMO_FILE, home);
    else snprintf(path, sizeof path, DEMO_FILE);
    return path;
}

int ds4_cli_demo_prepare(const char **path) {
    if (!*path) *path = default_demo_path();
    if (file_exists(*path)) return 0;
    const char *tj = ds4_cli_find_tokenizer();
    if (!tj) {
        fprintf(stderr,
                "ds4: --demo needs the DeepSeek V4 tokenizer: data/tokenizer.json of the source tree was not\n"
                "  found next to the binary or in the current directory; run from the repository root or set\n"
                "  DS4_TOKENIZER=/path/to/tokenizer.json\n");
        return DS4_EXIT_RUNTIME;
    }
    if (make_parent_dirs(*path)) {
        fprintf(stderr, "ds4: cannot create the directory for %s: %s\n", *path, strerror(errno));
        return DS4_EXIT_RUNTIME;
    }
    char tmp[PATH_MAX + 32];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", *path, (long)getpid());
    fprintf(stderr, "ds4: creating the demo model %s (random weights, real tokenizer; once)...\n", *path);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    ds4_err err = {{0}};
    ds4_hparams hp;
    if (ds4_mkmodel_preset("tiny", &hp, &err)) {
        fprintf(stderr, "ds4: %s\n", err.msg);
        return DS4_EXIT_RUNTIME;
    }
    ds4_mkmodel_opts mo;
    memset(&mo, 0, sizeof mo);
    mo.recipe = "q8_0";
    mo.seed = DEMO_SEED;
    mo.tokenizer_json = tj;
    mo.name = "ds4-demo-v1 (random weights)";
    ds4_emit_stats st;
    if (ds4_mkmodel(tmp, &hp, &mo, &st, &err)) {
        unlink(tmp);
        fprintf(stderr, "ds4: cannot create the demo model: %s\n", err.msg);
        return DS4_EXIT_RUNTIME;
    }
    if (rename(tmp, *path)) {
        fprintf(stderr, "ds4: cannot rename %s to %s: %s\n", tmp, *path, strerror(errno));
        unlink(tmp);
        return DS4_EXIT_RUNTIME;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    fprintf(stderr, "ds4: demo model ready (%.1f s). Its weights are random: expect gibberish.\n",
            (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9);
    return 0;
}
