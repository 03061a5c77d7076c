/* The exact int8 indexer path (idx8.h) for the avx2 level, installed where
 * the CPU has AVX-VNNI (VEX vpdpbusd on ymm: Alder Lake and later, Zen 5);
 * elsewhere the level keeps its f32 idx_scores.
 *
 * Conversion: as idx8_avx512.c (e = floor(log2 max|x|) - 6, each x·2^-e
 * rounded and checked to give x back exactly) on 8 lanes.
 *
 * Scores: one group (16 rows) per pass, rows across the lanes of two ymm;
 * per token 4 heads at a time run 8 dpbusd chains over dI/4 steps (one
 * load of 4 elements of 8 rows per chain pair, one broadcast of the head's
 * 4 codes), starting from the offset correction.  Then per head, in head
 * order, vec_avx2.c's idx_scores steps: to float (exact below 2^24), times
 * 2^(e_q + e_k) (a float for every unit idx8.h admits, so the product is
 * scalef's single rounding: exact here), relu by max_ps, s = fmadd(w_h,
 * relu, s).  So the scores are the level's idx_scores bits.  A (token,
 * group) pair the checks reject runs v->idx_scores over the group's f32
 * rows.  In decode the groups come from memory: the first head tile
 * prefetches the next group. */
#if defined(__x86_64__) || defined(__i386__)

#include "quant/idx8.h"
#include "quant/idx8_int.h"
#include "quant/simd.h"
#include "quant/vec_int.h"

#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "quant/dpbusd.h"

#define TGT __attribute__((target("avx2,fma,avxvnni")))
#define TGTI TGT static inline __attribute__((always_inline))

/* Lanes [0, n) set (n >= 8: all). */
TGTI __m256i tail8(int n) {
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n < 8 ? n : 8), idx);
}

