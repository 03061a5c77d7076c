/* Element-wise and per-token kernels of the forward pass (forward.c's small
 * loops): RMSNorm, the per-head norm/RoPE/QAT post-processing, hyper-
 * connection pre/post with Sinkhorn, the router (sqrt-softplus, hash or
 * biased top-k), device-side grouping of routed rows by expert, SwiGLU with
 * clamp, gather/combine, the HC head.  Each kernel states the forward.c
 * function it mirrors; the arithmetic is done in the same order. */
#include "cuda/cu_ops.cuh"
#include "cuda/cu_rowops.cuh"

/* ---- RMSNorm over rows ---- */

__global__ void k_rmsnorm(const float *X, int64_t ldx, const float *w, int64_t len, float eps, float *Y,
                          int64_t ldy) {
    const float *x = X + blockIdx.x * ldx;
    float *y = Y + blockIdx.x * ldy;
    double ss = 0;
    for (int64_t i = threadIdx.x; i < len; i += blockDim.x) ss += (double)x[i] * (double)x[i];
    ss = cu_block_sum_d(ss);
    float scale = (float)(1.0 / sqrt(ss / (double)len + eps));
    for (int64_t i = threadIdx.x; i < len; i += blockDim.x) y[i] = w ? x[i] * scale * w[i] : x[i] * scale;
}

void cu_rmsnorm(cudaStream_t st, const float *X, int64_t ldx, const float *w, int64_t len, float eps, int n, float *Y,
                int64_t ldy) {
    if (n <= 0) return;
    k_rmsnorm<<<n, 256, 0, st>>>(X, ldx, w, len, eps, Y, ldy);
    CU_LAUNCH_CHECK();
}

/* ---- Per-row post-processing: [norm] -> [RoPE at p0 + t] -> [FP8 on the
 * first fp8_len dims] -> [Hadamard + FP4 over the row] -> [scale] ---- */

__global__ void k_row_post(float *X, int64_t ld_t, int nh, int d, int do_norm, const float *normw, float eps, int rd,
                           const float *inv_freq, const int *p0, int fp8_len, int had_fp4) {
    extern __shared__ float row[];
    int t = blockIdx.x / nh, h = blockIdx.x % nh;
    float *x = X + t * ld_t + (int64_t)h * d;
    for (int i = threadIdx.x; i < d; i += blockDim.x) row[i] = x[i];
    if (do_norm) row_rmsnorm(row, d, normw, eps);
    if (rd > 0) row_rope(row, d, rd, inv_freq, (int64_t)*p0 + t, 1);
    if (fp8_len > 0) row_fp8(row, fp8_len);
    if (had_fp4) { row_hadamard(row, d); row_fp4(row, d); }
    __syncthreads();
    for (int i = threadIdx.x; i < d; i += blockDim.x) x[i] = row[i];
}

void cu_row_post(cudaStream_t st, float *X, int64_t ld_t, int n, int nh, int d, int do_norm, const float *normw,
                 float eps, int rd, const float *inv_freq, const int *p0, int fp8_len, int had_fp4) {
    if (n <= 0) return;
    k_row_post<<<n * nh, 128, sizeof(float) * d, st>>>(X, ld_t, nh, d, do_norm, normw, eps, rd, inv_freq, p0, fp8_len,
                                                       had_fp4);
    CU_LAUNCH_CHECK();
}

__global__ void k_scale(float *x, int64_t n, float s) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] *= s;
}

void cu_scale(cudaStream_t st, float *x, int64_t n, float s) {
    if (n <= 0) return;
    k_scale<<<(unsigned)((n + 255) / 256), 256, 0, st>>>(x, n, s);
    CU_LAUNCH_CHECK();
}

/* ---- Hyper-connections (forward.c hc_pre / sinkhorn / hc_post) ---- */

__device__ __forceinline__ float sigm(float x) { return 1.0f / (1.0f + expf(-x)); }

