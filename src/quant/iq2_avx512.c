/* IQ2_XXS · Q8_K decode (matvec) kernels for AVX-512 CPUs with VBMI and
 * VNNI: the dot of the q2 recipe's routed experts.  Two variants: "gfni"
 * (needs GFNI), installed wherever the CPU has it, and "vbmi" (also needs
 * BITALG) for AVX-512 CPUs without GFNI.  ds4_iq2_avx512_variant()
 * (simd_int.h) lets the tests run both wherever the CPU has their ISA.
 *
 * Why not the base avx512 kernel (simd_avx512.c): it looks up the 32 grid
 * entries and 32 sign patterns of a block with scalar table loads, ~200
 * instructions per 66-byte block, a third of memory speed.
 *
 * vbmi: every step in vector registers.
 *   grid    each grid entry's 8 magnitudes in {8, 25, 43} as a 16-bit code
 *           of 8 two-bit digits.  The block's 32 indices become 32 word
 *           lanes, looked up with four two-register word permutes (64
 *           entries each) and two blends on index bits 6-7; a word permute
 *           puts chunk q's code in qword q, a multishift pulls digit j into
 *           byte j and a byte permute maps digits to magnitudes.
 *   signs   the 7-bit codes come out of the aux words with one multishift;
 *           the eighth bit is their parity (even), via a byte popcount.  The
 *           32 sign bytes, stored, read back as four 64-bit masks that negate
 *           the activations.
 *   sums    maddubs(magnitudes, ±x) then vpdpwssd with the group scales
 *           2s + 1 (broadcast from a stored copy), as the base kernel: exact
 *           int32 block sums, one horizontal sum per block.
 *   Zen 5 (one thread, L3-resident rows): 7.4 ns per block against 15 ns for
 *   the AVX2 kernel; unrolling the chunk loop or interleaving two rows made
 *   it slower.
 *
 * gfni: on Intel (Emerald Rapids) the vbmi kernel runs at 16.2 ns per block,
 * bound by port 5, the only one for shuffles: vpermt2w takes it 2 cycles,
 * vpermw/vpermb/multishift/vptestm and even a mask load (kmovq k, m64) 1,
 * ~30 cycles of it per block.  This variant moves the expansions to
 * gf2p8affineqb, which runs on port 0, and cuts the rest:
 *   layout  lane g of every vector is 32-group g, chunk l its 8-group l, so
 *           the codes and scales of a block are already where they are used
 *           and one dpbusd chain over the 4 chunks gives each lane's group
 *           sum; the activations are transposed into this layout once per
 *           block for all rows of the tile (8 qword shuffles).
 *   grid    bit-plane codes (byte 0: which elements are 25, byte 1: which
 *           are 43), two rows at a time: one byte permute gathers both
 *           rows' 64 index bytes, each plane byte is looked up with two
 *           two-register byte permutes and a blend on index bit 7, and byte
 *           unpacks interleave the planes into each row's code words (half
 *           the shuffles and a quarter of the k-masks of four word permutes
 *           and two bit tests per row).  One gf2p8affine with a
 *           bit-transpose matrix turns each lane's 8 code bytes into bit
 *           planes per element, and per chunk one more maps its two bits to
 *           the magnitude: 8 ^ 17·b0 ^ 35·b1 is affine over GF(2).
 *   signs   one multishift puts the 4 sign codes of a group in bytes 0-3;
 *           the same transpose with 0x7f as the row of bit 7 yields per
 *           element its sign bit, the parity included; vptestmb per chunk
 *           gives the mask that negates the activations.
 *   sums    lanes × (2s + 1) with vpmuldq; the lane vectors of 8 blocks are
 *           reduced together (14 shuffles instead of 4 per block), then
 *           converted, scaled and added to the row's sum one block at a time.
 *           Rows of fewer than 8 blocks (embd 1024: 4) share a batch, 2, 4
 *           or 8 rows of 4, 2 or 1 blocks, instead of each padding one out
 *           with zeros: 4-row tiles at 1024 columns 8.9 -> 7.1 ns per block
 *           (4096: 6.7 either way; A/B in one process), cold decode gate/up
 *           of 6 experts 512 x 1024 (harness: ds4_mm_multi over 40 layers'
 *           weights) 138 -> 111 us per layer.
 *   prefetch two row blocks (>= 8 KB) ahead, as the Q8_0 decode kernel:
 *           without it the matvec streamed at 3.4 GB/s, with it 6.0.
 * Measured (Xeon model 207, 2 cores of a shared VM, one thread; bench/kernels
 * 128 4096 iq2_xxs): 4-row tiles in L2 9.9 ns per block (0.0388 ns per
 * element) against 16.2 for vbmi; matvec over 128 MiB 6.0 GB/s against 3.6
 * (read bandwidth ~7.6).  Tried and slower here: grid entries by gathers
 * (vpgatherqq, 11.4-14.5 ns: 2 elements per cycle, 32 per block), the
 * codes by vpgatherdd (11.2), sign masks via kmov loads or vpshufbitqmb
 * (port 0 and 5), magnitudes by blends of two masks.
 * Zen 5 (EPYC family 26, same tile bench): 5.4 ns per block against 7.8
 * for vbmi (small-q2 decode 182 -> 200-210 tok/s, 2 threads; gate_up 1.50
 * -> 1.21 ms per token); the two-row grid lookup then 5.4 -> 5.1 (an A/B of
 * two builds in one process, interleaved).  Tried there and slower: signs
 * as 0x00/0xff bytes by gf2p8affine and a ternlog select of q8 or -q8
 * (+15%), two dpbusd chains per block (+30%), vpmovb2m of shifted sign
 * bytes or a masked move from a negated copy instead of test + masked sub
 * (+1%, +8%); 8 rows per tile call (sharing the transpose) gained 1-2%,
 * not worth a wider tile contract.
 *
 * Code generation: the chunk loop is unrolled and its dpbusd is inline asm
 * (dpbusd.h); GCC 12 had kept the loop and put two register copies around
 * each dpbusd.  Zen 5, 4-row tiles in L2 (bench/kernels 64 1024 iq2_xxs):
 * 0.0194 -> 0.0155 ns per element; small-q2 decode gate_up 1040-1130 ->
 * 922-930 us a token (3 interleaved pairs).
 *
 * Both: the float step per block, sum += (d_w · d_x) · (float)isum, and
 * the final 0.125 · sum are the reference's (quant_ref.c), so the result is
 * bit-identical to it and to the base kernel; tiles of more than one column
 * keep the base kernel's tile (it reuses weights across columns). */
