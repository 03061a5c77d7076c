/* Attention-side kernels: compressors (streaming softmax pooling per block),
 * the lightning indexer (scores + exact top-k), attention with sinks over
 * the raw window and compressed rows, and the ring update.  Mirrors
 * forward.c's compressor_push / run_compressors / indexer_task / attn_task. */
#include "cuda/cu_ops.cuh"
#include "cuda/cu_rowops.cuh"

/* ---- Compressor: one block walks the batch's tokens in order (the frontier
 * is sequential state); each emitted row is pooled, normalised, rotated at
 * position row*m and QAT-rounded like the CPU. ---- */
__global__ void k_compress(const float *a, float *z, int n, const int *p0p, int m, int d, const float *ape, float *fkv,
                           float *fsc, float *rows, const float *normw, float eps, int rd, const float *inv_freq,
                           int post) {
    extern __shared__ float row[];
    int c = m == 4 ? 2 : 1, w = c * d;
    int64_t p0 = *p0p;
    for (int t = 0; t < n; t++) {
        int64_t pos = p0 + t;
        int slot = m == 4 ? m + (int)(pos % m) : (int)(pos % m);
        const float *at = a + (int64_t)t * w;
        float *zt = z + (int64_t)t * w;
        const float *ap = ape + (int64_t)(pos % m) * w;
        for (int i = threadIdx.x; i < w; i += blockDim.x) {
            fkv[(int64_t)slot * w + i] = at[i];
            fsc[(int64_t)slot * w + i] = zt[i] + ap[i];
        }
        __syncthreads();
        if ((pos + 1) % m != 0) continue;
        int rows_n = c * m;
        for (int e = threadIdx.x; e < d; e += blockDim.x) {
            float mx = -INFINITY;
            for (int r = 0; r < rows_n; r++) {
                int col = m == 4 ? (r < m ? e : d + e) : e;
                mx = fmaxf(mx, fsc[(int64_t)r * w + col]);
            }
            double num = 0, den = 0;
            for (int r = 0; r < rows_n; r++) {
                int col = m == 4 ? (r < m ? e : d + e) : e;
                float sc = fsc[(int64_t)r * w + col];
                if (sc == -INFINITY) continue;
                float p = expf(sc - mx);
                den += p;
                num += (double)p * fkv[(int64_t)r * w + col];
            }
            row[e] = den > 0 ? (float)(num / den) : 0.0f;
        }
        int64_t idx = (pos + 1) / m - 1;
        row_rmsnorm(row, d, normw, eps);
        row_rope(row, d, rd, inv_freq, idx * m, 1);
        if (post == 1) row_fp8(row, d - rd);
        if (post == 2) { row_hadamard(row, d); row_fp4(row, d); }
        __syncthreads();
        for (int e = threadIdx.x; e < d; e += blockDim.x) rows[idx * d + e] = row[e];
        if (m == 4) {
            /* this block's second half becomes the next block's first half */
            for (int i = threadIdx.x; i < m * w; i += blockDim.x) {
                float kv = fkv[(int64_t)m * w + i], sc = fsc[(int64_t)m * w + i];
                fkv[i] = kv;
                fsc[i] = sc;
            }
        }
        __syncthreads();
    }
}

void cu_compress(cudaStream_t st, const float *a, float *z, int n, const int *p0, int m, int d, const float *ape,
                 float *fkv, float *fsc, float *rows, const float *normw, float eps, int rd, const float *inv_freq,
                 int post) {
    k_compress<<<1, 256, sizeof(float) * d, st>>>(a, z, n, p0, m, d, ape, fkv, fsc, rows, normw, eps, rd, inv_freq,
                                                  post);
    CU_LAUNCH_CHECK();
}

/* ---- Indexer scores: one warp per (token, row); the token's queries and
 * weights sit in shared memory. ---- */
__global__ void k_idx_scores(const float *q, const float *w, const float *rows, int nI, int dI, const int *p0p,
                             float *scores, int64_t lds) {
    extern __shared__ float sq[]; /* [nI*dI] queries, then [nI] weights */
    int t = blockIdx.y;
    int nvis = (int)((*p0p + t + 1) / 4);
    int rpb = blockDim.x >> 5;
    int i = blockIdx.x * rpb + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (blockIdx.x * rpb >= nvis) return; /* whole block past the visible rows */
    const float *qt = q + (int64_t)t * nI * dI;
    for (int j = threadIdx.x; j < nI * dI; j += blockDim.x) sq[j] = qt[j];
    for (int j = threadIdx.x; j < nI; j += blockDim.x) sq[nI * dI + j] = w[t * nI + j];
    __syncthreads();
    if (i >= nvis) return;
    const float *k = rows + (int64_t)i * dI;
    float acc = 0;
    for (int h = 0; h < nI; h++) {
        const float *qh = sq + h * dI;
        float dot = 0;
        for (int e = lane; e < dI; e += 32) dot += qh[e] * k[e];
        dot = cu_warp_sum(dot);
        if (dot > 0) acc += sq[nI * dI + h] * dot;
    }
    if (lane == 0) scores[(int64_t)t * lds + i] = acc;
}

