/*
 * cuda_gemm.cu: matrix products of several rows through cuBLASLt's C API
 * (bf16, fp32 accumulation), followed by the epilogue's elementwise pass:
 * what project() (cuda_forward.cu) uses for more than NC_GEMV_MAX_ROWS
 * rows when the skinny GEMM of cuda_gemm_skinny.cu does not apply (past 64
 * rows, or not on sm_90a).
 *
 * Row-major Y[n, m] = X[n, k] · W[m, k]ᵀ is, in cuBLAS's column-major terms,
 * Yᵀ[m, n] = W[m, k] (op T on the stored [k, m]) · Xᵀ[k, n]: the "TN"
 * layout the tensor-core kernels like best. The residual add is beta = 1
 * with C = D = the fp32 residual stream. Algorithms are chosen once per
 * shape (cuBLASLt's heuristic, first answer) and cached; the workspace is
 * preallocated, so the calls can be captured in a CUDA graph.
 *
 * fp8 weights with NC_CUDA_FP8_ACT (docs/quantization.md): the same
 * product on the fp8 tensor cores, e4m3 weights and e4m3 input rows, with
 * cuBLASLt's outer-vector scaling: output (t, r) times the weights' row
 * scale r and the input's row scale t, accumulated in fp32.
 */
#include <string.h>

#include "cuda_internal.cuh"

#define GEMM_CACHE_SIZE 512

typedef struct {
    int m, n, k, y_f32, acc, fp8;
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t a, b, c;
    cublasLtMatmulAlgo_t algo;
} gemm_entry;

struct nc_cuda_gemm_cache {
    gemm_entry e[GEMM_CACHE_SIZE];
    int n;
};

static const char *lt_status(cublasStatus_t s) {
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED: return "allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE: return "invalid value";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "architecture mismatch";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "execution failed";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "not supported";
    default: return "error";
    }
}

