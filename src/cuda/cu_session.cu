/* The CUDA session: device copies of the model, per-sequence state on the
 * GPU, the layer-major forward pass (forward.c's run_batch / head, op for
 * op) and the entry points of cuda_backend.h.
 *
 * Weights.  Dense tensors are uploaded once per model (a registry keyed by
 * the ds4_model pointer, reference counted across sessions).  Routed
 * experts: when they fit in the VRAM budget (--gpu-expert-cache-mb, 0 =
 * free memory minus a reserve) every stacked expert tensor is uploaded
 * whole ("resident"); otherwise a slot cache (cu_experts.cu) holds
 * gate+up+down of recently used (layer, expert) pairs and misses are copied
 * from the host image of the file on a copy stream while the shared expert
 * runs.
 *
 * Decode.  Positions live in device memory (d_p0), grouping of routed rows
 * is done on the device, and no kernel's grid depends on the position, so
 * one decode step (n = 1, experts resident) is captured once in a CUDA
 * graph and replayed per token: ~40 launches per layer become one launch.
 * With a partial expert cache each layer needs the host to resolve misses,
 * so decode runs eagerly with one synchronisation per layer. */
#include "cuda/cuda_backend.h"
#include "cuda/cu_common.cuh"
#include "cuda/cu_experts.cuh"
#include "cuda/cu_ops.cuh"

#include <string.h>

extern "C" {
#include "gguf/gguf.h"
}

/* ------------------------------------------------------------------------ */
/* Device model                                                              */

struct cu_layer {
    int ratio, hash;
    dmat hc_attn_fn, hc_ffn_fn, q_a, q_b, kv, out_a, out_b, comp_kv, comp_gate, idx_q_b, idx_proj, idx_comp_kv,
        idx_comp_gate, gate_inp, gate_sh, up_sh, down_sh;
    float *hc_attn_scale, *hc_attn_base, *hc_ffn_scale, *hc_ffn_base, *attn_norm, *ffn_norm, *q_a_norm, *kv_norm,
        *sinks, *comp_ape, *comp_norm, *idx_comp_ape, *idx_comp_norm, *exp_probs_b;
    int32_t *tid2eid;
    float clamp_exp, clamp_shexp;
};

struct cu_model {
    const ds4_model *m;
    int refs;
    cu_layer *L;
    dmat tok_embd, output, out_hc_fn;
    float *out_norm, *out_hc_base, *out_hc_scale;
    cu_experts *ex;
    uint64_t dense_bytes;
};

#define MAX_MODELS 8
/* Tokens per head pass of a DS4_LOGITS_ALL batch (the logits buffers' rows). */
#define CU_LOGITS_ROWS 64
static cu_model *g_models[MAX_MODELS];

static void *dalloc(size_t n, uint64_t *acc) {
    void *p = NULL;
    if (n == 0) n = 16;
    CU_CHECK(cudaMalloc(&p, n));
    if (acc) *acc += n;
    return p;
}

static dmat up_weight(const ds4_weight *w, uint64_t *acc) {
    dmat d = {};
    if (!w->data) return d;
    d.type = w->type;
    d.ne0 = w->ne[0];
    d.ne1 = w->ne[1];
    d.ne2 = w->ne[2] > 0 ? w->ne[2] : 1;
    d.row_bytes = ds4_row_size(w->type, w->ne[0]);
    size_t bytes = d.row_bytes * (size_t)d.ne1 * (size_t)d.ne2;
    void *p = dalloc(bytes, acc);
    CU_CHECK(cudaMemcpy(p, w->data, bytes, cudaMemcpyHostToDevice));
    d.d = (const uint8_t *)p;
    return d;
}

static float *up_vec(const float *v, size_t n, uint64_t *acc) {
    if (!v) return NULL;
    float *p = (float *)dalloc(n * sizeof(float), acc);
    CU_CHECK(cudaMemcpy(p, v, n * sizeof(float), cudaMemcpyHostToDevice));
    return p;
}

static void free_dmat(dmat *d) {
    if (d->d) cudaFree((void *)d->d);
    d->d = NULL;
}