#if defined(__x86_64__)

#include "quant/simd_int.h"

#include <immintrin.h>
#include <pthread.h>
#include <string.h>

#include "quant/dpbusd.h"
#include "quant/iq2_tables.h"
#include "quant/lut_avx512.h"

#define TGT __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512vbmi,avx512bitalg,f16c")))
#define TGF __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512vbmi,gfni,f16c")))

static uint16_t code16[256] __attribute__((aligned(64)));
static pthread_once_t code_once = PTHREAD_ONCE_INIT;

/* Grid entry -> 8 two-bit digits (0: 8, 1: 25, 2: 43), digit j at bits 2j. */
static void build_codes(void) {
    for (int i = 0; i < 256; i++) {
        uint16_t c = 0;
        for (int j = 0; j < 8; j++) {
            uint8_t m = (uint8_t)(ds4_iq2xxs_grid[i] >> (8 * j));
            c |= (uint16_t)((m == 8 ? 0 : m == 25 ? 1 : 2) << (2 * j));
        }
        code16[i] = c;
    }
}

/* Control vectors, built once at install; the kernels read them from memory
 * (L1-resident), as there are more of them than registers. */
typedef struct {
    __m512i tab[8];     /* code16, 32 entries per register */
    __m512i idx_ctl;    /* byte 2k <- index byte of chunk k (8·(k/4) + k%4) */
    __m512i exp_ctl[4]; /* word 4q <- code of chunk 8m + q */
    __m512i digit_ctl;  /* byte j of each qword <- bits [2j, 2j+8) */
    __m512i mag_tab;    /* byte i -> magnitude of digit i & 3 */
    __m512i sgn_ctl;    /* per qword: bytes 0-3 <- aux bits 7l.., byte 4 <- aux bits 28.. */
    __m512i sgn_keep;   /* 0x7f for bytes 0-3, 0x0f for byte 4, 0 above */
    __m512i par_keep;   /* 1 for bytes 0-3 */
} iq2_ctl;

