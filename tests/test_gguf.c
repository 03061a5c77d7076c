/* GGUF reader/writer tests: full round trip of every metadata type and a few
 * tensor types, byte-identical rewrite through copy_kv, writer misuse and I/O
 * errors, a catalogue of hand-made corrupt files (each checked for its
 * message), every truncation of a small file, and a bounded byte-flip fuzz
 * loop that only asserts "no crash" (run it under SANITIZE=1). */
#include "gguf/gguf.h"
#include "quant/quant.h"
#include "test.h"

#include <signal.h>
#include <stdint.h>
#include <sys/resource.h>
#include <dirent.h>
#include <sys/stat.h>
#include <time.h>

/* ---- helpers ---- */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void) { /* xorshift64*, deterministic */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ull;
}

static char *path_in_tmp(const char *name) {
    static char buf[8][1024];
    static int k;
    char *p = buf[k++ & 7];
    snprintf(p, sizeof buf[0], "%s/%s", test_tmpdir(), name);
    return p;
}

static uint8_t *read_all(const char *path, size_t *n) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    fseek(fp, 0, SEEK_END);
    long sz = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    uint8_t *p = malloc(sz > 0 ? (size_t)sz : 1);
    *n = fread(p, 1, (size_t)sz, fp);
    fclose(fp);
    return p;
}

static bool file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

/* A growing byte buffer for hand-made files. */
typedef struct { uint8_t *p; size_t n, cap; } bb;
static void bb_put(bb *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void bb_u32(bb *b, uint32_t v) { uint8_t x[4]; for (int i = 0; i < 4; i++) x[i] = (uint8_t)(v >> 8 * i); bb_put(b, x, 4); }
static void bb_u64(bb *b, uint64_t v) { uint8_t x[8]; for (int i = 0; i < 8; i++) x[i] = (uint8_t)(v >> 8 * i); bb_put(b, x, 8); }
static void bb_str(bb *b, const char *s) { bb_u64(b, strlen(s)); bb_put(b, s, strlen(s)); }
static void bb_zeros(bb *b, size_t n) { while (n--) { uint8_t z = 0; bb_put(b, &z, 1); } }
static void bb_pad(bb *b, size_t a) { bb_zeros(b, (a - b->n % a) % a); }

static void hdr(bb *b, uint32_t version, uint64_t n_t, uint64_t n_kv) {
    bb_u32(b, GGUF_MAGIC);
    bb_u32(b, version);
    bb_u64(b, n_t);
    bb_u64(b, n_kv);
}
static void kv_u32(bb *b, const char *k, uint32_t v) { bb_str(b, k); bb_u32(b, GGUF_TYPE_UINT32); bb_u32(b, v); }
static void tinfo(bb *b, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type, uint64_t off) {
    bb_str(b, name);
    bb_u32(b, n_dims);
    for (uint32_t i = 0; i < n_dims; i++) bb_u64(b, ne[i]);
    bb_u32(b, type);
    bb_u64(b, off);
}

/* Opens an exact-size heap copy (so ASan sees any over-read); returns the
 * handle or NULL with the message in msg. */
static gguf_file *open_copy(const uint8_t *p, size_t n, char *msg, uint8_t **copy) {
    uint8_t *c = malloc(n ? n : 1);
    if (n) memcpy(c, p, n);
    ds4_err e = {{0}};
    gguf_file *f = gguf_open_mem(c, n, &e);
    snprintf(msg, 1024, "%s", e.msg);
    if (f) *copy = c;
    else free(c);
    return f;
}

#define EXPECT_FAIL(b, sub) do { char m_[1024]; uint8_t *c_ = NULL; \
    gguf_file *f_ = open_copy((b)->p, (b)->n, m_, &c_); \
    CHECKF(f_ == NULL, "opened a corrupt file, expected \"%s\"", sub); \
    if (f_) { gguf_close(f_); free(c_); } else { const char *mp_ = m_; CHECK_STR_CONTAINS(mp_, sub); } } while (0)

#define EXPECT_OK(b) do { char m_[1024]; uint8_t *c_ = NULL; \
    gguf_file *f_ = open_copy((b)->p, (b)->n, m_, &c_); \
    CHECKF(f_ != NULL, "%s", m_); if (f_) { gguf_close(f_); free(c_); } } while (0)

/* ---- round trip ---- */

typedef struct { const char *name; int type; uint32_t n_dims; int64_t ne[4]; } tdecl;
static const tdecl rt_tensors[] = {
    {"a.weight", DS4_TYPE_F32, 2, {7, 3}},
    {"b", DS4_TYPE_F16, 1, {5}},
    {"blk.0.attn_q_a.weight", DS4_TYPE_Q8_0, 3, {64, 3, 2}},
    {"d", DS4_TYPE_F32, 1, {1}},
    {"e", DS4_TYPE_Q8_0, 4, {32, 1, 1, 3}},
};
#define RT_NT (int)(sizeof rt_tensors / sizeof rt_tensors[0])

static uint64_t tensor_bytes(const tdecl *t) {
    uint64_t n;
    ds4_err e;
    if (gguf_tensor_nbytes(t->type, t->n_dims, t->ne, &n, &e)) return 0;
    return n;
}

static uint8_t *rt_data[RT_NT];

static void make_rt_data(void) {
    for (int i = 0; i < RT_NT; i++) {
        uint64_t n = tensor_bytes(&rt_tensors[i]);
        free(rt_data[i]);
        rt_data[i] = malloc(n);
        for (uint64_t j = 0; j < n; j++) rt_data[i][j] = (uint8_t)rnd();
    }
}

static const uint8_t a_u8[] = {0, 1, 255, 7, 128};
static const int8_t a_i8[] = {-128, -1, 0, 1, 127};
static const uint16_t a_u16[] = {0, 1, 65535, 300, 9};
static const int16_t a_i16[] = {-32768, -1, 0, 1, 32767};
static const uint32_t a_u32[] = {0, 1, 4294967295u, 70000, 9};
static const int32_t a_i32[] = {INT32_MIN, -1, 0, 1, INT32_MAX};
static const float a_f32[] = {0.f, -1.5f, 3.25f, 1e-6f, 1e30f};
static const uint8_t a_bool[] = {1, 0, 1};
static const uint64_t a_u64[] = {0, 1, UINT64_MAX, 1ull << 40, 9};
static const int64_t a_i64[] = {INT64_MIN, -1, 0, 1, INT64_MAX};
static const double a_f64[] = {0.0, -2.5, 1e300, 1e-300, 7.0};
static const char *const a_str[] = {"a", "", "ccc", "<｜User｜>"};

