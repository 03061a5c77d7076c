/* Engine tests beyond golden parity: QAT round trips and RoPE against
 * hand-computed values, session snapshot payloads (bitwise continuation,
 * corrupt payloads refused), quantized models (q8_0, q2) giving bitwise the
 * same logits in one prefill, in chunks and token by token, model-file validation (wrong shape, type,
 * architecture, missing tensor), and bad evaluation input. */
#include "test.h"

#include "convert/mkmodel.h"
#include "engine/engine.h"
#include "engine/ops.h"
#include "gguf/gguf.h"
#include "model/model.h"
#include "quant/idx8.h"
#include "quant/quant.h"
#include "quant/simd.h"

static char tiny_path[512];

static const char *tiny_model(void) {
    if (tiny_path[0]) return tiny_path;
    snprintf(tiny_path, sizeof tiny_path, "%s/tiny.gguf", test_tmpdir());
    ds4_hparams hp;
    ds4_err err = {{0}};
    if (ds4_mkmodel_preset("tiny", &hp, &err)) { fprintf(stderr, "%s\n", err.msg); exit(2); }
    hp.n_mtp = 0;
    hp.idx_topk = 8; /* small top-k so the indexer selects within a short test */
    ds4_mkmodel_opts o = {.recipe = "f32", .seed = 7};
    if (ds4_mkmodel(tiny_path, &hp, &o, NULL, &err)) { fprintf(stderr, "mkmodel: %s\n", err.msg); exit(2); }
    return tiny_path;
}

TEST(fp8_roundtrip_hand_values) {
    float x[64] = {1.0f, 0.3f, -0.3f, 0.0f, 1e-3f};
    ds4_fp8_roundtrip(x, 64);
    /* amax 1 → scale 2^ceil(log2(1/448)) = 2^-8; 0.3·256 = 76.8 → E4M3 grid step 8 in [64,128) → 80 */
    CHECK_NEAR(x[0], 1.0, 0);
    CHECK_NEAR(x[1], 80.0 / 256, 0);
    CHECK_NEAR(x[2], -80.0 / 256, 0);
    CHECK_NEAR(x[3], 0.0, 0);
    /* 1e-3·256 = 0.256 → subnormal step 2^-9 = 0.001953: 0.256/0.001953 = 131.07 → but normal range
     * starts at 2^-6 = 0.015625; 0.256 is in [0.25, 0.5) with step 2^-5: 0.25 */
    CHECK_NEAR(x[4], 0.25 / 256, 0);
    /* a second block is scaled on its own: all zero → floor 1e-4, values stay 0 */
    float y[128] = {0};
    y[64] = 448.0f * 4;
    ds4_fp8_roundtrip(y, 128);
    CHECK_NEAR(y[64], 1792.0, 0);
    CHECK_NEAR(y[0], 0.0, 0);
}

TEST(fp4_roundtrip_hand_values) {
    float x[32] = {3.0f, 1.1f, 0.6f, 0.3f, 0.625f, -3.0f};
    ds4_fp4_roundtrip(x, 32);
    /* amax 3 → scale 2^ceil(log2(0.5)) = 0.5 → grid {0,.5,1,1.5,2,3,4,6}·0.5 */
    CHECK_NEAR(x[0], 3.0, 0);
    CHECK_NEAR(x[1], 1.0, 0);    /* 2.2 → 2 */
    CHECK_NEAR(x[2], 0.5, 0);    /* 1.2 → 1 */
    CHECK_NEAR(x[3], 0.25, 0);   /* 0.6 → 0.5 */
    CHECK_NEAR(x[4], 0.5, 0);    /* 1.25: tie between 1 (even code) and 1.5 → 1 */
    CHECK_NEAR(x[5], -3.0, 0);
}

TEST(hadamard_hand_values) {
    float x[4] = {1, 2, 3, 4};
    ds4_hadamard(x, 4); /* H4·x = [10,-2,-4,0], scaled by 1/2 */
    CHECK_NEAR(x[0], 5, 1e-6);
    CHECK_NEAR(x[1], -1, 1e-6);
    CHECK_NEAR(x[2], -2, 1e-6);
    CHECK_NEAR(x[3], 0, 1e-6);
    float y[128], z[128];
    for (int i = 0; i < 128; i++) y[i] = z[i] = (float)(i % 7) - 3;
    ds4_hadamard(y, 128);
    ds4_hadamard(y, 128); /* orthonormal and symmetric: twice is the identity */
    for (int i = 0; i < 128; i++) CHECK_NEAR(y[i], z[i], 1e-5);
}

/* ds4_topk against the definition (i is kept iff fewer than k scores rank
 * above it: larger, or equal at a lower index), on random scores drawn from
 * a few values (many ties, ±0, ±inf, huge and tiny magnitudes) or spread
 * out, with n < k, n == k, k == 1, k == n - 1, k = n/2 cutting through ±0
 * ties, and big n. */
static uint64_t topk_rng = 12345;
static uint32_t topk_next(void) {
    topk_rng ^= topk_rng << 13; topk_rng ^= topk_rng >> 7; topk_rng ^= topk_rng << 17;
    return (uint32_t)(topk_rng >> 32);
}