TGT static void ctl_init(iq2_ctl *c) {
    for (int i = 0; i < 8; i++) c->tab[i] = _mm512_load_si512((const void *)(code16 + 32 * i));
    uint8_t b[64];
    uint16_t w[32];
    for (int k = 0; k < 32; k++) { b[2 * k] = (uint8_t)(8 * (k / 4) + k % 4); b[2 * k + 1] = 0; }
    c->idx_ctl = _mm512_loadu_si512(b);
    for (int m = 0; m < 4; m++) {
        for (int i = 0; i < 32; i++) w[i] = (uint16_t)(8 * m + i / 4);
        c->exp_ctl[m] = _mm512_loadu_si512(w);
    }
    for (int i = 0; i < 64; i++) b[i] = (uint8_t)(2 * (i % 8));
    c->digit_ctl = _mm512_loadu_si512(b);
    static const uint8_t mags[4] = { 8, 25, 43, 0 };
    for (int i = 0; i < 64; i++) b[i] = mags[i & 3];
    c->mag_tab = _mm512_loadu_si512(b);
    static const uint8_t sg[8] = { 32, 39, 46, 53, 60, 0, 0, 0 };
    static const uint8_t keep[8] = { 0x7f, 0x7f, 0x7f, 0x7f, 0x0f, 0, 0, 0 };
    static const uint8_t par[8] = { 1, 1, 1, 1, 0, 0, 0, 0 };
    for (int i = 0; i < 64; i++) b[i] = sg[i % 8];
    c->sgn_ctl = _mm512_loadu_si512(b);
    for (int i = 0; i < 64; i++) b[i] = keep[i % 8];
    c->sgn_keep = _mm512_loadu_si512(b);
    for (int i = 0; i < 64; i++) b[i] = par[i % 8];
    c->par_keep = _mm512_loadu_si512(b);
}

static iq2_ctl ctl __attribute__((aligned(64)));

TGT static void build_all(void) {
    build_codes();
    ctl_init(&ctl);
}

/* The 16-bit entry of a 256-entry table (tab: 32 entries per register)
 * for each word lane's index byte (bits 0-7; the high byte is ignored):
 * four two-register word permutes cover 64 entries each (6 index bits),
 * index bits 6-7 pick one.  Both variants' grid lookup; AVX512BW only, so
 * it inlines into either's target. */
static inline __attribute__((always_inline, target("avx512f,avx512bw"))) __m512i lookup_codes(const __m512i tab[8],
                                                                                               __m512i idx) {
    const __m512i t0 = _mm512_permutex2var_epi16(tab[0], idx, tab[1]);
    const __m512i t1 = _mm512_permutex2var_epi16(tab[2], idx, tab[3]);
    const __m512i t2 = _mm512_permutex2var_epi16(tab[4], idx, tab[5]);
    const __m512i t3 = _mm512_permutex2var_epi16(tab[6], idx, tab[7]);
    const __mmask32 b6 = _mm512_test_epi16_mask(idx, _mm512_set1_epi16(64));
    const __mmask32 b7 = _mm512_test_epi16_mask(idx, _mm512_set1_epi16(128));
    return _mm512_mask_blend_epi16(b7, _mm512_mask_blend_epi16(b6, t0, t1), _mm512_mask_blend_epi16(b6, t2, t3));
}

