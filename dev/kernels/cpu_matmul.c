/*
 * cpu_matmul.c: dev harness for the CPU backend's matrix product
 * (cpu_kernels.h) in every variant this CPU runs, on d20's shapes.
 *
 *   decode (--tokens 1, default): y = W x over a working set of bf16
 *     matrices larger than the last-level cache, rows split over the
 *     project's thread pool exactly as cpu_forward.c splits them; prints
 *     GB/s and % of the read bandwidth measured in the same rounds
 *     (util/membw.h, the floor `nanochat bench` uses);
 *   prefill (--tokens T): Y = X W^T for T tokens on one matrix; prints
 *     GFLOP/s by wall time and by the threads' CPU time (the second is what
 *     the kernel achieves on a machine shared with other work).
 * Every variant is checked against a double-precision product first (max
 * error relative to the largest |y|). Rounds interleave the variants (the
 * machine may be shared); each keeps its best.
 *
 *   make NVCC= && cc -O2 -std=c11 -D_GNU_SOURCE -pthread -Isrc dev/kernels/cpu_matmul.c \
 *     build/libnanochat.a -lm -o build/cpu_matmul
 *   build/cpu_matmul [--shape N,K] [--tokens T] [--threads N] [--reps 5] [--mb 1536] [--f32]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/cpu/cpu_kernels.h"
#include "util/common.h"
#include "util/hugepage.h"
#include "util/membw.h"
#include "util/numeric.h"
#include "util/threadpool.h"

typedef struct {
    const cpu_kernels *k;
    const cpu_matrix *mats;
    int n_mats;
    const float *x;
    int64_t T;
    float *y;         /* [n_mats][T, N] */
    float *scratch;   /* per thread */
    int64_t scratch_floats;
    double cpu_seconds[256];
} mm_job;

static double thread_cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void mm_worker(void *ctx, int task, int n_tasks, int thread) {
    mm_job *j = ctx;
    double t0 = thread_cpu_now();
    for (int m = 0; m < j->n_mats; m++) {
        const cpu_matrix *w = &j->mats[m];
        long lo, hi;
        nc_split_range((long)w->rows, n_tasks, task, 16, &lo, &hi);
        cpu_matmul(j->k, j->x, w->cols, NULL, j->T, w, lo, hi, j->y + (size_t)m * j->T * w->rows, w->rows,
                   j->scratch + thread * j->scratch_floats);
    }
    j->cpu_seconds[task] = thread_cpu_now() - t0;
}

static double max_rel_error(const float *y, const double *ref, size_t n) {
    double e = 0, scale = 0;
    for (size_t i = 0; i < n; i++) {
        e = fmax(e, fabs((double)y[i] - ref[i]));
        scale = fmax(scale, fabs(ref[i]));
    }
    return e / scale;
}

