/* AVX2 panel GEMM for Q8_0 weights · Q8_0 activations (quant.h "Panel
 * GEMM"), for CPUs without AVX-512: tokens across the 8 int32 lanes of a
 * ymm.
 *
 * Panel layout (one panel = 8 tokens, panel_bytes(n) = n/32 · 288 bytes),
 * per 32-block b of the row:
 *   qs    8 x 32 bytes: dword k of token t (its int8 quants 4k..4k+3) at
 *         [k][t];
 *   dx    8 f32: the token scales d_x.
 * Missing tokens of the last panel are zero (their results are not stored).
 *
 * Kernel, per weight row r and panel p, per block: for the 8 dwords k,
 * w4 = broadcast(w_r dword k); isum += madd(maddubs(|w4|, sign(x_k, w4)), 1):
 * the sign trick, since maddubs (u8 x s8, pairs summed in saturating int16)
 * would saturate on (w + 128)·x.  |w|·(±x) pairs stay within ±2·128·127 =
 * 32512 as long as x != -128, which the Q8_0 encoder never emits (|q| <=
 * 127), so the int32 block sum is exact.  Then acc = acc + cvt(isum) *
 * (d_w * d_x), mul then add, never fused: every lane is bit-identical to
 * vec_dot_q8_0_q8_0 (quant_ref.c) and to the AVX2 vec_dot (simd_avx2.c),
 * however tokens are batched.  Unlike the dot kernels there is no
 * horizontal reduction: ~4 integer ops per 32 MACs and 4 float ops per
 * (row, panel, block). */
#include "quant/simd_int.h"

#if defined(__x86_64__) || defined(__i386__)

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
    Q8A_TOK = 8,                 /* tokens per panel */
    Q8A_QS = 8 * 32,             /* bytes of quants per block */
    Q8A_BLOCK = Q8A_QS + 32,     /* + dx */
    /* Register tile (16 ymm): NR rows x TP panels of accumulators and
     * block sums, plus the panel loads and the broadcast weights.  Zen 5,
     * AVX2 level, 1 thread, n = 1024: 2x2 ~153 GF/s, 3x2 ~152, 4x2 ~148,
     * 2x1 ~146, 4x1 ~137 (the 2x2 vec_dot tiles: ~84). */
    Q8A_NR = 2,
    Q8A_TP = 2,
    Q8A_RC = 8,                  /* rows per output block (8 x 8 floats) */
};

static size_t q8_0_panel_bytes_avx2(int64_t n) { return (size_t)(n / QK8_0) * Q8A_BLOCK; }

static void q8_0_panel_pack_avx2(int64_t n, const void *x, size_t xs, int ntok, void *panels) {
    const int64_t nb = n / QK8_0;
    uint8_t *dst = panels;
    for (int t0 = 0; t0 < ntok; t0 += Q8A_TOK) {
        const int cnt = ntok - t0 < Q8A_TOK ? ntok - t0 : Q8A_TOK;
        for (int64_t b = 0; b < nb; b++, dst += Q8A_BLOCK) {
            memset(dst, 0, Q8A_BLOCK);
            float *dx = (float *)(dst + Q8A_QS);
            for (int t = 0; t < cnt; t++) {
                const block_q8_0 *xb = (const block_q8_0 *)((const uint8_t *)x + (size_t)(t0 + t) * xs) + b;
                for (int k = 0; k < 8; k++) memcpy(dst + 32 * k + 4 * t, xb->qs + 4 * k, 4);
                dx[t] = ds4_fp16_to_f32(xb->d);
            }
        }
    }
}

/* Block b's float step for NR rows x TP panels (the panels' d_x at
 * Q8A_QS in both formats): acc += (float)isum · (d_w · d_x), mul then add,
 * the reference's step per lane. */
INL void q8_block_step(const uint8_t *w, size_t ws, int64_t b, const uint8_t *pk, size_t pb, __m256i is[][2],
                       __m256 acc[][2], const int NR, const int TP) {
    UNROLL for (int r = 0; r < NR; r++) {
        const block_q8_0 *wb = (const block_q8_0 *)(w + r * ws) + b;
        const __m256 dw = _mm256_set1_ps(_cvtsh_ss(wb->d));
        UNROLL for (int p = 0; p < TP; p++) {
            const __m256 dx = _mm256_loadu_ps((const float *)(pk + p * pb + Q8A_QS));
            const __m256 s = _mm256_mul_ps(_mm256_cvtepi32_ps(is[r][p]), _mm256_mul_ps(dw, dx));
            acc[r][p] = _mm256_add_ps(acc[r][p], s);
        }
    }
}