__global__ void k_hc_pre(const float *mix, int NM, const float *scale, const float *base, const float *X, int H,
                         int64_t D, int iters, float hc_eps, float *post, float *comb, float *xout) {
    __shared__ float pre[16], C[256];
    int t = blockIdx.x;
    const float *m = mix + (int64_t)t * NM;
    if (threadIdx.x == 0) {
        for (int j = 0; j < H; j++) {
            pre[j] = sigm(m[j] * scale[0] + base[j]) + hc_eps;
            post[t * H + j] = 2.0f * sigm(m[H + j] * scale[1] + base[H + j]);
        }
        for (int i = 0; i < H * H; i++) C[i] = m[2 * H + i] * scale[2] + base[2 * H + i];
        for (int j = 0; j < H; j++) {
            float *r = C + j * H, mx = r[0], sum = 0;
            for (int k = 1; k < H; k++) mx = fmaxf(mx, r[k]);
            for (int k = 0; k < H; k++) { r[k] = expf(r[k] - mx); sum += r[k]; }
            for (int k = 0; k < H; k++) r[k] = r[k] / sum + hc_eps;
        }
        for (int it = 0; it < iters; it++) {
            if (it > 0)
                for (int j = 0; j < H; j++) {
                    float sum = 0;
                    for (int k = 0; k < H; k++) sum += C[j * H + k];
                    for (int k = 0; k < H; k++) C[j * H + k] /= sum + hc_eps;
                }
            for (int k = 0; k < H; k++) {
                float sum = 0;
                for (int j = 0; j < H; j++) sum += C[j * H + k];
                for (int j = 0; j < H; j++) C[j * H + k] /= sum + hc_eps;
            }
        }
        for (int i = 0; i < H * H; i++) comb[t * H * H + i] = C[i];
    }
    __syncthreads();
    const float *Xt = X + (int64_t)t * H * D;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
        float acc = 0;
        for (int j = 0; j < H; j++) acc += pre[j] * Xt[j * D + d];
        xout[t * D + d] = acc;
    }
}

void cu_hc_pre(cudaStream_t st, const float *mix, int NM, const float *scale, const float *base, const float *X, int H,
               int64_t D, int iters, float hc_eps, int n, float *post, float *comb, float *xout) {
    k_hc_pre<<<n, 256, 0, st>>>(mix, NM, scale, base, X, H, D, iters, hc_eps, post, comb, xout);
    CU_LAUNCH_CHECK();
}

__global__ void k_hc_post(float *X, const float *out, const float *post, const float *comb, int H, int64_t D, int n) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (int64_t)n * D) return;
    int t = (int)(i / D);
    int64_t d = i % D;
    float *Xt = X + (int64_t)t * H * D;
    const float *p = post + t * H, *C = comb + t * H * H;
    float old[16];
    for (int j = 0; j < H; j++) old[j] = Xt[j * D + d];
    float o = out[t * D + d];
    for (int k = 0; k < H; k++) {
        float acc = p[k] * o;
        for (int j = 0; j < H; j++) acc += C[j * H + k] * old[j];
        Xt[k * D + d] = acc;
    }
}

void cu_hc_post(cudaStream_t st, float *X, const float *out, const float *post, const float *comb, int H, int64_t D,
                int n) {
    int64_t tot = (int64_t)n * D;
    k_hc_post<<<(unsigned)((tot + 255) / 256), 256, 0, st>>>(X, out, post, comb, H, D, n);
    CU_LAUNCH_CHECK();
}

/* Token embedding replicated into the H streams. */
__global__ void k_replicate(float *X, int H, int64_t D, int n) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (int64_t)n * D) return;
    int t = (int)(i / D);
    int64_t d = i % D;
    float v = X[(int64_t)t * H * D + d];
    for (int j = 1; j < H; j++) X[(int64_t)t * H * D + j * D + d] = v;
}

void cu_replicate_streams(cudaStream_t st, float *X, int H, int64_t D, int n) {
    int64_t tot = (int64_t)n * D;
    k_replicate<<<(unsigned)((tot + 255) / 256), 256, 0, st>>>(X, H, D, n);
    CU_LAUNCH_CHECK();
}

/* ---- HC head (forward.c head): y = sum_j w_j X_j, then RMSNorm(out_norm) ---- */

__global__ void k_head_mix(const float *X, const float *mix, const float *scale, const float *base, int H, int64_t D,
                           float hc_eps, const float *out_norm, float eps, float *Y) {
    extern __shared__ float y[];
    int t = blockIdx.x;
    const float *Xt = X + (int64_t)t * H * D;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
        float acc = 0;
        for (int j = 0; j < H; j++) {
            float w = sigm(mix[t * H + j] * scale[0] + base[j]) + hc_eps;
            acc += w * Xt[j * D + d];
        }
        y[d] = acc;
    }
    row_rmsnorm(y, (int)D, out_norm, eps);
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) Y[t * D + d] = y[d];
}

