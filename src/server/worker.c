/* The engine side of a job (runs on the worker thread only): KV prefix
 * reuse and disk checkpoints (API.md §17, §18), prefill with disconnect
 * probes, decode through the shared generation driver (gen/gen.h), stop
 * sequences, DSML parsing into the endpoint callbacks, usage, tool memory.
 *
 * Decision order for a prompt (first match wins):
 *   memory-text   the prompt bytes start with the live history's bytes:
 *                 history + tokenize(rest) — the model's own tokens stay
 *                 even where a re-tokenization would differ (BPE seams);
 *   memory-token  tokenize(prompt) starts with the live history ids;
 *   disk-text     miss: save the live session (evict), then load the
 *                 longest checkpoint whose key is a byte prefix of the
 *                 prompt; effective prompt = its ids + tokenize(rest);
 *   cold          prefill from zero; a cold checkpoint is written at the
 *                 chat anchor (or an aligned boundary) on the way.
 * The Responses/Anthropic live-binding fast paths (§17.2 steps 1-4, 6) are
 * not implemented: those clients replay full histories, which the text
 * path continues as long as exact DSML replay reproduces the sampled bytes.
 *
 * Our own DSML parser runs on the on_token stream (the driver's parser
 * cannot hold back bytes for stop sequences): bytes go through a hold-back
 * of maxlen(stop)-1 so a stop string split across tokens is never emitted
 * (§4.5), then into the parser whose events drive the srv_out_vt. */
#include <stdlib.h>
#include <string.h>

#include "gen/gen.h"
#include "kv/kvcache.h"
#include "quant/quant.h"
#include "server/srv_int.h"
#include "text/dsml.h"

struct srv_engine {
    srv_ctx *s;
    ds4_gen *g;
    int32_t id_user, id_assistant;
    uint32_t last_continued;   /* live frontier of the last continued save */
    uint32_t step;             /* continued-save step (interval rounded up to align) */
    /* Visible-transcript binding (API.md §17.2 steps 1 and 6): the bytes a
     * client will replay for the last turn (hidden reasoning dropped, exact
     * DSML kept) and the history length it stands for. */
    char *bind_key;
    size_t bind_len, bind_n;
};

static void kv_log(void *user, const char *msg) {
    srv_ctx *s = user;
    srv_log("%s", msg);
    srv_trace_printf(s->trace, "%s", msg);
}

static void import_toolmap(void *user, const void *data, size_t len) {
    srv_ctx *s = user;
    srv_toolmem_import(s->toolmem, data, len, 4 * s->cfg.tool_memory_max_ids);
}

srv_engine *srv_engine_new(srv_ctx *s, ds4_err *err) {
    srv_engine *e = calloc(1, sizeof *e);
    if (!e) { ds4_err_set(err, "out of memory"); return NULL; }
    e->s = s;
    ds4_engine_opts o;
    ds4_engine_opts_default(&o);
    o.ctx_max = s->cfg.ctx;
    o.n_threads = s->cfg.threads;
    o.experts = s->cfg.experts;
    if (!(e->g = ds4_gen_new(s->model, s->tok, &o, s->cfg.chunk, err))) { free(e); return NULL; }
    e->id_user = ds4_tok_find_str(s->tok, DS4_TOK_USER);
    e->id_assistant = ds4_tok_find_str(s->tok, DS4_TOK_ASSISTANT);
    uint32_t a = s->cfg.kv_align_tokens, iv = s->cfg.kv_continued_interval;
    e->step = iv && a ? (iv + a - 1) / a * a : iv;
    if (s->cfg.kv_disk_dir) {
        kv_opts ko = {.dir = s->cfg.kv_disk_dir,
                      .budget_bytes = s->cfg.kv_disk_space_mb << 20,
                      .min_tokens = s->cfg.kv_min_tokens,
                      .ctx = s->cfg.ctx,
                      .reject_different_quant = s->cfg.kv_reject_different_quant,
                      .log = kv_log,
                      .log_user = s};
        /* Routed-expert quant of the header (§18.2): 2 for the 2-bit types, else 4. */
        int ty = s->model->hp.n_layer ? s->model->layers[s->model->hp.n_layer - 1].gate_exps.type : 0;
        ko.quant_bits = ty == DS4_TYPE_Q2_K || ty == DS4_TYPE_IQ2_XXS ? 2 : 4;
        if (!(s->kv = kv_cache_open(&ko, err))) { ds4_gen_free(e->g); free(e); return NULL; }
        int nmaps = kv_cache_each_toolmap(s->kv, import_toolmap, s);
        if (nmaps) srv_log("kv cache: tool-id maps of %d checkpoints loaded (%zu ids)", nmaps, srv_toolmem_count(s->toolmem));
    }
    return e;
}

