/* AVX2 panel GEMM for Q2_K, Q4_K and IQ2_XXS weights · Q8_K activations
 * (quant.h "Panel GEMM"), for CPUs without AVX-512 (the q2 and q4 recipes'
 * experts): 8 tokens across the int32 / f32 lanes of a ymm.
 *
 * Contract: y[t*ldy + r] = vec_dot(n, w + r*ws, x_t), bit-identical to the
 * reference (quant_ref.c) and so to the AVX2 vec_dot (simd_avx2.c): every
 * integer block sum is exact in int32 whatever the order, and each f32 lane
 * (one token) performs the reference's per-256-block float steps in its
 * order (mul, mul, sub, add; never fused).
 *
 * Panel layout (PANEL = 8 tokens), per 256-block, block_bytes(npairs):
 *   [0, 2048)     the 256 activation bytes, dword k (elements 4k..4k+3) of
 *                 token t at 32k + 4t, so one ymm load gives dword k of all
 *                 8 tokens: int8 x for Q2_K / Q4_K, u8 x ^ 0x80 (= x + 128)
 *                 for IQ2_XXS;
 *   [2048, 2080)  the Q8_K scale d of each token (f32);
 *   [2080, ...)   the block sums the min term needs, int16 pairs per token
 *                 dword (Q2_K: 8 pairs of 16-sums; Q4_K: 4 pairs of 32-sums).
 * Padding tokens are x = 0, d = 0: finite, never stored.
 *
 * Without VNNI the products are maddubs (u8 x s8 -> int16 pairs, saturating)
 * then madd (int16 pairs x int16 -> int32), which also multiplies in the
 * group scale.  Every int16 step stays exact because |x| <= 127 (our Q8_K
 * encoder never emits -128):
 *   Q2_K     weights q·(sc & 15) <= 45 as u8: a pair <= 2·45·127 = 11430, so
 *            two dwords' pairs add in int16 before one madd by 1;
 *   Q4_K     weights q <= 15 as u8: a pair <= 3810, so a 32-group's eight
 *            dwords add in int16 (<= 30480), then one madd by its scale;
 *   IQ2_XXS  weights ±grid (|w| <= 43) take the s8 side and the activation
 *            enters as x + 128 (u8): a pair <= 2·255·43 = 21930, one madd by
 *            the group's 2s + 1 per dword; the sum then carries
 *            128·Σ ls·w, a per-row constant the unpack computes and that
 *            starts the accumulator negated (exact), as gemm_avx512_k.c.
 *
 * Kernel: rows in chunks of RC, each chunk's blocks unpacked once per range
 * of KB blocks into 256 weight bytes plus scales (wblk, L1), then every
 * panel of the call passes over them in tiles of NR rows x TP panels: for
 * each dword k the row's 4 bytes are broadcast to all lanes against the
 * panel's dword row k.  A tile's f32 lane sums wait in a small buffer
 * between ranges, so every lane still adds its blocks in order. */
#include "quant/simd_int.h"

#if defined(__x86_64__) || defined(__i386__)

#include "quant/iq2_tables.h"
#include "quant/quant.h"

#include <immintrin.h>
#include <string.h>

#include "quant/dpbusd.h"

#ifdef __clang__
#pragma STDC FP_CONTRACT OFF /* GCC in ISO C mode already keeps a*b+c unfused */
#endif

#define TGT __attribute__((target("avx2,fma,f16c")))
#define INL static inline __attribute__((always_inline)) TGT
#define UNROLL _Pragma("GCC unroll 8")

enum {
    PANEL = 8,
    QBYTES = 2048,
    DOFF = 2048,
    SOFF = 2080,
    RC = 8,     /* rows per chunk (the lane-sum buffer's row count) */
    KB = 8,     /* blocks per unpacked range: RC x KB x 320 bytes = 20 KB */
    PMAX = 32,  /* panels per token chunk (sum buffer: PMAX x RC x 8 floats) */
    NRMAX = 4,
    TPMAX = 2,
};

static size_t block_bytes(int npairs) { return (size_t)SOFF + (size_t)npairs * 32; }

/* ------------------------------------------------------------------------
 * Packing: O(ntok·n), small next to the O(nr·ntok·n) GEMM.  Each 32-byte
 * piece of 8 tokens goes through an 8 x 8 dword transpose.
 * mode 0: IQ2_XXS (x + 128, no sums); 1: Q2_K (16-sum pairs); 2: Q4_K
 * (32-sum pairs).
 * ------------------------------------------------------------------------ */

