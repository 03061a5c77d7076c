/* The DeepSeek V4 forward pass on the CPU (MODEL.md §3–§9), layer-major.
 *
 * ds4_session_eval() embeds a batch of tokens, then for each layer runs the
 * attention half and the MoE half for the whole batch before moving on, so
 * every weight matrix is streamed once per batch.  Within a layer:
 *
 *   HCPre → attn_norm → q path, kv path (RoPE, FP8 QAT) → compressor(s) fed
 *   token by token (emitting rows as blocks complete) → indexer top-k →
 *   attention over raw window ∪ compressed rows with sinks → inverse RoPE →
 *   grouped output projection → HCPost → HCPre → ffn_norm → router →
 *   routed experts (grouped by expert) + shared expert → HCPost.
 *
 * Because compressed rows are emitted in position order and a query at p sees
 * exactly rows i < floor((p+1)/m), running the compressor over the whole batch
 * before attention gives each query exactly the rows it would have seen when
 * decoding token by token. */
#include <math.h>

#include "engine/engine.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/ops.h"
#include "quant/idx8.h"
#include "quant/quant.h"
#include "quant/simd.h"
#include "util/mem.h"
#ifdef DS4_CUDA
#include "cuda/cuda_backend.h"
#endif

#define NEG_INF (-INFINITY)

typedef struct batch batch;
#define HC_BLOCK 16 /* tokens per HCPre task (hc_step) */
static void batch_free(batch *b);

void ds4_engine_opts_default(ds4_engine_opts *o) {
    memset(o, 0, sizeof *o);
    o->n_threads = 0;
    o->numerics = DS4_NUMERICS_MODEL;
    o->ctx_max = 4096;
    o->max_batch = 0; /* by the model: ds4_default_batch */
}

int ds4_default_batch(const ds4_hparams *hp) {
    if (!hp->n_expert || !hp->n_expert_used) return DS4_BATCH_MIN;
    uint64_t n = (48ull * hp->n_expert / hp->n_expert_used + 63) & ~63ull;
    return n < DS4_BATCH_MIN ? DS4_BATCH_MIN : n > DS4_BATCH_MAX ? DS4_BATCH_MAX : (int)n;
}

int ds4_backend_parse(const char *s) {
    if (!strcmp(s, "cpu")) return DS4_BACKEND_CPU;
    if (!strcmp(s, "cuda")) return DS4_BACKEND_CUDA;
    if (!strcmp(s, "auto")) return DS4_BACKEND_AUTO;
    return -1;
}

int ds4_backend_cuda_built(void) {
#ifdef DS4_CUDA
    return 1;
#else
    return 0;
#endif
}

/* ------------------------------------------------------------------------ */
/* Session lifetime                                                          */

/* Zeroed and 64-byte aligned: the matmul kernels store output rows a cache
 * line at a time, and a large calloc() block starts 16 bytes into a line
 * (the K-quant panels measured ~10% slower on such rows); large ones on
 * huge pages (util/mem.h). */
static void *xcalloc(size_t n, size_t sz, int *fail) {
    if (n == 0) return NULL;
    void *p = ds4_calloc_big(n, sz);
    if (!p) *fail = 1;
    return p;
}

static void reset_frontier(float *kv, float *sc, size_t n) {
    if (!kv) return;
    memset(kv, 0, n * sizeof(float));
    for (size_t i = 0; i < n; i++) sc[i] = NEG_INF;
}

static size_t comp_frontier_len(const ds4_hparams *hp, int m) {
    size_t c = m == 4 ? 2 : 1;
    return (size_t)(c * m) * (c * hp->head_dim);
}

static size_t idx_frontier_len(const ds4_hparams *hp) {
    return (size_t)8 * (2 * hp->idx_head_dim);
}

void ds4_session_reset(ds4_session *s) {
    const ds4_hparams *hp = &s->model->hp;
    s->pos = 0;
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        ds4_layer_state *st = &s->ls[l];
        int m = s->model->layers[l].ratio;
        st->n_comp = st->n_idx = st->n_idx8 = 0;
        if (m > 0) reset_frontier(st->comp_kv, st->comp_sc, comp_frontier_len(hp, m));
        if (m == 4) reset_frontier(st->idx_kv, st->idx_sc, idx_frontier_len(hp));
    }
#ifdef DS4_CUDA
    if (s->cuda) ds4_cuda_session_reset(s);
#endif
}

ds4_session *ds4_session_new(const ds4_model *m, const ds4_engine_opts *opts, ds4_pool *pool, ds4_err *err) {
    const ds4_hparams *hp = &m->hp;
    ds4_session *s = calloc(1, sizeof *s);
    if (!s) { ds4_err_set(err, "out of memory"); return NULL; }
    s->model = m;
    if (opts) s->opts = *opts; else ds4_engine_opts_default(&s->opts);
    if (s->opts.ctx_max == 0) s->opts.ctx_max = hp->ctx_len && hp->ctx_len < 4096 ? (uint32_t)hp->ctx_len : 4096;
    /* Past the trained context (YaRN's range) positions only give noise:
     * refuse, naming both numbers, rather than run. */
    if (hp->ctx_len && s->opts.ctx_max > hp->ctx_len) {
        ds4_err_set(err, "a context of %u tokens exceeds the model's context length of %llu (context_length)",
                    s->opts.ctx_max, (unsigned long long)hp->ctx_len);
        free(s);
        return NULL;
    }
    if (s->opts.max_batch <= 0) s->opts.max_batch = ds4_default_batch(hp);
    if (s->opts.numerics == DS4_NUMERICS_MODEL && (hp->idx_head_dim & (hp->idx_head_dim - 1))) {
        ds4_err_set(err, "indexer head dim %u is not a power of two: the FP4/Hadamard numerics need one "
                    "(use reference numerics)", hp->idx_head_dim);
        free(s);
        return NULL;
    }
    s->pool = pool;
    if (!pool) {
        s->pool = ds4_pool_new(s->opts.n_threads);
        s->own_pool = true;
    }
    int fail = !s->pool;
    s->comp_cap = s->opts.ctx_max / 4 + 2;
    s->ls = xcalloc(hp->n_layer, sizeof *s->ls, &fail);
    s->rope_main = xcalloc(hp->rope_dim / 2, sizeof(float), &fail);
    s->rope_comp = xcalloc(hp->rope_dim / 2, sizeof(float), &fail);
    for (uint32_t l = 0; !fail && l < hp->n_layer; l++) {
        ds4_layer_state *st = &s->ls[l];
        int ratio = m->layers[l].ratio;
        st->raw = xcalloc((size_t)hp->window * hp->head_dim, sizeof(float), &fail);
        if (ratio > 0) {
            size_t cap = s->opts.ctx_max / (uint32_t)ratio + 2;
            st->comp = xcalloc(cap * hp->head_dim, sizeof(float), &fail);
            st->comp_kv = xcalloc(comp_frontier_len(hp, ratio), sizeof(float), &fail);
            st->comp_sc = xcalloc(comp_frontier_len(hp, ratio), sizeof(float), &fail);
        }
        if (ratio == 4) {
            st->idx = xcalloc(s->comp_cap * hp->idx_head_dim, sizeof(float), &fail);
            st->idx_kv = xcalloc(idx_frontier_len(hp), sizeof(float), &fail);
            st->idx_sc = xcalloc(idx_frontier_len(hp), sizeof(float), &fail);
        }
    }
    if (fail) {
        ds4_err_set(err, "out of memory allocating session state for %u positions", s->opts.ctx_max);
        ds4_session_free(s);
        return NULL;
    }
    if (s->opts.expert_store) {
        s->experts = s->opts.expert_store;
    } else if (ds4_experts_opts_enabled(&s->opts.experts)) {
        uint64_t sb = ds4_experts_session_bytes(hp, s->opts.ctx_max, s->opts.max_batch);
        if (!(s->experts = ds4_experts_open(m, &s->opts.experts, sb, err))) {
            ds4_session_free(s);
            return NULL;
        }
        s->own_experts = true;
    }
    ds4_rope_freqs(s->rope_main, (int)hp->rope_dim, hp->rope_base, 1.0f, 0, 0, 0);
    ds4_rope_freqs(s->rope_comp, (int)hp->rope_dim, hp->compress_rope_base, hp->yarn_factor,
                   (double)hp->yarn_orig_ctx, hp->yarn_beta_fast, hp->yarn_beta_slow);
    ds4_session_reset(s);
    /* The CUDA backend shadows this session; the host state above stays
     * allocated for snapshots (cuda_backend.h). */
    if (s->opts.backend == DS4_BACKEND_CUDA && !ds4_backend_cuda_built()) {
        ds4_err_set(err, "this build has no CUDA backend (build with `make cuda`)");
        ds4_session_free(s);
        return NULL;
    }
#ifdef DS4_CUDA
    if (s->opts.backend == DS4_BACKEND_CUDA || (s->opts.backend == DS4_BACKEND_AUTO && ds4_cuda_available())) {
        if (!(s->cuda = ds4_cuda_session_new(s, err))) {
            ds4_session_free(s);
            return NULL;
        }
    }
#endif
    return s;
}

void ds4_session_free(ds4_session *s) {
    if (!s) return;
#ifdef DS4_CUDA
    if (s->cuda) ds4_cuda_session_free(s->cuda);
#endif
    if (s->ls) {
        for (uint32_t l = 0; l < s->model->hp.n_layer; l++) {
            ds4_layer_state *st = &s->ls[l];
            free(st->raw); free(st->comp); free(st->comp_kv); free(st->comp_sc);
            free(st->idx); free(st->idx8); free(st->idx_kv); free(st->idx_sc);
        }
        free(s->ls);
    }
    free(s->rope_main);
    free(s->rope_comp);
    if (s->own_experts) ds4_experts_free(s->experts);
    if (s->scratch) { batch_free(s->scratch); free(s->scratch); }
    free(s->undo);
    if (s->own_pool) ds4_pool_free(s->pool);
    free(s);
}

/* ------------------------------------------------------------------------ */
/* Batch scratch                                                             */

struct batch {
    int n;
    uint32_t p0;
    const int32_t *tok;
    float *X;        /* [n][H][D] residual streams */
    float *flat;     /* [n][H·D] hc_expand's scratch (HCPost in place) */
    float *mix;      /* [n][N_mix] */
    float *post;     /* [n][H] */
    float *comb;     /* [n][H][H] */
    float *hcr;      /* [n] the streams' RMS scale 1/sqrt(mean X² + eps) for HCPre's mix */
    float *x;        /* [n][D] collapsed sublayer input */
    float *xn;       /* [n][D] normalised */
    float *out;      /* [n][D] sublayer output */
    float *qlat;     /* [n][r_q] */
    float *q;        /* [n][n_h·d_h] */
    float *kv;       /* [n][d_h] */
    float *o;        /* [n][n_h·d_h] attention output */
    float *low;      /* [n][G·r_o] */
    float *ca, *cz;  /* [n][2·d_h] compressor kv / score */
    float *ia, *iz;  /* [n][2·d_I] indexer compressor kv / score */
    float *iq;       /* [n][n_I·d_I] */
    float *iw;       /* [n][n_I] */
    int32_t *sel;    /* [n][K_I] selected compressed rows, -1 terminated if fewer */
    float *router;   /* [n][E] */
    int32_t *eid;    /* [n][k] */
    float *ew;       /* [n][k] */
    float *g;        /* [n][F·max(1,n_sh)] expert intermediates (up's stay in the tasks: ffn_gate_up) */
    float *tmp;      /* [n][D] */
    float *xg, *yg;  /* [n·k][D] rows gathered for one expert, and its outputs */
    float *wg;       /* [n·k] their routing weights */
    int32_t *etok;   /* [n·k] token list per expert */
    int32_t *eslot;  /* [n·k] */
    float *rope_m, *rope_c; /* [n][3·d_r/2] cos, sin, -sin at p0 + t: main / compressed-layer frequencies */
    const ds4_vec_ops *V;   /* the live f32 kernels, fetched once per eval */
    /* HCPre blocks' scratch (hc_step), one slot per pool thread, so a
     * thread's blocks reuse the same memory (in its L2): the mix product's
     * converted inputs, hc_slot bytes; head() uses slot 0. */
    uint8_t *hc_scratch;
    size_t hc_slot;
    uint64_t ph_t;          /* phase profiling (opts.phase_ns): when the current phase began */
};

