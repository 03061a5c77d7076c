/* Tests for src/quant: scalar format conversions at specific bit patterns and
 * tie points, hand-built blocks of every quantized type decoded against values
 * worked out from the format description (MODEL.md §13.1), the IQ2_XXS tables
 * against a fingerprint of ggml's, quantize/dequantize error bounds on
 * Gaussian data, dot kernels against a float64 reference, importance
 * weighting, determinism, and the size/name helpers. */
#include "test.h"

#include "quant/iq2_tables.h"
#include "quant/quant.h"

#include <stdint.h>

/* ---- deterministic data ---------------------------------------------- */

#include "test_rng.h"
static float *gauss_vec(int64_t n, uint64_t seed) {
    float *v = malloc((size_t)n * sizeof *v);
    rng_seed(seed);
    for (int64_t i = 0; i < n; i++) v[i] = rng_gauss();
    return v;
}

static uint32_t fbits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float bitsf(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

/* ---- scalar conversions ---------------------------------------------- */

TEST(fp16) {
    CHECK(ds4_fp16_to_f32(0x3c00) == 1.0f);
    CHECK(ds4_fp16_to_f32(0xc000) == -2.0f);
    CHECK(ds4_fp16_to_f32(0x0001) == 0x1p-24f);   /* smallest subnormal */
    CHECK(ds4_fp16_to_f32(0x03ff) == 1023 * 0x1p-24f);
    CHECK(ds4_fp16_to_f32(0x0400) == 0x1p-14f);   /* smallest normal */
    CHECK(ds4_fp16_to_f32(0x7bff) == 65504.0f);
    CHECK(isinf(ds4_fp16_to_f32(0x7c00)) && ds4_fp16_to_f32(0x7c00) > 0);
    CHECK(isinf(ds4_fp16_to_f32(0xfc00)) && ds4_fp16_to_f32(0xfc00) < 0);
    CHECK(isnan(ds4_fp16_to_f32(0x7e00)));
    CHECK(fbits(ds4_fp16_to_f32(0x8000)) == 0x80000000u);

    CHECK_EQ_INT(ds4_f32_to_fp16(1.0f), 0x3c00);
    CHECK_EQ_INT(ds4_f32_to_fp16(-0.0f), 0x8000);
    CHECK_EQ_INT(ds4_f32_to_fp16(65504.0f), 0x7bff);
    CHECK_EQ_INT(ds4_f32_to_fp16(65519.0f), 0x7bff);     /* below the midpoint */
    CHECK_EQ_INT(ds4_f32_to_fp16(65520.0f), 0x7c00);     /* midpoint, odd side: inf */
    CHECK_EQ_INT(ds4_f32_to_fp16(1e10f), 0x7c00);
    CHECK_EQ_INT(ds4_f32_to_fp16(-INFINITY), 0xfc00);
    CHECK_EQ_INT(ds4_f32_to_fp16(1.0f + 0x1p-11f), 0x3c00);      /* tie -> even */
    CHECK_EQ_INT(ds4_f32_to_fp16(1.0f + 3 * 0x1p-11f), 0x3c02);  /* tie -> even (up) */
    CHECK_EQ_INT(ds4_f32_to_fp16(1.0f + 0x1p-11f + 0x1p-20f), 0x3c01);
    CHECK_EQ_INT(ds4_f32_to_fp16(0x1p-24f), 0x0001);
    CHECK_EQ_INT(ds4_f32_to_fp16(0x1p-25f), 0x0000);             /* subnormal tie -> 0 */
    CHECK_EQ_INT(ds4_f32_to_fp16(3 * 0x1p-25f), 0x0002);         /* 1.5 ulp -> 2 */
    CHECK_EQ_INT(ds4_f32_to_fp16(0x1p-14f - 0x1p-26f), 0x0400);  /* rounds up to normal */
    CHECK_EQ_INT(ds4_f32_to_fp16(1e-10f), 0x0000);
    uint16_t hn = ds4_f32_to_fp16(NAN);
    CHECK((hn & 0x7c00) == 0x7c00 && (hn & 0x3ff) != 0);

    /* every non-NaN half survives f16 -> f32 -> f16 */
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) continue;
        if (ds4_f32_to_fp16(ds4_fp16_to_f32((ds4_fp16)h)) != h) bad++;
    }
    CHECK_EQ_INT(bad, 0);
}

