/* HF checkpoint → GGUF: source planning, dtype decoding, emission.  See convert.h. */
#include "convert/convert.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "convert/hfconfig.h"
#include "convert/safetensors.h"
#include "quant/quant.h"
#include "text/tokenizer.h"

enum src_kind { SRC_FLOAT, SRC_FP8, SRC_FP4, SRC_INT };

typedef struct src {
    const ds4_st_tensor *w, *scale;
    enum src_kind kind;
} src;

typedef struct conv {
    ds4_st *st;
    const ds4_tensor_spec *schema;
    src **plan;          /* per schema tensor: ne2 sources (NULL when skipped) */
    uint32_t n_expert;
    float fp8[256], e8m0[256];
} conv;

/* ---- decoding ---- */

static float rd_f32(const uint8_t *p) { float v; memcpy(&v, p, 4); return v; }
static uint16_t rd_u16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

static float scale_at(const conv *c, const ds4_st_tensor *s, int64_t idx) {
    return s->dtype == DS4_ST_F8_E8M0 ? c->e8m0[s->data[idx]] : rd_f32(s->data + idx * 4);
}

static int conv_rows(void *ud, const ds4_tensor_spec *sp, int64_t slice, int64_t row0, int64_t nrows, float *dst,
                     ds4_err *err) {
    const conv *c = ud;
    const src *s = &c->plan[sp - c->schema][slice];
    const ds4_st_tensor *w = s->w;
    int64_t ne0 = sp->ne[0];
    for (int64_t r = row0; r < row0 + nrows; r++) {
        float *o = dst + (r - row0) * ne0;
        switch (s->kind) {
        case SRC_FLOAT: {
            const uint8_t *p = w->data + (size_t)(r * ne0) * ds4_st_dtype_size(w->dtype);
            if (w->dtype == DS4_ST_F32) memcpy(o, p, sizeof(float) * (size_t)ne0);
            else if (w->dtype == DS4_ST_BF16)
                for (int64_t i = 0; i < ne0; i++) o[i] = ds4_bf16_to_f32(rd_u16(p + 2 * i));
            else
                for (int64_t i = 0; i < ne0; i++) o[i] = ds4_fp16_to_f32(rd_u16(p + 2 * i));
            break;
        }
        case SRC_FP8: {
            /* w[o][i] = fp8(q[o][i]) · 2^(s[o/128][i/128]) */
            const uint8_t *q = w->data + r * ne0;
            int64_t scols = s->scale->shape[1], srow = (r / 128) * scols;
            for (int64_t i = 0; i < ne0; i++) o[i] = c->fp8[q[i]] * scale_at(c, s->scale, srow + i / 128);
            break;
        }
        case SRC_FP4: {
            /* byte k holds element 2k in the low nibble, 2k+1 in the high one */
            const uint8_t *q = w->data + r * (ne0 / 2);
            int64_t srow = r * (ne0 / 32);
            for (int64_t i = 0; i < ne0; i++) {
                uint8_t b = q[i / 2], n = (i & 1) ? b >> 4 : b & 15;
                o[i] = ds4_fp4_e2m1_to_f32(n) * scale_at(c, s->scale, srow + i / 32);
            }
            break;
        }
        case SRC_INT:
            for (int64_t i = 0; i < ne0; i++) {
                int64_t v;
                if (w->dtype == DS4_ST_I64) memcpy(&v, w->data + 8 * (r * ne0 + i), 8);
                else { int32_t v32; memcpy(&v32, w->data + 4 * (r * ne0 + i), 4); v = v32; }
                if (v < 0 || v >= (int64_t)c->n_expert)
                    return ds4_err_set(err, "tensor '%s': expert id %lld at [%lld, %lld] is outside [0, %u)", w->name,
                                       (long long)v, (long long)r, (long long)i, c->n_expert);
                o[i] = (float)v;
            }
            break;
        }
    }
    return 0;
}

/* ---- planning ---- */

