/* Expert streaming (src/experts): with the cache at most a third of the
 * routed-expert bytes, logits are bitwise those of the fully resident run
 * (q8_0 and q2 recipes, prefill in batches + decode, io_uring and pread,
 * O_DIRECT and buffered, with and without a pinned hot table); the hot table
 * round-trips and a table of another model or a corrupted one is refused; an
 * injected read error fails ds4_session_eval with a message naming the layer,
 * expert and errno, and the session works again afterwards; peak RSS of a
 * model whose experts dominate stays within the RAM budget. */
#include "test.h"

#include <errno.h>
#include <sys/stat.h>

#include "convert/mkmodel.h"
#include "engine/engine.h"
#include "experts/experts.h"
#include "model/model.h"
#include "quant/quant.h"

#define N_TOK 300
#define N_PREFILL 200

static char path_q8[512], path_q2[512];

/* Rows multiple of 256 so the q2 recipe really stores IQ2_XXS / Q2_K experts. */
static void shape(ds4_hparams *hp, uint32_t embd, uint32_t ff, uint32_t n_expert, uint32_t layers) {
    ds4_err err = {{0}};
    if (ds4_mkmodel_preset("tiny", hp, &err)) { fprintf(stderr, "%s\n", err.msg); exit(2); }
    hp->n_mtp = 0;
    hp->n_embd = embd;
    hp->expert_ff = ff;
    hp->n_expert = n_expert;
    hp->n_expert_used = 4;
    hp->n_hash = 1;
    hp->idx_topk = 8;
    ds4_mkmodel_set_layers(hp, layers);
}

static const char *make(char *path, const char *name, const char *recipe, uint32_t embd, uint32_t ff,
                        uint32_t n_expert, uint32_t layers) {
    if (path[0]) return path;
    snprintf(path, 512, "%s/%s.gguf", test_tmpdir(), name);
    ds4_hparams hp;
    shape(&hp, embd, ff, n_expert, layers);
    ds4_err err = {{0}};
    ds4_mkmodel_opts o = {.recipe = recipe, .seed = 11, .name = name};
    if (ds4_mkmodel(path, &hp, &o, NULL, &err)) { fprintf(stderr, "mkmodel: %s\n", err.msg); exit(2); }
    return path;
}

static const char *model_q8(void) { return make(path_q8, "exp-q8", "q8_0", 256, 256, 32, 4); }
static const char *model_q2(void) { return make(path_q2, "exp-q2", "q2", 256, 256, 32, 4); }

static void tokens(int32_t *t, int n, uint32_t vocab, uint64_t seed) {
    for (int i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        t[i] = (int32_t)((seed >> 33) % vocab);
    }
}

static void base_opts(ds4_engine_opts *o) {
    ds4_engine_opts_default(o);
    o->n_threads = 2;
    o->max_batch = 64; /* prefill in several batches */
    o->ctx_max = N_TOK;
}

/* Resident logits of the standard schedule (prefill N_PREFILL in batches, then decode). */
static float *resident(const ds4_model *m, const int32_t *t, uint64_t *counts) {
    ds4_engine_opts o;
    base_opts(&o);
    o.expert_counts = counts;
    float *lg = malloc(sizeof(float) * N_TOK * m->hp.n_vocab);
    ds4_err err = {{0}};
    CHECKF(ds4_eval_sequence(m, &o, t, N_TOK, 0, N_PREFILL, lg, &err) == 0, "%s", err.msg);
    return lg;
}

