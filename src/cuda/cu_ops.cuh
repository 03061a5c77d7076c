/* Launchers of cu_ops.cu (per-token and element-wise kernels) and cu_attn.cu
 * (compressors, indexer, attention).  Shapes follow forward.c's batch
 * buffers; p0 points to the batch's first position in device memory. */
#ifndef DS4_CU_OPS_CUH
#define DS4_CU_OPS_CUH

#include "cuda/cu_common.cuh"

void cu_rmsnorm(cudaStream_t st, const float *X, int64_t ldx, const float *w, int64_t len, float eps, int n, float *Y,
                int64_t ldy);
void cu_row_post(cudaStream_t st, float *X, int64_t ld_t, int n, int nh, int d, int do_norm, const float *normw,
                 float eps, int rd, const float *inv_freq, const int *p0, int fp8_len, int had_fp4);
void cu_scale(cudaStream_t st, float *x, int64_t n, float s);
void cu_hc_pre(cudaStream_t st, const float *mix, int NM, const float *scale, const float *base, const float *X, int H,
               int64_t D, int iters, float hc_eps, int n, float *post, float *comb, float *xout);
void cu_hc_post(cudaStream_t st, float *X, const float *out, const float *post, const float *comb, int H, int64_t D,
                int n);
void cu_replicate_streams(cudaStream_t st, float *X, int H, int64_t D, int n);
void cu_head_mix(cudaStream_t st, const float *X, const float *mix, const float *scale, const float *base, int H,
                 int64_t D, float hc_eps, const float *out_norm, float eps, int n, float *Y);
void cu_router(cudaStream_t st, float *scores, int E, int k, const int32_t *tid2eid, const int32_t *tok,
               const float *bias, int norm, float wscale, int n, int32_t *eid, float *ew);
/* info[0] = live segments, info[1] = longest segment. */
void cu_moe_group(cudaStream_t st, const int32_t *eid, const float *ew, int n, int k, int E, int seg_cap,
                  int nseg_max, int *counts, int *seg_off, int32_t *seg_eid, int32_t *row_tok, float *row_w,
                  int32_t *slot_row, int *info);
void cu_fill_wtab(cudaStream_t st, const int32_t *seg_eid, int nseg_max, const uint8_t *const *tab_g,
                  const uint8_t *const *tab_u, const uint8_t *const *tab_d, const uint8_t **wg, const uint8_t **wu,
                  const uint8_t **wd);
void cu_gather_rows(cudaStream_t st, const float *X, int64_t D, const int32_t *row_tok, int R, float *out);
void cu_swiglu(cudaStream_t st, float *g, const float *u, int64_t F, int R, const float *rw, float clamp);
void cu_combine(cudaStream_t st, float *out, const float *Y, int64_t D, const int32_t *slot_row, int k, int n);
void cu_fill(cudaStream_t st, float *x, int64_t n, float v);

/* ---- cu_attn.cu ---- */

/* Compressor over the batch (forward.c run_compressors / compressor_push):
 * a: [n][c*d] kv, z: [n][c*d] scores (ape added here), frontier kv/sc,
 * emitted rows appended to rows (index = pos/m at emission).  post: 1 = FP8
 * QAT on the first d - rd dims, 2 = Hadamard + FP4 (indexer), 0 = none. */
void cu_compress(cudaStream_t st, const float *a, float *z, int n, const int *p0, int m, int d, const float *ape,
                 float *fkv, float *fsc, float *rows, const float *normw, float eps, int rd, const float *inv_freq,
                 int post);
/* Indexer scores for each token over its visible rows: scores[t][i] for
 * i < (p0+t+1)/4; grid covers max_vis rows. q: [n][nI][dI], w: [n][nI]. */
void cu_idx_scores(cudaStream_t st, const float *q, const float *w, const float *rows, int n, int nI, int dI,
                   const int *p0, int max_vis, float *scores, int64_t lds);
/* Top-K of each token's scores, ties to the lower index, written in
 * ascending row order; sel[t][0] = -1 when all visible rows fit (nvis <= K). */
void cu_idx_topk(cudaStream_t st, const float *scores, int64_t lds, int n, const int *p0, int K, int32_t *sel);
/* Attention with sinks over the raw window and compressed rows, then
 * inverse RoPE (forward.c attn_task).  sel may be NULL (no indexer). */
void cu_attention(cudaStream_t st, const float *q, const float *kvb, const float *ring, const float *comp,
                  const int32_t *sel, int K, const float *sinks, int n, int nh, int dh, int rd, int W, int m,
                  const int *p0, const float *inv_freq, int max_rows, float *o);
/* Batch kv rows -> ring slots (p0 + t) % W for the last min(n, W) tokens. */
void cu_ring_write(cudaStream_t st, float *ring, const float *kvb, int n, int dh, int W, const int *p0);

#endif