void srv_engine_free(srv_engine *e) {
    if (!e) return;
    free(e->bind_key);
    ds4_gen_free(e->g);
    if (e->s->kv) { kv_cache_close(e->s->kv); e->s->kv = NULL; }
    free(e);
}

size_t srv_engine_live_tokens(srv_engine *e) { return ds4_gen_n_evaluated(e->g); }

/* Saves the evaluated part of the live session; key = its decoded bytes. */
static void save_live(srv_engine *e, enum kv_reason reason) {
    srv_ctx *s = e->s;
    size_t n = ds4_gen_n_evaluated(e->g), nh;
    if (!s->kv || n < s->cfg.kv_min_tokens) return;
    const int32_t *ids = ds4_gen_tokens(e->g, &nh);
    if (nh > n && reason != KV_REASON_CONTINUED && reason != KV_REASON_COLD) {
        /* The last sampled token is still pending (never fed).  Feed it so
         * the checkpoint ends where the client's replay continues, e.g. on
         * the closing tag of a tool-call block whose id map it carries. */
        ds4_gen_stats st;
        ds4_err e2 = {{0}};
        if (ds4_gen_append_tokens(e->g, ids, nh, NULL, NULL, &st, &e2) == 0) {
            ids = ds4_gen_tokens(e->g, &nh);
            n = ds4_gen_n_evaluated(e->g);
        } else {
            srv_log("kv save: feeding the pending token failed: %s", e2.msg);
            return;
        }
    }
    char *key = NULL;
    size_t klen = 0;
    ds4_err err = {{0}};
    if (ds4_tok_decode(s->tok, ids, n, &key, &klen, &err)) { srv_log("kv save: %s", err.msg); return; }
    ds4_buf extra = {0};
    if (srv_toolmem_export(s->toolmem, key, klen, &extra) <= 0) ds4_buf_truncate(&extra, 0);
    if (kv_cache_save(s->kv, key, klen, reason, ds4_gen_session(e->g), ids, (uint32_t)n, ds4_gen_logits(e->g),
                      extra.len ? extra.data : NULL, extra.len, &err) < 0)
        srv_log("kv save failed: %s", err.msg);
    ds4_buf_free(&extra);
    free(key);
}

void srv_engine_shutdown_save(srv_engine *e) {
    if (e && e->s->kv) save_live(e, KV_REASON_SHUTDOWN);
}

/* ---- per-job generation state ---- */

typedef struct run {
    srv_engine *e;
    srv_job *j;
    ds4_dsml_parser *dp;
    ds4_buf hold;          /* generated bytes not yet fed (stop-sequence hold-back) */
    size_t stop_max;       /* longest stop string */
    ds4_buf block;         /* raw bytes of the current DSML block */
    ds4_buf gen_text;      /* everything generated, for the trace */
    bool calls_end, stop_hit, retracted;
    long block_first;      /* index of the first call of the open block, -1 none */
    bool in_string_arg;    /* inside a string="true" argument value */
    long reasoning_tokens;
} run;

