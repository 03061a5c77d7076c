/* The tensor schema of a DeepSeek V4 model (GGUF names = ds4/llama.cpp, HF
 * names = official checkpoint), and the storage-type rules built on it:
 * which types each role accepts, and the quantization recipes. */
#include "model/model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "quant/quant.h"

typedef struct {
    ds4_tensor_spec *v;
    int n, cap;
    int layer;
    const char *gpre, *hpre; /* "blk.N." / "layers.N." (or mtp.0.) */
} schema_b;

static void add(schema_b *b, const char *gname, const char *hname, enum ds4_role role, uint32_t nd,
                int64_t ne0, int64_t ne1, int64_t ne2) {
    if (b->n == b->cap) return; /* capacity computed generously up front */
    ds4_tensor_spec *s = &b->v[b->n++];
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "%s%s", b->gpre, gname);
    snprintf(s->hf_name, sizeof s->hf_name, "%s%s", b->hpre, hname);
    s->role = role;
    s->n_dims = nd;
    s->ne[0] = ne0; s->ne[1] = nd > 1 ? ne1 : 1; s->ne[2] = nd > 2 ? ne2 : 1;
    s->layer = b->layer;
    s->stacked = role == DS4_ROLE_EXP_GATEUP || role == DS4_ROLE_EXP_DOWN;
}

/* Tensors of one block (trunk layer or the MTP block), ratio m, hash or not. */
static void add_block(schema_b *b, const ds4_hparams *hp, int m, bool hash) {
    int64_t D = hp->n_embd, HD = ds4_hc_dim(hp), NM = ds4_hc_mix(hp);
    int64_t dh = hp->head_dim, E = hp->n_expert, F = hp->expert_ff, Fs = F * hp->n_expert_shared;
    add(b, "hc_attn_fn.weight", "hc_attn_fn", DS4_ROLE_HC_FN, 2, HD, NM, 0);
    add(b, "hc_attn_scale.weight", "hc_attn_scale", DS4_ROLE_VEC, 1, 3, 0, 0);
    add(b, "hc_attn_base.weight", "hc_attn_base", DS4_ROLE_VEC, 1, NM, 0, 0);
    add(b, "hc_ffn_fn.weight", "hc_ffn_fn", DS4_ROLE_HC_FN, 2, HD, NM, 0);
    add(b, "hc_ffn_scale.weight", "hc_ffn_scale", DS4_ROLE_VEC, 1, 3, 0, 0);
    add(b, "hc_ffn_base.weight", "hc_ffn_base", DS4_ROLE_VEC, 1, NM, 0, 0);
    add(b, "attn_norm.weight", "attn_norm.weight", DS4_ROLE_VEC, 1, D, 0, 0);
    add(b, "ffn_norm.weight", "ffn_norm.weight", DS4_ROLE_VEC, 1, D, 0, 0);
    add(b, "attn_q_a.weight", "attn.wq_a.weight", DS4_ROLE_DENSE, 2, D, hp->q_lora, 0);
    add(b, "attn_q_a_norm.weight", "attn.q_norm.weight", DS4_ROLE_VEC, 1, hp->q_lora, 0, 0);
    add(b, "attn_q_b.weight", "attn.wq_b.weight", DS4_ROLE_DENSE, 2, hp->q_lora, ds4_q_dim(hp), 0);
    add(b, "attn_kv.weight", "attn.wkv.weight", DS4_ROLE_DENSE, 2, D, dh, 0);
    add(b, "attn_kv_a_norm.weight", "attn.kv_norm.weight", DS4_ROLE_VEC, 1, dh, 0, 0);
    add(b, "attn_sinks.weight", "attn.attn_sink", DS4_ROLE_VEC, 1, hp->n_head, 0, 0);
    add(b, "attn_output_a.weight", "attn.wo_a.weight", DS4_ROLE_DENSE, 2, ds4_group_in(hp),
        (int64_t)hp->o_groups * hp->o_lora, 0);
    add(b, "attn_output_b.weight", "attn.wo_b.weight", DS4_ROLE_DENSE, 2,
        (int64_t)hp->o_groups * hp->o_lora, D, 0);
    if (m > 0) {
        int64_t c = m == 4 ? 2 : 1;
        add(b, "attn_compressor_ape.weight", "attn.compressor.ape", DS4_ROLE_APE, 2, c * dh, m, 0);
        add(b, "attn_compressor_kv.weight", "attn.compressor.wkv.weight", DS4_ROLE_SMALLMAT, 2, D, c * dh, 0);
        add(b, "attn_compressor_gate.weight", "attn.compressor.wgate.weight", DS4_ROLE_SMALLMAT, 2, D, c * dh, 0);
        add(b, "attn_compressor_norm.weight", "attn.compressor.norm.weight", DS4_ROLE_VEC, 1, dh, 0, 0);
    }
    if (m == 4) {
        int64_t dI = hp->idx_head_dim;
        add(b, "indexer.attn_q_b.weight", "attn.indexer.wq_b.weight", DS4_ROLE_SMALLMAT, 2, hp->q_lora,
            (int64_t)hp->idx_n_head * dI, 0);
        add(b, "indexer.proj.weight", "attn.indexer.weights_proj.weight", DS4_ROLE_SMALLMAT, 2, D, hp->idx_n_head, 0);
        add(b, "indexer_compressor_ape.weight", "attn.indexer.compressor.ape", DS4_ROLE_APE, 2, 2 * dI, 4, 0);
        add(b, "indexer_compressor_kv.weight", "attn.indexer.compressor.wkv.weight", DS4_ROLE_SMALLMAT, 2, D, 2 * dI, 0);
        add(b, "indexer_compressor_gate.weight", "attn.indexer.compressor.wgate.weight", DS4_ROLE_SMALLMAT, 2, D, 2 * dI, 0);
        add(b, "indexer_compressor_norm.weight", "attn.indexer.compressor.norm.weight", DS4_ROLE_VEC, 1, dI, 0, 0);
    }
    add(b, "ffn_gate_inp.weight", "ffn.gate.weight", DS4_ROLE_SMALLMAT, 2, D, E, 0);
    if (hash)
        add(b, "ffn_gate_tid2eid.weight", "ffn.gate.tid2eid", DS4_ROLE_TID2EID, 2, hp->n_expert_used, hp->n_vocab, 0);
    else
        add(b, "exp_probs_b.bias", "ffn.gate.bias", DS4_ROLE_VEC, 1, E, 0, 0);
    add(b, "ffn_gate_exps.weight", "ffn.experts.%d.w1.weight", DS4_ROLE_EXP_GATEUP, 3, D, F, E);
    add(b, "ffn_up_exps.weight", "ffn.experts.%d.w3.weight", DS4_ROLE_EXP_GATEUP, 3, D, F, E);
    add(b, "ffn_down_exps.weight", "ffn.experts.%d.w2.weight", DS4_ROLE_EXP_DOWN, 3, F, D, E);
    if (hp->n_expert_shared) {
        add(b, "ffn_gate_shexp.weight", "ffn.shared_experts.w1.weight", DS4_ROLE_SHARED, 2, D, Fs, 0);
        add(b, "ffn_up_shexp.weight", "ffn.shared_experts.w3.weight", DS4_ROLE_SHARED, 2, D, Fs, 0);
        add(b, "ffn_down_shexp.weight", "ffn.shared_experts.w2.weight", DS4_ROLE_SHARED, 2, Fs, D, 0);
    }
}

