/* Block-cooperative operations on one row held in shared memory, ported
 * operation for operation from engine/ops.c so that the GPU rounds like the
 * CPU: RMSNorm, RoPE (adjacent pairs on the tail), the FP8 / FP4 QAT round
 * trips and the Sylvester Hadamard transform.  Every function starts and
 * ends with the row consistent across the block (it synchronises). */
#ifndef DS4_CU_ROWOPS_CUH
#define DS4_CU_ROWOPS_CUH

#include "cuda/cu_common.cuh"

/* y = x * (mean(x^2) + eps)^-1/2 * w  (w may be NULL) */
__device__ __forceinline__ void row_rmsnorm(float *x, int n, const float *w, float eps) {
    __syncthreads();
    double ss = 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) ss += (double)x[i] * (double)x[i];
    ss = cu_block_sum_d(ss);
    float scale = (float)(1.0 / sqrt(ss / (double)n + eps));
    for (int i = threadIdx.x; i < n; i += blockDim.x) x[i] = w ? x[i] * scale * w[i] : x[i] * scale;
    __syncthreads();
}

/* Rotates the last rd dims of x (width d) at position pos; sign -1 inverts. */
__device__ __forceinline__ void row_rope(float *x, int d, int rd, const float *inv_freq, int64_t pos, int sign) {
    float *t = x + d - rd;
    __syncthreads();
    for (int i = threadIdx.x; i < rd / 2; i += blockDim.x) {
        float ang = (float)pos * inv_freq[i];
        float c = cosf(ang), s = (float)sign * sinf(ang);
        float a = t[2 * i], b = t[2 * i + 1];
        t[2 * i] = a * c - b * s;
        t[2 * i + 1] = a * s + b * c;
    }
    __syncthreads();
}

__device__ __forceinline__ float pow2_ceil_dev(float r) {
    int e;
    float f = frexpf(r, &e);
    return ldexpf(1.0f, f == 0.5f ? e - 1 : e);
}

__device__ __forceinline__ float round_fp8_dev(float x) {
    if (isnan(x)) return x;
    float a = fabsf(x), q;
    if (a >= 448.0f) {
        q = 448.0f;
    } else if (a < 0x1p-6f) {
        q = rintf(a * 512.0f) * 0x1p-9f;
    } else {
        int k;
        frexpf(a, &k);
        int shift = k - 1 - 3;
        q = ldexpf(rintf(ldexpf(a, -shift)), shift);
        if (q > 448.0f) q = 448.0f;
    }
    return copysignf(q, x);
}

__device__ __forceinline__ float round_fp4_dev(float x) {
    if (isnan(x)) return x;
    const float vals[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
    float a = fabsf(x);
    if (a >= 6.0f) return copysignf(6.0f, x);
    int best = 0;
    float bd = a;
#pragma unroll
    for (int c = 1; c < 8; c++) {
        float dd = fabsf(a - vals[c]);
        if (dd < bd || (dd == bd && (c & 1) == 0 && (best & 1))) { bd = dd; best = c; }
    }
    return copysignf(vals[best], x);
}

/* Block round trip over x[0..n) in blocks of blk (ops.c block_roundtrip):
 * one thread per block, sequential inside, exactly as the CPU. */
__device__ __forceinline__ void row_block_roundtrip(float *x, int n, int blk, float qmax, float amin, int fp4) {
    __syncthreads();
    for (int b0 = threadIdx.x * blk; b0 < n; b0 += blockDim.x * blk) {
        int b1 = b0 + blk < n ? b0 + blk : n;
        float a = 0;
        for (int i = b0; i < b1; i++) a = fmaxf(a, fabsf(x[i]));
        a = fmaxf(a, amin);
        float s = pow2_ceil_dev(a / qmax);
        for (int i = b0; i < b1; i++) {
            float v = x[i] / s;
            v = v < -qmax ? -qmax : v > qmax ? qmax : v;
            x[i] = (fp4 ? round_fp4_dev(v) : round_fp8_dev(v)) * s;
        }
    }
    __syncthreads();
}

__device__ __forceinline__ void row_fp8(float *x, int n) { row_block_roundtrip(x, n, 64, 448.0f, 1e-4f, 0); }
__device__ __forceinline__ void row_fp4(float *x, int n) { row_block_roundtrip(x, n, 32, 6.0f, 6.0f * 0x1p-126f, 1); }

/* Sylvester-order Hadamard scaled by n^-1/2 (n a power of two). */
__device__ __forceinline__ void row_hadamard(float *x, int n) {
    __syncthreads();
    for (int h = 1; h < n; h *= 2) {
        for (int p = threadIdx.x; p < n / 2; p += blockDim.x) {
            int i = (p / h) * 2 * h, j = i + p % h;
            float a = x[j], b = x[j + h];
            x[j] = a + b;
            x[j + h] = a - b;
        }
        __syncthreads();
    }
    float s = 1.0f / sqrtf((float)n);
    for (int i = threadIdx.x; i < n; i += blockDim.x) x[i] *= s;
    __syncthreads();
}

#endif