/* Writes the round-trip file; pieces of varying size cross tensor boundaries. */
static int write_rt(const char *path, bool align64) {
    ds4_err e = {{0}};
    gguf_writer *w = gguf_writer_open(path, &e);
    CHECKF(w != NULL, "%s", e.msg);
    if (!w) return -1;
    uint8_t u8 = 200; int8_t i8 = -100; uint16_t u16 = 60000; int16_t i16 = -30000;
    int64_t i64 = -(1ll << 40); double f64 = 3.25;
    uint64_t big = UINT64_MAX;
    int rc = 0;
    rc |= gguf_writer_add_str(w, "general.architecture", "deepseek4");
    if (align64) gguf_writer_set_alignment(w, 64);
    rc |= gguf_writer_add_scalar(w, "t.u8", GGUF_TYPE_UINT8, &u8);
    rc |= gguf_writer_add_scalar(w, "t.i8", GGUF_TYPE_INT8, &i8);
    rc |= gguf_writer_add_scalar(w, "t.u16", GGUF_TYPE_UINT16, &u16);
    rc |= gguf_writer_add_scalar(w, "t.i16", GGUF_TYPE_INT16, &i16);
    rc |= gguf_writer_add_u32(w, "t.u32", 4000000000u);
    rc |= gguf_writer_add_i32(w, "t.i32", -2000000000);
    rc |= gguf_writer_add_f32(w, "t.f32", 1.5f);
    rc |= gguf_writer_add_bool(w, "t.bool", true);
    rc |= gguf_writer_add_str(w, "t.str", "h\xc3\xa9llo");
    rc |= gguf_writer_add_str(w, "t.empty", "");
    rc |= gguf_writer_add_u64(w, "t.u64", (1ull << 40) + 7);
    rc |= gguf_writer_add_u64(w, "t.u64max", big);
    rc |= gguf_writer_add_scalar(w, "t.i64", GGUF_TYPE_INT64, &i64);
    rc |= gguf_writer_add_scalar(w, "t.f64", GGUF_TYPE_FLOAT64, &f64);
    rc |= gguf_writer_add_arr(w, "a.u8", GGUF_TYPE_UINT8, a_u8, 5);
    rc |= gguf_writer_add_arr(w, "a.i8", GGUF_TYPE_INT8, a_i8, 5);
    rc |= gguf_writer_add_arr(w, "a.u16", GGUF_TYPE_UINT16, a_u16, 5);
    rc |= gguf_writer_add_arr(w, "a.i16", GGUF_TYPE_INT16, a_i16, 5);
    rc |= gguf_writer_add_arr(w, "a.u32", GGUF_TYPE_UINT32, a_u32, 5);
    rc |= gguf_writer_add_arr(w, "a.i32", GGUF_TYPE_INT32, a_i32, 5);
    rc |= gguf_writer_add_arr(w, "a.f32", GGUF_TYPE_FLOAT32, a_f32, 5);
    rc |= gguf_writer_add_arr(w, "a.bool", GGUF_TYPE_BOOL, a_bool, 3);
    rc |= gguf_writer_add_arr(w, "a.u64", GGUF_TYPE_UINT64, a_u64, 5);
    rc |= gguf_writer_add_arr(w, "a.i64", GGUF_TYPE_INT64, a_i64, 5);
    rc |= gguf_writer_add_arr(w, "a.f64", GGUF_TYPE_FLOAT64, a_f64, 5);
    rc |= gguf_writer_add_arr(w, "a.empty", GGUF_TYPE_UINT32, NULL, 0);
    rc |= gguf_writer_add_arr_str(w, "a.str", a_str, 4);
    rc |= gguf_writer_add_arr_str(w, "a.str_empty", NULL, 0);
    for (int i = 0; i < RT_NT; i++)
        CHECK_EQ_INT(gguf_writer_add_tensor(w, rt_tensors[i].name, rt_tensors[i].type, rt_tensors[i].n_dims,
                                            rt_tensors[i].ne), i);
    rc |= gguf_writer_begin_data(w);
    /* All tensor bytes back to back, written in pieces of 1..97 bytes. */
    size_t total = 0;
    for (int i = 0; i < RT_NT; i++) total += tensor_bytes(&rt_tensors[i]);
    uint8_t *all = malloc(total);
    size_t o = 0;
    for (int i = 0; i < RT_NT; i++) {
        memcpy(all + o, rt_data[i], tensor_bytes(&rt_tensors[i]));
        o += tensor_bytes(&rt_tensors[i]);
    }
    for (size_t pos = 0, k = 1; pos < total; k = k % 97 + 1) {
        size_t n = total - pos < k ? total - pos : k;
        rc |= gguf_writer_write(w, all + pos, n);
        pos += n;
    }
    free(all);
    rc |= gguf_writer_finish(w);
    CHECKF(rc == 0, "%s", gguf_writer_error(w));
    gguf_writer_free(w);
    return rc ? -1 : 0;
}

#define ARR_CHECK(kv, T, et, arr, n) do { CHECK((kv) != NULL); if (kv) { \
    CHECK_EQ_INT((kv)->type, GGUF_TYPE_ARRAY); CHECK_EQ_INT((kv)->arr_type, et); CHECK_EQ_INT((kv)->arr_n, n); \
    CHECK(memcmp((kv)->val, arr, sizeof(T) * (n)) == 0); } } while (0)

