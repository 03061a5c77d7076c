/* The `ds4` command line: options, modes and the pieces tools/ds4.c calls.
 *
 * One job per file:
 *   args.c        argument parsing into ds4_cli_opts (usage errors -> exit 2)
 *   app.c         opening the model, its tokenizer and a generation driver;
 *                 prompt-file reading; the SIGINT -> cancel-flag handler
 *   oneshot.c     `-p` / `--prompt-file` one-shot generation, `--dump-tokens`
 *   interactive.c multi-turn chat on libedit (history, slash commands, Ctrl+C)
 *   term.c        terminal output: reasoning styling, progress bar, stats line
 *   demo.c        `--demo`: create the synthetic demo model once, then run
 *   logits.c      the engine checking hook `--tokens ... --dump-logits OUT`
 *
 * Exit codes: 0 ok, 1 runtime error (model missing or unreadable, engine
 * failure), 2 usage error (bad flag or value, empty prompt, prompt file not
 * valid UTF-8), 130 one-shot generation interrupted with Ctrl+C.
 * Every error message starts with "ds4: " and names the problem. */
#ifndef DS4_CLI_CLI_H
#define DS4_CLI_CLI_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "engine/engine.h"
#include "gen/gen.h"
#include "model/model.h"
#include "sample/sample.h"
#include "text/chat.h"
#include "text/tokenizer.h"
#include "util/buf.h"
#include "util/err.h"

#define DS4_CLI_DEFAULT_MODEL "./ds4flash.gguf"
#define DS4_CLI_DEFAULT_CTX 32768
#define DS4_CLI_DEMO_MAX_TOKENS 128 /* demo default for -n: random weights never stop */

enum { DS4_EXIT_OK = 0, DS4_EXIT_RUNTIME = 1, DS4_EXIT_USAGE = 2, DS4_EXIT_INTERRUPTED = 130 };

typedef struct ds4_cli_opts {
    const char *model_path;    /* -m; NULL = default (or the demo model) */
    const char *prompt;        /* -p */
    const char *prompt_file;   /* --prompt-file */
    const char *system;        /* --system */
    long n_predict;            /* -n; -1 = not given (unlimited, demo 128) */
    uint32_t ctx;              /* --ctx */
    ds4_think_mode mode;       /* --think (default) / --nothink / --think-max */
    samp_params samp;          /* --temp --top-k --top-p --min-p --repeat-penalty --seed */
    int threads;               /* --threads / -t; 0 = all CPUs */
    enum ds4_numerics numerics;
    int dump_tokens, chat;     /* --dump-tokens [--chat] */
    int demo;                  /* --demo */
    int help;
    /* checking hook */
    const char *tokens, *tokens_file, *dump_logits;
    int chunk, decode_from;
    ds4_experts_opts experts;  /* --expert-cache-mb, --ram-budget-mb, --hot-experts, ... */
    int stats;                 /* --stats: expert-cache statistics after one-shot generation */
    enum ds4_backend backend;  /* --backend cpu|cuda|auto (default auto) */
    uint64_t gpu_expert_cache_mb; /* --gpu-expert-cache-mb N (CUDA) */
} ds4_cli_opts;

/* Fills opts from argv.  Returns 0, or DS4_EXIT_USAGE after printing the
 * problem to stderr. */
int ds4_cli_parse(int argc, char **argv, ds4_cli_opts *o);
void ds4_cli_usage(FILE *f);

/* ---- app.c ---- */

typedef struct ds4_cli_app {
    ds4_model *model;
    ds4_tokenizer *tok;
    ds4_gen *gen;
    ds4_engine_opts eopts;
} ds4_cli_app;

/* Loads the model at o->model_path (a clear "missing file" message with the
 * way to get a model / run the demo) and its tokenizer; creates the driver.
 * need_gen = 0 opens only model + tokenizer (--dump-tokens).
 * Returns 0 or an exit code after printing the error. */
int ds4_cli_app_open(ds4_cli_app *app, const ds4_cli_opts *o, int need_gen);
/* Recreates the driver with another context size (history is lost). */
int ds4_cli_app_set_ctx(ds4_cli_app *app, uint32_t ctx, ds4_err *err);
void ds4_cli_app_close(ds4_cli_app *app);

/* Reads a whole file as a prompt: must be valid UTF-8 without NUL bytes
 * (the message names the byte offset).  Caller frees *out. */
int ds4_cli_read_text_file(const char *path, char **out, size_t *len, ds4_err *err);

/* SIGINT sets this flag (installed without SA_RESTART, so a blocking read
 * returns EINTR).  The CLI clears it before each request. */
extern atomic_int ds4_cli_sigint;
void ds4_cli_install_sigint(void);

/* The mode actually used for ctx: think-max below the threshold becomes think,
 * with a note on stderr (once per call). */
ds4_think_mode ds4_cli_effective_mode(ds4_think_mode mode, uint32_t ctx);
const char *ds4_cli_mode_name(ds4_think_mode mode);

/* ---- term.c ---- */

typedef struct ds4_term {
    int out_tty, err_tty;
    int reasoning_open;        /* reasoning printed, not yet closed */
    int wrote_text;            /* visible text printed this turn */
    int at_line_start_out;     /* last byte written to stdout was '\n' (or none) */
    int at_line_start_err;
    int progress_shown;
} ds4_term;

void ds4_term_init(ds4_term *t);
void ds4_term_begin_turn(ds4_term *t);
/* Reasoning: stdout in ANSI faint when stdout is a terminal; otherwise stderr
 * (faint when stderr is a terminal), so `ds4 -p ... > file` keeps only the answer. */
void ds4_term_reasoning(ds4_term *t, const char *s, size_t n);
void ds4_term_reasoning_end(ds4_term *t);
void ds4_term_text(ds4_term *t, const char *s, size_t n);
/* Ends the turn: closes styles, ends the line. */
void ds4_term_end_turn(ds4_term *t);
/* Prefill progress bar on stderr (terminal only, prompts over one chunk). */
void ds4_term_progress(ds4_term *t, size_t done, size_t total);
void ds4_term_progress_clear(ds4_term *t);
/* "prefill N tok at X tok/s, generation M tok at Y tok/s[, stopped: why]" on stderr. */
void ds4_term_stats(ds4_term *t, const ds4_gen_stats *st);
/* Escapes a byte string as a JSON string (valid UTF-8 raw; '"', '\\' and
 * control characters escaped; each byte not part of well-formed UTF-8 as
 * \u00XX, XX >= 80, which valid text never produces since non-ASCII
 * characters are written raw).  Appends to out. */
int ds4_json_escape_bytes(ds4_buf *out, const char *s, size_t n);

/* ---- oneshot.c / interactive.c / demo.c / logits.c ---- */

/* Renders one user message (+ system) in mode for ctx. Caller frees. */
char *ds4_cli_render_single(const char *system, const char *user, ds4_think_mode mode, uint32_t ctx, size_t *len,
                            ds4_err *err);
int ds4_cli_dump_tokens(const ds4_cli_opts *o);
int ds4_cli_oneshot(const ds4_cli_opts *o);
int ds4_cli_interactive(const ds4_cli_opts *o);
/* Creates (once) the demo model and sets *path to it (static storage). */
int ds4_cli_demo_prepare(const char **path);
/* Finds data/tokenizer.json: $DS4_TOKENIZER, next to the binary, the cwd.
 * Returns a static path or NULL. */
const char *ds4_cli_find_tokenizer(void);
int ds4_cli_dump_logits(const ds4_cli_opts *o);

/* Whole program (tools/ds4.c calls this). */
int ds4_cli_main(int argc, char **argv);

#endif