TEST(bf16) {
    CHECK(ds4_bf16_to_f32(0x3f80) == 1.0f);
    CHECK(ds4_bf16_to_f32(0xc040) == -3.0f);
    CHECK_EQ_INT(ds4_f32_to_bf16(1.0f), 0x3f80);
    CHECK_EQ_INT(ds4_f32_to_bf16(1.0f + 0x1p-8f), 0x3f80);          /* tie -> even */
    CHECK_EQ_INT(ds4_f32_to_bf16(1.0f + 3 * 0x1p-8f), 0x3f82);      /* tie -> even (up) */
    CHECK_EQ_INT(ds4_f32_to_bf16(1.0f + 0x1p-8f + 0x1p-20f), 0x3f81);
    CHECK_EQ_INT(ds4_f32_to_bf16(INFINITY), 0x7f80);
    CHECK_EQ_INT(ds4_f32_to_bf16(3.4e38f), 0x7f80);                 /* rounds past max */
    uint16_t bn = ds4_f32_to_bf16(bitsf(0x7f800001u));              /* NaN whose payload truncates to 0 */
    CHECK((bn & 0x7f80) == 0x7f80 && (bn & 0x7f) != 0);
    CHECK(isnan(ds4_bf16_to_f32(bn)));
    int bad = 0;
    for (uint32_t b = 0; b < 65536; b++) {
        if ((b & 0x7f80) == 0x7f80 && (b & 0x7f)) continue;
        if (ds4_f32_to_bf16(ds4_bf16_to_f32((uint16_t)b)) != b) bad++;
    }
    CHECK_EQ_INT(bad, 0);
}

TEST(e8m0) {
    CHECK(ds4_e8m0_to_f32(127) == 1.0f);
    CHECK(ds4_e8m0_to_f32(128) == 2.0f);
    CHECK(ds4_e8m0_to_f32(120) == 0x1p-7f);
    CHECK(ds4_e8m0_to_f32(1) == 0x1p-126f);
    CHECK(ds4_e8m0_to_f32(254) == 0x1p127f);
    CHECK_EQ_INT(fbits(ds4_e8m0_to_f32(0)), 0x00400000u);   /* denormal 2^-127 */
}

TEST(fp8_e4m3) {
    CHECK(ds4_fp8_e4m3_to_f32(0x38) == 1.0f);
    CHECK(ds4_fp8_e4m3_to_f32(0xb8) == -1.0f);
    CHECK(ds4_fp8_e4m3_to_f32(0x7e) == 448.0f);
    CHECK(ds4_fp8_e4m3_to_f32(0xfe) == -448.0f);
    CHECK(ds4_fp8_e4m3_to_f32(0x01) == 0x1p-9f);
    CHECK(ds4_fp8_e4m3_to_f32(0x07) == 7 * 0x1p-9f);
    CHECK(ds4_fp8_e4m3_to_f32(0x08) == 0x1p-6f);
    CHECK(ds4_fp8_e4m3_to_f32(0x3d) == 1.625f);
    CHECK(ds4_fp8_e4m3_to_f32(0x00) == 0.0f);
    CHECK(ds4_fp8_e4m3_to_f32(0x7f) == 0.0f);   /* NaN codes decode to 0 */
    CHECK(ds4_fp8_e4m3_to_f32(0xff) == 0.0f);

    /* every finite code is a fixed point of the rounding */
    int bad = 0;
    for (int b = 0; b < 256; b++) {
        if ((b & 0x7f) == 0x7f) continue;
        float v = ds4_fp8_e4m3_to_f32((uint8_t)b);
        if (ds4_round_fp8_e4m3(v) != v) bad++;
    }
    CHECK_EQ_INT(bad, 0);
    CHECK(ds4_round_fp8_e4m3(1.0f + 1.0f / 16) == 1.0f);      /* tie: mantissa 0 is even */
    CHECK(ds4_round_fp8_e4m3(1.0f + 3.0f / 16) == 1.25f);     /* tie: mantissa 2 is even */
    CHECK(ds4_round_fp8_e4m3(1.0f + 1.0f / 16 + 1e-4f) == 1.125f);
    CHECK(ds4_round_fp8_e4m3(-1.0f - 3.0f / 16) == -1.25f);
    CHECK(ds4_round_fp8_e4m3(0.5f * 0x1p-9f) == 0.0f);        /* subnormal tie -> 0 */
    CHECK(ds4_round_fp8_e4m3(1.5f * 0x1p-9f) == 2 * 0x1p-9f); /* subnormal tie -> even */
    CHECK(ds4_round_fp8_e4m3(7.5f * 0x1p-9f) == 0x1p-6f);     /* up into the normals */
    CHECK(ds4_round_fp8_e4m3(0.6f * 0x1p-9f) == 0x1p-9f);
    CHECK(ds4_round_fp8_e4m3(460.0f) == 448.0f);
    CHECK(ds4_round_fp8_e4m3(1e9f) == 448.0f);                 /* saturates */
    CHECK(ds4_round_fp8_e4m3(-1e9f) == -448.0f);
    CHECK(ds4_round_fp8_e4m3(-INFINITY) == -448.0f);
    CHECK(ds4_round_fp8_e4m3(300.0f) == 288.0f);               /* step 32 above 256 */
}

