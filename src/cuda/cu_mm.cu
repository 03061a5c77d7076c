/* Matrix-vector / small-batch matrix products for every weight type, the
 * activation quantizers, and embedding row lookup.
 *
 * Decode design (memory-bound): one warp per weight row, 4 rows per 128-thread
 * block; lane l walks the row's work units l, l+32, ... so that the warp
 * covers consecutive blocks of the row and every byte of the row is fetched
 * once from DRAM.  A "unit" is a piece of a block big enough for several
 * independent loads per lane (a whole Q8_0 block; a 64-quant chunk of Q4_K;
 * a 32-quant quarter of a Q2_K half; a 32-quant group of IQ2_XXS; 4 / 8
 * elements of F32 / F16 / BF16 loaded as one 16-byte vector).
 *
 * Activations are quantized exactly like the CPU engine (quant_ref.c): Q8_0
 * for Q8_0 weights, Q8_K for Q2_K / Q4_K / IQ2_XXS, so the integer block sums
 * (dp4a) are the CPU's; F32/F16/BF16 weights multiply f32 activations with
 * the weight dequantized in registers (f32 accumulation; the CPU uses double,
 * which matters far below the 1e-3 parity bound).
 *
 * Small batches (prefill, experts with several tokens): NT tokens per block
 * (grid.y over token tiles), so a weight unit is loaded once per NT tokens.
 * Large F16/BF16/Q8_0 batches go to the tensor-core kernels (cu_mma.cu). */
#include "cuda/cu_common.cuh"

extern "C" {
#include "quant/iq2_tables.h"
}

#define MM_WARPS 4

/* IQ2_XXS tables in device memory (copied from the host tables at first use
 * through cudaMemcpyToSymbol would need a context; as __device__ constants
 * they are part of the module).  Filled by cu_iq2_tables_init(). */
__device__ uint64_t cu_iq2_grid[256];
__device__ uint8_t cu_iq2_signs[128];

static void iq2_tables_init(void) {
    static int done = 0;
    if (done) return;
    CU_CHECK(cudaMemcpyToSymbol(cu_iq2_grid, ds4_iq2xxs_grid, sizeof(uint64_t) * 256));
    CU_CHECK(cudaMemcpyToSymbol(cu_iq2_signs, ds4_ksigns_iq2xs, 128));
    done = 1;
}

void cu_mm_init(void) {
    iq2_tables_init();
    cu_mma_init(); /* tensor-core self-test, outside any capture */
}

/* ------------------------------------------------------------------------ */
/* Unaligned little loads                                                    */

__device__ __forceinline__ int ld_i32_a2(const uint8_t *p) { /* 2-byte aligned */
    const uint16_t *q = (const uint16_t *)p;
    return (int)((uint32_t)q[0] | ((uint32_t)q[1] << 16));
}
__device__ __forceinline__ int ld_i32_a4(const uint8_t *p) { return *(const int *)p; }

/* ------------------------------------------------------------------------ */
/* Per-type work units.  load() fetches a unit of the weight row into
 * registers; dot() multiplies it with the matching activation piece. */

template <int T, bool V> struct unit;

