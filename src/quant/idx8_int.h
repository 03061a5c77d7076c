/* Internal to the idx8 kernels (idx8_avx512.c, idx8_avx2.c): the parts of
 * idx8.h's contract that do not depend on the vector width -- the meta
 * words of groups and query records, the test for whether a (token, group)
 * pair may take the integer path, and exact powers of two. */
#ifndef DS4_QUANT_IDX8_INT_H
#define DS4_QUANT_IDX8_INT_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

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

#endif
