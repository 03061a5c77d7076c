/* ds4 one-shot mode (-p / --prompt-file) and --dump-tokens.
 *
 * One-shot: render [system +] user message in the chosen mode, generate,
 * stream reasoning and answer through term.c, print the statistics line last
 * on stderr.  Ctrl+C stops generation (exit 130) after printing what exists.
 *
 * --dump-tokens: the prompt text is tokenized exactly as written (added
 * tokens such as <｜User｜> are recognised); with --chat the rendered chat
 * prompt is tokenized instead.  Output: one line per token, "<id>\t<piece>",
 * the piece as a JSON string written by ds4_json_escape_bytes (pieces of
 * byte-level tokens may be partial UTF-8: those bytes appear as \u00XX). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

char *ds4_cli_render_single(const char *system, const char *user, ds4_think_mode mode, uint32_t ctx, size_t *len,
                            ds4_err *err) {
    ds4_chat *c = ds4_chat_new(err);
    if (!c) return NULL;
    char *out = NULL;
    if ((system && !ds4_chat_add(c, DS4_ROLE_SYSTEM, system, err)) || !ds4_chat_add(c, DS4_ROLE_USER, user, err))
        goto done;
    ds4_chat_opts co = {.mode = mode, .n_ctx = ctx};
    out = ds4_chat_render(c, &co, len, err);
done:
    ds4_chat_free(c);
    return out;
}

/* The prompt text of -p or --prompt-file (validated), malloc'd. */
static int load_prompt(const ds4_cli_opts *o, char **text, size_t *len) {
    ds4_err err = {{0}};
    if (o->prompt_file) {
        if (ds4_cli_read_text_file(o->prompt_file, text, len, &err)) {
            fprintf(stderr, "ds4: --prompt-file: %s\n", err.msg);
            return DS4_EXIT_USAGE;
        }
        if (*len == 0) {
            free(*text);
            fprintf(stderr, "ds4: --prompt-file: %s is empty: nothing to generate from\n", o->prompt_file);
            return DS4_EXIT_USAGE;
        }
        return 0;
    }
    size_t bad, n = strlen(o->prompt);
    if (!ds4_utf8_valid(o->prompt, n, &bad)) {
        fprintf(stderr, "ds4: -p: prompt is not valid UTF-8 (first bad byte at offset %zu)\n", bad);
        return DS4_EXIT_USAGE;
    }
    *text = strdup(o->prompt);
    *len = n;
    return 0;
}

int ds4_cli_dump_tokens(const ds4_cli_opts *o) {
    char *text = NULL;
    size_t len = 0;
    int rc = load_prompt(o, &text, &len);
    if (rc) return rc;
    ds4_cli_app app;
    /* Only the tokenizer is needed, but it lives in the model file. */
    if ((rc = ds4_cli_app_open(&app, o, 0))) {
        free(text);
        return rc;
    }
    ds4_err err = {{0}};
    if (o->chat) {
        size_t rlen;
        char *r = ds4_cli_render_single(o->system, text, ds4_cli_effective_mode(o->mode, o->ctx), o->ctx, &rlen, &err);
        free(text);
        text = r;
        len = rlen;
        if (!r) {
            fprintf(stderr, "ds4: cannot render the chat prompt: %s\n", err.msg);
            ds4_cli_app_close(&app);
            return DS4_EXIT_RUNTIME;
        }
    }
    ds4_tok_ids ids = {0};
    ds4_buf line = {0};
    rc = DS4_EXIT_OK;
    if (ds4_tok_encode(app.tok, text, len, 0, &ids, &err)) {
        fprintf(stderr, "ds4: tokenizing failed: %s\n", err.msg);
        rc = DS4_EXIT_RUNTIME;
    }
    for (size_t i = 0; rc == 0 && i < ids.n; i++) {
        size_t plen;
        const char *p = ds4_tok_piece(app.tok, ids.ids[i], &plen);
        ds4_buf_truncate(&line, 0);
        if (ds4_buf_printf(&line, "%d\t", ids.ids[i]) || ds4_json_escape_bytes(&line, p, plen) ||
            ds4_buf_putc(&line, '\n')) {
            fprintf(stderr, "ds4: out of memory\n");
            rc = DS4_EXIT_RUNTIME;
            break;
        }
        fwrite(line.data, 1, line.len, stdout);
    }
    if (fflush(stdout) && rc == 0) {
        fprintf(stderr, "ds4: cannot write the tokens to stdout\n");
        rc = DS4_EXIT_RUNTIME;
    }
    ds4_buf_free(&line);
    ds4_tok_ids_free(&ids);
    free(text);
    ds4_cli_app_close(&app);
    return rc;
}

