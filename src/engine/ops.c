/* Numeric building blocks; see ops.h. */
#include <math.h>

#include "engine/ops.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "quant/quant.h"
#include "quant/simd.h"
#include "quant/vec.h"

/* One segment of a ds4_mm_multi() job, prepared: the weight slice, its
 * converted activations and how its rows are cut into tasks. */
typedef struct mm_seg_job {
    const uint8_t *base;      /* first row of the selected slice */
    size_t row_bytes;
    int64_t row0, nrows, ne0;
    const uint8_t *xq;        /* n converted activation rows */
    size_t xq_bytes;
    int n;
    int tok_chunk;            /* tokens per pass over a task's rows */
    float *Y;
    int64_t ldy;
    ds4_vec_dot_fn dot;
    ds4_vec_dot_tile_fn tile; /* NULL: the scalar level, one dot per pair */
    ds4_panel_gemm_fn pgemm;  /* set: prefill through the panel kernel */
    ds4_panel_pack_fn pack;   /* the panel layout pgemm reads */
    int ptok;                 /* tokens per panel */
    size_t pbytes;            /* bytes per panel */
    const uint8_t *panels;    /* the n tokens packed, ceil(n / ptok) panels */
    const struct mm_seg_job *mate; /* paired segment computed by the same tasks */
    bool mate_local;          /* the mate's rows go to the thread's scratch */
    void (*done)(void *ctx, int64_t r0, int64_t r1, const float *mate, int64_t mate_ld);
    void *done_ctx;
} mm_seg_job;

/* A chunk: rows [r0, r1) of segment seg (and of its mate), `work`
 * multiply-adds. */
typedef struct {
    int seg;
    int64_t r0, r1, work;
} mm_piece;

/* A thread's span of chunks, [front, back) packed in one word: the owner
 * takes the front, thieves take the back, both by compare-and-swap.  One
 * cache line each, so the owners' claims do not contend. */
typedef struct {
    _Alignas(64) _Atomic uint64_t fb;
} mm_span;

typedef struct {
    mm_seg_job *seg;
    const mm_piece *piece;
    mm_span *span;
    int nspan;
    ds4_pool *pool;
    float *mscratch;          /* local mates' rows: mstride floats per thread */
    size_t mstride;
} mm_job;

/* Weight bytes per row block of the tile loop (mm_rows). */
#define MM_TILE_WBLOCK (256u << 10)

/* Rows [r0, r1) of one segment.  With a tile kernel: for each chunk of
 * tokens whose activations fit in L2, take the rows in blocks of ~256 KB
 * of weights (L2); per block, for each group of DS4_TILE tokens walk the
 * block's rows DS4_TILE at a time, handing each row group x token group to
 * the kernel.  So the token group's activations stay in L1 across the
 * block's rows and the weights stream from L2: rows outer and tokens inner
 * (as this loop first did) read the activations, f32 for F16 weights and
 * so twice the weight bytes, from L2 for every tile, more than L2 feeds at
 * the FMA rate.  F16 (4x4 tiles, dec_avx512.c) on Zen 5, one thread,
 * `build/bench/gemm ROWS N 7 16 48 128` (tile column: this loop over all
 * rows as one piece), GF/s at 16/48/128 tokens: 512 x 1024 177/183/187 ->
 * 213/215/216; 24 x 4096 155/155/153 -> 216/209/166; 512 x 4096
 * 139/150/147 -> 154/152/148 (the 64 KB of a token group's activations
 * no longer fit L1 there).  Pieces of 16 rows (what the pool's split gives
 * a 512-row matrix on 2 threads) keep most of it: 512 x 1024 ~150 -> ~200.
 * Decode (n = 1) is then DS4_TILE independent rows per call, which hides
 * the FMA latency of the one-accumulator dots.  Every result is
 * bit-identical to the type's vec_dot (quant.h), so how rows are grouped
 * into tasks and jobs never changes a value.
 *
 * No software prefetch here, on measurement (Zen 5, 2 threads, small-q8
 * decode): ~91% of a decode step is inside ds4_mm_multi, streaming ~40-45
 * GB/s for every size from 0.1 MB to the 35 MB LM head (the same weights
 * hot in L2/L3 run at ~80 GB/s, the read probe gets ~62).  Neither
 * prefetching 4-16 KB ahead of the row block here, nor idle pool threads
 * prefetching the next matmuls' weights during the compute-only phases
 * (~0.6 ms a token), changed gen tok/s beyond the run-to-run noise (~±5%).
 * What did help is inside the decode kernels: their per-iteration prefetch
 * two row blocks ahead instead of one (Q8_0: 180 -> 210 tok/s).  Nor did
 * read-ahead during q2's compute-bound IQ2_XXS gate/up (the kernel streams
 * ~12 GB/s per core of ~24): prefetching, a few lines per tile, the next
 * layer's attention weights (1-2 MB a layer) or the down experts made
 * gate_up 100-150 us a token slower and saved at most ~80 us in down, none
 * in the attention phases; running the shared expert last with its rows
 * prefetched during the routed ones changed nothing measurable (small-q2,
 * 3 interleaved runs each).  MADV_HUGEPAGE on the model mapping (2 MB
 * page-cache folios) was neutral too (6 interleaved pairs, caches
 * dropped: 221.6 vs 222.3 tok/s). */