/* a[i] dword j <-> a[j] dword i. */
INL void transpose8(__m256i a[8]) {
    __m256i t[8], u[8];
    UNROLL for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_epi32(a[2 * i], a[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_epi32(a[2 * i], a[2 * i + 1]);
    }
    UNROLL for (int i = 0; i < 2; i++) {
        u[4 * i] = _mm256_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
        u[4 * i + 1] = _mm256_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
        u[4 * i + 2] = _mm256_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
        u[4 * i + 3] = _mm256_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
    }
    UNROLL for (int c = 0; c < 4; c++) {
        a[c] = _mm256_permute2x128_si256(u[c], u[4 + c], 0x20);
        a[4 + c] = _mm256_permute2x128_si256(u[c], u[4 + c], 0x31);
    }
}

TGT static void pack_q8_K(int64_t n, const void *x, size_t xs, int ntok, void *panels, int mode) {
    const int64_t nb = n / QK_K;
    const int npairs = mode == 1 ? 8 : mode == 2 ? 4 : 0;
    const size_t bb = block_bytes(npairs), pb = bb * (size_t)nb;
    const int np = (ntok + PANEL - 1) / PANEL;
    const __m256i flip = _mm256_set1_epi8((char)(mode == 0 ? 0x80 : 0));
    for (int p = 0; p < np; p++) {
        const int cnt = ntok - p * PANEL < PANEL ? ntok - p * PANEL : PANEL;
        for (int64_t b = 0; b < nb; b++) {
            uint8_t *dst = (uint8_t *)panels + (size_t)p * pb + (size_t)b * bb;
            const block_q8_K *xb[PANEL];
            for (int t = 0; t < cnt; t++) xb[t] = (const block_q8_K *)((const uint8_t *)x + (size_t)(p * PANEL + t) * xs) + b;
            for (int kg = 0; kg < 8; kg++) { /* dwords 8kg .. 8kg + 7 of the 8 tokens */
                __m256i a[8];
                UNROLL for (int t = 0; t < 8; t++) {
                    a[t] = flip; /* padding tokens: x = 0 */
                    if (t < cnt) a[t] = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(xb[t]->qs + 32 * kg)), flip);
                }
                transpose8(a);
                UNROLL for (int k = 0; k < 8; k++) _mm256_storeu_si256((__m256i *)(dst + 32 * (8 * kg + k)), a[k]);
            }
            float d[PANEL] = { 0 };
            int32_t s[8][PANEL];
            memset(s, 0, sizeof s);
            for (int t = 0; t < cnt; t++) {
                d[t] = xb[t]->d;
                for (int i = 0; i < npairs; i++) {
                    int16_t pr[2];
                    if (mode == 1) { /* Q2_K: 16-sums 2i, 2i + 1 */
                        pr[0] = xb[t]->bsums[2 * i];
                        pr[1] = xb[t]->bsums[2 * i + 1];
                    } else { /* Q4_K: 32-sums 2i, 2i + 1; |s| <= 32·127 fits int16 */
                        pr[0] = (int16_t)(xb[t]->bsums[4 * i] + xb[t]->bsums[4 * i + 1]);
                        pr[1] = (int16_t)(xb[t]->bsums[4 * i + 2] + xb[t]->bsums[4 * i + 3]);
                    }
                    memcpy(&s[i][t], pr, 4);
                }
            }
            memcpy(dst + DOFF, d, sizeof d);
            for (int i = 0; i < npairs; i++) memcpy(dst + SOFF + 32 * i, s[i], 32);
        }
    }
}

static size_t q2_K_panel_bytes(int64_t n) { return block_bytes(8) * (size_t)(n / QK_K); }
static size_t q4_K_panel_bytes(int64_t n) { return block_bytes(4) * (size_t)(n / QK_K); }
static size_t iq2_xxs_panel_bytes(int64_t n) { return block_bytes(0) * (size_t)(n / QK_K); }
TGT static void q2_K_pack(int64_t n, const void *x, size_t xs, int ntok, void *p) { pack_q8_K(n, x, xs, ntok, p, 1); }
TGT static void q4_K_pack(int64_t n, const void *x, size_t xs, int ntok, void *p) { pack_q8_K(n, x, xs, ntok, p, 2); }
TGT static void iq2_xxs_pack(int64_t n, const void *x, size_t xs, int ntok, void *p) { pack_q8_K(n, x, xs, ntok, p, 0); }

/* ------------------------------------------------------------------------
 * Per-row, per-block unpacked weights.
 * ------------------------------------------------------------------------ */