TEST(fp4_e2m1) {
    static const float want[16] = { 0, 0.5f, 1, 1.5f, 2, 3, 4, 6, -0.0f, -0.5f, -1, -1.5f, -2, -3, -4, -6 };
    for (int i = 0; i < 16; i++) CHECK(ds4_fp4_e2m1_to_f32((uint8_t)i) == want[i]);
    CHECK(ds4_fp4_e2m1_to_f32(0x17) == 6.0f); /* only the low nibble counts */
    /* ties go to the even code: 0 | 0.5 -> 0, 0.5 | 1 -> 1, 1 | 1.5 -> 1,
     * 1.5 | 2 -> 2, 2 | 3 -> 2, 3 | 4 -> 4, 4 | 6 -> 4 */
    CHECK(ds4_round_fp4_e2m1(0.25f) == 0.0f);
    CHECK(ds4_round_fp4_e2m1(0.75f) == 1.0f);
    CHECK(ds4_round_fp4_e2m1(1.25f) == 1.0f);
    CHECK(ds4_round_fp4_e2m1(1.75f) == 2.0f);
    CHECK(ds4_round_fp4_e2m1(2.5f) == 2.0f);
    CHECK(ds4_round_fp4_e2m1(3.5f) == 4.0f);
    CHECK(ds4_round_fp4_e2m1(5.0f) == 4.0f);
    CHECK(ds4_round_fp4_e2m1(-5.0f) == -4.0f);
    CHECK(ds4_round_fp4_e2m1(5.01f) == 6.0f);
    CHECK(ds4_round_fp4_e2m1(0.26f) == 0.5f);
    CHECK(ds4_round_fp4_e2m1(-0.8f) == -1.0f);
    CHECK(ds4_round_fp4_e2m1(7.0f) == 6.0f);
    CHECK(ds4_round_fp4_e2m1(-100.0f) == -6.0f);
    for (int i = 0; i < 16; i++) CHECK(ds4_round_fp4_e2m1(want[i]) == want[i]);
}

/* ---- hand-built blocks ------------------------------------------------ */

TEST(q8_0_block) {
    block_q8_0 b;
    b.d = 0x3800; /* 0.5 */
    for (int j = 0; j < 32; j++) b.qs[j] = (int8_t)(j * 8 - 128);
    float y[32];
    ds4_type_traits_get(DS4_TYPE_Q8_0)->to_float(&b, y, 32);
    CHECK(y[0] == -64.0f);
    CHECK(y[16] == 0.0f);
    CHECK(y[31] == 60.0f);
    for (int j = 0; j < 32; j++) CHECK(y[j] == 0.5f * (float)(j * 8 - 128));

    /* encoder: amax 127 gives d = 1 and the integers back unchanged;
     * x.5 rounds away from zero (roundf) as ggml's reference does */
    float x[32];
    for (int j = 0; j < 32; j++) x[j] = (float)(j - 16);
    x[0] = 127.0f;
    x[1] = 2.5f;
    x[2] = -2.5f;
    ds4_type_traits_get(DS4_TYPE_Q8_0)->from_float(x, &b, 32);
    CHECK_EQ_INT(b.d, 0x3c00);
    CHECK_EQ_INT(b.qs[0], 127);
    CHECK_EQ_INT(b.qs[1], 3);
    CHECK_EQ_INT(b.qs[2], -3);
    CHECK_EQ_INT(b.qs[20], 4);
}

TEST(q4_K_block) {
    /* sub-block j: value = d*sc[j]*q - dmin*m[j] with d = 1, dmin = 0.5 */
    static const uint8_t sc[8] = { 1, 2, 3, 4, 33, 40, 50, 63 };
    static const uint8_t mn[8] = { 0, 1, 2, 3, 20, 45, 60, 17 };
    block_q4_K b;
    b.d = 0x3c00;
    b.dmin = 0x3800;
    /* packing from the format description: 6-bit values for j < 4 in bytes
     * j (scale) and j+4 (min); for j >= 4 low nibbles in byte j+4, high two
     * bits in bits 6..7 of bytes j-4 (scale) and j (min) */
    for (int j = 0; j < 4; j++) {
        b.scales[j] = (uint8_t)(sc[j] | ((sc[j + 4] >> 4) << 6));
        b.scales[j + 4] = (uint8_t)(mn[j] | ((mn[j + 4] >> 4) << 6));
        b.scales[j + 8] = (uint8_t)((sc[j + 4] & 15) | ((mn[j + 4] & 15) << 4));
    }
    /* the same bytes, written out: a literal check of the packing above */
    static const uint8_t want_bytes[12] = { 0x81, 0x82, 0xc3, 0xc4, 0x40, 0x81, 0xc2, 0x43,
                                            0x41, 0xd8, 0xc2, 0x1f };
    CHECK(memcmp(b.scales, want_bytes, 12) == 0);
    /* element e lives in byte 32*(e/64) + e%32, low nibble if e%64 < 32 */
    uint8_t q[256];
    for (int e = 0; e < 256; e++) q[e] = (uint8_t)((e * 7 + 3) % 16);
    memset(b.qs, 0, sizeof b.qs);
    for (int e = 0; e < 256; e++) b.qs[32 * (e / 64) + e % 32] |= (uint8_t)(q[e] << (e % 64 < 32 ? 0 : 4));
    float y[256];
    ds4_type_traits_get(DS4_TYPE_Q4_K)->to_float(&b, y, 256);
    int bad = 0;
    for (int e = 0; e < 256; e++)
        if (y[e] != (float)sc[e / 32] * q[e] - 0.5f * mn[e / 32]) bad++;
    CHECK_EQ_INT(bad, 0);
    /* spot values: e=0: q=3, 1*3 - 0 = 3; e=40: q=(283%16)=11, 2*11 - 0.5 = 21.5;
     * e=255: q=(1788%16)=12, 63*12 - 8.5 = 747.5; e=130: q=(913%16)=1, 33 - 10 = 23 */
    CHECK(y[0] == 3.0f);
    CHECK(y[40] == 21.5f);
    CHECK(y[255] == 747.5f);
    CHECK(y[130] == 23.0f);
}

