/* config.json → ds4_hparams; see hfconfig.h. */
#include "convert/hfconfig.h"

#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    json_t *root;
    const char *name;
    ds4_err *err;
} cfg;

/* Numeric value of key in obj (or NULL). */
static json_t *num(json_t *obj, const char *key) {
    json_t *v = obj ? json_object_get(obj, key) : NULL;
    return json_is_number(v) ? v : NULL;
}

static int get_u32(cfg *c, json_t *obj, const char *key, uint32_t *out, bool required) {
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        if (required) return ds4_err_set(c->err, "%s: missing key '%s'", c->name, key);
        return 1;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > UINT32_MAX)
        return ds4_err_set(c->err, "%s: key '%s' must be a non-negative integer", c->name, key);
    *out = (uint32_t)json_integer_value(v);
    return 0;
}

static int get_f32(cfg *c, json_t *obj, const char *key, float *out, bool required) {
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        if (required) return ds4_err_set(c->err, "%s: missing key '%s'", c->name, key);
        return 1;
    }
    if (!json_is_number(v)) return ds4_err_set(c->err, "%s: key '%s' must be a number", c->name, key);
    *out = (float)json_number_value(v);
    return 0;
}

#define REQ_U32(key, field) do { if (get_u32(&c, r, key, &hp->field, true)) goto out; } while (0)
#define REQ_F32(key, field) do { if (get_f32(&c, r, key, &hp->field, true)) goto out; } while (0)

/* compress ratios: official list, or transformers' layer_types + compress_rates. */
static int read_ratios(cfg *c, ds4_hparams *hp) {
    json_t *r = c->root, *cr = json_object_get(r, "compress_ratios");
    json_t *lt = json_object_get(r, "layer_types"), *rates = json_object_get(r, "compress_rates");
    uint32_t L = hp->n_layer;
    int32_t from_lt[DS4_MAX_LAYERS + 1];
    uint32_t n_lt = 0;
    if (lt && !json_is_null(lt)) {
        if (!json_is_array(lt)) return ds4_err_set(c->err, "%s: 'layer_types' must be an array", c->name);
        n_lt = (uint32_t)json_array_size(lt);
        if (n_lt < L || n_lt > L + 1)
            return ds4_err_set(c->err, "%s: 'layer_types' has %u entries, num_hidden_layers is %u", c->name, n_lt, L);
        for (uint32_t i = 0; i < n_lt; i++) {
            const char *t = json_string_value(json_array_get(lt, i));
            if (!t) return ds4_err_set(c->err, "%s: 'layer_types'[%u] is not a string", c->name, i);
            if (!strcmp(t, "sliding_attention") || !strcmp(t, "full_attention")) { from_lt[i] = 0; continue; }
            json_t *m = json_is_object(rates) ? json_object_get(rates, t) : NULL;
            if (!json_is_integer(m))
                return ds4_err_set(c->err, "%s: 'layer_types'[%u] = '%s' has no entry in 'compress_rates'", c->name, i, t);
            from_lt[i] = (int32_t)json_integer_value(m);
        }
    }
    if (cr && !json_is_null(cr)) {
        if (!json_is_array(cr)) return ds4_err_set(c->err, "%s: 'compress_ratios' must be an array", c->name);
        uint32_t n = (uint32_t)json_array_size(cr);
        if (n < L || n > L + 1)
            return ds4_err_set(c->err, "%s: 'compress_ratios' has %u entries; need num_hidden_layers (%u) or one more for MTP",
                               c->name, n, L);
        for (uint32_t i = 0; i < n; i++) {
            json_t *v = json_array_get(cr, i);
            if (!json_is_integer(v)) return ds4_err_set(c->err, "%s: 'compress_ratios'[%u] is not an integer", c->name, i);
            hp->compress[i] = (int32_t)json_integer_value(v);
        }
        hp->n_compress = n;
        for (uint32_t i = 0; i < n_lt && i < n; i++)
            if (from_lt[i] != hp->compress[i])
                return ds4_err_set(c->err, "%s: 'compress_ratios'[%u] = %d disagrees with 'layer_types'/'compress_rates' (%d)",
                                   c->name, i, hp->compress[i], from_lt[i]);
    } else if (n_lt) {
        memcpy(hp->compress, from_lt, sizeof(int32_t) * n_lt);
        hp->n_compress = n_lt;
    } else {
        return ds4_err_set(c->err, "%s: missing key 'compress_ratios' (or 'layer_types' + 'compress_rates')", c->name);
    }
    for (uint32_t i = 0; i < hp->n_compress; i++)
        if (hp->compress[i] != 0 && hp->compress[i] != 4 && hp->compress[i] != 128)
            return ds4_err_set(c->err, "%s: compress ratio of layer %u is %d; only 0, 4 and 128 are supported", c->name, i,
                               hp->compress[i]);
    return 0;
}