static cu_model *model_get(const ds4_model *m, const ds4_engine_opts *o, ds4_err *err) {
    for (int i = 0; i < MAX_MODELS; i++)
        if (g_models[i] && g_models[i]->m == m) { g_models[i]->refs++; return g_models[i]; }
    int slot = -1;
    for (int i = 0; i < MAX_MODELS; i++)
        if (!g_models[i]) { slot = i; break; }
    if (slot < 0) { ds4_err_set(err, "too many models on the GPU"); return NULL; }
    const ds4_hparams *hp = &m->hp;
    cu_model *cm = (cu_model *)calloc(1, sizeof *cm);
    cm->m = m;
    cm->refs = 1;
    uint64_t *acc = &cm->dense_bytes;
    size_t D = hp->n_embd, NM = ds4_hc_mix(hp), H = hp->hc_mult, dh = hp->head_dim, dI = hp->idx_head_dim;
    cm->tok_embd = up_weight(&m->tok_embd, acc);
    cm->output = up_weight(&m->output, acc);
    cm->out_hc_fn = up_weight(&m->out_hc_fn, acc);
    cm->out_norm = up_vec(m->out_norm, D, acc);
    cm->out_hc_base = up_vec(m->out_hc_base, H, acc);
    cm->out_hc_scale = up_vec(m->out_hc_scale, 1, acc);
    cm->L = (cu_layer *)calloc(hp->n_layer, sizeof(cu_layer));
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        const ds4_layer *S = &m->layers[l];
        cu_layer *L = &cm->L[l];
        int r = S->ratio, c = r == 4 ? 2 : 1;
        L->ratio = r;
        L->hash = S->hash;
        L->hc_attn_fn = up_weight(&S->hc_attn_fn, acc);
        L->hc_ffn_fn = up_weight(&S->hc_ffn_fn, acc);
        L->q_a = up_weight(&S->q_a, acc);
        L->q_b = up_weight(&S->q_b, acc);
        L->kv = up_weight(&S->kv, acc);
        L->out_a = up_weight(&S->out_a, acc);
        L->out_b = up_weight(&S->out_b, acc);
        L->gate_inp = up_weight(&S->gate_inp, acc);
        L->gate_sh = up_weight(&S->gate_sh, acc);
        L->up_sh = up_weight(&S->up_sh, acc);
        L->down_sh = up_weight(&S->down_sh, acc);
        L->hc_attn_scale = up_vec(S->hc_attn_scale, 3, acc);
        L->hc_attn_base = up_vec(S->hc_attn_base, NM, acc);
        L->hc_ffn_scale = up_vec(S->hc_ffn_scale, 3, acc);
        L->hc_ffn_base = up_vec(S->hc_ffn_base, NM, acc);
        L->attn_norm = up_vec(S->attn_norm, D, acc);
        L->ffn_norm = up_vec(S->ffn_norm, D, acc);
        L->q_a_norm = up_vec(S->q_a_norm, hp->q_lora, acc);
        L->kv_norm = up_vec(S->kv_norm, dh, acc);
        L->sinks = up_vec(S->sinks, hp->n_head, acc);
        if (r > 0) {
            L->comp_kv = up_weight(&S->comp_kv, acc);
            L->comp_gate = up_weight(&S->comp_gate, acc);
            L->comp_ape = up_vec(S->comp_ape, (size_t)r * c * dh, acc);
            L->comp_norm = up_vec(S->comp_norm, dh, acc);
        }
        if (r == 4) {
            L->idx_q_b = up_weight(&S->idx_q_b, acc);
            L->idx_proj = up_weight(&S->idx_proj, acc);
            L->idx_comp_kv = up_weight(&S->idx_comp_kv, acc);
            L->idx_comp_gate = up_weight(&S->idx_comp_gate, acc);
            L->idx_comp_ape = up_vec(S->idx_comp_ape, 4 * 2 * dI, acc);
            L->idx_comp_norm = up_vec(S->idx_comp_norm, dI, acc);
        }
        if (S->exp_probs_b) L->exp_probs_b = up_vec(S->exp_probs_b, hp->n_expert, acc);
        if (S->tid2eid) {
            size_t nb = sizeof(int32_t) * (size_t)hp->n_vocab * hp->n_expert_used;
            L->tid2eid = (int32_t *)dalloc(nb, acc);
            CU_CHECK(cudaMemcpy(L->tid2eid, S->tid2eid, nb, cudaMemcpyHostToDevice));
        }
        L->clamp_exp = S->clamp_exp;
        L->clamp_shexp = S->clamp_shexp;
    }
    cm->ex = cu_experts_new(m, o ? o->gpu_expert_cache_mb : 0, err);
    if (!cm->ex) {
        /* dense copies are reclaimed when the process ends; a failed open is fatal for the caller anyway */
        free(cm->L);
        free(cm);
        return NULL;
    }
    g_models[slot] = cm;
    return cm;
}

static void model_put(cu_model *cm) {
    if (--cm->refs > 0) return;
    const ds4_hparams *hp = &cm->m->hp;
    for (int i = 0; i < MAX_MODELS; i++)
        if (g_models[i] == cm) g_models[i] = NULL;
    cu_experts_free(cm->ex);
    free_dmat(&cm->tok_embd); free_dmat(&cm->output); free_dmat(&cm->out_hc_fn);
    cudaFree(cm->out_norm); cudaFree(cm->out_hc_base); cudaFree(cm->out_hc_scale);
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        cu_layer *L = &cm->L[l];
        dmat *ms[] = {&L->hc_attn_fn, &L->hc_ffn_fn, &L->q_a, &L->q_b, &L->kv, &L->out_a, &L->out_b, &L->comp_kv,
                      &L->comp_gate, &L->idx_q_b, &L->idx_proj, &L->idx_comp_kv, &L->idx_comp_gate, &L->gate_inp,
                      &L->gate_sh, &L->up_sh, &L->down_sh};
        for (size_t i = 0; i < sizeof ms / sizeof *ms; i++) free_dmat(ms[i]);
        float *vs[] = {L->hc_attn_scale, L->hc_attn_base, L->hc_ffn_scale, L->hc_ffn_base, L->attn_norm, L->ffn_norm,
                       L->q_a_norm, L->kv_norm, L->sinks, L->comp_ape, L->comp_norm, L->idx_comp_ape,
                       L->idx_comp_norm, L->exp_probs_b};
        for (size_t i = 0; i < sizeof vs / sizeof *vs; i++) if (vs[i]) cudaFree(vs[i]);
        if (L->tid2eid) cudaFree(L->tid2eid);
    }
    free(cm->L);
    free(cm);
}

/* ------------------------------------------------------------------------ */
/* Session                                                                   */

struct cu_lstate {
    float *raw, *comp, *ckv, *csc, *idx, *ikv, *isc;
    size_t comp_rows, ckv_n, ikv_n;
};