/* NR rows x TP panels over all nb blocks; row r's results for panel p go
 * to out[p*64 + r*8 ..] (an 8-row x 8-token block per panel). */
INL void q8_0_tile_avx2(int64_t nb, const uint8_t *w, size_t ws, const uint8_t *pan, size_t pb, size_t pf_ofs,
                        float *out, const int NR, const int TP) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[Q8A_NR][Q8A_TP];
    UNROLL for (int r = 0; r < NR; r++)
        UNROLL for (int p = 0; p < TP; p++) acc[r][p] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *pk = pan + (size_t)b * Q8A_BLOCK;
        UNROLL for (int r = 0; r < NR; r++)
            _mm_prefetch((const char *)((const block_q8_0 *)(w + r * ws + pf_ofs) + b), _MM_HINT_T0);
        __m256i is[Q8A_NR][Q8A_TP];
        UNROLL for (int r = 0; r < NR; r++)
            UNROLL for (int p = 0; p < TP; p++) is[r][p] = _mm256_setzero_si256();
        UNROLL for (int k = 0; k < 8; k++) {
            __m256i xk[Q8A_TP];
            UNROLL for (int p = 0; p < TP; p++) xk[p] = _mm256_loadu_si256((const __m256i *)(pk + p * pb + 32 * k));
            UNROLL for (int r = 0; r < NR; r++) {
                const block_q8_0 *wb = (const block_q8_0 *)(w + r * ws) + b;
                int32_t w4;
                memcpy(&w4, wb->qs + 4 * k, 4);
                const __m256i wv = _mm256_set1_epi32(w4), aw = _mm256_abs_epi8(wv);
                UNROLL for (int p = 0; p < TP; p++) {
                    const __m256i m = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(xk[p], wv));
                    is[r][p] = _mm256_add_epi32(is[r][p], _mm256_madd_epi16(m, ones));
                }
            }
        }
        q8_block_step(w, ws, b, pk, pb, is, acc, NR, TP);
    }
    UNROLL for (int r = 0; r < NR; r++)
        UNROLL for (int p = 0; p < TP; p++) _mm256_storeu_ps(out + p * 64 + r * 8, acc[r][p]);
}

typedef void (*q8a_tile_fn)(int64_t nb, const uint8_t *w, size_t ws, const uint8_t *pan, size_t pb, size_t pf_ofs,
                            float *out);
#define Q8A_FN(R, P)                                                                                          \
    TGT static void q8_0_tile_avx2_##R##_##P(int64_t nb, const uint8_t *w, size_t ws, const uint8_t *pan,     \
                                             size_t pb, size_t pf_ofs, float *out) {                          \
        q8_0_tile_avx2(nb, w, ws, pan, pb, pf_ofs, out, R, P);                                                \
    }
Q8A_FN(1, 1) Q8A_FN(1, 2) Q8A_FN(2, 1) Q8A_FN(2, 2)
/* [rows - 1][panels - 1] */
static const q8a_tile_fn q8a_tiles[Q8A_NR][Q8A_TP] = { { q8_0_tile_avx2_1_1, q8_0_tile_avx2_1_2 },
                                                       { q8_0_tile_avx2_2_1, q8_0_tile_avx2_2_2 } };

/* Rows in chunks of rc_max: a chunk's weights stay in L1 while the panels
 * (sized by the caller for L2) stream past; each chunk x panel pair leaves
 * an rc x 8 block in buf, written out token by token.  tiles[(rows - 1) *
 * Q8A_TP + panels - 1] is the tile for up to tile_nr rows and 2 panels;
 * block_bytes is the panel format's bytes per 32-block. */
