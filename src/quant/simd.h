/* SIMD level selection for the quant kernels and the f32 vector helpers.
 *
 * Levels: "scalar" (quant_ref.c, always present), "avx2" (AVX2+FMA+F16C),
 * "avx512" (AVX-512 F/BW/VL/DQ + VNNI), "neon" (aarch64 builds only).  At the
 * first ds4_type_traits_get() / ds4_vec_*() call (or an explicit
 * ds4_simd_init()) the best level this CPU supports is installed into the
 * live traits table, once, under pthread_once.  DS4_SIMD=scalar|avx2|avx512
 * (or "ref") in the environment forces a level; an unsupported request falls
 * back to the best level with a note on stderr.
 *
 * Guarantees per kernel, relative to the scalar reference (tests/test_simd.c):
 *   Q2_K, Q4_K, IQ2_XXS · Q8_K   bit-identical (integer block sums are exact
 *                                and the per-block float steps run in the
 *                                reference's order)
 *   Q8_0 · Q8_0                  bit-identical: the canonical order, per
 *                                block an exact int32 sum, then
 *                                sum += (float)isum * (d_w * d_x) in f32,
 *                                blocks in order, mul then add (no FMA)
 *   F32, F16, BF16 · F32         exact products summed in double lanes: only
 *                                the order of the double sum differs
 *   f32 -> Q8_0, f32 -> Q8_K     bit-identical
 *   ds4_vec_axpy_f32             bit-identical (mul then add, no FMA)
 * Every level's vec_dot_tile is bit-identical to its own vec_dot.
 *
 * ds4_simd_force() rewrites the live table in place: call it only while no
 * other thread is running kernels (start-up, tests). */
#ifndef DS4_QUANT_SIMD_H
#define DS4_QUANT_SIMD_H

#include <stdint.h>

#include "quant/quant.h"

void ds4_simd_init(void);             /* idempotent; implied by first use */
const char *ds4_simd_level(void);     /* the live level's name */
int ds4_simd_supported(const char *level); /* 1 if this build and CPU run it */
int ds4_simd_force(const char *level);     /* 0, or -1 if unsupported/unknown */
const char *const *ds4_simd_levels(void);  /* all level names, NULL-terminated */

/* f32 helpers for the forward pass, dispatched like the table. */
typedef struct ds4_vec_ops {
    float (*dot)(const float *a, const float *b, int64_t n);
    void (*axpy)(float *y, float a, const float *x, int64_t n); /* y += a·x */
    double (*sumsq)(const float *x, int64_t n);                 /* Σ x², in double */
} ds4_vec_ops;

/* A level's table row / helpers without installing them (tests, benches):
 * 0, or -1 if the level is unsupported here or the type unknown. */
int ds4_simd_traits_for(const char *level, int type, ds4_type_traits *out);
int ds4_simd_vec_ops_for(const char *level, ds4_vec_ops *out);

#endif