/* ------------------------------------------------------------------------ */
/* Phase profiling (engine.h ds4_phase)                                      */

static const char *const phase_names[DS4_PHASE_N] = {
    "hc", "norm", "attn_proj", "q_b", "qkv", "compress", "indexer", "attn", "out_a", "out_b",
    "router", "route", "gate_up", "down", "moe_sum", "moe_stream", "head"};

const char *ds4_phase_name(int phase) { return phase >= 0 && phase < DS4_PHASE_N ? phase_names[phase] : "?"; }

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Ends the current phase as `phase`: one test when profiling is off. */
static inline void phase_end(const ds4_session *s, batch *b, enum ds4_phase phase) {
    if (!s->opts.phase_ns) return;
    uint64_t t = now_ns();
    s->opts.phase_ns[phase] += (double)(t - b->ph_t);
    b->ph_t = t;
}

static void batch_free(batch *b) {
    float **fs[] = {&b->X, &b->flat, &b->mix, &b->post, &b->comb, &b->hcr, &b->x, &b->xn, &b->out, &b->qlat, &b->q,
                    &b->kv, &b->o, &b->low, &b->ca, &b->cz, &b->ia, &b->iz, &b->iq, &b->iw, &b->router,
                    &b->ew, &b->g, &b->tmp, &b->xg, &b->yg, &b->wg, &b->rope_m, &b->rope_c};
    for (size_t i = 0; i < sizeof fs / sizeof *fs; i++) { free(*fs[i]); *fs[i] = NULL; }
    free(b->sel); free(b->eid); free(b->etok); free(b->eslot);
    free(b->hc_scratch); b->hc_scratch = NULL;
}

static int batch_alloc(batch *b, const ds4_hparams *hp, int n) {
    int fail = 0;
    size_t N = (size_t)n, D = hp->n_embd, H = hp->hc_mult;
    size_t K = hp->n_expert_used;
    /* FFN intermediates: every routed expert's rows (n·k in all; a token may
     * pick an expert more than once only through a hash table with repeats,
     * but stay safe) followed by the shared expert's n rows, so that all of
     * a layer's gate/up products can run as one pool job. */
    size_t F = (size_t)hp->expert_ff * (K + hp->n_expert_shared);
    memset(b, 0, sizeof *b);
    b->n = n;
    b->X = xcalloc(N * H * D, sizeof(float), &fail);
    b->flat = xcalloc(N * H * D, sizeof(float), &fail);
    b->mix = xcalloc(N * ds4_hc_mix(hp), sizeof(float), &fail);
    b->post = xcalloc(N * H, sizeof(float), &fail);
    b->comb = xcalloc(N * H * H, sizeof(float), &fail);
    b->hcr = xcalloc(N, sizeof(float), &fail);
    b->x = xcalloc(N * D, sizeof(float), &fail);
    b->xn = xcalloc(N * D, sizeof(float), &fail);
    b->out = xcalloc(N * D, sizeof(float), &fail);
    b->qlat = xcalloc(N * hp->q_lora, sizeof(float), &fail);
    b->q = xcalloc(N * ds4_q_dim(hp), sizeof(float), &fail);
    b->kv = xcalloc(N * hp->head_dim, sizeof(float), &fail);
    b->o = xcalloc(N * ds4_q_dim(hp), sizeof(float), &fail);
    b->low = xcalloc(N * hp->o_groups * hp->o_lora, sizeof(float), &fail);
    b->ca = xcalloc(N * 2 * hp->head_dim, sizeof(float), &fail);
    b->cz = xcalloc(N * 2 * hp->head_dim, sizeof(float), &fail);
    b->ia = xcalloc(N * 2 * hp->idx_head_dim + 1, sizeof(float), &fail);
    b->iz = xcalloc(N * 2 * hp->idx_head_dim + 1, sizeof(float), &fail);
    b->iq = xcalloc(N * hp->idx_n_head * hp->idx_head_dim + 1, sizeof(float), &fail);
    b->iw = xcalloc(N * hp->idx_n_head + 1, sizeof(float), &fail);
    b->sel = xcalloc(N * (hp->idx_topk + 1), sizeof(int32_t), &fail);
    b->router = xcalloc(N * hp->n_expert, sizeof(float), &fail);
    b->eid = xcalloc(N * hp->n_expert_used, sizeof(int32_t), &fail);
    b->ew = xcalloc(N * hp->n_expert_used, sizeof(float), &fail);
    b->g = xcalloc(N * F, sizeof(float), &fail);
    b->tmp = xcalloc(N * (D > H * H ? D : H * H), sizeof(float), &fail);
    b->xg = xcalloc(N * K * D, sizeof(float), &fail);
    b->yg = xcalloc(N * K * D, sizeof(float), &fail);
    b->wg = xcalloc(N * K, sizeof(float), &fail);
    b->etok = xcalloc(N * hp->n_expert_used, sizeof(int32_t), &fail);
    b->eslot = xcalloc(N * hp->n_expert_used, sizeof(int32_t), &fail);
    b->rope_m = xcalloc(N * 3 * (hp->rope_dim / 2) + 1, sizeof(float), &fail);
    b->rope_c = xcalloc(N * 3 * (hp->rope_dim / 2) + 1, sizeof(float), &fail);
    if (fail) batch_free(b);
    return fail ? -1 : 0;
}

/* ------------------------------------------------------------------------ */
/* Per-batch helpers over the live f32 kernels (simd.h)                      */

/* RMSNorm's scale 1/sqrt(mean x² + eps), as ds4_rmsnorm (ops.h) computes it. */
static float rms_scale(const batch *b, const float *x, int64_t n, float eps) {
    double ss = b->V->sumsq(x, n);
    return (float)(1.0 / sqrt(ss / (double)n + eps));
}

/* ds4_rmsnorm (ops.h), operation for operation. */
static void rmsnorm_v(const batch *b, const float *x, const float *w, int64_t n, float eps, float *y) {
    b->V->scale_mul(y, x, rms_scale(b, x, n, eps), w, n);
}

/* cos, sin, -sin of (float)pos·inv_freq[i] for every token of the batch:
 * the values ds4_rope (ops.h) computes per call, once per batch. */
static void rope_tables(const float *inv_freq, int half, int64_t p0, int n, float *tab) {
    for (int t = 0; t < n; t++) {
        float *c = tab + (size_t)t * 3 * half;
        for (int i = 0; i < half; i++) {
            float ang = (float)(p0 + t) * inv_freq[i];
            float cs = cosf(ang), sn = sinf(ang);
            c[i] = cs;
            c[half + i] = sn;
            c[2 * half + i] = -sn;
        }
    }
}

/* ds4_rope(x, d, dr, inv_freq, p0 + t, sign) from a rope_tables() row. */
static void rope_t(const batch *b, const float *tab, int t, float *x, int d, int dr, int sign) {
    int half = dr / 2;
    const float *c = tab + (size_t)t * 3 * half;
    b->V->rot(x + d - dr, c, c + (sign > 0 ? half : 2 * half), half);
}

/* ------------------------------------------------------------------------ */
/* Hyper-connections (§5)                                                    */

/* Per-token work spread over the pool (prefill); a decode step (n = 1)
 * runs it inline, since a pool job would cost more than the work.  Tokens
 * go in runs of up to FOR_TOKENS_RUN per task while every thread still gets
 * ~8 tasks: a task per token paid a claim (a compare-and-swap on a line
 * both cores write) for each sub-microsecond item.  small-q2 prefill, 512
 * tokens, 2 threads, us a token (3 interleaved runs): qkv 2.6 -> 1.0,
 * route 7.1 -> 4.8, compress 9.3 -> 8.2. */
#define FOR_TOKENS_RUN 16
typedef void (*token_fn)(ds4_session *s, batch *b, const void *arg, int t);
typedef struct {
    ds4_session *s;
    batch *b;
    const void *arg;
    token_fn fn;
    int per;            /* tokens per task */
} token_job;

static void token_task(void *ctx, int64_t task) {
    const token_job *j = ctx;
    int t0 = (int)task * j->per, t1 = t0 + j->per < j->b->n ? t0 + j->per : j->b->n;
    for (int t = t0; t < t1; t++) j->fn(j->s, j->b, j->arg, t);
}

static void for_tokens(ds4_session *s, batch *b, token_fn fn, const void *arg) {
    int per = b->n / (8 * ds4_pool_size(s->pool));
    if (per > FOR_TOKENS_RUN) per = FOR_TOKENS_RUN;
    if (per < 1) per = 1;
    token_job j = {s, b, arg, fn, per};
    ds4_pool_run(s->pool, (b->n + per - 1) / per, token_task, &j);
}

/* y = rmsnorm(x) ⊙ w per token over rows of width arg->n. */
typedef struct {
    const float *x;
    float *y;
    const float *w;
    int64_t n, ld;
} norm_arg;

static void norm_token(ds4_session *s, batch *b, const void *arg, int t) {
    const norm_arg *a = arg;
    rmsnorm_v(b, a->x + t * a->ld, a->w, a->n, s->model->hp.rms_eps, a->y + t * a->ld);
}

static void rmsnorm_tokens(ds4_session *s, batch *b, const float *x, const float *w, int64_t n, int64_t ld,
                           float *y) {
    norm_arg a = {x, y, w, n, ld};
    for_tokens(s, b, norm_token, &a);
}

/* Sinkhorn normalisation (§5.2) of nt tokens' H x H combination matrices
 * (consecutive, H·H floats each), in place: a row softmax (+eps), then
 * `iters` rounds of row (from the second round on) and column
 * normalisation.  The rounds run for up to SK_LANES tokens at once, token
 * in lane (vector extensions: plain C on every target), each lane the same
 * IEEE operations in the same order as one token on its own, so a token's
 * result does not depend on which tokens share its group: prefill == decode
 * bit for bit.  (One token at a time, these divisions cost 0.9 us per
 * matrix, ~3% of a small-model prefill.) */
#define SK_LANES 16
typedef float sk_vec __attribute__((vector_size(SK_LANES * sizeof(float))));

static void sinkhorn_one_scalar(float *C, int H, int iters, float eps) {
    for (int it = 0; it < iters; it++) {
        if (it > 0)
            for (int j = 0; j < H; j++) {
                float sum = 0;
                for (int k = 0; k < H; k++) sum += C[j * H + k];
                for (int k = 0; k < H; k++) C[j * H + k] /= sum + eps;
            }
        for (int k = 0; k < H; k++) {
            float sum = 0;
            for (int j = 0; j < H; j++) sum += C[j * H + k];
            for (int j = 0; j < H; j++) C[j * H + k] /= sum + eps;
        }
    }
}

/* sinkhorn_one_scalar for H <= 4 (V4 has 4 streams), each row in one
 * 4-lane vector, lane k = column k: the column pass adds rows lane-wise and
 * the row pass sums each row's lanes in order, so every element sees the
 * scalar loop's additions and division (bit-identical), but as 2H vector
 * divisions a round instead of 2H^2 dependent scalar ones: decode runs one
 * matrix per HC step, ~0.9 us of a serial stretch scalar.  Pad lanes hold
 * 1s (never stored). */