TEST(round_trip) {
    make_rt_data();
    const char *path = path_in_tmp("rt.gguf");
    if (write_rt(path, true)) return;
    CHECK(!file_exists(path_in_tmp("rt.gguf.tmp")));
    ds4_err e = {{0}};
    gguf_file *f = gguf_open(path, &e);
    CHECKF(f != NULL, "%s", e.msg);
    if (!f) return;
    CHECK_EQ_INT(gguf_version(f), 3);
    CHECK_EQ_INT(gguf_alignment(f), 64);
    CHECK_EQ_INT(gguf_data_offset(f) % 64, 0);
    CHECK(strcmp(gguf_path(f), path) == 0);
    CHECK_EQ_INT(gguf_n_kv(f), 30);
    CHECK_EQ_INT(gguf_n_tensors(f), RT_NT);

    /* Key order is preserved and general.alignment is a u32. */
    CHECK(gguf_str_eq(gguf_kv_at(f, 0)->key, "general.architecture"));
    CHECK(gguf_str_eq(gguf_kv_at(f, 1)->key, "general.alignment"));
    CHECK_EQ_INT(gguf_kv_at(f, 1)->type, GGUF_TYPE_UINT32);
    CHECK(gguf_kv_at(f, 30) == NULL && gguf_kv_at(f, -1) == NULL);

    uint32_t u32; uint64_t u64; int64_t i64; float f32; bool b; gguf_str s; char buf[64];
    CHECK(gguf_get_u32(f, "t.u8", &u32, &e) == 0 && u32 == 200);
    CHECK(gguf_get_i64(f, "t.i8", &i64, &e) == 0 && i64 == -100);
    CHECK(gguf_get_u32(f, "t.u16", &u32, &e) == 0 && u32 == 60000);
    CHECK(gguf_get_i64(f, "t.i16", &i64, &e) == 0 && i64 == -30000);
    CHECK(gguf_get_u32(f, "t.u32", &u32, &e) == 0 && u32 == 4000000000u);
    CHECK(gguf_get_i64(f, "t.i32", &i64, &e) == 0 && i64 == -2000000000);
    CHECK(gguf_get_f32(f, "t.f32", &f32, &e) == 0 && f32 == 1.5f);
    CHECK(gguf_get_bool(f, "t.bool", &b, &e) == 0 && b);
    CHECK(gguf_get_str(f, "t.str", &s, &e) == 0 && gguf_str_eq(s, "h\xc3\xa9llo"));
    CHECK(strcmp(gguf_str_copy(s, buf, sizeof buf), "h\xc3\xa9llo") == 0);
    CHECK(strcmp(gguf_str_copy(s, buf, 3), "h\xc3") == 0);
    CHECK(gguf_get_str(f, "t.empty", &s, &e) == 0 && s.len == 0 && gguf_str_eq(s, ""));
    CHECK(gguf_get_u64(f, "t.u64", &u64, &e) == 0 && u64 == (1ull << 40) + 7);
    CHECK(gguf_get_u64(f, "t.u64max", &u64, &e) == 0 && u64 == UINT64_MAX);
    CHECK(gguf_get_i64(f, "t.i64", &i64, &e) == 0 && i64 == -(1ll << 40));
    CHECK(gguf_get_f32(f, "t.f64", &f32, &e) == 0 && f32 == 3.25f);
    CHECK(gguf_get_str(f, "general.architecture", &s, &e) == 0 && gguf_str_eq(s, "deepseek4"));

    const gguf_kv *kv;
    kv = gguf_find_kv(f, "a.u8"); ARR_CHECK(kv, uint8_t, GGUF_TYPE_UINT8, a_u8, 5);
    kv = gguf_find_kv(f, "a.i8"); ARR_CHECK(kv, int8_t, GGUF_TYPE_INT8, a_i8, 5);
    kv = gguf_find_kv(f, "a.u16"); ARR_CHECK(kv, uint16_t, GGUF_TYPE_UINT16, a_u16, 5);
    kv = gguf_find_kv(f, "a.i16"); ARR_CHECK(kv, int16_t, GGUF_TYPE_INT16, a_i16, 5);
    kv = gguf_find_kv(f, "a.u32"); ARR_CHECK(kv, uint32_t, GGUF_TYPE_UINT32, a_u32, 5);
    kv = gguf_find_kv(f, "a.i32"); ARR_CHECK(kv, int32_t, GGUF_TYPE_INT32, a_i32, 5);
    kv = gguf_find_kv(f, "a.f32"); ARR_CHECK(kv, float, GGUF_TYPE_FLOAT32, a_f32, 5);
    kv = gguf_find_kv(f, "a.bool"); ARR_CHECK(kv, uint8_t, GGUF_TYPE_BOOL, a_bool, 3);
    kv = gguf_find_kv(f, "a.u64"); ARR_CHECK(kv, uint64_t, GGUF_TYPE_UINT64, a_u64, 5);
    kv = gguf_find_kv(f, "a.i64"); ARR_CHECK(kv, int64_t, GGUF_TYPE_INT64, a_i64, 5);
    kv = gguf_find_kv(f, "a.f64"); ARR_CHECK(kv, double, GGUF_TYPE_FLOAT64, a_f64, 5);
    kv = gguf_find_kv(f, "a.empty"); ARR_CHECK(kv, uint32_t, GGUF_TYPE_UINT32, a_u32, 0);

    /* Element accessors convert. */
    int64_t v; float fv;
    kv = gguf_find_kv(f, "a.i8");
    CHECK(gguf_arr_i64(kv, 0, &v) == 0 && v == -128);
    CHECK(gguf_arr_f32(kv, 4, &fv) == 0 && fv == 127.f);
    CHECK(gguf_arr_i64(kv, 5, &v) == -2); /* out of range */
    kv = gguf_find_kv(f, "a.u64");
    CHECK(gguf_arr_i64(kv, 3, &v) == 0 && v == 1ll << 40);
    CHECK(gguf_arr_i64(kv, 2, &v) == -2); /* UINT64_MAX does not fit */
    kv = gguf_find_kv(f, "a.i64");
    CHECK(gguf_arr_i64(kv, 0, &v) == 0 && v == INT64_MIN);
    kv = gguf_find_kv(f, "a.f64");
    CHECK(gguf_arr_f32(kv, 1, &fv) == 0 && fv == -2.5f);
    CHECK(gguf_arr_i64(kv, 1, &v) == -2);
    kv = gguf_find_kv(f, "a.f32");
    CHECK(gguf_arr_f32(kv, 2, &fv) == 0 && fv == 3.25f);
    kv = gguf_find_kv(f, "a.bool");
    CHECK(gguf_arr_i64(kv, 0, &v) == 0 && v == 1);
    CHECK(gguf_arr_str(kv, 0).ptr == NULL);

    kv = gguf_find_kv(f, "a.str");
    CHECK(kv && kv->arr_type == GGUF_TYPE_STRING && kv->arr_n == 4);
    for (int i = 0; i < 4; i++) CHECK(gguf_str_eq(gguf_arr_str(kv, (uint64_t)i), a_str[i]));
    CHECK(gguf_arr_str(kv, 4).ptr == NULL);
    kv = gguf_find_kv(f, "a.str_empty");
    CHECK(kv && kv->arr_type == GGUF_TYPE_STRING && kv->arr_n == 0);

    for (int i = 0; i < RT_NT; i++) {
        const tdecl *d = &rt_tensors[i];
        const gguf_tensor *t = gguf_find_tensor(f, d->name);
        CHECKF(t == gguf_tensor_at(f, i), "%s", d->name);
        if (!t) continue;
        CHECK(gguf_str_eq(t->name, d->name));
        CHECK_EQ_INT(t->type, d->type);
        CHECK_EQ_INT(t->n_dims, d->n_dims);
        for (int j = 0; j < 4; j++) CHECK_EQ_INT(t->ne[j], j < (int)d->n_dims ? d->ne[j] : 1);
        CHECK_EQ_INT(t->nbytes, tensor_bytes(d));
        CHECK_EQ_INT(t->offset % 64, 0);
        CHECK((const uint8_t *)t->data == (const uint8_t *)gguf_base(f) + gguf_data_offset(f) + t->offset);
        CHECK(memcmp(t->data, rt_data[i], t->nbytes) == 0);
    }
    CHECK_EQ_INT(gguf_tensor_at(f, 2)->nbytes, 6 * 2 * 34);
    CHECK(gguf_find_tensor(f, "nope") == NULL);
    CHECK(gguf_find_kv(f, "nope") == NULL);
    CHECK(gguf_find_tensor(f, "a.weigh") == NULL);
    gguf_close(f);
}