struct cu_session {
    ds4_session *s;
    cu_model *cm;
    cudaStream_t st;
    int N;                       /* batch capacity */
    int nseg_max;
    cu_lstate *ls;
    float *rope_main, *rope_comp;
    /* batch buffers (forward.c struct batch) */
    float *X, *flat, *mix, *post, *comb, *x, *xn, *out, *qlat, *q, *kv, *o, *low, *ca, *cz, *ia, *iz, *iq, *iw,
        *iscores, *router, *ew, *g, *u, *xg, *yg, *row_w, *logits;
    int32_t *sel, *eid, *row_tok, *slot_row, *seg_eid, *tok;
    int *seg_off, *counts, *info, *p0;
    const uint8_t **wtab_g, **wtab_u, **wtab_d;
    uint8_t *xq;
    /* pinned staging */
    int32_t *h_tok;
    int *h_p0, *h_info;
    int32_t *h_seg_eid;
    float *h_logits;
    int logits_rows; /* rows of logits and h_logits: min(N, CU_LOGITS_ROWS) */
    /* decode graph */
    cudaGraphExec_t graph;
    int graph_tried, decode_calls;
    int max_rows;                /* attention score buffer bound */
    double last_ms;
};

static size_t comp_frontier(const ds4_hparams *hp, int m) {
    size_t c = m == 4 ? 2 : 1;
    return (size_t)(c * m) * (c * hp->head_dim);
}

static void state_reset(cu_session *cs) {
    const ds4_hparams *hp = &cs->s->model->hp;
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        cu_lstate *L = &cs->ls[l];
        if (L->ckv) {
            CU_CHECK(cudaMemsetAsync(L->ckv, 0, L->ckv_n * sizeof(float), cs->st));
            cu_fill(cs->st, L->csc, (int64_t)L->ckv_n, -INFINITY);
        }
        if (L->ikv) {
            CU_CHECK(cudaMemsetAsync(L->ikv, 0, L->ikv_n * sizeof(float), cs->st));
            cu_fill(cs->st, L->isc, (int64_t)L->ikv_n, -INFINITY);
        }
    }
    CU_CHECK(cudaStreamSynchronize(cs->st));
}

extern "C" int ds4_cuda_available(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) { cudaGetLastError(); return 0; }
    return n > 0;
}

extern "C" const char *ds4_cuda_device_name(void) {
    static char name[300];
    cudaDeviceProp p;
    if (!ds4_cuda_available() || cudaGetDeviceProperties(&p, 0) != cudaSuccess) return "";
    snprintf(name, sizeof name, "%s (sm_%d%d, %d SMs, %.1f GiB)", p.name, p.major, p.minor, p.multiProcessorCount,
             p.totalGlobalMem / 1073741824.0);
    return name;
}

#define BALLOC(ptr, count) ptr = (decltype(ptr))dalloc(sizeof(*ptr) * (size_t)(count), NULL)