typedef struct {
    int32_t q[QK_K / 4]; /* 256 weight bytes in element order (u8; s8 for IQ2_XXS), dwords to broadcast */
    int32_t s[8];        /* Q4_K / IQ2_XXS: 32-group scale in both int16 halves (madd); Q2_K: (m, m') min pairs */
    int32_t m[4];        /* Q4_K: (m, m') min pairs */
    int32_t corr;        /* IQ2_XXS: -128 · Σ ls·w, the start of the int32 sum */
    float d, dmin;
} __attribute__((aligned(32))) wblk;

INL float h2f(ds4_fp16 h) { return _cvtsh_ss(h); }
INL int32_t pair16(uint32_t v) { return (int32_t)(v | v << 16); }

/* Q2_K: element 128h + 32j + 16p + l is (qs[32h + 16p + l] >> 2j) & 3 with
 * scale sc[8h + 2j + p]: 32 elements per (h, j), scaled by a vpshufb from
 * [0, sc, 2sc, 3sc] per 128-bit lane (sc·0x03020100: no carries, 3·15 < 256). */
INL void unpack_q2_K(const block_q2_K *a, wblk *o) {
    const __m128i s = _mm_loadu_si128((const __m128i *)a->scales);
    _mm256_store_si256((__m256i *)o->s, _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(s, 4), _mm_set1_epi8(0x0f))));
    const __m256i m3 = _mm256_set1_epi8(3);
    UNROLL for (int h = 0; h < 2; h++) {
        const __m256i v = _mm256_loadu_si256((const __m256i *)(a->qs + 32 * h));
        UNROLL for (int j = 0; j < 4; j++) {
            const uint32_t s0 = a->scales[8 * h + 2 * j] & 15u, s1 = a->scales[8 * h + 2 * j + 1] & 15u;
            const __m256i tab = _mm256_set_m128i(_mm_set1_epi32((int)(s1 * 0x03020100u)), _mm_set1_epi32((int)(s0 * 0x03020100u)));
            const __m256i q = _mm256_and_si256(_mm256_srli_epi16(v, 2 * j), m3);
            _mm256_store_si256((__m256i *)(o->q + 8 * (4 * h + j)), _mm256_shuffle_epi8(tab, q));
        }
    }
    o->d = h2f(a->d);
    o->dmin = h2f(a->dmin);
}

/* Q4_K: 64-chunk c = 32 low nibbles (sub-block 2c) then 32 high nibbles
 * (2c + 1); 6-bit scales and mins as quant_ref.c's q4_K_scale_min. */
INL void unpack_q4_K(const block_q4_K *a, wblk *o) {
    uint32_t u[3];
    memcpy(u, a->scales, 12);
    const uint32_t s0 = u[0] & 0x3f3f3f3fu, s1 = (u[2] & 0x0f0f0f0fu) | (((u[0] >> 6) & 0x03030303u) << 4);
    const uint32_t m0 = u[1] & 0x3f3f3f3fu, m1 = ((u[2] >> 4) & 0x0f0f0f0fu) | (((u[1] >> 6) & 0x03030303u) << 4);
    for (int j = 0; j < 4; j++) {
        o->s[j] = pair16((s0 >> 8 * j) & 0xff);
        o->s[4 + j] = pair16((s1 >> 8 * j) & 0xff);
    }
    _mm_store_si128((__m128i *)o->m, _mm_cvtepu8_epi16(_mm_set_epi32(0, 0, (int)m1, (int)m0)));
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    UNROLL for (int c = 0; c < 4; c++) {
        const __m256i v = _mm256_loadu_si256((const __m256i *)(a->qs + 32 * c));
        _mm256_store_si256((__m256i *)(o->q + 16 * c), _mm256_and_si256(v, m4));
        _mm256_store_si256((__m256i *)(o->q + 16 * c + 8), _mm256_and_si256(_mm256_srli_epi16(v, 4), m4));
    }
    o->d = h2f(a->d);
    o->dmin = h2f(a->dmin);
}

/* IQ2_XXS: per 32-group g, the 4 grid rows (scalar loads) signed by the
 * ±1 sign patterns (vpsignb), its scale 2s + 1, and corr from Σ ls·w. */
