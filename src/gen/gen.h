/* Generation driver: prompt text -> streamed reasoning / text / tool calls.
 *
 * What.  A ds4_gen wraps one live ds4_session (one KV timeline) with the
 * token history it holds, a sampler and the output pipeline: sampled ids go
 * through the UTF-8-safe streaming decoder (ds4_tok_stream) and the DSML
 * parser (text/dsml.h), which calls back with reasoning / text / tool-call
 * events.  The CLI (one-shot and interactive chat) and the HTTP server share
 * it, so it prints nothing, has no globals, and reports everything through
 * callbacks and ds4_gen_stats.
 *
 * Prefix reuse.  The engine cannot rewind a session, so a new prompt can only
 * extend what the session already holds.  ds4_gen_append_text() tries, in order:
 *   1. text path: the prompt starts with the decoded bytes of the history
 *      (evaluated tokens + the last sampled token not yet fed) and the rest
 *      begins with an added token (EOS, <｜User｜>, ...).  Only the rest is
 *      tokenized; the model's own tokens for its previous answer are kept
 *      even when they are not the canonical BPE of that text (ds4 does the
 *      same; re-tokenizing would throw the KV cache away on every turn).
 *   2. token path: the whole prompt is tokenized; if its ids start with the
 *      whole history, only the suffix is evaluated.
 *   3. otherwise the session is reset and the prompt prefilled from 0.
 * Multi-turn chat in non-thinking mode hits path 1 every turn.  In thinking
 * mode the renderer drops earlier reasoning (ENCODING.md §5), so the history
 * stops being a prefix and the next turn re-prefills (path 3).
 *
 * Prefill runs in chunks of `chunk` tokens (default: the session's batch,
 * ds4_default_batch: a smaller chunk would cap the engine's batch, and with
 * it the tokens each routed expert's GEMM shares its weights among); after
 * each chunk the progress callback runs and the cancel flag is checked, so
 * long prompts can be followed and interrupted.  A cancelled prefill leaves
 * the session holding the chunks done so far (a valid prefix: the next
 * append reuses it).
 *
 * Decode loop (ds4_gen_generate): check cancel, sample from the last logits,
 * stop on EOS (never fed or emitted), emit the token (token callback, stream
 * decoder, DSML parser), stop on max tokens / context full / caller request /
 * closed DSML block (if asked), else feed the token and get the next logits.
 * The last emitted token is kept "pending" (not evaluated) so that stopping
 * costs no extra forward pass; the next append evaluates it if the new prompt
 * continues the conversation.
 *
 * Cancellation: `cancel` points at an atomic_int that a signal handler (it is
 * lock-free, hence async-signal-safe) or another thread sets to non-zero; the
 * driver only reads it, between prefill chunks and between tokens, and never
 * clears it (the caller does, before the next request).
 *
 * Sampling: ds4_gen_params.samp is used as given (the CLI honours the user's
 * flags; the API layer applies its own "thinking ignores knobs" policy before
 * calling).  The sampler is re-seeded at the start of every generate call via
 * samp_seed_params (fixed seed -> reproducible; -1 -> time + call counter).
 * Greedy sampling of DSML structure (API.md §4.3) is not done here yet.
 *
 * Ownership: model and tokenizer are borrowed and must outlive the ds4_gen;
 * the session, sampler and buffers are owned.  Callback pointers are valid
 * only during the callback.  Thread-safety: one thread at a time per ds4_gen.
 * Errors: -1 with a message in ds4_err (may be NULL). */
#ifndef DS4_GEN_GEN_H
#define DS4_GEN_GEN_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/engine.h"
#include "model/model.h"
#include "sample/sample.h"
#include "text/dsml.h"
#include "text/tokenizer.h"
#include "util/err.h"

typedef enum ds4_gen_stop {
    DS4_GEN_STOP_NONE = 0,   /* not generated yet */
    DS4_GEN_STOP_EOS,        /* model sampled <｜end▁of▁sentence｜> */
    DS4_GEN_STOP_MAX_TOKENS, /* params.max_tokens reached */
    DS4_GEN_STOP_CTX_FULL,   /* session reached ctx_max */
    DS4_GEN_STOP_CANCEL,     /* *cancel became non-zero */
    DS4_GEN_STOP_CALLER,     /* the token callback returned non-zero (e.g. a stop string) */
    DS4_GEN_STOP_CALLS_END,  /* DSML tool_calls block closed (stop_at_calls_end) */
} ds4_gen_stop;

const char *ds4_gen_stop_name(ds4_gen_stop s); /* "eos", "length", ... */

typedef struct ds4_gen_stats {
    size_t prompt_tokens;    /* tokens of the last appended prompt (history after append) */
    size_t cached_tokens;    /* of those, reused from the session */
    size_t prefill_tokens;   /* evaluated by the last append */
    double prefill_s;        /* wall seconds of that evaluation (tokenizing excluded) */
    size_t gen_tokens;       /* tokens emitted by the last generate (EOS not counted) */
    double gen_s;            /* wall seconds of the decode loop */
    ds4_gen_stop stop;       /* why the last generate stopped */
    int cancelled_prefill;   /* the last append was cut short by *cancel */
} ds4_gen_stats;