TEST(q2_K_block) {
    /* group g (16 values): value = d*(s&15)*q - dmin*(s>>4), d = 0.25, dmin = 1 */
    block_q2_K b;
    b.d = 0x3400;
    b.dmin = 0x3c00;
    for (int g = 0; g < 16; g++) b.scales[g] = (uint8_t)((g & 15) | ((15 - g) << 4));
    /* element e: half h = e/128, r = e%128; byte 32h + r%32, bits 2*(r/32) */
    uint8_t q[256];
    for (int e = 0; e < 256; e++) q[e] = (uint8_t)((e * 5 + e / 7) & 3);
    memset(b.qs, 0, sizeof b.qs);
    for (int e = 0; e < 256; e++) b.qs[32 * (e / 128) + e % 32] |= (uint8_t)(q[e] << (2 * ((e % 128) / 32)));
    float y[256];
    ds4_type_traits_get(DS4_TYPE_Q2_K)->to_float(&b, y, 256);
    int bad = 0;
    for (int e = 0; e < 256; e++)
        if (y[e] != 0.25f * (float)(e / 16) * q[e] - (float)(15 - e / 16)) bad++;
    CHECK_EQ_INT(bad, 0);
    /* a literal block: qs[0] = 0b11100100 holds q = 0,1,2,3 for elements
     * 0, 32, 64, 96; scales 0x21 / 0x43 / 0x65 / 0x87 for groups 0, 2, 4, 6 */
    memset(&b, 0, sizeof b);
    b.d = 0x3c00; /* 1.0 */
    b.dmin = 0x3800; /* 0.5 */
    b.qs[0] = 0xe4;
    b.scales[0] = 0x21; b.scales[2] = 0x43; b.scales[4] = 0x65; b.scales[6] = 0x87;
    ds4_type_traits_get(DS4_TYPE_Q2_K)->to_float(&b, y, 256);
    CHECK(y[0] == 1 * 0 - 0.5f * 2);
    CHECK(y[32] == 3 * 1 - 0.5f * 4);
    CHECK(y[64] == 5 * 2 - 0.5f * 6);
    CHECK(y[96] == 7 * 3 - 0.5f * 8);
    CHECK(y[1] == -1.0f);
}

TEST(iq2_xxs_tables) {
    /* FNV-1a over the grid bytes; the constant was computed from ggml's
     * iq2xxs_grid, so any edited digit shows up here */
    uint64_t h = 0xcbf29ce484222325ull;
    int bad = 0;
    for (int g = 0; g < 256; g++)
        for (int j = 0; j < 8; j++) {
            unsigned v = (unsigned)((ds4_iq2xxs_grid[g] >> (8 * j)) & 0xff);
            if (v != 0x08 && v != 0x19 && v != 0x2b) bad++;
            h = (h ^ v) * 0x100000001b3ull;
        }
    CHECK_EQ_INT(bad, 0);
    CHECKF(h == 0xbb4ee025b5ac6e8eull, "grid hash %016llx", (unsigned long long)h);
    CHECK(ds4_iq2xxs_grid[0] == 0x0808080808080808ull);
    CHECK(ds4_iq2xxs_grid[255] == 0x2b2b2b1908081908ull);
    int dup = 0;
    for (int a = 0; a < 256; a++)
        for (int b = a + 1; b < 256; b++) dup += ds4_iq2xxs_grid[a] == ds4_iq2xxs_grid[b];
    CHECK_EQ_INT(dup, 0);
    /* sign table: low 7 bits = index, bit 7 = parity (even minus count) */
    bad = 0;
    for (int s = 0; s < 128; s++) {
        int par = 0;
        for (int j = 0; j < 7; j++) par ^= (s >> j) & 1;
        if (ds4_ksigns_iq2xs[s] != (uint8_t)(s | (par << 7))) bad++;
    }
    CHECK_EQ_INT(bad, 0);
}

