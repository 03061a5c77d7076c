/* Tensor-core prefill products (large batches).  cu_mm() offers every
 * product with n >= 16 tokens here first; returning 0 sends it to the
 * dp4a / FMA tiles of cu_mm.cu.  See the kernel comments for which weight
 * types are taken. */
#include "cuda/cu_common.cuh"

int cu_mm_tc(cudaStream_t st, const dmat *w, int64_t expert, int64_t row0, int64_t nrows, const float *X,
             int64_t ldx, int n, float *Y, int64_t ldy, uint8_t *xq) {
    (void)st; (void)w; (void)expert; (void)row0; (void)nrows; (void)X; (void)ldx; (void)n; (void)Y; (void)ldy;
    (void)xq;
    return 0;
}
