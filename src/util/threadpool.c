/*
 * threadpool.c: persistent workers, dynamic task claiming, spin-then-sleep
 * waiting (threadpool.h).
 *
 * Protocol. One 64-bit atomic `state` packs the job's generation (32 bits),
 * its task count (16) and the next unclaimed task (16). run() writes fn and
 * ctx, zeroes `done`, then publishes state = (generation + 1, n, 0) with
 * release order (under the mutex, broadcasting only when a worker sleeps).
 * Any thread claims task i by a compare-and-swap of (g, n, i) -> (g, n, i+1)
 * and, after running it, increments `done`. The caller claims tasks like a
 * worker, then waits until done == n.
 *
 * Why this is safe for a worker that stalls anywhere: fn and ctx of job g+1
 * are written only after every task of g has finished, and a claim in g
 * succeeds only while a task of g is unclaimed; so a successful claim means
 * the fn/ctx the worker read after seeing g are still g's. A stale worker's
 * CAS simply fails (the generation or counter moved on).
 *
 * Workers spin on `state` for up to SPIN_SECONDS after each job before
 * blocking. The caller spins on `done` briefly, then yields the CPU: a task
 * still running there belongs to a worker the OS has descheduled.
 */
#include "threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common.h"

/* How long an idle worker keeps polling before it sleeps: longer than the
 * gaps inside one forward pass (norms, sampling), short enough that an idle
 * program is idle. */
#define SPIN_SECONDS 0.002

#define STATE(gen, n, next) (((uint64_t)(gen) << 32) | ((uint64_t)(n) << 16) | (uint64_t)(next))
#define STATE_GEN(s) ((uint32_t)((s) >> 32))
#define STATE_N(s) ((uint32_t)(((s) >> 16) & 0xffff))
#define STATE_NEXT(s) ((uint32_t)((s)&0xffff))

typedef struct {
    nc_threadpool *pool;
    int tid;
    pthread_t thread;
} worker;

struct nc_threadpool {
    int n_threads;
    worker *workers;              /* [n_threads - 1] */
    pthread_mutex_t mutex;
    pthread_cond_t wake;
    int n_sleeping;               /* workers blocked on `wake` (under mutex) */
    _Atomic uint64_t state;       /* (generation, n_tasks, next task) */
    atomic_int done;              /* tasks finished in the current generation */
    atomic_bool stop;             /* set once, by nc_threadpool_free */
    _Atomic(nc_task_fn) fn;       /* the current job */
    _Atomic(void *) ctx;
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

/* Reads one integer from a sysfs file; -1 when absent. */
static long read_sysfs_long(int cpu, const char *what) {
    char path[128];
    snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/%s", cpu, what);
    FILE *f = fopen(path, "r");
    long v = -1;
    if (f) {
        if (fscanf(f, "%ld", &v) != 1) v = -1;
        fclose(f);
    }
    return v;
}

/* The first CPU of each physical core this process may run on, in CPU
 * order, into cpus[] (at most cap); returns how many, 0 when the topology
 * cannot be read. */
static int physical_core_cpus(int *cpus, int cap) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0) return 0;
    long seen[CPU_SETSIZE][2];
    int n = 0;
    for (int c = 0; c < CPU_SETSIZE && n < cap; c++) {
        if (!CPU_ISSET(c, &set)) continue;
        long pkg = read_sysfs_long(c, "physical_package_id"), core = read_sysfs_long(c, "core_id");
        if (pkg < 0 || core < 0) return 0;
        bool dup = false;
        for (int i = 0; i < n && !dup; i++) dup = seen[i][0] == pkg && seen[i][1] == core;
        if (dup) continue;
        seen[n][0] = pkg, seen[n][1] = core;
        cpus[n++] = c;
    }
    return n;
}

int nc_default_threads(void) {
    static int cpus[CPU_SETSIZE];
    int n = physical_core_cpus(cpus, CPU_SETSIZE);
    return n > 0 ? n : nc_cpu_count();
}

/* Pins the workers (thread i >= 1 to the i-th physical core) when the pool
 * has exactly one thread per physical core; see threadpool.h. */
