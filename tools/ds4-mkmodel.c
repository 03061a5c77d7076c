/* ds4-mkmodel: synthetic DeepSeek V4 GGUF with random weights.
 * Thin main over ds4_mkmodel() (src/convert/mkmodel.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convert/mkmodel.h"
#include "convert/progress.h"
#include "quant/quant.h"
#include "util/num.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: ds4-mkmodel [options] OUT.gguf\n"
            "\n"
            "Writes a deepseek4 GGUF with deterministic random weights (same arguments and\n"
            "seed give a byte-identical file).\n"
            "\n"
            "  --preset P        tiny (golden tiny-b shapes, default), small (~1.2 GB at q8_0),\n"
            "                    flash (the real Flash shape with MTP; ~300 GB at q8_0, streamed)\n"
            "  --recipe R        f32, bf16, f16, q8_0 (default), q2, q4 (see ds4-convert --help)\n"
            "  --seed N          PRNG seed (default 1)\n"
            "  --tokenizer FILE  embed this tokenizer.json; the vocab becomes its size\n"
            "  --name NAME       general.name\n"
            "  --threads N       worker threads (default: all CPUs)\n"
            "  --dry-run         print the size the file would have, write nothing\n"
            "shape overrides (after the preset):\n"
            "  --layers N  --embd N  --vocab N  --heads N  --head-dim N  --rope-dim N\n"
            "  --q-lora N  --o-groups N  --o-lora N  --window N  --experts N  --experts-used N\n"
            "  --shared N  --ff N  --hash N  --idx-heads N  --idx-dim N  --idx-topk N\n"
            "  --hc N  --mtp 0|1\n"
            "  (--layers regenerates the schedule: ratios 0,0 then 4,128,4,...)\n");
}

int main(int argc, char **argv) {
    const char *preset = "tiny", *out = NULL;
    ds4_mkmodel_opts o = {0};
    o.seed = 1;
    struct { const char *opt; long v; } ov[] = {
        {"--layers", -1}, {"--embd", -1}, {"--vocab", -1}, {"--heads", -1}, {"--head-dim", -1}, {"--rope-dim", -1},
        {"--q-lora", -1}, {"--o-groups", -1}, {"--o-lora", -1}, {"--window", -1}, {"--experts", -1},
        {"--experts-used", -1}, {"--shared", -1}, {"--ff", -1}, {"--hash", -1}, {"--idx-heads", -1},
        {"--idx-dim", -1}, {"--idx-topk", -1}, {"--hc", -1}, {"--mtp", -1},
    };
    int nov = (int)(sizeof ov / sizeof *ov);
    ds4_err nerr = {{0}};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool more = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        if (!strcmp(a, "--preset") && more) { preset = argv[++i]; continue; }
        if (!strcmp(a, "--recipe") && more) { o.recipe = argv[++i]; continue; }
        if (!strcmp(a, "--seed") && more) {
            uint64_t x;
            if (ds4_parse_uint(a, argv[++i], 0, UINT64_MAX, &x, &nerr)) { fprintf(stderr, "ds4-mkmodel: %s\n", nerr.msg); return 2; }
            o.seed = x;
            continue;
        }
        if (!strcmp(a, "--tokenizer") && more) { o.tokenizer_json = argv[++i]; continue; }
        if (!strcmp(a, "--name") && more) { o.name = argv[++i]; continue; }
        if (!strcmp(a, "--threads") && more) {
            long long x;
            if (ds4_parse_int(a, argv[++i], 0, 4096, &x, &nerr)) { fprintf(stderr, "ds4-mkmodel: %s\n", nerr.msg); return 2; }
            o.n_threads = (int)x;
            continue;
        }
        if (!strcmp(a, "--dry-run")) { o.dry_run = true; continue; }
        int k = -1;
        for (int j = 0; j < nov; j++)
            if (!strcmp(a, ov[j].opt)) k = j;
        if (k >= 0 && more) {
            long long x;
            if (ds4_parse_int(a, argv[++i], 0, UINT32_MAX, &x, &nerr)) { fprintf(stderr, "ds4-mkmodel: %s\n", nerr.msg); return 2; }
            ov[k].v = (long)x;
            continue;
        }
        if (a[0] == '-' && a[1]) { fprintf(stderr, "ds4-mkmodel: unknown or incomplete option '%s'\n", a); usage(stderr); return 2; }
        if (out) { usage(stderr); return 2; }
        out = a;
    }
    if (!out) { usage(stderr); return 2; }
    ds4_err err = {{0}};
    ds4_hparams hp;
    if (ds4_mkmodel_preset(preset, &hp, &err)) { fprintf(stderr, "ds4-mkmodel: %s\n", err.msg); return 2; }
    if (ov[19].v >= 0) hp.n_mtp = ov[19].v ? 1 : 0;
    if (ov[14].v >= 0) hp.n_hash = (uint32_t)ov[14].v;
    if (ov[0].v >= 0) {
        if (ov[0].v < 1 || ov[0].v > DS4_MAX_LAYERS - 1) { fprintf(stderr, "ds4-mkmodel: --layers out of range\n"); return 2; }
        ds4_mkmodel_set_layers(&hp, (uint32_t)ov[0].v);
    }
    uint32_t *dst[] = {NULL, &hp.n_embd, &hp.n_vocab, &hp.n_head, &hp.head_dim, &hp.rope_dim, &hp.q_lora,
                       &hp.o_groups, &hp.o_lora, &hp.window, &hp.n_expert, &hp.n_expert_used, &hp.n_expert_shared,
                       &hp.expert_ff, NULL, &hp.idx_n_head, &hp.idx_head_dim, &hp.idx_topk, &hp.hc_mult, NULL};
    for (int j = 0; j < nov; j++)
        if (dst[j] && ov[j].v >= 0) *dst[j] = (uint32_t)ov[j].v;
    ds4_progress_state ps;
    ds4_progress_init(&ps);
    o.progress = ds4_progress_bar;
    o.progress_ud = &ps;
    ds4_emit_stats st;
    int rc = ds4_mkmodel(out, &hp, &o, &st, &err);
    ds4_progress_end(&ps);
    if (rc) { fprintf(stderr, "ds4-mkmodel: %s\n", err.msg); return 1; }
    if (o.dry_run) {
        printf("%s: preset %s, recipe %s: %d tensors, %.3f GB of tensor data\n", out, preset, o.recipe ? o.recipe : "q8_0",
               st.n_tensors, st.data_bytes / 1e9);
        return 0;
    }
    fprintf(stderr, "ds4-mkmodel: wrote %s: preset %s, seed %llu, %d tensors, %.1f MB of data, recipe %s, %.1f s\n", out,
            preset, (unsigned long long)o.seed, st.n_tensors, st.data_bytes / 1e6, o.recipe ? o.recipe : "q8_0",
            ds4_progress_now() - ps.start);
    return 0;
}