static bool shape_is(const ds4_st_tensor *t, int nd, int64_t a, int64_t b) {
    if (t->n_dims != nd) return false;
    return nd == 1 ? t->shape[0] == a : t->shape[0] == a && t->shape[1] == b;
}

static int shape_err(ds4_err *err, const ds4_st_tensor *t, const char *what, int nd, int64_t a, int64_t b,
                     const char *gguf_name) {
    char f[160], e[160];
    int64_t want[2] = {a, b};
    return ds4_err_set(err, "tensor '%s'%s: expected shape %s, found %s (for GGUF '%s')", t->name, what,
                       ds4_st_shape_str(want, nd, e, sizeof e), ds4_st_shape_str(t->shape, t->n_dims, f, sizeof f),
                       gguf_name);
}

/* Resolves one HF tensor (one expert of a stacked tensor) for spec s. */
static int resolve(conv *c, const ds4_tensor_spec *s, const char *hf, bool *claimed, src *out, ds4_err *err) {
    const ds4_st_tensor *w = ds4_st_find(c->st, hf);
    if (!w) return 1;
    claimed[ds4_st_index(c->st, w)] = true;
    out->w = w;
    out->scale = NULL;
    /* HF [out, in] = GGUF {in, out} reversed; 1-D as is. */
    int nd = s->n_dims == 1 ? 1 : 2;
    int64_t a = nd == 1 ? s->ne[0] : s->ne[1], b = nd == 1 ? 0 : s->ne[0];
    switch (w->dtype) {
    case DS4_ST_F32:
    case DS4_ST_F16:
    case DS4_ST_BF16:
        if (s->role == DS4_ROLE_TID2EID) break;
        out->kind = SRC_FLOAT;
        if (!shape_is(w, nd, a, b)) return shape_err(err, w, "", nd, a, b, s->name);
        return 0;
    case DS4_ST_I64:
    case DS4_ST_I32:
        if (s->role != DS4_ROLE_TID2EID) break;
        out->kind = SRC_INT;
        if (!shape_is(w, nd, a, b)) return shape_err(err, w, "", nd, a, b, s->name);
        return 0;
    case DS4_ST_F8_E4M3:
    case DS4_ST_I8: {
        if (nd != 2 || s->role == DS4_ROLE_TID2EID) break;
        bool fp4 = w->dtype == DS4_ST_I8;
        /* "<name minus .weight>.scale" */
        char sn[256];
        size_t l = strlen(hf);
        if (l > 7 && !strcmp(hf + l - 7, ".weight")) l -= 7;
        if (l + 7 > sizeof sn) return ds4_err_set(err, "tensor name '%s' too long", hf);
        memcpy(sn, hf, l);
        memcpy(sn + l, ".scale", 7);
        const ds4_st_tensor *sc = ds4_st_find(c->st, sn);
        if (!sc) return ds4_err_set(err, "tensor '%s' is %s but its scale '%s' is missing", hf, fp4 ? "FP4 (I8)" : "FP8", sn);
        claimed[ds4_st_index(c->st, sc)] = true;
        if (sc->dtype != DS4_ST_F8_E8M0 && sc->dtype != DS4_ST_F32)
            return ds4_err_set(err, "scale tensor '%s' has dtype %s; expected F8_E8M0", sn, ds4_st_dtype_name(sc->dtype));
        out->scale = sc;
        if (fp4) {
            out->kind = SRC_FP4;
            if (b % 32) return ds4_err_set(err, "tensor '%s': FP4 needs a row length multiple of 32, not %lld", hf, (long long)b);
            if (!shape_is(w, 2, a, b / 2)) return shape_err(err, w, " (FP4 packed)", 2, a, b / 2, s->name);
            if (!shape_is(sc, 2, a, b / 32)) return shape_err(err, sc, " (FP4 scale)", 2, a, b / 32, s->name);
        } else {
            out->kind = SRC_FP8;
            if (!shape_is(w, 2, a, b)) return shape_err(err, w, "", 2, a, b, s->name);
            if (!shape_is(sc, 2, (a + 127) / 128, (b + 127) / 128))
                return shape_err(err, sc, " (FP8 block scale)", 2, (a + 127) / 128, (b + 127) / 128, s->name);
        }
        return 0;
    }
    default: break;
    }
    return ds4_err_set(err, "tensor '%s' has dtype %s, which cannot be converted to GGUF '%s'", hf,
                       ds4_st_dtype_name(w->dtype), s->name);
}