/* Streams with the given store options and compares bitwise with ref. */
static void streamed(const ds4_model *m, const int32_t *t, const float *ref, const ds4_experts_opts *xo,
                     ds4_expert_stats *st) {
    ds4_engine_opts o;
    base_opts(&o);
    ds4_err err = {{0}};
    ds4_experts *x = ds4_experts_open(m, xo, 0, &err);
    CHECKF(x != NULL, "%s", err.msg);
    if (!x) return;
    o.expert_store = x;
    float *lg = malloc(sizeof(float) * N_TOK * m->hp.n_vocab);
    CHECKF(ds4_eval_sequence(m, &o, t, N_TOK, 0, N_PREFILL, lg, &err) == 0, "%s", err.msg);
    CHECK(memcmp(lg, ref, sizeof(float) * N_TOK * m->hp.n_vocab) == 0);
    ds4_experts_stats_get(x, st);
    ds4_experts_stats_print(stdout, st);
    CHECK(st->cache_bytes * 3 <= st->expert_bytes); /* the cache really is <= 1/3 of the experts */
    CHECK(st->misses > 0 && st->evictions > 0 && st->hits > 0);
    CHECK_EQ_INT(st->tokens, N_TOK);
    free(lg);
    ds4_experts_free(x);
}

static uint64_t cache_third_mb(const ds4_model *m) {
    ds4_model_bytes mb;
    ds4_experts_model_bytes(m, &mb);
    uint64_t c = mb.experts / 3 >> 20;
    return c ? c : 1;
}

static void bitwise_recipe(const char *path, bool variants) {
    ds4_err err = {{0}};
    ds4_model *m = ds4_model_load(path, &err);
    CHECKF(m != NULL, "%s", err.msg);
    if (!m) return;
    int32_t t[N_TOK];
    tokens(t, N_TOK, m->hp.n_vocab, 3);
    float *ref = resident(m, t, NULL);
    ds4_experts_opts xo = {.cache_mb = cache_third_mb(m)};
    ds4_expert_stats st;
    streamed(m, t, ref, &xo, &st);
    CHECK(st.uring);
    if (variants) {
        ds4_experts_opts a = xo;
        a.no_uring = true;
        streamed(m, t, ref, &a, &st);
        CHECK(!st.uring);
        ds4_experts_opts b = xo;
        b.no_direct = true;
        b.no_prefetch = true;
        streamed(m, t, ref, &b, &st);
        CHECK(!st.direct);
    }
    free(ref);
    ds4_model_free(m);
}

TEST(bitwise_q8_0) { bitwise_recipe(model_q8(), true); }

TEST(bitwise_q2) {
    ds4_err err = {{0}};
    ds4_model *m = ds4_model_load(model_q2(), &err);
    CHECKF(m != NULL, "%s", err.msg);
    if (!m) return;
    /* the recipe really uses the 2-bit types for the routed experts */
    CHECK_EQ_INT(m->layers[0].gate_exps.type, DS4_TYPE_IQ2_XXS);
    CHECK_EQ_INT(m->layers[0].down_exps.type, DS4_TYPE_Q2_K);
    ds4_model_free(m);
    bitwise_recipe(model_q2(), false);
}

