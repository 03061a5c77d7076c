/* f32 vector helpers for the forward pass's inner loops (attention scores
 * and weighted sums, indexer scores, RMSNorm), dispatched to the live SIMD
 * level (simd.h).  The scalar level reproduces the plain loops exactly:
 * dot = sequential f32 sum of products, axpy = y[i] += a*x[i] (mul, then
 * add: every level gives the same bits), sumsq = Σ (double)x² . */
#ifndef DS4_QUANT_VEC_H
#define DS4_QUANT_VEC_H

#include <stdint.h>

float ds4_vec_dot_f32(const float *a, const float *b, int64_t n);
void ds4_vec_axpy_f32(float *y, float a, const float *x, int64_t n);
double ds4_vec_sumsq_f32(const float *x, int64_t n);

#endif
