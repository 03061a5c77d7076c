/* Tensor-core prefill products (large batches).  cu_mm() offers every
 * product with n >= 16 tokens here first; returning 0 sends it to the
 * dp4a / FMA tiles of cu_mm.cu.
 *
 * Taken here: Q8_0 weights only (int8 mma.sync, sm_80+).  Q2_K, Q4_K,
 * IQ2_XXS, F16, BF16 and F32 weights return 0 and stay on cu_mm.cu's paths.
 *
 * Q8_0 x Q8_0 with mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32.  One
 * MMA k-step is exactly one Q8_0 block (32 quants), so the MMA's int32 tile
 * is the block's exact integer dot for 16 rows x 8 tokens, and each output
 * accumulates, blocks in order,
 *
 *     acc = acc + (float)isum * (d_w * d_x)        (no FMA: __fmul_rn/__fadd_rn)
 *
 * which is quant_ref.c's vec_dot_q8_0_q8_0 step for step.  The activations
 * are quantized by cu_mm.cu's k_quant_q8_0 (bit-exact with q8_0_from_float),
 * so every output is meant to be BITWISE equal to the CPU engine's (every
 * CPU level sums in the reference's order).  The dp4a path of cu_mm.cu is
 * not (lane-strided blocks, a butterfly sum, FMA contraction): it agrees to
 * float rounding only.
 *
 * (float)isum costs no I2F: the MMA's C input is the bit pattern of
 * 1.5 * 2^23 (0x4B400000), so the int32 result read as a float is exactly
 * 12582912 + isum (|isum| <= 32 * 128 * 127 = 520192 < 2^22), and one exact
 * FADD of -12582912 leaves (float)isum.
 *
 * CTA: 64 weight rows x 64 tokens, 128 threads = 4 warps in 2 x 2, each warp
 * 32 rows x 32 tokens = 2 (m16) x 4 (n8) MMAs per block.  K is staged 4
 * blocks (128 quants) at a time through shared memory: quants row-major with
 * a 144-byte row stride (conflict-free fragment reads: word 36*row + t is
 * bank 4*row + t for the 8 rows x 4 threads of a fragment), scales as f32
 * [block][row].  The next stage is fetched into registers while the current
 * one is multiplied.  Weight blocks sit at 2-byte offsets (34-byte blocks),
 * so a block is fetched as 17 16-bit loads and assembled into 8 words.
 * Row, token and block tails are zero-filled in shared memory (zero quants
 * and zero scale: the MMA adds 0, and steps past the last block are skipped,
 * so tails never change a sum); outputs past nrows / n are not written.
 * grid.x walks token tiles, grid.y row tiles: CTAs that run together share
 * a weight tile, so weights are read from DRAM about once.
 *
 * Fragment layouts relied on (PTX ISA, "Matrix Fragments for mma.m16n8k32",
 * .s8 A/B, .s32 C/D); g = lane >> 2 (groupID), t = lane & 3:
 *   A 16x32 row-major, 4 x .b32 of 4 s8 each (byte j of a register = k + j):
 *     a0 = A[g][4t..4t+3]      a1 = A[g+8][4t..4t+3]
 *     a2 = A[g][16+4t..+3]     a3 = A[g+8][16+4t..+3]
 *   B 32x8 "col" (= B^T row-major: token-major rows of k), 2 x .b32:
 *     b0 = B[4t..4t+3][g]      b1 = B[16+4t..+3][g]
 *   C/D 16x8 s32:
 *     c0 = C[g][2t]  c1 = C[g][2t+1]  c2 = C[g+8][2t]  c3 = C[g+8][2t+1]
 * Rows of A are weight rows, columns of B are tokens, k is the block's quant
 * index; a smem row holds one weight row's (or token's) quants, so a0 is the
 * 4-byte word at row g, byte 4t of the block, and so on.
 *
 * The gate.  An untested kernel must never change results: the first time
 * cu_mm_tc() is asked for a Q8_0 product (cu_mm_init() also asks, at
 * session creation, outside any graph capture), the kernel runs a device
 * self-test (cu_mma_selftest: 2 experts of 203 x 544 random Q8_0 rows,
 * product of expert 1, rows 3..202, with 40 tokens of strided activations:
 * row, token and K-stage tails) and compares with
 *   - quant_ref.c's vec_dot on the same activation bytes (expected bitwise),
 *   - the dp4a path (cu_mm_dp4a),
 * and checks that nothing outside the product was written.  Pass: both max
 * relative errors (max |diff| / max |ref|) <= 1e-5 and no stray writes;
 * otherwise one line on stderr and the path stays off for the process.
 * DS4_CUDA_MMA=0 turns the path off, DS4_CUDA_MMA=force skips the test.
 * While a stream is being captured and the test has not run yet, the product
 * falls back without deciding.  The state is a plain static: the backend is
 * driven from one host thread. */
