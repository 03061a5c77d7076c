/* Decode (one-column) Q2_K · Q8_K kernel for the avx2 level: dec_avx512.c's
 * scheme on ymm registers, for the q2 recipe's routed down experts.  Two
 * variants: "vnni" (AVX-VNNI: Alder Lake and later, Zen 5) and "madd" (any
 * AVX2 CPU); the level installs the first the CPU runs, and
 * ds4_dec_avx2_q2k_variant() (simd_int.h) lets the tests run both.
 *
 * Contract: as simd.h, bit-identical to quant_ref.c (exact int32 isum and
 * msum per block, then the reference's float step per block, in block
 * order).  Tiles with nc > 1 (prefill without a panel kernel) keep the
 * level's k_q2_K tile.
 *
 * Per block and row (4 rows per call, as ops.c hands decode tiles):
 *   planes  half h of the 64 quant bytes (32 bytes, elements 128h + 32j +
 *           0..31 in plane j) is one ymm; plane j's 2-bit values are
 *           (v >> 2j) & 3, and each 16-byte lane of it is one 16-element
 *           sub-block (8h + 2j + lane).
 *   scales  q (0..3) times the sub-block scale (0..15) fits a byte: per
 *           half one table ymm holds {0, s, 2s, 3s} in dword j of lane L
 *           for sub-block 8h + 2j + L (one byte shuffle of the 16 scales
 *           and one vpmullw by 256 | 770 << 16), so a byte shuffle with
 *           index q | 4j yields q·s, and one u8·s8 dot per plane sums
 *           Σ s·q·x exactly: vpdpbusd (vnni), or vpmaddubsw (pairs below
 *           2·45·128) summed for two planes and widened by vpmaddwd (madd).
 *   mins    Σ m_j·bsum_j with one vpmaddwd per row.
 *   reduce  the 4 rows' isum and msum vectors go through one vphaddd tree
 *           into [i0 m0 i1 m1 i2 m2 i3 m3]; the float step runs for the 4
 *           rows in lanes with the reference's operations and order.
 * Zen 5, avx2 level, one thread, rows in L2 (build/bench/kernels 64 N
 * q2_K, 4-row one-column tiles, the vnni variant): 0.0322 -> 0.0283 ns an
 * element at N = 512, 0.0291 -> 0.0255 at 4096 against simd_avx2.c's
 * k_q2_K (twice the AVX-512 kernel's 0.0109: half the lanes, and the
 * table's vpmullw per half); small-q2 decode down phase at DS4_SIMD=avx2,
 * 2 threads, 3 interleaved runs: 722 -> 708 us a token. */
#if defined(__x86_64__)

#include "quant/simd_int.h"

#include <immintrin.h>
#include <string.h>

#include "quant/dpbusd.h"

#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif

#define TGT __attribute__((target("avx2,fma,f16c")))
#define TGV __attribute__((target("avx2,fma,f16c,avxvnni")))

/* Byte shuffle of the 16 scale bytes (in both lanes): for half h, lane L,
 * dword j <- the byte of sub-block 8h + 2j + L in bytes 0 and 2 (0x80:
 * zero bytes 1 and 3). */
static const uint8_t q2k_ctl[2][32] __attribute__((aligned(32))) = {
    { 0, 128, 0, 128, 2, 128, 2, 128, 4, 128, 4, 128, 6, 128, 6, 128,
      1, 128, 1, 128, 3, 128, 3, 128, 5, 128, 5, 128, 7, 128, 7, 128 },
    { 8, 128, 8, 128, 10, 128, 10, 128, 12, 128, 12, 128, 14, 128, 14, 128,
      9, 128, 9, 128, 11, 128, 11, 128, 13, 128, 13, 128, 15, 128, 15, 128 },
};

/* acc + Σ of p (u8 q·s) times x (s8) over plane pairs: DOT2 adds planes
 * (p0, x0) and (p1, x1). */
#define DOT2_VNNI(acc, p0, x0, p1, x1) ds4_dpbusd_vex(ds4_dpbusd_vex(acc, p0, x0), p1, x1)
#define DOT2_MADD(acc, p0, x0, p1, x1)                                                                   \
    _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(p0, x0),                 \
                                                             _mm256_maddubs_epi16(p1, x1)),              \
                                            _mm256_set1_epi16(1)))

/* Four rows a[0..3], one column x, nb blocks: out[r] = the reference's sum;
 * pfo: prefetch offset (the next row block). */
