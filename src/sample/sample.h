/* Sampling: one row of next-token logits -> one token id.
 *
 * What and why.  The engine hands over f32[n_vocab] logits; this module turns
 * them into a token with the knobs of API.md §4.3 (temperature, top_p, top_k,
 * min_p, seed) plus the llama.cpp/OpenAI penalties the CLI and agent may use,
 * and a mask hook that structured output and forced tool calls build on
 * (API.md §4.3 "protocol syntax is sampled greedily": the caller passes a
 * params copy with temperature 0 while inside DSML structure).
 *
 * Defaults (samp_params_default), from API.md §4.3 and ENCODING.md §7
 * "Sampling" (the V4 model card recommends temperature 1, top_p 1; ds4 adds
 * min_p 0.05).  The API and CLI share them; in thinking mode the server
 * ignores the client's knobs and uses these defaults.
 *   temperature 1.0 (<= 0 -> greedy)   top_p 1.0 (1 = off)   top_k 0 (off)
 *   min_p 0.05 (0 = off)               seed -1 (none: caller seeds from time,
 *                                       see samp_seed_auto)
 *   repetition_penalty 1.0 (off)       presence_penalty 0   frequency_penalty 0
 *   penalty_last_n 64 (llama.cpp's repeat_last_n)
 * API.md §4.3 accepts and ignores frequency_penalty/presence_penalty/
 * logit_bias on the wire, so the server leaves the penalties at their
 * defaults; they exist for the CLI/agent and the repetition guard
 * (USER_ASKS.md #14, antirez/ds4#195: resample with the offender banned).
 *
 * Order of operations.  The specs give none; this is the order of ds4's
 * sample_top_p_min_p (antirez/ds4 ds4.c: temperature first, then top-k, and
 * top-p and min-p both measured on the top-k distribution), with llama.cpp's
 * penalties in front.  (llama.cpp's default chain applies temperature last,
 * so the same knobs truncate differently there.)  Two ds4 quirks are not
 * copied: ds4 caps top_k at 1024 and treats top_p <= 0 as "off"; here top_k
 * is uncapped and top_p 0 keeps only the argmax.
 *   1. mask: allow list, then ban list (disallowed -> -inf)
 *   2. penalties over the last penalty_last_n ids of the caller's window, once
 *      per distinct id (llama.cpp): repetition (CTRL: logit > 0 divided,
 *      logit <= 0 multiplied), then logit -= count*frequency + presence
 *   3. logit hook (caller callback on the working copy: logit_bias, grammar)
 *   4. temperature <= 0 -> argmax (ties -> lowest id), done; else logit / T
 *   5. top-k: keep the k largest (ties broken by lower id)
 *   6. softmax over the top-k survivors
 *   7. top-p: smallest prefix (descending prob) with cumulative prob >= top_p
 *   8. min-p: keep tokens with p >= min_p * p_max
 *   9. renormalize and draw with one uniform from the sampler's RNG
 * Steps 5-8 each remove a tail of the same descending order, and p_max is the
 * same at every step, so the survivors are the shortest of three prefixes;
 * only top-p needs the order and the top-k normalizer.  The code therefore
 * prunes by min-p threshold and top-k heap selection first and sorts only the
 * survivors (no full sort of 129k logits; see sample.c "Plan").
 *
 * Non-finite logits (deterministic, documented contract): NaN is treated as
 * -inf (never drawn); +inf is clamped to FLT_MAX, so several +inf tokens share
 * the mass equally.  If nothing finite remains (all -inf/NaN/masked) the call
 * returns SAMP_ERR_EMPTY and no token.  Token ids outside [0, n_vocab) in
 * windows and allow/ban lists are ignored.
 *
 * RNG: xoshiro256** (Blackman & Vigna 2018), state seeded by four outputs of
 * splitmix64(seed), the generator's reference seeding.  A uniform double in
 * [0,1) is the top 53 bits.  Each non-greedy samp_sample call consumes exactly
 * one 64-bit output; greedy calls and errors consume none, so a run is
 * reproducible from (seed, logits, params).  samp_rng_get/samp_rng_set copy
 * the 32-byte state for session snapshots.
 *
 * Ownership and lifetime.  samp_new returns an owned object freed with
 * samp_free; all scratch (32 bytes x n_vocab, 4.1 MB at 129280) is
 * allocated there, so samp_sample/samp_probs never allocate.  All pointer
 * arguments are borrowed for the duration of the call only.
 *
 * Thread-safety: a samp is mutable state (RNG, scratch); one thread at a time
 * (the server's worker owns the session's sampler).  samp_params is plain data.
 *
 * Errors: samp_new returns NULL and fills err; the others return 0 or a
 * negative samp_status.  No input makes this module crash or exit. */
#ifndef DS4_SAMPLE_SAMPLE_H
#define DS4_SAMPLE_SAMPLE_H

#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