TEST(hot_table) {
    ds4_err err = {{0}};
    ds4_model *m = ds4_model_load(model_q8(), &err);
    ds4_model *m2 = ds4_model_load(model_q2(), &err);
    CHECK(m && m2);
    if (!m || !m2) { ds4_model_free(m); ds4_model_free(m2); return; }
    size_t LE = (size_t)m->hp.n_layer * m->hp.n_expert;
    uint64_t *counts = calloc(LE, sizeof *counts);
    int32_t t[N_TOK];
    tokens(t, N_TOK, m->hp.n_vocab, 3);
    float *ref = resident(m, t, counts);
    uint64_t total = 0;
    for (size_t i = 0; i < LE; i++) total += counts[i];
    CHECK_EQ_INT(total, (uint64_t)N_TOK * m->hp.n_layer * m->hp.n_expert_used);

    char hot[600], other[600], bad[600];
    snprintf(hot, sizeof hot, "%s/q8.hot", test_tmpdir());
    CHECKF(ds4_hot_write(hot, m, counts, N_TOK, &err) == 0, "%s", err.msg);
    ds4_hot_table *ht = ds4_hot_read(hot, m, &err);
    CHECKF(ht != NULL, "%s", err.msg);
    if (ht) {
        CHECK(memcmp(ht->counts, counts, LE * 8) == 0);
        CHECK_EQ_INT(ht->n_tokens, N_TOK);
        CHECK(!strcmp(ht->model_name, "exp-q8"));
        ds4_hot_free(ht);
    }

    /* streaming with the table pinned: still bitwise, pinned hits happen */
    ds4_experts_opts xo = {.cache_mb = cache_third_mb(m), .hot_path = hot};
    ds4_expert_stats st;
    streamed(m, t, ref, &xo, &st);
    CHECK(st.n_pinned > 0 && st.hits_pinned > 0);

    /* a table for another model (same shape, other tensor types) is refused, naming both */
    snprintf(other, sizeof other, "%s/q2.hot", test_tmpdir());
    CHECKF(ds4_hot_write(other, m2, counts, N_TOK, &err) == 0, "%s", err.msg);
    CHECK(ds4_hot_read(other, m, &err) == NULL);
    CHECK_STR_CONTAINS(err.msg, "another model");
    CHECK_STR_CONTAINS(err.msg, "exp-q2");
    CHECK_STR_CONTAINS(err.msg, "exp-q8");
    /* ... also through the engine: the session is not created */
    ds4_engine_opts o;
    base_opts(&o);
    o.experts.cache_mb = cache_third_mb(m);
    o.experts.hot_path = other;
    err.msg[0] = 0;
    CHECK(ds4_session_new(m, &o, NULL, &err) == NULL);
    CHECK_STR_CONTAINS(err.msg, "another model");

    /* corrupted: one flipped byte in the counts, then a truncated copy */
    FILE *f = fopen(hot, "rb");
    uint8_t buf[65536];
    size_t n = f ? fread(buf, 1, sizeof buf, f) : 0;
    if (f) fclose(f);
    snprintf(bad, sizeof bad, "%s/bad.hot", test_tmpdir());
    buf[200] ^= 0x40;
    f = fopen(bad, "wb");
    if (f) { fwrite(buf, 1, n, f); fclose(f); }
    CHECK(ds4_hot_read(bad, m, &err) == NULL);
    CHECK_STR_CONTAINS(err.msg, "corrupt");
    CHECK_STR_CONTAINS(err.msg, "checksum");
    buf[200] ^= 0x40;
    f = fopen(bad, "wb");
    if (f) { fwrite(buf, 1, n - 9, f); fclose(f); }
    CHECK(ds4_hot_read(bad, m, &err) == NULL);
    CHECK_STR_CONTAINS(err.msg, "truncated");
    f = fopen(bad, "wb");
    if (f) { fwrite("hello", 1, 5, f); fclose(f); }
    CHECK(ds4_hot_read(bad, m, &err) == NULL);
    CHECK_STR_CONTAINS(err.msg, "not a hot-expert table");

    free(ref);
    free(counts);
    ds4_model_free(m);
    ds4_model_free(m2);
}