static void on_event(void *user, const ds4_dsml_event *ev) {
    run *r = user;
    srv_job *j = r->j;
    const srv_out_vt *o = j->out;
    /* Calls are sequential: argument and end events belong to the latest one
     * (the parser's own numbering may run ahead after a retraction). */
    srv_call *c = j->n_calls ? &j->calls[j->n_calls - 1] : NULL;
    switch (ev->type) {
    case DS4_DSML_REASONING:
        ds4_buf_append(&j->reasoning, ev->data, ev->len);
        if (o->reasoning) o->reasoning(j, ev->data, ev->len);
        break;
    case DS4_DSML_REASONING_END:
        j->reasoning_closed = true;
        if (o->reasoning_end) o->reasoning_end(j);
        break;
    case DS4_DSML_TEXT:
        ds4_buf_append(&j->content, ev->data, ev->len);
        if (o->text) o->text(j, ev->data, ev->len);
        break;
    case DS4_DSML_TOOL_START:
        ds4_buf_append(&r->block, ev->raw, ev->raw_len);
        if (r->block_first < 0) r->block_first = (long)j->n_calls;
        c = srv_job_add_call(j, ev->name, j->req->api == SRV_API_MESSAGES ? "toolu_" : "call_");
        srv_trace_printf(j->srv->trace, "dsml: tool start #%d %s", ev->index, ev->name ? ev->name : "");
        if (c && o->tool_start) o->tool_start(j, c);
        break;
    case DS4_DSML_TOOL_ARGS:
        ds4_buf_append(&r->block, ev->raw, ev->raw_len);
        if (c) {
            ds4_buf_append(&c->args, ev->data, ev->len);
            if (o->tool_args) o->tool_args(j, c, ev->data, ev->len);
        }
        /* Structure fragments carry the only unescaped quotes: a header of a
         * string parameter ends in ":\"", its close is a lone quote. */
        if (ev->len >= 3 && !memcmp(ev->data + ev->len - 3, "\":\"", 3)) r->in_string_arg = true;
        else if (ev->len == 1 && ev->data[0] == '"') r->in_string_arg = false;
        break;
    case DS4_DSML_TOOL_END:
        r->in_string_arg = false;
        ds4_buf_append(&r->block, ev->raw, ev->raw_len);
        if (c) {
            ds4_buf_truncate(&c->args, 0);
            ds4_buf_append(&c->args, ev->data, ev->len); /* the final parse is authoritative */
            c->complete = true;
            srv_trace_printf(j->srv->trace, "dsml: tool end #%d %s %.*s", ev->index, c->name, (int)ev->len, ev->data);
            if (o->tool_end) o->tool_end(j, c);
        }
        break;
    case DS4_DSML_CALLS_END:
        ds4_buf_append(&r->block, ev->raw, ev->raw_len);
        r->calls_end = true;
        r->block_first = -1;
        srv_trace_printf(j->srv->trace, "dsml: calls end (%zu calls)", j->n_calls);
        break;
    case DS4_DSML_ERROR:
        srv_log("malformed DSML tool call recovered as text: %.*s", (int)ev->len, ev->data);
        srv_trace_printf(j->srv->trace, "dsml: error %.*s", (int)ev->len, ev->data);
        if (ev->index >= 0 && r->block_first >= 0 && (size_t)r->block_first < j->n_calls) {
            /* Calls already announced cannot be taken back on a stream. */
            if (j->stream) r->retracted = true;
            for (size_t i = (size_t)r->block_first; i < j->n_calls; i++) {
                free(j->calls[i].name);
                ds4_buf_free(&j->calls[i].args);
            }
            j->n_calls = (size_t)r->block_first;
        }
        r->block_first = -1;
        ds4_buf_truncate(&r->block, 0);
        break;
    case DS4_DSML_IGNORED:
        break;
    }
}

/* Feeds generated bytes through the stop-sequence hold-back.  Returns 1 when
 * a stop string matched (text before it was fed). */
