/* DeepSeek V4 model description: hyper-parameters, tensor schema, recipes, loader.
 *
 * One code path serves Flash, Pro and tiny test models: every dimension comes
 * from the `deepseek4.*` GGUF metadata (or an HF config.json in the converter),
 * is validated once by ds4_hparams_validate(), and then drives the tensor
 * schema.  The schema (ds4_schema_build) is the single list of tensors a model
 * of given hyper-parameters has, with their GGUF names, official HF names and
 * shapes; the loader checks files against it, the converter and the synthetic
 * model generator write files from it, so the three cannot drift apart.
 *
 * Shapes use GGUF order: ne[0] is the contiguous (input) dimension, so an HF
 * weight [out, in] has ne = {in, out}; stacked routed experts are {in, out, E}.
 *
 * The loader binds names to ds4_weight views into the mmap (no copies), except
 * that small vectors (norm weights, sinks, HC scale/base, router bias, APE
 * tables) are made available as f32 whatever their stored type. */
#ifndef DS4_MODEL_H
#define DS4_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "gguf/gguf.h"
#include "util/err.h"

#define DS4_MAX_LAYERS 255

typedef struct ds4_hparams {
    uint32_t n_layer;          /* L, transformer blocks excluding MTP */
    uint32_t n_embd;           /* D */
    uint32_t n_vocab;          /* V */
    uint32_t n_head;           /* n_h */
    uint32_t n_head_kv;        /* 1 (K = V shared single head) */
    uint32_t head_dim;         /* d_h */
    uint32_t rope_dim;         /* d_r, RoPE on the tail of each head */
    uint32_t q_lora;           /* r_q */
    uint32_t o_groups;         /* G */
    uint32_t o_lora;           /* r_o, per group */
    uint32_t window;           /* W, sliding window including the current token */
    float rms_eps;
    uint32_t n_compress;       /* entries in compress[] (L, or L+1 with MTP entry) */
    int32_t compress[DS4_MAX_LAYERS + 1]; /* m_l in {0, 4, 128} */
    float compress_rope_base;  /* θ_c */
    uint32_t idx_n_head;       /* n_I */
    uint32_t idx_head_dim;     /* d_I */
    uint32_t idx_topk;         /* K_I */
    float rope_base;           /* θ_m */
    float yarn_factor;         /* s */
    uint64_t yarn_orig_ctx;    /* L_o */
    float yarn_beta_fast, yarn_beta_slow;
    uint32_t n_expert, n_expert_used, n_expert_shared;
    uint32_t expert_ff;        /* F */
    float expert_weights_scale;/* ρ */
    bool expert_weights_norm;
    uint32_t n_hash;           /* hash-routed layers 0..n_hash-1 */
    float clamp_exp[DS4_MAX_LAYERS + 1];   /* SwiGLU clamp, routed experts */
    float clamp_shexp[DS4_MAX_LAYERS + 1]; /* SwiGLU clamp, shared expert */
    uint32_t hc_mult;          /* H */
    uint32_t hc_sinkhorn;      /* T_sk */
    float hc_eps;
    uint64_t ctx_len;          /* training context (informational) */
    uint32_t n_mtp;            /* nextn_predict_layers */
} ds4_hparams;

/* Derived sizes. */
static inline uint32_t ds4_hc_dim(const ds4_hparams *h) { return h->hc_mult * h->n_embd; }
static inline uint32_t ds4_hc_mix(const ds4_hparams *h) { return (2 + h->hc_mult) * h->hc_mult; }
static inline uint32_t ds4_q_dim(const ds4_hparams *h) { return h->n_head * h->head_dim; }
static inline uint32_t ds4_group_in(const ds4_hparams *h) { return h->n_head / h->o_groups * h->head_dim; }

int ds4_hparams_read_gguf(const gguf_file *f, ds4_hparams *hp, ds4_err *err);
int ds4_hparams_write_gguf(const ds4_hparams *hp, gguf_writer *w);
/* Checks ranges and cross-field consistency; the message names the field. */
int ds4_hparams_validate(const ds4_hparams *hp, ds4_err *err);
/* Fills the Flash / tiny-b-like presets (used by ds4-mkmodel and tests). */
void ds4_hparams_preset_flash(ds4_hparams *hp);

/* ---- Schema ---- */