extern "C" void *ds4_cuda_session_new(ds4_session *s, ds4_err *err) {
    if (!ds4_cuda_available()) { ds4_err_set(err, "no CUDA device available"); return NULL; }
    const ds4_model *m = s->model;
    const ds4_hparams *hp = &m->hp;
    cu_session *cs = (cu_session *)calloc(1, sizeof *cs);
    cs->s = s;
    cs->cm = model_get(m, &s->opts, err);
    if (!cs->cm) { free(cs); return NULL; }
    CU_CHECK(cudaStreamCreateWithFlags(&cs->st, cudaStreamNonBlocking));
    cu_mm_init();
    int N = s->opts.max_batch, k = (int)hp->n_expert_used, E = (int)hp->n_expert;
    cs->N = N;
    cs->nseg_max = N * k < E + k ? N * k : E + k;
    size_t D = hp->n_embd, H = hp->hc_mult, HD = ds4_hc_dim(hp), NM = ds4_hc_mix(hp), dh = hp->head_dim;
    size_t dI = hp->idx_head_dim, nI = hp->idx_n_head, qd = ds4_q_dim(hp), R = (size_t)N * k;
    size_t F = hp->expert_ff, Fs = F * (hp->n_expert_shared ? hp->n_expert_shared : 1);
    size_t gsz = R * F > (size_t)N * Fs ? R * F : (size_t)N * Fs;
    /* state */
    cs->ls = (cu_lstate *)calloc(hp->n_layer, sizeof(cu_lstate));
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        cu_lstate *L = &cs->ls[l];
        int r = m->layers[l].ratio;
        BALLOC(L->raw, (size_t)hp->window * dh);
        if (r > 0) {
            L->comp_rows = s->opts.ctx_max / (uint32_t)r + 2;
            BALLOC(L->comp, L->comp_rows * dh);
            L->ckv_n = comp_frontier(hp, r);
            BALLOC(L->ckv, L->ckv_n);
            BALLOC(L->csc, L->ckv_n);
        }
        if (r == 4) {
            BALLOC(L->idx, (size_t)s->comp_cap * dI);
            L->ikv_n = (size_t)8 * 2 * dI;
            BALLOC(L->ikv, L->ikv_n);
            BALLOC(L->isc, L->ikv_n);
        }
    }
    BALLOC(cs->rope_main, hp->rope_dim / 2 + 1);
    BALLOC(cs->rope_comp, hp->rope_dim / 2 + 1);
    CU_CHECK(cudaMemcpy(cs->rope_main, s->rope_main, sizeof(float) * (hp->rope_dim / 2), cudaMemcpyHostToDevice));
    CU_CHECK(cudaMemcpy(cs->rope_comp, s->rope_comp, sizeof(float) * (hp->rope_dim / 2), cudaMemcpyHostToDevice));
    /* batch */
    BALLOC(cs->X, N * HD); BALLOC(cs->flat, N * HD); BALLOC(cs->mix, N * NM); BALLOC(cs->post, N * H);
    BALLOC(cs->comb, N * H * H); BALLOC(cs->x, N * D); BALLOC(cs->xn, N * D); BALLOC(cs->out, N * D);
    BALLOC(cs->qlat, N * hp->q_lora); BALLOC(cs->q, N * qd); BALLOC(cs->kv, N * dh); BALLOC(cs->o, N * qd);
    BALLOC(cs->low, N * hp->o_groups * hp->o_lora); BALLOC(cs->ca, N * 2 * dh); BALLOC(cs->cz, N * 2 * dh);
    BALLOC(cs->ia, N * 2 * dI + 1); BALLOC(cs->iz, N * 2 * dI + 1); BALLOC(cs->iq, N * nI * dI + 1);
    BALLOC(cs->iw, N * nI + 1); BALLOC(cs->iscores, (size_t)N * s->comp_cap);
    BALLOC(cs->sel, (size_t)N * (hp->idx_topk + 1)); BALLOC(cs->router, N * E); BALLOC(cs->eid, R);
    BALLOC(cs->ew, R); BALLOC(cs->g, gsz); BALLOC(cs->u, gsz); BALLOC(cs->xg, R * D); BALLOC(cs->yg, R * D);
    BALLOC(cs->row_w, R); BALLOC(cs->row_tok, R); BALLOC(cs->slot_row, R); BALLOC(cs->seg_eid, cs->nseg_max);
    BALLOC(cs->seg_off, cs->nseg_max + 1); BALLOC(cs->counts, E); BALLOC(cs->info, 2); BALLOC(cs->p0, 1);
    /* logits: a DS4_LOGITS_ALL batch runs its head CU_LOGITS_ROWS tokens at
     * a time, so a batch of N never holds N x vocab (at Flash's shape and
     * N = 2048 that was ~1 GB on the device and as much pinned) */
    cs->logits_rows = (int)(N < CU_LOGITS_ROWS ? N : CU_LOGITS_ROWS);
    BALLOC(cs->tok, N); BALLOC(cs->logits, (size_t)cs->logits_rows * hp->n_vocab);
    BALLOC(cs->wtab_g, cs->nseg_max); BALLOC(cs->wtab_u, cs->nseg_max); BALLOC(cs->wtab_d, cs->nseg_max);
    /* activation scratch: the widest input x the most rows, at <= 1.15 bytes per value */
    size_t w = HD;
    size_t cand[] = {D, hp->q_lora, F, Fs, ds4_group_in(hp), (size_t)hp->o_groups * hp->o_lora};
    for (size_t i = 0; i < sizeof cand / sizeof *cand; i++) if (cand[i] > w) w = cand[i];
    BALLOC(cs->xq, (R > (size_t)N ? R : (size_t)N) * (w / 256 + 1) * 300);
    CU_CHECK(cudaMallocHost((void **)&cs->h_tok, sizeof(int32_t) * N));
    CU_CHECK(cudaMallocHost((void **)&cs->h_p0, sizeof(int)));
    CU_CHECK(cudaMallocHost((void **)&cs->h_info, sizeof(int) * 2));
    CU_CHECK(cudaMallocHost((void **)&cs->h_seg_eid, sizeof(int32_t) * cs->nseg_max));
    CU_CHECK(cudaMallocHost((void **)&cs->h_logits, sizeof(float) * (size_t)cs->logits_rows * hp->n_vocab));
    /* attention rows: raw window + max(top-k, every compressed row of any layer) */
    size_t maxc = hp->idx_topk;
    for (uint32_t l = 0; l < hp->n_layer; l++)
        if (cs->ls[l].comp_rows > maxc) maxc = cs->ls[l].comp_rows;
    cs->max_rows = (int)(hp->window + maxc);
    state_reset(cs);
    return cs;
}

extern "C" void ds4_cuda_session_free(void *p) {
    cu_session *cs = (cu_session *)p;
    if (!cs) return;
    const ds4_hparams *hp = &cs->s->model->hp;
    cudaStreamSynchronize(cs->st);
    if (cs->graph) cudaGraphExecDestroy(cs->graph);
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        cu_lstate *L = &cs->ls[l];
        float *v[] = {L->raw, L->comp, L->ckv, L->csc, L->idx, L->ikv, L->isc};
        for (int i = 0; i < 7; i++) if (v[i]) cudaFree(v[i]);
    }
    free(cs->ls);
    void *bufs[] = {cs->rope_main, cs->rope_comp, cs->X, cs->flat, cs->mix, cs->post, cs->comb, cs->x, cs->xn,
                    cs->out, cs->qlat, cs->q, cs->kv, cs->o, cs->low, cs->ca, cs->cz, cs->ia, cs->iz, cs->iq,
                    cs->iw, cs->iscores, cs->router, cs->ew, cs->g, cs->u, cs->xg, cs->yg, cs->row_w, cs->logits,
                    cs->sel, cs->eid, cs->row_tok, cs->slot_row, cs->seg_eid, cs->tok, cs->seg_off, cs->counts,
                    cs->info, cs->p0, cs->wtab_g, cs->wtab_u, cs->wtab_d, cs->xq};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) if (bufs[i]) cudaFree(bufs[i]);
    cudaFreeHost(cs->h_tok); cudaFreeHost(cs->h_p0); cudaFreeHost(cs->h_info); cudaFreeHost(cs->h_seg_eid);
    cudaFreeHost(cs->h_logits);
    cudaStreamDestroy(cs->st);
    model_put(cs->cm);
    free(cs);
}

extern "C" void ds4_cuda_session_reset(ds4_session *s) {
    cu_session *cs = (cu_session *)s->cuda;
    if (cs) state_reset(cs);
}