#define DEF_Q2K_ROWS4(NAME, ATTR, DOT2)                                                                   \
    ATTR static void NAME(int64_t nb, const block_q2_K *const a[4], size_t pfo, const block_q8_K *x,       \
                          float out[4]) {                                                                 \
        const __m256i m3 = _mm256_set1_epi8(3), m4 = _mm256_set1_epi8(0x0f);                              \
        const __m256i mulw = _mm256_set1_epi32(770 << 16 | 256);                                          \
        const __m256i ctl0 = _mm256_load_si256((const __m256i *)(const void *)q2k_ctl[0]);                \
        const __m256i ctl1 = _mm256_load_si256((const __m256i *)(const void *)q2k_ctl[1]);                \
        const __m256i c4 = _mm256_set1_epi8(4), c8 = _mm256_set1_epi8(8), c12 = _mm256_set1_epi8(12);     \
        __m256 sum = _mm256_setzero_ps();                                                                 \
        for (int64_t i = 0; i < nb; i++) {                                                                \
            const block_q8_K *xb = x + i;                                                                 \
            __m256i xq[2][4];                                                                             \
            for (int h = 0; h < 2; h++)                                                                   \
                for (int j = 0; j < 4; j++)                                                               \
                    xq[h][j] = _mm256_loadu_si256((const __m256i *)(const void *)(xb->qs + 128 * h + 32 * j)); \
            const __m256i bs = _mm256_loadu_si256((const __m256i *)(const void *)xb->bsums);              \
            __m256i v8[8];                                                                                \
            uint32_t dd[4];                                                                               \
            for (int r = 0; r < 4; r++) {                                                                 \
                const block_q2_K *b = a[r] + i;                                                           \
                _mm_prefetch((const char *)b + pfo, DS4_PF_STREAM);                                       \
                _mm_prefetch((const char *)b + pfo + 63, DS4_PF_STREAM);                                  \
                const __m128i s16 = _mm_loadu_si128((const __m128i *)(const void *)b->scales);           \
                const __m256i s4 = _mm256_and_si256(_mm256_broadcastsi128_si256(s16), m4);                \
                __m256i acc = _mm256_setzero_si256();                                                     \
                for (int h = 0; h < 2; h++) {                                                             \
                    const __m256i tab = _mm256_mullo_epi16(_mm256_shuffle_epi8(s4, h ? ctl1 : ctl0), mulw); \
                    const __m256i v = _mm256_loadu_si256((const __m256i *)(const void *)(b->qs + 32 * h)); \
                    const __m256i i0 = _mm256_and_si256(v, m3);                                           \
                    const __m256i i1 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v, 2), m3), c4); \
                    const __m256i i2 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v, 4), m3), c8); \
                    const __m256i i3 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v, 6), m3), c12); \
                    acc = DOT2(acc, _mm256_shuffle_epi8(tab, i0), xq[h][0], _mm256_shuffle_epi8(tab, i1), xq[h][1]); \
                    acc = DOT2(acc, _mm256_shuffle_epi8(tab, i2), xq[h][2], _mm256_shuffle_epi8(tab, i3), xq[h][3]); \
                }                                                                                         \
                v8[2 * r] = acc;                                                                          \
                /* mins: the whole scale byte widened to a word, >> 4 */                                  \
                v8[2 * r + 1] = _mm256_madd_epi16(bs, _mm256_srli_epi16(_mm256_cvtepu8_epi16(s16), 4));   \
                memcpy(&dd[r], &b->d, 4); /* d, dmin */                                                   \
            }                                                                                             \
            /* [i0 m0 i1 m1 i2 m2 i3 m3]: exact int32 sums, any order */                                  \
            const __m256i t0 = _mm256_hadd_epi32(v8[0], v8[1]), t1 = _mm256_hadd_epi32(v8[2], v8[3]);     \
            const __m256i t2 = _mm256_hadd_epi32(v8[4], v8[5]), t3 = _mm256_hadd_epi32(v8[6], v8[7]);     \
            const __m256i u0 = _mm256_hadd_epi32(t0, t1), u1 = _mm256_hadd_epi32(t2, t3);                 \
            const __m256i im = _mm256_add_epi32(_mm256_permute2x128_si256(u0, u1, 0x20),                  \
                                                _mm256_permute2x128_si256(u0, u1, 0x31));                 \
            /* reference: dall = x.d·d, dmin = x.d·dmin, sum += dall·isum - dmin·msum */                  \
            const __m256 dv = _mm256_mul_ps(_mm256_set1_ps(xb->d),                                        \
                                            _mm256_cvtph_ps(_mm_setr_epi32((int)dd[0], (int)dd[1], (int)dd[2], (int)dd[3]))); \
            const __m256 p = _mm256_mul_ps(dv, _mm256_cvtepi32_ps(im));                                   \
            sum = _mm256_add_ps(sum, _mm256_sub_ps(p, _mm256_movehdup_ps(p)));                            \
        }                                                                                                 \
        float s[8];                                                                                       \
        _mm256_storeu_ps(s, sum);                                                                         \
        for (int r = 0; r < 4; r++) out[r] = s[2 * r];                                                    \
    }
