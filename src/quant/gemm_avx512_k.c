/* AVX-512 (F/BW/VL/DQ + VNNI) panel GEMM kernels for Q2_K, Q4_K and IQ2_XXS
 * weights against Q8_K activations (quant.h "Panel GEMM").
 *
 * Contract: y[t*ldy + r] = vec_dot(n, w + r*ws, x_t), bit-identical to the
 * reference (quant_ref.c) and so to the avx512 vec_dot.  Every integer block
 * sum is exact in int32 (whatever the order), and each of the 16 f32 lanes
 * (one token each) performs exactly the reference's per-256-block float
 * steps in the reference's order (mul, mul, sub, add; no fused ops), so the
 * results cannot differ.
 *
 * Panel layout (PANEL = 16 tokens), per 256-block, BB(type) bytes:
 *   [0, 4096)      the 256 activation bytes, dword k (elements 4k..4k+3) of
 *                  token t at 64k + 4t, so one zmm load gives dword k of all
 *                  16 tokens: int8 x for Q2_K / Q4_K, u8 x ^ 0x80 (= x + 128)
 *                  for IQ2_XXS;
 *   [4096, 4160)   the Q8_K scale d of each token (f32);
 *   [4160, BB)     the block sums the type's min term needs, as int16 pairs
 *                  per token dword (Q2_K: 8 pairs of 16-sums; Q4_K: 4 pairs
 *                  of 32-sums; IQ2_XXS: none).
 * Padding tokens are x = 0, d = 0: finite, never stored.
 *
 * Kernel: rows in chunks of 16 (RC).  A chunk's blocks are unpacked once per
 * call into 256 weight bytes each plus integer scales (wblk), in an L1-sized
 * stack buffer (KB blocks of a row at a time), and every panel of the call
 * passes over them in tiles of NR rows x TP panels: for each dword k the
 * row's 4 bytes are broadcast to all lanes and multiplied against the
 * panel's dword row k with vpdpbusd (u8 x s8, 4 products per int32 lane,
 * exact).  Unpacking per tile instead (as this kernel first did) cost as
 * much as the products of a panel or two: in a prefill each routed expert
 * sees only ~48 tokens (3 panels).  A tile's f32 lane sums live in a
 * 16-row x 16-token block per panel, which goes out transposed, one 64-byte
 * store per token; so the lane sums of a row can wait there between block
 * ranges, and the blocks still add in order.  The next chunk's weight rows
 * are prefetched while a chunk computes (the experts' weights come cold
 * from memory).  A last panel of at most 8 tokens runs two rows per
 * register (k_tile_pairs), except after a single full panel, where the
 * plain tile of two panels was as fast.  Per type:
 *   Q2_K     quant (0..3) times its 4-bit group scale fits in a u8 (<= 45),
 *            so Σ_j sc_j·Σ q·x is one dpbusd chain (weights u8, x s8); the
 *            min term Σ m_j·bsum_j is vpdpwssd of broadcast (m, m') pairs
 *            against the bsum pairs.
 *   Q4_K     q (0..15) x 6-bit scale does not fit a byte: each 32-sub-block
 *            gets its own dpbusd chain, scaled by vpmulld; mins as Q2_K over
 *            32-sums.
 *   IQ2_XXS  weights are signed grid bytes (±8/±25/±43), so they take the s8
 *            side and the activation enters as x + 128: each row's sum then
 *            carries 128·Σ ls·w, a per-row constant the unpack computes and
 *            that starts the accumulator negated (exact).  Per 32-group chain
 *            times the odd scale 2s+1 (vpmulld); the 1/8 at the end, as the
 *            reference.  CPUs with VBMI + GFNI unpack the grid with
 *            in-register lookups and bit transposes (unpack_iq2_xxs_gfni),
 *            CPUs with VBMI + BITALG but no GFNI with in-register lookups
 *            (unpack_iq2_xxs_vbmi).
 */
#if defined(__x86_64__) || defined(__i386__)

#include "quant/simd_x86.h"
#include "quant/iq2_tables.h"
#include "quant/lut_avx512.h"

#include <pthread.h>

enum { PANEL = 16, QBYTES = 4096, DOFF = 4096, SOFF = 4160 };
/* RC: rows per chunk (a transposed store block); KB: blocks per unpacked
 * range (RC x KB x 320 bytes, ~20 KB: L1); PGRP: panels whose sums wait in
 * the stack buffer between block ranges; RMAX, PMAXT, TMAX: tile bounds. */
enum { RC = 16, KB = 4, PGRP = 8, RMAX = 8, PMAXT = 3, TMAX = RMAX * PMAXT };
#define UNROLL16 _Pragma("GCC unroll 16")

/* Bytes of one panel block: activation bytes, d, and `npairs` sum dwords. */
static size_t block_bytes(int npairs) { return (size_t)SOFF + (size_t)npairs * 64; }

INL float h2f(ds4_fp16 h) { return _cvtsh_ss(h); } /* exact, as ds4_fp16_to_f32 */
/* Two adjacent fp16 (a block's d, dmin) to two adjacent floats, one convert. */
INL void h2f2(const ds4_fp16 *h, float *f) {
    uint32_t u;
    memcpy(&u, h, 4);
    _mm_storel_pi((__m64 *)f, _mm_cvtph_ps(_mm_cvtsi32_si128((int)u)));
}

/* 16 x 16 dwords in place: a[i] element j <-> a[j] element i.  32-bit then
 * 64-bit interleaves within 128-bit lanes, then a 4x4 transpose of the
 * 128-bit lanes. */
INL void transpose16(__m512i a[16]) {
    __m512i t[16], u[16];
    UNROLL for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_epi32(a[2 * i], a[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(a[2 * i], a[2 * i + 1]);
    }
    UNROLL for (int i = 0; i < 4; i++) { /* u[4i+c], 128-bit lane L: element 4L+c of rows 4i..4i+3 */
        u[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
        u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
        u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
        u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
    }
    UNROLL for (int c = 0; c < 4; c++) {
        const __m512i v0 = _mm512_shuffle_i32x4(u[c], u[4 + c], _MM_SHUFFLE(1, 0, 1, 0));
        const __m512i v1 = _mm512_shuffle_i32x4(u[c], u[4 + c], _MM_SHUFFLE(3, 2, 3, 2));
        const __m512i v2 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], _MM_SHUFFLE(1, 0, 1, 0));
        const __m512i v3 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], _MM_SHUFFLE(3, 2, 3, 2));
        a[c] = _mm512_shuffle_i32x4(v0, v2, _MM_SHUFFLE(2, 0, 2, 0)); /* row 4L + c goes to a[4L + c] */
        a[4 + c] = _mm512_shuffle_i32x4(v0, v2, _MM_SHUFFLE(3, 1, 3, 1));
        a[8 + c] = _mm512_shuffle_i32x4(v1, v3, _MM_SHUFFLE(2, 0, 2, 0));
        a[12 + c] = _mm512_shuffle_i32x4(v1, v3, _MM_SHUFFLE(3, 1, 3, 1));
    }
}

/* ------------------------------------------------------------------------
 * Packing: O(ntok·n), small next to the O(nr·ntok·n) GEMM; the activation
 * bytes of 16 tokens x 16 dwords at a time by a register transpose.
 * mode 0: no sums; 1: pairs of 16-sums (Q2_K); 2: pairs of 32-sums (Q4_K).
 * ------------------------------------------------------------------------ */

TGT static void pack_q8_K(int64_t n, const void *x, size_t xs, int ntok, void *panels, int mode) {
    const int64_t nb = n / QK_K;
    const int npairs = mode == 1 ? 8 : mode == 2 ? 4 : 0;
    const size_t bb = block_bytes(npairs), pb = bb * (size_t)nb;
    const int np = (ntok + PANEL - 1) / PANEL;
    const int xor8 = mode == 0 ? 0x80 : 0; /* IQ2_XXS: x + 128 as u8 */
    const __m512i flip = _mm512_set1_epi8((char)xor8);
    for (int p = 0; p < np; p++) {
        const int cnt = ntok - p * PANEL < PANEL ? ntok - p * PANEL : PANEL;
        for (int64_t b = 0; b < nb; b++) {
            uint8_t *dst = (uint8_t *)panels + (size_t)p * pb + (size_t)b * bb;
            for (int kg = 0; kg < 4; kg++) { /* dwords 16kg .. 16kg + 15 of the 16 tokens */
                __m512i a[16];
                UNROLL16 for (int t = 0; t < 16; t++) {
                    a[t] = flip; /* padding tokens: x = 0 */
                    if (t < cnt) {
                        const block_q8_K *xb = (const block_q8_K *)((const uint8_t *)x + (size_t)(p * PANEL + t) * xs) + b;
                        a[t] = _mm512_xor_si512(_mm512_loadu_si512((const void *)(xb->qs + 64 * kg)), flip);
                    }
                }
                transpose16(a);
                UNROLL16 for (int k = 0; k < 16; k++) _mm512_storeu_si512((void *)(dst + 64 * (16 * kg + k)), a[k]);
            }
            if (mode == 1) { /* Q2_K: the 16-sums as they lie, dword i = pair i */
                __m512i a[16];
                UNROLL16 for (int t = 0; t < 16; t++) {
                    a[t] = _mm512_setzero_si512();
                    if (t < cnt) {
                        const block_q8_K *xb = (const block_q8_K *)((const uint8_t *)x + (size_t)(p * PANEL + t) * xs) + b;
                        a[t] = _mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i *)xb->bsums));
                    }
                }
                transpose16(a);
                UNROLL for (int i = 0; i < 8; i++) _mm512_storeu_si512((void *)(dst + SOFF + 64 * i), a[i]);
            }
            for (int t = 0; t < PANEL; t++) {
                const int tok = p * PANEL + t;
                if (tok >= ntok) {
                    memset(dst + DOFF + 4 * t, 0, 4);
                    for (int i = 0; mode == 2 && i < npairs; i++) memset(dst + SOFF + 64 * i + 4 * t, 0, 4);
                    continue;
                }
                const block_q8_K *xb = (const block_q8_K *)((const uint8_t *)x + (size_t)tok * xs) + b;
                memcpy(dst + DOFF + 4 * t, &xb->d, 4);
                for (int i = 0; mode == 2 && i < npairs; i++) { /* Q4_K: 32-sums, |s| <= 32·127 fits int16 */
                    const int16_t s[2] = { (int16_t)(xb->bsums[4 * i] + xb->bsums[4 * i + 1]),
                                           (int16_t)(xb->bsums[4 * i + 2] + xb->bsums[4 * i + 3]) };
                    memcpy(dst + SOFF + 64 * i + 4 * t, s, 4);
                }
            }
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
    int32_t q[QK_K / 4]; /* 256 weight bytes (u8 for Q2_K/Q4_K, s8 for IQ2), as dwords to broadcast */
    int32_t s[8];        /* Q4_K / IQ2_XXS: per-32 scale (int32, for vpmulld); Q2_K: 8 (m, m') int16 pairs */
    int32_t m[4];        /* Q4_K: 4 (m, m') int16 pairs */
    int32_t corr;        /* IQ2_XXS: -128 · Σ weight·scale, start of the int32 sum */
    float d, dmin;       /* fp16 scales of the weight block */
} __attribute__((aligned(64))) wblk;

