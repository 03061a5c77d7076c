/* Numeric building blocks; see ops.h. */
#include <math.h>

#include "engine/ops.h"

#include <stdlib.h>
#include <string.h>

#include "quant/quant.h"
#include "quant/vec.h"

typedef struct {
    const ds4_weight *w;
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
    int64_t rows_per_task;
} mm_job;

/* Rows [r0, r1) of the task.  With a tile kernel: for each chunk of tokens
 * whose activations fit in L2, walk the rows DS4_TILE at a time and hand
 * each row block x up to DS4_TILE tokens to the kernel, so a row block is
 * read from memory once per chunk and reused from L1 across its tokens.
 * Decode (n = 1) is then DS4_TILE independent rows per call, which hides
 * the FMA latency of the one-accumulator dots. */
static void mm_task(void *ctx, int64_t task) {
    const mm_job *j = ctx;
    int64_t r0 = task * j->rows_per_task;
    int64_t r1 = r0 + j->rows_per_task < j->nrows ? r0 + j->rows_per_task : j->nrows;
    if (!j->tile) {
        for (int64_t r = r0; r < r1; r++) {
            const uint8_t *row = j->base + (size_t)(j->row0 + r) * j->row_bytes;
            for (int t = 0; t < j->n; t++)
                j->Y[(int64_t)t * j->ldy + r] = j->dot(j->ne0, row, j->xq + (size_t)t * j->xq_bytes);
        }
        return;
    }
    for (int t0 = 0; t0 < j->n; t0 += j->tok_chunk) {
        int t1 = t0 + j->tok_chunk < j->n ? t0 + j->tok_chunk : j->n;
        for (int64_t r = r0; r < r1; r += DS4_TILE) {
            int nr = r1 - r < DS4_TILE ? (int)(r1 - r) : DS4_TILE;
            const uint8_t *row = j->base + (size_t)(j->row0 + r) * j->row_bytes;
            for (int t = t0; t < t1; t += DS4_TILE) {
                int nc = t1 - t < DS4_TILE ? t1 - t : DS4_TILE;
                j->tile(j->ne0, row, j->row_bytes, nr, j->xq + (size_t)t * j->xq_bytes, j->xq_bytes, nc,
                        j->Y + (int64_t)t * j->ldy + r, j->ldy);
            }
        }
    }
}

void ds4_mm(ds4_pool *pool, const ds4_weight *w, int64_t expert, int64_t row0, int64_t nrows,
            const float *X, int64_t ldx, int n, float *Y, int64_t ldy) {
    const ds4_type_traits *tt = ds4_type_traits_get(w->type);
    int64_t ne0 = w->ne[0];
    mm_job j = {0};
    j.w = w;
    j.row_bytes = ds4_row_size(w->type, ne0);
    j.base = (const uint8_t *)w->data + (size_t)expert * (size_t)w->ne[1] * j.row_bytes;
    j.row0 = row0;
    j.nrows = nrows;
    j.ne0 = ne0;
    j.n = n;
    j.Y = Y;
    j.ldy = ldy;
    j.dot = tt->vec_dot;
    j.tile = tt->vec_dot_tile;
    j.xq_bytes = ds4_row_size(tt->vec_dot_type, ne0);
    /* ~512 KB of activations per chunk: half an L2, the rest for weights */
    size_t chunk = j.xq_bytes ? (512u << 10) / j.xq_bytes : (size_t)n;
    chunk = chunk / DS4_TILE * DS4_TILE;
    j.tok_chunk = chunk < DS4_TILE ? DS4_TILE : chunk > (size_t)n ? n : (int)chunk;
    if (j.tok_chunk < 1) j.tok_chunk = 1;
    uint8_t *xq = NULL;
    if (tt->vec_dot_type == DS4_TYPE_F32 && ldx == ne0) {
        j.xq = (const uint8_t *)X; /* already in the right form and contiguous */
    } else {
        xq = malloc(j.xq_bytes * (size_t)n);
        if (!xq) abort(); /* activation buffers are tiny next to the weights */
        for (int t = 0; t < n; t++) ds4_quantize_row_for(w->type, X + (int64_t)t * ldx, xq + (size_t)t * j.xq_bytes, ne0);
        j.xq = xq;
    }
    /* Enough tasks to balance threads, each big enough to amortise dispatch. */
    int threads = ds4_pool_size(pool);
    int64_t work_per_row = ne0 * (int64_t)n;
    int64_t min_rows = work_per_row >= 65536 ? 1 : 65536 / (work_per_row ? work_per_row : 1);
    int64_t per = (nrows + threads * 4 - 1) / (threads * 4);
    if (per < min_rows) per = min_rows;
    if (per < 1) per = 1;
    if (j.tile) per = (per + DS4_TILE - 1) / DS4_TILE * DS4_TILE; /* whole row blocks per task */
    j.rows_per_task = per;
    ds4_pool_run(pool, (nrows + per - 1) / per, mm_task, &j);
    free(xq);
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

/* 2^ceil(log2(r)) exactly, for r > 0. */
static float pow2_ceil(float r) {
    int e;
    float f = frexpf(r, &e); /* r = f·2^e, f in [0.5, 1) */
    return ldexpf(1.0f, f == 0.5f ? e - 1 : e);
}

static void block_roundtrip(float *x, int64_t n, int64_t blk, float qmax, float amin, float (*round_fn)(float)) {
    for (int64_t b0 = 0; b0 < n; b0 += blk) {
        int64_t b1 = b0 + blk < n ? b0 + blk : n;
        float a = 0;
        for (int64_t i = b0; i < b1; i++) a = fmaxf(a, fabsf(x[i]));
        a = fmaxf(a, amin);
        float s = pow2_ceil(a / qmax);
        for (int64_t i = b0; i < b1; i++) {
            float v = x[i] / s;
            v = v < -qmax ? -qmax : v > qmax ? qmax : v;
            x[i] = round_fn(v) * s;
        }
    }
}

void ds4_fp8_roundtrip(float *x, int64_t n) {
    block_roundtrip(x, n, 64, 448.0f, 1e-4f, ds4_round_fp8_e4m3);
}

void ds4_fp4_roundtrip(float *x, int64_t n) {
    block_roundtrip(x, n, 32, 6.0f, 6.0f * 0x1p-126f, ds4_round_fp4_e2m1);
}

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
