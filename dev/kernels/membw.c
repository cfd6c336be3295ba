/*
 * membw.c: the machine's memory bandwidth, the floor of CPU decode speed.
 *
 * Batch-1 decode streams every weight once per token, so tokens/s can be at
 * most bandwidth / weight bytes. This measures, with 1..N threads (the
 * project's thread pool, as the backend uses it), over a buffer far larger
 * than the last-level cache:
 *   read   sum of a float array (AVX2 when available): what a matvec does
 *   copy   memcpy of half the buffer into the other half (counts 2x bytes)
 * Best of --reps runs per row. Prints `time | GB/s` per test.
 *
 * Memory: by default a malloc'ed buffer (4 KB pages); --huge allocates it
 * in 2 MB pages (util/hugepage.h, as the weights of nc_model_random are);
 * --file PATH instead reads an existing file through a read-only mmap (as
 * checkpoints are used; --huge then also advises MADV_HUGEPAGE on the
 * mapping), read test only. The bytes mapped with 2 MB pages are printed.
 *
 *   cc -O2 -std=c11 -D_GNU_SOURCE -pthread -Isrc dev/kernels/membw.c \
 *      build/libnanochat.a -lm -o build/membw && build/membw [--mb 2048] [--threads N] [--reps 5]
 *      [--huge] [--file PATH]
 */
#include <immintrin.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/common.h"
#include "util/hugepage.h"
#include "util/mmap_file.h"
#include "util/threadpool.h"

typedef struct {
    float *buf;
    size_t n;     /* floats */
    int op;       /* 0 read, 1 copy */
    double sums[1024]; /* per task */
} job;

__attribute__((target("avx2"))) static double read_avx2(const float *p, size_t n) {
    __m256 a = _mm256_setzero_ps(), b = a, c = a, d = a;
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        a = _mm256_add_ps(a, _mm256_loadu_ps(p + i));
        b = _mm256_add_ps(b, _mm256_loadu_ps(p + i + 8));
        c = _mm256_add_ps(c, _mm256_loadu_ps(p + i + 16));
        d = _mm256_add_ps(d, _mm256_loadu_ps(p + i + 24));
    }
    float t[8];
    _mm256_storeu_ps(t, _mm256_add_ps(_mm256_add_ps(a, b), _mm256_add_ps(c, d)));
    double s = 0;
    for (int k = 0; k < 8; k++) s += t[k];
    for (; i < n; i++) s += p[i];
    return s;
}

static double read_scalar(const float *p, size_t n) {
    float acc[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) acc[k] += p[i + k];
    double s = 0;
    for (int k = 0; k < 8; k++) s += acc[k];
    for (; i < n; i++) s += p[i];
    return s;
}

static bool has_avx2;

static void worker(void *ctx, int tid, int nt, int thread) {
    job *j = ctx;
    long lo, hi;
    if (j->op == 0) {
        nc_split_range((long)j->n, nt, tid, 1024, &lo, &hi);
        j->sums[tid] = has_avx2 ? read_avx2(j->buf + lo, (size_t)(hi - lo)) : read_scalar(j->buf + lo, (size_t)(hi - lo));
    } else {
        size_t half = j->n / 2;
        nc_split_range((long)half, nt, tid, 1024, &lo, &hi);
        memcpy(j->buf + half + lo, j->buf + lo, (size_t)(hi - lo) * sizeof(float));
    }
}

int main(int argc, char **argv) {
    size_t mb = 2048;
    int max_threads = nc_cpu_count(), reps = 5;
    bool huge = false;
    const char *file = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--huge")) {
            huge = true;
            continue;
        }
        if (i + 1 >= argc) break;
        if (!strcmp(argv[i], "--file")) file = argv[++i];
        else if (!strcmp(argv[i], "--mb")) mb = (size_t)atol(argv[++i]);
        else if (!strcmp(argv[i], "--threads")) max_threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps")) reps = atoi(argv[++i]);
    }
    __builtin_cpu_init();
    has_avx2 = __builtin_cpu_supports("avx2");
    size_t n = mb * (1 << 20) / sizeof(float);
    float *buf = NULL;
    nc_mapped_file map = {0};
    if (file) {
        if (nc_map_file(file, &map)) {
            fprintf(stderr, "%s\n", nc_error());
            return 1;
        }
        if (huge && nc_advise_huge(map.data, map.size)) fprintf(stderr, "madvise(MADV_HUGEPAGE) refused on the mapping\n");
        buf = (float *)map.data;
        n = map.size / sizeof(float);
        volatile float sink = 0;
        for (size_t i = 0; i < n; i += 1024) sink += buf[i]; /* fault it in */
    } else {
        buf = huge ? nc_alloc_huge(n * sizeof(float)) : malloc(n * sizeof(float));
        if (!buf) {
            fprintf(stderr, "cannot allocate %zu MB\n", mb);
            return 1;
        }
        for (size_t i = 0; i < n; i++) buf[i] = (float)(i & 1023) * 1e-3f;
    }
    printf("buffer %zu MB%s%s, %s pages asked, %.0f MB mapped in 2 MB pages, best of %d, %s reads\n",
           n * sizeof(float) >> 20, file ? " mapped from " : "", file ? file : "", huge ? "2 MB" : "4 KB",
           (double)nc_huge_mapped_bytes() / (1 << 20), reps, has_avx2 ? "avx2" : "scalar");
    printf("%-8s %7s %10s %9s\n", "test", "threads", "time ms", "GB/s");
    double best_read = 0;
    for (int nt = 1; nt <= max_threads; nt++) {
        nc_threadpool *pool = nc_threadpool_new(nt);
        for (int op = 0; op < (file ? 1 : 2); op++) {
            job j = {.buf = buf, .n = n, .op = op};
            double best = 1e30, check = 0;
            for (int r = 0; r < reps; r++) {
                double t0 = nc_now();
                nc_threadpool_run(pool, worker, &j, 4 * nt); /* tasks as the backend splits them */
                double t = nc_now() - t0;
                if (t < best) best = t;
                for (int k = 0; k < 4 * nt; k++) check += j.sums[k];
            }
            double bytes = op == 0 ? (double)n * 4 : (double)(n / 2) * 4 * 2;
            double gbs = bytes / best / 1e9;
            if (op == 0 && gbs > best_read) best_read = gbs;
            printf("%-8s %7d %10.2f %9.2f%s\n", op == 0 ? "read" : "copy", nt, best * 1e3, gbs,
                   check == 12345.0 ? "!" : "");
        }
        nc_threadpool_free(pool);
    }
    printf("best read bandwidth: %.2f GB/s\n", best_read);
    if (file) nc_unmap_file(&map);
    else free(buf);
    return 0;
}
