/* Internal to the idx8 kernels (idx8_avx512.c, idx8_avx2.c): the parts of
 * idx8.h's contract that do not depend on the vector width -- the meta
 * words of groups and query records, the test for whether a (token, group)
 * pair may take the integer path, and exact powers of two. */
#ifndef DS4_QUANT_IDX8_INT_H
#define DS4_QUANT_IDX8_INT_H

#include <float.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "quant/idx8.h"

enum { IDX8_META_BAD, IDX8_META_EMIN, IDX8_META_EMAX };

static inline float idx8_pow2f(int e) { /* 2^e, e in [-126, 127] */
    uint32_t u = (uint32_t)(e + 127) << 23;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline void idx8_meta_reset(int32_t *meta) {
    meta[IDX8_META_BAD] = 0;
    meta[IDX8_META_EMIN] = INT_MAX;
    meta[IDX8_META_EMAX] = INT_MIN;
}

/* Counts a vector's conversion (rc: 1 codes, 0 zero, -1 not representable). */
static inline void idx8_meta_add(int32_t *meta, int rc, int e) {
    if (rc < 0) meta[IDX8_META_BAD]++;
    if (rc > 0) {
        if (e < meta[IDX8_META_EMIN]) meta[IDX8_META_EMIN] = e;
        if (e > meta[IDX8_META_EMAX]) meta[IDX8_META_EMAX] = e;
    }
}

/* Whether a token's heads (query meta qm) and a group's rows (gm) may take
 * the integer path: every vector converted, and every unit e_q + e_k a
 * float step with no overflow (idx8.h). */
static inline bool idx8_pair_ok(const int32_t *qm, const int32_t *gm) {
    if (qm[IDX8_META_BAD] || gm[IDX8_META_BAD]) return false;
    if (qm[IDX8_META_EMIN] == INT_MAX || gm[IDX8_META_EMIN] == INT_MAX) return true; /* all zero on one side */
    return qm[IDX8_META_EMIN] + gm[IDX8_META_EMIN] >= -149 && qm[IDX8_META_EMAX] + gm[IDX8_META_EMAX] <= 104;
}

/* Row r of a group from its codes c (rc, e from the conversion): the codes
 * + 128 as u8 at [j / 4][r][j % 4], e as a float; slot 0 first resets the
 * group (every slot a zero row: code 0, e 0). */
static inline void idx8_group_put(uint8_t *g, int r, const int8_t *c, int rc, int e, int dI, size_t e_off,
                                  size_t meta_off) {
    float *ge = (float *)(void *)(g + e_off);
    int32_t *meta = (int32_t *)(void *)(g + meta_off);
    if (r == 0) {
        memset(g, 0x80, e_off);
        memset(ge, 0, sizeof(float) * 16);
        idx8_meta_reset(meta);
    }
    idx8_meta_add(meta, rc, e);
    ge[r] = (float)e;
    if (rc <= 0) return; /* zero rows stay code 0; a bad row is never read */
    for (int j = 0; j < dI; j += 4) {
        uint8_t *dst = g + (size_t)(j / 4) * 64 + (size_t)r * 4;
        for (int u = 0; u < 4; u++) dst[u] = (uint8_t)(c[j + u] + 128);
    }
}

/* The scalar middle of a conversion, given a = the largest |x| the vector
 * max found (a NaN may have been dropped there): 0 for an all-zero vector
 * (codes 0), -1 where no unit works, else 1 with the unit's exponent in
 * *ea = floor(log2 a) - 6; *e and *sum start at 0. */
static inline int idx8_unit(float a, const float *x, int d, int8_t *c, int *e, int32_t *sum, int *ea) {
    *e = 0;
    *sum = 0;
    if (a == 0.0f) {
        /* zero, or NaNs that max dropped: check every element */
        for (int j = 0; j < d; j++)
            if (x[j] != 0.0f) return -1;
        memset(c, 0, (size_t)d);
        return 0;
    }
    if (!(a >= FLT_MIN && a <= FLT_MAX)) return -1;
    uint32_t ab;
    memcpy(&ab, &a, sizeof ab);
    *ea = (int)(ab >> 23) - 127 - 6;
    return *ea < -126 || *ea > 126 ? -1 : 1;
}

/* A vector's conversion (idx8_avx512.c, idx8_avx2.c): x (d floats) ->
 * c·2^e; returns 1 (codes in c, e set, *sum = Σ c), 0 (all zero) or -1
 * (not representable). */
typedef int (*idx8_codes_fn)(const float *x, int d, int8_t *c, int *e, int32_t *sum);

/* Row i of the groups array (idx8.h's put_row) by a level's conversion. */
static inline void idx8_put_row(idx8_codes_fn codes, uint8_t *groups, int64_t i, const float *row, int dI) {
    int8_t c[1024];
    int e;
    int32_t sum;
    int rc = codes(row, dI, c, &e, &sum);
    idx8_group_put(groups + (size_t)(i / DS4_IDX8_ROWS) * ds4_idx8_group_bytes(dI), (int)(i % DS4_IDX8_ROWS), c, rc,
                   e, dI, ds4_idx8_group_e(dI), ds4_idx8_group_meta(dI));
}

/* One token's query record (idx8.h's query) by a level's conversion. */
static inline void idx8_query_fill(idx8_codes_fn codes, const float *q, int nI, int dI, uint8_t *rec) {
    int8_t *cq = (int8_t *)rec;
    int32_t *corr = (int32_t *)(void *)(rec + ds4_idx8_query_corr(nI, dI));
    float *eh = (float *)(void *)(rec + ds4_idx8_query_e(nI, dI));
    int32_t *meta = (int32_t *)(void *)(rec + ds4_idx8_query_meta(nI, dI));
    idx8_meta_reset(meta);
    for (int h = 0; h < nI; h++) {
        int8_t *c = cq + (size_t)h * dI;
        int e;
        int32_t sum;
        int rc = codes(q + (size_t)h * dI, dI, c, &e, &sum);
        idx8_meta_add(meta, rc, e);
        eh[h] = (float)e;
        if (rc < 0) memset(c, 0, (size_t)dI); /* never scored, but defined */
        corr[h] = -128 * sum; /* Σ (c_k + 128)·c_q = Σ c_k·c_q + 128·Σ c_q */
    }
}

#endif