typedef float sk4 __attribute__((vector_size(4 * sizeof(float))));

static void sinkhorn_one(float *C, int H, int iters, float eps) {
    if (H > 4) {
        sinkhorn_one_scalar(C, H, iters, eps);
        return;
    }
    sk4 r[4];
    for (int j = 0; j < H; j++)
        for (int k = 0; k < 4; k++) r[j][k] = k < H ? C[j * H + k] : 1.0f;
    const sk4 e = (sk4){0} + eps;
    for (int it = 0; it < iters; it++) {
        if (it > 0)
            for (int j = 0; j < H; j++) {
                float sum = 0;
                for (int k = 0; k < H; k++) sum += r[j][k];
                r[j] /= (sk4){0} + (sum + eps);
            }
        sk4 sum = (sk4){0};
        for (int j = 0; j < H; j++) sum += r[j];
        sum += e;
        for (int j = 0; j < H; j++) r[j] /= sum;
    }
    for (int j = 0; j < H; j++)
        for (int k = 0; k < H; k++) C[j * H + k] = r[j][k];
}

/* The rounds of sinkhorn_one for nl <= SK_LANES tokens, lane by lane. */
static void sinkhorn_lanes(float *C, int nl, int H, int iters, float eps) {
    sk_vec v[16 * 16]; /* H <= 16: hparams validation */
    const int HH = H * H;
    for (int i = 0; i < HH; i++)
        for (int l = 0; l < SK_LANES; l++) v[i][l] = l < nl ? C[(size_t)l * HH + i] : 1.0f; /* idle lanes: 1s */
    const sk_vec e = (sk_vec){0} + eps;
    for (int it = 0; it < iters; it++) {
        if (it > 0)
            for (int j = 0; j < H; j++) {
                sk_vec sum = (sk_vec){0};
                for (int k = 0; k < H; k++) sum += v[j * H + k];
                for (int k = 0; k < H; k++) v[j * H + k] /= sum + e;
            }
        for (int k = 0; k < H; k++) {
            sk_vec sum = (sk_vec){0};
            for (int j = 0; j < H; j++) sum += v[j * H + k];
            for (int j = 0; j < H; j++) v[j * H + k] /= sum + e;
        }
    }
    for (int i = 0; i < HH; i++)
        for (int l = 0; l < nl; l++) C[(size_t)l * HH + i] = v[i][l];
}

/* fmaxf's result without the libm call GCC emits for it (NaN-aware: a
 * NaN operand yields the other one). */
static inline float fmax_inl(float a, float b) { return b > a || a != a ? b : a; }

static void sinkhorn(float *C, int nt, int H, int iters, float eps) {
    for (int t = 0; t < nt; t++)
        for (int j = 0; j < H; j++) {
            float *row = C + (size_t)t * H * H + j * H, mx = row[0], sum = 0;
            for (int k = 1; k < H; k++) mx = fmax_inl(mx, row[k]);
            for (int k = 0; k < H; k++) { row[k] = expf(row[k] - mx); sum += row[k]; }
            for (int k = 0; k < H; k++) row[k] = row[k] / sum + eps;
        }
    if (nt == 1) { /* decode: no lanes to fill */
        sinkhorn_one(C, H, iters, eps);
        return;
    }
    for (int t = 0; t < nt; t += SK_LANES)
        sinkhorn_lanes(C + (size_t)t * H * H, nt - t < SK_LANES ? nt - t : SK_LANES, H, iters, eps);
}

typedef struct {
    const ds4_weight *fn;
    const float *scale, *base;
    const float *norm; /* the next sublayer's input norm: x̂ = RMSNorm(x)·norm into b->xn */
} hc_arg;

/* HCPre of tokens [t0, t1) after the mix product: pre/post weights, the
 * Sinkhorn combination matrix, and per token x = Σ_j pre_j·X_j.  The sums
 * run over j in order for every d, as SIMD axpy passes (mul then add, like
 * the scalar loop: -O2 does not vectorise these loops itself). */
static void hc_pre_tokens(ds4_session *s, batch *b, const hc_arg *a, int t0, int t1) {
    const ds4_hparams *hp = &s->model->hp;
    const float *scale = a->scale, *base = a->base;
    int H = (int)hp->hc_mult, NM = (int)ds4_hc_mix(hp);
    int64_t D = hp->n_embd;
    for (int t = t0; t < t1; t++) {
        float *mix = b->mix + t * NM, *post = b->post + t * H, *C = b->comb + t * H * H;
        for (int i = 0; i < NM; i++) mix[i] *= b->hcr[t]; /* fn·X times the RMS scale (§5.1) */
        for (int j = 0; j < H; j++) post[j] = 2.0f * ds4_sigmoid(mix[H + j] * scale[1] + base[H + j]);
        for (int i = 0; i < H * H; i++) C[i] = mix[2 * H + i] * scale[2] + base[2 * H + i];
    }
    sinkhorn(b->comb + t0 * H * H, t1 - t0, H, (int)hp->hc_sinkhorn, hp->hc_eps);
    for (int t = t0; t < t1; t++) {
        const float *mix = b->mix + t * NM;
        float pre[16], *x = b->x + t * D;
        for (int j = 0; j < H; j++) pre[j] = ds4_sigmoid(mix[j] * scale[0] + base[j]) + hp->hc_eps;
        b->V->hc_collapse(b->V, x, b->X + t * H * D, pre, H, D);
        /* the sublayer's input norm while x is in cache (a pass of its own
         * over the batch read x back from memory) */
        if (a->norm) rmsnorm_v(b, x, a->norm, D, hp->rms_eps, b->xn + t * D);
    }
}

static void hc_pre_token(ds4_session *s, batch *b, const void *arg, int t) { hc_pre_tokens(s, b, arg, t, t + 1); }

/* HCPre over tokens [t0, t1) by one task: each token's RMS scale over its
 * flattened streams, mix = fn·X (ds4_mm_local: the same bits as a
 * pool-wide ds4_mm) times that scale -- the official order (MODEL.md
 * §5.1), which saves writing a normalised copy of the streams (a flat
 * ~1% of a prefill) -- then the per-token rest.  A block of HC_BLOCK
 * tokens keeps its streams (16 KB a token at embd 1024) in L2 from the
 * scale to the collapse; as separate pool-wide passes over the batch they
 * went through memory four times, ~9% of a 512-token prefill.  (The mix's
 * converted inputs go to per-thread slots: fresh memory per block was
 * write-allocated from DRAM.) */

typedef struct {
    ds4_session *s;
    batch *b;
    const hc_arg *a;
    bool post;       /* first the HCPost of the sublayer just run */
    bool split;      /* blocks stop after the norm (few blocks: see hc_step) */
} hc_job;

static void hc_post_token(ds4_session *s, batch *b, const void *arg, int t);

static void hc_block(void *ctx, int64_t blk) {
    const hc_job *j = ctx;
    ds4_session *s = j->s;
    batch *b = j->b;
    const ds4_hparams *hp = &s->model->hp;
    int64_t HD = ds4_hc_dim(hp), NM = ds4_hc_mix(hp);
    int t0 = (int)blk * HC_BLOCK, t1 = t0 + HC_BLOCK < b->n ? t0 + HC_BLOCK : b->n;
    if (j->post)
        for (int t = t0; t < t1; t++) hc_post_token(s, b, NULL, t);
    if (!j->a->fn) return;
    for (int t = t0; t < t1; t++) b->hcr[t] = rms_scale(b, b->X + t * HD, HD, hp->rms_eps);
    if (j->split) return; /* the caller runs the mix over the pool */
    uint8_t *slot = b->hc_scratch + (size_t)ds4_pool_thread(s->pool) * b->hc_slot;
    ds4_mm_local(j->a->fn, b->X + t0 * HD, HD, t1 - t0, b->mix + t0 * NM, NM, slot);
    hc_pre_tokens(s, b, j->a, t0, t1);
}

/* Asks the pool's idle workers to pull w (a 2-D weight) towards their
 * caches: see hc_step. */
static void hint_weight(ds4_session *s, const ds4_weight *w) {
    if (w && w->data) ds4_pool_prefetch(s->pool, w->data, ds4_row_size(w->type, w->ne[0]) * (size_t)w->ne[1]);
}

/* Between two sublayers: when `post`, the HCPost of the one just run
 * (from b->out, b->post, b->comb); then, unless fn is NULL, the HCPre of the
 * next one: post/comb per token and its collapsed input b->x.  Both in the
 * same block task, so the streams are read from memory once.  `next` is the
 * first weight the next sublayer reads (a prefetch hint; may be NULL). */
static void hc_step(ds4_session *s, batch *b, bool post, const ds4_weight *fn, const float *scale,
                    const float *base, const float *norm, const ds4_weight *next) {
    hc_arg a = {fn, scale, base, norm};
    int nblk = (b->n + HC_BLOCK - 1) / HC_BLOCK;
    /* Fewer blocks than threads (decode): the mix weight (98 KB of Q8_0,
     * 196 KB of F16 at embd 1024) would stream through one core while the
     * others wait, so the mix runs as a pool-wide product between the
     * norms and the rest. */
    bool split = fn && nblk < ds4_pool_size(s->pool);
    hc_job j = {s, b, &a, post, split};
    /* Decode runs the norms and the mix's epilogue on this thread alone;
     * meanwhile the workers prefetch the weights read next (the mix, then
     * the next sublayer's first product: q_a or the router).  small-q2
     * decode, 2 threads, us a token (6 interleaved runs, medians): hc
     * 181 -> 178, attn_proj 448 -> 424, router 37 -> 31. */
    if (split) hint_weight(s, fn);
    ds4_pool_run(s->pool, nblk, hc_block, &j);
    if (split) {
        const ds4_hparams *hp = &s->model->hp;
        int64_t NM = ds4_hc_mix(hp);
        ds4_mm(s->pool, fn, 0, 0, NM, b->X, ds4_hc_dim(hp), b->n, b->mix, NM);
        hint_weight(s, next);
        for_tokens(s, b, hc_pre_token, &a);
    }
}

/* HCPost of token t: X'[k] = post_k·out + Σ_j C[j][k]·X[j], in place (the
 * kernel's scratch is b->flat, free until the next HCPre). */
static void hc_post_token(ds4_session *s, batch *b, const void *arg, int t) {
    (void)arg;
    const ds4_hparams *hp = &s->model->hp;
    int H = (int)hp->hc_mult;
    int64_t D = hp->n_embd;
    b->V->hc_expand(b->V, b->X + t * H * D, b->out + t * D, b->post + t * H, b->comb + t * H * H, H, D,
                    b->flat + t * H * D);
}

/* ------------------------------------------------------------------------ */
/* Compressors (§6.4)                                                        */

/* A compressor (§6.4) over one batch.  Ratio m pools blocks of m positions
 * (ratio 4 with overlap: the previous block's Ca rows, then this block's
 * Cb rows, each half of a 2d-wide input row).  The frontier state holds the
 * rows that later blocks still need: slot (m == 4 ? 4 : 0) + pos % m is the
 * last row written with that residue, and for m = 4 slots 0-3 are the rows
 * of the last completed block.  A block completing in the batch reads its
 * rows from the batch (position >= p0) or from the state as the batch found
 * it, so every block can be pooled on its own, in parallel, before the state
 * moves on: prefill no longer runs the compressors one token at a time. */
typedef struct {
    int m, c, d, w;          /* ratio, halves (2 for m = 4), output width, row width c·d */
    int64_t p0;              /* the batch's first position */
    const float *bkv, *bsc;  /* the batch's rows (stride w); bsc with the APE added */
    const float *skv, *ssc;  /* the frontier state at the batch's start */
} comp_src;

