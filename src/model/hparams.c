/* DeepSeek V4 hyper-parameters: GGUF metadata <-> ds4_hparams, validation.
 *
 * Keys are those of the published ds4 GGUFs plus what llama.cpp's deepseek4
 * loader requires (MODEL.md §14, shared/peer/README.md); required keys are
 * refused with their name when absent, optional ones get the documented
 * defaults. */
#include "model/model.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "quant/quant.h"

#define P "deepseek4."

static int need_u32(const gguf_file *f, const char *key, uint32_t *out, ds4_err *err) {
    int rc = gguf_get_u32(f, key, out, err);
    if (rc == -1) return ds4_err_set(err, "missing required metadata key '%s'", key);
    return rc ? -1 : 0;
}

static int need_f32(const gguf_file *f, const char *key, float *out, ds4_err *err) {
    int rc = gguf_get_f32(f, key, out, err);
    if (rc == -1) return ds4_err_set(err, "missing required metadata key '%s'", key);
    return rc ? -1 : 0;
}

/* Optional key: absent keeps *out; present but wrong type is an error. */
static int opt_u32(const gguf_file *f, const char *key, uint32_t *out, ds4_err *err) {
    int rc = gguf_get_u32(f, key, out, err);
    return rc == -2 ? -1 : 0;
}

static int opt_f32(const gguf_file *f, const char *key, float *out, ds4_err *err) {
    int rc = gguf_get_f32(f, key, out, err);
    return rc == -2 ? -1 : 0;
}

/* A per-layer f32 array, or a scalar applied to every layer. */
static int read_layer_floats(const gguf_file *f, const char *key, float *out, uint32_t n,
                             bool required, ds4_err *err) {
    const gguf_kv *kv = gguf_find_kv(f, key);
    if (!kv) {
        if (required) return ds4_err_set(err, "missing required metadata key '%s'", key);
        return 1;
    }
    if (kv->type != GGUF_TYPE_ARRAY) {
        float v;
        if (gguf_get_f32(f, key, &v, err)) return -1;
        for (uint32_t i = 0; i < n; i++) out[i] = v;
        return 0;
    }
    if (kv->arr_n < n)
        return ds4_err_set(err, "metadata '%s' has %llu entries, need %u (one per layer)", key,
                           (unsigned long long)kv->arr_n, n);
    for (uint32_t i = 0; i < n; i++)
        if (gguf_arr_f32(kv, i, &out[i]))
            return ds4_err_set(err, "metadata '%s' is not a numeric array", key);
    return 0;
}