/* ------------------------------------------------------------------------ */
/* Forward pass                                                              */

/* graph: capturing a decode step, so no host reads of device values and no
 * grid sized from the position; p0 (host copy) is then only a hint. */
static int run_layers(cu_session *cs, int n, uint32_t p0, bool graph, ds4_err *err) {
    const ds4_model *m = cs->s->model;
    const ds4_hparams *hp = &m->hp;
    cu_model *cm = cs->cm;
    cudaStream_t st = cs->st;
    int H = (int)hp->hc_mult, NM = (int)ds4_hc_mix(hp), k = (int)hp->n_expert_used, E = (int)hp->n_expert;
    int64_t D = hp->n_embd, HD = ds4_hc_dim(hp), qd = ds4_q_dim(hp);
    int nh = (int)hp->n_head, dh = (int)hp->head_dim, dr = (int)hp->rope_dim, W = (int)hp->window;
    int dI = (int)hp->idx_head_dim, nI = (int)hp->idx_n_head, K = (int)hp->idx_topk;
    int64_t G = hp->o_groups, ro = hp->o_lora, gin = ds4_group_in(hp), F = hp->expert_ff;
    int64_t Fs = F * hp->n_expert_shared;
    float eps = hp->rms_eps;
    bool qat = cs->s->opts.numerics == DS4_NUMERICS_MODEL;
    uint8_t *xq = cs->xq;
    int R = n * k;

    cu_get_rows(st, &cm->tok_embd, cs->tok, n, cs->X, HD);
    cu_replicate_streams(st, cs->X, H, D, n);
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        cu_layer *L = &cm->L[l];
        cu_lstate *S = &cs->ls[l];
        int ratio = L->ratio;
        const float *inv_freq = ratio > 0 ? cs->rope_comp : cs->rope_main;

        /* HCPre (attention) */
        cu_rmsnorm(st, cs->X, HD, NULL, HD, eps, n, cs->flat, HD);
        cu_mm(st, &L->hc_attn_fn, 0, 0, NM, cs->flat, HD, n, cs->mix, NM, xq);
        cu_hc_pre(st, cs->mix, NM, L->hc_attn_scale, L->hc_attn_base, cs->X, H, D, (int)hp->hc_sinkhorn, hp->hc_eps, n,
                  cs->post, cs->comb, cs->x);

        /* attention: q path, kv path */
        cu_rmsnorm(st, cs->x, D, L->attn_norm, D, eps, n, cs->xn, D);
        cu_mm(st, &L->q_a, 0, 0, hp->q_lora, cs->xn, D, n, cs->qlat, hp->q_lora, xq);
        cu_rmsnorm(st, cs->qlat, hp->q_lora, L->q_a_norm, hp->q_lora, eps, n, cs->qlat, hp->q_lora);
        cu_mm(st, &L->q_b, 0, 0, qd, cs->qlat, hp->q_lora, n, cs->q, qd, xq);
        cu_row_post(st, cs->q, qd, n, nh, dh, 1, NULL, eps, dr, inv_freq, cs->p0, 0, 0);
        cu_mm(st, &L->kv, 0, 0, dh, cs->xn, D, n, cs->kv, dh, xq);
        cu_row_post(st, cs->kv, dh, n, 1, dh, 1, L->kv_norm, eps, dr, inv_freq, cs->p0, qat ? dh - dr : 0, 0);

        /* compressors */
        if (ratio > 0) {
            int wc = (ratio == 4 ? 2 : 1) * dh;
            cu_mm(st, &L->comp_kv, 0, 0, wc, cs->xn, D, n, cs->ca, wc, xq);
            cu_mm(st, &L->comp_gate, 0, 0, wc, cs->xn, D, n, cs->cz, wc, xq);
            cu_compress(st, cs->ca, cs->cz, n, cs->p0, ratio, dh, L->comp_ape, S->ckv, S->csc, S->comp, L->comp_norm, eps,
                        dr, cs->rope_comp, qat ? 1 : 0);
            if (ratio == 4) {
                cu_mm(st, &L->idx_comp_kv, 0, 0, 2 * dI, cs->xn, D, n, cs->ia, 2 * dI, xq);
                cu_mm(st, &L->idx_comp_gate, 0, 0, 2 * dI, cs->xn, D, n, cs->iz, 2 * dI, xq);
                cu_compress(st, cs->ia, cs->iz, n, cs->p0, 4, dI, L->idx_comp_ape, S->ikv, S->isc, S->idx,
                            L->idx_comp_norm, eps, dr, cs->rope_comp, qat ? 2 : 0);
            }
        }
        /* indexer: skipped (sel = NULL) while every visible row fits in top-k */
        const int32_t *sel = NULL;
        if (ratio == 4 && (graph || (p0 + (uint32_t)n) / 4 > (uint32_t)K)) {
            cu_mm(st, &L->idx_q_b, 0, 0, (int64_t)nI * dI, cs->qlat, hp->q_lora, n, cs->iq, (int64_t)nI * dI, xq);
            cu_mm(st, &L->idx_proj, 0, 0, nI, cs->xn, D, n, cs->iw, nI, xq);
            cu_row_post(st, cs->iq, (int64_t)nI * dI, n, nI, dI, 0, NULL, eps, dr, cs->rope_comp, cs->p0, 0, qat ? 1 : 0);
            cu_scale(st, cs->iw, (int64_t)n * nI, 1.0f / sqrtf((float)dI * (float)nI));
            int max_vis = graph ? (int)cs->s->comp_cap : (int)((p0 + (uint32_t)n) / 4);
            cu_idx_scores(st, cs->iq, cs->iw, S->idx, n, nI, dI, cs->p0, max_vis, cs->iscores, cs->s->comp_cap);
            cu_idx_topk(st, cs->iscores, cs->s->comp_cap, n, cs->p0, K, cs->sel);
            sel = cs->sel;
        }
        cu_attention(st, cs->q, cs->kv, S->raw, S->comp, sel, K, L->sinks, n, nh, dh, dr, W, ratio, cs->p0, inv_freq,
                     cs->max_rows, cs->o);
        cu_ring_write(st, S->raw, cs->kv, n, dh, W, cs->p0);
        for (int64_t g = 0; g < G; g++)
            cu_mm(st, &L->out_a, 0, g * ro, ro, cs->o + g * gin, qd, n, cs->low + g * ro, G * ro, xq);
        cu_mm(st, &L->out_b, 0, 0, D, cs->low, G * ro, n, cs->out, D, xq);
        cu_hc_post(st, cs->X, cs->out, cs->post, cs->comb, H, D, n);

        /* HCPre (FFN) */
        cu_rmsnorm(st, cs->X, HD, NULL, HD, eps, n, cs->flat, HD);
        cu_mm(st, &L->hc_ffn_fn, 0, 0, NM, cs->flat, HD, n, cs->mix, NM, xq);
        cu_hc_pre(st, cs->mix, NM, L->hc_ffn_scale, L->hc_ffn_base, cs->X, H, D, (int)hp->hc_sinkhorn, hp->hc_eps, n,
                  cs->post, cs->comb, cs->x);

        /* MoE: route, group rows by expert on the device */
        cu_rmsnorm(st, cs->x, D, L->ffn_norm, D, eps, n, cs->xn, D);
        cu_mm(st, &L->gate_inp, 0, 0, E, cs->xn, D, n, cs->router, E, xq);
        cu_router(st, cs->router, E, k, L->hash ? L->tid2eid : NULL, cs->tok, L->exp_probs_b,
                  hp->expert_weights_norm, hp->expert_weights_scale, n, cs->eid, cs->ew);
        /* live segments <= min(n*k, E + k) for segments capped at n rows;
         * the graph's grid uses this bound (k segments for decode) */
        int nseg_b = R < E + k ? R : E + k;
        cu_moe_group(st, cs->eid, cs->ew, n, k, E, n, nseg_b, cs->counts, cs->seg_off, cs->seg_eid, cs->row_tok,
                     cs->row_w, cs->slot_row, cs->info);
        int nseg = nseg_b, maxc = n;
        bool resident = cu_experts_resident(cm->ex);
        if (!graph) {
            /* exact grid for the routed products, and the miss list for a partial cache */
            CU_CHECK(cudaMemcpyAsync(cs->h_info, cs->info, sizeof(int) * 2, cudaMemcpyDeviceToHost, st));
            if (!resident)
                CU_CHECK(cudaMemcpyAsync(cs->h_seg_eid, cs->seg_eid, sizeof(int32_t) * nseg_b,
                                         cudaMemcpyDeviceToHost, st));
            CU_CHECK(cudaStreamSynchronize(st));
            nseg = cs->h_info[0];
            maxc = cs->h_info[1];
        }
        if (resident) {
            const uint8_t *const *tg, *const *tu, *const *td;
            cu_experts_tables(cm->ex, l, &tg, &tu, &td);
            cu_fill_wtab(st, cs->seg_eid, nseg, tg, tu, td, cs->wtab_g, cs->wtab_u, cs->wtab_d);
        } else if (cu_experts_fetch(cm->ex, l, cs->h_seg_eid, nseg, st, cs->wtab_g, cs->wtab_u, cs->wtab_d, err)) {
            return -1; /* copies go on the copy stream; st waits for them at the end of this call */
        }

        /* shared expert first (overlaps the expert copies) */
        if (hp->n_expert_shared) {
            cu_mm(st, &L->gate_sh, 0, 0, Fs, cs->xn, D, n, cs->g, Fs, xq);
            cu_mm(st, &L->up_sh, 0, 0, Fs, cs->xn, D, n, cs->u, Fs, xq);
            cu_swiglu(st, cs->g, cs->u, Fs, n, NULL, L->clamp_shexp);
            cu_mm(st, &L->down_sh, 0, 0, D, cs->g, Fs, n, cs->out, D, xq);
        } else {
            CU_CHECK(cudaMemsetAsync(cs->out, 0, sizeof(float) * n * D, st));
        }
        if (!resident) cu_experts_wait(cm->ex, st);
        cu_gather_rows(st, cs->xn, D, cs->row_tok, R, cs->xg);
        const ds4_layer *SL = &m->layers[l];
        cu_mm_seg(st, SL->gate_exps.type, D, F, cs->wtab_g, cs->seg_off, nseg, maxc, cs->xg, D, R, cs->g, F, xq);
        cu_mm_seg(st, SL->up_exps.type, D, F, cs->wtab_u, cs->seg_off, nseg, maxc, cs->xg, D, R, cs->u, F, xq);
        cu_swiglu(st, cs->g, cs->u, F, R, cs->row_w, L->clamp_exp);
        cu_mm_seg(st, SL->down_exps.type, F, D, cs->wtab_d, cs->seg_off, nseg, maxc, cs->g, F, R, cs->yg, D, xq);
        cu_combine(st, cs->out, cs->yg, D, cs->slot_row, k, n);
        cu_hc_post(st, cs->X, cs->out, cs->post, cs->comb, H, D, n);
        if (cs->s->opts.expert_counts && !graph) {
            /* ds4-hotexperts counting: rare, so a plain synchronous read */
            int32_t *ids = (int32_t *)malloc(sizeof(int32_t) * R);
            CU_CHECK(cudaMemcpyAsync(ids, cs->eid, sizeof(int32_t) * R, cudaMemcpyDeviceToHost, st));
            CU_CHECK(cudaStreamSynchronize(st));
            for (int i = 0; i < R; i++) cs->s->opts.expert_counts[(size_t)l * E + ids[i]]++;
            free(ids);
        }
    }
    return 0;
}