/* Q2_K: bytes q·(sc & 15) in element order, by a vpshufb from a table of
 * [0, sc, 2sc, 3sc] per group (sc·0x03020100 per dword: no carries,
 * 3·15 < 256).  64-element chunk c is the 32 quant bytes of its half
 * (loaded into both 256-bit halves) shifted by 2j and 2j + 2, so its
 * 128-bit lane L is group 4c + L; the lane's four group tables are
 * broadcast to every lane and q + 4L picks lane L's own. */
INL void unpack_q2_K(const block_q2_K *a, wblk *o) {
    const __m128i s = _mm_loadu_si128((const __m128i *)a->scales);
    const __m128i m4 = _mm_set1_epi8(0x0f);
    const __m512i tab = _mm512_mullo_epi32(_mm512_cvtepu8_epi32(_mm_and_si128(s, m4)), _mm512_set1_epi32(0x03020100));
    const __m512i m3 = _mm512_set1_epi8(3), lane = _mm512_set_epi32(0x0c0c0c0c, 0x0c0c0c0c, 0x0c0c0c0c, 0x0c0c0c0c,
                                                                      0x08080808, 0x08080808, 0x08080808, 0x08080808,
                                                                      0x04040404, 0x04040404, 0x04040404, 0x04040404,
                                                                      0, 0, 0, 0);
    UNROLL for (int c = 0; c < 4; c++) {
        const __m512i v = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(a->qs + 32 * (c >> 1))));
        const int j = 2 * (c & 1);
        const __m512i cnt = _mm512_inserti64x4(_mm512_set1_epi16((short)(2 * j)), _mm256_set1_epi16((short)(2 * j + 2)), 1);
        const __m512i q = _mm512_ternarylogic_epi32(_mm512_srlv_epi16(v, cnt), m3, lane, 0xEA); /* (v >> cnt & 3) | 4L */
        const __m512i t = _mm512_shuffle_i32x4(tab, tab, c * 0x55);
        _mm512_store_si512((__m512i *)(o->q + 16 * c), _mm512_shuffle_epi8(t, q));
    }
    const __m256i mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(s, 4), m4));
    _mm256_store_si256((__m256i *)o->s, mins);
    h2f2(&a->d, &o->d);
}

/* Q4_K: 4-bit quants as bytes (64-chunk c: 32 low nibbles = sub-block 2c,
 * then 32 high nibbles = 2c+1); 6-bit scales and mins as quant_ref.c's
 * q4_K_scale_min. */
INL void unpack_q4_K(const block_q4_K *a, wblk *o) {
    uint32_t u[3];
    memcpy(u, a->scales, 12);
    const uint32_t s0 = u[0] & 0x3f3f3f3fu, s1 = (u[2] & 0x0f0f0f0fu) | (((u[0] >> 6) & 0x03030303u) << 4);
    const uint32_t m0 = u[1] & 0x3f3f3f3fu, m1 = ((u[2] >> 4) & 0x0f0f0f0fu) | (((u[1] >> 6) & 0x03030303u) << 4);
    const __m128i sc8 = _mm_set_epi32(0, 0, (int)s1, (int)s0);
    _mm256_store_si256((__m256i *)o->s, _mm256_cvtepu8_epi32(sc8));
    _mm_store_si128((__m128i *)o->m, _mm_cvtepu8_epi16(_mm_set_epi32(0, 0, (int)m1, (int)m0)));
    /* the 32 bytes in both halves, shifted by 0 and 4 */
    const __m512i m4 = _mm512_set1_epi8(0x0f), cnt = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(4), 1);
    UNROLL for (int c = 0; c < 4; c++) {
        const __m512i v = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(a->qs + 32 * c)));
        _mm512_store_si512((__m512i *)(o->q + 16 * c), _mm512_and_si512(_mm512_srlv_epi16(v, cnt), m4));
    }
    h2f2(&a->d, &o->d);
}

/* IQ2_XXS: the block's 8 (grid word, aux word) qwords in one zmm.  Sign
 * bytes = ksigns[code] = code | parity(code) << 7 (the table's definition),
 * computed for all 32 codes at once: each aux word's four 7-bit codes moved
 * to byte boundaries, the parity folded into bit 0 of each byte by xor
 * shifts.  The 32 sign bytes are the element masks of the four 64-element
 * chunks (mask_sub negates); grid rows by scalar loads (faster than a gather
 * here); ls = 2s+1.  AVX-512 F/BW only. */
INL void unpack_iq2_xxs(const block_iq2_xxs *a, wblk *o) {
    const uint64_t *G = ds4_iq2xxs_grid;
    const uint8_t *gi = (const uint8_t *)a->qs; /* grid index 4g+l at byte 8g+l */
    const __m512i v = _mm512_loadu_si512((const void *)a->qs);
    const __m512i t = _mm512_srli_epi64(v, 32); /* aux word of group g in dword 2g */
    __m512i codes = _mm512_and_si512(t, _mm512_set1_epi32(0x7f));
    codes = _mm512_or_si512(codes, _mm512_and_si512(_mm512_slli_epi32(t, 1), _mm512_set1_epi32(0x7f00)));
    codes = _mm512_or_si512(codes, _mm512_and_si512(_mm512_slli_epi32(t, 2), _mm512_set1_epi32(0x7f0000)));
    codes = _mm512_or_si512(codes, _mm512_and_si512(_mm512_slli_epi32(t, 3), _mm512_set1_epi32(0x7f000000)));
    __m512i par = _mm512_xor_si512(codes, _mm512_srli_epi32(codes, 4));
    par = _mm512_xor_si512(par, _mm512_srli_epi32(par, 2));
    par = _mm512_xor_si512(par, _mm512_srli_epi32(par, 1)); /* bit 0 of each byte: parity of the byte */
    const __m512i signs = _mm512_or_si512(codes, _mm512_slli_epi32(_mm512_and_si512(par, _mm512_set1_epi32(0x01010101)), 7));
    uint64_t sm[4];
    _mm256_storeu_si256((__m256i *)sm, _mm512_cvtepi64_epi32(signs));
    const __m512i lsq = _mm512_or_si512(_mm512_slli_epi64(_mm512_srli_epi64(v, 60), 1), _mm512_set1_epi64(1));
    _mm256_store_si256((__m256i *)o->s, _mm512_cvtepi64_epi32(lsq));
    __m512i tot = _mm512_setzero_si512();
    for (int c = 0; c < 4; c++) {
        const uint8_t *i0 = gi + 16 * c, *i1 = i0 + 8;
        const __m512i g = _mm512_set_epi64((long long)G[i1[3]], (long long)G[i1[2]], (long long)G[i1[1]], (long long)G[i1[0]],
                                           (long long)G[i0[3]], (long long)G[i0[2]], (long long)G[i0[1]], (long long)G[i0[0]]);
        const __m512i w = _mm512_mask_sub_epi8(g, (__mmask64)sm[c], _mm512_setzero_si512(), g);
        _mm512_store_si512((__m512i *)(o->q + 16 * c), w);
        /* bytes 0-31: ls of group 2c, 32-63: of 2c+1 (byte 0 of their qwords) */
        const __m512i sel = _mm512_mask_blend_epi64(0xF0, _mm512_set1_epi64(2 * c), _mm512_set1_epi64(2 * c + 1));
        const __m512i lsb = _mm512_shuffle_epi8(_mm512_permutexvar_epi64(sel, lsq), _mm512_setzero_si512());
        tot = ds4_dpbusd(tot, lsb, w); /* ls (u8) x signed grid */
    }
    o->corr = -128 * _mm512_reduce_add_epi32(tot);
    o->d = h2f(a->d);
}

