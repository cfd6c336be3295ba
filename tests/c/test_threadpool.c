/*
 * test_threadpool.c: the persistent thread pool (util/threadpool.h).
 *
 * Reference: plain arithmetic (each task's share of a known sum). Checks
 * that every task runs exactly once per job on a valid thread index, that a
 * job published before the workers have started is not lost (a deadlock
 * seen under load), that jobs after the workers fell asleep wake them, and
 * nc_split_range.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "util/common.h"
#include "util/threadpool.h"

typedef struct {
    atomic_long sum;
    atomic_int runs[512]; /* per task */
    atomic_int bad_thread;
    int n_threads;
    long n;
} sum_job;

static void add_share(void *ctx, int task, int n_tasks, int thread) {
    sum_job *j = ctx;
    long lo, hi, s = 0;
    nc_split_range(j->n, n_tasks, task, 1, &lo, &hi);
    for (long i = lo; i < hi; i++) s += i;
    atomic_fetch_add(&j->sum, s);
    atomic_fetch_add(&j->runs[task], 1);
    if (thread < 0 || thread >= j->n_threads) atomic_fetch_add(&j->bad_thread, 1);
}

/* Sums 0..n-1 in n_tasks tasks; every task must run exactly once. */
static void run_sum(nc_threadpool *p, long n, int n_tasks) {
    static sum_job j;
    memset(&j, 0, sizeof j);
    j.n = n;
    j.n_threads = nc_threadpool_size(p);
    nc_threadpool_run(p, add_share, &j, n_tasks);
    int expect_tasks = n_tasks > 0 ? n_tasks : nc_threadpool_size(p);
    CHECK(atomic_load(&j.sum) == n * (n - 1) / 2, "sum of 0..%ld: %ld", n - 1, atomic_load(&j.sum));
    for (int t = 0; t < expect_tasks; t++)
        CHECK(atomic_load(&j.runs[t]) == 1, "task %d of %d ran %d times", t, expect_tasks, atomic_load(&j.runs[t]));
    CHECK(atomic_load(&j.runs[expect_tasks]) == 0, "task %d beyond %d ran", expect_tasks, expect_tasks);
    CHECK(atomic_load(&j.bad_thread) == 0, "thread index out of range");
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
        run_sum(p, 1000 + round, round % 7);
        nc_threadpool_free(p);
    }

    /* many back-to-back jobs on one pool, then jobs after the workers slept */
    nc_threadpool *p = nc_threadpool_new(3);
    for (int i = 0; i < 2000; i++) run_sum(p, 64 + i, 1 + i % 40);
    for (int i = 0; i < 3; i++) {
        struct timespec ts = {0, 20 * 1000 * 1000}; /* longer than the spin phase */
        nanosleep(&ts, NULL);
        run_sum(p, 100000, 500);
    }
    nc_threadpool_free(p);
    nc_threadpool_free(NULL);
    CHECK(nc_cpu_count() >= 1, "cpu count %d", nc_cpu_count());
    return check_summary("test_threadpool");
}
