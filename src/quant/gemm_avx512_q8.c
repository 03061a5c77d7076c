/* AVX-512 VNNI panel GEMM for Q8_0 weights · Q8_0 activations (quant.h
 * "Panel GEMM"): the prefill kernel, tokens across the 16 int32 lanes.
 *
 * Panel layout (one panel = 16 tokens, panel_bytes(n) = n/32 · 640 bytes),
 * per 32-block b of the row:
 *   qs    8 x 64 bytes: dword k of token t (its int8 quants 4k..4k+3) at
 *         [k][t], so one zmm load gives "the same 4 weights' partners" for
 *         all 16 tokens;
 *   dx    16 f32: the token scales d_x;
 *   corr  16 int32: -128 · Σ quants of the token's block.
 * Missing tokens of the last panel are zero (their results are not stored).
 *
 * Kernel, per weight row r and panel p, per block: isum = corr; for the 8
 * dwords k: isum = dpbusd(isum, broadcast(w_r dword k + 128 as u8), qs[k]),
 * i.e. Σ (w + 128)·x - 128·Σx = Σ w·x, exact in int32.  Then
 * acc = acc + cvt(isum) * (d_w * d_x): one f32 mul for the scale product,
 * one for the block, one add, in the scalar reference's order and never
 * fused -- so every lane is bit-identical to vec_dot_q8_0_q8_0 (quant_ref.c)
 * and to the AVX-512 vec_dot (simd_avx512.c, same canonical order), however
 * tokens are batched.  One dpbusd does 64 MACs with no horizontal work
 * (the dot kernels need 1 dpbusd per 64 MACs plus a reduction tree); per
 * block a NR x TP register tile costs 8·NR·TP dpbusd, 8·NR broadcasts and
 * 4·NR·TP float ops.  The weights' w + 128 and f32 d_w are made once per
 * call (q8_0_unpack), not per tile: the XOR and half-float conversion per
 * broadcast shared ports with the dpbusd (Intel Xeon, n = 1024-8192, 48
 * tokens, 1 thread: ~295 -> ~360 GF/s; equal at 16 tokens, one panel). */
#include "quant/simd_int.h"

#if defined(__x86_64__) || defined(__i386__)

#include "quant/simd_x86.h"

#include <stdlib.h>
#define UNROLL16 _Pragma("GCC unroll 16")

enum {
    Q8P_TOK = 16,                        /* tokens per panel */
    Q8P_QS = 8 * 64,                     /* bytes of quants per block */
    Q8P_BLOCK = Q8P_QS + 64 + 64,        /* + dx + corr */
    /* Register tile: 8 rows x 2 panels = 16 accumulators + 16 block sums.
     * Measured on Zen 5 (before the unpack) (n = 1024, 48-64 tokens, 1 thread): 8x2 ~690
     * GF/s, 4x2 ~600, 8x1 ~550, 6x2 ~640 (dpbusd peak: 2/cycle, ~1 TF/s).
     * Dropping the float steps gains ~20%, so the bound is probably the
     * pipes shared by dpbusd and the 2 muls + cvt per (row, panel, block):
     * 8 dpbusd + 3 such ops per 512 MACs cap it near 73% of the peak. */
    Q8P_NR = 8,
    Q8P_TP = 2,
};

static size_t q8_0_panel_bytes(int64_t n) { return (size_t)(n / QK8_0) * Q8P_BLOCK; }

/* Block b of up to 16 tokens (x rows at stride xs) into one panel block:
 * a 16 x 8 dword transpose done by 8 masked gathers (lane t reads token t),
 * Σx by dpbusd against 128s, the scales by a gather of the fp16 words.
 * Missing tokens (lanes >= cnt) are zero. */
TGT static void q8_0_pack_block(const uint8_t *x, size_t xs, int64_t b, int cnt, uint8_t *dst) {
    const __mmask16 m = (__mmask16)((1u << cnt) - 1);
    const __m512i tok = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                           _mm512_set1_epi32((int)xs));
    const uint8_t *base = x + (size_t)b * sizeof(block_q8_0);
    const __m512i zero = _mm512_setzero_si512();
    __m512i sum = zero;
    for (int k = 0; k < 8; k++) {
        const __m512i v = _mm512_mask_i32gather_epi32(zero, m, tok, base + offsetof(block_q8_0, qs) + 4 * k, 1);
        sum = ds4_dpbusd(sum, _mm512_set1_epi8((char)0x80), v); /* 128·Σ, exact */
        _mm512_storeu_si512((void *)(dst + 64 * k), v);
    }
    const __m512i d = _mm512_mask_i32gather_epi32(zero, m, tok, base + offsetof(block_q8_0, d), 1);
    _mm512_storeu_ps((float *)(dst + Q8P_QS), _mm512_cvtph_ps(_mm512_cvtepi32_epi16(d))); /* low words: the fp16 */
    _mm512_storeu_si512((void *)(dst + Q8P_QS + 64), _mm512_sub_epi32(zero, sum));
}