INL void unpack_iq2_xxs(const block_iq2_xxs *a, wblk *o) {
    const uint64_t *G = ds4_iq2xxs_grid, *S = ds4_iq2_sign_pm1;
    const __m256i ones = _mm256_set1_epi8(1);
    __m256i tot = _mm256_setzero_si256();
    UNROLL for (int g = 0; g < 8; g++) {
        uint32_t q[2];
        memcpy(q, a->qs + 4 * g, sizeof q);
        const __m256i grid = _mm256_set_epi64x((long long)G[q[0] >> 24], (long long)G[(q[0] >> 16) & 255],
                                               (long long)G[(q[0] >> 8) & 255], (long long)G[q[0] & 255]);
        const __m256i sgn = _mm256_set_epi64x((long long)S[(q[1] >> 21) & 127], (long long)S[(q[1] >> 14) & 127],
                                              (long long)S[(q[1] >> 7) & 127], (long long)S[q[1] & 127]);
        const __m256i w = _mm256_sign_epi8(grid, sgn);
        _mm256_store_si256((__m256i *)(o->q + 8 * g), w);
        o->s[g] = pair16(2 * (q[1] >> 28) + 1);
        tot = _mm256_add_epi32(tot, _mm256_madd_epi16(_mm256_maddubs_epi16(ones, w), _mm256_set1_epi32(o->s[g])));
    }
    __m128i t = _mm_add_epi32(_mm256_castsi256_si128(tot), _mm256_extracti128_si256(tot, 1));
    t = _mm_add_epi32(t, _mm_shuffle_epi32(t, _MM_SHUFFLE(1, 0, 3, 2)));
    t = _mm_add_epi32(t, _mm_shuffle_epi32(t, _MM_SHUFFLE(2, 3, 0, 1)));
    o->corr = -128 * _mm_cvtsi128_si32(t);
    o->d = h2f(a->d);
}

enum { KQ2, KQ4, KIQ2 };

/* Panel bytes per 256-block, and weight bytes per block, of a kind. */
static size_t kind_panel_block(int kind) { return block_bytes(kind == KQ2 ? 8 : kind == KQ4 ? 4 : 0); }
static size_t kind_wblock(int kind) {
    return kind == KQ2 ? sizeof(block_q2_K) : kind == KQ4 ? sizeof(block_q4_K) : sizeof(block_iq2_xxs);
}

/* ------------------------------------------------------------------------
 * Micro-kernel: NR rows x TP panels over nbk unpacked blocks (row r's block
 * b at wd[r * wst + b]).  The f32 lane sums live in sums (row r of panel p
 * at sums[p * 64 + r * 8 ..]), zeroed first when `first`, each block's
 * term added there (registers hold only the integer sums).
 * ------------------------------------------------------------------------ */

/* A tile's lane sums (row r of panel p at sums[p * 64 + r * 8 ..]) to 0,
 * before its first block range. */
INL void k_sums_zero(float *sums, const int NR, const int TP) {
    UNROLL for (int r = 0; r < NR; r++) UNROLL for (int p = 0; p < TP; p++) _mm256_storeu_ps(sums + p * 64 + r * 8, _mm256_setzero_ps());
}

/* Block b of a tile: its rows' unpacked blocks, its panels' blocks, and
 * the integer sums' start (IQ2_XXS: the row's corr, else 0). */
INL void k_block_start(const wblk *wd, int wst, int b, const uint8_t *xp, size_t pb, size_t bb, const wblk **wb,
                       const uint8_t **xb, __m256i acc[NRMAX][TPMAX], const int NR, const int TP, const int kind) {
    UNROLL for (int r = 0; r < NR; r++) wb[r] = wd + r * wst + b;
    UNROLL for (int p = 0; p < TP; p++) xb[p] = xp + (size_t)p * pb + (size_t)b * bb;
    UNROLL for (int r = 0; r < NR; r++) UNROLL for (int p = 0; p < TP; p++)
        acc[r][p] = kind == KIQ2 ? _mm256_set1_epi32(wb[r]->corr) : _mm256_setzero_si256();
}

/* One block's float steps for NR rows x TP panels, one token per lane, in
 * the reference's order, added to the lane sums (row r of panel p at
 * sums[p * 64 + r * 8 ..]); acc holds the block's exact integer sums. */
INL void k_block_step(const wblk *const *wb, const uint8_t *const *xb, __m256i acc[NRMAX][TPMAX], float *sums,
                      const int NR, const int TP, const int kind) {
#define SUM(r, p) (sums + (p) * 64 + (r) * 8)
    UNROLL for (int p = 0; p < TP; p++) {
        const __m256 xd = _mm256_loadu_ps((const float *)(xb[p] + DOFF));
        if (kind == KIQ2) {
            UNROLL for (int r = 0; r < NR; r++) {
                const __m256 d = _mm256_mul_ps(_mm256_set1_ps(wb[r]->d), xd);
                _mm256_storeu_ps(SUM(r, p), _mm256_add_ps(_mm256_loadu_ps(SUM(r, p)), _mm256_mul_ps(d, _mm256_cvtepi32_ps(acc[r][p]))));
            }
            continue;
        }
        const int npairs = kind == KQ2 ? 8 : 4;
        UNROLL for (int r = 0; r < NR; r++) {
            __m256i ms = _mm256_setzero_si256();
            UNROLL for (int i = 0; i < npairs; i++) {
                const __m256i bs = _mm256_loadu_si256((const __m256i *)(xb[p] + SOFF + 32 * i));
                ms = _mm256_add_epi32(ms, _mm256_madd_epi16(bs, _mm256_set1_epi32(kind == KQ2 ? wb[r]->s[i] : wb[r]->m[i])));
            }
            const __m256 dall = _mm256_mul_ps(xd, _mm256_set1_ps(wb[r]->d));
            const __m256 dmin = _mm256_mul_ps(xd, _mm256_set1_ps(wb[r]->dmin));
            const __m256 t = _mm256_sub_ps(_mm256_mul_ps(dall, _mm256_cvtepi32_ps(acc[r][p])),
                                           _mm256_mul_ps(dmin, _mm256_cvtepi32_ps(ms)));
            _mm256_storeu_ps(SUM(r, p), _mm256_add_ps(_mm256_loadu_ps(SUM(r, p)), t));
        }
    }
#undef SUM
}