TEST(iq2_xxs_block) {
    block_iq2_xxs b;
    memset(&b, 0, sizeof b);
    b.d = 0x3c00; /* 1.0 */
    /* 32-block 0: grid {0, 1, 255, 17}, sign indices {0, 1, 127, 5}, s = 3:
     * db = 1 * (0.5 + 3) * 0.25 = 0.875 */
    uint32_t w0 = 0u | (1u << 8) | (255u << 16) | (17u << 24);
    uint32_t w1 = 0u | (1u << 7) | (127u << 14) | (5u << 21) | (3u << 28);
    b.qs[0] = (uint16_t)w0; b.qs[1] = (uint16_t)(w0 >> 16);
    b.qs[2] = (uint16_t)w1; b.qs[3] = (uint16_t)(w1 >> 16);
    /* 32-block 7: grid 0 everywhere, no signs, s = 15: db = 15.5 * 0.25 */
    b.qs[31] = 15u << 12;
    float y[256];
    ds4_type_traits_get(DS4_TYPE_IQ2_XXS)->to_float(&b, y, 256);
    /* group 0: grid 0 = all 8s, no signs */
    for (int j = 0; j < 8; j++) CHECK(y[j] == 0.875f * 8);
    /* group 1: grid 1 = 0x080808080808082b (byte 0 = 43), sign index 1 ->
     * mask 0x81: elements 0 and 7 negative */
    CHECK(y[8] == -0.875f * 43);
    CHECK(y[9] == 0.875f * 8);
    CHECK(y[15] == -0.875f * 8);
    /* group 2: grid 255 = 0x2b2b2b1908081908 -> 8,25,8,8,25,43,43,43; index
     * 127 -> mask 0xff, all negative */
    static const float g255[8] = { 8, 25, 8, 8, 25, 43, 43, 43 };
    for (int j = 0; j < 8; j++) CHECK(y[16 + j] == -0.875f * g255[j]);
    /* group 3: grid 17 = 0x080808082b080808 (byte 3 = 43), index 5 -> mask
     * 0x05: elements 0 and 2 negative */
    CHECK(y[24] == -0.875f * 8);
    CHECK(y[26] == -0.875f * 8);
    CHECK(y[27] == 0.875f * 43);
    /* 32-blocks 1..6: all-zero words = grid 0, s = 0: 0.125 * 8 = 1 */
    for (int e = 32; e < 224; e++) CHECK(y[e] == 1.0f);
    for (int e = 224; e < 256; e++) CHECK(y[e] == 3.875f * 8);
}

/* ---- round trips and dots on Gaussian data ----------------------------- */

static double rel_rmse(const float *x, const float *y, int64_t n) {
    double e = 0, s = 0;
    for (int64_t i = 0; i < n; i++) {
        e += ((double)x[i] - y[i]) * ((double)x[i] - y[i]);
        s += (double)x[i] * x[i];
    }
    return sqrt(e / s);
}

static const struct { int type; double rt_bound; double dot_bound; } kinds[] = {
    /* bounds a little above measured (see the printed figures) */
    { DS4_TYPE_F32, 0.0, 1e-6 },
    { DS4_TYPE_F16, 0.0003, 1e-6 },
    { DS4_TYPE_BF16, 0.0025, 1e-6 },
    { DS4_TYPE_Q8_0, 0.0065, 4e-4 },
    { DS4_TYPE_Q8_K, 0.0085, 0.0 },
    { DS4_TYPE_Q4_K, 0.08, 5e-4 },
    { DS4_TYPE_Q2_K, 0.30, 5e-4 },
    { DS4_TYPE_IQ2_XXS, 0.36, 5e-4 },
};

TEST(round_trip) {
    const int64_t n = 256 * 512;
    float *x = gauss_vec(n, 1), *y = malloc((size_t)n * sizeof *y);
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        const ds4_type_traits *t = ds4_type_traits_get(kinds[k].type);
        void *q = malloc(ds4_row_size(kinds[k].type, n));
        t->from_float(x, q, n);
        t->to_float(q, y, n);
        double r = rel_rmse(x, y, n);
        printf("      %-8s rel rmse %.5f\n", t->name, r);
        CHECKF(r <= kinds[k].rt_bound, "%s: %.5f > %.5f", t->name, r, kinds[k].rt_bound);
        free(q);
    }
    free(x);
    free(y);
}

/* dot of one quantized weight row with the raw activation, against float64
 * of the dequantized weights: the error left is the activation's own
 * quantization (Q8_0/Q8_K) or summation order.  Normalized by |w|*|x|. */
