/* Tensor element types: block layouts, conversion and dot-product kernels.
 *
 * Type ids and block layouts are ggml's (and so GGUF's), byte for byte, so the
 * published ds4/llama.cpp DeepSeek V4 GGUFs are used in place from the mmap.
 * Each type has one entry in a traits table: block size, bytes per block,
 * dequantize (to_float), reference quantize (from_float, NULL where the tools
 * never need it), and a dot kernel that multiplies one weight row by one
 * activation row already converted to the type's `vec_dot_type`:
 *
 *   weight type              vec_dot_type   (activation format)
 *   F32, F16, BF16           F32            exact f32 activations
 *   Q8_0                     Q8_0           int8, 32-blocks (as ds4/ggml CPU);
 *                                           every level sums in the scalar
 *                                           reference's order (simd.h)
 *   Q2_K, Q4_K, IQ2_XXS      Q8_K           int8, 256-blocks with block sums
 *
 * This file defines the interface; quant_ref.c holds the portable scalar
 * kernels (ds4_type_traits_ref).  SIMD variants (simd_*.c) replace entries of
 * the live table at first use after a CPUID check (dispatch.c, simd.h);
 * callers always go through ds4_type_traits_get(), so they never know which
 * variant runs.  Kernels never allocate and never fail: shapes are
 * validated once at model load (row length a multiple of the block size). */
#ifndef DS4_QUANT_H
#define DS4_QUANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum ds4_type {
    DS4_TYPE_F32 = 0,
    DS4_TYPE_F16 = 1,
    DS4_TYPE_Q8_0 = 8,
    DS4_TYPE_Q2_K = 10,
    DS4_TYPE_Q4_K = 12,
    DS4_TYPE_Q8_K = 15,
    DS4_TYPE_IQ2_XXS = 16,
    DS4_TYPE_I8 = 24,
    DS4_TYPE_I16 = 25,
    DS4_TYPE_I32 = 26,
    DS4_TYPE_I64 = 27,
    DS4_TYPE_F64 = 28,
    DS4_TYPE_BF16 = 30,
    DS4_TYPE_COUNT = 40 /* table size; ids without an entry are unsupported */
};

#define QK8_0 32
#define QK_K 256
#define K_SCALE_SIZE 12

typedef uint16_t ds4_fp16; /* IEEE half, raw bits */

/* ggml block layouts (sizes are checked by static asserts in quant_ref.c). */
typedef struct { ds4_fp16 d; int8_t qs[QK8_0]; } block_q8_0;                                /* 34 B */
typedef struct { uint8_t scales[QK_K / 16]; uint8_t qs[QK_K / 4]; ds4_fp16 d, dmin; } block_q2_K;   /* 84 B */
typedef struct { ds4_fp16 d, dmin; uint8_t scales[K_SCALE_SIZE]; uint8_t qs[QK_K / 2]; } block_q4_K; /* 144 B */
typedef struct { float d; int8_t qs[QK_K]; int16_t bsums[QK_K / 16]; } block_q8_K;          /* 292 B */
typedef struct { ds4_fp16 d; uint16_t qs[QK_K / 8]; } block_iq2_xxs;                         /* 66 B */

typedef void (*ds4_to_float_fn)(const void *src, float *dst, int64_t n);
typedef void (*ds4_from_float_fn)(const float *src, void *dst, int64_t n);
/* Quantize with per-column importance weights (imatrix); qw may be NULL. */
typedef void (*ds4_quantize_fn)(const float *src, void *dst, int64_t n, const float *qw);
/* Dot of n elements: w in the weight type, x in vec_dot_type. */
typedef float (*ds4_vec_dot_fn)(int64_t n, const void *w, const void *x);
/* A tile of dots: y[c*ldy + r] = vec_dot(n, w + r*ws, x + c*xs) for r < nr,
 * c < nc, 1 <= nr, nc <= DS4_TILE (strides in bytes).  Each result is
 * bit-identical to the same level's vec_dot, so the tiled prefill path and
 * the one-row decode path agree exactly; the tile only reuses loads. */
