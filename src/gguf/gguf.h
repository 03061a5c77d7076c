/* GGUF v3: an mmap-based reader and a streaming writer.
 *
 * Reader.  gguf_open() maps the whole file read-only and parses the header,
 * the metadata key/values and the tensor directory.  Every length, count,
 * offset and size is checked against the file length before it is used, so a
 * truncated or corrupt file yields NULL and a message naming the problem
 * ("tensor 'blk.0.attn_q_a.weight': data [off, off+size) past end of file (N
 * bytes)"), never a crash.  Tensor data is not copied: gguf_tensor.data points
 * into the mapping and stays valid until gguf_close().  Versions 2 and 3 are
 * accepted (same layout, 64-bit counts).
 *
 * Strings in the file are not NUL-terminated; they are exposed as gguf_str
 * (pointer into the mapping + length).  The typed getters convert between
 * integer widths when the value fits, so a key written as u64 by one tool and
 * u32 by another reads the same.
 *
 * Writer.  The caller declares every key/value and every tensor (name, type,
 * shape) first, then streams tensor data in declaration order, one call per
 * tensor or in pieces; the writer pads to the alignment.  Memory use is
 * O(metadata), so files far larger than RAM can be written.  The file is
 * written to PATH.tmp and renamed into place by gguf_writer_finish(), so a
 * crashed conversion never leaves a half-written file under the final name.
 *
 * Validation done at open (each failure is an error naming the key/tensor):
 * magic, version 2/3, counts that cannot fit in the bytes left, string
 * lengths, array counts x element size (overflow-checked), unknown value
 * types, nested arrays, bool bytes other than 0/1, duplicate keys,
 * general.alignment (integer, power of two), n_dims <= 4, ne[i] > 0, element
 * count and byte size overflow, tensor types unknown to quant/quant.h, ne0 not
 * a multiple of the block size, offsets not aligned, data past end of file,
 * overlapping tensor data, duplicate tensor names.  A file may omit the
 * padding after the last tensor's data.
 *
 * Threads: a gguf_file is immutable after open; any number of threads may
 * read it.  A gguf_writer belongs to one thread.
 *
 * Writer errors are sticky: after the first failure every call returns -1 and
 * gguf_writer_error() keeps the first message.  Adding "general.alignment"
 * (directly, via copy_kv, or via set_alignment) sets the alignment used for
 * the data, so a file copied key by key keeps its layout. */
#ifndef DS4_GGUF_H
#define DS4_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

#define GGUF_MAGIC 0x46554747u /* "GGUF" little-endian */
#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_DIMS 4

enum gguf_vtype {
    GGUF_TYPE_UINT8 = 0,
    GGUF_TYPE_INT8 = 1,
    GGUF_TYPE_UINT16 = 2,
    GGUF_TYPE_INT16 = 3,
    GGUF_TYPE_UINT32 = 4,
    GGUF_TYPE_INT32 = 5,
    GGUF_TYPE_FLOAT32 = 6,
    GGUF_TYPE_BOOL = 7,
    GGUF_TYPE_STRING = 8,
    GGUF_TYPE_ARRAY = 9,
    GGUF_TYPE_UINT64 = 10,
    GGUF_TYPE_INT64 = 11,
    GGUF_TYPE_FLOAT64 = 12,
    GGUF_TYPE_COUNT
};

typedef struct gguf_str {
    const char *ptr; /* not NUL-terminated */
    uint64_t len;
} gguf_str;

typedef struct gguf_kv {
    gguf_str key;
    enum gguf_vtype type;      /* GGUF_TYPE_ARRAY for arrays */
    enum gguf_vtype arr_type;  /* element type when type == ARRAY */
    uint64_t arr_n;            /* element count when type == ARRAY */
    const uint8_t *val;        /* value bytes (scalar, string length prefix, or first array element) */
    const gguf_str *strs;      /* for string arrays: arr_n entries, built at open */
} gguf_kv;

typedef struct gguf_tensor {
    gguf_str name;
    uint32_t n_dims;
    int64_t ne[GGUF_MAX_DIMS]; /* unused dims are 1 */
    int type;                  /* ggml type id, see quant/quant.h */
    uint64_t offset;           /* relative to the data section */
    const void *data;          /* into the mapping */
    uint64_t nbytes;
} gguf_tensor;

typedef struct gguf_file gguf_file;

gguf_file *gguf_open(const char *path, ds4_err *err);
/* Parses an in-memory image (not copied; must outlive the handle). For tests and fuzzing. */
gguf_file *gguf_open_mem(const void *buf, size_t len, ds4_err *err);
void gguf_close(gguf_file *f);

uint32_t gguf_version(const gguf_file *f);
uint32_t gguf_alignment(const gguf_file *f);
const char *gguf_path(const gguf_file *f);          /* "<memory>" for gguf_open_mem */
size_t gguf_file_size(const gguf_file *f);
const void *gguf_base(const gguf_file *f);        /* start of the mapping */
uint64_t gguf_data_offset(const gguf_file *f);    /* file offset of the data section */