TEST(getter_conversions) {
    const char *path = path_in_tmp("rt.gguf");
    ds4_err e = {{0}};
    gguf_file *f = gguf_open(path, &e);
    CHECKF(f != NULL, "%s", e.msg);
    if (!f) return;
    uint32_t u32; uint64_t u64; int64_t i64; float f32; bool b; gguf_str s;
    CHECK(gguf_get_u64(f, "t.u8", &u64, &e) == 0 && u64 == 200);
    CHECK(gguf_get_i64(f, "t.u32", &i64, &e) == 0 && i64 == 4000000000ll);
    CHECK_EQ_INT(gguf_get_u32(f, "t.i8", &u32, &e), -2);
    CHECK_STR_CONTAINS(e.msg, "key 't.i8' has type i8 and value -100, which does not fit u32");
    CHECK_EQ_INT(gguf_get_u64(f, "t.i64", &u64, &e), -2);
    CHECK_STR_CONTAINS(e.msg, "does not fit u64");
    CHECK_EQ_INT(gguf_get_u32(f, "t.u64", &u32, &e), -2);
    CHECK_STR_CONTAINS(e.msg, "'t.u64' has type u64 and value 1099511627783");
    CHECK_EQ_INT(gguf_get_i64(f, "t.u64max", &i64, &e), -2);
    CHECK_STR_CONTAINS(e.msg, "does not fit i64");
    CHECK_EQ_INT(gguf_get_u32(f, "missing.key", &u32, &e), -1);
    CHECK_STR_CONTAINS(e.msg, "key 'missing.key' not found");
    CHECK_EQ_INT(gguf_get_u32(f, "t.str", &u32, &e), -2);
    CHECK_STR_CONTAINS(e.msg, "key 't.str' has type string, expected an integer");
    CHECK_EQ_INT(gguf_get_u32(f, "a.u32", &u32, &e), -2);
    CHECK_STR_CONTAINS(e.msg, "key 'a.u32' is an array of u32");
    CHECK_EQ_INT(gguf_get_u32(f, "t.f32", &u32, &e), -2);
    CHECK_STR_CONTAINS(e.msg, "has type f32");
    CHECK_EQ_INT(gguf_get_f32(f, "t.u32", &f32, &e), -2);
    CHECK_STR_CONTAINS(e.msg, "key 't.u32' has type u32, expected f32 or f64");
    CHECK_EQ_INT(gguf_get_bool(f, "t.u8", &b, &e), -2);
    CHECK_STR_CONTAINS(e.msg, "expected bool");
    CHECK_EQ_INT(gguf_get_str(f, "t.bool", &s, &e), -2);
    CHECK_STR_CONTAINS(e.msg, "key 't.bool' has type bool, expected string");
    CHECK_EQ_INT(gguf_get_str(f, "nope", &s, NULL), -1); /* err may be NULL */
    CHECK(strcmp(gguf_type_name(GGUF_TYPE_FLOAT64), "f64") == 0);
    CHECK(strcmp(gguf_type_name((enum gguf_vtype)99), "invalid") == 0);
    CHECK_EQ_INT(gguf_vtype_size(GGUF_TYPE_INT16), 2);
    CHECK_EQ_INT(gguf_vtype_size(GGUF_TYPE_STRING), 0);
    gguf_close(f);
}

/* Copies every kv and tensor of src into dst; returns 0 on success. */
static int rewrite(const char *src, const char *dst) {
    ds4_err e = {{0}};
    gguf_file *f = gguf_open(src, &e);
    CHECKF(f != NULL, "%s", e.msg);
    if (!f) return -1;
    gguf_writer *w = gguf_writer_open(dst, &e);
    CHECKF(w != NULL, "%s", e.msg);
    if (!w) { gguf_close(f); return -1; }
    int rc = 0;
    for (int64_t i = 0; i < gguf_n_kv(f); i++) rc |= gguf_writer_copy_kv(w, gguf_kv_at(f, i));
    char name[256];
    for (int64_t i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        rc |= gguf_writer_add_tensor(w, gguf_str_copy(t->name, name, sizeof name), t->type, t->n_dims, t->ne) < 0;
    }
    rc |= gguf_writer_begin_data(w);
    for (int64_t i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        rc |= gguf_writer_write(w, t->data, t->nbytes);
    }
    rc |= gguf_writer_finish(w);
    CHECKF(rc == 0, "%s", gguf_writer_error(w));
    gguf_writer_free(w);
    gguf_close(f);
    return rc;
}

static void check_identical(const char *a, const char *b) {
    size_t na = 0, nb = 0;
    uint8_t *pa = read_all(a, &na), *pb = read_all(b, &nb);
    CHECK(pa && pb);
    CHECK_EQ_INT(na, nb);
    CHECKF(pa && pb && na == nb && memcmp(pa, pb, na) == 0, "%s and %s differ", a, b);
    free(pa);
    free(pb);
}

TEST(rewrite_identical) {
    const char *a = path_in_tmp("rt.gguf"), *b = path_in_tmp("rt2.gguf");
    if (rewrite(a, b) == 0) check_identical(a, b);
    /* Default alignment (no general.alignment key). */
    const char *c = path_in_tmp("rt32.gguf"), *d = path_in_tmp("rt32b.gguf");
    if (write_rt(c, false) == 0 && rewrite(c, d) == 0) check_identical(c, d);
    ds4_err e = {{0}};
    gguf_file *f = gguf_open(c, &e);
    CHECKF(f, "%s", e.msg);
    if (f) {
        CHECK_EQ_INT(gguf_alignment(f), 32);
        CHECK(gguf_find_kv(f, "general.alignment") == NULL);
        gguf_close(f);
    }
}

/* ---- writer errors ---- */

static gguf_writer *wopen(const char *name) {
    ds4_err e = {{0}};
    gguf_writer *w = gguf_writer_open(path_in_tmp(name), &e);
    CHECKF(w != NULL, "%s", e.msg);
    return w;
}

/* After a failed writer: no file under the final name, tmp removed on free. */
static void check_no_output(gguf_writer *w, const char *name) {
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp", path_in_tmp(name));
    CHECK(file_exists(tmp));
    gguf_writer_free(w);
    CHECK(!file_exists(path_in_tmp(name)));
    CHECK(!file_exists(tmp));
}

