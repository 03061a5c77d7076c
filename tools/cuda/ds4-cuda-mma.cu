/* ds4-cuda-mma: the Q8_0 tensor-core prefill product on the device.
 *
 *   1. the gate as the engine sees it (cu_mm_init: DS4_CUDA_MMA, self-test);
 *   2. the self-test's numbers (cu_mma_selftest: vs quant_ref.c's vec_dot,
 *      expected bitwise, and vs the dp4a path);
 *   3. per shape (rows x K x tokens; default Flash-like 4096 x 4096 x
 *      {64, 512, 2048} and 1024 x 4096 x 512): median time of the tensor-core
 *      and the dp4a product (activation quantization included in both), GF/s
 *      (2 rows K tokens / t), and max |tc - dp4a| / max |dp4a| on the full
 *      shape.
 *
 * Usage: ds4-cuda-mma [rows K tokens]...   Exit 1 if a check failed. */
#include "cuda/cu_common.cuh"

#include <math.h>
#include <string.h>

#define CK(x) CU_CHECK(x)

static int cmpf(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static uint64_t rng_s = 0x9e3779b97f4a7c15ull;
static uint32_t rng(void) {
    rng_s = rng_s * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng_s >> 33);
}
static float unif(void) { return (float)(rng() & 0xffffff) / 16777216.0f; }

typedef void (*mm_fn)(cudaStream_t, const dmat *, int64_t, int64_t, int64_t, const float *, int64_t, int, float *,
                      int64_t, uint8_t *);
static void run_tc(cudaStream_t st, const dmat *w, int64_t e, int64_t r0, int64_t nr, const float *X, int64_t ldx,
                   int n, float *Y, int64_t ldy, uint8_t *xq) {
    if (!cu_mm_q8_0_tc(st, w, e, r0, nr, X, ldx, n, Y, ldy, xq)) {
        fprintf(stderr, "tensor-core path does not apply\n");
        exit(1);
    }
}

static float median_ms(cudaStream_t st, mm_fn f, const dmat *w, int64_t M, const float *X, int64_t K, int n,
                       float *Y, uint8_t *xq) {
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    f(st, w, 0, 0, M, X, K, n, Y, M, xq);
    CK(cudaStreamSynchronize(st));
    enum { R = 15 };
    float t[R];
    for (int i = 0; i < R; i++) {
        CK(cudaEventRecord(a, st));
        f(st, w, 0, 0, M, X, K, n, Y, M, xq);
        CK(cudaEventRecord(b, st));
        CK(cudaEventSynchronize(b));
        CK(cudaEventElapsedTime(&t[i], a, b));
    }
    qsort(t, R, sizeof(float), cmpf);
    CK(cudaEventDestroy(a));
    CK(cudaEventDestroy(b));
    return t[R / 2];
}