/* Metadata. */
int64_t gguf_n_kv(const gguf_file *f);
const gguf_kv *gguf_kv_at(const gguf_file *f, int64_t i);
const gguf_kv *gguf_find_kv(const gguf_file *f, const char *key);
bool gguf_str_eq(gguf_str s, const char *c);
/* Copies s into buf as a NUL-terminated string (truncating); returns buf. */
char *gguf_str_copy(gguf_str s, char *buf, size_t buflen);
const char *gguf_type_name(enum gguf_vtype t);
/* Bytes of one scalar of type t; 0 for STRING, ARRAY and invalid types. */
size_t gguf_vtype_size(enum gguf_vtype t);
/* Data size of a tensor of ggml type `type` and shape ne[0..n_dims) (n_dims
 * <= 4), checking type, ne[i] > 0, block size and overflow. 0 / -1 + err. */
int gguf_tensor_nbytes(int type, uint32_t n_dims, const int64_t *ne, uint64_t *out, ds4_err *err);

/* Typed getters. Return 0 on success, -1 if the key is missing, -2 if it has
 * an incompatible type or an out-of-range value; err (if given) explains. */
int gguf_get_u32(const gguf_file *f, const char *key, uint32_t *out, ds4_err *err);
int gguf_get_u64(const gguf_file *f, const char *key, uint64_t *out, ds4_err *err);
int gguf_get_i64(const gguf_file *f, const char *key, int64_t *out, ds4_err *err);
int gguf_get_f32(const gguf_file *f, const char *key, float *out, ds4_err *err); /* f32 or f64 */
int gguf_get_bool(const gguf_file *f, const char *key, bool *out, ds4_err *err);
int gguf_get_str(const gguf_file *f, const char *key, gguf_str *out, ds4_err *err);
/* Array element access with conversion; kv must be an array. Return 0 / -2. */
int gguf_arr_i64(const gguf_kv *kv, uint64_t i, int64_t *out);
int gguf_arr_f32(const gguf_kv *kv, uint64_t i, float *out);
gguf_str gguf_arr_str(const gguf_kv *kv, uint64_t i); /* {NULL,0} if not a string array */

/* Tensors. */
int64_t gguf_n_tensors(const gguf_file *f);
const gguf_tensor *gguf_tensor_at(const gguf_file *f, int64_t i);
const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name);

/* ---- Writer ---- */
typedef struct gguf_writer gguf_writer;

gguf_writer *gguf_writer_open(const char *path, ds4_err *err);
void gguf_writer_set_alignment(gguf_writer *w, uint32_t alignment); /* also writes general.alignment */

int gguf_writer_add_u32(gguf_writer *w, const char *key, uint32_t v);
int gguf_writer_add_i32(gguf_writer *w, const char *key, int32_t v);
int gguf_writer_add_u64(gguf_writer *w, const char *key, uint64_t v);
int gguf_writer_add_f32(gguf_writer *w, const char *key, float v);
int gguf_writer_add_bool(gguf_writer *w, const char *key, bool v);
int gguf_writer_add_str(gguf_writer *w, const char *key, const char *v);
/* Any scalar numeric or bool type; v points to one value in host format. */
int gguf_writer_add_scalar(gguf_writer *w, const char *key, enum gguf_vtype type, const void *v);
/* Numeric array: n elements of elem_type, packed little-endian in data. */
int gguf_writer_add_arr(gguf_writer *w, const char *key, enum gguf_vtype elem_type, const void *data, uint64_t n);
int gguf_writer_add_arr_str(gguf_writer *w, const char *key, const char *const *strs, uint64_t n);
/* Copies one key/value (any type) from a reader, e.g. tokenizer metadata. */
int gguf_writer_copy_kv(gguf_writer *w, const gguf_kv *kv);

/* Declares a tensor; data size follows from type and shape. Returns its index or -1. */
int gguf_writer_add_tensor(gguf_writer *w, const char *name, int type, uint32_t n_dims, const int64_t *ne);

/* Writes header, metadata and tensor directory. Call once after all declarations. */
int gguf_writer_begin_data(gguf_writer *w);
/* Appends bytes of the current tensor (tensors in declaration order). When a
 * tensor's bytes are complete the writer pads and moves to the next one. */
int gguf_writer_write(gguf_writer *w, const void *data, size_t n);
/* Checks every tensor was written in full, fsyncs, renames PATH.tmp → PATH. */
int gguf_writer_finish(gguf_writer *w);
/* Frees the writer; removes PATH.tmp if finish did not succeed. */
void gguf_writer_free(gguf_writer *w);
const char *gguf_writer_error(const gguf_writer *w);

#endif