TEST(writer_errors) {
    int64_t ne[2] = {8, 2};
    gguf_writer *w = wopen("dupkey.gguf");
    if (w) {
        CHECK(gguf_writer_add_u32(w, "k", 1) == 0);
        CHECK(gguf_writer_add_str(w, "k", "x") == -1);
        CHECK_STR_CONTAINS(gguf_writer_error(w), "duplicate key 'k'");
        CHECK(gguf_writer_add_u32(w, "other", 1) == -1); /* sticky */
        CHECK(gguf_writer_finish(w) == -1);
        CHECK_STR_CONTAINS(gguf_writer_error(w), "duplicate key 'k'");
        check_no_output(w, "dupkey.gguf");
    }
    w = wopen("duptensor.gguf");
    if (w) {
        CHECK(gguf_writer_add_tensor(w, "t", DS4_TYPE_F32, 2, ne) == 0);
        CHECK(gguf_writer_add_tensor(w, "t", DS4_TYPE_F32, 2, ne) == -1);
        CHECK_STR_CONTAINS(gguf_writer_error(w), "duplicate tensor name 't'");
        check_no_output(w, "duptensor.gguf");
    }
    w = wopen("short.gguf");
    if (w) {
        float x[16] = {0};
        CHECK(gguf_writer_add_tensor(w, "t0", DS4_TYPE_F32, 1, ne) == 0);
        CHECK(gguf_writer_add_tensor(w, "t1", DS4_TYPE_F32, 2, ne) == 1);
        CHECK(gguf_writer_begin_data(w) == 0);
        CHECK(gguf_writer_write(w, x, 32 + 10) == 0);
        CHECK(gguf_writer_finish(w) == -1);
        CHECK_STR_CONTAINS(gguf_writer_error(w), "tensor 't1' (#1 of 2) got 10 of 64 bytes");
        check_no_output(w, "short.gguf");
    }
    w = wopen("long.gguf");
    if (w) {
        float x[16] = {0};
        CHECK(gguf_writer_add_tensor(w, "t0", DS4_TYPE_F32, 2, ne) == 0);
        CHECK(gguf_writer_begin_data(w) == 0);
        CHECK(gguf_writer_write(w, x, 60) == 0);
        CHECK(gguf_writer_write(w, x, 8) == -1);
        CHECK_STR_CONTAINS(gguf_writer_error(w), "too many bytes: all 1 tensors are complete but 4 more");
        check_no_output(w, "long.gguf");
    }
    w = wopen("badshape.gguf");
    if (w) {
        int64_t q[1] = {33};
        CHECK(gguf_writer_add_tensor(w, "q", DS4_TYPE_Q8_0, 1, q) == -1);
        CHECK_STR_CONTAINS(gguf_writer_error(w), "tensor 'q': ne[0] = 33 is not a multiple of the q8_0 block size 32");
        check_no_output(w, "badshape.gguf");
    }
    w = wopen("badtype.gguf");
    if (w) {
        CHECK(gguf_writer_add_tensor(w, "x", 99, 2, ne) == -1);
        CHECK_STR_CONTAINS(gguf_writer_error(w), "tensor 'x': unknown or unsupported tensor type id 99");
        check_no_output(w, "badtype.gguf");
    }
    w = wopen("zero.gguf");
    if (w) {
        int64_t z[2] = {4, 0};
        CHECK(gguf_writer_add_tensor(w, "z", DS4_TYPE_F32, 2, z) == -1);
        CHECK_STR_CONTAINS(gguf_writer_error(w), "tensor 'z': ne[1] = 0 is not positive");
        check_no_output(w, "zero.gguf");
    }
    w = wopen("align.gguf");
    if (w) {
        gguf_writer_set_alignment(w, 48);
        CHECK(gguf_writer_finish(w) == -1);
        CHECK_STR_CONTAINS(gguf_writer_error(w), "alignment 48 is not a power of two");
        check_no_output(w, "align.gguf");
    }
    w = wopen("order.gguf");
    if (w) {
        CHECK(gguf_writer_write(w, ne, 4) == -1);
        CHECK_STR_CONTAINS(gguf_writer_error(w), "before gguf_writer_begin_data");
        check_no_output(w, "order.gguf");
    }
    w = wopen("late.gguf");
    if (w) {
        CHECK(gguf_writer_begin_data(w) == 0);
        CHECK(gguf_writer_add_u32(w, "k", 1) == -1);
        CHECK_STR_CONTAINS(gguf_writer_error(w), "adding a key after gguf_writer_begin_data");
        check_no_output(w, "late.gguf");
    }
    w = wopen("boolarr.gguf");
    if (w) {
        uint8_t bad[2] = {1, 2};
        CHECK(gguf_writer_add_arr(w, "b", GGUF_TYPE_BOOL, bad, 2) == -1);
        CHECK_STR_CONTAINS(gguf_writer_error(w), "key 'b': bool element 1 is 2");
        check_no_output(w, "boolarr.gguf");
    }
    ds4_err e = {{0}};
    CHECK(gguf_writer_open("/nonexistent-dir/x.gguf", &e) == NULL);
    CHECK_STR_CONTAINS(e.msg, "/nonexistent-dir/x.gguf.tmp: cannot create");

    /* Metadata-only file: finish without begin_data, alignment via a plain key. */
    w = wopen("meta.gguf");
    if (w) {
        CHECK(gguf_writer_add_u32(w, "general.alignment", 16) == 0);
        CHECK(gguf_writer_finish(w) == 0);
        CHECK(gguf_writer_finish(w) == -1);
        CHECK_STR_CONTAINS(gguf_writer_error(w), "called twice");
        gguf_writer_free(w);
        gguf_file *f = gguf_open(path_in_tmp("meta.gguf"), &e);
        CHECKF(f, "%s", e.msg);
        if (f) { CHECK_EQ_INT(gguf_alignment(f), 16); CHECK_EQ_INT(gguf_n_tensors(f), 0); gguf_close(f); }
    }
}

/* A write that hits the file size limit must be reported (stands in for ENOSPC). */
TEST(writer_io_error) {
    struct rlimit old, lim;
    if (getrlimit(RLIMIT_FSIZE, &old) != 0) return;
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    gguf_writer *w = wopen("fsize.gguf");
    if (!w) return;
    int64_t ne[1] = {1 << 20}; /* 4 MiB of f32 */
    CHECK(gguf_writer_add_tensor(w, "big", DS4_TYPE_F32, 1, ne) == 0);
    lim = old;
    lim.rlim_cur = 100000;
    setrlimit(RLIMIT_FSIZE, &lim);
    int rc = gguf_writer_begin_data(w);
    static uint8_t chunk[65536];
    for (int i = 0; i < 64 && rc == 0; i++) rc = gguf_writer_write(w, chunk, sizeof chunk);
    if (rc == 0) rc = gguf_writer_finish(w);
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, prev);
    CHECK(rc == -1);
    CHECK_STR_CONTAINS(gguf_writer_error(w), "fsize.gguf.tmp: write: File too large");
    check_no_output(w, "fsize.gguf");
}

/* ---- corrupt files ---- */

static const uint64_t ne8[1] = {8};

/* One u32 key, one f32 [8] tensor at offset 0, 32 data bytes. */
static void valid_small(bb *b) {
    hdr(b, 3, 1, 1);
    kv_u32(b, "a", 1);
    tinfo(b, "t", 1, ne8, DS4_TYPE_F32, 0);
    bb_pad(b, 32);
    bb_zeros(b, 32);
}

TEST(corrupt_header) {
    bb b = {0};
    valid_small(&b);
    EXPECT_OK(&b);
    b.p[3] = 'X';
    EXPECT_FAIL(&b, "bad magic 0x58554747, not a GGUF file");
    b.n = 0;
    hdr(&b, 7, 0, 0);
    EXPECT_FAIL(&b, "unsupported GGUF version 7");
    b.n = 0;
    hdr(&b, 1, 0, 0);
    EXPECT_FAIL(&b, "unsupported GGUF version 1");
    b.n = 0;
    hdr(&b, 0x03000000u, 0, 0);
    EXPECT_FAIL(&b, "big-endian");
    b.n = 0;
    hdr(&b, 2, 0, 0); /* v2 accepted, empty file ok */
    EXPECT_OK(&b);
    b.n = 2;
    EXPECT_FAIL(&b, "file too small (2 bytes)");
    b.n = 0;
    hdr(&b, 3, 0, 0);
    b.n = 20;
    EXPECT_FAIL(&b, "file truncated: header ends at byte 24 but file has 20 bytes");
    b.n = 0;
    hdr(&b, 3, 0, 1000);
    kv_u32(&b, "a", 1);
    EXPECT_FAIL(&b, "n_kv = 1000 key/values cannot fit in the 17 bytes left after the header");
    b.n = 0;
    hdr(&b, 3, 1ull << 60, 0);
    EXPECT_FAIL(&b, "n_tensors = 1152921504606846976 tensor infos cannot fit");
    free(b.p);
}