TEST(vec_dot) {
    const int64_t n = 4096;
    const int rows = 16;
    float *x = gauss_vec(n, 2), *wd = malloc((size_t)n * sizeof *wd);
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        const ds4_type_traits *t = ds4_type_traits_get(kinds[k].type);
        if (!t->vec_dot) continue;
        void *q = malloc(ds4_row_size(kinds[k].type, n));
        void *xa = malloc(ds4_row_size(t->vec_dot_type, n));
        ds4_quantize_row_for(kinds[k].type, x, xa, n);
        double worst = 0, worst_abs_rel = 0, worst_sum_rel = 0;
        for (int r = 0; r < rows; r++) {
            float *w = gauss_vec(n, 100 + (uint64_t)r);
            t->from_float(w, q, n);
            t->to_float(q, wd, n);
            double ref = 0, nw = 0, nx = 0, sa = 0;
            for (int64_t i = 0; i < n; i++) {
                ref += (double)wd[i] * x[i];
                nw += (double)wd[i] * wd[i];
                nx += (double)x[i] * x[i];
                sa += fabs((double)wd[i] * x[i]);
            }
            double got = t->vec_dot(n, q, xa);
            double e = fabs(got - ref) / sqrt(nw * nx);
            if (e > worst) worst = e;
            double ar = fabs(got - ref) / fabs(ref);
            if (ar > worst_abs_rel) worst_abs_rel = ar;
            if (fabs(got - ref) / sa > worst_sum_rel) worst_sum_rel = fabs(got - ref) / sa;
            free(w);
        }
        printf("      %-8s dot err / (|w||x|) %.2e\n", t->name, worst);
        CHECKF(worst <= kinds[k].dot_bound, "%s: %.3g > %.3g", t->name, worst, kinds[k].dot_bound);
        if (kinds[k].type == DS4_TYPE_F16) /* fp32 lanes at avx512 (simd.h): relative to Σ|w·x| */
            CHECKF(worst_sum_rel <= (8.0 + sqrt((double)n)) * 0x1p-24, "%s: err / sum |w x| %.3g", t->name,
                   worst_sum_rel);
        else if (t->vec_dot_type == DS4_TYPE_F32) /* float64 accumulation: relative to the dot itself */
            CHECKF(worst_abs_rel <= 1e-6, "%s: rel %.3g", t->name, worst_abs_rel);
        free(q);
        free(xa);
    }
    free(x);
    free(wd);
}

/* The K-quant dots must equal float64 over the dequantized weights and the
 * dequantized Q8_K activation up to f32 rounding: the integer inner sums
 * are exact, so any layout slip would show as a large difference. */
TEST(vec_dot_exact_inputs) {
    const int64_t n = 1024;
    float *x = gauss_vec(n, 3), *w = gauss_vec(n, 4);
    float *wd = malloc((size_t)n * sizeof *wd), *xd = malloc((size_t)n * sizeof *xd);
    const int types[] = { DS4_TYPE_Q8_0, DS4_TYPE_Q4_K, DS4_TYPE_Q2_K, DS4_TYPE_IQ2_XXS };
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        const ds4_type_traits *t = ds4_type_traits_get(types[k]);
        const ds4_type_traits *at = ds4_type_traits_get(t->vec_dot_type);
        void *q = malloc(ds4_row_size(types[k], n)), *xa = malloc(ds4_row_size(t->vec_dot_type, n));
        t->from_float(w, q, n);
        t->to_float(q, wd, n);
        ds4_quantize_row_for(types[k], x, xa, n);
        at->to_float(xa, xd, n);
        double ref = 0, mag = 0;
        for (int64_t i = 0; i < n; i++) {
            ref += (double)wd[i] * xd[i];
            mag += fabs((double)wd[i] * xd[i]);
        }
        double got = t->vec_dot(n, q, xa);
        CHECKF(fabs(got - ref) <= 1e-5 * mag, "%s: %.9g vs %.9g", t->name, got, ref);
        free(q);
        free(xa);
    }
    free(x); free(w); free(wd); free(xd);
}

TEST(q8_K_activation) {
    float x[512];
    rng_seed(5);
    for (int i = 0; i < 512; i++) x[i] = rng_gauss();
    x[37] = 9.0f; /* signed extreme of block 0 is positive: maps to -127 * d with d < 0 */
    memset(x + 256, 0, 256 * sizeof(float));
    block_q8_K b[2];
    memset(b, 0x55, sizeof b);
    ds4_type_traits_get(DS4_TYPE_Q8_K)->from_float(x, b, 512);
    CHECK_EQ_INT(b[0].qs[37], -127);
    CHECK(b[0].d < 0.0f);
    int bad = 0;
    for (int g = 0; g < 16; g++) {
        int s = 0;
        for (int l = 0; l < 16; l++) s += b[0].qs[16 * g + l];
        if (s != b[0].bsums[g]) bad++;
    }
    CHECK_EQ_INT(bad, 0);
    CHECK(b[1].d == 0.0f);
    bad = 0;
    for (int l = 0; l < 256; l++) bad += b[1].qs[l] != 0;
    for (int g = 0; g < 16; g++) bad += b[1].bsums[g] != 0;
    CHECK_EQ_INT(bad, 0);
}

TEST(zero_and_constant_rows) {
    float x[512], y[512];
    const int types[] = { DS4_TYPE_F16, DS4_TYPE_BF16, DS4_TYPE_Q8_0, DS4_TYPE_Q8_K,
                          DS4_TYPE_Q4_K, DS4_TYPE_Q2_K, DS4_TYPE_IQ2_XXS };
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        const ds4_type_traits *t = ds4_type_traits_get(types[k]);
        uint8_t q[4 * 292];
        memset(x, 0, sizeof x);
        t->from_float(x, q, 512);
        t->to_float(q, y, 512);
        int bad = 0;
        for (int i = 0; i < 512; i++) bad += y[i] != 0.0f;
        CHECKF(bad == 0, "%s: zero row decodes to nonzero (%d)", t->name, bad);
        for (int i = 0; i < 512; i++) x[i] = i < 256 ? 0.75f : -2.0f;
        t->from_float(x, q, 512);
        t->to_float(q, y, 512);
        CHECKF(rel_rmse(x, y, 512) < 0.1, "%s: constant row rmse %.3g", t->name, rel_rmse(x, y, 512));
    }
}

