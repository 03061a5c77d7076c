/* Routed experts on the GPU (cu_experts.cu).
 *
 * Resident mode: every layer's stacked gate/up/down tensors are in VRAM and
 * per-layer device tables map expert id -> slice; nothing happens per token.
 * Cache mode (the experts exceed the budget): slots of gate+up+down, a
 * (layer, expert) -> slot map and LRU over slots not used by the current
 * layer.  cu_experts_fetch() is called after the host has synchronised the
 * compute stream (so no kernel still reads a slot it may overwrite): it
 * issues the misses as cudaMemcpyAsync from the host image of the file
 * (registered as pinned memory when the driver allows) on a copy stream and
 * writes the per-segment weight pointers; cu_experts_wait() makes the
 * compute stream wait for the copies (called after the shared expert, which
 * thus overlaps them). */
#ifndef DS4_CU_EXPERTS_CUH
#define DS4_CU_EXPERTS_CUH

#include "cuda/cu_common.cuh"
extern "C" {
#include "model/model.h"
#include "util/err.h"
}

struct cu_experts;

/* cache_mb: VRAM budget in MiB for experts (0: free memory minus a reserve,
 * DS4_CUDA_RESERVE_MB, default 4096). */
cu_experts *cu_experts_new(const ds4_model *m, uint64_t cache_mb, ds4_err *err);
void cu_experts_free(cu_experts *x);
bool cu_experts_resident(const cu_experts *x);
void cu_experts_tables(cu_experts *x, uint32_t layer, const uint8_t *const **g, const uint8_t *const **u,
                       const uint8_t *const **d);
/* seg_eid: host copy of the nseg live segments' expert ids. */
int cu_experts_fetch(cu_experts *x, uint32_t layer, const int32_t *seg_eid, int nseg, cudaStream_t st,
                     const uint8_t **wg, const uint8_t **wu, const uint8_t **wd, ds4_err *err);
void cu_experts_wait(cu_experts *x, cudaStream_t st);
void cu_experts_stats(const cu_experts *x, char *buf, size_t len);

#endif