static void mm_rows(const mm_seg_job *j, int64_t r0, int64_t r1) {
    if (j->pgemm) { /* prefill: the level's panel kernel (quant.h), same bits as vec_dot */
        const uint8_t *w = j->base + (size_t)(j->row0 + r0) * j->row_bytes;
        for (int t0 = 0; t0 < j->n; t0 += j->tok_chunk) {
            int t1 = t0 + j->tok_chunk < j->n ? t0 + j->tok_chunk : j->n;
            j->pgemm(j->ne0, w, j->row_bytes, (int)(r1 - r0), j->panels + (size_t)(t0 / j->ptok) * j->pbytes,
                     t1 - t0, j->Y + (int64_t)t0 * j->ldy + r0, j->ldy);
        }
        return;
    }
    if (!j->tile) {
        for (int64_t r = r0; r < r1; r++) {
            const uint8_t *row = j->base + (size_t)(j->row0 + r) * j->row_bytes;
            for (int t = 0; t < j->n; t++)
                j->Y[(int64_t)t * j->ldy + r] = j->dot(j->ne0, row, j->xq + (size_t)t * j->xq_bytes);
        }
        return;
    }
    /* rows in blocks of ~MM_TILE_WBLOCK weight bytes (L2); per block each
     * token group passes over all its row groups */
    int64_t rblk = (int64_t)(MM_TILE_WBLOCK / (j->row_bytes ? j->row_bytes : 1)) / DS4_TILE * DS4_TILE;
    if (rblk < DS4_TILE) rblk = DS4_TILE;
    for (int t0 = 0; t0 < j->n; t0 += j->tok_chunk) {
        int t1 = t0 + j->tok_chunk < j->n ? t0 + j->tok_chunk : j->n;
        for (int64_t b0 = r0; b0 < r1; b0 += rblk) {
            int64_t b1 = b0 + rblk < r1 ? b0 + rblk : r1;
            for (int t = t0; t < t1; t += DS4_TILE) {
                int nc = t1 - t < DS4_TILE ? t1 - t : DS4_TILE;
                for (int64_t r = b0; r < b1; r += DS4_TILE) {
                    int nr = b1 - r < DS4_TILE ? (int)(b1 - r) : DS4_TILE;
                    const uint8_t *row = j->base + (size_t)(j->row0 + r) * j->row_bytes;
                    j->tile(j->ne0, row, j->row_bytes, nr, j->xq + (size_t)t * j->xq_bytes, j->xq_bytes, nc,
                            j->Y + (int64_t)t * j->ldy + r, j->ldy);
                }
            }
        }
    }
}

static void mm_piece_run(const mm_job *mj, int64_t c) {
    const mm_piece *pc = &mj->piece[c];
    const mm_seg_job *j = &mj->seg[pc->seg];
    int64_t r0 = pc->r0, r1 = pc->r1;
    mm_rows(j, r0, r1);
    const float *mate = NULL;
    int64_t mate_ld = 0;
    if (j->mate && j->mate_local) { /* rows [r0, r1) as a matrix of their own, in the scratch */
        mm_seg_job m = *j->mate;
        m.row0 += r0;
        m.nrows = r1 - r0;
        m.ldy = (r1 - r0 + 15) & ~(int64_t)15; /* whole lines, like the kernels' stores */
        m.Y = mj->mscratch + (size_t)ds4_pool_thread(mj->pool) * mj->mstride;
        mm_rows(&m, 0, m.nrows);
        mate = m.Y;
        mate_ld = m.ldy;
    } else if (j->mate) {
        mm_rows(j->mate, r0, r1);
        mate = j->mate->Y + r0;
        mate_ld = j->mate->ldy;
    }
    if (j->done) j->done(j->done_ctx, r0, r1, mate, mate_ld);
}

/* Takes the front (own span) or back (stolen) chunk of span sp; -1: empty. */
static int64_t span_take(mm_span *sp, bool front) {
    uint64_t fb = atomic_load_explicit(&sp->fb, memory_order_relaxed);
    for (;;) {
        uint32_t f = (uint32_t)(fb >> 32), b = (uint32_t)fb;
        if (f >= b) return -1;
        uint64_t nfb = front ? (uint64_t)(f + 1) << 32 | b : (uint64_t)f << 32 | (b - 1);
        if (atomic_compare_exchange_weak(&sp->fb, &fb, nfb)) return front ? f : b - 1;
    }
}

static void mm_span_task(void *ctx, int64_t task) {
    const mm_job *mj = ctx;
    int64_t c;
    while ((c = span_take(&mj->span[task], true)) >= 0) mm_piece_run(mj, c);
    for (;;) { /* steal from the span with the most chunks left */
        int victim = -1;
        uint32_t most = 0;
        for (int s = 0; s < mj->nspan; s++) {
            uint64_t fb = atomic_load_explicit(&mj->span[s].fb, memory_order_relaxed);
            uint32_t f = (uint32_t)(fb >> 32), b = (uint32_t)fb;
            if (b > f && b - f > most) { most = b - f; victim = s; }
        }
        if (victim < 0) return;
        if ((c = span_take(&mj->span[victim], false)) >= 0) mm_piece_run(mj, c);
    }
}

