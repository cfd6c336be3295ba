/*
 * threadpool.c: persistent workers with spin-then-sleep waiting (threadpool.h).
 *
 * Protocol: run() publishes (fn, ctx), sets `pending` to the number of
 * workers and bumps `generation` (under the mutex, broadcasting only when a
 * worker sleeps). A worker that sees a new generation runs its share and
 * decrements `pending`; the caller runs share 0 and then spins until
 * `pending` reaches 0. Workers spin on `generation` for up to SPIN_SECONDS
 * after each job before blocking, which keeps the hand-off of the ~100 jobs
 * per decoded token at about a microsecond.
 */
#include "threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

#include "common.h"

/* How long an idle worker keeps polling before it sleeps: longer than the
 * gaps inside one forward pass (norms, sampling), short enough that an idle
 * program is idle. */
#define SPIN_SECONDS 0.002

typedef struct {
    nc_threadpool *pool;
    int tid;
    pthread_t thread;
} worker;

struct nc_threadpool {
    int n_threads;
    worker *workers;          /* [n_threads - 1] */
    pthread_mutex_t mutex;
    pthread_cond_t wake;
    atomic_uint generation;   /* bumped once per run() */
    atomic_int pending;       /* workers still busy with the current job */
    int n_sleeping;           /* workers blocked on `wake` (under mutex) */
    atomic_bool stop;         /* set once, by nc_threadpool_free */
    nc_parallel_fn fn;
    void *ctx;
};

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

int nc_cpu_count(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0) return n;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

void nc_split_range(long n, int parts, int i, long align, long *lo, long *hi) {
    if (align < 1) align = 1;
    long units = (n + align - 1) / align;
    long base = units / parts, extra = units % parts;
    long u0 = i * base + (i < extra ? i : extra);
    long u1 = u0 + base + (i < extra ? 1 : 0);
    *lo = NC_MIN(u0 * align, n);
    *hi = NC_MIN(u1 * align, n);
}

/* Waits until `generation` differs from `seen`; false when asked to stop. */
static bool wait_for_job(nc_threadpool *p, unsigned seen) {
    double deadline = 0;
    for (unsigned spins = 0;; spins++) {
        if (atomic_load_explicit(&p->generation, memory_order_acquire) != seen) return true;
        cpu_relax();
        if ((spins & 255) == 255) {
            double now = nc_now();
            if (deadline == 0) deadline = now + SPIN_SECONDS;
            else if (now > deadline) break;
        }
    }
    pthread_mutex_lock(&p->mutex);
    p->n_sleeping++;
    while (!atomic_load(&p->stop) && atomic_load_explicit(&p->generation, memory_order_acquire) == seen)
        pthread_cond_wait(&p->wake, &p->mutex);
    p->n_sleeping--;
    bool go = !atomic_load(&p->stop);
    pthread_mutex_unlock(&p->mutex);
    return go;
}

static void *worker_main(void *arg) {
    worker *w = arg;
    nc_threadpool *p = w->pool;
    unsigned seen = 0; /* the generation at creation: a job published before this
                          thread got to run must still be seen as new */
    for (;;) {
        if (!wait_for_job(p, seen)) break;
        seen = atomic_load_explicit(&p->generation, memory_order_acquire);
        if (atomic_load(&p->stop)) break;
        p->fn(p->ctx, w->tid, p->n_threads);
        atomic_fetch_sub_explicit(&p->pending, 1, memory_order_release);
    }
    return NULL;
}

nc_threadpool *nc_threadpool_new(int n_threads) {
    if (n_threads <= 0) n_threads = nc_cpu_count();
    nc_threadpool *p = nc_xcalloc(1, sizeof *p);
    p->n_threads = n_threads;
    pthread_mutex_init(&p->mutex, NULL);
    pthread_cond_init(&p->wake, NULL);
    atomic_init(&p->generation, 0);
    atomic_init(&p->pending, 0);
    atomic_init(&p->stop, false);
    p->workers = nc_xcalloc((size_t)n_threads, sizeof(worker));
    for (int i = 1; i < n_threads; i++) {
        worker *w = &p->workers[i - 1];
        w->pool = p;
        w->tid = i;
        int rc = pthread_create(&w->thread, NULL, worker_main, w);
        if (rc != 0) {
            p->n_threads = i; /* join the ones that started */
            nc_threadpool_free(p);
            nc_fail("cannot start worker thread %d of %d: %s", i, n_threads, strerror(rc));
            return NULL;
        }
    }
    return p;
}

void nc_threadpool_free(nc_threadpool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mutex);
    atomic_store(&p->stop, true);
    atomic_fetch_add_explicit(&p->generation, 1, memory_order_release);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mutex);
    for (int i = 1; i < p->n_threads; i++) pthread_join(p->workers[i - 1].thread, NULL);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->mutex);
    free(p->workers);
    free(p);
}

int nc_threadpool_size(const nc_threadpool *p) { return p->n_threads; }

void nc_threadpool_run(nc_threadpool *p, nc_parallel_fn fn, void *ctx) {
    if (p->n_threads == 1) {
        fn(ctx, 0, 1);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    atomic_store_explicit(&p->pending, p->n_threads - 1, memory_order_relaxed);
    pthread_mutex_lock(&p->mutex);
    atomic_fetch_add_explicit(&p->generation, 1, memory_order_release);
    if (p->n_sleeping > 0) pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mutex);

    fn(ctx, 0, p->n_threads);

    /* Shares are balanced, so workers normally finish within microseconds;
     * past that a worker was probably descheduled (more threads than free
     * cores), and yielding lets it run. */
    for (unsigned spins = 0; atomic_load_explicit(&p->pending, memory_order_acquire) > 0; spins++) {
        if (spins < 4096) cpu_relax();
        else sched_yield();
    }
}