TEST(topk) {
    static const float pool[] = {0.0f, -0.0f, 1.0f, -1.0f, 2.5f, 1e-30f, -1e-30f, 1e30f, -1e30f,
                                 INFINITY, -INFINITY, 1.0000001f, 0x1p-149f, -0x1p-149f};
    static const int sizes[][2] = {{1, 1}, {5, 8}, {8, 8}, {9, 8}, {100, 1}, {100, 99}, {300, 128},
                                   {2048, 128}, {5000, 512}, {3000, 2999}};
    int npool = (int)(sizeof pool / sizeof *pool);
    for (int c = 0; c < 10; c++)
        for (int mode = 0; mode < 5; mode++) {
            int n = sizes[c][0], k = mode == 4 && n > 1 ? n / 2 : sizes[c][1];
            float *sc = malloc(sizeof(float) * n);
            int32_t *out = malloc(sizeof(int32_t) * (k + 1)), *want = malloc(sizeof(int32_t) * (k + 1));
            for (int i = 0; i < n; i++) {
                uint32_t r = topk_next();
                if (mode == 0) sc[i] = pool[r % (uint32_t)npool];       /* few values: ties everywhere */
                else if (mode == 1) sc[i] = (float)(r % 7) - 3.0f;     /* ties, negatives */
                else if (mode == 2) sc[i] = ((float)r - 2147483648.0f) * 0x1p-20f; /* spread */
                else if (mode == 3) sc[i] = (float)i * 0.5f;           /* ascending: each row evicts */
                else sc[i] = (const float[]){-0.0f, 0.0f, 1.0f, -1.0f}[r % 4]; /* threshold at ±0 */
            }
            int nw = 0;
            for (int i = 0; i < n; i++) {
                int above = 0;
                for (int j = 0; j < n && above < k; j++)
                    above += sc[j] > sc[i] || (sc[j] == sc[i] && j < i);
                if (above < k) want[nw++] = i;
            }
            uint32_t *scratch = malloc(sizeof(uint32_t) * n);
            int m = ds4_topk(sc, n, k, out, scratch);
            free(scratch);
            CHECKF(m == nw && memcmp(out, want, sizeof(int32_t) * (size_t)nw) == 0,
                   "topk n=%d k=%d mode=%d: %d vs %d rows", n, k, mode, m, nw);
            free(sc); free(out); free(want);
        }
    int32_t one[1];
    uint32_t scr[1];
    CHECK(ds4_topk((const float[]){1.0f}, 1, 0, one, scr) == 0);
}

/* The router's top-k against k rounds of first-max picking (the rule it
 * replaces), with ties, ±0, ±inf and a bias; NaN ranks after the numbers. */
TEST(topk_sorted) {
    static const float pool[] = {0.0f, -0.0f, 1.0f, -1.0f, 2.5f, 1e-30f, INFINITY, -INFINITY, 1.0000001f, 3.0f};
    int npool = (int)(sizeof pool / sizeof *pool);
    for (int rep = 0; rep < 200; rep++) {
        int n = 1 + (int)(topk_next() % 70), k = 1 + (int)(topk_next() % (uint32_t)n);
        float sc[70], bias[70], vals[70], v[70];
        int32_t ids[70], want[70];
        for (int i = 0; i < n; i++) {
            sc[i] = rep % 3 == 2 ? (float)(topk_next() % 1000) * 0.01f : pool[topk_next() % (uint32_t)npool];
            bias[i] = rep % 2 ? (float)(topk_next() % 3) : 0.0f;
            v[i] = sc[i] + bias[i];
        }
        for (int r = 0; r < k; r++) { /* the old selection */
            int best = -1;
            for (int i = 0; i < n; i++) {
                bool used = false;
                for (int q = 0; q < r; q++) used |= want[q] == i;
                if (!used && (best < 0 || v[i] > v[best])) best = i;
            }
            want[r] = best;
        }
        int m = ds4_topk_sorted(sc, rep % 2 ? bias : NULL, n, k, ids, vals);
        CHECKF(m == k && memcmp(ids, want, sizeof(int32_t) * (size_t)k) == 0, "rep %d n=%d k=%d", rep, n, k);
        for (int r = 0; r < m; r++) CHECK(vals[r] == v[ids[r]]);
    }
    const float nan[4] = {NAN, 1.0f, NAN, 2.0f};
    int32_t ids[4];
    float vals[4];
    CHECK(ds4_topk_sorted(nan, NULL, 4, 3, ids, vals) == 3);
    CHECK(ids[0] == 3 && ids[1] == 1 && ids[2] == 0);
    CHECK(ds4_topk_sorted(nan, NULL, 4, 0, ids, vals) == 0);
}

TEST(rope_tables) {
    /* Flash: pairs i <= 15 keep their frequency, i >= 25 are divided by 16 (MODEL.md §2.1). */
    float plain[32], yarn[32];
    ds4_rope_freqs(plain, 64, 160000.0f, 1.0f, 0, 0, 0);
    ds4_rope_freqs(yarn, 64, 160000.0f, 16.0f, 65536, 32, 1);
    for (int i = 0; i < 32; i++) {
        if (i <= 15) CHECK_NEAR(yarn[i], plain[i], plain[i] * 1e-6);
        if (i >= 25) CHECK_NEAR(yarn[i], plain[i] / 16, plain[i] * 1e-6);
        if (i > 15 && i < 25) CHECK(yarn[i] < plain[i] && yarn[i] > plain[i] / 16);
    }
    CHECK_NEAR(plain[1], powf(160000.0f, -2.0f / 64), 1e-9);
    /* rotation then inverse rotation is the identity; position 0 is the identity */
    float v[8] = {1, 2, 3, 4, 5, 6, 7, 8}, w[8];
    memcpy(w, v, sizeof v);
    ds4_rope(w, 8, 4, plain, 0, 1);
    for (int i = 0; i < 8; i++) CHECK_NEAR(w[i], v[i], 0);
    ds4_rope(w, 8, 4, plain, 1234, 1);
    CHECK(fabsf(w[4] - v[4]) > 1e-3 && w[0] == v[0]); /* only the tail moves */
    ds4_rope(w, 8, 4, plain, 1234, -1);
    for (int i = 0; i < 8; i++) CHECK_NEAR(w[i], v[i], 1e-4);
}

/* In-memory byte sink/source for payloads. */
typedef struct { unsigned char *p; size_t n, cap, off; } membuf;

static int mem_write(void *ud, const void *b, size_t n) {
    membuf *m = ud;
    if (m->n + n > m->cap) {
        size_t cap = (m->n + n) * 2;
        unsigned char *p = realloc(m->p, cap);
        if (!p) return -1;
        m->p = p;
        m->cap = cap;
    }
    memcpy(m->p + m->n, b, n);
    m->n += n;
    return 0;
}

static int mem_read(void *ud, void *b, size_t n) {
    membuf *m = ud;
    if (m->off + n > m->n) return -1;
    memcpy(b, m->p + m->off, n);
    m->off += n;
    return 0;
}