#define DS4_TILE 4
typedef void (*ds4_vec_dot_tile_fn)(int64_t n, const void *w, size_t ws, int nr, const void *x, size_t xs,
                                    int nc, float *y, int64_t ldy);

/* Panel GEMM, the prefill kernel: tokens across SIMD lanes.  pack()
 * rearranges ntok activation rows (in vec_dot_type, row stride xs bytes) into
 * ceil(ntok / panel_tokens) consecutive panels of panel_bytes(n) bytes each,
 * the level's layout, zero-padding the last panel.  gemm() then computes
 *
 *   y[t*ldy + r] = vec_dot(n, w + r*ws, x_t)     r < nr, t < ntok
 *
 * from those panels (`panels` points at a panel boundary, so a caller may
 * start at any multiple of panel_tokens), each result bit-identical to the
 * same level's vec_dot: how tokens are batched never changes a value.  Any
 * nr >= 1 and ntok >= 1; the kernel tiles internally.  NULL where the level
 * has no panel kernel for the type (ops.c then uses vec_dot_tile). */
typedef size_t (*ds4_panel_bytes_fn)(int64_t n);
typedef void (*ds4_panel_pack_fn)(int64_t n, const void *x, size_t xs, int ntok, void *panels);
typedef void (*ds4_panel_gemm_fn)(int64_t n, const void *w, size_t ws, int nr, const void *panels, int ntok,
                                  float *y, int64_t ldy);

typedef struct ds4_type_traits {
    const char *name;
    int64_t blck;          /* elements per block */
    size_t size;           /* bytes per block */
    bool quantized;
    ds4_to_float_fn to_float;
    ds4_from_float_fn from_float;   /* NULL if never produced */
    ds4_quantize_fn quantize;       /* importance-weighted variant; may be NULL */
    ds4_vec_dot_fn vec_dot;         /* NULL for non-matrix types (I32 ...) */
    enum ds4_type vec_dot_type;
    ds4_vec_dot_tile_fn vec_dot_tile; /* NULL: call vec_dot per (row, column) */
    int panel_tokens;                 /* lanes per panel; 0: no panel kernel */
    ds4_panel_bytes_fn panel_bytes;
    ds4_panel_pack_fn panel_pack;
    ds4_panel_gemm_fn panel_gemm;
} ds4_type_traits;

/* NULL for unknown or unsupported ids.  The live (dispatched) table; the
 * first call selects the SIMD level (see simd.h). */
const ds4_type_traits *ds4_type_traits_get(int type);
/* The scalar reference row, whatever level is live (tests, benchmarks). */
const ds4_type_traits *ds4_type_traits_ref(int type);
const char *ds4_type_name(int type);     /* "q8_0", or "type#N" for unknown */
int ds4_type_from_name(const char *name); /* -1 if unknown; case-insensitive */
/* Bytes of a row of n elements; 0 if n is not a multiple of the block size. */
size_t ds4_row_size(int type, int64_t n);

/* Scalar format conversions used across the engine and tools. */
float ds4_fp16_to_f32(ds4_fp16 h);
ds4_fp16 ds4_f32_to_fp16(float f);   /* round to nearest even */
float ds4_bf16_to_f32(uint16_t b);
uint16_t ds4_f32_to_bf16(float f);   /* round to nearest even, NaN kept */
float ds4_e8m0_to_f32(uint8_t b);    /* 2^(b-127); b = 0 -> 2^-127 */
float ds4_fp8_e4m3_to_f32(uint8_t b);/* E4M3FN; NaN codes decode to 0 */
float ds4_fp4_e2m1_to_f32(uint8_t nibble);
/* Round to the nearest representable value (ties to even mantissa), saturating. */
float ds4_round_fp8_e4m3(float x);
float ds4_round_fp4_e2m1(float x);

/* Quantize an activation row to the weight type's vec_dot_type. dst must hold
 * ds4_row_size(vec_dot_type, n) bytes (for F32 it is a plain copy). */
void ds4_quantize_row_for(int weight_type, const float *x, void *dst, int64_t n);

#endif
