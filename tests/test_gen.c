/* Tests of the generation driver (src/gen): prefix reuse on the three paths
 * (text, token, reset) and that reuse gives the same tokens as a fresh
 * prefill, chunk-size independence, cancellation between prefill chunks and
 * between tokens, caller stop, max tokens, context full, errors, seeds, and
 * reasoning/text events.  Uses a tiny synthetic model with the real
 * tokenizer; greedy sampling makes the ids comparable. */
#include <limits.h>
#include <pthread.h>
#include <time.h>
#include <sys/stat.h>

#include "convert/mkmodel.h"
#include "gen/gen.h"
#include "test.h"
#include "text/chat.h"

static ds4_model *model;
static ds4_tokenizer *tok;

#define PROMPT1 DS4_TOK_BOS DS4_TOK_USER "Hello, how are you today?" DS4_TOK_ASSISTANT DS4_TOK_THINK_END

typedef struct rec {
    int32_t ids[256];
    int n;
    int stop_at;               /* on_token returns 1 when n reaches it */
    int cancel_at;             /* sets *cancel when n reaches it */
    int cancel_after_chunks;   /* on_progress sets *cancel after this many chunks */
    int chunks;
    atomic_int *cancel;
    int n_reasoning, n_text, first_event;
} rec;

static int on_token(void *u, int32_t id, const char *t, size_t n) {
    (void)t; (void)n;
    rec *r = u;
    if (id < 0) return 0;
    if (r->n < 256) r->ids[r->n] = id;
    r->n++;
    if (r->cancel_at && r->n == r->cancel_at) atomic_store(r->cancel, 1);
    return r->stop_at && r->n == r->stop_at;
}

static void on_progress(void *u, size_t done, size_t total) {
    (void)done; (void)total;
    rec *r = u;
    r->chunks++;
    if (r->cancel_after_chunks && r->chunks == r->cancel_after_chunks) atomic_store(r->cancel, 1);
}

static void on_event(void *u, const ds4_dsml_event *ev) {
    rec *r = u;
    if (ev->type == DS4_DSML_REASONING) r->n_reasoning++;
    if (ev->type == DS4_DSML_TEXT) r->n_text++;
    if (r->first_event < 0 && (ev->type == DS4_DSML_REASONING || ev->type == DS4_DSML_TEXT)) r->first_event = ev->type;
}

static ds4_gen *new_gen(uint32_t ctx, int chunk) {
    ds4_engine_opts o;
    ds4_engine_opts_default(&o);
    o.ctx_max = ctx;
    o.n_threads = 2;
    ds4_err err = {{0}};
    ds4_gen *g = ds4_gen_new(model, tok, &o, chunk, &err);
    CHECKF(g != NULL, "%s", err.msg);
    return g;
}

static void greedy(ds4_gen_params *p, long n) {
    ds4_gen_params_default(p);
    p->samp.temperature = 0;
    p->max_tokens = n;
}

static ds4_gen_callbacks cbs(rec *r) {
    memset(r, 0, sizeof *r);
    r->first_event = -1;
    ds4_gen_callbacks cb = {.user = r, .on_token = on_token, .on_progress = on_progress, .on_event = on_event};
    return cb;
}