/* Importance weights steer the error: with heavy weights on half of the
 * columns, the weighted error must drop compared with unweighted encoding. */
TEST(importance_weights) {
    const int64_t n = 256 * 64;
    float *x = gauss_vec(n, 6), *y = malloc((size_t)n * sizeof *y), *qw = malloc((size_t)n * sizeof *qw);
    for (int64_t i = 0; i < n; i++) qw[i] = i % 3 == 0 ? 50.0f : 0.1f;
    const int types[] = { DS4_TYPE_Q4_K, DS4_TYPE_Q2_K, DS4_TYPE_IQ2_XXS };
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        const ds4_type_traits *t = ds4_type_traits_get(types[k]);
        void *q = malloc(ds4_row_size(types[k], n));
        double e_plain = 0, e_imp = 0;
        t->quantize(x, q, n, NULL);
        t->to_float(q, y, n);
        for (int64_t i = 0; i < n; i++) e_plain += qw[i] * ((double)x[i] - y[i]) * ((double)x[i] - y[i]);
        t->quantize(x, q, n, qw);
        t->to_float(q, y, n);
        for (int64_t i = 0; i < n; i++) e_imp += qw[i] * ((double)x[i] - y[i]) * ((double)x[i] - y[i]);
        printf("      %-8s weighted err: plain %.4g, with imatrix %.4g\n", t->name, e_plain, e_imp);
        CHECKF(e_imp < 0.9 * e_plain, "%s: %.4g vs %.4g", t->name, e_imp, e_plain);
        /* all-zero importance must still give a sane encoding */
        for (int64_t i = 0; i < n; i++) qw[i] = 0.0f;
        t->quantize(x, q, n, qw);
        t->to_float(q, y, n);
        double r = rel_rmse(x, y, n);
        CHECKF(isfinite(r) && r < 0.6, "%s: zero imatrix rmse %.3g", t->name, r);
        for (int64_t i = 0; i < n; i++) qw[i] = i % 3 == 0 ? 50.0f : 0.1f;
        free(q);
    }
    free(x); free(y); free(qw);
}

TEST(determinism) {
    const int64_t n = 256 * 32;
    float *x = gauss_vec(n, 7);
    const int types[] = { DS4_TYPE_F16, DS4_TYPE_BF16, DS4_TYPE_Q8_0, DS4_TYPE_Q8_K,
                          DS4_TYPE_Q4_K, DS4_TYPE_Q2_K, DS4_TYPE_IQ2_XXS };
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        const ds4_type_traits *t = ds4_type_traits_get(types[k]);
        size_t sz = ds4_row_size(types[k], n);
        uint8_t *a = malloc(sz), *b = malloc(sz);
        memset(a, 0x11, sz);
        memset(b, 0xee, sz); /* every byte must be written */
        t->from_float(x, a, n);
        t->from_float(x, b, n);
        CHECKF(memcmp(a, b, sz) == 0, "%s from_float differs between runs", t->name);
        /* quantize(qw = NULL) is the same encoder as from_float */
        t->quantize(x, b, n, NULL);
        CHECKF(memcmp(a, b, sz) == 0, "%s quantize(NULL) != from_float", t->name);
        free(a);
        free(b);
    }
    free(x);
}

TEST(quantize_row_for) {
    const int64_t n = 512;
    float *x = gauss_vec(n, 8);
    float f[512];
    ds4_quantize_row_for(DS4_TYPE_BF16, x, f, n);
    CHECK(memcmp(f, x, sizeof f) == 0); /* F32 activations: plain copy */
    block_q8_0 a[16], b[16];
    ds4_quantize_row_for(DS4_TYPE_Q8_0, x, a, n);
    ds4_type_traits_get(DS4_TYPE_Q8_0)->from_float(x, b, n);
    CHECK(memcmp(a, b, sizeof a) == 0);
    block_q8_K c[2], d[2];
    ds4_quantize_row_for(DS4_TYPE_IQ2_XXS, x, c, n);
    ds4_type_traits_get(DS4_TYPE_Q8_K)->from_float(x, d, n);
    CHECK(memcmp(c, d, sizeof c) == 0);
    free(x);
}

