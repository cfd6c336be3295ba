/*
 * cpu_matvec.c: dev harness for the CPU decode matvec (y = W x, W bf16
 * [N, K] row-major, x and y fp32), the kernel that bounds CPU decode speed.
 *
 * Variants (all threaded over output rows with the project's thread pool,
 * exactly as cpu_forward.c splits them):
 *   0 scalar      the backend's portable kernel (the reference)
 *   1 avx2        the backend's kernel (cpu_kernels_avx2.c)
 *   2 avx2+pf     4 rows x 32 columns, each row prefetched --prefetch bytes ahead
 *   3 avx512      16-wide loads and FMAs (local to this harness)
 *   4 avx2-rows   one row at a time: a single sequential stream per thread
 *   5 avx2+pfnb   as 2, but each row prefetches the same columns of the row
 *                 4 below (the next 4-row block): one block ahead, never past
 *                 the rows still to be read
 *   6 avx2+pfnb1  as 5 with the _MM_HINT_T1 (L2) hint
 * Each is checked against variant 0 (max relative error), then timed on a
 * working set of d20-shaped matrices (c_fc: 5120 x 1280) larger than the
 * last-level cache, so every byte comes from DRAM as in real decode.
 * Prints `time | GB/s | % of read bandwidth` (bandwidth measured in the
 * same run, a threaded sum over another large buffer).
 *
 *   make BUILD=build-cpu && cc -O2 -std=c11 -D_GNU_SOURCE -pthread -Isrc \
 *     dev/kernels/cpu_matvec.c build-cpu/libnanochat.a -lm -o build-cpu/cpu_matvec
 *   build-cpu/cpu_matvec [--mb 1536] [--threads N] [--reps 5] [--variant k] [--shape N,K]
 */
#include <immintrin.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "backend/cpu/cpu_kernels.h"
#include "util/common.h"
#include "util/numeric.h"
#include "util/threadpool.h"

/* matrix shape: d20's c_fc by default, --shape N,K for others (K multiple of 32) */
static int N_ROWS = 5120, K_COLS = 1280;

/* ==== local variants ==== */

__attribute__((target("avx2,fma"))) static inline __m256 cvt8(const uint16_t *p) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
}

__attribute__((target("avx2,fma"))) static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* avx2, 4 rows at a time, 32 columns (one 64-byte line per row) per step,
 * each row's line PF_BYTES ahead prefetched (K multiple of 32). */
static int pf_bytes = 1024;

__attribute__((target("avx2,fma"))) static void mv_avx2_prefetch(const float *x, int64_t ldx, int64_t T,
                                                                  const cpu_matrix *w, int64_t r0, int64_t r1,
                                                                  float *y, int64_t ldy) {
    const uint16_t *W = w->data;
    int64_t K = w->cols, ahead = pf_bytes / 2;
    for (int64_t r = r0; r < r1; r += 4) {
        const uint16_t *p[4] = {W + r * K, W + (r + 1) * K, W + (r + 2) * K, W + (r + 3) * K};
        __m256 a[4], b[4];
        for (int j = 0; j < 4; j++) a[j] = b[j] = _mm256_setzero_ps();
        for (int64_t k = 0; k < K; k += 32) {
            __m256 x0 = _mm256_loadu_ps(x + k), x1 = _mm256_loadu_ps(x + k + 8);
            __m256 x2 = _mm256_loadu_ps(x + k + 16), x3 = _mm256_loadu_ps(x + k + 24);
            for (int j = 0; j < 4; j++) {
                _mm_prefetch((const char *)(p[j] + k + ahead), _MM_HINT_T0);
                a[j] = _mm256_fmadd_ps(cvt8(p[j] + k), x0, a[j]);
                b[j] = _mm256_fmadd_ps(cvt8(p[j] + k + 8), x1, b[j]);
                a[j] = _mm256_fmadd_ps(cvt8(p[j] + k + 16), x2, a[j]);
                b[j] = _mm256_fmadd_ps(cvt8(p[j] + k + 24), x3, b[j]);
            }
        }
        for (int j = 0; j < 4; j++) y[r + j] = hsum8(_mm256_add_ps(a[j], b[j]));
    }
}

