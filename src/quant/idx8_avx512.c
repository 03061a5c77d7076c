/* The exact int8 indexer path (idx8.h) for the avx512 level, which
 * requires VNNI (dispatch.c).
 *
 * Conversion: a vector's largest |x| fixes e = floor(log2 max) - 6, the
 * only exponent that can work (a smaller unit leaves max >= 128 units, a
 * larger one cannot hold its low bits); each x·2^-e is rounded to an
 * integer and the vector is kept only if every c·2^e gives x back exactly
 * (a NaN never does).  2^±e must both be normal floats, which excludes
 * subnormal maxima.
 *
 * Scores: rows across the lanes, as idx_scores_512 (vec_avx512.c): a pass
 * takes two groups (32 rows), and for each token of the call 8 heads at a
 * time run 16 independent dpbusd chains over dI/4 steps, each step one
 * load of 4 elements of 16 rows (u8) and one broadcast of the head's 4
 * codes (s8), the chains starting from the offset correction.  Then per
 * head, in head order: to float (exact below 2^24), scalef by e_q + e_k
 * (exact: the unit is a float step), relu, s = fmadd(w_h, relu, s) --
 * idx_scores's steps.  A (token, group) pair the checks of idx8.h reject
 * goes to v->idx_scores over the group's f32 rows.  In decode the groups
 * come from memory: the first head tile prefetches the next pass, as the
 * f32 kernel does.
 *
 * Zen 5, one thread, rows in L2, FP4-exact data (build/bench/idxscores):
 * V4 Flash shape (nI = 64, dI = 128) 70.3 -> 18.3 ns per row-score for one
 * token (61.8 -> 18.3 for 8), query records 1.3 us a token; the small
 * preset's shape (16 x 64) 11.2 -> 3.1.  small-q2 decode at a 16K
 * frontier, 2 threads: indexer phase 190 -> 95 us a token. */
#if defined(__x86_64__) || defined(__i386__)

#include "quant/idx8.h"
#include "quant/idx8_int.h"
#include "quant/simd.h"
#include "quant/vec_int.h"

#include <immintrin.h>

#include "quant/dpbusd.h"
#include <stdint.h>
#include <string.h>

#define TGT __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma")))
#define TGTI TGT static inline __attribute__((always_inline))

static inline __mmask16 tail16(int n) { return n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1); }

/* x (d floats) -> c·2^e: 1 (codes in c, e set, *sum = Σ c), 0 (all zero:
 * codes 0, e = 0, sum 0), -1 (not representable). */
TGT static int codes(const float *x, int d, int8_t *c, int *e, int32_t *sum) {
    __m512 amax = _mm512_setzero_ps();
    for (int j = 0; j < d; j += 16) {
        __m512 v = _mm512_maskz_loadu_ps(tail16(d - j), x + j);
        amax = _mm512_max_ps(amax, _mm512_abs_ps(v)); /* a NaN may be dropped here: the check below sees it */
    }
    float a = _mm512_reduce_max_ps(amax);
    int ea;
    const int pre = idx8_unit(a, x, d, c, e, sum, &ea);
    if (pre <= 0) return pre;
    const __m512 p = _mm512_set1_ps(idx8_pow2f(-ea)), pinv = _mm512_set1_ps(idx8_pow2f(ea));
    __mmask16 bad = 0;
    __m512 tot = _mm512_setzero_ps(); /* Σ c: integers below 2^17, exact */
    for (int j = 0; j < d; j += 16) {
        __mmask16 m = tail16(d - j);
        __m512 v = _mm512_maskz_loadu_ps(m, x + j);
        __m512 r = _mm512_roundscale_ps(_mm512_mul_ps(v, p), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        bad |= _mm512_mask_cmp_ps_mask(m, _mm512_mul_ps(r, pinv), v, _CMP_NEQ_UQ);
        _mm_mask_storeu_epi8(c + j, m, _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(r)));
        tot = _mm512_add_ps(tot, r);
    }
    if (bad) return -1;
    *e = ea;
    *sum = (int32_t)_mm512_reduce_add_ps(tot);
    return 1;
}

