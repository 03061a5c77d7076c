/* ds4-convert: official DeepSeek V4 Hugging Face checkpoint → deepseek4 GGUF.
 * Thin main over ds4_convert_ex() (src/convert/convert.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convert/convert.h"
#include "convert/progress.h"
#include "quant/quant.h"
#include "util/num.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: ds4-convert [options] HF_DIR OUT.gguf\n"
            "\n"
            "Converts an official DeepSeek V4 checkpoint (config.json + safetensors, sharded\n"
            "or not; BF16/FP8/FP4 weights) into a deepseek4 GGUF.\n"
            "\n"
            "  --recipe R        storage types (default " DS4_CONVERT_DEFAULT_RECIPE "):\n"
            "                      f32   everything F32 (lossless, large)\n"
            "                      bf16  matrices BF16, vectors/HC F32 (lossless for BF16 sources)\n"
            "                      f16   matrices F16\n"
            "                      q8_0  matrices Q8_0 (default)\n"
            "                      q2    ds4's published layout: experts IQ2_XXS/Q2_K, rest Q8_0/F16\n"
            "                      q4    ds4's published layout: experts Q4_K, rest Q8_0/F16\n"
            "  --tokenizer FILE  tokenizer.json to embed (default: HF_DIR/tokenizer.json if present)\n"
            "  --no-tokenizer    do not embed HF_DIR/tokenizer.json\n"
            "  --no-mtp          leave out the MTP block (mtp.0.*), e.g. for llama.cpp\n"
            "  --name NAME       general.name (default: HF_DIR's base name)\n"
            "  --threads N       worker threads (default: all CPUs)\n"
            "  --imatrix FILE    importance matrix (not supported yet)\n"
            "  -h, --help        this text\n");
}

int main(int argc, char **argv) {
    ds4_convert_opts o = {0};
    const char *pos[2];
    int npos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool more = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        else if (!strcmp(a, "--recipe") && more) o.recipe = argv[++i];
        else if (!strcmp(a, "--tokenizer") && more) o.tokenizer_json = argv[++i];
        else if (!strcmp(a, "--imatrix") && more) o.imatrix = argv[++i];
        else if (!strcmp(a, "--name") && more) o.name = argv[++i];
        else if (!strcmp(a, "--threads") && more) {
            long long x;
            ds4_err e = {{0}};
            if (ds4_parse_int(a, argv[++i], 0, 4096, &x, &e)) { fprintf(stderr, "ds4-convert: %s\n", e.msg); return 2; }
            o.n_threads = (int)x;
        }
        else if (!strcmp(a, "--no-mtp")) o.no_mtp = true;
        else if (!strcmp(a, "--no-tokenizer")) o.no_tokenizer = true;
        else if (a[0] == '-' && a[1]) { fprintf(stderr, "ds4-convert: unknown or incomplete option '%s'\n", a); usage(stderr); return 2; }
        else if (npos < 2) pos[npos++] = a;
        else { usage(stderr); return 2; }
    }
    if (npos != 2) { usage(stderr); return 2; }
    ds4_progress_state ps;
    ds4_progress_init(&ps);
    o.progress = ds4_progress_bar;
    o.progress_ud = &ps;
    ds4_emit_stats st;
    ds4_err err = {{0}};
    int rc = ds4_convert_ex(pos[0], pos[1], &o, &st, &err);
    ds4_progress_end(&ps);
    if (rc) { fprintf(stderr, "ds4-convert: %s\n", err.msg); return 1; }
    fprintf(stderr, "ds4-convert: wrote %s: %d tensors, %.1f MB of data, recipe %s, %.1f s (", pos[1], st.n_tensors,
            st.data_bytes / 1e6, o.recipe ? o.recipe : DS4_CONVERT_DEFAULT_RECIPE, ds4_progress_now() - ps.start);
    for (int t = 0, k = 0; t < 64; t++)
        if (st.n_by_type[t]) fprintf(stderr, "%s%s %d", k++ ? ", " : "", ds4_type_name(t), st.n_by_type[t]);
    fprintf(stderr, ")\n");
    return 0;
}