/* IQ2_XXS on CPUs with VBMI + BITALG but no GFNI (the GFNI unpack below
 * replaced it wherever GFNI exists: Ice Lake, Zen 4 and later): the
 * scalar grid loads and qword inserts above are the costly part of the
 * unpack, so here, as in iq2_avx512.c's dot, the grid stays in registers:
 * each entry as a 16-bit code of 8 two-bit digits (0, 1, 2: 8, 25, 43),
 * split into a table of low and one of high code bytes (4 zmm each), looked
 * up by two-register byte permutes on the index bytes where they lie (the
 * aux bytes look up junk that is never used) and a blend on index bit 7.
 * Per 64-element chunk a byte permute puts 8-group q's code in qword q, a
 * multishift moves digit j to byte j and a byte permute maps digits to
 * magnitudes.  The sign codes come out of the aux words with one
 * multishift, their parity bit from a byte popcount; the sign bytes go
 * through memory to become the chunks' masks (loads are cheaper than the
 * extracts that moving them through registers takes). */
#define TGTV __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512vbmi,avx512bitalg,avx2,fma,f16c")))
#define INLV static inline __attribute__((always_inline)) TGTV

static struct {
    uint8_t code_lo[256], code_hi[256]; /* grid entry -> 16-bit code, digit j at bits 2j */
    uint8_t exp_ctl[4][64]; /* qword q, bytes 0, 1 <- low, high code byte of 8-group 8m + q */
    uint8_t digit_ctl[64];  /* byte j of each qword <- bits [2j, 2j+8) */
    uint8_t mag_tab[64];    /* byte i -> magnitude of digit i & 3 */
    uint8_t sgn_ctl[64];    /* per qword: bytes 0-3 <- aux bits 7l.. (the sign codes) */
    uint8_t sgn_keep[64];   /* 0x7f for bytes 0-3 */
    uint8_t ls_ctl[4][64];  /* bytes 0-31 <- byte 0 of qword 2m, 32-63 <- of qword 2m+1 */
} iq2v __attribute__((aligned(64)));

static pthread_once_t iq2v_once = PTHREAD_ONCE_INIT;
static void iq2v_build(void) {
    for (int i = 0; i < 256; i++) {
        uint16_t c = 0;
        for (int j = 0; j < 8; j++) {
            const uint8_t m = (uint8_t)(ds4_iq2xxs_grid[i] >> (8 * j));
            c |= (uint16_t)((m == 8 ? 0 : m == 25 ? 1 : 2) << (2 * j));
        }
        iq2v.code_lo[i] = (uint8_t)c;
        iq2v.code_hi[i] = (uint8_t)(c >> 8);
    }
    static const uint8_t mags[4] = { 8, 25, 43, 0 };
    for (int i = 0; i < 64; i++) {
        const int q = i / 8, pos = 8 * (q / 4) + q % 4; /* index byte of 8-group q (of chunk 0) in the block */
        for (int m = 0; m < 4; m++) iq2v.exp_ctl[m][i] = (uint8_t)(16 * m + pos + (i % 8 == 1 ? 64 : 0));
        iq2v.digit_ctl[i] = (uint8_t)(2 * (i % 8));
        iq2v.mag_tab[i] = mags[i & 3];
        iq2v.sgn_ctl[i] = (uint8_t)(32 + 7 * (i % 8));
        iq2v.sgn_keep[i] = i % 8 < 4 ? 0x7f : 0;
        for (int m = 0; m < 4; m++) iq2v.ls_ctl[m][i] = (uint8_t)(8 * (2 * m + i / 32));
    }
}

#define LDV(p) _mm512_load_si512((const void *)(p))
INLV void unpack_iq2_xxs_vbmi(const block_iq2_xxs *a, wblk *o) {
    const __m512i v = _mm512_loadu_si512((const void *)a->qs);
    /* low and high code bytes at the index bytes' positions */
    const __mmask64 b7 = _mm512_movepi8_mask(v);
    const __m512i lo = ds4_lut256_epi8(iq2v.code_lo, v, b7), hi = ds4_lut256_epi8(iq2v.code_hi, v, b7);
    /* sign bytes code | parity << 7, bytes 0-3 of each 32-group's qword */
    const __m512i sc = _mm512_and_si512(_mm512_multishift_epi64_epi8(LDV(iq2v.sgn_ctl), v), LDV(iq2v.sgn_keep));
    /* sc | (popcount << 7 & 0x80): the popcount's bit 0 to bit 7 of its byte */
    const __m512i sb = _mm512_ternarylogic_epi32(sc, _mm512_slli_epi16(_mm512_popcnt_epi8(sc), 7), _mm512_set1_epi8((char)0x80), 0xF8);
    uint64_t sm[4] __attribute__((aligned(32)));
    _mm256_store_si256((__m256i *)sm, _mm512_cvtepi64_epi32(sb));
    __asm__("" : "+m"(sm)); /* keep them in memory: read back as mask loads */
    /* ls = 2s + 1 per qword: bits 59-63 are s·2 + a sign bit, which the | 1 hides */
    const __m512i ls = _mm512_or_si512(_mm512_srli_epi64(v, 59), _mm512_set1_epi64(1));
    _mm256_store_si256((__m256i *)o->s, _mm512_cvtepi64_epi32(ls));
    __m512i tot = _mm512_setzero_si512();
    UNROLL for (int m = 0; m < 4; m++) {
        const __m512i cm = _mm512_permutex2var_epi8(lo, LDV(iq2v.exp_ctl[m]), hi);
        const __m512i mag = _mm512_permutexvar_epi8(_mm512_multishift_epi64_epi8(LDV(iq2v.digit_ctl), cm), LDV(iq2v.mag_tab));
        const __m512i w = _mm512_mask_sub_epi8(mag, _load_mask64((__mmask64 *)&sm[m]), _mm512_setzero_si512(), mag);
        _mm512_store_si512((__m512i *)(o->q + 16 * m), w);
        tot = ds4_dpbusd(tot, _mm512_permutexvar_epi8(LDV(iq2v.ls_ctl[m]), ls), w); /* ls (u8) x signed grid */
    }
    o->corr = -128 * _mm512_reduce_add_epi32(tot);
    o->d = h2f(a->d);
}
#undef LDV

/* Rows [0, rc) x blocks [kb0, kb0 + nbk) (see k_unpack); a function of its
 * own, as the VBMI code cannot be inlined into the base-ISA kernels. */
TGTV static void unpack_rows_iq2_xxs_vbmi(const uint8_t *w, size_t ws, int rc, int kb0, int nbk, wblk *wd) {
    for (int r = 0; r < rc; r++)
        for (int b = 0; b < nbk; b++)
            unpack_iq2_xxs_vbmi((const block_iq2_xxs *)(w + (size_t)r * ws) + kb0 + b, &wd[r * nbk + b]);
}

/* IQ2_XXS on CPUs with VBMI + GFNI (Ice Lake, Zen 4 and later): the VBMI
 * unpack above spends most of its time per 64-element chunk on shuffles
 * (expand, multishift, magnitude permute, scale permute) and on the k-masks
 * of the signs.  Here, as in iq2_avx512.c's GFNI dot, a bit transpose
 * (gf2p8affineqb) does the expansion, and a byte permute then maps each
 * element's three bits (is 25, is 43, sign) straight to its signed weight,
 * so no k-mask is built per chunk.
 *   layout  the weights go out in "chunk layout": chunk l (q[16l .. 16l+16))
 *           holds in qword g the 8-group (g, l), elements 32g + 8l .. +7.
 *           Dword 16l + 2g + h of it pairs with panel dword 8g + 2l + h,
 *           which the tiles (KIQ2G) read in that order; that costs them
 *           nothing (a broadcast load from another address), and the
 *           32-group of panel dwords 8g .. 8g + 7 is still g.
 *   grid    two bit planes per entry (byte lo: which elements are 25, hi:
 *           which are 43), looked up on the index bytes where they lie by
 *           two-register byte permutes (128 entries each) and a blend on
 *           index bit 7.  The planes' bit 7 is stored as the parity of the
 *           whole plane, so that one transpose matrix serves planes and
 *           sign codes (below).
 *   signs   one multishift puts 8-group l's 7-bit sign code in byte 4 + l
 *           of its qword (a masked ternlog merges it, bit 7 cleared, into
 *           the lo planes' unused bytes).
 *   expand  per pair of chunks a byte permute gathers each qword's six
 *           bytes (lo, hi, sign code of both 8-groups) and gf2p8affine with
 *           matrix rows 1 << k (k < 7) and 0xFF (k = 7) transposes them:
 *           byte k gets bit k of each, and for element 7 the parity of
 *           each -- the plane's stored bit, and the sign code's parity,
 *           which is the eighth sign (ksigns).  Bits 0-2 of byte k are
 *           element k's (lo, hi, sign) in the pair's first chunk, bits 3-5
 *           in its second; vpermb reads 6 index bits, so one table maps
 *           bits 0-2 and another bits 3-5 to the signed weight.
 *   corr    Σ_g ls_g·Σ w by dpbusd of ls (broadcast to the group's bytes)
 *           against chunk sums (|w0 + w1| <= 86 fits s8); the horizontal
 *           sums of 16 blocks at a time in one transposing add tree.
 * Measured on Zen 5 (EPYC, one thread): the unpack alone (16 rows x 4
 * blocks in L1, repeated) 6.0 -> 3.3 ns per block against the VBMI one;
 * `build/bench/gemm 512 1024 7 16 48 128` iq2_xxs panel 445 -> 525 GF/s
 * at 16 tokens, 639 -> 675 at 48, 702 -> 713 at 128.  Per block it runs
 * 10 shuffles (4 lookups, 2 gathers of the pairs, 4 weight permutes), 2
 * affines and no k-mask but b7, where the VBMI unpack runs 15 shuffles,
 * 4 mask loads and a horizontal sum.  Tried: the lookup's blends as
 * merge-masked permutes (vpermi2b with a mask, chained on index bit 7):
 * 3.4 ns, no gain.
 */
