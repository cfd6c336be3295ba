/*
 * threadpool.h: a small persistent pool of worker threads for data-parallel
 * loops (the CPU backend splits every matmul's output rows over it).
 *
 * One call, nc_threadpool_run(), runs fn(ctx, tid, n) on every thread of
 * the pool at once (the caller is thread 0) and returns when all are done.
 * Each invocation picks its share of the work from tid and n. Workers spin
 * briefly between jobs, so the ~100 small jobs of one decoded token do not
 * pay a sleep/wake-up each, then block on a condition variable so an idle
 * program does not burn CPU. No thread is created after nc_threadpool_new().
 *
 * Not reentrant: one thread calls run() at a time, and fn must not call
 * run() on the same pool.
 */
#ifndef NC_UTIL_THREADPOOL_H
#define NC_UTIL_THREADPOOL_H

typedef struct nc_threadpool nc_threadpool;

/* fn(ctx, tid, n_threads): tid in [0, n_threads). */
typedef void (*nc_parallel_fn)(void *ctx, int tid, int n_threads);

/* Creates a pool of n_threads threads in total, the calling thread included
 * (n_threads - 1 workers are started). n_threads <= 0 means one per online
 * CPU this process may run on. NULL + nc_error() if threads cannot start. */
nc_threadpool *nc_threadpool_new(int n_threads);

/* Stops and joins the workers. NULL is fine. */
void nc_threadpool_free(nc_threadpool *p);

int nc_threadpool_size(const nc_threadpool *p);

/* Runs fn on all threads and waits for all of them. */
void nc_threadpool_run(nc_threadpool *p, nc_parallel_fn fn, void *ctx);

/* Number of CPUs this process may run on (at least 1). */
int nc_cpu_count(void);

/* Splits [0, n) into `parts` contiguous ranges whose boundaries are
 * multiples of `align` (except the end) and returns range `i` in *lo, *hi. */
void nc_split_range(long n, int parts, int i, long align, long *lo, long *hi);

#endif /* NC_UTIL_THREADPOOL_H */
