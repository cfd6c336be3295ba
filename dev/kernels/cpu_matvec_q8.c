/*
 * cpu_matvec_q8.c: dev harness for the CPU decode matvec with 8-bit weights
 * (docs/quantization.md) next to bf16: y = W x for one token, W [N, K]
 * row-major, x and y fp32, threaded over output rows with the project's
 * thread pool exactly as cpu_forward.c splits them.
 *
 * Variants (the backend's kernels, cpu_kernels.h):
 *   bf16 avx2, avx512 the bf16 kernels (the baseline: avx512's)
 *   int8 scalar       weight-only reference
 *   int8 avx2, avx512 weight-only
 *   int8 avxvnni      q8 activations, vpdpbusd 256-bit (x quantised once per matvec, timed)
 *   int8 avx512vnni   q8 activations, vpdpbusd 512-bit
 *   fp8 avx2, avx512  weight-only, e4m3 bits as fp16, converted
 * Each is checked against a double-precision sum over its dequantised
 * weights (weight-only: relative error; q8: the error the activation
 * rounding adds), then timed on a working set larger than the last-level
 * cache (d20's c_fc shape 5120 x 1280 by default), interleaved rounds, best
 * of each. Prints `time | GB/s | % of read bandwidth | effective tok/s
 * speed-up over bf16` (the same weights in half the bytes).
 *
 *   make NVCC= && cc -O2 -std=c11 -D_GNU_SOURCE -pthread -Isrc \
 *     dev/kernels/cpu_matvec_q8.c build/libnanochat.a -lm -o build/cpu_matvec_q8
 *   build/cpu_matvec_q8 [--mb 768] [--threads N] [--reps 5] [--shape N,K]
 */
#include <immintrin.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu_kernels.h"
#include "model/quantize.h"
#include "util/common.h"
#include "util/hugepage.h"
#include "util/numeric.h"
#include "util/threadpool.h"

static int N_ROWS = 5120, K_COLS = 1280;

typedef struct {
    const char *name;
    const cpu_kernels *k; /* NULL: not on this CPU */
    nc_dtype dtype;
    bool q8;
} variant;

typedef struct {
    const variant *v;
    cpu_matrix *mats;
    int n_mats;
    const float *x;
    const cpu_xq8 *xq;
    float *y;       /* [n_mats, N_ROWS] */
    float *scratch; /* per thread, cpu_matmul_scratch_floats(K_COLS) each */
} mv_job;

static void mv_worker(void *ctx, int tid, int nt, int thread) {
    mv_job *j = ctx;
    long lo, hi;
    nc_split_range(N_ROWS, nt, tid, 16, &lo, &hi);
    for (int m = 0; m < j->n_mats; m++)
        cpu_matmul(j->v->k, j->x, K_COLS, j->v->q8 ? j->xq : NULL, 1, &j->mats[m], lo, hi,
                   j->y + (size_t)m * N_ROWS, N_ROWS, j->scratch + thread * cpu_matmul_scratch_floats(K_COLS));
}

typedef struct {
    const uint8_t *buf;
    size_t n;
    double part[256];
} read_job;

__attribute__((target("avx2"))) static void read_worker(void *ctx, int tid, int nt, int thread) {
    read_job *j = ctx;
    long lo, hi;
    nc_split_range((long)j->n / 32, nt, tid, 64, &lo, &hi);
    __m256i a = _mm256_setzero_si256(), b = a;
    for (long i = lo; i + 2 <= hi; i += 2) {
        a = _mm256_add_epi8(a, _mm256_loadu_si256((const __m256i *)(j->buf + 32 * i)));
        b = _mm256_add_epi8(b, _mm256_loadu_si256((const __m256i *)(j->buf + 32 * i + 32)));
    }
    j->part[tid] = (double)_mm256_extract_epi8(_mm256_add_epi8(a, b), 3);
}