int ds4_hparams_read_gguf(const gguf_file *f, ds4_hparams *hp, ds4_err *err) {
    memset(hp, 0, sizeof *hp);
    gguf_str arch;
    if (gguf_get_str(f, "general.architecture", &arch, err))
        return ds4_err_set(err, "missing 'general.architecture': not a model GGUF");
    if (!gguf_str_eq(arch, "deepseek4")) {
        char buf[64];
        return ds4_err_set(err, "wrong architecture '%s' (expected 'deepseek4')",
                           gguf_str_copy(arch, buf, sizeof buf));
    }
    if (need_u32(f, P "block_count", &hp->n_layer, err) ||
        need_u32(f, P "embedding_length", &hp->n_embd, err) ||
        need_u32(f, P "attention.head_count", &hp->n_head, err) ||
        need_u32(f, P "attention.key_length", &hp->head_dim, err) ||
        need_u32(f, P "rope.dimension_count", &hp->rope_dim, err) ||
        need_u32(f, P "attention.q_lora_rank", &hp->q_lora, err) ||
        need_u32(f, P "attention.output_group_count", &hp->o_groups, err) ||
        need_u32(f, P "attention.output_lora_rank", &hp->o_lora, err) ||
        need_u32(f, P "attention.sliding_window", &hp->window, err) ||
        need_f32(f, P "attention.layer_norm_rms_epsilon", &hp->rms_eps, err) ||
        need_f32(f, P "attention.compress_rope_freq_base", &hp->compress_rope_base, err) ||
        need_u32(f, P "attention.indexer.head_count", &hp->idx_n_head, err) ||
        need_u32(f, P "attention.indexer.key_length", &hp->idx_head_dim, err) ||
        need_u32(f, P "attention.indexer.top_k", &hp->idx_topk, err) ||
        need_f32(f, P "rope.freq_base", &hp->rope_base, err) ||
        need_f32(f, P "rope.scaling.factor", &hp->yarn_factor, err) ||
        need_u32(f, P "expert_count", &hp->n_expert, err) ||
        need_u32(f, P "expert_used_count", &hp->n_expert_used, err) ||
        need_u32(f, P "expert_shared_count", &hp->n_expert_shared, err) ||
        need_u32(f, P "expert_feed_forward_length", &hp->expert_ff, err) ||
        need_f32(f, P "expert_weights_scale", &hp->expert_weights_scale, err) ||
        need_u32(f, P "hash_layer_count", &hp->n_hash, err) ||
        need_u32(f, P "hyper_connection.count", &hp->hc_mult, err) ||
        need_u32(f, P "hyper_connection.sinkhorn_iterations", &hp->hc_sinkhorn, err) ||
        need_f32(f, P "hyper_connection.epsilon", &hp->hc_eps, err))
        return -1;

    if (gguf_get_u64(f, P "rope.scaling.original_context_length", &hp->yarn_orig_ctx, err))
        return ds4_err_set(err, "missing or bad metadata key '" P "rope.scaling.original_context_length'");
    hp->yarn_beta_fast = 32.0f;
    hp->yarn_beta_slow = 1.0f;
    hp->n_head_kv = 1;
    hp->expert_weights_norm = true;
    hp->ctx_len = 0;
    uint32_t vlen = hp->head_dim, gating = 4, groups = 0;
    if (opt_f32(f, P "rope.scaling.yarn_beta_fast", &hp->yarn_beta_fast, err) ||
        opt_f32(f, P "rope.scaling.yarn_beta_slow", &hp->yarn_beta_slow, err) ||
        opt_u32(f, P "attention.head_count_kv", &hp->n_head_kv, err) ||
        opt_u32(f, P "attention.value_length", &vlen, err) ||
        opt_u32(f, P "nextn_predict_layers", &hp->n_mtp, err) ||
        opt_u32(f, P "expert_gating_func", &gating, err) ||
        opt_u32(f, P "expert_group_count", &groups, err))
        return -1;
    if (gguf_find_kv(f, P "expert_weights_norm") &&
        gguf_get_bool(f, P "expert_weights_norm", &hp->expert_weights_norm, err))
        return -1;
    if (gguf_find_kv(f, P "context_length") && gguf_get_u64(f, P "context_length", &hp->ctx_len, err))
        return -1;
    if (vlen != hp->head_dim)
        return ds4_err_set(err, "'" P "attention.value_length' %u differs from key_length %u (V4 shares K and V)",
                           vlen, hp->head_dim);
    if (gating != 4)
        return ds4_err_set(err, "'" P "expert_gating_func' is %u; DeepSeek V4 needs 4 (sqrt-softplus)", gating);
    if (groups != 0)
        return ds4_err_set(err, "'" P "expert_group_count' is %u; group-limited routing is not part of V4", groups);

    /* Vocabulary: deepseek4.vocab_size, else the token list length. */
    if (gguf_get_u32(f, P "vocab_size", &hp->n_vocab, NULL)) {
        const gguf_kv *tok = gguf_find_kv(f, "tokenizer.ggml.tokens");
        if (!tok || tok->type != GGUF_TYPE_ARRAY)
            return ds4_err_set(err, "missing '" P "vocab_size' and 'tokenizer.ggml.tokens'");
        hp->n_vocab = (uint32_t)tok->arr_n;
    }

    const gguf_kv *cr = gguf_find_kv(f, P "attention.compress_ratios");
    if (!cr || cr->type != GGUF_TYPE_ARRAY)
        return ds4_err_set(err, "missing required metadata array '" P "attention.compress_ratios'");
    if (hp->n_layer == 0 || hp->n_layer > DS4_MAX_LAYERS)
        return ds4_err_set(err, "'" P "block_count' %u out of range 1..%d", hp->n_layer, DS4_MAX_LAYERS);
    if (cr->arr_n < hp->n_layer)
        return ds4_err_set(err, "'" P "attention.compress_ratios' has %llu entries, need %u",
                           (unsigned long long)cr->arr_n, hp->n_layer);
    hp->n_compress = cr->arr_n > hp->n_layer + 1u ? hp->n_layer + 1u : (uint32_t)cr->arr_n;
    for (uint32_t i = 0; i < hp->n_compress; i++) {
        int64_t v;
        if (gguf_arr_i64(cr, i, &v))
            return ds4_err_set(err, "'" P "attention.compress_ratios' is not an integer array");
        hp->compress[i] = (int32_t)v;
        if (v != 0 && v != 4 && v != 128)
            return ds4_err_set(err, "'" P "attention.compress_ratios'[%u] = %lld; only 0, 4, 128 are supported",
                               i, (long long)v);
    }
    uint32_t nl = hp->n_layer + (hp->n_mtp ? 1 : 0);
    if (read_layer_floats(f, P "swiglu_clamp_exp", hp->clamp_exp, hp->n_layer, true, err) < 0) return -1;
    if (hp->n_mtp) hp->clamp_exp[hp->n_layer] = hp->clamp_exp[hp->n_layer - 1];
    int rc = read_layer_floats(f, P "swiglu_clamp_shexp", hp->clamp_shexp, hp->n_layer, false, err);
    if (rc < 0) return -1;
    if (rc == 1) memcpy(hp->clamp_shexp, hp->clamp_exp, sizeof(float) * nl);
    else if (hp->n_mtp) hp->clamp_shexp[hp->n_layer] = hp->clamp_shexp[hp->n_layer - 1];

    gguf_str rs;
    if (gguf_get_str(f, P "rope.scaling.type", &rs, NULL) == 0 && !gguf_str_eq(rs, "yarn") &&
        !gguf_str_eq(rs, "none")) {
        char buf[64];
        return ds4_err_set(err, "'" P "rope.scaling.type' is '%s'; DeepSeek V4 uses 'yarn'",
                           gguf_str_copy(rs, buf, sizeof buf));
    }
    return ds4_hparams_validate(hp, err);
}