#include "cuda/cu_common.cuh"

#include <math.h>
#include <string.h>

#define TC_BM 64                   /* weight rows per CTA */
#define TC_BN 64                   /* tokens per CTA */
#define TC_KB 4                    /* Q8_0 blocks per shared-memory stage */
#define TC_THREADS 128
#define TC_LD (TC_KB * 32 + 16)    /* bytes per smem row: 144 */
#define TC_TASKS (TC_BM * TC_KB / TC_THREADS) /* blocks each thread fetches per operand and stage: 2 */
#define TC_BIAS_BITS 0x4B400000
#define TC_BIAS 12582912.0f

static_assert(TC_BM == TC_BN, "the loader maps weight rows and tokens alike");
static_assert(TC_TASKS * TC_THREADS == TC_BM * TC_KB, "whole tasks per thread");

struct tc_args {
    const uint8_t *w; /* row 0 of the product */
    size_t w_bytes;   /* weight row stride */
    int64_t nrows;
    int64_t nb;       /* Q8_0 blocks per row */
    const uint8_t *x; /* Q8_0 activation rows */
    size_t x_bytes;
    int n;
    float *y;
    int64_t ldy;
};

/* One 34-byte Q8_0 block at a 2-byte aligned address: scale and 8 words of
 * quants (byte j of q[i] = quant 4i + j). */
__device__ __forceinline__ void tc_fetch_block(const uint8_t *p, bool ok, uint32_t q[8], float &d) {
    if (ok) {
        const uint16_t *h = (const uint16_t *)p;
        d = cu_h2f(h[0]);
#pragma unroll
        for (int i = 0; i < 8; i++) q[i] = (uint32_t)h[1 + 2 * i] | ((uint32_t)h[2 + 2 * i] << 16);
    } else {
        d = 0.0f;
#pragma unroll
        for (int i = 0; i < 8; i++) q[i] = 0;
    }
}

/* D = A * B + bias (int32), returned as the floats 12582912 + isum. */
__device__ __forceinline__ void tc_mma_biased(float c[4], const uint32_t a[4], const uint32_t b[2]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    int r0, r1, r2, r3;
    asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%10,%10,%10};\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "r"(TC_BIAS_BITS));
    c[0] = __int_as_float(r0);
    c[1] = __int_as_float(r1);
    c[2] = __int_as_float(r2);
    c[3] = __int_as_float(r3);
#else
    (void)a; (void)b;
    /* no int8 MMA below sm_80: NaN, so the self-test fails and the gate stays shut */
    c[0] = c[1] = c[2] = c[3] = __int_as_float(0x7fc00000);
#endif
}