void cu_idx_scores(cudaStream_t st, const float *q, const float *w, const float *rows, int n, int nI, int dI,
                   const int *p0, int max_vis, float *scores, int64_t lds) {
    if (max_vis <= 0 || n <= 0) return;
    dim3 grid((unsigned)((max_vis + 7) / 8), (unsigned)n);
    size_t sh = sizeof(float) * ((size_t)nI * dI + nI);
    k_idx_scores<<<grid, 256, sh, st>>>(q, w, rows, nI, dI, p0, scores, lds);
    CU_LAUNCH_CHECK();
}

/* ---- Exact top-K by radix select on order-preserving keys, then an
 * index-ordered compaction that takes every key above the threshold and
 * the lowest-index ties (the CPU heap's tie rule), so the selection is the
 * CPU's set, emitted in ascending row order as the CPU sorts it. ---- */

__device__ __forceinline__ uint32_t f2key(float f) {
    if (f == 0.0f) f = 0.0f; /* -0 ties with +0 as on the CPU */
    uint32_t u = __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/* Block exclusive scan of one int per thread (blockDim.x = 1024); returns
 * the exclusive prefix and sets *total. */
__device__ int block_scan_excl(int v, int *total) {
    __shared__ int ws[32];
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    int x = v;
    for (int o = 1; o < 32; o <<= 1) {
        int y = __shfl_up_sync(0xffffffffu, x, o);
        if (lane >= o) x += y;
    }
    __syncthreads();
    if (lane == 31) ws[wid] = x;
    __syncthreads();
    if (wid == 0) {
        int s = lane < nw ? ws[lane] : 0;
        for (int o = 1; o < 32; o <<= 1) {
            int y = __shfl_up_sync(0xffffffffu, s, o);
            if (lane >= o) s += y;
        }
        ws[lane] = s; /* inclusive prefix over warps */
    }
    __syncthreads();
    int before = wid > 0 ? ws[wid - 1] : 0;
    *total = ws[nw - 1];
    return before + x - v;
}

__global__ void __launch_bounds__(1024) k_idx_topk(const float *scores, int64_t lds, const int *p0p, int K, int32_t *sel) {
    __shared__ int hist[256];
    __shared__ uint32_t s_prefix;
    __shared__ int s_krem;
    int t = blockIdx.x;
    int nvis = (int)((*p0p + t + 1) / 4);
    int32_t *out = sel + (int64_t)t * (K + 1);
    if (nvis <= K) {
        if (threadIdx.x == 0) out[0] = -1;
        return;
    }
    const float *sc = scores + (int64_t)t * lds;
    if (threadIdx.x == 0) { s_prefix = 0; s_krem = K; }
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int b = threadIdx.x; b < 256; b += blockDim.x) hist[b] = 0;
        __syncthreads();
        uint32_t prefix = s_prefix;
        uint32_t himask = shift == 24 ? 0u : (0xffffffffu << (shift + 8));
        for (int i = threadIdx.x; i < nvis; i += blockDim.x) {
            uint32_t key = f2key(sc[i]);
            if ((key & himask) == prefix) atomicAdd(&hist[(key >> shift) & 255], 1);
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            int krem = s_krem, cum = 0;
            for (int b = 255; b >= 0; b--) {
                if (cum + hist[b] >= krem) {
                    s_krem = krem - cum;
                    s_prefix = prefix | ((uint32_t)b << shift);
                    break;
                }
                cum += hist[b];
            }
        }
        __syncthreads();
    }
    uint32_t T = s_prefix;
    int take_eq = s_krem; /* ties at T to keep, lowest indices first */
    int eq_base = 0, out_base = 0;
    for (int c0 = 0; c0 < nvis; c0 += blockDim.x) {
        int i = c0 + threadIdx.x;
        uint32_t key = i < nvis ? f2key(sc[i]) : 0u;
        int gt = i < nvis && key > T, eq = i < nvis && key == T;
        int eq_tot, sel_tot;
        int eq_before = block_scan_excl(eq, &eq_tot);
        int take = gt || (eq && eq_base + eq_before < take_eq);
        int pos = block_scan_excl(take, &sel_tot);
        if (take) out[out_base + pos] = i;
        eq_base += eq_tot;
        out_base += sel_tot;
    }
    if (threadIdx.x == 0) out[K] = -1;
}