TEST(row_size_and_names) {
    CHECK_EQ_INT(ds4_row_size(DS4_TYPE_F32, 256), 1024);
    CHECK_EQ_INT(ds4_row_size(DS4_TYPE_F16, 256), 512);
    CHECK_EQ_INT(ds4_row_size(DS4_TYPE_BF16, 256), 512);
    CHECK_EQ_INT(ds4_row_size(DS4_TYPE_Q8_0, 256), 8 * 34);
    CHECK_EQ_INT(ds4_row_size(DS4_TYPE_Q8_K, 512), 2 * 292);
    CHECK_EQ_INT(ds4_row_size(DS4_TYPE_Q2_K, 4096), 16 * 84);
    CHECK_EQ_INT(ds4_row_size(DS4_TYPE_Q4_K, 4096), 16 * 144);
    CHECK_EQ_INT(ds4_row_size(DS4_TYPE_IQ2_XXS, 2048), 8 * 66);
    CHECK_EQ_INT(ds4_row_size(DS4_TYPE_I8, 7), 7);
    CHECK_EQ_INT(ds4_row_size(DS4_TYPE_I16, 7), 14);
    CHECK_EQ_INT(ds4_row_size(DS4_TYPE_I32, 7), 28);
    CHECK_EQ_INT(ds4_row_size(DS4_TYPE_I64, 7), 56);
    CHECK_EQ_INT(ds4_row_size(DS4_TYPE_F64, 7), 56);
    CHECK_EQ_INT(ds4_row_size(DS4_TYPE_F32, 0), 0);
    CHECK_EQ_INT(ds4_row_size(DS4_TYPE_Q8_0, 33), 0);   /* not whole blocks */
    CHECK_EQ_INT(ds4_row_size(DS4_TYPE_Q4_K, 128), 0);
    CHECK_EQ_INT(ds4_row_size(2, 32), 0);                /* Q4_0: unsupported */
    CHECK_EQ_INT(ds4_row_size(-1, 32), 0);
    CHECK_EQ_INT(ds4_row_size(DS4_TYPE_COUNT, 32), 0);

    CHECK(ds4_type_traits_get(2) == NULL);
    CHECK(ds4_type_traits_get(-5) == NULL);
    CHECK(ds4_type_traits_get(DS4_TYPE_COUNT) == NULL);
    CHECK(ds4_type_traits_get(DS4_TYPE_I32)->vec_dot == NULL);
    CHECK(ds4_type_traits_get(DS4_TYPE_Q4_K)->vec_dot_type == DS4_TYPE_Q8_K);
    CHECK(ds4_type_traits_get(DS4_TYPE_Q8_0)->vec_dot_type == DS4_TYPE_Q8_0);
    CHECK(ds4_type_traits_get(DS4_TYPE_BF16)->vec_dot_type == DS4_TYPE_F32);
    CHECK(ds4_type_traits_get(DS4_TYPE_Q2_K)->quantized);
    CHECK(!ds4_type_traits_get(DS4_TYPE_F16)->quantized);

    static const struct { const char *name; int type; } names[] = {
        { "f32", DS4_TYPE_F32 }, { "f16", DS4_TYPE_F16 }, { "bf16", DS4_TYPE_BF16 },
        { "q8_0", DS4_TYPE_Q8_0 }, { "q8_K", DS4_TYPE_Q8_K }, { "q2_K", DS4_TYPE_Q2_K },
        { "q4_K", DS4_TYPE_Q4_K }, { "iq2_xxs", DS4_TYPE_IQ2_XXS }, { "i8", DS4_TYPE_I8 },
        { "i16", DS4_TYPE_I16 }, { "i32", DS4_TYPE_I32 }, { "i64", DS4_TYPE_I64 },
        { "f64", DS4_TYPE_F64 },
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        CHECK(strcmp(ds4_type_name(names[i].type), names[i].name) == 0);
        CHECK_EQ_INT(ds4_type_from_name(names[i].name), names[i].type);
    }
    CHECK_EQ_INT(ds4_type_from_name("Q8_0"), DS4_TYPE_Q8_0);
    CHECK_EQ_INT(ds4_type_from_name("IQ2_XXS"), DS4_TYPE_IQ2_XXS);
    CHECK_EQ_INT(ds4_type_from_name("Q4_k"), DS4_TYPE_Q4_K);
    CHECK_EQ_INT(ds4_type_from_name("q5_K"), -1);
    CHECK_EQ_INT(ds4_type_from_name(""), -1);
    CHECK_EQ_INT(ds4_type_from_name(NULL), -1);
    CHECK(strcmp(ds4_type_name(2), "type#2") == 0);
    CHECK(strcmp(ds4_type_name(99), "type#99") == 0);
}

int main(void) {
    RUN(fp16);
    RUN(bf16);
    RUN(e8m0);
    RUN(fp8_e4m3);
    RUN(fp4_e2m1);
    RUN(q8_0_block);
    RUN(q4_K_block);
    RUN(q2_K_block);
    RUN(iq2_xxs_tables);
    RUN(iq2_xxs_block);
    RUN(round_trip);
    RUN(vec_dot);
    RUN(vec_dot_exact_inputs);
    RUN(q8_K_activation);
    RUN(zero_and_constant_rows);
    RUN(importance_weights);
    RUN(determinism);
    RUN(quantize_row_for);
    RUN(row_size_and_names);
    TEST_END();
}