typedef struct oneshot_ctx {
    ds4_term *term;
} oneshot_ctx;

static void on_progress(void *user, size_t done, size_t total) {
    oneshot_ctx *c = user;
    ds4_term_progress(c->term, done, total);
}

static void on_event(void *user, const ds4_dsml_event *ev) {
    oneshot_ctx *c = user;
    switch (ev->type) {
    case DS4_DSML_REASONING: ds4_term_reasoning(c->term, ev->data, ev->len); break;
    case DS4_DSML_REASONING_END: ds4_term_reasoning_end(c->term); break;
    case DS4_DSML_TEXT: ds4_term_text(c->term, ev->data, ev->len); break;
    default: break; /* no tools are offered, so no calls are parsed */
    }
}

int ds4_cli_oneshot(const ds4_cli_opts *o) {
    char *text = NULL;
    size_t len = 0;
    int rc = load_prompt(o, &text, &len);
    if (rc) return rc;
    ds4_cli_app app;
    if ((rc = ds4_cli_app_open(&app, o, 1))) {
        free(text);
        return rc;
    }
    ds4_err err = {{0}};
    ds4_think_mode mode = ds4_cli_effective_mode(o->mode, o->ctx);
    size_t plen;
    char *prompt = ds4_cli_render_single(o->system, text, mode, o->ctx, &plen, &err);
    free(text);
    if (!prompt) {
        fprintf(stderr, "ds4: cannot render the chat prompt: %s\n", err.msg);
        ds4_cli_app_close(&app);
        return DS4_EXIT_RUNTIME;
    }
    ds4_term term;
    ds4_term_init(&term);
    ds4_term_begin_turn(&term);
    oneshot_ctx c = {&term};
    ds4_gen_callbacks cb = {.user = &c, .on_progress = on_progress, .on_event = on_event};
    ds4_gen_params p;
    ds4_gen_params_default(&p);
    p.samp = o->samp;
    p.max_tokens = o->n_predict > 0 ? o->n_predict : 0; /* 0: until EOS or context full */
    p.no_tools = 1;
    p.cancel = &ds4_cli_sigint;
    atomic_store(&ds4_cli_sigint, 0);
    ds4_cli_install_sigint();
    ds4_gen_stats st = {0};
    rc = DS4_EXIT_OK;
    int arc = ds4_gen_append_text(app.gen, prompt, plen, &cb, p.cancel, &st, &err);
    ds4_term_progress_clear(&term);
    if (arc) {
        fprintf(stderr, "ds4: %s\n", err.msg);
        rc = DS4_EXIT_RUNTIME;
    } else if (!st.cancelled_prefill && ds4_gen_generate(app.gen, &p, &cb, &st, &err)) {
        ds4_term_end_turn(&term);
        fprintf(stderr, "ds4: generation failed: %s\n", err.msg);
        rc = DS4_EXIT_RUNTIME;
    }
    if (rc == DS4_EXIT_OK) {
        ds4_term_end_turn(&term);
        ds4_term_stats(&term, &st);
        ds4_session *ss = o->stats ? ds4_gen_session(app.gen) : NULL;
        if (ss && ss->experts) {
            ds4_expert_stats xs;
            ds4_experts_stats_get(ss->experts, &xs);
            ds4_experts_stats_print(stderr, &xs);
        }
        if (st.cancelled_prefill || st.stop == DS4_GEN_STOP_CANCEL) rc = DS4_EXIT_INTERRUPTED;
    }
    free(prompt);
    ds4_cli_app_close(&app);
    return rc;
}