static void io_error_case(bool no_uring) {
    ds4_err err = {{0}};
    ds4_model *m = ds4_model_load(model_q8(), &err);
    CHECKF(m != NULL, "%s", err.msg);
    if (!m) return;
    int32_t t[N_TOK];
    tokens(t, N_TOK, m->hp.n_vocab, 5);
    size_t V = m->hp.n_vocab;
    float *ref = malloc(sizeof(float) * V), *lg = malloc(sizeof(float) * V);
    ds4_engine_opts o;
    base_opts(&o);
    ds4_session *s = ds4_session_new(m, &o, NULL, &err);
    CHECKF(s && ds4_session_eval(s, t, 40, DS4_LOGITS_LAST, ref, &err) == 0, "%s", err.msg);
    ds4_session_free(s);

    o.experts.cache_mb = cache_third_mb(m);
    o.experts.no_uring = no_uring;
    s = ds4_session_new(m, &o, NULL, &err);
    CHECKF(s != NULL, "%s", err.msg);
    if (s) {
        CHECK(s->experts != NULL);
        ds4_experts_inject_error(s->experts, 2, -1, EIO);
        err.msg[0] = 0;
        CHECK(ds4_session_eval(s, t, 40, DS4_LOGITS_LAST, lg, &err) == -1);
        CHECK_STR_CONTAINS(err.msg, "layer 2 expert");
        CHECK_STR_CONTAINS(err.msg, "ffn_up_exps");
        CHECK_STR_CONTAINS(err.msg, "Input/output error");
        CHECK_STR_CONTAINS(err.msg, "errno 5");
        printf("  injected: %s\n", err.msg);
        CHECK_EQ_INT(s->pos, 0); /* reset after the failure */
        /* the process and the store survive: clear the fault, evaluate again, same logits */
        ds4_experts_inject_error(s->experts, 0, 0, 0);
        CHECKF(ds4_session_eval(s, t, 40, DS4_LOGITS_LAST, lg, &err) == 0, "%s", err.msg);
        CHECK(memcmp(lg, ref, sizeof(float) * V) == 0);
        /* a failure during decode too */
        ds4_session_reset(s);
        CHECKF(ds4_session_eval(s, t, 39, DS4_LOGITS_LAST, lg, &err) == 0, "%s", err.msg);
        ds4_experts_inject_error(s->experts, -1, -1, ENOSPC);
        for (int i = 0; i < 50; i++) { /* until a miss happens */
            if (ds4_session_eval(s, t + 39, 1, DS4_LOGITS_LAST, lg, &err)) break;
            ds4_session_reset(s);
            CHECK(ds4_session_eval(s, t, 39, DS4_LOGITS_LAST, lg, &err) == 0);
        }
        CHECK_STR_CONTAINS(err.msg, "errno 28");
        ds4_experts_inject_error(s->experts, 0, 0, 0);
        ds4_session_reset(s);
        CHECKF(ds4_session_eval(s, t, 40, DS4_LOGITS_LAST, lg, &err) == 0, "%s", err.msg);
        CHECK(memcmp(lg, ref, sizeof(float) * V) == 0);
        ds4_session_free(s);
    }
    free(ref);
    free(lg);
    ds4_model_free(m);
}

TEST(io_error_uring) { io_error_case(false); }
TEST(io_error_pread) { io_error_case(true); }

TEST(bad_options) {
    ds4_err err = {{0}};
    ds4_model *m = ds4_model_load(model_q8(), &err);
    if (!m) { CHECK(0); return; }
    ds4_engine_opts o;
    base_opts(&o);
    o.experts.ram_budget_mb = 1;
    CHECK(ds4_session_new(m, &o, NULL, &err) == NULL);
    CHECK_STR_CONTAINS(err.msg, "RAM budget 1 MiB is too small");
    ds4_experts_opts xo = {0};
    char *argv[] = {"x", "--expert-cache-mb", "12", "--hot-pct", "0", "--ram-budget-mb"};
    int i = 1;
    CHECK_EQ_INT(ds4_experts_parse_arg(&xo, 6, argv, &i, &err), 1);
    CHECK_EQ_INT(xo.cache_mb, 12);
    i = 3;
    CHECK_EQ_INT(ds4_experts_parse_arg(&xo, 6, argv, &i, &err), -1);
    CHECK_STR_CONTAINS(err.msg, "--hot-pct");
    i = 5;
    CHECK_EQ_INT(ds4_experts_parse_arg(&xo, 6, argv, &i, &err), -1);
    i = 0;
    CHECK_EQ_INT(ds4_experts_parse_arg(&xo, 6, argv, &i, &err), 0);
    ds4_model_free(m);
}

/* ---- RSS ---- */

static long status_kb(const char *key) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    size_t kl = strlen(key);
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, key, kl)) v = atol(line + kl + 1);
    if (f) fclose(f);
    return v;
}

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#else
#define UNDER_ASAN 0
#endif