TGT static void q8_0_panel_pack(int64_t n, const void *x, size_t xs, int ntok, void *panels) {
    const int64_t nb = n / QK8_0;
    uint8_t *dst = panels;
    for (int t0 = 0; t0 < ntok; t0 += Q8P_TOK) {
        const int cnt = ntok - t0 < Q8P_TOK ? ntok - t0 : Q8P_TOK;
        const uint8_t *xp = (const uint8_t *)x + (size_t)t0 * xs;
        for (int64_t b = 0; b < nb; b++, dst += Q8P_BLOCK) q8_0_pack_block(xp, xs, b, cnt, dst);
    }
}

/* A row chunk's weights, unpacked once per call (q8_0_unpack): per block b
 * and row r of the chunk, the 32 quants as u8 (w + 128) at
 * q + (b·16 + r)·32 and the scale as f32 at d[b·16 + r].  The tiles then
 * broadcast ready u8 dwords and f32 scales: per (row, block, panel pair)
 * the raw layout cost 8 XORs and a half-float conversion more, on the
 * ports the dpbusd and the float steps use (Intel: +30% GF/s). */
typedef struct {
    uint8_t *q;
    float *d;
} q8p_unpacked;

TGT static void q8_0_unpack(int64_t nb, const uint8_t *w, size_t ws, int rc, q8p_unpacked u) {
    const __m256i k80 = _mm256_set1_epi8((char)0x80);
    for (int r = 0; r < rc; r++) {
        const block_q8_0 *wb = (const block_q8_0 *)(w + (size_t)r * ws);
        for (int64_t b = 0; b < nb; b++) {
            const __m256i v = _mm256_loadu_si256((const __m256i *)wb[b].qs);
            _mm256_store_si256((__m256i *)(u.q + ((size_t)b * 16 + r) * 32), _mm256_xor_si256(v, k80));
            u.d[b * 16 + r] = _cvtsh_ss(wb[b].d);
        }
    }
}

/* NR rows x TP panels over all nb blocks, the register tile, from the
 * unpacked block range u (rows r0 ..).  Row r's sums for panel p (16
 * token lanes) live in out[p*256 + r*16 ..], a 16-row x 16-token block per
 * panel that q8_0_store_block() transposes: zero at the first range
 * (`first`), else loaded, so the blocks still add in order.  pf: the next chunk's raw rows (ws
 * apart), prefetched block by block so the next unpack finds them in
 * cache (the experts' weights come cold from memory); NULL for none. */
INL void q8_0_tile(int64_t nb, q8p_unpacked u, int r0, const uint8_t *pf, size_t ws, const uint8_t *pan, size_t pb,
                   float *out, int first, const int NR, const int TP) {
    __m512 acc[Q8P_NR][Q8P_TP];
    UNROLL for (int r = 0; r < NR; r++)
        UNROLL for (int p = 0; p < TP; p++) acc[r][p] = first ? _mm512_setzero_ps() : _mm512_load_ps(out + p * 256 + r * 16);
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *pk = pan + (size_t)b * Q8P_BLOCK;
        const uint8_t *wq = u.q + ((size_t)b * 16 + r0) * 32;
        if (pf)
            UNROLL for (int r = 0; r < NR; r++)
                _mm_prefetch((const char *)((const block_q8_0 *)(pf + r * ws) + b), _MM_HINT_T0);
        __m512i is[Q8P_NR][Q8P_TP];
        UNROLL for (int p = 0; p < TP; p++) {
            const __m512i corr = _mm512_loadu_si512((const void *)(pk + p * pb + Q8P_QS + 64));
            UNROLL for (int r = 0; r < NR; r++) is[r][p] = corr;
        }
        UNROLL for (int k = 0; k < 8; k++) {
            __m512i xk[Q8P_TP];
            UNROLL for (int p = 0; p < TP; p++) xk[p] = _mm512_loadu_si512((const void *)(pk + p * pb + 64 * k));
            UNROLL for (int r = 0; r < NR; r++) {
                const __m512i wu = _mm512_set1_epi32(*(const int32_t *)(const void *)(wq + r * 32 + 4 * k));
                UNROLL for (int p = 0; p < TP; p++) is[r][p] = ds4_dpbusd(is[r][p], wu, xk[p]);
            }
        }
        UNROLL for (int r = 0; r < NR; r++) {
            const __m512 dw = _mm512_set1_ps(u.d[b * 16 + r0 + r]);
            UNROLL for (int p = 0; p < TP; p++) {
                const __m512 dx = _mm512_loadu_ps((const float *)(pk + p * pb + Q8P_QS));
                const __m512 s = _mm512_mul_ps(_mm512_cvtepi32_ps(is[r][p]), _mm512_mul_ps(dw, dx));
                acc[r][p] = _mm512_add_ps(acc[r][p], s);
            }
        }
    }
    UNROLL for (int r = 0; r < NR; r++)
        UNROLL for (int p = 0; p < TP; p++) _mm512_store_ps(out + p * 256 + r * 16, acc[r][p]);
}

