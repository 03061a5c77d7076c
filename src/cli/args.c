/* ds4 argument parsing: argv -> ds4_cli_opts.  Every value is checked here
 * (strict numbers, ranges, known words), so later stages only see valid
 * options; problems print "ds4: ..." naming the flag and return exit 2. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "util/num.h"

void ds4_cli_usage(FILE *f) {
    fprintf(f,
            "usage: ds4 [-m MODEL.gguf] [-p PROMPT | --prompt-file FILE] [options]\n"
            "       ds4 --demo [-p PROMPT]       chat with a small random model (created once)\n"
            "\n"
            "Without -p / --prompt-file ds4 starts an interactive chat (/help inside).\n"
            "\n"
            "  -m, --model PATH        model file (default %s)\n"
            "  -p, --prompt TEXT       one-shot: answer TEXT and exit\n"
            "  --prompt-file FILE      one-shot with the content of FILE (UTF-8)\n"
            "  --system TEXT           system prompt\n"
            "  -n N                    max new tokens (default: until the model stops or the\n"
            "                          context is full; --demo: %d)\n"
            "  --ctx N                 context size in tokens (default %d; at most the\n"
            "                          model's context length)\n"
            "  --think | --nothink | --think-max\n"
            "                          reasoning mode (default --think); --think-max needs\n"
            "                          --ctx >= %d, otherwise --think is used\n"
            "  --temp T                temperature (default 1; 0 = greedy)\n"
            "  --top-k K               keep the K most likely tokens (default 0 = off)\n"
            "  --top-p P               nucleus sampling (default 1 = off)\n"
            "  --min-p P               drop tokens below P x the top probability (default 0.05)\n"
            "  --repeat-penalty R      repetition penalty over the last 64 tokens (default 1 = off)\n"
            "  --seed S                sampler seed (default: from the clock)\n"
            "  -t, --threads N         worker threads (default: all CPUs)\n"
            "  --numerics MODE         model (default: FP8/FP4 simulation as released) or reference\n"
            "  --backend B             cpu, cuda or auto (default: cuda when built with it and a GPU\n"
            "                          is present, else cpu)\n"
            "  --gpu-expert-cache-mb N VRAM for routed experts with --backend cuda (default: what fits)\n"
            "  --dump-tokens           print the tokens of the prompt (id TAB JSON piece) and exit;\n"
            "                          with --chat, of the rendered chat prompt\n"
            "  -h, --help              this text\n"
            "\n"
            "Engine checking hook:\n"
            "  --tokens 1,5,9 | --tokens-file FILE  --dump-logits OUT.f32\n"
            "        [--decode-from K] [--chunk N]   write f32 logits [n_tokens x vocab]\n"
            "\n"
            "Reasoning is printed dimmed on a terminal; when stdout is not a terminal it goes\n"
            "to stderr, so stdout holds only the answer.  Statistics go to stderr.\n"
            "Exit status: 0 ok, 1 runtime error, 2 usage error, 130 interrupted.\n",
            DS4_CLI_DEFAULT_MODEL, DS4_CLI_DEMO_MAX_TOKENS, DS4_CLI_DEFAULT_CTX, DS4_THINK_MAX_MIN_CTX);
    fputc('\n', f);
    ds4_experts_usage(f);
    fprintf(f, "  --stats                 print expert-cache statistics after generation\n");
}

static int bad(const char *flag, const char *v, const char *what) {
    fprintf(stderr, "ds4: %s expects %s, got '%s'\n", flag, what, v);
    return DS4_EXIT_USAGE;
}

static int parse_long(const char *flag, const char *v, long lo, long hi, long *out) {
    ds4_err e = {{0}};
    long long x;
    if (ds4_parse_int(flag, v, lo, hi, &x, &e)) {
        fprintf(stderr, "ds4: %s\n", e.msg);
        return DS4_EXIT_USAGE;
    }
    *out = (long)x;
    return 0;
}

static int parse_float(const char *flag, const char *v, double lo, double hi, float *out) {
    ds4_err e = {{0}};
    double x;
    if (ds4_parse_real(flag, v, lo, hi, 0, &x, &e)) {
        fprintf(stderr, "ds4: %s\n", e.msg);
        return DS4_EXIT_USAGE;
    }
    *out = (float)x;
    return 0;
}

int ds4_cli_parse(int argc, char **argv, ds4_cli_opts *o) {
    memset(o, 0, sizeof *o);
    o->n_predict = -1;
    o->ctx = DS4_CLI_DEFAULT_CTX;
    o->mode = DS4_THINK_HIGH;
    samp_params_default(&o->samp);
    o->numerics = DS4_NUMERICS_MODEL;
    int mode_flags = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        long x;
        int rc = 0;
#define NEED_ARG()                                                                  \
    do {                                                                            \
        if (!v) {                                                                   \
            fprintf(stderr, "ds4: %s needs an argument (see ds4 --help)\n", a);      \
            return DS4_EXIT_USAGE;                                                  \
        }                                                                           \
        i++;                                                                        \
    } while (0)
        ds4_err xerr = {{0}};
        int xr = ds4_experts_parse_arg(&o->experts, argc, argv, &i, &xerr);
        if (xr < 0) { fprintf(stderr, "ds4: %s\n", xerr.msg); return DS4_EXIT_USAGE; }
        if (xr > 0) continue;
        if (!strcmp(a, "--stats")) { o->stats = 1; continue; }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) o->help = 1;
        else if (!strcmp(a, "-m") || !strcmp(a, "--model")) { NEED_ARG(); o->model_path = v; }
        else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) { NEED_ARG(); o->prompt = v; }
        else if (!strcmp(a, "--prompt-file")) { NEED_ARG(); o->prompt_file = v; }
        else if (!strcmp(a, "--system")) { NEED_ARG(); o->system = v; }
        else if (!strcmp(a, "-n") || !strcmp(a, "--n-predict")) {
            NEED_ARG();
            if (!(rc = parse_long(a, v, 1, 1L << 30, &x))) o->n_predict = x;
        } else if (!strcmp(a, "--ctx")) {
            NEED_ARG();
            if (!(rc = parse_long(a, v, 16, 1L << 24, &x))) o->ctx = (uint32_t)x;
        } else if (!strcmp(a, "--think")) { o->mode = DS4_THINK_HIGH; mode_flags++; }
        else if (!strcmp(a, "--nothink")) { o->mode = DS4_THINK_NONE; mode_flags++; }
        else if (!strcmp(a, "--think-max")) { o->mode = DS4_THINK_MAX; mode_flags++; }
        else if (!strcmp(a, "--temp")) { NEED_ARG(); rc = parse_float(a, v, 0, 100, &o->samp.temperature); }
        else if (!strcmp(a, "--top-k")) {
            NEED_ARG();
            if (!(rc = parse_long(a, v, 0, 1L << 24, &x))) o->samp.top_k = (int32_t)x;
        } else if (!strcmp(a, "--top-p")) { NEED_ARG(); rc = parse_float(a, v, 0, 1, &o->samp.top_p); }
        else if (!strcmp(a, "--min-p")) { NEED_ARG(); rc = parse_float(a, v, 0, 1, &o->samp.min_p); }
        else if (!strcmp(a, "--repeat-penalty")) {
            NEED_ARG();
            rc = parse_float(a, v, 1e-3, 100, &o->samp.repetition_penalty);
        } else if (!strcmp(a, "--seed")) {
            NEED_ARG();
            if (!(rc = parse_long(a, v, 0, 0x7fffffffL, &x))) o->samp.seed = x;
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            NEED_ARG();
            if (!(rc = parse_long(a, v, 0, 4096, &x))) o->threads = (int)x;
        } else if (!strcmp(a, "--numerics")) {
            NEED_ARG();
            if (!strcmp(v, "reference")) o->numerics = DS4_NUMERICS_REFERENCE;
            else if (!strcmp(v, "model")) o->numerics = DS4_NUMERICS_MODEL;
            else rc = bad(a, v, "'model' or 'reference'");
        } else if (!strcmp(a, "--backend")) {
            NEED_ARG();
            int b = ds4_backend_parse(v);
            if (b < 0) rc = bad(a, v, "'cpu', 'cuda' or 'auto'");
            else if (b == DS4_BACKEND_CUDA && !ds4_backend_cuda_built())
                rc = bad(a, v, "a backend this build has (CUDA needs `make cuda`)");
            else o->backend = (enum ds4_backend)b;
        } else if (!strcmp(a, "--gpu-expert-cache-mb")) {
            NEED_ARG();
            if (!(rc = parse_long(a, v, 0, 1L << 30, &x))) o->gpu_expert_cache_mb = (uint64_t)x;
        } else if (!strcmp(a, "--dump-tokens")) o->dump_tokens = 1;
        else if (!strcmp(a, "--chat")) o->chat = 1;
        else if (!strcmp(a, "--demo")) o->demo = 1;
        else if (!strcmp(a, "--tokens")) { NEED_ARG(); o->tokens = v; }
        else if (!strcmp(a, "--tokens-file")) { NEED_ARG(); o->tokens_file = v; }
        else if (!strcmp(a, "--dump-logits")) { NEED_ARG(); o->dump_logits = v; }
        else if (!strcmp(a, "--decode-from")) {
            NEED_ARG();
            if (!(rc = parse_long(a, v, 0, 1L << 24, &x))) o->decode_from = (int)x;
        } else if (!strcmp(a, "--chunk")) {
            NEED_ARG();
            if (!(rc = parse_long(a, v, 0, 1L << 24, &x))) o->chunk = (int)x;
        } else {
            fprintf(stderr, "ds4: unknown option '%s' (see ds4 --help)\n", a);
            return DS4_EXIT_USAGE;
        }
#undef NEED_ARG
        if (rc) return rc;
    }
    if (o->help) return 0;
    if (mode_flags > 1) {
        fprintf(stderr, "ds4: use only one of --think, --nothink, --think-max\n");
        return DS4_EXIT_USAGE;
    }
    if (o->prompt && o->prompt_file) {
        fprintf(stderr, "ds4: use either -p or --prompt-file, not both\n");
        return DS4_EXIT_USAGE;
    }
    if (o->prompt && !*o->prompt) {
        fprintf(stderr, "ds4: empty prompt (-p \"\"): give the text to answer, or omit -p for interactive chat\n");
        return DS4_EXIT_USAGE;
    }
    if (o->chat && !o->dump_tokens) {
        fprintf(stderr, "ds4: --chat only goes with --dump-tokens\n");
        return DS4_EXIT_USAGE;
    }
    if (o->dump_tokens && !o->prompt && !o->prompt_file) {
        fprintf(stderr, "ds4: --dump-tokens needs -p TEXT or --prompt-file FILE\n");
        return DS4_EXIT_USAGE;
    }
    int hook = o->tokens || o->tokens_file || o->dump_logits;
    if (hook && (!o->dump_logits || (!o->tokens && !o->tokens_file))) {
        fprintf(stderr, "ds4: the checking hook needs --dump-logits OUT and --tokens IDS or --tokens-file FILE\n");
        return DS4_EXIT_USAGE;
    }
    if (hook && (o->prompt || o->prompt_file || o->dump_tokens || o->demo)) {
        fprintf(stderr, "ds4: --dump-logits cannot be combined with prompts, --dump-tokens or --demo\n");
        return DS4_EXIT_USAGE;
    }
    return 0;
}