int main(int argc, char **argv) {
    int N = 5120, K = 1280, threads = 0, reps = 5;
    int64_t T = 1;
    size_t mb = 1536;
    bool f32 = false;
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : "";
        if (!strcmp(argv[i], "--f32")) f32 = true;
        else if (!strcmp(argv[i], "--shape") && sscanf(v, "%d,%d", &N, &K) == 2) i++;
        else if (!strcmp(argv[i], "--tokens")) T = atol(v), i++;
        else if (!strcmp(argv[i], "--threads")) threads = atoi(v), i++;
        else if (!strcmp(argv[i], "--reps")) reps = atoi(v), i++;
        else if (!strcmp(argv[i], "--mb")) mb = (size_t)atol(v), i++;
        else {
            fprintf(stderr, "usage: cpu_matmul [--shape N,K] [--tokens T] [--threads N] [--reps R] [--mb MB] [--f32]\n");
            return 2;
        }
    }
    if (N < 1 || K < 1 || T < 1 || reps < 1) return 2;
    nc_threadpool *pool = nc_threadpool_new(threads);
    int nt = nc_threadpool_size(pool), n_tasks = nt > 1 ? 4 * nt : 1;
    size_t es = f32 ? 4 : 2, mat_bytes = (size_t)N * K * es;
    int n_mats = T == 1 ? (int)NC_MAX((size_t)1, (mb << 20) / mat_bytes) : 1;
    uint8_t *wbuf = nc_alloc_huge(mat_bytes * (size_t)n_mats);
    cpu_matrix *mats = calloc((size_t)n_mats, sizeof *mats);
    float *x = malloc((size_t)T * K * sizeof(float));
    uint64_t s = 88172645463325252ull;
    for (size_t i = 0; i < (size_t)N * K * n_mats; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        float v = ((float)(s >> 40) * 0x1p-23f - 1.0f) * 0.05f;
        if (f32) ((float *)wbuf)[i] = v;
        else ((uint16_t *)wbuf)[i] = nc_f32_to_bf16(v);
    }
    for (int m = 0; m < n_mats; m++)
        mats[m] = (cpu_matrix){wbuf + (size_t)m * mat_bytes, f32 ? NC_DTYPE_F32 : NC_DTYPE_BF16, N, K, NULL};
    for (int64_t i = 0; i < T * K; i++) x[i] = sinf((float)i);

    /* the double-precision reference, on the first matrix */
    double *ref = malloc((size_t)T * N * sizeof(double));
    for (int64_t t = 0; t < T; t++)
        for (int r = 0; r < N; r++) {
            double acc = 0;
            for (int k = 0; k < K; k++) {
                size_t i = (size_t)r * K + k;
                double w = f32 ? ((float *)wbuf)[i] : nc_bf16_to_f32(((uint16_t *)wbuf)[i]);
                acc += w * x[t * K + k];
            }
            ref[t * N + r] = acc;
        }

    enum { MAXV = 8 };
    const cpu_kernels *ks[MAXV];
    int nv = 0;
    for (int i = 0; cpu_kernel_variants[i] && nv < MAXV; i++)
        if (cpu_kernels_supported(cpu_kernel_variants[i])) ks[nv++] = cpu_kernel_variants[i];
    mm_job *job = calloc(1, sizeof *job);
    job->x = x, job->T = T, job->mats = mats, job->n_mats = n_mats;
    job->y = malloc((size_t)n_mats * T * N * sizeof(float));
    job->scratch_floats = cpu_matmul_scratch_floats(K);
    job->scratch = malloc((size_t)nt * job->scratch_floats * sizeof(float));
    double best[MAXV], best_cpu[MAXV], err[MAXV], best_bw = 0;
    for (int v = 0; v < nv; v++) {
        job->k = ks[v];
        nc_threadpool_run(pool, mm_worker, job, n_tasks);
        err[v] = max_rel_error(job->y, ref, (size_t)T * N);
        best[v] = best_cpu[v] = 1e30;
    }
    size_t probe = nc_read_bandwidth_bytes();
    for (int r = 0; r < reps; r++) {
        if (T == 1) best_bw = fmax(best_bw, nc_read_bandwidth(nt, probe, 1));
        for (int v = 0; v < nv; v++) {
            if (T > 1 && !strcmp(ks[v]->name, "scalar") && r > 0) continue; /* slow; one round says enough */
            job->k = ks[v];
            double t0 = nc_now();
            nc_threadpool_run(pool, mm_worker, job, n_tasks);
            double wall = nc_now() - t0, cpu = 0;
            for (int i = 0; i < n_tasks; i++) cpu += job->cpu_seconds[i];
            best[v] = fmin(best[v], wall);
            best_cpu[v] = fmin(best_cpu[v], cpu / nt);
        }
    }
    double bytes = (double)mat_bytes * n_mats, flops = 2.0 * N * K * (double)T * n_mats;
    printf("%d threads, %d x %dx%d %s, %lld token%s", nt, n_mats, N, K, f32 ? "fp32" : "bf16", (long long)T,
           T == 1 ? "" : "s");
    if (T == 1) printf(", read bandwidth %.2f GB/s (%zu MB, best of %d)", best_bw / 1e9, probe >> 20, reps);
    printf("\n%-8s %10s %10s %10s %10s\n", "variant", "time ms", T == 1 ? "GB/s" : "GFLOP/s", T == 1 ? "% read" : "GFLOP/s cpu",
           "max err");
    for (int v = 0; v < nv; v++) {
        if (T == 1)
            printf("%-8s %10.3f %10.2f %9.1f%% %10.2e\n", ks[v]->name, best[v] * 1e3, bytes / best[v] / 1e9,
                   100.0 * bytes / best[v] / best_bw, err[v]);
        else
            printf("%-8s %10.3f %10.1f %10.1f %10.2e\n", ks[v]->name, best[v] * 1e3, flops / best[v] / 1e9,
                   flops / best_cpu[v] / 1e9, err[v]);
    }
    nc_threadpool_free(pool);
    free(wbuf), free(mats), free(x), free(ref), free(job->y), free(job->scratch), free(job);
    return 0;
}
