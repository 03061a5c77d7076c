/* Minimal test harness shared by every tests/test_*.c program.
 *
 * A test program is a list of TEST(name) functions run from main() with
 * RUN(name).  CHECK* macros record a failure with file:line and keep going,
 * so one run shows every broken assertion.  The program's exit status is
 * non-zero iff any check failed; tests/run.sh aggregates the programs into
 * the "N passed, N failed" line CI reads.
 *
 * Paths: test_data_dir() is ../shared (or $DS4_SHARED), test_tmpdir() a
 * fresh per-program scratch directory under $TMPDIR. */
#ifndef DS4_TEST_H
#define DS4_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int test_failures;
static int test_checks;
static const char *test_current = "";

#define CHECK(cond) do { test_checks++; if (!(cond)) { test_failures++; \
    fprintf(stderr, "  FAIL %s:%d [%s]: %s\n", __FILE__, __LINE__, test_current, #cond); } } while (0)
#define CHECKF(cond, ...) do { test_checks++; if (!(cond)) { test_failures++; \
    fprintf(stderr, "  FAIL %s:%d [%s]: %s: ", __FILE__, __LINE__, test_current, #cond); \
    fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } } while (0)
#define CHECK_EQ_INT(a, b) CHECKF((long long)(a) == (long long)(b), "%lld != %lld", (long long)(a), (long long)(b))
#define CHECK_STR_CONTAINS(hay, needle) CHECKF((hay) && strstr((hay), (needle)), "\"%s\" lacks \"%s\"", (hay) ? (hay) : "(null)", (needle))
#define CHECK_NEAR(a, b, tol) CHECKF(fabs((double)(a) - (double)(b)) <= (tol), "%.9g vs %.9g (tol %g)", (double)(a), (double)(b), (double)(tol))

#define TEST(name) static void test_##name(void)
#define RUN(name) do { int f0 = test_failures; test_current = #name; test_##name(); \
    printf("%s %s\n", test_failures == f0 ? "ok  " : "FAIL", #name); fflush(stdout); } while (0)
#define TEST_END() do { printf("%d checks, %d failed\n", test_checks, test_failures); \
    return test_failures ? 1 : 0; } while (0)

static inline const char *test_shared_dir(void) {
    const char *s = getenv("DS4_SHARED");
    return s ? s : "../shared";
}

/* A per-process scratch directory, created on first use. */
static inline const char *test_tmpdir(void) {
    static char dir[512];
    if (!dir[0]) {
        const char *t = getenv("TMPDIR");
        snprintf(dir, sizeof dir, "%s/ds4test.XXXXXX", t ? t : "/tmp");
        if (!mkdtemp(dir)) { perror("mkdtemp"); exit(2); }
    }
    return dir;
}

/* Directory holding the programs (./ or build-san/bin), for tests that run them. */
static inline const char *test_bindir(void) {
    const char *s = getenv("DS4_BIN");
    return s ? s : ".";
}

#endif