TGT static inline float dot_row(const iq2_ctl *c, int64_t nb, const block_iq2_xxs *a, const block_q8_K *x) {
    const __m512i zero = _mm512_setzero_si512();
    const __m512i one = _mm512_set1_epi64(1);
    /* per block: the 32 sign bytes (chunk order) and, per group, the scale
     * 2s + 1 in both words of a dword; read back as masks and broadcasts,
     * which costs loads instead of shuffles (the shuffle port is the limit) */
    uint64_t sgn[4] __attribute__((aligned(32)));
    uint32_t lsd[8] __attribute__((aligned(32)));
    float sum = 0.0f;
    for (int64_t i = 0; i < nb; i++) {
        const __m512i v = _mm512_loadu_si512((const void *)a[i].qs);
        /* index bytes to word lanes; the high bytes are junk, which the
         * permutes (6 index bits) and the bit 6/7 tests never look at */
        const __m512i codes = lookup_codes(c->tab, _mm512_permutexvar_epi8(c->idx_ctl, v));
        const __m512i ms = _mm512_and_si512(_mm512_multishift_epi64_epi8(c->sgn_ctl, v), c->sgn_keep);
        const __m512i par = _mm512_and_si512(_mm512_popcnt_epi8(ms), c->par_keep);
        const __m512i sb = _mm512_or_si512(ms, _mm512_slli_epi16(par, 7)); /* bit 0 -> bit 7 of the same byte */
        _mm256_store_si256((__m256i *)sgn, _mm512_cvtepi64_epi32(sb));
        __m512i ls = _mm512_srli_epi64(ms, 32);                               /* dword 0: s */
        ls = _mm512_add_epi32(_mm512_add_epi32(ls, ls), one);                 /* 2s + 1 */
        ls = _mm512_or_si512(ls, _mm512_slli_epi32(ls, 16));                  /* in both words */
        _mm256_store_si256((__m256i *)lsd, _mm512_cvtepi64_epi32(ls));
        __m512i acc = zero;
        for (int m = 0; m < 4; m++) {
            const __m512i cm = _mm512_permutexvar_epi16(c->exp_ctl[m], codes);
            const __m512i mag = _mm512_permutexvar_epi8(_mm512_multishift_epi64_epi8(c->digit_ctl, cm), c->mag_tab);
            const __mmask64 neg = _cvtu64_mask64(sgn[m]);
            const __m512i q8 = _mm512_loadu_si512((const void *)(x[i].qs + 64 * m));
            const __m512i xs = _mm512_mask_sub_epi8(q8, neg, zero, q8); /* |q8| <= 127: exact */
            const __m512i lsw = _mm512_mask_blend_epi32(0xFF00, _mm512_set1_epi32((int)lsd[2 * m]),
                                                        _mm512_set1_epi32((int)lsd[2 * m + 1]));
            acc = ds4_dpwssd(acc, _mm512_maddubs_epi16(mag, xs), lsw);
        }
        const float d = _cvtsh_ss(a[i].d) * x[i].d;
        sum += d * (float)_mm512_reduce_add_epi32(acc);
    }
    return 0.125f * sum;
}

static ds4_vec_dot_tile_fn base_tile; /* the level's tile, for nc > 1 */

/* ---- the GFNI variant (Intel) -------------------------------------------
 * Layout: lane g (qword g) of every vector is 32-group g of the block, and
 * chunk l (l = 0..3) holds its 8-group l: chunk l, lane g = elements
 * 32g + 8l .. 32g + 8l + 7.  The activations are transposed into that
 * layout once per block for all rows of the tile (two-source qword
 * permutes); the grid codes and sign codes of a block are already grouped
 * by g, and the group scale becomes one per lane, so one dpbusd chain over
 * the four chunks gives each lane's group sum. */

typedef struct {
    __m512i pt[8];   /* bit-plane codes of the grid entries, 64 per register:
                      * pt[0..3] byte 0 (which elements are 25), pt[4..7]
                      * byte 1 (which are 43) */
    __m512i pair_ctl; /* two rows' index bytes -> idx2 (gf_codes2) */
    __m512i sgn_ctl; /* byte l of each qword <- aux bits 7l.., the 7-bit sign code of (g, l) */
    __m512i kt;      /* gf2p8affine data: byte k = 1 << k (bit transpose) */
    __m512i kx;      /* the same with 0x7f in byte 7: bit 7 = parity, the 8th sign */
    __m512i mag[4];  /* gf2p8affine matrices: chunk l's two code bits -> magnitude */
    __m512i sbit[4]; /* 0x80 >> l in every byte: chunk l's sign bit */
} gf_ctl;

static gf_ctl gctl __attribute__((aligned(64)));
static pthread_once_t gf_once = PTHREAD_ONCE_INIT;