#define TGTG __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512vbmi,gfni,avx2,fma,f16c")))
#define INLG static inline __attribute__((always_inline)) TGTG

static struct {
    uint8_t lo[256], hi[256]; /* grid entry -> plane byte (bit k: element k is 25 / 43; bit 7: parity) */
    uint8_t pair_ctl[2][64];  /* chunks 2p, 2p+1: qword bytes 7..2 <- lo, hi, sign of 2p, then of 2p+1 */
    uint8_t wtab[2][64];      /* 6-bit index -> signed weight of bits 0-2 (wtab[0]) / 3-5 (wtab[1]) */
    uint8_t sgn_ctl[64];      /* byte 4 + l of each qword <- qword bits 32 + 7l .. */
    uint8_t ls_ctl[64];       /* byte j of each qword <- its byte 0 */
} iq2g __attribute__((aligned(64)));

static pthread_once_t iq2g_once = PTHREAD_ONCE_INIT;
static void iq2g_build(void) {
    uint8_t is25[256], is43[256];
    ds4_iq2xxs_grid_planes(is25, is43);
    for (int e = 0; e < 256; e++) {
        const unsigned b0 = is25[e], b1 = is43[e];
        /* bit 7 := parity of the plane: the transpose's row 0xFF for element 7 gives it back */
        iq2g.lo[e] = (uint8_t)((b0 & 0x7f) | (unsigned)__builtin_parity(b0) << 7);
        iq2g.hi[e] = (uint8_t)((b1 & 0x7f) | (unsigned)__builtin_parity(b1) << 7);
    }
    for (int i = 0; i < 64; i++) {
        const int g = i / 8, j = i % 8;
        for (int p = 0; p < 2; p++) {
            const int c0 = 2 * p, c1 = 2 * p + 1;
            static const int src[8] = { 0, 0, 2, 1, 0, 2, 1, 0 }; /* byte j: 0 lo, 1 hi, 2 sign */
            const int c = j >= 5 ? c0 : c1;
            int s = src[j] == 0 ? 8 * g + c : src[j] == 1 ? 64 + 8 * g + c : 8 * g + 4 + c;
            if (j < 2) s = 8 * g; /* unused */
            iq2g.pair_ctl[p][i] = (uint8_t)s;
        }
        for (int t = 0; t < 2; t++) {
            const int b = i >> (3 * t);
            const int mag = b & 2 ? 43 : b & 1 ? 25 : 8;
            iq2g.wtab[t][i] = (uint8_t)(b & 4 ? -mag : mag);
        }
        iq2g.sgn_ctl[i] = (uint8_t)(j >= 4 ? 32 + 7 * (j - 4) : 0);
        iq2g.ls_ctl[i] = (uint8_t)(8 * ((i / 8) % 2));
    }
}

#define LDG(p) _mm512_load_si512((const void *)(p))
/* One block: weights, scales, d; returns the dword lanes whose sum is
 * Σ_g ls_g·Σ_{j in g} w_j (the caller forms corr). */
INLG __m512i unpack_iq2_xxs_gfni(const block_iq2_xxs *a, wblk *o) {
    const __m512i v = _mm512_loadu_si512((const void *)a->qs);
    const __mmask64 b7 = _mm512_movepi8_mask(v);
    const __m512i lo = ds4_lut256_epi8(iq2g.lo, v, b7), hi = ds4_lut256_epi8(iq2g.hi, v, b7);
    /* odd dwords (bytes 4-7 of each qword): the sign codes & 0x7f; even: lo */
    const __m512i ls7 = _mm512_mask_ternarylogic_epi32(lo, 0xAAAA, _mm512_multishift_epi64_epi8(LDG(iq2g.sgn_ctl), v),
                                                       _mm512_set1_epi8(0x7f), 0x88);
    const __m512i xt = _mm512_set1_epi64((long long)0xFF40201008040201ull);
    const __m512i t01 = _mm512_gf2p8affine_epi64_epi8(xt, _mm512_permutex2var_epi8(ls7, LDG(iq2g.pair_ctl[0]), hi), 0);
    const __m512i t23 = _mm512_gf2p8affine_epi64_epi8(xt, _mm512_permutex2var_epi8(ls7, LDG(iq2g.pair_ctl[1]), hi), 0);
    const __m512i w0 = _mm512_permutexvar_epi8(t01, LDG(iq2g.wtab[0])), w1 = _mm512_permutexvar_epi8(t01, LDG(iq2g.wtab[1]));
    const __m512i w2 = _mm512_permutexvar_epi8(t23, LDG(iq2g.wtab[0])), w3 = _mm512_permutexvar_epi8(t23, LDG(iq2g.wtab[1]));
    _mm512_store_si512((__m512i *)(o->q + 0), w0);
    _mm512_store_si512((__m512i *)(o->q + 16), w1);
    _mm512_store_si512((__m512i *)(o->q + 32), w2);
    _mm512_store_si512((__m512i *)(o->q + 48), w3);
    /* ls = 2s + 1 per qword (see unpack_iq2_xxs_vbmi) */
    const __m512i ls = _mm512_or_si512(_mm512_srli_epi64(v, 59), _mm512_set1_epi64(1));
    _mm256_store_si256((__m256i *)o->s, _mm512_cvtepi64_epi32(ls));
    o->d = h2f(a->d);
    const __m512i lsb = _mm512_shuffle_epi8(ls, LDG(iq2g.ls_ctl));
    return ds4_dpbusd(ds4_dpbusd(_mm512_setzero_si512(), lsb, _mm512_add_epi8(w0, w1)), lsb,
                               _mm512_add_epi8(w2, w3));
}

/* Lane i of the result = the sum of a[i]'s 16 dwords. */
INLG __m512i hsum16(const __m512i a[16]) {
    __m512i c[8], d[4];
    UNROLL for (int i = 0; i < 8; i++) /* per 128-bit lane: dwords 0, 2 of a[2i], 1, 3 of a[2i+1] */
        c[i] = _mm512_add_epi32(_mm512_unpacklo_epi32(a[2 * i], a[2 * i + 1]), _mm512_unpackhi_epi32(a[2 * i], a[2 * i + 1]));
    UNROLL for (int i = 0; i < 4; i++) /* per 128-bit lane: dword j of a[4i + j] */
        d[i] = _mm512_add_epi32(_mm512_unpacklo_epi64(c[2 * i], c[2 * i + 1]), _mm512_unpackhi_epi64(c[2 * i], c[2 * i + 1]));
    const __m512i e0 = _mm512_add_epi32(_mm512_shuffle_i32x4(d[0], d[1], 0x88), _mm512_shuffle_i32x4(d[0], d[1], 0xDD));
    const __m512i e1 = _mm512_add_epi32(_mm512_shuffle_i32x4(d[2], d[3], 0x88), _mm512_shuffle_i32x4(d[2], d[3], 0xDD));
    return _mm512_add_epi32(_mm512_shuffle_i32x4(e0, e1, 0x88), _mm512_shuffle_i32x4(e0, e1, 0xDD));
}
#undef LDG

/* Rows [0, rc) x blocks [kb0, kb0 + nbk) (see k_unpack); the corr sums
 * of every 16 blocks (in wd order) in one hsum16. */
TGTG static void unpack_rows_iq2_xxs_gfni(const uint8_t *w, size_t ws, int rc, int kb0, int nbk, wblk *wd) {
    __m512i tot[16];
    int32_t c[16] __attribute__((aligned(64)));
    int i = 0; /* blocks in tot */
    for (int r = 0; r < rc; r++) {
        const block_iq2_xxs *a = (const block_iq2_xxs *)(w + (size_t)r * ws) + kb0;
        for (int b = 0; b < nbk; b++) {
            tot[i] = unpack_iq2_xxs_gfni(a + b, wd + b);
            if (++i == 16) {
                _mm512_store_si512((__m512i *)c, _mm512_mullo_epi32(hsum16(tot), _mm512_set1_epi32(-128)));
                for (int j = 0; j < 16; j++) wd[b - 15 + j].corr = c[j];
                i = 0;
            }
        }
        wd += nbk;
    }
    if (i) { /* the last i blocks, wd[-i .. -1] */
        for (int j = i; j < 16; j++) tot[j] = _mm512_setzero_si512();
        _mm512_store_si512((__m512i *)c, _mm512_mullo_epi32(hsum16(tot), _mm512_set1_epi32(-128)));
        for (int j = 0; j < i; j++) wd[j - i].corr = c[j];
    }
}

/* ------------------------------------------------------------------------
 * Micro-kernels: NR rows x TP panels over a range of blocks whose weights
 * are already unpacked (wd: row r's block b at wd[r * wst + b]).  The f32
 * lane sums start at zero (first) or from out, and go back to out: row r of
 * panel p at out[p * 256 + r * 16 ..] (a 16-row x 16-token block per panel,
 * transposed by store_block()).
 * ------------------------------------------------------------------------ */

/* KIQ2V: KIQ2 with the VBMI unpack (the same tiles); KIQ2G: the GFNI
 * unpack, whose weights lie in chunk layout (tiles of their own, wq()). */
enum { KQ2, KQ4, KIQ2, KIQ2V, KIQ2G };
#define IS_IQ2(kind) ((kind) == KIQ2 || (kind) == KIQ2G)
/* The weight dword that pairs with panel dword k (elements 4k .. 4k+3):
 * k itself, or for KIQ2G's chunk layout (unpack_iq2_xxs_gfni) dword
 * 16l + 2g + h for k = 8g + 2l + h. */