/* F32 / F16 / BF16, vector form: 4 / 8 / 8 elements per unit, 16-byte loads. */
template <> struct unit<DS4_TYPE_F32, true> {
    static constexpr int E = 4;
    float4 w;
    __device__ void load(const uint8_t *row, int64_t u) { w = ((const float4 *)row)[u]; }
    __device__ float dot(const uint8_t *x, int64_t u) const {
        float4 a = ((const float4 *)x)[u];
        return w.x * a.x + w.y * a.y + w.z * a.z + w.w * a.w;
    }
};
template <> struct unit<DS4_TYPE_F16, true> {
    static constexpr int E = 8;
    float f[8];
    __device__ void load(const uint8_t *row, int64_t u) {
        uint4 v = ((const uint4 *)row)[u];
        const uint32_t p[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int i = 0; i < 4; i++) { f[2 * i] = cu_h2f(p[i] & 0xffff); f[2 * i + 1] = cu_h2f(p[i] >> 16); }
    }
    __device__ float dot(const uint8_t *x, int64_t u) const {
        float4 a = ((const float4 *)x)[2 * u], b = ((const float4 *)x)[2 * u + 1];
        return f[0] * a.x + f[1] * a.y + f[2] * a.z + f[3] * a.w + f[4] * b.x + f[5] * b.y + f[6] * b.z + f[7] * b.w;
    }
};
template <> struct unit<DS4_TYPE_BF16, true> {
    static constexpr int E = 8;
    float f[8];
    __device__ void load(const uint8_t *row, int64_t u) {
        uint4 v = ((const uint4 *)row)[u];
        const uint32_t p[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int i = 0; i < 4; i++) { f[2 * i] = __uint_as_float(p[i] << 16); f[2 * i + 1] = __uint_as_float(p[i] & 0xffff0000u); }
    }
    __device__ float dot(const uint8_t *x, int64_t u) const {
        float4 a = ((const float4 *)x)[2 * u], b = ((const float4 *)x)[2 * u + 1];
        return f[0] * a.x + f[1] * a.y + f[2] * a.z + f[3] * a.w + f[4] * b.x + f[5] * b.y + f[6] * b.z + f[7] * b.w;
    }
};
/* Scalar forms, for rows whose length or alignment rules out 16-byte loads. */
template <int T> struct unit_scalar {
    static constexpr int E = 1;
    float w;
    __device__ void load(const uint8_t *row, int64_t u) {
        if (T == DS4_TYPE_F32) w = ((const float *)row)[u];
        else if (T == DS4_TYPE_F16) w = cu_h2f(((const uint16_t *)row)[u]);
        else w = cu_bf2f(((const uint16_t *)row)[u]);
    }
    __device__ float dot(const uint8_t *x, int64_t u) const { return w * ((const float *)x)[u]; }
};
template <> struct unit<DS4_TYPE_F32, false> : unit_scalar<DS4_TYPE_F32> {};
template <> struct unit<DS4_TYPE_F16, false> : unit_scalar<DS4_TYPE_F16> {};
template <> struct unit<DS4_TYPE_BF16, false> : unit_scalar<DS4_TYPE_BF16> {};

/* Q8_0 x Q8_0: one 34-byte block per unit (2-byte aligned: 16-bit loads). */
template <> struct unit<DS4_TYPE_Q8_0, false> {
    static constexpr int E = 32;
    float d;
    int q[8];
    __device__ void load(const uint8_t *row, int64_t u) {
        const uint8_t *b = row + u * 34;
        d = cu_h2f(*(const uint16_t *)b);
#pragma unroll
        for (int i = 0; i < 8; i++) q[i] = ld_i32_a2(b + 2 + 4 * i);
    }
    __device__ float dot(const uint8_t *x, int64_t u) const {
        const uint8_t *b = x + u * 34;
        int s = 0;
#pragma unroll
        for (int i = 0; i < 8; i++) s = __dp4a(q[i], ld_i32_a2(b + 2 + 4 * i), s);
        return (float)s * (d * cu_h2f(*(const uint16_t *)b));
    }
};

/* Q8_K activation block: f32 d at 0, 256 int8 at 4, 16 int16 bsums at 260. */
#define Q8K_BYTES 292

