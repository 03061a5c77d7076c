/* Internal declarations shared by the CUDA backend's translation units.
 *
 * Conventions: every launcher takes the stream it runs on and checks the
 * launch (CU_LAUNCH_CHECK); device buffers are plain cudaMalloc memory;
 * weights keep the GGUF block layouts of quant/quant.h byte for byte, so an
 * expert can be copied from the host file image into a VRAM slot verbatim.
 * Positions that change from token to token (p0, the batch's first
 * position) are read from device memory by the kernels, so a decode step
 * can be captured once in a CUDA graph and replayed. */
#ifndef DS4_CU_COMMON_CUH
#define DS4_CU_COMMON_CUH

#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

extern "C" {
#include "quant/quant.h"
}

#define CU_CHECK(call)                                                                               \
    do {                                                                                             \
        cudaError_t e_ = (call);                                                                     \
        if (e_ != cudaSuccess) {                                                                     \
            fprintf(stderr, "ds4-cuda: %s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
            abort();                                                                                 \
        }                                                                                            \
    } while (0)

/* Launch errors are programming errors (bad shapes): report and abort. */
#define CU_LAUNCH_CHECK() CU_CHECK(cudaGetLastError())

/* A weight on the device: GGUF layout, ne[0] = row length. */
typedef struct dmat {
    const uint8_t *d;
    int type;
    int64_t ne0, ne1, ne2;
    size_t row_bytes;
} dmat;

/* ---- cu_mm.cu ---- */

/* Uploads the IQ2_XXS tables; call once before any capture. */
void cu_mm_init(void);

/* Bytes one activation row of ne0 values takes in the format weight type wt
 * multiplies with (Q8_0, Q8_K, or f32). */
size_t cu_act_row_bytes(int wt, int64_t ne0);
/* Y[t*ldy + r] = W[row0 + r] . X[t*ldx ..] for t < n, r < nrows, in the
 * slice `expert` of a stacked weight.  xq: scratch of n * cu_act_row_bytes. */
void cu_mm(cudaStream_t st, const dmat *w, int64_t expert, int64_t row0, int64_t nrows, const float *X,
           int64_t ldx, int n, float *Y, int64_t ldy, uint8_t *xq);
/* Segmented product for grouped experts: segment z (< nseg) multiplies
 * weight wtab[z] (nrows x ne0, type wt) with rows seg_off[z]..seg_off[z+1]
 * of X; max_cnt bounds every segment's length (grid size).  Segments past
 * the live count have seg_off[z] == seg_off[z+1] and cost one empty block. */
void cu_mm_seg(cudaStream_t st, int wt, int64_t ne0, int64_t nrows, const uint8_t *const *wtab, const int *seg_off,
               int nseg, int max_cnt, const float *X, int64_t ldx, int n_rows_x, float *Y, int64_t ldy, uint8_t *xq);
/* out[t*ldo + :] = row ids[t] of w as f32 (embedding lookup). */
void cu_get_rows(cudaStream_t st, const dmat *w, const int32_t *ids, int n, float *out, int64_t ldo);
/* cu_mm without the tensor-core attempt: the dp4a / FMA tiles only (the
 * tensor-core self-test's control, benchmarks). */
void cu_mm_dp4a(cudaStream_t st, const dmat *w, int64_t expert, int64_t row0, int64_t nrows, const float *X,
                int64_t ldx, int n, float *Y, int64_t ldy, uint8_t *xq);
/* Tensor-core prefill paths (cu_mma.cu); return 0 when they do not apply
 * (type, alignment, DS4_CUDA_MMA=0, or a failed device self-test). */
int cu_mm_tc(cudaStream_t st, const dmat *w, int64_t expert, int64_t row0, int64_t nrows, const float *X,
             int64_t ldx, int n, float *Y, int64_t ldy, uint8_t *xq);
/* The Q8_0 tensor-core product without the gate (benchmarks, the
 * self-test): 0 if it does not apply to w (type, alignment). */
int cu_mm_q8_0_tc(cudaStream_t st, const dmat *w, int64_t expert, int64_t row0, int64_t nrows, const float *X,
                  int64_t ldx, int n, float *Y, int64_t ldy, uint8_t *xq);
/* Result of the tensor-core self-test (cu_mma.cu). */
typedef struct cu_mma_selftest_result {
    int pass;           /* the gate's verdict */
    double rel_ref;     /* max |tc - cpu| / max |cpu| (CPU: quant_ref.c's vec_dot on the device's xq) */
    double rel_dp4a;    /* max |tc - dp4a| / max |dp4a| */
    long bitwise;       /* outputs bitwise equal to the CPU reference ... */
    long total;         /* ... out of this many */
    long stray;         /* Y entries outside the product that were written (must be 0) */
    int xq_equal;       /* device activation quantization == quant_ref.c's bytes */
} cu_mma_selftest_result;
/* Runs the self-test now (needs a device; not during stream capture). */
void cu_mma_selftest(cu_mma_selftest_result *r);
/* 1: tensor-core Q8_0 path on, -1: off, 0: not decided yet (no call so far). */
int cu_mma_state(void);
/* Decides the gate now (cu_mm_init calls it: session creation, no capture). */
void cu_mma_init(void);
/* Activation quantizers (used by cu_mm; exposed for cu_mm_tc). */
void cu_quant_q8_0(cudaStream_t st, const float *X, int64_t ldx, int n, int64_t ne0, uint8_t *out);
void cu_quant_q8_K(cudaStream_t st, const float *X, int64_t ldx, int n, int64_t ne0, uint8_t *out);

/* ---- small device helpers ---- */

__device__ __forceinline__ float cu_h2f(uint16_t h) { return __half2float(__ushort_as_half(h)); }
__device__ __forceinline__ float cu_bf2f(uint16_t b) { return __uint_as_float((uint32_t)b << 16); }

__device__ __forceinline__ float cu_warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ double cu_warp_sum_d(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float cu_warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Block-wide sum (blockDim.x a multiple of 32, <= 1024); every thread gets it. */
__device__ __forceinline__ double cu_block_sum_d(double v) {
    __shared__ double part[32];
    int w = threadIdx.x >> 5, l = threadIdx.x & 31, nw = blockDim.x >> 5;
    v = cu_warp_sum_d(v);
    __syncthreads(); /* part[] may still be read by a previous call */
    if (l == 0) part[w] = v;
    __syncthreads();
    double s = 0;
    for (int i = 0; i < nw; i++) s += part[i];
    return s;
}
__device__ __forceinline__ float cu_block_max(float v) {
    __shared__ float partm[32];
    int w = threadIdx.x >> 5, l = threadIdx.x & 31, nw = blockDim.x >> 5;
    v = cu_warp_max(v);
    __syncthreads();
    if (l == 0) partm[w] = v;
    __syncthreads();
    float s = -INFINITY;
    for (int i = 0; i < nw; i++) s = fmaxf(s, partm[i]);
    return s;
}

#endif