TGTI float hmax8(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

/* x (d floats) -> c·2^e: 1 (codes in c, e set, *sum = Σ c), 0 (all zero:
 * codes 0, e = 0, sum 0), -1 (not representable). */
TGT static int codes(const float *x, int d, int8_t *c, int *e, int32_t *sum) {
    const __m256 absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 amax = _mm256_setzero_ps();
    for (int j = 0; j < d; j += 8) { /* a NaN may be dropped here: the check below sees it */
        __m256 v = _mm256_maskload_ps(x + j, tail8(d - j));
        amax = _mm256_max_ps(amax, _mm256_and_ps(v, absm));
    }
    float a = hmax8(amax);
    int ea;
    const int pre = idx8_unit(a, x, d, c, e, sum, &ea);
    if (pre <= 0) return pre;
    const __m256 p = _mm256_set1_ps(idx8_pow2f(-ea)), pinv = _mm256_set1_ps(idx8_pow2f(ea));
    int bad = 0;
    __m256 tot = _mm256_setzero_ps(); /* Σ c: integers below 2^17, exact */
    for (int j = 0; j < d; j += 8) {
        const __m256i m = tail8(d - j);
        __m256 v = _mm256_maskload_ps(x + j, m);
        __m256 r = _mm256_round_ps(_mm256_mul_ps(v, p), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        bad |= _mm256_movemask_ps(_mm256_and_ps(_mm256_cmp_ps(_mm256_mul_ps(r, pinv), v, _CMP_NEQ_UQ),
                                                _mm256_castsi256_ps(m)));
        const __m256i ci = _mm256_cvtps_epi32(r); /* saturated below where bad: never used */
        const __m128i w16 = _mm_packs_epi32(_mm256_castsi256_si128(ci), _mm256_extracti128_si256(ci, 1));
        const __m128i b8 = _mm_packs_epi16(w16, w16);
        int8_t tmp[16];
        _mm_storeu_si128((__m128i *)(void *)tmp, b8);
        memcpy(c + j, tmp, (size_t)(d - j < 8 ? d - j : 8));
        tot = _mm256_add_ps(tot, r);
    }
    if (bad) return -1;
    *e = ea;
    __m128 t = _mm_add_ps(_mm256_castps256_ps128(tot), _mm256_extractf128_ps(tot, 1));
    t = _mm_add_ps(t, _mm_movehl_ps(t, t));
    t = _mm_add_ss(t, _mm_movehdup_ps(t));
    *sum = (int32_t)_mm_cvtss_f32(t);
    return 1;
}

static void put_row(uint8_t *groups, int64_t i, const float *row, int dI) { idx8_put_row(codes, groups, i, row, dI); }

static void query(const float *q, int nI, int dI, uint8_t *rec) { idx8_query_fill(codes, q, nI, dI, rec); }

/* 2^e per lane for integer-valued e in [-149, 126] (subnormal below -126),
 * exactly. */
TGTI __m256 pow2v(__m256 e) {
    const __m256i ei = _mm256_cvtps_epi32(e);
    const __m256i norm = _mm256_slli_epi32(_mm256_add_epi32(ei, _mm256_set1_epi32(127)), 23);
    const __m256i sub = _mm256_sllv_epi32(_mm256_set1_epi32(1), _mm256_add_epi32(ei, _mm256_set1_epi32(149)));
    const __m256i is_sub = _mm256_cmpgt_epi32(_mm256_set1_epi32(-126), ei);
    return _mm256_castsi256_ps(_mm256_blendv_epi8(norm, sub, is_sub));
}

/* H heads of one token against one group (rows 0-7 in ka, 8-15 at ka + 32;
 * ek0, ek1 their e), folded into s0, s1 in head order; pf: the next group
 * (prefetched, or NULL). */
#define DEF_I8_TILE(H)                                                                                        \
    TGTI void i8_tile_##H(const int8_t *cq, int dI, const int32_t *corr, const float *eh, const float *wh,     \
                          const uint8_t *ka, __m256 ek0, __m256 ek1, const uint8_t *pf, __m256 *s0, __m256 *s1) { \
        __m256i a0[H], a1[H];                                                                             \
        _Pragma("GCC unroll 4") for (int g = 0; g < H; g++) a0[g] = a1[g] = _mm256_set1_epi32(corr[g]);   \
        for (int j = 0; j < dI / 4; j++) {                                                                \
            const __m256i k0 = _mm256_load_si256((const __m256i *)(const void *)(ka + (size_t)j * 64));   \
            const __m256i k1 = _mm256_load_si256((const __m256i *)(const void *)(ka + (size_t)j * 64 + 32)); \
            if (pf) _mm_prefetch((const char *)(pf + (size_t)j * 64), _MM_HINT_T0);                        \
            _Pragma("GCC unroll 4") for (int g = 0; g < H; g++) {                                         \
                int32_t w4;                                                                               \
                memcpy(&w4, cq + (size_t)g * dI + 4 * j, 4);                                               \
                const __m256i qb = _mm256_set1_epi32(w4);                                                 \
                a0[g] = ds4_dpbusd_vex(a0[g], k0, qb);                                                    \
                a1[g] = ds4_dpbusd_vex(a1[g], k1, qb);                                                    \
            }                                                                                             \
        }                                                                                                 \
        const __m256 z = _mm256_setzero_ps();                                                             \
        _Pragma("GCC unroll 4") for (int g = 0; g < H; g++) { /* max_ps(x, 0) = x > 0 ? x : 0 */         \
            const __m256 e = _mm256_set1_ps(eh[g]), wb = _mm256_set1_ps(wh[g]);                           \
            const __m256 x0 = _mm256_mul_ps(_mm256_cvtepi32_ps(a0[g]), pow2v(_mm256_add_ps(ek0, e)));     \
            const __m256 x1 = _mm256_mul_ps(_mm256_cvtepi32_ps(a1[g]), pow2v(_mm256_add_ps(ek1, e)));     \
            *s0 = _mm256_fmadd_ps(wb, _mm256_max_ps(x0, z), *s0);                                         \
            *s1 = _mm256_fmadd_ps(wb, _mm256_max_ps(x1, z), *s1);                                         \
        }                                                                                                 \
    }
DEF_I8_TILE(4)
DEF_I8_TILE(2)
DEF_I8_TILE(1)

/* One token's scores against one group. */
TGT static void i8_token(const uint8_t *qr, const float *wt, int nI, int dI, const uint8_t *g, const uint8_t *pf,
                         __m256 *s0, __m256 *s1) {
    const int8_t *cq = (const int8_t *)qr;
    const int32_t *corr = (const int32_t *)(const void *)(qr + ds4_idx8_query_corr(nI, dI));
    const float *eh = (const float *)(const void *)(qr + ds4_idx8_query_e(nI, dI));
    const float *ge = (const float *)(const void *)(g + ds4_idx8_group_e(dI));
    const __m256 ek0 = _mm256_load_ps(ge), ek1 = _mm256_load_ps(ge + 8);
    *s0 = *s1 = _mm256_setzero_ps();
    int h = 0;
#define TILE(H) i8_tile_##H(cq + (size_t)h * dI, dI, corr + h, eh + h, wt + h, g, ek0, ek1, h == 0 ? pf : NULL, s0, s1)
    for (; h + 4 <= nI; h += 4) TILE(4);
    if (h + 2 <= nI) { TILE(2); h += 2; }
    if (h < nI) TILE(1);
#undef TILE
}

TGT static void store16(float *o, int cnt, __m256 s0, __m256 s1) {
    if (cnt == 16) {
        _mm256_storeu_ps(o, s0);
        _mm256_storeu_ps(o + 8, s1);
        return;
    }
    _mm256_maskstore_ps(o, tail8(cnt), s0);
    if (cnt > 8) _mm256_maskstore_ps(o + 8, tail8(cnt - 8), s1);
}

TGT static int64_t scores(const ds4_vec_ops *v, const float *q, const uint8_t *qr, size_t qstride, const float *w,
                          int nt, int nI, int dI, const uint8_t *groups, const float *k, int64_t n, float *out,
                          int64_t ostride) {
    const size_t gbytes = ds4_idx8_group_bytes(dI), gmeta = ds4_idx8_group_meta(dI);
    const size_t qmeta = ds4_idx8_query_meta(nI, dI);
    int64_t used = 0;
    for (int64_t i0 = 0; i0 < n; i0 += DS4_IDX8_ROWS) {
        const uint8_t *gr = groups + (size_t)(i0 / DS4_IDX8_ROWS) * gbytes;
        const int cnt = n - i0 < DS4_IDX8_ROWS ? (int)(n - i0) : DS4_IDX8_ROWS;
        const uint8_t *pf = i0 + DS4_IDX8_ROWS < n ? gr + gbytes : NULL; /* by the first tile of the first token */
        if (pf) {
            _mm_prefetch((const char *)(pf + ds4_idx8_group_e(dI)), _MM_HINT_T0);
            _mm_prefetch((const char *)(pf + gmeta), _MM_HINT_T0);
        }
        const int32_t *gm = (const int32_t *)(const void *)(gr + gmeta);
        for (int t = 0; t < nt; t++) {
            const uint8_t *qt = qr + (size_t)t * qstride;
            float *o = out + t * ostride + i0;
            if (idx8_pair_ok((const int32_t *)(const void *)(qt + qmeta), gm)) {
                __m256 s0, s1;
                i8_token(qt, w + (size_t)t * nI, nI, dI, gr, t == 0 ? pf : NULL, &s0, &s1);
                store16(o, cnt, s0, s1);
                used++;
            } else {
                v->idx_scores(q + (size_t)t * nI * dI, w + (size_t)t * nI, 1, nI, dI, k + (size_t)i0 * dI, cnt, o,
                              ostride);
            }
        }
    }
    return used;
}

static const ds4_idx8_ops ops = { put_row, query, scores };

void ds4_idx8_install_avx2(ds4_vec_ops *v) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("avxvnni"))
        v->idx8 = &ops;
}

#else

#include "quant/vec_int.h"

void ds4_idx8_install_avx2(ds4_vec_ops *v) { (void)v; }

#endif