#define wq(kind, k) ((kind) == KIQ2G ? 16 * (((k) % 8) / 2) + 2 * ((k) / 8) + (k) % 2 : (k))

INL void k_tile(int nbk, const wblk *wd, int wst, const uint8_t *xp, size_t pb, float *out, int first, int last,
                const int NR, const int TP, const int kind) {
    const size_t bb = block_bytes(kind == KQ2 ? 8 : kind == KQ4 ? 4 : 0);
#define SUM(r, p) (*(__m512 *)(out + (p) * 256 + (r) * 16))
    if (first) UNROLL for (int r = 0; r < NR; r++) UNROLL for (int p = 0; p < TP; p++) SUM(r, p) = _mm512_setzero_ps();
    for (int b = 0; b < nbk; b++) {
        const wblk *wb[RMAX];
        UNROLL for (int r = 0; r < NR; r++) wb[r] = wd + r * wst + b;
        const uint8_t *xb[PMAXT];
        UNROLL for (int p = 0; p < TP; p++) xb[p] = xp + (size_t)p * pb + (size_t)b * bb;
        __m512i acc[TMAX];
        UNROLL for (int r = 0; r < NR; r++) UNROLL for (int p = 0; p < TP; p++)
            acc[r * TP + p] = IS_IQ2(kind) ? _mm512_set1_epi32(wb[r]->corr) : _mm512_setzero_si512();
        if (kind == KQ2) {
            for (int j = 0; j < 8; j++) UNROLL for (int kk = 0; kk < 8; kk++) {
                const int k = 8 * j + kk;
                __m512i xv[PMAXT];
                UNROLL for (int p = 0; p < TP; p++) xv[p] = _mm512_loadu_si512((const void *)(xb[p] + 64 * k));
                UNROLL for (int r = 0; r < NR; r++) {
                    const __m512i wv = _mm512_set1_epi32(wb[r]->q[k]);
                    UNROLL for (int p = 0; p < TP; p++) acc[r * TP + p] = ds4_dpbusd(acc[r * TP + p], wv, xv[p]);
                }
            }
        } else {
            for (int j = 0; j < 8; j++) {
                __m512i tmp[TMAX];
                UNROLL for (int i = 0; i < NR * TP; i++) tmp[i] = _mm512_setzero_si512();
                UNROLL for (int kk = 0; kk < 8; kk++) {
                    const int k = 8 * j + kk;
                    __m512i xv[PMAXT];
                    UNROLL for (int p = 0; p < TP; p++) xv[p] = _mm512_loadu_si512((const void *)(xb[p] + 64 * k));
                    UNROLL for (int r = 0; r < NR; r++) {
                        const __m512i wv = _mm512_set1_epi32(wb[r]->q[wq(kind, k)]);
                        UNROLL for (int p = 0; p < TP; p++)
                            tmp[r * TP + p] = IS_IQ2(kind) ? ds4_dpbusd(tmp[r * TP + p], xv[p], wv)
                                                           : ds4_dpbusd(tmp[r * TP + p], wv, xv[p]);
                    }
                }
                UNROLL for (int r = 0; r < NR; r++) {
                    const __m512i sc = _mm512_set1_epi32(wb[r]->s[j]);
                    UNROLL for (int p = 0; p < TP; p++)
                        acc[r * TP + p] = _mm512_add_epi32(acc[r * TP + p], _mm512_mullo_epi32(tmp[r * TP + p], sc));
                }
            }
        }
        /* per-block float steps, one token per lane, in the reference's order */
        UNROLL for (int p = 0; p < TP; p++) {
            const __m512 xd = _mm512_loadu_ps((const float *)(xb[p] + DOFF));
            if (IS_IQ2(kind)) {
                UNROLL for (int r = 0; r < NR; r++) {
                    const __m512 d = _mm512_mul_ps(_mm512_set1_ps(wb[r]->d), xd);
                    SUM(r, p) = _mm512_add_ps(SUM(r, p), _mm512_mul_ps(d, _mm512_cvtepi32_ps(acc[r * TP + p])));
                }
                continue;
            }
            const int npairs = kind == KQ2 ? 8 : 4;
            __m512i ms[RMAX];
            UNROLL for (int r = 0; r < NR; r++) ms[r] = _mm512_setzero_si512();
            UNROLL for (int i = 0; i < npairs; i++) {
                const __m512i bs = _mm512_loadu_si512((const void *)(xb[p] + SOFF + 64 * i));
                UNROLL for (int r = 0; r < NR; r++)
                    ms[r] = ds4_dpwssd(ms[r], bs, _mm512_set1_epi32(kind == KQ2 ? wb[r]->s[i] : wb[r]->m[i]));
            }
            UNROLL for (int r = 0; r < NR; r++) {
                const __m512 dall = _mm512_mul_ps(xd, _mm512_set1_ps(wb[r]->d));
                const __m512 dmin = _mm512_mul_ps(xd, _mm512_set1_ps(wb[r]->dmin));
                const __m512 t = _mm512_sub_ps(_mm512_mul_ps(dall, _mm512_cvtepi32_ps(acc[r * TP + p])),
                                               _mm512_mul_ps(dmin, _mm512_cvtepi32_ps(ms[r])));
                SUM(r, p) = _mm512_add_ps(SUM(r, p), t);
            }
        }
    }
    if (IS_IQ2(kind) && last) UNROLL for (int r = 0; r < NR; r++) UNROLL for (int p = 0; p < TP; p++)
        SUM(r, p) = _mm512_mul_ps(_mm512_set1_ps(0.125f), SUM(r, p));
#undef SUM
}

/* Tail panels.  Prefill's routed experts get few tokens each (the small
 * model ~48 ± 7 at 512 tokens, ~6 at 64), so an expert's last panel is often
 * at most half full, and a plain tile spends as many dpbusd on it as on a
 * full one: 15% of the small model's MoE multiply-adds at 512 tokens went to
 * empty lanes.  A last panel of <= 8 tokens therefore runs two rows per
 * register, lane 2t + h being token t of row 2i + h, so the 16 rows of a
 * chunk take 8 accumulators and half the dpbusd of a plain tile.
 * k_pair_rows re-lays the unpacked rows in pairs (every per-row value next
 * to its partner's, one 64-bit broadcast per pair); the panel's dwords,
 * scales and sums are duplicated into lane pairs by a permute.  The integer
 * sums are exact in any order, so each chain is split in two (even and odd
 * dwords: 8 chains left the dpbusd latency uncovered), and every lane's
 * float steps are the plain tile's, in its order: the results are the same
 * bits.  (gemm_avx512_q8.c has no pair tile: docs/cpu-speed.md says why.) */
typedef struct {
    int64_t q[QK_K / 4]; /* weight dword k of rows 2i, 2i + 1 */
    int64_t s[8], m[4];
    int64_t corr;
    float d[2], dmin[2];
} __attribute__((aligned(64))) wpair;

/* 16 dwords of a and of b -> 32 qwords (a_k, b_k), in order. */
INL void pair16(const int32_t *a, const int32_t *b, int64_t *dst) {
    const __m512i va = _mm512_load_si512((const void *)a), vb = _mm512_load_si512((const void *)b);
    const __m512i lo = _mm512_unpacklo_epi32(va, vb), hi = _mm512_unpackhi_epi32(va, vb); /* per 128-bit lane L: k 4L, 4L+1 / 4L+2, 4L+3 */
    _mm512_store_si512((void *)dst, _mm512_permutex2var_epi64(lo, _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11), hi));
    _mm512_store_si512((void *)(dst + 8), _mm512_permutex2var_epi64(lo, _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15), hi));
}

/* Rows [0, rc) of the unpacked range (row r's block b at wd[r·wst + b]) as
 * 8 pairs (pair i's block b at wp[i·nbk + b]); rows from rc on repeat row 0
 * (computed, never stored). */
INL void k_pair_rows(const wblk *wd, int wst, int rc, int nbk, wpair *wp, const int kind) {
    for (int i = 0; i < 8; i++)
        for (int b = 0; b < nbk; b++) {
            const wblk *a = wd + (2 * i < rc ? 2 * i : 0) * wst + b, *c = wd + (2 * i + 1 < rc ? 2 * i + 1 : 0) * wst + b;
            wpair *o = wp + i * nbk + b;
            UNROLL for (int k = 0; k < QK_K / 4; k += 16) pair16(a->q + k, c->q + k, o->q + k);
            for (int j = 0; j < 8; j++) o->s[j] = (int64_t)(uint32_t)a->s[j] | (int64_t)((uint64_t)(uint32_t)c->s[j] << 32);
            if (kind == KQ4)
                for (int j = 0; j < 4; j++) o->m[j] = (int64_t)(uint32_t)a->m[j] | (int64_t)((uint64_t)(uint32_t)c->m[j] << 32);
            o->corr = (int64_t)(uint32_t)a->corr | (int64_t)((uint64_t)(uint32_t)c->corr << 32);
            o->d[0] = a->d; o->d[1] = c->d;
            o->dmin[0] = a->dmin; o->dmin[1] = c->dmin;
        }
}

INL __m512i bcast_pair(int64_t v) { return _mm512_set1_epi64(v); }
INL __m512 bcast_pair_ps(const float *f) {
    double d;
    memcpy(&d, f, sizeof d);
    return _mm512_castpd_ps(_mm512_set1_pd(d));
}

