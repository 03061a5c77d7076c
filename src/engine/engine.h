/* CPU forward pass of DeepSeek V4 and the per-sequence state it advances.
 *
 * A session is one timeline of tokens over a loaded model.  ds4_session_eval()
 * appends n tokens at the session's current position and runs them through
 * the model layer by layer (batched prefill: each weight is read once per
 * batch).  Calling it once with a whole prompt, several times with chunks, or
 * once per token (decode) computes the same thing: every piece of state a
 * later token needs — the raw sliding-window ring, compressed rows, the
 * compressor frontiers and indexer rows — lives in ds4_layer_state and is
 * carried across calls.  Long inputs are processed internally in batches of at
 * most `max_batch` tokens to bound scratch memory.
 *
 * Numerics: DS4_NUMERICS_MODEL (default) simulates the released model's FP8 KV
 * and FP4 indexer kernels (MODEL.md §2.4); DS4_NUMERICS_REFERENCE turns those
 * round trips off and matches the transformers reference (the golden data).
 *
 * The state is plain arrays so that a later module can snapshot it to disk. */
#ifndef DS4_ENGINE_H
#define DS4_ENGINE_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/pool.h"
#include "experts/experts.h"
#include "model/model.h"
#include "util/err.h"

enum ds4_numerics { DS4_NUMERICS_MODEL = 0, DS4_NUMERICS_REFERENCE = 1 };

/* Which device runs the forward pass.  AUTO (the zero value): CUDA when the
 * program was built with it (`make cuda`, DS4_CUDA) and a device is present,
 * otherwise the CPU.  Selecting CUDA in a CPU-only build is an error at
 * session creation. */
enum ds4_backend { DS4_BACKEND_AUTO = 0, DS4_BACKEND_CPU = 1, DS4_BACKEND_CUDA = 2 };

/* Tokens per internal batch when the options leave it at 0: enough that
 * each routed expert sees ~48 of the batch's tokens on average (k·n/E), at
 * least DS4_BATCH_MIN and at most DS4_BATCH_MAX.  Prefill runs each expert
 * on the tokens that picked it, and a panel GEMM's weight unpack is shared
 * by those tokens (16 a panel): small-q2 prefill of 512 tokens ran ~10%
 * faster in one batch of 512 than in two of 256, and at Flash's shape (256
 * experts, top-6: 12 tokens an expert at 512) batches of 2048 cut the MoE's
 * time a token by ~40%.  The scratch grows linearly (~0.75 MB per token at
 * Flash's shape: ~1.5 GB at 2048). */
#define DS4_BATCH_MIN 512
#define DS4_BATCH_MAX 4096
int ds4_default_batch(const ds4_hparams *hp);

typedef struct ds4_engine_opts {
    int n_threads;               /* <= 0: all online CPUs */
    enum ds4_numerics numerics;
    uint32_t ctx_max;            /* positions the session may reach (0: 4096, or the model's
                                  * context length if smaller); more than the
                                  * model's context length is refused */
    int max_batch;               /* tokens per internal batch (0: ds4_default_batch) */
    /* Routed experts streamed from the file through a cache (experts/experts.h),
     * off by default.  expert_store: a store to use (shared by sessions that
     * run one at a time; the caller frees it); otherwise the session opens its
     * own when experts.cache_mb or experts.ram_budget_mb is set. */
    ds4_experts_opts experts;
    ds4_experts *expert_store;
    uint64_t *expert_counts;     /* [n_layer][n_expert] += selections, if set (ds4-hotexperts) */
    double *phase_ns;            /* [DS4_PHASE_N] += wall ns per phase, if set (ds4-bench --phases; CPU only) */
    enum ds4_backend backend;    /* --backend cpu|cuda */
    uint64_t gpu_expert_cache_mb;/* CUDA: VRAM for routed experts (0: what fits) */
} ds4_engine_opts;