INL void k_tile(int nbk, const wblk *wd, int wst, const uint8_t *xp, size_t pb, float *sums, int first,
                const int NR, const int TP, const int kind) {
    const size_t bb = kind_panel_block(kind);
    const __m256i one16 = _mm256_set1_epi16(1);
    if (first) k_sums_zero(sums, NR, TP);
    for (int b = 0; b < nbk; b++) {
        const wblk *wb[NRMAX];
        const uint8_t *xb[TPMAX];
        __m256i acc[NRMAX][TPMAX];
        k_block_start(wd, wst, b, xp, pb, bb, wb, xb, acc, NR, TP, kind);
        if (kind == KQ2) { /* two dwords' int16 pairs, then one madd by 1 */
            for (int k = 0; k < 64; k += 2) {
                __m256i x0[TPMAX], x1[TPMAX];
                UNROLL for (int p = 0; p < TP; p++) {
                    x0[p] = _mm256_loadu_si256((const __m256i *)(xb[p] + 32 * k));
                    x1[p] = _mm256_loadu_si256((const __m256i *)(xb[p] + 32 * k + 32));
                }
                UNROLL for (int r = 0; r < NR; r++) {
                    const __m256i w0 = _mm256_set1_epi32(wb[r]->q[k]), w1 = _mm256_set1_epi32(wb[r]->q[k + 1]);
                    UNROLL for (int p = 0; p < TP; p++) {
                        const __m256i s = _mm256_add_epi16(_mm256_maddubs_epi16(w0, x0[p]), _mm256_maddubs_epi16(w1, x1[p]));
                        acc[r][p] = _mm256_add_epi32(acc[r][p], _mm256_madd_epi16(s, one16));
                    }
                }
            }
        } else if (kind == KQ4) { /* a 32-group's eight dwords in int16, one madd by its scale */
            for (int j = 0; j < 8; j++) {
                __m256i s16[NRMAX][TPMAX];
                UNROLL for (int r = 0; r < NR; r++) UNROLL for (int p = 0; p < TP; p++) s16[r][p] = _mm256_setzero_si256();
                UNROLL for (int kk = 0; kk < 8; kk++) {
                    const int k = 8 * j + kk;
                    __m256i xv[TPMAX];
                    UNROLL for (int p = 0; p < TP; p++) xv[p] = _mm256_loadu_si256((const __m256i *)(xb[p] + 32 * k));
                    UNROLL for (int r = 0; r < NR; r++) {
                        const __m256i wv = _mm256_set1_epi32(wb[r]->q[k]);
                        UNROLL for (int p = 0; p < TP; p++)
                            s16[r][p] = _mm256_add_epi16(s16[r][p], _mm256_maddubs_epi16(wv, xv[p]));
                    }
                }
                UNROLL for (int r = 0; r < NR; r++) {
                    const __m256i sc = _mm256_set1_epi32(wb[r]->s[j]);
                    UNROLL for (int p = 0; p < TP; p++)
                        acc[r][p] = _mm256_add_epi32(acc[r][p], _mm256_madd_epi16(s16[r][p], sc));
                }
            }
        } else { /* IQ2_XXS: one madd by the group scale per dword */
            for (int j = 0; j < 8; j++) {
                __m256i sc[NRMAX];
                UNROLL for (int r = 0; r < NR; r++) sc[r] = _mm256_set1_epi32(wb[r]->s[j]);
                UNROLL for (int kk = 0; kk < 8; kk++) {
                    const int k = 8 * j + kk;
                    __m256i xv[TPMAX];
                    UNROLL for (int p = 0; p < TP; p++) xv[p] = _mm256_loadu_si256((const __m256i *)(xb[p] + 32 * k));
                    UNROLL for (int r = 0; r < NR; r++) {
                        const __m256i wv = _mm256_set1_epi32(wb[r]->q[k]);
                        UNROLL for (int p = 0; p < TP; p++)
                            acc[r][p] = _mm256_add_epi32(acc[r][p], _mm256_madd_epi16(_mm256_maddubs_epi16(xv[p], wv), sc[r]));
                    }
                }
            }
        }
        k_block_step(wb, xb, acc, sums, NR, TP, kind);
    }
}