/* Hash-routed layers: num_hash_layers, or the leading "hash_moe" run of mlp_layer_types. */
static int read_hash(cfg *c, ds4_hparams *hp) {
    json_t *r = c->root, *mt = json_object_get(r, "mlp_layer_types");
    int have_n = get_u32(c, r, "num_hash_layers", &hp->n_hash, false);
    if (have_n < 0) return -1;
    if (mt && !json_is_null(mt)) {
        if (!json_is_array(mt) || json_array_size(mt) < hp->n_layer)
            return ds4_err_set(c->err, "%s: 'mlp_layer_types' must be an array of num_hidden_layers (%u) strings", c->name,
                               hp->n_layer);
        uint32_t n = 0;
        bool ended = false;
        for (uint32_t i = 0; i < hp->n_layer; i++) {
            const char *t = json_string_value(json_array_get(mt, i));
            if (!t) return ds4_err_set(c->err, "%s: 'mlp_layer_types'[%u] is not a string", c->name, i);
            bool hash = !strcmp(t, "hash_moe");
            if (!hash && strcmp(t, "moe"))
                return ds4_err_set(c->err, "%s: 'mlp_layer_types'[%u] = '%s'; expected 'hash_moe' or 'moe'", c->name, i, t);
            if (hash && ended)
                return ds4_err_set(c->err, "%s: 'mlp_layer_types': hash_moe layers must come first (layer %u)", c->name, i);
            if (hash) n++; else ended = true;
        }
        if (have_n == 0 && n != hp->n_hash)
            return ds4_err_set(c->err, "%s: 'num_hash_layers' (%u) disagrees with 'mlp_layer_types' (%u hash_moe layers)",
                               c->name, hp->n_hash, n);
        hp->n_hash = n;
    } else if (have_n) {
        return ds4_err_set(c->err, "%s: missing key 'num_hash_layers' (or 'mlp_layer_types')", c->name);
    }
    return 0;
}

/* YaRN of the compressed layers: rope_scaling, rope_parameters.compress, or flat keys. */
static int read_yarn(cfg *c, ds4_hparams *hp) {
    json_t *r = c->root, *y = json_object_get(r, "rope_scaling");
    json_t *rp = json_object_get(r, "rope_parameters");
    if (!json_is_object(y) && json_is_object(rp)) y = json_object_get(rp, "compress");
    hp->yarn_beta_fast = 32.0f;
    hp->yarn_beta_slow = 1.0f;
    json_t *f, *o;
    if (json_is_object(y)) {
        f = num(y, "factor");
        o = num(y, "original_max_position_embeddings");
        const char *type = json_string_value(json_object_get(y, "rope_type"));
        if (!type) type = json_string_value(json_object_get(y, "type"));
        if (type && strcmp(type, "yarn"))
            return ds4_err_set(c->err, "%s: rope scaling type is '%s'; DeepSeek V4 uses 'yarn'", c->name, type);
        if (num(y, "beta_fast")) hp->yarn_beta_fast = (float)json_number_value(num(y, "beta_fast"));
        if (num(y, "beta_slow")) hp->yarn_beta_slow = (float)json_number_value(num(y, "beta_slow"));
        /* transformers keeps θ_c here too */
        if (num(y, "rope_theta") && !num(r, "compress_rope_theta"))
            hp->compress_rope_base = (float)json_number_value(num(y, "rope_theta"));
    } else {
        f = num(r, "rope_factor");
        o = num(r, "original_seq_len");
        if (num(r, "beta_fast")) hp->yarn_beta_fast = (float)json_number_value(num(r, "beta_fast"));
        if (num(r, "beta_slow")) hp->yarn_beta_slow = (float)json_number_value(num(r, "beta_slow"));
    }
    if (!f) return ds4_err_set(c->err, "%s: missing key 'rope_scaling.factor' (YaRN of the compressed layers)", c->name);
    if (!o || json_number_value(o) < 1)
        return ds4_err_set(c->err, "%s: missing key 'rope_scaling.original_max_position_embeddings'", c->name);
    hp->yarn_factor = (float)json_number_value(f);
    hp->yarn_orig_ctx = (uint64_t)json_number_value(o);
    return 0;
}

