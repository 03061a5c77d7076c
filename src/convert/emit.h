/* The GGUF-writing path shared by ds4-convert and ds4-mkmodel.
 *
 * What.  ds4_emit_gguf() writes a complete deepseek4 GGUF for hyper-
 * parameters hp: metadata (general.*, ds4_hparams_write_gguf, recipe,
 * optional tokenizer), then every tensor of the schema in schema order with
 * the recipe's storage type.  Tensor values come from a caller callback that
 * produces f32 rows; the emitter quantizes them and streams them to the
 * writer.  So the converter and the generator differ only in where rows come
 * from, and neither has its own tensor table.
 *
 * Memory.  Work goes in chunks of whole rows of one 2-D slice (one routed
 * expert of a stacked tensor at a time), about 8 M values per chunk, so peak
 * memory is a few tens of MB whatever the model size.  Rows of a chunk are
 * produced and quantized by up to n_threads threads; the callback must be
 * safe to call concurrently for disjoint row ranges, and its output must not
 * depend on how rows are split (the generator seeds per row).
 *
 * Tensors of role TID2EID are stored as I32: the callback returns the ids as
 * floats (exact below 2^24) and the emitter checks they are integers in
 * [0, n_expert).
 *
 * Output goes to PATH.tmp and is renamed on success (gguf writer), so a
 * failed run never leaves a file under the final name. */
#ifndef DS4_CONVERT_EMIT_H
#define DS4_CONVERT_EMIT_H

#include <stdbool.h>
#include <stdint.h>

#include "model/model.h"
#include "util/err.h"

/* Progress: bytes of tensor data written so far / in total, current tensor. */
typedef void (*ds4_progress_fn)(void *ud, const char *tensor, uint64_t done, uint64_t total);

/* Fills dst[nrows][ne0] with rows row0.. of slice `slice` (expert index for
 * stacked tensors, else 0) of schema tensor s. */
typedef int (*ds4_emit_rows_fn)(void *ud, const ds4_tensor_spec *s, int64_t slice, int64_t row0, int64_t nrows,
                                float *dst, ds4_err *err);

struct ds4_tokenizer;

typedef struct ds4_emit_opts {
    const char *recipe;                  /* ds4_recipe_type() name */
    const char *name;                    /* general.name */
    const struct ds4_tokenizer *tok;     /* written when non-NULL */
    int n_threads;                       /* 0 = online CPUs (at most 32) */
    ds4_progress_fn progress;
    void *progress_ud;
} ds4_emit_opts;

typedef struct ds4_emit_stats {
    int n_tensors;
    uint64_t data_bytes;                 /* tensor data written */
    int n_by_type[64];                   /* tensors per storage type id (< 64) */
} ds4_emit_stats;

/* skip[i] (may be NULL) leaves schema[i] out (absent optional tensors). */
int ds4_emit_gguf(const char *out_path, const ds4_hparams *hp, const ds4_tensor_spec *schema, int n_schema,
                  const bool *skip, ds4_emit_rows_fn rows, void *ud, const ds4_emit_opts *opts,
                  ds4_emit_stats *stats, ds4_err *err);

/* Tensor data bytes the file would hold (no file written): sizes a run
 * before committing disk to it (ds4-mkmodel --dry-run). */
int ds4_emit_data_size(const ds4_hparams *hp, const ds4_tensor_spec *schema, int n_schema, const bool *skip,
                       const char *recipe, uint64_t *bytes, ds4_err *err);

/* llama.cpp general.file_type for a recipe (e.g. q8_0 → 7), -1 for mixes
 * llama.cpp has no name for. */
int ds4_recipe_file_type(const char *recipe);

#endif