static int feed(run *r, const char *s, size_t n, bool final) {
    srv_req *q = r->j->req;
    ds4_buf_append(&r->hold, s, n);
    if (!r->hold.len) return 0;
    for (size_t i = 0; i < q->n_stop; i++) {
        char *hit = memmem(r->hold.data, r->hold.len, q->stop[i], strlen(q->stop[i]));
        if (hit) {
            size_t k = (size_t)(hit - r->hold.data);
            if (k) ds4_dsml_feed(r->dp, r->hold.data, k, NULL);
            ds4_buf_truncate(&r->hold, 0);
            r->stop_hit = true;
            free(r->j->stop_hit);
            r->j->stop_hit = strdup(q->stop[i]);
            return 1;
        }
    }
    size_t keep = final || !r->stop_max ? 0 : r->stop_max - 1;
    if (r->hold.len > keep) {
        size_t k = r->hold.len - keep;
        ds4_dsml_feed(r->dp, r->hold.data, k, NULL);
        ds4_buf_consume(&r->hold, k);
    }
    return 0;
}

/* Continued checkpoint (API.md §18.4) when the live frontier reaches a
 * multiple of the step, during prefill or decode, never inside a tool call. */
static void maybe_continued(run *r) {
    srv_engine *e = r->e;
    size_t n = ds4_gen_n_evaluated(e->g);
    if (!e->s->kv || !e->step || n % e->step || n <= e->last_continued) return;
    if (r->dp && ds4_dsml_in_block(r->dp)) return;
    save_live(e, KV_REASON_CONTINUED);
    e->last_continued = (uint32_t)n;
}

static int on_token(void *user, int32_t id, const char *text, size_t len) {
    run *r = user;
    maybe_continued(r);
    if (id >= 0 && ds4_dsml_in_reasoning(r->dp)) r->reasoning_tokens++;
    ds4_buf_append(&r->gen_text, text, len);
    if (feed(r, text, len, false)) return 1;
    if (r->calls_end) return 1;
    return srv_job_cancelled(r->j) ? 1 : 0;
}

/* Protocol syntax is sampled greedily (API.md §4.3): inside a DSML block,
 * except while writing a string argument's payload (file contents, edit
 * text), where greedy decoding would repeat itself. */
static void on_params(void *user, samp_params *p) {
    run *r = user;
    if (r->dp && ds4_dsml_in_block(r->dp) && !r->in_string_arg) p->temperature = 0;
}

static void on_progress(void *user, size_t done, size_t total) {
    run *r = user;
    (void)done;
    (void)total;
    srv_job_cancelled(r->j); /* sets j->cancel, which the driver polls */
    maybe_continued(r);
}

static int tokenize(srv_ctx *s, const char *text, size_t len, ds4_tok_ids *out, srv_error *se) {
    ds4_err err = {{0}};
    if (len && ds4_tok_encode(s->tok, text, len, 0, out, &err))
        return srv_err(se, 500, NULL, NULL, NULL, "tokenizer failed: %s", err.msg);
    return 0;
}

static int append_ids(ds4_tok_ids *v, const int32_t *ids, size_t n) {
    if (v->n + n > v->cap) {
        size_t nc = v->n + n + 64;
        int32_t *x = realloc(v->ids, nc * sizeof *x);
        if (!x) return -1;
        v->ids = x;
        v->cap = nc;
    }
    memcpy(v->ids + v->n, ids, n * sizeof *ids);
    v->n += n;
    return 0;
}

/* Cold-save boundary (API.md §18.4): the chat anchor (last <｜User｜> before
 * the first <｜Assistant｜>) if long enough, else an aligned, trimmed
 * prefix, else the whole prompt. */
