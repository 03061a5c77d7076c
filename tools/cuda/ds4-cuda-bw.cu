/* ds4-cuda-bw: the two bandwidth ceilings the CUDA notes predict from.
 *   HBM: device-to-device copy of 2 GiB (bytes read + written) and a
 *        streaming read kernel (16-byte loads, the matvec access pattern);
 *   PCIe: host-to-device copies of 256 MiB from pinned and from pageable
 *        memory (the expert-miss path), and device-to-host pinned.
 * Median of 10 timed repetitions after a warm-up, CUDA events.  Output: one
 * line per measurement, "name GB/s". */
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { fprintf(stderr, "%s: %s\n", #x, cudaGetErrorString(e)); exit(1); } } while (0)

static int cmpf(const void *a, const void *b) { float x = *(const float *)a, y = *(const float *)b; return (x > y) - (x < y); }

__global__ void k_read(const uint4 *p, size_t n, unsigned *sink) {
    uint32_t acc = 0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        uint4 v = p[i];
        acc ^= v.x ^ v.y ^ v.z ^ v.w;
    }
    if (acc == 0x12345678u) *sink = acc; /* keeps the loads */
}

typedef void (*op_fn)(void *ctx);

static float median_ms(op_fn f, void *ctx) {
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a)); CK(cudaEventCreate(&b));
    f(ctx); CK(cudaDeviceSynchronize());
    float t[10];
    for (int i = 0; i < 10; i++) {
        CK(cudaEventRecord(a));
        f(ctx);
        CK(cudaEventRecord(b));
        CK(cudaEventSynchronize(b));
        CK(cudaEventElapsedTime(&t[i], a, b));
    }
    qsort(t, 10, sizeof(float), cmpf);
    return (t[4] + t[5]) / 2;
}

struct cp { void *dst; const void *src; size_t n; cudaMemcpyKind k; };
static void do_copy(void *c) { cp *x = (cp *)c; CK(cudaMemcpyAsync(x->dst, x->src, x->n, x->k, 0)); }
struct rd { const uint4 *p; size_t n; unsigned *sink; int blocks; };
static void do_read(void *c) { rd *x = (rd *)c; k_read<<<x->blocks, 256>>>(x->p, x->n, x->sink); CK(cudaGetLastError()); }

int main(void) {
    cudaDeviceProp pr;
    CK(cudaGetDeviceProperties(&pr, 0));
    printf("device %s, %d SMs, L2 %d MiB, %.1f GiB\n", pr.name, pr.multiProcessorCount, pr.l2CacheSize >> 20,
           pr.totalGlobalMem / 1073741824.0);
    size_t big = (size_t)2 << 30, pc = (size_t)256 << 20;
    void *d0, *d1, *h_pin, *h_page;
    unsigned *sink;
    CK(cudaMalloc(&d0, big)); CK(cudaMalloc(&d1, big)); CK(cudaMalloc((void **)&sink, 4));
    CK(cudaMemset(d0, 0x5a, big));
    CK(cudaMallocHost(&h_pin, pc));
    h_page = malloc(pc);
    memset(h_pin, 1, pc); memset(h_page, 2, pc);
    cp c1 = {d1, d0, big, cudaMemcpyDeviceToDevice};
    float ms = median_ms(do_copy, &c1);
    printf("hbm_d2d_copy %.1f GB/s\n", 2.0 * big / ms / 1e6);
    rd r = {(const uint4 *)d0, big / 16, sink, pr.multiProcessorCount * 8};
    ms = median_ms(do_read, &r);
    printf("hbm_stream_read %.1f GB/s\n", (double)big / ms / 1e6);
    cp c2 = {d1, h_pin, pc, cudaMemcpyHostToDevice};
    ms = median_ms(do_copy, &c2);
    printf("pcie_h2d_pinned %.1f GB/s\n", (double)pc / ms / 1e6);
    cp c3 = {d1, h_page, pc, cudaMemcpyHostToDevice};
    ms = median_ms(do_copy, &c3);
    printf("pcie_h2d_pageable %.1f GB/s\n", (double)pc / ms / 1e6);
    cp c4 = {h_pin, d0, pc, cudaMemcpyDeviceToHost};
    ms = median_ms(do_copy, &c4);
    printf("pcie_d2h_pinned %.1f GB/s\n", (double)pc / ms / 1e6);
    return 0;
}
