/*
 * dev/kernels/gemm_tune.cu: how much do cuBLASLt's other heuristic answers
 * give over its first one on the prefill GEMMs (d34, n = 2048 tokens)? For
 * each shape, as src/backend/cuda/cuda_gemm.cu plans it (TN, bf16 in, fp32
 * accumulate; qkv and fc write bf16, wo and proj accumulate into fp32), asks
 * for up to 16 algorithms and times each (median of 15 calls).
 *
 *   nvcc -O3 -gencode=arch=compute_90a,code=sm_90a -o /tmp/gemm_tune dev/kernels/gemm_tune.cu -lcublasLt
 */
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <stdio.h>
#include <stdlib.h>

#include "harness.cuh"

static int cmpf(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 2048;
    struct { const char *name; int m, k, y_f32, acc; } shapes[] = {
        {"qkv", 6528, 2176, 0, 0}, {"wo", 2176, 2176, 1, 1}, {"fc", 8704, 2176, 0, 0}, {"proj", 2176, 8704, 1, 1}};
    cublasLtHandle_t lt;
    LT(cublasLtCreate(&lt));
    size_t ws_bytes = 32 << 20; /* as the backend */
    void *ws, *W, *X, *Y;
    CK(cudaMalloc(&ws, ws_bytes));
    CK(cudaMalloc(&W, (size_t)8704 * 2176 * 2));
    CK(cudaMalloc(&X, (size_t)n * 8704 * 2));
    CK(cudaMalloc(&Y, (size_t)n * 8704 * 4));
    CK(cudaMemset(W, 0x3c, (size_t)8704 * 2176 * 2));
    CK(cudaMemset(X, 0x3c, (size_t)n * 8704 * 2));
    CK(cudaMemset(Y, 0, (size_t)n * 8704 * 4));
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0), cudaEventCreate(&e1);
    double first_total = 0, best_total = 0;
    for (int s = 0; s < 4; s++) {
        int m = shapes[s].m, k = shapes[s].k;
        cublasLtMatmulDesc_t desc;
        cublasLtMatrixLayout_t a, b, c;
        cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
        LT(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
        LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
        LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
        LT(cublasLtMatrixLayoutCreate(&a, CUDA_R_16BF, k, m, k));
        LT(cublasLtMatrixLayoutCreate(&b, CUDA_R_16BF, k, n, k));
        LT(cublasLtMatrixLayoutCreate(&c, shapes[s].y_f32 ? CUDA_R_32F : CUDA_R_16BF, m, n, m));
        cublasLtMatmulPreference_t pref;
        LT(cublasLtMatmulPreferenceCreate(&pref));
        LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes,
                                                sizeof ws_bytes));
        cublasLtMatmulHeuristicResult_t res[16];
        int found = 0;
        LT(cublasLtMatmulAlgoGetHeuristic(lt, desc, a, b, c, c, pref, 16, res, &found));
        float alpha = 1, beta = shapes[s].acc ? 1.0f : 0.0f;
        double flop = 2.0 * m * n * k;
        float best = 1e30f, first = 0;
        int best_i = 0;
        for (int i = 0; i < found; i++) {
            float t[15];
            for (int r = 0; r < 18; r++) {
                if (r >= 3) cudaEventRecord(e0);
                LT(cublasLtMatmul(lt, desc, &alpha, W, a, X, b, &beta, Y, c, Y, c, &res[i].algo, ws, ws_bytes, 0));
                if (r >= 3) {
                    cudaEventRecord(e1);
                    CK(cudaEventSynchronize(e1));
                    cudaEventElapsedTime(&t[r - 3], e0, e1);
                }
            }
            qsort(t, 15, sizeof(float), cmpf);
            float us = t[7] * 1e3f;
            if (i == 0) first = us;
            if (us < best) best = us, best_i = i;
            printf("%-5s n=%d algo %2d: %8.1f us  %6.1f TFLOP/s\n", shapes[s].name, n, i, us, flop / us / 1e6);
        }
        printf("%-5s first %.1f us, best %.1f us (answer %d): %.1f%% faster\n\n", shapes[s].name, first, best, best_i,
               100.0 * (first - best) / first);
        first_total += first, best_total += best;
        cublasLtMatmulPreferenceDestroy(pref);
        cublasLtMatrixLayoutDestroy(a), cublasLtMatrixLayoutDestroy(b), cublasLtMatrixLayoutDestroy(c);
        cublasLtMatmulDescDestroy(desc);
    }
    printf("per layer: first answers %.1f us, best %.1f us; x34 layers: %.2f -> %.2f ms\n", first_total, best_total,
           34 * first_total / 1e3, 34 * best_total / 1e3);
    return 0;
}
