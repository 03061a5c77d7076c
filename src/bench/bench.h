/* Context-frontier benchmark of the forward pass (ds4-bench).
 *
 * ds4_bench_run() walks one fixed token sequence through one session to a
 * series of context frontiers f0 < f1 < ... <= ctx_max (f0 = ctx_start, then
 * +step_incr or *step_mul).  At each frontier it reports
 *   - prefill: tokens/s of the interval [previous frontier, f) appended in
 *     one ds4_session_eval call (the engine batches it internally);
 *   - generation: tokens/s of `gen` greedy tokens decoded one at a time
 *     from f.  Generation must not disturb the next interval, so the session
 *     is snapshotted (ds4_session_payload_save into memory) before and
 *     restored after it: the copy costs a memcpy of the KV state, far less
 *     than re-prefilling, and the payload contract makes the restored session
 *     continue bitwise as if generation never happened (checked by
 *     last_logits_hash in the tests);
 *   - kv_bytes: the live per-sequence state (raw window rows, compressed
 *     rows, indexer rows; f32).
 * Timed regions contain only ds4_session_eval calls (plus argmax).
 *
 * Roofline (opts.roofline): ds4_bench_membw() measures this machine's read
 * bandwidth (threads streaming a buffer much larger than the LLC, best of
 * several runs), and each row gets bytes_per_token = weights a decode step
 * reads (every dense tensor, one embedding row, the LM head, the router, the
 * shared expert and exactly n_expert_used routed experts per layer — hash and
 * learned routing both pick n_expert_used distinct experts, so this needs no
 * routing trace; MTP tensors are not used) + the KV state the step reads at
 * that frontier (window rows, compressed rows or, on ratio-4 layers, the
 * top-k selected ones plus every indexer row).  roofline_fraction =
 * gen_tps * bytes_per_token / bandwidth.
 *
 * Token sequence: opts.tokens (cycled if shorter than needed) or, when NULL,
 * ds4_bench_ids(): the LCG of shared/peer/peer_llama.c (st = st*1664525 +
 * 1013904223, id = st % V, seed 1), so a peer run without explicit ids sees
 * the same prompt. */
#ifndef DS4_BENCH_H
#define DS4_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "engine/engine.h"
#include "experts/experts.h"
#include "model/model.h"
#include "util/err.h"

typedef struct ds4_bench_opts {
    uint32_t ctx_start;          /* first frontier (>= 1) */
    uint32_t ctx_max;            /* last frontier is <= ctx_max */
    uint32_t step_incr;          /* next = f + step_incr, if > 0 */
    double step_mul;             /* else next = ceil(f * step_mul) (> 1); neither: one frontier */
    int gen;                     /* greedy tokens per frontier (0: no generation) */
    int n_threads;               /* <= 0: all CPUs */
    int max_batch;               /* engine batch (0: engine default) */
    enum ds4_numerics numerics;
    bool roofline;
    double bandwidth;            /* bytes/s for the roofline; 0: measure */
    const int32_t *tokens;       /* NULL: ds4_bench_ids(seed) */
    size_t n_tokens;
    uint32_t seed;               /* LCG seed for generated ids (0: 1) */
    bool warmup;                 /* prefault the weights and run one short eval first */
    FILE *csv;                   /* rows are printed here as they finish (may be NULL) */
    ds4_experts_opts experts;    /* routed experts streamed from the file (off by default):
                                  * rows then carry the generation's expert-cache figures */
} ds4_bench_opts;

void ds4_bench_opts_default(ds4_bench_opts *o);

typedef struct ds4_bench_row {
    uint32_t frontier, n_prefill;
    double prefill_s, gen_s;
    double prefill_tps, gen_tps;
    uint64_t kv_bytes;
    uint64_t bytes_per_token;    /* roofline only */
    double roofline_tps, roofline_fraction;
    /* expert streaming only, over the generated tokens of this row */
    double expert_hit_rate;      /* hits / lookups */
    double expert_mb_per_token;  /* MiB read from the file per generated token */
    double expert_io_ms_per_token; /* time blocked on expert reads per generated token */
} ds4_bench_row;

typedef struct ds4_bench_result {
    ds4_bench_row *rows;         /* malloc'd; free with ds4_bench_result_free */
    int n_rows;
    double prefill_tps, gen_tps; /* totals: all prefill tokens / all prefill time, same for gen */
    double bandwidth;            /* bytes/s (roofline) */
    double roofline_fraction;    /* all gen bytes / all gen time / bandwidth */
    uint64_t weight_bytes_per_token;
    uint64_t last_logits_hash;   /* FNV-1a of the last frontier's logits (snapshot check) */
    int32_t *generated;          /* last frontier's greedy ids (gen entries) */
} ds4_bench_result;

void ds4_bench_result_free(ds4_bench_result *r);

int ds4_bench_run(const ds4_model *m, const ds4_bench_opts *o, ds4_bench_result *r, ds4_err *err);

/* The frontiers opts describes; returns the count (at most cap written). */
int ds4_bench_frontiers(const ds4_bench_opts *o, uint32_t *out, int cap);

/* Peer-compatible pseudo-random ids in [0, V). */
void ds4_bench_ids(uint32_t seed, int32_t V, int32_t *out, size_t n);

/* Best-of-`runs` read bandwidth in bytes/s of n_threads threads streaming a
 * buffer of `bytes` (0: max(4 x LLC, 512 MiB), at most 2 GiB).  0 on failure. */
double ds4_bench_membw(int n_threads, size_t bytes, int runs);

/* Weight bytes one decode token reads (see the header comment). */
uint64_t ds4_bench_weight_bytes_per_token(const ds4_model *m);
/* KV-state bytes one decode step reads at the session's current position. */
uint64_t ds4_bench_kv_read_bytes(const ds4_session *s);
/* Live KV-state bytes of the session. */
uint64_t ds4_bench_kv_bytes(const ds4_session *s);

#endif