/* Quantized recipes go through the panel GEMM kernels in batches of >= 4
 * tokens and through the matvec kernels one token at a time: all logits of
 * one prefill, of chunks of 17 (panel tails) and of token-by-token decode
 * must still be bitwise equal.  Shapes are multiples of 256 so the q2
 * recipe really stores IQ2_XXS and Q2_K experts (tiny's 128 falls back to
 * Q8_0). */
TEST(quantized_batches_bitwise) {
    /* head dim 12: neither a multiple nor a divisor of the panel kernel's
     * 16-row step (q_b's per-head epilogue must still see whole heads) */
    const char *recipes[] = { "q8_0", "q2", "q8_0" };
    const uint32_t head_dims[] = { 0, 0, 12 };
    for (int ri = 0; ri < 3; ri++) {
        char path[1100];
        snprintf(path, sizeof path, "%s/quant-%s.gguf", test_tmpdir(), recipes[ri]);
        ds4_hparams hp;
        ds4_err err = {{0}};
        CHECK(ds4_mkmodel_preset("tiny", &hp, &err) == 0);
        hp.n_mtp = 0;
        hp.n_embd = 256;
        hp.expert_ff = 256;
        hp.idx_topk = 8;
        if (head_dims[ri]) { hp.head_dim = head_dims[ri]; hp.rope_dim = 8; }
        ds4_mkmodel_opts mo = {.recipe = recipes[ri], .seed = 11};
        CHECKF(ds4_mkmodel(path, &hp, &mo, NULL, &err) == 0, "%s", err.msg);
        ds4_model *m = ds4_model_load(path, &err);
        CHECKF(m != NULL, "%s", err.msg);
        if (!m) continue;
        if (ri == 1) CHECK(m->layers[0].down_exps.type == DS4_TYPE_Q2_K &&
                           m->layers[0].gate_exps.type == DS4_TYPE_IQ2_XXS);
        ds4_engine_opts o;
        ds4_engine_opts_default(&o);
        o.ctx_max = 512;
        o.n_threads = 2;
        /* > 2·128: ratio-128 compressor blocks complete inside batches and
         * across batch edges (chunks of 17, decode) */
        enum { N = 300 };
        int32_t toks[N];
        for (int i = 0; i < N; i++) toks[i] = (i * 53 + 5) % (int)m->hp.n_vocab;
        size_t V = m->hp.n_vocab;
        float *one = malloc(V * N * sizeof(float)), *chunk = malloc(V * N * sizeof(float));
        float *dec = malloc(V * N * sizeof(float));
        ds4_session *a = ds4_session_new(m, &o, NULL, &err), *b = ds4_session_new(m, &o, NULL, &err),
                    *c = ds4_session_new(m, &o, NULL, &err);
        CHECK(a && b && c && one && chunk && dec);
        if (a && b && c && one && chunk && dec) {
            CHECK(ds4_session_eval(a, toks, N, DS4_LOGITS_ALL, one, &err) == 0);
            for (int i = 0; i < N; i += 17) {
                int k = N - i < 17 ? N - i : 17;
                CHECK(ds4_session_eval(b, toks + i, k, DS4_LOGITS_ALL, chunk + (size_t)i * V, &err) == 0);
            }
            for (int i = 0; i < N; i++)
                CHECK(ds4_session_eval(c, toks + i, 1, DS4_LOGITS_ALL, dec + (size_t)i * V, &err) == 0);
            CHECKF(memcmp(one, chunk, V * N * sizeof(float)) == 0, "%s: chunks of 17 differ from one prefill",
                   recipes[ri]);
            CHECKF(memcmp(one, dec, V * N * sizeof(float)) == 0, "%s: decode differs from prefill", recipes[ri]);
            /* the whole state, compressor frontiers included, is the same
             * however the tokens were batched */
            membuf pa = {0}, pb = {0}, pc = {0};
            CHECK(ds4_session_payload_save(a, toks, NULL, mem_write, &pa, &err) == 0);
            CHECK(ds4_session_payload_save(b, toks, NULL, mem_write, &pb, &err) == 0);
            CHECK(ds4_session_payload_save(c, toks, NULL, mem_write, &pc, &err) == 0);
            CHECK(pa.n == pb.n && pa.n == pc.n);
            CHECKF(pa.n == pb.n && memcmp(pa.p, pb.p, pa.n) == 0, "%s: chunked state differs", recipes[ri]);
            CHECKF(pa.n == pc.n && memcmp(pa.p, pc.p, pa.n) == 0, "%s: decoded state differs", recipes[ri]);
            free(pb.p); free(pc.p);
            /* Only the last logits asked for: the last layer then runs whole
             * only for the last token (run_batch's keep), in one prefill and
             * in chunks of 17 (the earlier ones asking for none); the same
             * last logits and the same state. */
            enum ds4_logits earlier[] = { DS4_LOGITS_NONE, DS4_LOGITS_LAST };
            for (int e = 0; e < 2; e++) {
                float *last = malloc(V * sizeof(float));
                ds4_session *d = ds4_session_new(m, &o, NULL, &err), *f = ds4_session_new(m, &o, NULL, &err);
                CHECK(last && d && f);
                if (!last || !d || !f) { free(last); ds4_session_free(d); ds4_session_free(f); continue; }
                CHECK(ds4_session_eval(d, toks, N, DS4_LOGITS_LAST, last, &err) == 0);
                CHECKF(memcmp(last, one + (size_t)(N - 1) * V, V * sizeof(float)) == 0,
                       "%s: last logits of a LAST prefill differ", recipes[ri]);
                memset(last, 0, V * sizeof(float));
                for (int i = 0; i < N; i += 17) {
                    int k = N - i < 17 ? N - i : 17;
                    CHECK(ds4_session_eval(f, toks + i, k, i + k < N ? earlier[e] : DS4_LOGITS_LAST,
                                           i + k < N && e == 0 ? NULL : last, &err) == 0);
                }
                CHECKF(memcmp(last, one + (size_t)(N - 1) * V, V * sizeof(float)) == 0,
                       "%s: last logits of chunked LAST prefill differ", recipes[ri]);
                membuf pd = {0}, pf = {0};
                CHECK(ds4_session_payload_save(d, toks, NULL, mem_write, &pd, &err) == 0);
                CHECK(ds4_session_payload_save(f, toks, NULL, mem_write, &pf, &err) == 0);
                CHECKF(pa.n == pd.n && memcmp(pa.p, pd.p, pa.n) == 0, "%s: LAST prefill state differs", recipes[ri]);
                CHECKF(pa.n == pf.n && memcmp(pa.p, pf.p, pa.n) == 0, "%s: chunked LAST state differs", recipes[ri]);
                free(pd.p); free(pf.p); free(last);
                ds4_session_free(d);
                ds4_session_free(f);
            }
            free(pa.p);
        }
        ds4_session_free(a);
        ds4_session_free(b);
        ds4_session_free(c);
        free(one);
        free(chunk);
        free(dec);
        ds4_model_free(m);
        remove(path);
    }
}