static int shape(cudaStream_t st, int64_t M, int64_t K, int n) {
    size_t rb = (size_t)(K / 32) * 34, wb = (size_t)M * rb;
    uint8_t *hw = (uint8_t *)malloc(wb);
    float *hx = (float *)malloc(sizeof(float) * (size_t)n * K);
    for (size_t b = 0; b < wb / 34; b++) {
        ds4_fp16 h = ds4_f32_to_fp16((0.25f + unif()) * 0.02f * (rng() & 1 ? -1.0f : 1.0f));
        memcpy(hw + b * 34, &h, 2);
        for (int j = 0; j < 32; j++) hw[b * 34 + 2 + j] = (uint8_t)rng();
    }
    for (size_t i = 0; i < (size_t)n * K; i++) hx[i] = 2.0f * unif() - 1.0f;
    uint8_t *dw, *xq;
    float *dx, *y1, *y2;
    CK(cudaMalloc(&dw, wb));
    CK(cudaMalloc(&dx, sizeof(float) * (size_t)n * K));
    CK(cudaMalloc(&y1, sizeof(float) * (size_t)n * M));
    CK(cudaMalloc(&y2, sizeof(float) * (size_t)n * M));
    CK(cudaMalloc(&xq, (size_t)n * cu_act_row_bytes(DS4_TYPE_Q8_0, K)));
    CK(cudaMemcpy(dw, hw, wb, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dx, hx, sizeof(float) * (size_t)n * K, cudaMemcpyHostToDevice));
    dmat w = {dw, DS4_TYPE_Q8_0, K, M, 1, rb};
    float t_tc = median_ms(st, run_tc, &w, M, dx, K, n, y1, xq);
    float t_dp = median_ms(st, cu_mm_dp4a, &w, M, dx, K, n, y2, xq);
    float *a = (float *)malloc(sizeof(float) * (size_t)n * M), *b = (float *)malloc(sizeof(float) * (size_t)n * M);
    CK(cudaMemcpy(a, y1, sizeof(float) * (size_t)n * M, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(b, y2, sizeof(float) * (size_t)n * M, cudaMemcpyDeviceToHost));
    double md = 0, mx = 0;
    bool nan = false;
    for (size_t i = 0; i < (size_t)n * M; i++) {
        if (!isfinite(a[i])) nan = true;
        md = fmax(md, fabs((double)a[i] - b[i]));
        mx = fmax(mx, fabs((double)b[i]));
    }
    double rel = nan ? INFINITY : md / (mx > 0 ? mx : 1);
    double fl = 2.0 * (double)M * (double)K * n;
    printf("q8_0 %5lld x %5lld x %4d: tc %8.3f ms %8.0f GF/s | dp4a %8.3f ms %8.0f GF/s | speedup %5.2fx | rel err %.2e %s\n",
           (long long)M, (long long)K, n, t_tc, fl / t_tc * 1e-6, t_dp, fl / t_dp * 1e-6, t_dp / t_tc, rel,
           rel <= 1e-5 ? "ok" : "FAIL");
    free(hw); free(hx); free(a); free(b);
    CK(cudaFree(dw)); CK(cudaFree(dx)); CK(cudaFree(y1)); CK(cudaFree(y2)); CK(cudaFree(xq));
    return rel <= 1e-5 ? 0 : 1;
}

int main(int argc, char **argv) {
    cudaDeviceProp pr;
    CK(cudaGetDeviceProperties(&pr, 0));
    printf("device %s (sm_%d%d, %d SMs)\n", pr.name, pr.major, pr.minor, pr.multiProcessorCount);
    const char *env = getenv("DS4_CUDA_MMA");
    cu_mm_init();
    int st8 = cu_mma_state();
    printf("gate (DS4_CUDA_MMA=%s): %s\n", env ? env : "unset", st8 > 0 ? "ON" : st8 < 0 ? "OFF" : "undecided");

    cu_mma_selftest_result r;
    cu_mma_selftest(&r);
    printf("self-test: %s | vs CPU reference: max rel err %.3g, bitwise %ld/%ld | vs dp4a: max rel err %.3g | "
           "stray writes %ld | activation quantization == CPU: %s\n",
           r.pass ? "PASS" : "FAIL", r.rel_ref, r.bitwise, r.total, r.rel_dp4a, r.stray, r.xq_equal ? "yes" : "NO");
    int fail = !r.pass;

    cudaStream_t st;
    CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    if (argc > 1) {
        for (int i = 1; i + 2 < argc; i += 3) fail |= shape(st, atoll(argv[i]), atoll(argv[i + 1]), atoi(argv[i + 2]));
    } else {
        fail |= shape(st, 4096, 4096, 512);
        fail |= shape(st, 4096, 4096, 64);
        fail |= shape(st, 4096, 4096, 2048);
        fail |= shape(st, 1024, 4096, 512);
    }
    CK(cudaStreamDestroy(st));
    printf("%s\n", fail ? "mma: FAIL" : "mma: ok");
    return fail;
}
