/* Generation driver; contract in gen.h.
 *
 * State: ids[0..n) is the timeline; ids[0..n_eval) are in the session, at
 * most one more (the last emitted token) is pending.  text[] holds the
 * concatenated raw bytes of all n ids (for the text path of prefix reuse);
 * logits holds the last evaluated position's logits whenever n_eval > 0. */
#include "gen/gen.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/buf.h"

_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "atomic_int must be lock-free to be set from a signal handler");

struct ds4_gen {
    const ds4_model *model;
    const ds4_tokenizer *tok;
    ds4_session *sess;
    samp *samp;
    int chunk;
    int32_t *ids;
    size_t n, n_eval, cap;
    ds4_buf text;            /* raw bytes of ids[0..n) */
    size_t text_eval;        /* bytes of ids[0..n_eval) */
    float *logits;           /* [V], valid iff n_eval > 0 */
    int32_t eos, think_open;
    uint64_t calls;          /* generate calls, for automatic seeds */
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cancelled(const atomic_int *c) { return c && atomic_load_explicit(c, memory_order_relaxed) != 0; }
static int stop_on_cancel(void *c) { return cancelled(c); } /* ds4_session_eval_stoppable's poll */

const char *ds4_gen_stop_name(ds4_gen_stop s) {
    switch (s) {
    case DS4_GEN_STOP_NONE: return "none";
    case DS4_GEN_STOP_EOS: return "eos";
    case DS4_GEN_STOP_MAX_TOKENS: return "length";
    case DS4_GEN_STOP_CTX_FULL: return "context full";
    case DS4_GEN_STOP_CANCEL: return "cancelled";
    case DS4_GEN_STOP_CALLER: return "stop";
    case DS4_GEN_STOP_CALLS_END: return "tool_calls";
    }
    return "?";
}

void ds4_gen_params_default(ds4_gen_params *p) {
    memset(p, 0, sizeof *p);
    samp_params_default(&p->samp);
    p->max_tokens = 0;
    p->start_in_reasoning = -1;
}

ds4_gen *ds4_gen_new(const ds4_model *m, const ds4_tokenizer *tok, const ds4_engine_opts *opts, int chunk,
                     ds4_err *err) {
    if (ds4_tok_n_vocab(tok) > (int32_t)m->hp.n_vocab) {
        ds4_err_set(err, "tokenizer has %d tokens but the model's vocabulary is %u", ds4_tok_n_vocab(tok),
                    m->hp.n_vocab);
        return NULL;
    }
    ds4_gen *g = calloc(1, sizeof *g);
    if (!g) { ds4_err_set(err, "out of memory"); return NULL; }
    g->model = m;
    g->tok = tok;
    g->eos = ds4_tok_eos(tok);
    g->think_open = ds4_tok_find_str(tok, "<think>");
    ds4_engine_opts o;
    if (opts) o = *opts;
    else ds4_engine_opts_default(&o);
    if (!(g->sess = ds4_session_new(m, &o, NULL, err))) goto fail;
    g->chunk = chunk > 0 ? chunk : g->sess->opts.max_batch;
    if (!(g->samp = samp_new((int32_t)m->hp.n_vocab, 0, err))) goto fail;
    if (!(g->logits = malloc(sizeof(float) * m->hp.n_vocab))) {
        ds4_err_set(err, "out of memory for %u logits", m->hp.n_vocab);
        goto fail;
    }
    return g;
fail:
    ds4_gen_free(g);
    return NULL;
}

void ds4_gen_free(ds4_gen *g) {
    if (!g) return;
    ds4_session_free(g->sess);
    samp_free(g->samp);
    free(g->ids);
    free(g->logits);
    ds4_buf_free(&g->text);
    free(g);
}

void ds4_gen_reset(ds4_gen *g) {
    ds4_session_reset(g->sess);
    g->n = g->n_eval = 0;
    g->text_eval = 0;
    ds4_buf_truncate(&g->text, 0);
}

const int32_t *ds4_gen_tokens(const ds4_gen *g, size_t *n) {
    *n = g->n;
    return g->ids;
}
size_t ds4_gen_n_evaluated(const ds4_gen *g) { return g->n_eval; }
uint32_t ds4_gen_ctx(const ds4_gen *g) { return g->sess->opts.ctx_max; }
const ds4_tokenizer *ds4_gen_tokenizer(const ds4_gen *g) { return g->tok; }

ds4_session *ds4_gen_session(ds4_gen *g) { return g->sess; }
const float *ds4_gen_logits(const ds4_gen *g) { return g->logits; }
const char *ds4_gen_text(const ds4_gen *g, size_t *len) {
    *len = g->text.len;
    return g->text.data ? g->text.data : "";
}

static int push_id(ds4_gen *g, int32_t id, ds4_err *err);

int ds4_gen_adopt(ds4_gen *g, const int32_t *ids, size_t n, const float *logits, ds4_err *err) {
    g->n = g->n_eval = 0;
    g->text_eval = 0;
    ds4_buf_truncate(&g->text, 0);
    if (g->sess->pos != n) {
        ds4_gen_reset(g);
        return ds4_err_set(err, "adopt: session holds %u tokens, history has %zu", g->sess->pos, n);
    }
    for (size_t i = 0; i < n; i++)
        if (push_id(g, ids[i], err)) { ds4_gen_reset(g); return -1; }
    g->n_eval = n;
    g->text_eval = g->text.len;
    if (logits) memcpy(g->logits, logits, sizeof(float) * g->model->hp.n_vocab);
    else memset(g->logits, 0, sizeof(float) * g->model->hp.n_vocab);
    return 0;
}

/* Appends one id to the timeline (not evaluated). */
static int push_id(ds4_gen *g, int32_t id, ds4_err *err) {
    if (g->n == g->cap) {
        size_t nc = g->cap ? g->cap * 2 : 1024;
        int32_t *ni = realloc(g->ids, nc * sizeof *ni);
        if (!ni) return ds4_err_set(err, "out of memory for the token history");
        g->ids = ni;
        g->cap = nc;
    }
    size_t len;
    const char *p = ds4_tok_piece(g->tok, id, &len);
    if (!p) return ds4_err_set(err, "token id %d outside the vocabulary", id);
    if (ds4_buf_append(&g->text, p, len)) return ds4_err_set(err, "out of memory for the history text");
    g->ids[g->n++] = id;
    return 0;
}

/* Drops the non-evaluated tail of the timeline. */
static void drop_pending(ds4_gen *g) {
    g->n = g->n_eval;
    ds4_buf_truncate(&g->text, g->text_eval);
}

/* Evaluates ids[n_eval..n) in chunks, with progress and cancellation. */
static int eval_pending(ds4_gen *g, const ds4_gen_callbacks *cb, const atomic_int *cancel, ds4_gen_stats *st,
                        ds4_err *err) {
    size_t total = g->n - g->n_eval, done = 0;
    double t0 = now_s();
    while (g->n_eval < g->n) {
        if (cancelled(cancel)) {
            st->cancelled_prefill = 1;
            break;
        }
        size_t k = g->n - g->n_eval;
        if (k > (size_t)g->chunk) k = (size_t)g->chunk;
        /* Every chunk asks for the last logits (one LM-head row, cheap next to
         * the chunk): after a cancel the history still has valid logits.  A
         * cancel inside a chunk stops it between layers and undoes its
         * unfinished batch, so a large chunk is still interrupted at once. */
        const uint32_t p0 = g->sess->pos;
        int rc = ds4_session_eval_stoppable(g->sess, g->ids + g->n_eval, (int)k, DS4_LOGITS_LAST, g->logits,
                                            cancel ? stop_on_cancel : NULL, (void *)cancel, err);
        if (rc < 0) {
            ds4_gen_reset(g);
            return -1;
        }
        if (rc > 0) k = g->sess->pos - p0; /* the batches before the stop */
        for (size_t i = 0; i < k; i++) {
            size_t len;
            ds4_tok_piece(g->tok, g->ids[g->n_eval + i], &len);
            g->text_eval += len;
        }
        g->n_eval += k;
        done += k;
        if (rc > 0) {
            st->cancelled_prefill = 1;
            break;
        }
        if (cb && cb->on_progress) cb->on_progress(cb->user, done, total);
    }
    st->prefill_tokens = done;
    st->prefill_s = now_s() - t0;
    if (g->n_eval < g->n) drop_pending(g);
    return 0;
}

/* Longest common prefix of the timeline and ids[0..n). */
static size_t common_prefix(const ds4_gen *g, const int32_t *ids, size_t n) {
    size_t k = 0;
    while (k < n && k < g->n && g->ids[k] == ids[k]) k++;
    return k;
}

static int append_ids(ds4_gen *g, const int32_t *ids, size_t n, size_t from, const ds4_gen_callbacks *cb,
                      const atomic_int *cancel, ds4_gen_stats *st, ds4_err *err) {
    for (size_t i = from; i < n; i++)
        if (push_id(g, ids[i], err)) return -1;
    if (g->n > ds4_gen_ctx(g)) {
        size_t want = g->n;
        drop_pending(g);
        return ds4_err_set(err, "prompt is %zu tokens but the context holds %u (raise --ctx)", want, ds4_gen_ctx(g));
    }
    st->prompt_tokens = g->n;
    st->cached_tokens = g->n_eval;
    return eval_pending(g, cb, cancel, st, err);
}

static void stats_begin_append(ds4_gen_stats *st) {
    st->prompt_tokens = st->cached_tokens = st->prefill_tokens = 0;
    st->prefill_s = 0;
    st->cancelled_prefill = 0;
}

int ds4_gen_append_tokens(ds4_gen *g, const int32_t *ids, size_t n, const ds4_gen_callbacks *cb,
                          const atomic_int *cancel, ds4_gen_stats *st, ds4_err *err) {
    ds4_gen_stats dummy;
    if (!st) st = &dummy;
    stats_begin_append(st);
    if (n == 0) return ds4_err_set(err, "empty prompt: nothing to evaluate");
    size_t k = common_prefix(g, ids, n);
    /* Reuse only if the whole timeline is a prefix (the session cannot
     * rewind; the logits of an older position are not kept). */
    if (k < g->n) {
        ds4_gen_reset(g);
        k = 0;
    } else if (n == g->n && g->n_eval == g->n) {
        st->prompt_tokens = st->cached_tokens = n;
        return 0; /* identical: the stored logits are the ones needed */
    }
    return append_ids(g, ids, n, k, cb, cancel, st, err);
}

int ds4_gen_append_text(ds4_gen *g, const char *text, size_t len, const ds4_gen_callbacks *cb,
                        const atomic_int *cancel, ds4_gen_stats *st, ds4_err *err) {
    ds4_gen_stats dummy;
    if (!st) st = &dummy;
    stats_begin_append(st);
    if (len == 0) return ds4_err_set(err, "empty prompt: nothing to evaluate");
    ds4_tok_ids v = {0};
    int rc;
    /* Text path: the prompt continues the timeline's bytes at an added token. */
    if (g->n > 0 && len > g->text.len && !memcmp(text, g->text.data, g->text.len)) {
        if (ds4_tok_encode(g->tok, text + g->text.len, len - g->text.len, 0, &v, err)) {
            ds4_tok_ids_free(&v);
            return -1;
        }
        if (v.n > 0 && ds4_tok_is_added(g->tok, v.ids[0])) {
            size_t plen;
            const char *p = ds4_tok_piece(g->tok, v.ids[0], &plen);
            if (plen <= len - g->text.len && !memcmp(p, text + g->text.len, plen)) {
                rc = append_ids(g, v.ids, v.n, 0, cb, cancel, st, err);
                ds4_tok_ids_free(&v);
                return rc;
            }
        }
        v.n = 0;
    }
    if (ds4_tok_encode(g->tok, text, len, 0, &v, err)) {
        ds4_tok_ids_free(&v);
        return -1;
    }
    rc = ds4_gen_append_tokens(g, v.ids, v.n, cb, cancel, st, err);
    ds4_tok_ids_free(&v);
    return rc;
}

/* ---- Decode loop ---- */

typedef struct run_ctx {
    const ds4_gen_callbacks *cb;
    int calls_end;
} run_ctx;

static void on_dsml(void *user, const ds4_dsml_event *ev) {
    run_ctx *rc = user;
    if (ev->type == DS4_DSML_CALLS_END) rc->calls_end = 1;
    if (rc->cb && rc->cb->on_event) rc->cb->on_event(rc->cb->user, ev);
}

int ds4_gen_generate(ds4_gen *g, const ds4_gen_params *p, const ds4_gen_callbacks *cb, ds4_gen_stats *st,
                     ds4_err *err) {
    ds4_gen_stats dummy;
    if (!st) st = &dummy;
    st->gen_tokens = 0;
    st->gen_s = 0;
    st->stop = DS4_GEN_STOP_NONE;
    if (g->n_eval == 0) return ds4_err_set(err, "generate: no prompt evaluated");
    if (samp_params_check(&p->samp, err)) return -1;
    /* A pending token from an earlier run that the caller did not continue
     * from: the new run starts after the evaluated history. */
    drop_pending(g);

    int in_reasoning = p->start_in_reasoning;
    if (in_reasoning < 0) in_reasoning = g->think_open >= 0 && g->ids[g->n_eval - 1] == g->think_open;
    run_ctx rcx = {cb, 0};
    ds4_dsml_opts dopt = {.start_in_reasoning = in_reasoning, .no_tools = p->no_tools};
    ds4_dsml_parser *dp = ds4_dsml_new(&dopt, on_dsml, &rcx, err);
    if (!dp) return -1;
    ds4_tok_stream ts;
    ds4_tok_stream_init(&ts, g->tok, DS4_TOK_INVALID_REPLACE);
    samp_seed_params(g->samp, &p->samp, g->calls++);

    int rc = -1;
    const char *out;
    size_t out_len;
    uint32_t ctx = ds4_gen_ctx(g);
    double t0 = now_s();
    for (;;) {
        if (cancelled(p->cancel)) { st->stop = DS4_GEN_STOP_CANCEL; break; }
        if (p->max_tokens > 0 && st->gen_tokens >= (size_t)p->max_tokens) { st->stop = DS4_GEN_STOP_MAX_TOKENS; break; }
        if (g->n_eval >= ctx) { st->stop = DS4_GEN_STOP_CTX_FULL; break; }
        size_t nw = p->samp.penalty_last_n < 0 ? g->n : (size_t)p->samp.penalty_last_n;
        if (nw > g->n) nw = g->n;
        samp_opts so = {.recent = g->ids + g->n - nw, .n_recent = nw};
        int32_t id;
        int s = SAMP_OK;
        if (p->forced) /* TEST ONLY hook, see gen.h */
            id = st->gen_tokens < p->n_forced ? p->forced[st->gen_tokens] : g->eos;
        else
        {
            samp_params sp = p->samp;
            if (cb && cb->on_params) cb->on_params(cb->user, &sp);
            s = samp_sample(g->samp, g->logits, &sp, &so, &id);
        }
        if (s != SAMP_OK) {
            ds4_err_set(err, "sampling failed (%s)", s == SAMP_ERR_EMPTY ? "no finite logit" : "bad parameters");
            goto done;
        }
        if (id == g->eos) { st->stop = DS4_GEN_STOP_EOS; break; }
        if (push_id(g, id, err)) goto done;
        st->gen_tokens++;
        if (ds4_tok_stream_push(&ts, id, &out, &out_len, err)) goto done;
        int stop_req = cb && cb->on_token ? cb->on_token(cb->user, id, out, out_len) : 0;
        if (out_len && ds4_dsml_feed(dp, out, out_len, err)) goto done;
        if (stop_req) { st->stop = DS4_GEN_STOP_CALLER; break; }
        if (rcx.calls_end && p->stop_at_calls_end) { st->stop = DS4_GEN_STOP_CALLS_END; break; }
        /* Feed the token unless the loop is about to stop anyway: the last
         * emitted token stays pending and costs nothing. */
        if (p->max_tokens > 0 && st->gen_tokens >= (size_t)p->max_tokens) continue;
        if (g->n_eval >= ctx) continue;
        if (cancelled(p->cancel)) continue;
        if (ds4_session_eval(g->sess, &id, 1, DS4_LOGITS_LAST, g->logits, err)) {
            ds4_gen_reset(g);
            goto done;
        }
        g->n_eval = g->n;
        g->text_eval = g->text.len;
    }
    if (ds4_tok_stream_flush(&ts, &out, &out_len, err)) goto done;
    if (out_len) {
        if (cb && cb->on_token) cb->on_token(cb->user, -1, out, out_len);
        if (ds4_dsml_feed(dp, out, out_len, err)) goto done;
    }
    if (ds4_dsml_finish(dp, err)) goto done;
    rc = 0;
done:
    st->gen_s = now_s() - t0;
    ds4_tok_stream_free(&ts);
    ds4_dsml_free(dp);
    return rc;
}

int ds4_gen_run(ds4_gen *g, const char *prompt, size_t len, const ds4_gen_params *p, const ds4_gen_callbacks *cb,
                ds4_gen_stats *st, ds4_err *err) {
    ds4_gen_stats dummy;
    if (!st) st = &dummy;
    if (ds4_gen_append_text(g, prompt, len, cb, p->cancel, st, err)) return -1;
    if (st->cancelled_prefill) {
        st->gen_tokens = 0;
        st->gen_s = 0;
        st->stop = DS4_GEN_STOP_CANCEL;
        return 0;
    }
    return ds4_gen_generate(g, p, cb, st, err);
}