/* Multiply-adds per row of a segment (with its mate). */
static int64_t seg_row_work(const mm_seg_job *j) {
    int64_t w = j->ne0 * (int64_t)j->n + (j->mate ? j->mate->ne0 * (int64_t)j->mate->n : 0);
    return w > 0 ? w : 1;
}

/* Activation conversion, spread over the pool when there is enough of it
 * (prefill): one task per block of rows of one distinct input.  An input
 * read by a panel kernel is also packed into that kernel's panels, by the
 * same task (its rows are whole panels). */
typedef struct {
    int type;                 /* weight type: selects the conversion */
    const float *X;
    const int32_t *xrows;     /* NULL: rows in order */
    int64_t ldx, ne0;
    int n;
    uint8_t *xq;
    size_t xq_bytes;
    ds4_panel_pack_fn pack;   /* NULL: no panels */
    int ptok;
    size_t pbytes;
    uint8_t *panels;
    int rows;                 /* rows per conversion task (whole panels) */
    int src;                  /* >= 0: a gather whose rows are copied from
                               * conversion src (the same input in order) */
    bool keep;                /* xq is read after the pass (a dot/tile segment,
                               * or a copy's source); else only its panels are,
                               * and a task's rows go through its thread's
                               * slot instead (conv_task) */
} mm_conv;

/* The conversions of one pass: those with src < 0 (pass 0), then the
 * copies from them (pass 1). */
typedef struct {
    const mm_conv *conv;
    int nconv;
    int pass;
    ds4_pool *pool;
    uint8_t *slots;           /* per thread, slot_bytes each: unkept rows */
    size_t slot_bytes;
} mm_conv_job;

#define CONV_ROWS 16

/* Conversion task rows: CONV_ROWS, rounded up to whole panels. */
static int conv_rows(int ptok) { return ptok > 0 ? (CONV_ROWS + ptok - 1) / ptok * ptok : CONV_ROWS; }

static bool conv_in_pass(const mm_conv *cv, int pass) { return (cv->src >= 0) == (pass == 1); }

static int64_t conv_blocks(const mm_conv *cv) { return (cv->n + cv->rows - 1) / cv->rows; }

static void conv_task(void *ctx, int64_t task) {
    const mm_conv_job *cj = ctx;
    int c = 0;
    int64_t first = 0, blocks;
    /* blocks are numbered input by input, over the pass's inputs */
    for (;; c++) {
        if (!conv_in_pass(&cj->conv[c], cj->pass)) continue;
        blocks = conv_blocks(&cj->conv[c]);
        if (task < first + blocks) break;
        first += blocks;
    }
    const mm_conv *cv = &cj->conv[c];
    int t0 = (int)(task - first) * cv->rows;
    int t1 = t0 + cv->rows < cv->n ? t0 + cv->rows : cv->n;
    /* row t's bytes: in xq, or (unkept) in this thread's slot, where the
     * pack below reads them while they are in L1 */
    uint8_t *dst = cv->keep ? cv->xq + (size_t)t0 * cv->xq_bytes
                            : cj->slots + (size_t)ds4_pool_thread(cj->pool) * cj->slot_bytes;
    if (cv->src >= 0) { /* same function of the same row: the same bytes */
        const uint8_t *from = cj->conv[cv->src].xq;
        for (int t = t0; t < t1; t++)
            memcpy(dst + (size_t)(t - t0) * cv->xq_bytes, from + (size_t)cv->xrows[t] * cv->xq_bytes, cv->xq_bytes);
    } else {
        for (int t = t0; t < t1; t++)
            ds4_quantize_row_for(cv->type, cv->X + (int64_t)(cv->xrows ? cv->xrows[t] : t) * cv->ldx,
                                 dst + (size_t)(t - t0) * cv->xq_bytes, cv->ne0);
    }
    if (cv->pack)
        cv->pack(cv->ne0, dst, cv->xq_bytes, t1 - t0, cv->panels + (size_t)(t0 / cv->ptok) * cv->pbytes);
}

/* Fewest tokens for which the panel kernel beats the 4x4 tiles: Q8_0 on
 * Zen 5 (1024 x 1024, 1 thread), panel vs tiles GF/s: n = 3: 116 / 117,
 * 4: 167 / 140, 6: 232 / 109, 8: 339 / 142 (a panel a quarter full already
 * wins). */
#define MM_PANEL_MIN_TOKENS 4
/* Panels per pass over a task's rows: ~512 KB, half an L2. */
#define MM_PANEL_L2_BYTES (512u << 10)
/* Task rows for the panel path come in multiples of this (kernels store
 * 16-row blocks). */
#define MM_PANEL_ROWS 16

static size_t align64(size_t x) { return (x + 63) & ~(size_t)63; }

#define MM_SEGS_STACK 32
#define MM_XQ_STACK (32u << 10)
#define MM_PIECES_STACK 256
#define MM_SPANS_STACK 16
/* Chunk size: about this many per thread, and never below ~32 KB of Q8_0
 * weights in decode (a chunk is one claim and one kernel call). */