static void add_name(char *list, size_t n, int *count, const char *name) {
    if (*count < 8) {
        size_t l = strlen(list);
        snprintf(list + l, n - l, "%s'%s'", *count ? ", " : "", name);
    }
    (*count)++;
}

/* Maps every schema tensor to its sources; refuses unknown and missing tensors. */
static int plan(conv *c, const ds4_tensor_spec *schema, int n, const bool *skip, bool *claimed, ds4_err *err) {
    char missing[1024] = "";
    int n_missing = 0;
    for (int i = 0; i < n; i++) {
        const ds4_tensor_spec *s = &schema[i];
        int64_t ne2 = s->stacked ? s->ne[2] : 1;
        src *v = calloc((size_t)ne2, sizeof *v);
        if (!v) return ds4_err_set(err, "out of memory");
        c->plan[i] = v;
        for (int64_t e = 0; e < ne2; e++) {
            char hf[160];
            if (s->stacked) snprintf(hf, sizeof hf, s->hf_name, (int)e);
            else snprintf(hf, sizeof hf, "%s", s->hf_name);
            int rc = resolve(c, s, hf, claimed, &v[e], err);
            if (rc < 0) return -1;
            if (rc > 0 && !(skip && skip[i])) add_name(missing, sizeof missing, &n_missing, hf);
        }
    }
    /* An unclaimed tensor is one the schema does not know: refuse it by name. */
    char unknown[1024] = "";
    int n_unknown = 0;
    for (int i = 0; i < ds4_st_count(c->st); i++) {
        if (claimed[i]) continue;
        const char *nm = ds4_st_at(c->st, i)->name;
        size_t l = strlen(nm);
        if (l > 6 && !strcmp(nm + l - 6, ".scale")) {
            char wn[160];
            snprintf(wn, sizeof wn, "%.*s.weight", (int)(l - 6), nm);
            const ds4_st_tensor *w = ds4_st_find(c->st, wn);
            if (w) return ds4_err_set(err, "scale tensor '%s' belongs to '%s', whose dtype %s takes no scale", nm, wn,
                                      ds4_st_dtype_name(w->dtype));
        }
        add_name(unknown, sizeof unknown, &n_unknown, nm);
    }
    if (n_unknown)
        return ds4_err_set(err, "unknown tensor name%s %s%s (%d not in the DeepSeek V4 schema)", n_unknown > 1 ? "s" : "",
                           unknown, n_unknown > 8 ? ", ..." : "", n_unknown);
    if (n_missing)
        return ds4_err_set(err, "checkpoint lacks %d tensor%s: %s%s", n_missing, n_missing > 1 ? "s" : "", missing,
                           n_missing > 8 ? ", ..." : "");
    return 0;
}

static bool exists(const char *p) {
    struct stat sb;
    return !stat(p, &sb);
}