int ds4_schema_build(const ds4_hparams *hp, ds4_tensor_spec **out, ds4_err *err) {
    schema_b b = {0};
    b.cap = 8 + (int)(hp->n_layer + 1) * 64;
    b.v = calloc((size_t)b.cap, sizeof *b.v);
    if (!b.v) return ds4_err_set(err, "out of memory building tensor schema");
    int64_t D = hp->n_embd, HD = ds4_hc_dim(hp);
    b.layer = -1; b.gpre = ""; b.hpre = "";
    add(&b, "token_embd.weight", "embed.weight", DS4_ROLE_EMBED, 2, D, hp->n_vocab, 0);
    add(&b, "output.weight", "head.weight", DS4_ROLE_HEAD, 2, D, hp->n_vocab, 0);
    add(&b, "output_norm.weight", "norm.weight", DS4_ROLE_VEC, 1, D, 0, 0);
    add(&b, "output_hc_fn.weight", "hc_head_fn", DS4_ROLE_HC_FN, 2, HD, hp->hc_mult, 0);
    add(&b, "output_hc_base.weight", "hc_head_base", DS4_ROLE_VEC, 1, hp->hc_mult, 0, 0);
    add(&b, "output_hc_scale.weight", "hc_head_scale", DS4_ROLE_VEC, 1, 1, 0, 0);
    char gp[32], hpfx[32];
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        snprintf(gp, sizeof gp, "blk.%u.", l);
        snprintf(hpfx, sizeof hpfx, "layers.%u.", l);
        b.layer = (int)l; b.gpre = gp; b.hpre = hpfx;
        add_block(&b, hp, hp->compress[l], l < hp->n_hash);
    }
    if (hp->n_mtp) {
        int first = b.n;
        b.layer = (int)hp->n_layer; b.gpre = "mtp.0."; b.hpre = "mtp.0.";
        add(&b, "e_proj.weight", "e_proj.weight", DS4_ROLE_DENSE, 2, D, D, 0);
        add(&b, "h_proj.weight", "h_proj.weight", DS4_ROLE_DENSE, 2, D, D, 0);
        add(&b, "enorm.weight", "enorm.weight", DS4_ROLE_VEC, 1, D, 0, 0);
        add(&b, "hnorm.weight", "hnorm.weight", DS4_ROLE_VEC, 1, D, 0, 0);
        add(&b, "norm.weight", "norm.weight", DS4_ROLE_VEC, 1, D, 0, 0);
        add(&b, "hc_head_fn.weight", "hc_head_fn", DS4_ROLE_HC_FN, 2, HD, hp->hc_mult, 0);
        add(&b, "hc_head_base.weight", "hc_head_base", DS4_ROLE_VEC, 1, hp->hc_mult, 0, 0);
        add(&b, "hc_head_scale.weight", "hc_head_scale", DS4_ROLE_VEC, 1, 1, 0, 0);
        int m = hp->n_compress > hp->n_layer ? hp->compress[hp->n_layer] : 0;
        add_block(&b, hp, m, false);
        for (int i = first; i < b.n; i++) b.v[i].optional = true;
    }
    *out = b.v;
    return b.n;
}