#define LT_TRY(call)                                                                      \
    do {                                                                                  \
        cublasStatus_t st_ = (call);                                                      \
        if (st_ != CUBLAS_STATUS_SUCCESS)                                                 \
            return nc_fail("cublasLt: %s: %s (%d)", #call, lt_status(st_), (int)st_);     \
    } while (0)

/* Destroys what a plan created (any of it may be missing after a failed
 * plan). */
static void gemm_entry_release(gemm_entry *e) {
    if (e->a) cublasLtMatrixLayoutDestroy(e->a);
    if (e->b) cublasLtMatrixLayoutDestroy(e->b);
    if (e->c) cublasLtMatrixLayoutDestroy(e->c);
    if (e->desc) cublasLtMatmulDescDestroy(e->desc);
}

int nc_cuda_gemm_init(nc_cuda *cu) {
    LT_TRY(cublasLtCreate(&cu->lt));
    cu->gemm_cache = (nc_cuda_gemm_cache *)nc_xcalloc(1, sizeof(nc_cuda_gemm_cache));
    return 0;
}

void nc_cuda_gemm_free(nc_cuda *cu) {
    if (cu->gemm_cache) {
        for (int i = 0; i < cu->gemm_cache->n; i++) gemm_entry_release(&cu->gemm_cache->e[i]);
        free(cu->gemm_cache);
        cu->gemm_cache = NULL;
    }
    if (cu->lt) cublasLtDestroy(cu->lt);
    cu->lt = NULL;
}

static int gemm_plan(nc_cuda *cu, gemm_entry *e) {
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    LT_TRY(cublasLtMatmulDescCreate(&e->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    LT_TRY(cublasLtMatmulDescSetAttribute(e->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    LT_TRY(cublasLtMatmulDescSetAttribute(e->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    cudaDataType_t ty = e->y_f32 ? CUDA_R_32F : CUDA_R_16BF, tin = e->fp8 ? CUDA_R_8F_E4M3 : CUDA_R_16BF;
    if (e->fp8) {
        int32_t vec = CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F;
        LT_TRY(cublasLtMatmulDescSetAttribute(e->desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &vec, sizeof vec));
        LT_TRY(cublasLtMatmulDescSetAttribute(e->desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &vec, sizeof vec));
    }
    LT_TRY(cublasLtMatrixLayoutCreate(&e->a, tin, e->k, e->m, e->k));
    LT_TRY(cublasLtMatrixLayoutCreate(&e->b, tin, e->k, e->n, e->k));
    LT_TRY(cublasLtMatrixLayoutCreate(&e->c, ty, e->m, e->n, e->m));
    cublasLtMatmulPreference_t pref;
    LT_TRY(cublasLtMatmulPreferenceCreate(&pref));
    size_t ws = cu->lt_workspace_bytes;
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
    cublasLtMatmulHeuristicResult_t res;
    int found = 0;
    cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(cu->lt, e->desc, e->a, e->b, e->c, e->c, pref, 1,
                                                       &res, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    if (st != CUBLAS_STATUS_SUCCESS || found == 0)
        return nc_fail("cublasLt: no algorithm for a %d x %d x %d %s GEMM (%s)", e->m, e->n, e->k,
                       e->fp8 ? "fp8 (e4m3, per-row scales)" : "bf16", lt_status(st));
    e->algo = res.algo;
    return 0;
}

/* The operands of one product: bf16 W and X, or (ws, xs set) e4m3 ones
 * with their row scales. */
typedef struct {
    const void *W, *X;
    const float *ws, *xs;
} lt_operands;

/* Y[n, m] (row-major, ld m) = X[n, k] · W[m, k]ᵀ (+ Y if accumulate) through
 * cuBLASLt; Y fp32 (y_f32) or bf16. */
static int lt_gemm(nc_cuda *cu, lt_operands op, void *Y, bool y_f32, int m, int n, int k, bool accumulate) {
    nc_cuda_gemm_cache *gc = cu->gemm_cache;
    gemm_entry *e = NULL;
    int fp8 = op.ws != NULL;
    for (int i = 0; i < gc->n; i++) {
        gemm_entry *t = &gc->e[i];
        if (t->m == m && t->n == n && t->k == k && t->y_f32 == (int)y_f32 && t->acc == (int)accumulate &&
            t->fp8 == fp8) {
            e = t;
            break;
        }
    }
    if (!e) {
        if (gc->n == GEMM_CACHE_SIZE) { /* full: recycle the oldest half */
            for (int i = 0; i < GEMM_CACHE_SIZE / 2; i++) gemm_entry_release(&gc->e[i]);
            memmove(gc->e, gc->e + GEMM_CACHE_SIZE / 2, sizeof(gemm_entry) * (GEMM_CACHE_SIZE / 2));
            gc->n = GEMM_CACHE_SIZE / 2;
        }
        e = &gc->e[gc->n];
        memset(e, 0, sizeof *e);
        e->m = m, e->n = n, e->k = k, e->y_f32 = y_f32, e->acc = accumulate, e->fp8 = fp8;
        if (gemm_plan(cu, e)) {
            gemm_entry_release(e);
            return -1;
        }
        gc->n++;
    }
    if (fp8) { /* this product's scale vectors (the plan is shared by every matrix of the shape) */
        LT_TRY(cublasLtMatmulDescSetAttribute(e->desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &op.ws, sizeof op.ws));
        LT_TRY(cublasLtMatmulDescSetAttribute(e->desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &op.xs, sizeof op.xs));
    }
    float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    LT_TRY(cublasLtMatmul(cu->lt, e->desc, &alpha, op.W, e->a, op.X, e->b, &beta, Y, e->c, Y, e->c, &e->algo,
                          cu->lt_workspace, cu->lt_workspace_bytes, cu->stream));
    return 0;
}

/* The product and its epilogue pass. */
static int lt_product(nc_cuda *cu, lt_operands op, void *Y, int m, int n, int k, nc_cuda_epilogue epi) {
    bool f32 = epi == NC_EPI_ADD || epi == NC_EPI_SOFTCAP;
    if (lt_gemm(cu, op, Y, f32, m, n, k, epi == NC_EPI_ADD)) return -1;
    if (epi == NC_EPI_RELU2) return nc_cuda_relu2(cu, (bf16 *)Y, (int64_t)n * m);
    if (epi == NC_EPI_SOFTCAP) return nc_cuda_softcap(cu, (float *)Y, n, m);
    return 0;
}

int nc_cuda_lt_matmul(nc_cuda *cu, const bf16 *W, const bf16 *X, void *Y, int m, int n, int k,
                      nc_cuda_epilogue epi) {
    return lt_product(cu, lt_operands{W, X, NULL, NULL}, Y, m, n, k, epi);
}

int nc_cuda_lt_matmul_fp8(nc_cuda *cu, const nc_cuda_weight *w, const uint8_t *X8, const float *xs, void *Y, int n,
                          nc_cuda_epilogue epi) {
    NC_ASSERT(w->format == NC_WEIGHT_FP8 && w->scale && xs);
    return lt_product(cu, lt_operands{w->data, X8, w->scale, xs}, Y, w->rows, n, w->cols, epi);
}

int nc_cuda_lt_fp8_probe(nc_cuda *cu) {
    int rc = 0;
    for (int f32 = 0; f32 <= 1 && !rc; f32++) { /* bf16 out (store, ReLU²); fp32 += (residual add) */
        gemm_entry probe = {};
        probe.m = probe.k = cu->C, probe.n = 128, probe.fp8 = 1, probe.y_f32 = probe.acc = f32;
        rc = gemm_plan(cu, &probe);
        gemm_entry_release(&probe);
    }
    if (!rc) return 0;
    char why[NC_ERROR_MAX];
    snprintf(why, sizeof why, "%s", nc_error());
    return nc_fail("NC_CUDA_FP8_ACT=1: %s on this GPU; unset it to keep fp8 products weight-only", why);
}
