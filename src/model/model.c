/* Model loader: validates a deepseek4 GGUF against the schema and binds each
 * tensor to its slot in ds4_model.  See model.h. */
#include "model/model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quant/quant.h"

static const char *shape_str(const int64_t *ne, uint32_t nd, char *buf, size_t n) {
    int k = snprintf(buf, n, "[");
    for (uint32_t i = 0; i < nd && k < (int)n; i++)
        k += snprintf(buf + k, n - (size_t)k, "%s%lld", i ? ", " : "", (long long)ne[i]);
    if (k < (int)n) snprintf(buf + k, n - (size_t)k, "]");
    return buf;
}

/* Returns an f32 view of a small float tensor, converting (and remembering
 * the copy for ds4_model_free) when it is not stored as F32. */
static const float *as_f32(ds4_model *m, const gguf_tensor *t, int64_t n) {
    if (t->type == DS4_TYPE_F32) return t->data;
    float *buf = malloc(sizeof(float) * (size_t)n);
    void **owned = realloc(m->owned, sizeof(void *) * (size_t)(m->n_owned + 1));
    if (!buf || !owned) { free(buf); if (owned) m->owned = owned; return NULL; }
    m->owned = owned;
    m->owned[m->n_owned++] = buf;
    ds4_type_traits_get(t->type)->to_float(t->data, buf, n);
    return buf;
}

/* Finds and checks one tensor.  Returns 1 if bound, 0 if absent and optional, -1 on error. */
static int bind(ds4_model *m, const ds4_tensor_spec *s, ds4_weight *w, const float **vec,
                const int32_t **ids, ds4_err *err) {
    const gguf_tensor *t = gguf_find_tensor(m->gguf, s->name);
    if (!t) {
        if (s->optional) return 0;
        char b[64];
        return ds4_err_set(err, "missing tensor '%s' (expected shape %s)", s->name,
                           shape_str(s->ne, s->n_dims, b, sizeof b));
    }
    /* Accept a trailing-ones difference in rank (e.g. a 1-element vector stored as [1]). */
    bool ok = true;
    for (int i = 0; i < GGUF_MAX_DIMS; i++) {
        int64_t want = i < 3 ? s->ne[i] : 1;
        if (t->ne[i] != want) ok = false;
    }
    if (!ok) {
        char a[96], b[96];
        return ds4_err_set(err, "tensor '%s' has shape %s, expected %s", s->name,
                           shape_str(t->ne, t->n_dims, a, sizeof a), shape_str(s->ne, s->n_dims, b, sizeof b));
    }
    if (!ds4_role_accepts(s->role, t->type) || !ds4_type_traits_get(t->type))
        return ds4_err_set(err, "tensor '%s' has type %s, which is not accepted for this tensor", s->name,
                           ds4_type_name(t->type));
    if (ds4_row_size(t->type, t->ne[0]) == 0)
        return ds4_err_set(err, "tensor '%s': row length %lld is not a multiple of the %s block size",
                           s->name, (long long)t->ne[0], ds4_type_name(t->type));
    if (w) {
        w->data = t->data;
        w->type = t->type;
        w->ne[0] = t->ne[0]; w->ne[1] = t->ne[1]; w->ne[2] = t->ne[2];
        w->name = s->name;
    }
    if (vec) {
        *vec = as_f32(m, t, t->ne[0] * t->ne[1]);
        if (!*vec) return ds4_err_set(err, "out of memory converting '%s'", s->name);
    }
    if (ids) {
        const int32_t *v = t->data;
        int64_t n = t->ne[0] * t->ne[1];
        for (int64_t i = 0; i < n; i++)
            if (v[i] < 0 || (uint32_t)v[i] >= m->hp.n_expert)
                return ds4_err_set(err, "tensor '%s': expert id %d at index %lld out of range 0..%u", s->name,
                                   v[i], (long long)i, m->hp.n_expert - 1);
        *ids = v;
    }
    return 1;
}

