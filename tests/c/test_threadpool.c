/*
 * test_threadpool.c: the persistent thread pool (util/threadpool.h).
 *
 * Reference: plain arithmetic (each thread's share of a known sum). Checks
 * that every thread runs exactly once per job, that a job published before
 * the workers have started is not lost (a deadlock seen under load), that
 * jobs after the workers fell asleep wake them, and nc_split_range.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>

#include "check.h"
#include "util/common.h"
#include "util/threadpool.h"

typedef struct {
    atomic_long sum;
    atomic_int calls;
    long n;
} sum_job;

static void add_share(void *ctx, int tid, int n_threads) {
    sum_job *j = ctx;
    long lo, hi, s = 0;
    nc_split_range(j->n, n_threads, tid, 1, &lo, &hi);
    for (long i = lo; i < hi; i++) s += i;
    atomic_fetch_add(&j->sum, s);
    atomic_fetch_add(&j->calls, 1);
}

static void run_sum(nc_threadpool *p, long n) {
    sum_job j = {.n = n};
    atomic_init(&j.sum, 0);
    atomic_init(&j.calls, 0);
    nc_threadpool_run(p, add_share, &j);
    CHECK(atomic_load(&j.sum) == n * (n - 1) / 2, "sum of 0..%ld: %ld", n - 1, atomic_load(&j.sum));
    CHECK(atomic_load(&j.calls) == nc_threadpool_size(p), "%d calls for %d threads", atomic_load(&j.calls),
          nc_threadpool_size(p));
}

int main(void) {
    /* split ranges: contiguous, aligned, covering [0, n) */
    for (long n = 0; n < 100; n += 7)
        for (int parts = 1; parts <= 5; parts++) {
            long prev = 0;
            for (int i = 0; i < parts; i++) {
                long lo, hi;
                nc_split_range(n, parts, i, 4, &lo, &hi);
                CHECK(lo == prev && hi >= lo && (lo % 4 == 0 || lo == n), "split %ld/%d part %d: [%ld,%ld)", n,
                      parts, i, lo, hi);
                prev = hi;
            }
            CHECK(prev == n, "split %ld/%d ends at %ld", n, parts, prev);
        }

    /* a job right after creation, many times (workers may not have started yet) */
    for (int round = 0; round < 100; round++) {
        nc_threadpool *p = nc_threadpool_new(1 + round % 4);
        CHECK(p != NULL, "pool: %s", nc_error());
        run_sum(p, 1000 + round);
        nc_threadpool_free(p);
    }

    /* many back-to-back jobs on one pool, then jobs after the workers slept */
    nc_threadpool *p = nc_threadpool_new(3);
    for (int i = 0; i < 2000; i++) run_sum(p, 64);
    for (int i = 0; i < 3; i++) {
        struct timespec ts = {0, 20 * 1000 * 1000}; /* longer than the spin phase */
        nanosleep(&ts, NULL);
        run_sum(p, 100000);
    }
    nc_threadpool_free(p);
    nc_threadpool_free(NULL);
    CHECK(nc_cpu_count() >= 1, "cpu count %d", nc_cpu_count());
    return check_summary("test_threadpool");
}
