/* Scalar number-format conversions (MODEL.md §2.4, §13.1).
 *
 * Contract: pure functions of their argument, no tables that need start-up,
 * no dependence on the FPU rounding mode beyond the C default (round to
 * nearest even), identical results on every platform.  Encoders round to
 * nearest, ties to even, as the hardware conversions ggml and ds4 rely on:
 *   fp16  <-> f32   IEEE binary16, subnormals, inf and NaN preserved
 *   bf16  <-> f32   upper half of binary32; NaN stays a (quiet) NaN
 *   e8m0  -> f32    2^(b-127); b = 0 gives the denormal 2^-127 (ds4/llama.cpp)
 *   fp8 e4m3fn -> f32, fp4 e2m1 -> f32, and the "round to the nearest
 *   representable value" helpers the QAT round trips of §2.4 use. */
#include "quant/quant.h"

#include <math.h>
#include <string.h>

static inline uint32_t f32_bits(float f) { uint32_t u; memcpy(&u, &f, sizeof u); return u; }
static inline float bits_f32(uint32_t u) { float f; memcpy(&f, &u, sizeof f); return f; }

float ds4_fp16_to_f32(ds4_fp16 h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    if (exp == 0x1f) /* inf / NaN: keep the payload, NaN stays NaN */
        return bits_f32(sign | 0x7f800000u | (man << 13));
    if (exp == 0) {
        /* zero or subnormal: man * 2^-24, exact in f32 */
        float v = (float)man * 0x1p-24f;
        return sign ? -v : v;
    }
    return bits_f32(sign | ((exp + 112) << 23) | (man << 13));
}

ds4_fp16 ds4_f32_to_fp16(float f) {
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) { /* inf or NaN; a NaN keeps the quiet bit set */
        if (ax == 0x7f800000u) return sign | 0x7c00;
        return (uint16_t)(sign | 0x7e00 | ((ax >> 13) & 0x3ff));
    }
    if (ax >= 0x477ff000u) /* >= 65520 = halfway past 65504: overflows */
        return sign | 0x7c00;
    if (ax >= 0x38800000u) { /* result is a normal half (>= 2^-14) */
        /* Rebias the exponent (127 -> 15) and round the 13 dropped mantissa
         * bits to nearest even; a carry correctly bumps the exponent. */
        uint32_t odd = (ax >> 13) & 1;
        ax += 0xc8000fffu + odd; /* -(112 << 23) + 0xfff + odd */
        return (uint16_t)(sign | (ax >> 13));
    }
    /* Subnormal half or zero.  Adding 0.5 puts the value in [0.5, 1) where the
     * f32 ulp is 2^-24, the half subnormal step, so the FPU does the RNE. */
    float v = bits_f32(ax) + 0.5f;
    return (uint16_t)(sign | (f32_bits(v) - 0x3f000000u));
}

float ds4_bf16_to_f32(uint16_t b) {
    return bits_f32((uint32_t)b << 16);
}

uint16_t ds4_f32_to_bf16(float f) {
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) /* NaN: truncating could give inf */
        return (uint16_t)((x >> 16) | 0x40);
    x += 0x7fffu + ((x >> 16) & 1); /* round to nearest even */
    return (uint16_t)(x >> 16);
}

float ds4_e8m0_to_f32(uint8_t b) {
    /* b << 23 is 2^(b-127) as f32 bits for b >= 1; b = 0 has no normal
     * encoding, so it becomes the denormal 2^-127 as in ds4/llama.cpp. */
    return bits_f32(b ? (uint32_t)b << 23 : 0x00400000u);
}

float ds4_fp8_e4m3_to_f32(uint8_t b) {
    if ((b & 0x7f) == 0x7f) return 0.0f; /* E4M3FN NaN; ds4 decodes it to 0 */
    int e = (b >> 3) & 0xf;
    int m = b & 7;
    float v = e == 0 ? ldexpf((float)m, -9) : ldexpf((float)(8 + m), e - 10);
    return (b & 0x80) ? -v : v;
}

static const float fp4_values[8] = { 0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f };

float ds4_fp4_e2m1_to_f32(uint8_t nibble) {
    float v = fp4_values[nibble & 7];
    return (nibble & 8) ? -v : v;
}

float ds4_round_fp8_e4m3(float x) {
    if (isnan(x)) return x;
    float a = fabsf(x);
    float q;
    if (a >= 448.0f) {
        q = 448.0f; /* saturate (the finite maximum, 1.75 * 2^8) */
    } else if (a < 0x1p-6f) {
        q = nearbyintf(a * 512.0f) * 0x1p-9f; /* subnormal step 2^-9 */
    } else {
        /* a in [2^E, 2^(E+1)): 3 mantissa bits give a step of 2^(E-3).
         * a/step is in [8, 16); rounding it to an even integer is rounding to
         * an even mantissa.  Scaling by powers of two is exact. */
        int k;
        frexpf(a, &k); /* a = f * 2^k, f in [0.5, 1) -> E = k - 1 */
        int shift = k - 1 - 3;
        q = ldexpf(nearbyintf(ldexpf(a, -shift)), shift);
        if (q > 448.0f) q = 448.0f;
    }
    return copysignf(q, x);
}

float ds4_round_fp4_e2m1(float x) {
    if (isnan(x)) return x;
    float a = fabsf(x);
    if (a >= 6.0f) return copysignf(6.0f, x);
    /* Nearest of the 8 magnitudes; at an exact midpoint take the even code
     * (codes 0..7 index fp4_values, so "even code" = even mantissa bit). */
    int best = 0;
    float bd = a;
    for (int c = 1; c < 8; c++) {
        float d = fabsf(a - fp4_values[c]);
        if (d < bd || (d == bd && (c & 1) == 0 && (best & 1))) { bd = d; best = c; }
    }
    return copysignf(fp4_values[best], x);
}