/* forward.c head(): logits of tokens t0..t0+nt of the batch into cs->logits. */
static void run_head(cu_session *cs, int t0, int nt) {
    const ds4_model *m = cs->s->model;
    const ds4_hparams *hp = &m->hp;
    cu_model *cm = cs->cm;
    int H = (int)hp->hc_mult;
    int64_t D = hp->n_embd, HD = ds4_hc_dim(hp);
    const float *X = cs->X + (int64_t)t0 * HD;
    cu_rmsnorm(cs->st, X, HD, NULL, HD, hp->rms_eps, nt, cs->flat, HD);
    cu_mm(cs->st, &cm->out_hc_fn, 0, 0, H, cs->flat, HD, nt, cs->mix, H, cs->xq);
    cu_head_mix(cs->st, X, cs->mix, cm->out_hc_scale, cm->out_hc_base, H, D, hp->hc_eps, cm->out_norm, hp->rms_eps, nt,
                cs->xn);
    cu_mm(cs->st, &cm->output, 0, 0, hp->n_vocab, cs->xn, D, nt, cs->logits, hp->n_vocab, cs->xq);
}

/* One decode step as recorded in the graph: inputs from pinned staging,
 * logits of the token to pinned staging. */
static int decode_body(cu_session *cs, uint32_t p0, bool graph, ds4_err *err) {
    size_t V = cs->s->model->hp.n_vocab;
    CU_CHECK(cudaMemcpyAsync(cs->tok, cs->h_tok, sizeof(int32_t), cudaMemcpyHostToDevice, cs->st));
    CU_CHECK(cudaMemcpyAsync(cs->p0, cs->h_p0, sizeof(int), cudaMemcpyHostToDevice, cs->st));
    if (run_layers(cs, 1, p0, graph, err)) return -1;
    run_head(cs, 0, 1);
    CU_CHECK(cudaMemcpyAsync(cs->h_logits, cs->logits, sizeof(float) * V, cudaMemcpyDeviceToHost, cs->st));
    return 0;
}