void cu_head_mix(cudaStream_t st, const float *X, const float *mix, const float *scale, const float *base, int H,
                 int64_t D, float hc_eps, const float *out_norm, float eps, int n, float *Y) {
    k_head_mix<<<n, 256, sizeof(float) * D, st>>>(X, mix, scale, base, H, D, hc_eps, out_norm, eps, Y);
    CU_LAUNCH_CHECK();
}

/* ---- Router (forward.c route): one warp per token ---- */

__global__ void k_router(float *sc, int E, int k, const int32_t *tid2eid, const int32_t *tok, const float *bias,
                         int norm, float wscale, int n, int32_t *eid, float *ew) {
    int t = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (t >= n) return;
    float *s = sc + (int64_t)t * E;
    for (int e = lane; e < E; e += 32) {
        float z = s[e];
        float sp = z > 20.0f ? z : log1pf(expf(z));
        s[e] = sqrtf(sp);
    }
    __syncwarp();
    int32_t *ids = eid + t * k;
    if (tid2eid) {
        for (int i = lane; i < k; i += 32) ids[i] = tid2eid[(int64_t)tok[t] * k + i];
    } else {
        for (int i = 0; i < k; i++) {
            int best = -1;
            float bv = -INFINITY;
            for (int e = lane; e < E; e += 32) {
                bool used = false;
                for (int q = 0; q < i; q++) used |= ids[q] == e;
                float v = s[e] + bias[e];
                if (!used && (best < 0 || v > bv)) { best = e; bv = v; }
            }
            for (int o = 16; o > 0; o >>= 1) {
                float ov = __shfl_xor_sync(0xffffffffu, bv, o);
                int ob = __shfl_xor_sync(0xffffffffu, best, o);
                if (ob >= 0 && (best < 0 || ov > bv || (ov == bv && ob < best))) { best = ob; bv = ov; }
            }
            if (lane == 0) ids[i] = best;
            __syncwarp();
        }
    }
    __syncwarp();
    if (lane == 0) {
        float *w = ew + t * k, sum = 0;
        for (int i = 0; i < k; i++) { w[i] = s[ids[i]]; sum += w[i]; }
        if (norm) {
            if (sum < 6.103515625e-5f) sum = 6.103515625e-5f;
            for (int i = 0; i < k; i++) w[i] /= sum;
        }
        for (int i = 0; i < k; i++) w[i] *= wscale;
    }
}

void cu_router(cudaStream_t st, float *scores, int E, int k, const int32_t *tid2eid, const int32_t *tok,
               const float *bias, int norm, float wscale, int n, int32_t *eid, float *ew) {
    k_router<<<(n + 3) / 4, 128, 0, st>>>(scores, E, k, tid2eid, tok, bias, norm, wscale, n, eid, ew);
    CU_LAUNCH_CHECK();
}

/* ---- Grouping routed rows by expert, on the device ----
 * Row (t, i) of the n*k routed rows goes to the segment of expert eid[t*k+i];
 * segments are in ascending expert id, rows inside in (t, i) order (the
 * CPU's order), and a segment longer than seg_cap rows is split so that a
 * grid sized for seg_cap rows covers it.  One thread: n*k is at most a few
 * thousand and this keeps the order deterministic. */
__global__ void k_moe_group(const int32_t *eid, const float *ew, int n, int k, int E, int seg_cap, int nseg_max,
                            int *counts, int *seg_off, int32_t *seg_eid, int32_t *row_tok, float *row_w,
                            int32_t *slot_row, int *info) {
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    int R = n * k;
    for (int e = 0; e < E; e++) counts[e] = 0;
    for (int r = 0; r < R; r++) counts[eid[r]]++;
    /* counts -> start offsets (exclusive prefix) */
    int off = 0, nseg = 0, maxc = 0;
    for (int e = 0; e < E; e++) {
        int c = counts[e];
        counts[e] = off;
        for (int s = 0; s < c; s += seg_cap) {
            int len = c - s < seg_cap ? c - s : seg_cap;
            seg_off[nseg] = off + s;
            seg_eid[nseg] = e;
            nseg++;
            if (len > maxc) maxc = len;
        }
        off += c;
    }
    for (int z = nseg; z <= nseg_max; z++) seg_off[z] = R;
    for (int z = nseg; z < nseg_max; z++) seg_eid[z] = -1;
    for (int t = 0; t < n; t++)
        for (int i = 0; i < k; i++) {
            int r = counts[eid[t * k + i]]++;
            row_tok[r] = t;
            row_w[r] = ew[t * k + i];
            slot_row[t * k + i] = r;
        }
    info[0] = nseg;
    info[1] = maxc;
}