int ds4_hparams_validate(const ds4_hparams *hp, ds4_err *err) {
#define REQ(cond, ...) do { if (!(cond)) return ds4_err_set(err, __VA_ARGS__); } while (0)
    REQ(hp->n_layer >= 1 && hp->n_layer <= DS4_MAX_LAYERS, "block_count %u out of range", hp->n_layer);
    REQ(hp->n_embd > 0 && hp->n_embd % 32 == 0, "embedding_length %u must be a positive multiple of 32", hp->n_embd);
    REQ(hp->n_vocab > 0, "vocab_size is 0");
    REQ(hp->n_head > 0, "attention.head_count is 0");
    REQ(hp->n_head_kv == 1, "attention.head_count_kv is %u; V4 has a single shared KV head", hp->n_head_kv);
    REQ(hp->head_dim > 0 && hp->head_dim % 2 == 0, "attention.key_length %u must be even and positive", hp->head_dim);
    REQ(hp->rope_dim > 0 && hp->rope_dim % 2 == 0 && hp->rope_dim <= hp->head_dim,
        "rope.dimension_count %u must be even and <= key_length %u", hp->rope_dim, hp->head_dim);
    REQ(hp->q_lora > 0, "attention.q_lora_rank is 0");
    REQ(hp->o_groups > 0 && hp->n_head % hp->o_groups == 0,
        "attention.output_group_count %u must divide head_count %u", hp->o_groups, hp->n_head);
    REQ(hp->o_lora > 0, "attention.output_lora_rank is 0");
    REQ(hp->window > 0, "attention.sliding_window is 0");
    REQ(hp->rms_eps > 0 && hp->rms_eps < 1, "attention.layer_norm_rms_epsilon %g out of range", hp->rms_eps);
    REQ(hp->n_expert > 0 && hp->n_expert_used > 0 && hp->n_expert_used <= hp->n_expert,
        "expert_used_count %u must be in 1..expert_count %u", hp->n_expert_used, hp->n_expert);
    REQ(hp->expert_ff > 0, "expert_feed_forward_length is 0");
    REQ(hp->n_expert_shared <= 16, "expert_shared_count %u out of range", hp->n_expert_shared);
    REQ(hp->n_hash <= hp->n_layer, "hash_layer_count %u exceeds block_count %u", hp->n_hash, hp->n_layer);
    REQ(hp->hc_mult > 0 && hp->hc_mult <= 16, "hyper_connection.count %u out of range 1..16", hp->hc_mult);
    REQ(hp->hc_sinkhorn > 0 && hp->hc_sinkhorn <= 1000, "hyper_connection.sinkhorn_iterations %u out of range", hp->hc_sinkhorn);
    REQ(hp->rope_base > 1 && hp->compress_rope_base > 1, "rope bases must be > 1");
    REQ(hp->yarn_factor >= 1, "rope.scaling.factor %g must be >= 1", hp->yarn_factor);
    REQ(hp->yarn_orig_ctx > 0, "rope.scaling.original_context_length is 0");
    bool any4 = false;
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        int m = hp->compress[l];
        REQ(m == 0 || m == 4 || m == 128, "compress ratio of layer %u is %d (only 0, 4, 128)", l, m);
        if (m == 4) any4 = true;
    }
    if (any4) {
        REQ(hp->idx_n_head > 0, "attention.indexer.head_count is 0");
        REQ(hp->idx_head_dim >= hp->rope_dim && hp->idx_head_dim % 2 == 0,
            "attention.indexer.key_length %u must be even and >= rope dims %u", hp->idx_head_dim, hp->rope_dim);
        REQ(hp->idx_topk > 0, "attention.indexer.top_k is 0");
    }
    return 0;