/* Q4_K x Q8_K: unit = (block, chunk c of 64 quants), 4 per block. */
template <> struct unit<DS4_TYPE_Q4_K, false> {
    static constexpr int E = 64;
    float d, dmin;
    int sc1, m1, sc2, m2;
    int q[8];
    __device__ void load(const uint8_t *row, int64_t u) {
        const uint8_t *b = row + (u >> 2) * 144;
        int c = (int)(u & 3);
        uint32_t dd = *(const uint32_t *)b;
        d = cu_h2f(dd & 0xffff);
        dmin = cu_h2f(dd >> 16);
        const uint8_t *s = b + 4;
        int j = 2 * c;
        /* ggml's 6-bit packing (quant_ref.c q4_K_scale_min) for j and j+1 */
        if (j < 4) {
            sc1 = s[j] & 63; m1 = s[j + 4] & 63;
            sc2 = s[j + 1] & 63; m2 = s[j + 5] & 63;
        } else {
            sc1 = (s[j + 4] & 0xf) | ((s[j - 4] >> 6) << 4);
            m1 = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
            sc2 = (s[j + 5] & 0xf) | ((s[j - 3] >> 6) << 4);
            m2 = (s[j + 5] >> 4) | ((s[j + 1] >> 6) << 4);
        }
        const uint4 *qq = (const uint4 *)(b + 16 + 32 * c);
        uint4 a = qq[0], bb = qq[1];
        q[0] = a.x; q[1] = a.y; q[2] = a.z; q[3] = a.w;
        q[4] = bb.x; q[5] = bb.y; q[6] = bb.z; q[7] = bb.w;
    }
    __device__ float dot(const uint8_t *x, int64_t u) const {
        const uint8_t *b = x + (u >> 2) * Q8K_BYTES;
        int c = (int)(u & 3);
        const uint8_t *q8 = b + 4 + 64 * c;
        int s1 = 0, s2 = 0;
#pragma unroll
        for (int i = 0; i < 8; i++) {
            s1 = __dp4a(q[i] & 0x0f0f0f0f, ld_i32_a4(q8 + 4 * i), s1);
            s2 = __dp4a((q[i] >> 4) & 0x0f0f0f0f, ld_i32_a4(q8 + 32 + 4 * i), s2);
        }
        const int16_t *bs = (const int16_t *)(b + 260) + 4 * c;
        int isum = sc1 * s1 + sc2 * s2;
        int msum = m1 * (bs[0] + bs[1]) + m2 * (bs[2] + bs[3]);
        float xd = *(const float *)b;
        return xd * d * (float)isum - xd * dmin * (float)msum;
    }
};

/* Q2_K x Q8_K: unit = (block, half h, shift j): 32 quants, 8 per block. */
template <> struct unit<DS4_TYPE_Q2_K, false> {
    static constexpr int E = 32;
    float d, dmin;
    int sc0, sc1;
    int q[8];
    __device__ void load(const uint8_t *row, int64_t u) {
        const uint8_t *b = row + (u >> 3) * 84;
        int h = (int)((u >> 2) & 1), j = (int)(u & 3);
        int is = 8 * h + 2 * j;
        sc0 = b[is];
        sc1 = b[is + 1];
        uint32_t dd = *(const uint32_t *)(b + 80);
        d = cu_h2f(dd & 0xffff);
        dmin = cu_h2f(dd >> 16);
#pragma unroll
        for (int i = 0; i < 8; i++) q[i] = (ld_i32_a4(b + 16 + 32 * h + 4 * i) >> (2 * j)) & 0x03030303;
    }
    __device__ float dot(const uint8_t *x, int64_t u) const {
        const uint8_t *b = x + (u >> 3) * Q8K_BYTES;
        int h = (int)((u >> 2) & 1), j = (int)(u & 3);
        const uint8_t *q8 = b + 4 + 128 * h + 32 * j;
        int s0 = 0, s1 = 0;
#pragma unroll
        for (int i = 0; i < 4; i++) s0 = __dp4a(q[i], ld_i32_a4(q8 + 4 * i), s0);
#pragma unroll
        for (int i = 4; i < 8; i++) s1 = __dp4a(q[i], ld_i32_a4(q8 + 4 * i), s1);
        const int16_t *bs = (const int16_t *)(b + 260) + 8 * h + 2 * j;
        int isum = (sc0 & 0xf) * s0 + (sc1 & 0xf) * s1;
        int msum = (sc0 >> 4) * bs[0] + (sc1 >> 4) * bs[1];
        float xd = *(const float *)b;
        return xd * d * (float)isum - xd * dmin * (float)msum;
    }
};

