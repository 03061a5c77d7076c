/* Converter and generator tests: golden tiny-b converted with f32/bf16/q8_0
 * (every schema tensor present with the recipe's type and shape; f32 values
 * equal the BF16/F32 source bit for bit, incl. a stacked expert slice and
 * tid2eid), FP8 block-scale and FP4 nibble decoding on hand-made tensors,
 * error messages (unknown tensor, wrong shape, truncated file, missing and
 * inconsistent config keys, bad expert id), and ds4-mkmodel determinism and
 * loadability. */
#include "convert/convert.h"
#include "convert/hfconfig.h"
#include "convert/mkmodel.h"
#include "convert/safetensors.h"
#include "gguf/gguf.h"
#include "model/model.h"
#include "quant/quant.h"
#include "test.h"

#include <stdint.h>
#include <sys/stat.h>
#include <time.h>

/* ---- helpers ---- */

static char *tmp_path(const char *name) {
    static char buf[16][1024];
    static int k;
    char *p = buf[k++ & 15];
    snprintf(p, sizeof buf[0], "%s/%s", test_tmpdir(), name);
    return p;
}

static const char *tinyb(void) {
    static char p[1024];
    snprintf(p, sizeof p, "%s/golden/tiny-b", test_shared_dir());
    return p;
}

static char *read_text(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)sz + 1);
    if (b && fread(b, 1, (size_t)sz, f) != (size_t)sz) { free(b); b = NULL; }
    if (b) b[sz] = 0;
    if (n) *n = (size_t)sz;
    fclose(f);
    return b;
}

static void write_text(const char *path, const char *s, size_t n) {
    FILE *f = fopen(path, "wb");
    if (f) { fwrite(s, 1, n, f); fclose(f); }
}

/* One tensor of a hand-made safetensors file. */
typedef struct ent {
    char name[128];
    const char *dtype;
    int nd;
    int64_t shape[4];
    const void *data;
    size_t nbytes;
} ent;

static void write_safetensors(const char *path, const ent *e, int n) {
    size_t cap = 1 << 20, len = 0;
    char *h = malloc(cap);
    len += (size_t)snprintf(h + len, cap - len, "{\"__metadata__\":{\"format\":\"pt\"}");
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        if (cap - len < 512) h = realloc(h, cap *= 2);
        len += (size_t)snprintf(h + len, cap - len, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", e[i].name, e[i].dtype);
        for (int d = 0; d < e[i].nd; d++)
            len += (size_t)snprintf(h + len, cap - len, "%s%lld", d ? "," : "", (long long)e[i].shape[d]);
        len += (size_t)snprintf(h + len, cap - len, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                                (unsigned long long)(off + e[i].nbytes));
        off += e[i].nbytes;
    }
    h[len++] = '}';
    while (len % 8) h[len++] = ' ';
    FILE *f = fopen(path, "wb");
    uint64_t hl = len;
    uint8_t lb[8];
    for (int i = 0; i < 8; i++) lb[i] = (uint8_t)(hl >> (8 * i));
    fwrite(lb, 1, 8, f);
    fwrite(h, 1, len, f);
    for (int i = 0; i < n; i++) fwrite(e[i].data, 1, e[i].nbytes, f);
    fclose(f);
    free(h);
}

/* A copy of tiny-b in dir/ with `repl` entries replacing (same name) or
 * added to its tensors, `drop` left out, and config text cfg (NULL = as is). */