int ds4_hfconfig_parse(const char *json, size_t len, const char *name, ds4_hparams *hp, ds4_err *err) {
    memset(hp, 0, sizeof *hp);
    json_error_t je;
    cfg c = {json_loadb(json, len, 0, &je), name, err};
    if (!c.root) return ds4_err_set(err, "%s: %s (line %d)", name, je.text, je.line);
    json_t *r = c.root;
    int rc = -1;
    if (!json_is_object(r)) { ds4_err_set(err, "%s: not a JSON object", name); goto out; }
    do {
        REQ_U32("num_hidden_layers", n_layer);
        if (hp->n_layer < 1 || hp->n_layer > DS4_MAX_LAYERS) {
            ds4_err_set(err, "%s: num_hidden_layers %u out of range 1..%d", name, hp->n_layer, DS4_MAX_LAYERS);
            goto out;
        }
        REQ_U32("hidden_size", n_embd);
        REQ_U32("vocab_size", n_vocab);
        REQ_U32("num_attention_heads", n_head);
        hp->n_head_kv = 1;
        if (get_u32(&c, r, "num_key_value_heads", &hp->n_head_kv, false) < 0) goto out;
        REQ_U32("head_dim", head_dim);
        int rr = get_u32(&c, r, "qk_rope_head_dim", &hp->rope_dim, false);
        if (rr < 0) goto out;
        if (rr) { /* transformers: partial_rotary_factor × head_dim */
            json_t *p = num(r, "partial_rotary_factor");
            if (!p) { ds4_err_set(err, "%s: missing key 'qk_rope_head_dim'", name); goto out; }
            hp->rope_dim = (uint32_t)lround(json_number_value(p) * hp->head_dim);
        }
        REQ_U32("q_lora_rank", q_lora);
        REQ_U32("o_groups", o_groups);
        REQ_U32("o_lora_rank", o_lora);
        REQ_U32("sliding_window", window);
        REQ_F32("rms_norm_eps", rms_eps);
        if (read_ratios(&c, hp)) goto out;
        /* θ_c: compress_rope_theta, or (transformers) rope_parameters.compress.rope_theta via read_yarn */
        int ct = get_f32(&c, r, "compress_rope_theta", &hp->compress_rope_base, false);
        if (ct < 0) goto out;
        if (read_yarn(&c, hp)) goto out;
        if (!hp->compress_rope_base) { ds4_err_set(err, "%s: missing key 'compress_rope_theta'", name); goto out; }
        int rt = get_f32(&c, r, "rope_theta", &hp->rope_base, false);
        if (rt < 0) goto out;
        if (rt) {
            json_t *rp = json_object_get(r, "rope_parameters"), *m = json_is_object(rp) ? json_object_get(rp, "main") : NULL;
            if (!num(m, "rope_theta")) { ds4_err_set(err, "%s: missing key 'rope_theta'", name); goto out; }
            hp->rope_base = (float)json_number_value(num(m, "rope_theta"));
        }
        REQ_U32("index_n_heads", idx_n_head);
        REQ_U32("index_head_dim", idx_head_dim);
        REQ_U32("index_topk", idx_topk);
        REQ_U32("n_routed_experts", n_expert);
        REQ_U32("num_experts_per_tok", n_expert_used);
        REQ_U32("n_shared_experts", n_expert_shared);
        REQ_U32("moe_intermediate_size", expert_ff);
        if (read_hash(&c, hp)) goto out;
        REQ_F32("routed_scaling_factor", expert_weights_scale);
        hp->expert_weights_norm = true;
        json_t *nt = json_object_get(r, "norm_topk_prob");
        if (nt && !json_is_boolean(nt)) { ds4_err_set(err, "%s: key 'norm_topk_prob' must be a boolean", name); goto out; }
        if (nt) hp->expert_weights_norm = json_is_true(nt);
        const char *sf = json_string_value(json_object_get(r, "scoring_func"));
        if (!sf) { ds4_err_set(err, "%s: missing key 'scoring_func'", name); goto out; }
        if (strcmp(sf, "sqrtsoftplus")) {
            ds4_err_set(err, "%s: 'scoring_func' is '%s'; DeepSeek V4 needs 'sqrtsoftplus'", name, sf);
            goto out;
        }
        float lim;
        if (get_f32(&c, r, "swiglu_limit", &lim, true)) goto out;
        for (int i = 0; i <= DS4_MAX_LAYERS; i++) hp->clamp_exp[i] = hp->clamp_shexp[i] = lim;
        REQ_U32("hc_mult", hc_mult);
        REQ_U32("hc_sinkhorn_iters", hc_sinkhorn);
        REQ_F32("hc_eps", hc_eps);
        uint32_t ctx = 0;
        if (get_u32(&c, r, "max_position_embeddings", &ctx, false) < 0) goto out;
        hp->ctx_len = ctx;
        if (get_u32(&c, r, "num_nextn_predict_layers", &hp->n_mtp, false) < 0) goto out;
        if (hp->n_mtp > 1) hp->n_mtp = 1; /* the schema has one MTP block (mtp.0.*) */
    } while (0);

    /* Cross-field checks with HF names, before the generic validator. */
    if (hp->o_groups == 0 || hp->n_head % hp->o_groups) {
        ds4_err_set(err, "%s: num_attention_heads (%u) is not divisible by o_groups (%u)", name, hp->n_head, hp->o_groups);
        goto out;
    }
    if (hp->rope_dim > hp->head_dim) {
        ds4_err_set(err, "%s: qk_rope_head_dim (%u) exceeds head_dim (%u)", name, hp->rope_dim, hp->head_dim);
        goto out;
    }
    if (hp->n_expert_used > hp->n_expert) {
        ds4_err_set(err, "%s: num_experts_per_tok (%u) exceeds n_routed_experts (%u)", name, hp->n_expert_used, hp->n_expert);
        goto out;
    }
    if (hp->n_hash > hp->n_layer) {
        ds4_err_set(err, "%s: num_hash_layers (%u) exceeds num_hidden_layers (%u)", name, hp->n_hash, hp->n_layer);
        goto out;
    }
    if (ds4_hparams_validate(hp, err)) { ds4_err_prefix(err, "%s: inconsistent config", name); goto out; }
    rc = 0;
out:
    json_decref(c.root);
    return rc;
}

int ds4_hfconfig_load(const char *path, ds4_hparams *hp, ds4_err *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return ds4_err_set(err, "%s: cannot open", path);
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 4096 > cap) {
            cap = cap ? cap * 2 : 65536;
            char *nb = realloc(buf, cap);
            if (!nb) { free(buf); fclose(f); return ds4_err_set(err, "out of memory"); }
            buf = nb;
        }
        size_t k = fread(buf + len, 1, cap - len, f);
        len += k;
        if (!k) break;
    }
    fclose(f);
    int rc = ds4_hfconfig_parse(buf, len, path, hp, err);
    free(buf);
    return rc;
}