static void pin_workers(nc_threadpool *p) {
    static int cpus[CPU_SETSIZE];
    if (physical_core_cpus(cpus, CPU_SETSIZE) != p->n_threads) return;
    for (int i = 1; i < p->n_threads; i++) {
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(cpus[i], &one);
        pthread_setaffinity_np(p->workers[i - 1].thread, sizeof one, &one); /* best effort */
    }
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

/* Claims and runs tasks of generation `gen` until none is left. */
static void run_tasks(nc_threadpool *p, uint32_t gen, int thread) {
    nc_task_fn fn = atomic_load_explicit(&p->fn, memory_order_relaxed);
    void *ctx = atomic_load_explicit(&p->ctx, memory_order_relaxed);
    uint64_t s = atomic_load_explicit(&p->state, memory_order_acquire);
    for (;;) {
        if (STATE_GEN(s) != gen || STATE_NEXT(s) >= STATE_N(s)) return;
        if (!atomic_compare_exchange_weak_explicit(&p->state, &s, s + 1, memory_order_acq_rel,
                                                   memory_order_acquire))
            continue; /* s now holds the current state */
        fn(ctx, (int)STATE_NEXT(s), (int)STATE_N(s), thread);
        atomic_fetch_add_explicit(&p->done, 1, memory_order_release);
        s = atomic_load_explicit(&p->state, memory_order_acquire);
    }
}

/* Waits until the generation differs from `seen`; false when asked to stop. */
static bool wait_for_job(nc_threadpool *p, uint32_t seen) {
    double deadline = 0;
    for (unsigned spins = 0;; spins++) {
        if (STATE_GEN(atomic_load_explicit(&p->state, memory_order_acquire)) != seen) return !atomic_load(&p->stop);
        cpu_relax();
        if ((spins & 255) == 255) {
            double now = nc_now();
            if (deadline == 0) deadline = now + SPIN_SECONDS;
            else if (now > deadline) break;
        }
    }
    pthread_mutex_lock(&p->mutex);
    p->n_sleeping++;
    while (!atomic_load(&p->stop) && STATE_GEN(atomic_load(&p->state)) == seen) pthread_cond_wait(&p->wake, &p->mutex);
    p->n_sleeping--;
    pthread_mutex_unlock(&p->mutex);
    return !atomic_load(&p->stop);
}

static void *worker_main(void *arg) {
    worker *w = arg;
    nc_threadpool *p = w->pool;
    uint32_t seen = 0; /* the generation at creation: a job published before this
                          thread got to run must still be seen as new */
    while (wait_for_job(p, seen)) {
        seen = STATE_GEN(atomic_load_explicit(&p->state, memory_order_acquire));
        run_tasks(p, seen, w->tid);
    }
    return NULL;
}

nc_threadpool *nc_threadpool_new(int n_threads) {
    if (n_threads <= 0) n_threads = nc_default_threads();
    nc_threadpool *p = nc_xcalloc(1, sizeof *p);
    p->n_threads = n_threads;
    pthread_mutex_init(&p->mutex, NULL);
    pthread_cond_init(&p->wake, NULL);
    atomic_init(&p->state, STATE(0, 0, 0));
    atomic_init(&p->done, 0);
    atomic_init(&p->stop, false);
    atomic_init(&p->fn, NULL);
    atomic_init(&p->ctx, NULL);
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
    pin_workers(p);
    return p;
}

void nc_threadpool_free(nc_threadpool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mutex);
    atomic_store(&p->stop, true);
    uint64_t s = atomic_load(&p->state);
    atomic_store(&p->state, STATE(STATE_GEN(s) + 1, 0, 0)); /* wakes spinners */
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mutex);
    for (int i = 1; i < p->n_threads; i++) pthread_join(p->workers[i - 1].thread, NULL);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->mutex);
    free(p->workers);
    free(p);
}

int nc_threadpool_size(const nc_threadpool *p) { return p->n_threads; }

void nc_threadpool_run(nc_threadpool *p, nc_task_fn fn, void *ctx, int n_tasks) {
    if (n_tasks <= 0) n_tasks = p->n_threads;
    NC_ASSERT(n_tasks <= NC_THREADPOOL_MAX_TASKS);
    if (p->n_threads == 1 || n_tasks == 1) {
        for (int i = 0; i < n_tasks; i++) fn(ctx, i, n_tasks, 0);
        return;
    }
    atomic_store_explicit(&p->fn, fn, memory_order_relaxed);
    atomic_store_explicit(&p->ctx, ctx, memory_order_relaxed);
    atomic_store_explicit(&p->done, 0, memory_order_relaxed);
    uint32_t gen = STATE_GEN(atomic_load_explicit(&p->state, memory_order_relaxed)) + 1;
    pthread_mutex_lock(&p->mutex);
    atomic_store_explicit(&p->state, STATE(gen, n_tasks, 0), memory_order_release);
    if (p->n_sleeping > 0) pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mutex);

    run_tasks(p, gen, 0);

    for (unsigned spins = 0; atomic_load_explicit(&p->done, memory_order_acquire) < n_tasks; spins++) {
        if (spins < 4096) cpu_relax();
        else sched_yield(); /* the worker running the last task is descheduled */
    }
}
