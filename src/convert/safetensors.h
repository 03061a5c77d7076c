/* Read-only access to safetensors checkpoints (one file or many shards).
 *
 * What.  ds4_st_open() maps a .safetensors file, or a checkpoint directory
 * (model.safetensors.index.json → the shards its weight_map names, else
 * model.safetensors, else every *.safetensors file in name order), parses
 * each JSON header with jansson and exposes the tensors by name.  Data is not
 * copied: ds4_st_tensor.data points into the read-only mapping and stays
 * valid until ds4_st_close().  The converter reads a 150 GB checkpoint this
 * way with memory bounded by the page cache.
 *
 * Validation at open (each failure names the file and tensor): header length
 * within the file, valid JSON object, every entry with a known dtype, a shape
 * of non-negative integers (rank <= 8) and data_offsets [begin, end] with
 * begin <= end <= data-section size, end - begin == product(shape) x dtype
 * size (overflow-checked), no two tensors overlapping, no duplicate names
 * across shards, and (sharded) every weight_map entry found in the shard it
 * names.  A truncated or corrupt file gives an error, never a crash.
 *
 * dtypes: F32, F16, BF16, F8_E4M3, F8_E8M0, I8, U8, I32, I64 (others are
 * refused at open with their name).  Shapes are in safetensors (PyTorch)
 * order: shape[0] is the outermost dimension, i.e. HF [out, in].
 *
 * Threads: immutable after open; any number of threads may read. */
#ifndef DS4_CONVERT_SAFETENSORS_H
#define DS4_CONVERT_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

#define DS4_ST_MAX_DIMS 8

enum ds4_st_dtype {
    DS4_ST_F32,
    DS4_ST_F16,
    DS4_ST_BF16,
    DS4_ST_F8_E4M3,
    DS4_ST_F8_E8M0,
    DS4_ST_I8,
    DS4_ST_U8,
    DS4_ST_I32,
    DS4_ST_I64,
    DS4_ST_DTYPE_COUNT
};

typedef struct ds4_st_tensor {
    const char *name;           /* owned by the ds4_st */
    enum ds4_st_dtype dtype;
    int n_dims;
    int64_t shape[DS4_ST_MAX_DIMS];
    int64_t n_elem;
    const uint8_t *data;        /* into the mapping (not aligned in general) */
    uint64_t nbytes;
    int file;                   /* index of the shard holding it */
} ds4_st_tensor;

typedef struct ds4_st ds4_st;

/* path: a .safetensors file or a checkpoint directory (see above). */
ds4_st *ds4_st_open(const char *path, ds4_err *err);
void ds4_st_close(ds4_st *st);

int ds4_st_count(const ds4_st *st);
/* Tensors sorted by name. */
const ds4_st_tensor *ds4_st_at(const ds4_st *st, int i);
/* NULL if absent. */
const ds4_st_tensor *ds4_st_find(const ds4_st *st, const char *name);
/* Index of a tensor returned by ds4_st_find/ds4_st_at. */
int ds4_st_index(const ds4_st *st, const ds4_st_tensor *t);
const char *ds4_st_file_path(const ds4_st *st, int file);
uint64_t ds4_st_total_bytes(const ds4_st *st);

size_t ds4_st_dtype_size(enum ds4_st_dtype t);
const char *ds4_st_dtype_name(enum ds4_st_dtype t);
/* "[a, b, c]" into buf; returns buf. */
char *ds4_st_shape_str(const int64_t *shape, int n_dims, char *buf, size_t n);

#endif