/* Shapes no preset has: seeded random ones (heads, head and RoPE dims,
 * window, experts and their count per token, shared experts, HC streams,
 * indexer, layer count), one per recipe.  Each must load and, at every
 * SIMD level the CPU runs, give the same logits, bit for bit, in one
 * prefill, in chunks of 7, token by token and after a snapshot save and
 * restore; and, for the float recipes in the reference numerics, every
 * level must agree with the scalar one to rounding (2e-5 of the largest
 * logit; ~1e-6 measured).  Quantized recipes
 * are left out of that comparison: the levels' attention rounds
 * differently, and an activation's quantization can turn one ulp into one
 * quantum (the FP8 round trip of the model numerics makes exact ties). */
static uint32_t pick(uint64_t *r, const uint32_t *v, int n) {
    *r = *r * 6364136223846793005ull + 1442695040888963407ull;
    return v[(*r >> 33) % (uint64_t)n];
}
#define PICK(r, ...) pick(r, (const uint32_t[]){__VA_ARGS__}, (int)(sizeof((uint32_t[]){__VA_ARGS__}) / 4))

static float *shape_logits(ds4_model *m, const ds4_engine_opts *o, const int32_t *toks, int n, int step) {
    ds4_err err = {{0}};
    size_t V = m->hp.n_vocab;
    float *lg = malloc(V * (size_t)n * sizeof(float));
    ds4_session *s = ds4_session_new(m, o, NULL, &err);
    CHECKF(s != NULL, "%s", err.msg);
    int rc = !s || !lg;
    for (int i = 0; !rc && i < n; i += step) {
        int k = n - i < step ? n - i : step;
        rc = ds4_session_eval(s, toks + i, k, DS4_LOGITS_ALL, lg + (size_t)i * V, &err);
        CHECKF(rc == 0, "%s", err.msg);
    }
    ds4_session_free(s);
    if (rc) { free(lg); return NULL; }
    return lg;
}

/* A shape's bitwise invariants at the live level (random_shapes). */
static void shape_invariants(ds4_model *m, const ds4_engine_opts *o, const int32_t *toks, int N, const char *shape,
                             const char *lv) {
    ds4_err err = {{0}};
    size_t V = m->hp.n_vocab, bytes = V * (size_t)N * sizeof(float);
    float *one = shape_logits(m, o, toks, N, N), *chunk = shape_logits(m, o, toks, N, 7);
    float *dec = shape_logits(m, o, toks, N, 1);
    CHECKF(one && chunk && memcmp(one, chunk, bytes) == 0, "%s @%s: chunks of 7 differ from one prefill", shape, lv);
    CHECKF(one && dec && memcmp(one, dec, bytes) == 0, "%s @%s: decode differs from prefill", shape, lv);
    /* a session saved after K tokens and restored into another goes on
     * with the same logits as the one prefill */
    const int K = N * 3 / 4;
    float *lg = malloc(V * sizeof(float));
    ds4_session *a = ds4_session_new(m, o, NULL, &err), *b = ds4_session_new(m, o, NULL, &err);
    membuf buf = {0};
    int32_t *rt = NULL;
    uint32_t rn = 0;
    int ok = lg && a && b && ds4_session_eval(a, toks, K, DS4_LOGITS_LAST, lg, &err) == 0 &&
             ds4_session_payload_save(a, toks, lg, mem_write, &buf, &err) == 0 &&
             ds4_session_payload_load(b, mem_read, &buf, &rt, &rn, NULL, &err) == 0;
    CHECKF(ok && rn == (uint32_t)K, "%s @%s: snapshot: %s", shape, lv, err.msg);
    for (int i = K; ok && one && i < N; i++) {
        CHECK(ds4_session_eval(b, toks + i, 1, DS4_LOGITS_LAST, lg, &err) == 0);
        CHECKF(memcmp(lg, one + (size_t)i * V, V * sizeof(float)) == 0, "%s @%s: restored session differs at %d",
               shape, lv, i);
    }
    free(buf.p);
    free(rt);
    free(lg);
    ds4_session_free(a);
    ds4_session_free(b);
    free(one);
    free(chunk);
    free(dec);
}