/* IQ2_XXS x Q8_K: unit = (block, 32-group ib), 8 per block.  Grid values
 * (<= 43) get the signs applied bytewise, then one dp4a per 4 quants. */
template <> struct unit<DS4_TYPE_IQ2_XXS, false> {
    static constexpr int E = 32;
    float d;
    uint32_t grids, aux;
    __device__ void load(const uint8_t *row, int64_t u) {
        const uint8_t *b = row + (u >> 3) * 66;
        int ib = (int)(u & 7);
        d = cu_h2f(*(const uint16_t *)b);
        const uint16_t *q = (const uint16_t *)(b + 2) + 4 * ib;
        grids = (uint32_t)q[0] | ((uint32_t)q[1] << 16);
        aux = (uint32_t)q[2] | ((uint32_t)q[3] << 16);
    }
    __device__ float dot(const uint8_t *x, int64_t u) const {
        const uint8_t *b = x + (u >> 3) * Q8K_BYTES;
        const uint8_t *q8 = b + 4 + 32 * (int)(u & 7);
        int sumi = 0;
#pragma unroll
        for (int l = 0; l < 4; l++) {
            uint64_t g = cu_iq2_grid[(grids >> (8 * l)) & 0xff];
            uint32_t sg = cu_iq2_signs[(aux >> (7 * l)) & 127];
            /* 4 sign bits -> 4 byte masks (0x00 / 0xff) */
            uint32_t mlo = ((((sg & 0xf) * 0x00204081u) & 0x01010101u) * 0xffu);
            uint32_t mhi = ((((sg >> 4) * 0x00204081u) & 0x01010101u) * 0xffu);
            int glo = (int)__vsub4((uint32_t)g ^ mlo, mlo);
            int ghi = (int)__vsub4((uint32_t)(g >> 32) ^ mhi, mhi);
            sumi = __dp4a(glo, ld_i32_a4(q8 + 8 * l), sumi);
            sumi = __dp4a(ghi, ld_i32_a4(q8 + 8 * l + 4), sumi);
        }
        int ls = 2 * (int)(aux >> 28) + 1;
        return 0.125f * d * *(const float *)b * (float)(sumi * ls);
    }
};

/* ------------------------------------------------------------------------ */
/* The product kernel                                                        */

struct mm_args {
    const uint8_t *w;              /* first row of the slice (plain) */
    const uint8_t *const *wtab;    /* per-segment weight (segmented), else NULL */
    const int *seg_off;            /* [nseg + 1] row offsets into X / Y (segmented) */
    size_t row_bytes;
    int64_t ne0, nrows, row0;
    const uint8_t *x;              /* activation rows */
    size_t x_bytes;                /* stride between activation rows */
    int n;                         /* rows of X (plain) */
    float *y;
    int64_t ldy;
};

template <int T, bool V, int NT>
__global__ void __launch_bounds__(MM_WARPS * 32) k_mm(mm_args a) {
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int64_t r = (int64_t)blockIdx.x * MM_WARPS + warp;
    const uint8_t *wbase = a.w;
    int tbeg = 0, cnt = a.n;
    if (a.seg_off) {
        tbeg = a.seg_off[blockIdx.z];
        cnt = a.seg_off[blockIdx.z + 1] - tbeg;
        wbase = a.wtab[blockIdx.z];
    }
    int t0 = blockIdx.y * NT;
    if (t0 >= cnt || r >= a.nrows || !wbase) return;
    int nt = cnt - t0 < NT ? cnt - t0 : NT;
    const uint8_t *wrow = wbase + (size_t)(a.row0 + r) * a.row_bytes;
    const uint8_t *x0 = a.x + (size_t)(tbeg + t0) * a.x_bytes;
    typedef unit<T, V> U;
    float acc[NT];
#pragma unroll
    for (int j = 0; j < NT; j++) acc[j] = 0.0f;
    int64_t nu = a.ne0 / U::E;
    for (int64_t u = lane; u < nu; u += 32) {
        U w;
        w.load(wrow, u);
#pragma unroll
        for (int j = 0; j < NT; j++)
            if (j < nt) acc[j] += w.dot(x0 + (size_t)j * a.x_bytes, u);
    }
#pragma unroll
    for (int j = 0; j < NT; j++) {
        float s = cu_warp_sum(acc[j]);
        if (lane == 0 && j < nt) a.y[(int64_t)(tbeg + t0 + j) * a.ldy + r] = s;
    }
}