/* Phases of the CPU forward pass, for opts.phase_ns: the wall time of the
 * calling thread from one phase boundary to the next, so the phases add up
 * to the whole evaluation (pool jobs, their waits and barriers included). */
enum ds4_phase {
    DS4_PHASE_HC,        /* embedding, hyper-connection pre/post mixes */
    DS4_PHASE_NORM,      /* RMS norms before attention / MoE, the q-latent norm */
    DS4_PHASE_ATTN_PROJ, /* q_a, kv, compressor and indexer projections (one job) */
    DS4_PHASE_Q_B,       /* q_b and the indexer's q_b */
    DS4_PHASE_QKV,       /* per-head q norm + RoPE, the KV row's norm, RoPE, FP8 */
    DS4_PHASE_COMPRESS,  /* compressor pooling into compressed rows */
    DS4_PHASE_INDEXER,   /* lightning indexer scores and top-k */
    DS4_PHASE_ATTN,      /* attention core over window + compressed rows */
    DS4_PHASE_OUT_A,     /* grouped output projection */
    DS4_PHASE_OUT_B,
    DS4_PHASE_ROUTER,    /* router logits */
    DS4_PHASE_ROUTE,     /* top-k / hash routing, grouping by expert */
    DS4_PHASE_GATE_UP,   /* routed + shared gate/up with SwiGLU */
    DS4_PHASE_DOWN,      /* routed + shared down projections */
    DS4_PHASE_MOE_SUM,   /* weighted sum of the routed outputs */
    DS4_PHASE_MOE_STREAM,/* the whole MoE when experts are streamed from the file */
    DS4_PHASE_HEAD,      /* final HC collapse, norm, vocabulary projection */
    DS4_PHASE_N
};
const char *ds4_phase_name(int phase);

/* Parses "cpu" / "cuda" / "auto"; -1 for anything else. */
int ds4_backend_parse(const char *s);
/* 1 when this build has the CUDA backend linked in. */
int ds4_backend_cuda_built(void);

void ds4_engine_opts_default(ds4_engine_opts *o);

typedef struct ds4_layer_state {
    float *raw;                  /* [W][d_h] ring; slot = pos % W */
    float *comp;                 /* [cap][d_h] compressed attention rows */
    uint32_t n_comp;
    float *comp_kv, *comp_sc;    /* compressor frontier [(c·m)][(c·d_h)] */
    float *idx;                  /* [cap][d_I] indexer rows (ratio 4) */
    uint32_t n_idx;
    /* The same rows in the exact int8 indexer's groups (quant/idx8.h), a
     * cache derived from idx: rows [0, n_idx8) are converted.  NULL where
     * that path is off (reference numerics, a level without it, DS4_IDX8=0). */
    uint8_t *idx8;
    uint32_t n_idx8;
    float *idx_kv, *idx_sc;      /* indexer compressor frontier [8][2·d_I] */
} ds4_layer_state;

typedef struct ds4_session {
    const ds4_model *model;
    ds4_engine_opts opts;
    ds4_pool *pool;
    bool own_pool;
    uint32_t pos;                /* next position = tokens consumed */
    uint32_t comp_cap;           /* rows allocated per compressed cache */
    ds4_layer_state *ls;
    float *rope_main, *rope_comp;/* inverse frequencies, [d_r/2] each */
    ds4_experts *experts;        /* expert store when streaming, else NULL */
    bool own_experts;
    void *scratch;               /* batch buffers, reused across calls (forward.c) */
    float *undo;                 /* per-layer state copies for stoppable batches (forward.c), lazily */
    void *cuda;                  /* CUDA backend session (cuda/cuda_backend.h), NULL on the CPU */
} ds4_session;

/* Creates an empty session. pool may be NULL (the session makes its own). */
ds4_session *ds4_session_new(const ds4_model *m, const ds4_engine_opts *opts, ds4_pool *pool, ds4_err *err);
void ds4_session_free(ds4_session *s);
/* Forgets all tokens (position 0) without freeing memory. */
void ds4_session_reset(ds4_session *s);

