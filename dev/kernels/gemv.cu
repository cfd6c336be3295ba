/*
 * dev/kernels/gemv.cu: harness for the decode GEMV family (llm.c dev/cuda
 * style): CPU reference, numbered variants, a correctness check on fresh
 * random data, and timing that prints time | GB/s | % of the measured copy
 * bandwidth, for the d34 matrix shapes.
 *
 *   nvcc -O3 -arch=sm_90a -o /tmp/gemv dev/kernels/gemv.cu && /tmp/gemv
 *
 * Variants (y[r] = sum_k W[r,k] x[k], W bf16 [rows, K] row-major, x fp32):
 *   1  one warp per row, 8 x 16-byte loads in flight per lane (the backend's)
 *   2  one warp per row, 4 in flight
 *   3  one warp per 2 rows (x loaded once for both)
 * The winner lives in src/backend/cuda/cuda_gemv.cu.
 */
#include <cuda_bf16.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CK(x)                                                                              \
    do {                                                                                   \
        cudaError_t e_ = (x);                                                              \
        if (e_ != cudaSuccess) {                                                           \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
            exit(1);                                                                       \
        }                                                                                  \
    } while (0)

typedef __nv_bfloat16 bf16;

__device__ __forceinline__ uint4 ld_stream(const uint4 *p) {
    uint4 r;
    asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
                 : "l"(p));
    return r;
}

__device__ __forceinline__ float dot8(uint4 w, const float *x) {
    const __nv_bfloat162 *p = (const __nv_bfloat162 *)&w;
    float4 a = *(const float4 *)x, b = *(const float4 *)(x + 4);
    float2 w0 = __bfloat1622float2(p[0]), w1 = __bfloat1622float2(p[1]);
    float2 w2 = __bfloat1622float2(p[2]), w3 = __bfloat1622float2(p[3]);
    return w0.x * a.x + w0.y * a.y + w1.x * a.z + w1.y * a.w + w2.x * b.x + w2.y * b.y + w3.x * b.z + w3.y * b.w;
}

template <int U>
__global__ void gemv_warp_row(const bf16 *W, const float *x, float *y, int rows, int K) {
    int r = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x & 31;
    if (r >= rows) return;
    const uint4 *w = (const uint4 *)(W + (size_t)r * K);
    int nch = K / 8;
    float acc = 0;
    for (int c0 = lane; c0 < nch; c0 += 32 * U) {
        uint4 v[U];
#pragma unroll
        for (int u = 0; u < U; u++)
            if (c0 + 32 * u < nch) v[u] = ld_stream(w + c0 + 32 * u);
#pragma unroll
        for (int u = 0; u < U; u++)
            if (c0 + 32 * u < nch) acc += dot8(v[u], x + 8 * (c0 + 32 * u));
    }
#pragma unroll
    for (int o = 16; o; o >>= 1) acc += __shfl_xor_sync(~0u, acc, o);
    if (lane == 0) y[r] = acc;
}

__global__ void gemv_warp_2rows(const bf16 *W, const float *x, float *y, int rows, int K) {
    int r = 2 * (blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32), lane = threadIdx.x & 31;
    if (r >= rows) return;
    const uint4 *w0 = (const uint4 *)(W + (size_t)r * K), *w1 = w0 + K / 8;
    int nch = K / 8;
    float a0 = 0, a1 = 0;
    for (int c0 = lane; c0 < nch; c0 += 32 * 4) {
        uint4 v0[4], v1[4];
#pragma unroll
        for (int u = 0; u < 4; u++)
            if (c0 + 32 * u < nch) v0[u] = ld_stream(w0 + c0 + 32 * u), v1[u] = ld_stream(w1 + c0 + 32 * u);
#pragma unroll
        for (int u = 0; u < 4; u++)
            if (c0 + 32 * u < nch) a0 += dot8(v0[u], x + 8 * (c0 + 32 * u)), a1 += dot8(v1[u], x + 8 * (c0 + 32 * u));
    }
#pragma unroll
    for (int o = 16; o; o >>= 1) a0 += __shfl_xor_sync(~0u, a0, o), a1 += __shfl_xor_sync(~0u, a1, o);
    if (lane == 0) y[r] = a0, y[r + 1] = a1;
}

