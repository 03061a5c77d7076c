/* Runtime SIMD dispatch: the live traits table and f32 helper set.
 *
 * Contract (simd.h): the live table starts as a copy of the scalar reference
 * and, once per process (pthread_once), the best supported level -- or the
 * one DS4_SIMD names -- overwrites its kernel slots.  ds4_simd_force()
 * rebuilds the table for another level in place.  The per-ISA files are
 * compiled with per-function target attributes, so this file alone decides,
 * from CPUID, whether their code may run. */
#include "quant/simd.h"
#include "quant/simd_int.h"
#include "quant/vec.h"
#include "quant/vec_int.h"
#include "quant/iq2_tables.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum { LV_SCALAR, LV_AVX2, LV_AVX512, LV_NEON, LV_COUNT };
static const char *const level_names[LV_COUNT + 1] = { "scalar", "avx2", "avx512", "neon", NULL };

uint64_t ds4_iq2_sign_pm1[128];

static ds4_type_traits live[DS4_TYPE_COUNT];
static ds4_vec_ops live_vec;
static int live_level = LV_SCALAR;
static pthread_once_t once = PTHREAD_ONCE_INIT;

/* ---- scalar f32 helpers: the loops forward.c / ops.c had, verbatim ---- */

static float dot_scalar(const float *a, const float *b, int64_t n) {
    float s = 0.0f;
    for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

static void axpy_scalar(float *y, float a, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] += a * x[i];
}

static double sumsq_scalar(const float *x, int64_t n) {
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return s;
}

/* ---- CPU checks ---------------------------------------------------------- */

static int level_index(const char *name) {
    if (!name) return -1;
    if (strcasecmp(name, "ref") == 0) return LV_SCALAR;
    for (int i = 0; i < LV_COUNT; i++)
        if (strcasecmp(name, level_names[i]) == 0) return i;
    return -1;
}

static int cpu_has(int lv) {
    switch (lv) {
    case LV_SCALAR: return 1;
#if defined(__x86_64__) || defined(__i386__)
    case LV_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
        /* F16C: every AVX2 CPU has it; GCC 12 cannot query it by name */
    case LV_AVX512:
        __builtin_cpu_init();
        return cpu_has(LV_AVX2) && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
               __builtin_cpu_supports("avx512vnni");
#endif
#if defined(__aarch64__) && defined(__ARM_NEON)
    case LV_NEON: return 1;
#endif
    default: return 0;
    }
}

/* Reference copy plus the level's overrides. */
static void build(int lv, ds4_type_traits *table, ds4_vec_ops *vec) {
    for (int t = 0; t < DS4_TYPE_COUNT; t++) {
        const ds4_type_traits *r = ds4_type_traits_ref(t);
        if (r) table[t] = *r;
        else memset(&table[t], 0, sizeof table[t]);
    }
    vec->dot = dot_scalar;
    vec->axpy = axpy_scalar;
    vec->sumsq = sumsq_scalar;
    ds4_vec_install_ref(vec);
    switch (lv) {
    case LV_AVX2:
        ds4_simd_install_avx2(table, vec);
        ds4_simd_install_avx2_dec(table);
        ds4_vec_install_avx2(vec);
        ds4_idx8_install_avx2(vec);
        ds4_gemm_install_avx2_q8(table);
        ds4_gemm_install_avx2_k(table);
        break;
    case LV_AVX512:
        ds4_simd_install_avx512(table, vec);
        ds4_simd_install_avx512_vbmi(table);
        ds4_simd_install_avx512_dec(table);
        ds4_vec_install_avx512(vec);
        ds4_idx8_install_avx512(vec);
        ds4_gemm_install_avx512_q8(table);
        ds4_gemm_install_avx512_k(table);
        break;
    case LV_NEON: ds4_simd_install_neon(table, vec); break;
    default: break;
    }
}