typedef void (*q8p_tile_fn)(int64_t nb, q8p_unpacked u, int r0, const uint8_t *pf, size_t ws, const uint8_t *pan,
                            size_t pb, float *out, int first);
#define Q8P_FN(R, P)                                                                                          \
    TGT static void q8_0_tile_##R##_##P(int64_t nb, q8p_unpacked u, int r0, const uint8_t *pf, size_t ws,    \
                                        const uint8_t *pan, size_t pb, float *out, int first) {               \
        q8_0_tile(nb, u, r0, pf, ws, pan, pb, out, first, R, P);                                              \
    }
#define Q8P_ROW(R) Q8P_FN(R, 1) Q8P_FN(R, 2)
#define Q8P_TROW(R) { q8_0_tile_##R##_1, q8_0_tile_##R##_2 }
Q8P_ROW(1) Q8P_ROW(2) Q8P_ROW(3) Q8P_ROW(4) Q8P_ROW(5) Q8P_ROW(6) Q8P_ROW(7) Q8P_ROW(8)
/* [rows - 1][panels - 1] */
static const q8p_tile_fn q8p_tiles[Q8P_NR][Q8P_TP] = { Q8P_TROW(1), Q8P_TROW(2), Q8P_TROW(3), Q8P_TROW(4),
                                                       Q8P_TROW(5), Q8P_TROW(6), Q8P_TROW(7), Q8P_TROW(8) };

/* buf: 16 rows x 16 tokens (row-major); writes token t's nrows results to
 * y[t*ldy + 0 .. nrows-1] for t < ntok, one masked 64-byte store per
 * token.  (Storing lane by lane instead touched 16 lines per row, which
 * alias in L1 when ldy is a power of two.)  The transpose: 32-bit then
 * 64-bit interleaves within 128-bit lanes, then a 4x4 transpose of the
 * 128-bit lanes. */
TGT static void q8_0_store_block(const float *buf, int nrows, int ntok, float *y, int64_t ldy) {
    __m512 a[16], t[16], u[16];
    UNROLL16 for (int i = 0; i < 16; i++) a[i] = _mm512_load_ps(buf + 16 * i);
    UNROLL for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(a[2 * i], a[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(a[2 * i], a[2 * i + 1]);
    }
    UNROLL for (int i = 0; i < 4; i++) { /* u[4i+c], 128-bit lane L: element 4L+c of rows 4i..4i+3 */
        const __m512d t0 = _mm512_castps_pd(t[4 * i]), t1 = _mm512_castps_pd(t[4 * i + 1]);
        const __m512d t2 = _mm512_castps_pd(t[4 * i + 2]), t3 = _mm512_castps_pd(t[4 * i + 3]);
        u[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2));
        u[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2));
        u[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3));
        u[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3));
    }
    const __mmask16 m = (__mmask16)((1u << nrows) - 1);
    UNROLL for (int c = 0; c < 4; c++) {
        const __m512 v0 = _mm512_shuffle_f32x4(u[c], u[4 + c], _MM_SHUFFLE(1, 0, 1, 0));
        const __m512 v1 = _mm512_shuffle_f32x4(u[c], u[4 + c], _MM_SHUFFLE(3, 2, 3, 2));
        const __m512 v2 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], _MM_SHUFFLE(1, 0, 1, 0));
        const __m512 v3 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], _MM_SHUFFLE(3, 2, 3, 2));
        const __m512 b[4] = { _mm512_shuffle_f32x4(v0, v2, _MM_SHUFFLE(2, 0, 2, 0)),
                              _mm512_shuffle_f32x4(v0, v2, _MM_SHUFFLE(3, 1, 3, 1)),
                              _mm512_shuffle_f32x4(v1, v3, _MM_SHUFFLE(2, 0, 2, 0)),
                              _mm512_shuffle_f32x4(v1, v3, _MM_SHUFFLE(3, 1, 3, 1)) };
        UNROLL for (int L = 0; L < 4; L++) /* b[L] is token 4L + c */
            if (4 * L + c < ntok) _mm512_mask_storeu_ps(y + (int64_t)(4 * L + c) * ldy, m, b[L]);
    }
}