/* ------------------------------------------------------------------------ */
/* Activation quantizers (bit-exact with quant_ref.c's from_float)           */

/* Q8_0: one warp per 32-block; d = amax/127 rounded to fp16 for storage,
 * q = roundf(x / d) with the unrounded d (as q8_0_from_float). */
__global__ void k_quant_q8_0(const float *X, int64_t ldx, int n, int64_t ne0, uint8_t *out) {
    int64_t nb = ne0 / 32;
    int64_t gw = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    int lane = threadIdx.x & 31;
    if (gw >= nb * n) return;
    int64_t t = gw / nb, b = gw % nb;
    float x = X[t * ldx + b * 32 + lane];
    float amax = cu_warp_max(fabsf(x));
    float d = amax / 127.0f;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    uint8_t *blk = out + (size_t)t * (size_t)(nb * 34) + (size_t)b * 34;
    blk[2 + lane] = (uint8_t)(int8_t)roundf(x * id);
    if (lane == 0) *(uint16_t *)blk = __half_as_ushort(__float2half_rn(d));
}

/* Q8_K: one warp per 256-block, 8 consecutive values per lane.  The scale
 * comes from the first element of largest magnitude (q8_K_from_float keeps
 * the first on ties, and the sign matters), so the reduction carries the
 * index and prefers the lower one. */
__global__ void k_quant_q8_K(const float *X, int64_t ldx, int n, int64_t ne0, uint8_t *out) {
    int64_t nb = ne0 / 256;
    int64_t gw = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    int lane = threadIdx.x & 31;
    if (gw >= nb * n) return;
    int64_t t = gw / nb, b = gw % nb;
    const float *x = X + t * ldx + b * 256 + lane * 8;
    float v[8];
    float amax = 0.0f, mval = 0.0f;
    int midx = 1 << 30;
#pragma unroll
    for (int i = 0; i < 8; i++) {
        v[i] = x[i];
        float ax = fabsf(v[i]);
        if (ax > amax) { amax = ax; mval = v[i]; midx = lane * 8 + i; }
    }
    for (int o = 16; o > 0; o >>= 1) {
        float oa = __shfl_xor_sync(0xffffffffu, amax, o);
        float ov = __shfl_xor_sync(0xffffffffu, mval, o);
        int oi = __shfl_xor_sync(0xffffffffu, midx, o);
        if (oa > amax || (oa == amax && oi < midx)) { amax = oa; mval = ov; midx = oi; }
    }
    uint8_t *blk = out + ((size_t)t * nb + b) * Q8K_BYTES;
    int8_t *qs = (int8_t *)(blk + 4);
    int16_t *bs = (int16_t *)(blk + 260);
    if (amax == 0.0f) {
#pragma unroll
        for (int i = 0; i < 8; i++) qs[lane * 8 + i] = 0;
        if ((lane & 1) == 0) bs[lane >> 1] = 0;
        if (lane == 0) *(float *)blk = 0.0f;
        return;
    }
    float iscale = -127.0f / mval;
    int s = 0;
#pragma unroll
    for (int i = 0; i < 8; i++) {
        int q = __float2int_rn(__fmul_rn(iscale, v[i]));
        q = q < 127 ? q : 127;
        qs[lane * 8 + i] = (int8_t)q;
        s += q;
    }
    s += __shfl_xor_sync(0xffffffffu, s, 1);
    if ((lane & 1) == 0) bs[lane >> 1] = (int16_t)s;
    if (lane == 0) *(float *)blk = 1.0f / iscale;
}

