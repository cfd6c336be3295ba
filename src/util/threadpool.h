/*
 * threadpool.h: a small persistent pool of worker threads for data-parallel
 * loops (the CPU backend splits every matmul's output rows over it).
 *
 * nc_threadpool_run(p, fn, ctx, n_tasks) runs fn(ctx, task, n_tasks,
 * thread) once for every task in [0, n_tasks) and returns when all have
 * finished. The calling thread takes part. Tasks are claimed dynamically
 * (an atomic counter), not assigned per thread: on a busy machine where a
 * worker is not scheduled, the threads that do run take its share instead
 * of waiting for it. `thread` (in [0, size)) identifies the executing
 * thread, for per-thread scratch buffers.
 *
 * Workers spin briefly between jobs, so the ~100 small jobs of one decoded
 * token do not pay a sleep/wake-up each, then block on a condition
 * variable so an idle program does not burn CPU. No thread is created
 * after nc_threadpool_new().
 *
 * Pinning: when the pool has one thread per physical core this process may
 * run on (the default size), worker i is pinned to the i-th of those cores,
 * so the OS never moves a worker onto a core where another is streaming.
 * The calling thread (the application's) is left where it is, and a pool
 * with fewer threads than cores is not pinned: two programs each given part
 * of the machine with --threads must not end up on the same cores.
 *
 * Not reentrant: one thread calls run() at a time, and fn must not call
 * run() on the same pool.
 */
#ifndef NC_UTIL_THREADPOOL_H
#define NC_UTIL_THREADPOOL_H

typedef struct nc_threadpool nc_threadpool;

typedef void (*nc_task_fn)(void *ctx, int task, int n_tasks, int thread);

/* Largest n_tasks of one run. */
#define NC_THREADPOOL_MAX_TASKS 65535

/* Creates a pool of n_threads threads in total, the calling thread included
 * (n_threads - 1 workers are started). n_threads <= 0 means
 * nc_default_threads(). NULL + nc_error() if threads cannot start. */
nc_threadpool *nc_threadpool_new(int n_threads);

/* Stops and joins the workers. NULL is fine. */
void nc_threadpool_free(nc_threadpool *p);

int nc_threadpool_size(const nc_threadpool *p);

/* Runs fn for tasks 0..n_tasks-1 (n_tasks <= 0: one per thread; at most
 * NC_THREADPOOL_MAX_TASKS) on the pool's threads and waits for all. */
void nc_threadpool_run(nc_threadpool *p, nc_task_fn fn, void *ctx, int n_tasks);

/* Number of CPUs this process may run on (at least 1). */
int nc_cpu_count(void);

/* Number of physical cores among those CPUs (hyperthreads of one core count
 * once; sysfs topology, else nc_cpu_count()): the fastest thread count for
 * memory-bound decode and for FMA-bound prefill alike. */
int nc_default_threads(void);

/* Splits [0, n) into `parts` contiguous ranges whose boundaries are
 * multiples of `align` (except the end) and returns range `i` in *lo, *hi. */
void nc_split_range(long n, int parts, int i, long align, long *lo, long *hi);

#endif /* NC_UTIL_THREADPOOL_H */