static int64_t floor_div(int64_t a, int64_t m) { return a >= 0 ? a / m : -((-a + m - 1) / m); }

/* Row of position pos: kv and score vectors (full width w). */
static void comp_row(const comp_src *cs, int64_t pos, const float **kv, const float **sc) {
    if (pos >= cs->p0) {
        *kv = cs->bkv + (size_t)(pos - cs->p0) * cs->w;
        *sc = cs->bsc + (size_t)(pos - cs->p0) * cs->w;
        return;
    }
    int64_t r = pos - floor_div(pos, cs->m) * cs->m; /* pos mod m, >= 0 */
    /* ratio 4: the block still open at p0 is in slots 4-7, the one before in 0-3
     * (before position 0: the reset slots) */
    int slot = cs->m == 4 ? (floor_div(pos, 4) == floor_div(cs->p0, 4) ? 4 : 0) + (int)r : (int)r;
    *kv = cs->skv + (size_t)slot * cs->w;
    *sc = cs->ssc + (size_t)slot * cs->w;
}

/* Pools block K into row (width d): V->softpool over the block's rows in
 * order (ratio 4: the previous block's Ca, then this block's Cb): per
 * column the softmax-weighted mean, in double, rows whose score is -inf
 * left out. */
static void comp_pool(const ds4_vec_ops *V, const comp_src *cs, int64_t K, float *row) {
    const int m = cs->m, d = cs->d, rows = cs->c * m;
    const float *kv[256], *sc[256];
    if (rows > 256) abort(); /* ds4_hparams_validate admits ratios 4 (8 rows) and 128 only */
    /* row r's position (ratio 4: the previous block, then this one) and
     * half (ratio 4: Ca for the previous block, Cb for this one) */
    for (int r = 0; r < rows; r++) {
        comp_row(cs, m == 4 ? (r < 4 ? 4 * (K - 1) + r : 4 * K + r - 4) : m * K + r, &kv[r], &sc[r]);
        int col = m == 4 && r >= m ? d : 0;
        kv[r] += col;
        sc[r] += col;
    }
    V->softpool(V, kv, sc, rows, d, row);
}

/* Moves the frontier state past the batch (after every block is pooled):
 * each slot takes the batch's last row of its residue, and for ratio 4 slots
 * 0-3 the rows of the last block completed in the batch. */
static void comp_advance(const comp_src *cs, int n, float *skv, float *ssc) {
    const int m = cs->m, base = m == 4 ? 4 : 0;
    const int64_t last = cs->p0 + n - 1;
    size_t wb = sizeof(float) * (size_t)cs->w;
    if (m == 4 && floor_div(last + 1, 4) > floor_div(cs->p0, 4)) { /* a block completed */
        int64_t K = floor_div(last + 1, 4) - 1;
        for (int j = 0; j < 4; j++) {
            const float *kv, *sc;
            comp_row(cs, 4 * K + j, &kv, &sc); /* the old slots 4-7 or the batch, before any write */
            memcpy(skv + (size_t)j * cs->w, kv, wb);
            memcpy(ssc + (size_t)j * cs->w, sc, wb);
        }
    }
    for (int64_t q = last; q >= cs->p0 && q > last - m; q--) {
        int slot = base + (int)(q % m);
        memcpy(skv + (size_t)slot * cs->w, cs->bkv + (size_t)(q - cs->p0) * cs->w, wb);
        memcpy(ssc + (size_t)slot * cs->w, cs->bsc + (size_t)(q - cs->p0) * cs->w, wb);
    }
}

/* One compressed row: the pooled block, then RMSNorm, RoPE at the block's
 * first position, and the QAT round trips. */
typedef struct {
    ds4_session *s;
    batch *b;
    const ds4_layer *L;
    ds4_layer_state *st;
    comp_src att, idx;        /* idx only for ratio 4 */
    int64_t k0;               /* first block completed in the batch */
    int n_att, n_idx;         /* blocks completed in the batch (n_idx: 0, or n_att for ratio 4) */
} comp_job;

static void comp_task(void *ctx, int64_t i) {
    const comp_job *j = ctx;
    const ds4_hparams *hp = &j->s->model->hp;
    const ds4_layer *L = j->L;
    ds4_layer_state *st = j->st;
    int dr = (int)hp->rope_dim;
    bool qat = j->s->opts.numerics == DS4_NUMERICS_MODEL;
    if (i < j->n_att) {
        int dh = j->att.d, m = j->att.m;
        int64_t K = j->k0 + i, n = st->n_comp + i;
        float *row = st->comp + (size_t)n * dh;
        comp_pool(j->b->V, &j->att, K, row);
        rmsnorm_v(j->b, row, L->comp_norm, dh, hp->rms_eps, row);
        ds4_rope(row, dh, dr, j->s->rope_comp, n * m, 1);
        if (qat) j->b->V->fp8_roundtrip(row, dh - dr);
    } else {
        int dI = j->idx.d;
        int64_t K = j->k0 + (i - j->n_att), n = st->n_idx + (i - j->n_att);
        float *row = st->idx + (size_t)n * dI;
        comp_pool(j->b->V, &j->idx, K, row);
        rmsnorm_v(j->b, row, L->idx_comp_norm, dI, hp->rms_eps, row);
        ds4_rope(row, dI, dr, j->s->rope_comp, n * 4, 1);
        if (qat) { ds4_hadamard(row, dI); j->b->V->fp4_roundtrip(row, dI); }
    }
}

/* z += APE of the token's position in its block (both compressors). */
static void comp_ape_token(ds4_session *s, batch *b, const void *arg, int t) {
    const ds4_layer *L = arg;
    int m = L->ratio, dh = (int)s->model->hp.head_dim, dI = (int)s->model->hp.idx_head_dim;
    int wc = (m == 4 ? 2 : 1) * dh;
    int64_t pos = b->p0 + t;
    /* z += ape as the level's axpy with a = 1 (1·ape is exact: the same
     * bits as the plain sum, in SIMD; this file is built for baseline x86) */
    b->V->axpy(b->cz + (size_t)t * wc, 1.0f, L->comp_ape + (size_t)(pos % m) * wc, wc);
    if (m != 4) return;
    b->V->axpy(b->iz + (size_t)t * 2 * dI, 1.0f, L->idx_comp_ape + (size_t)(pos % 4) * 2 * dI, 2 * dI);
}

/* Runs the attention compressor (and, for ratio 4, the indexer compressor)
 * over the batch, appending completed rows to the layer state.  Its input
 * projections (b->ca, cz, ia, iz) are computed by attention() in the same
 * pool job as the other projections of x̂.  The same code serves decode
 * (one token, at most one block per compressor) and prefill (blocks over
 * the pool). */
static void run_compressors(ds4_session *s, batch *b, const ds4_layer *L, ds4_layer_state *st) {
    const ds4_hparams *hp = &s->model->hp;
    int m = L->ratio, n = b->n;
    int dh = (int)hp->head_dim, dI = (int)hp->idx_head_dim;
    if (n > 1) for_tokens(s, b, comp_ape_token, L);
    else comp_ape_token(s, b, L, 0);
    /* blocks K with last position mK + m - 1 in [p0, p0 + n) */
    int64_t k0 = floor_div(b->p0, m), k1 = floor_div(b->p0 + n, m);
    comp_job j = {s, b, L, st, {m, m == 4 ? 2 : 1, dh, (m == 4 ? 2 : 1) * dh, b->p0, b->ca, b->cz, st->comp_kv,
                                st->comp_sc},
                  {0}, k0, (int)(k1 - k0), 0};
    if (m == 4) {
        j.idx = (comp_src){4, 2, dI, 2 * dI, b->p0, b->ia, b->iz, st->idx_kv, st->idx_sc};
        j.n_idx = j.n_att;
    }
    int tasks = j.n_att + j.n_idx;
    if (tasks > 1) ds4_pool_run(s->pool, tasks, comp_task, &j);
    else if (tasks == 1) comp_task(&j, 0);
    comp_advance(&j.att, n, st->comp_kv, st->comp_sc);
    st->n_comp += (uint32_t)j.n_att;
    if (m == 4) {
        comp_advance(&j.idx, n, st->idx_kv, st->idx_sc);
        st->n_idx += (uint32_t)j.n_idx;
    }
}

/* ------------------------------------------------------------------------ */
/* Lightning indexer (§6.6)                                                  */

/* Work of one indexer call.  Scores go to sc (token t's at
 * sc + t·stride), from tasks over blocks of up to IDX_TB tokens in prefill
 * (one idx_scores call each: a block of rows is transposed once and scored
 * against all of them while in L1), or, when the batch has fewer tokens than
 * the pool has threads (decode), from tasks over blocks of rows for every
 * token so every thread scores.  A row's score does not depend on who
 * computes it or with which other rows and tokens (simd.h idx_scores); a
 * task may score rows past a token's visible ones (up to those of the last
 * token it serves: they exist, and select never reads them). */
#define IDX_TB 8
typedef struct {
    ds4_session *s;
    batch *b;
    const ds4_layer_state *st;
    float *sc;
    size_t stride;
    uint32_t *topk_scratch; /* stride per pool thread (ds4_topk) */
    int tb;          /* tokens per task (prefill) */
    int blocks;      /* row blocks (decode) */
    /* The exact int8 path (quant/idx8.h) when st->idx8 is in use: the
     * tokens' query records, qbytes apart; else NULL. */
    const ds4_idx8_ops *i8;
    uint8_t *qrec;
    size_t qbytes;
} idx_job;

/* Whether this session scores through the int8 path: the model numerics
 * (FP4-exact q and rows; in the reference numerics nothing would convert),
 * a level that has it, a shape it supports, and not turned off with
 * DS4_IDX8=0 (A/B runs).  The scores are the same bits either way. */
static bool idx8_wanted(const ds4_session *s) {
    const ds4_hparams *hp = &s->model->hp;
    const char *env = getenv("DS4_IDX8");
    return s->opts.numerics == DS4_NUMERICS_MODEL && ds4_vec_ops_live()->idx8 &&
           ds4_idx8_shape_ok((int)hp->idx_n_head, (int)hp->idx_head_dim) && !(env && !strcmp(env, "0"));
}

/* Converts the rows added since the last call into st->idx8 (allocated on
 * first use, for the session's capacity); false: the int8 path is off. */
static bool idx8_sync(ds4_session *s, ds4_layer_state *st) {
    int dI = (int)s->model->hp.idx_head_dim;
    const ds4_idx8_ops *i8 = ds4_vec_ops_live()->idx8;
    if (!idx8_wanted(s)) return false;
    if (!st->idx8) {
        size_t groups = (s->comp_cap + DS4_IDX8_ROWS - 1) / DS4_IDX8_ROWS;
        if (!(st->idx8 = aligned_alloc(64, groups * ds4_idx8_group_bytes(dI)))) return false;
        st->n_idx8 = 0;
    }
    for (uint32_t i = st->n_idx8; i < st->n_idx; i++) i8->put_row(st->idx8, i, st->idx + (size_t)i * dI, dI);
    st->n_idx8 = st->n_idx;
    return true;
}

/* Rows visible to token t's query (compressed rows i < (p+1)/4). */
static int idx_nvis(const batch *b, int t) { return (int)((b->p0 + t + 1) / 4); }

/* Token t's query heads: RoPE, then (model numerics) Hadamard + FP4; its
 * head weights scaled. */