void cu_quant_q8_0(cudaStream_t st, const float *X, int64_t ldx, int n, int64_t ne0, uint8_t *out) {
    int64_t warps = ne0 / 32 * n;
    k_quant_q8_0<<<(unsigned)((warps + 7) / 8), 256, 0, st>>>(X, ldx, n, ne0, out);
    CU_LAUNCH_CHECK();
}

void cu_quant_q8_K(cudaStream_t st, const float *X, int64_t ldx, int n, int64_t ne0, uint8_t *out) {
    int64_t warps = ne0 / 256 * n;
    k_quant_q8_K<<<(unsigned)((warps + 7) / 8), 256, 0, st>>>(X, ldx, n, ne0, out);
    CU_LAUNCH_CHECK();
}

size_t cu_act_row_bytes(int wt, int64_t ne0) {
    switch (wt) {
    case DS4_TYPE_Q8_0: return (size_t)(ne0 / 32) * 34;
    case DS4_TYPE_Q2_K: case DS4_TYPE_Q4_K: case DS4_TYPE_IQ2_XXS: return (size_t)(ne0 / 256) * Q8K_BYTES;
    default: return 0; /* f32 activations are used in place */
    }
}

/* Converts X to the weight type's activation format; returns the rows and
 * their stride. */
static const uint8_t *prep_act(cudaStream_t st, int wt, const float *X, int64_t ldx, int n, int64_t ne0,
                               uint8_t *xq, size_t *x_bytes) {
    switch (wt) {
    case DS4_TYPE_Q8_0:
        cu_quant_q8_0(st, X, ldx, n, ne0, xq);
        *x_bytes = cu_act_row_bytes(wt, ne0);
        return xq;
    case DS4_TYPE_Q2_K: case DS4_TYPE_Q4_K: case DS4_TYPE_IQ2_XXS:
        cu_quant_q8_K(st, X, ldx, n, ne0, xq);
        *x_bytes = cu_act_row_bytes(wt, ne0);
        return xq;
    default:
        *x_bytes = (size_t)ldx * sizeof(float);
        return (const uint8_t *)X;
    }
}

template <int T, bool V>
static void launch_t(cudaStream_t st, const mm_args &a, int ntok, int nseg) {
    dim3 blk(MM_WARPS * 32);
    unsigned gx = (unsigned)((a.nrows + MM_WARPS - 1) / MM_WARPS);
    if (ntok <= 1) {
        k_mm<T, V, 1><<<dim3(gx, 1, nseg), blk, 0, st>>>(a);
    } else if (ntok <= 4) {
        k_mm<T, V, 4><<<dim3(gx, 1, nseg), blk, 0, st>>>(a);
    } else {
        k_mm<T, V, 8><<<dim3(gx, (unsigned)((ntok + 7) / 8), nseg), blk, 0, st>>>(a);
    }
    CU_LAUNCH_CHECK();
}