#undef REQ
}

int ds4_hparams_write_gguf(const ds4_hparams *hp, gguf_writer *w) {
    int rc = 0;
    rc |= gguf_writer_add_str(w, "general.architecture", "deepseek4");
    rc |= gguf_writer_add_u32(w, P "block_count", hp->n_layer);
    /* u32: llama.cpp refuses a u64 here */
    rc |= gguf_writer_add_u32(w, P "context_length", (uint32_t)(hp->ctx_len ? hp->ctx_len : 1048576));
    rc |= gguf_writer_add_u32(w, P "embedding_length", hp->n_embd);
    rc |= gguf_writer_add_u32(w, P "vocab_size", hp->n_vocab);
    rc |= gguf_writer_add_u32(w, P "attention.head_count", hp->n_head);
    rc |= gguf_writer_add_u32(w, P "attention.head_count_kv", hp->n_head_kv);
    rc |= gguf_writer_add_u32(w, P "attention.key_length", hp->head_dim);
    rc |= gguf_writer_add_u32(w, P "attention.value_length", hp->head_dim);
    rc |= gguf_writer_add_u32(w, P "attention.q_lora_rank", hp->q_lora);
    rc |= gguf_writer_add_u32(w, P "attention.output_lora_rank", hp->o_lora);
    rc |= gguf_writer_add_u32(w, P "attention.output_group_count", hp->o_groups);
    rc |= gguf_writer_add_u32(w, P "attention.sliding_window", hp->window);
    rc |= gguf_writer_add_f32(w, P "attention.layer_norm_rms_epsilon", hp->rms_eps);
    int32_t cr[DS4_MAX_LAYERS + 1];
    uint32_t ncr = hp->n_layer + (hp->n_mtp ? 1 : 0);
    for (uint32_t i = 0; i < ncr; i++) cr[i] = i < hp->n_compress ? hp->compress[i] : 0;
    rc |= gguf_writer_add_arr(w, P "attention.compress_ratios", GGUF_TYPE_INT32, cr, ncr);
    rc |= gguf_writer_add_f32(w, P "attention.compress_rope_freq_base", hp->compress_rope_base);
    rc |= gguf_writer_add_u32(w, P "attention.indexer.head_count", hp->idx_n_head);
    rc |= gguf_writer_add_u32(w, P "attention.indexer.key_length", hp->idx_head_dim);
    rc |= gguf_writer_add_u32(w, P "attention.indexer.top_k", hp->idx_topk);
    rc |= gguf_writer_add_u32(w, P "rope.dimension_count", hp->rope_dim);
    rc |= gguf_writer_add_f32(w, P "rope.freq_base", hp->rope_base);
    rc |= gguf_writer_add_str(w, P "rope.scaling.type", "yarn");
    rc |= gguf_writer_add_f32(w, P "rope.scaling.factor", hp->yarn_factor);
    rc |= gguf_writer_add_u32(w, P "rope.scaling.original_context_length", (uint32_t)hp->yarn_orig_ctx);
    rc |= gguf_writer_add_f32(w, P "rope.scaling.yarn_beta_fast", hp->yarn_beta_fast);
    rc |= gguf_writer_add_f32(w, P "rope.scaling.yarn_beta_slow", hp->yarn_beta_slow);
    rc |= gguf_writer_add_u32(w, P "expert_count", hp->n_expert);
    rc |= gguf_writer_add_u32(w, P "expert_used_count", hp->n_expert_used);
    rc |= gguf_writer_add_u32(w, P "expert_shared_count", hp->n_expert_shared);
    rc |= gguf_writer_add_u32(w, P "expert_feed_forward_length", hp->expert_ff);
    rc |= gguf_writer_add_u32(w, P "expert_group_count", 0);
    rc |= gguf_writer_add_u32(w, P "expert_group_used_count", 0);
    rc |= gguf_writer_add_f32(w, P "expert_weights_scale", hp->expert_weights_scale);
    rc |= gguf_writer_add_bool(w, P "expert_weights_norm", hp->expert_weights_norm);
    rc |= gguf_writer_add_u32(w, P "expert_gating_func", 4);
    rc |= gguf_writer_add_u32(w, P "hash_layer_count", hp->n_hash);
    rc |= gguf_writer_add_arr(w, P "swiglu_clamp_exp", GGUF_TYPE_FLOAT32, hp->clamp_exp, hp->n_layer);
    rc |= gguf_writer_add_arr(w, P "swiglu_clamp_shexp", GGUF_TYPE_FLOAT32, hp->clamp_shexp, hp->n_layer);
    rc |= gguf_writer_add_u32(w, P "hyper_connection.count", hp->hc_mult);
    rc |= gguf_writer_add_u32(w, P "hyper_connection.sinkhorn_iterations", hp->hc_sinkhorn);
    rc |= gguf_writer_add_f32(w, P "hyper_connection.epsilon", hp->hc_eps);
    rc |= gguf_writer_add_u32(w, P "nextn_predict_layers", hp->n_mtp);
    return rc ? -1 : 0;
}