/* 8 row pairs x one panel of <= 8 tokens over the range (pair i's sums at
 * out[16·i ..]; zero at the first range, else loaded; x 1/8 at the last for
 * IQ2_XXS, as k_tile). */
INL void k_tile_pairs(int nbk, const wpair *wp, const uint8_t *xp, float *out, int first, int last, const int kind) {
    const size_t bb = block_bytes(kind == KQ2 ? 8 : kind == KQ4 ? 4 : 0);
    const __m512i dup = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
#define SUMP(i) (*(__m512 *)(out + (i) * 16))
    if (first) UNROLL for (int i = 0; i < 8; i++) SUMP(i) = _mm512_setzero_ps();
    for (int b = 0; b < nbk; b++) {
        const wpair *w[8];
        UNROLL for (int i = 0; i < 8; i++) w[i] = wp + i * nbk + b;
        const uint8_t *xb = xp + (size_t)b * bb;
        __m512i acc[8], alt[8];
        UNROLL for (int i = 0; i < 8; i++) {
            acc[i] = IS_IQ2(kind) ? bcast_pair(w[i]->corr) : _mm512_setzero_si512();
            alt[i] = _mm512_setzero_si512();
        }
        if (kind == KQ2) {
            for (int j = 0; j < 8; j++) UNROLL for (int kk = 0; kk < 8; kk++) {
                const int k = 8 * j + kk;
                const __m512i xv = _mm512_permutexvar_epi32(dup, _mm512_loadu_si512((const void *)(xb + 64 * k)));
                UNROLL for (int i = 0; i < 8; i++) {
                    if (kk & 1) alt[i] = ds4_dpbusd(alt[i], bcast_pair(w[i]->q[k]), xv);
                    else acc[i] = ds4_dpbusd(acc[i], bcast_pair(w[i]->q[k]), xv);
                }
            }
            UNROLL for (int i = 0; i < 8; i++) acc[i] = _mm512_add_epi32(acc[i], alt[i]);
        } else {
            for (int j = 0; j < 8; j++) {
                __m512i tmp[8];
                UNROLL for (int i = 0; i < 8; i++) { tmp[i] = _mm512_setzero_si512(); alt[i] = _mm512_setzero_si512(); }
                UNROLL for (int kk = 0; kk < 8; kk++) {
                    const int k = 8 * j + kk;
                    const __m512i xv = _mm512_permutexvar_epi32(dup, _mm512_loadu_si512((const void *)(xb + 64 * k)));
                    UNROLL for (int i = 0; i < 8; i++) {
                        const __m512i wv = bcast_pair(w[i]->q[wq(kind, k)]);
                        __m512i *t = kk & 1 ? &alt[i] : &tmp[i];
                        *t = IS_IQ2(kind) ? ds4_dpbusd(*t, xv, wv) : ds4_dpbusd(*t, wv, xv);
                    }
                }
                UNROLL for (int i = 0; i < 8; i++)
                    acc[i] = _mm512_add_epi32(acc[i], _mm512_mullo_epi32(_mm512_add_epi32(tmp[i], alt[i]), bcast_pair(w[i]->s[j])));
            }
        }
        /* the per-block float steps of k_tile, lane by lane */
        const __m512 xd = _mm512_permutexvar_ps(dup, _mm512_loadu_ps((const float *)(xb + DOFF)));
        if (IS_IQ2(kind)) {
            UNROLL for (int i = 0; i < 8; i++) {
                const __m512 d = _mm512_mul_ps(bcast_pair_ps(w[i]->d), xd);
                SUMP(i) = _mm512_add_ps(SUMP(i), _mm512_mul_ps(d, _mm512_cvtepi32_ps(acc[i])));
            }
            continue;
        }
        const int npairs = kind == KQ2 ? 8 : 4;
        __m512i ms[8];
        UNROLL for (int i = 0; i < 8; i++) ms[i] = _mm512_setzero_si512();
        UNROLL for (int j = 0; j < npairs; j++) {
            const __m512i bs = _mm512_permutexvar_epi32(dup, _mm512_loadu_si512((const void *)(xb + SOFF + 64 * j)));
            UNROLL for (int i = 0; i < 8; i++) ms[i] = ds4_dpwssd(ms[i], bs, bcast_pair(kind == KQ2 ? w[i]->s[j] : w[i]->m[j]));
        }
        UNROLL for (int i = 0; i < 8; i++) {
            const __m512 dall = _mm512_mul_ps(xd, bcast_pair_ps(w[i]->d));
            const __m512 dmin = _mm512_mul_ps(xd, bcast_pair_ps(w[i]->dmin));
            const __m512 t = _mm512_sub_ps(_mm512_mul_ps(dall, _mm512_cvtepi32_ps(acc[i])),
                                           _mm512_mul_ps(dmin, _mm512_cvtepi32_ps(ms[i])));
            SUMP(i) = _mm512_add_ps(SUMP(i), t);
        }
    }
    if (IS_IQ2(kind) && last) UNROLL for (int i = 0; i < 8; i++) SUMP(i) = _mm512_mul_ps(_mm512_set1_ps(0.125f), SUMP(i));
#undef SUMP
}

/* The pair tile's sums (8 vectors, 64-bit lane t of vector i holding token
 * t of rows 2i, 2i + 1) to y: an 8 x 8 transpose of 64-bit lanes gives each
 * token its 16 rows in order, one masked store per token (t < ntok, rows <
 * nrows). */
TGT static void store_pairs(const float *buf, int nrows, int ntok, float *y, int64_t ldy) {
    __m512d a[8], t[8], u[8];
    UNROLL for (int i = 0; i < 8; i++) a[i] = _mm512_load_pd((const double *)(const void *)(buf + 16 * i));
    UNROLL for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm512_unpacklo_pd(a[2 * i], a[2 * i + 1]);     /* tokens 0,2,4,6 of pairs 2i, 2i+1 */
        t[2 * i + 1] = _mm512_unpackhi_pd(a[2 * i], a[2 * i + 1]); /* tokens 1,3,5,7 */
    }
    UNROLL for (int h = 0; h < 2; h++) /* pairs 4h..4h+3 */
        UNROLL for (int o = 0; o < 2; o++) { /* o: the even (0) or odd (1) tokens */
            u[4 * h + 2 * o] = _mm512_shuffle_f64x2(t[4 * h + o], t[4 * h + 2 + o], 0x88);     /* tokens o, 4+o */
            u[4 * h + 2 * o + 1] = _mm512_shuffle_f64x2(t[4 * h + o], t[4 * h + 2 + o], 0xDD); /* 2+o, 6+o */
        }
    const __mmask16 m = (__mmask16)((1u << nrows) - 1);
    UNROLL for (int o = 0; o < 2; o++)
        UNROLL for (int j = 0; j < 2; j++) { /* u[2o + j] (pairs 0-3), u[4 + 2o + j] (4-7): tokens o + 2j, o + 2j + 4 */
            const __m512d lo = u[2 * o + j], hi = u[4 + 2 * o + j];
            const int tk0 = o + 2 * j, tk1 = tk0 + 4;
            if (tk0 < ntok) _mm512_mask_storeu_ps(y + (int64_t)tk0 * ldy, m, _mm512_castpd_ps(_mm512_shuffle_f64x2(lo, hi, 0x88)));
            if (tk1 < ntok) _mm512_mask_storeu_ps(y + (int64_t)tk1 * ldy, m, _mm512_castpd_ps(_mm512_shuffle_f64x2(lo, hi, 0xDD)));
        }
}

/* buf: 16 rows x 16 tokens (row-major); writes token t's nrows results to
 * y[t*ldy + 0 .. nrows-1] for t < ntok, one masked 64-byte store per
 * token (as gemm_avx512_q8.c: lane-by-lane stores touch 16 lines per row,
 * which alias in L1 when ldy is a power of two). */
TGT static void store_block(const float *buf, int nrows, int ntok, float *y, int64_t ldy) {
    __m512i a[16];
    UNROLL16 for (int i = 0; i < 16; i++) a[i] = _mm512_load_si512((const void *)(buf + 16 * i));
    transpose16(a);
    const __mmask16 m = (__mmask16)((1u << nrows) - 1);
    UNROLL16 for (int t = 0; t < 16; t++)
        if (t < ntok) _mm512_mask_storeu_ps(y + (int64_t)t * ldy, m, _mm512_castsi512_ps(a[t]));
}

typedef void (*k_tile_fn)(int nbk, const wblk *wd, int wst, const uint8_t *xp, size_t pb, float *out, int first,
                          int last);
#define KT_FN(K, R, P)                                                                                        \
    TGT static void k_tile_##K##_##R##_##P(int nbk, const wblk *wd, int wst, const uint8_t *xp, size_t pb,     \
                                           float *out, int first, int last) {                                  \
        k_tile(nbk, wd, wst, xp, pb, out, first, last, R, P, K);                                               \
    }

typedef void (*k_pairs_fn)(int nbk, const wpair *wp, const uint8_t *xp, float *out, int first, int last);
#define KP_FN(K)                                                                                              \
    TGT static void k_pairs_##K(int nbk, const wpair *wp, const uint8_t *xp, float *out, int first, int last) { \
        k_tile_pairs(nbk, wp, xp, out, first, last, K);                                                       \
    }
KP_FN(KQ2) KP_FN(KQ4) KP_FN(KIQ2) KP_FN(KIQ2G)

