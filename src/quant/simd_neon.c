/* placeholder, filled below */
#include "quant/simd_int.h"
void ds4_simd_install_neon(ds4_type_traits *t, ds4_vec_ops *v) { (void)t; (void)v; }