/* avx2, 4 rows x 32 columns, each row prefetching the same columns of the
 * row 4 below (the next block) with hint HINT (K multiple of 32). */
#define MV_PF_NEXT_BLOCK(NAME, HINT)                                                                         \
    __attribute__((target("avx2,fma"))) static void NAME(const float *x, int64_t ldx, int64_t T,             \
                                                         const cpu_matrix *w, int64_t r0, int64_t r1,        \
                                                         float *y, int64_t ldy) {                            \
        const uint16_t *W = w->data;                                                                         \
        int64_t K = w->cols;                                                                                 \
        for (int64_t r = r0; r < r1; r += 4) {                                                               \
            const uint16_t *p[4] = {W + r * K, W + (r + 1) * K, W + (r + 2) * K, W + (r + 3) * K};           \
            bool more = r + 8 <= r1;                                                                         \
            __m256 a[4], b[4];                                                                               \
            for (int j = 0; j < 4; j++) a[j] = b[j] = _mm256_setzero_ps();                                   \
            for (int64_t k = 0; k < K; k += 32) {                                                            \
                __m256 x0 = _mm256_loadu_ps(x + k), x1 = _mm256_loadu_ps(x + k + 8);                         \
                __m256 x2 = _mm256_loadu_ps(x + k + 16), x3 = _mm256_loadu_ps(x + k + 24);                   \
                for (int j = 0; j < 4; j++) {                                                                \
                    if (more) _mm_prefetch((const char *)(p[j] + 4 * K + k), HINT);                          \
                    a[j] = _mm256_fmadd_ps(cvt8(p[j] + k), x0, a[j]);                                        \
                    b[j] = _mm256_fmadd_ps(cvt8(p[j] + k + 8), x1, b[j]);                                    \
                    a[j] = _mm256_fmadd_ps(cvt8(p[j] + k + 16), x2, a[j]);                                   \
                    b[j] = _mm256_fmadd_ps(cvt8(p[j] + k + 24), x3, b[j]);                                   \
                }                                                                                            \
            }                                                                                                \
            for (int j = 0; j < 4; j++) y[r + j] = hsum8(_mm256_add_ps(a[j], b[j]));                         \
        }                                                                                                    \
    }
MV_PF_NEXT_BLOCK(mv_avx2_pf_next_t0, _MM_HINT_T0)
MV_PF_NEXT_BLOCK(mv_avx2_pf_next_t1, _MM_HINT_T1)

/* avx2, one row at a time (a single sequential stream per thread). */
__attribute__((target("avx2,fma"))) static void mv_avx2_rowwise(const float *x, int64_t ldx, int64_t T,
                                                                 const cpu_matrix *w, int64_t r0, int64_t r1,
                                                                 float *y, int64_t ldy) {
    const uint16_t *W = w->data;
    int64_t K = w->cols;
    for (int64_t r = r0; r < r1; r++) {
        const uint16_t *p = W + r * K;
        __m256 a = _mm256_setzero_ps(), b = a, c = a, d = a;
        for (int64_t k = 0; k < K; k += 32) {
            a = _mm256_fmadd_ps(cvt8(p + k), _mm256_loadu_ps(x + k), a);
            b = _mm256_fmadd_ps(cvt8(p + k + 8), _mm256_loadu_ps(x + k + 8), b);
            c = _mm256_fmadd_ps(cvt8(p + k + 16), _mm256_loadu_ps(x + k + 16), c);
            d = _mm256_fmadd_ps(cvt8(p + k + 24), _mm256_loadu_ps(x + k + 24), d);
        }
        y[r] = hsum8(_mm256_add_ps(_mm256_add_ps(a, b), _mm256_add_ps(c, d)));
    }
}