#define MM_CHUNKS_PER_THREAD 16
#define MM_CHUNK_MIN_WORK 32768
/* Below this a job is not cut for balance (a 16 x 1024 F16 product split
 * over 2 threads took 0.99 us against 0.66 on one). */
#define MM_CHUNK_SMALL_WORK 16384

/* The job of one segment: weight slice, kernels, chunking (no inputs yet). */
static void seg_setup(const ds4_mm_seg *s, mm_seg_job *j) {
    const ds4_type_traits *tt = ds4_type_traits_get(s->w->type);
    int64_t ne0 = s->w->ne[0];
    memset(j, 0, sizeof *j);
    j->row_bytes = ds4_row_size(s->w->type, ne0);
    j->base = (const uint8_t *)s->w->data + (size_t)s->expert * (size_t)s->w->ne[1] * j->row_bytes;
    j->row0 = s->row0;
    j->nrows = s->nrows;
    j->ne0 = ne0;
    j->n = s->n;
    j->Y = s->Y;
    j->ldy = s->ldy;
    j->dot = tt->vec_dot;
    j->tile = tt->vec_dot_tile;
    j->xq_bytes = ds4_row_size(tt->vec_dot_type, ne0);
    if (tt->panel_gemm && s->n >= MM_PANEL_MIN_TOKENS) {
        j->pgemm = tt->panel_gemm;
        j->pack = tt->panel_pack;
        j->ptok = tt->panel_tokens;
        j->pbytes = tt->panel_bytes(ne0);
        /* whole panels per chunk, ~half an L2 of them */
        size_t np = j->pbytes ? MM_PANEL_L2_BYTES / j->pbytes : 1;
        size_t chunk = (np > 0 ? np : 1) * (size_t)j->ptok;
        j->tok_chunk = chunk > (size_t)s->n ? s->n : (int)chunk;
    } else {
        /* ~512 KB of activations per chunk: half an L2, the rest for weights */
        size_t chunk = j->xq_bytes ? (512u << 10) / j->xq_bytes : (size_t)s->n;
        chunk = chunk / DS4_TILE * DS4_TILE;
        j->tok_chunk = chunk < DS4_TILE ? DS4_TILE : chunk > (size_t)s->n ? s->n : (int)chunk;
    }
    if (j->tok_chunk < 1) j->tok_chunk = 1;
    j->done = s->done;
    j->done_ctx = s->done_ctx;
}

/* Whether a segment's input is read in place (already the dot's type). */
static bool seg_in_place(const ds4_mm_seg *s) {
    return ds4_type_traits_get(s->w->type)->vec_dot_type == DS4_TYPE_F32 && s->ldx == s->w->ne[0] && !s->xrows;
}

static bool conv_same_input(const mm_conv *a, const mm_conv *b) {
    return a->X == b->X && a->ldx == b->ldx && a->ne0 == b->ne0 &&
           ds4_type_traits_get(a->type)->vec_dot_type == ds4_type_traits_get(b->type)->vec_dot_type;
}

/* Gathers of one input (prefill's MoE: each routed expert reads its tokens'
 * rows of x̂, k experts a token) would quantize each row once per expert;
 * where an in-order conversion of that input covers their rows (the shared
 * expert's, when it reads the same activation type) they copy them from it
 * instead (a second pass of the conversion job, after the first).  Prefill
 * of small-q8, 512 tokens, 8 interleaved pairs: gate_up 1-3 us less of
 * ~160 per token, a small gain.  Adding such a conversion where none
 * exists, for the q2 recipe's Q8_K experts beside a Q8_0 shared expert,
 * cost more than it saved (gate_up ~150 -> ~152), so gathers without one
 * still convert their own rows. */
static void share_gathers(mm_conv *conv, int nconv) {
    for (int c = 0; c < nconv; c++) {
        mm_conv *g = &conv[c];
        if (!g->xrows) continue;
        int need = 0; /* rows [0, need) hold every gathered one */
        for (int t = 0; t < g->n; t++)
            if (g->xrows[t] >= need) need = g->xrows[t] + 1;
        for (int k = 0; k < nconv && g->src < 0; k++)
            if (!conv[k].xrows && conv[k].n >= need && conv_same_input(&conv[k], g)) g->src = k;
    }
}

