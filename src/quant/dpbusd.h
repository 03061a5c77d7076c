/* Internal to src/quant: vpdpbusd (acc + Σ of 4 u8·s8 products per int32
 * lane) and vpdpwssd (acc + Σ of 2 s16·s16) for the AVX-512 kernels, as
 * inline asm.  GCC 12 compiles
 * _mm512_dpbusd_epi32 on a loop-carried accumulator into a copy to a fresh
 * register, the multiply-add there, and a copy back (two moves per
 * instruction, spills once many chains are live); the asm's "+v" operand
 * keeps the accumulator in place.  Include only on x86. */
#ifndef DS4_QUANT_DPBUSD_H
#define DS4_QUANT_DPBUSD_H

#include <immintrin.h>

static inline __attribute__((always_inline, target("avx512f"))) __m512i ds4_dpbusd(__m512i acc, __m512i a_u8,
                                                                                   __m512i b_s8) {
    __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a_u8), "vm"(b_s8));
    return acc;
}

static inline __attribute__((always_inline, target("avx512f"))) __m512i ds4_dpwssd(__m512i acc, __m512i a_s16,
                                                                                   __m512i b_s16) {
    __asm__("vpdpwssd %2, %1, %0" : "+v"(acc) : "v"(a_s16), "vm"(b_s16));
    return acc;
}

/* AVX-VNNI (VEX, ymm; Alder Lake, Zen 5): the same on 256-bit registers. */
static inline __attribute__((always_inline, target("avx2,avxvnni"))) __m256i ds4_dpbusd_vex(__m256i acc, __m256i a_u8,
                                                                                            __m256i b_s8) {
    __asm__("%{vex%} vpdpbusd %2, %1, %0" : "+x"(acc) : "x"(a_u8), "xm"(b_s8));
    return acc;
}

#endif