typedef enum samp_status {
    SAMP_OK = 0,
    SAMP_ERR_PARAM = -1, /* a field of samp_params/samp_opts out of range, or NULL logits */
    SAMP_ERR_EMPTY = -2, /* no token left: every logit -inf/NaN or masked out */
} samp_status;

typedef struct samp_params {
    float temperature;        /* >= 0, finite; <= 0 means greedy. Default 1.0 */
    float top_p;              /* [0, 1]; 1 = off, 0 keeps only the argmax. Default 1.0 */
    int32_t top_k;            /* >= 0; 0 = off. Default 0 */
    float min_p;              /* [0, 1]; fraction of p_max; 0 = off. Default 0.05 */
    float repetition_penalty; /* > 0; 1 = off. Default 1.0 */
    float presence_penalty;   /* finite, subtracted once per present id. Default 0 */
    float frequency_penalty;  /* finite, subtracted per occurrence. Default 0 */
    int32_t penalty_last_n;   /* ids of the window used: -1 all, 0 none. Default 64 */
    int64_t seed;             /* >= 0 fixed seed; -1 none (samp_seed_auto). Default -1 */
} samp_params;

/* Callback on the working copy of the logits (after mask and penalties,
 * before temperature).  It may change any entry; -inf disallows a token. */
typedef void (*samp_logit_hook)(void *user, float *logits, int32_t n_vocab);

/* Optional per-call inputs; a NULL samp_opts * means "none of these". */
typedef struct samp_opts {
    const int32_t *recent;   /* penalty window, oldest first (borrowed) */
    size_t n_recent;
    const int32_t *allow;    /* if non-NULL: every other id is disallowed */
    size_t n_allow;          /* n_allow == 0 with allow != NULL allows nothing */
    const int32_t *ban;      /* ids never drawn (repetition guard, stop tokens) */
    size_t n_ban;
    samp_logit_hook hook;    /* may be NULL */
    void *hook_user;
} samp_opts;

typedef struct samp_rng_state {
    uint64_t s[4]; /* xoshiro256** state; never all zero */
} samp_rng_state;

typedef struct samp samp;

/* Fills *p with the defaults above. */
void samp_params_default(samp_params *p);

/* Validates every field; returns SAMP_OK or SAMP_ERR_PARAM with a message in err. */
int samp_params_check(const samp_params *p, ds4_err *err);

/* n_vocab in [1, 2^24] (129280 for V4).  The RNG starts from seed. */
samp *samp_new(int32_t n_vocab, uint64_t seed, ds4_err *err);
void samp_free(samp *s); /* NULL is fine */
int32_t samp_n_vocab(const samp *s);

/* Re-seeds the RNG (splitmix64 expansion of seed). */
void samp_seed(samp *s, uint64_t seed);
/* A seed for requests without one (API.md §4.3: "seeded from time and request
 * counter"): splitmix64 mix of CLOCK_REALTIME ns and counter. */
uint64_t samp_seed_auto(uint64_t counter);
/* Seeds from p->seed when >= 0, else from samp_seed_auto(counter).  The server
 * maps a non-positive or absent request seed to -1 before calling this. */
void samp_seed_params(samp *s, const samp_params *p, uint64_t counter);

void samp_rng_get(const samp *s, samp_rng_state *out);
/* Returns SAMP_ERR_PARAM (state unchanged) for the all-zero state, which
 * xoshiro can never leave. */
int samp_rng_set(samp *s, const samp_rng_state *st);
/* Next raw 64-bit output / uniform double in [0,1) (exposed for tests and
 * for callers needing extra randomness from the same reproducible stream). */
uint64_t samp_rng_next(samp *s);
double samp_rng_uniform(samp *s);

/* Draws one token from logits (f32[n_vocab], borrowed, not modified).
 * Returns SAMP_OK with *out_tok set, or a negative samp_status (then *out_tok
 * is -1 and the RNG is untouched). */
int samp_sample(samp *s, const float *logits, const samp_params *p,
                const samp_opts *o, int32_t *out_tok);

/* The exact distribution samp_sample draws from: probs_out (f32[n_vocab])
 * gets the final renormalized probability of every id (0 for removed ones).
 * Greedy puts 1 on the argmax.  Consumes no randomness.  For logprobs and
 * tests.  Same returns as samp_sample. */
int samp_probs(samp *s, const float *logits, const samp_params *p,
               const samp_opts *o, float *probs_out);

/* Applies an allow list in place: every id not in allow[0..n_allow) becomes
 * -inf.  Uses the sampler's scratch, so it does not allocate. */
void samp_mask_allow(samp *s, float *logits, const int32_t *allow, size_t n_allow);

/* Plain argmax of logits[0..n) with NaN skipped and ties to the lowest id;
 * -1 when n == 0 or every entry is NaN/-inf.  No penalties, no mask. */
int32_t samp_argmax(const float *logits, int32_t n);

#endif
