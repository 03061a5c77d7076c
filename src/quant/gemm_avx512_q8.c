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
 * dwords k: isum = dpbusd(isum, broadcast(w_r dword k) XOR 0x80, qs[k]),
 * i.e. Σ (w + 128)·x - 128·Σx = Σ w·x, exact in int32.  Then
 * acc = acc + cvt(isum) * (d_w * d_x): one f32 mul for the scale product,
 * one for the block, one add, in the scalar reference's order and never
 * fused -- so every lane is bit-identical to vec_dot_q8_0_q8_0 (quant_ref.c)
 * and to the AVX-512 vec_dot (simd_avx512.c, same canonical order), however
 * tokens are batched.  One dpbusd does 64 MACs with no horizontal work
 * (the dot kernels need 1 dpbusd per 64 MACs plus a reduction tree); per
 * block a NR x TP register tile costs 8·NR·TP dpbusd, 8·NR broadcast+XOR
 * and 4·NR·TP float ops. */
#include "quant/simd_int.h"

#if defined(__x86_64__) || defined(__i386__)

#include "quant/simd_x86.h"
#define UNROLL16 _Pragma("GCC unroll 16")

enum {
    Q8P_TOK = 16,                        /* tokens per panel */
    Q8P_QS = 8 * 64,                     /* bytes of quants per block */
    Q8P_BLOCK = Q8P_QS + 64 + 64,        /* + dx + corr */
    /* Register tile: 8 rows x 2 panels = 16 accumulators + 16 block sums.
     * Measured on Zen 5 (n = 1024, 48-64 tokens, 1 thread): 8x2 ~690
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
        sum = _mm512_dpbusd_epi32(sum, _mm512_set1_epi8((char)0x80), v); /* 128·Σ, exact */
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

/* NR rows x TP panels over all nb blocks, the register tile.  Row r's
 * results for panel p (16 token lanes) go to out[p*256 + r*16 ..]: a
 * 16-row x 16-token block per panel that q8_0_store_block() transposes.
 * pf_ofs: bytes from a row to the row whose blocks to prefetch (the next
 * row chunk), so they are in L1 when their turn comes. */
INL void q8_0_tile(int64_t nb, const uint8_t *w, size_t ws, const uint8_t *pan, size_t pb, size_t pf_ofs, float *out,
                   const int NR, const int TP) {
    const __m512i k80 = _mm512_set1_epi8((char)0x80);
    __m512 acc[Q8P_NR][Q8P_TP];
    UNROLL for (int r = 0; r < NR; r++)
        UNROLL for (int p = 0; p < TP; p++) acc[r][p] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *pk = pan + (size_t)b * Q8P_BLOCK;
        UNROLL for (int r = 0; r < NR; r++)
            _mm_prefetch((const char *)((const block_q8_0 *)(w + r * ws + pf_ofs) + b), _MM_HINT_T0);
        __m512i is[Q8P_NR][Q8P_TP];
        UNROLL for (int p = 0; p < TP; p++) {
            const __m512i corr = _mm512_loadu_si512((const void *)(pk + p * pb + Q8P_QS + 64));
            UNROLL for (int r = 0; r < NR; r++) is[r][p] = corr;
        }
        UNROLL for (int k = 0; k < 8; k++) {
            __m512i xk[Q8P_TP];
            UNROLL for (int p = 0; p < TP; p++) xk[p] = _mm512_loadu_si512((const void *)(pk + p * pb + 64 * k));
            UNROLL for (int r = 0; r < NR; r++) {
                const block_q8_0 *wb = (const block_q8_0 *)(w + r * ws) + b;
                int32_t w4;
                memcpy(&w4, wb->qs + 4 * k, 4);
                const __m512i wu = _mm512_xor_si512(_mm512_set1_epi32(w4), k80); /* w + 128 as u8 */
                UNROLL for (int p = 0; p < TP; p++) is[r][p] = _mm512_dpbusd_epi32(is[r][p], wu, xk[p]);
            }
        }
        UNROLL for (int r = 0; r < NR; r++) {
            const block_q8_0 *wb = (const block_q8_0 *)(w + r * ws) + b;
            const __m512 dw = _mm512_cvtph_ps(_mm256_set1_epi16((short)wb->d));
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

typedef void (*q8p_tile_fn)(int64_t nb, const uint8_t *w, size_t ws, const uint8_t *pan, size_t pb, size_t pf_ofs,
                            float *out);
#define Q8P_FN(R, P)                                                                                          \
    TGT static void q8_0_tile_##R##_##P(int64_t nb, const uint8_t *w, size_t ws, const uint8_t *pan, size_t pb, \
                                        size_t pf_ofs, float *out) {                                          \
        q8_0_tile(nb, w, ws, pan, pb, pf_ofs, out, R, P);                                                     \
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

/* Rows in chunks of 16 (one transposed store block per panel): a chunk's
 * weights (16 rows) stay in L1 while the panels, which the caller sizes
 * for L2, stream past them TP at a time; within a chunk, NR-row tiles. */
TGT static void q8_0_panel_gemm(int64_t n, const void *w, size_t ws, int nr, const void *panels, int ntok, float *y,
                                int64_t ldy) {
    const int64_t nb = n / QK8_0;
    const size_t pb = q8_0_panel_bytes(n);
    const int np = (ntok + Q8P_TOK - 1) / Q8P_TOK;
    _Alignas(64) float buf[Q8P_TP][256];
    for (int r0 = 0; r0 < nr; r0 += 16) {
        const int rc = nr - r0 < 16 ? nr - r0 : 16;
        const uint8_t *wc = (const uint8_t *)w + (size_t)r0 * ws;
        if (rc < 16) memset(buf, 0, sizeof buf); /* rows past rc: read by the transpose, never stored */
        for (int p = 0; p < np; p += Q8P_TP) {
            const int pn = np - p < Q8P_TP ? np - p : Q8P_TP;
            const uint8_t *pp = (const uint8_t *)panels + (size_t)p * pb;
            for (int r = 0; r < rc; r += Q8P_NR) {
                const int rr = rc - r < Q8P_NR ? rc - r : Q8P_NR;
                q8p_tiles[rr - 1][pn - 1](nb, wc + (size_t)r * ws, ws, pp, pb, 16 * ws, buf[0] + 16 * r);
            }
            for (int q = 0; q < pn; q++) {
                const int tok = ntok - (p + q) * Q8P_TOK;
                q8_0_store_block(buf[q], rc, tok < Q8P_TOK ? tok : Q8P_TOK, y + (int64_t)(p + q) * Q8P_TOK * ldy + r0,
                                 ldy);
            }
        }
    }
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
