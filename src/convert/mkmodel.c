/* Random-weight model generator; see mkmodel.h. */
#include "convert/mkmodel.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "text/tokenizer.h"

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t mix(uint64_t a, uint64_t b) {
    uint64_t s = a ^ (b * 0xd6e8feb86659fd93ull);
    return splitmix64(&s);
}

static uint64_t fnv1a(const char *s) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
    return h;
}

/* Uniform in [-1, 1) from 24 random bits (exact in float). */
static float unif(uint64_t *s) { return (float)(int32_t)(splitmix64(s) >> 40) / 8388608.0f - 1.0f; }

/* ~N(0,1): sum of four U(-1,1) has variance 4/3. */
static float gauss(uint64_t *s) {
    return (unif(s) + unif(s) + unif(s) + unif(s)) * 0.8660254f;
}

/* 1/sqrt(n) by Newton iteration (no libm, identical everywhere). */
static float inv_sqrt(int64_t n) {
    double x = 1.0, v = (double)n;
    while (x * x * v > 2.0) x *= 0.5; /* Newton needs x0 < sqrt(3/v) */
    for (int i = 0; i < 40; i++) x = x * (1.5 - 0.5 * v * x * x);
    return (float)x;
}

typedef struct gen {
    uint64_t seed;
    uint32_t n_expert, n_used;
} gen;

static int gen_rows(void *ud, const ds4_tensor_spec *sp, int64_t slice, int64_t row0, int64_t nrows, float *dst,
                    ds4_err *err) {
    (void)err;
    const gen *g = ud;
    uint64_t base = mix(mix(g->seed, fnv1a(sp->name)), (uint64_t)slice);
    int64_t ne0 = sp->ne[0];
    bool is_norm = strstr(sp->name, "norm") != NULL;
    float sc = inv_sqrt(ne0);
    for (int64_t r = row0; r < row0 + nrows; r++) {
        uint64_t s = mix(base, (uint64_t)r);
        float *o = dst + (r - row0) * ne0;
        switch (sp->role) {
        case DS4_ROLE_TID2EID:
            /* ne0 = n_used distinct expert ids for token r */
            for (int64_t i = 0; i < ne0; i++) {
                uint32_t e;
                bool dup;
                do {
                    e = (uint32_t)(splitmix64(&s) % g->n_expert);
                    dup = false;
                    for (int64_t j = 0; j < i; j++) dup |= o[j] == (float)e;
                } while (dup);
                o[i] = (float)e;
            }
            break;
        case DS4_ROLE_VEC:
            for (int64_t i = 0; i < ne0; i++) o[i] = is_norm ? 1.0f + 0.1f * gauss(&s) : 0.2f * gauss(&s);
            break;
        default:
            for (int64_t i = 0; i < ne0; i++) o[i] = gauss(&s) * sc;
            break;
        }
    }
    return 0;
}

int ds4_mkmodel_rows(uint64_t seed, const ds4_hparams *hp, const ds4_tensor_spec *s, int64_t slice, int64_t row0,
                     int64_t nrows, float *dst, ds4_err *err) {
    gen g = {seed, hp->n_expert, hp->n_expert_used};
    return gen_rows(&g, s, slice, row0, nrows, dst, err);
}

void ds4_mkmodel_set_layers(ds4_hparams *hp, uint32_t n_layer) {
    hp->n_layer = n_layer;
    hp->n_compress = n_layer + 1;
    for (uint32_t l = 0; l < n_layer && l <= DS4_MAX_LAYERS; l++)
        hp->compress[l] = l < 2 ? 0 : (l % 2 == 0 ? 4 : 128);
    if (n_layer <= DS4_MAX_LAYERS) hp->compress[n_layer] = 0;
    if (hp->n_hash > n_layer) hp->n_hash = n_layer;
    float c = hp->clamp_exp[0] ? hp->clamp_exp[0] : 10.0f;
    for (int l = 0; l <= DS4_MAX_LAYERS; l++) hp->clamp_exp[l] = hp->clamp_shexp[l] = c;
}

int ds4_mkmodel_preset(const char *preset, ds4_hparams *hp, ds4_err *err) {
    if (!strcasecmp(preset, "flash")) {
        ds4_hparams_preset_flash(hp);
        return 0;
    }
    bool tiny = !strcasecmp(preset, "tiny");
    if (!tiny && strcasecmp(preset, "small")) return ds4_err_set(err, "unknown preset '%s' (tiny, small, flash)", preset);
    /* Both start from Flash's fixed choices (eps, RoPE, YaRN, HC, routing). */
    ds4_hparams_preset_flash(hp);
    hp->n_mtp = 0;
    if (tiny) { /* = shared/golden/tiny-b */
        hp->n_vocab = 2048; hp->n_embd = 128;
        hp->n_head = 8; hp->head_dim = 64; hp->rope_dim = 16;
        hp->q_lora = 64; hp->o_groups = 4; hp->o_lora = 32;
        hp->n_expert = 16; hp->n_expert_used = 3; hp->n_expert_shared = 1; hp->expert_ff = 64;
        hp->idx_n_head = 8; hp->idx_head_dim = 32; hp->idx_topk = 32;
        ds4_mkmodel_set_layers(hp, 5);
    } else { /* every matrix row a multiple of 256 */
        hp->n_vocab = 32768; hp->n_embd = 1024;
        hp->n_head = 16; hp->head_dim = 256; hp->rope_dim = 64;
        hp->q_lora = 512; hp->o_groups = 4; hp->o_lora = 256;
        hp->n_expert = 64; hp->n_expert_used = 6; hp->n_expert_shared = 1; hp->expert_ff = 512;
        hp->idx_n_head = 16; hp->idx_head_dim = 64; hp->idx_topk = 128;
        ds4_mkmodel_set_layers(hp, 10);
    }
    hp->n_hash = 3;
    return 0;
}

int ds4_mkmodel(const char *out_path, const ds4_hparams *hp_in, const ds4_mkmodel_opts *o, ds4_emit_stats *stats,
                ds4_err *err) {
    ds4_hparams hp = *hp_in;
    ds4_tokenizer *tok = NULL;
    if (o->tokenizer_json) {
        tok = ds4_tokenizer_load_json(o->tokenizer_json, err);
        if (!tok) return -1;
        hp.n_vocab = (uint32_t)ds4_tok_n_vocab(tok);
    }
    if (hp.n_mtp && hp.n_compress <= hp.n_layer) {
        hp.compress[hp.n_layer] = 0;
        hp.n_compress = hp.n_layer + 1;
    }
    ds4_tensor_spec *schema = NULL;
    int rc = -1, n = -1;
    if (ds4_hparams_validate(&hp, err)) goto out;
    n = ds4_schema_build(&hp, &schema, err);
    if (n < 0) goto out;
    if (o->dry_run) {
        if (stats) {
            memset(stats, 0, sizeof *stats);
            stats->n_tensors = n;
            rc = ds4_emit_data_size(&hp, schema, n, NULL, o->recipe ? o->recipe : "q8_0", &stats->data_bytes, err);
        } else rc = 0;
        goto out;
    }
    gen g = {o->seed, hp.n_expert, hp.n_expert_used};
    ds4_emit_opts eo = {o->recipe ? o->recipe : "q8_0", o->name ? o->name : "ds4-mkmodel", tok, o->n_threads,
                        o->progress, o->progress_ud};
    rc = ds4_emit_gguf(out_path, &hp, schema, n, NULL, gen_rows, &g, &eo, stats, err);
out:
    free(schema);
    if (tok) ds4_tokenizer_free(tok);
    return rc;
}