TEST(random_shapes) {
    const char *recipes[] = { "f32", "f16", "bf16", "q8_0", "q2", "q4" };
    const char *live = ds4_simd_level();
    uint64_t r = 0x5eed5;
    for (int it = 0; it < 6; it++) {
        ds4_hparams hp;
        ds4_err err = {{0}};
        CHECK(ds4_mkmodel_preset("tiny", &hp, &err) == 0);
        hp.n_mtp = 0;
        hp.n_hash = PICK(&r, 0, 1, 2);
        ds4_mkmodel_set_layers(&hp, PICK(&r, 1, 2, 3, 4, 5));
        hp.n_embd = PICK(&r, 64, 192, 256);
        hp.n_vocab = PICK(&r, 300, 1000);
        hp.n_head = PICK(&r, 1, 2, 4, 8);
        hp.head_dim = PICK(&r, 16, 32, 96);
        hp.rope_dim = PICK(&r, 8, 16);
        hp.q_lora = PICK(&r, 32, 96);
        hp.o_groups = hp.n_head % 2 ? 1 : PICK(&r, 1, 2);
        hp.o_lora = PICK(&r, 16, 32);
        hp.window = PICK(&r, 4, 16, 128);
        hp.n_expert = PICK(&r, 4, 9, 16);
        hp.n_expert_used = 1 + PICK(&r, 0, 1, 2, 3) % hp.n_expert;
        hp.n_expert_shared = PICK(&r, 0, 1, 2);
        hp.expert_ff = PICK(&r, 32, 96);
        hp.idx_n_head = PICK(&r, 1, 4);
        hp.idx_head_dim = PICK(&r, 16, 32);
        hp.idx_topk = PICK(&r, 1, 4, 32);
        hp.hc_mult = PICK(&r, 1, 2, 3, 4);
        const char *recipe = recipes[it];
        if (it >= 4) hp.n_embd = hp.expert_ff = 256; /* rows the K-quants take (narrower ones fall back to Q8_0) */
        char path[1100], shape[300];
        snprintf(path, sizeof path, "%s/shape-%d.gguf", test_tmpdir(), it);
        snprintf(shape, sizeof shape,
                 "%s: layers %u embd %u heads %u x %u rope %u window %u experts %u/%u+%u ff %u idx %u x %u top %u hc %u",
                 recipe, hp.n_layer, hp.n_embd, hp.n_head, hp.head_dim, hp.rope_dim, hp.window, hp.n_expert_used,
                 hp.n_expert, hp.n_expert_shared, hp.expert_ff, hp.idx_n_head, hp.idx_head_dim, hp.idx_topk,
                 hp.hc_mult);
        printf("  %s\n", shape);
        ds4_mkmodel_opts mo = {.recipe = recipe, .seed = (uint64_t)(40 + it)};
        CHECKF(ds4_mkmodel(path, &hp, &mo, NULL, &err) == 0, "%s: %s", shape, err.msg);
        ds4_model *m = ds4_model_load(path, &err);
        CHECKF(m != NULL, "%s: %s", shape, err.msg);
        if (!m) continue;
        enum { N = 40 }; /* past every window above but 128; the ratio-4 layer's indexer selects */
        int32_t toks[N];
        for (int i = 0; i < N; i++) toks[i] = (int32_t)((i * 37 + it) % (int)hp.n_vocab);
        ds4_engine_opts o;
        ds4_engine_opts_default(&o);
        o.ctx_max = 64;
        o.n_threads = 2;
        /* every level this CPU runs: the invariants, and (float recipes)
         * the reference numerics against the scalar level's, computed first */
        size_t bytes = (size_t)hp.n_vocab * N * sizeof(float);
        float *ref = NULL;
        for (const char *const *lv = ds4_simd_levels(); *lv; lv++) {
            if (!ds4_simd_supported(*lv)) continue;
            CHECK(ds4_simd_force(*lv) == 0);
            o.numerics = DS4_NUMERICS_MODEL;
            shape_invariants(m, &o, toks, N, shape, *lv);
            if (it >= 3) continue;
            o.numerics = DS4_NUMERICS_REFERENCE;
            float *got = shape_logits(m, &o, toks, N, N);
            if (!strcmp(*lv, "scalar")) { ref = got; continue; }
            double err_max = 0, scale = 0;
            for (size_t i = 0; got && ref && i < bytes / sizeof(float); i++) {
                double e = fabs((double)got[i] - ref[i]), a = fabs((double)ref[i]);
                if (e > err_max) err_max = e;
                if (a > scale) scale = a;
            }
            CHECKF(got && ref && err_max <= 2e-5 * scale, "%s: %s vs scalar: max error %g of max |logit| %g", shape,
                   *lv, err_max, scale);
            free(got);
        }
        CHECK(ds4_simd_force(live) == 0);
        free(ref);
        ds4_model_free(m);
        remove(path);
    }
}

/* The tiny model, loaded, and session options for it: 512 positions, 2
 * threads.  NULL (after a failed check) if it does not load. */
static ds4_model *tiny_session_opts(ds4_engine_opts *o) {
    ds4_err err = {{0}};
    ds4_model *m = ds4_model_load(tiny_model(), &err);
    CHECKF(m != NULL, "%s", err.msg);
    ds4_engine_opts_default(o);
    o->ctx_max = 512;
    o->n_threads = 2;
    return m;
}

/* The int8 indexer (quant/idx8.h): where the live level has it, sessions
 * in the model numerics build the int8 row copies and score through them,
 * and their logits are bitwise those of sessions with it off (DS4_IDX8=0),
 * in one prefill and token by token, at a context where the indexer
 * selects (topk 8 of up to 75 rows). */