__global__ void __launch_bounds__(TC_THREADS) k_mm_q8_0_tc(tc_args a) {
    __shared__ __align__(16) uint8_t sW[TC_BM * TC_LD];
    __shared__ __align__(16) uint8_t sX[TC_BN * TC_LD];
    __shared__ __align__(16) float sdW[TC_KB][TC_BM];
    __shared__ __align__(16) float sdX[TC_KB][TC_BN]; /* read as float2 */

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int g = lane >> 2, t = lane & 3;
    const int wm = (warp & 1) * 32, wn = (warp >> 1) * 32; /* warp tile origin in the CTA tile */
    const int c0 = blockIdx.x * TC_BN;                      /* first token */
    const int64_t r0 = (int64_t)blockIdx.y * TC_BM;         /* first weight row */

    /* loader: task i = tid + TC_THREADS*j -> row/token i / TC_KB, block i % TC_KB
     * (a row's TC_KB blocks are contiguous in memory: coalesced-ish) */
    uint32_t qw[TC_TASKS][8], qx[TC_TASKS][8];
    float dw_[TC_TASKS], dx_[TC_TASKS];
    auto fetch = [&](int64_t k0) {
#pragma unroll
        for (int j = 0; j < TC_TASKS; j++) {
            int i = tid + TC_THREADS * j, rr = i / TC_KB, kb = i % TC_KB;
            int64_t blk = k0 + kb;
            bool kin = blk < a.nb;
            int64_t wr = r0 + rr;
            int xt = c0 + rr;
            tc_fetch_block(a.w + (size_t)wr * a.w_bytes + (size_t)blk * 34, kin && wr < a.nrows, qw[j], dw_[j]);
            tc_fetch_block(a.x + (size_t)xt * a.x_bytes + (size_t)blk * 34, kin && xt < a.n, qx[j], dx_[j]);
        }
    };
    auto store = [&]() {
#pragma unroll
        for (int j = 0; j < TC_TASKS; j++) {
            int i = tid + TC_THREADS * j, rr = i / TC_KB, kb = i % TC_KB;
            uint4 *pw = (uint4 *)(sW + rr * TC_LD + kb * 32);
            uint4 *px = (uint4 *)(sX + rr * TC_LD + kb * 32);
            pw[0] = make_uint4(qw[j][0], qw[j][1], qw[j][2], qw[j][3]);
            pw[1] = make_uint4(qw[j][4], qw[j][5], qw[j][6], qw[j][7]);
            px[0] = make_uint4(qx[j][0], qx[j][1], qx[j][2], qx[j][3]);
            px[1] = make_uint4(qx[j][4], qx[j][5], qx[j][6], qx[j][7]);
            sdW[kb][rr] = dw_[j];
            sdX[kb][rr] = dx_[j];
        }
    };

    float acc[2][4][4];
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int nt = 0; nt < 4; nt++)
#pragma unroll
            for (int i = 0; i < 4; i++) acc[mt][nt][i] = 0.0f;

    const int64_t nstage = (a.nb + TC_KB - 1) / TC_KB;
    fetch(0);
    store();
    __syncthreads();
    for (int64_t s = 0; s < nstage; s++) {
        if (s + 1 < nstage) fetch((s + 1) * TC_KB);
        const int kbn = a.nb - s * TC_KB < TC_KB ? (int)(a.nb - s * TC_KB) : TC_KB; /* uniform */
#pragma unroll
        for (int kb = 0; kb < TC_KB; kb++) {
            if (kb >= kbn) break;
            uint32_t A[2][4], B[4][2];
            float sw[2][2], sx[4][2];
#pragma unroll
            for (int mt = 0; mt < 2; mt++) {
                const uint8_t *p = sW + (wm + mt * 16 + g) * TC_LD + kb * 32 + 4 * t;
                A[mt][0] = *(const uint32_t *)p;
                A[mt][1] = *(const uint32_t *)(p + 8 * TC_LD);
                A[mt][2] = *(const uint32_t *)(p + 16);
                A[mt][3] = *(const uint32_t *)(p + 8 * TC_LD + 16);
                sw[mt][0] = sdW[kb][wm + mt * 16 + g];
                sw[mt][1] = sdW[kb][wm + mt * 16 + g + 8];
            }
#pragma unroll
            for (int nt = 0; nt < 4; nt++) {
                const uint8_t *p = sX + (wn + nt * 8 + g) * TC_LD + kb * 32 + 4 * t;
                B[nt][0] = *(const uint32_t *)p;
                B[nt][1] = *(const uint32_t *)(p + 16);
                float2 d2 = *(const float2 *)&sdX[kb][wn + nt * 8 + 2 * t];
                sx[nt][0] = d2.x;
                sx[nt][1] = d2.y;
            }
#pragma unroll
            for (int mt = 0; mt < 2; mt++)
#pragma unroll
                for (int nt = 0; nt < 4; nt++) {
                    float c[4];
                    tc_mma_biased(c, A[mt], B[nt]);
#pragma unroll
                    for (int i = 0; i < 4; i++) {
                        float isum = __fsub_rn(c[i], TC_BIAS);               /* exact */
                        float sc = __fmul_rn(sw[mt][i >> 1], sx[nt][i & 1]); /* d_w * d_x */
                        acc[mt][nt][i] = __fadd_rn(acc[mt][nt][i], __fmul_rn(isum, sc));
                    }
                }
        }
        __syncthreads();
        if (s + 1 < nstage) {
            store();
            __syncthreads();
        }
    }

