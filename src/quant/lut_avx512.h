/* Internal to src/quant: 256-entry byte-table lookups in AVX-512 VBMI
 * registers, shared by the IQ2_XXS kernels (iq2_avx512.c's decode dot,
 * gemm_avx512_k.c's unpacks).  Include only inside an x86-64 section. */
#ifndef DS4_QUANT_LUT_AVX512_H
#define DS4_QUANT_LUT_AVX512_H

#include <immintrin.h>
#include <stdint.h>

/* tab[idx] for every byte of idx.  tab: 256 bytes, 64-byte aligned; hi:
 * the bytes of idx with bit 7 set (_mm512_movepi8_mask(idx), which lookups
 * of the same indices in several tables share).  Two two-register byte
 * permutes on the low 7 bits and a blend; AVX512VBMI only, so it inlines
 * into any kernel whose target includes it. */
static inline __attribute__((always_inline, target("avx512f,avx512bw,avx512vbmi"))) __m512i
ds4_lut256_epi8(const uint8_t *tab, __m512i idx, __mmask64 hi) {
    const __m512i lo = _mm512_permutex2var_epi8(_mm512_load_si512((const void *)tab), idx,
                                                _mm512_load_si512((const void *)(tab + 64)));
    const __m512i up = _mm512_permutex2var_epi8(_mm512_load_si512((const void *)(tab + 128)), idx,
                                                _mm512_load_si512((const void *)(tab + 192)));
    return _mm512_mask_blend_epi8(hi, lo, up);
}

#endif
