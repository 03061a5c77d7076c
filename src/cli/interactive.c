/* ds4 interactive chat (no -p): multi-turn conversation on libedit.
 *
 * The conversation is kept as a list of turns (user text, answer, reasoning)
 * and rendered into a fresh ds4_chat for every request; the generation
 * driver then evaluates only what extends its live session (gen.h "Prefix
 * reuse"), so earlier turns are not re-prefilled in non-thinking mode.
 *
 * Keys: Ctrl+C while generating stops the reply (the partial answer stays in
 * the conversation) and returns to the prompt; Ctrl+C while typing clears the
 * line; Ctrl+D on an empty line or /quit exits.  While typing, ^C is a key
 * bound to a "discard line" function (ISIG is off in libedit's editing tty
 * mode); as a fallback a SIGINT that interrupts el_gets() (the handler has no
 * SA_RESTART) is told from EOF by the flag.
 * Slash commands: see HELP below.  Empty input is ignored. */
#include <ctype.h>
#include <errno.h>
#include <histedit.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

static const char HELP[] =
    "commands:\n"
    "  /help          this list\n"
    "  /think         reasoning on (default)\n"
    "  /think-max     maximum reasoning effort (needs /ctx >= 393216, else as /think)\n"
    "  /nothink       answer without reasoning\n"
    "  /ctx N         context size in tokens (restarts the session, keeps the conversation)\n"
    "  /read FILE     send the content of FILE as your message\n"
    "  /clear         start a new conversation\n"
    "  /quit          exit (also Ctrl+D)\n"
    "Ctrl+C stops a reply while it is generated, or clears the line you are typing.\n";

typedef struct turn {
    char *user, *answer, *reasoning;
} turn;

typedef struct chat_state {
    const ds4_cli_opts *o;
    ds4_cli_app app;
    ds4_think_mode mode;
    turn *turns;
    size_t n_turns, cap_turns;
    ds4_term term;
    ds4_buf reasoning, answer; /* of the reply being generated */
    long max_tokens;
    int line_cancelled;        /* Ctrl+C pressed while typing */
} chat_state;

static void turns_clear(chat_state *s) {
    for (size_t i = 0; i < s->n_turns; i++) {
        free(s->turns[i].user);
        free(s->turns[i].answer);
        free(s->turns[i].reasoning);
    }
    s->n_turns = 0;
}

/* Renders the conversation, ending with `user` as the new message. */
static char *render(chat_state *s, const char *user, size_t *len, ds4_err *err) {
    ds4_chat *c = ds4_chat_new(err);
    if (!c) return NULL;
    char *out = NULL;
    if (s->o->system && !ds4_chat_add(c, DS4_ROLE_SYSTEM, s->o->system, err)) goto done;
    for (size_t i = 0; i < s->n_turns; i++) {
        ds4_chat_msg *m;
        if (!ds4_chat_add(c, DS4_ROLE_USER, s->turns[i].user, err)) goto done;
        if (!(m = ds4_chat_add(c, DS4_ROLE_ASSISTANT, s->turns[i].answer, err))) goto done;
        if (s->turns[i].reasoning && ds4_chat_msg_set_reasoning(m, s->turns[i].reasoning, err)) goto done;
    }
    if (!ds4_chat_add(c, DS4_ROLE_USER, user, err)) goto done;
    ds4_chat_opts co = {.mode = s->mode, .n_ctx = ds4_gen_ctx(s->app.gen)};
    out = ds4_chat_render(c, &co, len, err);
done:
    ds4_chat_free(c);
    return out;
}

static void on_progress(void *user, size_t done, size_t total) {
    chat_state *s = user;
    ds4_term_progress(&s->term, done, total);
}

static void on_event(void *user, const ds4_dsml_event *ev) {
    chat_state *s = user;
    switch (ev->type) {
    case DS4_DSML_REASONING:
        ds4_term_progress_clear(&s->term);
        ds4_term_reasoning(&s->term, ev->data, ev->len);
        ds4_buf_append(&s->reasoning, ev->data, ev->len);
        break;
    case DS4_DSML_REASONING_END: ds4_term_reasoning_end(&s->term); break;
    case DS4_DSML_TEXT:
        ds4_term_progress_clear(&s->term);
        ds4_term_text(&s->term, ev->data, ev->len);
        ds4_buf_append(&s->answer, ev->data, ev->len);
        break;
    default: break;
    }
}

static char *dup_buf(const ds4_buf *b) { return strdup(b->len ? b->data : ""); }