TGF static void gf_build(void) {
    static uint8_t plane[2][256] __attribute__((aligned(64)));
    /* magnitude of element j = 8 ^ 17·b0 ^ 35·b1, where b0 = (25), b1 = (43):
     * 8, 8 ^ 17 = 25, 8 ^ 35 = 43, an affine map over GF(2) */
    ds4_iq2xxs_grid_planes(plane[0], plane[1]);
    gf_ctl *c = &gctl;
    for (int i = 0; i < 8; i++) c->pt[i] = _mm512_load_si512((const void *)(plane[i / 4] + 64 * (i % 4)));
    uint8_t b[64];
    /* 128-bit lane L of idx2: row A's index bytes of 32-groups 2L and 2L + 1
     * (bytes 8g + 0..3 of its block), then row B's (source bytes 64 + ..) */
    for (int i = 0; i < 64; i++) {
        const int L = i / 16, j = i % 16;
        b[i] = (uint8_t)((j >= 8 ? 64 : 0) + 16 * L + (j % 8 < 4 ? j % 8 : 8 + j % 8 - 4));
    }
    c->pair_ctl = _mm512_loadu_si512(b);
    for (int i = 0; i < 64; i++) b[i] = (uint8_t)(32 + 7 * (i % 8 < 4 ? i % 8 : 0));
    c->sgn_ctl = _mm512_loadu_si512(b);
    c->kt = _mm512_set1_epi64((long long)0x8040201008040201ull);
    c->kx = _mm512_set1_epi64((long long)0x7F40201008040201ull);
    /* after the transpose, bit 7 - j of byte k is bit k of code byte j: chunk
     * l's b0 plane sits in bit 7 - 2l, its b1 plane in bit 6 - 2l.  Matrix
     * byte 7 - i selects the input bits whose parity is output bit i. */
    for (int l = 0; l < 4; l++) {
        uint64_t m = 0;
        for (int i = 0; i < 8; i++) {
            const unsigned row = ((17u >> i) & 1) << (7 - 2 * l) | ((35u >> i) & 1) << (6 - 2 * l);
            m |= (uint64_t)row << (8 * (7 - i));
        }
        c->mag[l] = _mm512_set1_epi64((long long)m);
        c->sbit[l] = _mm512_set1_epi8((char)(0x80 >> l));
    }
}

/* The activation block in chunk layout: xt[l] lane g = qword 4g + l. */
TGF static inline __attribute__((always_inline)) void gf_xt(const int8_t *q, __m512i xt[4]) {
    const __m512i z0 = _mm512_loadu_si512((const void *)q), z1 = _mm512_loadu_si512((const void *)(q + 64));
    const __m512i z2 = _mm512_loadu_si512((const void *)(q + 128)), z3 = _mm512_loadu_si512((const void *)(q + 192));
    const __m512i i01 = _mm512_set_epi64(13, 9, 5, 1, 12, 8, 4, 0), i23 = _mm512_set_epi64(15, 11, 7, 3, 14, 10, 6, 2);
    const __m512i p01 = _mm512_permutex2var_epi64(z0, i01, z1), p23 = _mm512_permutex2var_epi64(z0, i23, z1);
    const __m512i q01 = _mm512_permutex2var_epi64(z2, i01, z3), q23 = _mm512_permutex2var_epi64(z2, i23, z3);
    xt[0] = _mm512_shuffle_i64x2(p01, q01, 0x44);
    xt[1] = _mm512_shuffle_i64x2(p01, q01, 0xEE);
    xt[2] = _mm512_shuffle_i64x2(p23, q23, 0x44);
    xt[3] = _mm512_shuffle_i64x2(p23, q23, 0xEE);
}

/* The grid codes of two rows' blocks (qs va, vb) in gf_block's layout:
 * word 4g + l = bit-plane code of 8-group (g, l).  One byte permute puts
 * both rows' 64 index bytes in one register (idx2), two-register byte
 * permutes and a blend on index bit 7 look up each plane byte (one k-mask
 * for both rows: mask ops are the costly ones on Zen 5), and the byte
 * unpacks interleave the planes into row A's and row B's words. */
TGF static inline __attribute__((always_inline)) void gf_codes2(const gf_ctl *c, __m512i va, __m512i vb, __m512i *ca,
                                                                __m512i *cb) {
    const __m512i idx = _mm512_permutex2var_epi8(va, c->pair_ctl, vb);
    const __mmask64 hi = _mm512_movepi8_mask(idx); /* entries 128-255 */
    const __m512i p0 = ds4_lut256_epi8((const uint8_t *)&c->pt[0], idx, hi);
    const __m512i p1 = ds4_lut256_epi8((const uint8_t *)&c->pt[4], idx, hi);
    *ca = _mm512_unpacklo_epi8(p0, p1);
    *cb = _mm512_unpackhi_epi8(p0, p1);
}