DEF_Q2K_ROWS4(q2k_rows4_vnni, TGV, DOT2_VNNI)
DEF_Q2K_ROWS4(q2k_rows4_madd, TGT, DOT2_MADD)

typedef void (*q2k_rows4_fn)(int64_t nb, const block_q2_K *const a[4], size_t pfo, const block_q8_K *x,
                             float out[4]);

static ds4_vec_dot_tile_fn q2k_base_tile; /* the level's tile, for nc > 1 */

static void q2k_tile_with(q2k_rows4_fn rows4, int64_t n, const void *w, size_t ws, int nr, const void *x, size_t xs,
                          int nc, float *y, int64_t ldy) {
    if (nc > 1) {
        q2k_base_tile(n, w, ws, nr, x, xs, nc, y, ldy);
        return;
    }
    const block_q2_K *a[4];
    for (int r = 0; r < 4; r++) a[r] = (const block_q2_K *)((const uint8_t *)w + (size_t)(r < nr ? r : nr - 1) * ws);
    float out[4];
    rows4(n / QK_K, a, ds4_decode_pf_dist(ws, nr), x, out);
    for (int r = 0; r < nr; r++) y[r] = out[r];
}

static float q2k_dot_with(q2k_rows4_fn rows4, int64_t n, const void *w, const void *x) {
    const block_q2_K *a[4] = { w, w, w, w };
    float out[4];
    rows4(n / QK_K, a, 0, x, out);
    return out[0];
}

static void q2k_tile_vnni(int64_t n, const void *w, size_t ws, int nr, const void *x, size_t xs, int nc, float *y,
                          int64_t ldy) {
    q2k_tile_with(q2k_rows4_vnni, n, w, ws, nr, x, xs, nc, y, ldy);
}
static void q2k_tile_madd(int64_t n, const void *w, size_t ws, int nr, const void *x, size_t xs, int nc, float *y,
                          int64_t ldy) {
    q2k_tile_with(q2k_rows4_madd, n, w, ws, nr, x, xs, nc, y, ldy);
}
static float q2k_dot_vnni(int64_t n, const void *w, const void *x) { return q2k_dot_with(q2k_rows4_vnni, n, w, x); }
static float q2k_dot_madd(int64_t n, const void *w, const void *x) { return q2k_dot_with(q2k_rows4_madd, n, w, x); }

int ds4_dec_avx2_q2k_variant(int vnni, ds4_type_traits *row) {
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma") || !__builtin_cpu_supports("f16c"))
        return -1;
    if (vnni && !__builtin_cpu_supports("avxvnni")) return -1;
    if (row->vec_dot_tile != q2k_tile_vnni && row->vec_dot_tile != q2k_tile_madd) q2k_base_tile = row->vec_dot_tile;
    if (!q2k_base_tile) return -1;
    row->vec_dot = vnni ? q2k_dot_vnni : q2k_dot_madd;
    row->vec_dot_tile = vnni ? q2k_tile_vnni : q2k_tile_madd;
    return 0;
}

void ds4_simd_install_avx2_dec(ds4_type_traits *table) {
    if (ds4_dec_avx2_q2k_variant(1, &table[DS4_TYPE_Q2_K]) != 0) ds4_dec_avx2_q2k_variant(0, &table[DS4_TYPE_Q2_K]);
}

#else

#include "quant/simd_int.h"
void ds4_simd_install_avx2_dec(ds4_type_traits *table) { (void)table; }
int ds4_dec_avx2_q2k_variant(int vnni, ds4_type_traits *row) { (void)vnni; (void)row; return -1; }

#endif