/* Maps a schema entry (by its suffix) to the slot in a layer. */
static int bind_layer(ds4_model *m, const ds4_tensor_spec *s, const char *suffix, ds4_layer *L, ds4_err *err) {
    struct { const char *name; ds4_weight *w; const float **v; const int32_t **ids; } map[] = {
        {"hc_attn_fn.weight", &L->hc_attn_fn, NULL, NULL},
        {"hc_attn_scale.weight", NULL, &L->hc_attn_scale, NULL},
        {"hc_attn_base.weight", NULL, &L->hc_attn_base, NULL},
        {"hc_ffn_fn.weight", &L->hc_ffn_fn, NULL, NULL},
        {"hc_ffn_scale.weight", NULL, &L->hc_ffn_scale, NULL},
        {"hc_ffn_base.weight", NULL, &L->hc_ffn_base, NULL},
        {"attn_norm.weight", NULL, &L->attn_norm, NULL},
        {"ffn_norm.weight", NULL, &L->ffn_norm, NULL},
        {"attn_q_a.weight", &L->q_a, NULL, NULL},
        {"attn_q_a_norm.weight", NULL, &L->q_a_norm, NULL},
        {"attn_q_b.weight", &L->q_b, NULL, NULL},
        {"attn_kv.weight", &L->kv, NULL, NULL},
        {"attn_kv_a_norm.weight", NULL, &L->kv_norm, NULL},
        {"attn_sinks.weight", NULL, &L->sinks, NULL},
        {"attn_output_a.weight", &L->out_a, NULL, NULL},
        {"attn_output_b.weight", &L->out_b, NULL, NULL},
        {"attn_compressor_ape.weight", NULL, &L->comp_ape, NULL},
        {"attn_compressor_kv.weight", &L->comp_kv, NULL, NULL},
        {"attn_compressor_gate.weight", &L->comp_gate, NULL, NULL},
        {"attn_compressor_norm.weight", NULL, &L->comp_norm, NULL},
        {"indexer.attn_q_b.weight", &L->idx_q_b, NULL, NULL},
        {"indexer.proj.weight", &L->idx_proj, NULL, NULL},
        {"indexer_compressor_ape.weight", NULL, &L->idx_comp_ape, NULL},
        {"indexer_compressor_kv.weight", &L->idx_comp_kv, NULL, NULL},
        {"indexer_compressor_gate.weight", &L->idx_comp_gate, NULL, NULL},
        {"indexer_compressor_norm.weight", NULL, &L->idx_comp_norm, NULL},
        {"ffn_gate_inp.weight", &L->gate_inp, NULL, NULL},
        {"exp_probs_b.bias", NULL, &L->exp_probs_b, NULL},
        {"ffn_gate_tid2eid.weight", NULL, NULL, &L->tid2eid},
        {"ffn_gate_exps.weight", &L->gate_exps, NULL, NULL},
        {"ffn_up_exps.weight", &L->up_exps, NULL, NULL},
        {"ffn_down_exps.weight", &L->down_exps, NULL, NULL},
        {"ffn_gate_shexp.weight", &L->gate_sh, NULL, NULL},
        {"ffn_up_shexp.weight", &L->up_sh, NULL, NULL},
        {"ffn_down_shexp.weight", &L->down_sh, NULL, NULL},
    };
    for (size_t i = 0; i < sizeof map / sizeof *map; i++)
        if (!strcmp(suffix, map[i].name)) return bind(m, s, map[i].w, map[i].v, map[i].ids, err);
    return ds4_err_set(err, "internal: schema tensor '%s' has no slot", s->name);
}