void ds4_mm_multi(ds4_pool *pool, const ds4_mm_seg *segs, int nseg) {
    if (nseg <= 0) return;
    mm_seg_job job_st[MM_SEGS_STACK];
    mm_conv conv_st[MM_SEGS_STACK];
    int conv_of_st[MM_SEGS_STACK];
    mm_seg_job *job = job_st;
    mm_conv *conv = conv_st;
    int *conv_of = conv_of_st; /* -1: the input is used in place */
    void *heap = NULL;
    if (nseg > MM_SEGS_STACK) { /* prefill over many experts */
        heap = malloc((size_t)nseg * (sizeof *job + sizeof *conv + sizeof *conv_of));
        if (!heap) abort();
        job = heap;
        conv = (mm_conv *)(job + nseg);
        conv_of = (int *)(conv + nseg);
    }
    int nconv = 0;
    size_t conv_bytes = 0, mate_floats = 0;
    int64_t total_work = 0, conv_work = 0;
    for (int i = 0; i < nseg; i++) {
        const ds4_mm_seg *s = &segs[i];
        mm_seg_job *j = &job[i];
        int64_t ne0 = s->w->ne[0];
        seg_setup(s, j);
        if (i > 0 && segs[i - 1].pair && segs[i - 1].mate_local) { /* a piece's rows at most, for every token */
            size_t f = (size_t)s->n * (size_t)((s->nrows + 15) & ~(int64_t)15);
            if (f > mate_floats) mate_floats = f;
        }
        total_work += s->nrows * ne0 * (int64_t)s->n;
        conv_of[i] = -1;
        if (seg_in_place(s)) continue; /* already in the right form */
        /* Segments sharing an input (gate and up of an expert, the projections
         * of x̂) share its conversion: it depends only on the input and the
         * vec_dot type. */
        /* A panel segment also shares the panels, so it needs an input packed
         * by the same kernel family (same pack function, hence layout). */
        /* the segment's own conversion, kept only if none matches */
        const mm_conv *own = &conv[nconv];
        conv[nconv] = (mm_conv){s->w->type, s->X, s->xrows, s->ldx, ne0, s->n, NULL, j->xq_bytes,
                                j->pack, j->ptok, j->pbytes, NULL, conv_rows(j->ptok), -1, true};
        for (int c = 0; c < nconv && conv_of[i] < 0; c++)
            if (conv_same_input(&conv[c], own) && conv[c].xrows == s->xrows && conv[c].n >= s->n &&
                (!j->pack || conv[c].pack == j->pack))
                conv_of[i] = c;
        if (conv_of[i] >= 0) continue;
        conv_work += ne0 * (int64_t)s->n;
        conv_of[i] = nconv++;
    }
    share_gathers(conv, nconv);
    /* Which conversions keep their rows (mm_conv.keep).  Prefill's panel
     * conversions do not: their rows (MBs: the routed experts' gathered
     * x̂ rows, the attention output) would be written to memory only to be
     * packed at once and never read again. */
    for (int c = 0; c < nconv; c++) conv[c].keep = !conv[c].pack;
    for (int i = 0; i < nseg; i++)
        if (conv_of[i] >= 0 && !job[i].pgemm) conv[conv_of[i]].keep = true;
    for (int c = 0; c < nconv; c++)
        if (conv[c].src >= 0) conv[conv[c].src].keep = true;
    size_t slot_bytes = 0; /* per thread: one task's unkept rows */
    for (int c = 0; c < nconv; c++) {
        const mm_conv *cv = &conv[c];
        if (cv->keep) conv_bytes += align64(cv->xq_bytes * (size_t)cv->n);
        else if (align64(cv->xq_bytes * (size_t)cv->rows) > slot_bytes) slot_bytes = align64(cv->xq_bytes * (size_t)cv->rows);
        if (cv->pack) conv_bytes += align64(cv->pbytes * (size_t)((cv->n + cv->ptok - 1) / cv->ptok));
    }
    /* Decode's converted inputs (a few KB) live on the stack: a malloc/free
     * per matmul was a measurable part of a token's fixed cost. */
    _Alignas(64) uint8_t xq_stack[MM_XQ_STACK];
    uint8_t *xq = NULL, *xq_heap = NULL;
    /* Layout: the per-thread row slots, the conversions, then the local
     * mates' per-thread slots.  (With the row slots after the conversions
     * instead, out_a and out_b of a small-q2 prefill ran ~1.5 us a token
     * slower each, 4 of 4 pairs: not understood.) */
    int threads = ds4_pool_size(pool);
    size_t mstride = (mate_floats + 15) & ~(size_t)15;
    size_t scratch_bytes = align64(conv_bytes) + slot_bytes * (size_t)threads + sizeof(float) * mstride * (size_t)threads;
    if (scratch_bytes) {
        /* panels are read as aligned 64-byte rows */
        /* prefill's (MBs) in the pool's kept scratch */
        xq = scratch_bytes <= sizeof xq_stack ? xq_stack : ds4_pool_scratch(pool, scratch_bytes);
        if (!xq) xq = xq_heap = aligned_alloc(64, scratch_bytes);
        if (!xq) abort(); /* activation buffers are tiny next to the weights */
    }
    uint8_t *slots = slot_bytes ? xq : NULL;
    float *mscratch = mstride ? (float *)(void *)(xq + align64(conv_bytes) + slot_bytes * (size_t)threads) : NULL;
    if (nconv) {
        size_t off = slot_bytes * (size_t)threads;
        int64_t nblocks[2] = {0, 0};
        for (int c = 0; c < nconv; c++) {
            conv[c].xq = conv[c].keep ? xq + off : NULL;
            if (conv[c].keep) off += align64(conv[c].xq_bytes * (size_t)conv[c].n);
            if (conv[c].pack) {
                conv[c].panels = xq + off;
                off += align64(conv[c].pbytes * (size_t)((conv[c].n + conv[c].ptok - 1) / conv[c].ptok));
            }
            nblocks[conv[c].src >= 0] += conv_blocks(&conv[c]);
        }
        for (int pass = 0; pass < 2; pass++) { /* copies wait for their sources */
            mm_conv_job cj = {conv, nconv, pass, pool, slots, slot_bytes};
            if (conv_work >= (1 << 16) && nblocks[pass] > 1) {
                ds4_pool_run(pool, nblocks[pass], conv_task, &cj);
            } else {
                for (int64_t b = 0; b < nblocks[pass]; b++) conv_task(&cj, b);
            }
        }
    }
    for (int i = 0; i < nseg; i++) {
        job[i].xq = conv_of[i] >= 0 ? conv[conv_of[i]].xq : (const uint8_t *)segs[i].X;
        job[i].panels = conv_of[i] >= 0 ? conv[conv_of[i]].panels : NULL;
        if (!job[i].panels) job[i].pgemm = NULL; /* (an F32 input used in place has no panels) */
    }

    /* Spans: the job's rows are cut into chunks of about the same work
     * (whole row blocks, never across segments), listed in memory order;
     * the list is cut into one contiguous span per thread, of equal work.
     * Pool task i walks span i front to back, then steals chunks from the
     * back of the span with the most left.  Each thread thus streams one
     * contiguous stretch of weights (the hardware prefetcher stays trained
     * across chunks), the threads finish within a chunk of each other, and
     * a thread the OS delays has its span taken over.  (Measured against
     * the former guided cutting, whose pieces shrank geometrically and were
     * taken by whichever thread was free: 2 threads, n = 1, a 1 MB Q8_0
     * matvec went from 23.5 to ~20 us.) */
    int64_t total = 0;
    for (int i = 0; i < nseg; i++) {
        mm_seg_job *j = &job[i];
        if (segs[i].pair && i + 1 < nseg) {
            j->mate = &job[i + 1];
            j->mate_local = segs[i].mate_local;
        }
        if (i > 0 && segs[i - 1].pair) continue; /* computed by its mate's tasks */
        total += j->nrows * seg_row_work(j);
    }
    int64_t target = total / ((int64_t)threads * MM_CHUNKS_PER_THREAD);
    /* At least the floor, lowered (to MM_CHUNK_SMALL_WORK at most) so a
     * small job still gets ~4 chunks per thread: the mHC mix (24 rows of
     * 4096) cut at the floor gave one thread twice the rows of the other
     * (Zen 5, 2 threads, cold F16: 5.5 -> 5.0 us). */
    int64_t floor = total / ((int64_t)threads * 4);
    if (floor > MM_CHUNK_MIN_WORK) floor = MM_CHUNK_MIN_WORK;
    if (floor < MM_CHUNK_SMALL_WORK) floor = MM_CHUNK_SMALL_WORK;
    if (target < floor) target = floor;
    int64_t npiece = 0, cap = 0;
    mm_piece piece_stack[MM_PIECES_STACK], *piece = NULL, *piece_heap = NULL;
    for (int pass = 0; pass < 2; pass++) { /* count, then fill */
        int64_t k = 0;
        for (int i = 0; i < nseg; i++) {
            mm_seg_job *j = &job[i];
            if (i > 0 && segs[i - 1].pair) continue;
            int64_t wpr = seg_row_work(j);
            int gran = j->pgemm ? MM_PANEL_ROWS : j->tile ? DS4_TILE : 1;
            if (segs[i].row_gran > 0) { /* the least common multiple of both */
                int g = segs[i].row_gran;
                while (g % gran) g += segs[i].row_gran;
                gran = g;
            }
            int64_t rows = (target + wpr - 1) / wpr;
            rows = (rows + gran - 1) / gran * gran;
            for (int64_t r = 0; r < j->nrows; r += rows) {
                int64_t r1 = r + rows < j->nrows ? r + rows : j->nrows;
                if (piece) piece[k] = (mm_piece){i, r, r1, (r1 - r) * wpr};
                k++;
            }
        }
        if (pass == 0) {
            npiece = cap = k;
            piece = cap <= MM_PIECES_STACK ? piece_stack : (piece_heap = malloc(sizeof *piece * (size_t)cap));
            if (!piece) abort();
        }
    }
    int nspan = threads < npiece ? threads : (int)npiece;
    mm_span span_stack[MM_SPANS_STACK], *span = span_stack, *span_heap = NULL;
    if (nspan > MM_SPANS_STACK) {
        span = span_heap = aligned_alloc(64, sizeof *span * (size_t)nspan);
        if (!span) abort();
    }
    /* span s ends where the running work passes (s + 1)/nspan of the total */
    for (int64_t c = 0, sp = 0, done = 0, front = 0; c < npiece; c++) {
        done += piece[c].work;
        if (c == npiece - 1 || (sp < nspan - 1 && done * nspan >= total * (sp + 1))) {
            atomic_init(&span[sp].fb, (uint64_t)front << 32 | (uint64_t)(c + 1));
            front = c + 1;
            sp++;
        }
        if (c == npiece - 1)
            for (; sp < nspan; sp++) atomic_init(&span[sp].fb, (uint64_t)npiece << 32 | (uint64_t)npiece);
    }
    mm_job mj = {job, piece, span, nspan, pool, mscratch, mstride};
    if (nspan <= 1) {
        for (int64_t c = 0; c < npiece; c++) mm_piece_run(&mj, c);
    } else {
        ds4_pool_run(pool, nspan, mm_span_task, &mj);
    }
    free(span_heap);
    free(piece_heap);
    free(xq_heap);
    free(heap);
}