static void launch(cudaStream_t st, int wt, const mm_args &a, int ntok, int nseg) {
    if (wt == DS4_TYPE_IQ2_XXS) iq2_tables_init();
    /* 16-byte loads need rows, bases and activation strides on 16-byte
     * boundaries and whole vector units per row. */
    bool vec = a.ne0 % 8 == 0 && a.row_bytes % 16 == 0 && ((uintptr_t)a.w & 15) == 0 &&
               ((uintptr_t)a.x & 15) == 0 && a.x_bytes % 16 == 0;
    switch (wt) {
    case DS4_TYPE_F32: vec ? launch_t<DS4_TYPE_F32, true>(st, a, ntok, nseg) : launch_t<DS4_TYPE_F32, false>(st, a, ntok, nseg); break;
    case DS4_TYPE_F16: vec ? launch_t<DS4_TYPE_F16, true>(st, a, ntok, nseg) : launch_t<DS4_TYPE_F16, false>(st, a, ntok, nseg); break;
    case DS4_TYPE_BF16: vec ? launch_t<DS4_TYPE_BF16, true>(st, a, ntok, nseg) : launch_t<DS4_TYPE_BF16, false>(st, a, ntok, nseg); break;
    case DS4_TYPE_Q8_0: launch_t<DS4_TYPE_Q8_0, false>(st, a, ntok, nseg); break;
    case DS4_TYPE_Q4_K: launch_t<DS4_TYPE_Q4_K, false>(st, a, ntok, nseg); break;
    case DS4_TYPE_Q2_K: launch_t<DS4_TYPE_Q2_K, false>(st, a, ntok, nseg); break;
    case DS4_TYPE_IQ2_XXS: launch_t<DS4_TYPE_IQ2_XXS, false>(st, a, ntok, nseg); break;
    default:
        fprintf(stderr, "ds4-cuda: no product kernel for weight type %d\n", wt);
        abort();
    }
}

void cu_mm(cudaStream_t st, const dmat *w, int64_t expert, int64_t row0, int64_t nrows, const float *X,
           int64_t ldx, int n, float *Y, int64_t ldy, uint8_t *xq) {
    if (n <= 0 || nrows <= 0) return;
    if (n >= 16 && cu_mm_tc(st, w, expert, row0, nrows, X, ldx, n, Y, ldy, xq)) return;
    cu_mm_dp4a(st, w, expert, row0, nrows, X, ldx, n, Y, ldy, xq);
}

void cu_mm_dp4a(cudaStream_t st, const dmat *w, int64_t expert, int64_t row0, int64_t nrows, const float *X,
                int64_t ldx, int n, float *Y, int64_t ldy, uint8_t *xq) {
    if (n <= 0 || nrows <= 0) return;
    mm_args a = {};
    a.w = w->d + (size_t)expert * (size_t)w->ne1 * w->row_bytes;
    a.row_bytes = w->row_bytes;
    a.ne0 = w->ne0;
    a.nrows = nrows;
    a.row0 = row0;
    a.x = prep_act(st, w->type, X, ldx, n, w->ne0, xq, &a.x_bytes);
    a.n = n;
    a.y = Y;
    a.ldy = ldy;
    launch(st, w->type, a, n, 1);
}

void cu_mm_seg(cudaStream_t st, int wt, int64_t ne0, int64_t nrows, const uint8_t *const *wtab, const int *seg_off,
               int nseg, int max_cnt, const float *X, int64_t ldx, int n_rows_x, float *Y, int64_t ldy, uint8_t *xq) {
    if (nseg <= 0 || max_cnt <= 0) return;
    mm_args a = {};
    a.wtab = wtab;
    a.seg_off = seg_off;
    a.row_bytes = ds4_type_traits_ref(wt) ? (size_t)(ne0 / ds4_type_traits_ref(wt)->blck) * ds4_type_traits_ref(wt)->size : 0;
    a.ne0 = ne0;
    a.nrows = nrows;
    a.x = prep_act(st, wt, X, ldx, n_rows_x, ne0, xq, &a.x_bytes);
    a.n = n_rows_x;
    a.y = Y;
    a.ldy = ldy;
    /* a.w stays NULL: the vector test must not reject on it, slots are 256-aligned */
    a.w = (const uint8_t *)wtab; /* pointer-table base, 16-aligned */
    launch(st, wt, a, max_cnt, nseg);
}

/* ------------------------------------------------------------------------ */
/* Row lookup (embedding): one thread per output element, dequantized as
 * quant_ref.c's to_float does. */