/* One row's block (qs v, grid codes from gf_codes2): 8 qwords whose sum is
 * the exact integer block sum Σ_g (2 s_g + 1) · Σ_{j in g} grid·sign·q8
 * (|it| < 2^26).  xt: the activations in chunk layout (gf_xt). */
TGF static inline __attribute__((always_inline)) __m512i gf_block(const gf_ctl *c, __m512i v, __m512i codes,
                                                                  const __m512i xt[4]) {
    /* bit transpose (GFNI, off the shuffle port): bit 7 - j of byte k <-
     * bit k of the lane's byte j, i.e. every chunk's two planes per element */
    const __m512i tm = _mm512_gf2p8affine_epi64_epi8(c->kt, codes, 0);
    /* signs: the 7-bit codes to bytes 0-3 of each lane, then the same
     * transpose with the parity as bit 7 of each 8-group: bit 7 - l of byte
     * k is the sign of element k of chunk l */
    const __m512i sg = _mm512_gf2p8affine_epi64_epi8(c->kx, _mm512_multishift_epi64_epi8(c->sgn_ctl, v), 0);
    __m512i acc = _mm512_setzero_si512();
    _Pragma("GCC unroll 4") for (int l = 0; l < 4; l++) {
        const __m512i mag = _mm512_gf2p8affine_epi64_epi8(tm, c->mag[l], 8);
        const __mmask64 neg = _mm512_test_epi8_mask(sg, c->sbit[l]);
        acc = ds4_dpbusd(acc, mag, _mm512_mask_sub_epi8(xt[l], neg, _mm512_setzero_si512(), xt[l]));
    }
    /* lane g: the group sum (both dwords) times 2 s_g + 1 (aux bits 28-31) */
    const __m512i s = _mm512_add_epi32(acc, _mm512_srli_epi64(acc, 32));
    const __m512i ls = _mm512_or_si512(_mm512_srli_epi64(v, 59), _mm512_set1_epi64(1));
    return _mm512_mul_epi32(s, ls);
}

/* Eight blocks' lane vectors -> qword j = block j's integer sum. */
TGF static inline __attribute__((always_inline)) __m512i gf_sum8(const __m512i *p) {
    const __m512i a = _mm512_add_epi64(_mm512_unpacklo_epi64(p[0], p[1]), _mm512_unpackhi_epi64(p[0], p[1]));
    const __m512i b = _mm512_add_epi64(_mm512_unpacklo_epi64(p[2], p[3]), _mm512_unpackhi_epi64(p[2], p[3]));
    const __m512i c = _mm512_add_epi64(_mm512_unpacklo_epi64(p[4], p[5]), _mm512_unpackhi_epi64(p[4], p[5]));
    const __m512i d = _mm512_add_epi64(_mm512_unpacklo_epi64(p[6], p[7]), _mm512_unpackhi_epi64(p[6], p[7]));
    const __m512i e = _mm512_add_epi64(_mm512_shuffle_i64x2(a, b, 0x88), _mm512_shuffle_i64x2(a, b, 0xDD));
    const __m512i f = _mm512_add_epi64(_mm512_shuffle_i64x2(c, d, 0x88), _mm512_shuffle_i64x2(c, d, 0xDD));
    return _mm512_add_epi64(_mm512_shuffle_i64x2(e, f, 0x88), _mm512_shuffle_i64x2(e, f, 0xDD));
}

/* NR rows (1..4), one column.  Blocks go in batches of BW (8, or fewer
 * when the rows are shorter: 8 / BW rows then share one batch, so a short
 * row does not pay a whole reduction for a few blocks): per block the rows'
 * lane vectors are kept, then per group of 8 slots one transposing
 * reduction gives the 8 block sums, converted (exact ints, the reference's
 * rounding of (float)bsum), scaled by d_w·d_x in lanes, and added to each
 * row's sum one block at a time in order -- the reference's float steps. */
