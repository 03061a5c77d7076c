/* AVX-512 panel GEMM kernels (quant.h "Panel GEMM"); being written. */
#include "quant/simd_int.h"

void ds4_gemm_install_avx512_k(ds4_type_traits *table) { (void)table; }