/* avx512: 4 rows x 32 columns per step (K multiple of 32). */
__attribute__((target("avx512f,avx512bw"))) static void mv_avx512(const float *x, int64_t ldx, int64_t T,
                                                                   const cpu_matrix *w, int64_t r0, int64_t r1,
                                                                   float *y, int64_t ldy) {
    const uint16_t *W = w->data;
    int64_t K = w->cols;
    for (int64_t r = r0; r < r1; r += 4) {
        __m512 a[4], b[4];
        for (int j = 0; j < 4; j++) a[j] = b[j] = _mm512_setzero_ps();
        for (int64_t k = 0; k < K; k += 32) {
            __m512 xa = _mm512_loadu_ps(x + k), xb = _mm512_loadu_ps(x + k + 16);
            for (int j = 0; j < 4; j++) {
                __m512i h = _mm512_loadu_si512((const void *)(W + (r + j) * K + k));
                __m512 lo = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(h)), 16));
                __m512 hi = _mm512_castsi512_ps(
                    _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(h, 1)), 16));
                a[j] = _mm512_fmadd_ps(lo, xa, a[j]);
                b[j] = _mm512_fmadd_ps(hi, xb, b[j]);
            }
        }
        for (int j = 0; j < 4; j++) y[r + j] = _mm512_reduce_add_ps(_mm512_add_ps(a[j], b[j]));
    }
}

/* ==== harness ==== */

typedef struct {
    const char *name;
    cpu_matmul_fn fn;
    bool (*supported)(void);
} variant;