#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int nt = 0; nt < 4; nt++)
#pragma unroll
            for (int i = 0; i < 4; i++) {
                int64_t r = r0 + wm + mt * 16 + g + 8 * (i >> 1);
                int tok = c0 + wn + nt * 8 + 2 * t + (i & 1);
                if (r < a.nrows && tok < a.n) a.y[(int64_t)tok * a.ldy + r] = acc[mt][nt][i];
            }
}

/* ------------------------------------------------------------------------ */
/* Host side                                                                 */

int cu_mm_q8_0_tc(cudaStream_t st, const dmat *w, int64_t expert, int64_t row0, int64_t nrows, const float *X,
                  int64_t ldx, int n, float *Y, int64_t ldy, uint8_t *xq) {
    if (w->type != DS4_TYPE_Q8_0 || w->ne0 % 32 != 0 || n <= 0 || nrows <= 0) return 0;
    const uint8_t *base = w->d + ((size_t)expert * (size_t)w->ne1 + (size_t)row0) * w->row_bytes;
    if (((uintptr_t)base & 1) || (w->row_bytes & 1) || ((uintptr_t)xq & 1)) return 0;
    if ((nrows + TC_BM - 1) / TC_BM > 65535) return 0;
    cu_quant_q8_0(st, X, ldx, n, w->ne0, xq);
    tc_args a;
    a.w = base;
    a.w_bytes = w->row_bytes;
    a.nrows = nrows;
    a.nb = w->ne0 / 32;
    a.x = xq;
    a.x_bytes = cu_act_row_bytes(DS4_TYPE_Q8_0, w->ne0);
    a.n = n;
    a.y = Y;
    a.ldy = ldy;
    dim3 grid((unsigned)((n + TC_BN - 1) / TC_BN), (unsigned)((nrows + TC_BM - 1) / TC_BM));
    k_mm_q8_0_tc<<<grid, TC_THREADS, 0, st>>>(a);
    CU_LAUNCH_CHECK();
    return 1;
}

/* Small deterministic generator for the self-test's data. */
static uint32_t st_rng(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(*s >> 33);
}
static float st_unif(uint64_t *s) { return (float)(st_rng(s) & 0xffffff) / 16777216.0f; } /* [0, 1) */

