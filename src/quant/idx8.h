/* Exact int8 lightning-indexer scores: a faster route to idx_scores's bits.
 *
 * In the model numerics the indexer's query heads and rows leave the FP4
 * round trip (MODEL.md §2.4) as E2M1 values times power-of-two block
 * scales, so a whole 128-float vector is usually c·2^e with integer codes
 * |c| <= 127 (12·2^span: the blocks' scales may differ by up to 8x).  For
 * two such vectors every product and every partial sum of q·k is a
 * multiple of 2^(e_q + e_k) below dI·127²·2^(e_q + e_k) < 2^24·2^(e_q + e_k),
 * so idx_scores's fmaf chain is exact, and so is Σ c_q·c_k in int32 (VNNI:
 * 64 multiply-adds an instruction instead of 16 FMAs) scaled by
 * 2^(e_q + e_k) -- the same float.  relu, the head weights and the head
 * sum then run in idx_scores's order, so the scores are bit-identical to
 * it (simd.h), wherever the integer path applies:
 *   - the vector is c·2^e with integer |c| <= 127 (checked exactly when it
 *     is converted; a NaN, an infinity or a subnormal maximum never is),
 *   - e_q + e_k >= -149 (the unit is a float step) and <= 104 (no overflow).
 * A row or a head outside that takes the level's f32 idx_scores instead,
 * per token and group of 16 rows, so the scores never depend on which
 * path ran.  In the reference numerics (no FP4) hardly anything is
 * convertible and the engine does not build the int8 rows at all.
 *
 * Layouts (both 64-byte aligned, dI a multiple of 4, at most 1024):
 *   group   16 rows: codes + 128 as u8, [dI/4][16 rows][4] (one VNNI
 *           operand per 4 elements of 16 rows), then the rows' e as 16
 *           floats, then meta (int32: rows not convertible, min and max e
 *           of the nonzero rows).  Unfilled slots hold zero rows.
 *   query   one token's nI heads: codes as s8 [nI][dI], then per head
 *           -128·Σ c (int32, the u8 offset's correction) and e (float),
 *           then meta (int32: heads not convertible, min and max e of the
 *           nonzero heads). */
#ifndef DS4_QUANT_IDX8_H
#define DS4_QUANT_IDX8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ds4_vec_ops;

#define DS4_IDX8_ROWS 16 /* rows per group */

typedef struct ds4_idx8_ops {
    /* Row i (of the groups array: group i / 16, slot i % 16) from dI floats.
     * Slot 0 resets the group (every slot a zero row). */
    void (*put_row)(uint8_t *groups, int64_t i, const float *row, int dI);
    /* One token's nI heads (nI·dI floats) into its query record. */
    void (*query)(const float *q, int nI, int dI, uint8_t *rec);
    /* idx_scores (simd.h) of nt tokens against rows [0, n) of `groups`,
     * whose f32 copies are k (dI floats each): q the f32 heads (for the
     * fallback), qr the tokens' query records at stride qstride.  Returns
     * the number of (token, group) pairs the integer path computed. */
    int64_t (*scores)(const struct ds4_vec_ops *v, const float *q, const uint8_t *qr, size_t qstride,
                      const float *w, int nt, int nI, int dI, const uint8_t *groups, const float *k, int64_t n,
                      float *out, int64_t ostride);
} ds4_idx8_ops;

/* Whether the layouts support this shape. */
static inline bool ds4_idx8_shape_ok(int nI, int dI) { return nI >= 1 && dI >= 4 && dI <= 1024 && dI % 4 == 0; }

static inline size_t ds4_idx8_align(size_t x) { return (x + 63) & ~(size_t)63; }

/* Byte offsets inside a group / a query record. */
static inline size_t ds4_idx8_group_e(int dI) { return (size_t)dI * DS4_IDX8_ROWS; }
static inline size_t ds4_idx8_group_meta(int dI) { return ds4_idx8_group_e(dI) + 64; }
static inline size_t ds4_idx8_group_bytes(int dI) { return ds4_idx8_group_meta(dI) + 64; }
static inline size_t ds4_idx8_query_corr(int nI, int dI) { return ds4_idx8_align((size_t)nI * (size_t)dI); }
static inline size_t ds4_idx8_query_e(int nI, int dI) {
    return ds4_idx8_query_corr(nI, dI) + ds4_idx8_align((size_t)nI * 4);
}
static inline size_t ds4_idx8_query_meta(int nI, int dI) {
    return ds4_idx8_query_e(nI, dI) + ds4_idx8_align((size_t)nI * 4);
}
static inline size_t ds4_idx8_query_bytes(int nI, int dI) { return ds4_idx8_query_meta(nI, dI) + 64; }

#endif