static void indexer_query(ds4_session *s, batch *b, int t) {
    const ds4_hparams *hp = &s->model->hp;
    int nI = (int)hp->idx_n_head, dI = (int)hp->idx_head_dim, dr = (int)hp->rope_dim;
    bool qat = s->opts.numerics == DS4_NUMERICS_MODEL;
    float wscale = 1.0f / sqrtf((float)dI * (float)nI);
    for (int h = 0; h < nI; h++) {
        float *qh = b->iq + ((size_t)t * nI + h) * dI;
        rope_t(b, b->rope_c, t, qh, dI, dr, 1);
        if (qat) { ds4_hadamard(qh, dI); b->V->fp4_roundtrip(qh, dI); }
    }
    for (int h = 0; h < nI; h++) b->iw[t * nI + h] *= wscale;
}

/* score[i] = Σ_h w_h·relu(q_h·k_i) for tokens [t0, t0 + nt), rows [i0, i1)
 * (i0 a multiple of DS4_IDX8_ROWS on the int8 path: a group boundary). */
static void indexer_scores(const idx_job *j, int t0, int nt, int i0, int i1) {
    const ds4_hparams *hp = &j->s->model->hp;
    int nI = (int)hp->idx_n_head, dI = (int)hp->idx_head_dim;
    const batch *b = j->b;
    const float *q = b->iq + (size_t)t0 * nI * dI, *w = b->iw + (size_t)t0 * nI;
    float *out = j->sc + (size_t)t0 * j->stride + i0;
    if (j->i8) {
        j->i8->scores(b->V, q, j->qrec + (size_t)t0 * j->qbytes, j->qbytes, w, nt, nI, dI,
                      j->st->idx8 + (size_t)(i0 / DS4_IDX8_ROWS) * ds4_idx8_group_bytes(dI),
                      j->st->idx + (size_t)i0 * dI, i1 - i0, out, (int64_t)j->stride);
        return;
    }
    b->V->idx_scores(q, w, nt, nI, dI, j->st->idx + (size_t)i0 * dI, i1 - i0, out, (int64_t)j->stride);
}

/* Token t's query record for the int8 path. */
static void indexer_query8(const idx_job *j, int t) {
    const ds4_hparams *hp = &j->s->model->hp;
    int nI = (int)hp->idx_n_head, dI = (int)hp->idx_head_dim;
    if (j->i8) j->i8->query(j->b->iq + (size_t)t * nI * dI, nI, dI, j->qrec + (size_t)t * j->qbytes);
}

/* Token t's top-K rows, in ascending order (a deterministic summation
 * order for the attention), into b->sel. */
static void indexer_select(const idx_job *j, int t) {
    int K = (int)j->s->model->hp.idx_topk, nvis = idx_nvis(j->b, t);
    int32_t *sel = j->b->sel + t * (K + 1);
    if (nvis <= K) { sel[0] = -1; return; } /* all visible rows are used */
    ds4_topk(j->sc + (size_t)t * j->stride, nvis, K, sel,
             j->topk_scratch + (size_t)ds4_pool_thread(j->s->pool) * j->stride);
    sel[K] = -1;
}

static void indexer_tokens_task(void *ctx, int64_t task) {
    const idx_job *j = ctx;
    int t0 = (int)task * j->tb, t1 = t0 + j->tb < j->b->n ? t0 + j->tb : j->b->n;
    for (int t = t0; t < t1; t++) {
        indexer_query(j->s, j->b, t);
        indexer_query8(j, t);
    }
    int nvis = idx_nvis(j->b, t1 - 1); /* the block's last token sees the most rows */
    if (nvis > (int)j->s->model->hp.idx_topk) indexer_scores(j, t0, t1 - t0, 0, nvis);
    for (int t = t0; t < t1; t++) indexer_select(j, t);
}

static void indexer_block_task(void *ctx, int64_t blk) {
    const idx_job *j = ctx;
    int per = (int)((j->stride + (size_t)j->blocks - 1) / (size_t)j->blocks);
    per = (per + 2 * DS4_IDX8_ROWS - 1) / (2 * DS4_IDX8_ROWS) * (2 * DS4_IDX8_ROWS); /* whole int8 passes */
    int i0 = (int)blk * per, i1 = i0 + per < (int)j->stride ? i0 + per : (int)j->stride;
    if (i0 < i1) indexer_scores(j, 0, j->b->n, i0, i1);
}

static void indexer_select_task(void *ctx, int64_t t) { indexer_select(ctx, (int)t); }

/* Whether some query of the batch sees more compressed rows than the
 * indexer keeps (otherwise it is skipped: every visible row is used). */
static bool indexer_needed(const ds4_session *s, const batch *b) {
    return (b->p0 + b->n) / 4 > s->model->hp.idx_topk;
}

/* b->iq and b->iw were projected by attention() (with q_b and the other
 * projections of x̂) when indexer_needed(). */
static void run_indexer(ds4_session *s, batch *b, ds4_layer_state *st) {
    const ds4_hparams *hp = &s->model->hp;
    if (!indexer_needed(s, b)) {
        for (int t = 0; t < b->n; t++) b->sel[t * (hp->idx_topk + 1)] = -1;
        return;
    }
    size_t stride = (size_t)idx_nvis(b, b->n - 1); /* the last token sees the most rows */
    int threads = ds4_pool_size(s->pool);
    float *sc = malloc(sizeof(float) * stride * ((size_t)b->n + (size_t)threads));
    if (!sc) abort();
    idx_job j = {s, b, st, sc, stride, (uint32_t *)(void *)(sc + stride * (size_t)b->n), 1, 1, NULL, NULL, 0};
    if (idx8_sync(s, st)) {
        j.qbytes = ds4_idx8_query_bytes((int)hp->idx_n_head, (int)hp->idx_head_dim);
        if ((j.qrec = aligned_alloc(64, j.qbytes * (size_t)b->n))) j.i8 = b->V->idx8;
    }
    if (b->n >= 2 * threads) {
        /* token blocks, at least ~2 per thread */
        j.tb = b->n / (2 * threads) < IDX_TB ? b->n / (2 * threads) : IDX_TB;
        ds4_pool_run(s->pool, (b->n + j.tb - 1) / j.tb, indexer_tokens_task, &j);
    } else {
        /* a few tokens: ~4 row blocks per thread, each >= 16 rows */
        int blocks = 4 * threads;
        while (blocks > 1 && (int64_t)stride / blocks < 16) blocks /= 2;
        j.blocks = blocks;
        for (int t = 0; t < b->n; t++) {
            indexer_query(s, b, t);
            indexer_query8(&j, t);
        }
        ds4_pool_run(s->pool, blocks, indexer_block_task, &j);
        ds4_pool_run(s->pool, b->n, indexer_select_task, &j);
    }
    free(j.qrec);
    free(sc);
}

/* ------------------------------------------------------------------------ */
/* Attention core (§6.7)                                                     */

typedef struct {
    ds4_session *s;
    batch *b;
    const ds4_layer *L;
    const ds4_layer_state *st;
    const float *rope_tab;  /* b->rope_m or b->rope_c */
    int hg;                 /* heads per task (divides n_head) */
} attn_job;

/* One task: token t, heads [h0, h0 + hg), through the live attention
 * kernel (simd.h ds4_attn_args: scores, softmax with the sink, weighted
 * sum), then the inverse RoPE.  All heads of a token attend the same rows,
 * so the kernel loads each row (d_h floats, from L2 at long contexts) once
 * for the hg heads, while each head's scores and sums run in the same order
 * as a head on its own: the result does not depend on hg (bit-identical),
 * so prefill, chunked prefill and decode agree. */

static void attn_task(void *ctx, int64_t task) {
    const attn_job *j = ctx;
    const ds4_hparams *hp = &j->s->model->hp;
    batch *b = j->b;
    int nh = (int)hp->n_head, dh = (int)hp->head_dim, W = (int)hp->window, m = j->L->ratio;
    int hg = j->hg, ng = nh / hg;
    int t = (int)(task / ng), h0 = (int)(task % ng) * hg;
    int64_t pos = b->p0 + t;

    /* Candidate rows: raw window, then compressed rows. */
    int64_t lo = pos - W + 1 > 0 ? pos - W + 1 : 0;
    int nraw = (int)(pos - lo + 1);
    int nvis = m > 0 ? (int)((pos + 1) / m) : 0;
    const int32_t *sel = NULL;
    int ncomp = nvis;
    if (m == 4) {
        const int32_t *cand = b->sel + (size_t)t * (hp->idx_topk + 1);
        if (cand[0] >= 0) { sel = cand; ncomp = (int)hp->idx_topk; }
    }
    int nrows = nraw + ncomp;
    float *sc = malloc(sizeof(float) * (size_t)ds4_attn_scratch(nrows));
    const float **rows = malloc(sizeof(float *) * (size_t)(nrows > 0 ? nrows : 1));
    if (!sc || !rows) abort();
    for (int r = 0; r < nraw; r++) {
        int64_t jp = lo + r;
        rows[r] = jp >= b->p0 ? b->kv + (size_t)(jp - b->p0) * dh : j->st->raw + (size_t)(jp % W) * dh;
    }
    for (int r = 0; r < ncomp; r++) rows[nraw + r] = j->st->comp + (size_t)(sel ? sel[r] : r) * dh;

    ds4_attn_args a = {.hg = hg, .dh = dh, .nrows = nrows, .rows = rows, .scale = 1.0f / sqrtf((float)dh),
                       .scratch = sc, .cold = b->n == 1};
    for (int g = 0; g < hg; g++) {
        a.q[g] = b->q + ((size_t)t * nh + h0 + g) * dh;
        a.o[g] = b->o + ((size_t)t * nh + h0 + g) * dh;
        a.sink[g] = j->L->sinks[h0 + g];
    }
    b->V->attn(b->V, &a);
    for (int g = 0; g < hg; g++) rope_t(b, j->rope_tab, t, a.o[g], dh, (int)hp->rope_dim, -1);
    free(sc);
    free(rows);
}

/* Query heads (unweighted norm, RoPE) as q_b's epilogue: the pool task that
 * computed rows [r0, r1) of q (whole heads: the segment's row_gran) finishes
 * those heads for every token while they are still in its cache, instead of
 * a later pass over q from memory (n·16 KB at Flash's shape, per layer). */
typedef struct {
    const ds4_session *s;
    const batch *b;
    const float *tab;
} q_heads_ctx;

static void q_heads_done(void *ctx, int64_t r0, int64_t r1, const float *mate, int64_t mate_ld) {
    (void)mate, (void)mate_ld;
    const q_heads_ctx *c = ctx;
    const ds4_hparams *hp = &c->s->model->hp;
    const batch *b = c->b;
    int nh = (int)hp->n_head, dh = (int)hp->head_dim, dr = (int)hp->rope_dim;
    for (int t = 0; t < b->n; t++)
        for (int64_t h = r0 / dh; h < r1 / dh; h++) {
            float *qh = b->q + ((size_t)t * nh + (size_t)h) * dh;
            rmsnorm_v(b, qh, NULL, dh, hp->rms_eps, qh);
            rope_t(b, c->tab, t, qh, dh, dr, 1);
        }
}

/* Token t's KV row (norm, RoPE, FP8 QAT on the non-RoPE part). */
static void qkv_token(ds4_session *s, batch *b, const void *arg, int t) {
    const ds4_hparams *hp = &s->model->hp;
    const ds4_layer *L = arg;
    int dh = (int)hp->head_dim, dr = (int)hp->rope_dim;
    const float *tab = L->ratio > 0 ? b->rope_c : b->rope_m;
    float *kv = b->kv + (size_t)t * dh;
    rmsnorm_v(b, kv, L->kv_norm, dh, hp->rms_eps, kv);
    rope_t(b, tab, t, kv, dh, dr, 1);
    if (s->opts.numerics == DS4_NUMERICS_MODEL) b->V->fp8_roundtrip(kv, dh - dr);
}