static void put_row(uint8_t *groups, int64_t i, const float *row, int dI) { idx8_put_row(codes, groups, i, row, dI); }

static void query(const float *q, int nI, int dI, uint8_t *rec) { idx8_query_fill(codes, q, nI, dI, rec); }

/* H heads of one token against groups ka, kb (ea, eb: their rows' e),
 * folded into s0, s1 in head order; pfa/pfb: lines to prefetch (or NULL). */
#define DEF_I8_TILE(H)                                                                                         \
    TGTI void i8_tile_##H(const int8_t *cq, int dI, const int32_t *corr, const float *eh, const float *wh,      \
                          const uint8_t *ka, const uint8_t *kb, __m512 ea, __m512 eb, const uint8_t *pfa,    \
                          const uint8_t *pfb, __m512 *s0, __m512 *s1) {                                     \
        __m512i a0[H], a1[H];                                                                              \
        _Pragma("GCC unroll 8") for (int g = 0; g < H; g++) a0[g] = a1[g] = _mm512_set1_epi32(corr[g]);    \
        for (int j = 0; j < dI / 4; j++) {                                                                 \
            __m512i k0 = _mm512_load_si512((const void *)(ka + (size_t)j * 64));                          \
            __m512i k1 = _mm512_load_si512((const void *)(kb + (size_t)j * 64));                          \
            if (pfa) {                                                                                     \
                _mm_prefetch((const char *)(pfa + (size_t)j * 64), _MM_HINT_T0);                            \
                _mm_prefetch((const char *)(pfb + (size_t)j * 64), _MM_HINT_T0);                            \
            }                                                                                              \
            _Pragma("GCC unroll 8") for (int g = 0; g < H; g++) {                                          \
                int32_t w4;                                                                                \
                memcpy(&w4, cq + (size_t)g * dI + 4 * j, 4);                                                \
                __m512i qb = _mm512_set1_epi32(w4);                                                        \
                a0[g] = ds4_dpbusd(a0[g], k0, qb);                                                         \
                a1[g] = ds4_dpbusd(a1[g], k1, qb);                                                         \
            }                                                                                              \
        }                                                                                                  \
        const __m512 z = _mm512_setzero_ps();                                                              \
        _Pragma("GCC unroll 8") for (int g = 0; g < H; g++) {                                              \
            __m512 e = _mm512_set1_ps(eh[g]), wb = _mm512_set1_ps(wh[g]);                                  \
            __m512 x0 = _mm512_scalef_ps(_mm512_cvtepi32_ps(a0[g]), _mm512_add_ps(ea, e));                 \
            __m512 x1 = _mm512_scalef_ps(_mm512_cvtepi32_ps(a1[g]), _mm512_add_ps(eb, e));                 \
            *s0 = _mm512_fmadd_ps(wb, _mm512_max_ps(x0, z), *s0);                                          \
            *s1 = _mm512_fmadd_ps(wb, _mm512_max_ps(x1, z), *s1);                                          \
        }                                                                                                  \
    }
DEF_I8_TILE(8)
DEF_I8_TILE(4)
DEF_I8_TILE(2)
DEF_I8_TILE(1)

/* One token's scores against groups ka and kb (kb may repeat ka). */
TGT static void i8_token(const uint8_t *qr, const float *wt, int nI, int dI, const uint8_t *ka, const uint8_t *kb,
                         const uint8_t *pfa, const uint8_t *pfb, __m512 *s0, __m512 *s1) {
    const int8_t *cq = (const int8_t *)qr;
    const int32_t *corr = (const int32_t *)(const void *)(qr + ds4_idx8_query_corr(nI, dI));
    const float *eh = (const float *)(const void *)(qr + ds4_idx8_query_e(nI, dI));
    const __m512 ea = _mm512_load_ps((const float *)(const void *)(ka + ds4_idx8_group_e(dI)));
    const __m512 eb = _mm512_load_ps((const float *)(const void *)(kb + ds4_idx8_group_e(dI)));
    *s0 = *s1 = _mm512_setzero_ps();
    int h = 0;
#define TILE(H)                                                                                                  \
    i8_tile_##H(cq + (size_t)h * dI, dI, corr + h, eh + h, wt + h, ka, kb, ea, eb, h == 0 ? pfa : NULL, pfb, s0, \
                s1)
    for (; h + 8 <= nI; h += 8) TILE(8);
    if (h + 4 <= nI) { TILE(4); h += 4; }
    if (h + 2 <= nI) { TILE(2); h += 2; }
    if (h < nI) TILE(1);