void cu_idx_topk(cudaStream_t st, const float *scores, int64_t lds, int n, const int *p0, int K, int32_t *sel) {
    if (n <= 0) return;
    k_idx_topk<<<n, 1024, 0, st>>>(scores, lds, p0, K, sel);
    CU_LAUNCH_CHECK();
}

/* ---- Attention: one block per (head, token). ---- */
__global__ void k_attention(const float *q, const float *kvb, const float *ring, const float *comp, const int32_t *sel,
                            int K, const float *sinks, int nh, int dh, int rd, int W, int m, const int *p0p,
                            const float *inv_freq, float *o) {
    extern __shared__ float sm[]; /* q[dh], o[dh], scores[rows] */
    float *sq = sm, *so = sm + dh, *ss = sm + 2 * dh;
    int h = blockIdx.x, t = blockIdx.y;
    int64_t p0 = *p0p, pos = p0 + t;
    const float *qh = q + ((int64_t)t * nh + h) * dh;
    float scale = 1.0f / sqrtf((float)dh);
    int64_t lo = pos - W + 1 > 0 ? pos - W + 1 : 0;
    int nraw = (int)(pos - lo + 1);
    int nvis = m > 0 ? (int)((pos + 1) / m) : 0;
    const int32_t *cand = NULL;
    int ncomp = nvis;
    if (m == 4 && sel) {
        const int32_t *c = sel + (int64_t)t * (K + 1);
        if (c[0] >= 0) { cand = c; ncomp = K; }
    }
    int nrows = nraw + ncomp;
    for (int e = threadIdx.x; e < dh; e += blockDim.x) sq[e] = qh[e];
    __syncthreads();
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
#define ROW_PTR(r)                                                                                              \
    ((r) < nraw ? ((lo + (r)) >= p0 ? kvb + (lo + (r) - p0) * dh : ring + ((lo + (r)) % W) * dh)             \
                : comp + (int64_t)(cand ? cand[(r) - nraw] : (r) - nraw) * dh)
    for (int r = wid; r < nrows; r += nw) {
        const float *kr = ROW_PTR(r);
        float dot = 0;
        for (int e = lane; e < dh; e += 32) dot += sq[e] * kr[e];
        dot = cu_warp_sum(dot);
        if (lane == 0) ss[r] = dot * scale;
    }
    __syncthreads();
    float mx = sinks[h];
    for (int r = threadIdx.x; r < nrows; r += blockDim.x) mx = fmaxf(mx, ss[r]);
    mx = cu_block_max(mx);
    double den = 0;
    for (int r = threadIdx.x; r < nrows; r += blockDim.x) {
        float p = expf(ss[r] - mx);
        ss[r] = p;
        den += p;
    }
    den = cu_block_sum_d(den) + (double)expf(sinks[h] - mx);
    __syncthreads();
    for (int e = threadIdx.x; e < dh; e += blockDim.x) {
        float acc = 0;
        for (int r = 0; r < nrows; r++) acc += ss[r] * ROW_PTR(r)[e];
        so[e] = (float)(acc / den);
    }
#undef ROW_PTR
    row_rope(so, dh, rd, inv_freq, pos, -1);
    float *ot = o + ((int64_t)t * nh + h) * dh;
    for (int e = threadIdx.x; e < dh; e += blockDim.x) ot[e] = so[e];
}

void cu_attention(cudaStream_t st, const float *q, const float *kvb, const float *ring, const float *comp,
                  const int32_t *sel, int K, const float *sinks, int n, int nh, int dh, int rd, int W, int m,
                  const int *p0, const float *inv_freq, int max_rows, float *o) {
    size_t sh = sizeof(float) * ((size_t)2 * dh + max_rows);
    static size_t raised = 48 << 10;
    if (sh > raised) {
        CU_CHECK(cudaFuncSetAttribute(k_attention, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sh));
        raised = sh;
    }
    k_attention<<<dim3(nh, n), 256, sh, st>>>(q, kvb, ring, comp, sel, K, sinks, nh, dh, rd, W, m, p0, inv_freq, o);
    CU_LAUNCH_CHECK();
}

__global__ void k_ring_write(float *ring, const float *kvb, int n, int dh, int W, const int *p0p) {
    int first = n > W ? n - W : 0;
    int t = first + blockIdx.x;
    int64_t slot = (*p0p + t) % W;
    for (int e = threadIdx.x; e < dh; e += blockDim.x) ring[slot * dh + e] = kvb[(int64_t)t * dh + e];
}

void cu_ring_write(cudaStream_t st, float *ring, const float *kvb, int n, int dh, int W, const int *p0) {
    int cnt = n < W ? n : W;
    k_ring_write<<<cnt, 128, 0, st>>>(ring, kvb, n, dh, W, p0);
    CU_LAUNCH_CHECK();
}