TEST(prefix_reuse) {
    ds4_gen *g = new_gen(4096, 4);
    ds4_err err = {{0}};
    ds4_gen_stats st;
    ds4_gen_params p;
    greedy(&p, 6);
    rec r;
    ds4_gen_callbacks cb = cbs(&r);
    CHECK(ds4_gen_append_text(g, PROMPT1, strlen(PROMPT1), &cb, NULL, &st, &err) == 0);
    size_t n1 = st.prompt_tokens;
    CHECK(n1 > 8 && st.cached_tokens == 0 && st.prefill_tokens == n1);
    CHECK_EQ_INT(r.chunks, (int)((n1 + 3) / 4)); /* progress once per chunk of 4 */
    CHECK(ds4_gen_generate(g, &p, &cb, &st, &err) == 0);
    CHECK_EQ_INT(st.stop, DS4_GEN_STOP_MAX_TOKENS);
    CHECK_EQ_INT(st.gen_tokens, 6);
    CHECK_EQ_INT(r.first_event, DS4_DSML_TEXT); /* prompt ended with </think> */
    size_t n;
    const int32_t *ids = ds4_gen_tokens(g, &n);
    CHECK_EQ_INT(n, n1 + 6);
    CHECK_EQ_INT(ds4_gen_n_evaluated(g), n1 + 5); /* the last token is pending */

    /* Text path: the next turn continues the history's bytes at EOS. */
    char *hist;
    size_t hl;
    CHECK(ds4_tok_decode(tok, ids, n, &hist, &hl, &err) == 0);
    ds4_buf b = {0};
    ds4_buf_append(&b, hist, hl);
    ds4_buf_puts(&b, DS4_TOK_EOS DS4_TOK_USER "And then?" DS4_TOK_ASSISTANT DS4_TOK_THINK);
    free(hist);
    cb = cbs(&r);
    CHECK(ds4_gen_append_text(g, b.data, b.len, &cb, NULL, &st, &err) == 0);
    CHECK_EQ_INT(st.cached_tokens, n1 + 5);
    size_t n2 = st.prompt_tokens;
    CHECK_EQ_INT(st.prefill_tokens, n2 - (n1 + 5));
    CHECK(ds4_gen_generate(g, &p, &cb, &st, &err) == 0);
    CHECK_EQ_INT(r.first_event, DS4_DSML_REASONING); /* prompt ended with <think> */
    rec reused = r;

    /* The same ids prefilled from scratch give the same greedy continuation. */
    ids = ds4_gen_tokens(g, &n);
    int32_t *all = malloc(n2 * sizeof *all);
    memcpy(all, ids, n2 * sizeof *all);
    ds4_gen *g2 = new_gen(4096, 256);
    cb = cbs(&r);
    CHECK(ds4_gen_append_tokens(g2, all, n2, &cb, NULL, &st, &err) == 0);
    CHECK_EQ_INT(st.cached_tokens, 0);
    CHECK(ds4_gen_generate(g2, &p, &cb, &st, &err) == 0);
    CHECK_EQ_INT(r.n, reused.n);
    CHECK(!memcmp(r.ids, reused.ids, sizeof(int32_t) * (size_t)r.n));

    /* Identical prompt: nothing to evaluate. */
    CHECK(ds4_gen_append_tokens(g2, all, n2 - 6, &cb, NULL, &st, &err) == 0); /* a prefix: reset */
    CHECK_EQ_INT(st.cached_tokens, 0);
    CHECK(ds4_gen_append_tokens(g2, all, n2 - 6, &cb, NULL, &st, &err) == 0);
    CHECK_EQ_INT(st.cached_tokens, n2 - 6);
    CHECK_EQ_INT(st.prefill_tokens, 0);
    /* Token path: extends the history although the text path does not apply. */
    CHECK(ds4_gen_append_tokens(g2, all, n2, &cb, NULL, &st, &err) == 0);
    CHECK_EQ_INT(st.cached_tokens, n2 - 6);
    CHECK_EQ_INT(st.prefill_tokens, 6);
    /* A different prompt: reset. */
    const char *other = DS4_TOK_BOS DS4_TOK_USER "Something else" DS4_TOK_ASSISTANT DS4_TOK_THINK;
    CHECK(ds4_gen_append_text(g2, other, strlen(other), &cb, NULL, &st, &err) == 0);
    CHECK_EQ_INT(st.cached_tokens, 0);
    free(all);
    ds4_buf_free(&b);
    ds4_gen_free(g2);
    ds4_gen_free(g);
}

TEST(chunking_and_seeds) {
    ds4_err err = {{0}};
    ds4_gen_stats st;
    ds4_gen_params p;
    greedy(&p, 8);
    rec a, b;
    ds4_gen *g1 = new_gen(1024, 3), *g2 = new_gen(1024, 256);
    ds4_gen_callbacks ca = cbs(&a), cb = cbs(&b);
    CHECK(ds4_gen_run(g1, PROMPT1, strlen(PROMPT1), &p, &ca, &st, &err) == 0);
    CHECK(ds4_gen_run(g2, PROMPT1, strlen(PROMPT1), &p, &cb, &st, &err) == 0);
    CHECK(a.n == 8 && b.n == 8 && !memcmp(a.ids, b.ids, sizeof(int32_t) * 8));
    /* Sampling with a fixed seed is reproducible; another seed differs. */
    ds4_gen_params_default(&p);
    p.max_tokens = 12;
    p.samp.seed = 5;
    ca = cbs(&a);
    cb = cbs(&b);
    CHECK(ds4_gen_run(g1, PROMPT1, strlen(PROMPT1), &p, &ca, &st, &err) == 0);
    CHECK(ds4_gen_run(g2, PROMPT1, strlen(PROMPT1), &p, &cb, &st, &err) == 0);
    CHECK(a.n == 12 && b.n == 12 && !memcmp(a.ids, b.ids, sizeof(int32_t) * 12));
    p.samp.seed = 6;
    cb = cbs(&b);
    CHECK(ds4_gen_run(g2, PROMPT1, strlen(PROMPT1), &p, &cb, &st, &err) == 0);
    CHECK(memcmp(a.ids, b.ids, sizeof(int32_t) * 12) != 0);
    ds4_gen_free(g1);
    ds4_gen_free(g2);

    /* chunk 0: the prefill goes in chunks of the session's batch (here 5),
     * so the driver never caps the engine's batch below its own size. */
    ds4_engine_opts o;
    ds4_engine_opts_default(&o);
    o.ctx_max = 1024;
    o.n_threads = 2;
    o.max_batch = 5;
    ds4_gen *g3 = ds4_gen_new(model, tok, &o, 0, &err);
    CHECKF(g3 != NULL, "%s", err.msg);
    if (g3) {
        ca = cbs(&a);
        CHECK(ds4_gen_append_text(g3, PROMPT1, strlen(PROMPT1), &ca, NULL, &st, &err) == 0);
        CHECK(st.prefill_tokens > 10);
        CHECK_EQ_INT(a.chunks, (int)((st.prefill_tokens + 4) / 5));
        ds4_gen_free(g3);
    }
}