/* The batch's last W raw KV rows into the layer's ring. */
static void ring_push(const ds4_session *s, const batch *b, ds4_layer_state *st) {
    int dh = (int)s->model->hp.head_dim, W = (int)s->model->hp.window;
    int first = b->n > W ? b->n - W : 0;
    for (int t = first; t < b->n; t++)
        memcpy(st->raw + (size_t)((b->p0 + t) % W) * dh, b->kv + (size_t)t * dh, sizeof(float) * dh);
}

/* The attention sublayer over batch b.  kv_only: only what later
 * positions read -- the KV rows (into the ring), the compressors' rows and
 * frontiers -- and no query, attention or output (run_batch: the last
 * layer's tokens whose outputs nobody reads). */
static void attention(ds4_session *s, batch *b, const ds4_layer *L, ds4_layer_state *st, bool kv_only) {
    const ds4_hparams *hp = &s->model->hp;
    int64_t D = hp->n_embd;
    int nh = (int)hp->n_head, dh = (int)hp->head_dim;
    const float *rope_tab = L->ratio > 0 ? b->rope_c : b->rope_m;

    /* x̂ = RMSNorm(x)·attn_norm is in b->xn: HCPre's last step (hc_step) */

    /* Every projection of x̂ as one pool job: q_a, kv, the compressors'
     * kv/gate and the indexer's weights; then q_b and the indexer's q_b,
     * which both read the normalised q latent, as a second one. */
    int m = L->ratio, wc = (m == 4 ? 2 : 1) * dh, dI = (int)hp->idx_head_dim, nI = (int)hp->idx_n_head;
    bool idx = m == 4 && !kv_only && indexer_needed(s, b);
    int n = b->n;
    ds4_mm_seg seg[8];
    int ns = 0;
    if (!kv_only) seg[ns++] = ds4_seg(&L->q_a, 0, 0, hp->q_lora, b->xn, D, n, b->qlat, hp->q_lora);
    seg[ns++] = ds4_seg(&L->kv, 0, 0, dh, b->xn, D, n, b->kv, dh);
    if (m > 0) {
        seg[ns++] = ds4_seg(&L->comp_kv, 0, 0, wc, b->xn, D, n, b->ca, wc);
        seg[ns++] = ds4_seg(&L->comp_gate, 0, 0, wc, b->xn, D, n, b->cz, wc);
    }
    if (m == 4) {
        seg[ns++] = ds4_seg(&L->idx_comp_kv, 0, 0, 2 * dI, b->xn, D, n, b->ia, 2 * dI);
        seg[ns++] = ds4_seg(&L->idx_comp_gate, 0, 0, 2 * dI, b->xn, D, n, b->iz, 2 * dI);
    }
    if (idx) seg[ns++] = ds4_seg(&L->idx_proj, 0, 0, nI, b->xn, D, n, b->iw, nI);
    ds4_mm_multi(s->pool, seg, ns);
    phase_end(s, b, DS4_PHASE_ATTN_PROJ);
    if (!kv_only) { /* the query path */
        rmsnorm_tokens(s, b, b->qlat, L->q_a_norm, hp->q_lora, hp->q_lora, b->qlat);
        phase_end(s, b, DS4_PHASE_NORM);
        ns = 0;
        q_heads_ctx qh = {s, b, rope_tab};
        seg[ns] = ds4_seg(&L->q_b, 0, 0, ds4_q_dim(hp), b->qlat, hp->q_lora, n, b->q, ds4_q_dim(hp));
        seg[ns].done = q_heads_done;
        seg[ns].done_ctx = &qh;
        seg[ns++].row_gran = dh;
        if (idx)
            seg[ns++] = ds4_seg(&L->idx_q_b, 0, 0, (int64_t)nI * dI, b->qlat, hp->q_lora, n, b->iq,
                                (int64_t)nI * dI);
        ds4_mm_multi(s->pool, seg, ns);
        phase_end(s, b, DS4_PHASE_Q_B);
    }
    /* The shared KV row's norm, RoPE, FP8 (the q heads were done above). */
    for_tokens(s, b, qkv_token, L);
    phase_end(s, b, DS4_PHASE_QKV);

    if (L->ratio > 0) run_compressors(s, b, L, st);
    phase_end(s, b, DS4_PHASE_COMPRESS);
    if (kv_only) {
        ring_push(s, b, st);
        return;
    }
    if (L->ratio == 4) run_indexer(s, b, st);
    phase_end(s, b, DS4_PHASE_INDEXER);

    /* Heads per task: as many as share rows, while leaving >= 4 tasks per
     * thread; below 4 heads (the kernel's widest head tile, much faster
     * than 2 or 1) only to give every thread a task.  Decode (one query)
     * wants one task per thread: each task reads all the query's rows from
     * L2, and with 2 heads per row read (4 tasks of 4 heads on 2 threads)
     * the reads, not the FMAs, set the pace (small-q8 at 512, 2 threads:
     * 8 heads a task, attention 141-163 -> 127-132 us a token). */
    int hg = DS4_ATTN_HG_MAX, nt = ds4_pool_size(s->pool);
    while (hg > 1 && (nh % hg || (int64_t)b->n * (nh / hg) < (hg > 4 && b->n > 1 ? 4 * nt : nt))) hg /= 2;
    attn_job j = {s, b, L, st, rope_tab, hg};
    ds4_pool_run(s->pool, (int64_t)b->n * (nh / hg), attn_task, &j);

    /* The batch's raw rows enter the ring only now: queries above read them
     * from b->kv, and the ring still holds the W positions before the batch. */
    ring_push(s, b, st);
    phase_end(s, b, DS4_PHASE_ATTN);

    /* Grouped output projection: the G group products as one job. */
    int64_t G = hp->o_groups, ro = hp->o_lora, gin = ds4_group_in(hp);
    ds4_mm_seg *gs = malloc(sizeof *gs * (size_t)G);
    if (!gs) abort();
    for (int64_t g = 0; g < G; g++)
        gs[g] = ds4_seg(&L->out_a, 0, g * ro, ro, b->o + g * gin, ds4_q_dim(hp), n, b->low + g * ro, G * ro);
    ds4_mm_multi(s->pool, gs, (int)G);
    free(gs);
    phase_end(s, b, DS4_PHASE_OUT_A);
    ds4_mm(s->pool, &L->out_b, 0, 0, D, b->low, G * ro, b->n, b->out, D);
    phase_end(s, b, DS4_PHASE_OUT_B);
}

/* ------------------------------------------------------------------------ */
/* MoE (§7)                                                                  */

static float sqrt_softplus(float z) {
    float sp = z > 20.0f ? z : log1pf(expf(z));
    return sqrtf(sp);
}

/* Top-k (or hash) selection from the router logits in b->router, for
 * token t (one pool task per token: tokens are independent). */
static void route_token(ds4_session *s, batch *b, const void *arg, int t) {
    const ds4_layer *L = arg;
    const ds4_hparams *hp = &s->model->hp;
    int E = (int)hp->n_expert, k = (int)hp->n_expert_used;
    {
        float *sc = b->router + (size_t)t * E;
        int32_t *ids = b->eid + t * k;
        float *w = b->ew + t * k;
        if (L->hash) { /* only the k listed experts' scores are needed */
            memcpy(ids, L->tid2eid + (size_t)b->tok[t] * k, sizeof(int32_t) * k);
            for (int i = 0; i < k; i++) w[i] = sqrt_softplus(sc[ids[i]]);
        } else {
            /* sqrt(log1p(e^z)): e^z by the live vector expf (libm's bits) */
            float ez[512];
            for (int e0 = 0; e0 < E; e0 += 512) {
                int m = E - e0 < 512 ? E - e0 : 512;
                b->V->exp(ez, sc + e0, m);
                for (int e = 0; e < m; e++) {
                    float z = sc[e0 + e];
                    sc[e0 + e] = sqrtf(z > 20.0f ? z : log1pf(ez[e]));
                }
            }
            /* top-k of the biased scores (ties to the lower expert id);
             * the weights are the unbiased scores */
            ds4_topk_sorted(sc, L->exp_probs_b, E, k, ids, w);
            for (int i = 0; i < k; i++) w[i] = sc[ids[i]];
        }
        float sum = 0;
        for (int i = 0; i < k; i++) sum += w[i];
        if (hp->expert_weights_norm) {
            if (sum < 6.103515625e-5f) sum = 6.103515625e-5f;
            for (int i = 0; i < k; i++) w[i] /= sum;
        }
        for (int i = 0; i < k; i++) w[i] *= hp->expert_weights_scale;
    }
}

static void route(ds4_session *s, batch *b, const ds4_layer *L) {
    for_tokens(s, b, route_token, L);
}

/* SwiGLU epilogue of a gate/up pair: g ← w_t · SwiGLU(g, u) on rows [r0, r1)
 * of every token, run by the pool task that just computed those rows; up's
 * rows (u) come from that task's scratch (ds4_mm_seg.mate_local). */
typedef struct {
    float *g;
    int64_t F;          /* row stride of g */
    int n;
    const float *rw;    /* per-token routing weights; NULL: 1 */
    float clamp;
    const ds4_vec_ops *V;
} swiglu_ctx;

static void swiglu_done(void *ctx, int64_t r0, int64_t r1, const float *u, int64_t ldu) {
    const swiglu_ctx *c = ctx;
    for (int t = 0; t < c->n; t++) {
        float scale = c->rw ? c->rw[t] : 1.0f;
        float *g = c->g + (size_t)t * c->F;
        c->V->swiglu(g + r0, u + (size_t)t * ldu, r1 - r0, c->clamp, scale);
    }
}

/* Appends the gate+up pair of one FFN (gate carries up along, then SwiGLU)
 * over n rows of X into g (row stride F). */
static int ffn_gate_up(const batch *b, ds4_mm_seg *seg, int ns, swiglu_ctx *sc, const ds4_weight *w1,
                       const ds4_weight *w3, int64_t expert, const float *X, const int32_t *xrows, int64_t ldx, int n,
                       float *g, const float *rw, float clamp) {
    int64_t F = w1->ne[1];
    *sc = (swiglu_ctx){g, F, n, rw, clamp, b->V};
    seg[ns] = ds4_seg(w1, expert, 0, F, X, ldx, n, g, F);
    seg[ns].xrows = xrows;
    seg[ns].pair = 1;
    seg[ns].mate_local = 1;
    seg[ns].done = swiglu_done;
    seg[ns].done_ctx = sc;
    seg[ns + 1] = ds4_seg(w3, expert, 0, F, X, ldx, n, NULL, F);
    seg[ns + 1].xrows = xrows;
    return ns + 2;
}

/* Runs one FFN (an expert slice or the shared expert) over `n` rows:
 * out[r] = W2 · (w_r · SwiGLU(W1 x_r, W3 x_r)), as two pool jobs.  wp, when
 * set, holds the expert's gate/up/down slices from the expert store
 * (streaming): the weights are then used from there, never from the mmap. */
static void ffn_rows(ds4_session *s, batch *b, const ds4_weight *w1, const ds4_weight *w3, const ds4_weight *w2,
                     int64_t expert, const void *const *wp, const float *X, int n, const float *rw, float clamp,
                     float *out) {
    int64_t D = s->model->hp.n_embd, F = w1->ne[1];
    ds4_weight v1, v3, v2;
    if (wp) {
        v1 = *w1; v1.data = wp[0]; w1 = &v1;
        v3 = *w3; v3.data = wp[1]; w3 = &v3;
        v2 = *w2; v2.data = wp[2]; w2 = &v2;
        expert = 0;
    }
    ds4_mm_seg seg[2];
    swiglu_ctx sc;
    ffn_gate_up(b, seg, 0, &sc, w1, w3, expert, X, NULL, D, n, b->g, rw, clamp);
    ds4_mm_multi(s->pool, seg, 2);
    ds4_mm(s->pool, w2, expert, 0, D, b->g, F, n, out, D);
}