static void fix_host_counts(ds4_session *s) {
    for (uint32_t l = 0; l < s->model->hp.n_layer; l++) {
        int m = s->model->layers[l].ratio;
        s->ls[l].n_comp = m > 0 ? s->pos / (uint32_t)m : 0;
        s->ls[l].n_idx = m == 4 ? s->pos / 4 : 0;
    }
}

extern "C" int ds4_cuda_session_eval(ds4_session *s, const int32_t *tokens, int n, enum ds4_logits which,
                                     float *logits, ds4_err *err) {
    cu_session *cs = (cu_session *)s->cuda;
    size_t V = s->model->hp.n_vocab;
    int maxb = cs->N < n ? cs->N : n;
    cudaEvent_t e0, e1;
    CU_CHECK(cudaEventCreate(&e0));
    CU_CHECK(cudaEventCreate(&e1));
    CU_CHECK(cudaEventRecord(e0, cs->st));
    int rc = 0;
    for (int done = 0; done < n && rc == 0;) {
        int nb = n - done < maxb ? n - done : maxb;
        bool want = which == DS4_LOGITS_ALL || (which == DS4_LOGITS_LAST && done + nb == n);
        memcpy(cs->h_tok, tokens + done, sizeof(int32_t) * nb);
        *cs->h_p0 = (int)s->pos;
        bool graphable = nb == 1 && cu_experts_resident(cs->cm->ex) && !s->opts.expert_counts &&
                         !getenv("DS4_CUDA_NO_GRAPH");
        if (graphable && !cs->graph && !cs->graph_tried && cs->decode_calls >= 1) {
            /* capture on the second decode step: the first ran every lazy
             * initialisation (tables, shared-memory limits) outside capture */
            cs->graph_tried = 1;
            cudaGraph_t g;
            CU_CHECK(cudaStreamBeginCapture(cs->st, cudaStreamCaptureModeThreadLocal));
            int brc = decode_body(cs, s->pos, true, err);
            CU_CHECK(cudaStreamEndCapture(cs->st, &g));
            if (brc == 0 && cudaGraphInstantiate(&cs->graph, g, 0) != cudaSuccess) {
                cudaGetLastError();
                cs->graph = NULL;
            }
            cudaGraphDestroy(g);
        }
        if (graphable && cs->graph) {
            CU_CHECK(cudaGraphLaunch(cs->graph, cs->st));
            CU_CHECK(cudaStreamSynchronize(cs->st));
            if (want) memcpy(logits, cs->h_logits, sizeof(float) * V);
        } else if (nb == 1) {
            cs->decode_calls++;
            if ((rc = decode_body(cs, s->pos, false, err))) break;
            CU_CHECK(cudaStreamSynchronize(cs->st));
            if (want) memcpy(which == DS4_LOGITS_ALL ? logits + (size_t)done * V : logits, cs->h_logits, sizeof(float) * V);
        } else {
            CU_CHECK(cudaMemcpyAsync(cs->tok, cs->h_tok, sizeof(int32_t) * nb, cudaMemcpyHostToDevice, cs->st));
            CU_CHECK(cudaMemcpyAsync(cs->p0, cs->h_p0, sizeof(int), cudaMemcpyHostToDevice, cs->st));
            if ((rc = run_layers(cs, nb, s->pos, false, err))) break;
            if (which == DS4_LOGITS_ALL) {
                for (int t = 0; t < nb; t += cs->logits_rows) {
                    int k = nb - t < cs->logits_rows ? nb - t : cs->logits_rows;
                    run_head(cs, t, k);
                    CU_CHECK(cudaMemcpyAsync(cs->h_logits, cs->logits, sizeof(float) * V * k, cudaMemcpyDeviceToHost,
                                             cs->st));
                    CU_CHECK(cudaStreamSynchronize(cs->st));
                    memcpy(logits + (size_t)(done + t) * V, cs->h_logits, sizeof(float) * V * k);
                }
            } else if (want) {
                run_head(cs, nb - 1, 1);
                CU_CHECK(cudaMemcpyAsync(cs->h_logits, cs->logits, sizeof(float) * V, cudaMemcpyDeviceToHost, cs->st));
                CU_CHECK(cudaStreamSynchronize(cs->st));
                memcpy(logits, cs->h_logits, sizeof(float) * V);
            }
        }
        s->pos += (uint32_t)nb;
        done += nb;
    }
    CU_CHECK(cudaEventRecord(e1, cs->st));
    CU_CHECK(cudaEventSynchronize(e1));
    float ms = 0;
    cudaEventElapsedTime(&ms, e0, e1);
    cs->last_ms = ms;
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    if (rc) {
        /* layers before the failure already advanced (as the CPU path) */
        s->pos = 0;
        state_reset(cs);
    }
    fix_host_counts(s);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* State transfer (snapshot payloads)                                        */

extern "C" int ds4_cuda_session_download(ds4_session *s, ds4_err *err) {
    (void)err;
    cu_session *cs = (cu_session *)s->cuda;
    const ds4_hparams *hp = &s->model->hp;
    CU_CHECK(cudaStreamSynchronize(cs->st));
    fix_host_counts(s);
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        cu_lstate *L = &cs->ls[l];
        ds4_layer_state *h = &s->ls[l];
        CU_CHECK(cudaMemcpy(h->raw, L->raw, sizeof(float) * hp->window * hp->head_dim, cudaMemcpyDeviceToHost));
        if (L->comp) {
            CU_CHECK(cudaMemcpy(h->comp, L->comp, sizeof(float) * h->n_comp * hp->head_dim, cudaMemcpyDeviceToHost));
            CU_CHECK(cudaMemcpy(h->comp_kv, L->ckv, sizeof(float) * L->ckv_n, cudaMemcpyDeviceToHost));
            CU_CHECK(cudaMemcpy(h->comp_sc, L->csc, sizeof(float) * L->ckv_n, cudaMemcpyDeviceToHost));
        }
        if (L->idx) {
            CU_CHECK(cudaMemcpy(h->idx, L->idx, sizeof(float) * h->n_idx * hp->idx_head_dim, cudaMemcpyDeviceToHost));
            CU_CHECK(cudaMemcpy(h->idx_kv, L->ikv, sizeof(float) * L->ikv_n, cudaMemcpyDeviceToHost));
            CU_CHECK(cudaMemcpy(h->idx_sc, L->isc, sizeof(float) * L->ikv_n, cudaMemcpyDeviceToHost));
        }
    }
    return 0;
}

