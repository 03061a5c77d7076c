/* IQ2_XXS · Q8_K dot for AVX-512 CPUs with VBMI and BITALG (Ice Lake, Zen 4
 * and later): the decode (matvec) kernel of the q2 recipe's routed experts.
 *
 * Why a second kernel: the base avx512 kernel (simd_avx512.c) looks up the
 * 32 grid entries and 32 sign patterns of a block with scalar table loads,
 * ~200 instructions per 66-byte block, so a decode step reads IQ2_XXS
 * weights at a third of memory speed.  Here every step stays in vector
 * registers:
 *
 *   grid    each of the 256 grid entries has 8 magnitudes in {8, 25, 43}; we
 *           store it as a 16-bit code of 8 two-bit digits.  The block's 32
 *           indices become 32 word lanes, looked up with four two-register
 *           word permutes (64 entries each) and two blends on index bits 6-7;
 *           a word permute puts chunk q's code in qword q, a multishift
 *           pulls digit j into byte j and a byte permute maps digits to
 *           magnitudes.
 *   signs   the 7-bit codes come out of the aux words with one multishift;
 *           the eighth bit is their parity (even), via a byte popcount.  The
 *           32 sign bytes, stored, read back as four 64-bit masks that negate
 *           the activations (loads are cheaper than more shuffles here).
 *   sums    maddubs(magnitudes, ±x) then vpdpwssd with the group scales
 *           2s + 1 (broadcast from a stored copy), as the base kernel: exact
 *           int32 block sums.
 *
 * Measured on Zen 5 (one thread, L3-resident rows): 7.4 ns per block against
 * 15 ns for the AVX2 kernel; unrolling the chunk loop or interleaving two
 * rows made it slower.
 *
 * The float step per block, sum += (d_w · d_x) · (float)isum, and the final
 * 0.125 · sum are the reference's (quant_ref.c), so the result is
 * bit-identical to it and to the base kernel; tiles of more than one
 * column keep the base kernel's tile (it reuses weights across columns). */
#if defined(__x86_64__)

#include "quant/simd_int.h"

#include <immintrin.h>
#include <pthread.h>
#include <string.h>

#include "quant/iq2_tables.h"

#define TGT __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512vbmi,avx512bitalg,f16c")))

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

TGT static inline __m512i lookup_codes(const iq2_ctl *c, __m512i idx) {
    const __m512i t0 = _mm512_permutex2var_epi16(c->tab[0], idx, c->tab[1]);
    const __m512i t1 = _mm512_permutex2var_epi16(c->tab[2], idx, c->tab[3]);
    const __m512i t2 = _mm512_permutex2var_epi16(c->tab[4], idx, c->tab[5]);
    const __m512i t3 = _mm512_permutex2var_epi16(c->tab[6], idx, c->tab[7]);
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
        const __m512i codes = lookup_codes(c, _mm512_permutexvar_epi8(c->idx_ctl, v));
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
            acc = _mm512_dpwssd_epi32(acc, _mm512_maddubs_epi16(mag, xs), lsw);
        }
        const float d = _cvtsh_ss(a[i].d) * x[i].d;
        sum += d * (float)_mm512_reduce_add_epi32(acc);
    }
    return 0.125f * sum;
}

TGT static float iq2_xxs_dot(int64_t n, const void *w, const void *x) {
    return dot_row(&ctl, n / QK_K, w, x);
}

static ds4_vec_dot_tile_fn base_tile; /* the level's tile, for nc > 1 */

TGT static void iq2_xxs_tile(int64_t n, const void *w, size_t ws, int nr, const void *x, size_t xs, int nc,
                             float *y, int64_t ldy) {
    if (nc > 1) {
        base_tile(n, w, ws, nr, x, xs, nc, y, ldy);
        return;
    }
    for (int r = 0; r < nr; r++) y[r] = dot_row(&ctl, n / QK_K, (const block_iq2_xxs *)((const uint8_t *)w + r * ws), x);
}

void ds4_simd_install_avx512_vbmi(ds4_type_traits *t) {
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512vbmi") || !__builtin_cpu_supports("avx512bitalg") ||
        !__builtin_cpu_supports("avx512vnni"))
        return;
    pthread_once(&code_once, build_all);
    if (t[DS4_TYPE_IQ2_XXS].vec_dot_tile != iq2_xxs_tile) base_tile = t[DS4_TYPE_IQ2_XXS].vec_dot_tile;
    if (!base_tile) return;
    t[DS4_TYPE_IQ2_XXS].vec_dot = iq2_xxs_dot;
    t[DS4_TYPE_IQ2_XXS].vec_dot_tile = iq2_xxs_tile;
}

#else

#include "quant/simd_int.h"
void ds4_simd_install_avx512_vbmi(ds4_type_traits *t) { (void)t; }

#endif