size_t ds4_mm_local_scratch(const ds4_weight *w, int n) {
    ds4_mm_seg s = ds4_seg(w, 0, 0, w->ne[1], NULL, w->ne[0] + 1, n, NULL, 0); /* ldx: never in place */
    mm_seg_job j;
    seg_setup(&s, &j);
    size_t bytes = align64(j.xq_bytes * (size_t)n);
    if (j.pgemm) bytes += align64(j.pbytes * (size_t)((n + j.ptok - 1) / j.ptok));
    return bytes;
}

void ds4_mm_local(const ds4_weight *w, const float *X, int64_t ldx, int n, float *Y, int64_t ldy, void *scratch) {
    if (n <= 0) return;
    ds4_mm_seg s = ds4_seg(w, 0, 0, w->ne[1], X, ldx, n, Y, ldy);
    mm_seg_job j;
    seg_setup(&s, &j);
    if (seg_in_place(&s)) {
        j.xq = (const uint8_t *)X;
        j.pgemm = NULL; /* an F32 input used in place has no panels */
    } else {
        uint8_t *xq = scratch;
        for (int t = 0; t < n; t++)
            ds4_quantize_row_for(w->type, X + (int64_t)t * ldx, xq + (size_t)t * j.xq_bytes, j.ne0);
        j.xq = xq;
        if (j.pgemm) {
            uint8_t *panels = xq + align64(j.xq_bytes * (size_t)n);
            j.pack(j.ne0, xq, j.xq_bytes, n, panels);
            j.panels = panels;
        }
    }
    mm_rows(&j, 0, j.nrows);
}