INL void q8_0_panel_drive(int64_t n, const void *w, size_t ws, int nr, const void *panels, int ntok, float *y,
                          int64_t ldy, const q8a_tile_fn *tiles, int tile_nr, int rc_max, size_t block_bytes) {
    const int64_t nb = n / QK8_0;
    const size_t pb = (size_t)nb * block_bytes;
    const int np = (ntok + Q8A_TOK - 1) / Q8A_TOK;
    float buf[Q8A_TP * 64];
    for (int r0 = 0; r0 < nr; r0 += rc_max) {
        const int rc = nr - r0 < rc_max ? nr - r0 : rc_max;
        const uint8_t *wc = (const uint8_t *)w + (size_t)r0 * ws;
        for (int p = 0; p < np; p += Q8A_TP) {
            const int pn = np - p < Q8A_TP ? np - p : Q8A_TP;
            const uint8_t *pp = (const uint8_t *)panels + (size_t)p * pb;
            for (int r = 0; r < rc; r += tile_nr) {
                const int rr = rc - r < tile_nr ? rc - r : tile_nr;
                tiles[(rr - 1) * Q8A_TP + pn - 1](nb, wc + (size_t)r * ws, ws, pp, pb, (size_t)rc_max * ws, buf + 8 * r);
            }
            for (int q = 0; q < pn; q++) {
                const int t0 = (p + q) * Q8A_TOK;
                const int tok = ntok - t0 < Q8A_TOK ? ntok - t0 : Q8A_TOK;
                for (int t = 0; t < tok; t++) {
                    float *yt = y + (int64_t)(t0 + t) * ldy + r0;
                    for (int r = 0; r < rc; r++) yt[r] = buf[q * 64 + r * 8 + t];
                }
            }
        }
    }
}

TGT static void q8_0_panel_gemm_avx2(int64_t n, const void *w, size_t ws, int nr, const void *panels, int ntok,
                                     float *y, int64_t ldy) {
    q8_0_panel_drive(n, w, ws, nr, panels, ntok, y, ldy, &q8a_tiles[0][0], Q8A_NR, Q8A_RC, Q8A_BLOCK);
}

/* ---- AVX-VNNI variant (VEX vpdpbusd on ymm: Intel Alder Lake and later,
 * AMD Zen 5; CPUs with AVX-512 VNNI take the avx512 level instead) -------
 *
 * vpdpbusd multiplies u8 by s8 and sums four products into an int32 lane
 * without an int16 step, so the sign trick is not needed: the broadcast
 * weight dword goes in as w + 128 (a xor), the panel's activations as they
 * are, and the panel carries per token and block corr = -128·Σx, the
 * start of the block's sum: corr + Σ (w + 128)·x = Σ w·x, exact.  Per
 * weight dword and row one broadcast and one xor, then one vpdpbusd per
 * panel (the sign-trick loop: an abs per dword and a sign, maddubs, madd
 * and add per panel).  The float step is the same as above, so every lane
 * is again bit-identical to vec_dot.
 *
 * Panel layout: the qs and dx of the layout above, then corr (8 int32). */
#define TGV __attribute__((target("avx2,fma,f16c,avxvnni")))
#define INLV static inline __attribute__((always_inline)) TGV

enum {
    Q8V_BLOCK = Q8A_QS + 32 + 32, /* qs, dx, corr */
    /* 3 x 2: 6 int32 sums and 6 f32 lanes (activations as memory
     * operands).  Zen 5, avx2 level, 1 thread, build/bench/gemm q8_0
     * 1024 x 1024 at 48-512 tokens: 3x2 307-344 GF/s, 2x3 241-289 */
    Q8V_NR = 3,
    Q8V_TP = 2,
};

static size_t q8_0_panel_bytes_vnni(int64_t n) { return (size_t)(n / QK8_0) * Q8V_BLOCK; }

static void q8_0_panel_pack_vnni(int64_t n, const void *x, size_t xs, int ntok, void *panels) {
    const int64_t nb = n / QK8_0;
    uint8_t *dst = panels;
    for (int t0 = 0; t0 < ntok; t0 += Q8A_TOK) {
        const int cnt = ntok - t0 < Q8A_TOK ? ntok - t0 : Q8A_TOK;
        for (int64_t b = 0; b < nb; b++, dst += Q8V_BLOCK) {
            memset(dst, 0, Q8V_BLOCK);
            float *dx = (float *)(dst + Q8A_QS);
            int32_t *corr = (int32_t *)(dst + Q8A_QS + 32);
            for (int t = 0; t < cnt; t++) {
                const block_q8_0 *xb = (const block_q8_0 *)((const uint8_t *)x + (size_t)(t0 + t) * xs) + b;
                int32_t sx = 0;
                for (int k = 0; k < 8; k++) memcpy(dst + 32 * k + 4 * t, xb->qs + 4 * k, 4);
                for (int i = 0; i < QK8_0; i++) sx += xb->qs[i];
                dx[t] = ds4_fp16_to_f32(xb->d);
                corr[t] = -128 * sx;
            }
        }
    }
}