TEST(idx8_same_logits) {
    ds4_err err = {{0}};
    ds4_engine_opts o;
    ds4_model *m = tiny_session_opts(&o);
    if (!m) return;
    enum { N = 300 };
    int32_t toks[N];
    for (int i = 0; i < N; i++) toks[i] = (i * 41 + 3) % (int)m->hp.n_vocab;
    size_t V = m->hp.n_vocab;
    float *on = malloc(V * N * sizeof(float)), *off = malloc(V * N * sizeof(float));
    float *don = malloc(V * sizeof(float)), *doff = malloc(V * sizeof(float));
    ds4_session *a = ds4_session_new(m, &o, NULL, &err), *b = ds4_session_new(m, &o, NULL, &err);
    ds4_session *c = ds4_session_new(m, &o, NULL, &err), *d = ds4_session_new(m, &o, NULL, &err);
    CHECK(a && b && c && d && on && off && don && doff);
    if (a && b && c && d && on && off && don && doff) {
        unsetenv("DS4_IDX8");
        CHECK(ds4_session_eval(a, toks, N, DS4_LOGITS_ALL, on, &err) == 0);
        setenv("DS4_IDX8", "0", 1);
        CHECK(ds4_session_eval(b, toks, N, DS4_LOGITS_ALL, off, &err) == 0);
        CHECK(memcmp(on, off, V * N * sizeof(float)) == 0);
        bool same = true;
        for (int i = 0; i < N; i++) {
            unsetenv("DS4_IDX8");
            CHECK(ds4_session_eval(c, toks + i, 1, DS4_LOGITS_LAST, don, &err) == 0);
            setenv("DS4_IDX8", "0", 1);
            CHECK(ds4_session_eval(d, toks + i, 1, DS4_LOGITS_LAST, doff, &err) == 0);
            same = same && memcmp(don, doff, V * sizeof(float)) == 0 && memcmp(don, on + (size_t)i * V, V * sizeof(float)) == 0;
        }
        CHECKF(same, "decode through the int8 indexer differs");
        unsetenv("DS4_IDX8");
        /* which sessions built the int8 rows */
        bool have = ds4_vec_ops_live()->idx8 != NULL;
        int rows = 0, bad_rows = 0;
        for (uint32_t l = 0; l < m->hp.n_layer; l++) {
            if (m->layers[l].ratio != 4) continue;
            CHECK((a->ls[l].idx8 != NULL) == have && (c->ls[l].idx8 != NULL) == have);
            CHECK(b->ls[l].idx8 == NULL && d->ls[l].idx8 == NULL);
            if (!have) continue;
            CHECK(a->ls[l].n_idx8 == a->ls[l].n_idx && c->ls[l].n_idx8 == c->ls[l].n_idx && a->ls[l].n_idx > 8);
            /* the model's rows are FP4-exact: (nearly) all convert (a group's
             * meta starts with its count of rows that do not) */
            int dI = (int)m->hp.idx_head_dim, bad = 0;
            for (uint32_t g = 0; g * DS4_IDX8_ROWS < a->ls[l].n_idx; g++)
                bad += *(const int32_t *)(const void *)(a->ls[l].idx8 + g * ds4_idx8_group_bytes(dI) +
                                                        ds4_idx8_group_meta(dI));
            rows += a->ls[l].n_idx;
            bad_rows += bad;
        }
        if (have) CHECKF(bad_rows * 10 <= rows, "%d of %d indexer rows not int8-exact", bad_rows, rows);
        printf("  idx8 %s at level %s: %d of %d rows not int8-exact\n", have ? "on" : "absent", ds4_simd_level(),
               bad_rows, rows);
    }
    ds4_session_free(a);
    ds4_session_free(b);
    ds4_session_free(c);
    ds4_session_free(d);
    free(on); free(off); free(don); free(doff);
    ds4_model_free(m);
}

/* ds4_session_eval_stoppable stopped at each of its polls (before a batch,
 * between layers), then continued with ds4_session_eval, gives bitwise the
 * logits of one uninterrupted prefill: the interrupted batch is undone
 * exactly (the raw ring wraps, compressed blocks of both ratios complete and
 * the indexer selects within the 200 tokens), and the logits it leaves are
 * those of its last position. */
typedef struct { int polls, stop_at; } countdown;
static int stop_countdown(void *ud) {
    countdown *c = ud;
    return ++c->polls == c->stop_at;
}

TEST(stoppable_eval_undoes) {
    ds4_err err = {{0}};
    ds4_engine_opts o;
    ds4_model *m = tiny_session_opts(&o);
    if (!m) return;
    o.max_batch = 64;
    enum { N = 200 };
    int32_t toks[N];
    for (int i = 0; i < N; i++) toks[i] = (i * 53 + 7) % (int)m->hp.n_vocab;
    size_t V = m->hp.n_vocab;
    float *ref = malloc(V * sizeof(float)), *lg = malloc(V * sizeof(float)), *at = malloc(V * sizeof(float));
    ds4_session *s = ds4_session_new(m, &o, NULL, &err);
    CHECKF(s != NULL, "%s", err.msg);
    if (!s || !ref || !lg || !at) { ds4_session_free(s); free(ref); free(lg); free(at); ds4_model_free(m); return; }
    CHECK(ds4_session_eval(s, toks, N, DS4_LOGITS_LAST, ref, &err) == 0);
    /* never stopping: the same logits, and the number of polls */
    ds4_session_reset(s);
    countdown c = {0, -1};
    CHECK(ds4_session_eval_stoppable(s, toks, N, DS4_LOGITS_LAST, lg, stop_countdown, &c, &err) == 0);
    CHECK(memcmp(lg, ref, V * sizeof(float)) == 0);
    int polls = c.polls;
    CHECKF(polls == 4 * (int)m->hp.n_layer, "%d polls", polls); /* 4 batches: 1 + layers - 1 each */
    for (int k = 1; k <= polls; k++) {
        ds4_session_reset(s);
        c = (countdown){0, k};
        CHECK(ds4_session_eval_stoppable(s, toks, N, DS4_LOGITS_LAST, lg, stop_countdown, &c, &err) == 1);
        uint32_t pos = s->pos;
        CHECKF(pos % 64 == 0 && pos < N, "stop %d left %u tokens", k, pos);
        if (pos > 0) { /* the logits left are those of position pos - 1 */
            ds4_session *t = ds4_session_new(m, &o, NULL, &err);
            CHECK(t && ds4_session_eval(t, toks, (int)pos, DS4_LOGITS_LAST, at, &err) == 0);
            CHECKF(memcmp(lg, at, V * sizeof(float)) == 0, "stop %d: logits of position %u differ", k, pos - 1);
            ds4_session_free(t);
        }
        CHECK(ds4_session_eval(s, toks + pos, N - (int)pos, DS4_LOGITS_LAST, lg, &err) == 0);
        CHECKF(memcmp(lg, ref, V * sizeof(float)) == 0, "stopped at poll %d (after %u tokens): continuation differs",
               k, pos);
    }
    ds4_session_free(s);
    free(ref); free(lg); free(at);
    ds4_model_free(m);
}

