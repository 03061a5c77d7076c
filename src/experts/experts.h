/* Routed experts streamed from the model file through a fixed-size cache.
 *
 * DeepSeek V4 uses k of E routed experts per layer per token, so most of the
 * model can stay on the SSD.  With streaming on, the forward pass never
 * touches routed-expert weights (blk.N.ffn_{gate,up,down}_exps) through the
 * model mmap: it asks this store for (layer, expert) and gets pointers into a
 * cache slot that holds that expert's gate+up+down, read with explicit I/O.
 * Dense weights stay resident through the mmap.  The bytes in a slot are the
 * file's bytes, and a slot keeps each tensor at the same offset modulo 4096
 * as the mapping would, so the kernels compute bitwise the same thing.
 *
 * Files (one job each):
 *   io.c      reads: io_uring (liburing) with a pread fallback; O_DIRECT where
 *             the filesystem allows it (aligned extents), buffered otherwise
 *   store.c   the cache: slots, (layer, expert) map, LRU over unpinned slots,
 *             pinned hot experts, per-layer plans, prefetch, stats
 *   hot.c     the hot-expert table file (ds4-hotexperts writes it)
 *   budget.c  sizes: dense vs expert bytes, session state, the cache that a
 *             whole-process RAM budget leaves
 *
 * Use by the forward pass, one layer at a time (one thread; a store serves
 * one session at a time):
 *   ds4_experts_layer(x, l, eid, k, tok, n)   after routing: plans the
 *       layer's distinct experts in ascending id order, admits as many as fit
 *       and submits all their misses as one batch of reads, then prefetches
 *       what layer l+1 will likely need (hash layers: exact from the token
 *       ids; otherwise the experts layer l+1 chose last time)
 *   ds4_experts_get(x, l, e, w)   for the plan's experts in ascending order:
 *       waits for e's reads and returns its gate/up/down bases; when the plan
 *       is larger than the cache it moves on to the next group transparently
 *   ds4_experts_layer_end(x)      releases the layer's slots
 * A read error fails ds4_experts_get with a message naming the layer, the
 * expert, the tensor and errno; the store stays usable (failed slots are
 * emptied, in-flight reads drained).
 *
 * Policy: LRU over unpinned slots, plus a static hot table (ds4_hot_*) whose
 * most-selected experts are loaded at open and pinned (at most hot_pct% of
 * the slots).  Slots in use by the current group, and slots with reads in
 * flight, are never evicted. */
#ifndef DS4_EXPERTS_H
#define DS4_EXPERTS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "model/model.h"
#include "util/err.h"

typedef struct ds4_experts_opts {
    uint64_t cache_mb;        /* expert cache size in MiB; 0 = derive from ram_budget_mb, or off */
    uint64_t ram_budget_mb;   /* whole-process budget: cache = budget - dense - session - overhead */
    const char *hot_path;     /* hot-expert table to pre-load and pin (NULL: none) */
    int hot_pct;              /* at most this % of the slots pinned (0 = 50) */
    bool no_direct;           /* buffered reads even where O_DIRECT works */
    bool no_uring;            /* pread instead of io_uring */
    bool no_prefetch;         /* no next-layer prefetch */
    int queue_depth;          /* io_uring entries (0 = 256) */
} ds4_experts_opts;

static inline bool ds4_experts_opts_enabled(const ds4_experts_opts *o) {
    return o && (o->cache_mb || o->ram_budget_mb);
}

typedef struct ds4_expert_stats {
    uint64_t tokens;          /* tokens that went through the first layer */
    uint64_t lookups;         /* distinct (layer, expert) uses, one per batch */
    uint64_t hits;            /* resident when used (pinned, LRU or prefetched) */
    uint64_t hits_pinned;     /* ... of which pinned hot experts */
    uint64_t hits_prefetch;   /* ... of which brought in by a prefetch */
    uint64_t misses;          /* read on demand */
    uint64_t prefetches;      /* experts read ahead */
    uint64_t evictions;
    uint64_t reads;           /* read requests issued (3 per expert) */
    uint64_t bytes_read;      /* incl. O_DIRECT alignment padding */
    double io_wait_s;         /* time the forward pass blocked on expert reads */
    /* configuration */
    uint64_t cache_bytes, slot_bytes, expert_bytes; /* expert_bytes: all routed experts in the file */
    uint32_t n_slots, n_pinned;
    bool direct, uring;
} ds4_expert_stats;

typedef struct ds4_experts ds4_experts;

/* Opens the model's file again for explicit reads and allocates the cache.
 * session_bytes is what one session's state and scratch need (used only with
 * ram_budget_mb; see ds4_experts_session_bytes).  Fails with a message when
 * the model was not loaded from a file, when the cache cannot hold one
 * expert, or when the hot table is for another model or corrupt. */
