/* Memory accounting for expert streaming: what stays resident (the dense
 * part of the file, one session's state and scratch, a fixed overhead) and
 * the expert cache a whole-process RAM budget leaves.  Contract in experts.h. */
#include "engine/engine.h" /* ds4_default_batch */
#include "experts/experts.h"

#include "quant/quant.h"

static uint64_t expert_tensor_bytes(const ds4_weight *w) {
    return ds4_row_size(w->type, w->ne[0]) * (uint64_t)w->ne[1] * (uint64_t)w->ne[2];
}

void ds4_experts_model_bytes(const ds4_model *m, ds4_model_bytes *out) {
    out->file = gguf_file_size(m->gguf);
    out->experts = out->expert_max = 0;
    for (uint32_t l = 0; l < m->hp.n_layer; l++) {
        const ds4_layer *L = &m->layers[l];
        const ds4_weight *w[3] = {&L->gate_exps, &L->up_exps, &L->down_exps};
        uint64_t one = 0;
        for (int p = 0; p < 3; p++) {
            out->experts += expert_tensor_bytes(w[p]);
            one += ds4_row_size(w[p]->type, w[p]->ne[0]) * (uint64_t)w[p]->ne[1];
        }
        if (one > out->expert_max) out->expert_max = one;
    }
    /* MTP experts are never read by the forward pass: neither dense nor streamed. */
    uint64_t mtp = 0;
    if (m->has_mtp) {
        const ds4_layer *L = &m->mtp.block;
        mtp = expert_tensor_bytes(&L->gate_exps) + expert_tensor_bytes(&L->up_exps) +
              expert_tensor_bytes(&L->down_exps);
    }
    out->dense = out->file > out->experts + mtp ? out->file - out->experts - mtp : 0;
}

uint64_t ds4_experts_session_bytes(const ds4_hparams *hp, uint32_t ctx_max, int max_batch) {
    uint64_t ctx = ctx_max ? ctx_max : 4096, N = max_batch > 0 ? (uint64_t)max_batch : (uint64_t)ds4_default_batch(hp);
    if (N > ctx) N = ctx;
    uint64_t f = 0; /* floats */
    /* per layer, as ds4_session_new allocates */
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        int m = hp->compress[l];
        f += (uint64_t)hp->window * hp->head_dim;
        if (m > 0) {
            uint64_t c = m == 4 ? 2 : 1;
            f += (ctx / (uint64_t)m + 2) * hp->head_dim + 2 * (c * m) * (c * hp->head_dim);
        }
        if (m == 4) f += (ctx / 4 + 2) * hp->idx_head_dim + 2 * 8 * 2 * (uint64_t)hp->idx_head_dim;
    }
    /* batch scratch for N tokens (the forward pass's batch buffers, rounded up) */
    uint64_t D = hp->n_embd, H = hp->hc_mult, K = hp->n_expert_used, Q = (uint64_t)hp->n_head * hp->head_dim;
    uint64_t F = (uint64_t)hp->expert_ff * (hp->n_expert_shared > K ? hp->n_expert_shared : K);
    uint64_t per_tok = 2 * H * D + (2 + H) * H + H + H * H + 3 * D + hp->q_lora + 2 * Q + hp->head_dim +
                       (uint64_t)hp->o_groups * hp->o_lora + 4 * hp->head_dim + 4 * (uint64_t)hp->idx_head_dim +
                       (uint64_t)hp->idx_n_head * (hp->idx_head_dim + 1) + hp->idx_topk + 1 + hp->n_expert +
                       2 * K + 2 * F + (D > H * H ? D : H * H) + 2 * K * D + 3 * K;
    f += N * per_tok;
    /* One row of logits: head() writes into the caller's buffer, so the
     * engine allocates none; a generating caller holds one row
     * (DS4_LOGITS_LAST).  A caller of DS4_LOGITS_ALL (the checking hook)
     * holds its own n x vocab, outside any batch: counting N rows here held
     * back ~1 GB of expert cache at Flash's shape and batch 2048. */
    f += hp->n_vocab;
    return f * 4;
}

int ds4_experts_cache_from_budget(const ds4_model *m, uint64_t budget, uint64_t session_bytes, uint64_t *cache,
                                  ds4_err *err) {
    ds4_model_bytes mb;
    ds4_experts_model_bytes(m, &mb);
    uint64_t fixed = mb.dense + session_bytes + DS4_EXPERTS_FIXED_OVERHEAD;
    uint64_t min = 2 * mb.expert_max;
    if (budget < fixed + min)
        return ds4_err_set(err,
                           "RAM budget %.0f MiB is too small: dense weights %.0f MiB + session %.0f MiB + overhead "
                           "%.0f MiB leave no room for an expert cache (at least %.1f MiB)",
                           (double)budget / 1048576.0, (double)mb.dense / 1048576.0,
                           (double)session_bytes / 1048576.0, (double)DS4_EXPERTS_FIXED_OVERHEAD / 1048576.0,
                           (double)min / 1048576.0);
    *cache = budget - fixed;
    return 0;
}