/* A model whose routed experts are ~95% of its bytes, run under a RAM budget
 * that leaves a cache of a quarter of the experts.  Runs first, so the peak
 * RSS (reset through /proc/self/clear_refs) is this run's. */
TEST(rss_within_budget) {
    char path[600];
    snprintf(path, sizeof path, "%s/rss.gguf", test_tmpdir());
    ds4_hparams hp;
    shape(&hp, 512, 512, 48, 4);
    ds4_err err = {{0}};
    ds4_mkmodel_opts mo = {.recipe = "q8_0", .seed = 5, .name = "exp-rss"};
    CHECKF(ds4_mkmodel(path, &hp, &mo, NULL, &err) == 0, "%s", err.msg);
    ds4_model *m = ds4_model_load(path, &err);
    CHECKF(m != NULL, "%s", err.msg);
    if (!m) return;
    ds4_model_bytes mb;
    ds4_experts_model_bytes(m, &mb);
    ds4_engine_opts o;
    base_opts(&o);
    o.ctx_max = 128;
    uint64_t sess = ds4_experts_session_bytes(&m->hp, o.ctx_max, o.max_batch);
    uint64_t budget = mb.dense + sess + DS4_EXPERTS_FIXED_OVERHEAD + mb.experts / 4;
    o.experts.ram_budget_mb = (budget + (1 << 20) - 1) >> 20;
    budget = o.experts.ram_budget_mb << 20;

    FILE *cr = fopen("/proc/self/clear_refs", "w");
    bool reset = cr && fputs("5", cr) >= 0;
    if (cr) reset = fclose(cr) == 0 && reset;
    ds4_session *s = ds4_session_new(m, &o, NULL, &err);
    CHECKF(s != NULL, "%s", err.msg);
    if (s) {
        int32_t t[128];
        tokens(t, 128, m->hp.n_vocab, 9);
        float *lg = malloc(sizeof(float) * m->hp.n_vocab);
        CHECKF(ds4_session_eval(s, t, 64, DS4_LOGITS_LAST, lg, &err) == 0, "%s", err.msg);
        for (int i = 64; i < 128; i++) CHECK(ds4_session_eval(s, t + i, 1, DS4_LOGITS_LAST, lg, &err) == 0);
        ds4_expert_stats st;
        ds4_experts_stats_get(s->experts, &st);
        ds4_experts_stats_print(stdout, &st);
        long hwm = status_kb("VmHWM:"), rss = status_kb("VmRSS:");
        printf("  file %.1f MiB (experts %.1f, dense %.1f), session %.1f MiB, budget %.1f MiB "
               "(incl. %.0f MiB fixed overhead): VmRSS %.1f MiB, VmHWM %.1f MiB%s\n",
               mb.file / 1048576.0, mb.experts / 1048576.0, mb.dense / 1048576.0, sess / 1048576.0,
               budget / 1048576.0, DS4_EXPERTS_FIXED_OVERHEAD / 1048576.0, rss / 1024.0, hwm / 1024.0,
               reset ? "" : " (peak not reset)");
        CHECK(st.misses > 0);
        CHECK(mb.experts > mb.file * 9 / 10);
        if (!UNDER_ASAN) { /* ASan's shadow memory and quarantine are not the engine's */
            CHECK(rss > 0 && (uint64_t)rss * 1024 <= budget);
            if (reset) CHECK((uint64_t)hwm * 1024 <= budget);
            CHECK((uint64_t)rss * 1024 < mb.file / 2); /* far from holding the model */
        }
        free(lg);
        ds4_session_free(s);
    }
    ds4_model_free(m);
    unlink(path);
}

int main(void) {
    RUN(rss_within_budget);
    RUN(bitwise_q8_0);
    RUN(bitwise_q2);
    RUN(hot_table);
    RUN(io_error_uring);
    RUN(io_error_pread);
    RUN(bad_options);
    unlink(model_q8());
    unlink(model_q2());
    TEST_END();
}
