/* Internal to src/quant: how the per-ISA files hand their kernels to
 * dispatch.c.  Each installer overwrites the slots it implements (vec_dot,
 * vec_dot_tile, from_float of the activation types) in a copy of the
 * reference table and in the helper set; slots it leaves alone keep the
 * scalar reference. */
#ifndef DS4_QUANT_SIMD_INT_H
#define DS4_QUANT_SIMD_INT_H

#include "quant/quant.h"
#include "quant/simd.h"

void ds4_simd_install_avx2(ds4_type_traits *table, ds4_vec_ops *vec);
void ds4_simd_install_avx512(ds4_type_traits *table, ds4_vec_ops *vec);
void ds4_simd_install_neon(ds4_type_traits *table, ds4_vec_ops *vec);
/* IQ2_XXS decode dot for AVX-512 CPUs with VBMI and VNNI (iq2_avx512.c):
 * the GFNI variant on Intel CPUs with GFNI, else the BITALG one; a no-op
 * elsewhere. */
void ds4_simd_install_avx512_vbmi(ds4_type_traits *table);
/* Tests: overwrite row (the avx512 level's IQ2_XXS row, whose tile then
 * still serves nc > 1) with the named variant of iq2_avx512.c, "vbmi" or
 * "gfni", whichever the vendor pick would install.  0, or -1 where the
 * CPU lacks its ISA (and off x86). */
int ds4_iq2_avx512_variant(const char *name, ds4_type_traits *row);
/* Q2_K and F16 decode (one-column tile) kernels (dec_avx512.c), installed
 * after the vbmi ones; a no-op elsewhere. */
void ds4_simd_install_avx512_dec(ds4_type_traits *table);
/* Panel GEMM kernels (quant.h), installed after the level's dots:
 * gemm_avx512_q8.c (Q8_0) and gemm_avx512_k.c (Q2_K, Q4_K, IQ2_XXS). */
void ds4_gemm_install_avx512_q8(ds4_type_traits *table);
void ds4_gemm_install_avx512_k(ds4_type_traits *table);
void ds4_gemm_install_avx2_q8(ds4_type_traits *table); /* gemm_avx2_q8.c */
/* The avx2 level's Q2_K decode kernel (dec_avx2.c), installed after its
 * dots; a no-op elsewhere.  For tests, ds4_dec_avx2_q2k_variant() puts its
 * vec_dot and one-column tile into row (an avx2 Q2_K row, whose tile still
 * serves nc > 1): 0 the vpmaddubsw one (AVX2), 1 the AVX-VNNI one, which
 * the installer picks where the CPU has it.  0, or -1 where the CPU lacks
 * its ISA (and off x86). */
void ds4_simd_install_avx2_dec(ds4_type_traits *table);
int ds4_dec_avx2_q2k_variant(int vnni, ds4_type_traits *row);
/* Tests: puts the avx2 level's Q8_0 panel kernel variant (pack, bytes,
 * gemm) into row: 0 the sign-trick one (AVX2), 1 the AVX-VNNI one, which
 * ds4_gemm_install_avx2_q8() picks where the CPU has it.  0, or -1 where
 * the CPU lacks its ISA (and off x86). */
int ds4_gemm_avx2_q8_variant(int vnni, ds4_type_traits *row);
void ds4_gemm_install_avx2_k(ds4_type_traits *table);  /* gemm_avx2_k.c: Q2_K, Q4_K, IQ2_XXS */
/* Tests: the avx2 level's panel GEMM of type (Q2_K, Q4_K, IQ2_XXS) without
 * (vnni 0) or with AVX-VNNI (1; installed where the CPU has it); both read
 * the same panels.  NULL where the CPU lacks the ISA, and off x86. */
ds4_panel_gemm_fn ds4_gemm_avx2_k_variant(int type, int vnni);
/* The avx512 level's IQ2_XXS panel GEMM variants, so that tests can check
 * each one the CPU runs: 0 the base unpack (AVX-512 F/BW), 1 the VBMI one
 * (needs VBMI + BITALG), 2 the GFNI one (VBMI + GFNI).
 * ds4_gemm_install_avx512_k() installs 2 where the CPU has it, else 1,
 * else 0.  NULL where the CPU lacks the variant's ISA, and off x86. */
ds4_panel_gemm_fn ds4_gemm_avx512_k_iq2_variant(int variant);

/* IQ2_XXS sign patterns as ±1 bytes (index: 7-bit sign code), for kernels
 * without mask registers; filled by dispatch.c before any installer runs. */