/* Unpack rows [0, rc) x blocks [kb0, kb0 + nbk) of w into wd (row stride nbk). */
INL void k_unpack(const uint8_t *w, size_t ws, int rc, int kb0, int nbk, wblk *wd, const int kind) {
    if (kind == KIQ2V) {
        unpack_rows_iq2_xxs_vbmi(w, ws, rc, kb0, nbk, wd);
        return;
    }
    if (kind == KIQ2G) {
        unpack_rows_iq2_xxs_gfni(w, ws, rc, kb0, nbk, wd);
        return;
    }
    const size_t wsz = kind == KQ2 ? sizeof(block_q2_K) : kind == KQ4 ? sizeof(block_q4_K) : sizeof(block_iq2_xxs);
    for (int r = 0; r < rc; r++)
        for (int b = 0; b < nbk; b++) {
            const uint8_t *blk = w + (size_t)r * ws + (size_t)(kb0 + b) * wsz;
            if (kind == KQ2) unpack_q2_K((const block_q2_K *)blk, &wd[r * nbk + b]);
            else if (kind == KQ4) unpack_q4_K((const block_q4_K *)blk, &wd[r * nbk + b]);
            else unpack_iq2_xxs((const block_iq2_xxs *)blk, &wd[r * nbk + b]);
        }
}

/* The weight lines a later chunk's unpack of one block range will read:
 * rows ws apart from w, L lines of each from byte `off` (the range's bytes
 * rounded up to lines, plus one for a range that straddles a line).  Unit
 * u is line u % L of row u / L; units [u0, u1) get one prefetch each, so
 * that the tiles of a pass can share the rows' units out. */
INL void pf_rows(const uint8_t *w, size_t ws, size_t off, int L, int64_t u0, int64_t u1) {
    if (u0 >= u1) return;
    const char *row = (const char *)w + (size_t)(u0 / L) * ws + off;
    for (int64_t j = u0 % L, u = u0; u < u1; u++) {
        _mm_prefetch(row + 64 * j, _MM_HINT_T0);
        if (++j == L) { j = 0; row += ws; }
    }
}

/* The whole call (see the header): row chunks of RC, each unpacked once per
 * KB-block range, then every panel in tiles.  When a row needs more than
 * one range, the lane sums of up to PGRP panels wait in buf between ranges
 * (the ranges run in block order, so every lane still adds its blocks in
 * the reference's order) and the chunk is unpacked once per PGRP panels. */
INL void k_gemm(int64_t n, const uint8_t *w, size_t ws, int nr, const uint8_t *panels, int ntok, float *y,
                int64_t ldy, const k_tile_fn (*tiles)[PMAXT], const int *nrmax, const int TPM, const int kind) {
    const int nb = (int)(n / QK_K);
    const size_t bb = block_bytes(kind == KQ2 ? 8 : kind == KQ4 ? 4 : 0), pb = bb * (size_t)nb;
    const size_t wsz = kind == KQ2 ? sizeof(block_q2_K) : kind == KQ4 ? sizeof(block_q4_K) : sizeof(block_iq2_xxs);
    const int np = (ntok + PANEL - 1) / PANEL;
    const int kb = nb < KB ? nb : KB, nkc = (nb + kb - 1) / kb;
    const int pg = nkc == 1 ? np : PGRP;
    /* a last panel of <= 8 tokens goes to the pair tile (k_tile_pairs),
     * unless one full panel precedes it: the full one then runs alone in a
     * one-panel tile, and the pair was no faster than the two-panel tile
     * it replaced (24 tokens: 2-4% slower).  One thread, 512 x 1024, GF/s
     * at 8 / 40 / 72 tokens: Q2_K 299 / 628 / 711 -> 369 / 676 / 758,
     * IQ2_XXS 294 / 646 / 725 -> 357 / 653 / 741; small-q2 prefill of 64
     * tokens 1450-1517 -> 1553-1560 tok/s (gate_up 275 -> 262, down 131
     * -> 119 us a token). */
    const int tail = ntok % PANEL, npl = tail > 0 && tail <= PANEL / 2 && np != 2 ? np - 1 : np;
    const k_pairs_fn pairs = kind == KQ2 ? k_pairs_KQ2 : kind == KQ4 ? k_pairs_KQ4 : kind == KIQ2G ? k_pairs_KIQ2G
                                                                                                   : k_pairs_KIQ2;
    _Alignas(64) wpair wp[8 * KB];
    _Alignas(64) wblk wd[RC * KB];
    _Alignas(64) float buf[PGRP][256];
    /* Where y's rows are not 64-byte aligned, a shorter first chunk makes
     * the later chunks' 16-float stores whole lines (ldy a multiple of 16:
     * the same offset in every token's row).  Unaligned, each store writes
     * parts of two lines, each line twice: ~10% at 48 tokens. */
    const int skew = ldy % RC == 0 ? (int)(((uintptr_t)y / sizeof(float)) % RC) : 0;
    for (int r0 = 0, rc; r0 < nr; r0 += rc) {
        rc = r0 == 0 && skew ? RC - skew : RC;
        if (rc > nr - r0) rc = nr - r0;
        const uint8_t *wc = w + (size_t)r0 * ws;
        if (rc < RC) memset(buf, 0, sizeof buf); /* rows past rc: read by the transpose, never stored */
        /* the next two chunks' weight rows, prefetched while this one
         * computes (each chunk's lines twice: harmless).  One chunk ahead
         * left the unpack waiting on memory when a chunk's tiles are short
         * (few tokens per expert): one thread, cold IQ2_XXS experts
         * 512 x 1024, 24 tokens each 363 -> 431 GF/s, 48 tokens 528 -> 550;
         * prefetching only the chunk two ahead did worse (402, 529). */
        const size_t pf0 = nkc == 1 && r0 + rc < nr ? (size_t)(r0 + rc) * ws : 0;
        const size_t pf1 = pf0 ? (size_t)(nr - r0 - rc < 2 * RC ? nr : r0 + rc + 2 * RC) * ws : 0;
        /* Rows of several ranges (n > KB blocks: V4 Flash's 4096-wide
         * gate/up, 2048-wide down) prefetch instead, during range c, range
         * c of the next two chunks.  Without it their unpack waited on
         * memory (two thirds of its samples on the first weight load).
         * Flash-shaped q2, 3 layers, 512 tokens (12 an expert): gate_up
         * 766-773 -> 558-568 us a token, down 331-352 -> 272-279; one
         * chunk ahead 597-604 and 280-284; T1 instead of T0 no better. */
        const int pnr = nkc > 1 && r0 + rc < nr ? (nr - r0 - rc < 2 * RC ? nr - r0 - rc : 2 * RC) : 0;
        for (int g0 = 0; g0 < np; g0 += pg) {
            const int g1 = np - g0 < pg ? np : g0 + pg, gp = g1 < npl ? g1 : npl; /* [g0, gp): plain tiles */
            for (int c = 0; c < nkc; c++) {
                const int kb0 = c * kb, nbk = nb - kb0 < kb ? nb - kb0 : kb;
                if (nkc > 1 || g0 == 0) k_unpack(wc, ws, rc, kb0, nbk, wd, kind);
                /* this pass's prefetch units (pf_rows), g0 == 0 only */
                const int pL = (int)(((size_t)nbk * wsz + 63) / 64) + 1;
                const int64_t pU = g0 == 0 ? (int64_t)pnr * pL : 0, pD = (int64_t)g1 * rc;
                const size_t poff = (size_t)kb0 * wsz;
                for (int p = g0; p < gp;) {
                    /* panels split evenly into tiles of <= TPM, rows into tiles of <= nrmax[tp] */
                    const int left = gp - p, tp = (left + (left + TPM - 1) / TPM - 1) / ((left + TPM - 1) / TPM);
                    const int ntr = (rc + nrmax[tp] - 1) / nrmax[tp];
                    const uint8_t *xp = panels + (size_t)p * pb + (size_t)kb0 * bb;
                    float *out = buf[nkc == 1 ? 0 : p - g0];
                    if (c == 0 && r0 + rc < nr) { /* the next chunk's output lines (see ds4_prefetch_out) */
                        const int nrc = nr - r0 - rc < RC ? nr - r0 - rc : RC;
                        ds4_prefetch_out(y, ldy, r0 + rc, nrc, p * PANEL, (p + tp) * PANEL < ntok ? (p + tp) * PANEL : ntok);
                    }
                    for (int r = 0, i = 0; r < rc; i++) {
                        const int rr = (rc - r + (ntr - i) - 1) / (ntr - i);
                        if (pf1 > pf0) { /* this tile's share of the next chunk's lines */
                            const size_t a = pf0 + (pf1 - pf0) * (size_t)(p * rc + r) / (size_t)(g1 * rc);
                            const size_t z = pf0 + (pf1 - pf0) * (size_t)(p * rc + r + rr) / (size_t)(g1 * rc);
                            for (size_t o = a & ~(size_t)63; o < z; o += 64) _mm_prefetch((const char *)w + o, _MM_HINT_T0);
                        }
                        if (pU)
                            pf_rows(wc + (size_t)rc * ws, ws, poff, pL, pU * (p * rc + r) / pD,
                                    pU * (p * rc + r + rr) / pD);
                        tiles[rr - 1][tp - 1](nbk, wd + r * nbk, nbk, xp, pb, out + 16 * r, c == 0, c == nkc - 1);
                        r += rr;
                    }
                    if (nkc == 1)
                        for (int q = 0; q < tp; q++) {
                            const int tok = ntok - (p + q) * PANEL;
                            store_block(out + 256 * q, rc, tok < PANEL ? tok : PANEL, y + (int64_t)(p + q) * PANEL * ldy + r0, ldy);
                        }
                    p += tp;
                }
                if (gp < g1) { /* the tail panel, np - 1 */
                    const int p = np - 1;
                    k_pair_rows(wd, nbk, rc, nbk, wp, kind);
                    const uint8_t *xp = panels + (size_t)p * pb + (size_t)kb0 * bb;
                    float *out = buf[nkc == 1 ? 0 : p - g0];
                    if (c == 0 && r0 + rc < nr)
                        ds4_prefetch_out(y, ldy, r0 + rc, nr - r0 - rc < RC ? nr - r0 - rc : RC, p * PANEL, ntok);
                    if (pf1 > pf0) { /* its share of the next chunk's lines */
                        const size_t a = pf0 + (pf1 - pf0) * (size_t)(p * rc) / (size_t)(g1 * rc);
                        const size_t z = pf0 + (pf1 - pf0) * (size_t)((p + 1) * rc) / (size_t)(g1 * rc);
                        for (size_t o = a & ~(size_t)63; o < z; o += 64) _mm_prefetch((const char *)w + o, _MM_HINT_T0);
                    }
                    if (pU) pf_rows(wc + (size_t)rc * ws, ws, poff, pL, pU * p * rc / pD, pU * (p + 1) * rc / pD);
                    pairs(nbk, wp, xp, out, c == 0, c == nkc - 1);
                    if (nkc == 1) store_pairs(out, rc, tail, y + (int64_t)p * PANEL * ldy + r0, ldy);
                }
            }
            if (nkc > 1)
                for (int p = g0; p < g1; p++) {
                    const int tok = ntok - p * PANEL;
                    float *yp = y + (int64_t)p * PANEL * ldy + r0;
                    if (p >= npl) store_pairs(buf[p - g0], rc, tail, yp, ldy);
                    else store_block(buf[p - g0], rc, tok < PANEL ? tok : PANEL, yp, ldy);
                }
        }
    }
}