TEST(stops_and_cancel) {
    ds4_err err = {{0}};
    ds4_gen_stats st;
    ds4_gen_params p;
    atomic_int cancel = 0;
    rec r;
    ds4_gen *g = new_gen(64, 4);
    ds4_gen_callbacks cb = cbs(&r);

    /* Cancel between prefill chunks: the history keeps the chunks done. */
    r.cancel = &cancel;
    r.cancel_after_chunks = 2;
    greedy(&p, 5);
    p.cancel = &cancel;
    CHECK(ds4_gen_run(g, PROMPT1, strlen(PROMPT1), &p, &cb, &st, &err) == 0);
    CHECK(st.cancelled_prefill);
    CHECK_EQ_INT(st.stop, DS4_GEN_STOP_CANCEL);
    CHECK_EQ_INT(st.prefill_tokens, 8);
    CHECK_EQ_INT(ds4_gen_n_evaluated(g), 8);
    CHECK_EQ_INT(r.n, 0);
    /* ... and the next append reuses them. */
    atomic_store(&cancel, 0);
    cb = cbs(&r);
    CHECK(ds4_gen_append_text(g, PROMPT1, strlen(PROMPT1), &cb, &cancel, &st, &err) == 0);
    CHECK_EQ_INT(st.cached_tokens, 8);

    /* Cancel between tokens. */
    cb = cbs(&r);
    r.cancel = &cancel;
    r.cancel_at = 3;
    greedy(&p, 50);
    p.cancel = &cancel;
    CHECK(ds4_gen_generate(g, &p, &cb, &st, &err) == 0);
    CHECK_EQ_INT(st.stop, DS4_GEN_STOP_CANCEL);
    CHECK_EQ_INT(st.gen_tokens, 3);
    atomic_store(&cancel, 0);

    /* Caller stop. */
    cb = cbs(&r);
    r.stop_at = 2;
    greedy(&p, 50);
    CHECK(ds4_gen_run(g, PROMPT1, strlen(PROMPT1), &p, &cb, &st, &err) == 0);
    CHECK_EQ_INT(st.stop, DS4_GEN_STOP_CALLER);
    CHECK_EQ_INT(st.gen_tokens, 2);

    /* Context full: everything up to ctx is evaluated. */
    cb = cbs(&r);
    greedy(&p, 0);
    CHECK(ds4_gen_run(g, PROMPT1, strlen(PROMPT1), &p, &cb, &st, &err) == 0);
    CHECK_EQ_INT(st.stop, DS4_GEN_STOP_CTX_FULL);
    CHECK_EQ_INT(ds4_gen_n_evaluated(g), 64);
    CHECK_EQ_INT(st.prompt_tokens + st.gen_tokens, 64);

    /* Errors name the problem. */
    CHECK(ds4_gen_append_text(g, "", 0, &cb, NULL, &st, &err) == -1);
    CHECK_STR_CONTAINS(err.msg, "empty prompt");
    char big[2000];
    memset(big, 'a', sizeof big - 1);
    for (size_t i = 0; i < sizeof big - 1; i += 2) big[i] = ' ';
    big[sizeof big - 1] = 0;
    CHECK(ds4_gen_append_text(g, big, strlen(big), &cb, NULL, &st, &err) == -1);
    CHECK_STR_CONTAINS(err.msg, "context holds 64");
    ds4_gen_reset(g);
    CHECK(ds4_gen_generate(g, &p, &cb, &st, &err) == -1);
    ds4_gen_free(g);
}