/* One request: render, prefill, generate, record the turn. */
static void run_turn(chat_state *s, const char *user) {
    ds4_err err = {{0}};
    size_t plen;
    /* The renderer itself downgrades think-max below the context threshold
     * (the note was printed when the mode or context was chosen). */
    char *prompt = render(s, user, &plen, &err);
    if (!prompt) {
        fprintf(stderr, "ds4: cannot render the conversation: %s\n", err.msg);
        return;
    }
    ds4_buf_truncate(&s->reasoning, 0);
    ds4_buf_truncate(&s->answer, 0);
    ds4_term_begin_turn(&s->term);
    ds4_gen_callbacks cb = {.user = s, .on_progress = on_progress, .on_event = on_event};
    ds4_gen_params p;
    ds4_gen_params_default(&p);
    p.samp = s->o->samp;
    p.max_tokens = s->max_tokens;
    p.no_tools = 1;
    p.cancel = &ds4_cli_sigint;
    atomic_store(&ds4_cli_sigint, 0);
    ds4_gen_stats st = {0};
    int rc = ds4_gen_append_text(s->app.gen, prompt, plen, &cb, p.cancel, &st, &err);
    free(prompt);
    ds4_term_progress_clear(&s->term);
    if (rc) {
        fprintf(stderr, "ds4: %s\n", err.msg);
        if (strstr(err.msg, "context")) fprintf(stderr, "  (start over with /clear, or enlarge with /ctx N)\n");
        return;
    }
    if (st.cancelled_prefill) {
        fprintf(stderr, "[interrupted before the reply; message dropped]\n");
        return;
    }
    rc = ds4_gen_generate(s->app.gen, &p, &cb, &st, &err);
    ds4_term_end_turn(&s->term);
    if (rc) {
        fprintf(stderr, "ds4: generation failed: %s\n", err.msg);
        return;
    }
    if (st.stop == DS4_GEN_STOP_CANCEL) fprintf(stderr, "[interrupted]\n");
    ds4_term_stats(&s->term, &st);
    if (s->n_turns == s->cap_turns) {
        size_t nc = s->cap_turns ? s->cap_turns * 2 : 16;
        turn *nt = realloc(s->turns, nc * sizeof *nt);
        if (!nt) { fprintf(stderr, "ds4: out of memory\n"); return; }
        s->turns = nt;
        s->cap_turns = nc;
    }
    turn t = {strdup(user), dup_buf(&s->answer), s->reasoning.len ? dup_buf(&s->reasoning) : NULL};
    if (!t.user || !t.answer) { fprintf(stderr, "ds4: out of memory\n"); free(t.user); free(t.answer); free(t.reasoning); return; }
    s->turns[s->n_turns++] = t;
}

static const char *prompt_fn(EditLine *el) {
    (void)el;
    return "> ";
}

/* Ctrl+C while typing.  The editing tty mode has ISIG off (EL_SETTY below),
 * so ^C arrives as a key: end the line and mark it to be discarded.  While
 * generating, the terminal is back in its normal mode and ^C is SIGINT. */
static unsigned char on_ctrl_c(EditLine *el, int ch) {
    (void)ch;
    chat_state *s = NULL;
    el_get(el, EL_CLIENTDATA, &s);
    if (s) s->line_cancelled = 1;
    fputs("^C\n", stdout);
    fflush(stdout);
    return CC_NEWLINE;
}

/* Handles a line starting with '/'.  Returns 1 to quit. */
static int command(chat_state *s, char *line) {
    char *cmd = line, *arg = line;
    while (*arg && !isspace((unsigned char)*arg)) arg++;
    if (*arg) *arg++ = 0;
    while (isspace((unsigned char)*arg)) arg++;
    if (!strcmp(cmd, "/quit") || !strcmp(cmd, "/exit")) return 1;
    if (!strcmp(cmd, "/help")) fputs(HELP, stdout);
    else if (!strcmp(cmd, "/think")) { s->mode = DS4_THINK_HIGH; printf("(mode: think)\n"); }
    else if (!strcmp(cmd, "/nothink")) { s->mode = DS4_THINK_NONE; printf("(mode: nothink)\n"); }
    else if (!strcmp(cmd, "/think-max")) {
        s->mode = DS4_THINK_MAX;
        printf("(mode: think-max)\n");
        fflush(stdout);
        ds4_cli_effective_mode(s->mode, ds4_gen_ctx(s->app.gen));
    } else if (!strcmp(cmd, "/ctx")) {
        char *end;
        errno = 0;
        long n = strtol(arg, &end, 10);
        ds4_err err = {{0}};
        if (!*arg || *end || errno || n < 16 || n > (1L << 24)) {
            fprintf(stderr, "ds4: /ctx expects a number of tokens in [16, %ld], got '%s'\n", 1L << 24, arg);
        } else if (ds4_cli_app_set_ctx(&s->app, (uint32_t)n, &err)) {
            fprintf(stderr, "ds4: /ctx %ld: %s\n", n, err.msg);
        } else {
            printf("(context: %ld tokens; the conversation is re-read on the next message)\n", n);
            fflush(stdout);
            ds4_cli_effective_mode(s->mode, (uint32_t)n);
        }
    } else if (!strcmp(cmd, "/read")) {
        char *text;
        size_t len;
        ds4_err err = {{0}};
        if (!*arg) fprintf(stderr, "ds4: /read needs a file name\n");
        else if (ds4_cli_read_text_file(arg, &text, &len, &err)) fprintf(stderr, "ds4: /read: %s\n", err.msg);
        else {
            if (len == 0) fprintf(stderr, "ds4: /read: %s is empty, nothing sent\n", arg);
            else {
                printf("(sending %zu bytes from %s)\n", len, arg);
                fflush(stdout);
                run_turn(s, text);
            }
            free(text);
        }
    } else if (!strcmp(cmd, "/clear")) {
        turns_clear(s);
        printf("(new conversation)\n");
    } else {
        fprintf(stderr, "ds4: unknown command '%s' (type /help for the list)\n", cmd);
    }
    fflush(stdout);
    return 0;
}