static void make_variant(const char *dir, const ent *repl, int n_repl, const char *drop, const char *cfg) {
    mkdir(dir, 0755);
    ds4_err err;
    ds4_st *st = ds4_st_open(tinyb(), &err);
    if (!st) { fprintf(stderr, "%s\n", err.msg); exit(2); }
    int n = ds4_st_count(st);
    ent *e = calloc((size_t)(n + n_repl), sizeof *e);
    int k = 0;
    for (int i = 0; i < n; i++) {
        const ds4_st_tensor *t = ds4_st_at(st, i);
        if (drop && !strcmp(t->name, drop)) continue;
        bool replaced = false;
        for (int j = 0; j < n_repl; j++) replaced |= !strcmp(repl[j].name, t->name);
        if (replaced) continue;
        snprintf(e[k].name, sizeof e[k].name, "%s", t->name);
        e[k].dtype = ds4_st_dtype_name(t->dtype);
        e[k].nd = t->n_dims;
        for (int d = 0; d < t->n_dims; d++) e[k].shape[d] = t->shape[d];
        e[k].data = t->data;
        e[k].nbytes = t->nbytes;
        k++;
    }
    for (int j = 0; j < n_repl; j++) e[k++] = repl[j];
    char p[1024];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    write_safetensors(p, e, k);
    free(e);
    ds4_st_close(st);
    snprintf(p, sizeof p, "%s/config.json", dir);
    if (cfg) write_text(p, cfg, strlen(cfg));
    else {
        char src[1100];
        size_t len;
        snprintf(src, sizeof src, "%s/config.json", tinyb());
        char *t = read_text(src, &len);
        write_text(p, t, len);
        free(t);
    }
}

/* Config text of tiny-b with `from` replaced by `to` (first occurrence). */
static char *config_edit(const char *from, const char *to) {
    char src[1100];
    snprintf(src, sizeof src, "%s/config.json", tinyb());
    char *t = read_text(src, NULL);
    char *at = strstr(t, from);
    if (!at) { fprintf(stderr, "config_edit: '%s' not found\n", from); exit(2); }
    size_t n = strlen(t) + strlen(to) + 1;
    char *o = malloc(n);
    snprintf(o, n, "%.*s%s%s", (int)(at - t), t, to, at + strlen(from));
    free(t);
    return o;
}

static float bits_f32(const void *p) { float v; memcpy(&v, p, 4); return v; }

static float bf16_ref(const uint8_t *p) {
    uint32_t u = (uint32_t)(p[0] | p[1] << 8) << 16;
    float v;
    memcpy(&v, &u, 4);
    return v;
}

/* Independent decoders written from MODEL.md §13.1. */
static double e8m0_ref(uint8_t b) { return b == 0 ? ldexp(1.0, -127) : ldexp(1.0, (int)b - 127); }
static double fp8_ref(uint8_t b) {
    int s = b >> 7, e = (b >> 3) & 15, m = b & 7;
    if ((b & 0x7f) == 0x7f) return 0; /* NaN decodes to 0 */
    double v = e == 0 ? m * ldexp(1.0, -9) : (1.0 + m / 8.0) * ldexp(1.0, e - 7);
    return s ? -v : v;
}
static double fp4_ref(uint8_t n) {
    static const double mag[8] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};
    return (n & 8 ? -1 : 1) * mag[n & 7];
}

static int convert_to(const char *dir, const char *out, const char *recipe, ds4_err *err) {
    ds4_convert_opts o = {0};
    o.recipe = recipe;
    o.n_threads = 2;
    return ds4_convert_ex(dir, out, &o, NULL, err);
}

/* ---- tests ---- */

/* Every schema tensor with the recipe's type and shape, nothing else. */
static void check_layout(const char *path, const char *recipe) {
    ds4_err err;
    gguf_file *g = gguf_open(path, &err);
    CHECKF(g, "%s", err.msg);
    if (!g) return;
    char cfg[1100];
    snprintf(cfg, sizeof cfg, "%s/config.json", tinyb());
    ds4_hparams hp;
    CHECK(ds4_hfconfig_load(cfg, &hp, &err) == 0);
    hp.n_mtp = 0;
    ds4_tensor_spec *sc;
    int n = ds4_schema_build(&hp, &sc, &err);
    CHECK_EQ_INT(gguf_n_tensors(g), n);
    for (int i = 0; i < n; i++) {
        const gguf_tensor *t = gguf_find_tensor(g, sc[i].name);
        CHECKF(t, "%s missing", sc[i].name);
        if (!t) continue;
        CHECKF(t->type == ds4_recipe_type(recipe, sc[i].role, sc[i].ne[0]), "%s: type %s", sc[i].name,
               ds4_type_name(t->type));
        CHECKF(t->ne[0] == sc[i].ne[0] && t->ne[1] == sc[i].ne[1] && t->ne[2] == sc[i].ne[2], "%s shape", sc[i].name);
    }
    uint32_t v;
    CHECK(gguf_get_u32(g, "general.alignment", &v, NULL) == 0 && v == 32);
    gguf_str s;
    CHECK(gguf_get_str(g, "ds4.recipe", &s, NULL) == 0 && gguf_str_eq(s, recipe));
    CHECK(gguf_get_u32(g, "deepseek4.nextn_predict_layers", &v, NULL) == 0 && v == 0);
    free(sc);
    gguf_close(g);
}

