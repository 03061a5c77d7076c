/* Official DeepSeek V4 Hugging Face checkpoint → deepseek4 GGUF.
 *
 * What.  ds4_convert() reads HF_DIR/config.json (convert/hfconfig.h) and
 * the safetensors shards (convert/safetensors.h), maps every tensor of the
 * schema (model/model.h: GGUF name, official HF name, shape) to its HF
 * source, decodes it to f32 and hands it to the shared emitter
 * (convert/emit.h), which quantizes it per the recipe and streams it out.
 *
 * Checked before anything is written (each failure names the tensor):
 *  - every schema tensor has its HF source(s); routed experts are one HF
 *    tensor per expert ("layers.N.ffn.experts.E.w1.weight"), stacked as ne2;
 *  - shapes: HF shape = GGUF ne reversed ("tensor 'X': expected shape
 *    [64, 128], found [64, 127]");
 *  - dtypes: F32/F16/BF16 as is; F8_E4M3 + "<base>.scale" (F8_E8M0 or F32,
 *    [ceil(out/128), ceil(in/128)]); FP4 experts as I8 [out, in/2] (low nibble
 *    = even element) + scale [out, in/32]; tid2eid I64/I32 with values in
 *    [0, n_routed_experts);
 *  - every HF tensor is used: an unknown one is "unknown tensor name 'X'".
 *    Nothing is skipped silently; the only deliberate skip is the MTP block
 *    when opts.no_mtp is set (llama.cpp refuses files with mtp.0.* tensors,
 *    it expects its own blk.L.nextn.* layout).
 *
 * MTP: mtp.0.* tensors are converted when the checkpoint has them (then
 * deepseek4.nextn_predict_layers = 1), whatever num_nextn_predict_layers
 * says; without them the file has no MTP block.
 *
 * Tokenizer: opts.tokenizer_json, else HF_DIR/tokenizer.json when present;
 * its size must equal vocab_size.  Without one the model still converts
 * (e.g. the golden tiny-b) and runs from token ids.
 *
 * Memory is bounded (one expert / ~8 M values at a time, see emit.h); the
 * checkpoint is mmapped, never read whole.  Threads: opts.n_threads. */
#ifndef DS4_CONVERT_CONVERT_H
#define DS4_CONVERT_CONVERT_H

#include <stdbool.h>

#include "convert/emit.h"
#include "util/err.h"

#define DS4_CONVERT_DEFAULT_RECIPE "q8_0"

typedef struct ds4_convert_opts {
    const char *recipe;          /* NULL = DS4_CONVERT_DEFAULT_RECIPE */
    const char *tokenizer_json;  /* NULL = HF_DIR/tokenizer.json if present */
    const char *imatrix;         /* importance matrix (not supported yet: must be NULL) */
    const char *name;            /* general.name; NULL = basename of HF_DIR */
    bool no_mtp;                 /* leave the MTP block out */
    bool no_tokenizer;           /* do not look for HF_DIR/tokenizer.json */
    int n_threads;               /* 0 = all online CPUs */
    ds4_progress_fn progress;
    void *progress_ud;
} ds4_convert_opts;

int ds4_convert_ex(const char *hf_dir, const char *out_path, const ds4_convert_opts *opts, ds4_emit_stats *stats,
                   ds4_err *err);

/* Convenience form with default options. */
int ds4_convert(const char *hf_dir, const char *out_path, const char *recipe, const char *tokenizer_json,
                const char *imatrix, ds4_progress_fn progress, void *progress_ud, ds4_err *err);

#endif