static float bf16_to_f(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

int main(void) {
    int shapes[][2] = {{6528, 2176}, {2176, 2176}, {8704, 2176}, {2176, 8704}, {65536, 2176}};
    const char *names[] = {"qkv", "attn proj", "mlp fc", "mlp proj", "lm_head"};
    size_t maxw = (size_t)65536 * 2176;
    int copies = 4; /* rotate among copies so L2 (50 MB) does not serve repeats */
    bf16 *W;
    float *x, *y;
    CK(cudaMalloc(&W, maxw * 2 * copies));
    CK(cudaMalloc(&x, 8704 * 4));
    CK(cudaMalloc(&y, 65536 * 4));
    uint16_t *hw = (uint16_t *)malloc(maxw * 2);
    float *hx = (float *)malloc(8704 * 4), *hy = (float *)malloc(65536 * 4);
    srand(1);
    for (size_t i = 0; i < maxw; i++) hw[i] = (uint16_t)(0x3c00 + (rand() & 0x3ff) - 0x200) ^ ((rand() & 1) << 15);
    for (int i = 0; i < 8704; i++) hx[i] = (float)rand() / RAND_MAX - 0.5f;
    for (int c = 0; c < copies; c++) CK(cudaMemcpy(W + c * maxw, hw, maxw * 2, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(x, hx, 8704 * 4, cudaMemcpyHostToDevice));

    /* copy bandwidth */
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0), cudaEventCreate(&e1);
    cudaEventRecord(e0);
    CK(cudaMemcpy(W + maxw, W, maxw * 2, cudaMemcpyDeviceToDevice));
    cudaEventRecord(e1);
    cudaEventSynchronize(e1);
    float ms;
    cudaEventElapsedTime(&ms, e0, e1);
    double bw = 2.0 * maxw * 2 / (ms * 1e-3);
    printf("copy bandwidth %.0f GB/s\n%-10s %-14s %9s %8s %8s %9s\n", bw / 1e9, "shape", "variant", "us", "GB/s",
           "% copy", "max err");
    for (int s = 0; s < 5; s++) {
        int rows = shapes[s][0], K = shapes[s][1];
        double ref_max = 0;
        for (int v = 1; v <= 3; v++) {
            CK(cudaMemset(y, 0xff, rows * 4)); /* poison */
            for (int it = 0; it < 12; it++) {
                const bf16 *Wc = W + (it % copies) * maxw;
                if (it == 2) cudaEventRecord(e0);
                if (v == 1) gemv_warp_row<8><<<(rows + 3) / 4, 128>>>(Wc, x, y, rows, K);
                if (v == 2) gemv_warp_row<4><<<(rows + 3) / 4, 128>>>(Wc, x, y, rows, K);
                if (v == 3) gemv_warp_2rows<<<(rows / 2 + 3) / 4, 128>>>(Wc, x, y, rows, K);
            }
            cudaEventRecord(e1);
            CK(cudaEventSynchronize(e1));
            CK(cudaGetLastError());
            cudaEventElapsedTime(&ms, e0, e1);
            double us = ms * 1e3 / 10;
            CK(cudaMemcpy(hy, y, rows * 4, cudaMemcpyDeviceToHost));
            double maxerr = 0;
            for (int r = 0; r < rows; r += 97) {
                double acc = 0;
                for (int k = 0; k < K; k++) acc += (double)bf16_to_f(hw[(size_t)r * K + k]) * hx[k];
                ref_max = fmax(ref_max, fabs(acc));
                maxerr = fmax(maxerr, fabs(acc - hy[r]) / (fabs(acc) + 1e-3));
                if (hy[r] != hy[r]) maxerr = INFINITY;
            }
            double bytes = (double)rows * K * 2;
            printf("%-10s %-14s %9.2f %8.0f %7.1f%% %9.2g\n", names[s], v == 1 ? "warp/row u8" : v == 2 ? "warp/row u4" : "warp/2 rows",
                   us, bytes / us / 1e3, 100 * bytes / (us * 1e-6) / bw, maxerr);
        }
    }
    return 0;
}