extern uint64_t ds4_iq2_sign_pm1[128];

/* Decode's weight prefetch distance in bytes for tiles of nr rows with row
 * stride ws: two row blocks ahead, and at least ~8 KB (simd_avx512.c's
 * Q8_0 kernel has the measurements); 0 for one row (vec_dot, ws = 0). */
static inline size_t ds4_decode_pf_dist(size_t ws, int nr) {
    if (ws == 0) return 0;
    return (2 * (size_t)nr * ws >= 8192 ? 2 * (size_t)nr : (8192 + ws - 1) / ws) * ws;
}

/* Decode's second, farther prefetch stage (ds4_pf_far_*): a tile's nr rows
 * are one contiguous stretch of nr·ws bytes, and the kernel walks it block
 * by block in all rows at once, nsteps steps in all.  Besides the near
 * prefetch above (row by row, ds4_decode_pf_dist ahead), each step asks for
 * its share of the same stretch twice that distance ahead, in address
 * order, as the hardware prefetchers like it.  Both stages use the hint
 * DS4_PF_STREAM (below).  Measured in simd_avx512.c (k_q8_0). */
typedef struct {
    const char *p; /* the stretch, 2·ds4_decode_pf_dist ahead */
    size_t done;   /* bytes asked for so far */
    size_t lim;    /* bytes due by the end of this step */
    size_t per;    /* bytes per step */
    size_t span;   /* nr·ws */
} ds4_pf_far;

/* The far stage `dist` bytes ahead of the tile at w. */
static inline ds4_pf_far ds4_pf_far_at(const void *w, size_t ws, int nr, int64_t nsteps, size_t dist) {
    ds4_pf_far f = {(const char *)w + dist, 0, 0, 0, (size_t)nr * ws};
    if (nsteps > 0) f.per = (f.span + (size_t)nsteps - 1) / (size_t)nsteps;
    return f;
}

/* ... at twice the near distance: the Q8_0 kernel's. */
static inline ds4_pf_far ds4_pf_far_init(const void *w, size_t ws, int nr, int64_t nsteps) {
    return ds4_pf_far_at(w, ws, nr, nsteps, 2 * ds4_decode_pf_dist(ws, nr));
}

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
/* The hint of every decode weight prefetch, near and far: non-temporal.
 * A decode step reads each weight once, ~150 MB a token at small and GBs
 * at V4's sizes, so nothing it prefetches is read again before the caches
 * turn over.  With T0/T1 those lines went on through L2 into the L3 (a
 * victim cache on Zen) and evicted what a step does read again: the KV and
 * compressor rows, the HC state, the activations.  Zen 5, 2 threads,
 * interleaved runs of both builds: small-q2 decode 0.83-0.85 -> 0.90 of
 * the roofline at ~50 GB/s, +3-6% at ~67 GB/s (attention, HC and the
 * router gain most); small-q8 0.84-0.87 -> 0.89-0.94 at ~50 GB/s.
 * NTA for the near stage only or the far stage only gained about half. */
#define DS4_PF_STREAM _MM_HINT_NTA
/* One step of the far stage: this step's share of the stretch.
 * Prefetches never fault, so running past the matrix is harmless. */
static inline void ds4_pf_far_step(ds4_pf_far *f) {
    f->lim = f->lim + f->per < f->span ? f->lim + f->per : f->span;
    for (; f->done < f->lim; f->done += 64) _mm_prefetch(f->p + f->done, DS4_PF_STREAM);
}

/* A panel GEMM's output block -- rows [r0, r0 + nr) of tokens [t0, t1),
 * token t's row at y + t·ldy -- fetched for writing ahead of its stores.
 * Each token's piece is a line or two of its own page, so without this
 * every store waited on its read-for-ownership (from L3 or DRAM: prefill
 * outputs are MBs): Q8_0 512 -> 4096 rows x 512 tokens, 2 threads, Zen 5:
 * 769 -> 1059 GF/s; 1024 -> 1024 rows +4%.  PREFETCHW exists on every
 * x86-64 CPU with these kernels' ISA (Intel since Broadwell, AMD since
 * K8). */
static inline void ds4_prefetch_out(const float *y, int64_t ldy, int r0, int nr, int t0, int t1) {
    for (int t = t0; t < t1; t++) {
        const float *o = y + (int64_t)t * ldy + r0;
        __asm__ volatile("prefetchw %0" ::"m"(*(const char *)o));
        __asm__ volatile("prefetchw %0" ::"m"(*(const char *)(o + nr - 1)));
    }
}
#endif

#endif