extern "C" int ds4_cuda_session_upload(ds4_session *s, ds4_err *err) {
    (void)err;
    cu_session *cs = (cu_session *)s->cuda;
    const ds4_hparams *hp = &s->model->hp;
    CU_CHECK(cudaStreamSynchronize(cs->st));
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        cu_lstate *L = &cs->ls[l];
        const ds4_layer_state *h = &s->ls[l];
        CU_CHECK(cudaMemcpy(L->raw, h->raw, sizeof(float) * hp->window * hp->head_dim, cudaMemcpyHostToDevice));
        if (L->comp) {
            CU_CHECK(cudaMemcpy(L->comp, h->comp, sizeof(float) * h->n_comp * hp->head_dim, cudaMemcpyHostToDevice));
            CU_CHECK(cudaMemcpy(L->ckv, h->comp_kv, sizeof(float) * L->ckv_n, cudaMemcpyHostToDevice));
            CU_CHECK(cudaMemcpy(L->csc, h->comp_sc, sizeof(float) * L->ckv_n, cudaMemcpyHostToDevice));
        }
        if (L->idx) {
            CU_CHECK(cudaMemcpy(L->idx, h->idx, sizeof(float) * h->n_idx * hp->idx_head_dim, cudaMemcpyHostToDevice));
            CU_CHECK(cudaMemcpy(L->ikv, h->idx_kv, sizeof(float) * L->ikv_n, cudaMemcpyHostToDevice));
            CU_CHECK(cudaMemcpy(L->isc, h->idx_sc, sizeof(float) * L->ikv_n, cudaMemcpyHostToDevice));
        }
    }
    return 0;
}

extern "C" void ds4_cuda_session_stats(const ds4_session *s, char *buf, int len) {
    const cu_session *cs = (const cu_session *)s->cuda;
    if (!cs) { snprintf(buf, len, "cuda: off"); return; }
    char ex[256];
    cu_experts_stats(cs->cm->ex, ex, sizeof ex);
    snprintf(buf, len, "cuda: %s; dense %.2f GiB; last eval %.3f ms; decode graph %s; %s", ds4_cuda_device_name(),
             cs->cm->dense_bytes / 1073741824.0, cs->last_ms, cs->graph ? "on" : "off", ex);
}