TEST(snapshot_continues_bitwise) {
    ds4_err err = {{0}};
    ds4_engine_opts o;
    ds4_model *m = tiny_session_opts(&o);
    if (!m) return;
    o.max_batch = 64;
    int n = 150, extra = 20; /* > 128: the raw ring wraps; > 4·8: the indexer selects */
    int32_t toks[170];
    for (int i = 0; i < n + extra; i++) toks[i] = (i * 37 + 11) % (int)m->hp.n_vocab;
    size_t V = m->hp.n_vocab;
    float *la = malloc(V * sizeof(float)), *lb = malloc(V * sizeof(float)), *saved = malloc(V * sizeof(float));
    ds4_session *a = ds4_session_new(m, &o, NULL, &err), *b = ds4_session_new(m, &o, NULL, &err);
    CHECK(a && b);
    CHECK(ds4_session_eval(a, toks, n, DS4_LOGITS_LAST, la, &err) == 0);
    membuf buf = {0};
    CHECK(ds4_session_payload_save(a, toks, la, mem_write, &buf, &err) == 0);
    CHECK_EQ_INT(buf.n, ds4_session_payload_size(a));
    int32_t *rt = NULL;
    uint32_t rn = 0;
    CHECKF(ds4_session_payload_load(b, mem_read, &buf, &rt, &rn, saved, &err) == 0, "%s", err.msg);
    CHECK_EQ_INT(rn, n);
    CHECK(rt && memcmp(rt, toks, sizeof(int32_t) * n) == 0);
    CHECK(memcmp(saved, la, V * sizeof(float)) == 0);
    CHECK_EQ_INT(b->pos, n);
    for (int i = 0; i < extra; i++) {
        CHECK(ds4_session_eval(a, toks + n + i, 1, DS4_LOGITS_LAST, la, &err) == 0);
        CHECK(ds4_session_eval(b, toks + n + i, 1, DS4_LOGITS_LAST, lb, &err) == 0);
        CHECKF(memcmp(la, lb, V * sizeof(float)) == 0, "restored session diverges at step %d", i);
    }
    /* Corrupt payloads are refused and leave the session empty. */
    size_t cuts[] = {0, 10, 52, 60, buf.n / 2, buf.n - 1};
    for (size_t k = 0; k < sizeof cuts / sizeof *cuts; k++) {
        membuf t = buf;
        t.n = cuts[k];
        t.off = 0;
        free(rt);
        rt = NULL;
        CHECK(ds4_session_payload_load(b, mem_read, &t, &rt, &rn, NULL, &err) == -1);
        CHECK_EQ_INT(b->pos, 0);
    }
    CHECK_STR_CONTAINS(err.msg, "truncated");
    membuf t = buf;
    t.off = 0;
    t.p = malloc(buf.n);
    memcpy(t.p, buf.p, buf.n);
    ((uint32_t *)t.p)[11] = 999; /* vocab */
    CHECK(ds4_session_payload_load(b, mem_read, &t, &rt, &rn, NULL, &err) == -1);
    CHECK_STR_CONTAINS(err.msg, "another model");
    ((uint32_t *)t.p)[11] = (uint32_t)V;
    ((uint32_t *)t.p)[0] = 0;
    t.off = 0;
    CHECK(ds4_session_payload_load(b, mem_read, &t, &rt, &rn, NULL, &err) == -1);
    CHECK_STR_CONTAINS(err.msg, "magic");
    ((uint32_t *)t.p)[0] = 0x34565344u;
    ((uint32_t *)t.p)[7] = 100000; /* token count beyond the context */
    t.off = 0;
    CHECK(ds4_session_payload_load(b, mem_read, &t, &rt, &rn, NULL, &err) == -1);
    free(t.p);
    free(buf.p);
    free(rt);
    ds4_session_free(a);
    ds4_session_free(b);
    free(la); free(lb); free(saved);
    ds4_model_free(m);
}

TEST(eval_bad_input) {
    ds4_err err = {{0}};
    ds4_model *m = ds4_model_load(tiny_model(), &err);
    if (!m) { CHECK(0); return; }
    ds4_engine_opts o;
    ds4_engine_opts_default(&o);
    o.ctx_max = 16;
    o.n_threads = 1;
    ds4_session *s = ds4_session_new(m, &o, NULL, &err);
    int32_t bad = (int32_t)m->hp.n_vocab;
    CHECK(ds4_session_eval(s, &bad, 1, DS4_LOGITS_NONE, NULL, &err) == -1);
    CHECK_STR_CONTAINS(err.msg, "out of range");
    int32_t many[17] = {0};
    CHECK(ds4_session_eval(s, many, 17, DS4_LOGITS_NONE, NULL, &err) == -1);
    CHECK_STR_CONTAINS(err.msg, "context full");
    CHECK_EQ_INT(s->pos, 0);
    CHECK(ds4_session_eval(s, many, 0, DS4_LOGITS_NONE, NULL, &err) == -1);
    ds4_session_free(s);
    ds4_model_free(m);
}

/* A session may not reach past the model's context length (the GGUF's
 * context_length, here lowered in memory): refused with both numbers named;
 * the default context shrinks to it; a session at the limit works up to it. */
TEST(ctx_past_model_context) {
    ds4_err err = {{0}};
    ds4_model *m = ds4_model_load(tiny_model(), &err);
    if (!m) { CHECK(0); return; }
    m->hp.ctx_len = 40;
    ds4_engine_opts o;
    ds4_engine_opts_default(&o);
    o.n_threads = 1;
    o.ctx_max = 41;
    CHECK(ds4_session_new(m, &o, NULL, &err) == NULL);
    CHECK_STR_CONTAINS(err.msg, "41 tokens");
    CHECK_STR_CONTAINS(err.msg, "context length of 40");
    o.ctx_max = 0;
    ds4_session *s = ds4_session_new(m, &o, NULL, &err);
    CHECKF(s != NULL, "%s", err.msg);
    if (s) CHECK_EQ_INT(s->opts.ctx_max, 40);
    ds4_session_free(s);
    o.ctx_max = 40;
    s = ds4_session_new(m, &o, NULL, &err);
    CHECKF(s != NULL, "%s", err.msg);
    int32_t toks[41] = {0};
    if (s) {
        CHECK(ds4_session_eval(s, toks, 40, DS4_LOGITS_NONE, NULL, &err) == 0);
        CHECK(ds4_session_eval(s, toks, 1, DS4_LOGITS_NONE, NULL, &err) == -1);
        CHECK_STR_CONTAINS(err.msg, "context full");
    }
    ds4_session_free(s);
    ds4_model_free(m);
}