INLV void q8_0_tile_vnni(int64_t nb, const uint8_t *w, size_t ws, const uint8_t *pan, size_t pb, size_t pf_ofs,
                         float *out, const int NR, const int TP) {
    const __m256i k80 = _mm256_set1_epi8((char)0x80);
    __m256 acc[Q8V_NR][Q8V_TP];
    UNROLL for (int r = 0; r < NR; r++)
        UNROLL for (int p = 0; p < TP; p++) acc[r][p] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *pk = pan + (size_t)b * Q8V_BLOCK;
        UNROLL for (int r = 0; r < NR; r++)
            _mm_prefetch((const char *)((const block_q8_0 *)(w + r * ws + pf_ofs) + b), _MM_HINT_T0);
        __m256i is[Q8V_NR][Q8V_TP];
        UNROLL for (int p = 0; p < TP; p++) {
            const __m256i corr = _mm256_loadu_si256((const __m256i *)(pk + p * pb + Q8A_QS + 32));
            UNROLL for (int r = 0; r < NR; r++) is[r][p] = corr;
        }
        UNROLL for (int k = 0; k < 8; k++) {
            UNROLL for (int r = 0; r < NR; r++) {
                const block_q8_0 *wb = (const block_q8_0 *)(w + r * ws) + b;
                int32_t w4;
                memcpy(&w4, wb->qs + 4 * k, 4);
                const __m256i wu = _mm256_xor_si256(_mm256_set1_epi32(w4), k80); /* w + 128 as u8 */
                UNROLL for (int p = 0; p < TP; p++)
                    is[r][p] = ds4_dpbusd_vex(is[r][p], wu, _mm256_loadu_si256((const __m256i *)(pk + p * pb + 32 * k)));
            }
        }
        q8_block_step(w, ws, b, pk, pb, is, acc, NR, TP);
    }
    UNROLL for (int r = 0; r < NR; r++)
        UNROLL for (int p = 0; p < TP; p++) _mm256_storeu_ps(out + p * 64 + r * 8, acc[r][p]);
}

#define Q8V_FN(R, P)                                                                                          \
    TGV static void q8_0_tile_vnni_##R##_##P(int64_t nb, const uint8_t *w, size_t ws, const uint8_t *pan,     \
                                             size_t pb, size_t pf_ofs, float *out) {                          \
        q8_0_tile_vnni(nb, w, ws, pan, pb, pf_ofs, out, R, P);                                                \
    }
Q8V_FN(1, 1) Q8V_FN(1, 2) Q8V_FN(2, 1) Q8V_FN(2, 2) Q8V_FN(3, 1) Q8V_FN(3, 2)
static const q8a_tile_fn q8v_tiles[Q8V_NR][Q8V_TP] = { { q8_0_tile_vnni_1_1, q8_0_tile_vnni_1_2 },
                                                       { q8_0_tile_vnni_2_1, q8_0_tile_vnni_2_2 },
                                                       { q8_0_tile_vnni_3_1, q8_0_tile_vnni_3_2 } };

_Static_assert((int)Q8V_TP == (int)Q8A_TP && Q8A_TP == 2, "q8_0_panel_drive and q8_block_step take 2 panels a tile");

/* Rows in chunks of 6 (two 3-row tiles): one output block of buf. */
TGV static void q8_0_panel_gemm_vnni(int64_t n, const void *w, size_t ws, int nr, const void *panels, int ntok,
                                     float *y, int64_t ldy) {
    q8_0_panel_drive(n, w, ws, nr, panels, ntok, y, ldy, &q8v_tiles[0][0], Q8V_NR, 2 * Q8V_NR, Q8V_BLOCK);
}

static int has_avxvnni(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("avxvnni");
}

int ds4_gemm_avx2_q8_variant(int vnni, ds4_type_traits *row) {
    if (vnni && !has_avxvnni()) return -1;
    row->panel_tokens = Q8A_TOK;
    row->panel_bytes = vnni ? q8_0_panel_bytes_vnni : q8_0_panel_bytes_avx2;
    row->panel_pack = vnni ? q8_0_panel_pack_vnni : q8_0_panel_pack_avx2;
    row->panel_gemm = vnni ? q8_0_panel_gemm_vnni : q8_0_panel_gemm_avx2;
    return 0;
}

void ds4_gemm_install_avx2_q8(ds4_type_traits *table) {
    if (ds4_gemm_avx2_q8_variant(1, &table[DS4_TYPE_Q8_0]) != 0) ds4_gemm_avx2_q8_variant(0, &table[DS4_TYPE_Q8_0]);
}

#else /* not x86: no panel kernel, ops.c uses vec_dot_tile */

void ds4_gemm_install_avx2_q8(ds4_type_traits *table) { (void)table; }
int ds4_gemm_avx2_q8_variant(int vnni, ds4_type_traits *row) { (void)vnni; (void)row; return -1; }

#endif