static bool is_float_type(int t) {
    return t == DS4_TYPE_F32 || t == DS4_TYPE_F16 || t == DS4_TYPE_BF16;
}

static bool is_matrix_type(int t) {
    return is_float_type(t) || t == DS4_TYPE_Q8_0 || t == DS4_TYPE_Q4_K || t == DS4_TYPE_Q2_K ||
           t == DS4_TYPE_IQ2_XXS;
}

bool ds4_role_accepts(enum ds4_role role, int type) {
    switch (role) {
    case DS4_ROLE_VEC:
    case DS4_ROLE_APE: return is_float_type(type);
    case DS4_ROLE_TID2EID: return type == DS4_TYPE_I32;
    default: return is_matrix_type(type);
    }
}

static const char *const recipes[] = {"f32", "bf16", "f16", "q8_0", "q2", "q4"};

bool ds4_recipe_known(const char *recipe) {
    for (size_t i = 0; i < sizeof recipes / sizeof *recipes; i++)
        if (!strcasecmp(recipe, recipes[i])) return true;
    return false;
}

/* Falls back to the next format that fits when rows are not whole blocks
 * (tiny test models have 64- or 128-wide rows, below the 256 of K-quants). */
static int fit(int type, int64_t ne0) {
    if (ds4_row_size(type, ne0)) return type;
    if (type != DS4_TYPE_Q8_0 && ds4_row_size(DS4_TYPE_Q8_0, ne0)) return DS4_TYPE_Q8_0;
    return DS4_TYPE_F16;
}

int ds4_recipe_type(const char *recipe, enum ds4_role role, int64_t ne0) {
    if (!ds4_recipe_known(recipe)) return -1;
    if (role == DS4_ROLE_TID2EID) return DS4_TYPE_I32;
    if (role == DS4_ROLE_VEC) return DS4_TYPE_F32;
    bool ds4like = !strcasecmp(recipe, "q2") || !strcasecmp(recipe, "q4");
    if (role == DS4_ROLE_APE) return ds4like ? DS4_TYPE_F16 : DS4_TYPE_F32;
    if (!strcasecmp(recipe, "f32")) return DS4_TYPE_F32;
    /* HC mixing matrices are F32 in the checkpoint: keep them exact in the
     * lossless recipes (ds4's F16 is validated but not lossless). */
    if (role == DS4_ROLE_HC_FN) {
        if (!strcasecmp(recipe, "bf16")) return DS4_TYPE_F32;
        if (!strcasecmp(recipe, "q8_0")) return fit(DS4_TYPE_Q8_0, ne0);
        return DS4_TYPE_F16;
    }
    if (!strcasecmp(recipe, "bf16")) return DS4_TYPE_BF16;
    if (!strcasecmp(recipe, "f16")) return DS4_TYPE_F16;
    if (!strcasecmp(recipe, "q8_0")) return fit(DS4_TYPE_Q8_0, ne0);
    /* q2 / q4: ds4's published layouts */
    switch (role) {
    case DS4_ROLE_EMBED:
    case DS4_ROLE_SMALLMAT: return DS4_TYPE_F16;
    case DS4_ROLE_EXP_GATEUP:
        return fit(!strcasecmp(recipe, "q2") ? DS4_TYPE_IQ2_XXS : DS4_TYPE_Q4_K, ne0);
    case DS4_ROLE_EXP_DOWN:
        return fit(!strcasecmp(recipe, "q2") ? DS4_TYPE_Q2_K : DS4_TYPE_Q4_K, ne0);
    default: return fit(DS4_TYPE_Q8_0, ne0);
    }
}
