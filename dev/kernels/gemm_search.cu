/*
 * dev/kernels/gemm_search.cu: does cuBLASLt have a much better kernel for
 * the skinny decode-batch GEMMs than its heuristic's first answers? For
 * each d34 layer shape at n input rows (default 64), as cuda_gemm.cu plans
 * it (TN, bf16 in, fp32 accumulate; qkv/fc bf16 out, wo/proj fp32 += ),
 * enumerates every algorithm id, the heuristic's configurations of each
 * (CUBLASLT_SEARCH_LIMITED_BY_ALGO_ID), and split-K 1/2/4/8/16 variants of
 * them, checks each with cublasLtMatmulAlgoCheck, and times the valid ones
 * on weights rotated over 6 copies (so L2 does not serve them; median of
 * 7). Prints the first heuristic answer, the best found, and its config.
 *
 *   nvcc -O3 -gencode=arch=compute_90a,code=sm_90a -o /tmp/gemm_search dev/kernels/gemm_search.cu -lcublasLt
 *   /tmp/gemm_search 64
 */
#include <cublasLt.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "harness.cuh"

#define COPIES 6
#define MAX_CFG 4096

static int cmpf(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

typedef struct {
    cublasLtHandle_t lt;
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t a, b, c;
    void *W[COPIES], *X, *Y, *ws;
    size_t ws_bytes;
    float beta;
    cudaEvent_t e0, e1;
} ctx;

/* median of 7 timed calls (after 2 warm-ups), rotating the weight copies; <0: failed */
static float time_algo(ctx *t, const cublasLtMatmulAlgo_t *algo) {
    float alpha = 1.0f, ms[7];
    for (int r = 0; r < 9; r++) {
        if (r >= 2) cudaEventRecord(t->e0);
        if (cublasLtMatmul(t->lt, t->desc, &alpha, t->W[r % COPIES], t->a, t->X, t->b, &t->beta, t->Y, t->c, t->Y, t->c,
                           algo, t->ws, t->ws_bytes, 0) != CUBLAS_STATUS_SUCCESS) {
            cudaGetLastError();
            return -1;
        }
        if (r >= 2) {
            cudaEventRecord(t->e1);
            if (cudaEventSynchronize(t->e1) != cudaSuccess) {
                cudaGetLastError();
                return -1;
            }
            cudaEventElapsedTime(&ms[r - 2], t->e0, t->e1);
        }
    }
    qsort(ms, 7, sizeof(float), cmpf);
    return ms[3] * 1e3f;
}

static void describe(const cublasLtMatmulAlgo_t *algo, char *buf, size_t n) {
    int id = 0, tile = 0, splitk = 0, red = 0, swz = 0, stages = 0, cluster = 0;
    size_t w;
    cublasLtMatmulAlgoConfigGetAttribute(algo, CUBLASLT_ALGO_CONFIG_ID, &id, sizeof id, &w);
    cublasLtMatmulAlgoConfigGetAttribute(algo, CUBLASLT_ALGO_CONFIG_TILE_ID, &tile, sizeof tile, &w);
    cublasLtMatmulAlgoConfigGetAttribute(algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splitk, sizeof splitk, &w);
    cublasLtMatmulAlgoConfigGetAttribute(algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &red, sizeof red, &w);
    cublasLtMatmulAlgoConfigGetAttribute(algo, CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING, &swz, sizeof swz, &w);
    cublasLtMatmulAlgoConfigGetAttribute(algo, CUBLASLT_ALGO_CONFIG_STAGES_ID, &stages, sizeof stages, &w);
    cublasLtMatmulAlgoConfigGetAttribute(algo, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID, &cluster, sizeof cluster, &w);
    snprintf(buf, n, "id %d tile %d splitK %d red %d swz %d stages %d cluster %d", id, tile, splitk, red, swz, stages,
             cluster);
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 64;
    struct { const char *name; int m, k, y_f32, acc; } shapes[] = {
        {"qkv", 6528, 2176, 0, 0}, {"wo", 2176, 2176, 1, 1}, {"fc", 8704, 2176, 0, 0}, {"proj", 2176, 8704, 1, 1}};
    ctx t;
    LT(cublasLtCreate(&t.lt));
    t.ws_bytes = 32u << 20; /* as the backend */
    CK(cudaMalloc(&t.ws, t.ws_bytes));
    for (int i = 0; i < COPIES; i++) {
        CK(cudaMalloc(&t.W[i], (size_t)8704 * 2176 * 2));
        CK(cudaMemset(t.W[i], 0x3c, (size_t)8704 * 2176 * 2));
    }
    CK(cudaMalloc(&t.X, (size_t)n * 8704 * 2));
    CK(cudaMalloc(&t.Y, (size_t)n * 8704 * 4));
    CK(cudaMemset(t.X, 0x3c, (size_t)n * 8704 * 2));
    CK(cudaMemset(t.Y, 0, (size_t)n * 8704 * 4));
    cudaEventCreate(&t.e0), cudaEventCreate(&t.e1);
    static cublasLtMatmulAlgo_t cfgs[MAX_CFG];
    double tot_first = 0, tot_best = 0, bytes_all = 0;
    for (int s = 0; s < 4; s++) {
        int m = shapes[s].m, k = shapes[s].k;
        cudaDataType_t ty = shapes[s].y_f32 ? CUDA_R_32F : CUDA_R_16BF;
        cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
        LT(cublasLtMatmulDescCreate(&t.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
        LT(cublasLtMatmulDescSetAttribute(t.desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
        LT(cublasLtMatmulDescSetAttribute(t.desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
        LT(cublasLtMatrixLayoutCreate(&t.a, CUDA_R_16BF, k, m, k));
        LT(cublasLtMatrixLayoutCreate(&t.b, CUDA_R_16BF, k, n, k));
        LT(cublasLtMatrixLayoutCreate(&t.c, ty, m, n, m));
        t.beta = shapes[s].acc ? 1.0f : 0.0f;
        cublasLtMatmulPreference_t pref;
        LT(cublasLtMatmulPreferenceCreate(&pref));
        LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &t.ws_bytes,
                                                sizeof t.ws_bytes));
        /* the heuristic's first answer, as the backend uses */
        cublasLtMatmulHeuristicResult_t res[64];
        int found = 0;
        LT(cublasLtMatmulAlgoGetHeuristic(t.lt, t.desc, t.a, t.b, t.c, t.c, pref, 1, res, &found));
        float first = time_algo(&t, &res[0].algo);
        /* every algorithm id, its heuristic configurations, and split-K variants */
        int ids[256], nid = 0, ncfg = 0;
        LT(cublasLtMatmulAlgoGetIds(t.lt, CUBLAS_COMPUTE_32F, CUDA_R_32F, CUDA_R_16BF, CUDA_R_16BF, ty, ty, 256, ids,
                                    &nid));
        uint32_t mode = CUBLASLT_SEARCH_LIMITED_BY_ALGO_ID;
        cublasLtMatmulPreference_t pid;
        LT(cublasLtMatmulPreferenceCreate(&pid));
        LT(cublasLtMatmulPreferenceSetAttribute(pid, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &t.ws_bytes,
                                                sizeof t.ws_bytes));
        LT(cublasLtMatmulPreferenceSetAttribute(pid, CUBLASLT_MATMUL_PREF_SEARCH_MODE, &mode, sizeof mode));
        for (int i = 0; i < nid && ncfg < MAX_CFG - 64; i++) {
            for (int j = 0; j < 64; j++)
                if (cublasLtMatmulAlgoInit(t.lt, CUBLAS_COMPUTE_32F, CUDA_R_32F, CUDA_R_16BF, CUDA_R_16BF, ty, ty,
                                           ids[i], &res[j].algo) != CUBLAS_STATUS_SUCCESS)
                    break;
            int got = 0;
            if (cublasLtMatmulAlgoGetHeuristic(t.lt, t.desc, t.a, t.b, t.c, t.c, pid, 64, res, &got) !=
                CUBLAS_STATUS_SUCCESS)
                continue;
            for (int j = 0; j < got && ncfg < MAX_CFG - 8; j++) {
                if (res[j].state != CUBLAS_STATUS_SUCCESS) continue;
                cfgs[ncfg++] = res[j].algo;
                int splits[] = {2, 4, 8, 16};
                for (int q = 0; q < 4; q++) {
                    cublasLtMatmulAlgo_t v = res[j].algo;
                    uint32_t sk = (uint32_t)splits[q], red = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
                    cublasLtMatmulAlgoConfigSetAttribute(&v, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &sk, sizeof sk);
                    cublasLtMatmulAlgoConfigSetAttribute(&v, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &red, sizeof red);
                    cublasLtMatmulHeuristicResult_t chk;
                    if (cublasLtMatmulAlgoCheck(t.lt, t.desc, t.a, t.b, t.c, t.c, &v, &chk) == CUBLAS_STATUS_SUCCESS &&
                        chk.workspaceSize <= t.ws_bytes)
                        cfgs[ncfg++] = v;
                }
            }
        }
        float best = first;
        int best_i = -1, timed = 0;
        for (int i = 0; i < ncfg; i++) {
            float us = time_algo(&t, &cfgs[i]);
            if (us < 0) continue;
            timed++;
            if (us < best) best = us, best_i = i;
        }
        double bytes = (double)m * k * 2;
        char d[160] = "first answer";
        if (best_i >= 0) describe(&cfgs[best_i], d, sizeof d);
        char d0[160];
        describe(&res[0].algo, d0, sizeof d0);
        printf("%-5s n=%d: first %.1f us (%.0f GB/s), best of %d configs %.1f us (%.0f GB/s), %.1f%% faster\n"
               "      best: %s\n", shapes[s].name, n, first, bytes / first / 1e3, timed, best, bytes / best / 1e3,
               100.0 * (first - best) / first, d);
        tot_first += first, tot_best += best, bytes_all += bytes;
        cublasLtMatmulPreferenceDestroy(pref);
        cublasLtMatmulPreferenceDestroy(pid);
        cublasLtMatrixLayoutDestroy(t.a), cublasLtMatrixLayoutDestroy(t.b), cublasLtMatrixLayoutDestroy(t.c);
        cublasLtMatmulDescDestroy(t.desc);
    }
    printf("per layer: first %.1f us, best %.1f us (%.0f -> %.0f GB/s); x34: %.2f -> %.2f ms\n", tot_first, tot_best,
           bytes_all / tot_first / 1e3, bytes_all / tot_best / 1e3, 34 * tot_first / 1e3, 34 * tot_best / 1e3);
    return 0;
}
