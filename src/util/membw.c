/*
 * membw.c: the threaded read-bandwidth probe (membw.h).
 *
 * Each pass splits the buffer into 4 contiguous shares per thread (claimed
 * dynamically, as the CPU backend's matrix products are) and sums floats
 * with four independent vector accumulators, so one core issues loads as
 * fast as it can and the sum is never the limit. Each share's sum is stored
 * in the job, so the reads cannot be optimised away.
 */
#include "membw.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "common.h"
#include "hugepage.h"
#include "threadpool.h"

#define MIN_BYTES ((size_t)1 << 30)

/* Size of the last-level cache in bytes from sysfs (the highest index of
 * cpu0), or 0 when unknown. */
static size_t llc_bytes(void) {
    size_t best = 0;
    for (int i = 0; i < 8; i++) {
        char path[96], line[64];
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/size", i);
        FILE *f = fopen(path, "r");
        if (!f) break;
        if (fgets(line, sizeof line, f)) {
            char unit = 0;
            unsigned long long v = 0;
            if (sscanf(line, "%llu%c", &v, &unit) >= 1) {
                size_t b = (size_t)v * (unit == 'K' ? 1024 : unit == 'M' ? 1024 * 1024 : unit == 'G' ? 1u << 30 : 1);
                if (b > best) best = b;
            }
        }
        fclose(f);
    }
    return best;
}

size_t nc_read_bandwidth_bytes(void) {
    size_t bytes = NC_MAX(MIN_BYTES, 4 * llc_bytes());
    return (bytes + NC_HUGE_PAGE_BYTES - 1) / NC_HUGE_PAGE_BYTES * NC_HUGE_PAGE_BYTES;
}

typedef struct {
    const float *buf;
    size_t n;          /* floats */
    float sums[NC_THREADPOOL_MAX_TASKS > 4096 ? 4096 : NC_THREADPOOL_MAX_TASKS];
} read_job;

#if defined(__x86_64__)
__attribute__((target("avx2"))) static float sum_avx2(const float *p, size_t n) {
    __m256 a = _mm256_setzero_ps(), b = a, c = a, d = a;
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        a = _mm256_add_ps(a, _mm256_loadu_ps(p + i));
        b = _mm256_add_ps(b, _mm256_loadu_ps(p + i + 8));
        c = _mm256_add_ps(c, _mm256_loadu_ps(p + i + 16));
        d = _mm256_add_ps(d, _mm256_loadu_ps(p + i + 24));
    }
    float t[8], s = 0;
    _mm256_storeu_ps(t, _mm256_add_ps(_mm256_add_ps(a, b), _mm256_add_ps(c, d)));
    for (int k = 0; k < 8; k++) s += t[k];
    for (; i < n; i++) s += p[i];
    return s;
}
#endif

static float sum_scalar(const float *p, size_t n) {
    float acc[8] = {0}, s = 0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) acc[k] += p[i + k];
    for (int k = 0; k < 8; k++) s += acc[k];
    for (; i < n; i++) s += p[i];
    return s;
}

static bool use_avx2;

static void read_worker(void *ctx, int task, int n_tasks, int thread) {
    read_job *j = ctx;
    long lo, hi;
    nc_split_range((long)j->n, n_tasks, task, 1024, &lo, &hi);
#if defined(__x86_64__)
    if (use_avx2) {
        j->sums[task] = sum_avx2(j->buf + lo, (size_t)(hi - lo));
        return;
    }
#endif
    j->sums[task] = sum_scalar(j->buf + lo, (size_t)(hi - lo));
}

double nc_read_bandwidth(int n_threads, size_t bytes, int reps) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    use_avx2 = __builtin_cpu_supports("avx2");
#endif
    float *buf = nc_alloc_huge(bytes);
    if (!buf) {
        nc_fail("read bandwidth: out of memory for a %zu MB buffer", bytes >> 20);
        return 0;
    }
    nc_threadpool *pool = nc_threadpool_new(n_threads);
    if (!pool) {
        free(buf);
        return 0;
    }
    size_t n = bytes / sizeof(float);
    for (size_t i = 0; i < n; i += 1024) buf[i] = (float)(i & 255); /* fault every page in */
    read_job *j = nc_xcalloc(1, sizeof *j);
    j->buf = buf;
    j->n = n;
    int n_tasks = NC_MIN(4 * nc_threadpool_size(pool), (int)NC_ARRAY_LEN(j->sums));
    double best = 0;
    for (int r = 0; r <= reps; r++) {
        double t0 = nc_now();
        nc_threadpool_run(pool, read_worker, j, n_tasks);
        double t = nc_now() - t0;
        if (r > 0 && t > 0 && (double)bytes / t > best) best = (double)bytes / t;
    }
    free(j);
    nc_threadpool_free(pool);
    free(buf);
    return best;
}