typedef void (*k_tile_fn)(int nbk, const wblk *wd, int wst, const uint8_t *xp, size_t pb, float *sums, int first);
/* The tile instances of a micro-kernel (k_tile, or k_tile_v below) for
 * every kind, 1..NRMAX rows and 1..TPMAX panels, named PFX_KIND_R_P, and
 * their table [kind][rows - 1][panels - 1]. */
#define KT_FN(PFX, KERNEL, ATTR, K, R, P)                                                                    \
    ATTR static void PFX##_##K##_##R##_##P(int nbk, const wblk *wd, int wst, const uint8_t *xp, size_t pb,   \
                                          float *sums, int first) {                                          \
        KERNEL(nbk, wd, wst, xp, pb, sums, first, R, P, K);                                                  \
    }
#define KT_R(PFX, KERNEL, ATTR, K, R) KT_FN(PFX, KERNEL, ATTR, K, R, 1) KT_FN(PFX, KERNEL, ATTR, K, R, 2)
#define KT_KIND(PFX, KERNEL, ATTR, K)                                                                        \
    KT_R(PFX, KERNEL, ATTR, K, 1) KT_R(PFX, KERNEL, ATTR, K, 2) KT_R(PFX, KERNEL, ATTR, K, 3) KT_R(PFX, KERNEL, ATTR, K, 4)
#define KT_ALL(PFX, KERNEL, ATTR) KT_KIND(PFX, KERNEL, ATTR, KQ2) KT_KIND(PFX, KERNEL, ATTR, KQ4) KT_KIND(PFX, KERNEL, ATTR, KIQ2)
#define KT_ROW(PFX, K, R) { PFX##_##K##_##R##_1, PFX##_##K##_##R##_2 }
#define KT_ROWS(PFX, K) { KT_ROW(PFX, K, 1), KT_ROW(PFX, K, 2), KT_ROW(PFX, K, 3), KT_ROW(PFX, K, 4) }
#define KT_TABLE(PFX) { KT_ROWS(PFX, KQ2), KT_ROWS(PFX, KQ4), KT_ROWS(PFX, KIQ2) }
KT_ALL(k_tile, k_tile, TGT)
static const k_tile_fn tiles[3][NRMAX][TPMAX] = KT_TABLE(k_tile);
/* Rows per tile of each kind (16 ymm: NR x TP accumulators and lane sums,
 * plus the loads). */
static const int tile_nr[3] = { 2, 4, 3 };

/* ------------------------------------------------------------------------
 * The same tiles with AVX-VNNI (VEX vpdpbusd on ymm: Intel Alder Lake and
 * later, Zen 5), picked where the CPU has it.  vpdpbusd sums four u8·s8
 * products straight into int32 lanes (no int16 step), so:
 *   Q2_K     one vpdpbusd per weight dword and panel (q·sc as u8, x s8),
 *            where maddubs needed two maddubs, an int16 add, a madd and an
 *            add per two dwords;
 *   Q4_K,    a group's eight dwords into a fresh int32 sum by vpdpbusd
 *   IQ2_XXS  (Q4_K: nibbles u8 x s8; IQ2_XXS: x + 128 u8 x signed grid),
 *            then one vpmulld by the group scale and an add: exact, the
 *            products and sums being the same integers (|group sum| <=
 *            32·255·43 for IQ2_XXS).
 * Same unpacked blocks, panels and float steps: bit-identical to vec_dot.
 * ------------------------------------------------------------------------ */
#define TGV __attribute__((target("avx2,fma,f16c,avxvnni")))