/* Rows in chunks of 16 (one transposed store block per panel).  A chunk's
 * blocks are unpacked KB at a time (16 x 36 bytes a block: ~18 KB, L1),
 * and every panel of the call, which the caller sizes for L2, streams past
 * each range TP at a time in NR-row tiles; the panels' sums wait in sums
 * (1 KB a panel) between ranges.  (Unpacking a whole chunk of n = 4096
 * into L2 lost a fifth of the speed.) */
enum { Q8P_KB = 32 };

TGT static void q8_0_panel_gemm(int64_t n, const void *w, size_t ws, int nr, const void *panels, int ntok, float *y,
                                int64_t ldy) {
    const int64_t nb = n / QK8_0;
    const size_t pb = q8_0_panel_bytes(n);
    const int np = (ntok + Q8P_TOK - 1) / Q8P_TOK;
    _Alignas(64) uint8_t wmem[Q8P_KB * 16 * 36];
    const q8p_unpacked u = { wmem, (float *)(void *)(wmem + Q8P_KB * 16 * 32) };
    _Alignas(64) float sums_stack[8 * 256];
    /* A panel pair's sums are final after its tiles over the last block
     * range, and go out at once, from L1, into the lines prefetched just
     * before.  Stored after the whole chunk instead, they came back from L2
     * and their stores missed: with one range (n <= 1024, 4096 rows, 512
     * tokens) the stores took ~40% of the call.  With four (n = 4096, V4
     * Flash's width; 1024 rows, 1 thread, 4 interleaved pairs) 48 tokens
     * went 604-609 -> 629-648 GF/s, 96 tokens 639-661 -> 663-684. */
    const bool one = nb <= Q8P_KB;
    float *sums = np <= 8 || one ? sums_stack : aligned_alloc(64, sizeof(float) * 256 * (size_t)np);
    if (!sums) abort();
    for (int r0 = 0; r0 < nr; r0 += 16) {
        const int rc = nr - r0 < 16 ? nr - r0 : 16;
        const uint8_t *wc = (const uint8_t *)w + (size_t)r0 * ws;
        /* the next chunk's rows, prefetched by each range's first panel pass */
        const uint8_t *next = r0 + 16 < nr ? wc + 16 * ws : NULL;
        if (rc < 16) /* rows past rc: transposed, never stored */
            memset(sums, 0, sizeof(float) * 256 * (size_t)(one ? Q8P_TP : np));
        for (int64_t k0 = 0; k0 < nb; k0 += Q8P_KB) {
            const int64_t kn = nb - k0 < Q8P_KB ? nb - k0 : Q8P_KB;
            const bool last = k0 + kn == nb;
            q8_0_unpack(kn, wc + (size_t)k0 * sizeof(block_q8_0), ws, rc, u);
            for (int p = 0; p < np; p += Q8P_TP) {
                const int pn = np - p < Q8P_TP ? np - p : Q8P_TP;
                if (last) /* the chunk's output lines for these panels */
                    ds4_prefetch_out(y, ldy, r0, rc, p * Q8P_TOK, (p + pn) * Q8P_TOK < ntok ? (p + pn) * Q8P_TOK : ntok);
                const uint8_t *pp = (const uint8_t *)panels + (size_t)p * pb + (size_t)k0 * Q8P_BLOCK;
                float *ps = one ? sums : sums + (size_t)p * 256;
                for (int r = 0; r < rc; r += Q8P_NR) {
                    const int rr = rc - r < Q8P_NR ? rc - r : Q8P_NR;
                    const uint8_t *pf = p == 0 && next && r0 + 16 + r < nr
                                            ? next + (size_t)r * ws + (size_t)k0 * sizeof(block_q8_0)
                                            : NULL;
                    q8p_tiles[rr - 1][pn - 1](kn, u, r, pf, ws, pp, pb, ps + 16 * r, k0 == 0);
                }
                if (last)
                    for (int q = p; q < p + pn; q++) {
                        const int tok = ntok - q * Q8P_TOK;
                        q8_0_store_block(ps + (size_t)(q - p) * 256, rc, tok < Q8P_TOK ? tok : Q8P_TOK,
                                         y + (int64_t)q * Q8P_TOK * ldy + r0, ldy);
                    }
            }
        }
    }
    if (sums != sums_stack) free(sums);
}

void ds4_gemm_install_avx512_q8(ds4_type_traits *table) {
    ds4_type_traits *t = &table[DS4_TYPE_Q8_0];
    t->panel_tokens = Q8P_TOK;
    t->panel_bytes = q8_0_panel_bytes;
    t->panel_pack = q8_0_panel_pack;
    t->panel_gemm = q8_0_panel_gemm;
}

#else /* not x86: no panel kernel, ops.c uses vec_dot_tile */

void ds4_gemm_install_avx512_q8(ds4_type_traits *table) { (void)table; }

#endif