int ds4_convert_ex(const char *hf_dir, const char *out_path, const ds4_convert_opts *o, ds4_emit_stats *stats,
                   ds4_err *err) {
    const char *recipe = o->recipe ? o->recipe : DS4_CONVERT_DEFAULT_RECIPE;
    if (!ds4_recipe_known(recipe))
        return ds4_err_set(err, "unknown recipe '%s' (expected f32, bf16, f16, q8_0, q2 or q4)", recipe);
    if (o->imatrix) return ds4_err_set(err, "%s: importance matrices are not supported yet", o->imatrix);

    char path[4096];
    ds4_hparams hp;
    snprintf(path, sizeof path, "%s/config.json", hf_dir);
    if (ds4_hfconfig_load(path, &hp, err)) return -1;

    conv c = {0};
    ds4_tensor_spec *schema = NULL;
    bool *claimed = NULL, *skip = NULL;
    ds4_tokenizer *tok = NULL;
    int n = 0, rc = -1;
    c.n_expert = hp.n_expert;
    for (int i = 0; i < 256; i++) {
        c.fp8[i] = ds4_fp8_e4m3_to_f32((uint8_t)i);
        c.e8m0[i] = ds4_e8m0_to_f32((uint8_t)i);
    }
    c.st = ds4_st_open(hf_dir, err);
    if (!c.st) goto out;

    /* MTP block: present iff the checkpoint has mtp.* tensors. */
    bool has_mtp = false;
    for (int i = 0; i < ds4_st_count(c.st) && !has_mtp; i++) has_mtp = !strncmp(ds4_st_at(c.st, i)->name, "mtp.", 4);
    hp.n_mtp = has_mtp ? 1 : 0;
    if (has_mtp && hp.n_compress <= hp.n_layer) {
        hp.compress[hp.n_layer] = 0;
        hp.n_compress = hp.n_layer + 1;
    }
    n = ds4_schema_build(&hp, &schema, err);
    if (n < 0) goto out;
    c.schema = schema;
    c.plan = calloc((size_t)n, sizeof *c.plan);
    claimed = calloc((size_t)ds4_st_count(c.st) + 1, sizeof *claimed);
    skip = calloc((size_t)n, sizeof *skip);
    if (!c.plan || !claimed || !skip) { ds4_err_set(err, "out of memory"); goto out; }
    for (int i = 0; i < n; i++) skip[i] = o->no_mtp && schema[i].layer == (int)hp.n_layer;
    if (plan(&c, schema, n, skip, claimed, err)) goto out;
    if (o->no_mtp) hp.n_mtp = 0; /* tensors were claimed (known), just not written */

    const char *tj = o->tokenizer_json;
    if (!tj && !o->no_tokenizer) {
        snprintf(path, sizeof path, "%s/tokenizer.json", hf_dir);
        if (exists(path)) tj = path;
    }
    if (tj) {
        tok = ds4_tokenizer_load_json(tj, err);
        if (!tok) goto out;
        if ((uint32_t)ds4_tok_n_vocab(tok) != hp.n_vocab) {
            ds4_err_set(err, "%s has %d tokens but config vocab_size is %u", tj, ds4_tok_n_vocab(tok), hp.n_vocab);
            goto out;
        }
    }

    char name[256];
    if (o->name) snprintf(name, sizeof name, "%s", o->name);
    else {
        size_t l = strlen(hf_dir);
        while (l > 1 && hf_dir[l - 1] == '/') l--;
        const char *b = hf_dir + l;
        while (b > hf_dir && b[-1] != '/') b--;
        snprintf(name, sizeof name, "%.*s", (int)(hf_dir + l - b), b);
    }
    ds4_emit_opts eo = {recipe, name, tok, o->n_threads, o->progress, o->progress_ud};
    rc = ds4_emit_gguf(out_path, &hp, schema, n, skip, conv_rows, &c, &eo, stats, err);
out:
    if (c.plan)
        for (int i = 0; i < n; i++) free(c.plan[i]);
    free(c.plan);
    free(claimed);
    free(skip);
    free(schema);
    if (tok) ds4_tokenizer_free(tok);
    ds4_st_close(c.st);
    return rc;
}

int ds4_convert(const char *hf_dir, const char *out_path, const char *recipe, const char *tokenizer_json,
                const char *imatrix, ds4_progress_fn progress, void *progress_ud, ds4_err *err) {
    ds4_convert_opts o = {0};
    o.recipe = recipe;
    o.tokenizer_json = tokenizer_json;
    o.imatrix = imatrix;
    o.progress = progress;
    o.progress_ud = progress_ud;
    return ds4_convert_ex(hf_dir, out_path, &o, NULL, err);
}