#define KT_R12(K, R) KT_FN(K, R, 1) KT_FN(K, R, 2)
#define KT_R123(K, R) KT_R12(K, R) KT_FN(K, R, 3)
#define KT_T12(K, R) { k_tile_##K##_##R##_1, k_tile_##K##_##R##_2, NULL }
#define KT_T123(K, R) { k_tile_##K##_##R##_1, k_tile_##K##_##R##_2, k_tile_##K##_##R##_3 }
KT_R12(KQ2, 1) KT_R12(KQ2, 2) KT_R12(KQ2, 3) KT_R12(KQ2, 4) KT_R12(KQ2, 5) KT_R12(KQ2, 6) KT_R12(KQ2, 7) KT_R12(KQ2, 8)
KT_R12(KQ4, 1) KT_R12(KQ4, 2) KT_R12(KQ4, 3) KT_R12(KQ4, 4)
KT_R123(KIQ2, 1) KT_R123(KIQ2, 2) KT_R123(KIQ2, 3) KT_R123(KIQ2, 4)
KT_R12(KIQ2, 5) KT_R12(KIQ2, 6) KT_R12(KIQ2, 7) KT_R12(KIQ2, 8)
KT_R123(KIQ2G, 1) KT_R123(KIQ2G, 2) KT_R123(KIQ2G, 3) KT_R123(KIQ2G, 4)
KT_R12(KIQ2G, 5) KT_R12(KIQ2G, 6) KT_R12(KIQ2G, 7) KT_R12(KIQ2G, 8)
/* [rows - 1][panels - 1]; NULL: a shape the type's nr[] never asks for */
static const k_tile_fn q2_tiles[RMAX][PMAXT] = { KT_T12(KQ2, 1), KT_T12(KQ2, 2), KT_T12(KQ2, 3), KT_T12(KQ2, 4),
                                                 KT_T12(KQ2, 5), KT_T12(KQ2, 6), KT_T12(KQ2, 7), KT_T12(KQ2, 8) };
static const k_tile_fn q4_tiles[RMAX][PMAXT] = { KT_T12(KQ4, 1), KT_T12(KQ4, 2), KT_T12(KQ4, 3), KT_T12(KQ4, 4) };
static const k_tile_fn iq2_tiles[RMAX][PMAXT] = { KT_T123(KIQ2, 1), KT_T123(KIQ2, 2), KT_T123(KIQ2, 3),
                                                  KT_T123(KIQ2, 4), KT_T12(KIQ2, 5), KT_T12(KIQ2, 6),
                                                  KT_T12(KIQ2, 7), KT_T12(KIQ2, 8) };
static const k_tile_fn iq2g_tiles[RMAX][PMAXT] = { KT_T123(KIQ2G, 1), KT_T123(KIQ2G, 2), KT_T123(KIQ2G, 3),
                                                   KT_T123(KIQ2G, 4), KT_T12(KIQ2G, 5), KT_T12(KIQ2G, 6),
                                                   KT_T12(KIQ2G, 7), KT_T12(KIQ2G, 8) };
/* Rows per tile for 1, 2, 3 panels (nr[tp]), and the most panels per tile.
 * Measured on Zen 5 (one thread, 16-512 tokens, the small model's expert
 * shapes): for Q2_K 8 x 2 beats 8 x 3, 7 x 3, 5 x 3, 6 x 4 and 4 x 4 (by
 * 10-20% at 48 tokens on the 512-wide down matrix; the loop is bound by the
 * dpbusd pipes, not by its loads, so wider tiles only add register
 * pressure); IQ2_XXS, which holds a second (per-group) set of accumulators,
 * gains ~5% at 48 tokens from 4 x 3 over 4 x 2 + 4 x 1 and loses with 3 x 4;
 * Q4_K with 4 x 3 gained on one shape and lost on the other. */
static const int q2_nr[3] = { 0, 8, 8 }, iq2_nr[4] = { 0, 8, 7, 4 }, q4_nr[3] = { 0, 4, 4 };
enum { Q2_TP = 2, IQ2_TP = 3, Q4_TP = 2 };

/* Tokens are taken in chunks of panels holding ~XCHUNK bytes of activations
 * (they stay in L2 while every row chunk of the matrix passes over them). */
#ifndef XCHUNK
#define XCHUNK (512u << 10)
#endif
#define DEFINE_GEMM(NAME, K, BYTES, TABLE, TR, TPN)                                                           \
    TGT static void NAME(int64_t n, const void *w, size_t ws, int nr, const void *panels, int ntok, float *y,  \
                         int64_t ldy) {                                                                        \
        const size_t pb = BYTES(n);                                                                            \
        int chunk = (int)(XCHUNK / pb) * PANEL;                                                                \
        if (chunk < PANEL) chunk = PANEL;                                                                      \
        for (int t0 = 0; t0 < ntok; t0 += chunk)                                                               \
            k_gemm(n, w, ws, nr, (const uint8_t *)panels + (size_t)(t0 / PANEL) * pb,                          \
                   ntok - t0 < chunk ? ntok - t0 : chunk, y + (int64_t)t0 * ldy, ldy, TABLE, TR, TPN, K);       \
    }

DEFINE_GEMM(q2_K_gemm, KQ2, q2_K_panel_bytes, q2_tiles, q2_nr, Q2_TP)
DEFINE_GEMM(q4_K_gemm, KQ4, q4_K_panel_bytes, q4_tiles, q4_nr, Q4_TP)
DEFINE_GEMM(iq2_xxs_gemm, KIQ2, iq2_xxs_panel_bytes, iq2_tiles, iq2_nr, IQ2_TP)
DEFINE_GEMM(iq2_xxs_gemm_vbmi, KIQ2V, iq2_xxs_panel_bytes, iq2_tiles, iq2_nr, IQ2_TP)
DEFINE_GEMM(iq2_xxs_gemm_gfni, KIQ2G, iq2_xxs_panel_bytes, iq2g_tiles, iq2_nr, IQ2_TP)

void ds4_gemm_install_avx512_k(ds4_type_traits *t) {
#define SETP(T, NAME) \
    (t[T].panel_tokens = PANEL, t[T].panel_bytes = NAME##_panel_bytes, t[T].panel_pack = NAME##_pack, \
     t[T].panel_gemm = NAME##_gemm)
    SETP(DS4_TYPE_Q2_K, q2_K);
    SETP(DS4_TYPE_Q4_K, q4_K);
    SETP(DS4_TYPE_IQ2_XXS, iq2_xxs);
#undef SETP
    const ds4_panel_gemm_fn g = ds4_gemm_avx512_k_iq2_variant(2);
    const ds4_panel_gemm_fn v = ds4_gemm_avx512_k_iq2_variant(1);
    if (g) t[DS4_TYPE_IQ2_XXS].panel_gemm = g;
    else if (v) t[DS4_TYPE_IQ2_XXS].panel_gemm = v;
}

ds4_panel_gemm_fn ds4_gemm_avx512_k_iq2_variant(int variant) {
    __builtin_cpu_init();
    const int vbmi = __builtin_cpu_supports("avx512vbmi");
    switch (variant) {
    case 0: return iq2_xxs_gemm;
    case 1:
        if (!vbmi || !__builtin_cpu_supports("avx512bitalg")) return NULL;
        pthread_once(&iq2v_once, iq2v_build);
        return iq2_xxs_gemm_vbmi;
    case 2:
        if (!vbmi || !__builtin_cpu_supports("gfni")) return NULL;
        pthread_once(&iq2g_once, iq2g_build);
        return iq2_xxs_gemm_gfni;
    default: return NULL;
    }
}

#else /* not x86 */

#include "quant/simd_int.h"
void ds4_gemm_install_avx512_k(ds4_type_traits *table) { (void)table; }
ds4_panel_gemm_fn ds4_gemm_avx512_k_iq2_variant(int variant) { (void)variant; return NULL; }

#endif
