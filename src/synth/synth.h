/* Synthetic models built in memory (no file): the Flash shape for the GPU
 * throughput run, where the q2 file (81 GB) does not fit the device disk.
 *
 * What.  ds4_synth_open() lays out exactly the GGUF that ds4-mkmodel would
 * write for (hp, recipe): the header comes from the same gguf writer (so
 * metadata, tensor order, types, offsets and alignment are the file's), the
 * data section is an anonymous mapping filled in place, and the model is
 * bound with ds4_model_from_gguf(gguf_open_mem()).  So every engine path,
 * including expert copies from the "file image", sees what a file would
 * give.
 *
 * Values.  F32/F16/BF16/Q8_0 tensors get ds4-mkmodel's rows (same seed →
 * same values as the file ds4-mkmodel writes, quantized with the reference
 * from_float).  K-quant and IQ2_XXS tensors (the routed experts of the q2/q4
 * recipes, ~99% of the bytes) get random blocks with sane scales instead:
 * the search-based encoders would take hours for 80 GB, and throughput
 * depends only on the layout.  Deterministic for a seed.
 *
 * The header is written through a temporary file (TMPDIR or /tmp, a few
 * hundred KB), which is removed before returning. */
#ifndef DS4_SYNTH_H
#define DS4_SYNTH_H

#include <stddef.h>
#include <stdint.h>

#include "model/model.h"
#include "util/err.h"

typedef struct ds4_synth {
    ds4_model *model;
    void *image;          /* the GGUF image (mmap'd), header + data */
    size_t image_bytes;
} ds4_synth;

/* n_threads <= 0: all online CPUs. */
ds4_synth *ds4_synth_open(const ds4_hparams *hp, const char *recipe, uint64_t seed, int n_threads, ds4_err *err);
void ds4_synth_free(ds4_synth *s);

#endif