static size_t cold_cut(srv_engine *e, const ds4_tok_ids *ids) {
    const srv_config *c = &e->s->cfg;
    size_t anchor = 0;
    for (size_t i = 0; i < ids->n; i++) {
        if (ids->ids[i] == e->id_assistant) break;
        if (ids->ids[i] == e->id_user) anchor = i;
    }
    if (anchor >= c->kv_min_tokens) return anchor;
    size_t P = ids->n, t = P > c->kv_trim_tokens ? P - c->kv_trim_tokens : 0;
    if (c->kv_align_tokens) t = t / c->kv_align_tokens * c->kv_align_tokens;
    if (t >= c->kv_min_tokens) return t;
    return P;
}

static void clear_binding(srv_engine *e) {
    free(e->bind_key);
    e->bind_key = NULL;
    e->bind_len = e->bind_n = 0;
}

/* After a turn, renders the conversation as the client will send it back
 * (its request + this answer, reasoning only where the API returns it and
 * the renderer keeps it once a later user turn exists, the exact sampled
 * DSML block) and keeps the bytes up to the end of the answer.  A next
 * prompt that starts with them continues the live history even though the
 * history also holds hidden reasoning the replay omits. */
static void make_binding(srv_engine *e, srv_job *j, const char *block, size_t block_len) {
    srv_req *q = j->req;
    clear_binding(e);
    if (q->api == SRV_API_COMPLETIONS || !q->chat) return;
    ds4_err err = {{0}};
    ds4_chat_msg *m = ds4_chat_add(q->chat, DS4_ROLE_ASSISTANT, j->content.data ? j->content.data : "", &err);
    if (!m) return;
    bool reasoning_visible = q->api != SRV_API_RESPONSES || q->reasoning_summary;
    if (reasoning_visible && j->reasoning.len && ds4_chat_msg_set_reasoning(m, j->reasoning.data, &err)) return;
    for (size_t i = 0; i < j->n_calls; i++)
        if (ds4_chat_msg_add_tool_call(m, j->calls[i].id, j->calls[i].name,
                                       j->calls[i].args.data ? j->calls[i].args.data : "{}", &err)) return;
    ds4_buf canon = {0};
    if (j->n_calls && ds4_chat_render_tool_calls(&canon, m->tool_calls, m->n_tool_calls, &err)) { ds4_buf_free(&canon); return; }
    if (!ds4_chat_add(q->chat, DS4_ROLE_USER, "x", &err)) { ds4_buf_free(&canon); return; }
    ds4_chat_opts o = {.mode = q->mode, .n_ctx = e->s->cfg.ctx};
    size_t len;
    char *txt = ds4_chat_render(q->chat, &o, &len, &err);
    if (!txt) { ds4_buf_free(&canon); return; }
    /* cut before the dummy user turn, and before the EOS the history lacks */
    char *u = NULL;
    for (char *p = txt; (p = memmem(p, len - (size_t)(p - txt), DS4_TOK_USER, strlen(DS4_TOK_USER))); p++) u = p;
    size_t cut = u ? (size_t)(u - txt) : 0, el = strlen(DS4_TOK_EOS);
    if (cut >= el && !memcmp(txt + cut - el, DS4_TOK_EOS, el)) cut -= el;
    ds4_buf key = {0};
    if (cut && canon.len && block_len) {
        char *c = NULL;
        for (char *p = txt; (p = memmem(p, cut - (size_t)(p - txt), canon.data, canon.len)); p++) c = p;
        if (c) {
            ds4_buf_append(&key, txt, (size_t)(c - txt));
            ds4_buf_append(&key, block, block_len);
            ds4_buf_append(&key, c + canon.len, cut - (size_t)(c - txt) - canon.len);
        }
    } else if (cut) {
        ds4_buf_append(&key, txt, cut);
    }
    free(txt);
    ds4_buf_free(&canon);
    size_t hn;
    ds4_gen_tokens(e->g, &hn);
    if (key.len) {
        e->bind_len = key.len;
        e->bind_key = ds4_buf_take(&key, NULL);
        e->bind_n = hn;
    }
    ds4_buf_free(&key);
}

