/* Synthetic DeepSeek V4 models with random weights (ds4-mkmodel).
 *
 * What.  ds4_mkmodel() writes a deepseek4 GGUF of any shape through the same
 * schema-driven emitter as the converter (convert/emit.h), with random
 * weights scaled like the golden tiny-b reference (shared/golden/
 * gen_golden.py), so a correct forward pass gives finite, non-degenerate
 * logits:
 *   matrices (incl. HC fn, APE)   N(0,1)/sqrt(fan_in), fan_in = ne0
 *   norm weights                  1 + 0.1·N(0,1)
 *   other vectors (HC scale/base, sinks, router bias)   0.2·N(0,1)
 *   tid2eid                       per token, n_expert_used distinct ids
 * N(0,1) is approximated by a scaled sum of four uniforms (pure integer and
 * float arithmetic, no libm), so files are identical on every platform.
 *
 * Determinism.  Every row is generated from its own stream seeded by
 * (seed, tensor name, expert, row) with splitmix64, so the bytes depend only
 * on the arguments, never on thread count, chunking, time or addresses:
 * same hparams + recipe + seed (+ tokenizer) → byte-identical file.
 *
 * Memory is bounded like the converter's: the flash preset streams ~300 GB
 * (q8_0) without holding the model. */
#ifndef DS4_CONVERT_MKMODEL_H
#define DS4_CONVERT_MKMODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "convert/emit.h"
#include "model/model.h"
#include "util/err.h"

/* Presets: "tiny" (golden tiny-b shapes, vocab 2048), "small" (~1.2 GB at
 * q8_0, every row a multiple of 256 so q2/q4 use real K-/IQ-quants),
 * "flash" (ds4_hparams_preset_flash, with MTP).  -1 for an unknown name. */
int ds4_mkmodel_preset(const char *preset, ds4_hparams *hp, ds4_err *err);

/* Sets n_layer and regenerates the layer schedule the presets use: ratio 0
 * for layers 0 and 1, then alternating 4, 128 (as Flash); the MTP entry 0;
 * hash layers clipped to n_layer. */
void ds4_mkmodel_set_layers(ds4_hparams *hp, uint32_t n_layer);

typedef struct ds4_mkmodel_opts {
    const char *recipe;          /* NULL = "q8_0" */
    uint64_t seed;
    const char *tokenizer_json;  /* when set, vocab = tokenizer size */
    const char *name;            /* general.name; NULL = "ds4-mkmodel" */
    int n_threads;               /* 0 = all online CPUs */
    bool dry_run;                /* only compute stats->data_bytes, write nothing */
    ds4_progress_fn progress;
    void *progress_ud;
} ds4_mkmodel_opts;

/* The generator's rows of schema tensor s (slice = expert for stacked
 * tensors): exactly the values ds4_mkmodel() would write for that seed,
 * before quantization.  Used by the in-memory synthetic model (synth/). */
int ds4_mkmodel_rows(uint64_t seed, const ds4_hparams *hp, const ds4_tensor_spec *s, int64_t slice, int64_t row0,
                     int64_t nrows, float *dst, ds4_err *err);

/* hp is copied; its n_vocab is replaced by the tokenizer's size if one is given. */
int ds4_mkmodel(const char *out_path, const ds4_hparams *hp, const ds4_mkmodel_opts *opts, ds4_emit_stats *stats,
                ds4_err *err);

#endif