static void *cancel_soon(void *u) {
    struct timespec ts = {0, 3 * 1000 * 1000};
    nanosleep(&ts, NULL);
    atomic_store((atomic_int *)u, 1);
    return NULL;
}

/* A cancel that lands inside a chunk (here of many 8-token batches) stops
 * it between layers: the history keeps whole batches only, and continuing
 * it gives the tokens of an uninterrupted run.  Where the cancel lands
 * depends on timing; what must hold does not. */
TEST(cancel_inside_chunk) {
    ds4_err err = {{0}};
    ds4_buf b = {0};
    ds4_buf_puts(&b, DS4_TOK_BOS DS4_TOK_USER);
    for (int i = 0; i < 60; i++) ds4_buf_puts(&b, "The quick brown fox jumps over the dog. ");
    ds4_buf_puts(&b, DS4_TOK_ASSISTANT DS4_TOK_THINK_END);
    ds4_engine_opts o;
    ds4_engine_opts_default(&o);
    o.ctx_max = 1024;
    o.n_threads = 2;
    o.max_batch = 8;
    ds4_gen *g = ds4_gen_new(model, tok, &o, 512, &err), *f = ds4_gen_new(model, tok, &o, 0, &err);
    CHECKF(g && f, "%s", err.msg);
    if (!g || !f) { ds4_gen_free(g); ds4_gen_free(f); ds4_buf_free(&b); return; }
    atomic_int cancel = 0;
    pthread_t th;
    rec r;
    ds4_gen_callbacks cb = cbs(&r);
    ds4_gen_stats st;
    CHECK(pthread_create(&th, NULL, cancel_soon, &cancel) == 0);
    CHECK(ds4_gen_append_text(g, b.data, b.len, &cb, &cancel, &st, &err) == 0);
    pthread_join(th, NULL);
    size_t ne = ds4_gen_n_evaluated(g);
    CHECKF(ne == st.prompt_tokens || (ne % 8 == 0 && st.cancelled_prefill), "%zu of %zu evaluated", ne,
           st.prompt_tokens);
    if (st.cancelled_prefill) printf("  cancelled after %zu of %zu prompt tokens\n", ne, st.prompt_tokens);
    atomic_store(&cancel, 0);
    ds4_gen_params p;
    greedy(&p, 6);
    rec a, c;
    cb = cbs(&a);
    CHECK(ds4_gen_run(g, b.data, b.len, &p, &cb, &st, &err) == 0);
    CHECK_EQ_INT(st.cached_tokens, ne);
    ds4_gen_callbacks cf = cbs(&c);
    CHECK(ds4_gen_run(f, b.data, b.len, &p, &cf, &st, &err) == 0);
    CHECK(a.n == 6 && c.n == 6 && !memcmp(a.ids, c.ids, sizeof(int32_t) * 6));
    ds4_gen_free(g);
    ds4_gen_free(f);
    ds4_buf_free(&b);
}

int main(void) {
    char path[PATH_MAX], tj[PATH_MAX];
    snprintf(tj, sizeof tj, "data/tokenizer.json");
    struct stat sb;
    if (stat(tj, &sb)) snprintf(tj, sizeof tj, "%s/data/tokenizer/tokenizer.json", test_shared_dir());
    snprintf(path, sizeof path, "%s/tiny.gguf", test_tmpdir());
    ds4_err err = {{0}};
    ds4_hparams hp;
    ds4_mkmodel_opts mo = {.recipe = "q8_0", .seed = 3, .tokenizer_json = tj};
    ds4_emit_stats es;
    if (ds4_mkmodel_preset("tiny", &hp, &err) || ds4_mkmodel(path, &hp, &mo, &es, &err) ||
        !(model = ds4_model_load(path, &err)) || !(tok = ds4_tokenizer_load_gguf(model->gguf, &err))) {
        fprintf(stderr, "test_gen: cannot make the test model: %s\n", err.msg);
        return 1;
    }
    RUN(prefix_reuse);
    RUN(chunking_and_seeds);
    RUN(stops_and_cancel);
    RUN(cancel_inside_chunk);
    ds4_tokenizer_free(tok);
    ds4_model_free(model);
    unlink(path);
    rmdir(test_tmpdir());
    TEST_END();
}