static inline __attribute__((always_inline)) TGV void k_tile_v(int nbk, const wblk *wd, int wst, const uint8_t *xp,
                                                               size_t pb, float *sums, int first, const int NR,
                                                               const int TP, const int kind) {
    const size_t bb = kind_panel_block(kind);
    if (first) k_sums_zero(sums, NR, TP);
    for (int b = 0; b < nbk; b++) {
        const wblk *wb[NRMAX];
        const uint8_t *xb[TPMAX];
        __m256i acc[NRMAX][TPMAX];
        k_block_start(wd, wst, b, xp, pb, bb, wb, xb, acc, NR, TP, kind);
        if (kind == KQ2) {
            for (int k = 0; k < 64; k++) {
                UNROLL for (int r = 0; r < NR; r++) {
                    const __m256i wv = _mm256_set1_epi32(wb[r]->q[k]);
                    UNROLL for (int p = 0; p < TP; p++)
                        acc[r][p] = ds4_dpbusd_vex(acc[r][p], wv, _mm256_loadu_si256((const __m256i *)(xb[p] + 32 * k)));
                }
            }
        } else {
            for (int j = 0; j < 8; j++) {
                __m256i gs[NRMAX][TPMAX];
                UNROLL for (int r = 0; r < NR; r++) UNROLL for (int p = 0; p < TP; p++) gs[r][p] = _mm256_setzero_si256();
                UNROLL for (int kk = 0; kk < 8; kk++) {
                    const int k = 8 * j + kk;
                    if (kind == KQ4) {
                        UNROLL for (int r = 0; r < NR; r++) {
                            const __m256i wv = _mm256_set1_epi32(wb[r]->q[k]);
                            UNROLL for (int p = 0; p < TP; p++)
                                gs[r][p] = ds4_dpbusd_vex(gs[r][p], wv, _mm256_loadu_si256((const __m256i *)(xb[p] + 32 * k)));
                        }
                    } else {
                        __m256i xv[TPMAX];
                        UNROLL for (int p = 0; p < TP; p++) xv[p] = _mm256_loadu_si256((const __m256i *)(xb[p] + 32 * k));
                        UNROLL for (int r = 0; r < NR; r++) {
                            const __m256i wv = _mm256_set1_epi32(wb[r]->q[k]);
                            UNROLL for (int p = 0; p < TP; p++) gs[r][p] = ds4_dpbusd_vex(gs[r][p], xv[p], wv);
                        }
                    }
                }
                UNROLL for (int r = 0; r < NR; r++) {
                    const __m256i sc = _mm256_set1_epi32(wb[r]->s[j] & 0xffff); /* the scale (a pair16 for madd) */
                    UNROLL for (int p = 0; p < TP; p++)
                        acc[r][p] = _mm256_add_epi32(acc[r][p], _mm256_mullo_epi32(gs[r][p], sc));
                }
            }
        }
        k_block_step(wb, xb, acc, sums, NR, TP, kind);
    }
}

KT_ALL(k_tile_v, k_tile_v, TGV)
static const k_tile_fn tiles_v[3][NRMAX][TPMAX] = KT_TABLE(k_tile_v);
/* 16 ymm: Q2_K's NR x TP accumulators (activations as memory operands);
 * Q4_K and IQ2_XXS also hold a group sum per pair */
static const int tile_nr_v[3] = { 4, 3, 3 };

/* Unpack rows [0, rc) x blocks [kb0, kb0 + nbk) of w into wd (row stride nbk). */
INL void k_unpack(const uint8_t *w, size_t ws, int rc, int kb0, int nbk, wblk *wd, const int kind) {
    const size_t wsz = kind_wblock(kind);
    for (int r = 0; r < rc; r++)
        for (int b = 0; b < nbk; b++) {
            const uint8_t *blk = w + (size_t)r * ws + (size_t)(kb0 + b) * wsz;
            if (kind == KQ2) unpack_q2_K((const block_q2_K *)blk, &wd[r * nbk + b]);
            else if (kind == KQ4) unpack_q4_K((const block_q4_K *)blk, &wd[r * nbk + b]);
            else unpack_iq2_xxs((const block_iq2_xxs *)blk, &wd[r * nbk + b]);
        }
}

/* Tokens in chunks of <= PMAX panels (and ~XCHUNK bytes of them, which stay
 * in L2 while every row chunk passes over them); per row chunk and block
 * range, unpack, then tiles over every panel of the chunk. */
