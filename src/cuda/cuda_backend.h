/* CUDA backend of the DeepSeek V4 engine: the C interface the engine calls.
 *
 * Contract.  A CUDA session shadows a CPU ds4_session (engine.h): it is made
 * by ds4_session_new() when ds4_engine_opts.backend selects CUDA, and from
 * then on ds4_session_eval / _reset / _free on that session dispatch here.
 * It computes the same function as forward.c (same layer order, same
 * activation quantization for quantized weights: Q8_0 / Q8_K, so integer
 * sums agree with the CPU exactly; f32 activations for F32/F16/BF16
 * weights), with the per-sequence state (raw ring, compressed rows,
 * compressor frontiers, indexer rows) resident on the GPU.  The host
 * ds4_layer_state arrays are kept allocated: ds4_cuda_session_download()
 * copies the GPU state into them (ds4_layer_state layout, so snapshot.c
 * writes the same payload), and ds4_cuda_session_upload() is the reverse
 * after a payload load.  n_comp / n_idx on the host always follow pos.
 *
 * Weights: every dense tensor is copied to VRAM at session creation (one
 * copy per model, shared by its sessions); routed experts live in a VRAM
 * expert cache of --gpu-expert-cache-mb MiB (0: as much as fits), filled
 * from the host copy (pinned when cudaHostRegister allows) on a copy stream.
 *
 * Everything here is compiled only by `make cuda` (DS4_CUDA defined); the
 * CPU build never includes this header. */
#ifndef DS4_CUDA_BACKEND_H
#define DS4_CUDA_BACKEND_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "engine/engine.h"
#include "util/err.h"

/* 1 when a CUDA device is usable (driver present, at least one device). */
int ds4_cuda_available(void);
/* One line naming the device (for logs); "" when none. */
const char *ds4_cuda_device_name(void);

/* Creates the GPU side of s (s->model, s->opts already set, host state
 * allocated).  Returns an opaque handle stored in s->cuda, NULL with err. */
void *ds4_cuda_session_new(ds4_session *s, ds4_err *err);
void ds4_cuda_session_free(void *cs);
/* Position 0: clears the GPU frontiers (the host already reset its own). */
void ds4_cuda_session_reset(ds4_session *s);
/* Same contract as ds4_session_eval (tokens already validated by the caller). */
int ds4_cuda_session_eval(ds4_session *s, const int32_t *tokens, int n, enum ds4_logits which, float *logits,
                          ds4_err *err);
/* GPU state -> s->ls (ds4_layer_state layout), and back. */
int ds4_cuda_session_download(ds4_session *s, ds4_err *err);
int ds4_cuda_session_upload(ds4_session *s, ds4_err *err);

/* Statistics of the VRAM expert cache and of the last eval (one line). */
void ds4_cuda_session_stats(const ds4_session *s, char *buf, int len);

#ifdef __cplusplus
}
#endif

#endif