/* Which logits ds4_session_eval writes. */
enum ds4_logits { DS4_LOGITS_NONE, DS4_LOGITS_LAST, DS4_LOGITS_ALL };

/* Appends n tokens. logits receives V floats (LAST) or n·V floats (ALL).
 * Fails (without changing the session) on a token id out of range or when
 * the context would exceed ctx_max.  A failed expert read (streaming) fails
 * the call with a message naming the layer, expert and errno, and resets the
 * session to empty, since its state was partly advanced. */
int ds4_session_eval(ds4_session *s, const int32_t *tokens, int n, enum ds4_logits which,
                     float *logits, ds4_err *err);

/* ds4_session_eval that can be stopped part way: stop(ud) is polled before
 * each batch and, in batches of more than one token, between layers.  When
 * it returns non-zero the batch in progress is undone (its layers' window
 * rings, compressor frontiers and row counts copied back) and 1 is
 * returned: the session then holds the tokens of the batches before it
 * (s->pos says how many) and is exactly as if only those had been
 * evaluated.  With DS4_LOGITS_LAST every batch writes its last token's
 * logits, so they are those of s->pos - 1 whenever a batch completed.  0:
 * all n evaluated; -1: an error, as ds4_session_eval.  (CUDA sessions poll
 * only before the call.)  A large batch is then stopped within one layer's
 * time, not the whole batch's. */
int ds4_session_eval_stoppable(ds4_session *s, const int32_t *tokens, int n, enum ds4_logits which,
                               float *logits, int (*stop)(void *ud), void *ud, ds4_err *err);

/* ---- Snapshot payload (the "DS4 session payload" of API.md §18.2) ----
 *
 * Thirteen u32 (magic "DSV4", version 1, context size, batch size, raw ring
 * capacity, window, compressed capacity, token count, layer count, head
 * dim, indexer head dim, vocab, live raw rows), then the token ids, the
 * next-token logits, per-layer compressed and indexer row counts, and per
 * layer the live raw rows in position order, compressed rows + compressor
 * frontier, indexer rows + indexer frontier.  All little-endian.  Loading
 * validates every dimension and count against the model and the session
 * before touching the session, so a payload of another model, a different
 * context size or a torn file is refused with a message; after a successful
 * load, evaluation continues bitwise as if the tokens had been evaluated in
 * this session. */
typedef int (*ds4_write_fn)(void *ud, const void *buf, size_t n); /* 0 on success */
typedef int (*ds4_read_fn)(void *ud, void *buf, size_t n);        /* 0 iff all n bytes read */

uint64_t ds4_session_payload_size(const ds4_session *s);
/* tokens: the s->pos ids the session has consumed; logits: V floats (may be NULL: zeros). */
int ds4_session_payload_save(const ds4_session *s, const int32_t *tokens, const float *logits, ds4_write_fn write,
                             void *ud, ds4_err *err);
/* Replaces the session's state. *tokens (malloc'd, *n_tokens entries) and
 * logits (V floats, may be NULL) receive the saved ones. On failure the
 * session is reset to empty. */
int ds4_session_payload_load(ds4_session *s, ds4_read_fn read, void *ud, int32_t **tokens, uint32_t *n_tokens,
                             float *logits, ds4_err *err);

/* Evaluates tokens[0..n) from position 0 in a fresh session and writes the
 * logits of every position (n·V floats).  Schedules: chunk > 0 prefills in
 * calls of `chunk` tokens; decode_from > 0 prefills decode_from tokens in one
 * call, then feeds the rest one token per call; otherwise one call.  This is
 * the checking hook behind `ds4 --dump-logits` and the golden tests. */
int ds4_eval_sequence(const ds4_model *m, const ds4_engine_opts *opts, const int32_t *tokens, int n, int chunk,
                      int decode_from, float *logits, ds4_err *err);

#endif