void ds4_mm(ds4_pool *pool, const ds4_weight *w, int64_t expert, int64_t row0, int64_t nrows,
            const float *X, int64_t ldx, int n, float *Y, int64_t ldy) {
    ds4_mm_seg s = ds4_seg(w, expert, row0, nrows, X, ldx, n, Y, ldy);
    ds4_mm_multi(pool, &s, 1);
}

void ds4_weight_row_f32(const ds4_weight *w, int64_t row, float *out) {
    size_t rb = ds4_row_size(w->type, w->ne[0]);
    ds4_type_traits_get(w->type)->to_float((const uint8_t *)w->data + (size_t)row * rb, out, w->ne[0]);
}

void ds4_rmsnorm(const float *x, const float *w, int64_t n, float eps, float *y) {
    double ss = ds4_vec_sumsq_f32(x, n);
    float scale = (float)(1.0 / sqrt(ss / (double)n + eps));
    if (w)
        for (int64_t i = 0; i < n; i++) y[i] = x[i] * scale * w[i];
    else
        for (int64_t i = 0; i < n; i++) y[i] = x[i] * scale;
}

/* YaRN correction dimension: where a frequency completes `rot` turns over orig_ctx. */
static double yarn_corr_dim(double rot, int dim, double base, double orig_ctx) {
    return dim * log(orig_ctx / (rot * 2.0 * M_PI)) / (2.0 * log(base));
}

void ds4_rope_freqs(float *inv_freq, int rope_dim, float base, float yarn_factor, double orig_ctx,
                    double beta_fast, double beta_slow) {
    int half = rope_dim / 2;
    /* f32 arithmetic in the reference's order: base^(2i/d), then its inverse. */
    float pos_freq[half > 0 ? half : 1];
    for (int i = 0; i < half; i++) {
        float e = (float)(2 * i) / (float)rope_dim;
        pos_freq[i] = powf(base, e);
        inv_freq[i] = 1.0f / pos_freq[i];
    }
    if (yarn_factor <= 1.0f) return;
    double lo = floor(yarn_corr_dim(beta_fast, rope_dim, base, orig_ctx));
    double hi = ceil(yarn_corr_dim(beta_slow, rope_dim, base, orig_ctx));
    if (lo < 0) lo = 0;
    if (hi > rope_dim - 1) hi = rope_dim - 1;
    if (lo == hi) hi += 0.001;
    for (int i = 0; i < half; i++) {
        float ramp = ((float)i - (float)lo) / (float)(hi - lo);
        ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
        float extrap = 1.0f - ramp;   /* weight of the original frequency */
        float interp_f = 1.0f / (yarn_factor * pos_freq[i]);
        inv_freq[i] = interp_f * (1.0f - extrap) + inv_freq[i] * extrap;
    }
}

void ds4_rope(float *x, int d, int rope_dim, const float *inv_freq, int64_t pos, int sign) {
    float *t = x + d - rope_dim;
    for (int i = 0; i < rope_dim / 2; i++) {
        float ang = (float)pos * inv_freq[i];
        float c = cosf(ang), s = sign * sinf(ang);
        float a = t[2 * i], b = t[2 * i + 1];
        t[2 * i] = a * c - b * s;
        t[2 * i + 1] = a * s + b * c;
    }
}