typedef struct ds4_gen_callbacks {
    void *user;
    /* After each prefill chunk: done of total tokens to evaluate (cached excluded). */
    void (*on_progress)(void *user, size_t done, size_t total);
    /* Every emitted token with the bytes the streaming decoder released for it
     * (complete UTF-8 characters only; len may be 0).  At the end of a run a
     * last call with id -1 carries bytes the decoder held back (an incomplete
     * character, as U+FFFD).  Non-zero return stops
     * generation with DS4_GEN_STOP_CALLER after this token. */
    int (*on_token)(void *user, int32_t id, const char *text, size_t len);
    /* DSML parser events (reasoning / text / tool calls), in order. */
    void (*on_event)(void *user, const ds4_dsml_event *ev);
    /* Optional (added for the server): adjusts a copy of the sampling
     * parameters before each token, e.g. temperature 0 while the model is
     * writing DSML tool-call structure (API.md §4.3).  NULL = params as given. */
    void (*on_params)(void *user, samp_params *p);
} ds4_gen_callbacks;

typedef struct ds4_gen_params {
    samp_params samp;
    long max_tokens;         /* <= 0: until EOS or context full */
    int start_in_reasoning;  /* -1 auto (history ends with <think>), 0 no, 1 yes */
    int no_tools;            /* DSML is plain text (dsml opts.no_tools) */
    int stop_at_calls_end;   /* stop when </｜DSML｜tool_calls> closes (server) */
    atomic_int *cancel;      /* may be NULL */
    /* TEST ONLY (server --test-hooks): emit forced[0..n_forced) instead of
     * sampling, then EOS.  Every token is still evaluated, so KV state,
     * usage and parsing are real; random test models cannot otherwise be
     * made to produce a tool call.  NULL = sample normally. */
    const int32_t *forced;
    size_t n_forced;
} ds4_gen_params;

void ds4_gen_params_default(ds4_gen_params *p);

typedef struct ds4_gen ds4_gen;

/* opts: engine options of the session (ctx_max, threads, numerics); NULL = defaults.
 * chunk: prefill chunk in tokens (<= 0: the session's max_batch). */
ds4_gen *ds4_gen_new(const ds4_model *m, const ds4_tokenizer *tok, const ds4_engine_opts *opts, int chunk,
                     ds4_err *err);
void ds4_gen_free(ds4_gen *g);

/* Forgets the history (next append prefills from 0). */
void ds4_gen_reset(ds4_gen *g);

/* Makes the history equal to the prompt (see "Prefix reuse").  text is tokenized
 * with added-token matching.  Fails on an empty prompt, a prompt longer than
 * the context, or an engine error (then the history is reset).  Stats fields
 * prompt/cached/prefill/cancelled_prefill are written.  Returns 0 also when
 * cancelled (st->cancelled_prefill set, history = the part evaluated). */
int ds4_gen_append_text(ds4_gen *g, const char *text, size_t len, const ds4_gen_callbacks *cb,
                        const atomic_int *cancel, ds4_gen_stats *st, ds4_err *err);
int ds4_gen_append_tokens(ds4_gen *g, const int32_t *ids, size_t n, const ds4_gen_callbacks *cb,
                          const atomic_int *cancel, ds4_gen_stats *st, ds4_err *err);

/* Generates from the end of the history (which must be non-empty).  Writes the
 * gen_* and stop fields of st.  Returns 0 on any stop reason, -1 on errors. */
int ds4_gen_generate(ds4_gen *g, const ds4_gen_params *p, const ds4_gen_callbacks *cb, ds4_gen_stats *st,
                     ds4_err *err);

/* append_text + generate (skips generation when the prefill was cancelled). */
int ds4_gen_run(ds4_gen *g, const char *prompt, size_t len, const ds4_gen_params *p, const ds4_gen_callbacks *cb,
                ds4_gen_stats *st, ds4_err *err);

/* History: every token of the timeline (evaluated ones, then at most one
 * pending sampled token).  Borrowed until the next call on g. */
const int32_t *ds4_gen_tokens(const ds4_gen *g, size_t *n);
size_t ds4_gen_n_evaluated(const ds4_gen *g);
uint32_t ds4_gen_ctx(const ds4_gen *g);
const ds4_tokenizer *ds4_gen_tokenizer(const ds4_gen *g);

/* ---- Hooks for the server's disk KV cache (added by the server module) ----
 * The session (borrowed; for ds4_session_payload_save/load) and the
 * next-token logits after the last evaluated token (V floats, valid iff
 * ds4_gen_n_evaluated() > 0), so a checkpoint can be written between calls
 * or from the on_progress callback (the history is consistent there).
 * ds4_gen_text: raw bytes of every history token (borrowed).
 * ds4_gen_adopt: after the caller loaded a payload into the session, makes
 * the history ids[0..n) (all evaluated, s->pos must equal n) with these
 * logits.  On failure the history is reset. */
ds4_session *ds4_gen_session(ds4_gen *g);
const float *ds4_gen_logits(const ds4_gen *g);
const char *ds4_gen_text(const ds4_gen *g, size_t *len);
int ds4_gen_adopt(ds4_gen *g, const int32_t *ids, size_t n, const float *logits, ds4_err *err);

#endif