void cu_mma_selftest(cu_mma_selftest_result *res) {
    enum { E = 2, NE1 = 203, NE0 = 544, EXPERT = 1, ROW0 = 3, NROWS = 200, NTOK = 40, LDX = NE0 + 8, LDY = NE1,
           YTOK = TC_BN /* Y has room for a whole token tile: writes past NTOK are caught too */ };
    const int64_t nb = NE0 / 32;
    const size_t rb = (size_t)nb * 34, wbytes = (size_t)E * NE1 * rb;
    const size_t xqb = (size_t)NTOK * cu_act_row_bytes(DS4_TYPE_Q8_0, NE0);
    memset(res, 0, sizeof *res);
    res->total = (long)NROWS * NTOK;
    res->rel_ref = res->rel_dp4a = INFINITY;

    uint64_t seed = 0x5eed0d54ull;
    uint8_t *hw = (uint8_t *)malloc(wbytes);
    float *hx = (float *)malloc(sizeof(float) * NTOK * LDX);
    float *ytc = (float *)malloc(sizeof(float) * YTOK * LDY);
    float *ydp = (float *)malloc(sizeof(float) * NTOK * LDY);
    uint8_t *hxq = (uint8_t *)malloc(xqb), *cxq = (uint8_t *)malloc(xqb);
    for (size_t b = 0; b < wbytes / 34; b++) {
        uint8_t *blk = hw + b * 34;
        float d = (0.25f + st_unif(&seed)) * 0.02f * (st_rng(&seed) & 1 ? -1.0f : 1.0f);
        if (b % 97 == 5) d = 0.0f;
        ds4_fp16 h = ds4_f32_to_fp16(d);
        memcpy(blk, &h, 2);
        for (int j = 0; j < 32; j++) blk[2 + j] = (uint8_t)st_rng(&seed); /* full int8 range, -128 included */
    }
    for (int tk = 0; tk < NTOK; tk++)
        for (int i = 0; i < LDX; i++) {
            float v = 2.0f * st_unif(&seed) - 1.0f;
            if ((i / 32 + tk) % 7 == 3) v *= 100.0f; /* blocks of very different scales */
            if ((i / 32) == 2 && tk == 5) v = 0.0f;  /* an all-zero block (d = 0) */
            hx[tk * LDX + i] = i < NE0 ? v : NAN;    /* padding past ne0 is never read */
        }

    cudaStream_t s;
    CU_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    /* one allocation; a failure (full VRAM) fails the test instead of aborting */
    const size_t o_x = (wbytes + 255) & ~(size_t)255, o_y1 = o_x + ((sizeof(float) * NTOK * LDX + 255) & ~(size_t)255);
    const size_t ysz = (sizeof(float) * YTOK * LDY + 255) & ~(size_t)255, o_y2 = o_y1 + ysz, o_q1 = o_y2 + ysz;
    const size_t o_q2 = o_q1 + ((xqb + 255) & ~(size_t)255), total = o_q2 + xqb;
    uint8_t *dmem = NULL;
    if (cudaMalloc(&dmem, total) != cudaSuccess) {
        (void)cudaGetLastError();
        CU_CHECK(cudaStreamDestroy(s));
        free(hw); free(hx); free(ytc); free(ydp); free(hxq); free(cxq);
        return; /* pass = 0, errors infinite */
    }
    uint8_t *dw = dmem, *dxq1 = dmem + o_q1, *dxq2 = dmem + o_q2;
    float *dx = (float *)(dmem + o_x), *dy1 = (float *)(dmem + o_y1), *dy2 = (float *)(dmem + o_y2);
    CU_CHECK(cudaMemcpyAsync(dw, hw, wbytes, cudaMemcpyHostToDevice, s));
    CU_CHECK(cudaMemcpyAsync(dx, hx, sizeof(float) * NTOK * LDX, cudaMemcpyHostToDevice, s));
    CU_CHECK(cudaMemsetAsync(dy1, 0xff, sizeof(float) * YTOK * LDY, s)); /* NaN sentinel */
    CU_CHECK(cudaMemsetAsync(dy2, 0xff, sizeof(float) * NTOK * LDY, s));
    dmat w = {dw, DS4_TYPE_Q8_0, NE0, NE1, E, rb};
    int ran = cu_mm_q8_0_tc(s, &w, EXPERT, ROW0, NROWS, dx, LDX, NTOK, dy1, LDY, dxq1);
    cu_mm_dp4a(s, &w, EXPERT, ROW0, NROWS, dx, LDX, NTOK, dy2, LDY, dxq2);
    CU_CHECK(cudaMemcpyAsync(ytc, dy1, sizeof(float) * YTOK * LDY, cudaMemcpyDeviceToHost, s));
    CU_CHECK(cudaMemcpyAsync(ydp, dy2, sizeof(float) * NTOK * LDY, cudaMemcpyDeviceToHost, s));
    CU_CHECK(cudaMemcpyAsync(cxq, dxq1, xqb, cudaMemcpyDeviceToHost, s));
    CU_CHECK(cudaStreamSynchronize(s));
    CU_CHECK(cudaFree(dmem));
    CU_CHECK(cudaStreamDestroy(s));

    const ds4_type_traits *tr = ds4_type_traits_ref(DS4_TYPE_Q8_0);
    const ds4_type_traits *tx = ds4_type_traits_ref(tr->vec_dot_type);
    const size_t xr = cu_act_row_bytes(DS4_TYPE_Q8_0, NE0);
    for (int tk = 0; tk < NTOK; tk++) tx->from_float(hx + tk * LDX, hxq + tk * xr, NE0);
    res->xq_equal = memcmp(hxq, cxq, xqb) == 0;

    double md_ref = 0, mx_ref = 0, md_dp = 0, mx_dp = 0;
    bool bad = !ran;
    for (int tk = 0; tk < YTOK; tk++)
        for (int r = 0; r < LDY; r++) {
            float a = ytc[tk * LDY + r], b = tk < NTOK ? ydp[tk * LDY + r] : 0.0f;
            if (r >= NROWS || tk >= NTOK) { /* never written: still the NaN sentinel */
                uint32_t ba;
                memcpy(&ba, &a, 4);
                if (ba != 0xffffffffu) res->stray++;
                continue;
            }
            /* the CPU reference on the device's activation bytes */
            float ref = tr->vec_dot(NE0, hw + ((size_t)EXPERT * NE1 + ROW0 + r) * rb, cxq + tk * xr);
            if (!isfinite(a) || !isfinite(b)) bad = true; /* a broken control fails safe too */
            if (memcmp(&a, &ref, 4) == 0) res->bitwise++;
            md_ref = fmax(md_ref, fabs((double)a - ref));
            mx_ref = fmax(mx_ref, fabs((double)ref));
            md_dp = fmax(md_dp, fabs((double)a - b));
            mx_dp = fmax(mx_dp, fabs((double)b));
        }
    if (!bad) {
        res->rel_ref = mx_ref > 0 ? md_ref / mx_ref : md_ref;
        res->rel_dp4a = mx_dp > 0 ? md_dp / mx_dp : md_dp;
    }
    res->pass = !bad && res->stray == 0 && res->rel_ref <= 1e-5 && res->rel_dp4a <= 1e-5;
    free(hw); free(hx); free(ytc); free(ydp); free(hxq); free(cxq);
}