/* The QAT round trips are the live level's vector kernels (vec_ref.c holds
 * the scalar definition; every level is bit-identical to it, test_vec). */
void ds4_fp8_roundtrip(float *x, int64_t n) { ds4_vec_ops_live()->fp8_roundtrip(x, n); }

void ds4_fp4_roundtrip(float *x, int64_t n) { ds4_vec_ops_live()->fp4_roundtrip(x, n); }

void ds4_hadamard(float *x, int n) {
    for (int h = 1; h < n; h *= 2)
        for (int i = 0; i < n; i += 2 * h)
            for (int j = i; j < i + h; j++) {
                float a = x[j], b = x[j + h];
                x[j] = a + b;
                x[j + h] = a - b;
            }
    float s = 1.0f / sqrtf((float)n);
    for (int i = 0; i < n; i++) x[i] *= s;
}

/* Float bits -> uint32 in the floats' order (negatives flipped, positives
 * with the sign bit set), branch-free: signs are random in the scores.
 * f + 0 turns -0 into +0 so that they tie. */
static inline uint32_t topk_key(float f) {
    uint32_t u;
    f += 0.0f;
    memcpy(&u, &f, sizeof u);
    return u ^ ((uint32_t)-(int32_t)(u >> 31) | 0x80000000u);
}

static inline float topk_unkey(uint32_t u) {
    u ^= (u >> 31) ? 0x80000000u : 0xffffffffu;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Picks the bin holding the need-th largest key among counts c0 + c1 (two
 * halves of one histogram: alternate elements go to alternate halves, so
 * runs of equal keys make two chains of increments, not one); need becomes
 * the rank inside that bin. */
static uint32_t topk_bin(const uint32_t *c0, const uint32_t *c1, uint32_t nb, int *need) {
    uint32_t b = nb - 1;
    while (c0[b] + c1[b] < (uint32_t)*need) *need -= (int)(c0[b] + c1[b]), b--; /* stops: enough keys */
    return b;
}

/* v (a number) ranks before u: larger, or u is NaN */
static inline bool topk_beats(float v, float u) { return v > u || u != u; }

int ds4_topk_sorted(const float *score, const float *bias, int n, int k, int32_t *ids, float *vals) {
    int have = 0;
    if (k <= 0) return 0;
    for (int i = 0; i < n; i++) {
        float v = bias ? score[i] + bias[i] : score[i];
        if (v != v) { /* NaN: only into a free place, after the numbers */
            if (have < k) { vals[have] = v; ids[have++] = i; }
            continue;
        }
        if (have == k && !topk_beats(v, vals[k - 1])) continue;
        int p = have < k ? have++ : k - 1;
        /* a later index passes only strictly smaller values: ties keep order */
        for (; p > 0 && topk_beats(v, vals[p - 1]); p--) {
            vals[p] = vals[p - 1];
            ids[p] = ids[p - 1];
        }
        vals[p] = v;
        ids[p] = i;
    }
    return have;
}

int ds4_topk(const float *score, int n, int k, int32_t *out, uint32_t *scratch) {
    if (n <= 0 || k <= 0) return 0;
    if (n <= k) {
        for (int i = 0; i < n; i++) out[i] = i;
        return n;
    }
    uint32_t cnt[2][1 << 11];
    int need = k;
    /* level 1: the top 11 bits of every key (kept in scratch) */
    memset(cnt, 0, sizeof cnt);
    int i = 0;
    for (; i + 1 < n; i += 2) {
        uint32_t u0 = topk_key(score[i]), u1 = topk_key(score[i + 1]);
        scratch[i] = u0, scratch[i + 1] = u1;
        cnt[0][u0 >> 21]++, cnt[1][u1 >> 21]++;
    }
    if (i < n) cnt[0][(scratch[i] = topk_key(score[i])) >> 21]++;
    uint32_t b = topk_bin(cnt[0], cnt[1], 1u << 11, &need);
    /* the candidates (keys in bin b) to the front of scratch, in place */
    int m = 0;
    for (i = 0; i < n; i++) {
        uint32_t u = scratch[i];
        scratch[m] = u;
        m += u >> 21 == b;
    }
    /* levels 2 and 3 (11 and 10 bits) over the candidates only */
    memset(cnt, 0, sizeof cnt);
    for (i = 0; i < m; i++) cnt[i & 1][(scratch[i] >> 10) & 0x7ff]++;
    uint32_t b2 = topk_bin(cnt[0], cnt[1], 1u << 11, &need);
    memset(cnt, 0, sizeof cnt);
    uint32_t pre = b << 11 | b2;
    for (i = 0; i < m; i++)
        if (scratch[i] >> 10 == pre) cnt[0][scratch[i] & 0x3ff]++;
    uint32_t b3 = topk_bin(cnt[0], cnt[1], 1u << 10, &need);
    /* The k-th largest score is an actual score: every score above it is
     * taken, and the first `need` equal to it (float compares: -0 == +0). */
    float thr = topk_unkey(pre << 10 | b3);
    m = 0;
    for (i = 0; i < n; i++)
        if (score[i] > thr || (score[i] == thr && need > 0 && need--)) out[m++] = i;
    return m;
}