#undef TILE
}

TGT static int64_t scores(const ds4_vec_ops *v, const float *q, const uint8_t *qr, size_t qstride, const float *w,
                          int nt, int nI, int dI, const uint8_t *groups, const float *k, int64_t n, float *out,
                          int64_t ostride) {
    const size_t gbytes = ds4_idx8_group_bytes(dI), gmeta = ds4_idx8_group_meta(dI);
    const size_t qmeta = ds4_idx8_query_meta(nI, dI);
    int64_t used = 0;
    for (int64_t i0 = 0; i0 < n; i0 += 2 * DS4_IDX8_ROWS) {
        const uint8_t *gr[2] = { groups + (size_t)(i0 / DS4_IDX8_ROWS) * gbytes, NULL };
        int cnt[2] = { n - i0 < 16 ? (int)(n - i0) : 16, n - i0 > 16 ? (n - i0 < 32 ? (int)(n - i0 - 16) : 16) : 0 };
        gr[1] = cnt[1] ? gr[0] + gbytes : gr[0];
        /* the next pass, prefetched by the first tile of the first token */
        const uint8_t *pfa = i0 + 32 < n ? gr[0] + 2 * gbytes : NULL;
        const uint8_t *pfb = i0 + 48 < n ? gr[0] + 3 * gbytes : pfa;
        if (pfa) {
            _mm_prefetch((const char *)(pfa + ds4_idx8_group_e(dI)), _MM_HINT_T0);
            _mm_prefetch((const char *)(pfa + gmeta), _MM_HINT_T0);
            _mm_prefetch((const char *)(pfb + ds4_idx8_group_e(dI)), _MM_HINT_T0);
            _mm_prefetch((const char *)(pfb + gmeta), _MM_HINT_T0);
        }
        for (int t = 0; t < nt; t++) {
            const uint8_t *qt = qr + (size_t)t * qstride;
            const int32_t *qm = (const int32_t *)(const void *)(qt + qmeta);
            bool ok[2];
            for (int g = 0; g < 2; g++) ok[g] = cnt[g] && idx8_pair_ok(qm, (const int32_t *)(const void *)(gr[g] + gmeta));
            float *o = out + t * ostride + i0;
            __m512 s0, s1;
            const uint8_t *pa = t == 0 ? pfa : NULL, *pb = pfb;
            if (ok[0] && (ok[1] || !cnt[1])) { /* the common case: both groups (or the last one) */
                i8_token(qt, w + (size_t)t * nI, nI, dI, gr[0], gr[1], pa, pb, &s0, &s1);
                _mm512_mask_storeu_ps(o, tail16(cnt[0]), s0);
                if (cnt[1]) _mm512_mask_storeu_ps(o + 16, tail16(cnt[1]), s1);
                used += 1 + (cnt[1] > 0);
                continue;
            }
            for (int g = 0; g < 2; g++) {
                if (!cnt[g]) continue;
                if (ok[g]) {
                    i8_token(qt, w + (size_t)t * nI, nI, dI, gr[g], gr[g], pa, pb, &s0, &s1);
                    _mm512_mask_storeu_ps(o + 16 * g, tail16(cnt[g]), s0);
                    used++;
                } else {
                    v->idx_scores(q + (size_t)t * nI * dI, w + (size_t)t * nI, 1, nI, dI,
                                  k + (size_t)(i0 + 16 * g) * dI, cnt[g], o + 16 * g, ostride);
                }
            }
        }
    }
    return used;
}

static const ds4_idx8_ops ops = { put_row, query, scores };

void ds4_idx8_install_avx512(ds4_vec_ops *v) { v->idx8 = &ops; }

#else

#include "quant/vec_int.h"

void ds4_idx8_install_avx512(ds4_vec_ops *v) { (void)v; }

#endif