TEST(convert_tinyb_recipes) {
    const char *recipes[] = {"f32", "bf16", "q8_0"};
    for (int r = 0; r < 3; r++) {
        char name[64];
        snprintf(name, sizeof name, "tinyb-%s.gguf", recipes[r]);
        ds4_err err = {{0}};
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        int rc = convert_to(tinyb(), tmp_path(name), recipes[r], &err);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        CHECKF(rc == 0, "%s: %s", recipes[r], err.msg);
        if (rc) continue;
        printf("  tiny-b %s: %.3f s\n", recipes[r], (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9);
        check_layout(tmp_path(name), recipes[r]);
        ds4_model *m = ds4_model_load(tmp_path(name), &err);
        CHECKF(m, "load %s: %s", recipes[r], err.msg);
        if (m) {
            CHECK_EQ_INT(m->hp.n_layer, 5);
            CHECK_EQ_INT(m->hp.n_vocab, 2048);
            CHECK(!m->has_mtp);
            ds4_model_free(m);
        }
    }
}

/* f32 output equals the source values exactly. */
TEST(convert_tinyb_values) {
    ds4_err err;
    ds4_st *st = ds4_st_open(tinyb(), &err);
    gguf_file *g = gguf_open(tmp_path("tinyb-f32.gguf"), &err);
    gguf_file *gb = gguf_open(tmp_path("tinyb-bf16.gguf"), &err);
    CHECK(st && g && gb);
    if (!st || !g || !gb) return;
    /* {hf name, gguf name, expert slice} */
    struct { const char *hf, *gg; int slice; } pairs[] = {
        {"embed.weight", "token_embd.weight", 0},
        {"head.weight", "output.weight", 0},
        {"layers.2.attn.wq_b.weight", "blk.2.attn_q_b.weight", 0},
        {"layers.3.ffn.experts.7.w2.weight", "blk.3.ffn_down_exps.weight", 7},
        {"layers.4.ffn.experts.15.w1.weight", "blk.4.ffn_gate_exps.weight", 15},
        {"layers.0.ffn.shared_experts.w3.weight", "blk.0.ffn_up_shexp.weight", 0},
        {"layers.2.attn.indexer.compressor.ape", "blk.2.indexer_compressor_ape.weight", 0},
        {"hc_head_fn", "output_hc_fn.weight", 0},
        {"layers.1.hc_ffn_base", "blk.1.hc_ffn_base.weight", 0},
        {"norm.weight", "output_norm.weight", 0},
        {"layers.3.ffn.gate.bias", "blk.3.exp_probs_b.bias", 0},
    };
    for (size_t p = 0; p < sizeof pairs / sizeof *pairs; p++) {
        const ds4_st_tensor *s = ds4_st_find(st, pairs[p].hf);
        const gguf_tensor *t = gguf_find_tensor(g, pairs[p].gg);
        CHECKF(s && t, "%s", pairs[p].hf);
        if (!s || !t) continue;
        CHECK_EQ_INT(t->type, DS4_TYPE_F32);
        const float *out = (const float *)t->data + (size_t)pairs[p].slice * (size_t)s->n_elem;
        int bad = 0;
        for (int64_t i = 0; i < s->n_elem; i++) {
            float want = s->dtype == DS4_ST_BF16 ? bf16_ref(s->data + 2 * i) : bits_f32(s->data + 4 * i);
            if (memcmp(&want, &out[i], 4)) bad++;
        }
        CHECKF(bad == 0, "%s: %d values differ", pairs[p].hf, bad);
        /* bf16 recipe keeps BF16 matrices bit for bit */
        const gguf_tensor *tb = gguf_find_tensor(gb, pairs[p].gg);
        if (tb && tb->type == DS4_TYPE_BF16 && s->dtype == DS4_ST_BF16)
            CHECKF(!memcmp((const uint8_t *)tb->data + (size_t)pairs[p].slice * s->nbytes, s->data, s->nbytes), "%s bf16",
                   pairs[p].hf);
    }
    /* tid2eid: I64 [V, k] → I32 ne {k, V} */
    const ds4_st_tensor *s = ds4_st_find(st, "layers.1.ffn.gate.tid2eid");
    const gguf_tensor *t = gguf_find_tensor(g, "blk.1.ffn_gate_tid2eid.weight");
    CHECK(s && t && t->type == DS4_TYPE_I32 && t->ne[0] == 3 && t->ne[1] == 2048);
    if (s && t) {
        int bad = 0;
        for (int64_t i = 0; i < s->n_elem; i++) {
            int64_t v;
            memcpy(&v, s->data + 8 * i, 8);
            bad += ((const int32_t *)t->data)[i] != (int32_t)v;
        }
        CHECK_EQ_INT(bad, 0);
    }
    gguf_close(g);
    gguf_close(gb);
    ds4_st_close(st);
}

/* FP8 E4M3 weights with 128x128 E8M0 block scales, and FP4 experts. */
TEST(convert_fp8_fp4) {
    /* wq_b [512, 64]: 4 row blocks; hc_attn_fn [24, 512]: 4 column blocks. */
    static uint8_t q1[512 * 64], s1[4], q2[24 * 512], s2[4], f4[64 * 64], f4s[64 * 4];
    const uint8_t sc1[4] = {127, 0, 130, 120}, sc2[4] = {126, 127, 0, 140};
    for (int i = 0; i < 512 * 64; i++) q1[i] = (uint8_t)(i * 37 + (i >> 6) * 11);
    for (int i = 0; i < 24 * 512; i++) q2[i] = (uint8_t)(i * 53 + 5);
    memcpy(s1, sc1, 4);
    memcpy(s2, sc2, 4);
    for (int i = 0; i < 64 * 64; i++) f4[i] = (uint8_t)(i * 29 + 3);
    for (int i = 0; i < 64 * 4; i++) f4s[i] = (uint8_t)(120 + i % 14);
    f4s[5] = 0;
    ent r[] = {
        {"layers.2.attn.wq_b.weight", "F8_E4M3", 2, {512, 64}, q1, sizeof q1},
        {"layers.2.attn.wq_b.scale", "F8_E8M0", 2, {4, 1}, s1, sizeof s1},
        {"layers.0.hc_attn_fn", "F8_E4M3", 2, {24, 512}, q2, sizeof q2},
        {"layers.0.hc_attn_fn.scale", "F8_E8M0", 2, {1, 4}, s2, sizeof s2},
        {"layers.1.ffn.experts.3.w1.weight", "I8", 2, {64, 64}, f4, sizeof f4},
        {"layers.1.ffn.experts.3.w1.scale", "F8_E8M0", 2, {64, 4}, f4s, sizeof f4s},
    };
    char *dir = tmp_path("fp8");
    make_variant(dir, r, 6, NULL, NULL);
    ds4_err err = {{0}};
    int rc = convert_to(dir, tmp_path("fp8.gguf"), "f32", &err);
    CHECKF(rc == 0, "%s", err.msg);
    if (rc) return;
    gguf_file *g = gguf_open(tmp_path("fp8.gguf"), &err);
    CHECK(g);
    if (!g) return;
    const gguf_tensor *t = gguf_find_tensor(g, "blk.2.attn_q_b.weight");
    int bad = 0, zero_scale_seen = 0;
    for (int o = 0; o < 512; o++)
        for (int i = 0; i < 64; i++) {
            double want = fp8_ref(q1[o * 64 + i]) * e8m0_ref(s1[o / 128]);
            float got = ((const float *)t->data)[o * 64 + i];
            bad += got != (float)want;
            zero_scale_seen += o / 128 == 1 && want != 0;
        }
    CHECKF(bad == 0, "wq_b: %d values differ", bad);
    CHECK(zero_scale_seen > 0);
    /* e8m0 b = 0 is 2^-127 (a denormal), not zero */
    CHECK(((const float *)t->data)[128 * 64 + 1] != 0 || fp8_ref(q1[128 * 64 + 1]) == 0);
    t = gguf_find_tensor(g, "blk.0.hc_attn_fn.weight");
    bad = 0;
    for (int o = 0; o < 24; o++)
        for (int i = 0; i < 512; i++)
            bad += ((const float *)t->data)[o * 512 + i] != (float)(fp8_ref(q2[o * 512 + i]) * e8m0_ref(s2[i / 128]));
    CHECKF(bad == 0, "hc_attn_fn: %d values differ", bad);
    /* spot values across the 128-column boundary */
    CHECK(((const float *)t->data)[127] == (float)(fp8_ref(q2[127]) * 0.5));
    CHECK(((const float *)t->data)[128] == (float)fp8_ref(q2[128]));
    t = gguf_find_tensor(g, "blk.1.ffn_gate_exps.weight");
    const float *e3 = (const float *)t->data + 3 * 64 * 128;
    bad = 0;
    for (int o = 0; o < 64; o++)
        for (int i = 0; i < 128; i++) {
            uint8_t b = f4[o * 64 + i / 2], nib = i & 1 ? b >> 4 : b & 15;
            bad += e3[o * 128 + i] != (float)(fp4_ref(nib) * e8m0_ref(f4s[o * 4 + i / 32]));
        }
    CHECKF(bad == 0, "fp4 expert: %d values differ", bad);
    /* nibble order: element 0 = low nibble of byte 0 (0x03 → 1.5 · 2^(120-127)) */
    CHECK(e3[0] == (float)(1.5 * ldexp(1, -7)));
    CHECK(e3[1] == 0.0f); /* high nibble 0 */
    gguf_close(g);
}

static void expect_error(const char *tag, const char *dir, const char *needle) {
    ds4_err err = {{0}};
    char out[64];
    snprintf(out, sizeof out, "err-%s.gguf", tag);
    int rc = convert_to(dir, tmp_path(out), "q8_0", &err);
    CHECKF(rc != 0, "%s: converted", tag);
    CHECK_STR_CONTAINS(err.msg, needle);
    struct stat sb;
    CHECKF(stat(tmp_path(out), &sb) != 0, "%s: output left behind", tag);
}

TEST(convert_errors) {
    static uint8_t junk[16];
    ent extra = {"layers.0.attn.mystery.weight", "BF16", 1, {8}, junk, 16};
    make_variant(tmp_path("unknown"), &extra, 1, NULL, NULL);
    expect_error("unknown", tmp_path("unknown"), "unknown tensor name 'layers.0.attn.mystery.weight'");

    static uint8_t w[64 * 127 * 2];
    ent bad = {"layers.0.attn.wq_a.weight", "BF16", 2, {64, 127}, w, sizeof w};
    make_variant(tmp_path("shape"), &bad, 1, NULL, NULL);
    expect_error("shape", tmp_path("shape"), "tensor 'layers.0.attn.wq_a.weight': expected shape [64, 128], found [64, 127]");

    make_variant(tmp_path("missing"), NULL, 0, "layers.4.ffn.experts.9.w3.weight", NULL);
    expect_error("missing", tmp_path("missing"), "layers.4.ffn.experts.9.w3.weight");

    static uint8_t fp8[64 * 128];
    ent noscale = {"layers.0.attn.wq_a.weight", "F8_E4M3", 2, {64, 128}, fp8, sizeof fp8};
    make_variant(tmp_path("noscale"), &noscale, 1, NULL, NULL);
    expect_error("noscale", tmp_path("noscale"), "scale 'layers.0.attn.wq_a.scale' is missing");

    static int64_t ids[2048 * 3];
    ids[100] = 16; /* n_routed_experts is 16 */
    ent badid = {"layers.0.ffn.gate.tid2eid", "I64", 2, {2048, 3}, ids, sizeof ids};
    make_variant(tmp_path("badid"), &badid, 1, NULL, NULL);
    expect_error("badid", tmp_path("badid"), "expert id 16");

    /* truncated file: header intact, data cut */
    make_variant(tmp_path("trunc"), NULL, 0, NULL, NULL);
    char p[1024];
    snprintf(p, sizeof p, "%s/model.safetensors", tmp_path("trunc"));
    struct stat sb;
    stat(p, &sb);
    CHECK(truncate(p, sb.st_size / 2) == 0);
    expect_error("trunc", tmp_path("trunc"), "past end of data section");
    CHECK(truncate(p, 5) == 0);
    expect_error("trunc5", tmp_path("trunc"), "truncated safetensors file");
    CHECK(truncate(p, 1000) == 0);
    expect_error("trunc1000", tmp_path("trunc"), "truncated safetensors file");

    char *cfg = config_edit("\"hidden_size\": 128,", "");
    make_variant(tmp_path("nokey"), NULL, 0, NULL, cfg);
    expect_error("nokey", tmp_path("nokey"), "missing key 'hidden_size'");
    free(cfg);

    cfg = config_edit("\"o_groups\": 4", "\"o_groups\": 3");
    make_variant(tmp_path("groups"), NULL, 0, NULL, cfg);
    expect_error("groups", tmp_path("groups"), "num_attention_heads (8) is not divisible by o_groups (3)");
    free(cfg);

    cfg = config_edit("\"num_hash_layers\": 3", "\"num_hash_layers\": 2");
    make_variant(tmp_path("hash"), NULL, 0, NULL, cfg);
    expect_error("hash", tmp_path("hash"), "'num_hash_layers' (2) disagrees with 'mlp_layer_types'");
    free(cfg);

    cfg = config_edit("\"sqrtsoftplus\"", "\"sigmoid\"");
    make_variant(tmp_path("scoring"), NULL, 0, NULL, cfg);
    expect_error("scoring", tmp_path("scoring"), "'scoring_func' is 'sigmoid'");
    free(cfg);

    ds4_err err = {{0}};
    CHECK(convert_to(tinyb(), tmp_path("x.gguf"), "q3", &err) != 0);
    CHECK_STR_CONTAINS(err.msg, "unknown recipe 'q3'");
}

/* Sharded checkpoint through model.safetensors.index.json. */
TEST(safetensors_sharded) {
    ds4_err err;
    ds4_st *st = ds4_st_open(tinyb(), &err);
    CHECK(st);
    if (!st) return;
    char *dir = tmp_path("sharded");
    mkdir(dir, 0755);
    int n = ds4_st_count(st);
    ent *e = calloc((size_t)n, sizeof *e);
    char idx[1 << 16];
    size_t len = (size_t)snprintf(idx, sizeof idx, "{\"metadata\":{},\"weight_map\":{");
    for (int i = 0; i < n; i++) {
        const ds4_st_tensor *t = ds4_st_at(st, i);
        snprintf(e[i].name, sizeof e[i].name, "%s", t->name);
        e[i].dtype = ds4_st_dtype_name(t->dtype);
        e[i].nd = t->n_dims;
        memcpy(e[i].shape, t->shape, sizeof(int64_t) * (size_t)t->n_dims);
        e[i].data = t->data;
        e[i].nbytes = t->nbytes;
        len += (size_t)snprintf(idx + len, sizeof idx - len, "%s\"%s\":\"model-0000%d-of-00002.safetensors\"",
                                i ? "," : "", t->name, i < n / 2 ? 1 : 2);
    }
    len += (size_t)snprintf(idx + len, sizeof idx - len, "}}");
    char p[1024];
    snprintf(p, sizeof p, "%s/model-00001-of-00002.safetensors", dir);
    write_safetensors(p, e, n / 2);
    snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", dir);
    write_safetensors(p, e + n / 2, n - n / 2);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    write_text(p, idx, len);
    char src[1100];
    snprintf(src, sizeof src, "%s/config.json", tinyb());
    char *cfg = read_text(src, &len);
    snprintf(p, sizeof p, "%s/config.json", dir);
    write_text(p, cfg, len);
    free(cfg);
    ds4_st *sh = ds4_st_open(dir, &err);
    CHECKF(sh, "%s", err.msg);
    if (sh) {
        CHECK_EQ_INT(ds4_st_count(sh), n);
        const ds4_st_tensor *a = ds4_st_find(sh, "layers.4.ffn.experts.15.w2.weight");
        const ds4_st_tensor *b = ds4_st_find(st, "layers.4.ffn.experts.15.w2.weight");
        CHECK(a && b && a->nbytes == b->nbytes && !memcmp(a->data, b->data, a->nbytes));
        ds4_st_close(sh);
    }
    int rc = convert_to(dir, tmp_path("sharded.gguf"), "f32", &err);
    CHECKF(rc == 0, "%s", err.msg);
    /* identical to the single-file conversion except general.name */
    gguf_file *g1 = gguf_open(tmp_path("sharded.gguf"), &err), *g2 = gguf_open(tmp_path("tinyb-f32.gguf"), &err);
    CHECK(g1 && g2);
    if (g1 && g2) {
        int diff = 0;
        for (int64_t i = 0; i < gguf_n_tensors(g2); i++) {
            const gguf_tensor *t2 = gguf_tensor_at(g2, i);
            char nm[128];
            const gguf_tensor *t1 = gguf_find_tensor(g1, gguf_str_copy(t2->name, nm, sizeof nm));
            diff += !t1 || t1->nbytes != t2->nbytes || memcmp(t1->data, t2->data, t1->nbytes);
        }
        CHECK_EQ_INT(diff, 0);
    }
    if (g1) gguf_close(g1);
    if (g2) gguf_close(g2);
    /* an index naming a tensor the shard lacks */
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    char *bad = malloc(len = strlen(idx) + 64);
    snprintf(bad, len, "{\"weight_map\":{\"ghost.weight\":\"model-00001-of-00002.safetensors\",%s", idx + strlen("{\"metadata\":{},\"weight_map\":{"));
    write_text(p, bad, strlen(bad));
    free(bad);
    sh = ds4_st_open(dir, &err);
    CHECK(!sh);
    if (!sh) CHECK_STR_CONTAINS(err.msg, "'ghost.weight'");
    else ds4_st_close(sh);
    free(e);
    ds4_st_close(st);
}

static uint8_t *slurp(const char *p, size_t *n) { return (uint8_t *)read_text(p, n); }

TEST(mkmodel_tiny) {
    ds4_hparams hp;
    ds4_err err = {{0}};
    CHECK(ds4_mkmodel_preset("tiny", &hp, &err) == 0);
    ds4_mkmodel_opts o = {0};
    o.seed = 42;
    o.n_threads = 2;
    CHECKF(ds4_mkmodel(tmp_path("mk1.gguf"), &hp, &o, NULL, &err) == 0, "%s", err.msg);
    o.n_threads = 1; /* thread count must not matter */
    CHECKF(ds4_mkmodel(tmp_path("mk2.gguf"), &hp, &o, NULL, &err) == 0, "%s", err.msg);
    o.seed = 43;
    CHECKF(ds4_mkmodel(tmp_path("mk3.gguf"), &hp, &o, NULL, &err) == 0, "%s", err.msg);
    size_t n1, n2, n3;
    uint8_t *a = slurp(tmp_path("mk1.gguf"), &n1), *b = slurp(tmp_path("mk2.gguf"), &n2), *c = slurp(tmp_path("mk3.gguf"), &n3);
    CHECK(a && b && c);
    if (a && b && c) {
        CHECK(n1 == n2 && !memcmp(a, b, n1));
        CHECK(n1 == n3 && memcmp(a, c, n1));
    }
    free(a); free(b); free(c);
    ds4_model *m = ds4_model_load(tmp_path("mk1.gguf"), &err);
    CHECKF(m, "%s", err.msg);
    if (m) {
        CHECK_EQ_INT(m->hp.n_layer, 5);
        CHECK_EQ_INT(m->hp.compress[3], 128);
        /* tid2eid rows: distinct valid ids */
        int bad = 0;
        for (int t = 0; t < 2048; t++) {
            const int32_t *r = m->layers[0].tid2eid + t * 3;
            bad += r[0] < 0 || r[0] >= 16 || r[1] < 0 || r[1] >= 16 || r[2] < 0 || r[2] >= 16 || r[0] == r[1] ||
                   r[0] == r[2] || r[1] == r[2];
        }
        CHECK_EQ_INT(bad, 0);
        /* scales: norms near 1, matrices ~ 1/sqrt(in) */
        CHECK(fabsf(m->layers[1].attn_norm[0] - 1.0f) < 0.5f);
        float d[128], ss = 0;
        ds4_type_traits_get(m->layers[2].q_a.type)->to_float(m->layers[2].q_a.data, d, 128);
        for (int i = 0; i < 128; i++) ss += d[i] * d[i];
        CHECK(ss / 128 > 0.5f / 128 && ss / 128 < 2.0f / 128);
        ds4_model_free(m);
    }
    /* other recipes and an MTP block also load */
    const char *recipes[] = {"q2", "bf16"};
    for (int r = 0; r < 2; r++) {
        ds4_hparams h2 = hp;
        h2.n_mtp = r;
        o.recipe = recipes[r];
        CHECKF(ds4_mkmodel(tmp_path("mk4.gguf"), &h2, &o, NULL, &err) == 0, "%s", err.msg);
        m = ds4_model_load(tmp_path("mk4.gguf"), &err);
        CHECKF(m, "%s: %s", recipes[r], err.msg);
        if (m) {
            CHECK(m->has_mtp == (r == 1));
            ds4_model_free(m);
        }
    }
}

TEST(mkmodel_small_shape) {
    /* small preset: every matrix row a multiple of 256 so q2 really applies */
    ds4_hparams hp;
    CHECK(ds4_mkmodel_preset("small", &hp, NULL) == 0);
    ds4_tensor_spec *sc;
    int n = ds4_schema_build(&hp, &sc, NULL);
    CHECK(n > 0);
    for (int i = 0; i < n; i++)
        if (sc[i].role == DS4_ROLE_EXP_GATEUP || sc[i].role == DS4_ROLE_EXP_DOWN)
            CHECKF(ds4_recipe_type("q2", sc[i].role, sc[i].ne[0]) != DS4_TYPE_Q8_0, "%s", sc[i].name);
        else if (sc[i].role == DS4_ROLE_DENSE || sc[i].role == DS4_ROLE_SHARED)
            CHECKF(sc[i].ne[0] % 256 == 0, "%s", sc[i].name);
    free(sc);
    CHECK(ds4_mkmodel_preset("huge", &hp, NULL) != 0);
}

TEST(mkmodel_tokenizer) {
    char tj[1024];
    snprintf(tj, sizeof tj, "%s/data/tokenizer/tokenizer.json", test_shared_dir());
    ds4_hparams hp;
    ds4_mkmodel_preset("tiny", &hp, NULL);
    hp.n_layer = 1; /* keep it quick: embeddings dominate at vocab 129280 */
    ds4_mkmodel_set_layers(&hp, 1);
    hp.n_hash = 1;
    ds4_mkmodel_opts o = {0};
    o.seed = 1;
    o.tokenizer_json = tj;
    ds4_err err = {{0}};
    int rc = ds4_mkmodel(tmp_path("mktok.gguf"), &hp, &o, NULL, &err);
    CHECKF(rc == 0, "%s", err.msg);
    if (rc) return;
    gguf_file *g = gguf_open(tmp_path("mktok.gguf"), &err);
    CHECK(g);
    if (!g) return;
    const gguf_kv *kv = gguf_find_kv(g, "tokenizer.ggml.tokens");
    CHECK(kv && kv->arr_n == 129280);
    uint32_t v = 0;
    CHECK(gguf_get_u32(g, "deepseek4.vocab_size", &v, NULL) == 0 && v == 129280);
    gguf_close(g);
    ds4_model *m = ds4_model_load(tmp_path("mktok.gguf"), &err);
    CHECKF(m, "%s", err.msg);
    if (m) ds4_model_free(m);
}

int main(void) {
    RUN(convert_tinyb_recipes);
    RUN(convert_tinyb_values);
    RUN(convert_fp8_fp4);
    RUN(convert_errors);
    RUN(safetensors_sharded);
    RUN(mkmodel_tiny);
    RUN(mkmodel_small_shape);
    RUN(mkmodel_tokenizer);
    TEST_END();
}
