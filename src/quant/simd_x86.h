/* Internal to src/quant: the common preamble of the AVX-512 kernel files
 * (simd_avx512.c, gemm_avx512_q8.c, gemm_avx512_k.c).  Include it only
 * inside their `#if defined(__x86_64__) || defined(__i386__)` section.
 *
 * Every kernel function carries TGT, so the files build with the portable
 * flags and their code runs only after dispatch.c has checked CPUID for the
 * avx512 level's features; INL is TGT plus forced inlining, which the
 * micro-kernels need for their constant-folded NR x NC instances. */
#ifndef DS4_QUANT_SIMD_X86_H
#define DS4_QUANT_SIMD_X86_H

#include <immintrin.h>
#include <stddef.h>
#include <string.h>

#include "quant/dpbusd.h"
#include "quant/quant.h"
#include "quant/simd_int.h"

#ifdef __clang__
#pragma STDC FP_CONTRACT OFF /* GCC in ISO C mode already keeps a*b+c unfused */
#endif

#define TGT __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")))
#define INL static inline __attribute__((always_inline)) TGT
#define UNROLL _Pragma("GCC unroll 8")

#endif