static void install(int lv) {
    static ds4_type_traits tmp[DS4_TYPE_COUNT];
    ds4_vec_ops v;
    build(lv, tmp, &v);
    /* slot by slot, so a concurrent reader (which the contract forbids
     * anyway) sees either kernel, never a torn struct copy of garbage */
    for (int t = 0; t < DS4_TYPE_COUNT; t++) {
        live[t].vec_dot = tmp[t].vec_dot;
        live[t].vec_dot_tile = tmp[t].vec_dot_tile;
        live[t].from_float = tmp[t].from_float;
        live[t].panel_bytes = tmp[t].panel_bytes;
        live[t].panel_pack = tmp[t].panel_pack;
        live[t].panel_gemm = tmp[t].panel_gemm;
        live[t].panel_tokens = tmp[t].panel_tokens;
    }
    live_vec = v;
    live_level = lv;
}

static void init_once(void) {
    for (int i = 0; i < 128; i++) {
        uint64_t m = 0;
        for (int j = 0; j < 8; j++)
            m |= (uint64_t)((ds4_ksigns_iq2xs[i] >> j) & 1 ? 0xff : 0x01) << (8 * j);
        ds4_iq2_sign_pm1[i] = m;
    }
    for (int t = 0; t < DS4_TYPE_COUNT; t++) {
        const ds4_type_traits *r = ds4_type_traits_ref(t);
        if (r) live[t] = *r;
    }
    int best = LV_SCALAR;
    for (int lv = LV_COUNT - 1; lv > LV_SCALAR; lv--)
        if (cpu_has(lv)) { best = lv; break; }
    const char *env = getenv("DS4_SIMD");
    if (env && *env) {
        int want = level_index(env);
        if (want >= 0 && cpu_has(want)) best = want;
        else fprintf(stderr, "ds4: DS4_SIMD=%s is not supported here; using %s\n", env, level_names[best]);
    }
    install(best);
}

void ds4_simd_init(void) { pthread_once(&once, init_once); }

const char *ds4_simd_level(void) {
    ds4_simd_init();
    return level_names[live_level];
}

const char *const *ds4_simd_levels(void) { return level_names; }

int ds4_simd_supported(const char *level) {
    int lv = level_index(level);
    return lv >= 0 && cpu_has(lv);
}

int ds4_simd_force(const char *level) {
    int lv = level_index(level);
    if (lv < 0 || !cpu_has(lv)) return -1;
    ds4_simd_init();
    install(lv);
    return 0;
}

int ds4_simd_traits_for(const char *level, int type, ds4_type_traits *out) {
    int lv = level_index(level);
    if (lv < 0 || !cpu_has(lv) || !ds4_type_traits_ref(type)) return -1;
    ds4_simd_init(); /* the sign table */
    static ds4_type_traits table[DS4_TYPE_COUNT];
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    ds4_vec_ops v;
    pthread_mutex_lock(&mu);
    build(lv, table, &v);
    *out = table[type];
    pthread_mutex_unlock(&mu);
    return 0;
}

int ds4_simd_vec_ops_for(const char *level, ds4_vec_ops *out) {
    int lv = level_index(level);
    if (lv < 0 || !cpu_has(lv)) return -1;
    ds4_simd_init();
    static ds4_type_traits table[DS4_TYPE_COUNT];
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&mu);
    build(lv, table, out);
    pthread_mutex_unlock(&mu);
    return 0;
}

const ds4_type_traits *ds4_type_traits_get(int type) {
    if (type < 0 || type >= DS4_TYPE_COUNT) return NULL;
    ds4_simd_init();
    return live[type].name ? &live[type] : NULL;
}

/* ---- f32 helpers ----------------------------------------------------------- */

float ds4_vec_dot_f32(const float *a, const float *b, int64_t n) {
    ds4_simd_init();
    return live_vec.dot(a, b, n);
}

void ds4_vec_axpy_f32(float *y, float a, const float *x, int64_t n) {
    ds4_simd_init();
    live_vec.axpy(y, a, x, n);
}

double ds4_vec_sumsq_f32(const float *x, int64_t n) {
    ds4_simd_init();
    return live_vec.sumsq(x, n);
}

const ds4_vec_ops *ds4_vec_ops_live(void) {
    ds4_simd_init();
    return &live_vec;
}