/* The default batch follows the expert count: ~48 tokens an expert, within
 * [DS4_BATCH_MIN, DS4_BATCH_MAX], and a session left at 0 gets it. */
TEST(default_batch) {
    ds4_hparams hp;
    ds4_hparams_preset_flash(&hp); /* 256 experts, top-6 */
    CHECK_EQ_INT(ds4_default_batch(&hp), 2048);
    hp.n_expert = 64;                /* the small preset */
    CHECK_EQ_INT(ds4_default_batch(&hp), DS4_BATCH_MIN);
    hp.n_expert = 384; hp.n_expert_used = 7; /* 2633 -> whole lines of 64 */
    CHECK_EQ_INT(ds4_default_batch(&hp), 2688);
    hp.n_expert = 4096;
    CHECK_EQ_INT(ds4_default_batch(&hp), DS4_BATCH_MAX);
    hp.n_expert_used = 0;
    CHECK_EQ_INT(ds4_default_batch(&hp), DS4_BATCH_MIN);
    ds4_err err = {{0}};
    ds4_model *m = ds4_model_load(tiny_model(), &err);
    if (!m) { CHECK(0); return; }
    ds4_engine_opts o;
    ds4_engine_opts_default(&o);
    o.n_threads = 1;
    CHECK_EQ_INT(o.max_batch, 0);
    ds4_session *s = ds4_session_new(m, &o, NULL, &err);
    CHECKF(s != NULL, "%s", err.msg);
    if (s) CHECK_EQ_INT(s->opts.max_batch, ds4_default_batch(&m->hp));
    ds4_session_free(s);
    o.max_batch = 100; /* an explicit size is kept */
    s = ds4_session_new(m, &o, NULL, &err);
    if (s) CHECK_EQ_INT(s->opts.max_batch, 100);
    ds4_session_free(s);
    ds4_model_free(m);
}

/* Rewrites the tiny model with one change, then expects the loader to refuse it. */
enum edit { EDIT_SHAPE, EDIT_TYPE, EDIT_ARCH, EDIT_DROP, EDIT_KEY };

static void rewrite_and_expect(enum edit e, const char *victim, const char *expect) {
    ds4_err err = {{0}};
    gguf_file *f = gguf_open(tiny_model(), &err);
    if (!f) { CHECK(0); return; }
    char out[600];
    snprintf(out, sizeof out, "%s/bad-%d.gguf", test_tmpdir(), (int)e);
    gguf_writer *w = gguf_writer_open(out, &err);
    for (int64_t i = 0; i < gguf_n_kv(f); i++) {
        const gguf_kv *kv = gguf_kv_at(f, i);
        if (gguf_str_eq(kv->key, "general.architecture") && e == EDIT_ARCH) {
            gguf_writer_add_str(w, "general.architecture", "llama");
            continue;
        }
        if (e == EDIT_KEY && gguf_str_eq(kv->key, victim)) continue;
        gguf_writer_copy_kv(w, kv);
    }
    for (int64_t i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        char name[128];
        gguf_str_copy(t->name, name, sizeof name);
        bool hit = victim && !strcmp(name, victim);
        if (hit && e == EDIT_DROP) continue;
        int64_t ne[4] = {t->ne[0], t->ne[1], t->ne[2], t->ne[3]};
        int type = t->type;
        if (hit && e == EDIT_SHAPE) ne[1] = t->ne[1] / 2;
        if (hit && e == EDIT_TYPE) type = DS4_TYPE_I32;
        gguf_writer_add_tensor(w, name, type, t->n_dims, ne);
    }
    gguf_writer_begin_data(w);
    for (int64_t i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        char name[128];
        gguf_str_copy(t->name, name, sizeof name);
        bool hit = victim && !strcmp(name, victim);
        if (hit && e == EDIT_DROP) continue;
        size_t n = t->nbytes;
        if (hit && e == EDIT_SHAPE) n /= 2;
        gguf_writer_write(w, t->data, n);
    }
    CHECKF(gguf_writer_finish(w) == 0, "%s", gguf_writer_error(w));
    gguf_writer_free(w);
    gguf_close(f);
    ds4_model *m = ds4_model_load(out, &err);
    CHECKF(m == NULL, "loader accepted a model with edit %d", (int)e);
    ds4_model_free(m);
    CHECK_STR_CONTAINS(err.msg, expect);
    if (victim && e != EDIT_KEY) CHECK_STR_CONTAINS(err.msg, victim);
    remove(out);
}

TEST(model_validation) {
    ds4_err err = {{0}};
    ds4_model *m = ds4_model_load(tiny_model(), &err);
    CHECKF(m != NULL, "%s", err.msg);
    ds4_model_free(m);
    rewrite_and_expect(EDIT_SHAPE, "blk.1.attn_q_b.weight", "has shape [64, 256], expected [64, 512]");
    rewrite_and_expect(EDIT_TYPE, "blk.0.attn_norm.weight", "type i32");
    rewrite_and_expect(EDIT_ARCH, NULL, "wrong architecture 'llama'");
    rewrite_and_expect(EDIT_DROP, "blk.3.attn_compressor_ape.weight", "missing tensor");
    rewrite_and_expect(EDIT_KEY, "deepseek4.hyper_connection.count", "deepseek4.hyper_connection.count");
    CHECK(ds4_model_load("/nonexistent/model.gguf", &err) == NULL);
    CHECK_STR_CONTAINS(err.msg, "/nonexistent/model.gguf");
}

int main(void) {
    RUN(fp8_roundtrip_hand_values);
    RUN(fp4_roundtrip_hand_values);
    RUN(hadamard_hand_values);
    RUN(topk);
    RUN(topk_sorted);
    RUN(rope_tables);
    RUN(snapshot_continues_bitwise);
    RUN(stoppable_eval_undoes);
    RUN(idx8_same_logits);
    RUN(quantized_batches_bitwise);
    RUN(random_shapes);
    RUN(eval_bad_input);
    RUN(ctx_past_model_context);
    RUN(default_batch);
    RUN(model_validation);
    remove(tiny_path);
    rmdir(test_tmpdir());
    TEST_END();
}
