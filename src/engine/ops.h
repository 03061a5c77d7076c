/* Numeric building blocks of the forward pass (f32 activations).
 *
 * Matrix products go through ds4_mm(), the one place that turns a weight of
 * any storage type into y = W·x: it converts each activation row once to the
 * weight type's vec_dot_type and then calls the type's dot kernels (4x4
 * tiles), or, for prefill batches of >= 4 tokens where the SIMD level has
 * one, its panel GEMM over the activations packed into panels (quant.h),
 * spreading rows over the thread pool.  Both give the bits of vec_dot, so
 * prefill and decode agree exactly.  Weights are used in place (mmap).
 *
 * The QAT helpers simulate the official FP8 / FP4 kernels (MODEL.md §2.4);
 * the forward pass calls them only in the default "model" numerics. */
#ifndef DS4_ENGINE_OPS_H
#define DS4_ENGINE_OPS_H

#include <math.h>
#include <stdint.h>

#include "engine/pool.h"
#include "model/model.h"

/* Y[t*ldy + r] = W[row0 + r] · X[t*ldx ...]  for t < n, r < nrows.
 * W is ne0 wide (the input length).  expert selects a slice of a stacked
 * 3-D weight (0 for 2-D weights). */
void ds4_mm(ds4_pool *pool, const ds4_weight *w, int64_t expert, int64_t row0, int64_t nrows,
            const float *X, int64_t ldx, int n, float *Y, int64_t ldy);

/* Several independent products issued as ONE pool job: each segment is a
 * ds4_mm() call (same meaning of every field).  A decode step is a few
 * hundred small products; a pool job costs a hand-off and a wait for the
 * slowest thread, so products that are ready at the same time (gate and up
 * of every selected expert, the projections of one input, the output
 * groups) go together.  Results are bit-identical to separate ds4_mm()
 * calls; segments with the same input share its conversion.  The outputs
 * must not overlap each other or any input. */
typedef struct ds4_mm_seg {
    const ds4_weight *w;
    int64_t expert, row0, nrows;
    const float *X;
    int64_t ldx;
    int n;
    float *Y;
    int64_t ldy;
    /* Optional.  xrows: input row t is X + xrows[t]·ldx, a gather (the
     * tokens routed to one expert) read straight from the batch's rows. */
    const int32_t *xrows;
    /* Optional.  pair: the NEXT segment (same nrows and n) rides along, each
     * task computing the same rows of both (gate and up of an FFN).  done,
     * when set, is called by the task once rows [r0, r1) of this segment
     * (and of its mate) are final for every token: an epilogue (SwiGLU)
     * that then runs in parallel inside the same job.  It gets the mate's
     * results for those rows: token t's row r at mate[t·mate_ld + r - r0]
     * (mate NULL without a pair).  mate_local: the mate's results are for
     * done alone, so each task keeps them in a per-thread scratch, in cache,
     * and the mate's Y is never written (it may be NULL): up's 2-7 MB a
     * layer of prefill outputs no longer go out to memory and back. */
    int pair, mate_local;
    void (*done)(void *ctx, int64_t r0, int64_t r1, const float *mate, int64_t mate_ld);
    void *done_ctx;
    /* Optional.  Tasks' row ranges start at multiples of row_gran (and of
     * the kernel's own step), so that done sees whole groups of rows (a
     * head); nrows should be a multiple of it. */
    int row_gran;
} ds4_mm_seg;
void ds4_mm_multi(ds4_pool *pool, const ds4_mm_seg *segs, int nseg);

/* ds4_mm() of a whole 2-D weight for n tokens on the calling thread alone
 * (inside a pool task, over a block of tokens whose data is in cache):
 * the same kernels, hence the same bits.  scratch: 64-byte aligned, at
 * least ds4_mm_local_scratch(w, n) bytes. */
size_t ds4_mm_local_scratch(const ds4_weight *w, int n);
void ds4_mm_local(const ds4_weight *w, const float *X, int64_t ldx, int n, float *Y, int64_t ldy, void *scratch);

/* A plain segment (no pair, no epilogue); arguments as ds4_mm(). */
static inline ds4_mm_seg ds4_seg(const ds4_weight *w, int64_t expert, int64_t row0, int64_t nrows, const float *X,
                                 int64_t ldx, int n, float *Y, int64_t ldy) {
    return (ds4_mm_seg){.w = w, .expert = expert, .row0 = row0, .nrows = nrows, .X = X, .ldx = ldx, .n = n,
                        .Y = Y, .ldy = ldy};
}

/* Row of a weight matrix (e.g. an embedding row) converted to f32. */
void ds4_weight_row_f32(const ds4_weight *w, int64_t row, float *out);

/* y = x · (mean(x²) + eps)^-½ ⊙ w   (w may be NULL: unweighted). y may alias x. */
void ds4_rmsnorm(const float *x, const float *w, int64_t n, float eps, float *y);

/* Inverse frequencies for RoPE over d_r dims: plain (yarn_factor <= 1) or YaRN. */
void ds4_rope_freqs(float *inv_freq, int rope_dim, float base, float yarn_factor, double orig_ctx,
                    double beta_fast, double beta_slow);
/* Rotates the last rope_dim dims of x (width d) at position pos, adjacent
 * pairs; sign = -1 applies the inverse rotation. */
void ds4_rope(float *x, int d, int rope_dim, const float *inv_freq, int64_t pos, int sign);

/* QAT round trips (in place). */
void ds4_fp8_roundtrip(float *x, int64_t n);   /* 64-blocks, pow2 scale, E4M3 */
void ds4_fp4_roundtrip(float *x, int64_t n);   /* 32-blocks, pow2 scale, E2M1 */
void ds4_hadamard(float *x, int n);            /* Sylvester order, scaled by n^-½; n power of 2 */

/* The indexer's top-k: indices of the k largest of score[0, n), ascending,
 * into out (min(n, k) of them, the count returned).  The same set as a heap
 * keeping the k largest with ties going to the lower index (-0 ranks as +0;
 * scores must not be NaN).  Linear time: radix select on order-preserving
 * 32-bit keys (11, 11, 10 bits; the keys go to scratch, the second and third
 * histograms count only the first one's threshold bin), then one pass in
 * index order takes every score above the k-th largest and the first ties
 * at it.  scratch: n uint32_t. */
int ds4_topk(const float *score, int n, int k, int32_t *out, uint32_t *scratch);
/* The router's top-k: the k best of v[i] = score[i] + bias[i] (bias NULL:
 * 0) for i < n, best first, ties to the lower index (what k rounds of
 * first-max picking give; NaN ranks below every number).  ids and vals
 * (the biased values) get min(n, k) entries, the count returned.  One pass
 * with an insertion-sorted list: O(n) for small k. */
int ds4_topk_sorted(const float *score, const float *bias, int n, int k, int32_t *ids, float *vals);

static inline float ds4_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

#endif