/* What a tensor is, for type validation and for quantization recipes. */
enum ds4_role {
    DS4_ROLE_EMBED,      /* token embedding, rows looked up */
    DS4_ROLE_HEAD,       /* LM head */
    DS4_ROLE_DENSE,      /* attention q/kv/out projections, MTP e/h proj */
    DS4_ROLE_SHARED,     /* shared expert matrices */
    DS4_ROLE_SMALLMAT,   /* router, compressor kv/gate, indexer q_b/proj (F16 in ds4) */
    DS4_ROLE_HC_FN,      /* hyper-connection mixing matrices */
    DS4_ROLE_EXP_GATEUP, /* routed experts w1 / w3, stacked */
    DS4_ROLE_EXP_DOWN,   /* routed experts w2, stacked */
    DS4_ROLE_VEC,        /* norms, sinks, HC scale/base, router bias: f32 */
    DS4_ROLE_APE,        /* compressor absolute position bias tables */
    DS4_ROLE_TID2EID,    /* hash routing table, I32 */
};

typedef struct ds4_tensor_spec {
    char name[96];       /* GGUF name */
    char hf_name[96];    /* official checkpoint name; "%d" = expert index if stacked */
    enum ds4_role role;
    uint32_t n_dims;
    int64_t ne[3];
    int layer;           /* -1 for globals, L for MTP */
    bool stacked;        /* routed experts: HF has one tensor per expert */
    bool optional;       /* MTP tensors */
} ds4_tensor_spec;

/* Builds the full list for hp (MTP tensors included, marked optional, when
 * hp->n_mtp > 0). Caller frees *out. Returns the count or -1. */
int ds4_schema_build(const ds4_hparams *hp, ds4_tensor_spec **out, ds4_err *err);
/* Is `type` acceptable storage for a tensor of this role? */
bool ds4_role_accepts(enum ds4_role role, int type);

/* ---- Recipes ---- */

/* Recipe names: f32, bf16, f16, q8_0, q2, q4. Returns the storage type for a
 * tensor of role/row length ne0 (falling back to Q8_0 / F16 / F32 where the
 * row length is not a multiple of the block size), or -1 for an unknown recipe. */
int ds4_recipe_type(const char *recipe, enum ds4_role role, int64_t ne0);
bool ds4_recipe_known(const char *recipe);

/* ---- Loaded model ---- */

typedef struct ds4_weight {
    const void *data;    /* into the mmap */
    int type;
    int64_t ne[3];
    const char *name;    /* GGUF name (owned by the schema copy in ds4_model) */
} ds4_weight;

typedef struct ds4_layer {
    int ratio;                         /* compress ratio m_l */
    bool hash;                         /* hash-routed (tid2eid) */
    /* hyper-connections */
    ds4_weight hc_attn_fn, hc_ffn_fn;
    const float *hc_attn_scale, *hc_attn_base, *hc_ffn_scale, *hc_ffn_base;
    const float *attn_norm, *ffn_norm;
    /* attention */
    ds4_weight q_a, q_b, kv, out_a, out_b;
    const float *q_a_norm, *kv_norm, *sinks;
    /* compressor (ratio > 0) */
    ds4_weight comp_kv, comp_gate;
    const float *comp_ape, *comp_norm;
    /* indexer (ratio 4) */
    ds4_weight idx_q_b, idx_proj, idx_comp_kv, idx_comp_gate;
    const float *idx_comp_ape, *idx_comp_norm;
    /* MoE */
    ds4_weight gate_inp, gate_exps, up_exps, down_exps, gate_sh, up_sh, down_sh;
    const float *exp_probs_b;          /* NULL on hash layers */
    const int32_t *tid2eid;            /* [V][k], NULL on non-hash layers */
    float clamp_exp, clamp_shexp;
} ds4_layer;

typedef struct ds4_mtp {
    ds4_weight e_proj, h_proj;
    const float *enorm, *hnorm, *norm;
    ds4_weight hc_head_fn;
    const float *hc_head_base, *hc_head_scale;
    ds4_layer block;
} ds4_mtp;

typedef struct ds4_model {
    gguf_file *gguf;
    ds4_hparams hp;
    ds4_tensor_spec *schema;
    int n_schema;
    ds4_weight tok_embd, output, out_hc_fn;
    const float *out_norm, *out_hc_base, *out_hc_scale;
    ds4_layer *layers;                 /* n_layer entries */
    bool has_mtp;
    ds4_mtp mtp;
    void **owned;                      /* f32 copies made for small vectors */
    int n_owned;
} ds4_model;

/* Opens and validates a deepseek4 GGUF. Errors name the tensor/key and what
 * was expected and found. */
ds4_model *ds4_model_load(const char *path, ds4_err *err);
/* Same, from an already opened GGUF (the model takes ownership of f). */
ds4_model *ds4_model_from_gguf(gguf_file *f, ds4_err *err);
void ds4_model_free(ds4_model *m);

#endif