/* Streaming: the store hands out one group of experts at a time (in
 * ascending order), so each expert runs on its own, as before batching. */
static int moe_streamed(ds4_session *s, batch *b, const ds4_layer *L, uint32_t layer, ds4_err *err) {
    const ds4_hparams *hp = &s->model->hp;
    int64_t D = hp->n_embd;
    int k = (int)hp->n_expert_used;
    ds4_experts *x = s->experts;
    ds4_mm(s->pool, &L->gate_inp, 0, 0, hp->n_expert, b->xn, D, b->n, b->router, hp->n_expert);
    route(s, b, L);
    /* Submit this layer's misses now, so the reads overlap with the shared expert. */
    if (ds4_experts_layer(x, layer, b->eid, k, b->tok, b->n, err)) return -1;
    if (hp->n_expert_shared)
        ffn_rows(s, b, &L->gate_sh, &L->up_sh, &L->down_sh, 0, NULL, b->xn, b->n, NULL, L->clamp_shexp, b->out);
    else
        memset(b->out, 0, sizeof(float) * (size_t)b->n * D);
    float *xg = b->xg, *wg = b->wg;
    for (uint32_t e = 0; e < hp->n_expert; e++) {
        int cnt = 0;
        for (int t = 0; t < b->n; t++)
            for (int i = 0; i < k; i++)
                if (b->eid[t * k + i] == (int32_t)e) { b->etok[cnt] = t; b->eslot[cnt] = t * k + i; cnt++; }
        if (!cnt) continue;
        if (s->opts.expert_counts) s->opts.expert_counts[(size_t)layer * hp->n_expert + e] += (uint64_t)cnt;
        const void *wp[3];
        if (ds4_experts_get(x, layer, (int32_t)e, wp, err)) return -1;
        for (int c = 0; c < cnt; c++) {
            memcpy(xg + (size_t)c * D, b->xn + (size_t)b->etok[c] * D, sizeof(float) * D);
            wg[c] = b->ew[b->eslot[c]];
        }
        float *yo = b->yg;
        ffn_rows(s, b, &L->gate_exps, &L->up_exps, &L->down_exps, e, wp, xg, cnt, wg, L->clamp_exp, yo);
        for (int c = 0; c < cnt; c++) /* as moe_sum_token: 1·y is exact, a plain add */
            b->V->axpy(b->out + (size_t)b->etok[c] * D, 1.0f, yo + (size_t)c * D, D);
    }
    ds4_experts_layer_end(x);
    return 0;
}

typedef struct {
    const int *cnt; /* entries per token */
    int k;
} moe_sum_arg;

/* out[t] += yg[c] for token t's entries c, in ascending c (1·y is exact:
 * a plain SIMD add). */
static void moe_sum_token(ds4_session *s, batch *b, const void *arg, int t) {
    const moe_sum_arg *a = arg;
    int64_t D = s->model->hp.n_embd;
    for (int i = 0; i < a->cnt[t]; i++)
        b->V->axpy(b->out + (size_t)t * D, 1.0f, b->yg + (size_t)b->eslot[t * a->k + i] * D, D);
}

/* MoE half of a layer.  Resident weights: three pool jobs in all,
 *   1. the router (the only product routing waits for)
 *   2. gate/up (+SwiGLU) of the shared expert and of every selected routed
 *      expert (one long stream of weights)
 *   3. shared down (into b->out) + every routed down (into b->yg)
 * then the routed outputs are added in ascending expert order, the order of
 * the streaming path, so both give bit-identical results. */
static int moe(ds4_session *s, batch *b, const ds4_layer *L, uint32_t layer, ds4_err *err) {
    const ds4_hparams *hp = &s->model->hp;
    int64_t D = hp->n_embd, Fe = hp->expert_ff;
    int k = (int)hp->n_expert_used, E = (int)hp->n_expert, n = b->n;
    /* x̂ = RMSNorm(x)·ffn_norm is in b->xn: HCPre's last step (hc_step) */
    if (s->experts) {
        int rc = moe_streamed(s, b, L, layer, err);
        phase_end(s, b, DS4_PHASE_MOE_STREAM);
        return rc;
    }

    bool sh = hp->n_expert_shared > 0;
    int64_t Fs = sh ? L->gate_sh.ne[1] : 0;
    /* routed rows first (n·k of them), then the shared expert's n rows */
    float *gsh = b->g + (size_t)n * k * Fe;
    int maxseg = 2 * E + 3;
    ds4_mm_seg *seg = malloc(sizeof *seg * (size_t)maxseg);
    swiglu_ctx *sc = malloc(sizeof *sc * (size_t)(E + 1));
    int *first = malloc(sizeof *first * (size_t)(E + 1)); /* expert e's rows: [first[e], first[e+1]) */
    if (!seg || !sc || !first) abort();

    if (L->hash && n == 1) { /* a hash layer's decode step reads only its experts' rows */
        const int32_t *ids = L->tid2eid + (size_t)b->tok[0] * k;
        int nr = 0;
        for (int i = 0; i < k; i++) {
            bool seen = false; /* a row listed twice is computed once */
            for (int j = 0; j < i; j++) seen = seen || ids[j] == ids[i];
            if (!seen) seg[nr++] = ds4_seg(&L->gate_inp, 0, ids[i], 1, b->xn, D, 1, b->router + ids[i], E);
        }
        ds4_mm_multi(s->pool, seg, nr);
    } else {
        ds4_mm(s->pool, &L->gate_inp, 0, 0, E, b->xn, D, n, b->router, E);
    }
    phase_end(s, b, DS4_PHASE_ROUTER);
    route(s, b, L);

    /* Group the n·k (token, slot) pairs by expert (counting sort; within an
     * expert in token order, as the streaming path lists them). */
    memset(first, 0, sizeof *first * (size_t)(E + 1));
    for (int i = 0; i < n * k; i++)
        if (b->eid[i] >= 0 && b->eid[i] < E) first[b->eid[i] + 1]++; /* the streaming path ignores others too */
    for (int e = 0; e < E; e++) first[e + 1] += first[e];
    {
        int *fill = malloc(sizeof *fill * (size_t)E);
        if (!fill) abort();
        memcpy(fill, first, sizeof *fill * (size_t)E);
        for (int i = 0; i < n * k; i++) {
            if (b->eid[i] < 0 || b->eid[i] >= E) continue;
            int c = fill[b->eid[i]]++;
            b->etok[c] = i / k;
            b->eslot[c] = i;
        }
        free(fill);
    }
    int ns = 0;
    if (sh)
        ns = ffn_gate_up(b, seg, ns, &sc[E], &L->gate_sh, &L->up_sh, 0, b->xn, NULL, D, n, gsh, NULL,
                         L->clamp_shexp);
    for (int e = 0; e < E; e++) {
        int c0 = first[e], cnt = first[e + 1] - c0;
        if (!cnt) continue;
        if (s->opts.expert_counts) s->opts.expert_counts[(size_t)layer * hp->n_expert + e] += (uint64_t)cnt;
        /* An expert used by every token in order (always so in decode) reads
         * x̂ as it is, sharing its conversion with the shared expert; others
         * read their tokens' rows of x̂ through the index list (the
         * conversion gathers them: no copy). */
        bool all = cnt == n;
        for (int c = 0; all && c < cnt; c++) all = b->etok[c0 + c] == c;
        const int32_t *xrows = all ? NULL : b->etok + c0;
        for (int c = 0; c < cnt; c++) b->wg[c0 + c] = b->ew[b->eslot[c0 + c]];
        ns = ffn_gate_up(b, seg, ns, &sc[e], &L->gate_exps, &L->up_exps, e, b->xn, xrows, D, cnt,
                         b->g + (size_t)c0 * Fe, b->wg + c0, L->clamp_exp);
    }
    phase_end(s, b, DS4_PHASE_ROUTE);
    ds4_mm_multi(s->pool, seg, ns);
    phase_end(s, b, DS4_PHASE_GATE_UP);

    ns = 0;
    if (sh) seg[ns++] = ds4_seg(&L->down_sh, 0, 0, D, gsh, Fs, n, b->out, D);
    else memset(b->out, 0, sizeof(float) * (size_t)n * D);
    for (int e = 0; e < E; e++) {
        int c0 = first[e], cnt = first[e + 1] - c0;
        if (cnt)
            seg[ns++] = ds4_seg(&L->down_exps, e, 0, D, b->g + (size_t)c0 * Fe, Fe, cnt, b->yg + (size_t)c0 * D, D);
    }
    ds4_mm_multi(s->pool, seg, ns);
    phase_end(s, b, DS4_PHASE_DOWN);
    /* Each token adds its routed outputs in ascending expert order (the
     * streaming path's order): its entries' indices c, listed in ascending
     * order per token, then one pool task per token. */
    int *cnt = calloc((size_t)n, sizeof *cnt);
    if (!cnt) abort();
    for (int c = 0; c < first[E]; c++) {
        int t = b->etok[c];
        b->eslot[t * k + cnt[t]++] = c; /* eslot is free again: the weights were gathered */
    }
    moe_sum_arg ma = {cnt, k};
    for_tokens(s, b, moe_sum_token, &ma);
    phase_end(s, b, DS4_PHASE_MOE_SUM);
    free(cnt);
    free(seg);
    free(sc);
    free(first);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Head (§5.4, §8)                                                           */

static void head(ds4_session *s, batch *b, int t0, int nt, float *logits) {
    const ds4_model *m = s->model;
    const ds4_hparams *hp = &m->hp;
    int H = (int)hp->hc_mult;
    int64_t D = hp->n_embd, HD = ds4_hc_dim(hp);
    float mix[16];
    for (int t = t0; t < t0 + nt; t++) {
        const float *X = b->X + (size_t)t * HD;
        float r = rms_scale(b, X, HD, hp->rms_eps);
        ds4_mm_local(&m->out_hc_fn, X, HD, 1, mix, H, b->hc_scratch); /* 4 rows: not worth a pool job */
        float *y = b->xn + (size_t)(t - t0) * D, w[16];
        for (int j = 0; j < H; j++)
            w[j] = ds4_sigmoid(mix[j] * r * m->out_hc_scale[0] + m->out_hc_base[j]) + hp->hc_eps;
        b->V->hc_collapse(b->V, y, X, w, H, D);
        rmsnorm_v(b, y, m->out_norm, D, hp->rms_eps, y);
    }
    ds4_mm(s->pool, &m->output, 0, 0, hp->n_vocab, b->xn, D, nt, logits, hp->n_vocab);
}

/* ------------------------------------------------------------------------ */
/* Driver                                                                    */

/* The last layer for a batch whose outputs are read only for its last
 * `keep` tokens (0 or 1: the logits of the last token, or none).  Only the
 * last layer's KV side reaches later positions, so the other tokens get
 * just that (attention(kv_only)); the kept tail then runs the whole layer
 * as a batch of its own that starts where they end -- exactly how chunked
 * prefill would run it, so its results are the same bits.  The tail's
 * inputs (streams, normalised input, HC post weights) move to row 0 and its
 * streams back to their rows at the end, where head() reads them.  Skipping
 * the rest of the layer for the others is what llama.cpp does too (its
 * output ids): ~1/n_layer of a prefill. */
/* Layer l after its HCPre: attention, HCPost + HCPre, the MoE. */
static int layer_body(ds4_session *s, batch *b, const ds4_layer *L, uint32_t l, ds4_err *err) {
    attention(s, b, L, &s->ls[l], false);
    hc_step(s, b, true, &L->hc_ffn_fn, L->hc_ffn_scale, L->hc_ffn_base, L->ffn_norm, &L->gate_inp);
    phase_end(s, b, DS4_PHASE_HC);
    return moe(s, b, L, l, err);
}

/* The last layer's HCPost (no sublayer follows). */
static void hc_final(ds4_session *s, batch *b) {
    hc_step(s, b, true, NULL, NULL, NULL, NULL, NULL);
    phase_end(s, b, DS4_PHASE_HC);
}

static int last_layer_tail(ds4_session *s, batch *b, const ds4_layer *L, uint32_t l, int keep, ds4_err *err) {
    const ds4_hparams *hp = &s->model->hp;
    int H = (int)hp->hc_mult, qs = b->n - keep, half = (int)hp->rope_dim / 2;
    int64_t D = hp->n_embd, HD = ds4_hc_dim(hp);
    batch kvb = *b;
    kvb.n = qs;
    attention(s, &kvb, L, &s->ls[l], true);
    b->ph_t = kvb.ph_t; /* phase profiling goes on from the views' clock */
    if (keep == 0) return 0;
    batch t = *b;
    t.n = keep;
    t.p0 = b->p0 + qs;
    t.tok = b->tok + qs;
    memmove(t.X, b->X + (size_t)qs * HD, sizeof(float) * (size_t)(keep * HD));
    memmove(t.xn, b->xn + (size_t)qs * D, sizeof(float) * (size_t)(keep * D));
    memmove(t.post, b->post + (size_t)qs * H, sizeof(float) * (size_t)(keep * H));
    memmove(t.comb, b->comb + (size_t)qs * H * H, sizeof(float) * (size_t)(keep * H * H));
    memmove(t.rope_m, b->rope_m + (size_t)qs * 3 * half, sizeof(float) * (size_t)(keep * 3 * half));
    memmove(t.rope_c, b->rope_c + (size_t)qs * 3 * half, sizeof(float) * (size_t)(keep * 3 * half));
    if (layer_body(s, &t, L, l, err)) return -1;
    hc_final(s, &t);
    memmove(b->X + (size_t)qs * HD, t.X, sizeof(float) * (size_t)(keep * HD));
    b->ph_t = t.ph_t;
    return 0;
}

/* Undo of a batch that a stop request interrupts: before a layer's first
 * change, the parts of its state a batch rewrites in place -- the window
 * ring and the compressor frontiers -- and its row counts are copied into
 * s->undo (one slot per layer, allocated on first use); copying them back
 * undoes the layer.  Rows appended past the restored counts are dead, and
 * the idx8 cache keeps only rows converted from rows that stay. */
static size_t undo_floats(const ds4_hparams *hp, int m) {
    size_t f = (size_t)hp->window * hp->head_dim + 2; /* ring, n_comp, n_idx */
    if (m > 0) f += 2 * comp_frontier_len(hp, m);
    if (m == 4) f += 2 * idx_frontier_len(hp);
    return f;
}

static void undo_layer(ds4_session *s, uint32_t l, bool save) {
    const ds4_hparams *hp = &s->model->hp;
    float *u = s->undo;
    for (uint32_t i = 0; i < l; i++) u += undo_floats(hp, s->model->layers[i].ratio);
    ds4_layer_state *st = &s->ls[l];
    int m = s->model->layers[l].ratio;
    size_t nr = (size_t)hp->window * hp->head_dim, nf = m > 0 ? comp_frontier_len(hp, m) : 0;
    size_t ni = m == 4 ? idx_frontier_len(hp) : 0;
    float *part[5] = {st->raw, st->comp_kv, st->comp_sc, st->idx_kv, st->idx_sc};
    size_t len[5] = {nr, nf, nf, ni, ni};
    for (int k = 0; k < 5; k++) {
        if (!len[k]) continue;
        if (save) memcpy(u, part[k], sizeof(float) * len[k]);
        else memcpy(part[k], u, sizeof(float) * len[k]);
        u += len[k];
    }
    uint32_t *cnt = (uint32_t *)(void *)u;
    if (save) {
        cnt[0] = st->n_comp;
        cnt[1] = st->n_idx;
    } else {
        st->n_comp = cnt[0];
        st->n_idx = cnt[1];
        if (st->n_idx8 > st->n_idx) st->n_idx8 = st->n_idx;
    }
}

static int undo_alloc(ds4_session *s) {
    if (s->undo) return 0;
    size_t f = 0;
    for (uint32_t l = 0; l < s->model->hp.n_layer; l++) f += undo_floats(&s->model->hp, s->model->layers[l].ratio);
    s->undo = malloc(sizeof(float) * f);
    return s->undo ? 0 : -1;
}

/* Runs the batch through every layer.  keep: how many of its last tokens'
 * final streams (b->X) the caller reads (b->n for all of them).  1: stop(ud)
 * asked to stop between layers, and the layers the batch had changed are
 * undone (stop NULL: never asked). */
static int run_batch(ds4_session *s, batch *b, int keep, int (*stop)(void *), void *ud, ds4_err *err) {
    const ds4_model *m = s->model;
    const ds4_hparams *hp = &m->hp;
    int H = (int)hp->hc_mult;
    int64_t D = hp->n_embd;
    if (s->opts.phase_ns) b->ph_t = now_ns();
    rope_tables(s->rope_main, (int)hp->rope_dim / 2, b->p0, b->n, b->rope_m);
    rope_tables(s->rope_comp, (int)hp->rope_dim / 2, b->p0, b->n, b->rope_c);
    for (int t = 0; t < b->n; t++) {
        float *X = b->X + (size_t)t * H * D;
        ds4_weight_row_f32(&m->tok_embd, b->tok[t], X);
        for (int j = 1; j < H; j++) memcpy(X + j * D, X, sizeof(float) * D);
    }
    if (stop && undo_alloc(s)) return ds4_err_set(err, "out of memory for the undo state of a stoppable batch");
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        const ds4_layer *L = &m->layers[l];
        if (stop) {
            if (l > 0 && stop(ud)) {
                for (uint32_t i = 0; i < l; i++) undo_layer(s, i, false);
                return 1;
            }
            undo_layer(s, l, true);
        }
        hc_step(s, b, l > 0, &L->hc_attn_fn, L->hc_attn_scale, L->hc_attn_base, L->attn_norm, &L->q_a);
        phase_end(s, b, DS4_PHASE_HC);
        if (l + 1 == hp->n_layer && keep < b->n) return last_layer_tail(s, b, L, l, keep, err);
        if (layer_body(s, b, L, l, err)) return -1;
    }
    hc_final(s, b);
    return 0;
}