#define XCHUNK (512u << 10)
INL void k_gemm(int64_t n, const uint8_t *w, size_t ws, int nr, const uint8_t *panels, int ntok, float *y,
                int64_t ldy, const int kind, const int vnni) {
    const int nb = (int)(n / QK_K);
    const size_t bb = kind_panel_block(kind), pb = bb * (size_t)nb, wsz = kind_wblock(kind);
    const int np = (ntok + PANEL - 1) / PANEL;
    int pch = (int)(XCHUNK / pb);
    pch = pch < 1 ? 1 : pch > PMAX ? PMAX : pch;
    const int kb = nb < KB ? nb : KB;
    const int NR = vnni ? tile_nr_v[kind] : tile_nr[kind];
    _Alignas(32) wblk wd[RC * KB];
    _Alignas(32) float sums[PMAX * RC * PANEL];
    for (int p0 = 0; p0 < np; p0 += pch) {
        const int pn = np - p0 < pch ? np - p0 : pch;
        const uint8_t *pc = panels + (size_t)p0 * pb;
        for (int r0 = 0; r0 < nr; r0 += RC) {
            const int rc = nr - r0 < RC ? nr - r0 : RC;
            const uint8_t *wc = w + (size_t)r0 * ws;
            for (int kb0 = 0; kb0 < nb; kb0 += kb) {
                const int nbk = nb - kb0 < kb ? nb - kb0 : kb;
                k_unpack(wc, ws, rc, kb0, nbk, wd, kind);
                /* the next chunk's blocks of this range, while these compute
                 * (the experts' weights come cold from memory) */
                for (int r = r0 + RC; r < r0 + 2 * RC && r < nr; r++) {
                    const uint8_t *a = w + (size_t)r * ws + (size_t)kb0 * wsz;
                    for (size_t o = 0; o < (size_t)nbk * wsz; o += 64) _mm_prefetch((const char *)a + o, _MM_HINT_T0);
                }
                for (int p = 0; p < pn; p += TPMAX) {
                    const int tp = pn - p < TPMAX ? pn - p : TPMAX;
                    for (int r = 0; r < rc; r += NR) {
                        const int rr = rc - r < NR ? rc - r : NR;
                        (vnni ? tiles_v : tiles)[kind][rr - 1][tp - 1](nbk, wd + r * nbk, nbk, pc + (size_t)p * pb + (size_t)kb0 * bb, pb,
                                                    sums + p * 64 + r * 8, kb0 == 0);
                    }
                }
            }
            for (int p = 0; p < pn; p++) {
                const int t0 = (p0 + p) * PANEL, tok = ntok - t0 < PANEL ? ntok - t0 : PANEL;
                for (int t = 0; t < tok; t++) {
                    float *yt = y + (int64_t)(t0 + t) * ldy + r0;
                    for (int r = 0; r < rc; r++) {
                        const float s = sums[p * 64 + r * 8 + t];
                        yt[r] = kind == KIQ2 ? 0.125f * s : s; /* the reference's last step */
                    }
                }
            }
        }
    }
}

#define K_GEMM(NAME, KIND)                                                                                    \
    TGT static void NAME##_gemm(int64_t n, const void *w, size_t ws, int nr, const void *panels, int ntok,     \
                                float *y, int64_t ldy) {                                                      \
        k_gemm(n, w, ws, nr, panels, ntok, y, ldy, KIND, 0);                                                  \
    }                                                                                                         \
    TGT static void NAME##_gemm_v(int64_t n, const void *w, size_t ws, int nr, const void *panels, int ntok,   \
                                  float *y, int64_t ldy) {                                                    \
        k_gemm(n, w, ws, nr, panels, ntok, y, ldy, KIND, 1);                                                  \
    }
K_GEMM(q2_K, KQ2)
K_GEMM(q4_K, KQ4)
K_GEMM(iq2_xxs, KIQ2)

static int has_avxvnni(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avxvnni");
}

ds4_panel_gemm_fn ds4_gemm_avx2_k_variant(int type, int vnni) {
    if (vnni && !has_avxvnni()) return NULL;
    switch (type) {
    case DS4_TYPE_Q2_K: return vnni ? q2_K_gemm_v : q2_K_gemm;
    case DS4_TYPE_Q4_K: return vnni ? q4_K_gemm_v : q4_K_gemm;
    case DS4_TYPE_IQ2_XXS: return vnni ? iq2_xxs_gemm_v : iq2_xxs_gemm;
    default: return NULL;
    }
}

void ds4_gemm_install_avx2_k(ds4_type_traits *t) {
    const int vnni = has_avxvnni();
#define SETP(T, NAME) \
    (t[T].panel_tokens = PANEL, t[T].panel_bytes = NAME##_panel_bytes, t[T].panel_pack = NAME##_pack, \
     t[T].panel_gemm = vnni ? NAME##_gemm_v : NAME##_gemm)
    SETP(DS4_TYPE_Q2_K, q2_K);
    SETP(DS4_TYPE_Q4_K, q4_K);
    SETP(DS4_TYPE_IQ2_XXS, iq2_xxs);
#undef SETP
}

#else /* not x86: no panel kernel, ops.c uses vec_dot_tile */

void ds4_gemm_install_avx2_k(ds4_type_traits *table) { (void)table; }
ds4_panel_gemm_fn ds4_gemm_avx2_k_variant(int type, int vnni) { (void)type; (void)vnni; return NULL; }

#endif