int main(int argc, char **argv) {
    size_t mb = 768;
    int threads = 0, reps = 5;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--mb")) mb = (size_t)atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--reps")) reps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--shape") && sscanf(argv[i + 1], "%d,%d", &N_ROWS, &K_COLS) != 2) return 2;
    }
    nc_threadpool *pool = nc_threadpool_new(threads);
    size_t elems = (size_t)N_ROWS * K_COLS;
    int n_mats = (int)NC_MAX((size_t)1, (mb << 20) / elems);
    /* the same weights three ways: bf16, int8 + scales, fp8 + scales */
    uint16_t *wb = nc_alloc_huge(2 * elems * (size_t)n_mats);
    int8_t *wi = nc_alloc_huge(elems * (size_t)n_mats);
    uint8_t *wf = nc_alloc_huge(elems * (size_t)n_mats);
    float *si = malloc(sizeof(float) * (size_t)N_ROWS * n_mats), *sf = malloc(sizeof(float) * (size_t)N_ROWS * n_mats);
    float *row = malloc(sizeof(float) * (size_t)K_COLS);
    uint64_t s = 88172645463325252ull;
    for (size_t r = 0; r < (size_t)N_ROWS * n_mats; r++) {
        for (int k = 0; k < K_COLS; k++) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            row[k] = nc_round_bf16(((float)(s >> 40) * 0x1p-23f - 1.0f) * 0.05f);
            wb[r * K_COLS + k] = nc_f32_to_bf16(row[k]);
        }
        si[r] = nc_quantize_row_int8(row, K_COLS, wi + r * K_COLS);
        sf[r] = nc_quantize_row_fp8(row, K_COLS, wf + r * K_COLS);
    }
    cpu_matrix *mb16 = calloc((size_t)n_mats, sizeof(cpu_matrix)), *mi = calloc((size_t)n_mats, sizeof(cpu_matrix)),
               *mf = calloc((size_t)n_mats, sizeof(cpu_matrix));
    for (int m = 0; m < n_mats; m++) {
        size_t o = (size_t)m * elems;
        mb16[m] = (cpu_matrix){wb + o, NC_DTYPE_BF16, N_ROWS, K_COLS, NULL};
        mi[m] = (cpu_matrix){wi + o, NC_DTYPE_I8, N_ROWS, K_COLS, si + (size_t)m * N_ROWS};
        mf[m] = (cpu_matrix){wf + o, NC_DTYPE_F8_E4M3, N_ROWS, K_COLS, sf + (size_t)m * N_ROWS};
    }
    float *x = malloc(sizeof(float) * (size_t)K_COLS);
    for (int k = 0; k < K_COLS; k++) x[k] = sinf((float)k) * (1 + (k % 17 == 0) * 8);
    int64_t ldd = (K_COLS + CPU_Q8_BLOCK - 1) / CPU_Q8_BLOCK;
    int8_t *xq = malloc((size_t)K_COLS);
    float *xd = malloc(sizeof(float) * (size_t)ldd);
    cpu_xq8 xq8 = {xq, xd, K_COLS, ldd};

    variant vs[] = {
        {"bf16 avx512", cpu_kernels_select("avx512"), NC_DTYPE_BF16, false},
        {"bf16 avx2", cpu_kernels_select("avx2"), NC_DTYPE_BF16, false},
        {"int8 scalar", cpu_kernels_select("scalar"), NC_DTYPE_I8, false},
        {"int8 avx2", cpu_kernels_select("avx2"), NC_DTYPE_I8, false},
        {"int8 avx512", cpu_kernels_select("avx512"), NC_DTYPE_I8, false},
        {"int8 avxvnni", cpu_kernels_select("avxvnni"), NC_DTYPE_I8, true},
        {"int8 avx512vnni", cpu_kernels_select("avx512vnni"), NC_DTYPE_I8, true},
        {"fp8 avx2", cpu_kernels_select("avx2"), NC_DTYPE_F8_E4M3, false},
        {"fp8 avx512", cpu_kernels_select("avx512"), NC_DTYPE_F8_E4M3, false},
    };
    enum { NV = sizeof vs / sizeof vs[0] };
    int n_tasks = 4 * nc_threadpool_size(pool);
    float *y = malloc(sizeof(float) * (size_t)N_ROWS * n_mats);
    float *scratch = malloc(sizeof(float) * (size_t)(cpu_matmul_scratch_floats(K_COLS) * nc_threadpool_size(pool)));
    double best[NV], err[NV], best_read = 1e30;
    read_job rj = {.buf = (const uint8_t *)wi, .n = elems * (size_t)n_mats};
    for (int v = 0; v < NV; v++) best[v] = 1e30, err[v] = -1;
    for (int r = 0; r < reps; r++) {
        double t0 = nc_now();
        nc_threadpool_run(pool, read_worker, &rj, n_tasks);
        best_read = fmin(best_read, nc_now() - t0);
        for (int v = 0; v < NV; v++) {
            if (!vs[v].k) continue;
            cpu_matrix *mats = vs[v].dtype == NC_DTYPE_BF16 ? mb16 : vs[v].dtype == NC_DTYPE_I8 ? mi : mf;
            mv_job j = {&vs[v], mats, n_mats, x, &xq8, y, scratch};
            t0 = nc_now();
            if (vs[v].q8) cpu_quantize_x_q8(x, K_COLS, 1, K_COLS, xq, K_COLS, xd, ldd);
            nc_threadpool_run(pool, mv_worker, &j, n_tasks);
            best[v] = fmin(best[v], nc_now() - t0);
            if (err[v] >= 0) continue;
            double e = 0, scale = 0; /* first matrix, against its own dequantised weights in double */
            for (int64_t rr = 0; rr < N_ROWS; rr++) {
                double sum = 0;
                for (int k = 0; k < K_COLS; k++) {
                    size_t i = (size_t)rr * K_COLS + k;
                    double w = vs[v].dtype == NC_DTYPE_BF16 ? nc_bf16_to_f32(wb[i])
                               : vs[v].dtype == NC_DTYPE_I8  ? (double)wi[i] * si[rr]
                                                             : (double)nc_f8e4m3_to_f32(wf[i]) * sf[rr];
                    sum += w * x[k];
                }
                e = fmax(e, fabs(y[rr] - sum));
                scale = fmax(scale, fabs(sum));
            }
            err[v] = e / scale;
        }
    }
    double bw = (double)rj.n / best_read;
    printf("%d threads, %d matrices %dx%d (%.0f MB in int8), read bandwidth %.2f GB/s (best of %d)\n",
           nc_threadpool_size(pool), n_mats, N_ROWS, K_COLS, (double)rj.n / 1e6, bw / 1e9, reps);
    printf("%-16s %9s %8s %8s %10s %10s\n", "variant", "time ms", "GB/s", "% read", "x bf16", "max err");
    double base = vs[0].k ? best[0] : best[1]; /* bf16 avx512, else avx2 */
    for (int v = 0; v < NV; v++) {
        if (!vs[v].k) {
            printf("%-16s not on this CPU\n", vs[v].name);
            continue;
        }
        double bytes = (double)elems * n_mats * nc_dtype_size(vs[v].dtype);
        printf("%-16s %9.2f %8.2f %7.1f%% %9.2fx %10.2e\n", vs[v].name, best[v] * 1e3, bytes / best[v] / 1e9,
               100.0 * bytes / best[v] / bw, base / best[v], err[v]);
    }
    nc_threadpool_free(pool);
    free(wb), free(wi), free(wf), free(si), free(sf), free(row), free(mb16), free(mi), free(mf);
    free(x), free(xq), free(xd), free(y), free(scratch);
    return 0;
}
