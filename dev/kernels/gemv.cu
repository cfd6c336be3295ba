/*
 * dev/kernels/gemv.cu: harness for the decode GEMV family (llm.c dev/cuda
 * style): CPU reference, numbered variants, a correctness check on fresh
 * random data, and timing that prints time | GB/s | % of the measured copy
 * bandwidth, for the d34 matrix shapes; then the whole decode step's GEMVs
 * (34 layers x qkv, wo, fc, proj + lm_head, distinct weights, 4.15 GB) as
 * one CUDA graph, with and without programmatic dependent launch, which is
 * the GEMV part of a batch-1 decode step without attention.
 *
 *   nvcc -O3 -gencode=arch=compute_90a,code=sm_90a -o /tmp/gemv dev/kernels/gemv.cu && /tmp/gemv
 *
 * Variants (y[r] = sum_k W[r,k] x[k], W bf16 [rows, K] row-major, x fp32):
 *   1  one warp per row, 4 x 16-byte loads in flight per lane, looping over
 *      K (the backend's kernel before this harness revision)
 *   2  S warps per row (split-K, S = K / 2176 rounded up to 1, 2 or 4, the
 *      partial sums merged in shared memory), each warp issuing all of its
 *      slice's loads at once (9 per lane for a 2176-wide slice): one memory
 *      round trip per warp
 *   3  as 2, with 8 loads per lane per round (two rounds for 2176)
 * Every variant issues its first round of weight loads before
 * griddepcontrol.wait, so under PDL they overlap the previous kernel.
 * The winner lives in src/backend/cuda/cuda_gemv.cu: variant 2. Alone, 1
 * is faster on every shape (fewer registers, more warps), but in the graph
 * with PDL, 2 wins (1.767 vs 1.806 ms on an H100, 2026-11-26): nine loads
 * in flight before the wait hide more of each boundary than four.
 */
#include <cuda_bf16.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.cuh"

/* the backend's streaming load and PDL helpers (nc_ld_stream, nc_pdl_wait, nc_pdl_trigger) */
#include "../../src/backend/cuda/cuda_internal.cuh"

__device__ __forceinline__ float dot8(uint4 w, const float *x) {
    const __nv_bfloat162 *p = (const __nv_bfloat162 *)&w;
    float4 a = __ldg((const float4 *)x), b = __ldg((const float4 *)(x + 4));
    float2 w0 = __bfloat1622float2(p[0]), w1 = __bfloat1622float2(p[1]);
    float2 w2 = __bfloat1622float2(p[2]), w3 = __bfloat1622float2(p[3]);
    return w0.x * a.x + w0.y * a.y + w1.x * a.z + w1.y * a.w + w2.x * b.x + w2.y * b.y + w3.x * b.z + w3.y * b.w;
}

/* U loads per lane per round; S warps per row (1, 2 or 4), 4 warps per block. */
template <int U>
__global__ void __launch_bounds__(128) gemv_split(const bf16 *W, const float *x, float *y, int rows, int K, int S) {
    __shared__ float part[4];
    nc_pdl_trigger();
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int r = blockIdx.x * (4 / S) + warp / S, ks = warp % S;
    int nch = K / 8 / S, c_base = ks * nch;
    bool live = r < rows;
    const uint4 *w = (const uint4 *)(W + (size_t)(live ? r : 0) * K) + c_base;
    const float *xs = x + 8 * (size_t)c_base;
    float acc = 0;
    bool waited = false;
    for (int c0 = lane; c0 < nch; c0 += 32 * U) {
        uint4 v[U];
#pragma unroll
        for (int u = 0; u < U; u++)
            if (live && c0 + 32 * u < nch) v[u] = nc_ld_stream(w + c0 + 32 * u);
        if (!waited) nc_pdl_wait(), waited = true;
#pragma unroll
        for (int u = 0; u < U; u++)
            if (live && c0 + 32 * u < nch) acc += dot8(v[u], xs + 8 * (c0 + 32 * u));
    }
    if (!waited) nc_pdl_wait();
#pragma unroll
    for (int o = 16; o; o >>= 1) acc += __shfl_xor_sync(~0u, acc, o);
    if (S == 1) {
        if (live && lane == 0) y[r] = acc;
        return;
    }
    if (lane == 0) part[warp] = acc;
    __syncthreads();
    if (live && ks == 0 && lane == 0) {
        float s = 0;
        for (int j = 0; j < S; j++) s += part[warp + j];
        y[r] = s;
    }
}