static bool always(void) { return true; }
static bool has_avx2(void) { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }
static bool has_avx512(void) { return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw"); }

typedef struct {
    cpu_matmul_fn fn;
    cpu_matrix *mats;
    int n_mats;
    const float *x;
    float *y; /* [n_mats, N_ROWS] */
} mv_job;

static void mv_worker(void *ctx, int tid, int nt, int thread) {
    mv_job *j = ctx;
    long lo, hi;
    nc_split_range(N_ROWS, nt, tid, 16, &lo, &hi);
    for (int m = 0; m < j->n_mats; m++) j->fn(j->x, K_COLS, 1, &j->mats[m], lo, hi, j->y + (size_t)m * N_ROWS, N_ROWS);
}

typedef struct {
    const float *buf;
    size_t n;
    double part[256];
} read_job;

__attribute__((target("avx2"))) static void read_worker(void *ctx, int tid, int nt, int thread) {
    read_job *j = ctx;
    long lo, hi;
    nc_split_range((long)j->n, nt, tid, 1024, &lo, &hi);
    __m256 a = _mm256_setzero_ps(), b = a, c = a, d = a;
    for (long i = lo; i + 32 <= hi; i += 32) {
        a = _mm256_add_ps(a, _mm256_loadu_ps(j->buf + i));
        b = _mm256_add_ps(b, _mm256_loadu_ps(j->buf + i + 8));
        c = _mm256_add_ps(c, _mm256_loadu_ps(j->buf + i + 16));
        d = _mm256_add_ps(d, _mm256_loadu_ps(j->buf + i + 24));
    }
    j->part[tid] = hsum8(_mm256_add_ps(_mm256_add_ps(a, b), _mm256_add_ps(c, d)));
}

int main(int argc, char **argv) {
    size_t mb = 1536;
    int threads = 0, reps = 5, only = -1;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--mb")) mb = (size_t)atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--reps")) reps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--variant")) only = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--prefetch")) pf_bytes = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--shape") && sscanf(argv[i + 1], "%d,%d", &N_ROWS, &K_COLS) != 2) return 2;
    }
    if (N_ROWS < 16 || N_ROWS % 16 || K_COLS < 32 || K_COLS % 32) {
        fprintf(stderr, "--shape N,K: N a multiple of 16, K of 32\n");
        return 2;
    }
    __builtin_cpu_init();
    nc_threadpool *pool = nc_threadpool_new(threads);
    size_t mat_bytes = (size_t)N_ROWS * K_COLS * 2;
    if (mat_bytes > mb << 20) return 2;
    int n_mats = (int)NC_MAX((size_t)1, mb * (1 << 20) / mat_bytes);
    uint16_t *wbuf = NULL;
    if (posix_memalign((void **)&wbuf, 1 << 21, mat_bytes * (size_t)n_mats)) return 1;
    if (getenv("HUGE")) madvise(wbuf, mat_bytes * (size_t)n_mats, MADV_HUGEPAGE); /* 2 MB pages: no TLB walk per 4 KB */
    cpu_matrix *mats = calloc((size_t)n_mats, sizeof(cpu_matrix));
    uint64_t s = 88172645463325252ull;
    for (size_t i = 0; i < mat_bytes / 2 * (size_t)n_mats; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        wbuf[i] = nc_f32_to_bf16(((float)(s >> 40) * 0x1p-23f - 1.0f) * 0.05f);
    }
    for (int m = 0; m < n_mats; m++)
        mats[m] = (cpu_matrix){wbuf + (size_t)m * N_ROWS * K_COLS, NC_DTYPE_BF16, N_ROWS, K_COLS};
    float *x = malloc(K_COLS * sizeof(float));
    for (int k = 0; k < K_COLS; k++) x[k] = sinf((float)k);
    float *ref = malloc((size_t)n_mats * N_ROWS * sizeof(float)), *y = malloc((size_t)n_mats * N_ROWS * sizeof(float));

    /* The machine may be shared: rounds interleave every variant and the
     * bandwidth reference (a threaded read of the same bytes), and each
     * keeps its best time. */
    variant vs[] = {{"scalar", cpu_kernels_scalar.matmul_bf16, always},
                    {"avx2", cpu_kernels_avx2.matmul_bf16, has_avx2},
                    {"avx2+pf", mv_avx2_prefetch, has_avx2},
                    {"avx512", mv_avx512, has_avx512},
                    {"avx2-rows", mv_avx2_rowwise, has_avx2},
                    {"avx2+pfnb", mv_avx2_pf_next_t0, has_avx2},
                    {"avx2+pfnb1", mv_avx2_pf_next_t1, has_avx2}};
    enum { NV = sizeof vs / sizeof vs[0] };
    int n_tasks = 4 * nc_threadpool_size(pool);
    mv_job ref_job = {vs[0].fn, mats, n_mats, x, ref};
    nc_threadpool_run(pool, mv_worker, &ref_job, n_tasks);
    double best[NV], err[NV], best_read = 1e30, bytes = (double)mat_bytes * n_mats;
    read_job rj = {.buf = (const float *)wbuf, .n = mat_bytes * (size_t)n_mats / 4};
    for (size_t v = 0; v < NV; v++) best[v] = 1e30, err[v] = -1;
    for (int r = 0; r < reps; r++) {
        double t0 = nc_now();
        nc_threadpool_run(pool, read_worker, &rj, n_tasks);
        best_read = fmin(best_read, nc_now() - t0);
        for (size_t v = 0; v < NV; v++) {
            if ((only >= 0 && (int)v != only) || !vs[v].supported()) continue;
            mv_job j = {vs[v].fn, mats, n_mats, x, y};
            t0 = nc_now();
            nc_threadpool_run(pool, mv_worker, &j, n_tasks);
            best[v] = fmin(best[v], nc_now() - t0);
            if (err[v] < 0) {
                double e = 0, scale = 0;
                for (size_t i = 0; i < (size_t)n_mats * N_ROWS; i++) {
                    e = fmax(e, fabs((double)y[i] - ref[i]));
                    scale = fmax(scale, fabs((double)ref[i]));
                }
                err[v] = e / scale;
            }
        }
    }
    double bw = bytes / best_read;
    printf("%d threads, %d matrices %dx%d bf16 (%.0f MB), read bandwidth %.2f GB/s (best of %d)\n",
           nc_threadpool_size(pool), n_mats, N_ROWS, K_COLS, bytes / 1e6, bw / 1e9, reps);
    printf("%-10s %10s %8s %8s %10s\n", "variant", "time ms", "GB/s", "% read", "max err");
    for (size_t v = 0; v < NV; v++)
        if (err[v] >= 0)
            printf("%-10s %10.2f %8.2f %7.1f%% %10.2e\n", vs[v].name, best[v] * 1e3, bytes / best[v] / 1e9,
                   100.0 * bytes / best[v] / bw, err[v]);
    nc_threadpool_free(pool);
    free(wbuf), free(mats), free(x), free(ref), free(y);
    return 0;
}