ds4_experts *ds4_experts_open(const ds4_model *m, const ds4_experts_opts *o, uint64_t session_bytes, ds4_err *err);
void ds4_experts_free(ds4_experts *x);

/* Per-layer protocol (see the header comment).  eid: n·k routing ids
 * (token-major), tok: the n token ids (for hash-layer prefetch). */
int ds4_experts_layer(ds4_experts *x, uint32_t layer, const int32_t *eid, int k, const int32_t *tok, int n,
                      ds4_err *err);
/* w[0..3) = gate, up, down bases of expert e's slice. */
int ds4_experts_get(ds4_experts *x, uint32_t layer, int32_t e, const void *w[3], ds4_err *err);
void ds4_experts_layer_end(ds4_experts *x);

void ds4_experts_stats_get(const ds4_experts *x, ds4_expert_stats *st);
void ds4_experts_stats_reset(ds4_experts *x);
/* One line: hit rate, bytes read and I/O wait per token, cache shape, I/O mode. */
void ds4_experts_stats_print(FILE *f, const ds4_expert_stats *st);

/* Testing hook: the next reads of (layer, expert) fail with errno_val
 * (0 clears; layer -1 = any layer; expert -1 = any expert). */
void ds4_experts_inject_error(ds4_experts *x, int layer, int expert, int errno_val);

/* Command-line flags shared by ds4, ds4-bench, the server and tools:
 *   --expert-cache-mb N  --ram-budget-mb N  --hot-experts FILE  --hot-pct P
 *   --expert-no-direct   --expert-no-uring  --expert-no-prefetch
 * Returns 1 if argv[*i] was one of them (consuming its value, *i advanced to
 * the last argument used), 0 if not ours, -1 on a bad value (err says). */
int ds4_experts_parse_arg(ds4_experts_opts *o, int argc, char **argv, int *i, ds4_err *err);
void ds4_experts_usage(FILE *f);

/* ---- Sizes (budget.c) ---- */

typedef struct ds4_model_bytes {
    uint64_t file;            /* file size */
    uint64_t dense;           /* everything the mmap keeps resident: header + non-expert tensors */
    uint64_t experts;         /* routed experts of the main layers */
    uint64_t expert_max;      /* largest gate+up+down of one expert (one slot, before alignment) */
} ds4_model_bytes;

void ds4_experts_model_bytes(const ds4_model *m, ds4_model_bytes *out);
/* Session state (KV ring, compressed rows, frontiers) for ctx_max positions
 * plus the batch scratch for max_batch tokens: mirrors ds4_session_new and
 * the forward pass's batch buffers. */
uint64_t ds4_experts_session_bytes(const ds4_hparams *hp, uint32_t ctx_max, int max_batch);
/* Process overhead outside model, session and cache (code, libc, thread
 * stacks, temporary activation copies), stated so tests can check RSS. */
#define DS4_EXPERTS_FIXED_OVERHEAD ((uint64_t)48 << 20)
/* cache = budget - dense - session - fixed overhead; fails with the
 * breakdown when that leaves less than min_slots experts. */
int ds4_experts_cache_from_budget(const ds4_model *m, uint64_t budget_bytes, uint64_t session_bytes,
                                  uint64_t *cache_bytes, ds4_err *err);

/* ---- Hot-expert table (hot.c) ----
 *
 * File "DS4HOTEX", little-endian: magic[8], u32 version (1), u32 n_layer,
 * u32 n_expert, u32 n_expert_used, u64 model fingerprint, u64 tokens
 * counted, char[64] model name (general.name), u64 counts[n_layer][n_expert]
 * (selections per expert), u64 FNV-1a-64 of every preceding byte.  Reading
 * checks size and checksum (corruption), then layer/expert counts and the
 * fingerprint against the model (a table for another model is refused,
 * naming both). */
typedef struct ds4_hot_table {
    uint32_t n_layer, n_expert, n_expert_used;
    uint64_t fingerprint, n_tokens;
    char model_name[64];
    uint64_t *counts;         /* [n_layer][n_expert] */
} ds4_hot_table;

/* Hash of the hyper-parameters, the tensor directory (names, types, shapes,
 * offsets) and the first bytes of every router matrix (ffn_gate_inp, resident
 * anyway), so models of equal shape but different weights differ. */
uint64_t ds4_experts_fingerprint(const ds4_model *m);
int ds4_hot_write(const char *path, const ds4_model *m, const uint64_t *counts, uint64_t n_tokens, ds4_err *err);
/* m may be NULL (no model check). */
ds4_hot_table *ds4_hot_read(const char *path, const ds4_model *m, ds4_err *err);
void ds4_hot_free(ds4_hot_table *t);

#endif