TEST(corrupt_metadata) {
    bb b = {0};
    /* Key length far past the end. */
    hdr(&b, 3, 0, 1);
    bb_u64(&b, 1ull << 62);
    bb_zeros(&b, 16);
    EXPECT_FAIL(&b, "key #0: file truncated or corrupt: metadata: string length 4611686018427387904 at byte 24");
    /* Huge numeric array count; count x size would overflow 64 bits. */
    b.n = 0;
    hdr(&b, 3, 0, 1);
    bb_str(&b, "arr");
    bb_u32(&b, GGUF_TYPE_ARRAY);
    bb_u32(&b, GGUF_TYPE_UINT32);
    bb_u64(&b, 1ull << 62);
    bb_zeros(&b, 16);
    EXPECT_FAIL(&b, "key 'arr': array of 4611686018427387904 u32 elements runs past end of file");
    b.n = 0;
    hdr(&b, 3, 0, 1);
    bb_str(&b, "tokens");
    bb_u32(&b, GGUF_TYPE_ARRAY);
    bb_u32(&b, GGUF_TYPE_STRING);
    bb_u64(&b, 1000);
    bb_str(&b, "a");
    EXPECT_FAIL(&b, "key 'tokens': array of 1000 strings cannot fit");
    /* String element length past the end. */
    b.n = 0;
    hdr(&b, 3, 0, 1);
    bb_str(&b, "tokens");
    bb_u32(&b, GGUF_TYPE_ARRAY);
    bb_u32(&b, GGUF_TYPE_STRING);
    bb_u64(&b, 2);
    bb_str(&b, "a");
    bb_u64(&b, 1000);
    bb_zeros(&b, 10);
    EXPECT_FAIL(&b, "key 'tokens' element 1: file truncated or corrupt: metadata: string length 1000");
    b.n = 0;
    hdr(&b, 3, 0, 1);
    bb_str(&b, "nest");
    bb_u32(&b, GGUF_TYPE_ARRAY);
    bb_u32(&b, GGUF_TYPE_ARRAY);
    bb_u64(&b, 0);
    EXPECT_FAIL(&b, "key 'nest': nested arrays are not supported");
    b.n = 0;
    hdr(&b, 3, 0, 1);
    bb_str(&b, "bad");
    bb_u32(&b, 13);
    bb_u32(&b, 0);
    EXPECT_FAIL(&b, "key 'bad': unknown value type 13");
    b.n = 0;
    hdr(&b, 3, 0, 1);
    bb_str(&b, "bad");
    bb_u32(&b, GGUF_TYPE_ARRAY);
    bb_u32(&b, 77);
    bb_u64(&b, 0);
    EXPECT_FAIL(&b, "key 'bad': unknown array element type 77");
    b.n = 0;
    hdr(&b, 3, 0, 1);
    bb_str(&b, "flag");
    bb_u32(&b, GGUF_TYPE_BOOL);
    bb_put(&b, "\x02", 1);
    EXPECT_FAIL(&b, "key 'flag': bool value 2 at byte");
    b.n = 0;
    hdr(&b, 3, 0, 1);
    bb_str(&b, "flags");
    bb_u32(&b, GGUF_TYPE_ARRAY);
    bb_u32(&b, GGUF_TYPE_BOOL);
    bb_u64(&b, 3);
    bb_put(&b, "\x01\x00\xff", 3);
    EXPECT_FAIL(&b, "key 'flags': bool value 255");
    b.n = 0;
    hdr(&b, 3, 0, 2);
    kv_u32(&b, "a", 1);
    kv_u32(&b, "a", 2);
    EXPECT_FAIL(&b, "duplicate key 'a'");
    b.n = 0;
    hdr(&b, 3, 0, 1);
    kv_u32(&b, "general.alignment", 48);
    EXPECT_FAIL(&b, "general.alignment = 48 is not a power of two");
    b.n = 0;
    hdr(&b, 3, 0, 1);
    kv_u32(&b, "general.alignment", 0);
    EXPECT_FAIL(&b, "general.alignment = 0 is not a power of two");
    b.n = 0;
    hdr(&b, 3, 0, 1);
    bb_str(&b, "general.alignment");
    bb_u32(&b, GGUF_TYPE_STRING);
    bb_str(&b, "32");
    EXPECT_FAIL(&b, "general.alignment has type string, expected an integer");
    free(b.p);
}