TGF static inline __attribute__((always_inline)) void gf_rows(int64_t n, const uint8_t *w, size_t ws,
                                                              const uint8_t *x, float *y, const int NR,
                                                              const int BW) {
    const gf_ctl *c = &gctl;
    const block_q8_K *xb = (const block_q8_K *)x;
    const int64_t nb = n / QK_K;
    const int RPG = 8 / BW;                 /* rows per reduction group */
    const int NG = (NR + RPG - 1) / RPG;    /* groups */
    float sum[4] = { 0.0f, 0.0f, 0.0f, 0.0f };
    __m512i p[4][8];                        /* [GRP(r)][SLOT(r, j)]: row r, block i0 + j */
#define GRP(r) ((r) / RPG)
#define SLOT(r, j) ((r) % RPG * BW + (j))
    uint16_t dw[4][8] __attribute__((aligned(16)));
    float dx[8] __attribute__((aligned(32)));
    /* prefetch distance as the Q8_0 decode kernel's (simd_avx512.c): two row
     * blocks ahead, at least ~8 KB; none for one row (vec_dot) */
    const size_t pfd = ds4_decode_pf_dist(ws, NR);
    if (NR % RPG) /* slots of rows past NR in the last group: zero, never read back */
        for (int r = NR; r < NG * RPG; r++)
            for (int j = 0; j < BW; j++) { p[GRP(r)][SLOT(r, j)] = _mm512_setzero_si512(); dw[GRP(r)][SLOT(r, j)] = 0; }
    for (int64_t i0 = 0; i0 < nb; i0 += BW) {
        const int cnt = nb - i0 < BW ? (int)(nb - i0) : BW;
        for (int j = 0; j < cnt; j++) {
            const int64_t i = i0 + j;
            __m512i xt[4];
            gf_xt(xb[i].qs, xt);
            for (int k = j; k < 8; k += BW) dx[k] = xb[i].d;
            _Pragma("GCC unroll 4") for (int r = 0; r < NR; r++) {
                const block_iq2_xxs *a = (const block_iq2_xxs *)(w + r * ws) + i;
                dw[GRP(r)][SLOT(r, j)] = a->d;
                _mm_prefetch((const char *)a + pfd, DS4_PF_STREAM); /* 66-byte blocks: two lines */
                _mm_prefetch((const char *)a + pfd + 64, DS4_PF_STREAM);
            }
            /* rows in pairs (an odd last row pairs with itself) */
            _Pragma("GCC unroll 2") for (int r = 0; r < NR; r += 2) {
                const block_iq2_xxs *a = (const block_iq2_xxs *)(w + r * ws) + i;
                const block_iq2_xxs *b = r + 1 < NR ? (const block_iq2_xxs *)(w + (r + 1) * ws) + i : a;
                const __m512i va = _mm512_loadu_si512((const void *)a->qs), vb = _mm512_loadu_si512((const void *)b->qs);
                __m512i ca, cb;
                gf_codes2(c, va, vb, &ca, &cb);
                p[GRP(r)][SLOT(r, j)] = gf_block(c, va, ca, xt);
                if (r + 1 < NR) p[GRP(r + 1)][SLOT(r + 1, j)] = gf_block(c, vb, cb, xt);
            }
        }
        for (int j = cnt; j < BW; j++) { /* a short last batch: zero slots, not added */
            for (int k = j; k < 8; k += BW) dx[k] = 0.0f;
            for (int r = 0; r < NR; r++) { p[GRP(r)][SLOT(r, j)] = _mm512_setzero_si512(); dw[GRP(r)][SLOT(r, j)] = 0; }
        }
        const __m256 dxv = _mm256_load_ps(dx);
        for (int g = 0; g < NG; g++) {
            const __m256 isum = _mm512_cvtepi64_ps(gf_sum8(p[g]));
            const __m256 d = _mm256_mul_ps(_mm256_cvtph_ps(_mm_load_si128((const __m128i *)dw[g])), dxv);
            float t[8] __attribute__((aligned(32)));
            _mm256_store_ps(t, _mm256_mul_ps(d, isum));
            for (int q = 0; q < RPG && g * RPG + q < NR; q++) {
                float s = sum[g * RPG + q];
                for (int j = 0; j < cnt; j++) s += t[q * BW + j];
                sum[g * RPG + q] = s;
            }
        }
    }
    for (int r = 0; r < NR; r++) y[r] = 0.125f * sum[r];
#undef GRP
#undef SLOT
}