static float bf16_to_f(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static int split_for(int K) { return K <= 2304 ? 1 : K <= 4608 ? 2 : 4; }

static void launch(int v, bool pdl, const bf16 *W, const float *x, float *y, int rows, int K, cudaStream_t st) {
    int S = v == 1 ? 1 : split_for(K);
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3((rows * S + 3) / 4);
    cfg.blockDim = dim3(128);
    cfg.stream = st;
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = at;
    cfg.numAttrs = pdl ? 1 : 0;
    if (v == 1) CK(cudaLaunchKernelEx(&cfg, gemv_split<4>, W, x, y, rows, K, S));
    if (v == 2) CK(cudaLaunchKernelEx(&cfg, gemv_split<9>, W, x, y, rows, K, S));
    if (v == 3) CK(cudaLaunchKernelEx(&cfg, gemv_split<8>, W, x, y, rows, K, S));
}

static const char *vname[] = {"", "warp/row u4", "split u9", "split u8"};
#define NV 3

int main(void) {
    int shapes[][2] = {{6528, 2176}, {2176, 2176}, {8704, 2176}, {2176, 8704}, {65536, 2176}};
    const char *names[] = {"qkv", "attn proj", "mlp fc", "mlp proj", "lm_head"};
    const int L = 34;
    size_t layer_elems = 0;
    for (int s = 0; s < 4; s++) layer_elems += (size_t)shapes[s][0] * shapes[s][1];
    size_t head_elems = (size_t)65536 * 2176, total = L * layer_elems + head_elems;
    bf16 *W;
    float *x, *y;
    CK(cudaMalloc(&W, total * 2));
    CK(cudaMalloc(&x, 8704 * 4));
    CK(cudaMalloc(&y, 65536 * 4));
    size_t maxw = head_elems;
    uint16_t *hw = (uint16_t *)malloc(maxw * 2);
    float *hx = (float *)malloc(8704 * 4), *hy = (float *)malloc(65536 * 4);
    srand(1);
    for (size_t i = 0; i < maxw; i++) hw[i] = (uint16_t)(0x3c00 + (rand() & 0x3ff) - 0x200) ^ ((rand() & 1) << 15);
    for (int i = 0; i < 8704; i++) hx[i] = (float)rand() / RAND_MAX - 0.5f;
    for (size_t off = 0; off < total; off += maxw)
        CK(cudaMemcpy(W + off, hw, (total - off < maxw ? total - off : maxw) * 2, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(x, hx, 8704 * 4, cudaMemcpyHostToDevice));
    cudaStream_t st;
    CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));

    /* copy bandwidth */
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0), cudaEventCreate(&e1);
    cudaEventRecord(e0, st);
    CK(cudaMemcpyAsync(W + maxw, W, maxw * 2, cudaMemcpyDeviceToDevice, st));
    cudaEventRecord(e1, st);
    cudaEventSynchronize(e1);
    float ms;
    cudaEventElapsedTime(&ms, e0, e1);
    double bw = 2.0 * maxw * 2 / (ms * 1e-3);
    printf("copy bandwidth %.0f GB/s\n%-10s %-14s %9s %8s %8s %9s\n", bw / 1e9, "shape", "variant", "us", "GB/s",
           "% copy", "max err");
    /* single kernels, rotating over 8 layers' copies of the weights (L2 is 50 MB) */
    for (int s = 0; s < 5; s++) {
        int rows = shapes[s][0], K = shapes[s][1];
        for (int v = 1; v <= NV; v++) {
            CK(cudaMemset(y, 0xff, rows * 4)); /* poison */
            for (int it = 0; it < 12; it++) {
                const bf16 *Wc = s == 4 ? W + L * layer_elems : W + (it % 8) * layer_elems;
                if (s < 4)
                    for (int j = 0; j < s; j++) Wc += (size_t)shapes[j][0] * shapes[j][1];
                if (it == 2) cudaEventRecord(e0, st);
                launch(v, false, Wc, x, y, rows, K, st);
            }
            cudaEventRecord(e1, st);
            CK(cudaEventSynchronize(e1));
            CK(cudaGetLastError());
            cudaEventElapsedTime(&ms, e0, e1);
            double us = ms * 1e3 / 10;
            CK(cudaMemcpy(hy, y, rows * 4, cudaMemcpyDeviceToHost));
            double maxerr = 0;
            /* element i of the weight buffer is hw[i % maxw]; the last launch (it = 11) used copy 3 */
            size_t off = s == 4 ? L * layer_elems : 3 * layer_elems;
            if (s < 4)
                for (int j = 0; j < s; j++) off += (size_t)shapes[j][0] * shapes[j][1];
            for (int r = 0; r < rows; r += 97) {
                double acc = 0;
                for (int k = 0; k < K; k++) acc += (double)bf16_to_f(hw[(off + (size_t)r * K + k) % maxw]) * hx[k];
                maxerr = fmax(maxerr, fabs(acc - hy[r]) / (fabs(acc) + 1e-3));
                if (hy[r] != hy[r]) maxerr = INFINITY;
            }
            double bytes = (double)rows * K * 2;
            printf("%-10s %-14s %9.2f %8.0f %7.1f%% %9.2g\n", names[s], vname[v], us, bytes / us / 1e3,
                   100 * bytes / (us * 1e-6) / bw, maxerr);
        }
    }
    /* the whole step's GEMVs as one graph */
    printf("\nwhole step (34 x 4 GEMVs + lm_head, %.3f GB) in a CUDA graph\n%-14s %5s %9s %8s %8s\n",
           total * 2 / 1e9, "variant", "pdl", "ms", "GB/s", "% copy");
    for (int v = 1; v <= NV; v++) {
        for (int pdl = 0; pdl < 2; pdl++) {
            cudaGraph_t g;
            cudaGraphExec_t ge;
            CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
            const bf16 *p = W;
            for (int l = 0; l < L; l++)
                for (int s = 0; s < 4; s++) {
                    launch(v, pdl, p, x, y, shapes[s][0], shapes[s][1], st);
                    p += (size_t)shapes[s][0] * shapes[s][1];
                }
            launch(v, pdl, p, x, y, 65536, 2176, st);
            CK(cudaStreamEndCapture(st, &g));
            CK(cudaGraphInstantiate(&ge, g, 0));
            for (int i = 0; i < 3; i++) CK(cudaGraphLaunch(ge, st));
            cudaEventRecord(e0, st);
            for (int i = 0; i < 20; i++) CK(cudaGraphLaunch(ge, st));
            cudaEventRecord(e1, st);
            CK(cudaEventSynchronize(e1));
            cudaEventElapsedTime(&ms, e0, e1);
            double t = ms / 20;
            printf("%-14s %5s %9.3f %8.0f %7.1f%%\n", vname[v], pdl ? "on" : "off", t, total * 2 / (t * 1e-3) / 1e9,
                   100 * total * 2 / (t * 1e-3) / bw);
            cudaGraphExecDestroy(ge);
            cudaGraphDestroy(g);
        }
    }
    return 0;
}