TEST(corrupt_tensors) {
    bb b = {0};
    /* Data past the end. */
    hdr(&b, 3, 1, 0);
    tinfo(&b, "blk.0.attn_q_a.weight", 1, ne8, DS4_TYPE_F32, 32);
    bb_pad(&b, 32);
    bb_zeros(&b, 32);
    EXPECT_FAIL(&b, "tensor 'blk.0.attn_q_a.weight': data [128, 160) past end of file (128 bytes)");
    b.n = 0;
    hdr(&b, 3, 1, 0);
    tinfo(&b, "t", 1, ne8, DS4_TYPE_F32, 4);
    bb_pad(&b, 32);
    bb_zeros(&b, 64);
    EXPECT_FAIL(&b, "tensor 't': offset 4 is not a multiple of the alignment 32");
    b.n = 0;
    hdr(&b, 3, 1, 0);
    tinfo(&b, "t", 1, ne8, DS4_TYPE_F32, UINT64_MAX - 31);
    bb_pad(&b, 32);
    bb_zeros(&b, 64);
    EXPECT_FAIL(&b, "tensor 't': offset 18446744073709551584 + size 32 overflows");
    b.n = 0;
    hdr(&b, 3, 1, 0);
    uint64_t ne5[5] = {1, 1, 1, 1, 1};
    tinfo(&b, "five", 5, ne5, DS4_TYPE_F32, 0);
    bb_pad(&b, 32);
    bb_zeros(&b, 32);
    EXPECT_FAIL(&b, "tensor 'five': n_dims = 5 exceeds the maximum of 4");
    b.n = 0;
    hdr(&b, 3, 1, 0);
    uint64_t ne0[2] = {8, 0};
    tinfo(&b, "z", 2, ne0, DS4_TYPE_F32, 0);
    bb_pad(&b, 32);
    bb_zeros(&b, 32);
    EXPECT_FAIL(&b, "tensor 'z': ne[1] = 0 is not positive");
    b.n = 0;
    hdr(&b, 3, 1, 0);
    uint64_t neg[1] = {(uint64_t)-3};
    tinfo(&b, "n", 1, neg, DS4_TYPE_F32, 0);
    bb_pad(&b, 32);
    bb_zeros(&b, 32);
    EXPECT_FAIL(&b, "tensor 'n': ne[0] = -3 is not positive");
    b.n = 0;
    hdr(&b, 3, 1, 0);
    uint64_t big[2] = {1ull << 32, 1ull << 32};
    tinfo(&b, "o", 2, big, DS4_TYPE_F32, 0);
    bb_pad(&b, 32);
    EXPECT_FAIL(&b, "tensor 'o': shape overflows: element count exceeds 2^63");
    b.n = 0;
    hdr(&b, 3, 1, 0);
    uint64_t big1[1] = {1ull << 62};
    tinfo(&b, "o", 1, big1, DS4_TYPE_F32, 0);
    bb_pad(&b, 32);
    EXPECT_FAIL(&b, "tensor 'o': shape overflows: byte size exceeds 2^63");
    b.n = 0;
    hdr(&b, 3, 1, 0);
    tinfo(&b, "u", 1, ne8, 99, 0);
    bb_pad(&b, 32);
    bb_zeros(&b, 32);
    EXPECT_FAIL(&b, "tensor 'u': unknown or unsupported tensor type id 99");
    b.n = 0;
    hdr(&b, 3, 1, 0);
    tinfo(&b, "u", 1, ne8, 0xfffffff0u, 0);
    bb_pad(&b, 32);
    bb_zeros(&b, 32);
    EXPECT_FAIL(&b, "tensor 'u': unknown or unsupported tensor type id 4294967280");
    b.n = 0;
    hdr(&b, 3, 1, 0);
    uint64_t ne33[1] = {33};
    tinfo(&b, "q", 1, ne33, DS4_TYPE_Q8_0, 0);
    bb_pad(&b, 32);
    bb_zeros(&b, 64);
    EXPECT_FAIL(&b, "tensor 'q': ne[0] = 33 is not a multiple of the q8_0 block size 32");
    b.n = 0;
    hdr(&b, 3, 2, 0);
    tinfo(&b, "t", 1, ne8, DS4_TYPE_F32, 0);
    tinfo(&b, "t", 1, ne8, DS4_TYPE_F32, 32);
    bb_pad(&b, 32);
    bb_zeros(&b, 64);
    EXPECT_FAIL(&b, "duplicate tensor name 't'");
    b.n = 0;
    hdr(&b, 3, 2, 0);
    uint64_t ne16[1] = {16};
    tinfo(&b, "x", 1, ne16, DS4_TYPE_F32, 0);
    tinfo(&b, "y", 1, ne8, DS4_TYPE_F32, 32);
    bb_pad(&b, 32);
    bb_zeros(&b, 96);
    EXPECT_FAIL(&b, "tensors 'x' and 'y' overlap");
    /* Directory cut in the middle of a tensor info. */
    b.n = 0;
    hdr(&b, 3, 2, 0);
    tinfo(&b, "x", 1, ne8, DS4_TYPE_F32, 0);
    tinfo(&b, "y", 1, ne8, DS4_TYPE_F32, 32);
    size_t full = b.n;
    b.n = full - 4;
    EXPECT_FAIL(&b, "file truncated: tensor directory ends at byte 90 but file has 86 bytes");
    /* n_dims = 0 is a scalar (ne all 1). */
    b.n = 0;
    hdr(&b, 3, 1, 0);
    tinfo(&b, "s", 0, NULL, DS4_TYPE_F32, 0);
    bb_pad(&b, 32);
    bb_zeros(&b, 4);
    EXPECT_OK(&b);
    free(b.p);
}

TEST(open_path_errors) {
    ds4_err e = {{0}};
    CHECK(gguf_open(path_in_tmp("missing.gguf"), &e) == NULL);
    CHECK_STR_CONTAINS(e.msg, "missing.gguf: cannot open: No such file");
    CHECK(gguf_open(test_tmpdir(), &e) == NULL);
    CHECK_STR_CONTAINS(e.msg, "not a regular file");
    const char *p = path_in_tmp("bad.gguf");
    FILE *fp = fopen(p, "wb");
    if (fp) { fputs("GGUF\x07", fp); fclose(fp); }
    CHECK(gguf_open(p, &e) == NULL);
    CHECK_STR_CONTAINS(e.msg, "bad.gguf: file truncated: header ends at byte 8 but file has 5 bytes");
    fp = fopen(p, "wb");
    if (fp) fclose(fp);
    CHECK(gguf_open(p, &e) == NULL);
    CHECK_STR_CONTAINS(e.msg, "bad.gguf: file too small (0 bytes)");
}

/* A small but varied file from the writer, as a byte image. */
static uint8_t *small_image(size_t *n) {
    const char *path = path_in_tmp("small.gguf");
    ds4_err e = {{0}};
    gguf_writer *w = gguf_writer_open(path, &e);
    if (!w) return NULL;
    static const char *const toks[] = {"<s>", "a", "", "bc"};
    static const int32_t ratios[] = {0, 4, 128};
    int64_t ne1[2] = {3, 2}, ne2[1] = {32};
    gguf_writer_add_str(w, "general.architecture", "deepseek4");
    gguf_writer_set_alignment(w, 16);
    gguf_writer_add_u32(w, "deepseek4.block_count", 43);
    gguf_writer_add_f32(w, "deepseek4.rope.freq_base", 10000.f);
    gguf_writer_add_bool(w, "deepseek4.expert_weights_norm", true);
    gguf_writer_add_arr(w, "deepseek4.attention.compress_ratios", GGUF_TYPE_INT32, ratios, 3);
    gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", toks, 4);
    gguf_writer_add_tensor(w, "w", DS4_TYPE_F16, 2, ne1);
    gguf_writer_add_tensor(w, "q", DS4_TYPE_Q8_0, 1, ne2);
    gguf_writer_begin_data(w);
    uint8_t d[64];
    for (int i = 0; i < 64; i++) d[i] = (uint8_t)(i * 7);
    gguf_writer_write(w, d, 12 + 34);
    int rc = gguf_writer_finish(w);
    CHECKF(rc == 0, "%s", gguf_writer_error(w));
    gguf_writer_free(w);
    return rc ? NULL : read_all(path, n);
}

TEST(truncated_every_length) {
    size_t n = 0;
    uint8_t *img = small_image(&n);
    CHECK(img != NULL);
    if (!img) return;
    char msg[1024];
    uint8_t *c = NULL;
    gguf_file *f = open_copy(img, n, msg, &c);
    CHECKF(f, "%s", msg);
    if (!f) { free(img); return; }
    uint64_t end = 0; /* end of the last tensor's data; later bytes are padding */
    for (int64_t i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        uint64_t e = gguf_data_offset(f) + t->offset + t->nbytes;
        if (e > end) end = e;
    }
    gguf_close(f);
    free(c);
    int bad = 0;
    for (size_t len = 0; len < n; len++) {
        gguf_file *g = open_copy(img, len, msg, &c);
        if (len < end) {
            if (g || !msg[0]) { bad++; CHECKF(0, "prefix of %zu bytes opened (or no message)", len); }
        } else if (!g) {
            bad++;
            CHECKF(0, "prefix of %zu bytes (only padding cut) failed: %s", len, msg);
        }
        if (g) { gguf_close(g); free(c); }
    }
    CHECK_EQ_INT(bad, 0);
    free(img);
}