/* The batch scratch lives with the session and is reallocated only when a
 * larger batch is needed, so token-by-token decode allocates nothing. */
static batch *session_batch(ds4_session *s, int n) {
    if (s->scratch && ((batch *)s->scratch)->n >= n) return s->scratch;
    if (s->scratch) { batch_free(s->scratch); free(s->scratch); s->scratch = NULL; }
    batch *b = malloc(sizeof *b);
    if (!b || batch_alloc(b, &s->model->hp, n)) { free(b); return NULL; }
    /* HCPre blocks' scratch, for the largest of the layers' mix weights */
    size_t per = ds4_mm_local_scratch(&s->model->out_hc_fn, 1); /* head() */
    for (uint32_t l = 0; l < s->model->hp.n_layer; l++) {
        const ds4_layer *L = &s->model->layers[l];
        size_t a = ds4_mm_local_scratch(&L->hc_attn_fn, HC_BLOCK), f = ds4_mm_local_scratch(&L->hc_ffn_fn, HC_BLOCK);
        if (a > per) per = a;
        if (f > per) per = f;
    }
    b->hc_slot = (per + 63) & ~(size_t)63;
    b->hc_scratch = aligned_alloc(64, b->hc_slot * (size_t)ds4_pool_size(s->pool));
    if (!b->hc_scratch) { batch_free(b); free(b); return NULL; }
    s->scratch = b;
    return b;
}

int ds4_session_eval_stoppable(ds4_session *s, const int32_t *tokens, int n, enum ds4_logits which,
                               float *logits, int (*stop)(void *ud), void *ud, ds4_err *err) {
    const ds4_hparams *hp = &s->model->hp;
    if (n <= 0) return ds4_err_set(err, "no tokens to evaluate");
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || (uint32_t)tokens[i] >= hp->n_vocab)
            return ds4_err_set(err, "token id %d at index %d is out of range 0..%u", tokens[i], i, hp->n_vocab - 1);
    if ((uint64_t)s->pos + (uint64_t)n > s->opts.ctx_max)
        return ds4_err_set(err, "context full: %u + %d tokens exceed the context size %u", s->pos, n,
                           s->opts.ctx_max);
    if (stop && stop(ud)) return 1;
#ifdef DS4_CUDA
    if (s->cuda) return ds4_cuda_session_eval(s, tokens, n, which, logits, err);
#endif
    int maxb = s->opts.max_batch < n ? s->opts.max_batch : n;
    batch *sb = session_batch(s, maxb);
    if (!sb) return ds4_err_set(err, "out of memory for a batch of %d tokens", maxb);
    batch b = *sb; /* per-call view: n, p0, tok change; buffers are shared */
    b.V = ds4_vec_ops_live();
    for (int done = 0; done < n;) {
        int nb = n - done < maxb ? n - done : maxb;
        b.n = nb;
        b.p0 = s->pos;
        b.tok = tokens + done;
        /* stoppable: every batch's last logits, valid at whatever batch it stops after */
        bool last = done + nb == n || stop != NULL, any = nb > 1 && stop != NULL;
        int keep = which == DS4_LOGITS_ALL ? nb : which == DS4_LOGITS_LAST && last ? 1 : 0;
        if (done > 0 && stop && stop(ud)) return 1;
        int rc = run_batch(s, &b, keep, any ? stop : NULL, ud, err);
        if (rc > 0) return 1;
        if (rc) {
            ds4_session_reset(s); /* layers before the failure already advanced */
            return -1;
        }
        if (which == DS4_LOGITS_ALL) {
            head(s, &b, 0, nb, logits + (size_t)done * hp->n_vocab);
        } else if (which == DS4_LOGITS_LAST && last) {
            head(s, &b, nb - 1, 1, logits);
        }
        phase_end(s, &b, DS4_PHASE_HEAD);
        s->pos += (uint32_t)nb;
        done += nb;
    }
    return 0;
}

int ds4_session_eval(ds4_session *s, const int32_t *tokens, int n, enum ds4_logits which, float *logits,
                     ds4_err *err) {
    return ds4_session_eval_stoppable(s, tokens, n, which, logits, NULL, NULL, err);
}

int ds4_eval_sequence(const ds4_model *m, const ds4_engine_opts *opts, const int32_t *tokens, int n, int chunk,
                      int decode_from, float *logits, ds4_err *err) {
    ds4_engine_opts o;
    if (opts) o = *opts; else ds4_engine_opts_default(&o);
    if (o.ctx_max < (uint32_t)n) o.ctx_max = (uint32_t)n;
    ds4_session *s = ds4_session_new(m, &o, NULL, err);
    if (!s) return -1;
    size_t V = m->hp.n_vocab;
    int rc = 0;
    if (decode_from > 0) {
        int k = decode_from < n ? decode_from : n;
        rc = ds4_session_eval(s, tokens, k, DS4_LOGITS_ALL, logits, err);
        for (int i = k; rc == 0 && i < n; i++)
            rc = ds4_session_eval(s, tokens + i, 1, DS4_LOGITS_LAST, logits + (size_t)i * V, err);
    } else {
        int step = chunk > 0 ? chunk : n;
        for (int i = 0; rc == 0 && i < n; i += step) {
            int k = n - i < step ? n - i : step;
            rc = ds4_session_eval(s, tokens + i, k, DS4_LOGITS_ALL, logits + (size_t)i * V, err);
        }
    }
    ds4_session_free(s);
    return rc;
}