__device__ float deq_elem(const uint8_t *row, int type, int64_t i) {
    switch (type) {
    case DS4_TYPE_F32: return ((const float *)row)[i];
    case DS4_TYPE_F16: return cu_h2f(((const uint16_t *)row)[i]);
    case DS4_TYPE_BF16: return cu_bf2f(((const uint16_t *)row)[i]);
    case DS4_TYPE_Q8_0: {
        const uint8_t *b = row + (i / 32) * 34;
        return (float)(int8_t)b[2 + i % 32] * cu_h2f(*(const uint16_t *)b);
    }
    case DS4_TYPE_Q4_K: {
        const uint8_t *b = row + (i / 256) * 144;
        int k = (int)(i % 256), c = k / 64, hi = (k % 64) >= 32, l = k % 32;
        int j = 2 * c + hi;
        const uint8_t *s = b + 4;
        int sc, m;
        if (j < 4) { sc = s[j] & 63; m = s[j + 4] & 63; }
        else { sc = (s[j + 4] & 0xf) | ((s[j - 4] >> 6) << 4); m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4); }
        uint8_t q = b[16 + 32 * c + l];
        q = hi ? q >> 4 : q & 0xf;
        float d = cu_h2f(*(const uint16_t *)b), dmin = cu_h2f(*(const uint16_t *)(b + 2));
        return d * sc * q - dmin * m;
    }
    case DS4_TYPE_Q2_K: {
        const uint8_t *b = row + (i / 256) * 84;
        int k = (int)(i % 256), h = k / 128, r = k % 128, j = r / 32, part = (r % 32) / 16, l = r % 16;
        uint8_t sc = b[8 * h + 2 * j + part];
        float d = cu_h2f(*(const uint16_t *)(b + 80)), dmin = cu_h2f(*(const uint16_t *)(b + 82));
        int q = (b[16 + 32 * h + 16 * part + l] >> (2 * j)) & 3;
        return d * (sc & 0xf) * q - dmin * (sc >> 4);
    }
    case DS4_TYPE_IQ2_XXS: {
        const uint8_t *b = row + (i / 256) * 66;
        int k = (int)(i % 256), ib = k / 32, l = (k % 32) / 8, j = k % 8;
        const uint16_t *q = (const uint16_t *)(b + 2) + 4 * ib;
        uint32_t grids = (uint32_t)q[0] | ((uint32_t)q[1] << 16), aux = (uint32_t)q[2] | ((uint32_t)q[3] << 16);
        float db = cu_h2f(*(const uint16_t *)b) * (0.5f + (float)(aux >> 28)) * 0.25f;
        int g = (int)((cu_iq2_grid[(grids >> (8 * l)) & 0xff] >> (8 * j)) & 0xff);
        uint8_t sg = cu_iq2_signs[(aux >> (7 * l)) & 127];
        return db * (float)g * ((sg >> j) & 1 ? -1.0f : 1.0f);
    }
    }
    return 0.0f;
}

__global__ void k_get_rows(const uint8_t *w, size_t row_bytes, int type, int64_t ne0, const int32_t *ids, int n,
                           float *out, int64_t ldo) {
    int t = blockIdx.y;
    const uint8_t *row = w + (size_t)ids[t] * row_bytes;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < ne0; i += (int64_t)gridDim.x * blockDim.x)
        out[t * ldo + i] = deq_elem(row, type, i);
}

void cu_get_rows(cudaStream_t st, const dmat *w, const int32_t *ids, int n, float *out, int64_t ldo) {
    if (w->type == DS4_TYPE_IQ2_XXS) iq2_tables_init();
    unsigned gx = (unsigned)((w->ne0 + 255) / 256);
    k_get_rows<<<dim3(gx, n), 256, 0, st>>>(w->d, w->row_bytes, w->type, w->ne0, ids, n, out, ldo);
    CU_LAUNCH_CHECK();
}