/* Touch everything a caller could touch, so ASan sees any bad pointer. */
static unsigned exercise(const gguf_file *f) {
    unsigned acc = 0;
    char key[256];
    for (int64_t i = 0; i < gguf_n_kv(f); i++) {
        const gguf_kv *kv = gguf_kv_at(f, i);
        gguf_str_copy(kv->key, key, sizeof key);
        uint32_t u32; uint64_t u64; int64_t i64; float f32; bool b; gguf_str s;
        acc += (unsigned)gguf_get_u32(f, key, &u32, NULL) + (unsigned)gguf_get_u64(f, key, &u64, NULL);
        acc += (unsigned)gguf_get_i64(f, key, &i64, NULL) + (unsigned)gguf_get_f32(f, key, &f32, NULL);
        acc += (unsigned)gguf_get_bool(f, key, &b, NULL);
        if (gguf_get_str(f, key, &s, NULL) == 0)
            for (uint64_t j = 0; j < s.len; j++) acc += (uint8_t)s.ptr[j];
        if (kv->type == GGUF_TYPE_ARRAY)
            for (uint64_t j = 0; j < kv->arr_n && j < 4096; j++) {
                acc += (unsigned)gguf_arr_i64(kv, j, &i64) + (unsigned)gguf_arr_f32(kv, j, &f32);
                gguf_str t = gguf_arr_str(kv, j);
                for (uint64_t k = 0; k < t.len; k++) acc += (uint8_t)t.ptr[k];
            }
    }
    for (int64_t i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        const uint8_t *d = t->data;
        for (uint64_t j = 0; j < t->nbytes; j++) acc += d[j];
        gguf_str_copy(t->name, key, sizeof key);
        acc += gguf_find_tensor(f, key) != NULL;
    }
    return acc;
}

TEST(fuzz_byte_flips) {
    size_t n = 0;
    uint8_t *img = small_image(&n);
    CHECK(img != NULL);
    if (!img) return;
    rng_state = 12345;
    int opened = 0;
    unsigned acc = 0;
    uint8_t *buf = malloc(n);
    const char *env = getenv("DS4_FUZZ_ITERS"); /* longer runs on demand */
    int iters = env ? atoi(env) : 5000;
    if (getenv("DS4_FUZZ_SEED")) rng_state = strtoull(getenv("DS4_FUZZ_SEED"), NULL, 0);
    for (int it = 0; it < iters; it++) {
        memcpy(buf, img, n);
        int flips = 1 + (int)(rnd() % 4);
        for (int k = 0; k < flips; k++) {
            size_t pos = (size_t)(rnd() % n);
            uint64_t r = rnd();
            switch (r % 4) {
            case 0: buf[pos] ^= (uint8_t)(1u << (r >> 8) % 8); break; /* one bit */
            case 1: buf[pos] = (uint8_t)(r >> 16); break;               /* random byte */
            case 2: buf[pos] = 0xff; break;                             /* big counts */
            default: buf[pos] = 0; break;
            }
        }
        size_t len = rnd() % 8 == 0 ? (size_t)(rnd() % (n + 1)) : n;
        char msg[1024];
        uint8_t *c = NULL;
        gguf_file *f = open_copy(buf, len, msg, &c);
        if (f) {
            opened++;
            acc += exercise(f);
            gguf_close(f);
            free(c);
        } else {
            CHECK(msg[0] != 0); /* every failure explains itself */
        }
    }
    printf("  fuzz: %d mutants, %d opened (checksum %u)\n", iters, opened, acc);
    free(buf);
    free(img);
}

/* Tokenizer-sized string arrays and a model-sized tensor directory stay fast. */
TEST(large_directory) {
    const char *path = path_in_tmp("large.gguf");
    ds4_err e = {{0}};
    gguf_writer *w = gguf_writer_open(path, &e);
    CHECKF(w, "%s", e.msg);
    if (!w) return;
    enum { NTOK = 129280, NT = 1300 };
    char **toks = malloc(NTOK * sizeof *toks);
    for (int i = 0; i < NTOK; i++) {
        toks[i] = malloc(16);
        snprintf(toks[i], 16, "tok%d", i);
    }
    gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)toks, NTOK);
    int64_t ne[1] = {32};
    char name[64];
    for (int i = 0; i < NT; i++) {
        snprintf(name, sizeof name, "blk.%d.t%d.weight", i / 30, i);
        gguf_writer_add_tensor(w, name, DS4_TYPE_F32, 1, ne);
    }
    gguf_writer_begin_data(w);
    float d[32] = {0};
    for (int i = 0; i < NT; i++) { d[0] = (float)i; gguf_writer_write(w, d, sizeof d); }
    int rc = gguf_writer_finish(w);
    CHECKF(rc == 0, "%s", gguf_writer_error(w));
    gguf_writer_free(w);

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    gguf_file *f = gguf_open(path, &e);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    CHECKF(f, "%s", e.msg);
    if (f) {
        double ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
        printf("  open with %d strings and %d tensors: %.1f ms\n", NTOK, NT, ms);
        CHECK(ms < 2000);
        const gguf_kv *kv = gguf_find_kv(f, "tokenizer.ggml.tokens");
        CHECK(kv && kv->arr_n == NTOK);
        CHECK(gguf_str_eq(gguf_arr_str(kv, 129279), "tok129279"));
        int found = 0;
        for (int rep = 0; rep < 10; rep++)
            for (int i = 0; i < NT; i++) {
                snprintf(name, sizeof name, "blk.%d.t%d.weight", i / 30, i);
                const gguf_tensor *t = gguf_find_tensor(f, name);
                found += t && ((const float *)t->data)[0] == (float)i;
            }
        CHECK_EQ_INT(found, 10 * NT);
        gguf_close(f);
    }
    for (int i = 0; i < NTOK; i++) free(toks[i]);
    free(toks);
}

static void remove_tmpdir(void) {
    DIR *d = opendir(test_tmpdir());
    if (!d) return;
    struct dirent *de;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) unlink(path_in_tmp(de->d_name));
    closedir(d);
    rmdir(test_tmpdir());
}

int main(void) {
    RUN(round_trip);
    RUN(getter_conversions);
    RUN(rewrite_identical);
    RUN(writer_errors);
    RUN(writer_io_error);
    RUN(corrupt_header);
    RUN(corrupt_metadata);
    RUN(corrupt_tensors);
    RUN(open_path_errors);
    RUN(truncated_every_length);
    RUN(fuzz_byte_flips);
    RUN(large_directory);
    for (int i = 0; i < RT_NT; i++) free(rt_data[i]);
    if (!test_failures) remove_tmpdir(); /* kept on failure, for a look */
    TEST_END();
}