void ds4_hparams_preset_flash(ds4_hparams *hp) {
    memset(hp, 0, sizeof *hp);
    hp->n_layer = 43; hp->n_embd = 4096; hp->n_vocab = 129280;
    hp->n_head = 64; hp->n_head_kv = 1; hp->head_dim = 512; hp->rope_dim = 64;
    hp->q_lora = 1024; hp->o_groups = 8; hp->o_lora = 1024; hp->window = 128;
    hp->rms_eps = 1e-6f;
    hp->n_compress = 44;
    for (uint32_t l = 0; l < 44; l++) hp->compress[l] = l < 2 || l == 43 ? 0 : (l % 2 == 0 ? 4 : 128);
    hp->compress_rope_base = 160000.0f;
    hp->idx_n_head = 64; hp->idx_head_dim = 128; hp->idx_topk = 512;
    hp->rope_base = 10000.0f; hp->yarn_factor = 16.0f; hp->yarn_orig_ctx = 65536;
    hp->yarn_beta_fast = 32.0f; hp->yarn_beta_slow = 1.0f;
    hp->n_expert = 256; hp->n_expert_used = 6; hp->n_expert_shared = 1; hp->expert_ff = 2048;
    hp->expert_weights_scale = 1.5f; hp->expert_weights_norm = true; hp->n_hash = 3;
    for (uint32_t l = 0; l <= 43; l++) hp->clamp_exp[l] = hp->clamp_shexp[l] = 10.0f;
    hp->hc_mult = 4; hp->hc_sinkhorn = 20; hp->hc_eps = 1e-6f;
    hp->ctx_len = 1048576; hp->n_mtp = 1;
}