void cu_moe_group(cudaStream_t st, const int32_t *eid, const float *ew, int n, int k, int E, int seg_cap,
                  int nseg_max, int *counts, int *seg_off, int32_t *seg_eid, int32_t *row_tok, float *row_w,
                  int32_t *slot_row, int *info) {
    k_moe_group<<<1, 32, 0, st>>>(eid, ew, n, k, E, seg_cap, nseg_max, counts, seg_off, seg_eid, row_tok, row_w,
                                  slot_row, info);
    CU_LAUNCH_CHECK();
}

/* Weight pointers per segment from a layer's resident table (NULL: empty). */
__global__ void k_fill_wtab(const int32_t *seg_eid, int nseg_max, const uint8_t *const *tab_g,
                            const uint8_t *const *tab_u, const uint8_t *const *tab_d, const uint8_t **wg,
                            const uint8_t **wu, const uint8_t **wd) {
    int z = blockIdx.x * blockDim.x + threadIdx.x;
    if (z >= nseg_max) return;
    int e = seg_eid[z];
    wg[z] = e >= 0 ? tab_g[e] : NULL;
    wu[z] = e >= 0 ? tab_u[e] : NULL;
    wd[z] = e >= 0 ? tab_d[e] : NULL;
}

void cu_fill_wtab(cudaStream_t st, const int32_t *seg_eid, int nseg_max, const uint8_t *const *tab_g,
                  const uint8_t *const *tab_u, const uint8_t *const *tab_d, const uint8_t **wg, const uint8_t **wu,
                  const uint8_t **wd) {
    k_fill_wtab<<<(nseg_max + 127) / 128, 128, 0, st>>>(seg_eid, nseg_max, tab_g, tab_u, tab_d, wg, wu, wd);
    CU_LAUNCH_CHECK();
}

__global__ void k_gather(const float *X, int64_t D, const int32_t *row_tok, int R, float *out) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (int64_t)R * D) return;
    int r = (int)(i / D);
    out[i] = X[(int64_t)row_tok[r] * D + i % D];
}

void cu_gather_rows(cudaStream_t st, const float *X, int64_t D, const int32_t *row_tok, int R, float *out) {
    int64_t tot = (int64_t)R * D;
    k_gather<<<(unsigned)((tot + 255) / 256), 256, 0, st>>>(X, D, row_tok, R, out);
    CU_LAUNCH_CHECK();
}

/* forward.c swiglu_clamped, times the row's routing weight (rw may be NULL). */
__global__ void k_swiglu(float *g, const float *u, int64_t F, int R, const float *rw, float c) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (int64_t)R * F) return;
    float gv = g[i], uv = u[i];
    if (c > 1e-6f) {
        gv = fminf(gv, c);
        uv = fminf(fmaxf(uv, -c), c);
    }
    float scale = rw ? rw[i / F] : 1.0f;
    g[i] = gv / (1.0f + expf(-gv)) * uv * scale;
}

void cu_swiglu(cudaStream_t st, float *g, const float *u, int64_t F, int R, const float *rw, float clamp) {
    int64_t tot = (int64_t)R * F;
    if (tot <= 0) return;
    k_swiglu<<<(unsigned)((tot + 255) / 256), 256, 0, st>>>(g, u, F, R, rw, clamp);
    CU_LAUNCH_CHECK();
}

/* out[t] += sum_i Y[slot_row[t*k+i]] */
__global__ void k_combine(float *out, const float *Y, int64_t D, const int32_t *slot_row, int k, int n) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (int64_t)n * D) return;
    int t = (int)(i / D);
    int64_t d = i % D;
    float acc = out[i];
    for (int j = 0; j < k; j++) acc += Y[(int64_t)slot_row[t * k + j] * D + d];
    out[i] = acc;
}

void cu_combine(cudaStream_t st, float *out, const float *Y, int64_t D, const int32_t *slot_row, int k, int n) {
    int64_t tot = (int64_t)n * D;
    k_combine<<<(unsigned)((tot + 255) / 256), 256, 0, st>>>(out, Y, D, slot_row, k, n);
    CU_LAUNCH_CHECK();
}

__global__ void k_fill(float *x, int64_t n, float v) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = v;
}

void cu_fill(cudaStream_t st, float *x, int64_t n, float v) {
    if (n <= 0) return;
    k_fill<<<(unsigned)((n + 255) / 256), 256, 0, st>>>(x, n, v);
    CU_LAUNCH_CHECK();
}