int ds4_cli_interactive(const ds4_cli_opts *o) {
    chat_state s;
    memset(&s, 0, sizeof s);
    s.o = o;
    s.mode = o->mode;
    s.max_tokens = o->n_predict > 0 ? o->n_predict : 0;
    int rc = ds4_cli_app_open(&s.app, o, 1);
    if (rc) return rc;
    ds4_term_init(&s.term);
    ds4_cli_install_sigint();

    EditLine *el = el_init("ds4", stdin, stdout, stderr);
    History *hist = history_init();
    if (!el || !hist) {
        fprintf(stderr, "ds4: cannot initialise line editing (libedit)\n");
        if (el) el_end(el);
        if (hist) history_end(hist);
        ds4_cli_app_close(&s.app);
        return DS4_EXIT_RUNTIME;
    }
    HistEvent hev;
    history(hist, &hev, H_SETSIZE, 1000);
    el_set(el, EL_PROMPT, prompt_fn);
    el_set(el, EL_EDITOR, "emacs");
    el_set(el, EL_SIGNAL, 0); /* our SIGINT handler decides */
    el_set(el, EL_HIST, history, hist);
    el_set(el, EL_CLIENTDATA, &s);
    /* The wide variant: el_set(EL_ADDFN) wcsdup()s name and help and never frees them. */
    el_wset(el, EL_ADDFN, L"ds4-cancel-line", L"discard the line (Ctrl+C)", on_ctrl_c);
    el_set(el, EL_BIND, "^C", "ds4-cancel-line", NULL);
    el_set(el, EL_SETTY, "-d", "-isig", NULL);

    const char *name = o->model_path ? o->model_path : DS4_CLI_DEFAULT_MODEL;
    printf("ds4 chat: %s, context %u tokens, mode %s.\n"
           "Type a message; /help lists commands; Ctrl+C stops a reply; Ctrl+D quits.\n",
           name, ds4_gen_ctx(s.app.gen), ds4_cli_mode_name(s.mode));
    fflush(stdout);
    ds4_cli_effective_mode(s.mode, ds4_gen_ctx(s.app.gen));

    for (;;) {
        atomic_store(&ds4_cli_sigint, 0);
        s.line_cancelled = 0;
        int count = 0;
        errno = 0;
        const char *in = el_gets(el, &count);
        if (!in) {
            if (atomic_load(&ds4_cli_sigint) || errno == EINTR) {
                /* Ctrl+C while typing: drop the line, fresh prompt. */
                el_reset(el);
                fputs("^C\n", stdout);
                fflush(stdout);
                continue;
            }
            fputc('\n', stdout); /* Ctrl+D */
            break;
        }
        if (s.line_cancelled) continue;
        char *line = strdup(in);
        if (!line) break;
        size_t n = strlen(line);
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
        char *p = line;
        while (isspace((unsigned char)*p)) p++;
        if (!*p) { free(line); continue; }
        history(hist, &hev, H_ENTER, line);
        size_t bad;
        if (!ds4_utf8_valid(line, n, &bad)) {
            fprintf(stderr, "ds4: input is not valid UTF-8 (byte offset %zu), ignored\n", bad);
        } else if (*p == '/') {
            if (command(&s, p)) { free(line); break; }
        } else {
            run_turn(&s, line);
        }
        free(line);
    }
    history_end(hist);
    el_end(el);
    turns_clear(&s);
    free(s.turns);
    ds4_buf_free(&s.reasoning);
    ds4_buf_free(&s.answer);
    ds4_cli_app_close(&s.app);
    return DS4_EXIT_OK;
}