/* NR rows with the batch width for their length (n / 256 blocks). */
TGF static inline __attribute__((always_inline)) void gf_rows_n(int64_t n, const uint8_t *w, size_t ws,
                                                                const uint8_t *x, float *y, const int NR) {
    const int64_t nb = n / QK_K;
    if (nb >= 8) gf_rows(n, w, ws, x, y, NR, 8);
    else if (nb >= 4) gf_rows(n, w, ws, x, y, NR, 4);
    else if (nb >= 2) gf_rows(n, w, ws, x, y, NR, 2);
    else gf_rows(n, w, ws, x, y, NR, 1);
}

TGF static float gf_dot(int64_t n, const void *w, const void *x) {
    float y;
    gf_rows_n(n, w, 0, x, &y, 1);
    return y;
}

TGF static void gf_tile(int64_t n, const void *w, size_t ws, int nr, const void *x, size_t xs, int nc, float *y,
                        int64_t ldy) {
    if (nc > 1) {
        base_tile(n, w, ws, nr, x, xs, nc, y, ldy);
        return;
    }
    switch (nr) {
    case 4: gf_rows_n(n, w, ws, x, y, 4); break;
    case 3: gf_rows_n(n, w, ws, x, y, 3); break;
    case 2: gf_rows_n(n, w, ws, x, y, 2); break;
    default: gf_rows_n(n, w, ws, x, y, 1); break;
    }
}

TGT static float iq2_xxs_dot(int64_t n, const void *w, const void *x) {
    return dot_row(&ctl, n / QK_K, w, x);
}

TGT static void iq2_xxs_tile(int64_t n, const void *w, size_t ws, int nr, const void *x, size_t xs, int nc,
                             float *y, int64_t ldy) {
    if (nc > 1) {
        base_tile(n, w, ws, nr, x, xs, nc, y, ldy);
        return;
    }
    for (int r = 0; r < nr; r++) y[r] = dot_row(&ctl, n / QK_K, (const block_iq2_xxs *)((const uint8_t *)w + r * ws), x);
}

static int has_vbmi(void) {
    return __builtin_cpu_supports("avx512vbmi") && __builtin_cpu_supports("avx512bitalg") &&
           __builtin_cpu_supports("avx512vnni");
}
static int has_gfni(void) {
    return __builtin_cpu_supports("avx512vbmi") && __builtin_cpu_supports("gfni") &&
           __builtin_cpu_supports("avx512vnni");
}

/* Puts the named variant into row (an avx512 IQ2_XXS row); its tile keeps
 * serving nc > 1.  0, or -1 if unknown or the CPU lacks the variant's ISA. */
static int put(const char *name, ds4_type_traits *row) {
    __builtin_cpu_init();
    const int gf = strcmp(name, "gfni") == 0;
    if (!(gf ? has_gfni() : strcmp(name, "vbmi") == 0 && has_vbmi())) return -1;
    if (gf) pthread_once(&gf_once, gf_build);
    else pthread_once(&code_once, build_all);
    if (row->vec_dot_tile != iq2_xxs_tile && row->vec_dot_tile != gf_tile) base_tile = row->vec_dot_tile;
    if (!base_tile) return -1;
    row->vec_dot = gf ? gf_dot : iq2_xxs_dot;
    row->vec_dot_tile = gf ? gf_tile : iq2_xxs_tile;
    return 0;
}

int ds4_iq2_avx512_variant(const char *name, ds4_type_traits *row) { return put(name, row); }

void ds4_simd_install_avx512_vbmi(ds4_type_traits *t) {
    __builtin_cpu_init();
    /* GFNI wherever the CPU has it (faster on Emerald Rapids and Zen 5,
     * header comment), else VBMI */
    if (put("gfni", &t[DS4_TYPE_IQ2_XXS]) == 0) return;
    put("vbmi", &t[DS4_TYPE_IQ2_XXS]);
}

#else

#include "quant/simd_int.h"
void ds4_simd_install_avx512_vbmi(ds4_type_traits *t) { (void)t; }
int ds4_iq2_avx512_variant(const char *name, ds4_type_traits *row) { (void)name; (void)row; return -1; }

#endif