static int g_tc_state = 0; /* 1 on, -1 off, 0 undecided */

int cu_mma_state(void) { return g_tc_state; }

/* Decides the gate if it can (see the file comment); returns whether the
 * Q8_0 tensor-core path may run now. */
static bool tc_gate(cudaStream_t st) {
    if (g_tc_state) return g_tc_state > 0;
    const char *e = getenv("DS4_CUDA_MMA");
    if (e && strcmp(e, "0") == 0) { g_tc_state = -1; return false; }
    int dev = 0, major = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
        major < 8) {
        g_tc_state = -1;
        return false;
    }
    if (e && strcmp(e, "force") == 0) { g_tc_state = 1; return true; }
    cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(st, &cs) == cudaSuccess && cs != cudaStreamCaptureStatusNone) return false;
    cu_mma_selftest_result r;
    cu_mma_selftest(&r);
    if (r.pass) {
        g_tc_state = 1;
    } else {
        g_tc_state = -1;
        double err = r.rel_ref > r.rel_dp4a ? r.rel_ref : r.rel_dp4a;
        fprintf(stderr,
                "ds4: tensor-core Q8_0 prefill disabled: self-test max rel err %g (vs CPU %g, vs dp4a %g, "
                "bitwise %ld/%ld, stray writes %ld)\n",
                err, r.rel_ref, r.rel_dp4a, r.bitwise, r.total, r.stray);
    }
    return g_tc_state > 0;
}

/* Called from cu_mm_init() (session creation, before any capture) so the
 * self-test never runs in the middle of a prefill. */
void cu_mma_init(void) {
    if (!g_tc_state) tc_gate(0);
}

int cu_mm_tc(cudaStream_t st, const dmat *w, int64_t expert, int64_t row0, int64_t nrows, const float *X,
             int64_t ldx, int n, float *Y, int64_t ldy, uint8_t *xq) {
    if (w->type != DS4_TYPE_Q8_0 || n < 16) return 0;
    if (!tc_gate(st)) return 0;
    return cu_mm_q8_0_tc(st, w, expert, row0, nrows, X, ldx, n, Y, ldy, xq);
}