static int bind_global(ds4_model *m, const ds4_tensor_spec *s, ds4_err *err) {
    struct { const char *name; ds4_weight *w; const float **v; } map[] = {
        {"token_embd.weight", &m->tok_embd, NULL},
        {"output.weight", &m->output, NULL},
        {"output_norm.weight", NULL, &m->out_norm},
        {"output_hc_fn.weight", &m->out_hc_fn, NULL},
        {"output_hc_base.weight", NULL, &m->out_hc_base},
        {"output_hc_scale.weight", NULL, &m->out_hc_scale},
        {"mtp.0.e_proj.weight", &m->mtp.e_proj, NULL},
        {"mtp.0.h_proj.weight", &m->mtp.h_proj, NULL},
        {"mtp.0.enorm.weight", NULL, &m->mtp.enorm},
        {"mtp.0.hnorm.weight", NULL, &m->mtp.hnorm},
        {"mtp.0.norm.weight", NULL, &m->mtp.norm},
        {"mtp.0.hc_head_fn.weight", &m->mtp.hc_head_fn, NULL},
        {"mtp.0.hc_head_base.weight", NULL, &m->mtp.hc_head_base},
        {"mtp.0.hc_head_scale.weight", NULL, &m->mtp.hc_head_scale},
    };
    for (size_t i = 0; i < sizeof map / sizeof *map; i++)
        if (!strcmp(s->name, map[i].name)) return bind(m, s, map[i].w, map[i].v, NULL, err);
    return 2; /* not a global */
}

ds4_model *ds4_model_from_gguf(gguf_file *f, ds4_err *err) {
    ds4_model *m = calloc(1, sizeof *m);
    if (!m) { gguf_close(f); ds4_err_set(err, "out of memory"); return NULL; }
    m->gguf = f;
    if (ds4_hparams_read_gguf(f, &m->hp, err)) goto fail;
    m->n_schema = ds4_schema_build(&m->hp, &m->schema, err);
    if (m->n_schema < 0) goto fail;
    m->layers = calloc(m->hp.n_layer, sizeof *m->layers);
    if (!m->layers) { ds4_err_set(err, "out of memory"); goto fail; }
    int mtp_found = 0, mtp_total = 0;
    for (int i = 0; i < m->n_schema; i++) {
        const ds4_tensor_spec *s = &m->schema[i];
        int rc = bind_global(m, s, err);
        if (rc == 2) {
            bool is_mtp = s->layer == (int)m->hp.n_layer;
            ds4_layer *L = is_mtp ? &m->mtp.block : &m->layers[s->layer];
            /* "blk.N.<suffix>" or "mtp.0.<suffix>" */
            const char *suffix = is_mtp ? s->name + 6 : strchr(s->name + 4, '.') + 1;
            rc = bind_layer(m, s, suffix, L, err);
        }
        if (rc < 0) goto fail;
        if (s->optional) { mtp_total++; mtp_found += rc; }
    }
    if (mtp_found && mtp_found != mtp_total) {
        ds4_err_set(err, "MTP tensors incomplete: %d of %d present", mtp_found, mtp_total);
        goto fail;
    }
    m->has_mtp = mtp_total > 0 && mtp_found == mtp_total;
    for (uint32_t l = 0; l <= m->hp.n_layer; l++) {
        ds4_layer *L = l < m->hp.n_layer ? &m->layers[l] : &m->mtp.block;
        if (l == m->hp.n_layer && !m->has_mtp) break;
        L->ratio = l < m->hp.n_compress ? m->hp.compress[l] : 0;
        L->hash = l < m->hp.n_hash;
        L->clamp_exp = m->hp.clamp_exp[l];
        L->clamp_shexp = m->hp.clamp_shexp[l];
    }
    return m;
fail:
    ds4_model_free(m);
    return NULL;
}

ds4_model *ds4_model_load(const char *path, ds4_err *err) {
    gguf_file *f = gguf_open(path, err);
    if (!f) return NULL;
    ds4_model *m = ds4_model_from_gguf(f, err);
    if (!m) ds4_err_prefix(err, "%s", path);
    return m;
}

void ds4_model_free(ds4_model *m) {
    if (!m) return;
    for (int i = 0; i < m->n_owned; i++) free(m->owned[i]);
    free(m->owned);
    free(m->layers);
    free(m->schema);
    gguf_close(m->gguf);
    free(m);
}