void srv_engine_run(void *user, srv_job *j) {
    srv_engine *e = user;
    srv_ctx *s = e->s;
    srv_req *q = j->req;
    ds4_gen *g = e->g;
    srv_error se = {0};
    ds4_err err = {{0}};
    ds4_tok_ids ids = {0};
    run r = {.e = e, .j = j, .block_first = -1};
    const char *decision = "cold";
    double t0 = srv_now();
    kv_hit hit = {0};
    bool have_hit = false;

    if (atomic_load(&s->shutting_down)) {
        srv_err(&se, 503, "server_error", NULL, NULL, "server shutting down");
        srv_job_fail(j, &se);
        return;
    }
    if (srv_job_cancelled(j)) { srv_log("client gone before its job started; skipped"); return; }
    srv_trace_text(s->trace, "prompt", q->prompt, q->prompt_len);

    /* ---- cache decision ---- */
    size_t hn, tlen;
    const int32_t *hist = ds4_gen_tokens(g, &hn);
    const char *htext = ds4_gen_text(g, &tlen);
    size_t reused = 0;
    if (e->bind_key && hn && hn == e->bind_n && q->prompt_len >= e->bind_len &&
        !memcmp(q->prompt, e->bind_key, e->bind_len) && (e->bind_len != tlen || memcmp(htext, e->bind_key, tlen))) {
        decision = "visible-binding";
        if (append_ids(&ids, hist, hn) ||
            tokenize(s, q->prompt + e->bind_len, q->prompt_len - e->bind_len, &ids, &se)) goto fail;
        reused = ds4_gen_n_evaluated(g);
    } else if (hn && q->prompt_len >= tlen && !memcmp(q->prompt, htext, tlen)) {
        decision = "memory-text";
        if (append_ids(&ids, hist, hn) || tokenize(s, q->prompt + tlen, q->prompt_len - tlen, &ids, &se)) goto fail;
        reused = ds4_gen_n_evaluated(g);
    } else {
        if (tokenize(s, q->prompt, q->prompt_len, &ids, &se)) goto fail;
        size_t common = 0;
        while (common < hn && common < ids.n && hist[common] == ids.ids[common]) common++;
        if (hn && common == hn) {
            decision = "memory-token";
            reused = ds4_gen_n_evaluated(g);
        } else {
            if (hn) {
                srv_log("live cache miss: live=%zu prompt=%zu common=%zu reason=token-mismatch", hn, ids.n, common);
                srv_trace_printf(s->trace, "cache: miss live=%zu prompt=%zu common=%zu", hn, ids.n, common);
            }
            if (s->kv) {
                kv_cache_protect(s->kv, q->prompt, q->prompt_len);
                save_live(e, KV_REASON_EVICT);
                kv_cache_protect(s->kv, NULL, 0);
                float *lg = malloc(sizeof(float) * s->model->hp.n_vocab);
                int rc = lg ? kv_cache_load_prefix(s->kv, q->prompt, q->prompt_len, ds4_gen_session(g), lg,
                                                   s->cfg.kv_cold_max_tokens, &hit, &err)
                            : -1;
                if (rc == 1 && ds4_gen_adopt(g, hit.tokens, hit.n_tokens, lg, &err) == 0) {
                    have_hit = true;
                    decision = "disk-text";
                    ids.n = 0;
                    if (append_ids(&ids, hit.tokens, hit.n_tokens) ||
                        tokenize(s, q->prompt + hit.key_len, q->prompt_len - hit.key_len, &ids, &se)) {
                        free(lg);
                        goto fail;
                    }
                    reused = hit.n_tokens;
                    e->last_continued = hit.n_tokens;
                    if (hit.extra) srv_toolmem_import(s->toolmem, hit.extra, hit.extra_len, 4 * s->cfg.tool_memory_max_ids);
                    srv_log("kv cache: disk hit %s tokens=%u key_bytes=%zu suffix_tokens=%zu", hit.name, hit.n_tokens,
                            hit.key_len, ids.n - hit.n_tokens);
                } else {
                    if (rc < 0) srv_log("kv cache lookup failed: %s", err.msg);
                    ds4_gen_reset(g);
                }
                free(lg);
            }
            if (!have_hit) { ds4_gen_reset(g); e->last_continued = 0; }
        }
    }
    if (ids.n >= s->cfg.ctx) {
        srv_err(&se, 400, NULL, "context_length_exceeded", "messages",
                "Prompt has %zu tokens, but the configured context size is %u tokens", ids.n, s->cfg.ctx);
        se.n_prompt = (long)ids.n;
        se.n_ctx = (long)s->cfg.ctx;
        goto fail;
    }
    clear_binding(e); /* re-made after a successful turn */
    srv_trace_printf(s->trace, "cache: decision=%s prompt_tokens=%zu reused=%zu", decision, ids.n, reused);
    j->P = (long)ids.n;
    j->C = (long)reused;
    j->W = j->P - j->C;
    j->started = true;
    if (j->out->start) j->out->start(j);

    /* ---- prefill ---- */
    ds4_gen_callbacks cb = {.user = &r, .on_progress = on_progress, .on_token = on_token, .on_params = on_params};
    ds4_gen_stats st = {0};
    size_t cut = 0;
    if (!strcmp(decision, "cold") && s->kv && ids.n >= s->cfg.kv_min_tokens && ids.n <= s->cfg.kv_cold_max_tokens &&
        s->cfg.kv_cold_max_tokens) {
        cut = cold_cut(e, &ids);
        if (cut < ids.n) {
            if (ds4_gen_append_tokens(g, ids.ids, cut, &cb, &j->cancel, &st, &err)) goto engine_fail;
            if (st.cancelled_prefill) goto cancelled;
            save_live(e, KV_REASON_COLD);
        }
    }
    if (ds4_gen_append_tokens(g, ids.ids, ids.n, &cb, &j->cancel, &st, &err)) goto engine_fail;
    if (st.cancelled_prefill) goto cancelled;
    if (cut == ids.n && cut) save_live(e, KV_REASON_COLD);
    if (have_hit) srv_log("kv cache: prefill after disk hit = %zu tokens", ids.n - reused);

    /* ---- generate ---- */
    int64_t room = (int64_t)s->cfg.ctx - (int64_t)ids.n;
    int64_t maxt = q->max_tokens >= 0 ? q->max_tokens : s->cfg.default_max_tokens;
    if (maxt > room) maxt = room;
    int start_think = q->prompt_len >= 7 && !memcmp(q->prompt + q->prompt_len - 7, "<think>", 7);
    ds4_dsml_opts dopt = {.start_in_reasoning = start_think, .no_tools = !q->tools_active};
    if (!(r.dp = ds4_dsml_new(&dopt, on_event, &r, &err))) goto engine_fail;
    for (size_t i = 0; i < q->n_stop; i++) if (strlen(q->stop[i]) > r.stop_max) r.stop_max = strlen(q->stop[i]);
    ds4_gen_params gp;
    ds4_gen_params_default(&gp);
    gp.samp = q->samp;
    gp.max_tokens = (long)maxt;
    gp.start_in_reasoning = start_think;
    gp.no_tools = 1; /* the driver's own parser is not used; ours is */
    gp.cancel = &j->cancel;
    ds4_tok_ids forced = {0};
    if (!q->force_output && s->test_force_next < s->cfg.n_test_force) {
        /* TEST ONLY: real agent clients cannot send the header; the scripted
         * outputs are taken in worker (= execution) order. */
        int k = s->test_force_next++;
        q->force_output = srv_pct_decode(s->cfg.test_force[k]);
        srv_log("TEST: forced output %d/%d", k + 1, s->cfg.n_test_force);
        srv_trace_printf(s->trace, "test: forced output %d/%d", k + 1, s->cfg.n_test_force);
    }
    if (q->force_output) {
        if (tokenize(s, q->force_output, strlen(q->force_output), &forced, &se)) goto fail;
        static const int32_t none[1] = {0};
        gp.forced = forced.ids ? forced.ids : none;
        gp.n_forced = forced.n;
    }
    int grc = 0;
    if (maxt > 0) grc = ds4_gen_generate(g, &gp, &cb, &st, &err);
    else st.stop = DS4_GEN_STOP_MAX_TOKENS;
    ds4_tok_ids_free(&forced);
    if (grc) goto engine_fail;
    if (!r.stop_hit) feed(&r, "", 0, true);
    ds4_dsml_finish(r.dp, NULL);
    if (atomic_load(&j->cancel) && !r.calls_end && !r.stop_hit) goto cancelled;

    j->G = (long)st.gen_tokens;
    j->R = r.reasoning_tokens;
    if (r.calls_end && j->n_calls) j->finish = SRV_FIN_TOOLS;
    else if (r.stop_hit) j->finish = SRV_FIN_STOPSEQ;
    else if (st.stop == DS4_GEN_STOP_MAX_TOKENS || st.stop == DS4_GEN_STOP_CTX_FULL) j->finish = SRV_FIN_LENGTH;
    else j->finish = SRV_FIN_STOP;
    if (r.retracted) {
        srv_err(&se, 500, "server_error", NULL, NULL, "malformed tool call after its header was streamed");
        srv_job_fail(j, &se);
        goto done;
    }
    if (j->n_calls && r.block.len) {
        const char **idv = malloc(j->n_calls * sizeof *idv);
        if (idv) {
            for (size_t i = 0; i < j->n_calls; i++) idv[i] = j->calls[i].id;
            srv_toolmem_put(s->toolmem, idv, j->n_calls, r.block.data, r.block.len);
            free(idv);
        }
    }
    make_binding(e, j, r.block.data, r.block.len);
    srv_trace_text(s->trace, "generated", r.gen_text.data ? r.gen_text.data : "", r.gen_text.len);
    static const char *const fin[] = {"stop", "stop_sequence", "length", "tool_calls", "error"};
    srv_log("%s: prompt=%ld cached=%ld prefill=%ld gen=%ld finish=%s cache=%s %.2fs",
            q->api == SRV_API_CHAT ? "chat" : q->api == SRV_API_COMPLETIONS ? "completions"
            : q->api == SRV_API_RESPONSES ? "responses" : "messages",
            j->P, j->C, j->W, j->G, fin[j->finish], decision, srv_now() - t0);
    j->out->finish(j);
    goto done;

cancelled:
    if (atomic_load(&s->shutting_down)) {
        srv_err(&se, 503, "server_error", NULL, NULL, "server shutting down");
        srv_job_fail(j, &se);
        goto done;
    }
    srv_log("client disconnected; generation stopped (live session keeps %zu tokens)", ds4_gen_n_evaluated(g));
    goto done;
engine_fail:
    if (have_hit) { kv_cache_delete(s->kv, hit.name); ds4_gen_reset(g); }
    srv_err(&se, 500, "server_error", NULL, NULL, "%s", err.msg[0] ? err.msg : "engine failure");
fail:
    if (!j->started && j->out->start) { j->started = true; j->out->start(j); }
    srv_log("request failed: %s", se.msg);
    srv_job_fail(j, &se);
done:
    kv_hit_free(&hit);
    ds4_dsml_free(r.dp);
    ds4_buf_free(&r.hold);
    ds4_buf_free(&r.block);
    ds4_buf_free(&r.gen_text);
    ds4_tok_ids_free(&ids);
    atomic_store(&s->live_tokens, (long)ds4_gen_n_evaluated(g));
}
