/* What users type on command lines: numeric option values (util/num.h) and
 * token-id lists (util/ids.h).  Every accepted form, the range edges, and
 * each way a value is refused with the option and the value named. */
#include "test.h"

#include <stdint.h>

#include "util/ids.h"
#include "util/mem.h"
#include "util/num.h"

TEST(int_values) {
    ds4_err e = {{0}};
    long long x = -7;
    CHECK(ds4_parse_int("--n", "42", 0, 100, &x, &e) == 0 && x == 42);
    CHECK(ds4_parse_int("--n", "0", 0, 100, &x, &e) == 0 && x == 0);
    CHECK(ds4_parse_int("--n", "100", 0, 100, &x, &e) == 0 && x == 100);
    CHECK(ds4_parse_int("--n", "-5", -10, 10, &x, &e) == 0 && x == -5);
    CHECK(ds4_parse_int("--n", "9223372036854775807", 0, INT64_MAX, &x, &e) == 0 && x == INT64_MAX);
    /* refused: the value is left alone and the message names both */
    static const char *bad[] = { "", "abc", "12abc", "101", "-1", "1.5", "1e3", " 7", "+7", "0x10",
                                 "99999999999999999999" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        x = 55;
        e.msg[0] = 0;
        CHECKF(ds4_parse_int("--n", bad[i], 0, 100, &x, &e) != 0, "'%s' accepted", bad[i]);
        CHECK_EQ_INT(x, 55);
        const char *m = e.msg;
        CHECK_STR_CONTAINS(m, "--n expects an integer in [0, 100], got '");
        CHECK_STR_CONTAINS(m, bad[i]);
    }
}

TEST(uint_values) {
    ds4_err e = {{0}};
    uint64_t x = 0;
    CHECK(ds4_parse_uint("--seed", "18446744073709551615", 0, UINT64_MAX, &x, &e) == 0 && x == UINT64_MAX);
    CHECK(ds4_parse_uint("--seed", "1", 1, 1, &x, &e) == 0 && x == 1);
    /* strtoull would wrap "-1" to 2^64 - 1 */
    CHECK(ds4_parse_uint("--seed", "-1", 0, UINT64_MAX, &x, &e) != 0);
    CHECK_STR_CONTAINS((const char *)e.msg, "--seed expects an integer in [0, 18446744073709551615], got '-1'");
    CHECK(ds4_parse_uint("--seed", "18446744073709551616", 0, UINT64_MAX, &x, &e) != 0);
    CHECK(ds4_parse_uint("--mb", "0", 1, 10, &x, &e) != 0);
}

TEST(real_values) {
    ds4_err e = {{0}};
    double x = 0;
    CHECK(ds4_parse_real("--temp", "0.7", 0, 2, 0, &x, &e) == 0 && x == 0.7);
    CHECK(ds4_parse_real("--temp", "0", 0, 2, 0, &x, &e) == 0 && x == 0);
    CHECK(ds4_parse_real("--temp", "2", 0, 2, 0, &x, &e) == 0 && x == 2);
    CHECK(ds4_parse_real("--temp", "1e-1", 0, 2, 0, &x, &e) == 0 && x == 0.1);
    CHECK(ds4_parse_real("--temp", "-0.5", -1, 2, 0, &x, &e) == 0 && x == -0.5);
    /* an open lower bound: the bound itself is refused, just above it is not */
    CHECK(ds4_parse_real("--step-mul", "1", 1, 10, 1, &x, &e) != 0);
    CHECK_STR_CONTAINS((const char *)e.msg, "--step-mul expects a number in (1, 10], got '1'");
    CHECK(ds4_parse_real("--step-mul", "1.0001", 1, 10, 1, &x, &e) == 0 && x == 1.0001);
    static const char *bad[] = { "", "x", "2.5", "nan", "inf", "-inf", "1e999", "0.5abc", " 1", "+1" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        x = 1.25;
        CHECKF(ds4_parse_real("--temp", bad[i], 0, 2, 0, &x, &e) != 0, "'%s' accepted", bad[i]);
        CHECK(x == 1.25);
        CHECK_STR_CONTAINS((const char *)e.msg, "--temp expects a number in [0, 2], got '");
    }
}

TEST(id_lists) {
    ds4_err e = {{0}};
    int32_t *v = NULL;
    size_t n = 99;
    CHECK(ds4_parse_ids("1,5, 9\n12\t0\r\n", &v, &n, &e) == 0);
    CHECK_EQ_INT(n, 5);
    if (v && n == 5) CHECK(v[0] == 1 && v[1] == 5 && v[2] == 9 && v[3] == 12 && v[4] == 0);
    free(v);
    v = NULL;
    CHECK(ds4_parse_ids(" \n", &v, &n, &e) == 0 && n == 0);
    free(v);
    /* the message quotes the bad item alone, not the rest of the list */
    CHECK(ds4_parse_ids("1,2,x7,4,5", &v, &n, &e) != 0);
    CHECK_STR_CONTAINS((const char *)e.msg, "bad token id 'x7'");
    CHECK(strstr(e.msg, ",4") == NULL);
    CHECK(ds4_parse_ids("3,-2", &v, &n, &e) != 0);
    CHECK_STR_CONTAINS((const char *)e.msg, "'-2'");
    CHECK(ds4_parse_ids("2147483648", &v, &n, &e) != 0);
    CHECK(ds4_parse_ids("7x", &v, &n, &e) != 0);
    CHECK_STR_CONTAINS((const char *)e.msg, "'7x'");
}

/* Small and huge-page-sized buffers: aligned, zeroed, writable to the end;
 * sizes whose product overflows are refused, not wrapped. */
TEST(big_buffers) {
    size_t sizes[] = {1, 100, 4096, ((size_t)2 << 20) - 4, (size_t)2 << 20, ((size_t)5 << 20) + 12};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        size_t n = sizes[i];
        unsigned char *p = ds4_calloc_big(n, 1);
        CHECK(p != NULL);
        if (!p) continue;
        CHECK(((uintptr_t)p & 63) == 0);
        size_t nz = 0;
        for (size_t k = 0; k < n; k++) nz += p[k] != 0;
        CHECKF(nz == 0, "%zu of %zu bytes not zero", nz, n);
        memset(p, 0xab, n);
        CHECK(p[n - 1] == 0xab);
        free(p);
    }
    float *f = ds4_calloc_big(3 << 19, sizeof(float)); /* 6 MiB of floats */
    CHECK(f != NULL && f[(3 << 19) - 1] == 0.0f);
    free(f);
    CHECK(ds4_calloc_big(SIZE_MAX / 8, 16) == NULL);
    CHECK(ds4_calloc_big(2, SIZE_MAX - 8) == NULL);
    CHECK(ds4_alloc_big(SIZE_MAX - 100) == NULL);
}

int main(void) {
    RUN(int_values);
    RUN(uint_values);
    RUN(real_values);
    RUN(id_lists);
    RUN(big_buffers);
    TEST_END();
}
