/* Installers of the forward-pass f32 kernels (simd.h ds4_vec_ops), called
 * by dispatch.c's build(): vec_ref.c sets every new slot to its scalar
 * version, then a level's installer overwrites the slots it implements. */
#ifndef DS4_QUANT_VEC_INT_H
#define DS4_QUANT_VEC_INT_H

#include "quant/simd.h"

void ds4_vec_install_ref(ds4_vec_ops *v);
void ds4_vec_install_avx2(ds4_vec_ops *v);
void ds4_vec_install_avx512(ds4_vec_ops *v);
void ds4_idx8_install_avx512(ds4_vec_ops *v); /* idx8_avx512.c */
void ds4_idx8_install_avx2(ds4_vec_ops *v);   /* idx8_avx2.c: where the CPU has AVX-VNNI */

/* The scalar versions, for kernels that fall back on them. */
void ds4_vec_attn_ref(const ds4_vec_ops *v, const ds4_attn_args *a);
void ds4_vec_dot16_ref(const ds4_vec_ops *v, const float *const *a, const float *b, int64_t n, float *out);
void ds4_vec_hc_collapse_ref(const ds4_vec_ops *v, float *x, const float *X, const float *w, int H, int64_t n);
void ds4_vec_hc_expand_ref(const ds4_vec_ops *v, float *X, const float *o, const float *post, const float *C, int H,
                           int64_t n, float *scratch);
void ds4_vec_softpool_ref(const ds4_vec_ops *v, const float *const *kv, const float *const *sc, int rows, int d,
                          float *out);
void ds4_vec_idx_scores_ref(const float *q, const float *w, int nt, int nI, int dI, const float *k, int64_t n,
                            float *out, int64_t ostride);
/* ds4_expf_fast's constants (simd.h), shared by its scalar definition
 * (vec_ref.c) and the vector versions that reproduce it: log2(e), ln 2 in
 * two parts (the high one has 16 significant bits, so n·it is exact for
 * |n| <= 256), and Cephes' expf polynomial, highest degree first. */
#define DS4_EXPF_FAST_LOG2E 0x1.715476p+0f
#define DS4_EXPF_FAST_LN2HI 0x1.62e4p-1f
#define DS4_EXPF_FAST_LN2LO 0x1.7f7d1cp-20f
#define DS4_EXPF_FAST_P5 1.9875691500e-4f
#define DS4_EXPF_FAST_P4 1.3981999507e-3f
#define DS4_EXPF_FAST_P3 8.3334519073e-3f
#define DS4_EXPF_FAST_P2 4.1665795894e-2f
#define DS4_EXPF_FAST_P1 1.6666665459e-1f
#define DS4_EXPF_FAST_P0 5.0000001201e-1f

/* 2^(i/32) as double bits minus i << 47 (glibc's expf table), for the
 * vector expf transcriptions (vec_avx512.c, vec_avx2.c). */
extern const uint64_t ds4_exp2f_tab[32];
void ds4_vec_fp_roundtrip_ref(float *x, int64_t n, int64_t blk, float qmax, float amin, float (*round_fn)(float));

#endif
